//! The proxy's protocol handling over an in-memory stream: malformed and oversized input, unknown
//! commands, arity errors, authentication, HELLO, QUIT, and an unreachable cluster. Each bad
//! input gets a Redis-style error; only protocol errors close the connection (as in Redis).

// A test on the real environment: real time and sockets are what it exercises.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use larder_client::ClientConfig;
use larder_client::SharedRouting;
use larder_core::resp::Limits;
use larder_core::routing::RoutingTable;
use larder_proxy::{Proxy, ProxyConfig};
use larder_real::{AddressBook, TcpNet, TokioClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

fn proxy(password: Option<&str>) -> std::sync::Arc<Proxy<TcpNet, TokioClock>> {
    let config = ProxyConfig {
        password: password.map(str::to_string),
        limits: Limits {
            bulk_bytes_max: 64,
            ..Limits::default()
        },
        client: ClientConfig {
            request_timeout: Duration::from_millis(100),
            attempts_max: 1,
            backoff: Duration::from_millis(1),
            ..ClientConfig::default()
        },
        ..ProxyConfig::default()
    };
    // Nodes 1-3 have no address: the cluster is unreachable, which the data path must report.
    let routing = SharedRouting::new(RoutingTable::even(2, |_| vec![1, 2, 3]));
    Proxy::new(
        TcpNet::client(1000, AddressBook::new(), larder_real::test_auth(1000)),
        TokioClock::new(),
        config,
        routing,
    )
}

/// Sends `input` and collects the reply bytes until the stream goes quiet or closes.
async fn exchange(stream: &mut DuplexStream, input: &[u8]) -> String {
    stream.write_all(input).await.expect("write");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    // The first bytes may wait on the cluster; after them, a short quiet period ends the reply.
    let mut wait = Duration::from_secs(3);
    loop {
        match tokio::time::timeout(wait, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => {
                reply.extend_from_slice(&buf[..n]);
                wait = Duration::from_millis(50);
            }
            Ok(Err(error)) => panic!("read: {error}"),
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

fn connect(
    proxy: &std::sync::Arc<Proxy<TcpNet, TokioClock>>,
) -> (DuplexStream, tokio::task::JoinHandle<std::io::Result<()>>) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let proxy = proxy.clone();
    let task = tokio::spawn(async move { proxy.connection(server).await });
    (client, task)
}

#[tokio::test]
async fn bad_input_gets_redis_errors_and_keeps_the_connection() {
    let proxy = proxy(None);
    let (mut c, _task) = connect(&proxy);
    assert_eq!(exchange(&mut c, b"*1\r\n$4\r\nPING\r\n").await, "+PONG\r\n");
    assert_eq!(
        exchange(&mut c, b"PING\r\n").await,
        "+PONG\r\n",
        "inline commands"
    );
    let unknown = exchange(&mut c, b"*2\r\n$3\r\nFOO\r\n$3\r\nbar\r\n").await;
    assert!(
        unknown.starts_with("-ERR unknown command 'foo'"),
        "{unknown}"
    );
    assert!(unknown.contains("'bar'"), "{unknown}");
    let arity = exchange(&mut c, b"*1\r\n$3\r\nGET\r\n").await;
    assert_eq!(
        arity,
        "-ERR wrong number of arguments for 'get' command\r\n"
    );
    let syntax = exchange(
        &mut c,
        b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$5\r\nBOGUS\r\n",
    )
    .await;
    assert_eq!(syntax, "-ERR syntax error\r\n");
    let unreachable = exchange(&mut c, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").await;
    assert!(unreachable.starts_with("-TRYAGAIN "), "{unreachable}");
    let pipelined = exchange(&mut c, b"PING\r\nECHO hi\r\n*1\r\n$4\r\nPING\r\n").await;
    assert_eq!(pipelined, "+PONG\r\n$2\r\nhi\r\n+PONG\r\n");
    assert_eq!(exchange(&mut c, b"*1\r\n$4\r\nQUIT\r\n").await, "+OK\r\n");
}

#[tokio::test]
async fn malformed_resp_is_a_protocol_error_and_closes() {
    let proxy = proxy(None);
    let (mut c, task) = connect(&proxy);
    let reply = exchange(&mut c, b"*1\r\n$abc\r\nPING\r\n").await;
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("connection closes after a protocol error")
        .expect("task")
        .expect("clean close");
}

#[tokio::test]
async fn oversized_bulk_is_refused_before_it_is_read() {
    let proxy = proxy(None);
    let (mut c, task) = connect(&proxy);
    // Declares 1000 bytes against a 64-byte limit; the body never needs to arrive.
    let reply = exchange(&mut c, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000\r\n").await;
    assert!(reply.starts_with("-ERR Protocol error"), "{reply}");
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("connection closes")
        .expect("task")
        .expect("clean close");
}

#[tokio::test]
async fn requirepass_and_hello() {
    let proxy = proxy(Some("sesame"));
    let (mut c, _task) = connect(&proxy);
    assert_eq!(
        exchange(&mut c, b"PING\r\n").await,
        "-NOAUTH Authentication required.\r\n"
    );
    let wrong = exchange(&mut c, b"AUTH nope\r\n").await;
    assert!(wrong.starts_with("-WRONGPASS"), "{wrong}");
    assert_eq!(exchange(&mut c, b"AUTH sesame\r\n").await, "+OK\r\n");
    assert_eq!(exchange(&mut c, b"PING\r\n").await, "+PONG\r\n");
    let noproto = exchange(&mut c, b"HELLO 4\r\n").await;
    assert!(noproto.starts_with("-NOPROTO"), "{noproto}");
    let hello3 = exchange(&mut c, b"HELLO 3\r\n").await;
    assert!(
        hello3.starts_with("%7\r\n"),
        "HELLO 3 answers a RESP3 map: {hello3}"
    );
    let hello2 = exchange(&mut c, b"HELLO 2\r\n").await;
    assert!(
        hello2.starts_with("*14\r\n"),
        "HELLO 2 answers a flat array: {hello2}"
    );
}
