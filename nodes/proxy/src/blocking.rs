//! Blocking commands (`BLPOP`, `BRPOP`, `BLMPOP`, `BLMOVE`, `BRPOPLPUSH`, `BZPOPMIN`,
//! `BZPOPMAX`, `BZMPOP`) and `CLIENT UNBLOCK`.
//!
//! A blocked client is served two ways, whichever comes first:
//!
//! - **Handed over by a write through this proxy.** After a keyed write (or an `EXEC`) through
//!   this proxy, and before its reply goes out, the proxy runs the pop of the earliest client
//!   blocked on each written key and hands that client the result; a pop that pushes (`BLMOVE`)
//!   serves the clients blocked on its destination in turn. So, as in Redis, the writer's next
//!   command already sees the blocked clients served ("linked" and circular `BLMOVE`s, a
//!   `WATCH` on a destination), and clients blocked on one key are served first come, first
//!   served.
//! - **Polling**, for writes through other proxies: the blocked client reads whether any of its
//!   source keys exists (a linearizable read, no log entry) and only then proposes the pop,
//!   backing off from 2 ms to 50 ms. Only the earliest waiter of a key polls it, so a later
//!   client cannot take the element an earlier one waits for.
//!
//! Each pop is its own log entry, after the write that fed it: linearizable, but another proxy's
//! client may take the element in between (Redis, one process, serves it in the same step).
//!
//! A waiter's state sits behind an async lock that whoever pops for it holds, so a client is
//! never served twice and a timeout or `CLIENT UNBLOCK` never races a pop made for it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use larder_core::bugs::Bug;
use larder_core::env::{Clock, FaultPoint, Net};
use larder_core::kv::{BlockTimeout, Command, ListCommand, Reply};
use larder_core::resp::Frame;

use super::{Proxy, Session, client_error, error};

/// First and longest wait between two polls of a blocked command.
const BLOCK_POLL_FIRST: Duration = Duration::from_millis(2);
const BLOCK_POLL_MAX: Duration = Duration::from_millis(50);
/// Most blocked clients one write looks at (each served, or waited for, or found gone; a chain
/// of `BLMOVE`s included): bounds the work a single write can make its writer wait for. The
/// default of [`crate::ProxyConfig::handovers_per_write_max`]. Clients past it are served by
/// their own polls.
pub const HANDOVERS_PER_WRITE_MAX: usize = 1024;

/// The clients blocked on each key, in arrival order.
#[derive(Default)]
pub(super) struct Waiters {
    queues: Mutex<Queues>,
}

#[derive(Default)]
struct Queues {
    next_ticket: u64,
    by_key: BTreeMap<Bytes, VecDeque<Arc<Slot>>>,
    by_client: BTreeMap<u64, Arc<Slot>>,
}

/// One blocked client.
struct Slot {
    ticket: u64,
    client_id: u64,
    /// The non-blocking form to run for it (`LMOVE` for `BLMOVE`, …).
    command: Command,
    sources: Vec<Bytes>,
    /// Its answer once someone else served it (a handover, `CLIENT UNBLOCK`). Held by whoever
    /// pops for the client, for the whole pop.
    answer: tokio::sync::Mutex<Option<Reply>>,
    /// Set, under `answer`'s lock, once the client is served or gone: nobody pops for it again.
    finished: AtomicBool,
    woken: tokio::sync::Notify,
    /// Set while the client, having popped for itself after a poll, hands what its pop pushed
    /// (`BLMOVE`) to the clients blocked on the destination ([`HandingOver`]).
    handing_over: AtomicBool,
    handed_over: tokio::sync::Notify,
}

impl Slot {
    fn finish(&self) {
        self.finished.store(true, Ordering::Release);
    }

    fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Returns once the client is not handing over its own pushes (at once if it never did).
    async fn handed_over(&self) {
        loop {
            let notified = self.handed_over.notified();
            tokio::pin!(notified);
            // Registered before the flag is read, so a clear in between still wakes it.
            notified.as_mut().enable();
            if !self.handing_over.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// A client handing over its own pop's pushes: set before it releases its lock, so a writer
/// that waited for that lock sees it, and cleared when the handovers end, or when the client's
/// task is dropped half-way (a disconnect), so no writer waits forever.
struct HandingOver<'a>(&'a Slot);

impl<'a> HandingOver<'a> {
    fn start(slot: &'a Slot) -> Self {
        slot.handing_over.store(true, Ordering::Release);
        HandingOver(slot)
    }
}

impl Drop for HandingOver<'_> {
    fn drop(&mut self) {
        self.0.handing_over.store(false, Ordering::Release);
        self.0.handed_over.notify_waiters();
    }
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues client `client_id`, blocked in `command`, on its source keys; it leaves every
    /// queue when the [`Waiter`] drops.
    fn join(&self, client_id: u64, command: Command) -> Waiter<'_> {
        let sources: Vec<Bytes> = command.block_sources().into_iter().cloned().collect();
        let mut queues = self.lock();
        let ticket = queues.next_ticket;
        queues.next_ticket += 1;
        let slot = Arc::new(Slot {
            ticket,
            client_id,
            command,
            sources,
            answer: tokio::sync::Mutex::new(None),
            finished: AtomicBool::new(false),
            woken: tokio::sync::Notify::new(),
            handing_over: AtomicBool::new(false),
            handed_over: tokio::sync::Notify::new(),
        });
        for key in &slot.sources {
            queues
                .by_key
                .entry(key.clone())
                .or_default()
                .push_back(slot.clone());
        }
        queues.by_client.insert(client_id, slot.clone());
        Waiter {
            waiters: self,
            slot,
        }
    }

