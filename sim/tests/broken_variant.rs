//! Tests of the tests: a deliberately broken node (a leader that answers reads from local state
//! without the read-index round, so a deposed leader serves stale values) must be caught by the
//! linearizability checker on the same swarm seeds CI sweeps (`swarm_sweep.rs`). If this test
//! fails, the sweep has lost the power to find stale reads.

use std::time::Duration;

use larder_sim::run::Violation;
use larder_sim::{SimConfig, run};
use larder_storage::Bug;

fn config(seed: u64, broken: bool) -> SimConfig {
    let mut config = SimConfig::cluster(seed, Duration::from_secs(15), 5, 8, 2);
    config.swarm = true;
    if broken {
        // Plantable only because sim's dev-dependency enables `planted-bugs`.
        config.node.bugs.plant(Bug::StaleLocalReads);
    }
    config
}

#[test]
fn the_checker_catches_stale_reads_from_a_deposed_leader() {
    // Seeds 1 and 17 of the sweep catch it today; search the sweep's range so a change in
    // timing that moves the catch to another seed does not hide a real loss of power.
    let caught = (1..=50).find(|&seed| {
        let report = run(&config(seed, true)).expect("run");
        report
            .violations
            .iter()
            .any(|v| matches!(v, Violation::NotLinearizable { .. }))
    });
    let seed = caught.expect("no swarm seed of 1..=50 caught stale reads from a deposed leader");
    // The same seed without the bug passes: the catch is the bug's, not the seed's.
    let correct = run(&config(seed, false)).expect("run");
    assert!(
        correct.passed(),
        "seed {seed} fails even without the bug: {:?}",
        correct.violations
    );
}
