//! The real environment: tokio time, tokio TCP, fjall on the local file system.
//!
//! This is the only module of `larder-nodes` allowed to touch real time, sockets and files
//! (each such call carries `#[allow(clippy::disallowed_methods)]` and says why). Everything
//! above it is generic over [`larder_core::env::Env`] and runs unchanged in the simulator.

mod clock;
mod disk;
mod net;

pub use clock::TokioClock;
pub use disk::{FjallDisk, FjallOptions};
pub use net::{AddressBook, TcpNet};

use larder_core::env::Env;

/// A production process's environment.
#[derive(Clone)]
pub struct RealEnv {
    pub clock: TokioClock,
    pub net: TcpNet,
    pub disk: FjallDisk,
    pub seed: u64,
}

impl Env for RealEnv {
    type Clock = TokioClock;
    type Net = TcpNet;
    type Disk = FjallDisk;

    fn clock(&self) -> &TokioClock {
        &self.clock
    }
    fn net(&self) -> &TcpNet {
        &self.net
    }
    fn disk(&self) -> &FjallDisk {
        &self.disk
    }
    fn seed(&self) -> u64 {
        self.seed
    }
}

/// A seed from the OS for this process start: session ids and Raft jitter must differ between
/// starts of a real server (a repeated session id would make a group drop new writes as
/// duplicates). The simulator derives its seeds from the run seed instead.
#[allow(clippy::disallowed_methods)]
pub fn process_seed() -> u64 {
    rand::random()
}
