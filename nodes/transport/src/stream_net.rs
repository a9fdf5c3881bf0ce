//! [`StreamNet`]: the message-level [`Net`] over any [`Transport`].
//!
//! One connection per (caller, peer) pair, multiplexed: every frame carries a request id and
//! responses may come back in any order, so a slow request does not hold up a fast one. A
//! writer task per connection drains its queue before flushing, which batches the frames of
//! concurrent callers into few writes. Frames are `u32` length, sender id, request id, payload
//! ([`crate::frame`]); a payload over [`FRAME_BYTES_MAX`] is refused at the caller
//! ([`NetError::FrameTooLarge`]), and a peer that sends a bad length has its connection closed.
//!
//! Dead connections. A peer that crashes or restarts closes its end (the caller's reader sees
//! EOF or a reset, fails the calls waiting on that connection, and the next call reconnects).
//! A peer that loses power, or a connection whose bytes stop moving, closes nothing: so when a
//! call times out after its request was written out and *nothing at all* arrived on the
//! connection since it was queued (no response to any call), the connection is presumed dead
//! and closed; the next call reconnects. A call whose request is still queued behind others (a
//! large frame being written) does not count as evidence. The cost of a false verdict (a peer
//! slow on every outstanding call) is one reconnect, and the calls then in flight on that
//! connection fail early with [`NetError::Io`], which callers already treat as indeterminate.
//! The accepting side has no such rule: a connection whose caller vanished without a close
//! lingers until a write to it fails (TCP keepalive is not configured).
//!
//! Authentication: every connection starts with the handshake of [`crate::auth`] (both sides
//! prove they hold the cluster secret; the caller names the node it wants and a listener that
//! is another node refuses), and every frame carries its sender and destination ids and a tag.
//! A listener checks that each frame's sender is the id its caller proved and its destination
//! is itself; a caller checks that each response comes from the node it called and is
//! addressed to it. A frame that fails any check closes the connection and is counted in
//! [`NetStats`]. The handler is given the proven sender id.
//!
//! Bounds: at most [`FRAMES_QUEUED_MAX`] frames wait in a connection's write queue (a caller
//! waits for room within its own timeout; a handler's response waits for room), and at most
//! that many are coalesced into one flush. A listener serves at most
//! [`INBOUND_CONNECTIONS_MAX`] connections (beyond, the handshake is refused as busy), runs
//! at most [`REQUESTS_IN_FLIGHT_MAX`] requests of one connection at once (beyond, it stops
//! reading that connection, which pushes back on the caller through TCP), closes a connection
//! that has not finished its handshake within [`crate::auth::HANDSHAKE_TIMEOUT`] or sent
//! nothing for [`INBOUND_IDLE_TIMEOUT`], and allocates a frame's body as it arrives.
//!
//! Timeouts: connecting (TCP connect and handshake) has its own limit, [`CONNECT_TIMEOUT`]
//! capped at the call's timeout, and a call that cannot connect fails with
//! [`NetError::Unreachable`]: nothing was sent, so callers may retry anywhere. The call's
//! timeout starts once the connection is up; a call therefore lasts at most about twice its
//! timeout.

// A call's deadline is the transport's time: tokio's real timer in production and turmoil's
// simulated one in the simulator, exactly as in the per-environment networks this replaces.
// Network deadlines deliberately do not follow a node's skewed `Clock`.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{FRAME_BYTES_MAX, Handler, Listener, Net, NetError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::Transport;
use crate::auth::{
    Accepted, ClusterAuth, FrameMac, HANDSHAKE_TIMEOUT, Refusal, TAG_BYTES, handshake_as_caller,
    handshake_as_listener, refuse_busy,
};
use crate::frame::{Frame, Incoming, frame, read_frame};

/// Most frames waiting in one connection's write queue, and most coalesced into one flush.
pub const FRAMES_QUEUED_MAX: usize = 1024;

