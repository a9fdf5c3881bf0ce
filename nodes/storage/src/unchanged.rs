//! Unchanged writes: a write that would change nothing is answered by a confirmed read, not
//! through the log.
//!
//! A write can change nothing: `DEL` of a missing key, `SADD` of a member already there,
//! `HDEL` of a missing field, `LPOP` of an empty list (which Redis leaves out of its AOF), or
//! `SET`/`HSET` of the value already stored (which Redis, comparing no values, appends).
//! Through the log such a write costs a Raft round, a sync on a quorum of replicas and a log
//! entry, for nothing. The leader instead executes it on its applied state; if that
//! would write every record as it is stored, the leader confirms its leadership as a read
//! does (a read round or openraft's read index), executes it again on the state at the read
//! index and answers that reply. It is linearizable as a read is: the write takes effect
//! (none) at the read point, after it was sent and before it is answered. A write that
//! changes something (the common case) costs one look at rows the apply reads anyway.
//!
//! What a read need not care about and this must: a write carries a session so that its
//! group applies it once however often it is delivered. A copy answered here leaves no trace
//! in the group's session table, so a second copy of the same request (a retransmission; the
//! simulator duplicates requests) could go through the log later and change what the first
//! copy answered as unchanged: one write, two effects. The node therefore remembers, per
//! group and session, the last sequence it served and how ([`Fate`]): a copy of a sequence
//! answered here gets the same answer, a copy of one that went to the log goes there too
//! (where the session table answers it), and a copy arriving while another is being served
//! is refused as unavailable (nothing done; the client's retry finds the first copy's fate).
//! A client sends one write of a session at a time, so only copies of a request meet here,
//! and a copy of a sequence older than the last served is one its client stopped waiting
//! for: it is refused, never sent to the log. The log could not tell it from a new write if
//! it was answered here (the session table knows only logged sequences): cluster swarm seed
//! 5, once the simulator delayed duplicates, had a copy of a `DEL` answered unchanged
//! arrive after its client's next writes and delete the keys one of them had set.
//! The memory is the node's: a copy delivered after the node restarted, or after
//! [`FATES_MAX`] later sessions pushed its record out, is not recognised.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use larder_core::GroupId;
use larder_core::kv::Reply;
use larder_protocol::SessionSeq;

/// Sessions whose last write's fate a node remembers, across all its groups (the oldest is
/// forgotten first). A duplicate arrives within its request's deadline (seconds), long before
/// this many other sessions have written.
pub const FATES_MAX: usize = 65_536;

/// How a node served a session's write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Answered here, unchanged, with this reply.
    Answered(Reply),
    /// Sent to the log.
    Logged,
}

/// What the node does with a copy of a write (see the module's comment).
#[derive(Debug)]
pub(crate) enum Admission<'a> {
    /// The first copy of this sequence: it may be answered unchanged. The guard must be told
    /// the outcome ([`Serving::answered`], [`Serving::logged`]) before the write is answered
    /// or proposed.
    Serve(Serving<'a>),
    /// A copy of a sequence answered unchanged: the same reply.
    Answered(Reply),
    /// A copy of a sequence sent to the log: the log decides.
    Log,
    /// A copy of a sequence older than the session's last served here: its client has moved
    /// on; refused, nothing done.
    Stale,
    /// Another copy is being served right now.
    Busy,
}

#[derive(Debug, Default)]
struct Fates {
    /// `(group, session)` → the last sequence served, how, and when (a counter).
    last: BTreeMap<(GroupId, u64), (u64, Fate, u64)>,
    /// `(when, group, session)` of every entry of `last`, the oldest first.
    by_age: BTreeSet<(u64, GroupId, u64)>,
    /// Sessions with a copy being served.
    busy: BTreeSet<(GroupId, u64)>,
    clock: u64,
}

/// A node's memory of the writes it served, for answering their copies.
#[derive(Debug, Default)]
pub struct UnchangedWrites {
    fates: Mutex<Fates>,
    answered: AtomicU64,
}

