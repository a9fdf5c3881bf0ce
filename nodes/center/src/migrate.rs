//! Moving slots between groups, driven by the center leader (ARCHITECTURE.md, "Moving slots").
//!
//! A [`Migration`] is a record of the center group (`migration/<id, 20 digits>`), written at
//! every phase change, so a new center leader resumes it where it was (each phase's work is
//! safe to redo). The center leader runs one task per active migration
//! ([`Center::run_migration`]); the storage nodes do the steps (`larder_storage::migration`),
//! each asked of the group's leader:
//! 1. **Planned**: both groups' ownership made explicit at the current epoch (so the target
//!    refuses the slots until it owns them), the source starts recording changes.
//! 2. **Copying**: the target's step stamp is raised (so no page of an earlier attempt still
//!    on its way writes there any more; every page and tracking step is stamped,
//!    [`StepStamp`]), the target drops what an earlier attempt of this phase copied,
//!    ingests a copy of the slots, in pages, then the changes since, pass after pass, pacing
//!    itself by how long each page took (a slow group gets fewer pages per second). Then the
//!    **cutover**: at epoch `e` = current + 1 the source owns its slots without the moving
//!    ones (the fence: from that log entry on, nothing of them applies there), a last
//!    catch-up copies what changed before the fence, the target owns its slots and the
//!    moving ones, and the table of epoch `e` with the move is written (compare-and-set; if
//!    another table took `e`, the cutover is redone at the next epoch).
//!    Clients the source refuses get a stale epoch and retry once their table has the move:
//!    the write pause is the cutover's length.
//! 3. **Cleaning**: after a grace period, the source stops recording and deletes its copy of
//!    the slots in pages. **Done**.
//!
//! Data flows source leader -> center -> target leader, a page at a time (at most
//! `SLOT_PAGE_BYTES_MAX`); direct source-to-target streaming is a later optimisation.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder_core::GroupId;
use larder_core::NodeId;
use larder_core::bugs::Bug;
use larder_core::env::{Clock, Env};
use larder_core::kv::{Command, Reply, SetCondition, StepStamp};
use larder_core::routing::RoutingTable;
use larder_core::slots::{Ownership, ranges_contain, ranges_where};
use larder_protocol::{
    AdminResponse, Encoded, IngestRecords, Migration, MigrationPhase, ReadSlots, ReadSlotsResponse,
    Rpc, SetOwnedSlots, SlotPage, SlotRead, Steer, TrackSlots, UntrackSlots, call, encode,
};

use crate::Center;
use crate::config::CenterError;

/// Key prefix of the migration records in the center group.
pub(crate) const MIGRATION_PREFIX: &str = "migration/";
/// Catch-up passes before the cutover, at most: a group written faster than the copy moves
/// would otherwise never converge (the cutover copies the rest with the source fenced).
const CATCH_UP_PASSES_MAX: usize = 8;
/// A catch-up pass that moves at most this many records is small enough to cut over after.
const CATCH_UP_SMALL: usize = 64;
/// Pause between two failed attempts of a step.
const RETRY_MS: u64 = 200;
/// A step that failed with the same reason this many times in a row (about 30 s of retries)
/// before the cutover rolls its migration back.
const STEP_SAME_FAILURES_MAX: u32 = 150;
/// Least pause between two pages (the pacing uses the page's own time when that is longer).
const PAGE_PAUSE_MIN_MS: u64 = 5;
/// Longest pause between two pages: a page slowed by a fault (a retry against a dead leader,
/// a slow link) says little about the group's load once it has passed.
const PAGE_PAUSE_MAX_MS: u64 = 1_000;
/// How often a paused task, and an operator's request waiting for the task, look again.
const STEER_POLL_MS: u64 = 50;
/// How many polls an operator's pause/resume/cancel waits for the task to act before
/// answering with the record as it is (the operator can look again).
const STEER_WAIT_POLLS: usize = 20;

pub(crate) fn migration_key(id: u64) -> String {
    format!("{MIGRATION_PREFIX}{id:020}")
}

/// Why a migration cannot start.
fn refuse(reason: impl Into<String>) -> CenterError {
    CenterError::Refused {
        reason: reason.into(),
    }
}

