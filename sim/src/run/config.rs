//! What a run simulates: [`SimConfig`] (seed, duration, cluster shape, workload, fault plan,
//! per-node settings) and the node ids of the processes it starts.

use std::time::Duration;

use larder_center::CenterConfig;
use larder_client::SharedRouting;
use larder_core::bugs::Bugs;
use larder_core::env::{FaultPoint, Rng, SeededRng, derive_seed};
use larder_storage::NodeConfig;

use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use larder_faults::{Aim, Fault, FaultPlan, PlanConfig, Roles, ScheduledFault};
use serde::Serialize;

use crate::workload::{GROUP, WorkloadConfig};
use larder_workloads::driver::Lulls;

/// The random stream a swarm seed draws its workload families from.
const SWARM_WORKLOAD_STREAM: u64 = 0x5a4a_f00d;
/// The random stream a swarm seed draws its collections family from (lists, sets, sorted
/// sets and transactions): its own, so a seed without the family runs exactly what it ran
/// before the family existed.
const SWARM_COLLECTIONS_STREAM: u64 = 0xc011_ec75;
/// How often a swarm seed turns each optional workload family on.
const SWARM_FAMILY_CHANCE: f64 = 0.35;
/// Share of swarm seeds whose first client only reads, and the random stream that decides.
const READER_CHANCE: f64 = 0.5;
/// How often a swarm seed with TTL keys also has lulls in its traffic
/// ([`larder_workloads::driver::Lulls`]).
const SWARM_LULL_CHANCE: f64 = 0.8;
const READER_STREAM: u64 = 0x04ea_de45;
/// The random stream a swarm seed draws its load shape from ([`LoadShape`]): its own, so a
/// seed that picks neither shape runs exactly what it ran before the shapes existed.
const SWARM_LOAD_STREAM: u64 = 0x10ad_5a9e;
/// The random stream of whether a contention seed's clients share a list.
const CONTENTION_LIST_STREAM: u64 = 0x11_57a9;
/// Share of contention seeds whose clients also share a list.
const CONTENTION_LIST_CHANCE: f64 = 0.5;
/// The random stream of whether a contention seed runs [`CONTENTION_CROWD_CLIENTS`]. Its
/// constant was picked among four tried so that cluster seed 34 keeps eight clients: that seed
/// is the swarm's only catch of the bug catalog's repair pair, and with 24 clients neither it
/// nor any seed of 1..100 catches the pair.
const CONTENTION_CROWD_STREAM: u64 = 0x11_c20e;
/// Share of contention seeds run by a crowd.
const CONTENTION_CROWD_CHANCE: f64 = 0.5;
/// Clients of a crowded contention seed (at least). Until the checker's single-source rule,
/// unread values merged and twins (stop 61) 24-client histories were beyond the search (swarm
/// seed 1 at 24 clients: 10.9 million states on its multi-key object, nearly four minutes);
/// now a 24-client contention seed judges in about a second at most.
pub const CONTENTION_CROWD_CLIENTS: u64 = 24;
/// Share of swarm seeds that run the contention shape, and the read-heavy shape.
const CONTENTION_CHANCE: f64 = 0.25;
const READ_HEAVY_CHANCE: f64 = 0.25;
/// Clients of a contention seed (at least; more if the run has more), all on one key of each
/// kind. Sized so the checker ends every CI seed with a verdict: see [`LoadShape`].
pub const CONTENTION_CLIENTS: u64 = 8;
/// Batches in flight per slot group's queue of a simulated proxy's coalescers
/// (`ProxyConfig::coalesce_runners`, production's default too), unless `--coalesce-runners`
/// says otherwise: so the batching, the turn taking and the hand-out of answers are checked
/// under faults on every seed.
pub const SIM_COALESCE_RUNNERS: usize = 1;

/// Simulated clients are hosts `n100..n198` (`n199` is the checker, `n200..` proxies).
pub const CLIENTS_MAX: u64 = 99;

