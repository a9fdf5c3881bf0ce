//! `larder-core`: the parts of Larder that every other crate shares and that never do I/O.
//!
//! It owns:
//! - the **environment traits** ([`env::Clock`], [`env::Net`], [`env::Disk`], [`env::Rng`]) that
//!   every node, center, proxy and client is generic over, so the same code runs on real time,
//!   sockets and fjall, or inside the seeded simulator;
//! - the shared **conformance suite** ([`conformance`]) that every implementation of those traits
//!   must pass, real or simulated;
//! - the **KV model**: commands, replies, records with TTL, and the pure state-machine step
//!   ([`kv::execute`]) that a replica applies to committed log entries;
//! - **slots** ([`slots`]): key to slot mapping (CRC16 mod 16384 with `{hash tags}`), exactly as
//!   Redis Cluster computes it;
//! - the **routing table** ([`routing`]): slot -> group -> replicas, versioned by epoch;
//! - the **RESP codec** ([`resp`]): RESP2/RESP3 request and reply parsing and encoding, no I/O;
//! - the **metrics** plumbing ([`metrics`]): each role's Prometheus registry and the scrape that
//!   renders a process's registries as one page;
//! - **costly subjects** ([`costly`]): the keys whose last read answered a large reply, which
//!   a node's lanes and the proxy's coalescer keep apart from fast reads;
//! - **hot keys** ([`hotkeys`]): a Space-Saving top-k over a sliding window, which the proxy
//!   and each group leader keep to find hot keys and slots and to limit a key's writes;
//! - the **planted-bug catalog** ([`bugs`]): switches that break one layer on purpose, compiled
//!   in only with the `planted-bugs` feature, so the simulator can prove it catches them.
//!
//! It must not depend on: tokio, `std::time::{Instant, SystemTime}` (time only through
//! [`env::Clock`]), sockets, `std::fs`, or any other Larder crate. `clippy.toml` enforces the
//! time/rng/HashMap part; the dependency list enforces the rest.

pub mod bugs;
pub mod conformance;
pub mod costly;
pub mod env;
pub mod hotkeys;
pub mod kv;
pub mod metrics;
pub mod resp;
pub mod routing;
pub mod slots;

/// Identifies a process in the cluster (storage node, center, proxy or client) on the [`env::Net`].
pub type NodeId = u64;

/// Identifies one Raft-replicated slot group (a set of slots with its own log).
pub type GroupId = u64;
