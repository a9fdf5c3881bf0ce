//! The client sessions one group remembers, bounded with least-recently-used eviction.
//!
//! Every connection of a proxy opens a session with each group it writes to, so a long-running
//! cluster whose clients connect and go (a connection per request is common) keeps its tables
//! full, and every write that remembers a session may evict one. Finding the least recently
//! used by a scan of the table cost a few thousand steps per write on every replica once the
//! table was full; an index by age makes it a lookup.

use std::collections::{BTreeMap, BTreeSet};

use super::state_machine::SessionEntry;

/// Sessions by id, with an index by age for eviction.
#[derive(Debug, Default)]
pub(crate) struct SessionTable {
    entries: BTreeMap<u64, SessionEntry>,
    /// `(last_ms, id)` of every entry: the least recently used first, ties broken by id, so
    /// every replica evicts the same session.
    by_age: BTreeSet<(u64, u64)>,
}

impl SessionTable {
    pub(crate) fn get(&self, id: u64) -> Option<&SessionEntry> {
        self.entries.get(&id)
    }

    /// Records `entry` as session `id`'s latest write, replacing what it had.
    pub(crate) fn insert(&mut self, id: u64, entry: SessionEntry) {
        let last_ms = entry.last_ms;
        if let Some(old) = self.entries.insert(id, entry) {
            self.by_age.remove(&(old.last_ms, id));
        }
        self.by_age.insert((last_ms, id));
    }

    /// Forgets the least recently used session (the smallest id among equals) and returns its
    /// id.
    pub(crate) fn evict_oldest(&mut self) -> Option<u64> {
        let (_, id) = self.by_age.pop_first()?;
        self.entries.remove(&id);
        Some(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every session, by id.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u64, &SessionEntry)> {
        self.entries.iter()
    }
}

impl FromIterator<(u64, SessionEntry)> for SessionTable {
    fn from_iter<I: IntoIterator<Item = (u64, SessionEntry)>>(entries: I) -> Self {
        let mut table = SessionTable::default();
        for (id, entry) in entries {
            table.insert(id, entry);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use larder_core::kv::Reply;
    use proptest::prelude::*;

    use super::*;

    fn entry(seq: u64, last_ms: u64) -> SessionEntry {
        SessionEntry {
            seq,
            reply: Reply::Ok,
            last_ms,
        }
    }

    proptest! {
        /// The table evicts exactly what a scan for the least recently used (ties by id)
        /// would, through any mix of new sessions, repeated writes of old ones (their times
        /// moving either way, as entry times of different leaders may) and evictions.
        #[test]
        fn eviction_matches_a_scan_for_the_least_recently_used(
            ops in prop::collection::vec((0u64..24, 0u64..40, any::<bool>()), 1..300),
        ) {
            let mut table = SessionTable::default();
            let mut model: BTreeMap<u64, SessionEntry> = BTreeMap::new();
            for (seq, (id, last_ms, evict)) in ops.into_iter().enumerate() {
                if evict {
                    let expected = model
                        .iter()
                        .min_by_key(|(id, entry)| (entry.last_ms, **id))
                        .map(|(id, _)| *id);
                    if let Some(id) = expected {
                        model.remove(&id);
                    }
                    prop_assert_eq!(table.evict_oldest(), expected);
                } else {
                    table.insert(id, entry(seq as u64, last_ms));
                    model.insert(id, entry(seq as u64, last_ms));
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert_eq!(table.by_age.len(), model.len(), "one age per session");
                prop_assert!(table.iter().eq(model.iter()));
            }
        }
    }

    #[test]
    fn a_session_written_again_is_no_longer_the_oldest() {
        let mut table: SessionTable = [(1, entry(1, 10)), (2, entry(1, 20))].into_iter().collect();
        table.insert(1, entry(2, 30));
        assert_eq!(table.get(1).map(|e| e.seq), Some(2));
        assert_eq!(table.evict_oldest(), Some(2));
        assert_eq!(table.evict_oldest(), Some(1));
        assert_eq!(table.evict_oldest(), None);
    }
}
