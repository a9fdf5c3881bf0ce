//! One seeded simulation run of a Larder cluster: build it, drive clients and a fault plan,
//! check the outcome, and report.
//!
//! The life of a run (see ARCHITECTURE.md): seed everything from the run seed -> register the
//! node hosts and client hosts with turmoil (`hosts`) -> step the simulation tick by tick
//! (`run`), applying the fault plan at its times and restarting nodes whose Raft stopped on a
//! disk error (`faults`, whose module doc states the fault contract) -> at the heal point
//! repair everything -> after the workload, a checker client reads every key and every
//! replica's state digest -> checks (`checks`) -> [`RunReport`] (`report`).
//!
//! - `config`: [`SimConfig`], what to run.
//! - `hosts`: the turmoil hosts (nodes, center replicas, proxies, clients, the checker) and
//!   the per-node handles kept across crashes.
//! - `faults`: fault injection and healing.
//! - `checks`: the checker client and the invariants.
//! - `report`: the run's report, the determinism check, the CI seed check.
//! - `verdict`: the typed findings, [`Violation`] and [`Linearizability`].

mod archive;
mod checks;
mod config;
mod faults;
mod hosts;
mod operator;
mod report;
mod verdict;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_core::NodeId;
use larder_core::env::derive_seed;

use crate::net::NetFaults;
use crate::points::PointTable;
use crate::trace::Trace;
use crate::workload::SharedHistory;

pub use archive::{BackupTally, SyncCheck};
pub use checks::linearizability_budget;
pub use config::{
    CLIENTS_MAX, CONTENTION_CLIENTS, LoadShape, SIM_COALESCE_RUNNERS, SimConfig, center_id,
    proxy_id,
};
pub use hosts::ProxyTotals;
pub(crate) use hosts::{NodeParts, NodeSlot, current_leader, register_nodes, register_proxies};
pub use operator::{OPERATOR_ID, OperatorLog, PlannedMove, PlannedSteer, SteerAction};
pub use report::{AppliedFault, Load, OpCounts, RunReport, check_determinism, check_seed};
pub use verdict::{Digest, Linearizability, Violation};

use checks::{Final, judge};
use faults::Injector;
use hosts::{register_checker, register_clients};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulation failed at {at_ms} ms: {reason}")]
    Turmoil { at_ms: u64, reason: String },
}

/// Storage defects a report lists at most.
const STORAGE_DEFECTS_SHOWN: usize = 5;

