//! `larder up`: the local cluster of `larder::local` (3 center replicas, `--nodes` storage
//! nodes, a RESP proxy, all in this process) until Ctrl-C. It prints how to watch it
//! (`larder admin status`) and grow it (`larder node --dir DIR --center ...`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use larder::local::{CENTER_PORT_DEFAULT, LocalCluster, LocalConfig, NODES_MAX, NODES_MIN};

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Data directory (one subdirectory per center replica and storage node). Default: a
    /// temporary directory removed on exit. Restarting with the same directory keeps the data.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Address the RESP proxy listens on.
    #[arg(long, default_value = "127.0.0.1:6380")]
    pub listen: SocketAddr,
    /// Storage nodes to start (the first routing table spreads the groups over all of them).
    #[arg(long, default_value_t = NODES_MIN, value_parser = parse_nodes)]
    pub nodes: usize,
    /// The center replicas listen on loopback at this port and the next two (0: any free
    /// ports; `larder admin` then needs `--center`).
    #[arg(long, default_value_t = CENTER_PORT_DEFAULT)]
    pub center_port: u16,
    /// Number of slot groups the 16384 slots are spread over when the center writes its first
    /// routing table (default: one per storage node; a restart keeps the groups the directory
    /// has). Fewer, busier groups cost less per write: each group's writes are Raft rounds of
    /// their own. The center adds groups as nodes join (`--groups-per-node-min`) and as groups
    /// grow past 8,000,000 records.
    #[arg(long)]
    pub groups: Option<u64>,
    /// The center splits the group with the most slots while the cluster has fewer than this
    /// many groups per storage node, so that a node that joins gets a group to lead (0: never;
    /// the groups stay as `--groups` made them until one grows past its record limit).
    #[arg(long, default_value_t = 1)]
    pub groups_per_node_min: u64,
    /// Require clients to AUTH with this password.
    #[arg(long)]
    pub requirepass: Option<String>,
    /// Serve every role's Prometheus metrics here (`GET /metrics`; port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:9380")]
    pub metrics_listen: SocketAddr,
    /// Serve no metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// Writes per second one key may take through the proxy; a write past it is answered
    /// `-HOTKEY …` and not executed (default: no limit).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub hot_key_writes_per_sec_max: Option<u64>,
    /// Requests per second from which equal reads of a key are shared: reads arriving while
    /// one is fetched take the next fetch's answer (still linearizable); 0 turns it off.
    #[arg(long, default_value_t = 500)]
    pub hot_key_share_reads_min_per_sec: u64,
    /// A slot whose group leader serves more requests a second than this is moved by the
    /// center into a new group of its own (default 0: off).
    #[arg(long, default_value_t = 0)]
    pub hot_slot_requests_per_sec_max: u64,
    /// Confirm each linearizable read with its group's own openraft read index (a heartbeat
    /// round per group) instead of the nodes' read rounds (one exchange per peer for every
    /// group with reads waiting). Both are linearizable; this is for comparing them.
    #[arg(long)]
    pub no_read_rounds: bool,
    /// Batches of single commands of different connections the proxy runs at once (commands
    /// arriving while all are busy go together, one request per group); 0: every command
    /// alone, as it arrived.
    #[arg(long, default_value_t = larder_proxy::coalesce::RUNNERS)]
    pub coalesce_runners: usize,
    /// Keep committed log entries this long after snapshots cover them (by the group clock),
    /// so that `larder backup` archives every write and `larder restore --at` can rebuild any
    /// moment since the first backup. Longer than the time between backups (`--every`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub retain_log: Option<std::time::Duration>,
}

fn parse_nodes(text: &str) -> Result<usize, String> {
    let nodes: usize = text.parse().map_err(|e| format!("{e}"))?;
    if !(NODES_MIN..=NODES_MAX).contains(&nodes) {
        return Err(format!("between {NODES_MIN} and {NODES_MAX}"));
    }
    Ok(nodes)
}

pub fn up(args: UpArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime
        .block_on(async {
            let config = LocalConfig {
                dir: args.dir.clone(),
                listen: args.listen,
                center_port: args.center_port,
                nodes: args.nodes,
                groups: args.groups.unwrap_or(args.nodes as u64),
                requirepass: args.requirepass.clone(),
                metrics: (!args.no_metrics).then_some(args.metrics_listen),
                hot_key_writes_per_sec_max: args.hot_key_writes_per_sec_max,
                hot_key_share_reads_min_per_sec: (args.hot_key_share_reads_min_per_sec > 0)
                    .then_some(args.hot_key_share_reads_min_per_sec),
                hot_slot_requests_per_sec_max: args.hot_slot_requests_per_sec_max,
                groups_per_node_min: args.groups_per_node_min,
                read_rounds: !args.no_read_rounds,
                retain_log_ms: args.retain_log.map_or(0, |d| d.as_millis() as u64),
                coalesce_runners: args.coalesce_runners,
            };
            let cluster = LocalCluster::start(&config)
                .await
                .context("starting the local cluster")?;
            let list = |roles: &[(u64, SocketAddr)]| {
                roles
                    .iter()
                    .map(|(id, address)| format!("{id}@{address}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            outln!(
                "larder up: {} slot groups (routing epoch {}), data in {}",
                cluster.groups(),
                cluster.routing_epoch(),
                cluster.dir().display()
            );
            outln!("  centers: {}", list(&cluster.center_addresses));
            outln!("  storage nodes: {}", list(&cluster.node_addresses));
            outln!("  proxy: {}", cluster.proxy_address);
            if let Some(address) = cluster.metrics_address {
                outln!("  metrics: http://{address}/metrics");
            }
            let centers = cluster
                .center_addresses
                .iter()
                .map(|(id, address)| format!("{id}@{address}"))
                .collect::<Vec<_>>()
                .join(",");
            if let Some(path) = &cluster.secret_file {
                outln!(
                    "  cluster secret: {} (for larder admin and larder node: export {}={})",
                    path.display(),
                    larder_real::SECRET_FILE_VAR,
                    path.display()
                );
            }
            outln!("try: redis-cli -p {}", cluster.proxy_address.port());
            outln!("watch: larder admin status --center {centers}");
            outln!("grow: larder node --dir DIR --center {centers}");
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
            outln!("stopping");
            Ok(cluster.stop().await)
        })
        .map(|data: larder::local::DataDir| {
            drop(runtime);
            drop(data);
            true
        })
}
