//! A run's findings, typed: [`Violation`] (one variant per invariant the run checks) and
//! [`Linearizability`] (the checker's report on the history). `Display` renders each as the
//! one line (or block) the text and JSON summaries print.

use std::collections::BTreeMap;
use std::fmt;

use larder_core::{GroupId, NodeId};
use larder_workloads::checker::{Report, Verdict};
use serde::Serialize;

/// (applied index, state hash) of one replica of one group.
pub type Digest = (u64, u64);

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "invariant", rename_all = "snake_case")]
pub enum Violation {
    /// The checker's final read of a key answered something that is not a value.
    FinalReadAnswered {
        key: String,
        /// The reply, as debug text.
        reply: String,
    },
    /// The checker's final read of a key never succeeded.
    FinalReadFailed { key: String },
    /// A group's replicas never converged: what one replica believed at the end.
    ReplicaAtEnd {
        group: GroupId,
        node: NodeId,
        /// Its Raft status, as debug text.
        status: String,
    },
    /// The first read after the heal point succeeded, but later than the liveness bound.
    LivenessLate { after_heal_ms: u64, bound_ms: u64 },
    /// No read succeeded after the heal point.
    LivenessNever,
    /// A counter's final value is not the sum of its acknowledged increments plus some of its
    /// indeterminate ones.
    CounterOutOfRange {
        key: String,
        value: i64,
        /// The sum of acknowledged increments.
        low: i64,
        /// `low` plus the sum of indeterminate increments.
        high: i64,
    },
    /// A register's final value was written by no operation.
    RegisterNeverWritten { key: String, value: String },
    /// A register's final value comes from a write reported as failed.
    RegisterFromFailedWrite {
        key: String,
        value: String,
        error: Option<String>,
    },
    /// The checker saw no routing table at the end.
    NoFinalRouting,
    /// The final routing table still lists a destroyed node as a replica.
    DestroyedReplica {
        group: GroupId,
        node: NodeId,
        replicas: Vec<NodeId>,
    },
    /// A group's replicas did not all report one applied index.
    ReplicasNotConverged {
        group: GroupId,
        digests: BTreeMap<NodeId, Digest>,
    },
    /// A group's replicas hold different states at the same applied index.
    ReplicasDiverged {
        group: GroupId,
        digests: BTreeMap<NodeId, Digest>,
    },
    /// The history is not linearizable.
    NotLinearizable { report: Box<Report> },
    /// The checker's search budget ran out before a verdict: the run proves nothing, so it
    /// does not pass (unless its configuration opts in, `SimConfig::unknown_passes`).
    LinearizabilityUnknown { report: Box<Report> },
    /// The history could not be paired into operations (a recorder bug).
    MalformedHistory { error: String },
    /// At the end of the run a replica's slot ownership differs from the final table, or it
    /// stores keys of slots it does not own.
    OwnershipAtEnd {
        group: GroupId,
        node: NodeId,
        detail: String,
    },
    /// A slot migration had not ended (done or rolled back) by the end of the run.
    MigrationUnfinished { id: u64, phase: String },
    /// A node the operator drained still held replicas (or was not removed) at the end.
    DrainUnfinished { node: NodeId },
    /// What a node keeps on disk breaks a property Raft needs of storage (a log out of order,
    /// a vote used before it was durable); found by auditing the disk, not the history.
    StorageDefect {
        node: NodeId,
        /// When it was found (a fault point, a crash, the end of the run).
        when: String,
        defect: String,
    },
    /// Reopening a replica's state machine from what its disk holds gives another state than
    /// the one it serves: a restart now would lose or redo applied entries.
    RecoveryDiffers {
        group: GroupId,
        node: NodeId,
        serving: Digest,
        recovered: Digest,
    },
    /// A group rebuilt from what the run's archiver backed up (`--backup`) differs from what
    /// its replica holds at the end: the archive holds an entry the group never committed, or
    /// misses one it did.
    BackupDiverges {
        group: GroupId,
        node: NodeId,
        detail: String,
    },
    /// The target of the run's cross-cluster sync (`--sync`) differs from the source cluster
    /// at the end, or the sync stopped.
    SyncDiverges { detail: String },
}

