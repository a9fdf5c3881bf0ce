use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A command's keys: nearly every command names one or two, which this holds without an
/// allocation (`keys()` runs several times for every command on its way: the proxy's routing
/// and hot keys, the node's ownership check, hot keys and load).
pub type Keys<'a> = smallvec::SmallVec<[&'a Bytes; 2]>;

use super::{BlockTimeout, KeyCommand, ListCommand, Reply, SetCommand, StringCommand, ZSetCommand};

/// `SET` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub enum SetCondition {
    Always,
    /// `NX`: only if the key does not exist.
    IfAbsent,
    /// `XX`: only if the key exists.
    IfPresent,
}

/// A relative expiry as the client gave it; turned into an absolute time with the entry's
/// timestamp when applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub enum Expiry {
    Seconds(i64),
    Millis(i64),
}

impl Expiry {
    /// Milliseconds, saturating (a huge `EX` must not wrap around into the past).
    pub fn as_millis(self) -> i64 {
        match self {
            Expiry::Seconds(s) => s.saturating_mul(1000),
            Expiry::Millis(ms) => ms,
        }
    }
}

/// The order of one migration step that writes ([`Command::Ingest`], [`Command::TrackSlots`],
/// [`Command::UntrackSlots`]) among all the steps a group is sent: the center leader's Raft
/// term and the count of steps that leader had stamped. Each group is in at most one
/// migration at a time and that migration's task sends one step at a time, so a group applies
/// a stamped page or tracking start only if it is above every stamp it applied: one delivered
/// late (a deposed center leader's, the original of a step retried after a timeout, a
/// network duplicate) cannot undo what a later step or a later attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StepStamp {
    /// The center leader's term (a new leader's steps are above every step of an old one).
    pub term: u64,
    /// The leader's count of stamped steps, from 1.
    pub seq: u64,
}

