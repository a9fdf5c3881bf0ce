//! `larder-faults`: fault plans as data.
//!
//! A [`FaultPlan`] is a time-ordered list of [`Fault`]s with the simulated (or real) time at
//! which each is applied, followed by a heal point after which nothing is broken and the
//! cluster must serve again (the liveness phase). Plans are plain serde data, so a failing run
//! can print, save and replay its exact plan, and the same plan can later drive real processes.
//!
//! This crate decides *what* goes wrong and *when*; the simulator (and later the Jepsen-style
//! runner) decides *how*. It must not depend on node internals.

use larder_core::NodeId;
use larder_core::env::{FaultPoint, Rng, SeededRng, Space, derive_seed};
use serde::{Deserialize, Serialize};

/// One thing that goes wrong (or is put right).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// No message crosses between the two sides, in either direction.
    Partition {
        side_a: Vec<NodeId>,
        side_b: Vec<NodeId>,
    },
    /// Messages from `from` to `to` are lost; the other direction works.
    PartitionOneWay { from: Vec<NodeId>, to: Vec<NodeId> },
    /// Cut the current leader of the storage group off from every other process.
    IsolateLeader,
    /// Remove every partition.
    HealPartitions,
    /// Lose each message with this probability.
    MessageLoss { rate: f64 },
    /// Deliver each request twice with this probability.
    MessageDuplication { rate: f64 },
    /// Add a random extra delay of up to this much to each message (reorders them).
    MessageDelay { delay_ms_max: u64 },
    /// Back to a clean network (no loss, duplication or extra delay).
    HealMessages,
    /// Kill the process; writes its disk had not synced are lost.
    Crash { node: NodeId },
    /// Start a crashed process again from its disk.
    Restart { node: NodeId },
    /// Every disk operation of `node` takes up to this long.
    SlowDisk { node: NodeId, latency_ms_max: u64 },
    /// Disk operations of `node` fail with EIO at this rate.
    DiskErrors { node: NodeId, rate: f64 },
    /// `node`'s disk is healthy and fast again.
    HealDisk { node: NodeId },
    /// `node`'s wall clock is `offset_ms` away from true time.
    ClockOffset { node: NodeId, offset_ms: i64 },
    /// `node`'s clocks run fast (positive) or slow by `ppm` parts per million.
    ClockDrift { node: NodeId, ppm: i64 },
    /// `node`'s wall clock jumps by `jump_ms` (negative: backwards).
    ClockJump { node: NodeId, jump_ms: i64 },
    /// `node`'s clocks are true again.
    HealClock { node: NodeId },
    /// The process stops (SIGSTOP): nothing it sends or is sent moves until it resumes, then
    /// everything held is delivered at once, late.
    Pause { node: NodeId },
    /// The paused process continues (SIGCONT).
    Resume { node: NodeId },
    /// Kill whichever center replica leads the center group now (unsynced writes lost).
    CrashCenterLeader,
    /// Start every crashed center replica again from its disk.
    RestartCenters,
    /// `node`'s machine is gone for good: killed and never restarted, not even at the heal
    /// point. The center must notice and re-replicate its slot groups elsewhere.
    Destroy { node: NodeId },
    /// Targeted: the next process to pass `point` (`node`'s, if given) loses power there: its
    /// disk completes no sync from that instant, it crashes `after_ms` later (what it sent
    /// meanwhile is out) losing every unsynced write, and restarts `down_ms` after that.
    CrashAtPoint {
        point: FaultPoint,
        node: Option<NodeId>,
        after_ms: u64,
        down_ms: u64,
    },
    /// Targeted: every pass of `point` (by `node`, if given) waits `delay_ms`, until healed.
    DelayAtPoint {
        point: FaultPoint,
        node: Option<NodeId>,
        delay_ms: u64,
    },
    /// Disarm every fault point.
    HealPoints,
    /// Whole-cluster power loss: every storage node and center replica crashes at once, and
    /// every write not yet synced is lost everywhere.
    PowerLoss,
    /// Power is back: every process the power loss took down starts again from its disk.
    PowerRestored,
    /// Cut the leader of a group off from the other storage nodes and centers, but not from
    /// clients and proxies: it keeps believing it leads and keeps being asked. With
    /// `majority_reachable`, clients reach the new leader too, so a deposed leader that still
    /// answers reads would answer stale ones. Without, only the old leader is reachable: it
    /// builds a long uncommitted log tail while the new leader gets no writes, so on healing it
    /// must truncate a tail longer than what replaces it.
    IsolateLeaderFromPeers { majority_reachable: bool },
    /// `node`'s disk is full: every write fails until `HealDisk`.
    DiskFull { node: NodeId },
    /// Kill a proxy: its client connections drop mid-request.
    CrashProxy { proxy: NodeId },
    /// Start a crashed proxy again.
    RestartProxy { proxy: NodeId },
    /// Targeted: the leader of a group (a random one, with many) is killed at its next apply,
    /// losing what it had not synced (the state it acknowledged last: a process crash loses a
    /// storage engine's buffered writes), and its supervisor starts it again `down_ms` later,
    /// long before its followers' election timeouts run out: it comes back still believing it
    /// leads, with a state machine behind what it acknowledged, while clients still send to
    /// it.
    BounceLeader { down_ms: u64 },
    /// Every message from `from` to `to` (not the other way) takes `delay_ms` longer, until
    /// `HealMessages`: an asymmetric slow link.
    SlowLink {
        from: NodeId,
        to: NodeId,
        delay_ms: u64,
    },
    /// A bit flips at rest in one record of `node`'s disk, in `space`: the `pick`-th record
    /// (modulo their number), at bit `bit` (modulo its length). Permanent: nothing heals it
    /// but a later write of the same key. The node's record checksums must catch it when it
    /// is read, and the replica must be retired and replaced, never serve it.
    CorruptRecord {
        node: NodeId,
        space: Space,
        pick: u64,
        bit: u64,
    },
    /// Targeted (slot migration): each step a center asks of a group that changes it (a page
    /// of records, a tracking start or end, an ownership) is, with probability `rate`,
    /// delivered a second time, late: just after the sender's next step to the same node is
    /// answered, or `lag_ms_max` after the first copy if no step follows by then (a deposed
    /// center leader's, landing amid a new leader's). A request held in a queue past its
    /// sender's timeout and the steps after it. Until the heal point.
    LateSteps { rate: f64, lag_ms_max: u64 },
}

