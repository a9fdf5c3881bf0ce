//! Hot keys and hot slots: which keys and slots took most of the requests lately, and how fast
//! a key is being written, in bounded memory whatever the number of distinct keys.
//!
//! - [`TopK`] is the Space-Saving summary (Metwally, Agrawal and El Abbadi, 2005): `capacity`
//!   counters; a key not counted takes the smallest counter over and inherits its count as its
//!   error. Every key occurring more than `total / capacity` times is in the summary, and for a
//!   counted key `count - error <= true count <= count`. Memory is `capacity` keys at most.
//! - [`HotKeys`] keeps two summaries of consecutive windows (the current one and the one before)
//!   and a counter per slot, and reads them as a sliding window: the previous window's counts are
//!   weighed by the part of it still inside the last `window` of time. Rates are computed from
//!   the **guaranteed** counts (`count - error`), so a key is never called hot, nor limited,
//!   because of another key's counts it inherited.
//!
//! - [`ReadSampler`] picks which reads are recorded: one in `every`, each with weight `every`
//!   (writes are always recorded, one by one). With many distinct keys nearly every record
//!   takes the smallest counter over, and recording every read was 7 % of `larder up`'s
//!   CPU under pipelined GETs of random keys (perf, issue 13); a hot key is read so
//!   often that one read in eight still measures it (a key read 500 times a second gives about
//!   62 samples a second: its rate within 13 %, one standard deviation; the hotter the key, the
//!   closer). Write counts stay exact: the proxy's per-key
//!   write limit refuses on them.
//!
//! Both are plain values with no clock of their own: the caller passes the time (its role's
//! [`crate::env::Clock`]), so they behave the same inside the simulator. Ties are broken by key
//! order or counter position, never by hash order (see [`TopK`]'s index).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::slots::{SLOTS, slot_of};

/// A key as text for people (an error line, `INFO hotkeys`, `larder admin hotkeys`):
/// printable ASCII kept, any other byte and the backslash, `'` and `,` written `\xNN` (so a
/// key cannot break the line, quote or field it sits in), cut after `max` bytes with `...`.
pub fn printable_key(key: &[u8], max: usize) -> String {
    let mut out = String::with_capacity(key.len().min(max));
    for &byte in key.iter().take(max) {
        if byte.is_ascii_graphic() && !matches!(byte, b'\\' | b'\'' | b',') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    if key.len() > max {
        out.push_str("...");
    }
    out
}

/// Which reads a summary records: one in `every`, with weight `every`, so the counts stay
/// estimates of every read (see the module's documentation).
///
/// Which read is picked is a fixed pseudo-random function of how many reads came before
/// (splitmix64's finalizer of the count): deterministic, so a seed replays it, and without the
/// period a plain "every eighth" has, which a client repeating a pattern of eight commands
/// (a pipeline) would alias with. A client cannot aim at it either: the count is shared by
/// every client of the role. Lock-free, so a read that is not picked costs one atomic add.
#[derive(Debug)]
pub struct ReadSampler {
    every: u64,
    seen: AtomicU64,
}

impl ReadSampler {
    /// Picks one read in `every` (1 or 0: every read).
    pub fn new(every: u64) -> Self {
        ReadSampler {
            every: every.max(1),
            seen: AtomicU64::new(0),
        }
    }

    /// The weight to record a request with (a write always 1, a read as [`ReadSampler::next`]
    /// says), or `None` if it is not recorded.
    pub fn weight(&self, write: bool) -> Option<u64> {
        if write { Some(1) } else { self.next() }
    }

    /// The weight to record the next read with, or `None` if it is not recorded.
    pub fn next(&self) -> Option<u64> {
        if self.every == 1 {
            return Some(1);
        }
        let seen = self.seen.fetch_add(1, Ordering::Relaxed);
        mix(seen).is_multiple_of(self.every).then_some(self.every)
    }
}

/// splitmix64's finalizer: a bijection of `u64` whose output bits each depend on every input
/// bit.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One counted key of a [`TopK`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counter {
    /// A buffer of its own, reused by the next key that takes the counter over.
    key: Vec<u8>,
    /// `key`'s hash in the index.
    hash: u64,
    count: u64,
    /// How much of `count` may belong to keys this counter held before.
    error: u64,
}

