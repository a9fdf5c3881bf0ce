//! The string commands beyond the first few (`GET`, `SET` without `GET`/`EXAT`/`PXAT`,
//! `INCRBY`, `APPEND`, `MGET`, `MSET`, which live in [`Command`](super::Command) itself).
//! Same shape as the collection families: an enum stored in the log (variants only ever added
//! at the end), parsing, classification, and execution over a [`View`].

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::command::parse_i64;
use super::command::{Keys, arity_fits};
use super::execute::View;
use super::keyspace::{Deadline, parse_deadline};
use super::set::long_double::LongDouble;
use super::{
    CommandError, Record, Reply, STRING_BYTES_MAX, STRING_TOO_LONG, SetCondition, Value, WRONGTYPE,
};

/// What a `SET`-like command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetAnswer {
    /// `OK`, or nil when the condition failed (`SET`, `SETEX`, `PSETEX`).
    Ok,
    /// The old string value or nil (`SET … GET`, `GETSET`); a non-string old value is a
    /// `WRONGTYPE` error and nothing is written.
    Old,
    /// 1 when written, 0 when not (`SETNX`).
    Flag,
}

/// How `GETEX` changes the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpiryChange {
    Persist,
    At(Deadline),
}

/// What `LCS` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LcsAnswer {
    /// The longest common subsequence itself.
    Text,
    /// Its length (`LEN`).
    Len,
    /// The matching ranges (`IDX [MINMATCHLEN n] [WITHMATCHLEN]`).
    Ranges { min_len: u64, with_len: bool },
}

/// A string command as replicas execute it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StringCommand {
    /// `SET` with every option, `SETNX`, `SETEX`, `PSETEX`, `GETSET`.
    Set {
        key: Bytes,
        value: Bytes,
        condition: SetCondition,
        deadline: Option<Deadline>,
        keep_ttl: bool,
        answer: SetAnswer,
        /// The command's name for error texts (`set`, `setex`, …).
        name: SetName,
    },
    GetEx {
        key: Bytes,
        change: Option<ExpiryChange>,
    },
    GetDel {
        key: Bytes,
    },
    SetRange {
        key: Bytes,
        offset: u64,
        value: Bytes,
    },
    /// `GETRANGE` / `SUBSTR`.
    GetRange {
        key: Bytes,
        start: i64,
        end: i64,
    },
    StrLen {
        key: Bytes,
    },
    /// `INCRBYFLOAT`: the increment as the client wrote it (checked to be a float at parse;
    /// kept as text so the command stays `Eq` and bit-exact in the log).
    IncrByFloat {
        key: Bytes,
        delta: Bytes,
    },
    MSetNx {
        pairs: Vec<(Bytes, Bytes)>,
    },
    Lcs {
        a: Bytes,
        b: Bytes,
        answer: LcsAnswer,
    },
    /// `SETBIT key offset 0|1`: answers the bit it replaced.
    SetBit {
        key: Bytes,
        offset: u64,
        bit: bool,
    },
    GetBit {
        key: Bytes,
        offset: u64,
    },
    /// `BITCOUNT key [start end [BYTE|BIT]]`.
    BitCount {
        key: Bytes,
        range: Option<BitRange>,
    },
    /// `BITPOS key 0|1 [start [end [BYTE|BIT]]]`.
    BitPos {
        key: Bytes,
        bit: bool,
        range: Option<BitRange>,
    },
    /// `BITOP AND|OR|XOR|NOT destkey key…`.
    BitOp {
        operation: BitOperation,
        dest: Bytes,
        keys: Vec<Bytes>,
    },
}

/// A `BITCOUNT`/`BITPOS` range: inclusive, negative from the end, in bytes or (`BIT`) bits.
/// `end` is `None` when `BITPOS` was given a start only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitRange {
    pub start: i64,
    pub end: Option<i64>,
    pub bits: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BitOperation {
    And,
    Or,
    Xor,
    Not,
}

/// Redis's `proto-max-bulk-len` in bits: the largest `SETBIT`/`GETBIT` offset is one less.
const BIT_OFFSET_END: u64 = (STRING_BYTES_MAX as u64) * 8;
const BIT_OFFSET_ERROR: &str = "ERR bit offset is not an integer or out of range";

fn parse_bit_offset(arg: &Bytes) -> Result<u64, CommandError> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|text| !text.starts_with('+'))
        .and_then(|text| text.parse::<u64>().ok())
        .filter(|offset| *offset < BIT_OFFSET_END)
        .ok_or_else(|| CommandError::Message(BIT_OFFSET_ERROR.into()))
}

/// `[start end [BYTE|BIT]]` (`BITCOUNT`: both or neither) or `[start [end [BYTE|BIT]]]`
/// (`BITPOS`).
fn parse_bit_range(args: &[Bytes], end_optional: bool) -> Result<Option<BitRange>, CommandError> {
    let unit = |arg: &Bytes| {
        if arg.eq_ignore_ascii_case(b"bit") {
            Ok(true)
        } else if arg.eq_ignore_ascii_case(b"byte") {
            Ok(false)
        } else {
            Err(CommandError::Syntax)
        }
    };
    match args {
        [] => Ok(None),
        [start] if end_optional => Ok(Some(BitRange {
            start: parse_i64(start)?,
            end: None,
            bits: false,
        })),
        [start, end] => Ok(Some(BitRange {
            start: parse_i64(start)?,
            end: Some(parse_i64(end)?),
            bits: false,
        })),
        [start, end, mode] => Ok(Some(BitRange {
            start: parse_i64(start)?,
            end: Some(parse_i64(end)?),
            bits: unit(mode)?,
        })),
        _ => Err(CommandError::Syntax),
    }
}

