//! The simulated clients of a run: the workload driver of `larder_workloads::driver` over the
//! client SDK (one group, or the cluster) or RESP through a proxy, on simulated time, every
//! operation recorded into one shared [`History`] and traced.

// The simulated clients are the harness, not the system under test: their timeouts and think
// times run on turmoil's tokio time, which is simulated, so the ban on tokio::time is lifted.
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_client::{Client, ClientConfig, ClientError};
use larder_client::{ClusterClient, SharedRouting};
use larder_core::bugs::Bugs;

use larder_core::NodeId;
use larder_core::kv::{Command, Reply};
use larder_core::resp::{self, Frame};
use larder_workloads::driver::{Completed, Driver, Executor, Request, Response, Timer};
use larder_workloads::{Function, History, Outcome, Value};

use crate::clock::SimClock;
use crate::net::SimNet;
use crate::trace::{Trace, sim_now};

pub use larder_workloads::driver::{WorkloadConfig, counter_key, list_key, register_key};

/// The one slot group of the issue-2 cluster.
pub const GROUP: u64 = 1;

/// The port simulated proxies listen on.
pub const PROXY_PORT: u16 = 6379;

/// The history every client of a run records into.
pub type SharedHistory = Arc<Mutex<History>>;

/// Node id of simulated client `index` (storage nodes are 1..=n).
pub fn client_id(index: u64) -> NodeId {
    100 + index
}

/// The SDK settings of workload clients and proxies.
pub(crate) fn client_config(bugs: &Bugs) -> ClientConfig {
    ClientConfig {
        bugs: bugs.clone(),
        request_timeout: Duration::from_millis(1500),
        attempts_max: 6,
        backoff: Duration::from_millis(50),
        ..ClientConfig::default()
    }
}

/// The SDK client of the single-group setup.
pub fn group_client(
    net: SimNet,
    replicas: Vec<NodeId>,
    bugs: &Bugs,
) -> Sdk<Client<SimNet, SimClock>> {
    Sdk(Client::new(
        net,
        SimClock::new(),
        GROUP,
        replicas,
        client_config(bugs),
    ))
}

/// A cluster SDK client (routes by slot, splits multi-key commands).
pub fn cluster_client(
    net: SimNet,
    routing: SharedRouting,
    bugs: &Bugs,
) -> Sdk<ClusterClient<SimNet, SimClock>> {
    Sdk(ClusterClient::new(
        net,
        SimClock::new(),
        routing,
        client_config(bugs),
    ))
}

/// A client SDK as a driver [`Executor`]: the command parsed from its arguments, the SDK's
/// errors kept in meaning (`Unavailable` had no effect, `Indeterminate` may have).
pub struct Sdk<C>(pub C);

fn response_of(result: Result<Reply, ClientError>) -> Response {
    match result {
        Ok(reply) => Response::Reply(Frame::from(&reply)),
        Err(ClientError::Unavailable { reason }) => Response::Failed(reason),
        Err(ClientError::Indeterminate { reason }) => Response::Indeterminate(reason),
    }
}

fn command_of(request: &Request) -> Command {
    let parse = |args: &[bytes::Bytes]| {
        Command::parse(args).expect("the driver sends well-formed commands")
    };
    if request.transaction.is_empty() {
        // `SSCAN key 0 COUNT n` (the driver sends no other cursor) is the step an SDK user
        // builds: the proxy keeps the cursors, so the parser knows no `SSCAN`.
        if let [name, key, _cursor, _count, count] = request.args.as_slice()
            && name.as_ref() == b"SSCAN"
        {
            return Command::ElementScan {
                key: key.clone(),
                kind: larder_core::kv::elements::Kind::Set,
                from: bytes::Bytes::new(),
                pattern: bytes::Bytes::from_static(b"*"),
                count: std::str::from_utf8(count)
                    .ok()
                    .and_then(|count| count.parse().ok())
                    .expect("the driver sends a numeric count"),
            };
        }
        return parse(&request.args);
    }
    // What the proxy builds from MULTI … EXEC without WATCH.
    Command::Transaction {
        commands: request.transaction.iter().map(|args| parse(args)).collect(),
        watched: Vec::new(),
    }
}

impl Executor for Sdk<Client<SimNet, SimClock>> {
    async fn execute(&mut self, request: &Request) -> Response {
        response_of(self.0.execute(command_of(request)).await)
    }
}

impl Executor for Sdk<ClusterClient<SimNet, SimClock>> {
    async fn execute(&mut self, request: &Request) -> Response {
        response_of(self.0.execute(command_of(request)).await)
    }
}

/// A Redis client of one proxy over simulated TCP: one connection, reopened after a failure
/// (and, if asked, every few requests), one request at a time.
pub struct RespClient {
    proxy: String,
    stream: Option<turmoil::net::TcpStream>,
    buffer: Vec<u8>,
    /// Requests after which the connection is closed and a new one opened (0: never).
    reconnect_every: u64,
    /// Requests sent on the current connection.
    sent: u64,
}

