//! The shared conformance suite (`larder_core::conformance`) on the real environment.

// A test on the real environment: real time and sockets are what it exercises.
#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;

use larder_core::conformance::{EchoHandler, clock_suite, disk_suite, net_suite};
use larder_core::env::Net;
use larder_real::{AddressBook, FjallDisk, FjallOptions, TcpNet, TokioClock};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_clock_passes_the_clock_suite() {
    clock_suite(&TokioClock::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_disk_passes_the_disk_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("open");
    disk_suite(&disk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_fjall_disk_passes_the_disk_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("open");
    disk_suite(&larder_core::env::Sealed::new(disk, Default::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_disk_keeps_synced_data_across_reopen() {
    use larder_core::env::{Disk, Space, WriteBatch};
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("open");
        let mut batch = WriteBatch::new();
        batch.put(Space::State, &b"k"[..], &b"v"[..]);
        batch.put(Space::Meta, &b"m"[..], &b"w"[..]);
        disk.write(batch, true).await.expect("write");
    }
    let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("reopen");
    assert_eq!(
        disk.get(Space::State, b"k").await.expect("get").as_deref(),
        Some(&b"v"[..])
    );
    assert_eq!(
        disk.get(Space::Meta, b"m").await.expect("get").as_deref(),
        Some(&b"w"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_net_passes_the_net_suite() {
    let book = AddressBook::new();
    let server = TcpNet::bind(1, loopback(), book.clone(), larder_real::test_auth(1))
        .await
        .expect("bind");
    tokio::spawn(async move {
        server
            .serve(EchoHandler {
                clock: TokioClock::new(),
            })
            .await
    });
    // Node 3 has an address (a port that was bound and released), but nobody listens there.
    let released = std::net::TcpListener::bind(loopback()).expect("bind");
    book.insert(3, released.local_addr().expect("address"));
    drop(released);
    let client = TcpNet::client(100, book.clone(), larder_real::test_auth(100));
    net_suite(&client, &TokioClock::new(), 1, 3).await;
    // And a node id nobody has heard of.
    net_suite(&client, &TokioClock::new(), 1, 42).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_net_reconnects_after_the_server_restarts() {
    use bytes::Bytes;
    use std::time::Duration;
    // The server runs on its own runtime so that shutting that runtime down closes its
    // sockets, as a process exit would.
    let serve_on = |runtime: &tokio::runtime::Runtime, book: AddressBook, address: SocketAddr| {
        runtime.block_on(async {
            // The stopped runtime's listener closes in the background (`shutdown_background`),
            // so binding its port again may find it still in use for a moment: retried (CI saw
            // "Address already in use" once).
            let mut attempts = 0;
            let server = loop {
                match TcpNet::bind(1, address, book.clone(), larder_real::test_auth(1)).await {
                    Ok(server) => break server,
                    Err(error) if attempts < 40 => {
                        let _ = error;
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(error) => panic!("bind: {error:?}"),
                }
            };
            let address = server.listen_address().expect("address");
            tokio::spawn(async move {
                server
                    .serve(EchoHandler {
                        clock: TokioClock::new(),
                    })
                    .await
            });
            address
        })
    };
    let book = AddressBook::new();
    let first = tokio::runtime::Runtime::new().expect("runtime");
    let (b, f) = (book.clone(), &first);
    let address = tokio::task::block_in_place(|| serve_on(f, b, loopback()));
    let client = TcpNet::client(100, book.clone(), larder_real::test_auth(100));
    let second = Duration::from_secs(1);
    client
        .call(1, Bytes::from_static(b"one"), second)
        .await
        .expect("first call");
    first.shutdown_background();
    let outcome = client.call(1, Bytes::from_static(b"two"), second).await;
    assert!(outcome.is_err(), "a call to a stopped server succeeded");

    let restarted = tokio::runtime::Runtime::new().expect("runtime");
    let (b, r) = (book.clone(), &restarted);
    tokio::task::block_in_place(|| serve_on(r, b, address));
    let mut answered = false;
    for _ in 0..20 {
        if client
            .call(1, Bytes::from_static(b"three"), second)
            .await
            .is_ok()
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    restarted.shutdown_background();
    assert!(answered, "client never reached the restarted server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_transport_passes_the_transport_suite() {
    use larder_transport::Transport;
    use larder_transport::conformance::{serve_echo_streams, transport_suite};
    let book = AddressBook::new();
    let transport = larder_real::TcpTransport::new(book.clone());
    let listener = transport.bind(loopback()).await.expect("bind");
    book.insert(1, listener.local_addr().expect("address"));
    tokio::spawn(serve_echo_streams(listener));
    // Node 3 has an address nobody listens on; node 42 has none.
    let released = std::net::TcpListener::bind(loopback()).expect("bind");
    book.insert(3, released.local_addr().expect("address"));
    drop(released);
    transport_suite(&transport, 1, 3).await;
    transport_suite(&transport, 1, 42).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_net_refuses_an_oversized_message_and_closes_on_a_bad_length() {
    use bytes::Bytes;
    use larder_core::env::{MESSAGE_BYTES_MAX, NetError};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let book = AddressBook::new();
    let server = TcpNet::bind(1, loopback(), book.clone(), larder_real::test_auth(1))
        .await
        .expect("bind");
    let address = server.listen_address().expect("address");
    tokio::spawn(async move {
        server
            .serve(EchoHandler {
                clock: TokioClock::new(),
            })
            .await
    });
    let client = TcpNet::client(100, book.clone(), larder_real::test_auth(100));
    let oversized = Bytes::from(vec![0u8; MESSAGE_BYTES_MAX + 1]);
    let outcome = client.call(1, oversized, Duration::from_secs(5)).await;
    assert_eq!(
        outcome,
        Err(NetError::MessageTooLarge {
            size: MESSAGE_BYTES_MAX + 1,
            limit: MESSAGE_BYTES_MAX
        })
    );
    // Exactly at the limit still crosses.
    let at_limit = Bytes::from(vec![7u8; MESSAGE_BYTES_MAX - 8]);
    let response = client
        .call(1, at_limit.clone(), Duration::from_secs(30))
        .await
        .expect("a message at the limit");
    assert_eq!(
        response.len(),
        MESSAGE_BYTES_MAX,
        "8-byte id plus the payload"
    );

    // A peer that sends no handshake (here: a frame length over the limit, then more bytes
    // of the same) is refused and has its connection closed. A bad length after a handshake
    // is the frame decoder's unit tests' and fuzz test's.
    let mut raw = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    raw.write_all(&[0xff; 36]).await.expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut rest))
        .await
        .expect("the server must close the connection, not wait");
    assert!(
        read.is_err() || rest.len() <= 5,
        "nothing but a refusal and a close: {read:?} {rest:?}"
    );
    // And the server still serves others.
    client
        .call(1, Bytes::from_static(b"after"), Duration::from_secs(5))
        .await
        .expect("echo after a bad peer");
}