/// Runs one seeded simulation.
pub fn run(config: &SimConfig) -> Result<RunReport, SimError> {
    #[allow(clippy::disallowed_methods)] // Wall time of the run, for the report only.
    let wall_start = std::time::Instant::now();
    let seed = config.seed;
    reset_process_state();
    let trace = if config.keep_events {
        Trace::keeping_events()
    } else {
        Trace::default()
    };
    let plan = config.plan();
    let history = SharedHistory::default();
    let net_faults = NetFaults::default();
    let final_state: Arc<Mutex<Final>> = Arc::default();

    let mut sim = build_sim(config);
    let points = PointTable::default();
    let mut parts = register_nodes(&mut sim, config, &trace, &net_faults, &points);
    let proxies = register_proxies(&mut sim, config, &trace, &net_faults, &points);
    let client_ids = register_clients(&mut sim, config, &trace, &net_faults, &history);
    let operator_log: Arc<Mutex<OperatorLog>> = Arc::default();
    // The checker audits slot ownership once the operator (if the run has one) has settled.
    let moves = config.centers > 0
        && (!config.run_moves().is_empty()
            || !config.run_drains().is_empty()
            || config.automatic_splits());
    let checker_id = register_checker(
        &mut sim,
        config,
        &trace,
        &net_faults,
        &parts,
        &final_state,
        moves.then(|| operator_log.clone()),
    );
    let operator =
        operator::register_operator(&mut sim, config, &trace, &net_faults, &operator_log);

    // Every process that is not a node: clients, proxies and the checker.
    let others: Vec<NodeId> = client_ids
        .iter()
        .copied()
        .chain((0..config.proxies).map(proxy_id))
        .chain([checker_id])
        .chain(operator)
        .collect();
    let mut injector = Injector::new(
        seed,
        &plan,
        config.heal_at(),
        others,
        config.groups,
        trace.clone(),
        points,
    );
    // Drive the simulation, applying faults on time.
    loop {
        let finished = sim.step().map_err(|e| SimError::Turmoil {
            at_ms: sim.elapsed().as_millis() as u64,
            reason: e.to_string(),
        })?;
        if finished {
            break;
        }
        let now = sim.elapsed();
        crate::trace::set_harness_now(now);
        injector.tick(&mut sim, &mut parts, &net_faults, now);
    }

    let sim_elapsed = sim.elapsed();
    let mut history = std::mem::take(&mut *history.lock().expect("history lock"));
    let final_state = std::mem::take(&mut *final_state.lock().expect("final lock"));
    let destroyed: BTreeSet<NodeId> = parts.iter().filter(|p| p.destroyed).map(|p| p.id).collect();
    #[allow(clippy::disallowed_methods)] // Wall time of judging, for the report only.
    let judge_start = std::time::Instant::now();
    let (ops, mut violations, linearizability) =
        judge(config, &mut history, &final_state, &destroyed);
    let judge_wall_seconds = judge_start.elapsed().as_secs_f64();
    let workload_seconds = config.duration.as_secs_f64();
    let load = Load {
        clients: config.run_clients(),
        rate_target: config.rate,
        workload_seconds,
        ops_per_second: (ops.ok + ops.fail + ops.info) as f64 / workload_seconds.max(1e-9),
        shape: config.load_shape(),
    };
    // Every migration must have ended (done or rolled back) by the end of the run.
    let operator_log = std::mem::take(&mut *operator_log.lock().expect("operator log"));
    for migration in operator_log
        .last_seen
        .iter()
        .filter(|m| m.phase.is_active())
    {
        violations.push(Violation::MigrationUnfinished {
            id: migration.id,
            phase: migration.phase.name().to_string(),
        });
    }
    // Every drained node must have been removed, holding no replica of the final table.
    for node in &operator_log.draining {
        violations.push(Violation::DrainUnfinished { node: *node });
    }
    // The first few storage defects: one is enough to fail, and a broken store repeats them.
    violations.extend(
        injector
            .storage_defects()
            .into_iter()
            .take(STORAGE_DEFECTS_SHOWN),
    );
    let proxies = hosts::ProxyTotals::of(&proxies);
    let unchanged_writes = parts
        .iter()
        .filter_map(|part| part.slot.lock().expect("slot lock").clone())
        .map(|node| node.unchanged_writes())
        .sum();
    // Drop the nodes before the next run reuses this thread's state.
    for part in &parts {
        part.slot.lock().expect("slot lock").take();
    }
    drop(sim);
    Ok(RunReport {
        seed,
        sim_seconds: sim_elapsed.as_secs_f64(),
        wall_seconds: wall_start.elapsed().as_secs_f64(),
        judge_wall_seconds,
        ops,
        load,
        points: injector.point_hits(),
        faults: injector.counts,
        plan: plan.clone(),
        fault_log: injector.log,
        trace_hash: trace.hash(),
        trace_events: trace.len(),
        retired_replicas: final_state.retired.clone(),
        backup: final_state.backup,
        sync: final_state.sync,
        migrations: operator_log,
        proxies,
        unchanged_writes,
        violations,
        linearizability,
        events: trace.events(),
        history,
    })
}

/// Puts the process-wide state a run can observe back into the same shape at the start of every
/// run, so a seed gives the same trace whether it runs first in a fresh process, after other
/// seeds in a sweep, or twice in a determinism check.
///
/// - tokio numbers tasks from one process-wide counter, and dropping a runtime (turmoil's crash
///   of a host) drops its tasks shard by shard with shard = task id mod 4. The order in which a
///   crashed node's sockets close, and so the order of the network's random draws that follow,
///   therefore depends on the counter's value when the run started (seed 1 diverged this way
///   right after a crash). Spawning throw-away tasks until the counter is at a multiple of 64
///   gives every run the same residues.
///
/// openraft's randomness is not process state: each group draws from a stream derived from its
/// node's `Env::seed()` (itself derived from the run seed), see `larder_storage::raft::runtime`.
pub(crate) fn reset_process_state() {
    crate::trace::set_harness_now(Duration::ZERO);
    const ALIGN: u64 = 64;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a bare current-thread runtime");
    for _ in 0..=ALIGN {
        let task = runtime.spawn(async {});
        let id: u64 = task
            .id()
            .to_string()
            .parse()
            .expect("tokio task ids print as numbers");
        let _ = runtime.block_on(task);
        if id % ALIGN == ALIGN - 1 {
            return;
        }
    }
    unreachable!("{ALIGN} consecutive task ids without hitting every residue");
}

/// A turmoil simulation seeded from the run seed, with the configured tick and LAN-like latency.
pub(crate) fn build_sim<'a>(config: &SimConfig) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(derive_seed(config.seed, 1))
        .tick_duration(config.tick)
        .min_message_latency(Duration::from_micros(200))
        // turmoil panics (rather than refusing) when a listener's backlog overflows; a pause
        // releases every held connection attempt at once, far beyond the default 64.
        .tcp_capacity(4096)
        .max_message_latency(Duration::from_millis(5))
        // The checker needs time after the workload; the cap only stops a wedged run.
        .simulation_duration(config.duration + config.liveness + Duration::from_secs(120))
        .build()
}