/// Checks `ranges` for a move to `to` in `table`; returns the group that owns them all.
pub(crate) fn check_move(
    table: &RoutingTable,
    ranges: &[(u16, u16)],
    to: GroupId,
    active: &[Migration],
) -> Result<GroupId, CenterError> {
    Ownership::new(0, ranges.to_vec()).map_err(|e| refuse(e.to_string()))?;
    if ranges.is_empty() {
        return Err(refuse("no slots to move"));
    }
    if table.route(to).is_none() {
        return Err(refuse(format!(
            "no group {to} in routing epoch {}",
            table.epoch()
        )));
    }
    let mut owners = ranges
        .iter()
        .flat_map(|&(first, last)| first..=last)
        .map(|slot| table.group_of_slot(slot));
    let from = owners.next().flatten().ok_or_else(|| refuse("no owner"))?;
    if owners.any(|owner| owner != Some(from)) {
        return Err(refuse("the slots belong to more than one group"));
    }
    if from == to {
        return Err(refuse(format!("group {to} owns the slots already")));
    }
    if let Some(busy) = active
        .iter()
        .find(|m| m.phase.is_active() && [m.from, m.to].iter().any(|g| *g == from || *g == to))
    {
        return Err(refuse(format!(
            "migration {} is moving slots of group {} or {}",
            busy.id, from, to
        )));
    }
    Ok(from)
}

/// `ranges` with `add` joined and `remove` taken out.
fn adjust(ranges: &[(u16, u16)], add: &[(u16, u16)], remove: &[(u16, u16)]) -> Vec<(u16, u16)> {
    ranges_where(|slot| {
        (ranges_contain(ranges, slot) || ranges_contain(add, slot)) && !ranges_contain(remove, slot)
    })
}

/// Who a migration step works for: the center leader's term (a task of an older term stops)
/// and the migration (an operator's pause or cancel reaches its steps).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Turn {
    pub(crate) term: u64,
    pub(crate) id: u64,
}

impl<E: Env> Center<E> {
    /// Records a new migration of `ranges` to group `to` (on the center leader).
    pub(crate) async fn start_migration(
        &self,
        ranges: Vec<(u16, u16)>,
        to: GroupId,
    ) -> Result<Migration, CenterError> {
        let durable = self.load().await?;
        let table = durable
            .routing
            .ok_or_else(|| refuse("the cluster has no routing table yet"))?;
        let known: Vec<Migration> = durable.migrations.values().cloned().collect();
        let from = check_move(&table, &ranges, to, &known)?;
        let migration = Migration {
            id: durable.migrations.keys().max().map_or(1, |id| id + 1),
            ranges,
            from,
            to,
            phase: MigrationPhase::Planned,
            moved_records: 0,
            moved_bytes: 0,
            paused: false,
            cutover_ms: None,
            working_ms: 0,
        };
        self.save_migration(&migration, true).await?;
        tracing::info!(id = migration.id, from, to, "migration planned");
        Ok(migration)
    }

    /// Writes `migration`'s record (`new`: only if no record has its id). After a migration is
    /// recorded, its task is the only writer of its record.
    pub(crate) async fn save_migration(
        &self,
        migration: &Migration,
        new: bool,
    ) -> Result<(), CenterError> {
        let reply = self
            .execute(Command::Set {
                key: Bytes::from(migration_key(migration.id)),
                value: encode(migration),
                condition: if new {
                    SetCondition::IfAbsent
                } else {
                    SetCondition::Always
                },
                expiry: None,
                keep_ttl: false,
            })
            .await?;
        if reply != Reply::Ok {
            return Err(refuse(format!(
                "migration {} was recorded meanwhile",
                migration.id
            )));
        }
        Ok(())
    }

