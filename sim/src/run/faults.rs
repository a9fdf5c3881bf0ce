//! Fault injection: how the harness applies a [`FaultPlan`] to the simulated cluster.
//!
//! # The fault contract
//!
//! **What is injected** (each [`Fault`] at its planned simulated time, until the heal point):
//!
//! - *Network* (through [`NetFaults`], which every [`SimNet`](crate::net::SimNet) consults):
//!   partitions between sets of processes, in both directions or one; the current leader of a
//!   slot group (a random one with several groups) cut off from every other process; message
//!   loss, duplication and extra delay (which reorders messages) at a rate; asymmetric slow
//!   links (every message in one direction of one link takes longer; `HealMessages` and the
//!   heal point end them).
//! - *Processes*: a crash kills a host (turmoil drops its runtime; its disk keeps a prefix of
//!   the writes it had not synced); a restart starts it again from its disk; a pause holds all
//!   its traffic in both directions and releases it, late and at once, on resume (its own
//!   timers keep running, unlike a real SIGSTOP); the center leader is crashed and centers are
//!   restarted by role; a destroyed node is crashed and never comes back.
//! - *Disks*: latency up to a bound on every operation, `EIO` at a rate.
//! - *Clocks*: a wall-clock offset, a drift of both clocks in ppm, a wall-clock jump.
//! - *Supervision*, not planned: a node whose Raft stopped on a disk error is crashed and
//!   restarted from its disk (`restart_after_fatal`), as a supervisor would.
//!
//! A fault that cannot apply (crashing a node that is down, restarting a destroyed one, cutting
//! off the leader of a group that has none) is skipped and not counted.
//!
//! **What a healthy cluster must survive**: any plan of the above, provided the plan keeps a
//! storage majority from being crashed at once (plans do; partitions may still cost quorum for
//! a while). At the heal point (`SimConfig::heal_at`) every fault is
//! repaired (network, pauses, disks, clocks; every crashed process restarted) except destroyed
//! nodes, and the cluster must then serve again within the liveness bound, keep every
//! acknowledged write, answer linearizably throughout, and bring every group's replicas (with
//! destroyed ones replaced by the center) to the same state. See `super::checks`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use larder_core::env::{FaultPoint, Rng, SeededRng, derive_seed};
use larder_core::{GroupId, NodeId};
use larder_faults::{Fault, FaultKind, FaultPlan, ScheduledFault};

use super::hosts::{NodeParts, center_leader, current_leader_of};
use super::report::AppliedFault;
use crate::clock::SimClock;
use crate::disk::SimDisk;
use crate::net::{NetFaults, host_name};
use crate::points::{PointAction, PointTable};
use crate::trace::Trace;
use crate::workload::GROUP;

/// Applies a plan's faults on time, heals at the heal point, restarts nodes stopped by a disk
/// error, and keeps count of what it did.
pub(crate) struct Injector<'a> {
    events: std::iter::Peekable<std::slice::Iter<'a, ScheduledFault>>,
    /// Draws which group's leader to isolate and how much of a crashed disk survives.
    rng: SeededRng,
    heal_at: Duration,
    healed: bool,
    /// Every process that is not a node: clients, proxies and the checker.
    others: Vec<NodeId>,
    groups: u64,
    trace: Trace,
    /// The run's fault points, armed by targeted faults.
    points: PointTable,
    /// Nodes a point crash took down, with when they start again.
    restarts: Vec<(NodeId, Duration)>,
    /// (node, group) replicas seen retired as corrupt (each logged once).
    retired: BTreeSet<(NodeId, GroupId)>,
    /// Nodes the last power loss took down.
    powered_off: Vec<NodeId>,
    /// Proxies that are down.
    proxies_down: BTreeSet<NodeId>,
    /// Storage audits that failed when a point crash took a node down.
    pub(crate) defects: Vec<super::verdict::Violation>,
    /// Faults applied, by kind.
    pub(crate) counts: BTreeMap<FaultKind, u64>,
    /// Every fault as applied.
    pub(crate) log: Vec<AppliedFault>,
}

