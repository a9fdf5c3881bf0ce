//! `larder-real`: the real environment: tokio time ([`TokioClock`]), tokio TCP ([`TcpTransport`]
//! under `larder_transport`'s seam, so [`TcpNet`] is `StreamNet<TcpTransport>`, and
//! [`TokioListener`]), fjall on the local file system ([`FjallDisk`]), and OS randomness
//! ([`process_seed`]).
//!
//! This is the only library crate allowed to touch real time, sockets, files and OS
//! randomness: `clippy.toml` bans them everywhere, and this crate lifts the ban below because
//! implementing the environment traits on the real world is its whole job. Everything above it
//! is generic over [`larder_core::env::Env`] and runs unchanged in the simulator. It depends on
//! `larder-core` and `larder-transport` only: no role crate.

// This crate is the real world's side of the seam (see the crate docs).
#![allow(clippy::disallowed_methods)]

mod clock;
mod disk;
mod listener;
pub mod metrics_http;
mod net;
mod secret;

pub use clock::TokioClock;
pub use disk::{FjallDisk, FjallOptions, FjallView, KV_SEPARATION_BYTES};
pub use larder_transport::conformance::{TEST_SECRET, test_auth};
pub use larder_transport::{ClusterAuth, ClusterKey};
pub use listener::TokioListener;
pub use metrics_http::MetricsEndpoint;
pub use net::{AddressBook, TcpNet, TcpTransport};
pub use secret::{
    SECRET_FILE_NAME, SECRET_FILE_VAR, SECRET_VAR, SecretError, cluster_key, ensure_secret_file,
    process_auth,
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use larder_core::NodeId;
use larder_core::env::{DiskError, Env, NetError, derive_seed};

/// The seed stream of a process's handshake nonces.
const NONCE_STREAM: u64 = 0x6e6f_6e63_6500_0000;

/// A production process's environment.
#[derive(Clone)]
pub struct RealEnv {
    pub clock: TokioClock,
    pub net: TcpNet,
    pub disk: FjallDisk,
    pub seed: u64,
}

/// Why a process's environment could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("creating the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listening on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: NetError,
    },
    #[error("opening the data in {path}: {source}")]
    Disk { path: PathBuf, source: DiskError },
}

impl RealEnv {
    /// The environment of server process `id`: listens on `listen` (port 0: any free port;
    /// [`TcpNet::local_addr`] says which), keeps its data in `data_dir` (created if missing),
    /// reaches peers through `book`, authenticates with `key`, and draws its random streams
    /// from `seed` and its id.
    pub async fn open(
        id: NodeId,
        listen: SocketAddr,
        data_dir: &Path,
        book: AddressBook,
        seed: u64,
        key: &ClusterKey,
    ) -> Result<RealEnv, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        // Nonces from the process seed: it is drawn from the OS per start.
        let auth = ClusterAuth::new(key.clone(), derive_seed(seed, id ^ NONCE_STREAM));
        let net = TcpNet::bind(id, listen, book, auth)
            .await
            .map_err(|source| OpenError::Listen {
                address: listen,
                source,
            })?;
        let disk = FjallDisk::open(data_dir, &FjallOptions::default()).map_err(|source| {
            OpenError::Disk {
                path: data_dir.to_path_buf(),
                source,
            }
        })?;
        Ok(RealEnv {
            clock: TokioClock::new(),
            net,
            disk,
            seed: derive_seed(seed, id),
        })
    }
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
