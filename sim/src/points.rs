//! The simulator's fault-point hook ([`PointHook`]): every simulated storage process gets one.
//! It counts the points each process passes (for coverage) and acts on the points a plan armed
//! (`Fault::CrashAtPoint`, `Fault::DelayAtPoint`).
//!
//! A crash at a point is a power failure at that instant: the process's disk completes no sync
//! from then on ([`SimDisk::freeze_syncs`]), the process keeps running for `after` (so a reply
//! it was about to send goes out), then the harness crashes it and every unsynced write is
//! lost. A store that acknowledges only what it synced loses nothing; one that acknowledged an
//! unsynced vote, log entry or marker is caught in exactly the window it needs.
//!
//! The hook also audits storage at the points where a mistake shows on disk before any client
//! could notice (`larder_storage::raft::audit`): every vote durable when the log store says it
//! saved one; every appended log entry durable when the log store reports it flushed; the log
//! in order after the first append that follows a truncation. A failed
//! audit is a violation of the run.

// tokio's time here is turmoil's simulated time (this module is the simulated environment).
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_core::env::{FaultPoint, FaultPoints, PointDelay, PointHook, log_key, log_key_index};
use larder_core::{GroupId, NodeId};

use crate::disk::SimDisk;
use crate::trace::{Trace, sim_now};

/// What an armed point does to the process that passes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointAction {
    /// Power fails at the point; the crash follows `after` later; restart `down` after that.
    /// Fires once.
    Crash { after: Duration, down: Duration },
    /// Every pass waits this long, until disarmed.
    Delay(Duration),
}

/// A point a plan armed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Arming {
    point: FaultPoint,
    /// Only this process's passes, or anyone's.
    node: Option<NodeId>,
    action: PointAction,
}

/// A crash a point asked for: the harness carries it out at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointCrash {
    pub node: NodeId,
    pub point: FaultPoint,
    pub at: Duration,
    pub down: Duration,
}

#[derive(Debug, Default)]
struct Table {
    hits: BTreeMap<FaultPoint, u64>,
    armed: Vec<Arming>,
    crashes: Vec<PointCrash>,
    /// Storage audits that failed at a point: (process, point, what).
    defects: Vec<(NodeId, FaultPoint, String)>,
}

/// The run's fault points: shared by every process's hook and the harness.
#[derive(Debug, Clone, Default)]
pub struct PointTable(Arc<Mutex<Table>>);

impl PointTable {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.0.lock().expect("point table lock")
    }

    /// Arms `point` for `node`'s passes (anyone's with `None`).
    pub fn arm(&self, point: FaultPoint, node: Option<NodeId>, action: PointAction) {
        self.table().armed.push(Arming {
            point,
            node,
            action,
        });
    }

    /// Disarms every point (crashes already asked for still happen).
    pub fn disarm_all(&self) {
        self.table().armed.clear();
    }

    /// Takes the crashes due at `now`, in the order they were asked for.
    pub fn take_due_crashes(&self, now: Duration) -> Vec<PointCrash> {
        let mut table = self.table();
        let (due, later) = std::mem::take(&mut table.crashes)
            .into_iter()
            .partition(|crash| crash.at <= now);
        table.crashes = later;
        due
    }

    /// Audits that failed at points so far.
    pub fn defects(&self) -> Vec<(NodeId, FaultPoint, String)> {
        self.table().defects.clone()
    }

    /// Passes of each point so far.
    pub fn hits(&self) -> BTreeMap<FaultPoint, u64> {
        self.table().hits.clone()
    }

    /// The hook for process `node`, whose disk is `disk`.
    pub fn hook(&self, node: NodeId, disk: SimDisk, trace: Trace) -> FaultPoints {
        self.hook_of(node, Some(disk), trace)
    }

    /// The hook for process `node`, which has no disk (a proxy): its points are counted and
    /// delayed as armed; nothing is audited, and a crash arming freezes no sync.
    pub fn diskless_hook(&self, node: NodeId, trace: Trace) -> FaultPoints {
        self.hook_of(node, None, trace)
    }

    fn hook_of(&self, node: NodeId, disk: Option<SimDisk>, trace: Trace) -> FaultPoints {
        FaultPoints::hooked(Arc::new(NodeHook {
            node,
            table: self.clone(),
            disk,
            trace,
            truncated: AtomicBool::new(false),
        }))
    }
}

