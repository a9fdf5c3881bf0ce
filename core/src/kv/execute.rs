use std::collections::BTreeMap;

use bytes::Bytes;

use super::command::parse_integer;
use super::elements::Part;
use super::{
    Command, Expiry, HASH_NOT_INTEGER, NOT_INTEGER, OVERFLOW, Record, Reply, STRING_BYTES_MAX,
    STRING_TOO_LONG, SetCondition, Value, WRONGTYPE,
};

/// The fields of a missing hash.
static NO_FIELDS: BTreeMap<Bytes, Bytes> = BTreeMap::new();

/// What applying a command produced: the reply for the client and the records to store
/// (`None` deletes the key). Writes are keyed, so a key written twice keeps its last value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub reply: Reply,
    pub writes: BTreeMap<Bytes, Option<Record>>,
}

/// A read view over the records the command named, with writes made so far layered on top, so
/// that `MSET a 1 a 2` and similar behave as if executed one step at a time.
pub(super) struct View<'a> {
    pub(super) now_ms: u64,
    stored: &'a BTreeMap<Bytes, Record>,
    /// The true lengths (and for lists the windows' places) of the collections in `stored`
    /// that were loaded in part ([`execute_elements`]).
    partial: &'a BTreeMap<Bytes, Part>,
    writes: BTreeMap<Bytes, Option<Record>>,
}

/// No collection loaded in part.
static WHOLE: BTreeMap<Bytes, Part> = BTreeMap::new();

impl View<'_> {
    /// The live record of `key`: missing and expired keys are both `None`.
    pub(super) fn get(&self, key: &Bytes) -> Option<&Record> {
        let record = match self.writes.get(key) {
            Some(written) => written.as_ref(),
            None => self.stored.get(key),
        };
        record.filter(|record| !record.is_expired(self.now_ms))
    }

    /// True when the key exists on disk but has expired: a write to it also removes it.
    pub(super) fn is_stale(&self, key: &Bytes) -> bool {
        !self.writes.contains_key(key)
            && self
                .stored
                .get(key)
                .is_some_and(|r| r.is_expired(self.now_ms))
    }

    pub(super) fn put(&mut self, key: &Bytes, record: Option<Record>) {
        self.writes.insert(key.clone(), record);
    }

    /// The fields of the hash at `key` (none when it is missing or expired); `WRONGTYPE` when the
    /// key holds another type.
    pub(super) fn hash(&self, key: &Bytes) -> Result<&BTreeMap<Bytes, Bytes>, Reply> {
        match self.get(key) {
            None => Ok(&NO_FIELDS),
            Some(Record {
                value: Value::Hash(fields),
                ..
            }) => Ok(fields),
            Some(_) => Err(Reply::error(WRONGTYPE)),
        }
    }

    /// A copy of the hash at `key` to modify, with its expiry, which field writes keep; a
    /// missing or expired key starts empty without expiry.
    pub(super) fn hash_to_modify(
        &self,
        key: &Bytes,
    ) -> Result<(BTreeMap<Bytes, Bytes>, Option<u64>), Reply> {
        let expires_at_ms = self.get(key).and_then(|record| record.expires_at_ms);
        Ok((self.hash(key)?.clone(), expires_at_ms))
    }

    /// Stores `fields` as the hash at `key`; an empty hash deletes the key, as in Redis.
    pub(super) fn put_hash(
        &mut self,
        key: &Bytes,
        fields: BTreeMap<Bytes, Bytes>,
        expires_at_ms: Option<u64>,
    ) {
        self.put_collection(key, Value::Hash(fields), expires_at_ms);
    }

    /// Stores collection `value` at `key`; one left empty deletes the key, as in Redis. Empty
    /// by its true length: a collection loaded in part holds only the elements its command
    /// named ([`View::len_after`]).
    pub(super) fn put_collection(&mut self, key: &Bytes, value: Value, expires_at_ms: Option<u64>) {
        let record = (self.len_after(key, &value) > 0).then_some(Record {
            value,
            expires_at_ms,
        });
        self.put(key, record);
    }

    /// The true length of the live collection at `key` (0 when missing).
    pub(super) fn len_of(&self, key: &Bytes) -> u64 {
        self.get(key)
            .map_or(0, |record| self.len_after(key, &record.value))
    }

    /// How many elements the collection at `key` holds once it is `value`. For a collection
    /// loaded in part that is its stored length, plus the elements `value` adds to what was
    /// loaded, less those it drops: a command given part of a collection changes only elements
    /// it named, and all of those were loaded.
    pub(super) fn len_after(&self, key: &Bytes, value: &Value) -> u64 {
        let whole = super::elements::len_of(value);
        let Some(part) = self.part_of(key, value) else {
            return whole;
        };
        if let Value::List(_) = value {
            let (before, after) = self.window(key);
            return before + whole + after;
        }
        let changes = super::elements::changes(&self.stored[key].value, value);
        (part.len + changes.added).saturating_sub(changes.removed)
    }

    /// The part loaded of the collection at `key`, when it was loaded in part and is live and
    /// of `value`'s kind: `value` is then what a command made of that part.
    fn part_of(&self, key: &Bytes, value: &Value) -> Option<Part> {
        let (part, base) = (self.partial.get(key)?, self.stored.get(key)?);
        let same = !base.is_expired(self.now_ms)
            && super::elements::Kind::of(&base.value) == super::elements::Kind::of(value);
        same.then_some(*part)
    }

    /// For the list at `key` loaded as a window: how many elements lie before and after it
    /// (a command changes only the window, so both stay as loaded). `(0, 0)` for a whole list.
    pub(super) fn window(&self, key: &Bytes) -> (u64, u64) {
        let Some(base) = self.stored.get(key) else {
            return (0, 0);
        };
        match (&base.value, self.part_of(key, &base.value)) {
            (Value::List(items), Some(part)) => {
                let after = part.len.saturating_sub(part.before + items.len() as u64);
                (part.before, after)
            }
            _ => (0, 0),
        }
    }

    /// Whether `expiry` from now lies past the largest time Redis can hold (`when > LLONG_MAX -
    /// basetime` in Redis 7.0's `expireGenericCommand` and `getExpireMillisecondsOrReply`).
    pub(super) fn out_of_range(&self, expiry: Expiry) -> bool {
        expiry.as_millis() > i64::MAX - self.now_ms.min(i64::MAX as u64) as i64
    }

    /// Absolute expiry for a relative one; `None` when it is already due (Redis deletes the key).
    pub(super) fn deadline(&self, expiry: Expiry) -> Option<u64> {
        let millis = expiry.as_millis();
        if millis <= 0 {
            return None;
        }
        Some(self.now_ms.saturating_add(millis as u64))
    }
}

