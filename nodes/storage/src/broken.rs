//! Replicas retired because their disk records are corrupt.
//!
//! Every read of a node's disk goes through [`larder_core::env::Sealed`], which checks each
//! record's checksum. A mismatch is reported here, by the key's owner ([`group_of_key`]); the
//! read itself fails, so nothing corrupt is served, applied or replicated. The node then
//! *retires* the replica ([`StorageNode::retire_broken`]): it stops the group's Raft, records
//! a durable mark so a restart does not open it again, and reports it broken in its
//! heartbeats. The center treats a broken replica as a dead one and replaces it (learner
//! first, from the healthy replicas); the old one, then no member, is dropped and wiped.
//!
//! Why not wipe and rejoin on the spot: a voter that forgets its log and vote can let an entry
//! a quorum acknowledged be lost (it may have been part of that quorum). Only a membership
//! change, made by the group's leader, can take its place safely.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use larder_core::GroupId;
use larder_core::env::{Disk, Env, Space, WriteBatch};

use crate::config::NodeError;
use crate::node::StorageNode;

/// The key in [`Space::Meta`] of `group`'s broken mark (its value: the reason, UTF-8).
pub(crate) fn broken_key(group: GroupId) -> Vec<u8> {
    let mut key = b"broken/".to_vec();
    key.extend_from_slice(&group.to_be_bytes());
    key
}

/// The slot group a record belongs to, from its key: Raft log and state keys start with the
/// group id (big-endian); per-group metadata keys are `kind/` followed by it. Node-wide
/// records (the hosted set, the format) belong to none.
pub fn group_of_key(space: Space, key: &[u8]) -> Option<GroupId> {
    let id = match space {
        Space::Log | Space::State | Space::Elements => key.get(..8)?,
        Space::Meta => {
            let slash = key.iter().position(|&b| b == b'/')?;
            key.get(slash + 1..slash + 9)?
        }
    };
    Some(GroupId::from_be_bytes(id.try_into().ok()?))
}

#[derive(Debug, Clone)]
struct Broken {
    reason: String,
    /// Its Raft is stopped and its mark is durable.
    retired: bool,
}

/// The node's broken replicas, by group.
#[derive(Debug, Default)]
pub(crate) struct BrokenReplicas {
    groups: Mutex<BTreeMap<GroupId, Broken>>,
    /// Some replica is broken but not retired yet (a cheap check on every request).
    unretired: AtomicBool,
}

impl BrokenReplicas {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<GroupId, Broken>> {
        self.groups.lock().expect("broken replicas lock")
    }

    /// A corrupt record of `group` was found (the first reason is kept).
    pub(crate) fn mark(&self, group: GroupId, reason: String) {
        if let std::collections::btree_map::Entry::Vacant(entry) = self.lock().entry(group) {
            tracing::error!(group, %reason, "corrupt record: retiring the replica");
            entry.insert(Broken {
                reason,
                retired: false,
            });
            self.unretired.store(true, Ordering::SeqCst);
        }
    }

    /// `group` was found broken before a restart (its mark is durable, its Raft not opened).
    pub(crate) fn restore(&self, group: GroupId, reason: String) {
        self.lock().insert(
            group,
            Broken {
                reason,
                retired: true,
            },
        );
    }

    pub(crate) fn contains(&self, group: GroupId) -> bool {
        self.lock().contains_key(&group)
    }

    /// Every broken group with its reason.
    pub(crate) fn all(&self) -> Vec<(GroupId, String)> {
        self.lock()
            .iter()
            .map(|(group, broken)| (*group, broken.reason.clone()))
            .collect()
    }

    pub(crate) fn clear(&self, group: GroupId) {
        self.lock().remove(&group);
    }

    fn unretired(&self) -> Vec<(GroupId, String)> {
        if !self.unretired.load(Ordering::SeqCst) {
            return Vec::new();
        }
        self.lock()
            .iter()
            .filter(|(_, broken)| !broken.retired)
            .map(|(group, broken)| (*group, broken.reason.clone()))
            .collect()
    }

    fn set_retired(&self, group: GroupId) {
        let mut groups = self.lock();
        if let Some(broken) = groups.get_mut(&group) {
            broken.retired = true;
        }
        let any = groups.values().any(|broken| !broken.retired);
        self.unretired.store(any, Ordering::SeqCst);
    }
}

impl<E: Env> StorageNode<E> {
    /// Retires every replica found broken since the last call: stops its Raft, makes its mark
    /// durable and stops serving it (see the module doc). Cheap when there is none; called
    /// before serving each request and each heartbeat.
    pub async fn retire_broken(&self) {
        for (group, reason) in self.broken.unretired() {
            let _hosting = self.hosting.lock().await;
            if !self.broken.contains(group) {
                continue; // Dropped meanwhile.
            }
            let removed = self.groups.write().expect("groups lock").remove(&group);
            if let Some(removed) = removed {
                let _ = removed.raft.shutdown().await;
            }
            if let Err(error) = self.save_broken_mark(group, &reason).await {
                // Not durable: after a restart the replica opens again, and stops again at
                // the first read of the corrupt record. Safe, only slower.
                tracing::warn!(group, %error, "could not record a broken replica");
            }
            self.broken.set_retired(group);
            tracing::warn!(node = self.id(), group, %reason, "retired a broken replica");
        }
    }

    async fn save_broken_mark(&self, group: GroupId, reason: &str) -> Result<(), NodeError> {
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Meta,
            broken_key(group),
            Bytes::copy_from_slice(reason.as_bytes()),
        );
        self.disk
            .write(batch, true)
            .await
            .map_err(|source| NodeError::Storage {
                group,
                source: source.into(),
            })
    }

    /// The groups whose replica this node retired (or is retiring) as corrupt.
    pub fn broken_groups(&self) -> Vec<GroupId> {
        self.broken
            .all()
            .into_iter()
            .map(|(group, _)| group)
            .collect()
    }

    /// Whether this node retired (or is retiring) its replica of `group` as corrupt.
    pub fn is_broken(&self, group: GroupId) -> bool {
        self.broken.contains(group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_core::env::{log_key, vote_key};

    #[test]
    fn every_per_group_key_names_its_group() {
        let group: GroupId = 0x0102_0304_0506_0708;
        assert_eq!(
            group_of_key(Space::Log, &log_key(group, 42)),
            Some(group),
            "log"
        );
        let mut state = group.to_be_bytes().to_vec();
        state.extend_from_slice(b"user:1");
        assert_eq!(group_of_key(Space::State, &state), Some(group));
        assert_eq!(group_of_key(Space::Meta, &vote_key(group)), Some(group));
        assert_eq!(group_of_key(Space::Meta, &broken_key(group)), Some(group));
        let mut session = b"session/".to_vec();
        session.extend_from_slice(&group.to_be_bytes());
        session.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(group_of_key(Space::Meta, &session), Some(group));
        assert_eq!(group_of_key(Space::Meta, b"hosted-groups"), None);
        assert_eq!(group_of_key(Space::State, b"short"), None);
    }

    #[test]
    fn a_broken_replica_is_marked_once_and_retired_once() {
        let broken = BrokenReplicas::default();
        assert!(broken.unretired().is_empty());
        broken.mark(3, "first".into());
        broken.mark(3, "second".into());
        assert_eq!(broken.all(), vec![(3, "first".to_string())]);
        assert_eq!(broken.unretired(), vec![(3, "first".to_string())]);
        broken.set_retired(3);
        assert!(broken.unretired().is_empty());
        assert!(broken.contains(3));
        broken.clear(3);
        assert!(!broken.contains(3));
    }
}
