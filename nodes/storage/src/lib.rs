//! `larder-storage`: the storage node. It hosts Raft-replicated slot groups (openraft over the
//! [`larder_core::env::Disk`] trait, one group-commit task per node) and answers clients, peers
//! and the center over [`larder_core::env::Net`], generic over the environment
//! ([`larder_core::env::Env`]): the same code runs on the real environment and in the simulator.
//!
//! - [`node`]: [`StorageNode`], hosting (open, add, remove groups) and what it knows of them.
//! - [`serving`]: client commands (writes through the log, reads after a read round),
//!   openraft's RPCs, routing fetches, and the request dispatch ([`NodeHandler`]).
//! - [`read_rounds`]: confirming the leadership of every group with reads waiting in one
//!   exchange per peer, for linearizable reads.
//! - [`admin`]: the center's instructions (host, drop, form, replace a voter, move leadership).
//! - [`lanes`]: the four lanes (read/write × fast/slow) client commands run in.
//! - [`broken`]: replicas retired because a record's checksum failed.
//! - [`migration`]: a node's steps in moving slots between groups (track, read, ingest, own).
//! - [`unchanged`]: writes that would change nothing, answered by a confirmed read.
//! - [`heartbeat`]: heartbeats to the center, which bring routing tables and addresses.
//! - [`raft`]: one Raft group over the environment (log store, state machine, network,
//!   runtime, group commit, wire payloads).
//!
//! It must not depend on the center, the client SDK, the proxy or the simulator. Nothing here
//! touches real time, OS randomness, sockets or files: the environment decides.

pub mod admin;
pub mod backup;
pub mod broken;
pub mod cluster_sync;
pub mod config;
pub mod heartbeat;
pub mod hot;
pub mod lanes;
pub mod metrics;
pub mod migration;
pub mod node;
pub mod quiet;
pub mod raft;
pub mod read_rounds;
pub mod restore;
pub mod serving;
pub mod supervisor;
pub mod unchanged;

pub use config::{NodeConfig, NodeError};
pub use node::{NodeDisk, OwnershipAudit, ReadBatches, Refused, StorageNode};
pub use serving::NodeHandler;
