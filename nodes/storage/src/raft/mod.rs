//! One Raft group (openraft) over Larder's environment traits.
//!
//! - [`log_store::DiskLogStore`]: the Raft log and vote in [`larder_core::env::Disk`].
//! - [`state_machine::DiskStateMachine`]: applies committed [`Request`]s with
//!   [`larder_core::kv::execute`] and keeps the KV state in the disk's state space.
//! - [`row_cache::RowCache`]: the node's memory copy of the state rows its leaders read.
//! - [`network::RaftNet`]: openraft's network over [`larder_core::env::Net`].
//! - [`runtime::LarderRuntime`]: tokio tasks, with time and randomness from the node's environment
//!   (a task-local [`runtime::RaftContext`]).

pub mod audit;
pub mod group_commit;
mod log_cache;
pub mod log_store;
pub mod network;
pub mod row_cache;
mod rows;
pub mod runtime;
mod sessions;
pub mod state_machine;
pub mod wire;

use std::fmt;

use larder_core::kv::{Command, Reply};
pub use larder_protocol::SessionSeq;
use serde::{Deserialize, Serialize};

/// What a slot group's log carries: a command, stamped with the leader's wall clock so that
/// every replica computes TTLs from the same time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub now_ms: u64,
    pub command: Command,
    pub session: Option<SessionSeq>,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.command.name(), self.now_ms)
    }
}

openraft::declare_raft_types!(
    /// openraft's type configuration for a Larder slot group.
    pub TypeConfig:
        D = Request,
        R = Reply,
        NodeId = u64,
        Node = openraft::EmptyNode,
        AsyncRuntime = runtime::LarderRuntime,
);

/// A slot group's Raft handle over disk `D`.
pub type Raft<D> = openraft::Raft<TypeConfig, state_machine::DiskStateMachine<D>>;
pub type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshots travel and install as one in-memory buffer (see `state_machine` for the format).
pub type SnapshotData = std::io::Cursor<Vec<u8>>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;

/// Encodes a Raft type for the disk (the wire uses `larder_protocol`'s codec).
pub(crate) fn encode<T: Serialize>(value: &T) -> bytes::Bytes {
    // Serializing plain data into a Vec cannot fail.
    bytes::Bytes::from(postcard::to_allocvec(value).expect("raft value serializes"))
}

/// Decodes what [`encode`] wrote; a failure means corruption or a version mismatch.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    postcard::from_bytes(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
