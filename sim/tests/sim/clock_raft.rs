//! Clock faults reach Raft: openraft's election timers run on the node's (simulated) clock, so
//! a drift fault changes when a group elects, reproducibly per seed.

use std::time::Duration;

use larder_sim::scenario::{ReelectionOutcome, reelection_under_drift};

fn reelect(seed: u64, drift_ppm: i64) -> ReelectionOutcome {
    let outcome = reelection_under_drift(seed, drift_ppm).expect("scenario ran");
    assert!(
        outcome.old_leader.is_some(),
        "seed {seed}: no leader before the cut"
    );
    outcome
}

fn elected_after(outcome: &ReelectionOutcome, what: &str) -> Duration {
    outcome
        .elected_after
        .unwrap_or_else(|| panic!("{what}: the followers elected no leader: {outcome:?}"))
}

#[test]
fn followers_with_slow_clocks_elect_late_and_fast_ones_early() {
    for seed in [1, 2] {
        let true_clocks = elected_after(&reelect(seed, 0), "true clocks");
        // At 10% speed the election timeout (400-800 ms of the node's time, after the lease of
        // 800 ms) takes ten times as long in simulated time.
        let slow = reelect(seed, -900_000);
        let slow_after = elected_after(&slow, "slow clocks");
        assert!(
            slow_after >= true_clocks * 4,
            "seed {seed}: followers at 10% clock speed elected after {slow_after:?}, \
             true clocks after {true_clocks:?}"
        );
        // At double speed the same draws expire in half the simulated time.
        let fast_after = elected_after(&reelect(seed, 1_000_000), "fast clocks");
        assert!(
            fast_after < true_clocks,
            "seed {seed}: followers at double clock speed elected after {fast_after:?}, \
             true clocks after {true_clocks:?}"
        );
        // The drifting run is still a function of its seed.
        let again = reelect(seed, -900_000);
        assert_eq!(again.elected_after, slow.elected_after, "seed {seed}");
        assert_eq!(again.trace_hash, slow.trace_hash, "seed {seed}");
    }
}
