//! Collections element by element: what a storage node needs to keep hashes, sets, sorted
//! sets and lists as one row per element plus a header, and to execute the commands that name
//! their elements (or, for a list, the positions they touch) against only those rows.
//!
//! Why: a record holding a whole collection is read, decoded, copied, encoded and rewritten by
//! every command that touches one of its fields. A 512-field hash of 300-byte values made an
//! `HSET` cost 4 ms instead of 1.4 ms, almost all of it in that copying (`perf`, stop 25).
//!
//! The split of work:
//! - [`Command::elements`] says which elements a command touches when it touches no others
//!   (`HGET`, `HSET`, `SADD`, `ZSCORE`, …). The node loads only those rows and the collection's
//!   length, and executes with [`execute_elements`](super::execute_elements); every other
//!   command sees the whole collection, as before.
//! - [`changes`] turns the record a command wrote into the rows to put and delete, against the
//!   rows it was given, so that a partial load writes only what it touched.
//! - Lists are different: an element has no name, only a position. A list's rows are keyed by
//!   a *sequence number*, `head + position`, and the header keeps `head`. A command that
//!   touches the ends or a span of positions ([`Window`]) is given that window of the list
//!   with the number of elements before it ([`Part::before`]); [`list_changes`] turns the
//!   window it wrote back into rows, moving `head` when elements come or go at the front.
//! - [`rows_of`] and [`from_rows`] convert a whole collection to rows and back (snapshots and
//!   slot migration carry whole records).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::list::{End, ListCommand};
use super::zset::{Score, ZSet};
use super::{Command, KeyCommand, RecordError, Reply, SetCommand, Value, ZSetCommand};

/// A type of value kept element by element. Stored in headers: new kinds go at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Hash,
    Set,
    ZSet,
    List,
}

impl Kind {
    /// The kind of `value`; `None` for strings, which are kept whole.
    pub fn of(value: &Value) -> Option<Kind> {
        match value {
            Value::Hash(_) => Some(Kind::Hash),
            Value::Set(_) => Some(Kind::Set),
            Value::ZSet(_) => Some(Kind::ZSet),
            Value::List(_) => Some(Kind::List),
            Value::Str(_) | Value::Lock(_) => None,
        }
    }

    /// An empty value of this kind: what a key-level fold (`KEYS … TYPE`, `DBSIZE`) is given
    /// in place of a collection it does not need to read.
    pub fn empty(self) -> Value {
        match self {
            Kind::Hash => Value::Hash(BTreeMap::new()),
            Kind::Set => Value::Set(BTreeSet::new()),
            Kind::ZSet => Value::ZSet(ZSet::default()),
            Kind::List => Value::List(VecDeque::new()),
        }
    }
}

/// The sequence number of the first element of a list laid out afresh: the middle of the
/// range, so pushes at either end have 2^63 numbers to go.
pub const LIST_HEAD: u64 = 1 << 63;

/// A list element's row name: its sequence number, big-endian, so rows sort by position.
pub fn sequence_name(sequence: u64) -> Bytes {
    Bytes::copy_from_slice(&sequence.to_be_bytes())
}

/// What a command is given of a collection it touches in part: the [`Part`] of `len` elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Part {
    /// The collection's true length.
    pub len: u64,
    /// For a list, the elements before the loaded window (0 for the other kinds).
    pub before: u64,
}

/// A score's row value: its IEEE-754 bits, big-endian.
fn score_row(score: Score) -> Bytes {
    Bytes::copy_from_slice(&score.get().to_bits().to_be_bytes())
}

/// The elements of a collection as rows `(element, row value)` in element order: a hash's
/// fields with their values, a set's members with empty values, a sorted set's members with
/// their scores, a list's elements under their sequence numbers from [`LIST_HEAD`] (a fresh
/// layout). Empty for strings.
pub fn rows_of(value: &Value) -> Vec<(Bytes, Bytes)> {
    match value {
        Value::Hash(fields) => fields
            .iter()
            .map(|(field, value)| (field.clone(), value.clone()))
            .collect(),
        Value::Set(members) => members
            .iter()
            .map(|member| (member.clone(), Bytes::new()))
            .collect(),
        Value::ZSet(set) => set
            .by_member()
            .map(|(member, score)| (member.clone(), score_row(score)))
            .collect(),
        Value::List(items) => (LIST_HEAD..)
            .zip(items)
            .map(|(sequence, item)| (sequence_name(sequence), item.clone()))
            .collect(),
        Value::Str(_) | Value::Lock(_) => Vec::new(),
    }
}

/// A collection of `kind` from its rows (all of them, or the ones a command named; for a
/// list, consecutive rows in sequence order).
pub fn from_rows(
    kind: Kind,
    rows: impl IntoIterator<Item = (Bytes, Bytes)>,
) -> Result<Value, RecordError> {
    let rows = rows.into_iter();
    Ok(match kind {
        Kind::Hash => Value::Hash(rows.collect()),
        Kind::Set => Value::Set(rows.map(|(member, _)| member).collect()),
        Kind::ZSet => {
            let mut set = ZSet::default();
            for (member, row) in rows {
                let bits = <[u8; 8]>::try_from(row.as_ref()).map_err(|_| RecordError::Decode {
                    reason: format!("a score row of {} bytes", row.len()),
                })?;
                let score =
                    Score::new(f64::from_bits(u64::from_be_bytes(bits))).ok_or_else(|| {
                        RecordError::Decode {
                            reason: "a NaN score".into(),
                        }
                    })?;
                set.insert(member, score);
            }
            Value::ZSet(set)
        }
        Kind::List => Value::List(rows.map(|(_, item)| item).collect()),
    })
}

