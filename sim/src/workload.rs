//! The simulated clients of a run: a mixed register/counter workload through the client SDK,
//! with every operation recorded as invoked and completed (`ok`, `fail` = certainly had no
//! effect, `info` = may or may not have taken effect).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{Rng, SeededRng};
use larder_core::kv::{Command, Reply, SetCondition};
use larder_core::resp::{self, Frame};
use larder_nodes::client::{Client, ClientConfig, ClientError};
use larder_nodes::cluster::{ClusterClient, SharedRouting};
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
    /// `APPEND` of a unique element to a list key (`log:N`); reads of list keys are `Get`s.
    Append,
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
    /// List-append keys: every element appended is unique, so a read shows exactly which
    /// acknowledged appends survived and in what order (checked as linearizable appends).
    pub list_keys: u64,
    /// Pause between a client's operations, drawn from `[0, think_ms_max]`.
    pub think_ms_max: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            register_keys: 4,
            counter_keys: 2,
            list_keys: 2,
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

pub fn list_key(index: u64) -> String {
    format!("log:{index}")
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

/// The SDK settings of workload clients and proxies.
pub(crate) fn client_config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(1500),
        attempts_max: 6,
        backoff: Duration::from_millis(50),
        ..ClientConfig::default()
    }
}

/// How a workload client reaches the store: the one-group SDK, the cluster SDK, or RESP
/// through a proxy. Errors keep the SDK's meaning: `Unavailable` had no effect,
/// `Indeterminate` may have.
pub trait Executor {
    fn execute(&mut self, command: Command) -> impl Future<Output = Result<Reply, ClientError>>;
}

impl Executor for Client<SimNet, SimClock> {
    async fn execute(&mut self, command: Command) -> Result<Reply, ClientError> {
        Client::execute(self, command).await
    }
}

impl Executor for ClusterClient<SimNet, SimClock> {
    async fn execute(&mut self, command: Command) -> Result<Reply, ClientError> {
        ClusterClient::execute(self, command).await
    }
}

/// The SDK client of the single-group setup.
pub fn group_client(net: SimNet, replicas: Vec<NodeId>, seed: u64) -> Client<SimNet, SimClock> {
    Client::new(net, SimClock::new(), GROUP, replicas, client_config(), seed)
}

/// A cluster SDK client (routes by slot, splits multi-key commands).
pub fn cluster_client(
    net: SimNet,
    routing: SharedRouting,
    seed: u64,
) -> ClusterClient<SimNet, SimClock> {
    ClusterClient::new(net, SimClock::new(), routing, client_config(), seed)
}

/// A Redis client of one proxy over simulated TCP: one connection, reopened after a failure,
/// one request at a time.
pub struct RespClient {
    proxy: String,
    stream: Option<turmoil::net::TcpStream>,
    buffer: Vec<u8>,
}

/// The port simulated proxies listen on.
pub const PROXY_PORT: u16 = 6379;

impl RespClient {
    pub fn new(proxy: NodeId) -> Self {
        RespClient {
            proxy: crate::net::host_name(proxy),
            stream: None,
            buffer: Vec::new(),
        }
    }

    async fn round_trip(&mut self, request: &[u8]) -> std::io::Result<Frame> {
        if self.stream.is_none() {
            self.stream =
                Some(turmoil::net::TcpStream::connect((self.proxy.as_str(), PROXY_PORT)).await?);
            self.buffer.clear();
        }
        let stream = self.stream.as_mut().expect("connected above");
        larder_nodes::proxy::round_trip(stream, &mut self.buffer, request).await
    }
}

fn reply_of(frame: Frame) -> Result<Reply, ClientError> {
    Ok(match frame {
        Frame::Simple(text) if text == "OK" => Reply::Ok,
        Frame::Simple(text) => Reply::Status(text),
        Frame::Error(text) if text.starts_with("TRYAGAIN") => {
            return Err(ClientError::Unavailable { reason: text });
        }
        Frame::Error(text) if text.starts_with("ERR indeterminate") => {
            return Err(ClientError::Indeterminate { reason: text });
        }
        Frame::Error(text) => Reply::Error(text),
        Frame::Integer(n) => Reply::Int(n),
        Frame::Bulk(Some(bytes)) => Reply::Bulk(bytes),
        Frame::Bulk(None) | Frame::Null | Frame::Array(None) => Reply::Nil,
        Frame::Array(Some(items)) => Reply::Array(
            items
                .into_iter()
                .map(|item| reply_of(item).unwrap_or_else(|e| Reply::Error(e.to_string())))
                .collect(),
        ),
        other => Reply::Error(format!("unexpected frame {other:?}")),
    })
}

/// The Redis arguments of the workload's commands.
fn args_of(command: &Command) -> Vec<Bytes> {
    match command {
        Command::Set { key, value, .. } => {
            vec![Bytes::from_static(b"SET"), key.clone(), value.clone()]
        }
        Command::Get { key } => vec![Bytes::from_static(b"GET"), key.clone()],
        Command::IncrBy { key, delta } => vec![
            Bytes::from_static(b"INCRBY"),
            key.clone(),
            Bytes::from(delta.to_string()),
        ],
        Command::Append { key, value } => {
            vec![Bytes::from_static(b"APPEND"), key.clone(), value.clone()]
        }
        other => vec![Bytes::from(other.name().to_string())],
    }
}

