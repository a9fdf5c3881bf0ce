//! `SimDisk`: the [`Disk`] trait in memory, with crash semantics and disk faults.
//!
//! Fault contract: writes without `sync` sit in an ordered queue of unsynced batches; a crash
//! keeps a seeded *prefix* of that queue (possibly none of it) and drops the rest, as an engine
//! journal that got partway would. A synced batch, and everything before it, always survives.
//! Batches are atomic, as fjall's are (one journal record per batch); `tear_last_batch` can
//! also keep a prefix of the first dropped batch's operations, for code that claims not to rely
//! on atomic batches. Faults: seeded latency per operation (slow disk), `EIO` at a seeded rate,
//! a capacity beyond which writes fail with "disk full", and bits flipped at rest in a record
//! (`corrupt`), which the node's record checksums must catch. An `EIO` on a synced write is a
//! failed fsync, modelled as Linux and fjall have them: the unsynced batches are lost for good
//! and every later write fails until the crash (`fail_sync`). A healthy node must never lose a
//! synced write, and must recover to a consistent state from whatever prefix survived.

// tokio's time here is turmoil's simulated time (this module is the simulated environment),
// so the ban on tokio::time, which protects code that must take time from `Clock`, is lifted.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder_core::env::{Disk, DiskError, DiskView, Rng, SeededRng, Space, WriteBatch, WriteOp};

use crate::trace::{Trace, sim_now};

type Tables = [BTreeMap<Bytes, Bytes>; 4];

fn index(space: Space) -> usize {
    match space {
        Space::Log => 0,
        Space::State => 1,
        Space::Meta => 2,
        Space::Elements => 3,
    }
}

fn apply(tables: &mut Tables, ops: &[WriteOp]) {
    for op in ops {
        match op {
            WriteOp::Put { space, key, value } => {
                tables[index(*space)].insert(key.clone(), value.clone());
            }
            WriteOp::Delete { space, key } => {
                tables[index(*space)].remove(key);
            }
        }
    }
}

/// Counters of what the disk did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub writes: u64,
    pub syncs: u64,
    pub reads: u64,
    pub bytes_written: u64,
    pub crashes: u64,
    /// Unsynced batches dropped by crashes.
    pub batches_lost: u64,
    pub io_errors: u64,
    pub full_errors: u64,
    /// Records corrupted at rest ([`SimDisk::corrupt`]).
    pub corrupted: u64,
}

struct DiskState {
    durable: Tables,
    /// What reads see: `durable` with every unsynced batch applied.
    current: Tables,
    unsynced: VecDeque<WriteBatch>,
    rng: SeededRng,
    latency: (Duration, Duration),
    error_rate: f64,
    /// The next synced write fails (see [`SimDisk::fail_next_sync`]).
    fail_next_sync: bool,
    capacity_bytes: Option<u64>,
    tear_last_batch: bool,
    /// Power is failing (a fault point fired): no sync completes any more, until the crash.
    frozen: bool,
    /// A sync failed ([`SimDisk::fail_sync`]): every write fails until the crash.
    sync_failed: bool,
    stats: DiskStats,
    trace: Option<(Trace, String)>,
}

impl DiskState {
    fn used_bytes(&self) -> u64 {
        self.current
            .iter()
            .flat_map(|table| table.iter())
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum()
    }

    fn trace(&self, event: std::fmt::Arguments<'_>) {
        if let Some((trace, actor)) = &self.trace {
            trace.record(sim_now(), actor, event);
        }
    }
}

/// One node's disk. Cloning shares it: the harness keeps a clone so the disk outlives the
/// node's crashes, and crashes it when the node crashes.
#[derive(Clone)]
pub struct SimDisk(Arc<Mutex<DiskState>>);

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDisk")
            .field("stats", &self.stats())
            .finish()
    }
}

