//! Locks with fencing tokens: a key of type `lock` held by one holder for a lease, each
//! acquisition numbered by a token that only ever grows.
//!
//! A lease alone cannot make a lock safe: a holder paused past its lease (a GC pause, a stalled
//! VM, a clock that jumped) still believes it holds the lock while another has taken it, and
//! nothing the holder can check beforehand rules that out. What makes it safe is the token:
//! every acquisition gets a larger one, and a store that remembers the largest token it has
//! seen refuses a write with a smaller one. `LOCK.FENCE` is that check for writes to Larder
//! itself: inside `MULTI … EXEC` it makes the whole transaction run only while the lock is still
//! held with the caller's token, checked at the transaction's own log entry, so no other
//! acquisition can come between the check and the writes.
//!
//! - `LOCK.ACQUIRE name holder lease-ms`: the token when the lock was free (or expired) and is
//!   now `holder`'s for `lease-ms`, or held by `holder` already (its lease is extended and the
//!   token is the same: a retried acquisition answers as the first did); nil when another holds
//!   it.
//! - `LOCK.RELEASE name token`: 1 when the lock was held with `token` and is now free, else 0.
//! - `LOCK.FENCE name token`: `OK` when the lock is held with `token`, else a `FENCED` error; in a
//!   transaction, a failing fence stops the whole transaction before any command runs.
//! - `LOCK.INFO name`: `[holder, token, lease ms left]` (holder nil and 0 ms left once it is
//!   free), nil when there is no lock.
//!
//! A transaction whose fence fails runs none of its commands, and `EXEC` answers each with a
//! `FENCED` error (the failing fence its reason), which client libraries report as the
//! transaction's error.
//!
//! Leases are judged by the group clock (the timestamps of the log entries, never going back),
//! as key expiry is, so every replica agrees when a lease ended. Tokens are
//! `max(previous + 1, (group clock + 1) · TOKEN_PER_MS)`: they grow with every acquisition of
//! the record, and a record made afresh (the first acquisition, or one after the record was
//! removed) starts above every token of the millisecond before. A free lock's record stays
//! [`LOCK_RETAIN_MS`] past its lease so that its counter outlives it; only a record removed by
//! hand (`DEL`, `FLUSHALL`, a `SET` over it) within the millisecond of an acquisition could let
//! the next acquisition repeat a token.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::command::{Keys, arity_fits, parse_i64};
use super::execute::View;
use super::{CommandError, Record, Reply, Value, WRONGTYPE};

/// Longest lease an acquisition may ask for: a day. A lock held longer is a holder that died
/// without releasing it, and a short lease renewed by the living holder is the pattern.
pub const LEASE_MS_MAX: i64 = 24 * 60 * 60 * 1000;
/// Longest holder name.
pub const HOLDER_BYTES_MAX: usize = 1024;
/// How long a lock's record stays once its lease ended or it was released, keeping its token
/// counter: a record removed and made again starts from the clock, which is safe only once the
/// clock is past every token the old record issued (see the module docs).
pub const LOCK_RETAIN_MS: u64 = 60_000;
/// Tokens per millisecond of the group clock, the spacing of a fresh record's first token. At
/// 1,000 a token reads as the microseconds of the group clock, and fits `i64` until the year
/// 294,000.
pub const TOKEN_PER_MS: u64 = 1000;
/// The error text of a failed fence starts with this code.
pub const FENCED: &str = "FENCED";
/// What the other commands of a transaction whose fence failed answer.
pub const NOT_RUN: &str = "FENCED not run: a fence of this transaction failed";

/// A lock's state: the value of a key of type `lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Who holds it; `None` once released.
    pub holder: Option<Bytes>,
    /// The token of the last acquisition.
    pub token: u64,
    /// When the lease ends, in group-clock milliseconds.
    pub lease_ends_ms: u64,
}

