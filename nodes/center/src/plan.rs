//! The center's decisions as pure functions: (durable state, what heartbeats said, liveness)
//! -> actions. No clock, no I/O: the control loop in [`super`] gathers the inputs, calls
//! [`plan`], and carries out the [`Action`]s, so every rule here is unit- and property-tested
//! without a cluster.
//!
//! The rules, in the order [`plan`] applies them:
//! 1. **Registry**: a node heard from is `Up` (with the address it reported); a node not heard
//!    from for the failure timeout is `Down`. Liveness comes from several missed heartbeats,
//!    never from one failed probe ([`liveness`]).
//! 2. **Bootstrap**: with no routing table yet and enough `Up` nodes, place every group's
//!    replicas on distinct nodes ([`place`]) and write epoch 1.
//! 3. Per group of the routing table:
//!    - **Host**: every live replica that does not host the group is told to; a group no replica
//!      has ever formed is formed by its first replica.
//!    - **Adopt**: the routing table follows the group's newest committed membership. Raft
//!      membership is the truth; the table is the center's (and everyone's) map of it. This
//!      also finishes a repair whose answer was lost.
//!    - **Repair**: a `Down` voter is replaced, learner first, by the live node with the fewest
//!      replicas that is not already in the group ([`pick_replacement`]); at most
//!      `repairs_max` at once, one per group, and none while more than half the nodes are down
//!      (after a mass failure, automatic recovery does more harm than good).
//!    - **Finish**: a voter change cut short in joint consensus (its group leader changed
//!      between the two steps) is asked for again, so the group does not stay joint.
//!    - **Drop**: a replica that has been no member of its group for a while is removed.
//! 4. **Leader balance**: when the cluster is calm (everyone up, no repair), leadership moves
//!    from the node leading the most groups to a replica leading fewer, while counts differ by
//!    more than one ([`plan_leader_moves`]).

use std::collections::{BTreeMap, BTreeSet};

use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use serde::{Deserialize, Serialize};

use larder_protocol::{CENTER_GROUP, GroupStatus, MembershipStatus};
// Defined with the wire because the cluster status (`larder_protocol::ClusterStatus`) carries
// them; the registry's records encode them exactly as before.
pub use larder_protocol::{Liveness, NodeState};

/// A node's registry entry (center key `node/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: NodeId,
    pub address: String,
    pub state: NodeState,
}

/// Liveness of one node at `now`, from the last heartbeat this center leader received from it
/// (`None`: none since it took over at `term_started`) and its durable state.
///
/// A new center leader knows no heartbeat times, so it starts every node's timer at its own
/// start (the grace period): a failover never declares everyone dead. A node already recorded
/// down stays down until it is heard from again.
pub fn liveness(
    last_heard: Option<std::time::Duration>,
    durable: Option<NodeState>,
    term_started: std::time::Duration,
    now: std::time::Duration,
    timeout: std::time::Duration,
) -> Liveness {
    match (last_heard, durable) {
        (_, Some(NodeState::Removed)) => Liveness::Down,
        (Some(at), _) if now.saturating_sub(at) <= timeout => Liveness::Up,
        (Some(_), _) => Liveness::Down,
        (None, Some(NodeState::Down)) => Liveness::Down,
        (None, _) if now.saturating_sub(term_started) <= timeout => Liveness::Grace,
        (None, _) => Liveness::Down,
    }
}

/// One node as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub liveness: Liveness,
    /// The durable registry entry, if the node is registered.
    pub record: Option<NodeRecord>,
    /// The latest heartbeat this center leader received from the node (`None`: none yet):
    /// its address and its hosted groups.
    pub heard: Option<Heard>,
}

/// The content of a node's latest heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    pub address: String,
    pub groups: BTreeMap<GroupId, GroupStatus>,
    /// The node's hottest keys and slots (reported, never planned from).
    pub hot: larder_protocol::HotReport,
}

impl NodeView {
    fn is_up(&self) -> bool {
        self.liveness == Liveness::Up && self.heard.is_some()
    }

    /// The node retired its replica of `group` as corrupt.
    fn is_broken(&self, group: GroupId) -> bool {
        self.heard
            .as_ref()
            .and_then(|h| h.groups.get(&group))
            .is_some_and(|s| s.broken.is_some())
    }

    fn hosts(&self, group: GroupId) -> bool {
        self.heard
            .as_ref()
            .is_some_and(|h| h.groups.contains_key(&group))
    }

    /// May receive new replicas (and leaderships): up, heard from, neither removed nor
    /// draining.
    pub(crate) fn is_candidate(&self) -> bool {
        self.is_up()
            && self
                .record
                .as_ref()
                .is_none_or(|r| !matches!(r.state, NodeState::Removed | NodeState::Draining))
    }

    /// An operator is draining the node ([`NodeState::Draining`]).
    fn is_draining(&self) -> bool {
        self.record
            .as_ref()
            .is_some_and(|r| r.state == NodeState::Draining)
    }
}

/// The replicas for a new group (a split): the `replicas` candidates holding the fewest
/// replicas of `table` and of the repairs under way, lowest id on ties; `None` when there are
/// too few candidates.
pub fn place_new_group(view: &View, table: &RoutingTable, replicas: usize) -> Option<Vec<NodeId>> {
    let load = replica_load(table, &view.repairs);
    let mut candidates: Vec<(usize, NodeId)> = view
        .nodes
        .iter()
        .filter(|(_, v)| v.is_candidate())
        .map(|(id, _)| (load.get(id).copied().unwrap_or(0), *id))
        .collect();
    candidates.sort_unstable();
    (replicas > 0 && candidates.len() >= replicas).then(|| {
        candidates
            .into_iter()
            .take(replicas)
            .map(|(_, id)| id)
            .collect()
    })
}

/// A repair the center has started and not yet seen finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairInFlight {
    pub old: NodeId,
    pub new: NodeId,
}

/// Everything [`plan`] decides from.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The current routing table (`None`: not bootstrapped).
    pub routing: Option<RoutingTable>,
    pub nodes: BTreeMap<NodeId, NodeView>,
    /// Repairs under way, by group.
    pub repairs: BTreeMap<GroupId, RepairInFlight>,
    /// Repairs that finished (the replace committed) since the last plan: the table is updated
    /// from these at once instead of waiting for a heartbeat to report the new membership.
    pub finished: BTreeMap<GroupId, RepairInFlight>,
    /// Per group, memberships at or below this log index are not adopted: the table was
    /// already updated past them (from a finished repair) and a heartbeat sent before that
    /// must not roll it back.
    pub adopted_through: BTreeMap<GroupId, u64>,
    /// Groups whose replicas were written into the table long enough ago (two failure
    /// timeouts) that their leader has reported since. For these, a committed membership the
    /// leader reports that differs from the table is adopted even at or below
    /// `adopted_through`: the table came from a repair answered "done" that never committed
    /// (a deposed leader answered it, cluster swarm seed 34 of stop 58), and a real one
    /// would show at a higher index by now. Without this the table kept a replica that was
    /// never a member, which was never dropped nor caught up.
    pub adoption_doubted: BTreeSet<GroupId>,
    /// Groups whose leadership moved recently; left alone until their leader settles.
    pub cooling: BTreeSet<GroupId>,
    /// (node, group) pairs where the node has hosted the group without being a member (of the
    /// table or the committed membership) for longer than the stale-replica timeout.
    pub stale: BTreeSet<(NodeId, GroupId)>,
    /// Down nodes silent for at least twice the failure timeout: every live replica a node
    /// could still have been feeding when it fell silent has reported since. Only these count
    /// as dead for placing a never-formed group anew.
    pub settled_down: BTreeSet<NodeId>,
}

/// The planner's knobs (a subset of `CenterConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanConfig {
    /// Slot groups created at bootstrap (ids `1..=groups`).
    pub groups: u64,
    /// Replicas per group.
    pub replicas: usize,
    /// Live nodes needed before bootstrapping (at least `replicas`).
    pub bootstrap_nodes_min: usize,
    /// Repairs under way at once, cluster-wide.
    pub repairs_max: usize,
    /// Leadership moves started per plan.
    pub leader_moves_max: usize,
    /// Automatic repair on/off: the operator's switch for "don't fix everything".
    pub repair_enabled: bool,
}

