//! The proxy's connected clients, as `CLIENT LIST`, `CLIENT INFO` and `CLIENT KILL` see them.
//!
//! Each connection registers a [`ClientState`] for as long as it is served ([`Registered`]
//! takes it out again), so the registry holds at most `max_clients` entries. A connection
//! keeps its own figures up to date with plain stores into its state (no lock shared with
//! other connections on the path of a command, apart from the short one of its last command's
//! name); `CLIENT LIST` reads every state under the registry's lock.
//!
//! `CLIENT KILL` marks the states it matches and wakes their connections, which close as soon
//! as they next wait for input or while they wait (a blocked command included), after the
//! reply they are writing, as Redis closes a killed client asynchronously.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder_core::env::Endpoints;
use larder_core::resp::Frame;
use tokio::sync::Notify;

use crate::{error, lower, text};

/// One connection as the registry sees it.
#[derive(Debug)]
pub struct ClientState {
    pub id: u64,
    pub endpoints: Option<Endpoints>,
    /// When it connected (the proxy's clock).
    created: Duration,
    /// `CLIENT SETNAME`.
    name: Mutex<Option<Bytes>>,
    /// The last command it ran (`client|list` for a container's subcommand); `None` before
    /// the first.
    cmd: Mutex<Option<&'static str>>,
    /// When its last command started, in ms of the proxy's clock (`idle`).
    last_ms: AtomicU64,
    /// Commands queued in its `MULTI`; -1 outside one.
    multi: AtomicI64,
    /// Waiting in a blocking command.
    blocked: AtomicBool,
    /// After `READONLY` (Redis Cluster's read-from-replica mode; the proxy serves every slot
    /// itself, so it only shows here).
    readonly: AtomicBool,
    /// RESP version (2 or 3).
    resp: AtomicU8,
    /// Its buffers, as last noted ([`ClientState::buffers`]): bytes of requests read and not
    /// yet answered, the input buffer's capacity and its peak use, replies waiting to be
    /// written and their buffer's capacity.
    qbuf: AtomicUsize,
    qbuf_capacity: AtomicUsize,
    qbuf_peak: AtomicUsize,
    pending: AtomicUsize,
    pending_capacity: AtomicUsize,
    /// Bytes of the running command's arguments (`argv-mem`) and of the commands its `MULTI`
    /// queued (`multi-mem`).
    argv_bytes: AtomicUsize,
    multi_bytes: AtomicUsize,
    killed: AtomicBool,
    kill: Notify,
}

impl ClientState {
    fn new(id: u64, endpoints: Option<Endpoints>, now: Duration) -> Self {
        ClientState {
            id,
            endpoints,
            created: now,
            name: Mutex::new(None),
            cmd: Mutex::new(None),
            last_ms: AtomicU64::new(millis(now)),
            multi: AtomicI64::new(-1),
            blocked: AtomicBool::new(false),
            readonly: AtomicBool::new(false),
            resp: AtomicU8::new(2),
            qbuf: AtomicUsize::new(0),
            qbuf_capacity: AtomicUsize::new(0),
            qbuf_peak: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            pending_capacity: AtomicUsize::new(0),
            argv_bytes: AtomicUsize::new(0),
            multi_bytes: AtomicUsize::new(0),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
        }
    }

    pub fn name(&self) -> Option<Bytes> {
        self.name.lock().expect("client name lock").clone()
    }

    pub fn set_name(&self, name: Option<Bytes>) {
        *self.name.lock().expect("client name lock") = name;
    }

    /// A command started at `now` (`cmd`: its table name, `None` for one the proxy does not
    /// answer, which leaves the last one shown).
    pub fn ran(&self, cmd: Option<&'static str>, now: Duration) {
        if cmd.is_some() {
            *self.cmd.lock().expect("client cmd lock") = cmd;
        }
        self.last_ms.store(millis(now), Ordering::Relaxed);
    }

    pub fn set_multi(&self, queued: Option<usize>) {
        let queued = queued.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.multi.store(queued, Ordering::Relaxed);
    }

    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    pub fn set_readonly(&self, readonly: bool) {
        self.readonly.store(readonly, Ordering::Relaxed);
    }

