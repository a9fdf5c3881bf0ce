//! Coalescing: the single commands of different connections, sent together as one pipeline.
//!
//! A client that waits for each reply (`redis-benchmark -P 1`, most request/response code) sends
//! the proxy one command at a time, and each went to its group as a request of its own: one
//! log entry per write (one append on every replica, one session row), one request per read.
//! Pipelined, the same commands cost a third to a quarter of the CPU each (issue 13: `-c 3 -P
//! 16` against `-c 50 -P 1`, 80 against 159 µs per SET and 16 against 41 µs per GET). So a
//! connection's command that runs alone is queued here, and whichever waiting connection
//! finds a free **runner** (a [`ClusterClient`] of the coalescer's own, at most
//! `ProxyConfig::coalesce_runners` per slot group, [`RUNNERS`] by default) takes up to [`PIPELINE_RUN_MAX`] queued commands and runs them with
//! [`ClusterClient::execute_pipeline`]: each group's share one request (writes one
//! `Command::Transaction` entry, reads one read-index round or one `ReadBatch`), the groups
//! concurrently, every reply handed to the connection that sent its command. Nothing waits
//! to fill a batch: a command arriving while a runner is free goes at once (alone at low
//! load, as before); commands arriving while every runner is busy wait for the next free one,
//! so batches grow with the load.
//!
//! Why this is linearizable: each connection has one command here at a time (it waits for
//! the reply before its next), so commands in one batch are concurrent, and a batch's
//! effects take place within every one of its commands' intervals. A pipeline answers
//! exactly as the same commands one at a time would (the scripted simulation
//! `pipelined_burst`), and the writes of a batch are deduplicated by the runner's own
//! session like any pipeline's. Reads and writes queue apart, so a read never rides a
//! write's log entry (a group's share with a write goes through the log whole).
//!
//! Bounds: at most [`QUEUED_MAX`] commands wait per slot group (one more runs on its connection's own
//! client, as before); a command of more than [`COMMAND_BYTES_MAX`] is not queued (a batch
//! holds at most `PIPELINE_RUN_MAX` of them, and a large value runs alone as it would
//! pipelined).
//!
//! A runner whose connection goes away mid-batch (its future dropped) is dropped with the
//! batch: the other connections of that batch get an indeterminate answer (their command may
//! have been sent), and a new runner is made for the next batch. A command that waited
//! [`QUEUE_WAIT_MAX`] in the queue (its group's batches are slow: a leader change) leaves it
//! and runs alone, so a slow batch does not add its time to the commands queued behind it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use larder_client::{ClientError, ClusterClient};
use larder_core::GroupId;
use larder_core::bugs::{Bug, Bugs};
use larder_core::env::{Clock, Net};
use larder_core::kv::{Command, Reply};
use tokio::sync::{Notify, oneshot};

use crate::PIPELINE_RUN_MAX;

/// Most commands waiting for a runner, per slot group's queue.
pub const QUEUED_MAX: usize = 4096;

/// Runners (batches in flight) per slot group's queue by default
/// (`ProxyConfig::coalesce_runners`). One: while a group's batch is in flight, everything
/// arriving for it waits and goes in the next batch, which is where the saving is. Measured
/// (`larder bench --pipeline 1 --clients 50,200 --no-peer --coalesce-runners N`, 3 groups,
/// stop 58): at 50 clients 1 runner gave SET 18.8k/s and GET 45-52k/s, 2 gave 15.1k and 44k,
/// 4 gave 13.0k and 39k, none 11.8-12.1k and 42-47k; at 200 clients 1 runner gave SET
/// 28-30k/s and GET 52-68k/s against 12.6k and 48k with none.
pub const RUNNERS: usize = 1;

/// Largest command (its RESP request, bytes) that is coalesced.
pub const COMMAND_BYTES_MAX: usize = 16 << 10;

/// Longest a command waits in the queue for a runner; past it, if no batch took it yet, it
/// leaves the queue and runs alone on its connection's client. A batch is normally a round
/// trip (milliseconds), but one that meets a leader change retries for as long as the
/// election takes, and the commands queued behind it would add that wait to their own: swarm
/// seed 16 with `--pipelined 3` had 238 operations time out at the clients against 3 without
/// coalescing.
pub const QUEUE_WAIT_MAX: Duration = Duration::from_millis(50);

type Answer = Result<Reply, ClientError>;