/// Share of swarm cluster seeds whose operator moves slots ([`SimConfig::run_moves`]).
pub const SWARM_MOVES_CHANCE: f64 = 0.5;
/// The random stream of the swarm's slot moves.
const SWARM_MOVES_STREAM: u64 = 0x30_7e5;
/// The random stream of which swarm moves are splits and which get paused or cancelled.
const SWARM_STEER_STREAM: u64 = 0x30_7e6;
/// The random stream of the delay aimed between a migration's copy and its catch-up.
const SWARM_MIGRATION_AIM_STREAM: u64 = 0x30_7e8;
/// The random stream of the late migration steps of [`SWARM_LATE_STEPS_CHANCE`] of the
/// swarm seeds that move slots.
const SWARM_LATE_STEPS_STREAM: u64 = 0x30_7e9;
/// Share of swarm seeds moving slots whose migration steps are delivered again, late.
pub const SWARM_LATE_STEPS_CHANCE: f64 = 0.5;
/// The random stream of the swarm's node drains.
const SWARM_DRAIN_STREAM: u64 = 0x30_7e7;
/// Share of swarm cluster seeds whose operator drains a storage node.
pub const SWARM_DRAIN_CHANCE: f64 = 0.25;
/// Share of swarm moves that move from the group owning the clients' first key (a
/// multi-key object's, when there is one) instead of the group drawn.
pub const SWARM_AIM_KEYS_CHANCE: f64 = 0.5;
/// Share of swarm moves that are group splits instead.
pub const SWARM_SPLIT_CHANCE: f64 = 0.2;
/// Share of swarm moves the operator pauses (and resumes) or cancels afterwards.
pub const SWARM_STEER_CHANCE: f64 = 0.4;