impl Fault {
    /// Its kind, for counting faults by type.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Partition { .. } => FaultKind::Partition,
            Fault::PartitionOneWay { .. } => FaultKind::PartitionOneWay,
            Fault::IsolateLeader => FaultKind::IsolateLeader,
            Fault::HealPartitions => FaultKind::HealPartitions,
            Fault::MessageLoss { .. } => FaultKind::MessageLoss,
            Fault::MessageDuplication { .. } => FaultKind::MessageDuplication,
            Fault::MessageDelay { .. } => FaultKind::MessageDelay,
            Fault::HealMessages => FaultKind::HealMessages,
            Fault::Crash { .. } => FaultKind::Crash,
            Fault::Restart { .. } => FaultKind::Restart,
            Fault::SlowDisk { .. } => FaultKind::SlowDisk,
            Fault::DiskErrors { .. } => FaultKind::DiskErrors,
            Fault::HealDisk { .. } => FaultKind::HealDisk,
            Fault::ClockOffset { .. } => FaultKind::ClockOffset,
            Fault::ClockDrift { .. } => FaultKind::ClockDrift,
            Fault::ClockJump { .. } => FaultKind::ClockJump,
            Fault::HealClock { .. } => FaultKind::HealClock,
            Fault::Pause { .. } => FaultKind::Pause,
            Fault::Resume { .. } => FaultKind::Resume,
            Fault::CrashCenterLeader => FaultKind::CrashCenterLeader,
            Fault::RestartCenters => FaultKind::RestartCenters,
            Fault::Destroy { .. } => FaultKind::Destroy,
            Fault::CrashAtPoint { .. } => FaultKind::CrashAtPoint,
            Fault::DelayAtPoint { .. } => FaultKind::DelayAtPoint,
            Fault::HealPoints => FaultKind::HealPoints,
            Fault::PowerLoss => FaultKind::PowerLoss,
            Fault::PowerRestored => FaultKind::PowerRestored,
            Fault::IsolateLeaderFromPeers { .. } => FaultKind::IsolateLeaderFromPeers,
            Fault::DiskFull { .. } => FaultKind::DiskFull,
            Fault::CrashProxy { .. } => FaultKind::CrashProxy,
            Fault::RestartProxy { .. } => FaultKind::RestartProxy,
            Fault::BounceLeader { .. } => FaultKind::BounceLeader,
            Fault::SlowLink { .. } => FaultKind::SlowLink,
            Fault::CorruptRecord { .. } => FaultKind::CorruptRecord,
            Fault::LateSteps { .. } => FaultKind::LateSteps,
        }
    }

    /// True for the faults that repair something rather than break it.
    pub fn is_heal(&self) -> bool {
        matches!(
            self,
            Fault::HealPartitions
                | Fault::HealMessages
                | Fault::Restart { .. }
                | Fault::HealDisk { .. }
                | Fault::HealClock { .. }
                | Fault::Resume { .. }
                | Fault::RestartCenters
                | Fault::HealPoints
                | Fault::PowerRestored
                | Fault::RestartProxy { .. }
        )
    }
}

/// The kind of a [`Fault`] (its serde tag), plus the two things the harness does that no plan
/// schedules: healing everything at the heal point and restarting a node whose Raft stopped on
/// a disk error. Serialized as its snake_case name (`"crash_center_leader"`), and ordered by
/// that name, so maps keyed by kind print as they did when keyed by the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Partition,
    PartitionOneWay,
    IsolateLeader,
    HealPartitions,
    MessageLoss,
    MessageDuplication,
    MessageDelay,
    HealMessages,
    Crash,
    Restart,
    SlowDisk,
    DiskErrors,
    HealDisk,
    ClockOffset,
    ClockDrift,
    ClockJump,
    HealClock,
    Pause,
    Resume,
    CrashCenterLeader,
    RestartCenters,
    Destroy,
    CrashAtPoint,
    DelayAtPoint,
    HealPoints,
    PowerLoss,
    PowerRestored,
    IsolateLeaderFromPeers,
    DiskFull,
    CrashProxy,
    RestartProxy,
    BounceLeader,
    SlowLink,
    CorruptRecord,
    LateSteps,
    /// Everything repaired at the heal point (not a planned fault).
    HealAll,
    /// A node restarted by the harness after a disk error stopped its Raft (not planned).
    RestartAfterFatal,
    /// A node retired a replica whose disk records failed their checksum (not planned: the
    /// store's answer to [`Fault::CorruptRecord`], counted so sweeps show corruption found).
    ReplicaRetired,
}

impl FaultKind {
    /// Every kind, in declaration order (sweeps report which were never applied).
    pub const ALL: [FaultKind; 38] = [
        FaultKind::Partition,
        FaultKind::PartitionOneWay,
        FaultKind::IsolateLeader,
        FaultKind::HealPartitions,
        FaultKind::MessageLoss,
        FaultKind::MessageDuplication,
        FaultKind::MessageDelay,
        FaultKind::HealMessages,
        FaultKind::Crash,
        FaultKind::Restart,
        FaultKind::SlowDisk,
        FaultKind::DiskErrors,
        FaultKind::HealDisk,
        FaultKind::ClockOffset,
        FaultKind::ClockDrift,
        FaultKind::ClockJump,
        FaultKind::HealClock,
        FaultKind::Pause,
        FaultKind::Resume,
        FaultKind::CrashCenterLeader,
        FaultKind::RestartCenters,
        FaultKind::Destroy,
        FaultKind::CrashAtPoint,
        FaultKind::DelayAtPoint,
        FaultKind::HealPoints,
        FaultKind::PowerLoss,
        FaultKind::PowerRestored,
        FaultKind::IsolateLeaderFromPeers,
        FaultKind::DiskFull,
        FaultKind::CrashProxy,
        FaultKind::RestartProxy,
        FaultKind::BounceLeader,
        FaultKind::SlowLink,
        FaultKind::CorruptRecord,
        FaultKind::LateSteps,
        FaultKind::HealAll,
        FaultKind::RestartAfterFatal,
        FaultKind::ReplicaRetired,
    ];