/// The hash of the index: xxh3, unseeded. Nothing iterates the index (every order the summary
/// shows comes from `counters`), so its layout cannot leak into behaviour, and it holds at most
/// `capacity` keys, so keys chosen to collide cost at worst a scan of `capacity` counters: a
/// hash with no defence against chosen keys is safe here, and it runs for every key of every
/// request (SipHash's rounds were a fifth of a record's cost under pipelined GETs).
fn index_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// The Space-Saving summary: the heaviest keys of a stream, in `capacity` counters.
///
/// Every request a proxy or node serves is recorded, and with many distinct keys nearly every
/// record evicts the smallest counter, so that is the hot path (a scan of all counters for the
/// smallest, with a `BTreeMap` index, was 15 % of a proxy's and node's CPU under pipelined
/// GETs of random keys, perf). Here a binary min-heap over the counters, ordered by `(count,
/// position)`, finds it in O(1) and keeps it in O(log capacity); the order is total, so it is
/// exactly the counter the scan chose. The index holds counter positions and compares keys in
/// the counters, and an evicted counter's key buffer takes the new key: once full, a record
/// allocates nothing.
#[derive(Debug, Clone)]
pub struct TopK {
    capacity: usize,
    counters: Vec<Counter>,
    /// Positions in `counters`, by their key's hash.
    index: hashbrown::HashTable<usize>,
    /// Positions in `counters`, a min-heap by `(count, position)`.
    heap: Vec<usize>,
    /// Where each counter sits in `heap` (`heap[place[at]] == at`).
    place: Vec<usize>,
    total: u64,
}

impl TopK {
    /// A summary of at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        TopK {
            capacity,
            counters: Vec::with_capacity(capacity),
            index: hashbrown::HashTable::with_capacity(capacity),
            heap: Vec::with_capacity(capacity),
            place: Vec::with_capacity(capacity),
            total: 0,
        }
    }

    fn position(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let counters = &self.counters;
        self.index
            .find(hash, |&at| counters[at].key == key)
            .copied()
    }

    /// Files counter `at` in the index.
    fn index_insert(&mut self, at: usize) {
        let counters = &self.counters;
        self.index
            .insert_unique(counters[at].hash, at, |&i| counters[i].hash);
    }

    /// Counts `n` more occurrences of `key`.
    pub fn record(&mut self, key: &[u8], n: u64) {
        self.total = self.total.saturating_add(n);
        let hash = index_hash(key);
        if let Some(at) = self.position(hash, key) {
            let counter = &mut self.counters[at];
            counter.count = counter.count.saturating_add(n);
            self.sift_down(self.place[at]);
            return;
        }
        if self.counters.len() < self.capacity {
            let at = self.counters.len();
            self.counters.push(Counter {
                key: key.to_vec(),
                hash,
                count: n,
                error: 0,
            });
            self.index_insert(at);
            self.heap.push(at);
            self.place.push(at);
            self.sift_up(at);
            return;
        }
        // The smallest counter (the first of equals, by position: deterministic) changes hands.
        let at = self.heap[0];
        self.index
            .find_entry(self.counters[at].hash, |&i| i == at)
            .expect("every counter is in the index")
            .remove();
        let counter = &mut self.counters[at];
        let smallest = counter.count;
        counter.key.clear();
        counter.key.extend_from_slice(key);
        counter.hash = hash;
        counter.count = smallest.saturating_add(n);
        counter.error = smallest;
        self.index_insert(at);
        self.sift_down(0);
    }

    /// Whether the counter at heap position `a` orders before the one at `b`.
    fn before(&self, a: usize, b: usize) -> bool {
        let (a, b) = (self.heap[a], self.heap[b]);
        (self.counters[a].count, a) < (self.counters[b].count, b)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.place[self.heap[a]] = a;
        self.place[self.heap[b]] = b;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.before(i, parent) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    /// Restores the heap below position `i`, whose counter may have grown.
    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (left, right) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if left < self.heap.len() && self.before(left, least) {
                least = left;
            }
            if right < self.heap.len() && self.before(right, least) {
                least = right;
            }
            if least == i {
                break;
            }
            self.swap(i, least);
            i = least;
        }
    }

    /// `(count, guaranteed)` of `key`: at most `count` and at least `guaranteed` occurrences
    /// were recorded; `None` if the key is not counted (then it occurred at most
    /// [`TopK::floor`] times).
    pub fn estimate(&self, key: &[u8]) -> Option<(u64, u64)> {
        self.position(index_hash(key), key).map(|at| {
            let c = &self.counters[at];
            (c.count, c.count - c.error)
        })
    }

    /// The most an uncounted key can have occurred: the smallest counter once the summary is
    /// full, 0 before.
    pub fn floor(&self) -> u64 {
        if self.counters.len() < self.capacity {
            0
        } else {
            self.heap.first().map_or(0, |&at| self.counters[at].count)
        }
    }

    /// Every occurrence recorded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The counted keys as `(key, count, guaranteed)`, the largest guaranteed count first
    /// (then by key).
    pub fn counted(&self) -> Vec<(Bytes, u64, u64)> {
        let mut all: Vec<(Bytes, u64, u64)> = self
            .counters
            .iter()
            .map(|c| (Bytes::copy_from_slice(&c.key), c.count, c.count - c.error))
            .collect();
        all.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        all
    }
}

