//! The newest entries of one group's Raft log, kept in memory as they were appended.
//!
//! **Why.** Every entry is read back soon after it is appended: by each of the leader's
//! replication streams (one per follower) and by every replica's apply. From the disk, each of
//! those reads is a range scan of fjall's memtable and a decode of every entry; from here, a
//! clone. TiKV keeps an entry cache for the same reason. (Measured alone, at stop 36, its
//! saving was within the noise of `redis-benchmark -t set`: the range scans a profile showed
//! were mostly the snapshot builds', since removed.)
//!
//! **Why it cannot serve a wrong entry.** The cache mirrors the tail of the log on the disk: it
//! is filled only by appends (after their disk write succeeded), trimmed by truncation and
//! purge before the disk is, and a read is answered from it only when the cache holds the
//! whole range asked for. An append that does not continue the cached tail replaces the cache
//! (openraft truncates a conflicting suffix before it appends over it, so that is only a
//! restart of the tail, never a hole). A read it cannot answer whole goes to the disk, as
//! before.

use std::collections::VecDeque;

/// Entries kept per group at most.
pub(crate) const LOG_CACHE_ENTRIES_MAX: usize = 1024;

/// Encoded bytes of the entries kept per group at most: a node hosting 64 groups keeps 64 MiB
/// at most. A few large values fill it, so then it holds few entries; one larger than the
/// whole bound is not kept.
pub(crate) const LOG_CACHE_BYTES_MAX: usize = 1 << 20;

/// The cached tail of a log: entries `first ..first + entries.len()`, each with its encoded
/// size (what the byte bound counts).
#[derive(Debug)]
pub(crate) struct LogCache<T> {
    first: u64,
    entries: VecDeque<(T, usize)>,
    bytes: usize,
    entries_max: usize,
    bytes_max: usize,
    /// The planted bug `log-cache-keeps-overwritten` (see `Bug::LogCacheKeepsOverwritten`).
    keeps_overwritten: bool,
}

impl<T: Clone> LogCache<T> {
    pub(crate) fn new(entries_max: usize, bytes_max: usize, keeps_overwritten: bool) -> Self {
        LogCache {
            first: 0,
            entries: VecDeque::new(),
            bytes: 0,
            entries_max,
            bytes_max,
            keeps_overwritten,
        }
    }

    /// One past the last cached index (`first` when empty).
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entries `first, first + 1, …` were written to the log (each with its encoded size).
    pub(crate) fn appended(&mut self, first: u64, entries: impl IntoIterator<Item = (T, usize)>) {
        if self.keeps_overwritten && !self.entries.is_empty() && first < self.end() {
            // Planted bug: the entries at indexes already cached are taken for resends of the
            // cached ones and skipped, so a suffix a new leader overwrote is still served.
            let skip = usize::try_from(self.end() - first).unwrap_or(usize::MAX);
            let end = self.end();
            self.push_from(end, entries.into_iter().skip(skip));
            return;
        }
        if self.entries.is_empty() || first != self.end() {
            if first > self.first && first < self.end() {
                self.truncate_from(first);
            } else {
                self.clear();
                self.first = first;
            }
        }
        self.push_from(first, entries);
    }

    /// Pushes entries `first, first + 1, …` at the end; `first` is the cache's end unless the
    /// cache is empty.
    fn push_from(&mut self, first: u64, entries: impl IntoIterator<Item = (T, usize)>) {
        for (index, (entry, size)) in (first..).zip(entries) {
            if self.entries.is_empty() {
                self.first = index;
            }
            if size > self.bytes_max {
                // An entry larger than the whole cache: the tail restarts after it (a cache
                // holds a contiguous range).
                self.clear();
                self.first = index + 1;
                continue;
            }
            self.entries.push_back((entry, size));
            self.bytes += size;
            while self.entries.len() > self.entries_max || self.bytes > self.bytes_max {
                self.pop_front();
            }
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
            self.first += 1;
        }
    }

