//! The center's durable state: routing tables and the node registry as records of the center
//! group (written only through its Raft), read back from the applied state into a cache.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::Env;
use larder_core::kv::{Command, Reply, SetCondition};
use larder_core::routing::RoutingTable;
use larder_protocol::{
    ADDRESS_BYTES_MAX, ADDRESSES_MAX, CENTER_GROUP, ClientResponse, Migration, decode, encode,
};

use crate::Center;
use crate::config::CenterError;
use crate::migrate::MIGRATION_PREFIX;
use crate::plan::{NodeRecord, NodeState};

/// Key prefix of the routing tables in the center group.
const ROUTING_PREFIX: &str = "routing/";
/// Key prefix of the node registry in the center group.
const NODE_PREFIX: &str = "node/";

/// Registry and routing as read from the center group.
#[derive(Debug, Default)]
pub(crate) struct Durable {
    pub(crate) routing: Option<RoutingTable>,
    pub(crate) registry: BTreeMap<NodeId, NodeRecord>,
    /// Slot migrations by id ([`crate::migrate`]).
    pub(crate) migrations: BTreeMap<u64, Migration>,
}

fn routing_key(epoch: u64) -> String {
    format!("{ROUTING_PREFIX}{epoch:020}")
}

pub(crate) fn node_key(id: NodeId) -> String {
    format!("{NODE_PREFIX}{id:020}")
}

/// The addresses the center hands on ([`HeartbeatAck::addresses`]): every registered node not
/// `Removed` (a `Down` node may come back, and a stale table may still name it) with a usable
/// address, by id, at most [`ADDRESSES_MAX`].
pub fn registry_addresses(registry: &BTreeMap<NodeId, NodeRecord>) -> Vec<(NodeId, String)> {
    registry
        .values()
        .filter(|record| {
            record.state != NodeState::Removed
                && !record.address.is_empty()
                && record.address.len() <= ADDRESS_BYTES_MAX
        })
        .take(ADDRESSES_MAX)
        .map(|record| (record.id, record.address.clone()))
        .collect()
}

