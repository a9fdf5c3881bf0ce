//! `larder bench`: `redis-benchmark` against a local Larder cluster and, side by side in the same
//! run, against `redis-server` on loopback (durable: `appendfsync always`, like Larder's synced
//! log; and without persistence), printing requests per second, latency percentiles (p50, p99,
//! p99.9) and the ratios, as a table or as JSON.
//!
//! A run is a product of cases: every client count × pipeline depth × value size of the
//! command line, each for every test (`-t`). Two extra cases on request: `--mix`, a 90/10
//! GET/SET mix (two `redis-benchmark` processes at once, the clients split 9 to 1, so the mix
//! is by clients, not by requests), and `--slow-lane`, GETs while two clients read a
//! 10,000-element list whole (`LRANGE 0 -1`) over and over: how much a slow command delays
//! fast ones. Each test of a case runs alone, so it has a CPU figure: microseconds of the
//! server process's CPU (user + system, every thread) per request.
//!
//! A third peer is `redis-server` (`appendfsync always`) behind a zero-work TCP relay in this
//! process ([`crate::relay`]): the cheapest proxy hop there can be. Its rate over the same
//! server's without the relay (the table's `floor` column) is what any design with a proxy
//! between client and server keeps on this machine, parsing and routing aside; Larder's
//! ratio to it is what its proxy, replication and read confirmation cost beyond that hop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use larder::local::{LocalCluster, LocalConfig};
use serde::Serialize;

use crate::relay::Relay;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Requests per test (redis-benchmark -n).
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// Parallel connections (redis-benchmark -c); several, comma-separated, make more cases.
    #[arg(long, value_delimiter = ',', default_value = "50")]
    pub clients: Vec<u64>,
    /// Pipeline depth (redis-benchmark -P); comma-separated for more cases.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub pipeline: Vec<u64>,
    /// Value size in bytes (redis-benchmark -d); comma-separated for more cases.
    #[arg(long, value_delimiter = ',', default_value = "3")]
    pub data_size: Vec<u64>,
    /// Tests (redis-benchmark -t).
    #[arg(long, default_value = "set,get")]
    pub tests: String,
    /// Also a 90/10 GET/SET mix at the first client count, pipeline depth and value size.
    #[arg(long)]
    pub mix: bool,
    /// Also GETs with slow whole-list reads running beside them, and without.
    #[arg(long)]
    pub slow_lane: bool,
    /// Slot groups of the Larder cluster (default: one per storage node, as `larder up`).
    #[arg(long, default_value_t = larder::local::NODES_MIN as u64)]
    pub groups: u64,
    /// Skip the redis-server peer runs.
    #[arg(long)]
    pub no_peer: bool,
    /// Skip the peer behind a relay (redis-server with `appendfsync always` reached through a
    /// zero-work TCP relay).
    #[arg(long)]
    pub no_relay: bool,
    /// Confirm reads with each group's own openraft read index instead of the nodes' read
    /// rounds (see `larder up --no-read-rounds`), to compare the two.
    #[arg(long)]
    pub no_read_rounds: bool,
    /// The proxy's batches of single commands in flight (`larder up --coalesce-runners`; 0:
    /// off), to compare.
    #[arg(long, default_value_t = larder_proxy::coalesce::RUNNERS)]
    pub coalesce_runners: usize,
    /// Run everything this many times, each round on fresh servers (Larder, then each
    /// peer), and report each figure's median over the rounds: on a small shared machine one
    /// round's rates move by a quarter from run to run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=99))]
    pub rounds: u64,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// One test of one case on one server.
#[derive(Debug, Clone, Serialize)]
struct Measured {
    /// The case: `-c 50 -P 1 -d 3`, `mix 90/10 …`, `slow lane busy …`.
    case: String,
    /// redis-benchmark's test name (`SET`, `GET`).
    test: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// CPU time the server's processes spent per request while this test ran alone (user and
    /// system, every thread; for Larder the whole cluster: centers, nodes and proxy; behind
    /// the relay, redis-server and the relay). None where tests ran together (the mix, the
    /// slow lane).
    cpu_us_per_op: Option<f64>,
    /// Context switches of the server's processes' threads per request over the same span
    /// (voluntary and not): each is a thread that stopped for want of work and was woken, the
    /// hand-offs that make up much of a serial request's time on a VM. None where
    /// `cpu_us_per_op` is.
    switches_per_op: Option<f64>,
}

