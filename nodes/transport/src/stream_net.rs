//! [`StreamNet`]: the message-level [`Net`] over any [`Transport`].
//!
//! One connection per (caller, peer) pair, multiplexed: every frame carries a request id and
//! responses may come back in any order, so a slow request does not hold up a fast one. A
//! writer task per connection drains its queue before flushing, which batches the frames of
//! concurrent callers into few writes. Frames are `u32` length, sender id, destination id,
//! request id, flags, payload and tag ([`crate::frame`]); a message over [`MESSAGE_BYTES_MAX`]
//! is refused at the caller ([`NetError::MessageTooLarge`]), and a peer that sends a bad length
//! has its connection closed.
//!
//! Large messages. A message over [`FRAGMENT_BYTES_MAX`] goes into the connection's large
//! queue; the writer sends it one fragment at a time, each followed by whatever small frames
//! queued meanwhile, so a 512 MiB value shares the connection with heartbeats instead of
//! stopping them for the seconds it takes. One large message is written at a time (the
//! reader assembles at most one), at most [`LARGE_QUEUED_MAX`] wait.
//!
//! Dead connections. A peer that crashes or restarts closes its end (the caller's reader sees
//! EOF or a reset, fails the calls waiting on that connection, and the next call reconnects).
//! A peer that loses power, or a connection whose bytes stop moving, closes nothing: so when a
//! call times out after its request was written out and *nothing at all* arrived on the
//! connection since it was queued (no response to any call) nor for [`DEAD_SILENCE`], and the
//! peer has had time to store the last large message written to it (its
//! [`transfer_allowance`]), the connection is presumed dead and closed; the next call
//! reconnects. The silence floor and the allowance exist because a live peer writing a large
//! value to disk answers nothing, not even heartbeats, for that long: closing would kill the
//! transfer it is in the middle of, and the retry would meet the same fate. A call whose
//! request is still queued behind others (a large message being written) does not count as
//! evidence. The cost of a false verdict (a peer
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
//! Bounds ([`StreamLimits`], defaults in the constants below): at most [`FRAMES_QUEUED_MAX`]
//! frames wait in a connection's write queue (a caller waits for room within its own timeout;
//! a handler's response waits for room), and at most that many are coalesced into one flush.
//! A listener serves at most [`INBOUND_CONNECTIONS_MAX`] connections (beyond, the handshake is
//! refused as busy), runs at most [`REQUESTS_IN_FLIGHT_MAX`] requests, holding at most
//! [`REQUEST_BYTES_IN_FLIGHT_MAX`] bytes, of one connection at once (beyond, it stops reading
//! that connection, which pushes back on the caller through TCP), closes a connection that has
//! not finished its handshake within [`crate::auth::HANDSHAKE_TIMEOUT`] or sent nothing for
//! [`INBOUND_IDLE_TIMEOUT`], and allocates a frame's body as it arrives.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{Handler, Listener, MESSAGE_BYTES_MAX, Net, NetError, transfer_allowance};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::Transport;
use crate::auth::{
    Accepted, ClusterAuth, FrameMac, HANDSHAKE_TIMEOUT, Refusal, TAG_BYTES, handshake_as_caller,
    handshake_as_listener, refuse_busy,
};
use crate::frame::{
    Assembler, FRAGMENT_BYTES_MAX, Frame, Incoming, fragment, fragment_count, read_frame,
};

/// Most frames waiting in one connection's write queue, and most coalesced into one flush.
pub const FRAMES_QUEUED_MAX: usize = 1024;

/// Most large (fragmented) messages waiting in one connection's large queue.
pub const LARGE_QUEUED_MAX: usize = 4;

/// Most connections one listener serves at once. A cluster needs one per peer process (nodes,
/// centers, proxies, admin tools), so this leaves room for thousands of processes while
/// bounding what a flood of connections can hold.
pub const INBOUND_CONNECTIONS_MAX: usize = 4096;

/// Most requests of one inbound connection handled at once.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 1024;

/// Most bytes of requests of one inbound connection held by their handlers at once: one
/// message of the largest size, or many smaller ones.
pub const REQUEST_BYTES_IN_FLIGHT_MAX: usize = MESSAGE_BYTES_MAX;

