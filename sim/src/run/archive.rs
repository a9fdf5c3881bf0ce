//! The archiver of a run with [`SimConfig::backup`]: `larder backup`'s work done under the
//! run's faults, and checked at the end.
//!
//! During the run it archives every slot group as `larder backup --every` would: a base from
//! one replica, then every 300 ms the committed entries since, each time from the next replica
//! hosting the group (so a deposed leader, a partitioned follower or a replica that just
//! installed a snapshot is asked in turn; a gap, where a replica no longer has what was asked,
//! takes a new base, as the command does). At the end, once the replicas agree
//! ([`super::checks::check_final`]), it fetches the rest from one replica, rebuilds the group
//! from its archive with the restore's own code (`larder_storage::restore::Replay`), and
//! compares that with what the replica holds: the same applied index, the same owned slots,
//! the same records. A difference means the archive holds something the group never
//! committed, or misses something it did.

// The archiver is harness, like the checker client it runs in: it waits on turmoil's
// simulated tokio time.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder_core::bugs::Bugs;
use larder_core::env::{Rng, SeededRng, derive_seed};
use larder_core::kv::Record;
use larder_core::slots::{SLOTS, slot_of};
use larder_core::{GroupId, NodeId};
use larder_protocol::{BackupAnswer, BackupRead, Base, CENTER_GROUP, read_base, read_entries};
use larder_storage::StorageNode;
use larder_storage::cluster_sync::{ClusterSync, SyncOp, SyncTally};
use larder_storage::restore::Replay;

use super::hosts::NodeSlot;
use super::verdict::Violation;
use crate::disk::SimDisk;
use crate::env::SimEnv;
use crate::trace::sim_now;

/// Time between two archiving rounds.
const ROUND_MS: u64 = 300;

/// One group's archive.
#[derive(Debug, Default)]
struct GroupArchive {
    /// `(index, group clock, base)`.
    base: Option<(u64, u64, Vec<u8>)>,
    /// The committed entries after the base, consecutive.
    entries: Vec<(u64, Bytes)>,
    /// New bases taken after a gap.
    rebases: u64,
}

impl GroupArchive {
    fn next(&self) -> Option<u64> {
        let (index, _, _) = self.base.as_ref()?;
        Some(self.entries.last().map_or(*index, |(i, _)| *i) + 1)
    }
}

/// What the archiver did in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackupTally {
    /// Groups rebuilt from their archive and compared with a replica at the end.
    pub groups_verified: u64,
    /// Entries archived, over the groups verified.
    pub entries: u64,
    /// New bases taken after a gap (a replica had snapshotted past what was asked).
    pub rebases: u64,
}

/// Every group's archive, shared by the archiving task and the final check.
#[derive(Default)]
pub(crate) struct Archive {
    groups: BTreeMap<GroupId, GroupArchive>,
    /// With `--sync`: everything read, for `larder sync`'s work at the end.
    mirror: Option<Mirror>,
}

impl Archive {
    /// An archive that also keeps what it reads for a cross-cluster sync ([`SimConfig::sync`])
    /// whose replays live on disks of `seed`.
    ///
    /// [`SimConfig::sync`]: crate::SimConfig::sync
    pub(crate) fn new(sync: bool, seed: u64, bugs: Bugs, sessions_max: usize) -> Self {
        Archive {
            groups: BTreeMap::new(),
            mirror: sync.then(|| Mirror {
                reads: BTreeMap::new(),
                seed,
                bugs,
                sessions_max,
            }),
        }
    }

    /// Keeps a read for the sync, if the run has one (`read` is only made then).
    fn keep(&mut self, group: GroupId, read: impl FnOnce() -> Read) {
        if let Some(mirror) = &mut self.mirror {
            let at_ms = sim_now().as_millis() as u64;
            mirror.reads.entry(group).or_default().push((at_ms, read()));
        }
    }
}

/// One read of a group, as the archiver made it.
enum Read {
    Base(Base),
    Entries(Vec<(u64, Bytes)>),
}

/// What a cross-cluster sync of the run reads: each group's bases and entries in the order
/// the archiver read them (from replicas in turn, under the run's faults). At the end they are
/// fed to `larder sync`'s [`ClusterSync`], each group behind by a lag drawn from the seed, as a
/// sync that reads each group at its own pace would see them (one group an hour behind
/// another, a slot's old owner read after its new one), writing to a model of the target
/// cluster: a map of keys to records.
pub(crate) struct Mirror {
    /// Each group's reads, with the simulated time (ms) they were made at.
    reads: BTreeMap<GroupId, Vec<(u64, Read)>>,
    seed: u64,
    bugs: Bugs,
    /// The source groups' bound on sessions, which the sync's replays keep.
    sessions_max: usize,
}

