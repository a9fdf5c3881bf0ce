//! The operator: a process that asks the center to move slots at the times
//! [`SimConfig::run_moves`] says (the config's moves, or a swarm seed's own draw), and after the heal point waits (bounded) for every migration it
//! started to end. What it saw goes into the report; a migration still running at the end of
//! the run is a violation ("every migration ends done or rolled back after heal").

// The operator is part of the harness, not the system under test: it waits on turmoil's tokio
// time, which is simulated, so the ban on tokio::time is lifted here.
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_core::NodeId;
use larder_core::env::derive_seed;
use larder_core::slots::ranges_where;
use larder_protocol::{
    CenterResponse, DrainNode, Encoded, GetMigrations, GetRouting, GetStatus, Migration, MoveSlots,
    NodeState, Rpc, SplitGroup, Steer, SteerMigration, call,
};
use serde::{Deserialize, Serialize};

use super::config::SimConfig;
use crate::net::{NetFaults, SimNet, host_name};
use crate::trace::{Trace, sim_now};

/// Node id of the operator process.
pub const OPERATOR_ID: NodeId = 290;

/// One move the operator asks for: at `at_ms`, the first `slots` slots group `from` owns then
/// (all of them, if it owns fewer) go to group `to`; with `split`, group `from` splits instead
/// (a new group takes the upper half of its slots). `steer`, if any, is what the operator does
/// to the migration afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    pub at_ms: u64,
    pub from: u64,
    pub to: u64,
    pub slots: u16,
    #[serde(default)]
    pub split: bool,
    /// Move from the group owning the first of the clients' keys (a multi-key object if the
    /// workload has one) instead of `from`, unless that is `to`: swarm moves aim at the data.
    #[serde(default)]
    pub aim_keys: bool,
    #[serde(default)]
    pub steer: Option<PlannedSteer>,
}

/// What the operator does to a migration it started, `after_ms` after starting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSteer {
    pub after_ms: u64,
    pub action: SteerAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SteerAction {
    /// Cancel it (refused, and logged, once its cutover started).
    Cancel,
    /// Pause it for this many ms, then resume it.
    Pause { for_ms: u64 },
}

/// What the operator saw: each move's answer (the migration, or why it was refused) and the
/// migrations as the center last reported them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OperatorLog {
    pub started: Vec<Result<u64, String>>,
    /// Each steer asked: the migration, what, and the phase it answered with (or why not).
    pub steered: Vec<(u64, String, Result<String, String>)>,
    pub last_seen: Vec<Migration>,
    /// Each drain asked: the node and the center's answer.
    pub drained: Vec<(NodeId, Result<(), String>)>,
    /// Drained nodes still named by a group of the table (or not yet removed) when the
    /// operator last looked.
    pub draining: Vec<NodeId>,
    /// Every move and drain was asked for, every migration has ended and every drained node
    /// is removed (the checker audits slot ownership only then).
    pub settled: bool,
}

/// How long the operator waits before asking again to resume a migration when no center
/// leader answered.
const RESUME_RETRY: Duration = Duration::from_millis(500);

/// Why the center did not do what the operator asked.
#[derive(Debug)]
enum NotDone {
    /// The center leader declined it (`CenterResponse::Refused`): asking again is no use.
    Refused(String),
    /// No center leader answered, or one could not yet.
    Unanswered(String),
}

impl From<NotDone> for String {
    fn from(not_done: NotDone) -> String {
        match not_done {
            NotDone::Refused(reason) | NotDone::Unanswered(reason) => reason,
        }
    }
}

/// [`ask_center`], saying only why not.
async fn to_center<R: Rpc<Response = CenterResponse<T>>, T>(
    net: &SimNet,
    centers: &[NodeId],
    request: R,
) -> Result<T, String> {
    ask_center(net, centers, request)
        .await
        .map_err(String::from)
}