/// A KV command as replicas execute it. Parsing from Redis arguments is [`Command::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Get {
        key: Bytes,
    },
    Set {
        key: Bytes,
        value: Bytes,
        condition: SetCondition,
        expiry: Option<Expiry>,
        keep_ttl: bool,
    },
    Del {
        keys: Vec<Bytes>,
    },
    Exists {
        keys: Vec<Bytes>,
    },
    IncrBy {
        key: Bytes,
        delta: i64,
    },
    MGet {
        keys: Vec<Bytes>,
    },
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// `EXPIRE`/`PEXPIRE`: replace the key's expiry.
    Expire {
        key: Bytes,
        expiry: Expiry,
    },
    /// `TTL` (`millis: false`) or `PTTL`.
    Ttl {
        key: Bytes,
        millis: bool,
    },
    // New variants go at the end: the log stores commands with their variant index.
    /// `HSET key field value [field value ...]`: answers the number of fields added.
    HSet {
        key: Bytes,
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// `HSETNX key field value`: sets the field only if it is absent (answers 1 or 0).
    HSetNx {
        key: Bytes,
        field: Bytes,
        value: Bytes,
    },
    HGet {
        key: Bytes,
        field: Bytes,
    },
    /// `HMGET key field [field ...]`: nil for each missing field.
    HMGet {
        key: Bytes,
        fields: Vec<Bytes>,
    },
    /// `HDEL key field [field ...]`: answers the number removed; removing the last field
    /// deletes the key.
    HDel {
        key: Bytes,
        fields: Vec<Bytes>,
    },
    /// `HGETALL key`: a flat array `field, value, …` in field order.
    HGetAll {
        key: Bytes,
    },
    HKeys {
        key: Bytes,
    },
    HVals {
        key: Bytes,
    },
    HLen {
        key: Bytes,
    },
    HExists {
        key: Bytes,
        field: Bytes,
    },
    HStrLen {
        key: Bytes,
        field: Bytes,
    },
    /// `HINCRBY key field delta`: a missing field counts as 0.
    HIncrBy {
        key: Bytes,
        field: Bytes,
        delta: i64,
    },
    /// `TYPE key`: `string`, `hash` or `none`.
    Type {
        key: Bytes,
    },
    /// `KEYS pattern` ([`Scope::Group`]): the live keys matching a glob pattern
    /// ([`super::glob_match`]), and of type `kind` if given (`SCAN ... TYPE`, which the proxy
    /// turns into this per group).
    Keys {
        pattern: Bytes,
        kind: Option<Bytes>,
    },
    /// `DBSIZE` ([`Scope::Group`]): the number of live keys.
    DbSize,
    /// `FLUSHALL` / `FLUSHDB`, with or without `ASYNC`/`SYNC` ([`Scope::Group`]): deletes every
    /// key.
    FlushAll,
    /// `APPEND key value`: appends to a string (a missing key counts as empty); replies with
    /// the new length. The log stores commands by variant index: new variants go after it.
    Append {
        key: Bytes,
        value: Bytes,
    },
    /// `PERSIST key`: removes the key's expiry; answers 1 if it had one, 0 if the key is
    /// missing or has none.
    Persist {
        key: Bytes,
    },
    /// Internal, never parsed and refused from clients ([`Command::is_internal`]): an entry
    /// whose only effect is to advance the group clock to its stamp. A read that would see a
    /// key expired by the reading node's wall clock but not yet by the group clock proposes
    /// one first, so the expiry becomes an event in the log that every later read on every
    /// replica sees (ARCHITECTURE.md, "Expiry").
    AdvanceClock,
    /// Internal: from this entry on, the group owns exactly these slots (ignored if its
    /// epoch is not newer than the ownership applied). Proposed by the group's leader when the
    /// center tells it to (`SetOwnedSlots`); commands for keys of other slots are then refused
    /// at apply time with [`super::Reply::NotOwner`].
    OwnSlots {
        ownership: crate::slots::Ownership,
    },
    /// Internal (slot migration `migration`, on the source group): from this entry on, record
    /// every key of `ranges` that changes, so the copy can catch up with writes made while it
    /// runs. Refused (an error reply) while another migration tracks the group. Stamped at or
    /// below a stamp the group applied, it changes nothing and answers OK: late, it would
    /// start recording again for a migration that ended, and hold the group's slots as moving
    /// for good.
    TrackSlots {
        migration: u64,
        ranges: Vec<(u16, u16)>,
        stamp: Option<StepStamp>,
    },
    /// Internal: stop recording for `migration` and forget what was recorded. Applied whatever
    /// its stamp (late, it finds another migration's record or none, and changes nothing),
    /// and raises the group's stamp to it.
    UntrackSlots {
        migration: u64,
        stamp: Option<StepStamp>,
    },
    /// Internal (slot migration: the copy into the target group, the source's cleanup): write
    /// these encoded records as they are (`None`: delete the key), whoever owns their slots,
    /// and advance the group clock to at least `clock_ms` (the source's, so an expiry a client
    /// saw there is never undone here).
    ///
    /// A stamped page applies only if its stamp is above every stamp the group applied
    /// before (see [`StepStamp`]); one that is not changes nothing and answers OK.
    Ingest {
        clock_ms: u64,
        records: Vec<(Bytes, Option<Bytes>)>,
        stamp: Option<StepStamp>,
    },
    /// A list command (`kv::list`).
    ListOp(ListCommand),
    /// A set command (`kv::set`).
    SetOp(SetCommand),
    /// A sorted-set command (`kv::zset`).
    ZSetOp(ZSetCommand),
    /// A string command beyond the first few (`kv::string`).
    StringOp(StringCommand),
    /// A command on keys of any type (`kv::keyspace`).
    KeyOp(KeyCommand),
    /// `WATCH`'s read: the version of each key ([`super::execute`]'s `version`: 0 when
    /// missing).
    Versions {
        keys: Vec<Bytes>,
    },
    /// `MULTI … EXEC` as one log entry: if every watched key still has the version it had
    /// when watched, the commands run one after the other on the same state, atomically (one
    /// entry) and isolated (nothing else applies in between); the reply is the array of their
    /// replies. Otherwise nothing runs and the reply is the null array. Commands are never
    /// transactions themselves (decoding is depth-bounded, see `Reply`).
    Transaction {
        #[serde(deserialize_with = "super::bounded::commands")]
        commands: Vec<Command>,
        watched: Vec<(Bytes, u64)>,
    },
    /// One step of `SCAN` in a slot group ([`Scope::Group`]; the proxy keeps the cursor): the
    /// live keys from `from` on (at it or past it: the empty string starts at the group's
    /// first key, and [`past`]`(last)` goes on after the last key a step looked at), in key
    /// order, matching `pattern` and of type `kind` if given, looking at no more than `count`
    /// live keys. The reply is `[last key looked at, or nil when the group has no more,
    /// [matching keys], live keys looked at]`.
    /// Last of the variants so that the encoding of every older one is unchanged.
    Scan {
        from: Bytes,
        pattern: Bytes,
        kind: Option<Bytes>,
        count: u64,
    },
    /// One step of `HSCAN`, `SSCAN` or `ZSCAN` (the proxy keeps the cursor): the elements of
    /// the collection at `key`, which must be of `kind` (`WRONGTYPE` otherwise), from element
    /// `from` on (at it or past it, as for [`Command::Scan`]), in element order, matching
    /// `pattern`, looking at no more than `count` elements; all of them when the collection
    /// holds at most [`super::elements::SMALL_SCAN_LEN`], as Redis answers a small collection
    /// in one step. The reply is `[last element looked at, or nil when there are no more,
    /// [each element, followed by a hash field's value or a sorted set member's score]]`.
    /// After [`Command::Scan`] so that the encoding of every older variant is unchanged.
    ElementScan {
        key: Bytes,
        kind: super::elements::Kind,
        from: Bytes,
        pattern: Bytes,
        count: u64,
    },
    /// `RANDOMKEY` in one slot group ([`Scope::Group`]): the first live key at or past the key
    /// a [`RandomDescent`](super::RandomDescent) from `seed` settles on, or the group's first
    /// live key when none lies past it; nil when the group holds none. It reads a few dozen
    /// rows, not the group.
    /// Last of the variants so that the encoding of every older one is unchanged.
    RandomKey {
        seed: u64,
    },
    /// A lock command (`kv::lock`): locks with fencing tokens.
    /// Last of the variants so that the encoding of every older one is unchanged.
    LockOp(super::lock::LockCommand),
}

