//! `larder-real`: the real environment: tokio time ([`TokioClock`]), tokio TCP ([`TcpNet`],
//! [`TokioListener`]), fjall on the local file system ([`FjallDisk`]), and OS randomness
//! ([`process_seed`]).
//!
//! This is the only library crate allowed to touch real time, sockets, files and OS
//! randomness: `clippy.toml` bans them everywhere, and this crate lifts the ban below because
//! implementing the environment traits on the real world is its whole job. Everything above it
//! is generic over [`larder_core::env::Env`] and runs unchanged in the simulator. It depends on
//! `larder-core` only: no role crate.

// This crate is the real world's side of the seam (see the crate docs).
#![allow(clippy::disallowed_methods)]

mod clock;
mod disk;
mod listener;
mod net;

pub use clock::TokioClock;
pub use disk::{FjallDisk, FjallOptions};
pub use listener::TokioListener;
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
pub fn process_seed() -> u64 {
    rand::random()
}
