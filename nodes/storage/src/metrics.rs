//! The storage node's Prometheus metrics (`larder_node_…`): per hosted group its Raft term,
//! role and log positions (read from openraft's metrics at scrape time), the node's group-commit
//! sync rounds (time and writes merged), and what the node served and refused.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use larder_core::NodeId;
use larder_core::env::Env;
use larder_core::metrics::{Registry, encode_counters, encode_gauges, role_registry};
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::StorageNode;
use crate::lanes::LaneFigures;

impl<E: Env> StorageNode<E> {
    /// This node's metrics, labelled `node` = its id.
    pub fn metrics_registry(self: &Arc<Self>) -> Registry {
        let mut registry = role_registry("node", self.id());
        let sync = self.disk.metrics();
        registry.register(
            "sync_seconds",
            "Time of each group-commit sync round (every group's log appends of the round)",
            sync.seconds.clone(),
        );
        registry.register(
            "sync_writes",
            "Synced writes merged into each group-commit round",
            sync.writes.clone(),
        );
        registry.register(
            "entry_commands",
            "Client commands per log entry this node committed as a leader (a pipeline's or a \
             transaction's share of a group is one entry)",
            self.entry_commands.clone(),
        );
        registry.register_collector(Box::new(NodeCollector(Arc::downgrade(self))));
        registry
    }
}

/// One hosted group's figures at a scrape.
struct GroupFigures {
    group: String,
    term: u64,
    leader: bool,
    last_log: u64,
    committed: u64,
    applied: u64,
    snapshot: u64,
    leader_changes: u64,
    snapshots_built: u64,
    snapshots_installed: u64,
    /// On a leader: each follower's replication lag in entries (last log index minus the
    /// index it matched).
    followers: Vec<(NodeId, u64)>,
}

/// A per-group gauge: name, help, and its value of a group's figures.
type PerGroup = (&'static str, &'static str, fn(&GroupFigures) -> u64);

/// Reads the node's groups and counters at scrape time.
struct NodeCollector<E: Env>(Weak<StorageNode<E>>);

impl<E: Env> std::fmt::Debug for NodeCollector<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCollector")
    }
}

