//! The storage node and the replicas it hosts: opening, adding and removing slot groups, and
//! what the node knows of them. Serving requests is in [`crate::serving`], the center's
//! instructions in [`crate::admin`], heartbeats in [`crate::heartbeat`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use larder_core::bugs::Bug;
use larder_core::env::{Clock, Disk, Env, Sealed, Space, WriteBatch};
use larder_core::kv::{Command, Reply};
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use larder_protocol::addresses::LearnedAddresses;
use larder_protocol::{GroupStatus, MembershipStatus};
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;

use crate::broken::{BrokenReplicas, broken_key, group_of_key};
use crate::config::{NodeConfig, NodeError};
use crate::raft::group_commit::GroupCommitDisk;
use crate::raft::log_store::{DiskLogStore, SavedVotes};
use crate::raft::network::RaftNet;
use crate::raft::row_cache::RowCache;
use crate::raft::runtime::RaftContext;
use crate::raft::state_machine::{DiskStateMachine, ReadOutcome, wipe_group};
use crate::raft::{Raft, decode, encode};

/// The disk every group of a node writes through: the environment's disk, every record sealed
/// with a checksum ([`Sealed`]), behind the node's group-commit task.
pub type NodeDisk<E> = GroupCommitDisk<Sealed<<E as Env>::Disk>>;

/// Key in [`Space::Meta`] of the data format, written unsealed when a node first uses a disk.
const FORMAT_KEY: &[u8] = b"format";
/// The current data format: every record sealed with a checksum.
const FORMAT: &[u8] = b"larder-sealed-1";

/// Key in [`Space::Meta`] of the set of groups the node hosts, once it differs from
/// [`NodeConfig::groups`] (a group added or removed at runtime); postcard `Vec<GroupId>`.
const HOSTED_GROUPS_KEY: &[u8] = b"hosted-groups";

pub(crate) struct Group<D: Disk> {
    pub(crate) raft: Raft<D>,
    pub(crate) state: DiskStateMachine<D>,
    /// The snapshot a leader is sending this replica, chunk by chunk (see
    /// [`crate::raft::network`]); at most one, replaced when another begins.
    pub(crate) incoming_snapshot: std::sync::Mutex<Option<IncomingSnapshot>>,
}

/// The chunks of one snapshot received so far.
pub(crate) struct IncomingSnapshot {
    pub(crate) vote: crate::raft::Vote,
    pub(crate) meta: crate::raft::SnapshotMeta,
    pub(crate) total: u64,
    pub(crate) bytes: Vec<u8>,
}

