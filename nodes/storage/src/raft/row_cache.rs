//! The node's cache of state rows: a bounded memory copy of the [`Space::State`] rows its
//! leaders read, so a hot key is served without a search of fjall's memtables and tables
//! (the seeds' Cellar and CKV keep one in front of their LSM for the same reason).
//!
//! What it holds: a row as the state machine last read it or wrote it, keyed by its full
//! state key (`group ++ key`), or the fact that the key has no row. Only client reads fill it
//! (`DiskStateMachine::read`), so followers, which never serve reads, keep it empty; every
//! apply batch that lands updates the rows it holds (`DiskStateMachine::flush`), and a range
//! rewrite (`FLUSHALL`, a snapshot install, a wipe) forgets the group's rows. Element rows of
//! collections are not cached: a collection's header row is, which is what every command on
//! it reads first.
//!
//! Why a read never sees a stale row: the state machine writes a group's state only under its
//! view lock, held exclusively while a batch lands *and* while this cache is told of it;
//! client reads hold it shared while they read and fill. A fill that races a write anyway (a
//! path outside that rule) is dropped: each group counts the writes it told the cache of, and
//! a fill lands only if that count did not move since the read began ([`FillTicket`]).
//!
//! Eviction is CLOCK (second chance) over insertion order, bounded by bytes: a key, its row
//! and [`ENTRY_OVERHEAD_BYTES`] per entry. The ring is a `VecDeque`, so a seeded simulation
//! caches and evicts the same rows on every run; the rows are a hash map keyed by the node's
//! seed (a `BTreeMap`'s comparisons of long shared-prefix keys were a third of the lookup's
//! cost), whose order nothing observes.

