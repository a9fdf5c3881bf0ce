//! `larder admin <command>`: operator requests to the center over the production network.
//!
//! - `larder admin dashboard`: a web page of the same, updated every second (`crate::dashboard`);
//! - `larder admin hotkeys`: the hottest keys and slots over the last second, merged from the
//!   group leaders' reports ([`larder_protocol::HotReport`] in each node's heartbeat);
//! - `larder admin status`: the cluster as the center leader sees it ([`GetStatus`] ->
//!   [`ClusterStatus`]): nodes (address, registry state, liveness, groups hosted and led),
//!   groups (replicas, leader and term, applied index per replica, broken replicas, slot
//!   ranges) and repairs in flight; `--json` prints the same as JSON.
//!
//! Centers are named `ID@HOST:PORT` (as `larder up` prints them) or `HOST:PORT`. A follower
//! answers with the id of the replica it believes leads; that hint can be followed only to a
//! center whose id was given, so give the ids (and every replica) for one call to suffice;
//! without ids each address is asked in turn.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use larder::local::{CENTER_PORT_DEFAULT, center_addresses};
use larder_center::plan::plan_slot_move;
use larder_core::NodeId;
use larder_core::env::NetError;
use larder_protocol::{
    CallError, CenterResponse, ClusterStatus, DrainNode, Encoded, GetMigrations, GetStatus,
    GroupSummary, Liveness, Migration, MigrationPhase, MoveSlots, NodeState, NodeSummary, Rpc,
    SplitGroup, Steer, SteerMigration, call,
};
use larder_real::{AddressBook, ClusterKey, TcpNet};

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Show the cluster as the center leader sees it: nodes, groups, leaders, applied
    /// indexes, broken replicas, slot ranges, repairs in flight.
    Status(StatusArgs),
    /// Move slots to another group, online: the center copies them, catches up with the
    /// writes made meanwhile, fences the source and commits the new routing epoch.
    MoveSlots(MoveSlotsArgs),
    /// Show every slot migration the center has recorded, with its phase and progress.
    Migrations(MigrationsArgs),
    /// Pause a migration after the page in flight (recorded: it stays paused through a
    /// center failover).
    Pause(SteerArgs),
    /// Resume a paused migration.
    Resume(SteerArgs),
    /// Cancel a migration before its cutover: the source keeps the slots, the target's copy
    /// is deleted. Refused once the cutover has started (move the slots back instead).
    Cancel(SteerArgs),
    /// Drain a storage node: it hands its leaderships over, its replicas are replaced one by
    /// one (learner-first) and it is marked removed once it holds none.
    Drain(DrainArgs),
    /// Split a group: a new group is placed on the least loaded nodes and the upper half of
    /// the group's slots migrate to it.
    Split(SplitArgs),
    /// Even out slots between groups (one migration at a time, each waited for), then wait
    /// until replicas and leaders are balanced across the nodes.
    Rebalance(RebalanceArgs),
    /// Show the hottest keys and slots of the whole cluster over the last second, as the
    /// group leaders counted them (every write and linearizable read passes a leader).
    Hotkeys(StatusArgs),
    /// Serve a web page of the cluster (nodes, groups, the slot map, migrations, hot keys,
    /// live throughput and latency), updated every second.
    Dashboard(DashboardArgs),
}

#[derive(Args, Debug)]
struct DashboardArgs {
    /// Where the page is served (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:9390")]
    listen: SocketAddr,
    /// The proxy's metrics endpoint, for the throughput and latency charts (default: where
    /// `larder up` serves it).
    #[arg(long, default_value = "127.0.0.1:9380")]
    metrics: SocketAddr,
    /// Chart without the proxy's metrics (the groups' applied log entries per second).
    #[arg(long)]
    no_metrics: bool,
    #[command(flatten)]
    center: CenterArgs,
}

#[derive(Args, Debug)]
struct SteerArgs {
    /// The migration's id (`larder admin migrations`).
    id: u64,
    #[command(flatten)]
    center: CenterArgs,
}

#[derive(Args, Debug)]
struct DrainArgs {
    /// The storage node's id.
    node: u64,
    /// Wait until the node holds no replica and is removed.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    center: CenterArgs,
}

#[derive(Args, Debug)]
struct SplitArgs {
    /// The group to split.
    group: u64,
    /// Wait until the migration ends and say how.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    center: CenterArgs,
}

#[derive(Args, Debug)]
struct RebalanceArgs {
    /// Groups whose slot counts differ by at most this many are balanced.
    #[arg(long, default_value_t = 16)]
    tolerance: usize,
    /// Most migrations to run.
    #[arg(long, default_value_t = 64)]
    moves_max: usize,
    /// Give up waiting for replicas and leaders to balance after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    settle: Duration,
    #[command(flatten)]
    center: CenterArgs,
}

