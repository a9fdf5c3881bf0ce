//! `SimNet`: the [`Net`] trait on turmoil's simulated TCP, with seeded message faults.
//!
//! Fault contract: on top of turmoil's latency, a shared [`NetFaults`] table can block any
//! directed link (full and one-way partitions), drop requests or responses, deliver a request
//! twice, add a seeded extra delay per request (which reorders concurrent messages), and add a
//! fixed delay to every message crossing one direction of one link (an asymmetric slow link).
//!
//! A duplicate is a fault no production transport makes (`StreamNet` writes a request once,
//! over TCP, and never re-sends it), kept because it tests what a re-delivered write must not
//! do (a group's session table). It must not also break what a caller may conclude from an
//! answer: a client write refused with `NotLeader`, `Unavailable` or `StaleEpoch` was certainly
//! not applied *by that delivery*, and the client reports the write failed once every replica
//! refused it. A second copy still in flight can be applied later (it reaches a node that has
//! become leader meanwhile), so the refusal of a duplicated client write is withheld and the
//! call times out instead: the caller learns what a caller of a re-sending transport could,
//! that the outcome is unknown ([`withholds_refusal`]).
//! A dropped or blocked message looks to the caller like a real network's: the call times out
//! at its deadline, never earlier. A healthy cluster must tolerate every one of these; the
//! liveness phase heals them all and requires service to resume.
//!
//! The faults are a message-level layer around the production network: below it is
//! [`StreamNet`]`<`[`SimTransport`]`>`, the same framing, multiplexing, write coalescing and
//! frame limit as `TcpNet`, on one persistent turmoil TCP connection per (caller, peer). Each
//! call's fate is drawn up front from the caller's seeded stream; the caller applies it (a
//! blocked or lost request is never written, a lost response is discarded on arrival, a slow
//! link's delay is waited before the request or after the response), so the connection
//! itself stays healthy. Crashes and pauses act on the connections themselves (turmoil closes
//! a crashed host's sockets; a pause holds their bytes).

// tokio's time here is turmoil's simulated time (this module is the simulated environment),
// so the ban on tokio::time, which protects code that must take time from `Clock`, is lifted.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{Handler, Net, NetError, Rng, SeededRng, derive_seed};
use larder_protocol::{AdminRequest, ClientRequest, ClientResponse, Request};
use larder_transport::{ClusterAuth, ClusterKey, NetStats, StreamNet, Transport};
use tokio::time::Instant;
use turmoil::net::{TcpListener, TcpStream};

use crate::trace::{Trace, sim_now};

/// The port every simulated process listens on for its peers.
pub const SIM_PORT: u16 = 7000;
pub use larder_core::env::MESSAGE_BYTES_MAX;

/// The turmoil host name of process `id`.
pub fn host_name(id: NodeId) -> String {
    format!("n{id}")
}

/// The simulated byte-stream transport: turmoil TCP, node `id` reached at
/// [`host_name`]`(id)`:[`SIM_PORT`]. A host that is not registered fails to connect at once
/// (`NotFound`); a registered one nobody listens on refuses the connection one network latency
/// later. turmoil closes a crashed host's sockets (its peers read EOF or a reset) and resets
/// any segment that reaches a socket the host no longer has (after a restart).
#[derive(Debug, Clone, Copy, Default)]
pub struct SimTransport;

impl Transport for SimTransport {
    type Stream = TcpStream;
    type Listener = SimListener;
    /// A port on this host (all its addresses).
    type Address = u16;

    async fn connect(&self, to: NodeId) -> std::io::Result<TcpStream> {
        TcpStream::connect((host_name(to), SIM_PORT)).await
    }

    async fn bind(&self, port: u16) -> std::io::Result<SimListener> {
        Ok(SimListener(TcpListener::bind(("0.0.0.0", port)).await?))
    }
}

