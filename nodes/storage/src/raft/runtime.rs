//! openraft's async runtime: tokio tasks and channels, with time and randomness taken from the
//! environment of the node that runs the Raft group.
//!
//! openraft reads time (`Instant::now`, `sleep`, `timeout`) and randomness (election timeouts,
//! the tick's first phase) through static functions of its [`AsyncRuntime`], with no handle to
//! pass a node's environment through. The environment therefore travels in a tokio task-local,
//! the *raft context* ([`RaftContext`]): the node's clock, type-erased, and a seed stream of its
//! own for that group.
//!
//! - `open_group` (`node.rs`) runs `Raft::new` inside [`RaftContext::scope`]. `Raft::new` builds
//!   the engine (its first election-timeout draw) and spawns every task openraft has (RaftCore,
//!   state-machine worker, tick, step-down watcher, I/O forwarder; RaftCore later spawns the
//!   replication, heartbeat, vote and snapshot tasks).
//! - [`LarderRuntime::spawn`] runs the spawned future inside the spawner's context, so every one
//!   of those tasks sees the node's clock and seed stream.
//!
//! Under simulation the node's clock is `SimClock`, so drift reaches openraft's election and
//! heartbeat timers (a slow node campaigns late, a fast one early), and the draws depend on the
//! node's [`Env::seed`] and the group alone, not on what else ran in the process.
//!
//! Outside any context (openraft API calls made from Larder's own tasks, tests on a bare
//! runtime) the runtime falls back to tokio's time and a fixed seed; see [`fallback`] for why
//! that is safe.

use std::fmt;
use std::future::Future;
use std::io;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use larder_core::GroupId;
use larder_core::env::{Clock, Elapsed, Env, derive_seed};
use openraft::AsyncRuntime;
use openraft::OptionalSend;
use openraft_rt_tokio::TokioRuntime;
use rand10::SeedableRng;
use rand10::rngs::SmallRng;

/// The stream of [`Env::seed`] openraft's randomness is derived from (ASCII "raft").
const RAFT_SEED_STREAM: u64 = 0x7261_6674;

/// The seed of `group`'s Raft randomness on a node whose environment seed is `env_seed`: one
/// stream per group, so adding a group does not shift another group's draws.
pub fn group_seed(env_seed: u64, group: GroupId) -> u64 {
    derive_seed(derive_seed(env_seed, RAFT_SEED_STREAM), group)
}

/// A boxed sleep: what [`ErasedClock::sleep`] returns and [`LarderRuntime`]'s `Sleep`.
pub type BoxSleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A [`Clock`] without its type, so one task-local can hold any environment's clock.
pub trait ErasedClock: Send + Sync + 'static {
    /// [`Clock::now`]: monotonic time since the clock's origin.
    fn now(&self) -> Duration;
    /// [`Clock::sleep`], boxed.
    fn sleep(&self, duration: Duration) -> BoxSleep;
}

impl<C: Clock> ErasedClock for C {
    fn now(&self) -> Duration {
        Clock::now(self)
    }

    fn sleep(&self, duration: Duration) -> BoxSleep {
        Box::pin(Clock::sleep(self, duration))
    }
}

/// What openraft's tasks take time and randomness from: one node's clock and one group's seed
/// stream. Shared (`Arc`) by every task of the group; the draw counter is the only state.
pub struct RaftContext {
    clock: Arc<dyn ErasedClock>,
    seed: u64,
    /// Draws so far: draw `n` seeds its generator with `derive_seed(seed, n)`. The group's tasks
    /// share it, so the sequence follows their scheduling order, which is deterministic under
    /// simulation (one thread per host, seeded scheduling).
    draws: AtomicU64,
}

impl fmt::Debug for RaftContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftContext")
            .field("now", &self.clock.now())
            .field("seed", &self.seed)
            .field("draws", &self.draws.load(Ordering::Relaxed))
            .finish()
    }
}

tokio::task_local! {
    static RAFT_CONTEXT: Arc<RaftContext>;
}

