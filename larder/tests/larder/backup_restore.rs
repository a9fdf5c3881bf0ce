//! Backups with point-in-time restore, as an operator runs them: `larder up --retain-log 1h`
//! as a process; a first `larder backup` takes each group's base; then the data changes
//! (every key overwritten by several concurrent clients, enough writes for the groups to
//! snapshot and purge their logs, keys deleted and added, slots moved between groups); a second
//! `larder backup` saves the entries since, with no new base. `larder restore --at` the moment
//! between the two must give exactly the first state, and `larder restore` without it the
//! latest; the RDB files are read back key by key, and one is loaded into the cluster again
//! with `larder import`.

// A real-process test: real time, real threads, real files.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use larder_core::kv::Value;
use larder_core::kv::rdb::file::{Item, RdbFile};
use larder_core::kv::rdb::restore_value;

use crate::admin_grow::{
    LARDER, Processes, admin_succeeds, every_slot_led, start_up_with_groups, status, wait_for,
};

/// Keys overwritten between the two backups, by each of [`WRITERS`] clients.
const KEYS: usize = 1500;
const WRITERS: usize = 4;

fn larder(args: &[&str]) -> Output {
    Command::new(LARDER)
        .env(larder_real::SECRET_VAR, larder_real::TEST_SECRET)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run larder")
}

/// `larder <args>`, which must succeed; its stdout and stderr.
fn run(args: &[&str]) -> (String, String) {
    let output = larder(args);
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(output.status.success(), "larder {args:?}:\n{out}\n{err}");
    (out, err)
}

/// One `larder backup` round into `backup_dir`, with `--base-every` if given; its stdout.
fn backup_round(backup_dir: &str, centers: &str, base_every: Option<&str>) -> String {
    let mut args = vec!["backup", backup_dir, "--center", centers];
    args.extend(base_every.iter().flat_map(|every| ["--base-every", every]));
    run(&args).0
}

/// The keys of an RDB file: value and expiry.
fn read_rdb(path: &Path) -> BTreeMap<Bytes, (Value, Option<i64>)> {
    let file = std::fs::File::open(path).expect("open rdb");
    let mut reader = RdbFile::open(std::io::BufReader::new(file)).expect("rdb header");
    let mut keys = BTreeMap::new();
    while let Some(item) = reader.next_item().expect("rdb item") {
        let Item::Key(entry) = item else {
            panic!("unexpected {item:?}")
        };
        let value = restore_value(&entry.payload).expect("payload");
        keys.insert(entry.key, (value, entry.expires_at_ms));
    }
    keys
}

