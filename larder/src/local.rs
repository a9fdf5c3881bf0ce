//! A whole local cluster in one process on loopback — three center replicas, storage nodes
//! (three by default) that get their slot groups from the center, and a RESP proxy that gets
//! its routing table from the center — with data under a temporary or given directory.
//! `larder up` runs it; the end-to-end tests start it too.
//!
//! Every role runs exactly as it does in its own process (`larder center`, `larder node`,
//! `larder proxy`): the center bootstraps the routing table once every storage node
//! heartbeats, tells them which groups to host and forms the groups; the proxy fetches the
//! table. Restarting from the same directory reopens everything: the center keeps its table
//! (it never bootstraps twice) and the nodes reopen the groups they host. The center replicas
//! listen on fixed ports by default ([`CENTER_PORT_DEFAULT`]), so `larder admin` and a node
//! joining with `larder node --center` find them without being told.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use larder_core::env::Clock;
use larder_core::kv::Command;
use larder_core::{GroupId, NodeId};

use larder_center::{Center, CenterConfig};
use larder_client::{ClientConfig, ClusterClient, SharedRouting};
use larder_proxy::{Proxy, ProxyConfig};
use larder_real::{
    AddressBook, ClusterKey, RealEnv, TcpNet, TokioClock, TokioListener, process_auth,
};
use larder_storage::{NodeConfig, StorageNode};

/// What to start.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Data directory (one subdirectory per center replica and storage node); `None`: a
    /// temporary one, removed on drop.
    pub dir: Option<PathBuf>,
    /// Where the proxy listens (port 0 picks one).
    pub listen: SocketAddr,
    /// The center replicas listen on loopback at this port and the next two (0: any free
    /// ports).
    pub center_port: u16,
    /// Storage nodes started (ids `1..=nodes`), [`NODES_MIN`] to [`NODES_MAX`].
    pub nodes: usize,
    /// Slot groups the 16384 slots are spread over. Used when the center writes its first
    /// routing table; a restart from an existing directory keeps the groups it has.
    pub groups: u64,
    pub requirepass: Option<String>,
    /// Where the Prometheus metrics of every role are served (`GET /metrics`; port 0 picks
    /// one); `None`: not served.
    pub metrics: Option<SocketAddr>,
    /// The proxy's per-key write limit (writes per second; `None`: none).
    pub hot_key_writes_per_sec_max: Option<u64>,
    /// From how many requests per second reads of a key are shared (`None`: never).
    pub hot_key_share_reads_min_per_sec: Option<u64>,
    /// The center's `hot_slot_requests_per_sec_max` (0: hot slots stay where they are).
    pub hot_slot_requests_per_sec_max: u64,
    /// The center's `groups_per_node_min` (0: the groups stay as many as `groups` asks, until
    /// a split by records).
    pub groups_per_node_min: u64,
    /// The storage nodes' `NodeConfig::read_rounds` (`false`: every read confirmed by its
    /// group's own openraft read index).
    pub read_rounds: bool,
    /// The storage nodes' `NodeConfig::retain_log_ms` (0: log entries go with snapshots).
    pub retain_log_ms: u64,
    /// The proxy's `ProxyConfig::coalesce_runners` (0: no coalescing).
    pub coalesce_runners: usize,
}

/// Why a local cluster did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("--groups must be between 1 and 16384, got {0}")]
    Groups(u64),
    #[error("--nodes must be between {NODES_MIN} and {NODES_MAX}, got {0}")]
    Nodes(usize),
    #[error("--center-port {0} leaves no room for three center replicas")]
    CenterPort(u16),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Start { what: String, reason: String },
    #[error(
        "the cluster was not ready within {seconds} s: {reason} (data in {dir}; RUST_LOG=info shows the center's progress)"
    )]
    NotReady {
        seconds: u64,
        reason: String,
        dir: String,
    },
}

