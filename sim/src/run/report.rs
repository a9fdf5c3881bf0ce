//! What a run reports ([`RunReport`], [`OpCounts`]) and the checks built on running seeds:
//! [`check_determinism`] (run twice, compare the traces) and [`check_seed`] (what CI asserts).

use std::collections::BTreeMap;

use larder_faults::{FaultKind, FaultPlan};
use larder_workloads::{History, Operation, Outcome};
use serde::Serialize;

use super::config::SimConfig;
use super::verdict::{Linearizability, Violation};
use super::{SimError, run};

/// Counts of operations by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

/// What a run did and found.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub seed: u64,
    pub sim_seconds: f64,
    pub wall_seconds: f64,
    /// Wall seconds of judging the history (the linearizability search most of it), part of
    /// `wall_seconds`.
    pub judge_wall_seconds: f64,
    pub ops: OpCounts,
    /// The load the run asked for and what it got.
    pub load: Load,
    /// Faults applied, by kind (including automatic restarts after a disk error stopped Raft).
    pub faults: BTreeMap<FaultKind, u64>,
    /// Passes of each fault point, by every process (armed or not).
    pub points: BTreeMap<larder_core::env::FaultPoint, u64>,
    /// The plan the run applied.
    pub plan: FaultPlan,
    /// Every fault as applied, for timelines.
    pub fault_log: Vec<AppliedFault>,
    pub trace_hash: String,
    pub trace_events: u64,
    /// Replicas (group, node) the final routing table still lists that their node retired
    /// because a record on its disk was corrupt (see `FaultKind::ReplicaRetired`): not
    /// replaced by the end of the run (no center, or no spare node for the copy).
    pub retired_replicas: Vec<(larder_core::GroupId, larder_core::NodeId)>,
    /// The moves the operator asked for and the migrations as the center last reported them
    /// ([`super::SimConfig::moves`]).
    pub migrations: super::OperatorLog,
    /// What the proxies counted ([`super::hosts::ProxyTotals`]).
    pub proxies: super::hosts::ProxyTotals,
    /// Writes the storage nodes running at the end answered without a log entry because they
    /// would change nothing (`larder_storage::unchanged`; a node that crashed took its count).
    pub unchanged_writes: u64,
    /// What the archiver did in a run with [`super::SimConfig::backup`] (zeros otherwise).
    pub backup: super::archive::BackupTally,
    /// What the end-of-run check of the cross-cluster sync compared, with
    /// [`super::SimConfig::sync`].
    pub sync: Option<super::archive::SyncCheck>,
    /// Broken invariants; empty for a passing run.
    pub violations: Vec<Violation>,
    /// The linearizability checker's verdict on the history: linearizable, not linearizable
    /// (also a violation), or unknown when the search budget ran out (not a violation).
    pub linearizability: Linearizability,
    #[serde(skip)]
    pub events: Option<Vec<String>>,
    /// Every client operation: invocation and completion events (`history.jsonl`).
    #[serde(skip)]
    pub history: History,
}

/// The load of a run: clients, the target rate if any, and the rate achieved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Load {
    pub clients: u64,
    /// `larder sim --rate`: operations per simulated second the clients aimed at.
    pub rate_target: Option<u64>,
    /// Simulated seconds the clients ran (the workload's duration).
    pub workload_seconds: f64,
    /// Operations recorded (ok, failed or indeterminate) per simulated second of the workload.
    pub ops_per_second: f64,
    pub shape: super::config::LoadShape,
}

/// One fault as the harness applied it (planned, the heal point, or a restart after a fatal
/// disk error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedFault {
    /// Simulated time.
    pub at_ms: u64,
    pub kind: FaultKind,
    /// The fault in full (`Crash { node: 2 }`), or what happened.
    pub detail: String,
}

impl OpCounts {
    /// Counts the operations of a history by outcome.
    pub(crate) fn of(operations: &[Operation]) -> OpCounts {
        let mut ops = OpCounts::default();
        for op in operations {
            match op.outcome {
                Outcome::Ok => ops.ok += 1,
                Outcome::Fail => ops.fail += 1,
                Outcome::Info => ops.info += 1,
            }
        }
        ops
    }
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// What a CI seed test asserts: the seed runs, both runs trace the same, every invariant holds.
/// The error names the problem and the command that replays it.
pub fn check_seed(config: &SimConfig, replay: &str) -> Result<RunReport, String> {
    let seed = config.seed;
    let (report, divergence) = check_determinism(config)
        .map_err(|e| format!("seed {seed} did not run: {e}\nreplay: {replay}"))?;
    if let Some(divergence) = divergence {
        return Err(format!(
            "seed {seed} is not deterministic: {divergence}\nreplay: {replay}"
        ));
    }
    if !report.passed() {
        let violations: Vec<String> = report
            .violations
            .iter()
            .map(|violation| format!("\n  - {violation}"))
            .collect();
        return Err(format!(
            "seed {seed} violated invariants:{}\nreplay: {replay}",
            violations.concat()
        ));
    }
    if report.ops.ok == 0 {
        return Err(format!(
            "seed {seed} completed no operation\nreplay: {replay}"
        ));
    }
    Ok(report)
}

/// Runs `config` twice and compares the traces.
pub fn check_determinism(config: &SimConfig) -> Result<(RunReport, Option<String>), SimError> {
    let mut config = config.clone();
    config.keep_events = true;
    let first = run(&config)?;
    let second = run(&config)?;
    if first.trace_hash == second.trace_hash {
        return Ok((first, None));
    }
    let a = first.events.clone().unwrap_or_default();
    let b = second.events.clone().unwrap_or_default();
    let index = a
        .iter()
        .zip(b.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let context: Vec<String> = a[index.saturating_sub(5)..index.min(a.len())]
        .iter()
        .map(|event| format!("\n  both:  {event}"))
        .collect();
    let divergence = format!(
        "trace hashes differ ({} vs {}); first divergent event #{index}:{}\n  run 1: {}\n  run 2: {}",
        first.trace_hash,
        second.trace_hash,
        context.concat(),
        a.get(index).map_or("<end of trace>", String::as_str),
        b.get(index).map_or("<end of trace>", String::as_str),
    );
    Ok((first, Some(divergence)))
}
