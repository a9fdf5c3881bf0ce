//! Quiet groups: one beacon per peer per interval instead of every idle group's timers and
//! heartbeats.
//!
//! **Why.** openraft wakes each group's RaftCore every `heartbeat_ms * 13 / 64` (20 ms) to check
//! its election and heartbeat timers, and its leader heartbeats each follower every
//! [`NodeConfig::heartbeat_ms`](crate::config::NodeConfig::heartbeat_ms), whether or not
//! anything happens. A three-node cluster of 64 groups woke about 10,000 times and made 1,280
//! round trips a second doing nothing: an idle `larder up --groups 64` used 35–45 % of a core,
//! spent in the RaftCore's notification handling, its runtime statistics and task switches.
//!
//! **How** (TiKV's hibernating regions, Cellar's per-node heartbeat):
//! - A leader turns its group's openraft ticker off while the group is *settled*: no write
//!   (nor a read through openraft's read index) reached it for an election timeout, and
//!   every other member has matched its last log entry and none said (below) that it has not
//!   learned the commit index. Reads confirmed by read rounds
//!   (`crate::read_rounds`) need no ticks: a group only read from settles (a read a round
//!   could not confirm, which takes openraft's read index, wakes it). With no ticks it
//!   sends no heartbeats and checks no timers. A write, a follower that lags or comes back, a
//!   learner being filled, turns the ticker on again until the group settles. Entries and commit-index updates are replicated as always.
//! - Every interval, the node sends each peer that shares a group it leads one
//!   [`LeaderBeacon`]: the groups it leads, with their terms and commit indexes. The peer
//!   answers which of those groups' commit index it has not learned: matching the last entry
//!   is not knowing it committed, and the message that would have said so can be lost just as
//!   the group settles (openraft sends a commit that no entries carry bare, after
//!   `commit_hold_ms`, once more if that send fails, and then waits for new entries or a
//!   heartbeat). Such a group keeps its heartbeats, which carry the commit index, until no
//!   follower has reported it for two intervals; without this a follower of an idle group
//!   stayed an entry behind for good (cluster swarm seed 157 with the planted bug
//!   `unchanged-write-unconfirmed`, which only moved its schedule).
//! - A follower's ticker is off while its group's leader has been heard from (by beacon, naming
//!   the group at the follower's term or a later one) within an election timeout drawn from
//!   `[election_timeout_ms_min, election_timeout_ms_max)`. Past that, it is on, and openraft
//!   elects as it always did (pre-vote first, its own randomised retries).
//! - Before a write, a quiet leader turns its ticker on and confirms its leadership with one
//!   read-index round ([`StorageNode::wake`]): openraft takes writes only under a valid lease.
//!
//! **Safety does not depend on any of this.** Votes, terms, commits and read-index
//! confirmations are openraft's, unchanged; a beacon only decides *when* a follower may start
//! an election, which Raft leaves to timing anyway. **Liveness** does: a dead or cut-off node
//! sends nothing; a live node that no longer leads a group (restarted, deposed) does not name
//! it; a stale leader names an older term, which a follower at a newer term ignores; a leader
//! handing leadership over (which openraft keeps in office, silent, until a successor deposes
//! it) stops naming the group, so that a successor that never comes is replaced by election
//! (seed 81 of the cluster sweep: a transfer to a node destroyed next). The simulator's
//! liveness phase checks every seed, and the planted bug `quiet-claims-every-group` (a beacon
//! naming every hosted group) must be caught by it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use larder_core::bugs::Bug;
use larder_core::env::{Clock, Env, Rng, SeededRng, derive_seed};
use larder_core::{GroupId, NodeId};
use larder_protocol::{BeaconAck, Encoded, LeaderBeacon, LedGroup, call};
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;

use crate::node::StorageNode;

/// The seed stream of a node's election-timeout draws.
const QUIET_STREAM: u64 = 0x7175_6965;

/// When something last happened to each group, on the node's clock.
#[derive(Debug, Default)]
struct GroupTimes(Mutex<BTreeMap<GroupId, Duration>>);

impl GroupTimes {
    fn at(&self, group: GroupId) -> Option<Duration> {
        self.0
            .lock()
            .expect("group times lock")
            .get(&group)
            .copied()
    }

