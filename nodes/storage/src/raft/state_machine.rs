//! The KV state machine of one slot group, stored through [`Disk`].
//!
//! Layout in [`Space::State`]: `group (8 bytes, big-endian) ++ user key` -> encoded
//! [`Record`], so one group's data is one contiguous range (snapshots and, later, slot
//! migration scan it). In [`Space::Meta`], `applied/<group>` holds [`AppliedState`].
//!
//! Crash consistency: each apply call writes its state changes **and** the new applied marker
//! in one atomic, unsynced batch. A crash loses a suffix of such batches (the `Disk` contract),
//! leaving state and marker consistent; openraft then re-applies the lost entries from the
//! durable log. Installing a snapshot first stores the snapshot durably, then rewrites the
//! group's range; [`DiskStateMachine::open`] finishes an install a crash cut short.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use larder_core::GroupId;
use larder_core::bugs::{Bug, Bugs};
use larder_core::env::{
    Disk, DiskView, FaultPoint, FaultPoints, KeyPages, Space, WriteBatch, WriteOp,
};
use larder_core::kv::elements::{self, Access, Kind, Part, Window};
use larder_core::kv::{
    Command, Descend, GroupRead, Outcome, RandomDescent, Record, Reply, Scope, StepStamp, Value,
    execute_elements,
};
use larder_core::slots::{Ownership, ranges_contain, slot_of};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use larder_protocol::{SlotPage, SlotRead};

use super::row_cache::RowCache;
use super::rows::{self, Header, Row};
use super::sessions::SessionTable;
use super::{
    LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig, decode, encode,
};

/// How many entries one apply batch may hold before it is written out, so a long backlog
/// (a follower catching up) does not build one unbounded batch in memory.
const APPLY_BATCH_ENTRIES_MAX: usize = 1024;
/// Rows per page when a command reads a whole group.
const SCAN_PAGE_ROWS: usize = 1024;
/// Most keys one `KEYS` reply of one group may hold: beyond that the reply would stall the
/// node and the client; `SCAN` pages instead.
const KEYS_REPLY_MAX: usize = 1_000_000;
/// Rows per scan page when building a snapshot.
const SNAPSHOT_SCAN_PAGE_MAX: usize = 4096;

/// What the state machine has applied, persisted with every apply batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The largest entry timestamp applied. Entries apply at `max(entry time, this)`, so a
    /// leader whose clock is behind cannot make TTLs run backwards.
    pub clock_ms: u64,
    /// The slots the group owns, as its log last set them ([`Command::OwnSlots`]); `None`:
    /// never set, every key accepted (a group formed at bootstrap owns what the first table
    /// gives it; ownership is set explicitly before its slots ever move).
    pub owned: Option<Ownership>,
    /// The slot migration recording which keys of its slots change here (on the source).
    pub tracking: Option<Tracking>,
    /// Keys the group holds, as its applies counted them (a write that creates a key adds
    /// one, one that deletes it takes one away; an install sets it, `FLUSHALL` clears it):
    /// the figure the center's automatic splits start from (`GroupStatus::records_estimate`).
    /// It counts an expired key until a command deletes it, as `DBSIZE` does.
    pub records: u64,
    /// The highest stamp of a migration step applied here ([`StepStamp`]): a stamped
    /// `Ingest` or `TrackSlots` at or below it is late and changes nothing.
    pub step_stamp: Option<StepStamp>,
}

/// [`AppliedState`] as stored before migration steps were stamped (until stop 68): a data
/// directory of that version opens with no stamp applied.
#[derive(Serialize, Deserialize)]
struct AppliedStateUnstamped {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    clock_ms: u64,
    owned: Option<Ownership>,
    tracking: Option<Tracking>,
    records: u64,
}

/// [`AppliedState`] as stored before it counted its keys (until stop 35): a data directory of
/// that version opens, its count taken once by a scan (`DiskStateMachine::open`).
#[derive(Serialize, Deserialize)]
struct AppliedStateUncounted {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    clock_ms: u64,
    owned: Option<Ownership>,
    tracking: Option<Tracking>,
}

/// A slot migration's change record on its source group ([`Command::TrackSlots`]): every key of
/// `ranges` written from log index `since` on has a *dirty marker* (`dirty/<group><key>` in
/// [`Space::Meta`], valued with the index of its last change), so the copy can catch up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tracking {
    pub migration: u64,
    pub ranges: Vec<(u16, u16)>,
    pub since: u64,
}

/// The last write a client session had applied, and its reply, so a duplicate of that write
/// is answered from here instead of being applied again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    pub seq: u64,
    pub reply: Reply,
    /// Entry time of the session's last write; the least recently used session is forgotten
    /// first when there are more than [`SESSIONS_MAX`].
    pub last_ms: u64,
}

/// Sessions remembered per group by default (`NodeConfig::sessions_max`; each registration
/// carries its leader's). A forgotten session's late delivery is answered `SESSION_EXPIRED`
/// rather than applied, so the bound costs clients a new session, never a duplicate write.
pub const SESSIONS_MAX: usize = 4096;

/// What the state machine does with an entry, by its session.
#[derive(Debug)]
enum SessionVerdict {
    /// A new write (or one without a session): apply it.
    Apply,
    /// Already applied, or of a session the group forgot: answer this instead of applying.
    Answer(Reply),
    /// Open a session whose id is the entry's log index.
    Register,
}

/// What a read of the applied state found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    Reply(Reply),
    /// A key the read touches has expired by the node's clock but not by the group clock: the
    /// group clock must first advance to `to_ms` through the log, then the read runs again at
    /// the group clock.
    AdvanceClock {
        to_ms: u64,
    },
}

/// The data part of a snapshot (openraft carries the metadata beside it).
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    clock_ms: u64,
    owned: Option<Ownership>,
    tracking: Option<Tracking>,
    /// Dirty markers of a migration in progress: user key -> index of its last change.
    dirty: Vec<(Bytes, u64)>,
    /// User key -> encoded record.
    rows: Vec<(Bytes, Bytes)>,
    sessions: Vec<(u64, SessionEntry)>,
    step_stamp: Option<StepStamp>,
}

/// [`SnapshotBody`] as built before migration steps were stamped (until stop 68): a snapshot
/// of that version (stored by a node before its upgrade, or sent by a leader not yet
/// upgraded) installs with no stamp applied, as an applied state of that version opens.
/// (The other way needs nothing: a node of that version decodes a body of this one and
/// ignores the trailing stamp, as postcard leaves trailing bytes unread.)
#[derive(Serialize, Deserialize)]
struct SnapshotBodyUnstamped {
    clock_ms: u64,
    owned: Option<Ownership>,
    tracking: Option<Tracking>,
    dirty: Vec<(Bytes, u64)>,
    rows: Vec<(Bytes, Bytes)>,
    sessions: Vec<(u64, SessionEntry)>,
}

impl SnapshotBody {
    /// Decodes a snapshot's data of this version or the previous one.
    fn decode(data: &[u8]) -> Result<SnapshotBody, io::Error> {
        decode(data).or_else(|error| match decode::<SnapshotBodyUnstamped>(data) {
            Ok(old) => Ok(SnapshotBody {
                clock_ms: old.clock_ms,
                owned: old.owned,
                tracking: old.tracking,
                dirty: old.dirty,
                rows: old.rows,
                sessions: old.sessions,
                step_stamp: None,
            }),
            Err(_) => Err(error),
        })
    }
}

/// What a group's state machine holds ([`DiskStateMachine::contents`]).
#[derive(Debug, Default)]
pub struct Contents {
    pub applied: u64,
    pub clock_ms: u64,
    /// `None`: the group never had its slots set, and owns them all.
    pub owned: Option<Ownership>,
    pub records: Vec<(Bytes, Record)>,
}

/// A snapshot as stored in [`Space::Meta`].
#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// What a command was given to execute: the records of its keys, whole or (a collection at the
/// key of a command that names its elements) in part.
#[derive(Debug, Default)]
struct Loaded {
    /// Every key looked up, present or not.
    keys: std::collections::BTreeSet<Bytes>,
    records: BTreeMap<Bytes, Record>,
    /// The collections loaded in part, with their true lengths (and a list's window place).
    partial: BTreeMap<Bytes, Part>,
    /// The headers of the keys stored element by element.
    headers: BTreeMap<Bytes, Header>,
}

impl Loaded {
    fn execute(&self, command: &Command, now_ms: u64, bugs: &Bugs) -> Outcome {
        // The planted bug does not tell the command the true lengths.
        let lengths = if bugs.is_planted(Bug::ElementCountFromPart) {
            &BTreeMap::new()
        } else {
            &self.partial
        };
        if bugs.is_planted(Bug::FenceIgnoresToken) {
            return execute_elements(
                &self.fences_any_token(command, now_ms),
                now_ms,
                &self.records,
                lengths,
            );
        }
        execute_elements(command, now_ms, &self.records, lengths)
    }

    /// The planted mistake: each fence of a transaction is given the token its lock is held
    /// with, so it passes whenever the lock is held by anyone.
    fn fences_any_token(&self, command: &Command, now_ms: u64) -> Command {
        use larder_core::kv::lock::LockCommand;
        let mut command = command.clone();
        if let Command::Transaction { commands, .. } = &mut command {
            for inner in commands {
                if let Command::LockOp(LockCommand::Fence { name, token }) = inner
                    && let Some(Record {
                        value: Value::Lock(lock),
                        ..
                    }) = self.records.get(name)
                    && let Some((_, held)) = lock.held_at(now_ms)
                {
                    *token = held;
                }
            }
        }
        command
    }
}

/// An apply batch being built: written atomically with the applied marker by `flush`.
#[derive(Default)]
struct Pending {
    batch: WriteBatch,
    /// Keys the batch writes: an entry that loads one waits for the batch to land.
    written: std::collections::BTreeSet<Bytes>,
    /// Element ranges of collections the batch makes unreachable, deleted once it landed.
    garbage: Vec<(Vec<u8>, Vec<u8>)>,
    replies: Vec<(openraft::storage::ApplyResponder<TypeConfig>, Reply)>,
}

impl Pending {
    fn drop_generation(&mut self, group: GroupId, key: &[u8], header: &Header) {
        self.garbage
            .push(rows::element_range(group, key, header.generation));
    }
}

/// Whether `record` reads differently at `now_ms` than at the group clock `clock_ms` by time
/// alone ([`Record::lapses_between`]); the planted bug `lease-end-unlogged`
/// (`lease_ends_logged: false`) looks at the key's expiry only, as before locks had leases.
fn lapses_unlogged(record: &Record, clock_ms: u64, now_ms: u64, lease_ends_logged: bool) -> bool {
    if lease_ends_logged {
        record.lapses_between(clock_ms, now_ms)
    } else {
        record.is_expired(now_ms) && !record.is_expired(clock_ms)
    }
}

/// The keys an entry's command reads or writes: its keys, and the keys an `Ingest` writes.
fn written_keys(command: &Command) -> Box<dyn Iterator<Item = &Bytes> + '_> {
    match command {
        Command::Ingest { records, .. } => Box::new(records.iter().map(|(key, _)| key)),
        other => Box::new(other.keys().into_iter()),
    }
}

/// Snapshots a replica built and installed since it opened.
#[derive(Debug, Default)]
pub struct SnapshotCounts {
    pub built: std::sync::atomic::AtomicU64,
    pub installed: std::sync::atomic::AtomicU64,
}

