//! Unit tests of the checker: the public entry points on small histories, and the
//! internals (memo table, set encoding, compilation) that a wrong answer would hide in.

use super::memo::{Cache, Linearized, splitmix};
use super::model::{COp, Step, compile};
use super::*;
use crate::history::{Function, OpKind, Operation, Value};

fn check(history: &History) -> Report {
    check_history(history, &CheckConfig::default(), &Budget::unlimited()).unwrap()
}

#[test]
fn empty_history_is_linearizable() {
    let report = check(&History::new());
    assert!(report.is_linearizable());
    assert!(report.keys.is_empty());
}

#[test]
fn cache_dedups_and_grows() {
    let mut cache = Cache::new();
    for i in 0..5000u64 {
        assert!(cache.insert(splitmix(i), i, (0, &[i])));
    }
    for i in 0..5000u64 {
        assert!(!cache.insert(splitmix(i), i, (0, &[i])));
    }
    assert!(cache.insert(splitmix(1), 1, (0, &[2])));
    assert!(cache.insert(splitmix(1), 1, (1, &[1])));
    assert!(cache.insert(splitmix(1), 1, (0, &[1, 0])));
    assert_eq!(cache.len(), 5003);
}

#[test]
fn unobservable_indeterminate_writes_are_dropped() {
    let mut h = History::new();
    h.invoke(0, 1, Function::Write, "k", 1);
    h.invoke(0, 2, Function::Write, "k", 2);
    h.invoke(0, 3, Function::Cas, "k", Value::pair(1.into(), 3.into()));
    h.invoke(0, 4, Function::Cas, "k", Value::pair(5.into(), 2.into()));
    h.complete(1, 1, OpKind::Info, 1);
    h.complete(1, 2, OpKind::Info, 2);
    h.complete(1, 3, OpKind::Info, Value::Null);
    h.complete(1, 4, OpKind::Info, Value::Null);
    h.invoke(2, 1, Function::Read, "k", Value::Null);
    h.complete(3, 1, OpKind::Ok, 1);
    let ops = h.operations().unwrap();
    let refs: Vec<&Operation> = ops.iter().collect();
    let compiled = compile(ModelKind::Register, &refs, &CheckConfig::default()).unwrap();
    // 1 is read (and compared with), 5 is compared with; 2 and 3 are never observed, so
    // write 2, cas [1 3] and cas [5 2] go
    let kept: Vec<usize> = compiled.ops.iter().map(|c| c.op).collect();
    assert_eq!(kept, vec![0, 4]);
    assert!(check(&h).is_linearizable());
}

#[test]
fn linearized_encoding_is_canonical() {
    // 130 determinate operations returning in order, and 3 indeterminate ones
    let ops: Vec<COp> = (0..133)
        .map(|i| COp {
            op: i,
            call: i as u64,
            ret: if i < 130 { 1000 + i as u64 } else { u64::MAX },
            step: Step::Write(0),
            definite: i < 130,
        })
        .collect();
    let mut lin = Linearized::new(&ops);
    assert_eq!(lin.key(), (0, &[0u64][..]));
    for i in 0..64 {
        lin.set(i);
    }
    assert_eq!(lin.key(), (1, &[0u64][..]));
    lin.set(70);
    lin.set(131);
    assert_eq!(lin.key(), (1, &[1u64 << 6, 0b10][..]));
    for i in 64..130 {
        lin.set(i);
    }
    assert_eq!(lin.key(), (3, &[0b10u64][..]));
    lin.clear(129);
    assert_eq!(lin.key(), (2, &[(1u64 << 1) - 1, 0b10][..]));
    lin.clear(128);
    assert_eq!(lin.key(), (2, &[0b10u64][..]));
    for i in (0..128).rev() {
        lin.clear(i);
    }
    lin.clear(131);
    assert_eq!(lin.key(), (0, &[0u64][..]));
}

