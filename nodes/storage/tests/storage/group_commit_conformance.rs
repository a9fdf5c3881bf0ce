//! `GroupCommitDisk` against the shared disk suite (`larder_core::conformance::disk_suite`) on
//! fjall, and its durability promise across a reopen. (The same over `SimDisk`, with power
//! loss, is in `sim/tests/sim/conformance.rs`: larder-sim depends on this crate, so that test
//! lives there.)

use larder_core::bugs::Bugs;
use larder_core::conformance::disk_suite;
use larder_core::env::{Disk, Space, WriteBatch};
use larder_real::{FjallDisk, FjallOptions};
use larder_storage::raft::group_commit::GroupCommitDisk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_over_fjall_passes_the_disk_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fjall = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("open");
    disk_suite(&GroupCommitDisk::new(fjall, Bugs::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_over_fjall_keeps_concurrent_synced_writes_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let fjall = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("open");
        let disk = GroupCommitDisk::new(fjall, Bugs::default());
        let writes = (0..64u32).map(|i| {
            let disk = disk.clone();
            async move {
                let mut batch = WriteBatch::new();
                batch.put(
                    Space::Log,
                    format!("k{i:03}").into_bytes(),
                    i.to_be_bytes().to_vec(),
                );
                disk.write(batch, true).await.expect("synced write");
            }
        });
        futures::future::join_all(writes).await;
    }
    let fjall = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("reopen");
    for i in 0..64u32 {
        let value = fjall
            .get(Space::Log, format!("k{i:03}").as_bytes())
            .await
            .expect("get");
        assert_eq!(
            value.as_deref(),
            Some(&i.to_be_bytes()[..]),
            "synced write {i}"
        );
    }
}