/// The inclusive bit span `range` selects in a string of `len` bytes, clamped as Redis's
/// `bitcountCommand`/`bitposCommand` clamp it; `None` when it is empty.
fn bit_span(range: Option<BitRange>, len: usize) -> Option<(u64, u64)> {
    let Some(range) = range else {
        return (len > 0).then(|| (0, len as u64 * 8 - 1));
    };
    let total = if range.bits {
        len as i64 * 8
    } else {
        len as i64
    };
    let clamp = |index: i64| {
        let index = if index < 0 { total + index } else { index };
        index.max(0)
    };
    let start = clamp(range.start);
    let end = clamp(range.end.unwrap_or(total - 1)).min(total - 1);
    if start > end {
        return None;
    }
    Some(if range.bits {
        (start as u64, end as u64)
    } else {
        (start as u64 * 8, end as u64 * 8 + 7)
    })
}

fn bit_at(bytes: &[u8], offset: u64) -> bool {
    bytes
        .get((offset / 8) as usize)
        .is_some_and(|byte| byte & (0x80 >> (offset % 8)) != 0)
}

/// Which client command a [`StringCommand::Set`] came from (error texts name it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetName {
    Set,
    SetNx,
    SetEx,
    PSetEx,
    GetSet,
}

impl SetName {
    fn as_str(self) -> &'static str {
        match self {
            SetName::Set => "set",
            SetName::SetNx => "setnx",
            SetName::SetEx => "setex",
            SetName::PSetEx => "psetex",
            SetName::GetSet => "getset",
        }
    }
}

fn float_error() -> CommandError {
    CommandError::NotFloat
}

impl StringCommand {
    pub(super) fn parse(name: &str, rest: &[Bytes]) -> Option<Result<StringCommand, CommandError>> {
        let arity = |ok: bool| arity_fits(name, ok);
        let parsed = (|| match name {
            "setnx" => {
                arity(rest.len() == 2)?;
                Ok(StringCommand::Set {
                    key: rest[0].clone(),
                    value: rest[1].clone(),
                    condition: SetCondition::IfAbsent,
                    deadline: None,
                    keep_ttl: false,
                    answer: SetAnswer::Flag,
                    name: SetName::SetNx,
                })
            }
            "setex" | "psetex" => {
                arity(rest.len() == 3)?;
                let amount = parse_i64(&rest[1])?;
                let (set_name, deadline) = if name == "setex" {
                    (SetName::SetEx, Deadline::InSeconds(amount))
                } else {
                    (SetName::PSetEx, Deadline::InMillis(amount))
                };
                if amount <= 0 || deadline.millis_overflow() {
                    return Err(CommandError::InvalidExpire {
                        name: name.to_string(),
                    });
                }
                Ok(StringCommand::Set {
                    key: rest[0].clone(),
                    value: rest[2].clone(),
                    condition: SetCondition::Always,
                    deadline: Some(deadline),
                    keep_ttl: false,
                    answer: SetAnswer::Ok,
                    name: set_name,
                })
            }
            "getset" => {
                arity(rest.len() == 2)?;
                Ok(StringCommand::Set {
                    key: rest[0].clone(),
                    value: rest[1].clone(),
                    condition: SetCondition::Always,
                    deadline: None,
                    keep_ttl: false,
                    answer: SetAnswer::Old,
                    name: SetName::GetSet,
                })
            }
            "getex" => {
                arity(!rest.is_empty())?;
                let change = match &rest[1..] {
                    [] => None,
                    [option] if option.eq_ignore_ascii_case(b"persist") => {
                        Some(ExpiryChange::Persist)
                    }
                    [option, amount] => match parse_deadline(option, amount, "getex")? {
                        Some(deadline) => Some(ExpiryChange::At(deadline)),
                        None => return Err(CommandError::Syntax),
                    },
                    _ => return Err(CommandError::Syntax),
                };
                Ok(StringCommand::GetEx {
                    key: rest[0].clone(),
                    change,
                })
            }
            "getdel" => {
                arity(rest.len() == 1)?;
                Ok(StringCommand::GetDel {
                    key: rest[0].clone(),
                })
            }
            "setrange" => {
                arity(rest.len() == 3)?;
                let offset = parse_i64(&rest[1])?;
                let offset = u64::try_from(offset).map_err(|_| CommandError::OffsetOutOfRange)?;
                Ok(StringCommand::SetRange {
                    key: rest[0].clone(),
                    offset,
                    value: rest[2].clone(),
                })
            }
            "getrange" | "substr" => {
                arity(rest.len() == 3)?;
                Ok(StringCommand::GetRange {
                    key: rest[0].clone(),
                    start: parse_i64(&rest[1])?,
                    end: parse_i64(&rest[2])?,
                })
            }
            "strlen" => {
                arity(rest.len() == 1)?;
                Ok(StringCommand::StrLen {
                    key: rest[0].clone(),
                })
            }
            "incrbyfloat" => {
                arity(rest.len() == 2)?;
                LongDouble::parse(&rest[1]).ok_or_else(float_error)?;
                Ok(StringCommand::IncrByFloat {
                    key: rest[0].clone(),
                    delta: rest[1].clone(),
                })
            }
            "setbit" => {
                arity(rest.len() == 3)?;
                let offset = parse_bit_offset(&rest[1])?;
                let bit = match rest[2].as_ref() {
                    b"0" => false,
                    b"1" => true,
                    _ => {
                        return Err(CommandError::Message(
                            "ERR bit is not an integer or out of range".into(),
                        ));
                    }
                };
                Ok(StringCommand::SetBit {
                    key: rest[0].clone(),
                    offset,
                    bit,
                })
            }
            "getbit" => {
                arity(rest.len() == 2)?;
                Ok(StringCommand::GetBit {
                    key: rest[0].clone(),
                    offset: parse_bit_offset(&rest[1])?,
                })
            }
            "bitcount" => {
                arity(!rest.is_empty())?;
                Ok(StringCommand::BitCount {
                    key: rest[0].clone(),
                    range: parse_bit_range(&rest[1..], false)?,
                })
            }
            "bitpos" => {
                arity(rest.len() >= 2)?;
                let bit = match parse_i64(&rest[1]) {
                    Ok(0) => false,
                    Ok(1) => true,
                    Ok(_) => {
                        return Err(CommandError::Message(
                            "ERR The bit argument must be 1 or 0.".into(),
                        ));
                    }
                    Err(e) => return Err(e),
                };
                Ok(StringCommand::BitPos {
                    key: rest[0].clone(),
                    bit,
                    range: parse_bit_range(&rest[2..], true)?,
                })
            }
            "bitop" => {
                arity(rest.len() >= 3)?;
                let operation = match rest[0].to_ascii_lowercase().as_slice() {
                    b"and" => BitOperation::And,
                    b"or" => BitOperation::Or,
                    b"xor" => BitOperation::Xor,
                    b"not" => BitOperation::Not,
                    _ => return Err(CommandError::Syntax),
                };
                if operation == BitOperation::Not && rest.len() != 3 {
                    return Err(CommandError::Message(
                        "ERR BITOP NOT must be called with a single source key.".into(),
                    ));
                }
                Ok(StringCommand::BitOp {
                    operation,
                    dest: rest[1].clone(),
                    keys: rest[2..].to_vec(),
                })
            }
            "msetnx" => {
                arity(!rest.is_empty() && rest.len().is_multiple_of(2))?;
                Ok(StringCommand::MSetNx {
                    pairs: rest
                        .chunks_exact(2)
                        .map(|pair| (pair[0].clone(), pair[1].clone()))
                        .collect(),
                })
            }
            "lcs" => {
                arity(rest.len() >= 2)?;
                let (mut len, mut idx, mut with_len, mut min_len) = (false, false, false, 0u64);
                let mut options = rest[2..].iter();
                while let Some(option) = options.next() {
                    match option.to_ascii_lowercase().as_slice() {
                        b"len" => len = true,
                        b"idx" => idx = true,
                        b"withmatchlen" => with_len = true,
                        b"minmatchlen" => {
                            let amount = parse_i64(options.next().ok_or(CommandError::Syntax)?)?;
                            min_len = amount.max(0) as u64;
                        }
                        _ => return Err(CommandError::Syntax),
                    }
                }
                if len && idx {
                    return Err(CommandError::Message(
                        "ERR If you want both the length and indexes, please just use IDX.".into(),
                    ));
                }
                let answer = match (len, idx) {
                    (true, _) => LcsAnswer::Len,
                    (_, true) => LcsAnswer::Ranges { min_len, with_len },
                    _ => LcsAnswer::Text,
                };
                Ok(StringCommand::Lcs {
                    a: rest[0].clone(),
                    b: rest[1].clone(),
                    answer,
                })
            }
            _ => Err(CommandError::Unknown {
                name: String::new(),
            }),
        })();
        match parsed {
            Err(CommandError::Unknown { name }) if name.is_empty() => None,
            other => Some(other),
        }
    }

