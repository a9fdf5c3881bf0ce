//! A connection's transactions (`MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`) and its
//! blocking commands (`BLPOP` and the like).
//!
//! A transaction's keyed commands travel to their group as one [`Command::Transaction`]: one
//! log entry, so they apply atomically and nothing interleaves. They must all live in one slot
//! group (the cluster client answers `CROSSSLOT` otherwise, as Redis Cluster does for keys of
//! different slots). `WATCH` reads each key's version ([`Command::Versions`]) and the entry
//! carries them: it runs only if none changed. Commands that are not keyed (`PING`, `KEYS`,
//! `DBSIZE`, `FLUSHALL`, `INFO`, …) are queued too and answered in their place at `EXEC`,
//! outside the entry.
//!
//! A blocking command is served by polling its non-blocking form: the proxy reads whether any
//! of its source keys exists (a linearizable read, no log entry), and only then proposes the
//! pop, until it yields or the timeout passes. Clients blocked on the same key are served
//! first come, first served, as in Redis: a [`Waiters`] queue per key lets only the earliest
//! waiter of a key poll it, so a later client cannot take the element an earlier one waits for
//! (within this proxy; clients of two proxies race).

use std::time::Duration;

use bytes::Bytes;
use larder_core::env::{Clock, Net};
use larder_core::kv::{BlockTimeout, Command, Reply, Scope};
use larder_core::resp::Frame;

use super::{Proxy, Session, arity, client_error, error, unknown_with_args};

/// First and longest wait between two polls of a blocked command.
const BLOCK_POLL_FIRST: Duration = Duration::from_millis(2);
const BLOCK_POLL_MAX: Duration = Duration::from_millis(50);
/// Most commands one transaction may queue: a bound on the connection's memory (Redis has
/// none but the client's query buffer; ours is per command).
pub const QUEUED_MAX: usize = 100_000;

/// The clients blocked on each key, in arrival order (tickets), so the earliest is served first.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    inner: std::sync::Mutex<WaitQueues>,
}

#[derive(Debug, Default)]
struct WaitQueues {
    next_ticket: u64,
    by_key: std::collections::BTreeMap<Bytes, std::collections::VecDeque<u64>>,
}

impl Waiters {
    /// Queues a waiter on `keys`; it leaves every queue when the [`Waiter`] drops.
    pub(super) fn join(&self, keys: Vec<Bytes>) -> Waiter<'_> {
        let mut queues = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = queues.next_ticket;
        queues.next_ticket += 1;
        for key in &keys {
            queues
                .by_key
                .entry(key.clone())
                .or_default()
                .push_back(ticket);
        }
        Waiter {
            waiters: self,
            ticket,
            keys,
        }
    }

    /// Keys with a waiter (bounded by the blocked connections, each bounded by its request).
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_key
            .len()
    }
}

/// One blocked client's place in the queues of its keys.
pub(super) struct Waiter<'a> {
    waiters: &'a Waiters,
    ticket: u64,
    keys: Vec<Bytes>,
}

impl Waiter<'_> {
    /// Whether this client is the earliest waiter of at least one of its keys: only then may it
    /// take an element, as Redis serves the first client blocked on the key that got one.
    pub(super) fn is_first(&self) -> bool {
        let queues = self.waiters.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.keys.iter().any(|key| {
            queues
                .by_key
                .get(key)
                .is_some_and(|queue| queue.front() == Some(&self.ticket))
        })
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut queues = self.waiters.inner.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some(queue) = queues.by_key.get_mut(key) {
                queue.retain(|ticket| *ticket != self.ticket);
                if queue.is_empty() {
                    queues.by_key.remove(key);
                }
            }
        }
    }
}

/// An open `MULTI`.
#[derive(Debug, Default)]
pub(super) struct Transaction {
    queued: Vec<Queued>,
    /// A command was refused while queuing: `EXEC` discards the transaction.
    failed: bool,
}