    /// The stable snake_case name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::PartitionOneWay => "partition_one_way",
            FaultKind::IsolateLeader => "isolate_leader",
            FaultKind::HealPartitions => "heal_partitions",
            FaultKind::MessageLoss => "message_loss",
            FaultKind::MessageDuplication => "message_duplication",
            FaultKind::MessageDelay => "message_delay",
            FaultKind::HealMessages => "heal_messages",
            FaultKind::Crash => "crash",
            FaultKind::Restart => "restart",
            FaultKind::SlowDisk => "slow_disk",
            FaultKind::DiskErrors => "disk_errors",
            FaultKind::HealDisk => "heal_disk",
            FaultKind::ClockOffset => "clock_offset",
            FaultKind::ClockDrift => "clock_drift",
            FaultKind::ClockJump => "clock_jump",
            FaultKind::HealClock => "heal_clock",
            FaultKind::Pause => "pause",
            FaultKind::Resume => "resume",
            FaultKind::CrashCenterLeader => "crash_center_leader",
            FaultKind::RestartCenters => "restart_centers",
            FaultKind::Destroy => "destroy",
            FaultKind::CrashAtPoint => "crash_at_point",
            FaultKind::DelayAtPoint => "delay_at_point",
            FaultKind::HealPoints => "heal_points",
            FaultKind::PowerLoss => "power_loss",
            FaultKind::PowerRestored => "power_restored",
            FaultKind::IsolateLeaderFromPeers => "isolate_leader_from_peers",
            FaultKind::DiskFull => "disk_full",
            FaultKind::CrashProxy => "crash_proxy",
            FaultKind::RestartProxy => "restart_proxy",
            FaultKind::BounceLeader => "bounce_leader",
            FaultKind::SlowLink => "slow_link",
            FaultKind::CorruptRecord => "corrupt_record",
            FaultKind::LateSteps => "late_steps",
            FaultKind::HealAll => "heal_all",
            FaultKind::RestartAfterFatal => "restart_after_fatal",
            FaultKind::ReplicaRetired => "replica_retired",
        }
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialOrd for FaultKind {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// By name, not declaration order: counts by kind list alphabetically.
impl Ord for FaultKind {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

/// A fault and when to apply it (milliseconds since the start of the run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduledFault {
    pub at_ms: u64,
    pub fault: Fault,
}

/// A whole run's faults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    /// Sorted by `at_ms`.
    pub events: Vec<ScheduledFault>,
    /// From here on nothing is broken: every crashed node is restarted, every partition and
    /// message, disk and clock fault healed. The cluster must serve again within the run's
    /// liveness bound.
    pub heal_at_ms: u64,
}

/// The processes of a whole cluster by role, for plans whose faults target roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    pub storage: Vec<NodeId>,
    pub centers: Vec<NodeId>,
    pub proxies: Vec<NodeId>,
}

/// Which kinds a generated plan may use, and how often faults start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanConfig {
    pub partitions: bool,
    pub crashes: bool,
    pub disk: bool,
    pub clocks: bool,
    pub messages: bool,
    /// Mean gap between the starts of two faults.
    pub gap_ms_mean: u64,
    /// Longest a single fault lasts before it is healed.
    pub fault_ms_max: u64,
    /// Process pauses (SIGSTOP/SIGCONT).
    #[serde(default)]
    pub pauses: bool,
    /// Bridge partitions: two sides that cannot talk, and one node that talks to both.
    #[serde(default)]
    pub bridges: bool,
    /// Targeted faults: crashes and delays at fault points, whole-cluster power loss, a leader
    /// cut off from its peers but not its clients, a full disk, proxy crashes.
    #[serde(default)]
    pub targeted: bool,
    /// What the run's workload does that targeted faults aim at (the simulator sets it from
    /// the workload it runs). Plans with nothing to aim at draw what they always drew.
    #[serde(default)]
    pub aim: Aim,
    /// Asymmetric slow links ([`Fault::SlowLink`]), drawn from their own stream
    /// ([`slow_links`]) and added to the plan after everything else.
    #[serde(default)]
    pub slow_links: bool,
    /// Bits flipped at rest on one node's disk ([`Fault::CorruptRecord`]), drawn from their
    /// own stream ([`corruption`]) and added after everything else.
    #[serde(default)]
    pub corruption: bool,
}

/// Workload shapes that targeted faults aim at: where a bug in them would hide, a fault makes
/// the window wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aim {
    /// Clients read several keys of one group at once (`MGET`): aimed faults delay every read
    /// between two of its keys, so an apply that a read does not hold off lands inside it.
    pub multi_key_reads: bool,
    /// Clients write keys that expire and read them as they do: aimed faults jump a node's
    /// clock ahead and soon back, so a read judged at a time the log never reached is
    /// followed by reads judged earlier.
    pub expiring_keys: bool,
    /// The workload's lulls (clients only read for the last `lull_ms` of every
    /// `lull_every_ms`); 0: none. Aimed clock faults fall inside one.
    #[serde(default)]
    pub lull_every_ms: u64,
    #[serde(default)]
    pub lull_ms: u64,
    /// A client only reads, so it keeps asking the node it last found leading (it never
    /// times out on a write): aimed faults cut that leader off from its peers but not from
    /// clients, so a deposed leader that still answered reads would answer stale ones; or
    /// put the leader in a crash loop, so a leader restored without an election would answer
    /// from a state machine behind what it acknowledged.
    #[serde(default)]
    pub sticky_reader: bool,
    /// Many clients (a contention run): aimed faults cut the leader off from its peers and
    /// leave only it reachable to clients, so their writes pile up into a long uncommitted
    /// tail that a new leader's short log must replace when the partition heals.
    #[serde(default)]
    pub many_clients: bool,
}

impl Aim {
    /// Whether there is anything to aim at: plans then get a few aimed faults on top of the
    /// ones the swarm mix draws.
    pub fn any(self) -> bool {
        self.multi_key_reads || self.expiring_keys || self.sticky_reader || self.many_clients
    }

    /// `(every_ms, length_ms)` of the lulls, if any.
    fn lull(self) -> Option<(u64, u64)> {
        (self.lull_every_ms > 0 && self.lull_ms > 0 && self.lull_ms <= self.lull_every_ms)
            .then_some((self.lull_every_ms, self.lull_ms))
    }
}

impl Default for PlanConfig {
    fn default() -> Self {
        PlanConfig {
            partitions: true,
            crashes: true,
            disk: true,
            clocks: true,
            messages: true,
            gap_ms_mean: 2500,
            fault_ms_max: 4000,
            // Off by default so the default plans (and the regression seeds built on them)
            // stay as they were; swarm plans draw them.
            pauses: false,
            bridges: false,
            targeted: false,
            aim: Aim::default(),
            slow_links: false,
            corruption: false,
        }
    }
}

