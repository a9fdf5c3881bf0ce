//! `larder import`: a Redis RDB file (`dump.rdb`, `BGSAVE`'s, `redis-cli --rdb`'s) into a
//! running cluster, through its proxy, as `RESTORE` commands.
//!
//! Why through the proxy and not into the groups' disks: every key then takes the path every
//! write takes (routing by slot, the hot-key limit, the Raft log of its group, a quorum's fsync,
//! the checks `RESTORE` makes of a payload), so an import is as durable and as checked as any
//! client's writes, works against a cluster that is serving, and needs nothing but a client's
//! access (and password). The price is speed: keys go one `RESTORE` each, pipelined in batches
//! over several connections (the proxy runs up to 64 pipelined commands of one group as one
//! log entry), not as sorted tables ingested whole.
//!
//! The file is read as a stream ([`larder_core::kv::rdb::file`]), so its size is bounded by the
//! disk, not memory: the importer holds a few batches of payloads at a time (one being filled,
//! one per connection in flight, as many queued).
//!
//! What each key becomes is counted in the [`ImportReport`]: imported; kept (it existed and
//! `--replace` was not given: `BUSYKEY`); expired (its TTL had passed: Redis drops such keys
//! when it loads a file too); in another database than `--db` (Larder has one keyspace); of a
//! type Larder has not (streams, modules' values); larger than a request may be; failed (any
//! other answer, with the key and the answer). `TRYAGAIN` (nothing was done: a group between
//! leaders, a slot moving) is retried. Nothing is dropped without being counted, and the
//! command exits non-zero if any key failed or the file could not be read to its end.

use std::collections::BTreeMap;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use larder_core::kv::rdb::file::{Item, KeyEntry, RdbFile};
use larder_core::resp::{self, Frame};
use serde::Serialize;

/// Commands written before their answers are read, at most.
pub const BATCH_DEFAULT: usize = 256;

/// Connections to the proxy, each sending its own batches.
pub const CONNECTIONS_DEFAULT: usize = 8;

/// Bytes of commands written before their answers are read, at most (one larger key goes
/// alone).
const BATCH_BYTES_MAX: usize = 4 << 20;

/// Times a key answered `TRYAGAIN` is sent again, with a growing pause, before it counts as
/// failed (`larder sync`: before the sync stops).
pub const RETRIES_MAX: u32 = 20;

/// The pause before the n-th sending again of a write answered `TRYAGAIN` is n times this.
pub const RETRY_PAUSE_STEP: Duration = Duration::from_millis(50);

/// Failed keys the report lists (all are counted).
const FAILURES_LISTED: usize = 20;

/// How long one answer may take before the import gives up on the connection.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// What to import, and where.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    pub file: PathBuf,
    /// The proxy, `HOST:PORT`.
    pub to: String,
    pub password: Option<String>,
    /// Overwrite keys that exist (`RESTORE … REPLACE`).
    pub replace: bool,
    /// The file's database whose keys are imported.
    pub db: u64,
    /// Commands per batch (written before their answers are read).
    pub batch: usize,
    /// Connections sending batches at once.
    pub connections: usize,
}

/// What became of the file's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub rdb_version: u16,
    /// The `redis-ver` the file names, if any.
    pub redis_version: Option<String>,
    pub imported: u64,
    /// Existed already and kept (no `--replace`).
    pub kept: u64,
    /// Their TTL had passed before they were sent.
    pub expired: u64,
    /// In another database of the file than the one imported.
    pub other_db: u64,
    /// Keys of types Larder has not, by type.
    pub skipped: BTreeMap<String, u64>,
    /// Objects too large for one request.
    pub oversized: u64,
    /// Function libraries (Larder runs no scripts).
    pub functions: u64,
    pub failed: u64,
    /// The first failures: key (as text) and answer.
    pub failures: Vec<(String, String)>,
    pub bytes_read: u64,
    /// Why the file was not read to its end, if it was not.
    pub stopped: Option<String>,
}

impl ImportReport {
    /// Whether every key of the file is accounted for and none failed.
    pub fn complete(&self) -> bool {
        self.failed == 0 && self.stopped.is_none()
    }
}

/// One `RESTORE` written and not yet answered.
struct Sent {
    key: Bytes,
    command: Vec<u8>,
    tries: u32,
}

