//! Commands on keys whatever they hold: expiry with conditions and absolute times, `RENAME`,
//! `COPY`, `TOUCH`. Same shape as the other command families: an enum stored in the log
//! (variants only ever added at the end), parsing, classification, execution over a [`View`].

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::command::parse_i64;
use super::command::{Keys, arity_fits};
use super::execute::View;
use super::{CommandError, Record, Reply, Value, WRONGTYPE};

/// When an expiry falls due, as the client gave it: relative to the entry's timestamp
/// (`EX`, `PX`, `EXPIRE`, `PEXPIRE`) or an absolute Unix time (`EXAT`, `PXAT`, `EXPIREAT`,
/// `PEXPIREAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Deadline {
    InSeconds(i64),
    InMillis(i64),
    AtSeconds(i64),
    AtMillis(i64),
}

impl Deadline {
    /// The number as the client wrote it.
    pub fn raw(self) -> i64 {
        match self {
            Deadline::InSeconds(n)
            | Deadline::InMillis(n)
            | Deadline::AtSeconds(n)
            | Deadline::AtMillis(n) => n,
        }
    }

    /// Seconds that do not fit in milliseconds (Redis refuses them at parse).
    pub fn millis_overflow(self) -> bool {
        match self {
            Deadline::InSeconds(n) | Deadline::AtSeconds(n) => n.checked_mul(1000).is_none(),
            _ => false,
        }
    }

    /// The absolute time in milliseconds at `now_ms`; `None` past the largest time Redis can
    /// hold (`when > LLONG_MAX - basetime`). A time at or before `now_ms` means "already
    /// expired"; negative absolute times count as 0.
    pub fn resolve(self, now_ms: u64) -> Option<u64> {
        let now = now_ms.min(i64::MAX as u64) as i64;
        let (millis, base) = match self {
            Deadline::InSeconds(n) => (n.checked_mul(1000)?, now),
            Deadline::InMillis(n) => (n, now),
            Deadline::AtSeconds(n) => (n.checked_mul(1000)?, 0),
            Deadline::AtMillis(n) => (n, 0),
        };
        if millis > i64::MAX - base {
            return None;
        }
        Some((base + millis).max(0) as u64)
    }

    /// The client command's name for error texts.
    fn command_name(self) -> &'static str {
        match self {
            Deadline::InSeconds(_) => "expire",
            Deadline::InMillis(_) => "pexpire",
            Deadline::AtSeconds(_) => "expireat",
            Deadline::AtMillis(_) => "pexpireat",
        }
    }
}

/// Parses a `SET`/`GETEX` expiry option and its amount (`EX 10`, `PXAT 1700000000000`):
/// `Ok(None)` when `option` is no expiry option; a non-integer amount is `NotInteger`.
pub(super) fn parse_deadline(
    option: &[u8],
    amount: &[u8],
    _name: &str,
) -> Result<Option<Deadline>, CommandError> {
    let make: fn(i64) -> Deadline = match option.to_ascii_lowercase().as_slice() {
        b"ex" => Deadline::InSeconds,
        b"px" => Deadline::InMillis,
        b"exat" => Deadline::AtSeconds,
        b"pxat" => Deadline::AtMillis,
        _ => return Ok(None),
    };
    Ok(Some(make(parse_i64(amount)?)))
}

/// `EXPIRE`'s Redis 7.0 conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireCondition {
    Always,
    /// `NX`: only a key without expiry.
    IfNone,
    /// `XX`: only a key with an expiry.
    IfSome,
    /// `GT`: only later than the current expiry (a key without one has none later).
    IfLater,
    /// `LT`: only earlier than the current expiry (a key without one counts as never).
    IfEarlier,
    /// `XX LT`: only a key with an expiry, and only earlier.
    IfSomeEarlier,
}

/// A keyspace command as replicas execute it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyCommand {
    /// `EXPIRE`/`PEXPIRE`/`EXPIREAT`/`PEXPIREAT` with a condition or an absolute time (the
    /// plain relative form is [`Command::Expire`](super::Command::Expire)).
    Expire {
        key: Bytes,
        deadline: Deadline,
        condition: ExpireCondition,
    },
    /// `EXPIRETIME` / `PEXPIRETIME`.
    ExpireTime { key: Bytes, millis: bool },
    /// `RENAME` (`only_new: false`) or `RENAMENX`.
    Rename {
        from: Bytes,
        to: Bytes,
        only_new: bool,
    },
    /// `COPY source destination [REPLACE]` (only database 0 exists).
    Copy {
        from: Bytes,
        to: Bytes,
        replace: bool,
    },
    /// `TOUCH key...`: the number of keys that exist.
    Touch { keys: Vec<Bytes> },
    /// `MEMORY USAGE key [SAMPLES n]`: the bytes the key's record takes as stored (its
    /// encoding plus the key), nil when missing.
    MemoryUsage { key: Bytes },
    /// `OBJECT REFCOUNT key`: always 1 for an existing key (values are never shared between
    /// keys), nil when missing.
    RefCount { key: Bytes },
    /// `SORT`/`SORT_RO` of a list, set or sorted set. `BY` and `GET` patterns name other keys,
    /// which may live in other slots, so they are refused as Redis Cluster refuses them; `BY`
    /// without `*` (no sorting) and `GET #` (the element itself) remain.
    Sort(Sort),
    /// `DUMP key`: the value in Redis's payload format ([`super::rdb::dump_payload`]), nil
    /// when missing.
    Dump { key: Bytes },
    /// `RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f]`. `ttl` is
    /// milliseconds (0: none), absolute with `ABSTTL`; the access-time hints are checked and
    /// ignored, as Larder keeps no LRU/LFU state.
    Restore {
        key: Bytes,
        ttl_ms: i64,
        absolute: bool,
        replace: bool,
        payload: Bytes,
    },
    /// `OBJECT ENCODING key`: the name of Redis's general encoding of the key's type (Larder
    /// has none of Redis's compact encodings, so never `listpack`, `intset` or `embstr`), nil
    /// when missing. See [`encoding_name`].
    Encoding { key: Bytes },
}

