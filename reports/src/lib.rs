//! `larder-reports`: the artifacts of a run, rendered deterministically so two runs of the same
//! seed produce byte-identical files (wall-clock figures are kept out of the JSON for that
//! reason and printed only in the human summary).
//!
//! It depends on everything upstream and nothing depends on it.

pub mod coverage;
pub mod html;

pub use coverage::Coverage;

use std::fmt::Write as _;

use larder_sim::RunReport;
use serde::Serialize;

/// The deterministic part of a run's report, as written to `summary.json`.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub seed: u64,
    /// The commit the binary was built from (`git rev-parse HEAD` at build time).
    pub commit: &'static str,
    /// The fault plan the run applied.
    pub plan: &'a larder_faults::FaultPlan,
    pub sim_seconds: f64,
    pub ops: &'a larder_sim::run::OpCounts,
    /// Clients, target and achieved operations per simulated second, the swarm load shape.
    pub load: &'a larder_sim::run::Load,
    /// Applied faults by kind (keys are the kinds' names, in name order).
    pub faults: &'a std::collections::BTreeMap<larder_faults::FaultKind, u64>,
    /// Passes of each fault point by every process (keys are the points' names).
    pub points: &'a std::collections::BTreeMap<larder_core::env::FaultPoint, u64>,
    pub trace_hash: &'a str,
    pub trace_events: u64,
    /// Each violation's text.
    pub violations: Vec<String>,
    /// Each violation's invariant (`not_linearizable`, `counter_out_of_range`, …), in the same
    /// order: what tools compare (`larder sim --shrink` keeps the first one while shrinking).
    pub invariants: Vec<String>,
    /// The checker's verdict as text (its report without the trailing newline).
    pub linearizability: String,
    pub passed: bool,
}

pub fn summary(report: &RunReport) -> Summary<'_> {
    Summary {
        seed: report.seed,
        commit: env!("LARDER_COMMIT"),
        plan: &report.plan,
        sim_seconds: report.sim_seconds,
        ops: &report.ops,
        load: &report.load,
        faults: &report.faults,
        points: &report.points,
        trace_hash: &report.trace_hash,
        trace_events: report.trace_events,
        violations: report.violations.iter().map(ToString::to_string).collect(),
        invariants: report
            .violations
            .iter()
            .map(|violation| {
                serde_json::to_value(violation)
                    .ok()
                    .and_then(|value| value["invariant"].as_str().map(String::from))
                    .unwrap_or_default()
            })
            .collect(),
        linearizability: report.linearizability.to_string(),
        passed: report.passed(),
    }
}

/// Pretty JSON of [`summary`]; stable field order, no wall-clock values.
pub fn summary_json(report: &RunReport) -> String {
    serde_json::to_string_pretty(&summary(report)).expect("summary serializes")
}

