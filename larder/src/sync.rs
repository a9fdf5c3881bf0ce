//! `larder sync`: one-way cross-cluster sync. A target cluster (its proxy) is kept equal to a
//! source cluster: a standby in another region, or the new home of a cluster being moved.
//!
//! The command reads each source group as `larder backup` does (a base, then the committed
//! entries since, from the leader or another replica), rebuilds the groups on scratch disks
//! with `larder_storage::cluster_sync::ClusterSync`, and writes to the target the value after
//! each operation (`RESTORE … REPLACE ABSTTL`, or `DEL`) through its proxy, so the target
//! applies them through its own Raft groups like any client write. Which group a slot is
//! copied from follows the source's slot moves (ARCHITECTURE.md, "Cross-cluster sync").
//!
//! The target must take no client writes (nothing stops them: a key written there is
//! overwritten at the next change of it at the source, and a key only the target has stays
//! until the sync restarts). Locks are not copied (`RESTORE` has no lock type). A restart
//! with the same `--scratch` goes on from the checkpoint saved after the last write to the
//! target (`Checkpoints`); without one, it begins again from bases. Either way it deletes
//! from the target what the source does not hold.

// A command-line tool: real time, real threads, real files.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use larder_core::kv::Value;
use larder_core::kv::rdb::dump_payload;
use larder_core::resp::{self, Frame};
use larder_core::{GroupId, NodeId};
use larder_protocol::{ClusterStatus, read_base, read_entries};
use larder_real::{FjallDisk, FjallOptions, TcpNet};
use larder_storage::cluster_sync::{ClusterSync, SyncCheckpoint, SyncOp};
use larder_storage::restore::Replay;

use crate::admin::CenterArgs;
use crate::backup::{ask, replicas_to_ask, rounds};
use larder::import::{Connection, RETRIES_MAX, RETRY_PAUSE_STEP, describe, restore_request};

/// Writes to the target sent before their answers are read.
const PIPELINE_MAX: usize = 512;
/// Keys asked per `SCAN` of the target when the sync starts.
const SCAN_COUNT: &str = "1000";

#[derive(Args, Debug)]
pub struct SyncArgs {
    #[command(flatten)]
    pub center: CenterArgs,
    /// The target cluster's proxy, `host:port`.
    #[arg(long)]
    pub to: String,
    /// The target's password (`AUTH`), if it has one.
    #[arg(long, env = "LARDER_SYNC_TO_PASSWORD", hide_env_values = true)]
    pub to_password: Option<String>,
    /// Read the source this often until Ctrl-C (default: one round, which brings the target
    /// to the source as it is now). The source's nodes should keep their log (`larder up
    /// --retain-log`, `larder node --retain-log`) longer than the sync may lag behind them:
    /// a group whose replicas have purged the next entry is read again from a new base, a
    /// whole copy of it.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub every: Option<Duration>,
    /// Most keys the target may hold: the command keeps the set of keys it holds in memory.
    #[arg(long, default_value_t = 10_000_000)]
    pub keys_max: usize,
    /// Where the source groups are rebuilt (default: a temporary directory, removed at the
    /// end). Needs about as much room as the source's data. A directory given here also keeps
    /// a checkpoint after every write to the target, and a sync started again with it (and
    /// the same `--to`) goes on from there instead of copying everything again.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Most bytes of a group's source entries held in memory at once: a sync far behind
    /// applies and writes what it read before it reads on, so it never holds its whole lag.
    #[arg(long, default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub entries_held_bytes_max: u64,
}

/// The target: a RESP connection that takes the sync's writes.
struct Target {
    connection: Connection,
    /// Locks left out (no `RESTORE` payload for them).
    locks: u64,
    /// [`RETRY_PAUSE_STEP`], but in tests.
    retry_pause_step: Duration,
}

