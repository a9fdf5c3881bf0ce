use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Command, Glob, Outcome, Record, Reply, Scope};

/// Applies a [`Scope::Group`] command (`KEYS`, `DBSIZE`, `FLUSHALL`) at `now_ms` to every record
/// of a slot group, given in key order. Pure, like [`super::execute`]:
///
/// - `KEYS pattern`: the live keys matching the pattern ([`super::glob_match`]), in the order
///   given;
/// - `DBSIZE`: the number of live keys (expired records awaiting removal are not counted);
/// - `FLUSHALL`: `OK`, and a delete for every record, expired ones included.
///
/// Any other command answers an error and changes nothing.
pub fn execute_group<'a>(
    command: &Command,
    now_ms: u64,
    records: impl IntoIterator<Item = (&'a Bytes, &'a Record)>,
) -> Outcome {
    let live = |(_, record): &(&Bytes, &Record)| !record.is_expired(now_ms);
    let mut writes = BTreeMap::new();
    let reply = match command {
        Command::Keys { pattern } => {
            let glob = Glob::new(pattern);
            Reply::Array(
                records
                    .into_iter()
                    .filter(live)
                    .filter(|(key, _)| glob.matches(key))
                    .map(|(key, _)| Reply::Bulk(key.clone()))
                    .collect(),
            )
        }
        Command::DbSize => Reply::Int(records.into_iter().filter(live).count() as i64),
        Command::FlushAll => {
            writes = records
                .into_iter()
                .map(|(key, _)| (key.clone(), None))
                .collect();
            Reply::Ok
        }
        other => {
            debug_assert_eq!(other.scope(), Scope::Keys);
            Reply::error(format!(
                "ERR '{}' acts on the keys it names, not on a whole slot group",
                other.name()
            ))
        }
    };
    Outcome { reply, writes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Value, execute};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn state() -> BTreeMap<Bytes, Record> {
        let mut state = BTreeMap::new();
        state.insert(b("user:1"), Record::string("a"));
        state.insert(b("user:2"), Record::string("b"));
        state.insert(
            b("user:3"),
            Record {
                value: Value::Str(b("old")),
                expires_at_ms: Some(50),
            },
        );
        state.insert(
            b("cart:1"),
            Record {
                value: Value::Hash(BTreeMap::from([(b("f"), b("v"))])),
                expires_at_ms: Some(500),
            },
        );
        state
    }

    #[test]
    fn keys_lists_live_matching_keys_in_order() {
        let state = state();
        let keys = |pattern: &str| {
            execute_group(
                &Command::Keys {
                    pattern: b(pattern),
                },
                100,
                &state,
            )
        };
        let outcome = keys("user:*");
        assert_eq!(
            outcome.reply,
            Reply::Array(vec![Reply::Bulk(b("user:1")), Reply::Bulk(b("user:2"))])
        );
        assert!(outcome.writes.is_empty());
        assert_eq!(
            keys("*").reply,
            Reply::Array(vec![
                Reply::Bulk(b("cart:1")),
                Reply::Bulk(b("user:1")),
                Reply::Bulk(b("user:2")),
            ])
        );
        assert_eq!(keys("nothing*").reply, Reply::Array(vec![]));
    }

    #[test]
    fn dbsize_counts_live_keys() {
        let state = state();
        assert_eq!(
            execute_group(&Command::DbSize, 0, &state).reply,
            Reply::Int(4)
        );
        assert_eq!(
            execute_group(&Command::DbSize, 100, &state).reply,
            Reply::Int(3)
        );
        assert_eq!(
            execute_group(&Command::DbSize, 100, &BTreeMap::new()).reply,
            Reply::Int(0)
        );
    }

    #[test]
    fn flushall_deletes_every_record() {
        let state = state();
        let outcome = execute_group(&Command::FlushAll, 100, &state);
        assert_eq!(outcome.reply, Reply::Ok);
        assert_eq!(
            outcome.writes,
            state.keys().map(|key| (key.clone(), None)).collect()
        );
    }

    #[test]
    fn the_two_executors_refuse_each_others_commands() {
        let state = state();
        let outcome = execute_group(&Command::get("user:1"), 0, &state);
        assert!(outcome.reply.is_error(), "{:?}", outcome.reply);
        assert!(outcome.writes.is_empty());
        for command in [
            Command::Keys { pattern: b("*") },
            Command::DbSize,
            Command::FlushAll,
        ] {
            let outcome = execute(&command, 0, &state);
            assert!(outcome.reply.is_error(), "{command:?}: {:?}", outcome.reply);
            assert!(outcome.writes.is_empty());
        }
    }
}
