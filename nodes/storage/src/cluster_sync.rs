//! Cross-cluster sync, one way (`larder sync`): a target cluster kept equal to a source
//! cluster, as a standby in another region or as the new home of a cluster being moved.
//!
//! As Squirrel's and jimdb's sync services do (SEEDS.md §8), the sync poses as a replica of
//! each source slot group: it reads the group's backup service ([`larder_protocol::backup`]),
//! a base and then the committed entries, rebuilds the group with the restore's [`Replay`],
//! and after each entry copies **the value after the operation** of every key the entry wrote
//! (so `INCRBY` is copied as the number it made, never applied twice). [`ClusterSync`] turns
//! the source's history into [`SyncOp`]s for the target; the caller writes them, in order.
//!
//! Slots move between source groups, and the sync reads each group at its own pace, so one
//! group's stream can be far behind another's. Each slot is therefore copied from **one group
//! at a time**: the one owning it with the newest ownership epoch the sync has seen. When a
//! group is seen taking a slot over with a newer epoch (or after a gap, when its history was
//! skipped), the slot is copied whole from it: its keys put, and the keys the target holds
//! in the slot that it lacks deleted. The new owner's state at that point contains every write
//! of the old owner (a move copies everything before the cutover), so later entries of the
//! old owner, read late, are ignored rather than allowed to take the target back in time.
//!
//! The sync keeps the set of keys the target holds, by slot (what it put there, begun from
//! the target's own keys), bounded by `keys_max`. Bidirectional sync (HLC stamps,
//! last-write-wins, tombstones) is not built: the target must not take client writes.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use larder_core::GroupId;
use larder_core::bugs::{Bug, Bugs};
use larder_core::env::Disk;
use larder_core::kv::{Command, Record};
use larder_core::slots::{SLOTS, slot_of};
use openraft::EntryPayload;

use crate::raft::{Entry, decode};
use crate::restore::{Replay, ReplayError};

/// One write to the target.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncOp {
    /// Set `key` to `record`, replacing what it held.
    Put { key: Bytes, record: Record },
    /// Delete `key`.
    Del { key: Bytes },
}

/// Why the sync cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("group {group}: entries before its base")]
    NoBase { group: GroupId },
    #[error("the target would hold more than {max} keys (raise the bound to sync this cluster)")]
    TooManyKeys { max: usize },
}

/// What a sync did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncTally {
    pub puts: u64,
    pub dels: u64,
    /// Slots copied whole (a base, a group taking a slot over, a `FLUSHALL`).
    pub slot_copies: u64,
    /// Entries applied.
    pub entries: u64,
}

/// Where a sync stands, to go on from after a restart ([`ClusterSync::checkpoint`],
/// [`ClusterSync::resume`]): each group's applied index and which group each slot is copied
/// from. Valid while every write made up to it is on the target.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncCheckpoint {
    /// Each group's last applied index.
    pub groups: BTreeMap<GroupId, u64>,
    /// `(first, last, group, epoch)`: the slots `first..=last` are copied from `group`, seen
    /// owning them at `epoch` (runs of slots, so a checkpoint stays small).
    pub followed: Vec<(u16, u16, GroupId, u64)>,
}

impl std::ops::Add for SyncTally {
    type Output = SyncTally;

    fn add(self, other: SyncTally) -> SyncTally {
        SyncTally {
            puts: self.puts + other.puts,
            dels: self.dels + other.dels,
            slot_copies: self.slot_copies + other.slot_copies,
            entries: self.entries + other.entries,
        }
    }
}

impl std::ops::AddAssign for SyncTally {
    fn add_assign(&mut self, other: SyncTally) {
        *self = *self + other;
    }
}

/// The group a slot is copied from, with the ownership epoch it was seen owning it at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Followed {
    group: GroupId,
    epoch: u64,
}

/// A source cluster's groups being rebuilt, and what the target holds; see the module docs.
pub struct ClusterSync<D: Disk> {
    groups: BTreeMap<GroupId, Replay<D>>,
    followed: BTreeMap<u16, Followed>,
    /// The keys the target holds, by slot.
    present: BTreeMap<u16, BTreeSet<Bytes>>,
    keys: usize,
    keys_max: usize,
    bugs: Bugs,
    tally: SyncTally,
    /// The source groups' bound on sessions for registrations logged before the bound
    /// travelled with them (`crate::restore`'s `open_state` says why it matters).
    sessions_max: usize,
}