    /// Pause, resume or cancel migration `id` (on the center leader): the wish is handed to
    /// the migration's task, and the answer waits a little for the task to act on it (a pause
    /// recorded, a cancel rolling back); the record as it then is.
    pub(crate) async fn steer_migration(
        &self,
        id: u64,
        steer: Steer,
    ) -> Result<Migration, CenterError> {
        let durable = self.load().await?;
        let migration = durable
            .migrations
            .get(&id)
            .cloned()
            .ok_or_else(|| refuse(format!("no migration {id}")))?;
        if !migration.phase.is_active() {
            return Err(refuse(format!(
                "migration {id} has ended ({})",
                migration.phase.name()
            )));
        }
        let term = self.center_term()?;
        {
            let mut soft = self.soft.lock().expect("soft lock");
            // A wish is kept in the leader's soft state of its term, which its first control
            // round of the term starts afresh: one taken before that round would be dropped
            // there, answered but never acted on (cluster swarm seed 1405: a resume taken 7 ms
            // before the round left its migration paused for good). The operator asks again.
            if soft.term != Some(term) && !self.config.bugs.is_planted(Bug::SteerBeforeTermStart) {
                return Err(CenterError::Starting);
            }
            // Cancellable: planned or copying as recorded, and, if this leader runs its task
            // already, the task has not begun the cutover (a task not started yet sees the
            // cancel at its first step).
            let cutting = soft.migrating.contains(&id) && !soft.cancellable.contains(&id);
            let early = matches!(
                migration.phase,
                MigrationPhase::Planned | MigrationPhase::Copying
            );
            if steer == Steer::Cancel && (!early || cutting) {
                let why = match &migration.phase {
                    MigrationPhase::Cleaning { epoch } => format!(
                        "migration {id} cut over at routing epoch {epoch}; move the slots back instead"
                    ),
                    MigrationPhase::RollingBack { .. } => {
                        format!("migration {id} is rolling back already")
                    }
                    _ => format!("migration {id} is cutting over; it can no longer be cancelled"),
                };
                return Err(refuse(why));
            }
            soft.steer.insert(id, steer);
        }
        let acted = |m: &Migration| match steer {
            Steer::Pause => m.paused,
            Steer::Resume => !m.paused,
            Steer::Cancel => matches!(
                m.phase,
                MigrationPhase::RollingBack { .. } | MigrationPhase::RolledBack { .. }
            ),
        };
        let clock = self.node.env().clock().clone();
        let mut now = migration;
        for _ in 0..STEER_WAIT_POLLS {
            if acted(&now) {
                break;
            }
            clock.sleep(Duration::from_millis(STEER_POLL_MS)).await;
            if let Some(m) = self.load().await?.migrations.get(&id) {
                now = m.clone();
            }
        }
        Ok(now)
    }

    /// Whether this replica still leads the center in `term` (a task of an older term stops:
    /// the new leader resumes the migration from its record).
    fn still_leading(&self, term: u64) -> bool {
        self.soft.lock().expect("soft lock").term == Some(term) && self.is_leader()
    }

    /// An operator cancelled the migration and it may still be cancelled.
    fn cancel_pending(&self, id: u64) -> bool {
        let soft = self.soft.lock().expect("soft lock");
        soft.cancellable.contains(&id) && soft.steer.get(&id) == Some(&Steer::Cancel)
    }

    /// Where the task obeys operators (before each page, each phase): waits while the
    /// migration is paused (recording the pause and the resume), `Err(Cancelled)` for a cancel
    /// it may still act on. Publishes the migration's progress.
    async fn checkpoint(&self, turn: Turn, migration: &mut Migration) -> Result<(), CenterError> {
        loop {
            if !self.still_leading(turn.term) {
                return Err(CenterError::NotLeader { leader_hint: None });
            }
            if self.cancel_pending(turn.id) {
                return Err(CenterError::Cancelled { id: turn.id });
            }
            let paused = {
                let mut soft = self.soft.lock().expect("soft lock");
                soft.progress.insert(turn.id, migration.clone());
                match soft.steer.get(&turn.id) {
                    Some(Steer::Pause) => true,
                    Some(Steer::Resume) => false,
                    // No wish in this term: as recorded (a pause outlives a failover).
                    _ => migration.paused,
                }
            };
            if paused != migration.paused {
                migration.paused = paused;
                self.save_migration(migration, false).await?;
                tracing::info!(id = turn.id, paused, "migration steered");
            }
            if !paused {
                return Ok(());
            }
            self.node
                .env()
                .clock()
                .sleep(Duration::from_millis(STEER_POLL_MS))
                .await;
        }
    }

    /// The node this center believes leads `group`: the highest-term leader its heartbeats
    /// report, else the table's first replica.
    fn leader_guess(&self, group: GroupId) -> Option<NodeId> {
        let soft = self.soft.lock().expect("soft lock");
        let reported = soft
            .heard
            .iter()
            .filter_map(|(id, heard)| {
                let status = heard.heard.groups.get(&group)?;
                status.is_leader.then_some((status.term, *id))
            })
            .max()
            .map(|(_, id)| id);
        drop(soft);
        reported.or_else(|| {
            self.routing()
                .and_then(|t| t.route(group).and_then(|r| r.replicas.first().copied()))
        })
    }