#[test]
fn states_budget_gives_unknown() {
    let mut h = History::new();
    for p in 0..6 {
        h.invoke(0, p, Function::Write, "k", p as i64);
    }
    for p in 0..6 {
        h.complete(10, p, OpKind::Ok, p as i64);
    }
    h.invoke(11, 0, Function::Read, "k", Value::Null);
    h.complete(12, 0, OpKind::Ok, 99);
    let report = check_history(
        &h,
        &CheckConfig::default(),
        &Budget::unlimited().with_states_max(3),
    )
    .unwrap();
    assert!(report.is_unknown(), "{report}");
    let expired = check_history(&h, &CheckConfig::default(), &Budget::deadline(|| true));
    // the deadline is polled every 1024 steps: this small search may finish first, and
    // then it must be right
    assert!(!expired.unwrap().is_linearizable());
}

/// An appended key's model states hold no text: each is (the state appended to, the suffix),
/// so a long contended list costs the search the same per state as a short one. As whole
/// strings (up to 20 kB a state here), a 4 MiB budget ran out within a few thousand states
/// (swarm seed 484 once grew past 24 GiB; a 24-client seed's states took 968 MiB of 1 GiB).
#[test]
fn memory_budget_is_not_spent_on_the_list_text() {
    let mut h = History::new();
    let element = |p: u64| format!("{}-{},", p, "x".repeat(2_000));
    for p in 0..10 {
        h.invoke(0, p, Function::Append, "l", element(p).as_str());
    }
    for p in 0..10 {
        h.complete(10, p, OpKind::Ok, element(p).as_str());
    }
    // A write among them: the key is not append-only, so the longest read does not cut the
    // search short (`appends_out_of_the_read_order_are_cut_off`).
    h.invoke(0, 10, Function::Write, "l", "w");
    h.complete(10, 10, OpKind::Ok, "w");
    // No order of the appends gives this.
    h.invoke(11, 0, Function::Read, "l", Value::Null);
    h.complete(12, 0, OpKind::Ok, "nothing like it");
    let budget = Budget::unlimited().with_memory_max(4 << 20);
    let report = check_history(&h, &CheckConfig::default(), &budget).unwrap();
    assert!(report.is_unknown(), "{report}");
    let text = report.to_string();
    let states: u64 = text
        .split("memory budget exhausted after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not the memory budget: {text}"));
    assert!(
        states > 10_000,
        "{states} states before the budget ran out: {text}"
    );
}

/// On a key only appended to and read, the longest read fixes the order of the appends it
/// holds: twelve appends in flight at once are checked in a few thousand states, where every
/// order of them (12! of them) would be explored without it.
#[test]
fn appends_out_of_the_read_order_are_cut_off() {
    let element = |p: u64| format!("{p}-1,");
    let history = |order: &[u64]| {
        let mut h = History::new();
        for p in 0..12 {
            h.invoke(0, p, Function::Append, "l", element(p).as_str());
        }
        for p in 0..12 {
            h.complete(10, p, OpKind::Ok, element(p).as_str());
        }
        let read: String = order.iter().map(|&p| element(p)).collect();
        h.invoke(11, 0, Function::Read, "l", Value::Null);
        h.complete(12, 0, OpKind::Ok, read.as_str());
        h
    };
    let budget = Budget::unlimited().with_states_max(10_000);
    let order = [7, 3, 11, 0, 5, 9, 1, 10, 2, 8, 6, 4];
    let report = check_history(&history(&order), &CheckConfig::default(), &budget).unwrap();
    assert!(report.is_linearizable(), "{report}");
    // One append missing from the read: no order gives it.
    let report = check_history(&history(&order[..11]), &CheckConfig::default(), &budget).unwrap();
    assert!(report.is_not_linearizable(), "{report}");
}

/// On a register whose writes carry unique values, a write may not overwrite a value that a
/// read still has to see (the single-source rule): sixteen writes in flight at once, their
/// values read one after another in a scrambled order, are checked in a few hundred states,
/// where without the rule the search tries the subsets of writes that overwrite values
/// unread (tens of thousands of states).
#[test]
fn unique_writes_are_not_overwritten_before_their_reads() {
    let history = |order: &[i64]| {
        let mut h = History::new();
        for p in 0..16 {
            h.invoke(0, p, Function::Write, "r", p as i64);
        }
        for (i, &v) in order.iter().enumerate() {
            let t = 10 + 2 * i as u64;
            h.invoke(t, 100, Function::Read, "r", Value::Null);
            h.complete(t + 1, 100, OpKind::Ok, v);
        }
        for p in 0..16 {
            h.complete(1000, p, OpKind::Ok, Value::Null);
        }
        h
    };
    let budget = Budget::unlimited().with_states_max(2_000);
    let order = [7, 3, 11, 0, 5, 9, 1, 10, 2, 8, 6, 4, 15, 13, 12, 14];
    let report = check_history(&history(&order), &CheckConfig::default(), &budget).unwrap();
    assert!(report.is_linearizable(), "{report}");
    // A value read again after another value was: its only write cannot have come twice.
    let mut again = order.to_vec();
    again.insert(6, 3);
    let report = check_history(&history(&again), &CheckConfig::default(), &budget).unwrap();
    assert!(report.is_not_linearizable(), "{report}");
}

