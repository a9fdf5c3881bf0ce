//! The proxy: a stateless RESP2/RESP3 server in front of the cluster, so `redis-cli`,
//! `redis-benchmark` and Redis client libraries work unmodified.
//!
//! Each connection gets its own [`ClusterClient`] (whose per-group clients open sessions with
//! their groups, so the groups can deduplicate its writes) and shares the proxy's routing
//! table and leader hints.
//! Requests are read in batches: every complete request in the buffer is executed in order and
//! the replies are written together, which is what makes pipelining cheap.
//!
//! # Bounds
//!
//! Everything a client can make the proxy hold is bounded (see [`ProxyConfig`]):
//! connections (`max_clients`), an idle connection's lifetime (`idle_timeout`), request bytes
//! (`limits`, tighter before `AUTH`: [`Limits::unauthenticated`]), reply bytes (replies are
//! written out once [`OUTPUT_FLUSH_BYTES`] are pending, before the next command runs, and one
//! client may hold at most `output_buffer_max`), and a client that stops reading its replies
//! (`output_stall_timeout`). Because a connection reads only when every complete request it
//! holds has been answered and written, a client that writes without reading is pushed back
//! by TCP rather than buffered. [`Proxy::stats`] counts what the bounds did.
//!
//! The client-facing side is a byte stream ([`Listener`]), not the message-level `Net`: in
//! production `larder_real::TokioListener`, in the simulator a turmoil one.
//!
//! # TLS
//!
//! As Redis 6's `tls-port`, a proxy may serve a second listener whose clients speak TLS
//! ([`Proxy::serve_tls`] with a [`ProxyTls`]; the plain listener keeps working). A TLS
//! connection takes its `max_clients` slot when it is accepted, handshakes within
//! `tls_handshake_timeout`, and is then served by the same code as a plain one, so every
//! bound above applies to it unchanged.

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use larder_core::GroupId;
use larder_core::bugs::{Bug, Bugs};
use larder_core::costly::{COSTLY_REPLY_BYTES, COSTLY_SUBJECTS_MAX, CostlySubjects};
use larder_core::env::{Clock, Endpoints, FaultPoints, Listener, MESSAGE_BYTES_MAX, Net, timeout};
use larder_core::kv::elements::Kind;
use larder_core::kv::{Command, Reply, Scope};
use larder_core::resp::{self, Frame, Limits, Protocol, RequestParser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use larder_client::{
    ClientConfig, ClientError, ClusterClient, SessionPool, SharedRouting, single_group,
};

mod blocking;
mod clients;
mod cluster;
pub mod coalesce;
mod command_table;
pub mod commands;
mod monitor;
pub mod scan;
pub use blocking::HANDOVERS_PER_WRITE_MAX;
pub use monitor::MONITOR_BACKLOG;
pub mod hot;
pub mod info;
pub mod metrics;
mod shared_read;
mod tls;
mod transaction;
pub use hot::{HOTKEY_ERROR, HotKeyConfig};
pub use tls::{PemFile, ProxyTls, TlsAuthClients, TlsError, TlsSettings};
pub use transaction::QUEUED_MAX;

/// The Redis version the proxy reports: clients pick features by it, and Larder implements the
/// parts of the 7.x protocol they use (RESP3 via `HELLO`).
pub const REDIS_VERSION: &str = "7.0.15";

/// Pending reply bytes at which a connection writes them out before running its next command,
/// so a long pipeline of large replies is not held whole in memory (a pipeline of small replies
/// still goes out in few writes).
pub const OUTPUT_FLUSH_BYTES: usize = 64 * 1024;

/// Most pipelined commands answered together ([`Proxy::run_pipeline`]). It bounds what one
/// connection holds besides its buffers: the replies of one run, which arrive together (64
/// large values at most), before they are written out `OUTPUT_FLUSH_BYTES` at a time. 64
/// already takes a pipeline of small commands to a few round trips per thousand.
pub const PIPELINE_RUN_MAX: usize = 64;

/// Most request bytes in one pipeline run: a group's share travels as one message (bounded by
/// `MESSAGE_BYTES_MAX`) and one log entry, so large values run alone, as they would unpipelined.
pub const PIPELINE_RUN_BYTES_MAX: usize = 1 << 20;

/// Buffer capacity a connection keeps between requests; a larger buffer (left by a large
/// request or reply) is given back, so idle connections cost little memory.
const READ_CAPACITY_KEPT: usize = 1 << 20;
const OUTPUT_CAPACITY_KEPT: usize = 4 * OUTPUT_FLUSH_BYTES;

/// What a connection answers when `max_clients` are already connected (Redis's words).
const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// The first wait after a failed `accept`, doubled on each failure in a row up to
/// [`ACCEPT_BACKOFF_MAX`]: out of file descriptors, retrying at once would spin.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning per this interval about failing accepts (with a count of the rest).
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// How long a TLS connection that ended cleanly may take to send its `close_notify` (which
/// tells the client the stream ended rather than was cut). A courtesy of a few dozen bytes: a
/// client that does not take them this quickly is closed without it.
const TLS_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A Redis client's side of one request: sends the already-encoded `request` and reads one
/// reply frame, keeping bytes of later frames in `buffer`. Used by the simulator's RESP clients
/// and `larder jepsen`.
pub async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
    request: &[u8],
) -> std::io::Result<Frame> {
    stream.write_all(request).await?;
    loop {
        match resp::parse_frame(buffer) {
            Ok(Some((frame, used))) => {
                buffer.drain(..used);
                return Ok(frame);
            }
            Ok(None) => {}
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Hot keys and hot slots `INFO hotkeys` lists, at most.
const HOT_KEYS_SHOWN: usize = 10;

/// Proxy settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where `INFO` reads the process's CPU and memory from: the real server gives a reader of
    /// its process; none in the simulator, whose runs must not read
    /// real process state.
    pub process_figures: Option<fn() -> info::ProcessFigures>,
    /// `requirepass`: when set, a connection must `AUTH` (or `HELLO … AUTH`) first.
    pub password: Option<String>,
    /// Protocol limits; a request beyond them is a protocol error (the connection is closed
    /// after the error reply, as Redis does).
    pub limits: Limits,
    pub client: ClientConfig,
    /// Bytes buffered from one connection before the proxy stops reading and processes.
    pub read_buffer_max: usize,
    /// Redis's `maxclients`: connections served at once. One more is answered
    /// `-ERR max number of clients reached` and closed, as Redis does. Default 10,000, Redis's
    /// default; each connection costs a file descriptor, its socket buffers and a
    /// [`ClusterClient`], so the limit should stay well below the process's `ulimit -n`.
    pub max_clients: usize,
    /// Redis's `timeout`: a connection that sends nothing for this long while the proxy
    /// waits for its next request is closed. `None` (Redis's default `timeout 0`): never.
    pub idle_timeout: Option<Duration>,
    /// A client that does not read its replies: a write of pending replies that makes no
    /// progress for this long closes the connection. Default 60 s, the seconds of Redis's
    /// soft `client-output-buffer-limit` for pub/sub clients: long enough for any client that
    /// is reading at all (one byte of progress resets it), short enough that a stuck client
    /// does not hold its buffers and [`ClusterClient`] for long.
    pub output_stall_timeout: Duration,
    /// Redis's hard `client-output-buffer-limit`: reply bytes the proxy may hold for one
    /// client (pending ones plus the reply just produced). A reply that would go past it
    /// closes the connection without being sent, as Redis does. Replies are written out past
    /// [`OUTPUT_FLUSH_BYTES`], so in practice this bounds the largest single reply. Default
    /// [`MESSAGE_BYTES_MAX`], the largest reply a node can send (Redis's normal clients have
    /// no hard limit; two 512 MiB values in one `MGET` pass, while one client cannot hold
    /// gigabytes).
    pub output_buffer_max: usize,
    /// How long a failed `AUTH` waits before its `WRONGPASS` reply, through the proxy's clock,
    /// so guessing is slow: a connection tries at most one password per this interval (a
    /// pipeline of guesses waits for each). Default 100 ms.
    pub auth_failure_delay: Duration,
    /// Failed `AUTH`s after which a connection is closed (after the last reply); 0: never.
    /// With `auth_failure_delay` and `max_clients` it bounds the guessing rate of a client.
    /// Default 10.
    pub auth_failures_max: u32,
    /// A TLS connection holds its `max_clients` slot from its accept, so its handshake must end
    /// within this or the connection is closed: a client that opens a socket and never
    /// handshakes would otherwise hold a slot for ever. Default 10 s: a handshake is two round
    /// trips, and this leaves room for slow links and loaded hosts.
    pub tls_handshake_timeout: Duration,
    /// The plain and TLS ports, as `INFO` reports them (`tcp_port`, `tls_port`); `None` leaves
    /// the line out. Only reported: the listeners are whatever [`Proxy::serve`] and
    /// [`Proxy::serve_tls`] are given.
    pub tcp_port: Option<u16>,
    pub tls_port: Option<u16>,
    /// How often the proxy asks the center (observers first) for a newer routing table, when
    /// its routing has sources. Failing requests fetch one sooner (see
    /// [`ClientConfig::routing_refresh_gap`]).
    pub routing_refresh: Duration,
    /// Hot-key detection and the per-key write limit ([`hot`]).
    pub hot_keys: HotKeyConfig,
    /// Bugs planted on purpose ([`larder_core::bugs`]; none without the `planted-bugs` feature).
    pub bugs: Bugs,
    /// Fault points the simulator hooks (the blocking pops' handovers); none in production,
    /// where passing one is a no-op.
    pub points: FaultPoints,
    /// Most blocked clients one write hands over to (or waits for) before its reply
    /// ([`HANDOVERS_PER_WRITE_MAX`] by default); the rest are served by their own polls.
    pub handovers_per_write_max: usize,
    /// Batches of single commands of different connections run at once ([`coalesce`]);
    /// commands arriving while every runner is busy wait and go together. Default
    /// [`coalesce::RUNNERS`]; 0: off, each command goes alone on its connection's client.
    pub coalesce_runners: usize,
    /// A read whose key's last read answered at least this much (encoded bytes,
    /// [`Reply::encoded_len`]) runs alone on its connection's client, never in a coalesced
    /// batch ([`costly`](larder_core::costly)). Default [`COSTLY_REPLY_BYTES`], the size
    /// from which the nodes' lanes run a read in the slow lane.
    pub costly_read_bytes: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            process_figures: None,
            password: None,
            limits: Limits::default(),
            client: ClientConfig::default(),
            read_buffer_max: 1 << 20,
            max_clients: 10_000,
            idle_timeout: None,
            output_stall_timeout: Duration::from_secs(60),
            output_buffer_max: MESSAGE_BYTES_MAX,
            auth_failure_delay: Duration::from_millis(100),
            auth_failures_max: 10,
            tls_handshake_timeout: Duration::from_secs(10),
            tcp_port: None,
            tls_port: None,
            routing_refresh: Duration::from_secs(1),
            hot_keys: HotKeyConfig::default(),
            bugs: Bugs::default(),
            points: FaultPoints::none(),
            handovers_per_write_max: HANDOVERS_PER_WRITE_MAX,
            coalesce_runners: coalesce::RUNNERS,
            costly_read_bytes: COSTLY_REPLY_BYTES,
        }
    }
}

