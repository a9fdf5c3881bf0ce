//! A TCP relay in this process: each connection accepted is carried byte for byte to a target
//! over a connection of its own. `larder jepsen` cuts relays to partition real processes;
//! `larder bench` and `larder relay` run one that is never cut in front of `redis-server`, the
//! cheapest proxy hop there can be (no parsing, no routing: one read and one write per chunk
//! each way), so a benchmark shows what any proxy in front of a server costs on this machine
//! beside what Larder's costs.
//!
//! Bounds, as the proxy's: at most [`Relay::MAX_CONNECTIONS`] connections carried at once (one
//! more is closed at accept, before its target is dialled), and a failed `accept` (`EMFILE`)
//! retried after a backoff, 5 ms doubling to 1 s, never at once: with no descriptor left the
//! accept fails at once again, and retrying without a pause would spin a core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A TCP relay that can be cut: while blocked it refuses new connections and has closed the
/// ones it carried. It relays until the runtime it was started on stops.
pub struct Relay {
    address: SocketAddr,
    blocked: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
    /// The connections carried now; read by the tests of the bound.
    #[cfg(test)]
    carried: Arc<AtomicUsize>,
}

/// One carried connection's place in the count; given back however its task ends.
struct Carried(Arc<AtomicUsize>);

impl Drop for Carried {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Relay {
    /// How many connections one relay carries at once (Redis's default `maxclients`, as the
    /// proxy's `max_clients`).
    pub const MAX_CONNECTIONS: usize = 10_000;

    /// Binds `listen` and relays every connection it accepts to `target`, at most
    /// `max_connections` at once. A connection whose target refuses it is closed.
    pub async fn bind(
        listen: SocketAddr,
        target: SocketAddr,
        max_connections: usize,
    ) -> std::io::Result<Relay> {
        Relay::start(TcpListener::bind(listen).await?, target, max_connections)
    }

    fn start(
        listener: TcpListener,
        target: SocketAddr,
        max_connections: usize,
    ) -> std::io::Result<Relay> {
        let address = listener.local_addr()?;
        let blocked = Arc::new(AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let carried = Arc::new(AtomicUsize::new(0));
        let (b, g, c) = (blocked.clone(), generation.clone(), carried.clone());
        tokio::spawn(async move {
            let mut backoff = ACCEPT_BACKOFF_MIN;
            loop {
                let inbound = match listener.accept().await {
                    Ok((inbound, _)) => inbound,
                    Err(error) => {
                        tracing::warn!(%error, retry_in_ms = backoff.as_millis(), "relay: accept failed");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        continue;
                    }
                };
                backoff = ACCEPT_BACKOFF_MIN;
                if b.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                // Taken first and given back on refusal, so two connections racing for the
                // last place cannot both get it.
                let place = Carried(c.clone());
                if c.fetch_add(1, Ordering::SeqCst) >= max_connections {
                    drop(inbound);
                    continue;
                }
                let mut cut = g.subscribe();
                tokio::spawn(async move {
                    let _place = place;
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    // As the proxy's and the nodes' sockets: a reply is not held back to fill
                    // a segment.
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (mut a, mut b) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(Relay {
            address,
            blocked,
            generation,
            #[cfg(test)]
            carried,
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// How many connections it carries now.
    #[cfg(test)]
    fn carried(&self) -> usize {
        self.carried.load(Ordering::SeqCst)
    }

    /// Cuts (`true`) or heals the relay.
    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::SeqCst);
        if blocked {
            // Cut the connections it carries, as a partition would.
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server's address: it writes back whatever each connection sends.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(socket: &mut TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
        socket.write_all(payload).await?;
        let mut back = vec![0; payload.len()];
        socket.read_exact(&mut back).await?;
        Ok(back)
    }

    #[tokio::test]
    async fn a_relay_carries_bytes_both_ways_until_it_is_cut() {
        let relay = Relay::bind(
            "127.0.0.1:0".parse().unwrap(),
            echo().await,
            Relay::MAX_CONNECTIONS,
        )
        .await
        .expect("relay");
        let mut client = TcpStream::connect(relay.address()).await.expect("connect");
        // More than one read's worth, so the relay's copy loops.
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            round_trip(&mut client, &payload).await.expect("echoed"),
            payload
        );

        relay.set_blocked(true);
        // The carried connection is closed: a read ends (EOF or reset), it does not hang.
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.read_to_end(&mut rest),
        )
        .await;
        assert!(ended.is_ok(), "a cut relay left its connection open");
        // A new connection is accepted and closed at once.
        let mut refused = TcpStream::connect(relay.address()).await.expect("connect");
        assert!(round_trip(&mut refused, b"ping").await.is_err());

        relay.set_blocked(false);
        let mut healed = TcpStream::connect(relay.address()).await.expect("connect");
        assert_eq!(
            round_trip(&mut healed, b"ping").await.expect("echoed"),
            b"ping"
        );
    }

    #[tokio::test]
    async fn a_relay_carries_at_most_its_bound_of_connections() {
        let relay = Relay::bind("127.0.0.1:0".parse().unwrap(), echo().await, 2)
            .await
            .expect("relay");
        let mut first = TcpStream::connect(relay.address()).await.expect("connect");
        let mut second = TcpStream::connect(relay.address()).await.expect("connect");
        assert_eq!(
            round_trip(&mut first, b"one").await.expect("echoed"),
            b"one"
        );
        assert_eq!(
            round_trip(&mut second, b"two").await.expect("echoed"),
            b"two"
        );
        assert_eq!(relay.carried(), 2);
        // The third is closed at accept.
        let mut third = TcpStream::connect(relay.address()).await.expect("connect");
        assert!(round_trip(&mut third, b"three").await.is_err());
        assert_eq!(relay.carried(), 2);
        // A place given back is taken again.
        drop(first);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while relay.carried() > 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a closed connection kept its place"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut fourth = TcpStream::connect(relay.address()).await.expect("connect");
        assert_eq!(
            round_trip(&mut fourth, b"four").await.expect("echoed"),
            b"four"
        );
    }
}
