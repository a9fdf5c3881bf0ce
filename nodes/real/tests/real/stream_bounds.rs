//! `StreamNet`'s bounds and large messages, over real TCP on loopback: each bound lowered
//! through `StreamLimits` until a test reaches it.

// A test of real sockets: real time for its waits.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{Handler, Net, NetError};
use larder_real::{AddressBook, TcpTransport, TokioListener, test_auth};
use larder_transport::{FRAGMENT_BYTES_MAX, StreamLimits, StreamNet};
use tokio::sync::Semaphore;

type Endpoint = StreamNet<TcpTransport>;

/// Echoes each request after waiting for a permit from `gate` (if any), counting how many
/// requests are inside it at once.
#[derive(Clone, Default)]
struct GatedEcho {
    gate: Option<Arc<Semaphore>>,
    inside: Arc<AtomicUsize>,
    most_inside: Arc<AtomicUsize>,
}

impl Handler for GatedEcho {
    async fn handle(&self, _from: NodeId, request: Bytes) -> Bytes {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_inside.fetch_max(now, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("open").forget();
        }
        self.inside.fetch_sub(1, Ordering::SeqCst);
        request
    }
}

/// A server (node 1) with `limits` serving `handler`, and the book its callers use.
async fn server(limits: StreamLimits, handler: GatedEcho) -> (Endpoint, AddressBook) {
    let book = AddressBook::new();
    let transport = TcpTransport::new(book.clone());
    let listener = TokioListener::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind");
    book.insert(1, listener.local_addr().expect("address"));
    let server = StreamNet::with_limits(1, transport, test_auth(1), limits);
    let serving = server.clone();
    tokio::spawn(async move { serving.serve_on(listener, handler).await });
    (server, book)
}

fn client(id: NodeId, book: &AddressBook) -> Endpoint {
    StreamNet::new(id, TcpTransport::new(book.clone()), test_auth(id))
}

