//! `larder-client`: the client SDK of a Larder cluster, generic over the network and clock
//! ([`larder_core::env::Net`], [`larder_core::env::Clock`]).
//!
//! - [`Client`]: one slot group (leader following, safe retries, write sessions).
//! - [`ClusterClient`]: the whole cluster (slot routing, multi-key splitting, routing refresh).
//! - [`SessionPool`]: sessions of closed clients, carried on by the next ones.
//! - [`SharedRouting`]: the routing table a process believes, its leader hints, and fetching
//!   newer tables ([`fetch_routing`], [`fetch_routing_answer`]).
//!
//! It speaks [`larder_protocol`] only: no openraft, no server code. The proxy, the simulator's
//! clients and the center's tests are built on it.

pub mod cluster;
pub mod group;
pub mod routing;
pub mod sessions;

pub use cluster::{ClusterClient, single_group};
pub use group::{Client, ClientConfig, ClientError};
pub use routing::{Fetched, RoutingFetchError, SharedRouting, fetch_routing, fetch_routing_answer};
pub use sessions::{ParkedSession, SessionPool};
