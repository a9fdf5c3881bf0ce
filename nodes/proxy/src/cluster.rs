//! `CLUSTER ...`: the proxy answers as a Redis Cluster of one master that holds every slot,
//! so cluster-aware clients (redis-py's `RedisCluster`, go-redis's `ClusterClient`, Jedis,
//! Lettuce, `redis-cli -c`, `redis-benchmark --cluster`) connect to it and send everything
//! there. The slots really live in Larder's slot groups, which move between storage nodes
//! behind the proxy; a client never needs to follow them (no `MOVED`, no `ASK`).
//!
//! The proxy announces itself at the address the client reached it on (the connection's local
//! end), so a proxy behind several addresses is announced at whichever one each client used.
//! Its node id is derived from that address: stable across restarts and connections, and
//! different for two proxies.

use std::net::SocketAddr;

use bytes::Bytes;
use larder_core::resp::Frame;
use larder_core::slots::{SLOTS, slot_of};

use crate::{bulk, error, text};

/// What the answers need to know of the proxy and the connection.
pub struct Announced {
    /// Where the client reached the proxy; `None` when the listener did not say.
    pub at: Option<SocketAddr>,
    /// The routing table's epoch (`cluster_current_epoch`).
    pub epoch: u64,
    /// Whether the proxy has a routing table (`cluster_state:ok`).
    pub routed: bool,
}

impl Announced {
    /// Redis's 40 hex digits, from the announced address.
    pub fn node_id(&self) -> String {
        let seed = match self.at {
            Some(at) => format!("larder-proxy {at}"),
            None => "larder-proxy".to_string(),
        };
        let hash = xxhash_rust::xxh3::xxh3_128(seed.as_bytes());
        format!("{hash:032x}{:08x}", (hash >> 96) as u32 ^ hash as u32)
    }

    fn ip(&self) -> String {
        self.at.map(|at| at.ip().to_string()).unwrap_or_default()
    }

    fn port(&self) -> i64 {
        self.at.map_or(0, |at| i64::from(at.port()))
    }
}

