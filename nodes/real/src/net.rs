//! `TcpNet`: the message-level [`Net`] over tokio TCP.
//!
//! One connection per (caller, peer) pair, multiplexed: every frame carries a request id and
//! responses may come back in any order, so a slow request does not hold up a fast one. A
//! writer task per connection drains its queue before flushing, which batches the frames of
//! concurrent callers into few `write` calls.
//!
//! Frame: `u32` big-endian length of the rest, `u64` sender node id, `u64` request id, payload.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{FRAME_BYTES_MAX, Handler, Net, NetError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const HEADER_BYTES: usize = 16;

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

/// The real network endpoint of one process.
#[derive(Clone)]
pub struct TcpNet {
    inner: Arc<Inner>,
}

/// A peer's connection slot; the async lock serializes (re)connecting to that peer only.
type PeerSlot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

struct Inner {
    id: NodeId,
    book: AddressBook,
    listener: Mutex<Option<TcpListener>>,
    peers: Mutex<BTreeMap<NodeId, PeerSlot>>,
    next_request: AtomicU64,
}

/// Callers waiting for responses on one connection. `closed` is set, under the same lock, when
/// the connection dies, so no caller can register after the drain and wait forever.
#[derive(Default)]
struct Waiters {
    closed: bool,
    by_request: BTreeMap<u64, oneshot::Sender<Bytes>>,
}

struct Connection {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    waiters: Arc<Mutex<Waiters>>,
}

impl Connection {
    fn is_closed(&self) -> bool {
        self.waiters.lock().expect("waiters lock").closed || self.frames.is_closed()
    }
}

/// Removes a caller's waiter if its call ends early (timeout, cancellation).
struct WaiterGuard<'a> {
    waiters: &'a Mutex<Waiters>,
    request: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.waiters
            .lock()
            .expect("waiters lock")
            .by_request
            .remove(&self.request);
    }
}

fn frame(from: NodeId, request: u64, payload: &[u8]) -> Vec<u8> {
    let length = (HEADER_BYTES + payload.len()) as u32;
    let mut frame = Vec::with_capacity(4 + HEADER_BYTES + payload.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&from.to_be_bytes());
    frame.extend_from_slice(&request.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

async fn read_frame(stream: &mut OwnedReadHalf) -> std::io::Result<(NodeId, u64, Bytes)> {
    let length = stream.read_u32().await? as usize;
    if !(HEADER_BYTES..=HEADER_BYTES + FRAME_BYTES_MAX).contains(&length) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {length} bytes"),
        ));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    let from = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
    let request = u64::from_be_bytes(body[8..16].try_into().expect("8 bytes"));
    Ok((from, request, Bytes::from(body).slice(HEADER_BYTES..)))
}

/// Writes queued frames, flushing only when the queue is empty.
async fn write_frames(stream: OwnedWriteHalf, mut frames: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut stream = BufWriter::with_capacity(64 << 10, stream);
    while let Some(first) = frames.recv().await {
        if stream.write_all(&first).await.is_err() {
            return;
        }
        while let Ok(next) = frames.try_recv() {
            if stream.write_all(&next).await.is_err() {
                return;
            }
        }
        if stream.flush().await.is_err() {
            return;
        }
    }
}

impl TcpNet {
    /// An endpoint that only calls out (a client or a proxy that serves no peers).
    pub fn client(id: NodeId, book: AddressBook) -> Self {
        TcpNet {
            inner: Arc::new(Inner {
                id,
                book,
                listener: Mutex::new(None),
                peers: Mutex::default(),
                next_request: AtomicU64::new(1),
            }),
        }
    }

