//! The hosts of a run, as registered with turmoil: storage nodes and center replicas (each a
//! process rebuilt around its persistent disk and clock on every start), proxies, workload
//! clients and the checker client; and [`NodeParts`], the handles the harness keeps on every
//! node process across crashes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_center::{CENTER_GROUP, Center, CenterConfig};
use larder_client::ClientConfig;
use larder_client::ClusterClient;
use larder_proxy::{Proxy, ProxyConfig};
use larder_storage::{NodeConfig, StorageNode};

use larder_core::env::{Clock, SeededRng, derive_seed};
use larder_core::{GroupId, NodeId};

use super::checks::{Final, Observers, check_final};
use super::config::{SimConfig, proxy_id};
use crate::clock::SimClock;
use crate::disk::SimDisk;
use crate::env::SimEnv;
use crate::net::{NetFaults, SimNet, SimTransport, host_name};
use crate::points::PointTable;
use crate::trace::{Trace, sim_now};
use crate::workload::{
    GROUP, PROXY_PORT, PipelinedClient, RespClient, SharedHistory, SharedResp, client_config,
    client_id, cluster_client, group_client, pipelined_process_id, run_client,
};
use larder_transport::Transport;

/// Where a node process publishes itself once started (empty while it is down), so the
/// harness and the checker can ask it about its groups.
pub(crate) type NodeSlot = Arc<Mutex<Option<Arc<StorageNode<SimEnv>>>>>;

/// Per-node handles the harness keeps across crashes: the disk and clock outlive the process.
pub(crate) struct NodeParts {
    pub(crate) id: NodeId,
    pub(crate) disk: SimDisk,
    pub(crate) clock: SimClock,
    pub(crate) slot: NodeSlot,
    pub(crate) up: bool,
    /// A center replica (not a storage node).
    pub(crate) center: bool,
    /// Destroyed by [`larder_faults::Fault::Destroy`]: never restarted.
    pub(crate) destroyed: bool,
    /// Why the process's last start failed, while it has not started since: the harness
    /// restarts it (`restart_fatal`), as a supervisor restarts a process that exited.
    pub(crate) start_failure: StartFailure,
}

/// Set by a node process whose start failed, taken by the harness when it restarts it.
pub(crate) type StartFailure = Arc<Mutex<Option<String>>>;

impl NodeParts {
    /// Kills the process: its host is dropped, and its disk keeps only what survives a crash.
    pub(crate) fn crash(&mut self, sim: &mut turmoil::Sim<'_>, rng: &mut SeededRng) {
        self.kill(sim);
        self.disk.crash(rng);
    }

    /// The machine loses power: the process dies and every write its disk had not synced is
    /// lost.
    pub(crate) fn power_loss(&mut self, sim: &mut turmoil::Sim<'_>, rng: &mut SeededRng) {
        self.kill(sim);
        self.disk.power_loss(rng);
    }

    /// The process is gone: its host dropped, its node unpublished, a failed start forgotten.
    fn kill(&mut self, sim: &mut turmoil::Sim<'_>) {
        sim.crash(host_name(self.id));
        self.slot.lock().expect("slot lock").take();
        self.start_failure
            .lock()
            .expect("start failure lock")
            .take();
        self.up = false;
    }

    /// Starts the process again from its disk.
    pub(crate) fn restart(&mut self, sim: &mut turmoil::Sim<'_>) {
        sim.bounce(host_name(self.id));
        self.up = true;
    }

    /// The running node, if the process is up and has started.
    pub(crate) fn node(&self) -> Option<Arc<StorageNode<SimEnv>>> {
        self.slot.lock().expect("slot lock").clone()
    }

    /// Whether the running node believes it leads `group`.
    pub(crate) fn leads(&self, group: GroupId) -> bool {
        self.slot
            .lock()
            .expect("slot lock")
            .as_ref()
            .is_some_and(|node| node.is_leader(group))
    }
}

