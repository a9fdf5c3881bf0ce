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
//! Reads are counted (one in [`HotKeyConfig::sample_reads_every`], for that many), never
//! refused.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use larder_core::hotkeys::{HotKey, HotKeys, HotSlot, ReadSampler};
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
    /// How long a refused write's answer waits, so a client retrying at once is slowed to
    /// about one refusal per delay instead of taking the proxy's CPU with refusals (as a
    /// failed `AUTH` waits). Default 10 ms.
    pub refusal_delay: Duration,
    /// Requests per second (within the window) from which reads of a key are shared
    /// ([`crate::shared_read`]): equal reads arriving while one is fetched take the next fetch's
    /// answer. `None`: never shared. Default 500 (a key read that often has reads arriving
    /// within one another's round trip).
    pub share_reads_min_per_sec: Option<u64>,
    /// One read in how many is counted (each counted read stands for that many,
    /// [`ReadSampler`]); writes are always counted, one by one, so the write limit is exact.
    /// Default 8: counting every read of random keys was 5 % of the proxy's CPU under
    /// pipelined GETs. 1 counts every read.
    pub sample_reads_every: u64,
}

/// What [`HotKeyGuard::admit`] decided for a command it let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// Sent as it is.
    Alone,
    /// A read of a hot key: shared with equal reads ([`crate::shared_read`]).
    ShareRead,
}

impl Default for HotKeyConfig {
    fn default() -> Self {
        HotKeyConfig {
            capacity: 128,
            window: Duration::from_secs(1),
            writes_per_sec_max: None,
            refusal_delay: Duration::from_millis(10),
            share_reads_min_per_sec: Some(500),
            sample_reads_every: 8,
        }
    }
}

/// The proxy's summary and limit.
#[derive(Debug)]
pub(crate) struct HotKeyGuard {
    config: HotKeyConfig,
    sketch: Mutex<HotKeys>,
    reads: ReadSampler,
    refused: AtomicU64,
}

impl HotKeyGuard {
    pub(crate) fn new(config: HotKeyConfig, now: Duration) -> Self {
        HotKeyGuard {
            sketch: Mutex::new(HotKeys::new(config.capacity, config.window, now)),
            reads: ReadSampler::new(config.sample_reads_every),
            config,
            refused: AtomicU64::new(0),
        }
    }

    /// Counts `command`'s keys at `now`, or refuses it: a write one of whose keys already took
    /// the limit's share of writes within the last window. A refused write is not counted (so
    /// a client writing faster than the limit still gets the limit's rate through). A read
    /// whose first key took `share_reads_min_per_sec` requests within the window is to be
    /// shared.
    pub(crate) fn admit(&self, now: Duration, command: &Command) -> Result<Admitted, String> {
        let mut sketch = self.sketch.lock().expect("hot-key lock");
        self.admit_locked(&mut sketch, now, command)
    }

    /// [`HotKeyGuard::admit`] for each of a pipeline run's commands in turn, under one lock:
    /// the run is judged as if its commands came one by one, without one lock (contended
    /// between connections under pipelined load) per command.
    pub(crate) fn admit_all<'a>(
        &self,
        now: Duration,
        commands: impl IntoIterator<Item = &'a Command>,
    ) -> Vec<Result<Admitted, String>> {
        let mut sketch = self.sketch.lock().expect("hot-key lock");
        commands
            .into_iter()
            .map(|command| self.admit_locked(&mut sketch, now, command))
            .collect()
    }

    fn admit_locked(
        &self,
        sketch: &mut HotKeys,
        now: Duration,
        command: &Command,
    ) -> Result<Admitted, String> {
        let keys = command.keys();
        if keys.is_empty() {
            return Ok(Admitted::Alone);
        }
        let write = command.is_write();
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
        // A read is counted when the sampler picks it, for the reads it stands for.
        if let Some(weight) = self.reads.weight(write) {
            for key in keys.iter() {
                sketch.record_weighted(now, key, write, weight);
            }
        }
        match self.config.share_reads_min_per_sec {
            Some(min)
                if !write
                    && sketch.recent_requests(now, keys[0])
                        >= min as f64 * self.config.window.as_secs_f64() =>
            {
                Ok(Admitted::ShareRead)
            }
            _ => Ok(Admitted::Alone),
        }
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
pub(crate) mod tests {
    use super::*;
    use bytes::Bytes;

    /// `SET key v`, parsed.
    pub(crate) fn set(key: &str) -> Command {
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
                Ok(admitted) => {
                    assert_eq!(admitted, Admitted::Alone, "writes are never shared");
                    hot_ok += 1;
                }
                Err(text) => {
                    assert!(text.starts_with("HOTKEY writes to key 'hot'"), "{text}");
                    hot_refused += 1;
                }
            }
            // Reads of the hot key are shared once it took 500 requests within the window:
            // 200 in the first 100 ms (reads and admitted writes), then 1 a millisecond.
            let read = guard.admit(now, &get("hot")).expect("reads pass");
            if !(390..410).contains(&ms) {
                assert_eq!(read == Admitted::ShareRead, ms >= 400, "at {ms} ms");
            }
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

    #[test]
    fn reads_are_shared_only_from_the_threshold_and_never_when_it_is_off() {
        let off = HotKeyGuard::new(
            HotKeyConfig {
                share_reads_min_per_sec: None,
                ..HotKeyConfig::default()
            },
            Duration::ZERO,
        );
        // Every read counted, and one in eight (the default) for eight.
        for (every, least, most) in [(1, 1_490, 1_510), (8, 1_400, 1_600)] {
            let on = HotKeyGuard::new(
                HotKeyConfig {
                    sample_reads_every: every,
                    ..HotKeyConfig::default()
                },
                Duration::ZERO,
            );
            let mut shared = 0;
            for ms in 0..2_000u64 {
                let now = Duration::from_millis(ms);
                assert_eq!(off.admit(now, &get("k")), Ok(Admitted::Alone));
                // 1,000 reads a second: shared from the 500th within the window.
                if on.admit(now, &get("k")) == Ok(Admitted::ShareRead) {
                    shared += 1;
                }
            }
            assert!(
                (least..=most).contains(&shared),
                "{shared} shared counting one read in {every}"
            );
        }
    }
}