/// The same rule on a multi-key object, per sub-key: twelve writes in flight, each of one
/// sub-key of three with a unique value, and reads of all three one after another that fix
/// their order. A write of sub-key `b` does not leave a pinned value of `a`, so writes of
/// other sub-keys stay free to go first.
#[test]
fn unique_multi_key_writes_are_not_overwritten_before_their_reads() {
    const NAMES: [&str; 3] = ["a", "b", "c"];
    let write = |p: u64| {
        let name = NAMES[p as usize % 3];
        Value::List(vec![Value::pair(
            name.into(),
            format!("{p}-1").as_str().into(),
        )])
    };
    let history = |order: &[u64]| {
        let mut h = History::new();
        for p in 0..12 {
            h.invoke(0, p, Function::MWrite, "{m}", write(p));
        }
        // The values each read sees: every write in `order` up to it applied.
        let mut seen = [Value::Null, Value::Null, Value::Null];
        for (i, &p) in order.iter().enumerate() {
            seen[p as usize % 3] = format!("{p}-1").as_str().into();
            let t = 10 + 2 * i as u64;
            let names = Value::List(NAMES.iter().map(|&n| n.into()).collect());
            h.invoke(t, 100, Function::MRead, "{m}", names);
            h.complete(t + 1, 100, OpKind::Ok, Value::List(seen.to_vec()));
        }
        for p in 0..12 {
            h.complete(1000, p, OpKind::Ok, Value::Null);
        }
        h
    };
    let budget = Budget::unlimited().with_states_max(2_000);
    let order = [7, 3, 11, 0, 5, 9, 1, 10, 2, 8, 6, 4];
    let config = CheckConfig {
        model: Model::Multi,
        ..CheckConfig::default()
    };
    let report = check_history(&history(&order), &config, &budget).unwrap();
    assert!(report.is_linearizable(), "{report}");
    // Write 3 (of `a`) read before write 0 (of `a` too) and again after it: its only write
    // cannot have come twice.
    let mut h = history(&order);
    let t = 100;
    h.invoke(
        t,
        100,
        Function::MRead,
        "{m}",
        Value::List(vec!["a".into()]),
    );
    h.complete(t + 1, 100, OpKind::Ok, Value::List(vec!["3-1".into()]));
    let report = check_history(&h, &config, &budget).unwrap();
    assert!(report.is_not_linearizable(), "{report}");
}

/// Values nobody reads are one state to the search: writes in flight whose values no read
/// returns, before a read that nothing satisfies, are searched through the subsets of them
/// linearized, not through which of them came last as well (which multiplies the states by
/// the writes on a register, and by far more on a multi-key object written one sub-key at a
/// time).
#[test]
fn values_nobody_reads_are_one_state() {
    let unread = |f: Function, write: &dyn Fn(u64) -> Value, read: (Value, Value)| {
        let mut h = History::new();
        for p in 0..10 {
            h.invoke(0, p, f, "k", write(p));
        }
        for p in 0..10 {
            h.complete(10, p, OpKind::Ok, Value::Null);
        }
        let reads = if f == Function::Write {
            Function::Read
        } else {
            Function::MRead
        };
        h.invoke(20, 100, reads, "k", read.0);
        h.complete(21, 100, OpKind::Ok, read.1);
        h
    };
    let budget = Budget::unlimited().with_states_max(1_500);
    let register = unread(
        Function::Write,
        &|p| Value::Int(p as i64),
        (Value::Null, "x".into()),
    );
    let report = check_history(&register, &CheckConfig::default(), &budget).unwrap();
    assert!(report.is_not_linearizable(), "{report}");
    const NAMES: [&str; 3] = ["a", "b", "c"];
    let multi = unread(
        Function::MWrite,
        &|p| {
            let name = NAMES[p as usize % 3];
            Value::List(vec![Value::pair(
                name.into(),
                format!("{p}-1").as_str().into(),
            )])
        },
        (
            Value::List(NAMES.iter().map(|&n| n.into()).collect()),
            Value::List(vec!["x".into(), Value::Null, Value::Null]),
        ),
    );
    let config = CheckConfig {
        model: Model::Multi,
        ..CheckConfig::default()
    };
    let report = check_history(&multi, &config, &budget).unwrap();
    assert!(report.is_not_linearizable(), "{report}");
}