impl Executor for RespClient {
    async fn execute(&mut self, command: Command) -> Result<Reply, ClientError> {
        let mut request = Vec::new();
        resp::encode_request(&args_of(&command), &mut request);
        // Longer than the proxy's own retries, so a timeout here means the proxy is cut off.
        match tokio::time::timeout(Duration::from_secs(10), self.round_trip(&request)).await {
            Ok(Ok(frame)) => reply_of(frame),
            Ok(Err(error)) => {
                self.stream = None;
                Err(lost(
                    &command,
                    format!("connection to {}: {error}", self.proxy),
                ))
            }
            Err(_) => {
                self.stream = None;
                Err(lost(
                    &command,
                    format!("no reply from {} in 10 s", self.proxy),
                ))
            }
        }
    }
}

/// A request whose reply never came: a write may have been applied, a read had no effect.
fn lost(command: &Command, reason: String) -> ClientError {
    if command.is_write() {
        ClientError::Indeterminate { reason }
    } else {
        ClientError::Unavailable { reason }
    }
}

/// Runs one client until simulated time `until`, recording every operation.
pub async fn run_client(
    id: NodeId,
    mut client: impl Executor,
    seed: u64,
    until: Duration,
    config: WorkloadConfig,
    history: History,
    trace: Trace,
) {
    let mut rng = SeededRng::new(seed);
    let actor = format!("n{id}");
    let mut sequence = 0u64;
    // Bounded by simulated time: every iteration sleeps or waits on the network.
    while sim_now() < until {
        sequence += 1;
        let roll = rng.below(12);
        let (kind, key, command, value, delta) = if roll >= 10 && config.list_keys > 0 {
            let key = list_key(rng.below(config.list_keys));
            if roll == 10 {
                let element = format!("{id}-{sequence},");
                let command = Command::Append {
                    key: Bytes::from(key.clone()),
                    value: Bytes::from(element.clone()),
                };
                (OpKind::Append, key, command, Some(element), 0)
            } else {
                let command = Command::Get {
                    key: Bytes::from(key.clone()),
                };
                (OpKind::Get, key, command, None, 0)
            }
        } else if roll < 4 {
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
        } else if roll < 10 {
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
        } else {
            let key = register_key(rng.below(config.register_keys.max(1)));
            let command = Command::Get {
                key: Bytes::from(key.clone()),
            };
            (OpKind::Get, key, command, None, 0)
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
            Ok(Reply::Int(_)) if kind == OpKind::Incr || kind == OpKind::Append => {}
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

/// The run's operations as a Jepsen-style history (`larder_workloads::History`): an invocation
/// and a completion event per operation, in real-time order, for the linearizability checker
/// and `history.jsonl`.
pub fn to_history(records: &[OpRecord]) -> larder_workloads::History {
    use larder_workloads::{Function, Op, OpKind as Event, Value};
    let mut by_process: BTreeMap<NodeId, Vec<&OpRecord>> = BTreeMap::new();
    for record in records {
        by_process.entry(record.client).or_default().push(record);
    }
    let mut events = Vec::with_capacity(records.len() * 2);
    for (process, ops) in by_process {
        // A process's operations are sequential; keep them in invocation order.
        let mut ops = ops;
        ops.sort_by_key(|op| (op.invoke_ms, op.complete_ms));
        for op in ops {
            let (f, input, output) = match op.kind {
                OpKind::Set => {
                    let value = op.value.clone().map_or(Value::Null, Value::from);
                    (Function::Write, value.clone(), value)
                }
                OpKind::Get => (
                    Function::Read,
                    Value::Null,
                    op.value.clone().map_or(Value::Null, Value::from),
                ),
                OpKind::Incr => (Function::Add, Value::Int(op.delta), Value::Int(op.delta)),
                OpKind::Append => {
                    let element = op.value.clone().map_or(Value::Null, Value::from);
                    (Function::Append, element.clone(), element)
                }
            };
            let kind = match op.status {
                OpStatus::Ok => Event::Ok,
                OpStatus::Fail => Event::Fail,
                OpStatus::Info => Event::Info,
            };
            let event = |time_ms: u64, kind, value, error| Op {
                index: 0,
                time_ns: time_ms * 1_000_000,
                process,
                kind,
                f,
                key: op.key.clone(),
                value,
                error,
            };
            events.push(event(op.invoke_ms, Event::Invoke, input, None));
            events.push(event(op.complete_ms, kind, output, op.error.clone()));
        }
    }
    // Stable: at equal times a process's invocation stays before its completion.
    events.sort_by_key(|op| op.time_ns);
    let mut history = larder_workloads::History::new();
    for event in events {
        history.push(event);
    }
    history
}
