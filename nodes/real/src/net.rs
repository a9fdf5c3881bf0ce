//! `TcpNet`: the message-level [`Net`] over tokio TCP, which is
//! [`StreamNet`]`<`[`TcpTransport`]`>`: the framing, multiplexing, write coalescing and frame
//! limits live in `larder_transport::StreamNet`, shared with the simulator; this module only
//! opens sockets. [`TcpTransport`] resolves node ids with an [`AddressBook`], sets `TCP_NODELAY`
//! (small request/response messages: latency matters more than packet count), and binds
//! [`TokioListener`]s, which is also the proxy's client-facing listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{Handler, Net, NetError};
use larder_transport::{ClusterAuth, NetStats, StreamNet, Transport};
use tokio::net::TcpStream;

use crate::TokioListener;

/// Where each node listens. Shared by every [`TcpNet`] of a process and updated as the
/// cluster's registry learns addresses.
#[derive(Debug, Clone, Default)]
pub struct AddressBook(Arc<RwLock<BTreeMap<NodeId, SocketAddr>>>);

impl AddressBook {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn insert(&self, id: NodeId, address: SocketAddr) {
        self.0
            .write()
            .expect("address book lock")
            .insert(id, address);
    }
    pub fn get(&self, id: NodeId) -> Option<SocketAddr> {
        self.0.read().expect("address book lock").get(&id).copied()
    }
    pub fn remove(&self, id: NodeId) {
        self.0.write().expect("address book lock").remove(&id);
    }

    /// Records `address` (`host:port`) for `id` if it parses as a socket address; an
    /// unparsable one is left out with a warning. Returns whether it was recorded.
    pub fn learn(&self, id: NodeId, address: &str) -> bool {
        match address.parse::<SocketAddr>() {
            Ok(parsed) => {
                self.insert(id, parsed);
                true
            }
            Err(error) => {
                tracing::warn!(node = id, address, %error, "ignoring an unusable node address");
                false
            }
        }
    }

    /// A hook for the addresses the center hands out (`Center::on_address`,
    /// `StorageNode::on_addresses`, `SharedRouting::on_addresses`) that records them here
    /// ([`AddressBook::learn`]).
    pub fn sink(&self) -> impl Fn(NodeId, &str) + Send + Sync + 'static {
        let book = self.clone();
        move |id, address| {
            book.learn(id, address);
        }
    }
}

/// The real byte-stream transport: tokio TCP, node ids resolved through an [`AddressBook`].
#[derive(Debug, Clone)]
pub struct TcpTransport {
    book: AddressBook,
}

impl TcpTransport {
    pub fn new(book: AddressBook) -> Self {
        TcpTransport { book }
    }

    pub fn address_book(&self) -> &AddressBook {
        &self.book
    }
}

impl Transport for TcpTransport {
    type Stream = TcpStream;
    type Listener = TokioListener;
    type Address = SocketAddr;

    async fn connect(&self, to: NodeId) -> std::io::Result<TcpStream> {
        let address = self.book.get(to).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no address known for node {to}"),
            )
        })?;
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("{address}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn bind(&self, address: SocketAddr) -> std::io::Result<TokioListener> {
        TokioListener::bind(address).await
    }
}

/// The real network endpoint of one process: [`StreamNet`] over [`TcpTransport`].
#[derive(Clone)]
pub struct TcpNet {
    net: StreamNet<TcpTransport>,
    /// Where it listens, if it was bound.
    bound: Option<SocketAddr>,
}

impl TcpNet {
    /// An endpoint that only calls out (a client or a proxy that serves no peers),
    /// authenticating with `auth`.
    pub fn client(id: NodeId, book: AddressBook, auth: ClusterAuth) -> Self {
        TcpNet {
            net: StreamNet::new(id, TcpTransport::new(book), auth),
            bound: None,
        }
    }

    /// An endpoint listening on `address` (port 0 picks one); the bound address is recorded in
    /// `book` under `id` so peers sharing the book can reach it. Callers must prove `auth`'s
    /// key, and calls out prove it.
    pub async fn bind(
        id: NodeId,
        address: SocketAddr,
        book: AddressBook,
        auth: ClusterAuth,
    ) -> Result<Self, NetError> {
        let transport = TcpTransport::new(book.clone());
        let listener = transport
            .bind(address)
            .await
            .map_err(|e| NetError::Listen {
                reason: format!("{address}: {e}"),
            })?;
        let bound = listener.local_addr().map_err(|e| NetError::Listen {
            reason: e.to_string(),
        })?;
        book.insert(id, bound);
        Ok(TcpNet {
            net: StreamNet::with_listener(id, transport, auth, listener),
            bound: Some(bound),
        })
    }

    /// The address this endpoint listens on, if it was bound.
    pub fn listen_address(&self) -> Option<SocketAddr> {
        self.bound
            .or_else(|| self.address_book().get(self.net.local_id()))
    }

    pub fn address_book(&self) -> &AddressBook {
        self.net.transport().address_book()
    }

    /// What this endpoint's listener refused (forged handshakes and frames).
    pub fn stats(&self) -> &NetStats {
        self.net.stats()
    }
}

impl Net for TcpNet {
    fn local_id(&self) -> NodeId {
        self.net.local_id()
    }

    fn call(
        &self,
        to: NodeId,
        request: Bytes,
        timeout: Duration,
    ) -> impl Future<Output = Result<Bytes, NetError>> + Send {
        self.net.call(to, request, timeout)
    }

    fn serve<H: Handler>(&self, handler: H) -> impl Future<Output = Result<(), NetError>> + Send {
        self.net.serve(handler)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_learns_parsable_addresses_only() {
        let book = AddressBook::new();
        let sink = book.sink();
        sink(1, "127.0.0.1:7001");
        sink(2, "node-2.example:7002");
        sink(3, "");
        assert_eq!(
            book.get(1),
            Some("127.0.0.1:7001".parse().expect("address"))
        );
        assert_eq!(book.get(2), None, "host names are not resolved");
        assert_eq!(book.get(3), None);
        // A node restarted on another port.
        assert!(book.learn(1, "127.0.0.1:7101"));
        assert_eq!(
            book.get(1),
            Some("127.0.0.1:7101".parse().expect("address"))
        );
        // An unusable address keeps the last good one.
        assert!(!book.learn(1, "nonsense"));
        assert_eq!(
            book.get(1),
            Some("127.0.0.1:7101".parse().expect("address"))
        );
    }
}
