//! The storage node: hosts Raft-replicated slot groups over one environment and answers
//! [`Message`]s from peers and clients.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use larder_core::env::{Clock, Disk, Env, Handler, Net, NetError, Space, WriteBatch, timeout};
use larder_core::kv::{Command, Reply};
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;
use openraft::{ChangeMembers, Config, EmptyNode, Precondition, ServerState, SnapshotPolicy};

use crate::addresses::LearnedAddresses;
use crate::center::CENTER_GROUP;
use crate::raft::group_commit::GroupCommitDisk;
use crate::raft::log_store::DiskLogStore;
use crate::raft::network::RaftNet;
use crate::raft::state_machine::{DiskStateMachine, wipe_group};
use crate::raft::{Raft, Request, SessionSeq, Snapshot, TypeConfig};
use crate::rpc::{
    AdminResponse, CenterResponse, ClientRequest, ClientResponse, GroupStatus, Heartbeat,
    HeartbeatAck, MembershipStatus, Message, RoutingAnswer, decode, encode,
};

/// Timing and size knobs of a storage node. Defaults suit a LAN; the simulator uses the same.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeConfig {
    pub id: NodeId,
    /// The slot groups this node hosts a replica of when it first starts. Once the center has
    /// added or removed a group at runtime, the set recorded on disk takes precedence.
    pub groups: Vec<GroupId>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    /// Build a snapshot (and purge the log below it) after this many new entries.
    pub snapshot_logs_since_last: u64,
    /// Entries kept below a snapshot, so briefly lagging followers catch up from the log.
    pub snapshot_logs_kept: u64,
    /// Longest a client command may take on this node before it answers
    /// `Unavailable`/`Indeterminate`.
    pub request_timeout_ms: u64,
    /// **Deliberately broken, for testing the tests**: a node that believes it leads answers
    /// reads from its local state without the read-index round, so a deposed leader serves
    /// stale reads. The simulator's checker must catch this (`sim/tests/broken_variant.rs`).
    /// Never set in production.
    #[serde(default)]
    pub unsafe_local_reads: bool,
    /// The center replicas this node sends heartbeats to. Empty (the default): no center, no
    /// heartbeat task, groups are formed by whoever starts the node (the simulator, `larder up`).
    #[serde(default)]
    pub centers: Vec<NodeId>,
    /// Interval between heartbeats to the center. The center declares a node down only after
    /// several intervals without one (`CenterConfig::missed_heartbeats_max`).
    #[serde(default = "default_center_heartbeat_ms")]
    pub center_heartbeat_ms: u64,
    /// The address this node is reachable at, as registered with the center (opaque to the
    /// node; `host:port` on the real network).
    #[serde(default)]
    pub address: String,
}

fn default_center_heartbeat_ms() -> u64 {
    500
}

impl NodeConfig {
    pub fn new(id: NodeId, groups: Vec<GroupId>) -> Self {
        NodeConfig {
            id,
            groups,
            heartbeat_ms: 100,
            election_timeout_ms_min: 400,
            election_timeout_ms_max: 800,
            snapshot_logs_since_last: 2000,
            snapshot_logs_kept: 200,
            request_timeout_ms: 2000,
            unsafe_local_reads: false,
            centers: Vec::new(),
            center_heartbeat_ms: default_center_heartbeat_ms(),
            address: String::new(),
        }
    }

