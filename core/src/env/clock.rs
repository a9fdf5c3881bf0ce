use std::future::Future;
use std::time::Duration;

use futures::FutureExt;

/// Time as one process sees it.
///
/// Contract (checked by [`crate::conformance::clock_suite`]):
/// - [`Clock::now`] is monotonic: it never goes back, also across clock-skew faults.
/// - [`Clock::wall_ms`] is the process's idea of Unix time in milliseconds (for HLC stamps and
///   TTLs); it may jump forwards and backwards, and differ between processes.
/// - [`Clock::sleep`] returns once `now()` has advanced by at least the duration.
pub trait Clock: Clone + Send + Sync + 'static {
    /// Monotonic time since an arbitrary per-process origin.
    fn now(&self) -> Duration;
    /// Wall-clock time in milliseconds since the Unix epoch, as this process believes it.
    fn wall_ms(&self) -> u64;
    /// Waits until `now()` has advanced by at least `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static;
}

/// A deadline passed before the future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline elapsed")]
pub struct Elapsed;

/// Runs `future` until it completes or `duration` of `clock` time passes.
///
/// When both are ready in the same poll the future wins (`biased`), so the outcome does not
/// depend on a random branch choice.
pub async fn timeout<C: Clock, F: Future>(
    clock: &C,
    duration: Duration,
    future: F,
) -> Result<F::Output, Elapsed> {
    let sleep = clock.sleep(duration).fuse();
    let future = future.fuse();
    futures::pin_mut!(sleep, future);
    futures::select_biased! {
        output = future => Ok(output),
        () = sleep => Err(Elapsed),
    }
}