/// A RESP proxy over a cluster reached through `net`. A proxy keeps no data, so it needs a
/// network and a clock but no disk.
pub struct Proxy<N: Net, C: Clock> {
    net: N,
    clock: C,
    config: ProxyConfig,
    routing: SharedRouting,
    counters: Counters,
    /// Whether the routing refresh loop runs: started by the first of [`Proxy::serve`] and
    /// [`Proxy::serve_tls`], once for both listeners.
    refreshing: AtomicBool,
    /// The encoding thresholds `CONFIG SET` took ([`ENCODING_PARAMETERS`]).
    encodings: std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>,
    /// When the proxy started, by its clock (`INFO`'s uptime).
    started: Duration,
    /// `INFO commandstats`, per command name (known commands only, so the map stays bounded).
    command_counts: std::sync::Mutex<std::collections::BTreeMap<String, info::CommandCounts>>,
    /// Clients blocked in `BLPOP` and the like, queued per key so the earliest is served first.
    waiters: blocking::Waiters,
    /// Where each `SCAN` iteration stands ([`scan`]).
    scan_cursors: scan::ScanCursors,
    /// Commands, errors and latency per command family ([`Proxy::metrics_registry`]).
    metrics: metrics::ProxyMetrics,
    /// Hot keys and the per-key write limit.
    hot: hot::HotKeyGuard,
    /// Reads of hot keys being fetched, shared with equal reads arriving meanwhile.
    shared_reads: shared_read::SharedReads,
    /// Group sessions of closed connections, for the next connections to carry on.
    sessions: SessionPool,
    /// Single reads and single writes of all connections, run in batches ([`coalesce`]).
    coalesced_reads: coalesce::Coalescer<N, C>,
    coalesced_writes: coalesce::Coalescer<N, C>,
    /// Keys whose last read answered a large reply: their reads stay out of the coalesced
    /// batches. A batch answers when its slowest command does, and a node's slow lane paces a
    /// large read (`larder_storage::lanes`): in a batch it held up every read of its group
    /// queued behind the group's one runner (`larder bench --slow-lane`: GET p99 17 ms in the
    /// list's group against 2.4 ms in the others).
    costly_reads: CostlySubjects<Bytes>,
    /// The connections being served (`CLIENT LIST`, `CLIENT KILL`).
    clients: clients::Clients,
    /// The `MONITOR` connections' feed.
    monitors: monitor::Monitors,
}

/// Redis 7.0 settings that change no command's answer in Larder, with their defaults: the
/// data-structure encoding thresholds (they choose how Redis lays a small collection out in
/// memory; Larder has one layout) and `save`, the RDB snapshot schedule (Larder has no RDB:
/// every acknowledged write is already fsynced on a quorum). They are taken, remembered for
/// this proxy and answered back, because clients and test suites set and restore them.
pub const ENCODING_PARAMETERS: &[(&str, &str)] = &[
    ("hash-max-listpack-entries", "128"),
    ("hash-max-listpack-value", "64"),
    ("list-compress-depth", "0"),
    ("list-max-listpack-size", "-2"),
    ("save", ""),
    ("set-max-intset-entries", "512"),
    ("stream-node-max-bytes", "4096"),
    ("stream-node-max-entries", "100"),
    ("zset-max-listpack-entries", "128"),
    ("zset-max-listpack-value", "64"),
];

/// Redis 7.0's older names for the listpack thresholds: the same settings.
const ENCODING_ALIASES: &[(&str, &str)] = &[
    ("hash-max-ziplist-entries", "hash-max-listpack-entries"),
    ("hash-max-ziplist-value", "hash-max-listpack-value"),
    ("list-max-ziplist-size", "list-max-listpack-size"),
    ("zset-max-ziplist-entries", "zset-max-listpack-entries"),
    ("zset-max-ziplist-value", "zset-max-listpack-value"),
];

/// The canonical name of encoding parameter `name` (any case), if it is one.
fn encoding_parameter(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    ENCODING_ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map(|(_, canonical)| *canonical)
        .or_else(|| {
            ENCODING_PARAMETERS
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(known, _)| *known)
        })
}

/// What the proxy's bounds did, for tests and operators: cheap relaxed atomics, read together
/// by [`Proxy::stats`] (each figure is exact; they are not one atomic snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections being served now.
    pub connections: u64,
    /// Connections refused because `max_clients` were connected.
    pub rejected_connections: u64,
    /// Request and reply bytes the proxy holds for all connections now (buffer contents, not
    /// their capacity; replies being built by the cluster client are not counted).
    pub buffered_bytes: u64,
    /// The most `buffered_bytes` has been since the proxy started.
    pub buffered_bytes_peak: u64,
    /// `AUTH` (or `HELLO … AUTH`) attempts with a wrong password.
    pub auth_failures: u64,
    /// Connections closed by `idle_timeout`.
    pub idle_closed: u64,
    /// Connections closed because their client did not read (`output_stall_timeout`).
    pub slow_reader_closed: u64,
    /// Connections closed by `output_buffer_max`.
    pub output_limit_closed: u64,
    /// Failed `accept`s (the proxy backs off and keeps accepting).
    pub accept_errors: u64,
    /// TLS handshakes that failed (not TLS, no or a bad client certificate, no shared
    /// protocol version or cipher suite).
    pub tls_handshake_failures: u64,
    /// TLS connections closed because their handshake took past `tls_handshake_timeout`.
    pub tls_handshake_timeouts: u64,
    /// Pipeline runs of more than one command ([`PIPELINE_RUN_MAX`]).
    pub pipeline_runs: u64,
    /// The most commands one pipeline run has held (at most [`PIPELINE_RUN_MAX`]).
    pub pipeline_run_commands_peak: u64,
    /// The most request bytes a pipeline run of several commands has held (at most
    /// [`PIPELINE_RUN_BYTES_MAX`]; one command larger than that runs alone).
    pub pipeline_run_bytes_peak: u64,
    /// Writes refused by the per-key write limit ([`HotKeyConfig::writes_per_sec_max`]).
    pub hot_key_refused_writes: u64,
    /// Reads of hot keys answered by an equal read's fetch ([`shared_read`]).
    pub shared_reads: u64,
    /// Group sessions connections carried on from closed ones instead of opening their own
    /// (`larder_client::SessionPool`): registrations saved.
    pub sessions_resumed: u64,
    /// Batches of single commands of several connections run together ([`coalesce`]; a
    /// batch of one is not counted), and the commands they held.
    pub coalesced_batches: u64,
    pub coalesced_commands: u64,
    /// Single reads of a costly key run alone rather than coalesced ([`ProxyConfig::costly_read_bytes`]).
    pub costly_reads_alone: u64,
    /// Writes whose handovers stopped at [`ProxyConfig::handovers_per_write_max`] with clients
    /// still blocked on a written key (served by their own polls instead).
    pub handovers_cut_short: u64,
    /// `MONITOR` connections closed for falling [`MONITOR_BACKLOG`] lines behind.
    pub monitors_dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    /// The last connection id handed out (`CLIENT ID`, `HELLO`'s `id`).
    last_id: AtomicU64,
    connections: AtomicU64,
    rejected_connections: AtomicU64,
    buffered_bytes: AtomicU64,
    buffered_bytes_peak: AtomicU64,
    auth_failures: AtomicU64,
    idle_closed: AtomicU64,
    slow_reader_closed: AtomicU64,
    output_limit_closed: AtomicU64,
    accept_errors: AtomicU64,
    tls_handshake_failures: AtomicU64,
    tls_handshake_timeouts: AtomicU64,
    /// Connections served so far, and commands.
    total_connections: AtomicU64,
    total_commands: AtomicU64,
    /// Connections waiting in a blocking command now (`INFO`'s `blocked_clients`).
    blocked: AtomicU64,
    /// [`ProxyStats::pipeline_runs`] and [`ProxyStats::pipeline_run_commands_peak`].
    pipeline_runs: AtomicU64,
    pipeline_run_commands_peak: AtomicU64,
    /// [`ProxyStats::pipeline_run_bytes_peak`].
    pipeline_run_bytes_peak: AtomicU64,
    /// [`ProxyStats::handovers_cut_short`].
    handovers_cut_short: AtomicU64,
    /// [`ProxyStats::costly_reads_alone`].
    costly_reads_alone: AtomicU64,
    /// [`ProxyStats::monitors_dropped`].
    monitors_dropped: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One of the `max_clients` connection slots, given back on drop, so every way out of a
/// connection (a reply, an error, a dropped task) frees it.
struct Slot<'a>(&'a Counters);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's share of [`ProxyStats::buffered_bytes`]: set to what it holds after every
/// change, taken back on drop.
struct Held<'a> {
    counters: &'a Counters,
    bytes: u64,
}

impl<'a> Held<'a> {
    fn new(counters: &'a Counters) -> Self {
        Held { counters, bytes: 0 }
    }

    fn set(&mut self, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let total = &self.counters.buffered_bytes;
        if bytes >= self.bytes {
            let now = total.fetch_add(bytes - self.bytes, Ordering::Relaxed) + (bytes - self.bytes);
            self.counters
                .buffered_bytes_peak
                .fetch_max(now, Ordering::Relaxed);
        } else {
            total.fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// Why a connection ended early; every one is final for the connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The client read none of its replies for `output_stall_timeout`.
    #[error("the client read no reply for {0:?}")]
    Stalled(Duration),
    /// A reply would have taken the client's held reply bytes past `output_buffer_max`.
    #[error("a reply of {reply} bytes would hold {held} bytes for the client, above {max}")]
    OutputLimit {
        reply: usize,
        held: usize,
        max: usize,
    },
    /// The TLS handshake failed (the client does not speak TLS, presented no certificate or
    /// one the CA did not sign, or shares no protocol version with the proxy).
    #[error("TLS handshake: {0}")]
    TlsHandshake(std::io::Error),
    /// The TLS handshake did not end within `tls_handshake_timeout`.
    #[error("no TLS handshake within {0:?}")]
    TlsHandshakeTimeout(Duration),
}

/// A command that may run in a pipeline run ([`Proxy::pipelinable`]).
struct Pipelined {
    /// Its name, lower-cased once for the replies and counts.
    name: String,
    command: Command,
    /// The slot group of every key it names, when it was parsed.
    group: GroupId,
}

/// Per-connection protocol state.
struct Session<N: Net, C: Clock> {
    id: u64,
    protocol: Protocol,
    authenticated: bool,
    /// Failed `AUTH`s so far (see [`ProxyConfig::auth_failures_max`]).
    auth_failures: u32,
    client: ClusterClient<N, C>,
    /// Close after the pending replies are written (`QUIT`, too many failed `AUTH`s).
    quit: bool,
    /// What `CLIENT LIST` shows of this connection (its name included), and its kill switch.
    state: Arc<clients::ClientState>,
    /// Where the client reached the proxy (`CLUSTER SLOTS` announces it there).
    local: Option<std::net::SocketAddr>,
    /// The client's end (`MONITOR`'s lines show it).
    peer: Option<std::net::SocketAddr>,
    /// `MONITOR` asked for: the connection turns into a monitor after its reply.
    monitoring: bool,
    /// An `EXEC` runs: the commands it answers one by one are shown with it, not alone.
    executing: bool,
    /// `CLIENT REPLY`.
    replies: ReplyMode,
    /// The command being answered asked for no reply (`CLIENT REPLY OFF` or `SKIP`).
    silent: bool,
    /// An open `MULTI`.
    transaction: Option<transaction::Transaction>,
    /// `WATCH`ed keys and the versions they had then.
    watched: Vec<(Bytes, u64)>,
    /// Seeds handed out so far ([`Session::next_seed`]).
    seeds: u64,
}

/// `CLIENT REPLY`: whether the client wants replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    /// None for the next command, then on again.
    SkipNext,
}

impl<N: Net, C: Clock> Session<N, C> {
    /// Whether the reply to the command just answered is sent (`CLIENT REPLY`).
    fn takes_reply(&mut self) -> bool {
        if std::mem::take(&mut self.silent) {
            return false;
        }
        match self.replies {
            ReplyMode::On => true,
            ReplyMode::Off => false,
            ReplyMode::SkipNext => {
                self.replies = ReplyMode::On;
                false
            }
        }
    }

