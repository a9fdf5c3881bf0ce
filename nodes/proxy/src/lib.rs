//! The proxy: a stateless RESP2/RESP3 server in front of the cluster, so `redis-cli`,
//! `redis-benchmark` and Redis client libraries work unmodified.
//!
//! Each connection gets its own [`ClusterClient`] (whose per-group clients open sessions with
//! their groups, so the groups can deduplicate its writes) and shares the proxy's routing
//! table and leader hints.
//! Requests are read in batches: every complete request in the buffer is executed in order and
//! the replies are written with one `write`, which is what makes pipelining cheap.
//!
//! The client-facing side is a byte stream ([`Listener`]), not the message-level `Net`: in
//! production `larder_real::TokioListener`, in the simulator a turmoil one.

use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use larder_core::bugs::{Bug, Bugs};
use larder_core::env::{Clock, Listener, Net};
use larder_core::kv::{Command, Reply, Scope};
use larder_core::resp::{self, Frame, Limits, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use larder_client::{ClientConfig, ClientError, ClusterClient, SharedRouting};

/// The Redis version the proxy reports: clients pick features by it, and Larder implements the
/// parts of the 7.x protocol they use (RESP3 via `HELLO`).
pub const REDIS_VERSION: &str = "7.2.0";

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

/// Proxy settings.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `requirepass`: when set, a connection must `AUTH` (or `HELLO … AUTH`) first.
    pub password: Option<String>,
    /// Protocol limits; a request beyond them is a protocol error (the connection is closed
    /// after the error reply, as Redis does).
    pub limits: Limits,
    pub client: ClientConfig,
    /// Bytes buffered from one connection before the proxy stops reading and processes.
    pub read_buffer_max: usize,
    /// How often the proxy asks the center (observers first) for a newer routing table, when
    /// its routing has sources. Failing requests fetch one sooner (see
    /// [`ClientConfig::routing_refresh_gap`]).
    pub routing_refresh: Duration,
    /// Bugs planted on purpose ([`larder_core::bugs`]; none without the `planted-bugs` feature).
    pub bugs: Bugs,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            password: None,
            limits: Limits::default(),
            client: ClientConfig::default(),
            read_buffer_max: 1 << 20,
            routing_refresh: Duration::from_secs(1),
            bugs: Bugs::default(),
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
    connections: AtomicU64,
}

