//! Scripted scenarios: fixed fault sequences with precise expectations, for properties a random
//! plan would only hit by chance.

// Scripted scenarios run under turmoil, whose tokio time is simulated: waiting on it is
// waiting on the simulation, so the ban on tokio::time is lifted here.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_client::{Client, ClientConfig, ClientError};
use larder_core::NodeId;
use larder_core::bugs::Bugs;
use larder_core::env::derive_seed;
use larder_core::kv::{Command, Reply};
use larder_core::resp::{self, Frame};
use larder_storage::StorageNode;

use crate::clock::SimClock;
use crate::env::SimEnv;
use crate::net::{NetFaults, SimNet, host_name};
use crate::run::{
    NodeParts, NodeSlot, SimConfig, SimError, build_sim, current_leader, register_nodes,
};
use crate::trace::{Trace, sim_now};
use crate::workload::{GROUP, client_id};

fn step_until(sim: &mut turmoil::Sim<'_>, at: Duration) -> Result<bool, SimError> {
    while sim.elapsed() < at {
        let finished = sim.step().map_err(|e| SimError::Turmoil {
            at_ms: sim.elapsed().as_millis() as u64,
            reason: e.to_string(),
        })?;
        crate::trace::set_harness_now(sim.elapsed());
        if finished {
            return Ok(true);
        }
    }
    Ok(false)
}

/// [`step_until`] for a simulation without clients, which turmoil counts as finished from the
/// first step: the hosts run until `at` regardless.
fn step_hosts_until(sim: &mut turmoil::Sim<'_>, at: Duration) -> Result<(), SimError> {
    while sim.elapsed() < at {
        step_until(sim, at)?;
    }
    Ok(())
}

/// A scenario's cluster: the process state reset, a trace, a fault table, and the nodes of
/// `config` registered (no fault points armed).
fn start<'a>(config: &SimConfig) -> (turmoil::Sim<'a>, Trace, NetFaults, Vec<NodeParts>) {
    crate::run::reset_process_state();
    let trace = Trace::default();
    let faults = NetFaults::default();
    let mut sim = build_sim(config);
    let parts = register_nodes(
        &mut sim,
        config,
        &trace,
        &faults,
        &crate::points::PointTable::default(),
    );
    (sim, trace, faults, parts)
}

fn finish(sim: &mut turmoil::Sim<'_>) -> Result<(), SimError> {
    sim.run().map_err(|e| SimError::Turmoil {
        at_ms: sim.elapsed().as_millis() as u64,
        reason: e.to_string(),
    })
}

/// A client of the deposed-leader scenarios that keeps retrying (30 attempts, 200 ms apart, each
/// at most 1.5 s) until a leader answers.
fn patient() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(1500),
        attempts_max: 30,
        backoff: Duration::from_millis(200),
        ..ClientConfig::default()
    }
}

/// A client of [`GROUP`] on `voters` that tries a command `attempts_max` times, 200 ms apart:
/// the scenarios' usual client.
fn retrying_client(
    net: SimNet,
    voters: Vec<NodeId>,
    attempts_max: u32,
) -> Client<SimNet, SimClock> {
    let config = ClientConfig {
        attempts_max,
        backoff: Duration::from_millis(200),
        ..Default::default()
    };
    Client::new(net, SimClock::new(), GROUP, voters, config)
}

/// Steps until a leader of [`GROUP`] is seen (at most 5 s past `from`), and returns it.
fn await_leader(
    sim: &mut turmoil::Sim<'_>,
    parts: &[NodeParts],
    from: Duration,
) -> Result<Option<NodeId>, SimError> {
    step_until(sim, from)?;
    let mut leader = current_leader(parts);
    while leader.is_none() && sim.elapsed() < from + Duration::from_secs(5) {
        let next = sim.elapsed() + Duration::from_millis(10);
        step_until(sim, next)?;
        leader = current_leader(parts);
    }
    Ok(leader)
}

/// Cuts `node` off from each of `others`, both ways.
fn cut_off(faults: &NetFaults, node: NodeId, others: impl IntoIterator<Item = NodeId>) {
    faults.update(|state| {
        for other in others {
            state.blocked.insert((node, other));
            state.blocked.insert((other, node));
        }
    });
}

/// Steps until `until`, and returns the last leader of [`GROUP`] seen among the nodes other
/// than `old`.
fn watch_new_leader(
    sim: &mut turmoil::Sim<'_>,
    parts: &[NodeParts],
    old: Option<NodeId>,
    until: Duration,
) -> Result<Option<NodeId>, SimError> {
    let mut seen = None;
    while sim.elapsed() < until {
        let next = (sim.elapsed() + Duration::from_millis(10)).min(until);
        step_until(sim, next)?;
        let new_leader = parts.iter().filter(|p| Some(p.id) != old).find_map(|p| {
            let slot = p.slot.lock().expect("slot lock");
            slot.as_ref()
                .filter(|node| node.is_leader(GROUP))
                .map(|node| node.id())
        });
        if new_leader.is_some() {
            seen = new_leader;
        }
    }
    Ok(seen)
}

/// What happened when the leader was cut off with one client on its side.
#[derive(Debug, Clone, Default)]
pub struct DeposedLeaderOutcome {
    pub old_leader: Option<NodeId>,
    /// A node of the majority side that led while the old leader was cut off.
    pub new_leader: Option<NodeId>,
    /// The write sent only to the old leader, during the partition.
    pub minority_write: Option<Result<Reply, ClientError>>,
    /// The write sent to the majority side, during the partition.
    pub majority_write: Option<Result<Reply, ClientError>>,
    /// The key's value read after healing.
    pub final_value: Option<Result<Reply, ClientError>>,
    pub trace_hash: String,
}