/// What one server answered over the whole run.
#[derive(Debug, Default, Serialize)]
struct ServerRun {
    server: String,
    /// Rounds whose medians these are (`--rounds`).
    rounds: usize,
    /// For the peer behind the relay: the peer it reaches without one, whose rates its
    /// `floor` column divides by.
    #[serde(skip_serializing_if = "Option::is_none")]
    relay_of: Option<String>,
    results: Vec<Measured>,
    /// Error lines redis-benchmark printed (refused or failed requests).
    errors: Vec<String>,
    /// With `--slow-lane`: the whole-list reads' own rate while the GETs ran beside them (the
    /// price the slow lane pays for the fast one's latency).
    slow_lane_rps: Option<f64>,
}

/// Keys a `GET` load draws from (`-r`): the `SET` loads before it wrote many of them.
const READ_KEYSPACE: u64 = 100_000;

/// Keys a `SET` load draws from, so that nearly every `SET` writes a key it has not written
/// before. redis-benchmark sends one value for every `SET`, and Larder answers a `SET` of the
/// value a key already has without a log entry (`larder_storage::unchanged`) where Redis
/// appends and syncs it: over `READ_KEYSPACE` a repeated key would measure that, not a write.
const WRITE_KEYSPACE: u64 = 1_000_000_000;

/// One redis-benchmark invocation's arguments beyond host and port.
#[derive(Debug, Clone)]
struct Load {
    args: Vec<String>,
    /// Its `-n`, for the CPU per request.
    requests: u64,
}

impl Load {
    fn new(requests: u64, clients: u64, pipeline: u64, data_size: u64) -> Load {
        Load {
            args: vec![
                "-n".into(),
                requests.to_string(),
                "-c".into(),
                clients.to_string(),
                "-P".into(),
                pipeline.to_string(),
                "-d".into(),
                data_size.to_string(),
                // Keys over a range, not one key: a real keyspace spreads over the slot groups.
                "-r".into(),
                READ_KEYSPACE.to_string(),
            ],
            requests: requests.max(1),
        }
    }

    /// The load running `tests`. A `SET` draws its keys from [`WRITE_KEYSPACE`].
    fn tests(mut self, tests: &str) -> Load {
        if tests.split(',').any(|test| test == "set")
            && let Some(at) = self.args.iter().position(|arg| arg == "-r")
        {
            self.args[at + 1] = WRITE_KEYSPACE.to_string();
        }
        self.args.extend(["-t".into(), tests.into()]);
        self
    }

    fn command(port: u16, args: &[String]) -> Command {
        let mut command = Command::new("redis-benchmark");
        command
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }
}

/// Clock ticks of `/proc/<pid>/stat`'s CPU times: Linux fixes `USER_HZ` at 100 for that
/// interface whatever the kernel's own tick.
const USER_HZ: f64 = 100.0;

/// CPU time (user + system, all threads) process `pid` has used, from `/proc`; None off
/// Linux or once the process is gone.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / USER_HZ)
}

/// CPU time processes `pids` have used together; None if any is unknown.
fn cpu_seconds_of(pids: &[u32]) -> Option<f64> {
    pids.iter().map(|&pid| cpu_seconds(pid)).sum()
}

/// Context switches (voluntary and not) of every live thread of process `pid`, from
/// `/proc/<pid>/task/*/status`; None off Linux or once the process is gone. A thread that
/// ended took its count with it: tokio's blocking threads come and go, its workers stay.
fn context_switches(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        total += switches_in_status(&status);
    }
    Some(total)
}

/// The two context-switch counts of a `/proc/…/status` text, summed.
fn switches_in_status(status: &str) -> u64 {
    status
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.ends_with("ctxt_switches")
                .then(|| value.trim().parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// [`context_switches`] of processes `pids` together.
fn context_switches_of(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&pid| context_switches(pid)).sum()
}

/// Runs one redis-benchmark test per invocation (so each has its own CPU figure), measuring
/// the CPU processes `server` spend meanwhile.
fn run_measured(
    port: u16,
    load: &Load,
    tests: &str,
    case: &str,
    server: &[u32],
    run: &mut ServerRun,
) -> anyhow::Result<()> {
    for test in tests.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let before = cpu_seconds_of(server);
        let switches_before = context_switches_of(server);
        let found = run.results.len();
        run_benchmark(port, &load.clone().tests(test), case, run)?;
        let after = cpu_seconds_of(server);
        let switches_after = context_switches_of(server);
        if let (Some(before), Some(after)) = (switches_before, switches_after) {
            for result in &mut run.results[found..] {
                let switches = after.saturating_sub(before) as f64;
                result.switches_per_op = Some(switches / load.requests as f64);
            }
        }
        if let (Some(before), Some(after)) = (before, after) {
            for result in &mut run.results[found..] {
                result.cpu_us_per_op = Some((after - before) * 1e6 / load.requests as f64);
            }
        }
    }
    Ok(())
}

