//! A leader's hot keys: the keys of every request a node serves as a group leader (every write,
//! one read in [`READ_SAMPLE_EVERY`] for that many) go through a sliding-window Space-Saving
//! summary ([`larder_core::hotkeys`]); the heartbeat carries the
//! hottest to the center ([`HotReport`]), where `larder admin hotkeys` reads them.
//!
//! The leader's view is the cluster's: every write and every linearizable read of a group
//! passes its leader, whichever proxy or client sent it. Nothing here changes what a request
//! does; the per-key write limit is the proxy's (`larder_proxy::hot` says why).

use std::time::Duration;

use larder_core::env::{Clock, Env};
use larder_core::hotkeys::HotKeys;
use larder_core::kv::Command;
use larder_protocol::{HOT_KEY_BYTES_MAX, HOT_REPORTED_MAX, HotReport};

use crate::node::StorageNode;

/// Keys counted per window: a key taking more than 1/64 of a node's led requests is always
/// among them.
const CAPACITY: usize = 64;

/// One read in how many a leader counts, for that many (`larder_core::hotkeys::ReadSampler`);
/// writes are all counted. Counting every read of random keys was 4 % of a node's CPU under
/// pipelined GETs, and the report needs rates, not exact counts.
pub(crate) const READ_SAMPLE_EVERY: u64 = 8;

/// The window rates are measured over.
pub const WINDOW: Duration = Duration::from_secs(1);

/// A fresh summary starting at `now`.
pub(crate) fn sketch(now: Duration) -> HotKeys {
    HotKeys::new(CAPACITY, WINDOW, now)
}

impl<E: Env> StorageNode<E> {
    /// Counts `command`'s keys, served as a group's leader (a follower's requests are answered
    /// `NotLeader` and counted where they land next).
    pub(crate) fn count_keys(&self, command: &Command) {
        let keys = command.keys();
        if keys.is_empty() {
            return;
        }
        let write = command.is_write();
        // A read the sampler passes over takes no lock.
        let Some(weight) = self.hot_reads.weight(write) else {
            return;
        };
        let now = self.env.clock().now();
        let mut hot = self.hot.lock().expect("hot-key lock");
        for key in keys {
            hot.record_weighted(now, key, write, weight);
        }
    }

    /// The hottest keys and slots now, for the heartbeat: at least one request per second,
    /// keys cut to [`HOT_KEY_BYTES_MAX`].
    pub fn hot_report(&self) -> HotReport {
        let now = self.env.clock().now();
        report(&mut self.hot.lock().expect("hot-key lock"), now)
    }
}

/// `sketch`'s hottest keys and slots at `now`, as a heartbeat carries them: at most
/// [`HOT_REPORTED_MAX`] of each, at least one request per second, keys cut to
/// [`HOT_KEY_BYTES_MAX`].
fn report(sketch: &mut HotKeys, now: Duration) -> HotReport {
    let mut keys = sketch.hot_keys(now, HOT_REPORTED_MAX, 1);
    for hot in &mut keys {
        if hot.key.len() > HOT_KEY_BYTES_MAX {
            hot.key.truncate(HOT_KEY_BYTES_MAX);
        }
    }
    HotReport {
        keys,
        slots: sketch.hot_slots(now, HOT_REPORTED_MAX, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_holds_the_hottest_few_with_long_keys_cut() {
        let mut hot = sketch(Duration::ZERO);
        let long = vec![b'k'; 4 * HOT_KEY_BYTES_MAX];
        // The long key hottest, then twenty others hotter the lower their number.
        for ms in 0..1_000u64 {
            let now = Duration::from_millis(ms);
            hot.record(now, &long, true);
            for other in 0..20u64 {
                if ms % (other + 2) == 0 {
                    hot.record(now, format!("key{other}").as_bytes(), false);
                }
            }
        }
        let report = report(&mut hot, Duration::from_millis(999));
        assert_eq!(report.keys.len(), HOT_REPORTED_MAX);
        assert_eq!(report.slots.len(), HOT_REPORTED_MAX);
        assert_eq!(&report.keys[0].key[..], &long[..HOT_KEY_BYTES_MAX]);
        assert!(report.keys.iter().all(|k| k.key.len() <= HOT_KEY_BYTES_MAX));
        assert_eq!(&report.keys[1].key[..], b"key0");
    }
}