/// Partitions the leader (with one client) from the other two nodes (with another client):
/// the majority must elect a new leader and accept writes; the old leader must not acknowledge
/// any write; after healing the majority's write is the value.
pub fn deposed_leader(seed: u64) -> Result<DeposedLeaderOutcome, SimError> {
    let mut config = SimConfig::new(seed, Duration::from_secs(20));
    config.faults = false;
    let (mut sim, trace, faults, parts) = start(&config);
    let nodes = config.node_ids();
    let outcome: Arc<Mutex<DeposedLeaderOutcome>> = Arc::default();
    let isolated: Arc<Mutex<Option<NodeId>>> = Arc::default();

    let partition_at = Duration::from_secs(3);
    let heal_at = Duration::from_secs(10);
    let (minority_client, majority_client, reader) = (client_id(1), client_id(2), client_id(3));
    let quick = ClientConfig {
        request_timeout: Duration::from_millis(1500),
        attempts_max: 2,
        ..Default::default()
    };
    let patient = patient();

    {
        let (net, isolated, outcome, quick) = (
            SimNet::new(
                minority_client,
                faults.clone(),
                derive_seed(seed, 11),
                trace.clone(),
            ),
            isolated.clone(),
            outcome.clone(),
            quick.clone(),
        );
        sim.client(host_name(minority_client), async move {
            tokio::time::sleep(partition_at + Duration::from_millis(200)).await;
            let Some(old) = *isolated.lock().expect("isolated lock") else {
                return Ok(());
            };
            let mut client = Client::new(net, SimClock::new(), GROUP, vec![old], quick);
            let result = client.execute(Command::set("k", "minority")).await;
            outcome.lock().expect("outcome lock").minority_write = Some(result);
            Ok(())
        });
    }
    {
        let (net, isolated, outcome, nodes, patient) = (
            SimNet::new(
                majority_client,
                faults.clone(),
                derive_seed(seed, 12),
                trace.clone(),
            ),
            isolated.clone(),
            outcome.clone(),
            nodes.clone(),
            patient.clone(),
        );
        sim.client(host_name(majority_client), async move {
            tokio::time::sleep(partition_at + Duration::from_millis(200)).await;
            let Some(old) = *isolated.lock().expect("isolated lock") else {
                return Ok(());
            };
            let others = nodes.into_iter().filter(|&id| id != old).collect();
            let mut client = Client::new(net, SimClock::new(), GROUP, others, patient);
            let result = client.execute(Command::set("k", "majority")).await;
            outcome.lock().expect("outcome lock").majority_write = Some(result);
            Ok(())
        });
    }
    {
        let (net, outcome, nodes) = (
            SimNet::new(reader, faults.clone(), derive_seed(seed, 13), trace.clone()),
            outcome.clone(),
            nodes.clone(),
        );
        sim.client(host_name(reader), async move {
            tokio::time::sleep(heal_at + Duration::from_secs(2)).await;
            let mut client = Client::new(net, SimClock::new(), GROUP, nodes, patient);
            let result = client.execute(Command::get("k")).await;
            outcome.lock().expect("outcome lock").final_value = Some(result);
            Ok(())
        });
    }

    // The leader cut off with the minority client.
    let (old, new_leader) = partition_the_leader(
        &mut sim,
        &parts,
        &faults,
        &isolated,
        (partition_at, heal_at),
        |old| {
            let others = nodes.iter().copied().filter(|&id| id != old);
            cut_off(&faults, old, others.chain([majority_client, reader]));
            cut_off(&faults, minority_client, [majority_client]);
        },
    )?;
    let mut outcome = outcome.lock().expect("outcome lock").clone();
    (outcome.old_leader, outcome.new_leader) = (old, new_leader);
    outcome.trace_hash = trace.hash();
    Ok(outcome)
}

/// What a read at a deposed leader got, the moment its partition healed.
#[derive(Debug, Clone, Default)]
pub struct DeposedReadOutcome {
    pub old_leader: Option<NodeId>,
    /// A node of the majority side that led while the old leader was cut off.
    pub new_leader: Option<NodeId>,
    /// The write of `k` before the partition, through the old leader.
    pub first_write: Option<Result<Reply, ClientError>>,
    /// The write of `k` on the majority side, during the partition.
    pub majority_write: Option<Result<Reply, ClientError>>,
    /// The read of `k` sent only to the old leader as the partition healed.
    pub deposed_read: Option<Result<Reply, ClientError>>,
    pub trace_hash: String,
}

/// What a deposed leader is sent in [`deposed_leader_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeposedRequest {
    /// `GET k`.
    Read,
    /// `SET k before`: on the deposed leader's state (`k` is `before` there) a write that
    /// changes nothing, answered like a read (`larder_storage::unchanged`); on the majority's
    /// (`k` is `after`) one that does.
    UnchangedWrite,
}

/// A read at a leader deposed while it was cut off, sent the moment the partition heals: the
/// old leader still believes it leads (nothing from the new one has reached it yet), so its
/// read round asks the majority side, whose replicas have voted for the new leader since. They
/// must say no (`StorageNode::answer_read_confirm`); the read then steps aside to openraft's
/// read index, which finds the higher term, and is refused. With the planted bug
/// `read-confirm-ignores-vote` they say yes, and the read answers the value from before the
/// majority's write, which was acknowledged before the read was sent.
///
/// [`DeposedRequest::UnchangedWrite`] sends `SET k before` instead, from a session opened
/// before the partition: it must be refused as the read is (its confirmation is the read's);
/// with the planted bug `unchanged-write-unconfirmed` the deposed leader answers `OK` from its
/// own state, and the write acknowledged after the majority's has no effect.
pub fn deposed_leader_request(
    seed: u64,
    bugs: Bugs,
    request: DeposedRequest,
) -> Result<DeposedReadOutcome, SimError> {
    let mut config = SimConfig::new(seed, Duration::from_secs(16));
    config.faults = false;
    config.bugs = bugs;
    let (mut sim, trace, faults, parts) = start(&config);
    let nodes = config.node_ids();
    let outcome: Arc<Mutex<DeposedReadOutcome>> = Arc::default();
    let isolated: Arc<Mutex<Option<NodeId>>> = Arc::default();
    let partition_at = Duration::from_secs(3);
    let heal_at = Duration::from_secs(10);
    let (writer, reader) = (client_id(1), client_id(2));
    let patient = patient();
    {
        let (net, isolated, outcome, nodes, patient) = (
            SimNet::new(writer, faults.clone(), derive_seed(seed, 41), trace.clone()),
            isolated.clone(),
            outcome.clone(),
            nodes.clone(),
            patient.clone(),
        );
        sim.client(host_name(writer), async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut client = Client::new(
                net.clone(),
                SimClock::new(),
                GROUP,
                nodes.clone(),
                patient.clone(),
            );
            let first = client.execute(Command::set("k", "before")).await;
            outcome.lock().expect("outcome lock").first_write = Some(first);
            tokio::time::sleep(
                (partition_at + Duration::from_millis(200)).saturating_sub(sim_now()),
            )
            .await;
            let Some(old) = *isolated.lock().expect("isolated lock") else {
                return Ok(());
            };
            let others = nodes.into_iter().filter(|&id| id != old).collect();
            let mut client = Client::new(net, SimClock::new(), GROUP, others, patient);
            let result = client.execute(Command::set("k", "after")).await;
            outcome.lock().expect("outcome lock").majority_write = Some(result);
            Ok(())
        });
    }
    {
        let (net, isolated, outcome, nodes, patient) = (
            SimNet::new(reader, faults.clone(), derive_seed(seed, 42), trace.clone()),
            isolated.clone(),
            outcome.clone(),
            nodes.clone(),
            patient.clone(),
        );
        sim.client(host_name(reader), async move {
            let mut opened = Client::new(net.clone(), SimClock::new(), GROUP, nodes, patient);
            if request == DeposedRequest::UnchangedWrite {
                // The write's session, opened through the log while it still commits.
                tokio::time::sleep(Duration::from_millis(2500)).await;
                opened
                    .execute(Command::set("session", "opened"))
                    .await
                    .map_err(|error| format!("opening the session: {error}"))?;
            }
            tokio::time::sleep(heal_at.saturating_sub(sim_now())).await;
            let Some(old) = *isolated.lock().expect("isolated lock") else {
                return Ok(());
            };
            // The old leader only, once: what it answers is the point.
            let once = ClientConfig {
                request_timeout: Duration::from_millis(1500),
                attempts_max: 1,
                ..ClientConfig::default()
            };
            let mut client = Client::new(net, SimClock::new(), GROUP, vec![old], once);
            client.continue_sequence_of(&opened);
            let command = match request {
                DeposedRequest::Read => Command::get("k"),
                DeposedRequest::UnchangedWrite => Command::set("k", "before"),
            };
            let result = client.execute(command).await;
            outcome.lock().expect("outcome lock").deposed_read = Some(result);
            Ok(())
        });
    }
    let (old, new_leader) = partition_the_leader(
        &mut sim,
        &parts,
        &faults,
        &isolated,
        (partition_at, heal_at),
        |old| {
            // Cut off from its peers and the writer; the reader still reaches it.
            let others = nodes.iter().copied().filter(|&id| id != old);
            cut_off(&faults, old, others.chain([writer]));
        },
    )?;
    let mut outcome = outcome.lock().expect("outcome lock").clone();
    (outcome.old_leader, outcome.new_leader) = (old, new_leader);
    outcome.trace_hash = trace.hash();
    Ok(outcome)
}