/// The node that currently believes it leads the group, if any.
pub(crate) fn current_leader(parts: &[NodeParts]) -> Option<NodeId> {
    current_leader_of(parts, GROUP)
}

/// The node that currently believes it leads `group`, if any.
pub(crate) fn current_leader_of(parts: &[NodeParts], group: GroupId) -> Option<NodeId> {
    parts.iter().find(|p| p.leads(group)).map(|p| p.id)
}

/// The center replica that currently believes it leads the center group, if any.
pub(crate) fn center_leader(parts: &[NodeParts]) -> Option<usize> {
    parts.iter().position(|p| p.center && p.leads(CENTER_GROUP))
}

/// What a node process is.
#[derive(Clone)]
enum Role {
    /// A center replica; `forms`: it initializes the center group on its first start.
    Center { config: CenterConfig, forms: bool },
    /// A storage node, and the groups it forms (with their voters) on its first start.
    Storage {
        forms: Vec<(GroupId, BTreeSet<NodeId>)>,
    },
}

/// Registers one turmoil host per storage node and center replica. Each node's disk and clock
/// are created here and outlive crashes; the host closure builds a fresh process around them on
/// every (re)start.
pub(crate) fn register_nodes(
    sim: &mut turmoil::Sim<'_>,
    config: &SimConfig,
    trace: &Trace,
    net_faults: &NetFaults,
    points: &PointTable,
) -> Vec<NodeParts> {
    let centers = config.center_ids();
    config
        .node_ids()
        .into_iter()
        .chain(centers.iter().copied())
        .map(|id| register_node(sim, config, trace, net_faults, points, id))
        .collect()
}

/// Node `id`'s settings and role.
fn node_role(config: &SimConfig, id: NodeId) -> (NodeConfig, Role) {
    let centers = config.center_ids();
    let mut node_config = config.node.clone();
    node_config.sessions_max = config.sessions_max_of(id);
    node_config.bugs = config.bugs.clone();
    node_config.id = id;
    if centers.contains(&id) {
        node_config.groups = Vec::new();
        // The first center replica forms the center group on its first start.
        let forms = centers.first() == Some(&id);
        let role = Role::Center {
            config: config.center_config(),
            forms,
        };
        return (node_config, role);
    }
    // The groups this node forms on its first start: without a center, those it is the
    // first replica of; with one, none (the center places and forms every slot group).
    let forms = if config.centers > 0 {
        node_config.groups = Vec::new();
        node_config.centers = centers;
        Vec::new()
    } else {
        node_config.groups = config.groups_of(id);
        config
            .groups_of(id)
            .into_iter()
            .map(|group| (group, config.replicas_of(group)))
            .filter(|(_, replicas)| replicas.first() == Some(&id))
            .map(|(group, replicas)| (group, replicas.into_iter().collect()))
            .collect()
    };
    (node_config, Role::Storage { forms })
}

fn register_node(
    sim: &mut turmoil::Sim<'_>,
    config: &SimConfig,
    trace: &Trace,
    net_faults: &NetFaults,
    points: &PointTable,
    id: NodeId,
) -> NodeParts {
    let seed = config.seed;
    let disk = SimDisk::new(derive_seed(seed, 1000 + id));
    disk.set_trace(trace.clone(), host_name(id));
    let clock = SimClock::new();
    let slot: NodeSlot = Arc::default();
    let start_failure: StartFailure = Arc::default();
    let start_failure_h = start_failure.clone();
    let incarnation = Arc::new(AtomicU64::new(0));
    let (node_config, role) = node_role(config, id);
    let center = matches!(role, Role::Center { .. });
    let points_h = points.hook(id, disk.clone(), trace.clone());
    let (disk_h, clock_h, slot_h, faults_h, trace_h) = (
        disk.clone(),
        clock.clone(),
        slot.clone(),
        net_faults.clone(),
        trace.clone(),
    );
    sim.host(host_name(id), move || {
        let generation = incarnation.fetch_add(1, Ordering::SeqCst);
        let env = SimEnv {
            clock: clock_h.clone(),
            net: SimNet::new(
                id,
                faults_h.clone(),
                derive_seed(seed, (id << 16) | generation),
                trace_h.clone(),
            ),
            disk: disk_h.clone(),
            seed: derive_seed(seed, id),
            points: points_h.clone(),
        };
        let process = NodeProcess {
            id,
            generation,
            env,
            config: node_config.clone(),
            slot: slot_h.clone(),
            trace: trace_h.clone(),
            start_failure: start_failure_h.clone(),
        };
        let role = role.clone();
        async move {
            match role {
                Role::Center { config, forms } => process.run_center(config, forms).await,
                Role::Storage { forms } => process.run_storage(forms).await,
            }
        }
    });
    NodeParts {
        id,
        disk,
        clock,
        slot,
        up: true,
        center,
        destroyed: false,
        start_failure,
    }
}