/// Applies `command` at time `now_ms` (the log entry's timestamp) to the records in `stored`
/// (only the keys the command names need to be present; absent means missing).
///
/// Pure and deterministic: the same inputs give the same outcome on every replica.
///
/// [`Scope::Group`](super::Scope::Group) commands name no keys and answer an error here: the
/// node applies them with [`execute_group`](super::execute_group).
pub fn execute(command: &Command, now_ms: u64, stored: &BTreeMap<Bytes, Record>) -> Outcome {
    execute_elements(command, now_ms, stored, &WHOLE)
}

/// [`execute`] of a command that names its elements ([`Command::elements`]), where the
/// collections of `partial`'s keys hold only those elements (a list: only its window) and
/// `partial` gives their true lengths (and where a list's window starts). The outcome writes
/// such a collection as the loaded part changed, to be stored with
/// [`changes`](super::elements::changes) or
/// [`list_changes`](super::elements::list_changes) against what was loaded.
pub fn execute_elements(
    command: &Command,
    now_ms: u64,
    stored: &BTreeMap<Bytes, Record>,
    partial: &BTreeMap<Bytes, Part>,
) -> Outcome {
    debug_assert!(
        partial.is_empty() || command.elements().is_some(),
        "{} needs whole values",
        command.name()
    );
    let mut view = View {
        now_ms,
        stored,
        partial,
        writes: BTreeMap::new(),
    };
    let reply = apply(command, &mut view);
    Outcome {
        reply,
        writes: view.writes,
    }
}

/// The version `WATCH` remembers for a key: 0 when it is missing (or expired), otherwise a
/// hash of its stored record, so any change of value, type or expiry changes it. (A value
/// rewritten byte for byte with the same expiry keeps its version: Redis would count that as a
/// change; an `EXEC` that goes ahead then sees exactly the state it watched.)
pub(super) fn version(record: Option<&Record>) -> u64 {
    record.map_or(0, |record| xxhash_rust::xxh3::xxh3_64(&record.encode()) | 1)
}

