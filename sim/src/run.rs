//! One seeded simulation run of a 3-node slot group: build it, drive clients and a fault plan,
//! check the outcome, and report.
//!
//! The life of a run (see ARCHITECTURE.md): seed everything from the run seed -> register the
//! node hosts and client hosts with turmoil -> step the simulation tick by tick, applying the
//! fault plan at its times and restarting nodes whose Raft stopped on a disk error -> at the
//! heal point repair everything -> after the workload, a checker client reads every key and
//! every replica's state digest -> checks -> [`RunReport`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_center::{CENTER_GROUP, Center, CenterConfig};
use larder_core::env::{Clock, Rng, SeededRng, derive_seed};
use larder_core::kv::{Command, Reply};
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use larder_faults::{Fault, FaultPlan, PlanConfig, Roles};
use larder_storage::{NodeConfig, StorageNode};
use serde::Serialize;

use crate::clock::SimClock;
use crate::disk::SimDisk;
use crate::env::SimEnv;
use crate::net::{NetFaults, SimNet, host_name};
use crate::trace::{Trace, sim_now};
use crate::workload::{
    GROUP, History, OpKind, OpRecord, OpStatus, PROXY_PORT, RespClient, WorkloadConfig, client_id,
    cluster_client, counter_key, group_client, register_key, run_client,
};
use larder_client::{ClusterClient, SharedRouting};
use larder_proxy::{Proxy, ProxyConfig};
use larder_workloads::checker::{Budget, CheckConfig, check_history};

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    pub seed: u64,
    /// Simulated time the clients run for. Faults stop `liveness` before the end.
    pub duration: Duration,
    /// How long after the heal point the cluster has to serve again.
    pub liveness: Duration,
    pub nodes: u64,
    /// The first `voters` nodes form the group; the rest start empty (spares for membership
    /// changes).
    pub voters: u64,
    pub clients: u64,
    pub workload: WorkloadConfig,
    /// `None`: generate the plan from the seed with [`PlanConfig::default`] (or the seed's
    /// swarm mix, with `swarm`).
    pub plan: Option<FaultPlan>,
    /// Generate the plan with [`PlanConfig::swarm`]: each seed picks its own fault mix.
    pub swarm: bool,
    pub faults: bool,
    /// Keep every trace event in memory (needed to name the first divergence).
    pub keep_events: bool,
    /// Per-node settings (ids are filled in per node).
    pub node: NodeConfig,
    /// Simulated time per turmoil step: every step polls every host, so this sets the
    /// simulator's speed against the resolution of message timing.
    pub tick: Duration,
    /// Slot groups. 1: the single group of `voters` nodes (spares host it empty). More: the
    /// 16384 slots are spread over them and each has three replicas on distinct nodes.
    pub groups: u64,
    /// RESP proxies in front of the cluster. 0: clients use the client SDK directly.
    pub proxies: u64,
    /// Center replicas (ids from [`center_id`]). 0: a static routing table and groups formed
    /// by the harness. More: storage nodes start empty, the center places the groups, and
    /// proxies and the checker fetch routing from it; faults then target roles too.
    pub centers: u64,
}

impl SimConfig {
    pub const TICK_MS_DEFAULT: u64 = 1;

    pub fn new(seed: u64, duration: Duration) -> Self {
        let mut node = NodeConfig::new(0, vec![GROUP]);
        // Small snapshot interval so every run exercises snapshot build, install and purge.
        node.snapshot_logs_since_last = 300;
        node.snapshot_logs_kept = 50;
        SimConfig {
            seed,
            duration,
            liveness: Duration::from_secs(10).min(duration / 2),
            nodes: 3,
            voters: 3,
            clients: 3,
            workload: WorkloadConfig::default(),
            plan: None,
            swarm: false,
            faults: true,
            keep_events: false,
            node,
            tick: Duration::from_millis(Self::TICK_MS_DEFAULT),
            groups: 1,
            proxies: 0,
            centers: 0,
        }
    }

    /// The whole cluster: three center replicas, `nodes` storage nodes, `groups` slot groups
    /// of three replicas each placed by the center, `proxies` proxies, clients speaking RESP to
    /// the proxies.
    pub fn cluster(seed: u64, duration: Duration, nodes: u64, groups: u64, proxies: u64) -> Self {
        let mut config = SimConfig::new(seed, duration);
        config.nodes = nodes.max(3);
        config.voters = 3;
        config.groups = groups.max(1);
        config.proxies = proxies;
        config.centers = 3;
        // Heartbeats every 250 ms, down after 6 missed: a destroyed node is replaced within a
        // few simulated seconds, while a node paused or cut off for less than 1.5 s is not.
        config.node.center_heartbeat_ms = 250;
        config.clients = 4;
        config.workload.register_keys = 8;
        config.workload.counter_keys = 4;
        config
    }

    /// The replicas of `group`: the first `voters` nodes for the single-group setup, else three
    /// consecutive nodes (round-robin), which keeps a group's replicas on distinct nodes.
    pub fn replicas_of(&self, group: GroupId) -> Vec<NodeId> {
        if self.groups <= 1 {
            return self
                .node_ids()
                .into_iter()
                .take(self.voters as usize)
                .collect();
        }
        let nodes = self.nodes.max(3);
        (0..3).map(|i| (group - 1 + i) % nodes + 1).collect()
    }

