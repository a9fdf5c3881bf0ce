//! Group-scope commands ([`Scope::Group`]: `KEYS`, a step of `SCAN`, `DBSIZE`, `FLUSHALL`),
//! which act on the records of a slot group rather than on keys they name.
//!
//! The reads are a fold ([`GroupRead`]) over the group's records in key order, so the storage
//! node feeds it page by page from its disk scan and never holds the whole group in memory;
//! [`execute_group`] runs the same fold over records in memory (and is what the tests and
//! models use), so there is one implementation of what each command answers. `FLUSHALL` answers
//! `OK` and deletes every record; the node deletes its state range in pages instead of listing
//! the deletes.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{Command, Glob, Outcome, Record, Reply, Scope};

/// The read-only group-scope commands as a fold over a group's records in key order.
#[derive(Debug)]
pub struct GroupRead {
    now_ms: u64,
    keys_max: usize,
    kind: ReadKind,
}

#[derive(Debug)]
enum ReadKind {
    Keys {
        glob: Glob,
        kind: Option<Bytes>,
        keys: Vec<Reply>,
    },
    /// A `SCAN` step: like `Keys`, from `from` on, stopping once `count` live keys were
    /// looked at.
    Scan {
        glob: Glob,
        kind: Option<Bytes>,
        keys: Vec<Reply>,
        looked: u64,
        count: u64,
    },
    DbSize {
        count: i64,
    },
    /// `RANDOMKEY` from its point on: the first live key fed is the answer.
    RandomKey,
}

/// Most keys one `SCAN` step looks at, whatever its `COUNT`: the step's reply stays a bounded
/// message, and the client's next step goes on from there.
pub const SCAN_COUNT_MAX: u64 = 100_000;

impl GroupRead {
    /// Starts `KEYS pattern`, a `SCAN` step or `DBSIZE` at `now_ms` (expired records awaiting
    /// removal do not count). A `KEYS` reply longer than `keys_max` is refused, as a bound on the reply's
    /// memory. Any other command answers its error reply.
    pub fn new(command: &Command, now_ms: u64, keys_max: usize) -> Result<GroupRead, Reply> {
        let kind = match command {
            Command::Keys { pattern, kind } => ReadKind::Keys {
                glob: Glob::new(pattern),
                kind: kind.clone(),
                keys: Vec::new(),
            },
            Command::Scan {
                pattern,
                kind,
                count,
                ..
            } => ReadKind::Scan {
                glob: Glob::new(pattern),
                kind: kind.clone(),
                keys: Vec::new(),
                looked: 0,
                count: (*count).clamp(1, SCAN_COUNT_MAX),
            },
            Command::DbSize => ReadKind::DbSize { count: 0 },
            Command::RandomKey { .. } => ReadKind::RandomKey,
            other if other.scope() == Scope::Group => {
                return Err(Reply::error(format!(
                    "ERR '{}' is not a read of the whole group",
                    other.name()
                )));
            }
            other => {
                return Err(Reply::error(format!(
                    "ERR '{}' acts on the keys it names, not on a whole slot group",
                    other.name()
                )));
            }
        };
        Ok(GroupRead {
            now_ms,
            keys_max,
            kind,
        })
    }