    /// Parses `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`: `None` when
    /// none of the options this family adds (`GET`, `EXAT`, `PXAT`) is used, so the plain
    /// [`Command::Set`](super::Command::Set) goes on serving the common case.
    pub(super) fn parse_set(rest: &[Bytes]) -> Option<Result<StringCommand, CommandError>> {
        let extended = rest[2..].iter().any(|option| {
            [&b"get"[..], b"exat", b"pxat"]
                .iter()
                .any(|name| option.eq_ignore_ascii_case(name))
        });
        if !extended {
            return None;
        }
        let parsed = (|| {
            let mut condition = SetCondition::Always;
            let mut deadline = None;
            let mut keep_ttl = false;
            let mut get = false;
            let mut options = rest[2..].iter();
            while let Some(option) = options.next() {
                let lower = option.to_ascii_lowercase();
                match lower.as_slice() {
                    b"nx" if condition == SetCondition::Always => {
                        condition = SetCondition::IfAbsent
                    }
                    b"xx" if condition == SetCondition::Always => {
                        condition = SetCondition::IfPresent
                    }
                    b"get" if !get => get = true,
                    b"keepttl" if deadline.is_none() && !keep_ttl => keep_ttl = true,
                    b"ex" | b"px" | b"exat" | b"pxat" if deadline.is_none() && !keep_ttl => {
                        let amount = options.next().ok_or(CommandError::Syntax)?;
                        let parsed =
                            parse_deadline(option, amount, "set")?.ok_or(CommandError::Syntax)?;
                        if parsed.raw() <= 0 || parsed.millis_overflow() {
                            return Err(CommandError::InvalidExpire { name: "set".into() });
                        }
                        deadline = Some(parsed);
                    }
                    _ => return Err(CommandError::Syntax),
                }
            }
            Ok(StringCommand::Set {
                key: rest[0].clone(),
                value: rest[1].clone(),
                condition,
                deadline,
                keep_ttl,
                answer: if get { SetAnswer::Old } else { SetAnswer::Ok },
                name: SetName::Set,
            })
        })();
        Some(parsed)
    }

    pub fn is_write(&self) -> bool {
        match self {
            StringCommand::GetRange { .. }
            | StringCommand::StrLen { .. }
            | StringCommand::Lcs { .. }
            | StringCommand::GetBit { .. }
            | StringCommand::BitCount { .. }
            | StringCommand::BitPos { .. } => false,
            // `GETEX` without options only reads, but stays a write: one path for its forms.
            _ => true,
        }
    }

