//! The routing table: which slot group owns each slot, and which nodes replicate each group.
//!
//! The center owns the authoritative table; proxies, clients and storage nodes hold copies and
//! replace theirs when they see a higher [`RoutingTable::epoch`]. Every structural change (a slot
//! moving, a group's replica set changing) produces a new table with `epoch + 1`, so "which table
//! is newer" is a plain comparison. Leader hints are soft: they change far more often than the
//! structure, may be wrong, and a wrong hint only costs one redirect, so updating one does not
//! bump the epoch (otherwise every election would invalidate every cached table).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::slots::{SLOTS, slot_of};
use crate::{GroupId, NodeId};

/// Where one slot group lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRoute {
    pub id: GroupId,
    /// The group's voting members, in placement order.
    pub replicas: Vec<NodeId>,
    /// The node last known to lead the group; may be stale or absent.
    pub leader_hint: Option<NodeId>,
}

/// Why a routing table (or a change to one) is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("routing table maps {len} slots, expected {SLOTS}")]
    SlotCount { len: usize },
    #[error("slot {slot} is out of range (0..{SLOTS})")]
    SlotOutOfRange { slot: u16 },
    #[error("slot {slot} is assigned to group {group}, which does not exist")]
    SlotToUnknownGroup { slot: u16, group: GroupId },
    #[error("group {0} does not exist")]
    UnknownGroup(GroupId),
    #[error("group {0} exists already")]
    GroupExists(GroupId),
    #[error("group {key} is stored under a route whose id is {id}")]
    GroupIdMismatch { key: GroupId, id: GroupId },
    #[error("group {0} has no replicas")]
    NoReplicas(GroupId),
    #[error("group {group} lists node {node} more than once")]
    DuplicateReplica { group: GroupId, node: NodeId },
}

/// Slot -> group -> replicas, stamped with an epoch.
///
/// Fields are private so that every structural change goes through a method that bumps the
/// epoch; a table that arrives over the wire should be validated with [`RoutingTable::check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingTable {
    epoch: u64,
    groups: BTreeMap<GroupId, GroupRoute>,
    /// Indexed by slot; always `SLOTS` long in a checked table.
    slot_groups: Vec<GroupId>,
}

impl RoutingTable {
    /// Epoch 1, slots spread over groups `1..=groups` in contiguous ranges whose sizes differ by
    /// at most one (lower group ids get the extra slots), with `placement(group)` as each group's
    /// replicas.
    ///
    /// Contiguous ranges keep `CLUSTER SLOTS`-style output short. With `groups == 0` no slot has
    /// an owner and [`check`](Self::check) rejects the table; with more groups than slots the
    /// extra groups own no slots (valid: a group may be empty before slots migrate to it).
    pub fn even(groups: u64, placement: impl Fn(GroupId) -> Vec<NodeId>) -> Self {
        let group_map: BTreeMap<GroupId, GroupRoute> = (1..=groups)
            .map(|id| {
                let route = GroupRoute {
                    id,
                    replicas: placement(id),
                    leader_hint: None,
                };
                (id, route)
            })
            .collect();
        let slots = u64::from(SLOTS);
        let slot_groups = match slots.checked_div(groups) {
            // 0 is never a group id here, so check() reports the first slot as unowned.
            None => vec![0; usize::from(SLOTS)],
            Some(base) => {
                let extra = slots % groups;
                let mut v = Vec::with_capacity(usize::from(SLOTS));
                // Group i (0-based) owns `base + 1` slots if i < extra, else `base`.
                for i in 0..groups.min(slots) {
                    let n = base + u64::from(i < extra);
                    v.extend(std::iter::repeat_n(i + 1, n as usize));
                }
                v
            }
        };
        RoutingTable {
            epoch: 1,
            groups: group_map,
            slot_groups,
        }
    }

