//! Sorted-set commands and the sorted set itself ([`ZSet`]). Each family of collection commands
//! lives in its own module with the same shape: an enum of its commands (stored in the log
//! inside [`Command`](super::Command), so variants are only ever added at the end), parsing
//! from Redis arguments, classification, and execution over a [`View`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::command::Keys;
use super::execute::View;
use super::{CommandError, Record, Reply, Value, WRONGTYPE};

/// A member's score: a finite or infinite `f64`, never NaN (Redis refuses NaN scores and
/// results). Ordered by value with `-0.0` stored as `0.0`, so the order is total and agrees
/// with Redis's `<` on doubles.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Score(f64);

impl TryFrom<f64> for Score {
    type Error = &'static str;
    fn try_from(value: f64) -> Result<Score, &'static str> {
        Score::new(value).ok_or("a NaN score")
    }
}

impl From<Score> for f64 {
    fn from(score: Score) -> f64 {
        score.0
    }
}

impl Score {
    /// `None` for NaN.
    pub fn new(value: f64) -> Option<Score> {
        if value.is_nan() {
            None
        } else {
            // `-0.0 + 0.0` is `0.0`: one zero, so equal scores compare equal bit for bit.
            Some(Score(value + 0.0))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted set: members with scores, iterated by (score, member) as Redis orders them.
/// Stored as its member list; the order index is rebuilt when a record is decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "Vec<(Bytes, f64)>", into = "Vec<(Bytes, f64)>")]
pub struct ZSet {
    scores: BTreeMap<Bytes, Score>,
    order: BTreeSet<(Score, Bytes)>,
}

impl ZSet {
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn score(&self, member: &[u8]) -> Option<Score> {
        self.scores.get(member).copied()
    }

    /// Sets `member`'s score; answers the previous one.
    pub fn insert(&mut self, member: Bytes, score: Score) -> Option<Score> {
        let previous = self.scores.insert(member.clone(), score);
        if let Some(previous) = previous {
            self.order.remove(&(previous, member.clone()));
        }
        self.order.insert((score, member));
        previous
    }

    /// Removes `member`; answers its score.
    pub fn remove(&mut self, member: &[u8]) -> Option<Score> {
        let (member, score) = self.scores.remove_entry(member)?;
        self.order.remove(&(score, member));
        Some(score)
    }

    /// Members with their scores in member order.
    pub fn by_member(&self) -> impl Iterator<Item = (&Bytes, Score)> + '_ {
        self.scores.iter().map(|(member, score)| (member, *score))
    }

    /// Members in ascending (score, member) order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Bytes, Score)> + '_ {
        self.order.iter().map(|(score, member)| (member, *score))
    }

    /// The 0-based position of `member` in ascending order (linear in the rank).
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        Some(
            self.order
                .range(..(score, Bytes::copy_from_slice(member)))
                .count(),
        )
    }
}

impl From<Vec<(Bytes, f64)>> for ZSet {
    fn from(members: Vec<(Bytes, f64)>) -> ZSet {
        let mut set = ZSet::default();
        for (member, score) in members {
            // A NaN cannot have been stored; a corrupt one decodes as 0 rather than panicking.
            set.insert(member, Score::new(score).unwrap_or(Score(0.0)));
        }
        set
    }
}

impl From<ZSet> for Vec<(Bytes, f64)> {
    fn from(set: ZSet) -> Vec<(Bytes, f64)> {
        set.scores
            .into_iter()
            .map(|(member, score)| (member, score.get()))
            .collect()
    }
}

/// One end of a score range (`ZRANGEBYSCORE` syntax: `(` makes it exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreBound {
    pub value: Score,
    pub exclusive: bool,
}

/// A score range `min..max` as Redis parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreRange {
    pub min: ScoreBound,
    pub max: ScoreBound,
}

impl ScoreRange {
    fn above_min(&self, score: Score) -> bool {
        if self.min.exclusive {
            score.0 > self.min.value.0
        } else {
            score.0 >= self.min.value.0
        }
    }

    fn below_max(&self, score: Score) -> bool {
        if self.max.exclusive {
            score.0 < self.max.value.0
        } else {
            score.0 <= self.max.value.0
        }
    }
}

/// One end of a lexicographic range (`ZRANGEBYLEX` syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LexBound {
    /// `-`
    Min,
    /// `+`
    Max,
    /// `[member`
    Inclusive(Bytes),
    /// `(member`
    Exclusive(Bytes),
}

/// A lexicographic range `min..max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LexRange {
    pub min: LexBound,
    pub max: LexBound,
}

impl LexRange {
    fn above_min(&self, member: &[u8]) -> bool {
        match &self.min {
            LexBound::Min => true,
            LexBound::Max => false,
            LexBound::Inclusive(bound) => member >= &bound[..],
            LexBound::Exclusive(bound) => member > &bound[..],
        }
    }

    fn below_max(&self, member: &[u8]) -> bool {
        match &self.max {
            LexBound::Min => false,
            LexBound::Max => true,
            LexBound::Inclusive(bound) => member <= &bound[..],
            LexBound::Exclusive(bound) => member < &bound[..],
        }
    }
}

/// How a range command selects members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeBy {
    /// 0-based ranks, negative from the end.
    Rank(i64, i64),
    Score(ScoreRange),
    Lex(LexRange),
}

/// Which of the range commands was given (they share one execution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeForm {
    Range,
    RangeStore,
    RangeByScore,
    RevRangeByScore,
    RangeByLex,
    RevRangeByLex,
    RevRange,
}

/// The reply shape of a pop from the first non-empty key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PopShape {
    /// `BZPOPMIN`/`BZPOPMAX`: `[key, member, score]`.
    KeyMemberScore,
    /// `ZMPOP`: `[key, [[member, score], ...]]`.
    Multi,
    /// `BZMPOP`: as `ZMPOP`.
    BlockingMulti,
}

/// `ZUNION`, `ZINTER` or `ZDIFF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetOperation {
    Union,
    Inter,
    Diff,
}

/// How `ZUNION`/`ZINTER` combine the scores of a member found in several inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Aggregate {
    Sum,
    Min,
    Max,
}

/// The conditions and options of `ZADD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AddOptions {
    pub nx: bool,
    pub xx: bool,
    pub gt: bool,
    pub lt: bool,
    pub ch: bool,
    pub incr: bool,
}

/// A sorted-set command as replicas execute it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZSetCommand {
    /// `ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member ...`
    Add {
        key: Bytes,
        options: AddOptions,
        pairs: Vec<(Score, Bytes)>,
    },
    /// `ZINCRBY key increment member`
    IncrBy {
        key: Bytes,
        increment: Score,
        member: Bytes,
    },
    /// `ZCARD key`
    Card { key: Bytes },
    /// `ZSCORE key member`
    ScoreOf { key: Bytes, member: Bytes },
    /// `ZMSCORE key member ...`
    MScore { key: Bytes, members: Vec<Bytes> },
    /// `ZRANK`/`ZREVRANK key member`
    Rank {
        key: Bytes,
        member: Bytes,
        rev: bool,
    },
    /// `ZCOUNT key min max`
    Count { key: Bytes, range: ScoreRange },
    /// `ZLEXCOUNT key min max`
    LexCount { key: Bytes, range: LexRange },
    /// `ZRANGE` and its older forms, `ZRANGESTORE` (with `dest`).
    Range {
        form: RangeForm,
        dest: Option<Bytes>,
        key: Bytes,
        by: RangeBy,
        rev: bool,
        offset: i64,
        /// Negative: no limit.
        limit: i64,
        withscores: bool,
    },
    /// `ZREM key member ...`
    Rem { key: Bytes, members: Vec<Bytes> },
    /// `ZREMRANGEBYRANK`/`BYSCORE`/`BYLEX key min max`
    RemRange { key: Bytes, by: RangeBy },
    /// `ZPOPMIN`/`ZPOPMAX key [count]`
    Pop {
        key: Bytes,
        max: bool,
        count: Option<u64>,
    },
    /// `ZMPOP`, and the polled form of `BZPOPMIN`/`BZPOPMAX`/`BZMPOP`: pops from the first
    /// non-empty key; all empty answers the null array.
    PopFirstNonEmpty {
        keys: Vec<Bytes>,
        max: bool,
        count: Option<u64>,
        shape: PopShape,
    },
    /// `ZRANDMEMBER key [count [WITHSCORES]]`
    RandMember {
        key: Bytes,
        count: Option<i64>,
        withscores: bool,
        seed: u64,
    },
    /// `ZSCAN key cursor [MATCH pattern] [COUNT count]` with a cursor of positions in score
    /// order, as it was parsed before the proxy kept the cursors and sent steps of
    /// [`Command::ElementScan`](super::Command::ElementScan): no longer built, kept so that log
    /// entries holding one (inside a transaction) decode and execute as they did, and the
    /// variants after it keep their encoding.
    Scan {
        key: Bytes,
        cursor: u64,
        pattern: Option<Bytes>,
        count: u64,
    },
    /// `ZUNION`/`ZINTER`/`ZDIFF` and their `STORE` forms (with `dest`).
    Combine {
        operation: SetOperation,
        dest: Option<Bytes>,
        keys: Vec<Bytes>,
        weights: Option<Vec<Score>>,
        aggregate: Aggregate,
        withscores: bool,
    },
    /// `ZINTERCARD numkeys key ... [LIMIT limit]` (0: no limit)
    InterCard { keys: Vec<Bytes>, limit: u64 },
}

const NOT_FLOAT: &str = "ERR value is not a valid float";
const RANGE_NOT_FLOAT: &str = "ERR min or max is not a float";
const RANGE_NOT_LEX: &str = "ERR min or max not valid string range item";
const NAN_RESULT: &str = "ERR resulting score is not a number (NaN)";

fn other(text: &str) -> CommandError {
    CommandError::Message(text.to_string())
}

fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// Parses a double the way Redis's `strtod`-based parsers do: the whole argument, no leading
/// space; `inf`/`infinity` in any case and sign. `strict` (Redis's `getDoubleFromObject`)
/// also refuses empty text and results out of range (overflow to infinity, underflow to 0).
fn parse_double(arg: &[u8], strict: bool) -> Option<f64> {
    let mut text = std::str::from_utf8(arg).ok()?;
    if !strict {
        // Range bounds go to `strtod` unchecked: it skips leading space, and converts nothing
        // (to 0) when there is nothing at all to read.
        if text.is_empty() {
            return Some(0.0);
        }
        text = text.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    }
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_whitespace() || c == '\x0b') {
        return None;
    }
    let unsigned = text.trim_start_matches(['+', '-']);
    if text.len() - unsigned.len() > 1 {
        return None;
    }
    let lower = unsigned.to_ascii_lowercase();
    if lower.starts_with("nan") {
        return None;
    }
    if let Some(hex) = lower.strip_prefix("0x") {
        let magnitude = parse_hex_float(hex)?;
        let digits = hex.split('p').next().unwrap_or("");
        let underflow = magnitude == 0.0 && digits.bytes().any(|b| b != b'0' && b != b'.');
        if strict && (magnitude.is_infinite() || underflow) {
            return None;
        }
        return Some(if text.starts_with('-') {
            -magnitude
        } else {
            magnitude
        });
    }
    let literal_infinity = lower == "inf" || lower == "infinity";
    if !literal_infinity && !lower.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    if value.is_nan() {
        return None;
    }
    if strict && !literal_infinity {
        if value.is_infinite() {
            return None;
        }
        let mantissa = lower.split('e').next().unwrap_or("");
        if value == 0.0 && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
            return None;
        }
    }
    Some(value)
}

