//! `larder`: the command-line entry point.
//!
//! - `larder sim --seed N`: one seeded simulation of a 3-node slot group under faults.
//! - `larder sim --seeds A..B`: a sweep; exits non-zero if any seed fails.
//! - `--check-determinism`: run each seed twice and compare the event traces.
//! - `larder up [--nodes N]`: a local cluster in this process; `larder node --dir DIR --center
//!   ...` adds a storage node to it; `larder admin status` shows it as the center sees it.
//! - `larder center|node|proxy --config FILE`: the roles as processes.
//!
//! It is the top-level package `larder/`: it depends on every other crate (the roles, the real
//! environment, the simulator, the reports) and nothing depends on it.

// The binary assembles real processes (files, sockets, signals, real time): the bans that
// keep simulated code on the environment traits do not apply to it. The simulator it runs
// lives in larder-sim, which keeps them.
#![allow(clippy::disallowed_methods)]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use larder_core::bugs::Bug;
use larder_sim::{SimConfig, check_determinism, run};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Every role of a process allocates per request (frames, replies, log entries) from many
/// tasks on few threads; under that load glibc's malloc grew and trimmed its per-thread arenas
/// (mprotect and page faults in the profile of `larder up` under redis-benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `print!` for the binary's output; see [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), false) };
}

/// `println!` for the binary's output; see [`write_stdout`].
macro_rules! outln {
    () => { $crate::write_stdout(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*), true) };
}

mod admin;
mod backup;
mod bench;
mod bug_matrix;
mod dashboard;
mod jepsen;
mod relay;
mod serve;
mod shrink;
mod sync;
mod up;

#[derive(Parser)]
#[command(
    name = "larder",
    version,
    about = "Larder: a Raft-replicated KV store and its deterministic simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: `text` for people, `json` (one object a line)
    /// for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Command {
    /// The log filter when RUST_LOG is unset. The role processes an operator runs log
    /// Larder's own INFO lines (role start, leadership, registry, membership, routing,
    /// repairs and migrations); everything else, and every other command, only warnings and
    /// errors. openraft stays off: injected faults and ordinary shutdowns make it log errors
    /// by design, which would read as failures (RUST_LOG=openraft=info brings it back).
    fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Center(_) | Command::Node(_) | Command::Proxy(_) => {
                "warn,openraft=off,larder=info,larder_center=info,larder_storage=info,larder_proxy=info"
            }
            _ => "warn,openraft=off",
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run seeded simulations of a 3-node slot group under faults.
    Sim(SimArgs),
    /// Start a local cluster on loopback (3 center replicas, 3 or more storage nodes and a RESP
    /// proxy) until Ctrl-C.
    Up(up::UpArgs),
    /// Ask the center about the cluster (`larder admin status`).
    Admin(admin::AdminArgs),
    /// redis-benchmark against a local cluster and, side by side, against redis-server.
    Bench(bench::BenchArgs),
    /// A Jepsen-style run on real processes: kill -9, SIGSTOP, partitions through relays.
    Jepsen(jepsen::JepsenArgs),
    /// A zero-work TCP relay until Ctrl-C: the cheapest proxy hop there can be, to put in
    /// front of redis-server when comparing it with Larder's proxy
    /// (`scripts/serial-latency.sh`; `larder bench` runs one of its own).
    Relay(RelayArgs),
    /// Check a history for linearizability (history.jsonl, Jepsen `INFO jepsen.util` logs,
    /// Porcupine EDN kv logs).
    Check(CheckArgs),
    /// Import a Redis RDB file (dump.rdb, BGSAVE's output) into a running cluster through its
    /// proxy, key by key as RESTORE commands.
    Import(ImportArgs),
    /// Back a running cluster up into a directory: each slot group's base and the committed
    /// log entries since (`--every` to keep archiving), for point-in-time restore.
    Backup(backup::BackupArgs),
    /// Keep another cluster (its proxy, `--to`) equal to this one, one way: a standby in
    /// another region, or the new home of a cluster being moved. Reads every group's committed
    /// entries and writes the values they made; follows slot moves. One pass, or `--every`.
    Sync(sync::SyncArgs),
    /// Rebuild the cluster's data as it was at a moment (`--at`) from a backup directory, as
    /// an RDB file (`larder import` loads it into a cluster; redis-server loads it too).
    Restore(backup::RestoreArgs),
    /// Run a center replica or observer process (TOML config).
    Center(serve::ConfigArgs),
    /// Run a storage node process (TOML config), or join a running cluster with one
    /// (`--dir DIR --center ID@HOST:PORT,...`).
    Node(serve::NodeArgs),
    /// Run a RESP proxy process (TOML config).
    Proxy(serve::ConfigArgs),
}

