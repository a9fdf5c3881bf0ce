//! `larder center`, `larder node` and `larder proxy`: each role as its own process, configured
//! by a TOML file (unknown keys are errors, so a typo is never silently ignored).
//!
//! Two modes:
//! - **Center mode** (the normal one): `larder center` processes form the center group and own
//!   the routing table; `larder node` with `centers = [...]` heartbeats to them and hosts the
//!   groups the center gives it; `larder proxy` with `centers = [...]` fetches the routing
//!   table from them (observers first) and keeps it fresh.
//! - **Static mode** (`larder jepsen`): no center. Every node hosts groups `1..=groups` with
//!   its `peers` as the other voters, one node forms them (`initialize`), and the proxy routes
//!   by a fixed table over its `nodes`.
//!
//! Addresses: the routing table names node ids only. In center mode, storage nodes register
//! their addresses with their heartbeats and the center hands the registry's addresses on: to
//! storage nodes with every heartbeat answer, to proxies with every routing answer (both wired
//! into the process's `AddressBook`). So a node lists only the `centers`, a proxy the `centers`
//! (and `observers`), and a node added later (scale-out, a replacement) is reachable without
//! touching any other file; `peers` (node) and `nodes` (proxy, center) may still list addresses
//! known in advance. In static mode, a node lists its `peers` and a proxy every storage node in
//! `nodes`.
//!
//! ```toml
//! # center-101.toml
//! id = 101
//! listen = "127.0.0.1:7101"
//! data_dir = "data/center-101"
//! centers = [{ id = 101, address = "127.0.0.1:7101" }, { id = 102, address = "127.0.0.1:7102" },
//!            { id = 103, address = "127.0.0.1:7103" }]   # every replica, this one included
//! groups = 64              # slot groups of the first routing table
//! initialize = true        # on one replica of a new cluster; harmless on restarts
//! # optional: observers = [{ id = 201, address = "..." }], replicas = 3,
//! # bootstrap_nodes_min = 3, heartbeat_ms = 500, missed_heartbeats_max = 5, nodes = [...]
//!
//! # node-1.toml (center mode: the other nodes' addresses come from the center)
//! id = 1
//! listen = "127.0.0.1:7001"
//! data_dir = "data/node-1"
//! centers = [{ id = 101, address = "127.0.0.1:7101" }, ...]
//! # optional: advertise = "10.0.0.1:7001" (default: listen; with port 0 in listen, the port
//! # bound), heartbeat_ms = 500, peers = [...]
//!
//! # proxy.toml (center mode: the storage nodes' addresses come from the center)
//! id = 1001
//! listen = "127.0.0.1:6380"
//! centers = [{ id = 101, address = "127.0.0.1:7101" }, ...]
//! # optional: observers = [...], requirepass = "...", bulk_bytes_max = 536870912, nodes = [...],
//! # max_clients = 10000, timeout = 0 (idle seconds; 0 never), output_stall_secs = 60,
//! # output_buffer_max = 1090519040, auth_failure_delay_ms = 100, auth_failures_max = 10
//! # TLS for clients (Redis's tls-port; the plain `listen` stays on): tls_port = 6390 (on
//! # listen's address), tls_cert_file = "proxy.pem", tls_key_file = "proxy.key", and to check
//! # client certificates tls_ca_cert_file = "ca.pem" with tls_auth_clients = "yes" (the
//! # default with a CA), "optional" or "no"; tls_handshake_timeout_secs = 10
//! ```
//!
//! **The cluster secret.** Every role authenticates its internal connections with the cluster
//! secret (see `larder_transport::auth`): `cluster_secret_file = "PATH"` in any of these files
//! (or `--cluster-secret-file` for a node joining without a file), else the file named by
//! `LARDER_CLUSTER_SECRET_FILE`, else the secret in `LARDER_CLUSTER_SECRET`. No role starts
//! without one. `larder up` writes one to `DIR/cluster.secret`.
//!
//! **Joining without a file**: `larder node --dir DIR --center ID@HOST:PORT,...` is a center-mode
//! node (data in `DIR/data`) that heartbeats to the given centers and so registers itself;
//! the center then counts it for new replicas (replacements of dead ones). Its id is `--id`,
//! else the one recorded in `DIR/node-id` by an earlier start, else the next after the highest
//! storage node id the center's status lists (recorded then). Two nodes started at once
//! without `--id` could pick the same id: join one at a time, or give ids.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use larder_center::{Center, CenterConfig};
use larder_client::SharedRouting;
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use larder_protocol::ClusterStatus;
use larder_proxy::{PemFile, Proxy, ProxyConfig, ProxyTls, TlsAuthClients, TlsError, TlsSettings};
use larder_real::{AddressBook, ClusterKey, RealEnv, TcpNet, TokioClock};
use larder_storage::{NodeConfig, StorageNode};
use serde::Deserialize;

use crate::admin::{CenterAddress, Centers, fetch_status};

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// The role's TOML configuration file.
    #[arg(long)]
    pub config: PathBuf,
}

/// `larder node`: from a TOML file, or (joining a running cluster) from flags.
#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// The node's TOML configuration file.
    #[arg(long, required_unless_present = "dir", conflicts_with_all = ["dir", "center", "listen", "id"])]
    pub config: Option<PathBuf>,
    /// Join without a file: the node's directory (data in `data/`, its id in `node-id`).
    #[arg(long, requires = "center")]
    pub dir: Option<PathBuf>,
    /// Every center replica, `ID@HOST:PORT` as `larder up` prints them; repeat it or give a
    /// comma list.
    #[arg(long, value_delimiter = ',')]
    pub center: Vec<CenterAddress>,
    /// Where peers reach this node (port 0: any free port, which is then registered).
    /// Default 127.0.0.1:0.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The node's id. Default: the one recorded in the directory, else the next free one
    /// the center's status shows.
    #[arg(long)]
    pub id: Option<NodeId>,
    /// The file holding the cluster secret (default: `LARDER_CLUSTER_SECRET_FILE`, else the
    /// secret in `LARDER_CLUSTER_SECRET`).
    #[arg(long)]
    pub cluster_secret_file: Option<PathBuf>,
    /// Serve the node's Prometheus metrics here (`GET /metrics`). Default: not served.
    #[arg(long, conflicts_with = "config")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Where a joining node records its id, in its directory.
const NODE_ID_FILE: &str = "node-id";
/// How long a joining node waits for the center's status to choose its id.
const CHOOSE_ID_TIMEOUT: Duration = Duration::from_secs(10);

impl NodeArgs {
    /// The node's file: read from `--config`, or built from the flags (center mode).
    fn file(&self) -> anyhow::Result<(NodeFile, String)> {
        if let Some(path) = &self.config {
            return Ok((read(path)?, path.display().to_string()));
        }
        let Some(dir) = &self.dir else {
            bail!("give --config FILE, or --dir DIR with --center");
        };
        let mut centers = Vec::new();
        for center in &self.center {
            let Some(id) = center.id else {
                bail!(
                    "give each center as ID@HOST:PORT, as `larder up` prints them (got {center}): heartbeats follow the center leader by id"
                );
            };
            centers.push(Peer {
                id,
                address: center.address,
            });
        }
        // The key is needed only to ask the center for an id.
        let reach = || -> anyhow::Result<Centers> {
            Ok(Centers {
                addresses: self.center.clone(),
                key: larder_real::cluster_key(self.cluster_secret_file.as_deref())?,
            })
        };
        let id = node_id(dir, self.id, reach)?;
        let file = NodeFile {
            id,
            listen: self
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            data_dir: dir.join("data"),
            peers: Vec::new(),
            groups: None,
            initialize: None,
            centers,
            advertise: None,
            heartbeat_ms: None,
            cluster_secret_file: self.cluster_secret_file.clone(),
            metrics_listen: self.metrics_listen,
            lanes: None,
            read_rounds: None,
            retain_log_ms: None,
            retain_log_entries_max: None,
        };
        Ok((file, "the command line".to_string()))
    }
}

