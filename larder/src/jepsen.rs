//! `larder jepsen`: a Jepsen-style run on real processes. Three `larder node` processes and one
//! `larder proxy` on loopback; every node-to-node and proxy-to-node connection goes through a
//! fault-injecting TCP relay in this process, so partitions (including one-way ones: a relay
//! carries one caller's connections to one callee) cut real sockets. A nemesis kills nodes with
//! SIGKILL and restarts them, pauses them with SIGSTOP/SIGCONT, and partitions them; clients
//! speak RESP to the proxy and record a history (`history.jsonl`), which the same checker as
//! the simulator's judges.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use larder_core::env::{Rng, SeededRng};
use larder_core::resp::{self, Frame};
use larder_workloads::checker::{Budget, CheckConfig, check_history};
use larder_workloads::driver::{Driver, Executor, Request, Response, Timer, WorkloadConfig};
use larder_workloads::history::History;
use tokio::net::TcpStream;

use crate::bench::free_port;
use crate::relay::Relay;

#[derive(Args, Debug, Clone)]
pub struct JepsenArgs {
    /// How long the workload and nemesis run (then everything heals and is checked).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub time_limit: Duration,
    /// Seeds the nemesis schedule and the workload's choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    pub clients: u64,
    /// Slot groups.
    #[arg(long, default_value_t = 4)]
    pub groups: u64,
    /// Where to keep data, logs and history.jsonl (default: a temporary directory, removed).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the cluster with three center replicas (nodes get their groups and addresses from
    /// the center), and add a migration nemesis: it moves slot ranges between groups, splits
    /// groups and cancels migrations while the clients run, besides kill -9 and SIGSTOP of
    /// nodes and of the center leader. (No relays in this mode: nodes advertise their own
    /// addresses, so there are no partitions.)
    #[arg(long)]
    pub center: bool,
}

const NODES: [u64; 3] = [1, 2, 3];
const PROXY: u64 = 1001;

/// `port` on 127.0.0.1.
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

struct Processes {
    exe: PathBuf,
    dir: PathBuf,
    nodes: BTreeMap<u64, Child>,
    centers: BTreeMap<u64, Child>,
    proxy: Option<Child>,
}