#[derive(Args, Debug)]
struct MoveSlotsArgs {
    /// The slots: `FIRST-LAST` or one slot, comma-separated (e.g. `0-99,200`), all owned by
    /// one group.
    #[arg(value_parser = parse_slot_ranges)]
    slots: SlotRanges,
    /// The group that takes them.
    #[arg(long)]
    to: u64,
    /// Wait until the migration ends and say how.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    center: CenterArgs,
}

#[derive(Args, Debug)]
struct MigrationsArgs {
    #[command(flatten)]
    center: CenterArgs,
    /// Print them as JSON.
    #[arg(long)]
    json: bool,
}

/// Inclusive slot ranges, ascending and disjoint (checked by the center too).
#[derive(Debug, Clone)]
struct SlotRanges(Vec<(u16, u16)>);

fn parse_slot_ranges(text: &str) -> Result<SlotRanges, String> {
    let mut ranges = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let slot = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|slot| *slot < larder_core::slots::SLOTS)
                .ok_or_else(|| format!("{s:?} is not a slot (0..16383)"))
        };
        let range = match part.split_once('-') {
            Some((first, last)) => (slot(first)?, slot(last)?),
            None => (slot(part)?, slot(part)?),
        };
        ranges.push(range);
    }
    ranges.sort_unstable();
    larder_core::slots::Ownership::new(0, ranges.clone()).map_err(|e| e.to_string())?;
    if ranges.is_empty() {
        return Err("no slots given".into());
    }
    Ok(SlotRanges(ranges))
}

fn move_slots(args: MoveSlotsArgs) -> anyhow::Result<bool> {
    let centers = args.center.reach()?;
    let request = MoveSlots {
        ranges: args.slots.0.clone(),
        to: args.to,
    };
    let migration = ask_center(&centers, args.center.timeout, request)
        .context("asking the center to move the slots")?;
    outln!(
        "migration {}: slots {} from group {} to group {}: {}",
        migration.id,
        slot_ranges(&migration.ranges),
        migration.from,
        migration.to,
        migration.phase.name()
    );
    if !args.wait {
        return Ok(true);
    }
    let ended = wait_for_migration(&centers, args.center.timeout, migration.id)?;
    Ok(matches!(ended.phase, MigrationPhase::Done { .. }))
}

/// Polls the center until migration `id` ends (bounded: an hour), printing how it ended.
fn wait_for_migration(centers: &Centers, timeout: Duration, id: u64) -> anyhow::Result<Migration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3600) {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(all) = ask_center(centers, timeout, GetMigrations) else {
            continue;
        };
        if let Some(now) = all.into_iter().find(|m| m.id == id)
            && !now.phase.is_active()
        {
            outln!(
                "migration {}: {} after {:.1} s ({} records, {} bytes moved{})",
                now.id,
                describe_phase(&now.phase),
                started.elapsed().as_secs_f64(),
                now.moved_records,
                now.moved_bytes,
                now.cutover_ms
                    .map(|ms| format!(", cutover {ms} ms"))
                    .unwrap_or_default()
            );
            return Ok(now);
        }
    }
    bail!("migration {id} still running after an hour")
}

fn steer(args: SteerArgs, steer: Steer) -> anyhow::Result<bool> {
    let centers = args.center.reach()?;
    let request = SteerMigration { id: args.id, steer };
    let mut now = ask_center(&centers, args.center.timeout, request)
        .with_context(|| format!("asking the center to {steer:?} migration {}", args.id))?;
    let acted = |m: &Migration| match steer {
        Steer::Pause => m.paused,
        Steer::Resume => !m.paused,
        Steer::Cancel => !matches!(m.phase, MigrationPhase::Planned | MigrationPhase::Copying),
    };
    // The center answers once its task acted, or after a second with the record as it was:
    // then look again for a while (a page in flight finishes first).
    let started = Instant::now();
    while !acted(&now) && started.elapsed() < args.center.timeout {
        std::thread::sleep(Duration::from_millis(200));
        if let Ok(all) = ask_center(&centers, args.center.timeout, GetMigrations)
            && let Some(m) = all.into_iter().find(|m| m.id == args.id)
        {
            now = m;
        }
    }
    outln!(
        "migration {}: {}{}",
        now.id,
        describe_phase(&now.phase),
        if now.paused { " (paused)" } else { "" }
    );
    if !acted(&now) {
        bail!(
            "migration {} has not acted on it yet; see `larder admin migrations`",
            now.id
        );
    }
    Ok(true)
}

fn drain(args: DrainArgs) -> anyhow::Result<bool> {
    let centers = args.center.reach()?;
    let state = ask_center(&centers, args.center.timeout, DrainNode { node: args.node })
        .with_context(|| format!("asking the center to drain node {}", args.node))?;
    outln!("node {}: {state:?}", args.node);
    if !args.wait {
        return Ok(true);
    }
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(3600) {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(status) = fetch_status(&centers, args.center.timeout) else {
            continue;
        };
        let Some(node) = status.nodes.iter().find(|n| n.id == args.node) else {
            continue;
        };
        let now = format!("{:?}, {} replica(s)", node.state, node.groups.len());
        if now != last {
            outln!("node {}: {now}", args.node);
            last = now;
        }
        if node.state == Some(NodeState::Removed) {
            outln!(
                "node {} drained in {:.1} s; it can be stopped",
                args.node,
                started.elapsed().as_secs_f64()
            );
            return Ok(true);
        }
    }
    bail!("node {} still draining after an hour", args.node)
}