    /// Takes the next record (keys in ascending order). `Err` is the final reply: the fold
    /// stops there (today only a `KEYS` reply over `keys_max`).
    pub fn feed(&mut self, key: &Bytes, record: &Record) -> Result<(), Reply> {
        if record.is_expired(self.now_ms) {
            return Ok(());
        }
        match &mut self.kind {
            ReadKind::Keys { glob, kind, keys } => {
                if of_kind(kind, record) && glob.matches(key) {
                    if keys.len() >= self.keys_max {
                        return Err(Reply::error(format!(
                            "ERR KEYS would return more than {} keys of one slot group; use SCAN with MATCH",
                            self.keys_max
                        )));
                    }
                    keys.push(Reply::Bulk(key.clone()));
                }
            }
            ReadKind::Scan {
                glob,
                kind,
                keys,
                looked,
                count,
            } => {
                if of_kind(kind, record) && glob.matches(key) {
                    keys.push(Reply::Bulk(key.clone()));
                }
                *looked += 1;
                if *looked >= *count {
                    // The step ends here; the client's next one starts after this key.
                    return Err(Reply::Array(vec![
                        Reply::Bulk(key.clone()),
                        Reply::Array(std::mem::take(keys)),
                        Reply::Int(i64::try_from(*looked).unwrap_or(i64::MAX)),
                    ]));
                }
            }
            ReadKind::DbSize { count } => *count += 1,
            ReadKind::RandomKey => return Err(Reply::Bulk(key.clone())),
        }
        Ok(())
    }

    /// Where a `SCAN` step starts: at this key or the first past it (empty: at the group's
    /// first key, the same).
    pub fn scan_from(command: &Command) -> Option<&Bytes> {
        match command {
            Command::Scan { from, .. } if !from.is_empty() => Some(from),
            _ => None,
        }
    }

    /// The reply once every record was fed.
    pub fn finish(self) -> Reply {
        match self.kind {
            ReadKind::Keys { keys, .. } => Reply::Array(keys),
            ReadKind::Scan { keys, looked, .. } => Reply::Array(vec![
                Reply::Nil,
                Reply::Array(keys),
                Reply::Int(i64::try_from(looked).unwrap_or(i64::MAX)),
            ]),
            ReadKind::DbSize { count } => Reply::Int(count),
            ReadKind::RandomKey => Reply::Nil,
        }
    }
}

/// Most levels a [`RandomDescent`] goes down before it settles on the first key of the range
/// it reached.
const RANDOM_DESCENT_LEVELS_MAX: u32 = 24;

/// How `RANDOMKEY` picks a key of a group without listing it: a walk down the keys' byte trie
/// from the group's first and last keys. At each level, past the common prefix of the first
/// and last key under the current prefix, it draws a byte between theirs (or the shorter key
/// itself, when the first key is the prefix), and goes on under the first key at or past that
/// byte, from its first to its last key. Every level costs the reader two row reads (the
/// first key at or past a point, the last key under a prefix), so a pick costs a few dozen
/// reads whatever the group's size.
///
/// Not uniform: a byte after a gap of unused bytes is the likelier, at each level. But keys
/// that differ in digits (`user:000001` … `user:999999`) are drawn evenly, and an odd key
/// (`a` beside a million `key:…`) skews only its own level, where the earlier draw between the
/// first and last keys would send almost every pick to one key. (Redis's own `RANDOMKEY` is not
/// uniform either: it picks a bucket, then a key of its chain.)
#[derive(Debug, Clone)]
pub struct RandomDescent {
    seed: u64,
    level: u32,
}

/// What a [`RandomDescent`] asks for next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Descend {
    /// The pick is the first key of the current range.
    Settled,
    /// Read the first key at or past `point` (call it `k`) and the last key that starts with
    /// `k`'s first `prefix_len` bytes, and step again with them.
    Seek { point: Bytes, prefix_len: usize },
}

impl RandomDescent {
    pub fn new(seed: u64) -> Self {
        RandomDescent { seed, level: 0 }
    }