impl Lock {
    /// Who holds the lock at `now_ms` and with which token: nobody once released or once its
    /// lease ended.
    pub fn held_at(&self, now_ms: u64) -> Option<(&Bytes, u64)> {
        match &self.holder {
            Some(holder) if now_ms < self.lease_ends_ms => Some((holder, self.token)),
            _ => None,
        }
    }

    /// The record holding this lock: it stays until [`LOCK_RETAIN_MS`] after the lease ends
    /// (or after `now_ms`, for a lock released early).
    fn record(self, now_ms: u64) -> Record {
        let expires_at_ms = self
            .lease_ends_ms
            .max(now_ms)
            .saturating_add(LOCK_RETAIN_MS);
        Record {
            value: Value::Lock(self),
            expires_at_ms: Some(expires_at_ms),
        }
    }
}

/// A lock command. Stored in the log: variants only ever added at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommand {
    Acquire {
        name: Bytes,
        holder: Bytes,
        lease_ms: u64,
    },
    Release {
        name: Bytes,
        token: u64,
    },
    Fence {
        name: Bytes,
        token: u64,
    },
    Info {
        name: Bytes,
    },
}

fn parse_token(arg: &Bytes) -> Result<u64, CommandError> {
    u64::try_from(parse_i64(arg)?).map_err(|_| CommandError::Message("ERR invalid token".into()))
}

impl LockCommand {
    pub(super) fn parse(name: &str, rest: &[Bytes]) -> Option<Result<LockCommand, CommandError>> {
        let arity = |ok: bool| arity_fits(name, ok);
        let parsed = match name {
            "lock.acquire" => (|| {
                arity(rest.len() == 3)?;
                let holder = rest[1].clone();
                if holder.is_empty() || holder.len() > HOLDER_BYTES_MAX {
                    return Err(CommandError::Message(format!(
                        "ERR a lock holder is 1 to {HOLDER_BYTES_MAX} bytes"
                    )));
                }
                let lease_ms = parse_i64(&rest[2])?;
                if !(1..=LEASE_MS_MAX).contains(&lease_ms) {
                    return Err(CommandError::Message(format!(
                        "ERR invalid lease: 1 to {LEASE_MS_MAX} ms"
                    )));
                }
                Ok(LockCommand::Acquire {
                    name: rest[0].clone(),
                    holder,
                    lease_ms: lease_ms as u64,
                })
            })(),
            "lock.release" | "lock.fence" => (|| {
                arity(rest.len() == 2)?;
                let (name_arg, token) = (rest[0].clone(), parse_token(&rest[1])?);
                Ok(if name == "lock.release" {
                    LockCommand::Release {
                        name: name_arg,
                        token,
                    }
                } else {
                    LockCommand::Fence {
                        name: name_arg,
                        token,
                    }
                })
            })(),
            "lock.info" => arity(rest.len() == 1).map(|()| LockCommand::Info {
                name: rest[0].clone(),
            }),
            _ => return None,
        };
        Some(parsed)
    }

    pub fn is_write(&self) -> bool {
        matches!(
            self,
            LockCommand::Acquire { .. } | LockCommand::Release { .. }
        )
    }