/// Twins (operations with one step) in flight together are tried in the order they return:
/// sixteen writes of one value, then a read nothing satisfies, are searched along one order
/// (a few dozen states) instead of through the 65,536 subsets of them.
#[test]
fn twins_are_tried_in_return_order() {
    let mut h = History::new();
    for p in 0..16 {
        h.invoke(p, p, Function::Write, "k", "v");
    }
    for p in 0..16 {
        h.complete(100 - p, p, OpKind::Ok, Value::Null);
    }
    h.invoke(200, 100, Function::Read, "k", Value::Null);
    h.complete(201, 100, OpKind::Ok, "w");
    let budget = Budget::unlimited().with_states_max(200);
    let report = check_history(&h, &CheckConfig::default(), &budget).unwrap();
    assert!(report.is_not_linearizable(), "{report}");
    // The twins' value read in between: linearizable, found along the same order.
    let mut h = History::new();
    for p in 0..16 {
        h.invoke(p, p, Function::Write, "k", "v");
    }
    h.invoke(50, 100, Function::Read, "k", Value::Null);
    h.complete(51, 100, OpKind::Ok, "v");
    for p in 0..16 {
        h.complete(100 - p, p, OpKind::Ok, Value::Null);
    }
    let report = check_history(&h, &CheckConfig::default(), &budget).unwrap();
    assert!(report.is_linearizable(), "{report}");
}

/// One operation of a lock object's history: process, function, value, outcome, output.
type LockStep = (u64, Function, Value, OpKind, Value);

/// A lock object's history from its steps, each operation completing before the next starts.
fn lock_history(steps: &[LockStep]) -> History {
    let mut h = History::new();
    for (i, (process, f, value, kind, output)) in steps.iter().enumerate() {
        let t = 10 * i as u64;
        h.invoke(t, *process, *f, "{k0}", value.clone());
        h.complete(t + 1, *process, *kind, output.clone());
    }
    h
}

fn acquire(process: u64, token: Option<i64>) -> LockStep {
    (
        process,
        Function::LockAcquire,
        Value::List(vec![Value::from(format!("p{process}")), Value::Int(100)]),
        OpKind::Ok,
        token.map_or(Value::Null, Value::Int),
    )
}

fn fenced(process: u64, token: i64, count: Option<i64>) -> LockStep {
    (
        process,
        Function::FencedIncr,
        Value::Int(token),
        OpKind::Ok,
        count.map_or(Value::Null, Value::Int),
    )
}

fn release(process: u64, token: i64, released: bool) -> LockStep {
    (
        process,
        Function::LockRelease,
        Value::Int(token),
        OpKind::Ok,
        Value::Int(i64::from(released)),
    )
}

#[test]
fn the_lock_model_accepts_what_fencing_allows() {
    let history = lock_history(&[
        acquire(1, Some(1000)),
        acquire(2, None),
        fenced(1, 1000, Some(1)),
        // A renewal keeps the token.
        acquire(1, Some(1000)),
        fenced(1, 1000, Some(2)),
        release(1, 1000, true),
        // The released token is refused; the next holder's passes.
        fenced(1, 1000, None),
        acquire(2, Some(2000)),
        fenced(2, 2000, Some(3)),
        // 2's lease ends: a refusal says so, and 1 takes the lock with a larger token.
        fenced(2, 2000, None),
        acquire(1, Some(3000)),
        release(2, 2000, false),
        fenced(1, 3000, Some(4)),
        // 1's lease ends unseen: 2 takes it (a new grant), 1's release answers 0.
        acquire(2, Some(4000)),
        release(1, 3000, false),
        fenced(2, 4000, Some(5)),
    ]);
    let report = check(&history);
    assert!(report.is_linearizable(), "{report:?}");
    assert_eq!(report.keys[0].model, ModelKind::Lock);
}

