//! `larder up`: the local cluster of `larder_nodes::local` until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use larder_nodes::local::{LocalCluster, LocalConfig};

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Data directory (one subdirectory per node). Default: a temporary directory removed on exit.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Address the RESP proxy listens on.
    #[arg(long, default_value = "127.0.0.1:6380")]
    pub listen: SocketAddr,
    /// Number of slot groups the 16384 slots are spread over.
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
        println!(
            "larder up: 3 storage nodes, {} slot groups, proxy on {}",
            args.groups, cluster.proxy_address
        );
        println!("try: redis-cli -p {}", cluster.proxy_address.port());
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        println!("stopping");
        cluster.stop().await;
        Ok(true)
    })
}
