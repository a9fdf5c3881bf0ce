//! The four lanes (the seeds' Cellar design): every client command a node serves runs in one of
//! read-fast, read-slow, write-fast or write-slow, each a bounded queue in front of a bounded
//! number of commands running at once, so a slow command (a whole 10,000-element list, KEYS
//! over a group, a 10 MB value) cannot take the node's CPU and disk from the fast ones.
//!
//! **Admission by measured cost, not by name.** A write's cost is known before it runs: its
//! encoded size (slow from [`LaneConfig::slow_write_bytes`]). A read's is known only after: the
//! node measures every reply and remembers the subjects (a key, or a group for KEYS and
//! DBSIZE) whose last reply reached [`LaneConfig::slow_read_bytes`]; a read naming one of them
//! goes to the slow lane. So `LRANGE l 0 -1` of a 3-element list stays fast, and `HGETALL` of a
//! hash that grew large moves to the slow lane from its next read on (and back once a read of
//! it is small again). The memory is bounded ([`LaneConfig::costly_subjects_max`]).
//!
//! **Adaptive worker counts.** The fast lanes are busy while a fast command runs or one ended
//! within [`LaneConfig::fast_busy_window_ms`] (a fast command runs for microseconds, so an
//! instant's view would almost always say idle). While they are, a slow lane runs
//! [`LaneConfig::slow_running_min`] commands at once and each keeps its place for a pause
//! after it ran ([`Lanes::pause_after`]), so slow work takes about
//! [`LaneConfig::slow_share_percent`] of the time; while they are idle, a slow lane runs up to
//! [`LaneConfig::slow_running_max`] with no pause. The cores go to the fast lanes when both
//! want them, and slow work still moves. A limit that rises lets queued slow commands start
//! when the next slow command ends (a slow lane with a queue always has one running). Fast
//! lanes run up to [`LaneConfig::fast_running_max`] each.
//!
//! **Bounds.** A lane queues at most [`LaneConfig::queued_max`] commands; one more is refused
//! at once (`Unavailable`, so the client may retry; nothing was done). A queued command whose
//! client went away leaves the queue, and a grant that reaches a command already gone is
//! passed on, so no slot leaks.
//!
//! Lanes only order and bound when a command runs; they never change what it answers (a read
//! still runs after its read-index round, a write still goes through the log).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use larder_core::GroupId;
use larder_core::costly::{COSTLY_REPLY_BYTES, COSTLY_SUBJECTS_MAX, CostlySubjects};
use larder_core::env::Clock;
use larder_core::kv::{Command, Reply, Scope};
use tokio::sync::oneshot;

/// One of the four lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Lane {
    ReadFast,
    ReadSlow,
    WriteFast,
    WriteSlow,
}

impl Lane {
    pub const ALL: [Lane; 4] = [
        Lane::ReadFast,
        Lane::ReadSlow,
        Lane::WriteFast,
        Lane::WriteSlow,
    ];

    /// The lane's name in metrics and errors.
    pub fn name(self) -> &'static str {
        match self {
            Lane::ReadFast => "read_fast",
            Lane::ReadSlow => "read_slow",
            Lane::WriteFast => "write_fast",
            Lane::WriteSlow => "write_slow",
        }
    }

    fn slow(self) -> bool {
        matches!(self, Lane::ReadSlow | Lane::WriteSlow)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The lanes' bounds and thresholds (part of [`crate::NodeConfig`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LaneConfig {
    /// A read whose subject's last reply was at least this large (encoded bytes) is slow.
    pub slow_read_bytes: usize,
    /// A write at least this large (its encoded command) is slow.
    pub slow_write_bytes: usize,
    /// Commands each fast lane runs at once.
    pub fast_running_max: usize,
    /// Commands a slow lane runs at once while any fast command runs (at least 1).
    pub slow_running_min: usize,
    /// Commands a slow lane runs at once while no fast command runs.
    pub slow_running_max: usize,
    /// Commands each lane holds waiting; one more is refused.
    pub queued_max: usize,
    /// Subjects remembered as costly; past this the oldest-keyed one is forgotten.
    pub costly_subjects_max: usize,
    /// While fast commands run, a slow command keeps its place for a pause after it ran, so
    /// the slow lane takes about this share (percent) of the time ([`Lanes::pause_after`]).
    pub slow_share_percent: u8,
    /// The longest such pause, in milliseconds.
    pub slow_pause_max_ms: u64,
    /// Fast lanes count as busy for this long after a fast command ends (milliseconds).
    pub fast_busy_window_ms: u64,
}

