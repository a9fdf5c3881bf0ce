//! Bugs planted on purpose, to prove the simulator's checks catch them ("testing the tests").
//!
//! Each [`Bug`] is a realistic mistake in one layer of the store, behind a named switch. A
//! [`Bugs`] set travels in the configuration of every role (`NodeConfig::bugs`,
//! `ClientConfig::bugs`, `ProxyConfig::bugs`, `CenterConfig::bugs`, never read from a file) but
//! can hold a bug only when this crate is built with the `planted-bugs` feature: the production
//! binary's default build has no [`Bugs::plant`], and [`Bugs::is_planted`] is a constant `false`
//! there, so the broken code paths compile away. Tests enable the feature through a
//! dev-dependency (cargo does not unify dev-dependency features into `cargo build -p larder`);
//! `larder sim --bug NAME` needs `--features planted-bugs`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One planted bug. The catalog is [`Bug::ALL`]; each variant's doc says what it breaks and
/// which layer it lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bug {
    /// Reads: a node that believes it leads answers reads from its local state without the
    /// read-index round, so a deposed leader serves stale reads.
    StaleLocalReads,
    /// Reads: openraft's leader restore left on, so a restarted leader serves read-index reads
    /// from a state machine behind writes it acknowledged (found by cluster seeds 22 and 81).
    LeaderRestore,
    /// Storage durability: Raft log appends are acknowledged without a sync, so a crash can
    /// lose entries a quorum acknowledged.
    UnsyncedLogAppend,
    /// Storage durability: the group-commit task reports a failed sync as success.
    IgnoredSyncError,
    /// Raft log handling: a vote is saved without a sync, so after a crash a node can vote
    /// twice in one term.
    UnsyncedVote,
    /// Raft log handling: truncating a conflicting suffix is skipped, so a node keeps entries
    /// a new leader overwrote past its own log's end.
    SkippedTruncate,
    /// Raft log cache (storage): an append at indexes the node's in-memory log cache already
    /// holds is taken for a resend of the cached entries, and a truncation leaves the cache
    /// alone, so after a new leader overwrites a suffix the node still replicates and applies
    /// the entries it replaced.
    LogCacheKeepsOverwritten,
    /// Apply/restart: the applied marker is not written with the state changes, so a restart
    /// applies entries again on top of state that already holds them.
    AppliedMarkerLost,
    /// Session dedup: the state machine forgets client sessions, so a duplicated or retried
    /// write is applied twice.
    NoSessionDedup,
    /// Client error mapping: a write whose fate is unknown is reported as certainly failed.
    IndeterminateAsUnavailable,
    /// Proxy error mapping: an indeterminate write is answered `-TRYAGAIN` (nothing happened,
    /// retry) instead of `-ERR indeterminate`.
    ProxyTryAgainOnIndeterminate,
    /// Client retries: a write that timed out is retried under a new sequence number, so the
    /// group cannot recognise it as a duplicate.
    RetryWithNewSequence,
    /// Client sessions: a session a closed connection leaves to the next (`SessionPool`) is
    /// handed on one sequence number back, so the next owner's first write repeats the last
    /// one's number and the group answers it with that write's reply, without applying it.
    PooledSessionRepeatsSequence,
    /// Center repair: a node stops being declared down once it was ever heard from, so a dead
    /// replica is never replaced.
    DeadNodeStaysUp,
    /// Clock use: a read judges expiry by the serving node's wall clock without advancing the
    /// group clock through the log first, so after a leader change to a node whose clock is
    /// behind (or a wall clock jumping back) a key a client saw expire comes back.
    TtlLocalClockRead,
    /// Reads: a multi-key read loads its keys one at a time without holding off apply, so an
    /// apply batch can land between two of its keys and an `MGET` sees half of an `MSET`.
    TornMultiKeyRead,
    /// Storage integrity: record checksums are not verified on read, so a bit flipped at rest
    /// is served (or applied, or replicated) as if it were data.
    SkipRecordChecksum,
    /// Migration: the cutover commits the new table without fencing the source first and
    /// without the last catch-up, so a write the source takes from a client with the old
    /// table after the last copy pass is lost when the slots move.
    MigrationSkipsFence,
    /// Migration: the target gets the copy of the slots but none of the changes since (no
    /// catch-up pass, before or after the fence), so a write to a key the copy had already
    /// passed is lost when the slots move.
    MigrationSkipsCatchUp,
    /// Migration (storage): the source marks keys written during a migration as changed but
    /// not keys deleted (or expired), so the catch-up never carries a delete and a key deleted
    /// during the copy comes back on the target.
    MigrationUntrackedDeletes,
    /// Replication: an append cut to its byte budget (`NodeConfig::append_bytes_max`) is
    /// reported to openraft as wholly accepted, so the leader counts the follower as holding
    /// entries it never received and may commit an entry only it holds.
    AppendCutReportedWhole,
    /// Proxy transactions: a `MULTI … EXEC` without `WATCH` sends its queued commands one by
    /// one instead of as one `Command::Transaction` entry, so other clients' commands apply
    /// between them and a transaction is seen (or applied) half done.
    TornTransaction,
    /// Collections element by element (storage): a command given part of a collection is not
    /// told the collection's true length, so it judges emptiness by the part, and removing
    /// the only loaded member (`SREM s a` on `{a, b, c}`) deletes the whole collection.
    ElementCountFromPart,
    /// Lists by position (storage): a window at a list's tail is taken to start at its head
    /// (no elements before it), so `RPOP` of a list of several answers the last element but
    /// deletes the row of the first: the list loses its head and keeps its tail.
    ListWindowAtHead,
    /// Pipelines (proxy): the replies of one slot group's share of a pipeline, run as one
    /// entry, are handed back in reverse order, so a client reads another command's answer.
    PipelineReplyOrder,
    /// Quiet groups (storage): a node's beacon names every group it hosts, not only those it
    /// leads, so a group whose leader died keeps hearing "its leader" from the other
    /// followers and never elects: the group stays unavailable after every fault heals.
    QuietClaimsEveryGroup,
    /// Hot keys (proxy): a write past its key's limit is answered `-HOTKEY` (nothing done) but
    /// still sent to the cluster, where it applies: a client told its write was refused can
    /// read it back.
    HotKeyRefusalSent,
    /// Shared reads (proxy): a fetched answer of a hot read is also served from memory to equal
    /// reads for 50 ms after it came back (a cache without invalidation), so a read that starts
    /// after a write was acknowledged can answer the value from before it.
    HotReadCached,
    /// Coalescing (proxy): the answers of a batch of single commands of several connections
    /// are handed out one place off, so each connection gets the answer of the command queued
    /// after its own.
    CoalescedRepliesShifted,
    /// Voter replacement (storage): a replace the replica's committed membership shows done
    /// is answered "done" without confirming leadership, so a leader cut off from its group
    /// answers from a membership its group has since changed, and the center writes that
    /// stale membership into the routing table.
    ReplaceDoneUnconfirmed,
    /// Sessions (storage): a replica forgets sessions by its own `sessions_max` (at every
    /// write past it) instead of by the bound each registration carries, so replicas
    /// configured with different bounds forget different sessions, and a write of a session
    /// one forgot is applied by the others.
    SessionBoundLocal,
    /// Repairs (center): a table written from a repair answered "done" is trusted for good,
    /// so when the answer was wrong (a deposed leader's) the table keeps a replica that is no
    /// member of its group, and the group's leader reporting otherwise is ignored.
    FinishedRepairTrusted,
    /// Lanes (storage): a SET in the slow write lane (a large value) is answered `OK` as soon
    /// as it has its place and is handed to Raft, not once it commits ("big writes need not
    /// wait"), so a read after the acknowledgement can miss it, and a leader change loses it.
    SlowWriteAckedEarly,
    /// Row cache (storage): an apply batch that deletes a key's state row does not tell the
    /// node's row cache, so the leader keeps serving the deleted record (a `DEL`, a collection
    /// emptied by its last pop or removal) to reads.
    RowCacheKeepsDeleted,
    /// Blocking pops (proxy): a write's reply does not wait for a blocked client that served
    /// itself by its own poll to hand on what its pop pushed, so after an `RPUSH` that feeds a
    /// chain of `BLMOVE`s the writer's next command can find the element mid-chain (Redis
    /// serves the whole chain before the writer's next command).
    BlockedChainReplyEarly,
    /// Read rounds (storage): a replica confirms a leader's read round for every group named,
    /// without checking its saved vote, so a deposed leader that still reaches it serves
    /// stale reads.
    ReadConfirmIgnoresVote,
    /// Read rounds (storage): a leader's quick view takes its state machine's applied index
    /// as the read index without checking that an entry of its own term was applied, so a new
    /// leader whose apply still lags what its predecessor acknowledged serves stale reads.
    QuickViewAnyApplied,
    /// Read batches (client): the answers of a batch of reads sent to one node are matched to
    /// its reads in reverse order, so a pipeline's read gets another group's value.
    ReadBatchAnswersReversed,
    /// Element scans (storage): a step of `HSCAN`/`SSCAN`/`ZSCAN` loads `COUNT` element rows
    /// even for a small collection, which the step then answers whole and done: `SSCAN s 0
    /// COUNT 1` on a set of several members answers one member and cursor 0.
    ScanRunIgnoresSmall,
    /// Unchanged writes (storage): a write that would change nothing (`DEL` of a missing key,
    /// `SREM` of a missing member) is answered from the local state of a node that believes
    /// it leads, without confirming its leadership, so a deposed leader answers as unchanged
    /// a write that the new leader's state would have changed.
    UnchangedWriteUnconfirmed,
    /// Quiet groups (storage node): a leader turns its group's heartbeats off once every
    /// follower matched its last entry, ignoring followers that say they have not learned it
    /// committed, so a follower that lost the one message carrying the commit index stays an
    /// entry behind for as long as the group is idle.
    QuietIgnoresLag,
    /// Expiry (storage node): the group-clock advance a read of a just-expired key proposes
    /// does not wake a quiet leader first, so openraft, whose lease ran out while the group
    /// slept, refuses it as "not the leader" and the read fails for as long as the group
    /// stays quiet (stop 51's fix, undone).
    AdvanceSkipsWake,
    /// Locks (storage): a transaction's fence checks that its lock is held, not that it is
    /// held with the caller's token, so a holder that let go of the lock (or was paused past
    /// its lease) still writes under the next holder's lock.
    FenceIgnoresToken,
    /// Locks (storage): a read (or a write that would change nothing, answered as a read)
    /// judges a lock's lease by the serving node's clock without first putting the lease's end
    /// in the log, as it does for an expiring key, so after a leader change to a node whose
    /// clock is behind, a lock a client saw free is held again and its fence passes.
    LeaseEndUnlogged,
    /// Backups (storage): a replica serves a backup the entries its log holds up to its last,
    /// not up to its applied index, so an archive may take a deposed leader's uncommitted tail,
    /// which the group later overwrites, and a restore replays writes that never happened.
    BackupReadsUnapplied,
    /// Cross-cluster sync (storage): `larder sync` copies every key a source group's entry
    /// writes, whether or not the group is the slot's newest owner, and does not copy a slot
    /// whole when a group takes it over; so a group that gave a slot up but whose entries the
    /// sync reads late overwrites the newer values its successor already copied, and keys the
    /// old owner deleted after the sync's last read of it stay on the target.
    SyncIgnoresOwnership,
    /// Cross-cluster sync (storage): a sync resumed from its checkpoint forgets which group
    /// each slot was copied from (the checkpoint kept only the groups' positions), so the
    /// first group to write a key of a slot after the restart claims it: a slot's old owner
    /// read late takes the target back to values from before the move.
    SyncResumeForgetsFollowed,
    /// Storage node: a failed synced write of the node's own records (the hosted groups) is
    /// answered as an error but not made fatal, so a node whose disk is poisoned stays up,
    /// refusing every replica the center gives it while heartbeating as healthy.
    PoisonedNodeStaysUp,
    /// Slot migration (storage): an `Ingest` page writes its records whoever owns their slots,
    /// so a copy page applied late (a duplicated message, a retried request) after the
    /// target owns the slots overwrites what clients wrote there since.
    IngestIntoOwnedSlots,
    /// Center registry: a node record planned from a control round's view is written even if
    /// the record changed since, so a drain recorded while the round ran is overwritten by
    /// the round's `Up`, and the node gets replicas again and is never removed.
    RegistryOverwritesDrain,
    /// Slot migration (center): a copy redone (the migration resumed in its copying phase by
    /// a new center leader, or its task restarted) copies the source again over what the
    /// target holds from the earlier attempt without clearing it first, so a key the source
    /// deleted between the two attempts stays on the target and comes back at the cutover.
    CopyRedoneOverStale,
    /// Center: an operator's steer of a migration (pause, resume, cancel) is taken by a new
    /// leader before its first control round of the term, which starts the term's soft state
    /// afresh and drops it: answered, never acted on, so a resume is lost and the migration
    /// stays paused.
    SteerBeforeTermStart,
    /// Slot migration (storage): a stamped page applies whatever its stamp, so a page
    /// delivered late (a deposed center leader's, the original of a page retried after a
    /// timeout) writes over what a later page or a later attempt of the copy wrote.
    LatePageApplied,
    /// Slot migration (storage): a stamped tracking start applies whatever its stamp, so one
    /// delivered after its migration ended records changes again for a migration that is
    /// over and holds the source's slots as moving for good (every later migration out of
    /// that group is refused).
    LateTrackingApplied,
    /// Slot migration (storage): a migration's end (`UntrackSlots`) forgets the tracking
    /// record but keeps the change markers of every key written while it tracked, so each
    /// migration out of a group leaves rows behind that nothing reads or deletes.
    UntrackKeepsMarkers,
}

