//! What a storage node answers `larder backup` ([`larder_protocol::backup`]): a base of a group
//! it hosts, in chunks, and the committed entries after it.
//!
//! A base is the group's whole state at one applied index, read once (the same materialized
//! state a follower too far behind for the log is sent) and kept until its last chunk is read
//! or the next base of the group is taken: one per group at most, so memory is bounded by the
//! groups' sizes even when a backup dies half way.

use std::sync::Arc;

use bytes::Bytes;
use larder_core::GroupId;
use larder_core::env::Env;
use larder_protocol::{
    BACKUP_CHUNK_BYTES, BackupAnswer, BackupPart, BackupRead, BaseChunk, EntriesChunk,
};

use crate::config::NodeError;
use crate::node::StorageNode;
use crate::raft::state_machine::{BACKUP_PAGE_BYTES_MAX, Contents};

/// A base being read: `(index, group clock, encoded base)`.
pub(crate) type HeldBase = Arc<(u64, u64, Bytes)>;

impl<E: Env> StorageNode<E> {
    /// Answers one [`BackupRead`].
    pub(crate) async fn answer_backup(&self, read: BackupRead) -> BackupAnswer {
        let BackupRead { group, part } = read;
        let handle = match self.group(group) {
            Ok(handle) => handle,
            Err(error) => {
                return BackupAnswer::Failed {
                    reason: error.to_string(),
                };
            }
        };
        match part {
            BackupPart::Entries { from } => {
                match handle
                    .state
                    .backup_entries(from, BACKUP_PAGE_BYTES_MAX)
                    .await
                {
                    Ok(page) => BackupAnswer::Entries(EntriesChunk {
                        first: page.first,
                        applied: page.applied,
                        entries: page.entries,
                    }),
                    Err(error) => BackupAnswer::Failed {
                        reason: format!("group {group}: reading its log: {error}"),
                    },
                }
            }
            BackupPart::Base { index, offset } => {
                let base = match index {
                    None => match handle.state.backup_base().await {
                        Ok(Some(base)) => {
                            let base: HeldBase = Arc::new(base);
                            self.held_bases().insert(group, base.clone());
                            base
                        }
                        Ok(None) => return BackupAnswer::Empty,
                        Err(error) => {
                            return BackupAnswer::Failed {
                                reason: format!("group {group}: reading its state: {error}"),
                            };
                        }
                    },
                    Some(index) => match self.held_bases().get(&group) {
                        Some(base) if base.0 == index => base.clone(),
                        _ => return BackupAnswer::Restart,
                    },
                };
                self.base_chunk(group, &base, offset)
            }
        }
    }

    /// Answers one [`BackupRead`] in-process (the simulator's archiver).
    pub async fn backup_read(&self, read: BackupRead) -> BackupAnswer {
        self.answer_backup(read).await
    }

    /// The groups this node hosts a replica of now.
    pub fn hosted_group_ids(&self) -> Vec<GroupId> {
        self.all_groups().into_iter().map(|(id, _)| id).collect()
    }

    /// `group`'s state as applied here
    /// ([`crate::raft::state_machine::DiskStateMachine::contents`]).
    pub async fn group_contents(&self, group: GroupId) -> Result<Contents, NodeError> {
        let state = self.group(group)?.state.clone();
        state
            .contents()
            .await
            .map_err(|source| NodeError::Storage { group, source })
    }

    fn base_chunk(&self, group: GroupId, base: &HeldBase, offset: u64) -> BackupAnswer {
        let (index, clock_ms, data) = &**base;
        let total = data.len() as u64;
        if offset > total {
            return BackupAnswer::Restart;
        }
        let end = offset.saturating_add(BACKUP_CHUNK_BYTES).min(total);
        if end == total {
            // The last chunk: the base need not stay in memory.
            let mut held = self.held_bases();
            if held.get(&group).is_some_and(|b| Arc::ptr_eq(b, base)) {
                held.remove(&group);
            }
        }
        BackupAnswer::Base(BaseChunk {
            index: *index,
            clock_ms: *clock_ms,
            total,
            offset,
            data: data.slice(offset as usize..end as usize),
        })
    }

    fn held_bases(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<GroupId, HeldBase>> {
        self.backup_bases.lock().expect("backup bases lock")
    }
}
