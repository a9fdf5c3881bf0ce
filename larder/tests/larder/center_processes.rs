//! The roles as separate processes: three `larder center`, four (later five) `larder node`
//! (center mode) and one `larder proxy` process on loopback, each from its own TOML file,
//! driven through the proxy with the `redis` crate.
//!
//! No file names a storage node but its own: node files list only the centers (no `peers`),
//! the proxy's file lists only the centers (no `nodes`). Every address a node or the proxy
//! needs comes from the center's registry (heartbeat and routing answers).
//!
//! `center_processes_replace_a_killed_node`: the center bootstraps the routing table and forms
//! the groups; 100 keys are written through the proxy; a fifth storage node joins (scale-out:
//! nobody's file lists it) and the center hands its address out; the storage node with the
//! most replicas is killed with SIGKILL; the center marks it down and replaces its replicas on
//! the newcomer (the live node with the fewest replicas) under newer routing epochs, which
//! needs the groups' leaders to reach it; once leadership is rebalanced onto it, the proxy
//! picks the new table up (`INFO` reports `routing_epoch`), every key is still readable and
//! new writes succeed, which needs the proxy to reach it; then every process exits cleanly on
//! SIGTERM.
//!
//! Every process also serves its Prometheus metrics (`metrics_listen` in its file); the test
//! scrapes each role's endpoint over HTTP and checks named metrics move with the load and the
//! repair: the proxy's string commands, each node's group-commit rounds and groups, the
//! center leader's routing epoch and the storage nodes it counts down.

// A real-process test: real time, real threads.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use larder_client::{Client, ClientConfig};
use larder_client::{Fetched, fetch_routing_answer};
use larder_core::kv::Command as KvCommand;
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use larder_real::{AddressBook, TcpNet, TokioClock};

const CENTERS: [NodeId; 3] = [101, 102, 103];
/// The storage nodes started with the cluster.
const NODES: [NodeId; 4] = [1, 2, 3, 4];
/// A storage node started later.
const SPARE: NodeId = 5;
const PROXY: NodeId = 1001;
const GROUPS: u64 = 8;
const HEARTBEAT_MS: u64 = 200;
const KEYS: usize = 100;

/// The running processes; killed (and their logs' tails printed) if the test fails.
struct Cluster {
    dir: PathBuf,
    addresses: BTreeMap<NodeId, SocketAddr>,
    /// Each process's metrics endpoint.
    metrics: BTreeMap<NodeId, SocketAddr>,
    children: BTreeMap<NodeId, Child>,
    runtime: tokio::runtime::Runtime,
    /// The test's own endpoint: knows the centers, and the storage nodes only to check who
    /// leads what (no process under test shares it).
    net: TcpNet,
}

fn role(id: NodeId) -> &'static str {
    if CENTERS.contains(&id) {
        "center"
    } else if id == PROXY {
        "proxy"
    } else {
        "node"
    }
}