/// The rows to write to turn collection `old` into `new` (both of one kind; `old` may be the
/// part of the collection a command was given): rows of `new` that are missing or different
/// in `old`, and elements of `old` that `new` lacks. `added` and `removed` count elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub put: Vec<(Bytes, Bytes)>,
    pub delete: Vec<Bytes>,
    pub added: u64,
    pub removed: u64,
}

/// [`Changes`] from `old` to `new`, by a merge of their rows in element order (not for lists,
/// whose rows are positions: see [`list_changes`]).
pub fn changes(old: &Value, new: &Value) -> Changes {
    let old = rows_of(old);
    let new = rows_of(new);
    let mut out = Changes::default();
    let (mut old, mut new) = (old.into_iter().peekable(), new.into_iter().peekable());
    loop {
        match (old.peek(), new.peek()) {
            (None, None) => return out,
            (Some(_), None) => {
                let (element, _) = old.next().expect("peeked");
                out.delete.push(element);
                out.removed += 1;
            }
            (None, Some(_)) => {
                out.put.push(new.next().expect("peeked"));
                out.added += 1;
            }
            (Some((o, _)), Some((n, _))) => match o.cmp(n) {
                std::cmp::Ordering::Less => {
                    let (element, _) = old.next().expect("peeked");
                    out.delete.push(element);
                    out.removed += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.put.push(new.next().expect("peeked"));
                    out.added += 1;
                }
                std::cmp::Ordering::Equal => {
                    let (_, before) = old.next().expect("peeked");
                    let (element, after) = new.next().expect("peeked");
                    if before != after {
                        out.put.push((element, after));
                    }
                }
            },
        }
    }
}

/// Elements in a collection value (0 for the types kept whole).
pub fn len_of(value: &Value) -> u64 {
    match value {
        Value::Hash(fields) => fields.len() as u64,
        Value::Set(members) => members.len() as u64,
        Value::ZSet(set) => set.len() as u64,
        Value::List(items) => items.len() as u64,
        Value::Str(_) | Value::Lock(_) => 0,
    }
}

/// The rows that turn a list's stored window into what a command wrote, and the list's new
/// head ([`list_changes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListChanges {
    pub head: u64,
    pub put: Vec<(Bytes, Bytes)>,
    pub delete: Vec<Bytes>,
}

/// The rows to write when the list stored from sequence `head` has `before` elements, then
/// `old`, then `after` elements, and a command turned `old` into `new` (the elements outside
/// the window are untouched by construction). `None` when the change cannot be written from
/// the window: its length changed while elements lie on both sides of it (no command is given
/// such a window).
///
/// Elements common to the front of `old` and `new`, and to their back, keep their rows where
/// they can: when the length changes, either the front keeps its sequence numbers (the tail
/// moves) or the back does (the head moves), whichever rewrites fewer rows among those the
/// window holds. `LPUSH` thus writes one row and moves the head; `RPOP` deletes one row.
pub fn list_changes(
    head: u64,
    before: u64,
    after: u64,
    old: &VecDeque<Bytes>,
    new: &VecDeque<Bytes>,
) -> Option<ListChanges> {
    let (n, m) = (old.len() as u64, new.len() as u64);
    let common_front = old.iter().zip(new).take_while(|(a, b)| a == b).count() as u64;
    let common_back = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take_while(|(a, b)| a == b)
        .count() as u64;
    // Positions (within the windows) whose rows may stay: the front run, then the back run
    // where it does not overlap the front one in either window.
    let front = common_front.min(n).min(m);
    let back = common_back.min(n - front).min(m - front);
    let start = head + before;
    let new_start = if n == m {
        start
    } else {
        let keep_front = match (before, after) {
            (_, 0) if before > 0 => true,
            (0, 0) => front >= back,
            (0, _) => false,
            _ => return None,
        };
        if keep_front { start } else { start + n - m }
    };
    let mut out = ListChanges {
        head: new_start - before,
        ..ListChanges::default()
    };
    // Rows of the old window no longer occupied, and rows of the new window whose element
    // differs from what its sequence number held.
    let old_at = |sequence: u64| -> Option<&Bytes> {
        sequence
            .checked_sub(start)
            .filter(|offset| *offset < n)
            .map(|offset| &old[offset as usize])
    };
    for (offset, item) in new.iter().enumerate() {
        let sequence = new_start + offset as u64;
        if old_at(sequence) != Some(item) {
            out.put.push((sequence_name(sequence), item.clone()));
        }
    }
    for offset in 0..n {
        let sequence = start + offset;
        if !(new_start..new_start + m).contains(&sequence) {
            out.delete.push(sequence_name(sequence));
        }
    }
    Some(out)
}

/// The positions of a list a command touches when it touches no others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The first `n` elements (`LPOP key n`; 0 for `LPUSH`, which only needs the length).
    Front(u64),
    /// The last `n` elements.
    Back(u64),
    /// `start..=stop` as `LRANGE` reads them (negative from the end, clamped).
    Span { start: i64, stop: i64 },
}

impl Window {
    fn at(end: End, n: u64) -> Window {
        match end {
            End::Left => Window::Front(n),
            End::Right => Window::Back(n),
        }
    }