/// The seed stream of the order the sync's reads are interleaved in.
const SYNC_ORDER_STREAM: u64 = 0x5359_4e43;
/// The seed stream of the power losses at the sync's restarts.
const SYNC_RESTART_STREAM: u64 = 0x5253_5452;

impl Mirror {
    /// Feeds every read to a new sync in a seeded interleaving; the target it wrote, and what
    /// it did, or why it stopped.
    async fn run(&mut self) -> Result<Synced, String> {
        let mut sync = ClusterSync::new([], usize::MAX, self.bugs.clone())
            .map_err(|e| e.to_string())?
            .with_sessions_max(self.sessions_max);
        let mut target = BTreeMap::new();
        // Each group read with a lag of its own; reads are taken in the order of the time
        // they were made plus their group's lag. Half the seeds draw each lag from none, 1 s,
        // 5 s or an hour (groups interleaved, some far behind); the other half read the
        // groups one after another in a drawn order (a slot's old owner wholly before or
        // wholly after its new one).
        let mut rng = SeededRng::new(derive_seed(self.seed, SYNC_ORDER_STREAM));
        let groups: Vec<GroupId> = self.reads.keys().copied().collect();
        let mut lags: BTreeMap<GroupId, u64> = BTreeMap::new();
        if rng.chance(0.5) {
            for group in &groups {
                lags.insert(*group, [0, 1_000, 5_000, 3_600_000][rng.below(4) as usize]);
            }
        } else {
            let mut left = groups.clone();
            let mut rank = 0;
            while !left.is_empty() {
                let group = left.remove(rng.below(left.len() as u64) as usize);
                lags.insert(group, rank * 3_600_000);
                rank += 1;
            }
        }
        let mut order = Vec::new();
        for (group, reads) in std::mem::take(&mut self.reads) {
            let lag_ms = lags[&group];
            for (at_ms, read) in reads {
                order.push((at_ms + lag_ms, group, read));
            }
        }
        // Stable: a group's reads keep their order.
        order.sort_by_key(|(at_ms, group, _)| (*at_ms, *group));
        // `larder sync --scratch` stopped and started again: after up to two drawn reads, the
        // sync checkpoints, is dropped, and goes on from the checkpoint with its replays
        // opened from their disks.
        let mut restarts = BTreeSet::new();
        for _ in 0..rng.below(3) {
            restarts.insert(rng.below(order.len().max(1) as u64) as usize);
        }
        let mut disks: BTreeMap<GroupId, SimDisk> = BTreeMap::new();
        let mut resumed = 0;
        let mut carried = SyncTally::default();
        for (at, (_, group, read)) in order.into_iter().enumerate() {
            let ops = match read {
                Read::Base(base) => {
                    let disk = SimDisk::new(self.seed);
                    disks.insert(group, disk.clone());
                    sync.base(group, disk, &base.data, base.clock_ms).await
                }
                Read::Entries(rows) => sync.entries(group, &rows).await,
            }
            .map_err(|e| e.to_string())?;
            for op in ops {
                match op {
                    SyncOp::Put { key, record } => target.insert(key, record),
                    SyncOp::Del { key } => target.remove(&key),
                };
            }
            if restarts.contains(&at) {
                carried += sync.tally();
                sync = self.restart(sync, &disks, &target).await?;
                resumed += 1;
            }
        }
        Ok(Synced {
            resumed,
            ends: sync
                .groups()
                .map(|(group, replay)| (group, replay.at().index))
                .collect(),
            target,
            tally: carried + sync.tally(),
        })
    }
}

impl Mirror {
    /// `sync` stopped where it stands (every write it made is on `target`) and started again
    /// from its checkpoint, with its replays opened from `disks`.
    async fn restart(
        &self,
        sync: ClusterSync<SimDisk>,
        disks: &BTreeMap<GroupId, SimDisk>,
        target: &BTreeMap<Bytes, Record>,
    ) -> Result<ClusterSync<SimDisk>, String> {
        let groups: Vec<GroupId> = sync.groups().map(|(group, _)| group).collect();
        for group in &groups {
            sync.sync_replay(*group).await.map_err(|e| e.to_string())?;
        }
        let checkpoint = sync.checkpoint();
        drop(sync);
        // The process gone with the machine: only what was synced is on the disks.
        let mut rng = SeededRng::new(derive_seed(self.seed, SYNC_RESTART_STREAM));
        for disk in disks.values() {
            disk.power_loss(&mut rng);
        }
        let mut replays = Vec::new();
        for group in groups {
            let replay = Replay::open(disks[&group].clone(), group, self.sessions_max)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("group {group}: no replay on its disk"))?;
            replays.push(replay);
        }
        let (sync, left_out) = ClusterSync::resume(
            &checkpoint,
            replays,
            target.keys().cloned(),
            usize::MAX,
            self.bugs.clone(),
        )
        .map_err(|e| e.to_string())?;
        if !left_out.is_empty() {
            return Err(format!(
                "groups {left_out:?} not where their checkpoint says"
            ));
        }
        Ok(sync)
    }
}

