//! What the center asks of a storage node ([`larder_protocol::admin`]): host or drop a
//! replica, form a group, replace a voter learner-first, move leadership.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use larder_core::bugs::Bug;
use larder_core::env::{Env, timeout};
use larder_core::{GroupId, NodeId};
use larder_protocol::{
    AddGroup, AdminRequest, AdminResponse, CENTER_GROUP, IngestRecords, ReadSlots,
    ReadSlotsResponse, RemoveGroup, ReplaceVoter, SetOwnedSlots, TrackSlots, TransferLeadership,
    UntrackSlots, respond,
};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;
use openraft::{ChangeMembers, EmptyNode, Precondition};

use crate::config::NodeError;
use crate::node::{StorageNode, raft_error};
use crate::raft::{StoredMembership, TypeConfig};

/// Proposals of one voter change whose precondition (the membership it was computed from) may
/// be found stale before the replace gives up.
const MEMBERSHIP_CHANGE_ATTEMPTS_MAX: u32 = 2;

impl<E: Env> StorageNode<E> {
    /// Makes `voters` the first membership of `group`. Call on one node of a new group only;
    /// a group that is already initialized is left as it is.
    pub async fn initialize(
        &self,
        group: GroupId,
        voters: &BTreeSet<NodeId>,
    ) -> Result<(), NodeError> {
        let raft = self.raft(group)?;
        if raft
            .is_initialized()
            .await
            .map_err(|e| raft_error(group, e))?
        {
            return Ok(());
        }
        let members: BTreeMap<NodeId, EmptyNode> =
            voters.iter().map(|&id| (id, EmptyNode {})).collect();
        match raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another initializer won the race, or state arrived from a peer: both fine.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(raft_error(group, e)),
        }
    }

    /// Replaces voter `old` of `group` with `new`, learner first: `new` receives the log (or a
    /// snapshot) as a non-voting learner, and becomes a voter only once it has caught up, so
    /// the group never depends on a member that has no data. Call on the leader (elsewhere it
    /// fails with [`NodeError::NotLeader`]).
    ///
    /// Idempotent, because the center retries after a lost answer: judged by the **committed**
    /// membership (an appended one may still be rolled back), read only after a read-index
    /// round has confirmed this node still leads (a deposed leader's committed membership may be
    /// changes behind), a replace that is done succeeds at once, and one cut short in joint
    /// consensus (a leader change between the two steps) is finished. The voter change is guarded by the membership it was computed from
    /// (`Precondition::LastMembershipLogId`), so two concurrent changes cannot combine into one
    /// that drops two voters.
    pub async fn replace_voter(
        &self,
        group: GroupId,
        old: NodeId,
        new: NodeId,
    ) -> Result<(), NodeError> {
        let raft = self.raft(group)?;
        if !self.is_leader(group) {
            return Err(NodeError::NotLeader {
                group,
                leader_hint: self.leader_of(group),
            });
        }
        let to_error = |e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                NodeError::NotLeader {
                    group,
                    leader_hint: forward.leader_id,
                }
            }
            other => raft_error(group, other),
        };
        let conflict = |reason: String| NodeError::MembershipConflict { group, reason };
        // The answers below that need no change ("done already", "neither is a voter") are
        // judged from this replica's committed membership, which is only the group's if this
        // node still leads: a leader cut off from its peers keeps believing it leads, and its
        // membership may be changes behind. Confirm with a quorum first (a read-index round,
        // which also waits until this replica applied everything committed before it).
        // Without it, cluster swarm seed 34 had a deposed leader answer "done" to a replace
        // of 2 by 4 that its group had undone; the center wrote node 4 back into the table,
        // and node 4's replica, no longer a member, never caught up and was never dropped.
        if !self.config.bugs.is_planted(Bug::ReplaceDoneUnconfirmed) {
            self.wake(group, &raft, false).await;
            raft.ensure_linearizable(ReadPolicy::ReadIndex)
                .await
                .map_err(|e| match e {
                    RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)) => {
                        NodeError::NotLeader {
                            group,
                            leader_hint: forward.leader_id,
                        }
                    }
                    other => raft_error(group, other),
                })?;
        }
        // (effective membership, its last voter set, the last committed voter set, joint?)
        let memberships = || {
            let metrics = raft.metrics();
            let metrics = metrics.borrow_watched();
            let effective = metrics.membership_config.as_ref().clone();
            let committed = metrics.committed_membership_config.get_joint_config();
            let target: BTreeSet<NodeId> = effective
                .get_joint_config()
                .last()
                .cloned()
                .unwrap_or_default();
            let committed_target: BTreeSet<NodeId> = committed.last().cloned().unwrap_or_default();
            (effective, target, committed_target, committed.len() > 1)
        };
        let change = |voters: BTreeSet<NodeId>, observed: &StoredMembership| {
            raft.change_membership_if(
                ChangeMembers::ReplaceAllVoters(voters),
                false,
                [Precondition::LastMembershipLogId {
                    last_membership_log_id: *observed.log_id(),
                }],
            )
        };
        let (effective, _, committed, joint) = memberships();
        match (committed.contains(&old), committed.contains(&new)) {
            (false, true) if !joint => return Ok(()),
            (false, true) => {
                // Finish the change towards its target voter set.
                self.wake(group, &raft, true).await;
                change(committed, &effective).await.map_err(to_error)?;
                return Ok(());
            }
            (false, false) => {
                return Err(conflict(format!(
                    "neither {old} nor {new} is a voter of {committed:?}"
                )));
            }
            (true, true) if old != new => {
                return Err(conflict(format!(
                    "{old} and {new} are both voters of {committed:?}"
                )));
            }
            (true, true) => return Ok(()),
            (true, false) => {}
        }
        self.wake(group, &raft, true).await;
        raft.add_learner(new, EmptyNode {}, true)
            .await
            .map_err(to_error)?;
        // Computed from the membership as it is now (the learner's entry included); tried again
        // once if that membership moved on before the change was proposed (the metrics the
        // observation comes from may trail the Raft core by a moment).
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (observed, mut voters, _, _) = memberships();
            if !voters.remove(&old) {
                return Err(conflict(format!(
                    "{old} left the voters while {new} caught up"
                )));
            }
            voters.insert(new);
            match change(voters, &observed).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::PreconditionFailed(_)))
                    if attempts < MEMBERSHIP_CHANGE_ATTEMPTS_MAX => {}
                Err(error) => return Err(to_error(error)),
            }
        }
    }

    /// Answers one of the center's instructions.
    pub(crate) async fn handle_admin(&self, request: AdminRequest) -> Bytes {
        match request {
            AdminRequest::AddGroup(AddGroup { group, initialize }) => {
                respond::<AddGroup>(&self.admin_add_group(group, initialize).await)
            }
            AdminRequest::RemoveGroup(RemoveGroup { group }) => {
                respond::<RemoveGroup>(&self.admin_remove_group(group).await)
            }
            AdminRequest::ReplaceVoter(ReplaceVoter {
                group,
                old,
                new,
                timeout_ms,
            }) => {
                let limit = Duration::from_millis(timeout_ms);
                let outcome = timeout(self.env.clock(), limit, self.replace_voter(group, old, new))
                    .await
                    .unwrap_or_else(|_| {
                        Err(NodeError::Raft {
                            group,
                            reason: format!("replacing {old} by {new} took over {timeout_ms} ms"),
                        })
                    });
                respond::<ReplaceVoter>(&admin_response(outcome))
            }
            AdminRequest::TransferLeadership(TransferLeadership { group, to }) => {
                respond::<TransferLeadership>(&self.admin_transfer_leadership(group, to).await)
            }
            AdminRequest::SetOwnedSlots(SetOwnedSlots { group, ownership }) => {
                respond::<SetOwnedSlots>(&admin_response(
                    self.set_owned_slots(group, ownership).await,
                ))
            }
            AdminRequest::TrackSlots(TrackSlots {
                group,
                migration,
                ranges,
                stamp,
            }) => respond::<TrackSlots>(&admin_response(
                self.track_slots(group, migration, ranges, stamp).await,
            )),
            AdminRequest::UntrackSlots(UntrackSlots {
                group,
                migration,
                stamp,
            }) => respond::<UntrackSlots>(&admin_response(
                self.untrack_slots(group, migration, stamp).await,
            )),
            AdminRequest::IngestRecords(IngestRecords {
                group,
                clock_ms,
                records,
                stamp,
            }) => respond::<IngestRecords>(&admin_response(
                self.ingest(group, clock_ms, records, stamp).await,
            )),
            AdminRequest::ReadSlots(ReadSlots {
                group,
                ranges,
                read,
            }) => {
                let answer = match self.read_slots(group, &ranges, &read).await {
                    Ok(page) => ReadSlotsResponse::Page(page),
                    Err(NodeError::NotLeader { leader_hint, .. }) => {
                        ReadSlotsResponse::NotLeader { leader_hint }
                    }
                    Err(error) => ReadSlotsResponse::Failed {
                        reason: error.to_string(),
                    },
                };
                respond::<ReadSlots>(&answer)
            }
        }
    }

    async fn admin_add_group(
        &self,
        group: GroupId,
        initialize: Option<Vec<NodeId>>,
    ) -> AdminResponse {
        if let Err(error) = self.add_group(group).await {
            return admin_response(Err(error));
        }
        match initialize {
            // Only a listed voter forms the group; `initialize` leaves a formed group alone.
            Some(voters) if voters.contains(&self.id()) => {
                let voters: BTreeSet<NodeId> = voters.into_iter().collect();
                admin_response(self.initialize(group, &voters).await)
            }
            _ => AdminResponse::Done,
        }
    }

    async fn admin_remove_group(&self, group: GroupId) -> AdminResponse {
        if group == CENTER_GROUP {
            return AdminResponse::Failed {
                reason: "the center group is never removed by a message".into(),
            };
        }
        // A leader is a member by definition (at least of the term it believes in): removing
        // it would take a live member's data. The center asks again later if it still should.
        if self.is_leader(group) {
            return AdminResponse::Failed {
                reason: format!("node {} leads group {group}", self.id()),
            };
        }
        admin_response(self.remove_group(group).await.map(|_| ()))
    }

    async fn admin_transfer_leadership(&self, group: GroupId, to: NodeId) -> AdminResponse {
        let raft = match self.raft(group) {
            Ok(raft) => raft,
            Err(error) => return admin_response(Err(error)),
        };
        if !self.is_leader(group) {
            return AdminResponse::NotLeader {
                leader_hint: self.leader_of(group),
            };
        }
        if !raft.voter_ids().any(|id| id == to) {
            return AdminResponse::Failed {
                reason: format!("node {to} is not a voter of group {group}"),
            };
        }
        let term = raft.metrics().borrow_watched().current_term;
        self.quiet.hand_over(group, term);
        match raft.trigger().transfer_leader(to).await {
            Ok(()) => AdminResponse::Done,
            Err(error) => AdminResponse::Failed {
                reason: error.to_string(),
            },
        }
    }
}

pub(crate) fn admin_response(outcome: Result<(), NodeError>) -> AdminResponse {
    match outcome {
        Ok(()) => AdminResponse::Done,
        Err(NodeError::NotLeader { leader_hint, .. }) => AdminResponse::NotLeader { leader_hint },
        Err(error) => AdminResponse::Failed {
            reason: error.to_string(),
        },
    }
}

/// The answer to an admin request refused unheard, with `reason`, in the response type its
/// request expects.
pub(crate) fn refused(request: &AdminRequest, reason: String) -> Bytes {
    match request {
        AdminRequest::ReadSlots(_) => respond::<ReadSlots>(&ReadSlotsResponse::Failed { reason }),
        // Every other admin request is answered by an `AdminResponse`.
        _ => respond::<AddGroup>(&AdminResponse::Failed { reason }),
    }
}
