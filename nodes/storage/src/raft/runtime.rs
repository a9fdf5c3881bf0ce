//! openraft's async runtime: tokio, with the one source of randomness openraft uses (election
//! and first-heartbeat jitter) drawn from a seed Larder controls.
//!
//! Under turmoil every host runs on one thread and tokio's time is simulated, so tokio itself is
//! deterministic; openraft's stock runtime, however, draws election timeouts from the OS-seeded
//! `rand::rng()`, which would make two runs of one seed elect different leaders. Here the draws
//! come from a process-wide counter seeded by [`seed_raft_rng`]: the simulator seeds it from the
//! run seed, real servers from the OS at start-up.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::AsyncRuntime;
use openraft::OptionalSend;
use openraft_rt_tokio::TokioRuntime;
use rand10::SeedableRng;
use rand10::rngs::SmallRng;

static RAFT_RNG_STATE: AtomicU64 = AtomicU64::new(0x6c61_7264_6572);

/// Sets the seed of openraft's randomness for this process. The simulator calls it at the start
/// of every run so a run depends on its seed alone.
pub fn seed_raft_rng(seed: u64) {
    RAFT_RNG_STATE.store(seed, Ordering::SeqCst);
}

fn next_seed() -> u64 {
    // One step of SplitMix64 per draw: a single atomic add keeps it cheap and lock-free.
    let state = RAFT_RNG_STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::SeqCst);
    larder_core::env::derive_seed(state, 0)
}

/// tokio for everything, seeded randomness, and no real threads for `spawn_blocking`.
pub struct LarderRuntime {
    inner: TokioRuntime,
}

impl std::fmt::Debug for LarderRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LarderRuntime").finish()
    }
}

impl AsyncRuntime for LarderRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SmallRng::seed_from_u64(next_seed())
    }

    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn new(threads: usize) -> Self {
        LarderRuntime {
            inner: TokioRuntime::new(threads),
        }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.inner.block_on(future)
    }

    /// Runs `f` inline: simulated code must not start real threads, and Larder hands openraft no
    /// blocking work.
    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        std::future::ready(Ok(f()))
    }
}
