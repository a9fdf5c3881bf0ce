//! `larder backup DIR` and `larder restore DIR --at TIME`: backups with point-in-time restore
//! (ARCHITECTURE.md, "Backups and point-in-time restore").
//!
//! A backup directory holds, per slot group, **bases** (the group's whole state at one applied
//! index, read from a replica) and **entries** (the committed Raft log entries after them, which
//! storage nodes keep for `--retain-log` after their snapshots cover them). `larder backup`
//! adds to it: each round saves every group's entries since the last one saved, and a new base
//! when the group has none, when its newest is older than `--base-every`, or when entries it
//! needed were already gone (a gap). With `--every`, rounds repeat until Ctrl-C: continuous
//! archiving, as long as the interval is shorter than the nodes' retention.
//!
//! `larder restore` rebuilds each group as it was at a moment of its group clock (the entries'
//! stamps, ms since the Unix epoch): the newest base at or before it, then the entries after it
//! applied by the storage node's own state machine (`larder_storage::restore::Replay`) up to
//! the last entry at or before the moment. The groups' records are then written as one RDB
//! file: `larder import` loads it into a cluster, and a Redis server loads it as its
//! `dump.rdb`. Each key is taken from the group that owned its slot at that moment (a slot
//! half way through a move is owned by neither for the cutover's length: then from the group
//! that gave it up, whose copy is the final one).
//!
//! Files are written to a temporary name, synced, then renamed, so a backup cut short leaves
//! whole files only; each carries a CRC-64 that `restore` checks.

// Offline tooling on the real machine (files, the wall clock, Ctrl-C): the simulator never
// runs it.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use larder_core::kv::Value;
use larder_core::kv::rdb::checksum64;
use larder_core::kv::rdb::writer::RdbWriter;
use larder_core::slots::{Ownership, ranges_contain, slot_of};
use larder_core::{GroupId, NodeId};
use larder_protocol::{
    BackupAnswer, BackupRead, ClusterStatus, Encoded, GroupSummary, call, read_base, read_entries,
};
use larder_real::{AddressBook, FjallDisk, FjallOptions, TcpNet};
use larder_storage::restore::{Replay, Replayed};

use crate::admin::{ADMIN_ID, CenterArgs, fetch_status};

const BASE_MAGIC: &[u8] = b"LARDER-BASE 1\n";
const ENTRIES_MAGIC: &[u8] = b"LARDER-ENTRIES 1\n";
/// An entries file is closed at this size and the next begins (a restore holds one in memory).
const ENTRIES_FILE_BYTES_MAX: usize = 64 << 20;
/// One backup call's time limit (a base chunk or a page of entries).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The backup directory (created if missing; later rounds add to it).
    pub dir: PathBuf,
    #[command(flatten)]
    pub center: CenterArgs,
    /// Repeat a round this often until Ctrl-C (default: one round). Keep it shorter than the
    /// nodes' `--retain-log`, or entries are gone before they are saved.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub every: Option<Duration>,
    /// Take a new base of a group when its newest is older than this (`0s`: every round).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub base_every: Duration,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup directory.
    pub dir: PathBuf,
    /// The moment to restore: RFC 3339 (`2026-12-06T01:23:45.250Z`) or Unix milliseconds.
    /// Default: the latest the backup holds.
    #[arg(long)]
    pub at: Option<String>,
    /// The RDB file to write (`-`: standard output, e.g. `| larder import -`).
    #[arg(long)]
    pub rdb: PathBuf,
}

/// One group's directory in a backup.
fn group_dir(dir: &Path, group: GroupId) -> PathBuf {
    dir.join(format!("group-{group:08}"))
}

/// What a group's directory holds, each list in index order.
#[derive(Debug, Default)]
struct Listing {
    /// `(index, group clock, file)`.
    bases: Vec<(u64, u64, PathBuf)>,
    /// `(first index, last index, file)`.
    entries: Vec<(u64, u64, PathBuf)>,
}