impl Default for LaneConfig {
    fn default() -> Self {
        LaneConfig {
            slow_read_bytes: COSTLY_REPLY_BYTES,
            slow_write_bytes: 1 << 20,
            fast_running_max: 1024,
            slow_running_min: 1,
            slow_running_max: 4,
            queued_max: 1024,
            costly_subjects_max: COSTLY_SUBJECTS_MAX,
            slow_share_percent: 25,
            slow_pause_max_ms: 100,
            fast_busy_window_ms: 20,
        }
    }
}

/// What a read's cost is remembered by: a key, or a whole group (KEYS, DBSIZE).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Subject {
    Key(GroupId, Bytes),
    Group(GroupId, &'static str),
}

/// The subjects of `command` on `group`.
fn subjects(group: GroupId, command: &Command) -> Vec<Subject> {
    match command.scope() {
        Scope::Group => vec![Subject::Group(group, command.name())],
        Scope::Keys => command
            .keys()
            .into_iter()
            .map(|key| Subject::Key(group, key.clone()))
            .collect(),
    }
}

/// A lane refused a command: its queue is full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the node's {lane} lane is full ({queued} commands waiting); retry later")]
pub struct LaneFull {
    pub lane: &'static str,
    pub queued: usize,
}

#[derive(Debug, Default)]
struct LaneState {
    running: usize,
    /// Waiting commands in arrival order, each with the id its [`Waiter`] removes on drop.
    queue: VecDeque<(u64, oneshot::Sender<()>)>,
    admitted: u64,
    refused: u64,
}

#[derive(Debug, Default)]
struct State {
    lanes: [LaneState; 4],
    next_waiter: u64,
    /// When a fast command last ended (the clock's `now`).
    last_fast: Option<Duration>,
}

/// One lane's figures, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneFigures {
    pub lane: Lane,
    pub running: usize,
    pub queued: usize,
    /// How many it may run now (a slow lane's limit moves with the fast lanes' load).
    pub limit: usize,
    pub admitted: u64,
    pub refused: u64,
}

/// A node's four lanes and its memory of costly subjects.
#[derive(Debug)]
pub struct Lanes<C: Clock> {
    config: LaneConfig,
    clock: C,
    state: Mutex<State>,
    costly: CostlySubjects<Subject>,
}

impl<C: Clock> Lanes<C> {
    pub fn new(config: LaneConfig, clock: C) -> Self {
        Lanes {
            costly: CostlySubjects::new(config.slow_read_bytes, config.costly_subjects_max),
            config,
            clock,
            state: Mutex::new(State::default()),
        }
    }

    /// The lane of a write whose encoded command is `size` bytes (every command a node sends
    /// through the log, also one with a session that only reads).
    pub fn classify_write(&self, size: usize) -> Lane {
        if size >= self.config.slow_write_bytes {
            Lane::WriteSlow
        } else {
            Lane::WriteFast
        }
    }

    /// The lane of a read of `command` on `group`: slow when it names a subject whose last
    /// reply was large.
    pub fn classify_read(&self, group: GroupId, command: &Command) -> Lane {
        if !self.costly.is_empty() && self.costly.any(&subjects(group, command)) {
            Lane::ReadSlow
        } else {
            Lane::ReadFast
        }
    }

    /// Records what a read of `command` on `group` cost (`reply`'s encoded size). Only reads
    /// of one subject are recorded: a pipeline's many keys share one reply.
    pub fn measured(&self, group: GroupId, command: &Command, reply: &Reply) {
        let mut subjects = subjects(group, command);
        if subjects.len() != 1 {
            return;
        }
        let subject = subjects.pop().expect("one subject");
        let subject_bytes = match &subject {
            Subject::Key(_, key) => key.len(),
            Subject::Group(..) => 0,
        };
        self.costly
            .record(subject, subject_bytes, reply.encoded_len());
    }

    /// Subjects remembered as costly now.
    pub fn costly_subjects(&self) -> usize {
        self.costly.len()
    }

