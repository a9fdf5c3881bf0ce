//! The group supervisor: a replica whose Raft stopped (a disk error, a full disk, a record that
//! would not apply) is reopened from its disk with backoff; one that cannot be reopened, or
//! keeps stopping, is reported broken, so the center replaces it
//! ([`crate::broken`]). One group's failure never stops the node or its other groups: each
//! group has its own Raft, and this task touches only the stopped one.
//!
//! Reopening from disk is what a process restart would do for that group, and is as safe: a
//! write that failed was never acknowledged, so whatever of it the disk kept is at worst an
//! unacknowledged log suffix or an unsent vote, both of which Raft tolerates.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use larder_core::GroupId;
use larder_core::env::{Clock, Env};
use openraft::async_runtime::WatchReceiver;

use crate::node::StorageNode;

/// How often the supervisor looks for stopped groups, at most (less when
/// `NodeConfig::reopen_backoff_ms` is shorter).
pub const SUPERVISE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest wait before a reopen. The first wait is `NodeConfig::reopen_backoff_ms`, doubled
/// after each reopen that stopped again; after `NodeConfig::reopens_max` of those the replica
/// is reported broken instead.
pub const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A reopened group that runs this long is healthy again: its count starts over.
pub const STABLE_AFTER: Duration = Duration::from_secs(300);

/// One group's recent trouble.
#[derive(Debug, Clone, Copy)]
struct Trouble {
    reopens: u32,
    /// Not reopened before this instant.
    next_at: Duration,
    /// When it was last reopened.
    reopened_at: Duration,
}

impl<E: Env> StorageNode<E> {
    /// Starts the supervisor task. It holds a weak reference: dropping the node ends it.
    pub(crate) fn spawn_supervisor(self: &Arc<Self>) {
        tokio::spawn(supervise(Arc::downgrade(self)));
    }

    /// The groups whose Raft stopped with an error, with the error (broken replicas, which
    /// are retired rather than reopened, are not among them).
    pub fn stopped_groups(&self) -> Vec<(GroupId, String)> {
        self.all_groups()
            .into_iter()
            .filter(|(group, _)| !self.broken.contains(*group))
            .filter_map(|(group, handle)| {
                let metrics = handle.raft.metrics();
                let metrics = metrics.borrow_watched();
                metrics
                    .running_state
                    .as_ref()
                    .err()
                    .map(|error| (group, error.to_string()))
            })
            .collect()
    }

    /// Closes `group`'s stopped Raft and opens the replica again from the disk. If the open
    /// fails the group is no longer served here, and the caller reports it broken.
    pub(crate) async fn reopen_group(&self, group: GroupId) -> Result<(), crate::NodeError> {
        let _hosting = self.hosting.lock().await;
        let Some(stopped) = self.groups.write().expect("groups lock").remove(&group) else {
            return Ok(()); // Removed meanwhile.
        };
        let _ = stopped.raft.shutdown().await;
        let opened = self.open_group(group).await?;
        self.groups
            .write()
            .expect("groups lock")
            .insert(group, Arc::new(opened));
        Ok(())
    }
}

async fn supervise<E: Env>(node: Weak<StorageNode<E>>) {
    let Some((clock, backoff, reopens_max)) = node.upgrade().map(|n| {
        (
            n.env.clock().clone(),
            Duration::from_millis(n.config.reopen_backoff_ms.max(1)),
            n.config.reopens_max,
        )
    }) else {
        return;
    };
    let mut troubles: BTreeMap<GroupId, Trouble> = BTreeMap::new();
    loop {
        clock.sleep(SUPERVISE_INTERVAL.min(backoff)).await;
        let Some(node) = node.upgrade() else { return };
        if node.is_stopped() {
            return;
        }
        let now = clock.now();
        troubles.retain(|_, t| now.saturating_sub(t.reopened_at) < STABLE_AFTER);
        for (group, reason) in node.stopped_groups() {
            let trouble = troubles.entry(group).or_insert(Trouble {
                reopens: 0,
                next_at: now + backoff,
                reopened_at: now,
            });
            if trouble.next_at > now {
                continue;
            }
            if trouble.reopens >= reopens_max {
                node.broken.mark(
                    group,
                    format!("its Raft stopped again after {reopens_max} reopens: {reason}"),
                );
                troubles.remove(&group);
                continue;
            }
            tracing::warn!(
                node = node.id(),
                group,
                %reason,
                reopens = trouble.reopens,
                "reopening a replica whose Raft stopped"
            );
            match node.reopen_group(group).await {
                Ok(()) => {
                    trouble.reopens += 1;
                    trouble.reopened_at = now;
                    trouble.next_at = now
                        + backoff
                            .saturating_mul(1 << trouble.reopens.min(16))
                            .min(REOPEN_BACKOFF_MAX);
                }
                Err(error) => {
                    node.broken
                        .mark(group, format!("reopening after a stop failed: {error}"));
                    troubles.remove(&group);
                }
            }
        }
        // Replicas marked above are retired now, and the next heartbeat reports them.
        node.retire_broken().await;
    }
}
