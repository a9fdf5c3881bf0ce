use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::NodeId;

/// Largest message a [`Net`] carries, in bytes. Snapshots of a slot group travel as one message,
/// so this bounds a group's snapshot size until snapshots are streamed in chunks.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

/// Why a [`Net::call`] produced no response.
///
/// Only [`NetError::Unreachable`] proves the request was never handled; after
/// [`NetError::Timeout`] or [`NetError::Io`] the peer may or may not have handled it, so callers
/// must treat non-idempotent requests as indeterminate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("node {to} is unreachable: {reason}")]
    Unreachable { to: NodeId, reason: String },
    #[error("no response from node {to} within {timeout_ms} ms")]
    Timeout { to: NodeId, timeout_ms: u64 },
    #[error("i/o error talking to node {to}: {reason}")]
    Io { to: NodeId, reason: String },
    #[error("message of {size} bytes exceeds the frame limit of {limit} bytes")]
    FrameTooLarge { size: usize, limit: usize },
    #[error("cannot listen: {reason}")]
    Listen { reason: String },
}

/// Serves requests that arrive over a [`Net`].
pub trait Handler: Clone + Send + Sync + 'static {
    /// Handles one request from `from` and returns the response payload.
    fn handle(&self, from: NodeId, request: Bytes) -> impl Future<Output = Bytes> + Send;
}

/// Message-level request/response between node ids, with deadlines.
///
/// Raft, center heartbeats and migration are all request/response exchanges, so this is the
/// unit the simulator delays, drops, duplicates and partitions. Payloads are opaque bytes; the
/// framing (length prefix, size limit) belongs to the implementation, which in both worlds is
/// `larder_transport::StreamNet` over a byte-stream `Transport` (tokio TCP or turmoil TCP).
///
/// Contract (checked by [`crate::conformance::net_suite`]): a call to a serving peer returns that
/// peer's response; concurrent calls are independent; a call to an unknown or unreachable node
/// fails with an error rather than hanging; no call outlives its timeout by more than the
/// implementation's scheduling slack.
pub trait Net: Clone + Send + Sync + 'static {
    /// This endpoint's node id.
    fn local_id(&self) -> NodeId;
    /// Sends `request` to `to` and waits at most `timeout` for the response.
    fn call(
        &self,
        to: NodeId,
        request: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, NetError>> + Send;
    /// Accepts requests addressed to [`Net::local_id`] and answers each with `handler`,
    /// concurrently. Runs until the process stops; returns only if listening fails.
    fn serve<H: Handler>(&self, handler: H) -> impl Future<Output = Result<(), NetError>> + Send;
}