/// The first byte string past `key` in byte order (`key` followed by a zero byte): where a
/// scan that looked at `key` last goes on. A position is inclusive so that the empty string,
/// a valid key and element, is not also the mark for "from the start".
pub fn past(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    Bytes::from(next)
}

/// What a command acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The keys it names ([`Command::keys`]); applied with [`super::execute`].
    Keys,
    /// Every key of the slot group; the node applies it to its whole state (see
    /// [`super::execute_group`]), and [`Command::keys`] is empty.
    Group,
}

/// A command that cannot be executed as given. The texts follow Redis, since clients match on
/// them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("ERR unknown command '{name}'")]
    Unknown { name: String },
    #[error("ERR wrong number of arguments for '{name}' command")]
    Arity { name: String },
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR invalid expire time in '{name}' command")]
    InvalidExpire { name: String },
    #[error("ERR value is not a valid float")]
    NotFloat,
    #[error("ERR offset is out of range")]
    OffsetOutOfRange,
    /// Any other Redis error text, complete with its code.
    #[error("{0}")]
    Message(String),
}

/// `Ok` when the arguments fit the command's arity (`ok`), else Redis's arity error for `name`.
pub(super) fn arity_fits(name: &str, ok: bool) -> Result<(), CommandError> {
    if ok {
        Ok(())
    } else {
        Err(CommandError::Arity {
            name: name.to_string(),
        })
    }
}

pub(super) fn parse_i64(arg: &[u8]) -> Result<i64, CommandError> {
    parse_integer(arg).ok_or(CommandError::NotInteger)
}