    /// The groups node `id` hosts (in the single-group setup every node hosts the group, the
    /// ones beyond `voters` as empty spares).
    pub fn groups_of(&self, id: NodeId) -> Vec<GroupId> {
        if self.groups <= 1 {
            return vec![GROUP];
        }
        (1..=self.groups)
            .filter(|&group| self.replicas_of(group).contains(&id))
            .collect()
    }

    /// The routing table clients and proxies use without a center.
    pub fn routing(&self) -> RoutingTable {
        RoutingTable::even(self.groups.max(1), |group| self.replicas_of(group))
    }

    fn heal_at(&self) -> Duration {
        self.duration.saturating_sub(self.liveness)
    }

    /// The plan this run applies.
    pub fn plan(&self) -> FaultPlan {
        let heal_at_ms = self.heal_at().as_millis() as u64;
        match (&self.plan, self.faults) {
            (_, false) => FaultPlan::none(heal_at_ms),
            (Some(plan), true) => plan.clone(),
            (None, true) => {
                let mix = if self.swarm {
                    PlanConfig::swarm(self.seed)
                } else {
                    PlanConfig::default()
                };
                if self.centers > 0 {
                    let roles = Roles {
                        storage: self.node_ids(),
                        centers: self.center_ids(),
                        proxies: (0..self.proxies).map(proxy_id).collect(),
                    };
                    FaultPlan::generate_roles(self.seed, &roles, heal_at_ms, &mix)
                } else {
                    FaultPlan::generate(self.seed, &self.node_ids(), heal_at_ms, &mix)
                }
            }
        }
    }

    /// Storage node ids.
    pub fn node_ids(&self) -> Vec<NodeId> {
        (1..=self.nodes).collect()
    }

    /// Center replica ids.
    pub fn center_ids(&self) -> Vec<NodeId> {
        (0..self.centers).map(center_id).collect()
    }

    /// The settings of the simulated center: quick failure detection (see
    /// [`SimConfig::cluster`]), repairs short enough for a run.
    pub fn center_config(&self) -> CenterConfig {
        CenterConfig {
            heartbeat_ms: self.node.center_heartbeat_ms,
            missed_heartbeats_max: 6,
            replace_timeout_ms: 10_000,
            stale_replica_ms: 20_000,
            ..CenterConfig::new(self.center_ids(), self.groups.max(1))
        }
    }

    /// The routing the proxies and the checker start from: fetched from the center, or static.
    pub fn shared_routing(&self) -> SharedRouting {
        if self.centers > 0 {
            SharedRouting::from_sources(self.center_ids())
        } else {
            SharedRouting::new(self.routing())
        }
    }
}

/// Counts of operations by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
}

/// What a run did and found.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub seed: u64,
    pub sim_seconds: f64,
    pub wall_seconds: f64,
    pub ops: OpCounts,
    /// Faults applied, by kind (including automatic restarts after a disk error stopped Raft).
    pub faults: BTreeMap<String, u64>,
    /// The plan the run applied.
    pub plan: FaultPlan,
    /// Every fault as applied: (simulated ms, kind, description), for timelines.
    pub fault_log: Vec<(u64, String, String)>,
    pub trace_hash: String,
    pub trace_events: u64,
    /// Broken invariants; empty for a passing run.
    pub violations: Vec<String>,
    /// The linearizability checker's verdict on the history (`linearizable`,
    /// `not linearizable …`, or `unknown …` when the search budget ran out).
    pub linearizability: String,
    #[serde(skip)]
    pub events: Option<Vec<String>>,
    #[serde(skip)]
    pub history: Vec<OpRecord>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("simulation failed at {at_ms} ms: {reason}")]
    Turmoil { at_ms: u64, reason: String },
}

pub(crate) type NodeSlot = Arc<Mutex<Option<Arc<StorageNode<SimEnv>>>>>;

/// What the checker client found after the workload.
#[derive(Debug, Default)]
struct Final {
    values: BTreeMap<String, Option<String>>,
    /// (group, replica) -> (applied index, state hash).
    digests: BTreeMap<(GroupId, NodeId), (u64, u64)>,
    /// Each group's replicas in the newest routing table the checker saw.
    replicas: BTreeMap<GroupId, Vec<NodeId>>,
    first_success_ms: Option<u64>,
    problems: Vec<String>,
}

/// Per-node handles the harness keeps across crashes: the disk and clock outlive the process.
pub(crate) struct NodeParts {
    pub(crate) id: NodeId,
    pub(crate) disk: SimDisk,
    pub(crate) clock: SimClock,
    pub(crate) slot: NodeSlot,
    pub(crate) up: bool,
    /// A center replica (not a storage node).
    pub(crate) center: bool,
    /// Destroyed by [`Fault::Destroy`]: never restarted.
    pub(crate) destroyed: bool,
}

/// Search states the linearizability checker may explore per run before answering `unknown`.
const LINEARIZABILITY_STATES_MAX: u64 = 20_000_000;
/// Memory the checker's memo table may use per run (its own estimate, so deterministic).
const LINEARIZABILITY_MEMORY_MAX: usize = 1 << 30;

/// Node id of simulated proxy `index`.
pub fn proxy_id(index: u64) -> NodeId {
    200 + index
}