/// An inbound connection that sends nothing for this long is closed. Raft heartbeats keep
/// every live peer's connection busy far more often; a caller whose connection was closed
/// reconnects on its next call.
pub const INBOUND_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest a call waits to connect and finish the handshake (capped at the call's timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Least silence (nothing received) before a timed-out call may judge its connection dead.
pub const DEAD_SILENCE: Duration = Duration::from_secs(1);

/// The bounds of one [`StreamNet`]. The defaults are the constants of this module; tests lower
/// them to reach each bound, operators have no reason to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// [`INBOUND_CONNECTIONS_MAX`].
    pub inbound_connections_max: usize,
    /// [`REQUESTS_IN_FLIGHT_MAX`].
    pub requests_in_flight_max: usize,
    /// [`REQUEST_BYTES_IN_FLIGHT_MAX`]; at least [`MESSAGE_BYTES_MAX`] in production, or the
    /// largest message could never be handled.
    pub request_bytes_in_flight_max: usize,
    /// [`INBOUND_IDLE_TIMEOUT`].
    pub inbound_idle_timeout: Duration,
    /// [`CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            inbound_connections_max: INBOUND_CONNECTIONS_MAX,
            requests_in_flight_max: REQUESTS_IN_FLIGHT_MAX,
            request_bytes_in_flight_max: REQUEST_BYTES_IN_FLIGHT_MAX,
            inbound_idle_timeout: INBOUND_IDLE_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }
}

/// What a listener refused, for operators and the adversarial tests.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Handshakes refused: wrong secret, wrong destination, not Larder, or too slow.
    pub handshakes_refused: AtomicU64,
    /// Connections refused at [`INBOUND_CONNECTIONS_MAX`].
    pub connections_refused: AtomicU64,
    /// Inbound connections closed for idleness ([`INBOUND_IDLE_TIMEOUT`]).
    pub idle_closed: AtomicU64,
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

/// The readers' buffer: the frames of one coalesced write come in with one `recv`, not three
/// (head, body, tag) each. A body larger than the buffer is read straight into its own.
const READ_BUFFER_BYTES: usize = 64 << 10;

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
    limits: StreamLimits,
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
    /// Frames written so far.
    written: AtomicU64,
    /// When the connection started: the origin of the two times below, in milliseconds.
    born: tokio::time::Instant,
    /// When the last frame arrived.
    last_received_ms: AtomicU64,
    /// Until when the peer is presumed busy storing the last large message written to it.
    busy_until_ms: AtomicU64,
    /// The request id of the fragmented message being read (0: none).
    reading: AtomicU64,
    /// Set once to close the connection: the reader and writer stop, dropping the stream.
    closed: watch::Sender<bool>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            waiters: Mutex::default(),
            received: AtomicU64::new(0),
            written: AtomicU64::new(0),
            born: tokio::time::Instant::now(),
            last_received_ms: AtomicU64::new(0),
            busy_until_ms: AtomicU64::new(0),
            reading: AtomicU64::new(0),
            closed: watch::channel(false).0,
        }
    }

    fn close(&self) {
        self.closed.send_replace(true);
    }

    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Counts a frame read.
    fn frame_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
        self.last_received_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// Whether the connection has been silent long enough, and the peer has had time to store
    /// what it was sent, for a call's timeout to count as evidence of a dead peer.
    fn silent_past_excuses(&self) -> bool {
        let now = self.now_ms();
        now.saturating_sub(self.last_received_ms.load(Ordering::Relaxed))
            >= DEAD_SILENCE.as_millis() as u64
            && now >= self.busy_until_ms.load(Ordering::Relaxed)
    }

    /// Frames moved either way: a timed-out call whose message is in transfer compares it.
    fn frames_moved(&self) -> u64 {
        self.received.load(Ordering::Relaxed) + self.written.load(Ordering::Relaxed)
    }

    /// Whether the response to `request` is the fragmented message being read.
    fn reading(&self, request: u64) -> bool {
        self.reading.load(Ordering::Relaxed) == request
    }
}

/// A message queued for the writer, with the mark it sets once its last frame is flushed.
struct Outgoing {
    from: NodeId,
    to: NodeId,
    request: u64,
    message: Bytes,
    flushed: Option<Arc<FlushMark>>,
}

/// When a call's request was flushed: 0 until then, after that the connection's
/// `Shared::now_ms` at the flush plus one (so a flush at 0 ms still reads as flushed).
#[derive(Default)]
struct FlushMark(AtomicU64);