/// The digits after `0x` of a C99 hexadecimal float (`1.8p3`), lower case, unsigned. Digits past
/// the 60 bits kept are truncated rather than rounded (they never occur in practice).
fn parse_hex_float(hex: &str) -> Option<f64> {
    let (digits, exponent) = match hex.split_once('p') {
        Some((digits, exponent)) => {
            let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let magnitude: i64 = unsigned.parse().unwrap_or(i64::MAX / 4).min(100_000);
            (
                digits,
                if exponent.starts_with('-') {
                    -magnitude
                } else {
                    magnitude
                },
            )
        }
        None => (hex, 0),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut exponent = exponent;
    for (index, digit) in whole.bytes().chain(fraction.bytes()).enumerate() {
        let value = char::from(digit).to_digit(16)?;
        let in_fraction = index >= whole.len();
        if mantissa >> 56 == 0 {
            mantissa = mantissa << 4 | u64::from(value);
            if in_fraction {
                exponent -= 4;
            }
        } else if !in_fraction {
            exponent += 4;
        }
    }
    let mut value = mantissa as f64;
    // Scale in steps that stay within f64's exponent range.
    while exponent > 0 {
        let step = exponent.min(1000);
        value *= 2f64.powi(step as i32);
        exponent -= step;
    }
    while exponent < 0 {
        let step = exponent.max(-1000);
        value *= 2f64.powi(step as i32);
        exponent -= step;
    }
    Some(value)
}

fn parse_score(arg: &[u8]) -> Result<Score, CommandError> {
    parse_double(arg, true)
        .and_then(Score::new)
        .ok_or_else(|| other(NOT_FLOAT))
}

fn parse_int(arg: &[u8]) -> Result<i64, CommandError> {
    super::command::parse_integer(arg).ok_or(CommandError::NotInteger)
}

fn parse_score_bound(arg: &[u8]) -> Option<ScoreBound> {
    let (text, exclusive) = match arg.strip_prefix(b"(") {
        Some(rest) => (rest, true),
        None => (arg, false),
    };
    let value = Score::new(parse_double(text, false)?)?;
    Some(ScoreBound { value, exclusive })
}

fn parse_score_range(min: &[u8], max: &[u8]) -> Result<ScoreRange, CommandError> {
    match (parse_score_bound(min), parse_score_bound(max)) {
        (Some(min), Some(max)) => Ok(ScoreRange { min, max }),
        _ => Err(other(RANGE_NOT_FLOAT)),
    }
}

fn parse_lex_bound(arg: &Bytes) -> Option<LexBound> {
    match arg.first()? {
        b'-' if arg.len() == 1 => Some(LexBound::Min),
        b'+' if arg.len() == 1 => Some(LexBound::Max),
        b'[' => Some(LexBound::Inclusive(arg.slice(1..))),
        b'(' => Some(LexBound::Exclusive(arg.slice(1..))),
        _ => None,
    }
}

fn parse_lex_range(min: &Bytes, max: &Bytes) -> Result<LexRange, CommandError> {
    match (parse_lex_bound(min), parse_lex_bound(max)) {
        (Some(min), Some(max)) => Ok(LexRange { min, max }),
        _ => Err(other(RANGE_NOT_LEX)),
    }
}

use crate::resp::format_double;

fn score_reply(score: Score) -> Reply {
    Reply::double(score.get())
}

fn arity(name: &str, ok: bool) -> Result<(), CommandError> {
    if ok {
        Ok(())
    } else {
        Err(CommandError::Arity {
            name: name.to_string(),
        })
    }
}

/// `numkeys key ...` at the start of `args`: the keys and the arguments after them.
fn parse_numkeys<'a>(
    name: &str,
    args: &'a [Bytes],
) -> Result<(Vec<Bytes>, &'a [Bytes]), CommandError> {
    let count = parse_int(&args[0])?;
    if count < 1 {
        return Err(CommandError::Message(format!(
            "ERR at least 1 input key is needed for '{name}' command"
        )));
    }
    if count as u64 > (args.len() - 1) as u64 {
        return Err(CommandError::Syntax);
    }
    let count = count as usize;
    Ok((args[1..=count].to_vec(), &args[count + 1..]))
}

