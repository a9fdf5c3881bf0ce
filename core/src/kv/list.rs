//! List commands. Each family of collection commands lives in its own module with the same
//! shape: an enum of its commands (stored in the log inside [`Command`](super::Command), so
//! variants are only ever added at the end), parsing from Redis arguments, classification, and
//! execution over a [`View`].
//!
//! Blocking commands (`BLPOP`, `BRPOP`, `BLMPOP`, `BLMOVE`, `BRPOPLPUSH`) are not executed by
//! replicas as such: [`parse_blocking`] turns one into the non-blocking command the proxy polls
//! until it yields or the [`BlockTimeout`] passes. The polled command's reply when there is
//! nothing to pop ([`Reply::NilArray`] for the pops, [`Reply::Nil`] for a move) is also the
//! blocking command's reply on timeout.

use std::collections::VecDeque;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::command::parse_integer;
use super::execute::View;
use super::{CommandError, NOT_INTEGER, Record, Reply, Value, WRONGTYPE};

/// An end of a list: `LEFT` is the head (index 0), `RIGHT` the tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum End {
    Left,
    Right,
}

/// How [`ListCommand::PopFirstNonEmpty`] answers what it popped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PopShape {
    /// `BLPOP`/`BRPOP`: `[key, element]` (one element).
    Single,
    /// `LMPOP`/`BLMPOP`: `[key, [element, ...]]`.
    Multi,
}

/// How long a blocking command waits, in milliseconds; 0 waits forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockTimeout(pub u64);

/// A list command as replicas execute it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListCommand {
    /// `LPUSH`/`RPUSH` (and `LPUSHX`/`RPUSHX` with `only_if_exists`): pushes the elements one
    /// by one at `end`; answers the new length (0 for an `X` push on a missing key).
    Push {
        key: Bytes,
        elements: Vec<Bytes>,
        end: End,
        only_if_exists: bool,
    },
    /// `LPOP`/`RPOP key [count]`: without a count, one element or nil; with one, an array
    /// (a null array on a missing key).
    Pop {
        key: Bytes,
        end: End,
        count: Option<u64>,
    },
    /// `LLEN key`.
    Len { key: Bytes },
    /// `LRANGE key start stop` (inclusive, negative from the end).
    Range { key: Bytes, start: i64, stop: i64 },
    /// `LINDEX key index`. `index` is `None` when the argument is not an integer: Redis
    /// answers that only after looking the key up (a missing key is nil first).
    Index { key: Bytes, index: Option<i64> },
    /// `LSET key index element` (`index` as in [`ListCommand::Index`]).
    Set {
        key: Bytes,
        index: Option<i64>,
        element: Bytes,
    },
    /// `LREM key count element`: removes up to `|count|` matches from the head (count > 0),
    /// the tail (count < 0) or all of them (0).
    Rem {
        key: Bytes,
        count: i64,
        element: Bytes,
    },
    /// `LTRIM key start stop`.
    Trim { key: Bytes, start: i64, stop: i64 },
    /// `LINSERT key BEFORE|AFTER pivot element`.
    Insert {
        key: Bytes,
        after: bool,
        pivot: Bytes,
        element: Bytes,
    },
    /// `LPOS key element [RANK rank] [COUNT count] [MAXLEN len]`; `rank` is never 0 nor
    /// `i64::MIN`, `count` is `Some` when given (0: all matches), `maxlen` 0 scans everything.
    Pos {
        key: Bytes,
        element: Bytes,
        rank: i64,
        count: Option<u64>,
        maxlen: u64,
    },
    /// `LMOVE source destination LEFT|RIGHT LEFT|RIGHT` (and `RPOPLPUSH`, `from: Right, to:
    /// Left`): nil when the source is empty; `WRONGTYPE` (nothing popped) when either key holds
    /// another type.
    Move {
        source: Bytes,
        destination: Bytes,
        from: End,
        to: End,
    },
    /// Pops from the first of `keys` holding a list, as `LMPOP` (and the polled form of
    /// `BLPOP`, `BRPOP`, `BLMPOP`): up to `count` elements (`None`: one), answered in `shape`;
    /// a null array when every key is empty; `WRONGTYPE` at the first key of another type
    /// before any list.
    PopFirstNonEmpty {
        keys: Vec<Bytes>,
        end: End,
        count: Option<u64>,
        shape: PopShape,
    },
}

