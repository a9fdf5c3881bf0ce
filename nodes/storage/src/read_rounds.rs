//! Read rounds: one exchange per peer confirms the leadership of every group this node leads
//! that has reads waiting, instead of one openraft heartbeat round per group.
//!
//! **Why.** A linearizable read must confirm, after it arrived, that its group's leader is
//! still the leader, and then read once the commit index it saw is applied (Raft's read
//! index). openraft confirms with a heartbeat round of the group's own, which coalesces the
//! reads of one group only. With many groups, nearly every read paid a whole round: a
//! heartbeat to each follower through the group's replication tasks, each follower's Raft
//! core handling it, the leader's core counting the answers. At 64 groups a GET cost 1.9-2.5x
//! the CPU it cost at 8 (stop 43's `larder bench` figures).
//!
//! **How.** A read joins the node's *next* round (never one already running: its view may
//! predate a write the reader saw acknowledged). A round:
//! 1. takes a view of each of its groups: leading, with a committed vote `(term, this node)`;
//!    a read index covering every write acknowledged before; the voters, both halves of a
//!    joint configuration. Usually from what the node has at hand ([`quick_view`]: its saved
//!    vote, its state machine's last applied entry, openraft's published metrics), with no
//!    message to the group's Raft core; otherwise it asks the core (`Raft::with_raft_state`,
//!    [`leader_view`]), whose commit index must be of the leader's own term (once the leader's
//!    first entry has committed it covers every write acknowledged before);
//! 2. sends each peer one [`ReadConfirm`] naming every group of the round it votes in, each
//!    with its term; the peer answers, per group, whether its saved vote ([`SavedVotes`]) is
//!    for this node in that term;
//! 3. confirms a group once, in each of its voter sets, a majority said yes (this node counts
//!    itself if its own saved vote is still the same, checked after the answers it counts);
//! 4. the group's reads then wait until that read index is applied (the quick view's is
//!    applied already), and read.
//!
//! **Why it is linearizable, under any clock behaviour.** A replica records a vote in
//! [`SavedVotes`] before writing it, and openraft grants a vote only once it is written; so a
//! yes given at moment m proves that replica had voted for no later leader by m. Every yes
//! counted was given after the round began, which was after its reads arrived. A later leader
//! needs the votes of a majority of its voters, which shares a voter with the majority that
//! said yes; so no later leader had been elected when the first counted yes was given, and any
//! write acknowledged before the reads arrived was committed by this leader or an earlier one:
//! it is in this leader's log, at or below the read index of step 1. This is openraft's own
//! read index with the heartbeat's acknowledgement replaced by a vote check; no lease, no
//! clock.
//!
//! **Where it steps aside.** A group whose view shows no leadership, or a commit index not yet
//! of its own term (a new leader before its first entry commits), or that no majority confirmed
//! within the round's time, is read through openraft's read index as before. So a round never
//! serves a read openraft would refuse; it only saves work.
//!
//! **Bounds, and a peer that does not answer.** At most [`READS_WAITING_MAX`] reads wait for
//! the next round (more take openraft's read index at once). A round waits for a group's view
//! and for a peer's answer at most the node's `heartbeat_ms` (100 ms), and ends as soon as
//! every group is decided. A peer that failed to answer is not asked again for `heartbeat_ms`:
//! while one is cut off, rounds end once the others answered, so the groups still confirmed by
//! them are not held up by the groups that needed it (those step aside).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use larder_core::bugs::{Bug, Bugs};
use larder_core::env::{Clock, Disk, Env, timeout};
use larder_core::{GroupId, NodeId};
use larder_protocol::{Encoded, ReadConfirm, ReadConfirmAck, call};
use openraft::async_runtime::WatchReceiver;
use openraft::error::{Fatal, LinearizableReadError, RaftError};
use openraft::raft::ReadPolicy;
use openraft::{Membership, ServerState};
use tokio::sync::{Notify, oneshot};

use crate::node::{Group, StorageNode};
use crate::raft::log_store::SavedVotes;
use crate::raft::state_machine::DiskStateMachine;
use crate::raft::{Raft, TypeConfig};