/// One start of a node process.
struct NodeProcess {
    id: NodeId,
    /// 0 on the first start, then one more per restart.
    generation: u64,
    env: SimEnv,
    config: NodeConfig,
    slot: NodeSlot,
    trace: Trace,
    start_failure: StartFailure,
}

impl NodeProcess {
    /// Pause before trying a failed start again in the same process, for runs without a
    /// fault injector (which restarts the process at once, see [`NodeProcess::start_failed`]).
    const START_RETRY: Duration = Duration::from_millis(200);

    /// A start failed (on an injected disk error): a real process exits and its supervisor
    /// starts a new one, which opens the disk again. So the harness is told, and restarts
    /// the process (`restart_fatal`). Trying again in the same process, as this harness once
    /// did, never recovers from a disk poisoned by a failed sync (fjall refuses every write
    /// until it is opened again): one-group swarm seed 40 at 24 clients (`--swarm --seed 40
    /// --duration 20s --clients 24 --rate 600`) kept node 1 failing its start every 200 ms
    /// for the last eleven seconds, long after its disk healed, and its group, whose third
    /// replica had retired, could not commit.
    fn start_failed(&self, error: &dyn std::fmt::Display) {
        crate::trace_event!(
            self.trace,
            sim_now(),
            &host_name(self.id),
            "start failed: {error}"
        );
        *self.start_failure.lock().expect("start failure lock") = Some(error.to_string());
    }

    /// A start succeeded (a retry in the same process, before the harness restarted it): no
    /// restart is owed.
    fn started(&self) {
        self.start_failure
            .lock()
            .expect("start failure lock")
            .take();
    }

    async fn run_center(self, center_config: CenterConfig, forms: bool) -> turmoil::Result {
        let center = loop {
            match Center::start(self.env.clone(), self.config.clone(), center_config.clone()).await
            {
                Ok(center) => {
                    self.started();
                    break center;
                }
                Err(e) => {
                    self.start_failed(&e);
                    self.env.clock.sleep(Self::START_RETRY).await;
                }
            }
        };
        if self.generation == 0 && forms {
            center.initialize().await?;
        }
        *self.slot.lock().expect("slot lock") = Some(center.node().clone());
        center.serve().await?;
        Ok(())
    }

    async fn run_storage(self, forms: Vec<(GroupId, BTreeSet<NodeId>)>) -> turmoil::Result {
        let node = loop {
            match StorageNode::start(self.env.clone(), self.config.clone()).await {
                Ok(node) => {
                    self.started();
                    break node;
                }
                Err(e) => {
                    self.start_failed(&e);
                    self.env.clock.sleep(Self::START_RETRY).await;
                }
            }
        };
        // A group's first replica bootstraps it on its first start; later starts find it
        // initialized (the membership entry is in its log) and leave it alone.
        if self.generation == 0 {
            for (group, voters) in &forms {
                node.initialize(*group, voters).await?;
            }
        }
        *self.slot.lock().expect("slot lock") = Some(node.clone());
        node.serve().await?;
        Ok(())
    }
}

