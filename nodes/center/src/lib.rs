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
//! storage nodes ([`larder_protocol::admin`]: `AddGroup`, `ReplaceVoter`, `TransferLeadership`,
//! `RemoveGroup`).
//!
//! **Observers** are learners of the center group ([`CenterConfig::observers`], added by the
//! leader): read-only followers that serve [`GetRouting`] from their applied state, so
//! floods of route requests never reach the center leader. Every center replica answers it the
//! same way, and storage nodes answer it from the table their heartbeats brought back.
//! Processes that route requests hold a `larder_client::SharedRouting` built with
//! `SharedRouting::from_sources` and call `SharedRouting::refresh`.
//!
//! **Addresses**: heartbeat answers and routing answers also carry the registry's node
//! addresses ([`registry_addresses`]), which is how storage nodes and proxies find nodes no
//! configuration names (see [`larder_protocol::addresses`]).
//!
//! Modules: [`config`] (settings, errors), [`store`] (the durable state in the center group and
//! its cache), [`control`] (the control loop: view, plan, carry out, repair), [`handler`]
//! (heartbeats, routing fetches, the request dispatch), [`plan`] (the pure planner).

pub mod config;
pub mod control;
pub mod handler;
pub mod plan;
pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use larder_core::NodeId;
use larder_core::env::{Env, Net};
use larder_core::routing::RoutingTable;
use larder_protocol::addresses::AddressHook;
use larder_storage::{NodeConfig, NodeError, StorageNode};

pub use config::{CenterConfig, CenterError};
pub use handler::CenterHandler;
pub use larder_protocol::CENTER_GROUP;
pub use plan::{Liveness, NodeRecord, NodeState};
pub use store::registry_addresses;

use control::{Soft, control_loop};
use store::Cache;

/// One center replica (or observer): a storage node hosting [`CENTER_GROUP`], plus the control
/// loop and the center's message handlers.
pub struct Center<E: Env> {
    pub(crate) node: Arc<StorageNode<E>>,
    pub(crate) config: CenterConfig,
    pub(crate) soft: Mutex<Soft>,
    pub(crate) cache: RwLock<Cache>,
    /// Serialises cache refreshes (concurrent route requests share one read).
    pub(crate) refreshing: futures::lock::Mutex<()>,
    pub(crate) address_hook: RwLock<Option<AddressHook>>,
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
    /// consistent; see [`larder_protocol::GetRouting`]).
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
            .serve(CenterHandler::new(self.clone()))
            .await
            .map_err(NodeError::from)?;
        Ok(())
    }
}