/// The state machine of `group` on `disk`. Cloning shares it: the node keeps a clone to serve
/// linearizable reads.
#[derive(Clone)]
pub struct DiskStateMachine<D: Disk> {
    disk: D,
    group: GroupId,
    bugs: Bugs,
    points: FaultPoints,
    /// This replica's own bound on sessions, used only for a registration that carries none
    /// (logged before the bound travelled with registrations, `SessionSeq::register_bounded`).
    sessions_max: usize,
    applied: Arc<Mutex<AppliedState>>,
    sessions: Arc<Mutex<SessionTable>>,
    /// Serialises apply, snapshot build and install, so a snapshot's rows match its metadata.
    exclusive: Arc<futures::lock::Mutex<()>>,
    /// Reads hold it shared while they read the group clock and their keys (one `get` per key,
    /// each an await); apply holds it exclusively while it writes a batch and moves the
    /// applied marker, and while a `FLUSHALL` or a snapshot install rewrites the range. So a
    /// read sees the state between two apply batches, never half of one: an `MGET` cannot
    /// see half of an `MSET` (ARCHITECTURE.md, "Multi-key atomicity").
    view: Arc<tokio::sync::RwLock<()>>,
    /// Snapshots built here and installed here (from a leader: a catch-up too far behind for
    /// the log) since the replica opened, for the node's metrics; until there is one, there is
    /// no current snapshot (see `get_current_snapshot`).
    snapshot_counts: Arc<SnapshotCounts>,
    /// The node's row cache ([`RowCache`]); off (capacity 0) unless the node hands one in.
    rows: Arc<RowCache>,
}

fn group_prefix(group: GroupId) -> [u8; 8] {
    group.to_be_bytes()
}

fn state_key(group: GroupId, key: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&group_prefix(group));
    out.extend_from_slice(key);
    Bytes::from(out)
}

fn session_prefix(group: GroupId) -> Vec<u8> {
    let mut key = b"session/".to_vec();
    key.extend_from_slice(&group.to_be_bytes());
    key
}

fn session_key(group: GroupId, session: u64) -> Vec<u8> {
    let mut key = session_prefix(group);
    key.extend_from_slice(&session.to_be_bytes());
    key
}

fn session_end(group: GroupId) -> Vec<u8> {
    let mut key = session_prefix(group);
    key.push(0xff);
    key.extend_from_slice(&[0xff; 8]);
    key
}

/// Where `group`'s `Meta` records of one kind start: `kind/` ++ group.
fn meta_prefix(kind: &str, group: GroupId) -> Vec<u8> {
    let mut key = kind.as_bytes().to_vec();
    key.push(b'/');
    key.extend_from_slice(&group.to_be_bytes());
    key
}

/// End (exclusive) of `group`'s `Meta` records of one kind.
fn meta_end(kind: &str, group: GroupId) -> Vec<u8> {
    match group.checked_add(1) {
        Some(next) => meta_prefix(kind, next),
        // Past every `kind/` key (`0` follows `/`).
        None => format!("{kind}0").into_bytes(),
    }
}

/// The `Meta` record of the first log index this replica applied as an entry since its last
/// snapshot install ([`DiskStateMachine::entries_from`]).
const ENTRIES_FROM: &str = "entries-from";

/// Where `group`'s [`DiskStateMachine::entries_from`] is kept: the log store's purge deletes
/// every entry below it, however young (`DiskLogStore`'s retention).
pub(crate) fn entries_from_key(group: GroupId) -> Vec<u8> {
    meta_prefix(ENTRIES_FROM, group)
}

/// Most bytes of entries one [`DiskStateMachine::backup_entries`] page carries (one larger
/// entry travels alone).
pub const BACKUP_PAGE_BYTES_MAX: usize = 1 << 20;
/// Most entries one page carries.
pub const BACKUP_PAGE_ENTRIES_MAX: usize = 4096;

/// One page of a group's committed log entries for a backup ([`DiskStateMachine::backup_entries`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntriesPage {
    /// The first index this replica can serve: lower ones are purged, or came with a snapshot
    /// it installed (it never applied them as entries, and its log may hold others there).
    pub first: u64,
    /// The replica's last applied index: every entry served is at or below it, so committed.
    pub applied: u64,
    /// `(index, encoded entry)` from the asked index on, in order, without gaps.
    pub entries: Vec<(u64, Bytes)>,
}

fn dirty_prefix(group: GroupId) -> Vec<u8> {
    meta_prefix("dirty", group)
}

fn dirty_key(group: GroupId, key: &[u8]) -> Vec<u8> {
    let mut out = dirty_prefix(group);
    out.extend_from_slice(key);
    out
}

/// End (exclusive) of `group`'s dirty markers.
fn dirty_end(group: GroupId) -> Vec<u8> {
    meta_end("dirty", group)
}

/// Where `group`'s records of unreachable element ranges start: `garbage/` ++ group ++ the
/// range's start, valued with its end. Each is written in the apply batch that makes its range
/// unreachable and deleted once the range is, so a crash in between leaves the record, and
/// [`DiskStateMachine::collect_garbage`] finishes the deletion when the group opens.
fn garbage_prefix(group: GroupId) -> Vec<u8> {
    meta_prefix("garbage", group)
}

fn garbage_key(group: GroupId, start: &[u8]) -> Vec<u8> {
    let mut key = garbage_prefix(group);
    key.extend_from_slice(start);
    key
}

/// End (exclusive) of `group`'s garbage records.
fn garbage_end(group: GroupId) -> Vec<u8> {
    meta_end("garbage", group)
}

fn applied_key(group: GroupId) -> Vec<u8> {
    let mut key = b"applied/".to_vec();
    key.extend_from_slice(&group.to_be_bytes());
    key
}

/// Keys of `group`'s state range, counted in pages.
async fn count_keys<D: Disk>(disk: &D, group: GroupId) -> Result<u64, io::Error> {
    let mut pages = KeyPages::new(
        Space::State,
        &group_prefix(group),
        &group_end(group),
        SCAN_PAGE_ROWS,
    );
    let mut count = 0u64;
    while let Some(page) = pages.next(disk).await? {
        count += page.len() as u64;
    }
    Ok(count)
}

/// End (exclusive) of `group`'s state range.
fn group_end(group: GroupId) -> Vec<u8> {
    match group.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        // The last group's range ends past every 8-byte prefix.
        None => vec![0xff; 9],
    }
}

/// Deletes every state row of `group`, in pages, with `then` written alongside the last page,
/// and makes the row cache forget them: before the delete and after it, so a read between the
/// pages fills nothing that stays. The cache forgets even if the delete failed part way.
async fn delete_state_range<D: Disk>(
    disk: &D,
    row_cache: &RowCache,
    group: GroupId,
    then: Option<WriteBatch>,
) -> Result<(), io::Error> {
    let (start, end) = (group_prefix(group), group_end(group));
    forget_group(row_cache, group);
    let deleted = disk
        .delete_range_paged(Space::State, &start, &end, then)
        .await;
    forget_group(row_cache, group);
    Ok(deleted?)
}

/// The row cache forgets every state row of `group`.
fn forget_group(row_cache: &RowCache, group: GroupId) {
    row_cache.forget(group, &group_prefix(group), &group_end(group));
}

/// Deletes everything `group` keeps on `disk`: log, state, applied marker, sessions, vote,
/// purge mark and snapshot, so the group can later be hosted again from an empty replica (a
/// leftover purge mark or vote without its log would be an inconsistent Raft state). Unsynced
/// and paged: a crash may leave part of it, which is why a node wipes a group again before it
/// re-creates it.
/// The node's row cache forgets the group's rows (before and after the state range goes, so
/// no read in between leaves one behind).
pub(crate) async fn wipe_group<D: Disk>(
    disk: &D,
    row_cache: &RowCache,
    group: GroupId,
) -> Result<(), io::Error> {
    let start = group_prefix(group);
    let end = group_end(group);
    disk.delete_range_paged(Space::Log, &start, &end, None)
        .await?;
    delete_state_range(disk, row_cache, group, None).await?;
    disk.delete_range_paged(Space::Elements, &start, &end, None)
        .await?;
    disk.delete_range_paged(
        Space::Meta,
        &session_prefix(group),
        &session_end(group),
        None,
    )
    .await?;
    disk.delete_range_paged(Space::Meta, &dirty_prefix(group), &dirty_end(group), None)
        .await?;
    disk.delete_range_paged(
        Space::Meta,
        &garbage_prefix(group),
        &garbage_end(group),
        None,
    )
    .await?;
    let mut batch = WriteBatch::new();
    batch.delete(Space::Meta, applied_key(group));
    // The Raft metadata keys of `larder_core::env::Disk` (`kind/` ++ group, big-endian).
    // And the broken mark (`crate::broken`): a wiped replica is no longer broken.
    for kind in ["vote", "purged", "snapshot", "broken", ENTRIES_FROM] {
        let mut key = kind.as_bytes().to_vec();
        key.push(b'/');
        key.extend_from_slice(&group.to_be_bytes());
        batch.delete(Space::Meta, key);
    }
    disk.write(batch, false).await?;
    Ok(())
}