/// What `OBJECT ENCODING` answers for `value`: the encoding Redis uses for a value of that
/// type once it outgrows its compact forms, the honest name for how Larder keeps it: strings
/// as their bytes (`raw`), hashes and sets one row per element looked up by element
/// (`hashtable`), sorted sets by member and by score (`skiplist`), lists as one sequence
/// (`quicklist`).
pub fn encoding_name(value: &Value) -> &'static str {
    match value {
        // A lock is one record, as a string is.
        Value::Str(_) | Value::Lock(_) => "raw",
        Value::Hash(_) | Value::Set(_) => "hashtable",
        Value::ZSet(_) => "skiplist",
        Value::List(_) => "quicklist",
    }
}

/// The trailer of the payloads `DUMP` wrote before it spoke Redis's format (stop 51): a
/// record's encoding, this mark, and an xxh3 of both.
const LEGACY_DUMP_MARK: [u8; 2] = [b'L', 1];

/// The value in a `RESTORE` payload ([`super::rdb`]: Redis's own format), or `RESTORE`'s
/// error for it.
fn restore_value(payload: &[u8]) -> Result<Value, Reply> {
    let value = match legacy_restore_value(payload) {
        Some(value) => value,
        None => {
            super::rdb::restore_value(payload).map_err(|error| Reply::error(error.to_string()))?
        }
    };
    // A well-formed payload still must hold what a key may hold: no empty collection (an empty
    // one is no key at all), no string past the limit.
    let valid = match &value {
        Value::Str(text) => text.len() <= super::STRING_BYTES_MAX,
        Value::Hash(fields) => !fields.is_empty(),
        Value::List(items) => !items.is_empty(),
        Value::Set(members) => !members.is_empty(),
        Value::ZSet(set) => !set.is_empty(),
        // Redis's format has no lock type: no payload holds one.
        Value::Lock(_) => false,
    };
    if valid {
        Ok(value)
    } else {
        Err(Reply::error("ERR Bad data format"))
    }
}

/// The value of a payload in the format `DUMP` wrote before stop 51, if `payload` is one.
/// Still read because a `RESTORE` of one may sit in a replica's log from before the upgrade:
/// replayed by the new binary, it must do what it did when it was answered, or the replica
/// would part from the ones that applied it before. (A Redis payload never ends this way:
/// its footer's version would be 332, past every RDB version.)
fn legacy_restore_value(payload: &[u8]) -> Option<Value> {
    let split = payload.len().checked_sub(8)?;
    let (body, sum) = payload.split_at(split);
    if !body.ends_with(&LEGACY_DUMP_MARK) || xxhash_rust::xxh3::xxh3_64(body).to_le_bytes() != sum {
        return None;
    }
    Record::decode(&body[..body.len() - LEGACY_DUMP_MARK.len()])
        .ok()
        .map(|record| record.value)
}

/// A parsed `SORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sort {
    pub key: Bytes,
    /// `BY` a pattern without `*`: keep the stored order.
    pub no_sort: bool,
    pub limit: Option<(i64, i64)>,
    pub desc: bool,
    pub alpha: bool,
    /// `GET #` repeated this many times per element (0: the element once).
    pub gets: u32,
    pub store: Option<Bytes>,
}