impl<D: Disk> ClusterSync<D> {
    /// A sync onto a target holding `target_keys` now, which may come to hold at most
    /// `keys_max` keys.
    pub fn new(
        target_keys: impl IntoIterator<Item = Bytes>,
        keys_max: usize,
        bugs: Bugs,
    ) -> Result<Self, SyncError> {
        let mut sync = ClusterSync {
            groups: BTreeMap::new(),
            followed: BTreeMap::new(),
            present: BTreeMap::new(),
            keys: 0,
            keys_max,
            bugs,
            tally: SyncTally::default(),
            sessions_max: crate::raft::state_machine::SESSIONS_MAX,
        };
        for key in target_keys {
            sync.note_present(key)?;
        }
        Ok(sync)
    }

    /// The same sync with replays that remember at most `sessions_max` sessions where a
    /// registration carries no bound (logged before bounds travelled with registrations): the
    /// bound of the source's replicas (default [`crate::raft::state_machine::SESSIONS_MAX`],
    /// the nodes' default).
    pub fn with_sessions_max(mut self, sessions_max: usize) -> Self {
        self.sessions_max = sessions_max;
        self
    }

    /// Goes on from `checkpoint` with the groups' replays as an earlier sync left them
    /// ([`Replay::open`]), onto a target holding `target_keys` now. A replay that stands
    /// elsewhere than the checkpoint says (it applied entries whose writes may not have
    /// reached the target, or lost unsynced ones) is left out, as is a group with no replay:
    /// they are returned, and each needs a new base ([`ClusterSync::base`]), which copies its
    /// slots whole again. Every other group goes on from its next entry, and the target is
    /// not copied again.
    pub fn resume(
        checkpoint: &SyncCheckpoint,
        replays: impl IntoIterator<Item = Replay<D>>,
        target_keys: impl IntoIterator<Item = Bytes>,
        keys_max: usize,
        bugs: Bugs,
    ) -> Result<(Self, Vec<GroupId>), SyncError> {
        let mut sync = ClusterSync::new(target_keys, keys_max, bugs)?;
        for replay in replays {
            let group = replay.group();
            if checkpoint.groups.get(&group) == Some(&replay.at().index) {
                sync.groups.insert(group, replay);
            }
        }
        let left_out = checkpoint
            .groups
            .keys()
            .filter(|group| !sync.groups.contains_key(group))
            .copied()
            .collect();
        // The planted bug keeps only the groups' positions.
        if !sync.bugs.is_planted(Bug::SyncResumeForgetsFollowed) {
            sync.followed = checkpoint
                .followed
                .iter()
                .flat_map(|&(first, last, group, epoch)| {
                    (first..=last).map(move |slot| (slot, Followed { group, epoch }))
                })
                .collect();
        }
        Ok((sync, left_out))
    }

    /// Where the sync stands now; call once every write it returned is on the target, after
    /// [`ClusterSync::sync_replay`] of each group that applied entries since the last one.
    pub fn checkpoint(&self) -> SyncCheckpoint {
        SyncCheckpoint {
            groups: self
                .groups
                .iter()
                .map(|(group, replay)| (*group, replay.at().index))
                .collect(),
            followed: self
                .followed
                .iter()
                .fold(Vec::new(), |mut runs, (&slot, f)| {
                    match runs.last_mut() {
                        Some((_, last, group, epoch))
                            if *last + 1 == slot && *group == f.group && *epoch == f.epoch =>
                        {
                            *last = slot
                        }
                        _ => runs.push((slot, slot, f.group, f.epoch)),
                    }
                    runs
                }),
        }
    }

    /// Makes `group`'s replay durable where it stands.
    pub async fn sync_replay(&self, group: GroupId) -> Result<(), SyncError> {
        match self.groups.get(&group) {
            Some(replay) => Ok(replay.sync().await?),
            None => Ok(()),
        }
    }

    pub fn tally(&self) -> SyncTally {
        self.tally
    }

    /// The index of `group`'s next entry to read, once it has a base.
    pub fn next(&self, group: GroupId) -> Option<u64> {
        self.groups.get(&group).map(|replay| replay.at().index + 1)
    }

