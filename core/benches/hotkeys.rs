//! Times `TopK::record`, the hot-key summary every proxy and node feeds with each request's
//! keys, on the case that costs most: many distinct keys, so nearly every record evicts.
//!
//! `cargo bench -p larder-core --bench hotkeys` (release profile). 1,000,000 records of keys
//! drawn from 100,000, at the proxy's capacity (128) and a node's (64); beside it, in the same
//! run, the summary as first written (a scan of every counter for the smallest, a `BTreeMap`
//! index, a fresh key copy per eviction), and their ratio.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use larder_core::hotkeys::TopK;

const RECORDS: u64 = 1_000_000;

fn keys() -> Vec<Vec<u8>> {
    (0..RECORDS)
        .map(|i| format!("key:{:012}", i.wrapping_mul(2_654_435_761) % 100_000).into_bytes())
        .collect()
}

/// The summary before the heap: the reference the figures are a ratio to.
fn scanned(keys: &[Vec<u8>], capacity: usize) -> u64 {
    let mut counters: Vec<(Vec<u8>, u64, u64)> = Vec::new();
    let mut index: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for key in keys {
        if let Some(&at) = index.get(key) {
            counters[at].1 += 1;
            continue;
        }
        if counters.len() < capacity {
            index.insert(key.clone(), counters.len());
            counters.push((key.clone(), 1, 0));
            continue;
        }
        let at = (0..counters.len())
            .min_by_key(|&at| (counters[at].1, at))
            .expect("full");
        let smallest = counters[at].1;
        let old = std::mem::replace(&mut counters[at], (key.clone(), smallest + 1, smallest));
        index.remove(&old.0);
        index.insert(key.clone(), at);
    }
    counters.iter().map(|c| c.1).sum()
}

fn heap(keys: &[Vec<u8>], capacity: usize) -> u64 {
    let mut topk = TopK::new(capacity);
    for key in keys {
        topk.record(key, 1);
    }
    topk.total()
}

// A benchmark measures real time; nothing here runs in the simulator.
#[allow(clippy::disallowed_methods)]
fn best_of(runs: usize, mut f: impl FnMut() -> u64) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .min()
        .expect("runs")
}

fn main() {
    let keys = keys();
    println!("TopK::record, {RECORDS} records over 100,000 keys, best of 5 runs:");
    for capacity in [128, 64] {
        let new = best_of(5, || heap(&keys, capacity));
        let old = best_of(5, || scanned(&keys, capacity));
        let per = |d: Duration| d.as_nanos() as f64 / RECORDS as f64;
        println!(
            "  capacity {capacity:>3}: heap {:6.1} ns/record, scan {:6.1} ns/record, {:.1}x",
            per(new),
            per(old),
            per(old) / per(new)
        );
    }
}