    pub fn set_resp(&self, version: u8) {
        self.resp.store(version, Ordering::Relaxed);
    }

    /// The connection's buffers now: `input` read and not yet answered (in a buffer of
    /// `input_capacity`), `output` replies waiting to be written (`output_capacity`).
    pub fn buffers(
        &self,
        input: usize,
        input_capacity: usize,
        output: usize,
        output_capacity: usize,
    ) {
        self.qbuf.store(input, Ordering::Relaxed);
        self.qbuf_capacity.store(input_capacity, Ordering::Relaxed);
        self.qbuf_peak.fetch_max(input, Ordering::Relaxed);
        self.pending.store(output, Ordering::Relaxed);
        self.pending_capacity
            .store(output_capacity, Ordering::Relaxed);
    }

    /// Bytes of the running command's arguments, and of the commands queued in its `MULTI`.
    pub fn set_command_bytes(&self, argv: usize, queued: usize) {
        self.argv_bytes.store(argv, Ordering::Relaxed);
        self.multi_bytes.store(queued, Ordering::Relaxed);
    }

    /// Whether `CLIENT KILL` took it.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Resolves once `CLIENT KILL` took it (at once if it already did).
    pub async fn killed(&self) {
        loop {
            let notified = self.kill.notified();
            tokio::pin!(notified);
            // Registered before the check, so a kill between the two still wakes it.
            notified.as_mut().enable();
            if self.is_killed() {
                return;
            }
            notified.await;
        }
    }

    fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.notify_waiters();
    }

    /// Its `CLIENT LIST` line (without the newline), at `now`.
    pub fn line(&self, now: Duration) -> String {
        let address = |a: Option<SocketAddr>| a.map_or_else(String::new, |a| a.to_string());
        let name = self
            .name()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .unwrap_or_default();
        let multi = self.multi.load(Ordering::Relaxed);
        let mut flags = String::new();
        if multi >= 0 {
            flags.push('x');
        }
        if self.blocked.load(Ordering::Relaxed) {
            flags.push('b');
        }
        if self.readonly.load(Ordering::Relaxed) {
            flags.push('r');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        let now_ms = millis(now);
        let get = |figure: &AtomicUsize| figure.load(Ordering::Relaxed);
        let (qbuf, capacity) = (get(&self.qbuf), get(&self.qbuf_capacity));
        let (argv, queued) = (get(&self.argv_bytes), get(&self.multi_bytes));
        let pending = get(&self.pending);
        // Redis's output is a fixed buffer (`obl`) and a list of blocks (`oll`, `omem`); the
        // proxy's is one buffer, shown as the fixed one.
        let total = capacity + get(&self.pending_capacity) + argv + queued;
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db=0 sub=0 psub=0 \
             ssub=0 multi={} qbuf={qbuf} qbuf-free={} argv-mem={argv} multi-mem={queued} \
             rbs={capacity} rbp={} obl={pending} oll=0 omem=0 tot-mem={total} events={} cmd={} \
             user=default redir=-1 resp={}",
            self.id,
            address(self.endpoints.map(|e| e.peer)),
            address(self.endpoints.map(|e| e.local)),
            self.endpoints.and_then(|e| e.fd).unwrap_or(-1),
            name,
            now.saturating_sub(self.created).as_secs(),
            now_ms.saturating_sub(self.last_ms.load(Ordering::Relaxed)) / 1000,
            flags,
            multi,
            capacity.saturating_sub(qbuf),
            get(&self.qbuf_peak),
            if pending > 0 { "rw" } else { "r" },
            self.cmd.lock().expect("client cmd lock").unwrap_or("NULL"),
            self.resp.load(Ordering::Relaxed),
        )
    }
}

fn millis(at: Duration) -> u64 {
    u64::try_from(at.as_millis()).unwrap_or(u64::MAX)
}

/// Every connection being served.
#[derive(Debug, Default)]
pub struct Clients {
    states: Mutex<BTreeMap<u64, Arc<ClientState>>>,
}