/// A dirty marker's value: the index of the key's last change.
pub(crate) fn decode_index(value: &[u8]) -> Result<u64, io::Error> {
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| invalid(format!("dirty marker of {} bytes", value.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The refusal of `command` by a group that owns `owned`: a key of a slot it does not own.
fn not_owner(owned: Option<&Ownership>, command: &Command) -> Option<Reply> {
    // Internal commands name no client keys (`Ingest` writes where ownership is moving).
    if command.is_internal() {
        return None;
    }
    let own = owned?;
    let slot = own.first_unowned(command.keys().into_iter().map(|k| k.as_ref()))?;
    Some(Reply::NotOwner {
        slot,
        epoch: own.epoch,
    })
}

/// Checks a received snapshot's data before any of it is stored: it decodes, and every row is
/// a record. Such a snapshot would otherwise be synced to disk first and then fail to decode
/// on every later open, so the replica could never start again; refused here, it costs the
/// sender a retry. Returns the decoded body.
fn checked_snapshot(data: &[u8]) -> Result<SnapshotBody, io::Error> {
    let body = SnapshotBody::decode(data)?;
    for (key, value) in &body.rows {
        Record::decode(value).map_err(|e| {
            invalid(format!(
                "snapshot row {:?}: {e}",
                String::from_utf8_lossy(&key[..key.len().min(64)])
            ))
        })?;
    }
    Ok(body)
}

/// Whether `data` is a snapshot this node would install ([`checked_snapshot`]); the network
/// handler asks before openraft sees it.
pub fn check_snapshot(data: &[u8]) -> Result<(), io::Error> {
    checked_snapshot(data).map(|_| ())
}

fn invalid(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

impl<D: Disk> DiskStateMachine<D> {
    /// Opens `group`'s state machine, finishing a snapshot install that a crash interrupted.
    pub async fn open(
        disk: D,
        group: GroupId,
        bugs: Bugs,
        points: FaultPoints,
        sessions_max: usize,
    ) -> Result<Self, io::Error> {
        let applied: AppliedState = match disk.get(Space::Meta, &applied_key(group)).await? {
            Some(bytes) => match decode(&bytes) {
                Ok(applied) => applied,
                // Older versions, each written again in this one with the next apply batch.
                Err(error) => {
                    if let Ok(old) = decode::<AppliedStateUnstamped>(&bytes) {
                        AppliedState {
                            last_applied: old.last_applied,
                            membership: old.membership,
                            clock_ms: old.clock_ms,
                            owned: old.owned,
                            tracking: old.tracking,
                            records: old.records,
                            step_stamp: None,
                        }
                    } else if let Ok(old) = decode::<AppliedStateUncounted>(&bytes) {
                        AppliedState {
                            last_applied: old.last_applied,
                            membership: old.membership,
                            clock_ms: old.clock_ms,
                            owned: old.owned,
                            tracking: old.tracking,
                            records: count_keys(&disk, group).await?,
                            step_stamp: None,
                        }
                    } else {
                        return Err(error);
                    }
                }
            },
            None => AppliedState::default(),
        };
        let mut sessions = SessionTable::default();
        let prefix = session_prefix(group);
        for (key, value) in disk
            .scan(Space::Meta, &prefix, Some(&session_end(group)), usize::MAX)
            .await?
        {
            let id = key
                .get(prefix.len()..)
                .and_then(|id| <[u8; 8]>::try_from(id).ok())
                .map(u64::from_be_bytes);
            let id =
                id.ok_or_else(|| invalid(format!("bad session key of {} bytes", key.len())))?;
            sessions.insert(id, decode(&value)?);
        }
        let machine = DiskStateMachine {
            disk,
            group,
            bugs,
            points,
            sessions_max: sessions_max.max(1),
            applied: Arc::new(Mutex::new(applied.clone())),
            sessions: Arc::new(Mutex::new(sessions)),
            exclusive: Arc::new(futures::lock::Mutex::new(())),
            view: Arc::new(tokio::sync::RwLock::new(())),
            snapshot_counts: Arc::default(),
            rows: Arc::new(RowCache::new(0, 0)),
        };
        let stored = machine.stored_snapshot().await?;
        if let Some(stored) = stored
            && stored.meta.last_log_id > applied.last_applied
        {
            tracing::info!(group, "finishing a snapshot install interrupted by a crash");
            machine
                .rewrite_from_snapshot(&stored.meta, &stored.data)
                .await?;
        }
        Ok(machine)
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    /// Serves this group's state rows from `rows` too ([`RowCache`]): the node's cache, shared
    /// by its groups. Call before the machine is handed to Raft; until then nothing is cached.
    /// The group's rows are forgotten first: what the cache held of an earlier incarnation of
    /// this replica matched what it wrote then, but the replica now starts from what the disk
    /// holds, and that must not rest on the argument that the two agree.
    pub fn with_row_cache(mut self, rows: Arc<RowCache>) -> Self {
        forget_group(&rows, self.group);
        self.rows = rows;
        self
    }

    /// `key`'s state row, from the row cache when it holds it. A read from disk fills the
    /// cache only for a client read (`fill`): applies on followers would fill it with rows
    /// nobody reads there.
    async fn state_row(&self, key: &[u8], fill: bool) -> Result<Option<Bytes>, io::Error> {
        self.state_row_at(state_key(self.group, key), fill).await
    }

    /// [`Self::state_row`] for a key already made a state key (`state_key`).
    async fn state_row_at(&self, full_key: Bytes, fill: bool) -> Result<Option<Bytes>, io::Error> {
        if let Some(row) = self.rows.get(&full_key) {
            return Ok(row);
        }
        let ticket = self.rows.ticket(self.group, &full_key);
        let row = self.disk.get(Space::State, &full_key).await?;
        if fill {
            self.rows.fill(ticket, full_key, row.clone());
        }
        Ok(row)
    }

    /// Deletes every row of this group in `space` (its state or its elements), in pages, with
    /// `then` written alongside the last page.
    async fn delete_group_range(
        &self,
        space: Space,
        then: Option<WriteBatch>,
    ) -> Result<(), io::Error> {
        if space == Space::State {
            return delete_state_range(&self.disk, &self.rows, self.group, then).await;
        }
        let (start, end) = (group_prefix(self.group), group_end(self.group));
        self.disk
            .delete_range_paged(space, &start, &end, then)
            .await?;
        Ok(())
    }

    /// Keys the group holds, as its applies counted them ([`AppliedState::records`]).
    pub fn records(&self) -> u64 {
        self.applied().records
    }

    /// Snapshots built and installed by this replica since it opened.
    pub fn snapshot_counts(&self) -> &SnapshotCounts {
        &self.snapshot_counts
    }

    /// What has been applied so far.
    pub fn applied(&self) -> AppliedState {
        self.applied.lock().expect("applied lock").clone()
    }

    /// The last entry applied, without copying the rest of [`AppliedState`]. Its effects are
    /// readable once it shows here, and no reply to its client was sent before.
    pub fn last_applied(&self) -> Option<LogId> {
        self.applied.lock().expect("applied lock").last_applied
    }

    /// Executes a read-only command against the applied state at `now = max(wall_ms, group
    /// clock)`, unless a key it touches is expired (or its lock's lease ended) at `now` but not
    /// yet at the group clock ([`Record::lapses_between`]):
    /// then answering would show an expiry the log does not hold (a later read on a replica
    /// whose clock is behind would see the key again), so it answers
    /// [`ReadOutcome::AdvanceClock`] and the node first advances the group clock through the
    /// log (ARCHITECTURE.md, "Expiry"). `wall_ms = 0` reads at the group clock, which never
    /// needs an advance.
    ///
    /// Linearizable only when the caller has first confirmed leadership and waited for the
    /// read index to be applied (`Raft::ensure_linearizable`).
    pub async fn read(&self, command: &Command, wall_ms: u64) -> Result<ReadOutcome, io::Error> {
        debug_assert!(!command.is_write(), "writes go through the log");
        // The planted bug reads key by key with apply batches landing in between.
        let _view = if self.bugs.is_planted(Bug::TornMultiKeyRead) {
            None
        } else {
            Some(self.view.read().await)
        };
        let (clock_ms, owned) = self.clock_and_ownership();
        let now_ms = wall_ms.max(clock_ms);
        // The planted bug is the old rule: expiry judged by the local clock alone.
        let judge_expiry = !self.bugs.is_planted(Bug::TtlLocalClockRead);
        let lease_ends_logged = !self.bugs.is_planted(Bug::LeaseEndUnlogged);
        let expires_unlogged = |record: &Record| {
            judge_expiry && lapses_unlogged(record, clock_ms, now_ms, lease_ends_logged)
        };
        if command.scope() == Scope::Group {
            return self
                .read_group(command, now_ms, owned.as_ref(), &expires_unlogged)
                .await;
        }
        if let Some(refusal) = not_owner(owned.as_ref(), command) {
            return Ok(ReadOutcome::Reply(refusal));
        }
        let loaded = self.load(command, true).await?;
        if loaded.records.values().any(expires_unlogged) {
            return Ok(ReadOutcome::AdvanceClock { to_ms: now_ms });
        }
        Ok(ReadOutcome::Reply(
            loaded.execute(command, now_ms, &self.bugs).reply,
        ))
    }

    /// The group clock and the slots the group owns, in one look under the lock, without
    /// copying the rest of the applied state.
    fn clock_and_ownership(&self) -> (u64, Option<Ownership>) {
        let applied = self.applied.lock().expect("applied lock");
        (applied.clock_ms, applied.owned.clone())
    }

    /// The reply of a write that would change nothing (`DEL` of a missing key, `SADD` of a
    /// member already there, `HSET` of the value a field has): `Some(reply)` when executing
    /// `command` on the state as applied now writes every record exactly as it is stored.
    /// `None` when it would change something, and whenever the log must decide: a session
    /// this group has no record of or has already seen at this sequence (the log answers
    /// duplicates and expired sessions), a key of a slot the group does not own, a key
    /// expired at `now = max(wall_ms, group clock)` but not at the group clock.
    ///
    /// Read as [`Self::read`] reads, under the view lock, so the session table and the
    /// records are looked at between the same two apply batches. Linearizable under the same
    /// condition (leadership confirmed, the read index applied); the node's
    /// `crate::unchanged` says why it may then answer without a log entry.
    pub async fn unchanged_reply(
        &self,
        command: &Command,
        wall_ms: u64,
        session: Option<crate::raft::SessionSeq>,
    ) -> Result<Option<Reply>, io::Error> {
        debug_assert!(command.is_write() && command.scope() == Scope::Keys);
        let _view = self.view.read().await;
        if let Some(session) = session {
            let sessions = self.sessions.lock().expect("sessions lock");
            match sessions.get(session.session) {
                Some(entry) if entry.seq < session.seq => {}
                _ => return Ok(None),
            }
        }
        let (clock_ms, owned) = self.clock_and_ownership();
        if not_owner(owned.as_ref(), command).is_some() {
            return Ok(None);
        }
        let now_ms = wall_ms.max(clock_ms);
        let loaded = self.load(command, true).await?;
        if loaded.records.values().any(|record| {
            let lease_ends_logged = !self.bugs.is_planted(Bug::LeaseEndUnlogged);
            lapses_unlogged(record, clock_ms, now_ms, lease_ends_logged)
        }) {
            return Ok(None);
        }
        let outcome = loaded.execute(command, now_ms, &self.bugs);
        let unchanged = outcome
            .writes
            .iter()
            .all(|(key, written)| loaded.records.get(key) == written.as_ref());
        Ok(
            (unchanged && !matches!(outcome.reply, Reply::NotOwner { .. }))
                .then_some(outcome.reply),
        )
    }

    /// `KEYS pattern`, a `SCAN` step, `RANDOMKEY` and `DBSIZE` over the group: a paged scan of
    /// its state range (a `SCAN` step's from its `from` on, until it has looked at its count;
    /// `RANDOMKEY`'s from its point to the first live key, then from the start) folded
    /// through [`GroupRead`] (expired records are deleted lazily, so they may still be on disk;
    /// the fold skips them). A record `expires_unlogged` turns the answer into
    /// [`ReadOutcome::AdvanceClock`].
    async fn read_group(
        &self,
        command: &Command,
        now_ms: u64,
        owned: Option<&Ownership>,
        expires_unlogged: &impl Fn(&Record) -> bool,
    ) -> Result<ReadOutcome, io::Error> {
        let start = group_prefix(self.group).to_vec();
        let end = group_end(self.group);
        let mut from = start.clone();
        if let Some(start) = GroupRead::scan_from(command) {
            // A `SCAN` step goes on where the last one stopped.
            from.extend_from_slice(start);
        }
        if let Command::RandomKey { seed } = command {
            // From the key a walk down the group's keys settles on: two row reads a level.
            let first = self.disk.scan(Space::State, &start, Some(&end), 1).await?;
            let last = self.disk.last(Space::State, &start, &end).await?;
            let (Some((mut first, _)), Some((mut last, _))) = (first.into_iter().next(), last)
            else {
                return Ok(ReadOutcome::Reply(Reply::Nil));
            };
            let mut descent = RandomDescent::new(*seed);
            while let Descend::Seek { point, prefix_len } = descent.step(&first[8..], &last[8..]) {
                let point = [&start[..], &point[..]].concat();
                let found = self.disk.scan(Space::State, &point, Some(&end), 1).await?;
                // Past the point lies at least the last key, unless a write removed it since.
                let Some((at, _)) = found.into_iter().next() else {
                    break;
                };
                let Some(under) = at.get(..8 + prefix_len) else {
                    break;
                };
                let under_end = larder_core::kv::prefix_end(under).unwrap_or_else(|| end.clone());
                let Some((high, _)) = self.disk.last(Space::State, under, &under_end).await? else {
                    break;
                };
                (first, last) = (at, high);
            }
            from.extend_from_slice(&first[8..]);
            let found = self
                .fold_group(command, now_ms, owned, expires_unlogged, from)
                .await?;
            if found != ReadOutcome::Reply(Reply::Nil) {
                return Ok(found);
            }
            // Nothing live past the point: the group's first live key, if any.
            from = start;
        }
        self.fold_group(command, now_ms, owned, expires_unlogged, from)
            .await
    }

    /// [`DiskStateMachine::read_group`]'s fold of the group's state rows from `from` on.
    async fn fold_group(
        &self,
        command: &Command,
        now_ms: u64,
        owned: Option<&Ownership>,
        expires_unlogged: &impl Fn(&Record) -> bool,
        mut from: Vec<u8>,
    ) -> Result<ReadOutcome, io::Error> {
        let mut read = match GroupRead::new(command, now_ms, KEYS_REPLY_MAX) {
            Ok(read) => read,
            Err(reply) => return Ok(ReadOutcome::Reply(reply)),
        };
        let end = group_end(self.group);
        // A `SCAN` step of a few keys reads a page of about that many rows, not a full one;
        // `RANDOMKEY` wants one live key.
        let page = match command {
            Command::Scan { count, .. } => usize::try_from(*count)
                .map_or(SCAN_PAGE_ROWS, |count| count.clamp(1, SCAN_PAGE_ROWS)),
            Command::RandomKey { .. } => 16,
            _ => SCAN_PAGE_ROWS,
        };
        loop {
            let rows = self
                .disk
                .scan(Space::State, &from, Some(&end), page)
                .await?;
            let full = rows.len() == page;
            for (full_key, bytes) in &rows {
                let key = full_key.slice(8..);
                // Rows of slots that moved away and are not deleted yet are not the group's.
                if owned.is_some_and(|own| !own.owns(slot_of(&key))) {
                    continue;
                }
                // A collection's header is enough: the fold reads types and expiries.
                let record = Row::decode(bytes)?.shell();
                if expires_unlogged(&record) {
                    return Ok(ReadOutcome::AdvanceClock { to_ms: now_ms });
                }
                if let Err(reply) = read.feed(&key, &record) {
                    return Ok(ReadOutcome::Reply(reply));
                }
            }
            if !full {
                break;
            }
            let (last, _) = rows.last().expect("a full page has rows");
            from = last.to_vec();
            from.push(0);
        }
        Ok(ReadOutcome::Reply(read.finish()))
    }

    /// The current records of the command's keys. A command that names its elements
    /// ([`Command::elements`]) is given only those elements of the collection at its key, with
    /// the collection's length ([`Loaded::partial`]); any other sees whole values. `reading`:
    /// a read outside apply (it passes the fault point between keys).
    async fn load(&self, command: &Command, reading: bool) -> Result<Loaded, io::Error> {
        let mut loaded = Loaded::default();
        let accesses: BTreeMap<&Bytes, Access> =
            command.elements().unwrap_or_default().into_iter().collect();
        for (index, key) in command.keys().into_iter().enumerate() {
            if !loaded.keys.insert(key.clone()) {
                continue;
            }
            if reading && index > 0 {
                self.points.hit(FaultPoint::ReadBetweenKeys).await;
            }
            let Some(bytes) = self.state_row(key, reading).await? else {
                continue;
            };
            let record = match Row::decode(&bytes)? {
                Row::Whole(record) => record,
                Row::Collection(header) => {
                    loaded.headers.insert(key.clone(), header);
                    let (record, before) = match accesses.get(key) {
                        None => {
                            let record =
                                rows::whole_from_disk(&self.disk, self.group, key, &header).await?;
                            loaded.records.insert(key.clone(), record);
                            continue;
                        }
                        Some(Access::Window(window)) if header.kind == Kind::List => {
                            let (record, before) = rows::window_from_disk(
                                &self.disk, self.group, key, &header, *window,
                            )
                            .await?;
                            // The planted bug places a window at the tail at the head.
                            let misplaced = matches!(window, Window::Back(_))
                                && self.bugs.is_planted(Bug::ListWindowAtHead);
                            (record, if misplaced { 0 } else { before })
                        }
                        Some(Access::Named(elements)) if header.kind != Kind::List => {
                            let part = rows::part_from_disk(
                                &self.disk, self.group, key, &header, elements,
                            );
                            (part.await?, 0)
                        }
                        Some(Access::Run { from, count }) if header.kind != Kind::List => {
                            // The planted bug loads `count` rows whatever the length.
                            let len = if self.bugs.is_planted(Bug::ScanRunIgnoresSmall) {
                                u64::MAX
                            } else {
                                header.len
                            };
                            let run = rows::run_from_disk(
                                &self.disk, self.group, key, len, &header, from, *count,
                            );
                            (run.await?, 0)
                        }
                        // A list for a command that names elements, or another type for a
                        // list command: the type, expiry and length are all it can use.
                        Some(_) => (header.shell(), 0),
                    };
                    let len = header.len;
                    loaded.partial.insert(key.clone(), Part { len, before });
                    record
                }
            };
            loaded.records.insert(key.clone(), record);
        }
        Ok(loaded)
    }

    /// Stages `written` as the new value of `key` in `pending`: a whole row for strings and
    /// lists; for a collection its header and the element rows that changed from what `loaded`
    /// held, in the same generation while the collection lives on, in a new one (`index`)
    /// otherwise, the old one left for [`Pending::garbage`]. Returns the change in the number
    /// of keys the group holds (-1, 0 or 1).
    async fn store(
        &self,
        key: &Bytes,
        written: Option<Record>,
        loaded: &Loaded,
        index: u64,
        now_ms: u64,
        pending: &mut Pending,
    ) -> Result<i64, io::Error> {
        let full_key = state_key(self.group, key);
        let (existed, old) = if loaded.keys.contains(key) {
            (
                loaded.records.contains_key(key) || loaded.headers.contains_key(key),
                loaded.headers.get(key).copied(),
            )
        } else {
            // A key written without being loaded (`Ingest`): what its row holds now.
            match self.state_row_at(full_key.clone(), false).await? {
                Some(bytes) => (true, Row::header(&bytes)?),
                None => (false, None),
            }
        };
        let change = i64::from(written.is_some()) - i64::from(existed);
        pending.written.insert(key.clone());
        let kind = written.as_ref().and_then(|record| Kind::of(&record.value));
        let (Some(record), Some(kind)) = (written.as_ref(), kind) else {
            match &written {
                Some(record) => pending.batch.put(Space::State, full_key, record.encode()),
                None => pending.batch.delete(Space::State, full_key),
            };
            if let Some(old) = old {
                pending.drop_generation(self.group, key, &old);
            }
            return Ok(change);
        };
        // The collection lives on when the command saw it live and of this kind: it wrote
        // `record` from what it was given.
        let base = old.filter(|old| {
            old.kind == kind
                && old.expires_at_ms.is_none_or(|at| at > now_ms)
                && loaded.records.contains_key(key)
        });
        let Some(old) = base else {
            if let Some(old) = old {
                pending.drop_generation(self.group, key, &old);
            }
            let header = rows::lay_out(&mut pending.batch, self.group, key, record, index)
                .expect("a collection");
            pending.batch.put(Space::State, full_key, header.encode());
            return Ok(change);
        };
        let given = &loaded.records[key].value;
        let prefix = rows::element_prefix(self.group, key, old.generation);
        let mut header = Header {
            expires_at_ms: record.expires_at_ms,
            ..old
        };
        if let (Value::List(was), Value::List(now)) = (given, &record.value) {
            let part = loaded.partial.get(key).copied().unwrap_or(Part {
                len: old.len,
                before: 0,
            });
            let after = old.len.saturating_sub(part.before + was.len() as u64);
            let changes = elements::list_changes(old.head, part.before, after, was, now)
                .ok_or_else(|| invalid("a list's window changed length between kept elements"))?;
            for (sequence, value) in changes.put {
                pending.batch.put(
                    Space::Elements,
                    rows::element_key(&prefix, &sequence),
                    value,
                );
            }
            for sequence in changes.delete {
                pending
                    .batch
                    .delete(Space::Elements, rows::element_key(&prefix, &sequence));
            }
            header.len = part.before + now.len() as u64 + after;
            header.head = changes.head;
        } else {
            let changes = elements::changes(given, &record.value);
            for (element, value) in changes.put {
                pending
                    .batch
                    .put(Space::Elements, rows::element_key(&prefix, &element), value);
            }
            for element in changes.delete {
                pending
                    .batch
                    .delete(Space::Elements, rows::element_key(&prefix, &element));
            }
            header.len = (old.len + changes.added).saturating_sub(changes.removed);
            debug_assert!(
                loaded.partial.contains_key(key) || header.len == elements::len_of(&record.value)
            );
        }
        pending.batch.put(Space::State, full_key, header.encode());
        Ok(change)
    }

    /// One page of a slot migration's read (see [`SlotRead`]): records of `ranges` in key
    /// order after the cursor, at most `rows_max` records and at most `bytes_max` bytes (a
    /// larger record travels alone), scanning at most [`SCAN_PAGE_ROWS`] rows so a page of a group
    /// with few keys in the slots stays cheap. Consistent: taken under the read side of the
    /// view lock, so every record is as of the page's applied index. Called on the leader
    /// after a read-index round.
    ///
    /// Cost: one group's keys are stored in key order, not slot order, so a copy scans the
    /// whole group once (a slot-ordered layout would make it the range only).
    pub async fn read_slots(
        &self,
        ranges: &[(u16, u16)],
        read: &SlotRead,
        rows_max: usize,
        bytes_max: usize,
    ) -> Result<SlotPage, io::Error> {
        let _view = self.view.read().await;
        let applied = self.applied();
        let mut page = SlotPage {
            applied_index: applied.last_applied.map_or(0, |id| id.index()),
            clock_ms: applied.clock_ms,
            ..SlotPage::default()
        };
        let (space, prefix, end, after, since) = match read {
            SlotRead::Copy { after } => (
                Space::State,
                group_prefix(self.group).to_vec(),
                group_end(self.group),
                after,
                None,
            ),
            SlotRead::Changes { since, after } => {
                let tracking = applied.tracking.as_ref().ok_or_else(|| {
                    invalid("the group records no changes (no migration tracks it)")
                })?;
                if *since < tracking.since {
                    return Err(invalid(format!(
                        "changes since {since} asked, recorded only since {}",
                        tracking.since
                    )));
                }
                (
                    Space::Meta,
                    dirty_prefix(self.group),
                    dirty_end(self.group),
                    after,
                    Some(*since),
                )
            }
        };
        let mut from = prefix.clone();
        if let Some(after) = after {
            from.extend_from_slice(after);
            from.push(0);
        }
        let rows = self
            .disk
            .scan(space, &from, Some(&end), SCAN_PAGE_ROWS)
            .await?;
        let scanned_all = rows.len() < SCAN_PAGE_ROWS;
        let mut bytes = 0usize;
        let mut last_seen = None;
        for (full_key, value) in rows {
            let key = full_key.slice(prefix.len()..);
            if page.records.len() >= rows_max.max(1) {
                page.next = last_seen;
                return Ok(page);
            }
            // The cursor before this key: where the next page starts if this record does not
            // fit in this one.
            let before = last_seen.replace(key.clone());
            if !ranges_contain(ranges, slot_of(&key)) {
                continue;
            }
            let row = match since {
                None => Some(value),
                Some(since) => {
                    if decode_index(&value)? <= since {
                        continue;
                    }
                    self.disk
                        .get(Space::State, &state_key(self.group, &key))
                        .await?
                }
            };
            // The target ingests whole records and lays them out itself.
            let record = match row {
                Some(row) => Some(rows::whole_row(&self.disk, self.group, &key, &row).await?),
                None => None,
            };
            let size = key.len() + record.as_ref().map_or(0, |r| r.len());
            // Never past `bytes_max` (the target refuses a larger ingest): a record that would
            // cross it starts the next page, and one larger than it travels alone.
            if !page.records.is_empty() && bytes + size > bytes_max {
                page.next = before;
                return Ok(page);
            }
            bytes += size;
            page.records.push((key, record));
        }
        if !scanned_all {
            page.next = last_seen;
        }
        Ok(page)
    }

    /// `(last applied index, FNV-1a hash of every state row of the group)`: replicas that
    /// applied the same prefix of the log must agree on it.
    pub async fn digest(&self) -> Result<(u64, u64), io::Error> {
        let _exclusive = self.exclusive.lock().await;
        let applied = self.applied().last_applied.map_or(0, |id| id.index());
        let end = group_end(self.group);
        let mut from = group_prefix(self.group).to_vec();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        loop {
            let page = self
                .disk
                .scan(Space::State, &from, Some(&end), SNAPSHOT_SCAN_PAGE_MAX)
                .await?;
            let full = page.len() == SNAPSHOT_SCAN_PAGE_MAX;
            for (key, row) in &page {
                // The logical record, not the rows: unreachable element rows a crash left
                // behind differ between replicas that agree on every value.
                let value = rows::whole_row(&self.disk, self.group, &key[8..], row).await?;
                for byte in key.iter().chain(b"=").chain(value.iter()).chain(b";") {
                    hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
                }
            }
            match page.last() {
                Some((last, _)) if full => {
                    from = last.to_vec();
                    from.push(0);
                }
                _ => return Ok((applied, hash)),
            }
        }
    }

    async fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, io::Error> {
        match self.disk.read_snapshot(self.group).await? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Replaces the group's whole range with the snapshot's rows and marker.
    async fn rewrite_from_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: &[u8],
    ) -> Result<(), io::Error> {
        let body = SnapshotBody::decode(data)?;
        let applied = AppliedState {
            records: body.rows.len() as u64,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            clock_ms: body.clock_ms,
            owned: body.owned,
            tracking: body.tracking,
            step_stamp: body.step_stamp,
        };
        // No read may see the range half rewritten.
        let _view = self.view.write().await;
        // Sessions first: if a crash cuts this short, the old applied marker stays and `open`
        // redoes the whole install.
        self.disk
            .delete_range_paged(
                Space::Meta,
                &session_prefix(self.group),
                &session_end(self.group),
                None,
            )
            .await?;
        self.disk
            .delete_range_paged(
                Space::Meta,
                &dirty_prefix(self.group),
                &dirty_end(self.group),
                None,
            )
            .await?;
        // The element range goes whole below: no recorded garbage is left to collect.
        self.disk
            .delete_range_paged(
                Space::Meta,
                &garbage_prefix(self.group),
                &garbage_end(self.group),
                None,
            )
            .await?;
        self.delete_group_range(Space::Elements, None).await?;
        self.points.hit(FaultPoint::SnapshotInstalling).await;
        let mut fill = WriteBatch::new();
        for (key, index) in &body.dirty {
            fill.put(
                Space::Meta,
                dirty_key(self.group, key),
                index.to_be_bytes().to_vec(),
            );
        }
        // Collections are laid out element by element, all of the snapshot's generation (its
        // last index: every later entry's index is larger).
        let generation = meta.last_log_id.map_or(0, |id| id.index());
        for (key, value) in body.rows {
            let record = Record::decode(&value).map_err(|e| invalid(e.to_string()))?;
            let row = match rows::lay_out(&mut fill, self.group, &key, &record, generation) {
                None => value,
                Some(header) => header.encode(),
            };
            fill.put(Space::State, state_key(self.group, &key), row);
        }
        for (id, entry) in &body.sessions {
            fill.put(Space::Meta, session_key(self.group, *id), encode(entry));
        }
        fill.put(Space::Meta, applied_key(self.group), encode(&applied));
        self.delete_group_range(Space::State, Some(fill)).await?;
        *self.applied.lock().expect("applied lock") = applied;
        *self.sessions.lock().expect("sessions lock") = body.sessions.into_iter().collect();
        Ok(())
    }
}

impl<D: Disk> DiskStateMachine<D> {
    /// The first log index this replica applied as an entry since it last installed a
    /// snapshot (0: it never installed one). Entries from here to the applied index are the
    /// committed log as every replica has it.
    pub async fn entries_from(&self) -> Result<u64, io::Error> {
        match self
            .disk
            .get(Space::Meta, &entries_from_key(self.group))
            .await?
        {
            Some(bytes) => decode_index(&bytes),
            None => Ok(0),
        }
    }

    /// Committed entries from index `from` for a backup, at most `bytes_max` bytes (at least
    /// one entry): none when `from` is below [`EntriesPage::first`] (the caller has a gap) or
    /// above the applied index.
    pub async fn backup_entries(
        &self,
        from: u64,
        bytes_max: usize,
    ) -> Result<EntriesPage, io::Error> {
        let applied = self.applied().last_applied.map_or(0, |id| id.index());
        let floor = self.entries_from().await?;
        let mut end = applied.saturating_add(1);
        if self.bugs.is_planted(Bug::BackupReadsUnapplied)
            && let Some((last, _)) = self.disk.log_last(self.group).await?
        {
            end = end.max(last.saturating_add(1));
        }
        let lowest = self.disk.log_read(self.group, floor, end, 1).await?;
        let first = lowest.first().map_or(end, |(index, _)| *index);
        let mut page = EntriesPage {
            first,
            applied,
            entries: Vec::new(),
        };
        if from < first || from >= end {
            return Ok(page);
        }
        let rows = self
            .disk
            .log_read(self.group, from, end, BACKUP_PAGE_ENTRIES_MAX)
            .await?;
        let mut bytes = 0usize;
        let mut expected = from;
        for (index, row) in rows {
            if index != expected {
                // A hole below the applied index: only a purge racing this read makes one.
                break;
            }
            if !page.entries.is_empty() && bytes + row.len() > bytes_max {
                break;
            }
            bytes += row.len();
            page.entries.push((index, row));
            expected = index.saturating_add(1);
        }
        Ok(page)
    }

    /// The group's whole state now, for a backup: `(applied index, group clock, snapshot)`,
    /// the snapshot encoded as [`DiskStateMachine::restore_base`] takes it. `None` before
    /// anything is applied.
    pub async fn backup_base(&self) -> Result<Option<(u64, u64, Bytes)>, io::Error> {
        let Some((snapshot, clock_ms)) = self.materialize_with_clock().await? else {
            return Ok(None);
        };
        let index = snapshot.meta.last_log_id.map_or(0, |id| id.index());
        let data = snapshot.snapshot.into_inner();
        let stored = StoredSnapshot {
            meta: snapshot.meta,
            data,
        };
        Ok(Some((index, clock_ms, encode(&stored))))
    }

    /// Makes this (fresh) replica the state of a [`DiskStateMachine::backup_base`]: the first
    /// step of a restore, which then applies the entries after it.
    pub async fn restore_base(&mut self, base: &[u8]) -> Result<u64, io::Error> {
        let stored: StoredSnapshot = decode(base)?;
        let index = stored.meta.last_log_id.map_or(0, |id| id.index());
        let meta = stored.meta.clone();
        self.install_snapshot(&meta, std::io::Cursor::new(stored.data))
            .await?;
        Ok(index)
    }

    /// Applies `entries` (decoded log rows of [`DiskStateMachine::backup_entries`], in index
    /// order, following what was applied) as the group applied them: the second step of a
    /// restore.
    pub async fn restore_entries(&mut self, entries: Vec<super::Entry>) -> Result<(), io::Error> {
        let stream = futures::stream::iter(entries.into_iter().map(|entry| Ok((entry, None))));
        self.apply(stream).await
    }

    /// The record at `key` as applied now (a collection whole), lapsed or not: what
    /// `larder sync` copies of a key an entry wrote.
    pub async fn record(&self, key: &Bytes) -> Result<Option<Record>, io::Error> {
        // A command that needs whole values (`Command::elements` is `None`).
        let command = Command::Get { key: key.clone() };
        debug_assert!(command.elements().is_none());
        let mut loaded = self.load(&command, false).await?;
        Ok(loaded.records.remove(key))
    }

    /// The slots the group owns as applied now (`None`: never set, so all of them).
    pub fn ownership(&self) -> Option<Ownership> {
        self.clock_and_ownership().1
    }

    /// The group clock, the slots owned and every record, as applied now: what a restore
    /// writes out. Records are whole (collections with their elements).
    pub async fn contents(&self) -> Result<Contents, io::Error> {
        let Some(snapshot) = self.materialize().await? else {
            return Ok(Contents::default());
        };
        let body = SnapshotBody::decode(&snapshot.snapshot.into_inner())?;
        let mut records = Vec::with_capacity(body.rows.len());
        for (key, row) in body.rows {
            records.push((
                key,
                Record::decode(&row).map_err(|e| invalid(e.to_string()))?,
            ));
        }
        Ok(Contents {
            applied: snapshot.meta.last_log_id.map_or(0, |id| id.index()),
            clock_ms: body.clock_ms,
            owned: body.owned,
            records,
        })
    }

    /// The group's whole state as one snapshot, read now: what a follower too far behind for
    /// the log is sent ([`RaftStateMachine::get_current_snapshot`]).
    async fn materialize(&self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .materialize_with_clock()
            .await?
            .map(|(snapshot, _)| snapshot))
    }

    /// [`DiskStateMachine::materialize`], with the group clock the snapshot holds.
    async fn materialize_with_clock(&self) -> Result<Option<(Snapshot, u64)>, io::Error> {
        // The apply lock is held only to fix what the snapshot shows: the applied state, the
        // sessions and a point-in-time view of the disk. Scanning the range and encoding it
        // run while apply goes on: holding the lock through them stalled a group of 180k keys
        // for up to 2.4 s per snapshot, and its writes timed out.
        let (applied, sessions, view) = {
            let _exclusive = self.exclusive.lock().await;
            let sessions: Vec<(u64, SessionEntry)> = self
                .sessions
                .lock()
                .expect("sessions lock")
                .iter()
                .map(|(id, e)| (*id, e.clone()))
                .collect();
            (self.applied(), sessions, self.disk.view())
        };
        if applied.last_applied.is_none() {
            // Nothing applied, nothing to send (openraft then sends the log).
            return Ok(None);
        }
        // Whole records: a collection's elements are read from the same view as its header.
        let mut rows: Vec<(Bytes, Bytes)> = Vec::new();
        for (full_key, row) in scan_view(
            &view,
            Space::State,
            &group_prefix(self.group),
            &group_end(self.group),
        )
        .await?
        {
            let key = full_key.slice(8..);
            let value = match Row::header(&row)? {
                None => row,
                Some(header) => rows::whole_from_view(&view, self.group, &key, &header)
                    .await?
                    .encode(),
            };
            rows.push((key, value));
        }
        let prefix = dirty_prefix(self.group);
        let mut dirty = Vec::new();
        for (key, value) in scan_view(&view, Space::Meta, &prefix, &dirty_end(self.group)).await? {
            dirty.push((key.slice(prefix.len()..), decode_index(&value)?));
        }
        drop(view);
        let data = postcard::to_allocvec(&SnapshotBody {
            clock_ms: applied.clock_ms,
            owned: applied.owned.clone(),
            tracking: applied.tracking.clone(),
            dirty,
            rows,
            sessions,
            step_stamp: applied.step_stamp,
        })
        .map_err(|e| invalid(e.to_string()))?;
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership,
            },
            snapshot: std::io::Cursor::new(data),
        };
        Ok(Some((snapshot, applied.clock_ms)))
    }
}

/// A snapshot here is a promise, not a copy. The state machine keeps its state on the disk,
/// written with the applied marker in every apply batch, so what openraft needs of a "built"
/// snapshot (the point up to which it may purge the log) is only that the state up to that
/// point be durable: building one is a sync, O(1) whatever the group's size. The copy a
/// lagging follower needs is read from the state when it is sent
/// ([`DiskStateMachine::materialize`]).
///
/// Before, every build scanned, encoded and stored (synced) the whole group every
/// `snapshot_logs_since_last` entries, on every replica: at 100k keys in one group, a quarter
/// of the process's CPU under `redis-benchmark -t set`, growing with the group.
impl<D: Disk> RaftSnapshotBuilder<TypeConfig> for DiskStateMachine<D> {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let applied = {
            // Between two apply batches: the marker and the state it stands for were written
            // together, before the sync below.
            let _exclusive = self.exclusive.lock().await;
            self.applied()
        };
        // Every apply batch up to `applied` was written (unsynced) before this sync, so they
        // are durable when it returns, and the log below them can go. With fjall's one journal
        // for every space (and the simulator's disk, which keeps an ordered prefix of unsynced
        // writes), the purge that follows, written after those batches, could not outlive them
        // anyway; the sync keeps that from resting on the journal's order (a memtable flushed
        // to a table file on its own is durable out of that order).
        self.disk.write(WriteBatch::new(), true).await?;
        self.snapshot_counts
            .built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // openraft keeps only the meta of a built snapshot (its sm worker drops the data).
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership,
            },
            snapshot: std::io::Cursor::new(Vec::new()),
        })
    }
}

