//! `larder-transport`: the byte-stream seam below [`larder_core::env::Net`], and the one
//! message-level network built on it.
//!
//! - [`Transport`]: connect to a node id and get a byte stream; bind an address and get a
//!   [`Listener`] whose streams are the same kind. Real: `larder_real::TcpTransport` (tokio
//!   TCP, node ids resolved through an `AddressBook`). Sim: `larder_sim::net::SimTransport`
//!   (turmoil TCP, node `id` at host `n{id}`). The proxy's client-facing listener is a
//!   transport's [`Transport::Listener`] too, so both sides of every Larder socket go through
//!   this seam.
//! - [`StreamNet`]: the [`Net`](larder_core::env::Net) over any transport: one multiplexed
//!   connection per peer, length-prefixed frames with a request id, a writer task per
//!   connection that coalesces queued frames into one flush and interleaves the fragments of
//!   large messages with small ones, the message limit and the other bounds
//!   ([`StreamLimits`]). The real network
//!   is `StreamNet<TcpTransport>` and the simulated one wraps `StreamNet<SimTransport>` in its
//!   message-level fault layer, so the simulator runs the production framing.
//! - [`auth`]: the cluster-secret handshake every connection starts with, and the tag on every
//!   frame ([`ClusterKey`], [`ClusterAuth`]).
//! - [`conformance`]: `transport_suite`, the contract every transport must pass.
//!
//! Why a crate of its own: the seam needs tokio's `AsyncRead`/`AsyncWrite` bounds, and
//! `larder-core` has no tokio. This crate depends on larder-core and tokio's io/sync/rt/time
//! only (no sockets: those are larder-real's and turmoil's), and on no role crate.

use std::future::Future;
use std::io;

use larder_core::NodeId;
use larder_core::env::Listener;
use tokio::io::{AsyncRead, AsyncWrite};

pub mod auth;
pub mod conformance;
mod frame;
mod stream_net;

pub use auth::{ClusterAuth, ClusterKey, HandshakeError, Refusal, ShortSecret, UNNAMED_IDS_MIN};
pub use frame::{FRAGMENT_BYTES_MAX, HEADER_BYTES};
pub use stream_net::{
    CONNECT_TIMEOUT, DEAD_SILENCE, FRAMES_QUEUED_MAX, INBOUND_CONNECTIONS_MAX,
    INBOUND_IDLE_TIMEOUT, LARGE_QUEUED_MAX, NetStats, REQUEST_BYTES_IN_FLIGHT_MAX,
    REQUESTS_IN_FLIGHT_MAX, StreamLimits, StreamNet,
};

/// A byte-stream network: how a process reaches another by node id, and how it listens.
///
/// Contract (checked by [`conformance::transport_suite`]): a stream delivers the bytes written
/// to it in order, in both directions, and large writes intact; many connections can be open
/// at once, independently; when one side drops its stream (or shuts its write half down) the
/// other reads EOF (or an error) rather than waiting forever; connecting to a node nobody knows
/// or nobody listens for fails rather than hangs (within the transport's connect timeout).
pub trait Transport: Clone + Send + Sync + 'static {
    /// One connection's byte stream, both directions.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// Accepts streams of the same kind.
    type Listener: Listener<Stream = Self::Stream>;
    /// Where a listener binds (a socket address for TCP, a port for the simulator).
    type Address: Clone + Send + Sync + std::fmt::Debug + 'static;

    /// Opens a stream to node `to`'s peer listener.
    fn connect(&self, to: NodeId) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Listens at `address`.
    fn bind(
        &self,
        address: Self::Address,
    ) -> impl Future<Output = io::Result<Self::Listener>> + Send;
}