/// A connection's place in [`Clients`]; leaves it when dropped.
pub struct Registered<'a> {
    clients: &'a Clients,
    pub state: Arc<ClientState>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.clients
            .states
            .lock()
            .expect("clients lock")
            .remove(&self.state.id);
    }
}

impl Clients {
    pub fn register(&self, id: u64, endpoints: Option<Endpoints>, now: Duration) -> Registered<'_> {
        let state = Arc::new(ClientState::new(id, endpoints, now));
        self.states
            .lock()
            .expect("clients lock")
            .insert(id, state.clone());
        Registered {
            clients: self,
            state,
        }
    }

    fn matching(&self, filter: &Filter, me: u64) -> Vec<Arc<ClientState>> {
        self.states
            .lock()
            .expect("clients lock")
            .values()
            .filter(|state| filter.matches(state, me))
            .cloned()
            .collect()
    }
}

/// What `CLIENT LIST` and `CLIENT KILL` select.
#[derive(Debug, Default)]
struct Filter {
    /// Any of these ids (empty: any).
    ids: Vec<u64>,
    /// A client type no connection of the proxy has (`master`, `replica`, `pubsub`).
    none: bool,
    addr: Option<String>,
    laddr: Option<String>,
    /// `SKIPME yes` (the default of `CLIENT KILL`'s filter form).
    skip_me: bool,
}

impl Filter {
    fn matches(&self, state: &ClientState, me: u64) -> bool {
        let same = |want: &Option<String>, have: Option<SocketAddr>| match want {
            None => true,
            Some(want) => have.is_some_and(|have| have.to_string() == *want),
        };
        !self.none
            && (self.ids.is_empty() || self.ids.contains(&state.id))
            && same(&self.addr, state.endpoints.map(|e| e.peer))
            && same(&self.laddr, state.endpoints.map(|e| e.local))
            && !(self.skip_me && state.id == me)
    }

    /// `TYPE t`: every connection of the proxy is a normal client.
    fn client_type(&mut self, kind: &[u8]) -> Result<(), Frame> {
        match lower(kind).as_str() {
            "normal" => Ok(()),
            "master" | "replica" | "slave" | "pubsub" => {
                self.none = true;
                Ok(())
            }
            other => Err(error(format!("ERR Unknown client type '{other}'"))),
        }
    }
}

/// `CLIENT LIST [TYPE type] [ID id ...]`; `args` from `LIST` on.
pub fn list(clients: &Clients, args: &[Bytes], now: Duration) -> Frame {
    let mut filter = Filter::default();
    let mut rest = args.get(1..).unwrap_or_default();
    while let Some(option) = rest.first() {
        match (lower(option).as_str(), rest.get(1)) {
            ("type", Some(kind)) => {
                if let Err(refusal) = filter.client_type(kind) {
                    return refusal;
                }
                rest = &rest[2..];
            }
            ("id", Some(_)) => {
                for id in &rest[1..] {
                    match parse_u64(id) {
                        Some(id) if id > 0 => filter.ids.push(id),
                        _ => return error("ERR Invalid client ID"),
                    }
                }
                rest = &[];
            }
            _ => return error("ERR syntax error"),
        }
    }
    if filter.none {
        return text(String::new());
    }
    let mut out = String::new();
    for state in clients.matching(&filter, 0) {
        out.push_str(&state.line(now));
        out.push('\n');
    }
    text(out)
}

/// `CLIENT INFO`: the caller's own line.
pub fn info(state: &ClientState, now: Duration) -> Frame {
    text(format!("{}\n", state.line(now)))
}