/// Where a [`Mirror`] run ended.
struct Synced {
    /// Times the sync was stopped and resumed from its checkpoint.
    resumed: u64,
    /// The last index applied of each group.
    ends: BTreeMap<GroupId, u64>,
    target: BTreeMap<Bytes, Record>,
    tally: SyncTally,
}

fn running(slots: &[(NodeId, NodeSlot)]) -> Vec<(NodeId, Arc<StorageNode<SimEnv>>)> {
    slots
        .iter()
        .filter_map(|(id, slot)| Some((*id, slot.lock().expect("slot lock").clone()?)))
        .collect()
}

/// Archives until `until` (sim time), a round every [`ROUND_MS`].
pub(crate) async fn archive(
    slots: Vec<(NodeId, NodeSlot)>,
    archive: Arc<Mutex<Archive>>,
    until: Duration,
) {
    let mut round = 0usize;
    while sim_now() < until {
        tokio::time::sleep(Duration::from_millis(ROUND_MS)).await;
        round += 1;
        let nodes = running(&slots);
        let mut hosting: BTreeMap<GroupId, Vec<Arc<StorageNode<SimEnv>>>> = BTreeMap::new();
        for (_, node) in &nodes {
            for group in node.hosted_group_ids() {
                if group != CENTER_GROUP {
                    hosting.entry(group).or_default().push(node.clone());
                }
            }
        }
        for (group, replicas) in hosting {
            let node = &replicas[round % replicas.len()];
            let next = archive
                .lock()
                .expect("archive lock")
                .groups
                .entry(group)
                .or_default()
                .next();
            match next {
                None => take_base(node, group, &archive, false).await,
                Some(from) => {
                    if let Fetched::Gap = fetch(node, group, from, &archive).await {
                        take_base(node, group, &archive, true).await;
                    }
                }
            }
        }
    }
}

/// Reads a whole base of `group` from `node` into the archive (dropping the entries before
/// it); leaves the archive as it was if the node cannot give one now.
async fn take_base(
    node: &StorageNode<SimEnv>,
    group: GroupId,
    archive: &Mutex<Archive>,
    rebase: bool,
) {
    let Ok(Some(base)) = read_base(|read| ask(node, read), group).await else {
        return;
    };
    let mut archive = archive.lock().expect("archive lock");
    archive.keep(group, || Read::Base(base.clone()));
    let kept = archive.groups.entry(group).or_default();
    kept.base = Some((base.index, base.clock_ms, base.data));
    kept.entries.clear();
    if rebase {
        kept.rebases += 1;
    }
}

/// One question to a replica in process: it cannot fail to arrive.
async fn ask(
    node: &StorageNode<SimEnv>,
    read: BackupRead,
) -> Result<BackupAnswer, std::convert::Infallible> {
    Ok(node.backup_read(read).await)
}

enum Fetched {
    /// Up to the replica's applied index (or it failed: asked again next round).
    Done,
    /// The replica no longer holds the next entry.
    Gap,
}

/// Appends `group`'s entries from `from` on, as `node` serves them, to the archive, with
/// `larder backup`'s own reading ([`read_entries`]).
async fn fetch(
    node: &StorageNode<SimEnv>,
    group: GroupId,
    from: u64,
    archive: &Mutex<Archive>,
) -> Fetched {
    let take = |page: Vec<(u64, Bytes)>| {
        let mut archive = archive.lock().expect("archive lock");
        archive.keep(group, || Read::Entries(page.clone()));
        let kept = archive.groups.entry(group).or_default();
        // One task archives, so nothing else moves the archive between two pages.
        debug_assert_eq!(kept.next(), page.first().map(|(index, _)| *index));
        kept.entries.extend(page);
        Ok(std::ops::ControlFlow::Continue(()))
    };
    match read_entries(|read| ask(node, read), group, from, take).await {
        Ok(read) if read.gap.is_some() => Fetched::Gap,
        _ => Fetched::Done,
    }
}

