//! [`Center`]: one center replica's state (the storage node under it, the leader's soft state,
//! the cache of the durable state) and its public handle. What it does lives beside it:
//! [`crate::store`], [`crate::control`], [`crate::handler`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use larder_core::env::Env;
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use larder_protocol::CENTER_GROUP;
use larder_protocol::addresses::AddressHook;
use larder_storage::{NodeConfig, StorageNode};

use crate::config::{CenterConfig, CenterError};
use crate::plan::{Heard, Liveness, NodeRecord, RepairInFlight, View};

/// A node's last heartbeat, as the center leader received it.
#[derive(Debug, Clone)]
pub(crate) struct HeardAt {
    pub(crate) at: Duration,
    pub(crate) heard: Heard,
}

/// The center leader's soft state; reset whenever this replica starts a new term as leader.
#[derive(Debug, Default)]
pub(crate) struct Soft {
    /// Control actions that failed lately, by what they act on (`control::action_key`).
    pub(crate) backoff: BTreeMap<String, Backoff>,
    /// Center records that did not decode, reported once each (`store`).
    pub(crate) bad_records: BTreeSet<Bytes>,
    /// The center term this state belongs to (`None`: not leading).
    pub(crate) term: Option<u64>,
    pub(crate) term_started: Duration,
    pub(crate) heard: BTreeMap<NodeId, HeardAt>,
    pub(crate) repairs: BTreeMap<GroupId, RepairInFlight>,
    pub(crate) finished: BTreeMap<GroupId, RepairInFlight>,
    pub(crate) adopted_through: BTreeMap<GroupId, u64>,
    /// When each group's replicas were last written into the table (`Action::Adopt`).
    pub(crate) adopted_at: BTreeMap<GroupId, Duration>,
    /// Group -> until when its leadership is left alone.
    pub(crate) cooling: BTreeMap<GroupId, Duration>,
    /// (node, group) -> since when the node hosts the group without being a member.
    pub(crate) stale_since: BTreeMap<(NodeId, GroupId), Duration>,
    /// Admin messages in flight (node, group, kind), so a slow one is not sent again.
    pub(crate) admin: BTreeSet<(NodeId, GroupId, u8)>,
    /// Migrations this leader runs a task for ([`crate::migrate`]).
    pub(crate) migrating: BTreeSet<u64>,
    /// What operators asked of each migration in this term (a recorded pause outlives it).
    pub(crate) steer: BTreeMap<u64, larder_protocol::Steer>,
    /// Migrations that may still be cancelled: planned or copying, cutover not started. The
    /// task takes its id out (under this lock, checking for a cancel) when the cutover starts.
    pub(crate) cancellable: BTreeSet<u64>,
    /// The running tasks' migrations as they are now (records move only at phase changes), so
    /// operators see progress and rate.
    pub(crate) progress: BTreeMap<u64, larder_protocol::Migration>,
    /// The latest round's view: what the planner last decided from, kept for status requests
    /// (so they report what the center acts on, not a second reading of it).
    pub(crate) last_round: Option<Round>,
    /// An automatic split is being started (between the decision and its migration's record).
    pub(crate) splitting: bool,
    /// Groups counted for an automatic split, and when they may be counted again.
    pub(crate) split_checked: BTreeMap<GroupId, Duration>,
}

/// A control round's input, as [`Soft::last_round`] keeps it.
/// A failing control action's backoff.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) failures: u32,
    /// Not tried again before this instant of the center's clock.
    pub(crate) until: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct Round {
    /// When the round built it (the node's monotonic clock).
    pub(crate) at: Duration,
    pub(crate) view: Arc<View>,
}

/// The center state as this replica last read it from its applied state, and the applied index
/// it was read at: reread only when the center group applied something since.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    pub(crate) applied_index: Option<u64>,
    pub(crate) table: Option<Arc<RoutingTable>>,
    pub(crate) registry: Arc<BTreeMap<NodeId, NodeRecord>>,
    /// The registry's addresses as handed out ([`registry_addresses`]).
    pub(crate) addresses: Arc<Vec<(NodeId, String)>>,
    pub(crate) migrations: Arc<BTreeMap<u64, larder_protocol::Migration>>,
}

/// One center replica (or observer): a storage node hosting [`CENTER_GROUP`], plus the control
/// loop and the center's message handlers.
pub struct Center<E: Env> {
    pub(crate) node: Arc<StorageNode<E>>,
    pub(crate) config: CenterConfig,
    pub(crate) soft: Mutex<Soft>,
    pub(crate) cache: RwLock<Cache>,
    /// Serialises cache refreshes (concurrent route requests share one read).
    pub(crate) refreshing: futures::lock::Mutex<()>,
    /// Serialises writes of node records: the control round's (liveness, removal) and an
    /// operator's drain, each re-reading the record under it, so neither overwrites the other
    /// with a state planned from before it ([`Center::drain_node`], `Action::Register`).
    pub(crate) registry_writes: futures::lock::Mutex<()>,
    pub(crate) address_hook: RwLock<Option<AddressHook>>,
    /// What this replica started while leading, for its metrics.
    pub(crate) counters: Counters,
    /// Migration steps this replica stamped ([`larder_core::kv::StepStamp::seq`]): counted
    /// over its whole life, so its stamps rise within any term it leads.
    pub(crate) steps_stamped: std::sync::atomic::AtomicU64,
}

/// Control actions a center replica started while it led (its metrics' counters).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Dead replicas it started replacing.
    pub(crate) repairs: std::sync::atomic::AtomicU64,
    /// Groups it split because they held too many records.
    pub(crate) splits: std::sync::atomic::AtomicU64,
    /// Hot slots it moved into a group of their own.
    pub(crate) hot_slot_moves: std::sync::atomic::AtomicU64,
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
            registry_writes: futures::lock::Mutex::new(()),
            address_hook: RwLock::new(None),
            counters: Counters::default(),
            steps_stamped: std::sync::atomic::AtomicU64::new(0),
        });
        center.spawn_control_loop();
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
    /// consistent; see [`larder_protocol::GetRouting`]).
    pub fn routing(&self) -> Option<Arc<RoutingTable>> {
        self.cache.read().expect("cache lock").table.clone()
    }

    /// Liveness of every known node as of the last round, if this replica leads.
    pub fn liveness(&self) -> BTreeMap<NodeId, Liveness> {
        let soft = self.soft.lock().expect("soft lock");
        soft.last_round
            .iter()
            .flat_map(|round| round.view.nodes.iter())
            .map(|(id, node)| (*id, node.liveness))
            .collect()
    }

    /// Stops the center group's Raft (and every other group of the node).
    pub async fn shutdown(&self) {
        self.node.shutdown().await;
    }
}