/// Every row of `space` in `[start, end)` as `view` shows it, read in bounded pages.
async fn scan_view<V: DiskView>(
    view: &V,
    space: Space,
    start: &[u8],
    end: &[u8],
) -> Result<Vec<(Bytes, Bytes)>, io::Error> {
    let mut rows = Vec::new();
    let mut from = start.to_vec();
    loop {
        let page = view
            .scan(space, &from, Some(end), SNAPSHOT_SCAN_PAGE_MAX)
            .await?;
        let full = page.len() == SNAPSHOT_SCAN_PAGE_MAX;
        if let Some((last, _)) = page.last() {
            from = last.to_vec();
            from.push(0);
        }
        rows.extend(page);
        if !full {
            return Ok(rows);
        }
    }
}

impl<D: Disk> RaftStateMachine<TypeConfig> for DiskStateMachine<D> {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.applied();
        Ok((applied.last_applied, applied.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let _exclusive = self.exclusive.lock().await;
        let mut applied = self.applied();
        let mut pending = Pending::default();
        let mut entries_pending = 0usize;
        while let Some((entry, responder)) = entries.try_next().await? {
            // A command loads its keys from disk: if an entry of this batch wrote one, the
            // batch is written first, so the load sees it (before this entry moves the
            // applied marker, which the write carries).
            if let EntryPayload::Normal(request) = &entry.payload
                && written_keys(&request.command).any(|key| pending.written.contains(key))
            {
                self.flush(&mut pending, &applied).await?;
                entries_pending = 0;
            }
            // FLUSHALL deletes the group's whole state range in pages, which cannot join the
            // entry's batch: write what came before, then delete. A crash in between leaves
            // the applied marker before this entry, so it is applied again (deleting is
            // idempotent).
            // Forgetting a migration's dirty markers is paged the same way.
            if let EntryPayload::Normal(request) = &entry.payload
                && let Command::UntrackSlots { migration, .. } = &request.command
                && applied
                    .tracking
                    .as_ref()
                    .is_some_and(|t| t.migration == *migration)
                && !self.bugs.is_planted(Bug::UntrackKeepsMarkers)
            {
                self.flush(&mut pending, &applied).await?;
                entries_pending = 0;
                self.disk
                    .delete_range_paged(
                        Space::Meta,
                        &dirty_prefix(self.group),
                        &dirty_end(self.group),
                        None,
                    )
                    .await?;
            }
            if let EntryPayload::Normal(request) = &entry.payload
                && request.command == Command::FlushAll
                && applied.tracking.is_none()
                && matches!(self.session_verdict(request.session), SessionVerdict::Apply)
            {
                self.flush(&mut pending, &applied).await?;
                entries_pending = 0;
                // No read may see the range half deleted.
                let _view = self.view.write().await;
                self.delete_group_range(Space::State, None).await?;
                // The headers are gone, so no element is reachable any more: deleted without
                // holding reads up.
                drop(_view);
                self.delete_group_range(Space::Elements, None).await?;
                applied.records = 0;
            }
            debug_assert!(
                entry.log_id.index() > applied.last_applied.as_ref().map_or(0, |id| id.index())
                    || applied.last_applied.is_none()
            );
            applied.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Reply::Ok,
                EntryPayload::Normal(request) => {
                    let clock_before = applied.clock_ms;
                    applied.clock_ms = applied.clock_ms.max(request.now_ms);
                    // Invariant: the applied clock (TTLs are judged by it) only grows, whatever
                    // the stamps of successive leaders.
                    debug_assert!(applied.clock_ms >= clock_before);
                    let verdict = self.session_verdict(request.session);
                    if let SessionVerdict::Answer(reply) = verdict {
                        reply
                    } else if let SessionVerdict::Register = verdict {
                        let id = entry.log_id.index();
                        let reply = Reply::Int(i64::try_from(id).unwrap_or(i64::MAX));
                        let session = crate::raft::SessionSeq {
                            session: id,
                            seq: 0,
                        };
                        // The bound the registration carries, the same on every replica; this
                        // replica's own only for one logged before the bound travelled.
                        let bound = request
                            .session
                            .and_then(|register| register.register_bound())
                            .filter(|_| !self.bugs.is_planted(Bug::SessionBoundLocal))
                            .unwrap_or(self.sessions_max);
                        self.remember(session, &reply, applied.clock_ms, &mut pending.batch);
                        self.evict_beyond(bound, &mut pending.batch);
                        reply
                    } else {
                        let refusal = not_owner(applied.owned.as_ref(), &request.command);
                        let index = entry.log_id.index();
                        let mut loaded = Loaded::default();
                        let outcome = if request.command == Command::FlushAll
                            && let Some(tracking) = &applied.tracking
                        {
                            // Deleting the range would not leave a dirty marker per key, and
                            // the copy would keep what was flushed here.
                            Outcome {
                                reply: Reply::error(format!(
                                    "ERR FLUSHALL refused while slots of this group move \
                                     (migration {})",
                                    tracking.migration
                                )),
                                writes: BTreeMap::new(),
                            }
                        } else if let Some(outcome) =
                            self.apply_migration(&request.command, index, &mut applied)
                        {
                            outcome
                        } else if request.command == Command::FlushAll {
                            // The deletion already happened above.
                            Outcome {
                                reply: Reply::Ok,
                                writes: BTreeMap::new(),
                            }
                        } else if let Some(reply) = refusal {
                            // A key of a slot the group does not own: not executed.
                            Outcome {
                                reply,
                                writes: BTreeMap::new(),
                            }
                        } else {
                            loaded = self.load(&request.command, false).await?;
                            loaded.execute(&request.command, applied.clock_ms, &self.bugs)
                        };
                        for (key, record) in outcome.writes {
                            if let Some(tracking) = &applied.tracking
                                && !request.command.is_internal()
                                && ranges_contain(&tracking.ranges, slot_of(&key))
                                && (record.is_some()
                                    || !self.bugs.is_planted(Bug::MigrationUntrackedDeletes))
                            {
                                pending.batch.put(
                                    Space::Meta,
                                    dirty_key(self.group, &key),
                                    index.to_be_bytes().to_vec(),
                                );
                            }
                            let change = self
                                .store(&key, record, &loaded, index, applied.clock_ms, &mut pending)
                                .await?;
                            applied.records = applied.records.saturating_add_signed(change);
                        }
                        if let Some(session) = request.session {
                            self.remember(
                                session,
                                &outcome.reply,
                                applied.clock_ms,
                                &mut pending.batch,
                            );
                        }
                        outcome.reply
                    }
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Reply::Ok
                }
            };
            if let Some(responder) = responder {
                pending.replies.push((responder, reply));
            }
            entries_pending += 1;
            if entries_pending >= APPLY_BATCH_ENTRIES_MAX {
                self.flush(&mut pending, &applied).await?;
                entries_pending = 0;
            }
        }
        self.flush(&mut pending, &applied).await
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let _exclusive = self.exclusive.lock().await;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: snapshot.into_inner(),
        };
        // Checked before it is stored (see `checked_snapshot`).
        checked_snapshot(&stored.data)?;
        // The entries before the snapshot were not applied here as entries (the log may hold
        // others at those indexes, appended by a deposed leader and never committed: openraft
        // truncates only a log that reaches the snapshot's index): a backup must not get
        // them from this replica. Made durable by the snapshot's synced save below.
        let first_applied = stored
            .meta
            .last_log_id
            .map_or(0, |id| id.index().saturating_add(1));
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Meta,
            entries_from_key(self.group),
            first_applied.to_be_bytes().to_vec(),
        );
        self.disk.write(batch, false).await?;
        // Durable first: if the rewrite below is cut short, `open` redoes it from here.
        self.disk.save_snapshot(self.group, encode(&stored)).await?;
        self.rewrite_from_snapshot(&stored.meta, &stored.data)
            .await?;
        self.snapshot_counts
            .installed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The state as it is now, with the applied position as its meta: at least as new as
    /// any snapshot built or installed here (the applied position only grows), and consistent
    /// with its data by construction. Its meta need not be durable: openraft purges the log
    /// only after a build (which syncs) or an install (stored synced before it is applied).
    ///
    /// `None` until a snapshot is built or installed in this process. openraft asks at start
    /// only for the meta; reading the whole group there would cost a scan of every group at
    /// every start, and fail a start on a record that is never read (a flipped bit is found
    /// when it is read, and retires the replica then). A leader sends a snapshot only to a
    /// follower that needs entries it purged, and it purges only after a build; when it
    /// starts with a purged log and no current snapshot, openraft builds one first.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let counts = &self.snapshot_counts;
        let taken = counts.built.load(std::sync::atomic::Ordering::Relaxed)
            + counts.installed.load(std::sync::atomic::Ordering::Relaxed);
        if taken == 0 {
            return Ok(None);
        }
        self.materialize().await
    }
}

