//! The center on the real environment (loopback TCP, fjall in temporary directories): three
//! center replicas, four storage nodes and four slot groups, every process on its own tokio
//! runtime so that stopping the runtime is a crash.
//!
//! - `center_bootstraps_repairs_and_rebalances`: the center writes the first routing table
//!   (three distinct replicas per group) and forms the groups; writes go through
//!   `ClusterClient`; a storage node is killed and every group it served gets a new replica
//!   set of three live nodes under a higher epoch (and the center leader's `GetStatus` shows
//!   the node down; the other replicas answer with the leader's id), with the data intact and
//!   writable; leaders end up balanced; the dead node comes back and its stale replicas are
//!   dropped.
//! - `center_survives_its_leader_and_serves_routing_from_followers`: the center leader is
//!   killed; the followers and an observer keep serving the routing table; a new center
//!   leader takes over and repairs a storage node killed afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use larder_center::{CENTER_GROUP, Center, CenterConfig};
use larder_client::fetch_routing;
use larder_client::{ClientConfig, ClientError};
use larder_client::{ClusterClient, SharedRouting};
use larder_core::env::Clock;
use larder_core::kv::{Command, Reply};
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use larder_protocol::{CenterResponse, ClusterStatus, Encoded, GetStatus, Liveness, call};
use larder_real::{AddressBook, FjallDisk, FjallOptions, RealEnv, TcpNet, TokioClock};
use larder_storage::{NodeConfig, StorageNode};

const CENTERS: [NodeId; 3] = [101, 102, 103];
const OBSERVER: NodeId = 201;
const STORAGE: [NodeId; 4] = [1, 2, 3, 4];
const GROUPS: u64 = 4;
const CLIENT: NodeId = 900;
const HEARTBEAT_MS: u64 = 200;

/// One process: its runtime and what runs on it.
struct Proc<T> {
    runtime: tokio::runtime::Runtime,
    handle: Arc<T>,
}

