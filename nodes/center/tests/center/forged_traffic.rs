//! Forged internal traffic against real processes on loopback (issue 11's adversarial tests):
//!
//! - an outsider without the cluster secret cannot connect (both sides of the handshake
//!   refuse), nor can a raw TCP client speaking an old or made-up protocol;
//! - a caller that dials node 2 at node 1's address (a reused address) is refused;
//! - an insider (it holds the secret) cannot send client commands to the center's group,
//!   admin requests unless it is a center, Raft messages as another node, or heartbeats for
//!   another node;
//!
//! and each refusal is counted where an operator (and this test) can see it. Also: a node
//! configured to heartbeat slower than its center follows the center's interval, rather than
//! being judged dead between its beats. And snapshot chunks out of order, or a whole snapshot
//! that does not decode, never reach openraft.

// A test on the real environment: real time for its waits.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use larder_center::{CENTER_GROUP, Center, CenterConfig};
use larder_core::NodeId;
use larder_core::env::{Net, NetError};
use larder_core::kv::{Command, Reply};
use larder_protocol::{
    AddGroup, AdminResponse, CallError, CenterResponse, ClientRequest, ClientResponse, Encoded,
    GetStatus, Heartbeat, RaftCall, call,
};
use larder_real::{AddressBook, ClusterAuth, ClusterKey, FjallDisk, FjallOptions, RealEnv};
use larder_real::{TcpNet, TokioClock};
use larder_storage::raft::wire::{self, ChunkAnswer, RaftPayload, SnapshotChunk};
use larder_storage::raft::{SnapshotMeta, TypeConfig, Vote};
use larder_storage::{NodeConfig, StorageNode};
use openraft::raft::VoteRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CENTER: NodeId = 101;
const NODE: NodeId = 1;
const GROUP: u64 = 1;
const INSIDER: NodeId = 999;
const LIMIT: Duration = Duration::from_secs(5);

async fn open_env(id: NodeId, dir: &std::path::Path, book: &AddressBook) -> RealEnv {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let net = TcpNet::bind(id, any, book.clone(), larder_real::test_auth(id))
        .await
        .expect("bind");
    RealEnv {
        clock: TokioClock::new(),
        net,
        disk: FjallDisk::open(dir, &FjallOptions::default()).expect("disk"),
        seed: id,
    }
}

