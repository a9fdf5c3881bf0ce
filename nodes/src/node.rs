//! The storage node: hosts Raft-replicated slot groups over one environment and answers
//! [`Message`]s from peers and clients.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use larder_core::env::{Clock, Disk, Env, Handler, Net, NetError, timeout};
use larder_core::kv::Command;
use larder_core::{GroupId, NodeId};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;
use openraft::{ChangeMembers, Config, EmptyNode, ServerState, SnapshotPolicy};

use crate::raft::group_commit::GroupCommitDisk;
use crate::raft::log_store::DiskLogStore;
use crate::raft::network::RaftNet;
use crate::raft::state_machine::DiskStateMachine;
use crate::raft::{Raft, Request, SessionSeq, Snapshot, TypeConfig};
use crate::rpc::{ClientRequest, ClientResponse, Message, decode, encode};

/// Timing and size knobs of a storage node. Defaults suit a LAN; the simulator uses the same.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeConfig {
    pub id: NodeId,
    /// The slot groups this node hosts a replica of.
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
    #[error("raft of group {group} failed: {reason}")]
    Raft { group: GroupId, reason: String },
    #[error("group {group} is not hosted on this node")]
    UnknownGroup { group: GroupId },
    #[error(transparent)]
    Net(#[from] NetError),
}

/// The disk every group of a node writes through: the environment's disk behind the node's
/// group-commit task.
pub type NodeDisk<E> = GroupCommitDisk<<E as Env>::Disk>;

struct Group<D: Disk> {
    raft: Raft<D>,
    state: DiskStateMachine<D>,
}

/// A storage node: one replica of each of its slot groups.
pub struct StorageNode<E: Env> {
    env: E,
    config: NodeConfig,
    groups: BTreeMap<GroupId, Group<NodeDisk<E>>>,
    /// The last timestamp given to a log entry; stamps never go backwards on one leader even
    /// when its wall clock jumps back.
    last_stamp_ms: AtomicU64,
}

impl<E: Env> StorageNode<E> {
    /// Opens every group's log and state from the disk and starts its Raft.
    pub async fn start(env: E, config: NodeConfig) -> Result<Arc<Self>, NodeError> {
        let mut groups = BTreeMap::new();
        // One committer for every group of the node: their log appends share syncs.
        let shared = GroupCommitDisk::new(env.disk().clone());
        for &group in &config.groups {
            let raft_config = Arc::new(config.raft_config(group)?);
            let disk = shared.clone();
            let state = DiskStateMachine::open(disk.clone(), group)
                .await
                .map_err(|source| NodeError::Storage { group, source })?;
            let log = DiskLogStore::new(disk, group);
            let net = RaftNet::new(env.net().clone(), group);
            let raft = Raft::new(config.id, raft_config, net, log, state.clone())
                .await
                .map_err(|e| NodeError::Raft {
                    group,
                    reason: e.to_string(),
                })?;
            groups.insert(group, Group { raft, state });
        }
        Ok(Arc::new(StorageNode {
            env,
            config,
            groups,
            last_stamp_ms: AtomicU64::new(0),
        }))
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    fn group(&self, group: GroupId) -> Result<&Group<NodeDisk<E>>, NodeError> {
        self.groups
            .get(&group)
            .ok_or(NodeError::UnknownGroup { group })
    }

    /// The Raft handle of `group` (metrics, membership).
    pub fn raft(&self, group: GroupId) -> Result<&Raft<NodeDisk<E>>, NodeError> {
        Ok(&self.group(group)?.raft)
    }

    /// Makes `voters` the first membership of `group`. Call on one node of a new group only;
    /// a group that is already initialized is left as it is.
    pub async fn initialize(
        &self,
        group: GroupId,
        voters: &BTreeSet<NodeId>,
    ) -> Result<(), NodeError> {
        let raft = self.raft(group)?;
        if raft.is_initialized().await.map_err(|e| NodeError::Raft {
            group,
            reason: e.to_string(),
        })? {
            return Ok(());
        }
        let members: BTreeMap<NodeId, EmptyNode> =
            voters.iter().map(|&id| (id, EmptyNode {})).collect();
        match raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another initializer won the race, or state arrived from a peer: both fine.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(NodeError::Raft {
                group,
                reason: e.to_string(),
            }),
        }
    }

    /// Replaces voter `old` of `group` with `new`, learner first: `new` receives the log (or a
    /// snapshot) as a non-voting learner, and becomes a voter only once it has caught up, so
    /// the group never depends on a member that has no data. Call on the leader.
    pub async fn replace_voter(
        &self,
        group: GroupId,
        old: NodeId,
        new: NodeId,
    ) -> Result<(), NodeError> {
        let raft = self.raft(group)?;
        let to_error = |e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>| NodeError::Raft {
            group,
            reason: e.to_string(),
        };
        raft.add_learner(new, EmptyNode {}, true)
            .await
            .map_err(to_error)?;
        let mut voters: BTreeSet<NodeId> = raft.voter_ids().collect();
        voters.remove(&old);
        voters.insert(new);
        raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
            .await
            .map_err(to_error)?;
        Ok(())
    }

    /// True when this node leads `group`.
    pub fn is_leader(&self, group: GroupId) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|g| g.raft.metrics().borrow_watched().state == ServerState::Leader)
    }

    /// The first fatal error of any group's Raft (storage failure), if one stopped.
    pub fn fatal(&self) -> Option<String> {
        self.groups.values().find_map(|g| {
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
        let state = &self.group(group)?.state;
        let digest = state
            .digest()
            .await
            .map_err(|source| NodeError::Storage { group, source })?;
        Ok(digest)
    }

    /// Stops every group's Raft.
    pub async fn shutdown(&self) {
        for group in self.groups.values() {
            let _ = group.raft.shutdown().await;
        }
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

    async fn handle_message(&self, message: Message) -> Bytes {
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
            }) => encode(&self.execute(group, command, session).await),
        }
    }
}

/// An error reply for a Raft RPC naming a group this node does not host. openraft treats it like
/// an unreachable peer.
fn fatal_for<T>(error: NodeError) -> Result<T, RaftError<TypeConfig>> {
    tracing::warn!(%error, "raft message for a group this node does not host");
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