#[derive(Args)]
struct RelayArgs {
    /// Where to listen.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Where to carry each connection.
    #[arg(long)]
    to: std::net::SocketAddr,
    /// How many connections to carry at once; one more is closed at accept.
    #[arg(long, default_value_t = relay::Relay::MAX_CONNECTIONS)]
    max_connections: usize,
}

/// `larder relay`: relays until Ctrl-C.
fn relay(args: RelayArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async {
        let relay = relay::Relay::bind(args.listen, args.to, args.max_connections)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        outln!("relaying {} -> {}", relay.address(), args.to);
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok(true)
    })
}

#[derive(Args)]
struct CheckArgs {
    /// The history file.
    path: std::path::PathBuf,
    /// Give up after this long and answer "unknown" (never a false verdict).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    time_limit: Duration,
    /// Judge with the budget a simulated run's check gets instead (states and memory, no
    /// time limit), so a history saved by `larder sim --report-dir` gets the verdict its run
    /// got, `unknown` included.
    #[arg(long, conflicts_with = "time_limit")]
    sim_budget: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ImportArgs {
    /// The RDB file: redis-server's dump.rdb, BGSAVE's or `redis-cli --rdb`'s output (RDB
    /// versions 1 to 12, Redis up to 7.4); `-` reads it from standard input
    /// (`redis-cli --rdb - | larder import -`).
    file: std::path::PathBuf,
    /// The proxy to import into.
    #[arg(long, default_value = "127.0.0.1:6380")]
    to: String,
    /// The proxy's password (`requirepass`), if it has one.
    #[arg(long, env = "LARDER_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Overwrite keys the cluster already has (RESTORE ... REPLACE); without it they are kept
    /// and counted.
    #[arg(long)]
    replace: bool,
    /// The file's database to import (Larder has one keyspace; keys of other databases are
    /// counted, not imported).
    #[arg(long, default_value_t = 0)]
    db: u64,
    /// Commands sent before their answers are read.
    #[arg(long, default_value_t = larder::import::BATCH_DEFAULT)]
    batch: usize,
    /// Connections to the proxy sending batches at once.
    #[arg(long, default_value_t = larder::import::CONNECTIONS_DEFAULT)]
    connections: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `larder import`: true if every key is accounted for and none failed.
fn import(args: ImportArgs) -> anyhow::Result<bool> {
    // Offline tooling: the user waits in real time.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    // Standard input has no size to measure progress against: a spinner counts bytes instead.
    #[allow(clippy::disallowed_methods)]
    let size = std::fs::metadata(&args.file).map(|m| m.len()).ok();
    let (bar, template) = match size {
        Some(size) if args.file != std::path::Path::new("-") => (
            indicatif::ProgressBar::new(size),
            "{bar:40} {bytes}/{total_bytes} read, {msg} [{elapsed_precise}, eta {eta}]",
        ),
        _ => (
            indicatif::ProgressBar::new_spinner(),
            "{spinner} {bytes} read, {msg} [{elapsed_precise}]",
        ),
    };
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("progress template"));
    let config = larder::import::ImportConfig {
        file: args.file,
        to: args.to,
        password: args.password,
        replace: args.replace,
        db: args.db,
        batch: args.batch,
        connections: args.connections,
    };
    let report = larder::import::import(&config, |report| {
        bar.set_position(report.bytes_read);
        bar.set_message(format!("{} keys imported", report.imported));
    })?;
    bar.finish_and_clear();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "{}: RDB version {}{}, {} bytes read in {:.1} s",
            config.file.display(),
            report.rdb_version,
            report
                .redis_version
                .as_ref()
                .map(|v| format!(" (redis {v})"))
                .unwrap_or_default(),
            report.bytes_read,
            started.elapsed().as_secs_f64()
        );
        outln!("  imported          {}", report.imported);
        outln!("  kept (existed)    {}", report.kept);
        outln!("  expired           {}", report.expired);
        outln!("  other databases   {}", report.other_db);
        for (kind, count) in &report.skipped {
            outln!("  skipped ({kind}) {count}");
        }
        outln!("  too large         {}", report.oversized);
        outln!("  functions skipped {}", report.functions);
        outln!("  failed            {}", report.failed);
        for (key, answer) in &report.failures {
            outln!("    {key}: {answer}");
        }
        if let Some(reason) = &report.stopped {
            outln!("stopped before the file's end: {reason}");
        }
    }
    Ok(report.complete())
}