    /// The next step from the range of keys `first ..= last` (both present, `first <= last`,
    /// sharing the prefix the previous step named).
    pub fn step(&mut self, first: &[u8], last: &[u8]) -> Descend {
        if first >= last || self.level >= RANDOM_DESCENT_LEVELS_MAX {
            return Descend::Settled;
        }
        let common = first.iter().zip(last).take_while(|(a, b)| a == b).count();
        // The bytes the keys of the range have after the common prefix run from `low` (none:
        // `first` is the prefix itself, drawn as one more choice below the bytes) to `high`.
        let high = u64::from(last[common]);
        let low = first.get(common).map_or(0, |byte| u64::from(*byte) + 1);
        let hash = xxhash_rust::xxh3::xxh3_64(
            &[self.seed, u64::from(self.level)]
                .map(u64::to_le_bytes)
                .concat(),
        );
        self.level += 1;
        let drawn = low + hash % (high + 2 - low);
        if drawn == 0 {
            return Descend::Settled;
        }
        let mut point = Vec::with_capacity(common + 1);
        point.extend_from_slice(&first[..common]);
        point.push((drawn - 1) as u8);
        Descend::Seek {
            point: Bytes::from(point),
            prefix_len: common + 1,
        }
    }
}

/// The first key past every key that starts with `prefix` (`None`: no key is, the prefix is
/// all `0xff`), the exclusive end of the range of keys under it.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while end.last() == Some(&0xff) {
        end.pop();
    }
    let last = end.last_mut()?;
    *last += 1;
    Some(end)
}

/// Whether `record` is of the type `SCAN … TYPE kind` asks for (any, without one).
fn of_kind(kind: &Option<Bytes>, record: &Record) -> bool {
    kind.as_ref()
        .is_none_or(|kind| kind.eq_ignore_ascii_case(record.value.type_name().as_bytes()))
}

/// [`RandomDescent`] over records in memory: the key it settles on (expired or not; `None`
/// for no records).
fn random_descent(keys: &std::collections::BTreeSet<&[u8]>, seed: u64) -> Option<Bytes> {
    use std::ops::Bound;
    let (mut first, mut last) = (*keys.first()?, *keys.last()?);
    let mut descent = RandomDescent::new(seed);
    while let Descend::Seek { point, prefix_len } = descent.step(first, last) {
        first = keys
            .range::<[u8], _>((Bound::Included(point.as_ref()), Bound::Unbounded))
            .next()
            .expect("a key lies at or before the last");
        let prefix = &first[..prefix_len];
        let end = prefix_end(prefix);
        last = keys
            .range::<[u8], _>((
                Bound::Included(prefix),
                end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
            ))
            .next_back()
            .expect("the first key is under its own prefix");
    }
    Some(Bytes::copy_from_slice(first))
}

