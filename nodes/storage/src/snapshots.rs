//! When each hosted group builds a snapshot (and so purges its log below it).
//!
//! openraft's own policy builds one every fixed number of entries. A snapshot scans the group's
//! whole range while apply waits, so with a fixed interval every write pays O(group size): a
//! load of small keys into a local cluster fell from 8k to a few hundred writes/s by 500k keys
//! and then timed out. The node runs openraft with [`openraft::SnapshotPolicy::Never`] and this
//! loop triggers a build once the entries since the last snapshot reach both
//! [`NodeConfig::snapshot_logs_since_last`] and [`NodeConfig::snapshot_growth_percent`] of the
//! rows that snapshot held (Redis's `auto-aof-rewrite-percentage` rule), so the scan costs a
//! bounded number of rows per write however large the group grows.
//!
//! [`NodeConfig::snapshot_logs_since_last`]: crate::NodeConfig::snapshot_logs_since_last
//! [`NodeConfig::snapshot_growth_percent`]: crate::NodeConfig::snapshot_growth_percent

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use larder_core::GroupId;
use larder_core::env::{Clock, Env};
use openraft::async_runtime::WatchReceiver;

use crate::node::StorageNode;

/// A build asked for and not yet seen in the metrics is asked for again after this long (a
/// build that failed, or a request lost to a leader change).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Whether a group whose last snapshot held `last_rows` rows and which applied `since_last`
/// entries since is due for the next one.
pub fn snapshot_due(since_last: u64, last_rows: u64, logs_min: u64, growth_percent: u64) -> bool {
    let by_growth = last_rows.saturating_mul(growth_percent) / 100;
    since_last >= logs_min.max(by_growth).max(1)
}

impl<E: Env> StorageNode<E> {
    /// Starts the snapshot-policy task. It holds a weak reference: dropping the node ends it.
    pub(crate) fn spawn_snapshot_policy(self: &Arc<Self>) {
        tokio::spawn(snapshot_loop(Arc::downgrade(self)));
    }
}

async fn snapshot_loop<E: Env>(node: Weak<StorageNode<E>>) {
    let (clock, interval) = match node.upgrade() {
        Some(node) => (
            node.env.clock().clone(),
            Duration::from_millis(node.config.heartbeat_ms.max(10)),
        ),
        None => return,
    };
    // Per group: the applied index a build was asked at, and when.
    let mut asked: BTreeMap<GroupId, (u64, Duration)> = BTreeMap::new();
    loop {
        clock.sleep(interval).await;
        let Some(node) = node.upgrade() else { return };
        if node.is_stopped() {
            return;
        }
        let now = clock.now();
        let groups = node.all_groups();
        asked.retain(|group, _| groups.iter().any(|(id, _)| id == group));
        for (id, group) in groups {
            let (applied, snapshot) = {
                let metrics = group.raft.metrics();
                let metrics = metrics.borrow_watched();
                (
                    metrics.last_applied.map_or(0, |log| log.index()),
                    metrics.snapshot.map_or(0, |log| log.index()),
                )
            };
            if asked
                .get(&id)
                .is_some_and(|(at, when)| snapshot < *at && now.saturating_sub(*when) < RETRY_AFTER)
            {
                continue;
            }
            let due = snapshot_due(
                applied.saturating_sub(snapshot),
                group.state.snapshot_rows(),
                node.config.snapshot_logs_since_last,
                node.config.snapshot_growth_percent,
            );
            if due {
                asked.insert(id, (applied, now));
                if let Err(error) = group.raft.trigger().snapshot().await {
                    tracing::debug!(group = id, %error, "asking for a snapshot");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    #[test]
    fn snapshots_are_spaced_by_the_larger_of_the_floor_and_the_growth() {
        // Small groups: the floor decides.
        assert!(!snapshot_due(1_999, 10, 2_000, 100));
        assert!(snapshot_due(2_000, 10, 2_000, 100));
        // Large groups: a snapshot per growth of their size, not per 2,000 writes.
        assert!(!snapshot_due(2_000, 500_000, 2_000, 100));
        assert!(!snapshot_due(499_999, 500_000, 2_000, 100));
        assert!(snapshot_due(500_000, 500_000, 2_000, 100));
        assert!(snapshot_due(250_000, 500_000, 2_000, 50));
        // Never every entry, whatever the settings.
        assert!(!snapshot_due(0, 0, 0, 0));
        assert!(snapshot_due(u64::MAX, u64::MAX, 1, u64::MAX));
    }
}