/// Writes the binary's output. A reader that closes stdout early (`larder check FILE | head`)
/// ends the process quietly with the status a shell reports for a tool killed by SIGPIPE
/// (128 + 13), as `cat` or `grep` end. `println!` would panic with a backtrace instead: Rust
/// ignores SIGPIPE, and restoring the signal takes `unsafe`, which the workspace forbids.
fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let mut written = out.write_fmt(args);
    if newline && written.is_ok() {
        written = out.write_all(b"\n");
    }
    match written {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(CLOSED_STDOUT_STATUS)
        }
        Err(error) => panic!("failed printing to stdout: {error}"),
    }
}

/// The exit status when stdout's reader has gone ([`write_stdout`]).
const CLOSED_STDOUT_STATUS: i32 = 141;

fn check(args: CheckArgs) -> anyhow::Result<bool> {
    // Offline tooling: the user waits in real time.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let budget = if args.sim_budget {
        larder_sim::linearizability_budget()
    } else {
        larder_workloads::checker::Budget::until(started + args.time_limit)
    };
    let report = larder_workloads::check_file_with(&args.path, &budget)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{report}");
        outln!("checked in {:.3} s", started.elapsed().as_secs_f64());
    }
    Ok(!report.is_not_linearizable())
}

#[derive(Args)]
struct SimArgs {
    /// The seed of a single run.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// A range of seeds to sweep, `A..B` (B exclusive) or `A..=B`.
    #[arg(long)]
    seeds: Option<String>,
    /// Simulated duration of the workload (e.g. `20s`, `2m`).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Run each seed twice and fail on any difference in the event trace.
    #[arg(long)]
    check_determinism: bool,
    /// Run without injecting faults.
    #[arg(long)]
    no_faults: bool,
    /// Print the deterministic JSON summary instead of text.
    #[arg(long)]
    json: bool,
    /// Print the fault plan before running.
    #[arg(long)]
    print_plan: bool,
    /// With --seed: write the run's whole event trace (one event per line: simulated
    /// microseconds, actor, event) to this file, for reading what happened when.
    #[arg(long)]
    events_out: Option<std::path::PathBuf>,
    /// Simulated time per simulator step, in milliseconds. Smaller is finer message timing,
    /// larger is faster; a seed reproduces only with the same tick.
    #[arg(long, default_value_t = SimConfig::TICK_MS_DEFAULT)]
    tick_ms: u64,
    /// Simulate the whole cluster: 3 center replicas, 5 storage nodes, 8 slot groups of three
    /// replicas placed by the center, 2 RESP proxies, clients speaking RESP to the proxies.
    #[arg(long)]
    cluster: bool,
    /// With --cluster: center replicas (0: a static routing table, groups formed by the
    /// simulator, no center faults).
    #[arg(long, default_value_t = 3)]
    centers: u64,
    /// Workload clients (default 3, 4 with --cluster; with --rate and no --clients, enough
    /// for the rate: one per 25 ops/s). At most 99.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=larder_sim::run::CLIENTS_MAX))]
    clients: Option<u64>,
    /// Target operations per simulated second across all clients: each client paces its
    /// operations (pauses counted from each invocation, averaging clients/rate). The summary
    /// prints the rate achieved.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// A hot key: this percentage of the register operations go to one register.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100))]
    hot_key: Option<u64>,
    /// Locks with fencing tokens in the workload: this many lock objects, each a lock its
    /// clients acquire, renew and release with leases of up to a second, and a counter they
    /// increment in `MULTI`/`LOCK.FENCE`/`EXEC` with the token they hold (checked by the lock
    /// model). Off in the swarm's own draw, so its seeds replay as they did.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=8))]
    locks: Option<u64>,
    /// Back every group up during the run as `larder backup` does (from each replica in turn,
    /// under the faults), and check at the end that the backup rebuilds each group exactly.
    /// The nodes keep their log entries for the run (`--retain-log`).
    #[arg(long)]
    backup: bool,
    /// Run `larder sync`'s work (one-way cross-cluster sync) on what the --backup archiver
    /// reads, into a model target cluster, and check at the end that the target holds exactly
    /// what the source does (implies --backup).
    #[arg(long)]
    sync: bool,
    /// With --cluster: the proxies' per-key write limit (writes per second); refused writes
    /// are failed operations of the history.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    hot_key_writes_per_sec_max: Option<u64>,
    /// With --cluster: the proxies share equal reads of a key taking this many requests per
    /// second (reads arriving while one is fetched take the next fetch's answer).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    hot_key_share_reads_min_per_sec: Option<u64>,
    /// The storage nodes' slow write lane from this many bytes of command (0: every write
    /// takes the slow lane); the default is the node's (1 MiB).
    #[arg(long)]
    slow_write_bytes: Option<usize>,
    /// Swarm fault plans: each seed picks its own mix and rates of faults.
    #[arg(long)]
    swarm: bool,
    /// With --cluster: processes of the history per client connection to a proxy. Above 1,
    /// each client host's processes share one connection and pipeline their requests (the
    /// proxy runs them together), as a multiplexing client library does.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=8))]
    pipelined: u64,
    /// With --cluster and one process per connection: each client reconnects to its proxy
    /// after this many requests (0: only after a failure), so closed connections' sessions
    /// pass to new ones under faults.
    #[arg(long, default_value_t = 0)]
    reconnect_every: u64,
    /// With --cluster: batches in flight per slot group's queue of each proxy's coalescers
    /// (0: coalescing off, every command on its connection's own client).
    #[arg(long, default_value_t = larder_sim::run::SIM_COALESCE_RUNNERS)]
    coalesce_runners: usize,
    /// Write each seed's HTML report, JSON summary and history.jsonl here, and an index page.
    #[arg(long)]
    report_dir: Option<std::path::PathBuf>,
    /// Plant one bug of the catalog (`larder_core::bugs`) in every node, center, proxy and
    /// client; the seeds should now fail. Needs a build with `--features planted-bugs`.
    /// Repeated, plants each (a bug whose effect another layer repairs is caught with the
    /// repair's own bug planted beside it).
    #[arg(long, value_parser = parse_bug)]
    bug: Vec<Bug>,
    /// Run every seed with no bug (each must pass) and then with each bug of the catalog, and
    /// print which seeds caught which bug. Needs a build with `--features planted-bugs`.
    #[arg(long, conflicts_with = "bug")]
    bug_matrix: bool,
    /// Run with this fault plan (JSON, as `--print-plan` or `--shrink` write it) instead of the
    /// one the seed generates.
    #[arg(long)]
    plan: Option<std::path::PathBuf>,
    /// With --seed: minimize the failing seed's fault plan (drop faults while the same failure
    /// persists), write it to --shrink-out and print the command that replays it.
    #[arg(long, requires = "seed")]
    shrink: bool,
    /// Where --shrink writes the minimal plan (default `shrunk-seed-N.json`).
    #[arg(long, requires = "shrink")]
    shrink_out: Option<std::path::PathBuf>,
}