/// A command waiting for a runner, and where its answer goes.
struct Waiting {
    /// Its place in the coalescer's order of arrivals (to find it again when it leaves).
    ticket: u64,
    command: Command,
    answer: oneshot::Sender<Answer>,
}

struct State<N: Net, C: Clock> {
    queue: VecDeque<Waiting>,
    /// Runners not in use.
    idle: Vec<ClusterClient<N, C>>,
    /// Runners that exist (idle or in use).
    runners: usize,
}

/// The queue of one slot group's single commands and its runners.
struct GroupQueue<N: Net, C: Clock> {
    state: Mutex<State<N, C>>,
    /// A runner was given back while commands waited.
    freed: Notify,
}

/// The single commands of one kind (the proxy has one coalescer for reads, one for writes),
/// queued by slot group: a batch holds the commands of one group, so a group that stalls
/// (its leader lost, a partition) holds up only its own commands, as it would without
/// coalescing. With one queue for all groups, a batch stuck on one group held every other
/// group's commands behind it: swarm seed 16 with `--pipelined 3` had 232 operations time
/// out at the clients, against 3 without coalescing.
pub(crate) struct Coalescer<N: Net, C: Clock> {
    groups: Mutex<BTreeMap<GroupId, Arc<GroupQueue<N, C>>>>,
    make: Box<dyn Fn() -> ClusterClient<N, C> + Send + Sync>,
    runners_max: usize,
    clock: C,
    bugs: Bugs,
    tickets: AtomicU64,
    /// Batches of more than one command run so far, and the commands they held.
    batches: AtomicU64,
    commands: AtomicU64,
}

/// A runner in use: given back when done, or, dropped mid-batch, forgotten (a new one is
/// made for the next batch).
struct Runner<'a, N: Net, C: Clock> {
    client: Option<ClusterClient<N, C>>,
    queue: &'a GroupQueue<N, C>,
}

impl<N: Net, C: Clock> Drop for Runner<'_, N, C> {
    fn drop(&mut self) {
        let mut state = self.queue.state.lock().expect("coalescer lock");
        match self.client.take() {
            Some(client) => state.idle.push(client),
            None => state.runners -= 1,
        }
        let waiting = !state.queue.is_empty();
        drop(state);
        if waiting {
            self.queue.freed.notify_one();
        }
    }
}

impl<N: Net, C: Clock> GroupQueue<N, C> {
    fn queued(&self) -> bool {
        !self.state.lock().expect("coalescer lock").queue.is_empty()
    }

    /// Takes the command of `ticket` out of the queue, if no batch took it yet.
    fn leave(&self, ticket: u64) -> Option<Command> {
        let mut state = self.state.lock().expect("coalescer lock");
        let at = state.queue.iter().position(|w| w.ticket == ticket)?;
        state.queue.remove(at).map(|waiting| waiting.command)
    }

    /// The oldest waiting commands, at most [`PIPELINE_RUN_MAX`].
    fn take_batch(&self) -> Vec<Waiting> {
        let mut state = self.state.lock().expect("coalescer lock");
        let n = state.queue.len().min(PIPELINE_RUN_MAX);
        state.queue.drain(..n).collect()
    }
}

impl<N: Net, C: Clock> Coalescer<N, C> {
    pub(crate) fn new(
        make: impl Fn() -> ClusterClient<N, C> + Send + Sync + 'static,
        runners_max: usize,
        clock: C,
        bugs: Bugs,
    ) -> Self {
        Coalescer {
            groups: Mutex::new(BTreeMap::new()),
            make: Box::new(make),
            runners_max: runners_max.max(1),
            clock,
            bugs,
            tickets: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            commands: AtomicU64::new(0),
        }
    }

