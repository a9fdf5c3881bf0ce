//! The proxy's protocol handling over an in-memory stream: malformed and oversized input, unknown
//! commands, arity errors, authentication, HELLO, QUIT, and an unreachable cluster. Each bad
//! input gets a Redis-style error; only protocol errors close the connection (as in Redis).
//! And the proxy's bounds: `max_clients` (in memory at the default 10,000 and over real
//! sockets), the idle timeout, Redis 7's pre-AUTH limits, the failed-AUTH delay, surviving
//! `accept` errors, a large request in many small reads, the output cap, and backpressure on a
//! client that pipelines without reading. (A slow reader of large values, which needs a
//! cluster, is in `bounds.rs`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use larder_client::SharedRouting;
use larder_core::resp::Limits;
use larder_core::routing::RoutingTable;
use larder_proxy::{ConnectionError, OUTPUT_FLUSH_BYTES, Proxy, ProxyConfig};
use larder_real::{AddressBook, TcpNet, TokioClock};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::support::{FlakyListener, config};

fn proxy(password: Option<&str>) -> Arc<Proxy<TcpNet, TokioClock>> {
    proxy_with(ProxyConfig {
        password: password.map(str::to_string),
        limits: Limits {
            bulk_bytes_max: 64,
            ..Limits::default()
        },
        ..config()
    })
}

fn proxy_with(config: ProxyConfig) -> Arc<Proxy<TcpNet, TokioClock>> {
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
/// Sends each request in turn and checks its whole reply.
async fn answers_all<const N: usize>(stream: &mut DuplexStream, exchanges: [(&str, &str); N]) {
    for (input, expected) in exchanges {
        assert_eq!(
            exchange(stream, input.as_bytes()).await,
            expected,
            "{input:?}"
        );
    }
}

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

type Task = tokio::task::JoinHandle<Result<(), ConnectionError>>;

fn connect(proxy: &Arc<Proxy<TcpNet, TokioClock>>) -> (DuplexStream, Task) {
    connect_with(proxy, 1 << 16)
}

/// A connection over an in-memory pipe, as from `peer` to the proxy's `local` address.
fn connect_from(
    proxy: &Arc<Proxy<TcpNet, TokioClock>>,
    peer: &str,
    local: &str,
) -> (DuplexStream, Task) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let proxy = proxy.clone();
    let endpoints = Some(larder_core::env::Endpoints {
        peer: peer.parse().expect("peer address"),
        local: local.parse().expect("local address"),
        fd: None,
    });
    let task = tokio::spawn(async move { proxy.connection_from(server, endpoints).await });
    (client, task)
}

/// A connection over an in-memory pipe holding at most `capacity` bytes each way.
fn connect_with(proxy: &Arc<Proxy<TcpNet, TokioClock>>, capacity: usize) -> (DuplexStream, Task) {
    let (client, server) = tokio::io::duplex(capacity);
    let proxy = proxy.clone();
    let task = tokio::spawn(async move { proxy.connection(server).await });
    (client, task)
}

