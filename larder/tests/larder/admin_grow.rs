//! Watching and growing a local cluster from the command line, as an operator would: `larder
//! up --nodes 3` runs as a process (centers on free ports, read from what it prints);
//! `larder admin status --json` must show three storage nodes up and every one of the 16384
//! slots owned by exactly one group that has a leader; `larder node --dir DIR --center ...`
//! starts a fourth storage node (its id chosen from the status), which registers with its
//! heartbeats until the status shows four nodes up. Also: the text form of the status, and a
//! clear failure when no center answers.

// A real-process test: real time, real threads, real files.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use larder_core::NodeId;
use larder_core::slots::SLOTS;
use larder_protocol::{ClusterStatus, Liveness, NodeState};

pub(crate) const LARDER: &str = env!("CARGO_BIN_EXE_larder");
const GROUPS: u64 = 8;

/// The processes under test; killed when the test ends, passing or not, with their logs'
/// tails printed on failure.
pub(crate) struct Processes {
    pub(crate) dir: PathBuf,
    pub(crate) children: Vec<(String, Child)>,
}

impl Processes {
    /// Starts `larder <args>` with its stderr (and its stdout, unless piped) in `<name>.log`.
    pub(crate) fn spawn(&mut self, name: &str, args: &[&str], pipe_stdout: bool) -> &mut Child {
        let log = File::create(self.log(name)).expect("log file");
        let stdout = if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(log.try_clone().expect("log file"))
        };
        let child = Command::new(LARDER)
            .env(larder_real::SECRET_VAR, larder_real::TEST_SECRET)
            .args(args)
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .expect("spawn larder");
        self.children.push((name.to_string(), child));
        &mut self.children.last_mut().expect("just pushed").1
    }

    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// SIGKILLs the process started as `name`.
    pub(crate) fn kill(&mut self, name: &str) {
        for (_, child) in self.children.iter_mut().filter(|(n, _)| n == name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                let text = std::fs::read_to_string(self.log(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- {name}.log (last 30 lines)");
                for line in &lines[lines.len().saturating_sub(30)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Polls `probe` every 200 ms until it yields, failing after `limit` with the last reason it
/// gave for not yielding.
pub(crate) fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let why = match probe() {
            Ok(found) => return found,
            Err(why) => why,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; last: {why}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn admin(args: &[&str]) -> Output {
    Command::new(LARDER)
        .env(larder_real::SECRET_VAR, larder_real::TEST_SECRET)
        .arg("admin")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run larder admin")
}

/// `larder admin <args>`, which must succeed; its standard output.
pub(crate) fn admin_succeeds(args: &[&str]) -> String {
    let output = admin(args);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "larder admin {args:?}: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

/// `larder admin status --json` against `centers`, parsed.
pub(crate) fn status(centers: &str) -> Result<ClusterStatus, String> {
    let output = admin(&["status", "--json", "--center", centers, "--timeout", "5s"]);
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("bad JSON: {e}"))
}

/// Whether exactly the nodes `expected` are known, each registered up and live (else why not).
fn up_nodes(status: &ClusterStatus, expected: &[NodeId]) -> Result<(), String> {
    let up: Vec<NodeId> = status
        .nodes
        .iter()
        .filter(|n| n.state == Some(NodeState::Up) && n.liveness == Liveness::Up)
        .map(|n| n.id)
        .collect();
    if up == expected && status.nodes.len() == expected.len() {
        Ok(())
    } else {
        Err(format!("nodes up {up:?}, all nodes {:?}", status.nodes))
    }
}

/// Every slot owned by exactly one group, and every group led.
pub(crate) fn every_slot_led(status: &ClusterStatus) -> Result<(), String> {
    let mut owners = vec![0u32; usize::from(SLOTS)];
    for group in &status.groups {
        if group.leader.is_none() {
            return Err(format!("group {} has no leader", group.group));
        }
        for (first, last) in &group.slots {
            for slot in *first..=*last {
                owners[usize::from(slot)] += 1;
            }
        }
    }
    match owners.iter().position(|count| *count != 1) {
        None => Ok(()),
        Some(slot) => Err(format!("slot {slot} has {} owners", owners[slot])),
    }
}

/// Reads `larder up`'s stdout until it prints its center replicas (`  centers: 101@… 102@…`)
/// and returns them as `--center` takes them.
fn centers_of(up: &mut Child, limit: Duration) -> String {
    up_addresses(up, limit).centers
}

/// The lines of `child`'s stdout, read on a thread of their own that keeps draining the pipe
/// (so the child never blocks on it).
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = lines.send(line);
        }
    });
    received
}

/// What `larder up` printed: its centers (as `--center` takes them), proxy and metrics page.
pub(crate) struct UpAddresses {
    pub(crate) centers: String,
    pub(crate) proxy: std::net::SocketAddr,
    metrics: Option<std::net::SocketAddr>,
}

/// Reads `larder up`'s stdout through its `try:` line.
fn up_addresses(up: &mut Child, limit: Duration) -> UpAddresses {
    let lines = stdout_lines(up);
    let deadline = Instant::now() + limit;
    let (mut centers, mut proxy, mut metrics) = (None, None, None);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(remaining)
            .unwrap_or_else(|e| panic!("`larder up` was not ready within {limit:?}: {e}"));
        let line = line.trim();
        if let Some(list) = line.strip_prefix("centers: ") {
            centers = Some(list.split_whitespace().collect::<Vec<_>>().join(","));
        } else if let Some(address) = line.strip_prefix("proxy: ") {
            proxy = Some(address.parse().expect("proxy address"));
        } else if let Some(page) = line.strip_prefix("metrics: http://") {
            metrics = page.strip_suffix("/metrics").and_then(|a| a.parse().ok());
        } else if line.starts_with("try: ") {
            return UpAddresses {
                centers: centers.expect("centers printed"),
                proxy: proxy.expect("proxy printed"),
                metrics,
            };
        }
    }
}

/// Starts `larder up` (as `up`) with four groups on free ports, data under `dir/up`, and
/// `extra` arguments; returns what it printed.
pub(crate) fn start_up(processes: &mut Processes, extra: &[&str]) -> UpAddresses {
    start_up_with_groups(processes, "4", extra)
}

/// [`start_up`] with `groups` slot groups.
pub(crate) fn start_up_with_groups(
    processes: &mut Processes,
    groups: &str,
    extra: &[&str],
) -> UpAddresses {
    let up_dir = processes.dir.join("up");
    let mut args = vec![
        "up",
        "--groups",
        groups,
        "--listen",
        "127.0.0.1:0",
        "--center-port",
        "0",
        "--dir",
        up_dir.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let up = processes.spawn("up", &args, true);
    up_addresses(up, Duration::from_secs(60))
}

fn read_id(path: &Path) -> Option<NodeId> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn admin_status_watches_a_local_cluster_grow() {
    let dir = tempfile::tempdir().expect("dir");
    let mut processes = Processes {
        dir: dir.path().to_path_buf(),
        children: Vec::new(),
    };
    let started = Instant::now();
    let up_dir = dir.path().join("up");
    let groups = GROUPS.to_string();
    let up = processes.spawn(
        "up",
        &[
            "up",
            "--nodes",
            "3",
            "--groups",
            &groups,
            "--listen",
            "127.0.0.1:0",
            "--center-port",
            "0",
            // Not the default fixed port: another cluster on the machine may hold it.
            "--metrics-listen",
            "127.0.0.1:0",
            "--dir",
            up_dir.to_str().expect("utf-8 path"),
        ],
        true,
    );
    let centers = centers_of(up, Duration::from_secs(60));
    eprintln!("larder up ready after {:?}: {centers}", started.elapsed());

    let first = wait_for(
        "three nodes up and every slot led",
        Duration::from_secs(30),
        || {
            let current = status(&centers)?;
            up_nodes(&current, &[1, 2, 3])?;
            every_slot_led(&current)?;
            Ok(current)
        },
    );
    assert_eq!(first.groups.len(), GROUPS as usize);
    assert!(first.epoch >= 1);
    assert_eq!(first.centers, [101, 102, 103]);
    assert!(
        first
            .groups
            .iter()
            .all(|g| g.reports.iter().all(|r| r.broken.is_none())),
        "{first:?}"
    );

    // The text form: a header, the tables, the summaries.
    let output = admin(&["status", "--center", &centers]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    for expected in [
        "center leader ",
        "NODE  ADDRESS",
        "GROUP  REPLICAS",
        "0-2047",
        "broken replicas: none",
        "repairs in flight: none",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }

    // A fourth storage node joins with no id given: it takes the next one and registers.
    let node_dir = dir.path().join("new-node");
    processes.spawn(
        "node",
        &[
            "node",
            "--dir",
            node_dir.to_str().expect("utf-8 path"),
            "--center",
            &centers,
        ],
        false,
    );
    let grown = Instant::now();
    wait_for("four nodes up", Duration::from_secs(30), || {
        up_nodes(&status(&centers)?, &[1, 2, 3, 4])
    });
    assert_eq!(read_id(&node_dir.join("node-id")), Some(4));
    eprintln!("node 4 up after {:?}", grown.elapsed());

    // The center moves replicas onto the new node until every node holds as many, give or
    // take one (learner first: each new replica catches up before it votes).
    let balanced = wait_for(
        "replicas balanced onto node 4",
        Duration::from_secs(90),
        || {
            let current = status(&centers)?;
            let mut counts: BTreeMap<NodeId, usize> =
                [1, 2, 3, 4].into_iter().map(|n| (n, 0)).collect();
            for group in &current.groups {
                for node in &group.replicas {
                    *counts.entry(*node).or_default() += 1;
                }
            }
            let (low, high) = (counts.values().min(), counts.values().max());
            match (low, high) {
                (Some(low), Some(high)) if high - low <= 1 => Ok(counts),
                _ => Err(format!("replica counts {counts:?}")),
            }
        },
    );
    eprintln!(
        "replicas balanced after {:?}: {balanced:?}",
        grown.elapsed()
    );

    // Group 1's slots move to group 2 online, and the status shows it.
    let text = admin_succeeds(&[
        "move-slots",
        "0-2047",
        "--to",
        "2",
        "--wait",
        "--center",
        &centers,
    ]);
    assert!(text.contains("done (routing epoch"), "{text}");
    let moved = status(&centers).expect("status after the move");
    let ranges = |group: u64| {
        moved
            .groups
            .iter()
            .find(|g| g.group == group)
            .map(|g| g.slots.clone())
    };
    assert_eq!(ranges(1), Some(vec![]), "{moved:?}");
    assert_eq!(ranges(2), Some(vec![(0, 4095)]), "{moved:?}");
    let output = admin(&["migrations", "--center", &centers]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("0-2047"));

    // Group 3 splits: a new group (9) joins the table and takes the upper half of its slots.
    let text = admin_succeeds(&["split", "3", "--wait", "--center", &centers]);
    assert!(
        text.contains("new group 9") && text.contains("done (routing epoch"),
        "{text}"
    );
    let split = status(&centers).expect("status after the split");
    let slots_of = |group: u64| {
        split.groups.iter().find(|g| g.group == group).map(|g| {
            g.slots
                .iter()
                .map(|(a, b)| usize::from(b - a) + 1)
                .sum::<usize>()
        })
    };
    assert_eq!(
        (slots_of(3), slots_of(9)),
        (Some(1024), Some(1024)),
        "{split:?}"
    );

    // One rebalancing move: the group owning the most slots (2, after the move above) gives
    // to the one owning the fewest (1, which gave all of its away).
    let output = admin(&[
        "rebalance",
        "--moves-max",
        "1",
        "--settle",
        "60s",
        "--center",
        &centers,
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("from group 2 to group 1") && text.contains("done (routing epoch"),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Node 4 drains: it hands everything over and is removed.
    let output = admin(&["drain", "4", "--wait", "--center", &centers]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("node 4 drained"),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let drained = status(&centers).expect("status after the drain");
    assert!(
        drained.groups.iter().all(|g| !g.replicas.contains(&4)),
        "{drained:?}"
    );
    // Draining another would leave two nodes for groups of three: refused with the reason.
    let output = admin(&["drain", "1", "--center", &centers]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("would leave 2 nodes"), "{stderr}");
    // Cancelling a migration that has ended is refused with the reason.
    let output = admin(&["cancel", "1", "--center", &centers]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("has ended"), "{stderr}");

    // Slots of two groups cannot move as one: refused with the reason, at once.
    let output = admin(&["move-slots", "4000-4200", "--to", "1", "--center", &centers]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("more than one group"), "{stderr}");

    // Nobody listening: a clear error, not a hang.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let output = admin(&["status", "--center", &closed.to_string(), "--timeout", "1s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no center leader answered") && stderr.contains(&closed.to_string()),
        "{stderr}"
    );
}

/// A hot key through a real `larder up` whose proxy limits each key to 50 writes a second: a
/// client writing one key as fast as it can gets `-HOTKEY` for the writes past the limit and
/// nothing else, other keys are not refused, `INFO hotkeys` names the key, and
/// `larder admin hotkeys` shows it with its slot, group and leader, as the leaders counted it.
#[test]
fn a_hot_key_is_limited_and_shown_by_info_and_admin_hotkeys() {
    let dir = tempfile::tempdir().expect("dir");
    let mut processes = Processes {
        dir: dir.path().to_path_buf(),
        children: Vec::new(),
    };
    let up = start_up(
        &mut processes,
        &["--no-metrics", "--hot-key-writes-per-sec-max", "50"],
    );
    let (centers, proxy) = (up.centers, up.proxy);
    let client = redis::Client::open(format!("redis://{proxy}/")).expect("client");
    let mut connection = client.get_connection().expect("connect to the proxy");
    wait_for("a first write", Duration::from_secs(30), || {
        redis::cmd("SET")
            .arg("warm")
            .arg("1")
            .query::<String>(&mut connection)
            .map_err(|e| e.to_string())
    });
    // Two seconds of writes to one key, each followed by a write and a read of another key.
    let started = Instant::now();
    let (mut hot_ok, mut hot_refused) = (0u32, 0u32);
    let mut round = 0u32;
    while started.elapsed() < Duration::from_secs(2) {
        match redis::cmd("SET")
            .arg("celebrity")
            .arg(round)
            .query::<String>(&mut connection)
        {
            Ok(_) => hot_ok += 1,
            Err(error) => {
                let text = error.to_string();
                assert!(text.contains("HOTKEY"), "{text}");
                assert!(text.contains("'celebrity'"), "{text}");
                hot_refused += 1;
            }
        }
        let other = format!("fan:{}", round % 50);
        let _: String = redis::cmd("SET")
            .arg(&other)
            .arg(round)
            .query(&mut connection)
            .expect("other keys are not limited");
        let _: Option<String> = redis::cmd("GET")
            .arg("celebrity")
            .query(&mut connection)
            .expect("reads are never limited");
        round += 1;
    }
    eprintln!("hot key: {hot_ok} writes let through, {hot_refused} refused in 2 s");
    // 50 a second over two seconds, with one window's slack.
    assert!(
        hot_refused > 0 && (50..=150).contains(&hot_ok),
        "{hot_ok} let through"
    );

    let info: String = redis::cmd("INFO")
        .arg("hotkeys")
        .query(&mut connection)
        .expect("INFO hotkeys");
    assert!(info.contains("hotkey_writes_per_sec_max:50"), "{info}");
    assert!(
        info.contains(&format!("hotkey_refused_writes:{hot_refused}")),
        "{info}"
    );
    assert!(info.contains("hotkey_0:key=celebrity,"), "{info}");

    // Eight clients reading the hot key at once for a second: the proxy shares their reads
    // (each waits for the next fetch of it, answers the value last written).
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut connection = client.get_connection().expect("connect to the proxy");
                let started = Instant::now();
                let mut values = std::collections::BTreeSet::new();
                while started.elapsed() < Duration::from_secs(1) {
                    let value: Option<String> = redis::cmd("GET")
                        .arg("celebrity")
                        .query(&mut connection)
                        .expect("GET of the hot key");
                    values.insert(value);
                }
                values
            })
        })
        .collect();
    for reader in readers {
        let values = reader.join().expect("reader");
        assert!(values.iter().all(|v| v.is_some()), "{values:?}");
        assert_eq!(values.len(), 1, "no write meanwhile: {values:?}");
    }
    let info: String = redis::cmd("INFO")
        .arg("hotkeys")
        .query(&mut connection)
        .expect("INFO hotkeys");
    let shared: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("hotkey_shared_reads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{info}"));
    eprintln!("hot key: {shared} reads shared among 8 readers in 1 s");
    assert!(shared > 0, "{info}");

    // The leaders' view reaches the center with their heartbeats: keep the key hot meanwhile.
    let found = wait_for(
        "the hot key in `larder admin hotkeys`",
        Duration::from_secs(20),
        || {
            for _ in 0..50 {
                let _: Option<String> = redis::cmd("GET")
                    .arg("celebrity")
                    .query(&mut connection)
                    .map_err(|e| e.to_string())?;
            }
            let output = admin(&["hotkeys", "--json", "--center", &centers]);
            if !output.status.success() {
                return Err(String::from_utf8_lossy(&output.stderr).into_owned());
            }
            let json: serde_json::Value =
                serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())?;
            let first = json["keys"][0].clone();
            if first["key"] == "celebrity" {
                Ok(first)
            } else {
                Err(format!("hottest: {first}"))
            }
        },
    );
    assert_eq!(
        found["slot"],
        u64::from(larder_core::slots::slot_of(b"celebrity"))
    );
    assert!(found["group"].as_u64().is_some(), "{found}");
    assert!(found["per_sec"].as_u64().unwrap_or(0) >= 10, "{found}");
    assert_eq!(found["nodes"].as_array().map(Vec::len), Some(1), "{found}");
    let output = admin(&["hotkeys", "--center", &centers]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("celebrity"),
        "{text}"
    );
}