impl RespClient {
    pub fn new(proxy: NodeId) -> Self {
        RespClient {
            proxy: crate::net::host_name(proxy),
            stream: None,
            buffer: Vec::new(),
            reconnect_every: 0,
            sent: 0,
        }
    }

    /// Closes the connection after every `requests` requests (0: only after a failure), as a
    /// client that connects per request does.
    pub fn reconnecting_every(mut self, requests: u64) -> Self {
        self.reconnect_every = requests;
        self
    }

    async fn round_trip(&mut self, request: &[u8]) -> std::io::Result<Frame> {
        if self.stream.is_none() {
            self.stream =
                Some(turmoil::net::TcpStream::connect((self.proxy.as_str(), PROXY_PORT)).await?);
            self.buffer.clear();
        }
        let stream = self.stream.as_mut().expect("connected above");
        larder_proxy::round_trip(stream, &mut self.buffer, request).await
    }
}

impl Executor for RespClient {
    async fn execute(&mut self, request: &Request) -> Response {
        if self.reconnect_every > 0 && self.sent >= self.reconnect_every {
            // Between requests, so never inside a transaction.
            self.stream = None;
        }
        if self.stream.is_none() {
            self.sent = 0;
        }
        self.sent += 1;
        let commands = request.resp_commands();
        let last = commands.len() - 1;
        for (step, command) in commands.iter().enumerate() {
            let mut bytes = Vec::new();
            resp::encode_request(command, &mut bytes);
            // Before a transaction's EXEC nothing has run: a lost connection discards it.
            let lost = |reason: String| {
                if step < last {
                    Response::Failed(reason)
                } else {
                    request.lost(reason)
                }
            };
            // Longer than the proxy's own retries, so a timeout here means the proxy is cut off.
            let frame = match tokio::time::timeout(Duration::from_secs(10), self.round_trip(&bytes))
                .await
            {
                Ok(Ok(frame)) => frame,
                Ok(Err(error)) => {
                    self.stream = None;
                    return lost(format!("connection to {}: {error}", self.proxy));
                }
                Err(_) => {
                    self.stream = None;
                    return lost(format!("no reply from {} in 10 s", self.proxy));
                }
            };
            if step == last {
                return Response::from_frame(frame);
            }
            if let Some(response) = request.resp_step(step, frame) {
                // A half-queued transaction must not meet the next request's commands.
                self.stream = None;
                return response;
            }
        }
        unreachable!("resp_commands is never empty")
    }
}

/// A request waiting for a [`SharedResp`] connection: its commands' bytes, how many replies
/// it expects, and where they go.
type Queued = (
    Vec<u8>,
    usize,
    tokio::sync::oneshot::Sender<std::io::Result<Vec<Frame>>>,
);

/// One RESP connection to a proxy shared by several processes of the history, as a
/// multiplexing client library shares one (redis-rs's `MultiplexedConnection`, Lettuce): the
/// requests of every process waiting when the connection is free go out in one write, a
/// pipeline, and the replies come back in order. So the proxy runs pipelines of several
/// processes' commands under faults, with every reply checked by its process's model.
#[derive(Clone)]
pub struct SharedResp {
    queue: tokio::sync::mpsc::UnboundedSender<Queued>,
}

impl SharedResp {
    /// Starts the connection's task on the current host.
    pub fn start(proxy: NodeId) -> SharedResp {
        let (queue, waiting) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(shared_connection(crate::net::host_name(proxy), waiting));
        SharedResp { queue }
    }
}

/// Sends each round of waiting requests as one pipeline and hands out the replies. A failure
/// or 10 s without the round's replies closes the connection (the next round reconnects) and
/// fails every request of the round still unanswered.
async fn shared_connection(
    proxy: String,
    mut waiting: tokio::sync::mpsc::UnboundedReceiver<Queued>,
) {
    let mut stream: Option<turmoil::net::TcpStream> = None;
    let mut buffer = Vec::new();
    let mut round = Vec::new();
    while waiting.recv_many(&mut round, usize::MAX).await > 0 {
        let mut pending: std::collections::VecDeque<Queued> = round.drain(..).collect();
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            if stream.is_none() {
                stream =
                    Some(turmoil::net::TcpStream::connect((proxy.as_str(), PROXY_PORT)).await?);
                buffer.clear();
            }
            let connection = stream.as_mut().expect("connected above");
            let bytes: Vec<u8> = pending
                .iter()
                .flat_map(|(bytes, _, _)| bytes.iter().copied())
                .collect();
            tokio::io::AsyncWriteExt::write_all(connection, &bytes).await?;
            while let Some((_, expected, _)) = pending.front() {
                let mut frames = Vec::with_capacity(*expected);
                for _ in 0..*expected {
                    frames.push(larder_proxy::round_trip(connection, &mut buffer, &[]).await?);
                }
                let (_, _, reply) = pending.pop_front().expect("front above");
                let _ = reply.send(Ok(frames));
            }
            Ok::<(), std::io::Error>(())
        })
        .await;
        let failure = match result {
            Ok(Ok(())) => continue,
            Ok(Err(error)) => format!("connection to {proxy}: {error}"),
            Err(_) => format!("no reply from {proxy} in 10 s"),
        };
        stream = None;
        for (_, _, reply) in pending.drain(..) {
            let _ = reply.send(Err(std::io::Error::other(failure.clone())));
        }
    }
}