/// A RESP connection to a proxy (blocking; `larder import`'s and `larder sync`'s).
pub struct Connection {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    /// Connects to `to` and authenticates with `password` if given.
    pub fn open(to: &str, password: Option<&str>) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(to).with_context(|| format!("connecting to {to}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        stream.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        let mut connection = Connection {
            stream,
            buffer: Vec::new(),
        };
        if let Some(password) = password {
            let mut out = Vec::new();
            resp::encode_request(&[&b"AUTH"[..], password.as_bytes()], &mut out);
            connection.stream.write_all(&out)?;
            match connection.answer()? {
                Frame::Simple(_) => {}
                other => bail!("AUTH refused: {}", describe(&other)),
            }
        }
        Ok(connection)
    }

    /// The next answer on the connection.
    pub fn answer(&mut self) -> anyhow::Result<Frame> {
        loop {
            if let Some((frame, used)) =
                resp::parse_frame(&self.buffer).context("the proxy's answer")?
            {
                self.buffer.drain(..used);
                return Ok(frame);
            }
            let mut chunk = [0u8; 16 << 10];
            let read = self.stream.read(&mut chunk).context("reading an answer")?;
            if read == 0 {
                bail!("the proxy closed the connection");
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

/// An answer as text, for a report.
pub fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Error(text) | Frame::Simple(text) => text.clone(),
        other => format!("{other:?}"),
    }
}

/// A key as text for the report.
fn printable(key: &[u8]) -> String {
    larder_core::hotkeys::printable_key(key, 200)
}

/// The wall clock decides which keys have expired, as Redis's load does.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The file, or standard input for `-` (`redis-cli --rdb - | larder import -`: a live
/// server's dataset with no copy on disk).
fn open_file(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(std::io::stdin()));
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(file))
}