impl Violation {
    /// The workload key the violation is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Violation::CounterOutOfRange { key, .. }
            | Violation::RegisterNeverWritten { key, .. }
            | Violation::RegisterFromFailedWrite { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::FinalReadAnswered { key, reply } => {
                write!(f, "final read of {key} answered {reply}")
            }
            Violation::FinalReadFailed { key } => write!(f, "final read of {key} never succeeded"),
            Violation::ReplicaAtEnd {
                group,
                node,
                status,
            } => write!(f, "group {group} on node {node} at the end: {status}"),
            Violation::LivenessLate {
                after_heal_ms,
                bound_ms,
            } => write!(
                f,
                "liveness: first read succeeded {after_heal_ms} ms after healing (bound {bound_ms} ms)"
            ),
            Violation::LivenessNever => f.write_str("liveness: no read succeeded after healing"),
            Violation::CounterOutOfRange {
                key,
                value,
                low,
                high,
            } => write!(
                f,
                "counter {key}: final value {value} outside [{low}, {high}] (acknowledged sum, plus indeterminate)"
            ),
            Violation::RegisterNeverWritten { key, value } => {
                write!(f, "register {key}: final value {value:?} was never written")
            }
            Violation::RegisterFromFailedWrite { key, value, error } => write!(
                f,
                "register {key}: final value {value:?} comes from a write reported as failed ({error:?})"
            ),
            Violation::NoFinalRouting => f.write_str("no final routing table"),
            Violation::DestroyedReplica {
                group,
                node,
                replicas,
            } => write!(
                f,
                "group {group} still lists destroyed node {node} as a replica: {replicas:?}"
            ),
            Violation::ReplicasNotConverged { group, digests } => {
                write!(f, "group {group}: replicas did not converge: {digests:?}")
            }
            Violation::ReplicasDiverged { group, digests } => write!(
                f,
                "group {group}: replicas diverged at the same applied index: {digests:?}"
            ),
            Violation::NotLinearizable { report } => write!(f, "linearizability: {report}"),
            Violation::LinearizabilityUnknown { report } => write!(
                f,
                "linearizability unknown (the checker's budget ran out; an unknown is not a pass): {report}"
            ),
            Violation::MalformedHistory { error } => write!(f, "history is malformed: {error}"),
            Violation::OwnershipAtEnd {
                group,
                node,
                detail,
            } => write!(
                f,
                "slot ownership of group {group} on node {node}: {detail}"
            ),
            Violation::MigrationUnfinished { id, phase } => {
                write!(f, "migration {id} still {phase} at the end of the run")
            }
            Violation::DrainUnfinished { node } => {
                write!(f, "node {node} still draining at the end of the run")
            }
            Violation::StorageDefect { node, when, defect } => {
                write!(f, "storage of node {node} ({when}): {defect}")
            }
            Violation::RecoveryDiffers {
                group,
                node,
                serving,
                recovered,
            } => write!(
                f,
                "group {group} on node {node}: reopening its disk gives (applied, digest) {recovered:?}, it serves {serving:?}"
            ),
            Violation::BackupDiverges {
                group,
                node,
                detail,
            } => write!(
                f,
                "group {group} rebuilt from the run's backup differs from node {node}'s replica: {detail}"
            ),
            Violation::SyncDiverges { detail } => {
                write!(
                    f,
                    "the sync's target differs from the source cluster: {detail}"
                )
            }
        }
    }
}

/// The linearizability checker's result on a run's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Linearizability {
    /// The checker's report. Its verdict: linearizable; not linearizable, with the failing
    /// window; or unknown, when the search budget ran out (not a violation).
    Checked(Report),
    /// The history could not be paired into operations.
    Malformed { error: String },
}

impl Linearizability {
    /// The checker's verdict, if the history could be checked.
    pub fn verdict(&self) -> Option<&Verdict> {
        match self {
            Linearizability::Checked(report) => Some(&report.verdict),
            Linearizability::Malformed { .. } => None,
        }
    }

    pub fn is_linearizable(&self) -> bool {
        matches!(self.verdict(), Some(Verdict::Linearizable))
    }

    pub fn is_not_linearizable(&self) -> bool {
        matches!(self.verdict(), Some(Verdict::NotLinearizable { .. }))
    }

    /// The budget ran out before a verdict.
    pub fn is_unknown(&self) -> bool {
        matches!(self.verdict(), Some(Verdict::Unknown { .. }))
    }

    /// The violation this result is, if any: a history that is not linearizable or malformed,
    /// or (unless `unknown_passes`) one the checker could not decide.
    pub fn violation(&self, unknown_passes: bool) -> Option<Violation> {
        match self {
            Linearizability::Checked(report) if report.is_not_linearizable() => {
                Some(Violation::NotLinearizable {
                    report: Box::new(report.clone()),
                })
            }
            Linearizability::Checked(report) if self.is_unknown() && !unknown_passes => {
                Some(Violation::LinearizabilityUnknown {
                    report: Box::new(report.clone()),
                })
            }
            Linearizability::Checked(_) => None,
            Linearizability::Malformed { error } => Some(Violation::MalformedHistory {
                error: error.clone(),
            }),
        }
    }
}

/// The report's text without its trailing newline (`linearizable: 12 operations, …`, then the
/// failing window when not linearizable), or `history is malformed: …`.
impl fmt::Display for Linearizability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Linearizability::Checked(report) => f.write_str(report.to_string().trim_end()),
            Linearizability::Malformed { error } => write!(f, "history is malformed: {error}"),
        }
    }
}