#[test]
fn the_lock_model_refuses_what_fencing_forbids() {
    let cases: Vec<(&str, Vec<LockStep>)> = vec![
        (
            "a stale token's increment ran",
            vec![
                acquire(1, Some(1000)),
                release(1, 1000, true),
                acquire(2, Some(2000)),
                fenced(1, 1000, Some(1)),
            ],
        ),
        (
            "a new grant's token did not grow",
            vec![
                acquire(1, Some(2000)),
                release(1, 2000, true),
                acquire(2, Some(2000)),
            ],
        ),
        ("nil while the lock was free", vec![acquire(1, None)]),
        (
            "nil to the holder itself",
            vec![acquire(1, Some(1000)), acquire(1, None)],
        ),
        (
            "the counter skipped",
            vec![acquire(1, Some(1000)), fenced(1, 1000, Some(2))],
        ),
        (
            "a release of a token never granted",
            vec![acquire(1, Some(1000)), release(1, 999, true)],
        ),
    ];
    for (why, steps) in cases {
        let report = check(&lock_history(&steps));
        assert!(!report.is_linearizable(), "{why}: {report:?}");
    }
}

#[test]
fn an_acquisition_that_never_answered_may_have_granted_any_token() {
    let mut h = History::new();
    h.invoke(
        0,
        1,
        Function::LockAcquire,
        "{k0}",
        Value::List(vec!["p1".into(), 100.into()]),
    );
    h.complete(1, 1, OpKind::Info, Value::Null);
    // Another client is told the lock is held (by 1, whose acquisition took effect).
    h.invoke(
        10,
        2,
        Function::LockAcquire,
        "{k0}",
        Value::List(vec!["p2".into(), 100.into()]),
    );
    h.complete(11, 2, OpKind::Ok, Value::Null);
    // 1 acquires again and learns its token; its increment runs.
    h.invoke(
        20,
        1,
        Function::LockAcquire,
        "{k0}",
        Value::List(vec!["p1".into(), 100.into()]),
    );
    h.complete(21, 1, OpKind::Ok, 5000);
    h.invoke(30, 1, Function::FencedIncr, "{k0}", 5000);
    h.complete(31, 1, OpKind::Ok, 1);
    assert!(check(&h).is_linearizable());
}

/// A search stopped by its allowance (`Search::Capped`) runs again with a larger one; a
/// collections object's parts (`parts::Parts`) mirror what the whole search has linearized,
/// so each run must start them from nothing. (Found by a 30,000-case run of the collections
/// proptest: an operation linearized twice on a part, which a release build would have taken
/// for a dead part.)
#[test]
fn a_search_run_again_after_its_allowance_starts_its_parts_afresh() {
    use super::search::{Meter, Search, search};
    let list = |items: &[&str]| Value::List(items.iter().map(|&i| Value::from(i)).collect());
    let mut h = History::new();
    for p in 0..6 {
        h.invoke(
            0,
            p,
            Function::Push,
            "{c}",
            list(&["l", "r", &format!("e{p}")]),
        );
        h.invoke(
            0,
            10 + p,
            Function::SAdd,
            "{c}",
            list(&["s", &format!("m{p}")]),
        );
    }
    h.invoke(100, 50, Function::LRange, "{c}", list(&["l"]));
    h.invoke(100, 51, Function::SMembers, "{c}", list(&["s"]));
    h.complete(110, 50, OpKind::Ok, list(&["e5", "e4"]));
    h.complete(110, 51, OpKind::Ok, list(&["m3"]));
    let ops = h.operations().unwrap();
    let refs: Vec<&Operation> = ops.iter().collect();
    let mut c = compile(ModelKind::Collections, &refs, &CheckConfig::default()).unwrap();
    assert!(c.parts.is_some(), "a list and a set are two parts");
    let budget = Budget::unlimited();
    let mut meter = Meter {
        budget: &budget,
        states: 0,
        steps: 0,
        exhausted: false,
    };
    // Allowances from one state up, each run cut short somewhere else, on the same parts.
    for cap in 1..80 {
        let run = search(
            &c.ops,
            c.initial,
            &mut c.interner,
            &mut meter,
            cap,
            c.parts.as_mut(),
        );
        assert!(matches!(run, Search::Capped | Search::Linearizable(_)));
    }
    let again = search(
        &c.ops,
        c.initial,
        &mut c.interner,
        &mut meter,
        u64::MAX,
        c.parts.as_mut(),
    );
    assert!(matches!(again, Search::Linearizable(_)));
}