/// Message-level faults shared by every [`SimNet`] of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetFaultState {
    /// Directed links `(from, to)` on which nothing is delivered.
    pub blocked: BTreeSet<(NodeId, NodeId)>,
    /// Probability that a request, and separately its response, is lost.
    pub loss: f64,
    /// Probability that a request is delivered twice.
    pub duplicate: f64,
    /// Upper bound of the seeded extra delay added to each request.
    pub delay_ms_max: u64,
    /// Directed links `(from, to)` on which every message (a request from `from`, or a
    /// response `from` sends back) takes this much longer: asymmetric slow links.
    pub slow: BTreeMap<(NodeId, NodeId), u64>,
    /// Migration steps delivered again, late (`Fault::LateSteps`): `(rate, lag_ms_max)`.
    /// `HealMessages` leaves it; only the heal point ends it.
    pub late_steps: Option<(f64, u64)>,
}

/// Handle to the shared fault table.
#[derive(Debug, Clone, Default)]
pub struct NetFaults(Arc<Mutex<NetFaultState>>);

impl NetFaults {
    pub fn update(&self, change: impl FnOnce(&mut NetFaultState)) {
        change(&mut self.0.lock().expect("net faults lock"));
    }

    pub fn state(&self) -> NetFaultState {
        self.0.lock().expect("net faults lock").clone()
    }

    fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.0
            .lock()
            .expect("net faults lock")
            .blocked
            .contains(&(from, to))
    }

    /// The slow-link delay of direction `from -> to` now.
    fn slow(&self, from: NodeId, to: NodeId) -> Duration {
        let state = self.0.lock().expect("net faults lock");
        Duration::from_millis(state.slow.get(&(from, to)).copied().unwrap_or(0))
    }
}

/// What happens to one call, decided up front from the caller's seeded stream so the decision
/// does not depend on when the response arrives.
struct Fate {
    drop_request: bool,
    drop_response: bool,
    /// `Some(lag)`: the request is delivered a second time, `lag` after the first copy.
    duplicate: Option<Duration>,
    delay: Duration,
    /// A migration step (counted only while late steps are on).
    step: bool,
    /// A migration step to deliver again after the next one is answered, or this long after
    /// the first copy if none is by then (`Fault::LateSteps`).
    late: Option<Duration>,
}

/// The longest a duplicate copy of a request lags the first, in milliseconds. A copy that
/// arrives at once meets the first still being served (a storage node refuses it then:
/// `larder_storage::unchanged`); one that arrives after the first was answered is the case
/// a group's session table exists for. Copies delivered together only (before stop 50) let
/// the planted bug `no-session-dedup` pass every cluster swarm seed of 1..=50.
const DUPLICATE_LAG_MS_MAX: u64 = 200;

/// How long a late copy of a migration step ([`Fate::late`]) waits for its (discarded) answer.
const LATE_STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a held migration step looks whether a later one was answered.
const LATE_STEP_POLL: Duration = Duration::from_millis(5);

/// The migration steps one endpoint sent, per destination: how many, and the latest one
/// answered (for [`Fault::LateSteps`](larder_faults::Fault::LateSteps)).
#[derive(Debug, Clone, Default)]
struct Steps(Arc<Mutex<BTreeMap<NodeId, (u64, u64)>>>);

impl Steps {
    /// Counts a step sent to `to`; its number.
    fn sent(&self, to: NodeId) -> u64 {
        let mut steps = self.0.lock().expect("steps lock");
        let entry = steps.entry(to).or_default();
        entry.0 += 1;
        entry.0
    }

    fn answered(&self, to: NodeId, step: u64) {
        let mut steps = self.0.lock().expect("steps lock");
        let entry = steps.entry(to).or_default();
        entry.1 = entry.1.max(step);
    }

    /// Whether a step to `to` sent after step `step` was answered.
    fn answered_after(&self, to: NodeId, step: u64) -> bool {
        self.0
            .lock()
            .expect("steps lock")
            .get(&to)
            .is_some_and(|&(_, answered)| answered > step)
    }
}

/// The seed stream of an endpoint's handshake nonces.
const NONCE_STREAM: u64 = 0x6e6f_6e63;

/// The cluster key of every simulated process: the simulator tests the handshake and the
/// tags, not secrecy, so one fixed secret serves every run.
pub fn simulation_key() -> ClusterKey {
    ClusterKey::from_secret(b"larder simulated cluster secret").expect("long enough")
}

