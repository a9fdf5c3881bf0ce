//! One slot group of three storage nodes on the real environment (loopback TCP, fjall in temp
//! directories), each node on its own tokio runtime so that stopping the runtime is a process
//! crash: writes and reads through the client SDK, the leader killed and a new one elected,
//! the dead node restarted from its disk and caught up.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder_client::{Client, ClientConfig};
use larder_core::NodeId;
use larder_core::env::Clock;
use larder_core::kv::{Command, Reply};
use larder_real::{AddressBook, FjallDisk, FjallOptions, RealEnv, TcpNet, TokioClock};
use larder_storage::{NodeConfig, StorageNode};

const GROUP: u64 = 1;

struct RunningNode {
    runtime: tokio::runtime::Runtime,
    node: Arc<StorageNode<RealEnv>>,
}

fn start_node(id: NodeId, dir: &Path, address: SocketAddr, book: &AddressBook) -> RunningNode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (dir, book) = (dir.to_path_buf(), book.clone());
    let node = runtime.block_on(async move {
        let net = TcpNet::bind(id, address, book, larder_real::test_auth(id))
            .await
            .expect("bind");
        let disk = FjallDisk::open(&dir, &FjallOptions::default()).expect("open disk");
        let env = RealEnv {
            clock: TokioClock::new(),
            net,
            disk,
            seed: id,
        };
        let node = StorageNode::start(env, NodeConfig::new(id, vec![GROUP]))
            .await
            .expect("start node");
        let serving = node.clone();
        tokio::spawn(async move { serving.serve().await });
        node
    });
    RunningNode { runtime, node }
}

fn bulk(value: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(value.as_bytes()))
}

#[test]
fn three_real_nodes_replicate_fail_over_and_recover() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
    let book = AddressBook::new();
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let mut nodes: Vec<Option<RunningNode>> = (0..3)
        .map(|i| Some(start_node(i as NodeId + 1, &paths[i], any, &book)))
        .collect();
    let addresses: Vec<SocketAddr> = (1..=3).map(|id| book.get(id).expect("bound")).collect();
    let voters: BTreeSet<NodeId> = [1, 2, 3].into();
    {
        let first = nodes[0].as_ref().expect("node 1");
        first
            .runtime
            .block_on(first.node.initialize(GROUP, &voters))
            .expect("initialize");
    }

    let client_runtime = tokio::runtime::Runtime::new().expect("client runtime");
    let mut client = client_runtime.block_on(async {
        Client::new(
            TcpNet::client(100, book.clone(), larder_real::test_auth(100)),
            TokioClock::new(),
            GROUP,
            vec![1, 2, 3],
            ClientConfig::default(),
        )
    });
    client_runtime.block_on(async {
        assert_eq!(
            client.execute(Command::set("a", "1")).await.expect("set"),
            Reply::Ok
        );
        for _ in 0..10 {
            client
                .execute(Command::IncrBy {
                    key: Bytes::from_static(b"c"),
                    delta: 5,
                })
                .await
                .expect("incrby");
        }
        assert_eq!(
            client.execute(Command::get("a")).await.expect("get"),
            bulk("1")
        );
        assert_eq!(
            client.execute(Command::get("c")).await.expect("get"),
            bulk("50")
        );
    });

    // Kill the leader: its runtime stops, its sockets close, its unsynced memory is gone.
    let leader = (0..3)
        .find(|&i| nodes[i].as_ref().is_some_and(|n| n.node.is_leader(GROUP)))
        .expect("a leader after writes");
    let killed = nodes[leader].take().expect("leader node");
    drop(killed.node);
    killed.runtime.shutdown_timeout(Duration::from_secs(5));

    client_runtime.block_on(async {
        // The survivors elect a leader; the client finds it.
        assert_eq!(
            client
                .execute(Command::set("a", "2"))
                .await
                .expect("set after failover"),
            Reply::Ok
        );
        assert_eq!(
            client.execute(Command::get("a")).await.expect("get"),
            bulk("2")
        );
        assert_eq!(
            client.execute(Command::get("c")).await.expect("get"),
            bulk("50")
        );
    });
    assert!(
        nodes.iter().flatten().any(|n| n.node.is_leader(GROUP)),
        "no surviving node leads"
    );

    // Restart the dead node from its disk, on its old address; it must catch up.
    nodes[leader] = Some(start_node(
        leader as NodeId + 1,
        &paths[leader],
        addresses[leader],
        &book,
    ));
    client_runtime.block_on(async {
        assert_eq!(
            client
                .execute(Command::set("b", "after"))
                .await
                .expect("set"),
            Reply::Ok
        );
    });
    let clock = client_runtime.block_on(async { TokioClock::new() });
    let deadline = Duration::from_secs(20);
    loop {
        let digests: Vec<(u64, u64)> = nodes
            .iter()
            .flatten()
            .map(|n| {
                n.runtime
                    .block_on(n.node.state_digest(GROUP))
                    .expect("digest")
            })
            .collect();
        if digests.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(
            clock.now() < deadline,
            "replicas did not converge after restart: {digests:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for running in nodes.into_iter().flatten() {
        running.runtime.block_on(running.node.shutdown());
        drop(running.node);
        running.runtime.shutdown_timeout(Duration::from_secs(5));
    }
    client_runtime.shutdown_timeout(Duration::from_secs(1));
}
