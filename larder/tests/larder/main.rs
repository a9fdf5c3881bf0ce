//! End-to-end tests of the `larder` binary and its local cluster, one binary (see
//! `sim/tests/sim/main.rs` for why one).

mod admin_grow;
mod backup_restore;
mod bug_catalog;
mod center_processes;
mod closed_stdout;
mod cluster_sync;
mod e2e_proxy;
mod e2e_proxy_tls;
mod redis_suite;
mod role_logs;
mod shrink;
