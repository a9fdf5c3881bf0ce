use std::future::Future;

use bytes::Bytes;

use crate::GroupId;

/// The keyspaces of one node's engine. Real: one fjall keyspace each. Kept apart so the Raft
/// log can be purged and scanned without touching state, and metadata survives both.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Space {
    /// Raft log entries, keyed by [`log_key`].
    Log,
    /// Replicated state (the KV data of every slot group on the node).
    State,
    /// Small records: votes, purge marks, snapshots, node identity.
    Meta,
    /// The elements of hashes, sets and sorted sets, one row each, so that touching one
    /// element reads and writes that row, not the whole collection (the storage node's
    /// `raft::rows`). Apart from `State` so that a scan of a group's keys never walks them.
    Elements,
}

impl Space {
    pub const ALL: [Space; 4] = [Space::Log, Space::State, Space::Meta, Space::Elements];

    pub fn name(self) -> &'static str {
        match self {
            Space::Log => "log",
            Space::State => "state",
            Space::Meta => "meta",
            Space::Elements => "elements",
        }
    }
}

/// One mutation inside a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        space: Space,
        key: Bytes,
        value: Bytes,
    },
    Delete {
        space: Space,
        key: Bytes,
    },
}

/// An ordered group of mutations applied atomically: after a crash either all of them are
/// visible or none (fjall writes a batch as one journal record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<WriteOp>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn put(
        &mut self,
        space: Space,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> &mut Self {
        self.ops.push(WriteOp::Put {
            space,
            key: key.into(),
            value: value.into(),
        });
        self
    }
    pub fn delete(&mut self, space: Space, key: impl Into<Bytes>) -> &mut Self {
        self.ops.push(WriteOp::Delete {
            space,
            key: key.into(),
        });
        self
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// Bytes of keys and values, for size accounting and disk-full checks.
    pub fn size_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                WriteOp::Put { key, value, .. } => key.len() + value.len(),
                WriteOp::Delete { key, .. } => key.len(),
            })
            .sum()
    }
}

/// Why a disk operation failed. Every variant is fatal for the Raft group that saw it: the
/// node stops the group (as a process would exit on `EIO`) and recovers from what is durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskError {
    #[error("i/o error: {reason}")]
    Io { reason: String },
    #[error("disk full: {used_bytes} bytes used of {capacity_bytes}")]
    Full {
        used_bytes: u64,
        capacity_bytes: u64,
    },
    #[error("corrupt record in {space:?}: {reason}")]
    Corrupt { space: Space, reason: String },
}

impl From<DiskError> for std::io::Error {
    fn from(error: DiskError) -> Self {
        std::io::Error::other(error)
    }
}

/// Key of Raft log entry `index` of `group` in [`Space::Log`]: big-endian, so byte order is
/// (group, index) order and one group's log is one contiguous range.
pub fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&group.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Inverse of [`log_key`] for the index part.
pub fn log_key_index(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// The key in [`Space::Meta`] of `group`'s Raft vote (what [`Disk::save_vote`] writes).
pub fn vote_key(group: GroupId) -> Bytes {
    meta_key("vote", group)
}

fn meta_key(kind: &str, group: GroupId) -> Bytes {
    let mut key = Vec::with_capacity(kind.len() + 9);
    key.extend_from_slice(kind.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&group.to_be_bytes());
    Bytes::from(key)
}

/// A point-in-time view of a [`Disk`] (see [`Disk::view`]). It holds on to the data it shows,
/// so keep it only as long as the read that needs it.
pub trait DiskView: Send + Sync + 'static {
    /// Like [`Disk::scan`], as the disk was when the view was taken.
    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Bytes, Bytes)>, DiskError>> + Send;
}

/// A disk's synced write as a blocking call ([`Disk::blocking_sync_writer`]): applies the batch
/// atomically and returns once it and every earlier write are durable.
pub type BlockingSyncWriter = Box<dyn FnMut(WriteBatch) -> Result<(), DiskError> + Send>;