    pub fn keys(&self) -> Keys<'_> {
        match self {
            StringCommand::Set { key, .. }
            | StringCommand::GetEx { key, .. }
            | StringCommand::GetDel { key }
            | StringCommand::SetRange { key, .. }
            | StringCommand::GetRange { key, .. }
            | StringCommand::StrLen { key }
            | StringCommand::IncrByFloat { key, .. }
            | StringCommand::SetBit { key, .. }
            | StringCommand::GetBit { key, .. }
            | StringCommand::BitCount { key, .. }
            | StringCommand::BitPos { key, .. } => smallvec::smallvec![key],
            StringCommand::BitOp { dest, keys, .. } => {
                std::iter::once(dest).chain(keys.iter()).collect()
            }
            StringCommand::MSetNx { pairs } => pairs.iter().map(|(key, _)| key).collect(),
            StringCommand::Lcs { a, b, .. } => smallvec::smallvec![a, b],
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            StringCommand::Set { name, .. } => name.as_str(),
            StringCommand::GetEx { .. } => "getex",
            StringCommand::GetDel { .. } => "getdel",
            StringCommand::SetRange { .. } => "setrange",
            StringCommand::GetRange { .. } => "getrange",
            StringCommand::StrLen { .. } => "strlen",
            StringCommand::IncrByFloat { .. } => "incrbyfloat",
            StringCommand::MSetNx { .. } => "msetnx",
            StringCommand::Lcs { .. } => "lcs",
            StringCommand::SetBit { .. } => "setbit",
            StringCommand::GetBit { .. } => "getbit",
            StringCommand::BitCount { .. } => "bitcount",
            StringCommand::BitPos { .. } => "bitpos",
            StringCommand::BitOp { .. } => "bitop",
        }
    }

    pub(super) fn execute(&self, view: &mut View<'_>) -> Reply {
        match self.apply(view) {
            Ok(reply) | Err(reply) => reply,
        }
    }

    fn apply(&self, view: &mut View<'_>) -> Result<Reply, Reply> {
        match self {
            StringCommand::Set {
                key,
                value,
                condition,
                deadline,
                keep_ttl,
                answer,
                name,
            } => {
                let old = view.get(key).cloned();
                let old_value = match (&old, answer) {
                    (
                        Some(Record {
                            value: Value::Str(text),
                            ..
                        }),
                        _,
                    ) => Reply::Bulk(text.clone()),
                    (Some(_), SetAnswer::Old) => return Err(Reply::error(WRONGTYPE)),
                    _ => Reply::Nil,
                };
                let allowed = match condition {
                    SetCondition::Always => true,
                    SetCondition::IfAbsent => old.is_none(),
                    SetCondition::IfPresent => old.is_some(),
                };
                let expires_at_ms = match (deadline, keep_ttl) {
                    (Some(deadline), _) => match deadline.resolve(view.now_ms) {
                        Some(at) => Some(at),
                        None => {
                            return Err(Reply::error(format!(
                                "ERR invalid expire time in '{}' command",
                                name.as_str()
                            )));
                        }
                    },
                    (None, true) => old.as_ref().and_then(|record| record.expires_at_ms),
                    (None, false) => None,
                };
                if allowed {
                    // An absolute time already past deletes the key, as Redis does for
                    // `SET … EXAT <past>` (the value is written and at once expired).
                    let record = Record {
                        value: Value::Str(value.clone()),
                        expires_at_ms,
                    };
                    let live = !record.is_expired(view.now_ms);
                    view.put(key, live.then_some(record));
                }
                Ok(match answer {
                    SetAnswer::Ok if allowed => Reply::Ok,
                    SetAnswer::Ok => Reply::Nil,
                    SetAnswer::Old => old_value,
                    SetAnswer::Flag => Reply::Int(i64::from(allowed)),
                })
            }
            StringCommand::GetEx { key, change } => {
                let Some(mut record) = view.get(key).cloned() else {
                    return Ok(Reply::Nil);
                };
                let Value::Str(value) = &record.value else {
                    return Err(Reply::error(WRONGTYPE));
                };
                let reply = Reply::Bulk(value.clone());
                match change {
                    None => {}
                    Some(ExpiryChange::Persist) if record.expires_at_ms.is_some() => {
                        record.expires_at_ms = None;
                        view.put(key, Some(record));
                    }
                    Some(ExpiryChange::Persist) => {}
                    Some(ExpiryChange::At(deadline)) => {
                        if deadline.raw() <= 0 || deadline.millis_overflow() {
                            return Err(Reply::error("ERR invalid expire time in 'getex' command"));
                        }
                        match deadline.resolve(view.now_ms) {
                            None => {
                                return Err(Reply::error(
                                    "ERR invalid expire time in 'getex' command",
                                ));
                            }
                            Some(at) if at <= view.now_ms => view.put(key, None),
                            Some(at) => {
                                record.expires_at_ms = Some(at);
                                view.put(key, Some(record));
                            }
                        }
                    }
                }
                Ok(reply)
            }
            StringCommand::GetDel { key } => match view.get(key) {
                None => Ok(Reply::Nil),
                Some(Record {
                    value: Value::Str(value),
                    ..
                }) => {
                    let reply = Reply::Bulk(value.clone());
                    view.put(key, None);
                    Ok(reply)
                }
                Some(_) => Err(Reply::error(WRONGTYPE)),
            },
            StringCommand::SetRange { key, offset, value } => {
                let (current, expires_at_ms) = string_of(view, key)?;
                if value.is_empty() {
                    // Redis answers the current length and creates nothing.
                    return Ok(Reply::Int(current.len() as i64));
                }
                let end = offset
                    .checked_add(value.len() as u64)
                    .filter(|end| *end <= STRING_BYTES_MAX as u64)
                    .ok_or_else(|| Reply::error(STRING_TOO_LONG))?
                    as usize;
                let mut bytes = current.to_vec();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[*offset as usize..end].copy_from_slice(value);
                let length = bytes.len() as i64;
                view.put(
                    key,
                    Some(Record {
                        value: Value::Str(Bytes::from(bytes)),
                        expires_at_ms,
                    }),
                );
                Ok(Reply::Int(length))
            }
            StringCommand::GetRange { key, start, end } => {
                let (text, _) = string_of(view, key)?;
                Ok(Reply::Bulk(substring(&text, *start, *end)))
            }
            StringCommand::StrLen { key } => {
                let (text, _) = string_of(view, key)?;
                Ok(Reply::Int(text.len() as i64))
            }
            StringCommand::SetBit { key, offset, bit } => {
                let (current, expires_at_ms) = string_of(view, key)?;
                let byte = (offset / 8) as usize;
                let mut bytes = current.to_vec();
                if bytes.len() <= byte {
                    bytes.resize(byte + 1, 0);
                }
                let mask = 0x80u8 >> (offset % 8);
                let old = bytes[byte] & mask != 0;
                if *bit {
                    bytes[byte] |= mask;
                } else {
                    bytes[byte] &= !mask;
                }
                view.put(
                    key,
                    Some(Record {
                        value: Value::Str(Bytes::from(bytes)),
                        expires_at_ms,
                    }),
                );
                Ok(Reply::Int(i64::from(old)))
            }
            StringCommand::GetBit { key, offset } => {
                let (text, _) = string_of(view, key)?;
                Ok(Reply::Int(i64::from(bit_at(&text, *offset))))
            }
            StringCommand::BitCount { key, range } => {
                let (text, _) = string_of(view, key)?;
                let Some((first, last)) = bit_span(*range, text.len()) else {
                    return Ok(Reply::Int(0));
                };
                // Whole bytes by popcount; the partial bytes at either end bit by bit.
                let (first_byte, last_byte) = (first.div_ceil(8), (last + 1) / 8);
                let ones = |offsets: std::ops::Range<u64>| {
                    offsets.filter(|offset| bit_at(&text, *offset)).count() as u64
                };
                let count = if first_byte >= last_byte {
                    ones(first..last + 1)
                } else {
                    let whole: u64 = text[first_byte as usize..last_byte as usize]
                        .iter()
                        .map(|byte| u64::from(byte.count_ones()))
                        .sum();
                    whole + ones(first..first_byte * 8) + ones(last_byte * 8..last + 1)
                };
                Ok(Reply::Int(count as i64))
            }
            StringCommand::BitPos { key, bit, range } => {
                let text = match view.get(key) {
                    None => return Ok(Reply::Int(if *bit { -1 } else { 0 })),
                    Some(Record {
                        value: Value::Str(text),
                        ..
                    }) => text.clone(),
                    Some(_) => return Err(Reply::error(WRONGTYPE)),
                };
                let Some((first, last)) = bit_span(*range, text.len()) else {
                    return Ok(Reply::Int(-1));
                };
                let mut offset = first;
                while offset <= last {
                    // Skip whole bytes that cannot hold the bit.
                    if offset % 8 == 0 && offset + 7 <= last {
                        let byte = text[(offset / 8) as usize];
                        if (*bit && byte == 0) || (!*bit && byte == 0xff) {
                            offset += 8;
                            continue;
                        }
                    }
                    if bit_at(&text, offset) == *bit {
                        return Ok(Reply::Int(offset as i64));
                    }
                    offset += 1;
                }
                // Looking for a clear bit with no end given: the string is taken as padded
                // with zeros, so the answer is the first bit past it (as Redis answers).
                let end_given = range.is_some_and(|range| range.end.is_some());
                Ok(Reply::Int(if !*bit && !end_given {
                    text.len() as i64 * 8
                } else {
                    -1
                }))
            }
            StringCommand::BitOp {
                operation,
                dest,
                keys,
            } => {
                let sources = keys
                    .iter()
                    .map(|key| string_of(view, key).map(|(text, _)| text))
                    .collect::<Result<Vec<_>, _>>()?;
                let len = sources.iter().map(Bytes::len).max().unwrap_or(0);
                let result: Vec<u8> = (0..len)
                    .map(|index| {
                        let mut bytes = sources
                            .iter()
                            .map(|source| source.get(index).copied().unwrap_or(0));
                        let first = bytes.next().unwrap_or(0);
                        match operation {
                            BitOperation::Not => !first,
                            BitOperation::And => bytes.fold(first, |a, b| a & b),
                            BitOperation::Or => bytes.fold(first, |a, b| a | b),
                            BitOperation::Xor => bytes.fold(first, |a, b| a ^ b),
                        }
                    })
                    .collect();
                // An empty result deletes the destination, as Redis does.
                view.put(
                    dest,
                    (!result.is_empty()).then(|| Record::string(Bytes::from(result))),
                );
                Ok(Reply::Int(len as i64))
            }
            StringCommand::IncrByFloat { key, delta } => {
                let (text, expires_at_ms) = match view.get(key) {
                    None => (None, None),
                    Some(Record {
                        value: Value::Str(text),
                        expires_at_ms,
                    }) => (Some(text.clone()), *expires_at_ms),
                    Some(_) => return Err(Reply::error(WRONGTYPE)),
                };
                // Redis computes in `long double`; so do we (`LongDouble`), so the sums and
                // their text match its suite. An infinite increment parses; the sum is refused.
                let current = match text {
                    None => LongDouble::ZERO,
                    Some(text) => LongDouble::parse(&text)
                        .ok_or_else(|| Reply::error("ERR value is not a valid float"))?,
                };
                let delta = LongDouble::parse(delta)
                    .ok_or_else(|| Reply::error("ERR value is not a valid float"))?;
                let next = current.add(delta);
                if !next.is_finite() {
                    return Err(Reply::error("ERR increment would produce NaN or Infinity"));
                }
                let text = Bytes::from(next.to_human());
                view.put(
                    key,
                    Some(Record {
                        value: Value::Str(text.clone()),
                        expires_at_ms,
                    }),
                );
                Ok(Reply::Bulk(text))
            }
            StringCommand::MSetNx { pairs } => {
                if pairs.iter().any(|(key, _)| view.get(key).is_some()) {
                    return Ok(Reply::Int(0));
                }
                for (key, value) in pairs {
                    view.put(key, Some(Record::string(value.clone())));
                }
                Ok(Reply::Int(1))
            }
            StringCommand::Lcs { a, b, answer } => {
                let lcs_type = || Reply::error("ERR The specified keys must contain string values");
                let text = |view: &View<'_>, key: &Bytes| match view.get(key) {
                    None => Ok(Bytes::new()),
                    Some(Record {
                        value: Value::Str(text),
                        ..
                    }) => Ok(text.clone()),
                    Some(_) => Err(lcs_type()),
                };
                let (a, b) = (text(view, a)?, text(view, b)?);
                lcs(&a, &b, *answer)
            }
        }
    }
}