    fn raft_config(&self, group: GroupId) -> Result<Config, NodeError> {
        let config = Config {
            cluster_name: format!("larder-group-{group}"),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms_min,
            election_timeout_max: self.election_timeout_ms_max,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.snapshot_logs_kept,
            // A node coming back from a partition asks before bumping its term, so it cannot
            // depose a healthy leader (sharkstore's pre-vote).
            enable_pre_vote: Some(true),
            // openraft restores a restarted leader's leadership without an election by
            // default. Our state machine does not sync on apply and the committed index is not
            // persisted, so a restored leader can confirm leadership with a quorum and then
            // serve a read-index read from a state machine behind writes it had acknowledged
            // (a stale read; simulation seeds 22 and 81 of the cluster's default plans: a
            // group's leader and its last follower crash after the third replica was
            // destroyed, both restart, and the old leader answers at once). An election makes
            // the new leader commit an entry of its own term before it serves reads.
            enable_leader_restore: Some(false),
            ..Default::default()
        };
        config.validate().map_err(|e| NodeError::Config {
            reason: e.to_string(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid raft configuration: {reason}")]
    Config { reason: String },
    #[error("storage failure in group {group}: {source}")]
    Storage {
        group: GroupId,
        source: std::io::Error,
    },
    #[error("storage failure reading or writing the set of hosted groups: {source}")]
    HostedGroups { source: std::io::Error },
    #[error("raft of group {group} failed: {reason}")]
    Raft { group: GroupId, reason: String },
    #[error("group {group} is not hosted on this node")]
    UnknownGroup { group: GroupId },
    #[error("this node does not lead group {group} (leader hint: {leader_hint:?})")]
    NotLeader {
        group: GroupId,
        leader_hint: Option<NodeId>,
    },
    #[error("membership change of group {group} does not fit its membership: {reason}")]
    MembershipConflict { group: GroupId, reason: String },
    #[error(transparent)]
    Net(#[from] NetError),
}

/// The disk every group of a node writes through: the environment's disk behind the node's
/// group-commit task.
pub type NodeDisk<E> = GroupCommitDisk<<E as Env>::Disk>;

/// Key in [`Space::Meta`] of the set of groups the node hosts, once it differs from
/// [`NodeConfig::groups`] (a group added or removed at runtime); postcard `Vec<GroupId>`.
const HOSTED_GROUPS_KEY: &[u8] = b"hosted-groups";

/// Proposals of one voter change whose precondition (the membership it was computed from) may
/// be found stale before the replace gives up.
const MEMBERSHIP_CHANGE_ATTEMPTS_MAX: u32 = 2;

/// Heartbeat rounds wait at least this long for a center's answer, however short the interval.
const HEARTBEAT_CALL_MS_MIN: u64 = 100;

struct Group<D: Disk> {
    raft: Raft<D>,
    state: DiskStateMachine<D>,
}

/// A storage node: one replica of each of its slot groups.
pub struct StorageNode<E: Env> {
    env: E,
    config: NodeConfig,
    /// The node's disk behind its group-commit task; groups added later share it too.
    disk: NodeDisk<E>,
    /// Hosted groups. Behind a lock because the center adds and removes groups at runtime; the
    /// lock is held only to clone an `Arc` out, never across an `await`.
    groups: RwLock<BTreeMap<GroupId, Arc<Group<NodeDisk<E>>>>>,
    /// Serialises [`StorageNode::add_group`] and [`StorageNode::remove_group`], so the hosted set
    /// on disk and in memory change together.
    hosting: futures::lock::Mutex<()>,
    /// The newest routing table learned from the center (heartbeat answers); epochs only grow.
    routing: RwLock<Option<Arc<RoutingTable>>>,
    /// The node addresses the last heartbeat answer brought, and the hook they go to
    /// ([`StorageNode::on_addresses`]).
    addresses: LearnedAddresses,
    /// Set by [`StorageNode::shutdown`]; ends the heartbeat task.
    stopped: AtomicBool,
    /// Wakes the heartbeat task early: a client routed by a newer table than this node's, so
    /// the node fetches it now rather than at the next interval.
    heartbeat_now: Arc<tokio::sync::Notify>,
    /// The last timestamp given to a log entry; stamps never go backwards on one leader even
    /// when its wall clock jumps back.
    last_stamp_ms: AtomicU64,
}

fn raft_error(group: GroupId, error: impl std::fmt::Display) -> NodeError {
    NodeError::Raft {
        group,
        reason: error.to_string(),
    }
}

/// Opens `group`'s log and state from `disk` and starts its Raft.
async fn open_group<E: Env>(
    env: &E,
    config: &NodeConfig,
    disk: &NodeDisk<E>,
    group: GroupId,
) -> Result<Group<NodeDisk<E>>, NodeError> {
    let raft_config = Arc::new(config.raft_config(group)?);
    let state = DiskStateMachine::open(disk.clone(), group)
        .await
        .map_err(|source| NodeError::Storage { group, source })?;
    let log = DiskLogStore::new(disk.clone(), group);
    let net = RaftNet::new(env.net().clone(), group);
    let raft = Raft::new(config.id, raft_config, net, log, state.clone())
        .await
        .map_err(|e| raft_error(group, e))?;
    Ok(Group { raft, state })
}

impl<E: Env> StorageNode<E> {
    /// Opens every hosted group's log and state from the disk and starts its Raft. The hosted
    /// groups are [`NodeConfig::groups`], or, once the center has added or removed one, the
    /// set recorded on disk. With [`NodeConfig::centers`] set, also starts the heartbeat task.
    pub async fn start(env: E, config: NodeConfig) -> Result<Arc<Self>, NodeError> {
        // One committer for every group of the node: their log appends share syncs.
        let disk = GroupCommitDisk::new(env.disk().clone());
        let storage = |source: larder_core::env::DiskError| NodeError::HostedGroups {
            source: source.into(),
        };
        let hosted: BTreeSet<GroupId> = match disk
            .get(Space::Meta, HOSTED_GROUPS_KEY)
            .await
            .map_err(storage)?
        {
            Some(bytes) => decode::<Vec<GroupId>>(&bytes)
                .map_err(|source| NodeError::HostedGroups { source })?
                .into_iter()
                .collect(),
            None => config.groups.iter().copied().collect(),
        };
        let mut groups = BTreeMap::new();
        for group in hosted {
            let opened = open_group(&env, &config, &disk, group).await?;
            groups.insert(group, Arc::new(opened));
        }
        let node = Arc::new(StorageNode {
            env,
            config,
            disk,
            groups: RwLock::new(groups),
            hosting: futures::lock::Mutex::new(()),
            routing: RwLock::new(None),
            addresses: LearnedAddresses::default(),
            stopped: AtomicBool::new(false),
            heartbeat_now: Arc::new(tokio::sync::Notify::new()),
            last_stamp_ms: AtomicU64::new(0),
        });
        if !node.config.centers.is_empty() {
            // The task holds a weak reference: dropping the node ends it.
            tokio::spawn(heartbeat_loop(
                Arc::downgrade(&node),
                node.heartbeat_now.clone(),
            ));
        }
        Ok(node)
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub(crate) fn env(&self) -> &E {
        &self.env
    }

    fn group(&self, group: GroupId) -> Result<Arc<Group<NodeDisk<E>>>, NodeError> {
        self.groups
            .read()
            .expect("groups lock")
            .get(&group)
            .cloned()
            .ok_or(NodeError::UnknownGroup { group })
    }

    fn all_groups(&self) -> Vec<(GroupId, Arc<Group<NodeDisk<E>>>)> {
        self.groups
            .read()
            .expect("groups lock")
            .iter()
            .map(|(id, group)| (*id, group.clone()))
            .collect()
    }

    /// The groups this node hosts now, in id order.
    pub fn groups(&self) -> Vec<GroupId> {
        self.groups
            .read()
            .expect("groups lock")
            .keys()
            .copied()
            .collect()
    }

    /// Whether this node hosts a replica of `group`.
    pub fn hosts(&self, group: GroupId) -> bool {
        self.groups
            .read()
            .expect("groups lock")
            .contains_key(&group)
    }

    /// The Raft handle of `group` (metrics, membership). A clone: it stays usable even if the
    /// group is removed meanwhile (its calls then fail as on a stopped Raft).
    pub fn raft(&self, group: GroupId) -> Result<Raft<NodeDisk<E>>, NodeError> {
        Ok(self.group(group)?.raft.clone())
    }

    async fn save_hosted(&self, hosted: Vec<GroupId>) -> Result<(), NodeError> {
        let mut batch = WriteBatch::new();
        batch.put(Space::Meta, HOSTED_GROUPS_KEY.to_vec(), encode(&hosted));
        self.disk
            .write(batch, true)
            .await
            .map_err(|e| NodeError::HostedGroups { source: e.into() })
    }

    /// Starts hosting `group` with an empty replica, unless it is hosted already (then this is a
    /// no-op and returns `false`). The replica is uninitialized: it becomes a learner when the
    /// group's leader adds it, or is formed with [`StorageNode::initialize`]. Whatever an
    /// earlier replica of the group left on disk is wiped first.
    pub async fn add_group(&self, group: GroupId) -> Result<bool, NodeError> {
        let _hosting = self.hosting.lock().await;
        if self.hosts(group) {
            return Ok(false);
        }
        wipe_group(&self.disk, group)
            .await
            .map_err(|source| NodeError::Storage { group, source })?;
        let opened = open_group(&self.env, &self.config, &self.disk, group).await?;
        let mut hosted = self.groups();
        hosted.push(group);
        hosted.sort_unstable();
        // Recorded only after the Raft opened: a crash in between leaves an unrecorded group,
        // whose leftovers the next add wipes.
        if let Err(error) = self.save_hosted(hosted).await {
            let _ = opened.raft.shutdown().await;
            return Err(error);
        }
        self.groups
            .write()
            .expect("groups lock")
            .insert(group, Arc::new(opened));
        tracing::info!(node = self.id(), group, "hosting a new replica");
        Ok(true)
    }

    /// Stops hosting `group` and deletes its data; returns `false` if it was not hosted. Only
    /// for a replica that is no longer a member of its group (the center checks that).
    pub async fn remove_group(&self, group: GroupId) -> Result<bool, NodeError> {
        let _hosting = self.hosting.lock().await;
        let Some(removed) = self.groups.write().expect("groups lock").remove(&group) else {
            return Ok(false);
        };
        self.save_hosted(self.groups()).await?;
        let _ = removed.raft.shutdown().await;
        wipe_group(&self.disk, group)
            .await
            .map_err(|source| NodeError::Storage { group, source })?;
        tracing::info!(node = self.id(), group, "removed a replica");
        Ok(true)
    }

    /// Makes `voters` the first membership of `group`. Call on one node of a new group only;
    /// a group that is already initialized is left as it is.
    pub async fn initialize(
        &self,
        group: GroupId,
        voters: &BTreeSet<NodeId>,
    ) -> Result<(), NodeError> {
        let raft = self.raft(group)?;
        if raft
            .is_initialized()
            .await
            .map_err(|e| raft_error(group, e))?
        {
            return Ok(());
        }
        let members: BTreeMap<NodeId, EmptyNode> =
            voters.iter().map(|&id| (id, EmptyNode {})).collect();
        match raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another initializer won the race, or state arrived from a peer: both fine.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(raft_error(group, e)),
        }
    }

    /// Replaces voter `old` of `group` with `new`, learner first: `new` receives the log (or a
    /// snapshot) as a non-voting learner, and becomes a voter only once it has caught up, so
    /// the group never depends on a member that has no data. Call on the leader (elsewhere it
    /// fails with [`NodeError::NotLeader`]).
    ///
    /// Idempotent, because the center retries after a lost answer: judged by the **committed**
    /// membership (an appended one may still be rolled back), a replace that is done succeeds at
    /// once, and one cut short in joint consensus (a leader change between the two steps) is
    /// finished. The voter change is guarded by the membership it was computed from
    /// (`Precondition::LastMembershipLogId`), so two concurrent changes cannot combine into one
    /// that drops two voters.
    pub async fn replace_voter(
        &self,
        group: GroupId,
        old: NodeId,
        new: NodeId,
    ) -> Result<(), NodeError> {
        let raft = self.raft(group)?;
        if !self.is_leader(group) {
            return Err(NodeError::NotLeader {
                group,
                leader_hint: self.leader_of(group),
            });
        }
        let to_error = |e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                NodeError::NotLeader {
                    group,
                    leader_hint: forward.leader_id,
                }
            }
            other => raft_error(group, other),
        };
        let conflict = |reason: String| NodeError::MembershipConflict { group, reason };
        // (effective membership, its last voter set, the last committed voter set, joint?)
        let memberships = || {
            let metrics = raft.metrics();
            let metrics = metrics.borrow_watched();
            let effective = metrics.membership_config.as_ref().clone();
            let committed = metrics.committed_membership_config.get_joint_config();
            let target: BTreeSet<NodeId> = effective
                .get_joint_config()
                .last()
                .cloned()
                .unwrap_or_default();
            let committed_target: BTreeSet<NodeId> = committed.last().cloned().unwrap_or_default();
            (effective, target, committed_target, committed.len() > 1)
        };
        let change = |voters: BTreeSet<NodeId>, observed: &crate::raft::StoredMembership| {
            raft.change_membership_if(
                ChangeMembers::ReplaceAllVoters(voters),
                false,
                [Precondition::LastMembershipLogId {
                    last_membership_log_id: *observed.log_id(),
                }],
            )
        };
        let (effective, _, committed, joint) = memberships();
        match (committed.contains(&old), committed.contains(&new)) {
            (false, true) if !joint => return Ok(()),
            (false, true) => {
                // Finish the change towards its target voter set.
                change(committed, &effective).await.map_err(to_error)?;
                return Ok(());
            }
            (false, false) => {
                return Err(conflict(format!(
                    "neither {old} nor {new} is a voter of {committed:?}"
                )));
            }
            (true, true) if old != new => {
                return Err(conflict(format!(
                    "{old} and {new} are both voters of {committed:?}"
                )));
            }
            (true, true) => return Ok(()),
            (true, false) => {}
        }
        raft.add_learner(new, EmptyNode {}, true)
            .await
            .map_err(to_error)?;
        // Computed from the membership as it is now (the learner's entry included); tried again
        // once if that membership moved on before the change was proposed (the metrics the
        // observation comes from may trail the Raft core by a moment).
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (observed, mut voters, _, _) = memberships();
            if !voters.remove(&old) {
                return Err(conflict(format!(
                    "{old} left the voters while {new} caught up"
                )));
            }
            voters.insert(new);
            match change(voters, &observed).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::PreconditionFailed(_)))
                    if attempts < MEMBERSHIP_CHANGE_ATTEMPTS_MAX => {}
                Err(error) => return Err(to_error(error)),
            }
        }
    }

    /// True when this node leads `group`.
    pub fn is_leader(&self, group: GroupId) -> bool {
        self.group(group)
            .is_ok_and(|g| g.raft.metrics().borrow_watched().state == ServerState::Leader)
    }

    /// The node this replica believes leads `group`, if it hosts it and knows one.
    pub fn leader_of(&self, group: GroupId) -> Option<NodeId> {
        self.group(group)
            .ok()
            .and_then(|g| g.raft.metrics().borrow_watched().current_leader)
    }

    /// What this node knows of each group it hosts (the body of a heartbeat).
    pub fn group_statuses(&self) -> Vec<GroupStatus> {
        self.all_groups()
            .into_iter()
            .map(|(group, handle)| {
                let (is_leader, term, initialized) = {
                    let metrics = handle.raft.metrics();
                    let metrics = metrics.borrow_watched();
                    (
                        metrics.state == ServerState::Leader,
                        metrics.current_term,
                        metrics.last_log_index.is_some()
                            || metrics.membership_config.log_id().is_some(),
                    )
                };
                // The applied membership is committed, hence never rolled back.
                let applied = handle.state.applied();
                let membership = applied.membership.log_id().map(|log_id| MembershipStatus {
                    index: log_id.index(),
                    voters: applied.membership.voter_ids().collect(),
                    configs: applied
                        .membership
                        .get_joint_config()
                        .iter()
                        .map(|config| config.iter().copied().collect())
                        .collect(),
                    learners: applied.membership.membership().learner_ids().collect(),
                });
                GroupStatus {
                    group,
                    is_leader,
                    term,
                    last_applied: applied.last_applied.map_or(0, |id| id.index()),
                    initialized,
                    membership,
                }
            })
            .collect()
    }

    /// The newest routing table this node has learned from the center, if any.
    pub fn routing(&self) -> Option<Arc<RoutingTable>> {
        self.routing.read().expect("routing lock").clone()
    }

    /// Keeps `table` if it is valid and newer than the one held; returns whether it did.
    pub fn offer_routing(&self, table: RoutingTable) -> bool {
        if let Err(error) = table.check() {
            tracing::warn!(%error, "ignoring an invalid routing table");
            return false;
        }
        let mut current = self.routing.write().expect("routing lock");
        if current.as_ref().is_some_and(|t| !table.is_newer_than(t)) {
            return false;
        }
        *current = Some(Arc::new(table));
        true
    }

    /// Calls `hook(node, address)` with the other storage nodes' addresses the center's
    /// heartbeat answers bring (its registry): every one that is new or changed. The real
    /// processes insert them into their `AddressBook` (`AddressBook::sink`), so Raft reaches a
    /// replica the center places in a group with this node without any configuration. Without
    /// a hook (the simulator, whose network needs no addresses) they are only kept, to answer
    /// [`Message::GetRouting`]. A later call replaces the hook.
    pub fn on_addresses(&self, hook: impl Fn(NodeId, &str) + Send + Sync + 'static) {
        let me = self.id();
        self.addresses
            .set_hook(Arc::new(move |node, address: &str| {
                // This node knows where it listens.
                if node != me {
                    hook(node, address);
                }
            }));
    }

    /// The node addresses the last heartbeat answer brought, by id.
    pub fn addresses(&self) -> Vec<(NodeId, String)> {
        self.addresses.latest()
    }

    /// The first fatal error of any group's Raft (storage failure), if one stopped.
    pub fn fatal(&self) -> Option<String> {
        self.all_groups().into_iter().find_map(|(_, g)| {
            g.raft
                .metrics()
                .borrow_watched()
                .running_state
                .as_ref()
                .err()
                .map(|e| e.to_string())
        })
    }

    /// A digest of `group`'s applied state: (last applied index, state rows hash). Replicas at
    /// the same index must have the same hash.
    pub async fn state_digest(&self, group: GroupId) -> Result<(u64, u64), NodeError> {
        let state = self.group(group)?.state.clone();
        let digest = state
            .digest()
            .await
            .map_err(|source| NodeError::Storage { group, source })?;
        Ok(digest)
    }

    /// Executes read-only `command` against `group`'s **applied** state, without a read-index
    /// round: possibly stale. Used by center replicas to serve the routing table.
    pub(crate) async fn read_applied(
        &self,
        group: GroupId,
        command: &Command,
    ) -> Result<Reply, NodeError> {
        let state = self.group(group)?.state.clone();
        state
            .read(command, self.env.clock().wall_ms())
            .await
            .map_err(|source| NodeError::Storage { group, source })
    }

    /// Index of the last entry `group` has applied (0: none).
    pub(crate) fn applied_index(&self, group: GroupId) -> Option<u64> {
        let state = self.group(group).ok()?.state.clone();
        Some(state.applied().last_applied.map_or(0, |id| id.index()))
    }

    /// Stops every group's Raft and the heartbeat task.
    pub async fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for (_, group) in self.all_groups() {
            let _ = group.raft.shutdown().await;
        }
    }

    /// Whether [`StorageNode::shutdown`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Serves peers and clients on the node's [`Net`] until listening fails.
    pub async fn serve(self: &Arc<Self>) -> Result<(), NodeError> {
        self.env
            .net()
            .serve(NodeHandler { node: self.clone() })
            .await?;
        Ok(())
    }

    fn stamp(&self) -> u64 {
        let wall = self.env.clock().wall_ms();
        let previous = self.last_stamp_ms.fetch_max(wall, Ordering::SeqCst);
        previous.max(wall)
    }

    /// Executes a client command on `group`: writes through the Raft log, reads after a
    /// read-index round (see ARCHITECTURE.md for why read-index and not a lease).
    pub async fn execute(
        &self,
        group: GroupId,
        command: Command,
        session: Option<SessionSeq>,
    ) -> ClientResponse {
        let Ok(handle) = self.group(group) else {
            return ClientResponse::Unavailable {
                reason: format!("group {group} is not hosted on node {}", self.id()),
            };
        };
        let limit = Duration::from_millis(self.config.request_timeout_ms);
        if command.is_write() {
            let request = Request {
                now_ms: self.stamp(),
                command,
                session,
            };
            match timeout(self.env.clock(), limit, handle.raft.client_write(request)).await {
                Ok(Ok(response)) => ClientResponse::Reply(response.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                    ClientResponse::NotLeader {
                        leader_hint: forward.leader_id,
                    }
                }
                Ok(Err(error)) => ClientResponse::Indeterminate {
                    reason: error.to_string(),
                },
                // The entry may already be in the log and commit later.
                Err(_) => ClientResponse::Indeterminate {
                    reason: "write timed out on the leader".into(),
                },
            }
        } else {
            let stale_ok = self.config.unsafe_local_reads && self.is_leader(group);
            let read = async {
                if stale_ok {
                    return Ok(());
                }
                handle
                    .raft
                    .ensure_linearizable(ReadPolicy::ReadIndex)
                    .await?;
                Ok::<_, RaftError<TypeConfig, LinearizableReadError<TypeConfig>>>(())
            };
            match timeout(self.env.clock(), limit, read).await {
                Ok(Ok(())) => match handle
                    .state
                    .read(&command, self.env.clock().wall_ms())
                    .await
                {
                    Ok(reply) => ClientResponse::Reply(reply),
                    Err(error) => ClientResponse::Unavailable {
                        reason: error.to_string(),
                    },
                },
                Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)))) => {
                    ClientResponse::NotLeader {
                        leader_hint: forward.leader_id,
                    }
                }
                Ok(Err(error)) => ClientResponse::Unavailable {
                    reason: error.to_string(),
                },
                Err(_) => ClientResponse::Unavailable {
                    reason: "read index not confirmed in time".into(),
                },
            }
        }
    }

    /// Whether a request for `group`, routed by a client at routing `epoch`, names a key this
    /// node's newer table maps to another group; returns that table's epoch. A client ahead of
    /// this node makes it fetch the newer table (and is served: only a table at least as new
    /// as the client's may overrule it).
    fn misrouted(&self, group: GroupId, command: &Command, epoch: u64) -> Option<u64> {
        let table = self.routing()?;
        if table.epoch() < epoch {
            self.heartbeat_now.notify_one();
            return None;
        }
        // Groups the table does not know (the center's own group) are not judged.
        table.route(group)?;
        command
            .keys()
            .iter()
            .any(|key| table.group_of_key(key) != Some(group))
            .then_some(table.epoch())
    }

    /// Answers one request; center replicas pass the messages they do not handle themselves
    /// here too.
    pub(crate) async fn handle_message(&self, message: Message) -> Bytes {
        match message {
            Message::Append { group, request } => match self.raft(group) {
                Ok(raft) => encode(&raft.append_entries(request).await),
                Err(e) => encode(&fatal_for::<
                    openraft::raft::AppendEntriesResponse<TypeConfig>,
                >(e)),
            },
            Message::Vote { group, request } => match self.raft(group) {
                Ok(raft) => encode(&raft.vote(request).await),
                Err(e) => encode(&fatal_for::<openraft::raft::VoteResponse<TypeConfig>>(e)),
            },
            Message::PreVote { group, request } => match self.raft(group) {
                Ok(raft) => encode(&raft.pre_vote(request).await),
                Err(e) => encode(&fatal_for::<openraft::raft::VoteResponse<TypeConfig>>(e)),
            },
            Message::TransferLeader { group, request } => match self.raft(group) {
                Ok(raft) => encode(&raft.handle_transfer_leader(request).await),
                Err(e) => encode(&fatal_for::<
                    openraft::raft::TransferLeaderResponse<TypeConfig>,
                >(e)),
            },
            Message::Snapshot {
                group,
                vote,
                meta,
                data,
            } => match self.raft(group) {
                Ok(raft) => {
                    let snapshot = Snapshot {
                        meta,
                        snapshot: std::io::Cursor::new(data),
                    };
                    encode(&raft.install_full_snapshot(vote, snapshot).await)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "snapshot for a group this node does not host");
                    let fatal: Result<openraft::raft::SnapshotResponse<TypeConfig>, _> =
                        Err(openraft::error::Fatal::<TypeConfig>::Stopped);
                    encode(&fatal)
                }
            },
            Message::Client(ClientRequest {
                group,
                command,
                session,
                epoch,
            }) => match self.misrouted(group, &command, epoch) {
                Some(epoch) => encode(&ClientResponse::StaleEpoch { epoch }),
                None => encode(&self.execute(group, command, session).await),
            },
            Message::Heartbeat(_) => encode(&CenterResponse::<HeartbeatAck>::Unavailable {
                reason: format!("node {} is not a center replica", self.id()),
            }),
            // A storage node is an observer too: it answers from the table it learned through
            // its heartbeats (eventually consistent, like every observer; see `Message`).
            Message::GetRouting { known_epoch } => encode(&match self.routing() {
                Some(table) => CenterResponse::Ok(RoutingAnswer {
                    epoch: table.epoch(),
                    table: (table.epoch() > known_epoch).then(|| (*table).clone()),
                    addresses: self.addresses(),
                }),
                None => CenterResponse::Unavailable {
                    reason: format!("node {} has no routing table", self.id()),
                },
            }),
            Message::AddGroup { group, initialize } => {
                encode(&self.admin_add_group(group, initialize).await)
            }
            Message::RemoveGroup { group } => encode(&self.admin_remove_group(group).await),
            Message::ReplaceVoter {
                group,
                old,
                new,
                timeout_ms,
            } => {
                let limit = Duration::from_millis(timeout_ms);
                let outcome = timeout(self.env.clock(), limit, self.replace_voter(group, old, new))
                    .await
                    .unwrap_or_else(|_| {
                        Err(NodeError::Raft {
                            group,
                            reason: format!("replacing {old} by {new} took over {timeout_ms} ms"),
                        })
                    });
                encode(&admin_response(outcome))
            }
            Message::TransferLeadership { group, to } => {
                encode(&self.admin_transfer_leadership(group, to).await)
            }
        }
    }

    async fn admin_add_group(
        &self,
        group: GroupId,
        initialize: Option<Vec<NodeId>>,
    ) -> AdminResponse {
        if let Err(error) = self.add_group(group).await {
            return admin_response(Err(error));
        }
        match initialize {
            // Only a listed voter forms the group; `initialize` leaves a formed group alone.
            Some(voters) if voters.contains(&self.id()) => {
                let voters: BTreeSet<NodeId> = voters.into_iter().collect();
                admin_response(self.initialize(group, &voters).await)
            }
            _ => AdminResponse::Done,
        }
    }

    async fn admin_remove_group(&self, group: GroupId) -> AdminResponse {
        if group == CENTER_GROUP {
            return AdminResponse::Failed {
                reason: "the center group is never removed by a message".into(),
            };
        }
        // A leader is a member by definition (at least of the term it believes in): removing
        // it would take a live member's data. The center asks again later if it still should.
        if self.is_leader(group) {
            return AdminResponse::Failed {
                reason: format!("node {} leads group {group}", self.id()),
            };
        }
        admin_response(self.remove_group(group).await.map(|_| ()))
    }

    async fn admin_transfer_leadership(&self, group: GroupId, to: NodeId) -> AdminResponse {
        let raft = match self.raft(group) {
            Ok(raft) => raft,
            Err(error) => return admin_response(Err(error)),
        };
        if !self.is_leader(group) {
            return AdminResponse::NotLeader {
                leader_hint: self.leader_of(group),
            };
        }
        if !raft.voter_ids().any(|id| id == to) {
            return AdminResponse::Failed {
                reason: format!("node {to} is not a voter of group {group}"),
            };
        }
        match raft.trigger().transfer_leader(to).await {
            Ok(()) => AdminResponse::Done,
            Err(error) => AdminResponse::Failed {
                reason: error.to_string(),
            },
        }
    }
}

