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
//! **Status**: the center leader answers [`larder_protocol::GetStatus`] with the view its latest
//! control round planned from ([`status::cluster_status`]): nodes, liveness, groups, leaders,
//! applied indexes, broken replicas, slot ranges, repairs (`larder admin status`).
//!
//! Modules: [`center`] (the replica's state and handle), [`config`] (settings, errors), [`store`] (the durable state in the center group and
//! its cache), [`control`] (the control loop: view, plan, carry out, repair), [`handler`]
//! (heartbeats, routing fetches, status requests, the request dispatch), [`plan`] (the pure
//! planner), [`status`] (the cluster status from a view).

pub mod center;
pub mod config;
pub mod control;
pub mod handler;
pub mod metrics;
pub mod migrate;
mod operate;
pub mod plan;
pub mod status;
pub mod store;

pub use center::Center;
pub use config::{CenterConfig, CenterError};
pub use handler::CenterHandler;
pub use larder_protocol::CENTER_GROUP;
pub use plan::{Liveness, NodeRecord, NodeState};
pub use store::registry_addresses;
