//! A center replica's settings ([`CenterConfig`]) and errors ([`CenterError`]).

use std::time::Duration;

use larder_core::bugs::Bugs;
use larder_core::routing::RoutingError;
use larder_core::{GroupId, NodeId};
use larder_storage::NodeError;

use crate::plan::PlanConfig;

/// Settings of a center replica.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CenterConfig {
    /// The voters of the center group (usually three).
    pub centers: Vec<NodeId>,
    /// Read-only followers of the routing table, added as learners of the center group.
    pub observers: Vec<NodeId>,
    /// Slot groups the first routing table creates (ids `1..=groups`).
    pub groups: u64,
    /// Replicas per slot group.
    pub replicas: usize,
    /// Live storage nodes needed before the first routing table is written (at least
    /// `replicas`): with fewer, later nodes would start empty.
    pub bootstrap_nodes_min: usize,
    /// Expected interval of storage nodes' heartbeats, and the control loop's tick.
    pub heartbeat_ms: u64,
    /// A node is down after this many heartbeat intervals without one, never after one failed
    /// probe: a node that is slow or briefly cut off must not be replaced in a loop.
    pub missed_heartbeats_max: u32,
    /// Replica replacements under way at once, cluster-wide.
    pub repairs_max: usize,
    /// Operator switch: automatic replacement of dead replicas.
    pub repair_enabled: bool,
    /// Leadership moves started per tick.
    pub leader_moves_per_tick_max: usize,
    /// A group whose leadership was moved is left alone this long.
    pub leader_move_cooldown_ms: u64,
    /// Deadline of a quick admin message (host a group, move leadership).
    pub admin_timeout_ms: u64,
    /// Deadline of a replica replacement (the learner must catch up within it).
    pub replace_timeout_ms: u64,
    /// A replica that is no member of its group is dropped after this long. Longer than
    /// `replace_timeout_ms`, so a replacement started by a previous center leader (whose soft
    /// state this leader lacks) has ended before its new replica could look stale.
    pub stale_replica_ms: u64,
    /// Routing epochs kept in the center group (at least 2; see the module docs).
    pub routing_history: u64,
    /// After a migration's cutover, how long the source keeps its copy of the moved slots
    /// before deleting it: time for every proxy and client to learn the new table (a client
    /// still routed by the old one is refused by the source, never served stale data).
    #[serde(default = "default_migration_grace_ms")]
    pub migration_grace_ms: u64,
    /// A group whose replicas report more records than this is split in two, through the
    /// same migration path as `larder admin split` (one at a time, while no migration runs);
    /// 0 turns automatic splits off. The heartbeats' figure (`GroupStatus::records_estimate`)
    /// picks the candidate; the center counts it exactly (`DBSIZE` on its leader) before it
    /// splits.
    #[serde(default = "default_split_records_max")]
    pub split_records_max: u64,
    /// A slot whose group leader reports more requests a second than this
    /// (`HotReport::slots`) is moved into a new group of its own, through the migration path
    /// (one at a time, while no migration runs), so its load can sit on another leader than
    /// the rest of its old group's. 0 (the default) turns it off: whether a slot that hot
    /// deserves a group is the operator's call (`larder admin hotkeys` shows the candidates).
    #[serde(default)]
    pub hot_slot_requests_per_sec_max: u64,
    /// The table keeps at least this many groups per storage node that may take work (up,
    /// neither draining nor removed): past it, the group with the most slots is split through
    /// the migration path (one at a time, while no migration runs), so a node that joins gets a
    /// group to lead rather than only replicas to follow. 0 turns it off. A cluster starts
    /// with few groups (each group's write is a Raft round of its own, so fewer, busier groups
    /// cost less per write: note of stop 51) and grows them with its nodes and its data.
    #[serde(default = "default_groups_per_node_min")]
    pub groups_per_node_min: u64,
    /// Automatic splits (by records, by nodes or by a hot slot) stop once the table holds this
    /// many groups.
    #[serde(default = "default_split_groups_max")]
    pub split_groups_max: usize,
    /// Bugs planted on purpose ([`larder_core::bugs`]; none without the `planted-bugs`
    /// feature). Never read from a file.
    #[serde(skip)]
    pub bugs: Bugs,
}

fn default_split_records_max() -> u64 {
    8_000_000
}

fn default_groups_per_node_min() -> u64 {
    1
}

fn default_split_groups_max() -> usize {
    256
}

fn default_migration_grace_ms() -> u64 {
    5_000
}