fn parse_bug(name: &str) -> Result<Bug, String> {
    name.parse::<Bug>().map_err(|error| {
        let names: Vec<&str> = Bug::ALL.iter().map(|bug| bug.name()).collect();
        format!("{error}; the catalog: {}", names.join(", "))
    })
}

fn parse_seeds(text: &str) -> anyhow::Result<Vec<u64>> {
    let (start, end, inclusive) = if let Some((a, b)) = text.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = text.split_once("..") {
        (a, b, false)
    } else {
        bail!("--seeds takes A..B or A..=B, got {text:?}");
    };
    let start: u64 = start
        .trim()
        .parse()
        .with_context(|| format!("bad range start in {text:?}"))?;
    let end: u64 = end
        .trim()
        .parse()
        .with_context(|| format!("bad range end in {text:?}"))?;
    let end = if inclusive {
        end.saturating_add(1)
    } else {
        end
    };
    if start >= end {
        bail!("--seeds {text:?} is empty");
    }
    Ok((start..end).collect())
}

fn replay_command(args: &SimArgs, seed: u64) -> String {
    replay_with_plan(args, seed, args.plan.as_deref())
}

/// [`replay_command`] with `plan` in place of the command line's `--plan`.
fn replay_with_plan(args: &SimArgs, seed: u64, plan: Option<&std::path::Path>) -> String {
    let mut command = format!(
        "larder sim --seed {seed} --duration {}",
        humantime::format_duration(args.duration)
    );
    if args.no_faults {
        command.push_str(" --no-faults");
    }
    if args.cluster {
        command.push_str(" --cluster");
        if args.centers != 3 {
            command.push_str(&format!(" --centers {}", args.centers));
        }
    }
    if args.swarm {
        command.push_str(" --swarm");
    }
    if args.pipelined > 1 {
        command.push_str(&format!(" --pipelined {}", args.pipelined));
    }
    if args.reconnect_every > 0 {
        command.push_str(&format!(" --reconnect-every {}", args.reconnect_every));
    }
    if args.coalesce_runners != larder_sim::run::SIM_COALESCE_RUNNERS {
        command.push_str(&format!(" --coalesce-runners {}", args.coalesce_runners));
    }
    if args.tick_ms != SimConfig::TICK_MS_DEFAULT {
        command.push_str(&format!(" --tick-ms {}", args.tick_ms));
    }
    if let Some(clients) = args.clients {
        command.push_str(&format!(" --clients {clients}"));
    }
    if let Some(rate) = args.rate {
        command.push_str(&format!(" --rate {rate}"));
    }
    if let Some(percent) = args.hot_key {
        command.push_str(&format!(" --hot-key {percent}"));
    }
    if let Some(max) = args.hot_key_writes_per_sec_max {
        command.push_str(&format!(" --hot-key-writes-per-sec-max {max}"));
    }
    if let Some(min) = args.hot_key_share_reads_min_per_sec {
        command.push_str(&format!(" --hot-key-share-reads-min-per-sec {min}"));
    }
    if let Some(bytes) = args.slow_write_bytes {
        command.push_str(&format!(" --slow-write-bytes {bytes}"));
    }
    if let Some(objects) = args.locks {
        command.push_str(&format!(" --locks {objects}"));
    }
    if args.sync {
        command.push_str(" --sync");
    } else if args.backup {
        command.push_str(" --backup");
    }
    for bug in &args.bug {
        command.push_str(&format!(" --bug {bug}"));
    }
    if let Some(plan) = plan {
        command.push_str(&format!(" --plan {}", plan.display()));
    }
    command
}

