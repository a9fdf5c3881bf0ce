//! Kills a real writer process mid-write and checks what fjall recovered: every batch
//! acknowledged with `sync` survives, batches are all-or-nothing, and what survives is a prefix
//! of what was written (no holes), across several crash/recover rounds on the same directory.
//! One key of each batch holds a value past the key-value separation threshold, so values kept
//! in fjall's blob files go through the same crashes and must come back whole.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use larder_core::env::{Disk, Space, WriteBatch};
use larder_real::{FjallDisk, FjallOptions};

const DIR_VAR: &str = "LARDER_CRASH_DIR";
const START_VAR: &str = "LARDER_CRASH_START";
/// Keys per batch: enough to tell a torn batch from a whole one.
const KEYS_PER_BATCH: usize = 3;

fn batch_key(index: u64, part: usize) -> Vec<u8> {
    format!("batch/{index:010}/{part}").into_bytes()
}

/// The value of a batch's key `part`: the first is large enough for a blob file.
fn batch_value(index: u64, part: usize) -> Vec<u8> {
    if part == 0 {
        let size = larder_real::KV_SEPARATION_BYTES as usize + 1024;
        let mut value = vec![(index % 251) as u8; size];
        value[..8].copy_from_slice(&index.to_be_bytes());
        value
    } else {
        vec![0xab; 100]
    }
}

/// The child process: writes numbered batches forever (every fourth synced) and prints
/// `acked N` after each synced one returns. Ignored so that only the crash test runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of fjall_crash_keeps_every_synced_write; started by that test"]
async fn crash_child() {
    let dir = std::env::var(DIR_VAR).expect("LARDER_CRASH_DIR");
    let start: u64 = std::env::var(START_VAR)
        .expect("LARDER_CRASH_START")
        .parse()
        .expect("start index");
    let disk = FjallDisk::open(dir.as_ref(), &FjallOptions::default()).expect("open");
    // Bounded so a parent that dies without killing us does not leave a runaway writer.
    for index in start..start + 2_000_000 {
        let mut batch = WriteBatch::new();
        for part in 0..KEYS_PER_BATCH {
            batch.put(
                Space::State,
                batch_key(index, part),
                batch_value(index, part),
            );
        }
        let sync = index % 4 == 0;
        disk.write(batch, sync).await.expect("write");
        if sync {
            println!("acked {index}");
        }
    }
}

/// Runs the child until it has acknowledged `acks` synced batches, then kills it with SIGKILL.
/// Returns the highest acknowledged batch.
fn run_child_and_kill(dir: &std::path::Path, start: u64, acks: usize) -> u64 {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "fjall_crash::crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(DIR_VAR, dir)
        .env(START_VAR, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut acked = None;
    let mut seen = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child output");
        if let Some(index) = line.strip_prefix("acked ") {
            acked = Some(index.trim().parse::<u64>().expect("acked index"));
            seen += 1;
            if seen == acks {
                break;
            }
        }
    }
    // `Child::kill` is SIGKILL on Unix: no destructors, no flushes, as in a power-cut-free crash.
    child.kill().expect("kill child");
    child.wait().expect("reap child");
    acked.expect("child acknowledged nothing before it was killed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fjall_crash_keeps_every_synced_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut next = 0u64;
    for (round, acks) in [25usize, 400, 3, 1500].into_iter().enumerate() {
        let acked = run_child_and_kill(dir.path(), next, acks);
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("recover");
        let rows = disk
            .scan(Space::State, b"batch/", Some(b"batch0"), usize::MAX)
            .await
            .expect("scan");
        let mut parts: BTreeMap<u64, usize> = BTreeMap::new();
        for (key, value) in &rows {
            let key = std::str::from_utf8(key).expect("utf8 key");
            let index: u64 = key[6..16].parse().expect("batch index");
            let part: usize = key[17..].parse().expect("batch part");
            assert!(
                value[..] == batch_value(index, part)[..],
                "round {round}: {key} came back with another value ({} bytes)",
                value.len()
            );
            *parts.entry(index).or_default() += 1;
        }
        for (index, count) in &parts {
            assert_eq!(
                *count, KEYS_PER_BATCH,
                "round {round}: batch {index} was torn ({count} of {KEYS_PER_BATCH} keys)"
            );
        }
        let recovered: Vec<u64> = parts.keys().copied().collect();
        let last = *recovered.last().expect("nothing recovered");
        assert_eq!(
            recovered,
            (0..=last).collect::<Vec<_>>(),
            "round {round}: recovered batches are not a prefix of the written ones"
        );
        assert!(
            last >= acked,
            "round {round}: batch {acked} was acknowledged with sync but lost (recovered up to {last})"
        );
        // The next child continues after what survived, as a restarted node would.
        next = last + 1;
        drop(disk);
    }
}