/// A storage node: one replica of each of its slot groups.
pub struct StorageNode<E: Env> {
    pub(crate) env: E,
    pub(crate) config: NodeConfig,
    /// The node's disk behind its group-commit task; groups added later share it too.
    pub(crate) disk: NodeDisk<E>,
    /// Hosted groups. Behind a lock because the center adds and removes groups at runtime; the
    /// lock is held only to clone an `Arc` out, never across an `await`.
    pub(crate) groups: RwLock<BTreeMap<GroupId, Arc<Group<NodeDisk<E>>>>>,
    /// Serialises [`StorageNode::add_group`] and [`StorageNode::remove_group`], so the hosted set
    /// on disk and in memory change together.
    pub(crate) hosting: futures::lock::Mutex<()>,
    /// The newest routing table learned from the center (heartbeat answers); epochs only grow.
    pub(crate) routing: RwLock<Option<Arc<RoutingTable>>>,
    /// The node addresses the last heartbeat answer brought, and the hook they go to
    /// ([`StorageNode::on_addresses`]).
    pub(crate) addresses: LearnedAddresses,
    /// Set by [`StorageNode::shutdown`]; ends the heartbeat task.
    pub(crate) stopped: AtomicBool,
    /// Wakes the heartbeat task early: a client routed by a newer table than this node's, so
    /// the node fetches it now rather than at the next interval.
    pub(crate) heartbeat_now: Arc<tokio::sync::Notify>,
    /// The last timestamp given to a log entry; stamps never go backwards on one leader even
    /// when its wall clock jumps back.
    pub(crate) last_stamp_ms: AtomicU64,
    /// Replicas found corrupt (see [`crate::broken`]); shared with the disk's checksum hook.
    pub(crate) broken: Arc<BrokenReplicas>,
    /// Requests refused because of who sent them ([`crate::serving`]).
    pub(crate) refused: Refused,
    pub(crate) read_batches: ReadBatches,
    /// When each group last heard its leader's beacon and last served a client
    /// ([`crate::quiet`]).
    pub(crate) quiet: crate::quiet::Quiet,
    /// openraft appends this node served as a follower, heartbeats included.
    pub(crate) appends_served: AtomicU64,
    /// The keys of the requests this node served as a group leader ([`crate::hot`]).
    pub(crate) hot: std::sync::Mutex<larder_core::hotkeys::HotKeys>,
    /// Which of those reads are counted ([`crate::hot::READ_SAMPLE_EVERY`]).
    pub(crate) hot_reads: larder_core::hotkeys::ReadSampler,
    /// Each group's leader as last seen, and the changes seen ([`StorageNode::leader_changes`]).
    pub(crate) leaders_seen: std::sync::Mutex<BTreeMap<GroupId, LeaderSeen>>,
    /// Commands per log entry this node proposed as a leader (a pipeline's share of a group is
    /// one entry), for the metrics.
    pub(crate) entry_commands: prometheus_client::metrics::histogram::Histogram,
    /// The base each group's backup is reading, one per group at most ([`crate::backup`]).
    pub(crate) backup_bases: std::sync::Mutex<BTreeMap<GroupId, crate::backup::HeldBase>>,
    /// The four lanes client commands run in ([`crate::lanes`]).
    pub(crate) lanes: crate::lanes::Lanes<E::Clock>,
    /// The state rows its leaders read, shared by every group ([`RowCache`]).
    pub(crate) row_cache: Arc<RowCache>,
    /// Each hosted group's vote as its log store saved it, for the read rounds of peers.
    pub(crate) saved_votes: Arc<SavedVotes>,
    /// The reads waiting for this node's next read round ([`crate::read_rounds`]).
    pub(crate) read_rounds: crate::read_rounds::ReadRounds,
    /// The writes this node answered unchanged, or sent to the log, by session
    /// ([`crate::unchanged`]).
    pub(crate) unchanged: crate::unchanged::UnchangedWrites,
    /// A synced write of the node's record of the groups it hosts that failed: the disk is
    /// poisoned (a failed sync loses what was unsynced, and every later write fails, in fjall
    /// as in `SimDisk`) and only a restart recovers it ([`StorageNode::fatal`]).
    pub(crate) poisoned: std::sync::Mutex<Option<String>>,
}

/// A group's leader as this node last saw it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LeaderSeen {
    leader: Option<NodeId>,
    changes: u64,
}

/// Requests a node refused because of their sender, counted (the adversarial tests read them;
/// an operator sees each as a warning in the log).
#[derive(Debug, Default)]
pub struct Refused {
    /// Raft messages whose sender is not the leader or candidate they claim to come from.
    pub raft: AtomicU64,
    /// Admin requests from a process that is not one of the node's centers.
    pub admin: AtomicU64,
    /// Client commands sent to the center's group.
    pub center_group: AtomicU64,
    /// Heartbeats (to a center) sent by another node than the one they describe.
    pub heartbeats: AtomicU64,
    /// Read batches past `READ_BATCH_MAX` reads, refused whole.
    pub read_batches: AtomicU64,
}

/// What a group has applied of slot migrations ([`StorageNode::ownership_audit`]); the
/// simulator checks it once every migration of a run has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipAudit {
    /// The slots it owns (`None`: never set, so every slot).
    pub owned: Option<larder_core::slots::Ownership>,
    /// The first few keys it stores of slots it does not own.
    pub strays: Vec<bytes::Bytes>,
    /// The migration it records changes for (a migration out of it is under way), if any.
    pub tracking: Option<u64>,
    /// Its change markers (keys written while a migration tracked it), counted up to the
    /// audit's limit: none once no migration tracks it.
    pub change_markers: usize,
}

/// Read batches served (`larder_protocol::ReadBatch`): how many, and the reads they carried.
#[derive(Debug, Default)]
pub struct ReadBatches {
    pub batches: AtomicU64,
    pub reads: AtomicU64,
}

pub(crate) fn raft_error(group: GroupId, error: impl std::fmt::Display) -> NodeError {
    NodeError::Raft {
        group,
        reason: error.to_string(),
    }
}

