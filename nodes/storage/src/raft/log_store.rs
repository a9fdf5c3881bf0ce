//! The Raft log of one slot group, stored through [`Disk`].

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use larder_core::bugs::{Bug, Bugs};
use larder_core::env::{Disk, FaultPoint, FaultPoints, Space, WriteBatch, vote_key};
use larder_core::{GroupId, NodeId};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use tokio::sync::mpsc;

use super::log_cache::{LOG_CACHE_BYTES_MAX, LOG_CACHE_ENTRIES_MAX, LogCache};
use super::{Entry, LogId, TypeConfig, Vote, decode, encode};

/// Appends waiting for one flush task's sync at most (the rest wait for the next).
const FLUSH_ROUND_MAX: usize = 256;

/// Appends written but not yet synced, per group: `append` waits when this many are queued.
const FLUSHES_QUEUED_MAX: usize = 1024;

/// How long this node keeps committed entries after a snapshot covers them, for backups'
/// point-in-time restore (`larder backup` reads them, `crate::backup`). Judged by the group
/// clock, the entries' own stamps, so every replica keeps the same ones whatever its clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep an entry until the newest entry appended is this much later. 0: purge entries as
    /// soon as a snapshot covers them (openraft's own rule, and the default).
    pub ms: u64,
    /// Keep at most this many entries per group below the purge mark, however young: the
    /// bound on what a busy group keeps for a long window.
    pub entries_max: u64,
}

/// Entries read at a time while a purge with [`Retention`] looks for the first one to keep.
const RETAINED_SCAN_PAGE: usize = 512;

/// An append written to the disk but not synced: openraft's callback, called once it is.
struct Unflushed {
    /// The first and last index appended (`None`: an empty append).
    indexes: Option<(u64, u64)>,
    callback: IOFlushed<TypeConfig>,
}

/// The vote each group's log store saved last, node-wide: what this replica answers a leader's
/// read round with (`crate::read_rounds`). A vote is recorded here *before* it is written, and
/// openraft answers a vote request only once `save_vote` has returned, so a vote this replica
/// granted is visible here before its candidate can count it: an answer "my vote is still for
/// you in term t" given at some moment proves this replica had voted for no later leader by
/// then. Votes only rise (a vote read back from the disk never lowers one being saved).
#[derive(Debug, Default)]
pub struct SavedVotes {
    votes: Mutex<BTreeMap<GroupId, Vote>>,
}

impl SavedVotes {
    /// Records `vote` for `group` unless a higher one is recorded.
    pub fn raise(&self, group: GroupId, vote: &Vote) {
        let mut votes = self.votes.lock().expect("votes lock");
        match votes.get(&group) {
            Some(held) if vote.partial_cmp(held) == Some(Ordering::Less) => {}
            _ => {
                votes.insert(group, *vote);
            }
        }
    }

    /// Whether this replica's vote for `group` is for `leader` in `term` (committed or not:
    /// either way it has voted for no later leader).
    pub fn holds(&self, group: GroupId, term: u64, leader: NodeId) -> bool {
        self.leader(group) == Some((term, leader))
    }

    /// The leader this replica's saved vote for `group` is for: `(term, node)`.
    pub fn leader(&self, group: GroupId) -> Option<(u64, NodeId)> {
        self.votes
            .lock()
            .expect("votes lock")
            .get(&group)
            .map(|vote| {
                let id = vote.leader_id();
                (id.term, id.node_id)
            })
    }

    /// Forgets a group no longer hosted here.
    pub fn forget(&self, group: GroupId) {
        self.votes.lock().expect("votes lock").remove(&group);
    }
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
    /// Where `save_vote` records the vote before writing it (see [`SavedVotes`]).
    votes: Arc<SavedVotes>,
    /// To this group's flush task ([`flush_appends`]).
    unflushed: mpsc::Sender<Unflushed>,
    /// The index the last purge in this process reached: the next one starts above it without
    /// a scan (`Disk::log_purge`). `None` after opening: the first purge scans from index 0,
    /// which also clears what a purge cut short by a crash left below the mark.
    purged_through: Option<u64>,
    /// The log's newest entries as appended, shared by the store and its readers (the
    /// replication streams, apply): see [`LogCache`] for why and why it is safe.
    cache: Arc<Mutex<LogCache<Entry>>>,
    /// What a purge keeps ([`Retention`]).
    retention: Retention,
    /// The greatest stamp of the entries appended in this process: the "now" a purge with
    /// [`Retention`] judges age by. 0 after opening until the first append, so a purge keeps
    /// everything young enough by count until then.
    newest_stamp_ms: u64,
}