/// `CLIENT KILL ip:port` (the old form: `+OK` or an error) or `CLIENT KILL <filter> <value>
/// ...` (the count of clients killed); `args` from `KILL` on, `me` the caller.
pub fn kill(clients: &Clients, args: &[Bytes], me: u64) -> Frame {
    let rest = args.get(1..).unwrap_or_default();
    if let [addr] = rest {
        let filter = Filter {
            addr: Some(String::from_utf8_lossy(addr).into_owned()),
            ..Filter::default()
        };
        let found = clients.matching(&filter, me);
        return match found.first() {
            Some(state) => {
                state.kill();
                Frame::Simple("OK".into())
            }
            None => error("ERR No such client"),
        };
    }
    if rest.is_empty() || rest.len() % 2 != 0 {
        return error("ERR syntax error");
    }
    let mut filter = Filter {
        skip_me: true,
        ..Filter::default()
    };
    for pair in rest.chunks_exact(2) {
        let value = &pair[1];
        match lower(&pair[0]).as_str() {
            "id" => match parse_u64(value) {
                Some(id) if id > 0 => filter.ids = vec![id],
                _ => return error("ERR client-id should be greater than 0"),
            },
            "type" => {
                if let Err(refusal) = filter.client_type(value) {
                    return refusal;
                }
            }
            "user" => {
                // The proxy has one user, `default`, which every connection is.
                if value.as_ref() != b"default" {
                    return error(format!(
                        "ERR No such user '{}'",
                        String::from_utf8_lossy(value)
                    ));
                }
            }
            "addr" => filter.addr = Some(String::from_utf8_lossy(value).into_owned()),
            "laddr" => filter.laddr = Some(String::from_utf8_lossy(value).into_owned()),
            "skipme" => match lower(value).as_str() {
                "yes" => filter.skip_me = true,
                "no" => filter.skip_me = false,
                _ => return error("ERR syntax error"),
            },
            _ => return error("ERR syntax error"),
        }
    }
    let found = clients.matching(&filter, me);
    for state in &found {
        state.kill();
    }
    Frame::Integer(i64::try_from(found.len()).unwrap_or(i64::MAX))
}

