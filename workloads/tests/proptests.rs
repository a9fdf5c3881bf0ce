//! Property tests: histories made from a sequential execution are always linearizable; a
//! read of a value never written is always caught; on small random histories the checker
//! agrees with a brute-force search over all orders.

use larder_workloads::{
    Budget, CheckConfig, Function, History, Model, Operation, Outcome, Report, Value, Verdict,
    check_history, check_operations,
};
use proptest::prelude::{
    ProptestConfig, Strategy, TestCaseError, any, prop, prop_assert, prop_assert_eq, prop_assume,
    proptest,
};

/// One step of a generated execution (interpreted by [`execute`]).
#[derive(Debug, Clone)]
struct Step {
    key: usize,
    choice: u8,
    a: i64,
    b: i64,
    process_pick: usize,
    before: u64,
    after: u64,
    roll: u8,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..3usize,
        0..10u8,
        0..4i64,
        0..4i64,
        0..8usize,
        0..250u64,
        0..250u64,
        0..20u8,
    )
        .prop_map(
            |(key, choice, a, b, process_pick, before, after, roll)| Step {
                key,
                choice,
                a,
                b,
                process_pick,
                before,
                after,
                roll,
            },
        )
}

const KEYS: [&str; 3] = ["r0", "r1", "c"];

/// Runs the steps against a sequential register/counter model; each operation takes effect at
/// time `100 * (i + 1)`, inside its interval. Processes run one operation at a time. Some
/// completions become `info` (known or never), and some operations that never happened are
/// added as `info` or `fail`.
fn execute(steps: &[Step]) -> Vec<Operation> {
    let mut registers = [Value::Null, Value::Null];
    let mut counter = 0i64;
    let mut added = false;
    // (free from, alive)
    let mut processes: Vec<(u64, bool)> = Vec::new();
    let mut ops: Vec<Operation> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let t = 100 * (i as u64 + 1);
        let key = KEYS[s.key];
        let (f, value, output, mut outcome) = if s.key < 2 {
            let state = &mut registers[s.key];
            match s.choice {
                0..=3 => (Function::Read, Value::Null, state.clone(), Outcome::Ok),
                4..=6 => {
                    *state = Value::Int(s.a);
                    (Function::Write, Value::Int(s.a), Value::Null, Outcome::Ok)
                }
                _ => {
                    let pair = Value::pair(s.a.into(), s.b.into());
                    if *state == Value::Int(s.a) {
                        *state = Value::Int(s.b);
                        (Function::Cas, pair, Value::Null, Outcome::Ok)
                    } else {
                        (Function::Cas, pair, Value::Null, Outcome::Fail)
                    }
                }
            }
        } else if s.choice < 5 {
            // like Redis, a counter never incremented reads as nil
            let read = if added {
                Value::Int(counter)
            } else {
                Value::Null
            };
            (Function::Read, Value::Null, read, Outcome::Ok)
        } else {
            counter += s.a + 1;
            added = true;
            (Function::Add, Value::Int(s.a + 1), Value::Null, Outcome::Ok)
        };

        // a process free before t
        let count = processes.len();
        let chosen = (0..count)
            .map(|k| (s.process_pick + k) % count.max(1))
            .find(|&p| processes[p].1 && processes[p].0 <= t);
        let process = match chosen {
            Some(p) if count > 0 && s.process_pick < 6 => p,
            _ => {
                processes.push((0, true));
                processes.len() - 1
            }
        };
        let invoke = t.saturating_sub(s.before).max(processes[process].0);
        let complete = t + s.after;
        let mut complete_ns = Some(complete);
        match s.roll {
            0..=2 => outcome = Outcome::Info,
            3 => {
                outcome = Outcome::Info;
                complete_ns = None;
            }
            _ => {}
        }
        processes[process] = (complete + 1, complete_ns.is_some());
        let output = if outcome == Outcome::Ok {
            output
        } else {
            Value::Null
        };
        ops.push(Operation {
            id: ops.len(),
            process: process as u64,
            f,
            key: key.to_string(),
            value,
            output,
            outcome,
            invoke_ns: invoke,
            complete_ns,
            invoke_index: 0,
            complete_index: None,
            error: None,
        });

        // operations that never took effect
        if s.roll >= 18 {
            let (f, value) = match s.key {
                2 => (Function::Add, Value::Int(1000)),
                _ => (Function::Write, Value::Int(100 + i as i64)),
            };
            let (outcome, complete_ns) = if s.roll == 18 {
                (Outcome::Info, None)
            } else {
                (Outcome::Fail, Some(t + s.after))
            };
            ops.push(Operation {
                id: ops.len(),
                process: 10_000 + i as u64,
                f,
                key: key.to_string(),
                value,
                output: Value::Null,
                outcome,
                invoke_ns: t.saturating_sub(s.before),
                complete_ns,
                invoke_index: 0,
                complete_index: None,
                error: None,
            });
        }
    }
    ops
}

