//! A connection's transactions (`MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`).
//!
//! A transaction's keyed commands travel to their group as one [`Command::Transaction`]: one
//! log entry, so they apply atomically and nothing interleaves. They must all live in one slot
//! group (the cluster client answers `CROSSSLOT` otherwise, as Redis Cluster does for keys of
//! different slots). `WATCH` reads each key's version ([`Command::Versions`]) and the entry
//! carries them: it runs only if none changed. Commands that are not keyed (`PING`, `KEYS`,
//! `DBSIZE`, `FLUSHALL`, `INFO`, …) are queued too and answered in their place at `EXEC`,
//! outside the entry.

use bytes::Bytes;
use larder_core::bugs::Bug;
use larder_core::env::{Clock, Net};
use larder_core::kv::lock::{self, LockCommand};
use larder_core::kv::{Command, Reply, Scope};
use larder_core::resp::Frame;

use super::{Proxy, Session, arity, client_error, error, unknown_with_args};

/// Most commands one transaction may queue: a bound on the connection's memory (Redis has
/// none but the client's query buffer; ours is per command).
pub const QUEUED_MAX: usize = 100_000;

/// An open `MULTI`.
#[derive(Debug, Default)]
pub(super) struct Transaction {
    queued: Vec<Queued>,
    /// Bytes of the queued commands' arguments (`CLIENT LIST`'s `multi-mem`).
    queued_bytes: usize,
    /// The queued commands as sent, kept while anyone monitors: `EXEC` shows them.
    shown: Vec<Vec<Bytes>>,
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

impl Transaction {
    /// Commands queued so far (`CLIENT LIST`'s `multi`).
    pub(super) fn queued(&self) -> usize {
        self.queued.len()
    }

    pub(super) fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// The queued commands kept for the monitors.
    pub(super) fn take_shown(&mut self) -> Vec<Vec<Bytes>> {
        std::mem::take(&mut self.shown)
    }
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
                transaction.queued_bytes += args.iter().map(Bytes::len).sum::<usize>();
                if self.monitors.active() {
                    transaction.shown.push(args.to_vec());
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
        // A failing fence (`LOCK.FENCE`) ran none of the keyed commands: the others (group
        // commands such as `FLUSHALL`, the proxy's own) must not run either.
        let mut fenced_off = false;
        if self.config.bugs.is_planted(Bug::TornTransaction) && watched.is_empty() {
            // The planted mistake: with no version to check, the commands "need no entry of
            // their own" and go one by one, so others' commands apply between them.
            let mut replies = Vec::with_capacity(keyed.len());
            for command in keyed.drain(..) {
                match session.client.execute(command).await {
                    Ok(reply) => replies.push(reply),
                    Err(e) => return client_error(e, &self.config.bugs),
                }
            }
            keyed_replies = replies.into_iter();
        }
        if !keyed.is_empty() || !watched.is_empty() {
            let written: Vec<Bytes> = keyed
                .iter()
                .filter(|command| command.is_write())
                .flat_map(|command| command.keys().into_iter().cloned())
                .collect();
            let has_fence = keyed
                .iter()
                .any(|command| matches!(command, Command::LockOp(LockCommand::Fence { .. })));
            let mut entry = Command::Transaction {
                commands: keyed,
                watched,
            };
            entry.reseed(session.next_seed(self.clock.now()));
            match session.client.execute(entry).await {
                Ok(Reply::Array(replies)) => {
                    fenced_off = has_fence
                        && replies.iter().all(|reply| {
                            matches!(reply, Reply::Error(text) if text.starts_with(lock::FENCED))
                        });
                    keyed_replies = replies.into_iter();
                    self.serve_waiters(session, written).await;
                }
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
                Queued::Other(_) if fenced_off => error(lock::NOT_RUN),
                Queued::Other(args) => Box::pin(self.dispatch(session, args)).await,
            });
        }
        Frame::Array(Some(frames))
    }
}
