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
//! A session waits in the pool at most [`POOLED_SESSION_AGE_MAX`]: a group forgets its least
//! recently used sessions past its table's bound, and a forgotten session's next write is
//! answered `SESSION_EXPIRED` (an unknown outcome for the client). A session parked a moment
//! ago is as safe from that as one a connection is using; one parked for minutes is not.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_core::GroupId;

/// Sessions the pool keeps, all groups together; past it a closing client's session is let
/// go (the group forgets it in time, `NodeConfig::sessions_max`).
pub const POOLED_SESSIONS_MAX: usize = 4096;

/// How long a session waits in the pool before it is let go instead of handed on.
pub const POOLED_SESSION_AGE_MAX: Duration = Duration::from_secs(10);

/// A session not in use: its id and the last sequence number a write of it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkedSession {
    pub session: u64,
    pub seq: u64,
}

/// Sessions of clients that are gone, per group, for the next clients to carry on. Cloning
/// shares the pool.
#[derive(Debug, Clone, Default)]
pub struct SessionPool {
    inner: Arc<Mutex<Pooled>>,
}

#[derive(Debug, Default)]
struct Pooled {
    /// Per group, the sessions with the time each was parked, oldest first.
    by_group: BTreeMap<GroupId, Vec<(ParkedSession, Duration)>>,
    len: usize,
    /// Sessions taken from the pool since it was made.
    resumed: u64,
}

impl SessionPool {
    /// A session of `group` to carry on at `now` (the pool's clock's time), the most recently
    /// parked first: the one the group used last, so the least likely to have been evicted
    /// from its table. Sessions parked longer than [`POOLED_SESSION_AGE_MAX`] ago are let go.
    pub fn take(&self, group: GroupId, now: Duration) -> Option<ParkedSession> {
        let mut guard = self.inner.lock().expect("session pool lock");
        let pooled = &mut *guard;
        let stack = pooled.by_group.get_mut(&group)?;
        let (parked, at) = stack.pop()?;
        pooled.len -= 1;
        let found = if now.saturating_sub(at) <= POOLED_SESSION_AGE_MAX {
            pooled.resumed += 1;
            Some(parked)
        } else {
            // The newest is too old, so every one below it is.
            pooled.len -= stack.len();
            stack.clear();
            None
        };
        if stack.is_empty() {
            pooled.by_group.remove(&group);
        }
        found
    }

    /// Keeps `parked` for the next client of `group`, parked at `now`; lets it go when the
    /// pool is full.
    pub fn park(&self, group: GroupId, parked: ParkedSession, now: Duration) {
        let mut pooled = self.inner.lock().expect("session pool lock");
        if pooled.len >= POOLED_SESSIONS_MAX {
            return;
        }
        pooled.len += 1;
        pooled
            .by_group
            .entry(group)
            .or_default()
            .push((parked, now));
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

    fn parked(session: u64, seq: u64) -> ParkedSession {
        ParkedSession { session, seq }
    }

    const T0: Duration = Duration::from_secs(100);

    #[test]
    fn sessions_come_back_per_group_the_latest_first() {
        let pool = SessionPool::default();
        pool.park(1, parked(10, 3), T0);
        pool.park(2, parked(20, 1), T0);
        pool.park(1, parked(11, 7), T0);
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.take(1, T0), Some(parked(11, 7)));
        assert_eq!(pool.take(1, T0), Some(parked(10, 3)));
        assert_eq!(pool.take(1, T0), None, "group 2's session is not group 1's");
        assert_eq!(pool.take(2, T0), Some(parked(20, 1)));
        assert!(pool.is_empty());
        assert_eq!(pool.resumed(), 3);
    }

    #[test]
    fn a_session_parked_too_long_ago_is_let_go_with_every_older_one() {
        let pool = SessionPool::default();
        pool.park(1, parked(10, 1), T0);
        pool.park(1, parked(11, 1), T0 + Duration::from_secs(1));
        pool.park(2, parked(20, 1), T0);
        let later = T0 + Duration::from_secs(1) + POOLED_SESSION_AGE_MAX;
        assert_eq!(
            pool.take(1, later),
            Some(parked(11, 1)),
            "just within the age"
        );
        assert_eq!(
            pool.take(1, later),
            None,
            "parked a second earlier: too old"
        );
        assert_eq!(pool.len(), 1, "only group 2's is left");
        assert_eq!(pool.take(2, later + Duration::from_secs(60)), None);
        assert!(pool.is_empty());
        assert_eq!(pool.resumed(), 1);
    }

    #[test]
    fn a_full_pool_lets_sessions_go() {
        let pool = SessionPool::default();
        for i in 0..POOLED_SESSIONS_MAX as u64 + 10 {
            pool.park(i % 3, parked(i + 1, 1), T0);
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