impl KeyCommand {
    pub(super) fn parse(name: &str, rest: &[Bytes]) -> Option<Result<KeyCommand, CommandError>> {
        let arity = |ok: bool| arity_fits(name, ok);
        let parsed = match name {
            "expire" | "pexpire" | "expireat" | "pexpireat" => (|| {
                arity(rest.len() >= 2)?;
                let amount = parse_i64(&rest[1])?;
                let deadline = match name {
                    "expire" => Deadline::InSeconds(amount),
                    "pexpire" => Deadline::InMillis(amount),
                    "expireat" => Deadline::AtSeconds(amount),
                    _ => Deadline::AtMillis(amount),
                };
                if deadline.millis_overflow() {
                    return Err(CommandError::InvalidExpire {
                        name: name.to_string(),
                    });
                }
                let condition = parse_expire_condition(&rest[2..])?;
                Ok(KeyCommand::Expire {
                    key: rest[0].clone(),
                    deadline,
                    condition,
                })
            })(),
            "expiretime" | "pexpiretime" => {
                arity(rest.len() == 1).map(|()| KeyCommand::ExpireTime {
                    key: rest[0].clone(),
                    millis: name == "pexpiretime",
                })
            }
            "rename" | "renamenx" => arity(rest.len() == 2).map(|()| KeyCommand::Rename {
                from: rest[0].clone(),
                to: rest[1].clone(),
                only_new: name == "renamenx",
            }),
            "copy" => (|| {
                arity(rest.len() >= 2)?;
                let mut replace = false;
                let mut options = rest[2..].iter();
                while let Some(option) = options.next() {
                    match option.to_ascii_lowercase().as_slice() {
                        b"replace" => replace = true,
                        b"db" => {
                            let db = parse_i64(options.next().ok_or(CommandError::Syntax)?)?;
                            if db != 0 {
                                return Err(CommandError::Message(
                                    "ERR DB index is out of range".into(),
                                ));
                            }
                        }
                        _ => return Err(CommandError::Syntax),
                    }
                }
                Ok(KeyCommand::Copy {
                    from: rest[0].clone(),
                    to: rest[1].clone(),
                    replace,
                })
            })(),
            "dump" => arity(rest.len() == 1).map(|()| KeyCommand::Dump {
                key: rest[0].clone(),
            }),
            // `RESTORE-ASKING` is what a Redis Cluster node's `MIGRATE` sends; the proxy is the
            // single endpoint, so the asking part means nothing here.
            "restore" | "restore-asking" => (|| {
                arity(rest.len() >= 3)?;
                let ttl_ms = parse_i64(&rest[1])?;
                let (mut absolute, mut replace, mut idle, mut freq) = (false, false, false, false);
                let mut options = rest[3..].iter();
                while let Some(option) = options.next() {
                    match option.to_ascii_lowercase().as_slice() {
                        b"replace" => replace = true,
                        b"absttl" => absolute = true,
                        b"idletime" if !freq => {
                            let value = options.next().ok_or(CommandError::Syntax)?;
                            if parse_i64(value)? < 0 {
                                return Err(CommandError::Message(
                                    "ERR Invalid IDLETIME value, must be >= 0".into(),
                                ));
                            }
                            idle = true;
                        }
                        b"freq" if !idle => {
                            let value = options.next().ok_or(CommandError::Syntax)?;
                            if !(0..=255).contains(&parse_i64(value)?) {
                                return Err(CommandError::Message(
                                    "ERR Invalid FREQ value, must be >= 0 and <= 255".into(),
                                ));
                            }
                            freq = true;
                        }
                        _ => return Err(CommandError::Syntax),
                    }
                }
                if ttl_ms < 0 {
                    return Err(CommandError::Message(
                        "ERR Invalid TTL value, must be >= 0".into(),
                    ));
                }
                Ok(KeyCommand::Restore {
                    key: rest[0].clone(),
                    ttl_ms,
                    absolute,
                    replace,
                    payload: rest[2].clone(),
                })
            })(),
            "sort" | "sort_ro" => {
                (|| {
                    arity(!rest.is_empty())?;
                    parse_sort(&rest[0], &rest[1..], name == "sort").map(KeyCommand::Sort)
                })()
            }
            "touch" => arity(!rest.is_empty()).map(|()| KeyCommand::Touch {
                keys: rest.to_vec(),
            }),
            "memory" if rest.first().is_some_and(|sub| sub.eq_ignore_ascii_case(b"usage")) => {
                (|| {
                    match &rest[1..] {
                        [_] => {}
                        [_, option, count] if option.eq_ignore_ascii_case(b"samples") => {
                            parse_i64(count)?;
                        }
                        _ => return Err(CommandError::Syntax),
                    }
                    Ok(KeyCommand::MemoryUsage {
                        key: rest[1].clone(),
                    })
                })()
                .map_err(|error| match rest.len() {
                    1 => CommandError::Message(
                        "ERR unknown subcommand or wrong number of arguments for 'usage'. Try MEMORY HELP."
                            .into(),
                    ),
                    _ => error,
                })
            }
            "object" if rest.first().is_some_and(|sub| sub.eq_ignore_ascii_case(b"encoding")) => {
                match rest {
                    [_, key] => Ok(KeyCommand::Encoding { key: key.clone() }),
                    _ => Err(CommandError::Message(
                        "ERR unknown subcommand or wrong number of arguments for 'encoding'. Try OBJECT HELP."
                            .into(),
                    )),
                }
            }
            "object" if rest.first().is_some_and(|sub| sub.eq_ignore_ascii_case(b"refcount")) => {
                match rest {
                    [_, key] => Ok(KeyCommand::RefCount { key: key.clone() }),
                    _ => Err(CommandError::Message(
                        "ERR unknown subcommand or wrong number of arguments for 'refcount'. Try OBJECT HELP."
                            .into(),
                    )),
                }
            }
            _ => return None,
        };
        Some(parsed)
    }

    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            KeyCommand::ExpireTime { .. }
                | KeyCommand::Touch { .. }
                | KeyCommand::Sort(Sort { store: None, .. })
                | KeyCommand::Dump { .. }
                | KeyCommand::MemoryUsage { .. }
                | KeyCommand::RefCount { .. }
                | KeyCommand::Encoding { .. }
        )
    }

    pub fn keys(&self) -> Keys<'_> {
        match self {
            KeyCommand::Expire { key, .. }
            | KeyCommand::ExpireTime { key, .. }
            | KeyCommand::MemoryUsage { key }
            | KeyCommand::RefCount { key }
            | KeyCommand::Encoding { key }
            | KeyCommand::Dump { key }
            | KeyCommand::Restore { key, .. } => smallvec::smallvec![key],
            KeyCommand::Rename { from, to, .. } | KeyCommand::Copy { from, to, .. } => {
                smallvec::smallvec![from, to]
            }
            KeyCommand::Touch { keys } => keys.iter().collect(),
            KeyCommand::Sort(sort) => std::iter::once(&sort.key).chain(&sort.store).collect(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            KeyCommand::Expire { deadline, .. } => deadline.command_name(),
            KeyCommand::ExpireTime { millis: false, .. } => "expiretime",
            KeyCommand::ExpireTime { millis: true, .. } => "pexpiretime",
            KeyCommand::Rename {
                only_new: false, ..
            } => "rename",
            KeyCommand::Rename { only_new: true, .. } => "renamenx",
            KeyCommand::Copy { .. } => "copy",
            KeyCommand::Touch { .. } => "touch",
            KeyCommand::MemoryUsage { .. } => "memory",
            KeyCommand::RefCount { .. } | KeyCommand::Encoding { .. } => "object",
            KeyCommand::Sort(_) => "sort",
            KeyCommand::Dump { .. } => "dump",
            KeyCommand::Restore { .. } => "restore",
        }
    }

    pub(super) fn execute(&self, view: &mut View<'_>) -> Reply {
        match self {
            KeyCommand::Expire {
                key,
                deadline,
                condition,
            } => {
                // Range first, before the lookup, as Redis does.
                let Some(at) = deadline.resolve(view.now_ms) else {
                    return Reply::error(format!(
                        "ERR invalid expire time in '{}' command",
                        deadline.command_name()
                    ));
                };
                let Some(mut record) = view.get(key).cloned() else {
                    if view.is_stale(key) {
                        view.put(key, None);
                    }
                    return Reply::Int(0);
                };
                let allowed = match (condition, record.expires_at_ms) {
                    (ExpireCondition::Always, _) => true,
                    (ExpireCondition::IfNone, current) => current.is_none(),
                    (ExpireCondition::IfSome, current) => current.is_some(),
                    (ExpireCondition::IfLater, current) => current.is_some_and(|c| at > c),
                    (ExpireCondition::IfEarlier, current) => current.is_none_or(|c| at < c),
                    (ExpireCondition::IfSomeEarlier, current) => current.is_some_and(|c| at < c),
                };
                if !allowed {
                    return Reply::Int(0);
                }
                if at <= view.now_ms {
                    view.put(key, None);
                } else {
                    record.expires_at_ms = Some(at);
                    view.put(key, Some(record));
                }
                Reply::Int(1)
            }
            KeyCommand::ExpireTime { key, millis } => match view.get(key) {
                None => Reply::Int(-2),
                Some(record) => match record.expires_at_ms {
                    None => Reply::Int(-1),
                    Some(at) => {
                        let at = i64::try_from(at).unwrap_or(i64::MAX);
                        Reply::Int(if *millis {
                            at
                        } else {
                            at.saturating_add(500) / 1000
                        })
                    }
                },
            },
            KeyCommand::Rename { from, to, only_new } => {
                let Some(record) = view.get(from).cloned() else {
                    return Reply::error("ERR no such key");
                };
                if from == to {
                    return if *only_new { Reply::Int(0) } else { Reply::Ok };
                }
                if *only_new && view.get(to).is_some() {
                    return Reply::Int(0);
                }
                view.put(from, None);
                view.put(to, Some(record));
                if *only_new { Reply::Int(1) } else { Reply::Ok }
            }
            KeyCommand::Copy { from, to, replace } => {
                if from == to {
                    return Reply::error("ERR source and destination objects are the same");
                }
                let Some(record) = view.get(from).cloned() else {
                    return Reply::Int(0);
                };
                if !replace && view.get(to).is_some() {
                    return Reply::Int(0);
                }
                view.put(to, Some(record));
                Reply::Int(1)
            }
            KeyCommand::Touch { keys } => {
                Reply::Int(keys.iter().filter(|key| view.get(key).is_some()).count() as i64)
            }
            KeyCommand::Dump { key } => match view.get(key) {
                None => Reply::Nil,
                // Redis's payload format has no lock type, and a lock restored as anything
                // else would lose its token counter.
                Some(Record {
                    value: Value::Lock(_),
                    ..
                }) => Reply::error("ERR a lock cannot be dumped: Redis's format has no lock type"),
                Some(record) => Reply::Bulk(super::rdb::dump_payload(&record.value)),
            },
            KeyCommand::Restore {
                key,
                ttl_ms,
                absolute,
                replace,
                payload,
            } => {
                if !replace && view.get(key).is_some() {
                    return Reply::error("BUSYKEY Target key name already exists.");
                }
                let value = match restore_value(payload) {
                    Ok(value) => value,
                    Err(reply) => return reply,
                };
                let ttl_ms = *ttl_ms as u64;
                let expires_at_ms = match (ttl_ms, absolute) {
                    (0, _) => None,
                    (at, true) => Some(at),
                    (ttl, false) => Some(view.now_ms.saturating_add(ttl)),
                };
                // Already expired: the key is gone rather than restored (Redis deletes it).
                let record = match expires_at_ms {
                    Some(at) if at <= view.now_ms => None,
                    _ => Some(Record {
                        value,
                        expires_at_ms,
                    }),
                };
                view.put(key, record);
                Reply::Ok
            }
            KeyCommand::Sort(sort) => match sort_elements(sort, view) {
                Ok(elements) => match &sort.store {
                    Some(dest) => {
                        let count = elements.len() as i64;
                        let record = (!elements.is_empty()).then(|| Record {
                            value: Value::List(elements.into()),
                            expires_at_ms: None,
                        });
                        view.put(dest, record);
                        Reply::Int(count)
                    }
                    None => Reply::Array(elements.into_iter().map(Reply::Bulk).collect()),
                },
                Err(reply) => reply,
            },
            KeyCommand::MemoryUsage { key } => match view.get(key) {
                None => Reply::Nil,
                Some(record) => Reply::Int((key.len() + record.encode().len()) as i64),
            },
            KeyCommand::RefCount { key } => match view.get(key) {
                None => Reply::Nil,
                Some(_) => Reply::Int(1),
            },
            KeyCommand::Encoding { key } => match view.get(key) {
                None => Reply::Nil,
                Some(record) => {
                    Reply::Bulk(Bytes::from_static(encoding_name(&record.value).as_bytes()))
                }
            },
        }
    }
}

