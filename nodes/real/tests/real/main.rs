//! The real environment's integration tests, one binary (see `sim/tests/sim/main.rs` for why).

mod fjall_crash;
mod real_conformance;
mod stream_bounds;