    fn mark(&self, group: GroupId, now: Duration) {
        self.0.lock().expect("group times lock").insert(group, now);
    }

    fn retain(&self, hosted: &BTreeSet<GroupId>) {
        self.0
            .lock()
            .expect("group times lock")
            .retain(|group, _| hosted.contains(group));
    }
}

/// What the serving side tells the quiet loop, per group (times on the node's clock).
#[derive(Debug, Default)]
pub struct Quiet {
    /// When the group last heard its leader by beacon.
    heard: GroupTimes,
    /// When the group last served a client command here.
    touched: GroupTimes,
    /// The term in which this node, leading the group, began handing leadership over. openraft
    /// keeps such a leader in office, sending no heartbeats and taking no writes, until a
    /// successor deposes it; if the successor never elects itself (it died, or its log was
    /// behind), only the other followers' election ends that. So the group is not named in
    /// beacons for the rest of that term.
    handing_over: Mutex<BTreeMap<GroupId, u64>>,
    /// The groups whose openraft ticker this node turned off (absent: on, openraft's default).
    silenced: Mutex<BTreeSet<GroupId>>,
    /// When a follower last answered this node's beacon saying it has not learned the commit
    /// index of a group this node leads. Such a group does not settle (its heartbeats, which
    /// carry the commit index, stay on) until no follower has said so for two intervals.
    lagging: GroupTimes,
}

impl Quiet {
    /// This node, leading `group` in `term`, begins handing leadership over.
    pub(crate) fn hand_over(&self, group: GroupId, term: u64) {
        self.handing_over
            .lock()
            .expect("handing over lock")
            .insert(group, term);
    }

    /// Whether this node began handing `group` over in `term` (and forgets an older hand-over).
    fn handing_over(&self, group: GroupId, term: u64) -> bool {
        let mut handing_over = self.handing_over.lock().expect("handing over lock");
        match handing_over.get(&group) {
            Some(&at) if at == term => true,
            Some(_) => {
                handing_over.remove(&group);
                false
            }
            None => false,
        }
    }

    fn is_silenced(&self, group: GroupId) -> bool {
        self.silenced
            .lock()
            .expect("silenced lock")
            .contains(&group)
    }

    /// Drops what is kept of groups no longer hosted, so the maps stay bounded by the
    /// hosted set.
    fn forget_unhosted(&self, hosted: &BTreeSet<GroupId>) {
        self.heard.retain(hosted);
        self.touched.retain(hosted);
        self.lagging.retain(hosted);
        self.handing_over
            .lock()
            .expect("handing over lock")
            .retain(|group, _| hosted.contains(group));
        self.silenced
            .lock()
            .expect("silenced lock")
            .retain(|group| hosted.contains(group));
    }

    /// Records `group`'s ticker as off (`silent`) or on; whether that is a change.
    fn silence(&self, group: GroupId, silent: bool) -> bool {
        let mut silenced = self.silenced.lock().expect("silenced lock");
        if silent {
            silenced.insert(group)
        } else {
            silenced.remove(&group)
        }
    }
}

impl<E: Env> StorageNode<E> {
    /// Starts the quiet-groups task. It holds a weak reference: dropping the node ends it.
    pub(crate) fn spawn_quiet(self: &Arc<Self>) {
        tokio::spawn(quiet_loop(Arc::downgrade(self)));
    }

    /// Takes a beacon from peer `from` (the id its connection proved): each group it names that
    /// this node hosts, with `from` among the group's voters, at this replica's term or later,
    /// has heard its leader now. Answers which of those groups' commit index this replica has
    /// not learned.
    pub(crate) fn hear_beacon(&self, from: NodeId, beacon: &LeaderBeacon) -> BeaconAck {
        let now = self.env.clock().now();
        let mut lagging = Vec::new();
        for led in &beacon.leading {
            let Ok(handle) = self.group(led.group) else {
                continue;
            };
            let (counts, lags) = {
                let metrics = handle.raft.metrics();
                let metrics = metrics.borrow_watched();
                let counts = led.term >= metrics.current_term
                    && metrics
                        .membership_config
                        .membership()
                        .voter_ids()
                        .any(|voter| voter == from);
                let known = metrics
                    .local_committed
                    .as_ref()
                    .map(|log_id| log_id.index());
                // A stopped replica learns nothing from heartbeats (the supervisor reopens it).
                (
                    counts,
                    metrics.running_state.is_ok() && known < led.committed,
                )
            };
            if counts {
                self.quiet.heard.mark(led.group, now);
                if lags {
                    lagging.push(led.group);
                }
            }
        }
        BeaconAck { lagging }
    }
}

