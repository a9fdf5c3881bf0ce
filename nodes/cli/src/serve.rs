//! `larder node --config node.toml` and `larder proxy --config proxy.toml`: each role as its own
//! process, configured by a TOML file. Routing is static (every group on the listed nodes) until
//! the center distributes it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use larder_core::env::derive_seed;
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use larder_nodes::cluster::SharedRouting;
use larder_nodes::node::{NodeConfig, StorageNode};
use larder_nodes::proxy::{Proxy, ProxyConfig};
use larder_nodes::real::{AddressBook, FjallDisk, FjallOptions, RealEnv, TcpNet, TokioClock};
use serde::Deserialize;

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// The role's TOML configuration file.
    #[arg(long)]
    pub config: PathBuf,
}

/// Another process's id and address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: NodeId,
    pub address: SocketAddr,
}

/// `node.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub id: NodeId,
    /// Where peers reach this node.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Slot groups 1..=groups, each replicated on this node and every peer.
    pub groups: u64,
    pub peers: Vec<Peer>,
    /// Form the groups (with this node and the peers as voters) if they are not yet formed.
    /// Set on one node of a new cluster; harmless on restarts.
    #[serde(default)]
    pub initialize: bool,
}

/// `proxy.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    pub id: NodeId,
    /// Where Redis clients connect.
    pub listen: SocketAddr,
    pub groups: u64,
    pub nodes: Vec<Peer>,
    #[serde(default)]
    pub requirepass: Option<String>,
    /// Largest bulk string a client may send, in bytes.
    #[serde(default)]
    pub bulk_bytes_max: Option<u64>,
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Waits for Ctrl-C or SIGTERM.
async fn stop_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

pub fn node(args: ConfigArgs) -> anyhow::Result<bool> {
    let file: NodeFile = read(&args.config)?;
    if !(1..=16384).contains(&file.groups) {
        bail!("groups must be between 1 and 16384, got {}", file.groups);
    }
    std::fs::create_dir_all(&file.data_dir)
        .with_context(|| format!("creating {}", file.data_dir.display()))?;
    runtime()?.block_on(async {
        let seed = larder_nodes::real::process_seed();
        larder_nodes::raft::runtime::seed_raft_rng(seed);
        let book = AddressBook::new();
        for peer in &file.peers {
            book.insert(peer.id, peer.address);
        }
        let net = TcpNet::bind(file.id, file.listen, book)
            .await
            .with_context(|| format!("listening on {}", file.listen))?;
        let disk = FjallDisk::open(&file.data_dir, &FjallOptions::default())
            .with_context(|| format!("opening {}", file.data_dir.display()))?;
        let groups: Vec<GroupId> = (1..=file.groups).collect();
        let env = RealEnv {
            clock: TokioClock::new(),
            net,
            disk,
            seed: derive_seed(seed, file.id),
        };
        let node = StorageNode::start(env, NodeConfig::new(file.id, groups.clone()))
            .await
            .context("starting the storage node")?;
        let serving = node.clone();
        tokio::spawn(async move {
            if let Err(error) = serving.serve().await {
                tracing::error!(%error, "node stopped serving");
            }
        });
        if file.initialize {
            let voters = std::iter::once(file.id)
                .chain(file.peers.iter().map(|p| p.id))
                .collect();
            for group in groups {
                node.initialize(group, &voters)
                    .await
                    .with_context(|| format!("initializing group {group}"))?;
            }
        }
        println!("larder node {} listening on {}", file.id, file.listen);
        stop_signal().await?;
        node.shutdown().await;
        Ok(true)
    })
}

pub fn proxy(args: ConfigArgs) -> anyhow::Result<bool> {
    let file: ProxyFile = read(&args.config)?;
    if !(1..=16384).contains(&file.groups) || file.nodes.is_empty() {
        bail!("a proxy needs 1..=16384 groups and at least one node");
    }
    runtime()?.block_on(async {
        let book = AddressBook::new();
        for node in &file.nodes {
            book.insert(node.id, node.address);
        }
        let replicas: Vec<NodeId> = file.nodes.iter().map(|n| n.id).collect();
        let routing = SharedRouting::new(RoutingTable::even(file.groups, |_| replicas.clone()));
        let mut config = ProxyConfig {
            password: file.requirepass.clone(),
            ..ProxyConfig::default()
        };
        if let Some(max) = file.bulk_bytes_max {
            config.limits.bulk_bytes_max = max;
        }
        let proxy = Proxy::new(
            TcpNet::client(file.id, book),
            TokioClock::new(),
            derive_seed(larder_nodes::real::process_seed(), file.id),
            config,
            routing,
        );
        let listener = tokio::net::TcpListener::bind(file.listen)
            .await
            .with_context(|| format!("listening on {}", file.listen))?;
        println!("larder proxy {} listening on {}", file.id, file.listen);
        tokio::select! {
            result = proxy.serve(listener) => result.context("accepting clients")?,
            result = stop_signal() => result?,
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse_and_reject_unknown_fields() {
        let node: NodeFile = toml::from_str(
            r#"
            id = 1
            listen = "127.0.0.1:7001"
            data_dir = "/tmp/n1"
            groups = 8
            initialize = true
            peers = [{ id = 2, address = "127.0.0.1:7002" }]
            "#,
        )
        .expect("node config");
        assert_eq!((node.id, node.groups, node.peers.len()), (1, 8, 1));
        let proxy: ProxyFile = toml::from_str(
            r#"
            id = 1001
            listen = "127.0.0.1:6380"
            groups = 8
            nodes = [{ id = 1, address = "127.0.0.1:7001" }]
            "#,
        )
        .expect("proxy config");
        assert_eq!(proxy.requirepass, None);
        let typo = toml::from_str::<ProxyFile>(
            "id = 1\nlisten = \"127.0.0.1:1\"\ngroups = 1\nnodes = []\nrequirepas = \"x\"",
        );
        assert!(
            typo.is_err(),
            "a misspelt key must be an error, not silently ignored"
        );
    }
}