fn peers(addresses: &BTreeMap<NodeId, SocketAddr>, ids: &[NodeId]) -> String {
    let entries: Vec<String> = ids
        .iter()
        .map(|id| format!("{{ id = {id}, address = \"{}\" }}", addresses[id]))
        .collect();
    format!("[{}]", entries.join(", "))
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        // Distinct free ports: hold every listener until all are chosen.
        let ids: Vec<NodeId> = CENTERS
            .iter()
            .chain(&NODES)
            .chain(&[SPARE, PROXY])
            .copied()
            .collect();
        let listeners: Vec<std::net::TcpListener> = ids
            .iter()
            .chain(&ids)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
            .collect();
        let ports: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("address"))
            .collect();
        let addresses: BTreeMap<NodeId, SocketAddr> =
            ids.iter().copied().zip(ports.iter().copied()).collect();
        let metrics: BTreeMap<NodeId, SocketAddr> = ids
            .iter()
            .copied()
            .zip(ports[ids.len()..].iter().copied())
            .collect();
        drop(listeners);
        let centers = format!("centers = {}", peers(&addresses, &CENTERS));
        for id in CENTERS {
            let text = format!(
                "id = {id}\nlisten = \"{}\"\ndata_dir = \"{}\"\ngroups = {GROUPS}\ninitialize = {}\n\
                 bootstrap_nodes_min = {}\nheartbeat_ms = {HEARTBEAT_MS}\nmissed_heartbeats_max = 5\n\
                 metrics_listen = \"{}\"\n{centers}\n",
                addresses[&id],
                dir.join(format!("center-{id}")).display(),
                id == CENTERS[0],
                NODES.len(),
                metrics[&id],
            );
            std::fs::write(dir.join(format!("center-{id}.toml")), text).expect("write config");
        }
        // No peers: the other nodes' addresses come from the center.
        for id in NODES.iter().chain(&[SPARE]) {
            let text = format!(
                "id = {id}\nlisten = \"{}\"\ndata_dir = \"{}\"\nheartbeat_ms = {HEARTBEAT_MS}\n\
                 metrics_listen = \"{}\"\n{centers}\n",
                addresses[id],
                dir.join(format!("node-{id}")).display(),
                metrics[id],
            );
            std::fs::write(dir.join(format!("node-{id}.toml")), text).expect("write config");
        }
        // No nodes: their addresses come with the routing answers.
        let text = format!(
            "id = {PROXY}\nlisten = \"{}\"\nmetrics_listen = \"{}\"\n{centers}\n",
            addresses[&PROXY], metrics[&PROXY],
        );
        std::fs::write(dir.join(format!("proxy-{PROXY}.toml")), text).expect("write config");

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let book = AddressBook::new();
        for id in CENTERS.iter().chain(&NODES).chain(&[SPARE]) {
            book.insert(*id, addresses[id]);
        }
        let net =
            runtime.block_on(async { TcpNet::client(900, book, larder_real::test_auth(900)) });
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            addresses,
            metrics,
            children: BTreeMap::new(),
            runtime,
            net,
        };
        for id in ids.into_iter().filter(|id| *id != SPARE) {
            cluster.spawn(id);
        }
        cluster
    }

    fn spawn(&mut self, id: NodeId) {
        let name = format!("{}-{id}", role(id));
        let log = File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_larder"))
            .env(larder_real::SECRET_VAR, larder_real::TEST_SECRET)
            .arg(role(id))
            .arg("--config")
            .arg(self.dir.join(format!("{name}.toml")))
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn larder");
        self.children.insert(id, child);
    }

    /// SIGKILL: no shutdown, unsynced state lost.
    fn kill(&mut self, id: NodeId) {
        let mut child = self.children.remove(&id).expect("running");
        child.kill().expect("kill");
        child.wait().expect("reap");
    }

    /// SIGTERM to every process; each must exit successfully within 15 s.
    fn stop(mut self) {
        for child in self.children.values() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill -TERM");
            assert!(status.success());
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        let children = std::mem::take(&mut self.children);
        for (id, mut child) in children {
            loop {
                if let Some(status) = child.try_wait().expect("wait") {
                    assert!(status.success(), "{} {id} exited with {status}", role(id));
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    panic!("{} {id} did not stop on SIGTERM", role(id));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The routing table and node addresses the center replicas serve (the first that
    /// answers).
    fn answer(&self) -> Option<Fetched> {
        self.runtime
            .block_on(fetch_routing_answer(
                &self.net,
                &CENTERS,
                0,
                Duration::from_millis(500),
            ))
            .ok()
    }

    /// The routing table the center replicas serve (the first that answers).
    fn routing(&self) -> Option<RoutingTable> {
        self.answer().and_then(|answer| answer.table)
    }

    /// Whether `node` leads `group`: it serves a read itself (a follower answers `NotLeader`,
    /// and one attempt follows no hint).
    fn leads(&self, node: NodeId, group: GroupId) -> bool {
        let config = ClientConfig {
            request_timeout: Duration::from_millis(500),
            attempts_max: 1,
            ..ClientConfig::default()
        };
        let mut client = Client::new(
            self.net.clone(),
            TokioClock::new(),
            group,
            vec![node],
            config,
        );
        self.runtime
            .block_on(client.execute(KvCommand::DbSize))
            .is_ok()
    }

    fn redis_url(&self) -> String {
        format!("redis://{}/", self.addresses[&PROXY])
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for id in CENTERS.iter().chain(&NODES).chain(&[SPARE, PROXY]) {
                let name = format!("{}-{id}", role(*id));
                let text = std::fs::read_to_string(self.dir.join(format!("{name}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- {name}.log (last 20 lines)");
                for line in &lines[lines.len().saturating_sub(20)..] {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Polls `probe` every 100 ms until it yields, failing after `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A Redis connection to the proxy that reconnects after errors, and retries a command until
/// it succeeds or `limit` passes. Retrying is safe here: `-TRYAGAIN` means nothing happened,
/// and the writes set fixed values, so one that went through twice changes nothing.
struct Redis {
    url: String,
    connection: Option<redis::Connection>,
}

impl Redis {
    fn new(url: String) -> Redis {
        Redis {
            url,
            connection: None,
        }
    }

    fn retry<T: redis::FromRedisValue>(&mut self, command: &redis::Cmd, limit: Duration) -> T {
        let deadline = Instant::now() + limit;
        loop {
            let result = self.connect().and_then(|c| command.query::<T>(c));
            match result {
                Ok(value) => return value,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "{command:?} kept failing for {limit:?}: {error}"
                    );
                    if !matches!(error.kind(), redis::ErrorKind::Server(_)) {
                        self.connection = None;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn connect(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.connection.is_none() {
            let client = redis::Client::open(self.url.as_str())?;
            let connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
            connection.set_read_timeout(Some(Duration::from_secs(10)))?;
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("connected"))
    }

    fn routing_epoch(&mut self) -> u64 {
        let info: String = self.retry(&redis::cmd("INFO"), Duration::from_secs(10));
        info.lines()
            .find_map(|line| line.strip_prefix("routing_epoch:"))
            .and_then(|epoch| epoch.trim().parse().ok())
            .unwrap_or_else(|| panic!("no routing_epoch in INFO: {info}"))
    }
}

/// Process `id`'s metrics page (`GET /metrics`, as Prometheus or `curl` asks for it).
fn scrape(cluster: &Cluster, id: NodeId) -> String {
    use std::io::{Read, Write};
    let address = cluster.metrics[&id];
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{} {id}'s metrics at {address}: {e}", role(id)));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n").expect("request");
    let mut page = String::new();
    stream.read_to_string(&mut page).expect("page");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    page
}

/// The sum of the samples of metric `name` (the whole name, `_total` and all) whose labels
/// include every one of `labels`; `None` if there is none.
fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = match rest.strip_prefix('{') {
            Some(rest) => match rest.split_once("} ") {
                Some(parts) => parts,
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(value) => ("", value),
                None => continue,
            },
        };
        if labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        }) {
            let value: f64 = value.trim().parse().expect("a number");
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// The center replicas' metric `name`, summed (a gauge only the leader reports, or reports as
/// 1, sums to the leader's figure).
fn centers_sum(cluster: &Cluster, name: &str, labels: &[(&str, &str)]) -> f64 {
    CENTERS
        .iter()
        .map(|id| sample(&scrape(cluster, *id), name, labels).unwrap_or(0.0))
        .sum()
}

fn set(key: &str, value: &str) -> redis::Cmd {
    let mut command = redis::cmd("SET");
    command.arg(key).arg(value);
    command
}

fn get(key: &str) -> redis::Cmd {
    let mut command = redis::cmd("GET");
    command.arg(key);
    command
}

/// The storage node hosting the most replicas in `table` (ties: lowest id).
fn busiest(table: &RoutingTable) -> NodeId {
    table
        .replica_counts()
        .into_iter()
        .max_by_key(|(id, count)| (*count, std::cmp::Reverse(*id)))
        .map(|(id, _)| id)
        .expect("replicas")
}

#[test]
fn center_processes_replace_a_killed_node() {
    let dir = tempfile::tempdir().expect("dir");
    let started = Instant::now();
    let mut cluster = Cluster::start(dir.path());
    let mut redis = Redis::new(cluster.redis_url());

    // The center bootstraps once the four nodes heartbeat; the proxy fetches the table.
    let table = wait_for("the first routing table", Duration::from_secs(20), || {
        cluster
            .routing()
            .filter(|t| t.groups().len() == GROUPS as usize)
    });
    assert!(
        table.groups().values().all(|r| {
            r.replicas.len() == 3 && r.replicas.iter().collect::<BTreeSet<_>>().len() == 3
        }),
        "{table:?}"
    );
    let proxy_label = PROXY.to_string();
    let string_sets = |page: &str| {
        sample(
            page,
            "larder_proxy_commands_total",
            &[("family", "string"), ("node", &proxy_label)],
        )
        .expect("the proxy counts string commands")
    };
    let sets_before = string_sets(&scrape(&cluster, PROXY));
    let syncs = |cluster: &Cluster, id: NodeId| {
        sample(&scrape(cluster, id), "larder_node_sync_writes_count", &[])
            .expect("a node counts its sync rounds")
    };
    let syncs_before: Vec<f64> = NODES.iter().map(|id| syncs(&cluster, *id)).collect();
    for i in 0..KEYS {
        let () = redis.retry(
            &set(&format!("key-{i}"), &format!("value-{i}")),
            Duration::from_secs(15),
        );
    }
    eprintln!(
        "bootstrapped and wrote {KEYS} keys after {:?}",
        started.elapsed()
    );
    // The metrics moved with the load: every SET counted at the proxy, every node synced.
    let proxy_page = scrape(&cluster, PROXY);
    assert!(
        string_sets(&proxy_page) >= sets_before + KEYS as f64,
        "{proxy_page}"
    );
    assert!(
        sample(
            &proxy_page,
            "larder_proxy_command_duration_seconds_count",
            &[("family", "string")]
        )
        .is_some_and(|count| count >= KEYS as f64),
        "{proxy_page}"
    );
    for (id, before) in NODES.iter().zip(&syncs_before) {
        let page = scrape(&cluster, *id);
        let after = sample(&page, "larder_node_sync_writes_count", &[]).expect("sync rounds");
        assert!(after > *before, "node {id}: {before} -> {after}\n{page}");
        let groups = sample(&page, "larder_node_groups", &[]).expect("groups hosted");
        assert!(groups >= 1.0, "node {id}\n{page}");
        let journal = sample(&page, "larder_disk_journal_bytes", &[]).expect("journal bytes");
        assert!(journal > 0.0, "node {id}\n{page}");
    }
    // Every SET was one log entry some leader committed; leaders report their followers' lag.
    let pages: Vec<String> = NODES.iter().map(|id| scrape(&cluster, *id)).collect();
    let entries: f64 = pages
        .iter()
        .filter_map(|page| sample(page, "larder_node_entry_commands_count", &[]))
        .sum();
    assert!(entries >= KEYS as f64, "{entries} entries\n{}", pages[0]);
    // Every SET ran in a leader's fast write lane; each node shows its four lanes' queues.
    let fast_writes: f64 = pages
        .iter()
        .filter_map(|page| {
            sample(
                page,
                "larder_node_lane_admitted_total",
                &[("lane", "write_fast")],
            )
        })
        .sum();
    assert!(fast_writes >= KEYS as f64, "{fast_writes}\n{}", pages[0]);
    for page in &pages {
        for lane in ["read_fast", "read_slow", "write_fast", "write_slow"] {
            assert!(
                sample(page, "larder_node_lane_queued", &[("lane", lane)]).is_some(),
                "no queue depth of lane {lane}\n{page}"
            );
        }
    }
    assert!(
        pages
            .iter()
            .any(|page| sample(page, "larder_node_group_follower_lag_entries", &[]).is_some()),
        "no leader reports its followers' lag\n{}",
        pages[0]
    );
    // One center replica leads, and its routing epoch is the table's.
    assert_eq!(centers_sum(&cluster, "larder_center_leader", &[]), 1.0);
    assert!(
        CENTERS.iter().any(
            |id| sample(&scrape(&cluster, *id), "larder_center_routing_epoch", &[])
                == Some(table.epoch() as f64)
        ),
        "no center reports epoch {}",
        table.epoch()
    );
    assert!(redis.routing_epoch() >= table.epoch());
    // The center hands out the registered nodes' addresses (what the proxy and the nodes,
    // whose files list none, reached each other by).
    let addresses = cluster.addresses.clone();
    let expected = |ids: &[NodeId]| -> Vec<(NodeId, String)> {
        ids.iter()
            .map(|id| (*id, addresses[id].to_string()))
            .collect()
    };
    let answer = cluster.answer().expect("a routing answer");
    assert_eq!(answer.addresses, expected(&NODES));

    // Scale-out: a fifth node joins; its address reaches the center's registry and is handed
    // out. Nothing is placed on it yet.
    cluster.spawn(SPARE);
    let with_spare: Vec<NodeId> = NODES.iter().chain(&[SPARE]).copied().collect();
    wait_for(
        "the new node's address from the center",
        Duration::from_secs(15),
        || {
            cluster
                .answer()
                .filter(|a| a.addresses == expected(&with_spare))
        },
    );
    eprintln!("node {SPARE} registered after {:?}", started.elapsed());

    // SIGKILL the storage node with the most replicas.
    let victim = busiest(&table);
    let hosted = table
        .groups()
        .values()
        .filter(|r| r.replicas.contains(&victim))
        .count();
    assert!(hosted > 0);
    cluster.kill(victim);
    let killed = Instant::now();

    // The center declares it down and replaces each of its replicas (one epoch per group), on
    // the newcomer: the live node with the fewest replicas. Its groups' leaders learned its
    // address from the center.
    let live: BTreeSet<NodeId> = with_spare
        .iter()
        .copied()
        .filter(|n| *n != victim)
        .collect();
    let repaired = wait_for(
        "the victim's replicas replaced",
        Duration::from_secs(30),
        || {
            cluster.routing().filter(|t| {
                t.epoch() > table.epoch()
                    && t.groups().len() == GROUPS as usize
                    && t.groups().values().all(|r| {
                        r.replicas.len() == 3
                            && r.replicas.iter().collect::<BTreeSet<_>>().len() == 3
                            && r.replicas.iter().all(|n| live.contains(n))
                    })
            })
        },
    );
    // The center leader's metrics show the repair: a newer epoch, one node down.
    wait_for(
        "the center's metrics after the repair",
        Duration::from_secs(10),
        || {
            let epoch = CENTERS
                .iter()
                .filter_map(|id| sample(&scrape(&cluster, *id), "larder_center_routing_epoch", &[]))
                .fold(0.0, f64::max);
            let down = centers_sum(
                &cluster,
                "larder_center_storage_nodes",
                &[("liveness", "down")],
            );
            (epoch >= repaired.epoch() as f64 && down == 1.0).then_some(())
        },
    );
    eprintln!(
        "node {victim} ({hosted} replicas) replaced after {:?}, epoch {} -> {}",
        killed.elapsed(),
        table.epoch(),
        repaired.epoch()
    );
    let on_spare: Vec<GroupId> = repaired
        .groups()
        .iter()
        .filter(|(_, r)| r.replicas.contains(&SPARE))
        .map(|(g, _)| *g)
        .collect();
    assert!(
        !on_spare.is_empty(),
        "no replica on the new node {SPARE}: {repaired:?}"
    );
    // The cluster is calm again: the center moves leadership onto the newcomer, so requests
    // for its groups must reach it (the proxy knows its address only from the center).
    let led = wait_for(
        "the new node leading a group",
        Duration::from_secs(20),
        || {
            on_spare
                .iter()
                .copied()
                .find(|group| cluster.leads(SPARE, *group))
        },
    );
    eprintln!(
        "node {SPARE} leads group {led} after {:?}",
        killed.elapsed()
    );
    // The metrics show the repairs and the leaders that changed (seen by the live replicas).
    assert!(
        centers_sum(&cluster, "larder_center_repairs_started_total", &[]) >= hosted as f64,
        "fewer repairs counted than the {hosted} replicas replaced"
    );
    wait_for(
        "a leader change in the metrics",
        Duration::from_secs(10),
        || {
            let changes: f64 = live
                .iter()
                .filter_map(|id| {
                    sample(
                        &scrape(&cluster, *id),
                        "larder_node_group_leader_changes_total",
                        &[],
                    )
                })
                .sum();
            (changes >= 1.0).then_some(())
        },
    );
    // The proxy follows (background refresh, or on the first failing request).
    wait_for("the proxy's routing epoch", Duration::from_secs(10), || {
        (redis.routing_epoch() >= repaired.epoch()).then_some(())
    });

    // Every key survived; new writes go through.
    for i in 0..KEYS {
        let value: Option<String> = redis.retry(&get(&format!("key-{i}")), Duration::from_secs(15));
        assert_eq!(
            value.as_deref(),
            Some(format!("value-{i}").as_str()),
            "key-{i}"
        );
    }
    for i in 0..KEYS {
        let () = redis.retry(
            &set(&format!("after-{i}"), &format!("new-{i}")),
            Duration::from_secs(15),
        );
    }
    for i in (0..KEYS).step_by(7) {
        let value: Option<String> =
            redis.retry(&get(&format!("after-{i}")), Duration::from_secs(15));
        assert_eq!(value.as_deref(), Some(format!("new-{i}").as_str()));
    }
    let size: i64 = redis.retry(&redis::cmd("DBSIZE"), Duration::from_secs(15));
    assert_eq!(size, 2 * KEYS as i64);
    eprintln!("checked after {:?} in total", started.elapsed());
    drop(redis);
    cluster.stop();
}
