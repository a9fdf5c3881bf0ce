//! `SimClock`: the [`Clock`] trait on turmoil's simulated time, with per-node clock faults.
//!
//! Fault contract: a node's clocks may drift (run fast or slow by some parts per million,
//! changing at any time), and its wall clock may sit at an offset from true time or jump
//! forwards and backwards. Monotonic time never goes back, whatever is injected; drift scales
//! how long this node's sleeps take in simulated time. A healthy cluster must stay safe under
//! all of it (Larder's reads use read-index, not leases, for exactly this reason) and live once
//! clocks are healed.

// tokio's time here is turmoil's simulated time (this module is the simulated environment),
// so the ban on tokio::time, which protects code that must take time from `Clock`, is lifted.
#![allow(clippy::disallowed_methods)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_core::env::Clock;

use crate::trace::sim_now;

/// Wall time at simulated time zero: 2026-01-01T00:00:00Z. Fixed, so runs do not depend on
/// the day they run.
pub const SIM_EPOCH_MS: u64 = 1_767_225_600_000;

/// Drift is kept above -90%: a clock that stopped (or ran backwards) is not a drifting clock.
const DRIFT_PPM_MIN: i64 = -900_000;
const DRIFT_PPM_MAX: i64 = 1_000_000;

#[derive(Debug, Clone)]
struct ClockState {
    /// Simulated time and local monotonic time at the last drift change.
    anchor_sim: Duration,
    anchor_local: Duration,
    drift_ppm: i64,
    /// Wall clock minus (epoch + local monotonic time), in ms.
    wall_offset_ms: i64,
}

impl ClockState {
    fn local_at(&self, sim: Duration) -> Duration {
        let elapsed = sim.saturating_sub(self.anchor_sim).as_nanos() as i128;
        let scaled = elapsed + elapsed * i128::from(self.drift_ppm) / 1_000_000;
        self.anchor_local + Duration::from_nanos(scaled.max(0) as u64)
    }
}

/// One node's clock. Cloning shares it: the harness keeps a clone to inject faults, and the
/// clock outlives the node's crashes (it is the machine's clock, not the process's).
#[derive(Debug, Clone)]
pub struct SimClock(Arc<Mutex<ClockState>>);

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SimClock {
    /// A true clock (no drift, no offset) that reads simulated time.
    pub fn new() -> Self {
        SimClock(Arc::new(Mutex::new(ClockState {
            anchor_sim: Duration::ZERO,
            anchor_local: Duration::ZERO,
            drift_ppm: 0,
            wall_offset_ms: 0,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.0.lock().expect("clock lock")
    }

    /// Makes the clock run fast (positive) or slow (negative) from now on. Monotonic time is
    /// re-anchored at the current reading, so it stays continuous.
    pub fn set_drift_ppm(&self, ppm: i64) {
        let sim = sim_now();
        let mut state = self.state();
        let local = state.local_at(sim);
        state.anchor_sim = sim;
        state.anchor_local = local;
        state.drift_ppm = ppm.clamp(DRIFT_PPM_MIN, DRIFT_PPM_MAX);
    }

    /// Sets the wall clock's offset from (epoch + local time), in ms.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.state().wall_offset_ms = offset_ms;
    }

    /// Moves the wall clock by `jump_ms` (negative: backwards). Monotonic time is unaffected.
    pub fn jump_wall_ms(&self, jump_ms: i64) {
        let mut state = self.state();
        state.wall_offset_ms = state.wall_offset_ms.saturating_add(jump_ms);
    }

    pub fn drift_ppm(&self) -> i64 {
        self.state().drift_ppm
    }

    /// Simulated time a local duration takes at the current drift.
    fn sim_duration(&self, local: Duration) -> Duration {
        let ppm = i128::from(self.drift_ppm());
        let nanos = local.as_nanos() as i128 * 1_000_000 / (1_000_000 + ppm);
        Duration::from_nanos(nanos.max(0) as u64)
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        self.state().local_at(sim_now())
    }

    fn wall_ms(&self) -> u64 {
        let state = self.state();
        let local_ms = state.local_at(sim_now()).as_millis() as i64;
        (SIM_EPOCH_MS as i64)
            .saturating_add(local_ms)
            .saturating_add(state.wall_offset_ms)
            .max(0) as u64
    }

    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send + 'static {
        // A fast clock's sleeps end early in simulated time, a slow one's late. When drift
        // changes during a sleep the sleep keeps the rate it started with: a bounded error.
        let start = self.now();
        let clock = self.clone();
        let first = self.sim_duration(duration);
        async move {
            tokio::time::sleep(first).await;
            // Rounding can leave the local clock a hair short of the target: top up, bounded.
            for _ in 0..4 {
                let elapsed = clock.now().saturating_sub(start);
                if elapsed >= duration {
                    return;
                }
                let rest = clock
                    .sim_duration(duration - elapsed)
                    .max(Duration::from_nanos(1));
                tokio::time::sleep(rest).await;
            }
        }
    }
}
