//! One storage node on the real environment (fjall in a temp directory), one group with it as
//! the only voter, restarted by dropping its runtime (a process crash):
//! - a bit flipped at rest: the node never serves it, retires the replica, keeps it retired
//!   across restarts, and hosts the group afresh only once it is dropped;
//! - a data directory written before record checksums is refused with a clear error;
//! - slot ownership set through the log: commands for other slots are refused at apply time
//!   (as a stale epoch), across restarts, and an older ownership never undoes a newer one.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{Disk, Space, WriteBatch};
use larder_core::kv::{Command, Reply};
use larder_protocol::ClientResponse;
use larder_real::{AddressBook, FjallDisk, FjallOptions, RealEnv, TcpNet, TokioClock};
use larder_storage::{NodeConfig, NodeError, StorageNode};

const GROUP: u64 = 1;
const ID: NodeId = 1;

/// A node on its own runtime: dropping the runtime is a process crash.
struct Running {
    runtime: tokio::runtime::Runtime,
    node: Arc<StorageNode<RealEnv>>,
}

fn start(dir: &Path) -> Result<Running, NodeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = dir.to_path_buf();
    let node = runtime.block_on(async move {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let net = TcpNet::bind(ID, any, AddressBook::new())
            .await
            .expect("bind");
        let disk = FjallDisk::open(&dir, &FjallOptions::default()).expect("open disk");
        let env = RealEnv {
            clock: TokioClock::new(),
            net,
            disk,
            seed: ID,
        };
        StorageNode::start(env, NodeConfig::new(ID, vec![GROUP])).await
    })?;
    Ok(Running { runtime, node })
}

impl Running {
    fn execute(&self, command: Command) -> ClientResponse {
        self.runtime
            .block_on(self.node.execute(GROUP, command, None))
    }

    fn wait_leader(&self) {
        for _ in 0..200 {
            if self.node.is_leader(GROUP) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the single voter never led its group");
    }

    fn stop(self) {
        self.runtime.block_on(self.node.shutdown());
        drop(self.node);
        drop(self.runtime);
    }
}

fn state_key(key: &[u8]) -> Vec<u8> {
    let mut out = GROUP.to_be_bytes().to_vec();
    out.extend_from_slice(key);
    out
}

/// Flips one bit of the stored record of client key `key`, below the node (the raw disk).
fn flip_a_bit(dir: &Path, key: &[u8]) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let disk = FjallDisk::open(dir, &FjallOptions::default()).expect("open raw disk");
        let key = state_key(key);
        let stored = disk
            .get(Space::State, &key)
            .await
            .expect("read")
            .expect("the record is on disk");
        let mut flipped = stored.to_vec();
        // A bit inside the value, not the seal: the planted bug would serve this.
        flipped[stored.len() / 2] ^= 0x10;
        let mut batch = WriteBatch::new();
        batch.put(Space::State, key, flipped);
        disk.write(batch, true).await.expect("write");
    });
}

#[test]
fn a_flipped_bit_is_never_served_and_the_replica_stays_retired_until_dropped() {
    let dir = tempfile::tempdir().expect("dir");
    let first = start(dir.path()).expect("start");
    first
        .runtime
        .block_on(first.node.initialize(GROUP, &BTreeSet::from([ID])))
        .expect("initialize");
    first.wait_leader();
    let value = "a value long enough to flip a bit in the middle of";
    assert_eq!(
        first.execute(Command::set("k", value)),
        ClientResponse::Reply(Reply::Ok)
    );
    assert_eq!(
        first.execute(Command::get("k")),
        ClientResponse::Reply(Reply::Bulk(Bytes::from(value)))
    );
    first.stop();

    flip_a_bit(dir.path(), b"k");

    // The group opens (nothing at start reads that record) and serves until the read.
    let second = start(dir.path()).expect("restart");
    second.wait_leader();
    assert!(!second.node.is_broken(GROUP));
    match second.execute(Command::get("k")) {
        ClientResponse::Unavailable { reason } => {
            assert!(reason.contains("checksum"), "{reason}")
        }
        other => panic!("a corrupt record must not be served: {other:?}"),
    }
    assert!(second.node.is_broken(GROUP));
    // The next request retires it: the group is no longer served here.
    assert!(matches!(
        second.execute(Command::get("other")),
        ClientResponse::Unavailable { .. }
    ));
    let status = second
        .node
        .group_statuses()
        .into_iter()
        .find(|s| s.group == GROUP)
        .expect("a broken replica is still reported");
    assert!(
        status
            .broken
            .as_deref()
            .is_some_and(|r| r.contains("checksum")),
        "{status:?}"
    );
    assert!(!status.is_leader && status.membership.is_none());
    assert_eq!(
        second.node.fatal(),
        None,
        "a retired replica is not a fatal error"
    );
    second.stop();

    // The mark is durable: a restart does not open the replica again.
    let third = start(dir.path()).expect("restart after retiring");
    assert!(third.node.is_broken(GROUP));
    assert!(third.node.hosts(GROUP));
    assert!(!third.node.is_leader(GROUP));
    // Not re-created while broken (it may still be a voter of its group)...
    assert_eq!(
        third.runtime.block_on(third.node.add_group(GROUP)).ok(),
        Some(false)
    );
    // ...only dropped, which wipes it with its mark; then it can be hosted afresh.
    assert_eq!(
        third.runtime.block_on(third.node.remove_group(GROUP)).ok(),
        Some(true)
    );
    assert!(!third.node.is_broken(GROUP) && !third.node.hosts(GROUP));
    assert!(
        matches!(
            third.runtime.block_on(third.node.add_group(GROUP)),
            Ok(true)
        ),
        "{:?}",
        third.runtime.block_on(third.node.add_group(GROUP))
    );
    third.stop();
    let fourth = start(dir.path()).expect("restart after re-hosting");
    assert!(fourth.node.hosts(GROUP) && !fourth.node.is_broken(GROUP));
    fourth.stop();
}