/// A joining node's id: `given`, else the one recorded in `dir`, else the next free one from
/// the center's status; recorded in `dir` so a restart keeps it, and checked against it.
fn node_id(
    dir: &Path,
    given: Option<NodeId>,
    centers: impl FnOnce() -> anyhow::Result<Centers>,
) -> anyhow::Result<NodeId> {
    let path = dir.join(NODE_ID_FILE);
    let recorded: Option<NodeId> = match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            text.trim()
                .parse()
                .with_context(|| format!("reading the node id in {}", path.display()))?,
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", path.display()));
        }
    };
    let id = match (given, recorded) {
        (Some(given), Some(recorded)) if given != recorded => bail!(
            "{} holds node {recorded}'s data; --id {given} would run another node on it",
            dir.display()
        ),
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => {
            let status = fetch_status(&centers()?, CHOOSE_ID_TIMEOUT)
                .context("asking the center for a free node id (or give --id)")?;
            next_free_id(&status)
        }
    };
    if recorded.is_none() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&path, format!("{id}\n"))
            .with_context(|| format!("recording the node id in {}", path.display()))?;
    }
    Ok(id)
}

/// The id after the highest storage node id in `status`, skipping the center replicas' ids.
fn next_free_id(status: &ClusterStatus) -> NodeId {
    let mut id = status.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
    while status.centers.contains(&id) {
        id += 1;
    }
    id
}

/// Another process's id and address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: NodeId,
    pub address: SocketAddr,
}

/// `center.toml`: one center replica (an id listed in `centers`) or observer (an id listed in
/// `observers`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterFile {
    pub id: NodeId,
    /// Where the other center replicas, the storage nodes and the proxies reach this one.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Every center replica (the voters of the center group), this one included; the same list
    /// in every center's file.
    pub centers: Vec<Peer>,
    /// Slot groups the first routing table creates (ids `1..=groups`). Ignored once the center
    /// has a table.
    pub groups: u64,
    /// Form the center group if it is not formed yet. Set on one replica of a new cluster;
    /// harmless on restarts. Not on an observer.
    #[serde(default)]
    pub initialize: bool,
    /// Read-only followers of the routing table (learners of the center group).
    #[serde(default)]
    pub observers: Vec<Peer>,
    /// Storage nodes' addresses known in advance (optional: heartbeats bring them).
    #[serde(default)]
    pub nodes: Vec<Peer>,
    /// Replicas per slot group (default 3).
    #[serde(default)]
    pub replicas: Option<usize>,
    /// Live storage nodes needed before the first routing table is written (default 3).
    #[serde(default)]
    pub bootstrap_nodes_min: Option<usize>,
    /// Expected interval of storage nodes' heartbeats, and the control loop's tick (default
    /// 500). Give the nodes the same `heartbeat_ms`.
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    /// A node is down after this many heartbeat intervals without one (default 5).
    #[serde(default)]
    pub missed_heartbeats_max: Option<u32>,
    /// Split a group holding more records than this (default 8,000,000; 0: never).
    #[serde(default)]
    pub split_records_max: Option<u64>,
    /// Move a slot whose leader serves more requests a second than this into a group of its
    /// own (default 0: never).
    #[serde(default)]
    pub hot_slot_requests_per_sec_max: Option<u64>,
    /// Keep at least this many groups per storage node, splitting the largest group as nodes
    /// join (default 1; 0: never).
    #[serde(default)]
    pub groups_per_node_min: Option<u64>,
    /// The file holding the cluster secret (default: from the environment; see the module
    /// doc).
    #[serde(default)]
    pub cluster_secret_file: Option<PathBuf>,
    /// Serve this process's Prometheus metrics here (`GET /metrics`); not served if absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

impl CenterFile {
    /// The center settings, checked.
    pub fn center_config(&self) -> anyhow::Result<CenterConfig> {
        let centers: Vec<NodeId> = self.centers.iter().map(|c| c.id).collect();
        let observers: Vec<NodeId> = self.observers.iter().map(|o| o.id).collect();
        distinct(
            &[
                ("centers", &self.centers),
                ("observers", &self.observers),
                ("nodes", &self.nodes),
            ],
            None,
        )?;
        let is_center = centers.contains(&self.id);
        if !is_center && !observers.contains(&self.id) {
            bail!(
                "id {} is in neither centers nor observers: list every center replica, this one included",
                self.id
            );
        }
        if self.initialize && !is_center {
            bail!("an observer cannot initialize the center group");
        }
        let mut config = CenterConfig::new(centers, self.groups);
        config.observers = observers;
        if let Some(replicas) = self.replicas {
            config.replicas = replicas;
        }
        if let Some(min) = self.bootstrap_nodes_min {
            config.bootstrap_nodes_min = min;
        }
        if let Some(ms) = self.heartbeat_ms {
            config.heartbeat_ms = ms;
        }
        if let Some(max) = self.missed_heartbeats_max {
            config.missed_heartbeats_max = max;
        }
        if let Some(max) = self.split_records_max {
            config.split_records_max = max;
        }
        if let Some(max) = self.hot_slot_requests_per_sec_max {
            config.hot_slot_requests_per_sec_max = max;
        }
        if let Some(min) = self.groups_per_node_min {
            config.groups_per_node_min = min;
        }
        config.validate()?;
        Ok(config)
    }
}

/// `node.toml`. Center mode when `centers` is given (the center assigns the groups), static
/// mode otherwise (`groups` on every node, formed by the one with `initialize`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub id: NodeId,
    /// Where peers reach this node.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// The other storage nodes. Static mode: every group is replicated on this node and each
    /// peer. Center mode: optional (the center hands out every registered node's address);
    /// addresses known in advance.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// Static mode only: slot groups 1..=groups.
    #[serde(default)]
    pub groups: Option<u64>,
    /// Static mode only: form the groups (with this node and the peers as voters) if they are
    /// not yet formed. Set on one node of a new cluster; harmless on restarts.
    #[serde(default)]
    pub initialize: Option<bool>,
    /// Center mode: the center replicas to heartbeat to.
    #[serde(default)]
    pub centers: Vec<Peer>,
    /// Center mode: the address registered with the center (default: `listen`, which must
    /// then not be a wildcard address).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Center mode: interval between heartbeats to the center (default 500; the centers'
    /// `heartbeat_ms`).
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    /// The file holding the cluster secret (default: from the environment; see the module
    /// doc).
    #[serde(default)]
    pub cluster_secret_file: Option<PathBuf>,
    /// Serve this process's Prometheus metrics here (`GET /metrics`); not served if absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The four lanes client commands run in (`[lanes]`, any of `LaneConfig`'s fields; the
    /// rest keep their defaults).
    #[serde(default)]
    pub lanes: Option<larder_storage::lanes::LaneConfig>,
    /// Whether reads are confirmed by the node's read rounds (default true); `false`: by each
    /// group's own openraft read index (`NodeConfig::read_rounds`).
    #[serde(default)]
    pub read_rounds: Option<bool>,
    /// Keep committed log entries this long after snapshots cover them, for `larder backup`
    /// (`NodeConfig::retain_log_ms`; default 0: none).
    #[serde(default)]
    pub retain_log_ms: Option<u64>,
    /// The most entries a group keeps for `retain_log_ms` (`NodeConfig::retain_log_entries_max`).
    #[serde(default)]
    pub retain_log_entries_max: Option<u64>,
}