/// What the control loop should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `record` to the registry.
    Register(NodeRecord),
    /// Write the first routing table.
    Bootstrap(RoutingTable),
    /// Tell `node` to host `group`; with `initialize`, also form it with these voters.
    Host {
        node: NodeId,
        group: GroupId,
        initialize: Option<Vec<NodeId>>,
    },
    /// Write a routing table where `group`'s replicas are `replicas`.
    Adopt {
        group: GroupId,
        replicas: Vec<NodeId>,
    },
    /// Replace voter `old` of `group` by `new` (on `new`: host it; on `leader`: replace).
    Repair {
        group: GroupId,
        old: NodeId,
        new: NodeId,
        leader: NodeId,
    },
    /// Ask `from`, the leader of `group`, to hand leadership to `to`.
    MoveLeader {
        group: GroupId,
        from: NodeId,
        to: NodeId,
    },
    /// Tell `node` to drop its replica of `group`.
    Drop { node: NodeId, group: GroupId },
    /// Write a routing table where never-formed group `old` is retired and its slots belong
    /// to the new group `new` on `replicas` (see [`RoutingTable::recreate_group`]).
    Recreate {
        old: GroupId,
        new: GroupId,
        replicas: Vec<NodeId>,
    },
}

/// Places `groups` groups of `replicas` replicas each on `nodes` round-robin: group `i`
/// (1-based) gets `replicas` consecutive nodes starting at node `i - 1`, wrapping around. With
/// at least `replicas` distinct nodes, no group has a node twice and every node gets
/// `groups * replicas / nodes` replicas, give or take one. `None` with too few nodes.
pub fn place(
    groups: u64,
    nodes: &BTreeSet<NodeId>,
    replicas: usize,
) -> Option<BTreeMap<GroupId, Vec<NodeId>>> {
    if replicas == 0 || nodes.len() < replicas {
        return None;
    }
    let nodes: Vec<NodeId> = nodes.iter().copied().collect();
    let placement = (1..=groups)
        .map(|group| {
            let start = ((group - 1) % nodes.len() as u64) as usize;
            let members = (0..replicas)
                .map(|k| nodes[(start + k) % nodes.len()])
                .collect();
            (group, members)
        })
        .collect();
    Some(placement)
}

/// How many replicas each node holds in `table`, plus the ones repairs are adding.
fn replica_load(
    table: &RoutingTable,
    repairs: &BTreeMap<GroupId, RepairInFlight>,
) -> BTreeMap<NodeId, usize> {
    let mut load = table.replica_counts();
    for repair in repairs.values() {
        *load.entry(repair.new).or_default() += 1;
    }
    load
}

/// The node to replace a dead replica of a group whose replicas are `members`: a candidate
/// (up, heard from, in service) that is not in `members`, holding the fewest replicas (`load`),
/// lowest id on ties. `None` when no node qualifies.
pub fn pick_replacement(
    members: &[NodeId],
    nodes: &BTreeMap<NodeId, NodeView>,
    load: &BTreeMap<NodeId, usize>,
) -> Option<NodeId> {
    nodes
        .iter()
        .filter(|(id, view)| view.is_candidate() && !members.contains(id))
        .min_by_key(|(id, _)| (load.get(id).copied().unwrap_or(0), **id))
        .map(|(id, _)| *id)
}

/// `members` with every node not in `voters` replaced, in place, by a voter not yet listed
/// (lowest id first); voters left over are appended, vacated places without a substitute
/// dropped. Keeps placement order stable across repairs.
fn reorder(members: &[NodeId], voters: &BTreeSet<NodeId>) -> Vec<NodeId> {
    let mut added = voters.iter().filter(|v| !members.contains(v)).copied();
    let mut out: Vec<NodeId> = members
        .iter()
        .filter_map(|m| {
            if voters.contains(m) {
                Some(*m)
            } else {
                added.next()
            }
        })
        .collect();
    out.extend(added);
    out
}

/// For a joint membership of two voter sets that differ by one node each way, the (removed,
/// added) pair.
fn single_swap(m: &MembershipStatus) -> Option<(NodeId, NodeId)> {
    let [from, to] = m.configs.as_slice() else {
        return None;
    };
    let mut removed = from.iter().filter(|n| !to.contains(n));
    let mut added = to.iter().filter(|n| !from.contains(n));
    match (removed.next(), removed.next(), added.next(), added.next()) {
        (Some(old), None, Some(new), None) => Some((*old, *new)),
        _ => None,
    }
}

/// What the heartbeats say about one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GroupFacts {
    /// The live node claiming leadership with the highest term.
    pub(crate) leader: Option<NodeId>,
    /// The term `leader` claimed it in.
    pub(crate) leader_term: u64,
    /// The committed membership `leader` itself reported.
    pub(crate) leader_membership: Option<MembershipStatus>,
    /// The committed membership with the highest log index any replica reported.
    pub(crate) membership: Option<MembershipStatus>,
    /// Some replica has a log or vote: the group was formed.
    pub(crate) formed: bool,
}

pub(crate) fn group_facts(nodes: &BTreeMap<NodeId, NodeView>) -> BTreeMap<GroupId, GroupFacts> {
    let mut facts: BTreeMap<GroupId, GroupFacts> = BTreeMap::new();
    for (id, view) in nodes {
        let Some(heard) = &view.heard else { continue };
        for (group, status) in &heard.groups {
            let fact = facts.entry(*group).or_default();
            fact.formed |= status.initialized;
            if let Some(m) = &status.membership
                && fact
                    .membership
                    .as_ref()
                    .is_none_or(|known| m.index > known.index)
            {
                fact.membership = Some(m.clone());
            }
            if status.is_leader
                && view.is_up()
                && (fact.leader.is_none() || status.term > fact.leader_term)
            {
                fact.leader = Some(*id);
                fact.leader_term = status.term;
                fact.leader_membership = status.membership.clone();
            }
        }
    }
    facts
}

/// The newest committed membership reported for each group (highest log index).
pub fn newest_memberships(
    nodes: &BTreeMap<NodeId, NodeView>,
) -> BTreeMap<GroupId, MembershipStatus> {
    group_facts(nodes)
        .into_iter()
        .filter_map(|(group, fact)| fact.membership.map(|m| (group, m)))
        .collect()
}

/// Leadership moves that even out how many groups each node leads.
///
/// `leaders`: group -> its leader; `replicas`: group -> the voters that could take over;
/// `eligible`: nodes that may lead (up). Moves a group from the node leading the most to the
/// replica of that group leading the fewest, only when that narrows the gap (`to + 1 < from`),
/// at most `moves_max` moves; `cooling` groups stay put.
pub fn plan_leader_moves(
    leaders: &BTreeMap<GroupId, NodeId>,
    replicas: &BTreeMap<GroupId, Vec<NodeId>>,
    eligible: &BTreeSet<NodeId>,
    cooling: &BTreeSet<GroupId>,
    moves_max: usize,
) -> Vec<(GroupId, NodeId, NodeId)> {
    let mut counts: BTreeMap<NodeId, usize> = BTreeMap::new();
    for members in replicas.values() {
        for node in members.iter().filter(|n| eligible.contains(n)) {
            counts.entry(*node).or_default();
        }
    }
    for leader in leaders.values() {
        if let Some(count) = counts.get_mut(leader) {
            *count += 1;
        }
    }
    let mut moved: BTreeSet<GroupId> = BTreeSet::new();
    let mut moves = Vec::new();
    while moves.len() < moves_max {
        // Most loaded first; ties by id so the plan is deterministic.
        let mut by_load: Vec<(usize, NodeId)> = counts.iter().map(|(n, c)| (*c, *n)).collect();
        by_load.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut best: Option<(GroupId, NodeId, NodeId)> = None;
        'search: for (from_count, from) in by_load {
            for (group, leader) in leaders {
                if *leader != from || cooling.contains(group) || moved.contains(group) {
                    continue;
                }
                let target = replicas
                    .get(group)
                    .into_iter()
                    .flatten()
                    .filter(|n| **n != from && eligible.contains(n))
                    .map(|n| (counts.get(n).copied().unwrap_or(0), *n))
                    .min();
                if let Some((to_count, to)) = target
                    && to_count + 1 < from_count
                {
                    best = Some((*group, from, to));
                    break 'search;
                }
            }
        }
        let Some((group, from, to)) = best else { break };
        *counts.entry(from).or_default() -= 1;
        *counts.entry(to).or_default() += 1;
        moved.insert(group);
        moves.push((group, from, to));
    }
    moves
}