fn timeout_ms(timeout: Duration) -> u64 {
    timeout.as_millis() as u64
}

impl FlushMark {
    fn set(&self, now_ms: u64) {
        self.0.store(now_ms + 1, Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }

    /// The connection time of the flush, if it happened.
    fn at_ms(&self) -> Option<u64> {
        self.0.load(Ordering::Relaxed).checked_sub(1)
    }
}

impl Outgoing {
    fn frame(&self, index: usize) -> Frame {
        fragment((self.from, self.to, self.request), &self.message, index)
    }
}

/// The two write queues of a connection: messages of one frame, and messages the writer
/// fragments (see the module doc).
#[derive(Clone)]
struct Queues {
    small: mpsc::Sender<Outgoing>,
    large: mpsc::Sender<Outgoing>,
}

/// The receiving ends of [`Queues`], for the writer.
struct QueueReceivers {
    small: mpsc::Receiver<Outgoing>,
    large: mpsc::Receiver<Outgoing>,
}

impl Queues {
    fn new() -> (Queues, QueueReceivers) {
        let (small, small_receiver) = mpsc::channel(FRAMES_QUEUED_MAX);
        let (large, large_receiver) = mpsc::channel(LARGE_QUEUED_MAX);
        (
            Queues { small, large },
            QueueReceivers {
                small: small_receiver,
                large: large_receiver,
            },
        )
    }

    /// Queues `outgoing`, waiting for room; an error once the writer is gone.
    async fn send(&self, outgoing: Outgoing) -> Result<(), ()> {
        let queue = if outgoing.message.len() > FRAGMENT_BYTES_MAX {
            &self.large
        } else {
            &self.small
        };
        queue.send(outgoing).await.map_err(|_| ())
    }
}

/// A caller's connection to one peer.
struct Connection {
    queues: Queues,
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

/// The large message being written, and how many of its fragments are out.
struct InProgress {
    outgoing: Outgoing,
    sent: usize,
}

/// Writes queued messages until the queues' senders are gone, a write fails, or the connection
/// is closed. Each round writes every small frame queued (at most [`FRAMES_QUEUED_MAX`]) and
/// one fragment of the large message in progress, then flushes once.
async fn write_frames<W: AsyncWrite + Send + Unpin>(
    write: W,
    mut queues: QueueReceivers,
    shared: Arc<Shared>,
    mut mac: FrameMac,
) {
    let mut closed = shared.closed.subscribe();
    let mut stream = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write);
    let mut large: Option<InProgress> = None;
    loop {
        let mut first = None;
        if large.is_none() {
            tokio::select! {
                biased;
                _ = closed.wait_for(|closed| *closed) => break,
                small = queues.small.recv() => match small {
                    Some(small) => first = Some(small),
                    None => break,
                },
                next = queues.large.recv() => match next {
                    Some(outgoing) => large = Some(InProgress { outgoing, sent: 0 }),
                    None => break,
                },
            }
        }
        if first.is_some() && queues.small.is_empty() {
            // One frame alone costs a whole send (on loopback the receiver's TCP work runs in
            // the sender's call too). Let the tasks already woken run first: under load they
            // queue their frames to this peer, and one send carries them all; idle, this costs
            // one pass of the scheduler.
            tokio::task::yield_now().await;
        }
        let written = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => break,
            written = write_round(&mut stream, first, &mut queues, &mut large, &mut mac, &shared) => written,
        };
        if written.is_err() {
            break;
        }
    }
    shared.close();
}