impl<D: Disk> DiskStateMachine<D> {
    /// The effect of a slot-migration command on `applied` and the records it writes, or
    /// `None` for any other command.
    fn apply_migration(
        &self,
        command: &Command,
        index: u64,
        applied: &mut AppliedState,
    ) -> Option<Outcome> {
        let done = |reply: Reply, writes| Some(Outcome { reply, writes });
        match command {
            Command::OwnSlots { ownership } => {
                // Epochs only grow: a late or repeated entry changes nothing.
                if applied
                    .owned
                    .as_ref()
                    .is_none_or(|own| ownership.epoch > own.epoch)
                {
                    applied.owned = Some(ownership.clone());
                }
                done(Reply::Ok, BTreeMap::new())
            }
            // Late: it would record again for a migration that ended since (its untracking is
            // stamped above it) and hold the group's slots as moving for good.
            Command::TrackSlots { stamp, .. }
                if self.is_late(applied, *stamp, Bug::LateTrackingApplied) =>
            {
                done(Reply::Ok, BTreeMap::new())
            }
            Command::TrackSlots {
                migration,
                ranges,
                stamp,
            } => match &applied.tracking {
                Some(tracking) if tracking.migration != *migration => done(
                    Reply::error(format!(
                        "ERR slots of this group are already moving (migration {})",
                        tracking.migration
                    )),
                    BTreeMap::new(),
                ),
                // Repeated: the record keeps its start.
                Some(_) => {
                    applied.step_stamp = applied.step_stamp.max(*stamp);
                    done(Reply::Ok, BTreeMap::new())
                }
                None => {
                    applied.step_stamp = applied.step_stamp.max(*stamp);
                    applied.tracking = Some(Tracking {
                        migration: *migration,
                        ranges: ranges.clone(),
                        since: index,
                    });
                    done(Reply::Ok, BTreeMap::new())
                }
            },
            Command::UntrackSlots { migration, stamp } => {
                applied.step_stamp = applied.step_stamp.max(*stamp);
                // The markers were deleted before this entry (see `apply`).
                if applied
                    .tracking
                    .as_ref()
                    .is_some_and(|t| t.migration == *migration)
                {
                    applied.tracking = None;
                }
                done(Reply::Ok, BTreeMap::new())
            }
            Command::Ingest {
                clock_ms,
                records,
                stamp,
            } => {
                // A page stamped at or below one applied here is late: it was read from the
                // source before what a later page (or a later attempt of the copy, or its
                // clearing) wrote here, and would undo it.
                if self.is_late(applied, *stamp, Bug::LatePageApplied) {
                    return done(Reply::Ok, BTreeMap::new());
                }
                let mut writes = BTreeMap::new();
                for (key, record) in records {
                    // A group ingests slots it does not own: the target before the cutover
                    // gives it the moving slots, the source's deletes after the fence took
                    // them away, the target's on a rollback. A page for a slot it owns is a
                    // stale copy (a duplicated or retried message applied late) and would put
                    // back what clients changed since: cluster swarm seed 1278 lost an
                    // acknowledged RPUSH to a duplicated catch-up page applied after the
                    // cutover.
                    if applied
                        .owned
                        .as_ref()
                        .is_some_and(|own| own.owns(slot_of(key)))
                        && !self.bugs.is_planted(Bug::IngestIntoOwnedSlots)
                    {
                        continue;
                    }
                    let record = match record.as_deref().map(Record::decode).transpose() {
                        Ok(record) => record,
                        // All or nothing: a bad record (of a slot not owned; the others were
                        // skipped unread above) writes none of the batch.
                        Err(error) => {
                            return done(
                                Reply::error(format!("ERR ingest: record of {key:?}: {error}")),
                                BTreeMap::new(),
                            );
                        }
                    };
                    writes.insert(key.clone(), record);
                }
                applied.clock_ms = applied.clock_ms.max(*clock_ms);
                applied.step_stamp = applied.step_stamp.max(*stamp);
                done(Reply::Ok, writes)
            }
            _ => None,
        }
    }

