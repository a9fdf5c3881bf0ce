//! The Raft log of one slot group, stored through [`Disk`].

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use larder_core::GroupId;
use larder_core::bugs::{Bug, Bugs};
use larder_core::env::{Disk, FaultPoint, FaultPoints, Space, WriteBatch, vote_key};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use tokio::sync::mpsc;

use super::{Entry, LogId, TypeConfig, Vote, decode, encode};

/// Appends waiting for one flush task's sync at most (the rest wait for the next).
const FLUSH_ROUND_MAX: usize = 256;

/// Appends written but not yet synced, per group: `append` waits when this many are queued.
const FLUSHES_QUEUED_MAX: usize = 1024;

/// An append written to the disk but not synced: openraft's callback, called once it is.
struct Unflushed {
    /// The first and last index appended (`None`: an empty append).
    indexes: Option<(u64, u64)>,
    callback: IOFlushed<TypeConfig>,
}

/// openraft's log storage for group `group` on `disk`.
///
/// An append is written unsynced, so its entries are readable when `append` returns (openraft
/// 0.10's contract), and reported flushed by the group's flush task only after a sync that
/// followed the write has returned: this is what makes an acknowledged write durable on a
/// quorum. Meanwhile the leader already sends the entries to its followers
/// (`broadcast_submitted_on_append`), so a write waits for one fsync round (the slower of the
/// leader's and the quorum's), not the leader's and then a follower's. The flush task syncs
/// everything queued since its last sync at once, and the node's group committer merges the
/// syncs of all groups (group commit).
#[derive(Clone)]
pub struct DiskLogStore<D: Disk> {
    disk: D,
    group: GroupId,
    bugs: Bugs,
    points: FaultPoints,
    /// To this group's flush task ([`flush_appends`]).
    unflushed: mpsc::Sender<Unflushed>,
    /// The index the last purge in this process reached: the next one starts above it without
    /// a scan (`Disk::log_purge`). `None` after opening: the first purge scans from index 0,
    /// which also clears what a purge cut short by a crash left below the mark.
    purged_through: Option<u64>,
}

impl<D: Disk> DiskLogStore<D> {
    /// Also starts the group's flush task, which ends when the store and its readers are gone.
    pub fn new(disk: D, group: GroupId, bugs: Bugs, points: FaultPoints) -> Self {
        let (unflushed, queue) = mpsc::channel(FLUSHES_QUEUED_MAX);
        tokio::spawn(flush_appends(
            disk.clone(),
            group,
            bugs.clone(),
            points.clone(),
            queue,
        ));
        DiskLogStore {
            disk,
            group,
            bugs,
            points,
            unflushed,
            purged_through: None,
        }
    }
}

/// Syncs what the group appended and reports it flushed, in order: one sync for every append
/// queued while the previous sync ran. A failed sync fails the appends it covered (openraft
/// then stops the group); the disk itself fails every later write (a poisoned fjall database,
/// and the simulated disk, until a restart).
async fn flush_appends<D: Disk>(
    disk: D,
    group: GroupId,
    bugs: Bugs,
    points: FaultPoints,
    mut queue: mpsc::Receiver<Unflushed>,
) {
    let mut round = Vec::with_capacity(FLUSH_ROUND_MAX);
    while queue.recv_many(&mut round, FLUSH_ROUND_MAX).await > 0 {
        let synced = if bugs.is_planted(Bug::UnsyncedLogAppend) {
            // Planted bug: reported flushed without a sync.
            Ok(())
        } else {
            disk.write(WriteBatch::new(), true).await
        };
        for Unflushed { indexes, callback } in round.drain(..) {
            match &synced {
                Ok(()) => {
                    match indexes {
                        Some((first, last)) => points.log_appended(group, first, last).await,
                        None => points.hit(FaultPoint::LogAppended).await,
                    }
                    callback.io_completed(Ok(()));
                }
                Err(error) => callback.io_completed(Err(io::Error::from(error.clone()))),
            }
        }
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(&i) => i.saturating_add(1),
        Bound::Excluded(&i) => i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl<D: Disk> RaftLogReader<TypeConfig> for DiskLogStore<D> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (from, to) = bounds(&range);
        let rows = self.disk.log_read(self.group, from, to, usize::MAX).await?;
        let mut entries = Vec::with_capacity(rows.len());
        for (expected, (index, payload)) in (from..).zip(rows) {
            // A gap would mean the disk lost an entry in the middle of the log: never serve
            // around it, openraft would replicate a hole.
            if index != expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "group {} log has a gap: expected index {expected}, found {index}",
                        self.group
                    ),
                ));
            }
            entries.push(decode::<Entry>(&payload)?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        match self.disk.read_vote(self.group).await? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

impl<D: Disk> RaftLogStorage<TypeConfig> for DiskLogStore<D> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged: Option<LogId> = match self.disk.log_purged_mark(self.group).await? {
            Some(bytes) => Some(decode(&bytes)?),
            None => None,
        };
        let last = match self.disk.log_last(self.group).await? {
            Some((_, payload)) => Some(decode::<Entry>(&payload)?.log_id),
            None => None,
        };
        // Entries at or below the purge mark may survive a crash in the middle of a purge;
        // they are ignored (and purged again), so the last log id is never below the mark.
        let last = match (last, purged) {
            (Some(last), Some(purged)) if last.index() < purged.index() => Some(purged),
            (None, purged) => purged,
            (last, _) => last,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        if self.bugs.is_planted(Bug::UnsyncedVote) {
            // The same record `Disk::save_vote` writes, without its sync.
            let mut batch = WriteBatch::new();
            batch.put(Space::Meta, vote_key(self.group), encode(vote));
            self.disk.write(batch, false).await?;
        } else {
            self.disk.save_vote(self.group, encode(vote)).await?;
        }
        self.points.hit(FaultPoint::VoteSaved).await;
        Ok(())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
    {
        let rows: Vec<(u64, bytes::Bytes)> = entries
            .into_iter()
            .map(|entry| (entry.log_id.index(), encode(&entry)))
            .collect();
        let indexes = rows.first().zip(rows.last()).map(|(a, b)| (a.0, b.0));
        // Unsynced: the flush task syncs and then reports it (see the type's comment).
        if let Err(error) = self.disk.log_append(self.group, rows, false).await {
            let error = io::Error::from(error);
            callback.io_completed(Err(io::Error::new(error.kind(), error.to_string())));
            return Err(error);
        }
        if let Err(mpsc::error::SendError(unflushed)) =
            self.unflushed.send(Unflushed { indexes, callback }).await
        {
            let reason = format!("group {}: its flush task stopped", self.group);
            unflushed
                .callback
                .io_completed(Err(io::Error::other(reason.clone())));
            return Err(io::Error::other(reason));
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        if !self.bugs.is_planted(Bug::SkippedTruncate) {
            let from = last_log_id.map_or(0, |log_id| log_id.index() + 1);
            self.disk.log_truncate(self.group, from).await?;
        }
        self.points.hit(FaultPoint::LogTruncated).await;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let from = self.purged_through.map(|through| through.saturating_add(1));
        self.disk
            .log_purge(self.group, from, log_id.index(), encode(&log_id))
            .await?;
        self.purged_through = Some(log_id.index());
        self.points.hit(FaultPoint::LogPurged).await;
        Ok(())
    }
}