fn corrupt(key: &[u8], reason: impl std::fmt::Display) -> CenterError {
    CenterError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

/// The keys of a `KEYS` reply.
fn key_list(reply: Reply) -> Result<Vec<Bytes>, CenterError> {
    match reply {
        Reply::Array(items) => Ok(items
            .into_iter()
            .filter_map(|item| match item {
                Reply::Bulk(key) => Some(key),
                _ => None,
            })
            .collect()),
        other => Err(CenterError::Raft {
            what: "KEYS",
            reason: format!("unexpected reply {other:?}"),
        }),
    }
}

fn decode_table(key: &[u8], bytes: &[u8]) -> Result<RoutingTable, CenterError> {
    let table: RoutingTable = decode(bytes).map_err(|e| corrupt(key, e))?;
    table.check().map_err(|e| corrupt(key, e))?;
    Ok(table)
}

impl<E: Env> Center<E> {
    /// The center state from this replica's applied state, reread when the center group
    /// applied something since the last read (so a flood of route requests costs no reads).
    pub(crate) async fn refresh_cache(&self) -> Result<(), CenterError> {
        let fresh = |index: Option<u64>| {
            index.is_some() && self.cache.read().expect("cache lock").applied_index == index
        };
        if fresh(self.node.applied_index(CENTER_GROUP)) {
            return Ok(());
        }
        // One reader at a time; the index is taken under the lock, so the recorded index never
        // runs ahead of the state read after it.
        let _refreshing = self.refreshing.lock().await;
        let index = self.node.applied_index(CENTER_GROUP);
        if fresh(index) {
            return Ok(());
        }
        let read = self.read_applied_state().await?;
        let mut cache = self.cache.write().expect("cache lock");
        cache.applied_index = index;
        // Epochs only move forward in every copy.
        if let Some(table) = read.routing
            && cache.table.as_ref().is_none_or(|t| table.is_newer_than(t))
        {
            cache.table = Some(Arc::new(table));
        }
        cache.addresses = Arc::new(registry_addresses(&read.registry));
        cache.registry = Arc::new(read.registry);
        cache.migrations = Arc::new(read.migrations);
        Ok(())
    }

    /// The registry's addresses as last read into the cache.
    pub(crate) fn cached_addresses(&self) -> Vec<(NodeId, String)> {
        self.cache
            .read()
            .expect("cache lock")
            .addresses
            .as_ref()
            .clone()
    }

    /// The center state as last read into the cache.
    fn cached_state(&self) -> Durable {
        let cache = self.cache.read().expect("cache lock");
        Durable {
            routing: cache.table.as_deref().cloned(),
            registry: (*cache.registry).clone(),
            migrations: (*cache.migrations).clone(),
        }
    }

    /// The routing table to hand out: refreshed if possible, else the last one read.
    pub(crate) async fn routing_to_serve(&self) -> Option<Arc<RoutingTable>> {
        if let Err(error) = self.refresh_cache().await {
            tracing::warn!(%error, "reading the center state from the applied state");
        }
        self.routing()
    }

    /// Reads the routing table and the registry from the applied state of the center group.
    async fn read_applied_state(&self) -> Result<Durable, CenterError> {
        let mut durable = Durable::default();
        let read = |command: Command| async move {
            self.node
                .read_applied(CENTER_GROUP, &command)
                .await
                .map_err(CenterError::from)
        };
        let keys = key_list(
            read(Command::Keys {
                pattern: Bytes::from(format!("{ROUTING_PREFIX}*")),
                kind: None,
            })
            .await?,
        )?;
        // Zero-padded epochs: the greatest key is the newest table.
        if let Some(latest) = keys.into_iter().max()
            && let Reply::Bulk(bytes) = read(Command::Get {
                key: latest.clone(),
            })
            .await?
        {
            durable.routing = Some(decode_table(&latest, &bytes)?);
        }
        // A record that does not decode (written by another version, or damaged) is skipped
        // and reported, once: the rest of the state still steers the cluster. The routing table
        // is not skipped: without the newest one the center must not act at all.
        for (key, bytes) in self.read_prefix(MIGRATION_PREFIX).await? {
            match decode::<Migration>(&bytes) {
                Ok(migration) => {
                    durable.migrations.insert(migration.id, migration);
                }
                Err(error) => self.skip_bad_record(&key, error),
            }
        }
        for (key, bytes) in self.read_prefix(NODE_PREFIX).await? {
            match decode::<NodeRecord>(&bytes) {
                Ok(record) => {
                    durable.registry.insert(record.id, record);
                }
                Err(error) => self.skip_bad_record(&key, error),
            }
        }
        Ok(durable)
    }

    fn skip_bad_record(&self, key: &Bytes, error: impl std::fmt::Display) {
        let mut soft = self.soft.lock().expect("soft lock");
        if soft.bad_records.insert(key.clone()) {
            tracing::error!(
                key = %String::from_utf8_lossy(key),
                %error,
                "skipping a center record that does not decode"
            );
        }
    }

    /// Every record of the center group's applied state whose key starts with `prefix`.
    async fn read_prefix(&self, prefix: &str) -> Result<Vec<(Bytes, Bytes)>, CenterError> {
        let read = |command: Command| async move {
            self.node
                .read_applied(CENTER_GROUP, &command)
                .await
                .map_err(CenterError::from)
        };
        let keys = key_list(
            read(Command::Keys {
                pattern: Bytes::from(format!("{prefix}*")),
                kind: None,
            })
            .await?,
        )?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let Reply::Array(values) = read(Command::MGet { keys: keys.clone() }).await? else {
            return Err(CenterError::Raft {
                what: "MGET",
                reason: "not an array".into(),
            });
        };
        Ok(keys
            .into_iter()
            .zip(values)
            .filter_map(|(key, value)| match value {
                Reply::Bulk(bytes) => Some((key, bytes)),
                _ => None,
            })
            .collect())
    }

    /// A linearizable read or a write through the center group's Raft (on the leader).
    pub(crate) async fn execute(&self, command: Command) -> Result<Reply, CenterError> {
        match self.node.execute(CENTER_GROUP, command, None).await {
            ClientResponse::Reply(Reply::Error(reason)) => Err(CenterError::Raft {
                what: "command",
                reason,
            }),
            ClientResponse::Reply(reply) => Ok(reply),
            ClientResponse::NotLeader { leader_hint } => {
                Err(CenterError::NotLeader { leader_hint })
            }
            ClientResponse::Unavailable { reason } | ClientResponse::Indeterminate { reason } => {
                Err(CenterError::Raft {
                    what: "command",
                    reason,
                })
            }
            // The center group is in no routing table, so no node judges its keys.
            ClientResponse::StaleEpoch { epoch } => Err(CenterError::Raft {
                what: "command",
                reason: format!("unexpected stale-epoch answer (epoch {epoch})"),
            }),
        }
    }

    /// The durable state as of now, on the leader: a read-index round first (once it returns,
    /// this replica has applied every write committed before it began), then the applied state
    /// (from the cache when nothing was applied since).
    pub(crate) async fn load(&self) -> Result<Durable, CenterError> {
        self.execute(Command::Exists {
            keys: vec![Bytes::from_static(b"center/read-barrier")],
        })
        .await?;
        self.refresh_cache().await?;
        Ok(self.cached_state())
    }

    /// `node`'s registry record as of now: one linearizable read of its key through the
    /// center group's Raft, leaving the cache as it is (a full [`Self::load`] would refresh
    /// what the running control round planned from). A record that does not decode reads as
    /// none, as the cache skips it.
    pub(crate) async fn read_node_record(
        &self,
        node: NodeId,
    ) -> Result<Option<NodeRecord>, CenterError> {
        match self
            .execute(Command::Get {
                key: Bytes::from(node_key(node)),
            })
            .await?
        {
            Reply::Bulk(bytes) => Ok(decode::<NodeRecord>(&bytes).ok()),
            _ => Ok(None),
        }
    }

    /// Writes `next` as the table of its epoch unless that epoch exists already (the
    /// compare-and-set of the module docs); returns whether it was written.
    pub(crate) async fn install_routing(&self, next: &RoutingTable) -> Result<bool, CenterError> {
        next.check()?;
        let reply = self
            .execute(Command::Set {
                key: Bytes::from(routing_key(next.epoch())),
                value: encode(next),
                condition: SetCondition::IfAbsent,
                expiry: None,
                keep_ttl: false,
            })
            .await?;
        if reply != Reply::Ok {
            tracing::info!(
                epoch = next.epoch(),
                "routing epoch taken meanwhile; rereading"
            );
            return Ok(false);
        }
        tracing::info!(epoch = next.epoch(), "routing table written");
        self.node
            .env()
            .fault_points()
            .hit(larder_core::env::FaultPoint::RoutingWritten)
            .await;
        let history = self.config.routing_history.max(2);
        if let Some(old) = next.epoch().checked_sub(history).filter(|e| *e > 0) {
            // Best effort: a leftover old epoch costs a few kilobytes, nothing else.
            let _ = self
                .execute(Command::Del {
                    keys: vec![Bytes::from(routing_key(old))],
                })
                .await;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: NodeId, address: &str, state: NodeState) -> (NodeId, NodeRecord) {
        let address = address.to_string();
        (id, NodeRecord { id, address, state })
    }

    #[test]
    fn registry_addresses_leave_out_removed_nodes_and_unusable_addresses() {
        let long = "x".repeat(ADDRESS_BYTES_MAX + 1);
        let registry: BTreeMap<NodeId, NodeRecord> = [
            record(4, "10.0.0.4:7001", NodeState::Up),
            record(1, "10.0.0.1:7001", NodeState::Up),
            record(2, "10.0.0.2:7001", NodeState::Down),
            record(3, "10.0.0.3:7001", NodeState::Removed),
            record(5, "", NodeState::Up),
            record(6, &long, NodeState::Up),
        ]
        .into_iter()
        .collect();
        let addresses = registry_addresses(&registry);
        let expected: Vec<(NodeId, String)> = [
            (1, "10.0.0.1:7001"),
            (2, "10.0.0.2:7001"),
            (4, "10.0.0.4:7001"),
        ]
        .into_iter()
        .map(|(id, a)| (id, a.to_string()))
        .collect();
        assert_eq!(addresses, expected, "by id; a down node may come back");
    }

    #[test]
    fn registry_addresses_are_bounded() {
        let registry: BTreeMap<NodeId, NodeRecord> = (1..=ADDRESSES_MAX as NodeId + 5)
            .map(|id| record(id, "127.0.0.1:1", NodeState::Up))
            .collect();
        assert_eq!(registry_addresses(&registry).len(), ADDRESSES_MAX);
    }
}