/// Replica moves that bring every candidate node's replica count within one of the others:
/// repeatedly, a group on the busiest node (by id on ties) that the least busy one does not
/// hold, and whose leader is elsewhere (the leader is never the replica moved), moves its
/// replica there; at most `moves_max`, at most one per group. `(group, old, new, leader)`.
pub fn plan_replica_moves(
    replicas: &BTreeMap<GroupId, Vec<NodeId>>,
    leaders: &BTreeMap<GroupId, NodeId>,
    candidates: &BTreeSet<NodeId>,
    cooling: &BTreeSet<GroupId>,
    moves_max: usize,
) -> Vec<(GroupId, NodeId, NodeId, NodeId)> {
    let mut counts: BTreeMap<NodeId, usize> = candidates.iter().map(|n| (*n, 0)).collect();
    for members in replicas.values() {
        for node in members {
            if let Some(count) = counts.get_mut(node) {
                *count += 1;
            }
        }
    }
    let mut moved: BTreeSet<GroupId> = BTreeSet::new();
    let mut moves = Vec::new();
    while moves.len() < moves_max {
        let Some((&most, &high)) = counts.iter().max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
        else {
            break;
        };
        let Some((&least, &low)) = counts.iter().min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
        else {
            break;
        };
        if high <= low + 1 {
            break;
        }
        let pick = replicas.iter().find(|(group, members)| {
            members.contains(&most)
                && !members.contains(&least)
                && !moved.contains(*group)
                && !cooling.contains(*group)
                && leaders.get(*group).is_some_and(|leader| *leader != most)
        });
        let Some((&group, _)) = pick else { break };
        moved.insert(group);
        *counts.entry(most).or_default() -= 1;
        *counts.entry(least).or_default() += 1;
        moves.push((group, most, least, leaders[&group]));
    }
    moves
}

/// One move [`plan_slot_move`] proposes: `ranges` from group `from` to group `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMove {
    pub ranges: Vec<(u16, u16)>,
    pub from: GroupId,
    pub to: GroupId,
}

/// The next move that evens out slot counts between groups (`slots`: every group's ranges,
/// groups owning none included), or `None` when every group is within `tolerance` slots of
/// the others. The group owning the most gives the top of its slots (so a group keeps a few
/// contiguous ranges) to the group owning the fewest, as many as take either to the mean.
pub fn plan_slot_move(
    slots: &BTreeMap<GroupId, Vec<(u16, u16)>>,
    tolerance: usize,
) -> Option<SlotMove> {
    let count = |ranges: &Vec<(u16, u16)>| -> usize {
        ranges.iter().map(|&(a, b)| usize::from(b - a) + 1).sum()
    };
    let total: usize = slots.values().map(count).sum();
    let mean = total.checked_div(slots.len())?;
    let (&from, most) = slots
        .iter()
        .max_by(|a, b| count(a.1).cmp(&count(b.1)).then(b.0.cmp(a.0)))?;
    let (&to, least) = slots
        .iter()
        .min_by(|a, b| count(a.1).cmp(&count(b.1)).then(a.0.cmp(b.0)))?;
    let (high, low) = (count(most), count(least));
    if high <= low + tolerance.max(1) {
        return None;
    }
    let give = (high - mean).min(mean - low).max(1);
    let mut owned: Vec<u16> = most.iter().flat_map(|&(a, b)| a..=b).collect();
    let moving = owned.split_off(owned.len() - give);
    let ranges = larder_core::slots::ranges_where(|slot| moving.binary_search(&slot).is_ok());
    Some(SlotMove { ranges, from, to })
}

/// The group to split automatically, if any: the group whose live replicas report the most
/// records (`GroupStatus::records_estimate`, the largest report of any replica), when that
/// is past `records_max` and the group owns at least two slots. `None` when `records_max` is 0
/// (off), when the table holds `groups_max` groups already, or when nothing is past it. One
/// split at a time: the caller asks only while no migration runs.
pub fn plan_split(view: &View, records_max: u64, groups_max: usize) -> Option<GroupId> {
    let table = view.routing.as_ref()?;
    if records_max == 0 || table.groups().len() >= groups_max {
        return None;
    }
    let mut records: BTreeMap<GroupId, u64> = BTreeMap::new();
    for node in view.nodes.values().filter(|n| n.liveness == Liveness::Up) {
        for status in node.heard.iter().flat_map(|h| h.groups.values()) {
            let most = records.entry(status.group).or_default();
            *most = (*most).max(status.records_estimate);
        }
    }
    table
        .groups()
        .keys()
        .filter(|group| {
            let ranges = table.slot_ranges(**group);
            ranges
                .iter()
                .map(|&(a, b)| usize::from(b - a) + 1)
                .sum::<usize>()
                >= 2
        })
        .filter_map(|group| Some((*group, *records.get(group)?)))
        .filter(|(_, count)| *count > records_max)
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(group, _)| group)
}

/// The group to split so that the table holds at least `per_node_min` groups for each
/// storage node that may take work ([`NodeView::is_candidate`]): a node that joined then gets
/// a group to lead, not only replicas to follow. The group with the most slots (the lowest id
/// among equals), if the table is short of that and may still grow past `groups_max`;
/// `per_node_min` 0: none.
pub fn plan_split_for_nodes(view: &View, per_node_min: u64, groups_max: usize) -> Option<GroupId> {
    let table = view.routing.as_ref()?;
    let nodes = view.nodes.values().filter(|n| n.is_candidate()).count() as u64;
    let groups = table.groups().len();
    if per_node_min == 0
        || groups >= groups_max
        || groups as u64 >= nodes.saturating_mul(per_node_min)
    {
        return None;
    }
    table
        .groups()
        .keys()
        .map(|group| {
            let slots: usize = table
                .slot_ranges(*group)
                .iter()
                .map(|&(a, b)| usize::from(b - a) + 1)
                .sum();
            (*group, slots)
        })
        .filter(|(_, slots)| *slots >= 2)
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(group, _)| group)
}

/// The hottest slot some group leader reports at more than `requests_per_sec_max` requests a
/// second, with its group, if that group owns other slots besides (a slot alone in its group
/// is as isolated as it gets) and the table may grow past its `groups_max`. A slot two leaders
/// report (around a leader change) counts at the higher rate. `requests_per_sec_max` 0: none.
pub fn plan_hot_slot(
    view: &View,
    requests_per_sec_max: u64,
    groups_max: usize,
) -> Option<(GroupId, u16)> {
    let table = view.routing.as_ref()?;
    if requests_per_sec_max == 0 || table.groups().len() >= groups_max {
        return None;
    }
    let mut rates: BTreeMap<u16, u64> = BTreeMap::new();
    for node in view.nodes.values().filter(|n| n.liveness == Liveness::Up) {
        for hot in node.heard.iter().flat_map(|h| h.hot.slots.iter()) {
            let rate = rates.entry(hot.slot).or_default();
            *rate = (*rate).max(hot.per_sec);
        }
    }
    rates
        .into_iter()
        .filter(|(_, rate)| *rate > requests_per_sec_max)
        .filter_map(|(slot, rate)| {
            let group = table.group_of_slot(slot)?;
            let owned: usize = table
                .slot_ranges(group)
                .iter()
                .map(|&(a, b)| usize::from(b - a) + 1)
                .sum();
            (owned >= 2).then_some((group, slot, rate))
        })
        .max_by(|a, b| a.2.cmp(&b.2).then(b.1.cmp(&a.1)))
        .map(|(group, slot, _)| (group, slot))
}