impl CenterConfig {
    pub fn new(centers: Vec<NodeId>, groups: u64) -> Self {
        CenterConfig {
            centers,
            observers: Vec::new(),
            groups,
            replicas: 3,
            bootstrap_nodes_min: 3,
            heartbeat_ms: 500,
            missed_heartbeats_max: 5,
            repairs_max: 4,
            repair_enabled: true,
            leader_moves_per_tick_max: 2,
            leader_move_cooldown_ms: 5_000,
            admin_timeout_ms: 2_000,
            replace_timeout_ms: 30_000,
            stale_replica_ms: 60_000,
            routing_history: 16,
            migration_grace_ms: default_migration_grace_ms(),
            split_records_max: default_split_records_max(),
            split_groups_max: default_split_groups_max(),
            groups_per_node_min: default_groups_per_node_min(),
            hot_slot_requests_per_sec_max: 0,
            bugs: Bugs::default(),
        }
    }

    /// Rejects settings the center cannot work with.
    /// Checks the settings; every refusal names the setting and why.
    pub fn validate(&self) -> Result<(), CenterError> {
        let reason = if self.centers.is_empty() {
            "no center replicas".to_string()
        } else if !(1..=u64::from(larder_core::slots::SLOTS)).contains(&self.groups) {
            format!(
                "groups must be 1..={}, got {}",
                larder_core::slots::SLOTS,
                self.groups
            )
        } else if self.replicas == 0 || self.replicas > REPLICAS_MAX {
            format!("replicas must be 1..={REPLICAS_MAX}, got {}", self.replicas)
        } else if self.replicas.is_multiple_of(2) {
            format!(
                "replicas must be odd, got {}: {} replicas survive no more failures than {}, and need a larger majority",
                self.replicas,
                self.replicas,
                self.replicas - 1
            )
        } else if !(10..=60_000).contains(&self.heartbeat_ms) {
            format!("heartbeat_ms must be 10..=60000, got {}", self.heartbeat_ms)
        } else if self.missed_heartbeats_max < 2 {
            // One late heartbeat (a GC pause, a busy disk) would declare a node dead and start
            // replacing every replica it holds.
            "missed_heartbeats_max must be at least 2".to_string()
        } else if let Some(id) = self.observers.iter().find(|o| self.centers.contains(o)) {
            format!("id {id} is both a center replica and an observer")
        } else if self.stale_replica_ms <= self.replace_timeout_ms {
            "stale_replica_ms must exceed replace_timeout_ms (see its docs)".to_string()
        } else {
            return Ok(());
        };
        Err(CenterError::Config { reason })
    }

    pub(crate) fn failure_timeout(&self) -> Duration {
        Duration::from_millis(
            self.heartbeat_ms
                .saturating_mul(u64::from(self.missed_heartbeats_max.max(1))),
        )
    }

    pub(crate) fn plan_config(&self) -> PlanConfig {
        PlanConfig {
            groups: self.groups,
            replicas: self.replicas,
            bootstrap_nodes_min: self.bootstrap_nodes_min,
            repairs_max: self.repairs_max,
            leader_moves_max: self.leader_moves_per_tick_max,
            repair_enabled: self.repair_enabled,
        }
    }
}

/// Most replicas per group: a Raft group's writes wait for a majority, and beyond seven the
/// cost outgrows what one more tolerated failure buys.
pub const REPLICAS_MAX: usize = 7;

/// Why a center operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CenterError {
    #[error("invalid center configuration: {reason}")]
    Config { reason: String },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("this replica does not lead the center (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("center group {what} failed: {reason}")]
    Raft { what: &'static str, reason: String },
    #[error("corrupt center record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error("refused: {reason}")]
    Refused { reason: String },
    /// The center leader has not run its first control round of its term yet: a request
    /// that would be kept in the term's soft state is to be asked again in a moment.
    #[error("the center leader is starting its term; ask again in a moment")]
    Starting,
    /// An operator cancelled the migration whose step this was (internal to the migration
    /// task: it rolls the migration back).
    #[error("migration {id} cancelled by an operator")]
    Cancelled { id: u64 },
    /// A group a migration step was for is no longer in the routing table (a never-formed
    /// group re-created under a new id).
    #[error("group {group} is no longer in the routing table")]
    GroupGone { group: GroupId },
    /// A migration step failed the same way many times in a row before the cutover (handled
    /// in the migration task: it rolls the migration back).
    #[error("group {group} keeps failing a migration step: {reason}")]
    StepRefused { group: GroupId, reason: String },
}