#[tokio::test]
async fn server_commands_answer_as_redis_7_0_with_no_scripts_loaded() {
    let proxy = proxy(None);
    let (mut c, _task) = connect(&proxy);
    answers_all(&mut c, [
        ("CLIENT GETNAME\r\n", "$-1\r\n"),
        ("CLIENT SETNAME larder-test\r\n", "+OK\r\n"),
        ("CLIENT GETNAME\r\n", "$11\r\nlarder-test\r\n"),
        (
            "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$3\r\na b\r\n",
            "-ERR Client names cannot contain spaces, newlines or special characters.\r\n",
        ),
        ("CLIENT GETNAME\r\n", "$11\r\nlarder-test\r\n"),
        (
            "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$0\r\n\r\n",
            "+OK\r\n",
        ),
        ("CLIENT GETNAME\r\n", "$-1\r\n"),
        ("FUNCTION FLUSH\r\n", "+OK\r\n"),
        ("FUNCTION FLUSH SYNC\r\n", "+OK\r\n"),
        ("FUNCTION LIST\r\n", "*0\r\n"),
        ("SCRIPT FLUSH\r\n", "+OK\r\n"),
        ("SCRIPT EXISTS a b\r\n", "*2\r\n:0\r\n:0\r\n"),
        ("CONFIG SET hash-max-ziplist-value 10\r\n", "+OK\r\n"),
        (
            "CONFIG GET hash-max-*-value\r\n",
            "*4\r\n$23\r\nhash-max-listpack-value\r\n$2\r\n10\r\n$22\r\nhash-max-ziplist-value\r\n$2\r\n10\r\n",
        ),
        (
            "CONFIG SET list-compress-depth x\r\n",
            "-ERR CONFIG SET failed (possibly related to argument 'list-compress-depth') - argument couldn't be parsed into an integer\r\n",
        ),
        (
            "CONFIG GET maxclients\r\n",
            "*2\r\n$10\r\nmaxclients\r\n$5\r\n10000\r\n",
        ),
        (
            "FUNCTION NOPE\r\n",
            "-ERR unknown subcommand 'NOPE'. Try FUNCTION HELP.\r\n",
        ),
    ])
    .await;
    let hello = exchange(&mut c, b"HELLO 2\r\n").await;
    assert!(hello.contains("$6\r\n7.0.15\r\n"), "{hello}");
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

/// Reads until the proxy closes the stream (or `limit` passes: a failure), returning the bytes.
async fn read_to_close(stream: &mut DuplexStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .expect("read");
    out
}

#[tokio::test]
async fn max_clients_refuses_one_more_with_redis_error() {
    let proxy = proxy_with(ProxyConfig {
        max_clients: 3,
        ..config()
    });
    let mut open = Vec::new();
    for _ in 0..3 {
        let (mut c, task) = connect(&proxy);
        assert_eq!(exchange(&mut c, b"PING\r\n").await, "+PONG\r\n");
        open.push((c, task));
    }
    let (mut refused, task) = connect(&proxy);
    let reply = read_to_close(&mut refused, Duration::from_secs(2)).await;
    assert_eq!(reply, b"-ERR max number of clients reached\r\n");
    task.await
        .expect("task")
        .expect("a refusal is a clean close");
    assert_eq!(proxy.stats().rejected_connections, 1);
    assert_eq!(proxy.stats().connections, 3);
    let info = exchange(&mut open[0].0, b"INFO\r\n").await;
    for line in [
        "connected_clients:3\r\n",
        "maxclients:3\r\n",
        "rejected_connections:1\r\n",
    ] {
        assert!(info.contains(line), "{line} in {info}");
    }
    // Every way out of a connection frees its slot: a QUIT, a protocol error, a dropped client.
    let (mut a, task_a) = open.pop().expect("three");
    exchange(&mut a, b"QUIT\r\n").await;
    task_a.await.expect("task").expect("quit");
    let (mut b, task_b) = open.pop().expect("two");
    exchange(&mut b, b"*1\r\n$x\r\n").await;
    task_b.await.expect("task").expect("protocol error");
    let (c, task_c) = open.pop().expect("one");
    drop(c);
    task_c.await.expect("task").expect("eof");
    assert_eq!(proxy.stats().connections, 0);
    let (mut again, _task) = connect(&proxy);
    assert_eq!(exchange(&mut again, b"PING\r\n").await, "+PONG\r\n");
}

/// 10,000 connections (Redis's default `maxclients`) over in-memory pipes: the proxy's own
/// count and refusal at the default limit, with no file descriptors involved. The same limit
/// over real sockets is `max_clients_over_real_sockets` (at 1,000: 10,001 sockets on both ends
/// would need 20,002 descriptors, beyond this machine's `ulimit -n` of 20,000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_at_the_default_limit() {
    let proxy = proxy_with(config());
    assert_eq!(ProxyConfig::default().max_clients, 10_000);
    let mut open = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let (mut c, task) = connect_with(&proxy, 64);
        c.write_all(b"PING\r\n").await.expect("write");
        open.push((c, task));
    }
    for (c, _) in &mut open {
        let mut pong = [0u8; 7];
        c.read_exact(&mut pong).await.expect("every one is served");
        assert_eq!(&pong, b"+PONG\r\n");
    }
    assert_eq!(proxy.stats().connections, 10_000);
    let (mut refused, _task) = connect(&proxy);
    let reply = read_to_close(&mut refused, Duration::from_secs(5)).await;
    assert_eq!(reply, b"-ERR max number of clients reached\r\n");
    drop(open);
    for _ in 0..500 {
        if proxy.stats().connections == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.stats().connections, 0, "every slot comes back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_over_real_sockets() {
    let proxy = proxy_with(ProxyConfig {
        max_clients: 1000,
        ..config()
    });
    let listener = larder_real::TokioListener::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let serving = proxy.clone();
    let server = tokio::spawn(async move { serving.serve(listener).await });
    let mut open = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let mut c = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        c.write_all(b"PING\r\n").await.expect("write");
        let mut pong = [0u8; 7];
        c.read_exact(&mut pong).await.expect("served");
        assert_eq!(&pong, b"+PONG\r\n");
        open.push(c);
    }
    let mut refused = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut reply))
        .await
        .expect("closed")
        .expect("read");
    assert_eq!(reply, b"-ERR max number of clients reached\r\n");
    assert_eq!(proxy.stats().rejected_connections, 1);
    server.abort();
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let proxy = proxy_with(ProxyConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..config()
    });
    let (mut busy, busy_task) = connect(&proxy);
    let (mut idle, idle_task) = connect(&proxy);
    assert_eq!(exchange(&mut idle, b"PING\r\n").await, "+PONG\r\n");
    let started = Instant::now();
    // A connection that keeps talking stays open past the timeout.
    for _ in 0..8 {
        busy.write_all(b"PING\r\n").await.expect("write");
        let mut pong = [0u8; 7];
        busy.read_exact(&mut pong).await.expect("still served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() > Duration::from_millis(600));
    assert!(!busy_task.is_finished());
    let rest = read_to_close(&mut idle, Duration::from_secs(2)).await;
    assert!(rest.is_empty(), "closed without a reply, as Redis does");
    idle_task.await.expect("task").expect("clean close");
    assert_eq!(proxy.stats().idle_closed, 1);
    // Off by default (Redis's `timeout 0`).
    assert_eq!(ProxyConfig::default().idle_timeout, None);
}

#[tokio::test]
async fn unauthenticated_clients_get_redis_7_limits() {
    let proxy = proxy_with(ProxyConfig {
        password: Some("sesame".into()),
        ..config()
    });
    let (mut c, task) = connect(&proxy);
    let reply = exchange(&mut c, b"*11\r\n").await;
    assert_eq!(
        reply,
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    task.await.expect("task").expect("closed after the error");
    let (mut c, task) = connect(&proxy);
    let reply = exchange(&mut c, b"*2\r\n$4\r\nAUTH\r\n$16385\r\n").await;
    assert_eq!(
        reply,
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    task.await.expect("task").expect("closed after the error");
    // Once authenticated, the configured limits apply: 11 arguments are fine.
    let (mut c, _task) = connect(&proxy);
    assert_eq!(exchange(&mut c, b"AUTH sesame\r\n").await, "+OK\r\n");
    let mut eleven = b"*11\r\n$4\r\nECHO\r\n".to_vec();
    for _ in 0..10 {
        eleven.extend_from_slice(b"$1\r\nx\r\n");
    }
    let reply = exchange(&mut c, &eleven).await;
    assert_eq!(
        reply,
        "-ERR wrong number of arguments for 'echo' command\r\n"
    );
    // Without a password there is nothing to authenticate and no pre-AUTH limit.
    let open = proxy_with(config());
    let (mut c, _task) = connect(&open);
    let mut big = b"*12\r\n$4\r\nECHO\r\n".to_vec();
    for _ in 0..11 {
        big.extend_from_slice(b"$1\r\nx\r\n");
    }
    let reply = exchange(&mut c, &big).await;
    assert_eq!(
        reply,
        "-ERR wrong number of arguments for 'echo' command\r\n"
    );
}

/// Sends `input` and returns the reply, checking that its first byte came no sooner than the
/// default failed-AUTH delay (100 ms).
async fn timed_reply(c: &mut DuplexStream, input: &[u8]) -> String {
    let started = Instant::now();
    c.write_all(input).await.expect("write");
    let mut first = [0u8; 1];
    c.read_exact(&mut first).await.expect("a reply");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(100),
        "answered after {waited:?}"
    );
    let rest = exchange(c, b"").await;
    format!("{}{rest}", first[0] as char)
}

#[tokio::test]
async fn failed_auth_is_delayed_counted_and_bounded() {
    let proxy = proxy_with(ProxyConfig {
        password: Some("sesame".into()),
        auth_failures_max: 3,
        ..config()
    });
    assert_eq!(
        ProxyConfig::default().auth_failure_delay,
        Duration::from_millis(100)
    );
    let (mut c, task) = connect(&proxy);
    // Near misses (a prefix, a longer one, the right length) all fail, each after the delay.
    for guess in ["sesam", "sesame1"] {
        let reply = timed_reply(&mut c, format!("AUTH {guess}\r\n").as_bytes()).await;
        assert!(reply.starts_with("-WRONGPASS"), "{reply}");
    }
    // The third failure is answered, then the connection is closed.
    c.write_all(b"AUTH sesamf\r\n").await.expect("write");
    let rest = read_to_close(&mut c, Duration::from_secs(2)).await;
    assert!(rest.starts_with(b"-WRONGPASS"), "{}", rest.escape_ascii());
    task.await.expect("task").expect("clean close");
    assert_eq!(proxy.stats().auth_failures, 3);
    // HELLO … AUTH goes through the same check.
    let (mut c, _task) = connect(&proxy);
    let reply = timed_reply(&mut c, b"HELLO 3 AUTH default nope\r\n").await;
    assert!(reply.starts_with("-WRONGPASS"), "{reply}");
    let reply = exchange(&mut c, b"HELLO 2 AUTH default sesame\r\n").await;
    assert!(reply.starts_with("*14\r\n"), "{reply}");
}

#[tokio::test]
async fn accept_errors_do_not_stop_the_proxy() {
    let proxy = proxy_with(config());
    let (send, streams) = tokio::sync::mpsc::channel(1);
    let listener = FlakyListener {
        failures: 5,
        streams,
    };
    let serving = proxy.clone();
    let server = tokio::spawn(async move { serving.serve(listener).await });
    let (mut client, server_side) = tokio::io::duplex(1 << 16);
    send.send(server_side)
        .await
        .expect("the proxy still accepts");
    assert_eq!(exchange(&mut client, b"PING\r\n").await, "+PONG\r\n");
    assert!(!server.is_finished(), "serve keeps accepting");
    assert_eq!(proxy.stats().accept_errors, 5);
    server.abort();
}

/// A 32 MiB request arriving in 16 KiB pieces: the proxy must not re-read it from the start on
/// every piece (with many short arguments that was quadratic: minutes, not a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_in_small_writes_is_read_in_linear_time() {
    let proxy = proxy_with(config());
    // Many short arguments: an unknown command of 510,000 arguments of 60 bytes.
    let mut request = b"*510001\r\n$3\r\nFOO\r\n".to_vec();
    let arg = vec![b'a'; 60];
    for _ in 0..510_000 {
        request.extend_from_slice(b"$60\r\n");
        request.extend_from_slice(&arg);
        request.extend_from_slice(b"\r\n");
    }
    assert!(request.len() > 32 << 20);
    // One large argument: a 32 MiB SET (the unreachable cluster answers TRYAGAIN).
    let mut set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$33554432\r\n".to_vec();
    set.resize(set.len() + (32 << 20), b'v');
    set.extend_from_slice(b"\r\n");
    for (request, expected) in [(request, "-ERR unknown command 'foo'"), (set, "-TRYAGAIN")] {
        // The pipe holds 16 KiB, so the proxy reads the request in pieces of at most that.
        let (mut c, _task) = connect_with(&proxy, 16 << 10);
        let started = Instant::now();
        let (mut read, mut write) = tokio::io::split(&mut c);
        let writing = async {
            for piece in request.chunks(16 << 10) {
                write.write_all(piece).await.expect("write");
            }
        };
        let mut reply = vec![0u8; 64];
        let reading = read.read(&mut reply);
        let ((), n) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(writing, reading)
        })
        .await
        .expect("the request is read in time");
        let reply = String::from_utf8_lossy(&reply[..n.expect("read")]).into_owned();
        assert!(reply.starts_with(expected), "{reply}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn a_reply_above_the_output_cap_closes_the_connection() {
    let proxy = proxy_with(ProxyConfig {
        output_buffer_max: 64 << 10,
        ..config()
    });
    let (mut c, task) = connect(&proxy);
    let mut echo = b"*2\r\n$4\r\nECHO\r\n$1000\r\n".to_vec();
    echo.extend_from_slice(&[b'x'; 1000]);
    echo.extend_from_slice(b"\r\n");
    let small = exchange(&mut c, &echo).await;
    assert!(small.starts_with("$1000\r\n"), "under the cap: answered");
    let mut big = b"*2\r\n$4\r\nECHO\r\n$100000\r\n".to_vec();
    big.extend_from_slice(&[b'x'; 100_000]);
    big.extend_from_slice(b"\r\n");
    let (mut read, mut write) = tokio::io::split(&mut c);
    let (written, rest) = tokio::join!(write.write_all(&big), async {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), read.read_to_end(&mut rest))
            .await
            .expect("closed")
            .expect("read");
        rest
    });
    written.expect("write");
    assert!(rest.is_empty(), "the reply past the cap is not sent");
    let ended = task.await.expect("task");
    assert!(
        matches!(ended, Err(ConnectionError::OutputLimit { .. })),
        "{ended:?}"
    );
    assert_eq!(proxy.stats().output_limit_closed, 1);
}