/// The actions for one round of the control loop (see the module docs for the rules).
pub fn plan(view: &View, config: &PlanConfig) -> Vec<Action> {
    let mut actions = Vec::new();
    plan_registry(view, &mut actions);
    let Some(table) = &view.routing else {
        let up: BTreeSet<NodeId> = view
            .nodes
            .iter()
            .filter(|(_, v)| v.is_candidate())
            .map(|(id, _)| *id)
            .collect();
        if up.len() >= config.bootstrap_nodes_min.max(config.replicas)
            && let Some(placement) = place(config.groups, &up, config.replicas)
        {
            let table = RoutingTable::even(config.groups, |g| {
                placement.get(&g).cloned().unwrap_or_default()
            });
            actions.push(Action::Bootstrap(table));
        }
        return actions;
    };
    let facts = group_facts(&view.nodes);
    let mut load = replica_load(table, &view.repairs);
    let mut repairs = view.repairs.len();
    let registered = view.nodes.len();
    let down = view
        .nodes
        .values()
        .filter(|v| v.liveness == Liveness::Down)
        .count();
    // "Don't fix everything": after a mass failure (more than half the nodes down), moving
    // data around would compete with the recovery of the nodes themselves.
    let repair_allowed = config.repair_enabled && down * 2 <= registered;
    let mut calm = view.repairs.is_empty();
    let mut next_group_id = table.next_group_id();
    let mut leaders: BTreeMap<GroupId, NodeId> = BTreeMap::new();
    let mut voters: BTreeMap<GroupId, Vec<NodeId>> = BTreeMap::new();
    for (group, route) in table.groups() {
        let group = *group;
        let members = &route.replicas;
        let fact = facts.get(&group).cloned().unwrap_or_default();
        let view_of = |node: &NodeId| view.nodes.get(node);
        let up = |node: &NodeId| view_of(node).is_some_and(NodeView::is_up);
        if members.iter().any(|m| !up(m)) {
            calm = false;
        }

        // Host: form a never-formed group through its first replica, once every replica is
        // heard from (so "nobody reports it formed" is known, not assumed).
        let form = !fact.formed && members.iter().all(up);
        for (position, node) in members.iter().enumerate() {
            let initialize = (form && position == 0).then(|| members.clone());
            let hosts = view_of(node).is_some_and(|v| v.hosts(group));
            if up(node) && (!hosts || initialize.is_some()) {
                actions.push(Action::Host {
                    node: *node,
                    group,
                    initialize,
                });
            }
        }

        // (`liveness` reports removed nodes as down.) A replica its node retired as corrupt
        // is dead for its group even though the node is up: it is repaired the same way.
        let dead = members.iter().find(|m| {
            view_of(m).is_none_or(|v| v.liveness == Liveness::Down || v.is_broken(group))
        });

        // A never-formed group with a dead replica is placed anew. With a majority of its
        // replicas heard from and none holding any of its log, no leader was ever elected, so
        // nothing can have committed: the table is the group's only record and is rewritten.
        // Only a dead replica other than the first is replaced, and only while the first is
        // up: the first replica is the only one ever told to form the group, and forming is
        // done once, so however late an earlier "form" message lands, no second membership
        // can start (a dead first replica may hold a formed log and return with it; found by
        // simulation seed 9, where that split the table from the group's real membership).
        let majority_up = members.iter().filter(|m| up(m)).count() * 2 > members.len();
        // Whether a live replica holds the group's log. A dead replica's last report does not
        // count: with a live majority holding nothing, nothing can have committed, whatever the
        // dead one formed alone (seed 181: the first replica formed the group cut off from the
        // others, then died). `settled_down` makes the live reports newer than the dead
        // replica's last chance to feed them.
        let formed_live = members.iter().any(|m| {
            up(m)
                && view_of(m)
                    .and_then(|v| v.heard.as_ref())
                    .and_then(|h| h.groups.get(&group))
                    .is_some_and(|s| s.initialized)
        });
        let dead_for_placement = dead.filter(|d| view.settled_down.contains(d));
        // The first replica itself dead: it may hold the only copy of a formed membership and
        // return with it, so the group is not re-placed under its id but recreated under a new
        // one (same slots; nothing can have committed). The old id's replicas then belong to
        // no group of the table and are dropped as stale.
        if !formed_live
            && majority_up
            && repair_allowed
            && let Some(old) = dead_for_placement
            && members.first() == Some(old)
            && let Some(new) = pick_replacement(members, &view.nodes, &load)
        {
            *load.entry(new).or_default() += 1;
            let replicas = members
                .iter()
                .map(|m| if m == old { new } else { *m })
                .collect();
            actions.push(Action::Recreate {
                old: group,
                new: next_group_id,
                replicas,
            });
            next_group_id += 1;
            continue;
        }
        if !formed_live
            && majority_up
            && repair_allowed
            && let Some(old) = dead_for_placement
            && members
                .first()
                .is_some_and(|first| first != old && up(first))
            && let Some(new) = pick_replacement(members, &view.nodes, &load)
        {
            *load.entry(new).or_default() += 1;
            let replicas = members
                .iter()
                .map(|m| if m == old { new } else { *m })
                .collect();
            actions.push(Action::Adopt { group, replicas });
            continue;
        }

        // Adopt: a finished repair first (its answer proves the new membership committed),
        // else the newest committed membership the replicas report.
        if let Some(done) = view.finished.get(&group)
            && members.contains(&done.old)
            && !members.contains(&done.new)
        {
            let replicas = members
                .iter()
                .map(|m| if *m == done.old { done.new } else { *m })
                .collect();
            actions.push(Action::Adopt { group, replicas });
            calm = false;
            continue;
        }
        let current: BTreeSet<NodeId> = members.iter().copied().collect();
        let adopted_through = view.adopted_through.get(&group).copied();
        let in_sync = match &fact.membership {
            Some(m) if !m.is_joint() && fact.leader.is_some() => {
                let committed: BTreeSet<NodeId> = m.voters.iter().copied().collect();
                if committed == current {
                    true
                } else {
                    // While a repair runs its group is left alone, except when the group
                    // reports the repair's own outcome committed: then its answer was only
                    // lost or late, and waiting for it would leave clients routed to a
                    // membership that no longer exists until the repair's deadline.
                    let repair_landed = view.repairs.get(&group).is_some_and(|repair| {
                        members.contains(&repair.old)
                            && committed
                                == members
                                    .iter()
                                    .map(|n| if *n == repair.old { repair.new } else { *n })
                                    .collect::<BTreeSet<NodeId>>()
                    });
                    // The group's leader reports this very membership, long after the table
                    // was written (`View::adoption_doubted`).
                    let leader_contradicts = view.adoption_doubted.contains(&group)
                        && fact.leader_membership.as_ref() == Some(m);
                    if (!view.repairs.contains_key(&group) || repair_landed)
                        && (adopted_through.is_none_or(|through| m.index > through)
                            || leader_contradicts)
                        && !committed.is_empty()
                    {
                        actions.push(Action::Adopt {
                            group,
                            replicas: reorder(members, &committed),
                        });
                    }
                    false
                }
            }
            _ => false,
        };
        if !in_sync {
            calm = false;
        }

        // A voter change cut short in joint consensus (its leader changed between the two
        // steps) is finished by asking the group's leader for the same replace again; the
        // replace is idempotent and guarded by the membership it sees.
        if let (Some(m), Some(leader)) = (&fact.membership, fact.leader)
            && let Some((old, new)) = single_swap(m)
            && !view.repairs.contains_key(&group)
            && repairs < config.repairs_max
        {
            repairs += 1;
            actions.push(Action::Repair {
                group,
                old,
                new,
                leader,
            });
        }

        // Repair: one dead voter at a time, only for a group with a live leader whose table
        // and membership agree (otherwise the next membership report decides first). With
        // nothing dead, a draining replica leaves the same way (learner-first, while it still
        // serves: the group keeps its full count throughout), after first handing the group's
        // leadership to another replica if it leads.
        let draining = dead
            .is_none()
            .then(|| {
                members
                    .iter()
                    .find(|m| view_of(m).is_some_and(NodeView::is_draining))
            })
            .flatten();
        if let (Some(old), Some(leader), true) = (dead.or(draining), fact.leader, in_sync) {
            calm = false;
            if draining.is_some() && leader == *old {
                let heir = members
                    .iter()
                    .find(|m| view_of(m).is_some_and(NodeView::is_candidate));
                if let Some(to) = heir
                    && !view.cooling.contains(&group)
                {
                    actions.push(Action::MoveLeader {
                        group,
                        from: leader,
                        to: *to,
                    });
                }
            } else if repair_allowed
                && repairs < config.repairs_max
                && !view.repairs.contains_key(&group)
                && let Some(new) = pick_replacement(members, &view.nodes, &load)
            {
                *load.entry(new).or_default() += 1;
                repairs += 1;
                actions.push(Action::Repair {
                    group,
                    old: *old,
                    new,
                    leader,
                });
            }
        }

        if let Some(leader) = fact.leader {
            leaders.insert(group, leader);
        }
        voters.insert(group, members.clone());

        // Drop: replicas that are neither in the table nor in the committed membership, for
        // long enough that no change in flight can still need them. A group with a repair under
        // way or just finished is left alone: its new voter may not show in any report yet.
        if !view.repairs.contains_key(&group) && !view.finished.contains_key(&group) {
            let member_of_raft = |node: &NodeId| {
                fact.membership
                    .as_ref()
                    .is_some_and(|m| m.voters.contains(node) || m.learners.contains(node))
            };
            for (node, node_view) in &view.nodes {
                if node_view.is_up()
                    && node_view.hosts(group)
                    && !members.contains(node)
                    && !member_of_raft(node)
                    && fact.leader != Some(*node)
                    && view.stale.contains(&(*node, group))
                {
                    actions.push(Action::Drop { node: *node, group });
                }
            }
        }
    }
    // Groups a node hosts that the table does not know at all (left over from an earlier
    // cluster or a removed group).
    for (node, node_view) in &view.nodes {
        let Some(heard) = &node_view.heard else {
            continue;
        };
        for group in heard.groups.keys() {
            if table.route(*group).is_none()
                && *group != CENTER_GROUP
                && view.stale.contains(&(*node, *group))
            {
                actions.push(Action::Drop {
                    node: *node,
                    group: *group,
                });
            }
        }
    }

    if calm && leaders.len() == table.groups().len() {
        // Replicas first: a node that joined empty (or came back after its replicas were
        // replaced) takes replicas from the busiest until counts are within one. Only when
        // everything is calm, through the same learner-first replace a repair uses, and
        // never in the same round as leadership moves.
        let candidates: BTreeSet<NodeId> = view
            .nodes
            .iter()
            .filter(|(_, v)| v.is_candidate())
            .map(|(id, _)| *id)
            .collect();
        let balance = if config.repair_enabled {
            plan_replica_moves(
                &voters,
                &leaders,
                &candidates,
                &view.cooling,
                config.repairs_max,
            )
        } else {
            Vec::new()
        };
        if !balance.is_empty() {
            for (group, old, new, leader) in balance {
                actions.push(Action::Repair {
                    group,
                    old,
                    new,
                    leader,
                });
            }
            return actions;
        }
        // Leaderships go only to nodes that may hold replicas (never back to a draining one).
        let eligible: BTreeSet<NodeId> = view
            .nodes
            .iter()
            .filter(|(_, v)| v.is_candidate())
            .map(|(id, _)| *id)
            .collect();
        for (group, from, to) in plan_leader_moves(
            &leaders,
            &voters,
            &eligible,
            &view.cooling,
            config.leader_moves_max,
        ) {
            actions.push(Action::MoveLeader { group, from, to });
        }
    }
    actions
}