/// `numkeys key ... MIN|MAX [COUNT count]` of `ZMPOP`/`BZMPOP`.
fn parse_mpop(args: &[Bytes]) -> Result<(Vec<Bytes>, bool, u64), CommandError> {
    let numkeys = super::command::parse_integer(&args[0])
        .filter(|n| *n >= 1)
        .ok_or_else(|| other("ERR numkeys should be greater than 0"))?;
    if numkeys as u64 >= (args.len() - 1) as u64 {
        return Err(CommandError::Syntax);
    }
    let numkeys = numkeys as usize;
    let keys = args[1..=numkeys].to_vec();
    let where_arg = &args[numkeys + 1];
    let max = if is(where_arg, "min") {
        false
    } else if is(where_arg, "max") {
        true
    } else {
        return Err(CommandError::Syntax);
    };
    let mut count = None;
    let mut options = args[numkeys + 2..].iter();
    while let Some(option) = options.next() {
        match options.as_slice().first() {
            Some(value) if count.is_none() && is(option, "count") => {
                options.next();
                let n = super::command::parse_integer(value)
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| other("ERR count should be greater than 0"))?;
                count = Some(n as u64);
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    Ok((keys, max, count.unwrap_or(1)))
}

/// A blocking timeout in decimal seconds, as milliseconds (0: forever).
fn parse_timeout(arg: &[u8]) -> Result<u64, CommandError> {
    let seconds = parse_double(arg, true)
        .ok_or_else(|| other("ERR timeout is not a float or out of range"))?;
    let millis = seconds * 1000.0;
    if millis <= -1.0 {
        return Err(other("ERR timeout is negative"));
    }
    if !millis.is_finite() || millis >= i64::MAX as f64 {
        return Err(other("ERR timeout is out of range"));
    }
    Ok(millis.max(0.0) as u64)
}

impl ZSetCommand {
    /// Parses the command named `name` (lower case) from its arguments after the name;
    /// `None` when `name` is not a sorted-set command.
    pub(super) fn parse(name: &str, rest: &[Bytes]) -> Option<Result<ZSetCommand, CommandError>> {
        let parsed = match name {
            "zadd" => Self::parse_add(rest),
            "zincrby" => arity(name, rest.len() == 3).and_then(|()| {
                Ok(ZSetCommand::IncrBy {
                    key: rest[0].clone(),
                    increment: parse_score(&rest[1])?,
                    member: rest[2].clone(),
                })
            }),
            "zcard" => arity(name, rest.len() == 1).map(|()| ZSetCommand::Card {
                key: rest[0].clone(),
            }),
            "zscore" => arity(name, rest.len() == 2).map(|()| ZSetCommand::ScoreOf {
                key: rest[0].clone(),
                member: rest[1].clone(),
            }),
            "zmscore" => arity(name, rest.len() >= 2).map(|()| ZSetCommand::MScore {
                key: rest[0].clone(),
                members: rest[1..].to_vec(),
            }),
            "zrank" | "zrevrank" => arity(name, rest.len() == 2).map(|()| ZSetCommand::Rank {
                key: rest[0].clone(),
                member: rest[1].clone(),
                rev: name == "zrevrank",
            }),
            "zcount" => arity(name, rest.len() == 3).and_then(|()| {
                Ok(ZSetCommand::Count {
                    key: rest[0].clone(),
                    range: parse_score_range(&rest[1], &rest[2])?,
                })
            }),
            "zlexcount" => arity(name, rest.len() == 3).and_then(|()| {
                Ok(ZSetCommand::LexCount {
                    key: rest[0].clone(),
                    range: parse_lex_range(&rest[1], &rest[2])?,
                })
            }),
            "zrange" => Self::parse_range(name, RangeForm::Range, rest),
            "zrangestore" => Self::parse_range(name, RangeForm::RangeStore, rest),
            "zrangebyscore" => Self::parse_range(name, RangeForm::RangeByScore, rest),
            "zrevrangebyscore" => Self::parse_range(name, RangeForm::RevRangeByScore, rest),
            "zrangebylex" => Self::parse_range(name, RangeForm::RangeByLex, rest),
            "zrevrangebylex" => Self::parse_range(name, RangeForm::RevRangeByLex, rest),
            "zrevrange" => Self::parse_range(name, RangeForm::RevRange, rest),
            "zrem" => arity(name, rest.len() >= 2).map(|()| ZSetCommand::Rem {
                key: rest[0].clone(),
                members: rest[1..].to_vec(),
            }),
            "zremrangebyrank" | "zremrangebyscore" | "zremrangebylex" => {
                arity(name, rest.len() == 3).and_then(|()| {
                    let by = match name {
                        "zremrangebyrank" => {
                            RangeBy::Rank(parse_int(&rest[1])?, parse_int(&rest[2])?)
                        }
                        "zremrangebyscore" => {
                            RangeBy::Score(parse_score_range(&rest[1], &rest[2])?)
                        }
                        _ => RangeBy::Lex(parse_lex_range(&rest[1], &rest[2])?),
                    };
                    Ok(ZSetCommand::RemRange {
                        key: rest[0].clone(),
                        by,
                    })
                })
            }
            "zpopmin" | "zpopmax" => arity(name, !rest.is_empty()).and_then(|()| {
                let count = match rest {
                    [_] => None,
                    [_, count] => {
                        let count = parse_int(count)?;
                        if count < 0 {
                            return Err(other("ERR value is out of range, must be positive"));
                        }
                        Some(count as u64)
                    }
                    _ => return Err(CommandError::Syntax),
                };
                Ok(ZSetCommand::Pop {
                    key: rest[0].clone(),
                    max: name == "zpopmax",
                    count,
                })
            }),
            "zmpop" => arity(name, rest.len() >= 3).and_then(|()| {
                let (keys, max, count) = parse_mpop(rest)?;
                Ok(ZSetCommand::PopFirstNonEmpty {
                    keys,
                    max,
                    count: Some(count),
                    shape: PopShape::Multi,
                })
            }),
            "zrandmember" => arity(name, !rest.is_empty()).and_then(|()| {
                let mut withscores = false;
                let count = match rest.get(1) {
                    None => None,
                    Some(count) => {
                        let count = parse_int(count)?;
                        if count == i64::MIN {
                            return Err(other(
                                "ERR value is out of range, must be between -9223372036854775807 and 9223372036854775807",
                            ));
                        }
                        match &rest[2..] {
                            [] => {}
                            [word] if is(word, "withscores") => {
                                withscores = true;
                                if !(-(i64::MAX / 2)..=i64::MAX / 2).contains(&count) {
                                    return Err(other("ERR value is out of range"));
                                }
                            }
                            _ => return Err(CommandError::Syntax),
                        }
                        if count < -super::RANDOM_PICKS_MAX {
                            return Err(other(super::RANDOM_PICKS_TOO_MANY));
                        }
                        Some(count)
                    }
                };
                Ok(ZSetCommand::RandMember {
                    key: rest[0].clone(),
                    count,
                    withscores,
                    seed: 0,
                })
            }),
            "zunion" | "zinter" | "zdiff" | "zintercard" => {
                arity(name, rest.len() >= 2).and_then(|()| Self::parse_combine(name, None, rest))
            }
            "zunionstore" | "zinterstore" | "zdiffstore" => arity(name, rest.len() >= 3)
                .and_then(|()| Self::parse_combine(name, Some(rest[0].clone()), &rest[1..])),
            _ => return None,
        };
        Some(parsed)
    }

    /// Parses the blocking pops (`BZPOPMIN`/`BZPOPMAX key ... timeout`, `BZMPOP timeout
    /// numkeys key ... MIN|MAX [COUNT n]`) into the command the proxy polls and the timeout in
    /// milliseconds (0: wait forever); `None` for other names.
    pub fn parse_blocking(
        name: &str,
        rest: &[Bytes],
    ) -> Option<Result<(ZSetCommand, u64), CommandError>> {
        let parsed = match name {
            "bzpopmin" | "bzpopmax" => arity(name, rest.len() >= 2).and_then(|()| {
                let (timeout, keys) = rest.split_last().expect("two arguments");
                let timeout = parse_timeout(timeout)?;
                Ok((
                    ZSetCommand::PopFirstNonEmpty {
                        keys: keys.to_vec(),
                        max: name == "bzpopmax",
                        count: None,
                        shape: PopShape::KeyMemberScore,
                    },
                    timeout,
                ))
            }),
            "bzmpop" => arity(name, rest.len() >= 4).and_then(|()| {
                let (keys, max, count) = parse_mpop(&rest[1..])?;
                let timeout = parse_timeout(&rest[0])?;
                Ok((
                    ZSetCommand::PopFirstNonEmpty {
                        keys,
                        max,
                        count: Some(count),
                        shape: PopShape::BlockingMulti,
                    },
                    timeout,
                ))
            }),
            _ => return None,
        };
        Some(parsed)
    }

    fn parse_add(rest: &[Bytes]) -> Result<ZSetCommand, CommandError> {
        arity("zadd", rest.len() >= 3)?;
        let mut options = AddOptions::default();
        let mut index = 1;
        while let Some(arg) = rest.get(index) {
            let flag = match arg.to_ascii_lowercase().as_slice() {
                b"nx" => &mut options.nx,
                b"xx" => &mut options.xx,
                b"gt" => &mut options.gt,
                b"lt" => &mut options.lt,
                b"ch" => &mut options.ch,
                b"incr" => &mut options.incr,
                _ => break,
            };
            *flag = true;
            index += 1;
        }
        let elements = rest.len() - index;
        if elements == 0 || !elements.is_multiple_of(2) {
            return Err(CommandError::Syntax);
        }
        if options.nx && options.xx {
            return Err(other(
                "ERR XX and NX options at the same time are not compatible",
            ));
        }
        if (options.nx && (options.gt || options.lt)) || (options.gt && options.lt) {
            return Err(other(
                "ERR GT, LT, and/or NX options at the same time are not compatible",
            ));
        }
        if options.incr && elements > 2 {
            return Err(other(
                "ERR INCR option supports a single increment-element pair",
            ));
        }
        let pairs = rest[index..]
            .chunks_exact(2)
            .map(|pair| Ok((parse_score(&pair[0])?, pair[1].clone())))
            .collect::<Result<Vec<_>, CommandError>>()?;
        Ok(ZSetCommand::Add {
            key: rest[0].clone(),
            options,
            pairs,
        })
    }

    fn parse_range(
        name: &str,
        form: RangeForm,
        rest: &[Bytes],
    ) -> Result<ZSetCommand, CommandError> {
        let store = form == RangeForm::RangeStore;
        arity(name, rest.len() >= if store { 4 } else { 3 })?;
        let (dest, args) = if store {
            (Some(rest[0].clone()), &rest[1..])
        } else {
            (None, rest)
        };
        #[derive(PartialEq)]
        enum Type {
            Auto,
            Rank,
            Score,
            Lex,
        }
        let (mut range_type, mut rev) = match form {
            RangeForm::Range | RangeForm::RangeStore => (Type::Auto, None),
            RangeForm::RangeByScore => (Type::Score, Some(false)),
            RangeForm::RevRangeByScore => (Type::Score, Some(true)),
            RangeForm::RangeByLex => (Type::Lex, Some(false)),
            RangeForm::RevRangeByLex => (Type::Lex, Some(true)),
            RangeForm::RevRange => (Type::Rank, Some(true)),
        };
        let mut withscores = false;
        let mut offset = 0;
        let mut limit = -1;
        let mut j = 3;
        while j < args.len() {
            let arg = &args[j];
            let left = args.len() - j - 1;
            if !store && is(arg, "withscores") {
                withscores = true;
            } else if is(arg, "limit") && left >= 2 {
                offset = parse_int(&args[j + 1])?;
                limit = parse_int(&args[j + 2])?;
                j += 2;
            } else if rev.is_none() && is(arg, "rev") {
                rev = Some(true);
            } else if range_type == Type::Auto && is(arg, "bylex") {
                range_type = Type::Lex;
            } else if range_type == Type::Auto && is(arg, "byscore") {
                range_type = Type::Score;
            } else {
                return Err(CommandError::Syntax);
            }
            j += 1;
        }
        let rev = rev.unwrap_or(false);
        if range_type == Type::Auto {
            range_type = Type::Rank;
        }
        if limit != -1 && range_type == Type::Rank {
            return Err(other(
                "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
            ));
        }
        if withscores && range_type == Type::Lex {
            return Err(other(
                "ERR syntax error, WITHSCORES not supported in combination with BYLEX",
            ));
        }
        let (min, max) = if rev && range_type != Type::Rank {
            (&args[2], &args[1])
        } else {
            (&args[1], &args[2])
        };
        let by = match range_type {
            Type::Score => RangeBy::Score(parse_score_range(min, max)?),
            Type::Lex => RangeBy::Lex(parse_lex_range(min, max)?),
            _ => RangeBy::Rank(parse_int(min)?, parse_int(max)?),
        };
        Ok(ZSetCommand::Range {
            form,
            dest,
            key: args[0].clone(),
            by,
            rev,
            offset,
            limit,
            withscores,
        })
    }

    fn parse_combine(
        name: &str,
        dest: Option<Bytes>,
        args: &[Bytes],
    ) -> Result<ZSetCommand, CommandError> {
        let (keys, mut options) = parse_numkeys(name, args)?;
        let operation = match name {
            "zunion" | "zunionstore" => SetOperation::Union,
            "zinter" | "zinterstore" | "zintercard" => SetOperation::Inter,
            _ => SetOperation::Diff,
        };
        let cardinality = name == "zintercard";
        let mut weights = None;
        let mut aggregate = Aggregate::Sum;
        let mut withscores = false;
        let mut limit = 0;
        while let Some(option) = options.first() {
            let remaining = options.len();
            if operation != SetOperation::Diff
                && !cardinality
                && remaining > keys.len()
                && is(option, "weights")
            {
                let parsed = options[1..=keys.len()]
                    .iter()
                    .map(|weight| {
                        parse_double(weight, true)
                            .and_then(Score::new)
                            .ok_or_else(|| other("ERR weight value is not a float"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                weights = Some(parsed);
                options = &options[keys.len() + 1..];
            } else if operation != SetOperation::Diff
                && !cardinality
                && remaining >= 2
                && is(option, "aggregate")
            {
                aggregate = if is(&options[1], "sum") {
                    Aggregate::Sum
                } else if is(&options[1], "min") {
                    Aggregate::Min
                } else if is(&options[1], "max") {
                    Aggregate::Max
                } else {
                    return Err(CommandError::Syntax);
                };
                options = &options[2..];
            } else if dest.is_none() && !cardinality && is(option, "withscores") {
                withscores = true;
                options = &options[1..];
            } else if cardinality && remaining >= 2 && is(option, "limit") {
                limit = super::command::parse_integer(&options[1])
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| other("ERR LIMIT can't be negative"))?
                    as u64;
                options = &options[2..];
            } else {
                return Err(CommandError::Syntax);
            }
        }
        if cardinality {
            return Ok(ZSetCommand::InterCard { keys, limit });
        }
        Ok(ZSetCommand::Combine {
            operation,
            dest,
            keys,
            weights,
            aggregate,
            withscores,
        })
    }

    /// Sets the seed of the commands that choose at random (`ZRANDMEMBER`); the proxy gives each
    /// request a fresh one so replicas agree on the choice.
    pub fn reseed(&mut self, new_seed: u64) {
        if let ZSetCommand::RandMember { seed, .. } = self {
            *seed = new_seed;
        }
    }

    /// True for commands that change state (they go through the Raft log).
    pub fn is_write(&self) -> bool {
        match self {
            ZSetCommand::Add { .. }
            | ZSetCommand::IncrBy { .. }
            | ZSetCommand::Rem { .. }
            | ZSetCommand::RemRange { .. }
            | ZSetCommand::Pop { .. }
            | ZSetCommand::PopFirstNonEmpty { .. } => true,
            ZSetCommand::Range { dest, .. } | ZSetCommand::Combine { dest, .. } => dest.is_some(),
            ZSetCommand::Card { .. }
            | ZSetCommand::ScoreOf { .. }
            | ZSetCommand::MScore { .. }
            | ZSetCommand::Rank { .. }
            | ZSetCommand::Count { .. }
            | ZSetCommand::LexCount { .. }
            | ZSetCommand::RandMember { .. }
            | ZSetCommand::Scan { .. }
            | ZSetCommand::InterCard { .. } => false,
        }
    }

    /// Every key the command reads or writes, in argument order.
    pub fn keys(&self) -> Keys<'_> {
        match self {
            ZSetCommand::Add { key, .. }
            | ZSetCommand::IncrBy { key, .. }
            | ZSetCommand::Card { key }
            | ZSetCommand::ScoreOf { key, .. }
            | ZSetCommand::MScore { key, .. }
            | ZSetCommand::Rank { key, .. }
            | ZSetCommand::Count { key, .. }
            | ZSetCommand::LexCount { key, .. }
            | ZSetCommand::Rem { key, .. }
            | ZSetCommand::RemRange { key, .. }
            | ZSetCommand::Pop { key, .. }
            | ZSetCommand::RandMember { key, .. }
            | ZSetCommand::Scan { key, .. } => smallvec::smallvec![key],
            ZSetCommand::Range { dest, key, .. } => dest.iter().chain([key]).collect(),
            ZSetCommand::PopFirstNonEmpty { keys, .. } | ZSetCommand::InterCard { keys, .. } => {
                keys.iter().collect()
            }
            ZSetCommand::Combine { dest, keys, .. } => dest.iter().chain(keys).collect(),
        }
    }

    /// The command's name as clients spell it.
    pub fn name(&self) -> &'static str {
        match self {
            ZSetCommand::Add { .. } => "zadd",
            ZSetCommand::IncrBy { .. } => "zincrby",
            ZSetCommand::Card { .. } => "zcard",
            ZSetCommand::ScoreOf { .. } => "zscore",
            ZSetCommand::MScore { .. } => "zmscore",
            ZSetCommand::Rank { rev: false, .. } => "zrank",
            ZSetCommand::Rank { rev: true, .. } => "zrevrank",
            ZSetCommand::Count { .. } => "zcount",
            ZSetCommand::LexCount { .. } => "zlexcount",
            ZSetCommand::Range { form, .. } => match form {
                RangeForm::Range => "zrange",
                RangeForm::RangeStore => "zrangestore",
                RangeForm::RangeByScore => "zrangebyscore",
                RangeForm::RevRangeByScore => "zrevrangebyscore",
                RangeForm::RangeByLex => "zrangebylex",
                RangeForm::RevRangeByLex => "zrevrangebylex",
                RangeForm::RevRange => "zrevrange",
            },
            ZSetCommand::Rem { .. } => "zrem",
            ZSetCommand::RemRange { by, .. } => match by {
                RangeBy::Rank(..) => "zremrangebyrank",
                RangeBy::Score(_) => "zremrangebyscore",
                RangeBy::Lex(_) => "zremrangebylex",
            },
            ZSetCommand::Pop { max: false, .. } => "zpopmin",
            ZSetCommand::Pop { max: true, .. } => "zpopmax",
            ZSetCommand::PopFirstNonEmpty { shape, max, .. } => match (shape, max) {
                (PopShape::KeyMemberScore, false) => "bzpopmin",
                (PopShape::KeyMemberScore, true) => "bzpopmax",
                (PopShape::Multi, _) => "zmpop",
                (PopShape::BlockingMulti, _) => "bzmpop",
            },
            ZSetCommand::RandMember { .. } => "zrandmember",
            ZSetCommand::Scan { .. } => "zscan",
            ZSetCommand::Combine {
                operation, dest, ..
            } => match (operation, dest.is_some()) {
                (SetOperation::Union, false) => "zunion",
                (SetOperation::Union, true) => "zunionstore",
                (SetOperation::Inter, false) => "zinter",
                (SetOperation::Inter, true) => "zinterstore",
                (SetOperation::Diff, false) => "zdiff",
                (SetOperation::Diff, true) => "zdiffstore",
            },
            ZSetCommand::InterCard { .. } => "zintercard",
        }
    }

    /// Applies the command to `view` (pure: the same view gives the same reply and writes).
    pub(super) fn execute(&self, view: &mut View<'_>) -> Reply {
        match self.apply(view) {
            Ok(reply) | Err(reply) => reply,
        }
    }

    fn apply(&self, view: &mut View<'_>) -> Result<Reply, Reply> {
        match self {
            ZSetCommand::Add {
                key,
                options,
                pairs,
            } => add(view, key, *options, pairs),
            ZSetCommand::IncrBy {
                key,
                increment,
                member,
            } => add(
                view,
                key,
                AddOptions {
                    incr: true,
                    ..AddOptions::default()
                },
                &[(*increment, member.clone())],
            ),
            ZSetCommand::Card { key } => {
                read(view, key)?;
                Ok(Reply::Int(view.len_of(key) as i64))
            }
            ZSetCommand::ScoreOf { key, member } => Ok(read(view, key)?
                .and_then(|set| set.score(member))
                .map_or(Reply::Nil, score_reply)),
            ZSetCommand::MScore { key, members } => {
                let set = read(view, key)?;
                Ok(Reply::Array(
                    members
                        .iter()
                        .map(|member| {
                            set.and_then(|set| set.score(member))
                                .map_or(Reply::Nil, score_reply)
                        })
                        .collect(),
                ))
            }
            ZSetCommand::Rank { key, member, rev } => {
                let Some(set) = read(view, key)? else {
                    return Ok(Reply::Nil);
                };
                Ok(set.rank(member).map_or(Reply::Nil, |rank| {
                    let rank = if *rev { set.len() - 1 - rank } else { rank };
                    Reply::Int(rank as i64)
                }))
            }
            ZSetCommand::Count { key, range } => {
                let set = read(view, key)?;
                let count = set.map_or(0, |set| {
                    select(set, &RangeBy::Score(*range), false, 0, -1).len()
                });
                Ok(Reply::Int(count as i64))
            }
            ZSetCommand::LexCount { key, range } => {
                let set = read(view, key)?;
                let count = set.map_or(0, |set| {
                    select(set, &RangeBy::Lex(range.clone()), false, 0, -1).len()
                });
                Ok(Reply::Int(count as i64))
            }
            ZSetCommand::Range {
                dest,
                key,
                by,
                rev,
                offset,
                limit,
                withscores,
                ..
            } => {
                let selected = match read(view, key)? {
                    Some(set) => select(set, by, *rev, *offset, *limit),
                    None => Vec::new(),
                };
                match dest {
                    Some(dest) => {
                        let count = selected.len();
                        let mut result = ZSet::default();
                        for (member, score) in selected {
                            result.insert(member, score);
                        }
                        store(view, dest, result, None);
                        Ok(Reply::Int(count as i64))
                    }
                    None => Ok(members_reply(selected, *withscores)),
                }
            }
            ZSetCommand::Rem { key, members } => {
                let Some((mut set, ttl)) = modify(view, key)? else {
                    return Ok(Reply::Int(0));
                };
                let removed = members
                    .iter()
                    .filter(|member| set.remove(member).is_some())
                    .count();
                if removed > 0 {
                    store(view, key, set, ttl);
                }
                Ok(Reply::Int(removed as i64))
            }
            ZSetCommand::RemRange { key, by } => {
                let Some((mut set, ttl)) = modify(view, key)? else {
                    return Ok(Reply::Int(0));
                };
                let selected = select(&set, by, false, 0, -1);
                for (member, _) in &selected {
                    set.remove(member);
                }
                if !selected.is_empty() {
                    store(view, key, set, ttl);
                }
                Ok(Reply::Int(selected.len() as i64))
            }
            ZSetCommand::Pop { key, max, count } => {
                let Some((mut set, ttl)) = modify(view, key)? else {
                    return Ok(Reply::Array(Vec::new()));
                };
                let popped = pop(&mut set, *max, count.unwrap_or(1));
                if !popped.is_empty() {
                    store(view, key, set, ttl);
                }
                // Redis 7.0 nests the pairs in RESP3 only when a count was given.
                Ok(if count.is_some() {
                    members_reply(popped, true)
                } else {
                    Reply::Array(flat_members(popped, true))
                })
            }
            ZSetCommand::PopFirstNonEmpty {
                keys,
                max,
                count,
                shape,
            } => {
                for key in keys {
                    let Some((mut set, ttl)) = modify(view, key)? else {
                        continue;
                    };
                    let popped = pop(&mut set, *max, count.unwrap_or(1));
                    store(view, key, set, ttl);
                    let reply = match shape {
                        PopShape::KeyMemberScore => {
                            let mut items = vec![Reply::Bulk(key.clone())];
                            items.extend(flat_members(popped, true));
                            items
                        }
                        PopShape::Multi | PopShape::BlockingMulti => vec![
                            Reply::Bulk(key.clone()),
                            Reply::Array(
                                popped
                                    .into_iter()
                                    .map(|(member, score)| {
                                        Reply::Array(vec![Reply::Bulk(member), score_reply(score)])
                                    })
                                    .collect(),
                            ),
                        ],
                    };
                    return Ok(Reply::Array(reply));
                }
                Ok(Reply::NilArray)
            }
            ZSetCommand::RandMember {
                key,
                count,
                withscores,
                seed,
            } => {
                let set = read(view, key)?;
                Ok(rand_member(set, *count, *withscores, *seed))
            }
            ZSetCommand::Scan {
                key,
                cursor,
                pattern,
                count,
            } => {
                let set = read(view, key)?;
                let mut items = Vec::new();
                let mut next = 0;
                if let Some(set) = set {
                    let start = usize::try_from(*cursor).unwrap_or(usize::MAX);
                    let end = start.saturating_add(usize::try_from(*count).unwrap_or(usize::MAX));
                    for (member, score) in set.iter().skip(start).take(end - start) {
                        if pattern
                            .as_ref()
                            .is_none_or(|pattern| super::glob_match(pattern, member))
                        {
                            // ZSCAN answers flat bulk strings in both protocols.
                            items.push(Reply::Bulk(member.clone()));
                            items.push(Reply::Bulk(Bytes::from(format_double(score.get()))));
                        }
                    }
                    if end < set.len() {
                        next = end as u64;
                    }
                }
                Ok(Reply::Array(vec![
                    Reply::Bulk(Bytes::from(next.to_string())),
                    Reply::Array(items),
                ]))
            }
            ZSetCommand::Combine {
                operation,
                dest,
                keys,
                weights,
                aggregate,
                withscores,
            } => {
                let inputs = inputs(view, keys)?;
                let result = combine(*operation, inputs, weights.as_deref(), *aggregate, None);
                match dest {
                    Some(dest) => {
                        let count = result.len();
                        store(view, dest, result, None);
                        Ok(Reply::Int(count as i64))
                    }
                    None => Ok(members_reply(
                        result.iter().map(|(m, s)| (m.clone(), s)).collect(),
                        *withscores,
                    )),
                }
            }
            ZSetCommand::InterCard { keys, limit } => {
                let inputs = inputs(view, keys)?;
                let limit = (*limit > 0).then_some(*limit as usize);
                let result = combine(SetOperation::Inter, inputs, None, Aggregate::Sum, limit);
                Ok(Reply::Int(result.len() as i64))
            }
        }
    }
}

/// The sorted set at `key`: `None` when missing or expired, `WRONGTYPE` for another type.
fn read<'v>(view: &'v View<'_>, key: &Bytes) -> Result<Option<&'v ZSet>, Reply> {
    match view.get(key) {
        None => Ok(None),
        Some(Record {
            value: Value::ZSet(set),
            ..
        }) => Ok(Some(set)),
        Some(_) => Err(Reply::error(WRONGTYPE)),
    }
}

/// A copy of the sorted set at `key` to change, with its expiry; `None` when missing (an
/// expired record is deleted on the way, as writes do).
fn modify(view: &mut View<'_>, key: &Bytes) -> Result<Option<(ZSet, Option<u64>)>, Reply> {
    if view.is_stale(key) {
        view.put(key, None);
    }
    let expires_at_ms = view.get(key).and_then(|record| record.expires_at_ms);
    Ok(read(view, key)?.map(|set| (set.clone(), expires_at_ms)))
}

/// Stores `set` at `key` (an empty one deletes the key).
fn store(view: &mut View<'_>, key: &Bytes, set: ZSet, expires_at_ms: Option<u64>) {
    view.put_collection(key, Value::ZSet(set), expires_at_ms);
}

/// `[member, score, ...]` as [`Reply::Pairs`] (nested in RESP3), or members alone.
fn members_reply(items: Vec<(Bytes, Score)>, withscores: bool) -> Reply {
    let flat = flat_members(items, withscores);
    if withscores {
        Reply::Pairs(flat)
    } else {
        Reply::Array(flat)
    }
}

/// `[member, score, ...]` flat in every protocol (or members alone).
fn flat_members(items: Vec<(Bytes, Score)>, withscores: bool) -> Vec<Reply> {
    let mut replies = Vec::new();
    for (member, score) in items {
        replies.push(Reply::Bulk(member));
        if withscores {
            replies.push(score_reply(score));
        }
    }
    replies
}

fn add(
    view: &mut View<'_>,
    key: &Bytes,
    options: AddOptions,
    pairs: &[(Score, Bytes)],
) -> Result<Reply, Reply> {
    let (mut set, ttl) = match modify(view, key)? {
        Some(found) => found,
        None if options.xx => {
            return Ok(if options.incr {
                Reply::Nil
            } else {
                Reply::Int(0)
            });
        }
        None => (ZSet::default(), None),
    };
    let (mut added, mut updated, mut processed) = (0, 0, 0);
    let mut last_score = None;
    for (score, member) in pairs {
        match set.score(member) {
            Some(current) => {
                if options.nx {
                    continue;
                }
                let mut new = *score;
                if options.incr {
                    new = Score::new(current.get() + score.get())
                        .ok_or_else(|| Reply::error(NAN_RESULT))?;
                }
                if (options.lt && new.get() >= current.get())
                    || (options.gt && new.get() <= current.get())
                {
                    continue;
                }
                if new != current {
                    set.insert(member.clone(), new);
                    updated += 1;
                }
                processed += 1;
                last_score = Some(new);
            }
            None => {
                if options.xx {
                    continue;
                }
                set.insert(member.clone(), *score);
                added += 1;
                processed += 1;
                last_score = Some(*score);
            }
        }
    }
    if added + updated > 0 {
        store(view, key, set, ttl);
    }
    Ok(if options.incr {
        match (processed, last_score) {
            (1.., Some(score)) => score_reply(score),
            _ => Reply::Nil,
        }
    } else {
        Reply::Int(if options.ch { added + updated } else { added })
    })
}

/// The members `by` selects, in ascending order or descending with `rev`, after skipping
/// `offset` and taking at most `limit` (negative: all) for score and lex ranges.
fn select(set: &ZSet, by: &RangeBy, rev: bool, offset: i64, limit: i64) -> Vec<(Bytes, Score)> {
    let own = |(member, score): (&Bytes, Score)| (member.clone(), score);
    let length = set.len() as i64;
    let ordered: Box<dyn Iterator<Item = (&Bytes, Score)>> = if rev {
        Box::new(set.iter().rev())
    } else {
        Box::new(set.iter())
    };
    let in_range: Box<dyn Iterator<Item = (&Bytes, Score)>> = match by {
        RangeBy::Rank(start, end) => {
            let mut start = if *start < 0 { start + length } else { *start };
            let mut end = if *end < 0 { end + length } else { *end };
            if start < 0 {
                start = 0;
            }
            if start > end || start >= length {
                return Vec::new();
            }
            if end >= length {
                end = length - 1;
            }
            return ordered
                .skip(start as usize)
                .take((end - start + 1) as usize)
                .map(own)
                .collect();
        }
        RangeBy::Score(range) => {
            let range = *range;
            if rev {
                Box::new(
                    ordered
                        .skip_while(move |(_, s)| !range.below_max(*s))
                        .take_while(move |(_, s)| range.above_min(*s)),
                )
            } else {
                Box::new(
                    ordered
                        .skip_while(move |(_, s)| !range.above_min(*s))
                        .take_while(move |(_, s)| range.below_max(*s)),
                )
            }
        }
        RangeBy::Lex(range) => {
            let (skip, take) = (range.clone(), range.clone());
            if rev {
                Box::new(
                    ordered
                        .skip_while(move |(m, _)| !skip.below_max(m))
                        .take_while(move |(m, _)| take.above_min(m)),
                )
            } else {
                Box::new(
                    ordered
                        .skip_while(move |(m, _)| !skip.above_min(m))
                        .take_while(move |(m, _)| take.below_max(m)),
                )
            }
        }
    };
    if offset < 0 {
        return Vec::new();
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    in_range
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit)
        .map(own)
        .collect()
}

/// Removes and answers up to `count` members from the low end (or the high end with `max`).
fn pop(set: &mut ZSet, max: bool, count: u64) -> Vec<(Bytes, Score)> {
    let mut popped = Vec::new();
    for _ in 0..count {
        let end = if max {
            set.iter().next_back()
        } else {
            set.iter().next()
        };
        let Some((member, score)) = end.map(|(m, s)| (m.clone(), s)) else {
            break;
        };
        set.remove(&member);
        popped.push((member, score));
    }
    popped
}

fn rand_member(set: Option<&ZSet>, count: Option<i64>, withscores: bool, seed: u64) -> Reply {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let Some(count) = count else {
        return match set {
            Some(set) if !set.is_empty() => {
                let index = rng.random_range(0..set.len());
                set.iter()
                    .nth(index)
                    .map_or(Reply::Nil, |(member, _)| Reply::Bulk(member.clone()))
            }
            _ => Reply::Nil,
        };
    };
    let Some(set) = set.filter(|set| !set.is_empty()) else {
        return Reply::Array(Vec::new());
    };
    let members: Vec<(&Bytes, Score)> = set.iter().collect();
    let picked: Vec<(Bytes, Score)> = if count < 0 {
        (0..count.unsigned_abs())
            .map(|_| {
                let (member, score) = members[rng.random_range(0..members.len())];
                (member.clone(), score)
            })
            .collect()
    } else if count as u64 >= members.len() as u64 {
        members.iter().map(|(m, s)| ((*m).clone(), *s)).collect()
    } else {
        rand::seq::index::sample(&mut rng, members.len(), count as usize)
            .into_iter()
            .map(|index| (members[index].0.clone(), members[index].1))
            .collect()
    };
    members_reply(picked, withscores)
}

/// The inputs of `ZUNION` and the like: sorted sets, or sets (every member scoring 1).
fn inputs(view: &View<'_>, keys: &[Bytes]) -> Result<Vec<Vec<(Bytes, Score)>>, Reply> {
    keys.iter()
        .map(|key| match view.get(key) {
            None => Ok(Vec::new()),
            Some(Record {
                value: Value::ZSet(set),
                ..
            }) => Ok(set.iter().map(|(m, s)| (m.clone(), s)).collect()),
            Some(Record {
                value: Value::Set(members),
                ..
            }) => Ok(members.iter().map(|m| (m.clone(), Score(1.0))).collect()),
            Some(_) => Err(Reply::error(WRONGTYPE)),
        })
        .collect()
}

fn weighted(score: Score, weight: f64) -> f64 {
    let value = score.get() * weight;
    if value.is_nan() { 0.0 } else { value }
}

fn aggregate_into(target: f64, value: f64, aggregate: Aggregate) -> f64 {
    match aggregate {
        Aggregate::Sum => {
            let sum = target + value;
            if sum.is_nan() { 0.0 } else { sum }
        }
        Aggregate::Min => target.min(value),
        Aggregate::Max => target.max(value),
    }
}

/// Union, intersection or difference of `inputs` (with their weights); `limit` stops an
/// intersection once it has that many members (`ZINTERCARD`).
fn combine(
    operation: SetOperation,
    inputs: Vec<Vec<(Bytes, Score)>>,
    weights: Option<&[Score]>,
    aggregate: Aggregate,
    limit: Option<usize>,
) -> ZSet {
    let mut sources: Vec<(BTreeMap<Bytes, Score>, f64)> = inputs
        .into_iter()
        .enumerate()
        .map(|(index, items)| {
            let weight = weights.map_or(1.0, |weights| weights[index].get());
            (items.into_iter().collect(), weight)
        })
        .collect();
    let mut result = ZSet::default();
    match operation {
        SetOperation::Union => {
            sources.sort_by_key(|(items, _)| items.len());
            let mut scores: BTreeMap<Bytes, f64> = BTreeMap::new();
            for (items, weight) in &sources {
                for (member, score) in items {
                    let value = weighted(*score, *weight);
                    scores
                        .entry(member.clone())
                        .and_modify(|target| *target = aggregate_into(*target, value, aggregate))
                        .or_insert(value);
                }
            }
            for (member, score) in scores {
                result.insert(member, Score::new(score).unwrap_or(Score(0.0)));
            }
        }
        SetOperation::Inter => {
            sources.sort_by_key(|(items, _)| items.len());
            let Some(((first, first_weight), others)) = sources.split_first() else {
                return result;
            };
            'members: for (member, score) in first {
                if limit.is_some_and(|limit| result.len() >= limit) {
                    break;
                }
                let mut value = weighted(*score, *first_weight);
                for (items, weight) in others {
                    let Some(other) = items.get(member) else {
                        continue 'members;
                    };
                    value = aggregate_into(value, weighted(*other, *weight), aggregate);
                }
                result.insert(member.clone(), Score::new(value).unwrap_or(Score(0.0)));
            }
        }
        SetOperation::Diff => {
            let Some(((first, _), others)) = sources.split_first() else {
                return result;
            };
            for (member, score) in first {
                if others.iter().all(|(items, _)| !items.contains_key(member)) {
                    result.insert(member.clone(), *score);
                }
            }
        }
    }
    result
}
#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;

    use super::super::{Command, execute};
    use proptest::prelude::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// A database applying command lines in order, as a replica applies its log.
    #[derive(Default)]
    struct Db {
        state: BTreeMap<Bytes, Record>,
        now_ms: u64,
    }

    impl Db {
        fn run_args(&mut self, args: &[Bytes]) -> Reply {
            let command = match Command::parse(args) {
                Ok(command) => command,
                Err(error) => return Reply::Error(error.to_string()),
            };
            self.apply(&command)
        }

        fn apply(&mut self, command: &Command) -> Reply {
            let outcome = execute(command, self.now_ms, &self.state);
            assert!(
                command.is_write() || outcome.writes.is_empty(),
                "read {command:?} wrote"
            );
            for (key, record) in outcome.writes {
                match record {
                    Some(record) => self.state.insert(key, record),
                    None => self.state.remove(&key),
                };
            }
            outcome.reply.resp2()
        }

        fn run(&mut self, line: &str) -> Reply {
            let args: Vec<Bytes> = line.split_whitespace().map(b).collect();
            self.run_args(&args)
        }

        /// Runs each line and checks its reply.
        fn check(&mut self, script: &[(&str, Reply)]) {
            for (line, expected) in script {
                assert_eq!(&self.run(line), expected, "{line}");
            }
        }

        fn zset(&self, key: &str) -> Option<&ZSet> {
            match self.state.get(key.as_bytes()) {
                Some(Record {
                    value: Value::ZSet(set),
                    ..
                }) => Some(set),
                None => None,
                Some(other) => panic!("{key} holds {other:?}"),
            }
        }

        fn put(&mut self, key: &str, value: Value, expires_at_ms: Option<u64>) {
            self.state.insert(
                b(key),
                Record {
                    value,
                    expires_at_ms,
                },
            );
        }
    }

    fn arr(items: &[&str]) -> Reply {
        Reply::Array(items.iter().map(|item| Reply::Bulk(b(item))).collect())
    }

    fn bulk(item: &str) -> Reply {
        Reply::Bulk(b(item))
    }

    fn int(n: i64) -> Reply {
        Reply::Int(n)
    }

    fn err(text: &str) -> Reply {
        Reply::Error(text.to_string())
    }

    #[test]
    fn scores_format_like_printf_17g() {
        let cases: &[(f64, &str)] = &[
            (1.5, "1.5"),
            (10.0, "10"),
            (-2.5, "-2.5"),
            (0.1, "0.10000000000000001"),
            (1e300, "1.0000000000000001e+300"),
            (1e17, "1e+17"),
            (1e16, "10000000000000000"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1.0000000000000001e-05"),
            (f64::MAX, "1.7976931348623157e+308"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (0.0, "0"),
            (3.0e-310, "2.9999999999999908e-310"),
            (5e-324, "4.9406564584124654e-324"),
            (1.0 / 3.0, "0.33333333333333331"),
            (2.5e-5, "2.5000000000000001e-05"),
            (123.456, "123.456"),
            (100.25, "100.25"),
        ];
        for (value, text) in cases {
            assert_eq!(format_double(*value), *text, "{value:e}");
        }
    }

    #[test]
    fn doubles_parse_like_strtod() {
        for (text, value) in [
            ("1e3", 1000.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("-0.25", -0.25),
            ("+inf", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
            ("inf", f64::INFINITY),
            ("1E-2", 0.01),
        ] {
            assert_eq!(parse_double(text.as_bytes(), true), Some(value), "{text}");
        }
        for text in [
            "",
            " 1",
            "1 ",
            "nan",
            "-nan",
            "NaN",
            "1e400",
            "1e-400",
            "abc",
            "30.badscore",
            "--1",
            "1e",
            ".",
            "in",
        ] {
            assert_eq!(parse_double(text.as_bytes(), true), None, "{text}");
        }
        // Ranges accept what strtod converts, overflow and leading space included.
        assert_eq!(parse_double(b"1e400", false), Some(f64::INFINITY));
        assert_eq!(parse_double(b" 2", false), Some(2.0));
        assert_eq!(parse_double(b"", false), Some(0.0));
        assert_eq!(parse_double(b"  ", false), None);
        // Hexadecimal floats, as strtod reads them.
        assert_eq!(parse_double(b"0x10", true), Some(16.0));
        assert_eq!(parse_double(b"-0x1.8p1", true), Some(-3.0));
        assert_eq!(parse_double(b"0x.8", true), Some(0.5));
        assert_eq!(parse_double(b"0x1p-2", true), Some(0.25));
        assert_eq!(parse_double(b"0x1p5000", true), None);
        assert_eq!(parse_double(b"0x1p5000", false), Some(f64::INFINITY));
        assert_eq!(parse_double(b"0x1p-5000", true), None);
        assert_eq!(parse_double(b"0x0p-5000", true), Some(0.0));
        for text in ["0x", "0x.", "0x1p", "0xg", "0x1q"] {
            assert_eq!(parse_double(text.as_bytes(), false), None, "{text}");
        }
        let score = |v: f64| Score::new(v).expect("not NaN");
        assert_eq!(
            parse_score_bound(b"(5"),
            Some(ScoreBound {
                value: score(5.0),
                exclusive: true
            })
        );
        assert_eq!(parse_score_bound(b"(nan"), None);
        assert_eq!(parse_score_bound(b"str"), None);
    }

    #[test]
    fn zadd_options_and_their_errors() {
        let mut db = Db::default();
        db.check(&[
            ("zadd z 10 x 20 y 30 z", int(3)),
            ("zrange z 0 -1", arr(&["x", "y", "z"])),
            ("zadd z 1 y", int(0)),
            (
                "zrange z 0 -1 withscores",
                arr(&["y", "1", "x", "10", "z", "30"]),
            ),
            ("zadd z xx 10 x 20", err("ERR syntax error")),
            (
                "zadd z",
                err("ERR wrong number of arguments for 'zadd' command"),
            ),
            ("zadd z nx 1", err("ERR syntax error")),
            (
                "zadd z xx nx 1 a",
                err("ERR XX and NX options at the same time are not compatible"),
            ),
            (
                "zadd z gt nx 1 a",
                err("ERR GT, LT, and/or NX options at the same time are not compatible"),
            ),
            (
                "zadd z lt gt 1 a",
                err("ERR GT, LT, and/or NX options at the same time are not compatible"),
            ),
            (
                "zadd z incr 1 a 2 b",
                err("ERR INCR option supports a single increment-element pair"),
            ),
            ("zadd z nan a", err("ERR value is not a valid float")),
            (
                "zadd z 1 a 2 b 30.badscore c",
                err("ERR value is not a valid float"),
            ),
            (
                "zincrby z 10 a 20 b 30 c",
                err("ERR wrong number of arguments for 'zincrby' command"),
            ),
            ("zadd missing xx 10 x", int(0)),
            ("zadd missing xx incr 10 x", Reply::Nil),
            ("exists missing", int(0)),
        ]);
        db.run("del z");
        db.check(&[
            ("zadd z 10 x 20 y 30 z", int(3)),
            ("zadd z gt ch 5 foo 11 x 21 y 29 z", int(3)),
            (
                "zrange z 0 -1 withscores",
                arr(&["foo", "5", "x", "11", "y", "21", "z", "30"]),
            ),
            ("zadd z lt ch 4 foo 12 x 20 y", int(2)),
            ("zadd z xx ch 5 new 1 x", int(1)),
            ("zscore z new", Reply::Nil),
            ("zadd z nx 100 x 100 a", int(1)),
            ("zscore z x", bulk("1")),
            ("zadd z ch 1 x 2 a", int(1)),
            ("zadd z 1 x", int(0)),
        ]);
        db.run("del z");
        db.check(&[
            ("zadd z 28 x", int(1)),
            ("zadd z lt incr 1 x", Reply::Nil),
            ("zadd z gt incr -1 x", Reply::Nil),
            ("zadd z gt incr 1 x", bulk("29")),
            ("zadd z incr 1.5 x", bulk("30.5")),
            ("zadd z +inf i -inf n", int(2)),
            ("zadd z lt incr 1 i", Reply::Nil),
            ("zadd z gt incr 1 n", Reply::Nil),
            ("zscore z i", bulk("inf")),
            (
                "zincrby z -inf i",
                err("ERR resulting score is not a number (NaN)"),
            ),
            ("zincrby z 5 new", bulk("5")),
            ("zincrby z -2 new", bulk("3")),
            ("zincrby z 0.1 new", bulk("3.1000000000000001")),
            ("zadd z 1e400 a", err("ERR value is not a valid float")),
            ("zadd z \"\" a", err("ERR value is not a valid float")),
        ]);
    }

    #[test]
    fn basic_reads_and_ranks() {
        let mut db = Db::default();
        db.check(&[
            ("zadd z 1 a 2 b 3 c 4 d", int(4)),
            ("zcard z", int(4)),
            ("zcard none", int(0)),
            ("zscore z c", bulk("3")),
            ("zscore none c", Reply::Nil),
            (
                "zmscore z a x d",
                Reply::Array(vec![bulk("1"), Reply::Nil, bulk("4")]),
            ),
            ("zmscore none a", Reply::Array(vec![Reply::Nil])),
            (
                "zmscore z",
                err("ERR wrong number of arguments for 'zmscore' command"),
            ),
            ("zrank z a", int(0)),
            ("zrank z d", int(3)),
            ("zrevrank z a", int(3)),
            ("zrevrank z d", int(0)),
            ("zrank z x", Reply::Nil),
            ("zrank none x", Reply::Nil),
            ("zcount z 2 3", int(2)),
            ("zcount z (2 3", int(1)),
            ("zcount z -inf +inf", int(4)),
            ("zcount z (1 (4", int(2)),
            ("zcount z str 1", err("ERR min or max is not a float")),
        ]);
    }

    #[test]
    fn zrange_in_all_its_forms() {
        let mut db = Db::default();
        db.run("zadd z 1 a 2 b 3 c 4 d");
        db.check(&[
            ("zrange z 0 -1", arr(&["a", "b", "c", "d"])),
            ("zrange z 0 -2", arr(&["a", "b", "c"])),
            ("zrange z 1 -1", arr(&["b", "c", "d"])),
            ("zrange z -1 -1", arr(&["d"])),
            ("zrange z -2 -1", arr(&["c", "d"])),
            ("zrange z 5 -1", arr(&[])),
            ("zrange z 0 5", arr(&["a", "b", "c", "d"])),
            ("zrange z -10 1", arr(&["a", "b"])),
            ("zrange z 2 1", arr(&[])),
            ("zrange z 0 -1 rev", arr(&["d", "c", "b", "a"])),
            ("zrevrange z 0 1 withscores", arr(&["d", "4", "c", "3"])),
            ("zrange none 0 -1", arr(&[])),
            ("zrange z a 1", err("ERR value is not an integer or out of range")),
            ("zrangebyscore z 2 3", arr(&["b", "c"])),
            ("zrangebyscore z (2 +inf withscores", arr(&["c", "3", "d", "4"])),
            ("zrevrangebyscore z 3 2", arr(&["c", "b"])),
            ("zrevrangebyscore z +inf (2", arr(&["d", "c"])),
            ("zrangebyscore z -inf +inf limit 1 2", arr(&["b", "c"])),
            ("zrangebyscore z -inf +inf limit 1 -1", arr(&["b", "c", "d"])),
            ("zrangebyscore z -inf +inf limit -1 2", arr(&[])),
            ("zrangebyscore z -inf +inf limit 0 0", arr(&[])),
            ("zrevrangebyscore z +inf -inf limit 1 2 withscores", arr(&["c", "3", "b", "2"])),
            ("zrange z 1 3 byscore", arr(&["a", "b", "c"])),
            ("zrange z 3 1 byscore rev", arr(&["c", "b", "a"])),
            ("zrange z (1 +inf byscore limit 1 1", arr(&["c"])),
            ("zrangebyscore z str 1", err("ERR min or max is not a float")),
            ("zrangebyscore z 1 NaN", err("ERR min or max is not a float")),
            ("zrange z 0 -1 limit 1 2", err("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX")),
            ("zrange z - + bylex withscores", err("ERR syntax error, WITHSCORES not supported in combination with BYLEX")),
            ("zrevrange z 0 -1 byscore", err("ERR syntax error")),
            ("zrangebyscore z 0 -1 rev", err("ERR syntax error")),
            ("zrange z 0 -1 bogus", err("ERR syntax error")),
            ("zrange z 0", err("ERR wrong number of arguments for 'zrange' command")),
        ]);
        db.run("del z");
        db.run("zadd z 0 alpha 0 bar 0 cool 0 down 0 elephant 0 foo 0 great 0 hill 0 omega");
        db.check(&[
            ("zrangebylex z - [cool", arr(&["alpha", "bar", "cool"])),
            ("zrangebylex z - (cool", arr(&["alpha", "bar"])),
            ("zrangebylex z [bar [down", arr(&["bar", "cool", "down"])),
            ("zrangebylex z (great +", arr(&["hill", "omega"])),
            ("zrangebylex z - + limit 1 2", arr(&["bar", "cool"])),
            ("zrevrangebylex z [cool -", arr(&["cool", "bar", "alpha"])),
            ("zrevrangebylex z + (great limit 0 1", arr(&["omega"])),
            ("zrange z [b [c bylex", arr(&["bar"])),
            ("zrange z + - bylex rev limit 0 2", arr(&["omega", "hill"])),
            ("zlexcount z - +", int(9)),
            ("zlexcount z [bar (foo", int(4)),
            ("zlexcount z + -", int(0)),
            (
                "zrangebylex z foo bar",
                err("ERR min or max not valid string range item"),
            ),
            (
                "zrangebylex z +x [bar",
                err("ERR min or max not valid string range item"),
            ),
            (
                "zrangebylex z -x [bar",
                err("ERR min or max not valid string range item"),
            ),
        ]);
    }

    #[test]
    fn score_ranges_with_infinities_as_the_redis_suite_checks() {
        let mut db = Db::default();
        db.run("zadd zset -inf a 1 b 2 c 3 d 4 e 5 f +inf g");
        db.check(&[
            ("zrangebyscore zset -inf 2", arr(&["a", "b", "c"])),
            ("zrangebyscore zset 4 +inf", arr(&["e", "f", "g"])),
            ("zrevrangebyscore zset 2 -inf", arr(&["c", "b", "a"])),
            ("zrevrangebyscore zset +inf 4", arr(&["g", "f", "e"])),
            ("zrangebyscore zset (-inf (2", arr(&["b"])),
            ("zrangebyscore zset (4 (+inf", arr(&["f"])),
            ("zrevrangebyscore zset (2 (-inf", arr(&["b"])),
            ("zrevrangebyscore zset (+inf (4", arr(&["f"])),
            ("zcount zset (0 (3", int(2)),
            ("zrangebyscore zset 4 2", arr(&[])),
            ("zrangebyscore zset 2 (2", arr(&[])),
            ("zrangebyscore zset (2.4 (2.6", arr(&[])),
            (
                "zrangebyscore zset 0 3 withscores",
                arr(&["b", "1", "c", "2", "d", "3"]),
            ),
            (
                "zrange zset 0 -1 withscores",
                arr(&[
                    "a", "-inf", "b", "1", "c", "2", "d", "3", "e", "4", "f", "5", "g", "inf",
                ]),
            ),
        ]);
        let dblmax = format!("{:.17}", f64::MAX);
        assert_eq!(
            db.run_args(&[b("zadd"), b("zz"), b(&dblmax), b("m")]),
            int(1)
        );
        assert_eq!(db.run("zscore zz m"), bulk("1.7976931348623157e+308"));
    }

    #[test]
    fn expired_sets_read_as_missing() {
        let mut db = Db::default();
        db.run("zadd z 1 a 2 b");
        db.run("zadd other 5 x");
        db.state.get_mut(&b("z")).expect("stored").expires_at_ms = Some(10);
        db.now_ms = 10;
        db.check(&[
            ("zcard z", int(0)),
            ("zscore z a", Reply::Nil),
            ("zrange z 0 -1", arr(&[])),
            ("zrangebyscore z -inf +inf", arr(&[])),
            ("zrandmember z", Reply::Nil),
            ("zunion 2 z other", arr(&["x"])),
            ("zrem z a", int(0)),
        ]);
        assert!(!db.state.contains_key(&b("z")));
    }

    #[test]
    fn zrangestore_overwrites_the_destination() {
        let mut db = Db::default();
        db.run("zadd z1 1 a 2 b 3 c 4 d");
        db.put("dst", Value::Str(b("old")), Some(1_000_000));
        db.check(&[
            ("zrangestore dst z1 0 1", int(2)),
            ("zrange dst 0 -1 withscores", arr(&["a", "1", "b", "2"])),
            ("zrangestore dst z1 [b [c bylex", int(2)),
            ("zrangestore dst z1 1 2 byscore", int(2)),
            ("zrangestore dst z1 4 1 byscore rev limit 1 2", int(2)),
            ("zrange dst 0 -1", arr(&["b", "c"])),
            ("zrangestore dst z1 5 -1", int(0)),
            ("exists dst", int(0)),
            ("zrangestore dst missing 0 -1", int(0)),
            ("zrangestore dst z1 0 -1 limit 1 2", err("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX")),
            ("zrangestore dst z1 0 -1 withscores", err("ERR syntax error")),
        ]);
        db.run("zrangestore dst z1 0 0");
        assert_eq!(db.state[&b("dst")].expires_at_ms, None);
        db.run("set str x");
        assert_eq!(
            db.run("zrangestore dst str 0 -1"),
            err(super::super::WRONGTYPE)
        );
    }

    #[test]
    fn removals_delete_empty_keys_and_keep_the_ttl() {
        let mut db = Db::default();
        db.run("zadd z 1 a 2 b 3 c 4 d 5 e");
        db.state.get_mut(&b("z")).expect("stored").expires_at_ms = Some(5_000);
        db.check(&[
            ("zrem z a x", int(1)),
            ("zrem z x", int(0)),
            ("zrem none x", int(0)),
            ("zremrangebyscore z (2 3", int(1)),
            (
                "zremrangebyscore z str 1",
                err("ERR min or max is not a float"),
            ),
            ("zrange z 0 -1", arr(&["b", "d", "e"])),
            ("zremrangebyrank z -1 -1", int(1)),
            ("zremrangebyrank z 5 10", int(0)),
            ("zadd z 2 a", int(1)),
        ]);
        assert_eq!(db.state[&b("z")].expires_at_ms, Some(5_000));
        db.check(&[
            ("zremrangebylex z - (b", int(1)),
            ("zrange z 0 -1", arr(&["b", "d"])),
            ("zrem z b d", int(2)),
            ("exists z", int(0)),
        ]);
        db.run("zadd l 0 a 0 b 0 c 0 d");
        db.check(&[
            ("zremrangebylex l [b [c", int(2)),
            ("zremrangebyrank l 0 -1", int(2)),
            ("exists l", int(0)),
        ]);
        // An expired zset reads as missing and the write removes it.
        db.run("zadd old 1 a");
        db.state.get_mut(&b("old")).expect("stored").expires_at_ms = Some(10);
        db.now_ms = 20;
        assert_eq!(db.run("zcard old"), int(0));
        assert_eq!(db.run("zadd old 2 b"), int(1));
        assert_eq!(db.run("zrange old 0 -1 withscores"), arr(&["b", "2"]));
        assert_eq!(db.state[&b("old")].expires_at_ms, None);
    }

    #[test]
    fn pops() {
        let mut db = Db::default();
        db.run("zadd z 1 a 2 b 3 c 4 d 5 e");
        db.check(&[
            ("zpopmin z", arr(&["a", "1"])),
            ("zpopmax z", arr(&["e", "5"])),
            ("zpopmin z 0", arr(&[])),
            ("zpopmin z 2", arr(&["b", "2", "c", "3"])),
            (
                "zpopmin z -1",
                err("ERR value is out of range, must be positive"),
            ),
            ("zpopmin z 1 2", err("ERR syntax error")),
            ("zpopmax z 10", arr(&["d", "4"])),
            ("exists z", int(0)),
            ("zpopmin z", arr(&[])),
            ("zpopmin z 3", arr(&[])),
        ]);
        db.run("set s x");
        db.check(&[
            ("zpopmin s", err(super::super::WRONGTYPE)),
            ("zpopmin s 0", err(super::super::WRONGTYPE)),
            ("zmpop 1 s min", err(super::super::WRONGTYPE)),
        ]);
        db.run("zadd z2 1 a 2 b 3 c");
        let nested = |key: &str, pairs: &[(&str, &str)]| {
            Reply::Array(vec![
                bulk(key),
                Reply::Array(pairs.iter().map(|(m, s)| arr(&[m, s])).collect()),
            ])
        };
        db.check(&[
            ("zmpop 2 none z2 min", nested("z2", &[("a", "1")])),
            (
                "zmpop 2 none z2 max count 10",
                nested("z2", &[("c", "3"), ("b", "2")]),
            ),
            ("zmpop 2 none z2 min", Reply::NilArray),
            (
                "zmpop",
                err("ERR wrong number of arguments for 'zmpop' command"),
            ),
            (
                "zmpop 1 z",
                err("ERR wrong number of arguments for 'zmpop' command"),
            ),
            ("zmpop 0 z min", err("ERR numkeys should be greater than 0")),
            ("zmpop a z min", err("ERR numkeys should be greater than 0")),
            ("zmpop 1 z bad_where", err("ERR syntax error")),
            ("zmpop 1 z min bar", err("ERR syntax error")),
            ("zmpop 1 z max min", err("ERR syntax error")),
            ("zmpop 1 z count", err("ERR syntax error")),
            ("zmpop 1 z max count 1 count 2", err("ERR syntax error")),
            ("zmpop 2 z z2 bad", err("ERR syntax error")),
            (
                "zmpop 1 z min count 0",
                err("ERR count should be greater than 0"),
            ),
            (
                "zmpop 1 z max count a",
                err("ERR count should be greater than 0"),
            ),
            ("zmpop 5 z min", err("ERR syntax error")),
        ]);
    }

    #[test]
    fn blocking_pops_parse_into_the_polled_form() {
        let args = |line: &str| line.split_whitespace().map(b).collect::<Vec<_>>();
        let parse = |name: &str, line: &str| {
            ZSetCommand::parse_blocking(name, &args(line)).expect("a blocking pop")
        };
        assert_eq!(
            parse("bzpopmin", "a b 1.5"),
            Ok((
                ZSetCommand::PopFirstNonEmpty {
                    keys: vec![b("a"), b("b")],
                    max: false,
                    count: None,
                    shape: PopShape::KeyMemberScore
                },
                1500
            ))
        );
        assert_eq!(
            parse("bzmpop", "0 2 a b max count 3"),
            Ok((
                ZSetCommand::PopFirstNonEmpty {
                    keys: vec![b("a"), b("b")],
                    max: true,
                    count: Some(3),
                    shape: PopShape::BlockingMulti
                },
                0
            ))
        );
        assert_eq!(
            parse("bzpopmax", "a -1"),
            Err(CommandError::Message("ERR timeout is negative".into()))
        );
        assert_eq!(
            parse("bzpopmax", "a x"),
            Err(CommandError::Message(
                "ERR timeout is not a float or out of range".into()
            ))
        );
        assert_eq!(
            parse("bzpopmax", "a"),
            Err(CommandError::Arity {
                name: "bzpopmax".into()
            })
        );
        assert_eq!(
            parse("bzmpop", "0 1"),
            Err(CommandError::Arity {
                name: "bzmpop".into()
            })
        );
        assert_eq!(
            parse("bzmpop", "1 0 a min"),
            Err(CommandError::Message(
                "ERR numkeys should be greater than 0".into()
            ))
        );
        assert!(ZSetCommand::parse_blocking("blpop", &args("a 0")).is_none());

        let mut db = Db::default();
        db.run("zadd z 1 a 2 b");
        let (command, _) = parse("bzpopmax", "none z 0").expect("parses");
        let command = Command::ZSetOp(command);
        assert_eq!(command.name(), "bzpopmax");
        assert!(command.is_write());
        assert_eq!(db.apply(&command), arr(&["z", "b", "2"]));
        assert_eq!(db.apply(&command), arr(&["z", "a", "1"]));
        assert_eq!(db.apply(&command), Reply::NilArray);
        db.run("zadd z 1 a 2 b");
        let (command, _) = parse("bzmpop", "0 1 z min count 5").expect("parses");
        assert_eq!(
            db.apply(&Command::ZSetOp(command)),
            Reply::Array(vec![
                bulk("z"),
                Reply::Array(vec![arr(&["a", "1"]), arr(&["b", "2"])])
            ])
        );
    }

    #[test]
    fn union_inter_diff_and_their_stores() {
        let mut db = Db::default();
        db.run("zadd a 1 x 2 y 3 z");
        db.run("zadd b 10 y 20 z 30 w");
        db.put(
            "s",
            Value::Set([b("x"), b("w")].into_iter().collect()),
            None,
        );
        db.check(&[
            (
                "zunion 2 a b withscores",
                arr(&["x", "1", "y", "12", "z", "23", "w", "30"]),
            ),
            (
                "zunion 2 a b weights 2 1 aggregate min withscores",
                arr(&["x", "2", "y", "4", "z", "6", "w", "30"]),
            ),
            ("zunion 2 a b aggregate max", arr(&["x", "y", "z", "w"])),
            ("zinter 2 a b withscores", arr(&["y", "12", "z", "23"])),
            (
                "zinter 2 a b aggregate max withscores",
                arr(&["y", "10", "z", "20"]),
            ),
            ("zinter 2 a s withscores", arr(&["x", "2"])),
            ("zdiff 2 b a withscores", arr(&["w", "30"])),
            ("zdiff 2 a a", arr(&[])),
            ("zdiff 1 none", arr(&[])),
            ("zunion 1 none", arr(&[])),
            ("zintercard 2 a b", int(2)),
            ("zintercard 2 a b limit 1", int(1)),
            ("zintercard 2 a b limit 0", int(2)),
            ("zintercard 1 a a", err("ERR syntax error")),
            ("zintercard 1 a limit", err("ERR syntax error")),
            (
                "zintercard 1 a limit -1",
                err("ERR LIMIT can't be negative"),
            ),
            ("zintercard 1 a limit x", err("ERR LIMIT can't be negative")),
            (
                "zintercard 0 a",
                err("ERR at least 1 input key is needed for 'zintercard' command"),
            ),
            (
                "zunion 0 a",
                err("ERR at least 1 input key is needed for 'zunion' command"),
            ),
            (
                "zunionstore d 0 a",
                err("ERR at least 1 input key is needed for 'zunionstore' command"),
            ),
            ("zunion 3 a b", err("ERR syntax error")),
            (
                "zunion x a",
                err("ERR value is not an integer or out of range"),
            ),
            (
                "zunion 2 a b weights 1 nan",
                err("ERR weight value is not a float"),
            ),
            ("zdiff 2 a b weights 1 1", err("ERR syntax error")),
            ("zunion 2 a b aggregate avg", err("ERR syntax error")),
            ("zunionstore d 2 a b withscores", err("ERR syntax error")),
            ("zunionstore d 2 a b", int(4)),
            (
                "zrange d 0 -1 withscores",
                arr(&["x", "1", "y", "12", "z", "23", "w", "30"]),
            ),
            ("zinterstore d 2 a b weights 1 0", int(2)),
            ("zrange d 0 -1 withscores", arr(&["y", "2", "z", "3"])),
            ("zdiffstore d 2 a b", int(1)),
            ("zunionstore d 1 s", int(2)),
            ("zrange d 0 -1 withscores", arr(&["w", "1", "x", "1"])),
            ("zunionstore d 1 none", int(0)),
            ("exists d", int(0)),
        ]);
        db.run("zadd i1 +inf k");
        db.run("zadd i2 -inf k");
        db.check(&[
            ("zunionstore d 2 i1 i2", int(1)),
            ("zscore d k", bulk("0")),
            ("zinterstore d 2 i1 i2", int(1)),
            ("zscore d k", bulk("0")),
            ("zunionstore d 1 i2 weights 0", int(1)),
            ("zrange d 0 -1 withscores", arr(&["k", "0"])),
        ]);
        db.run("set str v");
        db.check(&[
            ("zunion 2 a str", err(super::super::WRONGTYPE)),
            ("zintercard 2 a str", err(super::super::WRONGTYPE)),
        ]);
        let command =
            Command::parse(&[b("zunionstore"), b("d"), b("2"), b("a"), b("b")]).expect("parses");
        assert_eq!(command.keys().as_slice(), [&b("d"), &b("a"), &b("b")]);
    }

    #[test]
    fn randmember_is_deterministic_by_seed() {
        let mut db = Db::default();
        db.run("zadd z 1 a 2 b 3 c 4 d 5 e");
        let run = |db: &mut Db, line: &str, seed: u64| {
            let args: Vec<Bytes> = line.split_whitespace().map(b).collect();
            let Ok(Command::ZSetOp(mut command)) = Command::parse(&args) else {
                panic!("{line}");
            };
            command.reseed(seed);
            db.apply(&Command::ZSetOp(command))
        };
        let members = |reply: Reply| match reply {
            Reply::Array(items) => items,
            other => panic!("{other:?}"),
        };
        for seed in 0..20 {
            assert_eq!(
                run(&mut db, "zrandmember z", seed),
                run(&mut db, "zrandmember z", seed)
            );
            let Reply::Bulk(one) = run(&mut db, "zrandmember z", seed) else {
                panic!("a member");
            };
            assert!(db.zset("z").expect("z").score(&one).is_some());
            let distinct = members(run(&mut db, "zrandmember z 3", seed));
            assert_eq!(distinct.len(), 3);
            let set: std::collections::BTreeSet<_> =
                distinct.iter().map(|r| format!("{r:?}")).collect();
            assert_eq!(set.len(), 3);
            assert_eq!(members(run(&mut db, "zrandmember z -7", seed)).len(), 7);
            let scored = members(run(&mut db, "zrandmember z -3 withscores", seed));
            assert_eq!(scored.len(), 6);
            for pair in scored.chunks(2) {
                let (Reply::Bulk(member), Reply::Bulk(score)) = (&pair[0], &pair[1]) else {
                    panic!("{pair:?}");
                };
                assert_eq!(
                    format_double(
                        db.zset("z")
                            .expect("z")
                            .score(member)
                            .expect("member")
                            .get()
                    ),
                    String::from_utf8_lossy(score)
                );
            }
        }
        db.check(&[
            ("zrandmember z 10 withscores", arr(&["a", "1", "b", "2", "c", "3", "d", "4", "e", "5"])),
            ("zrandmember z 0", arr(&[])),
            ("zrandmember none", Reply::Nil),
            ("zrandmember none 5", arr(&[])),
            ("zrandmember z 1 bogus", err("ERR syntax error")),
            ("zrandmember z -9223372036854770000 withscores", err("ERR value is out of range")),
            ("zrandmember z -16777217", err(crate::kv::RANDOM_PICKS_TOO_MANY)),
            ("zrandmember z -9223372036854775808", err("ERR value is out of range, must be between -9223372036854775807 and 9223372036854775807")),
        ]);
    }

    /// The cursor of positions in score order that ZSCAN had before the proxy kept cursors:
    /// no longer parsed, still executed for log entries that hold it.
    #[test]
    fn a_legacy_zscan_walks_the_order_by_index() {
        let mut db = Db::default();
        db.run("zadd z 1 a 2 b 3 c 4 d 5 e");
        let scan = |cursor: &str, items: &[&str]| Reply::Array(vec![bulk(cursor), arr(items)]);
        let step = |cursor: u64, pattern: Option<&str>| {
            Command::ZSetOp(ZSetCommand::Scan {
                key: b("z"),
                cursor,
                pattern: pattern.map(b),
                count: 2,
            })
        };
        assert_eq!(db.apply(&step(0, None)), scan("2", &["a", "1", "b", "2"]));
        assert_eq!(db.apply(&step(4, None)), scan("0", &["e", "5"]));
        assert_eq!(db.apply(&step(2, Some("[bd]"))), scan("4", &["d", "4"]));
    }

    #[test]
    fn other_types_are_wrongtype() {
        let mut db = Db::default();
        db.run("set s v");
        for line in [
            "zadd s 1 a",
            "zincrby s 1 a",
            "zcard s",
            "zscore s a",
            "zmscore s a",
            "zrank s a",
            "zcount s 0 1",
            "zlexcount s - +",
            "zrange s 0 -1",
            "zrangebyscore s 0 1",
            "zrem s a",
            "zremrangebyrank s 0 1",
            "zpopmax s",
            "zrandmember s",
            "zrandmember s 2",
            "zinter 1 s",
        ] {
            assert_eq!(db.run(line), err(super::super::WRONGTYPE), "{line}");
        }
        assert_eq!(db.run("get s"), bulk("v"));
    }

    #[test]
    fn names_keys_and_commands_survive_encoding() {
        for line in [
            "zadd k nx ch 1 a 2 b",
            "zrangestore d k 0 -1",
            "zrevrangebylex k + - limit 0 1",
            "zinterstore d 2 k j weights 1 2 aggregate max",
            "zmpop 2 k j max count 2",
            "zrandmember k -5 withscores",
        ] {
            let args: Vec<Bytes> = line.split_whitespace().map(b).collect();
            let command = Command::parse(&args).expect("parses");
            assert_eq!(command.name(), line.split(' ').next().expect("a name"));
            let decoded: Command =
                postcard::from_bytes(&postcard::to_allocvec(&command).expect("encodes"))
                    .expect("decodes");
            assert_eq!(decoded, command);
        }
    }

    proptest! {
        /// ZADD / ZINCRBY / ZREM / ZPOPMIN against a map from member to score.
        #[test]
        fn matches_a_map_model(ops in proptest::collection::vec((0u8..4, 0u8..6, -4i32..5), 1..60)) {
            let mut db = Db::default();
            let mut model: BTreeMap<Bytes, f64> = BTreeMap::new();
            for (op, member, score) in ops {
                let member = format!("m{member}");
                let score = f64::from(score) / 2.0;
                match op {
                    0 => {
                        let added = !model.contains_key(member.as_bytes());
                        model.insert(b(&member), score);
                        prop_assert_eq!(db.run(&format!("zadd k {score} {member}")), int(i64::from(added)));
                    }
                    1 => {
                        let new = model.get(member.as_bytes()).copied().unwrap_or(0.0) + score;
                        model.insert(b(&member), new);
                        prop_assert_eq!(db.run(&format!("zincrby k {score} {member}")), bulk(&format_double(new)));
                    }
                    2 => {
                        let removed = model.remove(member.as_bytes()).is_some();
                        prop_assert_eq!(db.run(&format!("zrem k {member}")), int(i64::from(removed)));
                    }
                    _ => {
                        let mut sorted: Vec<_> = model.iter().map(|(m, s)| (*s, m.clone())).collect();
                        sorted.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
                        let expected: Vec<Reply> = sorted.first().map(|(s, m)| {
                            vec![Reply::Bulk(m.clone()), bulk(&format_double(*s))]
                        }).unwrap_or_default();
                        if let Some((_, m)) = sorted.first() {
                            model.remove(m);
                        }
                        prop_assert_eq!(db.run("zpopmin k"), Reply::Array(expected));
                    }
                }
                let mut sorted: Vec<_> = model.iter().map(|(m, s)| (*s + 0.0, m.clone())).collect();
                sorted.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
                let expected: Vec<Reply> = sorted
                    .iter()
                    .flat_map(|(s, m)| [Reply::Bulk(m.clone()), bulk(&format_double(*s))])
                    .collect();
                prop_assert_eq!(db.run("zrange k 0 -1 withscores"), Reply::Array(expected));
                prop_assert_eq!(db.run("zcard k"), int(model.len() as i64));
                prop_assert_eq!(db.state.contains_key(&b("k")), !model.is_empty());
                for (rank, (_, m)) in sorted.iter().enumerate() {
                    prop_assert_eq!(db.run(&format!("zrank k {}", String::from_utf8_lossy(m))), int(rank as i64));
                }
            }
        }

        /// Score ranges agree with filtering a sorted list.
        #[test]
        fn score_ranges_match_a_filter(
            scores in proptest::collection::vec(-5i32..5, 0..20),
            min in -6i32..6, max in -6i32..6, min_ex: bool, max_ex: bool,
            offset in -1i64..4, limit in -1i64..4,
        ) {
            let mut db = Db::default();
            let mut items = Vec::new();
            for (index, score) in scores.iter().enumerate() {
                db.run(&format!("zadd k {score} m{index:02}"));
                items.push((f64::from(*score), format!("m{index:02}")));
            }
            items.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            let (min, max) = (f64::from(min), f64::from(max));
            let selected: Vec<&str> = items.iter().filter(|(s, _)| {
                (if min_ex { *s > min } else { *s >= min }) && (if max_ex { *s < max } else { *s <= max })
            }).map(|(_, m)| m.as_str()).collect();
            let window = |list: Vec<&str>| -> Vec<String> {
                if offset < 0 { return Vec::new(); }
                let take = if limit < 0 { usize::MAX } else { limit as usize };
                list.into_iter().skip(offset as usize).take(take).map(str::to_string).collect()
            };
            let bound = |v: f64, ex: bool| format!("{}{v}", if ex { "(" } else { "" });
            let (lo, hi) = (bound(min, min_ex), bound(max, max_ex));
            let expected = window(selected.clone());
            let refs: Vec<&str> = expected.iter().map(String::as_str).collect();
            prop_assert_eq!(db.run(&format!("zrangebyscore k {lo} {hi} limit {offset} {limit}")), arr(&refs));
            let reversed = window(selected.iter().rev().copied().collect());
            let refs: Vec<&str> = reversed.iter().map(String::as_str).collect();
            prop_assert_eq!(db.run(&format!("zrevrangebyscore k {hi} {lo} limit {offset} {limit}")), arr(&refs));
            prop_assert_eq!(db.run(&format!("zcount k {lo} {hi}")), int(selected.len() as i64));
        }
    }

    #[test]
    fn a_zset_orders_by_score_then_member_and_survives_encoding() {
        let mut set = ZSet::default();
        let score = |v: f64| Score::new(v).expect("not NaN");
        set.insert(Bytes::from_static(b"b"), score(1.0));
        set.insert(Bytes::from_static(b"a"), score(1.0));
        set.insert(Bytes::from_static(b"c"), score(-0.0));
        set.insert(Bytes::from_static(b"d"), score(f64::NEG_INFINITY));
        assert_eq!(
            set.insert(Bytes::from_static(b"a"), score(0.0)),
            Some(score(1.0))
        );
        let order: Vec<_> = set.iter().map(|(m, s)| (m.clone(), s.get())).collect();
        assert_eq!(
            order,
            vec![
                (Bytes::from_static(b"d"), f64::NEG_INFINITY),
                (Bytes::from_static(b"a"), 0.0),
                (Bytes::from_static(b"c"), 0.0),
                (Bytes::from_static(b"b"), 1.0),
            ]
        );
        assert_eq!(set.rank(b"c"), Some(2));
        assert!(Score::new(f64::NAN).is_none());
        let decoded: ZSet =
            postcard::from_bytes(&postcard::to_allocvec(&set).expect("encodes")).expect("decodes");
        assert_eq!(decoded, set);
        assert_eq!(set.remove(b"a"), Some(score(0.0)));
        assert_eq!(set.len(), 3);
    }
}
