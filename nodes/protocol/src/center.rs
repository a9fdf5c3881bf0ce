//! The center service: storage nodes' heartbeats to the center leader, routing fetches from
//! anyone to any center replica, observer or storage node, and the cluster's status from the
//! center leader (`larder admin status`).

use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

use crate::{Request, Rpc};

/// Every center request, for dispatch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CenterRequest {
    Heartbeat(Heartbeat),
    GetRouting(GetRouting),
    GetStatus(GetStatus),
    MoveSlots(crate::migration::MoveSlots),
    GetMigrations(crate::migration::GetMigrations),
    SteerMigration(crate::migration::SteerMigration),
    SplitGroup(crate::migration::SplitGroup),
    DrainNode(DrainNode),
}

/// Anyone -> any center replica or observer: the routing table, if newer than
/// `known_epoch`.
///
/// Answered from the replica's **applied** state without a Raft round, so it is eventually
/// consistent: a follower or observer may lag the center leader by a few log entries and
/// hand out an older epoch. Clients tolerate that because a stale table is only ever a
/// performance problem, never a safety one: the slot groups themselves decide who leads and
/// who is a member, so a request sent to a node that no longer serves a group is answered
/// `NotLeader`/`Unavailable` (nothing happened) and the client retries or refreshes. The
/// epoch only moves forward in every copy (`SharedRouting::offer`), so a lagging replica
/// can delay an update, never undo one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetRouting {
    pub known_epoch: u64,
}

/// Storage node -> center replica, every heartbeat interval: the node is alive, where it
/// listens, and what it knows of each group it hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: NodeId,
    /// The address other processes reach this node at (registry entry; opaque to the center).
    pub address: String,
    /// Epoch of the newest routing table the node holds (0: none), so the center sends a table
    /// back only when it is newer.
    pub known_epoch: u64,
    pub groups: Vec<GroupStatus>,
    /// The hottest keys and slots of the groups the node leads.
    pub hot: HotReport,
}

/// A storage node's hottest keys and slots over its last window, among the requests it served
/// as a group leader (every write and every linearizable read of a group reaches its
/// leader, whichever proxy sent it): at most [`HOT_REPORTED_MAX`] of each, the hottest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotReport {
    pub keys: Vec<larder_core::hotkeys::HotKey>,
    pub slots: Vec<larder_core::hotkeys::HotSlot>,
}

/// Hot keys (and hot slots) one node reports, at most.
pub const HOT_REPORTED_MAX: usize = 8;

/// Longest key a [`HotReport`] carries, in bytes (longer ones are cut): heartbeats and the
/// status stay small whatever the keys.
pub const HOT_KEY_BYTES_MAX: usize = 256;

/// One hosted group as its replica sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub group: GroupId,
    pub is_leader: bool,
    /// The replica's current Raft term: of two replicas claiming leadership, the higher term is
    /// the real one.
    pub term: u64,
    /// Index of the last applied log entry (0: none).
    pub last_applied: u64,
    /// The replica has a Raft log or vote: it was formed or has joined. A replica created by
    /// `AddGroup` and not yet contacted by the group's leader has neither.
    pub initialized: bool,
    /// The group's **committed** membership as this replica knows it; `None` before the first
    /// one is known. Committed memberships are never rolled back, and the one at the highest
    /// log index is the newest, so reports from different replicas can be merged safely.
    pub membership: Option<MembershipStatus>,
    /// The replica was retired because a record on its disk is corrupt (why): it serves
    /// nothing and takes no part in its group's Raft; the center replaces it like a dead one.
    pub broken: Option<String>,
    /// An estimate of the records this replica holds: the rows of its last snapshot plus the
    /// entries applied since (each adds at most one record), so from above by at most the
    /// snapshot interval while no slots leave the group; 0 until its first snapshot after a
    /// start, and for a broken replica. The center picks the group to count for an automatic
    /// split by it (`CenterConfig::split_records_max`).
    pub records_estimate: u64,
}

/// A committed membership of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipStatus {
    /// Log index of the membership entry.
    pub index: u64,
    /// Every voter (of all voter sets while the membership is joint).
    pub voters: Vec<NodeId>,
    /// The voter sets: one, or two while a change is in progress (joint consensus) or was cut
    /// short by a leader change; the last one is where the change is going.
    pub configs: Vec<Vec<NodeId>>,
    pub learners: Vec<NodeId>,
}

