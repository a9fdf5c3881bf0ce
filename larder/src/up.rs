//! `larder up`: the local cluster of `larder::local` (3 center replicas, 3 storage nodes,
//! a RESP proxy, all in this process) until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use larder::local::{LocalCluster, LocalConfig};

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Data directory (one subdirectory per center replica and storage node). Default: a
    /// temporary directory removed on exit. Restarting with the same directory keeps the data.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Address the RESP proxy listens on.
    #[arg(long, default_value = "127.0.0.1:6380")]
    pub listen: SocketAddr,
    /// Number of slot groups the 16384 slots are spread over (when the center writes its first
    /// routing table; a restart keeps the groups the directory has).
    #[arg(long, default_value_t = 64)]
    pub groups: u64,
    /// Require clients to AUTH with this password.
    #[arg(long)]
    pub requirepass: Option<String>,
}

pub fn up(args: UpArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let config = LocalConfig {
            dir: args.dir.clone(),
            listen: args.listen,
            groups: args.groups,
            requirepass: args.requirepass.clone(),
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
        println!(
            "larder up: {} slot groups (routing epoch {}), data in {}",
            cluster.groups(),
            cluster.routing_epoch(),
            cluster.dir().display()
        );
        println!("  centers: {}", list(&cluster.center_addresses));
        println!("  storage nodes: {}", list(&cluster.node_addresses));
        println!("  proxy: {}", cluster.proxy_address);
        println!("try: redis-cli -p {}", cluster.proxy_address.port());
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        println!("stopping");
        cluster.stop().await;
        Ok(true)
    })
}