    /// Epoch 0: what a process holds before the center told it anything. No group, no slot
    /// owner, so every lookup misses (and the holder fetches a real table) and every real
    /// table is newer. [`check`](Self::check) rejects it: it is never sent.
    pub fn unknown() -> Self {
        RoutingTable {
            epoch: 0,
            groups: BTreeMap::new(),
            slot_groups: Vec::new(),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// All groups, by id.
    pub fn groups(&self) -> &BTreeMap<GroupId, GroupRoute> {
        &self.groups
    }

    /// The owning group of every slot, indexed by slot.
    pub fn slot_groups(&self) -> &[GroupId] {
        &self.slot_groups
    }

    /// The group owning `slot`; `None` only if `slot >= SLOTS` or the table is malformed.
    pub fn group_of_slot(&self, slot: u16) -> Option<GroupId> {
        self.slot_groups.get(usize::from(slot)).copied()
    }

    /// The group owning `key`'s slot; always `Some` for a table that passed [`check`](Self::check).
    pub fn group_of_key(&self, key: &[u8]) -> Option<GroupId> {
        self.group_of_slot(slot_of(key))
    }

    pub fn route(&self, group: GroupId) -> Option<&GroupRoute> {
        self.groups.get(&group)
    }

    /// Records who leads `group`. Does not bump the epoch: hints are soft (see module docs).
    pub fn set_leader_hint(
        &mut self,
        group: GroupId,
        node: Option<NodeId>,
    ) -> Result<(), RoutingError> {
        let route = self
            .groups
            .get_mut(&group)
            .ok_or(RoutingError::UnknownGroup(group))?;
        route.leader_hint = node;
        Ok(())
    }

    /// A copy with `group`'s replica set replaced (or the group added, owning no slots yet) and
    /// `epoch + 1`. The leader hint survives only if the hinted node is still a replica.
    pub fn with_replicas(
        &self,
        group: GroupId,
        replicas: Vec<NodeId>,
    ) -> Result<RoutingTable, RoutingError> {
        check_replicas(group, &replicas)?;
        let mut next = self.next_epoch();
        let leader_hint = self
            .groups
            .get(&group)
            .and_then(|r| r.leader_hint)
            .filter(|n| replicas.contains(n));
        next.groups.insert(
            group,
            GroupRoute {
                id: group,
                replicas,
                leader_hint,
            },
        );
        self.debug_check_successor(&next);
        Ok(next)
    }

    /// A copy where group `old` is retired and a new group `new` with `replicas` owns exactly
    /// the slots `old` owned, at `epoch + 1`. For a group that never formed and cannot: a new
    /// id means no replica of the old one can ever be mistaken for a member of the new one.
    pub fn recreate_group(
        &self,
        old: GroupId,
        new: GroupId,
        replicas: Vec<NodeId>,
    ) -> Result<RoutingTable, RoutingError> {
        if !self.groups.contains_key(&old) {
            return Err(RoutingError::UnknownGroup(old));
        }
        if self.groups.contains_key(&new) {
            return Err(RoutingError::GroupExists(new));
        }
        check_replicas(new, &replicas)?;
        let mut next = self.next_epoch();
        next.groups.remove(&old);
        next.groups.insert(
            new,
            GroupRoute {
                id: new,
                replicas,
                leader_hint: None,
            },
        );
        for owner in next.slot_groups.iter_mut().filter(|owner| **owner == old) {
            *owner = new;
        }
        self.debug_check_successor(&next);
        Ok(next)
    }

    /// How many group replicas each node holds (nodes holding none are absent).
    pub fn replica_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = BTreeMap::new();
        for route in self.groups.values() {
            for node in &route.replicas {
                *counts.entry(*node).or_default() += 1;
            }
        }
        counts
    }

    /// The lowest group id above every group of the table (ids are never reused).
    pub fn next_group_id(&self) -> GroupId {
        self.groups.keys().next_back().map_or(1, |last| last + 1)
    }

    /// A copy with `slot` owned by `to_group` and `epoch + 1`.
    pub fn move_slot(&self, slot: u16, to_group: GroupId) -> Result<RoutingTable, RoutingError> {
        if slot >= SLOTS {
            return Err(RoutingError::SlotOutOfRange { slot });
        }
        if !self.groups.contains_key(&to_group) {
            return Err(RoutingError::UnknownGroup(to_group));
        }
        let mut next = self.next_epoch();
        match next.slot_groups.get_mut(usize::from(slot)) {
            Some(owner) => *owner = to_group,
            None => {
                return Err(RoutingError::SlotCount {
                    len: self.slot_groups.len(),
                });
            }
        }
        self.debug_check_successor(&next);
        Ok(next)
    }

    /// A copy with every slot of `ranges` (inclusive) owned by `to_group`, at `epoch + 1`.
    pub fn move_slots(
        &self,
        ranges: &[(u16, u16)],
        to_group: GroupId,
    ) -> Result<RoutingTable, RoutingError> {
        if !self.groups.contains_key(&to_group) {
            return Err(RoutingError::UnknownGroup(to_group));
        }
        let mut next = self.next_epoch();
        for &(first, last) in ranges {
            for slot in first..=last {
                let owner = next
                    .slot_groups
                    .get_mut(usize::from(slot))
                    .ok_or(RoutingError::SlotOutOfRange { slot })?;
                *owner = to_group;
            }
        }
        self.debug_check_successor(&next);
        Ok(next)
    }

    /// Whether `self` supersedes `other` (strictly higher epoch).
    pub fn is_newer_than(&self, other: &RoutingTable) -> bool {
        self.epoch > other.epoch
    }

    /// The slots `group` owns as inclusive `(first, last)` ranges in ascending order, as
    /// `CLUSTER SLOTS` reports them.
    pub fn slot_ranges(&self, group: GroupId) -> Vec<(u16, u16)> {
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for (slot, &owner) in (0..SLOTS).zip(&self.slot_groups) {
            if owner == group {
                extend_ranges(&mut ranges, slot);
            }
        }
        ranges
    }

    /// [`slot_ranges`](Self::slot_ranges) of every group that owns a slot, in one pass over
    /// the slots (asking each of many groups in turn would pass over them once per group).
    pub fn slot_ranges_by_group(&self) -> BTreeMap<GroupId, Vec<(u16, u16)>> {
        let mut by_group: BTreeMap<GroupId, Vec<(u16, u16)>> = BTreeMap::new();
        for (slot, &owner) in (0..SLOTS).zip(&self.slot_groups) {
            extend_ranges(by_group.entry(owner).or_default(), slot);
        }
        by_group
    }

    /// Validates the table: exactly `SLOTS` slots, each owned by an existing group; each group
    /// stored under its own id, with at least one replica and no replica listed twice.
    pub fn check(&self) -> Result<(), RoutingError> {
        if self.slot_groups.len() != usize::from(SLOTS) {
            return Err(RoutingError::SlotCount {
                len: self.slot_groups.len(),
            });
        }
        for (slot, &group) in (0..SLOTS).zip(&self.slot_groups) {
            if !self.groups.contains_key(&group) {
                return Err(RoutingError::SlotToUnknownGroup { slot, group });
            }
        }
        for (&key, route) in &self.groups {
            if route.id != key {
                return Err(RoutingError::GroupIdMismatch { key, id: route.id });
            }
            check_replicas(key, &route.replicas)?;
        }
        Ok(())
    }

    fn next_epoch(&self) -> RoutingTable {
        let mut next = self.clone();
        next.epoch = self.epoch.saturating_add(1);
        // Invariant (ARCHITECTURE.md): routing epochs only grow.
        debug_assert!(
            next.epoch > self.epoch,
            "routing epoch {} cannot grow",
            self.epoch
        );
        next
    }

    /// Invariants every derived table keeps (checked in debug builds, so every simulated seed
    /// checks them): its epoch is above its predecessor's, and a valid predecessor gives a valid
    /// table (every slot owned by exactly one existing group).
    fn debug_check_successor(&self, next: &RoutingTable) {
        debug_assert!(next.epoch > self.epoch);
        debug_assert!(
            self.check().is_err() || next.check().is_ok(),
            "a change to routing epoch {} broke the table: {:?}",
            self.epoch,
            next.check()
        );
    }
}

fn check_replicas(group: GroupId, replicas: &[NodeId]) -> Result<(), RoutingError> {
    if replicas.is_empty() {
        return Err(RoutingError::NoReplicas(group));
    }
    // Replica sets are small (3-5), so quadratic is cheaper than building a set.
    for (i, node) in replicas.iter().enumerate() {
        if replicas[..i].contains(node) {
            return Err(RoutingError::DuplicateReplica { group, node: *node });
        }
    }
    Ok(())
}

/// Adds `slot` to ascending inclusive `ranges`, extending the last range when it is adjacent.
fn extend_ranges(ranges: &mut Vec<(u16, u16)>, slot: u16) {
    match ranges.last_mut() {
        Some((_, last)) if *last + 1 == slot => *last = slot,
        _ => ranges.push((slot, slot)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Group g on nodes 3g-2, 3g-1, 3g: three disjoint replicas per group.
    fn three_each(g: GroupId) -> Vec<NodeId> {
        vec![3 * g - 2, 3 * g - 1, 3 * g]
    }

    #[test]
    fn moving_ranges_moves_exactly_those_slots_in_one_epoch() {
        let t = RoutingTable::even(4, three_each);
        let next = t.move_slots(&[(0, 9), (100, 100)], 4).unwrap();
        assert_eq!(next.epoch(), t.epoch() + 1);
        for slot in 0..SLOTS {
            let moved = slot < 10 || slot == 100;
            let expected = if moved {
                Some(4)
            } else {
                t.group_of_slot(slot)
            };
            assert_eq!(next.group_of_slot(slot), expected, "slot {slot}");
        }
        assert!(t.move_slots(&[(0, 1)], 99).is_err());
        assert!(t.move_slots(&[(16383, 16384)], 1).is_err());
    }

    #[test]
    fn even_split_is_contiguous_and_balanced() {
        let t = RoutingTable::even(3, three_each);
        t.check().unwrap();
        assert_eq!(t.epoch(), 1);
        assert_eq!(t.slot_ranges(1), vec![(0, 5461)]);
        assert_eq!(t.slot_ranges(2), vec![(5462, 10922)]);
        assert_eq!(t.slot_ranges(3), vec![(10923, 16383)]);
        assert_eq!(t.group_of_slot(0), Some(1));
        assert_eq!(t.group_of_slot(16383), Some(3));
        assert_eq!(t.group_of_slot(16384), None);
        assert_eq!(t.route(2).unwrap().replicas, vec![4, 5, 6]);
    }

    #[test]
    fn recreate_group_moves_every_slot_to_the_new_id() {
        let t = RoutingTable::even(3, three_each);
        let next = t
            .recreate_group(2, t.next_group_id(), vec![7, 8, 9])
            .unwrap();
        next.check().unwrap();
        assert_eq!(next.epoch(), 2);
        assert!(next.route(2).is_none());
        assert_eq!(next.route(4).unwrap().replicas, vec![7, 8, 9]);
        assert_eq!(next.slot_ranges(4), t.slot_ranges(2));
        assert_eq!(next.slot_ranges(1), t.slot_ranges(1));
        assert_eq!(next.next_group_id(), 5);
        assert_eq!(
            next.replica_counts(),
            BTreeMap::from([(1, 1), (2, 1), (3, 1), (7, 2), (8, 2), (9, 2)])
        );
        assert_eq!(
            t.recreate_group(2, 3, vec![1]),
            Err(RoutingError::GroupExists(3))
        );
        assert_eq!(
            t.recreate_group(9, 4, vec![1]),
            Err(RoutingError::UnknownGroup(9))
        );
    }

    #[test]
    fn unknown_table_routes_nothing_and_is_older_than_any_table() {
        let unknown = RoutingTable::unknown();
        assert_eq!(unknown.epoch(), 0);
        assert_eq!(unknown.group_of_key(b"k"), None);
        assert!(unknown.check().is_err());
        assert!(RoutingTable::even(1, |_| vec![1]).is_newer_than(&unknown));
    }

    #[test]
    fn even_edge_cases() {
        let one = RoutingTable::even(1, |_| vec![1]);
        one.check().unwrap();
        assert_eq!(one.slot_ranges(1), vec![(0, 16383)]);

        let many = RoutingTable::even(20_000, |g| vec![g]);
        many.check().unwrap();
        assert_eq!(many.slot_ranges(16384), vec![(16383, 16383)]);
        assert!(many.slot_ranges(16385).is_empty());

        let none = RoutingTable::even(0, |_| vec![1]);
        assert_eq!(
            none.check(),
            Err(RoutingError::SlotToUnknownGroup { slot: 0, group: 0 })
        );
    }

    #[test]
    fn sizes_differ_by_at_most_one() {
        for groups in [2u64, 5, 7, 100, 1000] {
            let t = RoutingTable::even(groups, |g| vec![g]);
            let sizes: Vec<usize> = (1..=groups)
                .map(|g| t.slot_groups().iter().filter(|&&o| o == g).count())
                .collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "{groups}: {min}..{max}");
            assert_eq!(sizes.iter().sum::<usize>(), usize::from(SLOTS));
        }
    }

    #[test]
    fn keys_route_by_slot() {
        let t = RoutingTable::even(3, three_each);
        // "foo" is slot 12182 -> third range; "bar" is 5061 -> first range.
        assert_eq!(t.group_of_key(b"foo"), Some(3));
        assert_eq!(t.group_of_key(b"bar"), Some(1));
        assert_eq!(
            t.group_of_key(b"{user1000}.following"),
            t.group_of_key(b"{user1000}.followers")
        );
    }

    #[test]
    fn leader_hint_is_soft() {
        let mut t = RoutingTable::even(2, three_each);
        t.set_leader_hint(1, Some(2)).unwrap();
        assert_eq!(t.epoch(), 1);
        assert_eq!(t.route(1).unwrap().leader_hint, Some(2));
        assert_eq!(
            t.set_leader_hint(9, Some(1)),
            Err(RoutingError::UnknownGroup(9))
        );
    }

    #[test]
    fn structural_changes_bump_epoch() {
        let mut t = RoutingTable::even(2, three_each);
        t.set_leader_hint(1, Some(2)).unwrap();

        let moved = t.move_slot(0, 2).unwrap();
        assert_eq!(moved.epoch(), 2);
        assert!(moved.is_newer_than(&t));
        assert!(!t.is_newer_than(&moved));
        assert!(!t.is_newer_than(&t));
        assert_eq!(moved.group_of_slot(0), Some(2));
        assert_eq!(moved.slot_ranges(2), vec![(0, 0), (8192, 16383)]);
        assert_eq!(moved.slot_ranges(1), vec![(1, 8191)]);
        moved.check().unwrap();
        // The original is untouched.
        assert_eq!(t.group_of_slot(0), Some(1));

        let kept = moved.with_replicas(1, vec![2, 3, 7]).unwrap();
        assert_eq!(kept.epoch(), 3);
        assert_eq!(kept.route(1).unwrap().leader_hint, Some(2));
        let dropped = kept.with_replicas(1, vec![7, 8, 9]).unwrap();
        assert_eq!(dropped.route(1).unwrap().leader_hint, None);

        // A new group can be added, then given slots.
        let added = dropped.with_replicas(3, vec![10]).unwrap();
        added.check().unwrap();
        assert!(added.slot_ranges(3).is_empty());
        let given = added.move_slot(16383, 3).unwrap();
        assert_eq!(given.slot_ranges(3), vec![(16383, 16383)]);
        // All groups at once, as each alone; a group without slots is absent.
        let by_group = given.slot_ranges_by_group();
        assert_eq!(by_group.len(), 3, "{by_group:?}");
        for group in [1, 2, 3] {
            assert_eq!(by_group[&group], given.slot_ranges(group), "group {group}");
        }
        assert_eq!(added.slot_ranges_by_group().get(&3), None);
        assert_eq!(given.epoch(), 6);
    }

    #[test]
    fn invalid_changes_are_rejected() {
        let t = RoutingTable::even(2, three_each);
        assert_eq!(
            t.move_slot(16384, 1),
            Err(RoutingError::SlotOutOfRange { slot: 16384 })
        );
        assert_eq!(t.move_slot(0, 5), Err(RoutingError::UnknownGroup(5)));
        assert_eq!(t.with_replicas(1, vec![]), Err(RoutingError::NoReplicas(1)));
        assert_eq!(
            t.with_replicas(1, vec![1, 2, 1]),
            Err(RoutingError::DuplicateReplica { group: 1, node: 1 })
        );
    }

    #[test]
    fn check_rejects_malformed_tables() {
        let good = RoutingTable::even(2, three_each);

        let mut short = good.clone();
        short.slot_groups.pop();
        assert_eq!(short.check(), Err(RoutingError::SlotCount { len: 16383 }));

        let mut orphan = good.clone();
        orphan.slot_groups[100] = 7;
        assert_eq!(
            orphan.check(),
            Err(RoutingError::SlotToUnknownGroup {
                slot: 100,
                group: 7
            })
        );

        let empty = RoutingTable::even(2, |g| if g == 2 { vec![] } else { vec![1] });
        assert_eq!(empty.check(), Err(RoutingError::NoReplicas(2)));

        let dup = RoutingTable::even(2, |g| vec![g, 5, g]);
        assert_eq!(
            dup.check(),
            Err(RoutingError::DuplicateReplica { group: 1, node: 1 })
        );

        let mut mismatch = good.clone();
        mismatch.groups.get_mut(&1).unwrap().id = 9;
        assert_eq!(
            mismatch.check(),
            Err(RoutingError::GroupIdMismatch { key: 1, id: 9 })
        );
    }

    #[test]
    fn postcard_round_trip() {
        let mut t = RoutingTable::even(4, three_each).move_slot(7, 3).unwrap();
        t.set_leader_hint(3, Some(8)).unwrap();
        let bytes = postcard::to_allocvec(&t).unwrap();
        let back: RoutingTable = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, t);
        back.check().unwrap();
    }

    proptest! {
        #[test]
        fn every_key_maps_to_an_existing_group(
            groups in 1u64..64,
            moves in proptest::collection::vec((0u16..SLOTS, 1u64..64), 0..20),
            keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 1..20),
        ) {
            let mut t = RoutingTable::even(groups, |g| vec![g, g + 100]);
            for (slot, to) in moves {
                let to = (to - 1) % groups + 1;
                let next = t.move_slot(slot, to).unwrap();
                prop_assert!(next.is_newer_than(&t));
                t = next;
            }
            prop_assert_eq!(t.check(), Ok(()));
            for key in &keys {
                let g = t.group_of_key(key);
                prop_assert!(g.is_some_and(|g| t.route(g).is_some()), "{:?} -> {:?}", key, g);
            }
        }
    }
}