impl MembershipStatus {
    /// A joint configuration: a voter change in progress, or one cut short.
    pub fn is_joint(&self) -> bool {
        self.configs.len() > 1
    }
}

/// Most node addresses one [`HeartbeatAck`] or [`RoutingAnswer`] carries (the center tracks at
/// most as many nodes); receivers ignore any beyond it.
pub const ADDRESSES_MAX: usize = 4096;

/// Longest node address the center hands on, in bytes (`host:port`; longer ones are left out).
pub const ADDRESS_BYTES_MAX: usize = 256;

/// The center's answer to a [`Heartbeat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// The center's current routing epoch (0: not bootstrapped yet).
    pub epoch: u64,
    /// The table itself, when newer than the heartbeat's `known_epoch`.
    pub routing: Option<RoutingTable>,
    /// Where the registered storage nodes listen (every node not `Removed` that reported an
    /// address; at most [`ADDRESSES_MAX`], by id), sent with every ack: an address can change
    /// without a routing epoch (a node restarted on another port), and a node placed in a
    /// group with this one must be reachable for Raft before anything else tells of it.
    pub addresses: Vec<(NodeId, String)>,
    /// The center's heartbeat interval in milliseconds. A node follows it: the center judges
    /// a node down after `missed_heartbeats_max` of its own intervals, so a node configured
    /// to beat slower would be declared dead while healthy.
    pub heartbeat_ms: u64,
}

/// The answer to [`GetRouting`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingAnswer {
    /// The answering replica's routing epoch.
    pub epoch: u64,
    /// The table, when newer than the request's `known_epoch`.
    pub table: Option<RoutingTable>,
    /// Where the registered storage nodes listen, as in [`HeartbeatAck::addresses`], whether
    /// or not the table is newer (a storage node answers with the addresses its heartbeats
    /// brought). Eventually consistent like the table.
    pub addresses: Vec<(NodeId, String)>,
    /// The center replica the answering one believes leads the center group (`None` from a
    /// storage node, or when it knows none): it applies a new table first, so a client asks it
    /// first next time (a follower learns of a commit only with the leader's next message).
    pub center_leader: Option<NodeId>,
}

/// A registered node's durable state, as the center records it (its registry entry, and
/// [`NodeSummary::state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NodeState {
    /// Heard from within the failure timeout.
    Up,
    /// Missed heartbeats for the failure timeout; its replicas get replaced.
    Down,
    /// Out of service: never given replicas again; any replica it still hosts is replaced
    /// like a down node's. A drained node ends here once it hosts nothing.
    Removed,
    /// Being drained by an operator ([`DrainNode`]): never given replicas again, it hands its
    /// leaderships to other replicas and its replicas are replaced one by one while it keeps
    /// serving (learner-first, so each group keeps its full replica count throughout); it
    /// becomes `Removed` once no group of the table names it.
    Draining,
}

/// Operator -> center leader: drain storage node `node` ([`NodeState::Draining`]). Answered
/// with its registry state, or `Unavailable` with the reason (unknown or removed node, or too
/// few other nodes to hold every group's replicas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainNode {
    pub node: NodeId,
}

impl Rpc for DrainNode {
    type Response = CenterResponse<NodeState>;
}

impl From<DrainNode> for Request {
    fn from(request: DrainNode) -> Request {
        Request::Center(CenterRequest::DrainNode(request))
    }
}

/// What the center leader currently believes about a node's liveness (its soft state, not
/// recorded; [`NodeSummary::liveness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Liveness {
    /// A heartbeat arrived within the failure timeout.
    Up,
    /// Not heard from since this center leader took over, but the failure timeout has not run
    /// out since then: neither a candidate for new replicas nor a reason for repairs.
    Grace,
    /// No heartbeat for the failure timeout (or recorded down and not heard from since).
    Down,
}

/// Operator -> center leader: the cluster as the center sees it ([`ClusterStatus`]).
///
/// Only the center leader answers (a follower answers `NotLeader` with its hint): the
/// liveness of nodes, what their heartbeats said and the repairs under way are the leader's
/// soft state, which no other replica has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetStatus;

/// Longest text of one broken replica's reason in a [`ClusterStatus`], in bytes (longer ones
/// are cut): the status stays bounded by the number of nodes and groups.
pub const STATUS_REASON_BYTES_MAX: usize = 256;

