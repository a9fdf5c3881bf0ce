//! `larder-protocol`: the messages Larder's processes exchange over
//! [`larder_core::env::Net`], one request enum per service, each request type tied to its
//! response type by [`Rpc`] so a call is checked by the compiler:
//!
//! | service | requests | answered by |
//! |---|---|---|
//! | [`raft`] | [`RaftRequest`] (openraft's RPCs as opaque payloads) | storage nodes |
//! | [`raft`] | [`LeaderBeacon`], [`ReadConfirm`] (node to node, for every group at once) | storage nodes |
//! | [`client`] | [`ClientRequest`], [`ReadBatch`] (several groups' reads for one node) | storage nodes |
//! | [`center`] | [`Heartbeat`], [`GetRouting`], [`GetStatus`] | center replicas, observers (and storage nodes, for routing) |
//! | [`admin`] | [`AddGroup`], [`RemoveGroup`], [`ReplaceVoter`], [`TransferLeadership`] | storage nodes, sent by the center leader |
//! | [`backup`] | [`BackupRead`] (a group's base and committed entries) | storage nodes, for `larder backup` |
//!
//! Client-facing messages carry no openraft types: the client SDK and the proxy do not link
//! openraft. Raft messages travel as postcard bytes that only the storage node decodes.
//!
//! Encoded with postcard. Decoding is bounded here, once ([`decode_request`],
//! [`decode_response`]): nothing larger than [`MESSAGE_BYTES_MAX`] is decoded, and postcard
//! never preallocates more than the input can hold.

pub mod addresses;
pub mod admin;
pub mod backup;
pub mod center;
pub mod client;
pub mod migration;
pub mod raft;

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use larder_core::env::{MESSAGE_BYTES_MAX, Net, NetError};
use larder_core::{GroupId, NodeId};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use admin::{
    AddGroup, AdminRequest, AdminResponse, IngestRecords, ReadSlots, ReadSlotsResponse,
    RemoveGroup, ReplaceVoter, SLOT_PAGE_BYTES_MAX, SLOT_PAGE_ROWS_MAX, SetOwnedSlots, SlotPage,
    SlotRead, TrackSlots, TransferLeadership, UntrackSlots,
};
pub use backup::{
    BACKUP_CHUNK_BYTES, BackupAnswer, BackupPart, BackupRead, BackupReadError, Base, BaseChunk,
    EntriesChunk, EntriesRead, read_base, read_entries,
};
pub use center::{
    ADDRESS_BYTES_MAX, ADDRESSES_MAX, CenterRequest, CenterResponse, ClusterStatus, DrainNode,
    GetRouting, GetStatus, GroupLeader, GroupStatus, GroupSummary, HOT_KEY_BYTES_MAX,
    HOT_REPORTED_MAX, Heartbeat, HeartbeatAck, HotReport, Liveness, MembershipStatus, NodeState,
    NodeSummary, RepairSummary, ReplicaSummary, RoutingAnswer, STATUS_REASON_BYTES_MAX,
};
pub use client::{
    ClientRequest, ClientResponse, READ_BATCH_MAX, ReadBatch, ReadBatchAnswer, SESSION_EXPIRED,
    STALE_DUPLICATE, SessionSeq,
};
pub use migration::{
    GetMigrations, Migration, MigrationPhase, MoveSlots, SplitGroup, Steer, SteerMigration,
};
pub use raft::{
    BeaconAck, LeaderBeacon, LedGroup, RaftCall, RaftRequest, RaftResponse, ReadConfirm,
    ReadConfirmAck,
};

/// The Raft group of the center replicas. Never a slot group: routing tables number slot groups
/// from 1. Part of the protocol because storage nodes treat it specially (never removed by an
/// admin message, never judged by a routing table).
pub const CENTER_GROUP: GroupId = 0;

/// Everything one process can ask another: the envelope on the wire.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub enum Request {
    Raft(RaftRequest),
    Client(ClientRequest),
    Center(CenterRequest),
    Admin(AdminRequest),
    /// The groups a node leads, for its peers (see [`LeaderBeacon`]).
    Beacon(LeaderBeacon),
    /// A leader's read round: are the named groups' votes still its own (see [`ReadConfirm`]).
    ReadConfirm(ReadConfirm),
    /// Reads of several groups for one node (see [`ReadBatch`]).
    ReadBatch(ReadBatch),
    /// A part of a group's backup (see [`backup`]).
    Backup(BackupRead),
}

/// A request type and the type of its answer. Implemented by every request struct of every
/// service; [`call`] and [`respond`] are generic over it, so a caller cannot decode an answer
/// as the wrong type, and a server cannot answer with one.
pub trait Rpc: Into<Request> {
    type Response: Serialize + DeserializeOwned;
}

/// Why a typed call produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The transport failed; see [`NetError`] for which failures prove nothing was handled.
    #[error(transparent)]
    Net(#[from] NetError),
    /// An answer came back but is not the request's response type (a version mismatch or
    /// corruption): the peer handled the request, with an unknown outcome.
    #[error("bad response from node {from}: {reason}")]
    BadResponse { from: NodeId, reason: String },
}

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("undecodable message: {reason}")]
    Malformed { reason: String },
}

/// A request encoded once, to be sent to one or more peers (a heartbeat round, a routing fetch
/// from several sources, a client's retries) with its response type still known.
pub struct Encoded<R: Rpc> {
    bytes: Bytes,
    response: PhantomData<fn() -> R>,
}

