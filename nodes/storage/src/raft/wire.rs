//! openraft's RPCs on the wire: each payload type tied to its response type, so the sender
//! ([`super::network::RaftPeer`]) and the receiver (`StorageNode::handle_raft`) cannot disagree.
//! The protocol crate carries them as opaque bytes ([`larder_protocol::RaftRequest`]), which
//! keeps openraft out of everything client-facing.

use larder_core::GroupId;
use larder_protocol::{DecodeError, RaftCall, RaftRequest, RaftResponse, decode, encode};
use openraft::error::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{SnapshotMeta, TypeConfig, Vote};

/// An openraft request payload and the response it gets.
pub trait RaftPayload: Serialize + DeserializeOwned {
    type Response: Serialize + DeserializeOwned;
}

impl RaftPayload for AppendEntriesRequest<TypeConfig> {
    type Response = Result<AppendEntriesResponse<TypeConfig>, RaftError<TypeConfig>>;
}

/// Votes and pre-votes share the payload type; [`RaftCall`] tells them apart.
impl RaftPayload for VoteRequest<TypeConfig> {
    type Response = Result<VoteResponse<TypeConfig>, RaftError<TypeConfig>>;
}

/// openraft answers a transfer with `Fatal`, not `RaftError` (the untyped messages before
/// this module decoded it as `RaftError`, so a refused transfer read as a garbled response).
impl RaftPayload for TransferLeaderRequest<TypeConfig> {
    type Response = Result<TransferLeaderResponse<TypeConfig>, Fatal<TypeConfig>>;
}

/// One chunk of a snapshot: bytes `offset..offset + data.len()` of `total`. A follower takes
/// chunks in order, from offset 0, for one snapshot id and vote at a time, and installs the
/// snapshot when the last arrives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotChunk {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub offset: u64,
    pub total: u64,
    pub data: Vec<u8>,
}

/// A follower's answer to a [`SnapshotChunk`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChunkAnswer {
    /// Taken; send the next.
    Continue,
    /// The last chunk: the snapshot is installed (or refused for a higher vote, which the
    /// response carries).
    Installed(SnapshotResponse<TypeConfig>),
    /// Out of order for what this follower holds (it restarted, or another snapshot began):
    /// start again from offset 0.
    Restart,
}

impl RaftPayload for SnapshotChunk {
    type Response = Result<ChunkAnswer, Fatal<TypeConfig>>;
}

/// The request carrying `payload` as `call` for `group`.
pub fn request<P: RaftPayload>(group: GroupId, call: RaftCall, payload: &P) -> RaftRequest {
    RaftRequest {
        group,
        call,
        payload: encode(payload),
    }
}

/// The payload of a received request.
pub fn payload<P: RaftPayload>(request: &RaftRequest) -> Result<P, DecodeError> {
    decode(&request.payload)
}

/// The answer to a `P` request.
pub fn answer<P: RaftPayload>(response: &P::Response) -> RaftResponse {
    RaftResponse {
        payload: encode(response),
    }
}

/// The response inside the answer to a `P` request.
pub fn response<P: RaftPayload>(answer: &RaftResponse) -> Result<P::Response, DecodeError> {
    decode(&answer.payload)
}
