//! A storage node's part in moving slots between groups: each step a Raft command of the group
//! (or, for reads, a read-index round), asked of the group's leader by whoever drives the
//! migration. The steps, in the order a migration takes them (ARCHITECTURE.md, "Moving
//! slots"):
//! - source: [`StorageNode::track_slots`] starts recording which keys of the slots change;
//! - source: [`StorageNode::read_slots`] pages through the slots' records (copy) and then the
//!   records changed since a log index (catch-up); target: [`StorageNode::ingest`] writes them;
//! - source: [`StorageNode::set_owned_slots`] without the slots (the fence: no write to them
//!   applies there any more), a last catch-up, then target: `set_owned_slots` with them;
//! - source: [`StorageNode::untrack_slots`], and `ingest` of deletes for what it still holds.

use std::time::Duration;

use bytes::Bytes;
use larder_core::GroupId;
use larder_core::env::{Env, timeout};
use larder_core::kv::{Command, Reply, StepStamp};
use larder_core::slots::Ownership;
use larder_protocol::{CENTER_GROUP, SLOT_PAGE_BYTES_MAX, SLOT_PAGE_ROWS_MAX, SlotPage, SlotRead};
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;

use crate::config::NodeError;
use crate::node::{StorageNode, raft_error};

impl<E: Env> StorageNode<E> {
    /// Proposes internal `command` to `group` and waits for it to apply here (the leader). An
    /// error reply of the state machine is a failure.
    async fn propose_internal(&self, group: GroupId, command: Command) -> Result<(), NodeError> {
        if group == CENTER_GROUP {
            return Err(NodeError::Raft {
                group,
                reason: "the center group holds no slots".into(),
            });
        }
        let name = command.name();
        let entry = crate::raft::Request {
            now_ms: self.stamp(),
            command,
            session: None,
        };
        let raft = self.raft(group)?;
        let limit = Duration::from_millis(self.config.request_timeout_ms);
        let write = self.propose(group, &raft, entry);
        match timeout(self.env.clock(), limit, write).await {
            Ok(Ok(response)) => match response.data {
                Reply::Error(reason) => Err(NodeError::Raft { group, reason }),
                _ => Ok(()),
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Err(NodeError::NotLeader {
                    group,
                    leader_hint: forward.leader_id,
                })
            }
            Ok(Err(error)) => Err(raft_error(group, error)),
            Err(_) => Err(NodeError::Raft {
                group,
                reason: format!("{name} timed out"),
            }),
        }
    }

    /// Sets the slots `group` owns through its Raft log ([`Command::OwnSlots`]); call on the
    /// leader. Done once applied here; an ownership not newer than the applied one changes
    /// nothing (and is done too: the group is already past it).
    pub async fn set_owned_slots(
        &self,
        group: GroupId,
        ownership: Ownership,
    ) -> Result<(), NodeError> {
        self.propose_internal(group, Command::OwnSlots { ownership })
            .await
    }

    /// Starts recording the keys of `ranges` that change in `group` ([`Command::TrackSlots`];
    /// a `stamp` at or below one the group applied changes nothing).
    pub async fn track_slots(
        &self,
        group: GroupId,
        migration: u64,
        ranges: Vec<(u16, u16)>,
        stamp: Option<StepStamp>,
    ) -> Result<(), NodeError> {
        let track = Command::TrackSlots {
            migration,
            ranges,
            stamp,
        };
        self.propose_internal(group, track).await
    }

    /// Stops recording for `migration` and deletes the record ([`Command::UntrackSlots`]).
    pub async fn untrack_slots(
        &self,
        group: GroupId,
        migration: u64,
        stamp: Option<StepStamp>,
    ) -> Result<(), NodeError> {
        self.propose_internal(group, Command::UntrackSlots { migration, stamp })
            .await
    }

    /// Writes `records` into `group` as they are ([`Command::Ingest`]); at most
    /// [`SLOT_PAGE_BYTES_MAX`] bytes, or one record. A `stamp` at or below one the group
    /// applied writes nothing (and is not an error: the page is late, not wrong).
    pub async fn ingest(
        &self,
        group: GroupId,
        clock_ms: u64,
        records: Vec<(Bytes, Option<Bytes>)>,
        stamp: Option<StepStamp>,
    ) -> Result<(), NodeError> {
        let bytes: usize = records
            .iter()
            .map(|(key, record)| key.len() + record.as_ref().map_or(0, Bytes::len))
            .sum();
        if records.len() > 1 && bytes > SLOT_PAGE_BYTES_MAX {
            return Err(NodeError::Raft {
                group,
                reason: format!(
                    "an ingest of {bytes} bytes is over the page limit of {SLOT_PAGE_BYTES_MAX}"
                ),
            });
        }
        self.propose_internal(
            group,
            Command::Ingest {
                clock_ms,
                records,
                stamp,
            },
        )
        .await
    }

    /// One page of `group`'s records in `ranges` (see [`SlotRead`]), after a read-index round
    /// on the leader, so the page reflects every write committed before the call.
    pub async fn read_slots(
        &self,
        group: GroupId,
        ranges: &[(u16, u16)],
        read: &SlotRead,
    ) -> Result<SlotPage, NodeError> {
        let handle = self.group(group)?;
        let limit = Duration::from_millis(self.config.request_timeout_ms);
        let confirm = handle.raft.ensure_linearizable(ReadPolicy::ReadIndex);
        match timeout(self.env.clock(), limit, confirm).await {
            Ok(Ok(_)) => {}
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)))) => {
                return Err(NodeError::NotLeader {
                    group,
                    leader_hint: forward.leader_id,
                });
            }
            Ok(Err(error)) => return Err(raft_error(group, error)),
            Err(_) => {
                return Err(NodeError::Raft {
                    group,
                    reason: "read index not confirmed in time".into(),
                });
            }
        }
        handle
            .state
            .read_slots(ranges, read, SLOT_PAGE_ROWS_MAX, SLOT_PAGE_BYTES_MAX)
            .await
            .map_err(|source| NodeError::Storage { group, source })
    }
}