/// Writes `first`, whatever else small is queued (bounded) and the next fragment of `large`,
/// then flushes once.
async fn write_round<W: AsyncWrite + Unpin>(
    stream: &mut BufWriter<W>,
    first: Option<Outgoing>,
    queues: &mut QueueReceivers,
    large: &mut Option<InProgress>,
    mac: &mut FrameMac,
    shared: &Shared,
) -> std::io::Result<()> {
    let mut flushed = Vec::new();
    let mut next = first.or_else(|| queues.small.try_recv().ok());
    let mut count = 0;
    while let Some(outgoing) = next.take() {
        write_frame(stream, &outgoing.frame(0), mac).await?;
        flushed.extend(outgoing.flushed);
        count += 1;
        if count < FRAMES_QUEUED_MAX {
            next = queues.small.try_recv().ok();
        }
    }
    let mut frames = count as u64;
    if let Some(in_progress) = large {
        write_frame(stream, &in_progress.outgoing.frame(in_progress.sent), mac).await?;
        frames += 1;
        in_progress.sent += 1;
        if in_progress.sent == fragment_count(in_progress.outgoing.message.len()) {
            let busy = transfer_allowance(in_progress.outgoing.message.len());
            shared
                .busy_until_ms
                .store(shared.now_ms() + busy.as_millis() as u64, Ordering::Relaxed);
            flushed.extend(large.take().and_then(|done| done.outgoing.flushed));
            // The next large message starts at once if one waits.
            if let Ok(outgoing) = queues.large.try_recv() {
                *large = Some(InProgress { outgoing, sent: 0 });
            }
        }
    }
    stream.flush().await?;
    shared.written.fetch_add(frames, Ordering::Relaxed);
    let now = shared.now_ms();
    for mark in flushed {
        mark.set(now);
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    stream: &mut BufWriter<W>,
    frame: &Frame,
    mac: &mut FrameMac,
) -> std::io::Result<()> {
    stream.write_all(&frame.head).await?;
    stream.write_all(&frame.payload).await?;
    let tag: [u8; TAG_BYTES] = mac.tag(&[&frame.head, &frame.payload]);
    stream.write_all(&tag).await
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
    let mut assembler = Assembler::default();
    loop {
        let frame = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => break,
            frame = read_frame(&mut read, &mut mac) => frame,
        };
        // Every frame, fragment or not, is a sign of life (the dead-connection rule).
        shared.frame_received();
        let Incoming {
            from,
            to,
            request,
            payload,
            ..
        } = match frame.and_then(|frame| assembler.push(frame)) {
            Ok(Some(message)) => {
                if message.request == shared.reading.load(Ordering::Relaxed) {
                    shared.reading.store(0, Ordering::Relaxed);
                }
                message
            }
            Ok(None) => {
                shared
                    .reading
                    .store(assembler.open_request(), Ordering::Relaxed);
                continue;
            }
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
async fn close_when_idle(
    shared: Arc<Shared>,
    peer: NodeId,
    timeout: Duration,
    stats: Arc<NetStats>,
) {
    let mut closed = shared.closed.subscribe();
    let mut seen = shared.received.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = closed.wait_for(|closed| *closed) => return,
            () = tokio::time::sleep(timeout) => {}
        }
        let now = shared.received.load(Ordering::Relaxed);
        if now == seen {
            NetStats::count(&stats.idle_closed);
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
    limits: StreamLimits,
}

/// The accepting side of one connection: the handshake, then each request runs in its own task
/// (at most [`REQUESTS_IN_FLIGHT_MAX`] at once, holding at most [`REQUEST_BYTES_IN_FLIGHT_MAX`]
/// bytes of requests) and its response joins the connection's write
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
    let limits = accepting.limits;
    let (read, write) = tokio::io::split(stream);
    let mut read = BufReader::with_capacity(READ_BUFFER_BYTES, read);
    let shared = Arc::new(Shared::new());
    let (queues, receivers) = Queues::new();
    tokio::spawn(write_frames(write, receivers, shared.clone(), session.send));
    let mut receive = session.receive;
    let in_flight = Arc::new(Semaphore::new(limits.requests_in_flight_max));
    let bytes_budget = limits.request_bytes_in_flight_max.min(u32::MAX as usize);
    let bytes_in_flight = Arc::new(Semaphore::new(bytes_budget));
    tokio::spawn(close_when_idle(
        shared.clone(),
        peer,
        limits.inbound_idle_timeout,
        accepting.stats.clone(),
    ));
    let mut closed = shared.closed.subscribe();
    let mut assembler = Assembler::default();
    loop {
        let incoming = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => break,
            incoming = read_frame(&mut read, &mut receive) => incoming,
        };
        shared.frame_received();
        let incoming = match incoming.and_then(|frame| assembler.push(frame)) {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            Err(error) => {
                if error.kind() == std::io::ErrorKind::InvalidData {
                    NetStats::count(&stats.frames_refused);
                    tracing::warn!(peer, %error, "closing a connection that sent a bad frame");
                }
                break;
            }
        };
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
        // A request holds its bytes until its handler is done with it: the reader stops (and
        // TCP pushes back on the caller) while the budget is spent.
        let cost = u32::try_from(incoming.payload.len().clamp(1, bytes_budget))
            .expect("the budget fits a u32");
        let permits = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => break,
            permits = async {
                let count = in_flight.clone().acquire_owned().await;
                let bytes = bytes_in_flight.clone().acquire_many_owned(cost).await;
                (count, bytes)
            } => permits,
        };
        let (accepting, queues) = (accepting.clone(), queues.clone());
        tokio::spawn(async move {
            let response = accepting.handler.handle(peer, incoming.payload).await;
            drop(permits);
            if response.len() > MESSAGE_BYTES_MAX {
                // No error frame exists: the caller times out, as on a lost response.
                tracing::warn!(
                    size = response.len(),
                    limit = MESSAGE_BYTES_MAX,
                    "dropping a response over the message limit"
                );
                return;
            }
            let outgoing = Outgoing {
                from: dialed,
                to: peer,
                request: incoming.request,
                message: response,
                flushed: None,
            };
            // The caller may be gone; its call has failed or will time out.
            let _ = queues.send(outgoing).await;
        });
    }
    shared.close();
}

