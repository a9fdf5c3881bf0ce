//! Load options and swarm load shapes, each seed run twice with identical trace hashes and
//! every invariant holding: a whole-cluster seed at a target of 1500 operations per simulated
//! second (60 clients) that achieves at least 1000 under its faults (1057), and a swarm seed that picks the
//! contention shape (eight clients on one key of each kind) and still gets a verdict.

use std::time::Duration;

use larder_sim::SimConfig;
use larder_sim::run::CONTENTION_CLIENTS;

#[test]
fn a_cluster_seed_runs_at_a_thousand_ops_per_simulated_second() {
    let replay = "larder sim --seed 1 --duration 10s --cluster --rate 1500 --check-determinism";
    let mut config = SimConfig::cluster(1, Duration::from_secs(10), 5, 8, 2);
    config.rate = Some(1500);
    config.clients = 60;
    let report = larder_sim::check_seed(&config, replay).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.load.ops_per_second >= 1000.0,
        "{:.0} ops per simulated second\nreplay: {replay}",
        report.load.ops_per_second
    );
}

#[test]
fn a_contention_seed_gets_a_verdict() {
    let replay = "larder sim --seed 13 --duration 10s --swarm --check-determinism";
    let mut config = SimConfig::new(13, Duration::from_secs(10));
    config.swarm = true;
    assert!(config.load_shape().contention, "seed 13 picks contention");
    let report = larder_sim::check_seed(&config, replay).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.load.clients, CONTENTION_CLIENTS);
    assert!(
        report.linearizability.is_linearizable(),
        "{}\nreplay: {replay}",
        report.linearizability
    );
}
