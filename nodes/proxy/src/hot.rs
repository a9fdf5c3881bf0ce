//! The proxy's hot keys: every keyed command's keys go through a sliding-window Space-Saving
//! summary ([`larder_core::hotkeys`]), which `INFO hotkeys` and the metrics read, and which
//! enforces the optional per-key write limit.
//!
//! **Why the write limit lives in the proxy.** A refused write must certainly not happen, or a
//! client told "refused" could find it applied (a linearizability violation the checker would
//! catch). The proxy refuses before the command reaches the cluster client: no session
//! sequence number is taken, nothing is sent, so no copy of it can ever apply. A leader could
//! not refuse as safely: a duplicated delivery of the same write could be refused while another
//! copy commits. The price: the limit counts one proxy's writes, so with `P` proxies a key may
//! take up to `P` times the limit. Group leaders report the cluster-wide view to the center
//! (`larder admin hotkeys`).
//!
//! Reads are counted, never refused.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use larder_core::hotkeys::{HotKey, HotKeys, HotSlot};
use larder_core::kv::Command;

/// The error code of a write refused by the per-key limit: nothing was done.
pub const HOTKEY_ERROR: &str = "HOTKEY";

/// Longest part of a key an error reply quotes.
const QUOTED_KEY_BYTES_MAX: usize = 64;

/// Hot-key detection and the per-key write limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HotKeyConfig {
    /// Keys counted per window. A key taking more than `1 / capacity` of the requests is
    /// always among them. Default 128 (a few KiB plus the keys).
    pub capacity: usize,
    /// The sliding window rates are measured over. Default 1 s: a limit reacts within a
    /// second, and a burst counts against the second that follows it.
    pub window: Duration,
    /// Writes per second one key may take through this proxy; `None` (the default): no limit.
    /// A write past it is answered `-HOTKEY …` and not executed.
    pub writes_per_sec_max: Option<u64>,
}

impl Default for HotKeyConfig {
    fn default() -> Self {
        HotKeyConfig {
            capacity: 128,
            window: Duration::from_secs(1),
            writes_per_sec_max: None,
        }
    }
}

/// The proxy's summary and limit.
#[derive(Debug)]
pub(crate) struct HotKeyGuard {
    config: HotKeyConfig,
    sketch: Mutex<HotKeys>,
    refused: AtomicU64,
}

impl HotKeyGuard {
    pub(crate) fn new(config: HotKeyConfig, now: Duration) -> Self {
        HotKeyGuard {
            sketch: Mutex::new(HotKeys::new(config.capacity, config.window, now)),
            config,
            refused: AtomicU64::new(0),
        }
    }

    /// Counts `command`'s keys at `now`, or refuses it: a write one of whose keys already took
    /// the limit's share of writes within the last window. A refused write is not counted (so
    /// a client writing faster than the limit still gets the limit's rate through).
    pub(crate) fn admit(&self, now: Duration, command: &Command) -> Result<(), String> {
        let keys = command.keys();
        if keys.is_empty() {
            return Ok(());
        }
        let write = command.is_write();
        let mut sketch = self.sketch.lock().expect("hot-key lock");
        if let (true, Some(max)) = (write, self.config.writes_per_sec_max) {
            let allowed = max as f64 * self.config.window.as_secs_f64();
            if let Some(key) = keys
                .iter()
                .find(|key| sketch.recent_writes(now, key) + 1.0 > allowed)
            {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return Err(format!(
                    "{HOTKEY_ERROR} writes to key '{}' exceed this proxy's limit of {max} per \
                     second; nothing was done, retry later",
                    quoted(key)
                ));
            }
        }
        for key in keys {
            sketch.record(now, key, write);
        }
        Ok(())
    }

    /// The hottest keys and slots at `now` (at most `n` of each, at least 1 request/s).
    pub(crate) fn hottest(&self, now: Duration, n: usize) -> (Vec<HotKey>, Vec<HotSlot>) {
        let mut sketch = self.sketch.lock().expect("hot-key lock");
        (sketch.hot_keys(now, n, 1), sketch.hot_slots(now, n, 1))
    }

    /// Writes refused by the limit so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn config(&self) -> &HotKeyConfig {
        &self.config
    }
}

/// A key as an error line or `INFO` shows it ([`larder_core::hotkeys::printable_key`]).
pub(crate) fn quoted(key: &[u8]) -> String {
    larder_core::hotkeys::printable_key(key, QUOTED_KEY_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn set(key: &str) -> Command {
        Command::parse(&[
            Bytes::from_static(b"SET"),
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::from_static(b"v"),
        ])
        .expect("SET parses")
    }

    fn get(key: &str) -> Command {
        Command::parse(&[
            Bytes::from_static(b"GET"),
            Bytes::copy_from_slice(key.as_bytes()),
        ])
        .expect("GET parses")
    }

    #[test]
    fn a_hot_key_gets_the_limit_and_other_keys_get_everything() {
        let guard = HotKeyGuard::new(
            HotKeyConfig {
                writes_per_sec_max: Some(100),
                ..HotKeyConfig::default()
            },
            Duration::ZERO,
        );
        let (mut hot_ok, mut hot_refused, mut cold_ok) = (0, 0, 0);
        // Ten seconds of 1,000 writes/s to one key and 1,000 writes/s spread over others,
        // and reads of the hot key, which are never refused.
        for ms in 0..10_000u64 {
            let now = Duration::from_millis(ms);
            match guard.admit(now, &set("hot")) {
                Ok(()) => hot_ok += 1,
                Err(text) => {
                    assert!(text.starts_with("HOTKEY writes to key 'hot'"), "{text}");
                    hot_refused += 1;
                }
            }
            guard.admit(now, &get("hot")).expect("reads pass");
            if guard.admit(now, &set(&format!("cold{}", ms % 500))).is_ok() {
                cold_ok += 1;
            }
        }
        // About 100 a second got through: the limit, not less.
        assert!((950..=1_050).contains(&hot_ok), "{hot_ok} admitted");
        assert_eq!(hot_ok + hot_refused, 10_000);
        assert_eq!(guard.refused(), hot_refused);
        assert_eq!(cold_ok, 10_000);
        let (keys, slots) = guard.hottest(Duration::from_millis(9_999), 3);
        assert_eq!(&keys[0].key[..], b"hot");
        assert!(keys[0].per_sec >= 1_000, "{keys:?}");
        assert_eq!(slots[0].slot, larder_core::slots::slot_of(b"hot"));
    }

    #[test]
    fn without_a_limit_nothing_is_refused() {
        let guard = HotKeyGuard::new(HotKeyConfig::default(), Duration::ZERO);
        for _ in 0..10_000 {
            guard.admit(Duration::ZERO, &set("hot")).expect("no limit");
        }
        assert_eq!(guard.refused(), 0);
    }
}