impl RaftContext {
    /// A context reading `clock` and drawing from `seed`.
    pub fn new<C: Clock>(clock: C, seed: u64) -> Arc<Self> {
        Arc::new(RaftContext {
            clock: Arc::new(clock),
            seed,
            draws: AtomicU64::new(0),
        })
    }

    /// The context of `group` on the node whose environment is `env`.
    pub fn for_group<E: Env>(env: &E, group: GroupId) -> Arc<Self> {
        Self::new(env.clock().clone(), group_seed(env.seed(), group))
    }

    /// Runs `future` with this context: openraft calls made while it is polled, and the tasks
    /// they spawn through [`LarderRuntime::spawn`], use this clock and seed stream.
    pub fn scope<F: Future>(
        self: &Arc<Self>,
        future: F,
    ) -> tokio::task::futures::TaskLocalFuture<Arc<RaftContext>, F> {
        RAFT_CONTEXT.scope(Arc::clone(self), future)
    }

    /// The context of the running task, if it has one.
    pub fn current() -> Option<Arc<Self>> {
        RAFT_CONTEXT.try_with(Arc::clone).ok()
    }

    fn next_rng_seed(&self) -> u64 {
        derive_seed(self.seed, self.draws.fetch_add(1, Ordering::Relaxed))
    }
}

/// Time and randomness outside any [`RaftContext`].
///
/// Which openraft code runs outside a context: only what openraft does on the *caller's* task
/// inside the `Raft` methods Larder calls from its own tasks (request handlers, the admin
/// service, the harness). In openraft 0.10.0-alpha.37 those paths are:
///
/// - `Raft::handle_transfer_leader` (served for a peer's `TransferLeader` RPC): when this node
///   is the named successor it waits up to `election_timeout_min` for its log to flush
///   (`now() + d`, then `timeout_at`).
/// - Every `Raft` call whose reply channel closes without an answer (`recv_msg`,
///   `get_core_stop_error_bounded`): `timeout(1 s)` waiting for RaftCore to stop.
/// - `Raft::wait(Some(t))` and `wait_for_recovery` (`now`, `sleep`); `add_learner(.., true)` and
///   `ensure_linearizable` wait with no timeout and arm no timer. Larder uses neither timed form.
/// - `Display`/`Serialize` of `RaftMetrics` (`last_quorum_acked.elapsed()`, `Instant::now`),
///   e.g. the `tracing::debug!` inside `Wait`.
/// - With the `runtime-stats` feature (off here), `client_write` stamps `proposed_at`.
///
/// None of them draws randomness, and none hands an instant it made to RaftCore or takes one
/// from it to sleep on: each deadline is made and awaited on the same task, in the same
/// (fallback) time base, so tokio's time is a faithful bound there (under turmoil it is the
/// simulated time, so the simulation stays deterministic). The only mixing is the metrics
/// display, which subtracts a RaftCore instant from a fallback `now()`: [`LarderInstant`]'s
/// arithmetic saturates, so that prints a meaningless age instead of panicking.
pub mod fallback {
    // This is the one place openraft's runtime reads tokio's own clock: code outside a raft
    // context (see above) has no node clock to read. Under turmoil tokio's time is simulated.
    #![allow(clippy::disallowed_methods)]

    use std::sync::OnceLock;
    use std::time::Duration;

    use rand10::SeedableRng;
    use rand10::rngs::SmallRng;

    use super::BoxSleep;

    /// Fallback instants start here, a year past zero, and move with tokio's clock from the
    /// first fallback reading. The head room keeps instants from another tokio runtime of the
    /// process (turmoil builds one per host start, each with its own paused clock) from
    /// clamping at zero when they read earlier than the first reading.
    pub const EPOCH: Duration = Duration::from_secs(365 * 24 * 3600);

    /// Seed of every generator handed out outside a context. openraft draws only from RaftCore
    /// and `Raft::new` (inside a context); a fixed seed keeps any other draw reproducible.
    pub const RNG_SEED: u64 = 0x6c61_7264_6572;

    /// Where fallback time is measured from. It anchors the fallback time base only: nothing
    /// reads a fallback instant's absolute value, only differences on one task.
    static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();