impl Listing {
    fn read(dir: &Path) -> anyhow::Result<Listing> {
        let mut listing = Listing::default();
        let Ok(files) = std::fs::read_dir(dir) else {
            return Ok(listing);
        };
        for file in files {
            let path = file?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let numbers = |stem: &str| -> Option<(u64, u64)> {
                let (a, b) = stem.split_once('-')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            };
            if let Some(stem) = name
                .strip_prefix("base-")
                .and_then(|n| n.strip_suffix(".base"))
                && let Some((index, clock)) = numbers(stem)
            {
                listing.bases.push((index, clock, path.clone()));
            } else if let Some(stem) = name
                .strip_prefix("entries-")
                .and_then(|n| n.strip_suffix(".log"))
                && let Some((first, last)) = numbers(stem)
            {
                listing.entries.push((first, last, path.clone()));
            }
        }
        listing.bases.sort();
        listing.entries.sort();
        Ok(listing)
    }

    /// The last index saved: an entry's or a base's.
    fn saved_through(&self) -> Option<u64> {
        let entries = self.entries.last().map(|(_, last, _)| *last);
        let base = self.bases.last().map(|(index, _, _)| *index);
        entries.max(base)
    }
}

/// `bytes` with the magic in front and the CRC-64 of both behind.
fn sealed(magic: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(magic.len() + body.len() + 8);
    out.extend_from_slice(magic);
    out.extend_from_slice(body);
    let sum = checksum64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// The body of a file [`sealed`] with `magic`, checked.
fn unsealed<'a>(magic: &[u8], bytes: &'a [u8], path: &Path) -> anyhow::Result<&'a [u8]> {
    let Some(split) = bytes.len().checked_sub(8) else {
        bail!("{}: too short for a backup file", path.display());
    };
    if !bytes.starts_with(magic) || split < magic.len() {
        bail!("{}: not a Larder backup file of this kind", path.display());
    }
    let stored = u64::from_le_bytes(bytes[split..].try_into().expect("8 bytes"));
    if checksum64(&bytes[..split]) != stored {
        bail!(
            "{}: checksum mismatch (the file is damaged)",
            path.display()
        );
    }
    Ok(&bytes[magic.len()..split])
}

/// Writes `bytes` to `path` whole or not at all: a temporary file, synced, renamed, and the
/// directory synced so the rename survives a crash.
fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("renaming to {}", path.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
    }
    Ok(())
}

fn encode_entries(rows: &[(u64, Bytes)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (index, row) in rows {
        body.extend_from_slice(&index.to_le_bytes());
        body.extend_from_slice(&(row.len() as u64).to_le_bytes());
        body.extend_from_slice(row);
    }
    sealed(ENTRIES_MAGIC, &body)
}

fn decode_entries(bytes: &[u8], path: &Path) -> anyhow::Result<Vec<(u64, Bytes)>> {
    let mut body = unsealed(ENTRIES_MAGIC, bytes, path)?;
    let mut rows = Vec::new();
    let word = |body: &mut &[u8]| -> anyhow::Result<u64> {
        let Some((head, rest)) = body.split_first_chunk::<8>() else {
            bail!("{}: an entry is cut short", path.display());
        };
        *body = rest;
        Ok(u64::from_le_bytes(*head))
    };
    while !body.is_empty() {
        let index = word(&mut body)?;
        let len = usize::try_from(word(&mut body)?)?;
        if len > body.len() {
            bail!("{}: entry {index} is cut short", path.display());
        }
        rows.push((index, Bytes::copy_from_slice(&body[..len])));
        body = &body[len..];
    }
    Ok(rows)
}

fn encode_base(index: u64, clock_ms: u64, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + data.len());
    body.extend_from_slice(&index.to_le_bytes());
    body.extend_from_slice(&clock_ms.to_le_bytes());
    body.extend_from_slice(data);
    sealed(BASE_MAGIC, &body)
}

