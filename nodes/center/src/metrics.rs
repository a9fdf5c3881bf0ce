//! The center's Prometheus metrics (`larder_center_…`), read at scrape time: whether this
//! replica leads, the routing epoch and groups, the storage nodes by liveness, repairs and
//! migrations in flight. The replica's own storage node (the center group's Raft) reports
//! under `larder_node_…` beside them ([`StorageNode::metrics_registry`]).

use std::sync::{Arc, Weak};

use crate::Liveness;
use larder_core::env::Env;
use larder_core::metrics::{Registry, encode_counters, encode_gauges, role_registry};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::atomic::Ordering;

use crate::Center;

impl<E: Env> Center<E> {
    /// This replica's metrics (center and storage node), labelled `node` = its id.
    pub fn metrics_registries(self: &Arc<Self>) -> [Registry; 2] {
        let mut registry = role_registry("center", self.node.id());
        registry.register_collector(Box::new(CenterCollector(Arc::downgrade(self))));
        [registry, self.node.metrics_registry()]
    }
}

/// A per-migration gauge: name, help, and its value of a migration.
type PerMigration = (
    &'static str,
    &'static str,
    fn(&larder_protocol::Migration) -> u64,
);

struct CenterCollector<E: Env>(Weak<Center<E>>);

impl<E: Env> std::fmt::Debug for CenterCollector<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CenterCollector")
    }
}

impl<E: Env> Collector for CenterCollector<E> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(center) = self.0.upgrade() else {
            return Ok(());
        };
        let routing = center.routing();
        let (repairs, migrations, progress) = {
            let soft = center.soft.lock().expect("soft lock");
            let progress: Vec<larder_protocol::Migration> =
                soft.progress.values().cloned().collect();
            (soft.repairs.len(), soft.migrating.len(), progress)
        };
        let gauges = [
            (
                "leader",
                "1 if this replica leads the center group",
                u64::from(center.is_leader()),
            ),
            (
                "routing_epoch",
                "Epoch of the newest routing table this replica knows",
                routing.as_ref().map_or(0, |table| table.epoch()),
            ),
            (
                "routing_groups",
                "Slot groups in that routing table",
                routing
                    .as_ref()
                    .map_or(0, |table| table.groups().len() as u64),
            ),
            (
                "repairs_in_flight",
                "Group repairs (replacing a lost replica) this leader is running",
                repairs as u64,
            ),
            (
                "migrations_in_flight",
                "Slot migrations this leader runs a task for",
                migrations as u64,
            ),
        ];
        encode_gauges(&mut encoder, &gauges)?;
        let counters = &center.counters;
        let counted = [
            (
                "repairs_started",
                "Dead replicas this replica started replacing while it led",
                counters.repairs.load(Ordering::Relaxed),
            ),
            (
                "automatic_splits",
                "Groups this replica split while it led, for holding more than split_records_max \
                 records",
                counters.splits.load(Ordering::Relaxed),
            ),
            (
                "hot_slot_moves",
                "Hot slots this replica moved into a group of their own while it led",
                counters.hot_slot_moves.load(Ordering::Relaxed),
            ),
        ];
        encode_counters(&mut encoder, &counted)?;
        // The running migrations' progress, by migration id (a handful at most: one per pair
        // of groups).
        let per_migration: [PerMigration; 2] = [
            (
                "migration_moved_records",
                "Records a running migration has copied to its target group so far",
                |m| m.moved_records,
            ),
            (
                "migration_moved_bytes",
                "Bytes a running migration has copied to its target group so far",
                |m| m.moved_bytes,
            ),
        ];
        for (name, help, value) in per_migration {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for migration in &progress {
                let id = migration.id.to_string();
                ConstGauge::new(value(migration) as i64)
                    .encode(family.encode_family(&[("migration", id.as_str())])?)?;
            }
        }
        // Counted by the leader only (a follower has no view of the nodes): empty elsewhere.
        let liveness = center.liveness();
        let mut family = encoder.encode_descriptor(
            "storage_nodes",
            "Storage nodes known to the leader, by liveness",
            None,
            MetricType::Gauge,
        )?;
        for (state, label) in [
            (Liveness::Up, "up"),
            (Liveness::Grace, "grace"),
            (Liveness::Down, "down"),
        ] {
            let count = liveness.values().filter(|l| **l == state).count();
            ConstGauge::new(count as i64).encode(family.encode_family(&[("liveness", label)])?)?;
        }
        Ok(())
    }
}
