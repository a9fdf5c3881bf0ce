//! Shared reads: equal reads of a hot key that arrive while one is being fetched wait for the
//! next fetch and all take its answer, so a key read by thousands of clients costs its group's
//! leader about one read per round trip per proxy instead of one per client.
//!
//! **Why this and not a cache with a lease.** A read may take an answer only from a fetch that
//! *started after the read arrived* and ended before it returns: the fetch's linearization
//! point (the leader's read-index confirmation) then lies inside the read's own interval, so
//! every shared answer is linearizable with no assumption about clocks. A read arriving while a
//! fetch is in flight therefore never joins that fetch (it may have been confirmed before a
//! write the reader already saw acknowledged); it queues for the next one, which starts when
//! the current one ends. A cache that answers from memory for a lease would save that round
//! trip, but it is only safe while every clock runs at a bounded rate and every leader waits
//! out the leases it granted before a write completes; the simulator skews clocks on purpose,
//! and a per-key invalidation protocol between leaders and every proxy is a second consistency
//! mechanism to get right. The price here: a shared read waits up to two fetches instead of
//! one. The planted bug `hot-read-cached` is that cache without the lease (an answer served
//! from memory for 50 ms); the hot-key simulation seeds catch it.
//!
//! Equal means the same parsed [`Command`] (its encoding): commands that draw randomness carry
//! a fresh seed each and are never shared. Only reads of keys the proxy finds hot are shared
//! ([`crate::HotKeyConfig::share_reads_min_per_sec`]); the rest go out as they come.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use larder_client::ClientError;
use larder_core::env::Clock;
use larder_core::kv::{Command, Reply};
use tokio::sync::oneshot;

/// How long the planted bug `hot-read-cached` serves a fetched answer from memory.
pub(crate) const PLANTED_CACHE_TIME: Duration = Duration::from_millis(50);

/// A fetch's answer, as every read sharing it gets it.
type Answer = Result<Reply, ClientError>;

/// What a read gets: the answer of the fetch it waited for, or its turn to fetch.
#[derive(Debug)]
enum Turn {
    Fetch,
    Done(Result<Reply, ClientError>),
}

/// One command being fetched: who waits for this fetch, and who arrived after it started.
#[derive(Debug, Default)]
struct Flight {
    /// Arrived before the fetch in flight started: they take its answer.
    riders: Vec<oneshot::Sender<Turn>>,
    /// Arrived after it started: the next fetch is theirs.
    next: Vec<oneshot::Sender<Turn>>,
}

/// Waiting reads a flight holds before it drops those whose clients went away (then again at
/// every doubling): a client that reconnects and reads again and again during one slow fetch
/// leaves a closed sender each time, and without pruning they would pile up until the fetch
/// ends. Pruned at powers of two, the list stays under twice the larger of this and the reads
/// still waiting, at an amortized constant cost per read.
const WAITING_PRUNE_FROM: usize = 64;

/// The reads being fetched, by command. An entry lives while its fetch does, so the map holds
/// at most one entry per reading connection, and each entry's waiting list is bounded by the
/// reads still waiting (see `WAITING_PRUNE_FROM`); connections are bounded by `maxclients`.
#[derive(Debug, Default)]
pub(crate) struct SharedReads {
    flights: Mutex<BTreeMap<Vec<u8>, Flight>>,
    /// Reads answered by another read's fetch.
    shared: AtomicU64,
    /// The planted bug `hot-read-cached`: answers kept this long, and when they came back.
    cache_time: Option<Duration>,
    cached: Mutex<BTreeMap<Vec<u8>, (Duration, Answer)>>,
}

impl SharedReads {
    /// `cache_time` is the planted bug `hot-read-cached` (`None` without it).
    pub(crate) fn new(cache_time: Option<Duration>) -> Self {
        SharedReads {
            cache_time,
            ..SharedReads::default()
        }
    }

    /// Reads answered by another read's fetch so far.
    pub(crate) fn shared(&self) -> u64 {
        self.shared.load(Ordering::Relaxed)
    }