/// Most connections one listener serves at once. A cluster needs one per peer process (nodes,
/// centers, proxies, admin tools), so this leaves room for thousands of processes while
/// bounding what a flood of connections can hold.
pub const INBOUND_CONNECTIONS_MAX: usize = 4096;

/// Most requests of one inbound connection handled at once.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 1024;

/// An inbound connection that sends nothing for this long is closed. Raft heartbeats keep
/// every live peer's connection busy far more often; a caller whose connection was closed
/// reconnects on its next call.
pub const INBOUND_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest a call waits to connect and finish the handshake (capped at the call's timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What a listener refused, for operators and the adversarial tests.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Handshakes refused: wrong secret, wrong destination, not Larder, or too slow.
    pub handshakes_refused: AtomicU64,
    /// Connections refused at [`INBOUND_CONNECTIONS_MAX`].
    pub connections_refused: AtomicU64,
    /// Frames whose tag, sender or destination did not check (each closed its connection).
    pub frames_refused: AtomicU64,
}

impl NetStats {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The writer's buffer: small frames of concurrent callers share a write.
const WRITE_BUFFER_BYTES: usize = 64 << 10;

/// Back-off after a failed accept (out of file descriptors and the like).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// One process's endpoint on transport `T`.
pub struct StreamNet<T: Transport> {
    inner: Arc<Inner<T>>,
}

impl<T: Transport> Clone for StreamNet<T> {
    fn clone(&self) -> Self {
        StreamNet {
            inner: self.inner.clone(),
        }
    }
}

/// A peer's connection slot; the async lock serializes (re)connecting to that peer only.
type PeerSlot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

struct Inner<T: Transport> {
    id: NodeId,
    transport: T,
    auth: ClusterAuth,
    stats: Arc<NetStats>,
    connections: Arc<Semaphore>,
    listener: Mutex<Option<T::Listener>>,
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

/// What a connection's handle, reader and writer share.
struct Shared {
    waiters: Mutex<Waiters>,
    /// Frames read so far: a timed-out call compares it with its value when the call was sent.
    received: AtomicU64,
    /// Set once to close the connection: the reader and writer stop, dropping the stream.
    closed: watch::Sender<bool>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            waiters: Mutex::default(),
            received: AtomicU64::new(0),
            closed: watch::channel(false).0,
        }
    }

    fn close(&self) {
        self.closed.send_replace(true);
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }
}

/// A frame queued for the writer, with the flag it sets once the frame is flushed.
struct Outgoing {
    frame: Frame,
    flushed: Option<Arc<AtomicBool>>,
}

/// A caller's connection to one peer.
struct Connection {
    frames: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

impl Drop for Connection {
    /// The last handle gone (replaced in its slot, or the endpoint dropped): stop its tasks.
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// Removes a caller's waiter if its call ends early (timeout, cancellation).
struct WaiterGuard<'a> {
    shared: &'a Shared,
    request: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.shared
            .waiters
            .lock()
            .expect("waiters lock")
            .by_request
            .remove(&self.request);
    }
}

/// What a call knows about its request once queued: for the dead-connection rule.
struct Sent {
    connection: Arc<Connection>,
    received: u64,
    flushed: Arc<AtomicBool>,
}

/// Writes queued frames, flushing when the queue is empty (or after [`FRAMES_QUEUED_MAX`]),
/// until the queue's senders are gone, a write fails, or the connection is closed.
async fn write_frames<W: AsyncWrite + Send + Unpin>(
    write: W,
    mut queue: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    mut mac: FrameMac,
) {
    let mut closed = shared.closed.subscribe();
    let mut stream = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write);
    loop {
        let first = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => break,
            first = queue.recv() => match first {
                Some(first) => first,
                None => break,
            },
        };
        let written = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => break,
            written = write_batch(&mut stream, first, &mut queue, &mut mac) => written,
        };
        if written.is_err() {
            break;
        }
    }
    shared.close();
}