impl Bug {
    /// Every bug of the catalog, in a fixed order.
    pub const ALL: [Bug; 55] = [
        Bug::StaleLocalReads,
        Bug::LeaderRestore,
        Bug::UnsyncedLogAppend,
        Bug::IgnoredSyncError,
        Bug::UnsyncedVote,
        Bug::SkippedTruncate,
        Bug::LogCacheKeepsOverwritten,
        Bug::AppliedMarkerLost,
        Bug::NoSessionDedup,
        Bug::IndeterminateAsUnavailable,
        Bug::ProxyTryAgainOnIndeterminate,
        Bug::RetryWithNewSequence,
        Bug::PooledSessionRepeatsSequence,
        Bug::DeadNodeStaysUp,
        Bug::TtlLocalClockRead,
        Bug::TornMultiKeyRead,
        Bug::SkipRecordChecksum,
        Bug::MigrationSkipsFence,
        Bug::MigrationSkipsCatchUp,
        Bug::MigrationUntrackedDeletes,
        Bug::AppendCutReportedWhole,
        Bug::TornTransaction,
        Bug::ElementCountFromPart,
        Bug::ListWindowAtHead,
        Bug::PipelineReplyOrder,
        Bug::QuietClaimsEveryGroup,
        Bug::HotKeyRefusalSent,
        Bug::HotReadCached,
        Bug::SlowWriteAckedEarly,
        Bug::RowCacheKeepsDeleted,
        Bug::BlockedChainReplyEarly,
        Bug::ReadConfirmIgnoresVote,
        Bug::QuickViewAnyApplied,
        Bug::ReadBatchAnswersReversed,
        Bug::ScanRunIgnoresSmall,
        Bug::UnchangedWriteUnconfirmed,
        Bug::QuietIgnoresLag,
        Bug::AdvanceSkipsWake,
        Bug::FenceIgnoresToken,
        Bug::LeaseEndUnlogged,
        Bug::BackupReadsUnapplied,
        Bug::SyncIgnoresOwnership,
        Bug::SyncResumeForgetsFollowed,
        Bug::CoalescedRepliesShifted,
        Bug::ReplaceDoneUnconfirmed,
        Bug::SessionBoundLocal,
        Bug::FinishedRepairTrusted,
        Bug::PoisonedNodeStaysUp,
        Bug::IngestIntoOwnedSlots,
        Bug::RegistryOverwritesDrain,
        Bug::CopyRedoneOverStale,
        Bug::SteerBeforeTermStart,
        Bug::LatePageApplied,
        Bug::LateTrackingApplied,
        Bug::UntrackKeepsMarkers,
    ];