impl UnchangedWrites {
    /// Where a delivery of `session`'s write to `group` goes.
    pub(crate) fn admit(&self, group: GroupId, session: SessionSeq) -> Admission<'_> {
        let mut fates = self.fates.lock().expect("fates lock");
        let key = (group, session.session);
        if fates.busy.contains(&key) {
            return Admission::Busy;
        }
        match fates.last.get(&key) {
            Some((seq, Fate::Answered(reply), _)) if *seq == session.seq => {
                return Admission::Answered(reply.clone());
            }
            Some((seq, _, _)) if *seq == session.seq => return Admission::Log,
            Some((seq, _, _)) if *seq > session.seq => return Admission::Stale,
            _ => {}
        }
        fates.busy.insert(key);
        Admission::Serve(Serving {
            writes: self,
            group,
            session,
        })
    }

    /// Writes answered unchanged, for the metrics.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    fn record(&self, group: GroupId, session: SessionSeq, fate: Fate) {
        let mut fates = self.fates.lock().expect("fates lock");
        let key = (group, session.session);
        fates.clock += 1;
        let when = fates.clock;
        if let Some((_, _, old)) = fates.last.insert(key, (session.seq, fate, when)) {
            fates.by_age.remove(&(old, group, session.session));
        }
        fates.by_age.insert((when, group, session.session));
        while fates.last.len() > FATES_MAX {
            let Some((_, group, session)) = fates.by_age.pop_first() else {
                break;
            };
            fates.last.remove(&(group, session));
        }
    }

    /// Sessions remembered (at most [`FATES_MAX`]).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.fates.lock().expect("fates lock").last.len()
    }
}

/// A copy being served; the session is busy until this is dropped.
#[derive(Debug)]
pub(crate) struct Serving<'a> {
    writes: &'a UnchangedWrites,
    group: GroupId,
    session: SessionSeq,
}

impl Serving<'_> {
    /// The write is answered unchanged with `reply`: later copies get the same.
    pub(crate) fn answered(&self, reply: &Reply) {
        self.writes.answered.fetch_add(1, Ordering::Relaxed);
        self.writes
            .record(self.group, self.session, Fate::Answered(reply.clone()));
    }

    /// The write goes to the log: later copies go there too.
    pub(crate) fn logged(&self) {
        self.writes.record(self.group, self.session, Fate::Logged);
    }
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        let mut fates = self.writes.fates.lock().expect("fates lock");
        fates.busy.remove(&(self.group, self.session.session));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(session: u64, seq: u64) -> SessionSeq {
        SessionSeq { session, seq }
    }

    #[test]
    fn a_copy_gets_the_first_copys_answer_or_goes_to_the_log_after_it() {
        let writes = UnchangedWrites::default();
        let Admission::Serve(serving) = writes.admit(1, seq(7, 1)) else {
            panic!("the first copy is served");
        };
        // A copy while the first is served is refused, in the same group only.
        assert!(matches!(writes.admit(1, seq(7, 1)), Admission::Busy));
        assert!(matches!(writes.admit(2, seq(7, 1)), Admission::Serve(_)));
        serving.answered(&Reply::Int(0));
        drop(serving);
        match writes.admit(1, seq(7, 1)) {
            Admission::Answered(reply) => assert_eq!(reply, Reply::Int(0)),
            other => panic!("a late copy must get the first answer, got {other:?}"),
        }
        assert_eq!(writes.answered(), 1);
        // The session's next write is served; once it went to the log, so do its copies. A
        // copy of the older write, answered unchanged, must not reach the log now: the
        // session table knows nothing of it, and would apply it after the next write.
        let Admission::Serve(serving) = writes.admit(1, seq(7, 2)) else {
            panic!("the next write is served");
        };
        serving.logged();
        drop(serving);
        assert!(matches!(writes.admit(1, seq(7, 2)), Admission::Log));
        assert!(matches!(writes.admit(1, seq(7, 1)), Admission::Stale));
        // A copy whose serving ended without a fate (its confirmation failed: nothing was
        // done) may be served again.
        let Admission::Serve(serving) = writes.admit(1, seq(7, 3)) else {
            panic!("served");
        };
        drop(serving);
        assert!(matches!(writes.admit(1, seq(7, 3)), Admission::Serve(_)));
    }

    #[test]
    fn the_oldest_sessions_are_forgotten_past_the_bound() {
        let writes = UnchangedWrites::default();
        for session in 0..FATES_MAX as u64 + 10 {
            let Admission::Serve(serving) = writes.admit(1, seq(session, 1)) else {
                panic!("served");
            };
            serving.logged();
        }
        assert_eq!(writes.len(), FATES_MAX);
        // The first ten are forgotten (a copy of theirs would be served afresh); the rest not.
        assert!(matches!(writes.admit(1, seq(9, 1)), Admission::Serve(_)));
        assert!(matches!(writes.admit(1, seq(10, 1)), Admission::Log));
        // Writing again makes a session the youngest.
        let Admission::Serve(serving) = writes.admit(1, seq(10, 2)) else {
            panic!("served");
        };
        serving.logged();
        drop(serving);
        assert_eq!(writes.len(), FATES_MAX);
        let Admission::Serve(serving) = writes.admit(1, seq(1_000_000, 1)) else {
            panic!("served");
        };
        serving.logged();
        assert!(matches!(writes.admit(1, seq(10, 2)), Admission::Log));
        assert!(matches!(writes.admit(1, seq(11, 1)), Admission::Serve(_)));
    }
}