/// The middle and end of a partitioned-leader scenario: waits (bounded) for a stable leader
/// from `partition_at`, names it in `isolated` (the clients read it there), `cut`s it off,
/// watches the majority side elect another until `heal_at`, heals, runs the clients to the
/// end and drops the nodes. Returns (old leader, new leader).
fn partition_the_leader(
    sim: &mut turmoil::Sim<'_>,
    parts: &[NodeParts],
    faults: &NetFaults,
    isolated: &Mutex<Option<NodeId>>,
    (partition_at, heal_at): (Duration, Duration),
    cut: impl FnOnce(NodeId),
) -> Result<(Option<NodeId>, Option<NodeId>), SimError> {
    let old = await_leader(sim, parts, partition_at)?;
    *isolated.lock().expect("isolated lock") = old;
    if let Some(old) = old {
        cut(old);
    }
    let new_leader = watch_new_leader(sim, parts, old, heal_at)?;
    faults.update(|state| state.blocked.clear());
    finish(sim)?;
    drop_nodes(parts);
    Ok((old, new_leader))
}

/// Each running node's digest of [`GROUP`] (applied index, state hash).
async fn group_digests(slots: &[(NodeId, NodeSlot)]) -> BTreeMap<NodeId, (u64, u64)> {
    let mut digests = BTreeMap::new();
    for (id, slot) in slots {
        let node = slot.lock().expect("slot lock").clone();
        if let Some(node) = node
            && let Ok(digest) = node.state_digest(GROUP).await
        {
            digests.insert(*id, digest);
        }
    }
    digests
}

fn drop_nodes(parts: &[NodeParts]) {
    for part in parts {
        part.slot.lock().expect("slot lock").take();
    }
}

/// What a learner-first membership change did.
#[derive(Debug, Clone, Default)]
pub struct MembershipOutcome {
    pub replaced: Option<Result<(), String>>,
    /// Voters after the change, as the leader sees them.
    pub voters: Vec<NodeId>,
    /// Writes acknowledged after the old voter was crashed.
    pub writes_after_crash: u64,
    /// (applied index, state hash) of every live replica at the end.
    pub digests: BTreeMap<NodeId, (u64, u64)>,
}

/// Replaces voter 3 by the empty node 4 (learner first, promoted once caught up, which needs a
/// snapshot since the log was purged), then crashes node 3: the group keeps serving on
/// {1, 2, 4}, and node 4 ends with the same state as the others.
pub fn replace_voter(seed: u64) -> Result<MembershipOutcome, SimError> {
    let mut config = SimConfig::new(seed, Duration::from_secs(20));
    config.faults = false;
    config.nodes = 4;
    config.voters = 3;
    config.node.snapshot_logs_since_last = 50;
    config.node.snapshot_logs_kept = 10;
    let (mut sim, trace, faults, mut parts) = start(&config);
    let outcome: Arc<Mutex<MembershipOutcome>> = Arc::default();
    let slots: Vec<_> = parts.iter().map(|p| (p.id, p.slot.clone())).collect();
    let crash_at = Duration::from_secs(8);

    let writer = client_id(1);
    {
        let net = SimNet::new(writer, faults.clone(), derive_seed(seed, 21), trace.clone());
        let (outcome, slots) = (outcome.clone(), slots.clone());
        sim.client(host_name(writer), async move {
            let mut client = retrying_client(net, vec![1, 2, 3, 4], 30);
            tokio::time::sleep(Duration::from_secs(2)).await;
            // Enough writes that the log is purged behind a snapshot before node 4 joins.
            for i in 0..200 {
                let _ = client
                    .execute(Command::set(format!("key-{i}"), format!("value-{i}")))
                    .await;
            }
            let leader = slots.iter().find_map(|(_, slot)| {
                slot.lock()
                    .expect("slot lock")
                    .clone()
                    .filter(|node| node.is_leader(GROUP))
            });
            if let Some(leader) = leader {
                let result = leader
                    .replace_voter(GROUP, 3, 4)
                    .await
                    .map_err(|e| e.to_string());
                let voters = leader
                    .raft(GROUP)
                    .map(|raft| raft.voter_ids().collect())
                    .unwrap_or_default();
                let mut outcome = outcome.lock().expect("outcome lock");
                outcome.replaced = Some(result);
                outcome.voters = voters;
            }
            tokio::time::sleep(crash_at.saturating_sub(sim_now()) + Duration::from_millis(500))
                .await;
            let mut acknowledged = 0;
            for i in 0..50 {
                if client
                    .execute(Command::set(format!("after-{i}"), "x"))
                    .await
                    .is_ok()
                {
                    acknowledged += 1;
                }
            }
            outcome.lock().expect("outcome lock").writes_after_crash = acknowledged;
            tokio::time::sleep(Duration::from_secs(2)).await;
            outcome.lock().expect("outcome lock").digests = group_digests(&slots).await;
            Ok(())
        });
    }
    step_until(&mut sim, crash_at)?;
    sim.crash(host_name(3));
    if let Some(part) = parts.iter_mut().find(|p| p.id == 3) {
        part.slot.lock().expect("slot lock").take();
        part.up = false;
    }
    finish(&mut sim)?;
    drop_nodes(&parts);
    let outcome = outcome.lock().expect("outcome lock").clone();
    Ok(outcome)
}

/// What a voter replacement asked of a deposed leader answered ([`deposed_leader_replace`]).
#[derive(Debug, Clone, Default)]
pub struct DeposedReplaceOutcome {
    pub old_leader: Option<NodeId>,
    /// A node of the majority side that led while the old leader was cut off.
    pub new_leader: Option<NodeId>,
    /// The majority's replacement of the old leader by node 4.
    pub majority_replace: Option<Result<(), String>>,
    /// The replacement of node 4 by the old leader, asked of the old leader while cut off:
    /// by its own committed membership (the old leader a voter, 4 not) it is done already.
    pub deposed_replace: Option<Result<(), String>>,
    /// Voters of the group at the end, as its leader on the majority side sees them.
    pub voters: Vec<NodeId>,
    pub trace_hash: String,
}