/// Per-connection protocol state.
struct Session<N: Net, C: Clock> {
    id: u64,
    protocol: Protocol,
    authenticated: bool,
    client: ClusterClient<N, C>,
    quit: bool,
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
        Arc::new(Proxy {
            net,
            clock,
            config,
            routing,
            connections: AtomicU64::new(0),
        })
    }

    pub fn routing(&self) -> &SharedRouting {
        &self.routing
    }

    /// Accepts connections until the listener fails. With a routing that has sources, also
    /// keeps the table fresh in the background.
    pub async fn serve<L>(self: &Arc<Self>, mut listener: L) -> std::io::Result<()>
    where
        L: Listener,
        L::Stream: AsyncRead + AsyncWrite,
    {
        if !self.routing.sources().is_empty() {
            tokio::spawn(refresh_loop(Arc::downgrade(self)));
        }
        loop {
            let stream = listener.accept().await?;
            let proxy = self.clone();
            tokio::spawn(async move {
                let _ = proxy.connection(stream).await;
            });
        }
    }

    /// Serves one client connection until it closes, sends `QUIT`, or breaks the protocol.
    pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
    ) -> std::io::Result<()> {
        let id = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let mut session = Session {
            id,
            protocol: Protocol::Resp2,
            authenticated: self.config.password.is_none(),
            client: ClusterClient::new(
                self.net.clone(),
                self.clock.clone(),
                self.routing.clone(),
                self.config.client.clone(),
            ),
            quit: false,
        };
        let mut input = BytesMut::with_capacity(16 << 10);
        let mut output = Vec::with_capacity(16 << 10);
        loop {
            loop {
                match resp::parse_request(&input, &self.config.limits) {
                    Ok(Some((args, used))) => {
                        input.advance(used);
                        if args.is_empty() {
                            continue;
                        }
                        let reply = self.dispatch(&mut session, args).await;
                        resp::encode_frame(&reply, session.protocol, &mut output);
                        if session.quit {
                            stream.write_all(&output).await?;
                            return stream.flush().await;
                        }
                    }
                    Ok(None) => break,
                    Err(problem) => {
                        resp::encode_frame(
                            &error(format!("ERR {problem}")),
                            session.protocol,
                            &mut output,
                        );
                        stream.write_all(&output).await?;
                        stream.flush().await?;
                        return Ok(());
                    }
                }
            }
            if !output.is_empty() {
                stream.write_all(&output).await?;
                output.clear();
            }
            if input.len()
                >= self.config.read_buffer_max.max(
                    usize::try_from(self.config.limits.request_bytes_max)
                        .unwrap_or(usize::MAX)
                        .saturating_add(1024),
                )
            {
                // parse_request enforces the limits; a buffer this full without a complete
                // request means a client is streaming garbage.
                return Ok(());
            }
            if stream.read_buf(&mut input).await? == 0 {
                return Ok(());
            }
        }
    }

    async fn dispatch(&self, session: &mut Session<N, C>, args: Vec<Bytes>) -> Frame {
        let name = lower(&args[0]);
        if !session.authenticated && !matches!(name.as_str(), "auth" | "hello" | "quit") {
            return error("NOAUTH Authentication required.");
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
                2 | 3 => self.authenticate(session, args.last().expect("len >= 2")),
                _ => arity("auth"),
            },
            "hello" => self.hello(session, &args),
            "select" => match args.get(1).map(|db| db.as_ref()) {
                Some(b"0") if args.len() == 2 => Frame::Simple("OK".into()),
                Some(_) if args.len() == 2 => error("ERR DB index is out of range"),
                _ => arity("select"),
            },
            "client" => self.client_subcommand(session, &args),
            // Clients probe these at connect time; an empty answer means "nothing to report".
            "command" => Frame::Array(Some(Vec::new())),
            "config" => match args.get(1).map(|a| lower(a)).as_deref() {
                Some("get") => Frame::Array(Some(Vec::new())),
                Some("set" | "resetstat" | "rewrite") => {
                    error("ERR CONFIG is not supported by Larder")
                }
                _ => arity("config"),
            },
            "time" => {
                let wall_us = self.clock.wall_ms() * 1000;
                Frame::Array(Some(vec![
                    bulk((wall_us / 1_000_000).to_string()),
                    bulk((wall_us % 1_000_000).to_string()),
                ]))
            }
            "info" => self.info(session).await,
            "scan" => self.scan(session, &args).await,
            _ => self.data_command(session, &name, &args).await,
        }
    }

    fn authenticate(&self, session: &mut Session<N, C>, password: &Bytes) -> Frame {
        match &self.config.password {
            None => error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ),
            Some(expected) if expected.as_bytes() == password.as_ref() => {
                session.authenticated = true;
                Frame::Simple("OK".into())
            }
            Some(_) => error("WRONGPASS invalid username-password pair or user is disabled."),
        }
    }

    fn hello(&self, session: &mut Session<N, C>, args: &[Bytes]) -> Frame {
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
                    let reply = self.authenticate(session, &rest[2]);
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
            (bulk("mode"), bulk("standalone")),
            (bulk("role"), bulk("master")),
            (bulk("modules"), Frame::Array(Some(Vec::new()))),
        ])
    }

    fn client_subcommand(&self, session: &Session<N, C>, args: &[Bytes]) -> Frame {
        match args.get(1).map(|a| lower(a)).as_deref() {
            Some("setname" | "setinfo" | "no-evict" | "no-touch" | "reply") => {
                Frame::Simple("OK".into())
            }
            Some("getname") => Frame::Bulk(None),
            Some("id") => Frame::Integer(session.id as i64),
            _ => error("ERR unknown subcommand or wrong number of arguments for 'client' command"),
        }
    }

    async fn info(&self, session: &mut Session<N, C>) -> Frame {
        let table = self.routing.current();
        let keys = match self.fan_out(session, Command::DbSize).await {
            Ok(replies) => replies
                .iter()
                .map(|r| if let Reply::Int(n) = r { *n } else { 0 })
                .sum::<i64>()
                .to_string(),
            Err(_) => "unknown".into(),
        };
        let text = format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nlarder_version:{}\r\nredis_mode:standalone\r\narch_bits:64\r\n\r\n# Cluster\r\nrouting_epoch:{}\r\nslot_groups:{}\r\n\r\n# Keyspace\r\ndb0:keys={keys},expires=0,avg_ttl=0\r\n",
            env!("CARGO_PKG_VERSION"),
            table.epoch(),
            table.groups().len(),
        );
        Frame::Bulk(Some(Bytes::from(text)))
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

    /// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]`: the cursor is the index of the next
    /// slot group to list; each call returns one group's matching keys.
    async fn scan(&self, session: &mut Session<N, C>, args: &[Bytes]) -> Frame {
        if args.len() < 2 || !args.len().is_multiple_of(2) {
            return arity("scan");
        }
        let Some(cursor) = std::str::from_utf8(&args[1])
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
        else {
            return error("ERR invalid cursor");
        };
        let mut pattern = Bytes::from_static(b"*");
        for option in args[2..].chunks(2) {
            match lower(&option[0]).as_str() {
                "match" => pattern = option[1].clone(),
                "count" | "type" => {}
                _ => return error("ERR syntax error"),
            }
        }
        let groups: Vec<_> = self.routing.current().groups().keys().copied().collect();
        let Some(&group) = groups.get(cursor) else {
            return Frame::Array(Some(vec![bulk("0"), Frame::Array(Some(Vec::new()))]));
        };
        let next = if cursor + 1 >= groups.len() {
            0
        } else {
            cursor + 1
        };
        match session
            .client
            .execute_in(group, Command::Keys { pattern })
            .await
        {
            Ok(Reply::Array(keys)) => Frame::Array(Some(vec![
                bulk(next.to_string()),
                Frame::Array(Some(keys.iter().map(Frame::from).collect())),
            ])),
            Ok(other) => Frame::from(&other),
            Err(e) => client_error(e, &self.config.bugs),
        }
    }

    async fn data_command(&self, session: &mut Session<N, C>, name: &str, args: &[Bytes]) -> Frame {
        let command = match Command::parse(args) {
            Ok(command) => command,
            Err(problem) => return error(unknown_with_args(problem.to_string(), args)),
        };
        match command.scope() {
            Scope::Keys => {
                let reply = session.client.execute(command).await;
                match reply {
                    Ok(Reply::Array(items))
                        if name == "hgetall" && session.protocol == Protocol::Resp3 =>
                    {
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
