//! Rebuilding a slot group's state from a backup (`larder restore`): a base
//! ([`DiskStateMachine::backup_base`]) installed into a fresh state machine, then the committed
//! entries after it applied by the same code that applied them in the cluster, up to a moment
//! of the group clock. No Raft runs: the entries were committed when they were archived, and
//! applying a committed prefix is deterministic, so the replica rebuilt is the state every
//! replica of the group had at that entry.

use std::io;

use bytes::Bytes;
use larder_core::GroupId;
use larder_core::bugs::Bugs;
use larder_core::env::{Disk, FaultPoints, WriteBatch};
use larder_core::kv::Record;
use larder_core::slots::Ownership;
use openraft::EntryPayload;

use crate::raft::state_machine::{Contents, DiskStateMachine};
use crate::raft::{Entry, decode};

/// Where a [`Replay`] stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// The last index applied (the base's, before any entry).
    pub index: u64,
    /// The group clock there.
    pub clock_ms: u64,
}

/// Why a replay could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("group {group}: entry {got} follows {after}: the entries in between are missing")]
    Gap {
        group: GroupId,
        after: u64,
        got: u64,
    },
    #[error("group {group}: {source}")]
    Storage {
        group: GroupId,
        #[source]
        source: io::Error,
    },
}

/// A group's state being rebuilt on `D` (an empty disk of its own).
pub struct Replay<D: Disk> {
    group: GroupId,
    state: DiskStateMachine<D>,
    at: Replayed,
    disk: D,
}

/// A replay's state machine on `disk`: no planted bugs, no fault points, and the group's
/// replicas' bound on sessions (`NodeConfig::sessions_max`, 4,096 by default) for
/// registrations that carry none. The bound must be theirs: a write of a session the replicas
/// had forgotten was refused there (`SESSION_EXPIRED`, not applied), and a replay remembering
/// more sessions would apply it (swarm seeds 25 and 28 with `--sync`, once the proxies'
/// coalescing sessions pushed the clients' out of groups that keep only a few). Since each
/// registration carries its leader's bound (`SessionSeq::register_bounded`), a replay of a
/// log written since evicts as its replicas did whatever `sessions_max` it is given; the
/// parameter still governs logs from before.
async fn open_state<D: Disk>(
    disk: &D,
    group: GroupId,
    sessions_max: usize,
) -> Result<DiskStateMachine<D>, ReplayError> {
    DiskStateMachine::open(
        disk.clone(),
        group,
        Bugs::default(),
        FaultPoints::none(),
        sessions_max,
    )
    .await
    .map_err(|source| ReplayError::Storage { group, source })
}

impl<D: Disk> Replay<D> {
    /// Starts from `base` (an encoded [`DiskStateMachine::backup_base`]) with its group clock,
    /// remembering at most `sessions_max` sessions as the group's replicas do.
    pub async fn from_base(
        disk: D,
        group: GroupId,
        base: &[u8],
        clock_ms: u64,
        sessions_max: usize,
    ) -> Result<Self, ReplayError> {
        let mut state = open_state(&disk, group, sessions_max).await?;
        let index = state
            .restore_base(base)
            .await
            .map_err(|source| ReplayError::Storage { group, source })?;
        Ok(Replay {
            group,
            state,
            at: Replayed { index, clock_ms },
            disk,
        })
    }

    /// The replay an earlier process left on `disk` (`larder sync --scratch`), where its state
    /// machine last persisted it (after a crash, an earlier point than it reached, if its last
    /// writes were not synced: [`Replay::sync`]). `None` when the disk holds no base.
    pub async fn open(
        disk: D,
        group: GroupId,
        sessions_max: usize,
    ) -> Result<Option<Self>, ReplayError> {
        let state = open_state(&disk, group, sessions_max).await?;
        let applied = state.applied();
        let Some(last) = applied.last_applied else {
            return Ok(None);
        };
        Ok(Some(Replay {
            group,
            state,
            at: Replayed {
                index: last.index(),
                clock_ms: applied.clock_ms,
            },
            disk,
        }))
    }

    /// Makes what was applied so far durable.
    pub async fn sync(&self) -> Result<(), ReplayError> {
        self.disk
            .write(WriteBatch::new(), true)
            .await
            .map_err(|error| ReplayError::Storage {
                group: self.group,
                source: error.into(),
            })
    }

    pub fn at(&self) -> Replayed {
        self.at
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Applies `rows` (`(index, encoded entry)`, in order, from the next index) while the
    /// group clock stays at or before `until_ms`; returns whether every row was applied (false:
    /// an entry would have moved the clock past `until_ms`, and it and the rest were not).
    /// Rows at or below the applied index are skipped (backups overlap where a base was taken
    /// between two reads of the entries).
    pub async fn apply(
        &mut self,
        rows: &[(u64, Bytes)],
        until_ms: u64,
    ) -> Result<bool, ReplayError> {
        let group = self.group;
        let storage = |source| ReplayError::Storage { group, source };
        let mut batch = Vec::new();
        let mut done = true;
        let mut at = self.at;
        for (index, row) in rows {
            if *index <= at.index {
                continue;
            }
            if *index != at.index + 1 {
                self.flush(batch, at).await?;
                return Err(ReplayError::Gap {
                    group,
                    after: at.index,
                    got: *index,
                });
            }
            let entry: Entry = decode(row).map_err(storage)?;
            let clock_ms = match &entry.payload {
                EntryPayload::Normal(request) => at.clock_ms.max(request.now_ms),
                _ => at.clock_ms,
            };
            if clock_ms > until_ms {
                done = false;
                break;
            }
            at = Replayed {
                index: *index,
                clock_ms,
            };
            batch.push(entry);
        }
        self.flush(batch, at).await?;
        Ok(done)
    }

    async fn flush(&mut self, batch: Vec<Entry>, at: Replayed) -> Result<(), ReplayError> {
        if batch.is_empty() {
            return Ok(());
        }
        let group = self.group;
        self.state
            .restore_entries(batch)
            .await
            .map_err(|source| ReplayError::Storage { group, source })?;
        self.at = at;
        Ok(())
    }

    /// The record at `key` as rebuilt.
    pub async fn record(&self, key: &Bytes) -> Result<Option<Record>, ReplayError> {
        let group = self.group;
        self.state
            .record(key)
            .await
            .map_err(|source| ReplayError::Storage { group, source })
    }

    /// The slots the group owns as rebuilt (`None`: never set, so all of them).
    pub fn ownership(&self) -> Option<Ownership> {
        self.state.ownership()
    }

    /// The group as rebuilt: its clock, the slots it owned, its records.
    pub async fn contents(&self) -> Result<Contents, ReplayError> {
        self.state
            .contents()
            .await
            .map_err(|source| ReplayError::Storage {
                group: self.group,
                source,
            })
    }
}