/// A process of the history whose requests travel over a [`SharedResp`] connection.
pub struct PipelinedClient {
    connection: SharedResp,
}

impl PipelinedClient {
    pub fn new(connection: SharedResp) -> Self {
        PipelinedClient { connection }
    }
}

impl Executor for PipelinedClient {
    async fn execute(&mut self, request: &Request) -> Response {
        let commands = request.resp_commands();
        let mut bytes = Vec::new();
        for command in &commands {
            resp::encode_request(command, &mut bytes);
        }
        let (done, reply) = tokio::sync::oneshot::channel();
        if self
            .connection
            .queue
            .send((bytes, commands.len(), done))
            .is_err()
        {
            return Response::Failed("the shared connection's task stopped".into());
        }
        let frames = match reply.await {
            Ok(Ok(frames)) => frames,
            Ok(Err(error)) => return request.lost(error.to_string()),
            Err(_) => return request.lost("the shared connection's task stopped".into()),
        };
        let last = frames.len() - 1;
        for (step, frame) in frames[..last].iter().enumerate() {
            if request.resp_step(step, frame.clone()).is_some() {
                // A transaction went out whole, EXEC included: what ran is unknown.
                return request.lost(format!("transaction step {step} answered {frame:?}"));
            }
        }
        Response::from_frame(frames[last].clone())
    }
}

/// The history's process id of the `k`-th extra process (k ≥ 1) sharing client `id`'s
/// connection ([`SharedResp`]); the first process is `id` itself.
pub fn pipelined_process_id(id: NodeId, k: u64) -> NodeId {
    10_000 + id * 16 + k
}

/// Simulated time, at the millisecond resolution the simulator's histories have always had.
struct SimTimer;

impl Timer for SimTimer {
    fn now_ns(&self) -> u64 {
        sim_now().as_millis() as u64 * 1_000_000
    }

    async fn sleep_ms(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// How the trace and the HTML timeline name an operation: its command (`Set`, `Get`, `Incr`,
/// `Append`), the value written, appended or read (`ok` reads only), and the increment.
pub fn op_fields(
    f: Function,
    value: &Value,
    output: &Value,
    outcome: Outcome,
) -> (&'static str, Option<String>, i64) {
    let text = |value: &Value| match value {
        Value::Null => None,
        Value::Str(text) => Some(text.clone()),
        other => Some(other.to_string()),
    };
    match f {
        Function::Write => ("Set", text(value), 0),
        Function::Read if outcome == Outcome::Ok => ("Get", text(output), 0),
        Function::Read => ("Get", None, 0),
        Function::Add => ("Incr", None, value.as_int().unwrap_or(0)),
        Function::Append => ("Append", text(value), 0),
        Function::Cas => ("Cas", text(value), 0),
        Function::SetTtl => ("SetTtl", text(value), 0),
        Function::MWrite => ("MSet", text(value), 0),
        // The rest answer something of their own: shown once it came.
        f if outcome == Outcome::Ok => (op_name(f), text(output), 0),
        f => (op_name(f), None, 0),
    }
}

/// The trace's name of an operation that answers something of its own.
fn op_name(f: Function) -> &'static str {
    match f {
        Function::Expire => "Expire",
        Function::Persist => "Persist",
        Function::Ttl => "Ttl",
        Function::MRead => "MGet",
        Function::MDel => "MDel",
        Function::Push => "Push",
        Function::Pop => "Pop",
        Function::LRange => "LRange",
        Function::SAdd => "SAdd",
        Function::SRem => "SRem",
        Function::SMembers => "SMembers",
        Function::ZIncrBy => "ZIncrBy",
        Function::ZScore => "ZScore",
        Function::Txn => "Txn",
        _ => "Op",
    }
}

fn trace_op(trace: &Trace, actor: &str, op: &Completed) {
    let outcome = match op.kind {
        larder_workloads::OpKind::Ok => Outcome::Ok,
        larder_workloads::OpKind::Fail => Outcome::Fail,
        _ => Outcome::Info,
    };
    let (kind, value, delta) = op_fields(op.f, &op.value, &op.output, outcome);
    crate::trace_event!(
        trace,
        sim_now(),
        actor,
        "op {kind} {} {value:?} {delta} -> {:?}",
        op.key,
        op.kind
    );
}

/// Runs one client until simulated time `until`, recording every operation into `history`.
pub async fn run_client(
    id: NodeId,
    executor: impl Executor,
    seed: u64,
    until: Duration,
    config: WorkloadConfig,
    history: SharedHistory,
    trace: Trace,
) {
    let actor = format!("n{id}");
    // Bounded by simulated time: every operation sleeps or waits on the network.
    Driver::new(id, config, seed, executor, SimTimer)
        .run(
            &history,
            || sim_now() < until,
            |op| trace_op(&trace, &actor, op),
        )
        .await;
}