/// The load shape a swarm seed picks (each from [`SWARM_LOAD_STREAM`], independently).
///
/// - `contention`: [`CONTENTION_CLIENTS`] clients on one register and one counter, and in
///   half of these seeds one list (`contention_list`, its own stream, so the other half run
///   what they always did); the TTL and multi-key families keep their own keys. In half of
///   them (`contention_crowd`, a stream of its own again) [`CONTENTION_CROWD_CLIENTS`]
///   clients. Many writers on one key under crashes leave many writes indeterminate, and
///   every indeterminate write stays open to the end of the history, which the
///   linearizability search pays for exponentially; what keeps it cheap is in the checker
///   (`larder_workloads`: the append bound, the single-source rule, unread values merged,
///   twins tried in return order), measured in the README.
/// - `read_heavy`: reads outnumber writes more than four to one (register, counter and list
///   reads), which keeps the read paths (read index, leader checks, expiry on read) busy
///   while the writes that they must observe are few.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LoadShape {
    pub contention: bool,
    pub contention_list: bool,
    pub contention_crowd: bool,
    pub read_heavy: bool,
}

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
    /// Workload clients (at most [`CLIENTS_MAX`]); a swarm contention seed runs at least
    /// [`CONTENTION_CLIENTS`] ([`SimConfig::run_clients`]).
    pub clients: u64,
    pub workload: WorkloadConfig,
    /// Target operations per simulated second across all clients (`larder sim --rate`):
    /// clients pace their operations ([`WorkloadConfig::paced`]) with pauses averaging
    /// `clients / rate`. `None`: the workload's own think time. The report gives the rate
    /// achieved.
    pub rate: Option<u64>,
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
    /// With proxies: processes of the history per client connection. 1: a connection per
    /// process, one request at a time. More: the processes of a client host share one
    /// connection and every request waiting when it is free goes out in one write, a pipeline
    /// ([`crate::workload::SharedResp`]), so the proxy's pipelines run under faults.
    pub pipelined: u64,
    /// With proxies and one process per connection: the client closes its connection and
    /// opens a new one after this many requests (0: only after a failure), as clients that
    /// connect per request do. The proxy hands the closed connection's group sessions to the
    /// next ones (`larder_client::SessionPool`), so this runs that hand-over under faults.
    pub reconnect_every: u64,
    /// Batches in flight per slot group's queue of each proxy's coalescers
    /// (`ProxyConfig::coalesce_runners`; 0: off). [`SIM_COALESCE_RUNNERS`] by default.
    pub coalesce_runners: usize,
    /// Center replicas (ids from [`center_id`]). 0: a static routing table and groups formed
    /// by the harness. More: storage nodes start empty, the center places the groups, and
    /// proxies and the checker fetch routing from it; faults then target roles too.
    pub centers: u64,
    /// Bugs planted in every node, center, proxy and workload client (not in the checker,
    /// which must stay correct to judge them); see [`larder_core::bugs`].
    #[serde(skip)]
    pub bugs: Bugs,
    /// An `unknown` linearizability verdict (the checker's budget ran out) fails the run
    /// unless this names why the caller accepts it (e.g. a long soak whose history is too
    /// large to search). `None` everywhere in CI.
    pub unknown_passes: Option<String>,
    /// Slot moves the operator asks the center for (needs `centers`); see
    /// [`super::PlannedMove`].
    #[serde(default)]
    pub moves: Vec<super::PlannedMove>,
    /// Storage nodes the operator drains, `(at_ms, node)` (needs `centers`); see
    /// [`SimConfig::run_drains`].
    #[serde(default)]
    pub drains: Vec<(u64, larder_core::NodeId)>,
    /// The center's `split_records_max` (0, the default here: automatic splits off). With it
    /// set, the operator watches the migrations the center starts by itself.
    #[serde(default)]
    pub split_records_max: u64,
    /// The proxies' per-key write limit (`larder_proxy::HotKeyConfig::writes_per_sec_max`);
    /// `None`: none. With a hot key in the workload
    /// ([`larder_workloads::driver::WorkloadConfig::hot_share_percent`]) the refused writes
    /// are failed operations of the history.
    #[serde(default)]
    pub hot_key_writes_per_sec_max: Option<u64>,
    /// The proxies' threshold for sharing reads of a hot key
    /// (`larder_proxy::HotKeyConfig::share_reads_min_per_sec`). `None` here (unlike a real
    /// proxy's 500): the catalogue's seeds were tuned without it and replay as they were; the
    /// hot-key seeds turn it on.
    #[serde(default)]
    pub hot_key_share_reads_min_per_sec: Option<u64>,
    /// The groups' bound on sessions, in place of the one [`SimConfig::sessions_max`] draws;
    /// `None` (the default) draws it. Tests set it to make sessions evicted.
    pub sessions_max_fixed: Option<usize>,
    /// Even-numbered nodes keep `clients` more sessions than the rest
    /// ([`SimConfig::sessions_max_of`]); on by itself in the swarm seeds that keep few.
    #[serde(default)]
    pub sessions_max_uneven: bool,
    /// The center's `hot_slot_requests_per_sec_max` (0, the default: off): a slot its group
    /// leader reports hotter than this is moved into a group of its own. With it set, the
    /// operator watches the migrations the center starts by itself.
    #[serde(default)]
    pub hot_slot_requests_per_sec_max: u64,
    /// The center's `groups_per_node_min` (0, the default here, unlike a real center's 1:
    /// the catalogue's seeds were tuned with the groups their plans ask for). With it set,
    /// the operator watches the migrations the center starts by itself.
    #[serde(default)]
    pub groups_per_node_min: u64,
    /// Back every group up during the run as `larder backup` does, and check at the end that
    /// the backup rebuilds each group exactly (`run::archive`). The nodes then keep their log
    /// entries ([`SimConfig::with_backup`]).
    #[serde(default)]
    pub backup: bool,
    /// With the archiver ([`SimConfig::backup`]), run `larder sync`'s work on what it reads
    /// ([`larder_storage::cluster_sync`]) into a model target cluster, and check at the end
    /// that the target holds exactly what the source does ([`SimConfig::with_sync`]).
    #[serde(default)]
    pub sync: bool,
}

/// Register keys of a run with [`SimConfig::sync`] at least.
pub const SYNC_REGISTER_KEYS: u64 = 64;

impl SimConfig {
    pub const TICK_MS_DEFAULT: u64 = 1;

    /// Whether the center may start migrations by itself (by records or by a hot slot).
    pub fn automatic_splits(&self) -> bool {
        self.split_records_max > 0
            || self.hot_slot_requests_per_sec_max > 0
            || self.groups_per_node_min > 0
    }