/// The parts' rule for unanswered operations (`parts::Part::may_go_next`) rests on which
/// pairs surely commute: an unanswered update commutes with what touches another collection
/// or another member, and with an unanswered update alike on the same member (two
/// increments); it may not with anything that answers about the same member, nor with a
/// different update of it, nor with any other operation on the same list.
#[test]
fn unanswered_collection_updates_commute_only_where_order_cannot_show() {
    let z = |member: &str, delta: i64| Value::List(vec!["z".into(), member.into(), delta.into()]);
    let two = |a: &str, b: &str| Value::List(vec![a.into(), b.into()]);
    let three = |a: &str, b: &str, c: &str| Value::List(vec![a.into(), b.into(), c.into()]);
    let mut h = History::new();
    let ops: Vec<(Function, Value, OpKind, Value)> = vec![
        (Function::ZIncrBy, z("m", 1), OpKind::Info, Value::Null), // 0
        (Function::ZIncrBy, z("m", 2), OpKind::Info, Value::Null), // 1
        (Function::ZIncrBy, z("n", 1), OpKind::Ok, 1.into()),      // 2
        (Function::ZScore, two("z", "m"), OpKind::Ok, 3.into()),   // 3
        (Function::ZIncrBy, z("m", 1), OpKind::Ok, 4.into()),      // 4
        (Function::SAdd, two("s", "a"), OpKind::Info, Value::Null), // 5
        (Function::SRem, two("s", "a"), OpKind::Info, Value::Null), // 6
        (Function::SAdd, two("s", "b"), OpKind::Info, Value::Null), // 7
        (
            Function::SMembers,
            Value::List(vec!["s".into()]),
            OpKind::Ok,
            two("a", "b"),
        ), // 8
        (
            Function::Push,
            three("l", "l", "e"),
            OpKind::Info,
            Value::Null,
        ), // 9
        (Function::Pop, two("l", "r"), OpKind::Info, Value::Null), // 10
        (Function::Push, three("l", "r", "f"), OpKind::Ok, 1.into()), // 11
    ];
    for (p, (f, value, ..)) in ops.iter().enumerate() {
        h.invoke(1, p as u64, *f, "{c}", value.clone());
    }
    for (p, (.., kind, reply)) in ops.iter().enumerate() {
        h.complete(2, p as u64, *kind, reply.clone());
    }
    let operations = h.operations().unwrap();
    let refs: Vec<&Operation> = operations.iter().collect();
    let compiled = compile(ModelKind::Collections, &refs, &CheckConfig::default()).unwrap();
    let step = |op: usize| {
        compiled
            .ops
            .iter()
            .find(|c| c.op == op)
            .unwrap_or_else(|| panic!("operation {op} compiled"))
            .step
    };
    let conflict =
        |x: usize, z: usize| model::coll_may_conflict(step(x), step(z), &compiled.interner);
    // Increments of one score: alike and unanswered commute; answered, the reply tells.
    assert!(!conflict(0, 1));
    assert!(conflict(0, 4));
    assert!(conflict(0, 3));
    // Another member, another collection.
    assert!(!conflict(0, 2));
    assert!(!conflict(0, 5));
    assert!(!conflict(5, 7));
    // An add and a remove of one member; a set read whole.
    assert!(conflict(5, 6));
    assert!(conflict(5, 8));
    assert!(conflict(7, 8));
    // Every pair on one list.
    assert!(conflict(9, 10));
    assert!(conflict(10, 11));
    // An answered update is known to commute with nothing.
    assert!(conflict(4, 0));
}
