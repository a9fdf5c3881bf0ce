//! What a run is judged by: the checker client that reads the final state after the workload
//! ([`check_final`]), and the invariants the history and that state must keep ([`check`],
//! [`check_linearizability`]).

// The checker client is the harness, not the system under test: it waits on turmoil's tokio
// time, which is simulated, so the ban on tokio::time is lifted here.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_client::ClusterClient;

use larder_core::bugs::Bugs;
use larder_core::env::{FaultPoints, Sealed, Space};
use larder_core::kv::{Command, Reply};
use larder_core::{GroupId, NodeId};
use larder_storage::raft::audit::audit_log;
use larder_storage::raft::state_machine::{DiskStateMachine, SESSIONS_MAX};
use larder_workloads::checker::{Budget, CheckConfig, check_operations};
use larder_workloads::{Function, History, HistoryError, Operation, Outcome, Value};

use super::config::SimConfig;
use super::hosts::NodeSlot;
use super::report::OpCounts;
use super::verdict::{Digest, Linearizability, Violation};
use crate::clock::SimClock;
use crate::disk::SimDisk;
use crate::net::SimNet;
use crate::trace::sim_now;
use crate::workload::{WorkloadConfig, counter_key, register_key};

/// Search states the linearizability checker may explore per run before answering `unknown`.
const LINEARIZABILITY_STATES_MAX: u64 = 20_000_000;
/// Memory the checker's memo table may use per run (its own estimate, so deterministic).
const LINEARIZABILITY_MEMORY_MAX: usize = 1 << 30;

/// What the checker client found after the workload.
#[derive(Debug, Default)]
pub(crate) struct Final {
    values: BTreeMap<String, Option<String>>,
    /// (group, replica) -> (applied index, state hash).
    digests: BTreeMap<(GroupId, NodeId), Digest>,
    /// Each group's replicas in the newest routing table the checker saw, less those retired
    /// because the simulator corrupted their disk (see `converge`).
    replicas: BTreeMap<GroupId, Vec<NodeId>>,
    first_success_ms: Option<u64>,
    problems: Vec<Violation>,
    /// Replicas the newest table still lists that their node retired as corrupt (not
    /// replaced by the end: no center, or no node to put the copy on).
    pub(crate) retired: Vec<(GroupId, NodeId)>,
    /// What the archiver did ([`super::archive`]).
    pub(crate) backup: super::archive::BackupTally,
    /// What the end-of-run check of the sync compared, with `--sync`.
    pub(crate) sync: Option<super::archive::SyncCheck>,
}

/// What ran beside the workload that the checker also judges at the end.
pub(crate) struct Observers {
    /// The operator's log, when the run moves slots (ownership is audited once it settles).
    pub(crate) operator: Option<Arc<Mutex<super::OperatorLog>>>,
    /// The archiver's backup and the run's seed (for the rebuild's disk), with `--backup`.
    pub(crate) archive: Option<(Arc<Mutex<super::archive::Archive>>, u64)>,
}