/// Runs redis-benchmark to the end and reads what it printed.
fn run_benchmark(port: u16, load: &Load, case: &str, run: &mut ServerRun) -> anyhow::Result<()> {
    let output = Load::command(port, &load.args)
        .output()
        .context("running redis-benchmark (apt-get install redis-tools)")?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("redis-benchmark failed: {}", text.trim());
    }
    let (results, errors) = parse_report(&text, case);
    run.results.extend(results);
    run.errors.extend(errors);
    Ok(())
}

/// Reads redis-benchmark's full report (not `-q`): per test, the throughput summary, p50 and
/// p99 from the latency summary, and p99.9 from the percentile distribution (the first
/// percentile at or above 99.9 %).
fn parse_report(text: &str, case: &str) -> (Vec<Measured>, Vec<String>) {
    let mut results: Vec<Measured> = Vec::new();
    let mut errors = Vec::new();
    let mut lines = text.split(['\r', '\n']).map(str::trim).peekable();
    while let Some(line) = lines.next() {
        if let Some(test) = line
            .strip_prefix("======")
            .and_then(|rest| rest.strip_suffix("======"))
        {
            results.push(Measured {
                case: case.to_string(),
                test: test.trim().to_string(),
                rps: 0.0,
                p50_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                cpu_us_per_op: None,
                switches_per_op: None,
            });
            continue;
        }
        let Some(current) = results.last_mut() else {
            if line.contains("ERR") || line.contains("Error") {
                errors.push(line.to_string());
            }
            continue;
        };
        if let Some((percent, rest)) = line.split_once("% <= ") {
            let at = percent.parse::<f64>().unwrap_or(0.0);
            let millis = rest.split_whitespace().next().and_then(|v| v.parse().ok());
            if at >= 99.9
                && current.p999_ms == 0.0
                && let Some(millis) = millis
            {
                current.p999_ms = millis;
            }
        } else if let Some(rest) = line.strip_prefix("throughput summary:") {
            current.rps = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
        } else if line.starts_with("avg") && line.contains("p50") {
            // The next line holds avg, min, p50, p95, p99, max.
            if let Some(values) = lines.next() {
                let values: Vec<f64> = values
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect();
                if let [_, _, p50, _, p99, _] = values.as_slice() {
                    current.p50_ms = *p50;
                    current.p99_ms = *p99;
                }
            }
        } else if line.contains("ERR") || line.contains("Error") {
            errors.push(line.to_string());
        }
    }
    // Lines before the first test and the interim progress lines carry no result.
    results.retain(|result| result.rps > 0.0);
    (results, errors)
}

/// A 90/10 GET/SET mix: two redis-benchmark processes at once, the clients split 9 to 1.
fn run_mix(port: u16, args: &BenchArgs, run: &mut ServerRun) -> anyhow::Result<()> {
    let (clients, pipeline, size) = (args.clients[0], args.pipeline[0], args.data_size[0]);
    let set_clients = (clients / 10).max(1);
    let get_clients = clients.saturating_sub(set_clients).max(1);
    let case =
        format!("mix 90/10 by clients: -c {get_clients}+{set_clients} -P {pipeline} -d {size}");
    let share = |part: u64| args.requests * part / clients.max(1);
    let gets = Load::new(share(get_clients).max(1), get_clients, pipeline, size).tests("get");
    let sets = Load::new(share(set_clients).max(1), set_clients, pipeline, size).tests("set");
    let spawn = |load: &Load| {
        Load::command(port, &load.args)
            .spawn()
            .context("running redis-benchmark (apt-get install redis-tools)")
    };
    let (get_child, set_child) = (spawn(&gets)?, spawn(&sets)?);
    for child in [get_child, set_child] {
        let output = child
            .wait_with_output()
            .context("waiting for redis-benchmark")?;
        let text = String::from_utf8_lossy(&output.stdout);
        let (results, errors) = parse_report(&text, &case);
        run.results.extend(results);
        run.errors.extend(errors);
    }
    Ok(())
}