const NO_SUCH_KEY: &str = "ERR no such key";
const INDEX_OUT_OF_RANGE: &str = "ERR index out of range";
const NOT_POSITIVE: &str = "ERR value is out of range, must be positive";
const RANK_ZERO: &str = "ERR RANK can't be zero: use 1 to start from the first match, 2 from the \
                         second ... or use negative to start from the end of the list";
/// `RANK -9223372036854775808` cannot be negated (Redis 7.0 overflows; 7.2 answers this).
const RANK_OUT_OF_RANGE: &str =
    "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807";
const COUNT_NEGATIVE: &str = "ERR COUNT can't be negative";
const MAXLEN_NEGATIVE: &str = "ERR MAXLEN can't be negative";
const NUMKEYS: &str = "ERR numkeys should be greater than 0";
const MPOP_COUNT: &str = "ERR count should be greater than 0";
const TIMEOUT_NOT_FLOAT: &str = "ERR timeout is not a float or out of range";
const TIMEOUT_NEGATIVE: &str = "ERR timeout is negative";

/// The non-blocking list commands [`ListCommand::parse`] knows.
const NAMES: [&str; 17] = [
    "lpush",
    "rpush",
    "lpushx",
    "rpushx",
    "lpop",
    "rpop",
    "llen",
    "lrange",
    "ltrim",
    "lindex",
    "lset",
    "lrem",
    "linsert",
    "lpos",
    "lmove",
    "rpoplpush",
    "lmpop",
];

/// True for the blocking list commands, which [`parse_blocking`] parses.
pub fn is_blocking(name: &str) -> bool {
    ["blpop", "brpop", "blmpop", "blmove", "brpoplpush"]
        .iter()
        .any(|blocking| name.eq_ignore_ascii_case(blocking))
}

/// Parses a blocking list command named `name` from its arguments after the name: the
/// non-blocking command to poll (`LMOVE` for `BLMOVE`/`BRPOPLPUSH`, which answers nil while
/// the source is empty; [`ListCommand::PopFirstNonEmpty`] for the others, a null array) and
/// how long to wait. `None` when `name` is not a blocking list command.
pub fn parse_blocking(
    name: &str,
    rest: &[Bytes],
) -> Option<Result<(ListCommand, BlockTimeout), CommandError>> {
    let name = name.to_ascii_lowercase();
    is_blocking(&name).then(|| blocking(&name, rest))
}

fn blocking(name: &str, rest: &[Bytes]) -> Result<(ListCommand, BlockTimeout), CommandError> {
    let arity = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(CommandError::Arity {
                name: name.to_string(),
            })
        }
    };
    match name {
        "blpop" | "brpop" => {
            arity(rest.len() >= 2)?;
            let (timeout, keys) = rest.split_last().expect("two arguments at least");
            let timeout = parse_timeout(timeout)?;
            let end = if name == "blpop" {
                End::Left
            } else {
                End::Right
            };
            let command = ListCommand::PopFirstNonEmpty {
                keys: keys.to_vec(),
                end,
                count: None,
                shape: PopShape::Single,
            };
            Ok((command, timeout))
        }
        "blmpop" => {
            arity(rest.len() >= 4)?;
            // Redis checks numkeys, the end and COUNT before the timeout.
            let command = parse_mpop(&rest[1..])?;
            Ok((command, parse_timeout(&rest[0])?))
        }
        "blmove" => {
            arity(rest.len() == 5)?;
            let from = parse_end(&rest[2])?;
            let to = parse_end(&rest[3])?;
            let timeout = parse_timeout(&rest[4])?;
            let command = ListCommand::Move {
                source: rest[0].clone(),
                destination: rest[1].clone(),
                from,
                to,
            };
            Ok((command, timeout))
        }
        "brpoplpush" => {
            arity(rest.len() == 3)?;
            let timeout = parse_timeout(&rest[2])?;
            let command = ListCommand::Move {
                source: rest[0].clone(),
                destination: rest[1].clone(),
                from: End::Right,
                to: End::Left,
            };
            Ok((command, timeout))
        }
        _ => Err(CommandError::Unknown {
            name: name.to_string(),
        }),
    }
}