/// `CLUSTER subcommand ...`: the subcommands and arities of the command table
/// ([`crate::commands::check_container`]).
pub fn answer(args: &[Bytes], announced: &Announced) -> Frame {
    if let Some(refusal) = crate::commands::check_container(args) {
        return refusal;
    }
    let sub = &args[1];
    let name = String::from_utf8_lossy(sub).to_ascii_lowercase();
    let last_slot = i64::from(SLOTS - 1);
    match name.as_str() {
        "keyslot" => Frame::Integer(i64::from(slot_of(&args[2]))),
        "myid" => bulk(announced.node_id()),
        "links" => Frame::Array(Some(Vec::new())),
        "info" => {
            let (state, assigned) = if announced.routed {
                ("ok", SLOTS)
            } else {
                ("fail", 0)
            };
            let epoch = announced.epoch;
            text(format!(
                "cluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\n\
                 cluster_slots_ok:{assigned}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\n\
                 cluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:{epoch}\r\n\
                 cluster_my_epoch:{epoch}\r\ncluster_stats_messages_sent:0\r\n\
                 cluster_stats_messages_received:0\r\n\
                 total_cluster_links_buffer_limit_exceeded:0\r\n"
            ))
        }
        "slots" => {
            if !announced.routed {
                return Frame::Array(Some(Vec::new()));
            }
            Frame::Array(Some(vec![Frame::Array(Some(vec![
                Frame::Integer(0),
                Frame::Integer(last_slot),
                Frame::Array(Some(vec![
                    bulk(announced.ip()),
                    Frame::Integer(announced.port()),
                    bulk(announced.node_id()),
                    Frame::Map(Vec::new()),
                ])),
            ]))]))
        }
        "shards" => {
            let slots = if announced.routed {
                vec![Frame::Integer(0), Frame::Integer(last_slot)]
            } else {
                Vec::new()
            };
            let node = Frame::Map(vec![
                (bulk("id"), bulk(announced.node_id())),
                (bulk("port"), Frame::Integer(announced.port())),
                (bulk("ip"), bulk(announced.ip())),
                (bulk("endpoint"), bulk(announced.ip())),
                (bulk("role"), bulk("master")),
                (bulk("replication-offset"), Frame::Integer(0)),
                (bulk("health"), bulk("online")),
            ]);
            Frame::Array(Some(vec![Frame::Map(vec![
                (bulk("slots"), Frame::Array(Some(slots))),
                (bulk("nodes"), Frame::Array(Some(vec![node]))),
            ])]))
        }
        "nodes" => {
            let slots = if announced.routed {
                format!(" 0-{last_slot}")
            } else {
                String::new()
            };
            // No cluster bus: its port is given as 0.
            text(format!(
                "{} {}:{}@0 myself,master - 0 0 {} connected{slots}\n",
                announced.node_id(),
                announced.ip(),
                announced.port(),
                announced.epoch,
            ))
        }
        _ => error(format!(
            "ERR unknown subcommand '{}'. Try CLUSTER HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split_args as args;

    fn announced() -> Announced {
        Announced {
            at: Some("10.1.2.3:6380".parse().unwrap()),
            epoch: 7,
            routed: true,
        }
    }

    #[test]
    fn the_proxy_is_one_master_holding_every_slot_at_the_address_it_was_reached_on() {
        let a = announced();
        let id = a.node_id();
        assert_eq!(id.len(), 40);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(answer(&args("CLUSTER MYID"), &a), bulk(&id));
        let other = Announced {
            at: Some("10.1.2.4:6380".parse().unwrap()),
            ..announced()
        };
        assert_ne!(other.node_id(), id, "two proxies, two ids");
        assert_eq!(
            answer(&args("CLUSTER SLOTS"), &a),
            Frame::Array(Some(vec![Frame::Array(Some(vec![
                Frame::Integer(0),
                Frame::Integer(16383),
                Frame::Array(Some(vec![
                    bulk("10.1.2.3"),
                    Frame::Integer(6380),
                    bulk(&id),
                    Frame::Map(Vec::new()),
                ])),
            ]))]))
        );
        let Frame::Verbatim { text: nodes, .. } = answer(&args("cluster nodes"), &a) else {
            panic!("text");
        };
        assert_eq!(
            std::str::from_utf8(&nodes).unwrap(),
            format!("{id} 10.1.2.3:6380@0 myself,master - 0 0 7 connected 0-16383\n")
        );
        let Frame::Verbatim { text: info, .. } = answer(&args("CLUSTER INFO"), &a) else {
            panic!("text");
        };
        let info = std::str::from_utf8(&info).unwrap();
        assert!(info.starts_with("cluster_state:ok\r\ncluster_slots_assigned:16384\r\n"));
        assert!(
            info.contains("cluster_known_nodes:1\r\n")
                && info.contains("cluster_current_epoch:7\r\n")
        );
        let Frame::Array(Some(shards)) = answer(&args("CLUSTER SHARDS"), &a) else {
            panic!("an array");
        };
        assert_eq!(shards.len(), 1);
        assert_eq!(
            answer(&args("CLUSTER KEYSLOT foo"), &a),
            Frame::Integer(12182)
        );
        assert_eq!(
            answer(&args("CLUSTER KEYSLOT {user1}.a"), &a),
            Frame::Integer(slot_of(b"user1").into())
        );
        assert_eq!(
            answer(&args("CLUSTER LINKS"), &a),
            Frame::Array(Some(Vec::new()))
        );
    }

    #[test]
    fn without_a_routing_table_the_cluster_is_down_and_holds_no_slots() {
        let a = Announced {
            routed: false,
            ..announced()
        };
        assert_eq!(
            answer(&args("CLUSTER SLOTS"), &a),
            Frame::Array(Some(Vec::new()))
        );
        let Frame::Verbatim { text: info, .. } = answer(&args("CLUSTER INFO"), &a) else {
            panic!("text");
        };
        assert!(info.starts_with(b"cluster_state:fail\r\ncluster_slots_assigned:0\r\n"));
    }

    #[test]
    fn unknown_subcommands_and_wrong_arities_get_redis_errors() {
        let a = announced();
        let cases = [
            (
                "CLUSTER",
                "ERR wrong number of arguments for 'cluster' command",
            ),
            (
                "CLUSTER KEYSLOT",
                "ERR wrong number of arguments for 'cluster|keyslot' command",
            ),
            (
                "CLUSTER SLOTS x",
                "ERR wrong number of arguments for 'cluster|slots' command",
            ),
            (
                "CLUSTER FOO",
                "ERR unknown subcommand 'FOO'. Try CLUSTER HELP.",
            ),
            (
                "CLUSTER COUNTKEYSINSLOT 1",
                "ERR unknown subcommand 'COUNTKEYSINSLOT'. Try CLUSTER HELP.",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(answer(&args(line), &a), Frame::Error(want.into()), "{line}");
        }
    }
}