    /// The groups with a base, and where each stands.
    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &Replay<D>)> {
        self.groups.iter().map(|(group, replay)| (*group, replay))
    }

    /// Starts (or, after a gap, starts again) `group` from `base` (its state at one applied
    /// index, with the group clock there) on `disk`, an empty disk of its own; copies whole
    /// every slot it owns that the sync copies from it or from an older owner.
    pub async fn base(
        &mut self,
        group: GroupId,
        disk: D,
        base: &[u8],
        clock_ms: u64,
    ) -> Result<Vec<SyncOp>, SyncError> {
        let replay = Replay::from_base(disk, group, base, clock_ms, self.sessions_max).await?;
        self.groups.insert(group, replay);
        let mut ops = Vec::new();
        self.claim(group, true, &mut ops).await?;
        Ok(ops)
    }

    /// Applies `group`'s committed entries `rows` (`(index, encoded entry)`, consecutive from
    /// [`ClusterSync::next`]; those already applied are skipped) and returns the writes that
    /// bring the target up to them.
    ///
    /// Entries are applied in runs, and each key a run wrote is copied once, as the run left
    /// it (the target needs the values, not every step to them). An entry that can change what
    /// the group owns (`OwnSlots`) or empty it (`FLUSHALL`) is applied on its own, so the
    /// slots it concerns are copied as they stand right after it.
    pub async fn entries(
        &mut self,
        group: GroupId,
        rows: &[(u64, Bytes)],
    ) -> Result<Vec<SyncOp>, SyncError> {
        let applied = self
            .groups
            .get(&group)
            .ok_or(SyncError::NoBase { group })?
            .at()
            .index;
        let rows = &rows[rows.partition_point(|(index, _)| *index <= applied)..];
        let mut ops = Vec::new();
        let mut start = 0;
        while start < rows.len() {
            let mut end = start;
            let mut touched: BTreeSet<Bytes> = BTreeSet::new();
            let mut alone = None;
            while end < rows.len() {
                let entry: Entry = decode(&rows[end].1)
                    .map_err(|source| ReplayError::Storage { group, source })?;
                let EntryPayload::Normal(request) = entry.payload else {
                    end += 1;
                    continue;
                };
                match request.command {
                    command @ (Command::OwnSlots { .. } | Command::FlushAll) => {
                        if end == start {
                            alone = Some(command);
                            end += 1;
                        }
                        break;
                    }
                    Command::Ingest { records, .. } => {
                        touched.extend(records.into_iter().map(|(key, _)| key));
                    }
                    command => touched.extend(command.keys().into_iter().cloned()),
                }
                end += 1;
            }
            let replay = self.groups.get_mut(&group).expect("checked above");
            let owned_before = replay.ownership();
            replay.apply(&rows[start..end], u64::MAX).await?;
            self.tally.entries += (end - start) as u64;
            match alone {
                Some(Command::FlushAll) => {
                    let slots = self.followed_from(group);
                    self.copy_slots(group, &slots, &mut ops).await?;
                }
                Some(_) if self.groups[&group].ownership() != owned_before => {
                    self.claim(group, false, &mut ops).await?;
                }
                _ => {}
            }
            for key in &touched {
                self.copy_key(group, key, &mut ops).await?;
            }
            start = end;
        }
        Ok(ops)
    }

    /// Deletes what the target holds in slots no source group was seen owning: to call once
    /// every group of the source has its base (a target that held keys before the sync began).
    pub fn drop_strays(&mut self) -> Vec<SyncOp> {
        let stray: Vec<u16> = self
            .present
            .keys()
            .filter(|slot| !self.followed.contains_key(slot))
            .copied()
            .collect();
        let mut ops = Vec::new();
        for slot in stray {
            self.delete_held(slot, |_| false, &mut ops);
        }
        ops
    }

    /// Deletes every key the target holds in `slot` but those `keep` names.
    fn delete_held(&mut self, slot: u16, keep: impl Fn(&Bytes) -> bool, ops: &mut Vec<SyncOp>) {
        let gone: Vec<Bytes> = self
            .present
            .get(&slot)
            .map(|held| held.iter().filter(|key| !keep(key)).cloned().collect())
            .unwrap_or_default();
        for key in gone {
            self.note_absent(&key);
            self.tally.dels += 1;
            ops.push(SyncOp::Del { key });
        }
    }

    /// The slots copied from `group`.
    fn followed_from(&self, group: GroupId) -> BTreeSet<u16> {
        self.followed
            .iter()
            .filter(|(_, followed)| followed.group == group)
            .map(|(slot, _)| *slot)
            .collect()
    }

    /// Copies whole the slots `group` owns now that are copied from no group yet, or from an
    /// owner of an older epoch, or (`again`: its history was skipped) from `group` itself.
    ///
    /// A group whose ownership was never set (slot moves set it on both groups first) owns,
    /// at epoch 0, the slots the routing table gave it when the cluster was made, and no other
    /// group writes them; the sync learns them from the group's keys, here and as it writes
    /// to new ones ([`ClusterSync::copy_key`]).
    async fn claim(
        &mut self,
        group: GroupId,
        again: bool,
        ops: &mut Vec<SyncOp>,
    ) -> Result<(), SyncError> {
        let replay = &self.groups[&group];
        let ownership = replay.ownership();
        let epoch = ownership.as_ref().map_or(0, |own| own.epoch);
        let ignores = self.bugs.is_planted(Bug::SyncIgnoresOwnership);
        let candidates: BTreeSet<u16> = match &ownership {
            Some(own) => (0..SLOTS).filter(|slot| own.owns(*slot)).collect(),
            None => {
                let contents = replay.contents().await?;
                let mut slots: BTreeSet<u16> = contents
                    .records
                    .iter()
                    .map(|(key, _)| slot_of(key))
                    .collect();
                if again {
                    slots.extend(self.followed_from(group));
                }
                slots
            }
        };
        let slots: BTreeSet<u16> = candidates
            .into_iter()
            .filter(|slot| match self.followed.get(slot) {
                None => true,
                // The planted bug never moves a slot to a new owner.
                Some(_) if ignores => again,
                Some(followed) => followed.epoch < epoch || (again && followed.group == group),
            })
            .collect();
        for slot in &slots {
            self.followed.insert(*slot, Followed { group, epoch });
        }
        self.copy_slots(group, &slots, ops).await
    }

    /// Copies `slots` whole from `group`: every record it holds in them put, every other key
    /// the target holds there deleted.
    async fn copy_slots(
        &mut self,
        group: GroupId,
        slots: &BTreeSet<u16>,
        ops: &mut Vec<SyncOp>,
    ) -> Result<(), SyncError> {
        if slots.is_empty() {
            return Ok(());
        }
        let contents = self.groups[&group].contents().await?;
        let mut held: BTreeMap<u16, Vec<(Bytes, Record)>> = BTreeMap::new();
        for (key, record) in contents.records {
            let slot = slot_of(&key);
            if slots.contains(&slot) && !record.is_expired(contents.clock_ms) {
                held.entry(slot).or_default().push((key, record));
            }
        }
        for slot in slots {
            let records = held.remove(slot).unwrap_or_default();
            let keep: BTreeSet<&Bytes> = records.iter().map(|(key, _)| key).collect();
            self.delete_held(*slot, |key| keep.contains(key), ops);
            for (key, record) in records {
                self.note_present(key.clone())?;
                self.tally.puts += 1;
                ops.push(SyncOp::Put { key, record });
            }
            self.tally.slot_copies += 1;
        }
        Ok(())
    }

    /// Copies `key` as `group` holds it now, if the sync copies its slot from `group`.
    async fn copy_key(
        &mut self,
        group: GroupId,
        key: &Bytes,
        ops: &mut Vec<SyncOp>,
    ) -> Result<(), SyncError> {
        let slot = slot_of(key);
        let replay = &self.groups[&group];
        let ownership = replay.ownership();
        let owns = ownership.as_ref().is_none_or(|own| own.owns(slot));
        let from_group = match self.followed.get(&slot) {
            Some(followed) => followed.group == group && owns,
            // A slot no group was seen owning: its owner writes its first key. Whatever the
            // target holds there (from before the sync began) is not the source's.
            None if owns => {
                let epoch = ownership.as_ref().map_or(0, |own| own.epoch);
                self.followed.insert(slot, Followed { group, epoch });
                self.delete_held(slot, |_| false, ops);
                true
            }
            None => false,
        };
        if !from_group && !self.bugs.is_planted(Bug::SyncIgnoresOwnership) {
            return Ok(());
        }
        let replay = &self.groups[&group];
        let clock_ms = replay.at().clock_ms;
        match replay.record(key).await? {
            Some(record) if !record.is_expired(clock_ms) => {
                self.note_present(key.clone())?;
                self.tally.puts += 1;
                ops.push(SyncOp::Put {
                    key: key.clone(),
                    record,
                });
            }
            // Deleted, or lapsed (the target would lapse it too, but a clock behind the
            // source's would show it a while longer).
            _ => {
                if self.note_absent(key) {
                    self.tally.dels += 1;
                    ops.push(SyncOp::Del { key: key.clone() });
                }
            }
        }
        Ok(())
    }

    fn note_present(&mut self, key: Bytes) -> Result<(), SyncError> {
        if self.present.entry(slot_of(&key)).or_default().insert(key) {
            self.keys += 1;
            if self.keys > self.keys_max {
                return Err(SyncError::TooManyKeys { max: self.keys_max });
            }
        }
        Ok(())
    }

    /// Whether the target held `key`.
    fn note_absent(&mut self, key: &Bytes) -> bool {
        let slot = slot_of(key);
        let Some(present) = self.present.get_mut(&slot) else {
            return false;
        };
        let held = present.remove(key);
        if present.is_empty() {
            self.present.remove(&slot);
        }
        if held {
            self.keys -= 1;
        }
        held
    }
}