/// Reads that may wait for a node's next round; more use openraft's read index at once.
pub const READS_WAITING_MAX: usize = 16_384;

/// What a read gets from its round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirmation {
    /// The group's leadership was confirmed after the read arrived: read once `read_index`
    /// is applied.
    Confirmed { read_index: u64 },
    /// The round could not confirm it: use openraft's read index.
    StepAside,
}

type Waiter = oneshot::Sender<Confirmation>;

/// The reads waiting for a node's next round, and the round task's wake-up.
#[derive(Debug, Default)]
pub struct ReadRounds {
    waiting: Mutex<Waiting>,
    /// Shared with the round task, which must not keep the node alive while it waits.
    wake: Arc<Notify>,
    /// Peers not asked until the time given (node clock): their last question went unanswered.
    silent: Mutex<BTreeMap<NodeId, Duration>>,
    rounds: AtomicU64,
    /// Group views taken without, and with, a message to the group's Raft core.
    quick_views: AtomicU64,
    core_views: AtomicU64,
    confirmed: AtomicU64,
    stepped_aside: AtomicU64,
}

#[derive(Debug, Default)]
struct Waiting {
    reads: BTreeMap<GroupId, Vec<Waiter>>,
    count: usize,
}

impl ReadRounds {
    /// Joins the next round for a read of `group`; `None` when `max` reads wait already.
    fn join(&self, group: GroupId, max: usize) -> Option<oneshot::Receiver<Confirmation>> {
        let mut waiting = self.waiting.lock().expect("read rounds lock");
        if waiting.count >= max {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        waiting.reads.entry(group).or_default().push(sender);
        waiting.count += 1;
        drop(waiting);
        self.wake.notify_one();
        Some(receiver)
    }

    /// Every read waiting, for the round about to begin.
    fn take(&self) -> BTreeMap<GroupId, Vec<Waiter>> {
        let mut waiting = self.waiting.lock().expect("read rounds lock");
        waiting.count = 0;
        std::mem::take(&mut waiting.reads)
    }

    /// Rounds run since the node started.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Group views rounds took from what the node had at hand ([`quick_view`]).
    pub fn quick_views(&self) -> u64 {
        self.quick_views.load(Ordering::Relaxed)
    }

    /// Group views rounds asked the group's Raft core for ([`leader_view`]).
    pub fn core_views(&self) -> u64 {
        self.core_views.load(Ordering::Relaxed)
    }

    /// Reads a round confirmed.
    pub fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::Relaxed)
    }

    /// Reads that took openraft's read index instead (no leadership in view, a commit index
    /// not yet of the leader's term, no majority in time, or too many waiting).
    pub fn stepped_aside(&self) -> u64 {
        self.stepped_aside.load(Ordering::Relaxed)
    }

    fn is_silent(&self, peer: NodeId, now: Duration) -> bool {
        let mut silent = self.silent.lock().expect("silent lock");
        match silent.get(&peer) {
            Some(until) if *until > now => true,
            Some(_) => {
                silent.remove(&peer);
                false
            }
            None => false,
        }
    }

    fn silence(&self, peer: NodeId, until: Duration) {
        self.silent.lock().expect("silent lock").insert(peer, until);
    }

    /// Wakes the round task (to see the node stopped).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// A group's leadership as its Raft core saw it at the start of a round.
#[derive(Debug, Clone)]
struct LeaderView {
    term: u64,
    /// The commit index: every write acknowledged before the view is at or below it.
    read_index: u64,
    /// The voter sets, each needing a majority (two during a joint configuration).
    voters: Vec<BTreeSet<NodeId>>,
}