impl PlanConfig {
    /// A **swarm** configuration: the seed picks which kinds of faults the run uses (each kind
    /// with probability 0.6, at least one) and how dense and long they are. Runs that see only
    /// a few kinds, often, reach states an even mix of everything rarely does (swarm testing,
    /// Groce et al. 2012; FoundationDB's "buggify" profiles).
    pub fn swarm(seed: u64) -> PlanConfig {
        let mut rng = SeededRng::new(derive_seed(seed, 0x5_a4a));
        let mut kinds = [(); 5].map(|()| rng.chance(0.6));
        if !kinds.iter().any(|&on| on) {
            kinds[rng.below(5) as usize] = true;
        }
        let [partitions, crashes, disk, clocks, messages] = kinds;
        PlanConfig {
            partitions,
            crashes,
            disk,
            clocks,
            messages,
            gap_ms_mean: rng.range(600, 5000),
            fault_ms_max: rng.range(800, 6000),
            pauses: rng.chance(0.5),
            bridges: partitions && rng.chance(0.5),
            // Drawn last, so the mixes above stay what they were for every seed.
            targeted: rng.chance(0.6),
            aim: Aim::default(),
            // Drawn after `targeted`, so every earlier draw stays what it was.
            slow_links: rng.chance(0.4),
            // Drawn last for the same reason.
            corruption: rng.chance(0.4),
        }
    }
}

impl FaultPlan {
    /// [`FaultPlan::generate`] with the seed's own [`PlanConfig::swarm`] mix.
    pub fn swarm(seed: u64, nodes: &[NodeId], heal_at_ms: u64) -> FaultPlan {
        FaultPlan::generate(seed, nodes, heal_at_ms, &PlanConfig::swarm(seed))
    }

    /// No faults at all: the run only checks that a healthy cluster serves.
    pub fn none(heal_at_ms: u64) -> Self {
        FaultPlan {
            events: Vec::new(),
            heal_at_ms,
        }
    }

    /// Kinds and how many times each appears (heals included).
    pub fn counts(&self) -> std::collections::BTreeMap<FaultKind, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for event in &self.events {
            *counts.entry(event.fault.kind()).or_insert(0) += 1;
        }
        counts
    }

    /// A seeded plan over `nodes` for a run whose faults stop at `heal_at_ms`.
    ///
    /// Faults start at seeded intervals; each is healed after a seeded duration (and at the
    /// latest at `heal_at_ms`). At most a minority of nodes is crashed at any moment, so the
    /// plan never makes the group permanently unable to elect (it may still lose quorum through
    /// partitions, which the liveness phase then heals).
    pub fn generate(
        seed: u64,
        nodes: &[NodeId],
        heal_at_ms: u64,
        config: &PlanConfig,
    ) -> FaultPlan {
        let mut rng = SeededRng::new(derive_seed(seed, 0xfa_17));
        let mut events = Vec::new();
        let mut crashed: Vec<(NodeId, u64)> = Vec::new(); // (node, restart time)
        let mut kinds: Vec<u8> = Vec::new();
        for (enabled, kind) in [
            (config.partitions, 0u8),
            (config.crashes, 1),
            (config.disk, 2),
            (config.clocks, 3),
            (config.messages, 4),
            (config.pauses, 5),
            (config.targeted, 6),
        ] {
            if enabled {
                kinds.push(kind);
            }
        }
        if kinds.is_empty() || nodes.is_empty() {
            return FaultPlan::none(heal_at_ms);
        }
        let mut at = rng.range(500, config.gap_ms_mean.max(501));
        // Bounded: each iteration advances `at` by at least 200 ms.
        while at < heal_at_ms {
            let length = rng.range(300, config.fault_ms_max.max(301));
            let until = (at + length).min(heal_at_ms);
            let node = nodes[rng.below(nodes.len() as u64) as usize];
            let mut push = |at_ms: u64, fault: Fault| events.push(ScheduledFault { at_ms, fault });
            match kinds[rng.below(kinds.len() as u64) as usize] {
                0 => {
                    let fault = match rng.below(if config.bridges { 4 } else { 3 }) {
                        0 => Fault::IsolateLeader,
                        1 => {
                            let (side_a, side_b) = split(&mut rng, nodes);
                            Fault::Partition { side_a, side_b }
                        }
                        2 => {
                            let (from, to) = split(&mut rng, nodes);
                            Fault::PartitionOneWay { from, to }
                        }
                        _ => {
                            // The bridge belongs to neither side, so it still talks to both.
                            let rest: Vec<NodeId> =
                                nodes.iter().copied().filter(|&n| n != node).collect();
                            let (side_a, side_b) = split(&mut rng, &rest);
                            Fault::Partition { side_a, side_b }
                        }
                    };
                    push(at, fault);
                    push(until, Fault::HealPartitions);
                }
                // Drawn only with targeted faults on, so default plans stay as they were.
                1 if config.targeted && rng.chance(0.4) => {
                    let bounces = rng.range(2, 6);
                    crash_loop(&mut rng, &mut push, at, until, bounces);
                }
                1 => {
                    crashed.retain(|(_, restart)| *restart > at);
                    let minority = nodes.len().saturating_sub(1) / 2;
                    if crashed.len() < minority && !crashed.iter().any(|(n, _)| *n == node) {
                        push(at, Fault::Crash { node });
                        push(until, Fault::Restart { node });
                        crashed.push((node, until));
                    }
                }
                2 => {
                    let fault = if rng.chance(0.7) {
                        Fault::SlowDisk {
                            node,
                            latency_ms_max: rng.range(5, 80),
                        }
                    } else {
                        Fault::DiskErrors {
                            node,
                            rate: 0.002 * (1 + rng.below(5)) as f64,
                        }
                    };
                    push(at, fault);
                    push(until, Fault::HealDisk { node });
                }
                3 => {
                    let fault = match rng.below(3) {
                        0 => Fault::ClockOffset {
                            node,
                            offset_ms: rng.range(0, 20_000) as i64 - 10_000,
                        },
                        1 => Fault::ClockDrift {
                            node,
                            ppm: rng.range(0, 200_000) as i64 - 100_000,
                        },
                        _ => Fault::ClockJump {
                            node,
                            jump_ms: rng.range(0, 60_000) as i64 - 30_000,
                        },
                    };
                    push(at, fault);
                    push(until, Fault::HealClock { node });
                }
                5 => {
                    push(at, Fault::Pause { node });
                    push(until, Fault::Resume { node });
                }
                6 => targeted(&mut rng, &mut push, node, at, until),
                _ => {
                    let fault = match rng.below(3) {
                        0 => Fault::MessageLoss {
                            rate: 0.01 * (1 + rng.below(10)) as f64,
                        },
                        1 => Fault::MessageDuplication {
                            rate: 0.02 * (1 + rng.below(10)) as f64,
                        },
                        _ => Fault::MessageDelay {
                            delay_ms_max: rng.range(5, 200),
                        },
                    };
                    push(at, fault);
                    push(until, Fault::HealMessages);
                }
            }
            at += rng.range(200, 2 * config.gap_ms_mean.max(101));
        }
        // Aimed faults come on top, from a stream of their own: a plan with nothing to aim at
        // is exactly what it was, and one with something always has a few.
        if config.aim.any() && heal_at_ms > 1_000 {
            let mut rng = SeededRng::new(derive_seed(seed, 0xa1_3ed));
            for _ in 0..1 + rng.below(3) {
                let at = rng.range(500, heal_at_ms - 300);
                let until = (at + rng.range(300, config.fault_ms_max.max(301))).min(heal_at_ms);
                let mut push =
                    |at_ms: u64, fault: Fault| events.push(ScheduledFault { at_ms, fault });
                aimed(
                    &mut rng,
                    &mut push,
                    nodes,
                    (at, until),
                    heal_at_ms,
                    config.aim,
                );
            }
        }
        if config.slow_links {
            slow_links(seed, nodes, heal_at_ms, config, &mut events);
        }
        if config.corruption {
            corruption(seed, nodes, heal_at_ms, &mut events);
        }
        // Stable sort keeps a fault before its own heal when both land on the same millisecond.
        events.sort_by_key(|event| event.at_ms);
        FaultPlan { events, heal_at_ms }
    }
}