/// The checker client: after the workload, read every key (measuring how soon after the heal
/// point the cluster serves), then wait for the routing to settle and every group's replicas
/// (as the newest table lists them) to apply the same log, and take their state digests.
pub(crate) async fn check_final(
    mut client: ClusterClient<SimNet, SimClock>,
    slots: Vec<(NodeId, NodeSlot)>,
    disks: Vec<(NodeId, SimDisk)>,
    workload: WorkloadConfig,
    (heal_at, duration, liveness): (Duration, Duration, Duration),
    final_state: Arc<Mutex<Final>>,
    observers: Observers,
) {
    let Observers { operator, archive } = observers;
    tokio::time::sleep(heal_at).await;
    let first_success = probe_liveness(&mut client, heal_at + liveness).await;
    tokio::time::sleep(duration.saturating_sub(sim_now()) + Duration::from_millis(500)).await;
    let mut problems = Vec::new();
    let keys: Vec<String> = (0..workload.register_keys)
        .map(register_key)
        .chain((0..workload.counter_keys).map(counter_key))
        .collect();
    let values = read_all(&mut client, keys, duration + liveness, &mut problems).await;
    // Replicas converge: wait (bounded) until the newest table's replicas of every group run
    // and report one applied index. With a center this includes waiting for it to replace
    // destroyed nodes: their slots stay empty, so a group listing one never converges.
    let give_up = duration + liveness + Duration::from_secs(100);
    let (replicas, digests, retired) =
        converge(&mut client, &slots, &disks, give_up, &mut problems).await;
    audit_disks(&slots, &disks, &digests, &mut problems).await;
    let backup = match &archive {
        Some((archive, seed)) => {
            super::archive::verify(&slots, &replicas, archive, *seed, &mut problems).await
        }
        None => super::archive::BackupTally::default(),
    };
    let sync = match &archive {
        Some((archive, _)) => {
            super::archive::verify_sync(&slots, &replicas, archive, &mut problems).await
        }
        None => None,
    };
    // Ownership is audited once every migration has ended (bounded wait; one that never ends
    // fails the run on its own).
    let settled = || {
        operator
            .as_ref()
            .is_none_or(|log| log.lock().expect("operator log").settled)
    };
    while !settled() && sim_now() < give_up {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if settled() {
        client.refresh_routing().await;
        let table = client.routing().current();
        audit_ownership(&slots, &replicas, &table, &mut problems).await;
    }
    let mut state = final_state.lock().expect("final lock");
    state.values = values;
    state.digests = digests;
    state.replicas = replicas;
    state.first_success_ms = first_success;
    state.retired = retired;
    state.backup = backup;
    state.sync = sync;
    state.problems = problems;
}

/// Storage audits at the end of the run (see `larder_storage::raft::audit`): every node's log
/// is in order, and every replica that reported a digest recovers, from what its disk holds
/// now, the state it serves (a clean restart now would resume exactly where it is).
async fn audit_disks(
    slots: &[(NodeId, NodeSlot)],
    disks: &[(NodeId, SimDisk)],
    digests: &BTreeMap<(GroupId, NodeId), Digest>,
    problems: &mut Vec<Violation>,
) {
    for (node, disk) in disks {
        for defect in audit_log(disk.current_rows(Space::Log)) {
            problems.push(Violation::StorageDefect {
                node: *node,
                when: "end of run".into(),
                defect: defect.to_string(),
            });
        }
    }
    for &(group, id) in digests.keys() {
        let running = slots
            .iter()
            .find(|(node, _)| *node == id)
            .and_then(|(_, slot)| slot.lock().expect("slot lock").clone());
        let (Some(running), Some((_, disk))) = (running, disks.iter().find(|(n, _)| *n == id))
        else {
            continue;
        };
        // No await between the serving digest and the copy of the disk: nothing applies in
        // between (the simulation runs one task at a time).
        let Ok(serving) = running.state_digest(group).await else {
            continue;
        };
        // Sealed as the node's own disk is (`StorageNode::start`).
        let copy = Sealed::new(disk.fork(), Bugs::default());
        let recovered = match DiskStateMachine::open(
            copy,
            group,
            Bugs::default(),
            FaultPoints::none(),
            SESSIONS_MAX,
        )
        .await
        {
            Ok(machine) => {
                // As the node does on opening: then no element row may be left that no
                // header reaches (a deletion a crash cut short and no record covers).
                let unreachable = match machine.collect_garbage().await {
                    Ok(_) => machine.unreachable_elements().await,
                    Err(error) => Err(error),
                };
                match unreachable {
                    Ok(0) => {}
                    Ok(rows) => problems.push(Violation::StorageDefect {
                        node: id,
                        when: "end of run".into(),
                        defect: format!(
                            "group {group} keeps {rows} element rows no header reaches"
                        ),
                    }),
                    Err(error) => problems.push(Violation::StorageDefect {
                        node: id,
                        when: "end of run".into(),
                        defect: format!("group {group}'s element rows do not read: {error}"),
                    }),
                }
                machine.digest().await
            }
            Err(error) => Err(error),
        };
        match recovered {
            Ok(recovered) if recovered == serving => {}
            Ok(recovered) => problems.push(Violation::RecoveryDiffers {
                group,
                node: id,
                serving,
                recovered,
            }),
            Err(error) => problems.push(Violation::StorageDefect {
                node: id,
                when: "end of run".into(),
                defect: format!("group {group} does not reopen: {error}"),
            }),
        }
    }
}

/// Slot ownership at the end (migrations have ended; a run whose migration did not fails on
/// that): every group that was told its slots owns exactly what the final table gives it (so
/// no slot is owned by two groups), and stores no key of a slot it does not own (a moved
/// range is gone from its source, a rolled-back copy from its target). Groups never told keep
/// `None` and are judged by the table alone. And no group still records changes for a
/// migration or keeps change markers (each migration's end untracks its source and deletes
/// them).
async fn audit_ownership(
    slots: &[(NodeId, NodeSlot)],
    replicas: &BTreeMap<GroupId, Vec<NodeId>>,
    table: &larder_core::routing::RoutingTable,
    problems: &mut Vec<Violation>,
) {
    let node = |id: &NodeId| {
        slots
            .iter()
            .find(|(node, _)| node == id)
            .and_then(|(_, slot)| slot.lock().expect("slot lock").clone())
    };
    for (&group, members) in replicas {
        // The group's leader: a migration's steps are applied there when they return. A few
        // tries, as leadership may be moving at the end of the run.
        let mut finding = None;
        for _ in 0..5 {
            finding = None;
            let leader = members
                .iter()
                .filter_map(|id| node(id).map(|n| (*id, n)))
                .find(|(_, n)| n.is_leader(group));
            let Some((id, leader)) = leader else {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            };
            let Ok(audit) = leader.ownership_audit(group, 3).await else {
                break;
            };
            let expected = table.slot_ranges(group);
            let detail = if let Some(migration) = audit.tracking {
                // Every migration has ended, and each ends by untracking its source: a record
                // left means a tracking start applied after its migration's end (a late
                // step), which holds the group's slots as moving and refuses every later
                // migration.
                format!("records changes for migration {migration} after every migration ended")
            } else if audit.change_markers > 0 {
                // A migration's end deletes its change markers: any left would stay for good.
                format!(
                    "keeps {} change markers (or more) with no migration tracking it",
                    audit.change_markers
                )
            } else if let Some(owned) = audit
                .owned
                .filter(|owned| owned.ranges != expected || !audit.strays.is_empty())
            {
                format!(
                    "owns {:?} (epoch {}), table epoch {} gives {:?}; keys of other slots: {:?}",
                    owned.ranges,
                    owned.epoch,
                    table.epoch(),
                    expected,
                    audit.strays
                )
            } else {
                break;
            };
            finding = Some(Violation::OwnershipAtEnd {
                group,
                node: id,
                detail,
            });
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        problems.extend(finding);
    }
}

/// Liveness: when (simulated ms) a read first succeeded after the heal point, trying until a
/// while after `bound`.
async fn probe_liveness(
    client: &mut ClusterClient<SimNet, SimClock>,
    bound: Duration,
) -> Option<u64> {
    let probe = Command::get("liveness-probe");
    let mut first_success = None;
    while sim_now() < bound + Duration::from_secs(5) {
        match client.execute(probe.clone()).await {
            Ok(_) => {
                first_success = Some(sim_now().as_millis() as u64);
                break;
            }
            Err(error) => tracing::debug!(%error, "checker: liveness probe failed"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::debug!(?first_success, "checker: liveness probe done");
    first_success
}

/// Reads every key (retrying, bounded) after the workload.
async fn read_all(
    client: &mut ClusterClient<SimNet, SimClock>,
    keys: Vec<String>,
    end: Duration,
    problems: &mut Vec<Violation>,
) -> BTreeMap<String, Option<String>> {
    let mut values = BTreeMap::new();
    for key in keys {
        let mut result = None;
        for _ in 0..20 {
            if sim_now() > end + Duration::from_secs(60) {
                break;
            }
            match client.execute(Command::get(&key)).await {
                Ok(Reply::Bulk(bytes)) => {
                    result = Some(Some(String::from_utf8_lossy(&bytes).into_owned()))
                }
                Ok(Reply::Nil) => result = Some(None),
                Ok(other) => problems.push(Violation::FinalReadAnswered {
                    key: key.clone(),
                    reply: format!("{other:?}"),
                }),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            break;
        }
        tracing::debug!(key, ?result, "checker: final read");
        match result {
            Some(value) => {
                values.insert(key, value);
            }
            None => problems.push(Violation::FinalReadFailed { key }),
        }
    }
    values
}

/// Whether every replica of `group` reported a digest, all at one applied index.
fn converged(
    group: GroupId,
    members: &[NodeId],
    digests: &BTreeMap<(GroupId, NodeId), Digest>,
) -> bool {
    let indexes: BTreeSet<u64> = digests
        .iter()
        .filter(|((g, _), _)| *g == group)
        .map(|(_, (index, _))| *index)
        .collect();
    indexes.len() == 1 && members.iter().all(|id| digests.contains_key(&(group, *id)))
}

/// Waits (until `give_up`) for the newest routing table's replicas of every group to apply the
/// same log; returns the replicas and their digests. If they never do, says in `problems` what
/// every live replica of an unconverged group believes.
async fn converge(
    client: &mut ClusterClient<SimNet, SimClock>,
    slots: &[(NodeId, NodeSlot)],
    disks: &[(NodeId, SimDisk)],
    give_up: Duration,
    problems: &mut Vec<Violation>,
) -> (
    BTreeMap<GroupId, Vec<NodeId>>,
    BTreeMap<(GroupId, NodeId), Digest>,
    Vec<(GroupId, NodeId)>,
) {
    let node = |id: NodeId| {
        slots
            .iter()
            .find(|(node, _)| *node == id)
            .and_then(|(_, slot)| slot.lock().expect("slot lock").clone())
    };
    let mut digests = BTreeMap::new();
    loop {
        client.refresh_routing().await;
        let table = client.routing().current();
        let mut replicas: BTreeMap<GroupId, Vec<NodeId>> = table
            .groups()
            .iter()
            .map(|(group, route)| (*group, route.replicas.clone()))
            .collect();
        digests.clear();
        let mut retired = Vec::new();
        let mut all = true;
        for (&group, members) in &mut replicas {
            for &id in members.iter() {
                if let Some(node) = node(id)
                    && let Ok(digest) = node.state_digest(group).await
                {
                    digests.insert((group, id), digest);
                }
            }
            // A replica its node retired because the simulator corrupted a record on its disk
            // is not waited for: without a center nothing replaces it, and with one the table
            // drops it once the repair is done. Only on a disk that was corrupted: a replica
            // retired for no injected reason must still converge (and fails the run if not).
            let required: Vec<NodeId> = members
                .iter()
                .copied()
                .filter(|&id| {
                    let corrupted = disks
                        .iter()
                        .any(|(n, d)| *n == id && d.stats().corrupted > 0);
                    !(corrupted && node(id).is_some_and(|n| n.is_broken(group)))
                })
                .collect();
            all &= converged(group, &required, &digests);
            retired.extend(
                members
                    .iter()
                    .filter(|id| !required.contains(id))
                    .map(|&id| (group, id)),
            );
            *members = required;
        }
        if all && !replicas.is_empty() {
            return (replicas, digests, retired);
        }
        tracing::debug!(?digests, "checker: not converged");
        if sim_now() > give_up {
            for (&group, members) in &replicas {
                if converged(group, members, &digests) {
                    continue;
                }
                for (id, _) in slots {
                    if let Some(status) = node(*id)
                        .and_then(|n| n.group_statuses().into_iter().find(|s| s.group == group))
                    {
                        problems.push(Violation::ReplicaAtEnd {
                            group,
                            node: *id,
                            status: format!("{status:?}"),
                        });
                    }
                }
            }
            return (replicas, digests, retired);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The run's findings from the history its clients recorded and what the checker client
/// found: operation counts, broken invariants (the linearizability verdict's included) and the
/// verdict.
pub(crate) fn judge(
    config: &SimConfig,
    history: &mut History,
    final_state: &Final,
    destroyed: &BTreeSet<NodeId>,
) -> (OpCounts, Vec<Violation>, Linearizability) {
    // Clients record concurrently at millisecond resolution: put events with equal times in
    // one canonical order (by process), which is the order the history has always had.
    history.sort_by_time();
    let operations = history.operations();
    let paired = operations.as_deref().unwrap_or_default();
    let mut violations = check(config, paired, final_state, destroyed);
    let linearizability = check_linearizability(&operations);
    violations.extend(linearizability.violation(config.unknown_passes.is_some()));
    (OpCounts::of(paired), violations, linearizability)
}

/// The invariants a run must keep.
fn check(
    config: &SimConfig,
    history: &[Operation],
    final_state: &Final,
    destroyed: &BTreeSet<NodeId>,
) -> Vec<Violation> {
    let mut violations = final_state.problems.clone();
    check_liveness(config, final_state, &mut violations);
    check_counters(config, history, final_state, &mut violations);
    check_registers(config, history, final_state, &mut violations);
    check_routing(final_state, destroyed, &mut violations);
    check_replicas(final_state, &mut violations);
    violations
}

/// A read succeeded within `liveness` of the heal point.
fn check_liveness(config: &SimConfig, final_state: &Final, violations: &mut Vec<Violation>) {
    let heal_ms = config.heal_at().as_millis() as u64;
    match final_state.first_success_ms {
        Some(at) if at <= heal_ms + config.liveness.as_millis() as u64 => {}
        Some(at) => violations.push(Violation::LivenessLate {
            after_heal_ms: at - heal_ms,
            bound_ms: config.liveness.as_millis() as u64,
        }),
        None => violations.push(Violation::LivenessNever),
    }
}

/// Counters: the final value is the sum of acknowledged increments plus some of the
/// indeterminate ones; definitely failed increments must not count.
fn check_counters(
    config: &SimConfig,
    history: &[Operation],
    final_state: &Final,
    violations: &mut Vec<Violation>,
) {
    for index in 0..config.workload.counter_keys {
        let key = counter_key(index);
        let ops = history
            .iter()
            .filter(|op| op.f == Function::Add && op.key == key);
        let sum = |outcome: Outcome| -> i64 {
            ops.clone()
                .filter(|op| op.outcome == outcome)
                .filter_map(|op| op.value.as_int())
                .sum()
        };
        let (low, unknown) = (sum(Outcome::Ok), sum(Outcome::Info));
        let Some(value) = final_state.values.get(&key) else {
            continue;
        };
        let value: i64 = value
            .as_deref()
            .map_or(Ok(0), str::parse)
            .unwrap_or(i64::MIN);
        if value < low || value > low + unknown {
            violations.push(Violation::CounterOutOfRange {
                key,
                value,
                low,
                high: low + unknown,
            });
        }
    }
}

/// Registers: the final value was written by a set that did not definitely fail.
fn check_registers(
    config: &SimConfig,
    history: &[Operation],
    final_state: &Final,
    violations: &mut Vec<Violation>,
) {
    for index in 0..config.workload.register_keys {
        let key = register_key(index);
        let Some(Some(value)) = final_state.values.get(&key) else {
            continue;
        };
        let written = Value::Str(value.clone());
        let writer = history
            .iter()
            .find(|op| op.f == Function::Write && op.key == key && op.value == written);
        match writer {
            None => violations.push(Violation::RegisterNeverWritten {
                key,
                value: value.clone(),
            }),
            Some(op) if op.outcome == Outcome::Fail => {
                violations.push(Violation::RegisterFromFailedWrite {
                    key,
                    value: value.clone(),
                    error: op.error.clone(),
                })
            }
            Some(_) => {}
        }
    }
}

/// A final routing table exists (fetched tables are checked: every slot has a group), and no
/// group lists a destroyed node. Group ids may differ from the first table's: the center
/// recreates a group that never formed under a new id.
fn check_routing(
    final_state: &Final,
    destroyed: &BTreeSet<NodeId>,
    violations: &mut Vec<Violation>,
) {
    if final_state.replicas.is_empty() {
        violations.push(Violation::NoFinalRouting);
    }
    for (group, members) in &final_state.replicas {
        for node in members.iter().filter(|n| destroyed.contains(n)) {
            violations.push(Violation::DestroyedReplica {
                group: *group,
                node: *node,
                replicas: members.clone(),
            });
        }
    }
}

/// Replicas of a group that applied the same log hold the same state.
fn check_replicas(final_state: &Final, violations: &mut Vec<Violation>) {
    for (&group, members) in &final_state.replicas {
        let digests: BTreeMap<NodeId, Digest> = final_state
            .digests
            .iter()
            .filter(|((g, _), _)| *g == group)
            .map(|((_, node), digest)| (*node, *digest))
            .collect();
        let hashes: BTreeSet<u64> = digests.values().map(|(_, hash)| *hash).collect();
        let indexes: BTreeSet<u64> = digests.values().map(|(index, _)| *index).collect();
        if digests.len() != members.len() || indexes.len() != 1 {
            violations.push(Violation::ReplicasNotConverged { group, digests });
        } else if hashes.len() != 1 {
            violations.push(Violation::ReplicasDiverged { group, digests });
        }
    }
}

/// The budget a run's linearizability check gets: states and the checker's own memory
/// estimate, never seconds, so the verdict is as deterministic as the run (`larder check
/// --sim-budget` judges a saved history with it, and gets the run's verdict).
pub fn linearizability_budget() -> Budget {
    Budget::unlimited()
        .with_states_max(LINEARIZABILITY_STATES_MAX)
        .with_memory_max(LINEARIZABILITY_MEMORY_MAX)
}

/// Every key's history must be linearizable (WGL search per key), within
/// [`linearizability_budget`].
fn check_linearizability(operations: &Result<Vec<Operation>, HistoryError>) -> Linearizability {
    let budget = linearizability_budget();
    match operations {
        Ok(operations) => Linearizability::Checked(check_operations(
            operations,
            &CheckConfig::default(),
            &budget,
        )),
        Err(error) => Linearizability::Malformed {
            error: error.to_string(),
        },
    }
}
