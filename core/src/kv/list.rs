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
use super::command::{Keys, arity_fits};
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
    let arity = |ok: bool| arity_fits(name, ok);
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
    let not_float = CommandError::Message(TIMEOUT_NOT_FLOAT.into());
    let text = std::str::from_utf8(arg).map_err(|_| not_float.clone())?;
    // `MAX_LONG_DOUBLE_CHARS` bounds the text; leading space is refused explicitly.
    if text.is_empty() || text.len() >= 5 * 1024 || text.starts_with(|c: char| c.is_whitespace()) {
        return Err(not_float);
    }
    let millis = match decimal_millis(text) {
        Some(millis) => millis,
        None => {
            // Exponents and `inf`: through a double (Redis uses a long double).
            let seconds: f64 = text.parse().map_err(|_| not_float.clone())?;
            if seconds.is_nan() {
                return Err(not_float);
            }
            // `-0.0` (from a tiny negative number) is zero, as in Redis.
            let millis = (seconds * 1000.0).ceil();
            if millis < 0.0 {
                return Err(CommandError::Message(TIMEOUT_NEGATIVE.into()));
            }
            if millis < i64::MAX as f64 {
                millis as i128
            } else {
                i128::MAX
            }
        }
    };
    match u64::try_from(millis) {
        Ok(millis) if millis <= i64::MAX as u64 => Ok(BlockTimeout(millis)),
        _ => Err(CommandError::Message(TIMEOUT_NEGATIVE.into())),
    }
}

/// `ceil(seconds * 1000)` computed exactly for a plain decimal (`[+-]digits[.digits]`, a
/// digit somewhere), saturating; `None` for any other form.
fn decimal_millis(text: &str) -> Option<i128> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits = |part: &str| part.bytes().all(|c| c.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || !digits(whole) || !digits(fraction) {
        return None;
    }
    let mut millis: i128 = 0;
    for digit in whole
        .bytes()
        .chain(fraction.bytes().chain("000".bytes()).take(3))
    {
        millis = millis
            .saturating_mul(10)
            .saturating_add(i128::from(digit - b'0'));
    }
    let beyond = fraction.bytes().skip(3).any(|digit| digit != b'0');
    Some(if negative {
        // ceil(-x) = -floor(x): the digits past milliseconds drop.
        -millis
    } else {
        millis + i128::from(beyond)
    })
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
        .ok_or_else(|| CommandError::Message(message.into()))
}

/// `LMPOP`'s arguments from `numkeys` on: `numkeys key [key ...] LEFT|RIGHT [COUNT count]`.
fn parse_mpop(rest: &[Bytes]) -> Result<ListCommand, CommandError> {
    let numkeys = parse_integer(&rest[0])
        .filter(|n| *n >= 1)
        .ok_or_else(|| CommandError::Message(NUMKEYS.into()))?;
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
                    .ok_or_else(|| CommandError::Message(MPOP_COUNT.into()))?;
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
                return Err(CommandError::Message(RANK_ZERO.into()));
            }
            if rank == i64::MIN {
                return Err(CommandError::Message(RANK_OUT_OF_RANGE.into()));
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
        let arity = |ok: bool| arity_fits(name, ok);
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
    pub fn keys(&self) -> Keys<'_> {
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
            | ListCommand::Pos { key, .. } => smallvec::smallvec![key],
            ListCommand::Move {
                source,
                destination,
                ..
            } => smallvec::smallvec![source, destination],
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
                let mut list = match list_to_modify(view, key)? {
                    Some(found) => found,
                    None if *only_if_exists => {
                        drop_stale(view, key);
                        return Ok(Reply::Int(0));
                    }
                    None => Owned::default(),
                };
                for element in elements {
                    push(&mut list.items, *end, element.clone());
                }
                let length = list.len();
                put_list(view, key, list);
                Reply::Int(length as i64)
            }
            ListCommand::Pop { key, end, count } => {
                let Some(mut list) = list_to_modify(view, key)? else {
                    drop_stale(view, key);
                    return Ok(if count.is_some() {
                        Reply::NilArray
                    } else {
                        Reply::Nil
                    });
                };
                let reply = match count {
                    None => bulk_or_nil(pop(&mut list.items, *end)),
                    Some(0) => return Ok(Reply::Array(Vec::new())),
                    Some(count) => Reply::Array(pop_many(&mut list.items, *end, *count)),
                };
                put_list(view, key, list);
                reply
            }
            ListCommand::Len { key } => Reply::Int(list(view, key)?.map_or(0, |l| l.len()) as i64),
            ListCommand::Range { key, start, stop } => {
                let Some(list) = list(view, key)? else {
                    return Ok(Reply::Array(Vec::new()));
                };
                Reply::Array(match range(list.len(), *start, *stop) {
                    Some((first, last)) => {
                        list.range(first, last).cloned().map(Reply::Bulk).collect()
                    }
                    None => Vec::new(),
                })
            }
            ListCommand::Index { key, index } => {
                let Some(list) = list(view, key)? else {
                    return Ok(Reply::Nil);
                };
                let index = index.ok_or_else(|| Reply::error(NOT_INTEGER))?;
                bulk_or_nil(
                    position(list.len(), index).and_then(|at| list.range(at, at).next().cloned()),
                )
            }
            ListCommand::Set {
                key,
                index,
                element,
            } => {
                let Some(mut list) = list_to_modify(view, key)? else {
                    drop_stale(view, key);
                    return Err(Reply::error(NO_SUCH_KEY));
                };
                let index = index.ok_or_else(|| Reply::error(NOT_INTEGER))?;
                let at =
                    position(list.len(), index).ok_or_else(|| Reply::error(INDEX_OUT_OF_RANGE))?;
                list.items[at - list.before as usize] = element.clone();
                put_list(view, key, list);
                Reply::Ok
            }
            ListCommand::Rem {
                key,
                count,
                element,
            } => {
                let Some(mut list) = list_to_modify(view, key)? else {
                    drop_stale(view, key);
                    return Ok(Reply::Int(0));
                };
                let (kept, removed) = remove(std::mem::take(&mut list.items), element, *count);
                if removed > 0 {
                    list.items = kept;
                    put_list(view, key, list);
                }
                Reply::Int(removed as i64)
            }
            ListCommand::Trim { key, start, stop } => {
                let Some(mut list) = list_to_modify(view, key)? else {
                    drop_stale(view, key);
                    return Ok(Reply::Ok);
                };
                let length = list.items.len();
                match range(length, *start, *stop) {
                    Some((first, last)) => {
                        list.items.truncate(last + 1);
                        list.items.drain(..first);
                    }
                    None => list.items.clear(),
                }
                if list.items.len() != length {
                    put_list(view, key, list);
                }
                Reply::Ok
            }
            ListCommand::Insert {
                key,
                after,
                pivot,
                element,
            } => {
                let Some(mut list) = list_to_modify(view, key)? else {
                    drop_stale(view, key);
                    return Ok(Reply::Int(0));
                };
                let Some(at) = list.items.iter().position(|item| item == pivot) else {
                    return Ok(Reply::Int(-1));
                };
                list.items.insert(at + usize::from(*after), element.clone());
                let length = list.len();
                put_list(view, key, list);
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
                lpos(list.items, element, *rank, *count, *maxlen)
            }
            ListCommand::Move {
                source,
                destination,
                from,
                to,
            } => {
                let Some(mut list) = list_to_modify(view, source)? else {
                    drop_stale(view, source);
                    return Ok(Reply::Nil);
                };
                if destination == source {
                    let Some(element) = pop(&mut list.items, *from) else {
                        return Ok(Reply::Nil);
                    };
                    push(&mut list.items, *to, element.clone());
                    put_list(view, source, list);
                    return Ok(Reply::Bulk(element));
                }
                // The destination's type is checked before anything is popped.
                let target = list_to_modify(view, destination)?;
                let Some(element) = pop(&mut list.items, *from) else {
                    return Ok(Reply::Nil);
                };
                put_list(view, source, list);
                let mut target = target.unwrap_or_default();
                push(&mut target.items, *to, element.clone());
                put_list(view, destination, target);
                Reply::Bulk(element)
            }
            ListCommand::PopFirstNonEmpty {
                keys,
                end,
                count,
                shape,
            } => {
                for key in keys {
                    let Some(mut list) = list_to_modify(view, key)? else {
                        drop_stale(view, key);
                        continue;
                    };
                    if list.items.is_empty() {
                        continue;
                    }
                    let mut popped = pop_many(&mut list.items, *end, count.unwrap_or(1));
                    put_list(view, key, list);
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

/// The list at `key` (`None` when missing or expired); `WRONGTYPE` for another type. Only a
/// window of it may be loaded ([`Command::elements`](super::Command::elements)): [`Listed`]
/// answers positions of the whole list.
fn list<'v>(view: &'v View<'_>, key: &Bytes) -> Result<Option<Listed<'v>>, Reply> {
    match view.get(key) {
        None => Ok(None),
        Some(Record {
            value: Value::List(items),
            ..
        }) => {
            let (before, after) = view.window(key);
            Ok(Some(Listed {
                items,
                before,
                after,
            }))
        }
        Some(_) => Err(Reply::error(WRONGTYPE)),
    }
}

/// A list as loaded: `items` are its positions `before..before + items.len()`, and `after`
/// more follow. A whole list has neither before nor after.
struct Listed<'v> {
    items: &'v VecDeque<Bytes>,
    before: u64,
    after: u64,
}

impl Listed<'_> {
    /// The whole list's length.
    fn len(&self) -> usize {
        (self.before + self.items.len() as u64 + self.after) as usize
    }

    /// The elements at positions `first..=last` of the whole list (all loaded: the window
    /// was chosen to hold them).
    fn range(&self, first: usize, last: usize) -> impl Iterator<Item = &Bytes> {
        let before = self.before as usize;
        self.items.range(first - before..=last - before)
    }
}