/// One process's simulated network endpoint: the fault layer around the production
/// [`StreamNet`] on [`SimTransport`].
#[derive(Clone)]
pub struct SimNet {
    id: NodeId,
    faults: NetFaults,
    rng: Arc<Mutex<SeededRng>>,
    trace: Trace,
    stream: StreamNet<SimTransport>,
    steps: Steps,
}

impl SimNet {
    /// `seed` drives this endpoint's fault draws; derive it from the run seed, the node id and
    /// the incarnation so a restarted node does not replay its old draws.
    pub fn new(id: NodeId, faults: NetFaults, seed: u64, trace: Trace) -> Self {
        Self::with_key(id, faults, seed, trace, simulation_key())
    }

    /// An endpoint that authenticates with `key` (the adversarial tests' outsiders; every
    /// simulated process of the cluster uses [`simulation_key`]). Its handshake nonces come
    /// from `seed` too, so a run replays its handshakes byte for byte.
    pub fn with_key(
        id: NodeId,
        faults: NetFaults,
        seed: u64,
        trace: Trace,
        key: ClusterKey,
    ) -> Self {
        let auth = ClusterAuth::new(key, derive_seed(seed, NONCE_STREAM));
        SimNet {
            id,
            faults,
            rng: Arc::new(Mutex::new(SeededRng::new(seed))),
            trace,
            stream: StreamNet::new(id, SimTransport, auth),
            steps: Steps::default(),
        }
    }

    /// What this endpoint's listener refused (forged handshakes and frames).
    pub fn stats(&self) -> &NetStats {
        self.stream.stats()
    }

    fn fate(&self, request: &[u8]) -> Fate {
        let state = self.faults.state();
        let mut rng = self.rng.lock().expect("net rng lock");
        let drop_request = rng.chance(state.loss);
        let drop_response = rng.chance(state.loss);
        let duplicate = rng.chance(state.duplicate);
        let delay = Duration::from_millis(rng.range(0, state.delay_ms_max.saturating_add(1)));
        // Drawn only for a duplicate, so runs without duplication keep their draws.
        let duplicate =
            duplicate.then(|| Duration::from_millis(rng.range(0, DUPLICATE_LAG_MS_MAX + 1)));
        // Decoded and drawn only while late steps are on, and for a step only.
        let step = state.late_steps.is_some() && is_migration_step(request);
        let late = state
            .late_steps
            .filter(|&(rate, _)| step && rng.chance(rate))
            .map(|(_, lag_ms_max)| Duration::from_millis(lag_ms_max));
        Fate {
            drop_request,
            drop_response,
            duplicate,
            delay,
            step,
            late,
        }
    }

    fn actor(&self) -> String {
        host_name(self.id)
    }

    /// A lost message: traces `event`; the caller then waits out the returned sleep to its
    /// call's `deadline`, as it would over a real network.
    fn lose(&self, deadline: Instant, event: std::fmt::Arguments<'_>) -> tokio::time::Sleep {
        crate::trace_event!(self.trace, sim_now(), &self.actor(), "{event}");
        tokio::time::sleep_until(deadline)
    }