    /// `command`'s answer: from a fetch of an equal command that starts after this call, or,
    /// when none is in flight, from `fetch` run here (whose answer the reads that arrive
    /// meanwhile take). `fetch` runs at most once.
    pub(crate) async fn read<F>(
        &self,
        command: &Command,
        clock: &impl Clock,
        fetch: F,
    ) -> Result<Reply, ClientError>
    where
        F: AsyncFnOnce() -> Result<Reply, ClientError>,
    {
        let key = postcard::to_stdvec(command).expect("commands encode");
        if let Some(cache_time) = self.cache_time {
            // Planted bug: an answer from memory, however many writes came since.
            let cached = self.cached.lock().expect("cache lock").get(&key).cloned();
            if let Some((at, answer)) = cached
                && clock.now().saturating_sub(at) < cache_time
            {
                self.shared.fetch_add(1, Ordering::Relaxed);
                return answer;
            }
        }
        let waiting = {
            let mut flights = self.flights.lock().expect("shared-read lock");
            match flights.get_mut(&key) {
                None => {
                    flights.insert(key.clone(), Flight::default());
                    None
                }
                Some(flight) => {
                    let (sender, receiver) = oneshot::channel();
                    let len = flight.next.len();
                    if len >= WAITING_PRUNE_FROM && len.is_power_of_two() {
                        flight.next.retain(|waiting| !waiting.is_closed());
                    }
                    flight.next.push(sender);
                    Some(Waiting {
                        reads: self,
                        key: Some(key.clone()),
                        receiver,
                    })
                }
            }
        };
        if let Some(mut waiting) = waiting {
            match (&mut waiting.receiver).await {
                Ok(Turn::Done(answer)) => {
                    waiting.key = None;
                    self.shared.fetch_add(1, Ordering::Relaxed);
                    return answer;
                }
                // Its turn: it leads the next fetch (below), the waiting others ride on it.
                Ok(Turn::Fetch) => waiting.key = None,
                // Cannot happen (whoever drops a flight hands it on); fetching alone is safe.
                Err(_) => {
                    waiting.key = None;
                    return fetch().await;
                }
            }
        }
        let planted_cache_key = self.cache_time.is_some().then(|| key.clone());
        let mut lead = Lead {
            reads: self,
            key: Some(key),
        };
        let answer = fetch().await;
        lead.finish(&answer);
        if let Some(key) = planted_cache_key {
            let mut cached = self.cached.lock().expect("cache lock");
            cached.insert(key, (clock.now(), answer.clone()));
        }
        answer
    }

    /// Ends `key`'s fetch: `answer` (if it finished) goes to its riders, and the reads that
    /// arrived after it started get the next fetch, led by the first still waiting.
    fn hand_on(&self, key: &[u8], answer: Option<&Result<Reply, ClientError>>) {
        let mut flights = self.flights.lock().expect("shared-read lock");
        let Some(flight) = flights.get_mut(key) else {
            return;
        };
        let mut waiting = std::mem::take(&mut flight.next);
        match answer {
            Some(answer) => {
                for rider in flight.riders.drain(..) {
                    // A rider that stopped waiting has dropped its receiver: nothing to do.
                    let _ = rider.send(Turn::Done(answer.clone()));
                }
            }
            // The fetch was dropped unfinished: its riders arrived before it started, so a
            // fetch starting now serves them as well.
            None => {
                waiting.splice(0..0, flight.riders.drain(..));
            }
        }
        let mut waiting = waiting.into_iter();
        for candidate in waiting.by_ref() {
            if candidate.send(Turn::Fetch).is_ok() {
                flight.riders = waiting.collect();
                return;
            }
        }
        flights.remove(key);
    }
}

/// The read leading a fetch. Dropped unfinished (its client went away mid-fetch), it hands the
/// flight on so the riders are not left waiting.
struct Lead<'a> {
    reads: &'a SharedReads,
    key: Option<Vec<u8>>,
}

impl Lead<'_> {
    fn finish(&mut self, answer: &Result<Reply, ClientError>) {
        if let Some(key) = self.key.take() {
            self.reads.hand_on(&key, Some(answer));
        }
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.reads.hand_on(&key, None);
        }
    }
}