    /// Whether fast commands are running or ran within [`LaneConfig::fast_busy_window_ms`]:
    /// a fast command runs for microseconds, so the lanes judge "busy" over a short window,
    /// not by who is running at this instant.
    fn fast_busy(&self, state: &State) -> bool {
        let running = state.lanes[Lane::ReadFast.index()].running
            + state.lanes[Lane::WriteFast.index()].running;
        let window = Duration::from_millis(self.config.fast_busy_window_ms);
        running > 0
            || state
                .last_fast
                .is_some_and(|at| self.clock.now().saturating_sub(at) < window)
    }

    /// How many commands `lane` may run now.
    fn limit(&self, state: &State, lane: Lane) -> usize {
        if !lane.slow() {
            return self.config.fast_running_max.max(1);
        }
        if self.fast_busy(state) {
            self.config.slow_running_min.max(1)
        } else {
            self.config
                .slow_running_max
                .max(self.config.slow_running_min)
                .max(1)
        }
    }

    /// A place in `lane` now, a place in its queue, or a refusal when the queue is full.
    /// Synchronous, so a command that finds room takes no timer and no extra wake-up.
    pub fn admit(&self, lane: Lane) -> Admission<'_, C> {
        let mut state = self.state.lock().expect("lanes lock");
        let limit = self.limit(&state, lane);
        let id = state.next_waiter;
        let queued_max = self.config.queued_max;
        let this = &mut state.lanes[lane.index()];
        if this.running < limit && this.queue.is_empty() {
            this.running += 1;
            this.admitted += 1;
            return Admission::Running(Running::new(self, lane));
        }
        if this.queue.len() >= queued_max {
            this.refused += 1;
            return Admission::Full(LaneFull {
                lane: lane.name(),
                queued: this.queue.len(),
            });
        }
        let (sender, receiver) = oneshot::channel();
        this.queue.push_back((id, sender));
        state.next_waiter += 1;
        Admission::Queued(Waiter {
            lanes: self,
            lane,
            id,
            receiver,
            done: false,
        })
    }

    /// Waits for a place in `lane` ([`Lanes::admit`], then the queue); refuses at once when
    /// its queue is full. The place is held until the returned [`Running`] is dropped.
    pub async fn enter(&self, lane: Lane) -> Result<Running<'_, C>, LaneFull> {
        match self.admit(lane) {
            Admission::Running(running) => Ok(running),
            Admission::Full(full) => Err(full),
            Admission::Queued(waiter) => waiter.granted().await,
        }
    }

    /// Starts queued commands while `lane` has room. Called with the lock held.
    fn pump(&self, state: &mut State, lane: Lane) {
        let limit = self.limit(state, lane);
        let this = &mut state.lanes[lane.index()];
        while this.running < limit {
            let Some((_, sender)) = this.queue.pop_front() else {
                break;
            };
            // A waiter leaves the queue before it drops its receiver (under this lock), so the
            // send reaches it; were it gone, the place would go to the next.
            if sender.send(()).is_ok() {
                this.running += 1;
                this.admitted += 1;
            }
        }
    }

    fn leave(&self, lane: Lane) {
        let mut state = self.state.lock().expect("lanes lock");
        let this = &mut state.lanes[lane.index()];
        this.running -= 1;
        if !lane.slow() {
            state.last_fast = Some(self.clock.now());
        }
        self.pump(&mut state, lane);
    }

    /// How long a command of `lane` that ran for `ran` keeps its place before leaving: none
    /// for a fast lane, or while no fast command runs; otherwise enough that the slow lane's
    /// share of the time is [`LaneConfig::slow_share_percent`] (at most
    /// [`LaneConfig::slow_pause_max_ms`]). Holding the place is what paces the lane: with one
    /// place while fast commands run, the next slow command starts only after the pause. The
    /// slow command's own answer waits for it too, which is the price of the slow lane.
    pub fn pause_after(&self, lane: Lane, ran: Duration) -> Option<Duration> {
        if !lane.slow() {
            return None;
        }
        let busy = self.fast_busy(&self.state.lock().expect("lanes lock"));
        let share = u32::from(self.config.slow_share_percent.clamp(1, 100));
        if !busy || share == 100 {
            return None;
        }
        let pause = ran * (100 - share) / share;
        Some(pause.min(Duration::from_millis(self.config.slow_pause_max_ms)))
    }

    /// Each lane's figures now.
    pub fn figures(&self) -> Vec<LaneFigures> {
        let state = self.state.lock().expect("lanes lock");
        Lane::ALL
            .iter()
            .map(|&lane| {
                let this = &state.lanes[lane.index()];
                LaneFigures {
                    lane,
                    running: this.running,
                    queued: this.queue.len(),
                    limit: self.limit(&state, lane),
                    admitted: this.admitted,
                    refused: this.refused,
                }
            })
            .collect()
    }
}