impl<T: Transport> StreamNet<T> {
    /// An endpoint with no listener: it only calls out, or binds later ([`StreamNet::serve_on`]).
    /// `auth` is what it proves to listeners and demands of callers.
    pub fn new(id: NodeId, transport: T, auth: ClusterAuth) -> Self {
        Self::with_limits(id, transport, auth, StreamLimits::default())
    }

    /// [`StreamNet::new`] with other bounds than the defaults.
    pub fn with_limits(id: NodeId, transport: T, auth: ClusterAuth, limits: StreamLimits) -> Self {
        StreamNet {
            inner: Arc::new(Inner {
                id,
                transport,
                auth,
                limits,
                stats: Arc::default(),
                connections: Arc::new(Semaphore::new(limits.inbound_connections_max)),
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
            limits: self.inner.limits,
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
                        limit = self.inner.limits.inbound_connections_max,
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
        let (queues, receivers) = Queues::new();
        tokio::spawn(write_frames(write, receivers, shared.clone(), session.send));
        tokio::spawn(read_responses(
            BufReader::with_capacity(READ_BUFFER_BYTES, read),
            shared.clone(),
            session.receive,
            (self.inner.id, to),
            self.inner.stats.clone(),
        ));
        let connection = Arc::new(Connection { queues, shared });
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Registers a waiter for request `id` on `connection`, queues the request and waits for
    /// the response.
    async fn exchange(
        &self,
        to: NodeId,
        connection: &Arc<Connection>,
        id: u64,
        request: Bytes,
        flushed: Arc<FlushMark>,
    ) -> Result<Bytes, NetError> {
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
        let outgoing = Outgoing {
            from: self.inner.id,
            to,
            request: id,
            message: request,
            flushed: Some(flushed),
        };
        if connection.queues.send(outgoing).await.is_err() {
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
        if request.len() > MESSAGE_BYTES_MAX {
            return Err(NetError::MessageTooLarge {
                size: request.len(),
                limit: MESSAGE_BYTES_MAX,
            });
        }
        // Connecting has its own deadline, and failing to connect is `Unreachable`: nothing
        // was sent, so a write that never left is not reported as indeterminate.
        let connect_timeout = timeout.min(self.inner.limits.connect_timeout);
        let connection = tokio::time::timeout(connect_timeout, self.connection(to))
            .await
            .map_err(|_| NetError::Unreachable {
                to,
                reason: format!("no connection within {} ms", connect_timeout.as_millis()),
            })??;
        let id = self.inner.next_request.fetch_add(1, Ordering::Relaxed);
        let flushed = Arc::new(FlushMark::default());
        let received = connection.shared.received.load(Ordering::Relaxed);
        let shared = connection.shared.clone();
        let exchange = self.exchange(to, &connection, id, request, flushed.clone());
        tokio::pin!(exchange);
        // The deadline is `timeout`, extended by another `timeout` each time it passes while
        // frames are moving on the connection and this call's request is not yet all written
        // (queued behind others, or a fragmented message still going out) or its response is
        // a fragmented message still coming in: a 512 MiB value takes seconds to cross, while
        // a dead peer moves nothing and is found as fast as with a small call. The peer's own
        // time to handle the request is `timeout` counted from the request's flush, whenever
        // within a period that came: a deadline that only checked "still sending, or already
        // receiving?" when a period ended gave the peer just the rest of that period, so a
        // 256 MiB echo failed whenever its peer's turn straddled a period's end (CI, stop 25).
        let mut moved = shared.frames_moved();
        let mut period_started_ms = shared.now_ms();
        let mut wait = timeout;
        loop {
            match tokio::time::timeout(wait, &mut exchange).await {
                Ok(result) => return result,
                Err(_) => {
                    if shared.is_closed() {
                        break;
                    }
                    let now_moved = shared.frames_moved();
                    let now_ms = shared.now_ms();
                    let transferring = !flushed.is_set() || shared.reading(id);
                    if transferring && now_moved != moved {
                        moved = now_moved;
                        period_started_ms = now_ms;
                        wait = timeout;
                        continue;
                    }
                    // Flushed during this period: the peer's turn began at the flush and
                    // gets a whole `timeout` from there. A request flushed at once (any small
                    // call) ends at its first deadline, as before.
                    match flushed.at_ms() {
                        Some(at) if at > period_started_ms && at + timeout_ms(timeout) > now_ms => {
                            moved = now_moved;
                            period_started_ms = now_ms;
                            wait = Duration::from_millis(at + timeout_ms(timeout) - now_ms);
                            continue;
                        }
                        _ => break,
                    }
                }
            }
        }
        // The request went out and the peer said nothing since, to anyone: presume the
        // connection dead (see the module doc) so the next call reconnects.
        if flushed.is_set()
            && shared.received.load(Ordering::Relaxed) == received
            && shared.silent_past_excuses()
        {
            tracing::debug!(to, "closing a connection silent past a call's deadline");
            shared.close();
        }
        Err(NetError::Timeout {
            to,
            timeout_ms: timeout.as_millis() as u64,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_session;
    use crate::frame::read_frame;

    fn outgoing(request: u64, message: Bytes) -> Outgoing {
        Outgoing {
            from: 7,
            to: 8,
            request,
            message,
            flushed: None,
        }
    }

    /// A small message queued while a large one is being written goes out after the fragment
    /// in progress, not after the whole large message.
    #[tokio::test]
    async fn a_small_message_overtakes_a_large_one_at_the_next_fragment() {
        let (send, mut receive) = test_session();
        // A pipe much smaller than a fragment: the writer blocks inside the first one.
        let (near, mut far) = tokio::io::duplex(64 << 10);
        let shared = Arc::new(Shared::new());
        let (queues, receivers) = Queues::new();
        tokio::spawn(write_frames(near, receivers, shared, send));
        let large = Bytes::from(vec![7u8; 8 * FRAGMENT_BYTES_MAX]);
        queues
            .send(outgoing(1, large.clone()))
            .await
            .expect("queued");
        for _ in 0..10 {
            // The writer (same thread) takes the large message and fills the pipe.
            tokio::task::yield_now().await;
        }
        queues
            .send(outgoing(2, Bytes::from_static(b"ping")))
            .await
            .expect("queued");
        let mut order = Vec::new();
        let mut assembler = crate::frame::Assembler::default();
        loop {
            let frame = read_frame(&mut far, &mut receive).await.expect("frame");
            order.push(frame.request);
            if let Some(whole) = assembler.push(frame).expect("in order")
                && whole.request == 1
            {
                assert!(whole.payload == large, "the large message arrived intact");
                break;
            }
        }
        // Fragment 0 of the large message, then the small one, then the 7 other fragments.
        assert_eq!(order, [1, 2, 1, 1, 1, 1, 1, 1, 1]);
    }

    /// A stream whose writes go through at `BYTES_PER_TICK` per `TICK` of tokio's (paused)
    /// time: a link whose transfer time a test sets exactly.
    struct Throttled {
        inner: tokio::io::DuplexStream,
        pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }

    const TICK: Duration = Duration::from_millis(5);
    const BYTES_PER_TICK: usize = 64 << 10;

    impl AsyncRead for Throttled {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Throttled {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            use std::task::Poll;
            let pause = self
                .pause
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(TICK)));
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let take = buf.len().min(BYTES_PER_TICK);
            match std::pin::Pin::new(&mut self.inner).poll_write(cx, &buf[..take]) {
                Poll::Ready(Ok(written)) => {
                    self.pause = None;
                    Poll::Ready(Ok(written))
                }
                other => other,
            }
        }

        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    fn throttled(inner: tokio::io::DuplexStream) -> Throttled {
        Throttled { inner, pause: None }
    }

    /// One listener, reached by connecting to any node: each connection is an in-memory pipe
    /// throttled both ways.
    #[derive(Clone)]
    struct ThrottledTransport {
        accepted: mpsc::Sender<Throttled>,
        listener: Arc<Mutex<Option<ThrottledListener>>>,
    }

    struct ThrottledListener(mpsc::Receiver<Throttled>);

    impl Listener for ThrottledListener {
        type Stream = Throttled;

        async fn accept(&mut self) -> std::io::Result<Throttled> {
            self.0
                .recv()
                .await
                .ok_or(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    impl ThrottledTransport {
        fn new() -> Self {
            let (accepted, receiver) = mpsc::channel(4);
            ThrottledTransport {
                accepted,
                listener: Arc::new(Mutex::new(Some(ThrottledListener(receiver)))),
            }
        }
    }

    impl Transport for ThrottledTransport {
        type Stream = Throttled;
        type Listener = ThrottledListener;
        type Address = ();

        async fn connect(&self, _to: NodeId) -> std::io::Result<Throttled> {
            let (near, far) = tokio::io::duplex(64 << 10);
            self.accepted
                .send(throttled(far))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
            Ok(throttled(near))
        }

        async fn bind(&self, _address: ()) -> std::io::Result<ThrottledListener> {
            self.listener
                .lock()
                .expect("listener lock")
                .take()
                .ok_or(std::io::ErrorKind::AddrInUse.into())
        }
    }

    /// Echoes after `turn` of (paused) time.
    #[derive(Clone)]
    struct SlowEcho {
        turn: Duration,
    }

    impl Handler for SlowEcho {
        async fn handle(&self, _from: NodeId, request: Bytes) -> Bytes {
            tokio::time::sleep(self.turn).await;
            request
        }
    }

    fn auth(seed: u64) -> ClusterAuth {
        ClusterAuth::new(
            crate::ClusterKey::from_secret(b"a secret long enough for a cluster key").expect("key"),
            seed,
        )
    }

    /// The peer's turn gets a whole `timeout` from the request's flush, however that falls
    /// within a deadline period. Here 5 MiB cross each way in about 400 ms and the peer takes
    /// 150 ms: the request is flushed about 100 ms into the second 300 ms period, the peer's
    /// turn runs past that period's end, and nothing moves at the end. A deadline that gave
    /// the peer only the rest of the period timed this call out (the CI failure of stop 25, at
    /// a random point of a 256 MiB echo on loopback).
    #[tokio::test(start_paused = true)]
    async fn the_peers_turn_gets_a_whole_timeout_from_the_requests_flush() {
        let transport = ThrottledTransport::new();
        let listener = transport.bind(()).await.expect("bind");
        let server = StreamNet::new(1, transport.clone(), auth(1));
        let turn = Duration::from_millis(150);
        tokio::spawn(async move { server.serve_on(listener, SlowEcho { turn }).await });
        let caller = StreamNet::new(2, transport, auth(2));
        caller
            .call(1, Bytes::from_static(b"warm"), Duration::from_secs(1))
            .await
            .expect("connected");

        let large = Bytes::from(vec![9u8; 5 * FRAGMENT_BYTES_MAX]);
        let timeout = Duration::from_millis(300);
        let started = tokio::time::Instant::now();
        let echoed = caller
            .call(1, large.clone(), timeout)
            .await
            .expect("the peer's turn fits in its timeout");
        assert!(echoed == large);
        let took = started.elapsed();
        assert!(
            took > 2 * timeout,
            "the call spanned a deadline that passed during the peer's turn: {took:?}"
        );

        // A turn longer than the timeout still ends the call: the extension is for the
        // transfer, not for a peer that takes too long.
        let transport = ThrottledTransport::new();
        let listener = transport.bind(()).await.expect("bind");
        let server = StreamNet::new(1, transport.clone(), auth(3));
        let turn = Duration::from_millis(700);
        tokio::spawn(async move { server.serve_on(listener, SlowEcho { turn }).await });
        let caller = StreamNet::new(2, transport, auth(4));
        let started = tokio::time::Instant::now();
        let outcome = caller.call(1, large, timeout).await;
        assert!(
            matches!(outcome, Err(NetError::Timeout { .. })),
            "{outcome:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1300),
            "{:?}",
            started.elapsed()
        );
    }
}