fn start_error(what: impl Into<String>, reason: impl std::fmt::Display) -> LocalError {
    LocalError::Start {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// The node ids of the local cluster's center replicas and proxy; its storage nodes are
/// `1..=nodes`.
pub const CENTERS: [NodeId; 3] = [101, 102, 103];
/// Storage nodes of a local cluster: at least one per replica of a group, and few enough to
/// keep every id below the centers' (each is a fjall database and a Raft node in one process).
pub const NODES_MIN: usize = 3;
pub const NODES_MAX: usize = 64;
/// Where the first center replica listens by default; the others take the next ports.
pub const CENTER_PORT_DEFAULT: u16 = 7101;
const PROXY_ID: NodeId = 1001;
/// The endpoint [`LocalCluster::start`] checks readiness from.
const PROBE_ID: NodeId = 1002;
/// How long [`LocalCluster::start`] waits for the routing table and every group's leader; a
/// fresh start takes a few seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the center replicas listen with `center_port` (`None`: the port range overflows).
/// Port 0 gives every replica port 0: any free port.
pub fn center_addresses(center_port: u16) -> Option<Vec<(NodeId, SocketAddr)>> {
    CENTERS
        .iter()
        .zip(0u16..)
        .map(|(id, offset)| {
            let port = if center_port == 0 {
                Some(0)
            } else {
                center_port.checked_add(offset)
            };
            port.map(|port| (*id, SocketAddr::from(([127, 0, 0, 1], port))))
        })
        .collect()
}

/// A running local cluster.
pub struct LocalCluster {
    pub proxy_address: SocketAddr,
    /// Where each center replica listens (node id, address).
    pub center_addresses: Vec<(NodeId, SocketAddr)>,
    /// Where each storage node listens (node id, address).
    pub node_addresses: Vec<(NodeId, SocketAddr)>,
    /// Where the metrics endpoint listens, when [`LocalConfig::metrics`] asked for one.
    pub metrics_address: Option<SocketAddr>,
    /// Every role's metrics registry, served together by the endpoint.
    pub scrape: larder_core::metrics::Scrape,
    metrics: Option<larder_real::MetricsEndpoint>,
    routing: SharedRouting,
    centers: Vec<Arc<Center<RealEnv>>>,
    nodes: Vec<Arc<StorageNode<RealEnv>>>,
    /// Serving tasks (centers, nodes, proxy); they hold the nodes, so they end before the data
    /// goes.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    dir: PathBuf,
    /// Where the cluster secret is, if this cluster made (or reused) the file in its directory.
    pub secret_file: Option<PathBuf>,
    key: ClusterKey,
    _temp: Option<tempfile::TempDir>,
}

/// Binds `id` on `listen` and opens its disk under `dir/<name>`.
async fn open_env(
    id: NodeId,
    listen: SocketAddr,
    dir: &Path,
    name: &str,
    book: &AddressBook,
    seed: u64,
    key: &ClusterKey,
) -> Result<RealEnv, LocalError> {
    RealEnv::open(id, listen, &dir.join(name), book.clone(), seed, key)
        .await
        .map_err(|e| start_error(name.to_string(), e))
}

impl LocalCluster {
    /// Starts the center replicas, the storage nodes and the proxy, and returns once the proxy
    /// has a routing table and every slot group answers a linearizable read (at most
    /// 30 s). Must run inside a tokio multi-thread runtime.
    pub async fn start(args: &LocalConfig) -> Result<Self, LocalError> {
        if !(1..=16384).contains(&args.groups) {
            return Err(LocalError::Groups(args.groups));
        }
        if !(NODES_MIN..=NODES_MAX).contains(&args.nodes) {
            return Err(LocalError::Nodes(args.nodes));
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
        // Session ids and Raft jitter (drawn from each node's `Env::seed()`) must differ per
        // process start in production.
        let seed: u64 = larder_real::process_seed();
        // The environment's secret if one is set (to join this cluster to others' processes),
        // else the directory's, made on the first start: nodes and admin tools started apart
        // (`larder node`, `larder admin`) read it from there.
        let (key, secret_file) = if std::env::var_os(larder_real::SECRET_FILE_VAR).is_some()
            || std::env::var_os(larder_real::SECRET_VAR).is_some()
        {
            let key =
                larder_real::cluster_key(None).map_err(|e| start_error("the cluster secret", e))?;
            (key, None)
        } else {
            let path = dir.join(larder_real::SECRET_FILE_NAME);
            std::fs::create_dir_all(&dir).map_err(|source| LocalError::Io {
                what: format!("creating {}", dir.display()),
                source,
            })?;
            let key = larder_real::ensure_secret_file(&path)
                .map_err(|e| start_error("the cluster secret", e))?;
            (key, Some(path))
        };
        let book = AddressBook::new();
        let mut cluster = LocalCluster {
            proxy_address: args.listen,
            center_addresses: Vec::new(),
            node_addresses: Vec::new(),
            metrics_address: None,
            scrape: larder_core::metrics::Scrape::new(),
            metrics: None,
            routing: SharedRouting::from_sources(CENTERS.to_vec()),
            centers: Vec::new(),
            nodes: Vec::new(),
            tasks: Vec::new(),
            dir: dir.clone(),
            secret_file,
            key: key.clone(),
            _temp: temp,
        };
        // Whatever started before a failure is stopped again, not left running.
        match cluster.start_roles(args, &dir, &book, seed).await {
            Ok(()) => Ok(cluster),
            Err(error) => {
                // A failed start: what it wrote is of no use, and a warning is no harm here.
                drop(cluster.stop().await);
                Err(error)
            }
        }
    }

    async fn start_roles(
        &mut self,
        args: &LocalConfig,
        dir: &Path,
        book: &AddressBook,
        seed: u64,
    ) -> Result<(), LocalError> {
        let mut center_config = CenterConfig::new(CENTERS.to_vec(), args.groups);
        center_config.hot_slot_requests_per_sec_max = args.hot_slot_requests_per_sec_max;
        center_config.groups_per_node_min = args.groups_per_node_min;
        // The first table spreads the groups over every node started, not the first three
        // heard from.
        center_config.bootstrap_nodes_min = args.nodes;
        let listen =
            center_addresses(args.center_port).ok_or(LocalError::CenterPort(args.center_port))?;
        for (id, listen) in listen {
            let name = format!("center-{id}");
            let env = open_env(id, listen, dir, &name, book, seed, &self.key).await?;
            self.scrape.add(env.disk.metrics_registry(id));
            let address = env.net.listen_address().expect("bound");
            let center = Center::start(env, NodeConfig::new(id, vec![]), center_config.clone())
                .await
                .map_err(|e| start_error(format!("{name}: starting"), e))?;
            // Heartbeats bring the storage nodes' addresses; the centers must reach them (in
            // one process the book is shared anyway, but this is what a center process does).
            center.on_address(book.sink());
            for registry in center.metrics_registries() {
                self.scrape.add(registry);
            }
            let serving = center.clone();
            self.tasks.push(tokio::spawn(async move {
                if let Err(error) = serving.serve().await {
                    tracing::error!(center = id, %error, "center stopped serving");
                }
            }));
            self.center_addresses.push((id, address));
            self.centers.push(center);
        }
        // The first replica forms the center group once; after a restart from the same
        // directory it is formed already and this is a no-op.
        self.centers[0]
            .initialize()
            .await
            .map_err(|e| start_error("initializing the center group", e))?;
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        for id in (1..=args.nodes).map(|id| id as NodeId) {
            let name = format!("node-{id}");
            let env = open_env(id, loopback, dir, &name, book, seed, &self.key).await?;
            self.scrape.add(env.disk.metrics_registry(id));
            let address = env.net.listen_address().expect("bound");
            let config = NodeConfig {
                centers: CENTERS.to_vec(),
                center_heartbeat_ms: center_config.heartbeat_ms,
                address: address.to_string(),
                read_rounds: args.read_rounds,
                retain_log_ms: args.retain_log_ms,
                ..NodeConfig::new(id, vec![])
            };
            let node = StorageNode::start(env, config)
                .await
                .map_err(|e| start_error(format!("{name}: starting"), e))?;
            // The other nodes' addresses come from the center (as in a `larder node` process;
            // the shared book knows them already).
            node.on_addresses(book.sink());
            self.scrape.add(node.metrics_registry());
            let serving = node.clone();
            self.tasks.push(tokio::spawn(async move {
                if let Err(error) = serving.serve().await {
                    tracing::error!(node = id, %error, "node stopped serving");
                }
            }));
            self.node_addresses.push((id, address));
            self.nodes.push(node);
        }
        // Likewise the proxy learns the nodes' addresses with its routing tables.
        self.routing.on_addresses(book.sink());
        let proxy = Proxy::new(
            TcpNet::client(PROXY_ID, book.clone(), process_auth(self.key.clone())),
            TokioClock::new(),
            ProxyConfig {
                process_figures: Some(process_figures),
                password: args.requirepass.clone(),
                hot_keys: larder_proxy::HotKeyConfig {
                    writes_per_sec_max: args.hot_key_writes_per_sec_max,
                    share_reads_min_per_sec: args.hot_key_share_reads_min_per_sec,
                    ..larder_proxy::HotKeyConfig::default()
                },
                coalesce_runners: args.coalesce_runners,
                ..ProxyConfig::default()
            },
            self.routing.clone(),
        );
        self.scrape.add(proxy.metrics_registry(PROXY_ID));
        if let Some(listen) = args.metrics {
            let endpoint = larder_real::MetricsEndpoint::start(listen, self.scrape.clone())
                .await
                .map_err(|source| LocalError::Io {
                    what: format!("metrics: binding {listen}"),
                    source,
                })?;
            self.metrics_address = Some(endpoint.address());
            self.metrics = Some(endpoint);
        }
        let listener = TokioListener::bind(args.listen)
            .await
            .map_err(|source| LocalError::Io {
                what: format!("proxy: binding {}", args.listen),
                source,
            })?;
        self.proxy_address = listener.local_addr().map_err(|source| LocalError::Io {
            what: "proxy: reading its address".into(),
            source,
        })?;
        self.tasks.push(tokio::spawn(async move {
            if let Err(error) = proxy.serve(listener).await {
                tracing::error!(%error, "proxy stopped accepting");
            }
        }));
        self.wait_until_ready(book).await
    }

    /// Waits until the proxy's routing has a table and every group of it answers a
    /// linearizable read (`DBSIZE` through the group's leader).
    async fn wait_until_ready(&self, book: &AddressBook) -> Result<(), LocalError> {
        let net = TcpNet::client(PROBE_ID, book.clone(), process_auth(self.key.clone()));
        let clock = TokioClock::new();
        let deadline = clock.now() + READY_TIMEOUT;
        let not_ready = |reason: String| LocalError::NotReady {
            seconds: READY_TIMEOUT.as_secs(),
            reason,
            dir: self.dir.display().to_string(),
        };
        let table = self
            .routing
            .wait_for_table(&net, &clock, deadline)
            .await
            .map_err(|e| not_ready(format!("no routing table from the center ({e})")))?;
        let config = ClientConfig {
            request_timeout: Duration::from_secs(1),
            attempts_max: 3,
            ..ClientConfig::default()
        };
        let mut client = ClusterClient::new(net, clock, self.routing.clone(), config);
        let groups: Vec<GroupId> = table.groups().keys().copied().collect();
        for group in groups {
            loop {
                match client.execute_in(group, Command::DbSize).await {
                    Ok(_) => break,
                    Err(error) if clock.now() >= deadline => {
                        return Err(not_ready(format!("group {group} does not serve: {error}")));
                    }
                    Err(_) => clock.sleep(Duration::from_millis(100)).await,
                }
            }
        }
        Ok(())
    }

    /// Slot groups in the routing table the proxy uses.
    pub fn groups(&self) -> usize {
        self.routing.current().groups().len()
    }

    /// The routing epoch the proxy uses.
    pub fn routing_epoch(&self) -> u64 {
        self.routing.current().epoch()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops every group's Raft. The temporary data directory, if the cluster made one, is
    /// handed back rather than removed: drop it after the runtime (see [`DataDir`]).
    pub async fn stop(mut self) -> DataDir {
        crate::stopping::begin();
        self.metrics = None;
        for node in &self.nodes {
            node.shutdown().await;
        }
        for center in &self.centers {
            center.shutdown().await;
        }
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        // Close the engines before a temporary directory is removed under them.
        self.nodes.clear();
        self.centers.clear();
        DataDir {
            _temp: self._temp.take(),
        }
    }
}

/// A stopped cluster's temporary data directory, removed when this is dropped. Drop it after
/// the tokio runtime: tasks the runtime still holds (openraft's, a snapshot view in flight)
/// keep fjall tables open until the runtime goes, and fjall deletes the files of tables it
/// compacted away when their last handle closes. Removed first, the directory takes those
/// files with it and fjall warns about each one at shutdown.
#[must_use = "dropping it removes the data directory: drop it after the runtime"]
pub struct DataDir {
    _temp: Option<tempfile::TempDir>,
}

/// Reads this process's figures from Linux's `/proc/self` (zeros where it cannot).
// The real process's own figures: only the binary that assembles real processes reads the
// real file system (clippy.toml); the proxy library gets this function as a hook.
#[allow(clippy::disallowed_methods)]
pub fn process_figures() -> larder_proxy::info::ProcessFigures {
    // Clock ticks per second: 100 on every Linux architecture Larder builds for.
    const TICKS: f64 = 100.0;
    const PAGE: u64 = 4096;
    let mut figures = larder_proxy::info::ProcessFigures {
        pid: std::process::id(),
        ..larder_proxy::info::ProcessFigures::default()
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces) start at its closing paren.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the paren.
        let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
        figures.used_cpu_user = ticks(11).unwrap_or(0.0) / TICKS;
        figures.used_cpu_sys = ticks(12).unwrap_or(0.0) / TICKS;
    }
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let resident = statm
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.parse::<u64>().ok());
        figures.resident_bytes = resident.unwrap_or(0) * PAGE;
    }
    figures
}