use std::collections::{BTreeMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use larder_core::GroupId;

/// The default budget of a node's row cache: 64 MiB.
pub const ROW_CACHE_BYTES_DEFAULT: usize = 64 << 20;

/// Rows larger than this are never cached: one would evict thousands of small hot rows, and
/// reading it costs more in the copy than in the lookup the cache saves.
pub const ROW_CACHE_ROW_BYTES_MAX: usize = 64 << 10;

/// What an entry costs beyond its key and row: its map node share, its queue slot, the
/// `Bytes` handles.
pub const ENTRY_OVERHEAD_BYTES: usize = 96;

/// A lookup's answer: the row, or that the key has none.
pub type CachedRow = Option<Bytes>;

/// Taken before a read from disk; a fill with it lands only if the group wrote nothing since.
#[derive(Debug, Clone, Copy)]
pub struct FillTicket {
    group: GroupId,
    writes: u64,
}

struct Slot {
    row: CachedRow,
    /// Which insertion this is: the queue may still hold the slots of earlier ones.
    id: u64,
    /// Read since the clock hand last passed it.
    referenced: bool,
    cost: usize,
}

/// SipHash-1-3 keyed from the node's seed: clients choose the keys, so a hash they could
/// predict would let them pile rows into one probe chain; a seeded simulation's node draws
/// the same keys on every run.
#[derive(Clone)]
struct SeededHasher {
    k0: u64,
    k1: u64,
}

impl BuildHasher for SeededHasher {
    type Hasher = siphasher::sip::SipHasher13;

    fn build_hasher(&self) -> Self::Hasher {
        siphasher::sip::SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

// Lookups only: nothing iterates the map in an order that reaches behaviour (`forget` removes
// what a range holds, the same set in any order; eviction follows the queue).
#[allow(clippy::disallowed_types)]
type Rows = std::collections::HashMap<Bytes, Slot, SeededHasher>;

struct Inner {
    rows: Rows,
    /// Insertion order, the clock's ring: `(key, slot id)`.
    queue: VecDeque<(Bytes, u64)>,
    bytes: usize,
    next_id: u64,
    /// Writes each group told the cache of (the fill guard).
    writes: BTreeMap<GroupId, u64>,
}

/// See the module doc. Shared by every group a node hosts, under one budget.
pub struct RowCache {
    capacity: usize,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn cost(key: &[u8], row: &CachedRow) -> usize {
    key.len() + row.as_ref().map_or(0, Bytes::len) + ENTRY_OVERHEAD_BYTES
}

impl RowCache {
    /// A cache of at most `capacity` bytes (0 turns it off), its hash keyed by `seed`.
    pub fn new(capacity: usize, seed: u64) -> Self {
        let hasher = SeededHasher {
            k0: larder_core::env::derive_seed(seed, 1),
            k1: larder_core::env::derive_seed(seed, 2),
        };
        RowCache {
            capacity,
            inner: Mutex::new(Inner::new(hasher)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // No code under this lock awaits or calls out; a panic inside it is a bug in this
        // file, and a cache left half updated must not go on serving.
        self.inner.lock().expect("row cache lock")
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The cached row of `key` (`Some(None)`: cached as absent), or `None` on a miss.
    pub fn get(&self, key: &[u8]) -> Option<CachedRow> {
        if !self.enabled() {
            return None;
        }
        let found = self.inner().rows.get_mut(key).map(|slot| {
            slot.referenced = true;
            slot.row.clone()
        });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Taken before reading `group`'s row from disk, for [`RowCache::fill`].
    pub fn ticket(&self, group: GroupId) -> FillTicket {
        let writes = if self.enabled() {
            self.inner().writes.get(&group).copied().unwrap_or(0)
        } else {
            0
        };
        FillTicket { group, writes }
    }

    /// Caches `row` as `key`'s, read from disk after `ticket` was taken, unless the group
    /// wrote since (the row may be older than the write) or the row is too large. `key` is
    /// kept as given: pass one of its own allocation, not a slice of a larger buffer.
    pub fn fill(&self, ticket: FillTicket, key: Bytes, row: CachedRow) {
        if !self.enabled()
            || row
                .as_ref()
                .is_some_and(|r| r.len() > ROW_CACHE_ROW_BYTES_MAX)
        {
            return;
        }
        let mut inner = self.inner();
        if inner.writes.get(&ticket.group).copied().unwrap_or(0) != ticket.writes {
            return;
        }
        // A copy of its own: a row read from disk may share a larger buffer, which the
        // cache would keep alive unaccounted.
        let row = row.map(|r| Bytes::copy_from_slice(&r));
        inner.put(key, row);
        inner.evict(self.capacity);
    }

    /// An apply batch of `group` landed with these state rows (`None`: deleted): the cached
    /// ones take their new values. Rows the cache does not hold stay out of it.
    pub fn wrote<'a>(
        &self,
        group: GroupId,
        rows: impl IntoIterator<Item = (&'a Bytes, CachedRow)>,
    ) {
        if !self.enabled() {
            return;
        }
        let mut inner = self.inner();
        for (key, row) in rows {
            if !inner.rows.contains_key(key.as_ref()) {
                continue;
            }
            if row
                .as_ref()
                .is_some_and(|r| r.len() > ROW_CACHE_ROW_BYTES_MAX)
            {
                inner.remove(key);
            } else {
                // Copied for the reason `fill` copies: an ingested row may be a slice of the
                // frame it arrived in.
                let row = row.map(|r| Bytes::copy_from_slice(&r));
                inner.put(key.clone(), row);
            }
        }
        inner.wrote(group);
        inner.evict(self.capacity);
    }

    /// Forgets every cached row from `start` (inclusive) to `end` (exclusive) of `group`:
    /// the state machine rewrote that range other than row by row.
    pub fn forget(&self, group: GroupId, start: &[u8], end: &[u8]) {
        if !self.enabled() {
            return;
        }
        let mut inner = self.inner();
        // A walk of every row: rare (a `FLUSHALL`, a snapshot install, a wipe), and the map
        // has no order to seek in.
        let mut freed = 0;
        inner.rows.retain(|key, slot| {
            let doomed = start <= &key[..] && &key[..] < end;
            if doomed {
                freed += slot.cost;
            }
            !doomed
        });
        inner.bytes -= freed;
        inner.wrote(group);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Bytes held, by the cache's own count (see [`ENTRY_OVERHEAD_BYTES`]).
    pub fn bytes(&self) -> usize {
        self.inner().bytes
    }

    pub fn rows(&self) -> usize {
        self.inner().rows.len()
    }
}

impl Inner {
    fn new(hasher: SeededHasher) -> Self {
        Inner {
            rows: Rows::with_hasher(hasher),
            queue: VecDeque::new(),
            bytes: 0,
            next_id: 0,
            writes: BTreeMap::new(),
        }
    }

    fn wrote(&mut self, group: GroupId) {
        let writes = self.writes.entry(group).or_insert(0);
        *writes = writes.wrapping_add(1);
    }

    /// Inserts or replaces `key`'s slot. A replaced slot keeps its place on the clock and its
    /// reference bit; a new one starts unreferenced, so rows read once (a scan) go first.
    fn put(&mut self, key: Bytes, row: CachedRow) {
        let new_cost = cost(&key, &row);
        if let Some(slot) = self.rows.get_mut(&key) {
            self.bytes = self.bytes - slot.cost + new_cost;
            slot.cost = new_cost;
            slot.row = row;
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.bytes += new_cost;
        self.queue.push_back((key.clone(), id));
        self.rows.insert(
            key,
            Slot {
                row,
                id,
                referenced: false,
                cost: new_cost,
            },
        );
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(slot) = self.rows.remove(key) {
            self.bytes -= slot.cost;
        }
    }

    /// Evicts until the cache fits `capacity`: the clock hand passes the oldest slot, giving
    /// a referenced one a second chance at the back.
    fn evict(&mut self, capacity: usize) {
        while self.bytes > capacity {
            let Some((key, id)) = self.queue.pop_front() else {
                break;
            };
            let Some(slot) = self.rows.get_mut(&key) else {
                continue;
            };
            if slot.id != id {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                self.queue.push_back((key, id));
            } else {
                self.remove(&key);
            }
        }
        // Slots of removed or replaced keys linger in the queue until the hand reaches them;
        // past twice the live ones, drop them in one pass so the queue stays bounded.
        if self.queue.len() > 2 * self.rows.len() + 64 {
            let rows = &self.rows;
            self.queue
                .retain(|(key, id)| rows.get(key).is_some_and(|slot| slot.id == *id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_filled_row_is_served_and_a_write_replaces_it() {
        let cache = RowCache::new(1 << 20, 7);
        assert_eq!(cache.get(b"k"), None);
        let ticket = cache.ticket(1);
        cache.fill(ticket, b("k"), Some(b("v1")));
        assert_eq!(cache.get(b"k"), Some(Some(b("v1"))));
        cache.wrote(1, [(&b("k"), Some(b("v2")))]);
        assert_eq!(cache.get(b"k"), Some(Some(b("v2"))));
        cache.wrote(1, [(&b("k"), None)]);
        assert_eq!(cache.get(b"k"), Some(None), "cached as deleted");
        // A write of a row the cache does not hold does not fill it.
        cache.wrote(1, [(&b("other"), Some(b("x")))]);
        assert_eq!(cache.get(b"other"), None);
        assert_eq!((cache.hits(), cache.misses()), (3, 2));
    }

    #[test]
    fn a_fill_that_raced_a_write_of_its_group_is_dropped() {
        let cache = RowCache::new(1 << 20, 7);
        let ticket = cache.ticket(1);
        let other_group = cache.ticket(2);
        cache.wrote(1, [(&b("elsewhere"), None)]);
        cache.fill(ticket, b("k"), Some(b("old")));
        assert_eq!(cache.get(b"k"), None, "the row read may predate the write");
        cache.fill(other_group, b("j"), Some(b("v")));
        assert_eq!(cache.get(b"j"), Some(Some(b("v"))), "another group's write");
    }

    #[test]
    fn forget_drops_a_range_and_fills_in_flight() {
        let cache = RowCache::new(1 << 20, 7);
        for key in ["a", "b", "c", "d"] {
            cache.fill(cache.ticket(1), b(key), Some(b("v")));
        }
        let ticket = cache.ticket(1);
        cache.forget(1, b"b", b"d");
        assert_eq!(cache.get(b"a"), Some(Some(b("v"))));
        assert_eq!(cache.get(b"b"), None);
        assert_eq!(cache.get(b"c"), None);
        assert_eq!(cache.get(b"d"), Some(Some(b("v"))));
        cache.fill(ticket, b("b"), Some(b("v")));
        assert_eq!(cache.get(b"b"), None);
    }

    #[test]
    fn the_cache_stays_within_its_budget_and_keeps_what_is_read() {
        let entry = cost(b"k000", &Some(b("v")));
        let cache = RowCache::new(entry * 10, 7);
        for i in 0..10 {
            cache.fill(cache.ticket(1), b(&format!("k{i:03}")), Some(b("v")));
        }
        assert_eq!(cache.rows(), 10);
        cache.fill(cache.ticket(1), b("k010"), Some(b("v")));
        assert!(cache.get(b"k000").is_none(), "the oldest, never read");
        assert!(cache.get(b"k001").is_some());
        for i in 11..20 {
            cache.fill(cache.ticket(1), b(&format!("k{i:03}")), Some(b("v")));
            assert!(cache.bytes() <= entry * 10);
        }
        assert!(
            cache.get(b"k001").is_some(),
            "referenced, so it had a second chance"
        );
        assert!(cache.get(b"k002").is_none());
    }

    #[test]
    fn large_rows_and_a_zero_budget_are_not_cached() {
        let cache = RowCache::new(1 << 30, 7);
        let big = Bytes::from(vec![0u8; ROW_CACHE_ROW_BYTES_MAX + 1]);
        cache.fill(cache.ticket(1), b("big"), Some(big.clone()));
        assert_eq!(cache.get(b"big"), None);
        cache.fill(cache.ticket(1), b("k"), Some(b("v")));
        cache.wrote(1, [(&b("k"), Some(big))]);
        assert_eq!(cache.get(b"k"), None, "grew too large: dropped");
        let off = RowCache::new(0, 7);
        off.fill(off.ticket(1), b("k"), Some(b("v")));
        assert_eq!(off.get(b"k"), None);
        assert_eq!(off.misses(), 0, "an absent cache counts nothing");
    }

    #[test]
    fn churn_without_eviction_keeps_the_queue_bounded() {
        let cache = RowCache::new(1 << 30, 7);
        for i in 0..10_000 {
            let key = b(&format!("k{}", i % 7));
            cache.fill(cache.ticket(1), key.clone(), Some(b("v")));
            cache.forget(1, &key, &[&key[..], &[0]].concat());
        }
        let inner = cache.inner();
        assert!(inner.queue.len() <= 2 * inner.rows.len() + 65);
        assert_eq!(inner.bytes, 0);
    }
}
