//! The Raft service: openraft's RPCs between the replicas of one slot group.
//!
//! The payloads are openraft's own request and response types, postcard-encoded by the
//! storage node (`larder_storage::raft::wire` ties each payload to its response type). The
//! protocol keeps them opaque so that nothing client-facing links openraft.

use bytes::Bytes;
use larder_core::GroupId;
use serde::{Deserialize, Serialize};

use crate::{Request, Rpc};

/// Which openraft RPC a [`RaftRequest`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftCall {
    Append,
    Vote,
    PreVote,
    /// A whole snapshot in one message (bounded by the frame limit).
    Snapshot,
    /// openraft's own hand-over between a group's members; not to be confused with
    /// [`crate::TransferLeadership`], the center's request to start one.
    TransferLeader,
}

/// One openraft RPC for `group`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaftRequest {
    pub group: GroupId,
    pub call: RaftCall,
    pub payload: Bytes,
}

/// The answer: openraft's response (or error) for the call, encoded by the storage node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftResponse {
    pub payload: Bytes,
}

impl Rpc for RaftRequest {
    type Response = RaftResponse;
}

impl From<RaftRequest> for Request {
    fn from(request: RaftRequest) -> Request {
        Request::Raft(request)
    }
}

/// A node's periodic word to its peers: the slot groups it leads now, each with its term and
/// commit index. One beacon per peer per heartbeat interval stands in for the heartbeats of
/// every settled group (`larder_storage::quiet`): a follower keeps its election off while its
/// group's leader is heard from this way, and a node that stops sending (dead, cut off, no
/// longer leading the group) lets the followers elect as openraft's own timer would.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderBeacon {
    /// Each group the sender leads.
    pub leading: Vec<LedGroup>,
}

/// One group a [`LeaderBeacon`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedGroup {
    pub group: GroupId,
    /// The sender leads `group` in this term.
    pub term: u64,
    /// The index of the last entry the sender knows committed in `group` (`None`: none yet).
    /// A follower that knows less says so in its [`BeaconAck`]: the heartbeat that would have
    /// told it may have been lost just before the group went quiet, and a quiet group sends no
    /// other.
    pub committed: Option<u64>,
}

/// The answer to a [`LeaderBeacon`]: the groups it named whose commit index this replica has
/// not learned yet. The leader keeps those groups' heartbeats on (each carries the commit
/// index) until no follower reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BeaconAck {
    pub lagging: Vec<GroupId>,
}

impl Rpc for LeaderBeacon {
    type Response = BeaconAck;
}

impl From<LeaderBeacon> for Request {
    fn from(beacon: LeaderBeacon) -> Request {
        Request::Beacon(beacon)
    }
}

/// A leader's read round (`larder_storage::read_rounds`): for each group named, "is your
/// vote still for me in this term?". One message per peer carries every group of the round
/// that has the peer among its voters, so a node leading many groups confirms the leadership
/// of all of them with one exchange per peer, instead of one heartbeat round per group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadConfirm {
    /// `(group, term)`: the sender leads `group` with the leader id `(term, sender)`.
    pub groups: Vec<(GroupId, u64)>,
}

/// The answer to a [`ReadConfirm`]: for each group it named, in order, whether this replica's
/// saved vote is for the sender in that term (so it has voted for no later leader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadConfirmAck {
    pub held: Vec<bool>,
}

impl Rpc for ReadConfirm {
    type Response = ReadConfirmAck;
}

impl From<ReadConfirm> for Request {
    fn from(confirm: ReadConfirm) -> Request {
        Request::ReadConfirm(confirm)
    }
}
