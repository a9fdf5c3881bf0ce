//! The conformance suite every [`Transport`] must pass, real or simulated.
//!
//! Like `larder_core::conformance`, plain async functions each implementation runs on its own
//! executor: the real TCP transport under a tokio runtime (`nodes/real/tests`), the simulated
//! one inside turmoil hosts (`sim/tests/sim/conformance.rs`). The peer side is
//! [`serve_echo_streams`] on a listener the test bound where node `server` is reached; the
//! caller side is [`transport_suite`].

// Bounds how long the suite waits; under the simulator this is turmoil's simulated time.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use larder_core::NodeId;
use larder_core::env::Listener;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Transport;

/// What [`serve_echo_streams`] writes after echoing everything, once it read EOF.
pub const EOF_MARK: &[u8] = b"<eof>";

/// The peer side of [`transport_suite`]: accepts streams forever; each echoes every byte it
/// reads, and on EOF writes [`EOF_MARK`] and drops the stream.
pub async fn serve_echo_streams<L>(mut listener: L)
where
    L: Listener,
    L::Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    while let Ok(stream) = listener.accept().await {
        tokio::spawn(async move {
            let (mut read, mut write) = tokio::io::split(stream);
            if tokio::io::copy(&mut read, &mut write).await.is_ok() {
                let _ = write.write_all(EOF_MARK).await;
                let _ = write.flush().await;
            }
        });
    }
}

/// Sends `data` on a new stream to `server`, half-closes, and returns everything read back
/// until EOF: writing and reading run concurrently, so large payloads cannot deadlock on
/// flow control.
async fn echo_through<T: Transport>(transport: &T, server: NodeId, data: Vec<u8>) -> Vec<u8> {
    let stream = transport.connect(server).await.expect("connect to server");
    let (mut read, mut write) = tokio::io::split(stream);
    let writer = async move {
        // In several writes, so the bytes cross in more than one piece.
        for chunk in data.chunks(64 << 10) {
            write.write_all(chunk).await.expect("write");
        }
        write.shutdown().await.expect("shutdown");
        write
    };
    let reader = async move {
        let mut back = Vec::new();
        read.read_to_end(&mut back).await.expect("read to EOF");
        back
    };
    let (_write, back) = tokio::join!(writer, reader);
    back
}

/// Runs `future`, failing the suite if it takes longer than a generous bound.
async fn bounded<F: std::future::Future>(what: &str, future: F) -> F::Output {
    const GENEROUS: Duration = Duration::from_secs(20);
    tokio::time::timeout(GENEROUS, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {GENEROUS:?}"))
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed) % 251) as u8)
        .collect()
}

fn with_mark(mut data: Vec<u8>) -> Vec<u8> {
    data.extend_from_slice(EOF_MARK);
    data
}

/// Checks the [`Transport`] contract from the caller's side. `server` must be running
/// [`serve_echo_streams`]; `silent` must be a node id nobody listens for (unknown, or known
/// with no listener). Runs on a fault-free network.
pub async fn transport_suite<T: Transport>(transport: &T, server: NodeId, silent: NodeId) {
    // Bytes round-trip in order, both ways; the peer's drop is an EOF here.
    let data = pattern(1, 10_000);
    let back = bounded(
        "a small echo",
        echo_through(transport, server, data.clone()),
    )
    .await;
    assert!(
        back == with_mark(data),
        "bytes must come back in order, followed by the peer's EOF mark ({} bytes back)",
        back.len()
    );

    // An empty stream: the half-close alone reaches the peer as EOF.
    let back = bounded("an empty echo", echo_through(transport, server, Vec::new())).await;
    assert_eq!(back, EOF_MARK, "a half-close must reach the peer as EOF");

    // Large writes arrive intact.
    let big = pattern(7, 8 << 20);
    let back = bounded(
        "an 8 MiB echo",
        echo_through(transport, server, big.clone()),
    )
    .await;
    assert!(
        back == with_mark(big),
        "an 8 MiB write must come back intact ({} bytes back)",
        back.len()
    );

    // Many connections at once, each with its own bytes.
    let streams = (0..48u32).map(|i| async move {
        let data = pattern(100 + i, 1_000 + 997 * i as usize);
        (echo_through(transport, server, data.clone()).await, data)
    });
    let all = bounded("48 concurrent echoes", futures::future::join_all(streams)).await;
    for (i, (back, data)) in all.into_iter().enumerate() {
        assert!(
            back == with_mark(data),
            "concurrent stream {i} crossed bytes with another"
        );
    }

    // A stream dropped mid-conversation (no half-close) leaves the peer serving. (The peer
    // dropping its streams without a shutdown, after the EOF mark, is what every echo above
    // read as EOF.)
    let mut dropped = transport.connect(server).await.expect("connect");
    dropped.write_all(b"bye").await.expect("write");
    let mut three = [0u8; 3];
    dropped.read_exact(&mut three).await.expect("echo");
    assert_eq!(&three, b"bye");
    drop(dropped);

    // Nobody listening is an error, never a hang.
    let outcome = bounded("a connect to a silent node", transport.connect(silent)).await;
    assert!(
        outcome.is_err(),
        "a connect to node {silent}, where nobody listens, succeeded"
    );

    // The server is still fine afterwards.
    let data = pattern(9, 100);
    let back = bounded(
        "an echo after the rest",
        echo_through(transport, server, data.clone()),
    )
    .await;
    assert!(back == with_mark(data));
}

/// The cluster secret of tests: public, so never use it for a real cluster.
pub const TEST_SECRET: &str = "larder test cluster secret, public";

/// The authentication of in-process tests: [`TEST_SECRET`]'s key with nonces from `seed`.
pub fn test_auth(seed: u64) -> crate::ClusterAuth {
    crate::ClusterAuth::new(
        crate::ClusterKey::from_secret(TEST_SECRET.as_bytes()).expect("long enough"),
        seed,
    )
}
