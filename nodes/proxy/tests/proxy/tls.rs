//! Client TLS on the proxy (Redis's `tls-port`), with a CA and certificates made by rcgen at
//! run time, in front of an unreachable cluster (TLS and plain clients of one real cluster are
//! in `bounds.rs`, which builds one already): `INFO` shows both ports and `QUIT` ends
//! with TLS's `close_notify`; a plain client on the TLS port (and a TLS client on the plain
//! port) is refused without harm to the proxy;
//! client certificates are checked as `tls_auth_clients` says; a handshake that does not finish
//! holds its `max_clients` slot only until `tls_handshake_timeout`; `max_clients` counts both
//! listeners; the plain listener's bounds (idle timeout, AUTH, pre-AUTH limits, output limits,
//! accept errors) hold over TLS; and bad TLS settings are refused up front, naming the file at
//! fault.

use crate::pki;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder_client::SharedRouting;
use larder_core::resp::{self, Frame};
use larder_core::routing::RoutingTable;
use larder_proxy::{
    ConnectionError, PemFile, Proxy, ProxyConfig, ProxyStats, ProxyTls, TlsAuthClients, TlsError,
    TlsSettings,
};
use larder_real::{AddressBook, TcpNet, TokioClock, TokioListener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use pki::Pki;

use crate::support::{FlakyListener, config};

type TestProxy = Arc<Proxy<TcpNet, TokioClock>>;

fn pem(path: &Path) -> PemFile {
    PemFile {
        path: path.to_path_buf(),
        contents: std::fs::read(path).expect("read PEM"),
    }
}

/// The proxy's TLS settings; the CA is given whenever `auth_clients` is.
fn settings(pki: &Pki, auth_clients: Option<TlsAuthClients>) -> TlsSettings {
    TlsSettings {
        cert_file: pem(&pki.server_cert),
        key_file: pem(&pki.server_key),
        ca_cert_file: auth_clients.map(|_| pem(&pki.ca)),
        auth_clients,
    }
}

fn load(pki: &Pki, auth_clients: Option<TlsAuthClients>) -> ProxyTls {
    ProxyTls::new(&settings(pki, auth_clients)).expect("TLS settings")
}

/// Which certificate a test client presents.
#[derive(Debug, Clone, Copy)]
enum Identity {
    Anonymous,
    /// Signed by the proxy's CA.
    Trusted,
    /// Signed by a CA the proxy does not know.
    Rogue,
}

/// A client that trusts the test CA and presents `identity`.
fn client_config(pki: &Pki, identity: Identity) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca).expect("CA"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let pair = match identity {
        Identity::Anonymous => None,
        Identity::Trusted => Some((&pki.client_cert, &pki.client_key)),
        Identity::Rogue => Some((&pki.rogue_cert, &pki.rogue_key)),
    };
    let config = match pair {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).expect("client cert")],
                PrivateKeyDer::from_pem_file(key).expect("client key"),
            )
            .expect("client identity"),
    };
    Arc::new(config)
}

fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("server name")
}

async fn tls_connect(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    TlsConnector::from(config).connect(localhost(), tcp).await
}

/// Sends one command (as a RESP array of the space-separated words) and reads its reply.
/// Flushes after writing: a TLS stream may hold written bytes in its session until then.
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    words: &str,
) -> std::io::Result<Frame> {
    let args: Vec<&str> = words.split(' ').collect();
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    stream.write_all(&request).await?;
    stream.flush().await?;
    read_frame(stream).await
}

/// Reads one reply frame without sending anything (a refusal the proxy sends by itself).
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Frame> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some((frame, _))) = resp::parse_frame(&buffer) {
            return Ok(frame);
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("a frame within 5 s")?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the TLS stream ends with the proxy's `close_notify` (a clean end of stream;
/// rustls reports a close without one as `UnexpectedEof`), within `limit`.
async fn ends_with_close_notify<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> bool {
    let mut rest = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut rest)).await {
        Ok(Ok(_)) => true,
        Ok(Err(error)) => panic!("the stream ended without close_notify: {error}"),
        Err(_) => panic!("the stream was still open after {limit:?}"),
    }
}

fn pong() -> Frame {
    Frame::Simple("PONG".into())
}

fn max_clients_error() -> Frame {
    Frame::Error("ERR max number of clients reached".into())
}

