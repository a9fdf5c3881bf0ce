//! `INFO [section ...]`: Redis 7.0's sections and section selection, with the proxy's own
//! figures (its process, its connections, its command counts) and the cluster's key count.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Figures of the process the proxy runs in. The real server reads them from the operating
/// system (the `larder` binary's `process_figures`); in the simulator there is no process to read (and
/// reading one would leak real state into a seeded run), so they are absent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessFigures {
    pub pid: u32,
    pub used_cpu_user: f64,
    pub used_cpu_sys: f64,
    pub resident_bytes: u64,
}

/// Per-command counts for `commandstats`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandCounts {
    pub calls: u64,
    pub usec: u64,
    pub rejected_calls: u64,
    pub failed_calls: u64,
}

/// What the sections show.
#[derive(Debug, Default)]
pub struct Facts {
    pub version: &'static str,
    pub larder_version: &'static str,
    pub ports: String,
    pub uptime_secs: u64,
    pub process: ProcessFigures,
    pub connected_clients: u64,
    pub blocked_clients: u64,
    pub max_clients: usize,
    pub total_connections: u64,
    pub rejected_connections: u64,
    pub total_commands: u64,
    pub commands: BTreeMap<String, CommandCounts>,
    pub routing_epoch: u64,
    pub slot_groups: usize,
    /// `None` when the groups could not be counted.
    pub keys: Option<i64>,
    /// The proxy's hottest keys and slots over its window (`hotkeys`, Larder's own section).
    pub hot_keys: Vec<larder_core::hotkeys::HotKey>,
    pub hot_slots: Vec<larder_core::hotkeys::HotSlot>,
    /// The per-key write limit (`None`: none) and the writes it refused.
    pub hot_key_writes_per_sec_max: Option<u64>,
    pub hot_key_refused_writes: u64,
    /// Reads of hot keys from which reads are shared (`None`: never) and those shared so far.
    pub share_reads_min_per_sec: Option<u64>,
    pub shared_reads: u64,
}

/// Redis 7.0's default sections (`INFO`, `INFO default`).
const DEFAULT: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "cluster",
    "keyspace",
];
/// Beyond the default, in `all` and `everything` (`hotkeys` is Larder's own).
const EXTRA: &[&str] = &["commandstats", "errorstats", "hotkeys"];

/// The sections `args` (after `INFO`) select, in output order: none means the default;
/// `all`/`everything` mean every section; names are matched without case; unknown names
/// select nothing, as in Redis.
pub fn selected(args: &[bytes::Bytes]) -> Vec<&'static str> {
    let mut wanted = BTreeSet::new();
    let names: Vec<String> = args
        .iter()
        .map(|arg| String::from_utf8_lossy(arg).to_ascii_lowercase())
        .collect();
    if names.is_empty() {
        wanted.extend(DEFAULT.iter().copied());
    }
    for name in &names {
        match name.as_str() {
            "default" => wanted.extend(DEFAULT.iter().copied()),
            "all" | "everything" => {
                wanted.extend(DEFAULT.iter().copied());
                wanted.extend(EXTRA.iter().copied());
            }
            other => {
                if let Some(section) = DEFAULT.iter().chain(EXTRA).find(|s| **s == other) {
                    wanted.insert(*section);
                }
            }
        }
    }
    DEFAULT
        .iter()
        .chain(EXTRA)
        .copied()
        .filter(|section| wanted.contains(section))
        .collect()
}

