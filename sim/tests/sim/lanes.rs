//! The storage nodes' lanes (`larder_storage::lanes`) under the simulator's faults: with every
//! write in the slow write lane (`slow_write_bytes` 0), each node runs one write at a time
//! while reads run, and paces them (a write keeps its place for three times what it took).
//! Lanes only decide when a command runs, so the history must stay linearizable, the run
//! deterministic, and writes keep completing. The planted bug `slow-write-acked-early` (the
//! bug catalog's `SwarmSlowWrites` row) is the same plan with slow writes answered before
//! they commit.

use std::time::Duration;

use larder_sim::SimConfig;
use larder_workloads::history::{Function, OpKind};

#[test]
fn every_write_in_the_slow_lane_stays_linearizable_and_deterministic() {
    let replay = "larder sim --seed 2 --duration 15s --cluster --swarm --slow-write-bytes 0";
    let mut config = SimConfig::cluster(2, Duration::from_secs(15), 5, 8, 2);
    config.swarm = true;
    config.node.lanes.slow_write_bytes = 0;
    let report = larder_sim::check_seed(&config, replay).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        report.linearizability.is_linearizable(),
        "{}\nreplay: {replay}",
        report.linearizability
    );
    let writes_done = report
        .history
        .ops
        .iter()
        .filter(|op| op.kind == OpKind::Ok && op.f == Function::Write)
        .count();
    assert!(
        writes_done >= 100,
        "only {writes_done} writes completed with the slow lane pacing them\nreplay: {replay}"
    );
}
