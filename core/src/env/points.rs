//! Fault points: named places on the paths where bugs live, where the simulator can crash or
//! delay a process (FoundationDB's BUGGIFY idea, reached through the environment).
//!
//! Code on such a path calls [`FaultPoints::hit`] with the point's name. In the real
//! environment the handle is empty and `hit` is one branch on `None`; the simulator installs a
//! hook per process that counts hits (for coverage) and, when a plan armed the point, freezes
//! the disk right there and crashes the process a moment later, or delays it.
//!
//! A point sits *after* the step it names and *before* the effect that others can observe
//! (a reply, an acknowledgement): that is the window where a missing sync or a missing marker
//! turns into a lost acknowledged write.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::GroupId;

/// One named fault point. Serialized as its snake_case name, and ordered by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPoint {
    /// Storage: a vote is written; openraft has not answered the candidate yet.
    VoteSaved,
    /// Storage: log entries are written; the leader has not been told (the ack).
    LogAppended,
    /// Storage: a conflicting log suffix was truncated; the new leader's entries are not
    /// appended yet.
    LogTruncated,
    /// Storage: a log prefix was purged after a snapshot.
    LogPurged,
    /// Storage: an apply batch (state changes and the applied marker) is written; the clients
    /// have not been answered.
    ApplyWritten,
    /// Storage: a snapshot install cleared the group's sessions; its rows are not written yet.
    SnapshotInstalling,
    /// Center: a new routing table is committed; nodes and proxies have not heard of it.
    RoutingWritten,
    /// Storage: a multi-key read loaded one of its keys; the next is not loaded yet. A delay
    /// here is where an apply batch would land inside a read that does not hold it off.
    ReadBetweenKeys,
    /// Center: a migration's copy of its slots is in the target; the catch-up has not started.
    /// A delay here is where writes and deletes land that only the catch-up carries over.
    MigrationCopied,
    /// Proxy: a write that clients are blocked on has its reply; the blocked clients are not
    /// served yet. A delay here lets a blocked client's own poll take the element first.
    HandOverStarting,
    /// Proxy: a pop made on a blocked client's behalf (a handover) holds that client; the pop
    /// is not proposed yet. A delay here holds a `BLMOVE` chain mid-way, with the element in
    /// the middle list and the next client unable to take it by its own poll.
    HandOverPop,
}

impl FaultPoint {
    /// Every point, in a fixed order.
    pub const ALL: [FaultPoint; 11] = [
        FaultPoint::VoteSaved,
        FaultPoint::LogAppended,
        FaultPoint::LogTruncated,
        FaultPoint::LogPurged,
        FaultPoint::ApplyWritten,
        FaultPoint::SnapshotInstalling,
        FaultPoint::RoutingWritten,
        FaultPoint::ReadBetweenKeys,
        FaultPoint::MigrationCopied,
        FaultPoint::HandOverStarting,
        FaultPoint::HandOverPop,
    ];

    /// The storage points on durability paths, which every storage node and center replica
    /// passes (plans crash processes at them; [`FaultPoint::ReadBetweenKeys`] is aimed at by
    /// plans whose workload reads several keys at once).
    pub const STORAGE: [FaultPoint; 6] = [
        FaultPoint::VoteSaved,
        FaultPoint::LogAppended,
        FaultPoint::LogTruncated,
        FaultPoint::LogPurged,
        FaultPoint::ApplyWritten,
        FaultPoint::SnapshotInstalling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultPoint::VoteSaved => "vote_saved",
            FaultPoint::LogAppended => "log_appended",
            FaultPoint::LogTruncated => "log_truncated",
            FaultPoint::LogPurged => "log_purged",
            FaultPoint::ApplyWritten => "apply_written",
            FaultPoint::SnapshotInstalling => "snapshot_installing",
            FaultPoint::RoutingWritten => "routing_written",
            FaultPoint::ReadBetweenKeys => "read_between_keys",
            FaultPoint::MigrationCopied => "migration_copied",
            FaultPoint::HandOverStarting => "hand_over_starting",
            FaultPoint::HandOverPop => "hand_over_pop",
        }
    }
}

impl fmt::Display for FaultPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialOrd for FaultPoint {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FaultPoint {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// A future a hook hands back to hold the caller at a point (a delay).
pub type PointDelay = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What the simulator installs: called at every point the process passes.
pub trait PointHook: Send + Sync + 'static {
    /// Records the hit and acts on it; a returned future holds the caller until it completes.
    fn hit(&self, point: FaultPoint) -> Option<PointDelay>;

    /// The log store is about to report `group`'s entries `first..=last` flushed (just before
    /// [`FaultPoint::LogAppended`]): the simulator audits that they are durable, so a lost sync
    /// is caught where it happens, not only when a crash happens to follow it.
    fn log_appended(&self, _group: GroupId, _first: u64, _last: u64) {}
}

/// A process's fault points: empty in production, a simulator hook in simulation.
#[derive(Clone, Default)]
pub struct FaultPoints(Option<Arc<dyn PointHook>>);

impl fmt::Debug for FaultPoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "FaultPoints(hooked)"
        } else {
            "FaultPoints(none)"
        })
    }
}

impl FaultPoints {
    /// No hook: every point is a no-op.
    pub fn none() -> Self {
        FaultPoints(None)
    }

    pub fn hooked(hook: Arc<dyn PointHook>) -> Self {
        FaultPoints(Some(hook))
    }

    /// Passes `point`: does nothing without a hook.
    pub async fn hit(&self, point: FaultPoint) {
        if let Some(hook) = &self.0
            && let Some(delay) = hook.hit(point)
        {
            delay.await;
        }
    }
}

impl FaultPoints {
    /// Passes [`FaultPoint::LogAppended`] for `group`'s entries `first..=last`, which the log
    /// store is about to report flushed.
    pub async fn log_appended(&self, group: GroupId, first: u64, last: u64) {
        if let Some(hook) = &self.0 {
            hook.log_appended(group, first, last);
        }
        self.hit(FaultPoint::LogAppended).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Counting(Mutex<Vec<FaultPoint>>);

    impl PointHook for Counting {
        fn hit(&self, point: FaultPoint) -> Option<PointDelay> {
            self.0.lock().unwrap().push(point);
            None
        }
    }

    #[test]
    fn an_empty_handle_does_nothing_and_a_hook_sees_every_hit() {
        futures::executor::block_on(FaultPoints::none().hit(FaultPoint::VoteSaved));
        let hook = Arc::new(Counting(Mutex::new(Vec::new())));
        let points = FaultPoints::hooked(hook.clone());
        futures::executor::block_on(async {
            points.hit(FaultPoint::LogAppended).await;
            points.hit(FaultPoint::VoteSaved).await;
        });
        assert_eq!(
            *hook.0.lock().unwrap(),
            vec![FaultPoint::LogAppended, FaultPoint::VoteSaved]
        );
    }

    #[test]
    fn names_round_trip_through_serde() {
        for point in FaultPoint::ALL {
            let json = serde_json::to_string(&point).unwrap();
            assert_eq!(json, format!("\"{point}\""));
            assert_eq!(serde_json::from_str::<FaultPoint>(&json).unwrap(), point);
        }
    }
}
