//! The proxy's output bounds against a real cluster: one storage node on the real environment
//! (fjall in a temp directory, one slot group with it as the only voter) behind a proxy.
//!
//! A slow reader: a client pipelines `GET`s of a 1 MiB value and reads nothing. Each request
//! is a few bytes and each reply a mebibyte, so a proxy that buffered a whole pipeline's
//! replies before writing would hold hundreds of mebibytes for one client; this proxy writes
//! replies out as they come, holds at most about one reply, and closes the connection once its
//! writes have made no progress for the stall timeout.
//!
//! TLS clients (Redis's `tls-port`) get the same answers as plain ones: a client through
//! [`Proxy::tls_connection`] with a tokio-rustls client (certificates made by rcgen at run
//! time) and a plain one share the cluster. (The rest of the TLS tests need no cluster and are
//! in `tls.rs`; this one is here so that only one test binary builds a storage node.)

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use larder_client::SharedRouting;
use larder_core::resp::{self, Frame};
use larder_core::routing::RoutingTable;
use larder_proxy::{
    ConnectionError, OUTPUT_FLUSH_BYTES, PIPELINE_RUN_BYTES_MAX, PIPELINE_RUN_MAX, PemFile, Proxy,
    ProxyConfig, ProxyTls, TlsSettings,
};
use larder_real::{AddressBook, FjallDisk, FjallOptions, RealEnv, TcpNet, TokioClock};
use larder_storage::{NodeConfig, StorageNode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::pki;

const NODE: u64 = 1;
const GROUP: u64 = 1;

/// One storage node leading the one slot group every slot maps to.
async fn one_node_cluster(dir: &std::path::Path, book: &AddressBook) -> Arc<StorageNode<RealEnv>> {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let net = TcpNet::bind(NODE, any, book.clone(), larder_real::test_auth(NODE))
        .await
        .expect("bind");
    let disk = FjallDisk::open(dir, &FjallOptions::default()).expect("open disk");
    let env = RealEnv {
        clock: TokioClock::new(),
        net,
        disk,
        seed: NODE,
    };
    let node = StorageNode::start(env, NodeConfig::new(NODE, vec![GROUP]))
        .await
        .expect("start");
    let serving = node.clone();
    tokio::spawn(async move { serving.serve().await });
    node.initialize(GROUP, &BTreeSet::from([NODE]))
        .await
        .expect("initialize");
    for _ in 0..500 {
        if node.is_leader(GROUP) {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the single voter never led its group");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_of_large_values_is_bounded_and_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let book = AddressBook::new();
    let node = one_node_cluster(dir.path(), &book).await;
    let output_buffer_max = 4 << 20;
    let stall = Duration::from_millis(500);
    let proxy = Proxy::new(
        TcpNet::client(1000, book, larder_real::test_auth(1000)),
        TokioClock::new(),
        ProxyConfig {
            output_stall_timeout: stall,
            output_buffer_max,
            ..ProxyConfig::default()
        },
        SharedRouting::new(RoutingTable::even(1, |_| vec![NODE])),
    );
    let (mut client, server) = tokio::io::duplex(64 << 10);
    let serving = proxy.clone();
    let task = tokio::spawn(async move { serving.connection(server).await });

    // Store a 1 MiB value through the proxy.
    let value = vec![b'v'; 1 << 20];
    let mut set = b"*3\r\n$3\r\nSET\r\n$5\r\nlarge\r\n$1048576\r\n".to_vec();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    let (mut read, mut write) = tokio::io::split(&mut client);
    // The group may still be settling (TRYAGAIN): retry, as a Redis client does.
    let mut answer = Vec::new();
    for _ in 0..20 {
        let (written, reply) = tokio::join!(write.write_all(&set), async {
            let mut reply = [0u8; 256];
            tokio::time::timeout(Duration::from_secs(10), read.read(&mut reply))
                .await
                .map(|r| r.map(|n| reply[..n].to_vec()))
        });
        written.expect("write");
        answer = reply.expect("in time").expect("read");
        if answer != b"+OK\r\n" && answer.starts_with(b"-TRYAGAIN") {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        break;
    }
    assert_eq!(answer.escape_ascii().to_string(), "+OK\\r\\n");

    // 500 GETs (a 500 MiB pipeline of replies) in one write, and no reply read.
    let gets = b"*2\r\n$3\r\nGET\r\n$5\r\nlarge\r\n".repeat(500);
    let started = Instant::now();
    write
        .write_all(&gets)
        .await
        .expect("the requests fit the pipe");
    let ended = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the connection is closed once writes stall")
        .expect("task");
    let took = started.elapsed();
    assert!(
        matches!(ended, Err(ConnectionError::Stalled(_))),
        "{ended:?}"
    );
    assert!(
        took >= stall,
        "closed after {took:?}, before the stall timeout"
    );
    let stats = proxy.stats();
    assert_eq!(stats.slow_reader_closed, 1);
    // Held at most: the requests, the replies pending below the flush threshold, and one reply.
    let one_reply = value.len() + 16;
    assert!(
        stats.buffered_bytes_peak <= (gets.len() + OUTPUT_FLUSH_BYTES + one_reply) as u64,
        "{stats:?}"
    );
    assert!(
        stats.buffered_bytes_peak < output_buffer_max as u64,
        "{stats:?}"
    );
    assert_eq!(stats.buffered_bytes, 0);
    drop(client);
    node.shutdown().await;
}

/// A proxy over the one-node cluster in `book` and a client connected to it in memory, once
/// the group takes writes: it may still be settling (TRYAGAIN), so this waits for one write,
/// as a Redis client would.
async fn settled_pipeline_client(
    book: AddressBook,
    config: ProxyConfig,
) -> (Arc<Proxy<TcpNet, TokioClock>>, tokio::io::DuplexStream) {
    let proxy = Proxy::new(
        TcpNet::client(1000, book, larder_real::test_auth(1000)),
        TokioClock::new(),
        config,
        SharedRouting::new(RoutingTable::even(1, |_| vec![NODE])),
    );
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let serving = proxy.clone();
    tokio::spawn(async move { serving.connection(server).await });
    for attempt in 0.. {
        match command(&mut client, &["SET", "settled", "1"]).await {
            Frame::Simple(ok) if ok == "OK" => break,
            Frame::Error(text) if text.starts_with("TRYAGAIN") && attempt < 50 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("SET answered {other:?}"),
        }
    }
    (proxy, client)
}

/// Reads `wanted` reply frames, however the proxy's writes split them.
async fn read_frames<S: AsyncRead + Unpin>(client: &mut S, wanted: usize) -> Vec<Frame> {
    let mut buffer = Vec::new();
    let mut frames = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        while let Some((frame, used)) = resp::parse_frame(&buffer).expect("RESP") {
            buffer.drain(..used);
            frames.push(frame);
        }
        if frames.len() >= wanted {
            return frames;
        }
        let n = tokio::time::timeout(Duration::from_secs(20), client.read(&mut chunk))
            .await
            .expect("replies in time")
            .expect("read");
        assert!(n > 0, "the proxy closed the connection");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// A pipeline longer than [`PIPELINE_RUN_MAX`] runs in runs of at most that many commands, and
/// its replies still come back one per request, in order, across the runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_pipeline_runs_in_bounded_runs_and_answers_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let book = AddressBook::new();
    let node = one_node_cluster(dir.path(), &book).await;
    let (proxy, mut client) = settled_pipeline_client(book, ProxyConfig::default()).await;

    let count = 3 * PIPELINE_RUN_MAX + 8;
    let request = |args: &[String]| {
        let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            bytes.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        bytes
    };
    // Every SET of the pipeline in one write: the proxy reads them together, so runs fill up
    // to the bound.
    let sets: Vec<u8> = (0..count)
        .flat_map(|i| request(&["SET".into(), format!("k{i}"), format!("v{i}")]))
        .collect();
    let gets: Vec<u8> = (0..count)
        .flat_map(|i| request(&["GET".into(), format!("k{i}")]))
        .collect();
    client.write_all(&sets).await.expect("write");
    let replies = read_frames(&mut client, count).await;
    assert!(
        replies.iter().all(|r| *r == Frame::Simple("OK".into())),
        "{replies:?}"
    );
    let stats = proxy.stats();
    assert_eq!(
        stats.pipeline_run_commands_peak, PIPELINE_RUN_MAX as u64,
        "{stats:?}"
    );
    assert!(stats.pipeline_runs >= 4, "{stats:?}");

    client.write_all(&gets).await.expect("write");
    let replies = read_frames(&mut client, count).await;
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(
            *reply,
            Frame::Bulk(Some(format!("v{i}").into())),
            "GET k{i}"
        );
    }
    assert_eq!(
        proxy.stats().pipeline_run_commands_peak,
        PIPELINE_RUN_MAX as u64
    );
    drop(client);
    node.shutdown().await;
}

/// Single commands of many connections at once go to the cluster in batches (`coalesce`),
/// and each connection gets its own command's answer: 24 connections, each writing its own
/// key, reading it back and adding to one shared counter, 40 rounds, with one batch in flight
/// so that they overlap. Every read answers the connection's own last value, every `INCRBY`
/// answers a sum no other connection was answered, and the counter ends at the sum of all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_commands_of_many_connections_go_in_batches_and_each_gets_its_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let book = AddressBook::new();
    let node = one_node_cluster(dir.path(), &book).await;
    let config = ProxyConfig {
        coalesce_runners: 1,
        ..ProxyConfig::default()
    };
    let (proxy, first) = settled_pipeline_client(book, config).await;
    const CONNECTIONS: usize = 24;
    const ROUNDS: usize = 40;
    let mut clients = vec![first];
    for _ in 1..CONNECTIONS {
        let (client, server) = tokio::io::duplex(1 << 16);
        let serving = proxy.clone();
        tokio::spawn(async move { serving.connection(server).await });
        clients.push(client);
    }
    let runs = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| async move {
            let mut sums = Vec::new();
            for round in 0..ROUNDS {
                let (key, value) = (format!("c{c}"), format!("{c}-{round}"));
                assert_eq!(
                    command(&mut client, &["SET", &key, &value]).await,
                    Frame::Simple("OK".into())
                );
                assert_eq!(
                    command(&mut client, &["GET", &key]).await,
                    Frame::Bulk(Some(value.into())),
                    "connection {c} round {round}"
                );
                // Each connection adds its own power of two, so every sum says who added.
                let by = (1u64 << c).to_string();
                match command(&mut client, &["INCRBY", "counter", &by]).await {
                    Frame::Integer(sum) => sums.push(sum),
                    other => panic!("INCRBY answered {other:?}"),
                }
            }
            (client, sums)
        });
    let results = futures::future::join_all(runs).await;
    let mut sums: Vec<i64> = results.iter().flat_map(|(_, sums)| sums.clone()).collect();
    sums.sort_unstable();
    let all = sums.len();
    sums.dedup();
    assert_eq!(sums.len(), all, "two INCRBYs were answered the same sum");
    let total = ((1i64 << CONNECTIONS) - 1) * ROUNDS as i64;
    assert_eq!(sums.last(), Some(&total));
    let mut first = results.into_iter().next().expect("a connection").0;
    assert_eq!(
        command(&mut first, &["GET", "counter"]).await,
        Frame::Bulk(Some(total.to_string().into()))
    );
    let stats = proxy.stats();
    assert!(
        stats.coalesced_batches > 0 && stats.coalesced_commands >= 2 * stats.coalesced_batches,
        "{stats:?}"
    );
    drop(first);
    node.shutdown().await;
}

/// A read of a key whose last read answered a large reply runs alone, not in a coalesced batch
/// (where the other reads of its group would wait for it), until a read of it answers small
/// again; other reads stay coalesced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_key_that_answered_large_run_alone_until_it_answers_small() {
    let dir = tempfile::tempdir().expect("temp dir");
    let book = AddressBook::new();
    let node = one_node_cluster(dir.path(), &book).await;
    let config = ProxyConfig {
        coalesce_runners: 1,
        costly_read_bytes: 1024,
        ..ProxyConfig::default()
    };
    let (proxy, mut client) = settled_pipeline_client(book, config).await;
    let elements: Vec<String> = (0..100).map(|i| format!("element-{i:04}")).collect();
    let mut push = vec!["RPUSH", "list"];
    push.extend(elements.iter().map(String::as_str));
    assert_eq!(command(&mut client, &push).await, Frame::Integer(100));
    let whole = || {
        Frame::Array(Some(
            elements
                .iter()
                .map(|e| Frame::Bulk(Some(e.clone().into())))
                .collect(),
        ))
    };
    // The first read finds out; the next two run alone.
    for read in 0..3 {
        assert_eq!(
            command(&mut client, &["LRANGE", "list", "0", "-1"]).await,
            whole(),
            "read {read}"
        );
    }
    assert_eq!(proxy.stats().costly_reads_alone, 2);
    // A small read of another key is not held back.
    assert_eq!(
        command(&mut client, &["GET", "other"]).await,
        Frame::Bulk(None)
    );
    assert_eq!(proxy.stats().costly_reads_alone, 2);
    // Once the list is small, a read of it (alone, as it was costly) makes it cheap again.
    assert_eq!(
        command(&mut client, &["LTRIM", "list", "0", "1"]).await,
        Frame::Simple("OK".into())
    );
    for _ in 0..2 {
        assert_eq!(
            command(&mut client, &["LRANGE", "list", "0", "-1"]).await,
            Frame::Array(Some(
                elements[..2]
                    .iter()
                    .map(|e| Frame::Bulk(Some(e.clone().into())))
                    .collect()
            ))
        );
    }
    assert_eq!(proxy.stats().costly_reads_alone, 3);
    drop(client);
    node.shutdown().await;
}