fn parse_u64(arg: &[u8]) -> Option<u64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split_args as args;

    fn at(peer: &str, local: &str) -> Option<Endpoints> {
        Some(Endpoints {
            peer: peer.parse().unwrap(),
            local: local.parse().unwrap(),
            fd: Some(9),
        })
    }

    fn lines(frame: Frame) -> Vec<String> {
        match frame {
            Frame::Verbatim { text, .. } => String::from_utf8(text.to_vec())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect(),
            other => panic!("not text: {other:?}"),
        }
    }

    #[test]
    fn a_client_is_listed_while_registered_with_its_figures() {
        let clients = Clients::default();
        let now = Duration::from_secs(100);
        let one = clients.register(1, at("10.0.0.9:5000", "10.0.0.1:6380"), now);
        {
            let two = clients.register(2, None, now);
            two.state.set_name(Some(Bytes::from_static(b"worker")));
            two.state
                .ran(Some("client|list"), now + Duration::from_secs(3));
            two.state.set_multi(Some(2));
            two.state.set_resp(3);
            two.state.buffers(26, 1024, 7, 100);
            two.state.buffers(0, 1024, 7, 100);
            two.state.set_command_bytes(10, 30);
            let listed = lines(list(&clients, &args("LIST"), now + Duration::from_secs(5)));
            assert_eq!(listed.len(), 2);
            assert!(
                listed[0].starts_with(
                    "id=1 addr=10.0.0.9:5000 laddr=10.0.0.1:6380 fd=9 name= age=5 idle=5 flags=N "
                ),
                "{}",
                listed[0]
            );
            assert!(listed[0].ends_with(
                "multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 \
                 omem=0 tot-mem=0 events=r cmd=NULL user=default redir=-1 resp=2"
            ));
            assert!(
                listed[1].starts_with("id=2 addr= laddr= fd=-1 name=worker age=5 idle=2 flags=x "),
                "{}",
                listed[1]
            );
            assert!(listed[1].contains(" multi=2 ") && listed[1].contains(" cmd=client|list "));
            assert!(
                listed[1].contains(
                    " qbuf=0 qbuf-free=1024 argv-mem=10 multi-mem=30 rbs=1024 rbp=26 obl=7 oll=0 \
                     omem=0 tot-mem=1164 events=rw "
                ),
                "{}",
                listed[1]
            );
            assert!(listed[1].ends_with("resp=3"));
            let only = lines(list(&clients, &args("LIST ID 2"), now));
            assert_eq!(only.len(), 1);
            assert!(only[0].starts_with("id=2 "));
            assert!(lines(list(&clients, &args("LIST TYPE pubsub"), now)).is_empty());
            assert_eq!(
                lines(list(&clients, &args("LIST TYPE normal"), now)).len(),
                2
            );
        }
        // The second connection ended: it left the registry.
        assert_eq!(lines(list(&clients, &args("LIST"), now)).len(), 1);
        drop(one);
        assert!(lines(list(&clients, &args("LIST"), now)).is_empty());
    }

    #[test]
    fn bad_list_and_kill_arguments_get_redis_errors() {
        let clients = Clients::default();
        let now = Duration::ZERO;
        let cases = [
            (
                list(&clients, &args("LIST TYPE bogus"), now),
                "ERR Unknown client type 'bogus'",
            ),
            (
                list(&clients, &args("LIST ID 0"), now),
                "ERR Invalid client ID",
            ),
            (
                list(&clients, &args("LIST ID x"), now),
                "ERR Invalid client ID",
            ),
            (list(&clients, &args("LIST FOO"), now), "ERR syntax error"),
            (
                kill(&clients, &args("KILL 1.2.3.4:5"), 1),
                "ERR No such client",
            ),
            (
                kill(&clients, &args("KILL ID abc"), 1),
                "ERR client-id should be greater than 0",
            ),
            (kill(&clients, &args("KILL FOO bar"), 1), "ERR syntax error"),
            // Three arguments are the old form: `ID` is taken for an address.
            (kill(&clients, &args("KILL ID"), 1), "ERR No such client"),
            (
                kill(&clients, &args("KILL ID 1 TYPE"), 1),
                "ERR syntax error",
            ),
            (
                kill(&clients, &args("KILL USER bob"), 1),
                "ERR No such user 'bob'",
            ),
            (
                kill(&clients, &args("KILL SKIPME maybe"), 1),
                "ERR syntax error",
            ),
        ];
        for (frame, want) in cases {
            assert_eq!(frame, Frame::Error(want.into()));
        }
    }

    #[test]
    fn kill_takes_what_its_filters_match_and_skips_the_caller_unless_told() {
        let clients = Clients::default();
        let now = Duration::ZERO;
        let me = clients.register(1, at("127.0.0.1:4001", "127.0.0.1:6380"), now);
        let other = clients.register(2, at("127.0.0.1:4002", "127.0.0.1:6380"), now);
        let third = clients.register(3, at("127.0.0.1:4003", "127.0.0.1:6381"), now);
        assert_eq!(kill(&clients, &args("KILL ID 99"), 1), Frame::Integer(0));
        assert_eq!(
            kill(&clients, &args("KILL TYPE pubsub"), 1),
            Frame::Integer(0)
        );
        // The caller matches LADDR too, but SKIPME defaults to yes.
        assert_eq!(
            kill(&clients, &args("KILL LADDR 127.0.0.1:6380"), 1),
            Frame::Integer(1)
        );
        assert!(other.state.is_killed() && !me.state.is_killed() && !third.state.is_killed());
        assert_eq!(
            kill(&clients, &args("KILL 127.0.0.1:4003"), 1),
            Frame::Simple("OK".into())
        );
        assert!(third.state.is_killed());
        assert_eq!(
            kill(&clients, &args("KILL USER default SKIPME no ID 1"), 1),
            Frame::Integer(1)
        );
        assert!(me.state.is_killed());
    }

    #[tokio::test]
    async fn a_kill_wakes_the_connection_waiting_for_it() {
        let clients = Arc::new(Clients::default());
        let registered = clients.register(7, None, Duration::ZERO);
        let state = registered.state.clone();
        let waiting = tokio::spawn(async move { state.killed().await });
        tokio::task::yield_now().await;
        assert_eq!(kill(&clients, &args("KILL ID 7"), 1), Frame::Integer(1));
        // A kill that did not wake it would hang here (nextest's timeout ends the run).
        waiting.await.expect("task");
        // Already killed: resolves at once.
        registered.state.killed().await;
    }
}