/// A client that pipelines requests for ever and never reads: the proxy stops reading once its
/// replies cannot be written (TCP-style backpressure through the pipe), holds a bounded number
/// of bytes meanwhile, and closes the connection once no reply byte has gone out for the stall
/// timeout.
#[tokio::test]
async fn an_endless_pipeline_is_pushed_back_and_bounded() {
    let read_buffer_max = 256 << 10;
    let proxy = proxy_with(ProxyConfig {
        output_stall_timeout: Duration::from_millis(500),
        read_buffer_max,
        ..config()
    });
    let pipe = 64 << 10;
    let (mut c, task) = connect_with(&proxy, pipe);
    let chunk = b"PING\r\n".repeat(1000);
    let mut sent = 0usize;
    let started = Instant::now();
    // Write until a write has been blocked for 200 ms: the proxy stopped reading.
    loop {
        match tokio::time::timeout(Duration::from_millis(200), c.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) => break,
            Err(_) => break,
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the proxy kept reading: {sent} bytes taken without a reply read"
        );
    }
    // What the proxy took: the pipes both ways, its output threshold, and its read buffer.
    let bound = 2 * pipe + OUTPUT_FLUSH_BYTES + read_buffer_max + chunk.len();
    assert!(sent < bound, "sent {sent}, bound {bound}");
    let ended = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("closed after the stall timeout")
        .expect("task");
    assert!(
        matches!(ended, Err(ConnectionError::Stalled(_))),
        "{ended:?}"
    );
    let stats = proxy.stats();
    assert_eq!(stats.slow_reader_closed, 1);
    assert!(
        stats.buffered_bytes_peak < (read_buffer_max + 2 * OUTPUT_FLUSH_BYTES) as u64,
        "{stats:?}"
    );
    assert_eq!(stats.buffered_bytes, 0, "a closed connection holds nothing");
}