/// Node id of simulated center replica `index`.
pub fn center_id(index: u64) -> NodeId {
    301 + index
}

/// Runs one seeded simulation.
pub fn run(config: &SimConfig) -> Result<RunReport, SimError> {
    #[allow(clippy::disallowed_methods)] // Wall time of the run, for the report only.
    let wall_start = std::time::Instant::now();
    let seed = config.seed;
    reset_process_state(seed);
    let trace = if config.keep_events {
        Trace::keeping_events()
    } else {
        Trace::default()
    };
    let plan = config.plan();
    let history = History::default();
    let net_faults = NetFaults::default();
    let final_state: Arc<Mutex<Final>> = Arc::default();
    let node_ids = config.node_ids();
    let client_ids: Vec<NodeId> = (0..config.clients).map(client_id).collect();

    let mut sim = build_sim(config);

    let mut parts = register_nodes(&mut sim, config, &trace, &net_faults);

    for index in 0..config.proxies {
        let id = proxy_id(index);
        let (faults, trace) = (net_faults.clone(), trace.clone());
        let sim_config = config.clone();
        sim.host(host_name(id), move || {
            let net = SimNet::new(
                id,
                faults.clone(),
                derive_seed(seed, id << 16),
                trace.clone(),
            );
            let proxy = Proxy::new(
                net,
                SimClock::new(),
                derive_seed(seed, id),
                ProxyConfig {
                    client: larder_client::ClientConfig {
                        request_timeout: Duration::from_millis(1500),
                        attempts_max: 6,
                        backoff: Duration::from_millis(50),
                        ..larder_client::ClientConfig::default()
                    },
                    ..ProxyConfig::default()
                },
                sim_config.shared_routing(),
            );
            async move {
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PROXY_PORT)).await?;
                proxy.serve(crate::net::SimListener(listener)).await?;
                Ok(())
            }
        });
    }

    for (index, &id) in client_ids.iter().enumerate() {
        let net = SimNet::new(
            id,
            net_faults.clone(),
            derive_seed(seed, id << 16),
            trace.clone(),
        );
        let (replicas, workload, history, trace, routing) = (
            node_ids.clone(),
            config.workload.clone(),
            history.clone(),
            trace.clone(),
            config.shared_routing(),
        );
        let client_seed = derive_seed(seed, 500 + index as u64);
        let until = config.duration;
        let (groups, proxies) = (config.groups, config.proxies);
        sim.client(host_name(id), async move {
            if proxies > 0 {
                let client = RespClient::new(proxy_id(index as u64 % proxies));
                run_client(id, client, client_seed, until, workload, history, trace).await;
            } else if groups > 1 {
                let client = cluster_client(net, routing, client_seed);
                run_client(id, client, client_seed, until, workload, history, trace).await;
            } else {
                let client = group_client(net, replicas, client_seed);
                run_client(id, client, client_seed, until, workload, history, trace).await;
            }
            Ok(())
        });
    }

    let checker_id = client_id(99);
    {
        let net = SimNet::new(
            checker_id,
            net_faults.clone(),
            derive_seed(seed, checker_id << 16),
            trace.clone(),
        );
        let slots: Vec<(NodeId, NodeSlot)> = parts.iter().map(|p| (p.id, p.slot.clone())).collect();
        let (final_state, workload, routing) = (
            final_state.clone(),
            config.workload.clone(),
            config.shared_routing(),
        );
        let (heal_at, duration, liveness) = (config.heal_at(), config.duration, config.liveness);
        sim.client(host_name(checker_id), async move {
            let client = ClusterClient::new(
                net,
                SimClock::new(),
                routing,
                // Bounded, so a cluster that never serves again ends the run with a verdict
                // (and the group states in it) instead of running into the simulator's cap.
                larder_client::ClientConfig {
                    request_timeout: Duration::from_millis(1500),
                    attempts_max: 10,
                    ..larder_client::ClientConfig::default()
                },
                derive_seed(0, 99),
            );
            let timing = (heal_at, duration, liveness);
            check_final(client, slots, workload, timing, final_state).await;
            Ok(())
        });
    }

    // Every process that is not a storage node: clients, proxies and the checker.
    let other_hosts: Vec<NodeId> = client_ids
        .iter()
        .copied()
        .chain((0..config.proxies).map(proxy_id))
        .chain([checker_id])
        .collect();

    // Drive the simulation, applying faults on time.
    let mut rng = SeededRng::new(derive_seed(seed, 2));
    let mut events = plan.events.iter().peekable();
    let mut healed = false;
    let mut fault_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut fault_log: Vec<(u64, String, String)> = Vec::new();
    let heal_at = config.heal_at();
    loop {
        let finished = sim.step().map_err(|e| SimError::Turmoil {
            at_ms: sim.elapsed().as_millis() as u64,
            reason: e.to_string(),
        })?;
        if finished {
            break;
        }
        let now = sim.elapsed();
        crate::trace::set_harness_now(now);
        while let Some(event) =
            events.next_if(|event| Duration::from_millis(event.at_ms) <= now && !healed)
        {
            let applied = apply_fault(
                &mut sim,
                &mut parts,
                &net_faults,
                &mut rng,
                &event.fault,
                &other_hosts,
                config.groups,
            );
            if applied {
                *fault_counts
                    .entry(event.fault.kind().to_string())
                    .or_insert(0) += 1;
                fault_log.push((
                    now.as_millis() as u64,
                    event.fault.kind().to_string(),
                    format!("{:?}", event.fault),
                ));
                crate::trace_event!(trace, now, "sim", "fault {:?}", event.fault);
            }
        }
        if !healed && now >= heal_at {
            healed = true;
            heal_everything(&mut sim, &mut parts, &net_faults, &other_hosts);
            fault_log.push((now.as_millis() as u64, "heal_all".into(), "heal all".into()));
            crate::trace_event!(trace, now, "sim", "heal all");
        }
        // A disk error stops the group's Raft for good (as EIO would end a process): restart
        // the node from its disk, as a supervisor would.
        for part in parts.iter_mut() {
            let fatal = part
                .slot
                .lock()
                .expect("slot lock")
                .as_ref()
                .and_then(|node| node.fatal());
            if let Some(reason) = fatal {
                crate::trace_event!(
                    trace,
                    now,
                    "sim",
                    "restart n{} after fatal error: {reason}",
                    part.id
                );
                crash(&mut sim, part, &mut rng);
                sim.bounce(host_name(part.id));
                part.up = true;
                *fault_counts
                    .entry("restart_after_fatal".into())
                    .or_insert(0) += 1;
                fault_log.push((
                    now.as_millis() as u64,
                    "restart_after_fatal".into(),
                    format!("restart n{} after: {reason}", part.id),
                ));
            }
        }
    }

    let sim_elapsed = sim.elapsed();
    let history_records = history.records();
    let final_state = std::mem::take(&mut *final_state.lock().expect("final lock"));
    let destroyed: BTreeSet<NodeId> = parts.iter().filter(|p| p.destroyed).map(|p| p.id).collect();
    let mut violations = check(config, &history_records, &final_state, &destroyed);
    // Every key's history must be linearizable (WGL search per key). The budget counts
    // states, not seconds, so the verdict is as deterministic as the run.
    let budget = Budget::unlimited()
        .with_states_max(LINEARIZABILITY_STATES_MAX)
        .with_memory_max(LINEARIZABILITY_MEMORY_MAX);
    let linearizability = match check_history(
        &crate::workload::to_history(&history_records),
        &CheckConfig::default(),
        &budget,
    ) {
        Ok(report) => {
            if report.is_not_linearizable() {
                violations.push(format!("linearizability: {report}"));
            }
            report.to_string().trim_end().to_string()
        }
        Err(error) => {
            violations.push(format!("history is malformed: {error}"));
            format!("history is malformed: {error}")
        }
    };
    let mut ops = OpCounts::default();
    for record in &history_records {
        match record.status {
            OpStatus::Ok => ops.ok += 1,
            OpStatus::Fail => ops.fail += 1,
            OpStatus::Info => ops.info += 1,
        }
    }
    // Drop the nodes before the next run reuses this thread's state.
    for part in &parts {
        part.slot.lock().expect("slot lock").take();
    }
    drop(sim);
    Ok(RunReport {
        seed,
        sim_seconds: sim_elapsed.as_secs_f64(),
        wall_seconds: wall_start.elapsed().as_secs_f64(),
        ops,
        faults: fault_counts,
        plan: plan.clone(),
        fault_log,
        trace_hash: trace.hash(),
        trace_events: trace.len(),
        violations,
        linearizability,
        events: trace.events(),
        history: history_records,
    })
}

