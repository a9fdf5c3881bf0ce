//! Sessions handed from one client to the next ([`SessionPool`]).
//!
//! A client opens a session with a group before its first write there: a registration entry
//! through Raft, a whole write's round trip. A proxy gives every connection a client of its
//! own, so a client that connects for a few commands (a connection per request is common) paid
//! one registration per group it wrote to, and left behind a session the group keeps until
//! it evicts it. The pool keeps the sessions of connections that closed, with the last
//! sequence number each used, and the next connection takes one instead of opening its own.
//!
//! Why this is safe: a session is only ever in one client or in the pool, never in two
//! clients at once; and its next write carries a sequence number above every one it used
//! before. A write of the closed connection still on its way is then either applied before
//! the new owner's first (and the group sees two writes in order) or arrives after it and is
//! answered as a stale duplicate without being applied, which the closed connection, having
//! gone without its reply, cannot tell from a write that was lost.
//!
//! A session is handed on only within [`POOLED_SESSION_AGE_MAX`] of its last write: a group
//! forgets its least recently written sessions past its table's bound, and a forgotten
//! session's next write is answered `SESSION_EXPIRED` (an unknown outcome for the client). A
//! session written a moment ago is as safe from that as one a connection is using; one idle
//! for minutes is not. And a client takes one only for a write: a connection that only reads
//! never holds one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_core::GroupId;

/// Sessions the pool keeps, all groups together; past it a closing client's session is let
/// go (the group forgets it in time, `NodeConfig::sessions_max`).
pub const POOLED_SESSIONS_MAX: usize = 4096;

/// How long after its last write a session may still be handed on.
pub const POOLED_SESSION_AGE_MAX: Duration = Duration::from_secs(10);

/// A session not in use: its id, the last sequence number a write of it carried, and when
/// that write was sent (by the client's clock): the group's eviction goes by its writes, so
/// the pool's age limit does too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkedSession {
    pub session: u64,
    pub seq: u64,
    pub written_at: Duration,
}

/// Sessions of clients that are gone, per group, for the next clients to carry on. Cloning
/// shares the pool.
#[derive(Debug, Clone, Default)]
pub struct SessionPool {
    inner: Arc<Mutex<Pooled>>,
}

#[derive(Debug, Default)]
struct Pooled {
    /// Per group, the sessions in the order they were parked.
    by_group: BTreeMap<GroupId, Vec<ParkedSession>>,
    len: usize,
    /// Sessions taken from the pool since it was made.
    resumed: u64,
}

impl SessionPool {
    /// A session of `group` to carry on at `now` (the clients' clock), the most recently
    /// parked first: the one the group used last, so the least likely to have been evicted
    /// from its table. Sessions last written longer than [`POOLED_SESSION_AGE_MAX`] ago are
    /// let go on the way.
    pub fn take(&self, group: GroupId, now: Duration) -> Option<ParkedSession> {
        let mut guard = self.inner.lock().expect("session pool lock");
        let pooled = &mut *guard;
        let stack = pooled.by_group.get_mut(&group)?;
        let mut found = None;
        while let Some(parked) = stack.pop() {
            pooled.len -= 1;
            if now.saturating_sub(parked.written_at) <= POOLED_SESSION_AGE_MAX {
                found = Some(parked);
                break;
            }
        }
        if stack.is_empty() {
            pooled.by_group.remove(&group);
        }
        if found.is_some() {
            pooled.resumed += 1;
        }
        found
    }

    /// Keeps `parked` for the next client of `group`; lets it go when the pool is full.
    pub fn park(&self, group: GroupId, parked: ParkedSession) {
        let mut pooled = self.inner.lock().expect("session pool lock");
        if pooled.len >= POOLED_SESSIONS_MAX {
            return;
        }
        pooled.len += 1;
        pooled.by_group.entry(group).or_default().push(parked);
    }

    /// Sessions waiting in the pool.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("session pool lock").len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions clients have taken from the pool so far: registrations saved.
    pub fn resumed(&self) -> u64 {
        self.inner.lock().expect("session pool lock").resumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(100);

    fn parked(session: u64, seq: u64) -> ParkedSession {
        parked_at(session, seq, T0)
    }

    fn parked_at(session: u64, seq: u64, written_at: Duration) -> ParkedSession {
        ParkedSession {
            session,
            seq,
            written_at,
        }
    }

    #[test]
    fn sessions_come_back_per_group_the_latest_first() {
        let pool = SessionPool::default();
        pool.park(1, parked(10, 3));
        pool.park(2, parked(20, 1));
        pool.park(1, parked(11, 7));
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.take(1, T0), Some(parked(11, 7)));
        assert_eq!(pool.take(1, T0), Some(parked(10, 3)));
        assert_eq!(pool.take(1, T0), None, "group 2's session is not group 1's");
        assert_eq!(pool.take(2, T0), Some(parked(20, 1)));
        assert!(pool.is_empty());
        assert_eq!(pool.resumed(), 3);
    }

    #[test]
    fn sessions_last_written_too_long_ago_are_let_go() {
        let pool = SessionPool::default();
        let second = Duration::from_secs(1);
        pool.park(1, parked_at(10, 1, T0 + second));
        // Parked later but written earlier (a connection that then only read): too old.
        pool.park(1, parked_at(11, 1, T0));
        pool.park(2, parked_at(20, 1, T0));
        let later = T0 + second + POOLED_SESSION_AGE_MAX;
        assert_eq!(
            pool.take(1, later),
            Some(parked_at(10, 1, T0 + second)),
            "the stale one on top is let go, the one below is just within the age"
        );
        assert_eq!(pool.take(1, later), None);
        assert_eq!(pool.len(), 1, "only group 2's is left");
        assert_eq!(pool.take(2, later), None);
        assert!(pool.is_empty());
        assert_eq!(pool.resumed(), 1);
    }

    #[test]
    fn a_full_pool_lets_sessions_go() {
        let pool = SessionPool::default();
        for i in 0..POOLED_SESSIONS_MAX as u64 + 10 {
            pool.park(i % 3, parked(i + 1, 1));
        }
        assert_eq!(pool.len(), POOLED_SESSIONS_MAX);
        let mut taken = 0;
        for group in 0..3 {
            while pool.take(group, T0).is_some() {
                taken += 1;
            }
        }
        assert_eq!(taken, POOLED_SESSIONS_MAX);
        assert!(pool.is_empty());
    }
}