    pub(super) fn now() -> Duration {
        let now = tokio::time::Instant::now();
        let origin = *ORIGIN.get_or_init(|| now);
        match now.checked_duration_since(origin) {
            Some(since) => EPOCH.saturating_add(since),
            None => EPOCH.saturating_sub(origin.saturating_duration_since(now)),
        }
    }

    pub(super) fn sleep(duration: Duration) -> BoxSleep {
        Box::pin(tokio::time::sleep(duration))
    }

    pub(super) fn rng() -> SmallRng {
        SmallRng::seed_from_u64(RNG_SEED)
    }
}

fn now() -> Duration {
    match RaftContext::current() {
        Some(context) => context.clock.now(),
        None => fallback::now(),
    }
}

fn sleep(duration: Duration) -> BoxSleep {
    match RaftContext::current() {
        Some(context) => context.clock.sleep(duration),
        None => fallback::sleep(duration),
    }
}

fn sleep_until(deadline: LarderInstant) -> BoxSleep {
    // One lookup for both readings, so the remaining time is measured on the clock that sleeps.
    match RaftContext::current() {
        Some(context) => {
            let remaining = deadline.0.saturating_sub(context.clock.now());
            context.clock.sleep(remaining)
        }
        None => fallback::sleep(deadline.0.saturating_sub(fallback::now())),
    }
}

/// openraft's `Instant`: the monotonic time of the context's clock ([`Clock::now`]), or of the
/// fallback outside a context. All arithmetic saturates: an instant of one time base can meet
/// one of the other (see [`fallback`]), and openraft subtracts instants freely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LarderInstant(Duration);

impl LarderInstant {
    /// The reading this instant stands for.
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl Add<Duration> for LarderInstant {
    type Output = Self;
    fn add(self, rhs: Duration) -> Self {
        LarderInstant(self.0.saturating_add(rhs))
    }
}

impl AddAssign<Duration> for LarderInstant {
    fn add_assign(&mut self, rhs: Duration) {
        *self = *self + rhs;
    }
}

impl Sub<Duration> for LarderInstant {
    type Output = Self;
    fn sub(self, rhs: Duration) -> Self {
        LarderInstant(self.0.saturating_sub(rhs))
    }
}

impl SubAssign<Duration> for LarderInstant {
    fn sub_assign(&mut self, rhs: Duration) {
        *self = *self - rhs;
    }
}

impl Sub<LarderInstant> for LarderInstant {
    type Output = Duration;
    fn sub(self, rhs: LarderInstant) -> Duration {
        self.0.saturating_sub(rhs.0)
    }
}

impl openraft::Instant for LarderInstant {
    fn now() -> Self {
        LarderInstant(now())
    }
}

/// `future` bounded by `sleep`. When both are ready in one poll the future wins, as in
/// [`larder_core::env::timeout`], so the outcome does not depend on which is checked first.
pub struct Timeout<F> {
    // Boxed so `Timeout` is `Unpin` without a pin projection (the crate forbids `unsafe`).
    future: Pin<Box<F>>,
    sleep: BoxSleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(output) = this.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match this.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// tokio tasks and channels; time and randomness from the task's [`RaftContext`]; no real
/// threads for `spawn_blocking`.
pub struct LarderRuntime {
    inner: TokioRuntime,
}

impl fmt::Debug for LarderRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LarderRuntime").finish()
    }
}