#[derive(Debug)]
enum Queued {
    /// Applied inside the transaction's log entry.
    Keyed(Command),
    /// Answered by the proxy (or across groups) at `EXEC`, in its place.
    Other(Vec<Bytes>),
}

impl<N: Net, C: Clock> Proxy<N, C> {
    /// Answers the transaction commands, and queues every other command while a transaction is
    /// open. `None`: not a transaction matter, dispatch as usual.
    pub(super) async fn transaction_command(
        &self,
        session: &mut Session<N, C>,
        name: &str,
        args: &[Bytes],
    ) -> Option<Frame> {
        let frame = match name {
            "multi" if args.len() != 1 => arity("multi"),
            "multi" if session.transaction.is_some() => error("ERR MULTI calls can not be nested"),
            "multi" => {
                session.transaction = Some(Transaction::default());
                Frame::Simple("OK".into())
            }
            "exec" if args.len() != 1 => arity("exec"),
            "exec" => match session.transaction.take() {
                None => error("ERR EXEC without MULTI"),
                Some(transaction) => {
                    let watched = std::mem::take(&mut session.watched);
                    if transaction.failed {
                        error("EXECABORT Transaction discarded because of previous errors.")
                    } else {
                        self.exec(session, transaction, watched).await
                    }
                }
            },
            "discard" if args.len() != 1 => arity("discard"),
            "discard" => match session.transaction.take() {
                None => error("ERR DISCARD without MULTI"),
                Some(_) => {
                    session.watched.clear();
                    Frame::Simple("OK".into())
                }
            },
            "watch" if session.transaction.is_some() => {
                error("ERR WATCH inside MULTI is not allowed")
            }
            "watch" if args.len() < 2 => arity("watch"),
            "watch" => self.watch(session, &args[1..]).await,
            "unwatch" if args.len() != 1 => arity("unwatch"),
            "unwatch" => {
                session.watched.clear();
                Frame::Simple("OK".into())
            }
            // Answered at once even inside a transaction, as Redis does.
            "quit" | "reset" => return None,
            _ => {
                let transaction = session.transaction.as_mut()?;
                if transaction.queued.len() >= QUEUED_MAX {
                    transaction.failed = true;
                    return Some(error(format!(
                        "ERR a transaction holds at most {QUEUED_MAX} commands"
                    )));
                }
                match Command::parse(args) {
                    Ok(command) if command.scope() == Scope::Keys && !command.is_internal() => {
                        transaction.queued.push(Queued::Keyed(command));
                    }
                    Ok(_) => transaction.queued.push(Queued::Other(args.to_vec())),
                    Err(_) if super::is_proxy_command(name) => {
                        transaction.queued.push(Queued::Other(args.to_vec()))
                    }
                    Err(problem) => {
                        transaction.failed = true;
                        return Some(error(unknown_with_args(problem.to_string(), args)));
                    }
                }
                Frame::Simple("QUEUED".into())
            }
        };
        Some(frame)
    }

    /// `WATCH key...`: remembers each key's current version.
    async fn watch(&self, session: &mut Session<N, C>, keys: &[Bytes]) -> Frame {
        // One read per key: watched keys may live in different groups (a transaction that
        // then touches them all is refused with CROSSSLOT at EXEC).
        for key in keys {
            let read = Command::Versions {
                keys: vec![key.clone()],
            };
            match session.client.execute(read).await {
                Ok(Reply::Array(versions)) => match versions.as_slice() {
                    [Reply::Int(version)] => session.watched.push((key.clone(), *version as u64)),
                    _ => return error("ERR unexpected answer to a version read"),
                },
                Ok(other) => return Frame::from(&other),
                Err(e) => return client_error(e, &self.config.bugs),
            }
        }
        Frame::Simple("OK".into())
    }