    /// Whether a migration step stamped `stamp` is late: at or below a stamp `applied` has
    /// (unless `bug`, the planted bug of that kind of step, is planted).
    fn is_late(&self, applied: &AppliedState, stamp: Option<StepStamp>, bug: Bug) -> bool {
        stamp.is_some_and(|stamp| applied.step_stamp.is_some_and(|last| stamp <= last))
            && !self.bugs.is_planted(bug)
    }

    /// What to do with an entry of `session` (see [`SessionVerdict`]).
    fn session_verdict(&self, session: Option<crate::raft::SessionSeq>) -> SessionVerdict {
        let Some(session) = session else {
            return SessionVerdict::Apply;
        };
        if session.is_register() {
            return SessionVerdict::Register;
        }
        if self.bugs.is_planted(Bug::NoSessionDedup) {
            return SessionVerdict::Apply;
        }
        let sessions = self.sessions.lock().expect("sessions lock");
        let Some(entry) = sessions.get(session.session) else {
            // Ids come only from registrations, and a registered session leaves the table
            // only by eviction: this one was forgotten, and this may be a late copy of a
            // write it already applied.
            return SessionVerdict::Answer(Reply::error(larder_protocol::SESSION_EXPIRED));
        };
        if session.seq == entry.seq {
            SessionVerdict::Answer(entry.reply.clone())
        } else if session.seq < entry.seq {
            // The client has moved on; nobody waits for this answer.
            SessionVerdict::Answer(Reply::error(larder_protocol::STALE_DUPLICATE))
        } else {
            SessionVerdict::Apply
        }
    }