impl<E: Env> StorageNode<E> {
    /// Makes `group` ready for a command: marks it in use (so its leader's ticker stays on),
    /// and if this node leads it quietly, turns the ticker on and, before a write, confirms
    /// its leadership with one heartbeat round. openraft takes a write only while the
    /// leader's lease is valid (a quorum acknowledged it within the lease), and a quiet
    /// leader's lease has run out: without the round the first write to a quiet group is
    /// refused as "not the leader, none known" (the center's replica replacements in swarm
    /// seed 13 kept failing so). The round costs one round trip per wake-up, as a hibernating
    /// region's does in TiKV. A read (`write` false) needs no lease: its read-index round is
    /// its own confirmation. A follower's ticker is left alone: turned on by a command it
    /// cannot serve, it would campaign against a healthy leader.
    pub(crate) async fn wake<D: larder_core::env::Disk>(
        &self,
        group: GroupId,
        raft: &crate::raft::Raft<D>,
        write: bool,
    ) {
        self.quiet.touched.mark(group, self.env.clock().now());
        let leads = raft.metrics().borrow_watched().state == ServerState::Leader;
        if leads && self.quiet.silence(group, false) {
            raft.runtime_config().tick(true);
            if write {
                // A failure here is the command's to report: it fails the same way next.
                let _ = raft
                    .ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
                    .await;
            }
        }
    }
}

impl<E: Env> StorageNode<E> {
    /// Proposes `entry` to `group`'s log once the group is ready for a write ([`Self::wake`]).
    /// Client commands, migration steps and the group-clock advance all propose through here,
    /// so none can miss the wake (the advance did once: stop 51).
    pub(crate) async fn propose<D: larder_core::env::Disk>(
        &self,
        group: GroupId,
        raft: &crate::raft::Raft<D>,
        entry: crate::raft::Request,
    ) -> Result<
        openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>,
        openraft::error::RaftError<
            crate::raft::TypeConfig,
            openraft::error::ClientWriteError<crate::raft::TypeConfig>,
        >,
    > {
        self.wake(group, raft, true).await;
        raft.client_write(entry).await
    }
}