fn split(args: SplitArgs) -> anyhow::Result<bool> {
    let centers = args.center.reach()?;
    let migration = ask_center(
        &centers,
        args.center.timeout,
        SplitGroup { group: args.group },
    )
    .with_context(|| format!("asking the center to split group {}", args.group))?;
    outln!(
        "group {} splits: migration {} moves slots {} to new group {}",
        args.group,
        migration.id,
        slot_ranges(&migration.ranges),
        migration.to
    );
    if !args.wait {
        return Ok(true);
    }
    let ended = wait_for_migration(&centers, args.center.timeout, migration.id)?;
    Ok(matches!(ended.phase, MigrationPhase::Done { .. }))
}

fn rebalance(args: RebalanceArgs) -> anyhow::Result<bool> {
    let centers = args.center.reach()?;
    let started = Instant::now();
    let mut moves = 0;
    let mut ok = true;
    while moves < args.moves_max {
        let status = fetch_status(&centers, args.center.timeout)?;
        let slots: BTreeMap<u64, Vec<(u16, u16)>> = status
            .groups
            .iter()
            .map(|g| (g.group, g.slots.clone()))
            .collect();
        let Some(step) = plan_slot_move(&slots, args.tolerance) else {
            break;
        };
        let request = MoveSlots {
            ranges: step.ranges.clone(),
            to: step.to,
        };
        let migration = ask_center(&centers, args.center.timeout, request)
            .context("asking the center to move slots")?;
        outln!(
            "migration {}: slots {} from group {} to group {}",
            migration.id,
            slot_ranges(&migration.ranges),
            step.from,
            step.to
        );
        moves += 1;
        let ended = wait_for_migration(&centers, args.center.timeout, migration.id)?;
        if !matches!(ended.phase, MigrationPhase::Done { .. }) {
            ok = false;
            break;
        }
    }
    outln!("slots balanced after {moves} migration(s); waiting for replicas and leaders");
    let deadline = Instant::now() + args.settle;
    loop {
        let status = fetch_status(&centers, args.center.timeout)?;
        let (replicas, leads) = spread(&status);
        if status.repairs.is_empty() && replicas <= 1 && leads <= 1 {
            outln!(
                "balanced in {:.1} s: replicas per node within {replicas}, leaders within {leads}",
                started.elapsed().as_secs_f64()
            );
            return Ok(ok);
        }
        if Instant::now() >= deadline {
            outln!(
                "not balanced after {:.1} s: replicas per node within {replicas}, leaders within \
                 {leads}, {} repair(s) in flight",
                started.elapsed().as_secs_f64(),
                status.repairs.len()
            );
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// How far apart (max - min) the replica counts and the leader counts are over the nodes that
/// may hold replicas (up and in service).
fn spread(status: &ClusterStatus) -> (usize, u64) {
    let serving: Vec<&NodeSummary> = status
        .nodes
        .iter()
        .filter(|n| n.liveness == Liveness::Up && n.state == Some(NodeState::Up))
        .collect();
    let replicas: Vec<usize> = serving
        .iter()
        .map(|n| {
            status
                .groups
                .iter()
                .filter(|g| g.replicas.contains(&n.id))
                .count()
        })
        .collect();
    let leads: Vec<u64> = serving.iter().map(|n| n.leads).collect();
    let gap = |v: &[usize]| v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0);
    let lead_gap = leads.iter().max().unwrap_or(&0) - leads.iter().min().unwrap_or(&0);
    (gap(&replicas), lead_gap)
}

fn describe_phase(phase: &MigrationPhase) -> String {
    match phase {
        MigrationPhase::Cleaning { epoch } | MigrationPhase::Done { epoch } => {
            format!("{} (routing epoch {epoch})", phase.name())
        }
        MigrationPhase::RollingBack { reason } | MigrationPhase::RolledBack { reason } => {
            format!("{}: {reason}", phase.name())
        }
        other => other.name().to_string(),
    }
}

fn migrations(args: MigrationsArgs) -> anyhow::Result<bool> {
    let all = ask_center(&args.center.reach()?, args.center.timeout, GetMigrations)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(true);
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                slot_ranges(&m.ranges),
                m.from.to_string(),
                m.to.to_string(),
                format!(
                    "{}{}",
                    describe_phase(&m.phase),
                    if m.paused { " (paused)" } else { "" }
                ),
                m.moved_records.to_string(),
                m.moved_bytes.to_string(),
                m.records_per_second().to_string(),
                m.cutover_ms.map_or("-".into(), |ms| ms.to_string()),
            ]
        })
        .collect();
    out!(
        "{}",
        table(
            &[
                "ID",
                "SLOTS",
                "FROM",
                "TO",
                "PHASE",
                "RECORDS",
                "BYTES",
                "RECORDS/S",
                "CUTOVER MS",
            ],
            &rows
        )
    );
    Ok(true)
}