/// The text of `sections`.
pub fn render(sections: &[&str], facts: &Facts) -> String {
    let mut out = String::new();
    for section in sections {
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let title = match *section {
            "cpu" => "CPU".to_string(),
            "hotkeys" => "Hotkeys".to_string(),
            other => {
                let mut title = other.to_string();
                title[..1].make_ascii_uppercase();
                title
            }
        };
        let _ = write!(out, "# {title}\r\n");
        let mut line = |text: String| {
            out.push_str(&text);
            out.push_str("\r\n");
        };
        match *section {
            "server" => {
                line(format!("redis_version:{}", facts.version));
                line(format!("larder_version:{}", facts.larder_version));
                // The proxy answers `CLUSTER` as a one-node Redis Cluster (`crate::cluster`).
                line("redis_mode:cluster".into());
                line(format!("os:{}", std::env::consts::OS));
                line("arch_bits:64".into());
                line(format!("process_id:{}", facts.process.pid));
                for port in facts.ports.lines() {
                    line(port.to_string());
                }
                line(format!("uptime_in_seconds:{}", facts.uptime_secs));
                line(format!("uptime_in_days:{}", facts.uptime_secs / 86_400));
            }
            "clients" => {
                line(format!("connected_clients:{}", facts.connected_clients));
                line(format!("maxclients:{}", facts.max_clients));
                line(format!("blocked_clients:{}", facts.blocked_clients));
            }
            "memory" => {
                line(format!("used_memory:{}", facts.process.resident_bytes));
                line(format!("used_memory_rss:{}", facts.process.resident_bytes));
                line("maxmemory:0".into());
                line("maxmemory_policy:noeviction".into());
                line("mem_allocator:libc".into());
            }
            "persistence" => {
                // Every acknowledged write is in the Raft log of a quorum, fsynced.
                line("loading:0".into());
                line("aof_enabled:0".into());
                line("rdb_changes_since_last_save:0".into());
            }
            "stats" => {
                line(format!(
                    "total_connections_received:{}",
                    facts.total_connections
                ));
                line(format!("total_commands_processed:{}", facts.total_commands));
                line(format!(
                    "rejected_connections:{}",
                    facts.rejected_connections
                ));
            }
            "replication" => {
                // Replication is inside the cluster (Raft groups); the proxy is no replica.
                line("role:master".into());
                line("connected_slaves:0".into());
                line("master_repl_offset:0".into());
            }
            "cpu" => {
                line(format!("used_cpu_sys:{:.6}", facts.process.used_cpu_sys));
                line(format!("used_cpu_user:{:.6}", facts.process.used_cpu_user));
                line("used_cpu_sys_children:0.000000".into());
                line("used_cpu_user_children:0.000000".into());
            }
            "cluster" => {
                line("cluster_enabled:1".into());
                line(format!("routing_epoch:{}", facts.routing_epoch));
                line(format!("slot_groups:{}", facts.slot_groups));
            }
            "keyspace" => {
                if let Some(keys) = facts.keys
                    && keys > 0
                {
                    line(format!("db0:keys={keys},expires=0,avg_ttl=0"));
                }
            }
            "commandstats" => {
                for (name, counts) in &facts.commands {
                    let per_call = counts.usec as f64 / counts.calls.max(1) as f64;
                    line(format!(
                        "cmdstat_{name}:calls={},usec={},usec_per_call={per_call:.2},rejected_calls={},failed_calls={}",
                        counts.calls, counts.usec, counts.rejected_calls, counts.failed_calls
                    ));
                }
            }
            "hotkeys" => {
                line(format!(
                    "hotkey_writes_per_sec_max:{}",
                    facts.hot_key_writes_per_sec_max.unwrap_or(0)
                ));
                line(format!(
                    "hotkey_refused_writes:{}",
                    facts.hot_key_refused_writes
                ));
                line(format!(
                    "hotkey_share_reads_min_per_sec:{}",
                    facts.share_reads_min_per_sec.unwrap_or(0)
                ));
                line(format!("hotkey_shared_reads:{}", facts.shared_reads));
                for (rank, hot) in facts.hot_keys.iter().enumerate() {
                    line(format!(
                        "hotkey_{rank}:key={},slot={},ops_per_sec={},writes_per_sec={}",
                        crate::hot::quoted(&hot.key),
                        hot.slot,
                        hot.per_sec,
                        hot.writes_per_sec
                    ));
                }
                for (rank, hot) in facts.hot_slots.iter().enumerate() {
                    line(format!(
                        "hotslot_{rank}:slot={},ops_per_sec={}",
                        hot.slot, hot.per_sec
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn args(names: &[&str]) -> Vec<Bytes> {
        names
            .iter()
            .map(|n| Bytes::copy_from_slice(n.as_bytes()))
            .collect()
    }

    #[test]
    fn sections_are_selected_as_redis_7_selects_them() {
        assert_eq!(selected(&[]), DEFAULT);
        assert_eq!(selected(&args(&["default"])), DEFAULT);
        assert!(selected(&args(&["all"])).contains(&"commandstats"));
        assert_eq!(selected(&args(&["CPU"])), ["cpu"]);
        assert_eq!(selected(&args(&["cpu", "sentinel"])), ["cpu"]);
        assert_eq!(selected(&args(&["commandSTATS"])), ["commandstats"]);
        assert_eq!(
            selected(&args(&["cpu", "all"])).len(),
            DEFAULT.len() + EXTRA.len()
        );
        let mut facts = Facts::default();
        facts.commands.insert(
            "get".into(),
            CommandCounts {
                calls: 2,
                usec: 10,
                ..CommandCounts::default()
            },
        );
        let text = render(&selected(&args(&["cpu", "commandstats"])), &facts);
        assert!(text.starts_with("# CPU\r\nused_cpu_sys:"), "{text}");
        assert!(text.contains("cmdstat_get:calls=2,usec=10,usec_per_call=5.00,rejected_calls=0"));
        assert!(!text.contains("used_memory"));
    }
}
