//! The group supervisor on a real node (fjall under a disk that fails writes on demand, as EIO
//! or a full disk would): a group whose Raft stopped on a failed write is reopened once the
//! disk works again, with every acknowledged write intact; a group whose disk keeps failing
//! is reported broken after its reopens, and the node stays up.

// A test on the real environment: real time for its waits.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{Disk, DiskError, Env, Space, WriteBatch};
use larder_core::kv::{Command, Reply};
use larder_protocol::ClientResponse;
use larder_real::{AddressBook, FjallDisk, FjallOptions, FjallView, TcpNet, TokioClock};
use larder_storage::{NodeConfig, StorageNode};

const ID: NodeId = 1;
const GROUP: u64 = 1;

/// fjall, with writes failing while `failing` is set.
#[derive(Clone)]
struct FailingDisk {
    inner: FjallDisk,
    failing: Arc<AtomicBool>,
}

impl Disk for FailingDisk {
    type View = FjallView;

    fn view(&self) -> FjallView {
        self.inner.view()
    }

    async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), DiskError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(DiskError::Io {
                reason: "injected: no space left on device".into(),
            });
        }
        self.inner.write(batch, sync).await
    }

    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>, DiskError> {
        self.inner.get(space, key).await
    }

    async fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, DiskError> {
        self.inner.scan(space, start, end, limit).await
    }

    async fn scan_keys(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Bytes>, DiskError> {
        self.inner.scan_keys(space, start, end, limit).await
    }

    async fn last(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<(Bytes, Bytes)>, DiskError> {
        self.inner.last(space, start, end).await
    }
}

#[derive(Clone)]
struct TestEnv {
    clock: TokioClock,
    net: TcpNet,
    disk: FailingDisk,
}

impl Env for TestEnv {
    type Clock = TokioClock;
    type Net = TcpNet;
    type Disk = FailingDisk;

    fn clock(&self) -> &TokioClock {
        &self.clock
    }
    fn net(&self) -> &TcpNet {
        &self.net
    }
    fn disk(&self) -> &FailingDisk {
        &self.disk
    }
    fn seed(&self) -> u64 {
        ID
    }
}

fn command(words: &[&str]) -> Command {
    let args: Vec<Bytes> = words
        .iter()
        .map(|w| Bytes::copy_from_slice(w.as_bytes()))
        .collect();
    Command::parse(&args).expect("command")
}

async fn start(
    dir: &std::path::Path,
    reopens_max: u32,
) -> (Arc<StorageNode<TestEnv>>, Arc<AtomicBool>) {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let failing = Arc::new(AtomicBool::new(false));
    let env = TestEnv {
        clock: TokioClock::new(),
        net: TcpNet::bind(ID, any, AddressBook::new(), larder_real::test_auth(ID))
            .await
            .expect("bind"),
        disk: FailingDisk {
            inner: FjallDisk::open(dir, &FjallOptions::default()).expect("disk"),
            failing: failing.clone(),
        },
    };
    let config = NodeConfig {
        reopen_backoff_ms: 100,
        reopens_max,
        ..NodeConfig::new(ID, vec![GROUP])
    };
    let node = StorageNode::start(env, config).await.expect("start");
    node.initialize(GROUP, &BTreeSet::from([ID]))
        .await
        .expect("initialize");
    wait_for("the first leadership", || node.is_leader(GROUP)).await;
    (node, failing)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_stopped_by_a_failed_write_is_reopened_with_its_data() {
    let dir = tempfile::tempdir().expect("dir");
    let (node, failing) = start(dir.path(), 5).await;
    let set = node.execute(GROUP, command(&["SET", "a", "1"]), None).await;
    assert_eq!(set, ClientResponse::Reply(Reply::Ok));

    failing.store(true, Ordering::SeqCst);
    let refused = node.execute(GROUP, command(&["SET", "b", "2"]), None).await;
    assert!(
        !matches!(refused, ClientResponse::Reply(Reply::Ok)),
        "{refused:?}"
    );
    wait_for("the Raft to stop", || !node.stopped_groups().is_empty()).await;

    // The disk works again: the supervisor reopens the group, which elects itself and serves.
    failing.store(false, Ordering::SeqCst);
    wait_for("the reopened group to lead", || {
        node.stopped_groups().is_empty() && node.is_leader(GROUP)
    })
    .await;
    let get = node.execute(GROUP, command(&["GET", "a"]), None).await;
    assert_eq!(get, ClientResponse::Reply(Reply::Bulk(Bytes::from("1"))));
    let set = node.execute(GROUP, command(&["SET", "c", "3"]), None).await;
    assert_eq!(set, ClientResponse::Reply(Reply::Ok));
    assert!(!node.is_broken(GROUP));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_that_keeps_stopping_is_reported_broken_and_the_node_stays_up() {
    let dir = tempfile::tempdir().expect("dir");
    let (node, failing) = start(dir.path(), 2).await;
    failing.store(true, Ordering::SeqCst);
    let _ = node.execute(GROUP, command(&["SET", "b", "2"]), None).await;
    // Each reopen elects (a vote write fails) and stops again; after two, the replica is
    // reported broken: retired, out of the served groups, listed for the center to replace.
    wait_for("the replica to be retired as broken", || {
        node.is_broken(GROUP)
    })
    .await;
    assert!(!node.hosts(GROUP) || node.stopped_groups().is_empty());
    assert_eq!(
        node.fatal(),
        None,
        "a broken replica is not fatal to the node"
    );
    let answer = node.execute(GROUP, command(&["GET", "a"]), None).await;
    assert!(
        matches!(answer, ClientResponse::Unavailable { .. }),
        "a broken replica never serves: {answer:?}"
    );
    node.shutdown().await;
}