/// A blocking timeout as Redis 7.0's `getTimeoutFromObjectOrReply` reads it: a decimal
/// number of seconds (`strtold`: sign, fraction, exponent, `inf` allowed; no spaces), rounded
/// up to milliseconds. Beyond what milliseconds fit in 63 bits Redis's conversion yields
/// `LLONG_MIN` on x86, hence "negative" there too.
fn parse_timeout(arg: &[u8]) -> Result<BlockTimeout, CommandError> {
    let not_float = CommandError::Invalid(TIMEOUT_NOT_FLOAT);
    let text = std::str::from_utf8(arg).map_err(|_| not_float.clone())?;
    // `MAX_LONG_DOUBLE_CHARS` bounds the text; leading space is refused explicitly.
    if text.is_empty() || text.len() >= 5 * 1024 || text.starts_with(|c: char| c.is_whitespace()) {
        return Err(not_float);
    }
    let seconds: f64 = text.parse().map_err(|_| not_float.clone())?;
    if seconds.is_nan() {
        return Err(not_float);
    }
    let millis = (seconds * 1000.0).ceil();
    // `-0.0` (from a tiny negative number) is zero, as in Redis.
    if millis < 0.0 || millis >= 9.223_372_036_854_775_807e18 {
        return Err(CommandError::Invalid(TIMEOUT_NEGATIVE));
    }
    Ok(BlockTimeout(millis as u64))
}

fn parse_end(arg: &[u8]) -> Result<End, CommandError> {
    if arg.eq_ignore_ascii_case(b"left") {
        Ok(End::Left)
    } else if arg.eq_ignore_ascii_case(b"right") {
        Ok(End::Right)
    } else {
        Err(CommandError::Syntax)
    }
}

fn parse_i64(arg: &[u8]) -> Result<i64, CommandError> {
    parse_integer(arg).ok_or(CommandError::NotInteger)
}

/// An integer in `0..=i64::MAX`, any failure answered with `message` (Redis's
/// `getPositiveLongFromObjectOrReply`).
fn parse_non_negative(arg: &[u8], message: &'static str) -> Result<u64, CommandError> {
    parse_integer(arg)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or(CommandError::Invalid(message))
}