    /// `command`'s answer, run in a batch with other connections' commands for `group`; the
    /// command back (the caller runs it itself) if its request took more than
    /// [`COMMAND_BYTES_MAX`], if that group's queue is full, or if it waited
    /// [`QUEUE_WAIT_MAX`] without a batch taking it.
    pub(crate) async fn execute(
        &self,
        group: GroupId,
        command: Command,
        request_bytes: usize,
    ) -> Result<Answer, Command> {
        if request_bytes > COMMAND_BYTES_MAX {
            return Err(command);
        }
        let queue = self.queue(group);
        let (answer, mut mine) = oneshot::channel();
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = queue.state.lock().expect("coalescer lock");
            if state.queue.len() >= QUEUED_MAX {
                return Err(command);
            }
            state.queue.push_back(Waiting {
                ticket,
                command,
                answer,
            });
        }
        let queued_at = self.clock.now();
        let mut in_a_batch = false;
        let dropped = || ClientError::Indeterminate {
            reason: "the proxy's batch carrying this command was dropped".into(),
        };
        loop {
            if let Some(mut runner) = self.runner(&queue) {
                loop {
                    let batch = queue.take_batch();
                    if batch.is_empty() {
                        break;
                    }
                    self.run(&mut runner, batch).await;
                    if let Ok(answer) = mine.try_recv() {
                        return Ok(answer);
                    }
                }
                drop(runner);
            }
            // Ours is in another runner's batch, or every runner is busy.
            let waited = self.clock.now().saturating_sub(queued_at);
            let patience = QUEUE_WAIT_MAX.saturating_sub(waited);
            tokio::select! {
                // Biased: the same order every time, so simulated runs replay.
                biased;
                answer = &mut mine => {
                    if queue.queued() {
                        // This turn may have been given to us: pass it on.
                        queue.freed.notify_one();
                    }
                    return Ok(answer.unwrap_or_else(|_| Err(dropped())));
                }
                () = queue.freed.notified() => {}
                () = self.clock.sleep(patience), if !in_a_batch => {
                    match queue.leave(ticket) {
                        // Still queued: it runs alone instead ([`QUEUE_WAIT_MAX`]).
                        Some(command) => return Err(command),
                        // A batch has it: its answer comes from there.
                        None => in_a_batch = true,
                    }
                }
            }
        }
    }

    /// `group`'s queue, made on its first command (at most one per slot group of the
    /// routing tables the proxy has seen, each a few words when idle).
    fn queue(&self, group: GroupId) -> Arc<GroupQueue<N, C>> {
        self.groups
            .lock()
            .expect("coalescer lock")
            .entry(group)
            .or_insert_with(|| {
                Arc::new(GroupQueue {
                    state: Mutex::new(State {
                        queue: VecDeque::new(),
                        idle: Vec::new(),
                        runners: 0,
                    }),
                    freed: Notify::new(),
                })
            })
            .clone()
    }

    /// A free runner of `queue`, or a new one while fewer than `runners_max` exist.
    fn runner<'a>(&self, queue: &'a GroupQueue<N, C>) -> Option<Runner<'a, N, C>> {
        let mut state = queue.state.lock().expect("coalescer lock");
        let client = match state.idle.pop() {
            Some(client) => client,
            None if state.runners < self.runners_max => {
                state.runners += 1;
                drop(state);
                (self.make)()
            }
            None => return None,
        };
        Some(Runner {
            client: Some(client),
            queue,
        })
    }

    async fn run(&self, runner: &mut Runner<'_, N, C>, batch: Vec<Waiting>) {
        if batch.len() > 1 {
            self.batches.fetch_add(1, Ordering::Relaxed);
            self.commands
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
        }
        let (commands, answers): (Vec<Command>, Vec<oneshot::Sender<Answer>>) = batch
            .into_iter()
            .map(|waiting| (waiting.command, waiting.answer))
            .unzip();
        // Taken out while the batch runs: a runner dropped mid-batch is not given back.
        let mut client = runner.client.take().expect("a runner holds its client");
        let mut results = match commands.as_slice() {
            [only] => vec![client.execute(only.clone()).await],
            _ => client.execute_pipeline(&commands).await,
        };
        runner.client = Some(client);
        if results.len() > 1 && self.bugs.is_planted(Bug::CoalescedRepliesShifted) {
            // Planted bug: every connection gets the answer of the command queued after its own.
            results.rotate_left(1);
        }
        for (answer, result) in answers.into_iter().zip(results) {
            // A connection that went away takes no answer.
            let _ = answer.send(result);
        }
    }

    /// Batches of more than one command run so far, and the commands they held.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.commands.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use bytes::Bytes;
    use larder_client::{ClientConfig, SharedRouting};
    use larder_core::NodeId;
    use larder_core::env::{Handler, NetError};
    use larder_core::routing::RoutingTable;
    use larder_real::TokioClock;

    use crate::hot::tests::set;

    /// A network whose calls never end: a runner that sends holds its batch for ever.
    #[derive(Clone)]
    struct Silent;

    impl Net for Silent {
        fn local_id(&self) -> NodeId {
            1000
        }
        async fn call(&self, _: NodeId, _: Bytes, _: Duration) -> Result<Bytes, NetError> {
            std::future::pending().await
        }
        async fn serve<H: Handler>(&self, _: H) -> Result<(), NetError> {
            std::future::pending().await
        }
    }

    /// A coalescer with one runner per group, whose runners send into [`Silent`].
    fn silent_coalescer() -> Coalescer<Silent, TokioClock> {
        let routing = SharedRouting::new(RoutingTable::even(1, |_| vec![1]));
        Coalescer::new(
            move || {
                ClusterClient::new(
                    Silent,
                    TokioClock::new(),
                    routing.clone(),
                    ClientConfig::default(),
                )
            },
            1,
            TokioClock::new(),
            Bugs::default(),
        )
    }

    #[tokio::test]
    async fn commands_past_the_queue_bound_come_back_to_run_alone() {
        let coalescer = silent_coalescer();
        // The first takes the only runner and waits on the silent network; the next
        // QUEUED_MAX wait for it.
        let mut waiting = Vec::new();
        for n in 0..=QUEUED_MAX {
            let mut execute = Box::pin(coalescer.execute(1, set(&format!("k{n}")), 64));
            assert!(futures::poll!(execute.as_mut()).is_pending(), "command {n}");
            waiting.push(execute);
        }
        let queue = coalescer.queue(1);
        assert_eq!(queue.state.lock().expect("lock").queue.len(), QUEUED_MAX);
        // One more is handed back at once, untouched.
        let over = set("over");
        match coalescer.execute(1, over.clone(), 64).await {
            Err(back) => assert_eq!(back, over),
            Ok(answer) => panic!("a full queue took the command: {answer:?}"),
        }
        // The runner's connection goes away mid-batch: the runner is forgotten (not given
        // back) and the next waiter makes a new one.
        drop(waiting.remove(0));
        let runners = {
            let state = queue.state.lock().expect("lock");
            (state.runners, state.idle.len())
        };
        assert_eq!(runners, (0, 0));
        // Another group's queue is its own: not full, and its command takes a runner of its
        // own (and waits on the silent network).
        let mut other = Box::pin(coalescer.execute(2, set("elsewhere"), 64));
        assert!(futures::poll!(other.as_mut()).is_pending());
        assert_eq!(coalescer.queue(2).state.lock().expect("lock").runners, 1);
    }

    #[tokio::test]
    async fn a_command_past_the_size_bound_is_not_queued() {
        let coalescer = silent_coalescer();
        let big = set("big");
        // Polled once, not awaited: a queued command would wait on the silent network.
        let mut over = Box::pin(coalescer.execute(1, big.clone(), COMMAND_BYTES_MAX + 1));
        match futures::poll!(over.as_mut()) {
            std::task::Poll::Ready(Err(back)) => assert_eq!(back, big),
            other => panic!("a command past the size bound was coalesced: {other:?}"),
        }
        // Handed back before any queue or runner was made for it.
        assert!(coalescer.groups.lock().expect("lock").is_empty());
        // One of exactly the bound is queued: it takes the runner and waits on the network.
        let mut at_bound = Box::pin(coalescer.execute(1, set("k"), COMMAND_BYTES_MAX));
        assert!(futures::poll!(at_bound.as_mut()).is_pending());
        assert_eq!(coalescer.queue(1).state.lock().expect("lock").runners, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_command_queued_past_the_wait_bound_leaves_to_run_alone() {
        let coalescer = silent_coalescer();
        // The first takes the only runner and its batch never ends.
        let mut first = Box::pin(coalescer.execute(1, set("first"), 64));
        assert!(futures::poll!(first.as_mut()).is_pending());
        let behind = set("behind");
        let mut waiting = Box::pin(coalescer.execute(1, behind.clone(), 64));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        let queue = coalescer.queue(1);
        assert_eq!(queue.state.lock().expect("lock").queue.len(), 1);
        // Just short of the bound it still waits for the runner.
        tokio::time::advance(QUEUE_WAIT_MAX - Duration::from_millis(1)).await;
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        assert_eq!(queue.state.lock().expect("lock").queue.len(), 1);
        // At the bound it leaves the queue and comes back to run alone.
        tokio::time::advance(Duration::from_millis(1)).await;
        match futures::poll!(waiting.as_mut()) {
            std::task::Poll::Ready(Err(back)) => assert_eq!(back, behind),
            other => panic!("a command waited past QUEUE_WAIT_MAX: {other:?}"),
        }
        assert!(queue.state.lock().expect("lock").queue.is_empty());
        // The batch in flight is untouched.
        assert!(futures::poll!(first.as_mut()).is_pending());
    }
}