/// `(index, group clock, base)`.
fn decode_base(bytes: &[u8], path: &Path) -> anyhow::Result<(u64, u64, Vec<u8>)> {
    let body = unsealed(BASE_MAGIC, bytes, path)?;
    if body.len() < 16 {
        bail!("{}: too short for a base", path.display());
    }
    let index = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let clock_ms = u64::from_le_bytes(body[8..16].try_into().expect("8 bytes"));
    Ok((index, clock_ms, body[16..].to_vec()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `larder backup`: one round, or rounds every `--every` until Ctrl-C. False when a round
/// left a group unsaved.
pub fn backup(args: BackupArgs) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    rounds(&args.center, args.every, |runtime, net, status| {
        Ok(runtime.block_on(round(net, status, &args.dir, args.base_every)))
    })
}

/// Runs `round` once, or every `every` until Ctrl-C (`larder backup`'s and `larder sync`'s
/// loop), each time with the cluster's status and a network to its nodes. A round that cannot
/// reach a center is an error without `every`; with it, the round is skipped (the next one
/// does what it could not: archiving and syncing go on through a center election or outage).
/// False when a round returned false or was skipped.
pub(crate) fn rounds(
    center: &CenterArgs,
    every: Option<Duration>,
    mut round: impl FnMut(&tokio::runtime::Runtime, &TcpNet, &ClusterStatus) -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    let centers = center.reach()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut clean = true;
    loop {
        match fetch_status(&centers, center.timeout) {
            Ok(status) => {
                let book = AddressBook::new();
                for node in &status.nodes {
                    if let Ok(address) = node.address.parse() {
                        book.insert(node.id, address);
                    }
                }
                let auth = larder_real::process_auth(centers.key.clone());
                let net = TcpNet::client(ADMIN_ID, book, auth);
                clean &= round(&runtime, &net, &status)?;
            }
            Err(error) if every.is_none() => return Err(error),
            Err(error) => {
                clean = false;
                println!("round skipped: {error:#}");
            }
        }
        let Some(every) = every else {
            return Ok(clean);
        };
        let wait = runtime.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(every) => true,
                _ = tokio::signal::ctrl_c() => false,
            }
        });
        if !wait {
            return Ok(clean);
        }
    }
}

/// Saves every group of `status` once; prints a line per group. False when one failed.
async fn round(net: &TcpNet, status: &ClusterStatus, dir: &Path, base_every: Duration) -> bool {
    let mut clean = true;
    for group in &status.groups {
        let gdir = group_dir(dir, group.group);
        let mut failures = Vec::new();
        let mut saved = None;
        for node in replicas_to_ask(group) {
            match save_group(net, node, group.group, &gdir, base_every).await {
                Ok(line) => {
                    saved = Some(line);
                    break;
                }
                Err(error) => failures.push(format!("node {node}: {error:#}")),
            }
        }
        match saved {
            Some(line) => println!("group {}: {line}", group.group),
            None => {
                clean = false;
                println!("group {}: NOT SAVED ({})", group.group, failures.join("; "));
            }
        }
    }
    clean
}

/// The leader first (its applied index is the newest), then the other replicas.
pub(crate) fn replicas_to_ask(group: &GroupSummary) -> Vec<NodeId> {
    let leader = group.leader.map(|l| l.node);
    leader
        .into_iter()
        .chain(
            group
                .replicas
                .iter()
                .copied()
                .filter(|r| Some(*r) != leader),
        )
        .collect()
}

pub(crate) async fn ask(
    net: &TcpNet,
    node: NodeId,
    read: BackupRead,
) -> anyhow::Result<BackupAnswer> {
    Ok(call(net, node, &Encoded::new(read), CALL_TIMEOUT).await?)
}

