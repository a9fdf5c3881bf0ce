//! A hot key through the whole simulated cluster: one of eight registers takes 80 % of the
//! operations, the two proxies limit every key to 20 writes per second, and the run's faults
//! (the seed's plan) go on around it. The history must stay linearizable with the refused
//! writes in it as failed operations (the proxy answers `-HOTKEY` before sending anything, so
//! a refused write can never apply: if one did, the checker would find a read of its value);
//! only the hot key is refused; the writes let through stay within the limit's budget; the
//! other keys keep being served. The same seed runs twice with identical traces.

use std::collections::BTreeMap;
use std::time::Duration;

use larder_sim::SimConfig;
use larder_workloads::driver::register_key;
use larder_workloads::history::{Function, OpKind};

const LIMIT: u64 = 20;
const PROXIES: u64 = 2;
const SECONDS: u64 = 10;

/// Seed 3 for 10 s on 5 nodes, 8 groups and 2 proxies; 24 clients paced at 600 operations a
/// second (a refused write answers at once, and unpaced clients would then write the cold keys
/// faster too); registers only, eight of them, 80 % of the operations on the first.
fn hot_config() -> SimConfig {
    let mut config = SimConfig::cluster(3, Duration::from_secs(SECONDS), 5, 8, PROXIES);
    config.clients = 24;
    config.rate = Some(600);
    let mut workload = config.workload.clone().with_hot_key(80);
    workload.register_keys = 8;
    (
        workload.mix.add,
        workload.mix.append,
        workload.mix.list_read,
    ) = (0, 0, 0);
    config.workload = workload;
    config
}

#[test]
fn a_hot_key_is_held_to_its_write_limit_and_the_history_stays_linearizable() {
    let replay = "cargo nextest run -p larder-sim -E 'test(hot_key::)' (seed 3, 10 s, 5 nodes, \
                  8 groups, 2 proxies, 24 clients at 600 ops/s, 8 registers, 80 % on one)";
    // About 340 writes a second, the hot key some 270 of them (135 per proxy, far past the
    // limit), each cold key some 9 (4 per proxy, far under it).
    let mut config = hot_config();
    config.hot_key_writes_per_sec_max = Some(LIMIT);
    let report = linearizable_run(&config, replay);
    let hot = register_key(0);
    let ops = &report.history.ops;
    let refused: Vec<_> = ops
        .iter()
        .filter(|op| {
            op.kind == OpKind::Fail && op.error.as_deref().is_some_and(|e| e.starts_with("HOTKEY"))
        })
        .collect();
    assert!(
        refused
            .iter()
            .all(|op| op.key == hot && op.f == Function::Write),
        "only writes of the hot key are refused: {:?}\nreplay: {replay}",
        refused.iter().find(|op| op.key != hot)
    );
    let hot_writes_ok = ops
        .iter()
        .filter(|op| op.kind == OpKind::Ok && op.key == hot && op.f == Function::Write)
        .count() as u64;
    // Each proxy lets through about LIMIT a second (its sliding window may admit up to one
    // window's worth more at the start).
    let budget = PROXIES * LIMIT * (SECONDS + 1);
    assert!(
        !refused.is_empty() && hot_writes_ok > 0 && hot_writes_ok <= budget,
        "{} hot writes refused, {hot_writes_ok} let through (budget {budget})\nreplay: {replay}",
        refused.len()
    );
    let others_ok = ops
        .iter()
        .filter(|op| op.kind == OpKind::Ok && op.key != hot)
        .count();
    assert!(
        others_ok >= 200,
        "{others_ok} operations on other keys succeeded\nreplay: {replay}"
    );
    eprintln!(
        "hot writes: {hot_writes_ok} let through, {} refused; {others_ok} other operations ok",
        refused.len()
    );
    // The other keys keep their latency: the same seed without the hot key is the budget.
    let mut baseline = config.clone();
    baseline.workload.hot_share_percent = 0;
    baseline.hot_key_writes_per_sec_max = None;
    let calm = larder_sim::run(&baseline).expect("the baseline runs");
    let (with, without) = (
        other_latencies_ms(ops, &hot),
        other_latencies_ms(&calm.history.ops, &hot),
    );
    let [p50, p90, p99] = [0.5, 0.9, 0.99].map(|q| quantile(&with, q));
    let [base50, base90, base99] = [0.5, 0.9, 0.99].map(|q| quantile(&without, q));
    eprintln!(
        "other keys: p50 / p90 / p99 {p50} / {p90} / {p99} ms with the hot key; \
         {base50} / {base90} / {base99} ms without"
    );
    // The budget: the median and p90 within twice the calm run's (plus a little for the
    // refused writes' 10 ms waits). The p99 is the seed's faults (a partition's stall), a
    // handful of operations either way: reported, not judged. The simulator has no CPU
    // model, so a hot key cannot starve the others here by load; the real-process figures
    // in ARCHITECTURE.md ("Hot keys") measure that.
    assert!(
        p50 <= 2 * base50 + 5 && p90 <= 2 * base90 + 10,
        "other keys slowed by the hot key: p50 {p50} ms (calm {base50}), p90 {p90} ms \
         (calm {base90})\nreplay: {replay}"
    );
}