impl FaultPlan {
    /// [`FaultPlan::generate`] over the storage nodes, plus faults that target roles, drawn from
    /// their own random stream (so the storage faults of a seed do not depend on the roles):
    /// - with crashes: the center leader is killed and its replicas restarted later, a few
    ///   times a run; and, once, in the first half of the run, a storage node is destroyed for
    ///   good (when there are more storage nodes than replicas need, i.e. more than three);
    /// - with partitions: a proxy is cut off from every center replica for a while;
    /// - with clocks: a center replica's clock is offset or drifts.
    pub fn generate_roles(
        seed: u64,
        roles: &Roles,
        heal_at_ms: u64,
        config: &PlanConfig,
    ) -> FaultPlan {
        let mut plan = FaultPlan::generate(seed, &roles.storage, heal_at_ms, config);
        if roles.centers.is_empty() {
            return plan;
        }

        let mut rng = SeededRng::new(derive_seed(seed, 0xce_47e5));
        let mut events = Vec::new();
        let mut push = |at_ms: u64, fault: Fault| events.push(ScheduledFault { at_ms, fault });
        // Room for the cluster to form before the first role fault.
        let start = 2_000.min(heal_at_ms);
        if config.crashes && roles.storage.len() > 3 && heal_at_ms > start {
            let at = rng.range(start, start + (heal_at_ms - start) / 2 + 1);
            let node = roles.storage[rng.below(roles.storage.len() as u64) as usize];
            push(at, Fault::Destroy { node });
            // A destroyed node and a corrupt replica on another can leave a group they share
            // one healthy voter until the repair of either finishes: no majority, so no repair
            // either, for good. A real outage (two of three copies lost), not a bug to find.
            // So the bad disk is the destroyed node's, corrupted before it is destroyed.
            plan.events.retain_mut(|event| match &mut event.fault {
                Fault::CorruptRecord { node: bad, .. } => {
                    *bad = node;
                    event.at_ms < at
                }
                _ => true,
            });
        }
        let mut at = start + rng.range(0, config.gap_ms_mean.max(1) * 2);
        while at < heal_at_ms {
            let until = (at + rng.range(300, config.fault_ms_max.max(301))).min(heal_at_ms);
            match rng.below(if config.targeted { 4 } else { 3 }) {
                0 if config.crashes => {
                    push(at, Fault::CrashCenterLeader);
                    push(until, Fault::RestartCenters);
                }
                1 if config.partitions && !roles.proxies.is_empty() => {
                    let proxy = roles.proxies[rng.below(roles.proxies.len() as u64) as usize];
                    push(
                        at,
                        Fault::Partition {
                            side_a: vec![proxy],
                            side_b: roles.centers.clone(),
                        },
                    );
                    push(until, Fault::HealPartitions);
                }
                3 if config.targeted && !roles.proxies.is_empty() => {
                    let proxy = roles.proxies[rng.below(roles.proxies.len() as u64) as usize];
                    push(at, Fault::CrashProxy { proxy });
                    push(until, Fault::RestartProxy { proxy });
                }
                2 if config.clocks => {
                    let node = roles.centers[rng.below(roles.centers.len() as u64) as usize];
                    let fault = if rng.chance(0.5) {
                        Fault::ClockOffset {
                            node,
                            offset_ms: rng.range(0, 20_000) as i64 - 10_000,
                        }
                    } else {
                        Fault::ClockDrift {
                            node,
                            ppm: rng.range(0, 200_000) as i64 - 100_000,
                        }
                    };
                    push(at, fault);
                    push(until, Fault::HealClock { node });
                }
                _ => {}
            }
            at += rng.range(1_000, 4 * config.gap_ms_mean.max(251));
        }
        plan.events.extend(events);
        // Stable: a fault stays before its own heal on the same millisecond.
        plan.events.sort_by_key(|event| event.at_ms);
        plan
    }
}