#[tokio::test]
async fn a_transaction_queues_at_most_its_bound_then_is_discarded() {
    // MULTI, then one command past the bound: every queued one is answered QUEUED, the one past
    // it refused, and EXEC discards the whole transaction (nothing reaches the cluster).
    let proxy = proxy(None);
    let (mut c, _task) = connect(&proxy);
    let bound = larder_proxy::QUEUED_MAX;
    let mut input = b"MULTI\r\n".to_vec();
    for _ in 0..=bound {
        input.extend_from_slice(b"PING\r\n");
    }
    input.extend_from_slice(b"EXEC\r\n");
    let (mut reader, mut writer) = tokio::io::split(&mut c);
    let write = async move {
        writer.write_all(&input).await.expect("write");
    };
    let read = async move {
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while !replies.ends_with(b"\r\n")
            || !String::from_utf8_lossy(&replies).contains("EXECABORT")
        {
            let n = tokio::time::timeout(Duration::from_secs(20), reader.read(&mut buf))
                .await
                .expect("replies keep coming")
                .expect("read");
            assert!(n > 0, "closed early");
            replies.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(replies).expect("text")
    };
    let ((), replies) = tokio::join!(write, read);
    let lines: Vec<&str> = replies.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "+OK");
    assert_eq!(lines.iter().filter(|l| **l == "+QUEUED").count(), bound);
    assert_eq!(
        lines[bound + 1],
        format!("-ERR a transaction holds at most {bound} commands")
    );
    assert_eq!(
        lines[bound + 2],
        "-EXECABORT Transaction discarded because of previous errors."
    );
}