    /// The earliest client still waiting on `key`, or, with `handing_over_too`, one served by
    /// its own poll that is still handing over what its pop pushed, if that comes first.
    fn first_on(&self, key: &[u8], handing_over_too: bool) -> Option<Arc<Slot>> {
        self.lock()
            .by_key
            .get(key)?
            .iter()
            .find(|slot| {
                !slot.is_finished()
                    || (handing_over_too && slot.handing_over.load(Ordering::Acquire))
            })
            .cloned()
    }

    /// Whether `slot` is the earliest waiter of at least one of its keys: only then may it
    /// take an element itself.
    fn is_first(&self, slot: &Slot) -> bool {
        let queues = self.lock();
        slot.sources.iter().any(|key| {
            queues.by_key.get(key).is_some_and(|queue| {
                queue
                    .iter()
                    .find(|waiting| !waiting.is_finished())
                    .is_some_and(|first| first.ticket == slot.ticket)
            })
        })
    }

    fn any_waiting_on(&self, keys: &[Bytes]) -> bool {
        let queues = self.lock();
        !queues.by_key.is_empty() && keys.iter().any(|key| queues.by_key.contains_key(key))
    }

    /// The keys of write `command` some client is blocked on (checked before the write, so the
    /// common case, nobody blocked, costs one map lookup and no copy).
    pub(super) fn woken_by(&self, command: &Command) -> Vec<Bytes> {
        let queues = self.lock();
        if queues.by_key.is_empty() || !command.is_write() {
            return Vec::new();
        }
        command
            .keys()
            .into_iter()
            .filter(|key| queues.by_key.contains_key(*key))
            .cloned()
            .collect()
    }

    fn blocked_client(&self, client_id: u64) -> Option<Arc<Slot>> {
        self.lock().by_client.get(&client_id).cloned()
    }

    /// Keys with a waiter (bounded by the blocked connections, each bounded by its request).
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.lock().by_key.len()
    }
}

/// A blocked client's place in the queues of its keys.
struct Waiter<'a> {
    waiters: &'a Waiters,
    slot: Arc<Slot>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        // A client that left mid-block must not be popped for later.
        self.slot.finish();
        let mut queues = self.waiters.lock();
        for key in &self.slot.sources {
            if let Some(queue) = queues.by_key.get_mut(key) {
                queue.retain(|slot| slot.ticket != self.slot.ticket);
                if queue.is_empty() {
                    queues.by_key.remove(key);
                }
            }
        }
        if queues
            .by_client
            .get(&self.slot.client_id)
            .is_some_and(|slot| slot.ticket == self.slot.ticket)
        {
            queues.by_client.remove(&self.slot.client_id);
        }
    }
}

/// Counts a client in `blocked_clients` while it lives. A guard, not a decrement after the
/// await: a block abandoned because its client closed is dropped mid-await.
struct Blocked<'a>(&'a AtomicU64);