/// Every proxy incarnation of a run, held weakly, so the report can read the figures of
/// those still running at its end ([`ProxyTotals`]).
pub(crate) type ProxyTally = Arc<Mutex<Vec<std::sync::Weak<Proxy<SimNet, SimClock>>>>>;

/// What the proxies running at a run's end counted (a proxy that crashed took its figures
/// with it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProxyTotals {
    /// Writes refused by the per-key write limit.
    pub hot_key_refused_writes: u64,
    /// Reads of hot keys answered by an equal read's fetch.
    pub shared_reads: u64,
    /// Group sessions connections carried on from closed ones.
    pub sessions_resumed: u64,
    /// Batches of single commands of several connections, and the commands they held
    /// (`larder_proxy::coalesce`).
    pub coalesced_batches: u64,
    pub coalesced_commands: u64,
}

impl ProxyTotals {
    pub(crate) fn of(tally: &ProxyTally) -> ProxyTotals {
        let mut totals = ProxyTotals::default();
        for proxy in tally.lock().expect("proxy tally").iter() {
            if let Some(proxy) = proxy.upgrade() {
                let stats = proxy.stats();
                totals.hot_key_refused_writes += stats.hot_key_refused_writes;
                totals.shared_reads += stats.shared_reads;
                totals.sessions_resumed += stats.sessions_resumed;
                totals.coalesced_batches += stats.coalesced_batches;
                totals.coalesced_commands += stats.coalesced_commands;
            }
        }
        totals
    }
}

/// Registers the RESP proxies, each with a hook into the run's fault `points`.
pub(crate) fn register_proxies(
    sim: &mut turmoil::Sim<'_>,
    config: &SimConfig,
    trace: &Trace,
    net_faults: &NetFaults,
    points: &PointTable,
) -> ProxyTally {
    let seed = config.seed;
    let tally = ProxyTally::default();
    for index in 0..config.proxies {
        let id = proxy_id(index);
        let (faults, trace) = (net_faults.clone(), trace.clone());
        let sim_config = config.clone();
        let incarnation = Arc::new(AtomicU64::new(0));
        let tally = tally.clone();
        let points = points.diskless_hook(id, trace.clone());
        sim.host(host_name(id), move || {
            let generation = incarnation.fetch_add(1, Ordering::SeqCst);
            let net = SimNet::new(
                id,
                faults.clone(),
                derive_seed(seed, (id << 16) | generation),
                trace.clone(),
            );
            let proxy = Proxy::new(
                net,
                SimClock::new(),
                ProxyConfig {
                    client: client_config(&sim_config.bugs),
                    bugs: sim_config.bugs.clone(),
                    points: points.clone(),
                    hot_keys: larder_proxy::HotKeyConfig {
                        writes_per_sec_max: sim_config.hot_key_writes_per_sec_max,
                        share_reads_min_per_sec: sim_config.hot_key_share_reads_min_per_sec,
                        ..larder_proxy::HotKeyConfig::default()
                    },
                    coalesce_runners: sim_config.coalesce_runners,
                    ..ProxyConfig::default()
                },
                sim_config.shared_routing(),
            );
            tally
                .lock()
                .expect("proxy tally")
                .push(Arc::downgrade(&proxy));
            async move {
                // The client-facing listener is the same transport seam as the peers'.
                let listener = SimTransport.bind(PROXY_PORT).await?;
                proxy.serve(listener).await?;
                Ok(())
            }
        });
    }
    tally
}

