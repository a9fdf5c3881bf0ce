//! The center's integration tests, one binary (see `sim/tests/sim/main.rs` for why).

mod center_cluster;
mod forged_traffic;
