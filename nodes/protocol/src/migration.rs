//! Moving slots between groups, as the center records and reports it: [`Migration`] (one move
//! of slot ranges from a source group to a target group, recorded in the center group so a new
//! center leader resumes it where it was) and [`MoveSlots`], the request that starts one.

use larder_core::GroupId;
use serde::{Deserialize, Serialize};

use crate::center::{CenterRequest, CenterResponse};
use crate::{Request, Rpc};

/// Where a migration is. Each phase is recorded in the center group before its work starts,
/// and the work of each is safe to redo from its start (ingesting a record twice writes it
/// twice; setting an ownership again changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrationPhase {
    /// Recorded. Next: both groups' ownership made explicit, the source starts recording
    /// changes of the slots.
    Planned,
    /// The target ingests a copy of the slots and then the changes since, pass after pass,
    /// until a pass is small. Next: `CuttingOver`.
    Copying,
    /// The table of `epoch` maps the slots to the target. After a grace period (every proxy
    /// has had time to learn it) the source stops recording and deletes its copy in pages.
    Cleaning {
        epoch: u64,
    },
    /// Finished at routing `epoch`.
    Done {
        epoch: u64,
    },
    /// Given up before the cutover (`reason`): the source still owns the slots, and what the
    /// target ingested is deleted there. Next: `RolledBack`.
    RollingBack {
        reason: String,
    },
    RolledBack {
        reason: String,
    },
    /// Copied and caught up; recorded before the source is fenced, so from here on the
    /// migration only goes forward (a fenced source cannot take the slots back: ownership
    /// epochs only grow) and cannot be cancelled. The cutover's last catch-up copies the
    /// changes from log index `since` on. Next: `Cleaning`.
    CuttingOver {
        since: u64,
    },
}

impl MigrationPhase {
    /// Still has work to do.
    pub fn is_active(&self) -> bool {
        !matches!(
            self,
            MigrationPhase::Done { .. } | MigrationPhase::RolledBack { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            MigrationPhase::Planned => "planned",
            MigrationPhase::Copying => "copying",
            MigrationPhase::CuttingOver { .. } => "cutting over",
            MigrationPhase::Cleaning { .. } => "cleaning",
            MigrationPhase::Done { .. } => "done",
            MigrationPhase::RollingBack { .. } => "rolling back",
            MigrationPhase::RolledBack { .. } => "rolled back",
        }
    }
}

/// One move of slot `ranges` (inclusive, ascending, disjoint) from group `from` to group `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    pub id: u64,
    pub ranges: Vec<(u16, u16)>,
    pub from: GroupId,
    pub to: GroupId,
    pub phase: MigrationPhase,
    /// Records written into the target so far (copy and catch-up; a key changed twice counts
    /// twice), and their bytes. Recorded at phase changes.
    pub moved_records: u64,
    pub moved_bytes: u64,
    /// Paused by an operator ([`Steer::Pause`]): the task does nothing until resumed or
    /// cancelled, also after a center failover.
    pub paused: bool,
    /// How long the cutover took on the center, in milliseconds: from the fence's request to
    /// the table with the move committed. Writes to the slots wait this long (plus a proxy's
    /// table refresh): the write pause.
    pub cutover_ms: Option<u64>,
    /// Time the migration's tasks have worked on it so far (pauses left out), in milliseconds;
    /// with `moved_bytes`, its rate.
    pub working_ms: u64,
}

impl Migration {
    /// Records moved per second of work (0 before any work).
    pub fn records_per_second(&self) -> u64 {
        (self.moved_records * 1000)
            .checked_div(self.working_ms)
            .unwrap_or(0)
    }
}

/// What an operator asks of a migration ([`SteerMigration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Steer {
    /// Stop copying (or cleaning) after the page in flight, until resumed; the slots stay with
    /// whichever group owns them. Recorded, so it survives a center failover.
    Pause,
    Resume,
    /// Roll back: the source keeps the slots, what the target ingested is deleted there.
    /// Refused once the cutover has started (move the slots back instead).
    Cancel,
}

/// Operator -> center leader: pause, resume or cancel migration `id`. Answered with the
/// migration's record once the migration's task has acted on it (a pause recorded, a cancel
/// rolling back), or `Unavailable` with the reason it cannot be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteerMigration {
    pub id: u64,
    pub steer: Steer,
}

impl Rpc for SteerMigration {
    type Response = CenterResponse<Migration>;
}

impl From<SteerMigration> for Request {
    fn from(request: SteerMigration) -> Request {
        Request::Center(CenterRequest::SteerMigration(request))
    }
}

/// Operator -> center leader: split group `group`: a new group is placed on the least loaded
/// nodes and the upper half of `group`'s slots migrate to it. Answered with the migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitGroup {
    pub group: GroupId,
}

impl Rpc for SplitGroup {
    type Response = CenterResponse<Migration>;
}

impl From<SplitGroup> for Request {
    fn from(request: SplitGroup) -> Request {
        Request::Center(CenterRequest::SplitGroup(request))
    }
}

/// Operator -> center leader: move slot `ranges` (all owned by one group) to group `to`.
/// Answered with the recorded [`Migration`] (phase `Planned`), or `Unavailable` with the reason
/// it cannot start (an unknown group, slots of several groups, a migration already moving
/// slots of either group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveSlots {
    pub ranges: Vec<(u16, u16)>,
    pub to: GroupId,
}

impl Rpc for MoveSlots {
    type Response = CenterResponse<Migration>;
}

impl From<MoveSlots> for Request {
    fn from(request: MoveSlots) -> Request {
        Request::Center(CenterRequest::MoveSlots(request))
    }
}

/// Anyone -> center leader: every migration the center has recorded, by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMigrations;

impl Rpc for GetMigrations {
    type Response = CenterResponse<Vec<Migration>>;
}

impl From<GetMigrations> for Request {
    fn from(request: GetMigrations) -> Request {
        Request::Center(CenterRequest::GetMigrations(request))
    }
}
