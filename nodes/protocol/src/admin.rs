//! The admin service: the center leader's instructions to storage nodes. Every request is
//! answered with an [`AdminResponse`].

use larder_core::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

use crate::{Request, Rpc};

/// Every admin request, for dispatch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminRequest {
    AddGroup(AddGroup),
    RemoveGroup(RemoveGroup),
    ReplaceVoter(ReplaceVoter),
    TransferLeadership(TransferLeadership),
    SetOwnedSlots(SetOwnedSlots),
}

/// Host a replica of `group` (created empty; Raft fills it as a learner). With `initialize`,
/// also form the group with these voters if it has never been formed (sent to one replica of a
/// brand-new group only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddGroup {
    pub group: GroupId,
    pub initialize: Option<Vec<NodeId>>,
}

/// Drop the replica of `group` (the node is no longer a member).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveGroup {
    pub group: GroupId,
}

/// To the leader of `group`: replace voter `old` with `new`, learner first
/// (`StorageNode::replace_voter`), giving up after `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceVoter {
    pub group: GroupId,
    pub old: NodeId,
    pub new: NodeId,
    pub timeout_ms: u64,
}

/// To the leader of `group`: hand leadership to voter `to` (leader rebalancing). Not to be
/// confused with [`crate::RaftCall::TransferLeader`], openraft's own RPC that carries out the
/// hand-over between the group's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferLeadership {
    pub group: GroupId,
    pub to: NodeId,
}

/// To the leader of `group`: from now on the group owns exactly `ownership`'s slots, set
/// through its Raft log (`Command::OwnSlots`, ignored unless its epoch is newer than the one
/// applied); commands for other slots are then refused at apply time. Answered `Done` once
/// applied on the leader. The first step of moving slots between groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetOwnedSlots {
    pub group: GroupId,
    pub ownership: larder_core::slots::Ownership,
}

/// How a storage node answered an admin request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResponse {
    Done,
    /// The request must go to the group's leader, which may be `leader_hint`.
    NotLeader {
        leader_hint: Option<NodeId>,
    },
    Failed {
        reason: String,
    },
}

macro_rules! admin_rpc {
    ($($name:ident),*) => {$(
        impl Rpc for $name {
            type Response = AdminResponse;
        }
        impl From<$name> for Request {
            fn from(request: $name) -> Request {
                Request::Admin(AdminRequest::$name(request))
            }
        }
    )*};
}

admin_rpc!(
    AddGroup,
    RemoveGroup,
    ReplaceVoter,
    TransferLeadership,
    SetOwnedSlots
);