/// How a node gets its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMode {
    Static { groups: u64, initialize: bool },
    Center { advertise: SocketAddr },
}

impl NodeFile {
    /// The mode, checked: center-only and static-only settings are not mixed.
    pub fn mode(&self) -> anyhow::Result<NodeMode> {
        distinct(
            &[("peers", &self.peers), ("centers", &self.centers)],
            Some((self.id, "this node's id")),
        )?;
        if self
            .heartbeat_ms
            .is_some_and(|ms| !(10..=60_000).contains(&ms))
        {
            bail!("heartbeat_ms must be between 10 and 60000");
        }
        if self.centers.is_empty() {
            if self.advertise.is_some() || self.heartbeat_ms.is_some() {
                bail!("advertise and heartbeat_ms need centers (center mode)");
            }
            let Some(groups) = self.groups else {
                bail!("give either centers (center mode) or groups (static mode)");
            };
            if !(1..=16384).contains(&groups) {
                bail!("groups must be between 1 and 16384, got {groups}");
            }
            return Ok(NodeMode::Static {
                groups,
                initialize: self.initialize.unwrap_or(false),
            });
        }
        if self.groups.is_some() || self.initialize.is_some() {
            bail!(
                "with centers the center assigns and forms the groups: remove groups and initialize"
            );
        }
        let advertise = self.advertise.unwrap_or(self.listen);
        if advertise.ip().is_unspecified() {
            bail!(
                "listen is {}: set advertise to an address peers can reach",
                self.listen
            );
        }
        // A loopback address reaches only processes on this host: with a center elsewhere,
        // every peer would be handed an address it cannot reach.
        if advertise.ip().is_loopback()
            && let Some(remote) = self.centers.iter().find(|c| !c.address.ip().is_loopback())
        {
            bail!(
                "the address registered for this node, {advertise}, is loopback, but center {} is at {}: set advertise to an address other hosts can reach",
                remote.id,
                remote.address
            );
        }
        // Port 0 in `listen` (no `advertise`) registers the port bound; an advertised port
        // must be real.
        if self.advertise.is_some_and(|a| a.port() == 0) {
            bail!("advertise needs a port");
        }
        Ok(NodeMode::Center { advertise })
    }
}

/// `proxy.toml`. Center mode when `centers` is given (routing from the center), static mode
/// otherwise (every group on every listed node).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    pub id: NodeId,
    /// Where Redis clients connect.
    pub listen: SocketAddr,
    /// Static mode: every storage node (each group is on all of them). Center mode: optional
    /// (the routing answers bring every registered node's address); addresses known in advance.
    #[serde(default)]
    pub nodes: Vec<Peer>,
    /// Static mode only: slot groups 1..=groups, each on every node.
    #[serde(default)]
    pub groups: Option<u64>,
    /// Center mode: the center replicas to fetch routing tables from.
    #[serde(default)]
    pub centers: Vec<Peer>,
    /// Center mode: observers, asked before the center replicas.
    #[serde(default)]
    pub observers: Vec<Peer>,
    #[serde(default)]
    pub requirepass: Option<String>,
    /// Largest bulk string a client may send, in bytes.
    #[serde(default)]
    pub bulk_bytes_max: Option<u64>,
    /// The file holding the cluster secret (default: from the environment; see the module
    /// doc).
    #[serde(default)]
    pub cluster_secret_file: Option<PathBuf>,
    /// Redis's `maxclients`: connections served at once (default 10000; at least 1).
    #[serde(default)]
    pub max_clients: Option<usize>,
    /// Redis's `timeout`: seconds a connection may send nothing before it is closed (default
    /// 0: never).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Seconds a reply write may make no progress before the client, not reading its
    /// replies, is disconnected (default 60; at least 1).
    #[serde(default)]
    pub output_stall_secs: Option<u64>,
    /// Reply bytes held for one client before it is disconnected (default 256 MiB; at least
    /// 64 KiB, the size at which replies are written out).
    #[serde(default)]
    pub output_buffer_max: Option<usize>,
    /// Milliseconds a failed `AUTH` waits before its reply (default 100).
    #[serde(default)]
    pub auth_failure_delay_ms: Option<u64>,
    /// Failed `AUTH`s after which a connection is closed (default 10; 0: never).
    #[serde(default)]
    pub auth_failures_max: Option<u32>,
    /// Redis's `tls-port`: a second listener, on `listen`'s address, whose clients speak TLS
    /// (`listen` keeps serving plain clients). Needs `tls_cert_file` and `tls_key_file`.
    #[serde(default)]
    pub tls_port: Option<u16>,
    /// Redis's `tls-cert-file`: the proxy's certificate chain (PEM), leaf first.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// Redis's `tls-key-file`: the leaf certificate's private key (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Redis's `tls-ca-cert-file`: the CAs (PEM) that client certificates must chain to.
    #[serde(default)]
    pub tls_ca_cert_file: Option<PathBuf>,
    /// Redis's `tls-auth-clients`: "yes" (the default with a CA: clients must present a
    /// certificate the CA signed), "optional" (one presented must verify) or "no" (none is
    /// asked for; the default without a CA).
    #[serde(default)]
    pub tls_auth_clients: Option<TlsAuthClients>,
    /// Seconds a TLS client may take to finish its handshake before it is disconnected
    /// (default 10; at least 1). It holds a `max_clients` slot meanwhile.
    #[serde(default)]
    pub tls_handshake_timeout_secs: Option<u64>,
    /// Serve this process's Prometheus metrics here (`GET /metrics`); not served if absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Writes per second one key may take through this proxy (at least 1); a write past it
    /// is answered `-HOTKEY …` and not executed. No limit if absent.
    #[serde(default)]
    pub hot_key_writes_per_sec_max: Option<u64>,
    /// Requests per second from which equal reads of a key are shared: reads arriving while
    /// one is fetched take the next fetch's answer (still linearizable). 0 turns sharing off;
    /// default 500.
    #[serde(default)]
    pub hot_key_share_reads_min_per_sec: Option<u64>,
    /// Batches of single commands of different connections run at once (commands arriving
    /// while all are busy go together, one request per group); 0 turns coalescing off.
    /// Default 4.
    #[serde(default)]
    pub coalesce_runners: Option<usize>,
}