    pub fn new(seed: u64, duration: Duration) -> Self {
        let mut node = NodeConfig::new(0, vec![GROUP]);
        // Small snapshot interval so every run exercises snapshot build, install and purge.
        node.snapshot_logs_since_last = 300;
        node.snapshot_logs_kept = 50;
        // Small transfer budgets so every run cuts appends (a catching-up follower gets its
        // entries in several batches) and sends snapshots in many chunks: the paths a group of
        // large values takes in production, exercised with the simulator's small values.
        node.append_bytes_max = 4 << 10;
        node.snapshot_chunk_bytes = 1 << 10;
        SimConfig {
            seed,
            duration,
            liveness: Duration::from_secs(10).min(duration / 2),
            nodes: 3,
            voters: 3,
            clients: 3,
            workload: WorkloadConfig::default(),
            rate: None,
            plan: None,
            swarm: false,
            faults: true,
            keep_events: false,
            node,
            tick: Duration::from_millis(Self::TICK_MS_DEFAULT),
            groups: 1,
            proxies: 0,
            pipelined: 1,
            reconnect_every: 0,
            coalesce_runners: SIM_COALESCE_RUNNERS,
            centers: 0,
            bugs: Bugs::default(),
            unknown_passes: None,
            moves: Vec::new(),
            drains: Vec::new(),
            split_records_max: 0,
            hot_key_writes_per_sec_max: None,
            hot_key_share_reads_min_per_sec: None,
            sessions_max_fixed: None,
            sessions_max_uneven: false,
            hot_slot_requests_per_sec_max: 0,
            groups_per_node_min: 0,
            backup: false,
            sync: false,
        }
    }

    /// With the archiver on ([`SimConfig::backup`]), and nodes that keep their committed log
    /// entries for the whole run after snapshots cover them, as `larder up --retain-log` does.
    pub fn with_backup(mut self) -> Self {
        self.backup = true;
        self.node.retain_log_ms = 3_600_000;
        self
    }