struct NodeHook {
    node: NodeId,
    table: PointTable,
    /// The process's disk, audited at the storage points (`None`: a process without one).
    disk: Option<SimDisk>,
    trace: Trace,
    /// A log was truncated and nothing appended since: the next append is audited.
    truncated: AtomicBool,
}

impl NodeHook {
    /// Raft answers a vote request only after the vote is on stable storage: at the point
    /// where the log store says it saved one, every vote on the disk must be durable. (While
    /// power is failing a vote write may be stuck unsynced on purpose: not audited then.)
    fn audit_votes(&self) -> Option<String> {
        let disk = self.disk.as_ref()?;
        if disk.is_frozen() {
            return None;
        }
        let keys = disk.undurable_keys(larder_core::env::Space::Meta, VOTE_PREFIX);
        (!keys.is_empty()).then(|| format!("vote records not durable when saved: {keys:?}"))
    }

    /// After a truncation, the leader's entries are appended where the conflicting suffix
    /// was: the whole log must then still be in order (no stale entry of an older term left
    /// behind them). Audited once per truncation, so the cost stays with the rare path.
    fn audit_log_after_truncation(&self, point: FaultPoint) -> Option<String> {
        match point {
            FaultPoint::LogTruncated => {
                self.truncated.store(true, Ordering::Relaxed);
                None
            }
            FaultPoint::LogAppended if self.truncated.swap(false, Ordering::Relaxed) => {
                let rows = self
                    .disk
                    .as_ref()?
                    .current_rows(larder_core::env::Space::Log);
                let defects = larder_storage::raft::audit::audit_log(rows);
                (!defects.is_empty()).then(|| {
                    let texts: Vec<String> = defects.iter().map(ToString::to_string).collect();
                    format!("after a truncation: {}", texts.join("; "))
                })
            }
            _ => None,
        }
    }
}

/// The prefix of every vote record (`larder_core::env::vote_key`).
const VOTE_PREFIX: &[u8] = b"vote/";

impl PointHook for NodeHook {
    /// Raft counts a follower's entries toward a quorum once it reports them flushed: at that
    /// point they must be durable. (While power is failing a sync may be stuck on purpose: not
    /// audited then.)
    fn log_appended(&self, group: GroupId, first: u64, last: u64) {
        let Some(disk) = &self.disk else {
            return;
        };
        if disk.is_frozen() {
            return;
        }
        let keys = disk.undurable_keys_between(
            larder_core::env::Space::Log,
            &log_key(group, first),
            &log_key(group, last),
        );
        if keys.is_empty() {
            return;
        }
        let indexes: Vec<u64> = keys.iter().filter_map(|key| log_key_index(key)).collect();
        let defect = format!(
            "group {group} log entries {first}..={last} reported flushed, not durable: {indexes:?}"
        );
        self.table
            .table()
            .defects
            .push((self.node, FaultPoint::LogAppended, defect));
    }

