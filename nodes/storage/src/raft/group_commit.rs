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
use larder_core::env::{Clock, Disk, DiskError, Space, WriteBatch};
use larder_core::metrics::{batch_histogram, latency_histogram};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, oneshot};

type Pending = (WriteBatch, oneshot::Sender<Result<(), DiskError>>);

/// Bound on batches merged into one sync, so one huge round cannot starve the callers behind it.
const MERGE_BATCHES_MAX: usize = 1024;

/// Bound on synced writes waiting for the committer. Every caller waits for its own write, so
/// a node queues at most one per task that syncs (a group's flush task, a vote, a snapshot
/// write): a few per hosted group. Past the bound a caller waits for room before it queues:
/// nothing is refused or lost, and the callers' memory stays bounded.
pub const SYNC_QUEUE_MAX: usize = 4096;

/// What the committer measures of its sync rounds (`larder_node_sync_…` metrics).
#[derive(Clone, Debug)]
pub struct SyncMetrics {
    /// Time of each round's synced write.
    pub seconds: Histogram,
    /// Synced writes merged into each round.
    pub writes: Histogram,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        SyncMetrics {
            seconds: latency_histogram(),
            writes: batch_histogram(),
        }
    }
}

/// A [`Disk`] whose synced writes share syncs with every other synced write of the node.
#[derive(Clone)]
pub struct GroupCommitDisk<D: Disk> {
    inner: D,
    queue: mpsc::Sender<Pending>,
    metrics: SyncMetrics,
}

impl<D: Disk> GroupCommitDisk<D> {
    /// Wraps `inner` and starts the committer task on the current runtime. The task ends when
    /// the last clone of the returned disk is dropped. Rounds are counted but not timed.
    pub fn new(inner: D, bugs: Bugs) -> Self {
        Self::start(inner, bugs, None::<NoClock>, SYNC_QUEUE_MAX)
    }

    /// [`GroupCommitDisk::new`] with at most `queue_max` synced writes waiting (at least one).
    pub fn with_queue_max(inner: D, bugs: Bugs, queue_max: usize) -> Self {
        Self::start(inner, bugs, None::<NoClock>, queue_max)
    }

    /// [`GroupCommitDisk::new`], timing each round's sync by `clock`.
    pub fn timed<C: Clock>(inner: D, bugs: Bugs, clock: C) -> Self {
        Self::start(inner, bugs, Some(clock), SYNC_QUEUE_MAX)
    }

    /// Synced writes queued for the committer and not yet taken into a round.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// What the committer measured so far.
    pub fn metrics(&self) -> &SyncMetrics {
        &self.metrics
    }

    fn start<C: Clock>(inner: D, bugs: Bugs, clock: Option<C>, queue_max: usize) -> Self {
        let queue_max = queue_max.max(1);
        let (queue, mut receiver) = mpsc::channel::<Pending>(queue_max);
        let disk = inner.clone();
        let metrics = SyncMetrics::default();
        let measured = metrics.clone();
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
                measured.writes.observe(round.len() as f64);
                let started = clock.as_ref().map(Clock::now);
                let mut result = disk.write(merged, true).await;
                if let (Some(clock), Some(started)) = (&clock, started) {
                    measured
                        .seconds
                        .observe(clock.now().saturating_sub(started).as_secs_f64());
                }
                if bugs.is_planted(Bug::IgnoredSyncError) {
                    result = Ok(());
                }
                for (_, done) in round {
                    let _ = done.send(result.clone());
                }
            }
        });
        GroupCommitDisk {
            inner,
            queue,
            metrics,
        }
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
        // A full queue makes the caller wait here for room (see `SYNC_QUEUE_MAX`).
        self.queue
            .send((batch, done))
            .await
            .map_err(|_| stopped())?;
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

/// The clock of an untimed committer: never read.
#[derive(Clone)]
struct NoClock;

impl Clock for NoClock {
    fn now(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    fn wall_ms(&self) -> u64 {
        0
    }

    fn sleep(
        &self,
        _: std::time::Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        std::future::ready(())
    }
}