/// Refuses a disk written before record checksums (its records would all read as corrupt);
/// marks an empty one with the current format.
async fn check_format<D: Disk>(disk: &D) -> Result<(), NodeError> {
    let format = |source: larder_core::env::DiskError| NodeError::Format {
        reason: source.to_string(),
    };
    match disk.get(Space::Meta, FORMAT_KEY).await.map_err(format)? {
        Some(found) if found.as_ref() == FORMAT => Ok(()),
        Some(found) => Err(NodeError::Format {
            reason: format!(
                "data format {:?}, this build reads {:?}",
                String::from_utf8_lossy(&found),
                String::from_utf8_lossy(FORMAT)
            ),
        }),
        None => {
            for space in Space::ALL {
                if !disk
                    .scan(space, &[], None, 1)
                    .await
                    .map_err(format)?
                    .is_empty()
                {
                    return Err(NodeError::Format {
                        reason: "the data directory predates record checksums; start this \
                                 node on an empty one and let the center re-replicate"
                            .into(),
                    });
                }
            }
            let mut batch = WriteBatch::new();
            batch.put(Space::Meta, FORMAT_KEY.to_vec(), FORMAT.to_vec());
            disk.write(batch, true).await.map_err(format)
        }
    }
}

/// Opens `group`'s log and state from `disk` and starts its Raft.
pub(crate) async fn open_group<E: Env>(
    env: &E,
    config: &NodeConfig,
    disk: &NodeDisk<E>,
    row_cache: &Arc<RowCache>,
    saved_votes: &Arc<SavedVotes>,
    group: GroupId,
) -> Result<Group<NodeDisk<E>>, NodeError> {
    let raft_config = Arc::new(config.raft_config(group)?);
    let state = DiskStateMachine::open(
        disk.clone(),
        group,
        config.bugs.clone(),
        env.fault_points(),
        config.sessions_max,
    )
    .await
    .map_err(|source| NodeError::Storage { group, source })?
    .with_row_cache(row_cache.clone());
    let collected = state
        .collect_garbage()
        .await
        .map_err(|source| NodeError::Storage { group, source })?;
    if collected > 0 {
        tracing::info!(
            group,
            collected,
            "deleted element ranges a crash left unreachable"
        );
    }
    let log = DiskLogStore::new(
        disk.clone(),
        group,
        config.bugs.clone(),
        env.fault_points(),
        saved_votes.clone(),
    )
    .with_retention(config.retention());
    let net = RaftNet::new(env.net().clone(), group, config.transfer_limits());
    // openraft takes time and randomness from the context its tasks run in: `Raft::new` draws
    // the first election timeout and spawns every Raft task, which inherit the context, so the
    // group's timers follow this node's clock (and its faults) and its draws this group's seed.
    let context = RaftContext::for_group(env, group);
    let raft = context
        .scope(Raft::new(config.id, raft_config, net, log, state.clone()))
        .await
        .map_err(|e| raft_error(group, e))?;
    Ok(Group {
        raft,
        state,
        incoming_snapshot: std::sync::Mutex::new(None),
    })
}

