//! Collections element by element: what a storage node needs to keep hashes, sets and sorted
//! sets as one row per element plus a header, and to execute the commands that name their
//! elements against only those rows.
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
//! - [`rows_of`] and [`from_rows`] convert a whole collection to rows and back (snapshots and
//!   slot migration carry whole records).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::zset::{Score, ZSet};
use super::{Command, KeyCommand, RecordError, SetCommand, Value, ZSetCommand};

/// A type of value kept element by element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Hash,
    Set,
    ZSet,
}

impl Kind {
    /// The kind of `value`; `None` for the types kept whole (strings, lists).
    pub fn of(value: &Value) -> Option<Kind> {
        match value {
            Value::Hash(_) => Some(Kind::Hash),
            Value::Set(_) => Some(Kind::Set),
            Value::ZSet(_) => Some(Kind::ZSet),
            Value::Str(_) | Value::List(_) => None,
        }
    }

    /// An empty value of this kind: what a key-level fold (`KEYS … TYPE`, `DBSIZE`) is given
    /// in place of a collection it does not need to read.
    pub fn empty(self) -> Value {
        match self {
            Kind::Hash => Value::Hash(BTreeMap::new()),
            Kind::Set => Value::Set(BTreeSet::new()),
            Kind::ZSet => Value::ZSet(ZSet::default()),
        }
    }
}

/// A score's row value: its IEEE-754 bits, big-endian.
fn score_row(score: Score) -> Bytes {
    Bytes::copy_from_slice(&score.get().to_bits().to_be_bytes())
}

/// The elements of a collection as rows `(element, row value)` in element order: a hash's
/// fields with their values, a set's members with empty values, a sorted set's members with
/// their scores. Empty for the types kept whole.
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
        Value::Str(_) | Value::List(_) => Vec::new(),
    }
}

/// A collection of `kind` from its rows (all of them, or the ones a command named).
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

/// [`Changes`] from `old` to `new`, by a merge of their rows in element order.
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
        Value::Str(_) | Value::List(_) => 0,
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
    pub fn elements(&self) -> Option<Vec<(&Bytes, Vec<&Bytes>)>> {
        type Access<'a> = Option<Vec<(&'a Bytes, Vec<&'a Bytes>)>>;
        fn one<'a>(key: &'a Bytes, element: &'a Bytes) -> Access<'a> {
            Some(vec![(key, vec![element])])
        }
        fn named<'a>(key: &'a Bytes, elements: Vec<&'a Bytes>) -> Access<'a> {
            Some(vec![(key, elements)])
        }
        fn headers<'a>(keys: Vec<&'a Bytes>) -> Access<'a> {
            Some(keys.into_iter().map(|key| (key, Vec::new())).collect())
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
            Command::KeyOp(command) => match command {
                KeyCommand::Expire { key, .. }
                | KeyCommand::ExpireTime { key, .. }
                | KeyCommand::RefCount { key }
                | KeyCommand::Encoding { key } => headers(vec![key]),
                KeyCommand::Touch { keys } => headers(keys.iter().collect()),
                _ => None,
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

    /// One command of the proptest's vocabulary, as a client would type it.
    fn command_line() -> impl Strategy<Value = Vec<String>> {
        let key = prop::sample::select(vec!["h", "s", "z"]);
        let element = prop::sample::select(vec!["a", "b", "c", "d", "e"]);
        let value = prop::sample::select(vec!["1", "-7", "x", "2.5", ""]);
        (
            0..31u8,
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
                    _ => vec!["DEL".into(), key.clone(), "s".into(), "z".into()],
                }
            })
    }

    /// What a node loads for `command` from the whole state: the named elements only, with the
    /// true lengths, when the command names its elements and the key holds a collection.
    fn load_part(
        command: &Command,
        state: &BTreeMap<Bytes, Record>,
    ) -> (BTreeMap<Bytes, Record>, BTreeMap<Bytes, u64>) {
        let mut stored = state.clone();
        let mut partial = BTreeMap::new();
        for (key, elements) in command.elements().unwrap_or_default() {
            let Some(record) = state.get(key) else {
                continue;
            };
            let Some(kind) = Kind::of(&record.value) else {
                continue;
            };
            let rows: Vec<(Bytes, Bytes)> = rows_of(&record.value)
                .into_iter()
                .filter(|(element, _)| elements.contains(&element))
                .collect();
            let value = from_rows(kind, rows).expect("rows decode");
            stored.insert(
                key.clone(),
                Record {
                    value,
                    expires_at_ms: record.expires_at_ms,
                },
            );
            partial.insert(key.clone(), len_of(&record.value));
        }
        (stored, partial)
    }

    /// Stores `written` as a node does: against the part loaded when the key was loaded in
    /// part and is still the same live collection, as a whole value otherwise.
    fn store_part(
        state: &mut BTreeMap<Bytes, Record>,
        loaded: &BTreeMap<Bytes, Record>,
        partial: &BTreeMap<Bytes, u64>,
        now_ms: u64,
        key: &Bytes,
        written: Option<Record>,
    ) {
        let Some(written) = written else {
            state.remove(key);
            return;
        };
        let base = state.get(key).filter(|base| !base.is_expired(now_ms));
        let same = base.is_some_and(|base| Kind::of(&base.value) == Kind::of(&written.value));
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
                        let stored = partial[key];
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
            for (step, line) in lines.iter().enumerate() {
                let now_ms = 1_000 + step as u64 * 7;
                let args: Vec<Bytes> = line.iter().map(|a| Bytes::from(a.clone())).collect();
                let Ok(command) = Command::parse(&args) else { continue };
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
                    store_part(&mut parts, &loaded, &partial, now_ms, &key, written);
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
