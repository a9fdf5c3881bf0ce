//! A storage node's settings ([`NodeConfig`]) and errors ([`NodeError`]).

use larder_core::env::NetError;
use larder_core::{GroupId, NodeId};
use openraft::{Config, SnapshotPolicy};

use larder_core::bugs::{Bug, Bugs};

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
    /// Bugs planted on purpose, to prove the simulator catches them ([`larder_core::bugs`]).
    /// Never read from a configuration file (`serde(skip)`), and without the `planted-bugs`
    /// cargo feature (which only tests and `larder sim --bug` builds enable) none can be
    /// planted.
    #[serde(skip)]
    pub bugs: Bugs,
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
    /// Client sessions each group remembers for deduplication (least recently used forgotten
    /// first; a forgotten session's client opens a new one). A registration this node logs
    /// as leader carries it, and every replica evicts by the bound of the registration it
    /// applies, so replicas set differently still forget the same sessions.
    #[serde(default = "default_sessions_max")]
    pub sessions_max: usize,
    /// The supervisor's first wait before reopening a group whose Raft stopped (doubled after
    /// each reopen that stopped again; see [`crate::supervisor`]).
    #[serde(default = "default_reopen_backoff_ms")]
    pub reopen_backoff_ms: u64,
    /// Reopens of a group that keeps stopping before its replica is reported broken.
    #[serde(default = "default_reopens_max")]
    pub reopens_max: u32,
    /// Most bytes of log entries in one Raft append to a follower (at least one entry is
    /// always sent, however large): a follower catching up on large values gets them in
    /// batches that each fit a message and a timeout, not one batch of 300 entries.
    #[serde(default = "default_append_bytes_max")]
    pub append_bytes_max: usize,
    /// Bytes of snapshot per chunk sent to a follower: a group's snapshot of any size travels
    /// as a sequence of messages this large (see [`crate::raft::network`]).
    #[serde(default = "default_snapshot_chunk_bytes")]
    pub snapshot_chunk_bytes: usize,
    /// The four lanes client commands run in ([`crate::lanes`]).
    #[serde(default)]
    pub lanes: crate::lanes::LaneConfig,
    /// How long a leader holds a commit-index update that no entries carry, waiting for the
    /// next entries to carry it (openraft's `commit_hold_ms`, a Larder patch:
    /// `vendor/openraft/PATCHES.md`). With one client writing at a time, sending it at once is
    /// a third of the messages of every write; followers need it only to apply, and every read
    /// is served by the leader, so holding it delays no answer. 0: send at once.
    ///
    /// The default is one heartbeat interval (100 ms), not the 10 ms it was: with many groups,
    /// each group writes seldom (64 groups under 2,000 writes/s: one write per group every
    /// ~30 ms), so a 10 ms hold expired before the next entries came and nearly every commit
    /// still went out bare, a follower round of its own per write. Held a heartbeat interval,
    /// it rides the group's next entries; measured under `redis-benchmark -c 50 -P 1 -t set`
    /// against `larder up` (64 groups, tmpfs): 7 % fewer sends, 10 % fewer context switches
    /// per write. The cost is a follower's apply lagging the commit by up to that long, which
    /// no answer waits for (a new leader applies everything committed before it serves).
    #[serde(default = "default_commit_hold_ms")]
    pub commit_hold_ms: u64,
    /// Bytes of state rows the node keeps in memory for the reads its leaders serve, shared by
    /// every group it hosts ([`crate::raft::row_cache::RowCache`]). 0: no cache.
    #[serde(default = "default_row_cache_bytes")]
    pub row_cache_bytes: usize,
    /// Whether linearizable reads are confirmed by the node's read rounds, one exchange per
    /// peer for every group with reads waiting ([`crate::read_rounds`]); `false`: by openraft's
    /// read index, one heartbeat round per group. Both are linearizable under any clock; the
    /// switch is there to compare them, and to step back if the rounds ever misbehave.
    #[serde(default = "default_read_rounds")]
    pub read_rounds: bool,
    /// How long committed log entries stay after a snapshot covers them, by the group clock,
    /// so that `larder backup` can archive every entry and `larder restore` rebuild any moment
    /// in between (`crate::raft::log_store::Retention`). Must be longer than the time between
    /// two backups. 0 (the default): entries go with the snapshot, and a backup holds only its
    /// bases.
    #[serde(default)]
    pub retain_log_ms: u64,
    /// The most entries a group keeps for [`NodeConfig::retain_log_ms`], however young.
    #[serde(default = "default_retain_log_entries_max")]
    pub retain_log_entries_max: u64,
}