impl<D: Disk> DiskLogStore<D> {
    /// Also starts the group's flush task, which ends when the store and its readers are gone.
    pub fn new(
        disk: D,
        group: GroupId,
        bugs: Bugs,
        points: FaultPoints,
        votes: Arc<SavedVotes>,
    ) -> Self {
        let (unflushed, queue) = mpsc::channel(FLUSHES_QUEUED_MAX);
        let cache = LogCache::new(
            LOG_CACHE_ENTRIES_MAX,
            LOG_CACHE_BYTES_MAX,
            bugs.is_planted(Bug::LogCacheKeepsOverwritten),
        );
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
            votes,
            unflushed,
            purged_through: None,
            cache: Arc::new(Mutex::new(cache)),
            retention: Retention::default(),
            newest_stamp_ms: 0,
        }
    }

    /// Keeps purged entries as `retention` says instead of deleting them at once.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The last index a purge through `upto` deletes under [`Retention`] (`None`: none).
    /// Entries go oldest first: one is deleted when more than
    /// `entries_max` entries up to `upto` would stay, or when its stamp is `ms` older than the
    /// newest appended (a blank or membership entry, unstamped, with the stamped one after it).
    async fn retained_through(&mut self, upto: u64) -> Result<Option<u64>, io::Error> {
        let first = match self.purged_through {
            Some(through) => through.saturating_add(1),
            // After opening: the lowest entry on the disk (one scan per process).
            None => {
                let rows = self
                    .disk
                    .log_read(self.group, 0, upto.saturating_add(1), 1)
                    .await?;
                match rows.first() {
                    Some((index, _)) => *index,
                    None => return Ok(None),
                }
            }
        };
        // Below the first entry applied since the last snapshot install, the log may hold a
        // deposed leader's entries a backup must not read (`DiskStateMachine::entries_from`),
        // and keeping them would leave a hole below the entries after the snapshot: they go.
        let floor = match self
            .disk
            .get(
                Space::Meta,
                &super::state_machine::entries_from_key(self.group),
            )
            .await?
        {
            Some(bytes) => super::state_machine::decode_index(&bytes)?,
            None => 0,
        };
        let by_count = upto
            .saturating_sub(self.retention.entries_max)
            .max(floor.saturating_sub(1));
        let cutoff_ms = self.newest_stamp_ms.saturating_sub(self.retention.ms);
        let mut through = None;
        let mut next = first;
        while next <= upto {
            let to = upto.saturating_add(1);
            let rows = self
                .disk
                .log_read(self.group, next, to, RETAINED_SCAN_PAGE)
                .await?;
            let Some(last) = rows.last().map(|(index, _)| *index) else {
                break;
            };
            for (index, row) in rows {
                let entry: Entry = decode(&row)?;
                let openraft::EntryPayload::Normal(request) = &entry.payload else {
                    // A blank or membership entry has no stamp: it goes by count, or with the
                    // next stamped entry (appended after it, so no older), never alone by the
                    // one before it (it may have come long after that one).
                    if index <= by_count {
                        through = Some(index);
                    }
                    continue;
                };
                let old = self.newest_stamp_ms > 0 && request.now_ms <= cutoff_ms;
                if index > by_count && !old {
                    return Ok(through);
                }
                through = Some(index);
            }
            next = last.saturating_add(1);
        }
        Ok(through)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LogCache<Entry>> {
        // A panic while it was held may have left it half changed: start it again empty (the
        // disk answers what it does not).
        self.cache.lock().unwrap_or_else(|poisoned| {
            self.cache.clear_poison();
            let mut cache = poisoned.into_inner();
            cache.truncate_from(0);
            cache
        })
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
        if let Some(entries) = self.cache().read(from, to) {
            return Ok(entries);
        }
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
            Some(bytes) => {
                let vote: Vote = decode(&bytes)?;
                self.votes.raise(self.group, &vote);
                Ok(Some(vote))
            }
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
        // Before the write: see `SavedVotes`.
        self.votes.raise(self.group, vote);
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        let rows: Vec<(u64, bytes::Bytes)> = entries
            .iter()
            .map(|entry| (entry.log_id.index(), encode(entry)))
            .collect();
        let indexes = rows.first().zip(rows.last()).map(|(a, b)| (a.0, b.0));
        for entry in &entries {
            if let openraft::EntryPayload::Normal(request) = &entry.payload {
                self.newest_stamp_ms = self.newest_stamp_ms.max(request.now_ms);
            }
        }
        let sizes: Vec<usize> = rows.iter().map(|(_, row)| row.len()).collect();
        // Unsynced: the flush task syncs and then reports it (see the type's comment).
        let written = self.disk.log_append(self.group, rows, false).await;
        {
            let mut cache = self.cache();
            match (&written, indexes) {
                (Ok(()), Some((first, _))) => cache.appended(first, entries.into_iter().zip(sizes)),
                // What a failed write left on the disk is unknown: read it from there.
                (Err(_), Some((first, _))) => cache.truncate_from(first),
                (_, None) => {}
            }
        }
        if let Err(error) = written {
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
        let from = last_log_id.map_or(0, |log_id| log_id.index() + 1);
        if self.bugs.is_planted(Bug::SkippedTruncate) {
            // The planted bug lives in the disk's log: read everything from there.
            self.cache().truncate_from(0);
        } else {
            // The cache first: a read between the two finds the disk's entries, as it would
            // before the truncation, never a cached entry the disk no longer holds.
            self.cache().truncate_from(from);
            self.disk.log_truncate(self.group, from).await?;
        }
        self.points.hit(FaultPoint::LogTruncated).await;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.cache().purge_through(log_id.index());
        if self.retention.ms > 0 {
            // The mark says purged through `log_id` (openraft reads nothing below it again);
            // the rows below it stay for backups until `retained_through` lets them go.
            let through = self.retained_through(log_id.index()).await?;
            let from = match (through, self.purged_through) {
                (Some(_), Some(before)) => Some(before.saturating_add(1)),
                (Some(_), None) => None,
                // Nothing to delete: the mark alone (an empty range of `log_purge`).
                (None, _) => Some(log_id.index().saturating_add(1)),
            };
            let upto = through.unwrap_or(log_id.index());
            self.disk
                .log_purge(self.group, from, upto, encode(&log_id))
                .await?;
            if through.is_some() {
                self.purged_through = through;
            }
            self.points.hit(FaultPoint::LogPurged).await;
            return Ok(());
        }
        let from = self.purged_through.map(|through| through.saturating_add(1));
        self.disk
            .log_purge(self.group, from, log_id.index(), encode(&log_id))
            .await?;
        self.purged_through = Some(log_id.index());
        self.points.hit(FaultPoint::LogPurged).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use larder_core::env::FaultPoints;
    use larder_real::{FjallDisk, FjallOptions};
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderIdExt;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        let leader =
            <openraft::alias::LeaderIdOf<TypeConfig> as RaftLeaderIdExt>::new_committed(term, 1);
        LogId::new(leader, index)
    }

    fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        indexes.map(|i| Entry::new_blank(log_id(term, i))).collect()
    }

    async fn terms(store: &mut DiskLogStore<FjallDisk>, from: u64, to: u64) -> Vec<u64> {
        store
            .try_get_log_entries(from..to)
            .await
            .expect("read")
            .iter()
            .map(|entry| entry.log_id.leader_id.term)
            .collect()
    }

    /// A follower holds a tail of term 1 (4..=6) that a new leader of term 2 overwrites from
    /// index 4: every read after it, from the cache while it holds the range and from the
    /// disk after a restart, shows the new leader's entries. Returns what was read, before
    /// and after the restart.
    async fn overwrite_a_suffix(bugs: Bugs) -> (Vec<u64>, Vec<u64>) {
        let dir = tempfile::tempdir().expect("dir");
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("disk");
        let mut store =
            DiskLogStore::new(disk.clone(), 7, bugs, FaultPoints::none(), Arc::default());
        store
            .append(entries(1, 1..=6), IOFlushed::noop())
            .await
            .expect("append");
        assert_eq!(terms(&mut store, 1, 7).await, vec![1; 6]);
        store
            .truncate_after(Some(log_id(1, 3)))
            .await
            .expect("truncate");
        store
            .append(entries(2, 4..=5), IOFlushed::noop())
            .await
            .expect("append");
        let served = terms(&mut store, 1, 6).await;
        drop(store);
        let mut reopened = DiskLogStore::new(
            disk,
            7,
            Bugs::default(),
            FaultPoints::none(),
            Arc::default(),
        );
        (served, terms(&mut reopened, 1, 6).await)
    }

    #[tokio::test]
    async fn reads_after_a_new_leader_overwrote_a_suffix_show_its_entries() {
        let (served, after_restart) = overwrite_a_suffix(Bugs::default()).await;
        assert_eq!(served, vec![1, 1, 1, 2, 2], "from the cache");
        assert_eq!(after_restart, served, "from the disk");
    }

    /// The planted bug `log-cache-keeps-overwritten`: the cache serves the overwritten term-1
    /// entries while the disk holds the new leader's, which the test above tells apart.
    #[tokio::test]
    async fn the_planted_bug_serves_the_overwritten_suffix_and_is_caught() {
        let mut bugs = Bugs::default();
        bugs.plant(Bug::LogCacheKeepsOverwritten);
        let (served, after_restart) = overwrite_a_suffix(bugs).await;
        assert_eq!(served, vec![1, 1, 1, 1, 1], "the overwritten entries");
        assert_ne!(served, after_restart);
    }

    fn stamped(index: u64, now_ms: u64) -> Entry {
        Entry::new_normal(
            log_id(1, index),
            super::super::Request {
                now_ms,
                command: larder_core::kv::Command::FlushAll,
                session: None,
            },
        )
    }

    async fn stored_indexes(disk: &FjallDisk) -> Vec<u64> {
        disk.log_read(7, 0, u64::MAX, usize::MAX)
            .await
            .expect("read")
            .into_iter()
            .map(|(index, _)| index)
            .collect()
    }

    /// Group 7's log on `disk`, keeping 1 s of entries, at most `entries_max`.
    fn retaining(disk: &FjallDisk, entries_max: u64) -> DiskLogStore<FjallDisk> {
        DiskLogStore::new(
            disk.clone(),
            7,
            Bugs::default(),
            FaultPoints::none(),
            Arc::default(),
        )
        .with_retention(Retention {
            ms: 1_000,
            entries_max,
        })
    }

    /// With [`Retention`], a purge moves the mark (openraft reads nothing below it) but keeps
    /// the entries younger than the window by the entries' own stamps, at most `entries_max`
    /// of them; without it, everything up to the mark goes.
    #[tokio::test]
    async fn a_purge_keeps_the_entries_of_the_retention_window() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("disk");
        let mut store = retaining(&disk, 6);
        // Entries 1..=10 stamped 100 ms apart from 10,000: entry 10 at 10,900 is the newest.
        let entries: Vec<Entry> = (1..=10).map(|i| stamped(i, 9_900 + i * 100)).collect();
        store
            .append(entries, IOFlushed::noop())
            .await
            .expect("append");
        store.purge(log_id(1, 3)).await.expect("purge");
        // Nothing is 1 s older than 10,900, and 3 entries are within the count: all kept.
        assert_eq!(stored_indexes(&disk).await, (1..=10).collect::<Vec<_>>());
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
        // Through 9: at most 6 of 1..=9 stay, so 1..=3 go by count.
        store.purge(log_id(1, 9)).await.expect("purge");
        assert_eq!(stored_indexes(&disk).await, (4..=10).collect::<Vec<_>>());
        // Time passes: entry 11 stamped 11,650 makes everything at or before 10,650 old.
        store
            .append(vec![stamped(11, 11_650)], IOFlushed::noop())
            .await
            .expect("append");
        store.purge(log_id(1, 11)).await.expect("purge");
        assert_eq!(stored_indexes(&disk).await, (8..=11).collect::<Vec<_>>());
        // A reopened store (no stamp seen yet) keeps by count only, and finds its first row.
        drop(store);
        let mut reopened = retaining(&disk, 2);
        reopened.purge(log_id(1, 11)).await.expect("purge");
        assert_eq!(stored_indexes(&disk).await, vec![10, 11]);
        // Without retention, the purge deletes through the mark.
        let mut plain = DiskLogStore::new(
            disk.clone(),
            7,
            Bugs::default(),
            FaultPoints::none(),
            Arc::default(),
        );
        plain.purge(log_id(1, 10)).await.expect("purge");
        assert_eq!(stored_indexes(&disk).await, vec![11]);
    }

    /// A blank or membership entry has no stamp: it goes with the stamped entry after it, not
    /// by the one before it (a leader elected long after that one appends it).
    #[tokio::test]
    async fn an_unstamped_entry_goes_with_the_stamped_one_after_it() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("disk");
        let mut store = retaining(&disk, 100);
        let entries = vec![
            Entry::new_blank(log_id(1, 1)),
            stamped(2, 8_000),
            Entry::new_blank(log_id(1, 3)),
            stamped(4, 10_000),
        ];
        store
            .append(entries, IOFlushed::noop())
            .await
            .expect("append");
        // 1 s before 10,000: entry 2 is old, and the blank before it goes with it; the blank
        // after it waits for entry 4, which is young.
        store.purge(log_id(1, 4)).await.expect("purge");
        assert_eq!(stored_indexes(&disk).await, vec![3, 4]);
    }

    /// Below the first entry the replica applied since a snapshot install
    /// (`DiskStateMachine::entries_from`), the purge keeps nothing, however young: those rows
    /// may be a deposed leader's, and kept they would leave a hole below the snapshot.
    #[tokio::test]
    async fn a_purge_after_a_snapshot_install_keeps_nothing_below_it() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("disk");
        let mut store = retaining(&disk, 100);
        let entries: Vec<Entry> = (1..=3).chain(8..=9).map(|i| stamped(i, 10_000)).collect();
        store
            .append(entries, IOFlushed::noop())
            .await
            .expect("append");
        // A snapshot through 7 installed: the replica applies entries from 8 on.
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Meta,
            super::super::state_machine::entries_from_key(7),
            8u64.to_be_bytes().to_vec(),
        );
        disk.write(batch, false).await.expect("write");
        store.purge(log_id(1, 7)).await.expect("purge");
        assert_eq!(stored_indexes(&disk).await, vec![8, 9]);
    }

    fn vote(term: u64, node: NodeId, committed: bool) -> Vote {
        let leader = <openraft::alias::LeaderIdOf<TypeConfig> as openraft::vote::RaftLeaderId>::new(
            term, node,
        );
        <Vote as openraft::vote::RaftVote>::from_leader_id(leader, committed)
    }

    /// What a replica answers a read round: only the vote it saved last, which only rises.
    #[test]
    fn saved_votes_answer_for_the_last_vote_and_never_go_back() {
        let votes = SavedVotes::default();
        assert!(!votes.holds(3, 1, 1), "no vote saved");
        votes.raise(3, &vote(2, 1, false));
        assert!(
            votes.holds(3, 2, 1),
            "granted, not yet committed: no later vote either"
        );
        votes.raise(3, &vote(2, 1, true));
        assert!(votes.holds(3, 2, 1));
        assert!(!votes.holds(3, 2, 2), "another node in the same term");
        assert!(!votes.holds(3, 1, 1), "an earlier term");
        assert!(!votes.holds(4, 2, 1), "another group");
        // A vote for a later leader: the earlier one no longer holds.
        votes.raise(3, &vote(2, 3, false));
        assert!(!votes.holds(3, 2, 1));
        assert!(votes.holds(3, 2, 3));
        // The disk's older vote, read while a newer one is being saved, does not lower it.
        votes.raise(3, &vote(2, 1, true));
        assert!(votes.holds(3, 2, 3));
        votes.forget(3);
        assert!(!votes.holds(3, 2, 3));
    }

    /// `save_vote` records the vote before writing it; reopening reads it back from the disk.
    #[tokio::test]
    async fn a_saved_vote_is_recorded_and_read_back_after_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("disk");
        let votes = Arc::new(SavedVotes::default());
        let mut store = DiskLogStore::new(
            disk.clone(),
            7,
            Bugs::default(),
            FaultPoints::none(),
            votes.clone(),
        );
        store.save_vote(&vote(5, 2, true)).await.expect("save");
        assert!(votes.holds(7, 5, 2));
        drop(store);
        let restarted = Arc::new(SavedVotes::default());
        let mut reopened = DiskLogStore::new(
            disk,
            7,
            Bugs::default(),
            FaultPoints::none(),
            restarted.clone(),
        );
        assert_eq!(
            reopened.read_vote().await.expect("read"),
            Some(vote(5, 2, true))
        );
        assert!(restarted.holds(7, 5, 2));
    }
}
