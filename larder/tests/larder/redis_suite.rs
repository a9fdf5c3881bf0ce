//! Redis 7.0.15's own test suite (`../shared/redis-tests`, unmodified) against a local cluster:
//! three center replicas, three storage nodes and the RESP proxy on loopback, as `larder up`
//! runs them. Each unit's pass count must reach its minimum: the minimums record what Larder
//! passes today and only ever rise.
//!
//! The cluster has one slot group: the suite's multi-key tests use keys of different slots
//! without hash tags, which Redis Cluster (and Larder with several groups) refuses with
//! `CROSSSLOT`. A single group still runs every command through Raft, fjall and the proxy.
//!
//! The units are split over a few tests, each with its own cluster, so nextest runs them side by
//! side with the rest of the suite, and two of them at a time ([`run_unit`] keeps their
//! harnesses' starts apart), rather than as one long tail.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use larder::local::{LocalCluster, LocalConfig};

/// The suite's folder, beside the repository (`../shared`, as CI places it).
fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/redis-tests")
}

/// One unit's tally as `run-against` prints it.
#[derive(Debug)]
struct Tally {
    unit: String,
    passed: u32,
    failed: u32,
}

/// Parses `unit/type/incr          23 passed    0 failed    2 skipped…` lines.
fn tallies(output: &str) -> Vec<Tally> {
    output
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [unit, passed, "passed", failed, "failed", ..] if unit.starts_with("unit/") => {
                    Some(Tally {
                        unit: (*unit).to_string(),
                        passed: passed.parse().ok()?,
                        failed: failed.parse().ok()?,
                    })
                }
                _ => None,
            }
        })
        .collect()
}

/// How long a unit's harness is given to find and bind its own port before another may start.
const HARNESS_START: Duration = Duration::from_secs(3);

/// Runs one unit with `run-against`, a real client process as a user's (a shell script over
/// tclsh and redis-cli).
///
/// The TCL harness picks the local port of its own test server by probing for a free one,
/// then binding it: two harnesses starting at the same instant can pick the same port, and one
/// of them then stops before its first test. So a start holds a lock file, across the test
/// processes nextest runs side by side, until the harness has had time to bind; the units
/// themselves then run in parallel.
// A lock file between test processes: no `Disk` of ours is involved.
#[allow(clippy::disallowed_methods)]
fn run_unit(runner: &Path, port: u16, unit: &str) -> std::process::Output {
    let lock_path = std::env::temp_dir().join("larder-redis-suite-start.lock");
    let lock = std::fs::File::create(&lock_path).expect("create the start lock file");
    lock.lock().expect("take the start lock");
    let child = Command::new("bash")
        .arg(runner)
        .arg(port.to_string())
        .arg(unit)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "run the Redis test suite (needs bash, tclsh and redis-cli: .ci/run installs them)",
        );
    std::thread::sleep(HARNESS_START);
    drop(lock);
    child.wait_with_output().expect("the suite runner ends")
}

/// Starts a one-group local cluster, runs `units` against its proxy and checks each unit's
/// pass count against its minimum.
fn run_units(minimums: &[(&str, u32)]) {
    let runner = suite_dir().join("run-against");
    assert!(
        runner.exists(),
        "{} is missing: CI places ../shared beside the repository",
        runner.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let config = LocalConfig {
        dir: None,
        listen: "127.0.0.1:0".parse().expect("address"),
        center_port: 0,
        nodes: larder::local::NODES_MIN,
        groups: 1,
        requirepass: None,
    };
    let cluster = runtime
        .block_on(LocalCluster::start(&config))
        .expect("local cluster");
    let address: SocketAddr = cluster.proxy_address;
    // One runner per unit, so that each start can be kept apart from the other suite tests'.
    let mut stdout = String::new();
    for (unit, _) in minimums {
        let output = run_unit(&runner, address.port(), unit);
        stdout.push_str(&String::from_utf8_lossy(&output.stdout));
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    }
    println!("{stdout}");
    runtime.block_on(cluster.stop());
    let found = tallies(&stdout);
    let mut short = Vec::new();
    for (unit, minimum) in minimums {
        match found.iter().find(|tally| tally.unit == *unit) {
            Some(tally) if tally.passed >= *minimum => {}
            Some(tally) => short.push(format!(
                "{unit}: {} passed ({} failed), minimum {minimum}",
                tally.passed, tally.failed
            )),
            None => short.push(format!("{unit}: no tally (did the runner start?)")),
        }
    }
    assert!(
        short.is_empty(),
        "below the minimums:\n{}",
        short.join("\n")
    );
}

// Minimums: what a release `larder up` passed on 2026-12-01 (passed / failed / skipped in the
// comment), less a small margin in the units whose tests race real time (blocking timeouts,
// fuzzers against the harness's 120 s limit) on a loaded two-core machine.

#[test]
fn redis_suite_hashes_sets_counters_expiry_keys_and_protocol() {
    run_units(&[
        ("unit/type/hash", 68),   // 70 / 2 / 1: HGETALL order of a listpack (2)
        ("unit/type/set", 93),    // 95 / 0 / 4
        ("unit/type/incr", 23),   // 23 / 0 / 2
        ("unit/expire", 56),      // 58 / 0 / 10
        ("unit/keyspace", 40),    // 40 / 2 / 11: streams (2)
        ("unit/protocol", 19),    // 19 / 0 / 6
        ("unit/info-command", 3), // 3 / 0 / 0
    ]);
}

#[test]
fn redis_suite_strings_and_scan() {
    run_units(&[
        ("unit/type/string", 72), // 74 / 0 / 2
        ("unit/scan", 16),        // 16 / 0 / 0, then the harness's timeout (see the note)
    ]);
}

/// Retried by nextest (`.config/nextest.toml`): a few tests start two blocking clients and a
/// push back to back on three connections without waiting, and expect the first connection's
/// command to block first. Redis, one thread, reads them in that order; the proxy serves each
/// connection on its own task, and now and then the second blocks first and takes the element,
/// leaving the first blocked for ever (the harness then times the unit out).
#[test]
fn redis_suite_lists() {
    run_units(&[("unit/type/list", 215)]); // 219 / 0 / 21
}

#[test]
fn redis_suite_sorted_sets() {
    // 308 / 0 / 4 (release, collections element by element)
    run_units(&[("unit/type/zset", 306)]);
}

#[test]
fn tallies_parse_the_runners_lines() {
    let found = tallies(
        "unit/type/incr           23 passed    0 failed    2 skipped\n    [err] x\n\
         unit/type/list          203 passed   16 failed   21 skipped  (stopped early: x)\n\
         737 passed, 23 failed, 54 skipped\n",
    );
    assert_eq!(found.len(), 2);
    assert_eq!(found[1].unit, "unit/type/list");
    assert_eq!((found[1].passed, found[1].failed), (203, 16));
}