/// The end-of-run check: each group of `members` that has a base is caught up from the first
/// of its replicas and rebuilt from the archive, which must equal what that replica holds.
pub(crate) async fn verify(
    slots: &[(NodeId, NodeSlot)],
    members: &BTreeMap<GroupId, Vec<NodeId>>,
    archive: &Mutex<Archive>,
    seed: u64,
    problems: &mut Vec<Violation>,
) -> BackupTally {
    let mut tally = BackupTally::default();
    let nodes = running(slots);
    for (&group, replicas) in members {
        let Some(node) = replicas
            .iter()
            .find_map(|id| nodes.iter().find(|(n, _)| n == id))
            .map(|(id, node)| (*id, node.clone()))
        else {
            continue;
        };
        let (id, node) = node;
        let next = archive
            .lock()
            .expect("archive lock")
            .groups
            .get(&group)
            .and_then(GroupArchive::next);
        let Some(from) = next else {
            continue;
        };
        if let Fetched::Gap = fetch(&node, group, from, archive).await {
            // Not a fault of the archive: the replica snapshotted past it (counted).
            continue;
        }
        let (base, entries) = {
            let archive = archive.lock().expect("archive lock");
            let kept = &archive.groups[&group];
            tally.rebases += kept.rebases;
            (kept.base.clone().expect("a base"), kept.entries.clone())
        };
        tally.groups_verified += 1;
        tally.entries += entries.len() as u64;
        let (_, clock_ms, data) = base;
        let found = rebuild_and_compare(&node, group, &data, clock_ms, &entries, seed).await;
        if let Err(detail) = found {
            problems.push(Violation::BackupDiverges {
                group,
                node: id,
                detail,
            });
        }
    }
    tally
}

async fn rebuild_and_compare(
    node: &StorageNode<SimEnv>,
    group: GroupId,
    base: &[u8],
    clock_ms: u64,
    entries: &[(u64, Bytes)],
    seed: u64,
) -> Result<(), String> {
    // The replica's own bound on sessions, for registrations that carry none (the sim's all
    // carry theirs: the replay forgets what the group forgot whatever this is).
    let sessions_max = node.config().sessions_max;
    let mut replay = Replay::from_base(SimDisk::new(seed), group, base, clock_ms, sessions_max)
        .await
        .map_err(|e| format!("the base does not install: {e}"))?;
    replay
        .apply(entries, u64::MAX)
        .await
        .map_err(|e| format!("the archive does not replay: {e}"))?;
    let rebuilt = replay.contents().await.map_err(|e| e.to_string())?;
    let Ok(live) = node.group_contents(group).await else {
        return Ok(());
    };
    if rebuilt.applied != live.applied {
        return Err(format!(
            "rebuilt at index {}, the replica is at {}",
            rebuilt.applied, live.applied
        ));
    }
    if rebuilt.owned != live.owned {
        return Err(format!(
            "owns {:?}, the replica {:?}",
            rebuilt.owned, live.owned
        ));
    }
    if rebuilt.records != live.records {
        let differs = rebuilt
            .records
            .iter()
            .zip(&live.records)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("first difference: {a:?} rebuilt, {b:?} held"))
            .unwrap_or_else(|| {
                format!(
                    "{} records rebuilt, {} held",
                    rebuilt.records.len(),
                    live.records.len()
                )
            });
        return Err(differs);
    }
    Ok(())
}

/// What the end-of-run check of the cross-cluster sync compared (`--sync`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncCheck {
    /// Slots whose newest owner the sync had caught up with, compared key by key.
    pub slots: u64,
    /// Keys compared in them.
    pub keys: u64,
    /// What the sync wrote to its target over the run.
    pub tally: SyncTally,
    /// Times the sync was stopped (its scratch disks losing what was not synced) and resumed
    /// from its checkpoint.
    pub resumed: u64,
}