    /// The positions `[first, end)` this window covers in a list of `len` elements.
    pub fn positions(self, len: u64) -> (u64, u64) {
        match self {
            Window::Front(n) => (0, n.min(len)),
            Window::Back(n) => (len - n.min(len), len),
            Window::Span { start, stop } => {
                let signed = len.min(i64::MAX as u64) as i64;
                let first = if start < 0 {
                    signed.saturating_add(start)
                } else {
                    start
                }
                .max(0);
                let last = if stop < 0 {
                    signed.saturating_add(stop)
                } else {
                    stop
                };
                if first > last || first >= signed {
                    (0, 0)
                } else {
                    (first as u64, last.min(signed - 1) as u64 + 1)
                }
            }
        }
    }
}

/// What a command touches of the collection at one of its keys ([`Command::elements`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access<'a> {
    /// The named elements of a hash, set or sorted set; none: only the type, expiry or
    /// length. A list at such a key is given an empty window.
    Named(Vec<&'a Bytes>),
    /// A window of a list (a key of another type is given no elements: the command answers
    /// `WRONGTYPE`).
    Window(Window),
    /// A run of a hash's, set's or sorted set's elements in element order: those from `from`
    /// on (at it or past it), [`scan_rows`]`(len, count)` of them (a list is given an empty
    /// window). What a step of `HSCAN`, `SSCAN` or `ZSCAN` looks at.
    Run { from: &'a Bytes, count: u64 },
}

/// A collection of at most this many elements is scanned in one step, whatever the `COUNT`:
/// Redis answers a collection small enough for its compact encodings (128 entries by
/// default) in one step, and clients that once saw that are spared a round trip.
pub const SMALL_SCAN_LEN: u64 = 128;

/// How many elements a scan step of `count` looks at in a collection of `len`: all of them
/// (`u64::MAX`) when it is small ([`SMALL_SCAN_LEN`]), else `count` within
/// `1..=`[`SCAN_COUNT_MAX`](super::SCAN_COUNT_MAX).
pub fn scan_rows(len: u64, count: u64) -> u64 {
    if len <= SMALL_SCAN_LEN {
        u64::MAX
    } else {
        count.clamp(1, super::SCAN_COUNT_MAX)
    }
}

/// A step of `HSCAN`, `SSCAN` or `ZSCAN` ([`Command::ElementScan`]) on the collection at `key`,
/// whole or loaded as its [`Access::Run`]: both give the same elements, since the run holds
/// the first [`scan_rows`] from `from` on, and the true length decides how many that is.
pub(super) fn element_scan(
    view: &super::execute::View<'_>,
    key: &Bytes,
    kind: Kind,
    from: &Bytes,
    pattern: &Bytes,
    count: u64,
) -> Reply {
    let Some(record) = view.get(key) else {
        return Reply::Array(vec![Reply::Nil, Reply::Array(Vec::new())]);
    };
    if kind == Kind::List {
        return Reply::error("ERR a list has no element scan");
    }
    if Kind::of(&record.value) != Some(kind) {
        return Reply::error(super::WRONGTYPE);
    }
    let glob = super::Glob::new(pattern);
    let take = scan_rows(view.len_of(key), count);
    let run: Box<dyn Iterator<Item = (&Bytes, Option<Bytes>)>> = match &record.value {
        Value::Hash(fields) => Box::new(
            fields
                .range::<Bytes, _>(from..)
                .map(|(field, value)| (field, Some(value.clone()))),
        ),
        Value::Set(members) => Box::new(
            members
                .range::<Bytes, _>(from..)
                .map(|member| (member, None)),
        ),
        Value::ZSet(set) => Box::new(
            set.by_member()
                .skip_while(|(member, _)| *member < from)
                .map(|(member, score)| {
                    // ZSCAN answers scores as bulk strings in both protocols.
                    let score = crate::resp::format_double(score.get());
                    (member, Some(Bytes::from(score)))
                }),
        ),
        Value::List(_) | Value::Str(_) | Value::Lock(_) => unreachable!("the kind was checked"),
    };
    let mut looked = 0;
    let mut last = None;
    let mut items = Vec::new();
    for (element, extra) in run.take(usize::try_from(take).unwrap_or(usize::MAX)) {
        looked += 1;
        last = Some(element);
        if glob.matches(element) {
            items.push(Reply::Bulk(element.clone()));
            items.extend(extra.map(Reply::Bulk));
        }
    }
    // A step that looked at all it could may have left elements: the client goes on past the
    // last one (and may find none).
    let next = match last {
        Some(last) if looked == take => Reply::Bulk(last.clone()),
        _ => Reply::Nil,
    };
    Reply::Array(vec![next, Reply::Array(items)])
}

impl Access<'_> {
    /// Whether `element` (of a hash, set or sorted set) is one the command names.
    pub fn names(&self, element: &Bytes) -> bool {
        matches!(self, Access::Named(names) if names.contains(&element))
    }
}

