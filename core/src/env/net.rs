use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use crate::NodeId;

/// Largest message (request or response) a [`Net`] carries, in bytes: Redis's 1 GiB
/// `client-query-buffer-limit` (the largest request a client may send the proxy, and so the
/// largest command a node receives) plus room for the encoding around it. A transport carries
/// a message this large in bounded fragments (`larder_transport::frame`), so it never holds up
/// the small messages sharing its connection. Snapshots do not count against it: they travel
/// in chunks of their own.
pub const MESSAGE_BYTES_MAX: usize = (1 << 30) + (16 << 20);

/// The slowest rate at which a large message is expected to cross and be written to disk
/// on the other side: 8 MiB/s. A 512 MiB value gets 64 s more than a small command. (32 MiB/s
/// was too hopeful: a 100 MiB SET through a 3-replica group on a loaded 2-core CI machine,
/// every copy encoded, tagged, fsynced and applied, timed out on its leader at 11 s.)
pub const TRANSFER_BYTES_PER_SECOND_MIN: u64 = 8 << 20;

/// How much longer than a small one a request of `bytes` may take: its transfer and the
/// receiver's write of it at [`TRANSFER_BYTES_PER_SECOND_MIN`]. Timeouts sized for small
/// commands would cut every large one off, and a retried large write would be cut off again.
pub fn transfer_allowance(bytes: usize) -> Duration {
    Duration::from_millis(bytes as u64 * 1000 / TRANSFER_BYTES_PER_SECOND_MIN)
}

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
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },
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