    /// Forgets the least recently used sessions while more than `bound` are remembered, in
    /// memory and in `batch`. Only a registration grows the table, and it evicts by the bound
    /// it carries ([`crate::raft::SessionSeq::register_bounded`]): every replica, whatever
    /// its own `sessions_max`, forgets the same sessions, so a late write of a forgotten
    /// session is refused everywhere or nowhere.
    fn evict_beyond(&self, bound: usize, batch: &mut WriteBatch) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        while sessions.len() > bound.max(1)
            && let Some(oldest) = sessions.evict_oldest()
        {
            batch.delete(Space::Meta, session_key(self.group, oldest));
        }
    }

    /// Records a session's latest write, in memory and in `batch`.
    fn remember(
        &self,
        session: crate::raft::SessionSeq,
        reply: &Reply,
        now_ms: u64,
        batch: &mut WriteBatch,
    ) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let entry = SessionEntry {
            seq: session.seq,
            reply: reply.clone(),
            last_ms: now_ms,
        };
        batch.put(
            Space::Meta,
            session_key(self.group, session.session),
            encode(&entry),
        );
        sessions.insert(session.session, entry);
        if self.bugs.is_planted(Bug::SessionBoundLocal)
            && sessions.len() > self.sessions_max
            && let Some(oldest) = sessions.evict_oldest()
        {
            // Planted bug: every write evicts by this replica's own bound, as before the bound
            // travelled with registrations.
            batch.delete(Space::Meta, session_key(self.group, oldest));
        }
    }

    /// Writes the batch and the applied marker atomically, then answers the clients: a reply is
    /// sent only once a read on this node would see its effect.
    async fn flush(&self, pending: &mut Pending, applied: &AppliedState) -> Result<(), io::Error> {
        let mut batch = std::mem::take(&mut pending.batch);
        for (start, end) in &pending.garbage {
            batch.put(Space::Meta, garbage_key(self.group, start), end.clone());
        }
        if !self.bugs.is_planted(Bug::AppliedMarkerLost) {
            batch.put(Space::Meta, applied_key(self.group), encode(applied));
        }
        // The state rows the batch writes, for the row cache (cheap: `Bytes` handles).
        let state_rows: Vec<(Bytes, Option<Bytes>)> = if self.rows.enabled() {
            batch
                .ops
                .iter()
                .filter_map(|op| match op {
                    WriteOp::Put {
                        space: Space::State,
                        key,
                        value,
                    } => Some((key.clone(), Some(value.clone()))),
                    WriteOp::Delete {
                        space: Space::State,
                        key,
                    } => Some((key.clone(), None)),
                    _ => None,
                })
                .collect()
        } else {
            Vec::new()
        };
        {
            // The batch, the in-memory marker (the group clock reads use) and the row cache
            // move together: no read runs between them.
            let _view = self.view.write().await;
            if let Err(error) = self.disk.write(batch, false).await {
                // Landed or not, the cache cannot tell: forget the group's rows.
                forget_group(&self.rows, self.group);
                return Err(error.into());
            }
            *self.applied.lock().expect("applied lock") = applied.clone();
            // The planted bug forgets to tell the cache of deletions.
            let keeps_deleted = self.bugs.is_planted(Bug::RowCacheKeepsDeleted);
            self.rows.wrote(
                self.group,
                state_rows
                    .iter()
                    .filter(|(_, row)| row.is_some() || !keeps_deleted)
                    .map(|(key, row)| (key, row.clone())),
            );
        }
        self.points.hit(FaultPoint::ApplyWritten).await;
        pending.written.clear();
        for (responder, reply) in pending.replies.drain(..) {
            responder.send(reply);
        }
        // Unreachable since the batch landed, and recorded in it: a crash before the records
        // go leaves them for `collect_garbage`.
        let mut records = WriteBatch::new();
        for (start, end) in std::mem::take(&mut pending.garbage) {
            self.disk
                .delete_range_paged(Space::Elements, &start, &end, None)
                .await?;
            records.delete(Space::Meta, garbage_key(self.group, &start));
        }
        if !records.is_empty() {
            self.disk.write(records, false).await?;
        }
        Ok(())
    }

    /// Deletes the element ranges that apply batches made unreachable and a crash kept from
    /// being deleted (their records, [`garbage_prefix`]). Run when the group opens, before
    /// anything applies.
    pub async fn collect_garbage(&self) -> Result<u64, io::Error> {
        let (prefix, end) = (garbage_prefix(self.group), garbage_end(self.group));
        let mut collected = 0;
        loop {
            let records = self
                .disk
                .scan(Space::Meta, &prefix, Some(&end), SCAN_PAGE_ROWS)
                .await?;
            if records.is_empty() {
                return Ok(collected);
            }
            let mut done = WriteBatch::new();
            for (key, range_end) in records {
                let start = &key[prefix.len()..];
                self.disk
                    .delete_range_paged(Space::Elements, start, &range_end, None)
                    .await?;
                done.delete(Space::Meta, key);
                collected += 1;
            }
            self.disk.write(done, false).await?;
        }
    }

    /// This group's change markers (the dirty markers of a migration out of it), up to
    /// `limit`. For audits: none may be left once no migration tracks the group.
    pub async fn change_markers(&self, limit: usize) -> Result<usize, io::Error> {
        let markers = self
            .disk
            .scan_keys(
                Space::Meta,
                &dirty_prefix(self.group),
                Some(&dirty_end(self.group)),
                limit,
            )
            .await?;
        Ok(markers.len())
    }

    /// Element rows of this group that no live header reaches (`(key, generation)` of no
    /// collection's header): what an interrupted deletion left and no garbage record covers.
    /// For audits: reads the group's whole element range.
    pub async fn unreachable_elements(&self) -> Result<u64, io::Error> {
        let mut pages = KeyPages::new(
            Space::Elements,
            &group_prefix(self.group),
            &group_end(self.group),
            SCAN_PAGE_ROWS,
        );
        let mut unreachable = 0;
        let mut last: Option<(Bytes, u64, bool)> = None;
        while let Some(rows) = pages.next(&self.disk).await? {
            for row in &rows {
                let (key, generation) = rows::element_owner(row)
                    .ok_or_else(|| invalid("an element row too short for its key"))?;
                let reachable = match &last {
                    Some((k, g, reachable)) if *k == key && *g == generation => *reachable,
                    _ => {
                        let header = match self
                            .disk
                            .get(Space::State, &state_key(self.group, &key))
                            .await?
                        {
                            Some(bytes) => Row::header(&bytes)?,
                            None => None,
                        };
                        let reachable = header.is_some_and(|h| h.generation == generation);
                        last = Some((key, generation, reachable));
                        reachable
                    }
                };
                if !reachable {
                    unreachable += 1;
                }
            }
        }
        Ok(unreachable)
    }
}