impl Command {
    /// The keys of this command that it reads or writes only in part, each with the elements
    /// it touches (none: only the collection's type, expiry or length, as `HLEN`, `TTL` or
    /// `DEL`); keys not listed need whole values. `None`: every key needs its whole value. A
    /// node may execute the command with only those elements of a collection loaded
    /// ([`execute_elements`](super::execute_elements)).
    ///
    /// Every command listed here must, given collections with only these elements and their
    /// true lengths, answer and write exactly what it would with whole collections: the
    /// proptest `element_execution_matches_whole_execution` holds each to that.
    pub fn elements(&self) -> Option<Vec<(&Bytes, Access<'_>)>> {
        type Accesses<'a> = Option<Vec<(&'a Bytes, Access<'a>)>>;
        fn one<'a>(key: &'a Bytes, element: &'a Bytes) -> Accesses<'a> {
            Some(vec![(key, Access::Named(vec![element]))])
        }
        fn named<'a>(key: &'a Bytes, elements: Vec<&'a Bytes>) -> Accesses<'a> {
            Some(vec![(key, Access::Named(elements))])
        }
        fn headers<'a>(keys: Vec<&'a Bytes>) -> Accesses<'a> {
            Some(
                keys.into_iter()
                    .map(|key| (key, Access::Named(Vec::new())))
                    .collect(),
            )
        }
        fn window(key: &Bytes, window: Window) -> Accesses<'_> {
            Some(vec![(key, Access::Window(window))])
        }
        match self {
            Command::HGet { key, field }
            | Command::HExists { key, field }
            | Command::HStrLen { key, field }
            | Command::HSetNx { key, field, .. }
            | Command::HIncrBy { key, field, .. } => one(key, field),
            Command::HMGet { key, fields } | Command::HDel { key, fields } => {
                named(key, fields.iter().collect())
            }
            Command::HSet { key, pairs } => named(key, pairs.iter().map(|(f, _)| f).collect()),
            // Only the type, the expiry or the length: one row however large the collection.
            Command::HLen { key }
            | Command::Expire { key, .. }
            | Command::Ttl { key, .. }
            | Command::Persist { key }
            | Command::Type { key } => headers(vec![key]),
            Command::Del { keys } | Command::Exists { keys } => headers(keys.iter().collect()),
            Command::SetOp(command) => match command {
                SetCommand::SAdd { key, members }
                | SetCommand::SRem { key, members }
                | SetCommand::SMIsMember { key, members } => named(key, members.iter().collect()),
                SetCommand::SIsMember { key, member } => one(key, member),
                SetCommand::SCard { key } => headers(vec![key]),
                SetCommand::HIncrByFloat { key, field, .. } => one(key, field),
                SetCommand::HMSet { key, pairs } => {
                    named(key, pairs.iter().map(|(f, _)| f).collect())
                }
                _ => None,
            },
            Command::ZSetOp(command) => match command {
                ZSetCommand::Add { key, pairs, .. } => {
                    named(key, pairs.iter().map(|(_, m)| m).collect())
                }
                ZSetCommand::IncrBy { key, member, .. } | ZSetCommand::ScoreOf { key, member } => {
                    one(key, member)
                }
                ZSetCommand::MScore { key, members } | ZSetCommand::Rem { key, members } => {
                    named(key, members.iter().collect())
                }
                ZSetCommand::Card { key } => headers(vec![key]),
                _ => None,
            },
            Command::ElementScan {
                key, from, count, ..
            } => Some(vec![(
                key,
                Access::Run {
                    from,
                    count: *count,
                },
            )]),
            Command::KeyOp(command) => match command {
                KeyCommand::Expire { key, .. }
                | KeyCommand::ExpireTime { key, .. }
                | KeyCommand::RefCount { key }
                | KeyCommand::Encoding { key } => headers(vec![key]),
                KeyCommand::Touch { keys } => headers(keys.iter().collect()),
                _ => None,
            },
            Command::ListOp(command) => match command {
                ListCommand::Push { key, end, .. } => window(key, Window::at(*end, 0)),
                ListCommand::Pop { key, end, count } => {
                    window(key, Window::at(*end, count.unwrap_or(1)))
                }
                ListCommand::Len { key } => window(key, Window::Front(0)),
                ListCommand::Range { key, start, stop } => window(
                    key,
                    Window::Span {
                        start: *start,
                        stop: *stop,
                    },
                ),
                // A non-integer index is an error once the key is found: no element needed.
                ListCommand::Index { key, index } | ListCommand::Set { key, index, .. } => window(
                    key,
                    index.map_or(Window::Front(0), |at| Window::Span {
                        start: at,
                        stop: at,
                    }),
                ),
                ListCommand::Move {
                    source,
                    destination,
                    from,
                    to,
                } => {
                    if source != destination {
                        Some(vec![
                            (source, Access::Window(Window::at(*from, 1))),
                            (destination, Access::Window(Window::at(*to, 0))),
                        ])
                    } else if from == to {
                        window(source, Window::at(*from, 1))
                    } else {
                        // A rotation moves an element from one end to the other: the window
                        // would have to span both.
                        None
                    }
                }
                ListCommand::PopFirstNonEmpty {
                    keys, end, count, ..
                } => Some(
                    keys.iter()
                        .map(|key| (key, Access::Window(Window::at(*end, count.unwrap_or(1)))))
                        .collect(),
                ),
                ListCommand::Rem { .. }
                | ListCommand::Trim { .. }
                | ListCommand::Insert { .. }
                | ListCommand::Pos { .. } => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::{Record, execute, execute_elements};
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn rows_round_trip_for_each_kind() {
        let hash = Value::Hash(BTreeMap::from([(b("f"), b("v")), (b("g"), b(""))]));
        let set = Value::Set(BTreeSet::from([b("a"), b("b")]));
        let mut zset = ZSet::default();
        zset.insert(b("m"), Score::new(-1.5).expect("score"));
        zset.insert(b("n"), Score::new(f64::INFINITY).expect("score"));
        let zset = Value::ZSet(zset);
        for value in [hash, set, zset] {
            let kind = Kind::of(&value).expect("a collection");
            assert_eq!(from_rows(kind, rows_of(&value)).expect("decodes"), value);
        }
        let error = from_rows(Kind::ZSet, [(b("m"), b("short"))]).expect_err("bad score");
        assert!(error.to_string().contains("5 bytes"), "{error}");
    }

    #[test]
    fn a_scan_step_looks_at_no_more_than_its_bound() {
        assert_eq!(scan_rows(SMALL_SCAN_LEN, 1), u64::MAX, "small: whole");
        assert_eq!(scan_rows(SMALL_SCAN_LEN + 1, 1), 1);
        assert_eq!(
            scan_rows(SMALL_SCAN_LEN + 1, 0),
            1,
            "a step always moves on"
        );
        assert_eq!(scan_rows(u64::MAX, u64::MAX), crate::kv::SCAN_COUNT_MAX);
    }

    #[test]
    fn an_element_scan_steps_through_a_large_collection_bounded_and_a_small_one_at_once() {
        let mut zset = ZSet::default();
        let mut state = BTreeMap::new();
        let mut hash = BTreeMap::new();
        let mut set = BTreeSet::new();
        for i in 0..300 {
            let element = b(&format!("e{i:03}"));
            hash.insert(element.clone(), b(&format!("v{i}")));
            set.insert(element.clone());
            zset.insert(element, Score::new(f64::from(i) / 2.0).expect("score"));
        }
        // The empty string is an element like any other, first in element order.
        set.insert(Bytes::new());
        let record = |value| Record {
            value,
            expires_at_ms: None,
        };
        state.insert(b("h"), record(Value::Hash(hash)));
        state.insert(b("s"), record(Value::Set(set)));
        state.insert(b("z"), record(Value::ZSet(zset)));
        state.insert(
            b("small"),
            record(Value::Set(BTreeSet::from([b("x"), b("y")]))),
        );
        let step = |key: &str, kind: Kind, from: &Bytes, pattern: &str, count: u64| {
            let command = Command::ElementScan {
                key: b(key),
                kind,
                from: from.clone(),
                pattern: b(pattern),
                count,
            };
            let whole = execute(&command, 1_000, &state).reply;
            let (loaded, partial) = load_part(&command, &state);
            let part = execute_elements(&command, 1_000, &loaded, &partial).reply;
            assert_eq!(
                whole, part,
                "the run loaded answers as the whole collection"
            );
            let Reply::Array(parts) = whole else {
                return Err(whole);
            };
            let [last, Reply::Array(items)] = <[Reply; 2]>::try_from(parts).expect("two parts")
            else {
                panic!("the items are an array");
            };
            Ok((last, items))
        };
        let walk = |key: &str, kind: Kind, pattern: &str, count: u64, width: usize| {
            let mut from = Bytes::new();
            let mut seen = Vec::new();
            let mut steps = 0;
            loop {
                let (last, items) = step(key, kind, &from, pattern, count).expect("a step");
                assert!(items.len() <= count as usize * width, "a bounded step");
                seen.extend(items);
                steps += 1;
                match last {
                    Reply::Nil => return (seen, steps),
                    Reply::Bulk(last) => from = super::super::past(&last),
                    other => panic!("unexpected last {other:?}"),
                }
            }
        };
        // Every field once with its value, in steps of at most seven.
        let (seen, steps) = walk("h", Kind::Hash, "*", 7, 2);
        assert_eq!(seen.len(), 600);
        assert_eq!(steps, 300 / 7 + 1);
        assert_eq!(seen[..2], [Reply::Bulk(b("e000")), Reply::Bulk(b("v0"))]);
        // Every member once, the empty one included (a step may stop at it).
        let (seen, _) = walk("s", Kind::Set, "*", 1, 1);
        assert_eq!(seen.len(), 301);
        assert_eq!(seen[0], Reply::Bulk(Bytes::new()));
        // Scores as Redis formats them; MATCH filters what a step returns, not what it looks at.
        let (seen, steps) = walk("z", Kind::ZSet, "e29?", 50, 2);
        // Six full steps, and one that finds the end (the sixth cannot know it was last).
        assert_eq!(steps, 7);
        assert_eq!(seen.len(), 20);
        assert_eq!(
            seen[2..4],
            [Reply::Bulk(b("e291")), Reply::Bulk(b("145.5"))]
        );
        // A small collection in one step whatever the count; a missing key: nothing, done.
        assert_eq!(
            step("small", Kind::Set, &Bytes::new(), "*", 1),
            Ok((Reply::Nil, vec![Reply::Bulk(b("x")), Reply::Bulk(b("y"))]))
        );
        assert_eq!(
            step("nothing", Kind::Hash, &Bytes::new(), "*", 1),
            Ok((Reply::Nil, vec![]))
        );
        // Another type: WRONGTYPE.
        assert_eq!(
            step("s", Kind::Hash, &Bytes::new(), "*", 10),
            Err(Reply::error(super::super::WRONGTYPE))
        );
    }

    #[test]
    fn object_encoding_names_the_general_encoding_of_each_type() {
        let mut state = BTreeMap::new();
        let mut run = |line: &[&str]| {
            let args: Vec<Bytes> = line.iter().map(|a| b(a)).collect();
            let command = Command::parse(&args).expect("parses");
            let outcome = execute(&command, 1_000, &state);
            for (key, written) in outcome.writes {
                match written {
                    Some(record) => state.insert(key, record),
                    None => state.remove(&key),
                };
            }
            outcome.reply
        };
        run(&["SET", "str", "12"]);
        run(&["HSET", "hash", "f", "v"]);
        run(&["SADD", "set", "1"]);
        run(&["ZADD", "zset", "1", "m"]);
        run(&["RPUSH", "list", "x"]);
        for (key, name) in [
            ("str", "raw"),
            ("hash", "hashtable"),
            ("set", "hashtable"),
            ("zset", "skiplist"),
            ("list", "quicklist"),
        ] {
            let reply = run(&["OBJECT", "ENCODING", key]);
            assert_eq!(reply, super::super::Reply::Bulk(b(name)), "{key}");
        }
        assert_eq!(
            run(&["OBJECT", "ENCODING", "missing"]),
            super::super::Reply::Nil
        );
    }

    #[test]
    fn changes_put_what_differs_and_delete_what_went() {
        let old = Value::Hash(BTreeMap::from([(b("a"), b("1")), (b("b"), b("2"))]));
        let new = Value::Hash(BTreeMap::from([(b("b"), b("3")), (b("c"), b("4"))]));
        assert_eq!(
            changes(&old, &new),
            Changes {
                put: vec![(b("b"), b("3")), (b("c"), b("4"))],
                delete: vec![b("a")],
                added: 1,
                removed: 1,
            }
        );
        assert_eq!(changes(&new, &new), Changes::default());
    }

    fn list(items: &[&str]) -> VecDeque<Bytes> {
        items.iter().map(|item| b(item)).collect()
    }

    #[test]
    fn list_changes_write_only_the_ends_that_moved() {
        let h = LIST_HEAD;
        // LPUSH on a front window of nothing: one row before the head, which moves.
        let pushed = list_changes(h, 0, 3, &list(&[]), &list(&["x"])).expect("front window");
        assert_eq!(pushed.head, h - 1);
        assert_eq!(pushed.put, vec![(sequence_name(h - 1), b("x"))]);
        assert!(pushed.delete.is_empty());
        // RPOP on a back window of one: its row goes, the head stays.
        let popped = list_changes(h, 2, 0, &list(&["c"]), &list(&[])).expect("back window");
        assert_eq!(popped.head, h);
        assert!(popped.put.is_empty());
        assert_eq!(popped.delete, vec![sequence_name(h + 2)]);
        // LSET in a middle window: the one row, in place.
        let set = list_changes(h, 1, 1, &list(&["b"]), &list(&["B"])).expect("same length");
        assert_eq!((set.head, set.put.len(), set.delete.len()), (h, 1, 0));
        // A middle window cannot change length: the rows after it would have to move.
        assert_eq!(list_changes(h, 1, 1, &list(&["b"]), &list(&[])), None);
        // LREM near the front of a whole list: the shorter front side moves, one row goes.
        let removed = list_changes(
            h,
            0,
            0,
            &list(&["a", "b", "c", "d", "e"]),
            &list(&["a", "c", "d", "e"]),
        )
        .expect("whole list");
        assert_eq!(removed.head, h + 1);
        assert_eq!(removed.put, vec![(sequence_name(h + 1), b("a"))]);
        assert_eq!(removed.delete, vec![sequence_name(h)]);
    }

    #[test]
    fn windows_cover_the_positions_lrange_reads() {
        assert_eq!(Window::Front(3).positions(2), (0, 2));
        assert_eq!(Window::Back(3).positions(5), (2, 5));
        let span = |start, stop| Window::Span { start, stop };
        assert_eq!(span(0, -1).positions(4), (0, 4));
        assert_eq!(span(-2, -1).positions(4), (2, 4));
        assert_eq!(span(-100, 1).positions(4), (0, 2));
        assert_eq!(span(3, 1).positions(4), (0, 0));
        assert_eq!(span(9, 12).positions(4), (0, 0));
        assert_eq!(span(i64::MIN, i64::MAX).positions(4), (0, 4));
    }

    /// One command of the proptest's vocabulary, as a client would type it.
    fn command_line() -> impl Strategy<Value = Vec<String>> {
        let key = prop::sample::select(vec!["h", "s", "z", "l", "l", "m"]);
        let element = prop::sample::select(vec!["a", "b", "c", "d", "e"]);
        let value = prop::sample::select(vec!["1", "-7", "x", "2.5", ""]);
        (
            0..47u8,
            key,
            prop::collection::vec((element, value), 1..4),
            0..4u8,
        )
            .prop_map(|(which, key, pairs, flag)| {
                let key = key.to_string();
                let names: Vec<String> = pairs.iter().map(|(e, _)| e.to_string()).collect();
                let flat: Vec<String> = pairs
                    .iter()
                    .flat_map(|(e, v)| [e.to_string(), v.to_string()])
                    .collect();
                let scored: Vec<String> = pairs
                    .iter()
                    .flat_map(|(e, v)| {
                        let score = if v.parse::<f64>().is_ok() { *v } else { "3" };
                        [score.to_string(), e.to_string()]
                    })
                    .collect();
                let (first, first_value) = (names[0].clone(), pairs[0].1.to_string());
                let line = |name: &str, rest: Vec<String>| {
                    let mut out = vec![name.to_string(), key.clone()];
                    out.extend(rest);
                    out
                };
                match which {
                    0 | 1 => line("HSET", flat),
                    2 => line("HDEL", names),
                    3 => line("HGET", vec![first]),
                    4 => line("HMGET", names),
                    5 => line("HLEN", vec![]),
                    6 => line("HINCRBY", vec![first, "3".into()]),
                    7 => line("HSETNX", vec![first, first_value]),
                    8 => line("HINCRBYFLOAT", vec![first, "1.5".into()]),
                    9 | 10 => line("SADD", names),
                    11 => line("SREM", names),
                    12 => line("SCARD", vec![]),
                    13 => line("SMISMEMBER", names),
                    14 | 15 => {
                        let options = match flag {
                            0 => vec![],
                            1 => vec!["NX".to_string()],
                            2 => vec!["XX".to_string(), "CH".to_string()],
                            _ => vec!["GT".to_string()],
                        };
                        line("ZADD", options.into_iter().chain(scored).collect())
                    }
                    16 => line("ZREM", names),
                    17 => line("ZCARD", vec![]),
                    18 => line("ZMSCORE", names),
                    19 => line("ZINCRBY", vec!["2".into(), first]),
                    20 => line("HSTRLEN", vec![first]),
                    // Commands that need the whole value, mixed in so types and expiries vary.
                    21 => line("SET", vec![first_value]),
                    22 => line("DEL", vec![]),
                    23 => line("PEXPIRE", vec![(1 + flag as u64 * 10).to_string()]),
                    24 => line("PERSIST", vec![]),
                    25 => line("PTTL", vec![]),
                    26 => line("TYPE", vec![]),
                    27 => line("EXISTS", vec![]),
                    28 => vec!["OBJECT".into(), "ENCODING".into(), key.clone()],
                    29 => line("EXPIRE", vec!["100".into(), "GT".into()]),
                    30 => vec!["DEL".into(), key.clone(), "s".into(), "z".into()],
                    // Lists: windows at the ends and spans of positions.
                    31 | 32 => line("LPUSH", names),
                    33 | 34 => line("RPUSH", names),
                    35 => line(
                        if flag % 2 == 0 { "LPOP" } else { "RPOP" },
                        if flag < 2 {
                            vec![]
                        } else {
                            vec![(flag - 1).to_string()]
                        },
                    ),
                    36 => {
                        let (start, stop) =
                            [("0", "-1"), ("1", "2"), ("-2", "-1"), ("3", "1")][flag as usize];
                        line("LRANGE", vec![start.into(), stop.into()])
                    }
                    37 => line("LINDEX", vec![(flag as i64 - 2).to_string()]),
                    38 => line("LSET", vec![(flag as i64 - 2).to_string(), first]),
                    39 => line("LLEN", vec![]),
                    40 => {
                        let ends = ["LEFT", "RIGHT"];
                        let other = if key == "l" { "m" } else { "l" };
                        let destination = if flag < 2 {
                            key.clone()
                        } else {
                            other.to_string()
                        };
                        line(
                            "LMOVE",
                            vec![
                                destination,
                                ends[flag as usize % 2].into(),
                                ends[flag as usize / 2 % 2].into(),
                            ],
                        )
                    }
                    41 => vec![
                        "LMPOP".into(),
                        "2".into(),
                        key.clone(),
                        "m".into(),
                        "RIGHT".into(),
                        "COUNT".into(),
                        (flag + 1).to_string(),
                    ],
                    42 => line("LREM", vec![(flag as i64 - 1).to_string(), first]),
                    43 => line("LINSERT", vec!["BEFORE".into(), first, first_value]),
                    44 => line("LTRIM", vec!["1".into(), "-2".into()]),
                    // A scan step (built by the proxy, so spelled here: see `parse_line`).
                    45 => line(
                        "ESCAN",
                        vec![
                            if flag == 0 { String::new() } else { first },
                            ["*", "a*", "[bc]", "*e"][flag as usize].into(),
                            (flag + 1).to_string(),
                        ],
                    ),
                    _ => line("RPUSHX", names),
                }
            })
    }

    /// A command line of [`command_line`]: Redis's syntax, or `ESCAN key from pattern count`
    /// for a step of [`Command::ElementScan`] of the key's kind (named by its first letter).
    fn parse_line(args: &[Bytes]) -> Option<Command> {
        if args[0].as_ref() != b"ESCAN" {
            return Command::parse(args).ok();
        }
        let kind = match args[1].as_ref() {
            b"s" => Kind::Set,
            b"z" => Kind::ZSet,
            b"l" => Kind::List,
            _ => Kind::Hash,
        };
        Some(Command::ElementScan {
            key: args[1].clone(),
            kind,
            from: args[2].clone(),
            pattern: args[3].clone(),
            count: std::str::from_utf8(&args[4]).ok()?.parse().ok()?,
        })
    }

    /// What a node loads for `command` from the whole state: the named elements only (a
    /// list: the window), with the true lengths, when the command names its elements and the
    /// key holds a collection.
    fn load_part(
        command: &Command,
        state: &BTreeMap<Bytes, Record>,
    ) -> (BTreeMap<Bytes, Record>, BTreeMap<Bytes, Part>) {
        let mut stored = state.clone();
        let mut partial = BTreeMap::new();
        for (key, access) in command.elements().unwrap_or_default() {
            let Some(record) = state.get(key) else {
                continue;
            };
            let Some(kind) = Kind::of(&record.value) else {
                continue;
            };
            let (value, before) = match (&record.value, &access) {
                (Value::List(items), Access::Window(window)) => {
                    let (first, end) = window.positions(items.len() as u64);
                    let part = items.range(first as usize..end as usize).cloned().collect();
                    (Value::List(part), first)
                }
                (Value::List(_), Access::Named(_) | Access::Run { .. }) => {
                    (Value::List(VecDeque::new()), 0)
                }
                (_, Access::Run { from, count }) => {
                    let take = scan_rows(len_of(&record.value), *count);
                    let rows = rows_of(&record.value)
                        .into_iter()
                        .filter(|(element, _)| element >= *from)
                        .take(usize::try_from(take).unwrap_or(usize::MAX));
                    (from_rows(kind, rows).expect("rows decode"), 0)
                }
                _ => {
                    let rows = rows_of(&record.value)
                        .into_iter()
                        .filter(|(element, _)| access.names(element));
                    (from_rows(kind, rows).expect("rows decode"), 0)
                }
            };
            stored.insert(
                key.clone(),
                Record {
                    value,
                    expires_at_ms: record.expires_at_ms,
                },
            );
            let len = len_of(&record.value);
            partial.insert(key.clone(), Part { len, before });
        }
        (stored, partial)
    }

    /// A list as a node keeps it: rows by sequence number from a head.
    type Sequenced = (u64, BTreeMap<u64, Bytes>);

    fn sequenced(items: &VecDeque<Bytes>) -> Sequenced {
        (
            LIST_HEAD,
            (LIST_HEAD..).zip(items.iter().cloned()).collect(),
        )
    }

    /// Stores `written` as a node does: against the part loaded when the key was loaded in
    /// part and is still the same live collection (a list: against what was loaded, through
    /// its rows by sequence number in `lists`), as a whole value otherwise.
    #[allow(clippy::too_many_arguments)]
    fn store_part(
        state: &mut BTreeMap<Bytes, Record>,
        lists: &mut BTreeMap<Bytes, Sequenced>,
        loaded: &BTreeMap<Bytes, Record>,
        partial: &BTreeMap<Bytes, Part>,
        now_ms: u64,
        key: &Bytes,
        written: Option<Record>,
    ) {
        let Some(written) = written else {
            state.remove(key);
            lists.remove(key);
            return;
        };
        let base = state.get(key).filter(|base| !base.is_expired(now_ms));
        let same = base.is_some_and(|base| Kind::of(&base.value) == Kind::of(&written.value));
        if let (true, Value::List(new)) = (same, &written.value) {
            let Value::List(old) = &loaded[key].value else {
                unreachable!("a live list was loaded as a list")
            };
            let part = partial.get(key).copied().unwrap_or(Part {
                len: old.len() as u64,
                before: 0,
            });
            let after = part.len - part.before - old.len() as u64;
            let (head, rows) = lists.get_mut(key).expect("a stored list has rows");
            let changes =
                list_changes(*head, part.before, after, old, new).expect("a writable window");
            for sequence in changes.delete {
                rows.remove(&u64::from_be_bytes(
                    sequence[..].try_into().expect("8 bytes"),
                ));
            }
            for (sequence, item) in changes.put {
                rows.insert(
                    u64::from_be_bytes(sequence[..].try_into().expect("8 bytes")),
                    item,
                );
            }
            *head = changes.head;
            let len = part.before + new.len() as u64 + after;
            let expected: Vec<u64> = (changes.head..changes.head + len).collect();
            assert_eq!(
                rows.keys().copied().collect::<Vec<_>>(),
                expected,
                "contiguous rows"
            );
            state.insert(
                key.clone(),
                Record {
                    value: Value::List(rows.values().cloned().collect()),
                    expires_at_ms: written.expires_at_ms,
                },
            );
            return;
        }
        match (partial.contains_key(key), same, Kind::of(&written.value)) {
            (true, true, Some(kind)) => {
                let changes = changes(&loaded[key].value, &written.value);
                let mut rows: BTreeMap<Bytes, Bytes> =
                    rows_of(&base.expect("same").value).into_iter().collect();
                for element in changes.delete {
                    rows.remove(&element);
                }
                rows.extend(changes.put);
                let value = from_rows(kind, rows).expect("rows decode");
                assert_eq!(
                    len_of(&value),
                    {
                        // The length the node writes in the header, from the part alone.
                        let stored = partial[key].len;
                        let changes = super::changes(&loaded[key].value, &written.value);
                        stored + changes.added - changes.removed
                    },
                    "header length"
                );
                state.insert(
                    key.clone(),
                    Record {
                        value,
                        expires_at_ms: written.expires_at_ms,
                    },
                );
            }
            _ => {
                match &written.value {
                    Value::List(items) => lists.insert(key.clone(), sequenced(items)),
                    _ => lists.remove(key),
                };
                state.insert(key.clone(), written);
            }
        }
    }

    proptest! {
        /// A command that names its elements answers and writes the same with only those
        /// elements loaded (and the collection's true length) as with the whole collection.
        #[test]
        fn element_execution_matches_whole_execution(
            lines in prop::collection::vec(command_line(), 1..40),
        ) {
            let mut whole: BTreeMap<Bytes, Record> = BTreeMap::new();
            let mut parts: BTreeMap<Bytes, Record> = BTreeMap::new();
            let mut lists: BTreeMap<Bytes, Sequenced> = BTreeMap::new();
            for (step, line) in lines.iter().enumerate() {
                let now_ms = 1_000 + step as u64 * 7;
                let args: Vec<Bytes> = line.iter().map(|a| Bytes::from(a.clone())).collect();
                let Some(command) = parse_line(&args) else { continue };
                let expected = execute(&command, now_ms, &whole);
                let (loaded, partial) = load_part(&command, &parts);
                let got = execute_elements(&command, now_ms, &loaded, &partial);
                prop_assert_eq!(&got.reply, &expected.reply, "{:?}", line);
                for (key, written) in expected.writes {
                    match written {
                        Some(record) => whole.insert(key, record),
                        None => whole.remove(&key),
                    };
                }
                for (key, written) in got.writes {
                    store_part(&mut parts, &mut lists, &loaded, &partial, now_ms, &key, written);
                }
                // Expired records may linger on one side and not the other; live ones agree.
                let live = |state: &BTreeMap<Bytes, Record>| -> BTreeMap<Bytes, Record> {
                    state
                        .iter()
                        .filter(|(_, r)| !r.is_expired(now_ms))
                        .map(|(k, r)| (k.clone(), r.clone()))
                        .collect()
                };
                prop_assert_eq!(live(&parts), live(&whole), "after {:?}", line);
            }
        }
    }
}