impl<'a> Injector<'a> {
    pub(crate) fn new(
        seed: u64,
        plan: &'a FaultPlan,
        heal_at: Duration,
        others: Vec<NodeId>,
        groups: u64,
        trace: Trace,
        points: PointTable,
    ) -> Self {
        Injector {
            events: plan.events.iter().peekable(),
            rng: SeededRng::new(derive_seed(seed, 2)),
            heal_at,
            healed: false,
            others,
            groups,
            trace,
            points,
            restarts: Vec::new(),
            retired: Default::default(),
            powered_off: Vec::new(),
            proxies_down: BTreeSet::new(),
            defects: Vec::new(),
            counts: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// Everything due at simulated time `now`: planned faults, the heal point, restarts after a
    /// fatal disk error.
    pub(crate) fn tick(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        parts: &mut [NodeParts],
        net: &NetFaults,
        now: Duration,
    ) {
        let healed = self.healed;
        while let Some(event) = self
            .events
            .next_if(|event| Duration::from_millis(event.at_ms) <= now && !healed)
        {
            let fault = &event.fault;
            let applied = self.apply(sim, parts, net, fault);
            if applied {
                self.record(now, fault.kind(), format!("{fault:?}"));
                crate::trace_event!(self.trace, now, "sim", "fault {fault:?}");
            }
        }
        self.point_crashes(sim, parts, now);
        if !self.healed && now >= self.heal_at {
            self.healed = true;
            self.points.disarm_all();
            for proxy in std::mem::take(&mut self.proxies_down) {
                sim.bounce(host_name(proxy));
            }
            heal_everything(sim, parts, net, &self.others);
            self.log.push(AppliedFault {
                at_ms: now.as_millis() as u64,
                kind: FaultKind::HealAll,
                detail: "heal all".into(),
            });
            crate::trace_event!(self.trace, now, "sim", "heal all");
        }
        self.restart_fatal(sim, parts, now);
    }

    /// Applies one fault; false if it did not apply (see the module doc).
    fn apply(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        parts: &mut [NodeParts],
        net: &NetFaults,
        fault: &Fault,
    ) -> bool {
        match fault {
            Fault::BounceLeader { down_ms } => {
                // Drawing only with many groups keeps single-group runs' random stream.
                let group = if self.groups > 1 {
                    1 + self.rng.below(self.groups)
                } else {
                    GROUP
                };
                let Some(leader) = current_leader_of(parts, group) else {
                    return false;
                };
                // At its next apply, so the state it acknowledged last is lost with the power
                // and the log must bring it back.
                let action = PointAction::Crash {
                    after: Duration::ZERO,
                    down: Duration::from_millis(*down_ms),
                };
                self.points
                    .arm(FaultPoint::ApplyWritten, Some(leader), action);
                true
            }
            Fault::CrashAtPoint {
                point,
                node,
                after_ms,
                down_ms,
            } => {
                let action = PointAction::Crash {
                    after: Duration::from_millis(*after_ms),
                    down: Duration::from_millis(*down_ms),
                };
                self.points.arm(*point, *node, action);
                true
            }
            Fault::DelayAtPoint {
                point,
                node,
                delay_ms,
            } => {
                let action = PointAction::Delay(Duration::from_millis(*delay_ms));
                self.points.arm(*point, *node, action);
                true
            }
            Fault::HealPoints => {
                self.points.disarm_all();
                true
            }
            Fault::PowerLoss => {
                self.powered_off.clear();
                for part in parts.iter_mut().filter(|p| p.up) {
                    part.power_loss(sim, &mut self.rng);
                    self.powered_off.push(part.id);
                }
                !self.powered_off.is_empty()
            }
            Fault::PowerRestored => {
                let mut any = false;
                for id in std::mem::take(&mut self.powered_off) {
                    if let Some(part) = parts.iter_mut().find(|p| p.id == id)
                        && !part.up
                        && !part.destroyed
                    {
                        part.restart(sim);
                        any = true;
                    }
                }
                any
            }
            Fault::IsolateLeaderFromPeers { majority_reachable } => {
                let Some(leader) =
                    isolate_leader(parts, net, &mut self.rng, &[], self.groups, false)
                else {
                    return false;
                };
                if *majority_reachable {
                    return true;
                }
                // Only the old leader stays reachable to clients and proxies.
                net.update(|state| {
                    for part in parts.iter().filter(|p| p.id != leader) {
                        for &other in &self.others {
                            state.blocked.insert((part.id, other));
                            state.blocked.insert((other, part.id));
                        }
                    }
                });
                true
            }
            Fault::CrashProxy { proxy } => {
                if !self.others.contains(proxy) || !self.proxies_down.insert(*proxy) {
                    return false;
                }
                sim.crash(host_name(*proxy));
                true
            }
            Fault::RestartProxy { proxy } => {
                if !self.proxies_down.remove(proxy) {
                    return false;
                }
                sim.bounce(host_name(*proxy));
                true
            }
            _ => apply_fault(
                sim,
                parts,
                net,
                &mut self.rng,
                fault,
                &self.others,
                self.groups,
            ),
        }
    }

    /// Carries out the crashes fault points asked for, and the restarts that follow them.
    fn point_crashes(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        parts: &mut [NodeParts],
        now: Duration,
    ) {
        for crash in self.points.take_due_crashes(now) {
            let Some(part) = parts.iter_mut().find(|p| p.id == crash.node) else {
                continue;
            };
            if !part.up {
                continue;
            }
            // The log as the process left it: a crash is when a bad log starts to matter.
            let rows = part.disk.current_rows(larder_core::env::Space::Log);
            for defect in larder_storage::raft::audit::audit_log(rows) {
                self.defects.push(super::verdict::Violation::StorageDefect {
                    node: crash.node,
                    when: format!("crash at {}", crash.point),
                    defect: defect.to_string(),
                });
            }
            part.power_loss(sim, &mut self.rng);
            self.restarts.push((crash.node, now + crash.down));
            let detail = format!("n{} crashed at {}", crash.node, crash.point);
            crate::trace_event!(self.trace, now, "sim", "{detail}");
            // Logged, not counted: the arming was counted when the plan applied it.
            self.log.push(AppliedFault {
                at_ms: now.as_millis() as u64,
                kind: FaultKind::CrashAtPoint,
                detail,
            });
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.restarts)
            .into_iter()
            .partition(|(_, at)| *at <= now);
        self.restarts = later;
        for (node, _) in due {
            if let Some(part) = parts.iter_mut().find(|p| p.id == node)
                && !part.up
                && !part.destroyed
            {
                part.restart(sim);
                crate::trace_event!(self.trace, now, "sim", "restart n{node} after point crash");
            }
        }
    }

    /// Passes of each fault point so far, by every process.
    pub(crate) fn point_hits(&self) -> BTreeMap<larder_core::env::FaultPoint, u64> {
        self.points.hits()
    }

    /// Every storage audit that failed: at point crashes, and at points themselves.
    pub(crate) fn storage_defects(&self) -> Vec<super::verdict::Violation> {
        let at_points = self
            .points
            .defects()
            .into_iter()
            .map(
                |(node, point, defect)| super::verdict::Violation::StorageDefect {
                    node,
                    when: format!("at {point}"),
                    defect,
                },
            );
        self.defects.iter().cloned().chain(at_points).collect()
    }

    fn record(&mut self, now: Duration, kind: FaultKind, detail: String) {
        *self.counts.entry(kind).or_insert(0) += 1;
        self.log.push(AppliedFault {
            at_ms: now.as_millis() as u64,
            kind,
            detail,
        });
    }

    /// A disk error stops the group's Raft for good (as EIO would end a process), or a start
    /// failed (the process would exit): restart the node from its disk, as a supervisor
    /// would.
    fn restart_fatal(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        parts: &mut [NodeParts],
        now: Duration,
    ) {
        for part in parts.iter_mut() {
            for group in part.node().map(|n| n.broken_groups()).unwrap_or_default() {
                if self.retired.insert((part.id, group)) {
                    let detail = format!("n{} retired its replica of group {group}", part.id);
                    crate::trace_event!(self.trace, now, "sim", "{detail}");
                    self.record(now, FaultKind::ReplicaRetired, detail);
                }
            }
            let failed_start = || {
                let failure = part
                    .start_failure
                    .lock()
                    .expect("start failure lock")
                    .take();
                failure.map(|error| format!("start failed: {error}"))
            };
            let reason = if part.up && !part.destroyed {
                part.node()
                    .and_then(|node| node.fatal())
                    .or_else(failed_start)
            } else {
                None
            };
            let Some(reason) = reason else {
                continue;
            };
            crate::trace_event!(
                self.trace,
                now,
                "sim",
                "restart n{} after fatal error: {reason}",
                part.id
            );
            part.crash(sim, &mut self.rng);
            part.restart(sim);
            self.record(
                now,
                FaultKind::RestartAfterFatal,
                format!("restart n{} after: {reason}", part.id),
            );
        }
    }
}

/// Applies one fault; false if it did not apply (see the module doc).
fn apply_fault(
    sim: &mut turmoil::Sim<'_>,
    parts: &mut [NodeParts],
    net: &NetFaults,
    rng: &mut SeededRng,
    fault: &Fault,
    others: &[NodeId],
    groups: u64,
) -> bool {
    match fault {
        Fault::Pause { node } => {
            pause(sim, parts, others, *node, true);
            true
        }
        Fault::Resume { node } => {
            pause(sim, parts, others, *node, false);
            true
        }
        Fault::IsolateLeader => isolate_leader(parts, net, rng, others, groups, true).is_some(),
        Fault::Partition { .. }
        | Fault::PartitionOneWay { .. }
        | Fault::HealPartitions
        | Fault::MessageLoss { .. }
        | Fault::MessageDuplication { .. }
        | Fault::MessageDelay { .. }
        | Fault::SlowLink { .. }
        | Fault::LateSteps { .. }
        | Fault::HealMessages => {
            apply_network(net, fault);
            true
        }
        Fault::Crash { .. }
        | Fault::Restart { .. }
        | Fault::CrashCenterLeader
        | Fault::RestartCenters
        | Fault::Destroy { .. } => apply_process(sim, parts, rng, fault),
        Fault::CrashAtPoint { .. }
        | Fault::DelayAtPoint { .. }
        | Fault::HealPoints
        | Fault::PowerLoss
        | Fault::PowerRestored
        | Fault::IsolateLeaderFromPeers { .. }
        | Fault::CrashProxy { .. }
        | Fault::RestartProxy { .. }
        | Fault::BounceLeader { .. } => unreachable!("applied by the injector: {fault:?}"),
        Fault::SlowDisk { node, .. }
        | Fault::DiskErrors { node, .. }
        | Fault::DiskFull { node }
        | Fault::HealDisk { node }
        | Fault::ClockOffset { node, .. }
        | Fault::ClockDrift { node, .. }
        | Fault::ClockJump { node, .. }
        | Fault::HealClock { node } => match parts.iter().find(|p| p.id == *node) {
            Some(part) => {
                apply_disk_or_clock(part, fault);
                true
            }
            None => false,
        },
        Fault::CorruptRecord {
            node,
            space,
            pick,
            bit,
        } => parts
            .iter()
            .find(|p| p.id == *node && !p.destroyed)
            .and_then(|part| part.disk.corrupt(*space, *pick, *bit))
            .is_some(),
    }
}

/// turmoil holds the paused host's traffic in both directions and delivers it on release: to
/// everyone else the process is frozen, and its backlog arrives late. (Its own timers keep
/// running; a real SIGSTOP would freeze those too.)
fn pause(
    sim: &mut turmoil::Sim<'_>,
    parts: &[NodeParts],
    others: &[NodeId],
    node: NodeId,
    hold: bool,
) {
    let peers: Vec<NodeId> = parts
        .iter()
        .map(|p| p.id)
        .chain(others.iter().copied())
        .filter(|&other| other != node)
        .collect();
    for other in peers {
        if hold {
            sim.hold(host_name(node), host_name(other));
        } else {
            sim.release(host_name(node), host_name(other));
        }
    }
}

/// Cuts the leader of a group off from every other node, and with `from_others` from every
/// other process too. With many groups, the leader of a random one (drawing only then, so
/// single-group runs keep their random stream).
fn isolate_leader(
    parts: &[NodeParts],
    net: &NetFaults,
    rng: &mut SeededRng,
    others: &[NodeId],
    groups: u64,
    from_others: bool,
) -> Option<NodeId> {
    let group = if groups > 1 {
        1 + rng.below(groups)
    } else {
        GROUP
    };
    let leader = current_leader_of(parts, group)?;
    let others = if from_others { others } else { &[] };
    let cut: Vec<NodeId> = parts
        .iter()
        .map(|p| p.id)
        .chain(others.iter().copied())
        .filter(|&id| id != leader)
        .collect();
    net.update(|state| {
        for other in cut {
            state.blocked.insert((leader, other));
            state.blocked.insert((other, leader));
        }
    });
    Some(leader)
}

/// Partitions and message faults, all through the shared [`NetFaults`] table.
fn apply_network(net: &NetFaults, fault: &Fault) {
    net.update(|state| match fault {
        Fault::Partition { side_a, side_b } => {
            for &a in side_a {
                for &b in side_b {
                    state.blocked.insert((a, b));
                    state.blocked.insert((b, a));
                }
            }
        }
        Fault::PartitionOneWay { from, to } => {
            for &a in from {
                for &b in to {
                    state.blocked.insert((a, b));
                }
            }
        }
        Fault::HealPartitions => state.blocked.clear(),
        Fault::MessageLoss { rate } => state.loss = *rate,
        Fault::MessageDuplication { rate } => state.duplicate = *rate,
        Fault::MessageDelay { delay_ms_max } => state.delay_ms_max = *delay_ms_max,
        Fault::SlowLink { from, to, delay_ms } => {
            state.slow.insert((*from, *to), *delay_ms);
        }
        Fault::LateSteps { rate, lag_ms_max } => state.late_steps = Some((*rate, *lag_ms_max)),
        Fault::HealMessages => {
            state.loss = 0.0;
            state.duplicate = 0.0;
            state.delay_ms_max = 0;
            state.slow.clear();
        }
        other => unreachable!("not a network fault: {other:?}"),
    });
}

/// Crashes, restarts and destruction of processes.
fn apply_process(
    sim: &mut turmoil::Sim<'_>,
    parts: &mut [NodeParts],
    rng: &mut SeededRng,
    fault: &Fault,
) -> bool {
    let find = |parts: &mut [NodeParts], node: NodeId| parts.iter().position(|p| p.id == node);
    match fault {
        Fault::Crash { node } => match find(parts, *node) {
            Some(index) if parts[index].up => parts[index].crash(sim, rng),
            _ => return false,
        },
        Fault::Restart { node } => match find(parts, *node) {
            Some(index) if !parts[index].up && !parts[index].destroyed => parts[index].restart(sim),
            _ => return false,
        },
        Fault::CrashCenterLeader => match center_leader(parts) {
            Some(index) => parts[index].crash(sim, rng),
            None => return false,
        },
        Fault::RestartCenters => {
            let mut any = false;
            for part in parts.iter_mut().filter(|p| p.center && !p.up) {
                part.restart(sim);
                any = true;
            }
            return any;
        }
        Fault::Destroy { node } => {
            let Some(index) = find(parts, *node) else {
                return false;
            };
            if parts[index].up {
                parts[index].crash(sim, rng);
            }
            parts[index].destroyed = true;
        }
        other => unreachable!("not a process fault: {other:?}"),
    }
    true
}

/// Disk and clock faults of one node.
fn apply_disk_or_clock(part: &NodeParts, fault: &Fault) {
    match fault {
        Fault::SlowDisk { latency_ms_max, .. } => part
            .disk
            .set_latency(Duration::ZERO, Duration::from_millis(*latency_ms_max)),
        Fault::DiskErrors { rate, .. } => {
            part.disk.set_error_rate(*rate);
            part.disk.fail_next_sync(true);
        }
        Fault::DiskFull { .. } => part.disk.fill_up(),
        Fault::HealDisk { .. } => heal_disk(&part.disk),
        Fault::ClockOffset { offset_ms, .. } => part.clock.set_offset_ms(*offset_ms),
        Fault::ClockDrift { ppm, .. } => part.clock.set_drift_ppm(*ppm),
        Fault::ClockJump { jump_ms, .. } => part.clock.jump_wall_ms(*jump_ms),
        Fault::HealClock { .. } => heal_clock(&part.clock),
        other => unreachable!("not a disk or clock fault: {other:?}"),
    }
}

fn heal_disk(disk: &SimDisk) {
    disk.set_latency(Duration::ZERO, Duration::ZERO);
    disk.set_error_rate(0.0);
    disk.fail_next_sync(false);
    disk.set_capacity_bytes(None);
}

fn heal_clock(clock: &SimClock) {
    clock.set_drift_ppm(0);
    clock.set_offset_ms(0);
}

/// The heal point: a clean network, every pause released, every disk and clock healthy, every
/// crashed process restarted (destroyed ones excepted).
fn heal_everything(
    sim: &mut turmoil::Sim<'_>,
    parts: &mut [NodeParts],
    net: &NetFaults,
    others: &[NodeId],
) {
    net.update(|state| *state = Default::default());
    // Resume any paused process (releasing a pair that is not held does nothing).
    let hosts: Vec<NodeId> = parts
        .iter()
        .map(|p| p.id)
        .chain(others.iter().copied())
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
            part.restart(sim);
        }
    }
}