    /// The switch's name (`larder sim --bug NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Bug::StaleLocalReads => "stale-local-reads",
            Bug::LeaderRestore => "leader-restore",
            Bug::UnsyncedLogAppend => "unsynced-log-append",
            Bug::IgnoredSyncError => "ignored-sync-error",
            Bug::UnsyncedVote => "unsynced-vote",
            Bug::SkippedTruncate => "skipped-truncate",
            Bug::LogCacheKeepsOverwritten => "log-cache-keeps-overwritten",
            Bug::AppliedMarkerLost => "applied-marker-lost",
            Bug::NoSessionDedup => "no-session-dedup",
            Bug::IndeterminateAsUnavailable => "indeterminate-as-unavailable",
            Bug::ProxyTryAgainOnIndeterminate => "proxy-tryagain-on-indeterminate",
            Bug::RetryWithNewSequence => "retry-with-new-sequence",
            Bug::PooledSessionRepeatsSequence => "pooled-session-repeats-sequence",
            Bug::DeadNodeStaysUp => "dead-node-stays-up",
            Bug::TtlLocalClockRead => "ttl-local-clock-read",
            Bug::TornMultiKeyRead => "torn-multi-key-read",
            Bug::SkipRecordChecksum => "skip-record-checksum",
            Bug::MigrationSkipsFence => "migration-skips-fence",
            Bug::MigrationSkipsCatchUp => "migration-skips-catch-up",
            Bug::MigrationUntrackedDeletes => "migration-untracked-deletes",
            Bug::AppendCutReportedWhole => "append-cut-reported-whole",
            Bug::TornTransaction => "torn-transaction",
            Bug::ElementCountFromPart => "element-count-from-part",
            Bug::ListWindowAtHead => "list-window-at-head",
            Bug::PipelineReplyOrder => "pipeline-reply-order",
            Bug::QuietClaimsEveryGroup => "quiet-claims-every-group",
            Bug::HotKeyRefusalSent => "hot-key-refusal-sent",
            Bug::HotReadCached => "hot-read-cached",
            Bug::SlowWriteAckedEarly => "slow-write-acked-early",
            Bug::RowCacheKeepsDeleted => "row-cache-keeps-deleted",
            Bug::BlockedChainReplyEarly => "blocked-chain-reply-early",
            Bug::ReadConfirmIgnoresVote => "read-confirm-ignores-vote",
            Bug::QuickViewAnyApplied => "quick-view-any-applied",
            Bug::ReadBatchAnswersReversed => "read-batch-answers-reversed",
            Bug::ScanRunIgnoresSmall => "scan-run-ignores-small",
            Bug::UnchangedWriteUnconfirmed => "unchanged-write-unconfirmed",
            Bug::QuietIgnoresLag => "quiet-ignores-lag",
            Bug::AdvanceSkipsWake => "advance-skips-wake",
            Bug::FenceIgnoresToken => "fence-ignores-token",
            Bug::LeaseEndUnlogged => "lease-end-unlogged",
            Bug::BackupReadsUnapplied => "backup-reads-unapplied",
            Bug::SyncIgnoresOwnership => "sync-ignores-ownership",
            Bug::SyncResumeForgetsFollowed => "sync-resume-forgets-followed",
            Bug::CoalescedRepliesShifted => "coalesced-replies-shifted",
            Bug::ReplaceDoneUnconfirmed => "replace-done-unconfirmed",
            Bug::SessionBoundLocal => "session-bound-local",
            Bug::FinishedRepairTrusted => "finished-repair-trusted",
            Bug::PoisonedNodeStaysUp => "poisoned-node-stays-up",
            Bug::IngestIntoOwnedSlots => "ingest-into-owned-slots",
            Bug::RegistryOverwritesDrain => "registry-overwrites-drain",
            Bug::CopyRedoneOverStale => "copy-redone-over-stale",
            Bug::SteerBeforeTermStart => "steer-before-term-start",
            Bug::LatePageApplied => "late-page-applied",
            Bug::LateTrackingApplied => "late-tracking-applied",
            Bug::UntrackKeepsMarkers => "untrack-keeps-markers",
        }
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown bug name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no planted bug is named {0:?}")]
pub struct UnknownBug(pub String);

