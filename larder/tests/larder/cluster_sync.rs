//! One-way cross-cluster sync as an operator runs it: two `larder up` clusters as processes,
//! `larder sync --every 100ms` from the first (three groups) to the second (two), holding one
//! page of source entries at a time (`--entries-held-bytes-max 1`), while the
//! first takes concurrent writes of every type, deletes, counters, an expiry, and a move of a
//! quarter of its slots between groups. The sync is then killed and started again (it resumes
//! from the checkpoint in its `--scratch`) after the last changes. Once the writes stop, the
//! second must hold exactly what the first does (every key's `DUMP` and expiry), and nothing
//! it held before the sync that the first does not.

// A real-process test: real time, real threads, real files.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::Duration;

use crate::admin_grow::{
    Processes, UpAddresses, admin_succeeds, every_slot_led, start_up_with_groups, status, wait_for,
};
use crate::backup_restore::connect;

/// Keys each writer overwrites while the sync runs.
const KEYS: usize = 400;
const WRITERS: usize = 3;

/// `larder up` with `groups` slot groups under `dir`, once every slot is led.
fn up(dir: &std::path::Path, groups: &str) -> (Processes, UpAddresses) {
    let mut processes = Processes {
        dir: dir.to_path_buf(),
        children: Vec::new(),
    };
    let addresses =
        start_up_with_groups(&mut processes, groups, &["--metrics-listen", "127.0.0.1:0"]);
    wait_for("every slot led", Duration::from_secs(30), || {
        every_slot_led(&status(&addresses.centers)?)
    });
    (processes, addresses)
}

/// Every key of the cluster behind `redis`: its `DUMP` payload and its absolute expiry (ms).
fn contents(redis: &mut redis::Connection) -> BTreeMap<Vec<u8>, (Vec<u8>, i64)> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(redis)
            .expect("SCAN");
        keys.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut held = BTreeMap::new();
    for key in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&key).query(redis).expect("DUMP");
        let at: i64 = redis::cmd("PEXPIRETIME")
            .arg(&key)
            .query(redis)
            .expect("PEXPIRETIME");
        if let Some(dump) = dump {
            held.insert(key, (dump, at));
        }
    }
    held
}

/// Runs `command`, again after a pause while the proxy answers `TRYAGAIN` (a slot moving),
/// as a Redis Cluster client does.
fn retrying(redis: &mut redis::Connection, command: &redis::Cmd) {
    for _ in 0..200 {
        match command.query::<redis::Value>(redis) {
            Ok(_) => return,
            Err(error) if error.to_string().contains("TryAgain") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("{error}"),
        }
    }
    panic!("TRYAGAIN for 4 s");
}