impl ProxyFile {
    /// The proxy's settings from the file, checked; unset fields keep [`ProxyConfig`]'s
    /// defaults.
    pub fn proxy_config(&self) -> anyhow::Result<ProxyConfig> {
        let mut config = ProxyConfig {
            process_figures: Some(larder::local::process_figures),
            password: self.requirepass.clone(),
            ..ProxyConfig::default()
        };
        if let Some(max) = self.bulk_bytes_max {
            // Lower is an operator's choice; higher than the replicas' own bound would take
            // values from clients that `APPEND` could then never grow.
            let limit = larder_core::kv::STRING_BYTES_MAX as u64;
            if max == 0 || max > limit {
                bail!(
                    "bulk_bytes_max must be 1..={limit} (the largest string, Redis's default proto-max-bulk-len), got {max}"
                );
            }
            config.limits.bulk_bytes_max = max;
        }
        if let Some(max) = self.max_clients {
            if max == 0 {
                bail!("max_clients must be at least 1");
            }
            config.max_clients = max;
        }
        if let Some(max) = self.hot_key_writes_per_sec_max {
            if max == 0 {
                bail!("hot_key_writes_per_sec_max must be at least 1 (leave it out for no limit)");
            }
            config.hot_keys.writes_per_sec_max = Some(max);
        }
        if let Some(min) = self.hot_key_share_reads_min_per_sec {
            config.hot_keys.share_reads_min_per_sec = (min > 0).then_some(min);
        }
        if let Some(runners) = self.coalesce_runners {
            config.coalesce_runners = runners;
        }
        if let Some(secs) = self.timeout {
            config.idle_timeout = (secs > 0).then(|| Duration::from_secs(secs));
        }
        if let Some(secs) = self.output_stall_secs {
            if secs == 0 {
                bail!("output_stall_secs must be at least 1");
            }
            config.output_stall_timeout = Duration::from_secs(secs);
        }
        if let Some(max) = self.output_buffer_max {
            if max < larder_proxy::OUTPUT_FLUSH_BYTES {
                bail!(
                    "output_buffer_max must be at least {} (the size at which replies are written out), got {max}",
                    larder_proxy::OUTPUT_FLUSH_BYTES
                );
            }
            config.output_buffer_max = max;
        }
        if let Some(ms) = self.auth_failure_delay_ms {
            config.auth_failure_delay = Duration::from_millis(ms);
        }
        if let Some(max) = self.auth_failures_max {
            config.auth_failures_max = max;
        }
        if let Some(secs) = self.tls_handshake_timeout_secs {
            if secs == 0 {
                bail!("tls_handshake_timeout_secs must be at least 1");
            }
            config.tls_handshake_timeout = Duration::from_secs(secs);
        }
        Ok(config)
    }

    /// The TLS listener's address and its checked settings, or `None` without `tls_port`.
    /// Reads and checks the certificate, key and CA files, so a bad one stops the proxy at
    /// start, naming the file.
    pub fn tls(&self) -> anyhow::Result<Option<(SocketAddr, ProxyTls)>> {
        let Some(port) = self.tls_port else {
            let given = [
                ("tls_cert_file", self.tls_cert_file.is_some()),
                ("tls_key_file", self.tls_key_file.is_some()),
                ("tls_ca_cert_file", self.tls_ca_cert_file.is_some()),
                ("tls_auth_clients", self.tls_auth_clients.is_some()),
                (
                    "tls_handshake_timeout_secs",
                    self.tls_handshake_timeout_secs.is_some(),
                ),
            ];
            // A TLS setting without the port is most likely a forgotten port: the operator
            // believes clients are encrypted.
            if let Some((name, _)) = given.iter().find(|(_, set)| *set) {
                bail!("{name} is set but tls_port is not: set tls_port to serve TLS clients");
            }
            return Ok(None);
        };
        if port == 0 {
            bail!("tls_port must be 1..=65535 (leave it out to serve no TLS clients)");
        }
        if port == self.listen.port() {
            bail!("tls_port {port} is also listen's port: give the TLS listener its own port");
        }
        let (Some(cert_file), Some(key_file)) = (&self.tls_cert_file, &self.tls_key_file) else {
            bail!(
                "tls_port needs tls_cert_file and tls_key_file (the proxy's certificate and key, PEM)"
            );
        };
        // A setting missing is told before any file is read.
        if let Some(auth @ (TlsAuthClients::Yes | TlsAuthClients::Optional)) = self.tls_auth_clients
            && self.tls_ca_cert_file.is_none()
        {
            return Err(TlsError::AuthClientsWithoutCa(auth).into());
        }
        let read = |setting: &str, path: &Path| -> anyhow::Result<PemFile> {
            let contents = std::fs::read(path)
                .with_context(|| format!("reading {setting} {}", path.display()))?;
            Ok(PemFile {
                path: path.to_path_buf(),
                contents,
            })
        };
        let tls = ProxyTls::new(&TlsSettings {
            cert_file: read("tls_cert_file", cert_file)?,
            key_file: read("tls_key_file", key_file)?,
            ca_cert_file: match &self.tls_ca_cert_file {
                Some(path) => Some(read("tls_ca_cert_file", path)?),
                None => None,
            },
            auth_clients: self.tls_auth_clients,
        })?;
        Ok(Some((SocketAddr::new(self.listen.ip(), port), tls)))
    }

    /// The routing the proxy starts with, checked: a fixed table (static mode) or none yet,
    /// with the observers and centers to fetch one from (center mode).
    pub fn routing(&self) -> anyhow::Result<SharedRouting> {
        distinct(
            &[
                ("nodes", &self.nodes),
                ("centers", &self.centers),
                ("observers", &self.observers),
            ],
            Some((self.id, "this proxy's id")),
        )?;
        if self.centers.is_empty() {
            if self.nodes.is_empty() {
                bail!("in static mode (no centers) a proxy needs the storage nodes (nodes)");
            }
            if !self.observers.is_empty() {
                bail!("observers need centers (center mode)");
            }
            let Some(groups) = self.groups.filter(|g| (1..=16384).contains(g)) else {
                bail!("give either centers (center mode) or groups = 1..=16384 (static mode)");
            };
            let replicas: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
            return Ok(SharedRouting::new(RoutingTable::even(groups, |_| {
                replicas.clone()
            })));
        }
        if self.groups.is_some() {
            bail!("with centers the routing table comes from the center: remove groups");
        }
        let sources = self
            .observers
            .iter()
            .chain(&self.centers)
            .map(|p| p.id)
            .collect();
        Ok(SharedRouting::from_sources(sources))
    }
}

/// Checks that no id and no address is given twice across `roles` (name, peers): two
/// processes under one id would answer for each other, and one address cannot be two
/// processes.
fn distinct(roles: &[(&str, &[Peer])], own: Option<(NodeId, &str)>) -> anyhow::Result<()> {
    let mut ids: BTreeMap<NodeId, &str> = BTreeMap::new();
    let mut addresses: BTreeMap<SocketAddr, &str> = BTreeMap::new();
    if let Some((id, role)) = own {
        ids.insert(id, role);
    }
    for (role, peers) in roles {
        for peer in peers.iter() {
            if let Some(first) = ids.insert(peer.id, role) {
                bail!("id {} is given twice (in {first} and in {role})", peer.id);
            }
            if let Some(first) = addresses.insert(peer.address, role) {
                bail!(
                    "address {} is given twice (in {first} and in {role})",
                    peer.address
                );
            }
        }
    }
    Ok(())
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

fn address_book<'a>(peers: impl IntoIterator<Item = &'a Peer>) -> AddressBook {
    let book = AddressBook::new();
    for peer in peers {
        book.insert(peer.id, peer.address);
    }
    book
}