/// Puts the process-wide state a run can observe back into the same shape at the start of every
/// run, so a seed gives the same trace whether it runs first in a fresh process, after other
/// seeds in a sweep, or twice in a determinism check.
///
/// - openraft's randomness (election jitter) comes from [`seed_raft_rng`].
/// - tokio numbers tasks from one process-wide counter, and dropping a runtime (turmoil's crash
///   of a host) drops its tasks shard by shard with shard = task id mod 4. The order in which a
///   crashed node's sockets close, and so the order of the network's random draws that follow,
///   therefore depends on the counter's value when the run started (seed 1 diverged this way
///   right after a crash). Spawning throw-away tasks until the counter is at a multiple of 64
///   gives every run the same residues.
///
/// [`seed_raft_rng`]: larder_storage::raft::runtime::seed_raft_rng
pub(crate) fn reset_process_state(seed: u64) {
    larder_storage::raft::runtime::seed_raft_rng(derive_seed(seed, 0x005e_ed0f_4af7));
    crate::trace::set_harness_now(Duration::ZERO);
    const ALIGN: u64 = 64;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a bare current-thread runtime");
    for _ in 0..=ALIGN {
        let task = runtime.spawn(async {});
        let id: u64 = task
            .id()
            .to_string()
            .parse()
            .expect("tokio task ids print as numbers");
        let _ = runtime.block_on(task);
        if id % ALIGN == ALIGN - 1 {
            return;
        }
    }
    unreachable!("{ALIGN} consecutive task ids without hitting every residue");
}