    /// A fresh seed for a command that picks at random ([`Command::reseed`]): a hash of the
    /// connection, a counter and the time, so it differs per request yet replays bit for bit
    /// in the simulator (whose clock and connection ids are seeded).
    fn next_seed(&mut self, now: Duration) -> u64 {
        self.seeds += 1;
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&self.id.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.seeds.to_le_bytes());
        bytes[16..32].copy_from_slice(&now.as_nanos().to_le_bytes());
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }
}

/// `CLIENT ...`: what a connection may say about itself.
fn client_subcommand<N: Net, C: Clock>(
    session: &mut Session<N, C>,
    registry: &clients::Clients,
    args: &[Bytes],
    now: Duration,
) -> Frame {
    match (args.get(1).map(|a| lower(a)).as_deref(), args.len()) {
        (Some("setname"), 3) => {
            let name = &args[2];
            // Redis 7.0's `clientSetName`: printable, no spaces; empty clears the name.
            if name.iter().any(|c| !(b'!'..=b'~').contains(c)) {
                return error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            session
                .state
                .set_name((!name.is_empty()).then(|| name.clone()));
            Frame::Simple("OK".into())
        }
        (Some("getname"), 2) => Frame::Bulk(session.state.name()),
        (Some("id"), 2) => Frame::Integer(session.id as i64),
        (Some("info"), 2) => clients::info(&session.state, now),
        (Some("list"), _) => clients::list(registry, &args[1..], now),
        (Some("kill"), n) if n >= 3 => clients::kill(registry, &args[1..], session.id),
        (Some("reply"), 3) => match lower(&args[2]).as_str() {
            "on" => {
                session.replies = ReplyMode::On;
                Frame::Simple("OK".into())
            }
            "off" => {
                session.replies = ReplyMode::Off;
                session.silent = true;
                Frame::Simple("OK".into())
            }
            "skip" => {
                if session.replies == ReplyMode::On {
                    session.replies = ReplyMode::SkipNext;
                }
                session.silent = true;
                Frame::Simple("OK".into())
            }
            _ => error("ERR syntax error"),
        },
        // Redis 7.2's library name and version, which client libraries send at connect time
        // (the proxy does not show them).
        (Some("setinfo"), 4) => {
            let value = &args[3];
            match lower(&args[2]).as_str() {
                "lib-name" | "lib-ver" if value.iter().any(|c| !(b'!'..=b'~').contains(c)) => {
                    error(format!(
                        "ERR {} cannot contain spaces, newlines or special characters.",
                        lower(&args[2])
                    ))
                }
                "lib-name" | "lib-ver" => Frame::Simple("OK".into()),
                _ => error(format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(&args[2])
                )),
            }
        }
        // Hints about eviction and idle times: the proxy evicts no clients and keeps no idle
        // times for LRU, so there is nothing to change.
        (Some("no-evict" | "no-touch"), 3) => match lower(&args[2]).as_str() {
            "on" | "off" => Frame::Simple("OK".into()),
            _ => error("ERR syntax error"),
        },
        _ => error("ERR unknown subcommand or wrong number of arguments for 'client' command"),
    }
}

/// `FLUSH`'s optional mode of `FUNCTION FLUSH` and `SCRIPT FLUSH`: none, `ASYNC` or `SYNC`.
fn is_flush_mode(rest: &[Bytes]) -> bool {
    match rest {
        [] => true,
        [mode] => matches!(lower(mode).as_str(), "async" | "sync"),
        _ => false,
    }
}

/// `FUNCTION ...`: Larder runs no functions, so it answers as a server with none loaded
/// (clients and test suites flush them at start).
fn function_subcommand(args: &[Bytes]) -> Frame {
    let sub = args.get(1).map(|a| lower(a));
    match (sub.as_deref(), args.len()) {
        (Some("flush"), _) if is_flush_mode(&args[2..]) => Frame::Simple("OK".into()),
        (Some("list"), _) => Frame::Array(Some(Vec::new())),
        (Some(sub), _) => error(format!(
            "ERR unknown subcommand or wrong number of arguments for 'function|{sub}' command"
        )),
        (None, _) => arity("function"),
    }
}

/// `SCRIPT ...`: no scripts are ever loaded (Lua is not run by Larder).
fn script_subcommand(args: &[Bytes]) -> Frame {
    let sub = args.get(1).map(|a| lower(a));
    match (sub.as_deref(), args.len()) {
        (Some("flush"), _) if is_flush_mode(&args[2..]) => Frame::Simple("OK".into()),
        (Some("exists"), n) if n > 2 => {
            Frame::Array(Some(args[2..].iter().map(|_| Frame::Integer(0)).collect()))
        }
        (Some(sub), _) => error(format!(
            "ERR unknown subcommand or wrong number of arguments for 'script|{sub}' command"
        )),
        (None, _) => arity("script"),
    }
}

fn error(text: impl Into<String>) -> Frame {
    Frame::Error(text.into())
}

fn bulk(text: impl AsRef<[u8]>) -> Frame {
    Frame::Bulk(Some(Bytes::copy_from_slice(text.as_ref())))
}

fn lower(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_lowercase()
}

/// Lines of text as Redis sends them (`CLIENT LIST`, `CLUSTER NODES`): a verbatim string in
/// RESP3, a bulk string in RESP2.
fn text(lines: String) -> Frame {
    Frame::Verbatim {
        format: *b"txt",
        text: Bytes::from(lines),
    }
}

/// Notes a connection's buffers after they changed: the proxy's count of bytes it holds for
/// clients, and what `CLIENT LIST` shows of this one.
fn buffered(held: &mut Held<'_>, state: &clients::ClientState, input: &BytesMut, output: &Vec<u8>) {
    held.set(input.len() + output.len());
    state.buffers(
        input.len(),
        input.capacity(),
        output.len(),
        output.capacity(),
    );
}