/// A storage node (its centers: [`CENTER`], which is not running) with group 1 formed, it the
/// only voter.
async fn start_node(dir: &std::path::Path, book: &AddressBook) -> Arc<StorageNode<RealEnv>> {
    let env = open_env(NODE, dir, book).await;
    let config = NodeConfig {
        centers: vec![CENTER],
        ..NodeConfig::new(NODE, vec![GROUP])
    };
    let node = StorageNode::start(env, config).await.expect("start");
    let serving = node.clone();
    tokio::spawn(async move { serving.serve().await });
    node.initialize(GROUP, &BTreeSet::from([NODE]))
        .await
        .expect("initialize");
    for _ in 0..250 {
        if node.is_leader(GROUP) {
            return node;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("node {NODE} never led group {GROUP}");
}

fn command(words: &[&str]) -> Command {
    let args: Vec<bytes::Bytes> = words
        .iter()
        .map(|w| bytes::Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    Command::parse(&args).expect("command")
}

/// A client command for `group`, as a client with no session and no routing table sends it.
fn client_request(group: u64, words: &[&str]) -> Encoded<ClientRequest> {
    Encoded::new(ClientRequest {
        group,
        command: command(words),
        session: None,
        epoch: 0,
    })
}

fn vote_request(candidate: NodeId) -> larder_protocol::RaftRequest {
    let vote = VoteRequest::<TypeConfig> {
        vote: Vote::new(1_000, candidate),
        last_log_id: None,
        leadership_transfer: false,
    };
    wire::request(GROUP, RaftCall::Vote, &vote)
}

async fn raft_call(
    net: &TcpNet,
    request: larder_protocol::RaftRequest,
) -> <VoteRequest<TypeConfig> as RaftPayload>::Response {
    let answer = call(net, NODE, &Encoded::new(request), LIMIT)
        .await
        .expect("raft call");
    wire::response::<VoteRequest<TypeConfig>>(&answer).expect("decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_connections_and_requests_are_refused_and_counted() {
    let dir = tempfile::tempdir().expect("dir");
    let book = AddressBook::new();
    let node = start_node(dir.path(), &book).await;
    let stats = node.env().net.stats();
    let address = book.get(NODE).expect("node address");

    // An outsider with another secret: refused before any request is sent (`Unreachable`,
    // so a client may retry elsewhere), and counted by the node.
    let outsider_key = ClusterKey::from_secret(b"not the cluster's secret at all").expect("key");
    let outsider = TcpNet::client(INSIDER, book.clone(), ClusterAuth::new(outsider_key, 7));
    let request = client_request(GROUP, &["GET", "k"]);
    let error = call(&outsider, NODE, &request, LIMIT)
        .await
        .expect_err("outsider");
    assert!(
        matches!(&error, CallError::Net(NetError::Unreachable { reason, .. }) if reason.contains("cluster secret")),
        "{error}"
    );

    // Raw TCP: a made-up protocol that then closes its side (refused at once), and a frame
    // of the protocol sent without a handshake, then silence (closed at the handshake
    // deadline, 5 s).
    for (bytes, close) in [
        (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], true),
        (
            &[
                0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4,
            ][..],
            false,
        ),
    ] {
        let mut raw = tokio::net::TcpStream::connect(address).await.expect("raw");
        raw.write_all(bytes).await.expect("write");
        if close {
            raw.shutdown().await.expect("shutdown");
        }
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(8), raw.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok(),
            "the node closes a connection that is no Larder handshake"
        );
        assert!(answer.len() <= 5, "at most a refusal: {answer:?}");
    }

    // A reused address: node 2 booked at node 1's address.
    book.insert(2, address);
    let insider = TcpNet::client(INSIDER, book.clone(), larder_real::test_auth(INSIDER));
    let error = insider
        .call(2, request.bytes().clone(), LIMIT)
        .await
        .expect_err("wrong destination");
    assert!(error.to_string().contains("another node"), "{error}");
    assert_eq!(
        stats.handshakes_refused.load(Ordering::Relaxed),
        4,
        "outsider, two raw connections, wrong destination"
    );

    // The insider's requests: each refused for who sent it.
    let to_center_group = client_request(
        CENTER_GROUP,
        &["SET", "routing/18446744073709551615", "wedged"],
    );
    let answer = call(&insider, NODE, &to_center_group, LIMIT)
        .await
        .expect("answer");
    assert!(
        matches!(&answer, ClientResponse::Reply(Reply::Error(e)) if e.contains("center's group")),
        "{answer:?}"
    );
    let add = Encoded::new(AddGroup {
        group: 7,
        initialize: Some(vec![INSIDER]),
    });
    let answer = call(&insider, NODE, &add, LIMIT).await.expect("answer");
    assert!(matches!(answer, AdminResponse::Failed { .. }), "{answer:?}");
    assert!(!node.hosts(7), "no rival group was formed on the node");
    // A vote request as node 1 from node 999: refused as a stopped Raft.
    let answer = raft_call(&insider, vote_request(NODE)).await;
    assert!(answer.is_err(), "refused as a stopped raft: {answer:?}");
    assert!(node.is_leader(GROUP), "the forged vote moved nothing");
    let refused = node.refused();
    assert_eq!(refused.center_group.load(Ordering::Relaxed), 1);
    assert_eq!(refused.admin.load(Ordering::Relaxed), 1);
    assert_eq!(refused.raft.load(Ordering::Relaxed), 1);
    // The same insider's ordinary client command is served.
    let answer = call(&insider, NODE, &request, LIMIT).await.expect("answer");
    assert_eq!(answer, ClientResponse::Reply(Reply::Nil));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_for_another_node_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let book = AddressBook::new();
    let env = open_env(CENTER, dir.path(), &book).await;
    let config = CenterConfig::new(vec![CENTER], 1);
    let center = Center::start(env, NodeConfig::new(CENTER, vec![]), config)
        .await
        .expect("center");
    let serving = center.clone();
    tokio::spawn(async move { serving.serve().await });
    center.initialize().await.expect("initialize");
    let insider = TcpNet::client(INSIDER, book.clone(), larder_real::test_auth(INSIDER));
    let beat = |node: NodeId| {
        Encoded::new(Heartbeat {
            node,
            address: "127.0.0.1:1".into(),
            known_epoch: 0,
            groups: vec![],
            hot: Default::default(),
        })
    };
    let answer = call(&insider, CENTER, &beat(NODE), LIMIT)
        .await
        .expect("answer");
    assert!(
        matches!(&answer, CenterResponse::Unavailable { reason } if reason.contains("for node 1")),
        "{answer:?}"
    );
    assert_eq!(
        center.node().refused().heartbeats.load(Ordering::Relaxed),
        1
    );
    // A registry record that does not decode (another version's, or damaged), written before
    // the insider registers: the center skips it and goes on registering the nodes it hears.
    for _ in 0..250 {
        if center.is_leader() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let garbage = command(&["SET", "node/00000000000000000042", "not a record"]);
    let answer = center.node().execute(CENTER_GROUP, garbage, None).await;
    assert_eq!(answer, ClientResponse::Reply(Reply::Ok));
    // Its own heartbeat is taken, and it is registered.
    let mut registered = false;
    for _ in 0..100 {
        let _ = call(&insider, CENTER, &beat(INSIDER), LIMIT).await;
        let status = call(&insider, CENTER, &Encoded::new(GetStatus), LIMIT).await;
        if let Ok(CenterResponse::Ok(status)) = status
            && status
                .nodes
                .iter()
                .any(|n| n.id == INSIDER && n.state.is_some())
        {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(registered, "the control loop goes on past a bad record");
    center.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_follows_the_centers_heartbeat_interval() {
    let (center_dir, node_dir) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let book = AddressBook::new();
    let env = open_env(CENTER, center_dir.path(), &book).await;
    // Down after 5 missed 200 ms heartbeats: 1 s.
    let config = CenterConfig {
        heartbeat_ms: 200,
        missed_heartbeats_max: 5,
        ..CenterConfig::new(vec![CENTER], 1)
    };
    let center = Center::start(env, NodeConfig::new(CENTER, vec![]), config)
        .await
        .expect("center");
    let serving = center.clone();
    tokio::spawn(async move { serving.serve().await });
    center.initialize().await.expect("initialize");
    // The node is configured to beat every 3 s: three failure timeouts between beats.
    let env = open_env(NODE, node_dir.path(), &book).await;
    let address = env.net.listen_address().expect("bound").to_string();
    let node_config = NodeConfig {
        centers: vec![CENTER],
        center_heartbeat_ms: 3_000,
        address,
        ..NodeConfig::new(NODE, vec![])
    };
    let node = StorageNode::start(env, node_config).await.expect("node");
    let serving = node.clone();
    tokio::spawn(async move { serving.serve().await });
    let observer = TcpNet::client(INSIDER, book.clone(), larder_real::test_auth(INSIDER));
    let liveness = async || match call(&observer, CENTER, &Encoded::new(GetStatus), LIMIT).await {
        Ok(CenterResponse::Ok(status)) => status
            .nodes
            .iter()
            .find(|n| n.id == NODE)
            .map(|n| n.liveness),
        _ => None,
    };
    // Heard once (the first beat goes out at start)...
    let mut heard = false;
    for _ in 0..100 {
        if liveness().await == Some(larder_protocol::Liveness::Up) {
            heard = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(heard, "the node's first heartbeat is heard");
    // ...and never judged down afterwards: it beats at the center's interval.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            liveness().await,
            Some(larder_protocol::Liveness::Up),
            "a node beating at the center's interval stays up"
        );
    }
    node.shutdown().await;
    center.shutdown().await;
}

/// Sends one snapshot chunk as `INSIDER` (the vote names it, so the sender check passes) and
/// returns the node's answer.
async fn send_chunk(
    net: &TcpNet,
    offset: u64,
    total: u64,
    data: &[u8],
) -> <SnapshotChunk as RaftPayload>::Response {
    let chunk = SnapshotChunk {
        vote: Vote::new(1_000, INSIDER),
        meta: SnapshotMeta::default(),
        offset,
        total,
        data: data.to_vec(),
    };
    let request = wire::request(GROUP, RaftCall::Snapshot, &chunk);
    let answer = call(net, NODE, &Encoded::new(request), LIMIT)
        .await
        .expect("raft call");
    wire::response::<SnapshotChunk>(&answer).expect("decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunks_out_of_order_or_undecodable_never_reach_raft() {
    let dir = tempfile::tempdir().expect("dir");
    let book = AddressBook::new();
    let node = start_node(dir.path(), &book).await;
    let insider = TcpNet::client(INSIDER, book.clone(), larder_real::test_auth(INSIDER));
    let restart = |answer: <SnapshotChunk as RaftPayload>::Response| {
        assert!(matches!(answer, Ok(ChunkAnswer::Restart)), "{answer:?}")
    };
    // A chunk with nothing open before it, and one that leaves a gap.
    restart(send_chunk(&insider, 5, 10, b"abc").await);
    assert!(matches!(
        send_chunk(&insider, 0, 10, b"abcd").await,
        Ok(ChunkAnswer::Continue)
    ));
    restart(send_chunk(&insider, 7, 10, b"hij").await);
    // A chunk past the announced total.
    assert!(matches!(
        send_chunk(&insider, 0, 4, b"ab").await,
        Ok(ChunkAnswer::Continue)
    ));
    restart(send_chunk(&insider, 2, 4, b"cdef").await);
    // A whole snapshot that does not decode: refused before openraft sees it (installed, it
    // would stop the group's Raft when the state machine refused it).
    restart(send_chunk(&insider, 0, 9, b"not snap!").await);

    assert!(node.is_leader(GROUP), "the chunks moved nothing");
    assert_eq!(node.fatal(), None);
    assert!(!node.is_broken(GROUP));
    let answer = call(
        &insider,
        NODE,
        &client_request(GROUP, &["SET", "k", "v"]),
        LIMIT,
    )
    .await
    .expect("a client call");
    assert_eq!(
        answer,
        ClientResponse::Reply(Reply::Ok),
        "the group still serves"
    );
    node.shutdown().await;
}
