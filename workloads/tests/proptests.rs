//! Property tests: histories made from a sequential execution are always linearizable; a
//! read of a value never written is always caught; on small random histories the checker
//! agrees with a brute-force search over all orders.

use larder_workloads::{
    Budget, CheckConfig, Function, History, Model, Operation, Outcome, Value, Verdict,
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

fn small_history(raws: &[Raw], counter: bool) -> Vec<Operation> {
    raws.iter()
        .enumerate()
        .map(|(i, r)| {
            let (f, value, output) = match (counter, r.f) {
                (false, 0) => (
                    Function::Read,
                    Value::Null,
                    if r.a == 0 {
                        Value::Null
                    } else {
                        Value::Int(r.b)
                    },
                ),
                (false, 1) => (Function::Write, Value::Int(r.a), Value::Null),
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
    // (call, return or None for never, definite, operation)
    let mut items: Vec<(u64, Option<u64>, bool, Brute)> = Vec::new();
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
    fn go(items: &[(u64, Option<u64>, bool, Brute)], used: u32, state: Option<i64>) -> bool {
        let all_definite = items
            .iter()
            .enumerate()
            .all(|(i, it)| !it.2 || used & (1 << i) != 0);
        if all_definite {
            return true;
        }
        for (x, item) in items.iter().enumerate() {
            if used & (1 << x) != 0 {
                continue;
            }
            // every unused determinate operation that returned before x was called must go first
            let blocked = items.iter().enumerate().any(|(y, other)| {
                y != x && used & (1 << y) == 0 && other.2 && other.1.is_some_and(|r| r < item.0)
            });
            if blocked {
                continue;
            }
            let next = match item.3 {
                Brute::Read(v) => (state == v).then_some(state),
                Brute::Write(v) => Some(Some(v)),
                Brute::Cas(from, to, Outcome::Ok) => (state == Some(from)).then_some(Some(to)),
                Brute::Cas(from, to, Outcome::Info) => {
                    Some(if state == Some(from) { Some(to) } else { state })
                }
                Brute::Cas(from, _, Outcome::Fail) => (state != Some(from)).then_some(state),
                Brute::Add(d) => Some(Some(state.unwrap_or(0) + d)),
                Brute::CounterRead(n) => (state.unwrap_or(0) == n).then_some(state),
            };
            if let Some(next) = next
                && go(items, used | (1 << x), next)
            {
                return true;
            }
        }
        false
    }
    go(&items, 0, None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10000, ..ProptestConfig::default() })]

    #[test]
    fn agrees_with_brute_force(
        raws in prop::collection::vec(raw(), 1..10),
        counter in any::<bool>(),
        mismatch in any::<bool>(),
    ) {
        let ops = small_history(&raws, counter);
        let config = CheckConfig {
            model: if counter { Model::Counter } else { Model::Register },
            fail_cas_observes_mismatch: mismatch,
            ..CheckConfig::default()
        };
        let expected = brute_force(&ops, &config, counter);
        let report = check_operations(&ops, &config, &Budget::unlimited());
        prop_assert_eq!(report.is_linearizable(), expected, "{}", report);
        prop_assert_eq!(report.is_not_linearizable(), !expected, "{}", report);
        if let Verdict::NotLinearizable { ops: window, .. } = &report.verdict {
            prop_assert!(!brute_force(window, &config, counter));
        }
    }
}