fn admin_response(outcome: Result<(), NodeError>) -> AdminResponse {
    match outcome {
        Ok(()) => AdminResponse::Done,
        Err(NodeError::NotLeader { leader_hint, .. }) => AdminResponse::NotLeader { leader_hint },
        Err(error) => AdminResponse::Failed {
            reason: error.to_string(),
        },
    }
}

/// Sends a heartbeat to the center every [`NodeConfig::center_heartbeat_ms`] until the node is
/// shut down or dropped. Each round tries the center it believes leads, follows one hint per
/// center, and tries each center at most once, so a round is bounded by the number of centers.
async fn heartbeat_loop<E: Env>(node: Weak<StorageNode<E>>, early: Arc<tokio::sync::Notify>) {
    let (clock, net, centers, interval) = match node.upgrade() {
        Some(node) => (
            node.env.clock().clone(),
            node.env.net().clone(),
            node.config.centers.clone(),
            Duration::from_millis(node.config.center_heartbeat_ms.max(1)),
        ),
        None => return,
    };
    let call_timeout = interval.max(Duration::from_millis(HEARTBEAT_CALL_MS_MIN));
    let mut target: Option<NodeId> = None;
    let mut next = 0usize;
    loop {
        let beat = {
            let Some(node) = node.upgrade() else { return };
            if node.is_stopped() {
                return;
            }
            Heartbeat {
                node: node.id(),
                address: node.config.address.clone(),
                known_epoch: node.routing().map_or(0, |t| t.epoch()),
                groups: node.group_statuses(),
            }
        };
        let request = encode(&Message::Heartbeat(beat));
        for _ in 0..centers.len() {
            let to = target.unwrap_or_else(|| {
                next = next.wrapping_add(1);
                centers[next % centers.len()]
            });
            let response = net.call(to, request.clone(), call_timeout).await;
            match response.map(|bytes| decode::<CenterResponse<HeartbeatAck>>(&bytes)) {
                Ok(Ok(CenterResponse::Ok(ack))) => {
                    target = Some(to);
                    if let Some(node) = node.upgrade() {
                        // Addresses first: the nodes a newer table names are reachable by then.
                        node.addresses.learn(&ack.addresses);
                        if let Some(table) = ack.routing {
                            node.offer_routing(table);
                        }
                    }
                    break;
                }
                Ok(Ok(CenterResponse::NotLeader { leader_hint })) => {
                    target = leader_hint.filter(|hint| *hint != to && centers.contains(hint));
                }
                _ => target = None,
            }
        }
        tokio::select! {
            () = clock.sleep(interval) => {}
            () = early.notified() => {}
        }
    }
}

/// An error reply for a Raft RPC naming a group this node does not host. openraft treats it like
/// an unreachable peer.
fn fatal_for<T>(error: NodeError) -> Result<T, RaftError<TypeConfig>> {
    tracing::debug!(%error, "raft message for a group this node does not host");
    Err(RaftError::Fatal(openraft::error::Fatal::Stopped))
}

/// The [`Handler`] a node serves on its [`Net`].
pub struct NodeHandler<E: Env> {
    node: Arc<StorageNode<E>>,
}

impl<E: Env> Clone for NodeHandler<E> {
    fn clone(&self) -> Self {
        NodeHandler {
            node: self.node.clone(),
        }
    }
}

impl<E: Env> Handler for NodeHandler<E> {
    async fn handle(&self, _from: NodeId, request: Bytes) -> Bytes {
        match decode::<Message>(&request) {
            Ok(message) => self.node.handle_message(message).await,
            Err(error) => encode(&ClientResponse::Unavailable {
                reason: format!("undecodable request: {error}"),
            }),
        }
    }
}