impl<R: Rpc> Clone for Encoded<R> {
    fn clone(&self) -> Self {
        Encoded {
            bytes: self.bytes.clone(),
            response: PhantomData,
        }
    }
}

impl<R: Rpc> std::fmt::Debug for Encoded<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encoded({} bytes)", self.bytes.len())
    }
}

impl<R: Rpc> Encoded<R> {
    pub fn new(request: R) -> Self {
        Encoded {
            bytes: encode(&request.into()),
            response: PhantomData,
        }
    }

    /// The bytes on the wire.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

/// Sends `request` to `to` and decodes the answer as `R::Response`.
pub async fn call<N: Net, R: Rpc>(
    net: &N,
    to: NodeId,
    request: &Encoded<R>,
    timeout: Duration,
) -> Result<R::Response, CallError> {
    let bytes = net.call(to, request.bytes.clone(), timeout).await?;
    decode_response::<R>(&bytes).map_err(|error| CallError::BadResponse {
        from: to,
        reason: error.to_string(),
    })
}

/// Encodes the answer to a request of type `R`.
pub fn respond<R: Rpc>(response: &R::Response) -> Bytes {
    encode(response)
}

/// Decodes a request that arrived over the network.
pub fn decode_request(bytes: &[u8]) -> Result<Request, DecodeError> {
    decode(bytes)
}

/// Decodes the answer to a request of type `R`.
pub fn decode_response<R: Rpc>(bytes: &[u8]) -> Result<R::Response, DecodeError> {
    decode(bytes)
}

/// The answer to a request that did not decode. Shaped as a [`ClientResponse`] (nothing was
/// done, safe to retry): the most common sender of a malformed request is a client of another
/// version, and every other caller fails to decode it as its own type and reports that.
pub fn undecodable(error: &DecodeError) -> Bytes {
    encode(&ClientResponse::Unavailable {
        reason: format!("undecodable request: {error}"),
    })
}

/// Encodes a protocol value (also used for payloads nested in a message, such as Raft's).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Bytes {
    // Serializing plain data into a Vec cannot fail.
    Bytes::from(postcard::to_allocvec(value).expect("protocol value serializes"))
}

/// Decodes what [`encode`] wrote, refusing anything larger than a message.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() > MESSAGE_BYTES_MAX {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: MESSAGE_BYTES_MAX,
        });
    }
    postcard::from_bytes(bytes).map_err(|e| DecodeError::Malformed {
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_core::kv::Command;
    use proptest::prelude::*;

    #[test]
    fn a_request_round_trips_through_the_envelope() {
        let request = ClientRequest {
            group: 3,
            command: Command::Get {
                key: Bytes::from_static(b"k"),
            },
            session: Some(SessionSeq { session: 7, seq: 9 }),
            epoch: 4,
        };
        let encoded = Encoded::new(request.clone());
        match decode_request(encoded.bytes()).expect("decodes") {
            Request::Client(back) => {
                assert_eq!(back.group, 3);
                assert_eq!(back.session, request.session);
                assert_eq!(back.epoch, 4);
            }
            other => panic!("wrong service: {other:?}"),
        }
    }

    #[test]
    fn a_status_request_and_its_answer_round_trip() {
        let encoded = Encoded::new(GetStatus);
        assert!(matches!(
            decode_request(encoded.bytes()),
            Ok(Request::Center(CenterRequest::GetStatus(GetStatus)))
        ));
        let status = ClusterStatus {
            center_leader: 101,
            center_term: 2,
            centers: vec![101, 102, 103],
            round_age_ms: 5,
            epoch: 3,
            nodes: vec![NodeSummary {
                id: 1,
                address: "127.0.0.1:7001".into(),
                state: Some(NodeState::Up),
                liveness: Liveness::Grace,
                groups: vec![1],
                leads: 1,
                hot: HotReport::default(),
            }],
            groups: vec![GroupSummary {
                group: 1,
                replicas: vec![1],
                leader: Some(GroupLeader { node: 1, term: 4 }),
                reports: vec![ReplicaSummary {
                    node: 1,
                    in_table: true,
                    last_applied: Some(9),
                    broken: Some("checksum".into()),
                }],
                slots: vec![(0, 16383)],
            }],
            repairs: vec![RepairSummary {
                group: 1,
                old: 2,
                new: 1,
            }],
        };
        let answer = respond::<GetStatus>(&CenterResponse::Ok(status.clone()));
        assert_eq!(
            decode_response::<GetStatus>(&answer).expect("decodes"),
            CenterResponse::Ok(status)
        );
    }

    #[test]
    fn a_response_decodes_only_as_its_request_type() {
        let answer = respond::<ClientRequest>(&ClientResponse::StaleEpoch { epoch: 5 });
        assert_eq!(
            decode_response::<ClientRequest>(&answer).expect("decodes"),
            ClientResponse::StaleEpoch { epoch: 5 }
        );
    }

    #[test]
    fn nothing_larger_than_a_message_is_decoded() {
        let too_large = vec![0u8; MESSAGE_BYTES_MAX + 1];
        assert_eq!(
            decode_request(&too_large).map(|_| ()),
            Err(DecodeError::TooLarge {
                size: MESSAGE_BYTES_MAX + 1,
                limit: MESSAGE_BYTES_MAX
            })
        );
        // At the limit the size check passes and postcard judges the bytes.
        assert!(!matches!(
            decode_request(&too_large[..MESSAGE_BYTES_MAX]),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder: they decode or give an error.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_request(&bytes);
            let _ = decode_response::<Heartbeat>(&bytes);
            let _ = decode_response::<GetStatus>(&bytes);
        }
    }
}
