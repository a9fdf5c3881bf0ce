//! The ordered event trace of a simulation run and its hash.
//!
//! Every message delivered, disk operation, applied entry, fault and client reply is recorded
//! with its simulated time. Two runs of the same seed must produce the same sequence; the hash
//! proves it cheaply, and the kept events name the first divergence when it does not.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

#[derive(Default)]
struct Inner {
    hasher: Sha256,
    count: u64,
    /// Kept only when asked for (determinism check), since a long run has millions of events.
    events: Option<Vec<String>>,
    line: String,
}

/// A shared, append-only trace. Cloning shares it. Single-threaded use (the simulator runs on one
/// thread); the mutex only satisfies `Send + Sync` bounds.
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<Inner>>);

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("events", &self.len())
            .finish()
    }
}

impl Trace {
    /// A trace that keeps every event as text (for naming the first divergence).
    pub fn keeping_events() -> Self {
        let trace = Trace::default();
        trace.0.lock().expect("trace lock").events = Some(Vec::new());
        trace
    }

    /// Records one event by `actor` at simulated time `at`.
    pub fn record(&self, at: Duration, actor: &str, event: std::fmt::Arguments<'_>) {
        let mut inner = self.0.lock().expect("trace lock");
        let inner = &mut *inner;
        inner.line.clear();
        let _ = write!(inner.line, "{:>12} {actor} {event}", at.as_micros());
        inner.hasher.update(inner.line.as_bytes());
        inner.hasher.update(b"\n");
        inner.count += 1;
        if let Some(events) = inner.events.as_mut() {
            events.push(inner.line.clone());
        }
    }

    pub fn len(&self) -> u64 {
        self.0.lock().expect("trace lock").count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hex SHA-256 of every event so far, in order.
    pub fn hash(&self) -> String {
        let inner = self.0.lock().expect("trace lock");
        let digest = inner.hasher.clone().finalize();
        digest
            .iter()
            .fold(String::with_capacity(64), |mut out, byte| {
                let _ = write!(out, "{byte:02x}");
                out
            })
    }

    /// The kept events, if this trace keeps them.
    pub fn events(&self) -> Option<Vec<String>> {
        self.0.lock().expect("trace lock").events.clone()
    }
}

/// Records an event on a [`Trace`]: `trace_event!(trace, at, actor, "fmt", args..)`.
#[macro_export]
macro_rules! trace_event {
    ($trace:expr, $at:expr, $actor:expr, $($fmt:tt)+) => {
        $trace.record($at, $actor, format_args!($($fmt)+))
    };
}

thread_local! {
    /// Simulated time as the harness last saw it, for code that runs between turmoil steps
    /// (fault injection), where turmoil has no current host to ask.
    static HARNESS_NOW: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// Records the simulated time the harness has reached (call after every step).
pub fn set_harness_now(now: Duration) {
    HARNESS_NOW.with(|cell| cell.set(now));
}

/// Simulated time since the start of the run: turmoil's clock inside a host, the harness's
/// last step outside one.
/// Whether the caller runs inside a simulated host (or the harness driving one).
pub fn in_simulation() -> bool {
    turmoil::sim_elapsed().is_some()
}

pub fn sim_now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_else(|| HARNESS_NOW.with(std::cell::Cell::get))
}