    /// An endpoint listening on `address` (port 0 picks one); the bound address is recorded in
    /// `book` under `id` so peers sharing the book can reach it.
    pub async fn bind(
        id: NodeId,
        address: SocketAddr,
        book: AddressBook,
    ) -> Result<Self, NetError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| NetError::Listen {
                reason: format!("{address}: {e}"),
            })?;
        let bound = listener.local_addr().map_err(|e| NetError::Listen {
            reason: e.to_string(),
        })?;
        book.insert(id, bound);
        let net = Self::client(id, book);
        *net.inner.listener.lock().expect("listener lock") = Some(listener);
        Ok(net)
    }

    /// The address this endpoint listens on, if it was bound.
    pub fn listen_address(&self) -> Option<SocketAddr> {
        self.inner
            .listener
            .lock()
            .expect("listener lock")
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .or_else(|| self.inner.book.get(self.inner.id))
    }

    pub fn address_book(&self) -> &AddressBook {
        &self.inner.book
    }

    async fn connection(&self, to: NodeId) -> Result<Arc<Connection>, NetError> {
        let slot = self
            .inner
            .peers
            .lock()
            .expect("peers lock")
            .entry(to)
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        let address = self
            .inner
            .book
            .get(to)
            .ok_or_else(|| NetError::Unreachable {
                to,
                reason: "no address known".into(),
            })?;
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| NetError::Unreachable {
                to,
                reason: format!("{address}: {e}"),
            })?;
        // Small request/response messages: latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        let (mut read, write) = stream.into_split();
        let (frames, queue) = mpsc::unbounded_channel();
        tokio::spawn(write_frames(write, queue));
        let waiters: Arc<Mutex<Waiters>> = Arc::default();
        let reader_waiters = waiters.clone();
        tokio::spawn(async move {
            while let Ok((_, request, payload)) = read_frame(&mut read).await {
                let waiter = reader_waiters
                    .lock()
                    .expect("waiters lock")
                    .by_request
                    .remove(&request);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(payload);
                }
            }
            // Dropping the senders fails every waiting call with a connection error.
            let mut waiters = reader_waiters.lock().expect("waiters lock");
            waiters.closed = true;
            waiters.by_request.clear();
        });
        let connection = Arc::new(Connection { frames, waiters });
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn exchange(&self, to: NodeId, request: Bytes) -> Result<Bytes, NetError> {
        let connection = self.connection(to).await?;
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        {
            let mut waiters = connection.waiters.lock().expect("waiters lock");
            if waiters.closed {
                return Err(NetError::Io {
                    to,
                    reason: "connection closed".into(),
                });
            }
            waiters.by_request.insert(id, sender);
        }
        let _guard = WaiterGuard {
            waiters: &connection.waiters,
            request: id,
        };
        if connection
            .frames
            .send(frame(self.inner.id, id, &request))
            .is_err()
        {
            return Err(NetError::Io {
                to,
                reason: "connection closed before sending".into(),
            });
        }
        receiver.await.map_err(|_| NetError::Io {
            to,
            reason: "connection closed before the response".into(),
        })
    }
}

impl Net for TcpNet {
    fn local_id(&self) -> NodeId {
        self.inner.id
    }

    async fn call(&self, to: NodeId, request: Bytes, timeout: Duration) -> Result<Bytes, NetError> {
        if request.len() > FRAME_BYTES_MAX {
            return Err(NetError::FrameTooLarge {
                size: request.len(),
                limit: FRAME_BYTES_MAX,
            });
        }
        match tokio::time::timeout(timeout, self.exchange(to, request)).await {
            Ok(result) => result,
            Err(_) => Err(NetError::Timeout {
                to,
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }

    async fn serve<H: Handler>(&self, handler: H) -> Result<(), NetError> {
        let listener = self
            .inner
            .listener
            .lock()
            .expect("listener lock")
            .take()
            .ok_or_else(|| NetError::Listen {
                reason: "endpoint was not bound, or is already serving".into(),
            })?;
        let me = self.inner.id;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let (mut read, write) = stream.into_split();
                let (frames, queue) = mpsc::unbounded_channel();
                tokio::spawn(write_frames(write, queue));
                while let Ok((from, request, payload)) = read_frame(&mut read).await {
                    let (handler, frames) = (handler.clone(), frames.clone());
                    tokio::spawn(async move {
                        let response = handler.handle(from, payload).await;
                        let _ = frames.send(frame(me, request, &response));
                    });
                }
            });
        }
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