/// Applies one command to `view` (a transaction applies each of its commands to the same view,
/// so later ones see earlier ones' writes).
fn apply(command: &Command, view: &mut View<'_>) -> Reply {
    let now_ms = view.now_ms;
    match command {
        Command::Get { key } => match view.get(key) {
            None => Reply::Nil,
            Some(Record {
                value: Value::Str(value),
                ..
            }) => Reply::Bulk(value.clone()),
            Some(_) => Reply::error(WRONGTYPE),
        },
        Command::MGet { keys } => Reply::Array(
            keys.iter()
                .map(|key| match view.get(key) {
                    Some(Record {
                        value: Value::Str(value),
                        ..
                    }) => Reply::Bulk(value.clone()),
                    // MGET answers nil for keys of another type instead of failing.
                    _ => Reply::Nil,
                })
                .collect(),
        ),
        Command::Exists { keys } => {
            Reply::Int(keys.iter().filter(|key| view.get(key).is_some()).count() as i64)
        }
        Command::Ttl { key, millis } => match view.get(key) {
            None => Reply::Int(-2),
            Some(Record {
                expires_at_ms: None,
                ..
            }) => Reply::Int(-1),
            Some(Record {
                expires_at_ms: Some(at),
                ..
            }) => {
                let left = at.saturating_sub(now_ms);
                // Redis rounds TTL to the nearest second.
                let left = if *millis { left } else { (left + 500) / 1000 };
                Reply::Int(i64::try_from(left).unwrap_or(i64::MAX))
            }
        },
        Command::Set {
            expiry: Some(expiry),
            ..
        } if view.out_of_range(*expiry) => Reply::error("ERR invalid expire time in 'set' command"),
        Command::Set {
            key,
            value,
            condition,
            expiry,
            keep_ttl,
        } => {
            let existing = view.get(key);
            let allowed = match condition {
                SetCondition::Always => true,
                SetCondition::IfAbsent => existing.is_none(),
                SetCondition::IfPresent => existing.is_some(),
            };
            if allowed {
                let expires_at_ms = match (expiry, keep_ttl) {
                    (Some(expiry), _) => view.deadline(*expiry),
                    (None, true) => existing.and_then(|record| record.expires_at_ms),
                    (None, false) => None,
                };
                if expiry.is_some() && expires_at_ms.is_none() {
                    // Parsing rejects non-positive expiries; this guards the state machine too.
                    Reply::error("ERR invalid expire time in 'set' command")
                } else {
                    view.put(
                        key,
                        Some(Record {
                            value: Value::Str(value.clone()),
                            expires_at_ms,
                        }),
                    );
                    Reply::Ok
                }
            } else {
                Reply::Nil
            }
        }
        Command::MSet { pairs } => {
            for (key, value) in pairs {
                view.put(key, Some(Record::string(value.clone())));
            }
            Reply::Ok
        }
        Command::Del { keys } => {
            let mut deleted = 0;
            for key in keys {
                if view.get(key).is_some() {
                    deleted += 1;
                    view.put(key, None);
                } else if view.is_stale(key) {
                    view.put(key, None);
                }
            }
            Reply::Int(deleted)
        }
        Command::IncrBy { key, delta } => incr_by(view, key, *delta),
        Command::Append { key, value } => append(view, key, value),
        Command::Type { key } => Reply::Status(
            view.get(key)
                .map_or("none", |record| record.value.type_name())
                .to_string(),
        ),
        Command::HGet { key, field } => view
            .hash(key)
            .map(|fields| bulk_or_nil(fields.get(field)))
            .unwrap_or_else(|error| error),
        Command::HMGet { key, fields: names } => view
            .hash(key)
            .map(|fields| {
                Reply::Array(
                    names
                        .iter()
                        .map(|name| bulk_or_nil(fields.get(name)))
                        .collect(),
                )
            })
            .unwrap_or_else(|error| error),
        Command::HGetAll { key } => view
            .hash(key)
            .map(|fields| {
                Reply::Array(
                    fields
                        .iter()
                        .flat_map(|(field, value)| {
                            [Reply::Bulk(field.clone()), Reply::Bulk(value.clone())]
                        })
                        .collect(),
                )
            })
            .unwrap_or_else(|error| error),
        Command::HKeys { key } => view
            .hash(key)
            .map(|fields| Reply::Array(fields.keys().cloned().map(Reply::Bulk).collect()))
            .unwrap_or_else(|error| error),
        Command::HVals { key } => view
            .hash(key)
            .map(|fields| Reply::Array(fields.values().cloned().map(Reply::Bulk).collect()))
            .unwrap_or_else(|error| error),
        Command::HLen { key } => view
            .hash(key)
            .map(|_| Reply::Int(view.len_of(key) as i64))
            .unwrap_or_else(|error| error),
        Command::HExists { key, field } => view
            .hash(key)
            .map(|fields| Reply::Int(i64::from(fields.contains_key(field))))
            .unwrap_or_else(|error| error),
        Command::HStrLen { key, field } => view
            .hash(key)
            .map(|fields| Reply::Int(fields.get(field).map_or(0, |value| value.len() as i64)))
            .unwrap_or_else(|error| error),
        Command::HSet { key, pairs } => hset(view, key, pairs).unwrap_or_else(|error| error),
        Command::HSetNx { key, field, value } => {
            hset_nx(view, key, field, value).unwrap_or_else(|error| error)
        }
        Command::HDel { key, fields } => hdel(view, key, fields).unwrap_or_else(|error| error),
        Command::HIncrBy { key, field, delta } => {
            hincr_by(view, key, field, *delta).unwrap_or_else(|error| error)
        }
        Command::ElementScan {
            key,
            kind,
            from,
            pattern,
            count,
        } => super::elements::element_scan(view, key, *kind, from, pattern, *count),
        Command::Keys { .. }
        | Command::Scan { .. }
        | Command::RandomKey { .. }
        | Command::DbSize
        | Command::FlushAll => Reply::error(format!(
            "ERR '{}' acts on a whole slot group and cannot be executed on single keys",
            command.name()
        )),
        Command::Persist { key } => match view.get(key).cloned() {
            Some(mut record) if record.expires_at_ms.is_some() => {
                record.expires_at_ms = None;
                view.put(key, Some(record));
                Reply::Int(1)
            }
            Some(_) => Reply::Int(0),
            None => {
                if view.is_stale(key) {
                    view.put(key, None);
                }
                Reply::Int(0)
            }
        },
        Command::ListOp(command) => command.execute(view),
        Command::SetOp(command) => command.execute(view),
        Command::ZSetOp(command) => command.execute(view),
        Command::StringOp(command) => command.execute(view),
        Command::KeyOp(command) => command.execute(view),
        Command::LockOp(command) => command.execute(view),
        // Its effect, advancing the group clock, is the apply loop's (the entry's stamp).
        Command::AdvanceClock => Reply::Ok,
        // Their effects (ownership, change tracking, raw records) are the apply loop's.
        Command::OwnSlots { .. }
        | Command::TrackSlots { .. }
        | Command::UntrackSlots { .. }
        | Command::Ingest { .. } => Reply::Ok,
        Command::Expire { expiry, .. } if view.out_of_range(*expiry) => {
            let name = match expiry {
                Expiry::Seconds(_) => "expire",
                Expiry::Millis(_) => "pexpire",
            };
            Reply::error(format!("ERR invalid expire time in '{name}' command"))
        }
        Command::Expire { key, expiry } => match view.get(key).cloned() {
            None => {
                if view.is_stale(key) {
                    view.put(key, None);
                }
                Reply::Int(0)
            }
            Some(mut record) => {
                match view.deadline(*expiry) {
                    Some(at) => {
                        record.expires_at_ms = Some(at);
                        view.put(key, Some(record));
                    }
                    None => view.put(key, None),
                }
                Reply::Int(1)
            }
        },
        Command::Versions { keys } => Reply::Array(
            keys.iter()
                .map(|key| Reply::Int(version(view.get(key)) as i64))
                .collect(),
        ),
        Command::Transaction { commands, watched } => {
            if watched
                .iter()
                .any(|(key, seen)| version(view.get(key)) != *seen)
            {
                return Reply::NilArray;
            }
            // Fences are judged first: one that fails runs none of the commands.
            if let Some(refused) = super::lock::fenced_off(commands, view) {
                return refused;
            }
            Reply::Array(
                commands
                    .iter()
                    .map(|command| {
                        if command.is_internal()
                            || command.scope() != super::Scope::Keys
                            || matches!(command, Command::Transaction { .. })
                        {
                            Reply::error(format!(
                                "ERR '{}' cannot run inside a transaction",
                                command.name()
                            ))
                        } else {
                            apply(command, view)
                        }
                    })
                    .collect(),
            )
        }
    }
}

fn bulk_or_nil(value: Option<&Bytes>) -> Reply {
    value.map_or(Reply::Nil, |value| Reply::Bulk(value.clone()))
}

fn hset(view: &mut View<'_>, key: &Bytes, pairs: &[(Bytes, Bytes)]) -> Result<Reply, Reply> {
    let (mut fields, expires_at_ms) = view.hash_to_modify(key)?;
    let mut added = 0;
    for (field, value) in pairs {
        if fields.insert(field.clone(), value.clone()).is_none() {
            added += 1;
        }
    }
    view.put_hash(key, fields, expires_at_ms);
    Ok(Reply::Int(added))
}

