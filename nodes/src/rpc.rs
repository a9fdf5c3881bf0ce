//! The messages nodes exchange over [`larder_core::env::Net`], and their encoding.
//!
//! Every request is one [`Message`]; the response type depends on the variant (see each
//! variant's doc). Encoded with postcard: compact, and openraft's types serialize with serde.

use bytes::Bytes;
use larder_core::kv::{Command, Reply};
use larder_core::{GroupId, NodeId};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use serde::{Deserialize, Serialize};

use crate::raft::{SessionSeq, SnapshotMeta, TypeConfig, Vote};

#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// -> `Result<AppendEntriesResponse, RaftError>`
    Append {
        group: GroupId,
        request: AppendEntriesRequest<TypeConfig>,
    },
    /// -> `Result<VoteResponse, RaftError>`
    Vote {
        group: GroupId,
        request: VoteRequest<TypeConfig>,
    },
    /// -> `Result<VoteResponse, RaftError>`
    PreVote {
        group: GroupId,
        request: VoteRequest<TypeConfig>,
    },
    /// -> `Result<SnapshotResponse, Fatal>`
    Snapshot {
        group: GroupId,
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    /// -> `Result<TransferLeaderResponse, RaftError>`
    TransferLeader {
        group: GroupId,
        request: TransferLeaderRequest<TypeConfig>,
    },
    /// -> [`ClientResponse`]
    Client(ClientRequest),
}

/// A client's command for one slot group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRequest {
    pub group: GroupId,
    pub command: Command,
    /// Set on writes: lets the group apply a duplicated delivery once.
    pub session: Option<SessionSeq>,
}

/// How a node answered a [`ClientRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The command was executed (a write: committed on a quorum and applied).
    Reply(Reply),
    /// This node does not lead the group; nothing was done. Safe to retry elsewhere.
    NotLeader { leader_hint: Option<NodeId> },
    /// The node could not start the command (unknown group, stopped group, no quorum for a
    /// read). Nothing was done; safe to retry.
    Unavailable { reason: String },
    /// A write whose fate is unknown: it may or may not have been committed (the leader
    /// changed or stopped after appending it). Retrying could apply it twice.
    Indeterminate { reason: String },
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Bytes {
    crate::raft::encode(value)
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    crate::raft::decode(bytes)
}