impl AsyncRuntime for LarderRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = BoxSleep;
    type Instant = LarderInstant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = SmallRng;

    /// Spawns `future` on tokio, inside the spawner's context if it has one: this is how every
    /// openraft task inherits the context `Raft::new` ran in.
    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        match RaftContext::current() {
            Some(context) => TokioRuntime::spawn(RAFT_CONTEXT.scope(context, future)),
            None => TokioRuntime::spawn(future),
        }
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout {
            future: Box::pin(future),
            sleep: sleep(duration),
        }
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout {
            future: Box::pin(future),
            sleep: sleep_until(deadline),
        }
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    /// A generator seeded with the context's next draw, or [`fallback::RNG_SEED`] outside one.
    fn thread_rng() -> Self::ThreadLocalRng {
        match RaftContext::current() {
            Some(context) => SmallRng::seed_from_u64(context.next_rng_seed()),
            None => fallback::rng(),
        }
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

#[cfg(test)]
mod tests {
    use std::future::{pending, ready};
    use std::sync::Mutex;

    use futures::FutureExt;
    use openraft::Instant as _;
    use rand10::Rng as _;
    use tokio::sync::watch;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// A clock that moves only when told to, and records every sleep it is asked for.
    #[derive(Clone)]
    struct ManualClock(Arc<ManualState>);

    struct ManualState {
        now: watch::Sender<Duration>,
        sleeps: Mutex<Vec<Duration>>,
    }

    impl ManualClock {
        fn new(start: Duration) -> Self {
            ManualClock(Arc::new(ManualState {
                now: watch::Sender::new(start),
                sleeps: Mutex::default(),
            }))
        }

        fn advance(&self, by: Duration) {
            self.0.now.send_modify(|now| *now += by);
        }

        fn sleeps(&self) -> Vec<Duration> {
            self.0.sleeps.lock().expect("sleeps lock").clone()
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Duration {
            *self.0.now.borrow()
        }

        fn wall_ms(&self) -> u64 {
            0
        }

        fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send + 'static {
            self.0.sleeps.lock().expect("sleeps lock").push(duration);
            let until = Clock::now(self) + duration;
            let mut now = self.0.now.subscribe();
            async move {
                let _ = now.wait_for(|now| *now >= until).await;
            }
        }
    }

    /// Polls once (with a no-op waker): `Some` when ready.
    fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
        future.now_or_never()
    }

    #[tokio::test]
    async fn now_reads_the_context_clock_and_falls_back_outside() {
        let clock = ManualClock::new(5 * SECOND);
        let context = RaftContext::new(clock.clone(), 1);
        context
            .scope(async {
                assert_eq!(LarderInstant::now().as_duration(), 5 * SECOND);
                clock.advance(2 * SECOND);
                assert_eq!(LarderInstant::now().as_duration(), 7 * SECOND);
            })
            .await;
        // Outside the scope: tokio's time, a year past zero.
        assert!(LarderInstant::now().as_duration() > fallback::EPOCH / 2);
        assert!(RaftContext::current().is_none());
    }

    #[tokio::test]
    async fn sleeps_and_timeouts_go_through_the_context_clock() {
        let clock = ManualClock::new(SECOND);
        let context = RaftContext::new(clock.clone(), 1);
        context
            .scope(async {
                let mut sleep = LarderRuntime::sleep(3 * SECOND);
                assert!(poll_once(&mut sleep).is_none());
                clock.advance(2 * SECOND);
                assert!(poll_once(&mut sleep).is_none());
                clock.advance(SECOND);
                assert!(poll_once(&mut sleep).is_some());

                let deadline = LarderInstant::now() + Duration::from_millis(500);
                let mut until = LarderRuntime::sleep_until(deadline);
                assert!(poll_once(&mut until).is_none());
                clock.advance(Duration::from_millis(500));
                assert!(poll_once(&mut until).is_some());

                let mut timeout = LarderRuntime::timeout(SECOND, pending::<()>());
                assert!(poll_once(&mut timeout).is_none());
                clock.advance(SECOND);
                assert_eq!(poll_once(&mut timeout), Some(Err(Elapsed)));

                // A deadline already past and a ready future: the future wins.
                let past = LarderInstant::now() - SECOND;
                let mut won = LarderRuntime::timeout_at(past, ready(7));
                assert_eq!(poll_once(&mut won), Some(Ok(7)));
                let mut lost = LarderRuntime::timeout_at(past, pending::<u8>());
                assert_eq!(poll_once(&mut lost), Some(Err(Elapsed)));
            })
            .await;
        let ms = Duration::from_millis;
        assert_eq!(
            clock.sleeps(),
            vec![3 * SECOND, ms(500), SECOND, ms(0), ms(0)],
            "every sleep and timeout asked the context's clock"
        );
    }

    #[tokio::test]
    async fn spawn_carries_the_context_into_the_task_and_its_children() {
        let clock = ManualClock::new(42 * SECOND);
        let context = RaftContext::new(clock.clone(), 1);
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (child, grandchild, late) = context
            .scope(async {
                let late = LarderRuntime::spawn(async {
                    let _ = wait.await;
                    LarderInstant::now().as_duration()
                });
                let (child, grandchild) = LarderRuntime::spawn(async {
                    let grandchild =
                        LarderRuntime::spawn(async { LarderInstant::now().as_duration() });
                    (
                        LarderInstant::now().as_duration(),
                        grandchild.await.expect("grandchild"),
                    )
                })
                .await
                .expect("child");
                (child, grandchild, late)
            })
            .await;
        assert_eq!((child, grandchild), (42 * SECOND, 42 * SECOND));
        // The task keeps the context after the scope that spawned it has finished.
        clock.advance(SECOND);
        go.send(()).expect("late task waits");
        assert_eq!(late.await.expect("late"), 43 * SECOND);
        // Spawned outside any context, a task has none.
        let bare = LarderRuntime::spawn(async { RaftContext::current().is_none() });
        assert!(bare.await.expect("bare"));
    }

    /// The election timeouts openraft would draw (`Config::new_rand_election_timeout`), and one
    /// more draw from a spawned task, in a context with `seed`.
    async fn draws(seed: u64) -> Vec<u64> {
        let config = openraft::Config {
            election_timeout_min: 400,
            election_timeout_max: 800,
            ..Default::default()
        };
        let context = RaftContext::new(ManualClock::new(Duration::ZERO), seed);
        context
            .scope(async move {
                let mut draws: Vec<u64> = (0..8)
                    .map(|_| config.new_rand_election_timeout::<LarderRuntime>())
                    .collect();
                let spawned =
                    LarderRuntime::spawn(async { LarderRuntime::thread_rng().next_u64() % 1000 });
                draws.push(spawned.await.expect("spawned"));
                draws
            })
            .await
    }

    #[tokio::test]
    async fn draws_are_reproducible_per_seed_and_differ_across_seeds() {
        let first = draws(group_seed(7, 1)).await;
        assert_eq!(
            first,
            draws(group_seed(7, 1)).await,
            "same seed, same draws"
        );
        assert_ne!(first, draws(group_seed(7, 2)).await, "another group");
        assert_ne!(first, draws(group_seed(8, 1)).await, "another node");
        assert!(first[..8].iter().all(|t| (400..800).contains(t)));
        assert!(
            first.windows(2).any(|w| w[0] != w[1]),
            "successive draws vary: {first:?}"
        );
    }

    #[tokio::test]
    async fn mixed_time_bases_saturate_instead_of_panicking() {
        let fallback = LarderInstant::now();
        let context = RaftContext::new(ManualClock::new(SECOND), 1);
        let scoped = context.scope(async { LarderInstant::now() }).await;
        assert_eq!(scoped - fallback, Duration::ZERO);
        assert!(fallback - scoped > Duration::ZERO);
        assert_eq!(scoped.saturating_duration_since(fallback), Duration::ZERO);
        // How the metrics display mixes them: a RaftCore instant's age read outside a context,
        // and the other way round.
        let _ = scoped.elapsed();
        assert_eq!(
            context.scope(async { fallback.elapsed() }).await,
            Duration::ZERO
        );
        let mut far = scoped + Duration::MAX;
        far += SECOND;
        assert_eq!(far.as_duration(), Duration::MAX);
        let mut early = scoped - Duration::MAX;
        early -= SECOND;
        assert_eq!(early.as_duration(), Duration::ZERO);
    }

    /// openraft's own conformance suite for runtimes, on the fallback path (its tasks run
    /// outside any context, on a real multi-threaded tokio runtime).
    #[test]
    fn openraft_runtime_suite_passes_outside_a_context() {
        openraft::testing::runtime::Suite::<LarderRuntime>::test_all();
    }
}