/// Redis 7.0's `EXPIRE` options and their errors.
fn parse_expire_condition(options: &[Bytes]) -> Result<ExpireCondition, CommandError> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in options {
        match option.to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => {
                return Err(CommandError::Message(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(option)
                )));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(CommandError::Message(
            "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    if gt && lt {
        return Err(CommandError::Message(
            "ERR GT and LT options at the same time are not compatible".into(),
        ));
    }
    Ok(match (nx, xx, gt, lt) {
        (true, ..) => ExpireCondition::IfNone,
        (_, _, true, _) => ExpireCondition::IfLater,
        (_, true, _, true) => ExpireCondition::IfSomeEarlier,
        (_, _, _, true) => ExpireCondition::IfEarlier,
        (_, true, ..) => ExpireCondition::IfSome,
        _ => ExpireCondition::Always,
    })
}

fn parse_sort(key: &Bytes, options: &[Bytes], may_store: bool) -> Result<Sort, CommandError> {
    let mut sort = Sort {
        key: key.clone(),
        no_sort: false,
        limit: None,
        desc: false,
        alpha: false,
        gets: 0,
        store: None,
    };
    let mut at = 0;
    while at < options.len() {
        let option = options[at].to_ascii_lowercase();
        let left = options.len() - at - 1;
        match option.as_slice() {
            b"asc" => sort.desc = false,
            b"desc" => sort.desc = true,
            b"alpha" => sort.alpha = true,
            b"limit" if left >= 2 => {
                sort.limit = Some((parse_i64(&options[at + 1])?, parse_i64(&options[at + 2])?));
                at += 2;
            }
            b"store" if left >= 1 && may_store => {
                sort.store = Some(options[at + 1].clone());
                at += 1;
            }
            b"by" if left >= 1 => {
                if options[at + 1].contains(&b'*') {
                    return Err(CommandError::Message(
                        "ERR BY option of SORT denied in Cluster mode.".into(),
                    ));
                }
                sort.no_sort = true;
                at += 1;
            }
            b"get" if left >= 1 => {
                if options[at + 1].as_ref() != b"#" {
                    return Err(CommandError::Message(
                        "ERR GET option of SORT denied in Cluster mode.".into(),
                    ));
                }
                sort.gets += 1;
                at += 1;
            }
            _ => return Err(CommandError::Syntax),
        }
        at += 1;
    }
    Ok(sort)
}

/// The elements `SORT` answers (or stores), as Redis 7.0's `sortCommand` orders and limits them.
fn sort_elements(sort: &Sort, view: &View<'_>) -> Result<Vec<Bytes>, Reply> {
    let mut no_sort = sort.no_sort;
    let mut alpha = sort.alpha;
    let mut elements: Vec<Bytes> = match view.get(&sort.key).map(|record| &record.value) {
        None => Vec::new(),
        Some(Value::List(items)) => items.iter().cloned().collect(),
        Some(Value::Set(members)) => {
            // A stored unsorted set would depend on the set's layout: Redis sorts it then.
            if no_sort && sort.store.is_some() {
                no_sort = false;
                alpha = true;
            }
            members.iter().cloned().collect()
        }
        Some(Value::ZSet(set)) => {
            let mut members: Vec<Bytes> = set.iter().map(|(member, _)| member.clone()).collect();
            if no_sort && sort.desc {
                members.reverse();
            }
            members
        }
        Some(_) => return Err(Reply::error(WRONGTYPE)),
    };
    if !no_sort {
        if alpha {
            elements.sort();
        } else {
            let mut scored = elements
                .into_iter()
                .map(|element| {
                    std::str::from_utf8(&element)
                        .ok()
                        .and_then(|text| text.trim_start().parse::<f64>().ok())
                        .filter(|score| !score.is_nan())
                        .map(|score| (score, element))
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    Reply::error("ERR One or more scores can't be converted into double")
                })?;
            // Equal scores fall back to the bytes, so the order is defined (as in Redis).
            scored.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            elements = scored.into_iter().map(|(_, element)| element).collect();
        }
        if sort.desc {
            elements.reverse();
        }
    }
    if let Some((offset, count)) = sort.limit {
        let len = elements.len() as i64;
        let start = offset.max(0);
        let mut end = if count < 0 {
            len - 1
        } else {
            start.saturating_add(count) - 1
        };
        let start = if start >= len {
            end = len - 2;
            len - 1
        } else {
            start
        };
        end = end.min(len - 1);
        elements = if start > end || start < 0 {
            Vec::new()
        } else {
            elements[start as usize..=end as usize].to_vec()
        };
    }
    if sort.gets > 1 {
        elements = elements
            .into_iter()
            .flat_map(|element| std::iter::repeat_n(element, sort.gets as usize))
            .collect();
    }
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::super::string::tests::{check, run_lines};
    use super::super::{Reply, Value};

    fn err(s: &str) -> Reply {
        Reply::error(s)
    }

    #[test]
    fn dump_and_restore_round_trip_and_refuse_bad_payloads() {
        use super::super::{Command, execute};
        let (state, replies) = run_lines(&[(0, "RPUSH l a b c"), (0, "DUMP l"), (0, "DUMP none")]);
        assert_eq!(replies[2], Reply::Nil);
        let Reply::Bulk(payload) = replies[1].clone() else {
            panic!("DUMP answered {:?}", replies[1]);
        };
        let run = |args: &[&[u8]]| {
            let args: Vec<bytes::Bytes> = args
                .iter()
                .map(|a| bytes::Bytes::copy_from_slice(a))
                .collect();
            match Command::parse(&args) {
                Ok(command) => {
                    let outcome = execute(&command, 1_000, &state);
                    (outcome.reply, outcome.writes)
                }
                Err(error) => (Reply::error(error.to_string()), Default::default()),
            }
        };
        let (reply, writes) = run(&[b"RESTORE", b"copy", b"5000", &payload]);
        assert_eq!(reply, Reply::Ok);
        let stored = writes[&bytes::Bytes::from_static(b"copy")]
            .as_ref()
            .expect("restored");
        assert_eq!(stored.value, state[&bytes::Bytes::from_static(b"l")].value);
        assert_eq!(stored.expires_at_ms, Some(6_000));
        assert_eq!(
            run(&[b"RESTORE", b"l", b"0", &payload]).0,
            err("BUSYKEY Target key name already exists.")
        );
        assert_eq!(
            run(&[b"RESTORE", b"l", b"0", &payload, b"REPLACE"]).0,
            Reply::Ok
        );
        // An absolute time already past: nothing is created.
        let (reply, writes) = run(&[b"RESTORE", b"old", b"999", &payload, b"ABSTTL"]);
        assert_eq!(
            (reply, writes.get(&bytes::Bytes::from_static(b"old"))),
            (Reply::Ok, Some(&None))
        );
        let mut corrupt = payload.to_vec();
        corrupt[3] ^= 1;
        assert_eq!(
            run(&[b"RESTORE", b"x", b"0", &corrupt]).0,
            err("ERR DUMP payload version or checksum are wrong")
        );
        assert_eq!(
            run(&[b"RESTORE", b"x", b"0", b"short"]).0,
            err("ERR DUMP payload version or checksum are wrong")
        );
        // A payload with a valid checksum around an empty list is still refused.
        let empty = crate::kv::rdb::dump_payload(&Value::List(Default::default()));
        assert_eq!(
            run(&[b"RESTORE", b"x", b"0", &empty]).0,
            err("ERR Bad data format")
        );
        // A payload of the format DUMP wrote before stop 51 (a RESTORE of one may be replayed
        // from a log written before the upgrade) restores as it did then.
        let legacy = |value: Value| {
            let mut out = crate::kv::Record {
                value,
                expires_at_ms: None,
            }
            .encode()
            .to_vec();
            out.extend_from_slice(&super::LEGACY_DUMP_MARK);
            let sum = xxhash_rust::xxh3::xxh3_64(&out);
            out.extend_from_slice(&sum.to_le_bytes());
            out
        };
        let old = legacy(Value::Str(bytes::Bytes::from_static(b"kept")));
        let (reply, writes) = run(&[b"RESTORE", b"legacy", b"0", &old]);
        assert_eq!(reply, Reply::Ok);
        assert_eq!(
            writes[&bytes::Bytes::from_static(b"legacy")]
                .as_ref()
                .map(|record| record.value.clone()),
            Some(Value::Str(bytes::Bytes::from_static(b"kept")))
        );
        assert_eq!(
            run(&[
                b"RESTORE",
                b"x",
                b"0",
                &legacy(Value::Set(Default::default()))
            ])
            .0,
            err("ERR Bad data format")
        );
        assert_eq!(
            run(&[b"RESTORE", b"x", b"-1", &payload]).0,
            err("ERR Invalid TTL value, must be >= 0")
        );
        assert_eq!(
            run(&[b"RESTORE", b"x", b"0", &payload, b"FREQ", b"300"]).0,
            err("ERR Invalid FREQ value, must be >= 0 and <= 255")
        );
        assert_eq!(
            run(&[
                b"RESTORE",
                b"x",
                b"0",
                &payload,
                b"IDLETIME",
                b"1",
                b"FREQ",
                b"1"
            ])
            .0,
            err("ERR syntax error")
        );
    }

    #[test]
    fn sort_orders_limits_and_stores_as_redis() {
        let bulks = |items: &[&str]| {
            Reply::Array(
                items
                    .iter()
                    .map(|item| Reply::Bulk(bytes::Bytes::copy_from_slice(item.as_bytes())))
                    .collect(),
            )
        };
        check(
            &[
                (0, "RPUSH l 3 10 2 1.5"),
                (0, "SORT l"),
                (0, "SORT l DESC"),
                (0, "SORT l ALPHA"),
                (0, "SORT l LIMIT 1 2"),
                (0, "SORT l LIMIT 10 2"),
                (0, "SORT l BY nosort"),
                (0, "SORT l GET # GET #  LIMIT 0 1"),
                (0, "SORT l BY w_*"),
                (0, "SORT l GET h_*"),
                (0, "SORT l STORE d"),
                (0, "LRANGE d 0 -1"),
                (0, "SORT_RO l STORE d"),
                (0, "RPUSH words b a"),
                (0, "SORT words"),
                (0, "SADD s c a b"),
                (0, "SORT s BY nosort ALPHA DESC"),
                (0, "ZADD z 1 x 2 y 3 w"),
                (0, "SORT z BY nosort DESC LIMIT 0 2"),
                (0, "SORT none STORE d"),
                (0, "EXISTS d"),
                (0, "SET str v"),
                (0, "SORT str"),
                (0, "SORT l LIMIT"),
            ],
            &[
                Reply::Int(4),
                bulks(&["1.5", "2", "3", "10"]),
                bulks(&["10", "3", "2", "1.5"]),
                bulks(&["1.5", "10", "2", "3"]),
                bulks(&["2", "3"]),
                bulks(&[]),
                bulks(&["3", "10", "2", "1.5"]),
                bulks(&["1.5", "1.5"]),
                err("ERR BY option of SORT denied in Cluster mode."),
                err("ERR GET option of SORT denied in Cluster mode."),
                Reply::Int(4),
                bulks(&["1.5", "2", "3", "10"]),
                err("ERR syntax error"),
                Reply::Int(2),
                err("ERR One or more scores can't be converted into double"),
                Reply::Int(3),
                // Unsorted: the set's own order, which DESC does not reverse (as in Redis).
                bulks(&["a", "b", "c"]),
                Reply::Int(3),
                bulks(&["w", "y"]),
                Reply::Int(0),
                Reply::Int(0),
                Reply::Ok,
                err(super::super::WRONGTYPE),
                err("ERR syntax error"),
            ],
        );
    }

    #[test]
    fn expire_conditions_follow_redis_7() {
        let now = 1_000_000;
        check(
            &[
                (now, "SET k v"),
                (now, "EXPIRE k 100 XX"),
                (now, "EXPIRE k 100 GT"),
                (now, "EXPIRE k 100 LT"),
                (now, "PTTL k"),
                (now, "EXPIRE k 200 NX"),
                (now, "EXPIRE k 200 GT"),
                (now, "EXPIRE k 50 GT"),
                (now, "EXPIRE k 50 XX LT"),
                (now, "PTTL k"),
                (now, "EXPIRE k 10 NX XX"),
                (now, "EXPIRE k 10 GT LT"),
                (now, "EXPIRE k 10 FOO"),
                (now, "EXPIRE missing 10"),
            ],
            &[
                Reply::Ok,
                Reply::Int(0),
                Reply::Int(0),
                Reply::Int(1),
                Reply::Int(100_000),
                Reply::Int(0),
                Reply::Int(1),
                Reply::Int(0),
                Reply::Int(1),
                Reply::Int(50_000),
                err("ERR NX and XX, GT or LT options at the same time are not compatible"),
                err("ERR GT and LT options at the same time are not compatible"),
                err("ERR Unsupported option FOO"),
                Reply::Int(0),
            ],
        );
    }

    #[test]
    fn absolute_expiries_and_expiretime() {
        let now = 1_700_000_000_000;
        check(
            &[
                (now, "SET k v"),
                (now, "EXPIRETIME k"),
                (now, "EXPIREAT k 1800000000"),
                (now, "EXPIRETIME k"),
                (now, "PEXPIRETIME k"),
                (now, "PEXPIREAT k 1800000000123"),
                (now, "PEXPIRETIME k"),
                (now, "EXPIRETIME missing"),
                // In the past: the key is deleted and the answer is 1.
                (now, "EXPIREAT k 100"),
                (now, "EXISTS k"),
                (now, "SET k v"),
                (now, "EXPIREAT k 9223372036854775807"),
                (now, "PEXPIREAT k 9223372036854775807"),
                (now, "PEXPIRETIME k"),
            ],
            &[
                Reply::Ok,
                Reply::Int(-1),
                Reply::Int(1),
                Reply::Int(1_800_000_000),
                Reply::Int(1_800_000_000_000),
                Reply::Int(1),
                Reply::Int(1_800_000_000_123),
                Reply::Int(-2),
                Reply::Int(1),
                Reply::Int(0),
                Reply::Ok,
                err("ERR invalid expire time in 'expireat' command"),
                Reply::Int(1),
                Reply::Int(i64::MAX),
            ],
        );
    }

    #[test]
    fn rename_copy_and_touch() {
        let (state, replies) = run_lines(&[
            (0, "SET a 1"),
            (0, "PEXPIRE a 5000"),
            (0, "RENAME a b"),
            (0, "RENAME a b"),
            (0, "PTTL b"),
            (0, "RENAME b b"),
            (0, "SET c 3"),
            (0, "RENAMENX b c"),
            (0, "RENAMENX b d"),
            (0, "COPY d e"),
            (0, "COPY d e"),
            (0, "COPY c e REPLACE"),
            (0, "COPY c c"),
            (0, "COPY c f DB 1"),
            (0, "HSET h f v"),
            (0, "COPY h h2"),
            (0, "TOUCH h h2 nothing"),
            (0, "RENAMENX b b"),
        ]);
        assert_eq!(
            replies,
            vec![
                Reply::Ok,
                Reply::Int(1),
                Reply::Ok,
                err("ERR no such key"),
                Reply::Int(5000),
                Reply::Ok,
                Reply::Ok,
                Reply::Int(0),
                Reply::Int(1),
                Reply::Int(1),
                Reply::Int(0),
                Reply::Int(1),
                err("ERR source and destination objects are the same"),
                err("ERR DB index is out of range"),
                Reply::Int(1),
                Reply::Int(1),
                Reply::Int(2),
                err("ERR no such key"),
            ]
        );
        assert_eq!(
            state[&bytes::Bytes::from_static(b"e")].value,
            Value::Str("3".into())
        );
        assert_eq!(
            state[&bytes::Bytes::from_static(b"d")].expires_at_ms,
            Some(5000)
        );
        assert!(state[&bytes::Bytes::from_static(b"h2")].value.type_name() == "hash");
    }
}

#[cfg(test)]
mod transaction_tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::super::{Command, Record, Reply, execute};

    fn parse(line: &str) -> Command {
        let args: Vec<Bytes> = line
            .split_whitespace()
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect();
        Command::parse(&args).expect("valid")
    }

    fn apply(state: &mut BTreeMap<Bytes, Record>, command: &Command) -> Reply {
        let outcome = execute(command, 0, state);
        for (key, record) in outcome.writes {
            match record {
                Some(record) => state.insert(key, record),
                None => state.remove(&key),
            };
        }
        outcome.reply
    }

    fn version_of(state: &mut BTreeMap<Bytes, Record>, key: &str) -> u64 {
        match apply(
            state,
            &Command::Versions {
                keys: vec![Bytes::copy_from_slice(key.as_bytes())],
            },
        ) {
            Reply::Array(versions) => match versions[..] {
                [Reply::Int(version)] => version as u64,
                _ => panic!("one version"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_transaction_runs_in_order_and_fails_whole_when_a_watched_key_changed() {
        let mut state = BTreeMap::new();
        assert_eq!(version_of(&mut state, "k"), 0);
        apply(&mut state, &parse("SET k 1"));
        let seen = version_of(&mut state, "k");
        assert_ne!(seen, 0);
        let transaction = Command::Transaction {
            commands: vec![parse("INCR k"), parse("HSET k f v"), parse("GET k")],
            watched: vec![("k".into(), seen)],
        };
        assert!(transaction.is_write());
        assert_eq!(transaction.keys().len(), 4);
        // Runtime errors do not roll back the others, as in Redis.
        assert_eq!(
            apply(&mut state, &transaction),
            Reply::Array(vec![
                Reply::Int(2),
                Reply::error(super::super::WRONGTYPE),
                Reply::Bulk("2".into()),
            ])
        );
        // `k` changed since it was watched: nothing runs.
        assert_eq!(apply(&mut state, &transaction), Reply::NilArray);
        assert_eq!(apply(&mut state, &parse("GET k")), Reply::Bulk("2".into()));
        // A transaction inside a transaction is refused, not run.
        let nested = Command::Transaction {
            commands: vec![Command::Transaction {
                commands: vec![],
                watched: vec![],
            }],
            watched: vec![],
        };
        assert!(matches!(apply(&mut state, &nested), Reply::Array(ref r) if r[0].is_error()));
    }

    #[test]
    fn transactions_nested_past_the_bound_do_not_decode() {
        let mut command = Command::Transaction {
            commands: vec![],
            watched: vec![],
        };
        for _ in 0..200 {
            command = Command::Transaction {
                commands: vec![command],
                watched: vec![],
            };
        }
        let bytes = postcard::to_allocvec(&command).expect("encodes");
        assert!(postcard::from_bytes::<Command>(&bytes).is_err());
    }
}
