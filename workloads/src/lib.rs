//! `larder-workloads`: client workloads, history recording and checkers (linearizability,
//! counter and durability invariants) that run against a simulated or a real cluster through
//! the client SDK.
//!
//! Today the simulator carries its own register/counter workload and invariant checks
//! (`larder_sim::workload`, `larder_sim::run`), because the seam issue needed one before this
//! crate's history format and WGL checker exist; they move here with the checker.
