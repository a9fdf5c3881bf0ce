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
//! Why writes do not fill it (write-through was tried): an apply reads each key's old row, and
//! caching every written row took that memtable search off pipelined SETs in the profile, but
//! CPU per SET did not fall outside the noise in paired runs, and rows served from memory hid
//! bits flipped at rest from the record checksums (`skip-record-checksum` caught by 1 of 50
//! swarm seeds instead of 12).
//!
//! Why a read never sees a stale row: the state machine writes a group's state only under its
//! view lock, held exclusively while a batch lands *and* while this cache is told of it;
//! client reads hold it shared while they read and fill. A fill that races a write anyway (a
//! path outside that rule) is dropped: each group counts the writes it told the cache of, and
//! a fill lands only if that count did not move since the read began ([`FillTicket`]).
//!
//! Eviction is CLOCK (second chance) over insertion order, bounded by bytes: a key, its row
//! and [`ENTRY_OVERHEAD_BYTES`] per entry. The cache is cut into up to [`SHARDS_MAX`] shards by
//! the key's hash, each with its own lock, clock and share of the budget: one lock for every
//! read of every group was contended under pipelined reads. The ring is a `VecDeque` and the
//! hash is keyed by the node's seed, so a seeded simulation caches and evicts the same rows in
//! the same shards on every run; a shard's rows are a hash table (a `BTreeMap`'s comparisons
//! of long shared-prefix keys were a third of the lookup's cost), whose order nothing
//! observes.

use std::collections::{BTreeMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

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
    key: Bytes,
    /// `key`'s hash, kept so the table never hashes a key twice (growth, removal).
    hash: u64,
    row: CachedRow,
    /// Which insertion this is: the queue may still hold the slots of earlier ones.
    id: u64,
    /// Read since the clock hand last passed it.
    referenced: bool,
    cost: usize,
}

/// The cache's hash, keyed by the node's seed (see [`RowCache::new`]).
///
/// Keyed by the seed: keys are chosen by clients, and a hash they could predict would let
/// them pile rows into one probe chain; a seeded simulation's node draws the same keys on
/// every run.
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

/// The most shards a cache is cut into. Every read of every group a node leads takes one
/// shard's lock; one lock for the whole cache was contended under pipelined reads (perf,
/// `lock_contended` under `RowCache::get`), 16 make two readers meeting rare.
const SHARDS_MAX: usize = 16;

/// A shard is given at least this much of the budget, so a small cache is not cut into
/// shards too small to hold a row (and a unit test's tiny cache is one shard, whose eviction
/// order it can state).
const SHARD_BYTES_MIN: usize = 1 << 20;

/// One part of the cache: its rows, its clock and its counts, under one lock. A key's shard
/// is picked by its hash; shards never share a row.
struct Shard {
    /// Slots by their key's hash. Lookups only: nothing iterates the table in an order that
    /// reaches behaviour (`forget` removes what a range holds, the same set in any order;
    /// eviction follows the queue).
    rows: hashbrown::HashTable<Slot>,
    /// Insertion order, the clock's ring: `(key hash, slot id)` (ids are unique, so the two
    /// find the slot without a copy of the key).
    queue: VecDeque<(u64, u64)>,
    bytes: usize,
    next_id: u64,
    /// Writes each group told the cache of (the fill guard). Every shard counts every write
    /// of a group, so the shard a key lives in can judge a fill of it alone.
    writes: BTreeMap<GroupId, u64>,
    /// Counted here, under the lock taken anyway, rather than in atomics every reader of every
    /// shard would write.
    hits: u64,
    misses: u64,
}

/// See the module doc. Shared by every group a node hosts, under one budget.
pub struct RowCache {
    capacity: usize,
    /// Each shard's part of `capacity`; the shards together never hold more than `capacity`.
    shard_capacity: usize,
    hasher: SeededHasher,
    shards: Box<[Mutex<Shard>]>,
}