impl<T> Proc<T> {
    /// Kills the process: its tasks stop, its sockets close, its memory is gone.
    fn kill(self) {
        drop(self.handle);
        self.runtime.shutdown_timeout(Duration::from_secs(5));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn open_env(id: NodeId, dir: &Path, address: SocketAddr, book: &AddressBook) -> RealEnv {
    let net = TcpNet::bind(id, address, book.clone(), larder_real::test_auth(id))
        .await
        .expect("bind");
    let disk = FjallDisk::open(dir, &FjallOptions::default()).expect("open disk");
    RealEnv {
        clock: TokioClock::new(),
        net,
        disk,
        seed: id,
    }
}

fn center_config() -> CenterConfig {
    CenterConfig {
        observers: vec![OBSERVER],
        bootstrap_nodes_min: STORAGE.len(),
        heartbeat_ms: HEARTBEAT_MS,
        missed_heartbeats_max: 5,
        leader_move_cooldown_ms: 1_000,
        replace_timeout_ms: 1_500,
        stale_replica_ms: 2_000,
        ..CenterConfig::new(CENTERS.to_vec(), GROUPS)
    }
}

fn start_center(
    id: NodeId,
    dir: &Path,
    address: SocketAddr,
    book: &AddressBook,
) -> Proc<Center<RealEnv>> {
    let runtime = runtime();
    let (dir, book) = (dir.to_path_buf(), book.clone());
    let handle = runtime.block_on(async move {
        let env = open_env(id, &dir, address, &book).await;
        let center = Center::start(env, NodeConfig::new(id, vec![]), center_config())
            .await
            .expect("start center");
        let serving = center.clone();
        tokio::spawn(async move { serving.serve().await });
        center
    });
    Proc { runtime, handle }
}

fn start_storage(
    id: NodeId,
    dir: &Path,
    address: SocketAddr,
    book: &AddressBook,
) -> Proc<StorageNode<RealEnv>> {
    let runtime = runtime();
    let (dir, book) = (dir.to_path_buf(), book.clone());
    let handle = runtime.block_on(async move {
        let env = open_env(id, &dir, address, &book).await;
        let address = env
            .net
            .listen_address()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let config = NodeConfig {
            centers: CENTERS.to_vec(),
            center_heartbeat_ms: HEARTBEAT_MS,
            address,
            ..NodeConfig::new(id, vec![])
        };
        let node = StorageNode::start(env, config).await.expect("start node");
        let serving = node.clone();
        tokio::spawn(async move { serving.serve().await });
        node
    });
    Proc { runtime, handle }
}

struct Cluster {
    _dirs: Vec<tempfile::TempDir>,
    paths: BTreeMap<NodeId, PathBuf>,
    addresses: BTreeMap<NodeId, SocketAddr>,
    book: AddressBook,
    centers: BTreeMap<NodeId, Proc<Center<RealEnv>>>,
    nodes: BTreeMap<NodeId, Proc<StorageNode<RealEnv>>>,
    client: tokio::runtime::Runtime,
    net: TcpNet,
    clock: TokioClock,
}

impl Cluster {
    fn start() -> Cluster {
        let ids: Vec<NodeId> = CENTERS
            .iter()
            .chain(&[OBSERVER])
            .chain(&STORAGE)
            .copied()
            .collect();
        let dirs: Vec<tempfile::TempDir> = ids
            .iter()
            .map(|_| tempfile::tempdir().expect("dir"))
            .collect();
        let paths: BTreeMap<NodeId, PathBuf> = ids
            .iter()
            .zip(&dirs)
            .map(|(id, d)| (*id, d.path().to_path_buf()))
            .collect();
        let book = AddressBook::new();
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let mut centers = BTreeMap::new();
        for id in CENTERS.iter().chain(&[OBSERVER]) {
            centers.insert(*id, start_center(*id, &paths[id], any, &book));
        }
        let first = &centers[&CENTERS[0]];
        first
            .runtime
            .block_on(first.handle.initialize())
            .expect("initialize the center");
        let mut nodes = BTreeMap::new();
        for id in STORAGE {
            nodes.insert(id, start_storage(id, &paths[&id], any, &book));
        }
        let addresses = ids
            .iter()
            .map(|id| (*id, book.get(*id).expect("bound")))
            .collect();
        let client = tokio::runtime::Runtime::new().expect("client runtime");
        let (net, clock) = client.block_on(async {
            (
                TcpNet::client(CLIENT, book.clone(), larder_real::test_auth(CLIENT)),
                TokioClock::new(),
            )
        });
        Cluster {
            _dirs: dirs,
            paths,
            addresses,
            book,
            centers,
            nodes,
            client,
            net,
            clock,
        }
    }

    fn now(&self) -> Duration {
        self.clock.now()
    }

    /// Polls `probe` every 50 ms until it yields, failing after `limit`.
    fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut probe: impl FnMut(&Cluster) -> Option<T>,
    ) -> T {
        let deadline = self.now() + limit;
        loop {
            if let Some(found) = probe(self) {
                return found;
            }
            assert!(
                self.now() < deadline,
                "timed out after {limit:?} waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The routing table one process serves (`GetRouting`), if it answers.
    fn routing_from(&self, source: NodeId) -> Option<RoutingTable> {
        self.client
            .block_on(fetch_routing(
                &self.net,
                &[source],
                0,
                Duration::from_millis(500),
            ))
            .ok()
            .flatten()
    }

    /// What one process answers to `GetStatus`, if it answers.
    fn status_from(&self, source: NodeId) -> Option<CenterResponse<ClusterStatus>> {
        let request = Encoded::new(GetStatus);
        self.client
            .block_on(call(
                &self.net,
                source,
                &request,
                Duration::from_millis(500),
            ))
            .ok()
    }

    /// Group -> the live storage node leading it.
    fn leaders(&self) -> BTreeMap<GroupId, NodeId> {
        (1..=GROUPS)
            .filter_map(|group| {
                let leader = self.nodes.iter().find(|(_, n)| n.handle.is_leader(group))?;
                Some((group, *leader.0))
            })
            .collect()
    }

    fn center_leader(&self) -> Option<NodeId> {
        self.centers
            .iter()
            .find(|(_, c)| c.handle.is_leader())
            .map(|(id, _)| *id)
    }

    /// Every group of `table` has a leader among the live storage nodes, and that leader's
    /// voters are the table's replicas.
    fn groups_serve(&self, table: &RoutingTable) -> bool {
        table.groups().iter().all(|(group, route)| {
            self.nodes.values().any(|n| {
                n.handle.is_leader(*group)
                    && n.handle.raft(*group).is_ok_and(|raft| {
                        raft.voter_ids().collect::<BTreeSet<_>>()
                            == route.replicas.iter().copied().collect()
                    })
            })
        })
    }

    /// Waits for a routing table newer than `after` in which no group uses a node outside
    /// the live ones, every group has three distinct replicas, and every group serves.
    fn wait_for_healthy_routing(&self, after: u64, limit: Duration) -> RoutingTable {
        let live: BTreeSet<NodeId> = self.nodes.keys().copied().collect();
        self.wait_for("a healthy routing table", limit, |cluster| {
            let source = cluster.center_leader()?;
            let table = cluster.routing_from(source)?;
            let healthy = table.epoch() > after
                && table.groups().len() == GROUPS as usize
                && table.groups().values().all(|route| {
                    let distinct: BTreeSet<_> = route.replicas.iter().collect();
                    route.replicas.len() == 3
                        && distinct.len() == 3
                        && route.replicas.iter().all(|n| live.contains(n))
                });
            (healthy && cluster.groups_serve(&table)).then_some(table)
        })
    }

    /// Waits until every replica of every group reports the same state digest.
    fn wait_for_convergence(&self, table: &RoutingTable, limit: Duration) {
        self.wait_for("replicas to converge", limit, |cluster| {
            let converged = table.groups().iter().all(|(group, route)| {
                let digests: Vec<_> = route
                    .replicas
                    .iter()
                    .map(|id| {
                        let node = &cluster.nodes[id];
                        node.runtime.block_on(node.handle.state_digest(*group)).ok()
                    })
                    .collect();
                digests.iter().all(Option::is_some) && digests.windows(2).all(|w| w[0] == w[1])
            });
            converged.then_some(())
        });
    }

    fn kill_node(&mut self, id: NodeId) {
        self.nodes.remove(&id).expect("running node").kill();
    }

    fn kill_center(&mut self, id: NodeId) {
        self.centers.remove(&id).expect("running center").kill();
    }

    fn cluster_client(&self, routing: &SharedRouting) -> ClusterClient<TcpNet, TokioClock> {
        ClusterClient::new(
            self.net.clone(),
            self.clock,
            routing.clone(),
            ClientConfig::default(),
        )
    }

    fn stop(self) {
        for (_, center) in self.centers {
            center.runtime.block_on(center.handle.shutdown());
            center.kill();
        }
        for (_, node) in self.nodes {
            node.runtime.block_on(node.handle.shutdown());
            node.kill();
        }
        self.client.shutdown_timeout(Duration::from_secs(1));
    }
}

fn bulk(value: &str) -> Reply {
    Reply::Bulk(Bytes::copy_from_slice(value.as_bytes()))
}

/// Executes `command`, retrying while the cluster answers `Unavailable` (nothing happened, so
/// retrying is safe: a group still electing its first leader).
async fn execute(
    client: &mut ClusterClient<TcpNet, TokioClock>,
    clock: &TokioClock,
    command: Command,
) -> Reply {
    let deadline = clock.now() + Duration::from_secs(10);
    loop {
        match client.execute(command.clone()).await {
            Ok(reply) => return reply,
            Err(ClientError::Unavailable { reason }) if clock.now() < deadline => {
                tracing::debug!(%reason, "retrying");
                clock.sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("{} failed: {error}", command.name()),
        }
    }
}

fn write_keys(cluster: &Cluster, client: &mut ClusterClient<TcpNet, TokioClock>, prefix: &str) {
    cluster.client.block_on(async {
        for i in 0..40 {
            let reply = execute(
                client,
                &cluster.clock,
                Command::set(format!("key-{i}"), format!("{prefix}-{i}")),
            )
            .await;
            assert_eq!(reply, Reply::Ok);
        }
    });
}

fn check_keys(cluster: &Cluster, client: &mut ClusterClient<TcpNet, TokioClock>, prefix: &str) {
    cluster.client.block_on(async {
        for i in 0..40 {
            let reply = execute(client, &cluster.clock, Command::get(format!("key-{i}"))).await;
            assert_eq!(reply, bulk(&format!("{prefix}-{i}")), "key-{i}");
        }
    });
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

fn groups_of(table: &RoutingTable, node: NodeId) -> BTreeSet<GroupId> {
    table
        .groups()
        .iter()
        .filter(|(_, r)| r.replicas.contains(&node))
        .map(|(g, _)| *g)
        .collect()
}

#[test]
fn center_bootstraps_repairs_and_rebalances() {
    let mut cluster = Cluster::start();
    let started = cluster.now();

    // Bootstrap: epoch 1, three distinct live replicas per group, every group formed.
    let table = cluster.wait_for_healthy_routing(0, Duration::from_secs(10));
    assert_eq!(table.epoch(), 1, "{table:?}");
    let routing = SharedRouting::new(table.clone());
    let mut client = cluster.cluster_client(&routing);
    write_keys(&cluster, &mut client, "before");
    eprintln!("bootstrapped and wrote in {:?}", cluster.now() - started);

    // Kill a storage node: every group it served gets a new replica set.
    let victim = busiest(&table);
    let affected = groups_of(&table, victim);
    assert!(!affected.is_empty());
    cluster.kill_node(victim);
    let killed_at = cluster.now();
    let repaired = cluster.wait_for_healthy_routing(table.epoch(), Duration::from_secs(12));
    eprintln!(
        "node {victim} replaced in {affected:?} after {:?}, epoch {}",
        cluster.now() - killed_at,
        repaired.epoch()
    );
    for group in &affected {
        let route = repaired.route(*group).expect("group");
        assert!(!route.replicas.contains(&victim), "{route:?}");
    }
    // The center leader's status shows the victim down and the groups on the survivors; the
    // other replicas point at the leader, and a storage node is no center.
    let leader = cluster.center_leader().expect("a center leader");
    let status = cluster.wait_for(
        "the victim down in the status",
        Duration::from_secs(5),
        |cluster| match cluster.status_from(leader)? {
            CenterResponse::Ok(status) => (status.epoch >= repaired.epoch()
                && status
                    .nodes
                    .iter()
                    .any(|n| n.id == victim && n.liveness == Liveness::Down))
            .then_some(status),
            _ => None,
        },
    );
    assert_eq!(status.center_leader, leader);
    assert_eq!(status.groups.len(), GROUPS as usize);
    assert!(
        status
            .groups
            .iter()
            .all(|g| !g.replicas.contains(&victim) && !g.slots.is_empty()),
        "{status:?}"
    );
    for follower in CENTERS.iter().filter(|id| **id != leader) {
        let answer = cluster.status_from(*follower);
        assert!(
            matches!(answer, Some(CenterResponse::NotLeader { leader_hint: Some(hint) }) if hint == leader),
            "center {follower}: {answer:?}"
        );
    }
    let storage = *cluster.nodes.keys().next().expect("a survivor");
    assert!(matches!(
        cluster.status_from(storage),
        Some(CenterResponse::Unavailable { .. })
    ));
    // Groups the victim did not serve kept their replicas.
    for (group, route) in table.groups() {
        if !affected.contains(group) {
            assert_eq!(
                repaired.route(*group).expect("group").replicas,
                route.replicas
            );
        }
    }
    // The old data is there, on every new replica too, and new writes work.
    assert!(routing.offer(repaired.clone()));
    check_keys(&cluster, &mut client, "before");
    cluster.wait_for_convergence(&repaired, Duration::from_secs(5));
    write_keys(&cluster, &mut client, "after");
    check_keys(&cluster, &mut client, "after");

    // Leaders pile up on one survivor (as after crashes and recoveries); the center spreads
    // them out again until counts differ by at most one.
    let pile = *cluster.nodes.keys().next().expect("a survivor");
    let mut seen_on_pile = BTreeSet::new();
    cluster.wait_for("leaders piled up", Duration::from_secs(5), |cluster| {
        for (group, leader) in cluster.leaders() {
            if leader == pile {
                seen_on_pile.insert(group);
            } else if !seen_on_pile.contains(&group) {
                let node = &cluster.nodes[&leader];
                let raft = node.handle.raft(group).ok()?;
                let _ = node.runtime.block_on(raft.trigger().transfer_leader(pile));
            }
        }
        (seen_on_pile.len() == GROUPS as usize).then_some(())
    });
    let piled_at = cluster.now();
    let balanced = cluster.wait_for("balanced leaders", Duration::from_secs(8), |cluster| {
        let leaders = cluster.leaders();
        if leaders.len() != GROUPS as usize {
            return None;
        }
        let mut counts: BTreeMap<NodeId, usize> = cluster.nodes.keys().map(|id| (*id, 0)).collect();
        for leader in leaders.values() {
            *counts.get_mut(leader).expect("live") += 1;
        }
        let (min, max) = (counts.values().min()?, counts.values().max()?);
        (max - min <= 1).then_some(leaders)
    });
    eprintln!(
        "leaders rebalanced after {:?}: {balanced:?}",
        cluster.now() - piled_at
    );

    // The victim comes back from its disk: it is up again, its replicas of groups that
    // replaced it are dropped, and, now the least busy node, it takes replicas back (replica
    // balancing) until it hosts exactly what the newest table gives it.
    let (path, address) = (cluster.paths[&victim].clone(), cluster.addresses[&victim]);
    let back = start_storage(victim, &path, address, &cluster.book);
    cluster.nodes.insert(victim, back);
    let back_at = cluster.now();
    assert!(
        !cluster.nodes[&victim].handle.groups().is_empty(),
        "the victim reopens its old replicas"
    );
    cluster.wait_for(
        "stale replicas dropped and the victim balanced again",
        Duration::from_secs(30),
        |cluster| {
            let hosted: BTreeSet<GroupId> =
                cluster.nodes[&victim].handle.groups().into_iter().collect();
            let newest = CENTERS
                .iter()
                .filter_map(|center| cluster.routing_from(*center))
                .max_by_key(RoutingTable::epoch)?;
            let expected = groups_of(&newest, victim);
            let counts = newest.replica_counts();
            let (low, high) = (counts.values().min()?, counts.values().max()?);
            (hosted == expected && high - low <= 1 && !expected.is_empty()).then_some(())
        },
    );
    eprintln!(
        "victim back and its stale replicas dropped after {:?}",
        cluster.now() - back_at
    );
    eprintln!("whole test took {:?}", cluster.now() - started);
    cluster.stop();
}

#[test]
fn center_survives_its_leader_and_serves_routing_from_followers() {
    let mut cluster = Cluster::start();
    let started = cluster.now();
    let table = cluster.wait_for_healthy_routing(0, Duration::from_secs(10));
    let routing = SharedRouting::new(table.clone());
    let mut client = cluster.cluster_client(&routing);
    write_keys(&cluster, &mut client, "before");
    // The observer follows the center group and serves the same table.
    cluster.wait_for("the observer's table", Duration::from_secs(5), |cluster| {
        (cluster.routing_from(OBSERVER)? == table).then_some(())
    });

    // Kill the center leader: the survivors serve the table at once, before any election.
    let leader = cluster.center_leader().expect("a center leader");
    cluster.kill_center(leader);
    for source in CENTERS
        .iter()
        .filter(|id| **id != leader)
        .chain(&[OBSERVER])
    {
        let served = cluster
            .routing_from(*source)
            .expect("a follower serves the routing table");
        assert_eq!(served, table, "from {source}");
    }
    let new_leader = cluster.wait_for("a new center leader", Duration::from_secs(5), |cluster| {
        cluster.center_leader().filter(|id| CENTERS.contains(id))
    });
    assert_ne!(new_leader, leader);
    assert!(
        cluster.centers[&new_leader]
            .handle
            .node()
            .hosts(CENTER_GROUP),
        "a center replica hosts the center group"
    );

    // The new leader still repairs: kill a storage node.
    let victim = busiest(&table);
    cluster.kill_node(victim);
    let killed_at = cluster.now();
    let repaired = cluster.wait_for_healthy_routing(table.epoch(), Duration::from_secs(12));
    eprintln!(
        "repaired by the new center leader after {:?}",
        cluster.now() - killed_at
    );
    assert!(
        repaired
            .groups()
            .values()
            .all(|r| !r.replicas.contains(&victim))
    );
    // Followers and the observer catch up with the new epoch.
    cluster.wait_for(
        "followers, the observer and storage nodes at the new epoch",
        Duration::from_secs(5),
        |cluster| {
            // (`centers` holds the observer too; storage nodes learn the table from their
            // heartbeats' answers and serve it as well.)
            let sources: Vec<NodeId> = cluster
                .centers
                .keys()
                .chain(cluster.nodes.keys())
                .copied()
                .collect();
            sources
                .iter()
                .all(|s| {
                    cluster
                        .routing_from(*s)
                        .is_some_and(|t| t.epoch() >= repaired.epoch())
                })
                .then_some(())
        },
    );
    for node in cluster.nodes.values() {
        let learned = node
            .handle
            .routing()
            .expect("a storage node learned the table");
        assert!(learned.epoch() >= repaired.epoch());
    }
    assert!(routing.offer(repaired));
    check_keys(&cluster, &mut client, "before");
    write_keys(&cluster, &mut client, "after");
    check_keys(&cluster, &mut client, "after");
    eprintln!("whole test took {:?}", cluster.now() - started);
    cluster.stop();
}
