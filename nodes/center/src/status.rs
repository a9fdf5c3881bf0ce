//! The cluster's status for operators ([`GetStatus`], `larder admin status`), built by the pure
//! [`cluster_status`] from the [`View`] the control loop's latest round planned from: the
//! status shows what the center acts on, from the same data, never from a second reading.
//!
//! [`GetStatus`]: larder_protocol::GetStatus

use std::collections::BTreeMap;

use larder_core::{GroupId, NodeId};
use larder_protocol::{
    ADDRESS_BYTES_MAX, ADDRESSES_MAX, ClusterStatus, GroupLeader, GroupStatus, GroupSummary,
    NodeSummary, RepairSummary, ReplicaSummary, STATUS_REASON_BYTES_MAX,
};

use crate::plan::{View, group_facts};

/// Who answers, besides the view: the center leader, its term, the center replicas, and how
/// long ago the round that built the view ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answering<'a> {
    pub center_leader: NodeId,
    pub center_term: u64,
    pub centers: &'a [NodeId],
    pub round_age_ms: u64,
}

/// The cluster's status as `view` shows it. Bounded: at most [`ADDRESSES_MAX`] nodes, the
/// table's groups, addresses cut to [`ADDRESS_BYTES_MAX`] and reasons to
/// [`STATUS_REASON_BYTES_MAX`] bytes.
pub fn cluster_status(view: &View, answering: Answering<'_>) -> ClusterStatus {
    let facts = group_facts(&view.nodes);
    let reported = |node: NodeId, group: GroupId| -> Option<&GroupStatus> {
        view.nodes
            .get(&node)
            .and_then(|v| v.heard.as_ref())
            .and_then(|heard| heard.groups.get(&group))
    };
    let replica = |node: NodeId, group: GroupId, in_table: bool| {
        let status = reported(node, group);
        ReplicaSummary {
            node,
            in_table,
            last_applied: status.map(|s| s.last_applied),
            broken: status
                .and_then(|s| s.broken.as_deref())
                .map(|reason| cut(reason, STATUS_REASON_BYTES_MAX)),
        }
    };
    let mut leads: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut groups = Vec::new();
    if let Some(table) = &view.routing {
        let mut slots = table.slot_ranges_by_group();
        for (group, route) in table.groups() {
            let group = *group;
            let leader = facts.get(&group).and_then(|fact| {
                fact.leader.map(|node| GroupLeader {
                    node,
                    term: fact.leader_term,
                })
            });
            if let Some(leader) = leader {
                *leads.entry(leader.node).or_default() += 1;
            }
            // Nodes hosting it outside the table: a replacement catching up, a stale copy.
            let others = view
                .nodes
                .keys()
                .filter(|node| !route.replicas.contains(node) && reported(**node, group).is_some())
                .map(|node| replica(*node, group, false));
            groups.push(GroupSummary {
                group,
                replicas: route.replicas.clone(),
                leader,
                reports: route
                    .replicas
                    .iter()
                    .map(|node| replica(*node, group, true))
                    .chain(others)
                    .collect(),
                slots: slots.remove(&group).unwrap_or_default(),
            });
        }
    }
    let nodes = view
        .nodes
        .iter()
        .take(ADDRESSES_MAX)
        .map(|(id, node)| {
            // The latest heartbeat's address is newer than the registry's until the next round
            // records it (a node restarted on another port).
            let address = node
                .heard
                .as_ref()
                .map(|heard| heard.address.as_str())
                .or(node.record.as_ref().map(|record| record.address.as_str()))
                .unwrap_or_default();
            NodeSummary {
                id: *id,
                address: cut(address, ADDRESS_BYTES_MAX),
                state: node.record.as_ref().map(|record| record.state),
                liveness: node.liveness,
                groups: node
                    .heard
                    .as_ref()
                    .map(|heard| heard.groups.keys().copied().collect())
                    .unwrap_or_default(),
                leads: leads.get(id).copied().unwrap_or(0),
                hot: node
                    .heard
                    .as_ref()
                    .map(|heard| heard.hot.clone())
                    .unwrap_or_default(),
            }
        })
        .collect();
    ClusterStatus {
        center_leader: answering.center_leader,
        center_term: answering.center_term,
        centers: answering.centers.to_vec(),
        round_age_ms: answering.round_age_ms,
        epoch: view.routing.as_ref().map_or(0, |table| table.epoch()),
        nodes,
        groups,
        repairs: view
            .repairs
            .iter()
            .map(|(group, repair)| RepairSummary {
                group: *group,
                old: repair.old,
                new: repair.new,
            })
            .collect(),
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use larder_core::routing::RoutingTable;
    use larder_core::slots::SLOTS;
    use larder_protocol::{Liveness, MembershipStatus, NodeState};

    use super::*;
    use crate::plan::{Heard, NodeRecord, NodeView, RepairInFlight, place};

    const CENTERS: [NodeId; 3] = [101, 102, 103];

    fn answering() -> Answering<'static> {
        Answering {
            center_leader: 101,
            center_term: 7,
            centers: &CENTERS,
            round_age_ms: 120,
        }
    }

    fn status(
        group: GroupId,
        leader: bool,
        term: u64,
        voters: &[NodeId],
        applied: u64,
    ) -> GroupStatus {
        GroupStatus {
            group,
            is_leader: leader,
            term,
            last_applied: applied,
            initialized: true,
            membership: Some(MembershipStatus {
                index: 1,
                voters: voters.to_vec(),
                configs: vec![voters.to_vec()],
                learners: vec![],
            }),
            broken: None,
            records_estimate: 0,
        }
    }

    fn node(id: NodeId, liveness: Liveness, groups: Vec<GroupStatus>) -> NodeView {
        NodeView {
            liveness,
            record: Some(NodeRecord {
                id,
                address: format!("10.0.0.{id}:7000"),
                state: if liveness == Liveness::Down {
                    NodeState::Down
                } else {
                    NodeState::Up
                },
            }),
            heard: Some(Heard {
                address: format!("10.0.0.{id}:7000"),
                groups: groups.into_iter().map(|s| (s.group, s)).collect(),
                hot: Default::default(),
            }),
        }
    }

    /// Four nodes, four groups placed round-robin, group g led by its first replica in term
    /// g, replicas applied up to 10 * g.
    fn healthy() -> View {
        let ids: BTreeSet<NodeId> = [1, 2, 3, 4].into();
        let placement = place(4, &ids, 3).expect("placement");
        let mut nodes = BTreeMap::new();
        for id in &ids {
            let groups = placement
                .iter()
                .filter(|(_, members)| members.contains(id))
                .map(|(g, members)| status(*g, members[0] == *id, *g, members, 10 * g))
                .collect();
            nodes.insert(*id, node(*id, Liveness::Up, groups));
        }
        View {
            routing: Some(RoutingTable::even(4, |g| placement[&g].clone())),
            nodes,
            ..View::default()
        }
    }

    #[test]
    fn a_healthy_cluster_shows_every_node_group_leader_and_slot() {
        let status = cluster_status(&healthy(), answering());
        assert_eq!(
            (
                status.center_leader,
                status.center_term,
                status.round_age_ms
            ),
            (101, 7, 120)
        );
        assert_eq!(status.centers, CENTERS);
        assert_eq!(status.epoch, 1);
        assert!(status.repairs.is_empty());
        let ids: Vec<NodeId> = status.nodes.iter().map(|n| n.id).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        for node in &status.nodes {
            assert_eq!(node.state, Some(NodeState::Up));
            assert_eq!(node.liveness, Liveness::Up);
            assert_eq!(node.address, format!("10.0.0.{}:7000", node.id));
            assert_eq!(node.groups.len(), 3, "node {}", node.id);
            assert_eq!(node.leads, 1, "node {}: each leads one group", node.id);
        }
        // Node 1 hosts groups 1 (1,2,3), 3 (3,4,1) and 4 (4,1,2).
        assert_eq!(status.nodes[0].groups, [1, 3, 4]);
        let mut owners = vec![0usize; usize::from(SLOTS)];
        for group in &status.groups {
            assert_eq!(
                group.leader,
                Some(GroupLeader {
                    node: group.replicas[0],
                    term: group.group
                })
            );
            let reported: Vec<(NodeId, bool, Option<u64>)> = group
                .reports
                .iter()
                .map(|r| (r.node, r.in_table, r.last_applied))
                .collect();
            let expected: Vec<(NodeId, bool, Option<u64>)> = group
                .replicas
                .iter()
                .map(|n| (*n, true, Some(10 * group.group)))
                .collect();
            assert_eq!(reported, expected, "group {}", group.group);
            assert!(group.reports.iter().all(|r| r.broken.is_none()));
            for (first, last) in &group.slots {
                for slot in *first..=*last {
                    owners[usize::from(slot)] += 1;
                }
            }
        }
        assert_eq!(status.groups[0].slots, [(0, 4095)]);
        assert!(
            owners.iter().all(|count| *count == 1),
            "every slot owned by exactly one group"
        );
    }

    #[test]
    fn broken_down_unregistered_and_repairing_nodes_show_as_such() {
        let mut view = healthy();
        // Node 2's replica of group 1 is retired as corrupt, with a reason too long to carry.
        let long = "é".repeat(STATUS_REASON_BYTES_MAX);
        let heard = view.nodes.get_mut(&2).and_then(|n| n.heard.as_mut());
        heard
            .expect("heard")
            .groups
            .get_mut(&1)
            .expect("hosts 1")
            .broken = Some(long);
        // Node 3 is down and silent: it leads group 3 no more and reports nothing.
        view.nodes.insert(
            3,
            NodeView {
                heard: None,
                ..node(3, Liveness::Down, vec![])
            },
        );
        // Node 5 just joined: heard, not registered yet, catching up on group 3 to replace 3.
        view.nodes.insert(
            5,
            NodeView {
                record: None,
                ..node(5, Liveness::Up, vec![status(3, false, 3, &[3, 4, 1], 4)])
            },
        );
        view.repairs.insert(3, RepairInFlight { old: 3, new: 5 });

        let status = cluster_status(&view, answering());
        let by_id: BTreeMap<NodeId, &NodeSummary> =
            status.nodes.iter().map(|n| (n.id, n)).collect();
        assert_eq!(by_id[&3].liveness, Liveness::Down);
        assert_eq!(by_id[&3].state, Some(NodeState::Down));
        assert!(by_id[&3].groups.is_empty());
        assert_eq!(by_id[&3].leads, 0);
        assert_eq!(by_id[&5].state, None, "heard but not registered");
        assert_eq!(by_id[&5].address, "10.0.0.5:7000");
        assert_eq!(by_id[&5].groups, [3]);
        assert_eq!(
            status.repairs,
            [RepairSummary {
                group: 3,
                old: 3,
                new: 5
            }]
        );

        let group = |id: GroupId| status.groups.iter().find(|g| g.group == id).expect("group");
        let broken = &group(1).reports[1];
        assert_eq!((broken.node, broken.in_table), (2, true));
        let reason = broken.broken.as_deref().expect("broken");
        assert!(reason.len() <= STATUS_REASON_BYTES_MAX && reason.starts_with('é'));
        // Group 3 (3, 4, 1): its leader is down, so no live node claims it; node 3 reports
        // nothing, and node 5 shows outside the table.
        assert_eq!(group(3).leader, None);
        let reports: Vec<(NodeId, bool, Option<u64>)> = group(3)
            .reports
            .iter()
            .map(|r| (r.node, r.in_table, r.last_applied))
            .collect();
        assert_eq!(
            reports,
            [
                (3, true, None),
                (4, true, Some(30)),
                (1, true, Some(30)),
                (5, false, Some(4))
            ]
        );
    }

    #[test]
    fn before_the_first_table_only_nodes_show() {
        let mut view = healthy();
        view.routing = None;
        let status = cluster_status(&view, answering());
        assert_eq!(status.epoch, 0);
        assert!(status.groups.is_empty());
        assert_eq!(status.nodes.len(), 4);
        assert!(status.nodes.iter().all(|n| n.leads == 0));
    }

    #[test]
    fn the_status_is_bounded() {
        let mut view = View::default();
        for id in 1..=(ADDRESSES_MAX as NodeId + 3) {
            let mut entry = node(id, Liveness::Up, vec![]);
            if let Some(heard) = entry.heard.as_mut() {
                heard.address = "x".repeat(ADDRESS_BYTES_MAX + 1);
            }
            view.nodes.insert(id, entry);
        }
        let status = cluster_status(&view, answering());
        assert_eq!(status.nodes.len(), ADDRESSES_MAX);
        assert!(
            status
                .nodes
                .iter()
                .all(|n| n.address.len() == ADDRESS_BYTES_MAX)
        );
    }
}