/// How to reach the center, shared by every `larder admin` command.
#[derive(Args, Debug, Clone)]
pub struct CenterArgs {
    /// A center replica, `ID@HOST:PORT` or `HOST:PORT`; repeat it or give a comma list.
    /// Default: the replicas of `larder up` on its default ports (101@127.0.0.1:7101,
    /// 102@127.0.0.1:7102, 103@127.0.0.1:7103).
    #[arg(long, value_delimiter = ',')]
    pub center: Vec<CenterAddress>,
    /// Give up when no center leader answered within this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The file holding the cluster secret (`larder up` prints where it wrote one).
    #[arg(long, env = "LARDER_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
}

/// The center replicas to ask, and the cluster key to prove to them.
#[derive(Debug, Clone)]
pub struct Centers {
    pub addresses: Vec<CenterAddress>,
    pub key: ClusterKey,
}

impl CenterArgs {
    /// The centers given (or the local cluster's) with the cluster key.
    pub fn reach(&self) -> anyhow::Result<Centers> {
        Ok(Centers {
            addresses: self.centers(),
            key: larder_real::cluster_key(self.cluster_secret_file.as_deref())?,
        })
    }

    /// The centers given, or the local cluster's by default.
    pub fn centers(&self) -> Vec<CenterAddress> {
        if !self.center.is_empty() {
            return self.center.clone();
        }
        center_addresses(CENTER_PORT_DEFAULT)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, address)| CenterAddress {
                id: Some(id),
                address,
            })
            .collect()
    }
}

#[derive(Args, Debug)]
struct StatusArgs {
    #[command(flatten)]
    center: CenterArgs,
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

/// A center replica on the command line: `ID@HOST:PORT` or `HOST:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CenterAddress {
    pub id: Option<NodeId>,
    pub address: SocketAddr,
}

impl FromStr for CenterAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (id, address) = match text.split_once('@') {
            Some((id, address)) => {
                let id = id
                    .trim()
                    .parse()
                    .map_err(|e| format!("bad center id in {text:?}: {e}"))?;
                (Some(id), address)
            }
            None => (None, text),
        };
        let address = address
            .trim()
            .parse()
            .map_err(|e| format!("bad center address in {text:?} (want ID@HOST:PORT): {e}"))?;
        Ok(CenterAddress { id, address })
    }
}