#[test]
fn a_sync_keeps_a_second_cluster_equal_through_writes_and_slot_moves() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("source")).expect("dir");
    std::fs::create_dir_all(dir.path().join("target")).expect("dir");
    let (mut source_processes, source) = up(&dir.path().join("source"), "3");
    let (_target_processes, target) = up(&dir.path().join("target"), "2");
    let mut from = connect(source.proxy);
    let mut to = connect(target.proxy);

    // Before the sync: a state at the source, and a key only the target has.
    let mut pipe = redis::pipe();
    for i in 0..(KEYS * WRITERS) {
        pipe.cmd("SET")
            .arg(format!("s:{i}"))
            .arg(format!("A-{i}"))
            .ignore();
    }
    pipe.cmd("HSET")
        .arg("h")
        .arg("f1")
        .arg("1")
        .arg("f2")
        .arg("2")
        .ignore();
    pipe.cmd("RPUSH")
        .arg("l")
        .arg("a")
        .arg("b")
        .arg("c")
        .ignore();
    pipe.cmd("SADD").arg("s").arg("x").arg("y").ignore();
    pipe.cmd("ZADD")
        .arg("z")
        .arg("1")
        .arg("one")
        .arg("2")
        .arg("two")
        .ignore();
    pipe.cmd("SET")
        .arg("ttl")
        .arg("v")
        .arg("EX")
        .arg("3600")
        .ignore();
    pipe.cmd("SET").arg("doomed").arg("v").ignore();
    pipe.query::<()>(&mut from).expect("first state");
    redis::cmd("SET")
        .arg("only-on-target")
        .arg("v")
        .query::<()>(&mut to)
        .expect("target key");

    let proxy = target.proxy.to_string();
    let scratch = dir.path().join("scratch");
    let scratch = scratch.to_str().expect("utf-8 path");
    let sync_args = [
        "sync",
        "--center",
        &source.centers,
        "--to",
        &proxy,
        "--every",
        "100ms",
        "--scratch",
        scratch,
        // Every page of entries read is applied and written before the next is read.
        "--entries-held-bytes-max",
        "1",
    ];
    source_processes.spawn("sync", &sync_args, false);

    // While it runs: overwrites by several clients, a quarter of the slots moved to another
    // group under them, counters, collection changes, deletes.
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let proxy = source.proxy;
            scope.spawn(move || {
                let mut redis = connect(proxy);
                for i in (writer * KEYS)..((writer + 1) * KEYS) {
                    let set = redis::cmd("SET")
                        .arg(format!("s:{i}"))
                        .arg(format!("B-{i}"))
                        .clone();
                    retrying(&mut redis, &set);
                    let incr = redis::cmd("INCRBY")
                        .arg(format!("ctr:{}", i % 7))
                        .arg(3)
                        .clone();
                    retrying(&mut redis, &incr);
                }
            });
        }
        admin_succeeds(&[
            "move-slots",
            "0-4095",
            "--to",
            "2",
            "--wait",
            "--center",
            &source.centers,
        ]);
    });
    // The sync killed, the last changes made while it is down, and started again: it goes on
    // from its checkpoint.
    source_processes.kill("sync");
    let mut pipe = redis::pipe();
    pipe.cmd("DEL").arg("doomed").ignore();
    pipe.cmd("HDEL").arg("h").arg("f1").ignore();
    pipe.cmd("LPOP").arg("l").ignore();
    pipe.cmd("SREM").arg("s").arg("x").arg("y").ignore();
    pipe.cmd("ZINCRBY").arg("z").arg("5").arg("one").ignore();
    pipe.query::<()>(&mut from).expect("last changes");
    source_processes.spawn("sync-again", &sync_args, false);

    let expected = contents(&mut from);
    // The strings, `h`, `l`, `z`, `ttl`, seven counters and `connect`'s `warm` (`s` emptied).
    assert_eq!(expected.len(), KEYS * WRITERS + 12, "the source's keys");
    let held = wait_for(
        "the target equal to the source",
        Duration::from_secs(60),
        || {
            let held = contents(&mut to);
            if held == expected {
                Ok(held)
            } else {
                let differs = expected
                    .iter()
                    .find(|(key, value)| held.get(*key) != Some(*value))
                    .map(|(key, _)| String::from_utf8_lossy(key).into_owned());
                Err(format!(
                    "{} keys held, {} expected; first differing: {differs:?}",
                    held.len(),
                    expected.len()
                ))
            }
        },
    );
    // The restarted sync resumed, and did not copy the source again: a group whose rebuilt
    // copy the kill caught mid-entry gets a new base, the others read on.
    let log = std::fs::read_to_string(source_processes.log("sync-again")).expect("log");
    assert!(log.contains("resumed from the checkpoint: groups"), "{log}");
    let puts: usize = log
        .lines()
        .find_map(|line| line.strip_prefix("synced: "))
        .and_then(|line| line.split(", ").nth(1)?.strip_suffix(" puts")?.parse().ok())
        .expect("a round's tally");
    assert!(
        puts < expected.len() / 2,
        "{puts} keys copied again:\n{log}"
    );
    assert!(!held.contains_key(&b"only-on-target"[..]));
    assert!(!held.contains_key(&b"doomed"[..]));
    let ttl = held.get(&b"ttl"[..]).expect("the key with a TTL");
    assert!(ttl.1 > 0, "its expiry copied: {ttl:?}");
}
