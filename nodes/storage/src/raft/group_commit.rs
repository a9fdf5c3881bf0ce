//! Group commit across every slot group of a node.
//!
//! A node hosts many Raft groups, and each group's log append must be durable before it is
//! acknowledged. Syncing each append on its own caps a node at roughly one append per fsync
//! (~0.2 ms here, DESIGN.md). [`GroupCommitDisk`] funnels every synced write of the node through
//! one committer: while one sync runs, the next writes queue up, and the committer writes them
//! all as one batch with one sync. Unsynced writes (state-machine applies, purges) pass straight
//! through. Over the real disk the committer is a thread that syncs on itself
//! ([`Disk::blocking_sync_writer`]); over the simulated one, a task.

use bytes::Bytes;
use larder_core::bugs::{Bug, Bugs};
use larder_core::env::{BlockingSyncWriter, Clock, Disk, DiskError, Space, WriteBatch};
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
    /// Wraps `inner` and starts the committer: a thread if `inner` has a blocking synced write,
    /// else a task on the current runtime. It ends when the last clone of the returned disk is
    /// dropped. Rounds are counted but not timed.
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
        let (queue, receiver) = mpsc::channel::<Pending>(queue_max);
        let metrics = SyncMetrics::default();
        let committer = Committer {
            receiver,
            bugs,
            clock,
            metrics: metrics.clone(),
        };
        match inner.blocking_sync_writer() {
            Some(writer) => committer.spawn_thread(writer),
            None => {
                let disk = inner.clone();
                tokio::spawn(committer.run(disk));
            }
        }
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

/// The committer: takes every synced write queued since its last round, writes them as one
/// batch with one sync, and answers each caller. It ends when every sender is gone.
struct Committer<C> {
    receiver: mpsc::Receiver<Pending>,
    bugs: Bugs,
    clock: Option<C>,
    metrics: SyncMetrics,
}

impl<C: Clock> Committer<C> {
    /// As a task, awaiting the disk's synced write (the simulated disk, and any disk without a
    /// blocking writer).
    async fn run<D: Disk>(mut self, disk: D) {
        while let Some(first) = self.receiver.recv().await {
            let (merged, round) = self.round(first);
            let started = self.clock.as_ref().map(Clock::now);
            let result = disk.write(merged, true).await;
            self.answer(started, result, round);
        }
    }

    /// On a thread of its own, syncing on it (the real disk: [`Disk::blocking_sync_writer`]).
    /// A caller's write then reaches the sync and its answer the caller in one hand-off each
    /// way; a task that hands the sync to tokio's blocking pool takes two each way.
    fn spawn_thread(mut self, mut writer: BlockingSyncWriter) {
        // Only a disk with real threads hands out a blocking writer (`nodes/real`): the
        // simulated one never does, so a simulation never reaches this.
        #[allow(clippy::disallowed_methods)]
        let spawned = std::thread::Builder::new()
            .name("larder-sync".into())
            .spawn(move || {
                while let Some(first) = self.receiver.blocking_recv() {
                    let (merged, round) = self.round(first);
                    let started = self.clock.as_ref().map(Clock::now);
                    let result = writer(merged);
                    self.answer(started, result, round);
                }
            });
        if let Err(error) = spawned {
            // The committer (and its receiver) is gone: every synced write of the node fails
            // with "group commit task stopped", and its groups stop, rather than go unsynced.
            tracing::error!(%error, "cannot start the group committer's thread");
        }
    }

    /// `first` and every write queued behind it (up to [`MERGE_BATCHES_MAX`]), merged into one
    /// batch, and their callers.
    fn round(
        &mut self,
        first: Pending,
    ) -> (WriteBatch, Vec<oneshot::Sender<Result<(), DiskError>>>) {
        let mut round = vec![first];
        while round.len() < MERGE_BATCHES_MAX {
            match self.receiver.try_recv() {
                Ok(next) => round.push(next),
                Err(_) => break,
            }
        }
        self.metrics.writes.observe(round.len() as f64);
        // One atomic batch is at least as strong as the separate ones it replaces: a crash
        // keeps all of them or none.
        let mut merged = WriteBatch::new();
        let callers = round
            .into_iter()
            .map(|(mut batch, done)| {
                merged.ops.append(&mut batch.ops);
                done
            })
            .collect();
        (merged, callers)
    }

    /// Times the round's sync (begun at `started`) and gives every caller its result.
    fn answer(
        &self,
        started: Option<std::time::Duration>,
        mut result: Result<(), DiskError>,
        callers: Vec<oneshot::Sender<Result<(), DiskError>>>,
    ) {
        if let (Some(clock), Some(started)) = (&self.clock, started) {
            self.metrics
                .seconds
                .observe(clock.now().saturating_sub(started).as_secs_f64());
        }
        if self.bugs.is_planted(Bug::IgnoredSyncError) {
            result = Ok(());
        }
        for done in callers {
            let _ = done.send(result.clone());
        }
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
