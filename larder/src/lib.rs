//! The `larder` package's library half: what the binary and its end-to-end tests share.
//!
//! - [`local::LocalCluster`]: center replicas, storage nodes and a proxy in one process on
//!   loopback (`larder up`, `larder bench`, the end-to-end tests).
//! - [`stopping`]: openraft's shutdown noise kept out of the logs once a process stops.
//! - [`import`]: `larder import`, a Redis RDB file into a running cluster through its proxy.
//! - [`child`]: one `larder sim` run in a child process (`--bug-matrix`, `--shrink`, and the
//!   bug-catalog and shrink tests).
//!
//! The binary assembles real processes, so like `larder-real` it may touch real time, sockets
//! and files: the simulator never runs this code.

// Process assembly on the real environment (see the crate docs).
#![allow(clippy::disallowed_methods)]

pub mod child;
pub mod import;
pub mod local;
pub mod stopping;