const CALL: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_crosses_in_fragments_while_small_calls_are_served() {
    let (_server, book) = server(StreamLimits::default(), GatedEcho::default()).await;
    let caller = client(100, &book);
    // 96 MiB: over the old single-frame limit of 64 MiB, and 96 fragments each way.
    let large = Bytes::from(
        (0..96 * FRAGMENT_BYTES_MAX)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    );
    let large_call = tokio::spawn({
        let (caller, large) = (caller.clone(), large.clone());
        async move { caller.call(1, large, CALL).await }
    });
    // Small calls on the same connection while the large one is on the wire both ways.
    tokio::time::sleep(Duration::from_millis(5)).await;
    for i in 0..20u32 {
        let small = Bytes::from(i.to_be_bytes().to_vec());
        let answer = caller.call(1, small.clone(), CALL).await.expect("small");
        assert_eq!(answer, small);
    }
    // (That each waits behind at most a fragment is `stream_net`'s unit test: here the
    // scheduling of a busy machine decides the order, so it is not asserted.)
    let echoed = large_call.await.expect("task").expect("large call");
    assert!(echoed == large, "the large message came back intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_refuses_the_next_caller_as_busy() {
    let limits = StreamLimits {
        inbound_connections_max: 2,
        ..StreamLimits::default()
    };
    let (server, book) = server(limits, GatedEcho::default()).await;
    let (first, second, third) = (client(100, &book), client(101, &book), client(102, &book));
    for caller in [&first, &second] {
        caller
            .call(1, Bytes::from_static(b"hi"), CALL)
            .await
            .expect("within the limit");
    }
    let refused = third.call(1, Bytes::from_static(b"hi"), CALL).await;
    assert!(
        matches!(refused, Err(NetError::Unreachable { .. })),
        "{refused:?}"
    );
    assert_eq!(
        server.stats().connections_refused.load(Ordering::Relaxed),
        1
    );
    // A connection closed frees its place.
    drop(first);
    let mut answered = false;
    for _ in 0..100 {
        if third.call(1, Bytes::from_static(b"hi"), CALL).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "a freed place is taken by the next caller");
}

/// Starts `count` calls of `size` bytes from one caller, waits until the handler has taken
/// what it will, and returns how many it holds at once before the gate opens.
async fn held_at_once(limits: StreamLimits, count: usize, size: usize) -> usize {
    let gate = Arc::new(Semaphore::new(0));
    let handler = GatedEcho {
        gate: Some(gate.clone()),
        ..GatedEcho::default()
    };
    let (_server, book) = server(limits, handler.clone()).await;
    let caller = client(100, &book);
    let calls: Vec<_> = (0..count)
        .map(|i| {
            let caller = caller.clone();
            let request = Bytes::from(vec![i as u8; size]);
            tokio::spawn(async move { caller.call(1, request, CALL).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = handler.inside.load(Ordering::SeqCst);
    gate.add_permits(count);
    for call in calls {
        call.await
            .expect("task")
            .expect("every call is answered once let in");
    }
    assert_eq!(handler.most_inside.load(Ordering::SeqCst), held);
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_per_connection_are_bounded() {
    let limits = StreamLimits {
        requests_in_flight_max: 3,
        ..StreamLimits::default()
    };
    assert_eq!(held_at_once(limits, 8, 16).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_in_flight_per_connection_are_bounded() {
    // 1,000 bytes of budget: one 600-byte request at a time, however many are allowed.
    let limits = StreamLimits {
        request_bytes_in_flight_max: 1_000,
        ..StreamLimits::default()
    };
    assert_eq!(held_at_once(limits, 4, 600).await, 1);
    // A request larger than the whole budget still gets handled, alone.
    let limits = StreamLimits {
        request_bytes_in_flight_max: 1_000,
        ..StreamLimits::default()
    };
    assert_eq!(held_at_once(limits, 2, 5_000).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_the_caller_reconnects() {
    let limits = StreamLimits {
        inbound_idle_timeout: Duration::from_millis(200),
        ..StreamLimits::default()
    };
    let (server, book) = server(limits, GatedEcho::default()).await;
    let caller = client(100, &book);
    caller
        .call(1, Bytes::from_static(b"one"), CALL)
        .await
        .expect("first");
    let mut closed = false;
    for _ in 0..100 {
        if server.stats().idle_closed.load(Ordering::Relaxed) == 1 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "the idle connection was closed");
    // The caller notices the close and reconnects on its next call.
    let mut answered = false;
    for _ in 0..50 {
        if caller
            .call(1, Bytes::from_static(b"two"), CALL)
            .await
            .is_ok()
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "the caller reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_outlives_its_timeout_while_its_large_message_moves_and_no_longer() {
    // 256 MiB each way with a 300 ms timeout: over a second of transfer (more on a busy
    // machine), extended while it moves. The timeout still has to cover the peer's own turn
    // between the request's last fragment and the response's first.
    let (_server, book) = server(StreamLimits::default(), GatedEcho::default()).await;
    let caller = client(100, &book);
    let large = Bytes::from(vec![5u8; 256 << 20]);
    let timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let echoed = caller
        .call(1, large.clone(), timeout)
        .await
        .expect("a moving transfer is not cut off");
    assert!(echoed == large);
    assert!(
        started.elapsed() > timeout,
        "the transfer outlived its timeout ({:?}), or the test proves nothing",
        started.elapsed()
    );

    // A handler that never answers: once the request is across, nothing moves, and the call
    // ends one timeout later.
    let gate = Arc::new(Semaphore::new(0));
    let handler = GatedEcho {
        gate: Some(gate),
        ..GatedEcho::default()
    };
    let (_server, book) = server(StreamLimits::default(), handler).await;
    let caller = client(100, &book);
    let started = std::time::Instant::now();
    let outcome = caller
        .call(
            1,
            Bytes::from(vec![5u8; 64 << 20]),
            Duration::from_millis(200),
        )
        .await;
    assert!(
        matches!(outcome, Err(NetError::Timeout { .. })),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a silent peer is given up on: {:?}",
        started.elapsed()
    );
}