/// Applies a [`Scope::Group`] command at `now_ms` to every record of a slot group held in
/// memory, given in key order: `KEYS`, `SCAN` and `DBSIZE` through [`GroupRead`] (`KEYS`
/// unbounded), `FLUSHALL` as `OK` and a delete for every record, expired ones included. Any
/// other command answers an error and changes nothing.
pub fn execute_group<'a>(
    command: &Command,
    now_ms: u64,
    records: impl IntoIterator<Item = (&'a Bytes, &'a Record)>,
) -> Outcome {
    if *command == Command::FlushAll {
        return Outcome {
            reply: Reply::Ok,
            writes: records
                .into_iter()
                .map(|(key, _)| (key.clone(), None))
                .collect(),
        };
    }
    let records: Vec<(&Bytes, &Record)> = records.into_iter().collect();
    let from = match command {
        Command::RandomKey { seed } => {
            let keys = records.iter().map(|(key, _)| key.as_ref()).collect();
            random_descent(&keys, *seed)
        }
        _ => GroupRead::scan_from(command).cloned(),
    };
    let fold = |from: Option<&Bytes>| match GroupRead::new(command, now_ms, usize::MAX) {
        Ok(mut read) => records
            .iter()
            .filter(|(key, _)| from.is_none_or(|from| *key >= from))
            .try_for_each(|(key, record)| read.feed(key, record))
            .map_or_else(|stop| stop, |()| read.finish()),
        Err(reply) => reply,
    };
    let mut reply = fold(from.as_ref());
    if matches!(command, Command::RandomKey { .. }) && reply == Reply::Nil {
        // Nothing live past the point: the group's first live key, if any.
        reply = fold(None);
    }
    Outcome {
        reply,
        writes: BTreeMap::new(),
    }
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

    /// A whole `SCAN` of `state` in steps of `count`: each step's matching keys, and how the
    /// iteration ended.
    fn scan_steps(
        state: &BTreeMap<Bytes, Record>,
        pattern: &str,
        kind: Option<&str>,
        count: u64,
    ) -> Vec<Vec<Reply>> {
        let mut from = Bytes::new();
        let mut steps = Vec::new();
        loop {
            let command = Command::Scan {
                from: from.clone(),
                pattern: b(pattern),
                kind: kind.map(b),
                count,
            };
            let Reply::Array(parts) = execute_group(&command, 100, state).reply else {
                panic!("a scan step answers an array");
            };
            let [next, Reply::Array(keys), Reply::Int(looked)] =
                <[Reply; 3]>::try_from(parts).expect("three parts")
            else {
                panic!("the keys are an array, the keys looked at a count");
            };
            assert!(keys.len() as i64 <= looked && looked as u64 <= count.max(1));
            steps.push(keys);
            match next {
                Reply::Nil => return steps,
                Reply::Bulk(last) => {
                    assert!(last >= from, "every step moves on");
                    from = crate::kv::past(&last);
                }
                other => panic!("unexpected cursor {other:?}"),
            }
        }
    }

    #[test]
    fn a_scan_in_steps_sees_every_live_key_once_and_each_step_is_bounded() {
        let state = state();
        let keys = |steps: Vec<Vec<Reply>>| steps.into_iter().flatten().collect::<Vec<_>>();
        let all = vec![
            Reply::Bulk(b("cart:1")),
            Reply::Bulk(b("user:1")),
            Reply::Bulk(b("user:2")),
        ];
        // One key a step: three steps of one key, and a last one that finds the end.
        let steps = scan_steps(&state, "*", None, 1);
        assert!(steps.iter().all(|step| step.len() <= 1));
        assert_eq!(keys(steps), all);
        // A count past the keys: one step, the end at once.
        assert_eq!(scan_steps(&state, "*", None, 10), vec![all.clone()]);
        // COUNT 0 looks at one key a step rather than none (no step may stand still).
        assert_eq!(keys(scan_steps(&state, "*", None, 0)), all);
        // MATCH and TYPE filter what a step returns, not what it looks at.
        let steps = scan_steps(&state, "user:*", Some("string"), 2);
        assert_eq!(steps.len(), 2);
        assert_eq!(
            keys(steps),
            vec![Reply::Bulk(b("user:1")), Reply::Bulk(b("user:2"))]
        );
        assert!(keys(scan_steps(&state, "*", Some("zset"), 1)).is_empty());
        // The empty string is a key like any other: a step that stops at it is not taken for
        // the start again (the position past it is inclusive, `past`).
        let mut with_empty = state.clone();
        with_empty.insert(Bytes::new(), Record::string("e"));
        let mut everything = vec![Reply::Bulk(Bytes::new())];
        everything.extend(all.iter().cloned());
        assert_eq!(keys(scan_steps(&with_empty, "*", None, 1)), everything);
        // A huge COUNT is cut to the bound.
        let mut big = BTreeMap::new();
        for i in 0..SCAN_COUNT_MAX + 5 {
            big.insert(b(&format!("k{i:07}")), Record::string("v"));
        }
        let steps = scan_steps(&big, "*", None, u64::MAX);
        assert_eq!(
            steps.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![SCAN_COUNT_MAX as usize, 5]
        );
    }

    #[test]
    fn keys_lists_live_matching_keys_in_order() {
        let state = state();
        let keys = |pattern: &str| {
            execute_group(
                &Command::Keys {
                    pattern: b(pattern),
                    kind: None,
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
    fn keys_of_a_type_are_only_those_of_that_type() {
        let state = state();
        let of = |kind: &str| {
            execute_group(
                &Command::Keys {
                    pattern: b("*"),
                    kind: Some(b(kind)),
                },
                100,
                &state,
            )
            .reply
        };
        assert_eq!(of("hash"), Reply::Array(vec![Reply::Bulk(b("cart:1"))]));
        assert_eq!(
            of("STRING"),
            Reply::Array(vec![Reply::Bulk(b("user:1")), Reply::Bulk(b("user:2"))])
        );
        // A type no key has (or none Redis knows): nothing, as Redis answers.
        assert_eq!(of("zset"), Reply::Array(vec![]));
    }

    #[test]
    fn randomkey_draws_keys_all_over_the_group_and_an_odd_key_skews_only_its_level() {
        let mut state = BTreeMap::new();
        for i in 0..1000 {
            state.insert(b(&format!("user:{i:06}")), Record::string("v"));
        }
        let picks = |state: &BTreeMap<Bytes, Record>| {
            let mut picked = BTreeMap::<Bytes, u32>::new();
            for seed in 0..1000 {
                let Reply::Bulk(key) =
                    execute_group(&Command::RandomKey { seed }, 100, state).reply
                else {
                    panic!("a key");
                };
                assert!(state.contains_key(&key));
                *picked.entry(key).or_default() += 1;
            }
            picked
        };
        // 1,000 draws over 1,000 keys drawn evenly find about 632 distinct ones.
        let picked = picks(&state);
        assert!(picked.len() > 550, "{} distinct keys", picked.len());
        // One key far from the others takes about its level's share, not every pick.
        state.insert(b("a"), Record::string("v"));
        state.insert(b("user:"), Record::string("v"));
        let picked = picks(&state);
        assert!(picked.len() > 500, "{} distinct keys", picked.len());
        assert!(picked[&b("a")] < 150, "{picked:?}");
        assert!(picked.get(&b("user:")).copied().unwrap_or(0) < 150);
    }

    #[test]
    fn randomkey_answers_a_live_key_or_nil() {
        let state = state();
        for seed in 0..50 {
            let reply = execute_group(&Command::RandomKey { seed }, 100, &state).reply;
            assert!(
                [b("cart:1"), b("user:1"), b("user:2")]
                    .map(Reply::Bulk)
                    .contains(&reply),
                "never the expired user:3: {reply:?}"
            );
        }
        // Past every live key, it wraps to the first.
        let mut late = BTreeMap::new();
        late.insert(b("a"), Record::string("v"));
        late.insert(
            b("z"),
            Record {
                value: Value::Str(b("old")),
                expires_at_ms: Some(50),
            },
        );
        for seed in 0..20 {
            assert_eq!(
                execute_group(&Command::RandomKey { seed }, 100, &late).reply,
                Reply::Bulk(b("a"))
            );
        }
        assert_eq!(
            execute_group(&Command::RandomKey { seed: 1 }, 100, &BTreeMap::new()).reply,
            Reply::Nil
        );
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
    fn a_keys_reply_over_its_bound_is_refused() {
        let state = state();
        let mut read = GroupRead::new(
            &Command::Keys {
                pattern: b("*"),
                kind: None,
            },
            100,
            2,
        )
        .expect("a read");
        let stopped = state
            .iter()
            .try_for_each(|(key, record)| read.feed(key, record));
        let reply = stopped.expect_err("three live keys exceed a bound of two");
        assert!(reply.is_error(), "{reply:?}");
        let mut read = GroupRead::new(&Command::DbSize, 100, 2).expect("a read");
        for (key, record) in &state {
            read.feed(key, record).expect("DBSIZE has no bound");
        }
        assert_eq!(read.finish(), Reply::Int(3));
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
            Command::Keys {
                pattern: b("*"),
                kind: None,
            },
            Command::DbSize,
            Command::FlushAll,
        ] {
            let outcome = execute(&command, 0, &state);
            assert!(outcome.reply.is_error(), "{command:?}: {:?}", outcome.reply);
            assert!(outcome.writes.is_empty());
        }
    }
}