/// Saves `group`'s base when one is due and its new entries, from replica `node`, and a base
/// after a gap; describes what.
async fn save_group(
    net: &TcpNet,
    node: NodeId,
    group: GroupId,
    gdir: &Path,
    base_every: Duration,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(gdir).with_context(|| format!("creating {}", gdir.display()))?;
    let listing = Listing::read(gdir)?;
    let mut said = Vec::new();
    // A base that is due goes first, then the entries since the last saved one: entries
    // read first and a base after would leave the entries in between unsaved (the base's
    // index is past them), and no moment among them could be restored.
    let newest_base = listing.bases.last().map(|(_, clock, _)| *clock);
    let due = match newest_base {
        None => true,
        Some(clock) => now_ms().saturating_sub(clock) >= base_every.as_millis() as u64,
    };
    let base = if due {
        Some(save_base(net, node, group, gdir).await?)
    } else {
        None
    };
    let mut gap = None;
    if let Some(through) = listing.saved_through() {
        let mut files = EntriesFiles::new(gdir, ENTRIES_FILE_BYTES_MAX);
        let take = |page| files.take(page).map(|()| ControlFlow::Continue(()));
        let read = read_entries(|read| ask(net, node, read), group, through + 1, take).await?;
        let saved = files.finish()?;
        if saved > 0 {
            said.push(format!(
                "{saved} entries ({}..={})",
                through + 1,
                read.next - 1
            ));
        } else if read.gap.is_none() {
            said.push("no new entries".to_string());
        }
        gap = read.gap.map(|first| (read.next, first));
    }
    if let Some((from, first)) = gap {
        said.push(format!(
            "GAP: entries {from}..{first} are no longer on node {node} (its --retain-log is \
             shorter than the time between backups); a new base is taken, and times before it \
             back to the last saved entry cannot be restored"
        ));
    }
    match base {
        Some(line) => said.push(line),
        // After a gap, the state past it: a base (one taken this round already is).
        None if gap.is_some() => said.push(save_base(net, node, group, gdir).await?),
        None => {}
    }
    Ok(said.join("; "))
}

/// Pages of entries as they are read, written as entries files of about `bytes_max` each
/// (a restore holds one file in memory at a time).
struct EntriesFiles<'a> {
    gdir: &'a Path,
    bytes_max: usize,
    rows: Vec<(u64, Bytes)>,
    bytes: usize,
    saved: u64,
}

impl<'a> EntriesFiles<'a> {
    fn new(gdir: &'a Path, bytes_max: usize) -> Self {
        EntriesFiles {
            gdir,
            bytes_max,
            rows: Vec::new(),
            bytes: 0,
            saved: 0,
        }
    }

    /// Holds `page`; writes what is held as a file once it reaches `bytes_max`.
    fn take(&mut self, page: Vec<(u64, Bytes)>) -> anyhow::Result<()> {
        self.bytes += page.iter().map(|(_, row)| row.len()).sum::<usize>();
        self.rows.extend(page);
        if self.bytes >= self.bytes_max {
            self.write()?;
        }
        Ok(())
    }

    /// Writes what is held; returns how many entries were saved in all.
    fn finish(mut self) -> anyhow::Result<u64> {
        self.write()?;
        Ok(self.saved)
    }

    fn write(&mut self) -> anyhow::Result<()> {
        let (Some((first, _)), Some((last, _))) = (self.rows.first(), self.rows.last()) else {
            return Ok(());
        };
        let path = self
            .gdir
            .join(format!("entries-{first:020}-{last:020}.log"));
        write_whole(&path, &encode_entries(&self.rows))?;
        self.saved += self.rows.len() as u64;
        self.rows.clear();
        self.bytes = 0;
        Ok(())
    }
}

async fn save_base(
    net: &TcpNet,
    node: NodeId,
    group: GroupId,
    gdir: &Path,
) -> anyhow::Result<String> {
    let Some(base) = read_base(|read| ask(net, node, read), group).await? else {
        return Ok("nothing applied yet, no base".to_string());
    };
    let (index, clock_ms) = (base.index, base.clock_ms);
    let path = gdir.join(format!("base-{index:020}-{clock_ms:020}.base"));
    write_whole(&path, &encode_base(index, clock_ms, &base.data))?;
    Ok(format!(
        "base at index {index} ({}, {} bytes)",
        format_ms(clock_ms),
        base.data.len()
    ))
}

fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `--at`: RFC 3339 or Unix milliseconds.
fn parse_at(at: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = at.parse::<u64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(at)
        .with_context(|| format!("--at {at}: neither RFC 3339 nor Unix milliseconds"))?;
    Ok(time.duration_since(UNIX_EPOCH)?.as_millis() as u64)
}

/// One group as rebuilt.
struct Rebuilt {
    group: GroupId,
    at: Replayed,
    owned: Option<Ownership>,
    records: Vec<(Bytes, larder_core::kv::Record)>,
}

/// `larder restore`.
pub fn restore(args: RestoreArgs) -> anyhow::Result<bool> {
    let at_ms = args.at.as_deref().map(parse_at).transpose()?;
    let until = at_ms.unwrap_or(u64::MAX);
    let mut groups: Vec<(GroupId, PathBuf)> = Vec::new();
    for entry in
        std::fs::read_dir(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?
    {
        let path = entry?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("group-"))
            .and_then(|n| n.parse::<GroupId>().ok());
        if let Some(id) = id {
            groups.push((id, path));
        }
    }
    groups.sort();
    if groups.is_empty() {
        bail!("{}: no group directories: not a backup", args.dir.display());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut rebuilt = Vec::new();
    for (group, gdir) in &groups {
        let listing = Listing::read(gdir)?;
        let Some((_, _, base_path)) = listing
            .bases
            .iter()
            .rev()
            .find(|(_, clock, _)| *clock <= until)
        else {
            eprintln!(
                "group {group}: skipped: its first base is after the moment (the group did not \
                 exist yet, or the backup began later)"
            );
            continue;
        };
        let scratch = tempfile::tempdir().context("a scratch directory")?;
        let one = runtime.block_on(rebuild(*group, &listing, base_path, scratch.path(), until))?;
        eprintln!(
            "group {group}: at index {} ({}), {} keys",
            one.at.index,
            format_ms(one.at.clock_ms),
            one.records.len()
        );
        rebuilt.push(one);
    }
    if rebuilt.is_empty() {
        bail!("no group has a base at or before the moment: nothing to restore");
    }
    let moment = at_ms.map_or_else(|| "latest".to_string(), format_ms);
    let written = if args.rdb.as_os_str() == "-" {
        write_rdb(&rebuilt, std::io::stdout().lock(), &moment)?
    } else {
        let file = std::fs::File::create(&args.rdb)
            .with_context(|| format!("creating {}", args.rdb.display()))?;
        let written = write_rdb(&rebuilt, std::io::BufWriter::new(file), &moment)?;
        std::fs::File::open(&args.rdb)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", args.rdb.display()))?;
        written
    };
    eprintln!(
        "restored {} keys as of {moment} ({} expired by then, {} locks left out: RDB has no lock \
         type, {} copies of moving slots left out) to {}",
        written.keys,
        written.expired,
        written.locks,
        written.not_owned,
        args.rdb.display()
    );
    Ok(true)
}

/// `group` from its newest base at or before `until` and the entries after it.
async fn rebuild(
    group: GroupId,
    listing: &Listing,
    base_path: &Path,
    scratch: &Path,
    until: u64,
) -> anyhow::Result<Rebuilt> {
    let bytes =
        std::fs::read(base_path).with_context(|| format!("reading {}", base_path.display()))?;
    let (index, clock_ms, base) = decode_base(&bytes, base_path)?;
    let disk = FjallDisk::open(scratch, &FjallOptions::default())
        .map_err(|e| anyhow::anyhow!("a scratch disk: {e}"))?;
    // The nodes' default bound on sessions (a cluster whose nodes set another replays
    // differently: ARCHITECTURE.md, "Backups").
    let sessions_max = larder_storage::raft::state_machine::SESSIONS_MAX;
    let mut replay = Replay::from_base(disk, group, &base, clock_ms, sessions_max).await?;
    let mut reached = false;
    for (_, last, path) in &listing.entries {
        if *last <= index {
            continue;
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let rows = decode_entries(&bytes, path)?;
        if !replay.apply(&rows, until).await.with_context(|| {
            format!(
                "no restore point between the entries the backup holds around {}",
                path.display()
            )
        })? {
            reached = true;
            break;
        }
    }
    // Out of entries before the moment: fine at the end of the backup, but a later base means
    // the entries in between were never saved (a gap), and the moment cannot be rebuilt.
    let at = replay.at();
    if !reached
        && let Some((later, later_clock, _)) = listing.bases.iter().find(|(i, _, _)| *i > at.index)
    {
        bail!(
            "group {group}: the backup holds nothing between index {} ({}) and the base at index \
             {later} ({}): no restore point in between (the nodes' --retain-log was shorter than \
             the time between two backups)",
            at.index,
            format_ms(at.clock_ms),
            format_ms(*later_clock)
        );
    }
    if !reached && until != u64::MAX {
        eprintln!(
            "group {group}: the backup ends at index {} ({}), before the moment: writes after \
             its last round are not in it",
            at.index,
            format_ms(at.clock_ms)
        );
    }
    let contents = replay.contents().await?;
    Ok(Rebuilt {
        group,
        at: replay.at(),
        owned: contents.owned,
        records: contents.records,
    })
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Written {
    keys: u64,
    expired: u64,
    locks: u64,
    not_owned: u64,
}

/// The group whose copy of each slot's keys is restored: the one owning the slot with the
/// newest epoch; for a slot no group owns (a move's cutover), the one with the newest epoch
/// among those holding keys of it (the group that gave it up: the target has not taken it).
fn slot_sources(groups: &[Rebuilt]) -> BTreeMap<u16, GroupId> {
    let epoch = |g: &Rebuilt| g.owned.as_ref().map_or(0, |o| o.epoch);
    let owns = |g: &Rebuilt, slot: u16| {
        g.owned
            .as_ref()
            .is_none_or(|o| ranges_contain(&o.ranges, slot))
    };
    let mut holders: BTreeMap<u16, BTreeSet<usize>> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        for (key, _) in &g.records {
            holders.entry(slot_of(key)).or_default().insert(i);
        }
    }
    holders
        .into_iter()
        .map(|(slot, holding)| {
            let owner = holding
                .iter()
                .filter(|&&i| owns(&groups[i], slot))
                .max_by_key(|&&i| (epoch(&groups[i]), std::cmp::Reverse(groups[i].group)))
                .or_else(|| {
                    holding
                        .iter()
                        .max_by_key(|&&i| (epoch(&groups[i]), std::cmp::Reverse(groups[i].group)))
                })
                .expect("a slot with keys has a holder");
            (slot, groups[*owner].group)
        })
        .collect()
}

fn write_rdb<W: std::io::Write>(
    groups: &[Rebuilt],
    out: W,
    moment: &str,
) -> anyhow::Result<Written> {
    let sources = slot_sources(groups);
    let mut writer = RdbWriter::new(out, &[("larder-restore-at", moment)])?;
    let mut written = Written::default();
    for g in groups {
        for (key, record) in &g.records {
            if sources.get(&slot_of(key)) != Some(&g.group) {
                written.not_owned += 1;
            } else if record.is_expired(g.at.clock_ms) {
                written.expired += 1;
            } else if let Value::Lock(_) = record.value {
                written.locks += 1;
            } else {
                writer.key(key, &record.value, record.expires_at_ms)?;
                written.keys += 1;
            }
        }
    }
    writer.finish()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use larder_core::kv::Record;

    use super::*;

    #[test]
    fn files_round_trip_and_damage_is_found() {
        let dir = tempfile::tempdir().expect("dir");
        let rows = vec![(5, Bytes::from_static(b"five")), (6, Bytes::new())];
        let path = dir
            .path()
            .join("entries-00000000000000000005-00000000000000000006.log");
        write_whole(&path, &encode_entries(&rows)).expect("write");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(decode_entries(&bytes, &path).expect("decode"), rows);
        let mut damaged = bytes.clone();
        damaged[20] ^= 1;
        let error = decode_entries(&damaged, &path).expect_err("damaged");
        assert!(error.to_string().contains("checksum"), "{error}");
        let base = encode_base(9, 1_800_000_000_000, b"state");
        let path = dir
            .path()
            .join("base-00000000000000000009-00000001800000000000.base");
        write_whole(&path, &base).expect("write");
        assert_eq!(
            decode_base(&base, &path).expect("decode"),
            (9, 1_800_000_000_000, b"state".to_vec())
        );
        assert!(
            decode_entries(&base, &path).is_err(),
            "a base is no entries file"
        );
        let listing = Listing::read(dir.path()).expect("list");
        assert_eq!(listing.bases.len(), 1);
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.saved_through(), Some(9));
        assert!(
            !dir.path()
                .join("base-00000000000000000009-00000001800000000000.tmp")
                .exists()
        );
    }

    #[test]
    fn entries_files_are_cut_at_their_size_bound() {
        let dir = tempfile::tempdir().expect("dir");
        let mut files = EntriesFiles::new(dir.path(), 10);
        let page = |from: u64, n: u64| -> Vec<(u64, Bytes)> {
            (from..from + n)
                .map(|i| (i, Bytes::from(vec![b'x'; 4])))
                .collect()
        };
        files.take(page(1, 2)).expect("take"); // 8 bytes: held
        files.take(page(3, 1)).expect("take"); // 12: a file of 1..=3
        files.take(page(4, 3)).expect("take"); // 12: a file of 4..=6
        files.take(page(7, 1)).expect("take"); // held until the end
        assert_eq!(files.finish().expect("finish"), 7);
        let listing = Listing::read(dir.path()).expect("list");
        let spans: Vec<_> = listing.entries.iter().map(|(a, b, _)| (*a, *b)).collect();
        assert_eq!(spans, vec![(1, 3), (4, 6), (7, 7)]);
        assert_eq!(
            EntriesFiles::new(dir.path(), 10).finish().expect("finish"),
            0,
            "no file for no entries"
        );
    }

    #[test]
    fn the_moment_is_rfc3339_or_unix_ms() {
        assert_eq!(parse_at("1800000000123").expect("ms"), 1_800_000_000_123);
        assert_eq!(
            parse_at("2027-01-15T08:00:00.123Z").expect("rfc3339"),
            1_800_000_000_123
        );
        assert!(parse_at("yesterday").is_err());
    }

    fn rebuilt(group: GroupId, owned: Option<(u64, Vec<(u16, u16)>)>, keys: &[&str]) -> Rebuilt {
        Rebuilt {
            group,
            at: Replayed {
                index: 1,
                clock_ms: 1_000,
            },
            owned: owned.map(|(epoch, ranges)| Ownership { epoch, ranges }),
            records: keys
                .iter()
                .map(|k| {
                    (
                        Bytes::copy_from_slice(k.as_bytes()),
                        Record {
                            value: Value::Str(Bytes::from_static(b"v")),
                            expires_at_ms: None,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Each slot's keys come from one group: its owner with the newest epoch, or while no
    /// group owns it (a move's cutover), the group that gave it up.
    #[test]
    fn each_slot_is_restored_from_the_group_that_owned_it() {
        let a = slot_of(b"a");
        let b = slot_of(b"b");
        // Group 1 gave slot `a` up at epoch 5 (it still holds its copy); group 2 holds a copy
        // but owns only slot `b` (epoch 4); group 3 (never set) owns everything at epoch 0.
        let groups = vec![
            rebuilt(1, Some((5, vec![])), &["a"]),
            rebuilt(2, Some((4, vec![(b, b)])), &["a", "b"]),
            rebuilt(3, None, &["b"]),
        ];
        let sources = slot_sources(&groups);
        assert_eq!(sources[&a], 1, "nobody owns it: the group that gave it up");
        assert_eq!(sources[&b], 2, "the owner with the newest epoch");
        let file = write_rdb(&groups, Vec::new(), "latest").expect("write");
        assert_eq!(
            file,
            Written {
                keys: 2,
                not_owned: 2,
                ..Written::default()
            }
        );
    }
}