#[test]
fn a_data_directory_from_before_record_checksums_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("open");
        let mut batch = WriteBatch::new();
        batch.put(Space::State, state_key(b"k"), b"unsealed".to_vec());
        disk.write(batch, true).await.expect("write");
    });
    drop(runtime);
    match start(dir.path()) {
        Err(NodeError::Format { reason }) => assert!(reason.contains("checksums"), "{reason}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("an unsealed data directory must be refused"),
    }
}

#[test]
fn commands_for_slots_the_group_does_not_own_are_refused_at_apply_time() {
    use larder_core::slots::{Ownership, slot_of};

    let dir = tempfile::tempdir().expect("dir");
    let node = start(dir.path()).expect("start");
    node.runtime
        .block_on(node.node.initialize(GROUP, &BTreeSet::from([ID])))
        .expect("initialize");
    node.wait_leader();
    // Two keys in different slots; the group will own only the first one's.
    let (kept, moved) = ("a", "b");
    let (kept_slot, moved_slot) = (slot_of(kept.as_bytes()), slot_of(moved.as_bytes()));
    assert_ne!(kept_slot, moved_slot);
    for key in [kept, moved] {
        assert_eq!(
            node.execute(Command::set(key, "before")),
            ClientResponse::Reply(Reply::Ok)
        );
    }
    let own = |epoch, slot: u16| Ownership::new(epoch, vec![(slot, slot)]).expect("ranges");
    node.runtime
        .block_on(node.node.set_owned_slots(GROUP, own(5, kept_slot)))
        .expect("set ownership");
    let refused = ClientResponse::StaleEpoch { epoch: 5 };
    assert_eq!(
        node.execute(Command::set(moved, "after")),
        refused,
        "a write"
    );
    assert_eq!(node.execute(Command::get(moved)), refused, "a read");
    assert_eq!(
        node.execute(Command::MGet {
            keys: vec![Bytes::from(kept), Bytes::from(moved)]
        }),
        refused,
        "a multi-key command with one key elsewhere"
    );
    assert_eq!(
        node.execute(Command::get(kept)),
        ClientResponse::Reply(Reply::Bulk(Bytes::from("before")))
    );
    // Whole-group reads leave out what the group no longer owns.
    assert_eq!(
        node.execute(Command::DbSize),
        ClientResponse::Reply(Reply::Int(1))
    );
    // An older ownership (a late or repeated entry) changes nothing.
    node.runtime
        .block_on(node.node.set_owned_slots(GROUP, own(4, moved_slot)))
        .expect("set an older ownership");
    assert_eq!(node.execute(Command::get(moved)), refused);
    node.stop();

    // Applied through the log, so it survives a restart.
    let again = start(dir.path()).expect("restart");
    again.wait_leader();
    assert_eq!(again.execute(Command::set(moved, "after")), refused);
    // A newer one gives the slot back, with the data that never left.
    again
        .runtime
        .block_on(again.node.set_owned_slots(GROUP, own(6, moved_slot)))
        .expect("set a newer ownership");
    assert_eq!(
        again.execute(Command::get(moved)),
        ClientResponse::Reply(Reply::Bulk(Bytes::from("before")))
    );
    assert_eq!(
        again.execute(Command::get(kept)),
        ClientResponse::StaleEpoch { epoch: 6 }
    );
    again.stop();
}