/// Imports the file; `progress` is called after every batch with the report so far. Errors
/// only when the import cannot start or a connection fails; what happened to each key, and a
/// file that could not be read to its end, is in the report.
///
/// The file is read on this thread; `connections` threads each send batches over a
/// connection of their own, so the proxy runs several batches at once (it runs one
/// connection's pipeline in order). Each key is in one batch and the file holds each key once,
/// so their order does not matter.
pub fn import(
    config: &ImportConfig,
    mut progress: impl FnMut(&ImportReport),
) -> anyhow::Result<ImportReport> {
    let file = open_file(&config.file)?;
    let mut rdb = RdbFile::open(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("reading {}", config.file.display()))?;
    let connections = (0..config.connections.max(1))
        .map(|_| Connection::open(&config.to, config.password.as_deref()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut report = ImportReport {
        rdb_version: rdb.version(),
        ..ImportReport::default()
    };
    let batch_max = config.batch.max(1);
    let (batches, queue) = std::sync::mpsc::sync_channel::<Vec<Sent>>(connections.len());
    let queue = Mutex::new(queue);
    let imported = AtomicU64::new(0);
    // Set by a worker whose connection failed: the file is read no further.
    let lost = AtomicBool::new(false);
    let sent = std::thread::scope(|scope| {
        let workers: Vec<_> = connections
            .into_iter()
            .map(|mut connection| {
                let (queue, imported, lost) = (&queue, &imported, &lost);
                scope.spawn(move || {
                    let mut report = ImportReport::default();
                    loop {
                        let next = queue.lock().expect("queue lock").recv();
                        let Ok(batch) = next else {
                            return (report, None);
                        };
                        let before = report.imported;
                        if let Err(error) = send(&mut connection, batch, &mut report) {
                            // Take what is still queued, so the reader never waits on a full
                            // queue nobody takes from; it stops at its next batch.
                            lost.store(true, Ordering::Relaxed);
                            while queue.lock().expect("queue lock").recv().is_ok() {}
                            return (report, Some(error));
                        }
                        imported.fetch_add(report.imported - before, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let mut batch: Vec<Sent> = Vec::new();
        let mut batch_bytes = 0;
        let mut dispatch = |batch: Vec<Sent>, report: &mut ImportReport, offset: u64| {
            // The workers outlive the queue's sender, so this only fails if they panicked,
            // which the join below reports.
            let _ = batches.send(batch);
            report.bytes_read = offset;
            report.imported = imported.load(Ordering::Relaxed);
            progress(report);
        };
        while !lost.load(Ordering::Relaxed) {
            let item = match rdb.next_item() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(error) => {
                    report.stopped = Some(error.to_string());
                    break;
                }
            };
            match item {
                Item::Key(entry) if entry.db != config.db => report.other_db += 1,
                Item::Key(entry) => {
                    if entry.expires_at_ms.is_some_and(|at| at <= now_ms()) {
                        report.expired += 1;
                        continue;
                    }
                    let command = restore_command(&entry, config.replace);
                    batch_bytes += command.len();
                    batch.push(Sent {
                        key: entry.key,
                        command,
                        tries: 0,
                    });
                    if batch.len() >= batch_max || batch_bytes >= BATCH_BYTES_MAX {
                        dispatch(std::mem::take(&mut batch), &mut report, rdb.offset());
                        batch_bytes = 0;
                    }
                }
                Item::Skipped { db, .. } | Item::Oversized { db, .. } if db != config.db => {
                    report.other_db += 1
                }
                Item::Skipped { kind, .. } => {
                    *report.skipped.entry(kind.to_string()).or_default() += 1
                }
                Item::Oversized { .. } => report.oversized += 1,
                Item::Function => report.functions += 1,
            }
        }
        if !batch.is_empty() && !lost.load(Ordering::Relaxed) {
            dispatch(batch, &mut report, rdb.offset());
        }
        drop(batches);
        workers
            .into_iter()
            .map(|worker| worker.join().expect("an import worker panicked"))
            .collect::<Vec<_>>()
    });
    report.imported = 0;
    let mut lost = None;
    for (part, error) in sent {
        report.imported += part.imported;
        report.kept += part.kept;
        report.failed += part.failed;
        let room = FAILURES_LISTED.saturating_sub(report.failures.len());
        report.failures.extend(part.failures.into_iter().take(room));
        lost = lost.or(error);
    }
    if let Some(error) = lost {
        return Err(error.context(interrupted(&report)));
    }
    report.bytes_read = rdb.offset();
    report.redis_version = rdb
        .aux()
        .get(&b"redis-ver"[..])
        .map(|version| String::from_utf8_lossy(version).into_owned());
    progress(&report);
    Ok(report)
}

/// `RESTORE key ttl payload [REPLACE] [ABSTTL]`, encoded: the TTL as the file's absolute time.
fn restore_command(entry: &KeyEntry, replace: bool) -> Vec<u8> {
    let mut command = Vec::with_capacity(entry.payload.len() + entry.key.len() + 64);
    let expires_at_ms = entry.expires_at_ms.map(|at| at.max(0) as u64);
    restore_request(
        &entry.key,
        expires_at_ms,
        &entry.payload,
        replace,
        &mut command,
    );
    command
}

/// Appends `RESTORE key ttl payload [REPLACE] [ABSTTL]` to `out`: an expiry goes as its
/// absolute time (Unix ms), none as TTL 0 (`larder import`'s and `larder sync`'s writes).
pub fn restore_request(
    key: &[u8],
    expires_at_ms: Option<u64>,
    payload: &[u8],
    replace: bool,
    out: &mut Vec<u8>,
) {
    let ttl = expires_at_ms.unwrap_or(0).to_string();
    let mut args: Vec<&[u8]> = vec![b"RESTORE", key, ttl.as_bytes(), payload];
    if replace {
        args.push(b"REPLACE");
    }
    if expires_at_ms.is_some() {
        args.push(b"ABSTTL");
    }
    resp::encode_request(&args, out);
}

/// What an import that lost its connection had done: running it again without `--replace`
/// keeps what is there and goes on.
fn interrupted(report: &ImportReport) -> String {
    format!(
        "the import stopped after {} keys imported, {} kept and {} failed; running it again \
         keeps the keys imported (without --replace) and imports the rest",
        report.imported, report.kept, report.failed
    )
}

/// Writes a batch, reads its answers, and sends again (after a pause) what answered
/// `TRYAGAIN`, until every key is imported, kept or failed.
fn send(
    connection: &mut Connection,
    mut batch: Vec<Sent>,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    while !batch.is_empty() {
        let mut out = Vec::with_capacity(batch.iter().map(|sent| sent.command.len()).sum());
        for sent in &batch {
            out.extend_from_slice(&sent.command);
        }
        connection
            .stream
            .write_all(&out)
            .context("sending RESTOREs")?;
        let mut again = Vec::new();
        for mut sent in batch {
            match connection.answer()? {
                Frame::Simple(_) => report.imported += 1,
                Frame::Error(text) if text.starts_with("BUSYKEY") => report.kept += 1,
                Frame::Error(text) if text.starts_with("TRYAGAIN") && sent.tries < RETRIES_MAX => {
                    sent.tries += 1;
                    again.push(sent);
                }
                other => {
                    report.failed += 1;
                    if report.failures.len() < FAILURES_LISTED {
                        report
                            .failures
                            .push((printable(&sent.key), describe(&other)));
                    }
                }
            }
        }
        if let Some(tries) = again.iter().map(|sent| sent.tries).max() {
            // Nothing was done for these: wait for the group's leader or the slot's move.
            pause(RETRY_PAUSE_STEP * tries);
        }
        batch = again;
    }
    Ok(())
}

fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::net::TcpListener;

    use larder_core::resp::{Limits, parse_request};

    use super::*;

    /// A file of string keys, `name` = `name`, as RDB 9 writes them.
    fn rdb_of(keys: &[&str]) -> Vec<u8> {
        let mut file = b"REDIS0009\xfe\x00".to_vec();
        for key in keys {
            for _ in 0..2 {
                file.push(key.len() as u8);
                file.extend_from_slice(key.as_bytes());
            }
            file.insert(file.len() - 2 * (key.len() + 1), 0);
        }
        file.push(0xff);
        file.extend_from_slice(&0u64.to_le_bytes());
        file
    }

    /// A proxy that answers each `RESTORE` by its key's name: `ok…` OK, `busy…` BUSYKEY,
    /// `flaky…` TRYAGAIN the first two times and then OK, anything else an error.
    fn fake_proxy() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let address = listener.local_addr().expect("address").to_string();
        std::thread::spawn(move || {
            let tries = std::sync::Arc::new(Mutex::new(BTreeMap::<Bytes, u32>::new()));
            for stream in listener.incoming() {
                let mut stream = stream.expect("a connection");
                let tries = tries.clone();
                std::thread::spawn(move || {
                    let mut buffer = Vec::new();
                    loop {
                        while let Some((args, used)) =
                            parse_request(&buffer, &Limits::default()).expect("a request")
                        {
                            buffer.drain(..used);
                            let key = args[1].clone();
                            if key.starts_with(b"close") {
                                // Late, so the reader has filled the queue by then.
                                std::thread::sleep(Duration::from_millis(200));
                                return;
                            }
                            let answer: &[u8] = if key.starts_with(b"ok") {
                                b"+OK\r\n"
                            } else if key.starts_with(b"busy") {
                                b"-BUSYKEY Target key name already exists.\r\n"
                            } else if key.starts_with(b"flaky") {
                                let mut tries = tries.lock().expect("lock");
                                let count = tries.entry(key).or_default();
                                *count += 1;
                                if *count <= 2 {
                                    b"-TRYAGAIN no leader yet\r\n"
                                } else {
                                    b"+OK\r\n"
                                }
                            } else {
                                b"-ERR Bad data format\r\n"
                            };
                            stream.write_all(answer).expect("answer");
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                        }
                    }
                });
            }
        });
        address
    }

    /// An import of `file` into [`fake_proxy`], in batches of `batch` over two connections.
    fn to_fake_proxy(file: PathBuf, batch: usize) -> ImportConfig {
        ImportConfig {
            file,
            to: fake_proxy(),
            password: None,
            replace: false,
            db: 0,
            batch,
            connections: 2,
        }
    }

    /// Every key's answer is counted where it belongs: TRYAGAIN is sent again until it goes
    /// through, BUSYKEY is a kept key, any other error a failure listed with its answer, and
    /// the report is then not complete.
    #[test]
    fn each_answer_is_counted_and_tryagain_is_retried() {
        let dir = tempfile::tempdir().expect("a directory");
        let file = dir.path().join("dump.rdb");
        let keys = ["ok1", "busy1", "flaky1", "ok2", "bad1", "flaky2", "ok3"];
        std::fs::write(&file, rdb_of(&keys)).expect("write the file");
        let config = to_fake_proxy(file, 2);
        let report = import(&config, |_| {}).expect("import");
        assert_eq!(
            (report.imported, report.kept, report.failed),
            (5, 1, 1),
            "{report:#?}"
        );
        assert_eq!(
            report.failures,
            vec![("bad1".to_string(), "ERR Bad data format".to_string())]
        );
        assert!(!report.complete());
    }

    /// A connection the proxy closes ends the import with an error saying what was done,
    /// however many batches were still queued for the other connections: nothing waits
    /// forever.
    #[test]
    fn a_lost_connection_ends_the_import_with_what_was_done() {
        let dir = tempfile::tempdir().expect("a directory");
        let file = dir.path().join("dump.rdb");
        let mut names: Vec<String> = (0..200).map(|i| format!("ok{i}")).collect();
        // Both connections closed (the second by whichever survived the first), with most of
        // the file still to read.
        names.insert(20, "close1".into());
        names.insert(40, "close2".into());
        let keys: Vec<&str> = names.iter().map(String::as_str).collect();
        std::fs::write(&file, rdb_of(&keys)).expect("write the file");
        let config = to_fake_proxy(file, 1);
        let error = import(&config, |_| {}).expect_err("a connection was lost");
        let text = format!("{error:#}");
        assert!(text.contains("the import stopped after"), "{text}");
        assert!(text.contains("closed the connection"), "{text}");
    }
}
