//! Operator requests that change the cluster's shape: draining a node and splitting a group
//! (ARCHITECTURE.md, "Growing and shrinking"). Both only record a decision; the control loop
//! ([`crate::plan`]) and the migration task ([`crate::migrate`]) do the work, so a center
//! failover resumes it.

use larder_core::env::Env;
use larder_core::kv::Command;
use larder_core::slots::{ranges_contain, ranges_where};
use larder_core::{GroupId, NodeId};
use larder_protocol::{Migration, NodeState, encode};

use crate::Center;
use crate::config::CenterError;
use crate::plan::{NodeRecord, View, place_new_group};
use crate::store::node_key;

fn refuse(reason: impl Into<String>) -> CenterError {
    CenterError::Refused {
        reason: reason.into(),
    }
}

impl<E: Env> Center<E> {
    /// The view of this leader's latest control round (which nodes are up and candidates).
    fn latest_view(&self) -> Result<std::sync::Arc<View>, CenterError> {
        let soft = self.soft.lock().expect("soft lock");
        soft.last_round
            .as_ref()
            .map(|round| round.view.clone())
            .ok_or_else(|| refuse("the center leader has not finished a control round yet"))
    }

    /// Marks `node` [`NodeState::Draining`] (on the center leader): from the next control
    /// round on it gets no new replicas, hands its leaderships over and its replicas are
    /// replaced one by one; once no group names it, it is `Removed`.
    pub(crate) async fn drain_node(&self, node: NodeId) -> Result<NodeState, CenterError> {
        let _writing = self.registry_writes.lock().await;
        let durable = self.load().await?;
        let record = durable
            .registry
            .get(&node)
            .cloned()
            .ok_or_else(|| refuse(format!("node {node} is not registered")))?;
        match record.state {
            NodeState::Removed => return Err(refuse(format!("node {node} is removed already"))),
            NodeState::Draining => return Ok(NodeState::Draining),
            NodeState::Up | NodeState::Down => {}
        }
        let view = self.latest_view()?;
        let others = view
            .nodes
            .iter()
            .filter(|(id, v)| **id != node && v.is_candidate())
            .count();
        if others < self.config.replicas {
            return Err(refuse(format!(
                "draining node {node} would leave {others} nodes up for groups of {} replicas; \
                 add a node first",
                self.config.replicas
            )));
        }
        let draining = NodeRecord {
            state: NodeState::Draining,
            ..record
        };
        self.execute(Command::set(node_key(node), encode(&draining)))
            .await?;
        tracing::info!(node, "node draining");
        Ok(NodeState::Draining)
    }

    /// Splits `group` (on the center leader): a new group, placed on the candidates holding
    /// the fewest replicas, joins the table owning nothing, and a migration moves the upper
    /// half of `group`'s slots to it. The migration is answered.
    pub(crate) async fn split_group(&self, group: GroupId) -> Result<Migration, CenterError> {
        self.split_off(group, |owned| {
            let slots: Vec<u16> = owned.iter().flat_map(|&(a, b)| a..=b).collect();
            let cut = slots[slots.len() / 2];
            ranges_where(|slot| slot >= cut && ranges_contain(owned, slot))
        })
        .await
    }

    /// Moves the hot `slot` out of `group` into a new group of its own (on the center leader),
    /// as [`Center::split_group`] does with half the slots: its requests then go to a leader
    /// the center can place apart from the rest of `group`'s.
    pub(crate) async fn isolate_slot(
        &self,
        group: GroupId,
        slot: u16,
    ) -> Result<Migration, CenterError> {
        self.split_off(group, |owned| {
            if ranges_contain(owned, slot) {
                vec![(slot, slot)]
            } else {
                Vec::new()
            }
        })
        .await
    }

    /// A new group, and a migration of the slots `part` picks from `group`'s to it.
    async fn split_off(
        &self,
        group: GroupId,
        part: impl FnOnce(&[(u16, u16)]) -> Vec<(u16, u16)>,
    ) -> Result<Migration, CenterError> {
        let durable = self.load().await?;
        let table = durable
            .routing
            .ok_or_else(|| refuse("the cluster has no routing table yet"))?;
        if table.route(group).is_none() {
            return Err(refuse(format!(
                "no group {group} in routing epoch {}",
                table.epoch()
            )));
        }
        let owned = table.slot_ranges(group);
        let slots: usize = owned.iter().map(|&(a, b)| usize::from(b - a) + 1).sum();
        if slots < 2 {
            return Err(refuse(format!(
                "group {group} owns {slots} slot(s): too few to split"
            )));
        }
        let moving = part(&owned);
        if moving.is_empty() {
            return Err(refuse(format!(
                "group {group} no longer owns the slots to move (routing epoch {})",
                table.epoch()
            )));
        }
        if let Some(busy) = durable
            .migrations
            .values()
            .find(|m| m.phase.is_active() && (m.from == group || m.to == group))
        {
            return Err(refuse(format!(
                "migration {} is moving slots of group {group}",
                busy.id
            )));
        }
        let view = self.latest_view()?;
        let replicas = place_new_group(&view, &table, self.config.replicas).ok_or_else(|| {
            refuse(format!(
                "fewer than {} nodes can take a replica of a new group",
                self.config.replicas
            ))
        })?;
        let new = table.next_group_id();
        let next = table.with_replicas(new, replicas.clone())?;
        if !self.install_routing(&next).await? {
            return Err(refuse(
                "the routing table changed meanwhile (another change took its epoch); try again",
            ));
        }
        tracing::info!(
            group,
            new,
            ?replicas,
            epoch = next.epoch(),
            "group split: new group placed"
        );
        self.start_migration(moving, new).await
    }
}
