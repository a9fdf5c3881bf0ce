//! The storage node's heartbeats to the center: liveness, its address, what it knows of each
//! hosted group; the answers bring routing tables and other nodes' addresses.

use std::sync::{Arc, Weak};
use std::time::Duration;

use larder_core::NodeId;
use larder_core::env::{Clock, Env};
use larder_protocol::{CenterResponse, Encoded, Heartbeat, call};

use crate::node::StorageNode;

/// Heartbeat rounds wait at least this long for a center's answer, however short the interval.
const HEARTBEAT_CALL_MS_MIN: u64 = 100;

impl<E: Env> StorageNode<E> {
    /// Starts the heartbeat task. It holds a weak reference: dropping the node ends it.
    pub(crate) fn spawn_heartbeat(self: &Arc<Self>) {
        tokio::spawn(heartbeat_loop(
            Arc::downgrade(self),
            self.heartbeat_now.clone(),
        ));
    }
}

/// Sends a heartbeat to the center every [`NodeConfig::center_heartbeat_ms`] until the node is
/// shut down or dropped. Each round tries the center it believes leads, follows one hint per
/// center, and tries each center at most once, so a round is bounded by the number of centers.
async fn heartbeat_loop<E: Env>(node: Weak<StorageNode<E>>, early: Arc<tokio::sync::Notify>) {
    let (clock, net, centers, interval) = match node.upgrade() {
        Some(node) => (
            node.env.clock().clone(),
            node.env.net().clone(),
            node.config.centers.clone(),
            Duration::from_millis(node.config.center_heartbeat_ms.max(1)),
        ),
        None => return,
    };
    let mut interval = interval;
    let mut call_timeout = interval.max(Duration::from_millis(HEARTBEAT_CALL_MS_MIN));
    let mut target: Option<NodeId> = None;
    let mut next = 0usize;
    loop {
        let beat = {
            let Some(node) = node.upgrade() else { return };
            if node.is_stopped() {
                return;
            }
            node.retire_broken().await;
            Heartbeat {
                node: node.id(),
                address: node.config.address.clone(),
                known_epoch: node.routing().map_or(0, |t| t.epoch()),
                groups: node.group_statuses(),
                hot: node.hot_report(),
            }
        };
        let request = Encoded::new(beat);
        for _ in 0..centers.len() {
            let to = target.unwrap_or_else(|| {
                next = next.wrapping_add(1);
                centers[next % centers.len()]
            });
            match call(&net, to, &request, call_timeout).await {
                Ok(CenterResponse::Ok(ack)) => {
                    target = Some(to);
                    if let Some(node) = node.upgrade() {
                        // Addresses first: the nodes a newer table names are reachable by then.
                        node.addresses.learn(&ack.addresses);
                        if let Some(table) = ack.routing {
                            node.offer_routing(table);
                        }
                    }
                    // The center's interval wins (see `HeartbeatAck::heartbeat_ms`).
                    let centers_interval = Duration::from_millis(ack.heartbeat_ms);
                    if ack.heartbeat_ms > 0 && centers_interval != interval {
                        tracing::warn!(
                            configured_ms = interval.as_millis() as u64,
                            center_ms = ack.heartbeat_ms,
                            "the center's heartbeat interval differs from this node's: following the center"
                        );
                        interval = centers_interval;
                        call_timeout = interval.max(Duration::from_millis(HEARTBEAT_CALL_MS_MIN));
                    }
                    break;
                }
                Ok(CenterResponse::NotLeader { leader_hint }) => {
                    target = leader_hint.filter(|hint| *hint != to && centers.contains(hint));
                }
                _ => target = None,
            }
        }
        tokio::select! {
            () = clock.sleep(interval) => {}
            () = early.notified() => {}
        }
    }
}