impl<E: Env> StorageNode<E> {
    /// Opens every hosted group's log and state from the disk and starts its Raft. The hosted
    /// groups are [`NodeConfig::groups`], or, once the center has added or removed one, the
    /// set recorded on disk. With [`NodeConfig::centers`] set, also starts the heartbeat task.
    pub async fn start(env: E, config: NodeConfig) -> Result<Arc<Self>, NodeError> {
        check_format(env.disk()).await?;
        let broken = Arc::new(BrokenReplicas::default());
        let hook = {
            let broken = broken.clone();
            Arc::new(
                move |space: Space, key: &[u8], error: &larder_core::env::DiskError| {
                    if let Some(group) = group_of_key(space, key) {
                        broken.mark(group, error.to_string());
                    }
                },
            )
        };
        let sealed = Sealed::new(env.disk().clone(), config.bugs.clone()).with_hook(hook);
        // One committer for every group of the node: their log appends share syncs.
        let disk = GroupCommitDisk::timed(sealed, config.bugs.clone(), env.clock().clone());
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
        let row_cache = Arc::new(RowCache::new(config.row_cache_bytes, env.seed()));
        let saved_votes = Arc::new(SavedVotes::default());
        let mut groups = BTreeMap::new();
        let mut newly_broken = Vec::new();
        for group in hosted {
            let mark = disk
                .get(Space::Meta, &broken_key(group))
                .await
                .map_err(|source| NodeError::Storage {
                    group,
                    source: source.into(),
                })?;
            if let Some(reason) = mark {
                // Retired before the restart: never opened again (see `crate::broken`).
                broken.restore(group, String::from_utf8_lossy(&reason).into_owned());
                continue;
            }
            match open_group(&env, &config, &disk, &row_cache, &saved_votes, group).await {
                Ok(opened) => {
                    groups.insert(group, Arc::new(opened));
                }
                // Opening read a corrupt record: the node starts without the replica.
                Err(error) if broken.contains(group) => {
                    tracing::warn!(group, %error, "a replica does not open: corrupt record");
                    newly_broken.push(group);
                }
                Err(error) => return Err(error),
            }
        }
        let hot = std::sync::Mutex::new(crate::hot::sketch(env.clock().now()));
        let lanes = crate::lanes::Lanes::new(config.lanes.clone(), env.clock().clone());
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
            broken,
            refused: Refused::default(),
            read_batches: ReadBatches::default(),
            quiet: crate::quiet::Quiet::default(),
            appends_served: AtomicU64::new(0),
            hot,
            hot_reads: larder_core::hotkeys::ReadSampler::new(crate::hot::READ_SAMPLE_EVERY),
            leaders_seen: std::sync::Mutex::default(),
            backup_bases: std::sync::Mutex::default(),
            entry_commands: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 10),
            ),
            lanes,
            row_cache,
            saved_votes,
            read_rounds: crate::read_rounds::ReadRounds::default(),
            unchanged: Default::default(),
            poisoned: std::sync::Mutex::new(None),
        });
        // The replicas that failed to open are retired now (their marks made durable).
        if !newly_broken.is_empty() {
            node.retire_broken().await;
        }
        if !node.config.centers.is_empty() {
            // The task holds a weak reference: dropping the node ends it.
            node.spawn_heartbeat();
        }
        node.spawn_supervisor();
        node.spawn_quiet();
        node.spawn_read_rounds();
        Ok(node)
    }

    /// Opens `group`'s log and state from this node's disk and starts its Raft, sharing the
    /// node's row cache and saved votes ([`open_group`]).
    pub(crate) async fn open_group(&self, group: GroupId) -> Result<Group<NodeDisk<E>>, NodeError> {
        open_group(
            &self.env,
            &self.config,
            &self.disk,
            &self.row_cache,
            &self.saved_votes,
            group,
        )
        .await
    }

    /// Notes `group`'s leader as seen now: a different leader than the last one seen counts a
    /// change. Sampled where the node reads its groups' Raft figures anyway (every heartbeat
    /// and every metrics scrape), so leaders that came and went between two looks are missed;
    /// the group's term (`larder_node_group_term`) counts every election.
    pub(crate) fn see_leader(&self, group: GroupId, leader: Option<NodeId>) -> u64 {
        let mut seen = self.leaders_seen.lock().expect("leaders lock");
        let entry = seen.entry(group).or_default();
        if let Some(now) = leader {
            if entry.leader.is_some_and(|before| before != now) {
                entry.changes += 1;
            }
            entry.leader = Some(now);
        }
        entry.changes
    }

    /// openraft appends (entries or empty heartbeats) this node served so far, for every group.
    pub fn appends_served(&self) -> u64 {
        self.appends_served.load(Ordering::Relaxed)
    }

    /// Writes answered without a log entry because they would change nothing
    /// ([`crate::unchanged`]).
    pub fn unchanged_writes(&self) -> u64 {
        self.unchanged.answered()
    }

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The environment the node runs on (the center replica shares it).
    pub fn env(&self) -> &E {
        &self.env
    }

    pub(crate) fn group(&self, group: GroupId) -> Result<Arc<Group<NodeDisk<E>>>, NodeError> {
        self.groups
            .read()
            .expect("groups lock")
            .get(&group)
            .cloned()
            .ok_or(NodeError::UnknownGroup { group })
    }

    pub(crate) fn all_groups(&self) -> Vec<(GroupId, Arc<Group<NodeDisk<E>>>)> {
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

    /// Whether this node hosts a replica of `group` (a broken one included: it stays hosted,
    /// and is not re-created, until the center drops it).
    pub fn hosts(&self, group: GroupId) -> bool {
        self.groups
            .read()
            .expect("groups lock")
            .contains_key(&group)
            || self.broken.contains(group)
    }

    /// The Raft handle of `group` (metrics, membership). A clone: it stays usable even if the
    /// group is removed meanwhile (its calls then fail as on a stopped Raft).
    /// Requests refused because of their sender so far.
    pub fn refused(&self) -> &Refused {
        &self.refused
    }

    pub fn raft(&self, group: GroupId) -> Result<Raft<NodeDisk<E>>, NodeError> {
        Ok(self.group(group)?.raft.clone())
    }

    /// What the hosted set on disk must hold: the running replicas and the broken ones (a
    /// broken replica forgotten there would be re-created empty while still a voter).
    fn hosted_list(&self) -> Vec<GroupId> {
        let mut hosted: BTreeSet<GroupId> = self.groups().into_iter().collect();
        hosted.extend(self.broken.all().into_iter().map(|(group, _)| group));
        hosted.into_iter().collect()
    }

    async fn save_hosted(&self, hosted: Vec<GroupId>) -> Result<(), NodeError> {
        let mut batch = WriteBatch::new();
        batch.put(Space::Meta, HOSTED_GROUPS_KEY.to_vec(), encode(&hosted));
        self.disk
            .write(batch, true)
            .await
            .map_err(|e| self.poison(NodeError::HostedGroups { source: e.into() }))
    }

    /// Records that a synced write of the node's hosted groups failed, and returns its error.
    /// No group's Raft sees such a write, so no group stops on it: without this the node
    /// stayed up with a poisoned disk, refusing every replica the center gave it while
    /// heartbeating as healthy, so nothing replaced it (cluster swarm seed 1112: node 3's first
    /// `AddGroup` met an injected EIO, two of its groups then lost their other replica).
    fn poison(&self, error: NodeError) -> NodeError {
        if self.config.bugs.is_planted(Bug::PoisonedNodeStaysUp) {
            return error;
        }
        let mut poisoned = self.poisoned.lock().expect("poisoned lock");
        if poisoned.is_none() {
            tracing::error!(node = self.id(), %error, "a synced write failed: the disk needs a restart");
            *poisoned = Some(error.to_string());
        }
        error
    }

    /// The node's own synced write that failed, if one did ([`StorageNode::poison`]): the
    /// process must restart to recover its disk.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().expect("poisoned lock").clone()
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
        wipe_group(&self.disk, &self.row_cache, group)
            .await
            .map_err(|source| NodeError::Storage { group, source })?;
        let opened = self.open_group(group).await?;
        let mut hosted = self.hosted_list();
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
        let removed = self.groups.write().expect("groups lock").remove(&group);
        let broken = self.broken.contains(group);
        if removed.is_none() && !broken {
            return Ok(false);
        }
        let hosted = self
            .hosted_list()
            .into_iter()
            .filter(|g| *g != group)
            .collect();
        self.save_hosted(hosted).await?;
        if let Some(removed) = removed {
            let _ = removed.raft.shutdown().await;
        }
        // Wiping deletes the broken mark with the rest.
        wipe_group(&self.disk, &self.row_cache, group)
            .await
            .map_err(|source| NodeError::Storage { group, source })?;
        self.broken.clear(group);
        // After the Raft stopped: it saves no vote again.
        self.saved_votes.forget(group);
        tracing::info!(node = self.id(), group, broken, "removed a replica");
        Ok(true)
    }

    /// The read batches this node served.
    pub fn read_batches(&self) -> &ReadBatches {
        &self.read_batches
    }

    /// The node's read rounds and what they counted.
    pub fn read_rounds(&self) -> &crate::read_rounds::ReadRounds {
        &self.read_rounds
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

    /// What this node knows of each group it hosts (the body of a heartbeat), broken replicas
    /// included.
    pub fn group_statuses(&self) -> Vec<GroupStatus> {
        let mut statuses: Vec<GroupStatus> = self
            .all_groups()
            .into_iter()
            .filter(|(group, _)| !self.broken.contains(*group))
            .map(|(group, handle)| {
                let (is_leader, term, initialized) = {
                    let metrics = handle.raft.metrics();
                    let metrics = metrics.borrow_watched();
                    self.see_leader(group, metrics.current_leader);
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
                let last_applied = applied.last_applied.map_or(0, |id| id.index());
                GroupStatus {
                    group,
                    is_leader,
                    term,
                    last_applied,
                    initialized,
                    membership,
                    broken: None,
                    records_estimate: handle.state.records(),
                }
            })
            .collect();
        // A broken replica may hold a formed log (`initialized`), and says nothing of the
        // group's membership: its records are not to be trusted.
        statuses.extend(
            self.broken
                .all()
                .into_iter()
                .map(|(group, reason)| GroupStatus {
                    group,
                    is_leader: false,
                    term: 0,
                    last_applied: 0,
                    initialized: true,
                    membership: None,
                    broken: Some(reason),
                    records_estimate: 0,
                }),
        );
        statuses.sort_by_key(|status| status.group);
        statuses
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
        // Invariant: the epoch a node judges requests by only grows.
        debug_assert!(current.as_ref().is_none_or(|t| table.epoch() > t.epoch()));
        *current = Some(Arc::new(table));
        true
    }

    /// Calls `hook(node, address)` with the other storage nodes' addresses the center's
    /// heartbeat answers bring (its registry): every one that is new or changed. The real
    /// processes insert them into their `AddressBook` (`AddressBook::sink`), so Raft reaches a
    /// replica the center places in a group with this node without any configuration. Without
    /// a hook (the simulator, whose network needs no addresses) they are only kept, to answer
    /// [`larder_protocol::GetRouting`]. A later call replaces the hook.
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

    /// The node's poisoned disk ([`StorageNode::poisoned`]), or the first fatal error of any
    /// group's Raft (storage failure), if one stopped. A replica stopped by a corrupt record is
    /// not fatal to the node: it is retired, not restarted.
    pub fn fatal(&self) -> Option<String> {
        if let Some(poisoned) = self.poisoned() {
            return Some(poisoned);
        }
        self.all_groups().into_iter().find_map(|(group, g)| {
            if self.broken.contains(group) {
                return None;
            }
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

    /// What `group` has applied of slot migrations, with the first few keys it stores of
    /// slots its ownership leaves out and its change markers (each at most `limit`): for
    /// audits of slot migrations.
    pub async fn ownership_audit(
        &self,
        group: GroupId,
        limit: usize,
    ) -> Result<OwnershipAudit, NodeError> {
        let state = self.group(group)?.state.clone();
        let applied = state.applied();
        let tracking = applied.tracking.as_ref().map(|t| t.migration);
        let change_markers = state
            .change_markers(limit.max(1))
            .await
            .map_err(|source| NodeError::Storage { group, source })?;
        let owned = applied.owned;
        let mut strays = Vec::new();
        if let Some(own) = &owned {
            let everything_else = larder_core::slots::ranges_where(|slot| !own.owns(slot));
            let mut after = None;
            // Bounded: pages of the group's rows until `limit` strays or the end.
            loop {
                let page = state
                    .read_slots(
                        &everything_else,
                        &larder_protocol::SlotRead::Copy { after },
                        limit.max(1),
                        usize::MAX,
                    )
                    .await
                    .map_err(|source| NodeError::Storage { group, source })?;
                strays.extend(page.records.into_iter().map(|(key, _)| key));
                match page.next {
                    Some(next) if strays.len() < limit => after = Some(next),
                    _ => break,
                }
            }
        }
        strays.truncate(limit);
        Ok(OwnershipAudit {
            owned,
            strays,
            tracking,
            change_markers,
        })
    }

    /// Executes read-only `command` against `group`'s **applied** state, without a read-index
    /// round: possibly stale. Used by center replicas to serve the routing table.
    pub async fn read_applied(
        &self,
        group: GroupId,
        command: &Command,
    ) -> Result<Reply, NodeError> {
        let state = self.group(group)?.state.clone();
        let storage = |source| NodeError::Storage { group, source };
        match state
            .read(command, self.env.clock().wall_ms())
            .await
            .map_err(storage)?
        {
            ReadOutcome::Reply(reply) => Ok(reply),
            // A stale read cannot propose; at the group clock no expiry needs the log.
            ReadOutcome::AdvanceClock { .. } => {
                match state.read(command, 0).await.map_err(storage)? {
                    ReadOutcome::Reply(reply) => Ok(reply),
                    ReadOutcome::AdvanceClock { to_ms } => Err(NodeError::Raft {
                        group,
                        reason: format!("group clock behind {to_ms} ms at the group clock"),
                    }),
                }
            }
        }
    }

    /// Index of the last entry `group` has applied (0: none).
    pub fn applied_index(&self, group: GroupId) -> Option<u64> {
        let state = self.group(group).ok()?.state.clone();
        Some(state.applied().last_applied.map_or(0, |id| id.index()))
    }

    /// Index of the last entry in `group`'s log here, committed or not (0: none).
    pub fn last_log_index(&self, group: GroupId) -> Option<u64> {
        let raft = self.group(group).ok()?.raft.clone();
        let last = raft.metrics().borrow_watched().last_log_index;
        Some(last.unwrap_or(0))
    }

    /// Stops every group's Raft and the heartbeat task.
    pub async fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        // Its reads waiting step aside, and the task ends.
        self.read_rounds.wake();
        for (_, group) in self.all_groups() {
            let _ = group.raft.shutdown().await;
        }
    }

    /// Whether [`StorageNode::shutdown`] was called.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}