/// The human-readable summary `larder sim` prints.
pub fn summary_text(report: &RunReport, replay: &str) -> String {
    let mut out = String::new();
    let completed = report.ops.ok + report.ops.fail + report.ops.info;
    let acceleration = if report.wall_seconds > 0.0 {
        report.sim_seconds / report.wall_seconds
    } else {
        0.0
    };
    let _ = writeln!(out, "seed            {}", report.seed);
    let _ = writeln!(out, "simulated       {:.3} s", report.sim_seconds);
    let _ = writeln!(
        out,
        "wall            {:.3} s ({acceleration:.0}x faster than real time)",
        report.wall_seconds
    );
    let _ = writeln!(
        out,
        "ops completed   {completed} (ok {}, fail {}, info {}); {:.0} ops/simulated s, {:.0} ops/wall s",
        report.ops.ok,
        report.ops.fail,
        report.ops.info,
        completed as f64 / report.sim_seconds.max(1e-9),
        completed as f64 / report.wall_seconds.max(1e-9)
    );
    let load = &report.load;
    let _ = writeln!(
        out,
        "load            {} clients{}{}: {:.0} ops/simulated s over the {:.0} s workload{}",
        load.clients,
        match (load.shape.contention, load.shape.contention_list) {
            (true, true) => ", contention with a list",
            (true, false) => ", contention",
            _ => "",
        },
        if load.shape.read_heavy {
            ", read-heavy"
        } else {
            ""
        },
        load.ops_per_second,
        load.workload_seconds,
        load.rate_target
            .map(|rate| format!(" (target {rate})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "judged in       {:.3} s wall (linearizability search and checks)",
        report.judge_wall_seconds
    );
    if report.faults.is_empty() {
        let _ = writeln!(out, "faults          none");
    } else {
        let faults: Vec<String> = report
            .faults
            .iter()
            .map(|(kind, count)| format!("{kind}={count}"))
            .collect();
        let _ = writeln!(out, "faults          {}", faults.join(" "));
    }
    if !report.migrations.started.is_empty() {
        let phases: Vec<String> = report
            .migrations
            .last_seen
            .iter()
            .map(|m| format!("#{} {}->{} {}", m.id, m.from, m.to, m.phase.name()))
            .collect();
        let refused = report
            .migrations
            .started
            .iter()
            .filter(|s| s.is_err())
            .count();
        let _ = writeln!(
            out,
            "migrations      {} asked ({refused} refused): {}",
            report.migrations.started.len(),
            phases.join(", ")
        );
    }
    let proxies = &report.proxies;
    if proxies.hot_key_refused_writes > 0 || proxies.shared_reads > 0 {
        let _ = writeln!(
            out,
            "hot keys        {} writes refused by the per-key limit, {} reads shared (proxies running at the end)",
            proxies.hot_key_refused_writes, proxies.shared_reads
        );
    }
    if proxies.coalesced_batches > 0 {
        let _ = writeln!(
            out,
            "coalesced       {} single commands of several connections in {} batches (proxies running at the end)",
            proxies.coalesced_commands, proxies.coalesced_batches
        );
    }
    if report.unchanged_writes > 0 {
        let _ = writeln!(
            out,
            "unchanged       {} writes answered without a log entry (nodes running at the end)",
            report.unchanged_writes
        );
    }
    if !report.retired_replicas.is_empty() {
        let retired: Vec<String> = report
            .retired_replicas
            .iter()
            .map(|(group, node)| format!("g{group}@n{node}"))
            .collect();
        let _ = writeln!(
            out,
            "retired         {} (corrupt, not replaced by the end)",
            retired.join(" ")
        );
    }
    let _ = writeln!(
        out,
        "trace           {} events, hash {}",
        report.trace_events, report.trace_hash
    );
    let linearizability = report.linearizability.to_string();
    let first_line = linearizability.lines().next().unwrap_or("");
    let _ = writeln!(out, "checker         {first_line}");
    let backup = &report.backup;
    if backup.groups_verified > 0 {
        let _ = writeln!(
            out,
            "backup          {} groups rebuilt from {} archived entries and compared ({} new bases after gaps)",
            backup.groups_verified, backup.entries, backup.rebases
        );
    }
    if let Some(sync) = &report.sync {
        let _ = writeln!(
            out,
            "sync            {} slots ({} keys) compared with the target; it applied {} entries, wrote {} puts and {} deletes, copied {} slots whole, resumed from its checkpoint {} times",
            sync.slots,
            sync.keys,
            sync.tally.entries,
            sync.tally.puts,
            sync.tally.dels,
            sync.tally.slot_copies,
            sync.resumed
        );
    }
    if report.passed() {
        let _ = writeln!(out, "verdict         PASS");
    } else {
        let _ = writeln!(out, "verdict         FAIL");
        for violation in &report.violations {
            let _ = writeln!(out, "  - {violation}");
        }
        let _ = writeln!(out, "replay with     {replay}");
    }
    out
}
