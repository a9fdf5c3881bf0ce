//! `SimNet`: the [`Net`] trait on turmoil's simulated TCP, with seeded message faults.
//!
//! Fault contract: on top of turmoil's latency, a shared [`NetFaults`] table can block any
//! directed link (full and one-way partitions), drop requests or responses, deliver a request
//! twice, and add a seeded extra delay per message (which reorders concurrent messages). A
//! dropped or blocked message looks to the caller like a real network's: the call times out at
//! its deadline, never earlier. A healthy cluster must tolerate every one of these; the
//! liveness phase heals them all and requires service to resume.
//!
//! Every request is one turmoil TCP connection carrying one frame each way:
//! `u32 length (big-endian) ++ u64 sender id ++ payload`.

// tokio's time here is turmoil's simulated time (this module is the simulated environment),
// so the ban on tokio::time, which protects code that must take time from `Clock`, is lifted.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::{Handler, Net, NetError, Rng, SeededRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::{TcpListener, TcpStream};

use crate::trace::{Trace, sim_now};

/// The port every simulated process listens on.
pub const SIM_PORT: u16 = 7000;
pub use larder_core::env::FRAME_BYTES_MAX;

/// The turmoil host name of process `id`.
pub fn host_name(id: NodeId) -> String {
    format!("n{id}")
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
}

/// What happens to one call, decided up front from the caller's seeded stream so the decision
/// does not depend on when the response arrives.
struct Fate {
    drop_request: bool,
    drop_response: bool,
    duplicate: bool,
    delay: Duration,
}

/// One process's simulated network endpoint.
#[derive(Clone)]
pub struct SimNet {
    id: NodeId,
    faults: NetFaults,
    rng: Arc<Mutex<SeededRng>>,
    trace: Trace,
}

impl SimNet {
    /// `seed` drives this endpoint's fault draws; derive it from the run seed, the node id and
    /// the incarnation so a restarted node does not replay its old draws.
    pub fn new(id: NodeId, faults: NetFaults, seed: u64, trace: Trace) -> Self {
        SimNet {
            id,
            faults,
            rng: Arc::new(Mutex::new(SeededRng::new(seed))),
            trace,
        }
    }

    fn fate(&self) -> Fate {
        let state = self.faults.state();
        let mut rng = self.rng.lock().expect("net rng lock");
        Fate {
            drop_request: rng.chance(state.loss),
            drop_response: rng.chance(state.loss),
            duplicate: rng.chance(state.duplicate),
            delay: Duration::from_millis(rng.range(0, state.delay_ms_max.saturating_add(1))),
        }
    }

    fn actor(&self) -> String {
        host_name(self.id)
    }

    async fn exchange(&self, to: NodeId, request: &Bytes) -> Result<Bytes, NetError> {
        let address = (host_name(to), SIM_PORT);
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| NetError::Unreachable {
                to,
                reason: e.to_string(),
            })?;
        write_frame(&mut stream, self.id, request)
            .await
            .map_err(|e| NetError::Io {
                to,
                reason: e.to_string(),
            })?;
        let (_, response) = read_frame(&mut stream).await.map_err(|e| NetError::Io {
            to,
            reason: e.to_string(),
        })?;
        Ok(response)
    }
}

async fn write_frame(stream: &mut TcpStream, from: NodeId, payload: &[u8]) -> std::io::Result<()> {
    let length =
        u32::try_from(payload.len() + 8).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut frame = Vec::with_capacity(payload.len() + 12);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&from.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await?;
    stream.flush().await
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<(NodeId, Bytes)> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await?;
    let length = u32::from_be_bytes(header) as usize;
    if !(8..=FRAME_BYTES_MAX).contains(&length) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {length} bytes"),
        ));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    let from = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
    Ok((from, Bytes::from(body).slice(8..)))
}

/// FNV-1a of a payload: enough to tell two runs' messages apart in the trace.
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Net for SimNet {
    fn local_id(&self) -> NodeId {
        self.id
    }

    async fn call(&self, to: NodeId, request: Bytes, timeout: Duration) -> Result<Bytes, NetError> {
        if request.len() + 8 > FRAME_BYTES_MAX {
            return Err(NetError::FrameTooLarge {
                size: request.len(),
                limit: FRAME_BYTES_MAX,
            });
        }
        let timed_out = NetError::Timeout {
            to,
            timeout_ms: timeout.as_millis() as u64,
        };
        let fate = self.fate();
        let attempt = async {
            if fate.drop_request || self.faults.is_blocked(self.id, to) {
                crate::trace_event!(
                    self.trace,
                    sim_now(),
                    &self.actor(),
                    "drop request to n{to}"
                );
                return std::future::pending().await;
            }
            if !fate.delay.is_zero() {
                tokio::time::sleep(fate.delay).await;
            }
            if fate.duplicate {
                crate::trace_event!(
                    self.trace,
                    sim_now(),
                    &self.actor(),
                    "duplicate request to n{to}"
                );
                let copy = self.clone();
                let request = request.clone();
                tokio::spawn(async move {
                    // The duplicate's response is discarded, as a transport retransmission's
                    // would be; only its effect on the receiver matters.
                    let _ = copy.exchange(to, &request).await;
                });
            }
            let response = self.exchange(to, &request).await?;
            if fate.drop_response || self.faults.is_blocked(to, self.id) {
                crate::trace_event!(
                    self.trace,
                    sim_now(),
                    &self.actor(),
                    "drop response from n{to}"
                );
                return std::future::pending().await;
            }
            Ok(response)
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(timed_out),
        }
    }

    async fn serve<H: Handler>(&self, handler: H) -> Result<(), NetError> {
        let listener = TcpListener::bind(("0.0.0.0", SIM_PORT))
            .await
            .map_err(|e| NetError::Listen {
                reason: e.to_string(),
            })?;
        loop {
            let (mut stream, _) = listener.accept().await.map_err(|e| NetError::Listen {
                reason: e.to_string(),
            })?;
            let handler = handler.clone();
            let trace = self.trace.clone();
            let actor = self.actor();
            let id = self.id;
            tokio::spawn(async move {
                let Ok((from, request)) = read_frame(&mut stream).await else {
                    return;
                };
                crate::trace_event!(
                    trace,
                    sim_now(),
                    &actor,
                    "recv from n{from} {}B #{:016x}",
                    request.len(),
                    fingerprint(&request)
                );
                let response = handler.handle(from, request).await;
                // The caller may have given up; a failed reply is its timeout, not ours.
                let _ = write_frame(&mut stream, id, &response).await;
            });
        }
    }
}

/// A turmoil listener as the proxy's client-facing [`larder_core::env::Listener`].
pub struct SimListener(pub turmoil::net::TcpListener);

impl larder_core::env::Listener for SimListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<turmoil::net::TcpStream> {
        let (stream, _) = self.0.accept().await?;
        Ok(stream)
    }
}