impl<'a> Blocked<'a> {
    fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Blocked(counter)
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<N: Net, C: Clock> Proxy<N, C> {
    /// Serves a blocking command until it yields (a reply other than nil or the null array),
    /// is handed a result, is unblocked, or `timeout` passes (then its timed-out reply).
    pub(super) async fn blocking(
        &self,
        session: &mut Session<N, C>,
        command: Command,
        timeout: BlockTimeout,
    ) -> Frame {
        let _blocked = Blocked::new(&self.counters.blocked);
        let deadline = (timeout.0 > 0).then(|| self.clock.now() + Duration::from_millis(timeout.0));
        let probe = Command::Exists {
            keys: command.block_sources().into_iter().cloned().collect(),
        };
        let waiter = self.waiters.join(session.id, command);
        let slot = &waiter.slot;
        let mut wait = BLOCK_POLL_FIRST;
        let mut first_poll = true;
        loop {
            {
                let mut answer = slot.answer.lock().await;
                if let Some(reply) = answer.take() {
                    return Frame::from(&reply);
                }
                if self.waiters.is_first(slot) {
                    let present = match session.client.execute(probe.clone()).await {
                        Ok(Reply::Int(count)) => count > 0,
                        Ok(other) => {
                            slot.finish();
                            return Frame::from(&other);
                        }
                        Err(e) => {
                            slot.finish();
                            return client_error(e, &self.config.bugs);
                        }
                    };
                    if present {
                        match session.client.execute(slot.command.clone()).await {
                            Ok(Reply::Nil | Reply::NilArray) => {}
                            // A source of another type at the start is the client's error; one
                            // that became another type while it waited leaves it blocked (Redis
                            // wakes only for a key of the awaited type).
                            Ok(reply)
                                if !first_poll
                                    && self
                                        .source_turned_other_type(session, slot, &reply)
                                        .await => {}
                            Ok(reply) => {
                                // A `BLMOVE` pushed: serve who waits on its destination. A
                                // writer that waited for this lock (its push fed this pop)
                                // waits for these handovers too before it replies.
                                let pushed = pushed_keys(slot);
                                let handing_over =
                                    (!pushed.is_empty()).then(|| HandingOver::start(slot));
                                slot.finish();
                                drop(answer);
                                self.hand_over(session, pushed, false).await;
                                drop(handing_over);
                                return Frame::from(&reply);
                            }
                            Err(e) => {
                                slot.finish();
                                return client_error(e, &self.config.bugs);
                            }
                        }
                    }
                }
                first_poll = false;
                if let Some(deadline) = deadline {
                    let now = self.clock.now();
                    if now >= deadline {
                        slot.finish();
                        return Frame::from(&slot.command.timed_out_reply());
                    }
                    wait = wait.min(deadline - now);
                }
            }
            tokio::select! {
                // Biased: the same order every time, so simulated runs replay.
                biased;
                () = slot.woken.notified() => {}
                () = self.clock.sleep(wait) => {}
            }
            wait = (wait * 2).min(BLOCK_POLL_MAX);
        }
    }

    /// Hands the clients blocked on `written` keys what a write just made available, earliest
    /// first, following the pushes of their own pops; at most [`HANDOVERS_PER_WRITE_MAX`].
    pub(super) async fn serve_waiters(&self, session: &mut Session<N, C>, written: Vec<Bytes>) {
        if !self.waiters.any_waiting_on(&written) {
            return;
        }
        self.config.points.hit(FaultPoint::HandOverStarting).await;
        // Planted: the writer replies without waiting for a poll that served its client first.
        let wait_for_pollers = !self.config.bugs.is_planted(Bug::BlockedChainReplyEarly);
        self.hand_over(session, written, wait_for_pollers).await;
    }

    /// [`Proxy::serve_waiters`]; with `wait_for_pollers`, a client found served by its own
    /// poll is waited for until it has handed over its pushes, and the keys it pushed are
    /// looked at in turn, so the writer's reply follows the whole chain even when polls won
    /// the race for some of its links. Only a writer waits: a client handing over its own
    /// pushes never does, so no two of them wait on each other.
    async fn hand_over(
        &self,
        session: &mut Session<N, C>,
        written: Vec<Bytes>,
        wait_for_pollers: bool,
    ) {
        if !self.waiters.any_waiting_on(&written) {
            return;
        }
        let mut work: VecDeque<Bytes> = written.into();
        // Clients looked at, served or not: bounds the work (and the waits) of one write.
        let max = self.config.handovers_per_write_max;
        let mut visits = 0;
        while let Some(key) = work.pop_front() {
            while visits < max {
                let Some(slot) = self.waiters.first_on(&key, wait_for_pollers) else {
                    break;
                };
                visits += 1;
                let mut answer = slot.answer.lock().await;
                if slot.is_finished() {
                    // Served or gone (before we looked, or while we waited for its lock): look
                    // again. A writer first waits until what the client's own pop pushed is
                    // handed over (its lock released first, so no slot's lock is held while we
                    // wait), then follows those pushes too: a client further down the chain
                    // may have been served by its own poll as well, and may still be handing over.
                    drop(answer);
                    if wait_for_pollers {
                        slot.handed_over().await;
                        work.extend(pushed_keys(&slot));
                    }
                    continue;
                }
                self.config.points.hit(FaultPoint::HandOverPop).await;
                match session.client.execute(slot.command.clone()).await {
                    // Nothing for it: it stays blocked (and polls, if the pop failed).
                    Ok(Reply::Nil | Reply::NilArray) | Err(_) => break,
                    // Its source now holds another type: Redis keeps such a client blocked.
                    // (A destination of another type is the client's error, handed over.)
                    Ok(reply) if self.source_turned_other_type(session, &slot, &reply).await => {
                        break;
                    }
                    Ok(reply) => {
                        *answer = Some(reply);
                        slot.finish();
                        slot.woken.notify_one();
                        work.extend(pushed_keys(&slot));
                    }
                }
            }
            if visits >= max {
                // The rest are served by their own polls (each within `BLOCK_POLL_MAX`).
                let left: Vec<Bytes> = std::iter::once(key).chain(work.drain(..)).collect();
                if self.waiters.any_waiting_on(&left) {
                    self.counters
                        .handovers_cut_short
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                break;
            }
        }
    }

    /// Whether `reply`, a pop's answer, is `WRONGTYPE` because a source key holds another
    /// type (the client stays blocked) rather than because `BLMOVE`'s destination does (Redis
    /// answers the client that error). Asks the source's type only in that ambiguous case.
    async fn source_turned_other_type(
        &self,
        session: &mut Session<N, C>,
        slot: &Slot,
        reply: &Reply,
    ) -> bool {
        if !matches!(reply, Reply::Error(text) if text.starts_with("WRONGTYPE")) {
            return false;
        }
        let Command::ListOp(ListCommand::Move { source, .. }) = &slot.command else {
            return true;
        };
        let kind = Command::Type {
            key: source.clone(),
        };
        !matches!(
            session.client.execute(kind).await,
            Ok(Reply::Status(kind)) if kind == "list"
        )
    }

    /// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: 1 when client `id` was blocked and now is not.
    pub(super) async fn client_unblock(&self, args: &[Bytes]) -> Frame {
        let as_error = match args.get(3).map(|a| a.to_ascii_lowercase()).as_deref() {
            None | Some(b"timeout") => false,
            Some(b"error") => true,
            Some(_) => {
                return error("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR");
            }
        };
        if args.len() > 4 {
            return error("ERR syntax error");
        }
        let Some(id) = std::str::from_utf8(&args[2])
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
        else {
            return error("ERR value is not an integer or out of range");
        };
        let Some(slot) = self.waiters.blocked_client(id) else {
            return Frame::Integer(0);
        };
        let mut answer = slot.answer.lock().await;
        if slot.is_finished() {
            return Frame::Integer(0);
        }
        *answer = Some(if as_error {
            Reply::error("UNBLOCKED client unblocked via CLIENT UNBLOCK")
        } else {
            slot.command.timed_out_reply()
        });
        slot.finish();
        slot.woken.notify_one();
        Frame::Integer(1)
    }
}

/// The keys a blocked client's pop writes besides its sources (`BLMOVE`'s destination).
fn pushed_keys(slot: &Slot) -> Vec<Bytes> {
    slot.command
        .keys()
        .into_iter()
        .filter(|key| !slot.sources.contains(key))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Bytes {
        Bytes::copy_from_slice(k.as_bytes())
    }

    fn pop(keys: &[&str]) -> Command {
        Command::Exists {
            keys: keys.iter().map(|k| key(k)).collect(),
        }
    }

    #[test]
    fn blocked_clients_go_first_come_first_served_per_key() {
        let waiters = Waiters::default();
        let first = waiters.join(1, pop(&["x"]));
        let second = waiters.join(2, pop(&["x", "y"]));
        let third = waiters.join(3, pop(&["x"]));
        assert!(waiters.is_first(&first.slot));
        // First on `y`, so it may poll `y` while `first` holds `x`.
        assert!(waiters.is_first(&second.slot));
        assert!(!waiters.is_first(&third.slot));
        assert_eq!(waiters.first_on(b"x", false).map(|s| s.client_id), Some(1));
        // A served client no longer counts as first, even before it leaves; one still handing
        // over what its own pop pushed is found by a writer that waits for it.
        let handing_over = HandingOver::start(&first.slot);
        first.slot.finish();
        assert_eq!(waiters.first_on(b"x", false).map(|s| s.client_id), Some(2));
        assert_eq!(waiters.first_on(b"x", true).map(|s| s.client_id), Some(1));
        drop(handing_over);
        assert_eq!(waiters.first_on(b"x", true).map(|s| s.client_id), Some(2));
        drop(first);
        drop(second);
        assert!(waiters.is_first(&third.slot));
        assert!(waiters.blocked_client(3).is_some());
        drop(third);
        assert_eq!(
            waiters.keys(),
            0,
            "queues of keys nobody waits on are removed"
        );
        assert!(waiters.blocked_client(3).is_none());
        assert!(!waiters.any_waiting_on(&[key("x")]));
    }
}
