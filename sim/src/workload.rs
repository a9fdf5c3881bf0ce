//! The simulated clients of a run: a mixed register/counter workload through the client SDK,
//! with every operation recorded as invoked and completed (`ok`, `fail` = certainly had no
//! effect, `info` = may or may not have taken effect).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{Rng, SeededRng};
use larder_core::kv::{Command, Reply, SetCondition};
use larder_nodes::client::{Client, ClientConfig, ClientError};
use serde::Serialize;

use crate::clock::SimClock;
use crate::net::SimNet;
use crate::trace::{Trace, sim_now};

/// The one slot group of the issue-2 cluster.
pub const GROUP: u64 = 1;

/// Node id of simulated client `index` (storage nodes are 1..=n).
pub fn client_id(index: u64) -> NodeId {
    100 + index
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Set,
    Get,
    Incr,
}

/// How an operation ended, in Jepsen's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStatus {
    Ok,
    /// Certainly had no effect.
    Fail,
    /// May or may not have taken effect.
    Info,
}

/// One client operation, from invocation to completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpRecord {
    pub client: NodeId,
    pub kind: OpKind,
    pub key: String,
    /// The value written (`set`) or read (`get`, `ok` only).
    pub value: Option<String>,
    /// The increment (`incr`) or the counter value it returned.
    pub delta: i64,
    pub invoke_ms: u64,
    pub complete_ms: u64,
    pub status: OpStatus,
    pub error: Option<String>,
}

/// Every operation of a run, in completion order.
#[derive(Debug, Clone, Default)]
pub struct History(Arc<Mutex<Vec<OpRecord>>>);

impl History {
    pub fn push(&self, record: OpRecord) {
        self.0.lock().expect("history lock").push(record);
    }
    pub fn records(&self) -> Vec<OpRecord> {
        self.0.lock().expect("history lock").clone()
    }
}

/// Shape of the generated workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadConfig {
    pub register_keys: u64,
    pub counter_keys: u64,
    /// Pause between a client's operations, drawn from `[0, think_ms_max]`.
    pub think_ms_max: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            register_keys: 4,
            counter_keys: 2,
            think_ms_max: 20,
        }
    }
}

pub fn register_key(index: u64) -> String {
    format!("reg:{index}")
}

pub fn counter_key(index: u64) -> String {
    format!("ctr:{index}")
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(1500),
        attempts_max: 6,
        backoff: Duration::from_millis(50),
    }
}

/// Runs one client until simulated time `until`, recording every operation.
#[allow(clippy::too_many_arguments)]
pub async fn run_client(
    id: NodeId,
    net: SimNet,
    clock: SimClock,
    replicas: Vec<NodeId>,
    seed: u64,
    until: Duration,
    config: WorkloadConfig,
    history: History,
    trace: Trace,
) {
    let mut rng = SeededRng::new(seed);
    let mut client = Client::new(net, clock, GROUP, replicas, client_config(), seed);
    let actor = format!("n{id}");
    let mut sequence = 0u64;
    // Bounded by simulated time: every iteration sleeps or waits on the network.
    while sim_now() < until {
        sequence += 1;
        let roll = rng.below(10);
        let (kind, key, command, value, delta) = if roll < 4 {
            let key = register_key(rng.below(config.register_keys.max(1)));
            let value = format!("{id}-{sequence}");
            let command = Command::Set {
                key: Bytes::from(key.clone()),
                value: Bytes::from(value.clone()),
                condition: SetCondition::Always,
                expiry: None,
                keep_ttl: false,
            };
            (OpKind::Set, key, command, Some(value), 0)
        } else if roll < 7 {
            let key = register_key(rng.below(config.register_keys.max(1)));
            (
                OpKind::Get,
                key.clone(),
                Command::Get {
                    key: Bytes::from(key),
                },
                None,
                0,
            )
        } else {
            let key = counter_key(rng.below(config.counter_keys.max(1)));
            let delta = 1 + rng.below(9) as i64;
            (
                OpKind::Incr,
                key.clone(),
                Command::IncrBy {
                    key: Bytes::from(key),
                    delta,
                },
                None,
                delta,
            )
        };
        let invoke_ms = millis(sim_now());
        let result = client.execute(command).await;
        let complete_ms = millis(sim_now());
        let mut record = OpRecord {
            client: id,
            kind,
            key,
            value,
            delta,
            invoke_ms,
            complete_ms,
            status: OpStatus::Ok,
            error: None,
        };
        match result {
            Ok(Reply::Bulk(bytes)) if kind == OpKind::Get => {
                record.value = Some(String::from_utf8_lossy(&bytes).into_owned());
            }
            Ok(Reply::Nil) if kind == OpKind::Get => record.value = None,
            Ok(Reply::Ok) if kind == OpKind::Set => {}
            Ok(Reply::Int(_)) if kind == OpKind::Incr => {}
            Ok(other) => {
                // A reply of the wrong shape is a bug in the store, not a network event.
                record.status = OpStatus::Info;
                record.error = Some(format!("unexpected reply {other:?}"));
            }
            Err(ClientError::Unavailable { reason }) => {
                record.status = OpStatus::Fail;
                record.error = Some(reason);
            }
            Err(ClientError::Indeterminate { reason }) => {
                record.status = OpStatus::Info;
                record.error = Some(reason);
            }
        }
        crate::trace_event!(
            trace,
            sim_now(),
            &actor,
            "op {:?} {} {:?} {} -> {:?}",
            record.kind,
            record.key,
            record.value,
            record.delta,
            record.status
        );
        history.push(record);
        let think = rng.below(config.think_ms_max + 1);
        if think > 0 {
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
    }
}