/// Replaces a cached slot's row in place, keeping the shard's byte count (`bytes`) right: the
/// slot keeps its place on the clock and its reference bit.
fn replace_row(bytes: &mut usize, slot: &mut Slot, row: CachedRow, new_cost: usize) {
    *bytes = *bytes - slot.cost + new_cost;
    slot.cost = new_cost;
    slot.row = row;
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
        // A power of two, so a shard is a mask of the hash (`SHARDS_MAX` is one, so rounding
        // up stays within it).
        let shards = (capacity / SHARD_BYTES_MIN)
            .clamp(1, SHARDS_MAX)
            .next_power_of_two();
        RowCache {
            capacity,
            shard_capacity: capacity / shards,
            hasher,
            shards: (0..shards).map(|_| Mutex::new(Shard::new())).collect(),
        }
    }

    /// Which shard holds the key of hash `hash`: its high bits (the table probes with the
    /// low ones, and hashbrown's tag is the top 7, so these leave both spread).
    fn shard_index(&self, hash: u64) -> usize {
        (hash >> 48) as usize & (self.shards.len() - 1)
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        lock(&self.shards[self.shard_index(hash)])
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The cached row of `key` (`Some(None)`: cached as absent), or `None` on a miss.
    pub fn get(&self, key: &[u8]) -> Option<CachedRow> {
        if !self.enabled() {
            return None;
        }
        let hash = self.hash(key);
        let mut shard = self.shard(hash);
        let found = shard
            .rows
            .find_mut(hash, |slot| slot.key == key)
            .map(|slot| {
                slot.referenced = true;
                slot.row.clone()
            });
        if found.is_some() {
            shard.hits += 1;
        } else {
            shard.misses += 1;
        }
        found
    }

    /// Taken before reading `group`'s row of `key` from disk, for [`RowCache::fill`].
    pub fn ticket(&self, group: GroupId, key: &[u8]) -> FillTicket {
        let writes = if self.enabled() {
            let shard = self.shard(self.hash(key));
            shard.writes.get(&group).copied().unwrap_or(0)
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
        let hash = self.hash(&key);
        let mut shard = self.shard(hash);
        if shard.writes.get(&ticket.group).copied().unwrap_or(0) != ticket.writes {
            return;
        }
        // A copy of its own: a row read from disk may share a larger buffer, which the
        // cache would keep alive unaccounted.
        let row = row.map(|r| Bytes::copy_from_slice(&r));
        shard.put(hash, key, row);
        shard.evict(self.shard_capacity);
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
        let mut rows: Vec<(u64, &Bytes, CachedRow)> = rows
            .into_iter()
            .map(|(key, row)| (self.hash(key), key, row))
            .collect();
        // Every shard counts the write (see `Shard::writes`), and takes the rows it holds.
        for (index, shard) in self.shards.iter().enumerate() {
            let mut shard = lock(shard);
            rows.retain_mut(|(hash, key, row)| {
                if self.shard_index(*hash) != index {
                    return true;
                }
                shard.wrote_row(*hash, key, row.take());
                false
            });
            shard.wrote(group);
            shard.evict(self.shard_capacity);
        }
    }

    /// Forgets every cached row from `start` (inclusive) to `end` (exclusive) of `group`:
    /// the state machine rewrote that range other than row by row.
    pub fn forget(&self, group: GroupId, start: &[u8], end: &[u8]) {
        if !self.enabled() {
            return;
        }
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            // A walk of every row: rare (a `FLUSHALL`, a snapshot install, a wipe), and the
            // table has no order to seek in.
            let mut freed = 0;
            shard.rows.retain(|slot| {
                let doomed = start <= &slot.key[..] && &slot.key[..] < end;
                if doomed {
                    freed += slot.cost;
                }
                !doomed
            });
            shard.bytes -= freed;
            shard.wrote(group);
        }
    }

    fn sum(&self, of: impl Fn(&Shard) -> u64) -> u64 {
        self.shards.iter().map(|shard| of(&lock(shard))).sum()
    }

    pub fn hits(&self) -> u64 {
        self.sum(|shard| shard.hits)
    }

    pub fn misses(&self) -> u64 {
        self.sum(|shard| shard.misses)
    }

    /// Bytes held, by the cache's own count (see [`ENTRY_OVERHEAD_BYTES`]).
    pub fn bytes(&self) -> usize {
        self.sum(|shard| shard.bytes as u64) as usize
    }

    pub fn rows(&self) -> usize {
        self.sum(|shard| shard.rows.len() as u64) as usize
    }
}

fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    // No code under this lock awaits or calls out; a panic inside it is a bug in this file,
    // and a cache left half updated must not go on serving.
    shard.lock().expect("row cache lock")
}

impl Shard {
    fn new() -> Self {
        Shard {
            rows: hashbrown::HashTable::new(),
            queue: VecDeque::new(),
            bytes: 0,
            next_id: 0,
            writes: BTreeMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    fn wrote(&mut self, group: GroupId) {
        let writes = self.writes.entry(group).or_insert(0);
        *writes = writes.wrapping_add(1);
    }

    /// A landed write of `key`: its new row if the shard holds it, too large ones dropped.
    fn wrote_row(&mut self, hash: u64, key: &Bytes, row: CachedRow) {
        // One probe: the slot found is replaced in place or removed.
        let Ok(entry) = self.rows.find_entry(hash, |slot| slot.key == key) else {
            return;
        };
        if row
            .as_ref()
            .is_some_and(|r| r.len() > ROW_CACHE_ROW_BYTES_MAX)
        {
            let (slot, _) = entry.remove();
            self.bytes -= slot.cost;
        } else {
            // Copied for the reason `fill` copies: an ingested row may be a slice of the
            // frame it arrived in. A replaced slot keeps its place on the clock and its
            // reference bit, as in `put`.
            let row = row.map(|r| Bytes::copy_from_slice(&r));
            let new_cost = cost(key, &row);
            replace_row(&mut self.bytes, entry.into_mut(), row, new_cost);
        }
    }

    /// Inserts or replaces `key`'s slot. A replaced slot keeps its place on the clock and its
    /// reference bit; a new one starts unreferenced, so rows read once (a scan) go first.
    fn put(&mut self, hash: u64, key: Bytes, row: CachedRow) {
        let new_cost = cost(&key, &row);
        if let Some(slot) = self.rows.find_mut(hash, |slot| slot.key == key) {
            replace_row(&mut self.bytes, slot, row, new_cost);
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.bytes += new_cost;
        self.queue.push_back((hash, id));
        self.rows.insert_unique(
            hash,
            Slot {
                key,
                hash,
                row,
                id,
                referenced: false,
                cost: new_cost,
            },
            |slot| slot.hash,
        );
    }

    /// Evicts until the shard fits `capacity`: the clock hand passes the oldest slot, giving
    /// a referenced one a second chance at the back.
    fn evict(&mut self, capacity: usize) {
        while self.bytes > capacity {
            let Some((hash, id)) = self.queue.pop_front() else {
                break;
            };
            let Ok(entry) = self.rows.find_entry(hash, |slot| slot.id == id) else {
                // Removed or replaced since: the slot of a later insertion is elsewhere.
                continue;
            };
            if entry.get().referenced {
                entry.into_mut().referenced = false;
                self.queue.push_back((hash, id));
            } else {
                let (slot, _) = entry.remove();
                self.bytes -= slot.cost;
            }
        }
        // Slots of removed or replaced keys linger in the queue until the hand reaches them;
        // past twice the live ones, drop them in one pass so the queue stays bounded.
        if self.queue.len() > 2 * self.rows.len() + 64 {
            let rows = &self.rows;
            self.queue
                .retain(|&(hash, id)| rows.find(hash, |slot| slot.id == id).is_some());
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
        let ticket = cache.ticket(1, b"k");
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
        let ticket = cache.ticket(1, b"k");
        let other_group = cache.ticket(2, b"j");
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
            cache.fill(cache.ticket(1, key.as_bytes()), b(key), Some(b("v")));
        }
        let ticket = cache.ticket(1, b"b");
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
            let key = format!("k{i:03}");
            cache.fill(cache.ticket(1, key.as_bytes()), b(&key), Some(b("v")));
        }
        assert_eq!(cache.rows(), 10);
        cache.fill(cache.ticket(1, b"k010"), b("k010"), Some(b("v")));
        assert!(cache.get(b"k000").is_none(), "the oldest, never read");
        assert!(cache.get(b"k001").is_some());
        for i in 11..20 {
            let key = format!("k{i:03}");
            cache.fill(cache.ticket(1, key.as_bytes()), b(&key), Some(b("v")));
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
        cache.fill(cache.ticket(1, b"big"), b("big"), Some(big.clone()));
        assert_eq!(cache.get(b"big"), None);
        cache.fill(cache.ticket(1, b"k"), b("k"), Some(b("v")));
        cache.wrote(1, [(&b("k"), Some(big))]);
        assert_eq!(cache.get(b"k"), None, "grew too large: dropped");
        let off = RowCache::new(0, 7);
        off.fill(off.ticket(1, b"k"), b("k"), Some(b("v")));
        assert_eq!(off.get(b"k"), None);
        assert_eq!(off.misses(), 0, "an absent cache counts nothing");
    }

    #[test]
    fn churn_without_eviction_keeps_the_queue_bounded() {
        let cache = RowCache::new(1 << 30, 7);
        for i in 0..10_000 {
            let key = b(&format!("k{}", i % 7));
            cache.fill(cache.ticket(1, &key), key.clone(), Some(b("v")));
            cache.forget(1, &key, &[&key[..], &[0]].concat());
        }
        for shard in cache.shards.iter() {
            let shard = lock(shard);
            assert!(shard.queue.len() <= 2 * shard.rows.len() + 65);
            assert_eq!(shard.bytes, 0);
        }
    }

    #[test]
    fn a_large_cache_is_sharded_and_each_shard_keeps_its_share() {
        let cache = RowCache::new(64 << 20, 7);
        assert_eq!(cache.shards.len(), SHARDS_MAX);
        assert_eq!(RowCache::new(1 << 20, 7).shards.len(), 1);
        assert_eq!(RowCache::new(3 << 20, 7).shards.len(), 4);
        let keys: Vec<Bytes> = (0..2_000).map(|i| b(&format!("key{i}"))).collect();
        for key in &keys {
            cache.fill(cache.ticket(1, key), key.clone(), Some(b("v")));
        }
        assert_eq!(cache.rows(), keys.len());
        let used = cache
            .shards
            .iter()
            .filter(|shard| !lock(shard).rows.is_empty())
            .count();
        assert_eq!(used, SHARDS_MAX, "2,000 keys land in every shard");
        // A write reaches each row in whichever shard holds it.
        cache.wrote(1, keys.iter().map(|key| (key, Some(b("w")))));
        assert!(keys.iter().all(|key| cache.get(key) == Some(Some(b("w")))));
        assert_eq!(cache.hits(), keys.len() as u64);
        // A small budget per shard: each evicts within its own share.
        let small = RowCache::new(SHARD_BYTES_MIN * SHARDS_MAX, 7);
        let row = Some(Bytes::from(vec![0u8; 60 << 10]));
        for key in &keys {
            small.fill(small.ticket(1, key), key.clone(), row.clone());
        }
        for shard in small.shards.iter() {
            assert!(lock(shard).bytes <= small.shard_capacity);
        }
        assert!(small.bytes() <= SHARD_BYTES_MIN * SHARDS_MAX);
        assert!(small.rows() < keys.len());
    }
}