/// Writes `first` and whatever else is queued (bounded), then flushes once.
async fn write_batch<W: AsyncWrite + Unpin>(
    stream: &mut BufWriter<W>,
    first: Outgoing,
    queue: &mut mpsc::Receiver<Outgoing>,
    mac: &mut FrameMac,
) -> std::io::Result<()> {
    let mut flushed = Vec::new();
    let mut next = Some(first);
    let mut count = 0;
    while let Some(outgoing) = next.take() {
        stream.write_all(&outgoing.frame.head).await?;
        stream.write_all(&outgoing.frame.payload).await?;
        let tag: [u8; TAG_BYTES] = mac.tag(&[&outgoing.frame.head, &outgoing.frame.payload]);
        stream.write_all(&tag).await?;
        flushed.extend(outgoing.flushed);
        count += 1;
        if count < FRAMES_QUEUED_MAX {
            next = queue.try_recv().ok();
        }
    }
    stream.flush().await?;
    for flag in flushed {
        flag.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// A caller's reader: hands each response to its waiter until the connection ends, then fails
/// every call still waiting. A response that is not from `peer` to `me` closes the connection.
async fn read_responses<R: AsyncRead + Send + Unpin>(
    mut read: R,
    shared: Arc<Shared>,
    mut mac: FrameMac,
    (me, peer): (NodeId, NodeId),
    stats: Arc<NetStats>,
) {
    let mut closed = shared.closed.subscribe();
    loop {
        let frame = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => break,
            frame = read_frame(&mut read, &mut mac) => frame,
        };
        let Incoming {
            from,
            to,
            request,
            payload,
        } = match frame {
            Ok(frame) => frame,
            Err(error) => {
                if error.kind() == std::io::ErrorKind::InvalidData {
                    NetStats::count(&stats.frames_refused);
                    tracing::warn!(peer, %error, "closing a connection that sent a bad frame");
                }
                break;
            }
        };
        if (from, to) != (peer, me) {
            NetStats::count(&stats.frames_refused);
            tracing::warn!(
                peer,
                from,
                to,
                "closing a connection: a response misaddressed"
            );
            break;
        }
        shared.received.fetch_add(1, Ordering::Relaxed);
        let waiter = shared
            .waiters
            .lock()
            .expect("waiters lock")
            .by_request
            .remove(&request);
        if let Some(waiter) = waiter {
            let _ = waiter.send(payload);
        }
    }
    // Dropping the senders fails every waiting call with a connection error.
    {
        let mut waiters = shared.waiters.lock().expect("waiters lock");
        waiters.closed = true;
        waiters.by_request.clear();
    }
    shared.close();
}

/// Closes an inbound connection that received no frame for [`INBOUND_IDLE_TIMEOUT`]. One
/// timer per period per connection, not one per frame: a timeout around each read registered
/// and cancelled a timer for every request, on the hot path.
async fn close_when_idle(shared: Arc<Shared>, peer: NodeId) {
    let mut closed = shared.closed.subscribe();
    let mut seen = shared.received.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = closed.wait_for(|closed| *closed) => return,
            () = tokio::time::sleep(INBOUND_IDLE_TIMEOUT) => {}
        }
        let now = shared.received.load(Ordering::Relaxed);
        if now == seen {
            tracing::debug!(peer, "closing an idle connection");
            shared.close();
            return;
        }
        seen = now;
    }
}

/// What the accepting side of a connection needs from its listener.
struct Accepting<H> {
    me: NodeId,
    handler: H,
    auth: ClusterAuth,
    stats: Arc<NetStats>,
}