impl FromStr for Bug {
    type Err = UnknownBug;

    fn from_str(name: &str) -> Result<Bug, UnknownBug> {
        Bug::ALL
            .into_iter()
            .find(|bug| bug.name() == name)
            .ok_or_else(|| UnknownBug(name.to_string()))
    }
}

/// This build cannot plant bugs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot plant {0}: this build has no planted bugs (build with `--features planted-bugs`)")]
pub struct NotPlantable(pub Bug);

/// The bugs planted in one process (empty, always, without the `planted-bugs` feature).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bugs {
    #[cfg(feature = "planted-bugs")]
    planted: std::collections::BTreeSet<Bug>,
}

impl Bugs {
    /// Whether the build can plant bugs at all (the `planted-bugs` feature).
    pub const PLANTABLE: bool = cfg!(feature = "planted-bugs");

    /// Whether `bug` is planted.
    #[inline]
    pub fn is_planted(&self, bug: Bug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.planted.contains(&bug)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = bug;
            false
        }
    }

    /// Plants `bug`. Only in builds with the `planted-bugs` feature.
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bug: Bug) {
        self.planted.insert(bug);
    }

    /// Plants `bug` if this build can ([`Bugs::PLANTABLE`]); the error names the feature
    /// that is missing. For command lines, which cannot know at compile time how the library
    /// was built.
    pub fn try_plant(&mut self, bug: Bug) -> Result<(), NotPlantable> {
        #[cfg(feature = "planted-bugs")]
        {
            self.plant(bug);
            Ok(())
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            Err(NotPlantable(bug))
        }
    }

    /// A set holding only `bug`.
    #[cfg(feature = "planted-bugs")]
    pub fn only(bug: Bug) -> Bugs {
        let mut bugs = Bugs::default();
        bugs.plant(bug);
        bugs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bug_has_a_unique_name_that_parses_back() {
        let mut names = std::collections::BTreeSet::new();
        for bug in Bug::ALL {
            assert!(names.insert(bug.name()), "{bug:?} repeats a name");
            assert_eq!(bug.name().parse::<Bug>(), Ok(bug));
        }
        assert!("no-such-bug".parse::<Bug>().is_err());
    }

    #[test]
    fn nothing_is_planted_by_default() {
        for bug in Bug::ALL {
            assert!(!Bugs::default().is_planted(bug));
        }
    }
}