/// GETs alone, then GETs with two clients reading a 10,000-element list whole beside them.
fn run_slow_lane(port: u16, args: &BenchArgs, run: &mut ServerRun) -> anyhow::Result<()> {
    let (clients, pipeline, size) = (args.clients[0], args.pipeline[0], args.data_size[0]);
    let fill = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-n", "10000", "-c", "1", "-P", "100"])
        .args(["rpush", "bench:slow-lane", "element-of-the-slow-lane-list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("filling the slow lane's list")?;
    if !fill.success() {
        bail!("filling the slow lane's list failed");
    }
    let gets = Load::new(args.requests, clients, pipeline, size).tests("get");
    let idle = format!("slow lane idle: GET -c {clients} -P {pipeline} -d {size}");
    run_benchmark(port, &gets, &idle, run)?;
    let mut slow = Load::command(
        port,
        &[
            "-n".into(),
            "100000000".into(),
            "-c".into(),
            "2".into(),
            "lrange".into(),
            "bench:slow-lane".into(),
            "0".into(),
            "-1".into(),
        ],
    )
    .stderr(Stdio::null())
    .spawn()
    .context("running redis-benchmark for the slow lane")?;
    // Its progress lines ("… rps=R (overall: O) …", every 250 ms) go to a reader thread; the
    // last one read before the GETs end is the slow reads' own rate beside them.
    let progress = slow.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    let busy = format!(
        "slow lane busy (2 clients LRANGE 0 -1 of 10k): GET -c {clients} -P {pipeline} -d {size}"
    );
    let result = run_benchmark(port, &gets, &busy, run);
    let _ = slow.kill();
    let _ = slow.wait();
    if let Some(progress) = progress.and_then(|reader| reader.join().ok()) {
        run.slow_lane_rps = last_overall_rps(&progress);
    }
    result
}

/// The last "overall" rate of redis-benchmark's progress lines
/// (`rps=R (overall: O) avg_msec=…`).
fn last_overall_rps(progress: &str) -> Option<f64> {
    let (_, last) = progress.rsplit_once("rps=")?;
    let (_, rest) = last.split_once("(overall: ")?;
    let rate: f64 = rest.split(')').next()?.trim().parse().ok()?;
    rate.is_finite().then_some(rate)
}

/// Every case of `args` against the server on `port`, whose processes are `pids`.
fn run_all(server: &str, port: u16, pids: &[u32], args: &BenchArgs) -> anyhow::Result<ServerRun> {
    let mut run = ServerRun {
        server: server.to_string(),
        rounds: 1,
        ..ServerRun::default()
    };
    for &clients in &args.clients {
        for &pipeline in &args.pipeline {
            for &size in &args.data_size {
                let case = format!("-c {clients} -P {pipeline} -d {size}");
                let load = Load::new(args.requests, clients, pipeline, size);
                run_measured(port, &load, &args.tests, &case, pids, &mut run)?;
            }
        }
    }
    if args.mix {
        run_mix(port, args, &mut run)?;
    }
    if args.slow_lane {
        run_slow_lane(port, args, &mut run)?;
    }
    Ok(run)
}

struct Peer {
    child: Child,
    port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis(dir: &Path, durable: bool) -> anyhow::Result<Peer> {
    let port = free_port()?;
    let mut command = Command::new("redis-server");
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if durable {
        command.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        command.args(["--appendonly", "no"]);
    }
    let child = command
        .spawn()
        .context("starting redis-server (apt-get install redis-server)")?;
    let peer = Peer { child, port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(peer);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("redis-server did not start listening on {port}")
}

pub fn bench(args: BenchArgs) -> anyhow::Result<bool> {
    if args.clients.is_empty() || args.pipeline.is_empty() || args.data_size.is_empty() {
        bail!("--clients, --pipeline and --data-size each need at least one value");
    }
    if !args.json {
        outln!(
            "redis-benchmark -t {} -n {} -r {READ_KEYSPACE} (SET: -r {WRITE_KEYSPACE}); Larder: 3 nodes, {} slot groups, 1 proxy, one process{}",
            args.tests,
            args.requests,
            args.groups,
            match args.rounds {
                1 => String::new(),
                n => format!("; medians of {n} rounds"),
            }
        );
    }
    let mut larder_rounds = Vec::new();
    let mut peer_rounds: Vec<Vec<ServerRun>> = Vec::new();
    for _ in 0..args.rounds {
        larder_rounds.push(run_larder(&args)?);
        for (at, peer) in run_peers(&args)?.into_iter().enumerate() {
            match peer_rounds.get_mut(at) {
                Some(rounds) => rounds.push(peer),
                None => peer_rounds.push(vec![peer]),
            }
        }
    }
    let larder = median_run(larder_rounds);
    let peers: Vec<ServerRun> = peer_rounds.into_iter().map(median_run).collect();

    let clean = larder.errors.is_empty();
    if args.json {
        let mut runs = vec![larder];
        runs.extend(peers);
        outln!(
            "{}",
            serde_json::to_string_pretty(&runs).context("encoding the results")?
        );
        return Ok(clean);
    }
    print_table(&larder, &peers);
    if clean {
        outln!("errors: none");
    } else {
        outln!("errors from Larder ({}):", larder.errors.len());
        for line in larder.errors.iter().take(10) {
            outln!("  {line}");
        }
    }
    Ok(clean)
}

/// One round of every case on a fresh local cluster in this process.
fn run_larder(args: &BenchArgs) -> anyhow::Result<ServerRun> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let cluster = runtime
        .block_on(LocalCluster::start(&LocalConfig {
            dir: None,
            listen: "127.0.0.1:0".parse().expect("address"),
            center_port: 0,
            nodes: larder::local::NODES_MIN,
            groups: args.groups,
            requirepass: None,
            metrics: None,
            hot_key_writes_per_sec_max: None,
            hot_key_share_reads_min_per_sec: larder_proxy::HotKeyConfig::default()
                .share_reads_min_per_sec,
            hot_slot_requests_per_sec_max: 0,
            // The bench measures the groups it was asked for, never a split under way.
            groups_per_node_min: 0,
            retain_log_ms: 0,
            read_rounds: !args.no_read_rounds,
            coalesce_runners: args.coalesce_runners,
        }))
        .context("starting the local cluster")?;
    let port = cluster.proxy_address.port();
    // Let every group elect a leader before measuring.
    std::thread::sleep(Duration::from_secs(2));
    // The cluster runs in this process: its CPU is this process's.
    let larder = run_all("larder", port, &[std::process::id()], args);
    let data = runtime.block_on(cluster.stop());
    drop(runtime);
    drop(data);
    larder
}

/// One round of every case on each peer (none with `--no-peer`), each started afresh.
fn run_peers(args: &BenchArgs) -> anyhow::Result<Vec<ServerRun>> {
    let mut peers: Vec<ServerRun> = Vec::new();
    if !args.no_peer {
        let dir = tempfile::tempdir().context("temporary directory for redis-server")?;
        for (name, durable) in [(REDIS_ALWAYS, true), ("redis no-persist", false)] {
            let peer = start_redis(dir.path(), durable)?;
            peers.push(run_all(name, peer.port, &[peer.child.id()], args)?);
        }
        if !args.no_relay {
            peers.push(run_relayed(dir.path(), args)?);
        }
    }
    Ok(peers)
}

/// One server's rounds as one run: each figure of each case and test the median of the
/// rounds that have it (the mean of the middle two for an even count), in the first round's
/// order; the errors of every round.
fn median_run(rounds: Vec<ServerRun>) -> ServerRun {
    let Some(first) = rounds.first() else {
        return ServerRun::default();
    };
    let median = |mut values: Vec<f64>| -> Option<f64> {
        values.sort_by(f64::total_cmp);
        let n = values.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(values[n / 2]),
            _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
        }
    };
    let results = first
        .results
        .iter()
        .map(|like| {
            let all: Vec<&Measured> = rounds.iter().filter_map(|run| run.result(like)).collect();
            let of = |field: fn(&Measured) -> Option<f64>| {
                median(all.iter().filter_map(|m| field(m)).collect())
            };
            Measured {
                case: like.case.clone(),
                test: like.test.clone(),
                rps: of(|m| Some(m.rps)).unwrap_or(0.0),
                p50_ms: of(|m| Some(m.p50_ms)).unwrap_or(0.0),
                p99_ms: of(|m| Some(m.p99_ms)).unwrap_or(0.0),
                p999_ms: of(|m| Some(m.p999_ms)).unwrap_or(0.0),
                cpu_us_per_op: of(|m| m.cpu_us_per_op),
                switches_per_op: of(|m| m.switches_per_op),
            }
        })
        .collect();
    ServerRun {
        server: first.server.clone(),
        rounds: rounds.len(),
        relay_of: first.relay_of.clone(),
        results,
        errors: rounds.iter().flat_map(|run| run.errors.clone()).collect(),
        slow_lane_rps: median(rounds.iter().filter_map(|run| run.slow_lane_rps).collect()),
    }
}

/// The name of the durable peer, which the relayed one fronts.
const REDIS_ALWAYS: &str = "redis always";

/// Every case against a fresh `redis-server` with `appendfsync always` behind a relay in this
/// process (the Larder cluster has stopped, so this process's CPU is the relay's).
fn run_relayed(dir: &Path, args: &BenchArgs) -> anyhow::Result<ServerRun> {
    // A directory of its own: in the first peer's, it would load that one's log first.
    let dir = dir.join("relayed");
    std::fs::create_dir_all(&dir).context("the relayed redis-server's directory")?;
    let peer = start_redis(&dir, true)?;
    // As many workers as Larder's runtime had (one per core), so the hop is not starved.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the relay's runtime")?;
    let relay = runtime
        .block_on(Relay::bind(
            ([127, 0, 0, 1], 0).into(),
            ([127, 0, 0, 1], peer.port).into(),
            Relay::MAX_CONNECTIONS,
        ))
        .context("starting the relay")?;
    let pids = [peer.child.id(), std::process::id()];
    let mut run = run_all("redis always+relay", relay.address().port(), &pids, args)?;
    run.relay_of = Some(REDIS_ALWAYS.to_string());
    Ok(run)
}

fn print_table(larder: &ServerRun, peers: &[ServerRun]) {
    print_results(larder, peers);
    if let Some(rps) = larder.slow_lane_rps {
        out!("\nslow lane: the 2 clients' LRANGE 0 -1 ran at {rps:.0}/s beside the GETs (larder)");
        for peer in peers {
            if let Some(theirs) = peer.slow_lane_rps {
                out!(", {theirs:.0}/s ({})", peer.server);
            }
        }
        outln!();
    }
}

fn print_results(larder: &ServerRun, peers: &[ServerRun]) {
    let mut case = None;
    for result in &larder.results {
        if case != Some(&result.case) {
            case = Some(&result.case);
            outln!();
            outln!("{}", result.case);
            out!(
                "  {:<6} {:>10} {:>8} {:>8} {:>8} {:>7} {:>6}",
                "test",
                "larder rps",
                "p50 ms",
                "p99 ms",
                "p999 ms",
                "cpu µs",
                "cs/op"
            );
            for peer in peers {
                out!(
                    " | {:>18} {:>6} {:>8} {:>8} {:>7} {:>6}",
                    peer.server,
                    "ratio",
                    "p50 ms",
                    "p99 ms",
                    "cpu µs",
                    "cs/op"
                );
                if peer.relay_of.is_some() {
                    out!(" {:>6}", "floor");
                }
            }
            outln!();
        }
        out!(
            "  {:<6} {:>10.0} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>6}",
            result.test,
            result.rps,
            result.p50_ms,
            result.p99_ms,
            result.p999_ms,
            cpu(result.cpu_us_per_op),
            switches(result.switches_per_op)
        );
        for peer in peers {
            let theirs = peer.result(result);
            match theirs {
                Some(theirs) => out!(
                    " | {:>18.0} {:>6.2} {:>8.3} {:>8.3} {:>7} {:>6}",
                    theirs.rps,
                    result.rps / theirs.rps,
                    theirs.p50_ms,
                    theirs.p99_ms,
                    cpu(theirs.cpu_us_per_op),
                    switches(theirs.switches_per_op)
                ),
                None => out!(
                    " | {:>18} {:>6} {:>8} {:>8} {:>7} {:>6}",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-"
                ),
            }
            if peer.relay_of.is_some() {
                match peer.floor(peers, result) {
                    Some(floor) => out!(" {floor:>6.2}"),
                    None => out!(" {:>6}", "-"),
                }
            }
        }
        outln!();
    }
}

impl ServerRun {
    /// This server's result for the case and test of `like`.
    fn result(&self, like: &Measured) -> Option<&Measured> {
        self.results
            .iter()
            .find(|r| r.case == like.case && r.test == like.test)
    }

    /// For the peer behind the relay: its rate for the case and test of `like` over the rate
    /// of the peer it relays to (found among `peers`), the share of a server's rate that a
    /// proxy hop leaves.
    fn floor(&self, peers: &[ServerRun], like: &Measured) -> Option<f64> {
        let direct = self.relay_of.as_ref()?;
        let direct = peers.iter().find(|peer| &peer.server == direct)?;
        Some(self.result(like)?.rps / direct.result(like)?.rps)
    }
}

/// A CPU figure for the table: whole microseconds, `-` where none was measured.
fn cpu(us_per_op: Option<f64>) -> String {
    us_per_op.map_or_else(|| "-".to_string(), |us| format!("{us:.0}"))
}

/// Context switches per request for the table: tenths, `-` where none were counted.
fn switches(per_op: Option<f64>) -> String {
    per_op.map_or_else(|| "-".to_string(), |n| format!("{n:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slow_lane_rate_is_the_last_overall_figure() {
        let progress = "lrange: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\r\
                        lrange: rps=64.0 (overall: 63.7) avg_msec=27.6 (overall: 27.6)\r\
                        lrange: rps=71.7 (overall: 67.7) avg_msec=26.3 (overall: 26.9)\r";
        assert_eq!(last_overall_rps(progress), Some(67.7));
        assert_eq!(
            last_overall_rps("lrange: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)"),
            None
        );
        assert_eq!(last_overall_rps(""), None);
    }

    /// What redis-benchmark 7.0 prints for one test (trimmed), with the progress lines it
    /// overwrites in place.
    const REPORT: &str = "SET: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\r\
====== SET ======
  2000 requests completed in 0.11 seconds
  5 parallel clients

Latency by percentile distribution:
0.000% <= 0.031 milliseconds (cumulative count 4)
50.000% <= 0.103 milliseconds (cumulative count 1096)
99.805% <= 5.975 milliseconds (cumulative count 1997)
99.902% <= 6.015 milliseconds (cumulative count 1999)
99.951% <= 6.039 milliseconds (cumulative count 2000)
100.000% <= 6.039 milliseconds (cumulative count 2000)

Cumulative distribution of latencies:
54.800% <= 0.103 milliseconds (cumulative count 1096)
100.000% <= 6.103 milliseconds (cumulative count 2000)

Summary:
  throughput summary: 18018.02 requests per second
  latency summary (msec):
          avg       min       p50       p95       p99       max
        0.223     0.024     0.103     0.247     3.639     6.039
====== GET ======
Summary:
  throughput summary: 20000.00 requests per second
  latency summary (msec):
          avg       min       p50       p95       p99       max
        0.200     0.024     0.100     0.247     0.500     6.039
";

    #[test]
    fn the_report_gives_rate_and_percentiles_per_test() {
        let (results, errors) = parse_report(REPORT, "case");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(results.len(), 2, "{results:?}");
        let set = &results[0];
        assert_eq!(set.test, "SET");
        assert_eq!(set.rps, 18018.02);
        assert_eq!((set.p50_ms, set.p99_ms, set.p999_ms), (0.103, 3.639, 6.015));
        // The cumulative distribution's lines (also "N% <= …") do not overwrite p99.9.
        let get = &results[1];
        assert_eq!((get.test.as_str(), get.rps), ("GET", 20000.0));
        assert_eq!((get.p50_ms, get.p99_ms), (0.1, 0.5));
    }

    #[test]
    fn this_process_has_a_cpu_time_and_a_load_knows_its_request_count() {
        // Burn CPU until a tick (10 ms) is counted, not for a fixed wall time: a descheduled
        // test would burn none. Bounded, so a figure that never moves fails below.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while cpu_seconds(std::process::id()).is_some_and(|cpu| cpu == 0.0)
            && started.elapsed() < Duration::from_secs(10)
        {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let cpu = cpu_seconds(std::process::id()).expect("/proc/self/stat");
        assert!(cpu > 0.0, "{cpu}");
        assert_eq!(cpu_seconds(u32::MAX), None);
        // A thread that waits to be woken twice switches at least twice; its count is gone
        // with it, so it is read while it waits a third time.
        let (wake, woken) = std::sync::mpsc::channel::<()>();
        let (waited, wait) = std::sync::mpsc::channel::<()>();
        let waiter = std::thread::spawn(move || {
            for _ in 0..3 {
                let _ = woken.recv();
                let _ = waited.send(());
            }
        });
        let before = context_switches(std::process::id()).expect("/proc/self/task");
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(5));
            wake.send(()).expect("waiter");
            wait.recv().expect("waiter");
        }
        let after = context_switches(std::process::id()).expect("/proc/self/task");
        assert!(after >= before + 2, "{before} -> {after}");
        wake.send(()).expect("waiter");
        waiter.join().expect("waiter");
        assert_eq!(context_switches(u32::MAX), None);
        let set = Load::new(1234, 5, 1, 3).tests("set");
        assert_eq!(set.requests, 1234);
        // Writes draw from the large keyspace (each `SET` a new key), reads from the small one.
        let keyspace = |load: &Load| {
            let at = load.args.iter().position(|arg| arg == "-r").expect("-r");
            load.args[at + 1].clone()
        };
        assert_eq!(keyspace(&set), WRITE_KEYSPACE.to_string());
        assert_eq!(
            keyspace(&Load::new(1, 1, 1, 3).tests("get")),
            READ_KEYSPACE.to_string()
        );
    }

    #[test]
    fn the_floor_is_the_relayed_rate_over_the_direct_one_of_the_same_case() {
        let measured = |case: &str, test: &str, rps: f64| Measured {
            case: case.into(),
            test: test.into(),
            rps,
            p50_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            cpu_us_per_op: None,
            switches_per_op: None,
        };
        let run = |server: &str, relay_of: Option<&str>, results| ServerRun {
            server: server.into(),
            relay_of: relay_of.map(Into::into),
            results,
            ..ServerRun::default()
        };
        let peers = vec![
            run(
                "redis always",
                None,
                vec![measured("a", "GET", 100.0), measured("b", "GET", 400.0)],
            ),
            run("redis no-persist", None, vec![measured("a", "GET", 50.0)]),
            run(
                "redis always+relay",
                Some("redis always"),
                vec![measured("a", "GET", 60.0), measured("b", "GET", 100.0)],
            ),
        ];
        let relayed = &peers[2];
        assert_eq!(relayed.floor(&peers, &measured("a", "GET", 1.0)), Some(0.6));
        assert_eq!(
            relayed.floor(&peers, &measured("b", "GET", 1.0)),
            Some(0.25)
        );
        // A test the relayed peer did not run, and a peer not behind a relay: no floor.
        assert_eq!(relayed.floor(&peers, &measured("a", "SET", 1.0)), None);
        assert_eq!(peers[0].floor(&peers, &measured("a", "GET", 1.0)), None);
        // Its direct peer missing (run with --no-peer's partner gone): none either.
        assert_eq!(relayed.floor(&peers[1..], &measured("a", "GET", 1.0)), None);
    }

    #[test]
    fn rounds_are_reported_by_their_medians() {
        let measured = |test: &str, rps: f64, cpu: Option<f64>| Measured {
            case: "-c 50".into(),
            test: test.into(),
            rps,
            p50_ms: rps / 1000.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            cpu_us_per_op: cpu,
            switches_per_op: None,
        };
        let round = |results, errors: &[&str], slow: Option<f64>| ServerRun {
            server: "larder".into(),
            rounds: 1,
            relay_of: None,
            results,
            errors: errors.iter().map(|e| e.to_string()).collect(),
            slow_lane_rps: slow,
        };
        let rounds = vec![
            round(
                vec![
                    measured("SET", 300.0, Some(9.0)),
                    measured("GET", 10.0, None),
                ],
                &[],
                Some(5.0),
            ),
            round(
                vec![
                    measured("SET", 100.0, Some(7.0)),
                    measured("GET", 40.0, None),
                ],
                &["ERR one"],
                None,
            ),
            // A round that missed GET (redis-benchmark printed nothing for it).
            round(vec![measured("SET", 200.0, Some(8.0))], &[], Some(7.0)),
        ];
        let run = median_run(rounds);
        assert_eq!(run.rounds, 3);
        assert_eq!(run.server, "larder");
        let set = &run.results[0];
        assert_eq!(
            (set.test.as_str(), set.rps, set.p50_ms),
            ("SET", 200.0, 0.2)
        );
        assert_eq!(set.cpu_us_per_op, Some(8.0));
        // Two rounds have GET: the mean of the two; no round had its CPU.
        let get = &run.results[1];
        assert_eq!((get.test.as_str(), get.rps), ("GET", 25.0));
        assert_eq!(get.cpu_us_per_op, None);
        assert_eq!(run.errors, vec!["ERR one".to_string()]);
        assert_eq!(run.slow_lane_rps, Some(6.0));
        assert_eq!(median_run(Vec::new()).results.len(), 0);
    }

    #[test]
    fn both_kinds_of_context_switch_are_counted() {
        let status = "Name:\tlarder\nThreads:\t9\nvoluntary_ctxt_switches:\t120\n\
                      nonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(switches_in_status(status), 127);
        assert_eq!(switches_in_status("Name:\tgone\n"), 0);
    }

    #[test]
    fn error_lines_are_kept() {
        let text = format!("{REPORT}\nError from server: ERR unknown command\n");
        let (_, errors) = parse_report(&text, "case");
        assert_eq!(
            errors,
            vec!["Error from server: ERR unknown command".to_string()]
        );
    }
}
