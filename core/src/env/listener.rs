use std::future::Future;
use std::net::SocketAddr;

/// Both ends of an accepted client connection, as `CLIENT LIST` shows them (`addr`, `laddr`)
/// and `CLUSTER SLOTS` announces the proxy (the address the client reached it at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The client's end.
    pub peer: SocketAddr,
    /// The proxy's end.
    pub local: SocketAddr,
    /// The socket's file descriptor in this process (`CLIENT LIST`'s `fd`), where there is one
    /// (not in the simulator).
    pub fd: Option<i64>,
}

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

    /// [`Listener::accept`] with both ends' addresses, when the listener knows them (the TCP
    /// ones do); `None` otherwise.
    fn accept_from(
        &mut self,
    ) -> impl Future<Output = std::io::Result<(Self::Stream, Option<Endpoints>)>> + Send {
        async move { Ok((self.accept().await?, None)) }
    }
}