    /// Entries from `index` on are gone (truncated).
    pub(crate) fn truncate_from(&mut self, index: u64) {
        if self.keeps_overwritten {
            return;
        }
        if index <= self.first {
            self.clear();
            self.first = index;
            return;
        }
        while self.end() > index {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Entries up to `index` are gone (purged).
    pub(crate) fn purge_through(&mut self, index: u64) {
        while !self.entries.is_empty() && self.first <= index {
            self.pop_front();
        }
        if self.entries.is_empty() {
            self.first = self.first.max(index.saturating_add(1));
        }
    }

    /// Entries `from..to`, if the cache holds every one of them.
    pub(crate) fn read(&self, from: u64, to: u64) -> Option<Vec<T>> {
        if from >= to || self.entries.is_empty() || from < self.first || to > self.end() {
            return None;
        }
        let start = usize::try_from(from - self.first).ok()?;
        let end = usize::try_from(to - self.first).ok()?;
        Some(
            self.entries
                .range(start..end)
                .map(|(entry, _)| entry.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    fn cache() -> LogCache<(u64, u64)> {
        LogCache::new(8, 64, false)
    }

    /// Entries `first..=last` of `term`, each `size` bytes.
    fn run(first: u64, last: u64, term: u64, size: usize) -> Vec<((u64, u64), usize)> {
        (first..=last).map(|i| ((term, i), size)).collect()
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let mut cache = cache();
        assert_eq!(cache.read(1, 2), None, "empty");
        cache.appended(5, run(5, 7, 1, 1));
        assert_eq!(cache.read(5, 8), Some(vec![(1, 5), (1, 6), (1, 7)]));
        assert_eq!(cache.read(6, 7), Some(vec![(1, 6)]));
        assert_eq!(cache.read(4, 6), None, "starts below the cache");
        assert_eq!(cache.read(6, 9), None, "ends past the cache");
        assert_eq!(cache.read(6, 6), None, "empty range");
    }

    #[test]
    fn keeps_the_newest_entries_within_both_bounds() {
        let mut cache = cache();
        cache.appended(1, run(1, 10, 1, 1));
        assert_eq!(
            cache.read(3, 11).map(|v| v.len()),
            Some(8),
            "8 entries at most"
        );
        assert_eq!(cache.read(2, 3), None);
        cache.appended(11, run(11, 11, 1, 60));
        assert_eq!(cache.read(6, 12), None, "64 bytes at most: 4 + 60");
        assert_eq!(cache.read(7, 12).map(|v| v.len()), Some(5));
        cache.appended(12, run(12, 12, 1, 65));
        assert_eq!(cache.read(12, 13), None, "larger than the cache: not kept");
        assert_eq!(cache.read(11, 12), None, "nor what came before it");
        cache.appended(13, run(13, 14, 1, 1));
        assert_eq!(
            cache.read(13, 15).map(|v| v.len()),
            Some(2),
            "kept from after it"
        );
    }

    #[test]
    fn truncation_and_a_new_leaders_entries_replace_the_tail() {
        let mut cache = cache();
        cache.appended(1, run(1, 6, 1, 1));
        cache.truncate_from(4);
        assert_eq!(cache.read(1, 5), None);
        cache.appended(4, run(4, 5, 2, 1));
        assert_eq!(
            cache.read(3, 6),
            Some(vec![(1, 3), (2, 4), (2, 5)]),
            "the overwritten suffix is gone"
        );
    }

    #[test]
    fn the_planted_bug_serves_the_overwritten_suffix() {
        let mut cache = LogCache::new(8, 64, true);
        cache.appended(1, run(1, 6, 1, 1));
        cache.truncate_from(4);
        cache.appended(4, run(4, 7, 2, 1));
        assert_eq!(
            cache.read(3, 8),
            Some(vec![(1, 3), (1, 4), (1, 5), (1, 6), (2, 7)])
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Truncate from `last - back`, then append `len` entries there.
        Append {
            back: u64,
            len: u64,
            size: usize,
            truncate: bool,
        },
        Truncate {
            back: u64,
        },
        Purge {
            ahead: u64,
        },
        Read {
            from_back: u64,
            len: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4u64, 1..6u64, 1..30usize, any::<bool>()).prop_map(
                |(back, len, size, truncate)| Op::Append {
                    back,
                    len,
                    size,
                    truncate
                }
            ),
            (0..6u64).prop_map(|back| Op::Truncate { back }),
            (0..6u64).prop_map(|ahead| Op::Purge { ahead }),
            (0..12u64, 0..10u64).prop_map(|(from_back, len)| Op::Read { from_back, len }),
        ]
    }

    proptest! {
        /// Against a model of the log (a map, as the disk keeps it): whatever the cache
        /// answers is what the log holds, under any mix of appends, truncations and purges.
        #[test]
        fn answers_only_what_the_log_holds(ops in proptest::collection::vec(op(), 1..60)) {
            let mut cache = LogCache::new(8, 64, false);
            let mut log: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
            let mut purged = 0u64;
            let mut term = 0u64;
            for op in ops {
                let next = log.keys().next_back().map_or(purged + 1, |last| last + 1);
                match op {
                    Op::Append { back, len, size, truncate } => {
                        term += 1;
                        let first = next.saturating_sub(back).max(purged + 1);
                        // openraft truncates a conflicting suffix before it appends; the
                        // cache must also cope with an append over its tail on its own.
                        log.retain(|&i, _| i < first);
                        if truncate {
                            cache.truncate_from(first);
                        }
                        let entries = run(first, first + len - 1, term, size);
                        for ((t, i), _) in &entries {
                            log.insert(*i, (*t, *i));
                        }
                        cache.appended(first, entries);
                    }
                    Op::Truncate { back } => {
                        let from = next.saturating_sub(back).max(purged + 1);
                        cache.truncate_from(from);
                        log.retain(|&i, _| i < from);
                    }
                    Op::Purge { ahead } => {
                        let through = (purged + ahead).min(next.saturating_sub(1));
                        cache.purge_through(through);
                        log.retain(|&i, _| i > through);
                        purged = purged.max(through);
                    }
                    Op::Read { from_back, len } => {
                        let from = next.saturating_sub(from_back);
                        if let Some(entries) = cache.read(from, from + len) {
                            let held: Vec<_> =
                                log.range(from..from + len).map(|(_, e)| *e).collect();
                            prop_assert_eq!(entries, held);
                        }
                    }
                }
            }
        }
    }
}