fn strict() -> CheckConfig {
    CheckConfig {
        fail_cas_observes_mismatch: true,
        ..CheckConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn executions_are_linearizable(steps in prop::collection::vec(step(), 1..80)) {
        let ops = execute(&steps);
        for config in [CheckConfig::default(), strict()] {
            let report = check_operations(&ops, &config, &Budget::unlimited());
            prop_assert!(report.is_linearizable(), "{}", report);
        }
        // and through history.jsonl
        let history = History::from_operations(&ops);
        let text = history.to_jsonl_string();
        let back = History::from_jsonl_str(&text).unwrap();
        prop_assert_eq!(&back, &history);
        let report = check_history(&back, &strict(), &Budget::unlimited()).unwrap();
        prop_assert!(report.is_linearizable(), "{}", report);
        prop_assert_eq!(report.operations, ops.len());
    }

    #[test]
    fn a_read_of_a_never_written_value_is_caught(
        steps in prop::collection::vec(step(), 1..80),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut ops = execute(&steps);
        let reads: Vec<usize> = ops
            .iter()
            .filter(|op| op.f == Function::Read && op.outcome == Outcome::Ok)
            .map(|op| op.id)
            .collect();
        prop_assume!(!reads.is_empty());
        let victim = reads[pick.index(reads.len())];
        ops[victim].output = if ops[victim].key == "c" {
            Value::Int(1_000_000_000)
        } else {
            Value::Str("never written".into())
        };
        let report = check_operations(&ops, &strict(), &Budget::unlimited());
        let Verdict::NotLinearizable { key, ops: window, longest_linearizable_prefix } =
            &report.verdict
        else {
            return Err(TestCaseError::fail(format!("{report}")));
        };
        prop_assert_eq!(key, &ops[victim].key);
        let prefix = longest_linearizable_prefix.as_ref().expect("unlimited budget");
        prop_assert_eq!(prefix.culprit.id, victim);
        prop_assert!(window.iter().any(|op| op.id == victim));
        // the reported window fails on its own
        let again = check_operations(window, &strict(), &Budget::unlimited());
        prop_assert!(again.is_not_linearizable(), "{}", again);
    }
}

// ---------------------------------------------------------------------------------------
// Brute force: try every order of every admissible subset.

#[derive(Debug, Clone, Copy)]
struct Raw {
    f: u8,
    a: i64,
    b: i64,
    start: u64,
    len: u64,
    outcome: u8,
}

fn raw() -> impl Strategy<Value = Raw> {
    (0..4u8, 0..3i64, 0..3i64, 0..20u64, 0..12u64, 0..20u8).prop_map(
        |(f, a, b, start, len, outcome)| Raw {
            f,
            a,
            b,
            start,
            len,
            outcome,
        },
    )
}

/// A register's or counter's history. With `unique`, every write and cas writes a value of
/// its own (as the simulator's workload does), and reads and compares name one of them,
/// which is where the checker's single-source rule applies.
fn small_history(raws: &[Raw], counter: bool, unique: bool) -> Vec<Operation> {
    // With `unique`: the value operation `i` writes, and the one a read or compare names.
    let own = |i: usize| Value::Int(100 + i as i64);
    let named = |r: &Raw| Value::Int(100 + ((r.a * 3 + r.b) as usize % raws.len()) as i64);
    raws.iter()
        .enumerate()
        .map(|(i, r)| {
            let (f, value, output) = match (counter, r.f) {
                (false, 0) => (
                    Function::Read,
                    Value::Null,
                    if r.a == 0 && (!unique || r.b == 0) {
                        Value::Null
                    } else if unique {
                        named(r)
                    } else {
                        Value::Int(r.b)
                    },
                ),
                (false, 1) if unique => (Function::Write, own(i), Value::Null),
                (false, 1) => (Function::Write, Value::Int(r.a), Value::Null),
                (false, _) if unique => (Function::Cas, Value::pair(named(r), own(i)), Value::Null),
                (false, _) => (
                    Function::Cas,
                    Value::pair(r.a.into(), r.b.into()),
                    Value::Null,
                ),
                (true, 0 | 1) => (Function::Read, Value::Null, Value::Int(r.a + r.b)),
                (true, _) => (Function::Add, Value::Int(r.a + 1), Value::Null),
            };
            let (outcome, complete_ns) = match r.outcome {
                0..=12 => (Outcome::Ok, Some(r.start + r.len)),
                13..=15 => (
                    Outcome::Info,
                    if r.outcome == 13 {
                        None
                    } else {
                        Some(r.start + r.len)
                    },
                ),
                _ => (Outcome::Fail, Some(r.start + r.len)),
            };
            Operation {
                id: i,
                process: i as u64,
                f,
                key: "k".into(),
                value,
                output: if outcome == Outcome::Ok {
                    output
                } else {
                    Value::Null
                },
                outcome,
                invoke_ns: r.start,
                complete_ns,
                invoke_index: 0,
                complete_index: None,
                error: None,
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum Brute {
    Read(Option<i64>),
    Write(i64),
    Cas(i64, i64, Outcome),
    Add(i64),
    CounterRead(i64),
}

fn brute_force(ops: &[Operation], config: &CheckConfig, counter: bool) -> bool {
    let mut items: Vec<Item<Brute>> = Vec::new();
    for op in ops {
        let definite = match op.outcome {
            Outcome::Ok => true,
            Outcome::Info => false,
            Outcome::Fail if op.f == Function::Cas && config.fail_cas_observes_mismatch => true,
            Outcome::Fail => continue,
        };
        if op.f == Function::Read && !definite {
            continue;
        }
        let int = |v: &Value| v.as_int();
        let b = match (counter, op.f) {
            (false, Function::Read) => Brute::Read(int(&op.output)),
            (false, Function::Write) => Brute::Write(int(&op.value).unwrap()),
            (false, Function::Cas) => {
                let (from, to) = op.value.as_pair().unwrap();
                Brute::Cas(int(from).unwrap(), int(to).unwrap(), op.outcome)
            }
            (true, Function::Read) => Brute::CounterRead(int(&op.output).unwrap_or(0)),
            (true, Function::Add) => Brute::Add(int(&op.value).unwrap()),
            other => panic!("{other:?}"),
        };
        let ret = if definite { op.complete_ns } else { None };
        items.push((op.invoke_ns, ret, definite, b));
    }

    // register state: None = null
    some_order(
        &items,
        0,
        None,
        &|b: &Brute, &state: &Option<i64>| match *b {
            Brute::Read(v) => (state == v).then_some(state),
            Brute::Write(v) => Some(Some(v)),
            Brute::Cas(from, to, Outcome::Ok) => (state == Some(from)).then_some(Some(to)),
            Brute::Cas(from, to, Outcome::Info) => {
                Some(if state == Some(from) { Some(to) } else { state })
            }
            Brute::Cas(from, _, Outcome::Fail) => (state != Some(from)).then_some(state),
            Brute::Add(d) => Some(Some(state.unwrap_or(0) + d)),
            Brute::CounterRead(n) => (state.unwrap_or(0) == n).then_some(state),
        },
    )
}

/// One operation for [`some_order`]: call, return (`None`: never), definite, the operation.
type Item<A> = (u64, Option<u64>, bool, A);

/// Whether some order of the items not in `used` (a bit set), starting from `state`, applies
/// every definite one, never one before another definite one that returned before it was
/// called, each step legal under `step`: the brute-force linearizability search.
fn some_order<A, S: Clone>(
    items: &[Item<A>],
    used: u32,
    state: S,
    step: &dyn Fn(&A, &S) -> Option<S>,
) -> bool {
    if items
        .iter()
        .enumerate()
        .all(|(i, it)| !it.2 || used & (1 << i) != 0)
    {
        return true;
    }
    items.iter().enumerate().any(|(x, item)| {
        // every unused determinate operation that returned before x was called must go first
        let blocked = items.iter().enumerate().any(|(y, other)| {
            y != x && used & (1 << y) == 0 && other.2 && other.1.is_some_and(|r| r < item.0)
        });
        if used & (1 << x) != 0 || blocked {
            return false;
        }
        step(&item.3, &state).is_some_and(|next| some_order(items, used | (1 << x), next, step))
    })
}

/// Checks `ops` with no budget and fails unless the verdict is `expected` (linearizable or
/// not; never unknown): the brute force's in the proptests below, or linearizable for an
/// execution of a sequential store.
fn agrees(
    ops: &[Operation],
    config: &CheckConfig,
    expected: bool,
) -> Result<Report, TestCaseError> {
    let report = check_operations(ops, config, &Budget::unlimited());
    prop_assert_eq!(report.is_linearizable(), expected, "{}", report);
    prop_assert_eq!(report.is_not_linearizable(), !expected, "{}", report);
    Ok(report)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10000, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_brute_force(
        raws in prop::collection::vec(raw(), 1..10),
        counter in any::<bool>(),
        mismatch in any::<bool>(),
        unique in any::<bool>(),
    ) {
        let ops = small_history(&raws, counter, unique && !counter);
        let config = CheckConfig {
            model: if counter { Model::Counter } else { Model::Register },
            fail_cas_observes_mismatch: mismatch,
            ..CheckConfig::default()
        };
        let report = agrees(&ops, &config, brute_force(&ops, &config, counter))?;
        if let Verdict::NotLinearizable { ops: window, .. } = &report.verdict {
            prop_assert!(!brute_force(window, &config, counter));
        }
    }
}

// ---------------------------------------------------------------------------------------
// The TTL and multi-key models: executions of a sequential store in which expiries happen at
// random moments are linearizable; a value back after an observed expiry and a torn
// multi-key read are caught.

/// One operation of a TTL or multi-key execution (interpreted by [`execute_ttl`] and
/// [`execute_multi`]).
#[derive(Debug, Clone)]
struct Act {
    choice: u8,
    amount: u64,
    /// Operations a pending expiry survives, counted from its write.
    life: u8,
    subset: u8,
    before: u64,
    after: u64,
    roll: u8,
}

fn act() -> impl Strategy<Value = Act> {
    (
        0..14u8,
        1..3000u64,
        0..6u8,
        0..8u8,
        0..250u64,
        0..250u64,
        0..20u8,
    )
        .prop_map(|(choice, amount, life, subset, before, after, roll)| Act {
            choice,
            amount,
            life,
            subset,
            before,
            after,
            roll,
        })
}

/// An operation of the i-th act, taking effect at `100 * (i + 1)`; some completions become
/// `info` (the effect happened, the answer is lost), a few never complete.
#[allow(clippy::too_many_arguments)]
fn acted(
    ops: &mut Vec<Operation>,
    i: usize,
    a: &Act,
    key: &str,
    f: Function,
    value: Value,
    output: Value,
) {
    let t = 100 * (i as u64 + 1);
    let (outcome, complete_ns) = match a.roll {
        0..=1 => (Outcome::Info, Some(t + a.after)),
        2 => (Outcome::Info, None),
        _ => (Outcome::Ok, Some(t + a.after)),
    };
    ops.push(Operation {
        id: ops.len(),
        process: i as u64,
        f,
        key: key.to_string(),
        value,
        output: if outcome == Outcome::Ok {
            output
        } else {
            Value::Null
        },
        outcome,
        invoke_ns: t.saturating_sub(a.before),
        complete_ns,
        invoke_index: 0,
        complete_index: None,
        error: None,
    });
}

/// A sequential store with one TTL key whose pending expiry happens `life` operations after
/// it was set (or never, if written over first).
fn execute_ttl(acts: &[Act]) -> Vec<Operation> {
    let mut value: Option<String> = None;
    // (expires before operation index, ttl set in ms)
    let mut expiry: Option<(usize, u64)> = None;
    let mut ops = Vec::new();
    for (i, a) in acts.iter().enumerate() {
        if expiry.is_some_and(|(at, _)| i >= at) {
            value = None;
            expiry = None;
        }
        let fresh = format!("v{i}");
        let ttl = a.amount;
        let int = |n: i64| Value::Int(n);
        let (f, input, output) = match a.choice {
            0..=2 => {
                value = Some(fresh.clone());
                expiry = Some((i + 1 + a.life as usize, ttl));
                let input = Value::List(vec![fresh.into(), int(ttl as i64)]);
                (Function::SetTtl, input, Value::Null)
            }
            3 => {
                value = Some(fresh.clone());
                expiry = None;
                (Function::Write, Value::Str(fresh), Value::Null)
            }
            4..=6 => (Function::Read, Value::Null, value.clone().into()),
            7 | 8 => {
                // any time left within the TTL set is a correct answer
                let answer = match (&value, expiry) {
                    (None, _) => -2,
                    (Some(_), None) => -1,
                    (Some(_), Some((_, set))) => (a.amount % (set + 1)) as i64,
                };
                if a.choice == 7 {
                    (Function::Ttl, "ms".into(), int(answer))
                } else {
                    let seconds = if answer < 0 {
                        answer
                    } else {
                        (answer + 500) / 1000
                    };
                    (Function::Ttl, "s".into(), int(seconds))
                }
            }
            9 | 10 => {
                let existed = value.is_some();
                if existed {
                    expiry = Some((i + 1 + a.life as usize, ttl));
                }
                (Function::Expire, int(ttl as i64), int(existed.into()))
            }
            _ => {
                let removed = value.is_some() && expiry.is_some();
                expiry = None;
                (Function::Persist, Value::Null, int(removed.into()))
            }
        };
        acted(&mut ops, i, a, "t", f, input, output);
    }
    ops
}

const SUB_KEYS: [&str; 3] = ["a", "b", "c"];

/// A sequential store with one multi-key object of three sub-keys.
fn execute_multi(acts: &[Act]) -> Vec<Operation> {
    let mut state: [Option<String>; 3] = Default::default();
    let mut ops = Vec::new();
    for (i, a) in acts.iter().enumerate() {
        let subset: Vec<usize> = (0..3).filter(|bit| a.subset & (1 << bit) != 0).collect();
        let subset = if subset.is_empty() {
            vec![0, 1, 2]
        } else {
            subset
        };
        let names =
            |which: &[usize]| Value::List(which.iter().map(|&k| SUB_KEYS[k].into()).collect());
        let fresh = format!("v{i}");
        let (f, input, output) = match a.choice {
            0..=5 => {
                let pairs = subset
                    .iter()
                    .map(|&k| {
                        state[k] = Some(fresh.clone());
                        Value::pair(SUB_KEYS[k].into(), fresh.clone().into())
                    })
                    .collect();
                (Function::MWrite, Value::List(pairs), Value::Null)
            }
            6..=7 => {
                let deleted = subset
                    .iter()
                    .filter(|&&k| state[k].take().is_some())
                    .count();
                (Function::MDel, names(&subset), Value::Int(deleted as i64))
            }
            _ => {
                let seen = state.iter().map(|value| value.clone().into()).collect();
                (Function::MRead, names(&[0, 1, 2]), Value::List(seen))
            }
        };
        acted(&mut ops, i, a, "{m}", f, input, output);
    }
    ops
}

/// Operations after every operation of `ops` has ended: `(f, value, output)` each, one after
/// another.
fn then(ops: &mut Vec<Operation>, key: &str, suffix: Vec<(Function, Value, Value)>) {
    let end = ops
        .iter()
        .map(|op| op.complete_ns.unwrap_or(op.invoke_ns).max(op.invoke_ns))
        .max()
        .unwrap_or(0);
    for (k, (f, value, output)) in suffix.into_iter().enumerate() {
        let start = end + 1000 * (k as u64 + 1);
        ops.push(Operation {
            id: ops.len(),
            process: 1_000_000 + k as u64,
            f,
            key: key.to_string(),
            value,
            output,
            outcome: Outcome::Ok,
            invoke_ns: start,
            complete_ns: Some(start + 10),
            invoke_index: 0,
            complete_index: None,
            error: None,
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn ttl_executions_are_linearizable(acts in prop::collection::vec(act(), 1..60)) {
        agrees(&execute_ttl(&acts), &CheckConfig::default(), true)?;
    }

    #[test]
    fn a_value_back_after_an_observed_expiry_is_caught(
        acts in prop::collection::vec(act(), 0..40),
    ) {
        let mut ops = execute_ttl(&acts);
        let written = Value::List(vec!["back".into(), Value::Int(100)]);
        then(&mut ops, "t", vec![
            (Function::SetTtl, written, Value::Null),
            (Function::Read, Value::Null, Value::Null),
            (Function::Read, Value::Null, "back".into()),
        ]);
        let report = check_operations(&ops, &CheckConfig::default(), &Budget::unlimited());
        prop_assert!(report.is_not_linearizable(), "{}", report);
    }

    #[test]
    fn multi_key_executions_are_linearizable(acts in prop::collection::vec(act(), 1..60)) {
        agrees(&execute_multi(&acts), &CheckConfig::default(), true)?;
    }

    #[test]
    fn a_torn_multi_key_read_is_caught(acts in prop::collection::vec(act(), 0..40)) {
        let mut ops = execute_multi(&acts);
        let all = |value: &str| {
            Value::List(SUB_KEYS.iter().map(|k| Value::pair((*k).into(), value.into())).collect())
        };
        let names = Value::List(SUB_KEYS.iter().map(|k| (*k).into()).collect());
        let torn = Value::List(vec!["y".into(), "x".into(), "y".into()]);
        then(&mut ops, "{m}", vec![
            (Function::MWrite, all("x"), Value::Null),
            (Function::MWrite, all("y"), Value::Null),
            (Function::MRead, names, torn),
        ]);
        let report = check_operations(&ops, &CheckConfig::default(), &Budget::unlimited());
        prop_assert!(report.is_not_linearizable(), "{}", report);
    }
}

// ---------------------------------------------------------------------------------------
// The collections model: executions of a sequential store of one list, one set and one
// sorted set (operations alone and in transactions) are linearizable; a pop answered twice
// is caught. The executions' unanswered operations are what the parts' rule for them
// (`may_go_next`) is tried on.

/// A sequential store of one collections object (`l`, `s`, `z`).
#[derive(Default)]
struct Collections {
    list: std::collections::VecDeque<String>,
    set: std::collections::BTreeSet<String>,
    zset: std::collections::BTreeMap<String, i64>,
}

impl Collections {
    /// One operation chosen by `choice` (its own element `fresh` when it pushes): its
    /// function, value and reply.
    fn act(
        &mut self,
        choice: u8,
        member: &str,
        fresh: &str,
        delta: i64,
    ) -> (Function, Value, Value) {
        let side = |left: bool| Value::from(if left { "l" } else { "r" });
        match choice % 10 {
            c @ (0 | 1) => {
                if c == 0 {
                    self.list.push_front(fresh.into());
                } else {
                    self.list.push_back(fresh.into());
                }
                let value = Value::List(vec!["l".into(), side(c == 0), fresh.into()]);
                (Function::Push, value, Value::Int(self.list.len() as i64))
            }
            c @ (2 | 3) => {
                let popped = if c == 2 {
                    self.list.pop_front()
                } else {
                    self.list.pop_back()
                };
                let value = Value::List(vec!["l".into(), side(c == 2)]);
                (
                    Function::Pop,
                    value,
                    popped.map_or(Value::Null, Value::from),
                )
            }
            4 => {
                let items = self.list.iter().map(|e| Value::from(e.as_str())).collect();
                (
                    Function::LRange,
                    Value::List(vec!["l".into()]),
                    Value::List(items),
                )
            }
            5 => {
                let added = self.set.insert(member.into());
                let value = Value::List(vec!["s".into(), member.into()]);
                (Function::SAdd, value, Value::Int(added as i64))
            }
            6 => {
                let removed = self.set.remove(member);
                let value = Value::List(vec!["s".into(), member.into()]);
                (Function::SRem, value, Value::Int(removed as i64))
            }
            7 => {
                // Members in reverse: the store may list a set in any order.
                let members = self
                    .set
                    .iter()
                    .rev()
                    .map(|m| Value::from(m.as_str()))
                    .collect();
                (
                    Function::SMembers,
                    Value::List(vec!["s".into()]),
                    Value::List(members),
                )
            }
            9 => {
                let score = self
                    .zset
                    .get(member)
                    .map_or(Value::Null, |s| Value::Int(*s));
                let value = Value::List(vec!["z".into(), member.into()]);
                (Function::ZScore, value, score)
            }
            _ => {
                let score = self.zset.entry(member.into()).or_default();
                *score += delta;
                let value = Value::List(vec!["z".into(), member.into(), Value::Int(delta)]);
                (Function::ZIncrBy, value, Value::Int(*score))
            }
        }
    }
}

fn execute_collections(acts: &[Act]) -> Vec<Operation> {
    let mut store = Collections::default();
    let mut ops = Vec::new();
    for (i, a) in acts.iter().enumerate() {
        let member = format!("m{}", a.subset % 3);
        let fresh = format!("e{i}");
        let delta = a.amount as i64 % 7 - 3;
        let (f, value, output) = if a.choice >= 11 {
            // A transaction of two operations (the second pushes an element of its own).
            let subs = [(a.choice, fresh.clone()), (a.life, format!("e{i}b"))]
                .into_iter()
                .map(|(choice, fresh)| {
                    let (f, value, output) = store.act(choice, &member, &fresh, delta);
                    let Value::List(args) = value else {
                        unreachable!("args are a list")
                    };
                    let mut sub = vec![Value::from(f.to_string())];
                    sub.extend(args);
                    (Value::List(sub), output)
                })
                .collect::<Vec<_>>();
            let (subs, replies): (Vec<Value>, Vec<Value>) = subs.into_iter().unzip();
            (Function::Txn, Value::List(subs), Value::List(replies))
        } else {
            store.act(a.choice, &member, &fresh, delta)
        };
        acted(&mut ops, i, a, "{c}", f, value, output);
    }
    ops
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn collections_executions_are_linearizable(acts in prop::collection::vec(act(), 1..150)) {
        agrees(&execute_collections(&acts), &CheckConfig::default(), true)?;
    }

    #[test]
    fn an_element_popped_twice_is_caught(acts in prop::collection::vec(act(), 0..40)) {
        let mut ops = execute_collections(&acts);
        let args = |items: &[&str]| Value::List(items.iter().map(|&i| Value::from(i)).collect());
        // A list of its own holding one element cannot give it to a pop from each end.
        then(&mut ops, "{c}", vec![
            (Function::Push, args(&["l2", "l", "twice"]), Value::Int(1)),
            (Function::Pop, args(&["l2", "l"]), "twice".into()),
            (Function::Pop, args(&["l2", "r"]), "twice".into()),
        ]);
        let report = check_operations(&ops, &CheckConfig::default(), &Budget::unlimited());
        prop_assert!(report.is_not_linearizable(), "{}", report);
    }
}

// ---------------------------------------------------------------------------------------
// Appends: the register model keeps an appended string as (the state appended to, the
// suffix), so a string two orders of appends build, or a write or a read names whole, must
// still be one state. On small histories of appends, writes and reads of short strings, the
// checker agrees with a brute-force search over every order.

/// What a read of the appended key returned: nothing, or one of these strings.
const READ_STRINGS: [&str; 8] = ["", "a", "b", "ab", "ba", "aa", "abab", "aab"];

/// With `append_only`, no writes: the checker then cuts the search by the longest read.
fn append_history(raws: &[Raw], append_only: bool) -> Vec<Operation> {
    let mut ops = small_history(raws, false, false);
    for (op, r) in ops.iter_mut().zip(raws) {
        let pick = (r.a * 3 + r.b) as usize;
        let (f, value, output) = match r.f {
            0 => (
                Function::Read,
                Value::Null,
                match pick {
                    0 => Value::Null,
                    n => Value::Str(READ_STRINGS[n - 1].into()),
                },
            ),
            1 if !append_only => (
                Function::Write,
                Value::Str(["a", "ab", ""][r.a as usize].into()),
                Value::Null,
            ),
            // The empty append matters: on a missing key it makes "" (a key), not nothing.
            _ => (
                Function::Append,
                Value::Str(
                    if r.b == 2 {
                        ""
                    } else {
                        ["a", "b", "ab"][r.a as usize]
                    }
                    .into(),
                ),
                Value::Null,
            ),
        };
        op.f = f;
        op.value = value;
        if op.outcome == Outcome::Ok {
            op.output = output;
        }
        // Appends and writes do not fail in this model: a failed one did not happen.
        if op.outcome == Outcome::Fail {
            op.outcome = Outcome::Info;
        }
    }
    ops
}

fn brute_force_appends(ops: &[Operation]) -> bool {
    #[derive(Debug)]
    enum Act {
        Read(Option<String>),
        Write(String),
        Append(String),
    }
    let text = |v: &Value| match v {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    };
    let items: Vec<Item<Act>> = ops
        .iter()
        .filter(|op| op.outcome == Outcome::Ok || op.f != Function::Read)
        .map(|op| {
            let definite = op.outcome == Outcome::Ok;
            let act = match op.f {
                Function::Read => Act::Read(text(&op.output)),
                Function::Write => Act::Write(text(&op.value).unwrap()),
                _ => Act::Append(text(&op.value).unwrap()),
            };
            (
                op.invoke_ns,
                definite.then_some(op.complete_ns).flatten(),
                definite,
                act,
            )
        })
        .collect();
    some_order(
        &items,
        0,
        None,
        &|act: &Act, state: &Option<String>| match act {
            Act::Read(seen) => (state == seen).then(|| state.clone()),
            Act::Write(v) => Some(Some(v.clone())),
            Act::Append(s) => Some(Some(state.clone().unwrap_or_default() + s)),
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    #[test]
    fn appends_agree_with_brute_force(
        raws in prop::collection::vec(raw(), 1..9),
        append_only in any::<bool>(),
    ) {
        let ops = append_history(&raws, append_only);
        let config = CheckConfig::default();
        agrees(&ops, &config, brute_force_appends(&ops))?;
    }
}

// ---------------------------------------------------------------------------------------
// The multi-key model against brute force: small histories of writes, deletes and reads of
// two sub-keys, where the checker's single-source rule, its merge of values nobody reads and
// its twins (operations with one step) all apply.

/// With `unique`, every write writes a value of its own and reads name one of them; without,
/// values come from two, so writes are often twins.
fn multi_small_history(raws: &[Raw], unique: bool) -> Vec<Operation> {
    let subsets: [&[&str]; 3] = [&["a"], &["b"], &["a", "b"]];
    let value = |pick: i64, own: usize| -> Value {
        match (pick, unique) {
            (0, _) => Value::Null,
            (p, false) => ["x", "y"][p as usize - 1].into(),
            (p, true) => format!("w{}", (own + p as usize) % raws.len())
                .as_str()
                .into(),
        }
    };
    let names = |which: &[&str]| Value::List(which.iter().map(|&n| n.into()).collect());
    let mut ops = small_history(raws, false, false);
    for ((i, op), r) in ops.iter_mut().enumerate().zip(raws) {
        let subset = subsets[r.a as usize];
        let (f, input, output) = match r.f {
            0 => (
                Function::MRead,
                names(&["a", "b"]),
                Value::List(vec![value(r.b, i), value((r.start % 3) as i64, i + 1)]),
            ),
            1 | 2 => {
                let written = if unique {
                    format!("w{i}").as_str().into()
                } else {
                    value(r.b.max(1), i)
                };
                let pairs = subset
                    .iter()
                    .map(|&n| Value::pair(n.into(), written.clone()))
                    .collect();
                (Function::MWrite, Value::List(pairs), Value::Null)
            }
            _ => (Function::MDel, names(subset), Value::Int(r.b % 3)),
        };
        op.f = f;
        op.key = "{m}".into();
        op.value = input;
        if op.outcome == Outcome::Ok {
            op.output = output;
        }
    }
    ops
}

/// A multi-key step for the brute force: read (outputs), write (names, value), delete
/// (names, count when definite).
#[derive(Debug, Clone)]
enum MultiBrute {
    Read(Vec<Value>),
    Write(Vec<Value>, Value),
    Del(Vec<Value>, Option<i64>),
}

fn brute_force_multi(ops: &[Operation]) -> bool {
    let list = |v: &Value| match v {
        Value::List(items) => items.clone(),
        other => panic!("{other:?}"),
    };
    let mut items: Vec<Item<MultiBrute>> = Vec::new();
    for op in ops {
        let definite = match op.outcome {
            Outcome::Ok => true,
            Outcome::Info => false,
            Outcome::Fail => continue,
        };
        let b = match op.f {
            Function::MRead if !definite => continue,
            Function::MRead => MultiBrute::Read(list(&op.output)),
            Function::MWrite => {
                let pairs = list(&op.value);
                let (names, values): (Vec<Value>, Vec<Value>) = pairs
                    .iter()
                    .map(|p| {
                        let (n, v) = p.as_pair().unwrap();
                        (n.clone(), v.clone())
                    })
                    .unzip();
                MultiBrute::Write(names, values[0].clone())
            }
            Function::MDel => MultiBrute::Del(
                list(&op.value),
                definite.then(|| op.output.as_int().unwrap()),
            ),
            other => panic!("{other:?}"),
        };
        let ret = if definite { op.complete_ns } else { None };
        items.push((op.invoke_ns, ret, definite, b));
    }
    // State: the values of a and b (`Value::Null`: absent).
    let index = |name: &Value| usize::from(*name == Value::from("b"));
    some_order(
        &items,
        0,
        [Value::Null, Value::Null],
        &|b: &MultiBrute, state: &[Value; 2]| match b {
            MultiBrute::Read(seen) => (seen[..] == state[..]).then(|| state.clone()),
            MultiBrute::Write(names, value) => {
                let mut next = state.clone();
                for name in names {
                    next[index(name)] = value.clone();
                }
                Some(next)
            }
            MultiBrute::Del(names, count) => {
                let mut next = state.clone();
                let mut deleted = 0;
                for name in names {
                    if next[index(name)] != Value::Null {
                        deleted += 1;
                    }
                    next[index(name)] = Value::Null;
                }
                count.is_none_or(|c| c == deleted).then_some(next)
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    #[test]
    fn multi_key_agrees_with_brute_force(
        raws in prop::collection::vec(raw(), 1..9),
        unique in any::<bool>(),
    ) {
        let ops = multi_small_history(&raws, unique);
        let config = CheckConfig {
            model: Model::Multi,
            ..CheckConfig::default()
        };
        agrees(&ops, &config, brute_force_multi(&ops))?;
    }
}