    /// With a cross-cluster sync beside the archiver ([`SimConfig::sync`]); the run gets at
    /// least [`SYNC_REGISTER_KEYS`] register keys, so that a move of a few thousand slots
    /// carries some, and the sync copies more than a handful of keys.
    pub fn with_sync(mut self) -> Self {
        self.sync = true;
        self.workload.register_keys = self.workload.register_keys.max(SYNC_REGISTER_KEYS);
        self.with_backup()
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

    pub(crate) fn heal_at(&self) -> Duration {
        self.duration.saturating_sub(self.liveness)
    }

    /// Sessions each group remembers: the node setting, except that a third of the swarm
    /// seeds keep only `clients` to `clients + 4`, so the sessions of reconnected clients and
    /// restarted proxies push out live ones, and the path that answers a forgotten session's
    /// writes (and the clients that open a new one) runs. (Fewer than the clients would make
    /// them evict each other on every write: nothing but indeterminate writes, which only
    /// blinds the checker.)
    pub fn sessions_max(&self) -> usize {
        self.sessions_max_fixed
            .or_else(|| self.sessions_max_drawn())
            .unwrap_or(self.node.sessions_max)
    }

    /// Node `id`'s bound on sessions: [`SimConfig::sessions_max`], except that with
    /// [`SimConfig::sessions_max_uneven`], or where a swarm seed keeps few, even-numbered
    /// nodes keep `clients` more. Replicas of one group are then configured differently and
    /// must still forget the same sessions: each registration carries its leader's bound
    /// (`larder_protocol::SessionSeq::register_bounded`), and a replica that evicted by its
    /// own would apply writes its peers refuse (planted bug `session-bound-local`).
    pub fn sessions_max_of(&self, id: NodeId) -> usize {
        let drawn = self.sessions_max_fixed.is_none() && self.sessions_max_drawn().is_some();
        if (self.sessions_max_uneven || drawn) && id.is_multiple_of(2) {
            self.sessions_max() + self.run_clients() as usize
        } else {
            self.sessions_max()
        }
    }

    /// The small bound a third of the swarm seeds draw; `None`: this seed keeps the node
    /// setting (or the one a test fixed).
    fn sessions_max_drawn(&self) -> Option<usize> {
        let mut rng = SeededRng::new(derive_seed(self.seed, 0x5e55_1045));
        if self.swarm && rng.chance(1.0 / 3.0) {
            let clients = self.run_clients().max(1);
            // Each proxy's write coalescer holds a session in every group it writes to,
            // beside the clients' (`larder_proxy::coalesce`): counted among the holders, or
            // they evict each other on every write (swarm seed 16 with `--pipelined 3`: 57
            // batches answered "session expired" and 238 operations indeterminate).
            let holders = clients + self.proxies * self.coalesce_runners as u64;
            Some(rng.range(clients, clients + 5) as usize + (holders - clients) as usize)
        } else {
            None
        }
    }

    /// The workload the clients run: [`SimConfig::workload`], and with `swarm` the seed's own
    /// choice of the TTL, multi-key and collections families (each on in about a third of the
    /// seeds, from a stream of its own, so a seed without them runs exactly the operations it
    /// always did).
    pub fn run_workload(&self) -> WorkloadConfig {
        let mut workload = self.workload.clone();
        let shape = self.load_shape();
        if shape.contention {
            workload.register_keys = 1;
            workload.counter_keys = 1;
            // In half of them, one list all of them append to. Every append's outcome is
            // part of the list's state, so before the checker cut the appends' orders by the
            // longest read (`larder_workloads` checker, the append bound, stop 60) contention
            // seeds had no list: eight clients appending through faults gave it more orders
            // than it could search (swarm seed 484 ran out of its budget).
            workload.list_keys = u64::from(shape.contention_list);
        }
        if shape.read_heavy {
            let mix = &mut workload.mix;
            mix.read = 4 * (mix.write + mix.add + mix.append).max(1);
            mix.counter_read = mix.counter_read.max(mix.add);
            mix.list_read = mix.list_read.max(mix.append);
        }
        if let Some(rate) = self.rate {
            // Each client starts an operation every 2 * think_ms_max / 2 ms on average.
            let clients = self.run_clients().max(1);
            workload.think_ms_max = 2 * clients * 1000 / rate.max(1);
            workload.paced = true;
        }
        if self.swarm {
            let mut rng = SeededRng::new(derive_seed(self.seed, SWARM_WORKLOAD_STREAM));
            if rng.chance(SWARM_FAMILY_CHANCE) {
                workload = workload.with_ttl(3, 4);
            }
            if rng.chance(SWARM_FAMILY_CHANCE) {
                // One object, often: a torn multi-key read needs a write of the same object
                // to apply while a read of it is between two keys.
                workload = workload.with_multi(1, 12);
            }
            // Drawn last, so the families above stay what they were for every seed.
            if workload.ttl_keys > 0 && rng.chance(SWARM_LULL_CHANCE) {
                let every_ms = rng.range(2_000, 6_000);
                workload.lulls = Some(Lulls {
                    every_ms,
                    for_ms: every_ms / 3 + rng.below(every_ms / 3),
                });
            }
            let mut collections = SeededRng::new(derive_seed(self.seed, SWARM_COLLECTIONS_STREAM));
            if collections.chance(SWARM_FAMILY_CHANCE) {
                // One object, often: a transaction seen half done needs another client's
                // operation on the same object between its commands.
                workload = workload.with_collections(1, 10);
            }
            // A seed that moves slots also deletes keys (the multi-key family is the one
            // with `DEL`): a migration must carry deletes over, not only writes.
            if workload.multi_keys == 0 && !self.run_moves().is_empty() {
                workload = workload.with_multi(1, 12);
            }
        }
        workload
    }

    /// The slot moves the operator asks for: [`SimConfig::moves`], or, with `swarm` and a
    /// center and none given, the seed's own draw from a stream of its own: in
    /// [`SWARM_MOVES_CHANCE`] of the seeds one to three moves at random times before the heal
    /// point, each of a random number of one group's slots (sometimes all) to another group,
    /// so migrations run through whatever faults the seed's plan brings.
    pub fn run_moves(&self) -> Vec<super::PlannedMove> {
        if !self.moves.is_empty() || !self.swarm || self.centers == 0 || self.groups < 2 {
            return self.moves.clone();
        }
        let mut rng = SeededRng::new(derive_seed(self.seed, SWARM_MOVES_STREAM));
        if !rng.chance(SWARM_MOVES_CHANCE) {
            return Vec::new();
        }
        let heal_ms = self.heal_at().as_millis() as u64;
        let mut moves = Vec::new();
        for _ in 0..1 + rng.below(3) {
            let from = 1 + rng.below(self.groups);
            let to = 1 + (from + rng.below(self.groups - 1)) % self.groups;
            moves.push(super::PlannedMove {
                at_ms: rng.range(1_500, heal_ms.max(1_501)),
                from,
                to,
                slots: if rng.chance(0.3) {
                    u16::MAX
                } else {
                    rng.range(1, 1_500) as u16
                },
                split: false,
                aim_keys: false,
                steer: None,
            });
        }
        // Splits and steering from a stream of their own, so the moves above stay what
        // they were for every seed.
        let mut steering = SeededRng::new(derive_seed(self.seed, SWARM_STEER_STREAM));
        for planned in &mut moves {
            planned.split = steering.chance(SWARM_SPLIT_CHANCE);
            planned.aim_keys = steering.chance(SWARM_AIM_KEYS_CHANCE);
            if steering.chance(SWARM_STEER_CHANCE) {
                let after_ms = steering.range(0, 3_000);
                let action = if steering.chance(0.5) {
                    super::SteerAction::Cancel
                } else {
                    super::SteerAction::Pause {
                        for_ms: steering.range(200, 3_000),
                    }
                };
                planned.steer = Some(super::PlannedSteer { after_ms, action });
            }
        }
        moves
    }

    /// A swarm seed whose operator moves slots gets, on top of its plan (from a stream of its
    /// own, so nothing else in the plan changes), a delay of every migration between its copy
    /// and its catch-up: with the few keys of a simulated workload a copy takes milliseconds,
    /// and writes and deletes must land in that window for a lost catch-up to show.
    ///
    /// In [`SWARM_LATE_STEPS_CHANCE`] of those seeds (a stream of its own again) the
    /// migration's steps (pages, tracking, ownership) are also delivered a second time, late
    /// ([`Fault::LateSteps`]): after the step that follows them, where a stale page undoes
    /// what the next one wrote. A network duplicate lags its first copy by at most 200 ms,
    /// within the step's own round trip; stop 67's sweeps met a late page only once.
    fn aim_at_migrations(&self, plan: &mut FaultPlan) {
        if !self.swarm || self.run_moves().is_empty() {
            return;
        }
        let mut rng = SeededRng::new(derive_seed(self.seed, SWARM_MIGRATION_AIM_STREAM));
        plan.events.push(ScheduledFault {
            at_ms: 0,
            fault: Fault::DelayAtPoint {
                point: FaultPoint::MigrationCopied,
                node: None,
                delay_ms: rng.range(200, 2_500),
            },
        });
        let mut rng = SeededRng::new(derive_seed(self.seed, SWARM_LATE_STEPS_STREAM));
        if rng.chance(SWARM_LATE_STEPS_CHANCE) {
            plan.events.push(ScheduledFault {
                at_ms: 0,
                fault: Fault::LateSteps {
                    rate: [0.25, 0.5, 1.0][rng.below(3) as usize],
                    lag_ms_max: rng.range(1_000, 6_000),
                },
            });
        }
        plan.events.sort_by_key(|event| event.at_ms);
    }

    /// The nodes the operator drains: [`SimConfig::drains`], or, with `swarm`, a center,
    /// more storage nodes than a group has replicas and none given, in [`SWARM_DRAIN_CHANCE`]
    /// of the seeds one node at a random time before the heal point (its own stream).
    pub fn run_drains(&self) -> Vec<(u64, larder_core::NodeId)> {
        if !self.drains.is_empty() || !self.swarm || self.centers == 0 || self.nodes <= 3 {
            return self.drains.clone();
        }
        let mut rng = SeededRng::new(derive_seed(self.seed, SWARM_DRAIN_STREAM));
        if !rng.chance(SWARM_DRAIN_CHANCE) {
            return Vec::new();
        }
        let heal_ms = self.heal_at().as_millis() as u64;
        vec![(
            rng.range(1_500, heal_ms.max(1_501)),
            1 + rng.below(self.nodes),
        )]
    }

    /// The workload of client `index`: [`SimConfig::run_workload`], except that in half the swarm
    /// seeds the first client only reads. A reader never times out on a write, so it
    /// keeps asking the node it last found leading: a deposed leader that still answered reads
    /// would show it stale values the others wrote through the new leader.
    pub fn client_workload(&self, index: u64) -> WorkloadConfig {
        let mut workload = self.run_workload();
        let mut rng = SeededRng::new(derive_seed(self.seed, READER_STREAM));
        if self.swarm && index == 0 && rng.chance(READER_CHANCE) {
            let mix = &mut workload.mix;
            (mix.write, mix.add, mix.append, mix.ttl, mix.multi) = (0, 0, 0, 0, 0);
            mix.collections = 0;
            mix.read = mix.read.max(1);
        }
        workload
    }

    /// The seed's load shape: with `swarm`, drawn from a stream of its own; none without.
    pub fn load_shape(&self) -> LoadShape {
        if !self.swarm {
            return LoadShape::default();
        }
        let mut rng = SeededRng::new(derive_seed(self.seed, SWARM_LOAD_STREAM));
        let contention = rng.chance(CONTENTION_CHANCE);
        let read_heavy = rng.chance(READ_HEAVY_CHANCE);
        let mut list_rng = SeededRng::new(derive_seed(self.seed, CONTENTION_LIST_STREAM));
        let mut crowd_rng = SeededRng::new(derive_seed(self.seed, CONTENTION_CROWD_STREAM));
        LoadShape {
            contention,
            contention_list: contention && list_rng.chance(CONTENTION_LIST_CHANCE),
            contention_crowd: contention && crowd_rng.chance(CONTENTION_CROWD_CHANCE),
            read_heavy,
        }
    }

    /// The clients this run starts: [`SimConfig::clients`], at least [`CONTENTION_CLIENTS`]
    /// in a contention seed ([`CONTENTION_CROWD_CLIENTS`] in a crowded one), at most
    /// [`CLIENTS_MAX`].
    pub fn run_clients(&self) -> u64 {
        let shape = self.load_shape();
        let clients = match (shape.contention, shape.contention_crowd) {
            (true, true) => self.clients.max(CONTENTION_CROWD_CLIENTS),
            (true, false) => self.clients.max(CONTENTION_CLIENTS),
            (false, _) => self.clients,
        };
        clients.min(CLIENTS_MAX)
    }

    /// The plan this run applies.
    pub fn plan(&self) -> FaultPlan {
        let heal_at_ms = self.heal_at().as_millis() as u64;
        match (&self.plan, self.faults) {
            (_, false) => FaultPlan::none(heal_at_ms),
            (Some(plan), true) => plan.clone(),
            (None, true) => {
                let mix = if self.swarm {
                    let workload = self.run_workload();
                    PlanConfig {
                        aim: Aim {
                            multi_key_reads: workload.multi_keys > 0 && workload.mix.multi > 0,
                            expiring_keys: workload.ttl_keys > 0 && workload.mix.ttl > 0,
                            lull_every_ms: workload.lulls.map_or(0, |l| l.every_ms),
                            lull_ms: workload.lulls.map_or(0, |l| l.for_ms),
                            sticky_reader: self.client_workload(0).mix.write == 0,
                            many_clients: self.run_clients() >= CONTENTION_CLIENTS,
                        },
                        ..PlanConfig::swarm(self.seed)
                    }
                } else {
                    PlanConfig::default()
                };
                if self.centers > 0 {
                    let roles = Roles {
                        storage: self.node_ids(),
                        centers: self.center_ids(),
                        proxies: (0..self.proxies).map(proxy_id).collect(),
                    };
                    let mut plan = FaultPlan::generate_roles(self.seed, &roles, heal_at_ms, &mix);
                    self.aim_at_migrations(&mut plan);
                    plan
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
            // The simulated proxies refresh their table within a second, and the grace protects
            // no data (the source refuses the moved slots at apply time): 1 s keeps a migration
            // resumed late by a new center leader within the run's liveness bound (seed 164).
            migration_grace_ms: 1_000,
            split_records_max: self.split_records_max,
            hot_slot_requests_per_sec_max: self.hot_slot_requests_per_sec_max,
            groups_per_node_min: self.groups_per_node_min,
            split_groups_max: self.groups as usize * 2,
            bugs: self.bugs.clone(),
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

/// Node id of simulated proxy `index`.
pub fn proxy_id(index: u64) -> NodeId {
    200 + index
}

/// Node id of simulated center replica `index`.
pub fn center_id(index: u64) -> NodeId {
    301 + index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_clients_change_what_runs() {
        let mut config = SimConfig::cluster(1, Duration::from_secs(20), 5, 8, 2);
        let before = config.run_workload();
        assert!(!before.paced);
        config.clients = 40;
        config.rate = Some(1000);
        let workload = config.run_workload();
        // 40 clients at 25 ops/s each: a start every 40 ms on average, pauses from [0, 80].
        assert!(workload.paced);
        assert_eq!(workload.think_ms_max, 80);
        assert_eq!(config.run_clients(), 40);
        config.clients = 500;
        assert_eq!(config.run_clients(), CLIENTS_MAX);
    }

    #[test]
    fn the_swarm_collections_family_is_on_in_about_a_third_of_the_seeds() {
        let mut on = Vec::new();
        for seed in 1..=200 {
            let mut config = SimConfig::cluster(seed, Duration::from_secs(15), 5, 8, 2);
            assert_eq!(config.run_workload().collection_keys, 0, "only swarm picks");
            config.swarm = true;
            let workload = config.run_workload();
            if workload.collection_keys > 0 {
                assert!(workload.mix.collections > 0);
                on.push(seed);
            } else {
                assert_eq!(workload.mix.collections, 0);
            }
            // The read-only first client stays read-only.
            if config.client_workload(0).mix.write == 0 {
                assert_eq!(config.client_workload(0).mix.collections, 0);
            }
        }
        assert!((45..95).contains(&on.len()), "{on:?}");
    }

    #[test]
    fn swarm_load_shapes_come_from_their_own_stream() {
        let mut shapes = (0, 0, 0);
        let (mut with_list, mut crowded) = (0, 0);
        for seed in 1..=200 {
            let mut config = SimConfig::cluster(seed, Duration::from_secs(15), 5, 8, 2);
            assert_eq!(
                config.load_shape(),
                LoadShape::default(),
                "only swarm picks"
            );
            config.swarm = true;
            let shape = config.load_shape();
            let workload = config.run_workload();
            // Everything but the shape's own fields is what the seed ran before.
            let mut unshaped = config.clone();
            unshaped.swarm = false;
            let plain = unshaped.workload.clone();
            if shape.contention {
                shapes.0 += 1;
                let clients = if shape.contention_crowd {
                    CONTENTION_CROWD_CLIENTS
                } else {
                    CONTENTION_CLIENTS
                };
                assert_eq!(config.run_clients(), clients);
                crowded += u32::from(shape.contention_crowd);
                assert_eq!((workload.register_keys, workload.counter_keys), (1, 1));
                assert_eq!(workload.list_keys, u64::from(shape.contention_list));
                with_list += u32::from(shape.contention_list);
            } else {
                assert!(!shape.contention_list && !shape.contention_crowd);
                assert_eq!(config.run_clients(), config.clients);
                assert_eq!(workload.register_keys, plain.register_keys);
                assert_eq!(workload.list_keys, plain.list_keys);
            }
            let mix = &workload.mix;
            let reads = mix.read + mix.counter_read + mix.list_read;
            let writes = mix.write + mix.add + mix.append;
            if shape.read_heavy {
                shapes.1 += 1;
                assert!(reads > 4 * writes, "{mix:?}");
            } else {
                assert_eq!(
                    (mix.write, mix.read, mix.add, mix.counter_read),
                    (
                        plain.mix.write,
                        plain.mix.read,
                        plain.mix.add,
                        plain.mix.counter_read
                    )
                );
            }
            if shape == LoadShape::default() {
                shapes.2 += 1;
            }
        }
        // About a quarter each, about 56 % neither.
        assert!((30..70).contains(&shapes.0), "{shapes:?}");
        assert!((30..70).contains(&shapes.1), "{shapes:?}");
        assert!((85..140).contains(&shapes.2), "{shapes:?}");
        // About half the contention seeds share a list.
        assert!(
            (shapes.0 / 4..shapes.0 * 3 / 4).contains(&with_list),
            "{with_list} of {shapes:?}"
        );
        // And about half are crowded.
        assert!(
            (shapes.0 / 4..shapes.0 * 3 / 4).contains(&crowded),
            "{crowded} of {shapes:?}"
        );
    }
}