/// `LMPOP`'s arguments from `numkeys` on: `numkeys key [key ...] LEFT|RIGHT [COUNT count]`.
fn parse_mpop(rest: &[Bytes]) -> Result<ListCommand, CommandError> {
    let numkeys = parse_integer(&rest[0])
        .filter(|n| *n >= 1)
        .ok_or(CommandError::Invalid(NUMKEYS))?;
    // Redis 7.0: too few arguments after numkeys is a syntax error.
    let end_at = usize::try_from(numkeys)
        .ok()
        .and_then(|n| n.checked_add(1))
        .filter(|at| *at < rest.len())
        .ok_or(CommandError::Syntax)?;
    let end = parse_end(&rest[end_at])?;
    let mut count = None;
    let mut options = rest[end_at + 1..].iter();
    while let Some(option) = options.next() {
        match options.as_slice().first() {
            Some(value) if count.is_none() && option.eq_ignore_ascii_case(b"count") => {
                options.next();
                let n = parse_integer(value)
                    .filter(|n| *n >= 1)
                    .ok_or(CommandError::Invalid(MPOP_COUNT))?;
                count = Some(n as u64);
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    Ok(ListCommand::PopFirstNonEmpty {
        keys: rest[1..end_at].to_vec(),
        end,
        count: Some(count.unwrap_or(1)),
        shape: PopShape::Multi,
    })
}

fn parse_pos(rest: &[Bytes]) -> Result<ListCommand, CommandError> {
    let mut rank = 1;
    let mut count = None;
    let mut maxlen = 0;
    let mut options = rest[2..].iter();
    while let Some(option) = options.next() {
        let Some(value) = options.as_slice().first() else {
            return Err(CommandError::Syntax);
        };
        if option.eq_ignore_ascii_case(b"rank") {
            rank = parse_i64(value)?;
            if rank == 0 {
                return Err(CommandError::Invalid(RANK_ZERO));
            }
            if rank == i64::MIN {
                return Err(CommandError::Invalid(RANK_OUT_OF_RANGE));
            }
        } else if option.eq_ignore_ascii_case(b"count") {
            count = Some(parse_non_negative(value, COUNT_NEGATIVE)?);
        } else if option.eq_ignore_ascii_case(b"maxlen") {
            maxlen = parse_non_negative(value, MAXLEN_NEGATIVE)?;
        } else {
            return Err(CommandError::Syntax);
        }
        options.next();
    }
    Ok(ListCommand::Pos {
        key: rest[0].clone(),
        element: rest[1].clone(),
        rank,
        count,
        maxlen,
    })
}

impl ListCommand {
    /// Parses the command named `name` (lower case) from its arguments after the name;
    /// `None` when `name` is not a list command.
    ///
    /// A blocking command parses as the non-blocking command it polls ([`parse_blocking`],
    /// timeout dropped): what Redis does where a client may not block (`MULTI`, scripts).
    pub(super) fn parse(name: &str, rest: &[Bytes]) -> Option<Result<ListCommand, CommandError>> {
        if is_blocking(name) {
            return parse_blocking(name, rest).map(|parsed| parsed.map(|(command, _)| command));
        }
        NAMES.contains(&name).then(|| Self::parse_known(name, rest))
    }

    fn parse_known(name: &str, rest: &[Bytes]) -> Result<ListCommand, CommandError> {
        let arity = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(CommandError::Arity {
                    name: name.to_string(),
                })
            }
        };
        Ok(match name {
            "lpush" | "rpush" | "lpushx" | "rpushx" => {
                arity(rest.len() >= 2)?;
                ListCommand::Push {
                    key: rest[0].clone(),
                    elements: rest[1..].to_vec(),
                    end: if name.starts_with('l') {
                        End::Left
                    } else {
                        End::Right
                    },
                    only_if_exists: name.ends_with('x'),
                }
            }
            "lpop" | "rpop" => {
                arity(rest.len() == 1 || rest.len() == 2)?;
                ListCommand::Pop {
                    key: rest[0].clone(),
                    end: if name == "lpop" {
                        End::Left
                    } else {
                        End::Right
                    },
                    count: match rest.get(1) {
                        Some(count) => Some(parse_non_negative(count, NOT_POSITIVE)?),
                        None => None,
                    },
                }
            }
            "llen" => {
                arity(rest.len() == 1)?;
                ListCommand::Len {
                    key: rest[0].clone(),
                }
            }
            "lrange" | "ltrim" => {
                arity(rest.len() == 3)?;
                let (key, start, stop) =
                    (rest[0].clone(), parse_i64(&rest[1])?, parse_i64(&rest[2])?);
                if name == "lrange" {
                    ListCommand::Range { key, start, stop }
                } else {
                    ListCommand::Trim { key, start, stop }
                }
            }
            "lindex" => {
                arity(rest.len() == 2)?;
                ListCommand::Index {
                    key: rest[0].clone(),
                    index: parse_integer(&rest[1]),
                }
            }
            "lset" => {
                arity(rest.len() == 3)?;
                ListCommand::Set {
                    key: rest[0].clone(),
                    index: parse_integer(&rest[1]),
                    element: rest[2].clone(),
                }
            }
            "lrem" => {
                arity(rest.len() == 3)?;
                ListCommand::Rem {
                    key: rest[0].clone(),
                    count: parse_i64(&rest[1])?,
                    element: rest[2].clone(),
                }
            }
            "linsert" => {
                arity(rest.len() == 4)?;
                let after = if rest[1].eq_ignore_ascii_case(b"after") {
                    true
                } else if rest[1].eq_ignore_ascii_case(b"before") {
                    false
                } else {
                    return Err(CommandError::Syntax);
                };
                ListCommand::Insert {
                    key: rest[0].clone(),
                    after,
                    pivot: rest[2].clone(),
                    element: rest[3].clone(),
                }
            }
            "lpos" => {
                arity(rest.len() >= 2)?;
                parse_pos(rest)?
            }
            "lmove" => {
                arity(rest.len() == 4)?;
                ListCommand::Move {
                    source: rest[0].clone(),
                    destination: rest[1].clone(),
                    from: parse_end(&rest[2])?,
                    to: parse_end(&rest[3])?,
                }
            }
            "rpoplpush" => {
                arity(rest.len() == 2)?;
                ListCommand::Move {
                    source: rest[0].clone(),
                    destination: rest[1].clone(),
                    from: End::Right,
                    to: End::Left,
                }
            }
            "lmpop" => {
                arity(rest.len() >= 3)?;
                parse_mpop(rest)?
            }
            _ => {
                return Err(CommandError::Unknown {
                    name: name.to_string(),
                });
            }
        })
    }

    /// True for commands that change state (they go through the Raft log).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            ListCommand::Len { .. }
                | ListCommand::Range { .. }
                | ListCommand::Index { .. }
                | ListCommand::Pos { .. }
        )
    }

    /// Every key the command reads or writes, in argument order.
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            ListCommand::Push { key, .. }
            | ListCommand::Pop { key, .. }
            | ListCommand::Len { key }
            | ListCommand::Range { key, .. }
            | ListCommand::Index { key, .. }
            | ListCommand::Set { key, .. }
            | ListCommand::Rem { key, .. }
            | ListCommand::Trim { key, .. }
            | ListCommand::Insert { key, .. }
            | ListCommand::Pos { key, .. } => vec![key],
            ListCommand::Move {
                source,
                destination,
                ..
            } => vec![source, destination],
            ListCommand::PopFirstNonEmpty { keys, .. } => keys.iter().collect(),
        }
    }

    /// The command's name as clients spell it (`RPOPLPUSH` is an `lmove`; the polled form of
    /// `BLPOP`/`BRPOP` keeps their names, `BLMPOP`'s is `lmpop`).
    pub fn name(&self) -> &'static str {
        match self {
            ListCommand::Push {
                end,
                only_if_exists,
                ..
            } => match (end, only_if_exists) {
                (End::Left, false) => "lpush",
                (End::Right, false) => "rpush",
                (End::Left, true) => "lpushx",
                (End::Right, true) => "rpushx",
            },
            ListCommand::Pop { end: End::Left, .. } => "lpop",
            ListCommand::Pop {
                end: End::Right, ..
            } => "rpop",
            ListCommand::Len { .. } => "llen",
            ListCommand::Range { .. } => "lrange",
            ListCommand::Index { .. } => "lindex",
            ListCommand::Set { .. } => "lset",
            ListCommand::Rem { .. } => "lrem",
            ListCommand::Trim { .. } => "ltrim",
            ListCommand::Insert { .. } => "linsert",
            ListCommand::Pos { .. } => "lpos",
            ListCommand::Move { .. } => "lmove",
            ListCommand::PopFirstNonEmpty { shape, end, .. } => match (shape, end) {
                (PopShape::Multi, _) => "lmpop",
                (PopShape::Single, End::Left) => "blpop",
                (PopShape::Single, End::Right) => "brpop",
            },
        }
    }

    /// Applies the command to `view` (pure: the same view gives the same reply and writes).
    pub(super) fn execute(&self, view: &mut View<'_>) -> Reply {
        self.apply(view).unwrap_or_else(|error| error)
    }

    fn apply(&self, view: &mut View<'_>) -> Result<Reply, Reply> {
        Ok(match self {
            ListCommand::Push {
                key,
                elements,
                end,
                only_if_exists,
            } => {
                let (mut list, expires_at_ms) = match list_to_modify(view, key)? {
                    Some(found) => found,
                    None if *only_if_exists => {
                        drop_stale(view, key);
                        return Ok(Reply::Int(0));
                    }
                    None => (VecDeque::new(), None),
                };
                for element in elements {
                    push(&mut list, *end, element.clone());
                }
                let length = list.len();
                put_list(view, key, list, expires_at_ms);
                Reply::Int(length as i64)
            }
            ListCommand::Pop { key, end, count } => {
                let Some((mut list, expires_at_ms)) = list_to_modify(view, key)? else {
                    drop_stale(view, key);
                    return Ok(if count.is_some() {
                        Reply::NilArray
                    } else {
                        Reply::Nil
                    });
                };
                let reply = match count {
                    None => bulk_or_nil(pop(&mut list, *end)),
                    Some(0) => return Ok(Reply::Array(Vec::new())),
                    Some(count) => Reply::Array(pop_many(&mut list, *end, *count)),
                };
                put_list(view, key, list, expires_at_ms);
                reply
            }
            ListCommand::Len { key } => {
                Reply::Int(list(view, key)?.map_or(0, VecDeque::len) as i64)
            }
            ListCommand::Range { key, start, stop } => {
                let Some(list) = list(view, key)? else {
                    return Ok(Reply::Array(Vec::new()));
                };
                Reply::Array(match range(list.len(), *start, *stop) {
                    Some((first, last)) => {
                        list.range(first..=last).cloned().map(Reply::Bulk).collect()
                    }
                    None => Vec::new(),
                })
            }
            ListCommand::Index { key, index } => {
                let Some(list) = list(view, key)? else {
                    return Ok(Reply::Nil);
                };
                let index = index.ok_or_else(|| Reply::error(NOT_INTEGER))?;
                bulk_or_nil(position(list.len(), index).map(|at| list[at].clone()))
            }
            ListCommand::Set {
                key,
                index,
                element,
            } => {
                let Some((mut list, expires_at_ms)) = list_to_modify(view, key)? else {
                    drop_stale(view, key);
                    return Err(Reply::error(NO_SUCH_KEY));
                };
                let index = index.ok_or_else(|| Reply::error(NOT_INTEGER))?;
                let at =
                    position(list.len(), index).ok_or_else(|| Reply::error(INDEX_OUT_OF_RANGE))?;
                list[at] = element.clone();
                put_list(view, key, list, expires_at_ms);
                Reply::Ok
            }
            ListCommand::Rem {
                key,
                count,
                element,
            } => {
                let Some((list, expires_at_ms)) = list_to_modify(view, key)? else {
                    drop_stale(view, key);
                    return Ok(Reply::Int(0));
                };
                let (kept, removed) = remove(list, element, *count);
                if removed > 0 {
                    put_list(view, key, kept, expires_at_ms);
                }
                Reply::Int(removed as i64)
            }
            ListCommand::Trim { key, start, stop } => {
                let Some((mut list, expires_at_ms)) = list_to_modify(view, key)? else {
                    drop_stale(view, key);
                    return Ok(Reply::Ok);
                };
                let length = list.len();
                match range(length, *start, *stop) {
                    Some((first, last)) => {
                        list.truncate(last + 1);
                        list.drain(..first);
                    }
                    None => list.clear(),
                }
                if list.len() != length {
                    put_list(view, key, list, expires_at_ms);
                }
                Reply::Ok
            }
            ListCommand::Insert {
                key,
                after,
                pivot,
                element,
            } => {
                let Some((mut list, expires_at_ms)) = list_to_modify(view, key)? else {
                    drop_stale(view, key);
                    return Ok(Reply::Int(0));
                };
                let Some(at) = list.iter().position(|item| item == pivot) else {
                    return Ok(Reply::Int(-1));
                };
                list.insert(at + usize::from(*after), element.clone());
                let length = list.len();
                put_list(view, key, list, expires_at_ms);
                Reply::Int(length as i64)
            }
            ListCommand::Pos {
                key,
                element,
                rank,
                count,
                maxlen,
            } => {
                let Some(list) = list(view, key)? else {
                    return Ok(if count.is_some() {
                        Reply::Array(Vec::new())
                    } else {
                        Reply::Nil
                    });
                };
                lpos(list, element, *rank, *count, *maxlen)
            }
            ListCommand::Move {
                source,
                destination,
                from,
                to,
            } => {
                let Some((mut list, expires_at_ms)) = list_to_modify(view, source)? else {
                    drop_stale(view, source);
                    return Ok(Reply::Nil);
                };
                if destination == source {
                    let Some(element) = pop(&mut list, *from) else {
                        return Ok(Reply::Nil);
                    };
                    push(&mut list, *to, element.clone());
                    put_list(view, source, list, expires_at_ms);
                    return Ok(Reply::Bulk(element));
                }
                // The destination's type is checked before anything is popped.
                let target = list_to_modify(view, destination)?;
                let Some(element) = pop(&mut list, *from) else {
                    return Ok(Reply::Nil);
                };
                put_list(view, source, list, expires_at_ms);
                let (mut target, target_expiry) = target.unwrap_or_default();
                push(&mut target, *to, element.clone());
                put_list(view, destination, target, target_expiry);
                Reply::Bulk(element)
            }
            ListCommand::PopFirstNonEmpty {
                keys,
                end,
                count,
                shape,
            } => {
                for key in keys {
                    let Some((mut list, expires_at_ms)) = list_to_modify(view, key)? else {
                        drop_stale(view, key);
                        continue;
                    };
                    if list.is_empty() {
                        continue;
                    }
                    let mut popped = pop_many(&mut list, *end, count.unwrap_or(1));
                    put_list(view, key, list, expires_at_ms);
                    let key = Reply::Bulk(key.clone());
                    return Ok(match shape {
                        PopShape::Single => Reply::Array(vec![key, popped.swap_remove(0)]),
                        PopShape::Multi => Reply::Array(vec![key, Reply::Array(popped)]),
                    });
                }
                Reply::NilArray
            }
        })
    }
}

