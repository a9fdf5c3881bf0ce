//! A whole local cluster in one process on loopback — three storage nodes hosting every slot
//! group, and a RESP proxy — with data under a temporary or given directory. `larder up` runs
//! it; the end-to-end tests start it too.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use larder_core::GroupId;
use larder_core::env::derive_seed;
use larder_core::routing::RoutingTable;

use crate::cluster::SharedRouting;
use crate::node::{NodeConfig, StorageNode};
use crate::proxy::{Proxy, ProxyConfig};
use crate::real::{AddressBook, FjallDisk, FjallOptions, RealEnv, TcpNet, TokioClock};

/// What to start.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Data directory (one subdirectory per node); `None`: a temporary one, removed on drop.
    pub dir: Option<PathBuf>,
    /// Where the proxy listens (port 0 picks one).
    pub listen: SocketAddr,
    /// Slot groups the 16384 slots are spread over.
    pub groups: u64,
    pub requirepass: Option<String>,
}

/// Why a local cluster did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("--groups must be between 1 and 16384, got {0}")]
    Groups(u64),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Start { what: String, reason: String },
}

fn start_error(what: impl Into<String>, reason: impl std::fmt::Display) -> LocalError {
    LocalError::Start {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// The node ids of the local cluster's storage nodes and proxy.
const NODES: [u64; 3] = [1, 2, 3];
const PROXY_ID: u64 = 1001;

/// A running local cluster.
pub struct LocalCluster {
    pub proxy_address: SocketAddr,
    nodes: Vec<Arc<StorageNode<RealEnv>>>,
    /// Serving tasks (nodes, proxy); they hold the nodes, so they end before the data goes.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _temp: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Starts the nodes, forms every group, and starts the proxy. Must run inside a tokio
    /// multi-thread runtime.
    pub async fn start(args: &LocalConfig) -> Result<Self, LocalError> {
        if !(1..=16384).contains(&args.groups) {
            return Err(LocalError::Groups(args.groups));
        }
        let (dir, temp) = match &args.dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("larder-up-")
                    .tempdir()
                    .map_err(|source| LocalError::Io {
                        what: "creating a temporary data directory".into(),
                        source,
                    })?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        // Session ids and Raft jitter must differ per process start in production.
        let seed: u64 = crate::real::process_seed();
        crate::raft::runtime::seed_raft_rng(seed);
        let book = AddressBook::new();
        let groups: Vec<GroupId> = (1..=args.groups).collect();
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let mut nodes = Vec::new();
        let mut tasks = Vec::new();
        for id in NODES {
            let path = dir.join(format!("node-{id}"));
            std::fs::create_dir_all(&path).map_err(|source| LocalError::Io {
                what: format!("creating {}", path.display()),
                source,
            })?;
            let net = TcpNet::bind(id, loopback, book.clone())
                .await
                .map_err(|e| start_error(format!("node {id}: binding"), e))?;
            let disk = FjallDisk::open(&path, &FjallOptions::default())
                .map_err(|e| start_error(format!("node {id}: opening {}", path.display()), e))?;
            let env = RealEnv {
                clock: TokioClock::new(),
                net,
                disk,
                seed: derive_seed(seed, id),
            };
            let node = StorageNode::start(env, NodeConfig::new(id, groups.clone()))
                .await
                .map_err(|e| start_error(format!("node {id}: starting"), e))?;
            let serving = node.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(error) = serving.serve().await {
                    tracing::error!(node = id, %error, "node stopped serving");
                }
            }));
            nodes.push(node);
        }
        let voters = NODES.into_iter().collect();
        for &group in &groups {
            // Node 1 forms each group once; after a restart from the same directory the groups
            // are already initialized and this is a no-op.
            nodes[0]
                .initialize(group, &voters)
                .await
                .map_err(|e| start_error(format!("initializing group {group}"), e))?;
        }
        let routing = SharedRouting::new(RoutingTable::even(args.groups, |_| NODES.to_vec()));
        let proxy = Proxy::new(
            TcpNet::client(PROXY_ID, book.clone()),
            TokioClock::new(),
            derive_seed(seed, PROXY_ID),
            ProxyConfig {
                password: args.requirepass.clone(),
                ..ProxyConfig::default()
            },
            routing,
        );
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|source| LocalError::Io {
                what: format!("proxy: binding {}", args.listen),
                source,
            })?;
        let proxy_address = listener.local_addr().map_err(|source| LocalError::Io {
            what: "proxy: reading its address".into(),
            source,
        })?;
        tasks.push(tokio::spawn(async move {
            if let Err(error) = proxy.serve(listener).await {
                tracing::error!(%error, "proxy stopped accepting");
            }
        }));
        Ok(LocalCluster {
            proxy_address,
            nodes,
            tasks,
            _temp: temp,
        })
    }

    /// Stops every group's Raft (the temporary directory, if any, goes with `self`).
    pub async fn stop(mut self) {
        for node in &self.nodes {
            node.shutdown().await;
        }
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        // Close the engines before a temporary directory is removed under them.
        self.nodes.clear();
    }
}