impl Processes {
    fn spawn(&self, role: &str, config: &Path, log: &str) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(log))?;
        Command::new(&self.exe)
            .args([role, "--config"])
            .arg(config)
            .env(
                larder_real::SECRET_FILE_VAR,
                self.dir.join(larder_real::SECRET_FILE_NAME),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting larder {role}"))
    }

    fn start_node(&mut self, id: u64) -> anyhow::Result<()> {
        let child = self.spawn(
            "node",
            &self.dir.join(format!("node-{id}.toml")),
            &format!("node-{id}.log"),
        )?;
        self.nodes.insert(id, child);
        Ok(())
    }

    fn start_center(&mut self, id: u64) -> anyhow::Result<()> {
        let child = self.spawn(
            "center",
            &self.dir.join(format!("center-{id}.toml")),
            &format!("center-{id}.log"),
        )?;
        self.centers.insert(id, child);
        Ok(())
    }

    fn kill_center(&mut self, id: u64) {
        if let Some(mut child) = self.centers.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every node, then the proxy (its config is `proxy.toml`).
    fn start_nodes_and_proxy(&mut self) -> anyhow::Result<()> {
        for id in NODES {
            self.start_node(id)?;
        }
        self.proxy = Some(self.spawn("proxy", &self.dir.join("proxy.toml"), "proxy.log")?);
        Ok(())
    }

    /// kill -9 of node `id`, restarted after `hold_ms`.
    fn bounce_node(&mut self, id: u64, hold_ms: u64) -> anyhow::Result<()> {
        self.kill_node(id);
        std::thread::sleep(Duration::from_millis(hold_ms));
        self.start_node(id)
    }

    /// SIGSTOP of node `id` for `hold_ms`.
    fn pause_node(&self, id: u64, hold_ms: u64) {
        self.signal(id, "-STOP");
        std::thread::sleep(Duration::from_millis(hold_ms));
        self.signal(id, "-CONT");
    }

    /// Every node running and resumed.
    fn heal_nodes(&mut self) -> anyhow::Result<()> {
        for id in NODES {
            self.signal(id, "-CONT");
            if !self.nodes.contains_key(&id) {
                self.start_node(id)?;
            }
        }
        Ok(())
    }

    fn kill_node(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.remove(&id) {
            // SIGKILL: no shutdown path runs, unsynced data is gone.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, id: u64, signal: &str) {
        if let Some(child) = self.nodes.get(&id) {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in self
            .nodes
            .values_mut()
            .chain(self.centers.values_mut())
            .chain(self.proxy.as_mut())
        {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Milliseconds since the run started: real time, the history's clock.
#[derive(Clone, Copy)]
struct Epoch(std::time::Instant);

impl Epoch {
    #[allow(clippy::disallowed_methods)] // A real-process run measures real time.
    fn start() -> Epoch {
        Epoch(std::time::Instant::now())
    }
    fn ns(self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// A client's connection to the proxy (reopened after errors), one request at a time.
struct ProxyConnection {
    proxy: SocketAddr,
    connection: Option<(TcpStream, Vec<u8>)>,
}

impl Executor for ProxyConnection {
    async fn execute(&mut self, request: &Request) -> Response {
        if self.connection.is_none()
            && let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(self.proxy)).await
        {
            self.connection = Some((stream, Vec::new()));
        }
        let Some((stream, buffer)) = self.connection.as_mut() else {
            return request.lost("cannot connect to the proxy".into());
        };
        let commands = request.resp_commands();
        let last = commands.len() - 1;
        for (step, command) in commands.iter().enumerate() {
            // Before a transaction's EXEC nothing has run: a lost connection discards it.
            let lost = |reason: String| {
                if step < last {
                    Response::Failed(reason)
                } else {
                    request.lost(reason)
                }
            };
            let frame =
                match tokio::time::timeout(Duration::from_secs(10), send(stream, buffer, command))
                    .await
                {
                    Ok(Ok(frame)) => frame,
                    Ok(Err(error)) => {
                        self.connection = None;
                        return lost(error.to_string());
                    }
                    Err(_) => {
                        self.connection = None;
                        return lost("no reply in 10 s".into());
                    }
                };
            if step == last {
                return Response::from_frame(frame);
            }
            if let Some(response) = request.resp_step(step, frame) {
                // A half-queued transaction must not meet the next request's commands.
                self.connection = None;
                return response;
            }
        }
        unreachable!("resp_commands is never empty")
    }
}

impl Timer for Epoch {
    fn now_ns(&self) -> u64 {
        self.ns()
    }

    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

async fn send(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    args: &[impl AsRef<[u8]>],
) -> std::io::Result<Frame> {
    let mut out = Vec::new();
    resp::encode_request(args, &mut out);
    larder_proxy::round_trip(stream, buffer, &out).await
}

/// One client: the workload driver over its own connection to the proxy.
async fn client(
    process: u64,
    proxy: SocketAddr,
    seed: u64,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
    epoch: Epoch,
) {
    let connection = ProxyConnection {
        proxy,
        connection: None,
    };
    Driver::new(process, WorkloadConfig::jepsen(), seed, connection, epoch)
        .run(&history, || !stop.load(Ordering::SeqCst), |_| {})
        .await;
}

fn write_configs(
    dir: &Path,
    groups: u64,
    ports: &BTreeMap<u64, u16>,
    relays: &BTreeMap<(u64, u64), u16>,
) -> anyhow::Result<()> {
    for id in NODES {
        let peers: Vec<String> = NODES
            .iter()
            .filter(|&&peer| peer != id)
            .map(|peer| {
                format!(
                    "{{ id = {peer}, address = \"127.0.0.1:{}\" }}",
                    relays[&(id, *peer)]
                )
            })
            .collect();
        let text = format!(
            "id = {id}\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\ngroups = {groups}\ninitialize = {}\npeers = [{}]\n",
            ports[&id],
            dir.join(format!("data-{id}")).display(),
            id == 1,
            peers.join(", ")
        );
        std::fs::write(dir.join(format!("node-{id}.toml")), text)?;
    }
    let nodes: Vec<String> = NODES
        .iter()
        .map(|node| {
            format!(
                "{{ id = {node}, address = \"127.0.0.1:{}\" }}",
                relays[&(PROXY, *node)]
            )
        })
        .collect();
    let text = format!(
        "id = {PROXY}\nlisten = \"127.0.0.1:{}\"\ngroups = {groups}\nnodes = [{}]\n",
        ports[&PROXY],
        nodes.join(", ")
    );
    std::fs::write(dir.join("proxy.toml"), text)?;
    Ok(())
}

pub fn jepsen(args: JepsenArgs) -> anyhow::Result<bool> {
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("larder-jepsen-")
                .tempdir()?,
        ),
    };
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("temp dir").path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (history, log) = if args.center {
        with_center(&args, &dir, &runtime)?
    } else {
        with_relays(&args, &dir, &runtime)?
    };

    let path = dir.join("history.jsonl");
    history.write_jsonl_file(&path)?;
    for line in &log {
        outln!("{line}");
    }
    // The checker is offline tooling: a wall-clock budget is what a user waits for.
    #[allow(clippy::disallowed_methods)]
    let budget = Budget::until(std::time::Instant::now() + Duration::from_secs(60));
    let report = check_history(&history, &CheckConfig::default(), &budget)
        .context("pairing the history's operations")?;
    let valid = !report.is_not_linearizable();
    outln!("operations      {}", history.len() / 2);
    outln!("history         {}", path.display());
    out!("verdict         {report}");
    if temp.is_some() && valid {
        drop(temp);
    } else if let Some(temp) = temp {
        // Keep the evidence of a failed run.
        let kept = temp.keep();
        outln!("kept            {}", kept.display());
    }
    Ok(valid)
}

fn processes(dir: &Path) -> anyhow::Result<Processes> {
    // Every process of the run authenticates with this directory's secret.
    larder_real::ensure_secret_file(&dir.join(larder_real::SECRET_FILE_NAME))?;
    Ok(Processes {
        exe: std::env::current_exe().context("finding the larder binary")?,
        dir: dir.to_path_buf(),
        nodes: BTreeMap::new(),
        centers: BTreeMap::new(),
        proxy: None,
    })
}

/// Waits (bounded) until the cluster behind `proxy` takes a write.
fn wait_ready(
    runtime: &tokio::runtime::Runtime,
    proxy: SocketAddr,
    dir: &Path,
) -> anyhow::Result<()> {
    let ready = runtime.block_on(async {
        for _ in 0..150 {
            if let Ok(mut stream) = TcpStream::connect(proxy).await {
                let mut buffer = Vec::new();
                if let Ok(Ok(Frame::Simple(_))) = tokio::time::timeout(
                    Duration::from_secs(2),
                    send(&mut stream, &mut buffer, &["SET", "jepsen:ready", "1"]),
                )
                .await
                {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    if !ready {
        bail!(
            "the cluster never accepted a write; logs in {}",
            dir.display()
        );
    }
    Ok(())
}

/// The workload clients, each on its own connection to the proxy, until stopped.
struct Clients {
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<History>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    fn start(
        runtime: &tokio::runtime::Runtime,
        args: &JepsenArgs,
        proxy: SocketAddr,
        epoch: Epoch,
    ) -> Clients {
        let history = Arc::new(Mutex::new(History::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..args.clients)
            .map(|process| {
                runtime.spawn(client(
                    process,
                    proxy,
                    larder_core::env::derive_seed(args.seed, 100 + process),
                    stop.clone(),
                    history.clone(),
                    epoch,
                ))
            })
            .collect();
        Clients {
            stop,
            history,
            tasks,
        }
    }

    fn finish(self, runtime: &tokio::runtime::Runtime) -> History {
        self.stop.store(true, Ordering::SeqCst);
        runtime.block_on(async {
            for task in self.tasks {
                let _ = task.await;
            }
        });
        std::mem::take(&mut *self.history.lock().expect("history lock"))
    }
}

/// Static groups on three nodes, every connection through a relay the nemesis can cut.
fn with_relays(
    args: &JepsenArgs,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<(History, Vec<String>)> {
    let mut ports = BTreeMap::new();
    for id in NODES.into_iter().chain([PROXY]) {
        ports.insert(id, free_port()?);
    }
    let mut relay_ports = BTreeMap::new();
    for from in NODES.into_iter().chain([PROXY]) {
        for to in NODES {
            if from != to {
                relay_ports.insert((from, to), free_port()?);
            }
        }
    }
    let relays: BTreeMap<(u64, u64), Relay> = runtime.block_on(async {
        let mut relays = BTreeMap::new();
        for (&(from, to), &port) in &relay_ports {
            let (listen, target) = (loopback(port), loopback(ports[&to]));
            relays.insert(
                (from, to),
                Relay::bind(listen, target, Relay::MAX_CONNECTIONS).await?,
            );
        }
        anyhow::Ok(relays)
    })?;
    write_configs(dir, args.groups, &ports, &relay_ports)?;
    let mut processes = processes(dir)?;
    processes.start_nodes_and_proxy()?;
    let proxy: SocketAddr = format!("127.0.0.1:{}", ports[&PROXY]).parse()?;
    wait_ready(runtime, proxy, dir)?;
    outln!(
        "larder jepsen: 3 nodes, {} groups, {} clients, {:?}; data and logs in {}",
        args.groups,
        args.clients,
        args.time_limit,
        dir.display()
    );
    let epoch = Epoch::start();
    let clients = Clients::start(runtime, args, proxy, epoch);

    // The nemesis, on this thread, against the wall clock.
    let mut rng = SeededRng::new(args.seed);
    let mut log = Vec::new();
    let deadline = args.time_limit;
    let elapsed = || Duration::from_nanos(epoch.ns());
    let pause = |ms: u64| std::thread::sleep(Duration::from_millis(ms));
    while elapsed() + Duration::from_secs(6) < deadline {
        pause(rng.range(1500, 4000));
        let node = NODES[rng.below(3) as usize];
        let hold = rng.range(1000, 4000);
        match rng.below(4) {
            0 => {
                log.push(format!(
                    "{:>7.1}s kill -9 node {node}, restart after {hold} ms",
                    elapsed().as_secs_f64()
                ));
                processes.bounce_node(node, hold)?;
            }
            1 => {
                log.push(format!(
                    "{:>7.1}s SIGSTOP node {node} for {hold} ms",
                    elapsed().as_secs_f64()
                ));
                processes.pause_node(node, hold);
            }
            2 => {
                log.push(format!(
                    "{:>7.1}s isolate node {node} for {hold} ms",
                    elapsed().as_secs_f64()
                ));
                for ((from, to), relay) in &relays {
                    if *from == node || *to == node {
                        relay.set_blocked(true);
                    }
                }
                pause(hold);
                relays.values().for_each(|relay| relay.set_blocked(false));
            }
            _ => {
                let to = NODES[(NODES.iter().position(|&n| n == node).expect("node") + 1) % 3];
                log.push(format!(
                    "{:>7.1}s one-way cut node {node} -> node {to} for {hold} ms",
                    elapsed().as_secs_f64()
                ));
                relays[&(node, to)].set_blocked(true);
                pause(hold);
                relays[&(node, to)].set_blocked(false);
            }
        }
    }
    // Heal everything, let the clients run on a healthy cluster, then stop them.
    relays.values().for_each(|relay| relay.set_blocked(false));
    processes.heal_nodes()?;
    pause(deadline.saturating_sub(elapsed()).as_millis() as u64);
    let history = clients.finish(runtime);
    drop(processes);
    Ok((history, log))
}

const CENTERS: [u64; 3] = [101, 102, 103];
/// Heartbeats of the center mode: quick failure detection for a minute-long run.
const CENTER_HEARTBEAT_MS: u64 = 200;

fn write_center_configs(dir: &Path, groups: u64, ports: &BTreeMap<u64, u16>) -> anyhow::Result<()> {
    let list = |ids: &[u64]| {
        let entries: Vec<String> = ids
            .iter()
            .map(|id| format!("{{ id = {id}, address = \"127.0.0.1:{}\" }}", ports[id]))
            .collect();
        format!("centers = [{}]", entries.join(", "))
    };
    let centers = list(&CENTERS);
    for id in CENTERS {
        let text = format!(
            "id = {id}\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\ngroups = {groups}\n\
             initialize = {}\nbootstrap_nodes_min = {}\nheartbeat_ms = {CENTER_HEARTBEAT_MS}\n\
             missed_heartbeats_max = 5\n{centers}\n",
            ports[&id],
            dir.join(format!("data-{id}")).display(),
            id == CENTERS[0],
            NODES.len(),
        );
        std::fs::write(dir.join(format!("center-{id}.toml")), text)?;
    }
    for id in NODES {
        let text = format!(
            "id = {id}\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n\
             heartbeat_ms = {CENTER_HEARTBEAT_MS}\n{centers}\n",
            ports[&id],
            dir.join(format!("data-{id}")).display(),
        );
        std::fs::write(dir.join(format!("node-{id}.toml")), text)?;
    }
    let text = format!(
        "id = {PROXY}\nlisten = \"127.0.0.1:{}\"\n{centers}\n",
        ports[&PROXY]
    );
    std::fs::write(dir.join("proxy.toml"), text)?;
    Ok(())
}

/// Three center replicas, three nodes and a proxy that learn groups, addresses and routing
/// from the center; the nemesis adds migrations (moves, splits, cancels) to kill -9 and
/// SIGSTOP of nodes and centers.
fn with_center(
    args: &JepsenArgs,
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<(History, Vec<String>)> {
    use crate::admin::{CenterAddress, Centers, ask_center};
    use larder_protocol::{
        GetMigrations, GetStatus, Migration, MoveSlots, SplitGroup, Steer, SteerMigration,
    };

    let mut ports = BTreeMap::new();
    for id in CENTERS.into_iter().chain(NODES).chain([PROXY]) {
        ports.insert(id, free_port()?);
    }
    write_center_configs(dir, args.groups, &ports)?;
    let mut processes = processes(dir)?;
    for id in CENTERS {
        processes.start_center(id)?;
    }
    processes.start_nodes_and_proxy()?;
    let proxy: SocketAddr = format!("127.0.0.1:{}", ports[&PROXY]).parse()?;
    wait_ready(runtime, proxy, dir)?;
    outln!(
        "larder jepsen --center: 3 centers, 3 nodes, {} groups, {} clients, {:?}; data and logs in {}",
        args.groups,
        args.clients,
        args.time_limit,
        dir.display()
    );
    let centers = Centers {
        addresses: CENTERS
            .iter()
            .map(|id| CenterAddress {
                id: Some(*id),
                address: SocketAddr::from(([127, 0, 0, 1], ports[id])),
            })
            .collect(),
        key: larder_real::ensure_secret_file(&dir.join(larder_real::SECRET_FILE_NAME))?,
    };
    let limit = Duration::from_secs(5);

    let epoch = Epoch::start();
    let clients = Clients::start(runtime, args, proxy, epoch);
    let mut rng = SeededRng::new(args.seed);
    let mut log = Vec::new();
    let deadline = args.time_limit;
    let elapsed = || Duration::from_nanos(epoch.ns());
    let pause = |ms: u64| std::thread::sleep(Duration::from_millis(ms));
    let mut started: Vec<u64> = Vec::new();
    while elapsed() + Duration::from_secs(6) < deadline {
        pause(rng.range(1500, 4000));
        let at = elapsed().as_secs_f64();
        let node = NODES[rng.below(3) as usize];
        let hold = rng.range(1000, 4000);
        match rng.below(6) {
            0 => {
                log.push(format!(
                    "{at:>7.1}s kill -9 node {node}, restart after {hold} ms"
                ));
                processes.bounce_node(node, hold)?;
            }
            1 => {
                log.push(format!("{at:>7.1}s SIGSTOP node {node} for {hold} ms"));
                processes.pause_node(node, hold);
            }
            2 => {
                let center = CENTERS[rng.below(3) as usize];
                log.push(format!(
                    "{at:>7.1}s kill -9 center {center}, restart after {hold} ms"
                ));
                processes.kill_center(center);
                pause(hold);
                processes.start_center(center)?;
            }
            3 | 4 => {
                // Move a random run of one group's slots to another group, or split a group.
                let Ok(status) =
                    ask_center::<_, larder_protocol::ClusterStatus>(&centers, limit, GetStatus)
                else {
                    log.push(format!("{at:>7.1}s migration: no center answered"));
                    continue;
                };
                let groups: Vec<_> = status
                    .groups
                    .iter()
                    .filter(|g| !g.slots.is_empty())
                    .collect();
                if groups.len() < 2 {
                    continue;
                }
                let from = groups[rng.below(groups.len() as u64) as usize];
                let outcome = if rng.below(4) == 0 {
                    ask_center::<_, Migration>(&centers, limit, SplitGroup { group: from.group })
                        .map(|m| {
                            format!(
                                "split group {}: migration {} to new group {}",
                                from.group, m.id, m.to
                            )
                        })
                } else {
                    let to = groups
                        .iter()
                        .map(|g| g.group)
                        .filter(|g| *g != from.group)
                        .nth(rng.below(groups.len() as u64 - 1) as usize)
                        .expect("another group");
                    let (first, last) = from.slots[rng.below(from.slots.len() as u64) as usize];
                    let a = first + rng.below(u64::from(last - first) + 1) as u16;
                    let b = a.saturating_add(rng.below(512) as u16).min(last);
                    ask_center::<_, Migration>(
                        &centers,
                        limit,
                        MoveSlots {
                            ranges: vec![(a, b)],
                            to,
                        },
                    )
                    .map(|m| {
                        format!(
                            "move slots {a}-{b} from group {} to group {to}: migration {}",
                            from.group, m.id
                        )
                    })
                };
                match outcome {
                    Ok(text) => {
                        if let Some(id) = text
                            .split("migration ")
                            .nth(1)
                            .and_then(|t| t.split_whitespace().next())
                            .and_then(|t| t.parse().ok())
                        {
                            started.push(id);
                        }
                        log.push(format!("{at:>7.1}s {text}"));
                    }
                    Err(error) => log.push(format!("{at:>7.1}s migration refused: {error:#}")),
                }
            }
            _ => {
                let Some(&id) = started.last() else { continue };
                let answer = ask_center::<_, Migration>(
                    &centers,
                    limit,
                    SteerMigration {
                        id,
                        steer: Steer::Cancel,
                    },
                );
                log.push(format!(
                    "{at:>7.1}s cancel migration {id}: {}",
                    match answer {
                        Ok(migration) => migration.phase.name().to_string(),
                        Err(error) => format!("{error:#}"),
                    }
                ));
            }
        }
    }
    // Heal: everything running and resumed; the clients go on while the migrations end.
    processes.heal_nodes()?;
    for id in CENTERS {
        if !processes.centers.contains_key(&id) {
            processes.start_center(id)?;
        }
    }
    pause(deadline.saturating_sub(elapsed()).as_millis() as u64);
    let mut ended = None;
    for _ in 0..120 {
        if let Ok(all) = ask_center::<_, Vec<Migration>>(&centers, limit, GetMigrations)
            && all.iter().all(|m| !m.phase.is_active())
        {
            ended = Some(all);
            break;
        }
        pause(500);
    }
    let history = clients.finish(runtime);
    match ended {
        Some(all) => {
            let done = all
                .iter()
                .filter(|m| matches!(m.phase, larder_protocol::MigrationPhase::Done { .. }))
                .count();
            log.push(format!(
                "migrations      {} ended: {done} done, {} rolled back",
                all.len(),
                all.len() - done
            ));
        }
        None => log.push("migrations      NOT ENDED within 60 s of the heal".to_string()),
    }
    drop(processes);
    Ok((history, log))
}
