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
    /// The target ingests a copy of the slots and then the changes since, pass after pass;
    /// then the cutover: the source fenced (through its log), a last catch-up, the target owns
    /// the slots, and the routing table with the move is committed.
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