/// A read waiting for a fetch. Dropped while waiting, it checks whether it had just been given
/// the turn to fetch, and if so hands it on.
struct Waiting<'a> {
    reads: &'a SharedReads,
    key: Option<Vec<u8>>,
    receiver: oneshot::Receiver<Turn>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        self.receiver.close();
        if let Ok(Turn::Fetch) = self.receiver.try_recv() {
            self.reads.hand_on(&key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::Arc;
    use tokio::sync::Notify;

    /// Time that moves only when the test says.
    #[derive(Clone, Default)]
    struct TestClock(Arc<AtomicU64>);

    impl TestClock {
        fn advance(&self, by: Duration) {
            self.0.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
        }
    }

    impl Clock for TestClock {
        fn now(&self) -> Duration {
            Duration::from_nanos(self.0.load(Ordering::SeqCst))
        }
        fn wall_ms(&self) -> u64 {
            0
        }
        fn sleep(&self, _: Duration) -> impl Future<Output = ()> + Send + 'static {
            std::future::ready(())
        }
    }

    fn get(key: &str) -> Command {
        Command::parse(&[
            Bytes::from_static(b"GET"),
            Bytes::copy_from_slice(key.as_bytes()),
        ])
        .expect("GET parses")
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    /// A fetch that waits for `gate`, counts itself in `fetches`, and answers the count.
    async fn gated(gate: &Notify, fetches: &Cell<i64>) -> Result<Reply, ClientError> {
        gate.notified().await;
        fetches.set(fetches.get() + 1);
        Ok(Reply::Int(fetches.get()))
    }

    /// Reads of `key` through `reads`, each fetch gated by `gate` and counted in `fetches`.
    struct Bench {
        reads: Rc<SharedReads>,
        gate: Rc<Notify>,
        fetches: Rc<Cell<i64>>,
        clock: TestClock,
    }

    impl Bench {
        fn new(cache_time: Option<Duration>) -> Bench {
            Bench {
                reads: Rc::new(SharedReads::new(cache_time)),
                gate: Rc::new(Notify::new()),
                fetches: Rc::new(Cell::new(0)),
                clock: TestClock::default(),
            }
        }

        fn spawn(&self, key: &'static str) -> tokio::task::JoinHandle<Result<Reply, ClientError>> {
            let (reads, gate, fetches, clock) = (
                self.reads.clone(),
                self.gate.clone(),
                self.fetches.clone(),
                self.clock.clone(),
            );
            tokio::task::spawn_local(async move {
                reads
                    .read(&get(key), &clock, async || gated(&gate, &fetches).await)
                    .await
            })
        }
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn reads_arriving_during_a_fetch_share_the_next_one_never_the_one_in_flight() {
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            let bench = Bench::new(None);
            let first = bench.spawn("k");
            settle().await;
            // Three more reads of k, and one of another key, while the first fetches.
            let later: Vec<_> = (0..3).map(|_| bench.spawn("k")).collect();
            let other = bench.spawn("other");
            settle().await;
            bench.gate.notify_waiters();
            assert_eq!(first.await.expect("joins"), Ok(Reply::Int(1)));
            assert_eq!(other.await.expect("joins"), Ok(Reply::Int(2)));
            // The later reads did not take the first fetch's answer: they wait for the next.
            settle().await;
            assert_eq!(bench.fetches.get(), 2);
            bench.gate.notify_waiters();
            let mut answers = Vec::new();
            for read in later {
                answers.push(read.await.expect("joins"));
            }
            // One fetch for the three.
            assert_eq!(answers, vec![Ok(Reply::Int(3)); 3]);
            assert_eq!(bench.fetches.get(), 3);
            assert_eq!(bench.reads.shared(), 2);
            assert!(bench.reads.flights.lock().unwrap().is_empty());
        }));
    }

    #[test]
    fn the_planted_cache_answers_from_memory_until_its_time_passes() {
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            let bench = Bench::new(Some(PLANTED_CACHE_TIME));
            let first = bench.spawn("k");
            settle().await;
            bench.gate.notify_waiters();
            assert_eq!(first.await.expect("joins"), Ok(Reply::Int(1)));
            // A read that starts after the fetch ended takes its answer with no fetch.
            bench.clock.advance(PLANTED_CACHE_TIME / 2);
            assert_eq!(bench.spawn("k").await.expect("joins"), Ok(Reply::Int(1)));
            assert_eq!(bench.fetches.get(), 1);
            bench.clock.advance(PLANTED_CACHE_TIME);
            let late = bench.spawn("k");
            settle().await;
            bench.gate.notify_waiters();
            assert_eq!(late.await.expect("joins"), Ok(Reply::Int(2)));
        }));
    }

    #[test]
    fn reads_whose_clients_go_away_during_a_slow_fetch_do_not_pile_up() {
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            let bench = Bench::new(None);
            let first = bench.spawn("k");
            settle().await;
            // A client that reads, goes away and comes back, 500 times during one fetch.
            for _ in 0..500 {
                let read = bench.spawn("k");
                settle().await;
                read.abort();
                let _ = read.await;
            }
            let waiting = bench.reads.flights.lock().unwrap()
                [&postcard::to_stdvec(&get("k")).unwrap()]
                .next
                .len();
            assert!(
                waiting <= WAITING_PRUNE_FROM,
                "{waiting} closed waiters kept"
            );
            let last = bench.spawn("k");
            settle().await;
            bench.gate.notify_waiters();
            assert_eq!(first.await.expect("joins"), Ok(Reply::Int(1)));
            settle().await;
            bench.gate.notify_waiters();
            assert_eq!(last.await.expect("joins"), Ok(Reply::Int(2)));
            assert!(bench.reads.flights.lock().unwrap().is_empty());
        }));
    }

    #[test]
    fn a_fetch_dropped_midway_hands_its_riders_to_a_new_one() {
        runtime().block_on(tokio::task::LocalSet::new().run_until(async {
            let bench = Bench::new(None);
            let first = bench.spawn("k");
            settle().await;
            let second = bench.spawn("k");
            let third = bench.spawn("k");
            settle().await;
            // The leader's client goes away mid-fetch; then the second read (now leading) is
            // dropped as well, right after being handed the turn.
            first.abort();
            let _ = first.await;
            second.abort();
            let _ = second.await;
            settle().await;
            bench.gate.notify_waiters();
            assert_eq!(third.await.expect("joins"), Ok(Reply::Int(1)));
            assert!(bench.reads.flights.lock().unwrap().is_empty());
        }));
    }
}