/// `group`'s view from what this node already has at hand, without a message to the group's
/// Raft core, when three signals agree that this node leads it in one term `T`:
/// - its own saved vote ([`SavedVotes`]) is for itself in `T`: the term the peers are asked
///   about;
/// - the last entry its state machine applied was written by the leader `(T, this node)`.
///   Entries apply in log order and a leader's first entry follows every entry committed
///   before its term, so everything committed before `T` is applied; and this leader answers
///   a write only after applying it. The applied index therefore covers every write
///   acknowledged before the view and serves as the read index, already applied;
/// - openraft's published metrics show it leading with the committed vote `(T, this node)`:
///   the voters come from there.
///
/// **Why the published voters are safe although they may lag.** openraft publishes its
/// metrics at the top of each pass of its core's loop, so they trail the core by at most the
/// pass running. Once the node leads in `T` (as they show) its log only grows, and the
/// effective membership moves one step at a time: a change appends its joint configuration,
/// and the uniform one is appended only by a later message, sent after the joint one is
/// committed, which a later pass handles, after the metrics showed the joint one. So the
/// voters used are those in effect or the ones just before them, and two configurations one
/// step apart overlap as joint consensus needs: a majority of each voter set of either
/// includes a majority of some voter set of the other that any later leader must win too.
///
/// Anything else (a new leader whose first entry is not applied yet, a vote moved on, metrics
/// not yet showing the leadership) asks the core ([`leader_view`]).
fn quick_view<D: Disk>(
    saved_votes: &SavedVotes,
    group: GroupId,
    handle: &Group<D>,
    me: NodeId,
    bugs: &Bugs,
) -> Option<LeaderView> {
    let (term, leader) = saved_votes.leader(group)?;
    if leader != me {
        return None;
    }
    let leads_in_term =
        |id: &openraft::alias::LeaderIdOf<TypeConfig>| id.term == term && id.node_id == me;
    let voters = {
        let metrics = handle.raft.metrics();
        let metrics = metrics.borrow_watched();
        if metrics.state != ServerState::Leader
            || !metrics.vote.is_committed()
            || !leads_in_term(metrics.vote.leader_id())
        {
            return None;
        }
        voter_sets(metrics.membership_config.membership())
    };
    let applied = handle.state.last_applied()?;
    // The planted bug skips this check: any applied index passes for the read index.
    if !leads_in_term(applied.committed_leader_id()) && !bugs.is_planted(Bug::QuickViewAnyApplied) {
        return None;
    }
    Some(LeaderView {
        term,
        read_index: applied.index(),
        voters,
    })
}

/// The voter sets of `membership`, each needing a majority (two in a joint configuration).
fn voter_sets(membership: &Membership<NodeId, openraft::EmptyNode>) -> Vec<BTreeSet<NodeId>> {
    membership
        .get_joint_config()
        .iter()
        .map(|set| set.iter().copied().collect())
        .collect()
}

/// `raft`'s view if this node leads it with a commit index of its own term.
async fn leader_view<D: Disk>(raft: &Raft<D>, me: NodeId) -> Option<LeaderView> {
    raft.with_raft_state(move |state| {
        if state.server_state != ServerState::Leader {
            return None;
        }
        let vote = state.vote_ref();
        let leader = vote.leader_id();
        if !vote.is_committed() || leader.node_id != me {
            return None;
        }
        let committed = state.local_committed()?;
        // Below the leader's first entry the commit index may lag what earlier leaders
        // committed (Raft §8): openraft's read index waits for that entry; so does this.
        if *committed.committed_leader_id() != *leader {
            return None;
        }
        let voters = voter_sets(state.membership_state.effective().membership());
        Some(LeaderView {
            term: leader.term,
            read_index: committed.index(),
            voters,
        })
    })
    .await
    .ok()
    .flatten()
}

/// A group of a running round: its view, its reads, and who has said yes so far.
struct Pending {
    view: LeaderView,
    reads: Vec<Waiter>,
    yes: BTreeSet<NodeId>,
}

impl<E: Env> StorageNode<E> {
    /// Starts the read-round task. It holds the node weakly: dropping the node ends it.
    pub(crate) fn spawn_read_rounds(self: &Arc<Self>) {
        tokio::spawn(round_loop(
            Arc::downgrade(self),
            self.read_rounds.wake.clone(),
        ));
    }

