//! What a center replica answers: storage nodes' heartbeats and status requests (on the
//! leader) and routing fetches (on every replica and observer, from the applied state);
//! everything else it answers as the storage node it is ([`CenterHandler`]).

use std::sync::Arc;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{Clock, Env, Handler, Net};
use larder_protocol::{
    CENTER_GROUP, CenterRequest, CenterResponse, ClusterStatus, DrainNode, GetMigrations,
    GetRouting, GetStatus, GroupStatus, Heartbeat, HeartbeatAck, Migration, MoveSlots, NodeState,
    Request, RoutingAnswer, SplitGroup, SteerMigration, decode_request, respond, undecodable,
};
use larder_storage::NodeError;

use crate::Center;
use crate::center::HeardAt;
use crate::config::CenterError;
use crate::plan::Heard;
use crate::status::{Answering, cluster_status};

/// Most nodes the center tracks heartbeats of; beyond this, heartbeats of unknown nodes are
/// refused (bounds the leader's memory against a misconfigured fleet).
const TRACKED_NODES_MAX: usize = 4096;

impl<E: Env> Center<E> {
    /// Serves center requests and everything a storage node serves on the node's `Net`.
    pub async fn serve(self: &Arc<Self>) -> Result<(), CenterError> {
        self.node
            .env()
            .net()
            .serve(CenterHandler::new(self.clone()))
            .await
            .map_err(NodeError::from)?;
        Ok(())
    }

    fn on_heartbeat_recorded(&self, beat: &Heartbeat) -> bool {
        let now = self.node.env().clock().now();
        let mut soft = self.soft.lock().expect("soft lock");
        if !soft.heard.contains_key(&beat.node) && soft.heard.len() >= TRACKED_NODES_MAX {
            return false;
        }
        let groups = beat
            .groups
            .iter()
            .map(|status: &GroupStatus| (status.group, status.clone()))
            .collect();
        let previous = soft.heard.insert(
            beat.node,
            HeardAt {
                at: now,
                heard: Heard {
                    address: beat.address.clone(),
                    groups,
                    hot: beat.hot.clone(),
                },
            },
        );
        previous.is_none_or(|p| p.heard.address != beat.address)
    }

    async fn on_heartbeat(&self, beat: Heartbeat) -> CenterResponse<HeartbeatAck> {
        if !self.is_leader() {
            return CenterResponse::NotLeader {
                leader_hint: self.node.leader_of(CENTER_GROUP),
            };
        }
        let new_address = self.on_heartbeat_recorded(&beat);
        if new_address && !beat.address.is_empty() {
            let hook = self.address_hook.read().expect("hook lock").clone();
            if let Some(hook) = hook {
                hook(beat.node, &beat.address);
            }
        }
        let table = self.routing_to_serve().await;
        CenterResponse::Ok(HeartbeatAck {
            epoch: table.as_ref().map_or(0, |t| t.epoch()),
            routing: table
                .filter(|t| t.epoch() > beat.known_epoch)
                .map(|t| (*t).clone()),
            addresses: self.cached_addresses(),
            heartbeat_ms: self.config.heartbeat_ms,
        })
    }

    async fn on_get_routing(&self, known_epoch: u64) -> CenterResponse<RoutingAnswer> {
        match self.routing_to_serve().await {
            Some(table) => CenterResponse::Ok(RoutingAnswer {
                epoch: table.epoch(),
                table: (table.epoch() > known_epoch).then(|| (*table).clone()),
                addresses: self.cached_addresses(),
                center_leader: self.node.leader_of(CENTER_GROUP),
            }),
            None => CenterResponse::Unavailable {
                reason: format!("center replica {} has no routing table yet", self.node.id()),
            },
        }
    }

    /// The cluster's status from the latest control round's view (leader only: the view is
    /// the leader's soft state).
    fn on_get_status(&self) -> CenterResponse<ClusterStatus> {
        if !self.is_leader() {
            return CenterResponse::NotLeader {
                leader_hint: self.node.leader_of(CENTER_GROUP),
            };
        }
        let (round, term) = {
            let soft = self.soft.lock().expect("soft lock");
            (soft.last_round.clone(), soft.term)
        };
        let (Some(round), Some(center_term)) = (round, term) else {
            return CenterResponse::Unavailable {
                reason: format!(
                    "center replica {} leads but has not finished a control round yet",
                    self.node.id()
                ),
            };
        };
        let age = self.node.env().clock().now().saturating_sub(round.at);
        CenterResponse::Ok(cluster_status(
            &round.view,
            Answering {
                center_leader: self.node.id(),
                center_term,
                centers: &self.config.centers,
                round_age_ms: u64::try_from(age.as_millis()).unwrap_or(u64::MAX),
            },
        ))
    }
}