impl Target {
    /// Every key the target holds now, by `SCAN`.
    fn keys(&mut self) -> anyhow::Result<Vec<Bytes>> {
        let mut keys = Vec::new();
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let mut out = Vec::new();
            resp::encode_request(
                &[&b"SCAN"[..], &cursor, b"COUNT", SCAN_COUNT.as_bytes()],
                &mut out,
            );
            std::io::Write::write_all(&mut self.connection.stream, &out)?;
            let answer = self.connection.answer()?;
            let Frame::Array(Some(parts)) = answer else {
                bail!("SCAN on the target answered {}", describe(&answer));
            };
            let [Frame::Bulk(Some(next)), Frame::Array(Some(page))] = parts.as_slice() else {
                bail!("SCAN on the target answered an unexpected shape");
            };
            for key in page {
                if let Frame::Bulk(Some(key)) = key {
                    keys.push(key.clone());
                }
            }
            if next.as_ref() == b"0" {
                return Ok(keys);
            }
            cursor = next.clone();
        }
    }

    /// Writes `ops` in order, pipelined. A `TRYAGAIN` (the target's group is electing a
    /// leader or moving the slot) sends that write and every one after it again, in order,
    /// after a pause: each write sets a key to a value or deletes it, so writing again what
    /// was already written ends in the same state. Any other refusal stops the sync (the
    /// target would be left different from the source).
    fn write(&mut self, ops: Vec<SyncOp>) -> anyhow::Result<()> {
        let mut start = 0;
        let mut tries = 0;
        while start < ops.len() {
            let chunk = &ops[start..ops.len().min(start + PIPELINE_MAX)];
            let mut out = Vec::new();
            // The index in `chunk` of each write sent.
            let mut sent = Vec::new();
            for (at, op) in chunk.iter().enumerate() {
                match op {
                    SyncOp::Put { record, .. } if matches!(record.value, Value::Lock(_)) => {
                        if tries == 0 {
                            self.locks += 1;
                        }
                        continue;
                    }
                    SyncOp::Put { key, record } => {
                        let payload = dump_payload(&record.value);
                        restore_request(key, record.expires_at_ms, &payload, true, &mut out)
                    }
                    SyncOp::Del { key } => resp::encode_request(&[&b"DEL"[..], key], &mut out),
                }
                sent.push(at);
            }
            std::io::Write::write_all(&mut self.connection.stream, &out)
                .context("writing to the target")?;
            let mut again = None;
            for at in sent {
                let answer = self.connection.answer()?;
                match answer {
                    Frame::Simple(_) | Frame::Integer(_) => {}
                    Frame::Error(text) if text.starts_with("TRYAGAIN") && tries < RETRIES_MAX => {
                        again.get_or_insert(at);
                    }
                    other => {
                        let key = match &chunk[at] {
                            SyncOp::Put { key, .. } | SyncOp::Del { key } => key,
                        };
                        bail!(
                            "the target refused the write of {}: {}",
                            larder_core::hotkeys::printable_key(key, 200),
                            describe(&other)
                        )
                    }
                }
            }
            match again {
                Some(at) => {
                    tries += 1;
                    std::thread::sleep(self.retry_pause_step * tries);
                    start += at;
                }
                None => {
                    tries = 0;
                    start += chunk.len();
                }
            }
        }
        Ok(())
    }
}

/// `larder sync`: one round, or rounds every `--every` until Ctrl-C. False when a round could
/// not read every group.
pub fn sync(args: SyncArgs) -> anyhow::Result<bool> {
    let temporary;
    let scratch = match &args.scratch {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temporary = tempfile::tempdir().context("a scratch directory")?;
            temporary.path().to_path_buf()
        }
    };
    let mut target = Target {
        connection: Connection::open(&args.to, args.to_password.as_deref())?,
        locks: 0,
        retry_pause_step: RETRY_PAUSE_STEP,
    };
    let held = target.keys().context("listing the target's keys")?;
    println!("target {}: {} keys", args.to, held.len());
    // A scratch directory of the operator's keeps a checkpoint; a temporary one goes at the end.
    let mut checkpoints = Checkpoints {
        file: args.scratch.as_ref().map(|dir| dir.join(CHECKPOINT_FILE)),
        to: args.to.clone(),
        dirs: BTreeMap::new(),
    };
    let mut sync = match checkpoints.load()? {
        Some(saved) if saved.to == args.to => {
            checkpoints.resume(saved, &scratch, held, args.keys_max)?
        }
        Some(saved) => {
            // What another target holds says nothing of this one.
            println!(
                "the checkpoint in {} is of a sync to {}: starting from bases",
                scratch.display(),
                saved.to
            );
            ClusterSync::new(held, args.keys_max, Default::default())?
        }
        None => ClusterSync::new(held, args.keys_max, Default::default())?,
    };
    let mut first = true;
    rounds(&args.center, args.every, |runtime, net, status| {
        let mut round = Round {
            net,
            status,
            scratch: &scratch,
            entries_held_bytes_max: args.entries_held_bytes_max as usize,
            checkpoints: &mut checkpoints,
        };
        let read_all = runtime.block_on(round.run(&mut sync, &mut target))?;
        // Keys the target held in slots no source group holds: once every group has its
        // base, they are known not to be the source's.
        if first && read_all {
            target.write(sync.drop_strays())?;
            first = false;
        }
        let tally = sync.tally();
        let locks = match target.locks {
            0 => String::new(),
            locks => format!(", {locks} lock writes left out"),
        };
        println!(
            "synced: {} entries applied, {} puts, {} deletes, {} slots copied whole{locks}",
            tally.entries, tally.puts, tally.dels, tally.slot_copies
        );
        Ok(read_all)
    })
}