/// A hot key as a role reports it: its estimated rates over the last window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotKey {
    pub key: Bytes,
    pub slot: u16,
    /// Requests per second that certainly touched the key (a lower bound, rounded down).
    pub per_sec: u64,
    /// Of those, writes per second (a lower bound too).
    pub writes_per_sec: u64,
}

/// A hot slot: requests per second to any key of it (rounded down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotSlot {
    pub slot: u16,
    pub per_sec: u64,
}

/// One window's counts.
#[derive(Debug, Clone)]
struct Window {
    /// Every request, by key.
    requests: TopK,
    /// Writes only, by key (the write limit reads these).
    writes: TopK,
    /// Requests by slot (exact: one counter per slot).
    slots: Vec<u32>,
}

impl Window {
    fn new(capacity: usize) -> Self {
        Window {
            requests: TopK::new(capacity),
            writes: TopK::new(capacity),
            slots: vec![0; usize::from(SLOTS)],
        }
    }
}

/// Sliding-window hot-key and hot-slot detection (see the module's documentation).
#[derive(Debug, Clone)]
pub struct HotKeys {
    window: Duration,
    /// When the current window began.
    began: Duration,
    current: Window,
    previous: Window,
    capacity: usize,
}

impl HotKeys {
    /// Tracks up to `capacity` keys per window of `window` (at least 1 ms), starting at `now`.
    pub fn new(capacity: usize, window: Duration, now: Duration) -> Self {
        HotKeys {
            window: window.max(Duration::from_millis(1)),
            began: now,
            current: Window::new(capacity),
            previous: Window::new(capacity),
            capacity,
        }
    }