impl std::fmt::Display for CenterAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id {
            Some(id) => write!(f, "{id}@{}", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

/// The id this process calls from (a client endpoint: nobody calls it back).
pub(crate) const ADMIN_ID: NodeId = 1003;
/// Centers given without an id are booked under ids from here down, which no real node uses.
const UNNAMED_CENTER_ID: NodeId = NodeId::MAX;
/// Most centers one command asks (the center group has a handful of voters).
const CENTERS_MAX: usize = 16;
/// Deadline of one call to one center.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between rounds over the centers when none answered (a new center leader answers
/// after its first control round).
const ROUND_PAUSE: Duration = Duration::from_millis(200);

pub fn admin(args: AdminArgs) -> anyhow::Result<bool> {
    match args.command {
        AdminCommand::Status(args) => status(args),
        AdminCommand::MoveSlots(args) => move_slots(args),
        AdminCommand::Migrations(args) => migrations(args),
        AdminCommand::Pause(args) => steer(args, Steer::Pause),
        AdminCommand::Resume(args) => steer(args, Steer::Resume),
        AdminCommand::Cancel(args) => steer(args, Steer::Cancel),
        AdminCommand::Drain(args) => drain(args),
        AdminCommand::Split(args) => split(args),
        AdminCommand::Rebalance(args) => rebalance(args),
        AdminCommand::Hotkeys(args) => hotkeys(args),
        AdminCommand::Dashboard(args) => crate::dashboard::serve(
            args.listen,
            &args.center.reach()?,
            args.center.timeout,
            (!args.no_metrics).then_some(args.metrics),
        ),
    }
}

/// One hot key of the cluster in `larder admin hotkeys`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
struct ClusterHotKey {
    /// The key, printable (`\xNN` for other bytes).
    key: String,
    slot: u16,
    /// The group owning the slot (`None`: not in the routing table).
    group: Option<u64>,
    /// The node(s) that counted it: its group's leader (two around a leader change).
    nodes: Vec<NodeId>,
    per_sec: u64,
    writes_per_sec: u64,
}

/// One hot slot of the cluster in `larder admin hotkeys`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
struct ClusterHotSlot {
    slot: u16,
    group: Option<u64>,
    per_sec: u64,
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct HotJson {
    keys: Vec<ClusterHotKey>,
    slots: Vec<ClusterHotSlot>,
}

/// The nodes' hot reports merged: a key (or slot) counted by several nodes (a leader change
/// within the window) has their rates added, as each counted the requests it led.
pub(crate) fn merge_hot(status: &ClusterStatus) -> HotJson {
    let group_of = |slot: u16| {
        status
            .groups
            .iter()
            .find(|g| g.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .map(|g| g.group)
    };
    let mut keys: BTreeMap<bytes::Bytes, ClusterHotKey> = BTreeMap::new();
    let mut slots: BTreeMap<u16, u64> = BTreeMap::new();
    for node in &status.nodes {
        for hot in &node.hot.keys {
            let entry = keys
                .entry(hot.key.clone())
                .or_insert_with(|| ClusterHotKey {
                    key: larder_core::hotkeys::printable_key(
                        &hot.key,
                        larder_protocol::HOT_KEY_BYTES_MAX,
                    ),
                    slot: hot.slot,
                    group: group_of(hot.slot),
                    nodes: Vec::new(),
                    per_sec: 0,
                    writes_per_sec: 0,
                });
            entry.nodes.push(node.id);
            entry.per_sec += hot.per_sec;
            entry.writes_per_sec += hot.writes_per_sec;
        }
        for hot in &node.hot.slots {
            *slots.entry(hot.slot).or_insert(0) += hot.per_sec;
        }
    }
    let mut keys: Vec<ClusterHotKey> = keys.into_values().collect();
    keys.sort_by(|a, b| b.per_sec.cmp(&a.per_sec).then_with(|| a.key.cmp(&b.key)));
    let mut slots: Vec<ClusterHotSlot> = slots
        .into_iter()
        .map(|(slot, per_sec)| ClusterHotSlot {
            slot,
            group: group_of(slot),
            per_sec,
        })
        .collect();
    slots.sort_by(|a, b| b.per_sec.cmp(&a.per_sec).then(a.slot.cmp(&b.slot)));
    HotJson { keys, slots }
}

fn render_hot(hot: &HotJson) -> String {
    let group = |g: Option<u64>| g.map_or("-".to_string(), |g| g.to_string());
    let mut out = String::new();
    if hot.keys.is_empty() {
        out.push_str("hot keys: none (no key took 1 request/s or more over the last second)\n");
    } else {
        let _ = writeln!(
            out,
            "{:>4}  {:<32} {:>6} {:>6} {:>10} {:>10}  leader",
            "rank", "key", "slot", "group", "ops/s", "writes/s"
        );
        for (rank, key) in hot.keys.iter().enumerate() {
            let nodes: Vec<String> = key.nodes.iter().map(|n| n.to_string()).collect();
            let _ = writeln!(
                out,
                "{:>4}  {:<32} {:>6} {:>6} {:>10} {:>10}  {}",
                rank + 1,
                key.key,
                key.slot,
                group(key.group),
                key.per_sec,
                key.writes_per_sec,
                nodes.join(",")
            );
        }
    }
    if !hot.slots.is_empty() {
        out.push_str("hot slots:\n");
        for slot in &hot.slots {
            let _ = writeln!(
                out,
                "  slot {:>5} (group {}): {} ops/s",
                slot.slot,
                group(slot.group),
                slot.per_sec
            );
        }
    }
    out
}

fn hotkeys(args: StatusArgs) -> anyhow::Result<bool> {
    let centers = args.center.reach()?;
    let status = fetch_status(&centers, args.center.timeout)?;
    let hot = merge_hot(&status);
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&hot)?);
    } else {
        out!("{}", render_hot(&hot));
    }
    Ok(true)
}

/// `larder admin status --json`: the center's status with the migrations beside it.
#[derive(serde::Serialize)]
struct StatusJson<'a> {
    #[serde(flatten)]
    status: &'a ClusterStatus,
    migrations: &'a [Migration],
}

fn status(args: StatusArgs) -> anyhow::Result<bool> {
    let centers = args.center.reach()?;
    let status = fetch_status(&centers, args.center.timeout)?;
    // Asked of the same leader right after; a center too old to know them answers nothing.
    let migrations = ask_center(&centers, args.center.timeout, GetMigrations).unwrap_or_default();
    if args.json {
        let both = StatusJson {
            status: &status,
            migrations: &migrations,
        };
        outln!("{}", serde_json::to_string_pretty(&both)?);
    } else {
        out!("{}", render(&status));
        out!("{}", render_migrations(&migrations));
    }
    Ok(true)
}