    pub fn keys(&self) -> Keys<'_> {
        smallvec::smallvec![self.lock_name()]
    }

    /// The key of the lock the command acts on.
    fn lock_name(&self) -> &Bytes {
        match self {
            LockCommand::Acquire { name, .. }
            | LockCommand::Release { name, .. }
            | LockCommand::Fence { name, .. }
            | LockCommand::Info { name } => name,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            LockCommand::Acquire { .. } => "lock.acquire",
            LockCommand::Release { .. } => "lock.release",
            LockCommand::Fence { .. } => "lock.fence",
            LockCommand::Info { .. } => "lock.info",
        }
    }

    pub(super) fn execute(&self, view: &mut View<'_>) -> Reply {
        let now_ms = view.now_ms;
        let name = self.lock_name();
        let lock = match lock_at(view, name) {
            Ok(lock) => lock.cloned(),
            Err(wrong_type) => return wrong_type,
        };
        match self {
            LockCommand::Acquire {
                holder, lease_ms, ..
            } => {
                let lease_ends_ms = now_ms.saturating_add(*lease_ms);
                let token = match lock.as_ref().and_then(|lock| lock.held_at(now_ms)) {
                    Some((current, token)) if current == holder => token,
                    Some(_) => return Reply::Nil,
                    None => {
                        let fresh = now_ms.saturating_add(1).saturating_mul(TOKEN_PER_MS);
                        lock.as_ref()
                            .map_or(fresh, |lock| lock.token.saturating_add(1).max(fresh))
                    }
                };
                let lock = Lock {
                    holder: Some(holder.clone()),
                    token,
                    lease_ends_ms,
                };
                view.put(name, Some(lock.record(now_ms)));
                Reply::Int(i64::try_from(token).unwrap_or(i64::MAX))
            }
            LockCommand::Release { token, .. } => match lock {
                Some(lock) if lock.held_at(now_ms).is_some_and(|(_, held)| held == *token) => {
                    let released = Lock {
                        holder: None,
                        token: lock.token,
                        lease_ends_ms: now_ms,
                    };
                    view.put(name, Some(released.record(now_ms)));
                    Reply::Int(1)
                }
                _ => {
                    if view.is_stale(name) {
                        view.put(name, None);
                    }
                    Reply::Int(0)
                }
            },
            LockCommand::Fence { token, .. } => fence(lock.as_ref(), name, *token, now_ms),
            LockCommand::Info { .. } => match lock {
                None => Reply::Nil,
                Some(lock) => {
                    let (holder, left) = match lock.held_at(now_ms) {
                        Some((holder, _)) => (
                            Reply::Bulk(holder.clone()),
                            lock.lease_ends_ms.saturating_sub(now_ms),
                        ),
                        None => (Reply::Nil, 0),
                    };
                    Reply::Array(vec![
                        holder,
                        Reply::Int(i64::try_from(lock.token).unwrap_or(i64::MAX)),
                        Reply::Int(i64::try_from(left).unwrap_or(i64::MAX)),
                    ])
                }
            },
        }
    }
}

/// The live lock at `name` (`None`: no key); `WRONGTYPE` when the key holds something else.
fn lock_at<'a>(view: &'a View<'_>, name: &Bytes) -> Result<Option<&'a Lock>, Reply> {
    match view.get(name) {
        None => Ok(None),
        Some(Record {
            value: Value::Lock(lock),
            ..
        }) => Ok(Some(lock)),
        Some(_) => Err(Reply::error(WRONGTYPE)),
    }
}

/// A fence's answer: `OK` when `lock` is held with `token` at `now_ms`, else the `FENCED` error.
fn fence(lock: Option<&Lock>, name: &Bytes, token: u64, now_ms: u64) -> Reply {
    match lock.and_then(|lock| lock.held_at(now_ms)) {
        Some((_, held)) if held == token => Reply::Ok,
        Some((_, held)) => Reply::error(format!(
            "{FENCED} lock '{}' is held with token {held}, not {token}",
            String::from_utf8_lossy(name)
        )),
        None => Reply::error(format!(
            "{FENCED} lock '{}' is not held",
            String::from_utf8_lossy(name)
        )),
    }
}

/// The replies of a transaction whose fence fails, judged before any command runs on the
/// state the transaction's entry starts from: `None` when every fence passes. Otherwise
/// nothing runs, and each command answers an error: the first failing fence its own, every
/// other command that it did not run. An array of errors rather than one error for `EXEC`:
/// client libraries read an array from `EXEC` (one error there is Redis's `EXECABORT` only,
/// which some cannot parse) and report the first error in it.
pub(super) fn fenced_off(commands: &[super::Command], view: &View<'_>) -> Option<Reply> {
    let (failed, refusal) = failed_fence(commands, view)?;
    Some(Reply::Array(
        (0..commands.len())
            .map(|index| {
                if index == failed {
                    refusal.clone()
                } else {
                    Reply::error(NOT_RUN)
                }
            })
            .collect(),
    ))
}

