//! The center: the cluster's metadata service, replicated by its own Raft group.
//!
//! Three (or five) **center replicas** form one openraft group, [`CENTER_GROUP`], hosted by an
//! ordinary [`StorageNode`]: the center reuses the storage node's log, state machine, snapshots
//! and group commit instead of growing a second replicated store, and needs no external
//! coordinator (the split brain a primary/backup center suffers under a partition cannot
//! happen: only a quorum commits).
//!
//! **Durable state** is records in the center group's KV state, written only through that
//! group's Raft by its leader, so a deposed center leader cannot change anything:
//! - `routing/<epoch, 20 digits>`: the postcard [`RoutingTable`] of that epoch. A new table is
//!   written with `SET … NX` under its own epoch: a compare-and-set, so two writers that started
//!   from the same epoch (a write that timed out and committed later, a leader change) cannot
//!   both succeed, and every table is derived from its predecessor. The newest
//!   [`CenterConfig::routing_history`] epochs are kept, as an audit trail of every change.
//! - `node/<id, 20 digits>`: the node registry ([`NodeRecord`]: address, up/down/removed).
//!
//! **Soft state** lives in the center leader's memory only: when each node was last heard from
//! and what its last heartbeat said, the repairs under way, recent leadership moves. A new
//! center leader starts with none of it and gives every node a fresh failure timer (a grace
//! period), so a center failover never declares the cluster dead.
//!
//! **The control loop** ([`Center::start`] spawns it on every replica) refreshes the local copy
//! of the routing table every tick and, on the center leader only, reads the durable state
//! (linearizably), turns it and the soft state into actions with the pure [`plan::plan`], and
//! carries them out: registry writes, the first table, routing changes, and admin messages to
//! storage nodes ([`Message::AddGroup`], [`Message::ReplaceVoter`],
//! [`Message::TransferLeadership`], [`Message::RemoveGroup`]).
//!
//! **Observers** are learners of the center group ([`CenterConfig::observers`], added by the
//! leader): read-only followers that serve [`Message::GetRouting`] from their applied state, so
//! floods of route requests never reach the center leader. Every center replica answers it the
//! same way, and storage nodes answer it from the table their heartbeats brought back.
//! Processes that route requests hold a [`SharedRouting`](crate::cluster::SharedRouting) built with
//! `SharedRouting::from_sources` and call `SharedRouting::refresh`.
//!
//! **Addresses**: heartbeat answers and routing answers also carry the registry's node
//! addresses ([`registry_addresses`]), which is how storage nodes and proxies find nodes no
//! configuration names (see [`crate::addresses`]).

pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use larder_core::env::{Clock, Env, Handler, Net, timeout};
use larder_core::kv::{Command, Reply, SetCondition};
use larder_core::routing::{RoutingError, RoutingTable};
use larder_core::{GroupId, NodeId};
use openraft::EmptyNode;
use openraft::async_runtime::WatchReceiver;

use crate::addresses::AddressHook;
use crate::node::{NodeConfig, NodeError, StorageNode};
use crate::rpc::{
    ADDRESS_BYTES_MAX, ADDRESSES_MAX, AdminResponse, CenterResponse, ClientResponse, GroupStatus,
    Heartbeat, HeartbeatAck, Message, RoutingAnswer, decode, encode,
};
use plan::{
    Action, Heard, Liveness, NodeRecord, NodeState, NodeView, PlanConfig, RepairInFlight, View,
};

/// The Raft group of the center replicas. Never a slot group: routing tables number slot groups
/// from 1.
pub const CENTER_GROUP: GroupId = 0;

/// Key prefix of the routing tables in the center group.
const ROUTING_PREFIX: &str = "routing/";
/// Key prefix of the node registry in the center group.
const NODE_PREFIX: &str = "node/";
/// Most nodes the center tracks heartbeats of; beyond this, heartbeats of unknown nodes are
/// refused (bounds the leader's memory against a misconfigured fleet).
const TRACKED_NODES_MAX: usize = 4096;
/// Most admin messages in flight at once.
const ADMIN_IN_FLIGHT_MAX: usize = 64;
/// Attempts of one replace: the leader the center believes in, then the hint it gives.
const REPLACE_ATTEMPTS_MAX: usize = 2;