/// The accepting side of one connection: the handshake, then each request runs in its own task
/// (at most [`REQUESTS_IN_FLIGHT_MAX`] at once) and its response joins the connection's write
/// queue. A refused handshake, a bad or misaddressed frame, EOF or idleness close the
/// connection. `_permit` holds the connection's place under [`INBOUND_CONNECTIONS_MAX`].
async fn serve_connection<S, H>(
    mut stream: S,
    accepting: Arc<Accepting<H>>,
    _permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    H: Handler,
{
    let me = accepting.me;
    let stats = &accepting.stats;
    let handshake = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake_as_listener(&mut stream, &accepting.auth, me),
    )
    .await;
    let Accepted {
        caller: peer,
        dialed,
        session,
    } = match handshake {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(refusal)) => {
            NetStats::count(&stats.handshakes_refused);
            match refusal {
                Refusal::BadProof | Refusal::WrongDestination => {
                    tracing::warn!(?refusal, "refused an internal connection")
                }
                _ => tracing::debug!(?refusal, "refused an internal connection"),
            }
            return;
        }
        Err(_) => {
            NetStats::count(&stats.handshakes_refused);
            tracing::debug!("closing a connection that did not finish its handshake");
            return;
        }
    };
    let (mut read, write) = tokio::io::split(stream);
    let shared = Arc::new(Shared::new());
    let (frames, queue) = mpsc::channel(FRAMES_QUEUED_MAX);
    tokio::spawn(write_frames(write, queue, shared.clone(), session.send));
    let mut receive = session.receive;
    let in_flight = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX));
    tokio::spawn(close_when_idle(shared.clone(), peer));
    let mut closed = shared.closed.subscribe();
    loop {
        let incoming = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => break,
            incoming = read_frame(&mut read, &mut receive) => incoming,
        };
        let incoming = match incoming {
            Ok(frame) => frame,
            Err(error) => {
                if error.kind() == std::io::ErrorKind::InvalidData {
                    NetStats::count(&stats.frames_refused);
                    tracing::warn!(peer, %error, "closing a connection that sent a bad frame");
                }
                break;
            }
        };
        shared.received.fetch_add(1, Ordering::Relaxed);
        if (incoming.from, incoming.to) != (peer, dialed) {
            NetStats::count(&stats.frames_refused);
            tracing::warn!(
                peer,
                from = incoming.from,
                to = incoming.to,
                "closing a connection: a frame misaddressed"
            );
            break;
        }
        let permit = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => break,
            permit = in_flight.clone().acquire_owned() => permit.expect("never closed"),
        };
        let (accepting, frames) = (accepting.clone(), frames.clone());
        tokio::spawn(async move {
            let response = accepting.handler.handle(peer, incoming.payload).await;
            drop(permit);
            if response.len() > FRAME_BYTES_MAX {
                // No error frame exists: the caller times out, as on a lost response.
                tracing::warn!(
                    size = response.len(),
                    limit = FRAME_BYTES_MAX,
                    "dropping a response over the frame limit"
                );
                return;
            }
            let outgoing = Outgoing {
                frame: frame(dialed, peer, incoming.request, response),
                flushed: None,
            };
            // The caller may be gone; its call has failed or will time out.
            let _ = frames.send(outgoing).await;
        });
    }
    shared.close();
}

impl<T: Transport> StreamNet<T> {
    /// An endpoint with no listener: it only calls out, or binds later ([`StreamNet::serve_on`]).
    /// `auth` is what it proves to listeners and demands of callers.
    pub fn new(id: NodeId, transport: T, auth: ClusterAuth) -> Self {
        StreamNet {
            inner: Arc::new(Inner {
                id,
                transport,
                auth,
                stats: Arc::default(),
                connections: Arc::new(Semaphore::new(INBOUND_CONNECTIONS_MAX)),
                listener: Mutex::new(None),
                peers: Mutex::default(),
                next_request: AtomicU64::new(1),
            }),
        }
    }

    /// An endpoint that serves on `listener` once [`Net::serve`] is called.
    pub fn with_listener(
        id: NodeId,
        transport: T,
        auth: ClusterAuth,
        listener: T::Listener,
    ) -> Self {
        let net = Self::new(id, transport, auth);
        *net.inner.listener.lock().expect("listener lock") = Some(listener);
        net
    }

    pub fn transport(&self) -> &T {
        &self.inner.transport
    }

    /// What this endpoint's listener refused so far.
    pub fn stats(&self) -> &NetStats {
        &self.inner.stats
    }

