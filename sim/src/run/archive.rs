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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder_core::{GroupId, NodeId};
use larder_protocol::{BackupAnswer, BackupRead, CENTER_GROUP, read_base, read_entries};
use larder_storage::StorageNode;
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
#[derive(Debug, Default)]
pub(crate) struct Archive {
    groups: BTreeMap<GroupId, GroupArchive>,
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
        let kept = archive.groups.entry(group).or_default();
        // One task archives, so nothing else moves the archive between two pages.
        debug_assert_eq!(kept.next(), page.first().map(|(index, _)| *index));
        kept.entries.extend(page);
        Ok(())
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
    let mut replay = Replay::from_base(SimDisk::new(seed), group, base, clock_ms)
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