/// The migrations under way, and how many ended, as text for `status`.
fn render_migrations(migrations: &[Migration]) -> String {
    let active: Vec<&Migration> = migrations.iter().filter(|m| m.phase.is_active()).collect();
    let ended = migrations.len() - active.len();
    if active.is_empty() {
        return format!("migrations in flight: none ({ended} ended)\n");
    }
    let mut out = format!("migrations in flight ({ended} ended):\n");
    for m in active {
        let _ = writeln!(
            out,
            "  {}: slots {} group {} -> {}: {}{}, {} records ({} bytes) at {} records/s",
            m.id,
            slot_ranges(&m.ranges),
            m.from,
            m.to,
            describe_phase(&m.phase),
            if m.paused { " (paused)" } else { "" },
            m.moved_records,
            m.moved_bytes,
            m.records_per_second()
        );
    }
    out
}

/// Asks the center leader for the cluster's status: each center in turn, following a
/// follower's hint to a center of known id, in rounds until one answers or `limit` passes
/// (a new center leader answers after its first control round). Gives up early when every
/// center names a leader this command has no address for.
pub fn fetch_status(centers: &Centers, limit: Duration) -> anyhow::Result<ClusterStatus> {
    ask_center(centers, limit, GetStatus)
}

/// Sends `request` to the center leader as [`fetch_status`] does, and returns its answer.
pub fn ask_center<R, T>(centers: &Centers, limit: Duration, request: R) -> anyhow::Result<T>
where
    R: Rpc<Response = CenterResponse<T>>,
{
    let (key, centers) = (&centers.key, &centers.addresses);
    if centers.is_empty() {
        bail!("no center given");
    }
    if centers.len() > CENTERS_MAX {
        bail!("at most {CENTERS_MAX} centers, got {}", centers.len());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let book = AddressBook::new();
        let mut order = Vec::new();
        let mut names = BTreeMap::new();
        for (center, unnamed) in centers.iter().zip((0..).map(|i| UNNAMED_CENTER_ID - i)) {
            let id = center.id.unwrap_or(unnamed);
            book.insert(id, center.address);
            names.insert(id, center.to_string());
            order.push(id);
        }
        let net = TcpNet::client(
            ADMIN_ID,
            book.clone(),
            larder_real::process_auth(key.clone()),
        );
        let request = Encoded::new(request);
        let deadline = Instant::now() + limit;
        let mut failures: BTreeMap<NodeId, String> = BTreeMap::new();
        loop {
            let mut hinted: Option<NodeId> = None;
            let mut next = order.iter();
            let (mut asked, mut leader_elsewhere) = (0, 0);
            // Each answer names at most one more center to ask, so a round asks at most twice
            // as many as were given.
            for _ in 0..order.len() * 2 {
                let Some(to) = hinted.take().or_else(|| next.next().copied()) else {
                    break;
                };
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break;
                }
                asked += 1;
                let why = match call(&net, to, &request, CALL_TIMEOUT.min(remaining)).await {
                    Ok(CenterResponse::Ok(answer)) => return Ok(answer),
                    Ok(CenterResponse::NotLeader {
                        leader_hint: Some(hint),
                    }) if book.get(hint).is_none() => {
                        leader_elsewhere += 1;
                        format!("not the leader; center {hint} leads: give it as {hint}@HOST:PORT")
                    }
                    Ok(CenterResponse::NotLeader { leader_hint }) => {
                        hinted = leader_hint.filter(|hint| *hint != to);
                        let hint = leader_hint.map_or("none".to_string(), |h| h.to_string());
                        format!("not the leader (its hint: {hint})")
                    }
                    // The leader's own refusal (e.g. slots of two groups): no use asking others.
                    Ok(CenterResponse::Refused { reason }) => {
                        bail!("center {}: {reason}", names[&to])
                    }
                    Ok(CenterResponse::Unavailable { reason }) => reason,
                    Err(error) => describe(&error),
                };
                failures.insert(to, why);
            }
            let stuck = asked > 0 && leader_elsewhere == asked;
            if stuck || Instant::now() + ROUND_PAUSE >= deadline {
                break;
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
        let tried: Vec<String> = order
            .iter()
            .map(|id| {
                let why = failures.get(id).map_or("not asked", String::as_str);
                format!("{}: {why}", names[id])
            })
            .collect();
        bail!(
            "no center leader answered (timeout {}): {}",
            humantime::format_duration(limit),
            tried.join("; ")
        )
    })
}

/// A failed call, without the id it was booked under (made up for a center given without
/// one; the caller names the center).
fn describe(error: &CallError) -> String {
    match error {
        CallError::Net(NetError::Unreachable { reason, .. }) => format!("unreachable ({reason})"),
        CallError::Net(NetError::Timeout { timeout_ms, .. }) => {
            format!("no answer within {timeout_ms} ms")
        }
        CallError::Net(NetError::Io { reason, .. }) => format!("i/o error ({reason})"),
        other => other.to_string(),
    }
}