    /// Sends `request` to `group`'s leader: first the node the heartbeats name, then the
    /// group's other replicas, following any hint at once (bounded: each replica at most
    /// twice); `Err` with the last reason when none did it.
    async fn on_leader<R, T>(
        &self,
        group: GroupId,
        request: R,
        answer: impl Fn(R::Response) -> Result<T, (Option<NodeId>, String)>,
    ) -> Result<T, String>
    where
        R: Rpc,
    {
        let request = Encoded::new(request);
        // A page is at most 1 MiB through one Raft round: well within a few admin timeouts.
        let limit = Duration::from_millis(self.config.admin_timeout_ms.max(1) * 2);
        let mut others: Vec<NodeId> = self
            .routing()
            .and_then(|t| t.route(group).map(|r| r.replicas.clone()))
            .unwrap_or_default();
        let guess = self.leader_guess(group);
        others.retain(|n| Some(*n) != guess);
        let mut queue: std::collections::VecDeque<NodeId> =
            guess.into_iter().chain(others).collect();
        let mut reason = format!("no replica of group {group} known");
        for _ in 0..queue.len() * 2 {
            let Some(to) = queue.pop_front() else { break };
            match call(self.node.env().net(), to, &request, limit).await {
                Ok(response) => match answer(response) {
                    Ok(value) => return Ok(value),
                    Err((hint, why)) => {
                        reason = format!("node {to}: {why}");
                        if let Some(hint) = hint.filter(|hint| *hint != to) {
                            queue.push_front(hint);
                        }
                        queue.push_back(to);
                    }
                },
                Err(error) => {
                    reason = format!("node {to}: {error}");
                    queue.push_back(to);
                }
            }
        }
        Err(reason)
    }

    /// `request` on `group`'s leader ([`Center::on_leader`]), retried until it answers, the
    /// term ends (a new leader resumes the migration) or an operator cancels the migration
    /// (a step stuck on an unreachable group must not hold a migration forever).
    async fn until_done<R, T>(
        &self,
        turn: Turn,
        group: GroupId,
        request: R,
        answer: impl Fn(R::Response) -> Result<T, (Option<NodeId>, String)> + Copy,
    ) -> Result<T, CenterError>
    where
        R: Rpc + Clone,
    {
        let (mut last_reason, mut same) = (String::new(), 0u32);
        loop {
            if !self.still_leading(turn.term) {
                return Err(CenterError::NotLeader { leader_hint: None });
            }
            match self.on_leader(group, request.clone(), answer).await {
                Ok(value) => return Ok(value),
                Err(reason) => {
                    if self.cancel_pending(turn.id) {
                        return Err(CenterError::Cancelled { id: turn.id });
                    }
                    if self.routing().is_some_and(|t| t.route(group).is_none()) {
                        return Err(CenterError::GroupGone { group });
                    }
                    // The same failure, again and again: a step the group will never take (a
                    // page it refuses). Before the cutover the migration gives up and rolls
                    // back, saying why, rather than sit in its phase forever; after it, the
                    // migration can only go forward and keeps trying.
                    if reason == last_reason {
                        same += 1;
                    } else {
                        (last_reason, same) = (reason.clone(), 1);
                    }
                    if same >= STEP_SAME_FAILURES_MAX
                        && self
                            .soft
                            .lock()
                            .expect("soft lock")
                            .cancellable
                            .contains(&turn.id)
                    {
                        return Err(CenterError::StepRefused { group, reason });
                    }
                    tracing::debug!(group, %reason, "migration step failed; retrying");
                    self.node
                        .env()
                        .clock()
                        .sleep(Duration::from_millis(RETRY_MS))
                        .await;
                }
            }
        }
    }

    /// An admin step on `group`'s leader, retried until done.
    async fn step<R>(&self, turn: Turn, group: GroupId, request: R) -> Result<(), CenterError>
    where
        R: Rpc<Response = AdminResponse> + Clone,
    {
        self.until_done(turn, group, request, |response| match response {
            AdminResponse::Done => Ok(()),
            AdminResponse::NotLeader { leader_hint } => Err((leader_hint, "not the leader".into())),
            AdminResponse::Failed { reason } => Err((None, reason)),
        })
        .await
    }