/// A pipeline of large writes runs in runs of at most [`PIPELINE_RUN_BYTES_MAX`] request bytes
/// (so a group's share of a run stays one message and one log entry), not of
/// [`PIPELINE_RUN_MAX`] commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_of_large_values_runs_in_runs_bounded_by_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let book = AddressBook::new();
    let node = one_node_cluster(dir.path(), &book).await;
    // Room for the whole pipeline in the connection's input while the BLPOP below blocks.
    let config = ProxyConfig {
        read_buffer_max: 8 << 20,
        ..ProxyConfig::default()
    };
    let (proxy, mut client) = settled_pipeline_client(book, config).await;

    // A BLPOP that times out goes first: while it blocks, the proxy reads every SET behind it,
    // so the runs are cut by the bound and not by what one read happened to bring.
    let value_bytes = 300_000;
    let count = 10;
    let blpop = b"*3\r\n$5\r\nBLPOP\r\n$5\r\nempty\r\n$1\r\n1\r\n";
    let mut pipeline = blpop.to_vec();
    for i in 0..count {
        let key = format!("big{i}");
        let value = vec![b'a' + i as u8; value_bytes];
        pipeline.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${value_bytes}\r\n",
                key.len()
            )
            .as_bytes(),
        );
        pipeline.extend_from_slice(&value);
        pipeline.extend_from_slice(b"\r\n");
    }
    let request_bytes = (pipeline.len() - blpop.len()) / count;
    let writing = tokio::spawn(async move {
        client.write_all(&pipeline).await.expect("write");
        client
    });
    let mut client = writing.await.expect("writer");
    let frames = read_frames(&mut client, count + 1).await;
    assert!(
        matches!(frames[0], Frame::Array(None) | Frame::Null),
        "BLPOP answered {:?}",
        frames[0]
    );
    assert!(
        frames[1..].iter().all(|r| *r == Frame::Simple("OK".into())),
        "{frames:?}"
    );
    let stats = proxy.stats();
    let per_run = PIPELINE_RUN_BYTES_MAX / request_bytes;
    assert_eq!(per_run, 3, "the test's sizes assume three SETs per run");
    assert_eq!(
        stats.pipeline_run_commands_peak, per_run as u64,
        "{stats:?}"
    );
    assert!(
        stats.pipeline_run_bytes_peak <= PIPELINE_RUN_BYTES_MAX as u64
            && stats.pipeline_run_bytes_peak > (PIPELINE_RUN_BYTES_MAX - request_bytes) as u64,
        "{stats:?}"
    );
    // Every value arrived whole.
    for i in [0, count - 1] {
        match command(&mut client, &["STRLEN", &format!("big{i}")]).await {
            Frame::Integer(n) => assert_eq!(n, value_bytes as i64, "STRLEN big{i}"),
            other => panic!("STRLEN answered {other:?}"),
        }
    }
    drop(client);
    node.shutdown().await;
}