fn default_retain_log_entries_max() -> u64 {
    1_000_000
}

fn default_read_rounds() -> bool {
    true
}

fn default_row_cache_bytes() -> usize {
    crate::raft::row_cache::ROW_CACHE_BYTES_DEFAULT
}

fn default_commit_hold_ms() -> u64 {
    100
}

fn default_append_bytes_max() -> usize {
    8 << 20
}

fn default_snapshot_chunk_bytes() -> usize {
    4 << 20
}

fn default_reopen_backoff_ms() -> u64 {
    1000
}

fn default_reopens_max() -> u32 {
    5
}

fn default_center_heartbeat_ms() -> u64 {
    500
}

fn default_sessions_max() -> usize {
    crate::raft::state_machine::SESSIONS_MAX
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
            bugs: Bugs::default(),
            centers: Vec::new(),
            center_heartbeat_ms: default_center_heartbeat_ms(),
            address: String::new(),
            sessions_max: default_sessions_max(),
            reopen_backoff_ms: default_reopen_backoff_ms(),
            reopens_max: default_reopens_max(),
            append_bytes_max: default_append_bytes_max(),
            snapshot_chunk_bytes: default_snapshot_chunk_bytes(),
            lanes: crate::lanes::LaneConfig::default(),
            commit_hold_ms: default_commit_hold_ms(),
            row_cache_bytes: default_row_cache_bytes(),
            read_rounds: default_read_rounds(),
            retain_log_ms: 0,
            retain_log_entries_max: default_retain_log_entries_max(),
        }
    }

    /// What a purge of the Raft log keeps ([`NodeConfig::retain_log_ms`]).
    pub fn retention(&self) -> crate::raft::log_store::Retention {
        crate::raft::log_store::Retention {
            ms: self.retain_log_ms,
            entries_max: self.retain_log_entries_max,
        }
    }

    /// What a Raft message may carry (see [`NodeConfig::append_bytes_max`]).
    pub(crate) fn transfer_limits(&self) -> crate::raft::network::TransferLimits {
        crate::raft::network::TransferLimits {
            append_bytes_max: self.append_bytes_max,
            snapshot_chunk_bytes: self.snapshot_chunk_bytes,
            bugs: self.bugs.clone(),
        }
    }

    pub(crate) fn raft_config(&self, group: GroupId) -> Result<Config, NodeError> {
        // Room for the request around a chunk or an entry batch within one message.
        let message_room = larder_core::env::MESSAGE_BYTES_MAX - (64 << 10);
        for (name, value) in [
            ("append_bytes_max", self.append_bytes_max),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
        ] {
            if !(1..=message_room).contains(&value) {
                return Err(NodeError::Config {
                    reason: format!("{name} must be 1..={message_room}, got {value}"),
                });
            }
        }
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
            enable_leader_restore: Some(self.bugs.is_planted(Bug::LeaderRestore)),
            // A leader sends entries to its followers as soon as they are written, while its
            // own sync runs (`DiskLogStore`): commit still needs a quorum of flushed logs, and
            // the leader counts in it only once its own flush is reported.
            broadcast_submitted_on_append: Some(true),
            commit_hold_ms: Some(self.commit_hold_ms),
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
    #[error("unusable data directory: {reason}")]
    Format { reason: String },
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
