//! Times `check_history` on generated register histories.
//!
//! `cargo bench -p larder-workloads --bench check` (release profile). The main case is
//! 100,000 operations over 1,000 keys from 10 processes; then the same with 100 processes,
//! a contended case of 20,000 operations over 10 keys from 20 processes, 10,000 operations on
//! one key from 20 processes, a simulator-like case (4 keys, unique values, 5% lost), and
//! counters. Each history comes from a sequential register
//! execution: every operation gets a random interval, takes effect at a random point inside it,
//! and reads/cas outcomes follow the order of those points; 1% of completions are lost
//! (`info`, the process is replaced, as in Jepsen).

use std::time::{Duration, Instant};

use larder_workloads::{
    Budget, CheckConfig, Function, History, Operation, Outcome, Value, check_history,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Shape {
    operations: usize,
    keys: u64,
    processes: u64,
    /// Counter keys (add/read) instead of registers.
    counter: bool,
    /// Every write writes a new value (as Larder's simulator does), instead of one of 5.
    unique: bool,
    /// Percent of completions lost.
    lost_percent: u64,
}

const REGISTER: Shape = Shape {
    operations: 0,
    keys: 0,
    processes: 0,
    counter: false,
    unique: false,
    lost_percent: 1,
};

fn generate(shape: &Shape, seed: u64) -> History {
    let mut rng = Rng(seed);
    // (process, key, function, value, invoke, effect point, complete, lost)
    let mut ops: Vec<Operation> = Vec::with_capacity(shape.operations);
    let mut points: Vec<u64> = Vec::with_capacity(shape.operations);
    let mut clocks: Vec<(u64, u64)> = (0..shape.processes).map(|p| (p, 0)).collect();
    let mut next_process = shape.processes;
    for i in 0..shape.operations {
        let slot = (i as u64 % shape.processes) as usize;
        let (process, clock) = clocks[slot];
        let invoke = clock + rng.below(200);
        let duration = 100 + rng.below(3_000);
        let complete = invoke + duration;
        let point = invoke + rng.below(duration + 1);
        let key = format!("reg:{}", rng.below(shape.keys));
        let roll = rng.below(100);
        let written = if shape.unique {
            i as i64
        } else {
            rng.below(5) as i64
        };
        let (f, value) = match roll {
            0..=49 => (Function::Read, Value::Null),
            _ if shape.counter => (Function::Add, Value::Int(1 + rng.below(9) as i64)),
            50..=89 => (Function::Write, Value::Int(written)),
            _ => (
                Function::Cas,
                Value::pair(
                    Value::Int(rng.below(5) as i64),
                    Value::Int(rng.below(5) as i64),
                ),
            ),
        };
        let lost = rng.below(100) < shape.lost_percent;
        ops.push(Operation {
            id: i,
            process,
            f,
            key,
            value,
            output: Value::Null,
            outcome: if lost { Outcome::Info } else { Outcome::Ok },
            invoke_ns: invoke,
            complete_ns: Some(complete),
            invoke_index: 0,
            complete_index: None,
            error: None,
        });
        points.push(point);
        if lost {
            clocks[slot] = (next_process, complete + 1);
            next_process += 1;
        } else {
            clocks[slot] = (process, complete + 1);
        }
    }
    // Execute in effect order.
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (points[i], i));
    let mut state: std::collections::BTreeMap<String, Value> = std::collections::BTreeMap::new();
    for i in order {
        let op = &mut ops[i];
        let current = state.get(&op.key).cloned().unwrap_or(Value::Null);
        match op.f {
            Function::Read => op.output = current,
            Function::Add => {
                let sum = current.as_int().unwrap_or(0) + op.value.as_int().expect("delta");
                state.insert(op.key.clone(), Value::Int(sum));
            }
            Function::Write => {
                state.insert(op.key.clone(), op.value.clone());
            }
            Function::Cas => {
                let (from, to) = op.value.as_pair().expect("cas pair");
                if *from == current {
                    state.insert(op.key.clone(), to.clone());
                } else if op.outcome == Outcome::Ok {
                    op.outcome = Outcome::Fail;
                }
            }
            _ => unreachable!(),
        }
        if op.outcome != Outcome::Ok {
            op.output = Value::Null;
        }
    }
    History::from_operations(&ops)
}

// The benchmark measures real time; it is not simulated code.
#[allow(clippy::disallowed_methods)]
fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

fn run(name: &str, shape: &Shape, runs: usize) {
    let (history, generated) = time(|| generate(shape, 42));
    let config = CheckConfig {
        fail_cas_observes_mismatch: true,
        ..CheckConfig::default()
    };
    let mut best = Duration::MAX;
    let mut report = None;
    for _ in 0..runs {
        let budget = Budget::unlimited().with_memory_max(4 << 30);
        let (r, took) = time(|| check_history(&history, &config, &budget));
        best = best.min(took);
        report = Some(r.expect("well-formed history"));
    }
    let report = report.expect("at least one run");
    // Generated histories are linearizable: a NotLinearizable verdict is a checker bug.
    assert!(!report.is_not_linearizable(), "{report}");
    let verdict = match &report.verdict {
        larder_workloads::Verdict::Unknown { reason } => format!("UNKNOWN ({reason})"),
        _ => "linearizable".to_string(),
    };
    let text = history.to_jsonl_string();
    let (parsed, parse) = time(|| History::from_jsonl_str(&text).expect("round trip"));
    assert_eq!(parsed.len(), history.len());
    println!(
        "{name}: {} operations, {} keys, {} processes: {verdict}, check_history best of {runs} = \
         {:.1} ms ({} states; generated in {:.1} ms; parsing its {:.1} MB of history.jsonl takes \
         {:.1} ms)",
        report.operations,
        report.keys.len(),
        shape.processes,
        best.as_secs_f64() * 1e3,
        report.states,
        generated.as_secs_f64() * 1e3,
        text.len() as f64 / 1e6,
        parse.as_secs_f64() * 1e3,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is ignored.
    run(
        "register/1000 keys",
        &Shape {
            operations: 100_000,
            keys: 1_000,
            processes: 10,
            ..REGISTER
        },
        5,
    );
    run(
        "register/1000 keys, 100 processes",
        &Shape {
            operations: 100_000,
            keys: 1_000,
            processes: 100,
            ..REGISTER
        },
        3,
    );
    run(
        "register/10 keys contended",
        &Shape {
            operations: 20_000,
            keys: 10,
            processes: 20,
            ..REGISTER
        },
        3,
    );
    run(
        "register/1 key, 20 processes",
        &Shape {
            operations: 10_000,
            keys: 1,
            processes: 20,
            ..REGISTER
        },
        3,
    );
    run(
        "register/4 keys, unique values, 5% lost",
        &Shape {
            operations: 40_000,
            keys: 4,
            processes: 10,
            unique: true,
            lost_percent: 5,
            ..REGISTER
        },
        3,
    );
    run(
        "counter/2 keys, 1% lost",
        &Shape {
            operations: 10_000,
            keys: 2,
            processes: 10,
            counter: true,
            ..REGISTER
        },
        3,
    );
}