/// Debian's chromium (what `.ci/run` installs), or another Chromium or Chrome on the path.
fn browser() -> PathBuf {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|dir| Path::new(dir).join(name))
                .find(|path| path.is_file())
        })
        .expect("the dashboard test needs chromium (`.ci/run` installs Debian's)")
}

/// Headless chromium's arguments: as root (CI) it needs `--no-sandbox`; `--virtual-time-budget`
/// lets the page's script run (its first polls) before the DOM is dumped.
fn browser_run(browser: &Path, extra: &[&str], url: &str) -> Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .args(["--no-first-run", "--virtual-time-budget=4000"])
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium")
}

/// The web dashboard in a real (headless) browser: the page loads, shows the test's cluster
/// (four storage nodes up, every group with its leader, the hot key being written) and charts
/// from the proxy's metrics, and after storage node 4 is killed it shows node 4 no longer up.
#[test]
fn the_dashboard_shows_the_cluster_in_a_browser_and_follows_a_node_going_down() {
    let browser = browser();
    let dir = tempfile::tempdir().expect("dir");
    let mut processes = Processes {
        dir: dir.path().to_path_buf(),
        children: Vec::new(),
    };
    let up = start_up(&mut processes, &["--metrics-listen", "127.0.0.1:0"]);
    let metrics = up.metrics.expect("larder up printed its metrics page");
    let centers = up.centers.clone();
    let node_dir = dir.path().join("node-4");
    processes.spawn(
        "node",
        &[
            "node",
            "--id",
            "4",
            "--dir",
            node_dir.to_str().expect("utf-8 path"),
            "--center",
            &centers,
        ],
        false,
    );
    wait_for("four nodes up", Duration::from_secs(30), || {
        up_nodes(&status(&centers)?, &[1, 2, 3, 4])
    });
    let dashboard = processes.spawn(
        "dashboard",
        &[
            "admin",
            "dashboard",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            &metrics.to_string(),
            "--center",
            &centers,
        ],
        true,
    );
    let lines = stdout_lines(dashboard);
    let url = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the dashboard prints its address")
        .trim()
        .strip_prefix("dashboard: ")
        .expect("dashboard: URL")
        .to_string();

    // Load, and a hot key, through the proxy.
    let client = redis::Client::open(format!("redis://{}/", up.proxy)).expect("client");
    let mut connection = client.get_connection().expect("connect to the proxy");
    let write = |connection: &mut redis::Connection, key: &str| {
        redis::cmd("SET")
            .arg(key)
            .arg("v")
            .query::<String>(connection)
            .map_err(|e| e.to_string())
    };
    wait_for("a first write", Duration::from_secs(30), || {
        write(&mut connection, "warm")
    });
    let dump = |connection: &mut redis::Connection| {
        for i in 0..200 {
            let _ = write(connection, "celebrity");
            let _ = write(connection, &format!("fan:{i}"));
        }
        let output = browser_run(&browser, &["--dump-dom"], &url);
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let page = wait_for(
        "the page to show four nodes up, the hot key and the proxy's figures",
        Duration::from_secs(60),
        || {
            let page = dump(&mut connection);
            let shows = |text: &str| page.contains(text);
            for node in 1..=4 {
                if !shows(&format!("data-node=\"{node}\" data-liveness=\"up\"")) {
                    return Err(format!("node {node} not shown up:\n{page}"));
                }
            }
            if !shows("data-hotkey=\"celebrity\"") {
                return Err(format!("no hot key:\n{page}"));
            }
            if !shows("proxy commands:") || !shows("p99") {
                return Err(format!("no proxy throughput or latency:\n{page}"));
            }
            // The center balances leaders onto the fourth node: while a group's leadership is
            // handed over, it rightly shows none (CI once dumped the page at that moment).
            if shows(">none</td>") {
                return Err(format!("a group shows no leader:\n{page}"));
            }
            Ok(page)
        },
    );
    assert!(page.contains("routing epoch"), "{page}");
    assert_eq!(page.matches("data-group=").count(), 4, "{page}");
    let shot = dir.path().join("dashboard.png");
    let taken = browser_run(
        &browser,
        &[
            "--window-size=1400,1100",
            &format!("--screenshot={}", shot.display()),
        ],
        &url,
    );
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&taken.stderr)
    );
    if let Some(keep) = std::env::var_os("LARDER_DASHBOARD_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }

    // Node 4 dies; the page follows the center's view.
    processes.kill("node");
    wait_for(
        "the page to show node 4 no longer up",
        Duration::from_secs(60),
        || {
            let page = dump(&mut connection);
            let up = page.contains("data-node=\"4\" data-liveness=\"up\"");
            let other = ["grace", "down"]
                .iter()
                .any(|l| page.contains(&format!("data-node=\"4\" data-liveness=\"{l}\"")));
            if !up && other {
                Ok(())
            } else {
                Err(format!("node 4 still up:\n{page}"))
            }
        },
    );
}