/// A request's arguments from a line split at spaces (the modules' tests).
#[cfg(test)]
fn split_args(line: &str) -> Vec<Bytes> {
    line.split(' ')
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

fn client_error(error: ClientError, bugs: &Bugs) -> Frame {
    match error {
        // Planted bug: an unknown outcome answered as "nothing happened, retry".
        ClientError::Indeterminate { reason }
            if bugs.is_planted(Bug::ProxyTryAgainOnIndeterminate) =>
        {
            error_frame("TRYAGAIN", &reason)
        }
        // Nothing happened: a Redis Cluster client retries TRYAGAIN by itself.
        ClientError::Unavailable { reason } => error_frame("TRYAGAIN", &reason),
        ClientError::Indeterminate { reason } => error_frame(
            "ERR",
            &format!("indeterminate: the write may or may not have been applied ({reason})"),
        ),
    }
}

fn error_frame(code: &str, reason: &str) -> Frame {
    // Error lines cannot hold CR/LF.
    let reason: String = reason
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    error(format!("{code} {reason}"))
}

impl<N: Net, C: Clock> Proxy<N, C> {
    pub fn new(net: N, clock: C, config: ProxyConfig, routing: SharedRouting) -> Arc<Self> {
        let sessions = SessionPool::default();
        let runner = || {
            let (net, clock, routing) = (net.clone(), clock.clone(), routing.clone());
            let (client, sessions) = (config.client.clone(), sessions.clone());
            move || {
                ClusterClient::new(net.clone(), clock.clone(), routing.clone(), client.clone())
                    .with_session_pool(sessions.clone())
            }
        };
        Arc::new(Proxy {
            coalesced_reads: coalesce::Coalescer::new(
                runner(),
                config.coalesce_runners,
                clock.clone(),
                config.bugs.clone(),
            ),
            coalesced_writes: coalesce::Coalescer::new(
                runner(),
                config.coalesce_runners,
                clock.clone(),
                config.bugs.clone(),
            ),
            costly_reads: CostlySubjects::new(config.costly_read_bytes, COSTLY_SUBJECTS_MAX),
            started: clock.now(),
            hot: hot::HotKeyGuard::new(config.hot_keys, clock.now()),
            shared_reads: shared_read::SharedReads::new(
                config
                    .bugs
                    .is_planted(Bug::HotReadCached)
                    .then_some(shared_read::PLANTED_CACHE_TIME),
            ),
            sessions,
            clients: clients::Clients::default(),
            monitors: monitor::Monitors::default(),
            scan_cursors: scan::ScanCursors::new(clock.wall_ms()),
            net,
            clock,
            config,
            routing,
            counters: Counters::default(),
            refreshing: AtomicBool::new(false),
            command_counts: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            waiters: blocking::Waiters::default(),
            metrics: metrics::ProxyMetrics::default(),
            encodings: std::sync::Mutex::new(
                ENCODING_PARAMETERS
                    .iter()
                    .map(|(name, value)| (*name, value.to_string()))
                    .collect(),
            ),
        })
    }

    /// What the proxy's bounds did so far.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            connections: get(&c.connections),
            rejected_connections: get(&c.rejected_connections),
            buffered_bytes: get(&c.buffered_bytes),
            buffered_bytes_peak: get(&c.buffered_bytes_peak),
            auth_failures: get(&c.auth_failures),
            idle_closed: get(&c.idle_closed),
            slow_reader_closed: get(&c.slow_reader_closed),
            output_limit_closed: get(&c.output_limit_closed),
            accept_errors: get(&c.accept_errors),
            tls_handshake_failures: get(&c.tls_handshake_failures),
            tls_handshake_timeouts: get(&c.tls_handshake_timeouts),
            pipeline_runs: get(&c.pipeline_runs),
            pipeline_run_commands_peak: get(&c.pipeline_run_commands_peak),
            pipeline_run_bytes_peak: get(&c.pipeline_run_bytes_peak),
            hot_key_refused_writes: self.hot.refused(),
            shared_reads: self.shared_reads.shared(),
            sessions_resumed: self.sessions.resumed(),
            coalesced_batches: self.coalesced_reads.counts().0 + self.coalesced_writes.counts().0,
            coalesced_commands: self.coalesced_reads.counts().1 + self.coalesced_writes.counts().1,
            costly_reads_alone: get(&c.costly_reads_alone),
            handovers_cut_short: get(&c.handovers_cut_short),
            monitors_dropped: get(&c.monitors_dropped),
        }
    }

    /// Takes a connection slot, or `None` when `max_clients` are taken.
    fn admit(&self) -> Option<Slot<'_>> {
        let max = u64::try_from(self.config.max_clients).unwrap_or(u64::MAX);
        let before = self.counters.connections.fetch_add(1, Ordering::Relaxed);
        // Taken first and given back on refusal, so two connections racing for the last slot
        // cannot both get it.
        let slot = Slot(&self.counters);
        if before < max {
            bump(&self.counters.total_connections);
        }
        (before < max).then_some(slot)
    }

    pub fn routing(&self) -> &SharedRouting {
        &self.routing
    }

    /// Accepts connections for ever. With a routing that has sources, also keeps the table
    /// fresh in the background.
    ///
    /// A failed `accept` (out of file descriptors, `EMFILE`; a connection reset before it was
    /// accepted) is counted, warned about at most once per 10 s, and retried after a backoff
    /// through the clock (5 ms doubling to 1 s, reset by the next success): one bad moment must
    /// not stop a proxy from ever accepting again. Only `InvalidInput` (`EINVAL`: the socket is
    /// not listening, which no retry mends) is returned.
    pub async fn serve<L>(self: &Arc<Self>, listener: L) -> std::io::Result<()>
    where
        L: Listener,
        L::Stream: AsyncRead + AsyncWrite,
    {
        self.accept_loop(listener, |proxy, stream, endpoints| async move {
            proxy.connection_from(stream, endpoints).await
        })
        .await
    }

    /// [`Proxy::serve`] for a listener whose clients speak TLS (Redis's `tls-port`): each
    /// connection handshakes with `tls` ([`Proxy::tls_connection`]) in its own task, so a slow
    /// handshake never holds up the accepting. May run beside [`Proxy::serve`] on the same
    /// proxy: both share its `max_clients`, counters and routing.
    pub async fn serve_tls<L>(self: &Arc<Self>, listener: L, tls: ProxyTls) -> std::io::Result<()>
    where
        L: Listener,
        L::Stream: AsyncRead + AsyncWrite,
    {
        self.accept_loop(listener, move |proxy, stream, endpoints| {
            let tls = tls.clone();
            async move { proxy.tls_connection_from(stream, &tls, endpoints).await }
        })
        .await
    }

    /// Accepts connections for ever and serves each with `serve` in its own task.
    async fn accept_loop<L, F, T>(
        self: &Arc<Self>,
        mut listener: L,
        serve: F,
    ) -> std::io::Result<()>
    where
        L: Listener,
        F: Fn(Arc<Self>, L::Stream, Option<Endpoints>) -> T,
        T: Future<Output = Result<(), ConnectionError>> + Send + 'static,
    {
        if !self.routing.sources().is_empty() && !self.refreshing.swap(true, Ordering::Relaxed) {
            tokio::spawn(refresh_loop(Arc::downgrade(self)));
        }
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut last_warning: Option<Duration> = None;
        let mut unreported = 0u64;
        loop {
            match listener.accept_from().await {
                Ok((stream, endpoints)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    let connection = serve(self.clone(), stream, endpoints);
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "client connection ended");
                        }
                    });
                }
                Err(error) if error.kind() == std::io::ErrorKind::InvalidInput => {
                    return Err(error);
                }
                Err(error) => {
                    bump(&self.counters.accept_errors);
                    let now = self.clock.now();
                    if last_warning.is_none_or(|t| now.saturating_sub(t) >= ACCEPT_WARN_EVERY) {
                        tracing::warn!(
                            %error,
                            also_failed = unreported,
                            retry_in_ms = backoff.as_millis(),
                            "accepting a client failed; retrying"
                        );
                        last_warning = Some(now);
                        unreported = 0;
                    } else {
                        unreported += 1;
                    }
                    self.clock.sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }

    /// Serves one client connection until it closes, sends `QUIT`, breaks the protocol, idles
    /// past `idle_timeout`, or breaks an output bound. Refused at once (with Redis's error)
    /// when `max_clients` are connected.
    pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> Result<(), ConnectionError> {
        self.connection_from(stream, None).await
    }

    /// [`Proxy::connection`] of a client at `endpoints` (`CLIENT LIST`, `CLUSTER SLOTS`).
    pub async fn connection_from<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        endpoints: Option<Endpoints>,
    ) -> Result<(), ConnectionError> {
        match self.admit() {
            Some(_slot) => self.serve_client(&mut stream, endpoints).await,
            None => {
                bump(&self.counters.rejected_connections);
                self.refuse(&mut stream).await;
                Ok(())
            }
        }
    }

    /// [`Proxy::connection`] for a client that speaks TLS: the handshake with `tls` first,
    /// within `tls_handshake_timeout`, then the same serving. The `max_clients` slot is taken
    /// before the handshake, as Redis counts a client from its accept, so connections still
    /// handshaking count and a flood of them cannot get past the limit; the deadline is what
    /// frees a slot held by a client that never handshakes. A refused client still gets the
    /// handshake (within the same deadline), so that it can read Redis's refusal. A connection
    /// that ends cleanly (`QUIT`, end of stream, idle timeout, a protocol error's reply) sends
    /// TLS's `close_notify`.
    pub async fn tls_connection<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        tls: &ProxyTls,
    ) -> Result<(), ConnectionError> {
        self.tls_connection_from(stream, tls, None).await
    }

    /// [`Proxy::tls_connection`] of a client at `endpoints`.
    pub async fn tls_connection_from<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        tls: &ProxyTls,
        endpoints: Option<Endpoints>,
    ) -> Result<(), ConnectionError> {
        let slot = self.admit();
        if slot.is_none() {
            bump(&self.counters.rejected_connections);
        }
        let deadline = self.config.tls_handshake_timeout;
        let mut stream = match timeout(&self.clock, deadline, tls.acceptor().accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                bump(&self.counters.tls_handshake_failures);
                return Err(ConnectionError::TlsHandshake(error));
            }
            Err(_) => {
                bump(&self.counters.tls_handshake_timeouts);
                return Err(ConnectionError::TlsHandshakeTimeout(deadline));
            }
        };
        let result = match slot {
            Some(_slot) => self.serve_client(&mut stream, endpoints).await,
            None => {
                self.refuse(&mut stream).await;
                Ok(())
            }
        };
        if result.is_ok() {
            let _ = timeout(&self.clock, TLS_CLOSE_TIMEOUT, stream.shutdown()).await;
        }
        result
    }

    /// Redis's answer to one client too many, best effort and bounded: the refused client may
    /// not read at all.
    async fn refuse<S: AsyncWrite + Unpin>(&self, stream: &mut S) {
        let _ = timeout(&self.clock, self.config.output_stall_timeout, async {
            stream.write_all(MAX_CLIENTS_REPLY).await?;
            stream.flush().await
        })
        .await;
    }

    /// Serves an admitted client (plain or after its TLS handshake) until it closes, sends
    /// `QUIT`, breaks the protocol, idles past `idle_timeout`, or breaks an output bound.
    async fn serve_client<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        endpoints: Option<Endpoints>,
    ) -> Result<(), ConnectionError> {
        let id = self.counters.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        let registered = self.clients.register(id, endpoints, self.clock.now());
        let state = registered.state.clone();
        let mut session = Session {
            id,
            protocol: Protocol::Resp2,
            authenticated: self.config.password.is_none(),
            auth_failures: 0,
            client: ClusterClient::new(
                self.net.clone(),
                self.clock.clone(),
                self.routing.clone(),
                self.config.client.clone(),
            )
            .with_session_pool(self.sessions.clone()),
            quit: false,
            state: state.clone(),
            local: endpoints.map(|e| e.local),
            peer: endpoints.map(|e| e.peer),
            monitoring: false,
            executing: false,
            replies: ReplyMode::On,
            silent: false,
            transaction: None,
            watched: Vec::new(),
            seeds: 0,
        };
        let unauthenticated = Limits::unauthenticated();
        let mut parser = RequestParser::default();
        let mut input = BytesMut::with_capacity(16 << 10);
        let mut output = Vec::with_capacity(16 << 10);
        let mut held = Held::new(&self.counters);
        loop {
            loop {
                // Before AUTH, Redis 7's small limits: an anonymous client cannot make the
                // proxy buffer a large request.
                let limits = if session.authenticated {
                    &self.config.limits
                } else {
                    &unauthenticated
                };
                match parser.parse(&input, limits) {
                    Ok(Some((args, used))) => {
                        input.advance(used);
                        // `CLIENT LIST`'s `qbuf` keeps counting the request until it is
                        // answered, as Redis's does.
                        held.set(input.len() + output.len());
                        if args.is_empty() {
                            continue;
                        }
                        if let Some(first) = self.pipelinable(&mut session, &args) {
                            // A pipeline: the requests right behind it that may join it run
                            // with it (`run_pipeline`); the first that may not is parsed again
                            // below and runs alone.
                            let mut bytes = used;
                            let mut run = vec![first];
                            while run.len() < PIPELINE_RUN_MAX {
                                let Ok(Some((next, used))) = parser.parse(&input, limits) else {
                                    break;
                                };
                                if bytes + used > PIPELINE_RUN_BYTES_MAX {
                                    break;
                                }
                                let Some(joining) = self.pipelinable(&mut session, &next) else {
                                    break;
                                };
                                input.advance(used);
                                bytes += used;
                                run.push(joining);
                            }
                            buffered(&mut held, &state, &input, &output);
                            let last = run
                                .last()
                                .and_then(|joined| commands::lookup(joined.name.as_bytes()))
                                .map(|info| info.name);
                            // Written out every `OUTPUT_FLUSH_BYTES` as for single commands,
                            // so a client that does not read its replies stalls the run here.
                            state.ran(last, self.clock.now());
                            let replies = self.run_pipeline(&mut session, run, bytes).await;
                            for reply in replies {
                                if !session.takes_reply() {
                                    continue;
                                }
                                self.push_reply(&reply, session.protocol, &mut output)?;
                                buffered(&mut held, &state, &input, &output);
                                if output.len() >= OUTPUT_FLUSH_BYTES {
                                    self.write_out(stream, &mut output, &mut held, input.len())
                                        .await?;
                                }
                            }
                            continue;
                        }
                        let blocks =
                            session.transaction.is_none() && Command::is_blocking_name(&args[0]);
                        // Shown as running from here on, as Redis does (`CLIENT INFO` shows
                        // itself).
                        state.set_command_bytes(
                            args.iter().map(Bytes::len).sum(),
                            session.transaction.as_ref().map_or(0, |t| t.queued_bytes()),
                        );
                        state.ran(
                            commands::entry_of(&args).map(|info| info.name),
                            self.clock.now(),
                        );
                        let reply = if blocks {
                            // Replies to the commands before it go out first: the client may be
                            // waiting for them, as Redis sends them before blocking.
                            if !output.is_empty() {
                                self.write_out(stream, &mut output, &mut held, input.len())
                                    .await?;
                            }
                            state.set_blocked(true);
                            let reply = self
                                .dispatch_watching_close(&mut session, args, stream, &mut input)
                                .await;
                            state.set_blocked(false);
                            match reply {
                                Some(reply) => reply,
                                // The client left while blocked (or was killed): drop the block,
                                // as Redis does.
                                None => return Ok(()),
                            }
                        } else {
                            self.dispatch(&mut session, args).await
                        };
                        state.set_multi(session.transaction.as_ref().map(|t| t.queued()));
                        state.set_resp(if session.protocol == Protocol::Resp3 {
                            3
                        } else {
                            2
                        });
                        if session.takes_reply() {
                            self.push_reply(&reply, session.protocol, &mut output)?;
                        }
                        drop(reply);
                        buffered(&mut held, &state, &input, &output);
                        if session.monitoring {
                            // Subscribed before the `+OK` goes out: the client sees every
                            // command run after it read it.
                            let watching = self.monitors.watch();
                            self.write_out(stream, &mut output, &mut held, input.len())
                                .await?;
                            return self
                                .monitor_loop(stream, &state, watching, &mut input, &mut held)
                                .await;
                        }
                        if session.quit || state.is_killed() {
                            return self.write_out(stream, &mut output, &mut held, 0).await;
                        }
                        if output.len() >= OUTPUT_FLUSH_BYTES {
                            self.write_out(stream, &mut output, &mut held, input.len())
                                .await?;
                        }
                    }
                    Ok(None) => break,
                    Err(problem) => {
                        let text = match problem.unauthenticated_text() {
                            Some(text) if !session.authenticated => text,
                            _ => problem.to_string(),
                        };
                        resp::encode_frame(
                            &error(format!("ERR {text}")),
                            session.protocol,
                            &mut output,
                        );
                        return self.write_out(stream, &mut output, &mut held, 0).await;
                    }
                }
            }
            if !output.is_empty() {
                self.write_out(stream, &mut output, &mut held, input.len())
                    .await?;
            }
            let limits = if session.authenticated {
                &self.config.limits
            } else {
                &unauthenticated
            };
            let request_max = usize::try_from(limits.request_bytes_max)
                .unwrap_or(usize::MAX)
                .saturating_add(1024);
            let read_max = if session.authenticated {
                self.config.read_buffer_max.max(request_max)
            } else {
                request_max
            };
            if input.len() >= read_max {
                // The parser enforces the limits; a buffer this full without a complete
                // request means a client is streaming garbage.
                return Ok(());
            }
            if input.is_empty() && input.capacity() > READ_CAPACITY_KEPT {
                // A large request is done: do not keep its buffer for an idle connection.
                input = BytesMut::with_capacity(16 << 10);
            }
            state.buffers(
                input.len(),
                input.capacity(),
                output.len(),
                output.capacity(),
            );
            let read = stream.read_buf(&mut input);
            let read = async {
                tokio::select! {
                    // Biased: the same order every time, so simulated runs replay.
                    biased;
                    () = state.killed() => None,
                    read = read => Some(read),
                }
            };
            let read = match self.config.idle_timeout {
                None => read.await,
                Some(idle) => match timeout(&self.clock, idle, read).await {
                    Ok(read) => read,
                    Err(_) => {
                        bump(&self.counters.idle_closed);
                        return Ok(());
                    }
                },
            };
            // `CLIENT KILL` took this connection.
            let Some(read) = read else {
                return Ok(());
            };
            if read? == 0 {
                return Ok(());
            }
            held.set(input.len());
            state.buffers(
                input.len(),
                input.capacity(),
                output.len(),
                output.capacity(),
            );
        }
    }

    /// Runs a blocking command while reading the client's next input, so a client that closes
    /// while blocked ends its block (and its polling) at once: `None` then. Input read meanwhile
    /// is kept for after the reply, up to `read_buffer_max`; past that the proxy stops reading
    /// until the command ends.
    async fn dispatch_watching_close<S: AsyncRead + Unpin>(
        &self,
        session: &mut Session<N, C>,
        args: Vec<Bytes>,
        stream: &mut S,
        input: &mut BytesMut,
    ) -> Option<Frame> {
        let session_state = session.state.clone();
        let dispatch = self.dispatch(session, args);
        tokio::pin!(dispatch);
        loop {
            let room = input.len() < self.config.read_buffer_max;
            tokio::select! {
                // Biased: the same order every time, so simulated runs replay.
                biased;
                reply = &mut dispatch => return Some(reply),
                () = session_state.killed() => return None,
                read = stream.read_buf(input), if room => match read {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                },
            }
        }
    }

    /// Serves a connection that asked for `MONITOR`: the monitors' lines, until it closes,
    /// sends `QUIT`, is killed, stops reading, or falls [`MONITOR_BACKLOG`] lines behind
    /// (counted in [`ProxyStats::monitors_dropped`]). What else it sends is read and ignored,
    /// as Redis ignores a monitor's commands.
    async fn monitor_loop<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        state: &clients::ClientState,
        mut watching: monitor::Watching,
        input: &mut BytesMut,
        held: &mut Held<'_>,
    ) -> Result<(), ConnectionError> {
        let mut parser = RequestParser::default();
        let mut output = Vec::new();
        loop {
            while let Ok(Some((args, used))) = parser.parse(input, &self.config.limits) {
                input.advance(used);
                if args
                    .first()
                    .is_some_and(|name| name.eq_ignore_ascii_case(b"quit"))
                {
                    output.extend_from_slice(b"+OK\r\n");
                    return self.write_out(stream, &mut output, held, 0).await;
                }
            }
            if input.len() >= self.config.read_buffer_max {
                return Ok(());
            }
            input.reserve(1024);
            tokio::select! {
                // Biased: the same order every time, so simulated runs replay.
                biased;
                () = state.killed() => return Ok(()),
                line = watching.lines.recv() => match line {
                    Ok(line) => {
                        output.extend_from_slice(&line);
                        // What else is waiting goes in the same write.
                        while output.len() < OUTPUT_FLUSH_BYTES {
                            let Ok(line) = watching.lines.try_recv() else {
                                break;
                            };
                            output.extend_from_slice(&line);
                        }
                        self.write_out(stream, &mut output, held, input.len()).await?;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        bump(&self.counters.monitors_dropped);
                        return Ok(());
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
                read = stream.read_buf(input) => match read {
                    Ok(0) | Err(_) => return Ok(()),
                    Ok(_) => held.set(input.len()),
                },
            }
        }
    }

    /// Encodes `reply` after the pending ones; an error when that takes the connection's
    /// pending replies past `output_buffer_max`.
    fn push_reply(
        &self,
        reply: &Frame,
        protocol: Protocol,
        output: &mut Vec<u8>,
    ) -> Result<(), ConnectionError> {
        let before = output.len();
        resp::encode_frame(reply, protocol, output);
        if output.len() > self.config.output_buffer_max {
            bump(&self.counters.output_limit_closed);
            return Err(ConnectionError::OutputLimit {
                reply: output.len() - before,
                held: output.len(),
                max: self.config.output_buffer_max,
            });
        }
        Ok(())
    }

    /// The data command `args` names, parsed and seeded, if it may run in a pipeline run
    /// ([`Proxy::run_pipeline`]): a keyed command with every key in one slot group, on an
    /// authenticated connection outside `MULTI`, neither blocking nor waking a blocked client
    /// (those need the proxy's own steps). Anything else runs alone, in its turn.
    fn pipelinable(&self, session: &mut Session<N, C>, args: &[Bytes]) -> Option<Pipelined> {
        // While anyone monitors, every command runs alone, to be shown with its arguments.
        if !session.authenticated || session.transaction.is_some() || self.monitors.active() {
            return None;
        }
        let name = lower(args.first()?);
        if is_proxy_command(&name)
            || matches!(
                name.as_str(),
                "quit" | "multi" | "exec" | "discard" | "watch" | "unwatch"
            )
            || Command::is_blocking_name(&args[0])
        {
            return None;
        }
        let mut command = Command::parse(args).ok()?;
        if command.scope() != Scope::Keys {
            return None;
        }
        let group = single_group(&session.client.routing().current(), &command)?;
        if !self.waiters.woken_by(&command).is_empty() {
            return None;
        }
        command.reseed(session.next_seed(self.clock.now()));
        Some(Pipelined {
            name,
            command,
            group,
        })
    }

    /// Answers a run of pipelined commands ([`Proxy::pipelinable`]), in order: one alone as
    /// any command, several through [`ClusterClient::execute_pipeline`] (the commands of
    /// each slot group in one request, the groups concurrently).
    async fn run_pipeline(
        &self,
        session: &mut Session<N, C>,
        run: Vec<Pipelined>,
        request_bytes: usize,
    ) -> Vec<Frame> {
        let started = self.clock.now();
        if run.len() > 1 {
            bump(&self.counters.pipeline_runs);
            self.metrics.pipeline_run.observe(run.len() as f64);
            self.counters
                .pipeline_run_commands_peak
                .fetch_max(run.len() as u64, Ordering::Relaxed);
            self.counters
                .pipeline_run_bytes_peak
                .fetch_max(request_bytes as u64, Ordering::Relaxed);
        }
        // Writes to a key past its limit are answered here and never sent (`hot`).
        let mut names = Vec::with_capacity(run.len());
        let mut refusals = Vec::with_capacity(run.len());
        let mut commands = Vec::with_capacity(run.len());
        let mut sent_anyway = Vec::new();
        let mut share = false;
        let verdicts = self
            .hot
            .admit_all(started, run.iter().map(|joined| &joined.command));
        // The group of a run of one, for the coalescer.
        let group = run.first().map(|joined| joined.group).unwrap_or_default();
        for (joined, verdict) in run.into_iter().zip(verdicts) {
            let Pipelined { name, command, .. } = joined;
            names.push(name);
            match verdict {
                Ok(admitted) => {
                    share = admitted == hot::Admitted::ShareRead;
                    refusals.push(None);
                    commands.push(command);
                }
                Err(text) => {
                    if self.config.bugs.is_planted(Bug::HotKeyRefusalSent) {
                        sent_anyway.push(command);
                    }
                    refusals.push(Some(text));
                }
            }
        }
        if !sent_anyway.is_empty() {
            // Planted bug: the refused writes go out all the same.
            let _ = session.client.execute_pipeline(&sent_anyway).await;
        }
        if refusals.iter().any(Option::is_some) {
            // Slow a client that retries refused writes at once ([`HotKeyConfig::refusal_delay`]).
            self.clock.sleep(self.config.hot_keys.refusal_delay).await;
        }
        // A hot read alone is shared; in a longer run it goes out with the run's other
        // commands (its group's share of the run is one request anyway).
        let results = match commands.as_slice() {
            [] => Vec::new(),
            [only] if share && names.len() == 1 => vec![self.shared_read(session, only).await],
            // Alone, not in a batch whose other reads would wait for it.
            [only]
                if self.config.coalesce_runners > 0
                    && names.len() == 1
                    && self.costly_read(only) =>
            {
                bump(&self.counters.costly_reads_alone);
                vec![session.client.execute(only.clone()).await]
            }
            [only] if self.config.coalesce_runners > 0 && names.len() == 1 => {
                let coalescer = if only.is_write() {
                    &self.coalesced_writes
                } else {
                    &self.coalesced_reads
                };
                // `pipelinable` saw every key in `group`; a table changed since only costs
                // the batch a second request (`execute_pipeline` routes each command again).
                match coalescer.execute(group, only.clone(), request_bytes).await {
                    Ok(answer) => vec![answer],
                    // Too large, or the queue is full: alone, as without coalescing.
                    Err(command) => vec![session.client.execute(command).await],
                }
            }
            [only] => vec![session.client.execute(only.clone()).await],
            _ => session.client.execute_pipeline(&commands).await,
        };
        if let ([only], [Ok(reply)]) = (commands.as_slice(), results.as_slice()) {
            self.measure_read(only, reply);
        }
        let mut results = results.into_iter();
        let frames: Vec<Frame> = names
            .iter()
            .zip(refusals)
            .map(|(name, refusal)| match refusal {
                Some(text) => error(text),
                None => match results.next() {
                    Some(result) => self.keyed_reply(name, session.protocol, result),
                    None => error("ERR internal: a pipelined command got no result"),
                },
            })
            .collect();
        self.count_all(started, names.into_iter().zip(&frames));
        frames
    }

    /// Whether `command` is a read of a key whose last read answered a large reply
    /// ([`Proxy::costly_reads`]).
    fn costly_read(&self, command: &Command) -> bool {
        !self.costly_reads.is_empty()
            && !command.is_write()
            && self.costly_reads.any(command.keys())
    }

    /// Remembers whether a read of one key answered a large reply ([`Proxy::costly_reads`]).
    fn measure_read(&self, command: &Command, reply: &Reply) {
        if command.is_write() {
            return;
        }
        let size = reply.encoded_len();
        if size < self.config.costly_read_bytes && self.costly_reads.is_empty() {
            return;
        }
        if let [key] = command.keys().as_slice() {
            self.costly_reads.record((*key).clone(), key.len(), size);
        }
    }

    /// A hot read's answer, from a fetch of an equal read that starts after it arrived
    /// ([`shared_read`]).
    async fn shared_read(
        &self,
        session: &mut Session<N, C>,
        command: &Command,
    ) -> Result<Reply, ClientError> {
        let client = &mut session.client;
        self.shared_reads
            .read(command, &self.clock, async || {
                client.execute(command.clone()).await
            })
            .await
    }

    /// A keyed command's answer as the client sees it.
    fn keyed_reply(
        &self,
        name: &str,
        protocol: Protocol,
        result: Result<Reply, ClientError>,
    ) -> Frame {
        match result {
            Ok(Reply::Array(items)) if name == "hgetall" && protocol == Protocol::Resp3 => {
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut items = items.iter();
                while let (Some(field), Some(value)) = (items.next(), items.next()) {
                    pairs.push((Frame::from(field), Frame::from(value)));
                }
                Frame::Map(pairs)
            }
            Ok(reply) => Frame::from(&reply),
            Err(e) => client_error(e, &self.config.bugs),
        }
    }

    /// Writes the pending replies, giving up when a write makes no progress for
    /// `output_stall_timeout` (a client that does not read). `input_len` is what the
    /// connection still holds besides, for [`ProxyStats::buffered_bytes`].
    async fn write_out<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        output: &mut Vec<u8>,
        held: &mut Held<'_>,
        input_len: usize,
    ) -> Result<(), ConnectionError> {
        let stall = self.config.output_stall_timeout;
        let stalled = || {
            bump(&self.counters.slow_reader_closed);
            ConnectionError::Stalled(stall)
        };
        let mut written = 0;
        while written < output.len() {
            match timeout(&self.clock, stall, stream.write(&output[written..])).await {
                Ok(Ok(0)) => return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()),
                Ok(Ok(n)) => {
                    written += n;
                    held.set(input_len + output.len() - written);
                }
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => return Err(stalled()),
            }
        }
        timeout(&self.clock, stall, stream.flush())
            .await
            .map_err(|_| stalled())??;
        output.clear();
        if output.capacity() > OUTPUT_CAPACITY_KEPT {
            // One large reply must not pin its buffer for the connection's lifetime.
            *output = Vec::with_capacity(16 << 10);
        }
        held.set(input_len);
        Ok(())
    }

    /// Answers one command, and counts it for `INFO` (`commandstats`).
    async fn dispatch(&self, session: &mut Session<N, C>, args: Vec<Bytes>) -> Frame {
        let started = self.clock.now();
        let name = lower(&args[0]);
        let shown = self.monitors.active().then(|| args.clone());
        // A transaction's commands are shown when `EXEC` runs them, with it.
        let queuing = session.executing
            || session.transaction.is_some()
                && !matches!(
                    name.as_str(),
                    "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
                );
        let executing = match (&name[..], session.transaction.as_mut()) {
            ("exec", Some(transaction)) => Some(transaction.take_shown()),
            _ => None,
        };
        // Set and cleared by the `EXEC` alone: the commands it answers inside see it set.
        let exec = executing.is_some();
        if exec {
            session.executing = true;
        }
        let frame = self.answer(session, args).await;
        if exec {
            session.executing = false;
        }
        if let Some(args) = shown
            && !queuing
        {
            self.show(session, &args, &frame, executing.unwrap_or_default());
        }
        self.count(name, started, &frame);
        frame
    }

    /// Feeds the monitors a command that ran (after the commands its `EXEC` ran, when they
    /// did). What never ran is not shown: an unknown command, a wrong arity, a refusal before
    /// `AUTH`; nor are administrative commands.
    fn show(
        &self,
        session: &Session<N, C>,
        args: &[Bytes],
        reply: &Frame,
        executed: Vec<Vec<Bytes>>,
    ) {
        if let Frame::Error(text) = reply
            && (text.starts_with("ERR unknown command")
                || text.starts_with("ERR unknown subcommand")
                || text.starts_with("ERR wrong number of arguments")
                || text.starts_with("NOAUTH"))
        {
            return;
        }
        let admin = |args: &[Bytes]| {
            commands::entry_of(args).is_some_and(|info| info.flags.contains(&"admin"))
        };
        if admin(args) {
            return;
        }
        let wall_us = self.clock.wall_ms() * 1000;
        // An `EXEC` that ran its commands answers their replies.
        if matches!(reply, Frame::Array(Some(_))) {
            for command in executed.iter().filter(|command| !admin(command)) {
                self.monitors.feed(wall_us, session.peer, command);
            }
        }
        self.monitors.feed(wall_us, session.peer, args);
    }

    /// Counts one answered command for `INFO` (`commandstats`), timed from `started`.
    fn count(&self, name: String, started: Duration, frame: &Frame) {
        self.count_all(started, [(name, frame)]);
    }

    /// Counts answered commands, all timed from `started`, under one lock of the counts
    /// (a pipeline run's commands: one lock per command was contended between connections).
    fn count_all<'a>(
        &self,
        started: Duration,
        answered: impl IntoIterator<Item = (String, &'a Frame)>,
    ) {
        let took = self.clock.now().saturating_sub(started);
        let mut counts = None;
        for (name, frame) in answered {
            bump(&self.counters.total_commands);
            self.metrics.record(
                metrics::family(&name),
                took.as_secs_f64(),
                matches!(frame, Frame::Error(_)),
            );
            let refused = match frame {
                Frame::Error(text) => Some(
                    text.starts_with("ERR wrong number")
                        || text.starts_with("ERR syntax")
                        || text.starts_with("NOAUTH"),
                ),
                _ => None,
            };
            let unknown =
                matches!(frame, Frame::Error(text) if text.starts_with("ERR unknown command"));
            if unknown {
                continue;
            }
            let counts = counts
                .get_or_insert_with(|| self.command_counts.lock().expect("command counts lock"));
            // Known names only, and a cap besides: the map is bounded whatever clients send.
            if counts.len() < COMMAND_COUNTS_MAX || counts.contains_key(&name) {
                let entry = counts.entry(name).or_default();
                entry.calls += 1;
                entry.usec += took.as_micros() as u64;
                match refused {
                    Some(true) => entry.rejected_calls += 1,
                    Some(false) => entry.failed_calls += 1,
                    None => {}
                }
            }
        }
    }

    async fn answer(&self, session: &mut Session<N, C>, args: Vec<Bytes>) -> Frame {
        let name = lower(&args[0]);
        if !session.authenticated && !matches!(name.as_str(), "auth" | "hello" | "quit") {
            return error("NOAUTH Authentication required.");
        }
        if let Some(frame) = self.transaction_command(session, &name, &args).await {
            return frame;
        }
        if let Some(refusal) = commands::check_container(&args) {
            return refusal;
        }
        match name.as_str() {
            "ping" => match args.len() {
                1 => Frame::Simple("PONG".into()),
                2 => Frame::Bulk(Some(args[1].clone())),
                _ => arity("ping"),
            },
            "echo" if args.len() == 2 => Frame::Bulk(Some(args[1].clone())),
            "echo" => arity("echo"),
            "quit" => {
                session.quit = true;
                Frame::Simple("OK".into())
            }
            "auth" => match args.len() {
                2 | 3 => {
                    self.authenticate(session, args.last().expect("len >= 2"))
                        .await
                }
                _ => arity("auth"),
            },
            "hello" => self.hello(session, &args).await,
            "select" => match args.get(1).map(|db| db.as_ref()) {
                Some(b"0") if args.len() == 2 => Frame::Simple("OK".into()),
                Some(_) if args.len() == 2 => error("ERR DB index is out of range"),
                _ => arity("select"),
            },
            "client"
                if args
                    .get(1)
                    .is_some_and(|sub| sub.eq_ignore_ascii_case(b"unblock")) =>
            {
                if args.len() < 3 {
                    error(
                        "ERR unknown subcommand or wrong number of arguments for 'client|unblock' command",
                    )
                } else {
                    self.client_unblock(&args).await
                }
            }
            "client" => client_subcommand(session, &self.clients, &args, self.clock.now()),
            "function" => function_subcommand(&args),
            "script" => script_subcommand(&args),
            "command" => commands::answer(&args),
            "cluster" => {
                let table = self.routing.current();
                let announced = cluster::Announced {
                    at: session.local,
                    epoch: table.epoch(),
                    routed: !table.groups().is_empty(),
                };
                cluster::answer(&args, &announced)
            }
            // Redis Cluster's replica reads and redirections: the proxy serves every slot itself.
            "readonly" | "readwrite" if args.len() == 1 => {
                session.state.set_readonly(name == "readonly");
                Frame::Simple("OK".into())
            }
            "asking" if args.len() == 1 => Frame::Simple("OK".into()),
            "monitor" if args.len() == 1 => {
                session.monitoring = true;
                Frame::Simple("OK".into())
            }
            "monitor" => arity("monitor"),
            "readonly" | "readwrite" | "asking" => arity(&name),
            "config" => self.config_subcommand(&args),
            "time" => {
                let wall_us = self.clock.wall_ms() * 1000;
                Frame::Array(Some(vec![
                    bulk((wall_us / 1_000_000).to_string()),
                    bulk((wall_us % 1_000_000).to_string()),
                ]))
            }
            "info" => self.info(session, &args[1..]).await,
            "scan" => self.scan(session, &args).await,
            "hscan" | "sscan" | "zscan" => self.element_scan(session, &name, &args).await,
            "randomkey" if args.len() == 1 => self.random_key(session).await,
            "randomkey" => arity("randomkey"),
            _ => self.data_command(session, &name, &args).await,
        }
    }

    /// Checks a password in constant time ([`same_secret`]); a wrong one is answered only
    /// after `auth_failure_delay`, and enough of them close the connection.
    async fn authenticate(&self, session: &mut Session<N, C>, password: &Bytes) -> Frame {
        match &self.config.password {
            None => error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ),
            Some(expected) if same_secret(expected.as_bytes(), password) => {
                session.authenticated = true;
                Frame::Simple("OK".into())
            }
            Some(_) => {
                bump(&self.counters.auth_failures);
                session.auth_failures = session.auth_failures.saturating_add(1);
                let max = self.config.auth_failures_max;
                if max > 0 && session.auth_failures >= max {
                    session.quit = true;
                }
                self.clock.sleep(self.config.auth_failure_delay).await;
                error("WRONGPASS invalid username-password pair or user is disabled.")
            }
        }
    }

    async fn hello(&self, session: &mut Session<N, C>, args: &[Bytes]) -> Frame {
        let mut protocol = session.protocol;
        let mut rest = &args[1..];
        if let Some(version) = rest.first() {
            protocol = match version.as_ref() {
                b"2" => Protocol::Resp2,
                b"3" => Protocol::Resp3,
                _ => return error("NOPROTO unsupported protocol version"),
            };
            rest = &rest[1..];
        }
        while let Some(option) = rest.first() {
            match lower(option).as_str() {
                "auth" if rest.len() >= 3 => {
                    let reply = self.authenticate(session, &rest[2]).await;
                    if matches!(reply, Frame::Error(_)) {
                        return reply;
                    }
                    rest = &rest[3..];
                }
                "setname" if rest.len() >= 2 => rest = &rest[2..],
                _ => return error("ERR syntax error"),
            }
        }
        if !session.authenticated {
            return error(
                "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
            );
        }
        session.protocol = protocol;
        let proto = if protocol == Protocol::Resp3 { 3 } else { 2 };
        Frame::Map(vec![
            (bulk("server"), bulk("redis")),
            (bulk("version"), bulk(REDIS_VERSION)),
            (bulk("proto"), Frame::Integer(proto)),
            (bulk("id"), Frame::Integer(session.id as i64)),
            (bulk("mode"), bulk("cluster")),
            (bulk("role"), bulk("master")),
            (bulk("modules"), Frame::Array(Some(Vec::new()))),
        ])
    }

    /// `CONFIG GET pattern...` and `CONFIG SET name value ...`: the encoding thresholds
    /// ([`ENCODING_PARAMETERS`]) are taken and answered back; the proxy's own bounds are
    /// answered (`maxclients`, `timeout`, `proto-max-bulk-len`) but set in its file, not here.
    fn config_subcommand(&self, args: &[Bytes]) -> Frame {
        let sub = args.get(1).map(|a| lower(a));
        match sub.as_deref() {
            Some("get") if args.len() >= 3 => {
                let encodings = self.encodings.lock().expect("encodings lock");
                let fixed = [
                    ("maxclients", self.config.max_clients.to_string()),
                    (
                        "timeout",
                        self.config
                            .idle_timeout
                            .map_or(0, |t| t.as_secs())
                            .to_string(),
                    ),
                    (
                        "proto-max-bulk-len",
                        self.config.limits.bulk_bytes_max.to_string(),
                    ),
                ];
                let aliases = ENCODING_ALIASES.iter().map(|(alias, canonical)| {
                    (
                        *alias,
                        encodings.get(canonical).cloned().unwrap_or_default(),
                    )
                });
                let all: Vec<(&str, String)> = encodings
                    .iter()
                    .map(|(name, value)| (*name, value.clone()))
                    .chain(aliases)
                    .chain(fixed)
                    .collect();
                let mut found = std::collections::BTreeMap::new();
                for pattern in &args[2..] {
                    let pattern = lower(pattern);
                    for (name, value) in &all {
                        if larder_core::kv::glob_match(pattern.as_bytes(), name.as_bytes()) {
                            found.insert(*name, value.clone());
                        }
                    }
                }
                Frame::Array(Some(
                    found
                        .into_iter()
                        .flat_map(|(name, value)| [bulk(name), bulk(value)])
                        .collect(),
                ))
            }
            Some("set") if args.len() >= 4 && args.len().is_multiple_of(2) => {
                let mut changes = Vec::new();
                for pair in args[2..].chunks(2) {
                    let name = String::from_utf8_lossy(&pair[0]).into_owned();
                    let Some(canonical) = encoding_parameter(&name) else {
                        return error(format!(
                            "ERR Unknown option or number of arguments for CONFIG SET - '{name}' (Larder takes Redis's encoding thresholds here; its own settings are in its configuration file)"
                        ));
                    };
                    let value = String::from_utf8_lossy(&pair[1]).into_owned();
                    if canonical != "save" && value.parse::<i64>().is_err() {
                        return error(format!(
                            "ERR CONFIG SET failed (possibly related to argument '{name}') - argument couldn't be parsed into an integer"
                        ));
                    }
                    changes.push((canonical, value));
                }
                self.encodings
                    .lock()
                    .expect("encodings lock")
                    .extend(changes);
                Frame::Simple("OK".into())
            }
            Some("resetstat" | "rewrite") if args.len() == 2 => {
                error("ERR CONFIG RESETSTAT and REWRITE are not supported by Larder")
            }
            _ => arity("config"),
        }
    }

    async fn info(&self, session: &mut Session<N, C>, args: &[Bytes]) -> Frame {
        let sections = info::selected(args);
        let keys = if sections.contains(&"keyspace") {
            match self.fan_out(session, Command::DbSize).await {
                Ok(replies) => Some(
                    replies
                        .iter()
                        .map(|r| if let Reply::Int(n) = r { *n } else { 0 })
                        .sum::<i64>(),
                ),
                Err(_) => None,
            }
        } else {
            None
        };
        let table = self.routing.current();
        let stats = self.stats();
        // Redis's `tcp_port`, and beside it `tls_port` (Redis shows only one port there, the
        // TLS one when plain is off; here both listeners may be on).
        let mut ports = String::new();
        if let Some(port) = self.config.tcp_port {
            ports.push_str(&format!("tcp_port:{port}\n"));
        }
        if let Some(port) = self.config.tls_port {
            ports.push_str(&format!("tls_port:{port}\n"));
        }
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (hot_keys, hot_slots) = self.hot.hottest(self.clock.now(), HOT_KEYS_SHOWN);
        let facts = info::Facts {
            version: REDIS_VERSION,
            larder_version: env!("CARGO_PKG_VERSION"),
            ports,
            uptime_secs: self.clock.now().saturating_sub(self.started).as_secs(),
            process: self
                .config
                .process_figures
                .map(|read| read())
                .unwrap_or_default(),
            connected_clients: stats.connections,
            blocked_clients: get(&self.counters.blocked),
            max_clients: self.config.max_clients,
            total_connections: get(&self.counters.total_connections),
            rejected_connections: stats.rejected_connections,
            total_commands: get(&self.counters.total_commands),
            commands: self
                .command_counts
                .lock()
                .expect("command counts lock")
                .clone(),
            routing_epoch: table.epoch(),
            slot_groups: table.groups().len(),
            keys,
            hot_keys,
            hot_slots,
            hot_key_writes_per_sec_max: self.hot.config().writes_per_sec_max,
            hot_key_refused_writes: self.hot.refused(),
            shared_reads: self.shared_reads.shared(),
            share_reads_min_per_sec: self.hot.config().share_reads_min_per_sec,
        };
        Frame::Bulk(Some(Bytes::from(info::render(&sections, &facts))))
    }

    /// Runs a group-scope command on every group, in group order.
    async fn fan_out(
        &self,
        session: &mut Session<N, C>,
        command: Command,
    ) -> Result<Vec<Reply>, ClientError> {
        let groups: Vec<_> = self.routing.current().groups().keys().copied().collect();
        let mut replies = Vec::with_capacity(groups.len());
        for group in groups {
            replies.push(session.client.execute_in(group, command.clone()).await?);
        }
        Ok(replies)
    }

    /// `RANDOMKEY`: a key of a random group that has any, picked at random
    /// ([`Command::RandomKey`]: a few rows read, whatever the group's size); nil when the
    /// database is empty. Groups are drawn alike, not by their sizes.
    async fn random_key(&self, session: &mut Session<N, C>) -> Frame {
        let groups: Vec<_> = self.routing.current().groups().keys().copied().collect();
        let seed = session.next_seed(self.clock.now());
        for offset in 0..groups.len() {
            let group = groups[(seed as usize).wrapping_add(offset) % groups.len()];
            let pick = Command::RandomKey { seed: seed >> 16 };
            match session.client.execute_in(group, pick).await {
                // An empty group: on with the next.
                Ok(Reply::Nil) => {}
                Ok(other) => return Frame::from(&other),
                Err(e) => return client_error(e, &self.config.bugs),
            }
        }
        Frame::Null
    }

    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`: steps through the slot groups from
    /// where the cursor stands ([`scan`]), looking at no more than `COUNT` keys in all;
    /// groups in the order of their ids, each from its first key.
    async fn scan(&self, session: &mut Session<N, C>, args: &[Bytes]) -> Frame {
        if args.len() < 2 {
            return arity("scan");
        }
        let Some(cursor) = scan::parse_cursor(&args[1]) else {
            return error("ERR invalid cursor");
        };
        let scan::Options {
            pattern,
            kind,
            count,
        } = match scan::Options::parse(&args[2..], true) {
            Ok(options) => options,
            Err(problem) => return error(problem),
        };
        let groups: Vec<GroupId> = self.routing.current().groups().keys().copied().collect();
        let first_after = |group: GroupId| groups.iter().copied().find(|g| *g > group);
        let start = if cursor == 0 {
            groups.first().map(|&group| (group, Bytes::new()))
        } else {
            let Some(scan::Position::Keys { group, from }) = self.scan_cursors.find(cursor) else {
                return error("ERR invalid cursor");
            };
            if groups.contains(&group) {
                Some((group, from))
            } else {
                // The group is gone from the routing table: on with the next one.
                first_after(group).map(|group| (group, Bytes::new()))
            }
        };
        let Some((mut group, mut from)) = start else {
            return self.scan_reply(None, &[], "SCAN stopped at a key");
        };
        // A group that ends before the step has looked at `COUNT` keys hands the rest of the
        // count to the next group, so a small database answers in one call, as Redis's does.
        let mut found: Vec<Reply> = Vec::new();
        let mut budget = count;
        let next = loop {
            let step = Command::Scan {
                from,
                pattern: pattern.clone(),
                kind: kind.clone(),
                count: budget,
            };
            let (last, keys, looked) = match session.client.execute_in(group, step).await {
                Ok(Reply::Array(parts)) => match <[Reply; 3]>::try_from(parts) {
                    Ok([last, Reply::Array(keys), Reply::Int(looked)]) => (last, keys, looked),
                    _ => return error("ERR internal: a SCAN step answered out of shape"),
                },
                // A later group failing ends the call with what it found; the next call
                // starts at that group and reports its error.
                Ok(_) | Err(_) if !found.is_empty() || budget < count => {
                    break Some(scan::Position::Keys {
                        group,
                        from: Bytes::new(),
                    });
                }
                Ok(other) => return Frame::from(&other),
                Err(e) => return client_error(e, &self.config.bugs),
            };
            found.extend(keys);
            if let Reply::Bulk(last) = last {
                break Some(scan::Position::Keys {
                    group,
                    from: larder_core::kv::past(&last),
                });
            }
            budget = budget.saturating_sub(u64::try_from(looked).unwrap_or(0));
            match first_after(group) {
                None => break None,
                Some(next) if budget == 0 => {
                    break Some(scan::Position::Keys {
                        group: next,
                        from: Bytes::new(),
                    });
                }
                Some(next) => {
                    group = next;
                    from = Bytes::new();
                }
            }
        };
        self.scan_reply(next, &found, "SCAN stopped at a key")
    }

    /// A scan step's reply: a new cursor for `next` (0 when the iteration is done) and the
    /// items found. A position too long for the cursor table is refused, `stopped` saying
    /// where the step stopped.
    fn scan_reply(&self, next: Option<scan::Position>, items: &[Reply], stopped: &str) -> Frame {
        let cursor = match next {
            None => 0,
            Some(position) => match self.scan_cursors.remember(position) {
                Some(cursor) => cursor,
                None => {
                    return error(format!(
                        "ERR {stopped} longer than a cursor may hold ({} bytes)",
                        scan::SCAN_CURSOR_BYTES_MAX
                    ));
                }
            },
        };
        Frame::Array(Some(vec![
            bulk(cursor.to_string()),
            Frame::Array(Some(items.iter().map(Frame::from).collect())),
        ]))
    }

    /// `HSCAN`, `SSCAN` or `ZSCAN key cursor [MATCH pattern] [COUNT n]`: one step of
    /// [`Command::ElementScan`] from where the cursor stands ([`scan`]), in element order.
    async fn element_scan(&self, session: &mut Session<N, C>, name: &str, args: &[Bytes]) -> Frame {
        if args.len() < 3 {
            return arity(name);
        }
        let key = args[1].clone();
        let Some(cursor) = scan::parse_cursor(&args[2]) else {
            return error("ERR invalid cursor");
        };
        let kind = match name {
            "hscan" => Kind::Hash,
            "sscan" => Kind::Set,
            _ => Kind::ZSet,
        };
        let options = scan::Options::parse(&args[3..], false);
        if let Err(problem) = options {
            // Redis looks the key up before it reads the options: a missing key answers an
            // empty scan and one of another type WRONGTYPE, whatever the options.
            let probe = Command::ElementScan {
                key,
                kind,
                from: Bytes::new(),
                pattern: Bytes::from_static(b"*"),
                count: 1,
            };
            return match session.client.execute(probe).await {
                Ok(Reply::Array(parts)) if parts.get(1) == Some(&Reply::Array(Vec::new())) => {
                    self.scan_reply(None, &[], name)
                }
                Ok(Reply::Error(text)) => error(text),
                Ok(_) => error(problem),
                Err(e) => client_error(e, &self.config.bugs),
            };
        }
        let scan::Options { pattern, count, .. } = options.expect("checked above");
        let from = if cursor == 0 {
            Bytes::new()
        } else {
            match self.scan_cursors.find(cursor) {
                Some(scan::Position::Elements { key: of, from }) if of == key => from,
                _ => return error("ERR invalid cursor"),
            }
        };
        let step = Command::ElementScan {
            key: key.clone(),
            kind,
            from,
            pattern,
            count,
        };
        let (last, items) = match session.client.execute(step).await {
            Ok(Reply::Array(parts)) => match <[Reply; 2]>::try_from(parts) {
                Ok([last, Reply::Array(items)]) => (last, items),
                _ => return error(format!("ERR internal: a {name} step answered out of shape")),
            },
            Ok(other) => return Frame::from(&other),
            Err(e) => return client_error(e, &self.config.bugs),
        };
        let next = match last {
            Reply::Bulk(last) => Some(scan::Position::Elements {
                key,
                from: larder_core::kv::past(&last),
            }),
            _ => None,
        };
        let stopped = format!("{} stopped at a key and element", name.to_uppercase());
        self.scan_reply(next, &items, &stopped)
    }

    async fn data_command(&self, session: &mut Session<N, C>, name: &str, args: &[Bytes]) -> Frame {
        if let Some(parsed) = Command::parse_blocking(args) {
            return match parsed {
                Ok((command, timeout)) => self.blocking(session, command, timeout).await,
                Err(problem) => error(unknown_with_args(problem.to_string(), args)),
            };
        }
        let mut command = match Command::parse(args) {
            Ok(command) => command,
            Err(problem) => return error(unknown_with_args(problem.to_string(), args)),
        };
        command.reseed(session.next_seed(self.clock.now()));
        match command.scope() {
            Scope::Keys => {
                let admitted = match self.hot.admit(self.clock.now(), &command) {
                    Ok(admitted) => admitted,
                    Err(text) => {
                        if self.config.bugs.is_planted(Bug::HotKeyRefusalSent) {
                            // Planted bug: the refused write goes out all the same.
                            let _ = session.client.execute(command).await;
                        }
                        self.clock.sleep(self.config.hot_keys.refusal_delay).await;
                        return error(text);
                    }
                };
                if admitted == hot::Admitted::ShareRead {
                    let reply = self.shared_read(session, &command).await;
                    return self.keyed_reply(name, session.protocol, reply);
                }
                let woken = self.waiters.woken_by(&command);
                let reply = session.client.execute(command).await;
                if reply.is_ok() && !woken.is_empty() {
                    self.serve_waiters(session, woken).await;
                }
                self.keyed_reply(name, session.protocol, reply)
            }
            Scope::Group => match (self.fan_out(session, command.clone()).await, &command) {
                (Err(e), _) => client_error(e, &self.config.bugs),
                (Ok(replies), Command::Keys { .. }) => {
                    let mut keys = Vec::new();
                    for reply in replies {
                        match reply {
                            Reply::Array(found) => keys.extend(found.iter().map(Frame::from)),
                            other => return Frame::from(&other),
                        }
                    }
                    Frame::Array(Some(keys))
                }
                (Ok(replies), Command::DbSize) => {
                    let mut total = 0;
                    for reply in replies {
                        match reply {
                            Reply::Int(n) => total += n,
                            other => return Frame::from(&other),
                        }
                    }
                    Frame::Integer(total)
                }
                (Ok(replies), _) => replies
                    .iter()
                    .find(|r| matches!(r, Reply::Error(_)))
                    .map_or(Frame::Simple("OK".into()), Frame::from),
            },
        }
    }
}

/// Polls the routing sources every [`ProxyConfig::routing_refresh`] until the proxy is dropped,
/// so a proxy learns of replaced replicas before its requests fail on them.
async fn refresh_loop<N: Net, C: Clock>(proxy: Weak<Proxy<N, C>>) {
    loop {
        let Some(p) = proxy.upgrade() else { return };
        let (clock, interval) = (p.clock.clone(), p.config.routing_refresh);
        let limit = p.config.client.request_timeout;
        match p
            .routing
            .refresh(&p.net, &p.clock, interval / 2, limit)
            .await
        {
            Ok(true) => tracing::info!(epoch = p.routing.current().epoch(), "routing refreshed"),
            Ok(false) => {}
            Err(error) => tracing::debug!(%error, "routing refresh"),
        }
        drop(p);
        clock.sleep(interval.max(Duration::from_millis(10))).await;
    }
}

/// Whether `guess` is the `secret`, in time that depends on the lengths only, never on where
/// the first differing byte is (an early-exit `==` would let a client find the password byte
/// by byte from reply times). The length may leak, as it does in Redis's `ACL` compare; the
/// contents do not: every byte of the secret is compared, and `black_box` keeps the optimizer
/// from turning the accumulation back into an early exit.
fn same_secret(secret: &[u8], guess: &[u8]) -> bool {
    let mut differ = u8::from(secret.len() != guess.len());
    for (i, &s) in secret.iter().enumerate() {
        // The branch in `get` depends on the guess's length only, which the client knows.
        let g = guess.get(i).copied().unwrap_or(0);
        differ = std::hint::black_box(differ | (s ^ g));
    }
    differ == 0
}

/// Commands the proxy answers itself (not parsed as [`Command`]s): queued as they are inside
/// a transaction and answered at `EXEC`.
fn is_proxy_command(name: &str) -> bool {
    matches!(
        name,
        "ping"
            | "echo"
            | "select"
            | "client"
            | "function"
            | "script"
            | "command"
            | "config"
            | "time"
            | "info"
            | "scan"
            | "hscan"
            | "sscan"
            | "zscan"
            | "hello"
            | "auth"
            | "cluster"
            | "readonly"
            | "readwrite"
            | "asking"
            | "monitor"
            | "object"
            | "memory"
            | "randomkey"
            | "lastsave"
            | "debug"
    )
}

/// Most command names `INFO commandstats` keeps counts for.
const COMMAND_COUNTS_MAX: usize = 512;

fn arity(name: &str) -> Frame {
    error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Redis appends the first arguments to "unknown command" errors; clients show it as is.
fn unknown_with_args(text: String, args: &[Bytes]) -> String {
    if !text.starts_with("ERR unknown command") {
        return text;
    }
    let shown: Vec<String> = args[1..]
        .iter()
        .take(8)
        .map(|a| format!("'{}'", String::from_utf8_lossy(&a[..a.len().min(128)])))
        .collect();
    format!("{text}, with args beginning with: {}", shown.join(" "))
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn same_secret_is_equality() {
        assert!(same_secret(b"sesame", b"sesame"));
        assert!(same_secret(b"", b""));
        for guess in [
            &b""[..],
            b"sesam",
            b"sesame1",
            b"sesamf",
            b"Sesame",
            b"sesame\0",
        ] {
            assert!(!same_secret(b"sesame", guess), "{}", guess.escape_ascii());
        }
        // A guess longer than the secret whose extra bytes are zero still differs by length.
        assert!(!same_secret(b"a", b"a\0\0"));
        assert!(!same_secret(b"", b"\0"));
    }
}
