//! `larder-sim`: the seeded simulator.
//!
//! It owns the simulated environment ([`SimClock`], [`SimNet`], [`SimDisk`]: the same traits
//! as `larder_real`, on turmoil's simulated time and network), the harness that builds a
//! cluster of real Larder nodes on it, runs clients and a fault plan ([`run::run`]), and the
//! determinism check ([`run::check_determinism`]: hash the ordered event trace, run a seed
//! twice, name the first divergent event).
//!
//! It must not depend on anything real-time: no `std::time::Instant` (except to report the wall
//! time a run took), no OS randomness, no real sockets or files, no threads.

// Without `tokio_unstable` turmoil cannot seed each host's tokio RNG (`select!` draws from it),
// and every simulation is nondeterministic. `.cargo/config.toml` sets the cfg, but a `RUSTFLAGS`
// variable replaces that file's flags rather than adding to them: stop 25's CI exported one for
// a linker and every cluster seed diverged between two runs. Refuse to build instead.
#[cfg(not(tokio_unstable))]
compile_error!(
    "larder-sim needs `--cfg tokio_unstable` (.cargo/config.toml); a RUSTFLAGS variable \
     replaces it: add `--cfg tokio_unstable` to RUSTFLAGS too"
);

pub mod clock;
pub mod disk;
pub mod env;
pub mod net;
pub mod points;
pub mod run;
pub mod scenario;
pub mod trace;
pub mod workload;

pub use clock::SimClock;
pub use disk::{SimDisk, SimView};
pub use env::SimEnv;
pub use net::SimNet;
pub use run::{
    OPERATOR_ID, OperatorLog, PlannedMove, PlannedSteer, RunReport, SimConfig, SteerAction,
    check_determinism, check_seed, linearizability_budget, run,
};