/// A turmoil simulation seeded from the run seed, with the configured tick and LAN-like latency.
pub(crate) fn build_sim<'a>(config: &SimConfig) -> turmoil::Sim<'a> {
    turmoil::Builder::new()
        .rng_seed(derive_seed(config.seed, 1))
        .tick_duration(config.tick)
        .min_message_latency(Duration::from_micros(200))
        // turmoil panics (rather than refusing) when a listener's backlog overflows; a pause
        // releases every held connection attempt at once, far beyond the default 64.
        .tcp_capacity(4096)
        .max_message_latency(Duration::from_millis(5))
        // The checker needs time after the workload; the cap only stops a wedged run.
        .simulation_duration(config.duration + config.liveness + Duration::from_secs(120))
        .build()
}

/// Registers one turmoil host per storage node. Each node's disk and clock are created here and
/// outlive crashes; the host closure builds a fresh process around them on every (re)start.
pub(crate) fn register_nodes(
    sim: &mut turmoil::Sim<'_>,
    config: &SimConfig,
    trace: &Trace,
    net_faults: &NetFaults,
) -> Vec<NodeParts> {
    let seed = config.seed;
    let centers = config.center_ids();
    let mut parts = Vec::new();
    for id in config.node_ids().into_iter().chain(centers.iter().copied()) {
        let is_center = centers.contains(&id);
        let disk = SimDisk::new(derive_seed(seed, 1000 + id));
        disk.set_trace(trace.clone(), host_name(id));
        let clock = SimClock::new();
        let slot: NodeSlot = Arc::default();
        let incarnation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut node_config = config.node.clone();
        node_config.id = id;
        // The groups this node forms on its first start: without a center, those it is the
        // first replica of; with one, none (the center places and forms every slot group).
        let forms: Vec<(GroupId, BTreeSet<NodeId>)> = if config.centers > 0 {
            node_config.groups = Vec::new();
            if !is_center {
                node_config.centers = centers.clone();
            }
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
        // The first center replica forms the center group on its first start.
        let center_config =
            is_center.then(|| (config.center_config(), centers.first() == Some(&id)));
        let (disk_h, clock_h, slot_h, faults_h, trace_h) = (
            disk.clone(),
            clock.clone(),
            slot.clone(),
            net_faults.clone(),
            trace.clone(),
        );
        sim.host(host_name(id), move || {
            let generation = incarnation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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
            };
            let (node_config, forms, slot) = (node_config.clone(), forms.clone(), slot_h.clone());
            let center_config = center_config.clone();
            let trace_h2 = trace_h.clone();
            let start_failed = move |e: &dyn std::fmt::Display| {
                crate::trace_event!(trace_h2, sim_now(), &host_name(id), "start failed: {e}");
            };
            async move {
                // A start that fails on an injected disk error is retried after a pause, as a
                // process supervisor would restart it; the disk keeps its faults meanwhile.
                if let Some((center_config, forms_center)) = center_config {
                    let center = loop {
                        match Center::start(env.clone(), node_config.clone(), center_config.clone())
                            .await
                        {
                            Ok(center) => break center,
                            Err(e) => {
                                start_failed(&e);
                                env.clock.sleep(Duration::from_millis(200)).await;
                            }
                        }
                    };
                    if generation == 0 && forms_center {
                        center.initialize().await?;
                    }
                    *slot.lock().expect("slot lock") = Some(center.node().clone());
                    center.serve().await?;
                    return Ok(());
                }
                let node = loop {
                    match StorageNode::start(env.clone(), node_config.clone()).await {
                        Ok(node) => break node,
                        Err(e) => {
                            start_failed(&e);
                            env.clock.sleep(Duration::from_millis(200)).await;
                        }
                    }
                };
                // A group's first replica bootstraps it on its first start; later starts find
                // it initialized (the membership entry is in its log) and leave it alone.
                if generation == 0 {
                    for (group, voters) in &forms {
                        node.initialize(*group, voters).await?;
                    }
                }
                *slot.lock().expect("slot lock") = Some(node.clone());
                node.serve().await?;
                Ok(())
            }
        });
        parts.push(NodeParts {
            id,
            disk,
            clock,
            slot,
            up: true,
            center: is_center,
            destroyed: false,
        });
    }
    parts
}

/// The node that currently believes it leads the group, if any.
pub(crate) fn current_leader(parts: &[NodeParts]) -> Option<NodeId> {
    current_leader_of(parts, GROUP)
}

/// The node that currently believes it leads `group`, if any.
pub(crate) fn current_leader_of(parts: &[NodeParts], group: GroupId) -> Option<NodeId> {
    parts.iter().find_map(|p| {
        let slot = p.slot.lock().expect("slot lock");
        slot.as_ref()
            .filter(|node| node.is_leader(group))
            .map(|node| node.id())
    })
}

fn crash(sim: &mut turmoil::Sim<'_>, part: &mut NodeParts, rng: &mut SeededRng) {
    sim.crash(host_name(part.id));
    part.slot.lock().expect("slot lock").take();
    part.disk.crash(rng);
    part.up = false;
}