/// The answer to [`GetStatus`]: what the center leader decided from in its latest control
/// round (its planner's view: the routing table and registry read linearizably, the nodes'
/// last heartbeats, liveness, repairs), so it is at most one round (one heartbeat interval)
/// old; [`ClusterStatus::round_age_ms`] says how old.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The center replica that answered: the center leader.
    pub center_leader: NodeId,
    /// Its term as center leader.
    pub center_term: u64,
    /// The center replicas (the voters of the center group).
    pub centers: Vec<NodeId>,
    /// How long before the answer the round it describes ran, in milliseconds.
    pub round_age_ms: u64,
    /// The routing epoch (0: no table yet).
    pub epoch: u64,
    /// Every node registered or heard from, by id (at most [`ADDRESSES_MAX`]).
    pub nodes: Vec<NodeSummary>,
    /// Every group of the routing table, by id.
    pub groups: Vec<GroupSummary>,
    /// Replica replacements under way, by group.
    pub repairs: Vec<RepairSummary>,
}

/// One storage node in a [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    pub id: NodeId,
    /// Its registered address (or, not yet registered, the one its heartbeat gave).
    pub address: String,
    /// Its registry state; `None`: heard from but not registered yet.
    pub state: Option<NodeState>,
    pub liveness: Liveness,
    /// The groups its last heartbeat reported hosting (none before one arrived).
    pub groups: Vec<GroupId>,
    /// How many groups it leads ([`GroupSummary::leader`]).
    pub leads: u64,
    /// Its hottest keys and slots (its last heartbeat's; empty before one arrived).
    pub hot: HotReport,
}

/// One slot group in a [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub group: GroupId,
    /// Its replicas as the routing table lists them, in placement order.
    pub replicas: Vec<NodeId>,
    /// The live node whose heartbeat claims leadership with the highest term (`None`: no
    /// live node claims it).
    pub leader: Option<GroupLeader>,
    /// Every replica in the table, in its order, then every other node reporting the group
    /// (a replacement catching up, a stale copy), by id.
    pub reports: Vec<ReplicaSummary>,
    /// The slots it owns, as inclusive `(first, last)` ranges in ascending order.
    pub slots: Vec<(u16, u16)>,
}

/// A group's leader and its term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLeader {
    pub node: NodeId,
    pub term: u64,
}

/// One replica of a group as its node's last heartbeat reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSummary {
    pub node: NodeId,
    /// The routing table lists it among the group's replicas.
    pub in_table: bool,
    /// Index of its last applied log entry; `None`: its node reported no such replica (not
    /// heard from, or not hosting it yet).
    pub last_applied: Option<u64>,
    /// Why it was retired as corrupt ([`GroupStatus::broken`], cut to
    /// [`STATUS_REASON_BYTES_MAX`]).
    pub broken: Option<String>,
}

/// A replica replacement under way: `new` is being added to `group`, learner first, to take
/// `old`'s place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairSummary {
    pub group: GroupId,
    pub old: NodeId,
    pub new: NodeId,
}

/// How a center replica answered a center request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CenterResponse<T> {
    Ok(T),
    /// Only the center leader takes heartbeats and answers status requests; try
    /// `leader_hint`.
    NotLeader {
        leader_hint: Option<NodeId>,
    },
    /// This process cannot answer (not a center, no routing table yet, a leader starting its
    /// term): asking again, or another replica, may do it.
    Unavailable {
        reason: String,
    },
    /// The center leader judged the request and declines it (a migration that has ended,
    /// slots of two groups): asking again will not change that.
    Refused {
        reason: String,
    },
}

impl Rpc for Heartbeat {
    /// A replica that does not lead the center answers `NotLeader` with its hint; a process
    /// that is no center answers `Unavailable`.
    type Response = CenterResponse<HeartbeatAck>;
}

impl From<Heartbeat> for Request {
    fn from(request: Heartbeat) -> Request {
        Request::Center(CenterRequest::Heartbeat(request))
    }
}

impl Rpc for GetRouting {
    type Response = CenterResponse<RoutingAnswer>;
}

impl From<GetRouting> for Request {
    fn from(request: GetRouting) -> Request {
        Request::Center(CenterRequest::GetRouting(request))
    }
}

impl Rpc for GetStatus {
    /// A replica that does not lead the center answers `NotLeader` with its hint; the leader
    /// answers `Unavailable` until its first control round, a process that is no center
    /// always.
    type Response = CenterResponse<ClusterStatus>;
}

impl From<GetStatus> for Request {
    fn from(request: GetStatus) -> Request {
        Request::Center(CenterRequest::GetStatus(request))
    }
}
