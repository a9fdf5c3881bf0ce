//! The proxy's client-facing listener on real TCP: [`crate::TcpTransport`]'s listener type, so
//! peers' and clients' sockets go through the same transport seam.

use std::net::SocketAddr;

use larder_core::env::{Endpoints, Listener};

/// A tokio TCP listener as the proxy's [`Listener`].
#[derive(Debug)]
pub struct TokioListener(tokio::net::TcpListener);

impl TokioListener {
    /// Listens on `address` (port 0: any free port; see [`TokioListener::local_addr`]).
    pub async fn bind(address: SocketAddr) -> std::io::Result<Self> {
        Ok(TokioListener(tokio::net::TcpListener::bind(address).await?))
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Listener for TokioListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<tokio::net::TcpStream> {
        let (stream, _) = self.0.accept().await?;
        // Request/response traffic: send replies at once.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn accept_from(&mut self) -> std::io::Result<(tokio::net::TcpStream, Option<Endpoints>)> {
        let (stream, peer) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        #[cfg(unix)]
        let fd = Some(i64::from(std::os::fd::AsRawFd::as_raw_fd(&stream)));
        #[cfg(not(unix))]
        let fd = None;
        let endpoints = stream
            .local_addr()
            .ok()
            .map(|local| Endpoints { peer, local, fd });
        Ok((stream, endpoints))
    }
}