/// The end-of-run check of the sync, after [`verify`] caught every group up: for every slot,
/// the target must hold exactly the live records of the group that owns the slot with the
/// newest epoch, as its first running replica of `members` holds them now. Slots whose owner
/// the sync has not caught up with (no replica running, a gap at the end) are not compared.
pub(crate) async fn verify_sync(
    slots: &[(NodeId, NodeSlot)],
    members: &BTreeMap<GroupId, Vec<NodeId>>,
    archive: &Mutex<Archive>,
    problems: &mut Vec<Violation>,
) -> Option<SyncCheck> {
    let mut mirror = archive.lock().expect("archive lock").mirror.take()?;
    let synced = match mirror.run().await {
        Ok(synced) => synced,
        Err(error) => {
            problems.push(Violation::SyncDiverges {
                detail: format!("the sync stopped: {error}"),
            });
            return Some(SyncCheck::default());
        }
    };
    let mut check = SyncCheck {
        tally: synced.tally,
        resumed: synced.resumed,
        ..SyncCheck::default()
    };
    let nodes = running(slots);
    // Each group as a running replica holds it: (epoch, owns, caught up, clock, records).
    let mut live = BTreeMap::new();
    for (&group, replicas) in members {
        let Some((_, node)) = replicas
            .iter()
            .find_map(|id| nodes.iter().find(|(n, _)| n == id))
        else {
            continue;
        };
        let Ok(contents) = node.group_contents(group).await else {
            continue;
        };
        let caught_up = synced.ends.get(&group) == Some(&contents.applied);
        live.insert(group, (caught_up, contents));
    }
    // Who owns each slot: the group owning it explicitly with the newest epoch; else the
    // groups whose ownership was never set that hold keys in it (the routing table gave it
    // to one of them when the cluster was made; slot moves set both groups' ownership).
    let explicit = |slot: u16| {
        live.iter()
            .filter_map(|(group, (_, c))| Some((*group, c.owned.as_ref()?)))
            .filter(|(_, own)| own.owns(slot))
            .max_by_key(|(_, own)| own.epoch)
            .map(|(group, _)| group)
    };
    let mut unset_holders: BTreeMap<u16, BTreeSet<GroupId>> = BTreeMap::new();
    for (group, (_, contents)) in &live {
        if contents.owned.is_none() {
            for (key, _) in &contents.records {
                unset_holders
                    .entry(slot_of(key))
                    .or_default()
                    .insert(*group);
            }
        }
    }
    let unset_caught_up = live
        .values()
        .all(|(caught_up, c)| *caught_up || c.owned.is_some());
    let mut owners: Vec<Option<(BTreeSet<GroupId>, u64)>> = vec![None; usize::from(SLOTS)];
    for slot in 0..SLOTS {
        let groups: BTreeSet<GroupId> = match explicit(slot) {
            Some(group) => [group].into(),
            None => unset_holders.remove(&slot).unwrap_or_default(),
        };
        let compared = if groups.is_empty() {
            unset_caught_up
        } else {
            groups.iter().all(|group| live[group].0)
        };
        if compared {
            // Lapsed keys are judged by the owner's clock (any, when none holds keys).
            let clock_ms = groups
                .iter()
                .chain(live.keys())
                .map(|group| live[group].1.clock_ms)
                .next()
                .unwrap_or(0);
            owners[usize::from(slot)] = Some((groups, clock_ms));
        }
    }
    let mut expected: BTreeMap<u16, BTreeMap<&Bytes, &Record>> = BTreeMap::new();
    for (slot, owner) in owners.iter().enumerate() {
        if owner.is_some() {
            expected.insert(slot as u16, BTreeMap::new());
        }
    }
    for (group, (_, contents)) in &live {
        for (key, record) in &contents.records {
            let slot = slot_of(key);
            if let Some((groups, clock_ms)) = &owners[usize::from(slot)]
                && groups.contains(group)
                && !record.is_expired(*clock_ms)
            {
                expected.entry(slot).or_default().insert(key, record);
            }
        }
    }
    let mut held: BTreeMap<u16, BTreeMap<&Bytes, &Record>> = BTreeMap::new();
    for (key, record) in &synced.target {
        let slot = slot_of(key);
        if let Some((_, clock_ms)) = &owners[usize::from(slot)]
            && !record.is_expired(*clock_ms)
        {
            held.entry(slot).or_default().insert(key, record);
        }
    }
    for (slot, want) in &expected {
        let have = held.remove(slot).unwrap_or_default();
        check.slots += 1;
        check.keys += want.len() as u64;
        if *want != have {
            let detail = want
                .iter()
                .find(|(key, record)| have.get(*key) != Some(*record))
                .map(|(key, record)| {
                    format!(
                        "slot {slot}: {key:?} is {record:?} at the source, {:?} on the target",
                        have.get(*key)
                    )
                })
                .or_else(|| {
                    have.iter()
                        .find(|(key, _)| !want.contains_key(*key))
                        .map(|(key, _)| {
                            format!("slot {slot}: {key:?} is on the target, not at the source")
                        })
                })
                .unwrap_or_default();
            problems.push(Violation::SyncDiverges { detail });
            break;
        }
    }
    Some(check)
}