/// What [`Lanes::admit`] gives.
#[derive(Debug)]
pub enum Admission<'a, C: Clock> {
    Running(Running<'a, C>),
    Queued(Waiter<'a, C>),
    Full(LaneFull),
}

/// A place held in a lane; dropping it lets the next queued command run.
#[derive(Debug)]
pub struct Running<'a, C: Clock> {
    lanes: &'a Lanes<C>,
    lane: Lane,
    /// When it got its place (the lanes' clock).
    started: Duration,
}

impl<'a, C: Clock> Running<'a, C> {
    fn new(lanes: &'a Lanes<C>, lane: Lane) -> Self {
        Running {
            lanes,
            lane,
            started: lanes.clock.now(),
        }
    }

    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// Gives the place back once the command ran, after the pause [`Lanes::pause_after`] asks
    /// for what it ran (none in a fast lane). Dropping it instead gives the place back at once.
    pub async fn finish(self) {
        let ran = self.lanes.clock.now().saturating_sub(self.started);
        if let Some(pause) = self.lanes.pause_after(self.lane, ran) {
            self.lanes.clock.sleep(pause).await;
        }
    }
}

impl<C: Clock> Drop for Running<'_, C> {
    fn drop(&mut self) {
        self.lanes.leave(self.lane);
    }
}

/// A command queued in a lane. Dropped before its grant, it leaves the queue; dropped after a
/// grant it never used (its client went away at that moment), it gives the place back.
#[derive(Debug)]
pub struct Waiter<'a, C: Clock> {
    lanes: &'a Lanes<C>,
    lane: Lane,
    id: u64,
    receiver: oneshot::Receiver<()>,
    /// Granted and handed to a [`Running`]: nothing to undo.
    done: bool,
}

impl<'a, C: Clock> Waiter<'a, C> {
    /// The place, once granted.
    pub async fn granted(mut self) -> Result<Running<'a, C>, LaneFull> {
        if (&mut self.receiver).await.is_err() {
            // Cannot happen: only `pump` takes a waiter out of the queue, and it sends the
            // grant as it does. Nothing to give back then.
            self.done = true;
            return Err(LaneFull {
                lane: self.lane.name(),
                queued: 0,
            });
        }
        self.done = true;
        Ok(Running::new(self.lanes, self.lane))
    }
}