fn apply_fault(
    sim: &mut turmoil::Sim<'_>,
    parts: &mut [NodeParts],
    net: &NetFaults,
    rng: &mut SeededRng,
    fault: &Fault,
    clients: &[NodeId],
    groups: u64,
) -> bool {
    let part = |parts: &mut [NodeParts], node: NodeId| parts.iter_mut().position(|p| p.id == node);
    let others = |node: NodeId| -> Vec<String> {
        parts
            .iter()
            .map(|p| p.id)
            .chain(clients.iter().copied())
            .filter(|&other| other != node)
            .map(host_name)
            .collect()
    };
    match fault {
        // turmoil holds the paused host's traffic in both directions and delivers it on
        // release: to everyone else the process is frozen, and its backlog arrives late.
        // (Its own timers keep running; a real SIGSTOP would freeze those too.)
        Fault::Pause { node } => {
            for other in others(*node) {
                sim.hold(host_name(*node), other);
            }
        }
        Fault::Resume { node } => {
            for other in others(*node) {
                sim.release(host_name(*node), other);
            }
        }
        Fault::Partition { side_a, side_b } => net.update(|state| {
            for &a in side_a {
                for &b in side_b {
                    state.blocked.insert((a, b));
                    state.blocked.insert((b, a));
                }
            }
        }),
        Fault::PartitionOneWay { from, to } => net.update(|state| {
            for &a in from {
                for &b in to {
                    state.blocked.insert((a, b));
                }
            }
        }),
        Fault::IsolateLeader => {
            // With many groups, the leader of a random one (drawing only then, so single-group
            // runs keep their random stream).
            let group = if groups > 1 {
                1 + rng.below(groups)
            } else {
                GROUP
            };
            let Some(leader) = current_leader_of(parts, group) else {
                return false;
            };
            let others: Vec<NodeId> = parts
                .iter()
                .map(|p| p.id)
                .chain(clients.iter().copied())
                .filter(|&id| id != leader)
                .collect();
            net.update(|state| {
                for other in others {
                    state.blocked.insert((leader, other));
                    state.blocked.insert((other, leader));
                }
            });
        }
        Fault::HealPartitions => net.update(|state| state.blocked.clear()),
        Fault::MessageLoss { rate } => net.update(|state| state.loss = *rate),
        Fault::MessageDuplication { rate } => net.update(|state| state.duplicate = *rate),
        Fault::MessageDelay { delay_ms_max } => {
            net.update(|state| state.delay_ms_max = *delay_ms_max)
        }
        Fault::HealMessages => net.update(|state| {
            state.loss = 0.0;
            state.duplicate = 0.0;
            state.delay_ms_max = 0;
        }),
        Fault::Crash { node } => {
            let Some(index) = part(parts, *node) else {
                return false;
            };
            if !parts[index].up {
                return false;
            }
            crash(sim, &mut parts[index], rng);
        }
        Fault::Restart { node } => {
            let Some(index) = part(parts, *node) else {
                return false;
            };
            if parts[index].up || parts[index].destroyed {
                return false;
            }
            sim.bounce(host_name(*node));
            parts[index].up = true;
        }
        Fault::CrashCenterLeader => {
            let Some(index) = parts.iter().position(|p| {
                p.center
                    && p.slot
                        .lock()
                        .expect("slot lock")
                        .as_ref()
                        .is_some_and(|node| node.is_leader(CENTER_GROUP))
            }) else {
                return false;
            };
            crash(sim, &mut parts[index], rng);
        }
        Fault::RestartCenters => {
            let mut any = false;
            for part in parts.iter_mut().filter(|p| p.center && !p.up) {
                sim.bounce(host_name(part.id));
                part.up = true;
                any = true;
            }
            return any;
        }
        Fault::Destroy { node } => {
            let Some(index) = part(parts, *node) else {
                return false;
            };
            if parts[index].up {
                crash(sim, &mut parts[index], rng);
            }
            parts[index].destroyed = true;
        }
        Fault::SlowDisk {
            node,
            latency_ms_max,
        } => {
            let Some(index) = part(parts, *node) else {
                return false;
            };
            parts[index]
                .disk
                .set_latency(Duration::ZERO, Duration::from_millis(*latency_ms_max));
        }
        Fault::DiskErrors { node, rate } => {
            let Some(index) = part(parts, *node) else {
                return false;
            };
            parts[index].disk.set_error_rate(*rate);
        }
        Fault::HealDisk { node } => {
            let Some(index) = part(parts, *node) else {
                return false;
            };
            heal_disk(&parts[index].disk);
        }
        Fault::ClockOffset { node, offset_ms } => {
            let Some(index) = part(parts, *node) else {
                return false;
            };
            parts[index].clock.set_offset_ms(*offset_ms);
        }
        Fault::ClockDrift { node, ppm } => {
            let Some(index) = part(parts, *node) else {
                return false;
            };
            parts[index].clock.set_drift_ppm(*ppm);
        }
        Fault::ClockJump { node, jump_ms } => {
            let Some(index) = part(parts, *node) else {
                return false;
            };
            parts[index].clock.jump_wall_ms(*jump_ms);
        }
        Fault::HealClock { node } => {
            let Some(index) = part(parts, *node) else {
                return false;
            };
            heal_clock(&parts[index].clock);
        }
    }
    true
}

fn heal_disk(disk: &SimDisk) {
    disk.set_latency(Duration::ZERO, Duration::ZERO);
    disk.set_error_rate(0.0);
}

fn heal_clock(clock: &SimClock) {
    clock.set_drift_ppm(0);
    clock.set_offset_ms(0);
}