impl<E: Env> Center<E> {
    /// The answer of a replica that is not the leader, or of the leader's `outcome`.
    fn leader_answer<T>(&self, outcome: Result<T, CenterError>) -> CenterResponse<T> {
        match outcome {
            Ok(value) => CenterResponse::Ok(value),
            Err(CenterError::NotLeader { leader_hint }) => CenterResponse::NotLeader {
                leader_hint: leader_hint.or_else(|| self.node.leader_of(CENTER_GROUP)),
            },
            Err(error @ CenterError::Refused { .. }) => CenterResponse::Refused {
                reason: error.to_string(),
            },
            Err(error) => CenterResponse::Unavailable {
                reason: error.to_string(),
            },
        }
    }

    async fn on_move_slots(&self, request: MoveSlots) -> CenterResponse<Migration> {
        if !self.is_leader() {
            return self.leader_answer(Err(CenterError::NotLeader { leader_hint: None }));
        }
        let outcome = self.start_migration(request.ranges, request.to).await;
        self.leader_answer(outcome)
    }

    async fn on_steer_migration(&self, request: SteerMigration) -> CenterResponse<Migration> {
        if !self.is_leader() {
            return self.leader_answer(Err(CenterError::NotLeader { leader_hint: None }));
        }
        let outcome = self.steer_migration(request.id, request.steer).await;
        self.leader_answer(outcome)
    }

    async fn on_split_group(&self, request: SplitGroup) -> CenterResponse<Migration> {
        if !self.is_leader() {
            return self.leader_answer(Err(CenterError::NotLeader { leader_hint: None }));
        }
        let outcome = self.split_group(request.group).await;
        self.leader_answer(outcome)
    }

    async fn on_drain_node(&self, request: DrainNode) -> CenterResponse<NodeState> {
        if !self.is_leader() {
            return self.leader_answer(Err(CenterError::NotLeader { leader_hint: None }));
        }
        let outcome = self.drain_node(request.node).await;
        self.leader_answer(outcome)
    }

    async fn on_get_migrations(&self) -> CenterResponse<Vec<Migration>> {
        if !self.is_leader() {
            return self.leader_answer(Err(CenterError::NotLeader { leader_hint: None }));
        }
        let outcome = self.migrations().await;
        self.leader_answer(outcome)
    }
}

/// The [`Handler`] a center replica serves: center requests here, the rest as a storage node.
pub struct CenterHandler<E: Env> {
    center: Arc<Center<E>>,
}

impl<E: Env> CenterHandler<E> {
    pub fn new(center: Arc<Center<E>>) -> Self {
        CenterHandler { center }
    }
}

impl<E: Env> Clone for CenterHandler<E> {
    fn clone(&self) -> Self {
        CenterHandler {
            center: self.center.clone(),
        }
    }
}

impl<E: Env> Handler for CenterHandler<E> {
    async fn handle(&self, from: NodeId, request: Bytes) -> Bytes {
        match decode_request(&request) {
            Ok(Request::Center(CenterRequest::Heartbeat(beat))) if beat.node != from => {
                // A heartbeat registers an address and a membership for its node id: only
                // that node may send it.
                self.center
                    .node
                    .refused()
                    .heartbeats
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(
                    from,
                    node = beat.node,
                    "refused a heartbeat sent for another node"
                );
                respond::<Heartbeat>(&CenterResponse::Unavailable {
                    reason: format!("node {from} sent a heartbeat for node {}", beat.node),
                })
            }
            Ok(Request::Center(CenterRequest::Heartbeat(beat))) => {
                respond::<Heartbeat>(&self.center.on_heartbeat(beat).await)
            }
            Ok(Request::Center(CenterRequest::GetRouting(GetRouting { known_epoch }))) => {
                respond::<GetRouting>(&self.center.on_get_routing(known_epoch).await)
            }
            Ok(Request::Center(CenterRequest::MoveSlots(request))) => {
                respond::<MoveSlots>(&self.center.on_move_slots(request).await)
            }
            Ok(Request::Center(CenterRequest::SteerMigration(request))) => {
                respond::<SteerMigration>(&self.center.on_steer_migration(request).await)
            }
            Ok(Request::Center(CenterRequest::SplitGroup(request))) => {
                respond::<SplitGroup>(&self.center.on_split_group(request).await)
            }
            Ok(Request::Center(CenterRequest::DrainNode(request))) => {
                respond::<DrainNode>(&self.center.on_drain_node(request).await)
            }
            Ok(Request::Center(CenterRequest::GetMigrations(GetMigrations))) => {
                respond::<GetMigrations>(&self.center.on_get_migrations().await)
            }
            Ok(Request::Center(CenterRequest::GetStatus(GetStatus))) => {
                respond::<GetStatus>(&self.center.on_get_status())
            }
            Ok(request) => self.center.node.handle_request(from, request).await,
            Err(error) => undecodable(&error),
        }
    }
}