fn hset_nx(view: &mut View<'_>, key: &Bytes, field: &Bytes, value: &Bytes) -> Result<Reply, Reply> {
    let (mut fields, expires_at_ms) = view.hash_to_modify(key)?;
    if fields.contains_key(field) {
        return Ok(Reply::Int(0));
    }
    fields.insert(field.clone(), value.clone());
    view.put_hash(key, fields, expires_at_ms);
    Ok(Reply::Int(1))
}

fn hdel(view: &mut View<'_>, key: &Bytes, names: &[Bytes]) -> Result<Reply, Reply> {
    let (mut fields, expires_at_ms) = view.hash_to_modify(key)?;
    let removed = names
        .iter()
        .filter(|name| fields.remove(*name).is_some())
        .count();
    if removed > 0 {
        // Removing the last field deletes the key.
        view.put_hash(key, fields, expires_at_ms);
    } else if view.is_stale(key) {
        view.put(key, None);
    }
    Ok(Reply::Int(removed as i64))
}

fn hincr_by(view: &mut View<'_>, key: &Bytes, field: &Bytes, delta: i64) -> Result<Reply, Reply> {
    let (mut fields, expires_at_ms) = view.hash_to_modify(key)?;
    let current = match fields.get(field) {
        None => 0,
        Some(value) => parse_integer(value).ok_or_else(|| Reply::error(HASH_NOT_INTEGER))?,
    };
    let next = current
        .checked_add(delta)
        .ok_or_else(|| Reply::error(OVERFLOW))?;
    fields.insert(field.clone(), Bytes::from(next.to_string()));
    view.put_hash(key, fields, expires_at_ms);
    Ok(Reply::Int(next))
}

fn incr_by(view: &mut View<'_>, key: &Bytes, delta: i64) -> Reply {
    let (current, expires_at_ms) = match view.get(key) {
        None => (0, None),
        Some(Record {
            value: Value::Str(value),
            expires_at_ms,
        }) => match parse_integer(value) {
            Some(number) => (number, *expires_at_ms),
            None => return Reply::error(NOT_INTEGER),
        },
        Some(_) => return Reply::error(WRONGTYPE),
    };
    let Some(next) = current.checked_add(delta) else {
        return Reply::error(OVERFLOW);
    };
    view.put(
        key,
        Some(Record {
            value: Value::Str(Bytes::from(next.to_string())),
            expires_at_ms,
        }),
    );
    Reply::Int(next)
}