/// Waits up to 5 s for the proxy's counters to satisfy `check`.
async fn eventually(proxy: &TestProxy, what: &str, check: impl Fn(&ProxyStats) -> bool) {
    let started = Instant::now();
    while !check(&proxy.stats()) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: {:?}",
            proxy.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A proxy serving a plain and a TLS listener on loopback, both stopped on drop.
struct Served {
    proxy: TestProxy,
    plain: SocketAddr,
    tls: SocketAddr,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The cluster of these tests unless they start one: nodes 1-3 have no address.
fn unreachable() -> (AddressBook, SharedRouting) {
    (
        AddressBook::new(),
        SharedRouting::new(RoutingTable::even(2, |_| vec![1, 2, 3])),
    )
}

async fn serve_both(
    config: ProxyConfig,
    tls: ProxyTls,
    (book, routing): (AddressBook, SharedRouting),
) -> Served {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let plain_listener = TokioListener::bind(any).await.expect("bind plain");
    let tls_listener = TokioListener::bind(any).await.expect("bind TLS");
    let plain = plain_listener.local_addr().expect("plain address");
    let tls_address = tls_listener.local_addr().expect("TLS address");
    let proxy = Proxy::new(
        TcpNet::client(1000, book, larder_real::test_auth(1000)),
        TokioClock::new(),
        ProxyConfig {
            tcp_port: Some(plain.port()),
            tls_port: Some(tls_address.port()),
            ..config
        },
        routing,
    );
    let serving = proxy.clone();
    let plain_task = tokio::spawn(async move { serving.serve(plain_listener).await });
    let serving = proxy.clone();
    let tls_task = tokio::spawn(async move { serving.serve_tls(tls_listener, tls).await });
    Served {
        proxy,
        plain,
        tls: tls_address,
        tasks: vec![plain_task, tls_task],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_shows_both_ports_and_quit_ends_with_close_notify() {
    let pki = Pki::new();
    let served = serve_both(config(), load(&pki, None), unreachable()).await;
    let mut tls = tls_connect(served.tls, client_config(&pki, Identity::Anonymous))
        .await
        .expect("TLS handshake");
    assert_eq!(command(&mut tls, "PING").await.expect("PING"), pong());
    let Frame::Bulk(Some(info)) = command(&mut tls, "INFO").await.expect("INFO") else {
        panic!("INFO is a bulk string");
    };
    let info = String::from_utf8_lossy(&info);
    assert!(
        info.contains(&format!(
            "\r\ntcp_port:{}\r\ntls_port:{}\r\n",
            served.plain.port(),
            served.tls.port()
        )),
        "{info}"
    );
    assert_eq!(
        command(&mut tls, "QUIT").await.expect("QUIT"),
        Frame::Simple("OK".into())
    );
    assert!(ends_with_close_notify(&mut tls, Duration::from_secs(3)).await);
    let stats = served.proxy.stats();
    assert_eq!(
        (stats.tls_handshake_failures, stats.tls_handshake_timeouts),
        (0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_resp_on_the_tls_port_is_refused_and_the_proxy_carries_on() {
    let pki = Pki::new();
    let served = serve_both(
        ProxyConfig {
            // Far beyond the test: a close comes from the failed handshake, not the deadline.
            tls_handshake_timeout: Duration::from_secs(60),
            ..config()
        },
        load(&pki, None),
        unreachable(),
    )
    .await;
    let mut plain = TcpStream::connect(served.tls).await.expect("connect");
    plain
        .write_all(b"*1\r\n$4\r\nPING\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let started = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer))
        .await
        .expect("the proxy closes a client that does not speak TLS");
    // The proxy may answer with a TLS alert record, or reset: either way no RESP reply.
    let _ = read;
    assert!(
        !String::from_utf8_lossy(&answer).contains("PONG"),
        "{answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    eventually(
        &served.proxy,
        "a failed handshake is counted and freed",
        |s| s.tls_handshake_failures == 1 && s.connections == 0,
    )
    .await;

    // A TLS client on the plain port: the proxy answers its ClientHello with a protocol
    // error in plain text, which is no TLS.
    let wrong_port = tls_connect(served.plain, client_config(&pki, Identity::Anonymous)).await;
    assert!(wrong_port.is_err(), "a TLS handshake with the plain port");

    // Both listeners still serve.
    let mut plain = TcpStream::connect(served.plain).await.expect("connect");
    assert_eq!(command(&mut plain, "PING").await.expect("PING"), pong());
    let mut tls = tls_connect(served.tls, client_config(&pki, Identity::Anonymous))
        .await
        .expect("TLS handshake");
    assert_eq!(command(&mut tls, "PING").await.expect("PING"), pong());
    assert!(served.tasks.iter().all(|t| !t.is_finished()));
}

/// Connects with `identity` and sends `PING`: the reply, or the error that ended the try. With
/// TLS 1.3 the client's side of the handshake ends before the proxy checks its certificate,
/// so a refusal may surface at the first read rather than at connect.
async fn ping_as(
    address: SocketAddr,
    pki: &Pki,
    identity: Identity,
) -> Result<Frame, std::io::Error> {
    let mut stream = tls_connect(address, client_config(pki, identity)).await?;
    command(&mut stream, "PING").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_checked_as_tls_auth_clients_says() {
    use Identity::{Anonymous, Rogue, Trusted};
    let pki = Pki::new();
    // Each setting, and whether a client with no certificate, one signed by the CA, and one
    // signed by another CA is served.
    let table = [
        (TlsAuthClients::Yes, [false, true, false]),
        (TlsAuthClients::Optional, [true, true, false]),
        // The CA is given but no certificate is asked for, so none is checked.
        (TlsAuthClients::No, [true, true, true]),
    ];
    for (auth_clients, expected) in table {
        let served = serve_both(config(), load(&pki, Some(auth_clients)), unreachable()).await;
        let mut refused = 0;
        for (identity, served_expected) in [Anonymous, Trusted, Rogue].into_iter().zip(expected) {
            let outcome = ping_as(served.tls, &pki, identity).await;
            if served_expected {
                assert_eq!(
                    outcome.as_ref().ok(),
                    Some(&pong()),
                    "tls_auth_clients {auth_clients}, {identity:?}: {outcome:?}"
                );
            } else {
                assert!(
                    outcome.is_err(),
                    "tls_auth_clients {auth_clients}, {identity:?} must be refused: {outcome:?}"
                );
                refused += 1;
            }
        }
        eventually(&served.proxy, "refusals are handshake failures", |s| {
            s.tls_handshake_failures == refused && s.connections == 0
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_handshake_holds_its_slot_only_until_the_deadline() {
    let pki = Pki::new();
    let deadline = Duration::from_millis(500);
    let served = serve_both(
        ProxyConfig {
            max_clients: 1,
            tls_handshake_timeout: deadline,
            ..config()
        },
        load(&pki, None),
        unreachable(),
    )
    .await;
    let client = client_config(&pki, Identity::Anonymous);

    // A client that opens TCP and says nothing.
    let started = Instant::now();
    let mut silent = TcpStream::connect(served.tls).await.expect("connect");
    eventually(&served.proxy, "a handshaking client holds a slot", |s| {
        s.connections == 1
    })
    .await;
    // Meanwhile the one slot is taken: a TLS client is told so (after its handshake).
    let mut refused = tls_connect(served.tls, client.clone())
        .await
        .expect("a refused client still handshakes");
    assert_eq!(
        read_frame(&mut refused).await.expect("refusal"),
        max_clients_error()
    );
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest))
        .await
        .expect("the silent client is closed");
    let held = started.elapsed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(
        held >= deadline - Duration::from_millis(50) && held < deadline * 6,
        "closed after {held:?}, deadline {deadline:?}"
    );
    eventually(&served.proxy, "the slot is free again", |s| {
        s.tls_handshake_timeouts == 1 && s.connections == 0
    })
    .await;

    // A client that handshakes one byte every 50 ms: the deadline bounds the whole handshake,
    // not the silence between bytes.
    let mut hello = Vec::new();
    rustls::ClientConnection::new(client.clone(), localhost())
        .expect("client connection")
        .write_tls(&mut hello)
        .expect("ClientHello");
    assert!(hello.len() > 100, "the trickle outlasts the deadline");
    let started = Instant::now();
    let (mut read, mut write) = TcpStream::connect(served.tls)
        .await
        .expect("connect")
        .into_split();
    let trickle = tokio::spawn(async move {
        for byte in hello {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut rest))
        .await
        .expect("the trickling client is closed");
    let held = started.elapsed();
    assert!(
        held >= deadline - Duration::from_millis(50) && held < deadline * 6,
        "closed after {held:?}, deadline {deadline:?}"
    );
    trickle.abort();
    eventually(&served.proxy, "the slot is free again", |s| {
        s.tls_handshake_timeouts == 2 && s.connections == 0
    })
    .await;

    let mut tls = tls_connect(served.tls, client)
        .await
        .expect("TLS handshake");
    assert_eq!(command(&mut tls, "PING").await.expect("PING"), pong());
    assert_eq!(served.proxy.stats().rejected_connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_clients_counts_plain_and_tls_connections_together() {
    let pki = Pki::new();
    let served = serve_both(
        ProxyConfig {
            max_clients: 2,
            ..config()
        },
        load(&pki, None),
        unreachable(),
    )
    .await;
    let client = client_config(&pki, Identity::Anonymous);
    let mut plain = TcpStream::connect(served.plain).await.expect("connect");
    assert_eq!(command(&mut plain, "PING").await.expect("PING"), pong());
    let mut tls = tls_connect(served.tls, client.clone())
        .await
        .expect("TLS handshake");
    assert_eq!(command(&mut tls, "PING").await.expect("PING"), pong());
    assert_eq!(served.proxy.stats().connections, 2);

    let mut third_tls = tls_connect(served.tls, client.clone())
        .await
        .expect("TLS handshake");
    assert_eq!(
        read_frame(&mut third_tls).await.expect("refusal"),
        max_clients_error()
    );
    let mut third_plain = TcpStream::connect(served.plain).await.expect("connect");
    assert_eq!(
        read_frame(&mut third_plain).await.expect("refusal"),
        max_clients_error()
    );
    assert_eq!(served.proxy.stats().rejected_connections, 2);

    // A plain client leaving frees a slot for a TLS one.
    drop(plain);
    eventually(&served.proxy, "the plain client's slot is free", |s| {
        s.connections == 1
    })
    .await;
    let mut next = tls_connect(served.tls, client)
        .await
        .expect("TLS handshake");
    assert_eq!(command(&mut next, "PING").await.expect("PING"), pong());
    assert_eq!(command(&mut tls, "PING").await.expect("PING"), pong());
}

type Task = JoinHandle<Result<(), ConnectionError>>;

/// A TLS connection over an in-memory pipe of `capacity` bytes each way, served by
/// [`Proxy::tls_connection`] in a task whose result the test can inspect.
async fn tls_pipe(
    proxy: &TestProxy,
    tls: &ProxyTls,
    client: Arc<rustls::ClientConfig>,
    capacity: usize,
) -> (tokio_rustls::client::TlsStream<DuplexStream>, Task) {
    let (client_side, server_side) = tokio::io::duplex(capacity);
    let (proxy, tls) = (proxy.clone(), tls.clone());
    let task = tokio::spawn(async move { proxy.tls_connection(server_side, &tls).await });
    let stream = TlsConnector::from(client)
        .connect(localhost(), client_side)
        .await
        .expect("TLS handshake");
    (stream, task)
}

fn proxy_with(config: ProxyConfig) -> TestProxy {
    let (book, routing) = unreachable();
    Proxy::new(
        TcpNet::client(1000, book, larder_real::test_auth(1000)),
        TokioClock::new(),
        config,
        routing,
    )
}

#[tokio::test]
async fn an_idle_tls_connection_is_closed() {
    let pki = Pki::new();
    let proxy = proxy_with(ProxyConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..config()
    });
    let tls = load(&pki, None);
    let (mut c, task) = tls_pipe(
        &proxy,
        &tls,
        client_config(&pki, Identity::Anonymous),
        1 << 16,
    )
    .await;
    assert_eq!(command(&mut c, "PING").await.expect("PING"), pong());
    assert!(ends_with_close_notify(&mut c, Duration::from_secs(3)).await);
    task.await
        .expect("task")
        .expect("an idle close is a clean end");
    assert_eq!(proxy.stats().idle_closed, 1);
}

#[tokio::test]
async fn auth_and_pre_auth_limits_hold_over_tls() {
    let pki = Pki::new();
    let proxy = proxy_with(ProxyConfig {
        password: Some("sesame".into()),
        auth_failure_delay: Duration::from_millis(10),
        auth_failures_max: 2,
        ..config()
    });
    let tls = load(&pki, None);
    let client = client_config(&pki, Identity::Anonymous);

    let (mut c, task) = tls_pipe(&proxy, &tls, client.clone(), 1 << 16).await;
    let Frame::Error(noauth) = command(&mut c, "GET k").await.expect("GET") else {
        panic!("GET before AUTH must fail");
    };
    assert!(noauth.starts_with("NOAUTH"), "{noauth}");
    for _ in 0..2 {
        let Frame::Error(wrong) = command(&mut c, "AUTH nope").await.expect("AUTH") else {
            panic!("a wrong password must fail");
        };
        assert!(wrong.starts_with("WRONGPASS"), "{wrong}");
    }
    assert!(ends_with_close_notify(&mut c, Duration::from_secs(3)).await);
    task.await
        .expect("task")
        .expect("closed after the last reply");
    assert_eq!(proxy.stats().auth_failures, 2);

    // Before AUTH, Redis 7's limits: at most 10 arguments.
    let (mut c, task) = tls_pipe(&proxy, &tls, client.clone(), 1 << 16).await;
    let Frame::Error(protocol) = command(&mut c, &["x"; 11].join(" ")).await.expect("reply") else {
        panic!("11 arguments before AUTH must be refused");
    };
    assert!(protocol.starts_with("ERR Protocol error"), "{protocol}");
    assert!(ends_with_close_notify(&mut c, Duration::from_secs(3)).await);
    task.await
        .expect("task")
        .expect("a protocol error ends cleanly");

    let (mut c, _task) = tls_pipe(&proxy, &tls, client, 1 << 16).await;
    assert_eq!(
        command(&mut c, "AUTH sesame").await.expect("AUTH"),
        Frame::Simple("OK".into())
    );
    assert_eq!(command(&mut c, "PING").await.expect("PING"), pong());
}

#[tokio::test]
async fn output_bounds_hold_over_tls() {
    let pki = Pki::new();
    let tls = load(&pki, None);
    let client = client_config(&pki, Identity::Anonymous);

    // A reply past output_buffer_max closes the connection unsent.
    let proxy = proxy_with(ProxyConfig {
        output_buffer_max: 64 << 10,
        ..config()
    });
    let (mut c, task) = tls_pipe(&proxy, &tls, client.clone(), 1 << 16).await;
    let big = "x".repeat(100_000);
    let outcome = command(&mut c, &format!("ECHO {big}")).await;
    assert!(outcome.is_err(), "the reply past the cap is not sent");
    let ended = task.await.expect("task");
    assert!(
        matches!(ended, Err(ConnectionError::OutputLimit { .. })),
        "{ended:?}"
    );
    assert_eq!(proxy.stats().output_limit_closed, 1);

    // A client that pipelines without reading: closed once writes stall.
    let proxy = proxy_with(ProxyConfig {
        output_stall_timeout: Duration::from_millis(300),
        ..config()
    });
    let (c, task) = tls_pipe(&proxy, &tls, client, 16 << 10).await;
    let (_read, mut write) = tokio::io::split(c);
    let echo = format!("ECHO {}\r\n", "y".repeat(10_000)).repeat(10);
    let writer = tokio::spawn(async move {
        // Stops when the proxy stops reading (backpressure) or closes.
        for _ in 0..1000 {
            if write.write_all(echo.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let ended = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("closed after the stall timeout")
        .expect("task");
    assert!(
        matches!(ended, Err(ConnectionError::Stalled(_))),
        "{ended:?}"
    );
    writer.abort();
    assert_eq!(proxy.stats().slow_reader_closed, 1);
    assert_eq!(proxy.stats().buffered_bytes, 0);
}

#[tokio::test]
async fn accept_errors_do_not_stop_the_tls_listener() {
    let pki = Pki::new();
    let proxy = proxy_with(config());
    let (send, streams) = tokio::sync::mpsc::channel(1);
    let listener = FlakyListener {
        failures: 3,
        streams,
    };
    let serving = proxy.clone();
    let tls = load(&pki, None);
    let server = tokio::spawn(async move { serving.serve_tls(listener, tls).await });
    let (client_side, server_side) = tokio::io::duplex(1 << 16);
    send.send(server_side)
        .await
        .expect("the proxy still accepts");
    let mut c = TlsConnector::from(client_config(&pki, Identity::Anonymous))
        .connect(localhost(), client_side)
        .await
        .expect("TLS handshake");
    assert_eq!(command(&mut c, "PING").await.expect("PING"), pong());
    assert!(!server.is_finished(), "serve_tls keeps accepting");
    assert_eq!(proxy.stats().accept_errors, 3);
    server.abort();
}

/// The error of checking `settings`, which must fail.
fn refusal(settings: &TlsSettings) -> TlsError {
    match ProxyTls::new(settings) {
        Ok(tls) => panic!("{settings:?} must be refused, got {tls:?}"),
        Err(error) => error,
    }
}

/// A PEM file of `text` that claims to come from `name`.
fn named(name: &str, text: &str) -> PemFile {
    PemFile {
        path: name.into(),
        contents: text.as_bytes().to_vec(),
    }
}

#[test]
fn tls_settings_are_checked() {
    let pki = Pki::new();
    // The default: `yes` with a CA (as Redis), `no` without one.
    let with_ca = TlsSettings {
        ca_cert_file: Some(pem(&pki.ca)),
        ..settings(&pki, None)
    };
    let checked = ProxyTls::new(&with_ca).expect("with a CA");
    assert_eq!(checked.auth_clients(), TlsAuthClients::Yes);
    let checked = ProxyTls::new(&settings(&pki, None)).expect("without a CA");
    assert_eq!(checked.auth_clients(), TlsAuthClients::No);

    for auth in [TlsAuthClients::Yes, TlsAuthClients::Optional] {
        let error = refusal(&TlsSettings {
            auth_clients: Some(auth),
            ca_cert_file: None,
            ..settings(&pki, None)
        });
        assert!(
            matches!(error, TlsError::AuthClientsWithoutCa(a) if a == auth),
            "{error}"
        );
        assert!(error.to_string().contains("tls_ca_cert_file"), "{error}");
    }

    let text = |path: &Path| std::fs::read_to_string(path).expect("read");
    let cert_pem = text(&pki.server_cert);
    let key_pem = text(&pki.server_key);
    let truncated = named("truncated.pem", &cert_pem[..cert_pem.len() / 2]);
    let not_pem = named("not.pem", "hello\n");
    let key_only = named("key-only.pem", &key_pem);
    let cert_only = named("cert-only.pem", &cert_pem);
    let server = settings(&pki, None);
    // (the settings, the error expected, the file it must name)
    type Case<'a> = (TlsSettings, fn(&TlsError) -> bool, &'a Path);
    let cases: Vec<Case> = vec![
        (
            TlsSettings {
                cert_file: truncated.clone(),
                ..server.clone()
            },
            |e| matches!(e, TlsError::BadPem { .. }),
            &truncated.path,
        ),
        (
            TlsSettings {
                cert_file: not_pem.clone(),
                ..server.clone()
            },
            |e| matches!(e, TlsError::Missing { .. }),
            &not_pem.path,
        ),
        (
            TlsSettings {
                cert_file: key_only.clone(),
                ..server.clone()
            },
            |e| matches!(e, TlsError::Missing { .. }),
            &key_only.path,
        ),
        (
            TlsSettings {
                key_file: cert_only.clone(),
                ..server.clone()
            },
            |e| matches!(e, TlsError::Missing { .. }),
            &cert_only.path,
        ),
        // The client's key with the server's certificate.
        (
            TlsSettings {
                key_file: pem(&pki.client_key),
                ..server.clone()
            },
            |e| matches!(e, TlsError::CertifiedKey { .. }),
            &pki.client_key,
        ),
        (
            TlsSettings {
                ca_cert_file: Some(not_pem.clone()),
                auth_clients: Some(TlsAuthClients::Yes),
                ..server.clone()
            },
            |e| matches!(e, TlsError::Missing { .. }),
            &not_pem.path,
        ),
        (
            TlsSettings {
                ca_cert_file: Some(truncated.clone()),
                auth_clients: Some(TlsAuthClients::Optional),
                ..server.clone()
            },
            |e| matches!(e, TlsError::BadPem { .. }),
            &truncated.path,
        ),
    ];
    for (settings, expected, path) in cases {
        let error = refusal(&settings);
        assert!(expected(&error), "{settings:?}: {error:?}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "the error names {}: {error}",
            path.display()
        );
    }
}