/// One fault aimed at what the workload does ([`Aim`]): between `at` and `until`, or for a
/// clock fault in the first lull after `at` (before `heal_at_ms`).
fn aimed(
    rng: &mut SeededRng,
    push: &mut impl FnMut(u64, Fault),
    nodes: &[NodeId],
    (at, until): (u64, u64),
    heal_at_ms: u64,
    aim: Aim,
) {
    let targets: Vec<u8> = [
        (aim.multi_key_reads, 0u8),
        (aim.expiring_keys, 1),
        (aim.sticky_reader, 2),
        (aim.many_clients, 3),
    ]
    .into_iter()
    .filter_map(|(on, target)| on.then_some(target))
    .collect();
    let Some(&target) = targets.get(rng.below(targets.len().max(1) as u64) as usize) else {
        return;
    };
    if target == 3 {
        isolate_leader_for_a_while(rng, push, at, heal_at_ms, false);
        return;
    }
    if target == 2 && rng.chance(0.5) {
        // The reader asks the leader it knows again at once: a leader in a crash loop that
        // comes back believing it leads answers it before it has caught up.
        let bounces = rng.range(3, 8);
        crash_loop(rng, push, at, heal_at_ms, bounces);
        return;
    }
    if target == 2 {
        isolate_leader_for_a_while(rng, push, at, heal_at_ms, true);
        return;
    }
    if target == 0 {
        push(
            at,
            Fault::DelayAtPoint {
                point: FaultPoint::ReadBetweenKeys,
                node: None,
                delay_ms: rng.range(1, 40),
            },
        );
        push(until, Fault::HealPoints);
        return;
    }
    // Forward, then back, on every node at once (a bad time source): while ahead, a
    // leader judges reads later than any stamp in its group's log (keys look expired that
    // the log never expired); back, it judges them earlier again. Inside a lull of the
    // traffic when there are lulls, so no write moves the group clock in between.
    // Past most expiries the workload sets (up to 3 s), so many keys look expired.
    let jump_ms = rng.range(1_500, 5_000) as i64;
    let (start, end) = match aim.lull() {
        Some((every, length)) => {
            // One of the lulls that ends before the heal point, at random.
            let lulls = heal_at_ms.saturating_sub(every - length + length * 4 / 5) / every;
            if every - length + length * 4 / 5 > heal_at_ms {
                return;
            }
            let lull_start = rng.below(lulls + 1) * every + every - length;
            // Early in the lull, while keys written just before it are still live.
            let offset = rng.range(50, 300).min(length / 4);
            (lull_start + offset, lull_start + length * 4 / 5)
        }
        None => (at, at + rng.range(100, 1_000)),
    };
    if end > heal_at_ms {
        return;
    }
    for &node in nodes {
        push(start, Fault::ClockJump { node, jump_ms });
        push(end, Fault::HealClock { node });
    }
}

/// A crash loop: the supervisor restarts the leader, which dies again, `bounces` times from
/// `at`, 150-600 ms apart, none from `until` on (each restart 1-30 ms after its crash).
fn crash_loop(
    rng: &mut SeededRng,
    push: &mut impl FnMut(u64, Fault),
    at: u64,
    until: u64,
    bounces: u64,
) {
    let mut when = at;
    for _ in 0..bounces {
        let down_ms = rng.range(1, 30);
        push(when, Fault::BounceLeader { down_ms });
        when += rng.range(150, 600);
        if when >= until {
            break;
        }
    }
}

/// The leader cut off from its peers (and, without `majority_reachable`, everyone else cut
/// off from clients) for 2-4 s: long enough for an election and writes to follow.
fn isolate_leader_for_a_while(
    rng: &mut SeededRng,
    push: &mut impl FnMut(u64, Fault),
    at: u64,
    heal_at_ms: u64,
    majority_reachable: bool,
) {
    push(at, Fault::IsolateLeaderFromPeers { majority_reachable });
    push(
        (at + rng.range(2_000, 4_000)).min(heal_at_ms),
        Fault::HealPartitions,
    );
}

/// Asymmetric slow links among `nodes`: one direction of one link at a time gets slower for a
/// while, then `HealMessages`. From its own random stream, so enabling it shifts no other draw.
fn slow_links(
    seed: u64,
    nodes: &[NodeId],
    heal_at_ms: u64,
    config: &PlanConfig,
    events: &mut Vec<ScheduledFault>,
) {
    if nodes.len() < 2 {
        return;
    }
    let mut rng = SeededRng::new(derive_seed(seed, 0x51_0e));
    let mut at = rng.range(500, config.gap_ms_mean.max(501));
    // Bounded: each iteration advances `at` by at least 500 ms.
    while at < heal_at_ms {
        let until = (at + rng.range(300, config.fault_ms_max.max(301))).min(heal_at_ms);
        let from = nodes[rng.below(nodes.len() as u64) as usize];
        let others: Vec<NodeId> = nodes.iter().copied().filter(|&n| n != from).collect();
        let to = others[rng.below(others.len() as u64) as usize];
        let delay_ms = rng.range(20, 400);
        events.push(ScheduledFault {
            at_ms: at,
            fault: Fault::SlowLink { from, to, delay_ms },
        });
        events.push(ScheduledFault {
            at_ms: until,
            fault: Fault::HealMessages,
        });
        at += rng.range(500, 3 * config.gap_ms_mean.max(501));
    }
}

/// Bits flipped at rest ([`Fault::CorruptRecord`]): one to three, all on one node's disk (a
/// bad disk; two corrupt replicas of a group would be two of three copies lost), mostly in
/// state records (read by clients) and otherwise in log records (read by replication and
/// restarts). From its own random stream, so enabling it shifts no other draw.
fn corruption(seed: u64, nodes: &[NodeId], heal_at_ms: u64, events: &mut Vec<ScheduledFault>) {
    if nodes.is_empty() || heal_at_ms <= 1_000 {
        return;
    }
    let mut rng = SeededRng::new(derive_seed(seed, 0xc0_44));
    let node = nodes[rng.below(nodes.len() as u64) as usize];
    for _ in 0..1 + rng.below(3) {
        let space = if rng.chance(0.7) {
            Space::State
        } else {
            Space::Log
        };
        events.push(ScheduledFault {
            at_ms: rng.range(1_000, heal_at_ms),
            fault: Fault::CorruptRecord {
                node,
                space,
                pick: rng.next_u64(),
                bit: rng.next_u64(),
            },
        });
    }
}