/// Removes the replay directories in `scratch` whose names start with `prefix`, but those
/// `keep` names (best effort: a directory left behind costs room, not correctness).
fn remove_replays(
    scratch: &std::path::Path,
    prefix: &str,
    keep: impl Fn(&str) -> bool,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(scratch)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && !keep(&name) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// The checkpoint's file in a `--scratch` directory.
const CHECKPOINT_FILE: &str = "checkpoint.json";

/// What a checkpoint file holds: the sync's checkpoint and each group's replay directory.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    /// The target it was made for (`--to`).
    to: String,
    sync: SyncCheckpoint,
    dirs: BTreeMap<GroupId, String>,
}

/// The sync's checkpoints in a `--scratch` directory (none in a temporary one): saved after
/// every write to the target, so a restarted sync goes on where the last one stopped, reading
/// a new base only of a group whose replay is not where the checkpoint says (it was applying
/// entries when the process stopped).
struct Checkpoints {
    file: Option<PathBuf>,
    to: String,
    /// Each group's replay directory (a name in the scratch directory).
    dirs: BTreeMap<GroupId, String>,
}

impl Checkpoints {
    fn load(&self) -> anyhow::Result<Option<Saved>> {
        let Some(file) = &self.file else {
            return Ok(None);
        };
        match std::fs::read(file) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} (remove it to sync from bases)", file.display())
            })?)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("reading {}", file.display())),
        }
    }

    /// Opens the replays `saved` names and goes on from it; removes every other replay.
    fn resume(
        &mut self,
        saved: Saved,
        scratch: &std::path::Path,
        held: Vec<Bytes>,
        keys_max: usize,
    ) -> anyhow::Result<ClusterSync<FjallDisk>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut replays = Vec::new();
        for (group, name) in &saved.dirs {
            let dir = scratch.join(name);
            if !dir.is_dir() {
                continue;
            }
            let disk = FjallDisk::open(&dir, &FjallOptions::default())
                .map_err(|e| anyhow::anyhow!("opening {}: {e}", dir.display()))?;
            let sessions_max = larder_storage::raft::state_machine::SESSIONS_MAX;
            if let Some(replay) = runtime.block_on(Replay::open(disk, *group, sessions_max))? {
                replays.push(replay);
            }
        }
        let (sync, left_out) =
            ClusterSync::resume(&saved.sync, replays, held, keys_max, Default::default())?;
        self.dirs = saved.dirs;
        self.dirs.retain(|group, _| !left_out.contains(group));
        remove_replays(scratch, "group-", |name| {
            self.dirs.values().any(|kept| kept == name)
        })?;
        let resumed: Vec<String> = sync
            .groups()
            .map(|(group, replay)| format!("{group} at entry {}", replay.at().index))
            .collect();
        println!(
            "resumed from the checkpoint: groups {}{}",
            resumed.join(", "),
            match left_out.is_empty() {
                true => String::new(),
                false => format!("; a new base for groups {left_out:?}"),
            }
        );
        Ok(sync)
    }

    /// Saves where `sync` stands, once `group`'s replay (the one that moved) is durable.
    async fn save(&self, sync: &ClusterSync<FjallDisk>, group: GroupId) -> anyhow::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        sync.sync_replay(group).await?;
        let saved = Saved {
            to: self.to.clone(),
            sync: sync.checkpoint(),
            dirs: self.dirs.clone(),
        };
        let written = file.with_extension("json.new");
        let mut out = std::fs::File::create(&written)
            .with_context(|| format!("creating {}", written.display()))?;
        std::io::Write::write_all(&mut out, &serde_json::to_vec(&saved)?)?;
        out.sync_all()?;
        std::fs::rename(&written, file)?;
        if let Some(dir) = file.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// One round over the source's groups.