/// The list at `key` (`None` when missing or expired); `WRONGTYPE` for another type.
fn list<'v>(view: &'v View<'_>, key: &Bytes) -> Result<Option<&'v VecDeque<Bytes>>, Reply> {
    match view.get(key) {
        None => Ok(None),
        Some(Record {
            value: Value::List(list),
            ..
        }) => Ok(Some(list)),
        Some(_) => Err(Reply::error(WRONGTYPE)),
    }
}

/// A copy of the list at `key` to modify, with its expiry (which writes keep).
fn list_to_modify(
    view: &View<'_>,
    key: &Bytes,
) -> Result<Option<(VecDeque<Bytes>, Option<u64>)>, Reply> {
    let expires_at_ms = view.get(key).and_then(|record| record.expires_at_ms);
    Ok(list(view, key)?.map(|list| (list.clone(), expires_at_ms)))
}

/// Stores `list` at `key`; an empty list deletes the key, as in Redis.
fn put_list(view: &mut View<'_>, key: &Bytes, list: VecDeque<Bytes>, expires_at_ms: Option<u64>) {
    let record = (!list.is_empty()).then_some(Record {
        value: Value::List(list),
        expires_at_ms,
    });
    view.put(key, record);
}

/// A write that found `key` missing still removes it if it only expired.
fn drop_stale(view: &mut View<'_>, key: &Bytes) {
    if view.is_stale(key) {
        view.put(key, None);
    }
}

