//! The center service: storage nodes' heartbeats to the center leader, and routing fetches
//! from anyone to any center replica, observer or storage node.

use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

use crate::{Request, Rpc};

/// Every center request, for dispatch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CenterRequest {
    Heartbeat(Heartbeat),
    GetRouting(GetRouting),
    MoveSlots(crate::migration::MoveSlots),
    GetMigrations(crate::migration::GetMigrations),
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
}

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
}

/// How a center replica answered a center request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CenterResponse<T> {
    Ok(T),
    /// Only the center leader takes heartbeats; try `leader_hint`.
    NotLeader {
        leader_hint: Option<NodeId>,
    },
    /// This process cannot answer (not a center, no routing table yet).
    Unavailable {
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