/// Every `heartbeat_ms`: turns each led group's ticker off or on as it settles or not, each
/// followed group's as its leader is heard or not, and sends the beacons. Ends when the node
/// stops or is dropped.
async fn quiet_loop<E: Env>(node: Weak<StorageNode<E>>) {
    let (clock, net, interval, timeout_min, timeout_spread, seed, id, bugs) = match node.upgrade() {
        Some(node) => (
            node.env.clock().clone(),
            node.env.net().clone(),
            Duration::from_millis(node.config.heartbeat_ms.max(1)),
            node.config.election_timeout_ms_min,
            node.config
                .election_timeout_ms_max
                .saturating_sub(node.config.election_timeout_ms_min)
                .max(1),
            node.env.seed(),
            node.id(),
            node.config.bugs.clone(),
        ),
        None => return,
    };
    let mut rng = SeededRng::new(derive_seed(seed, QUIET_STREAM ^ id));
    let mut draw = move || Duration::from_millis(timeout_min + rng.below(timeout_spread));
    let started = clock.now();
    let idle_after = Duration::from_millis(timeout_min);
    // Per followed group: how long it waits, since it last heard its leader, before electing.
    let mut patience: BTreeMap<GroupId, Duration> = BTreeMap::new();
    loop {
        let (leading, peers) = {
            let Some(node) = node.upgrade() else { return };
            if node.is_stopped() {
                return;
            }
            let now = clock.now();
            let mut leading = Vec::new();
            let mut peers = BTreeSet::new();
            let groups = node.all_groups();
            for (group, handle) in &groups {
                if node.broken.contains(*group) {
                    continue;
                }
                let (state, term, committed, settled, members) = {
                    let metrics = handle.raft.metrics();
                    let metrics = metrics.borrow_watched();
                    if metrics.running_state.is_err() {
                        continue;
                    }
                    let last = metrics.last_log_index;
                    // Reads that take openraft's read index (a read round stepped aside, or
                    // the rounds off) confirm leadership with a heartbeat round of their own;
                    // while they use the group, periodic heartbeats stay on so that a round
                    // lost on the way is followed by another one interval later rather than
                    // by the read's timeout. Writes keep them on too; reads confirmed by read
                    // rounds do not (they need no timer).
                    let idle = node
                        .quiet
                        .touched
                        .at(*group)
                        .is_none_or(|at| now.saturating_sub(at) >= idle_after);
                    // A follower that said it has not learned the commit index (the one message
                    // that would have told it was lost) keeps the heartbeats on until it has.
                    let lag_heard = !bugs.is_planted(Bug::QuietIgnoresLag)
                        && node
                            .quiet
                            .lagging
                            .at(*group)
                            .is_some_and(|at| now.saturating_sub(at) < interval * 2);
                    let settled = idle
                        && !lag_heard
                        && metrics.replication.as_ref().is_some_and(|replication| {
                            replication.values().all(|matched| {
                                matched.as_ref().map(|log_id| log_id.index()) == last
                            })
                        });
                    let membership = metrics.membership_config.membership();
                    let members: Vec<NodeId> = membership
                        .voter_ids()
                        .chain(membership.learner_ids())
                        .collect();
                    let committed = metrics
                        .local_committed
                        .as_ref()
                        .map(|log_id| log_id.index());
                    (
                        metrics.state,
                        metrics.current_term,
                        committed,
                        settled,
                        members,
                    )
                };
                let config = handle.raft.runtime_config();
                let tick = if state == ServerState::Leader {
                    patience.remove(group);
                    if !node.quiet.handing_over(*group, term) {
                        leading.push(LedGroup {
                            group: *group,
                            term,
                            committed,
                        });
                        peers.extend(members.iter().copied().filter(|member| *member != id));
                    }
                    !settled
                } else {
                    if bugs.is_planted(Bug::QuietClaimsEveryGroup) {
                        leading.push(LedGroup {
                            group: *group,
                            term,
                            committed,
                        });
                        peers.extend(members.iter().copied().filter(|member| *member != id));
                    }
                    let wait = patience.entry(*group).or_insert_with(&mut draw);
                    let heard = node.quiet.heard.at(*group).unwrap_or(started).max(started);
                    let electing = now.saturating_sub(heard) >= *wait;
                    if !electing && !node.quiet.is_silenced(*group) {
                        // A leader is heard again: the next silence is waited out with a
                        // fresh draw, so followers of one group that drew alike once do not
                        // campaign together every time.
                        *wait = draw();
                    }
                    electing
                };
                // Only a change is sent: the ticker wakes on each.
                if node.quiet.silence(*group, !tick) {
                    config.tick(tick);
                }
            }
            // Groups no longer hosted are forgotten.
            let hosted: BTreeSet<GroupId> = groups.iter().map(|(group, _)| *group).collect();
            patience.retain(|group, _| hosted.contains(group));
            node.quiet.forget_unhosted(&hosted);
            (leading, peers)
        };
        if !leading.is_empty() {
            let beacon = Encoded::new(LeaderBeacon { leading });
            for peer in peers {
                let (net, beacon, node) = (net.clone(), beacon.clone(), node.clone());
                // Not awaited: a dead peer's call must not delay the next round for the others.
                tokio::spawn(async move {
                    let Ok(ack) = call(&net, peer, &beacon, interval).await else {
                        return;
                    };
                    let Some(node) = node.upgrade() else { return };
                    let now = node.env.clock().now();
                    for group in ack.lagging {
                        node.quiet.lagging.mark(group, now);
                    }
                });
            }
        }
        clock.sleep(interval).await;
    }
}