fn bulk_or_nil(value: Option<Bytes>) -> Reply {
    value.map_or(Reply::Nil, Reply::Bulk)
}

fn push(list: &mut VecDeque<Bytes>, end: End, element: Bytes) {
    match end {
        End::Left => list.push_front(element),
        End::Right => list.push_back(element),
    }
}

fn pop(list: &mut VecDeque<Bytes>, end: End) -> Option<Bytes> {
    match end {
        End::Left => list.pop_front(),
        End::Right => list.pop_back(),
    }
}

/// Pops up to `count` elements from `end`, in the order popped (never allocating more than
/// the list holds).
fn pop_many(list: &mut VecDeque<Bytes>, end: End, count: u64) -> Vec<Reply> {
    let taken = usize::try_from(count).unwrap_or(usize::MAX).min(list.len());
    (0..taken)
        .filter_map(|_| pop(list, end))
        .map(Reply::Bulk)
        .collect()
}

/// The position `index` (negative: from the end) names in a list of `length`, if any.
fn position(length: usize, index: i64) -> Option<usize> {
    let length = length as i64;
    let at = if index < 0 { length + index } else { index };
    (0..length).contains(&at).then_some(at as usize)
}

/// The inclusive positions `start..=stop` names in a list of `length` (negative indexes from
/// the end, clamped as Redis's `LRANGE`/`LTRIM` do); `None` when empty.
fn range(length: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let length = length as i64;
    let start = if start < 0 { length + start } else { start }.max(0);
    let stop = if stop < 0 { length + stop } else { stop };
    if start > stop || start >= length {
        return None;
    }
    Some((start as usize, stop.min(length - 1) as usize))
}