fn string(keys: &BTreeMap<Bytes, (Value, Option<i64>)>, key: &str) -> Option<String> {
    match keys.get(key.as_bytes()) {
        Some((Value::Str(text), _)) => Some(String::from_utf8_lossy(text).into_owned()),
        Some(other) => panic!("{key}: {other:?}"),
        None => None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

pub(crate) fn connect(proxy: std::net::SocketAddr) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{proxy}/")).expect("client");
    wait_for("a write through the proxy", Duration::from_secs(30), || {
        let mut connection = client.get_connection().map_err(|e| e.to_string())?;
        redis::cmd("SET")
            .arg("warm")
            .arg("up")
            .query::<()>(&mut connection)
            .map_err(|e| e.to_string())?;
        Ok(connection)
    })
}

/// A running cluster with the first state written and backed up once.
struct FirstBackup {
    // Declared first, so dropped (its processes stopped) before their directory goes.
    _processes: Processes,
    dir: tempfile::TempDir,
    addresses: crate::admin_grow::UpAddresses,
    redis: redis::Connection,
    backup_dir: String,
    /// What the first `larder backup` printed.
    out: String,
}

/// `larder up` (three groups, one per node, so the center splits nothing on its own), with
/// `--retain-log 1h` when `retain`, once every slot is led; the first state written; one
/// `larder backup` into `backup_dir`.
fn first_backup(retain: bool) -> FirstBackup {
    let dir = tempfile::tempdir().expect("dir");
    let mut processes = Processes {
        dir: dir.path().to_path_buf(),
        children: Vec::new(),
    };
    let mut extra = vec!["--metrics-listen", "127.0.0.1:0"];
    if retain {
        extra.extend_from_slice(&["--retain-log", "1h"]);
    } else {
        // One log entry per write, so the overwrites are enough entries for the groups'
        // snapshots to purge the log (coalesced, four writers' SETs share entries).
        extra.extend_from_slice(&["--coalesce-runners", "0"]);
    }
    let addresses = start_up_with_groups(&mut processes, "3", &extra);
    wait_for("every slot led", Duration::from_secs(30), || {
        every_slot_led(&status(&addresses.centers)?)
    });
    let mut redis = connect(addresses.proxy);
    write_first_state(&mut redis);
    let backup_dir = dir.path().join("backup");
    let backup_dir = backup_dir.to_str().expect("utf-8 path").to_string();
    let out = backup_round(&backup_dir, &addresses.centers, None);
    FirstBackup {
        _processes: processes,
        dir,
        addresses,
        redis,
        backup_dir,
        out,
    }
}

/// The first state: strings, a collection of each type, a key with a TTL, a lock.
fn write_first_state(redis: &mut redis::Connection) {
    let mut pipe = redis::pipe();
    for i in 0..KEYS * WRITERS {
        pipe.cmd("SET")
            .arg(format!("a:{i}"))
            .arg(format!("A-{i}"))
            .ignore();
    }
    pipe.cmd("HSET").arg("h").arg("f").arg("A").ignore();
    pipe.cmd("RPUSH").arg("l").arg("x").arg("y").ignore();
    pipe.cmd("SADD").arg("s").arg("m").ignore();
    pipe.cmd("ZADD").arg("z").arg(1.5).arg("m").ignore();
    pipe.cmd("SET")
        .arg("ttl")
        .arg("v")
        .arg("PX")
        .arg(600_000)
        .ignore();
    pipe.cmd("LOCK.ACQUIRE")
        .arg("lk")
        .arg("w")
        .arg(600_000)
        .ignore();
    pipe.query::<()>(redis).expect("first state");
}

/// Every `a:` key overwritten one command at a time by concurrent clients: thousands of log
/// entries per group, so its snapshots purge the log and only the retention keeps them.
fn overwrite_concurrently(proxy: std::net::SocketAddr) {
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            scope.spawn(move || {
                let mut redis = connect(proxy);
                for i in (writer * KEYS)..((writer + 1) * KEYS) {
                    redis::cmd("SET")
                        .arg(format!("a:{i}"))
                        .arg(format!("B-{i}"))
                        .query::<()>(&mut redis)
                        .expect("overwrite");
                }
            });
        }
    });
}

/// A moment between what was written before and what is written after.
fn a_moment_between() -> u64 {
    std::thread::sleep(Duration::from_millis(100));
    let moment = now_ms();
    std::thread::sleep(Duration::from_millis(100));
    moment
}