struct Round<'a> {
    net: &'a TcpNet,
    status: &'a ClusterStatus,
    scratch: &'a std::path::Path,
    entries_held_bytes_max: usize,
    checkpoints: &'a mut Checkpoints,
}

impl Round<'_> {
    /// Brings the target up to every group's committed entries; false when a group could not
    /// be read from any replica (the next round tries again).
    async fn run(
        &mut self,
        sync: &mut ClusterSync<FjallDisk>,
        target: &mut Target,
    ) -> anyhow::Result<bool> {
        let mut read_all = true;
        for group in &self.status.groups {
            let mut failures = Vec::new();
            let mut done = false;
            for node in replicas_to_ask(group) {
                match self.group(sync, target, group.group, node).await {
                    Ok(()) => {
                        done = true;
                        break;
                    }
                    Err(error) => failures.push(format!("node {node}: {error:#}")),
                }
            }
            if !done {
                read_all = false;
                println!("group {}: NOT READ ({})", group.group, failures.join("; "));
            }
        }
        Ok(read_all)
    }

    /// Reads `group` from `node`: a base when it has none or after a gap, then its entries.
    async fn group(
        &mut self,
        sync: &mut ClusterSync<FjallDisk>,
        target: &mut Target,
        group: GroupId,
        node: NodeId,
    ) -> anyhow::Result<()> {
        let net = self.net;
        // A base, entries, and after a gap one more base and the entries after it.
        let mut bases = 0;
        loop {
            let Some(from) = sync.next(group) else {
                if bases == 2 || !self.base(sync, target, group, node).await? {
                    return Ok(()); // nothing applied yet
                }
                bases += 1;
                continue;
            };
            // Read up to the bound, apply and write, and read on: a sync far behind holds
            // one bound's worth of entries at a time, not its whole lag.
            let mut rows = Vec::new();
            let mut bytes = 0;
            let take = |page: Vec<(u64, Bytes)>| {
                bytes += page.iter().map(|(_, row)| row.len()).sum::<usize>();
                rows.extend(page);
                Ok(if bytes >= self.entries_held_bytes_max {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            };
            let read = read_entries(|read| ask(net, node, read), group, from, take).await?;
            if !rows.is_empty() {
                target.write(sync.entries(group, &rows).await?)?;
                self.checkpoints.save(sync, group).await?;
            }
            if read.stopped {
                continue;
            }
            if read.gap.is_none() || bases == 2 {
                return Ok(());
            }
            // The replica no longer holds what follows: start the group again from a base.
            println!(
                "group {group}: entries {}.. are no longer on node {node}; reading a new base",
                read.next
            );
            self.base(sync, target, group, node).await?;
            bases += 1;
        }
    }

    /// Starts `group` (again) from a new base read from `node`, on a scratch disk of its own
    /// (the previous one removed); false when the group has applied nothing yet.
    async fn base(
        &mut self,
        sync: &mut ClusterSync<FjallDisk>,
        target: &mut Target,
        group: GroupId,
        node: NodeId,
    ) -> anyhow::Result<bool> {
        let Some(base) = read_base(|read| ask(self.net, node, read), group).await? else {
            return Ok(false);
        };
        let name = format!("group-{group}-{}", base.index);
        let dir = self.scratch.join(&name);
        let disk = FjallDisk::open(&dir, &FjallOptions::default())
            .map_err(|e| anyhow::anyhow!("a scratch disk: {e}"))?;
        target.write(sync.base(group, disk, &base.data, base.clock_ms).await?)?;
        self.checkpoints.dirs.insert(group, name.clone());
        self.checkpoints.save(sync, group).await?;
        // The replay the base replaced is closed: its directory goes.
        remove_replays(self.scratch, &format!("group-{group}-"), |kept| {
            kept == name
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A scripted target: reads each pipeline the sync sends (what arrives until the sender
    /// has been `silent`, as the sync is while it waits for the answers), answers each write
    /// with `answer(key)`, and returns the keys of every pipeline it saw.
    fn scripted_target(
        silent: Duration,
        answer: impl Fn(&[u8]) -> &'static str + Send + 'static,
    ) -> (String, std::thread::JoinHandle<Vec<Vec<Bytes>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            stream.set_read_timeout(Some(silent)).expect("timeout");
            let mut pipelines = Vec::new();
            let mut buffer = Vec::new();
            let mut pending: Vec<Bytes> = Vec::new();
            loop {
                let mut chunk = [0u8; 16 << 10];
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        if pending.is_empty() {
                            continue;
                        }
                        let mut out = Vec::new();
                        for key in &pending {
                            out.extend_from_slice(answer(key).as_bytes());
                        }
                        stream.write_all(&out).expect("answer");
                        pipelines.push(std::mem::take(&mut pending));
                        continue;
                    }
                    Err(e) => panic!("{e}"),
                }
                while let Some((frame, used)) = resp::parse_frame(&buffer).expect("RESP") {
                    buffer.drain(..used);
                    let Frame::Array(Some(parts)) = frame else {
                        panic!("not a command")
                    };
                    let Frame::Bulk(Some(key)) = &parts[1] else {
                        panic!("no key")
                    };
                    pending.push(key.clone());
                }
            }
            pipelines
        });
        (address, server)
    }

    fn connect(address: &str) -> Target {
        Target {
            connection: Connection::open(address, None).expect("connect"),
            locks: 0,
            retry_pause_step: Duration::from_millis(1),
        }
    }

    fn deletes(count: usize) -> Vec<SyncOp> {
        (0..count)
            .map(|i| SyncOp::Del {
                key: Bytes::from(format!("k{i}")),
            })
            .collect()
    }

    #[test]
    fn writes_wait_for_answers_past_the_pipeline_bound() {
        let (address, server) = scripted_target(Duration::from_millis(300), |_| ":1\r\n");
        let mut target = connect(&address);
        target.write(deletes(PIPELINE_MAX + 88)).expect("written");
        drop(target);
        let sizes: Vec<usize> = server
            .join()
            .expect("server")
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [PIPELINE_MAX, 88]);
    }

    #[test]
    fn a_write_refused_with_tryagain_is_sent_again_with_those_after_it_up_to_the_bound() {
        // k1 is refused twice, then taken: k1 and k2 are sent again twice, in order.
        let refusals = std::sync::atomic::AtomicU32::new(0);
        // Short silences: a pipeline seen in two parts changes nothing below.
        let silent = Duration::from_millis(50);
        let (address, server) = scripted_target(silent, move |key| {
            if key == b"k1" && refusals.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                "-TRYAGAIN the group is electing a leader\r\n"
            } else {
                ":1\r\n"
            }
        });
        let mut target = connect(&address);
        target
            .write(deletes(3))
            .expect("written after two refusals");
        drop(target);
        let sent: Vec<Bytes> = server.join().expect("server").concat();
        assert_eq!(sent, ["k0", "k1", "k2", "k1", "k2", "k1", "k2"]);

        // Refused for ever: the sync stops after RETRIES_MAX sendings again, naming the key.
        let (address, server) = scripted_target(silent, |key| {
            if key == b"k1" {
                "-TRYAGAIN the slot is moving\r\n"
            } else {
                ":1\r\n"
            }
        });
        let mut target = connect(&address);
        let error = target.write(deletes(3)).expect_err("refused for ever");
        drop(target);
        assert!(
            error
                .to_string()
                .contains("refused the write of k1: TRYAGAIN"),
            "{error}"
        );
        let sent: Vec<Bytes> = server.join().expect("server").concat();
        let k1 = sent.iter().filter(|key| key.as_ref() == b"k1").count();
        assert_eq!(k1 as u32, 1 + RETRIES_MAX);
    }
}