    fn hit(&self, point: FaultPoint) -> Option<PointDelay> {
        let defect = match point {
            FaultPoint::VoteSaved => self.audit_votes(),
            _ => self.audit_log_after_truncation(point),
        };
        let mut table = self.table.table();
        *table.hits.entry(point).or_insert(0) += 1;
        if let Some(defect) = defect {
            table.defects.push((self.node, point, defect));
        }
        let index = table
            .armed
            .iter()
            .position(|a| a.point == point && a.node.is_none_or(|node| node == self.node))?;
        match table.armed[index].action {
            PointAction::Crash { after, down } => {
                table.armed.remove(index);
                let now = sim_now();
                table.crashes.push(PointCrash {
                    node: self.node,
                    point,
                    at: now + after,
                    down,
                });
                drop(table);
                crate::trace_event!(
                    self.trace,
                    now,
                    "sim",
                    "n{} loses power at {point}, crash in {after:?}",
                    self.node
                );
                if let Some(disk) = &self.disk {
                    disk.freeze_syncs();
                }
                None
            }
            PointAction::Delay(delay) => Some(Box::pin(tokio::time::sleep(delay))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_arming_fires_once_for_the_first_process_to_pass() {
        let table = PointTable::default();
        table.arm(
            FaultPoint::VoteSaved,
            None,
            PointAction::Crash {
                after: Duration::from_millis(5),
                down: Duration::from_secs(1),
            },
        );
        let trace = Trace::default();
        let hook_2 = table.hook(2, SimDisk::new(2), trace.clone());
        let hook_3 = table.hook(3, SimDisk::new(3), trace);
        futures::executor::block_on(async {
            hook_2.hit(FaultPoint::LogAppended).await;
            hook_3.hit(FaultPoint::VoteSaved).await;
            hook_2.hit(FaultPoint::VoteSaved).await;
        });
        let hits = table.hits();
        assert_eq!(hits[&FaultPoint::VoteSaved], 2);
        assert_eq!(hits[&FaultPoint::LogAppended], 1);
        assert!(
            table.take_due_crashes(Duration::ZERO).is_empty(),
            "not due yet"
        );
        let due = table.take_due_crashes(Duration::from_millis(5));
        assert_eq!(due.len(), 1, "fires once: {due:?}");
        assert_eq!((due[0].node, due[0].point), (3, FaultPoint::VoteSaved));
        assert!(table.take_due_crashes(Duration::from_secs(9)).is_empty());
    }

    #[test]
    fn a_vote_saved_without_a_sync_is_a_defect_at_its_point() {
        use larder_core::env::{Disk, Space, WriteBatch, vote_key};
        let table = PointTable::default();
        let disk = SimDisk::new(7);
        let hook = table.hook(7, disk.clone(), Trace::default());
        futures::executor::block_on(async {
            disk.save_vote(3, bytes::Bytes::from_static(b"v1"))
                .await
                .unwrap();
            hook.hit(FaultPoint::VoteSaved).await;
            assert!(table.defects().is_empty(), "a synced vote is fine");
            let mut batch = WriteBatch::new();
            batch.put(Space::Meta, vote_key(3), bytes::Bytes::from_static(b"v2"));
            disk.write(batch, false).await.unwrap();
            hook.hit(FaultPoint::VoteSaved).await;
        });
        let defects = table.defects();
        assert_eq!(defects.len(), 1, "{defects:?}");
        assert_eq!((defects[0].0, defects[0].1), (7, FaultPoint::VoteSaved));
    }

    #[test]
    fn log_entries_reported_flushed_without_a_sync_are_a_defect_at_their_point() {
        use bytes::Bytes;
        use larder_core::env::Disk;
        let table = PointTable::default();
        let disk = SimDisk::new(5);
        let hook = table.hook(5, disk.clone(), Trace::default());
        let rows = |from: u64| {
            (from..from + 3)
                .map(|i| (i, Bytes::from(vec![i as u8])))
                .collect()
        };
        futures::executor::block_on(async {
            disk.log_append(2, rows(1), true).await.unwrap();
            hook.log_appended(2, 1, 3).await;
            // Another group's unsynced entries are not group 2's concern, nor its own later ones.
            disk.log_append(9, rows(1), false).await.unwrap();
            disk.log_append(2, rows(4), false).await.unwrap();
            hook.log_appended(2, 1, 3).await;
            assert!(table.defects().is_empty(), "{:?}", table.defects());
            hook.log_appended(2, 4, 6).await;
        });
        let defects = table.defects();
        assert_eq!(defects.len(), 1, "{defects:?}");
        assert_eq!((defects[0].0, defects[0].1), (5, FaultPoint::LogAppended));
        assert!(defects[0].2.contains("[4, 5, 6]"), "{}", defects[0].2);
        assert_eq!(table.hits()[&FaultPoint::LogAppended], 3);
    }

    #[test]
    fn a_node_arming_ignores_other_processes() {
        let table = PointTable::default();
        table.arm(
            FaultPoint::LogTruncated,
            Some(4),
            PointAction::Crash {
                after: Duration::ZERO,
                down: Duration::ZERO,
            },
        );
        let trace = Trace::default();
        futures::executor::block_on(async {
            table
                .hook(1, SimDisk::new(1), trace.clone())
                .hit(FaultPoint::LogTruncated)
                .await;
        });
        assert!(table.take_due_crashes(Duration::from_secs(1)).is_empty());
        futures::executor::block_on(async {
            table
                .hook(4, SimDisk::new(4), trace)
                .hit(FaultPoint::LogTruncated)
                .await;
        });
        assert_eq!(table.take_due_crashes(Duration::from_secs(1))[0].node, 4);
    }
}
