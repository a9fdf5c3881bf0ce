use std::future::Future;

/// Accepts client connections: the proxy's client-facing side, a byte stream rather than the
/// message-level [`super::Net`] (clients speak RESP, not Larder's protocol).
///
/// It is the listener half of the byte-stream transport seam (`larder_transport::Transport`,
/// whose listener type implements this trait). Real: `larder_real::TokioListener` (tokio TCP).
/// Sim: `larder_sim::net::SimListener` (turmoil TCP, so partitions and latency apply to
/// clients too). The stream's byte-level
/// traits (tokio's `AsyncRead`/`AsyncWrite`) are required where it is used, because this crate
/// does not depend on tokio.
pub trait Listener: Send + 'static {
    type Stream: Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
}