#[test]
fn a_backup_restores_the_moment_asked_and_the_latest() {
    let first_backup = first_backup(true);
    let FirstBackup {
        ref dir,
        ref addresses,
        ref backup_dir,
        ref out,
        ..
    } = first_backup;
    let mut redis = first_backup.redis;
    let centers = addresses.centers.clone();
    assert_eq!(out.matches("base at index").count(), 3, "{out}");
    let moment = a_moment_between();

    // The second state: the overwrites, one collection deleted, new keys, a move of slots.
    overwrite_concurrently(addresses.proxy);
    admin_succeeds(&[
        "move-slots",
        "0-2047",
        "--to",
        "2",
        "--wait",
        "--center",
        &centers,
    ]);
    let mut pipe = redis::pipe();
    pipe.cmd("DEL").arg("h").ignore();
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("b:{i}")).arg("new").ignore();
    }
    pipe.query::<()>(&mut redis).expect("second state");

    let out = backup_round(backup_dir, &centers, Some("1h"));
    assert!(!out.contains("base at index"), "no base due: {out}");
    assert!(!out.contains("GAP") && !out.contains("NOT SAVED"), "{out}");
    assert_eq!(out.matches(" entries (").count(), 3, "{out}");
    // A round with a base due saves the base, then the entries since the last saved one (none
    // here): no index is left between the two.
    let out = backup_round(backup_dir, &centers, Some("0s"));
    assert_eq!(out.matches("base at index").count(), 3, "{out}");
    assert_eq!(out.matches("no new entries").count(), 3, "{out}");

    // Restored at the moment: exactly the first state.
    let first = dir.path().join("first.rdb");
    let moment_arg = moment.to_string();
    let (_, report) = run(&[
        "restore",
        backup_dir,
        "--at",
        &moment_arg,
        "--rdb",
        first.to_str().expect("utf-8 path"),
    ]);
    assert!(report.contains("1 locks left out"), "{report}");
    assert!(
        !report.contains("the backup ends"),
        "entries after the moment: {report}"
    );
    let keys = read_rdb(&first);
    for i in 0..KEYS * WRITERS {
        assert_eq!(
            string(&keys, &format!("a:{i}")),
            Some(format!("A-{i}")),
            "{i}"
        );
    }
    assert!(
        !keys.keys().any(|k| k.starts_with(b"b:")),
        "nothing of later"
    );
    assert!(matches!(keys.get(&b"h"[..]), Some((Value::Hash(_), None))));
    assert!(matches!(keys.get(&b"l"[..]), Some((Value::List(l), None)) if l.len() == 2));
    assert!(matches!(keys.get(&b"s"[..]), Some((Value::Set(_), None))));
    assert!(matches!(keys.get(&b"z"[..]), Some((Value::ZSet(_), None))));
    let ttl = keys
        .get(&b"ttl"[..])
        .and_then(|(_, at)| *at)
        .expect("ttl kept");
    assert!(ttl as u64 > moment, "expires after the moment");
    assert_eq!(string(&keys, "warm"), Some("up".into()));
    assert_eq!(keys.len(), KEYS * WRITERS + 6, "and nothing else");

    // Restored without a moment: the latest state, after the move.
    let latest = dir.path().join("latest.rdb");
    run(&[
        "restore",
        backup_dir,
        "--rdb",
        latest.to_str().expect("utf-8 path"),
    ]);
    let keys = read_rdb(&latest);
    for i in 0..KEYS * WRITERS {
        assert_eq!(
            string(&keys, &format!("a:{i}")),
            Some(format!("B-{i}")),
            "{i}"
        );
    }
    assert_eq!(keys.keys().filter(|k| k.starts_with(b"b:")).count(), 100);
    assert!(!keys.contains_key(&b"h"[..]), "deleted");
    assert_eq!(keys.len(), KEYS * WRITERS + 100 + 5, "and nothing else");

    // The first state loaded into the cluster again.
    redis::cmd("FLUSHALL")
        .query::<()>(&mut redis)
        .expect("flushall");
    run(&[
        "import",
        first.to_str().expect("utf-8 path"),
        "--to",
        &addresses.proxy.to_string(),
    ]);
    let got: Option<String> = redis::cmd("GET").arg("a:7").query(&mut redis).expect("get");
    assert_eq!(got.as_deref(), Some("A-7"));
    let got: Option<String> = redis::cmd("HGET")
        .arg("h")
        .arg("f")
        .query(&mut redis)
        .expect("hget");
    assert_eq!(got.as_deref(), Some("A"));
    let size: usize = redis::cmd("DBSIZE").query(&mut redis).expect("dbsize");
    assert_eq!(size, KEYS * WRITERS + 6);
}

/// Without `--retain-log`, the groups' snapshots purge the entries before the second backup
/// saves them: it says so (a gap) and takes new bases, and a restore to a moment in the gap is
/// refused with the reason, not answered with an older state (PostgreSQL refuses a recovery
/// target its archive cannot reach the same way).
#[test]
fn a_restore_into_a_gap_is_refused_with_its_reason() {
    let first_backup = first_backup(false);
    let FirstBackup {
        ref dir,
        ref addresses,
        ref backup_dir,
        ..
    } = first_backup;
    let mut redis = first_backup.redis;
    let centers = addresses.centers.clone();
    let before = a_moment_between();
    overwrite_concurrently(addresses.proxy);
    // A moment after the purged entries, before the writes that precede the next bases.
    let during = a_moment_between();
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("c:{i}")).arg("later").ignore();
    }
    pipe.query::<()>(&mut redis).expect("later writes");
    let out = backup_round(backup_dir, &centers, None);
    assert_eq!(out.matches("GAP: entries").count(), 3, "{out}");
    assert_eq!(out.matches("base at index").count(), 3, "{out}");

    let rdb = dir.path().join("out.rdb");
    let rdb = rdb.to_str().expect("utf-8 path");
    let output = larder(&[
        "restore",
        backup_dir,
        "--at",
        &during.to_string(),
        "--rdb",
        rdb,
    ]);
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{error}");
    assert!(error.contains("no restore point in between"), "{error}");
    // Nor just after the first base: the entries after it are gone, and with them when they
    // were written, so no moment after the base can be shown to precede them.
    let output = larder(&[
        "restore",
        backup_dir,
        "--at",
        &before.to_string(),
        "--rdb",
        rdb,
    ]);
    assert!(!output.status.success());
    // After the gap, the backup answers.
    run(&["restore", backup_dir, "--rdb", rdb]);
    assert_eq!(string(&read_rdb(Path::new(rdb)), "a:3"), Some("B-3".into()));
}