/// Settings of a center replica.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CenterConfig {
    /// The voters of the center group (usually three).
    pub centers: Vec<NodeId>,
    /// Read-only followers of the routing table, added as learners of the center group.
    pub observers: Vec<NodeId>,
    /// Slot groups the first routing table creates (ids `1..=groups`).
    pub groups: u64,
    /// Replicas per slot group.
    pub replicas: usize,
    /// Live storage nodes needed before the first routing table is written (at least
    /// `replicas`): with fewer, later nodes would start empty.
    pub bootstrap_nodes_min: usize,
    /// Expected interval of storage nodes' heartbeats, and the control loop's tick.
    pub heartbeat_ms: u64,
    /// A node is down after this many heartbeat intervals without one, never after one failed
    /// probe: a node that is slow or briefly cut off must not be replaced in a loop.
    pub missed_heartbeats_max: u32,
    /// Replica replacements under way at once, cluster-wide.
    pub repairs_max: usize,
    /// Operator switch: automatic replacement of dead replicas.
    pub repair_enabled: bool,
    /// Leadership moves started per tick.
    pub leader_moves_per_tick_max: usize,
    /// A group whose leadership was moved is left alone this long.
    pub leader_move_cooldown_ms: u64,
    /// Deadline of a quick admin message (host a group, move leadership).
    pub admin_timeout_ms: u64,
    /// Deadline of a replica replacement (the learner must catch up within it).
    pub replace_timeout_ms: u64,
    /// A replica that is no member of its group is dropped after this long. Longer than
    /// `replace_timeout_ms`, so a replacement started by a previous center leader (whose soft
    /// state this leader lacks) has ended before its new replica could look stale.
    pub stale_replica_ms: u64,
    /// Routing epochs kept in the center group (at least 2; see the module docs).
    pub routing_history: u64,
}

impl CenterConfig {
    pub fn new(centers: Vec<NodeId>, groups: u64) -> Self {
        CenterConfig {
            centers,
            observers: Vec::new(),
            groups,
            replicas: 3,
            bootstrap_nodes_min: 3,
            heartbeat_ms: 500,
            missed_heartbeats_max: 5,
            repairs_max: 4,
            repair_enabled: true,
            leader_moves_per_tick_max: 2,
            leader_move_cooldown_ms: 5_000,
            admin_timeout_ms: 2_000,
            replace_timeout_ms: 30_000,
            stale_replica_ms: 60_000,
            routing_history: 16,
        }
    }

    /// Rejects settings the center cannot work with.
    pub fn validate(&self) -> Result<(), CenterError> {
        let reason = if self.centers.is_empty() {
            "no center replicas".to_string()
        } else if !(1..=u64::from(larder_core::slots::SLOTS)).contains(&self.groups) {
            format!(
                "groups must be 1..={}, got {}",
                larder_core::slots::SLOTS,
                self.groups
            )
        } else if self.replicas == 0 {
            "replicas must be at least 1".to_string()
        } else if self.heartbeat_ms == 0 {
            "heartbeat_ms must be positive".to_string()
        } else if self.stale_replica_ms <= self.replace_timeout_ms {
            "stale_replica_ms must exceed replace_timeout_ms (see its docs)".to_string()
        } else {
            return Ok(());
        };
        Err(CenterError::Config { reason })
    }

    fn failure_timeout(&self) -> Duration {
        Duration::from_millis(
            self.heartbeat_ms
                .saturating_mul(u64::from(self.missed_heartbeats_max.max(1))),
        )
    }

    fn plan_config(&self) -> PlanConfig {
        PlanConfig {
            groups: self.groups,
            replicas: self.replicas,
            bootstrap_nodes_min: self.bootstrap_nodes_min,
            repairs_max: self.repairs_max,
            leader_moves_max: self.leader_moves_per_tick_max,
            repair_enabled: self.repair_enabled,
        }
    }
}