/// A node's storage engine.
///
/// Contract (checked by [`crate::conformance::disk_suite`]; crash rules by each
/// implementation's own crash test):
/// - A [`WriteBatch`] is atomic and writes are ordered: a read sees every earlier write.
/// - `write(batch, sync: true)` returns only once that batch **and every earlier write** is
///   durable. Unsynced writes may be lost on a crash, but only as a suffix: if a write survives,
///   every earlier write survives too.
/// - `scan` returns keys in ascending byte order within `[start, end)`.
///
/// The Raft log operations are provided on top of these primitives; an implementation may
/// override them with something faster but must keep their meaning.
pub trait Disk: Clone + Send + Sync + 'static {
    /// A point-in-time view of this disk ([`Disk::view`]).
    type View: DiskView;

    /// What the disk holds now, to read later: scans through the view see every write that
    /// completed before this call and none that completes after it. Taking one is cheap and
    /// synchronous; a caller takes it under a lock that keeps writers out (a snapshot build,
    /// under the apply lock) and reads it at leisure once the lock is released.
    fn view(&self) -> Self::View;

    /// Applies `batch` atomically; with `sync`, makes it and all earlier writes durable first.
    fn write(
        &self,
        batch: WriteBatch,
        sync: bool,
    ) -> impl Future<Output = Result<(), DiskError>> + Send;

    /// [`Disk::write`] with `sync`, as a call that blocks the calling thread, for a disk that
    /// has real threads to block (the real one). The node's group committer then runs its
    /// rounds on a thread of its own and syncs there directly: two thread hand-offs fewer per
    /// sync than a task that hands each sync to a blocking pool and waits to be woken. `None`,
    /// the default and the simulated disk's answer: the committer is a task that awaits
    /// [`Disk::write`], which is what keeps a simulation on one thread.
    fn blocking_sync_writer(&self) -> Option<BlockingSyncWriter> {
        None
    }

    /// The current value of `key` in `space`, including unsynced writes.
    fn get(
        &self,
        space: Space,
        key: &[u8],
    ) -> impl Future<Output = Result<Option<Bytes>, DiskError>> + Send;

    /// Up to `limit` entries of `space` with `start <= key < end` (`end: None` = unbounded), in
    /// ascending key order.
    fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Bytes, Bytes)>, DiskError>> + Send;

    /// Like [`Disk::scan`], keys only. Deleting needs no values, and must not need them: a
    /// record whose value is corrupt can still be deleted (a [`crate::env::Sealed`] disk
    /// checks values, not keys, so it answers this without checking).
    fn scan_keys(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Bytes>, DiskError>> + Send {
        async move {
            let rows = self.scan(space, start, end, limit).await?;
            Ok(rows.into_iter().map(|(key, _)| key).collect())
        }
    }

    /// The entry of `space` with the greatest key in `[start, end)`, if any.
    fn last(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
    ) -> impl Future<Output = Result<Option<(Bytes, Bytes)>, DiskError>> + Send;

    /// Deletes every key of `space` in `[start, end)` in bounded batches (unsynced), and, if
    /// given, writes `then` in the final batch.
    fn delete_range_paged(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
        then: Option<WriteBatch>,
    ) -> impl Future<Output = Result<(), DiskError>> + Send {
        async move {
            // Bounded pages so a huge range does not build one giant batch in memory.
            const PAGE_MAX: usize = 4096;
            let mut then = then;
            let mut pages = KeyPages::new(space, start, end, PAGE_MAX);
            while let Some(keys) = pages.next(self).await? {
                let mut batch = WriteBatch::new();
                for key in keys {
                    batch.delete(space, key);
                }
                if pages.is_done()
                    && let Some(then) = then.take()
                {
                    batch.ops.extend(then.ops);
                }
                if !batch.is_empty() {
                    self.write(batch, false).await?;
                }
            }
            Ok(())
        }
    }

    /// Appends Raft log entries `(index, payload)` of `group` in one batch.
    fn log_append(
        &self,
        group: GroupId,
        entries: Vec<(u64, Bytes)>,
        sync: bool,
    ) -> impl Future<Output = Result<(), DiskError>> + Send {
        let mut batch = WriteBatch::new();
        for (index, payload) in entries {
            batch.put(
                Space::Log,
                Bytes::copy_from_slice(&log_key(group, index)),
                payload,
            );
        }
        self.write(batch, sync)
    }

    /// Log entries of `group` with `from <= index < to`, at most `limit`, in index order.
    fn log_read(
        &self,
        group: GroupId,
        from: u64,
        to: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(u64, Bytes)>, DiskError>> + Send {
        async move {
            if from >= to {
                return Ok(Vec::new());
            }
            let start = log_key(group, from);
            let end = log_key(group, to);
            // At most one row per index: a caller's "no limit" becomes the range's length, so
            // an implementation that runs long scans elsewhere (a thread pool) keeps a short
            // read of a few entries (every apply, every append sent) on the calling task.
            let limit = limit.min(usize::try_from(to - from).unwrap_or(usize::MAX));
            let rows = self.scan(Space::Log, &start, Some(&end), limit).await?;
            rows.into_iter()
                .map(|(key, value)| {
                    let index = log_key_index(&key).ok_or_else(|| DiskError::Corrupt {
                        space: Space::Log,
                        reason: format!("log key of {} bytes", key.len()),
                    })?;
                    Ok((index, value))
                })
                .collect()
        }
    }

    /// The highest log entry stored for `group`, if any.
    fn log_last(
        &self,
        group: GroupId,
    ) -> impl Future<Output = Result<Option<(u64, Bytes)>, DiskError>> + Send {
        async move {
            let start = log_key(group, 0);
            let end = log_key(group, u64::MAX);
            let Some((key, value)) = self.last(Space::Log, &start, &end).await? else {
                return Ok(None);
            };
            let index = log_key_index(&key).ok_or_else(|| DiskError::Corrupt {
                space: Space::Log,
                reason: format!("log key of {} bytes", key.len()),
            })?;
            Ok(Some((index, value)))
        }
    }

    /// Deletes the log entries of `group` with `index >= from` (conflict truncation).
    fn log_truncate(
        &self,
        group: GroupId,
        from: u64,
    ) -> impl Future<Output = Result<(), DiskError>> + Send {
        async move {
            // One batch, not pages: a crash between pages would leave a hole in the log (low
            // entries gone, higher ones kept). The suffix a conflict truncates is short.
            let keys = self
                .scan_keys(
                    Space::Log,
                    &log_key(group, from),
                    Some(&log_key(group, u64::MAX)),
                    usize::MAX,
                )
                .await?;
            let mut batch = WriteBatch::new();
            for key in keys {
                batch.delete(Space::Log, key);
            }
            if batch.is_empty() {
                Ok(())
            } else {
                self.write(batch, false).await
            }
        }
    }

    /// Deletes the log entries of `group` with `index <= upto` (after a snapshot covers them),
    /// recording `mark` (the purged log id, encoded by the caller) in the same batch.
    ///
    /// `from`, when given, says no entry below it is left (the caller purged up to it before,
    /// in this process): the range is then deleted blind, key by key, without a scan. An LSM
    /// keeps the tombstones of earlier purges until compaction, and a scan from index 0 reads
    /// through all of them: with 260k entries purged, that scan ran for seconds on the async
    /// workers and stalled every write of the node.
    fn log_purge(
        &self,
        group: GroupId,
        from: Option<u64>,
        upto: u64,
        mark: Bytes,
    ) -> impl Future<Output = Result<(), DiskError>> + Send {
        async move {
            // Bounded batches, as `delete_range_paged`'s.
            const PAGE_MAX: u64 = 4096;
            let mut mark_batch = WriteBatch::new();
            mark_batch.put(Space::Meta, meta_key("purged", group), mark);
            // The mark goes first: if the deletes are cut short by a crash, the leftovers lie
            // below the mark and are ignored and purged again.
            self.write(mark_batch, false).await?;
            let Some(from) = from else {
                let end = log_key(group, upto.saturating_add(1));
                return self
                    .delete_range_paged(Space::Log, &log_key(group, 0), &end, None)
                    .await;
            };
            let mut next = from;
            while next <= upto {
                let last = upto.min(next.saturating_add(PAGE_MAX - 1));
                let mut batch = WriteBatch::new();
                for index in next..=last {
                    batch.delete(Space::Log, Bytes::copy_from_slice(&log_key(group, index)));
                }
                self.write(batch, false).await?;
                if last == u64::MAX {
                    break;
                }
                next = last + 1;
            }
            Ok(())
        }
    }

    /// The mark saved by the last [`Disk::log_purge`] of `group`.
    fn log_purged_mark(
        &self,
        group: GroupId,
    ) -> impl Future<Output = Result<Option<Bytes>, DiskError>> + Send {
        async move { self.get(Space::Meta, &meta_key("purged", group)).await }
    }

    /// Durably records `group`'s Raft vote. Always synced: a vote forgotten after a crash lets a
    /// node vote twice in one term.
    fn save_vote(
        &self,
        group: GroupId,
        vote: Bytes,
    ) -> impl Future<Output = Result<(), DiskError>> + Send {
        let mut batch = WriteBatch::new();
        batch.put(Space::Meta, meta_key("vote", group), vote);
        self.write(batch, true)
    }

    fn read_vote(
        &self,
        group: GroupId,
    ) -> impl Future<Output = Result<Option<Bytes>, DiskError>> + Send {
        async move { self.get(Space::Meta, &meta_key("vote", group)).await }
    }

    /// Durably stores `group`'s latest snapshot (metadata and data, encoded by the caller).
    fn save_snapshot(
        &self,
        group: GroupId,
        snapshot: Bytes,
    ) -> impl Future<Output = Result<(), DiskError>> + Send {
        let mut batch = WriteBatch::new();
        batch.put(Space::Meta, meta_key("snapshot", group), snapshot);
        self.write(batch, true)
    }

    fn read_snapshot(
        &self,
        group: GroupId,
    ) -> impl Future<Output = Result<Option<Bytes>, DiskError>> + Send {
        async move { self.get(Space::Meta, &meta_key("snapshot", group)).await }
    }
}

/// A walk over the keys of one space in `[start, end)`, a page of at most `page` keys at a
/// time, each page starting just past the last key of the one before: the one way Larder reads
/// a range too large to hold at once (counting a group's keys, auditing its elements, deleting
/// a range).
pub struct KeyPages {
    space: Space,
    from: Vec<u8>,
    end: Vec<u8>,
    page: usize,
    done: bool,
}

impl KeyPages {
    pub fn new(space: Space, start: &[u8], end: &[u8], page: usize) -> Self {
        KeyPages {
            space,
            from: start.to_vec(),
            end: end.to_vec(),
            page: page.max(1),
            done: false,
        }
    }

    /// The next page, `None` once the range is walked. The first call always yields a page
    /// (empty for an empty range), and a page shorter than the limit is the last one.
    pub async fn next<D: Disk>(&mut self, disk: &D) -> Result<Option<Vec<Bytes>>, DiskError> {
        if self.done {
            return Ok(None);
        }
        let keys = disk
            .scan_keys(self.space, &self.from, Some(&self.end), self.page)
            .await?;
        match keys.last() {
            Some(last) if keys.len() == self.page => {
                self.from.clear();
                self.from.extend_from_slice(last);
                self.from.push(0);
            }
            _ => self.done = true,
        }
        Ok(Some(keys))
    }

    /// Whether the page [`KeyPages::next`] returned last was the range's last.
    pub fn is_done(&self) -> bool {
        self.done
    }
}
