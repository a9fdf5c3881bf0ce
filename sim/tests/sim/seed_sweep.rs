//! The fixed seeds CI runs: the 3-node group under each seed's fault plan, run twice, with
//! identical trace hashes and every invariant holding.
//!
//! Kept regressions inside this range: seed 2 (a duplicated message re-executed `INCRBY`; fixed
//! by client sessions in the state machine) and seed 13 (a node restart hit an injected `EIO`
//! and ended the whole simulation; fixed by the supervisor retrying the start, and since stop
//! 62 by restarting the process, see `swarm_crowd_40`).

use std::time::Duration;

use larder_sim::SimConfig;

/// Simulated seconds per run: long enough for a plan's faults and the liveness phase, short
/// enough that 24 seeds x 2 runs stay well inside CI's budget.
const DURATION: Duration = Duration::from_secs(15);

fn check_seed(seed: u64) {
    let replay = format!("larder sim --seed {seed} --duration 15s --check-determinism");
    larder_sim::check_seed(&SimConfig::new(seed, DURATION), &replay)
        .unwrap_or_else(|e| panic!("{e}"));
}

macro_rules! seeds {
    ($($name:ident = $seed:expr),* $(,)?) => {
        $(#[test] fn $name() { check_seed($seed); })*
    };
}

seeds! {
    seed_01 = 1, seed_02 = 2, seed_03 = 3, seed_04 = 4, seed_05 = 5, seed_06 = 6,
    seed_07 = 7, seed_08 = 8, seed_09 = 9, seed_10 = 10, seed_11 = 11, seed_12 = 12,
    seed_13 = 13, seed_14 = 14, seed_15 = 15, seed_16 = 16, seed_17 = 17, seed_18 = 18,
    seed_19 = 19, seed_20 = 20, seed_21 = 21, seed_22 = 22, seed_23 = 23, seed_24 = 24,
}

/// A seed's trace must not depend on what ran before it in the process (a sweep runs many
/// seeds in one process; the replay command runs one in a fresh process).
#[test]
fn a_seed_traces_the_same_after_other_seeds() {
    let config = |seed| SimConfig::new(seed, Duration::from_secs(8));
    let alone = larder_sim::run(&config(5)).expect("seed 5");
    larder_sim::run(&config(3)).expect("seed 3");
    let after = larder_sim::run(&config(5)).expect("seed 5 again");
    assert_eq!(alone.trace_hash, after.trace_hash);
}

/// One-group swarm seed 2 with a cross-cluster sync (`--sync`, 64 register keys). Its message
/// duplication delivered a write to a replica again 46-145 ms after every replica had refused
/// the first copies (`NotLeader`, `Unavailable`), and the replica, leader by then, applied it,
/// while the client had reported the write failed. No production transport delivers a request
/// twice; the simulator now hands the caller of a duplicated write a timeout instead of a
/// refusal (`larder_sim::net`, "A duplicate"), and the history must be linearizable.
#[test]
fn swarm_sync_02() {
    let replay = "larder sim --seed 2 --duration 15s --swarm --sync --check-determinism";
    let mut config = SimConfig::new(2, DURATION);
    config.swarm = true;
    let config = config.with_sync();
    let report = larder_sim::check_seed(&config, replay).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.linearizability.is_linearizable(),
        "{}\nreplay: {replay}",
        report.linearizability
    );
    assert!(
        report.sync.is_some_and(|sync| sync.keys >= 60),
        "replay: {replay}"
    );
}

/// One-group swarm seed 40 with 24 clients at 600 operations a simulated second. Node 1
/// restarted while its disk failed syncs; its start failed (EIO on a sync, which poisons the
/// disk until it is opened again) and the simulator's supervisor tried the start again in the
/// same process every 200 ms, never opening the disk again, for the last eleven seconds of
/// the run. With the group's third replica retired (a corrupt record), the group could not
/// commit: no final read succeeded. A failed start now ends the process and the harness
/// restarts it, as a real supervisor does (`restart_fatal`); the run must pass.
#[test]
fn swarm_crowd_40() {
    check_crowd(40);
}

/// One-group swarm seed 34 with 24 clients at 600 operations a simulated second: its
/// collections object `{c0}` (2,147 operations, transactions joining its list, set and sorted
/// set, and operations a leader change left unanswered) took the checker 10.5 million states
/// and 161 s (debug) while it searched the parts together only; searched apart as well
/// (`checker::parts`), about 204,000 states and 5 s for both runs (debug; 42,000 states since
/// stop 64's rules for unanswered operations in a part's search). Kept so that the
/// checker's reach on such objects is part of CI: without the cut this test was stopped by
/// nextest's 300 s limit.
#[test]
fn swarm_crowd_34() {
    check_crowd(34);
}

/// One-group swarm seed 11 with 24 clients at 600 operations a simulated second: its
/// collections object `{c0}` (4,139 operations: a list, a set and a sorted set joined by
/// transactions, with 18 operations a leader change left unanswered) was `unknown` at stop 62
/// (past 2.49 million states), judged at stop 63 in 2,068,141 states (12.8 s, release) once
/// its parts were searched apart, and now in 255,234 (1.1 s) since a part's search lets an
/// unanswered operation wait for one it does not commute with and tries determinate
/// operations first (`checker::parts`). The hardest object of that sweep, kept as its
/// regression test.
#[test]
fn swarm_crowd_11() {
    check_crowd(11);
}

/// One-group swarm seed `seed`, 20 s, 24 clients at 600 operations a simulated second, run
/// twice with equal traces: every key linearizable.
fn check_crowd(seed: u64) {
    let replay = format!(
        "larder sim --seed {seed} --duration 20s --swarm --clients 24 --rate 600 --check-determinism"
    );
    let mut config = SimConfig::new(seed, Duration::from_secs(20));
    config.swarm = true;
    config.clients = 24;
    config.rate = Some(600);
    let report = larder_sim::check_seed(&config, &replay).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.linearizability.is_linearizable(),
        "{}\nreplay: {replay}",
        report.linearizability
    );
}