/// Why a center operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CenterError {
    #[error("invalid center configuration: {reason}")]
    Config { reason: String },
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("this replica does not lead the center (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("center group {what} failed: {reason}")]
    Raft { what: &'static str, reason: String },
    #[error("corrupt center record {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error("no routing source answered: {reasons}")]
    NoRoutingSource { reasons: String },
}

/// A node's last heartbeat, as the center leader received it.
#[derive(Debug, Clone)]
struct HeardAt {
    at: Duration,
    heard: Heard,
}

/// The center leader's soft state; reset whenever this replica starts a new term as leader.
#[derive(Debug, Default)]
struct Soft {
    /// The center term this state belongs to (`None`: not leading).
    term: Option<u64>,
    term_started: Duration,
    heard: BTreeMap<NodeId, HeardAt>,
    repairs: BTreeMap<GroupId, RepairInFlight>,
    finished: BTreeMap<GroupId, RepairInFlight>,
    adopted_through: BTreeMap<GroupId, u64>,
    /// Group -> until when its leadership is left alone.
    cooling: BTreeMap<GroupId, Duration>,
    /// (node, group) -> since when the node hosts the group without being a member.
    stale_since: BTreeMap<(NodeId, GroupId), Duration>,
    /// Admin messages in flight (node, group, kind), so a slow one is not sent again.
    admin: BTreeSet<(NodeId, GroupId, u8)>,
    /// Liveness as of the last tick (for status queries).
    liveness: BTreeMap<NodeId, Liveness>,
}

/// The center state as this replica last read it from its applied state, and the applied index
/// it was read at: reread only when the center group applied something since.
#[derive(Debug, Default)]
struct Cache {
    applied_index: Option<u64>,
    table: Option<Arc<RoutingTable>>,
    registry: Arc<BTreeMap<NodeId, NodeRecord>>,
    /// The registry's addresses as handed out ([`registry_addresses`]).
    addresses: Arc<Vec<(NodeId, String)>>,
}

/// Registry and routing as read from the center group.
#[derive(Debug, Default)]
struct Durable {
    routing: Option<RoutingTable>,
    registry: BTreeMap<NodeId, NodeRecord>,
}

/// One center replica (or observer): a storage node hosting [`CENTER_GROUP`], plus the control
/// loop and the center's message handlers.
pub struct Center<E: Env> {
    node: Arc<StorageNode<E>>,
    config: CenterConfig,
    soft: Mutex<Soft>,
    cache: RwLock<Cache>,
    /// Serialises cache refreshes (concurrent route requests share one read).
    refreshing: futures::lock::Mutex<()>,
    address_hook: RwLock<Option<AddressHook>>,
}

fn routing_key(epoch: u64) -> String {
    format!("{ROUTING_PREFIX}{epoch:020}")
}

fn node_key(id: NodeId) -> String {
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

impl<E: Env> Center<E> {
    /// Starts a center replica (or observer): the storage node with [`CENTER_GROUP`] added to
    /// `node_config.groups`, and the control loop. Form the center group once with
    /// [`Center::initialize`]; serve with [`Center::serve`].
    pub async fn start(
        env: E,
        mut node_config: NodeConfig,
        config: CenterConfig,
    ) -> Result<Arc<Self>, CenterError> {
        config.validate()?;
        if !node_config.groups.contains(&CENTER_GROUP) {
            node_config.groups.push(CENTER_GROUP);
        }
        let node = StorageNode::start(env, node_config).await?;
        let center = Arc::new(Center {
            node,
            config,
            soft: Mutex::new(Soft::default()),
            cache: RwLock::new(Cache::default()),
            refreshing: futures::lock::Mutex::new(()),
            address_hook: RwLock::new(None),
        });
        // A weak reference: dropping the center ends the loop.
        tokio::spawn(control_loop(Arc::downgrade(&center)));
        Ok(center)
    }

    /// Forms the center group with [`CenterConfig::centers`] as voters. Call on one replica,
    /// once; an already formed group is left as it is.
    pub async fn initialize(&self) -> Result<(), CenterError> {
        let voters: BTreeSet<NodeId> = self.config.centers.iter().copied().collect();
        self.node.initialize(CENTER_GROUP, &voters).await?;
        Ok(())
    }

    /// The storage node under this replica.
    pub fn node(&self) -> &Arc<StorageNode<E>> {
        &self.node
    }

    pub fn config(&self) -> &CenterConfig {
        &self.config
    }

    /// Whether this replica leads the center.
    pub fn is_leader(&self) -> bool {
        self.node.is_leader(CENTER_GROUP)
    }

    /// Calls `hook(node, address)` whenever a heartbeat brings a node's address, so the process
    /// can make the node reachable (the real network's `AddressBook::insert`).
    pub fn on_address(&self, hook: impl Fn(NodeId, &str) + Send + Sync + 'static) {
        *self.address_hook.write().expect("hook lock") = Some(Arc::new(hook));
    }

    /// The routing table as this replica last read it from its applied state (eventually
    /// consistent; see [`Message::GetRouting`]).
    pub fn routing(&self) -> Option<Arc<RoutingTable>> {
        self.cache.read().expect("cache lock").table.clone()
    }

    /// Liveness of every known node as of the last tick, if this replica leads.
    pub fn liveness(&self) -> BTreeMap<NodeId, Liveness> {
        self.soft.lock().expect("soft lock").liveness.clone()
    }

    /// Stops the center group's Raft (and every other group of the node).
    pub async fn shutdown(&self) {
        self.node.shutdown().await;
    }

    /// Serves center requests and everything a storage node serves on the node's `Net`.
    pub async fn serve(self: &Arc<Self>) -> Result<(), CenterError> {
        self.node
            .env()
            .net()
            .serve(CenterHandler {
                center: self.clone(),
            })
            .await
            .map_err(NodeError::from)?;
        Ok(())
    }

    /// The center state from this replica's applied state, reread when the center group
    /// applied something since the last read (so a flood of route requests costs no reads).
    async fn refresh_cache(&self) -> Result<(), CenterError> {
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
        Ok(())
    }

    /// The registry's addresses as last read into the cache.
    fn cached_addresses(&self) -> Vec<(NodeId, String)> {
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
        }
    }

    /// The routing table to hand out: refreshed if possible, else the last one read.
    async fn routing_to_serve(&self) -> Option<Arc<RoutingTable>> {
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
        let keys = key_list(
            read(Command::Keys {
                pattern: Bytes::from(format!("{NODE_PREFIX}*")),
            })
            .await?,
        )?;
        if keys.is_empty() {
            return Ok(durable);
        }
        let Reply::Array(values) = read(Command::MGet { keys: keys.clone() }).await? else {
            return Err(CenterError::Raft {
                what: "MGET",
                reason: "not an array".into(),
            });
        };
        for (key, value) in keys.iter().zip(values) {
            if let Reply::Bulk(bytes) = value {
                let record: NodeRecord = decode(&bytes).map_err(|e| corrupt(key, e))?;
                durable.registry.insert(record.id, record);
            }
        }
        Ok(durable)
    }

    /// A linearizable read or a write through the center group's Raft (on the leader).
    async fn execute(&self, command: Command) -> Result<Reply, CenterError> {
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
    async fn load(&self) -> Result<Durable, CenterError> {
        self.execute(Command::Exists {
            keys: vec![Bytes::from_static(b"center/read-barrier")],
        })
        .await?;
        self.refresh_cache().await?;
        Ok(self.cached_state())
    }

    /// Writes `next` as the table of its epoch unless that epoch exists already (the
    /// compare-and-set of the module docs); returns whether it was written.
    async fn install_routing(&self, next: &RoutingTable) -> Result<bool, CenterError> {
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

    fn on_heartbeat_recorded(&self, beat: &Heartbeat) -> bool {
        let now = self.node.env().clock().now();
        let mut soft = self.soft.lock().expect("soft lock");
        if !soft.heard.contains_key(&beat.node) && soft.heard.len() >= TRACKED_NODES_MAX {
            return false;
        }
        let groups = beat
            .groups
            .iter()
            .map(|status: &GroupStatus| (status.group, status.clone()))
            .collect();
        let previous = soft.heard.insert(
            beat.node,
            HeardAt {
                at: now,
                heard: Heard {
                    address: beat.address.clone(),
                    groups,
                },
            },
        );
        previous.is_none_or(|p| p.heard.address != beat.address)
    }

    async fn on_heartbeat(&self, beat: Heartbeat) -> CenterResponse<HeartbeatAck> {
        if !self.is_leader() {
            return CenterResponse::NotLeader {
                leader_hint: self.node.leader_of(CENTER_GROUP),
            };
        }
        let new_address = self.on_heartbeat_recorded(&beat);
        if new_address && !beat.address.is_empty() {
            let hook = self.address_hook.read().expect("hook lock").clone();
            if let Some(hook) = hook {
                hook(beat.node, &beat.address);
            }
        }
        let table = self.routing_to_serve().await;
        CenterResponse::Ok(HeartbeatAck {
            epoch: table.as_ref().map_or(0, |t| t.epoch()),
            routing: table
                .filter(|t| t.epoch() > beat.known_epoch)
                .map(|t| (*t).clone()),
            addresses: self.cached_addresses(),
        })
    }

    async fn on_get_routing(&self, known_epoch: u64) -> CenterResponse<RoutingAnswer> {
        match self.routing_to_serve().await {
            Some(table) => CenterResponse::Ok(RoutingAnswer {
                epoch: table.epoch(),
                table: (table.epoch() > known_epoch).then(|| (*table).clone()),
                addresses: self.cached_addresses(),
            }),
            None => CenterResponse::Unavailable {
                reason: format!("center replica {} has no routing table yet", self.node.id()),
            },
        }
    }

    /// One round of the control loop on the center leader.
    async fn lead(self: &Arc<Self>) -> Result<(), CenterError> {
        let clock = self.node.env().clock().clone();
        let term = {
            let raft = self.node.raft(CENTER_GROUP)?;
            let metrics = raft.metrics();
            metrics.borrow_watched().current_term
        };
        {
            let mut soft = self.soft.lock().expect("soft lock");
            if soft.term != Some(term) {
                tracing::info!(center = self.node.id(), term, "leading the center");
                *soft = Soft {
                    term: Some(term),
                    term_started: clock.now(),
                    ..Soft::default()
                };
            }
        }
        let durable = self.load().await?;
        self.ensure_observers().await;
        let now = clock.now();
        let view = self.view(durable, now);
        let actions = plan::plan(&view, &self.config.plan_config());
        let mut routing = view.routing.clone();
        for action in actions {
            self.carry_out(action, &view, &mut routing, term, now)
                .await?;
        }
        Ok(())
    }

    /// Builds the planner's input from the durable state and the soft state at `now`, and
    /// updates the soft bookkeeping that depends on it (stale replicas, cooldowns, liveness).
    fn view(&self, durable: Durable, now: Duration) -> View {
        let timeout = self.config.failure_timeout();
        let mut soft = self.soft.lock().expect("soft lock");
        let ids: BTreeSet<NodeId> = durable
            .registry
            .keys()
            .chain(soft.heard.keys())
            .copied()
            .collect();
        let mut nodes = BTreeMap::new();
        for id in ids {
            let record = durable.registry.get(&id).cloned();
            let heard = soft.heard.get(&id);
            let liveness = plan::liveness(
                heard.map(|h| h.at),
                record.as_ref().map(|r| r.state),
                soft.term_started,
                now,
                timeout,
            );
            nodes.insert(
                id,
                NodeView {
                    liveness,
                    record,
                    heard: heard.map(|h| h.heard.clone()),
                },
            );
        }
        soft.liveness = nodes.iter().map(|(id, v)| (*id, v.liveness)).collect();
        // Finished repairs the table already shows need no more writing.
        if let Some(table) = &durable.routing {
            soft.finished.retain(|group, done| {
                table
                    .route(*group)
                    .is_some_and(|r| r.replicas.contains(&done.old))
            });
        }
        // Replicas hosted by a non-member: start (or keep) their clocks; members stop them.
        let memberships = plan::newest_memberships(&nodes);
        let mut hosted_by_non_members = BTreeSet::new();
        for (id, node) in &nodes {
            let Some(heard) = node
                .heard
                .as_ref()
                .filter(|_| node.liveness == Liveness::Up)
            else {
                continue;
            };
            for group in heard.groups.keys() {
                let in_table = durable
                    .routing
                    .as_ref()
                    .and_then(|t| t.route(*group))
                    .is_some_and(|r| r.replicas.contains(id));
                let in_raft = memberships
                    .get(group)
                    .is_some_and(|m| m.voters.contains(id) || m.learners.contains(id));
                if !in_table && !in_raft && *group != CENTER_GROUP {
                    hosted_by_non_members.insert((*id, *group));
                }
            }
        }
        soft.stale_since
            .retain(|key, _| hosted_by_non_members.contains(key));
        for key in &hosted_by_non_members {
            soft.stale_since.entry(*key).or_insert(now);
        }
        let stale_after = Duration::from_millis(self.config.stale_replica_ms);
        let stale = soft
            .stale_since
            .iter()
            .filter(|(_, since)| now.saturating_sub(**since) >= stale_after)
            .map(|(key, _)| *key)
            .collect();
        soft.cooling.retain(|_, until| *until > now);
        let settled = timeout.saturating_mul(2);
        let settled_down = nodes
            .iter()
            .filter(|(id, v)| {
                v.liveness == Liveness::Down
                    && match soft.heard.get(id) {
                        Some(h) => now.saturating_sub(h.at) >= settled,
                        None => now.saturating_sub(soft.term_started) >= settled,
                    }
            })
            .map(|(id, _)| *id)
            .collect();
        View {
            routing: durable.routing,
            nodes,
            repairs: soft.repairs.clone(),
            finished: soft.finished.clone(),
            adopted_through: soft.adopted_through.clone(),
            cooling: soft.cooling.keys().copied().collect(),
            stale,
            settled_down,
        }
    }

    async fn carry_out(
        self: &Arc<Self>,
        action: Action,
        view: &View,
        routing: &mut Option<RoutingTable>,
        term: u64,
        now: Duration,
    ) -> Result<(), CenterError> {
        match action {
            Action::Register(record) => {
                tracing::info!(node = record.id, state = ?record.state, "registry");
                self.execute(Command::set(node_key(record.id), encode(&record)))
                    .await?;
            }
            Action::Bootstrap(table) => {
                if self.install_routing(&table).await? {
                    *routing = Some(table);
                }
            }
            Action::Adopt { group, replicas } => {
                let Some(current) = routing.as_ref() else {
                    return Ok(());
                };
                let next = current.with_replicas(group, replicas)?;
                if !self.install_routing(&next).await? {
                    // Someone else moved the table on: stop here, reread next tick.
                    return Err(CenterError::Raft {
                        what: "routing compare-and-set",
                        reason: format!("epoch {} exists", next.epoch()),
                    });
                }
                *routing = Some(next);
                let through = plan::newest_memberships(&view.nodes)
                    .get(&group)
                    .map(|m| m.index);
                let mut soft = self.soft.lock().expect("soft lock");
                soft.finished.remove(&group);
                // No membership known (a never-formed group placed anew): the first one reported
                // later, even at log index 0, must still be adopted.
                match through {
                    Some(index) => soft.adopted_through.insert(group, index),
                    None => soft.adopted_through.remove(&group),
                };
            }
            Action::Recreate { old, new, replicas } => {
                let Some(current) = routing.as_ref() else {
                    return Ok(());
                };
                tracing::info!(old, new, ?replicas, "recreating a group that never formed");
                let next = current.recreate_group(old, new, replicas)?;
                if !self.install_routing(&next).await? {
                    return Err(CenterError::Raft {
                        what: "routing compare-and-set",
                        reason: format!("epoch {} exists", next.epoch()),
                    });
                }
                *routing = Some(next);
            }
            Action::Host {
                node,
                group,
                initialize,
            } => self.spawn_admin(node, group, 0, Message::AddGroup { group, initialize }),
            Action::Drop { node, group } => {
                tracing::info!(node, group, "dropping a stale replica");
                self.spawn_admin(node, group, 1, Message::RemoveGroup { group });
            }
            Action::MoveLeader { group, from, to } => {
                tracing::info!(group, from, to, "moving leadership");
                let cooldown = Duration::from_millis(self.config.leader_move_cooldown_ms);
                self.soft
                    .lock()
                    .expect("soft lock")
                    .cooling
                    .insert(group, now + cooldown);
                self.spawn_admin(from, group, 2, Message::TransferLeadership { group, to });
            }
            Action::Repair {
                group,
                old,
                new,
                leader,
            } => {
                tracing::info!(group, old, new, leader, "replacing a dead replica");
                self.soft
                    .lock()
                    .expect("soft lock")
                    .repairs
                    .insert(group, RepairInFlight { old, new });
                let center = self.clone();
                tokio::spawn(async move {
                    center.repair(term, group, old, new, leader).await;
                });
            }
        }
        Ok(())
    }

    /// Makes every configured observer a learner of the center group.
    async fn ensure_observers(&self) {
        if self.config.observers.is_empty() {
            return;
        }
        let Ok(raft) = self.node.raft(CENTER_GROUP) else {
            return;
        };
        let members: BTreeSet<NodeId> = raft.voter_ids().chain(raft.learner_ids()).collect();
        let limit = Duration::from_millis(self.config.admin_timeout_ms);
        for observer in &self.config.observers {
            if members.contains(observer) {
                continue;
            }
            let add = raft.add_learner(*observer, EmptyNode {}, false);
            match timeout(self.node.env().clock(), limit, add).await {
                Ok(Ok(_)) => tracing::info!(observer, "observer added to the center group"),
                Ok(Err(error)) => tracing::warn!(observer, %error, "adding an observer"),
                Err(_) => tracing::warn!(observer, "adding an observer timed out"),
            }
        }
    }

    /// Sends `message` to `node` in the background, unless the same kind of message for the
    /// same group is still in flight there.
    fn spawn_admin(self: &Arc<Self>, node: NodeId, group: GroupId, kind: u8, message: Message) {
        let key = (node, group, kind);
        {
            let mut soft = self.soft.lock().expect("soft lock");
            if soft.admin.contains(&key) || soft.admin.len() >= ADMIN_IN_FLIGHT_MAX {
                return;
            }
            soft.admin.insert(key);
        }
        let center = self.clone();
        tokio::spawn(async move {
            let limit = Duration::from_millis(center.config.admin_timeout_ms);
            let response = center.admin(node, &message, limit).await;
            if response != AdminResponse::Done {
                tracing::debug!(node, group, ?response, "admin message not done");
            }
            center.soft.lock().expect("soft lock").admin.remove(&key);
        });
    }

    async fn admin(&self, to: NodeId, message: &Message, limit: Duration) -> AdminResponse {
        match self.node.env().net().call(to, encode(message), limit).await {
            Ok(bytes) => {
                decode::<AdminResponse>(&bytes).unwrap_or_else(|e| AdminResponse::Failed {
                    reason: format!("bad answer: {e}"),
                })
            }
            Err(error) => AdminResponse::Failed {
                reason: error.to_string(),
            },
        }
    }

    /// Replaces `old` by `new` in `group`: `new` hosts an empty replica, then the group's leader
    /// adds it as a learner, waits for it to catch up and swaps the voters. The routing table
    /// is updated by the next tick (from `finished`), never from here: writes stay on the loop.
    async fn repair(&self, term: u64, group: GroupId, old: NodeId, new: NodeId, leader: NodeId) {
        let quick = Duration::from_millis(self.config.admin_timeout_ms);
        let host = Message::AddGroup {
            group,
            initialize: None,
        };
        let mut outcome = self.admin(new, &host, quick).await;
        if outcome == AdminResponse::Done {
            let replace = Message::ReplaceVoter {
                group,
                old,
                new,
                timeout_ms: self.config.replace_timeout_ms,
            };
            let limit = Duration::from_millis(self.config.replace_timeout_ms) + quick;
            let mut target = leader;
            for _ in 0..REPLACE_ATTEMPTS_MAX {
                outcome = self.admin(target, &replace, limit).await;
                match &outcome {
                    AdminResponse::NotLeader {
                        leader_hint: Some(hint),
                    } if *hint != target => target = *hint,
                    _ => break,
                }
            }
        }
        tracing::info!(group, old, new, ?outcome, "replica replacement ended");
        let mut soft = self.soft.lock().expect("soft lock");
        if soft.term == Some(term) {
            soft.repairs.remove(&group);
            if outcome == AdminResponse::Done {
                soft.finished.insert(group, RepairInFlight { old, new });
            }
        }
    }
}

fn decode_table(key: &[u8], bytes: &[u8]) -> Result<RoutingTable, CenterError> {
    let table: RoutingTable = decode(bytes).map_err(|e| corrupt(key, e))?;
    table.check().map_err(|e| corrupt(key, e))?;
    Ok(table)
}

/// The control loop of one replica: every tick, refresh the local routing copy; on the leader,
/// run one round. Ends when the center is dropped or its node shut down.
async fn control_loop<E: Env>(center: Weak<Center<E>>) {
    let (clock, tick) = match center.upgrade() {
        Some(c) => (
            c.node.env().clock().clone(),
            Duration::from_millis(c.config.heartbeat_ms.max(1)),
        ),
        None => return,
    };
    loop {
        clock.sleep(tick).await;
        let Some(center) = center.upgrade() else {
            return;
        };
        if center.node.is_stopped() {
            return;
        }
        // Keeps followers' and observers' copies current even when nobody asks.
        let _ = center.routing_to_serve().await;
        if center.is_leader() {
            if let Err(error) = center.lead().await {
                tracing::info!(center = center.node.id(), %error, "center round cut short");
            }
        } else {
            let mut soft = center.soft.lock().expect("soft lock");
            if soft.term.is_some() {
                *soft = Soft::default();
            }
        }
    }
}

/// The [`Handler`] a center replica serves: center requests here, the rest as a storage node.
pub struct CenterHandler<E: Env> {
    center: Arc<Center<E>>,
}

impl<E: Env> Clone for CenterHandler<E> {
    fn clone(&self) -> Self {
        CenterHandler {
            center: self.center.clone(),
        }
    }
}

impl<E: Env> Handler for CenterHandler<E> {
    async fn handle(&self, _from: NodeId, request: Bytes) -> Bytes {
        match decode::<Message>(&request) {
            Ok(Message::Heartbeat(beat)) => encode(&self.center.on_heartbeat(beat).await),
            Ok(Message::GetRouting { known_epoch }) => {
                encode(&self.center.on_get_routing(known_epoch).await)
            }
            Ok(message) => self.center.node.handle_message(message).await,
            Err(error) => encode(&ClientResponse::Unavailable {
                reason: format!("undecodable request: {error}"),
            }),
        }
    }
}

/// Asks `sources` in order (center replicas, observers — or storage nodes, which answer from
/// the table their heartbeats brought) for a routing table newer than `known_epoch`, trying
/// each once. `Ok(None)`: the first source that answered has nothing newer. The table is
/// validated before it is returned. [`fetch_routing_answer`] also returns the node addresses.
///
/// Eventually consistent (see [`Message::GetRouting`]): put observers first so route lookups
/// stay off the center leader.
pub async fn fetch_routing<N: Net>(
    net: &N,
    sources: &[NodeId],
    known_epoch: u64,
    limit: Duration,
) -> Result<Option<RoutingTable>, CenterError> {
    Ok(fetch_routing_answer(net, sources, known_epoch, limit)
        .await?
        .table)
}

/// What [`fetch_routing_answer`] got from the first source that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The table, if newer than the `known_epoch` asked with (validated).
    pub table: Option<RoutingTable>,
    /// The registered nodes' addresses ([`RoutingAnswer::addresses`]), newer table or not.
    pub addresses: Vec<(NodeId, String)>,
}

/// [`fetch_routing`], returning the answering source's node addresses too: they can change
/// without a routing epoch (a node restarted on another port), so they count even when the
/// table is not newer.
pub async fn fetch_routing_answer<N: Net>(
    net: &N,
    sources: &[NodeId],
    known_epoch: u64,
    limit: Duration,
) -> Result<Fetched, CenterError> {
    let request = encode(&Message::GetRouting { known_epoch });
    let mut reasons = Vec::new();
    for source in sources {
        let answer = net
            .call(*source, request.clone(), limit)
            .await
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                decode::<CenterResponse<RoutingAnswer>>(&bytes).map_err(|e| e.to_string())
            });
        match answer {
            Ok(CenterResponse::Ok(mut answer)) => {
                answer.addresses.truncate(ADDRESSES_MAX);
                match answer.table {
                    Some(table) => match table.check() {
                        Ok(()) => {
                            return Ok(Fetched {
                                table: Some(table),
                                addresses: answer.addresses,
                            });
                        }
                        Err(error) => reasons.push(format!("{source}: invalid table: {error}")),
                    },
                    None => {
                        return Ok(Fetched {
                            table: None,
                            addresses: answer.addresses,
                        });
                    }
                }
            }
            Ok(CenterResponse::NotLeader { .. }) => reasons.push(format!("{source}: not leader")),
            Ok(CenterResponse::Unavailable { reason }) => {
                reasons.push(format!("{source}: {reason}"))
            }
            Err(reason) => reasons.push(format!("{source}: {reason}")),
        }
    }
    Err(CenterError::NoRoutingSource {
        reasons: reasons.join("; "),
    })
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