    /// One page of a read on `group`'s leader, retried until it answers.
    async fn read_page(
        &self,
        turn: Turn,
        group: GroupId,
        ranges: &[(u16, u16)],
        read: SlotRead,
    ) -> Result<SlotPage, CenterError> {
        let request = ReadSlots {
            group,
            ranges: ranges.to_vec(),
            read,
        };
        self.until_done(turn, group, request, |response| match response {
            ReadSlotsResponse::Page(page) => Ok(page),
            ReadSlotsResponse::NotLeader { leader_hint } => {
                Err((leader_hint, "not the leader".into()))
            }
            ReadSlotsResponse::Failed { reason } => Err((None, reason)),
        })
        .await
    }

    /// The next step's stamp (a page, a tracking start or end): this leader's term, and its
    /// count of stamped steps (see [`StepStamp`]). Taken once per step, before its first
    /// attempt, so a retry of a step carries the step's stamp.
    fn stamp(&self, turn: Turn) -> StepStamp {
        let seq = self
            .steps_stamped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        StepStamp {
            term: turn.term,
            seq,
        }
    }

    /// Raises `group`'s step stamp to a new one with a page of no records: from then on no
    /// page stamped before (an earlier attempt's or a deposed leader's, delivered late)
    /// writes there, so a read of the group that follows sees all that earlier pages will
    /// ever write.
    async fn raise_stamp(&self, turn: Turn, group: GroupId) -> Result<(), CenterError> {
        let raise = IngestRecords {
            group,
            clock_ms: 0,
            records: Vec::new(),
            stamp: Some(self.stamp(turn)),
        };
        self.step(turn, group, raise).await
    }