/// `APPEND`: the TTL of an existing string is kept, as Redis does.
fn append(view: &mut View<'_>, key: &Bytes, suffix: &Bytes) -> Reply {
    let (current, expires_at_ms) = match view.get(key) {
        None => (Bytes::new(), None),
        Some(Record {
            value: Value::Str(value),
            expires_at_ms,
        }) => (value.clone(), *expires_at_ms),
        Some(_) => return Reply::error(WRONGTYPE),
    };
    if current.len() + suffix.len() > STRING_BYTES_MAX {
        // Checked before anything is copied, as Redis's `checkStringLength` does.
        return Reply::error(STRING_TOO_LONG);
    }
    let mut joined = Vec::with_capacity(current.len() + suffix.len());
    joined.extend_from_slice(&current);
    joined.extend_from_slice(suffix);
    let length = joined.len() as i64;
    view.put(
        key,
        Some(Record {
            value: Value::Str(Bytes::from(joined)),
            expires_at_ms,
        }),
    );
    Reply::Int(length)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn append_past_the_string_limit_is_refused_and_changes_nothing() {
        // A string one byte short of 512 MiB (zeroed pages: nothing is touched).
        let key = b("big");
        let mut state = BTreeMap::new();
        let near_full = Bytes::from(vec![0u8; STRING_BYTES_MAX - 1]);
        state.insert(
            key.clone(),
            Record {
                value: Value::Str(near_full),
                expires_at_ms: None,
            },
        );
        let over = execute(
            &Command::Append {
                key: key.clone(),
                value: b("ab"),
            },
            0,
            &state,
        );
        assert_eq!(over.reply, Reply::error(STRING_TOO_LONG));
        assert!(over.writes.is_empty());
        // Exactly at the limit is allowed.
        let at = execute(&Command::Append { key, value: b("a") }, 0, &state);
        assert_eq!(at.reply, Reply::Int(STRING_BYTES_MAX as i64));
    }

    #[test]
    fn append_concatenates_keeps_ttl_and_refuses_hashes() {
        let key = b("log");
        let (state, replies) = run(&[
            (
                0,
                Command::Append {
                    key: key.clone(),
                    value: b("a,"),
                },
            ),
            (
                0,
                Command::Append {
                    key: key.clone(),
                    value: b("b,"),
                },
            ),
            (0, Command::Get { key: key.clone() }),
        ]);
        assert_eq!(
            replies,
            vec![Reply::Int(2), Reply::Int(4), Reply::Bulk(b("a,b,"))]
        );
        assert!(state.contains_key(&key));
        let (_, replies) = run(&[
            (
                0,
                Command::Set {
                    key: key.clone(),
                    value: b("x"),
                    condition: SetCondition::Always,
                    expiry: Some(Expiry::Millis(5_000)),
                    keep_ttl: false,
                },
            ),
            (
                1_000,
                Command::Append {
                    key: key.clone(),
                    value: b("y"),
                },
            ),
            (
                1_000,
                Command::Ttl {
                    key: key.clone(),
                    millis: true,
                },
            ),
            (
                0,
                Command::HSet {
                    key: b("h"),
                    pairs: vec![(b("f"), b("v"))],
                },
            ),
            (
                0,
                Command::Append {
                    key: b("h"),
                    value: b("z"),
                },
            ),
        ]);
        assert_eq!(replies[1], Reply::Int(2));
        assert_eq!(replies[2], Reply::Int(4_000), "APPEND keeps the TTL");
        assert!(matches!(&replies[4], Reply::Error(e) if e.starts_with("WRONGTYPE")));
    }

    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// Runs commands in order against an in-memory map, the way a replica applies a log.
    fn run(commands: &[(u64, Command)]) -> (BTreeMap<Bytes, Record>, Vec<Reply>) {
        let mut state = BTreeMap::new();
        let mut replies = Vec::new();
        for (now_ms, command) in commands {
            let outcome = execute(command, *now_ms, &state);
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
            replies.push(outcome.reply);
        }
        (state, replies)
    }

    fn parse(line: &str) -> Command {
        let args: Vec<Bytes> = line.split_whitespace().map(b).collect();
        Command::parse(&args).expect("valid command")
    }

    #[test]
    fn expiries_past_the_largest_time_are_refused_when_applied() {
        let now = 1_700_000_000_000;
        check(
            &[
                (now, "SET k v"),
                // `now + ms` would overflow: Redis's `when > LLONG_MAX - basetime`.
                (now, "SET k v PX 9223372036854775807"),
                (now, "PEXPIRE k 9223372036854775807"),
                (now, "EXPIRE k 9223372036854775"),
                (now, "GET k"),
                // Far, but representable: taken.
                (now, "PEXPIRE k 9000000000000000000"),
                (now, "GET k"),
                // Missing keys get the same error, before the lookup, as in Redis.
                (now, "PEXPIRE missing 9223372036854775807"),
            ],
            &[
                Reply::Ok,
                Reply::error("ERR invalid expire time in 'set' command"),
                Reply::error("ERR invalid expire time in 'pexpire' command"),
                Reply::error("ERR invalid expire time in 'expire' command"),
                Reply::Bulk(b("v")),
                Reply::Int(1),
                Reply::Bulk(b("v")),
                Reply::error("ERR invalid expire time in 'pexpire' command"),
            ],
        );
    }

    fn check(script: &[(u64, &str)], expected: &[Reply]) {
        let commands: Vec<(u64, Command)> =
            script.iter().map(|(at, line)| (*at, parse(line))).collect();
        let (_, replies) = run(&commands);
        assert_eq!(replies, expected, "script {script:?}");
    }

    #[test]
    fn set_get_with_conditions() {
        check(
            &[
                (0, "get k"),
                (0, "set k v xx"),
                (0, "set k v nx"),
                (0, "set k w nx"),
                (0, "get k"),
                (0, "set k w xx"),
            ],
            &[
                Reply::Nil,
                Reply::Nil,
                Reply::Ok,
                Reply::Nil,
                Reply::Bulk(b("v")),
                Reply::Ok,
            ],
        );
    }

    #[test]
    fn expiry_follows_entry_time() {
        check(
            &[
                (1000, "set k v px 100"),
                (1050, "pttl k"),
                (1050, "ttl k"),
                (1100, "get k"),
                (1100, "ttl k"),
                (1100, "set k v nx"),
                (1200, "ttl k"),
                (1200, "expire k 10"),
                (1300, "pttl k"),
                (1300, "expire k -1"),
                (1300, "exists k"),
            ],
            &[
                Reply::Ok,
                Reply::Int(50),
                Reply::Int(0),
                Reply::Nil,
                Reply::Int(-2),
                Reply::Ok,
                Reply::Int(-1),
                Reply::Int(1),
                Reply::Int(9900),
                Reply::Int(1),
                Reply::Int(0),
            ],
        );
    }

    #[test]
    fn persist_removes_an_expiry_of_a_live_key_only() {
        check(
            &[
                (1000, "persist k"),
                (1000, "set k v px 100"),
                (1050, "persist k"),
                (1050, "pttl k"),
                (5000, "get k"),
                (5000, "persist k"),
                (5000, "set k w px 100"),
                (5100, "persist k"),
                (5100, "get k"),
            ],
            &[
                Reply::Int(0),
                Reply::Ok,
                Reply::Int(1),
                Reply::Int(-1),
                Reply::Bulk(b("v")),
                Reply::Int(0),
                Reply::Ok,
                Reply::Int(0),
                Reply::Nil,
            ],
        );
        let (_, replies) = run(&[(7, Command::AdvanceClock)]);
        assert_eq!(replies, vec![Reply::Ok]);
        assert!(Command::AdvanceClock.is_internal() && Command::AdvanceClock.is_write());
        assert!(Command::parse(&[b("advance-clock")]).is_err());
    }

    #[test]
    fn counters_and_their_errors() {
        check(
            &[
                (0, "incr n"),
                (0, "incrby n 41"),
                (0, "decr n"),
                (0, "set s abc"),
                (0, "incr s"),
                (0, "set big 9223372036854775807"),
                (0, "incr big"),
                (0, "get n"),
            ],
            &[
                Reply::Int(1),
                Reply::Int(42),
                Reply::Int(41),
                Reply::Ok,
                Reply::error(NOT_INTEGER),
                Reply::Ok,
                Reply::error(OVERFLOW),
                Reply::Bulk(b("41")),
            ],
        );
    }

    #[test]
    fn incr_keeps_ttl_and_multi_key_commands() {
        check(
            &[
                (0, "set n 1 ex 10"),
                (0, "incr n"),
                (0, "ttl n"),
                (0, "mset a 1 b 2 a 3"),
                (0, "mget a b c"),
                (0, "del a c b"),
                (0, "exists a b"),
            ],
            &[
                Reply::Ok,
                Reply::Int(2),
                Reply::Int(10),
                Reply::Ok,
                Reply::Array(vec![Reply::Bulk(b("3")), Reply::Bulk(b("2")), Reply::Nil]),
                Reply::Int(2),
                Reply::Int(0),
            ],
        );
    }

    #[test]
    fn wrong_type_is_reported() {
        let mut stored = BTreeMap::new();
        stored.insert(
            b("h"),
            Record {
                value: Value::Hash(BTreeMap::new()),
                expires_at_ms: None,
            },
        );
        assert_eq!(
            execute(&parse("get h"), 0, &stored).reply,
            Reply::error(WRONGTYPE)
        );
        assert_eq!(
            execute(&parse("incr h"), 0, &stored).reply,
            Reply::error(WRONGTYPE)
        );
        assert_eq!(
            execute(&parse("mget h"), 0, &stored).reply,
            Reply::Array(vec![Reply::Nil])
        );
        assert!(
            execute(&parse("incr h"), 0, &stored).writes.is_empty(),
            "a failed write changes nothing"
        );
    }

    #[test]
    fn expired_keys_are_removed_by_writes_that_touch_them() {
        let (state, _) = run(&[(0, parse("set k v px 10")), (20, parse("del k"))]);
        assert!(
            state.is_empty(),
            "DEL of an expired key must remove it from storage"
        );
    }

    #[test]
    fn records_round_trip_through_their_encoding() {
        let record = Record {
            value: Value::Str(b("value")),
            expires_at_ms: Some(42),
        };
        assert_eq!(Record::decode(&record.encode()), Ok(record));
        assert!(Record::decode(&[]).is_err());
        assert!(Record::decode(&[99, 1, 2]).is_err());
    }

    fn bulks(items: &[&str]) -> Reply {
        Reply::Array(items.iter().map(|item| Reply::Bulk(b(item))).collect())
    }

    fn status(text: &str) -> Reply {
        Reply::Status(text.to_string())
    }

    #[test]
    fn hash_commands() {
        check(
            &[
                (0, "hset h b 2 a 1"),
                (0, "hset h a 10 c 3 c 30"),
                (0, "hget h a"),
                (0, "hget h zz"),
                (0, "hget missing a"),
                (0, "hmget h a zz c"),
                (0, "hmget missing a b"),
                (0, "hgetall h"),
                (0, "hkeys h"),
                (0, "hvals h"),
                (0, "hlen h"),
                (0, "hexists h b"),
                (0, "hexists h zz"),
                (0, "hstrlen h a"),
                (0, "hstrlen h zz"),
                (0, "hsetnx h a 99"),
                (0, "hsetnx h d 4"),
                (0, "hdel h a zz a"),
                (0, "hgetall h"),
            ],
            &[
                Reply::Int(2),
                Reply::Int(1),
                Reply::Bulk(b("10")),
                Reply::Nil,
                Reply::Nil,
                Reply::Array(vec![Reply::Bulk(b("10")), Reply::Nil, Reply::Bulk(b("30"))]),
                Reply::Array(vec![Reply::Nil, Reply::Nil]),
                bulks(&["a", "10", "b", "2", "c", "30"]),
                bulks(&["a", "b", "c"]),
                bulks(&["10", "2", "30"]),
                Reply::Int(3),
                Reply::Int(1),
                Reply::Int(0),
                Reply::Int(2),
                Reply::Int(0),
                Reply::Int(0),
                Reply::Int(1),
                Reply::Int(1),
                bulks(&["b", "2", "c", "30", "d", "4"]),
            ],
        );
    }

    #[test]
    fn missing_hashes_read_as_empty() {
        check(
            &[
                (0, "hgetall nope"),
                (0, "hkeys nope"),
                (0, "hvals nope"),
                (0, "hlen nope"),
                (0, "hexists nope f"),
                (0, "hstrlen nope f"),
                (0, "hdel nope f"),
                (0, "exists nope"),
            ],
            &[
                Reply::Array(vec![]),
                Reply::Array(vec![]),
                Reply::Array(vec![]),
                Reply::Int(0),
                Reply::Int(0),
                Reply::Int(0),
                Reply::Int(0),
                Reply::Int(0),
            ],
        );
    }

    #[test]
    fn hincrby_and_its_errors() {
        check(
            &[
                (0, "hincrby h n 5"),
                (0, "hincrby h n -8"),
                (0, "hget h n"),
                (0, "hset h s abc f 1.5 plus +1 zero 007"),
                (0, "hincrby h s 1"),
                (0, "hincrby h f 1"),
                (0, "hincrby h plus 1"),
                (0, "hincrby h zero 1"),
                (
                    0,
                    "hset h big 9223372036854775807 small -9223372036854775808",
                ),
                (0, "hincrby h big 1"),
                (0, "hincrby h small -1"),
                (0, "hincrby h big -9223372036854775808"),
                (0, "hget h big"),
                (0, "hget h s"),
            ],
            &[
                Reply::Int(5),
                Reply::Int(-3),
                Reply::Bulk(b("-3")),
                Reply::Int(4),
                Reply::error(HASH_NOT_INTEGER),
                Reply::error(HASH_NOT_INTEGER),
                Reply::error(HASH_NOT_INTEGER),
                Reply::error(HASH_NOT_INTEGER),
                Reply::Int(2),
                Reply::error(OVERFLOW),
                Reply::error(OVERFLOW),
                Reply::Int(-1),
                Reply::Bulk(b("-1")),
                Reply::Bulk(b("abc")),
            ],
        );
        let (_, replies) = run(&[
            (0, parse("hset h f 9223372036854775807")),
            (0, parse("hincrby h f 1")),
        ]);
        let mut stored = BTreeMap::new();
        stored.insert(
            b("h"),
            Record {
                value: Value::Hash(BTreeMap::from([(b("f"), b("x"))])),
                expires_at_ms: None,
            },
        );
        assert_eq!(replies[1], Reply::error(OVERFLOW));
        assert!(
            execute(&parse("hincrby h f 1"), 0, &stored)
                .writes
                .is_empty(),
            "a failed HINCRBY changes nothing"
        );
    }

    #[test]
    fn deleting_the_last_field_deletes_the_key() {
        let (state, replies) = run(&[
            (0, parse("hset h a 1 b 2")),
            (0, parse("hdel h a")),
            (0, parse("hdel h b a")),
            (0, parse("exists h")),
            (0, parse("type h")),
            (0, parse("hlen h")),
        ]);
        assert_eq!(
            replies,
            vec![
                Reply::Int(2),
                Reply::Int(1),
                Reply::Int(1),
                Reply::Int(0),
                status("none"),
                Reply::Int(0),
            ]
        );
        assert!(
            state.is_empty(),
            "the emptied hash must be removed: {state:?}"
        );
    }

    #[test]
    fn field_writes_keep_the_ttl() {
        check(
            &[
                (1000, "hset h a 1"),
                (1000, "expire h 10"),
                (2000, "hset h b 2"),
                (2000, "pttl h"),
                (3000, "hincrby h a 1"),
                (3000, "pttl h"),
                (4000, "hsetnx h c 3"),
                (4000, "pttl h"),
                (5000, "hdel h a"),
                (5000, "pttl h"),
                (6000, "hdel h zz"),
                (6000, "pttl h"),
                (11_000, "hgetall h"),
                (11_000, "type h"),
                // A field write to an expired hash starts a new one, without the old TTL.
                (11_000, "hset h z 26"),
                (11_000, "hgetall h"),
                (11_000, "ttl h"),
            ],
            &[
                Reply::Int(1),
                Reply::Int(1),
                Reply::Int(1),
                Reply::Int(9000),
                Reply::Int(2),
                Reply::Int(8000),
                Reply::Int(1),
                Reply::Int(7000),
                Reply::Int(1),
                Reply::Int(6000),
                Reply::Int(0),
                Reply::Int(5000),
                Reply::Array(vec![]),
                status("none"),
                Reply::Int(1),
                bulks(&["z", "26"]),
                Reply::Int(-1),
            ],
        );
    }

    #[test]
    fn hdel_on_an_expired_hash_removes_it() {
        let (state, replies) = run(&[
            (0, parse("hset h a 1")),
            (0, parse("pexpire h 10")),
            (20, parse("hdel h a")),
        ]);
        assert_eq!(replies[2], Reply::Int(0));
        assert!(state.is_empty(), "{state:?}");
    }

    #[test]
    fn type_names_the_value_kind() {
        check(
            &[
                (0, "type k"),
                (0, "set s v"),
                (0, "hset h f v"),
                (0, "type s"),
                (0, "type h"),
                (0, "set h v"),
                (0, "type h"),
            ],
            &[
                status("none"),
                Reply::Ok,
                Reply::Int(1),
                status("string"),
                status("hash"),
                Reply::Ok,
                status("string"),
            ],
        );
    }

    #[test]
    fn hash_commands_on_a_string_are_wrongtype() {
        let mut stored = BTreeMap::new();
        stored.insert(b("s"), Record::string("v"));
        for line in [
            "hset s f v",
            "hsetnx s f v",
            "hget s f",
            "hmget s f g",
            "hdel s f",
            "hgetall s",
            "hkeys s",
            "hvals s",
            "hlen s",
            "hexists s f",
            "hstrlen s f",
            "hincrby s f 1",
        ] {
            let outcome = execute(&parse(line), 0, &stored);
            assert_eq!(outcome.reply, Reply::error(WRONGTYPE), "{line}");
            assert!(outcome.writes.is_empty(), "{line} wrote");
        }
        // An expired string is no longer there to conflict with.
        stored.insert(
            b("s"),
            Record {
                value: Value::Str(b("v")),
                expires_at_ms: Some(5),
            },
        );
        assert_eq!(
            execute(&parse("hset s f v"), 5, &stored).reply,
            Reply::Int(1)
        );
    }

    #[test]
    fn string_commands_on_a_hash() {
        check(
            &[
                (0, "hset h f v"),
                (0, "get h"),
                (0, "incr h"),
                (0, "incrby h 5"),
                (0, "mget h"),
                (0, "exists h"),
                (0, "set h v nx"),
                (0, "hget h f"),
                (0, "expire h 10"),
                (0, "ttl h"),
                // SET replaces a value of any type, as in Redis.
                (0, "set h plain"),
                (0, "get h"),
                (0, "hget h f"),
            ],
            &[
                Reply::Int(1),
                Reply::error(WRONGTYPE),
                Reply::error(WRONGTYPE),
                Reply::error(WRONGTYPE),
                Reply::Array(vec![Reply::Nil]),
                Reply::Int(1),
                Reply::Nil,
                Reply::Bulk(b("v")),
                Reply::Int(1),
                Reply::Int(10),
                Reply::Ok,
                Reply::Bulk(b("plain")),
                Reply::error(WRONGTYPE),
            ],
        );
    }

    #[test]
    fn incr_parses_stored_values_strictly() {
        check(
            &[
                (0, "set n +1"),
                (0, "incr n"),
                (0, "set n 01"),
                (0, "incr n"),
                (0, "set n -0"),
                (0, "incr n"),
            ],
            &[
                Reply::Ok,
                Reply::error(NOT_INTEGER),
                Reply::Ok,
                Reply::error(NOT_INTEGER),
                Reply::Ok,
                Reply::error(NOT_INTEGER),
            ],
        );
    }

    #[test]
    fn group_scope_commands_are_refused_per_key() {
        for line in ["keys *", "dbsize", "flushall"] {
            let command = parse(line);
            let outcome = execute(&command, 0, &BTreeMap::new());
            let Reply::Error(text) = &outcome.reply else {
                panic!("{line} answered {:?}", outcome.reply);
            };
            assert!(
                text.starts_with("ERR ") && text.contains(command.name()),
                "{text}"
            );
            assert!(outcome.writes.is_empty());
        }
    }

    /// What the model of [`matches_a_typed_model`] holds for a key.
    #[derive(Debug, Clone)]
    enum Held {
        Int(i64),
        Hash(BTreeMap<Bytes, i64>),
    }

    /// Applies one operation to the model and returns the reply Redis would give.
    fn model_step(
        model: &mut BTreeMap<Bytes, Held>,
        kind: u8,
        key: &Bytes,
        field: &Bytes,
        amount: i64,
    ) -> Reply {
        let wrongtype = Reply::error(WRONGTYPE);
        match (kind, model.get_mut(key)) {
            // SET k amount
            (0, _) => {
                model.insert(key.clone(), Held::Int(amount));
                Reply::Ok
            }
            // DEL k
            (1, held) => {
                let existed = held.is_some();
                model.remove(key);
                Reply::Int(i64::from(existed))
            }
            // INCRBY k amount
            (2, None) => {
                model.insert(key.clone(), Held::Int(amount));
                Reply::Int(amount)
            }
            (2, Some(Held::Int(n))) => {
                *n += amount;
                Reply::Int(*n)
            }
            // HSET k f amount / HSETNX k f amount / HINCRBY k f amount
            (3 | 5 | 6, None) => {
                model.insert(
                    key.clone(),
                    Held::Hash(BTreeMap::from([(field.clone(), amount)])),
                );
                Reply::Int(if kind == 5 { amount } else { 1 })
            }
            (3, Some(Held::Hash(fields))) => {
                Reply::Int(i64::from(fields.insert(field.clone(), amount).is_none()))
            }
            (5, Some(Held::Hash(fields))) => {
                let n = fields.entry(field.clone()).or_insert(0);
                *n += amount;
                Reply::Int(*n)
            }
            (6, Some(Held::Hash(fields))) => {
                let added = !fields.contains_key(field);
                fields.entry(field.clone()).or_insert(amount);
                Reply::Int(i64::from(added))
            }
            // HDEL k f
            (4, None) => Reply::Int(0),
            (4, Some(Held::Hash(fields))) => {
                let removed = fields.remove(field).is_some();
                if fields.is_empty() {
                    model.remove(key);
                }
                Reply::Int(i64::from(removed))
            }
            (2, Some(Held::Hash(_))) | (3..=6, Some(Held::Int(_))) => wrongtype,
            _ => unreachable!("kind {kind}"),
        }
    }

    proptest! {
        /// Strings and hashes on a few keys (no expiry): every reply, and the full contents and
        /// type of the key afterwards, match a plain typed model.
        #[test]
        fn matches_a_typed_model(
            ops in proptest::collection::vec((0u8..7, 0u8..3, 0u8..3, -5i64..5), 1..80)
        ) {
            let mut model: BTreeMap<Bytes, Held> = BTreeMap::new();
            let mut state: BTreeMap<Bytes, Record> = BTreeMap::new();
            for (kind, key, field, amount) in ops {
                let key = Bytes::from(format!("k{key}"));
                let field = Bytes::from(format!("f{field}"));
                let value = Bytes::from(amount.to_string());
                let command = match kind {
                    0 => Command::Set { key: key.clone(), value, condition: SetCondition::Always,
                        expiry: None, keep_ttl: false },
                    1 => Command::Del { keys: vec![key.clone()] },
                    2 => Command::IncrBy { key: key.clone(), delta: amount },
                    3 => Command::HSet { key: key.clone(), pairs: vec![(field.clone(), value)] },
                    4 => Command::HDel { key: key.clone(), fields: vec![field.clone()] },
                    5 => Command::HIncrBy { key: key.clone(), field: field.clone(), delta: amount },
                    _ => Command::HSetNx { key: key.clone(), field: field.clone(), value },
                };
                let expected = model_step(&mut model, kind, &key, &field, amount);
                let outcome = execute(&command, 0, &state);
                prop_assert_eq!(&outcome.reply, &expected, "{:?}", command);
                if outcome.reply.is_error() {
                    prop_assert!(outcome.writes.is_empty());
                }
                for (k, record) in outcome.writes {
                    match record { Some(r) => state.insert(k, r), None => state.remove(&k) };
                }
                let read = |command: Command| execute(&command, 0, &state).reply;
                let (kind_name, get, getall) = match model.get(&key) {
                    None => ("none", Reply::Nil, Reply::Array(vec![])),
                    Some(Held::Int(n)) => ("string", Reply::Bulk(Bytes::from(n.to_string())),
                        Reply::error(WRONGTYPE)),
                    Some(Held::Hash(fields)) => ("hash", Reply::error(WRONGTYPE), Reply::Array(
                        fields.iter().flat_map(|(f, n)| [Reply::Bulk(f.clone()),
                            Reply::Bulk(Bytes::from(n.to_string()))]).collect())),
                };
                prop_assert_eq!(read(Command::Type { key: key.clone() }), status(kind_name));
                prop_assert_eq!(read(Command::Get { key: key.clone() }), get);
                prop_assert_eq!(read(Command::HGetAll { key: key.clone() }), getall);
            }
            prop_assert_eq!(state.len(), model.len(), "no empty hashes or strays stored");
        }
    }

    proptest! {
        /// A register model: after any sequence of SET/DEL/INCRBY on a few keys (no expiry),
        /// GET returns what a plain map would hold.
        #[test]
        fn matches_a_plain_map_model(ops in proptest::collection::vec((0u8..3, 0u8..4, -5i64..5), 1..60)) {
            let mut model: BTreeMap<Bytes, i64> = BTreeMap::new();
            let mut state: BTreeMap<Bytes, Record> = BTreeMap::new();
            for (kind, key, amount) in ops {
                let key = Bytes::from(format!("k{key}"));
                let command = match kind {
                    0 => Command::Set { key: key.clone(), value: Bytes::from(amount.to_string()),
                        condition: SetCondition::Always, expiry: None, keep_ttl: false },
                    1 => Command::Del { keys: vec![key.clone()] },
                    _ => Command::IncrBy { key: key.clone(), delta: amount },
                };
                match kind {
                    0 => { model.insert(key.clone(), amount); }
                    1 => { model.remove(&key); }
                    _ => { *model.entry(key.clone()).or_insert(0) += amount; }
                }
                let outcome = execute(&command, 0, &state);
                for (k, record) in outcome.writes {
                    match record { Some(r) => state.insert(k, r), None => state.remove(&k) };
                }
                let got = execute(&Command::Get { key: key.clone() }, 0, &state).reply;
                let expected = model.get(&key).map_or(Reply::Nil, |v| Reply::Bulk(Bytes::from(v.to_string())));
                prop_assert_eq!(got, expected);
            }
        }
    }
}