#[cfg(test)]
mod snapshot_check_tests {
    use super::*;

    fn body(rows: Vec<(Bytes, Bytes)>) -> Bytes {
        encode(&SnapshotBody {
            clock_ms: 7,
            owned: None,
            tracking: None,
            dirty: Vec::new(),
            rows,
            sessions: Vec::new(),
            step_stamp: None,
        })
    }

    #[test]
    fn a_snapshot_that_does_not_decode_is_refused_before_it_is_stored() {
        assert!(check_snapshot(b"not a snapshot at all").is_err());
        let bad_row = body(vec![(Bytes::from("k"), Bytes::from("not a record"))]);
        let error = check_snapshot(&bad_row).expect_err("a row that is no record");
        assert!(error.to_string().contains("snapshot row \"k\""), "{error}");
        let good = body(vec![(Bytes::from("k"), Record::string("v").encode())]);
        check_snapshot(&good).expect("a good snapshot");
        // Truncated anywhere, a good snapshot is refused (or, cut at a boundary, is a smaller
        // valid one): never a panic.
        for cut in 0..good.len() {
            let _ = check_snapshot(&good[..cut]);
        }
    }
}

#[cfg(test)]
mod upgrade_tests {
    use larder_core::env::FaultPoints;
    use larder_real::{FjallDisk, FjallOptions};

    use super::*;

    /// A data directory from before the applied state counted its keys opens, and the count
    /// is taken from the group's rows (not another group's); bytes that are neither version
    /// are still refused.
    #[tokio::test]
    async fn an_applied_state_from_before_keys_were_counted_opens_counted() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("disk");
        let mut batch = WriteBatch::new();
        for key in ["a", "b", "c"] {
            batch.put(
                Space::State,
                state_key(3, key.as_bytes()),
                Record::string("v").encode(),
            );
        }
        batch.put(
            Space::State,
            state_key(4, b"x"),
            Record::string("v").encode(),
        );
        let old = AppliedStateUncounted {
            last_applied: None,
            membership: StoredMembership::default(),
            clock_ms: 5,
            owned: None,
            tracking: None,
        };
        batch.put(Space::Meta, applied_key(3), encode(&old));
        batch.put(Space::Meta, applied_key(4), b"\xff\xff".to_vec());
        disk.write(batch, true).await.expect("write");
        let machine =
            DiskStateMachine::open(disk.clone(), 3, Bugs::default(), FaultPoints::none(), 16)
                .await
                .expect("opens");
        assert_eq!(machine.records(), 3);
        assert_eq!(machine.applied().clock_ms, 5);
        assert!(
            DiskStateMachine::open(disk, 4, Bugs::default(), FaultPoints::none(), 16)
                .await
                .is_err()
        );
    }

    /// A data directory from before migration pages were stamped opens with its count as
    /// stored (not taken again by a scan) and no stamp; once stamped, the stamp is kept.
    #[tokio::test]
    async fn an_applied_state_from_before_pages_were_stamped_opens_unstamped() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("disk");
        let mut batch = WriteBatch::new();
        batch.put(
            Space::State,
            state_key(3, b"a"),
            Record::string("v").encode(),
        );
        let old = AppliedStateUnstamped {
            last_applied: None,
            membership: StoredMembership::default(),
            clock_ms: 5,
            owned: None,
            tracking: None,
            records: 9,
        };
        batch.put(Space::Meta, applied_key(3), encode(&old));
        let stamped = AppliedState {
            clock_ms: 6,
            records: 1,
            step_stamp: Some(StepStamp { term: 2, seq: 3 }),
            ..AppliedState::default()
        };
        batch.put(Space::Meta, applied_key(4), encode(&stamped));
        disk.write(batch, true).await.expect("write");
        let machine =
            DiskStateMachine::open(disk.clone(), 3, Bugs::default(), FaultPoints::none(), 16)
                .await
                .expect("opens");
        assert_eq!(machine.records(), 9, "the stored count, not a scan's");
        assert_eq!(machine.applied().clock_ms, 5);
        assert_eq!(machine.applied().step_stamp, None);
        let machine = DiskStateMachine::open(disk, 4, Bugs::default(), FaultPoints::none(), 16)
            .await
            .expect("opens");
        assert_eq!(machine.applied(), stamped);
    }

    /// A snapshot built before migration steps were stamped (stored by a node before its
    /// upgrade, or sent by a leader not yet upgraded) is accepted and installs with no stamp;
    /// a snapshot of this version keeps its stamp, and bytes of neither are still refused.
    #[tokio::test]
    async fn a_snapshot_from_before_steps_were_stamped_installs_unstamped() {
        let tracking = Tracking {
            migration: 7,
            ranges: vec![(0, 9)],
            since: 2,
        };
        let old = encode(&SnapshotBodyUnstamped {
            clock_ms: 5,
            owned: None,
            tracking: Some(tracking.clone()),
            dirty: vec![(Bytes::from_static(b"a"), 3)],
            rows: vec![(Bytes::from_static(b"a"), Record::string("v").encode())],
            sessions: Vec::new(),
        });
        check_snapshot(&old).expect("the previous version's snapshot is accepted");
        assert!(check_snapshot(b"\xff\xff\xff").is_err());
        let dir = tempfile::tempdir().expect("dir");
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("disk");
        let mut machine =
            DiskStateMachine::open(disk.clone(), 3, Bugs::default(), FaultPoints::none(), 16)
                .await
                .expect("opens");
        machine
            .install_snapshot(&SnapshotMeta::default(), std::io::Cursor::new(old.to_vec()))
            .await
            .expect("installs");
        let applied = machine.applied();
        assert_eq!(
            (applied.clock_ms, applied.records, applied.step_stamp),
            (5, 1, None)
        );
        assert_eq!(applied.tracking, Some(tracking.clone()));
        drop(machine);
        let machine = DiskStateMachine::open(disk, 3, Bugs::default(), FaultPoints::none(), 16)
            .await
            .expect("reopens");
        assert_eq!(machine.applied().tracking, Some(tracking));
        let read = machine
            .read(&larder_core::kv::Command::get("a"), 0)
            .await
            .expect("reads");
        assert!(
            matches!(&read, ReadOutcome::Reply(Reply::Bulk(v)) if v.as_ref() == b"v"),
            "{read:?}"
        );
        let stamp = Some(StepStamp { term: 4, seq: 2 });
        let current = encode(&SnapshotBody {
            clock_ms: 6,
            owned: None,
            tracking: None,
            dirty: Vec::new(),
            rows: Vec::new(),
            sessions: Vec::new(),
            step_stamp: stamp,
        });
        assert_eq!(
            SnapshotBody::decode(&current).expect("decodes").step_stamp,
            stamp
        );
    }
}

#[cfg(test)]
mod session_bound_tests {
    use larder_core::env::FaultPoints;
    use larder_core::kv::Command;
    use larder_real::{FjallDisk, FjallOptions};
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderIdExt;

    use super::*;
    use crate::raft::{Entry, Request, SessionSeq};

    fn entry(index: u64, now_ms: u64, command: Command, session: SessionSeq) -> Entry {
        let leader =
            <openraft::alias::LeaderIdOf<crate::raft::TypeConfig> as RaftLeaderIdExt>::new_committed(1, 1);
        Entry::new_normal(
            openraft::LogId::new(leader, index),
            Request {
                now_ms,
                command,
                session: Some(session),
            },
        )
    }

    fn set(key: &str) -> Command {
        let args = ["SET", key, "v"].map(|arg| Bytes::from(arg.to_owned()));
        Command::parse(&args).expect("a SET")
    }

    /// The keys a replica with its own bound `sessions_max` holds after one log: three
    /// sessions registered with a bound of 2 (the third forgets the least recently used, the
    /// second), then a write of each.
    async fn replica_keys(sessions_max: usize, bugs: Bugs) -> Vec<Bytes> {
        let dir = tempfile::tempdir().expect("dir");
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("disk");
        let mut machine = DiskStateMachine::open(disk, 1, bugs, FaultPoints::none(), sessions_max)
            .await
            .expect("opens");
        let register = SessionSeq::register_bounded(2);
        let write = |session, key| (SessionSeq { session, seq: 1 }, set(key));
        let log = vec![
            entry(1, 1, Command::DbSize, register),
            entry(2, 2, Command::DbSize, register),
            {
                let (session, command) = write(1, "one");
                entry(3, 3, command, session)
            },
            entry(4, 4, Command::DbSize, register),
            {
                let (session, command) = write(2, "two");
                entry(5, 5, command, session)
            },
            {
                let (session, command) = write(4, "four");
                entry(6, 6, command, session)
            },
        ];
        machine.restore_entries(log).await.expect("applies");
        let mut keys: Vec<Bytes> = machine
            .contents()
            .await
            .expect("contents")
            .records
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        keys.sort();
        keys
    }

    /// Replicas configured with different bounds forget the same sessions: the registrations'
    /// bound (2) rules, so session 2's write is refused on both, whatever their own bound.
    #[tokio::test]
    async fn replicas_with_different_bounds_forget_the_same_sessions() {
        let expected = vec![Bytes::from("four"), Bytes::from("one")];
        assert_eq!(replica_keys(2, Bugs::default()).await, expected);
        assert_eq!(replica_keys(64, Bugs::default()).await, expected);
    }

    /// With `session-bound-local` planted, the replica that keeps 64 sessions applies the
    /// write its peers refuse: the replicas diverge.
    #[tokio::test]
    async fn with_the_bound_local_the_replicas_diverge() {
        let mut bugs = Bugs::default();
        bugs.plant(Bug::SessionBoundLocal);
        assert_eq!(
            replica_keys(2, bugs.clone()).await,
            vec![Bytes::from("four"), Bytes::from("one")]
        );
        assert_eq!(
            replica_keys(64, bugs).await,
            vec![Bytes::from("four"), Bytes::from("one"), Bytes::from("two")]
        );
    }
}