/// One targeted fault between `at` and `until` (see [`PlanConfig::targeted`]).
fn targeted(
    rng: &mut SeededRng,
    push: &mut impl FnMut(u64, Fault),
    node: NodeId,
    at: u64,
    until: u64,
) {
    let point = FaultPoint::STORAGE[rng.below(FaultPoint::STORAGE.len() as u64) as usize];
    // Mostly whichever process gets there first: a point on a rare path (a truncation, a
    // snapshot install) is then hit whenever anyone takes it.
    let target = if rng.chance(0.7) { None } else { Some(node) };
    match rng.below(8) {
        0 | 1 => push(
            at,
            Fault::CrashAtPoint {
                point,
                node: target,
                after_ms: rng.range(0, 30),
                down_ms: rng.range(50, (until - at).max(51)),
            },
        ),
        2 => {
            push(
                at,
                Fault::DelayAtPoint {
                    point,
                    node: target,
                    delay_ms: rng.range(5, 300),
                },
            );
            push(until, Fault::HealPoints);
        }
        3 | 4 => {
            let majority_reachable = rng.chance(0.5);
            push(at, Fault::IsolateLeaderFromPeers { majority_reachable });
            push(until, Fault::HealPartitions);
            if !majority_reachable && rng.chance(0.5) {
                // The old leader truncates its tail when it rejoins: power fails right then.
                push(
                    until,
                    Fault::CrashAtPoint {
                        point: FaultPoint::LogTruncated,
                        node: None,
                        after_ms: rng.range(0, 30),
                        down_ms: rng.range(100, 2_000),
                    },
                );
            }
        }
        5 => {
            push(at, Fault::PowerLoss);
            push((at + rng.range(50, 2_000)).min(until), Fault::PowerRestored);
        }
        6 => push(
            at,
            Fault::BounceLeader {
                down_ms: rng.range(1, 30),
            },
        ),
        _ => {
            push(at, Fault::DiskFull { node });
            push(until, Fault::HealDisk { node });
        }
    }
}

