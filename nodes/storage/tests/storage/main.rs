//! The storage node's integration tests, one binary (see `sim/tests/sim/main.rs` for why).

mod group_commit_conformance;
mod one_real_node;
mod real_group;
mod supervisor;
