//! `larder bench`: `redis-benchmark` against a local Larder cluster and, side by side in the same
//! run, against `redis-server` on loopback (durable: `appendfsync always`, like Larder's synced
//! log; and without persistence), printing requests per second and the ratios.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use larder::local::{LocalCluster, LocalConfig};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Requests per test (redis-benchmark -n).
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// Parallel connections (redis-benchmark -c).
    #[arg(long, default_value_t = 50)]
    pub clients: u64,
    /// Pipeline depth (redis-benchmark -P).
    #[arg(long, default_value_t = 1)]
    pub pipeline: u64,
    /// Tests (redis-benchmark -t).
    #[arg(long, default_value = "set,get")]
    pub tests: String,
    /// Slot groups of the Larder cluster.
    #[arg(long, default_value_t = 64)]
    pub groups: u64,
    /// Skip the redis-server peer runs.
    #[arg(long)]
    pub no_peer: bool,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// What one redis-benchmark run printed: requests per second by test, and any error lines.
struct Measured {
    rates: Vec<(String, f64)>,
    errors: Vec<String>,
}

/// Runs redis-benchmark against `port`.
fn redis_benchmark(args: &BenchArgs, port: u16) -> anyhow::Result<Measured> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", &args.tests])
        .args(["-n", &args.requests.to_string()])
        .args(["-c", &args.clients.to_string()])
        .args(["-P", &args.pipeline.to_string()])
        .arg("-q")
        .output()
        .context("running redis-benchmark (apt-get install redis-tools)")?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for line in text.split(['\r', '\n']) {
        let line = line.trim();
        let rate = line.split_once(": ").and_then(|(test, rest)| {
            let (rps, _) = rest.split_once(" requests per second")?;
            Some((test.to_string(), rps.trim().parse::<f64>().ok()?))
        });
        if let Some(rate) = rate {
            results.push(rate);
            continue;
        }
        if line.contains("ERR") || line.contains("Error") {
            errors.push(line.to_string());
        }
    }
    if !output.status.success() {
        bail!("redis-benchmark failed: {}", text.trim());
    }
    Ok(Measured {
        rates: results,
        errors,
    })
}

struct Peer {
    child: Child,
    port: u16,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis(dir: &Path, durable: bool) -> anyhow::Result<Peer> {
    let port = free_port()?;
    let mut command = Command::new("redis-server");
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if durable {
        command.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        command.args(["--appendonly", "no"]);
    }
    let child = command
        .spawn()
        .context("starting redis-server (apt-get install redis-server)")?;
    let peer = Peer { child, port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(peer);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("redis-server did not start listening on {port}")
}

pub fn bench(args: BenchArgs) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let cluster = runtime
        .block_on(LocalCluster::start(&LocalConfig {
            dir: None,
            listen: "127.0.0.1:0".parse().expect("address"),
            center_port: 0,
            nodes: larder::local::NODES_MIN,
            groups: args.groups,
            requirepass: None,
        }))
        .context("starting the local cluster")?;
    let port = cluster.proxy_address.port();
    // Let every group elect a leader before measuring.
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "redis-benchmark -t {} -n {} -c {} -P {}; Larder: 3 nodes, {} slot groups, 1 proxy, one process",
        args.tests, args.requests, args.clients, args.pipeline, args.groups
    );
    let Measured {
        rates: larder,
        errors: larder_errors,
    } = redis_benchmark(&args, port)?;
    runtime.block_on(cluster.stop());
    drop(runtime);

    let mut peers: Vec<(&str, Vec<(String, f64)>)> = Vec::new();
    if !args.no_peer {
        let dir = tempfile::tempdir().context("temporary directory for redis-server")?;
        for (name, durable) in [("redis always", true), ("redis no-persist", false)] {
            let peer = start_redis(dir.path(), durable)?;
            peers.push((name, redis_benchmark(&args, peer.port)?.rates));
        }
    }

    print!("{:<8} {:>12}", "test", "larder rps");
    for (name, _) in &peers {
        print!(" {:>18} {:>8}", format!("{name} rps"), "ratio");
    }
    println!();
    for (test, rps) in &larder {
        print!("{test:<8} {rps:>12.0}");
        for (_, results) in &peers {
            match results.iter().find(|(t, _)| t == test) {
                Some((_, peer)) => print!(" {peer:>18.0} {:>8.2}", rps / peer),
                None => print!(" {:>18} {:>8}", "-", "-"),
            }
        }
        println!();
    }
    if larder_errors.is_empty() {
        println!("errors: none");
        Ok(true)
    } else {
        println!("errors from Larder ({}):", larder_errors.len());
        for line in larder_errors.iter().take(10) {
            println!("  {line}");
        }
        Ok(false)
    }
}