/// Splits `nodes` into two non-empty sides (when there are at least two nodes).
fn split(rng: &mut SeededRng, nodes: &[NodeId]) -> (Vec<NodeId>, Vec<NodeId>) {
    let mut shuffled = nodes.to_vec();
    for i in (1..shuffled.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        shuffled.swap(i, j);
    }
    let cut = 1 + rng.below(shuffled.len().saturating_sub(1).max(1) as u64) as usize;
    let side_b = shuffled.split_off(cut.min(shuffled.len()));
    (shuffled, side_b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn swarm_seeds_pick_their_own_mix_deterministically() {
        let configs: Vec<PlanConfig> = (0..64).map(PlanConfig::swarm).collect();
        assert_eq!(
            configs[7],
            PlanConfig::swarm(7),
            "a seed must always pick the same mix"
        );
        let distinct: std::collections::BTreeSet<String> =
            configs.iter().map(|c| format!("{c:?}")).collect();
        assert!(distinct.len() > 32, "swarm mixes should vary across seeds");
        for config in &configs {
            assert!(
                config.partitions
                    || config.crashes
                    || config.disk
                    || config.clocks
                    || config.messages,
                "every swarm mix enables at least one kind: {config:?}"
            );
        }
        // Some seed runs without crashes and some without partitions: the point of swarm.
        assert!(configs.iter().any(|c| !c.crashes));
        assert!(configs.iter().any(|c| !c.partitions));
        let plan = FaultPlan::swarm(7, &[1, 2, 3], 15_000);
        assert_eq!(plan, FaultPlan::swarm(7, &[1, 2, 3], 15_000));
    }

    use super::*;

    #[test]
    fn aimed_faults_come_on_top_and_land_where_the_workload_is() {
        let nodes = [1, 2, 3];
        let plain = PlanConfig::swarm(11);
        let before = FaultPlan::generate(11, &nodes, 7_500, &plain);
        let aim = Aim {
            multi_key_reads: false,
            expiring_keys: true,
            lull_every_ms: 3_000,
            lull_ms: 1_200,
            sticky_reader: false,
            many_clients: false,
        };
        let aimed = FaultPlan::generate(11, &nodes, 7_500, &PlanConfig { aim, ..plain });
        // The seed's own faults are unchanged; the aimed ones are extra.
        for event in &before.events {
            assert!(aimed.events.contains(event), "{event:?} kept");
        }
        let jumps: Vec<&ScheduledFault> = aimed
            .events
            .iter()
            .filter(|e| !before.events.contains(e))
            .filter(|e| matches!(e.fault, Fault::ClockJump { .. }))
            .collect();
        assert!(!jumps.is_empty(), "an aimed plan aims: {aimed:?}");
        assert_eq!(jumps.len() % nodes.len(), 0, "every node jumps at once");
        for jump in jumps {
            let in_cycle = jump.at_ms % 3_000;
            assert!(in_cycle >= 1_800, "inside a lull: {jump:?}");
        }
        let multi = Aim {
            multi_key_reads: true,
            ..Aim::default()
        };
        let aimed = FaultPlan::generate(
            11,
            &nodes,
            7_500,
            &PlanConfig {
                aim: multi,
                ..plain
            },
        );
        assert!(aimed.events.iter().any(|e| matches!(
            e.fault,
            Fault::DelayAtPoint {
                point: FaultPoint::ReadBetweenKeys,
                ..
            }
        )));
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let config = PlanConfig::default();
        let a = FaultPlan::generate(7, &[1, 2, 3], 60_000, &config);
        let b = FaultPlan::generate(7, &[1, 2, 3], 60_000, &config);
        assert_eq!(a, b);
        assert_ne!(a, FaultPlan::generate(8, &[1, 2, 3], 60_000, &config));
        assert!(
            a.events.len() > 10,
            "a minute of faults has more than a handful: {}",
            a.events.len()
        );
    }

    #[test]
    fn plans_are_sorted_bounded_and_round_trip_as_json() {
        for seed in 0..50 {
            let plan = FaultPlan::generate(seed, &[1, 2, 3], 30_000, &PlanConfig::default());
            assert!(plan.events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
            assert!(plan.events.iter().all(|e| e.at_ms <= plan.heal_at_ms));
            let json = serde_json::to_string(&plan).expect("plan serializes");
            let back: FaultPlan = serde_json::from_str(&json).expect("plan parses");
            assert_eq!(back, plan);
        }
    }

    #[test]
    fn a_kind_serializes_as_its_faults_tag_and_orders_by_name() {
        let roles = Roles {
            storage: vec![1, 2, 3, 4, 5],
            centers: vec![301, 302, 303],
            proxies: vec![200],
        };
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let config = PlanConfig::swarm(seed);
            for event in FaultPlan::generate_roles(seed, &roles, 30_000, &config).events {
                let fault = serde_json::to_value(&event.fault).expect("fault serializes");
                let kind = serde_json::to_value(event.fault.kind()).expect("kind serializes");
                assert_eq!(fault["kind"], kind);
                assert_eq!(kind, event.fault.kind().as_str());
                seen.insert(event.fault.kind());
            }
        }
        assert!(seen.len() > 10, "plans draw many kinds: {seen:?}");
        let names: Vec<&str> = seen.iter().map(|kind| kind.as_str()).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        let back: FaultKind = serde_json::from_str("\"restart_after_fatal\"").expect("parses");
        assert_eq!(back, FaultKind::RestartAfterFatal);
        // Every kind a plan drew is in the catalog sweeps report coverage against.
        assert!(seen.iter().all(|kind| FaultKind::ALL.contains(kind)));
        let all: std::collections::BTreeSet<FaultKind> = FaultKind::ALL.into_iter().collect();
        assert_eq!(all.len(), FaultKind::ALL.len(), "ALL lists a kind twice");
    }

    #[test]
    fn never_crashes_a_majority_at_once() {
        for seed in 0..200 {
            let plan = FaultPlan::generate(seed, &[1, 2, 3], 60_000, &PlanConfig::default());
            let mut down = std::collections::BTreeSet::new();
            for event in &plan.events {
                match event.fault {
                    Fault::Crash { node } => {
                        assert!(down.insert(node), "seed {seed}: node {node} crashed twice");
                        assert!(
                            down.len() <= 1,
                            "seed {seed}: two of three nodes down at {}",
                            event.at_ms
                        );
                    }
                    Fault::Restart { node } => {
                        down.remove(&node);
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn role_plans_keep_the_storage_plan_and_add_role_faults() {
        let roles = Roles {
            storage: vec![1, 2, 3, 4, 5],
            centers: vec![301, 302, 303],
            proxies: vec![200, 201],
        };
        let config = PlanConfig::default();
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..50 {
            let storage = FaultPlan::generate(seed, &roles.storage, 20_000, &config);
            let plan = FaultPlan::generate_roles(seed, &roles, 20_000, &config);
            assert_eq!(
                plan,
                FaultPlan::generate_roles(seed, &roles, 20_000, &config)
            );
            assert!(plan.events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
            // Every storage fault is still there: role faults only add.
            let rest: Vec<_> = plan
                .events
                .iter()
                .filter(|e| storage.events.contains(e))
                .collect();
            assert_eq!(rest.len(), storage.events.len(), "seed {seed}");
            let destroyed: Vec<_> = plan
                .events
                .iter()
                .filter_map(|e| match e.fault {
                    Fault::Destroy { node } => Some((node, e.at_ms)),
                    _ => None,
                })
                .collect();
            assert!(
                destroyed.len() <= 1,
                "seed {seed}: at most one node destroyed"
            );
            for (node, at) in destroyed {
                assert!(roles.storage.contains(&node) && at <= 11_000);
            }
            kinds.extend(plan.events.iter().map(|e| e.fault.kind()));
        }
        for kind in [
            FaultKind::Destroy,
            FaultKind::CrashCenterLeader,
            FaultKind::RestartCenters,
        ] {
            assert!(kinds.contains(&kind), "no seed of 50 drew {kind}");
        }
        // Without centers a role plan is the storage plan.
        let bare = Roles {
            storage: vec![1, 2, 3],
            ..Roles::default()
        };
        assert_eq!(
            FaultPlan::generate_roles(9, &bare, 20_000, &config),
            FaultPlan::generate(9, &[1, 2, 3], 20_000, &config)
        );
    }

    #[test]
    fn slow_links_only_add_their_own_events() {
        let mut drew = 0;
        for seed in 0..30 {
            let mut config = PlanConfig::swarm(seed);
            config.slow_links = false;
            let without = FaultPlan::generate(seed, &[1, 2, 3], 20_000, &config);
            config.slow_links = true;
            let with = FaultPlan::generate(seed, &[1, 2, 3], 20_000, &config);
            let mut added = with.events.clone();
            for event in &without.events {
                let at = added.iter().position(|e| e == event).expect("kept");
                added.remove(at);
            }
            for event in &added {
                match event.fault {
                    Fault::SlowLink { from, to, delay_ms } => {
                        assert!(from != to && (20..400).contains(&delay_ms), "{event:?}");
                        drew += 1;
                    }
                    Fault::HealMessages => {}
                    _ => panic!("seed {seed}: slow links added {event:?}"),
                }
            }
            assert!(with.events.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        }
        assert!(drew > 30, "slow links drawn: {drew}");
    }

    #[test]
    fn corruption_adds_only_its_own_events_on_one_node() {
        let mut drew = 0;
        for seed in 0..30 {
            let mut config = PlanConfig::swarm(seed);
            config.corruption = false;
            let without = FaultPlan::generate(seed, &[1, 2, 3], 20_000, &config);
            config.corruption = true;
            let with = FaultPlan::generate(seed, &[1, 2, 3], 20_000, &config);
            let mut added = with.events.clone();
            for event in &without.events {
                let at = added.iter().position(|e| e == event).expect("kept");
                added.remove(at);
            }
            let mut nodes = std::collections::BTreeSet::new();
            for event in &added {
                match event.fault {
                    Fault::CorruptRecord { node, space, .. } => {
                        assert!(matches!(space, Space::State | Space::Log), "{event:?}");
                        assert!(event.at_ms < 20_000);
                        nodes.insert(node);
                        drew += 1;
                    }
                    _ => panic!("seed {seed}: corruption added {event:?}"),
                }
            }
            assert!((1..=3).contains(&added.len()), "seed {seed}: {added:?}");
            assert_eq!(nodes.len(), 1, "seed {seed}: one bad disk, not several");
        }
        assert!(drew >= 30);
        // A plan that destroys a node corrupts only that node, before (see `generate_roles`).
        let roles = Roles {
            storage: vec![1, 2, 3, 4, 5],
            centers: vec![101, 102, 103],
            proxies: vec![201],
        };
        for seed in 0..60 {
            let mut config = PlanConfig::swarm(seed);
            config.corruption = true;
            let plan = FaultPlan::generate_roles(seed, &roles, 20_000, &config);
            let destroyed = plan.events.iter().find_map(|e| match e.fault {
                Fault::Destroy { node } => Some((node, e.at_ms)),
                _ => None,
            });
            for event in &plan.events {
                if let (Fault::CorruptRecord { node, .. }, Some((gone, at))) =
                    (&event.fault, destroyed)
                {
                    assert!(*node == gone && event.at_ms < at, "seed {seed}: {event:?}");
                }
            }
        }
    }

    #[test]
    fn split_gives_two_non_empty_sides() {
        let mut rng = SeededRng::new(1);
        for _ in 0..100 {
            let (a, b) = split(&mut rng, &[1, 2, 3]);
            assert!(!a.is_empty() && !b.is_empty());
            assert_eq!(a.len() + b.len(), 3);
        }
    }
}
