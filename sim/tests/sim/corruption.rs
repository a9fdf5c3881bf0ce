//! Bits flipped at rest (`Fault::CorruptRecord`): the node's record checksums catch them, the
//! replica is retired (`FaultKind::ReplicaRetired`), and with a center it is replaced, so the
//! final routing table lists no retired replica. Without a center nothing replaces it, and the
//! group serves on its two healthy replicas. Seeds chosen from the swarm plans that corrupt a
//! record which the run then reads; the swarm sweep runs many more.

use std::time::Duration;

use larder_faults::FaultKind;
use larder_sim::SimConfig;

fn retired(report: &larder_sim::RunReport) -> u64 {
    report
        .faults
        .get(&FaultKind::ReplicaRetired)
        .copied()
        .unwrap_or(0)
}

#[test]
fn a_corrupt_replica_is_retired_and_the_center_replaces_it() {
    let mut config = SimConfig::cluster(2, Duration::from_secs(15), 5, 8, 2);
    config.swarm = true;
    let report = larder_sim::run(&config).expect("run");
    assert!(report.passed(), "{:?}", report.violations);
    assert!(
        report.faults.contains_key(&FaultKind::CorruptRecord) && retired(&report) >= 1,
        "the plan must corrupt a record that is read: {:?}",
        report.faults
    );
    assert_eq!(
        report.retired_replicas,
        vec![],
        "the center must have replaced every retired replica"
    );
}

#[test]
fn without_a_center_the_group_serves_on_its_healthy_replicas() {
    // Seed 4 since unchanged writes took no log entries (seed 2's corruption is no longer read).
    let mut config = SimConfig::new(4, Duration::from_secs(15));
    config.swarm = true;
    let replay = "larder sim --seed 4 --duration 15s --swarm --check-determinism";
    let report = larder_sim::check_seed(&config, replay).unwrap_or_else(|e| panic!("{e}"));
    assert!(retired(&report) >= 1, "{:?}", report.faults);
    assert_eq!(
        report.retired_replicas.len(),
        1,
        "{:?}",
        report.retired_replicas
    );
}