/// A list taken out of its record to modify: the loaded `items` (a window, as in [`Listed`]),
/// and the record's expiry, which writes keep.
#[derive(Default)]
struct Owned {
    items: VecDeque<Bytes>,
    expires_at_ms: Option<u64>,
    before: u64,
    after: u64,
}

impl Owned {
    /// The whole list's length.
    fn len(&self) -> usize {
        (self.before + self.items.len() as u64 + self.after) as usize
    }
}

/// A copy of the list at `key` to modify.
fn list_to_modify(view: &View<'_>, key: &Bytes) -> Result<Option<Owned>, Reply> {
    let expires_at_ms = view.get(key).and_then(|record| record.expires_at_ms);
    Ok(list(view, key)?.map(|listed| Owned {
        items: listed.items.clone(),
        expires_at_ms,
        before: listed.before,
        after: listed.after,
    }))
}

/// Stores `list` at `key`; an empty list deletes the key, as in Redis.
fn put_list(view: &mut View<'_>, key: &Bytes, list: Owned) {
    view.put_collection(key, Value::List(list.items), list.expires_at_ms);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::kv::{Command, execute};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn args(line: &str) -> Vec<Bytes> {
        line.split_whitespace().map(b).collect()
    }

    fn parse(line: &str) -> Result<Command, CommandError> {
        Command::parse(&args(line))
    }

    fn list_parse(line: &str) -> Result<ListCommand, CommandError> {
        match parse(line)? {
            Command::ListOp(command) => Ok(command),
            other => panic!("{line} parsed as {other:?}"),
        }
    }

    fn blocking_parse(line: &str) -> Option<Result<(ListCommand, BlockTimeout), CommandError>> {
        let words = args(line);
        let name = String::from_utf8_lossy(&words[0]).to_string();
        parse_blocking(&name, &words[1..])
    }

    fn bulks(items: &[&str]) -> Reply {
        Reply::Array(items.iter().map(|item| Reply::Bulk(b(item))).collect())
    }

    fn ints(items: &[i64]) -> Reply {
        Reply::Array(items.iter().copied().map(Reply::Int).collect())
    }

    fn invalid(text: &'static str) -> CommandError {
        CommandError::Message(text.into())
    }

    fn arity(name: &str) -> CommandError {
        CommandError::Arity { name: name.into() }
    }

    fn apply(state: &mut BTreeMap<Bytes, Record>, now_ms: u64, command: &Command) -> Reply {
        let outcome = execute(command, now_ms, state);
        assert!(
            command.is_write() || outcome.writes.is_empty(),
            "read {command:?} wrote"
        );
        for (key, record) in outcome.writes {
            match record {
                Some(record) => state.insert(key, record),
                None => state.remove(&key),
            };
        }
        outcome.reply
    }

    /// Runs the lines in order at time 0 against `state`, answering each reply.
    fn run_on(state: &mut BTreeMap<Bytes, Record>, lines: &[&str]) -> Vec<Reply> {
        lines
            .iter()
            .map(|line| {
                let command = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
                apply(state, 0, &command)
            })
            .collect()
    }

    /// Runs `(line, expected reply)` steps on an empty state; answers the state after.
    fn check(steps: &[(&str, Reply)]) -> BTreeMap<Bytes, Record> {
        let mut state = BTreeMap::new();
        for (line, expected) in steps {
            let reply = run_on(&mut state, &[line]).remove(0);
            assert_eq!(&reply, expected, "{line}");
        }
        state
    }

    fn stored_list(state: &BTreeMap<Bytes, Record>, key: &str) -> Option<Vec<Bytes>> {
        state.get(&b(key)).map(|record| match &record.value {
            Value::List(list) => {
                assert!(!list.is_empty(), "an empty list was stored at {key}");
                list.iter().cloned().collect()
            }
            other => panic!("{key} holds {other:?}"),
        })
    }

    #[test]
    fn parses_the_list_commands() {
        assert_eq!(
            list_parse("LPUSH k a b"),
            Ok(ListCommand::Push {
                key: b("k"),
                elements: vec![b("a"), b("b")],
                end: End::Left,
                only_if_exists: false,
            })
        );
        assert_eq!(
            list_parse("rpushx k a"),
            Ok(ListCommand::Push {
                key: b("k"),
                elements: vec![b("a")],
                end: End::Right,
                only_if_exists: true,
            })
        );
        assert_eq!(
            list_parse("rpop k 3"),
            Ok(ListCommand::Pop {
                key: b("k"),
                end: End::Right,
                count: Some(3),
            })
        );
        assert_eq!(
            list_parse("lindex k x"),
            Ok(ListCommand::Index {
                key: b("k"),
                index: None,
            })
        );
        assert_eq!(
            list_parse("LINSERT k AFTER p e"),
            Ok(ListCommand::Insert {
                key: b("k"),
                after: true,
                pivot: b("p"),
                element: b("e"),
            })
        );
        assert_eq!(
            list_parse("lpos k e rank -2 count 0 maxlen 9 rank 3"),
            Ok(ListCommand::Pos {
                key: b("k"),
                element: b("e"),
                rank: 3,
                count: Some(0),
                maxlen: 9,
            })
        );
        assert_eq!(
            list_parse("rpoplpush a b"),
            Ok(ListCommand::Move {
                source: b("a"),
                destination: b("b"),
                from: End::Right,
                to: End::Left,
            })
        );
        assert_eq!(
            list_parse("lmove a b left RIGHT"),
            Ok(ListCommand::Move {
                source: b("a"),
                destination: b("b"),
                from: End::Left,
                to: End::Right,
            })
        );
        assert_eq!(
            list_parse("lmpop 2 a b right"),
            Ok(ListCommand::PopFirstNonEmpty {
                keys: vec![b("a"), b("b")],
                end: End::Right,
                count: Some(1),
                shape: PopShape::Multi,
            })
        );
        assert_eq!(
            list_parse("LMPOP 1 a LEFT COUNT 5").map(|c| c.keys().len()),
            Ok(1)
        );
        // Not ours: the other families and the unknown answer as before.
        assert_eq!(ListCommand::parse("sadd", &args("s m")), None);
        assert!(matches!(parse("lfly k"), Err(CommandError::Unknown { .. })));
    }

    #[test]
    fn classifies_the_list_commands() {
        for (line, write, name, keys) in [
            ("lpush k a", true, "lpush", &["k"][..]),
            ("rpush k a", true, "rpush", &["k"]),
            ("lpushx k a", true, "lpushx", &["k"]),
            ("rpushx k a", true, "rpushx", &["k"]),
            ("lpop k", true, "lpop", &["k"]),
            ("rpop k 2", true, "rpop", &["k"]),
            ("llen k", false, "llen", &["k"]),
            ("lrange k 0 -1", false, "lrange", &["k"]),
            ("lindex k 0", false, "lindex", &["k"]),
            ("lpos k e", false, "lpos", &["k"]),
            ("lset k 0 e", true, "lset", &["k"]),
            ("lrem k 0 e", true, "lrem", &["k"]),
            ("ltrim k 0 1", true, "ltrim", &["k"]),
            ("linsert k before p e", true, "linsert", &["k"]),
            ("lmove a b left left", true, "lmove", &["a", "b"]),
            ("rpoplpush a b", true, "lmove", &["a", "b"]),
            ("lmpop 3 a b c left", true, "lmpop", &["a", "b", "c"]),
            ("blpop a b 0", true, "blpop", &["a", "b"]),
            ("brpop a 0", true, "brpop", &["a"]),
            ("blmpop 0 2 a b left", true, "lmpop", &["a", "b"]),
            ("blmove a b left right 0", true, "lmove", &["a", "b"]),
            ("brpoplpush a b 0", true, "lmove", &["a", "b"]),
        ] {
            let command = parse(line).expect(line);
            assert_eq!(command.is_write(), write, "{line}");
            assert_eq!(command.name(), name, "{line}");
            let expected: Vec<Bytes> = keys.iter().map(|k| b(k)).collect();
            assert_eq!(
                command.keys().into_iter().cloned().collect::<Vec<_>>(),
                expected,
                "{line}"
            );
        }
    }

    #[test]
    fn rejects_bad_arguments_with_redis_errors() {
        for (line, error) in [
            ("lpush k", arity("lpush")),
            ("rpushx k", arity("rpushx")),
            ("lpop", arity("lpop")),
            ("lpop key 1 1", arity("lpop")),
            ("rpop key 2 2", arity("rpop")),
            ("lpop k -1", invalid(NOT_POSITIVE)),
            ("lpop k -123", invalid(NOT_POSITIVE)),
            ("rpop k x", invalid(NOT_POSITIVE)),
            ("llen", arity("llen")),
            ("llen a b", arity("llen")),
            ("lrange k 0", arity("lrange")),
            ("lrange k a 1", CommandError::NotInteger),
            ("ltrim k 0 x", CommandError::NotInteger),
            ("lindex k", arity("lindex")),
            ("lset k 0", arity("lset")),
            ("lrem k x e", CommandError::NotInteger),
            ("lrem k 1", arity("lrem")),
            ("linsert k before p", arity("linsert")),
            ("linsert xlist aft3r aa 42", CommandError::Syntax),
            ("lpos k", arity("lpos")),
            ("lpos k e rank 0", invalid(RANK_ZERO)),
            ("lpos k e rank x", CommandError::NotInteger),
            (
                "lpos k e rank -9223372036854775808",
                invalid(RANK_OUT_OF_RANGE),
            ),
            ("lpos k e count -1", invalid(COUNT_NEGATIVE)),
            ("lpos k e count x", invalid(COUNT_NEGATIVE)),
            ("lpos k e maxlen -1", invalid(MAXLEN_NEGATIVE)),
            ("lpos k e rank", CommandError::Syntax),
            ("lpos k e bogus 1", CommandError::Syntax),
            ("lmove a b left", arity("lmove")),
            ("lmove a b up left", CommandError::Syntax),
            ("lmove a b left down", CommandError::Syntax),
            ("rpoplpush a", arity("rpoplpush")),
            ("lmpop", arity("lmpop")),
            ("lmpop 1", arity("lmpop")),
            ("lmpop 1 mylist", arity("lmpop")),
            ("lmpop 0 mylist LEFT", invalid(NUMKEYS)),
            ("lmpop a mylist LEFT", invalid(NUMKEYS)),
            ("lmpop -1 mylist RIGHT", invalid(NUMKEYS)),
            ("lmpop 1 mylist bad_where", CommandError::Syntax),
            ("lmpop 1 mylist LEFT bar_arg", CommandError::Syntax),
            ("lmpop 1 mylist RIGHT LEFT", CommandError::Syntax),
            ("lmpop 1 mylist COUNT", CommandError::Syntax),
            ("lmpop 1 mylist LEFT COUNT 1 COUNT 2", CommandError::Syntax),
            ("lmpop 2 mylist mylist2 bad_arg", CommandError::Syntax),
            ("lmpop 1 mylist LEFT COUNT 0", invalid(MPOP_COUNT)),
            ("lmpop 1 mylist RIGHT COUNT a", invalid(MPOP_COUNT)),
            ("lmpop 1 mylist LEFT COUNT -1", invalid(MPOP_COUNT)),
            ("lmpop 2 mylist mylist2 RIGHT COUNT -1", invalid(MPOP_COUNT)),
            // Redis 7.0: numkeys past the arguments is a syntax error.
            ("lmpop 5 a LEFT", CommandError::Syntax),
            ("lmpop 9223372036854775807 a LEFT", CommandError::Syntax),
        ] {
            assert_eq!(parse(line), Err(error), "{line}");
        }
        assert_eq!(
            invalid(RANK_ZERO).to_string(),
            "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... \
             or use negative to start from the end of the list"
        );
        assert_eq!(
            invalid(NOT_POSITIVE).to_string(),
            "ERR value is out of range, must be positive"
        );
    }

    #[test]
    fn push_pop_len_index_as_redis() {
        let state = check(&[
            ("lpush myziplist1 aa", Reply::Int(1)),
            ("rpush myziplist1 bb", Reply::Int(2)),
            ("rpush myziplist1 cc", Reply::Int(3)),
            ("llen myziplist1", Reply::Int(3)),
            ("lindex myziplist1 0", Reply::Bulk(b("aa"))),
            ("lindex myziplist1 1", Reply::Bulk(b("bb"))),
            ("lindex myziplist1 -1", Reply::Bulk(b("cc"))),
            ("lindex myziplist1 -3", Reply::Bulk(b("aa"))),
            ("lindex myziplist1 -4", Reply::Nil),
            ("lindex myziplist1 3", Reply::Nil),
            ("lindex myziplist2 3", Reply::Nil),
            // The index is checked only once the key is found.
            ("lindex nosuchkey notanumber", Reply::Nil),
            ("lindex myziplist1 notanumber", Reply::error(NOT_INTEGER)),
            ("rpop myziplist1", Reply::Bulk(b("cc"))),
            ("lpop myziplist1", Reply::Bulk(b("aa"))),
            ("lpop myziplist1", Reply::Bulk(b("bb"))),
            ("lpop myziplist1", Reply::Nil),
            ("llen myziplist1", Reply::Int(0)),
            ("lpush mylist a b c d", Reply::Int(4)),
            ("rpush mylist 0 1 2 3", Reply::Int(8)),
            (
                "lrange mylist 0 -1",
                bulks(&["d", "c", "b", "a", "0", "1", "2", "3"]),
            ),
        ]);
        assert_eq!(state.len(), 1, "the emptied list was deleted: {state:?}");
    }

    #[test]
    fn pop_with_count_as_redis() {
        check(&[
            ("lpush listcount aa bb cc dd ee ff gg", Reply::Int(7)),
            ("lpop listcount 1", bulks(&["gg"])),
            ("lpop listcount 2", bulks(&["ff", "ee"])),
            ("rpop listcount 2", bulks(&["aa", "bb"])),
            ("rpop listcount 1", bulks(&["cc"])),
            ("rpop listcount 123", bulks(&["dd"])),
            ("exists listcount", Reply::Int(0)),
            ("lpush listcount zero", Reply::Int(1)),
            ("lpop listcount 0", Reply::Array(vec![])),
            ("rpop listcount 0", Reply::Array(vec![])),
            ("llen listcount", Reply::Int(1)),
            ("lpop non_existing_key", Reply::Nil),
            ("rpop non_existing_key", Reply::Nil),
            ("lpop non_existing_key 0", Reply::NilArray),
            ("lpop non_existing_key 1", Reply::NilArray),
            ("rpop non_existing_key 0", Reply::NilArray),
            ("rpop non_existing_key 1", Reply::NilArray),
            ("rpop listcount 9223372036854775807", bulks(&["zero"])),
        ]);
    }

    #[test]
    fn pushx_only_on_existing_lists() {
        check(&[
            ("lpushx xlist a", Reply::Int(0)),
            ("rpushx xlist a", Reply::Int(0)),
            ("exists xlist", Reply::Int(0)),
            ("rpush xlist b c", Reply::Int(2)),
            ("rpushx xlist d", Reply::Int(3)),
            ("lpushx xlist a", Reply::Int(4)),
            ("rpushx xlist 42 x", Reply::Int(6)),
            ("lpushx xlist y3 y2 y1", Reply::Int(9)),
            (
                "lrange xlist 0 -1",
                bulks(&["y1", "y2", "y3", "a", "b", "c", "d", "42", "x"]),
            ),
        ]);
    }

    #[test]
    fn linsert_as_redis() {
        check(&[
            ("linsert xlist before c zz", Reply::Int(0)),
            ("exists xlist", Reply::Int(0)),
            ("rpush xlist a L c d", Reply::Int(4)),
            ("linsert xlist before c zz", Reply::Int(5)),
            ("lrange xlist 0 10", bulks(&["a", "L", "zz", "c", "d"])),
            ("linsert xlist after c yy", Reply::Int(6)),
            ("linsert xlist after d dd", Reply::Int(7)),
            ("linsert xlist after bad ddd", Reply::Int(-1)),
            ("linsert xlist before a aa", Reply::Int(8)),
            ("linsert xlist BEFORE bad aaa", Reply::Int(-1)),
            (
                "lrange xlist 0 10",
                bulks(&["aa", "a", "L", "zz", "c", "yy", "d", "dd"]),
            ),
        ]);
    }

    #[test]
    fn lrange_and_ltrim_indexes_as_redis() {
        let lrange = |start: i64, stop: i64| {
            let mut state = BTreeMap::new();
            run_on(&mut state, &["rpush l L 1 2 3 4 5 6 7 8 9"]);
            run_on(&mut state, &[&format!("lrange l {start} {stop}")]).remove(0)
        };
        assert_eq!(
            lrange(1, -2),
            bulks(&["1", "2", "3", "4", "5", "6", "7", "8"])
        );
        assert_eq!(lrange(-3, -1), bulks(&["7", "8", "9"]));
        assert_eq!(lrange(4, 4), bulks(&["4"]));
        assert_eq!(lrange(6, 2), bulks(&[]));
        assert_eq!(lrange(-1, -2), bulks(&[]));
        assert_eq!(lrange(-1000, 1000).clone(), {
            let all: Vec<String> = std::iter::once("L".to_string())
                .chain((1..=9).map(|i| i.to_string()))
                .collect();
            bulks(&all.iter().map(String::as_str).collect::<Vec<_>>())
        });
        assert_eq!(lrange(0, -10), bulks(&["L"]));
        assert_eq!(lrange(0, -11), bulks(&[]));
        assert_eq!(lrange(i64::MIN, i64::MAX).clone(), lrange(0, -1));
        assert_eq!(lrange(10, 20), bulks(&[]));

        let trim = |start: i64, stop: i64| {
            let mut state = BTreeMap::new();
            run_on(&mut state, &["rpush mylist 1 2 3 4 L"]);
            let replies = run_on(
                &mut state,
                &[
                    &format!("ltrim mylist {start} {stop}"),
                    "lrange mylist 0 -1",
                ],
            );
            assert_eq!(replies[0], Reply::Ok);
            assert_eq!(
                replies[1] == bulks(&[]),
                state.is_empty(),
                "an emptied list is deleted"
            );
            replies[1].clone()
        };
        for (start, stop, expected) in [
            (0, 0, &["1"][..]),
            (0, 1, &["1", "2"]),
            (0, 2, &["1", "2", "3"]),
            (1, 2, &["2", "3"]),
            (1, -1, &["2", "3", "4", "L"]),
            (1, -2, &["2", "3", "4"]),
            (-2, -1, &["4", "L"]),
            (-1, -1, &["L"]),
            (-5, -1, &["1", "2", "3", "4", "L"]),
            (-10, 10, &["1", "2", "3", "4", "L"]),
            (0, 5, &["1", "2", "3", "4", "L"]),
            (0, 10, &["1", "2", "3", "4", "L"]),
            (0, -5, &["1"]),
            (0, -6, &[]),
            (3, 1, &[]),
            (i64::MIN, i64::MAX, &["1", "2", "3", "4", "L"]),
        ] {
            assert_eq!(trim(start, stop), bulks(expected), "ltrim {start} {stop}");
        }
        check(&[
            ("ltrim nosuchkey 0 1", Reply::Ok),
            ("lrange nosuchkey 0 1", bulks(&[])),
        ]);
    }

    #[test]
    fn lset_as_redis() {
        check(&[
            ("rpush mylist 99 98 L 96 95", Reply::Int(5)),
            ("lset mylist 1 foo", Reply::Ok),
            ("lset mylist -1 bar", Reply::Ok),
            (
                "lrange mylist 0 -1",
                bulks(&["99", "foo", "L", "96", "bar"]),
            ),
            ("lset mylist 10 foo", Reply::error(INDEX_OUT_OF_RANGE)),
            ("lset mylist -6 foo", Reply::error(INDEX_OUT_OF_RANGE)),
            ("lset mylist x foo", Reply::error(NOT_INTEGER)),
            ("lset nosuchkey 10 foo", Reply::error(NO_SUCH_KEY)),
            ("lset nosuchkey x foo", Reply::error(NO_SUCH_KEY)),
            ("set nolist foobar", Reply::Ok),
            ("lset nolist 0 foo", Reply::error(WRONGTYPE)),
        ]);
    }

    #[test]
    fn lrem_as_redis() {
        check(&[
            (
                "rpush mylist foo bar foobar foobared zap bar test foo",
                Reply::Int(8),
            ),
            ("lrem mylist 0 bar", Reply::Int(2)),
            (
                "lrange mylist 0 -1",
                bulks(&["foo", "foobar", "foobared", "zap", "test", "foo"]),
            ),
            ("lrem mylist 1 foo", Reply::Int(1)),
            (
                "lrange mylist 0 -1",
                bulks(&["foobar", "foobared", "zap", "test", "foo"]),
            ),
            ("lrem mylist 1 nosuchelement", Reply::Int(0)),
            ("del mylist", Reply::Int(1)),
            (
                "rpush mylist foo bar foobar foobared zap bar test foo foo",
                Reply::Int(9),
            ),
            ("lrem mylist -1 bar", Reply::Int(1)),
            (
                "lrange mylist 0 -1",
                bulks(&[
                    "foo", "bar", "foobar", "foobared", "zap", "test", "foo", "foo",
                ]),
            ),
            ("lrem mylist -2 foo", Reply::Int(2)),
            (
                "lrange mylist 0 -1",
                bulks(&["foo", "bar", "foobar", "foobared", "zap", "test"]),
            ),
            ("lrem mylist -9223372036854775808 foo", Reply::Int(1)),
            ("lrem nosuchkey 0 foo", Reply::Int(0)),
            ("rpush one x x", Reply::Int(2)),
            ("lrem one 0 x", Reply::Int(2)),
            ("exists one", Reply::Int(0)),
        ]);
    }

    #[test]
    fn lpos_as_redis() {
        check(&[
            ("rpush mylist a b c 1 2 3 c c", Reply::Int(8)),
            ("lpos mylist a", Reply::Int(0)),
            ("lpos mylist c", Reply::Int(2)),
            ("lpos mylist c rank 1", Reply::Int(2)),
            ("lpos mylist c rank 2", Reply::Int(6)),
            ("lpos mylist c rank 4", Reply::Nil),
            ("lpos mylist c rank -1", Reply::Int(7)),
            ("lpos mylist c rank -2", Reply::Int(6)),
            ("lpos mylist c count 0", ints(&[2, 6, 7])),
            ("lpos mylist c count 1", ints(&[2])),
            ("lpos mylist c count 2", ints(&[2, 6])),
            ("lpos mylist c count 100", ints(&[2, 6, 7])),
            ("lpos mylist c count 0 rank 2", ints(&[6, 7])),
            ("lpos mylist c count 2 rank -1", ints(&[7, 6])),
            ("lpos mylistxxx c count 0 rank 2", ints(&[])),
            ("lpos mylistxxx c", Reply::Nil),
            ("lpos mylist x count 2 rank -1", ints(&[])),
            ("lpos mylist x rank -1", Reply::Nil),
            ("lpos mylist a count 0 maxlen 1", ints(&[0])),
            ("lpos mylist c count 0 maxlen 1", ints(&[])),
            ("lpos mylist c count 0 maxlen 3", ints(&[2])),
            ("lpos mylist c count 0 maxlen 3 rank -1", ints(&[7, 6])),
            ("lpos mylist c count 0 maxlen 7 rank 2", ints(&[6])),
            ("lpos mylist c maxlen 2", Reply::Nil),
            ("lpos mylist c rank 9223372036854775807", Reply::Nil),
            ("lpos mylist c rank -9223372036854775807 count 5", ints(&[])),
            ("del mylist", Reply::Int(1)),
            ("lpush mylist a", Reply::Int(1)),
            ("lpos mylist b count 10 rank 5", ints(&[])),
        ]);
    }

    #[test]
    fn lmove_and_rpoplpush_as_redis() {
        let state = check(&[
            ("rpoplpush nosuchkey dst", Reply::Nil),
            ("exists nosuchkey dst", Reply::Int(0)),
            ("rpush src a b c d", Reply::Int(4)),
            ("rpoplpush src dst", Reply::Bulk(b("d"))),
            ("rpoplpush src dst", Reply::Bulk(b("c"))),
            ("lrange src 0 -1", bulks(&["a", "b"])),
            ("lrange dst 0 -1", bulks(&["c", "d"])),
            ("lmove src dst left right", Reply::Bulk(b("a"))),
            ("lmove src dst LEFT LEFT", Reply::Bulk(b("b"))),
            ("exists src", Reply::Int(0)),
            ("lrange dst 0 -1", bulks(&["b", "c", "d", "a"])),
            // The same list as source and destination rotates it.
            ("rpoplpush dst dst", Reply::Bulk(b("a"))),
            ("lrange dst 0 -1", bulks(&["a", "b", "c", "d"])),
            ("lmove dst dst left right", Reply::Bulk(b("a"))),
            ("lrange dst 0 -1", bulks(&["b", "c", "d", "a"])),
            ("lmove dst dst right right", Reply::Bulk(b("a"))),
            ("lrange dst 0 -1", bulks(&["b", "c", "d", "a"])),
            ("rpush one x", Reply::Int(1)),
            ("rpoplpush one one", Reply::Bulk(b("x"))),
            ("lrange one 0 -1", bulks(&["x"])),
            // WRONGTYPE for either key, and nothing popped.
            ("set str foo", Reply::Ok),
            ("rpoplpush str dst", Reply::error(WRONGTYPE)),
            ("rpoplpush dst str", Reply::error(WRONGTYPE)),
            ("lmove dst str left left", Reply::error(WRONGTYPE)),
            ("lrange dst 0 -1", bulks(&["b", "c", "d", "a"])),
            // A missing source answers nil before the destination is looked at.
            ("rpoplpush nosuchkey str", Reply::Nil),
            // Into a missing key or an existing list.
            ("rpush other x", Reply::Int(1)),
            ("lmove dst other right left", Reply::Bulk(b("a"))),
            ("lrange other 0 -1", bulks(&["a", "x"])),
        ]);
        assert_eq!(
            stored_list(&state, "dst"),
            Some(vec![b("b"), b("c"), b("d")])
        );
    }

    #[test]
    fn lmpop_as_redis() {
        check(&[
            ("rpush mylist a b c d e f", Reply::Int(6)),
            (
                "lmpop 2 mylist mylist left count 2",
                Reply::Array(vec![Reply::Bulk(b("mylist")), bulks(&["a", "b"])]),
            ),
            (
                "lmpop 2 mylist mylist right count 2",
                Reply::Array(vec![Reply::Bulk(b("mylist")), bulks(&["f", "e"])]),
            ),
            ("llen mylist", Reply::Int(2)),
            ("del mylist", Reply::Int(1)),
            ("rpush mylist a b c d e", Reply::Int(5)),
            (
                "lmpop 2 mylist mylist2 left count 1",
                Reply::Array(vec![Reply::Bulk(b("mylist")), bulks(&["a"])]),
            ),
            (
                "lmpop 2 mylist mylist2 right count 10",
                Reply::Array(vec![Reply::Bulk(b("mylist")), bulks(&["e", "d", "c", "b"])]),
            ),
            ("lmpop 2 mylist mylist2 right count 1", Reply::NilArray),
            ("rpush mylist2 1 2 3 4 5", Reply::Int(5)),
            (
                "lmpop 2 mylist mylist2 right",
                Reply::Array(vec![Reply::Bulk(b("mylist2")), bulks(&["5"])]),
            ),
            (
                "lmpop 2 mylist mylist2 left count 10",
                Reply::Array(vec![
                    Reply::Bulk(b("mylist2")),
                    bulks(&["1", "2", "3", "4"]),
                ]),
            ),
            ("exists mylist mylist2", Reply::Int(0)),
            // WRONGTYPE at the first non-list, even after a missing key.
            ("set notalist foo", Reply::Ok),
            (
                "lmpop 2 notalist mylist left count 1",
                Reply::error(WRONGTYPE),
            ),
            (
                "lmpop 2 mylist notalist right count 10",
                Reply::error(WRONGTYPE),
            ),
            ("rpush mylist x", Reply::Int(1)),
            // A list before the non-list is popped.
            (
                "lmpop 2 mylist notalist right count 10",
                Reply::Array(vec![Reply::Bulk(b("mylist")), bulks(&["x"])]),
            ),
        ]);
    }

    #[test]
    fn list_commands_on_another_type_are_wrongtype_and_write_nothing() {
        let mut stored = BTreeMap::new();
        stored.insert(b("s"), Record::string("v"));
        for line in [
            "lpush s a",
            "rpush s a",
            "lpushx s a",
            "rpushx s a",
            "lpop s",
            "rpop s",
            "lpop s 0",
            "rpop s 2",
            "llen s",
            "lrange s 0 -1",
            "lindex s 0",
            "lindex s x",
            "lset s 0 a",
            "lrem s 0 a",
            "ltrim s 0 1",
            "linsert s before a b",
            "lpos s a",
            "lpos s a count 0",
            "lmove s d left left",
            "rpoplpush s d",
            "lmpop 1 s left",
            "blpop s 0",
            "brpop x s 0",
            "blmpop 0 1 s left",
        ] {
            let outcome = execute(&parse(line).expect(line), 0, &stored);
            assert_eq!(outcome.reply, Reply::error(WRONGTYPE), "{line}");
            assert!(outcome.writes.is_empty(), "{line} wrote");
        }
        let mut state = stored.clone();
        assert_eq!(
            run_on(&mut state, &["lpush l a", "llen s", "get l", "type l"]),
            vec![
                Reply::Int(1),
                Reply::error(WRONGTYPE),
                Reply::error(WRONGTYPE),
                Reply::Status("list".into()),
            ]
        );
    }

    #[test]
    fn writes_keep_the_ttl_and_a_new_destination_has_none() {
        let mut state = BTreeMap::new();
        let at = |state: &mut BTreeMap<Bytes, Record>, now: u64, line: &str| {
            apply(state, now, &parse(line).expect(line))
        };
        assert_eq!(at(&mut state, 0, "rpush l a b c d e f"), Reply::Int(6));
        assert_eq!(at(&mut state, 0, "pexpire l 10000"), Reply::Int(1));
        for (now, line) in [
            (1000, "lpush l z"),
            (1000, "rpop l"),
            (1000, "lset l 0 y"),
            (1000, "lrem l 1 y"),
            (1000, "ltrim l 0 3"),
            (1000, "linsert l after a q"),
            (1000, "lmove l l left right"),
            (1000, "lmpop 1 l left"),
        ] {
            assert!(!at(&mut state, now, line).is_error(), "{line}");
            assert_eq!(state[&b("l")].expires_at_ms, Some(10_000), "{line}");
        }
        assert_eq!(
            at(&mut state, 1000, "lmove l fresh left left"),
            Reply::Bulk(b("b"))
        );
        assert_eq!(state[&b("fresh")].expires_at_ms, None);
        assert_eq!(state[&b("l")].expires_at_ms, Some(10_000));
        // Once expired the list is gone for every command, and a write starts afresh.
        assert_eq!(at(&mut state, 10_000, "llen l"), Reply::Int(0));
        assert_eq!(at(&mut state, 10_000, "lpush l n"), Reply::Int(1));
        assert_eq!(state[&b("l")].expires_at_ms, None);
    }

    #[test]
    fn writes_that_find_an_expired_list_delete_it() {
        for line in [
            "lpushx l a",
            "lpop l",
            "rpop l 3",
            "lset l 0 a",
            "lrem l 0 a",
            "ltrim l 0 1",
            "linsert l before a b",
            "lmove l d left left",
            "lmpop 1 l left",
        ] {
            let mut state = BTreeMap::new();
            apply(&mut state, 0, &parse("rpush l a").expect("rpush"));
            apply(&mut state, 0, &parse("pexpire l 10").expect("pexpire"));
            apply(&mut state, 20, &parse(line).expect(line));
            assert!(state.is_empty(), "{line}: {state:?}");
        }
    }

    #[test]
    fn timeouts_parse_as_redis() {
        let timeout = |text: &str| parse_timeout(text.as_bytes());
        for (text, millis) in [
            ("0", 0),
            ("1", 1000),
            ("0.1", 100),
            ("0.001", 1),
            ("0.0001", 1),
            ("1.5", 1500),
            ("+2", 2000),
            ("1e3", 1_000_000),
            (".5", 500),
            ("-0", 0),
            ("-0.0001", 0),
            ("9223372036854775", 9_223_372_036_854_775_000),
            ("9223372036854775.807", i64::MAX as u64),
            ("1.0001", 1001),
            ("1.", 1000),
            ("00.5000", 500),
            ("-0.0009", 0),
            ("2.5e-1", 250),
        ] {
            assert_eq!(timeout(text), Ok(BlockTimeout(millis)), "{text}");
        }
        for text in [
            "", "x", " 1", "1 ", "1s", "nan", "0x", ".", "-", "+", "1.2.3", "--1",
        ] {
            assert_eq!(timeout(text), Err(invalid(TIMEOUT_NOT_FLOAT)), "{text:?}");
        }
        assert_eq!(
            parse_timeout(&[0xff, b'1']),
            Err(invalid(TIMEOUT_NOT_FLOAT))
        );
        for text in [
            "-1",
            "-0.01",
            "-0.001",
            "1e30",
            "inf",
            "-inf",
            "9223372036854775.8071",
            "99999999999999999999999999999999999999999999",
        ] {
            assert_eq!(timeout(text), Err(invalid(TIMEOUT_NEGATIVE)), "{text}");
        }
        assert_eq!(
            invalid(TIMEOUT_NEGATIVE).to_string(),
            "ERR timeout is negative"
        );
    }

    #[test]
    fn parses_the_blocking_commands() {
        assert_eq!(
            blocking_parse("BLPOP a b 1.5"),
            Some(Ok((
                ListCommand::PopFirstNonEmpty {
                    keys: vec![b("a"), b("b")],
                    end: End::Left,
                    count: None,
                    shape: PopShape::Single,
                },
                BlockTimeout(1500)
            )))
        );
        assert_eq!(
            blocking_parse("brpop a 0"),
            Some(Ok((
                ListCommand::PopFirstNonEmpty {
                    keys: vec![b("a")],
                    end: End::Right,
                    count: None,
                    shape: PopShape::Single,
                },
                BlockTimeout(0)
            )))
        );
        assert_eq!(
            blocking_parse("blmpop 0.2 2 a b right count 3"),
            Some(Ok((
                ListCommand::PopFirstNonEmpty {
                    keys: vec![b("a"), b("b")],
                    end: End::Right,
                    count: Some(3),
                    shape: PopShape::Multi,
                },
                BlockTimeout(200)
            )))
        );
        assert_eq!(
            blocking_parse("blmove a b right left 2"),
            Some(Ok((
                ListCommand::Move {
                    source: b("a"),
                    destination: b("b"),
                    from: End::Right,
                    to: End::Left,
                },
                BlockTimeout(2000)
            )))
        );
        assert_eq!(
            blocking_parse("brpoplpush a b 0"),
            blocking_parse("blmove a b right left 0")
        );
        assert_eq!(blocking_parse("lpop a"), None);
        assert_eq!(blocking_parse("get a"), None);
        for name in ["blpop", "BRPOP", "blmpop", "blmove", "brpoplpush"] {
            assert!(is_blocking(name), "{name}");
        }
        for name in ["lpop", "lmpop", "lmove", "rpoplpush", "get"] {
            assert!(!is_blocking(name), "{name}");
        }
        for (line, error) in [
            ("blpop a", arity("blpop")),
            ("brpop", arity("brpop")),
            ("blpop a -1", invalid(TIMEOUT_NEGATIVE)),
            ("brpop a b x", invalid(TIMEOUT_NOT_FLOAT)),
            ("blmpop 0 1 a", arity("blmpop")),
            ("blmpop -1 1 a left", invalid(TIMEOUT_NEGATIVE)),
            ("blmpop x 1 a left", invalid(TIMEOUT_NOT_FLOAT)),
            // numkeys, the end and COUNT are checked before the timeout.
            ("blmpop -1 0 a left", invalid(NUMKEYS)),
            ("blmpop -1 1 a up", CommandError::Syntax),
            ("blmpop -1 1 a left count 0", invalid(MPOP_COUNT)),
            ("blmove a b left left", arity("blmove")),
            ("blmove a b left up -1", CommandError::Syntax),
            ("blmove a b left left -1", invalid(TIMEOUT_NEGATIVE)),
            ("brpoplpush a b", arity("brpoplpush")),
            ("brpoplpush a b -1", invalid(TIMEOUT_NEGATIVE)),
        ] {
            assert_eq!(blocking_parse(line), Some(Err(error)), "{line}");
        }
        // Where a client may not block, Command::parse answers the polled command.
        assert_eq!(
            list_parse("blpop a b 0"),
            blocking_parse("blpop a b 0")
                .expect("blocking")
                .map(|(command, _)| command)
        );
        assert_eq!(parse("blpop a"), Err(arity("blpop")));
    }

    #[test]
    fn polled_blocking_commands_answer_as_redis() {
        check(&[
            ("blpop blist1 blist2 0", Reply::NilArray),
            ("blmpop 0 2 blist1 blist2 left", Reply::NilArray),
            ("blmove blist1 target left right 0", Reply::Nil),
            ("brpoplpush blist1 target 0", Reply::Nil),
            ("rpush blist2 a b c", Reply::Int(3)),
            ("rpush blist1 foo", Reply::Int(1)),
            ("blpop blist1 blist2 0", bulks(&["blist1", "foo"])),
            ("exists blist1", Reply::Int(0)),
            ("brpop blist1 blist2 0", bulks(&["blist2", "c"])),
            ("blpop blist1 blist2 0", bulks(&["blist2", "a"])),
            // BLPOP with the same key multiple times (issue #801).
            ("rpush same x", Reply::Int(1)),
            ("blpop same same 0", bulks(&["same", "x"])),
            (
                "blmpop 0 2 blist1 blist2 left count 5",
                Reply::Array(vec![Reply::Bulk(b("blist2")), bulks(&["b"])]),
            ),
            ("rpush src x", Reply::Int(1)),
            ("brpoplpush src target 0", Reply::Bulk(b("x"))),
            ("lrange target 0 -1", bulks(&["x"])),
        ]);
    }

    #[test]
    fn huge_counts_allocate_by_the_list() {
        check(&[
            ("rpush l a b", Reply::Int(2)),
            ("lpos l a count 9223372036854775807", ints(&[0])),
            (
                "lmpop 1 l left count 9223372036854775807",
                Reply::Array(vec![Reply::Bulk(b("l")), bulks(&["a", "b"])]),
            ),
        ]);
    }

    #[test]
    fn commands_survive_log_encoding() {
        for line in [
            "lpush k a b",
            "rpop k 3",
            "lindex k x",
            "lset k -1 v",
            "lpos k e rank -2 count 3 maxlen 4",
            "lmove a b left right",
            "lmpop 2 a b right count 7",
            "blpop a b 0",
        ] {
            let command = parse(line).expect(line);
            let bytes = postcard::to_allocvec(&command).expect("encodes");
            let decoded: Command = postcard::from_bytes(&bytes).expect("decodes");
            assert_eq!(decoded, command, "{line}");
        }
    }

    /// One step of the model: an operation on a few keys, applied to plain vectors.
    fn model_step(
        model: &mut BTreeMap<String, Vec<String>>,
        op: u8,
        key: &str,
        other: &str,
        value: &str,
        n: i64,
    ) -> (String, Reply) {
        let bulk = |s: &str| Reply::Bulk(b(s));
        let len = model.get(key).map_or(0, Vec::len) as i64;
        let norm = |i: i64| if i < 0 { len + i } else { i };
        let (line, reply) = match op {
            0 => {
                let list = model.entry(key.to_string()).or_default();
                list.insert(0, value.to_string());
                (
                    format!("lpush {key} {value}"),
                    Reply::Int(list.len() as i64),
                )
            }
            1 => {
                let list = model.entry(key.to_string()).or_default();
                list.push(value.to_string());
                (
                    format!("rpush {key} {value}"),
                    Reply::Int(list.len() as i64),
                )
            }
            2 => {
                let count = n.unsigned_abs() as usize;
                let reply = match model.get_mut(key) {
                    None => Reply::NilArray,
                    Some(list) => {
                        let taken = count.min(list.len());
                        Reply::Array(list.drain(..taken).map(|s| bulk(&s)).collect())
                    }
                };
                (format!("lpop {key} {count}"), reply)
            }
            3 => {
                let reply = match model.get_mut(key) {
                    None => Reply::Nil,
                    Some(list) => bulk(&list.pop().expect("non-empty")),
                };
                (format!("rpop {key}"), reply)
            }
            4 => {
                let mut removed = 0;
                if let Some(list) = model.get_mut(key) {
                    let limit = if n == 0 {
                        usize::MAX
                    } else {
                        n.unsigned_abs() as usize
                    };
                    let mut indexes: Vec<usize> = (0..list.len()).collect();
                    if n < 0 {
                        indexes.reverse();
                    }
                    let doomed: Vec<usize> = indexes
                        .into_iter()
                        .filter(|i| list[*i] == value)
                        .take(limit)
                        .collect();
                    removed = doomed.len();
                    let mut i = 0;
                    list.retain(|_| {
                        i += 1;
                        !doomed.contains(&(i - 1))
                    });
                }
                (
                    format!("lrem {key} {n} {value}"),
                    Reply::Int(removed as i64),
                )
            }
            5 => {
                let (start, stop) = (n, n.wrapping_mul(3) - 2);
                if let Some(list) = model.get_mut(key) {
                    let (s, e) = (norm(start).max(0), norm(stop).min(len - 1));
                    *list = if s > e {
                        vec![]
                    } else {
                        list[s as usize..=e as usize].to_vec()
                    };
                }
                (format!("ltrim {key} {start} {stop}"), Reply::Ok)
            }
            6 => {
                let reply = match model.get_mut(key) {
                    None => Reply::error(NO_SUCH_KEY),
                    Some(list) => {
                        let i = norm(n);
                        if (0..len).contains(&i) {
                            list[i as usize] = value.to_string();
                            Reply::Ok
                        } else {
                            Reply::error(INDEX_OUT_OF_RANGE)
                        }
                    }
                };
                (format!("lset {key} {n} {value}"), reply)
            }
            7 => {
                let reply = match model.get_mut(key) {
                    None => Reply::Int(0),
                    Some(list) => match list.iter().position(|item| item == "v0") {
                        None => Reply::Int(-1),
                        Some(at) => {
                            list.insert(at + usize::from(n > 0), value.to_string());
                            Reply::Int(list.len() as i64)
                        }
                    },
                };
                let place = if n > 0 { "after" } else { "before" };
                (format!("linsert {key} {place} v0 {value}"), reply)
            }
            8 => {
                let (from, to) = (n & 1 == 0, n & 2 == 0);
                let reply = match model.get_mut(key) {
                    None => Reply::Nil,
                    Some(list) => {
                        let item = if from {
                            list.remove(0)
                        } else {
                            list.pop().expect("item")
                        };
                        if list.is_empty() {
                            model.remove(key);
                        }
                        let target = model.entry(other.to_string()).or_default();
                        if to {
                            target.insert(0, item.clone());
                        } else {
                            target.push(item.clone());
                        }
                        bulk(&item)
                    }
                };
                let side = |left: bool| if left { "left" } else { "right" };
                (
                    format!("lmove {key} {other} {} {}", side(from), side(to)),
                    reply,
                )
            }
            _ => {
                let count = n.unsigned_abs().max(1) as usize;
                let reply = [key, other]
                    .into_iter()
                    .find_map(|k| {
                        let list = model.get_mut(k)?;
                        let taken = count.min(list.len());
                        let popped = list.drain(list.len() - taken..).rev().map(|s| bulk(&s));
                        Some(Reply::Array(vec![bulk(k), Reply::Array(popped.collect())]))
                    })
                    .unwrap_or(Reply::NilArray);
                (format!("lmpop 2 {key} {other} right count {count}"), reply)
            }
        };
        model.retain(|_, list| !list.is_empty());
        (line, reply)
    }

    proptest! {
        /// Random list operations on two keys: every reply, and every list's contents, match
        /// plain vectors; emptied lists are deleted.
        #[test]
        fn matches_a_vector_model(
            ops in proptest::collection::vec((0u8..10, 0u8..2, 0u8..3, -4i64..5), 1..80)
        ) {
            let mut model: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut state: BTreeMap<Bytes, Record> = BTreeMap::new();
            for (op, key, value, n) in ops {
                let (key, other) = if key == 0 { ("k0", "k1") } else { ("k1", "k0") };
                let value = format!("v{value}");
                let (line, expected) = model_step(&mut model, op, key, other, &value, n);
                let reply = apply(&mut state, 0, &parse(&line).expect("valid"));
                prop_assert_eq!(&reply, &expected, "{}", line);
                for key in ["k0", "k1"] {
                    let stored = stored_list(&state, key);
                    let modelled = model.get(key).map(|list| list.iter().map(|s| b(s)).collect());
                    prop_assert_eq!(stored, modelled, "{} after {}", key, line);
                }
            }
        }
    }
}