/// Parses a 64-bit integer exactly as Redis's `string2ll` does: optional `-`, no `+`, no
/// leading zeros (except `0` itself, so `-0` is rejected), no spaces, within `i64`.
pub(super) fn parse_integer(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = match digits {
        [b'0'] => digits.len() == text.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    if !canonical {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

impl Command {
    /// `SET key value` with no condition or expiry.
    pub fn set(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Command {
        Command::Set {
            key: Bytes::copy_from_slice(key.as_ref()),
            value: Bytes::copy_from_slice(value.as_ref()),
            condition: SetCondition::Always,
            expiry: None,
            keep_ttl: false,
        }
    }

    /// `GET key`.
    pub fn get(key: impl AsRef<[u8]>) -> Command {
        Command::Get {
            key: Bytes::copy_from_slice(key.as_ref()),
        }
    }

    /// Parses a command from its Redis arguments (`args[0]` is the name, any case).
    pub fn parse(args: &[Bytes]) -> Result<Command, CommandError> {
        let Some(name) = args.first() else {
            return Err(CommandError::Syntax);
        };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let rest = &args[1..];
        let arity = |ok: bool| arity_fits(&name, ok);
        match name.as_str() {
            "get" => {
                arity(rest.len() == 1)?;
                Ok(Command::Get {
                    key: rest[0].clone(),
                })
            }
            "append" => {
                arity(rest.len() == 2)?;
                Ok(Command::Append {
                    key: rest[0].clone(),
                    value: rest[1].clone(),
                })
            }
            "set" => {
                arity(rest.len() >= 2)?;
                match StringCommand::parse_set(rest) {
                    Some(parsed) => parsed.map(Command::StringOp),
                    None => Self::parse_set(&name, rest),
                }
            }
            "del" | "unlink" => {
                arity(!rest.is_empty())?;
                Ok(Command::Del {
                    keys: rest.to_vec(),
                })
            }
            "exists" => {
                arity(!rest.is_empty())?;
                Ok(Command::Exists {
                    keys: rest.to_vec(),
                })
            }
            "incr" | "decr" => {
                arity(rest.len() == 1)?;
                let delta = if name == "incr" { 1 } else { -1 };
                Ok(Command::IncrBy {
                    key: rest[0].clone(),
                    delta,
                })
            }
            "incrby" | "decrby" => {
                arity(rest.len() == 2)?;
                let delta = parse_i64(&rest[1])?;
                let delta = if name == "incrby" {
                    delta
                } else {
                    delta.checked_neg().ok_or(CommandError::NotInteger)?
                };
                Ok(Command::IncrBy {
                    key: rest[0].clone(),
                    delta,
                })
            }
            "mget" => {
                arity(!rest.is_empty())?;
                Ok(Command::MGet {
                    keys: rest.to_vec(),
                })
            }
            "mset" => {
                arity(!rest.is_empty() && rest.len().is_multiple_of(2))?;
                let pairs = rest
                    .chunks_exact(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect();
                Ok(Command::MSet { pairs })
            }
            "expire" | "pexpire" if rest.len() == 2 => {
                let amount = parse_i64(&rest[1])?;
                let expiry = if name == "expire" {
                    // Redis 7.0: seconds must convert to milliseconds without overflow; a
                    // negative amount is valid (it deletes the key).
                    if !(i64::MIN / 1000..=i64::MAX / 1000).contains(&amount) {
                        return Err(CommandError::InvalidExpire { name });
                    }
                    Expiry::Seconds(amount)
                } else {
                    Expiry::Millis(amount)
                };
                Ok(Command::Expire {
                    key: rest[0].clone(),
                    expiry,
                })
            }
            "persist" => {
                arity(rest.len() == 1)?;
                Ok(Command::Persist {
                    key: rest[0].clone(),
                })
            }
            "ttl" | "pttl" => {
                arity(rest.len() == 1)?;
                Ok(Command::Ttl {
                    key: rest[0].clone(),
                    millis: name == "pttl",
                })
            }
            "hset" => {
                arity(rest.len() >= 3 && rest.len() % 2 == 1)?;
                Ok(Command::HSet {
                    key: rest[0].clone(),
                    pairs: rest[1..]
                        .chunks_exact(2)
                        .map(|pair| (pair[0].clone(), pair[1].clone()))
                        .collect(),
                })
            }
            "hsetnx" => {
                arity(rest.len() == 3)?;
                Ok(Command::HSetNx {
                    key: rest[0].clone(),
                    field: rest[1].clone(),
                    value: rest[2].clone(),
                })
            }
            "hget" | "hexists" | "hstrlen" => {
                arity(rest.len() == 2)?;
                let (key, field) = (rest[0].clone(), rest[1].clone());
                Ok(match name.as_str() {
                    "hget" => Command::HGet { key, field },
                    "hexists" => Command::HExists { key, field },
                    _ => Command::HStrLen { key, field },
                })
            }
            "hmget" | "hdel" => {
                arity(rest.len() >= 2)?;
                let (key, fields) = (rest[0].clone(), rest[1..].to_vec());
                Ok(if name == "hmget" {
                    Command::HMGet { key, fields }
                } else {
                    Command::HDel { key, fields }
                })
            }
            "hgetall" | "hkeys" | "hvals" | "hlen" | "type" => {
                arity(rest.len() == 1)?;
                let key = rest[0].clone();
                Ok(match name.as_str() {
                    "hgetall" => Command::HGetAll { key },
                    "hkeys" => Command::HKeys { key },
                    "hvals" => Command::HVals { key },
                    "hlen" => Command::HLen { key },
                    _ => Command::Type { key },
                })
            }
            "hincrby" => {
                arity(rest.len() == 3)?;
                Ok(Command::HIncrBy {
                    key: rest[0].clone(),
                    field: rest[1].clone(),
                    delta: parse_i64(&rest[2])?,
                })
            }
            "keys" => {
                arity(rest.len() == 1)?;
                Ok(Command::Keys {
                    pattern: rest[0].clone(),
                    kind: None,
                })
            }
            "dbsize" => {
                arity(rest.is_empty())?;
                Ok(Command::DbSize)
            }
            "flushall" | "flushdb" => match rest {
                [] => Ok(Command::FlushAll),
                [mode]
                    if mode.eq_ignore_ascii_case(b"async")
                        || mode.eq_ignore_ascii_case(b"sync") =>
                {
                    Ok(Command::FlushAll)
                }
                _ => Err(CommandError::Syntax),
            },
            _ => {
                if let Some(parsed) = ListCommand::parse(&name, rest) {
                    return parsed.map(Command::ListOp);
                }
                if let Some(parsed) = SetCommand::parse(&name, rest) {
                    return parsed.map(Command::SetOp);
                }
                if let Some(parsed) = ZSetCommand::parse(&name, rest) {
                    return parsed.map(Command::ZSetOp);
                }
                if let Some(parsed) = StringCommand::parse(&name, rest) {
                    return parsed.map(Command::StringOp);
                }
                if let Some(parsed) = KeyCommand::parse(&name, rest) {
                    return parsed.map(Command::KeyOp);
                }
                if let Some(parsed) = super::lock::LockCommand::parse(&name, rest) {
                    return parsed.map(Command::LockOp);
                }
                Err(CommandError::Unknown { name })
            }
        }
    }

    /// Whether `name` (any case) is a blocking command: [`Command::parse_blocking`] parses it.
    pub fn is_blocking_name(name: &[u8]) -> bool {
        let name = String::from_utf8_lossy(name);
        super::list::is_blocking(&name)
            || ["bzpopmin", "bzpopmax", "bzmpop"]
                .iter()
                .any(|blocking| name.eq_ignore_ascii_case(blocking))
    }

    /// Parses a blocking command (`BLPOP`, `BRPOP`, `BLMPOP`, `BLMOVE`, `BRPOPLPUSH`,
    /// `BZPOPMIN`, `BZPOPMAX`, `BZMPOP`): the
    /// non-blocking command a proxy polls until it yields (a reply other than nil or the null
    /// array) and how long to wait (0: for ever). `None` when `args` is no blocking command.
    pub fn parse_blocking(args: &[Bytes]) -> Option<Result<(Command, BlockTimeout), CommandError>> {
        let name = String::from_utf8_lossy(args.first()?).to_ascii_lowercase();
        let rest = &args[1..];
        if let Some(parsed) = super::list::parse_blocking(&name, rest) {
            return Some(parsed.map(|(command, timeout)| (Command::ListOp(command), timeout)));
        }
        if let Some(parsed) = ZSetCommand::parse_blocking(&name, rest) {
            return Some(parsed.map(|(command, timeout_ms)| {
                (Command::ZSetOp(command), BlockTimeout(timeout_ms))
            }));
        }
        None
    }

    /// Gives a command that picks at random (`SPOP`, `SRANDMEMBER`, `HRANDFIELD`,
    /// `ZRANDMEMBER`) the seed of its choice. The proxy draws one per request, so every
    /// replica applying the entry picks the same members and each request picks afresh.
    pub fn reseed(&mut self, seed: u64) {
        match self {
            Command::ZSetOp(command) => command.reseed(seed),
            Command::SetOp(command) => command.reseed(seed),
            Command::Transaction { commands, .. } => {
                for (index, command) in commands.iter_mut().enumerate() {
                    command.reseed(seed.wrapping_add(index as u64));
                }
            }
            _ => {}
        }
    }

    /// The keys whose filling lets a polled blocking command ([`Command::parse_blocking`])
    /// yield: what a proxy watches (cheaply, by reading) before it polls again.
    pub fn block_sources(&self) -> Keys<'_> {
        match self {
            Command::ListOp(ListCommand::Move { source, .. }) => smallvec::smallvec![source],
            other => other.keys(),
        }
    }

    /// What a blocking command answers when its timeout passes: nil for `BLMOVE` and
    /// `BRPOPLPUSH`, the null array for the others (as their polled forms answer on nothing).
    pub fn timed_out_reply(&self) -> Reply {
        match self {
            Command::ListOp(ListCommand::Move { .. }) => Reply::Nil,
            _ => Reply::NilArray,
        }
    }

    fn parse_set(name: &str, rest: &[Bytes]) -> Result<Command, CommandError> {
        let mut condition = SetCondition::Always;
        let mut expiry = None;
        let mut keep_ttl = false;
        let mut options = rest[2..].iter();
        while let Some(option) = options.next() {
            let option = String::from_utf8_lossy(option).to_ascii_lowercase();
            match option.as_str() {
                "nx" if condition == SetCondition::Always => condition = SetCondition::IfAbsent,
                "xx" if condition == SetCondition::Always => condition = SetCondition::IfPresent,
                "keepttl" if expiry.is_none() => keep_ttl = true,
                "ex" | "px" if expiry.is_none() && !keep_ttl => {
                    let amount = parse_i64(options.next().ok_or(CommandError::Syntax)?)?;
                    // Redis 7.0: positive, and in seconds small enough to count in ms.
                    if amount <= 0 || (option == "ex" && amount > i64::MAX / 1000) {
                        return Err(CommandError::InvalidExpire {
                            name: name.to_string(),
                        });
                    }
                    expiry = Some(if option == "ex" {
                        Expiry::Seconds(amount)
                    } else {
                        Expiry::Millis(amount)
                    });
                }
                _ => return Err(CommandError::Syntax),
            }
        }
        Ok(Command::Set {
            key: rest[0].clone(),
            value: rest[1].clone(),
            condition,
            expiry,
            keep_ttl,
        })
    }

    /// True for commands that change state and so go through the Raft log; the rest are served
    /// by a linearizable read on the leader.
    pub fn is_write(&self) -> bool {
        match self {
            Command::ListOp(command) => return command.is_write(),
            Command::SetOp(command) => return command.is_write(),
            Command::ZSetOp(command) => return command.is_write(),
            Command::StringOp(command) => return command.is_write(),
            Command::KeyOp(command) => return command.is_write(),
            Command::LockOp(command) => return command.is_write(),
            Command::Transaction { commands, .. } => {
                return commands.iter().any(Command::is_write);
            }
            _ => {}
        }
        !matches!(
            self,
            Command::Get { .. }
                | Command::Exists { .. }
                | Command::MGet { .. }
                | Command::Ttl { .. }
                | Command::HGet { .. }
                | Command::HMGet { .. }
                | Command::HGetAll { .. }
                | Command::HKeys { .. }
                | Command::HVals { .. }
                | Command::HLen { .. }
                | Command::HExists { .. }
                | Command::HStrLen { .. }
                | Command::Type { .. }
                | Command::Keys { .. }
                | Command::Scan { .. }
                | Command::ElementScan { .. }
                | Command::RandomKey { .. }
                | Command::DbSize
                | Command::Versions { .. }
        )
    }

    /// Commands only a node itself proposes ([`Command::AdvanceClock`]): a node answers a
    /// client that sends one with an unknown-command error.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Command::AdvanceClock
                | Command::OwnSlots { .. }
                | Command::TrackSlots { .. }
                | Command::UntrackSlots { .. }
                | Command::Ingest { .. }
        )
    }

    /// Whether a leader may answer this write without a log entry when executing it would
    /// change nothing (the storage node's unchanged writes): a client's write of the keys it
    /// names. Not a transaction (its commands are answered together, at its entry), not
    /// `FLUSHALL` (a whole group) or a command only nodes propose.
    pub fn may_be_unchanged(&self) -> bool {
        self.is_write()
            && self.scope() == Scope::Keys
            && !self.is_internal()
            && !matches!(self, Command::Transaction { .. })
    }

    /// Whether the command acts on the keys it names or on a whole slot group.
    pub fn scope(&self) -> Scope {
        match self {
            Command::Keys { .. }
            | Command::Scan { .. }
            | Command::RandomKey { .. }
            | Command::DbSize
            | Command::FlushAll => Scope::Group,
            _ => Scope::Keys,
        }
    }

    /// Every key the command reads or writes, in argument order (duplicates kept). Empty for
    /// [`Scope::Group`] commands, which name no keys.
    pub fn keys(&self) -> Keys<'_> {
        match self {
            Command::Get { key }
            | Command::Set { key, .. }
            | Command::IncrBy { key, .. }
            | Command::Expire { key, .. }
            | Command::Ttl { key, .. }
            | Command::HSet { key, .. }
            | Command::HSetNx { key, .. }
            | Command::HGet { key, .. }
            | Command::HMGet { key, .. }
            | Command::HDel { key, .. }
            | Command::HGetAll { key }
            | Command::HKeys { key }
            | Command::HVals { key }
            | Command::HLen { key }
            | Command::HExists { key, .. }
            | Command::HStrLen { key, .. }
            | Command::HIncrBy { key, .. }
            | Command::Append { key, .. }
            | Command::Persist { key }
            | Command::ElementScan { key, .. }
            | Command::Type { key } => smallvec::smallvec![key],
            Command::Del { keys } | Command::Exists { keys } | Command::MGet { keys } => {
                keys.iter().collect()
            }
            Command::MSet { pairs } => pairs.iter().map(|(key, _)| key).collect(),
            Command::ListOp(command) => command.keys(),
            Command::SetOp(command) => command.keys(),
            Command::ZSetOp(command) => command.keys(),
            Command::StringOp(command) => command.keys(),
            Command::KeyOp(command) => command.keys(),
            Command::LockOp(command) => command.keys(),
            Command::Versions { keys } => keys.iter().collect(),
            Command::Transaction { commands, watched } => commands
                .iter()
                .flat_map(Command::keys)
                .chain(watched.iter().map(|(key, _)| key))
                .collect(),
            Command::Keys { .. }
            | Command::Scan { .. }
            | Command::RandomKey { .. }
            | Command::DbSize
            | Command::FlushAll
            | Command::AdvanceClock
            | Command::OwnSlots { .. }
            | Command::TrackSlots { .. }
            | Command::UntrackSlots { .. }
            | Command::Ingest { .. } => Keys::new(),
        }
    }

    /// The command's name as clients spell it, for errors and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get { .. } => "get",
            Command::Set { .. } => "set",
            Command::Del { .. } => "del",
            Command::Exists { .. } => "exists",
            Command::IncrBy { .. } => "incrby",
            Command::Append { .. } => "append",
            Command::MGet { .. } => "mget",
            Command::MSet { .. } => "mset",
            Command::Expire { .. } => "expire",
            Command::Ttl { .. } => "ttl",
            Command::HSet { .. } => "hset",
            Command::HSetNx { .. } => "hsetnx",
            Command::HGet { .. } => "hget",
            Command::HMGet { .. } => "hmget",
            Command::HDel { .. } => "hdel",
            Command::HGetAll { .. } => "hgetall",
            Command::HKeys { .. } => "hkeys",
            Command::HVals { .. } => "hvals",
            Command::HLen { .. } => "hlen",
            Command::HExists { .. } => "hexists",
            Command::HStrLen { .. } => "hstrlen",
            Command::HIncrBy { .. } => "hincrby",
            Command::Type { .. } => "type",
            Command::Keys { .. } => "keys",
            Command::Scan { .. } => "scan",
            Command::ElementScan { kind, .. } => match kind {
                super::elements::Kind::Hash => "hscan",
                super::elements::Kind::Set => "sscan",
                super::elements::Kind::ZSet => "zscan",
                // Never built: a list has no scan (the step answers an error).
                super::elements::Kind::List => "lscan",
            },
            Command::RandomKey { .. } => "randomkey",
            Command::DbSize => "dbsize",
            Command::FlushAll => "flushall",
            Command::Persist { .. } => "persist",
            Command::AdvanceClock => "advance-clock",
            Command::OwnSlots { .. } => "own-slots",
            Command::TrackSlots { .. } => "track-slots",
            Command::UntrackSlots { .. } => "untrack-slots",
            Command::Ingest { .. } => "ingest",
            Command::ListOp(command) => command.name(),
            Command::SetOp(command) => command.name(),
            Command::ZSetOp(command) => command.name(),
            Command::StringOp(command) => command.name(),
            Command::KeyOp(command) => command.name(),
            Command::LockOp(command) => command.name(),
            Command::Versions { .. } => "watch",
            Command::Transaction { .. } => "exec",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split_whitespace()
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect()
    }

    fn check(line: &str, expected: Result<Command, CommandError>) {
        assert_eq!(Command::parse(&args(line)), expected, "parsing {line:?}");
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn parses_the_string_commands() {
        check("GET k", Ok(Command::Get { key: b("k") }));
        check(
            "set k v nx px 250",
            Ok(Command::Set {
                key: b("k"),
                value: b("v"),
                condition: SetCondition::IfAbsent,
                expiry: Some(Expiry::Millis(250)),
                keep_ttl: false,
            }),
        );
        check(
            "decrby k 5",
            Ok(Command::IncrBy {
                key: b("k"),
                delta: -5,
            }),
        );
        check(
            "mset a 1 b 2",
            Ok(Command::MSet {
                pairs: vec![(b("a"), b("1")), (b("b"), b("2"))],
            }),
        );
        check(
            "pttl k",
            Ok(Command::Ttl {
                key: b("k"),
                millis: true,
            }),
        );
    }

    #[test]
    fn expire_times_out_of_redis_range_are_refused_at_parse() {
        let invalid = |name: &str| {
            Err(CommandError::InvalidExpire {
                name: name.to_string(),
            })
        };
        // The examples, answered as Redis 7.0 does.
        check("SET k v EX 10000000000000000", invalid("set"));
        check("EXPIRE k -9223372036854775808", invalid("expire"));
        check("EXPIRE k 9223372036854776", invalid("expire"));
        check("SET k v EX 0", invalid("set"));
        check("SET k v PX -1", invalid("set"));
        // At the edges they parse (the group clock decides the rest when applied).
        assert!(Command::parse(&args("SET k v EX 9223372036854775")).is_ok());
        assert!(Command::parse(&args("EXPIRE k -9223372036854775")).is_ok());
        assert!(Command::parse(&args("PEXPIRE k -9223372036854775808")).is_ok());
        assert!(Command::parse(&args("SET k v PX 9223372036854775807")).is_ok());
    }

    #[test]
    fn rejects_bad_input_with_redis_errors() {
        check("get", Err(CommandError::Arity { name: "get".into() }));
        check("set k v nx xx", Err(CommandError::Syntax));
        check(
            "set k v ex 0",
            Err(CommandError::InvalidExpire { name: "set".into() }),
        );
        check("set k v ex", Err(CommandError::Syntax));
        check("set k v ex ten", Err(CommandError::NotInteger));
        check("set k v ex 1 px 1", Err(CommandError::Syntax));
        check(
            "mset a 1 b",
            Err(CommandError::Arity {
                name: "mset".into(),
            }),
        );
        check(
            "decrby k -9223372036854775808",
            Err(CommandError::NotInteger),
        );
        check(
            "flyto moon",
            Err(CommandError::Unknown {
                name: "flyto".into(),
            }),
        );
        assert_eq!(Command::parse(&[]), Err(CommandError::Syntax));
    }

    fn arity(name: &str) -> Result<Command, CommandError> {
        Err(CommandError::Arity { name: name.into() })
    }

    #[test]
    fn parses_the_hash_commands() {
        check(
            "HSET h f1 v1 f2 v2",
            Ok(Command::HSet {
                key: b("h"),
                pairs: vec![(b("f1"), b("v1")), (b("f2"), b("v2"))],
            }),
        );
        check(
            "hsetnx h f v",
            Ok(Command::HSetNx {
                key: b("h"),
                field: b("f"),
                value: b("v"),
            }),
        );
        check(
            "hget h f",
            Ok(Command::HGet {
                key: b("h"),
                field: b("f"),
            }),
        );
        check(
            "hmget h a b a",
            Ok(Command::HMGet {
                key: b("h"),
                fields: vec![b("a"), b("b"), b("a")],
            }),
        );
        check(
            "hdel h a b",
            Ok(Command::HDel {
                key: b("h"),
                fields: vec![b("a"), b("b")],
            }),
        );
        check("hgetall h", Ok(Command::HGetAll { key: b("h") }));
        check("hkeys h", Ok(Command::HKeys { key: b("h") }));
        check("hvals h", Ok(Command::HVals { key: b("h") }));
        check("hlen h", Ok(Command::HLen { key: b("h") }));
        check(
            "hexists h f",
            Ok(Command::HExists {
                key: b("h"),
                field: b("f"),
            }),
        );
        check(
            "hstrlen h f",
            Ok(Command::HStrLen {
                key: b("h"),
                field: b("f"),
            }),
        );
        check(
            "HINCRBY h f -7",
            Ok(Command::HIncrBy {
                key: b("h"),
                field: b("f"),
                delta: -7,
            }),
        );
        check("type k", Ok(Command::Type { key: b("k") }));
    }

    #[test]
    fn rejects_bad_hash_commands() {
        check("hset", arity("hset"));
        check("hset h", arity("hset"));
        check("hset h f", arity("hset"));
        check("hset h f v g", arity("hset"));
        check("hsetnx h f", arity("hsetnx"));
        check("hsetnx h f v w", arity("hsetnx"));
        check("hget h", arity("hget"));
        check("hget h f g", arity("hget"));
        check("hmget h", arity("hmget"));
        check("hdel h", arity("hdel"));
        check("hgetall", arity("hgetall"));
        check("hgetall h x", arity("hgetall"));
        check("hkeys", arity("hkeys"));
        check("hvals h x", arity("hvals"));
        check("hlen", arity("hlen"));
        check("hexists h", arity("hexists"));
        check("hstrlen h", arity("hstrlen"));
        check("hincrby h f", arity("hincrby"));
        check("hincrby h f 1 2", arity("hincrby"));
        check("hincrby h f one", Err(CommandError::NotInteger));
        check(
            "hincrby h f 9223372036854775808",
            Err(CommandError::NotInteger),
        );
        check("type", arity("type"));
        check("type a b", arity("type"));
    }

    #[test]
    fn parses_the_group_commands() {
        check(
            "KEYS user:*",
            Ok(Command::Keys {
                pattern: b("user:*"),
                kind: None,
            }),
        );
        check("dbsize", Ok(Command::DbSize));
        for line in [
            "flushall",
            "FLUSHDB",
            "flushall async",
            "flushdb SYNC",
            "FlushAll Async",
        ] {
            check(line, Ok(Command::FlushAll));
        }
        check("keys", arity("keys"));
        check("keys a b", arity("keys"));
        check("dbsize x", arity("dbsize"));
        check("flushall now", Err(CommandError::Syntax));
        check("flushdb async sync", Err(CommandError::Syntax));
    }

    #[test]
    fn integers_parse_as_redis_string2ll_does() {
        for (text, expected) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("-7", Some(-7)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-0", None),
            ("+1", None),
            ("01", None),
            ("00", None),
            (" 1", None),
            ("1 ", None),
            ("", None),
            ("-", None),
            ("1e3", None),
            ("0x10", None),
        ] {
            assert_eq!(parse_integer(text.as_bytes()), expected, "{text:?}");
        }
        check("incrby k +5", Err(CommandError::NotInteger));
        check("expire k 010", Err(CommandError::NotInteger));
    }

    #[test]
    fn classifies_commands() {
        let parse = |line: &str| Command::parse(&args(line)).expect("valid command");
        let reads = [
            "get k",
            "exists k",
            "mget k",
            "ttl k",
            "hget k f",
            "hmget k f",
            "hgetall k",
            "hkeys k",
            "hvals k",
            "hlen k",
            "hexists k f",
            "hstrlen k f",
            "type k",
            "keys *",
            "dbsize",
        ];
        let writes = [
            "set k v",
            "del k",
            "incr k",
            "mset k v",
            "expire k 1",
            "hset k f v",
            "hsetnx k f v",
            "hdel k f",
            "hincrby k f 1",
            "flushall",
        ];
        for (lines, write) in [(&reads[..], false), (&writes[..], true)] {
            for line in lines {
                let command = parse(line);
                assert_eq!(command.is_write(), write, "{line}");
                let name = line.split_whitespace().next().unwrap_or_default();
                let expected_name = match name {
                    "incr" => "incrby",
                    other => other,
                };
                assert_eq!(command.name(), expected_name, "{line}");
                let group = matches!(name, "keys" | "dbsize" | "flushall");
                assert_eq!(
                    command.scope(),
                    if group { Scope::Group } else { Scope::Keys },
                    "{line}"
                );
                let expected_keys: Vec<Bytes> = if group { vec![] } else { vec![b("k")] };
                assert_eq!(
                    command.keys().into_iter().cloned().collect::<Vec<_>>(),
                    expected_keys,
                    "{line}"
                );
            }
        }
        assert_eq!(parse("flushdb").name(), "flushall");
        assert_eq!(
            parse("hdel h a b a").keys().as_slice(),
            [&b("h")],
            "fields are not keys"
        );
    }
}
