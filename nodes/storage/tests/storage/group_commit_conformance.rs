//! `GroupCommitDisk` against the shared disk suite (`larder_core::conformance::disk_suite`) on
//! fjall, and its durability promise across a reopen. (The same over `SimDisk`, with power
//! loss, is in `sim/tests/sim/conformance.rs`: larder-sim depends on this crate, so that test
//! lives there.)

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use larder_core::bugs::Bugs;
use larder_core::conformance::disk_suite;
use larder_core::env::{BlockingSyncWriter, Disk, DiskError, Sealed, Space, WriteBatch};
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

/// fjall, recording the thread each blocking synced write ran on.
#[derive(Clone)]
struct ThreadRecording {
    inner: FjallDisk,
    threads: Arc<Mutex<Vec<String>>>,
}

impl Disk for ThreadRecording {
    type View = <FjallDisk as Disk>::View;

    fn view(&self) -> Self::View {
        self.inner.view()
    }

    async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), DiskError> {
        self.inner.write(batch, sync).await
    }

    fn blocking_sync_writer(&self) -> Option<BlockingSyncWriter> {
        let mut inner = self.inner.blocking_sync_writer()?;
        let threads = self.threads.clone();
        Some(Box::new(move |batch| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            threads.lock().expect("lock").push(name);
            inner(batch)
        }))
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

    async fn last(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<(Bytes, Bytes)>, DiskError> {
        self.inner.last(space, start, end).await
    }
}

/// Over a disk with real threads, the committer syncs on a thread of its own with the disk's
/// blocking writer (one hand-off each way instead of the blocking pool's two), also through
/// `Sealed`, as a node wraps its disk; unsynced writes stay on the caller.
#[tokio::test(flavor = "current_thread")]
async fn group_commit_over_a_real_disk_syncs_on_its_own_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let recording = ThreadRecording {
        inner: FjallDisk::open(dir.path(), &FjallOptions::default()).expect("open"),
        threads: Arc::default(),
    };
    let disk = GroupCommitDisk::new(
        Sealed::new(recording.clone(), Bugs::default()),
        Bugs::default(),
    );
    for (i, sync) in [(0u8, true), (1, false), (2, true)] {
        let mut batch = WriteBatch::new();
        batch.put(Space::State, vec![b'k', i], vec![i; 4]);
        disk.write(batch, sync).await.expect("write");
    }
    assert_eq!(
        *recording.threads.lock().expect("lock"),
        ["larder-sync", "larder-sync"],
        "each synced write, and only those, ran on the committer's thread"
    );
    for i in 0..3u8 {
        let value = disk.get(Space::State, &[b'k', i]).await.expect("get");
        assert_eq!(value.as_deref(), Some(&[i; 4][..]), "sealed and read back");
    }
}
