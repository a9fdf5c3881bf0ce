//! Group commit across every slot group of a node.
//!
//! A node hosts many Raft groups, and each group's log append must be durable before it is
//! acknowledged. Syncing each append on its own caps a node at roughly one append per fsync
//! (~0.2 ms here, DESIGN.md). [`GroupCommitDisk`] funnels every synced write of the node through
//! one committer task: while one sync runs, the next writes queue up, and the committer writes
//! them all as one batch with one sync. Unsynced writes (state-machine applies, purges) pass
//! straight through.

use bytes::Bytes;
use larder_core::bugs::{Bug, Bugs};
use larder_core::env::{Disk, DiskError, Space, WriteBatch};
use tokio::sync::{mpsc, oneshot};

type Pending = (WriteBatch, oneshot::Sender<Result<(), DiskError>>);

/// Bound on batches merged into one sync, so one huge round cannot starve the callers behind it.
const MERGE_BATCHES_MAX: usize = 1024;

/// A [`Disk`] whose synced writes share syncs with every other synced write of the node.
#[derive(Clone)]
pub struct GroupCommitDisk<D: Disk> {
    inner: D,
    queue: mpsc::UnboundedSender<Pending>,
}

impl<D: Disk> GroupCommitDisk<D> {
    /// Wraps `inner` and starts the committer task on the current runtime. The task ends when
    /// the last clone of the returned disk is dropped.
    pub fn new(inner: D, bugs: Bugs) -> Self {
        let (queue, mut receiver) = mpsc::unbounded_channel::<Pending>();
        let disk = inner.clone();
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut round = vec![first];
                while round.len() < MERGE_BATCHES_MAX {
                    match receiver.try_recv() {
                        Ok(next) => round.push(next),
                        Err(_) => break,
                    }
                }
                // One atomic batch is at least as strong as the separate ones it replaces: a
                // crash keeps all of them or none.
                let mut merged = WriteBatch::new();
                for (batch, _) in &mut round {
                    merged.ops.append(&mut batch.ops);
                }
                let mut result = disk.write(merged, true).await;
                if bugs.is_planted(Bug::IgnoredSyncError) {
                    result = Ok(());
                }
                for (_, done) in round {
                    let _ = done.send(result.clone());
                }
            }
        });
        GroupCommitDisk { inner, queue }
    }

    /// The wrapped disk.
    pub fn inner(&self) -> &D {
        &self.inner
    }
}

impl<D: Disk> Disk for GroupCommitDisk<D> {
    // Reads go straight to the inner disk, and a write has reached it before it completes.
    type View = D::View;

    fn view(&self) -> Self::View {
        self.inner.view()
    }

    async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), DiskError> {
        if !sync {
            return self.inner.write(batch, false).await;
        }
        let (done, wait) = oneshot::channel();
        let stopped = || DiskError::Io {
            reason: "group commit task stopped".into(),
        };
        self.queue.send((batch, done)).map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
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