/// A fault plan written by `--print-plan` or `--shrink`.
fn read_plan(path: &std::path::Path) -> anyhow::Result<larder_faults::FaultPlan> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("parsing the fault plan {}", path.display()))
}

/// The configuration of `seed` as the command line describes it (without a planted bug, and
/// with the seed's own plan: `--plan` is applied by the caller).
fn sim_config(args: &SimArgs, seed: u64) -> SimConfig {
    let mut config = if args.cluster {
        let mut config = SimConfig::cluster(seed, args.duration, 5, 8, 2);
        config.centers = args.centers;
        config
    } else {
        SimConfig::new(seed, args.duration)
    };
    config.faults = !args.no_faults;
    config.swarm = args.swarm;
    config.pipelined = args.pipelined;
    config.reconnect_every = args.reconnect_every;
    config.coalesce_runners = args.coalesce_runners;
    config.tick = Duration::from_millis(args.tick_ms.max(1));
    config.rate = args.rate;
    config.clients = match (args.clients, args.rate) {
        (Some(clients), _) => clients,
        (None, Some(rate)) => config.clients.max(rate.div_ceil(RATE_PER_CLIENT)),
        (None, None) => config.clients,
    }
    .min(larder_sim::run::CLIENTS_MAX);
    if let Some(percent) = args.hot_key {
        config.workload = config.workload.clone().with_hot_key(percent);
    }
    if let Some(objects) = args.locks {
        config.workload = config.workload.clone().with_locks(objects, 10);
    }
    if args.sync {
        config = config.with_sync();
    } else if args.backup {
        config = config.with_backup();
    }
    config.hot_key_writes_per_sec_max = args.hot_key_writes_per_sec_max;
    config.hot_key_share_reads_min_per_sec = args.hot_key_share_reads_min_per_sec;
    if let Some(bytes) = args.slow_write_bytes {
        config.node.lanes.slow_write_bytes = bytes;
    }
    config
}