    /// The window's length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Moves the windows on to `now`: a window that ended becomes the previous one; after two
    /// or more windows without a request both are empty.
    fn advance(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.began);
        if elapsed < self.window {
            return;
        }
        if elapsed < self.window * 2 {
            let fresh = Window::new(self.capacity);
            self.previous = std::mem::replace(&mut self.current, fresh);
            self.began += self.window;
        } else {
            self.previous = Window::new(self.capacity);
            self.current = Window::new(self.capacity);
            // Windows stay aligned to the first one's start.
            let windows = elapsed.as_nanos() / self.window.as_nanos();
            let step = self.window.as_nanos() * windows;
            self.began += Duration::from_nanos(u64::try_from(step).unwrap_or(u64::MAX));
        }
    }

    /// Records one request touching `key` at `now` (a write if `write`).
    pub fn record(&mut self, now: Duration, key: &[u8], write: bool) {
        self.record_weighted(now, key, write, 1);
    }

    /// Records `weight` requests touching `key` at `now` (writes if `write`): a sampled read
    /// stands for the reads not recorded ([`ReadSampler`]).
    pub fn record_weighted(&mut self, now: Duration, key: &[u8], write: bool, weight: u64) {
        self.advance(now);
        self.current.requests.record(key, weight);
        if write {
            self.current.writes.record(key, weight);
        }
        let slot = &mut self.current.slots[usize::from(slot_of(key))];
        *slot = slot.saturating_add(u32::try_from(weight).unwrap_or(u32::MAX));
    }

    /// The weight of the previous window's counts at `now`: the part of it still within the
    /// last `window`.
    fn previous_weight(&self, now: Duration) -> f64 {
        let into = now.saturating_sub(self.began).as_secs_f64() / self.window.as_secs_f64();
        (1.0 - into).clamp(0.0, 1.0)
    }

    fn sliding(&self, now: Duration, current: u64, previous: u64) -> f64 {
        current as f64 + previous as f64 * self.previous_weight(now)
    }

    /// Writes of `key` within the last window at `now`, certainly made (a lower bound).
    pub fn recent_writes(&mut self, now: Duration, key: &[u8]) -> f64 {
        self.recent(now, key, |window| &window.writes)
    }

    /// Requests (reads and writes) of `key` within the last window at `now`, certainly made
    /// (a lower bound).
    pub fn recent_requests(&mut self, now: Duration, key: &[u8]) -> f64 {
        self.recent(now, key, |window| &window.requests)
    }

    fn recent(&mut self, now: Duration, key: &[u8], of: fn(&Window) -> &TopK) -> f64 {
        self.advance(now);
        let guaranteed = |topk: &TopK| topk.estimate(key).map_or(0, |(_, g)| g);
        self.sliding(
            now,
            guaranteed(of(&self.current)),
            guaranteed(of(&self.previous)),
        )
    }

    /// The hottest keys at `now`, at most `n`, each with at least `min_per_sec` requests per
    /// second certainly made; the hottest first.
    pub fn hot_keys(&mut self, now: Duration, n: usize, min_per_sec: u64) -> Vec<HotKey> {
        self.advance(now);
        let seconds = self.window.as_secs_f64();
        let guaranteed = |topk: &TopK, key: &[u8]| topk.estimate(key).map_or(0, |(_, g)| g);
        let mut keys: BTreeMap<Bytes, ()> = BTreeMap::new();
        for (key, _, _) in self
            .current
            .requests
            .counted()
            .into_iter()
            .chain(self.previous.requests.counted())
        {
            keys.insert(key, ());
        }
        let mut hot: Vec<HotKey> = keys
            .into_keys()
            .map(|key| {
                let requests = self.sliding(
                    now,
                    guaranteed(&self.current.requests, &key),
                    guaranteed(&self.previous.requests, &key),
                );
                let writes = self.sliding(
                    now,
                    guaranteed(&self.current.writes, &key),
                    guaranteed(&self.previous.writes, &key),
                );
                let per_sec = (requests / seconds) as u64;
                HotKey {
                    slot: slot_of(&key),
                    key,
                    per_sec,
                    // Each summary bounds its own counts: keep the pair consistent.
                    writes_per_sec: ((writes / seconds) as u64).min(per_sec),
                }
            })
            .filter(|hot| hot.per_sec >= min_per_sec.max(1))
            .collect();
        hot.sort_by(|a, b| b.per_sec.cmp(&a.per_sec).then_with(|| a.key.cmp(&b.key)));
        hot.truncate(n);
        hot
    }

    /// The hottest slots at `now`, at most `n`, each with at least `min_per_sec` requests per
    /// second; the hottest first.
    pub fn hot_slots(&mut self, now: Duration, n: usize, min_per_sec: u64) -> Vec<HotSlot> {
        self.advance(now);
        let seconds = self.window.as_secs_f64();
        let mut hot: Vec<HotSlot> = (0..SLOTS)
            .filter_map(|slot| {
                let at = usize::from(slot);
                let (current, previous) = (self.current.slots[at], self.previous.slots[at]);
                if current == 0 && previous == 0 {
                    return None;
                }
                let per_sec =
                    (self.sliding(now, u64::from(current), u64::from(previous)) / seconds) as u64;
                (per_sec >= min_per_sec.max(1)).then_some(HotSlot { slot, per_sec })
            })
            .collect();
        hot.sort_by(|a, b| b.per_sec.cmp(&a.per_sec).then(a.slot.cmp(&b.slot)));
        hot.truncate(n);
        hot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact(stream: &[u8]) -> BTreeMap<u8, u64> {
        let mut counts = BTreeMap::new();
        for &key in stream {
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    proptest! {
        /// Space-Saving's guarantees, on streams over a small alphabet so keys collide.
        #[test]
        fn space_saving_bounds_every_count(
            stream in proptest::collection::vec(0u8..40, 0..600),
            capacity in 1usize..12,
        ) {
            let mut topk = TopK::new(capacity);
            for &key in &stream {
                topk.record(&[key], 1);
            }
            let truth = exact(&stream);
            prop_assert_eq!(topk.total(), stream.len() as u64);
            prop_assert!(topk.counted().len() <= capacity);
            let threshold = stream.len() as u64 / capacity as u64;
            for (&key, &count) in &truth {
                match topk.estimate(&[key]) {
                    Some((upper, guaranteed)) => {
                        prop_assert!(guaranteed <= count && count <= upper,
                            "key {key}: {guaranteed} <= {count} <= {upper}");
                        prop_assert!(upper - guaranteed <= threshold);
                    }
                    None => {
                        prop_assert!(count <= topk.floor(), "key {key} ({count}) dropped");
                        prop_assert!(count <= threshold,
                            "key {key} occurred {count} > {threshold} times and is not counted");
                    }
                }
            }
        }
    }

    /// The summary as first written: the smallest counter found by a scan of them all.
    fn scanned(stream: &[(u8, u64)], capacity: usize) -> Vec<(Vec<u8>, u64, u64)> {
        let mut counters: Vec<(Vec<u8>, u64, u64)> = Vec::new();
        for &(key, n) in stream {
            if let Some(c) = counters.iter_mut().find(|c| c.0 == [key]) {
                c.1 += n;
            } else if counters.len() < capacity {
                counters.push((vec![key], n, 0));
            } else {
                let at = (0..counters.len())
                    .min_by_key(|&at| (counters[at].1, at))
                    .expect("full");
                let smallest = counters[at].1;
                counters[at] = (vec![key], smallest + n, smallest);
            }
        }
        counters
    }

    proptest! {
        /// The heap changes how the smallest counter is found, not which: every counter
        /// matches the scan's, position by position.
        #[test]
        fn the_heap_evicts_the_counter_the_scan_did(
            stream in proptest::collection::vec((0u8..30, 0u64..4), 0..400),
            capacity in 1usize..10,
        ) {
            let mut topk = TopK::new(capacity);
            for &(key, n) in &stream {
                topk.record(&[key], n);
            }
            let got: Vec<(Vec<u8>, u64, u64)> = topk
                .counters
                .iter()
                .map(|c| (c.key.to_vec(), c.count, c.error))
                .collect();
            let want = scanned(&stream, capacity);
            prop_assert_eq!(&got, &want);
            let floor = if want.len() < capacity { 0 } else {
                want.iter().map(|c| c.1).min().unwrap_or(0)
            };
            prop_assert_eq!(topk.floor(), floor);
        }
    }

    #[test]
    fn one_key_taking_most_requests_is_found_among_many() {
        let mut hot = HotKeys::new(16, Duration::from_secs(1), Duration::ZERO);
        let mut now = Duration::ZERO;
        for i in 0..10_000u32 {
            now += Duration::from_micros(100);
            if i % 2 == 0 {
                hot.record(now, b"celebrity", i % 4 == 0);
            } else {
                hot.record(now, format!("user:{i}").as_bytes(), true);
            }
        }
        // One second of requests: 5,000 of the hot key, half of them writes.
        let found = hot.hot_keys(now, 3, 100);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(&found[0].key[..], b"celebrity");
        assert_eq!(found[0].slot, slot_of(b"celebrity"));
        assert!(found[0].per_sec > 4_000, "{found:?}");
        assert!(found[0].writes_per_sec > 2_000 && found[0].writes_per_sec <= 2_500);
        let slots = hot.hot_slots(now, 1, 0);
        assert_eq!(slots[0].slot, slot_of(b"celebrity"));
    }

    #[test]
    fn sampled_reads_pick_one_in_every_and_replay_alike() {
        let picks = |every: u64| {
            let sampler = ReadSampler::new(every);
            (0..80_000)
                .map(|_| sampler.next())
                .collect::<Vec<Option<u64>>>()
        };
        let eight = picks(8);
        let picked = eight.iter().flatten().count();
        // Within 5 % of one in eight, each weighed eight, and the same picks on a replay.
        assert!((9_500..=10_500).contains(&picked), "{picked} of 80,000");
        assert!(eight.iter().flatten().all(|&weight| weight == 8));
        assert_eq!(eight, picks(8));
        // No period of the sampler's length: a pipeline of eight commands repeated does not
        // put every pick on the same command.
        let mut by_place = [0usize; 8];
        for (at, pick) in eight.iter().enumerate() {
            if pick.is_some() {
                by_place[at % 8] += 1;
            }
        }
        assert!(by_place.iter().all(|&n| n > 1_000), "{by_place:?}");
        assert!(picks(1).iter().all(|&pick| pick == Some(1)));
        assert!(picks(0).iter().all(|&pick| pick == Some(1)));
    }

    #[test]
    fn a_hot_key_read_through_the_sampler_is_found_at_its_rate() {
        // One second of 10,000 reads: 2,000 of `celebrity`, the rest spread over 4,000 keys,
        // every read through one sampler as a node's are.
        let sampler = ReadSampler::new(8);
        let mut hot = HotKeys::new(64, Duration::from_secs(1), Duration::ZERO);
        let mut now = Duration::ZERO;
        for i in 0..10_000u32 {
            now += Duration::from_micros(100);
            let key = if i % 5 == 0 {
                b"celebrity".to_vec()
            } else {
                format!("user:{}", i % 4_000).into_bytes()
            };
            if let Some(weight) = sampler.next() {
                hot.record_weighted(now, &key, false, weight);
            }
        }
        let found = hot.hot_keys(now, 3, 1_000);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(&found[0].key[..], b"celebrity");
        // About 250 of its reads recorded, each for eight: within 20 % of the 2,000 (one
        // standard deviation is 6 %).
        assert!((1_600..=2_400).contains(&found[0].per_sec), "{found:?}");
        assert_eq!(found[0].writes_per_sec, 0);
        let slots: u64 = hot
            .hot_slots(now, 16_384, 0)
            .iter()
            .map(|s| s.per_sec)
            .sum();
        assert!(
            (9_000..=11_000).contains(&slots),
            "{slots} requests in the slots"
        );
    }

    #[test]
    fn counts_fade_out_of_the_sliding_window() {
        let window = Duration::from_secs(10);
        let mut hot = HotKeys::new(8, window, Duration::ZERO);
        for ms in 0..1_000u64 {
            hot.record(Duration::from_millis(ms * 10), b"k", true);
        }
        // The whole window holds 1,000 writes.
        assert_eq!(
            hot.recent_writes(Duration::from_millis(9_999), b"k"),
            1_000.0
        );
        // Halfway into the next window half of them are still within the last 10 s.
        let half = hot.recent_writes(Duration::from_secs(15), b"k");
        assert!((half - 500.0).abs() < 1.0, "{half}");
        // Two windows later nothing is left.
        assert_eq!(hot.recent_writes(Duration::from_secs(30), b"k"), 0.0);
        assert!(hot.hot_keys(Duration::from_secs(30), 8, 0).is_empty());
        assert!(hot.hot_slots(Duration::from_secs(30), 8, 0).is_empty());
    }

    #[test]
    fn keys_are_printed_printably() {
        assert_eq!(printable_key(b"user:1", 64), "user:1");
        assert_eq!(
            printable_key(b"a b\r\n',", 64),
            "a\\x20b\\x0d\\x0a\\x27\\x2c"
        );
        assert_eq!(
            printable_key(&[b'k'; 70], 64),
            format!("{}...", "k".repeat(64))
        );
    }

    #[test]
    fn a_key_that_inherited_a_counter_is_not_called_hot() {
        let mut topk = TopK::new(2);
        for _ in 0..100 {
            topk.record(b"a", 1);
            topk.record(b"b", 1);
        }
        topk.record(b"c", 1);
        // `c` took over a counter of 100: at most 101, certainly 1.
        let (upper, guaranteed) = topk.estimate(b"c").expect("counted");
        assert_eq!((upper, guaranteed), (101, 1));
        let mut hot = HotKeys::new(2, Duration::from_secs(1), Duration::ZERO);
        for _ in 0..100 {
            hot.record(Duration::ZERO, b"a", true);
            hot.record(Duration::ZERO, b"b", true);
        }
        hot.record(Duration::ZERO, b"c", true);
        assert!(hot.recent_writes(Duration::ZERO, b"c") <= 1.0);
    }
}