/// The position and error reply of the first fence of `commands` that fails.
fn failed_fence(commands: &[super::Command], view: &View<'_>) -> Option<(usize, Reply)> {
    commands.iter().enumerate().find_map(|(index, command)| {
        let super::Command::LockOp(LockCommand::Fence { name, token }) = command else {
            return None;
        };
        let lock = match lock_at(view, name) {
            Ok(lock) => lock,
            Err(wrong_type) => return Some((index, wrong_type)),
        };
        let reply = fence(lock, name, *token, view.now_ms);
        reply.is_error().then_some((index, reply))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::super::string::tests::{check, run_lines};
    use super::super::{Command, Record, Reply, execute};
    use super::{LOCK_RETAIN_MS, TOKEN_PER_MS};

    fn err(text: &str) -> Reply {
        Reply::error(text)
    }

    /// The first token a fresh record gets at group clock `now_ms`.
    fn fresh(now_ms: u64) -> i64 {
        ((now_ms + 1) * TOKEN_PER_MS) as i64
    }

    #[test]
    fn a_lock_is_held_by_one_holder_until_released_or_its_lease_ends() {
        let first = fresh(1_000);
        check(
            &[
                (1_000, "LOCK.ACQUIRE job a 500"),
                // A retried acquisition by the holder answers as the first and extends the
                // lease (to 1,600).
                (1_100, "LOCK.ACQUIRE job a 500"),
                (1_200, "LOCK.ACQUIRE job b 500"),
                (1_200, "LOCK.INFO job"),
                (1_300, "LOCK.RELEASE job 5"),
            ],
            &[
                Reply::Int(first),
                Reply::Int(first),
                Reply::Nil,
                Reply::Array(vec![
                    Reply::Bulk(Bytes::from_static(b"a")),
                    Reply::Int(first),
                    Reply::Int(400),
                ]),
                Reply::Int(0),
            ],
        );
        let release = format!("LOCK.RELEASE job {first}");
        let fence_old = format!("LOCK.FENCE job {first}");
        let (state, replies) = run_lines(&[
            (1_000, "LOCK.ACQUIRE job a 500"),
            (1_300, &release),
            (1_300, &release),
            (1_300, "LOCK.INFO job"),
            (1_300, "LOCK.ACQUIRE job b 500"),
            (1_301, &fence_old),
            (1_400, "TYPE job"),
            // b's lease ends at 1,800: c takes the lock.
            (1_800, "LOCK.ACQUIRE job c 100"),
            (1_850, "LOCK.ACQUIRE job a 100"),
            // c's lease ended at 1,900; the record stays, free, with its counter.
            (1_900, "LOCK.INFO job"),
            (1_900, "LOCK.RELEASE job 0"),
        ]);
        let after_release = fresh(1_300);
        let after_expiry = fresh(1_800);
        assert_eq!(
            replies,
            vec![
                Reply::Int(first),
                Reply::Int(1),
                Reply::Int(0),
                Reply::Array(vec![Reply::Nil, Reply::Int(first), Reply::Int(0)]),
                Reply::Int(after_release),
                err(&format!(
                    "FENCED lock 'job' is held with token {after_release}, not {first}"
                )),
                Reply::Status("lock".into()),
                Reply::Int(after_expiry),
                Reply::Nil,
                Reply::Array(vec![Reply::Nil, Reply::Int(after_expiry), Reply::Int(0)]),
                Reply::Int(0),
            ],
        );
        // The free record stays for the retention, then goes like an expired key.
        let record = &state[&Bytes::from_static(b"job")];
        assert_eq!(record.expires_at_ms, Some(1_900 + LOCK_RETAIN_MS));
    }

    #[test]
    fn tokens_grow_within_a_millisecond_and_after_the_record_is_gone() {
        let (_, replies) = run_lines(&[
            (5, "LOCK.ACQUIRE l a 1"),
            // Released and taken again in the same millisecond: the counter goes on.
            (5, &format!("LOCK.RELEASE l {}", fresh(5))),
            (5, "LOCK.ACQUIRE l b 1"),
            // Long after the record expired: a fresh record starts from the clock.
            (10 + LOCK_RETAIN_MS, "LOCK.INFO l"),
            (10 + LOCK_RETAIN_MS, "LOCK.ACQUIRE l c 1"),
        ]);
        assert_eq!(
            replies,
            vec![
                Reply::Int(fresh(5)),
                Reply::Int(1),
                Reply::Int(fresh(5) + 1),
                Reply::Nil,
                Reply::Int(fresh(10 + LOCK_RETAIN_MS)),
            ]
        );
    }

    #[test]
    fn a_fence_in_a_transaction_runs_all_or_nothing() {
        let mut state: BTreeMap<Bytes, Record> = BTreeMap::new();
        let token = fresh(0);
        let parse = |line: &str| {
            let args: Vec<Bytes> = line
                .split_whitespace()
                .map(|word| Bytes::copy_from_slice(word.as_bytes()))
                .collect();
            Command::parse(&args).expect("parses")
        };
        let acquire = execute(&parse("LOCK.ACQUIRE {j}lock a 1000"), 0, &state);
        state.extend(
            acquire
                .writes
                .into_iter()
                .map(|(key, record)| (key, record.expect("written"))),
        );
        let transaction = |token: i64| Command::Transaction {
            commands: vec![
                parse(&format!("LOCK.FENCE {{j}}lock {token}")),
                parse("SET {j}data x"),
                parse("INCR {j}count"),
            ],
            watched: Vec::new(),
        };
        let held = execute(&transaction(token), 10, &state);
        assert_eq!(
            held.reply,
            Reply::Array(vec![Reply::Ok, Reply::Ok, Reply::Int(1)])
        );
        assert_eq!(held.writes.len(), 2);
        for (stale, now, why) in [
            (token - 1, 10, "held with token"),
            (token, 1_000, "not held"),
        ] {
            let refused = execute(&transaction(stale), now, &state);
            let Reply::Array(replies) = &refused.reply else {
                panic!("{:?}", refused.reply);
            };
            assert!(
                matches!(&replies[0], Reply::Error(text) if text.starts_with("FENCED") && text.contains(why)),
                "{replies:?}"
            );
            let not_run = err("FENCED not run: a fence of this transaction failed");
            assert_eq!(replies[1..], [not_run.clone(), not_run]);
            assert!(refused.writes.is_empty(), "a refused transaction wrote");
        }
    }

    #[test]
    fn locks_refuse_bad_arguments_and_other_types() {
        check(
            &[
                (0, "LOCK.ACQUIRE l a 0"),
                (0, "LOCK.ACQUIRE l a 86400001"),
                (0, "LOCK.ACQUIRE l a x"),
                (0, "LOCK.ACQUIRE l a"),
                (0, "LOCK.RELEASE l -1"),
                (0, "LOCK.FENCE l"),
                (0, "SET s v"),
                (0, "LOCK.ACQUIRE s a 10"),
                (0, "LOCK.FENCE s 1"),
                (0, "LOCK.FENCE none 1"),
                (0, "LOCK.INFO none"),
                (0, "LOCK.ACQUIRE l a 10"),
                (0, "DUMP l"),
                (0, "GET l"),
            ],
            &[
                err("ERR invalid lease: 1 to 86400000 ms"),
                err("ERR invalid lease: 1 to 86400000 ms"),
                err("ERR value is not an integer or out of range"),
                err("ERR wrong number of arguments for 'lock.acquire' command"),
                err("ERR invalid token"),
                err("ERR wrong number of arguments for 'lock.fence' command"),
                Reply::Ok,
                err(super::super::WRONGTYPE),
                err(super::super::WRONGTYPE),
                err("FENCED lock 'none' is not held"),
                Reply::Nil,
                Reply::Int(fresh(0)),
                err("ERR a lock cannot be dumped: Redis's format has no lock type"),
                err(super::super::WRONGTYPE),
            ],
        );
        let long = "h".repeat(super::HOLDER_BYTES_MAX + 1);
        let (_, replies) = run_lines(&[(0, &format!("LOCK.ACQUIRE l {long} 10"))]);
        assert_eq!(replies, vec![err("ERR a lock holder is 1 to 1024 bytes")]);
    }

    #[test]
    fn a_lease_end_lapses_like_an_expiry() {
        let (state, _) = run_lines(&[(1_000, "LOCK.ACQUIRE l a 500"), (0, "SET s v PX 2000")]);
        let lock = &state[&Bytes::from_static(b"l")];
        // Held until 1,500 by any clock before it.
        assert!(!lock.lapses_between(1_000, 1_499));
        assert!(lock.lapses_between(1_000, 1_500));
        assert!(lock.lapses_between(1_499, 9_000));
        // Already ended at the group clock: nothing left to lapse (until the key expires).
        assert!(!lock.lapses_between(1_500, 9_000));
        assert!(lock.lapses_between(1_500, 1_500 + LOCK_RETAIN_MS));
        let string = &state[&Bytes::from_static(b"s")];
        assert!(string.lapses_between(1_999, 2_000));
        assert!(!string.lapses_between(0, 1_999));
    }

    proptest! {
        /// Whatever the holders do and however the clock moves (it never goes back), each
        /// acquisition that changes hands gets a larger token than every one before, and at
        /// any moment at most one holder's fence passes.
        #[test]
        fn tokens_only_grow(steps in proptest::collection::vec((0u8..4, 0u8..3, 0u64..3000, 1u64..2000), 1..60)) {
            let mut state: BTreeMap<Bytes, Record> = BTreeMap::new();
            let mut now = 0u64;
            let mut last_token = 0i64;
            let mut held: Option<(u8, i64)> = None;
            for (action, holder, advance, lease) in steps {
                // Big steps sometimes, so records expire and are made afresh.
                now += if advance > 2900 { LOCK_RETAIN_MS * 2 } else { advance };
                let line = match action {
                    0 | 1 => format!("LOCK.ACQUIRE l h{holder} {lease}"),
                    2 => format!("LOCK.RELEASE l {}", held.map_or(last_token, |(_, t)| t)),
                    _ => "LOCK.INFO l".to_string(),
                };
                let args: Vec<Bytes> = line.split_whitespace().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
                let command = Command::parse(&args).expect("parses");
                let outcome = execute(&command, now, &state);
                for (key, record) in outcome.writes {
                    match record {
                        Some(record) => state.insert(key, record),
                        None => state.remove(&key),
                    };
                }
                if let (0 | 1, Reply::Int(token)) = (action, &outcome.reply) {
                    match held {
                        Some((same, current)) if same == holder && current == *token => {}
                        _ => {
                            prop_assert!(*token > last_token, "token {} after {}", token, last_token);
                            last_token = *token;
                        }
                    }
                    held = Some((holder, *token));
                }
                // Exactly the last token's fence passes while the lock is held.
                let fences: Vec<bool> = [(last_token - 1).max(0), last_token].iter().map(|token| {
                    let args: Vec<Bytes> = ["LOCK.FENCE", "l", &token.to_string()].iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
                    execute(&Command::parse(&args).expect("parses"), now, &state).reply == Reply::Ok
                }).collect();
                prop_assert!(!fences[0], "a stale token's fence passed");
                let info = execute(&Command::parse(&[Bytes::from_static(b"LOCK.INFO"), Bytes::from_static(b"l")]).expect("parses"), now, &state).reply;
                let is_held = matches!(&info, Reply::Array(items) if items[0] != Reply::Nil);
                prop_assert_eq!(fences[1], is_held);
                if !is_held {
                    held = None;
                }
            }
        }
    }
}