/// The string at `key` with its expiry (empty when missing); `WRONGTYPE` for other types.
fn string_of(view: &View<'_>, key: &Bytes) -> Result<(Bytes, Option<u64>), Reply> {
    match view.get(key) {
        None => Ok((Bytes::new(), None)),
        Some(Record {
            value: Value::Str(text),
            expires_at_ms,
        }) => Ok((text.clone(), *expires_at_ms)),
        Some(_) => Err(Reply::error(WRONGTYPE)),
    }
}

/// `GETRANGE`'s inclusive range with negative indexes from the end, as Redis clamps them.
fn substring(text: &Bytes, start: i64, end: i64) -> Bytes {
    let len = text.len() as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return Bytes::new();
    }
    let start = if start < 0 {
        (len + start).max(0)
    } else {
        start
    };
    let end = if end < 0 {
        (len + end).max(0)
    } else {
        end.min(len - 1)
    };
    if start > end || start >= len {
        return Bytes::new();
    }
    text.slice(start as usize..=end as usize)
}

/// Redis 7.0's `LCS`: dynamic programming over both strings, then a walk back from the end
/// that collects the subsequence and its matching ranges (the last ranges first, as Redis
/// reports them).
fn lcs(a: &[u8], b: &[u8], answer: LcsAnswer) -> Result<Reply, Reply> {
    let (rows, columns) = (a.len() + 1, b.len() + 1);
    // Redis's bound on the table (four bytes a cell) against `proto-max-bulk-len`.
    if rows
        .checked_mul(columns)
        .and_then(|cells| cells.checked_mul(4))
        .is_none_or(|bytes| bytes > STRING_BYTES_MAX)
    {
        return Err(Reply::error(
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let mut table = vec![0u32; rows * columns];
    let cell = |i: usize, j: usize| i * columns + j;
    for i in 1..rows {
        for j in 1..columns {
            table[cell(i, j)] = if a[i - 1] == b[j - 1] {
                table[cell(i - 1, j - 1)] + 1
            } else {
                table[cell(i - 1, j)].max(table[cell(i, j - 1)])
            };
        }
    }
    let length = table[cell(a.len(), b.len())] as usize;
    if answer == LcsAnswer::Len {
        return Ok(Reply::Int(length as i64));
    }
    let mut text = vec![0u8; length];
    let mut matches = Vec::new();
    let (mut i, mut j, mut at) = (a.len(), b.len(), length);
    // The range being collected: `a_start == a.len()` means none.
    let (mut a_start, mut a_end, mut b_start, mut b_end) = (a.len(), 0, 0, 0);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            text[at - 1] = a[i - 1];
            if a_start == a.len() {
                (a_start, a_end, b_start, b_end) = (i - 1, i - 1, j - 1, j - 1);
            } else if a_start == i && b_start == j {
                a_start -= 1;
                b_start -= 1;
            } else {
                emit = true;
            }
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            at -= 1;
            i -= 1;
            j -= 1;
        } else {
            if table[cell(i - 1, j)] > table[cell(i, j - 1)] {
                i -= 1;
            } else {
                j -= 1;
            }
            if a_start != a.len() {
                emit = true;
            }
        }
        if emit {
            if let LcsAnswer::Ranges { min_len, with_len } = answer {
                let len = (a_end - a_start + 1) as u64;
                if min_len == 0 || len >= min_len {
                    let range = |start: usize, end: usize| {
                        Reply::Array(vec![Reply::Int(start as i64), Reply::Int(end as i64)])
                    };
                    let mut item = vec![range(a_start, a_end), range(b_start, b_end)];
                    if with_len {
                        item.push(Reply::Int(len as i64));
                    }
                    matches.push(Reply::Array(item));
                }
            }
            a_start = a.len();
        }
    }
    Ok(match answer {
        LcsAnswer::Ranges { .. } => Reply::Array(vec![
            Reply::Bulk(Bytes::from_static(b"matches")),
            Reply::Array(matches),
            Reply::Bulk(Bytes::from_static(b"len")),
            Reply::Int(length as i64),
        ]),
        _ => Reply::Bulk(Bytes::from(text)),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::super::{Command, Record, Reply, execute};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Applies each `(time, command line)` in order the way a replica applies its log, and
    /// answers the replies and the final state.
    pub(in super::super) fn run_lines(
        script: &[(u64, &str)],
    ) -> (BTreeMap<Bytes, Record>, Vec<Reply>) {
        let mut state = BTreeMap::new();
        let mut replies = Vec::new();
        for (now_ms, line) in script {
            let args: Vec<Bytes> = line.split_whitespace().map(b).collect();
            let command = match Command::parse(&args) {
                Ok(command) => command,
                Err(error) => {
                    replies.push(Reply::error(error.to_string()));
                    continue;
                }
            };
            let outcome = execute(&command, *now_ms, &state);
            assert!(
                command.is_write() || outcome.writes.is_empty(),
                "read {line} wrote"
            );
            for (key, record) in outcome.writes {
                match record {
                    Some(record) => state.insert(key, record),
                    None => state.remove(&key),
                };
            }
            replies.push(outcome.reply);
        }
        (state, replies)
    }

    pub(in super::super) fn check(script: &[(u64, &str)], expected: &[Reply]) {
        let (_, replies) = run_lines(script);
        assert_eq!(replies.len(), expected.len(), "{script:?}");
        for ((line, reply), expected) in script.iter().zip(&replies).zip(expected) {
            assert_eq!(reply, expected, "{line:?}");
        }
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(b(s))
    }

    fn err(s: &str) -> Reply {
        Reply::error(s)
    }

    #[test]
    fn set_variants_answer_as_redis() {
        check(
            &[
                (0, "SETNX k a"),
                (0, "SETNX k b"),
                (0, "GETSET k c"),
                (0, "SET k d GET"),
                (0, "SET new v GET"),
                (0, "SET k e NX GET"),
                (0, "SET k f XX GET"),
                (0, "HSET h f v"),
                (0, "SET h x GET"),
                (0, "GET h"),
                (1_000, "SETEX t 10 v"),
                (1_000, "PTTL t"),
                (1_000, "SETEX t 0 v"),
                (1_000, "PSETEX t -5 v"),
                (1_000, "SET t v EXAT 20"),
                (1_000, "PTTL t"),
                (1_000, "SET t v PXAT 500"),
                (1_000, "EXISTS t"),
                (1_000, "SET t v EXAT 0"),
                (1_000, "SET t v GET EX 1 PX 1"),
            ],
            &[
                Reply::Int(1),
                Reply::Int(0),
                bulk("a"),
                bulk("c"),
                Reply::Nil,
                bulk("d"),
                bulk("d"),
                Reply::Int(1),
                err(super::super::WRONGTYPE),
                Reply::error(super::super::WRONGTYPE),
                Reply::Ok,
                Reply::Int(10_000),
                err("ERR invalid expire time in 'setex' command"),
                err("ERR invalid expire time in 'psetex' command"),
                Reply::Ok,
                Reply::Int(19_000),
                Reply::Ok,
                Reply::Int(0),
                err("ERR invalid expire time in 'set' command"),
                err("ERR syntax error"),
            ],
        );
    }

    #[test]
    fn getex_getdel_strlen_and_ranges() {
        check(
            &[
                (0, "SET k hello"),
                (0, "GETEX k EX 10"),
                (0, "TTL k"),
                (0, "GETEX k PERSIST"),
                (0, "TTL k"),
                (0, "GETEX k PX 0"),
                (0, "GETEX k EX 1 PX 1"),
                (0, "GETEX missing"),
                (0, "STRLEN k"),
                (0, "GETRANGE k 0 -1"),
                (0, "GETRANGE k -3 -1"),
                (0, "GETRANGE k 1 100"),
                (0, "GETRANGE k 4 1"),
                (0, "SUBSTR k -100 -50"),
                (0, "GETDEL k"),
                (0, "GETDEL k"),
                (0, "STRLEN k"),
                (0, "GETEX k PXAT 1"),
            ],
            &[
                Reply::Ok,
                bulk("hello"),
                Reply::Int(10),
                bulk("hello"),
                Reply::Int(-1),
                err("ERR invalid expire time in 'getex' command"),
                err("ERR syntax error"),
                Reply::Nil,
                Reply::Int(5),
                bulk("hello"),
                bulk("llo"),
                bulk("ello"),
                bulk(""),
                // Redis 7.0 clamps both ends to 0 (7.2 answers empty).
                bulk("h"),
                bulk("hello"),
                Reply::Nil,
                Reply::Int(0),
                Reply::Nil,
            ],
        );
    }

    #[test]
    fn setrange_pads_and_bounds() {
        check(
            &[
                (0, "SETRANGE k 5 ab"),
                (0, "GET k"),
                (0, "SETRANGE k 0 xy"),
                (0, "GET k"),
                (0, "SETRANGE missing 3 "),
                (0, "SETRANGE k -1 a"),
                (0, "SETRANGE k 536870911 ab"),
                (0, "HSET h f v"),
                (0, "SETRANGE h 0 a"),
            ],
            &[
                Reply::Int(7),
                Reply::Bulk(Bytes::from_static(b"\0\0\0\0\0ab")),
                Reply::Int(7),
                Reply::Bulk(Bytes::from_static(b"xy\0\0\0ab")),
                // `split_whitespace` drops the empty value: an arity error here.
                err("ERR wrong number of arguments for 'setrange' command"),
                err("ERR offset is out of range"),
                err(super::super::STRING_TOO_LONG),
                Reply::Int(1),
                err(super::super::WRONGTYPE),
            ],
        );
    }

    #[test]
    fn incrbyfloat_formats_as_redis() {
        check(
            &[
                (0, "INCRBYFLOAT f 1.5"),
                (0, "INCRBYFLOAT f 1.5"),
                (0, "INCRBYFLOAT f 0.1"),
                (0, "SET f 10.5"),
                (0, "INCRBYFLOAT f 0.1"),
                (0, "SET n 17179869184"),
                (0, "INCRBYFLOAT n 1.5"),
                (0, "INCRBYFLOAT f abc"),
                (0, "SET s abc"),
                (0, "INCRBYFLOAT s 1"),
                // An infinite increment parses (as in Redis); the infinite sum is refused.
                (0, "SET f 0"),
                (0, "INCRBYFLOAT f +inf"),
                (0, "INCRBYFLOAT g 5.0e3"),
                (0, "INCRBYFLOAT g -5000"),
            ],
            &[
                bulk("1.5"),
                bulk("3"),
                bulk("3.1"),
                Reply::Ok,
                bulk("10.6"),
                Reply::Ok,
                bulk("17179869185.5"),
                err("ERR value is not a valid float"),
                Reply::Ok,
                err("ERR value is not a valid float"),
                Reply::Ok,
                err("ERR increment would produce NaN or Infinity"),
                bulk("5000"),
                bulk("0"),
            ],
        );
    }

    #[test]
    fn bit_commands_answer_as_redis() {
        let int = Reply::Int;
        check(
            &[
                (0, "SETBIT b 7 1"),
                (0, "GETBIT b 7"),
                (0, "GET b"),
                (0, "SETBIT b 7 0"),
                (0, "SETBIT b 15 1"),
                (0, "GETBIT b 100"),
                (0, "SETBIT b 4294967296 1"),
                (0, "SETBIT b -1 1"),
                (0, "SETBIT b 1 2"),
                (0, "SET s foobar"),
                (0, "BITCOUNT s"),
                (0, "BITCOUNT s 0 0"),
                (0, "BITCOUNT s 1 1"),
                (0, "BITCOUNT s 5 30 BIT"),
                (0, "BITCOUNT s 0"),
                (0, "BITCOUNT s 0 1 WORD"),
                (0, "BITCOUNT none"),
                (0, "BITPOS s 1"),
                (0, "BITPOS s 0 2"),
                (0, "BITPOS s 1 -1"),
                (0, "BITPOS s 1 7 15 BIT"),
                (0, "BITPOS none 0"),
                (0, "BITPOS none 1"),
                (0, "BITPOS s 2"),
                (0, "BITOP NOT n s"),
                (0, "BITOP AND a s n"),
                (0, "EXISTS a"),
                (0, "BITOP NOT n s s"),
                (0, "LPUSH l x"),
                (0, "SETBIT l 0 1"),
                (0, "GETBIT l 0"),
            ],
            &[
                int(0),
                int(1),
                bulk("\x01"),
                int(1),
                int(0),
                int(0),
                err("ERR bit offset is not an integer or out of range"),
                err("ERR bit offset is not an integer or out of range"),
                err("ERR bit is not an integer or out of range"),
                Reply::Ok,
                int(26),
                int(4),
                int(6),
                int(17),
                err("ERR syntax error"),
                err("ERR syntax error"),
                int(0),
                int(1),
                int(16),
                int(41),
                int(9),
                int(0),
                int(-1),
                err("ERR The bit argument must be 1 or 0."),
                int(6),
                int(6),
                int(1),
                err("ERR BITOP NOT must be called with a single source key."),
                int(1),
                err(WRONGTYPE_TEXT),
                err(WRONGTYPE_TEXT),
            ],
        );
    }

    const WRONGTYPE_TEXT: &str = super::super::WRONGTYPE;

    proptest::proptest! {
        /// `BITCOUNT` and `BITPOS` against a bit-by-bit model over every range form.
        #[test]
        fn bitcount_and_bitpos_match_a_bit_model(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6),
            start in -60i64..60,
            end in -60i64..60,
            bits in proptest::prelude::any::<bool>(),
            wanted in proptest::prelude::any::<bool>(),
        ) {
            let mut state = BTreeMap::new();
            state.insert(b("k"), Record::string(Bytes::from(text.clone())));
            let run = |args: &[&str]| {
                let args: Vec<Bytes> = args.iter().map(|arg| b(arg)).collect();
                execute(&Command::parse(&args).expect("valid"), 0, &state).reply
            };
            let total = if bits { text.len() as i64 * 8 } else { text.len() as i64 };
            let clamp = |i: i64| if i < 0 { (total + i).max(0) } else { i };
            let (first, last) = (clamp(start), clamp(end).min(total - 1));
            let span: Vec<u64> = if first > last {
                Vec::new()
            } else if bits {
                (first as u64..=last as u64).collect()
            } else {
                (first as u64 * 8..=last as u64 * 8 + 7).collect()
            };
            let bit = |offset: u64| text[(offset / 8) as usize] & (0x80 >> (offset % 8)) != 0;
            let unit = if bits { "BIT" } else { "BYTE" };
            let (start, end) = (start.to_string(), end.to_string());
            let count = span.iter().filter(|offset| bit(**offset)).count() as i64;
            proptest::prop_assert_eq!(run(&["BITCOUNT", "k", &start, &end, unit]), Reply::Int(count));
            let position = span.iter().find(|offset| bit(**offset) == wanted).map_or(-1, |p| *p as i64);
            let wanted_text = if wanted { "1" } else { "0" };
            proptest::prop_assert_eq!(
                run(&["BITPOS", "k", wanted_text, &start, &end, unit]),
                Reply::Int(position)
            );
        }
    }

    #[test]
    fn msetnx_is_all_or_nothing() {
        check(
            &[
                (0, "MSETNX a 1 b 2"),
                (0, "MSETNX b 3 c 4"),
                (0, "MGET a b c"),
                (0, "MSETNX x 1 x 2"),
                (0, "GET x"),
            ],
            &[
                Reply::Int(1),
                Reply::Int(0),
                Reply::Array(vec![bulk("1"), bulk("2"), Reply::Nil]),
                Reply::Int(1),
                bulk("2"),
            ],
        );
    }

    #[test]
    fn lcs_answers_as_redis_7() {
        let int = Reply::Int;
        let range = |a: i64, b: i64| Reply::Array(vec![int(a), int(b)]);
        check(
            &[
                (0, "MSET virus1 ohmytext virus2 mynewtext"),
                (0, "LCS virus1 virus2"),
                (0, "LCS virus1 virus2 LEN"),
                (0, "LCS virus1 virus2 IDX"),
                (0, "LCS virus1 virus2 IDX MINMATCHLEN 4 WITHMATCHLEN"),
                (0, "LCS virus1 virus2 LEN IDX"),
                (0, "LCS missing virus2"),
                (0, "HSET h f v"),
                (0, "LCS virus1 h"),
            ],
            &[
                Reply::Ok,
                bulk("mytext"),
                int(6),
                Reply::Array(vec![
                    bulk("matches"),
                    Reply::Array(vec![
                        Reply::Array(vec![range(4, 7), range(5, 8)]),
                        Reply::Array(vec![range(2, 3), range(0, 1)]),
                    ]),
                    bulk("len"),
                    int(6),
                ]),
                Reply::Array(vec![
                    bulk("matches"),
                    Reply::Array(vec![Reply::Array(vec![range(4, 7), range(5, 8), int(4)])]),
                    bulk("len"),
                    int(6),
                ]),
                err("ERR If you want both the length and indexes, please just use IDX."),
                bulk(""),
                int(1),
                err("ERR The specified keys must contain string values"),
            ],
        );
    }
}