    /// Pages through `read_of(after)` on the source and writes each page into `into` (the
    /// records as read, or deletes of their keys with `delete`); returns the first page's
    /// applied index and the records moved. Obeys operators before each page.
    async fn pass(
        &self,
        turn: Turn,
        migration: &mut Migration,
        (from, into): (GroupId, GroupId),
        read_of: impl Fn(Option<Bytes>) -> SlotRead,
        delete: bool,
    ) -> Result<(u64, usize), CenterError> {
        let clock = self.node.env().clock().clone();
        let mut after = None;
        let mut first = None;
        let mut moved = 0;
        loop {
            self.checkpoint(turn, migration).await?;
            let started = clock.now();
            let page = self
                .read_page(turn, from, &migration.ranges, read_of(after.clone()))
                .await?;
            first.get_or_insert(page.applied_index);
            if !page.records.is_empty() {
                moved += page.records.len();
                let records: Vec<(Bytes, Option<Bytes>)> = if delete {
                    page.records
                        .into_iter()
                        .map(|(key, _)| (key, None))
                        .collect()
                } else {
                    page.records
                };
                // Counted into the target only (not the deletes of a cleanup or rollback).
                if !delete {
                    migration.moved_records += records.len() as u64;
                    migration.moved_bytes += records
                        .iter()
                        .map(|(k, r)| (k.len() + r.as_ref().map_or(0, Bytes::len)) as u64)
                        .sum::<u64>();
                }
                let ingest = IngestRecords {
                    group: into,
                    clock_ms: page.clock_ms,
                    records,
                    stamp: Some(self.stamp(turn)),
                };
                self.step(turn, into, ingest).await?;
            }
            // Paced by the groups' own speed: a page that took long is followed by as long a
            // rest, so a migration takes at most about half of a busy group's time.
            let took = clock.now().saturating_sub(started);
            let rest = took.clamp(
                Duration::from_millis(PAGE_PAUSE_MIN_MS),
                Duration::from_millis(PAGE_PAUSE_MAX_MS),
            );
            clock.sleep(rest).await;
            migration.working_ms += millis(took + rest);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok((first.unwrap_or(0), moved)),
            }
        }
    }

    /// Runs `migration` from its recorded phase to the end, recording each phase (on the
    /// center leader of `term`; returns when the term ends, a new leader resumes).
    pub(crate) async fn run_migration(
        self: Arc<Self>,
        term: u64,
        mut migration: Migration,
    ) -> Result<(), CenterError> {
        let (id, from, to) = (migration.id, migration.from, migration.to);
        let turn = Turn { term, id };
        let outcome = self.run_phases(turn, &mut migration).await;
        let mut soft = self.soft.lock().expect("soft lock");
        soft.cancellable.remove(&id);
        soft.progress.remove(&id);
        drop(soft);
        if outcome.is_ok() {
            tracing::info!(
                id,
                from,
                to,
                phase = migration.phase.name(),
                "migration ended"
            );
        }
        outcome
    }

    async fn run_phases(&self, turn: Turn, migration: &mut Migration) -> Result<(), CenterError> {
        let id = migration.id;
        loop {
            tracing::info!(id, phase = migration.phase.name(), "migration step");
            let cancellable = matches!(
                migration.phase,
                MigrationPhase::Planned | MigrationPhase::Copying
            );
            {
                let mut soft = self.soft.lock().expect("soft lock");
                if cancellable {
                    soft.cancellable.insert(id);
                } else {
                    soft.cancellable.remove(&id);
                    // A cancel acted on (or refused) is spent: it must not stop the rollback.
                    if soft.steer.get(&id) == Some(&Steer::Cancel) {
                        soft.steer.remove(&id);
                    }
                }
            }
            let outcome = self.run_phase(turn, migration).await;
            match outcome {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(CenterError::Cancelled { .. }) => {
                    tracing::info!(id, "migration cancelled by an operator");
                    migration.phase = MigrationPhase::RollingBack {
                        reason: "cancelled by an operator".into(),
                    };
                }
                Err(CenterError::StepRefused { group, reason }) => {
                    tracing::warn!(id, group, %reason, "migration: a step keeps failing; rolling back");
                    migration.phase = MigrationPhase::RollingBack {
                        reason: format!(
                            "group {group} failed a step {STEP_SAME_FAILURES_MAX} times in a \
                             row: {reason}"
                        ),
                    };
                }
                // A group that never formed is re-created under a new id by the planner (its
                // first replica died): before the cutover the migration rolls back; a rollback
                // has nothing to delete on a target that never formed.
                Err(CenterError::GroupGone { group }) => {
                    tracing::info!(id, group, "migration: a group left the routing table");
                    migration.phase = match &migration.phase {
                        MigrationPhase::Planned | MigrationPhase::Copying => {
                            MigrationPhase::RollingBack {
                                reason: format!("group {group} is no longer in the routing table"),
                            }
                        }
                        MigrationPhase::RollingBack { reason } if group == migration.to => {
                            MigrationPhase::RolledBack {
                                reason: reason.clone(),
                            }
                        }
                        _ => return Err(CenterError::GroupGone { group }),
                    };
                }
                Err(error) => return Err(error),
            }
            if !self.still_leading(turn.term) {
                return Err(CenterError::NotLeader { leader_hint: None });
            }
            self.save_migration(migration, false).await?;
        }
    }

    /// The work of `migration`'s current phase, moving it to the next (`true`: it had ended).
    async fn run_phase(&self, turn: Turn, migration: &mut Migration) -> Result<bool, CenterError> {
        let (id, from, to) = (migration.id, migration.from, migration.to);
        match migration.phase.clone() {
            MigrationPhase::Planned => {
                self.checkpoint(turn, migration).await?;
                let table = self.current_table().await?;
                for group in [from, to] {
                    let ownership = Ownership::new(table.epoch(), table.slot_ranges(group))
                        .map_err(|e| refuse(e.to_string()))?;
                    self.step(turn, group, SetOwnedSlots { group, ownership })
                        .await?;
                }
                let track = TrackSlots {
                    group: from,
                    migration: id,
                    ranges: migration.ranges.clone(),
                    stamp: Some(self.stamp(turn)),
                };
                self.step(turn, from, track).await?;
                migration.phase = MigrationPhase::Copying;
            }
            MigrationPhase::Copying => {
                let since = self.copy_and_catch_up(turn, migration).await?;
                if !self.begin_cutover(id) {
                    return Err(CenterError::Cancelled { id });
                }
                migration.phase = MigrationPhase::CuttingOver { since };
            }
            MigrationPhase::CuttingOver { since } => {
                migration.phase = match self.cut_over(turn, migration, since).await? {
                    Ok(epoch) => MigrationPhase::Cleaning { epoch },
                    Err(reason) => MigrationPhase::RollingBack { reason },
                };
            }
            MigrationPhase::Cleaning { epoch } => {
                // Proxies and clients learn the table within a few refreshes. (Reads and
                // writes the source gets meanwhile are refused at apply time either way: the
                // grace spares clients retries, not data.)
                let grace = Duration::from_millis(self.config.migration_grace_ms);
                self.node.env().clock().sleep(grace).await;
                let untrack = UntrackSlots {
                    group: from,
                    migration: id,
                    stamp: Some(self.stamp(turn)),
                };
                self.step(turn, from, untrack).await?;
                self.pass(turn, migration, (from, from), copy, true).await?;
                migration.phase = MigrationPhase::Done { epoch };
            }
            MigrationPhase::RollingBack { reason } => {
                let untrack = UntrackSlots {
                    group: from,
                    migration: id,
                    stamp: Some(self.stamp(turn)),
                };
                match self.step(turn, from, untrack).await {
                    Ok(()) => {}
                    // A source that never formed, re-created under a new id by the planner
                    // while the migration was planned: what it tracked went with it, and the
                    // target's ingested rows are still to delete. (Ending the task here
                    // restarted it into the same step for ever: swarm seed 1086.)
                    Err(CenterError::GroupGone { group }) if group == from => {
                        tracing::info!(id, group, "migration: the source left the routing table");
                    }
                    Err(error) => return Err(error),
                }
                // What the target ingested of slots it never owned, once no earlier page
                // can add to it.
                self.raise_stamp(turn, to).await?;
                self.pass(turn, migration, (to, to), copy, true).await?;
                migration.phase = MigrationPhase::RolledBack { reason };
            }
            MigrationPhase::Done { .. } | MigrationPhase::RolledBack { .. } => return Ok(true),
        }
        Ok(false)
    }

    /// The current routing table, read linearizably.
    async fn current_table(&self) -> Result<RoutingTable, CenterError> {
        self.load()
            .await?
            .routing
            .ok_or_else(|| refuse("the cluster has no routing table"))
    }

    /// Takes migration `id` out of the cancellable ones as its cutover starts; `false` if an
    /// operator cancelled it first (checked under the same lock a cancel is accepted under).
    fn begin_cutover(&self, id: u64) -> bool {
        let mut soft = self.soft.lock().expect("soft lock");
        if soft.steer.get(&id) == Some(&Steer::Cancel) {
            return false;
        }
        soft.cancellable.remove(&id);
        true
    }

    /// Copy, then catch up until a pass is small: the log index the last pass started from
    /// (the cutover catches up from there).
    async fn copy_and_catch_up(
        &self,
        turn: Turn,
        migration: &mut Migration,
    ) -> Result<u64, CenterError> {
        let (from, to) = (migration.from, migration.to);
        // The target owns none of the slots yet, so what it holds of them is an earlier
        // attempt's copy (this phase is redone from its start by a new center leader or a
        // restarted task). The copy below would overwrite the keys the source still has but
        // leave the ones it deleted since, to come back at the cutover: cluster swarm seed
        // 1419 saw an emptied set return whole. So that is deleted first (nothing, on a
        // first attempt), after the target's stamp is raised: a page of the earlier attempt
        // still on its way (a deposed leader's) would otherwise land after the clearing.
        self.raise_stamp(turn, to).await?;
        if !self.config.bugs.is_planted(Bug::CopyRedoneOverStale) {
            self.pass(turn, migration, (to, to), copy, true).await?;
        }
        let (mut since, _) = self.pass(turn, migration, (from, to), copy, false).await?;
        self.node
            .env()
            .fault_points()
            .hit(larder_core::env::FaultPoint::MigrationCopied)
            .await;
        let skip_catch_up = self.config.bugs.is_planted(Bug::MigrationSkipsCatchUp);
        for _ in 0..if skip_catch_up {
            0
        } else {
            CATCH_UP_PASSES_MAX
        } {
            let (index, moved) = self
                .pass(turn, migration, (from, to), changes(since), false)
                .await?;
            since = index;
            if moved <= CATCH_UP_SMALL {
                break;
            }
        }
        self.checkpoint(turn, migration).await?;
        Ok(since)
    }

    /// Fence, last catch-up, target owns, table committed: the epoch of the committed move,
    /// or why it cannot be made (the slots no longer all belong to the source).
    async fn cut_over(
        &self,
        turn: Turn,
        migration: &mut Migration,
        mut since: u64,
    ) -> Result<Result<u64, String>, CenterError> {
        let (from, to) = (migration.from, migration.to);
        let skip_catch_up = self.config.bugs.is_planted(Bug::MigrationSkipsCatchUp);
        let clock = self.node.env().clock().clone();
        let started = clock.now();
        loop {
            let table = self.current_table().await?;
            if check_move(&table, &migration.ranges, to, &[]).ok() != Some(from) {
                return Ok(Err(format!(
                    "the slots no longer all belong to group {from} (epoch {})",
                    table.epoch()
                )));
            }
            let epoch = table.epoch() + 1;
            let skip_fence = self.config.bugs.is_planted(Bug::MigrationSkipsFence);
            let fence = Ownership::new(
                epoch,
                adjust(&table.slot_ranges(from), &[], &migration.ranges),
            )
            .map_err(|e| refuse(e.to_string()))?;
            if !skip_fence {
                self.step(
                    turn,
                    from,
                    SetOwnedSlots {
                        group: from,
                        ownership: fence,
                    },
                )
                .await?;
                // Nothing of the slots applies on the source after the fence: this pass
                // copies the last of it.
                if !skip_catch_up {
                    let (index, _) = self
                        .pass(turn, migration, (from, to), changes(since), false)
                        .await?;
                    since = index;
                }
            }
            let owned = Ownership::new(
                epoch,
                adjust(&table.slot_ranges(to), &migration.ranges, &[]),
            )
            .map_err(|e| refuse(e.to_string()))?;
            self.step(
                turn,
                to,
                SetOwnedSlots {
                    group: to,
                    ownership: owned,
                },
            )
            .await?;
            let next = table.move_slots(&migration.ranges, to)?;
            if self.install_routing(&next).await? {
                let took = millis(clock.now().saturating_sub(started));
                migration.cutover_ms = Some(took);
                tracing::info!(
                    id = migration.id,
                    epoch,
                    cutover_ms = took,
                    "migration cut over"
                );
                return Ok(Ok(epoch));
            }
            // Another table took the epoch: fence again at the next one.
        }
    }

    /// Every migration recorded, by id (on the leader, linearizable), with the progress of
    /// the ones running now.
    pub(crate) async fn migrations(&self) -> Result<Vec<Migration>, CenterError> {
        let recorded = self.load().await?.migrations;
        let soft = self.soft.lock().expect("soft lock");
        Ok(recorded
            .into_values()
            .map(|m| match soft.progress.get(&m.id) {
                Some(live) if live.phase == m.phase => live.clone(),
                _ => m,
            })
            .collect())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn copy(after: Option<Bytes>) -> SlotRead {
    SlotRead::Copy { after }
}

fn changes(since: u64) -> impl Fn(Option<Bytes>) -> SlotRead {
    move |after| SlotRead::Changes { since, after }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RoutingTable {
        RoutingTable::even(4, |g| vec![g, g + 1, g + 2])
    }

    #[test]
    fn a_move_needs_one_owner_another_target_and_no_busy_group() {
        let t = table();
        let first = t.slot_ranges(1)[0];
        assert_eq!(
            check_move(&t, &[(first.0, first.0 + 9)], 2, &[]).ok(),
            Some(1)
        );
        assert!(
            check_move(&t, &[(first.0, first.0)], 1, &[]).is_err(),
            "to itself"
        );
        assert!(
            check_move(&t, &[(first.0, first.0)], 9, &[]).is_err(),
            "unknown group"
        );
        assert!(
            check_move(&t, &[(0, 16383)], 2, &[]).is_err(),
            "several owners"
        );
        assert!(check_move(&t, &[], 2, &[]).is_err(), "nothing");
        let busy = Migration {
            id: 3,
            ranges: vec![(0, 0)],
            from: 3,
            to: 2,
            phase: MigrationPhase::Copying,
            moved_records: 0,
            moved_bytes: 0,
            paused: false,
            cutover_ms: None,
            working_ms: 0,
        };
        assert!(check_move(&t, &[(first.0, first.0)], 2, std::slice::from_ref(&busy)).is_err());
        let done = Migration {
            phase: MigrationPhase::Done { epoch: 2 },
            ..busy
        };
        assert!(check_move(&t, &[(first.0, first.0)], 2, &[done]).is_ok());
    }

    #[test]
    fn adjusting_ranges_adds_and_removes_slots() {
        assert_eq!(adjust(&[(0, 9)], &[(10, 12)], &[]), vec![(0, 12)]);
        assert_eq!(adjust(&[(0, 9)], &[], &[(3, 4)]), vec![(0, 2), (5, 9)]);
        assert_eq!(adjust(&[(0, 9)], &[], &[(0, 9)]), vec![]);
    }
}
