//! `larder admin <command>`: operator requests to the center over the production network.
//!
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
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use larder::local::{CENTER_PORT_DEFAULT, center_addresses};
use larder_core::NodeId;
use larder_core::env::NetError;
use larder_protocol::{
    CallError, CenterResponse, ClusterStatus, Encoded, GetMigrations, GetStatus, GroupSummary,
    MigrationPhase, MoveSlots, NodeSummary, Rpc, call,
};
use larder_real::{AddressBook, TcpNet};

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
    let centers = args.center.centers();
    let request = MoveSlots {
        ranges: args.slots.0.clone(),
        to: args.to,
    };
    let migration = ask_center(&centers, args.center.timeout, request)
        .context("asking the center to move the slots")?;
    println!(
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
    // Bounded: a migration that does not end within the hour is reported as still running.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3600) {
        std::thread::sleep(Duration::from_millis(500));
        let Ok(all) = ask_center(&centers, args.center.timeout, GetMigrations) else {
            continue;
        };
        if let Some(now) = all.into_iter().find(|m| m.id == migration.id)
            && !now.phase.is_active()
        {
            println!(
                "migration {}: {} after {:.1} s ({} records, {} bytes moved)",
                now.id,
                describe_phase(&now.phase),
                started.elapsed().as_secs_f64(),
                now.moved_records,
                now.moved_bytes
            );
            return Ok(matches!(now.phase, MigrationPhase::Done { .. }));
        }
    }
    bail!("migration {} still running after an hour", migration.id)
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
    let all = ask_center(&args.center.centers(), args.center.timeout, GetMigrations)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
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
                describe_phase(&m.phase),
                m.moved_records.to_string(),
                m.moved_bytes.to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["id", "slots", "from", "to", "phase", "records", "bytes"],
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
}

impl CenterArgs {
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
const ADMIN_ID: NodeId = 1003;
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
    }
}

fn status(args: StatusArgs) -> anyhow::Result<bool> {
    let status = fetch_status(&args.center.centers(), args.center.timeout)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(true)
}

/// Asks the center leader for the cluster's status: each center in turn, following a
/// follower's hint to a center of known id, in rounds until one answers or `limit` passes
/// (a new center leader answers after its first control round). Gives up early when every
/// center names a leader this command has no address for.
pub fn fetch_status(centers: &[CenterAddress], limit: Duration) -> anyhow::Result<ClusterStatus> {
    ask_center(centers, limit, GetStatus)
}

/// Sends `request` to the center leader as [`fetch_status`] does, and returns its answer.
pub fn ask_center<R, T>(centers: &[CenterAddress], limit: Duration, request: R) -> anyhow::Result<T>
where
    R: Rpc<Response = CenterResponse<T>>,
{
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
        let net = TcpNet::client(ADMIN_ID, book.clone());
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
                    Ok(CenterResponse::Unavailable { reason })
                        if reason.starts_with("refused:") =>
                    {
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