/// Registry updates: heard-from nodes are `Up` at their reported address; nodes past the
/// failure timeout are `Down`.
fn plan_registry(view: &View, actions: &mut Vec<Action>) {
    for (id, node) in &view.nodes {
        let record = node.record.as_ref();
        if record.is_some_and(|r| r.state == NodeState::Removed) {
            continue;
        }
        // A draining node stays draining (whatever its liveness) until no group of the table
        // names it; then it is out of service for good.
        if let Some(record) = record.filter(|r| r.state == NodeState::Draining) {
            let named = view
                .routing
                .as_ref()
                .is_some_and(|t| t.groups().values().any(|r| r.replicas.contains(id)));
            let moved = node
                .heard
                .as_ref()
                .filter(|h| node.liveness == Liveness::Up && h.address != record.address);
            if !named {
                actions.push(Action::Register(NodeRecord {
                    state: NodeState::Removed,
                    ..record.clone()
                }));
            } else if let Some(heard) = moved {
                actions.push(Action::Register(NodeRecord {
                    address: heard.address.clone(),
                    ..record.clone()
                }));
            }
            continue;
        }
        match (node.liveness, &node.heard) {
            (Liveness::Up, Some(heard)) => {
                let current =
                    record.is_some_and(|r| r.state == NodeState::Up && r.address == heard.address);
                if !current {
                    actions.push(Action::Register(NodeRecord {
                        id: *id,
                        address: heard.address.clone(),
                        state: NodeState::Up,
                    }));
                }
            }
            (Liveness::Down, _) => {
                if let Some(record) = record.filter(|r| r.state == NodeState::Up) {
                    actions.push(Action::Register(NodeRecord {
                        state: NodeState::Down,
                        ..record.clone()
                    }));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn status(group: GroupId, leader: bool, voters: &[NodeId], index: u64) -> GroupStatus {
        GroupStatus {
            group,
            is_leader: leader,
            term: 1,
            last_applied: index,
            initialized: true,
            membership: Some(MembershipStatus {
                index,
                voters: voters.to_vec(),
                configs: vec![voters.to_vec()],
                learners: vec![],
            }),
            broken: None,
            records_estimate: 0,
        }
    }

    fn record(id: NodeId, state: NodeState) -> NodeRecord {
        NodeRecord {
            id,
            address: format!("n{id}"),
            state,
        }
    }

    fn up(id: NodeId, groups: Vec<GroupStatus>) -> NodeView {
        NodeView {
            liveness: Liveness::Up,
            record: Some(record(id, NodeState::Up)),
            heard: Some(Heard {
                address: format!("n{id}"),
                groups: groups.into_iter().map(|s| (s.group, s)).collect(),
                hot: Default::default(),
            }),
        }
    }

    fn down(id: NodeId) -> NodeView {
        NodeView {
            liveness: Liveness::Down,
            record: Some(record(id, NodeState::Down)),
            heard: None,
        }
    }

    fn config() -> PlanConfig {
        PlanConfig {
            groups: 4,
            replicas: 3,
            bootstrap_nodes_min: 4,
            repairs_max: 2,
            leader_moves_max: 2,
            repair_enabled: true,
        }
    }

    /// The standard cluster: 4 nodes, 4 groups placed by `place`, group g led by its first
    /// replica, every membership committed and in sync.
    fn healthy() -> View {
        let nodes: BTreeSet<NodeId> = [1, 2, 3, 4].into();
        let placement = place(4, &nodes, 3).unwrap();
        let table = RoutingTable::even(4, |g| placement[&g].clone());
        let mut views = BTreeMap::new();
        for node in &nodes {
            let groups = placement
                .iter()
                .filter(|(_, m)| m.contains(node))
                .map(|(g, m)| status(*g, m[0] == *node, m, 10))
                .collect();
            views.insert(*node, up(*node, groups));
        }
        View {
            routing: Some(table),
            nodes: views,
            ..View::default()
        }
    }

    #[test]
    fn liveness_needs_the_whole_timeout_and_grants_a_grace_period() {
        let s = Duration::from_secs;
        let timeout = s(3);
        // Heard 2 s ago: up; 4 s ago: down. Never one probe: only elapsed time counts.
        assert_eq!(
            liveness(Some(s(8)), None, s(0), s(10), timeout),
            Liveness::Up
        );
        assert_eq!(
            liveness(Some(s(6)), None, s(0), s(10), timeout),
            Liveness::Down
        );
        // A new center leader (term started at 9 s) has heard nothing yet: grace, then down.
        let up = Some(NodeState::Up);
        assert_eq!(liveness(None, up, s(9), s(10), timeout), Liveness::Grace);
        assert_eq!(liveness(None, up, s(9), s(13), timeout), Liveness::Down);
        // Recorded down and not heard from: no grace.
        let was_down = Some(NodeState::Down);
        assert_eq!(
            liveness(None, was_down, s(9), s(10), timeout),
            Liveness::Down
        );
        assert_eq!(
            liveness(Some(s(10)), was_down, s(9), s(10), timeout),
            Liveness::Up
        );
        assert_eq!(
            liveness(Some(s(10)), Some(NodeState::Removed), s(0), s(10), timeout),
            Liveness::Down
        );
    }

    #[test]
    fn placement_is_round_robin_over_distinct_nodes() {
        let nodes: BTreeSet<NodeId> = [1, 2, 3, 4].into();
        let p = place(4, &nodes, 3).unwrap();
        assert_eq!(p[&1], vec![1, 2, 3]);
        assert_eq!(p[&2], vec![2, 3, 4]);
        assert_eq!(p[&3], vec![3, 4, 1]);
        assert_eq!(p[&4], vec![4, 1, 2]);
        assert_eq!(place(4, &[1, 2].into(), 3), None);
    }

    #[test]
    fn bootstrap_waits_for_enough_nodes() {
        let mut view = View::default();
        for id in [1, 2, 3] {
            view.nodes.insert(id, up(id, vec![]));
        }
        assert_eq!(plan(&view, &config()), vec![]);
        view.nodes.insert(4, up(4, vec![]));
        let actions = plan(&view, &config());
        let table = actions
            .iter()
            .find_map(|a| match a {
                Action::Bootstrap(t) => Some(t.clone()),
                _ => None,
            })
            .expect("bootstrap");
        table.check().unwrap();
        assert_eq!(table.epoch(), 1);
        assert_eq!(table.route(3).unwrap().replicas, vec![3, 4, 1]);
    }

    #[test]
    fn new_groups_are_hosted_everywhere_and_formed_once() {
        let mut view = healthy();
        for node in view.nodes.values_mut() {
            node.heard.as_mut().unwrap().groups.clear();
        }
        let actions = plan(&view, &config());
        let hosts: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Host {
                    node,
                    group,
                    initialize,
                } => Some((*node, *group, initialize.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(hosts.len(), 12);
        let formers: Vec<_> = hosts.iter().filter(|h| h.2.is_some()).collect();
        assert_eq!(formers.len(), 4);
        assert!(formers.contains(&&(3, 3, Some(vec![3, 4, 1]))));
    }

    #[test]
    fn a_healthy_balanced_cluster_needs_nothing() {
        assert_eq!(plan(&healthy(), &config()), vec![]);
    }

    #[test]
    fn a_dead_node_is_registered_down_and_its_replicas_replaced() {
        let mut view = healthy();
        view.nodes.insert(1, down(1));
        view.nodes.get_mut(&1).unwrap().record = Some(record(1, NodeState::Up));
        // Groups 1 (led by 1), 3 and 4 have a replica on 1; group 1 has no leader yet.
        let actions = plan(&view, &config());
        assert!(actions.contains(&Action::Register(record(1, NodeState::Down))));
        let repairs: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Repair {
                    group, old, new, ..
                } => Some((*group, *old, *new)),
                _ => None,
            })
            .collect();
        // repairs_max = 2; group 1 lost its leader with node 1, so only 3 and 4 qualify now.
        assert_eq!(repairs, vec![(3, 1, 2), (4, 1, 3)]);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::MoveLeader { .. }))
        );
    }

    #[test]
    fn a_replica_retired_as_corrupt_is_replaced_while_its_node_stays_up() {
        let mut view = healthy();
        // Node 3's replica of group 1 (led by 1, replicas 1, 2, 3) read a corrupt record.
        let heard = view.nodes.get_mut(&3).unwrap().heard.as_mut().unwrap();
        let status = heard.groups.get_mut(&1).unwrap();
        status.broken = Some("checksum mismatch".into());
        status.is_leader = false;
        status.membership = None;
        let actions = plan(&view, &config());
        assert_eq!(
            actions
                .iter()
                .filter(|a| matches!(a, Action::Repair { .. }))
                .collect::<Vec<_>>(),
            vec![&Action::Repair {
                group: 1,
                old: 3,
                new: 4,
                leader: 1
            }],
            "{actions:?}"
        );
        // The node itself is up: registered as such, and its other replicas left alone.
        assert!(!actions.iter().any(|a| matches!(a, Action::Register(_))));
        assert!(!actions.iter().any(|a| matches!(a, Action::Drop { .. })));
    }

    #[test]
    fn repairs_pause_after_a_mass_failure_and_when_switched_off() {
        let mut view = healthy();
        for id in [1, 2, 3] {
            view.nodes.insert(id, down(id));
        }
        assert!(
            !plan(&view, &config())
                .iter()
                .any(|a| matches!(a, Action::Repair { .. }))
        );
        let mut view = healthy();
        view.nodes.insert(1, down(1));
        let off = PlanConfig {
            repair_enabled: false,
            ..config()
        };
        assert!(
            !plan(&view, &off)
                .iter()
                .any(|a| matches!(a, Action::Repair { .. }))
        );
    }

    /// `view`'s table with group 3's replicas `replicas` (what the reports say is unchanged).
    fn group_3_as(view: &mut View, replicas: Vec<NodeId>) {
        let table = view.routing.as_ref().unwrap().with_replicas(3, replicas);
        view.routing = Some(table.unwrap());
    }

    #[test]
    fn a_finished_repair_is_written_and_not_rolled_back_by_older_reports() {
        let mut view = healthy();
        view.nodes.insert(1, down(1));
        view.finished.insert(3, RepairInFlight { old: 1, new: 2 });
        let actions = plan(&view, &config());
        assert!(actions.contains(&Action::Adopt {
            group: 3,
            replicas: vec![3, 4, 2]
        }));

        // The table now says {3,4,2}; heartbeats still carry membership {3,4,1} at index 10.
        let mut later = healthy();
        later.nodes.insert(1, down(1));
        group_3_as(&mut later, vec![3, 4, 2]);
        later.adopted_through.insert(3, 10);
        let actions = plan(&later, &config());
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Adopt { group: 3, .. })),
            "{actions:?}"
        );
        // Once a newer membership is reported, the table follows it.
        for node in later.nodes.values_mut() {
            if let Some(heard) = node.heard.as_mut()
                && let Some(s) = heard.groups.get_mut(&3)
            {
                *s = status(3, s.is_leader, &[2, 3, 4], 12);
            }
        }
        later.adopted_through.clear();
        let actions = plan(&later, &config());
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Adopt { group: 3, .. })),
            "in sync: {actions:?}"
        );
    }

    /// The table says {3,4,2} for group 3, written from a repair of 1 by 2 that a deposed
    /// leader answered "done", while the group, led by 3, still reports {3,4,1} at index 10,
    /// the index the table was written through. Trusted at first (a real repair's membership
    /// may not be reported yet); once doubted (`View::adoption_doubted`), the leader's report
    /// is written back.
    #[test]
    fn a_table_from_a_repair_its_leader_contradicts_is_undone_once_doubted() {
        let mut view = healthy();
        group_3_as(&mut view, vec![3, 4, 2]);
        view.adopted_through.insert(3, 10);
        let adopts = |view: &View| -> Vec<Action> {
            plan(view, &config())
                .into_iter()
                .filter(|a| matches!(a, Action::Adopt { group: 3, .. }))
                .collect()
        };
        assert_eq!(adopts(&view), vec![], "trusted until doubted");
        view.adoption_doubted.insert(3);
        assert_eq!(
            adopts(&view),
            vec![Action::Adopt {
                group: 3,
                replicas: vec![3, 4, 1]
            }]
        );
        // Only the leader's own report counts: with no live leader, nothing is written back.
        for node in view.nodes.values_mut() {
            if let Some(heard) = node.heard.as_mut()
                && let Some(s) = heard.groups.get_mut(&3)
            {
                s.is_leader = false;
            }
        }
        assert_eq!(adopts(&view), vec![]);
    }

    #[test]
    fn the_table_follows_a_newer_committed_membership() {
        let mut view = healthy();
        // Group 2 (2,3,4) committed a change to (2,3,1) that the table missed.
        for node in view.nodes.values_mut() {
            if let Some(s) = node.heard.as_mut().unwrap().groups.get_mut(&2) {
                *s = status(2, s.is_leader, &[1, 2, 3], 20);
            }
        }
        let actions = plan(&view, &config());
        assert!(actions.contains(&Action::Adopt {
            group: 2,
            replicas: vec![2, 3, 1]
        }));
    }

    #[test]
    fn a_never_formed_group_is_placed_anew_around_a_dead_replica() {
        let mut view = healthy();
        for node in view.nodes.values_mut() {
            node.heard.as_mut().unwrap().groups.clear();
        }
        view.nodes.insert(1, down(1));
        // Down, but not for long: its last sends may still be on their way to the others.
        let actions = plan(&view, &config());
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Adopt { .. } | Action::Recreate { .. })),
            "{actions:?}"
        );
        view.settled_down.insert(1);
        let actions = plan(&view, &config());
        // Group 2 (2,3,4) does not involve node 1: formed as placed. Groups 3 and 4 get a
        // live replica instead of node 1 and keep their first replica, and nobody forms them
        // until then. Group 1 is node 1's to form: node 1 may have formed it before dying and
        // come back with that membership, so it is not re-placed under its id.
        assert!(actions.contains(&Action::Host {
            node: 2,
            group: 2,
            initialize: Some(vec![2, 3, 4])
        }));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Adopt { group: 1, .. }))
        );
        // Instead group 1 is recreated under a new id (5), node 1's place taken by a live node.
        assert!(
            actions.iter().any(|a| matches!(
                a,
                Action::Recreate { old: 1, new: 5, replicas } if !replicas.contains(&1)
            )),
            "{actions:?}"
        );
        for (group, first) in [(3, 3), (4, 4)] {
            assert!(
                actions.iter().any(|a| matches!(
                    a,
                    Action::Adopt { group: g, replicas } if *g == group
                        && replicas[0] == first
                        && !replicas.contains(&1)
                )),
                "group {group} placed anew around node 1: {actions:?}"
            );
        }
        assert!(!actions.iter().any(|a| matches!(
            a,
            Action::Host {
                group: 1 | 3 | 4,
                initialize: Some(_),
                ..
            }
        )));
        // Most replicas silent: whether a leader was elected is unknown, so nothing is
        // rewritten (spare nodes 5..=7 keep this from counting as a mass failure).
        let mut silent = healthy();
        for id in [1, 2, 3] {
            silent.nodes.insert(id, down(id));
            silent.settled_down.insert(id);
        }
        for id in [5, 6, 7] {
            silent.nodes.insert(id, up(id, vec![]));
        }
        for node in silent.nodes.values_mut() {
            if let Some(heard) = node.heard.as_mut() {
                heard.groups.clear();
            }
        }
        assert!(!plan(&silent, &config()).iter().any(|a| matches!(
            a,
            Action::Adopt { group: 1, .. } | Action::Recreate { old: 1, .. }
        )));
    }

    #[test]
    fn the_largest_group_past_the_threshold_is_split() {
        let mut view = healthy();
        let mut report = |node: NodeId, group: GroupId, records: u64| {
            if let Some(status) = view
                .nodes
                .get_mut(&node)
                .and_then(|n| n.heard.as_mut())
                .and_then(|h| h.groups.get_mut(&group))
            {
                status.records_estimate = records;
            }
        };
        // Group 1 is on nodes 1, 2, 3; group 2 on 2, 3, 4 (`place` round-robin).
        report(1, 1, 900);
        report(2, 1, 1_200);
        report(2, 2, 1_100);
        assert_eq!(plan_split(&view, 0, 100), None, "0 turns it off");
        assert_eq!(
            plan_split(&view, 1_500, 100),
            None,
            "nothing past the threshold"
        );
        assert_eq!(
            plan_split(&view, 1_000, 100),
            Some(1),
            "the largest report counts"
        );
        assert_eq!(
            plan_split(&view, 1_000, 4),
            None,
            "the table holds groups_max groups"
        );
        // A dead node's report does not count.
        view.nodes.insert(2, down(2));
        assert_eq!(plan_split(&view, 1_000, 100), None);
    }

    #[test]
    fn a_table_with_fewer_groups_than_nodes_splits_its_largest_group() {
        // Four nodes, four groups of 4,096 slots each: one group a node, nothing to do.
        let mut view = healthy();
        assert_eq!(plan_split_for_nodes(&view, 1, 100), None);
        assert_eq!(plan_split_for_nodes(&view, 0, 100), None, "0 turns it off");
        // Two groups a node wanted: the largest group (all equal: the lowest id) splits.
        assert_eq!(plan_split_for_nodes(&view, 2, 100), Some(1));
        assert_eq!(
            plan_split_for_nodes(&view, 2, 4),
            None,
            "the table holds groups_max groups"
        );
        // A fifth node joins: one group short; group 2 has become the largest.
        view.nodes.insert(5, up(5, vec![]));
        let table = view.routing.as_ref().expect("a table");
        let (start, _) = table.slot_ranges(1)[0];
        view.routing = Some(table.move_slots(&[(start, start + 99)], 2).expect("moved"));
        assert_eq!(plan_split_for_nodes(&view, 1, 100), Some(2));
        // A node that is down, draining or removed takes no work: it asks for no group.
        view.nodes.insert(5, down(5));
        assert_eq!(plan_split_for_nodes(&view, 1, 100), None);
        view.nodes.insert(5, up(5, vec![]));
        view.nodes.get_mut(&5).expect("node 5").record = Some(record(5, NodeState::Draining));
        assert_eq!(plan_split_for_nodes(&view, 1, 100), None);
    }

    #[test]
    fn the_hottest_slot_past_the_threshold_is_isolated_unless_alone_in_its_group() {
        use larder_core::hotkeys::HotSlot;
        let mut view = healthy();
        let table = view.routing.clone().expect("a table");
        // Two slots of group 1 and one of group 2, as their leaders report them.
        let (a, b) = (table.slot_ranges(1)[0].0, table.slot_ranges(1)[0].0 + 1);
        let c = table.slot_ranges(2)[0].0;
        let mut hot = |node: NodeId, slots: &[(u16, u64)]| {
            let heard = view
                .nodes
                .get_mut(&node)
                .and_then(|n| n.heard.as_mut())
                .expect("heard");
            heard.hot.slots = slots
                .iter()
                .map(|&(slot, per_sec)| HotSlot { slot, per_sec })
                .collect();
        };
        hot(1, &[(a, 900), (b, 300)]);
        // A second leader's report of the same slot (around a leader change) counts at the
        // higher rate, not the sum.
        hot(2, &[(a, 700), (c, 800)]);
        assert_eq!(plan_hot_slot(&view, 0, 100), None, "0 turns it off");
        assert_eq!(plan_hot_slot(&view, 1_000, 100), None, "none past it");
        assert_eq!(plan_hot_slot(&view, 500, 100), Some((1, a)));
        assert_eq!(plan_hot_slot(&view, 850, 100), Some((1, a)));
        assert_eq!(plan_hot_slot(&view, 500, 4), None, "groups_max reached");
        // A slot alone in its group stays where it is.
        // `a` is group 1's first slot: every other one moves to group 2.
        let mut rest = table.slot_ranges(1);
        rest[0].0 += 1;
        view.routing = Some(table.move_slots(&rest, 2).expect("moves"));
        assert_eq!(plan_hot_slot(&view, 500, 100), Some((2, c)));
        // A dead node's report does not count.
        view.nodes.insert(2, down(2));
        assert_eq!(plan_hot_slot(&view, 500, 100), None);
    }

    #[test]
    fn a_repair_whose_answer_is_lost_is_adopted_from_the_reported_membership() {
        // Group 3 is {3,4,1}; a repair replacing 1 by 2 is in flight, its answer not back.
        let mut view = healthy();
        view.repairs.insert(3, RepairInFlight { old: 1, new: 2 });
        for (id, node) in view.nodes.iter_mut() {
            let groups = &mut node.heard.as_mut().unwrap().groups;
            groups.remove(&3);
            if [2, 3, 4].contains(id) {
                groups.insert(3, status(3, *id == 3, &[3, 4, 2], 20));
            }
        }
        let adopted: Vec<_> = plan(&view, &config())
            .into_iter()
            .filter_map(|a| match a {
                Action::Adopt { group: 3, replicas } => Some(replicas),
                _ => None,
            })
            .collect();
        assert_eq!(
            adopted,
            vec![vec![3, 4, 2]],
            "the repair's outcome is adopted"
        );

        // A membership that is not the repair's outcome waits for the repair to end.
        view.repairs.insert(3, RepairInFlight { old: 4, new: 2 });
        assert!(
            !plan(&view, &config())
                .iter()
                .any(|a| matches!(a, Action::Adopt { group: 3, .. })),
        );
    }

    #[test]
    fn a_change_cut_short_in_joint_consensus_is_finished() {
        let mut view = healthy();
        // Group 2 (2,3,4, led by 2) is stuck between {2,3,4} and {2,3,1}.
        for node in view.nodes.values_mut() {
            if let Some(s) = node.heard.as_mut().unwrap().groups.get_mut(&2) {
                let m = s.membership.as_mut().unwrap();
                m.voters = vec![1, 2, 3, 4];
                m.configs = vec![vec![2, 3, 4], vec![1, 2, 3]];
            }
        }
        let actions = plan(&view, &config());
        assert!(
            actions.contains(&Action::Repair {
                group: 2,
                old: 4,
                new: 1,
                leader: 2
            }),
            "{actions:?}"
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::Adopt { .. })));
        view.repairs.insert(2, RepairInFlight { old: 4, new: 1 });
        assert!(
            !plan(&view, &config())
                .iter()
                .any(|a| matches!(a, Action::Repair { group: 2, .. }))
        );
    }

    #[test]
    fn stale_replicas_are_dropped_only_when_no_member() {
        let mut view = healthy();
        // Node 4 still hosts group 1 (1,2,3) after being replaced.
        view.nodes
            .get_mut(&4)
            .unwrap()
            .heard
            .as_mut()
            .unwrap()
            .groups
            .insert(1, status(1, false, &[1, 2, 3, 4], 5));
        assert!(
            !plan(&view, &config())
                .iter()
                .any(|a| matches!(a, Action::Drop { .. }))
        );
        view.stale.insert((4, 1));
        assert!(plan(&view, &config()).contains(&Action::Drop { node: 4, group: 1 }));
        view.repairs.insert(1, RepairInFlight { old: 3, new: 4 });
        assert!(
            !plan(&view, &config())
                .iter()
                .any(|a| matches!(a, Action::Drop { .. }))
        );
        view.repairs.clear();
        view.finished.insert(1, RepairInFlight { old: 3, new: 4 });
        assert!(
            !plan(&view, &config())
                .iter()
                .any(|a| matches!(a, Action::Drop { .. }))
        );
    }

    #[test]
    fn a_node_that_joins_empty_takes_replicas_until_counts_are_within_one() {
        let mut view = healthy();
        // Node 5 joins with nothing: 4 groups x 3 replicas = 12 over 5 nodes, 2 or 3 each.
        view.nodes.insert(5, up(5, vec![]));
        let actions = plan(&view, &config());
        let moves: Vec<(GroupId, NodeId, NodeId)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Repair {
                    group,
                    old,
                    new,
                    leader,
                } => {
                    assert_ne!(old, leader, "never the leader's own replica");
                    Some((*group, *old, *new))
                }
                _ => None,
            })
            .collect();
        assert_eq!(moves.len(), 2, "repairs_max at once: {actions:?}");
        assert!(moves.iter().all(|(_, _, new)| *new == 5), "{moves:?}");
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::MoveLeader { .. })),
            "no leadership moves in the same round"
        );
        // Balanced: nothing to do.
        let even = plan_replica_moves(
            &BTreeMap::from([(1, vec![1, 2]), (2, vec![2, 3]), (3, vec![3, 1])]),
            &BTreeMap::from([(1, 1), (2, 2), (3, 3)]),
            &BTreeSet::from([1, 2, 3]),
            &BTreeSet::new(),
            4,
        );
        assert_eq!(even, vec![]);
    }

    #[test]
    fn leaders_move_from_the_busiest_node() {
        let mut view = healthy();
        // Node 1 leads groups 1, 3 and 4; node 3 and 4 lead none.
        for node in view.nodes.values_mut() {
            for (group, s) in node.heard.as_mut().unwrap().groups.iter_mut() {
                s.is_leader = [1, 3, 4].contains(group) && node.record.as_ref().unwrap().id == 1
                    || *group == 2 && node.record.as_ref().unwrap().id == 2;
            }
        }
        let actions = plan(&view, &config());
        let moves: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::MoveLeader { group, from, to } => Some((*group, *from, *to)),
                _ => None,
            })
            .collect();
        // Group 1 goes to node 3 (leading none), then group 3 to node 4.
        assert_eq!(moves, vec![(1, 1, 3), (3, 1, 4)]);
        view.cooling.insert(3);
        let actions = plan(&view, &config());
        assert!(actions.contains(&Action::MoveLeader {
            group: 4,
            from: 1,
            to: 4
        }));
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::MoveLeader { group: 3, .. }))
        );
    }

    #[test]
    fn slot_moves_even_out_groups_and_stop_within_tolerance() {
        // Eight even groups, one split in two: the half-groups take from the others.
        let table = RoutingTable::even(8, |g| vec![g]);
        let mut slots = table.slot_ranges_by_group();
        let first = slots[&1].clone();
        let (a, b) = first[0];
        let mid = a + (b - a).div_ceil(2);
        slots.insert(1, vec![(a, mid - 1)]);
        slots.insert(9, vec![(mid, b)]);
        let mut moves = 0;
        while let Some(m) = plan_slot_move(&slots, 16) {
            moves += 1;
            assert!(moves < 50, "does not converge");
            assert_ne!(m.from, m.to);
            let moving: Vec<u16> = m.ranges.iter().flat_map(|&(x, y)| x..=y).collect();
            assert!(!moving.is_empty());
            let from: Vec<u16> = slots[&m.from].iter().flat_map(|&(x, y)| x..=y).collect();
            assert!(
                moving.iter().all(|s| from.contains(s)),
                "moves only what the source owns"
            );
            slots.insert(
                m.from,
                larder_core::slots::ranges_where(|s| from.contains(&s) && !moving.contains(&s)),
            );
            let to: Vec<u16> = slots[&m.to].iter().flat_map(|&(x, y)| x..=y).collect();
            slots.insert(
                m.to,
                larder_core::slots::ranges_where(|s| to.contains(&s) || moving.contains(&s)),
            );
        }
        let counts: Vec<usize> = slots
            .values()
            .map(|r| r.iter().map(|&(x, y)| usize::from(y - x) + 1).sum())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 16384);
        let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(hi - lo <= 16, "{counts:?}");
        assert!(moves >= 2, "a split leaves groups uneven");
        // Already even: nothing to do.
        assert_eq!(plan_slot_move(&table.slot_ranges_by_group(), 1), None);
    }

    fn liveness_strategy() -> impl Strategy<Value = Liveness> {
        prop_oneof![
            4 => Just(Liveness::Up),
            1 => Just(Liveness::Grace),
            2 => Just(Liveness::Down),
        ]
    }

    proptest! {
        /// Placement never puts two replicas of a group on one node, and uses only the nodes
        /// it was given.
        #[test]
        fn placement_is_distinct(
            nodes in proptest::collection::btree_set(1u64..64, 0..12),
            groups in 1u64..40,
            replicas in 1usize..5,
        ) {
            match place(groups, &nodes, replicas) {
                None => prop_assert!(nodes.len() < replicas),
                Some(placement) => {
                    prop_assert_eq!(placement.len() as u64, groups);
                    for members in placement.values() {
                        let set: BTreeSet<_> = members.iter().collect();
                        prop_assert_eq!(set.len(), replicas);
                        prop_assert!(members.iter().all(|m| nodes.contains(m)));
                    }
                }
            }
        }

        /// Whatever the liveness of each node, the planner never bootstraps onto or repairs
        /// with a node that is not up, and no group ever gets a node twice (table and repair
        /// targets together).
        #[test]
        fn plans_never_use_dead_nodes_or_double_up(
            states in proptest::collection::vec(liveness_strategy(), 3..10),
            heard in proptest::collection::vec(any::<bool>(), 10),
            bootstrapped in any::<bool>(),
            leaders in proptest::collection::vec(0usize..3, 8),
        ) {
            let ids: Vec<NodeId> = (1..=states.len() as u64).collect();
            let all: BTreeSet<NodeId> = ids.iter().copied().collect();
            let placement = place(8, &all, 3).unwrap();
            let mut view = View::default();
            if bootstrapped {
                view.routing = Some(RoutingTable::even(8, |g| placement[&g].clone()));
            }
            for (i, (id, state)) in ids.iter().zip(&states).enumerate() {
                let groups = if bootstrapped && heard[i] {
                    placement
                        .iter()
                        .filter(|(_, m)| m.contains(id))
                        .map(|(g, m)| status(*g, m[leaders[(*g as usize) % 8]] == *id, m, 3))
                        .collect()
                } else {
                    vec![]
                };
                let mut node = up(*id, groups);
                node.liveness = *state;
                if !heard[i] || *state != Liveness::Up {
                    node.heard = None;
                }
                view.nodes.insert(*id, node);
            }
            let is_up = |n: &NodeId| view.nodes[n].liveness == Liveness::Up
                && view.nodes[n].heard.is_some();
            let config = PlanConfig { groups: 8, bootstrap_nodes_min: 3, repairs_max: 8, ..config() };
            for action in plan(&view, &config) {
                match action {
                    Action::Bootstrap(table) => {
                        table.check().unwrap();
                        for route in table.groups().values() {
                            prop_assert_eq!(route.replicas.len(), 3);
                            prop_assert!(route.replicas.iter().all(&is_up));
                        }
                    }
                    Action::Repair { group, old, new, leader } => {
                        let members = &view.routing.as_ref().unwrap().route(group).unwrap().replicas;
                        prop_assert!(is_up(&new), "repair onto {} which is not up", new);
                        prop_assert!(!members.contains(&new), "{} already in {:?}", new, members);
                        prop_assert!(members.contains(&old));
                        prop_assert!(is_up(&leader));
                        if view.nodes[&old].liveness != Liveness::Down {
                            // Not a repair but a balancing move: only off a live node that
                            // holds at least two replicas more than the node it moves to.
                            let counts = view.routing.as_ref().unwrap().replica_counts();
                            let count = |n: &NodeId| counts.get(n).copied().unwrap_or(0);
                            prop_assert!(is_up(&old), "balancing off {} which is not up", old);
                            prop_assert!(
                                count(&old) > count(&new) + 1,
                                "balancing {} ({}) -> {} ({})", old, count(&old), new, count(&new)
                            );
                        }
                    }
                    Action::Host { node, .. } => prop_assert!(is_up(&node)),
                    Action::MoveLeader { to, .. } => prop_assert!(is_up(&to)),
                    _ => {}
                }
            }
        }

        /// A move always goes from a group's leader to another replica of it, and once the
        /// moves are planned no group left in place could still narrow a gap of more than one
        /// (a group moves at most once per plan: its new leader must settle first).
        #[test]
        fn leader_moves_only_to_replicas_and_narrow_the_gap(
            leader_pick in proptest::collection::vec(0usize..3, 1..12),
            nodes in 3u64..7,
        ) {
            let all: BTreeSet<NodeId> = (1..=nodes).collect();
            let placement = place(leader_pick.len() as u64, &all, 3).unwrap();
            let leaders: BTreeMap<GroupId, NodeId> = placement
                .iter()
                .map(|(g, m)| (*g, m[leader_pick[(*g - 1) as usize]]))
                .collect();
            let moves = plan_leader_moves(&leaders, &placement, &all, &BTreeSet::new(), 100);
            let mut after = leaders.clone();
            for (group, from, to) in &moves {
                prop_assert_eq!(after[group], *from);
                prop_assert!(placement[group].contains(to));
                after.insert(*group, *to);
            }
            let mut counts: BTreeMap<NodeId, usize> = all.iter().map(|n| (*n, 0)).collect();
            for leader in after.values() {
                *counts.get_mut(leader).unwrap() += 1;
            }
            let moved: BTreeSet<GroupId> = moves.iter().map(|m| m.0).collect();
            for (group, leader) in after.iter().filter(|(g, _)| !moved.contains(g)) {
                for other in &placement[group] {
                    prop_assert!(counts[other] + 1 >= counts[leader],
                        "group {} could still move from {} to {}: {:?}", group, leader, other, counts);
                }
            }
        }
    }
}