/// The status as text: a header, the nodes, the groups, broken replicas and repairs.
pub fn render(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let centers: Vec<String> = status.centers.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "center leader {} (term {}) of centers {}; routing epoch {}; as of {} ms ago",
        status.center_leader,
        status.center_term,
        centers.join(" "),
        status.epoch,
        status.round_age_ms
    );
    out.push('\n');
    let nodes: Vec<Vec<String>> = status.nodes.iter().map(node_row).collect();
    out.push_str(&table(
        &["NODE", "ADDRESS", "STATE", "LIVENESS", "GROUPS", "LEADS"],
        &nodes,
    ));
    out.push('\n');
    if status.groups.is_empty() {
        out.push_str("no routing table yet\n");
    } else {
        let groups: Vec<Vec<String>> = status.groups.iter().map(group_row).collect();
        out.push_str(&table(
            &["GROUP", "REPLICAS", "LEADER", "APPLIED", "BROKEN", "SLOTS"],
            &groups,
        ));
    }
    out.push('\n');
    let broken: Vec<String> = status
        .groups
        .iter()
        .flat_map(|group| {
            group.reports.iter().filter_map(move |replica| {
                replica.broken.as_ref().map(|reason| {
                    format!("  group {} on node {}: {reason}", group.group, replica.node)
                })
            })
        })
        .collect();
    if broken.is_empty() {
        out.push_str("broken replicas: none\n");
    } else {
        out.push_str("broken replicas:\n");
        for line in broken {
            out.push_str(&line);
            out.push('\n');
        }
    }
    if status.repairs.is_empty() {
        out.push_str("repairs in flight: none\n");
    } else {
        let repairs: Vec<String> = status
            .repairs
            .iter()
            .map(|r| format!("group {}: node {} -> node {}", r.group, r.old, r.new))
            .collect();
        let _ = writeln!(out, "repairs in flight: {}", repairs.join(", "));
    }
    out
}

fn node_row(node: &NodeSummary) -> Vec<String> {
    vec![
        node.id.to_string(),
        node.address.clone(),
        node.state
            .map_or_else(|| "unregistered".to_string(), |s| format!("{s:?}")),
        format!("{:?}", node.liveness),
        node.groups.len().to_string(),
        node.leads.to_string(),
    ]
}

fn group_row(group: &GroupSummary) -> Vec<String> {
    let replicas: Vec<String> = group.replicas.iter().map(ToString::to_string).collect();
    let leader = group.leader.map_or_else(
        || "none".to_string(),
        |l| format!("{} (term {})", l.node, l.term),
    );
    // `node=index` per replica, `?` when its node reported none; `+` marks a node outside the
    // table (a replacement catching up, a stale copy).
    let applied: Vec<String> = group
        .reports
        .iter()
        .map(|r| {
            let index = r.last_applied.map_or("?".to_string(), |i| i.to_string());
            let mark = if r.in_table { "" } else { "+" };
            format!("{mark}{}={index}", r.node)
        })
        .collect();
    let broken: Vec<String> = group
        .reports
        .iter()
        .filter(|r| r.broken.is_some())
        .map(|r| r.node.to_string())
        .collect();
    vec![
        group.group.to_string(),
        replicas.join(","),
        leader,
        applied.join(" "),
        if broken.is_empty() {
            "-".to_string()
        } else {
            broken.join(",")
        },
        slot_ranges(&group.slots),
    ]
}