impl<C: Clock> Drop for Waiter<'_, C> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut state = self.lanes.state.lock().expect("lanes lock");
            let queue = &mut state.lanes[self.lane.index()].queue;
            if let Some(position) = queue.iter().position(|(id, _)| *id == self.id) {
                queue.remove(position);
                return;
            }
        }
        // No longer queued: `pump` took it out and sent the grant under the lock (the
        // receiver was alive until now), so the place is this waiter's to give back.
        self.lanes.leave(self.lane);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn config() -> LaneConfig {
        LaneConfig {
            slow_read_bytes: 100,
            slow_write_bytes: 1000,
            fast_running_max: 2,
            slow_running_min: 1,
            slow_running_max: 3,
            queued_max: 2,
            costly_subjects_max: 2,
            slow_share_percent: 25,
            slow_pause_max_ms: 100,
            fast_busy_window_ms: 20,
        }
    }

    /// A clock the test moves by hand (milliseconds).
    #[derive(Debug, Clone, Default)]
    struct TestClock(std::sync::Arc<std::sync::atomic::AtomicU64>);

    impl TestClock {
        fn advance_ms(&self, ms: u64) {
            self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> Duration {
            Duration::from_millis(self.0.load(std::sync::atomic::Ordering::SeqCst))
        }

        fn wall_ms(&self) -> u64 {
            0
        }

        fn sleep(&self, _: Duration) -> impl Future<Output = ()> + Send + 'static {
            std::future::pending()
        }
    }

    fn lanes() -> (Lanes<TestClock>, TestClock) {
        let clock = TestClock::default();
        (Lanes::new(config(), clock.clone()), clock)
    }

    fn figures(lanes: &Lanes<TestClock>, lane: Lane) -> LaneFigures {
        lanes.figures()[lane.index()]
    }

    #[test]
    fn a_full_lane_queues_then_refuses_and_hands_places_on_in_order() {
        let (lanes, _clock) = lanes();
        let a = lanes.enter(Lane::ReadFast).now_or_never().unwrap().unwrap();
        let b = lanes.enter(Lane::ReadFast).now_or_never().unwrap().unwrap();
        let mut c = Box::pin(lanes.enter(Lane::ReadFast));
        let mut d = Box::pin(lanes.enter(Lane::ReadFast));
        assert!((&mut c).now_or_never().is_none());
        assert!((&mut d).now_or_never().is_none());
        // The queue holds two: the third waiting command is refused at once.
        let refused = lanes.enter(Lane::ReadFast).now_or_never().unwrap();
        assert_eq!(
            refused.unwrap_err(),
            LaneFull {
                lane: "read_fast",
                queued: 2
            }
        );
        let seen = figures(&lanes, Lane::ReadFast);
        assert_eq!((seen.running, seen.queued, seen.refused), (2, 2, 1));
        drop(a);
        // The first queued gets the place; the second still waits.
        let c = (&mut c).now_or_never().unwrap().unwrap();
        assert!((&mut d).now_or_never().is_none());
        drop(b);
        let d = (&mut d).now_or_never().unwrap().unwrap();
        drop((c, d));
        let seen = figures(&lanes, Lane::ReadFast);
        assert_eq!((seen.running, seen.queued, seen.admitted), (0, 0, 4));
    }

    #[test]
    fn a_slow_lane_runs_fewer_while_fast_commands_run() {
        let (lanes, clock) = lanes();
        let fast = lanes
            .enter(Lane::WriteFast)
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(figures(&lanes, Lane::ReadSlow).limit, 1);
        let first = lanes.enter(Lane::ReadSlow).now_or_never().unwrap().unwrap();
        let mut second = Box::pin(lanes.enter(Lane::ReadSlow));
        let mut third = Box::pin(lanes.enter(Lane::ReadSlow));
        assert!((&mut second).now_or_never().is_none());
        assert!((&mut third).now_or_never().is_none());
        // The last fast command ends: the fast lanes stay busy for the window.
        drop(fast);
        assert_eq!(figures(&lanes, Lane::ReadSlow).limit, 1);
        clock.advance_ms(19);
        assert_eq!(figures(&lanes, Lane::ReadSlow).limit, 1);
        clock.advance_ms(1);
        assert_eq!(figures(&lanes, Lane::ReadSlow).limit, 3);
        // The next slow command to end lets both waiting ones start.
        drop(first);
        let second = (&mut second).now_or_never().unwrap().unwrap();
        let third = (&mut third).now_or_never().unwrap().unwrap();
        assert_eq!(figures(&lanes, Lane::ReadSlow).running, 2);
        drop((second, third));
        assert_eq!(figures(&lanes, Lane::ReadSlow).running, 0);
    }

    #[test]
    fn slow_commands_pause_while_fast_ones_run() {
        let (lanes, clock) = lanes();
        let ran = Duration::from_millis(10);
        // Nothing fast runs: no pause.
        assert_eq!(lanes.pause_after(Lane::ReadSlow, ran), None);
        let fast = lanes.enter(Lane::ReadFast).now_or_never().unwrap().unwrap();
        // A quarter of the time: three times what it ran.
        assert_eq!(
            lanes.pause_after(Lane::ReadSlow, ran),
            Some(Duration::from_millis(30))
        );
        assert_eq!(lanes.pause_after(Lane::ReadFast, ran), None);
        // Capped.
        assert_eq!(
            lanes.pause_after(Lane::WriteSlow, Duration::from_secs(1)),
            Some(Duration::from_millis(100))
        );
        // Still busy just after the last fast command, idle after the window.
        drop(fast);
        assert!(lanes.pause_after(Lane::ReadSlow, ran).is_some());
        clock.advance_ms(20);
        assert_eq!(lanes.pause_after(Lane::ReadSlow, ran), None);
    }

    #[test]
    fn finishing_a_slow_command_pauses_it_only_while_fast_ones_run() {
        let (lanes, clock) = lanes();
        let fast = lanes.enter(Lane::ReadFast).now_or_never().unwrap().unwrap();
        let slow = lanes.enter(Lane::ReadSlow).now_or_never().unwrap().unwrap();
        clock.advance_ms(10);
        // The test clock never wakes a sleep: a pause shows as a finish that does not end.
        let mut paused = Box::pin(slow.finish());
        assert!((&mut paused).now_or_never().is_none());
        assert_eq!(
            figures(&lanes, Lane::ReadSlow).running,
            1,
            "held for the pause"
        );
        drop(paused);
        assert_eq!(figures(&lanes, Lane::ReadSlow).running, 0);
        // A fast command finishes at once, and so does a slow one once the window passed.
        fast.finish()
            .now_or_never()
            .expect("no pause in a fast lane");
        clock.advance_ms(20);
        let slow = lanes.enter(Lane::ReadSlow).now_or_never().unwrap().unwrap();
        clock.advance_ms(10);
        slow.finish()
            .now_or_never()
            .expect("no pause while fast lanes are idle");
        assert_eq!(figures(&lanes, Lane::ReadSlow).running, 0);
    }

    #[test]
    fn a_command_that_goes_away_leaks_no_place() {
        let (lanes, _clock) = lanes();
        let fast = lanes.enter(Lane::ReadFast).now_or_never().unwrap().unwrap();
        let slow = lanes
            .enter(Lane::WriteSlow)
            .now_or_never()
            .unwrap()
            .unwrap();
        // Queued, then dropped before its grant: it leaves the queue.
        let mut gone = Box::pin(lanes.enter(Lane::WriteSlow));
        assert!((&mut gone).now_or_never().is_none());
        assert_eq!(figures(&lanes, Lane::WriteSlow).queued, 1);
        drop(gone);
        assert_eq!(figures(&lanes, Lane::WriteSlow).queued, 0);
        // Queued, granted, and dropped before it ran: the place comes back.
        let mut granted_then_gone = Box::pin(lanes.enter(Lane::WriteSlow));
        assert!((&mut granted_then_gone).now_or_never().is_none());
        drop(slow);
        assert_eq!(figures(&lanes, Lane::WriteSlow).running, 1);
        drop(granted_then_gone);
        assert_eq!(figures(&lanes, Lane::WriteSlow).running, 0);
        drop(fast);
        for lane in Lane::ALL {
            let seen = figures(&lanes, lane);
            assert_eq!((seen.running, seen.queued), (0, 0), "{lane:?}");
        }
    }

    #[test]
    fn reads_are_slow_by_their_subject_measured_cost_and_writes_by_size() {
        let (lanes, _clock) = lanes();
        let big = Reply::Bulk(Bytes::from(vec![b'x'; 200]));
        let small = Reply::Bulk(Bytes::from_static(b"x"));
        let get = |key: &str| Command::get(key);
        assert_eq!(lanes.classify_read(1, &get("a")), Lane::ReadFast);
        lanes.measured(1, &get("a"), &big);
        assert_eq!(lanes.classify_read(1, &get("a")), Lane::ReadSlow);
        // The same key in another group, and another key, are not costly.
        assert_eq!(lanes.classify_read(2, &get("a")), Lane::ReadFast);
        assert_eq!(lanes.classify_read(1, &get("b")), Lane::ReadFast);
        // A multi-key read naming a costly key is slow; its own reply is not recorded.
        let both = Command::MGet {
            keys: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
        };
        assert_eq!(lanes.classify_read(1, &both), Lane::ReadSlow);
        lanes.measured(1, &both, &small);
        assert_eq!(lanes.costly_subjects(), 1);
        // Small again: fast again.
        lanes.measured(1, &get("a"), &small);
        assert_eq!(lanes.classify_read(1, &get("a")), Lane::ReadFast);
        // Group-wide reads are remembered by group.
        lanes.measured(3, &Command::DbSize, &big);
        assert_eq!(lanes.classify_read(3, &Command::DbSize), Lane::ReadSlow);
        assert_eq!(lanes.classify_read(4, &Command::DbSize), Lane::ReadFast);
        // The memory is bounded: a third costly subject forgets the smallest.
        lanes.measured(1, &get("c"), &big);
        lanes.measured(1, &get("d"), &big);
        assert_eq!(lanes.costly_subjects(), 2);
        // Writes by their size.
        let set = |size: usize| Command::set("k", vec![0u8; size]);
        assert_eq!(
            lanes.classify_write(postcard::to_stdvec(&set(10)).unwrap().len()),
            Lane::WriteFast
        );
        assert_eq!(
            lanes.classify_write(postcard::to_stdvec(&set(2000)).unwrap().len()),
            Lane::WriteSlow
        );
    }
}