/// Sends `request` to the center leader, following hints (bounded).
async fn ask_center<R: Rpc<Response = CenterResponse<T>>, T>(
    net: &SimNet,
    centers: &[NodeId],
    request: R,
) -> Result<T, NotDone> {
    let request = Encoded::new(request);
    let mut reason = "no center answered".to_string();
    let mut target = centers.first().copied();
    for attempt in 0..centers.len() * 3 {
        let to = target.unwrap_or(centers[attempt % centers.len()]);
        match call(net, to, &request, Duration::from_millis(2_000)).await {
            Ok(CenterResponse::Ok(value)) => return Ok(value),
            Ok(CenterResponse::NotLeader { leader_hint }) => {
                reason = format!("center {to} does not lead");
                target = leader_hint.filter(|hint| centers.contains(hint) && *hint != to);
            }
            Ok(CenterResponse::Unavailable { reason: why }) => {
                return Err(NotDone::Unanswered(why));
            }
            Ok(CenterResponse::Refused { reason: why }) => return Err(NotDone::Refused(why)),
            Err(error) => {
                reason = format!("center {to}: {error}");
                target = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(NotDone::Unanswered(reason))
}

/// Registers the operator host if the run has a center and moves to make.
pub(crate) fn register_operator(
    sim: &mut turmoil::Sim<'_>,
    config: &SimConfig,
    trace: &Trace,
    net_faults: &NetFaults,
    log: &Arc<Mutex<OperatorLog>>,
) -> Option<NodeId> {
    let mut moves = config.run_moves();
    let mut drains = config.run_drains();
    if config.centers == 0 || (moves.is_empty() && drains.is_empty() && !config.automatic_splits())
    {
        return None;
    }
    drains.sort_unstable();
    let net = SimNet::new(
        OPERATOR_ID,
        net_faults.clone(),
        derive_seed(config.seed, OPERATOR_ID << 16),
        trace.clone(),
    );
    let centers = config.center_ids();
    moves.sort_by_key(|m| m.at_ms);
    // The slots of the keys the clients use, multi-key objects first (their deletes are what
    // a migration most easily loses).
    let key_slots: Vec<u16> = config
        .run_workload()
        .redis_keys()
        .iter()
        .rev()
        .map(|key| larder_core::slots::slot_of(key.as_bytes()))
        .collect();
    let give_up = config.duration + config.liveness;
    let (automatic_splits, duration) = (config.automatic_splits(), config.duration);
    let log = log.clone();
    sim.client(host_name(OPERATOR_ID), async move {
        // Steers due: (when, migration, what).
        let mut due: Vec<(Duration, u64, Steer)> = Vec::new();
        let mut moves = moves.into_iter().peekable();
        let mut drains = drains.into_iter().peekable();
        let mut drained = Vec::new();
        loop {
            let next_move = moves.peek().map(|m| Duration::from_millis(m.at_ms));
            let next_steer = due.iter().map(|d| d.0).min();
            let next_drain = drains.peek().map(|d| Duration::from_millis(d.0));
            let Some(at) = [next_move, next_steer, next_drain]
                .into_iter()
                .flatten()
                .min()
            else {
                break;
            };
            if let Some(wait) = at.checked_sub(sim_now()) {
                tokio::time::sleep(wait).await;
            }
            if next_drain == Some(at) {
                let (_, node) = drains.next().expect("a drain due");
                let outcome = to_center(&net, &centers, DrainNode { node })
                    .await
                    .map(|_| ());
                tracing::info!(node, ?outcome, "operator: node drain asked");
                if outcome.is_ok() {
                    drained.push(node);
                }
                log.lock()
                    .expect("operator log")
                    .drained
                    .push((node, outcome));
                continue;
            }
            if next_steer == Some(at) {
                let index = due.iter().position(|d| d.0 == at).expect("a steer due");
                let (_, id, steer) = due.remove(index);
                let outcome = ask_center(&net, &centers, SteerMigration { id, steer })
                    .await
                    .map(|m| {
                        let paused = if m.paused { " (paused)" } else { "" };
                        format!("{}{paused}", m.phase.name())
                    });
                tracing::info!(id, ?steer, ?outcome, "operator: migration steered");
                // A resume that did not reach a center leader (one was being elected, or
                // starting its term) is asked again, as an operator would, until the run ends:
                // a pause left for good would hold the migration to the end (cluster swarm
                // seed 1405). Not once the center refuses it (the migration ended); a failed
                // pause or cancel only lets the migration run on, so those are not asked again.
                let unanswered = matches!(outcome, Err(NotDone::Unanswered(_)));
                if steer == Steer::Resume && unanswered && sim_now() < give_up {
                    due.push((sim_now() + RESUME_RETRY, id, Steer::Resume));
                }
                log.lock().expect("operator log").steered.push((
                    id,
                    format!("{steer:?}"),
                    outcome.map_err(String::from),
                ));
                continue;
            }
            let planned = moves.next().expect("a move due");
            let outcome = start_move(&net, &centers, &planned, &key_slots).await;
            tracing::info!(?planned, ?outcome, "operator: move asked");
            if let (Ok(id), Some(steer)) = (&outcome, planned.steer) {
                let when = sim_now() + Duration::from_millis(steer.after_ms);
                match steer.action {
                    SteerAction::Cancel => due.push((when, *id, Steer::Cancel)),
                    SteerAction::Pause { for_ms } => {
                        due.push((when, *id, Steer::Pause));
                        due.push((when + Duration::from_millis(for_ms), *id, Steer::Resume));
                    }
                }
            }
            log.lock().expect("operator log").started.push(outcome);
        }
        // Wait for every migration to end and every drained node to be removed, polling
        // (bounded by the run's end).
        loop {
            let migrations = to_center(&net, &centers, GetMigrations).await;
            let status = to_center(&net, &centers, GetStatus).await;
            if let (Ok(migrations), Ok(status)) = (migrations, status) {
                let active = migrations.iter().any(|m| m.phase.is_active());
                let draining: Vec<NodeId> = drained
                    .iter()
                    .copied()
                    .filter(|node| {
                        let named = status.groups.iter().any(|g| g.replicas.contains(node));
                        let removed = status
                            .nodes
                            .iter()
                            .any(|n| n.id == *node && n.state == Some(NodeState::Removed));
                        named || !removed
                    })
                    .collect();
                let mut log = log.lock().expect("operator log");
                log.last_seen = migrations;
                log.draining = draining;
                // With automatic splits on, the center may start one until the writes stop.
                let quiet = !automatic_splits || sim_now() >= duration;
                if !active && log.draining.is_empty() && quiet {
                    log.settled = true;
                    break;
                }
            }
            if sim_now() > give_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    });
    Some(OPERATOR_ID)
}

/// Asks the center to make `planned` (its ranges computed from the current table); the id of
/// the migration, or why there is none.
async fn start_move(
    net: &SimNet,
    centers: &[NodeId],
    planned: &PlannedMove,
    key_slots: &[u16],
) -> Result<u64, String> {
    if planned.split {
        let migration = to_center(
            net,
            centers,
            SplitGroup {
                group: planned.from,
            },
        )
        .await?;
        return Ok(migration.id);
    }
    let answer = to_center(net, centers, GetRouting { known_epoch: 0 }).await?;
    let table = answer.table.ok_or("no routing table")?;
    let from = key_slots
        .first()
        .and_then(|slot| table.group_of_slot(*slot))
        .filter(|owner| planned.aim_keys && *owner != planned.to)
        .unwrap_or(planned.from);
    let owned: Vec<u16> = (0..larder_core::slots::SLOTS)
        .filter(|slot| table.group_of_slot(*slot) == Some(from))
        .collect();
    // A window of `slots` of the group's slots around the slot of a key the clients use, if
    // the group owns one: a move of slots nobody writes would test nothing.
    let count = usize::from(planned.slots).min(owned.len());
    let aim = key_slots
        .iter()
        .find_map(|slot| owned.binary_search(slot).ok())
        .unwrap_or(0);
    let start = aim.saturating_sub(count / 2).min(owned.len() - count);
    let window = &owned[start..start + count];
    let ranges = ranges_where(|slot| window.binary_search(&slot).is_ok());
    if ranges.is_empty() {
        return Err(format!("group {from} owns no slots"));
    }
    let migration = to_center(
        net,
        centers,
        MoveSlots {
            ranges,
            to: planned.to,
        },
    )
    .await?;
    Ok(migration.id)
}