/// Inclusive slot ranges as `0-2047,4096`; `-` for none.
pub fn slot_ranges(ranges: &[(u16, u16)]) -> String {
    if ranges.is_empty() {
        return "-".to_string();
    }
    let parts: Vec<String> = ranges
        .iter()
        .map(|(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect();
    parts.join(",")
}

/// Left-aligned columns two spaces apart, the header first.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(ToString::to_string).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use larder_protocol::{GroupLeader, Liveness, NodeState, RepairSummary, ReplicaSummary};

    use super::*;

    #[test]
    fn centers_parse_with_and_without_ids() {
        let named: CenterAddress = "101@127.0.0.1:7101".parse().expect("parses");
        assert_eq!(named.id, Some(101));
        assert_eq!(named.to_string(), "101@127.0.0.1:7101");
        let bare: CenterAddress = "127.0.0.1:7102".parse().expect("parses");
        assert_eq!((bare.id, bare.address.port()), (None, 7102));
        assert!("x@127.0.0.1:1".parse::<CenterAddress>().is_err());
        assert!("101@localhost".parse::<CenterAddress>().is_err());
        let defaults = CenterArgs {
            center: vec![],
            timeout: Duration::from_secs(1),
            cluster_secret_file: None,
        }
        .centers();
        let shown: Vec<String> = defaults.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "101@127.0.0.1:7101",
                "102@127.0.0.1:7102",
                "103@127.0.0.1:7103"
            ]
        );
    }

    #[test]
    fn slot_ranges_are_compressed() {
        assert_eq!(slot_ranges(&[(0, 2047)]), "0-2047");
        assert_eq!(
            slot_ranges(&[(0, 0), (5, 9), (16383, 16383)]),
            "0,5-9,16383"
        );
        assert_eq!(slot_ranges(&[]), "-");
    }

    #[test]
    fn hot_keys_of_every_node_are_merged_with_their_groups() {
        use larder_core::hotkeys::{HotKey, HotSlot};
        use larder_core::slots::slot_of;
        let node = |id: NodeId, keys: Vec<(&str, u64, u64)>| NodeSummary {
            id,
            address: String::new(),
            state: Some(NodeState::Up),
            liveness: Liveness::Up,
            groups: vec![1],
            leads: 1,
            hot: larder_protocol::HotReport {
                slots: keys
                    .iter()
                    .map(|(key, per_sec, _)| HotSlot {
                        slot: slot_of(key.as_bytes()),
                        per_sec: *per_sec,
                    })
                    .collect(),
                keys: keys
                    .into_iter()
                    .map(|(key, per_sec, writes_per_sec)| HotKey {
                        key: bytes::Bytes::copy_from_slice(key.as_bytes()),
                        slot: slot_of(key.as_bytes()),
                        per_sec,
                        writes_per_sec,
                    })
                    .collect(),
            },
        };
        let status = ClusterStatus {
            center_leader: 101,
            center_term: 1,
            centers: vec![101],
            round_age_ms: 0,
            epoch: 1,
            // Node 2 led the hot key's group until a moment ago, node 1 since.
            nodes: vec![
                node(1, vec![("celebrity", 900, 100), ("user:7", 40, 40)]),
                node(2, vec![("celebrity", 300, 50), ("bin\n\u{7f}", 5, 0)]),
            ],
            groups: vec![GroupSummary {
                group: 1,
                replicas: vec![1, 2, 3],
                leader: Some(GroupLeader { node: 1, term: 2 }),
                reports: vec![],
                slots: vec![(0, 16383)],
            }],
            repairs: vec![],
        };
        let hot = merge_hot(&status);
        let keys: Vec<(&str, u64, u64, Vec<NodeId>)> = hot
            .keys
            .iter()
            .map(|k| (k.key.as_str(), k.per_sec, k.writes_per_sec, k.nodes.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                ("celebrity", 1200, 150, vec![1, 2]),
                ("user:7", 40, 40, vec![1]),
                ("bin\\x0a\\x7f", 5, 0, vec![2]),
            ]
        );
        assert!(hot.keys.iter().all(|k| k.group == Some(1)));
        assert_eq!(hot.slots[0].slot, slot_of(b"celebrity"));
        assert_eq!(hot.slots[0].per_sec, 1200);
        let text = render_hot(&hot);
        assert!(text.contains("celebrity"), "{text}");
        assert!(text.contains("1200"), "{text}");
        assert!(text.contains("hot slots:"), "{text}");
        let none = render_hot(&merge_hot(&ClusterStatus {
            nodes: vec![],
            ..status
        }));
        assert!(none.starts_with("hot keys: none"), "{none}");
    }

    #[test]
    fn the_text_shows_nodes_groups_broken_replicas_and_repairs() {
        let status = ClusterStatus {
            center_leader: 101,
            center_term: 3,
            centers: vec![101, 102, 103],
            round_age_ms: 40,
            epoch: 2,
            nodes: vec![NodeSummary {
                id: 1,
                address: "127.0.0.1:4000".into(),
                state: Some(NodeState::Up),
                liveness: Liveness::Up,
                groups: vec![1],
                leads: 1,
                hot: Default::default(),
            }],
            groups: vec![GroupSummary {
                group: 1,
                replicas: vec![1, 2, 3],
                leader: Some(GroupLeader { node: 1, term: 4 }),
                reports: [
                    (1, true, Some(9), None),
                    (2, true, None, Some("bad crc")),
                    (4, false, Some(3), None),
                ]
                .into_iter()
                .map(|(node, in_table, last_applied, broken)| ReplicaSummary {
                    node,
                    in_table,
                    last_applied,
                    broken: broken.map(String::from),
                })
                .collect(),
                slots: vec![(0, 16383)],
            }],
            repairs: vec![RepairSummary {
                group: 1,
                old: 2,
                new: 4,
            }],
        };
        let text = render(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "center leader 101 (term 3) of centers 101 102 103; routing epoch 2; as of 40 ms ago"
        );
        assert_eq!(
            lines[2],
            "NODE  ADDRESS         STATE  LIVENESS  GROUPS  LEADS"
        );
        assert_eq!(lines[3], "1     127.0.0.1:4000  Up     Up        1       1");
        assert!(
            text.contains("1      1,2,3     1 (term 4)  1=9 2=? +4=3  2       0-16383"),
            "{text}"
        );
        assert!(text.contains("  group 1 on node 2: bad crc\n"), "{text}");
        assert!(
            text.ends_with("repairs in flight: group 1: node 2 -> node 4\n"),
            "{text}"
        );
    }
}