    /// Confirms that a read of `group` arriving now may be served from this replica's state
    /// linearizably, and waits until that state is recent enough: by the node's next read
    /// round, or, where the round steps aside, by openraft's read index. An error is
    /// openraft's (not the leader, stopped).
    pub(crate) async fn confirm_read<D: Disk>(
        &self,
        group: GroupId,
        raft: &Raft<D>,
        state: &DiskStateMachine<D>,
    ) -> Result<(), RaftError<TypeConfig, LinearizableReadError<TypeConfig>>> {
        if !self.config.read_rounds {
            return raft
                .ensure_linearizable(ReadPolicy::ReadIndex)
                .await
                .map(drop);
        }
        let confirmation = match self.read_rounds.join(group, READS_WAITING_MAX) {
            // A round dropped (the node stopping) steps aside.
            Some(round) => round.await.unwrap_or(Confirmation::StepAside),
            None => Confirmation::StepAside,
        };
        match confirmation {
            Confirmation::Confirmed { read_index } => {
                self.read_rounds.confirmed.fetch_add(1, Ordering::Relaxed);
                // The state machine's own record first: openraft's metrics learn of an apply
                // a pass of its core later.
                if state
                    .last_applied()
                    .is_some_and(|applied| applied.index() >= read_index)
                {
                    return Ok(());
                }
                let applied = raft
                    .metrics()
                    .borrow_watched()
                    .last_applied
                    .as_ref()
                    .map(|log_id| log_id.index());
                if applied.is_some_and(|applied| applied >= read_index) {
                    return Ok(());
                }
                // No timeout here: the caller bounds the whole read.
                raft.wait(None)
                    .applied_index_at_least(Some(read_index), "read round")
                    .await
                    .map(drop)
                    .map_err(|_| RaftError::Fatal(Fatal::Stopped))
            }
            Confirmation::StepAside => {
                self.read_rounds
                    .stepped_aside
                    .fetch_add(1, Ordering::Relaxed);
                // openraft's read index rides the group's heartbeats: a quiet group wakes, so
                // that a heartbeat round lost on the way is followed by the next one an interval
                // later rather than by the read's timeout (`crate::quiet`).
                self.wake(group, raft, false).await;
                raft.ensure_linearizable(ReadPolicy::ReadIndex)
                    .await
                    .map(drop)
            }
        }
    }

    /// Answers a peer's read round: for each group named, whether this replica's saved vote is
    /// for `from` in that term.
    pub(crate) fn answer_read_confirm(
        &self,
        from: NodeId,
        confirm: &ReadConfirm,
    ) -> ReadConfirmAck {
        let held = confirm
            .groups
            .iter()
            .map(|&(group, term)| {
                if self.config.bugs.is_planted(Bug::ReadConfirmIgnoresVote) {
                    // Planted bug: every group named is confirmed, whoever this replica voted for.
                    return self.group(group).is_ok();
                }
                self.group(group).is_ok() && self.saved_votes.holds(group, term, from)
            })
            .collect();
        ReadConfirmAck { held }
    }