/// A hot key read by many clients at once: the proxies share equal reads of it (a read waits
/// for the next fetch that starts after it arrived, never for one already in flight), the
/// seed's faults go on around it, and the history must stay linearizable while reads are
/// shared. The same seed runs twice with identical traces.
#[test]
fn hot_reads_are_shared_and_the_history_stays_linearizable() {
    let replay = "cargo nextest run -p larder-sim -E 'test(hot_reads_are_shared)' (seed 3, \
                  10 s, 5 nodes, 8 groups, 2 proxies, 24 clients at 600 ops/s, 8 registers, \
                  80 % on one, reads shared from 50 a second)";
    let mut config = hot_config();
    config.hot_key_share_reads_min_per_sec = Some(50);
    let report = linearizable_run(&config, replay);
    let hot = register_key(0);
    let ops = &report.history.ops;
    let hot_reads_ok = ops
        .iter()
        .filter(|op| op.kind == OpKind::Ok && op.key == hot && op.f == Function::Read)
        .count() as u64;
    let shared = report.proxies.shared_reads;
    // A good part of the hot key's reads took another read's fetch: 138 of 1,328 with every
    // read round asking the Raft cores for their views, 132 of 1,370 since the rounds' quick
    // views (stop 45: faster reads overlap less). One in twenty leaves room for such shifts;
    // sharing that stopped working shares none.
    assert!(
        shared * 20 >= hot_reads_ok && shared <= hot_reads_ok,
        "{shared} reads shared of {hot_reads_ok} hot reads\nreplay: {replay}"
    );
    let others_ok = ops
        .iter()
        .filter(|op| op.kind == OpKind::Ok && op.key != hot)
        .count();
    assert!(
        others_ok >= 200,
        "{others_ok} operations on other keys succeeded\nreplay: {replay}"
    );
    eprintln!("hot reads: {hot_reads_ok} ok, {shared} of them shared; {others_ok} other ok");
}

/// A hot slot moved by the center itself: its group leader reports the hot key's slot past
/// `hot_slot_requests_per_sec_max` in its heartbeats, and the center moves that one slot into
/// a new group through the migration path while the clients keep at it and the seed's faults
/// go on. The history stays linearizable and the migration ends done with exactly that slot.
#[test]
fn a_hot_slot_is_moved_into_a_group_of_its_own_by_the_center() {
    let replay = "cargo nextest run -p larder-sim -E 'test(hot_slot_is_moved)' (seed 3, 10 s, \
                  5 nodes, 8 groups, 2 proxies, 24 clients at 600 ops/s, 80 % on one key, \
                  hot_slot_requests_per_sec_max 100)";
    let mut config = hot_config();
    config.hot_slot_requests_per_sec_max = 100;
    let report = linearizable_run(&config, replay);
    let log = &report.migrations;
    let slot = larder_core::slots::slot_of(register_key(0).as_bytes());
    assert!(
        log.started.is_empty(),
        "the operator asked nothing: {log:?}"
    );
    let moved: Vec<_> = log
        .last_seen
        .iter()
        .filter(|m| m.ranges == [(slot, slot)])
        .collect();
    assert!(
        moved.len() == 1
            && moved[0].to > 8
            && matches!(moved[0].phase, larder_protocol::MigrationPhase::Done { .. }),
        "the hot slot {slot} was not moved alone into a new group: {log:?}\nreplay: {replay}"
    );
    eprintln!("hot slot {slot}: {:?}", moved[0]);
}

/// `config` run twice with equal traces, every check passed and the history linearizable.
fn linearizable_run(config: &SimConfig, replay: &str) -> larder_sim::RunReport {
    let report = larder_sim::check_seed(config, replay).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.linearizability.is_linearizable(),
        "{}\nreplay: {replay}",
        report.linearizability
    );
    report
}

/// Latencies (simulated milliseconds) of the successful operations on keys other than `hot`,
/// sorted: each completion paired with its process's invocation.
fn other_latencies_ms(ops: &[larder_workloads::history::Op], hot: &str) -> Vec<u64> {
    let mut invoked: BTreeMap<u64, u64> = BTreeMap::new();
    let mut latencies = Vec::new();
    for op in ops {
        match op.kind {
            OpKind::Invoke => {
                invoked.insert(op.process, op.time_ns);
            }
            OpKind::Ok if op.key != hot => {
                if let Some(at) = invoked.remove(&op.process) {
                    latencies.push(op.time_ns.saturating_sub(at) / 1_000_000);
                }
            }
            _ => {
                invoked.remove(&op.process);
            }
        }
    }
    latencies.sort_unstable();
    latencies
}

/// The `q` quantile (0..=1) of sorted `values`.
fn quantile(values: &[u64], q: f64) -> u64 {
    values[((values.len() - 1) as f64 * q).round() as usize]
}