/// Operations per simulated second one client is given with `--rate` and no `--clients`: a
/// RESP client has one request in flight, and a cluster write (proxy, leader, quorum sync,
/// apply) takes some 10-20 simulated ms, so 25 ops/s (a start every 40 ms) leaves it room.
const RATE_PER_CLIENT: u64 = 25;

fn sim(args: SimArgs) -> anyhow::Result<bool> {
    let seeds = match (&args.seed, &args.seeds) {
        (Some(seed), _) => vec![*seed],
        (None, Some(range)) => parse_seeds(range)?,
        (None, None) => vec![0],
    };
    if args.bug_matrix {
        return bug_matrix::run_matrix(&args, &seeds);
    }
    if args.shrink {
        let seed = seeds[0];
        let out = args
            .shrink_out
            .clone()
            .unwrap_or_else(|| format!("shrunk-seed-{seed}.json").into());
        return shrink::shrink(&args, seed, &out);
    }
    let plan = match &args.plan {
        Some(path) => Some(read_plan(path)?),
        None => None,
    };
    let sweep = seeds.len() > 1;
    if let Some(dir) = &args.report_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let progress = if sweep && !args.json {
        let bar = indicatif::ProgressBar::new(seeds.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} seeds, {msg} [{elapsed_precise}, eta {eta}]",
            )
            .expect("progress template"),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut failed = Vec::new();
    let mut index = Vec::new();
    let mut coverage = larder_reports::Coverage::default();
    for &seed in &seeds {
        let mut config = sim_config(&args, seed);
        if plan.is_some() {
            config.plan = plan.clone();
        }
        for &bug in &args.bug {
            config.bugs.try_plant(bug)?;
        }
        if args.print_plan {
            say(&progress, serde_json::to_string_pretty(&config.plan())?);
        }
        config.keep_events |= args.events_out.is_some();
        let replay = replay_command(&args, seed);
        let (report, divergence) = if args.check_determinism {
            check_determinism(&config)
                .with_context(|| format!("seed {seed}; replay with: {replay}"))?
        } else {
            (
                run(&config).with_context(|| format!("seed {seed}; replay with: {replay}"))?,
                None,
            )
        };
        if let Some(path) = &args.events_out {
            let events = report.events.as_deref().unwrap_or_default();
            std::fs::write(path, events.join("\n") + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let ok = report.passed() && divergence.is_none();
        if args.json {
            outln!("{}", larder_reports::summary_json(&report));
        } else if sweep {
            let ops = report.ops.ok + report.ops.fail + report.ops.info;
            say(
                &progress,
                format!(
                    "seed {seed:>5} {} {ops:>6} ops, trace {}{}",
                    if ok { "PASS" } else { "FAIL" },
                    &report.trace_hash[..16],
                    if ok {
                        String::new()
                    } else {
                        let violations: Vec<String> =
                            report.violations.iter().map(ToString::to_string).collect();
                        format!("\n  {}\n  replay: {replay}", violations.join("\n  "))
                    }
                ),
            );
        } else {
            out!("{}", larder_reports::summary_text(&report, &replay));
        }
        if args.check_determinism {
            let line = match &divergence {
                None => format!(
                    "determinism     same trace hash on both runs ({})",
                    report.trace_hash
                ),
                Some(text) => format!(
                    "determinism     FAIL: {text}\nreplay with     {replay} --check-determinism"
                ),
            };
            if !sweep || divergence.is_some() {
                say(&progress, line);
            }
        }
        if let Some(dir) = &args.report_dir {
            write_reports(dir, &report, &replay)?;
            index.push(larder_reports::html::IndexRow {
                seed,
                passed: ok,
                ops: report.ops.ok + report.ops.fail + report.ops.info,
                faults: report.faults.values().sum(),
                trace_hash: report.trace_hash.clone(),
                page: format!("seed-{seed}.html"),
                violations: report.violations.iter().map(ToString::to_string).collect(),
            });
        }
        coverage.add(&report.faults);
        coverage.add_points(&report.points);
        if !ok {
            failed.push(seed);
        }
        progress.inc(1);
        progress.set_message(format!("{} failed", failed.len()));
    }
    progress.finish_and_clear();
    if let Some(dir) = &args.report_dir {
        let path = dir.join("index.html");
        std::fs::write(&path, larder_reports::html::index_page(&index, &coverage))
            .with_context(|| format!("writing {}", path.display()))?;
        outln!("reports in {}", path.display());
    }
    if sweep && !args.json {
        outln!("{coverage}");
    }
    if sweep {
        outln!(
            "{} seeds, {} failed{}",
            seeds.len(),
            failed.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!(": {failed:?}")
            }
        );
    }
    Ok(failed.is_empty())
}

/// Prints a line above the progress bar (and also when stdout is not a terminal, where the
/// bar itself is hidden).
fn say(progress: &indicatif::ProgressBar, line: impl std::fmt::Display) {
    progress.suspend(|| outln!("{line}"));
}

/// `seed-N.html`, `seed-N.json` and `seed-N.history.jsonl` of one run.
fn write_reports(
    dir: &std::path::Path,
    report: &larder_sim::RunReport,
    replay: &str,
) -> anyhow::Result<()> {
    let seed = report.seed;
    let write = |name: String, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(
        format!("seed-{seed}.html"),
        larder_reports::html::run_page(report, replay),
    )?;
    write(
        format!("seed-{seed}.json"),
        larder_reports::summary_json(report),
    )?;
    let history = report.history.to_jsonl_string();
    write(format!("seed-{seed}.history.jsonl"), history)
}

/// Log timestamps: simulated time inside a simulation (so a log line lines up with the trace
/// and the fault plan), wall time otherwise.
struct LogTime;

impl tracing_subscriber::fmt::time::FormatTime for LogTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        if larder_sim::trace::in_simulation() {
            write!(
                w,
                "sim {:>10.3}s",
                larder_sim::trace::sim_now().as_secs_f64()
            )
        } else {
            tracing_subscriber::fmt::time::SystemTime.format_time(w)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.command.default_log_filter()));
    let logs = tracing_subscriber::fmt()
        .with_timer(LogTime)
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let quiet_stop =
        tracing_subscriber::filter::filter_fn(|meta| larder::stopping::logged(meta.target()));
    match cli.log_format {
        LogFormat::Text => logs.finish().with(quiet_stop).init(),
        LogFormat::Json => logs.json().finish().with(quiet_stop).init(),
    }
    let outcome = match cli.command {
        Command::Sim(args) => sim(args),
        Command::Up(args) => up::up(args),
        Command::Admin(args) => admin::admin(args),
        Command::Bench(args) => bench::bench(args),
        Command::Jepsen(args) => jepsen::jepsen(args),
        Command::Relay(args) => relay(args),
        Command::Check(args) => check(args),
        Command::Import(args) => import(args),
        Command::Backup(args) => backup::backup(args),
        Command::Sync(args) => sync::sync(args),
        Command::Restore(args) => backup::restore(args),
        Command::Center(args) => serve::center(args),
        Command::Node(args) => serve::node(args),
        Command::Proxy(args) => serve::proxy(args),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim_args(words: &[&str]) -> SimArgs {
        let words = ["larder", "sim"].iter().chain(words);
        match Cli::try_parse_from(words)
            .expect("the command line parses")
            .command
        {
            Command::Sim(args) => args,
            _ => panic!("not `larder sim`"),
        }
    }

    #[test]
    fn load_options_change_the_run_and_its_replay() {
        let plain = sim_config(&sim_args(&["--cluster", "--seed", "3"]), 3);
        assert_eq!((plain.clients, plain.rate), (4, None));
        assert!(!plain.run_workload().paced);

        // --rate alone: enough clients for it (25 ops/s each), paced.
        let args = sim_args(&["--cluster", "--seed", "3", "--rate", "1000"]);
        let config = sim_config(&args, 3);
        assert_eq!((config.clients, config.rate), (40, Some(1000)));
        assert!(config.run_workload().paced);
        assert_eq!(config.run_workload().think_ms_max, 80);
        assert!(replay_command(&args, 3).ends_with("--cluster --rate 1000"));

        // --clients wins over the rate's own choice.
        let args = sim_args(&["--seed", "3", "--clients", "10", "--rate", "500"]);
        let config = sim_config(&args, 3);
        assert_eq!(config.clients, 10);
        assert_eq!(config.run_workload().think_ms_max, 40);
        assert!(replay_command(&args, 3).ends_with("--clients 10 --rate 500"));

        assert!(Cli::try_parse_from(["larder", "sim", "--clients", "100"]).is_err());
        assert!(Cli::try_parse_from(["larder", "sim", "--rate", "0"]).is_err());
    }

    #[test]
    fn check_judges_by_time_or_by_the_simulators_budget_not_both() {
        let parsed = |words: &[&str]| match Cli::try_parse_from(words).map(|cli| cli.command) {
            Ok(Command::Check(args)) => Some((args.sim_budget, args.time_limit)),
            _ => None,
        };
        assert_eq!(
            parsed(&["larder", "check", "h.jsonl"]),
            Some((false, Duration::from_secs(60)))
        );
        assert_eq!(
            parsed(&["larder", "check", "--sim-budget", "h.jsonl"]),
            Some((true, Duration::from_secs(60)))
        );
        let both = [
            "larder",
            "check",
            "--sim-budget",
            "--time-limit",
            "5s",
            "h.jsonl",
        ];
        assert_eq!(parsed(&both), None);
    }
}
