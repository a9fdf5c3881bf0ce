use std::collections::BTreeMap;

use bytes::Bytes;

use super::{
    Command, Expiry, NOT_INTEGER, OVERFLOW, Record, Reply, SetCondition, Value, WRONGTYPE,
};

/// What applying a command produced: the reply for the client and the records to store
/// (`None` deletes the key). Writes are keyed, so a key written twice keeps its last value.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub reply: Reply,
    pub writes: BTreeMap<Bytes, Option<Record>>,
}

/// A read view over the records the command named, with writes made so far layered on top, so
/// that `MSET a 1 a 2` and similar behave as if executed one step at a time.
struct View<'a> {
    now_ms: u64,
    stored: &'a BTreeMap<Bytes, Record>,
    writes: BTreeMap<Bytes, Option<Record>>,
}

impl View<'_> {
    /// The live record of `key`: missing and expired keys are both `None`.
    fn get(&self, key: &Bytes) -> Option<&Record> {
        let record = match self.writes.get(key) {
            Some(written) => written.as_ref(),
            None => self.stored.get(key),
        };
        record.filter(|record| !record.is_expired(self.now_ms))
    }

    /// True when the key exists on disk but has expired: a write to it also removes it.
    fn is_stale(&self, key: &Bytes) -> bool {
        !self.writes.contains_key(key)
            && self
                .stored
                .get(key)
                .is_some_and(|r| r.is_expired(self.now_ms))
    }

    fn put(&mut self, key: &Bytes, record: Option<Record>) {
        self.writes.insert(key.clone(), record);
    }

    /// Absolute expiry for a relative one; `None` when it is already due (Redis deletes the key).
    fn deadline(&self, expiry: Expiry) -> Option<u64> {
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
pub fn execute(command: &Command, now_ms: u64, stored: &BTreeMap<Bytes, Record>) -> Outcome {
    let mut view = View {
        now_ms,
        stored,
        writes: BTreeMap::new(),
    };
    let reply = match command {
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
        Command::IncrBy { key, delta } => incr_by(&mut view, key, *delta),
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
    };
    Outcome {
        reply,
        writes: view.writes,
    }
}

fn incr_by(view: &mut View<'_>, key: &Bytes, delta: i64) -> Reply {
    let (current, expires_at_ms) = match view.get(key) {
        None => (0, None),
        Some(Record {
            value: Value::Str(value),
            expires_at_ms,
        }) => {
            match std::str::from_utf8(value)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
            {
                Some(number) => (number, *expires_at_ms),
                None => return Reply::error(NOT_INTEGER),
            }
        }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