/// The center's question of cluster swarm seed 34, asked on purpose: voters {1, 2, 3} and a
/// spare node 4; the leader is cut off from everyone, the majority side elects a leader and
/// replaces the old leader by node 4 (learner first); then the old leader, which still
/// believes it leads, is asked to replace 4 by itself. Its committed membership says that is
/// done, and it is not: the group's voters are the majority's. It must not answer "done"
/// (`StorageNode::replace_voter` confirms its leadership first, and cannot); with the planted
/// bug `replace-done-unconfirmed` it does, which is how a center wrote a stale membership into
/// its routing table.
pub fn deposed_leader_replace(seed: u64, bugs: Bugs) -> Result<DeposedReplaceOutcome, SimError> {
    let mut config = SimConfig::new(seed, Duration::from_secs(16));
    config.faults = false;
    config.bugs = bugs;
    config.nodes = 4;
    config.voters = 3;
    let (mut sim, trace, faults, parts) = start(&config);
    let outcome: Arc<Mutex<DeposedReplaceOutcome>> = Arc::default();
    let isolated: Arc<Mutex<Option<NodeId>>> = Arc::default();
    let slots: Vec<_> = parts.iter().map(|p| (p.id, p.slot.clone())).collect();
    let partition_at = Duration::from_secs(3);
    let heal_at = Duration::from_secs(11);
    let asker = client_id(1);
    {
        let (isolated, outcome, slots) = (isolated.clone(), outcome.clone(), slots.clone());
        let node = move |id: NodeId| {
            slots
                .iter()
                .find(|(slot_id, _)| *slot_id == id)
                .and_then(|(_, slot)| slot.lock().expect("slot lock").clone())
        };
        sim.client(host_name(asker), async move {
            tokio::time::sleep(partition_at + Duration::from_secs(3)).await;
            let Some(old) = *isolated.lock().expect("isolated lock") else {
                return Ok(());
            };
            let majority_leader = [1, 2, 3]
                .into_iter()
                .filter(|&id| id != old)
                .filter_map(&node)
                .find(|n| n.is_leader(GROUP));
            let Some(leader) = majority_leader else {
                return Ok(());
            };
            let replaced = leader
                .replace_voter(GROUP, old, 4)
                .await
                .map_err(|e| e.to_string());
            outcome.lock().expect("outcome lock").majority_replace = Some(replaced);
            let Some(deposed) = node(old) else {
                return Ok(());
            };
            // Bounded, as the center's admin call is: a leader that cannot confirm waits.
            let asked =
                tokio::time::timeout(Duration::from_secs(2), deposed.replace_voter(GROUP, 4, old))
                    .await
                    .unwrap_or_else(|_| {
                        Err(larder_storage::NodeError::Raft {
                            group: GROUP,
                            reason: "no answer within 2 s".into(),
                        })
                    })
                    .map_err(|e| e.to_string());
            outcome.lock().expect("outcome lock").deposed_replace = Some(asked);
            tokio::time::sleep(heal_at.saturating_sub(sim_now()) + Duration::from_secs(2)).await;
            // Not the old leader's view: removed from the group, it hears from nobody and may
            // go on believing it leads.
            let voters = [1, 2, 3, 4]
                .into_iter()
                .filter(|&id| id != old)
                .filter_map(&node)
                .find(|n| n.is_leader(GROUP))
                .and_then(|n| n.raft(GROUP).ok())
                .map(|raft| raft.voter_ids().collect())
                .unwrap_or_default();
            outcome.lock().expect("outcome lock").voters = voters;
            Ok(())
        });
    }
    let (old, new_leader) = partition_the_leader(
        &mut sim,
        &parts,
        &faults,
        &isolated,
        (partition_at, heal_at),
        |old| {
            let others = [1, 2, 3, 4].into_iter().filter(|&id| id != old);
            cut_off(&faults, old, others.chain([asker]));
        },
    )?;
    let mut outcome = outcome.lock().expect("outcome lock").clone();
    (outcome.old_leader, outcome.new_leader) = (old, new_leader);
    outcome.trace_hash = trace.hash();
    Ok(outcome)
}

/// Every step of [`forgotten_session`], in order: what each write or read answered.
#[derive(Debug, Clone, Default)]
pub struct ForgottenSessionOutcome {
    pub steps: Vec<(String, Result<Reply, ClientError>)>,
    /// Each replica's digest of the group once the steps are done.
    pub digests: BTreeMap<NodeId, (u64, u64)>,
}

/// A group that remembers two sessions: client A writes, clients B and C open sessions (A's,
/// the least recently used, is forgotten), A writes another key (the group answers that it
/// forgot the session, so A reports the write as indeterminate, and nothing is applied), then A
/// writes once more (it opens a new session: applied) and reads. With `uneven`, node 2 keeps
/// more sessions than its peers ([`SimConfig::sessions_max_uneven`]): every replica must
/// still forget A's session, and the replicas end with equal digests.
pub fn forgotten_session(
    seed: u64,
    uneven: bool,
    bugs: Bugs,
) -> Result<ForgottenSessionOutcome, SimError> {
    let mut config = SimConfig::new(seed, Duration::from_secs(10));
    config.faults = false;
    config.node.sessions_max = 2;
    config.sessions_max_uneven = uneven;
    config.bugs = bugs;
    let (mut sim, trace, faults, parts) = start(&config);
    let slots: Vec<_> = parts.iter().map(|p| (p.id, p.slot.clone())).collect();
    let outcome: Arc<Mutex<ForgottenSessionOutcome>> = Arc::default();
    let host = client_id(1);
    let net = SimNet::new(host, faults.clone(), derive_seed(seed, 31), trace.clone());
    let recorded = outcome.clone();
    sim.client(host_name(host), async move {
        let client = || retrying_client(net.clone(), vec![1, 2, 3], 30);
        let (mut a, mut b, mut c) = (client(), client(), client());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let record = |name: &str, result: Result<Reply, ClientError>| {
            let mut outcome = recorded.lock().expect("outcome lock");
            outcome.steps.push((name.to_string(), result));
        };
        record("a: set k 1", a.execute(Command::set("k", "1")).await);
        record("b: set b 1", b.execute(Command::set("b", "1")).await);
        record("c: set c 1", c.execute(Command::set("c", "1")).await);
        // A key nothing writes after: a replica that applied this write keeps it to the end.
        record("a: set j 2", a.execute(Command::set("j", "2")).await);
        record("a: get j", a.execute(Command::get("j")).await);
        record("a: set k 3", a.execute(Command::set("k", "3")).await);
        record("a: get k", a.execute(Command::get("k")).await);
        // Every replica has applied everything by now (no faults, an idle second).
        tokio::time::sleep(Duration::from_secs(1)).await;
        recorded.lock().expect("outcome lock").digests = group_digests(&slots).await;
        Ok(())
    });
    finish(&mut sim)?;
    drop_nodes(&parts);
    let outcome = outcome.lock().expect("outcome lock").clone();
    Ok(outcome)
}

/// What reading a key that expired while its group was quiet answered.
#[derive(Debug, Clone, Default)]
pub struct QuietExpiryOutcome {
    /// The answers to `SET k v PX 200`, then to `GET k` twice once the group has been idle for
    /// 3 s (quiet: the leader's ticker off, its lease run out).
    pub steps: Vec<(String, Result<Reply, ClientError>)>,
    pub trace_hash: String,
}

/// A fault-free three-node group: one write of a key that expires in 200 ms, then nothing for
/// 3 s (the group settles: `larder_storage::quiet`), then reads of the key. The key is expired
/// by the leader's clock but not by the group clock (the last entry's time), so the first read
/// proposes a group-clock advance, a write a quiet leader must wake for; with the planted bug
/// `advance-skips-wake` it does not, openraft refuses the advance as "not the leader", and the
/// reads fail until the client gives up.
pub fn quiet_expiry(seed: u64, bugs: Bugs) -> Result<QuietExpiryOutcome, SimError> {
    let mut config = SimConfig::new(seed, Duration::from_secs(15));
    config.faults = false;
    config.bugs = bugs;
    let (mut sim, trace, faults, parts) = start(&config);
    let outcome: Arc<Mutex<QuietExpiryOutcome>> = Arc::default();
    let host = client_id(1);
    let net = SimNet::new(host, faults.clone(), derive_seed(seed, 31), trace.clone());
    let recorded = outcome.clone();
    sim.client(host_name(host), async move {
        let mut client = retrying_client(net, vec![1, 2, 3], 10);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let record = |name: &str, result: Result<Reply, ClientError>| {
            let mut outcome = recorded.lock().expect("outcome lock");
            outcome.steps.push((name.to_string(), result));
        };
        let set = Command::parse(
            &[b"SET" as &[u8], b"k", b"v", b"PX", b"200"].map(bytes::Bytes::copy_from_slice),
        )
        .map_err(|error| error.to_string())?;
        record("set k v px 200", client.execute(set).await);
        tokio::time::sleep(Duration::from_secs(3)).await;
        record("get k", client.execute(Command::get("k")).await);
        record("get k", client.execute(Command::get("k")).await);
        Ok(())
    });
    finish(&mut sim)?;
    drop_nodes(&parts);
    let mut outcome = outcome.lock().expect("outcome lock").clone();
    outcome.trace_hash = trace.hash();
    Ok(outcome)
}