async fn open_env(
    id: NodeId,
    listen: SocketAddr,
    data_dir: &Path,
    book: AddressBook,
    seed: u64,
    key: &ClusterKey,
) -> anyhow::Result<RealEnv> {
    Ok(RealEnv::open(id, listen, data_dir, book, seed, key).await?)
}

/// Serves `registries` on `listen`, if given, and says where.
async fn serve_metrics(
    listen: Option<SocketAddr>,
    registries: impl IntoIterator<Item = larder_core::metrics::Registry>,
) -> anyhow::Result<Option<larder_real::MetricsEndpoint>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    let scrape = larder_core::metrics::Scrape::new();
    for registry in registries {
        scrape.add(registry);
    }
    let endpoint = larder_real::MetricsEndpoint::start(listen, scrape)
        .await
        .with_context(|| format!("serving metrics on {listen}"))?;
    outln!("metrics: http://{}/metrics", endpoint.address());
    Ok(Some(endpoint))
}

/// The cluster key from a role's `cluster_secret_file`, else the environment, logged by its
/// fingerprint so operators can compare processes that fail to talk.
fn cluster_key(file: Option<&Path>) -> anyhow::Result<ClusterKey> {
    let key = larder_real::cluster_key(file)?;
    tracing::info!(fingerprint = %key.fingerprint(), "cluster secret loaded");
    Ok(key)
}

pub fn center(args: ConfigArgs) -> anyhow::Result<bool> {
    let file: CenterFile = read(&args.config)?;
    let config = file
        .center_config()
        .with_context(|| format!("checking {}", args.config.display()))?;
    runtime()?.block_on(async {
        let seed = larder_real::process_seed();
        let book = address_book(
            file.centers
                .iter()
                .chain(&file.observers)
                .chain(&file.nodes),
        );
        let key = cluster_key(file.cluster_secret_file.as_deref())?;
        let env = open_env(
            file.id,
            file.listen,
            &file.data_dir,
            book.clone(),
            seed,
            &key,
        )
        .await?;
        let disk_metrics = env.disk.metrics_registry(file.id);
        let center = Center::start(env, NodeConfig::new(file.id, vec![]), config)
            .await
            .context("starting the center replica")?;
        // Storage nodes register their addresses with their heartbeats.
        center.on_address(book.sink());
        let serving = Arc::clone(&center);
        tokio::spawn(async move {
            if let Err(error) = serving.serve().await {
                tracing::error!(%error, "center stopped serving");
            }
        });
        if file.initialize {
            center
                .initialize()
                .await
                .context("initializing the center group")?;
        }
        let role = if file.centers.iter().any(|c| c.id == file.id) {
            "center replica"
        } else {
            "center observer"
        };
        outln!("larder {role} {} listening on {}", file.id, file.listen);
        let registries = center
            .metrics_registries()
            .into_iter()
            .chain([disk_metrics]);
        let _metrics = serve_metrics(file.metrics_listen, registries).await?;
        stop_signal().await?;
        larder::stopping::begin();
        center.shutdown().await;
        Ok(true)
    })
}

pub fn node(args: NodeArgs) -> anyhow::Result<bool> {
    let (file, source) = args.file()?;
    let mode = file.mode().with_context(|| format!("checking {source}"))?;
    runtime()?.block_on(async {
        let seed = larder_real::process_seed();
        let book = address_book(file.peers.iter().chain(&file.centers));
        let key = cluster_key(file.cluster_secret_file.as_deref())?;
        let env = open_env(file.id, file.listen, &file.data_dir, book.clone(), seed, &key).await?;
        let bound = env.net.listen_address().unwrap_or(file.listen);
        let mode = match mode {
            NodeMode::Center { advertise } if advertise.port() == 0 => NodeMode::Center {
                advertise: SocketAddr::new(advertise.ip(), bound.port()),
            },
            mode => mode,
        };
        let mut config = match &mode {
            NodeMode::Static { groups, .. } => NodeConfig::new(file.id, (1..=*groups).collect()),
            NodeMode::Center { advertise } => {
                let mut config = NodeConfig::new(file.id, vec![]);
                config.centers = file.centers.iter().map(|c| c.id).collect();
                config.address = advertise.to_string();
                if let Some(ms) = file.heartbeat_ms {
                    config.center_heartbeat_ms = ms;
                }
                config
            }
        };
        if let Some(lanes) = &file.lanes {
            config.lanes = lanes.clone();
        }
        if let Some(read_rounds) = file.read_rounds {
            config.read_rounds = read_rounds;
        }
        if let Some(ms) = file.retain_log_ms {
            config.retain_log_ms = ms;
        }
        if let Some(entries) = file.retain_log_entries_max {
            config.retain_log_entries_max = entries;
        }
        let disk_metrics = env.disk.metrics_registry(file.id);
        let node = StorageNode::start(env, config)
            .await
            .context("starting the storage node")?;
        if let NodeMode::Center { .. } = mode {
            // The other nodes' addresses come with the center's heartbeat answers.
            node.on_addresses(book.sink());
        }
        let serving = node.clone();
        tokio::spawn(async move {
            if let Err(error) = serving.serve().await {
                tracing::error!(%error, "node stopped serving");
            }
        });
        if let NodeMode::Static {
            groups,
            initialize: true,
        } = mode
        {
            let voters = std::iter::once(file.id)
                .chain(file.peers.iter().map(|p| p.id))
                .collect();
            for group in 1..=groups {
                let group: GroupId = group;
                node.initialize(group, &voters)
                    .await
                    .with_context(|| format!("initializing group {group}"))?;
            }
        }
        match mode {
            NodeMode::Static { groups, .. } => outln!(
                "larder node {} listening on {bound} ({groups} static groups)",
                file.id
            ),
            NodeMode::Center { advertise } => outln!(
                "larder node {} listening on {bound} (advertised {advertise}; groups from centers {:?})",
                file.id,
                file.centers.iter().map(|c| c.id).collect::<Vec<_>>()
            ),
        }
        let _metrics =
            serve_metrics(file.metrics_listen, [node.metrics_registry(), disk_metrics]).await?;
        // A poisoned disk (a synced write of the node's hosted groups failed) is recovered only
        // by a new process: exit with an error, so that the service manager restarts it.
        let poisoned = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if let Some(reason) = node.poisoned() {
                    return reason;
                }
            }
        };
        let outcome = tokio::select! {
            result = stop_signal() => result.map(|()| true),
            reason = poisoned => Err(anyhow::anyhow!(
                "the node's disk failed a synced write ({reason}); exiting so that a restart \
                 recovers it"
            )),
        };
        larder::stopping::begin();
        node.shutdown().await;
        outcome
    })
}