/// `LREM`: the list without the first `|count|` matches from the head (count > 0), the tail
/// (count < 0), or without all of them (0); and how many were removed.
fn remove(list: VecDeque<Bytes>, element: &Bytes, count: i64) -> (VecDeque<Bytes>, u64) {
    let limit = if count == 0 {
        u64::MAX
    } else {
        count.unsigned_abs()
    };
    let mut removed = 0;
    let mut keep = |item: &Bytes| {
        if removed < limit && item == element {
            removed += 1;
            false
        } else {
            true
        }
    };
    let kept: VecDeque<Bytes> = if count < 0 {
        let mut kept: VecDeque<Bytes> = list.into_iter().rev().filter(|item| keep(item)).collect();
        kept.make_contiguous().reverse();
        kept
    } else {
        list.into_iter().filter(|item| keep(item)).collect()
    };
    (kept, removed)
}

/// `LPOS` over a list, as Redis 7.0's `lposCommand`.
fn lpos(
    list: &VecDeque<Bytes>,
    element: &Bytes,
    rank: i64,
    count: Option<u64>,
    maxlen: u64,
) -> Reply {
    let skip = rank.unsigned_abs() - 1;
    let positions: Box<dyn Iterator<Item = usize>> = if rank < 0 {
        Box::new((0..list.len()).rev())
    } else {
        Box::new(0..list.len())
    };
    let scanned = usize::try_from(maxlen)
        .ok()
        .filter(|maxlen| *maxlen > 0)
        .unwrap_or(usize::MAX);
    let mut matches = positions
        .take(scanned)
        .filter(|at| list[*at] == *element)
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .map(|at| Reply::Int(at as i64));
    match count {
        None => matches.next().unwrap_or(Reply::Nil),
        Some(0) => Reply::Array(matches.collect()),
        Some(count) => Reply::Array(
            matches
                .take(usize::try_from(count).unwrap_or(usize::MAX))
                .collect(),
        ),
    }
}
