//! The simulator's integration tests, one binary: each module was a test binary of its own, and
//! each of those compiled and linked the whole simulated cluster again (stop 25: 47 binaries,
//! 14 minutes of the CI's build).

mod clock_raft;
mod cluster_sweep;
mod conformance;
mod corruption;
mod hot_key;
mod lanes;
mod load;
mod migration;
mod scripted;
mod seed_sweep;
mod swarm_sweep;