    /// Accepts connections on `listener` and answers their requests with `handler`,
    /// concurrently. Runs until the process stops.
    pub async fn serve_on<H: Handler>(
        &self,
        mut listener: T::Listener,
        handler: H,
    ) -> Result<(), NetError> {
        let accepting = Arc::new(Accepting {
            me: self.inner.id,
            handler,
            auth: self.inner.auth.clone(),
            stats: self.inner.stats.clone(),
        });
        loop {
            let mut stream = match listener.accept().await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            match self.inner.connections.clone().try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(serve_connection(stream, accepting.clone(), permit));
                }
                Err(_) => {
                    NetStats::count(&self.inner.stats.connections_refused);
                    tracing::warn!(
                        limit = INBOUND_CONNECTIONS_MAX,
                        "refusing an internal connection: at the limit"
                    );
                    tokio::spawn(async move { refuse_busy(&mut stream).await });
                }
            }
        }
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
        if let Some(connection) = slot.as_ref().filter(|c| !c.shared.is_closed()) {
            return Ok(connection.clone());
        }
        let unreachable = |reason: String| NetError::Unreachable { to, reason };
        let mut stream = self
            .inner
            .transport
            .connect(to)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let session = handshake_as_caller(&mut stream, &self.inner.auth, self.inner.id, to)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (read, write) = tokio::io::split(stream);
        let shared = Arc::new(Shared::new());
        let (frames, queue) = mpsc::channel(FRAMES_QUEUED_MAX);
        tokio::spawn(write_frames(write, queue, shared.clone(), session.send));
        tokio::spawn(read_responses(
            read,
            shared.clone(),
            session.receive,
            (self.inner.id, to),
            self.inner.stats.clone(),
        ));
        let connection = Arc::new(Connection { frames, shared });
        *slot = Some(connection.clone());
        Ok(connection)
    }

    async fn exchange(
        &self,
        to: NodeId,
        connection: Arc<Connection>,
        request: Bytes,
        sent: &mut Option<Sent>,
    ) -> Result<Bytes, NetError> {
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        {
            let mut waiters = connection.shared.waiters.lock().expect("waiters lock");
            if waiters.closed {
                return Err(NetError::Io {
                    to,
                    reason: "connection closed".into(),
                });
            }
            waiters.by_request.insert(id, sender);
        }
        let _guard = WaiterGuard {
            shared: &connection.shared,
            request: id,
        };
        let flushed = Arc::new(AtomicBool::new(false));
        *sent = Some(Sent {
            connection: connection.clone(),
            received: connection.shared.received.load(Ordering::Relaxed),
            flushed: flushed.clone(),
        });
        let outgoing = Outgoing {
            frame: frame(self.inner.id, to, id, request),
            flushed: Some(flushed),
        };
        if connection.frames.send(outgoing).await.is_err() {
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

impl<T: Transport> Net for StreamNet<T> {
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
        // Connecting has its own deadline, and failing to connect is `Unreachable`: nothing
        // was sent, so a write that never left is not reported as indeterminate.
        let connection = tokio::time::timeout(timeout.min(CONNECT_TIMEOUT), self.connection(to))
            .await
            .map_err(|_| NetError::Unreachable {
                to,
                reason: format!(
                    "no connection within {} ms",
                    timeout.min(CONNECT_TIMEOUT).as_millis()
                ),
            })??;
        let mut sent = None;
        let outcome =
            tokio::time::timeout(timeout, self.exchange(to, connection, request, &mut sent)).await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                // The request went out and the peer said nothing since, to anyone: presume
                // the connection dead (see the module doc) so the next call reconnects.
                if let Some(sent) = sent
                    && sent.flushed.load(Ordering::Relaxed)
                    && sent.connection.shared.received.load(Ordering::Relaxed) == sent.received
                {
                    tracing::debug!(to, "closing a connection silent past a call's deadline");
                    sent.connection.shared.close();
                }
                Err(NetError::Timeout {
                    to,
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
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
        self.serve_on(listener, handler).await
    }
}