pub fn proxy(args: ConfigArgs) -> anyhow::Result<bool> {
    let file: ProxyFile = read(&args.config)?;
    let routing = file
        .routing()
        .with_context(|| format!("checking {}", args.config.display()))?;
    runtime()?.block_on(async {
        let book = address_book(
            file.nodes
                .iter()
                .chain(&file.centers)
                .chain(&file.observers),
        );
        let checking = || format!("checking {}", args.config.display());
        let mut config = file.proxy_config().with_context(checking)?;
        let tls = file.tls().with_context(checking)?;
        let listener = larder_real::TokioListener::bind(file.listen)
            .await
            .with_context(|| format!("listening on {}", file.listen))?;
        let bound = listener.local_addr()?;
        config.tcp_port = Some(bound.port());
        let tls = match tls {
            Some((address, tls)) => {
                let listener = larder_real::TokioListener::bind(address)
                    .await
                    .with_context(|| format!("listening for TLS clients on {address}"))?;
                let bound = listener.local_addr()?;
                config.tls_port = Some(bound.port());
                Some((listener, bound, tls))
            }
            None => None,
        };
        // Center mode: the storage nodes' addresses come with the routing answers (a static
        // table is never refreshed, so this is never called there).
        routing.on_addresses(book.sink());
        let proxy = Proxy::new(
            TcpNet::client(
                file.id,
                book,
                larder_real::process_auth(cluster_key(file.cluster_secret_file.as_deref())?),
            ),
            TokioClock::new(),
            config,
            routing,
        );
        outln!("larder proxy {} listening on {bound}", file.id);
        let _metrics =
            serve_metrics(file.metrics_listen, [proxy.metrics_registry(file.id)]).await?;
        let serve_tls = match tls {
            Some((listener, bound, tls)) => {
                outln!(
                    "larder proxy {} listening on {bound} (TLS, tls_auth_clients {})",
                    file.id,
                    tls.auth_clients()
                );
                Some(proxy.serve_tls(listener, tls))
            }
            None => None,
        };
        let serve_tls = async {
            match serve_tls {
                Some(serving) => serving.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = proxy.serve(listener) => result.context("accepting clients")?,
            result = serve_tls => result.context("accepting TLS clients")?,
            result = stop_signal() => result?,
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, toml::de::Error> {
        toml::from_str(text)
    }

    const CENTERS: &str = r#"centers = [{ id = 101, address = "127.0.0.1:7101" }, { id = 102, address = "127.0.0.1:7102" }, { id = 103, address = "127.0.0.1:7103" }]"#;

    #[test]
    fn configs_parse_and_reject_unknown_fields() {
        let node: NodeFile = parse(
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
        assert_eq!((node.id, node.groups, node.peers.len()), (1, Some(8), 1));
        assert_eq!(
            node.mode().expect("static mode"),
            NodeMode::Static {
                groups: 8,
                initialize: true
            }
        );
        let proxy: ProxyFile = parse(
            r#"
            id = 1001
            listen = "127.0.0.1:6380"
            groups = 8
            nodes = [{ id = 1, address = "127.0.0.1:7001" }]
            "#,
        )
        .expect("proxy config");
        assert_eq!(proxy.requirepass, None);
        let routing = proxy.routing().expect("static routing");
        assert!(routing.sources().is_empty());
        assert_eq!(routing.current().groups().len(), 8);
        let typo = parse::<ProxyFile>(
            "id = 1\nlisten = \"127.0.0.1:1\"\ngroups = 1\nnodes = []\nrequirepas = \"x\"",
        );
        assert!(
            typo.is_err(),
            "a misspelt key must be an error, not silently ignored"
        );
    }

    #[test]
    fn proxy_bounds_parse_and_are_checked() {
        let base = "id = 1001\nlisten = \"127.0.0.1:6380\"\ngroups = 8\nnodes = [{ id = 1, address = \"127.0.0.1:7001\" }]\n";
        let file: ProxyFile = parse(base).expect("parse");
        let config = file.proxy_config().expect("defaults");
        assert_eq!(config.max_clients, 10_000);
        assert_eq!(config.idle_timeout, None);
        let file: ProxyFile = parse(&format!(
            "{base}max_clients = 50\ntimeout = 300\noutput_stall_secs = 5\noutput_buffer_max = 1048576\nauth_failure_delay_ms = 250\nauth_failures_max = 0\n"
        ))
        .expect("parse");
        let config = file.proxy_config().expect("valid");
        assert_eq!(config.max_clients, 50);
        assert_eq!(config.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(config.output_stall_timeout, Duration::from_secs(5));
        assert_eq!(config.output_buffer_max, 1 << 20);
        assert_eq!(config.auth_failure_delay, Duration::from_millis(250));
        assert_eq!(config.auth_failures_max, 0);
        let off: ProxyFile = parse(&format!("{base}timeout = 0\n")).expect("parse");
        assert_eq!(off.proxy_config().expect("valid").idle_timeout, None);
        for bad in [
            "max_clients = 0",
            "output_stall_secs = 0",
            "output_buffer_max = 1000",
        ] {
            let file: ProxyFile = parse(&format!("{base}{bad}\n")).expect("parse");
            assert!(file.proxy_config().is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn proxy_tls_settings_parse_and_are_checked() {
        let base = "id = 1001\nlisten = \"127.0.0.1:6380\"\ngroups = 8\nnodes = [{ id = 1, address = \"127.0.0.1:7001\" }]\n";
        let file: ProxyFile = parse(base).expect("parse");
        assert!(file.tls().expect("no TLS").is_none());
        assert_eq!(
            file.proxy_config().expect("defaults").tls_handshake_timeout,
            Duration::from_secs(10)
        );
        let file: ProxyFile = parse(&format!(
            "{base}tls_port = 6390\ntls_cert_file = \"/p.pem\"\ntls_key_file = \"/p.key\"\ntls_ca_cert_file = \"/ca.pem\"\ntls_auth_clients = \"optional\"\ntls_handshake_timeout_secs = 3\n"
        ))
        .expect("parse");
        assert_eq!(file.tls_port, Some(6390));
        assert_eq!(file.tls_auth_clients, Some(TlsAuthClients::Optional));
        assert_eq!(
            file.proxy_config().expect("valid").tls_handshake_timeout,
            Duration::from_secs(3)
        );
        assert!(
            parse::<ProxyFile>(&format!("{base}tls_auth_clients = \"maybe\"\n")).is_err(),
            "tls_auth_clients is yes, no or optional"
        );
        let refused = |extra: &str, expected: &str| {
            let file: ProxyFile = parse(&format!("{base}{extra}")).expect("parse");
            let error = file
                .proxy_config()
                .and_then(|_| file.tls())
                .map(|_| ())
                .expect_err(extra);
            let text = format!("{error:#}");
            assert!(text.contains(expected), "{extra}: {text}");
        };
        refused(
            "tls_port = 6390\n",
            "tls_port needs tls_cert_file and tls_key_file",
        );
        refused(
            "tls_port = 6390\ntls_cert_file = \"/p.pem\"\n",
            "tls_port needs tls_cert_file and tls_key_file",
        );
        refused(
            "tls_cert_file = \"/p.pem\"\ntls_key_file = \"/p.key\"\n",
            "tls_cert_file is set but tls_port is not",
        );
        refused(
            "tls_port = 0\ntls_cert_file = \"/p.pem\"\ntls_key_file = \"/p.key\"\n",
            "tls_port must be 1..=65535",
        );
        refused(
            "tls_port = 6380\ntls_cert_file = \"/p.pem\"\ntls_key_file = \"/p.key\"\n",
            "also listen's port",
        );
        refused(
            "tls_port = 6390\ntls_cert_file = \"/p.pem\"\ntls_key_file = \"/p.key\"\ntls_auth_clients = \"yes\"\n",
            "tls_auth_clients = \"yes\" needs tls_ca_cert_file",
        );
        refused(
            "tls_port = 6390\ntls_cert_file = \"/nonexistent/p.pem\"\ntls_key_file = \"/p.key\"\n",
            "reading tls_cert_file /nonexistent/p.pem",
        );
        refused(
            "tls_port = 6390\ntls_cert_file = \"/p.pem\"\ntls_key_file = \"/p.key\"\ntls_handshake_timeout_secs = 0\n",
            "tls_handshake_timeout_secs must be at least 1",
        );
    }

    #[test]
    fn center_configs_parse_and_are_checked() {
        let text = format!(
            "id = 101\nlisten = \"127.0.0.1:7101\"\ndata_dir = \"/tmp/c\"\ngroups = 8\ninitialize = true\nheartbeat_ms = 200\nmissed_heartbeats_max = 4\nbootstrap_nodes_min = 4\n{CENTERS}\nobservers = [{{ id = 201, address = \"127.0.0.1:7201\" }}]\n"
        );
        let file: CenterFile = parse(&text).expect("center config");
        let config = file.center_config().expect("valid");
        assert_eq!(config.centers, vec![101, 102, 103]);
        assert_eq!(config.observers, vec![201]);
        assert_eq!(
            (
                config.groups,
                config.heartbeat_ms,
                config.missed_heartbeats_max,
                config.bootstrap_nodes_min,
                config.replicas
            ),
            (8, 200, 4, 4, 3)
        );
        // The automatic splits' knobs: their defaults, and each set from the file.
        let splits = |config: &CenterConfig| {
            (
                config.split_records_max,
                config.hot_slot_requests_per_sec_max,
                config.groups_per_node_min,
            )
        };
        assert_eq!(splits(&config), (8_000_000, 0, 1));
        let tuned: CenterFile = parse(&format!(
            "{text}split_records_max = 1000\nhot_slot_requests_per_sec_max = 500\ngroups_per_node_min = 0\n"
        ))
        .expect("parse");
        assert_eq!(
            splits(&tuned.center_config().expect("valid")),
            (1000, 500, 0)
        );
        // An observer runs from the same kind of file, but does not form the group.
        let observer: CenterFile = parse(&text.replace("id = 101\n", "id = 201\n")).expect("parse");
        assert!(
            observer.center_config().is_err(),
            "an observer with initialize"
        );
        let observer: CenterFile = parse(
            &text
                .replace("id = 101\n", "id = 201\n")
                .replace("initialize = true\n", ""),
        )
        .expect("parse");
        assert!(observer.center_config().is_ok());
        // Rejected: an id listed nowhere, duplicate ids, bad values, unknown keys.
        let stranger: CenterFile = parse(&text.replace("id = 101\n", "id = 5\n")).expect("parse");
        assert!(stranger.center_config().is_err());
        let twice: CenterFile = parse(&text.replace("id = 201,", "id = 102,")).expect("parse");
        assert!(twice.center_config().is_err());
        let zero: CenterFile = parse(&text.replace("groups = 8", "groups = 0")).expect("parse");
        assert!(zero.center_config().is_err());
        assert!(parse::<CenterFile>(&format!("{text}heartbeat = 5\n")).is_err());
        assert!(parse::<CenterFile>(&text.replace("groups = 8\n", "")).is_err());
    }

    #[derive(clap::Parser, Debug)]
    struct NodeCli {
        #[command(flatten)]
        args: NodeArgs,
    }

    fn node_args(words: &[&str]) -> Result<NodeArgs, clap::Error> {
        use clap::Parser;
        NodeCli::try_parse_from(std::iter::once("node").chain(words.iter().copied()))
            .map(|cli| cli.args)
    }

    #[test]
    fn a_joining_node_comes_from_flags_or_a_file_never_both() {
        let centers = "101@127.0.0.1:7101,102@127.0.0.1:7102";
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().to_str().expect("utf-8 path");
        let args = node_args(&["--dir", path, "--center", centers, "--id", "9"]).expect("flags");
        let (file, _) = args.file().expect("a file from the flags");
        assert_eq!((file.id, file.listen.port()), (9, 0));
        assert_eq!(file.data_dir, dir.path().join("data"));
        let ids: Vec<NodeId> = file.centers.iter().map(|c| c.id).collect();
        assert_eq!(ids, [101, 102]);
        assert!(matches!(file.mode(), Ok(NodeMode::Center { .. })));
        assert!(node_args(&["--config", "n.toml"]).is_ok());
        assert!(node_args(&[]).is_err(), "neither a file nor a directory");
        assert!(node_args(&["--config", "n.toml", "--dir", path]).is_err());
        assert!(node_args(&["--dir", path]).is_err(), "no centers");
        // A center without its id: its leader hints could not be followed.
        let args =
            node_args(&["--dir", path, "--center", "127.0.0.1:7101", "--id", "9"]).expect("parses");
        assert!(args.file().is_err());
    }

    #[test]
    fn a_joining_node_keeps_its_recorded_id() {
        let dir = tempfile::tempdir().expect("dir");
        let none = || {
            Ok(Centers {
                addresses: vec![],
                key: larder_real::ClusterKey::from_secret(b"a secret for the test")?,
            })
        };
        // Given: recorded. Not given: the recorded one, without asking any center (none is
        // given, so asking would fail). Another one given: refused.
        assert_eq!(node_id(dir.path(), Some(7), none).expect("given"), 7);
        assert_eq!(node_id(dir.path(), None, none).expect("recorded"), 7);
        assert_eq!(node_id(dir.path(), Some(7), none).expect("same"), 7);
        assert!(node_id(dir.path(), Some(8), none).is_err());
        let fresh = tempfile::tempdir().expect("dir");
        assert!(
            node_id(fresh.path(), None, none).is_err(),
            "no id, none recorded, no center to ask"
        );
    }

    #[test]
    fn the_next_free_id_follows_the_storage_nodes_and_skips_the_centers() {
        let status = |nodes: Vec<NodeId>| ClusterStatus {
            center_leader: 101,
            center_term: 1,
            centers: vec![101, 102, 103],
            round_age_ms: 0,
            epoch: 1,
            nodes: nodes
                .into_iter()
                .map(|id| larder_protocol::NodeSummary {
                    id,
                    address: String::new(),
                    state: None,
                    liveness: larder_protocol::Liveness::Up,
                    groups: vec![],
                    leads: 0,
                    hot: Default::default(),
                })
                .collect(),
            groups: vec![],
            repairs: vec![],
        };
        assert_eq!(next_free_id(&status(vec![1, 2, 3])), 4);
        assert_eq!(next_free_id(&status(vec![1, 7])), 8, "gaps stay free");
        assert_eq!(next_free_id(&status((1..=100).collect())), 104);
        assert_eq!(next_free_id(&status(vec![])), 1);
    }

    #[test]
    fn configurations_that_cannot_work_are_refused_with_the_reason() {
        let center = format!(
            "id = 101\nlisten = \"127.0.0.1:7101\"\ndata_dir = \"/tmp/c\"\ngroups = 8\n{CENTERS}\n"
        );
        let refused = |text: &str, why: &str| {
            let file: CenterFile = parse(text).expect("parses");
            let error = format!("{:#}", file.center_config().expect_err(why));
            assert!(error.contains(why), "{error}");
        };
        parse::<CenterFile>(&center)
            .expect("parses")
            .center_config()
            .expect("the base is valid");
        refused(&format!("{center}replicas = 4\n"), "replicas must be odd");
        refused(&format!("{center}replicas = 9\n"), "replicas must be 1..=7");
        refused(
            &format!("{center}missed_heartbeats_max = 1\n"),
            "at least 2",
        );
        refused(&format!("{center}heartbeat_ms = 0\n"), "heartbeat_ms");
        refused(
            &format!("{center}nodes = [{{ id = 102, address = \"127.0.0.1:7002\" }}]\n"),
            "id 102 is given twice",
        );
        refused(
            &format!("{center}nodes = [{{ id = 1, address = \"127.0.0.1:7102\" }}]\n"),
            "address 127.0.0.1:7102 is given twice",
        );
        let node = |extra: &str| {
            let file: NodeFile = parse(&format!(
                "id = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"/tmp/n1\"\n{extra}"
            ))
            .expect("parses");
            file.mode().map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(node(&format!("{CENTERS}\n")).is_ok());
        let error = node(&format!(
            "{CENTERS}\npeers = [{{ id = 101, address = \"127.0.0.1:9\" }}]\n"
        ))
        .expect_err("a peer with a center's id");
        assert!(error.contains("id 101 is given twice"), "{error}");
        let error = node("centers = [{ id = 101, address = \"10.0.0.5:7101\" }]\n")
            .expect_err("loopback with a remote center");
        assert!(error.contains("loopback"), "{error}");
        let error = node(&format!("{CENTERS}\nheartbeat_ms = 0\n")).expect_err("heartbeat");
        assert!(error.contains("heartbeat_ms"), "{error}");
        let error = node("groups = 2\npeers = [{ id = 1, address = \"127.0.0.1:7002\" }]\n")
            .expect_err("a peer with the node's own id");
        assert!(error.contains("id 1 is given twice"), "{error}");
    }

    #[test]
    fn node_and_proxy_center_mode_parse_and_are_checked() {
        let node = format!(
            "id = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"/tmp/n1\"\nheartbeat_ms = 200\npeers = [{{ id = 2, address = \"127.0.0.1:7002\" }}]\n{CENTERS}\n"
        );
        let file: NodeFile = parse(&node).expect("center-mode node");
        assert_eq!(
            file.mode().expect("center mode"),
            NodeMode::Center {
                advertise: "127.0.0.1:7001".parse().expect("address")
            }
        );
        // Lanes: a partial table keeps the other fields' defaults; an unknown one is refused.
        assert_eq!(file.lanes, None);
        let file: NodeFile =
            parse(&format!("{node}[lanes]\nslow_read_bytes = 1000\n")).expect("lanes");
        let lanes = file.lanes.expect("lanes parsed");
        assert_eq!(lanes.slow_read_bytes, 1000);
        assert_eq!(
            lanes.slow_write_bytes,
            larder_storage::lanes::LaneConfig::default().slow_write_bytes
        );
        assert!(parse::<NodeFile>(&format!("{node}[lanes]\nslow_reads = 1\n")).is_err());
        // Peers are optional in center mode: the center hands out the nodes' addresses.
        let no_peers = node.replace("peers = [{ id = 2, address = \"127.0.0.1:7002\" }]\n", "");
        let file: NodeFile = parse(&no_peers).expect("center-mode node without peers");
        assert!(file.peers.is_empty());
        assert!(matches!(file.mode(), Ok(NodeMode::Center { .. })));
        // Groups come from the center: static settings are rejected, not ignored.
        for extra in [
            "groups = 8\n",
            "initialize = true\n",
            "initialize = false\n",
        ] {
            let file: NodeFile = parse(&format!("{node}{extra}")).expect("parse");
            assert!(file.mode().is_err(), "{extra}");
        }
        // Port 0 registers the port bound; an advertised address needs a real port.
        let any_port = node.replace("127.0.0.1:7001", "127.0.0.1:0");
        let file: NodeFile = parse(&any_port).expect("parse");
        assert!(matches!(file.mode(), Ok(NodeMode::Center { advertise }) if advertise.port() == 0));
        let file: NodeFile = parse(&format!("{node}advertise = \"10.0.0.1:0\"\n")).expect("parse");
        assert!(file.mode().is_err(), "advertised port 0");
        // A wildcard listen address needs an advertised one.
        let wildcard = node.replace("127.0.0.1:7001", "0.0.0.0:7001");
        let file: NodeFile = parse(&wildcard).expect("parse");
        assert!(file.mode().is_err());
        let file: NodeFile =
            parse(&format!("{wildcard}advertise = \"10.0.0.1:7001\"\n")).expect("parse");
        assert_eq!(
            file.mode().expect("advertised"),
            NodeMode::Center {
                advertise: "10.0.0.1:7001".parse().expect("address")
            }
        );
        // Static mode needs groups; center-only settings need centers.
        let bare = "id = 1\nlisten = \"127.0.0.1:7001\"\ndata_dir = \"/tmp/n1\"\n";
        assert!(parse::<NodeFile>(bare).expect("parse").mode().is_err());
        let file: NodeFile =
            parse(&format!("{bare}groups = 4\nheartbeat_ms = 100\n")).expect("parse");
        assert!(file.mode().is_err());

        let proxy = format!(
            "id = 1001\nlisten = \"127.0.0.1:6380\"\nnodes = [{{ id = 1, address = \"127.0.0.1:7001\" }}]\nobservers = [{{ id = 201, address = \"127.0.0.1:7201\" }}]\n{CENTERS}\n"
        );
        let file: ProxyFile = parse(&proxy).expect("center-mode proxy");
        let routing = file.routing().expect("center routing");
        assert_eq!(routing.sources(), &[201, 101, 102, 103], "observers first");
        assert_eq!(
            routing.current().epoch(),
            0,
            "no table until the center answers"
        );
        let file: ProxyFile = parse(&format!("{proxy}groups = 8\n")).expect("parse");
        assert!(file.routing().is_err(), "groups with centers");
        // In center mode the nodes' addresses come from the center: `nodes` is optional.
        let file: ProxyFile = parse(&proxy.replace(
            "nodes = [{ id = 1, address = \"127.0.0.1:7001\" }]",
            "nodes = []",
        ))
        .expect("parse");
        assert!(file.routing().is_ok(), "center mode with nodes = []");
        let no_nodes = proxy.replace("nodes = [{ id = 1, address = \"127.0.0.1:7001\" }]\n", "");
        let file: ProxyFile = parse(&no_nodes).expect("center mode without nodes");
        assert!(file.nodes.is_empty());
        assert_eq!(
            file.routing().expect("center routing").sources(),
            &[201, 101, 102, 103]
        );
        // Static mode still needs them: the table spreads every group over them.
        let file: ProxyFile =
            parse("id = 1001\nlisten = \"127.0.0.1:6380\"\ngroups = 8\n").expect("parse");
        assert!(file.routing().is_err(), "static mode without nodes");
    }
}