/// Cuts `leader` off from `followers` both ways and steps the hosts until one of them leads
/// `GROUP` (its id and the simulated time since the cut), or `limit` passes (`None`).
fn cut_off_until_elected(
    sim: &mut turmoil::Sim<'_>,
    faults: &NetFaults,
    leader: NodeId,
    followers: &[&NodeParts],
    limit: Duration,
) -> Result<Option<(NodeId, Duration)>, SimError> {
    let cut = sim.elapsed();
    faults.update(|state| {
        for follower in followers {
            state.blocked.insert((leader, follower.id));
            state.blocked.insert((follower.id, leader));
        }
    });
    while sim.elapsed() < cut + limit {
        let next = sim.elapsed() + Duration::from_millis(10);
        step_hosts_until(sim, next)?;
        if let Some(new) = followers.iter().find(|p| p.leads(GROUP)) {
            return Ok(Some((new.id, sim.elapsed() - cut)));
        }
    }
    Ok(None)
}

/// How a group replaced a leader it lost while its followers' clocks drifted.
#[derive(Debug, Clone, Default)]
pub struct ReelectionOutcome {
    pub old_leader: Option<NodeId>,
    /// The follower that led first after the cut.
    pub new_leader: Option<NodeId>,
    /// Simulated time from the cut to that follower leading.
    pub elected_after: Option<Duration>,
    pub trace_hash: String,
}

/// Cuts the leader of a healthy three-node group off from its followers and, at the same
/// moment, makes both followers' clocks drift by `drift_ppm`; measures the simulated time until
/// one of them leads. openraft's election timers run on the node's clock, so followers whose
/// clocks run slow campaign late and fast ones early.
pub fn reelection_under_drift(seed: u64, drift_ppm: i64) -> Result<ReelectionOutcome, SimError> {
    let mut config = SimConfig::new(seed, Duration::from_secs(40));
    config.faults = false;
    let (mut sim, trace, faults, parts) = start(&config);
    let mut outcome = ReelectionOutcome::default();

    let settle = Duration::from_secs(3);
    step_hosts_until(&mut sim, settle)?;
    let mut old = current_leader(&parts);
    while old.is_none() && sim.elapsed() < settle + Duration::from_secs(5) {
        let next = sim.elapsed() + Duration::from_millis(10);
        step_hosts_until(&mut sim, next)?;
        old = current_leader(&parts);
    }
    outcome.old_leader = old;
    if let Some(old) = old {
        let followers: Vec<&NodeParts> = parts.iter().filter(|p| p.id != old).collect();
        for follower in &followers {
            follower.clock.set_drift_ppm(drift_ppm);
        }
        if let Some((new, after)) =
            cut_off_until_elected(&mut sim, &faults, old, &followers, Duration::from_secs(30))?
        {
            outcome.new_leader = Some(new);
            outcome.elected_after = Some(after);
        }
    }
    drop_nodes(&parts);
    outcome.trace_hash = trace.hash();
    Ok(outcome)
}

/// What a group did while idle, when used again, and when it lost its leader
/// ([`quiet_group`]).
#[derive(Debug, Clone, Default)]
pub struct QuietOutcome {
    pub leader: Option<NodeId>,
    /// openraft appends (heartbeats included) the two followers served over
    /// [`QUIET_WINDOW`] while nobody wrote to the group (a client read it every 100 ms).
    pub idle_appends: u64,
    /// The reads answered with the first write's value between the first write and the busy
    /// window: a group only read from still serves every read (by read rounds) while quiet.
    pub idle_reads: u64,
    /// The same over a window of the same length while a client wrote every 200 ms.
    pub busy_appends: u64,
    /// The first write after the idle window, and how long it took.
    pub write_after_idle: Option<(Result<Reply, ClientError>, Duration)>,
    /// Simulated time from cutting the (idle) leader off to a follower leading.
    pub elected_after: Option<Duration>,
    pub trace_hash: String,
}

/// The length of [`quiet_group`]'s windows.
pub const QUIET_WINDOW: Duration = Duration::from_secs(3);