/// Redis 7.0.15's commands that the proxy does not answer: each must say so, and `COMMAND`
/// must not list it.
const NOT_ANSWERED: &str = "acl bgrewriteaof bgsave bitfield bitfield_ro debug eval eval_ro \
    evalsha evalsha_ro failover fcall fcall_ro geoadd geodist geohash geopos georadius \
    georadius_ro georadiusbymember georadiusbymember_ro geosearch geosearchstore lastsave \
    latency lolwut migrate module move pfadd pfcount pfdebug pfmerge pfselftest \
    psubscribe psync publish pubsub punsubscribe replconf replicaof reset role \
    save shutdown slaveof slowlog spublish ssubscribe subscribe sunsubscribe swapdb sync \
    unsubscribe wait xack xadd xautoclaim xclaim xdel xgroup xinfo xlen xpending xrange xread \
    xreadgroup xrevrange xsetid xtrim";

fn resp(args: &[String]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// The reply to `input`: what comes before the reply to an `ECHO` sent after it (or all there
/// is when the connection closes), without waiting for the stream to go quiet.
async fn answered(stream: &mut DuplexStream, input: &[u8]) -> String {
    const MARK: &str = "$11\r\nend-of-test\r\n";
    stream.write_all(input).await.expect("write");
    stream
        .write_all(b"ECHO end-of-test\r\n")
        .await
        .expect("write");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        match read.expect("a reply within 5 s") {
            Ok(0) | Err(_) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
        if reply.ends_with(MARK.as_bytes()) {
            reply.truncate(reply.len() - MARK.len());
            break;
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// `args` with arguments added (`x`) or none, so that the arity is wrong where it can be: the
/// answer is then an arity error rather than the command's work (a real `FLUSHALL`, `QUIT`).
fn wrong_arity(mut args: Vec<String>, arity: i64) -> Vec<String> {
    let want = if arity > 0 {
        arity + 1
    } else {
        (-arity - 1).max(args.len() as i64)
    };
    while (args.len() as i64) < want {
        args.push("x".into());
    }
    args
}

#[tokio::test]
async fn every_command_command_lists_is_answered_and_no_redis_command_it_omits_is() {
    use larder_proxy::commands::COMMANDS;
    let proxy = proxy(None);
    for info in COMMANDS {
        let mut requests = vec![wrong_arity(vec![info.name.to_string()], info.arity)];
        for sub in info.subcommands {
            let (container, name) = sub.name.split_once('|').expect("container|sub");
            requests.push(wrong_arity(
                vec![container.to_string(), name.to_string()],
                sub.arity,
            ));
        }
        for args in requests {
            let (mut c, _task) = connect(&proxy);
            let reply = answered(&mut c, &resp(&args)).await;
            assert!(
                !reply.is_empty()
                    && !reply.contains("unknown command")
                    && !reply.contains("unknown subcommand"),
                "{args:?}: {reply}"
            );
        }
    }
    let (mut c, _task) = connect(&proxy);
    for name in NOT_ANSWERED.split_whitespace() {
        assert!(
            COMMANDS.iter().all(|info| info.name != name),
            "{name} listed"
        );
        let reply = answered(&mut c, &resp(&[name.to_string(), "x".into()])).await;
        assert!(reply.starts_with("-ERR unknown command"), "{name}: {reply}");
    }
}

#[tokio::test]
async fn client_reply_off_and_skip_silence_replies_until_on() {
    let proxy = proxy(None);
    let (mut c, _task) = connect(&proxy);
    let reply = exchange(
        &mut c,
        b"CLIENT REPLY OFF\r\nPING a\r\nCLIENT REPLY SKIP\r\nPING b\r\nCLIENT REPLY ON\r\n\
          PING c\r\nCLIENT REPLY SKIP\r\nPING d\r\nPING e\r\nCLIENT REPLY FOO\r\n",
    )
    .await;
    assert_eq!(reply, "+OK\r\n$1\r\nc\r\n$1\r\ne\r\n-ERR syntax error\r\n");
}

#[tokio::test]
async fn client_libraries_connect_time_setinfo_is_taken() {
    let proxy = proxy(None);
    let (mut c, _task) = connect(&proxy);
    answers_all(
        &mut c,
        [
            ("CLIENT SETINFO LIB-NAME redis-py\r\n", "+OK\r\n"),
            ("CLIENT SETINFO lib-ver 5.0.1\r\n", "+OK\r\n"),
            (
                "CLIENT SETINFO LIB-COLOUR red\r\n",
                "-ERR Unrecognized option 'LIB-COLOUR'\r\n",
            ),
            (
                "*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$8\r\nLIB-NAME\r\n$3\r\na b\r\n",
                "-ERR lib-name cannot contain spaces, newlines or special characters.\r\n",
            ),
            ("CLIENT NO-TOUCH on\r\n", "+OK\r\n"),
            ("CLIENT NO-EVICT maybe\r\n", "-ERR syntax error\r\n"),
        ],
    )
    .await;
}

#[tokio::test]
async fn client_list_info_and_kill_see_every_connection_with_its_addresses() {
    let proxy = proxy(None);
    let (mut a, _a_task) = connect_from(&proxy, "127.0.0.1:40001", "127.0.0.1:6380");
    let (mut b, b_task) = connect_from(&proxy, "127.0.0.1:40002", "127.0.0.1:6380");
    exchange(&mut b, b"CLIENT SETNAME bee\r\nMULTI\r\nPING\r\n").await;
    let own = exchange(&mut a, b"CLIENT INFO\r\n").await;
    assert!(
        own.contains("addr=127.0.0.1:40001 laddr=127.0.0.1:6380 fd=-1 name= ")
            && own.contains(" qbuf=13 ")
            && own.contains(" flags=N ")
            && own.contains(" cmd=client|info "),
        "{own}"
    );
    let listed = exchange(&mut a, b"CLIENT LIST\r\n").await;
    let lines: Vec<&str> = listed.lines().filter(|l| l.starts_with("id=")).collect();
    assert_eq!(lines.len(), 2, "{listed}");
    let bee = lines
        .iter()
        .find(|l| l.contains("name=bee"))
        .expect("the named client");
    assert!(
        bee.contains("addr=127.0.0.1:40002")
            && bee.contains(" flags=x ")
            && bee.contains(" multi=1 "),
        "{bee}"
    );
    let id = bee
        .split(' ')
        .find_map(|field| field.strip_prefix("id="))
        .expect("an id");
    assert_eq!(
        exchange(&mut a, format!("CLIENT KILL ID {id}\r\n").as_bytes()).await,
        ":1\r\n"
    );
    // The killed connection ends; the killer's goes on.
    tokio::time::timeout(Duration::from_secs(5), b_task)
        .await
        .expect("the killed connection closes")
        .expect("task")
        .expect("a clean close");
    assert_eq!(exchange(&mut a, b"PING\r\n").await, "+PONG\r\n");
    assert_eq!(
        exchange(&mut a, b"CLIENT KILL 127.0.0.1:40002\r\n").await,
        "-ERR No such client\r\n"
    );
    let listed = exchange(&mut a, b"CLIENT LIST\r\n").await;
    assert_eq!(listed.lines().filter(|l| l.starts_with("id=")).count(), 1);
}

#[tokio::test]
async fn a_cluster_client_learns_one_master_holding_every_slot_where_it_connected() {
    let proxy = proxy(None);
    let (mut c, _task) = connect_from(&proxy, "10.0.0.7:51000", "10.0.0.1:7000");
    let slots = exchange(&mut c, b"CLUSTER SLOTS\r\n").await;
    assert!(
        slots.starts_with("*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$8\r\n10.0.0.1\r\n:7000\r\n$40\r\n"),
        "{slots}"
    );
    let nodes = exchange(&mut c, b"CLUSTER NODES\r\n").await;
    assert!(
        nodes.contains(" 10.0.0.1:7000@0 myself,master - 0 0 "),
        "{nodes}"
    );
    assert!(nodes.contains(" connected 0-16383\n"), "{nodes}");
    assert_eq!(
        exchange(&mut c, b"CLUSTER KEYSLOT foo\r\n").await,
        ":12182\r\n"
    );
    assert_eq!(exchange(&mut c, b"READONLY\r\n").await, "+OK\r\n");
    let info = exchange(&mut c, b"CLIENT INFO\r\n").await;
    assert!(info.contains(" flags=r "), "{info}");
    assert_eq!(exchange(&mut c, b"READWRITE\r\n").await, "+OK\r\n");
    let info = exchange(&mut c, b"INFO cluster\r\n").await;
    assert!(info.contains("cluster_enabled:1"), "{info}");
    assert_eq!(
        exchange(&mut c, b"CLUSTER COUNTKEYSINSLOT 1\r\n").await,
        "-ERR unknown subcommand 'COUNTKEYSINSLOT'. Try CLUSTER HELP.\r\n"
    );
}

#[tokio::test]
async fn monitor_shows_what_ran_in_order_with_secrets_redacted_until_quit() {
    let proxy = proxy(None);
    let (mut monitor, monitor_task) = connect(&proxy);
    assert_eq!(exchange(&mut monitor, b"MONITOR\r\n").await, "+OK\r\n");
    let (mut c, _task) = connect(&proxy);
    exchange(
        &mut c,
        b"PING\r\n*2\r\n$4\r\nECHO\r\n$3\r\na b\r\nNOSUCH x\r\nGET\r\nAUTH secret\r\n\
          CONFIG GET maxclients\r\nMULTI\r\nPING q\r\nECHO r\r\nEXEC\r\nMULTI\r\n\
          NOSUCH\r\nEXEC\r\n",
    )
    .await;
    let shown = exchange(&mut monitor, b"").await;
    // Unknown commands, wrong arities and administrative commands (CONFIG) are not shown;
    // a transaction's commands come when EXEC runs them, each once, and not when it does not
    // (this proxy has no cluster: its keyed commands would fail the EXEC).
    let commands: Vec<&str> = shown
        .lines()
        .map(|line| {
            assert!(line.starts_with('+') && line.contains(" [0 -] "), "{line}");
            line.split_once(" [0 -] ").expect("a monitor line").1
        })
        .collect();
    assert_eq!(
        commands,
        [
            "\"PING\"",
            "\"ECHO\" \"a b\"",
            "\"AUTH\" \"(redacted)\"",
            "\"MULTI\"",
            "\"PING\" \"q\"",
            "\"ECHO\" \"r\"",
            "\"EXEC\"",
            "\"MULTI\"",
            "\"EXEC\"",
        ]
    );
    // A monitor's own commands are ignored, but for QUIT.
    assert_eq!(
        exchange(&mut monitor, b"GET k\r\nQUIT\r\n").await,
        "+OK\r\n"
    );
    tokio::time::timeout(Duration::from_secs(5), monitor_task)
        .await
        .expect("the monitor closes")
        .expect("task")
        .expect("a clean close");
    // Nobody monitors: pipelines run again.
    exchange(&mut c, b"PING\r\n").await;
}

#[tokio::test]
async fn a_monitor_that_falls_its_backlog_behind_is_disconnected_and_counted() {
    let proxy = proxy(None);
    // A pipe of 256 bytes the test does not read from until the end: however the tasks are
    // scheduled, the monitor cannot take the lines as fast as the other connection makes
    // them (its writer waits on the full pipe, or it is not polled before the backlog fills).
    let (mut monitor, monitor_task) = connect_with(&proxy, 256);
    monitor.write_all(b"MONITOR\r\n").await.expect("write");
    let mut ok = [0u8; 5];
    monitor.read_exact(&mut ok).await.expect("the +OK");
    assert_eq!(&ok, b"+OK\r\n");
    let (mut c, _task) = connect(&proxy);
    let commands = larder_proxy::MONITOR_BACKLOG + 1_000;
    let replies = exchange(&mut c, "PING\r\n".repeat(commands).as_bytes()).await;
    assert_eq!(replies.matches("+PONG").count(), commands);
    // The monitor's next wait for a line (once reading frees its writer, if it is waiting
    // there) finds it fell too far behind, and its connection ends without the backlog:
    // fewer lines than commands arrive.
    let mut shown = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), monitor.read_to_end(&mut shown))
        .await
        .expect("the monitor's connection ends")
        .expect("read");
    tokio::time::timeout(Duration::from_secs(5), monitor_task)
        .await
        .expect("the monitor's task ends")
        .expect("task")
        .expect("a clean close");
    assert_eq!(proxy.stats().monitors_dropped, 1);
    let lines = String::from_utf8_lossy(&shown).lines().count();
    assert!(lines < commands, "{lines} lines of {commands} commands");
    // The proxy goes on serving.
    assert_eq!(exchange(&mut c, b"PING\r\n").await, "+PONG\r\n");
}