fn heal_everything(
    sim: &mut turmoil::Sim<'_>,
    parts: &mut [NodeParts],
    net: &NetFaults,
    clients: &[NodeId],
) {
    net.update(|state| *state = Default::default());
    // Resume any paused process (releasing a pair that is not held does nothing).
    let hosts: Vec<NodeId> = parts
        .iter()
        .map(|p| p.id)
        .chain(clients.iter().copied())
        .collect();
    for part in parts.iter() {
        for &other in hosts.iter().filter(|&&other| other != part.id) {
            sim.release(host_name(part.id), host_name(other));
        }
    }
    for part in parts.iter_mut() {
        heal_disk(&part.disk);
        heal_clock(&part.clock);
        if !part.up && !part.destroyed {
            sim.bounce(host_name(part.id));
            part.up = true;
        }
    }
}

/// The checker client: after the workload, read every key (measuring how soon after the heal
/// point the cluster serves), then wait for the routing to settle and every group's replicas
/// (as the newest table lists them) to apply the same log, and take their state digests.
async fn check_final(
    mut client: ClusterClient<SimNet, SimClock>,
    slots: Vec<(NodeId, NodeSlot)>,
    workload: WorkloadConfig,
    (heal_at, duration, liveness): (Duration, Duration, Duration),
    final_state: Arc<Mutex<Final>>,
) {
    tokio::time::sleep(heal_at).await;
    // Liveness: a read must succeed within `liveness` of the heal point.
    let probe = Command::get("liveness-probe");
    let mut first_success = None;
    while sim_now() < heal_at + liveness + Duration::from_secs(5) {
        if client.execute(probe.clone()).await.is_ok() {
            first_success = Some(sim_now().as_millis() as u64);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::debug!(?first_success, "checker: liveness probe done");
    tokio::time::sleep(duration.saturating_sub(sim_now()) + Duration::from_millis(500)).await;
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();
    let keys: Vec<String> = (0..workload.register_keys)
        .map(register_key)
        .chain((0..workload.counter_keys).map(counter_key))
        .collect();
    for key in keys {
        let mut result = None;
        for _ in 0..20 {
            if sim_now() > duration + liveness + Duration::from_secs(60) {
                break;
            }
            match client.execute(Command::get(&key)).await {
                Ok(Reply::Bulk(bytes)) => {
                    result = Some(Some(String::from_utf8_lossy(&bytes).into_owned()))
                }
                Ok(Reply::Nil) => result = Some(None),
                Ok(other) => problems.push(format!("final read of {key} answered {other:?}")),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
            break;
        }
        tracing::debug!(key, ?result, "checker: final read");
        match result {
            Some(value) => {
                values.insert(key, value);
            }
            None => problems.push(format!("final read of {key} never succeeded")),
        }
    }
    // Replicas converge: wait (bounded) until the newest table's replicas of every group run
    // and report one applied index. With a center this includes waiting for it to replace
    // destroyed nodes: their slots stay empty, so a group listing one never converges.
    let node = |id: NodeId| {
        slots
            .iter()
            .find(|(node, _)| *node == id)
            .and_then(|(_, slot)| slot.lock().expect("slot lock").clone())
    };
    let give_up = duration + liveness + Duration::from_secs(100);
    let mut digests = BTreeMap::new();
    let mut replicas: BTreeMap<GroupId, Vec<NodeId>>;
    loop {
        client.refresh_routing().await;
        let table = client.routing().current();
        replicas = table
            .groups()
            .iter()
            .map(|(group, route)| (*group, route.replicas.clone()))
            .collect();
        digests.clear();
        let mut converged = true;
        for (&group, members) in &replicas {
            let mut indexes = BTreeSet::new();
            for &id in members {
                if let Some(node) = node(id)
                    && let Ok(digest) = node.state_digest(group).await
                {
                    indexes.insert(digest.0);
                    digests.insert((group, id), digest);
                }
            }
            converged &=
                indexes.len() == 1 && members.iter().all(|id| digests.contains_key(&(group, *id)));
        }
        if converged && !replicas.is_empty() {
            break;
        }
        tracing::debug!(?digests, "checker: not converged");
        if sim_now() > give_up {
            // Say what every live replica of an unconverged group believes, for the report.
            for (&group, members) in &replicas {
                let indexes: BTreeSet<u64> = digests
                    .iter()
                    .filter(|((g, _), _)| *g == group)
                    .map(|(_, (index, _))| *index)
                    .collect();
                if indexes.len() == 1
                    && members.iter().all(|id| digests.contains_key(&(group, *id)))
                {
                    continue;
                }
                for (id, _) in &slots {
                    if let Some(status) = node(*id)
                        .and_then(|n| n.group_statuses().into_iter().find(|s| s.group == group))
                    {
                        problems.push(format!("group {group} on node {id} at the end: {status:?}"));
                    }
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut state = final_state.lock().expect("final lock");
    state.values = values;
    state.digests = digests;
    state.replicas = replicas;
    state.first_success_ms = first_success;
    state.problems = problems;
}

/// The invariants a run must keep.
fn check(
    config: &SimConfig,
    history: &[OpRecord],
    final_state: &Final,
    destroyed: &BTreeSet<NodeId>,
) -> Vec<String> {
    let mut violations = final_state.problems.clone();
    let heal_ms = config.heal_at().as_millis() as u64;
    match final_state.first_success_ms {
        Some(at) if at <= heal_ms + config.liveness.as_millis() as u64 => {}
        Some(at) => violations.push(format!(
            "liveness: first read succeeded {} ms after healing (bound {} ms)",
            at - heal_ms,
            config.liveness.as_millis()
        )),
        None => violations.push("liveness: no read succeeded after healing".into()),
    }
    // Counters: the final value is the sum of acknowledged increments plus some of the
    // indeterminate ones; definitely failed increments must not count.
    for index in 0..config.workload.counter_keys {
        let key = counter_key(index);
        let ops = history
            .iter()
            .filter(|op| op.kind == OpKind::Incr && op.key == key);
        let low: i64 = ops
            .clone()
            .filter(|op| op.status == OpStatus::Ok)
            .map(|op| op.delta)
            .sum();
        let unknown: i64 = ops
            .filter(|op| op.status == OpStatus::Info)
            .map(|op| op.delta)
            .sum();
        let Some(value) = final_state.values.get(&key) else {
            continue;
        };
        let value: i64 = value
            .as_deref()
            .map_or(Ok(0), str::parse)
            .unwrap_or(i64::MIN);
        if value < low || value > low + unknown {
            violations.push(format!(
                "counter {key}: final value {value} outside [{low}, {}] (acknowledged sum, plus indeterminate)",
                low + unknown
            ));
        }
    }
    // Registers: the final value was written by a set that did not definitely fail.
    for index in 0..config.workload.register_keys {
        let key = register_key(index);
        let Some(Some(value)) = final_state.values.get(&key) else {
            continue;
        };
        let writer = history
            .iter()
            .find(|op| op.kind == OpKind::Set && op.key == key && op.value.as_ref() == Some(value));
        match writer {
            None => violations.push(format!("register {key}: final value {value:?} was never written")),
            Some(op) if op.status == OpStatus::Fail => violations.push(format!(
                "register {key}: final value {value:?} comes from a write reported as failed ({:?})",
                op.error
            )),
            Some(_) => {}
        }
    }
    // A final routing table exists (fetched tables are checked: every slot has a group), and
    // no group lists a destroyed node. Group ids may differ from the first table's: the
    // center recreates a group that never formed under a new id.
    if final_state.replicas.is_empty() {
        violations.push("no final routing table".into());
    }
    for (group, members) in &final_state.replicas {
        for node in members.iter().filter(|n| destroyed.contains(n)) {
            violations.push(format!(
                "group {group} still lists destroyed node {node} as a replica: {members:?}"
            ));
        }
    }
    // Replicas of a group that applied the same log hold the same state.
    for (&group, members) in &final_state.replicas {
        let digests: BTreeMap<NodeId, (u64, u64)> = final_state
            .digests
            .iter()
            .filter(|((g, _), _)| *g == group)
            .map(|((_, node), digest)| (*node, *digest))
            .collect();
        let hashes: BTreeSet<u64> = digests.values().map(|(_, hash)| *hash).collect();
        let indexes: BTreeSet<u64> = digests.values().map(|(index, _)| *index).collect();
        if digests.len() != members.len() || indexes.len() != 1 {
            violations.push(format!(
                "group {group}: replicas did not converge: {digests:?}"
            ));
        } else if hashes.len() != 1 {
            violations.push(format!(
                "group {group}: replicas diverged at the same applied index: {digests:?}"
            ));
        }
    }
    violations
}

/// What a CI seed test asserts: the seed runs, both runs trace the same, every invariant holds.
/// The error names the problem and the command that replays it.
pub fn check_seed(config: &SimConfig, replay: &str) -> Result<RunReport, String> {
    let seed = config.seed;
    let (report, divergence) = check_determinism(config)
        .map_err(|e| format!("seed {seed} did not run: {e}\nreplay: {replay}"))?;
    if let Some(divergence) = divergence {
        return Err(format!(
            "seed {seed} is not deterministic: {divergence}\nreplay: {replay}"
        ));
    }
    if !report.passed() {
        return Err(format!(
            "seed {seed} violated invariants: {:#?}\nreplay: {replay}",
            report.violations
        ));
    }
    if report.ops.ok == 0 {
        return Err(format!(
            "seed {seed} completed no operation\nreplay: {replay}"
        ));
    }
    Ok(report)
}

/// Runs `config` twice and compares the traces.
pub fn check_determinism(config: &SimConfig) -> Result<(RunReport, Option<String>), SimError> {
    let mut config = config.clone();
    config.keep_events = true;
    let first = run(&config)?;
    let second = run(&config)?;
    if first.trace_hash == second.trace_hash {
        return Ok((first, None));
    }
    let a = first.events.clone().unwrap_or_default();
    let b = second.events.clone().unwrap_or_default();
    let index = a
        .iter()
        .zip(b.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let context: Vec<String> = a[index.saturating_sub(5)..index.min(a.len())]
        .iter()
        .map(|event| format!("\n  both:  {event}"))
        .collect();
    let divergence = format!(
        "trace hashes differ ({} vs {}); first divergent event #{index}:{}\n  run 1: {}\n  run 2: {}",
        first.trace_hash,
        second.trace_hash,
        context.concat(),
        a.get(index).map_or("<end of trace>", String::as_str),
        b.get(index).map_or("<end of trace>", String::as_str),
    );
    Ok((first, Some(divergence)))
}