    async fn exec(
        &self,
        session: &mut Session<N, C>,
        transaction: Transaction,
        watched: Vec<(Bytes, u64)>,
    ) -> Frame {
        let mut keyed = Vec::new();
        for queued in &transaction.queued {
            if let Queued::Keyed(command) = queued {
                keyed.push(command.clone());
            }
        }
        let mut keyed_replies = Vec::new().into_iter();
        if !keyed.is_empty() || !watched.is_empty() {
            let mut entry = Command::Transaction {
                commands: keyed,
                watched,
            };
            entry.reseed(session.next_seed(self.clock.now()));
            match session.client.execute(entry).await {
                Ok(Reply::Array(replies)) => keyed_replies = replies.into_iter(),
                Ok(Reply::NilArray) => return Frame::Array(None),
                Ok(other) => return Frame::from(&other),
                Err(e) => return client_error(e, &self.config.bugs),
            }
        }
        let mut frames = Vec::with_capacity(transaction.queued.len());
        for queued in transaction.queued {
            frames.push(match queued {
                Queued::Keyed(_) => keyed_replies
                    .next()
                    .map_or_else(|| error("ERR missing reply"), |reply| Frame::from(&reply)),
                Queued::Other(args) => Box::pin(self.dispatch(session, args)).await,
            });
        }
        Frame::Array(Some(frames))
    }

    /// Serves a blocking command: polls `command` until it yields a reply other than nil or
    /// the null array, or `timeout` passes (then answers what the last poll answered).
    pub(super) async fn blocking(
        &self,
        session: &mut Session<N, C>,
        command: Command,
        timeout: BlockTimeout,
    ) -> Frame {
        self.counters
            .blocked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let frame = self.poll_blocked(session, command, timeout).await;
        self.counters
            .blocked
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        frame
    }

    async fn poll_blocked(
        &self,
        session: &mut Session<N, C>,
        command: Command,
        timeout: BlockTimeout,
    ) -> Frame {
        let deadline = (timeout.0 > 0).then(|| self.clock.now() + Duration::from_millis(timeout.0));
        let sources: Vec<Bytes> = command.block_sources().into_iter().cloned().collect();
        let probe = Command::Exists {
            keys: sources.clone(),
        };
        let waiter = self.waiters.join(sources);
        let mut wait = BLOCK_POLL_FIRST;
        loop {
            if !waiter.is_first() {
                // An earlier client waits on every key of ours: let it take what comes first.
                if let Some(deadline) = deadline
                    && self.clock.now() >= deadline
                {
                    return Frame::from(&command.timed_out_reply());
                }
                self.clock.sleep(BLOCK_POLL_FIRST.min(wait)).await;
                continue;
            }
            let present = match session.client.execute(probe.clone()).await {
                Ok(Reply::Int(count)) => count > 0,
                Ok(other) => return Frame::from(&other),
                Err(e) => return client_error(e, &self.config.bugs),
            };
            if present {
                match session.client.execute(command.clone()).await {
                    Ok(Reply::Nil | Reply::NilArray) => {}
                    Ok(reply) => return Frame::from(&reply),
                    Err(e) => return client_error(e, &self.config.bugs),
                }
            }
            if let Some(deadline) = deadline {
                let now = self.clock.now();
                if now >= deadline {
                    return Frame::from(&command.timed_out_reply());
                }
                wait = wait.min(deadline - now);
            }
            self.clock.sleep(wait).await;
            wait = (wait * 2).min(BLOCK_POLL_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_clients_go_first_come_first_served_per_key() {
        let waiters = Waiters::default();
        let key = |k: &str| Bytes::copy_from_slice(k.as_bytes());
        let first = waiters.join(vec![key("x")]);
        let second = waiters.join(vec![key("x"), key("y")]);
        let third = waiters.join(vec![key("x")]);
        assert!(first.is_first());
        // First on `y`, so it may poll `y` while `first` holds `x`.
        assert!(second.is_first());
        assert!(!third.is_first());
        drop(first);
        drop(second);
        assert!(third.is_first());
        drop(third);
        assert_eq!(
            waiters.keys(),
            0,
            "queues of keys nobody waits on are removed"
        );
    }
}
