//! `larder-nodes`: the processes of a Larder cluster, generic over the environment
//! ([`larder_core::env::Env`]), and the real environment they run on in production.
//!
//! - [`node::StorageNode`]: hosts Raft-replicated slot groups (openraft over the `Disk` trait)
//!   and serves peers and clients over the `Net` trait.
//! - [`client::Client`]: the client SDK for one slot group (leader following, safe retries);
//!   [`cluster::ClusterClient`]: for the whole cluster (slot routing, multi-key splitting).
//! - [`center::Center`]: the metadata service (routing table, node registry, failure
//!   detection, replica repair, leader balancing) as its own Raft group, and its observers.
//! - [`proxy::Proxy`]: the RESP2/RESP3 server in front of the cluster.
//! - [`local::LocalCluster`]: center replicas, storage nodes and a proxy in one process on
//!   loopback (`larder up`).
//! - [`rpc`]: the messages on the wire; [`addresses`]: node addresses learned from the center.
//! - [`real`]: `TokioClock`, `TcpNet`, `FjallDisk`.
//!
//! It must not depend on `larder-sim`, and nothing outside [`real`] may touch real time, OS
//! randomness, sockets or files: no `if simulated` branches, the environment decides.

pub mod addresses;
pub mod center;
pub mod client;
pub mod cluster;
pub mod local;
pub mod node;
pub mod proxy;
pub mod raft;
pub mod real;
pub mod rpc;
