//! The center's control loop: on every replica, keep the local routing copy fresh; on the
//! leader, read the durable state, build the planner's [`View`] with the soft state, run the
//! pure [`plan::plan`], and carry out its actions (registry and routing writes, admin requests
//! to storage nodes, learner-first repairs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use larder_core::bugs::Bug;
use larder_core::env::{Clock, Env, timeout};
use larder_core::kv::{Command, Reply};
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use larder_protocol::{
    AddGroup, AdminResponse, CENTER_GROUP, ClientRequest, ClientResponse, Encoded, RemoveGroup,
    ReplaceVoter, Rpc, TransferLeadership, call, encode,
};
use openraft::EmptyNode;
use openraft::async_runtime::WatchReceiver;

use crate::Center;
use crate::center::{Round, Soft};
use crate::config::{CenterConfig, CenterError};
use crate::plan::{self, Action, Liveness, NodeView, RepairInFlight, View};
use crate::store::{Durable, node_key};

/// Most admin messages in flight at once.
const ADMIN_IN_FLIGHT_MAX: usize = 64;
/// A group counted for an automatic split and found under the threshold is not counted again
/// for this long.
const SPLIT_RECHECK: Duration = Duration::from_secs(30);
/// Attempts of one replace: the leader the center believes in, then the hint it gives.
const REPLACE_ATTEMPTS_MAX: usize = 2;

impl<E: Env> Center<E> {
    /// Starts the control loop. It holds a weak reference: dropping the center ends it.
    pub(crate) fn spawn_control_loop(self: &Arc<Self>) {
        tokio::spawn(control_loop(Arc::downgrade(self)));
    }

    /// The center group's current Raft term, as this replica knows it.
    pub(crate) fn center_term(&self) -> Result<u64, CenterError> {
        let raft = self.node.raft(CENTER_GROUP)?;
        let metrics = raft.metrics();
        Ok(metrics.borrow_watched().current_term)
    }

