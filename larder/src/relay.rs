//! A TCP relay in this process: each connection accepted is carried byte for byte to a target
//! over a connection of its own. `larder jepsen` cuts relays to partition real processes;
//! `larder bench` and `larder relay` run one that is never cut in front of `redis-server`, the
//! cheapest proxy hop there can be (no parsing, no routing: one read and one write per chunk
//! each way), so a benchmark shows what any proxy in front of a server costs on this machine
//! beside what Larder's costs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};

/// A TCP relay that can be cut: while blocked it refuses new connections and has closed the
/// ones it carried. It relays until the runtime it was started on stops.
pub struct Relay {
    address: SocketAddr,
    blocked: Arc<AtomicBool>,
    generation: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Relay {
    /// Relays every connection `listener` accepts to `target`. A connection whose target
    /// refuses it is closed.
    pub fn start(listener: TcpListener, target: SocketAddr) -> std::io::Result<Relay> {
        let address = listener.local_addr()?;
        let blocked = Arc::new(AtomicBool::new(false));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = Arc::new(generation);
        let (b, g) = (blocked.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if b.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = g.subscribe();
                tokio::spawn(async move {
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
        })
    }

    /// Binds `listen` and relays to `target` ([`Relay::start`]).
    pub async fn bind(listen: SocketAddr, target: SocketAddr) -> std::io::Result<Relay> {
        Relay::start(TcpListener::bind(listen).await?, target)
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
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
        let relay = Relay::bind("127.0.0.1:0".parse().unwrap(), echo().await)
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
}