    /// Waits `delay`, or fails at `deadline` if that comes first.
    async fn wait(&self, delay: Duration, deadline: Instant) -> Result<(), ()> {
        if delay.is_zero() {
            return Ok(());
        }
        if Instant::now() + delay >= deadline {
            tokio::time::sleep_until(deadline).await;
            return Err(());
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// FNV-1a of a payload: enough to tell two runs' messages apart in the trace.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether `request` is a step a center asks of a group during a slot migration that changes
/// it: a page of records, a tracking start or end, an ownership.
fn is_migration_step(request: &[u8]) -> bool {
    matches!(
        larder_protocol::decode_request(request),
        Ok(Request::Admin(
            AdminRequest::IngestRecords(_)
                | AdminRequest::TrackSlots(_)
                | AdminRequest::UntrackSlots(_)
                | AdminRequest::SetOwnedSlots(_)
        ))
    )
}

/// Whether `request` is a client's write (or a session registration): a request whose
/// refusal the client takes as proof that nothing happened.
fn is_client_write(request: &[u8]) -> bool {
    matches!(
        larder_protocol::decode_request(request),
        Ok(Request::Client(ClientRequest {
            session: Some(_),
            ..
        }))
    )
}

/// Whether the answer to a duplicated client write must reach the caller as a timeout: it is
/// a refusal (nothing done by this copy), which the other copy may yet contradict. A `Reply`
/// passes (the write was applied; the copy must be deduplicated), as does `Indeterminate`.
fn withholds_refusal(response: &[u8]) -> bool {
    matches!(
        larder_protocol::decode_response::<ClientRequest>(response),
        Ok(ClientResponse::NotLeader { .. }
            | ClientResponse::Unavailable { .. }
            | ClientResponse::StaleEpoch { .. })
    )
}

/// The serving side's trace: every request handed to the node's handler.
#[derive(Clone)]
struct TracedHandler<H> {
    handler: H,
    trace: Trace,
    actor: String,
}

impl<H: Handler> Handler for TracedHandler<H> {
    async fn handle(&self, from: NodeId, request: Bytes) -> Bytes {
        crate::trace_event!(
            self.trace,
            sim_now(),
            &self.actor,
            "recv from n{from} {}B #{:016x}",
            request.len(),
            fingerprint(&request)
        );
        self.handler.handle(from, request).await
    }
}

impl Net for SimNet {
    fn local_id(&self) -> NodeId {
        self.id
    }

    async fn call(&self, to: NodeId, request: Bytes, timeout: Duration) -> Result<Bytes, NetError> {
        if request.len() > MESSAGE_BYTES_MAX {
            return Err(NetError::MessageTooLarge {
                size: request.len(),
                limit: MESSAGE_BYTES_MAX,
            });
        }
        let fate = self.fate(&request);
        let step = fate.step.then(|| self.steps.sent(to));
        if let (Some(step), Some(lag)) = (step, fate.late) {
            self.deliver_late(to, step, lag, request.clone());
        }
        let response = self.call_once(to, request, timeout, fate).await;
        if let (Some(step), Ok(_)) = (step, &response) {
            self.steps.answered(to, step);
        }
        response
    }

    async fn serve<H: Handler>(&self, handler: H) -> Result<(), NetError> {
        let listener = SimTransport
            .bind(SIM_PORT)
            .await
            .map_err(|e| NetError::Listen {
                reason: e.to_string(),
            })?;
        let traced = TracedHandler {
            handler,
            trace: self.trace.clone(),
            actor: self.actor(),
        };
        self.stream.serve_on(listener, traced).await
    }
}

impl SimNet {
    /// Delivers migration step number `step` to `to` again once a later step to `to` has
    /// been answered, or `lag` from now if none has by then. Its answer is discarded: only
    /// its effect on the receiver matters.
    fn deliver_late(&self, to: NodeId, step: u64, lag: Duration, request: Bytes) {
        crate::trace_event!(
            self.trace,
            sim_now(),
            &self.actor(),
            "late copy of migration step {step} to n{to}, within {} ms",
            lag.as_millis()
        );
        let (stream, steps, trace, actor) = (
            self.stream.clone(),
            self.steps.clone(),
            self.trace.clone(),
            self.actor(),
        );
        tokio::spawn(async move {
            let until = Instant::now() + lag;
            while Instant::now() < until && !steps.answered_after(to, step) {
                tokio::time::sleep(LATE_STEP_POLL).await;
            }
            crate::trace_event!(trace, sim_now(), &actor, "late step {step} to n{to} sent");
            let _ = stream.call(to, request, LATE_STEP_TIMEOUT).await;
        });
    }

    /// One call with its fate decided: lost, delayed, duplicated, as `fate` says.
    async fn call_once(
        &self,
        to: NodeId,
        request: Bytes,
        timeout: Duration,
        fate: Fate,
    ) -> Result<Bytes, NetError> {
        let deadline = Instant::now() + timeout;
        let timed_out = NetError::Timeout {
            to,
            timeout_ms: timeout.as_millis() as u64,
        };
        if fate.drop_request || self.faults.is_blocked(self.id, to) {
            let lost = self.lose(deadline, format_args!("drop request to n{to}"));
            lost.await;
            return Err(timed_out);
        }
        let outbound = fate.delay + self.faults.slow(self.id, to);
        if self.wait(outbound, deadline).await.is_err() {
            return Err(timed_out);
        }
        if let Some(lag) = fate.duplicate {
            crate::trace_event!(
                self.trace,
                sim_now(),
                &self.actor(),
                "duplicate request to n{to} in {} ms",
                lag.as_millis()
            );
            let (stream, request) = (self.stream.clone(), request.clone());
            tokio::spawn(async move {
                tokio::time::sleep(lag).await;
                // The duplicate's response is discarded, as a transport retransmission's
                // would be; only its effect on the receiver matters.
                let left = deadline.saturating_duration_since(Instant::now());
                if !left.is_zero() {
                    let _ = stream.call(to, request, left).await;
                }
            });
        }
        // Decoded only for a duplicated call, the one case that needs it.
        let duplicated_write = fate.duplicate.is_some() && is_client_write(&request);
        let left = deadline.saturating_duration_since(Instant::now());
        let response = self.stream.call(to, request, left).await?;
        if duplicated_write && withholds_refusal(&response) {
            let lost = self.lose(
                deadline,
                format_args!("withhold refusal of a duplicated write from n{to}"),
            );
            lost.await;
            return Err(timed_out);
        }
        if fate.drop_response || self.faults.is_blocked(to, self.id) {
            let lost = self.lose(deadline, format_args!("drop response from n{to}"));
            lost.await;
            return Err(timed_out);
        }
        if self
            .wait(self.faults.slow(to, self.id), deadline)
            .await
            .is_err()
        {
            return Err(timed_out);
        }
        Ok(response)
    }
}

/// A turmoil listener: [`SimTransport`]'s, which is also the proxy's client-facing
/// [`larder_core::env::Listener`].
pub struct SimListener(pub TcpListener);

impl larder_core::env::Listener for SimListener {
    type Stream = TcpStream;

    async fn accept(&mut self) -> std::io::Result<TcpStream> {
        let (stream, _) = self.0.accept().await?;
        Ok(stream)
    }

    async fn accept_from(
        &mut self,
    ) -> std::io::Result<(TcpStream, Option<larder_core::env::Endpoints>)> {
        let (stream, peer) = self.0.accept().await?;
        let endpoints = stream
            .local_addr()
            .ok()
            .map(|local| larder_core::env::Endpoints {
                peer,
                local,
                fd: None,
            });
        Ok((stream, endpoints))
    }
}

#[cfg(test)]
mod tests {
    use larder_core::kv::{Command, Reply};
    use larder_protocol::{SessionSeq, encode};

    use super::*;

    fn request(session: Option<SessionSeq>) -> Bytes {
        encode(&Request::Client(ClientRequest {
            group: 1,
            command: Command::DbSize,
            session,
            epoch: 0,
        }))
    }

    #[test]
    fn only_a_client_write_refused_is_withheld() {
        let write = SessionSeq { session: 7, seq: 3 };
        assert!(is_client_write(&request(Some(write))));
        assert!(is_client_write(&request(Some(SessionSeq::REGISTER))));
        assert!(!is_client_write(&request(None)), "a read");
        assert!(!is_client_write(b"not a request"));

        let refusals = [
            ClientResponse::NotLeader { leader_hint: None },
            ClientResponse::Unavailable {
                reason: "no quorum".into(),
            },
            ClientResponse::StaleEpoch { epoch: 4 },
        ];
        for refusal in refusals {
            assert!(withholds_refusal(&encode(&refusal)), "{refusal:?}");
        }
        let answers = [
            ClientResponse::Reply(Reply::Ok),
            ClientResponse::Indeterminate {
                reason: "leader changed".into(),
            },
        ];
        for answer in answers {
            assert!(!withholds_refusal(&encode(&answer)), "{answer:?}");
        }
    }
}
