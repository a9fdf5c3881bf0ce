//! `SimEnv`: one simulated process's environment.

use larder_core::env::{Env, FaultPoints};

use crate::clock::SimClock;
use crate::disk::SimDisk;
use crate::net::SimNet;

/// The simulated counterpart of the real environment: turmoil time through [`SimClock`],
/// turmoil TCP through [`SimNet`], and an in-memory [`SimDisk`] with crash semantics.
#[derive(Clone)]
pub struct SimEnv {
    pub clock: SimClock,
    pub net: SimNet,
    pub disk: SimDisk,
    pub seed: u64,
    /// The run's fault-point hook for this process (`crate::points`).
    pub points: FaultPoints,
}

impl Env for SimEnv {
    type Clock = SimClock;
    type Net = SimNet;
    type Disk = SimDisk;

    fn clock(&self) -> &SimClock {
        &self.clock
    }
    fn net(&self) -> &SimNet {
        &self.net
    }
    fn disk(&self) -> &SimDisk {
        &self.disk
    }
    fn seed(&self) -> u64 {
        self.seed
    }
    fn fault_points(&self) -> FaultPoints {
        self.points.clone()
    }
}