/// A three-node group only read from, then written to, then idle with its leader cut off
/// from both followers (`larder_storage::quiet`): a group nobody writes to must send no
/// heartbeats while it serves reads, a write to it must still succeed at once, and its
/// followers must still replace a lost leader.
pub fn quiet_group(seed: u64, bugs: Bugs) -> Result<QuietOutcome, SimError> {
    let mut config = SimConfig::new(seed, Duration::from_secs(40));
    config.faults = false;
    config.bugs = bugs;
    let (mut sim, trace, faults, parts) = start(&config);
    let outcome: Arc<Mutex<QuietOutcome>> = Arc::default();
    let appends = |parts: &[NodeParts], leader: NodeId| -> u64 {
        parts
            .iter()
            .filter(|p| p.id != leader)
            .filter_map(|p| p.node())
            .map(|node| node.appends_served())
            .sum()
    };
    // The client: one write at 2 s, then a read every 100 ms until 8 s, then one write every
    // 200 ms until 11 s.
    let host = client_id(1);
    let net = SimNet::new(host, faults.clone(), derive_seed(seed, 31), trace.clone());
    let recorded = outcome.clone();
    sim.client(host_name(host), async move {
        let mut client = retrying_client(net, vec![1, 2, 3], 30);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = client.execute(Command::set("k", "1")).await;
        let reads_until = tokio::time::Instant::now() + Duration::from_secs(6);
        while tokio::time::Instant::now() < reads_until {
            if client.execute(Command::get("k")).await == Ok(Reply::Bulk("1".into())) {
                recorded.lock().expect("outcome lock").idle_reads += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep_until(reads_until).await;
        let started = tokio::time::Instant::now();
        let reply = client.execute(Command::set("k", "2")).await;
        recorded.lock().expect("outcome lock").write_after_idle = Some((reply, started.elapsed()));
        for i in 0..15 {
            let _ = client.execute(Command::set("k", format!("{i}"))).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    });
    step_hosts_until(&mut sim, Duration::from_secs(4))?;
    let Some(leader) = current_leader(&parts) else {
        drop_nodes(&parts);
        return Ok(outcome.lock().expect("outcome lock").clone());
    };
    outcome.lock().expect("outcome lock").leader = Some(leader);
    let before = appends(&parts, leader);
    step_hosts_until(&mut sim, Duration::from_secs(4) + QUIET_WINDOW)?;
    outcome.lock().expect("outcome lock").idle_appends = appends(&parts, leader) - before;
    // Busy from 8 s: count from 8.2 s.
    step_hosts_until(&mut sim, Duration::from_millis(8200))?;
    let before = appends(&parts, leader);
    step_hosts_until(&mut sim, Duration::from_millis(8200) + QUIET_WINDOW)?;
    outcome.lock().expect("outcome lock").busy_appends = appends(&parts, leader) - before;
    // Idle again, then the leader is cut off from its followers.
    step_hosts_until(&mut sim, Duration::from_secs(15))?;
    if let Some(leader) = current_leader(&parts) {
        let followers: Vec<&NodeParts> = parts.iter().filter(|p| p.id != leader).collect();
        let elected = cut_off_until_elected(
            &mut sim,
            &faults,
            leader,
            &followers,
            Duration::from_secs(20),
        )?;
        outcome.lock().expect("outcome lock").elected_after = elected.map(|(_, after)| after);
    }
    drop_nodes(&parts);
    let mut outcome = outcome.lock().expect("outcome lock").clone();
    outcome.trace_hash = trace.hash();
    Ok(outcome)
}

/// What a follower that lost the message carrying its group's commit index learned after
/// ([`lost_commit`]).
#[derive(Debug, Clone, Default)]
pub struct LostCommitOutcome {
    pub old_leader: Option<NodeId>,
    /// The node leadership was handed to.
    pub leader: Option<NodeId>,
    /// The follower cut off from the new leader while the commit of its first entry went out.
    pub follower: Option<NodeId>,
    /// The new leader's first entry (its index).
    pub first_entry: Option<u64>,
    /// `(leader, follower)` applied indexes when the link came back.
    pub applied_at_heal: Option<(u64, u64)>,
    /// The same 3 s later, nobody having written meanwhile.
    pub applied_after: Option<(u64, u64)>,
    /// Whether the new leader still led at the end (the scenario is about a quiet group, not
    /// an election).
    pub leader_kept: bool,
    pub trace_hash: String,
}

/// How long [`lost_commit`] cuts the follower off from the new leader: past the commit of the
/// leader's first entry, the 100 ms the commit is held for entries to carry it
/// (`NodeConfig::commit_hold_ms`) and the one retry of the bare commit after the first send
/// times out (75 ms each); after that openraft's replication stream restarts and sends nothing
/// more until new entries or a heartbeat (cluster swarm seed 157: both sends lost). Shorter
/// than the election timeouts (400 ms), so that the follower does not campaign.
pub const LOST_COMMIT_CUT: Duration = Duration::from_millis(300);

/// An idle group whose leadership is handed over (as the center does to balance leaders): the
/// new leader's first entry (the blank entry of its term) reaches both followers, and then one
/// follower is cut off from the leader for [`LOST_COMMIT_CUT`], so the one message that would
/// tell it that entry committed is lost. Nobody writes; every follower matches the leader's last
/// entry, so the group goes quiet (`larder_storage::quiet`). The follower must still learn the
/// commit once the link is back: it says in its beacon answers that it has not, and the leader
/// keeps heartbeating until it has. With the planted bug `quiet-ignores-lag` it stays an entry
/// behind.
pub fn lost_commit(seed: u64, bugs: Bugs) -> Result<LostCommitOutcome, SimError> {
    let mut config = SimConfig::new(seed, Duration::from_secs(10));
    config.faults = false;
    config.bugs = bugs;
    let (mut sim, trace, faults, parts) = start(&config);
    let mut outcome = LostCommitOutcome::default();
    // The hand-over awaits openraft, so it runs on a host of its own: `(old leader, target)`,
    // set by the harness before `hand_over_at`.
    let hand_over_at = Duration::from_secs(3);
    type HandOver = Option<(Arc<StorageNode<SimEnv>>, NodeId)>;
    let hand_over: Arc<Mutex<HandOver>> = Arc::default();
    {
        let hand_over = hand_over.clone();
        sim.client(host_name(client_id(1)), async move {
            tokio::time::sleep(hand_over_at.saturating_sub(sim_now())).await;
            let Some((node, to)) = hand_over.lock().expect("hand-over lock").take() else {
                return Ok(());
            };
            let raft = node.raft(GROUP).map_err(|error| error.to_string())?;
            raft.trigger()
                .transfer_leader(to)
                .await
                .map_err(|error| error.to_string())?;
            Ok(())
        });
    }
    let nodes = config.node_ids();
    let Some(old) = await_leader(&mut sim, &parts, Duration::from_secs(2))? else {
        drop_nodes(&parts);
        return Ok(outcome);
    };
    outcome.old_leader = Some(old);
    let mut others = nodes.iter().copied().filter(|&id| id != old);
    let (Some(leader), Some(follower)) = (others.next(), others.next()) else {
        drop_nodes(&parts);
        return Ok(outcome);
    };
    let node_of = |id: NodeId| parts.iter().find(|p| p.id == id).and_then(|p| p.node());
    let (Some(old_node), Some(leader_node), Some(follower_node)) =
        (node_of(old), node_of(leader), node_of(follower))
    else {
        drop_nodes(&parts);
        return Ok(outcome);
    };
    let last_before = old_node.last_log_index(GROUP).unwrap_or(0);
    *hand_over.lock().expect("hand-over lock") = Some((old_node, leader));
    step_hosts_until(&mut sim, hand_over_at)?;
    // Cut the follower off from the new leader as soon as it holds the leader's first entry.
    let limit = hand_over_at + Duration::from_secs(2);
    while sim.elapsed() < limit {
        let next = sim.elapsed() + Duration::from_millis(1);
        step_hosts_until(&mut sim, next)?;
        let last = leader_node.last_log_index(GROUP).unwrap_or(0);
        if leader_node.is_leader(GROUP)
            && last > last_before
            && follower_node.last_log_index(GROUP) == Some(last)
        {
            outcome.first_entry = Some(last);
            faults.update(|state| {
                state.blocked.insert((leader, follower));
            });
            break;
        }
    }
    outcome.leader = Some(leader);
    outcome.follower = Some(follower);
    if outcome.first_entry.is_some() {
        let heal = sim.elapsed() + LOST_COMMIT_CUT;
        step_hosts_until(&mut sim, heal)?;
        faults.update(|state| state.blocked.clear());
        let applied = |node: &StorageNode<SimEnv>| node.applied_index(GROUP).unwrap_or(0);
        outcome.applied_at_heal = Some((applied(&leader_node), applied(&follower_node)));
        step_hosts_until(&mut sim, heal + Duration::from_secs(3))?;
        outcome.applied_after = Some((applied(&leader_node), applied(&follower_node)));
        outcome.leader_kept = leader_node.is_leader(GROUP);
    }
    drop((leader_node, follower_node));
    drop_nodes(&parts);
    outcome.trace_hash = trace.hash();
    Ok(outcome)
}

/// What a pipelined burst through a proxy answered, and what the same commands answered one
/// at a time (on keys of their own).
#[derive(Debug, Clone, Default)]
pub struct PipelineOutcome {
    pub pipelined: Vec<Frame>,
    pub one_by_one: Vec<Frame>,
    pub trace_hash: String,
}

/// A fault-free 20 s cluster of `groups` slot groups behind one proxy, with `bugs` planted: the
/// set-up of the scenarios that talk RESP to a proxy.
fn one_proxy_config(seed: u64, groups: u64, bugs: Bugs) -> SimConfig {
    let mut config = SimConfig::new(seed, Duration::from_secs(20));
    config.faults = false;
    config.groups = groups;
    config.proxies = 1;
    config.bugs = bugs;
    config
}

/// The commands of [`pipelined_burst`] on keys named after `prefix`: strings, counters, lists
/// and hashes spread over the slot groups, written and read in rounds, with commands the
/// proxy answers alone in between (`PING`, an `MGET` across groups, `MULTI … EXEC`).
fn burst_commands(prefix: &str) -> Vec<Vec<bytes::Bytes>> {
    let mut lines = Vec::new();
    for round in 0..5 {
        for i in 0..6 {
            let (s, c, l, h) = (
                format!("{prefix}s{i}"),
                format!("{prefix}c{i}"),
                format!("{prefix}l{i}"),
                format!("{prefix}h{i}"),
            );
            match round {
                0 => {
                    lines.push(format!("SET {s} v{i}"));
                    lines.push(format!("RPUSH {l} a{i} b{i}"));
                }
                1 => {
                    lines.push(format!("APPEND {s} -x"));
                    lines.push(format!("LPUSH {l} z{i}"));
                    lines.push(format!("HSET {h} f{i} {i}"));
                    lines.push(format!("INCR {c}"));
                }
                2 => {
                    lines.push(format!("GET {s}"));
                    lines.push(format!("LRANGE {l} 0 -1"));
                    lines.push(format!("HGET {h} f{i}"));
                    lines.push(format!("INCRBY {c} {i}"));
                }
                3 => {
                    lines.push(format!("INCR {s}"));
                    lines.push(format!("LPOP {l}"));
                    lines.push(format!("RPOP {l}"));
                    lines.push(format!("GET {l}"));
                }
                _ => {
                    lines.push(format!("DEL {s}"));
                    lines.push(format!("GET {s}"));
                    lines.push(format!("LLEN {l}"));
                    lines.push(format!("GET {c}"));
                }
            }
        }
        match round {
            1 => lines.push("PING".into()),
            2 => lines.push(format!("MGET {prefix}s0 {prefix}s3 {prefix}s5")),
            3 => {
                lines.push("MULTI".into());
                lines.push(format!("INCR {prefix}c1"));
                lines.push("EXEC".into());
            }
            _ => {}
        }
    }
    lines
        .iter()
        .map(|line| {
            line.split(' ')
                .map(|word| bytes::Bytes::copy_from_slice(word.as_bytes()))
                .collect()
        })
        .collect()
}

/// A client sends [`burst_commands`] to a proxy over four slot groups as one pipeline (one
/// write, then every reply), then the same commands on other keys one request at a time. The
/// proxy runs the pipeline's commands group by group, several to an entry; the answers must
/// be those of the one-at-a-time run, in order.
pub fn pipelined_burst(seed: u64, bugs: Bugs) -> Result<PipelineOutcome, SimError> {
    let config = one_proxy_config(seed, 4, bugs);
    let (mut sim, trace, faults, parts) = start(&config);
    let points = crate::points::PointTable::default();
    crate::run::register_proxies(&mut sim, &config, &trace, &faults, &points);
    let outcome: Arc<Mutex<PipelineOutcome>> = Arc::default();
    let recorded = outcome.clone();
    sim.client(host_name(client_id(1)), async move {
        let proxy = host_name(crate::run::proxy_id(0));
        let mut stream =
            turmoil::net::TcpStream::connect((proxy.as_str(), crate::workload::PROXY_PORT)).await?;
        let mut buffer = Vec::new();
        let request = |commands: &[Vec<bytes::Bytes>]| {
            let mut bytes = Vec::new();
            for command in commands {
                resp::encode_request(command, &mut bytes);
            }
            bytes
        };
        // Until every group has a leader and the proxy a route to it.
        for attempt in 0.. {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut ready = true;
            for i in 0..8 {
                let set = request(&[vec![
                    bytes::Bytes::from_static(b"SET"),
                    bytes::Bytes::from(format!("warm{i}")),
                    bytes::Bytes::from_static(b"1"),
                ]]);
                let frame = larder_proxy::round_trip(&mut stream, &mut buffer, &set).await?;
                ready &= frame == Frame::Simple("OK".into());
            }
            if ready || attempt > 40 {
                break;
            }
        }
        let pipelined_commands = burst_commands("p:");
        let bytes = request(&pipelined_commands);
        let mut pipelined = vec![larder_proxy::round_trip(&mut stream, &mut buffer, &bytes).await?];
        for _ in 1..pipelined_commands.len() {
            pipelined.push(larder_proxy::round_trip(&mut stream, &mut buffer, &[]).await?);
        }
        let mut one_by_one = Vec::new();
        for command in burst_commands("o:") {
            let bytes = request(&[command]);
            one_by_one.push(larder_proxy::round_trip(&mut stream, &mut buffer, &bytes).await?);
        }
        let mut outcome = recorded.lock().expect("outcome lock");
        outcome.pipelined = pipelined;
        outcome.one_by_one = one_by_one;
        Ok(())
    });
    finish(&mut sim)?;
    drop_nodes(&parts);
    let mut outcome = outcome.lock().expect("outcome lock").clone();
    outcome.trace_hash = trace.hash();
    Ok(outcome)
}

/// What a chain of blocked `BLMOVE`s answered after one push fed it ([`blocking_chain`]).
#[derive(Debug, Clone, Default)]
pub struct BlockingChainOutcome {
    /// The push's reply.
    pub push: Option<Frame>,
    /// `LRANGE` of the middle list and of the last, read by the pusher right after its reply.
    pub middle: Option<Frame>,
    pub last: Option<Frame>,
    /// The two blocked clients' replies.
    pub first_link: Option<Frame>,
    pub second_link: Option<Frame>,
    /// Passes of each fault point.
    pub hits: BTreeMap<larder_core::env::FaultPoint, u64>,
    pub trace_hash: String,
}

/// One client blocks in `BLMOVE {c}l1 {c}l2`, a second in `BLMOVE {c}l2 {c}l3`, and a third
/// pushes one element to `{c}l1`, then reads `{c}l2` and `{c}l3`. As in Redis, the push's
/// reply must follow the whole chain: the element is in `{c}l3`, `{c}l2` is empty.
///
/// `aimed` arms two delays at the proxy's blocking points: the writer waits at
/// `hand_over_starting`, so the first client's own poll takes the element first; that
/// client then holds the second one at `hand_over_pop` while it hands on its push. The writer
/// must wait for it (`Bug::BlockedChainReplyEarly` does not).
pub fn blocking_chain(
    seed: u64,
    bugs: Bugs,
    aimed: bool,
) -> Result<BlockingChainOutcome, SimError> {
    use larder_core::env::FaultPoint;

    use crate::points::{PointAction, PointTable};

    let config = one_proxy_config(seed, 2, bugs);
    let (mut sim, trace, faults, parts) = start(&config);
    let points = PointTable::default();
    if aimed {
        // Longer than the blocked client's longest wait between polls (50 ms) and its pop.
        let writer_wait = Duration::from_millis(300);
        points.arm(
            FaultPoint::HandOverStarting,
            None,
            PointAction::Delay(writer_wait),
        );
        points.arm(
            FaultPoint::HandOverPop,
            None,
            PointAction::Delay(Duration::from_secs(1)),
        );
    }
    crate::run::register_proxies(&mut sim, &config, &trace, &faults, &points);
    let outcome: Arc<Mutex<BlockingChainOutcome>> = Arc::default();
    let recorded = outcome.clone();
    sim.client(host_name(client_id(1)), async move {
        let proxy = host_name(crate::run::proxy_id(0));
        let connect =
            || turmoil::net::TcpStream::connect((proxy.clone(), crate::workload::PROXY_PORT));
        let request = |words: &[&str]| {
            let command: Vec<bytes::Bytes> = words
                .iter()
                .map(|word| bytes::Bytes::copy_from_slice(word.as_bytes()))
                .collect();
            let mut bytes = Vec::new();
            resp::encode_request(&command, &mut bytes);
            bytes
        };
        let mut stream = connect().await?;
        let mut buffer = Vec::new();
        // Until the group of the chain's slot has a leader and the proxy a route to it.
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let set = request(&["SET", "{c}ready", "1"]);
            if larder_proxy::round_trip(&mut stream, &mut buffer, &set).await?
                == Frame::Simple("OK".into())
            {
                break;
            }
        }
        let blocked = |words: Vec<u8>| {
            let connecting = connect();
            tokio::spawn(async move {
                let mut stream = connecting.await?;
                let mut buffer = Vec::new();
                larder_proxy::round_trip(&mut stream, &mut buffer, &words).await
            })
        };
        let first = blocked(request(&["BLMOVE", "{c}l1", "{c}l2", "LEFT", "RIGHT", "0"]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = blocked(request(&["BLMOVE", "{c}l2", "{c}l3", "LEFT", "RIGHT", "0"]));
        // Both blocked, polling at their longest interval.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let push = request(&["RPUSH", "{c}l1", "x"]);
        let push = larder_proxy::round_trip(&mut stream, &mut buffer, &push).await?;
        let middle = request(&["LRANGE", "{c}l2", "0", "-1"]);
        let middle = larder_proxy::round_trip(&mut stream, &mut buffer, &middle).await?;
        let last = request(&["LRANGE", "{c}l3", "0", "-1"]);
        let last = larder_proxy::round_trip(&mut stream, &mut buffer, &last).await?;
        let links = tokio::time::timeout(Duration::from_secs(10), async {
            (first.await, second.await)
        })
        .await;
        let mut outcome = recorded.lock().expect("outcome lock");
        outcome.push = Some(push);
        outcome.middle = Some(middle);
        outcome.last = Some(last);
        if let Ok((Ok(first), Ok(second))) = links {
            outcome.first_link = first.ok();
            outcome.second_link = second.ok();
        }
        Ok(())
    });
    finish(&mut sim)?;
    drop_nodes(&parts);
    let mut outcome = outcome.lock().expect("outcome lock").clone();
    outcome.hits = points.hits();
    outcome.trace_hash = trace.hash();
    Ok(outcome)
}

/// What a group answered about a lock whose lease a leader with a fast clock saw end
/// ([`lease_seen_ended`]).
#[derive(Debug, Clone, Default)]
pub struct LeaseSeenEndedOutcome {
    /// The grant's token.
    pub token: Option<i64>,
    /// The leader whose wall clock jumped 20 s ahead, and its `LOCK.INFO` answer.
    pub fast_leader: Option<NodeId>,
    pub info: Option<Result<Reply, ClientError>>,
    /// The leader elected once the fast one was cut off, and its answer to a fence with the
    /// token, inside the lease by every clock but the fast one.
    pub new_leader: Option<NodeId>,
    pub fence_after: Option<Result<Reply, ClientError>>,
    pub trace_hash: String,
}

/// A lock granted for 8 s; its group's leader's wall clock jumps 20 s ahead, and a client asks
/// it `LOCK.INFO`: by that clock the lease has ended, so the lock shows free. The leader is
/// then cut off from its peers and a follower, whose clock is right, leads; the client fences
/// with the grant's token. A lease a client saw end must stay ended (ARCHITECTURE.md,
/// "Expiry"): the fence must fail. It passes when the leader answered by its clock without
/// putting the lease end in the log (the planted bug `lease-end-unlogged`).
pub fn lease_seen_ended(seed: u64, bugs: Bugs) -> Result<LeaseSeenEndedOutcome, SimError> {
    let mut config = SimConfig::new(seed, Duration::from_secs(12));
    config.faults = false;
    config.bugs = bugs;
    let (mut sim, trace, faults, parts) = start(&config);
    let nodes = config.node_ids();
    let outcome: Arc<Mutex<LeaseSeenEndedOutcome>> = Arc::default();
    let (jump_at, info_at, cut_at) = (
        Duration::from_millis(2_500),
        Duration::from_millis(3_000),
        Duration::from_millis(3_500),
    );
    let host = client_id(1);
    {
        let (net, outcome, nodes) = (
            SimNet::new(host, faults.clone(), derive_seed(seed, 51), trace.clone()),
            outcome.clone(),
            nodes.clone(),
        );
        sim.client(host_name(host), async move {
            let words = |words: &[&str]| -> Result<Command, String> {
                let args: Vec<bytes::Bytes> = words
                    .iter()
                    .map(|word| bytes::Bytes::copy_from_slice(word.as_bytes()))
                    .collect();
                Command::parse(&args).map_err(|error| error.to_string())
            };
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut client = Client::new(
                net.clone(),
                SimClock::new(),
                GROUP,
                nodes.clone(),
                patient(),
            );
            let Ok(Reply::Int(token)) = client
                .execute(words(&["LOCK.ACQUIRE", "l", "a", "8000"])?)
                .await
            else {
                return Err("the grant failed".into());
            };
            outcome.lock().expect("outcome lock").token = Some(token);
            tokio::time::sleep(info_at.saturating_sub(sim_now())).await;
            let Some(fast) = outcome.lock().expect("outcome lock").fast_leader else {
                return Ok(());
            };
            let once = ClientConfig {
                request_timeout: Duration::from_millis(1500),
                attempts_max: 1,
                ..ClientConfig::default()
            };
            let mut at_fast = Client::new(net.clone(), SimClock::new(), GROUP, vec![fast], once);
            let info = at_fast.execute(words(&["LOCK.INFO", "l"])?).await;
            outcome.lock().expect("outcome lock").info = Some(info);
            // Until a follower leads, well inside the lease by its clock (it ends at about 10 s).
            let new = loop {
                if let Some(new) = outcome.lock().expect("outcome lock").new_leader {
                    break new;
                }
                if sim_now() > Duration::from_secs(8) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let mut at_new = Client::new(net, SimClock::new(), GROUP, vec![new], patient());
            let fence = at_new
                .execute(words(&["LOCK.FENCE", "l", &token.to_string()])?)
                .await;
            outcome.lock().expect("outcome lock").fence_after = Some(fence);
            Ok(())
        });
    }
    let fast = await_leader(&mut sim, &parts, jump_at)?;
    outcome.lock().expect("outcome lock").fast_leader = fast;
    let Some(fast) = fast else {
        finish(&mut sim)?;
        drop_nodes(&parts);
        return Ok(outcome.lock().expect("outcome lock").clone());
    };
    if let Some(part) = parts.iter().find(|part| part.id == fast) {
        part.clock.jump_wall_ms(20_000);
    }
    step_until(&mut sim, cut_at)?;
    cut_off(
        &faults,
        fast,
        nodes.iter().copied().filter(|&id| id != fast),
    );
    while sim.elapsed() < Duration::from_secs(8) {
        let next = sim.elapsed() + Duration::from_millis(10);
        if step_until(&mut sim, next)? {
            break;
        }
        let new = parts
            .iter()
            .filter(|part| part.id != fast)
            .find(|part| part.leads(GROUP))
            .map(|part| part.id);
        if new.is_some() {
            outcome.lock().expect("outcome lock").new_leader = new;
            break;
        }
    }
    finish(&mut sim)?;
    drop_nodes(&parts);
    let mut outcome = outcome.lock().expect("outcome lock").clone();
    outcome.trace_hash = trace.hash();
    Ok(outcome)
}