/// Sends `args` as one RESP request and reads one reply frame (flushing: a TLS stream may hold
/// written bytes in its session until then).
async fn command<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, args: &[&str]) -> Frame {
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    stream.write_all(&request).await.expect("write");
    stream.flush().await.expect("flush");
    read_frames(stream, 1).await.swap_remove(0)
}

/// The per-write handover bound (`ProxyConfig::handovers_per_write_max`): eight clients blocked
/// in `BLPOP l`, one `RPUSH` of eight elements, a bound of two. The writer hands over to two
/// and replies; the proxy counts the write as cut short; the other six are served by their own
/// polls; every element reaches exactly one client and nothing is left in the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_hands_over_to_at_most_its_bound_and_the_rest_are_served_by_their_polls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let book = AddressBook::new();
    let node = one_node_cluster(dir.path(), &book).await;
    let (proxy, mut writer) = settled_pipeline_client(
        book,
        ProxyConfig {
            handovers_per_write_max: 2,
            ..ProxyConfig::default()
        },
    )
    .await;
    let blocked_max = 8;
    let mut blocked = Vec::new();
    for _ in 0..blocked_max {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let serving = proxy.clone();
        tokio::spawn(async move { serving.connection(server).await });
        client
            .write_all(b"*3\r\n$5\r\nBLPOP\r\n$1\r\nl\r\n$1\r\n0\r\n")
            .await
            .expect("write");
        blocked.push(client);
    }
    // Every client blocked, as `INFO clients` counts them (a client is counted as it joins the
    // key's queue), before the write.
    let wanted = format!("blocked_clients:{blocked_max}");
    for attempt in 0.. {
        match command(&mut writer, &["INFO", "clients"]).await {
            Frame::Bulk(Some(text)) if String::from_utf8_lossy(&text).contains(&wanted) => break,
            other => assert!(attempt < 500, "the clients never all blocked: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elements: Vec<String> = (0..blocked_max).map(|i| format!("e{i}")).collect();
    let mut push = vec!["RPUSH", "l"];
    push.extend(elements.iter().map(String::as_str));
    assert_eq!(
        command(&mut writer, &push).await,
        Frame::Integer(blocked_max as i64)
    );
    assert_eq!(proxy.stats().handovers_cut_short, 1, "{:?}", proxy.stats());
    let mut served = Vec::new();
    for client in &mut blocked {
        match read_frames(client, 1).await.swap_remove(0) {
            Frame::Array(Some(parts)) => match parts.as_slice() {
                [Frame::Bulk(Some(key)), Frame::Bulk(Some(element))] if key.as_ref() == b"l" => {
                    served.push(String::from_utf8(element.to_vec()).expect("utf8"));
                }
                other => panic!("BLPOP answered {other:?}"),
            },
            other => panic!("BLPOP answered {other:?}"),
        }
    }
    served.sort();
    assert_eq!(served, elements, "each element to exactly one client");
    assert_eq!(
        command(&mut writer, &["LLEN", "l"]).await,
        Frame::Integer(0)
    );
    drop(blocked);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_plain_clients_get_the_same_answers() {
    let pki = pki::Pki::new();
    let pem = |path: &std::path::Path| PemFile {
        path: path.to_path_buf(),
        contents: std::fs::read(path).expect("read PEM"),
    };
    let tls = ProxyTls::new(&TlsSettings {
        cert_file: pem(&pki.server_cert),
        key_file: pem(&pki.server_key),
        ca_cert_file: None,
        auth_clients: None,
    })
    .expect("TLS settings");
    let dir = tempfile::tempdir().expect("temp dir");
    let book = AddressBook::new();
    let node = one_node_cluster(dir.path(), &book).await;
    let proxy = Proxy::new(
        TcpNet::client(1000, book, larder_real::test_auth(1000)),
        TokioClock::new(),
        ProxyConfig::default(),
        SharedRouting::new(RoutingTable::even(1, |_| vec![NODE])),
    );

    let (client_side, server_side) = tokio::io::duplex(64 << 10);
    let serving = proxy.clone();
    let task = tokio::spawn(async move { serving.tls_connection(server_side, &tls).await });
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&pki.ca).expect("CA"))
        .expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(
            ServerName::try_from("localhost").expect("name"),
            client_side,
        )
        .await
        .expect("TLS handshake");

    assert_eq!(
        command(&mut tls, &["PING"]).await,
        Frame::Simple("PONG".into())
    );
    // The group may still be settling (TRYAGAIN): retry, as a Redis client does.
    let mut set = Frame::Null;
    for _ in 0..20 {
        set = command(&mut tls, &["SET", "over-tls", "yes"]).await;
        match &set {
            Frame::Error(text) if text.starts_with("TRYAGAIN") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => break,
        }
    }
    assert_eq!(set, Frame::Simple("OK".into()));
    let yes = Frame::Bulk(Some("yes".into()));
    assert_eq!(command(&mut tls, &["GET", "over-tls"]).await, yes);
    // A plain client of the same proxy reads what the TLS one wrote.
    let (mut plain, server_side) = tokio::io::duplex(64 << 10);
    let serving = proxy.clone();
    tokio::spawn(async move { serving.connection(server_side).await });
    assert_eq!(command(&mut plain, &["GET", "over-tls"]).await, yes);
    assert_eq!(
        command(&mut plain, &["SET", "over-plain", "too"]).await,
        Frame::Simple("OK".into())
    );
    assert_eq!(
        command(&mut tls, &["GET", "over-plain"]).await,
        Frame::Bulk(Some("too".into()))
    );
    assert_eq!(
        command(&mut tls, &["QUIT"]).await,
        Frame::Simple("OK".into())
    );
    task.await.expect("task").expect("a clean end");
    drop(plain);
    node.shutdown().await;
}