impl SimDisk {
    /// An empty, healthy disk whose fault draws come from `seed`.
    pub fn new(seed: u64) -> Self {
        SimDisk(Arc::new(Mutex::new(DiskState {
            durable: Default::default(),
            current: Default::default(),
            unsynced: VecDeque::new(),
            rng: SeededRng::new(seed),
            latency: (Duration::ZERO, Duration::ZERO),
            error_rate: 0.0,
            fail_next_sync: false,
            capacity_bytes: None,
            tear_last_batch: false,
            frozen: false,
            sync_failed: false,
            stats: DiskStats::default(),
            trace: None,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.0.lock().expect("disk lock")
    }

    /// Records writes, syncs and crashes on `trace` as `actor`.
    pub fn set_trace(&self, trace: Trace, actor: String) {
        self.state().trace = Some((trace, actor));
    }

    /// Every operation takes a seeded time in `[min, max]` (slow disk). `(0, 0)` heals.
    pub fn set_latency(&self, min: Duration, max: Duration) {
        self.state().latency = (min, max.max(min));
    }

    /// Reads and synced writes fail with `EIO` at this rate (0 heals). Unsynced writes do not:
    /// they only reach the page cache (fjall's journal buffer and memtable), and a write-back
    /// error shows at the next sync, as on Linux.
    pub fn set_error_rate(&self, rate: f64) {
        self.state().error_rate = rate;
    }

    /// The next synced write fails with `EIO`, whatever the error rate: a disk that starts to
    /// fail shows it first at a write-back, which is where a store that ignores a failed sync
    /// loses acknowledged writes. Healing the disk clears it.
    pub fn fail_next_sync(&self, fail: bool) {
        self.state().fail_next_sync = fail;
    }

    /// Writes that would take the disk past `capacity` bytes fail (`None` heals).
    pub fn set_capacity_bytes(&self, capacity: Option<u64>) {
        self.state().capacity_bytes = capacity;
    }

    /// Every record of `space` as reads see it now, in key order (for audits; no faults, no
    /// latency, not counted).
    pub fn current_rows(&self, space: Space) -> Vec<(Bytes, Bytes)> {
        let state = self.state();
        state.current[index(space)]
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The keys of `space` from `first` to `last` (inclusive) whose current value a crash now
    /// could lose (it differs from the durable one), for audits.
    pub fn undurable_keys_between(&self, space: Space, first: &[u8], last: &[u8]) -> Vec<Bytes> {
        let state = self.state();
        let (current, durable) = (&state.current[index(space)], &state.durable[index(space)]);
        current
            .range::<[u8], _>((Bound::Included(first), Bound::Included(last)))
            .filter(|(key, value)| durable.get(*key) != Some(*value))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The keys of `space` starting with `prefix` whose current value a crash now could lose
    /// (it differs from the durable one), for audits.
    pub fn undurable_keys(&self, space: Space, prefix: &[u8]) -> Vec<Bytes> {
        let state = self.state();
        let (current, durable) = (&state.current[index(space)], &state.durable[index(space)]);
        current
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter(|(key, value)| durable.get(*key) != Some(*value))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Whether power is failing (see [`SimDisk::freeze_syncs`]).
    pub fn is_frozen(&self) -> bool {
        self.state().frozen
    }

    /// A healthy copy of this disk holding what reads see now, as if synced: what a clean
    /// restart would open (for audits).
    pub fn fork(&self) -> SimDisk {
        let state = self.state();
        let copy = SimDisk::new(0);
        {
            let mut inner = copy.state();
            inner.durable = state.current.clone();
            inner.current = state.current.clone();
        }
        copy
    }

    /// The disk is full from now on: every write that adds bytes fails (`None` capacity
    /// heals, see [`SimDisk::set_capacity_bytes`]).
    pub fn fill_up(&self) {
        let mut state = self.state();
        let used = state.used_bytes();
        state.capacity_bytes = Some(used);
        state.trace(format_args!("disk full at {used}B"));
    }

    /// A bit flips at rest in one record of `space`: the `pick`-th (modulo their number) of
    /// the records reads see now, at a bit chosen by `bit` (modulo its length). Both the
    /// durable copy and what reads see change, as they would on a platter; a later write of
    /// the key replaces it. Returns the key, or `None` with no record to corrupt.
    pub fn corrupt(&self, space: Space, pick: u64, bit: u64) -> Option<Bytes> {
        let mut state = self.state();
        let state = &mut *state;
        let table = &state.current[index(space)];
        if table.is_empty() {
            return None;
        }
        let (key, value) = table
            .iter()
            .nth((pick % table.len() as u64) as usize)
            .map(|(k, v)| (k.clone(), v.clone()))?;
        if value.is_empty() {
            return None;
        }
        let bit = bit % (value.len() as u64 * 8);
        let mut flipped = value.to_vec();
        flipped[(bit / 8) as usize] ^= 1 << (bit % 8);
        let flipped = Bytes::from(flipped);
        if state.durable[index(space)].get(&key) == Some(&value) {
            state.durable[index(space)].insert(key.clone(), flipped.clone());
        }
        state.current[index(space)].insert(key.clone(), flipped);
        state.stats.corrupted += 1;
        state.trace(format_args!(
            "disk corrupt {} record {key:?} bit {bit}",
            space.name()
        ));
        Some(key)
    }

    /// See the module doc: lets a crash keep part of a batch.
    pub fn set_tear_last_batch(&self, tear: bool) {
        self.state().tear_last_batch = tear;
    }

    pub fn stats(&self) -> DiskStats {
        self.state().stats.clone()
    }

    /// Number of unsynced batches a crash now could lose.
    pub fn unsynced_batches(&self) -> usize {
        self.state().unsynced.len()
    }

    /// Power is failing: from now on no sync completes (a write asking for one is applied but
    /// never returns), so nothing written from this instant on becomes durable before the
    /// crash that follows. Unsynced writes still land, as in a page cache.
    pub fn freeze_syncs(&self) {
        let mut state = self.state();
        state.frozen = true;
        state.trace(format_args!("disk syncs frozen"));
    }

    /// The process died: keep the durable data and a seeded prefix of the unsynced batches.
    pub fn crash(&self, rng: &mut impl Rng) {
        self.crash_keeping(rng, false);
    }

    /// The machine lost power: keep the durable data and nothing else.
    pub fn power_loss(&self, rng: &mut impl Rng) {
        self.crash_keeping(rng, true);
    }

    fn crash_keeping(&self, rng: &mut impl Rng, power_loss: bool) {
        let mut state = self.state();
        let state = &mut *state;
        state.frozen = false;
        // The restart opens the disk again (`fail_sync`).
        state.sync_failed = false;
        let pending = state.unsynced.len();
        let kept = if power_loss {
            0
        } else {
            rng.below(pending as u64 + 1) as usize
        };
        for batch in state.unsynced.drain(..kept) {
            apply(&mut state.durable, &batch.ops);
        }
        let mut torn_ops = 0;
        if state.tear_last_batch
            && let Some(first_lost) = state.unsynced.front()
        {
            torn_ops = rng.below(first_lost.ops.len() as u64 + 1) as usize;
            let ops = first_lost.ops[..torn_ops].to_vec();
            apply(&mut state.durable, &ops);
        }
        let lost = state.unsynced.len();
        state.unsynced.clear();
        state.current = state.durable.clone();
        state.stats.crashes += 1;
        state.stats.batches_lost += lost as u64;
        let how = if power_loss { "power loss" } else { "crash" };
        state.trace(format_args!(
            "disk {how}: kept {kept} of {pending} unsynced batches, tore {torn_ops} ops"
        ));
    }

    /// A write's effect; true if it asked for a sync that, with power failing, never comes.
    fn write_now(&self, batch: WriteBatch, sync: bool) -> Result<bool, DiskError> {
        let mut state = self.state();
        let state = &mut *state;
        if let Some(capacity) = state.capacity_bytes {
            let used = state.used_bytes();
            if used + batch.size_bytes() as u64 > capacity {
                state.stats.full_errors += 1;
                return Err(DiskError::Full {
                    used_bytes: used,
                    capacity_bytes: capacity,
                });
            }
        }
        apply(&mut state.current, &batch.ops);
        state.stats.writes += 1;
        state.stats.bytes_written += batch.size_bytes() as u64;
        state.trace(format_args!(
            "disk write {} ops {}B sync={sync}",
            batch.len(),
            batch.size_bytes()
        ));
        state.unsynced.push_back(batch);
        if sync && state.frozen {
            return Ok(true);
        }
        if sync {
            for batch in state.unsynced.drain(..) {
                apply(&mut state.durable, &batch.ops);
            }
            state.stats.syncs += 1;
        }
        Ok(false)
    }

    /// A sync failed (an injected EIO on a synced write), as Linux fails an fsync and as fjall
    /// answers one. Linux: the writes the sync was to make durable never will be (writeback
    /// marks their pages clean; reads still see them until the crash). fjall: the database is
    /// poisoned, every later write fails (`fjall::Error::Poisoned`) until it is opened again.
    /// So here every write fails until the crash, and the crash keeps none of the unsynced
    /// batches.
    fn fail_sync(&self) {
        let mut state = self.state();
        let state = &mut *state;
        let lost = state.unsynced.len();
        state.unsynced.clear();
        state.sync_failed = true;
        state.stats.batches_lost += lost as u64;
        state.trace(format_args!(
            "disk sync failed: {lost} unsynced batches lost, writes fail until the crash"
        ));
    }

    /// Applies the latency and (if it `can_fail`) error faults to one operation.
    async fn fault(&self, what: &str, can_fail: bool) -> Result<(), DiskError> {
        let delay = {
            let mut state = self.state();
            let (min, max) = state.latency;
            let delay = if max.is_zero() {
                Duration::ZERO
            } else {
                let span = (max - min).as_micros() as u64;
                min + Duration::from_micros(state.rng.range(0, span + 1))
            };
            let rate = if can_fail { state.error_rate } else { 0.0 };
            if state.rng.chance(rate) {
                state.stats.io_errors += 1;
                state.trace(format_args!("disk EIO on {what}"));
                return Err(DiskError::Io {
                    reason: format!("injected EIO on {what}"),
                });
            }
            delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }
}

/// A point-in-time view of a [`SimDisk`]: a copy of what reads saw when it was taken. Its
/// reads take the disk's latency and errors, as the disk's own do.
pub struct SimView {
    disk: SimDisk,
    tables: Arc<Tables>,
}

impl DiskView for SimView {
    async fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, DiskError> {
        self.disk.fault("scan", true).await?;
        self.disk.state().stats.reads += 1;
        Ok(scan_table(&self.tables[index(space)], start, end, limit))
    }
}

fn scan_table(
    table: &BTreeMap<Bytes, Bytes>,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
) -> Vec<(Bytes, Bytes)> {
    let upper = match end {
        Some(end) if end <= start => return Vec::new(),
        Some(end) => Bound::Excluded(end),
        None => Bound::Unbounded,
    };
    table
        .range::<[u8], _>((Bound::Included(start), upper))
        .take(limit)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

impl Disk for SimDisk {
    type View = SimView;

    fn view(&self) -> SimView {
        SimView {
            disk: self.clone(),
            tables: Arc::new(self.state().current.clone()),
        }
    }

    async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), DiskError> {
        if self.state().sync_failed {
            return Err(DiskError::Io {
                reason: "poisoned: an earlier sync failed (restart to recover)".into(),
            });
        }
        let failing = sync && {
            let mut state = self.state();
            let failing = std::mem::take(&mut state.fail_next_sync);
            if failing {
                state.stats.io_errors += 1;
                state.trace(format_args!(
                    "disk EIO on sync (the first of a failing disk)"
                ));
            }
            failing
        };
        if failing {
            self.fail_sync();
            return Err(DiskError::Io {
                reason: "injected EIO on sync".into(),
            });
        }
        if let Err(error) = self.fault("sync", sync).await {
            self.fail_sync();
            return Err(error);
        }
        if self.write_now(batch, sync)? {
            // Power is failing: this sync never completes; the crash comes first.
            std::future::pending::<()>().await;
        }
        Ok(())
    }

    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>, DiskError> {
        self.fault("get", true).await?;
        let mut state = self.state();
        state.stats.reads += 1;
        Ok(state.current[index(space)].get(key).cloned())
    }

    async fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, DiskError> {
        self.fault("scan", true).await?;
        let mut state = self.state();
        state.stats.reads += 1;
        Ok(scan_table(&state.current[index(space)], start, end, limit))
    }

    async fn last(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<(Bytes, Bytes)>, DiskError> {
        self.fault("last", true).await?;
        if end <= start {
            return Ok(None);
        }
        let mut state = self.state();
        state.stats.reads += 1;
        let table = &state.current[index(space)];
        Ok(table
            .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone())))
    }
}
