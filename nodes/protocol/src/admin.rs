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
    TrackSlots(TrackSlots),
    UntrackSlots(UntrackSlots),
    IngestRecords(IngestRecords),
    ReadSlots(ReadSlots),
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

/// To the leader of a slot migration's source group: record every key of `ranges` that
/// changes from now on (`Command::TrackSlots`), until [`UntrackSlots`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackSlots {
    pub group: GroupId,
    pub migration: u64,
    pub ranges: Vec<(u16, u16)>,
    /// The step's order (see [`IngestRecords::stamp`]).
    pub stamp: Option<larder_core::kv::StepStamp>,
}

/// To the leader of the source group: the migration is over (done or rolled back); stop
/// recording and forget the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UntrackSlots {
    pub group: GroupId,
    pub migration: u64,
    /// The step's order (see [`IngestRecords::stamp`]).
    pub stamp: Option<larder_core::kv::StepStamp>,
}

/// Most bytes of records one [`IngestRecords`] or one [`SlotPage`] carries (keys and records;
/// a single record larger than this travels alone).
pub const SLOT_PAGE_BYTES_MAX: usize = 1 << 20;
/// Most records one [`ReadSlots`] page carries.
pub const SLOT_PAGE_ROWS_MAX: usize = 4096;

/// To the leader of `group`: write these records as they are (`Command::Ingest`): the copy
/// into a migration's target group, and the source's cleanup (deletes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRecords {
    pub group: GroupId,
    /// The source group's clock when the records were read.
    pub clock_ms: u64,
    /// Client key -> encoded record, `None` to delete.
    pub records: Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
    /// The page's order (`None`: applied unconditionally); a page at or below a stamp the
    /// group applied changes nothing.
    pub stamp: Option<larder_core::kv::StepStamp>,
}

/// What a [`ReadSlots`] reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotRead {
    /// The records of the slots, in key order, after key `after` (`None`: from the start).
    Copy { after: Option<bytes::Bytes> },
    /// The keys of the slots changed after log index `since` (the group must be tracking
    /// them), with their current records (`None`: deleted), in key order after `after`.
    Changes {
        since: u64,
        after: Option<bytes::Bytes>,
    },
}

/// To the leader of `group`: one page of records of `ranges`, read after a read-index round
/// (so it reflects every write committed before the request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadSlots {
    pub group: GroupId,
    pub ranges: Vec<(u16, u16)>,
    pub read: SlotRead,
}

/// One page of a [`ReadSlots`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotPage {
    /// Every record is as of this applied index (or later).
    pub applied_index: u64,
    /// The group clock at that index (see [`IngestRecords::clock_ms`]).
    pub clock_ms: u64,
    pub records: Vec<(bytes::Bytes, Option<bytes::Bytes>)>,
    /// Where the next page starts (`after`), if there is more.
    pub next: Option<bytes::Bytes>,
}

/// The answer to a [`ReadSlots`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadSlotsResponse {
    Page(SlotPage),
    NotLeader { leader_hint: Option<NodeId> },
    Failed { reason: String },
}

impl Rpc for ReadSlots {
    type Response = ReadSlotsResponse;
}

impl From<ReadSlots> for Request {
    fn from(request: ReadSlots) -> Request {
        Request::Admin(AdminRequest::ReadSlots(request))
    }
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
    SetOwnedSlots,
    TrackSlots,
    UntrackSlots,
    IngestRecords
);