    /// One round for `reads` (see the module docs).
    async fn run_round(&self, reads: BTreeMap<GroupId, Vec<Waiter>>) {
        self.read_rounds.rounds.fetch_add(1, Ordering::Relaxed);
        let me = self.id();
        let clock = self.env.clock();
        let limit = Duration::from_millis(self.config.heartbeat_ms.max(1));
        // 1. The views, all groups at once. A Raft core too busy to answer in time must not
        // hold up the other groups: its reads step aside.
        let views = futures::future::join_all(reads.into_iter().map(|(group, reads)| async move {
            let view = match self.group(group) {
                Ok(handle) => {
                    match quick_view(&self.saved_votes, group, &handle, me, &self.config.bugs) {
                        Some(view) => {
                            self.read_rounds.quick_views.fetch_add(1, Ordering::Relaxed);
                            Some(view)
                        }
                        None => {
                            self.read_rounds.core_views.fetch_add(1, Ordering::Relaxed);
                            timeout(clock, limit, leader_view(&handle.raft, me))
                                .await
                                .ok()
                                .flatten()
                        }
                    }
                }
                Err(_) => None,
            };
            (group, view, reads)
        }))
        .await;
        let mut pending = BTreeMap::new();
        for (group, view, reads) in views {
            match view {
                Some(view) => {
                    pending.insert(
                        group,
                        Pending {
                            view,
                            reads,
                            yes: BTreeSet::new(),
                        },
                    );
                }
                None => answer(reads, Confirmation::StepAside),
            }
        }
        // A group of one voter is confirmed by this node's own vote.
        self.decide(&mut pending);
        // 2. One question per peer, for every group it votes in.
        let now = clock.now();
        let mut asks: BTreeMap<NodeId, Vec<(GroupId, u64)>> = BTreeMap::new();
        for (group, waiting) in &pending {
            let peers: BTreeSet<NodeId> = waiting.view.voters.iter().flatten().copied().collect();
            for peer in peers.into_iter().filter(|peer| *peer != me) {
                if self.read_rounds.is_silent(peer, now) {
                    continue;
                }
                asks.entry(peer)
                    .or_default()
                    .push((*group, waiting.view.term));
            }
        }
        let net = self.env.net();
        let mut answers: FuturesUnordered<_> = asks
            .into_iter()
            .map(|(peer, groups)| async move {
                let request = Encoded::new(ReadConfirm {
                    groups: groups.clone(),
                });
                (peer, groups, call(net, peer, &request, limit).await)
            })
            .collect();
        // 3. Counted as they come; a group is answered as soon as it is confirmed.
        while !pending.is_empty() {
            let Some((peer, groups, answer)) = answers.next().await else {
                break;
            };
            let Ok(ReadConfirmAck { held }) = answer else {
                self.read_rounds.silence(peer, clock.now() + limit);
                continue;
            };
            if held.len() != groups.len() {
                tracing::warn!(peer, "a read round's answer does not match its question");
                continue;
            }
            for ((group, _), yes) in groups.iter().zip(held) {
                if let (true, Some(waiting)) = (yes, pending.get_mut(group)) {
                    waiting.yes.insert(peer);
                }
            }
            self.decide(&mut pending);
        }
        for (_, waiting) in pending {
            answer(waiting.reads, Confirmation::StepAside);
        }
    }

    /// Answers the groups of `pending` that a majority of each voter set has confirmed.
    fn decide(&self, pending: &mut BTreeMap<GroupId, Pending>) {
        let me = self.id();
        pending.retain(|group, waiting| {
            // After the answers counted: see the module docs.
            let mine = self.saved_votes.holds(*group, waiting.view.term, me);
            let confirmed = waiting.view.voters.iter().all(|set| {
                let yes = set
                    .iter()
                    .filter(|voter| waiting.yes.contains(voter) || (**voter == me && mine))
                    .count();
                yes * 2 > set.len()
            });
            if !confirmed {
                return true;
            }
            let confirmation = Confirmation::Confirmed {
                read_index: waiting.view.read_index,
            };
            answer(std::mem::take(&mut waiting.reads), confirmation);
            false
        });
    }
}

fn answer(reads: Vec<Waiter>, confirmation: Confirmation) {
    for read in reads {
        // A read that gave up (timed out) no longer listens.
        let _ = read.send(confirmation);
    }
}

/// Runs a round whenever reads wait, one at a time. Ends when the node is dropped or stopped.
async fn round_loop<E: Env>(node: Weak<StorageNode<E>>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(node) = node.upgrade() else { return };
        loop {
            let reads = node.read_rounds.take();
            if node.is_stopped() {
                for (_, reads) in reads {
                    answer(reads, Confirmation::StepAside);
                }
                return;
            }
            if reads.is_empty() {
                break;
            }
            node.run_round(reads).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_past_the_waiting_bound_is_turned_away_and_a_round_takes_every_read() {
        let rounds = ReadRounds::default();
        let first = rounds.join(1, 3).expect("room");
        let _second = rounds.join(1, 3).expect("room");
        let _third = rounds.join(2, 3).expect("room");
        assert!(
            rounds.join(2, 3).is_none(),
            "the fourth read is past the bound"
        );
        let taken = rounds.take();
        assert_eq!(taken.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(taken[&1].len(), 2);
        // Taken by a round: the bound counts from zero again.
        assert!(rounds.join(2, 3).is_some());
        drop(taken);
        assert!(
            first.blocking_recv().is_err(),
            "a dropped round answers nothing"
        );
    }
}