/// Registers the workload clients: RESP through the proxies if there are any, else the cluster
/// SDK (several groups) or the group SDK (one group). Returns their ids.
pub(crate) fn register_clients(
    sim: &mut turmoil::Sim<'_>,
    config: &SimConfig,
    trace: &Trace,
    net_faults: &NetFaults,
    history: &SharedHistory,
) -> Vec<NodeId> {
    let seed = config.seed;
    let client_ids: Vec<NodeId> = (0..config.run_clients()).map(client_id).collect();
    for (index, &id) in client_ids.iter().enumerate() {
        let net = SimNet::new(
            id,
            net_faults.clone(),
            derive_seed(seed, id << 16),
            trace.clone(),
        );
        let (replicas, workload, history, trace, routing) = (
            config.node_ids(),
            config.client_workload(index as u64),
            history.clone(),
            trace.clone(),
            config.shared_routing(),
        );
        let client_seed = derive_seed(seed, 500 + index as u64);
        let until = config.duration;
        let (groups, proxies, pipelined) = (config.groups, config.proxies, config.pipelined);
        let reconnect_every = config.reconnect_every;
        let bugs = config.bugs.clone();
        sim.client(host_name(id), async move {
            if proxies > 0 && pipelined > 1 {
                // The host's processes share one connection (`SharedResp`): the first is the
                // host's id, the others get ids and seeds of their own.
                let connection = SharedResp::start(proxy_id(index as u64 % proxies));
                let mut others = Vec::new();
                for k in 1..pipelined {
                    others.push(tokio::spawn(run_client(
                        pipelined_process_id(id, k),
                        PipelinedClient::new(connection.clone()),
                        derive_seed(client_seed, k),
                        until,
                        workload.clone(),
                        history.clone(),
                        trace.clone(),
                    )));
                }
                let client = PipelinedClient::new(connection);
                run_client(id, client, client_seed, until, workload, history, trace).await;
                for other in others {
                    let _ = other.await;
                }
            } else if proxies > 0 {
                let client = RespClient::new(proxy_id(index as u64 % proxies))
                    .reconnecting_every(reconnect_every);
                run_client(id, client, client_seed, until, workload, history, trace).await;
            } else if groups > 1 {
                let client = cluster_client(net, routing, &bugs);
                run_client(id, client, client_seed, until, workload, history, trace).await;
            } else {
                let client = group_client(net, replicas, &bugs);
                run_client(id, client, client_seed, until, workload, history, trace).await;
            }
            Ok(())
        });
    }
    client_ids
}

/// Registers the checker client (see [`check_final`]), which fills `final_state`. Returns its
/// id.
pub(crate) fn register_checker(
    sim: &mut turmoil::Sim<'_>,
    config: &SimConfig,
    trace: &Trace,
    net_faults: &NetFaults,
    parts: &[NodeParts],
    final_state: &Arc<Mutex<Final>>,
    operator: Option<Arc<Mutex<super::OperatorLog>>>,
) -> NodeId {
    let checker_id = client_id(99);
    let net = SimNet::new(
        checker_id,
        net_faults.clone(),
        derive_seed(config.seed, checker_id << 16),
        trace.clone(),
    );
    let slots: Vec<(NodeId, NodeSlot)> = parts.iter().map(|p| (p.id, p.slot.clone())).collect();
    let disks: Vec<(NodeId, SimDisk)> = parts.iter().map(|p| (p.id, p.disk.clone())).collect();
    let (final_state, workload, routing) = (
        final_state.clone(),
        config.run_workload(),
        config.shared_routing(),
    );
    let timing = (config.heal_at(), config.duration, config.liveness);
    let archive = config.backup.then(|| {
        (
            Arc::new(Mutex::new(super::archive::Archive::new(
                config.sync,
                config.seed,
                config.bugs.clone(),
                config.sessions_max(),
            ))),
            config.seed,
        )
    });
    sim.client(host_name(checker_id), async move {
        if let Some((archive, _)) = &archive {
            tokio::spawn(super::archive::archive(
                slots.clone(),
                archive.clone(),
                timing.1,
            ));
        }
        let client = ClusterClient::new(
            net,
            SimClock::new(),
            routing,
            // Bounded, so a cluster that never serves again ends the run with a verdict (and
            // the group states in it) instead of running into the simulator's cap.
            ClientConfig {
                request_timeout: Duration::from_millis(1500),
                attempts_max: 10,
                ..ClientConfig::default()
            },
        );
        check_final(
            client,
            slots,
            disks,
            workload,
            timing,
            final_state,
            Observers { operator, archive },
        )
        .await;
        Ok(())
    });
    checker_id
}