impl<E: Env> Collector for NodeCollector<E> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(node) = self.0.upgrade() else {
            return Ok(());
        };
        let groups: Vec<GroupFigures> = node
            .all_groups()
            .into_iter()
            .map(|(group, handle)| {
                let metrics = handle.raft.metrics();
                let metrics = metrics.borrow_watched();
                let index = |id: Option<crate::raft::LogId>| id.map_or(0, |id| id.index());
                let last_log = metrics.last_log_index.unwrap_or(0);
                let counts = handle.state.snapshot_counts();
                GroupFigures {
                    group: group.to_string(),
                    term: metrics.current_term,
                    leader: metrics.state == ServerState::Leader,
                    last_log,
                    committed: index(metrics.local_committed),
                    applied: index(metrics.last_applied),
                    snapshot: index(metrics.snapshot),
                    leader_changes: node.see_leader(group, metrics.current_leader),
                    snapshots_built: counts.built.load(Ordering::Relaxed),
                    snapshots_installed: counts.installed.load(Ordering::Relaxed),
                    followers: metrics
                        .replication
                        .iter()
                        .flatten()
                        .filter(|(follower, _)| **follower != node.id())
                        .map(|(follower, matched)| {
                            (*follower, last_log.saturating_sub(index(*matched)))
                        })
                        .collect(),
                }
            })
            .collect();
        let per_group: [PerGroup; 6] = [
            ("group_term", "The replica's Raft term", |g| g.term),
            ("group_leader", "1 if this replica leads its group", |g| {
                u64::from(g.leader)
            }),
            (
                "group_last_log_index",
                "Index of the replica's last log entry",
                |g| g.last_log,
            ),
            (
                "group_committed_index",
                "Index of the last entry the replica knows committed",
                |g| g.committed,
            ),
            (
                "group_applied_index",
                "Index of the last entry the replica applied",
                |g| g.applied,
            ),
            (
                "group_snapshot_index",
                "Index of the replica's last snapshot",
                |g| g.snapshot,
            ),
        ];
        for (name, help, value) in per_group {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for figures in &groups {
                let labels = [("group", figures.group.as_str())];
                ConstGauge::new(value(figures) as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        let per_group_counters: [PerGroup; 3] = [
            (
                "group_leader_changes",
                "Times this replica saw its group's leader change (sampled at heartbeats and \
                 scrapes)",
                |g| g.leader_changes,
            ),
            (
                "group_snapshots_built",
                "Snapshots this replica built since it opened",
                |g| g.snapshots_built,
            ),
            (
                "group_snapshots_installed",
                "Snapshots this replica installed from a leader since it opened (catch-ups past \
                 the log)",
                |g| g.snapshots_installed,
            ),
        ];
        for (name, help, value) in per_group_counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for figures in &groups {
                let labels = [("group", figures.group.as_str())];
                ConstCounter::new(value(figures)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut lag = encoder.encode_descriptor(
            "group_follower_lag_entries",
            "On a group's leader: each follower's replication lag, in log entries",
            None,
            MetricType::Gauge,
        )?;
        for figures in &groups {
            for (follower, entries) in &figures.followers {
                let follower = follower.to_string();
                let labels = [
                    ("group", figures.group.as_str()),
                    ("follower", follower.as_str()),
                ];
                ConstGauge::new(*entries as i64).encode(lag.encode_family(&labels)?)?;
            }
        }
        let lanes = node.lanes.figures();
        type PerLane = (&'static str, &'static str, fn(&LaneFigures) -> u64);
        let per_lane: [(PerLane, MetricType); 5] = [
            (
                ("lane_running", "Client commands running in the lane", |l| {
                    l.running as u64
                }),
                MetricType::Gauge,
            ),
            (
                ("lane_queued", "Client commands waiting for the lane", |l| {
                    l.queued as u64
                }),
                MetricType::Gauge,
            ),
            (
                (
                    "lane_limit",
                    "Commands the lane may run at once now (a slow lane's limit drops while \
                     fast commands run)",
                    |l| l.limit as u64,
                ),
                MetricType::Gauge,
            ),
            (
                ("lane_admitted", "Client commands the lane ran", |l| {
                    l.admitted
                }),
                MetricType::Counter,
            ),
            (
                (
                    "lane_refused",
                    "Client commands refused because the lane's queue was full",
                    |l| l.refused,
                ),
                MetricType::Counter,
            ),
        ];
        for ((name, help, value), kind) in per_lane {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for figures in &lanes {
                let labels = [("lane", figures.lane.name())];
                let encoder = family.encode_family(&labels)?;
                if matches!(kind, MetricType::Counter) {
                    ConstCounter::new(value(figures)).encode(encoder)?;
                } else {
                    ConstGauge::new(value(figures) as i64).encode(encoder)?;
                }
            }
        }
        let gauges = [
            (
                "lane_costly_subjects",
                "Keys (or groups) remembered as costly to read: their reads take a slow lane",
                node.lanes.costly_subjects() as u64,
            ),
            ("groups", "Groups this node hosts", groups.len() as u64),
            (
                "groups_led",
                "Groups this node leads",
                groups.iter().filter(|g| g.leader).count() as u64,
            ),
            (
                "apply_lag_entries",
                "Committed entries not yet applied, summed over the node's groups",
                groups
                    .iter()
                    .map(|g| g.committed.saturating_sub(g.applied))
                    .sum(),
            ),
            (
                "broken_replicas",
                "Replicas retired because a record on disk is corrupt",
                node.broken.all().len() as u64,
            ),
            (
                "row_cache_bytes",
                "Bytes the row cache holds (keys, rows and a fixed overhead per row)",
                node.row_cache.bytes() as u64,
            ),
            (
                "row_cache_rows",
                "State rows the row cache holds (absent keys included)",
                node.row_cache.rows() as u64,
            ),
        ];
        encode_gauges(&mut encoder, &gauges)?;
        let refused = &node.refused;
        let counters = [
            (
                "raft_appends_served",
                "openraft appends (entries or heartbeats) served as a follower",
                node.appends_served(),
            ),
            (
                "row_cache_hits",
                "Reads of a state row served from the row cache",
                node.row_cache.hits(),
            ),
            (
                "row_cache_misses",
                "Reads of a state row the row cache did not hold",
                node.row_cache.misses(),
            ),
            (
                "read_rounds",
                "Read rounds run: one confirmation per peer for every group with reads waiting",
                node.read_rounds.rounds(),
            ),
            (
                "read_batches",
                "Read batches served: reads of several groups from one client in one message",
                node.read_batches.batches.load(Ordering::Relaxed),
            ),
            (
                "batched_reads",
                "Reads that came in read batches",
                node.read_batches.reads.load(Ordering::Relaxed),
            ),
            (
                "read_round_quick_views",
                "Group views read rounds took without a message to the group's Raft core",
                node.read_rounds.quick_views(),
            ),
            (
                "read_round_core_views",
                "Group views read rounds asked the group's Raft core for",
                node.read_rounds.core_views(),
            ),
            (
                "reads_confirmed_by_round",
                "Reads whose group's leadership a read round confirmed",
                node.read_rounds.confirmed(),
            ),
            (
                "reads_stepped_aside",
                "Reads a read round could not confirm, confirmed by openraft's read index",
                node.read_rounds.stepped_aside(),
            ),
            (
                "unchanged_writes",
                "Writes answered without a log entry, after a read's confirmation, because \
                 executing them would change nothing (`DEL` of a missing key and the like)",
                node.unchanged.answered(),
            ),
            (
                "refused_raft",
                "Raft messages refused: the sender is not the leader it claims",
                refused.raft.load(Ordering::Relaxed),
            ),
            (
                "refused_read_batches",
                "Read batches refused whole: more reads than READ_BATCH_MAX",
                refused.read_batches.load(Ordering::Relaxed),
            ),
            (
                "refused_admin",
                "Admin requests refused: not from one of the node's centers",
                refused.admin.load(Ordering::Relaxed),
            ),
        ];
        encode_counters(&mut encoder, &counters)?;
        Ok(())
    }
}