    /// One round of the control loop on the center leader.
    async fn lead(self: &Arc<Self>) -> Result<(), CenterError> {
        let clock = self.node.env().clock().clone();
        let term = self.center_term()?;
        {
            let mut soft = self.soft.lock().expect("soft lock");
            if soft.term != Some(term) {
                tracing::info!(center = self.node.id(), term, "leading the center");
                *soft = Soft {
                    term: Some(term),
                    term_started: clock.now(),
                    ..Soft::default()
                };
            }
        }
        let durable = self.load().await?;
        self.resume_migrations(term, &durable.migrations);
        self.ensure_observers().await;
        let migrating = durable.migrations.values().any(|m| m.phase.is_active());
        let now = clock.now();
        let view = Arc::new(self.view(durable, now));
        let actions = plan::plan(&view, &self.config.plan_config());
        if !migrating {
            let rechecked: BTreeSet<GroupId> = {
                let mut soft = self.soft.lock().expect("soft lock");
                soft.split_checked.retain(|_, until| *until > now);
                soft.split_checked.keys().copied().collect()
            };
            // Groups counted lately are left out until their recheck time.
            let mut candidates = (*view).clone();
            for node in candidates.nodes.values_mut() {
                if let Some(heard) = node.heard.as_mut() {
                    heard.groups.retain(|group, _| !rechecked.contains(group));
                }
            }
            if let Some(group) = plan::plan_split(
                &candidates,
                self.config.split_records_max,
                self.config.split_groups_max,
            ) {
                self.spawn_split(term, group, &view, now);
            } else if let Some(group) = plan::plan_split_for_nodes(
                &view,
                self.config.groups_per_node_min,
                self.config.split_groups_max,
            ) {
                self.spawn_split_for_nodes(term, group);
            } else if let Some((group, slot)) = plan::plan_hot_slot(
                &view,
                self.config.hot_slot_requests_per_sec_max,
                self.config.split_groups_max,
            ) {
                self.spawn_isolate(term, group, slot);
            }
        }
        self.soft.lock().expect("soft lock").last_round = Some(Round {
            at: now,
            view: view.clone(),
        });
        let mut routing = view.routing.clone();
        for action in actions {
            let key = action_key(&action);
            if self.backing_off(&key, now) {
                continue;
            }
            match self.carry_out(action, &view, &mut routing, term, now).await {
                Ok(()) => {
                    self.soft.lock().expect("soft lock").backoff.remove(&key);
                }
                // Leadership or the routing table moved on: the rest of this plan is stale.
                Err(error) if ends_the_round(&error) => return Err(error),
                // One action that keeps failing must not starve the ones planned after it
                // (a repair behind a registry write that fails, say): it backs off, they go on.
                Err(error) => {
                    let wait = self.action_failed(&key, now);
                    tracing::warn!(
                        action = key,
                        %error,
                        retry_in_ms = wait.as_millis() as u64,
                        "a control action failed; the others go on"
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether the action named `key` failed lately and waits before its next attempt.
    fn backing_off(&self, key: &str, now: Duration) -> bool {
        let soft = self.soft.lock().expect("soft lock");
        soft.backoff
            .get(key)
            .is_some_and(|backoff| backoff.until > now)
    }

    /// Records a failure of the action named `key`; returns how long it now waits. The first
    /// failure retries at the next round, as a transient error (a leader change in a group)
    /// deserves; each further one doubles the wait, from a heartbeat up to
    /// [`ACTION_BACKOFF_MAX`].
    fn action_failed(&self, key: &str, now: Duration) -> Duration {
        let mut soft = self.soft.lock().expect("soft lock");
        let backoff = soft.backoff.entry(key.to_string()).or_default();
        backoff.failures += 1;
        let wait = backoff_wait(
            backoff.failures,
            Duration::from_millis(self.config.heartbeat_ms),
        );
        backoff.until = now + wait;
        wait
    }

    /// Builds the planner's input from the durable state and the soft state at `now`
    /// ([`build_view`]).
    fn view(&self, durable: Durable, now: Duration) -> View {
        let mut soft = self.soft.lock().expect("soft lock");
        build_view(&self.config, &mut soft, durable, now)
    }

    async fn carry_out(
        self: &Arc<Self>,
        action: Action,
        view: &View,
        routing: &mut Option<RoutingTable>,
        term: u64,
        now: Duration,
    ) -> Result<(), CenterError> {
        match action {
            Action::Register(record) => {
                // Planned from the round's view: if the record changed since (an operator
                // drained the node meanwhile), writing would undo that change, so it waits for
                // the next round's plan. (Cluster swarm seed 1105: a node marked draining
                // while the round that saw it come back up was running was registered `Up`
                // again, given replicas and a leadership, and its drain never finished.)
                let _writing = self.registry_writes.lock().await;
                if !self.config.bugs.is_planted(Bug::RegistryOverwritesDrain) {
                    let planned_from = view.nodes.get(&record.id).and_then(|n| n.record.as_ref());
                    let stored = self.read_node_record(record.id).await?;
                    if stored.as_ref() != planned_from {
                        tracing::info!(
                            node = record.id,
                            "registry record changed since the plan; replanning"
                        );
                        return Ok(());
                    }
                }
                tracing::info!(node = record.id, state = ?record.state, "registry");
                self.execute(Command::set(node_key(record.id), encode(&record)))
                    .await?;
            }
            Action::Bootstrap(table) => {
                if self.install_routing(&table).await? {
                    *routing = Some(table);
                }
            }
            Action::Adopt { group, replicas } => {
                let Some(current) = routing.as_ref() else {
                    return Ok(());
                };
                let next = current.with_replicas(group, replicas)?;
                if !self.install_routing(&next).await? {
                    // Someone else moved the table on: stop here, reread next tick.
                    return Err(CenterError::Raft {
                        what: "routing compare-and-set",
                        reason: format!("epoch {} exists", next.epoch()),
                    });
                }
                *routing = Some(next);
                let mut soft = self.soft.lock().expect("soft lock");
                note_adopted(&mut soft, &view.nodes, group, now);
            }
            Action::Recreate { old, new, replicas } => {
                let Some(current) = routing.as_ref() else {
                    return Ok(());
                };
                tracing::info!(old, new, ?replicas, "recreating a group that never formed");
                let next = current.recreate_group(old, new, replicas)?;
                if !self.install_routing(&next).await? {
                    return Err(CenterError::Raft {
                        what: "routing compare-and-set",
                        reason: format!("epoch {} exists", next.epoch()),
                    });
                }
                *routing = Some(next);
            }
            Action::Host {
                node,
                group,
                initialize,
            } => self.spawn_admin(node, group, 0, AddGroup { group, initialize }),
            Action::Drop { node, group } => {
                tracing::info!(node, group, "dropping a stale replica");
                self.spawn_admin(node, group, 1, RemoveGroup { group });
            }
            Action::MoveLeader { group, from, to } => {
                tracing::info!(group, from, to, "moving leadership");
                let cooldown = Duration::from_millis(self.config.leader_move_cooldown_ms);
                self.soft
                    .lock()
                    .expect("soft lock")
                    .cooling
                    .insert(group, now + cooldown);
                self.spawn_admin(from, group, 2, TransferLeadership { group, to });
            }
            Action::Repair {
                group,
                old,
                new,
                leader,
            } => {
                tracing::info!(group, old, new, leader, "replacing a dead replica");
                bump(&self.counters.repairs);
                self.soft
                    .lock()
                    .expect("soft lock")
                    .repairs
                    .insert(group, RepairInFlight { old, new });
                let center = self.clone();
                tokio::spawn(async move {
                    center.repair(term, group, old, new, leader).await;
                });
            }
        }
        Ok(())
    }

    /// Splits `group` in the background (`split_group`) if its leader counts more than
    /// `split_records_max` records (`DBSIZE`: the heartbeats' figure is an estimate from above
    /// and stays high after the group gave slots away, so it only picks the candidate), unless
    /// a split is being started already. A group counted at or below the threshold, or that
    /// could not be counted, is not asked again for [`SPLIT_RECHECK`].
    fn spawn_split(self: &Arc<Self>, term: u64, group: GroupId, view: &View, now: Duration) {
        let leader = view.nodes.iter().find_map(|(id, node)| {
            node.heard
                .as_ref()
                .and_then(|h| h.groups.get(&group))
                .filter(|status| status.is_leader && node.liveness == Liveness::Up)
                .map(|_| *id)
        });
        {
            let mut soft = self.soft.lock().expect("soft lock");
            if soft.splitting || soft.term != Some(term) {
                return;
            }
            soft.split_checked.insert(group, now + SPLIT_RECHECK);
            if leader.is_none() {
                return;
            }
            soft.splitting = true;
        }
        let center = self.clone();
        tokio::spawn(async move {
            let records = match leader {
                Some(leader) => center.count_records(group, leader).await,
                None => None,
            };
            match records {
                Some(records) if records > center.config.split_records_max => {
                    match center.split_group(group).await {
                        Ok(migration) => {
                            bump(&center.counters.splits);
                            tracing::info!(
                                group,
                                records,
                                migration = migration.id,
                                "automatic split: the group is past split_records_max"
                            )
                        }
                        Err(error) => {
                            tracing::info!(group, %error, "automatic split not started")
                        }
                    }
                }
                records => tracing::debug!(group, ?records, "automatic split: not past it"),
            }
            center.soft.lock().expect("soft lock").splitting = false;
        });
    }

    /// Runs `work` (an automatic migration: a split or a hot slot's move) in the background,
    /// unless one is being started already or this center is no longer the leader of `term`.
    fn spawn_automatic<F>(self: &Arc<Self>, term: u64, work: impl FnOnce(Arc<Self>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        {
            let mut soft = self.soft.lock().expect("soft lock");
            if soft.splitting || soft.term != Some(term) {
                return;
            }
            soft.splitting = true;
        }
        let center = self.clone();
        let work = work(center.clone());
        tokio::spawn(async move {
            work.await;
            center.soft.lock().expect("soft lock").splitting = false;
        });
    }

    /// Splits `group` in the background because the table holds fewer groups than
    /// `groups_per_node_min` per storage node ([`plan::plan_split_for_nodes`]).
    fn spawn_split_for_nodes(self: &Arc<Self>, term: u64, group: GroupId) {
        self.spawn_automatic(term, move |center| async move {
            match center.split_group(group).await {
                Ok(migration) => {
                    bump(&center.counters.splits);
                    tracing::info!(
                        group,
                        to = migration.to,
                        migration = migration.id,
                        "automatic split: fewer groups than groups_per_node_min per storage node"
                    )
                }
                Err(error) => tracing::info!(group, %error, "automatic split not started"),
            }
        });
    }

    /// Moves the hot `slot` of `group` into a new group of its own in the background
    /// ([`Center::isolate_slot`]).
    fn spawn_isolate(self: &Arc<Self>, term: u64, group: GroupId, slot: u16) {
        self.spawn_automatic(term, move |center| async move {
            match center.isolate_slot(group, slot).await {
                Ok(migration) => {
                    bump(&center.counters.hot_slot_moves);
                    tracing::info!(
                        group,
                        slot,
                        to = migration.to,
                        migration = migration.id,
                        "hot slot moved to a group of its own: past hot_slot_requests_per_sec_max"
                    )
                }
                Err(error) => tracing::info!(group, slot, %error, "hot slot not moved"),
            }
        });
    }

    /// The records `group` holds, counted by its leader `leader` (`DBSIZE`, a linearizable
    /// read), or `None` if it could not be asked.
    async fn count_records(&self, group: GroupId, leader: NodeId) -> Option<u64> {
        let request = Encoded::new(ClientRequest {
            group,
            command: Command::DbSize,
            session: None,
            epoch: 0,
        });
        let limit = Duration::from_millis(self.config.admin_timeout_ms);
        match call(self.node.env().net(), leader, &request, limit).await {
            Ok(ClientResponse::Reply(Reply::Int(records))) => u64::try_from(records).ok(),
            _ => None,
        }
    }

    /// Makes every configured observer a learner of the center group.
    async fn ensure_observers(&self) {
        if self.config.observers.is_empty() {
            return;
        }
        let Ok(raft) = self.node.raft(CENTER_GROUP) else {
            return;
        };
        let members: BTreeSet<NodeId> = raft.voter_ids().chain(raft.learner_ids()).collect();
        let limit = Duration::from_millis(self.config.admin_timeout_ms);
        for observer in &self.config.observers {
            if members.contains(observer) {
                continue;
            }
            let add = raft.add_learner(*observer, EmptyNode {}, false);
            match timeout(self.node.env().clock(), limit, add).await {
                Ok(Ok(_)) => tracing::info!(observer, "observer added to the center group"),
                Ok(Err(error)) => tracing::warn!(observer, %error, "adding an observer"),
                Err(_) => tracing::warn!(observer, "adding an observer timed out"),
            }
        }
    }

    /// Starts a task for every active migration this leader does not run yet (a new leader
    /// resumes its predecessor's from their records).
    fn resume_migrations(
        self: &Arc<Self>,
        term: u64,
        migrations: &BTreeMap<u64, larder_protocol::Migration>,
    ) {
        for migration in migrations.values().filter(|m| m.phase.is_active()) {
            if !self
                .soft
                .lock()
                .expect("soft lock")
                .migrating
                .insert(migration.id)
            {
                continue;
            }
            let center = self.clone();
            let migration = migration.clone();
            tokio::spawn(async move {
                let id = migration.id;
                if let Err(error) = center.clone().run_migration(term, migration).await {
                    tracing::info!(id, %error, "migration task ended");
                }
                let mut soft = center.soft.lock().expect("soft lock");
                if soft.term == Some(term) {
                    soft.migrating.remove(&id);
                }
            });
        }
    }

    /// Sends `message` to `node` in the background, unless the same kind of message for the
    /// same group is still in flight there.
    fn spawn_admin<R>(self: &Arc<Self>, node: NodeId, group: GroupId, kind: u8, request: R)
    where
        R: Rpc<Response = AdminResponse> + 'static,
    {
        let key = (node, group, kind);
        {
            let mut soft = self.soft.lock().expect("soft lock");
            if soft.admin.contains(&key) || soft.admin.len() >= ADMIN_IN_FLIGHT_MAX {
                return;
            }
            soft.admin.insert(key);
        }
        let center = self.clone();
        let request = Encoded::new(request);
        tokio::spawn(async move {
            let limit = Duration::from_millis(center.config.admin_timeout_ms);
            let response = center.admin(node, &request, limit).await;
            if response != AdminResponse::Done {
                tracing::debug!(node, group, ?response, "admin message not done");
            }
            center.soft.lock().expect("soft lock").admin.remove(&key);
        });
    }

    async fn admin<R>(&self, to: NodeId, request: &Encoded<R>, limit: Duration) -> AdminResponse
    where
        R: Rpc<Response = AdminResponse>,
    {
        call(self.node.env().net(), to, request, limit)
            .await
            .unwrap_or_else(|error| AdminResponse::Failed {
                reason: error.to_string(),
            })
    }

    /// Replaces `old` by `new` in `group`: `new` hosts an empty replica, then the group's leader
    /// adds it as a learner, waits for it to catch up and swaps the voters. The routing table
    /// is updated by the next tick (from `finished`), never from here: writes stay on the loop.
    async fn repair(&self, term: u64, group: GroupId, old: NodeId, new: NodeId, leader: NodeId) {
        let quick = Duration::from_millis(self.config.admin_timeout_ms);
        let host = Encoded::new(AddGroup {
            group,
            initialize: None,
        });
        let mut outcome = self.admin(new, &host, quick).await;
        if outcome == AdminResponse::Done {
            let replace = Encoded::new(ReplaceVoter {
                group,
                old,
                new,
                timeout_ms: self.config.replace_timeout_ms,
            });
            let limit = Duration::from_millis(self.config.replace_timeout_ms) + quick;
            let mut target = leader;
            for _ in 0..REPLACE_ATTEMPTS_MAX {
                outcome = self.admin(target, &replace, limit).await;
                match &outcome {
                    AdminResponse::NotLeader {
                        leader_hint: Some(hint),
                    } if *hint != target => target = *hint,
                    _ => break,
                }
            }
        }
        tracing::info!(group, old, new, ?outcome, "replica replacement ended");
        let mut soft = self.soft.lock().expect("soft lock");
        if soft.term == Some(term) {
            soft.repairs.remove(&group);
            if outcome == AdminResponse::Done {
                soft.finished.insert(group, RepairInFlight { old, new });
            }
        }
    }
}

/// Builds the planner's input from the durable state and the soft state at `now`, and
/// updates the soft bookkeeping that depends on it (stale replicas, cooldowns, which tables
/// written from a finished repair are doubted). Pure but for `soft`: the unit tests below run
/// the center's rounds through it without a cluster.
fn build_view(config: &CenterConfig, soft: &mut Soft, durable: Durable, now: Duration) -> View {
    let timeout = config.failure_timeout();
    let ids: BTreeSet<NodeId> = durable
        .registry
        .keys()
        .chain(soft.heard.keys())
        .copied()
        .collect();
    let mut nodes = BTreeMap::new();
    for id in ids {
        let record = durable.registry.get(&id).cloned();
        let heard = soft.heard.get(&id);
        let mut liveness = plan::liveness(
            heard.map(|h| h.at),
            record.as_ref().map(|r| r.state),
            soft.term_started,
            now,
            timeout,
        );
        if heard.is_some() && config.bugs.is_planted(Bug::DeadNodeStaysUp) {
            // Planted bug: once heard from, always up.
            liveness = Liveness::Up;
        }
        nodes.insert(
            id,
            NodeView {
                liveness,
                record,
                heard: heard.map(|h| h.heard.clone()),
            },
        );
    }
    // Finished repairs the table already shows need no more writing.
    if let Some(table) = &durable.routing {
        soft.finished.retain(|group, done| {
            table
                .route(*group)
                .is_some_and(|r| r.replicas.contains(&done.old))
        });
    }
    // Replicas hosted by a non-member: start (or keep) their clocks; members stop them.
    let memberships = plan::newest_memberships(&nodes);
    let mut hosted_by_non_members = BTreeSet::new();
    for (id, node) in &nodes {
        let Some(heard) = node
            .heard
            .as_ref()
            .filter(|_| node.liveness == Liveness::Up)
        else {
            continue;
        };
        for group in heard.groups.keys() {
            let in_table = durable
                .routing
                .as_ref()
                .and_then(|t| t.route(*group))
                .is_some_and(|r| r.replicas.contains(id));
            let in_raft = memberships
                .get(group)
                .is_some_and(|m| m.voters.contains(id) || m.learners.contains(id));
            if !in_table && !in_raft && *group != CENTER_GROUP {
                hosted_by_non_members.insert((*id, *group));
            }
        }
    }
    soft.stale_since
        .retain(|key, _| hosted_by_non_members.contains(key));
    for key in &hosted_by_non_members {
        soft.stale_since.entry(*key).or_insert(now);
    }
    let stale_after = Duration::from_millis(config.stale_replica_ms);
    let stale = soft
        .stale_since
        .iter()
        .filter(|(_, since)| now.saturating_sub(**since) >= stale_after)
        .map(|(key, _)| *key)
        .collect();
    soft.cooling.retain(|_, until| *until > now);
    let settled = timeout.saturating_mul(2);
    // Tables written long enough ago that a group's leader has reported since (see
    // `View::adoption_doubted`); the groups the table no longer has are forgotten.
    soft.adopted_at.retain(|group, _| {
        durable
            .routing
            .as_ref()
            .is_some_and(|t| t.route(*group).is_some())
    });
    let adoption_doubted = if config.bugs.is_planted(Bug::FinishedRepairTrusted) {
        // Planted bug: a table written from a finished repair is never doubted.
        BTreeSet::new()
    } else {
        soft.adopted_at
            .iter()
            .filter(|(_, at)| now.saturating_sub(**at) >= settled)
            .map(|(group, _)| *group)
            .collect()
    };
    let settled_down = nodes
        .iter()
        .filter(|(id, v)| {
            v.liveness == Liveness::Down
                && match soft.heard.get(id) {
                    Some(h) => now.saturating_sub(h.at) >= settled,
                    None => now.saturating_sub(soft.term_started) >= settled,
                }
        })
        .map(|(id, _)| *id)
        .collect();
    View {
        routing: durable.routing,
        nodes,
        repairs: soft.repairs.clone(),
        finished: soft.finished.clone(),
        adopted_through: soft.adopted_through.clone(),
        adoption_doubted,
        cooling: soft.cooling.keys().copied().collect(),
        stale,
        settled_down,
    }
}

/// Records in `soft` that the table now holds the replicas `Action::Adopt` wrote for `group`
/// at `now`: a finished repair is written, the adoption's age starts (`View::adoption_doubted`),
/// and memberships reported through the newest one `nodes` reported are not adopted again
/// (`View::adopted_through`).
fn note_adopted(
    soft: &mut Soft,
    nodes: &BTreeMap<NodeId, NodeView>,
    group: GroupId,
    now: Duration,
) {
    let through = plan::newest_memberships(nodes).get(&group).map(|m| m.index);
    soft.finished.remove(&group);
    soft.adopted_at.insert(group, now);
    // No membership known (a never-formed group placed anew): the first one reported later,
    // even at log index 0, must still be adopted.
    match through {
        Some(index) => soft.adopted_through.insert(group, index),
        None => soft.adopted_through.remove(&group),
    };
}

/// The control loop of one replica: every tick, refresh the local routing copy; on the leader,
/// run one round. Ends when the center is dropped or its node shut down.
async fn control_loop<E: Env>(center: Weak<Center<E>>) {
    let (clock, tick) = match center.upgrade() {
        Some(c) => (
            c.node.env().clock().clone(),
            Duration::from_millis(c.config.heartbeat_ms.max(1)),
        ),
        None => return,
    };
    loop {
        clock.sleep(tick).await;
        let Some(center) = center.upgrade() else {
            return;
        };
        if center.node.is_stopped() {
            return;
        }
        // Keeps followers' and observers' copies current even when nobody asks.
        let _ = center.routing_to_serve().await;
        if center.is_leader() {
            if let Err(error) = center.lead().await {
                tracing::info!(center = center.node.id(), %error, "center round cut short");
            }
        } else {
            let mut soft = center.soft.lock().expect("soft lock");
            if soft.term.is_some() {
                *soft = Soft::default();
            }
        }
    }
}

/// Longest wait of a control action that keeps failing before it is tried again.
pub(crate) const ACTION_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long an action waits after its `failures`-th failure in a row: the first retries at
/// the next round, then a heartbeat, doubling up to [`ACTION_BACKOFF_MAX`].
fn backoff_wait(failures: u32, heartbeat: Duration) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    heartbeat
        .saturating_mul(1 << (failures - 2).min(16))
        .min(ACTION_BACKOFF_MAX)
}

/// Whether a failed action makes the rest of the round's plan stale.
fn ends_the_round(error: &CenterError) -> bool {
    match error {
        CenterError::NotLeader { .. } => true,
        CenterError::Raft { what, .. } => *what == "routing compare-and-set",
        _ => false,
    }
}

/// What an action acts on, for its backoff: two actions on the same thing share it.
fn action_key(action: &Action) -> String {
    match action {
        Action::Register(record) => format!("register node {}", record.id),
        Action::Bootstrap(_) => "bootstrap".to_string(),
        Action::Host { node, group, .. } => format!("host group {group} on node {node}"),
        Action::Adopt { group, .. } => format!("adopt group {group}"),
        Action::Repair { group, .. } => format!("repair group {group}"),
        Action::MoveLeader { group, .. } => format!("move leader of group {group}"),
        Action::Drop { node, group } => format!("drop group {group} on node {node}"),
        Action::Recreate { old, .. } => format!("recreate group {old}"),
    }
}

fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn a_failing_action_retries_next_round_then_backs_off_doubling_to_the_cap() {
        let heartbeat = Duration::from_millis(500);
        let waits: Vec<u64> = (1..=10)
            .map(|failures| backoff_wait(failures, heartbeat).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [
                0, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000
            ]
        );
        // No overflow however long it keeps failing.
        assert_eq!(backoff_wait(u32::MAX, heartbeat), ACTION_BACKOFF_MAX);
    }

    #[test]
    fn only_lost_leadership_or_a_lost_routing_swap_ends_the_round() {
        assert!(ends_the_round(&CenterError::NotLeader {
            leader_hint: None
        }));
        assert!(ends_the_round(&CenterError::Raft {
            what: "routing compare-and-set",
            reason: "lost".into(),
        }));
        assert!(!ends_the_round(&CenterError::Raft {
            what: "registry write",
            reason: "timed out".into(),
        }));
    }
}

/// The center's rounds on a table written from a finished repair, through the code the control
/// loop runs ([`build_view`], [`plan::plan`], [`note_adopted`]) with heartbeats made up: the
/// wrong "done" a deposed leader gives (`replace-done-unconfirmed`) is put straight into the
/// soft state, so the center's own check is tested alone, on every run.
#[cfg(test)]
mod adoption_tests {
    use larder_core::bugs::Bugs;
    use larder_protocol::{GroupStatus, MembershipStatus, NodeState};

    use super::*;
    use crate::center::HeardAt;
    use crate::plan::{Heard, NodeRecord};

    /// Group 1's committed voters, as every member and its leader (node 3) report them.
    const MEMBERS: [NodeId; 3] = [3, 4, 1];
    /// The log index of that membership, also the one the table is written through.
    const MEMBERSHIP_INDEX: u64 = 10;

    /// Node `id`'s heartbeat: the members of group 1 report its membership, node 3 as its
    /// leader; node 2, the repair's new replica that never joined, reports no group.
    fn heard(id: NodeId) -> Heard {
        let mut groups = BTreeMap::new();
        if MEMBERS.contains(&id) {
            let status = GroupStatus {
                group: 1,
                is_leader: id == 3,
                term: 2,
                last_applied: 20,
                initialized: true,
                membership: Some(MembershipStatus {
                    index: MEMBERSHIP_INDEX,
                    voters: vec![1, 3, 4],
                    configs: vec![vec![1, 3, 4]],
                    learners: vec![],
                }),
                broken: None,
                records_estimate: 0,
            };
            groups.insert(1, status);
        }
        Heard {
            address: format!("n{id}"),
            groups,
            hot: Default::default(),
        }
    }

    /// The table's replicas of group 1 each time a round changed them, by the round's time in
    /// ms: one group on nodes 3, 4, 1; at 1 s a repair of 1 by 2 ends "done" though the group
    /// never committed it; rounds every heartbeat until 60 s, every node heard each round.
    fn table_changes(bugs: Bugs) -> Vec<(u64, Vec<NodeId>)> {
        let config = CenterConfig {
            bugs,
            ..CenterConfig::new(vec![101, 102, 103], 1)
        };
        let registry: BTreeMap<NodeId, NodeRecord> = (1..=4)
            .map(|id| {
                let record = NodeRecord {
                    id,
                    address: format!("n{id}"),
                    state: NodeState::Up,
                };
                (id, record)
            })
            .collect();
        let mut table = RoutingTable::even(1, |_| MEMBERS.to_vec());
        let mut soft = Soft {
            term: Some(1),
            ..Soft::default()
        };
        let replicas = |table: &RoutingTable| table.route(1).expect("group 1").replicas.clone();
        let mut changes = Vec::new();
        let tick = Duration::from_millis(config.heartbeat_ms);
        let mut now = tick;
        while now <= Duration::from_secs(60) {
            for id in 1..=4 {
                let heard = heard(id);
                soft.heard.insert(id, HeardAt { at: now, heard });
            }
            if now == Duration::from_secs(1) {
                soft.finished.insert(1, RepairInFlight { old: 1, new: 2 });
            }
            let durable = Durable {
                routing: Some(table.clone()),
                registry: registry.clone(),
                migrations: BTreeMap::new(),
            };
            let view = build_view(&config, &mut soft, durable, now);
            let before = replicas(&table);
            for action in plan::plan(&view, &config.plan_config()) {
                if let Action::Adopt { group, replicas } = action {
                    table = table.with_replicas(group, replicas).expect("a valid table");
                    note_adopted(&mut soft, &view.nodes, group, now);
                }
            }
            if replicas(&table) != before {
                changes.push((now.as_millis() as u64, replicas(&table)));
            }
            now += tick;
        }
        changes
    }

    /// Trusted at first (a real repair's membership may not be reported yet), the table is
    /// doubted two failure timeouts (5 s) after it was written, and the leader's report of
    /// {1, 3, 4}, at the very index the table was written through, is written back.
    #[test]
    fn a_table_from_a_finished_repair_its_leader_contradicts_is_undone_after_two_failure_timeouts()
    {
        assert_eq!(
            table_changes(Bugs::default()),
            vec![(1_000, vec![3, 4, 2]), (6_000, vec![3, 4, 1])]
        );
    }

    /// The planted bug `finished-repair-trusted`: the table keeps node 2, which is no member of
    /// group 1, for good; the test above tells it apart.
    #[test]
    fn the_planted_bug_keeps_a_table_its_leader_contradicts_and_is_caught() {
        assert_eq!(
            table_changes(Bugs::only(Bug::FinishedRepairTrusted)),
            vec![(1_000, vec![3, 4, 2])]
        );
    }
}
