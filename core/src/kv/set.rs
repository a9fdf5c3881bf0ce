//! Set commands. Each family of collection commands lives in its own module with the same
//! shape: an enum of its commands (stored in the log inside [`Command`], so variants are only
//! ever added at the end), parsing from Redis arguments, classification, and execution over a
//! [`View`].
//!
//! This module also holds a few hash commands that came with the collections (`HSCAN`,
//! `HRANDFIELD`, `HINCRBYFLOAT`, `HMSET`), over the hash helpers of [`View`].
//!
//! Commands that choose at random (`SPOP`, `SRANDMEMBER`, `HRANDFIELD`) carry a seed, 0 when
//! parsed, that the proxy sets per request ([`SetCommand::reseed`]): replicas draw from it, so
//! every replica removes the same members.
//!
//! `SSCAN`/`HSCAN` cursors: members are visited in the order of a fixed 63-bit hash of each
//! member, and the cursor is the hash to resume from (0: start, and end). A member's place in
//! that order depends on nothing else, so, as Redis guarantees, every member present for the
//! whole scan is returned whatever is added or removed meanwhile (an index into the sorted
//! members would skip some when earlier ones are removed, as the suite's issue #4906 test
//! does). Members sharing a hash are never split between two pages.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::command::parse_integer;
use super::command::{Keys, arity_fits};
use super::execute::View;
use super::{CommandError, NOT_INTEGER, Record, Reply, Value, WRONGTYPE, glob_match};

use long_double::LongDouble;

/// The members of a missing set.
static NO_MEMBERS: BTreeSet<Bytes> = BTreeSet::new();

/// How `SINTER`, `SUNION` and `SDIFF` (and their `STORE` forms) combine their sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Combine {
    Inter,
    Union,
    Diff,
}

/// A set command (and the hash extras) as replicas execute it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCommand {
    /// `SADD key member [member ...]`: answers the number added.
    SAdd {
        key: Bytes,
        members: Vec<Bytes>,
    },
    /// `SREM key member [member ...]`: answers the number removed.
    SRem {
        key: Bytes,
        members: Vec<Bytes>,
    },
    SMembers {
        key: Bytes,
    },
    SIsMember {
        key: Bytes,
        member: Bytes,
    },
    SMIsMember {
        key: Bytes,
        members: Vec<Bytes>,
    },
    SCard {
        key: Bytes,
    },
    /// `SPOP key [count]`: without a count a bulk (or nil), with one an array.
    SPop {
        key: Bytes,
        count: Option<u64>,
        seed: u64,
    },
    /// `SRANDMEMBER key [count]`: a negative count may repeat members.
    SRandMember {
        key: Bytes,
        count: Option<i64>,
        seed: u64,
    },
    /// `SMOVE source destination member`.
    SMove {
        source: Bytes,
        destination: Bytes,
        member: Bytes,
    },
    /// `SINTER`/`SUNION`/`SDIFF key [key ...]`.
    Combine {
        how: Combine,
        keys: Vec<Bytes>,
    },
    /// `SINTERSTORE`/`SUNIONSTORE`/`SDIFFSTORE destination key [key ...]`.
    CombineStore {
        how: Combine,
        destination: Bytes,
        keys: Vec<Bytes>,
    },
    /// `SINTERCARD numkeys key [key ...] [LIMIT limit]` (limit 0: none).
    SInterCard {
        keys: Vec<Bytes>,
        limit: u64,
    },
    /// `SSCAN key cursor [MATCH pattern] [COUNT count]` with a cursor of positions in a hash
    /// order, as it was parsed before the proxy kept the cursors and sent steps of
    /// [`Command::ElementScan`](super::Command::ElementScan): no longer built, kept so that log
    /// entries holding one (inside a transaction) decode and execute as they did, and the
    /// variants after it keep their encoding.
    SScan {
        key: Bytes,
        cursor: u64,
        options: Vec<Bytes>,
    },
    /// `HSCAN key cursor [MATCH pattern] [COUNT count]`, as [`SetCommand::SScan`]: no longer
    /// built.
    HScan {
        key: Bytes,
        cursor: u64,
        options: Vec<Bytes>,
    },
    /// `HRANDFIELD key [count [WITHVALUES]]`.
    HRandField {
        key: Bytes,
        count: Option<i64>,
        with_values: bool,
        seed: u64,
    },
    /// `HINCRBYFLOAT key field increment`; the increment as given (checked when parsed).
    HIncrByFloat {
        key: Bytes,
        field: Bytes,
        increment: Bytes,
    },
    /// `HMSET key field value [field value ...]`: `HSET` answering OK.
    HMSet {
        key: Bytes,
        pairs: Vec<(Bytes, Bytes)>,
    },
}

const NAMES: &[&str] = &[
    "sadd",
    "srem",
    "smembers",
    "sismember",
    "smismember",
    "scard",
    "spop",
    "srandmember",
    "smove",
    "sinter",
    "sunion",
    "sdiff",
    "sinterstore",
    "sunionstore",
    "sdiffstore",
    "sintercard",
    "hrandfield",
    "hincrbyfloat",
    "hmset",
];

fn message(text: &str) -> CommandError {
    CommandError::Message(text.to_string())
}

/// `getRangeLongFromObjectOrReply(-LONG_MAX, LONG_MAX)` as `SRANDMEMBER` and `HRANDFIELD`
/// parse their count.
fn parse_signed_count(arg: &[u8]) -> Result<i64, CommandError> {
    match parse_integer(arg) {
        None => Err(CommandError::NotInteger),
        Some(i64::MIN) => Err(message(
            "ERR value is out of range, value must between -9223372036854775807 and \
             9223372036854775807",
        )),
        Some(count) => Ok(count),
    }
}

/// Refuses a negative count asking for more than [`super::RANDOM_PICKS_MAX`] picks (after
/// Redis's own range checks, so their texts come first).
fn bound_picks(count: i64) -> Result<i64, CommandError> {
    if count < -super::RANDOM_PICKS_MAX {
        Err(message(super::RANDOM_PICKS_TOO_MANY))
    } else {
        Ok(count)
    }
}

impl SetCommand {
    /// Parses the command named `name` (lower case) from its arguments after the name;
    /// `None` when `name` is not a set command.
    pub(super) fn parse(name: &str, rest: &[Bytes]) -> Option<Result<SetCommand, CommandError>> {
        NAMES.contains(&name).then(|| Self::parse_known(name, rest))
    }

    fn parse_known(name: &str, rest: &[Bytes]) -> Result<SetCommand, CommandError> {
        let arity = |ok: bool| arity_fits(name, ok);
        let key = || rest[0].clone();
        Ok(match name {
            "sadd" | "srem" | "smismember" => {
                arity(rest.len() >= 2)?;
                let members = rest[1..].to_vec();
                match name {
                    "sadd" => SetCommand::SAdd {
                        key: key(),
                        members,
                    },
                    "srem" => SetCommand::SRem {
                        key: key(),
                        members,
                    },
                    _ => SetCommand::SMIsMember {
                        key: key(),
                        members,
                    },
                }
            }
            "smembers" | "scard" => {
                arity(rest.len() == 1)?;
                if name == "smembers" {
                    SetCommand::SMembers { key: key() }
                } else {
                    SetCommand::SCard { key: key() }
                }
            }
            "sismember" => {
                arity(rest.len() == 2)?;
                SetCommand::SIsMember {
                    key: key(),
                    member: rest[1].clone(),
                }
            }
            "spop" | "srandmember" => {
                arity(!rest.is_empty())?;
                if rest.len() > 2 {
                    return Err(CommandError::Syntax);
                }
                if name == "spop" {
                    let count = match rest.get(1) {
                        None => None,
                        Some(arg) => match parse_integer(arg) {
                            Some(count) if count >= 0 => Some(count as u64),
                            _ => {
                                return Err(message("ERR value is out of range, must be positive"));
                            }
                        },
                    };
                    SetCommand::SPop {
                        key: key(),
                        count,
                        seed: 0,
                    }
                } else {
                    let count = rest
                        .get(1)
                        .map(|arg| parse_signed_count(arg).and_then(bound_picks))
                        .transpose()?;
                    SetCommand::SRandMember {
                        key: key(),
                        count,
                        seed: 0,
                    }
                }
            }
            "smove" => {
                arity(rest.len() == 3)?;
                SetCommand::SMove {
                    source: key(),
                    destination: rest[1].clone(),
                    member: rest[2].clone(),
                }
            }
            "sinter" | "sunion" | "sdiff" => {
                arity(!rest.is_empty())?;
                SetCommand::Combine {
                    how: combine_of(name),
                    keys: rest.to_vec(),
                }
            }
            "sinterstore" | "sunionstore" | "sdiffstore" => {
                arity(rest.len() >= 2)?;
                SetCommand::CombineStore {
                    how: combine_of(name),
                    destination: key(),
                    keys: rest[1..].to_vec(),
                }
            }
            "sintercard" => {
                arity(rest.len() >= 2)?;
                let numkeys = parse_integer(&rest[0])
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| message("ERR numkeys should be greater than 0"))?;
                let args = &rest[1..];
                if numkeys as u64 > args.len() as u64 {
                    return Err(message(
                        "ERR Number of keys can't be greater than number of args",
                    ));
                }
                let (keys, mut options) = args.split_at(numkeys as usize);
                let mut limit = 0;
                while let Some((option, after)) = options.split_first() {
                    match after.first() {
                        Some(value) if option.eq_ignore_ascii_case(b"limit") => {
                            limit = parse_integer(value)
                                .filter(|limit| *limit >= 0)
                                .ok_or_else(|| message("ERR LIMIT can't be negative"))?
                                as u64;
                            options = &after[1..];
                        }
                        _ => return Err(CommandError::Syntax),
                    }
                }
                SetCommand::SInterCard {
                    keys: keys.to_vec(),
                    limit,
                }
            }
            "hrandfield" => {
                arity(!rest.is_empty())?;
                let mut with_values = false;
                let count = match rest.get(1) {
                    None => None,
                    Some(arg) => {
                        let count = parse_signed_count(arg)?;
                        match &rest[2..] {
                            [] => {}
                            [option] if option.eq_ignore_ascii_case(b"withvalues") => {
                                with_values = true;
                                if !(-i64::MAX / 2..=i64::MAX / 2).contains(&count) {
                                    return Err(message("ERR value is out of range"));
                                }
                            }
                            _ => return Err(CommandError::Syntax),
                        }
                        Some(bound_picks(count)?)
                    }
                };
                SetCommand::HRandField {
                    key: key(),
                    count,
                    with_values,
                    seed: 0,
                }
            }
            "hincrbyfloat" => {
                arity(rest.len() == 3)?;
                match LongDouble::parse(&rest[2]) {
                    None => return Err(message("ERR value is not a valid float")),
                    Some(increment) if !increment.is_finite() => {
                        return Err(message("ERR value is NaN or Infinity"));
                    }
                    Some(_) => {}
                }
                SetCommand::HIncrByFloat {
                    key: key(),
                    field: rest[1].clone(),
                    increment: rest[2].clone(),
                }
            }
            "hmset" => {
                arity(rest.len() >= 3 && rest.len() % 2 == 1)?;
                SetCommand::HMSet {
                    key: key(),
                    pairs: rest[1..]
                        .chunks_exact(2)
                        .map(|pair| (pair[0].clone(), pair[1].clone()))
                        .collect(),
                }
            }
            _ => unreachable!("only names in NAMES are parsed"),
        })
    }

    /// Sets the seed random choices are drawn from (the proxy gives each request its own).
    pub fn reseed(&mut self, new_seed: u64) {
        match self {
            SetCommand::SPop { seed, .. }
            | SetCommand::SRandMember { seed, .. }
            | SetCommand::HRandField { seed, .. } => *seed = new_seed,
            _ => {}
        }
    }

    /// True for commands that change state (they go through the Raft log).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            SetCommand::SAdd { .. }
                | SetCommand::SRem { .. }
                | SetCommand::SPop { .. }
                | SetCommand::SMove { .. }
                | SetCommand::CombineStore { .. }
                | SetCommand::HIncrByFloat { .. }
                | SetCommand::HMSet { .. }
        )
    }

    /// Every key the command reads or writes, in argument order.
    pub fn keys(&self) -> Keys<'_> {
        match self {
            SetCommand::SAdd { key, .. }
            | SetCommand::SRem { key, .. }
            | SetCommand::SMembers { key }
            | SetCommand::SIsMember { key, .. }
            | SetCommand::SMIsMember { key, .. }
            | SetCommand::SCard { key }
            | SetCommand::SPop { key, .. }
            | SetCommand::SRandMember { key, .. }
            | SetCommand::SScan { key, .. }
            | SetCommand::HScan { key, .. }
            | SetCommand::HRandField { key, .. }
            | SetCommand::HIncrByFloat { key, .. }
            | SetCommand::HMSet { key, .. } => smallvec::smallvec![key],
            SetCommand::SMove {
                source,
                destination,
                ..
            } => smallvec::smallvec![source, destination],
            SetCommand::Combine { keys, .. } | SetCommand::SInterCard { keys, .. } => {
                keys.iter().collect()
            }
            SetCommand::CombineStore {
                destination, keys, ..
            } => std::iter::once(destination).chain(keys).collect(),
        }
    }

    /// The command's name as clients spell it.
    pub fn name(&self) -> &'static str {
        match self {
            SetCommand::SAdd { .. } => "sadd",
            SetCommand::SRem { .. } => "srem",
            SetCommand::SMembers { .. } => "smembers",
            SetCommand::SIsMember { .. } => "sismember",
            SetCommand::SMIsMember { .. } => "smismember",
            SetCommand::SCard { .. } => "scard",
            SetCommand::SPop { .. } => "spop",
            SetCommand::SRandMember { .. } => "srandmember",
            SetCommand::SMove { .. } => "smove",
            SetCommand::Combine { how, .. } => match how {
                Combine::Inter => "sinter",
                Combine::Union => "sunion",
                Combine::Diff => "sdiff",
            },
            SetCommand::CombineStore { how, .. } => match how {
                Combine::Inter => "sinterstore",
                Combine::Union => "sunionstore",
                Combine::Diff => "sdiffstore",
            },
            SetCommand::SInterCard { .. } => "sintercard",
            SetCommand::SScan { .. } => "sscan",
            SetCommand::HScan { .. } => "hscan",
            SetCommand::HRandField { .. } => "hrandfield",
            SetCommand::HIncrByFloat { .. } => "hincrbyfloat",
            SetCommand::HMSet { .. } => "hmset",
        }
    }

    /// Applies the command to `view` (pure: the same view gives the same reply and writes).
    pub(super) fn execute(&self, view: &mut View<'_>) -> Reply {
        self.run(view).unwrap_or_else(|error| error)
    }

    fn run(&self, view: &mut View<'_>) -> Result<Reply, Reply> {
        Ok(match self {
            SetCommand::SAdd { key, members } => {
                let (mut set, expires_at_ms) = set_to_modify(view, key)?;
                let added = members
                    .iter()
                    .filter(|member| set.insert((*member).clone()))
                    .count();
                if added > 0 {
                    put_set(view, key, set, expires_at_ms);
                }
                Reply::Int(added as i64)
            }
            SetCommand::SRem { key, members } => {
                let (mut set, expires_at_ms) = set_to_modify(view, key)?;
                let removed = members.iter().filter(|member| set.remove(*member)).count();
                if removed > 0 {
                    put_set(view, key, set, expires_at_ms);
                } else {
                    drop_stale(view, key);
                }
                Reply::Int(removed as i64)
            }
            SetCommand::SMembers { key } => Reply::Array(bulks(members(view, key)?)),
            SetCommand::SIsMember { key, member } => {
                Reply::Int(i64::from(members(view, key)?.contains(member)))
            }
            SetCommand::SMIsMember {
                key,
                members: asked,
            } => {
                let set = members(view, key)?;
                Reply::Array(
                    asked
                        .iter()
                        .map(|member| Reply::Int(i64::from(set.contains(member))))
                        .collect(),
                )
            }
            SetCommand::SCard { key } => {
                members(view, key)?;
                Reply::Int(view.len_of(key) as i64)
            }
            SetCommand::SPop { key, count, seed } => spop(view, key, *count, *seed)?,
            SetCommand::SRandMember { key, count, seed } => {
                let set = members(view, key)?;
                let mut rng = ChaCha8Rng::seed_from_u64(*seed);
                match count {
                    None => match pick(set.iter(), set.len(), &mut rng) {
                        None => Reply::Nil,
                        Some(member) => Reply::Bulk(member.clone()),
                    },
                    Some(count) => Reply::Array(
                        random_entries(set.iter(), set.len(), *count, &mut rng)
                            .into_iter()
                            .map(|member| Reply::Bulk(member.clone()))
                            .collect(),
                    ),
                }
            }
            SetCommand::SMove {
                source,
                destination,
                member,
            } => smove(view, source, destination, member)?,
            SetCommand::Combine { how, keys } => Reply::Array(
                combine(view, *how, keys)?
                    .into_iter()
                    .map(Reply::Bulk)
                    .collect(),
            ),
            SetCommand::CombineStore {
                how,
                destination,
                keys,
            } => {
                let result = combine(view, *how, keys)?;
                let stored = result.len() as i64;
                // The destination is replaced whatever it held, without expiry; an empty
                // result deletes it.
                let record = (!result.is_empty()).then(|| Record {
                    value: Value::Set(result),
                    expires_at_ms: None,
                });
                view.put(destination, record);
                Reply::Int(stored)
            }
            SetCommand::SInterCard { keys, limit } => {
                let sets = sets_of(view, keys)?;
                Reply::Int(intersection(&sets, *limit).len() as i64)
            }
            SetCommand::SScan {
                key,
                cursor,
                options,
            } => {
                let set = match view.get(key) {
                    None => return Ok(empty_scan()),
                    Some(Record {
                        value: Value::Set(set),
                        ..
                    }) => set,
                    Some(_) => return Err(Reply::error(WRONGTYPE)),
                };
                let options = ScanOptions::parse(options)?;
                scan(set.iter().map(|member| (member, None)), *cursor, &options)
            }
            SetCommand::HScan {
                key,
                cursor,
                options,
            } => {
                let fields = match view.get(key) {
                    None => return Ok(empty_scan()),
                    Some(Record {
                        value: Value::Hash(fields),
                        ..
                    }) => fields,
                    Some(_) => return Err(Reply::error(WRONGTYPE)),
                };
                let options = ScanOptions::parse(options)?;
                scan(
                    fields.iter().map(|(field, value)| (field, Some(value))),
                    *cursor,
                    &options,
                )
            }
            SetCommand::HRandField {
                key,
                count,
                with_values,
                seed,
            } => hrandfield(view, key, *count, *with_values, *seed)?,
            SetCommand::HIncrByFloat {
                key,
                field,
                increment,
            } => hincrbyfloat(view, key, field, increment)?,
            SetCommand::HMSet { key, pairs } => {
                let (mut fields, expires_at_ms) = view.hash_to_modify(key)?;
                for (field, value) in pairs {
                    fields.insert(field.clone(), value.clone());
                }
                view.put_hash(key, fields, expires_at_ms);
                Reply::Ok
            }
        })
    }
}

fn combine_of(name: &str) -> Combine {
    match name.trim_end_matches("store") {
        "sinter" => Combine::Inter,
        "sunion" => Combine::Union,
        _ => Combine::Diff,
    }
}

fn bulks<'a>(members: impl IntoIterator<Item = &'a Bytes>) -> Vec<Reply> {
    members
        .into_iter()
        .map(|member| Reply::Bulk(member.clone()))
        .collect()
}

/// The members of the set at `key` (none when it is missing or expired); `WRONGTYPE` when the
/// key holds another type.
fn members<'v>(view: &'v View<'_>, key: &Bytes) -> Result<&'v BTreeSet<Bytes>, Reply> {
    match view.get(key) {
        None => Ok(&NO_MEMBERS),
        Some(Record {
            value: Value::Set(set),
            ..
        }) => Ok(set),
        Some(_) => Err(Reply::error(WRONGTYPE)),
    }
}

/// A copy of the set at `key` to modify, with its expiry, which member writes keep.
fn set_to_modify(view: &View<'_>, key: &Bytes) -> Result<(BTreeSet<Bytes>, Option<u64>), Reply> {
    let expires_at_ms = view.get(key).and_then(|record| record.expires_at_ms);
    Ok((members(view, key)?.clone(), expires_at_ms))
}

/// Stores `set` at `key`; an empty set deletes the key.
fn put_set(view: &mut View<'_>, key: &Bytes, set: BTreeSet<Bytes>, expires_at_ms: Option<u64>) {
    view.put_collection(key, Value::Set(set), expires_at_ms);
}

/// A write that changed nothing still removes a key that expired on disk.
fn drop_stale(view: &mut View<'_>, key: &Bytes) {
    if view.is_stale(key) {
        view.put(key, None);
    }
}

/// One entry of `len` drawn uniformly, `None` when there are none.
fn pick<T>(mut entries: impl Iterator<Item = T>, len: usize, rng: &mut ChaCha8Rng) -> Option<T> {
    if len == 0 {
        return None;
    }
    entries.nth(rng.random_range(0..len))
}

/// `count` entries at random as `SRANDMEMBER`/`HRANDFIELD` choose them: a positive count
/// gives distinct entries (all of them when it is at least `len`), a negative one `-count`
/// draws that may repeat.
fn random_entries<T: Copy>(
    entries: impl Iterator<Item = T>,
    len: usize,
    count: i64,
    rng: &mut ChaCha8Rng,
) -> Vec<T> {
    if len == 0 || count == 0 {
        return Vec::new();
    }
    let all: Vec<T> = entries.collect();
    if count < 0 {
        // Not allocated up front: the count is the client's.
        let mut drawn = Vec::new();
        for _ in 0..count.unsigned_abs() {
            drawn.push(all[rng.random_range(0..len)]);
        }
        return drawn;
    }
    if count as u64 >= len as u64 {
        return all;
    }
    rand::seq::index::sample(rng, len, count as usize)
        .into_iter()
        .map(|index| all[index])
        .collect()
}

fn spop(view: &mut View<'_>, key: &Bytes, count: Option<u64>, seed: u64) -> Result<Reply, Reply> {
    let (mut set, expires_at_ms) = set_to_modify(view, key)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let Some(count) = count else {
        let Some(member) = pick(set.iter(), set.len(), &mut rng).cloned() else {
            drop_stale(view, key);
            return Ok(Reply::Nil);
        };
        set.remove(&member);
        put_set(view, key, set, expires_at_ms);
        return Ok(Reply::Bulk(member));
    };
    if set.is_empty() || count == 0 {
        drop_stale(view, key);
        return Ok(Reply::Array(Vec::new()));
    }
    if count >= set.len() as u64 {
        view.put(key, None);
        return Ok(Reply::Array(set.into_iter().map(Reply::Bulk).collect()));
    }
    let all: Vec<&Bytes> = set.iter().collect();
    let popped: Vec<Bytes> = rand::seq::index::sample(&mut rng, all.len(), count as usize)
        .into_iter()
        .map(|index| all[index].clone())
        .collect();
    for member in &popped {
        set.remove(member);
    }
    put_set(view, key, set, expires_at_ms);
    Ok(Reply::Array(popped.into_iter().map(Reply::Bulk).collect()))
}

fn smove(
    view: &mut View<'_>,
    source: &Bytes,
    destination: &Bytes,
    member: &Bytes,
) -> Result<Reply, Reply> {
    // A missing source answers 0 before any type check, as in Redis.
    if view.get(source).is_none() {
        drop_stale(view, source);
        return Ok(Reply::Int(0));
    }
    let (mut from, from_expiry) = set_to_modify(view, source)?;
    members(view, destination)?;
    if source == destination {
        return Ok(Reply::Int(i64::from(from.contains(member))));
    }
    if !from.remove(member) {
        return Ok(Reply::Int(0));
    }
    put_set(view, source, from, from_expiry);
    let (mut to, to_expiry) = set_to_modify(view, destination)?;
    to.insert(member.clone());
    put_set(view, destination, to, to_expiry);
    Ok(Reply::Int(1))
}

/// The sets at `keys` (`None` for missing ones), every type checked first as Redis does.
fn sets_of<'v>(
    view: &'v View<'_>,
    keys: &[Bytes],
) -> Result<Vec<Option<&'v BTreeSet<Bytes>>>, Reply> {
    keys.iter()
        .map(|key| match view.get(key) {
            None => Ok(None),
            Some(Record {
                value: Value::Set(set),
                ..
            }) => Ok(Some(set)),
            Some(_) => Err(Reply::error(WRONGTYPE)),
        })
        .collect()
}

/// The members in every set, at most `limit` of them (0: no limit).
fn intersection<'v>(sets: &[Option<&'v BTreeSet<Bytes>>], limit: u64) -> Vec<&'v Bytes> {
    let Some(mut sets) = sets.iter().copied().collect::<Option<Vec<_>>>() else {
        // A missing key is an empty set.
        return Vec::new();
    };
    sets.sort_by_key(|set| set.len());
    let Some((smallest, others)) = sets.split_first() else {
        return Vec::new();
    };
    let limit = if limit == 0 {
        usize::MAX
    } else {
        limit.min(usize::MAX as u64) as usize
    };
    smallest
        .iter()
        .filter(|member| others.iter().all(|set| set.contains(*member)))
        .take(limit)
        .collect()
}

fn combine(view: &View<'_>, how: Combine, keys: &[Bytes]) -> Result<BTreeSet<Bytes>, Reply> {
    let sets = sets_of(view, keys)?;
    Ok(match how {
        Combine::Inter => intersection(&sets, 0).into_iter().cloned().collect(),
        Combine::Union => sets
            .iter()
            .flatten()
            .flat_map(|set| set.iter())
            .cloned()
            .collect(),
        Combine::Diff => {
            let Some(Some(first)) = sets.first() else {
                return Ok(BTreeSet::new());
            };
            first
                .iter()
                .filter(|member| !sets[1..].iter().flatten().any(|set| set.contains(*member)))
                .cloned()
                .collect()
        }
    })
}

/// `SSCAN`/`HSCAN` options, checked after the key as `scanGenericCommand` does.
struct ScanOptions {
    count: usize,
    pattern: Option<Bytes>,
}

impl ScanOptions {
    fn parse(options: &[Bytes]) -> Result<ScanOptions, Reply> {
        let syntax = || Reply::error("ERR syntax error");
        let mut parsed = ScanOptions {
            count: 10,
            pattern: None,
        };
        let mut rest = options;
        while let Some((option, after)) = rest.split_first() {
            let Some(value) = after.first() else {
                return Err(syntax());
            };
            if option.eq_ignore_ascii_case(b"count") {
                let count = parse_integer(value).ok_or_else(|| Reply::error(NOT_INTEGER))?;
                if count < 1 {
                    return Err(syntax());
                }
                parsed.count = usize::try_from(count).unwrap_or(usize::MAX);
            } else if option.eq_ignore_ascii_case(b"match") {
                // `*` matches everything: the same as no pattern.
                parsed.pattern = (value.as_ref() != b"*").then(|| value.clone());
            } else {
                return Err(syntax());
            }
            rest = &after[1..];
        }
        Ok(parsed)
    }
}

/// A member's place in scan order.
fn scan_order(member: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(member) >> 1
}

fn empty_scan() -> Reply {
    Reply::Array(vec![
        Reply::Bulk(Bytes::from_static(b"0")),
        Reply::Array(Vec::new()),
    ])
}

/// One page of a scan from `cursor`: about `count` entries (those of the smallest scan orders
/// not below the cursor, a group sharing one order never split), filtered by the pattern
/// afterwards as Redis does, and the cursor to go on from (0 when done).
fn scan<'a>(
    entries: impl Iterator<Item = (&'a Bytes, Option<&'a Bytes>)>,
    cursor: u64,
    options: &ScanOptions,
) -> Reply {
    let mut page: Vec<(u64, &Bytes, Option<&Bytes>)> = entries
        .map(|(member, value)| (scan_order(member), member, value))
        .filter(|(order, _, _)| *order >= cursor)
        .collect();
    let mut next = 0;
    if page.len() > options.count {
        let total = page.len();
        page.select_nth_unstable_by_key(options.count - 1, |(order, _, _)| *order);
        let boundary = page[options.count - 1].0;
        page.retain(|(order, _, _)| *order <= boundary);
        if page.len() < total {
            // Orders are below 2^63: no overflow, and never 0.
            next = boundary + 1;
        }
    }
    page.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut items = Vec::new();
    for (_, member, value) in page {
        if let Some(pattern) = &options.pattern
            && !glob_match(pattern, member)
        {
            continue;
        }
        items.push(Reply::Bulk(member.clone()));
        if let Some(value) = value {
            items.push(Reply::Bulk(value.clone()));
        }
    }
    Reply::Array(vec![
        Reply::Bulk(Bytes::from(next.to_string())),
        Reply::Array(items),
    ])
}

fn hrandfield(
    view: &View<'_>,
    key: &Bytes,
    count: Option<i64>,
    with_values: bool,
    seed: u64,
) -> Result<Reply, Reply> {
    let fields: &BTreeMap<Bytes, Bytes> = view.hash(key)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let Some(count) = count else {
        return Ok(match pick(fields.keys(), fields.len(), &mut rng) {
            None => Reply::Nil,
            Some(field) => Reply::Bulk(field.clone()),
        });
    };
    let chosen = random_entries(fields.iter(), fields.len(), count, &mut rng);
    let mut items = Vec::new();
    for (field, value) in chosen {
        items.push(Reply::Bulk(field.clone()));
        if with_values {
            items.push(Reply::Bulk(value.clone()));
        }
    }
    // With values, pairs: nested in RESP3, as Redis 7.0 answers.
    Ok(if with_values {
        Reply::Pairs(items)
    } else {
        Reply::Array(items)
    })
}

fn hincrbyfloat(
    view: &mut View<'_>,
    key: &Bytes,
    field: &Bytes,
    increment: &Bytes,
) -> Result<Reply, Reply> {
    let increment = LongDouble::parse(increment)
        .filter(|increment| increment.is_finite())
        .ok_or_else(|| Reply::error("ERR value is not a valid float"))?;
    let (mut fields, expires_at_ms) = view.hash_to_modify(key)?;
    let current = match fields.get(field) {
        None => LongDouble::ZERO,
        Some(value) => {
            LongDouble::parse(value).ok_or_else(|| Reply::error("ERR hash value is not a float"))?
        }
    };
    let next = current.add(increment);
    if !next.is_finite() {
        return Err(Reply::error("ERR increment would produce NaN or Infinity"));
    }
    let text = Bytes::from(next.to_human());
    fields.insert(field.clone(), text.clone());
    view.put_hash(key, fields, expires_at_ms);
    Ok(Reply::Bulk(text))
}

pub(super) mod long_double {
    //! The x87 80-bit `long double` that Redis's `HINCRBYFLOAT` computes with (on x86-64, where its
    //! test suite checks the results), emulated exactly: a 64-bit mantissa, round-to-nearest-even,
    //! the same range and subnormals. Parsing follows glibc's `strtold` as Redis's `string2ld`
    //! filters it, and [`LongDouble::to_human`] prints as `ld2string(..., LD_STR_HUMAN)` does
    //! (`%.17Lf`, then trailing zeros and the dot stripped, `-0` written `0`). `f64` would not do:
    //! Redis answers `1.23` where a double prints `1.22999999999999998`.

    use std::cmp::Ordering;

    /// Bits of the mantissa (explicit integer bit included).
    const MANTISSA_BITS: i64 = 64;
    /// Exponent of the lowest mantissa bit of the smallest subnormal (2^-16445).
    const LSB_MIN: i64 = -16445;
    /// Every finite value is below 2^16384.
    const TOP_LIMIT: i64 = 16384;
    /// `MAX_LONG_DOUBLE_CHARS` in Redis: longer inputs are refused.
    const CHARS_MAX: usize = 5 * 1024;

    /// A finite or infinite extended-precision value: `±mantissa × 2^exponent` when finite.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(in crate::kv) enum LongDouble {
        Finite {
            negative: bool,
            mantissa: u64,
            exponent: i64,
        },
        Infinite {
            negative: bool,
        },
    }

    impl LongDouble {
        pub(in crate::kv) const ZERO: LongDouble = LongDouble::Finite {
            negative: false,
            mantissa: 0,
            exponent: 0,
        };

        pub(in crate::kv) fn is_finite(self) -> bool {
            matches!(self, LongDouble::Finite { .. })
        }

        /// Parses `text` as Redis's `string2ld` does: `strtold` over the whole text, no leading
        /// space, nothing left over, at most 5119 bytes, not NaN, and not out of range (a result
        /// that overflows or underflows to zero). Infinities (`inf`, `-Infinity`) are accepted.
        pub(in crate::kv) fn parse(text: &[u8]) -> Option<LongDouble> {
            if text.is_empty() || text.len() >= CHARS_MAX {
                return None;
            }
            let (negative, body) = match text[0] {
                b'-' => (true, &text[1..]),
                b'+' => (false, &text[1..]),
                _ => (false, text),
            };
            let lower = body.to_ascii_lowercase();
            if lower == b"inf" || lower == b"infinity" {
                return Some(LongDouble::Infinite { negative });
            }
            if let Some(hex) = lower.strip_prefix(b"0x") {
                parse_hex(negative, hex)
            } else {
                parse_decimal(negative, &lower)
            }
        }

        /// `self + other`, rounded to nearest even. An infinite operand gives an infinity (the
        /// caller refuses both infinities and NaN alike).
        pub(in crate::kv) fn add(self, other: LongDouble) -> LongDouble {
            let (
                LongDouble::Finite {
                    negative: a_negative,
                    mantissa: a,
                    exponent: a_exponent,
                },
                LongDouble::Finite {
                    negative: b_negative,
                    mantissa: b,
                    exponent: b_exponent,
                },
            ) = (self, other)
            else {
                return LongDouble::Infinite { negative: false };
            };
            if a == 0 {
                return other;
            }
            if b == 0 {
                return self;
            }
            let exponent = a_exponent.min(b_exponent);
            let a = Big::from_u64(a).shl((a_exponent - exponent) as u64);
            let b = Big::from_u64(b).shl((b_exponent - exponent) as u64);
            if a_negative == b_negative {
                return round(a_negative, a.add(&b), exponent, false);
            }
            match a.cmp(&b) {
                Ordering::Equal => LongDouble::ZERO,
                Ordering::Greater => round(a_negative, a.sub(&b), exponent, false),
                Ordering::Less => round(b_negative, b.sub(&a), exponent, false),
            }
        }

        /// `printf("%.17Lf")` with trailing zeros and the dot stripped (Redis's `LD_STR_HUMAN`).
        pub(in crate::kv) fn to_human(self) -> String {
            let (negative, mantissa, exponent) = match self {
                LongDouble::Infinite { negative: true } => return "-inf".to_string(),
                LongDouble::Infinite { negative: false } => return "inf".to_string(),
                LongDouble::Finite {
                    negative,
                    mantissa,
                    exponent,
                } => (negative, mantissa, exponent),
            };
            // The value times 10^17, rounded to an integer (ties to even, as glibc does).
            let mut scaled = Big::from_u64(mantissa);
            if exponent >= 0 {
                scaled = scaled.shl(exponent as u64);
                scaled.mul_pow10(17);
            } else {
                scaled.mul_pow10(17);
                let shift = exponent.unsigned_abs();
                let half = scaled.bit(shift - 1);
                let below = scaled.any_below(shift - 1);
                scaled = scaled.shr(shift);
                if half && (below || scaled.bit(0)) {
                    scaled = scaled.add(&Big::from_u64(1));
                }
            }
            let mut digits = scaled.to_decimal();
            if digits.len() < 18 {
                digits = format!("{}{digits}", "0".repeat(18 - digits.len()));
            }
            let (whole, fraction) = digits.split_at(digits.len() - 17);
            let fraction = fraction.trim_end_matches('0');
            let mut text = String::with_capacity(digits.len() + 2);
            if negative {
                text.push('-');
            }
            text.push_str(whole);
            if !fraction.is_empty() {
                text.push('.');
                text.push_str(fraction);
            }
            if text == "-0" {
                text = "0".to_string();
            }
            text
        }
    }

    fn is_digit_of(radix: u32) -> impl Fn(&u8) -> bool {
        move |byte: &u8| (*byte as char).is_digit(radix)
    }

    /// Splits `digits [. digits]` off the front of `text`: (integer part, fraction, rest).
    fn split_number(text: &[u8], radix: u32) -> Option<(&[u8], &[u8], &[u8])> {
        let whole_len = text.iter().take_while(|b| is_digit_of(radix)(b)).count();
        let (whole, rest) = text.split_at(whole_len);
        let (fraction, rest) = match rest.strip_prefix(b".") {
            Some(after) => {
                let len = after.iter().take_while(|b| is_digit_of(radix)(b)).count();
                after.split_at(len)
            }
            None => (&rest[..0], rest),
        };
        (!whole.is_empty() || !fraction.is_empty()).then_some((whole, fraction, rest))
    }

    /// An exponent suffix's value (`[+-]digits`, saturated far beyond any range); `None` when it
    /// is malformed (then `strtold` would have stopped before it and Redis refuses the text).
    fn parse_exponent(text: &[u8]) -> Option<i64> {
        let (negative, digits) = match text.first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let magnitude = digits.iter().fold(0i64, |acc, digit| {
            (acc * 10 + i64::from(digit - b'0')).min(1 << 40)
        });
        Some(if negative { -magnitude } else { magnitude })
    }

    fn parse_decimal(negative: bool, text: &[u8]) -> Option<LongDouble> {
        let (whole, fraction, rest) = split_number(text, 10)?;
        let exponent = match rest {
            [] => 0,
            [b'e', suffix @ ..] => parse_exponent(suffix)?,
            _ => return None,
        };
        let all: Vec<u8> = whole.iter().chain(fraction).copied().collect();
        let significant = match all.iter().position(|digit| *digit != b'0') {
            None => {
                return Some(LongDouble::Finite {
                    negative,
                    mantissa: 0,
                    exponent: 0,
                });
            }
            Some(first) => &all[first..],
        };
        // value = digits × 10^power
        let power = exponent - fraction.len() as i64;
        let count = significant.len() as i64;
        // Out of range: `strtold` sets ERANGE and Redis refuses the text.
        if power + count - 1 > 4933 || power + count < -4952 {
            return None;
        }
        let mut value = Big::default();
        for digit in significant {
            value.mul_add_small(10, u32::from(digit - b'0'));
        }
        if power >= 0 {
            value.mul_pow10(power as u32);
            return in_range(round(negative, value, 0, false));
        }
        // Divide by 10^-power after scaling by 2^extra so the quotient keeps 66+ bits; the
        // remainders say whether anything was cut off.
        let divisor_digits = power.unsigned_abs();
        let extra = divisor_digits * 3322 / 1000 + 1 + 66;
        let mut quotient = value.shl(extra);
        let mut inexact = false;
        let mut left = divisor_digits;
        while left > 0 {
            let step = left.min(9) as u32;
            inexact |= quotient.div_small(10u32.pow(step)) != 0;
            left -= u64::from(step);
        }
        in_range(round(negative, quotient, -(extra as i64), inexact))
    }

    fn parse_hex(negative: bool, text: &[u8]) -> Option<LongDouble> {
        let (whole, fraction, rest) = split_number(text, 16)?;
        let exponent = match rest {
            [] => 0,
            [b'p', suffix @ ..] => parse_exponent(suffix)?,
            _ => return None,
        };
        let mut value = Big::default();
        for digit in whole.iter().chain(fraction) {
            let digit = (*digit as char).to_digit(16).unwrap_or(0);
            value.mul_add_small(16, digit);
        }
        let power = exponent - 4 * fraction.len() as i64;
        let top = power + value.bits() as i64;
        if value.is_zero() {
            return Some(LongDouble::Finite {
                negative,
                mantissa: 0,
                exponent: 0,
            });
        }
        if !(LSB_MIN - 2..=TOP_LIMIT + 1).contains(&top) {
            return None;
        }
        in_range(round(negative, value, power, false))
    }

    /// A rounded nonzero value, unless it overflowed or underflowed to zero (ERANGE for
    /// `strtold`, which Redis refuses).
    fn in_range(value: LongDouble) -> Option<LongDouble> {
        match value {
            LongDouble::Finite { mantissa, .. } if mantissa != 0 => Some(value),
            _ => None,
        }
    }

    /// Rounds `value × 2^exponent` (plus something nonzero below its last bit when `inexact`) to
    /// the nearest long double, ties to even. `inexact` is only given with at least two bits
    /// below the rounding point.
    fn round(negative: bool, value: Big, exponent: i64, inexact: bool) -> LongDouble {
        if value.is_zero() {
            return LongDouble::Finite {
                negative,
                mantissa: 0,
                exponent: 0,
            };
        }
        let bits = value.bits() as i64;
        let mut lsb = (exponent + bits - MANTISSA_BITS).max(LSB_MIN);
        let shift = lsb - exponent;
        let mut mantissa = if shift <= 0 {
            value.shl(shift.unsigned_abs()).to_u64()
        } else {
            let shift = shift as u64;
            let half = value.bit(shift - 1);
            let below = inexact || value.any_below(shift - 1);
            let mut kept = value.shr(shift).to_u64();
            if half && (below || kept & 1 == 1) {
                kept = match kept.checked_add(1) {
                    Some(next) => next,
                    None => {
                        lsb += 1;
                        1 << 63
                    }
                };
            }
            kept
        };
        if mantissa == 0 {
            return LongDouble::Finite {
                negative,
                mantissa: 0,
                exponent: 0,
            };
        }
        // Keep one canonical form: no trailing zero bits beyond what the exponent needs is not
        // required for equality of values, so normalise to the smallest mantissa.
        let zeros = mantissa.trailing_zeros();
        mantissa >>= zeros;
        lsb += i64::from(zeros);
        if lsb + 64 - i64::from(mantissa.leading_zeros()) > TOP_LIMIT {
            return LongDouble::Infinite { negative };
        }
        LongDouble::Finite {
            negative,
            mantissa,
            exponent: lsb,
        }
    }

    /// An unsigned big integer, little-endian 32-bit limbs, no leading zero limbs.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct Big(Vec<u32>);

    impl Big {
        fn from_u64(value: u64) -> Big {
            let mut big = Big(vec![value as u32, (value >> 32) as u32]);
            big.trim();
            big
        }

        fn trim(&mut self) {
            while self.0.last() == Some(&0) {
                self.0.pop();
            }
        }

        fn is_zero(&self) -> bool {
            self.0.is_empty()
        }

        fn bits(&self) -> u64 {
            match self.0.last() {
                None => 0,
                Some(top) => (self.0.len() as u64 - 1) * 32 + u64::from(32 - top.leading_zeros()),
            }
        }

        fn to_u64(&self) -> u64 {
            self.0
                .iter()
                .take(2)
                .enumerate()
                .fold(0, |acc, (i, limb)| acc | u64::from(*limb) << (32 * i))
        }

        fn bit(&self, index: u64) -> bool {
            let limb = (index / 32) as usize;
            limb < self.0.len() && (self.0[limb] >> (index % 32)) & 1 == 1
        }

        /// Whether any bit below position `index` is set.
        fn any_below(&self, index: u64) -> bool {
            let whole = ((index / 32) as usize).min(self.0.len());
            if self.0[..whole].iter().any(|limb| *limb != 0) {
                return true;
            }
            let part = index % 32;
            whole < self.0.len() && part > 0 && self.0[whole] & ((1u32 << part) - 1) != 0
        }

        fn mul_add_small(&mut self, factor: u32, addend: u32) {
            let mut carry = u64::from(addend);
            for limb in &mut self.0 {
                let product = u64::from(*limb) * u64::from(factor) + carry;
                *limb = product as u32;
                carry = product >> 32;
            }
            if carry > 0 {
                self.0.push(carry as u32);
            }
            self.trim();
        }

        fn mul_pow10(&mut self, mut power: u32) {
            while power > 0 {
                let step = power.min(9);
                self.mul_add_small(10u32.pow(step), 0);
                power -= step;
            }
        }

        /// Divides in place; answers the remainder.
        fn div_small(&mut self, divisor: u32) -> u32 {
            let mut remainder = 0u64;
            for limb in self.0.iter_mut().rev() {
                let current = (remainder << 32) | u64::from(*limb);
                *limb = (current / u64::from(divisor)) as u32;
                remainder = current % u64::from(divisor);
            }
            self.trim();
            remainder as u32
        }

        fn shl(&self, shift: u64) -> Big {
            if self.is_zero() {
                return Big::default();
            }
            let limbs = (shift / 32) as usize;
            let bits = (shift % 32) as u32;
            let mut out = vec![0u32; limbs];
            out.reserve(self.0.len() + 1);
            let mut carry = 0u32;
            for limb in &self.0 {
                if bits == 0 {
                    out.push(*limb);
                } else {
                    out.push((limb << bits) | carry);
                    carry = limb >> (32 - bits);
                }
            }
            out.push(carry);
            let mut big = Big(out);
            big.trim();
            big
        }

        fn shr(&self, shift: u64) -> Big {
            let limbs = (shift / 32) as usize;
            if limbs >= self.0.len() {
                return Big::default();
            }
            let bits = (shift % 32) as u32;
            let source = &self.0[limbs..];
            let mut out = Vec::with_capacity(source.len());
            for (i, limb) in source.iter().enumerate() {
                let high = source.get(i + 1).copied().unwrap_or(0);
                out.push(if bits == 0 {
                    *limb
                } else {
                    (limb >> bits) | (high << (32 - bits))
                });
            }
            let mut big = Big(out);
            big.trim();
            big
        }

        fn cmp(&self, other: &Big) -> Ordering {
            self.0
                .len()
                .cmp(&other.0.len())
                .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
        }

        fn add(&self, other: &Big) -> Big {
            let (long, short) = if self.0.len() >= other.0.len() {
                (self, other)
            } else {
                (other, self)
            };
            let mut out = Vec::with_capacity(long.0.len() + 1);
            let mut carry = 0u64;
            for (i, limb) in long.0.iter().enumerate() {
                let sum =
                    u64::from(*limb) + u64::from(short.0.get(i).copied().unwrap_or(0)) + carry;
                out.push(sum as u32);
                carry = sum >> 32;
            }
            out.push(carry as u32);
            let mut big = Big(out);
            big.trim();
            big
        }

        /// `self - other`, for `self >= other`.
        fn sub(&self, other: &Big) -> Big {
            let mut out = Vec::with_capacity(self.0.len());
            let mut borrow = 0i64;
            for (i, limb) in self.0.iter().enumerate() {
                let mut difference =
                    i64::from(*limb) - i64::from(other.0.get(i).copied().unwrap_or(0)) - borrow;
                borrow = 0;
                if difference < 0 {
                    difference += 1 << 32;
                    borrow = 1;
                }
                out.push(difference as u32);
            }
            let mut big = Big(out);
            big.trim();
            big
        }

        fn to_decimal(&self) -> String {
            let mut rest = self.clone();
            let mut chunks = Vec::new();
            while !rest.is_zero() {
                chunks.push(rest.div_small(1_000_000_000));
            }
            let mut text = chunks.pop().map_or("0".to_string(), |top| top.to_string());
            for chunk in chunks.iter().rev() {
                text.push_str(&format!("{chunk:09}"));
            }
            text
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn human(text: &str) -> String {
            LongDouble::parse(text.as_bytes())
                .unwrap_or_else(|| panic!("{text:?} parses"))
                .to_human()
        }

        fn sum(a: &str, b: &str) -> String {
            let a = LongDouble::parse(a.as_bytes()).expect("a parses");
            let b = LongDouble::parse(b.as_bytes()).expect("b parses");
            a.add(b).to_human()
        }

        #[test]
        fn prints_as_redis_on_x86_64() {
            // The suite's issue #2846 sequence and friends, checked against Redis 7.0 on x86-64.
            assert_eq!(sum("0", "1.23"), "1.23");
            assert_eq!(sum("1.23", "0.77"), "2");
            assert_eq!(sum("2", "-0.1"), "1.9");
            assert_eq!(sum("0.1", "0.2"), "0.3");
            assert_eq!(sum("10.5", "0.1"), "10.6");
            assert_eq!(sum("17179869184", "1"), "17179869185");
            assert_eq!(sum("17179869184", "17179869184"), "34359738368");
            assert_eq!(sum("100", "2.5"), "102.5");
            assert_eq!(sum("5", "-5"), "0");
            assert_eq!(sum("0", "-0.000000000000000001"), "0");
            assert_eq!(sum("0", "0.000005"), "0.000005");
            assert_eq!(human("3.0e3"), "3000");
            assert_eq!(human("-1.5"), "-1.5");
            assert_eq!(human("1e20"), "100000000000000000000");
            assert_eq!(human("0x10"), "16");
            assert_eq!(human("0x1.8p1"), "3");
            assert_eq!(human(".5"), "0.5");
            assert_eq!(human("5."), "5");
            // 1/3 to 64 bits, printed to 17 places.
            assert_eq!(
                sum("1", "-0.66666666666666666666666"),
                "0.33333333333333333"
            );
            // 2^64 + 1 does not fit 64 bits: ties to even.
            assert_eq!(human("18446744073709551617"), "18446744073709551616");
            assert_eq!(human("18446744073709551619"), "18446744073709551620");
            assert_eq!(human("9223372036854775807"), "9223372036854775807");
        }

        #[test]
        fn parses_as_string2ld_filters() {
            for refused in [
                "", " 1", "1 ", "1\x002", "abc", "1e", "1e+", ".", "-", "0x", "0x1p", "nan", "NaN",
                "1e5000", "-1e5000", "1e-5000", "--1", "1..2", "1.2.3",
            ] {
                assert_eq!(LongDouble::parse(refused.as_bytes()), None, "{refused:?}");
            }
            assert_eq!(
                LongDouble::parse(b"-inf"),
                Some(LongDouble::Infinite { negative: true })
            );
            assert_eq!(
                LongDouble::parse(b"+Infinity"),
                Some(LongDouble::Infinite { negative: false })
            );
            assert!(LongDouble::parse(b"0e99999999999").is_some());
            assert!(LongDouble::parse(b"1e4932").is_some());
            assert!(LongDouble::parse(b"1e4933").is_none());
            // Subnormals are kept; below the smallest one is refused.
            assert!(LongDouble::parse(b"4e-4951").is_some());
            assert!(LongDouble::parse(b"1e-4952").is_none());
            assert!(LongDouble::parse(&vec![b'1'; CHARS_MAX]).is_none());
            assert!(
                LongDouble::parse(&vec![b'1'; CHARS_MAX - 1]).is_none(),
                "overflows"
            );
        }

        #[test]
        fn overflow_and_huge_values() {
            let max = LongDouble::parse(b"1.18973149535723176502e4932").expect("max");
            assert!(max.is_finite());
            assert!(!max.add(max).is_finite());
            let text = LongDouble::parse(b"1e300").expect("1e300").to_human();
            assert!(text.len() == 300 || text.len() == 301, "{text}");
            assert!(text.bytes().all(|b| b.is_ascii_digit()), "{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::SetCommand;
    use crate::kv::{Command, CommandError, Record, Reply, Value, execute};

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn args(line: &str) -> Vec<Bytes> {
        line.split_whitespace().map(b).collect()
    }

    fn parse(line: &str) -> Result<Command, CommandError> {
        Command::parse(&args(line))
    }

    fn int(n: i64) -> Reply {
        Reply::Int(n)
    }

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(b(s))
    }

    fn strs(items: &[&str]) -> Reply {
        Reply::Array(items.iter().map(|s| bulk(s)).collect())
    }

    fn ints(items: &[i64]) -> Reply {
        Reply::Array(items.iter().map(|n| int(*n)).collect())
    }

    fn err(text: &str) -> Reply {
        Reply::error(text)
    }

    const WRONGTYPE: &str = crate::kv::WRONGTYPE;

    /// A store a script runs against, as a replica applies a log.
    #[derive(Default)]
    struct Db {
        state: BTreeMap<Bytes, Record>,
        now_ms: u64,
    }

    impl Db {
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
            match parse(line) {
                Ok(command) => self.apply(&command),
                Err(error) => Reply::error(error.to_string()),
            }
        }

        fn seeded(&mut self, line: &str, seed: u64) -> Reply {
            let mut command = parse(line).expect("valid command");
            if let Command::SetOp(set) = &mut command {
                set.reseed(seed);
            }
            self.apply(&command)
        }

        fn check(&mut self, script: &[(&str, Reply)]) {
            for (line, expected) in script {
                assert_eq!(&self.run(line), expected, "{line}");
            }
        }

        fn set(&self, key: &str) -> Option<&BTreeSet<Bytes>> {
            match self.state.get(&b(key)) {
                Some(Record {
                    value: Value::Set(set),
                    ..
                }) => Some(set),
                _ => None,
            }
        }

        /// Members of a reply array, sorted.
        fn sorted(reply: &Reply) -> Vec<Bytes> {
            let Reply::Array(items) = reply else {
                panic!("not an array: {reply:?}")
            };
            let mut members: Vec<Bytes> = items
                .iter()
                .map(|item| match item {
                    Reply::Bulk(member) => member.clone(),
                    other => panic!("not a bulk: {other:?}"),
                })
                .collect();
            members.sort();
            members
        }
    }

    fn arity(name: &str) -> Reply {
        err(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ))
    }

    #[test]
    fn parses_and_classifies() {
        let cases: &[(&str, &str, bool, &[&str])] = &[
            ("SADD s a b", "sadd", true, &["s"]),
            ("srem s a", "srem", true, &["s"]),
            ("smembers s", "smembers", false, &["s"]),
            ("sismember s a", "sismember", false, &["s"]),
            ("smismember s a b", "smismember", false, &["s"]),
            ("scard s", "scard", false, &["s"]),
            ("spop s", "spop", true, &["s"]),
            ("spop s 3", "spop", true, &["s"]),
            ("srandmember s -3", "srandmember", false, &["s"]),
            ("smove a b m", "smove", true, &["a", "b"]),
            ("sinter a b", "sinter", false, &["a", "b"]),
            ("sunion a", "sunion", false, &["a"]),
            ("sdiff a b c", "sdiff", false, &["a", "b", "c"]),
            ("sinterstore d a b", "sinterstore", true, &["d", "a", "b"]),
            ("sunionstore d a", "sunionstore", true, &["d", "a"]),
            ("sdiffstore d a b", "sdiffstore", true, &["d", "a", "b"]),
            ("sintercard 2 a b limit 3", "sintercard", false, &["a", "b"]),
            ("hrandfield h 2 withvalues", "hrandfield", false, &["h"]),
            ("hincrbyfloat h f 1.5", "hincrbyfloat", true, &["h"]),
            ("hmset h f v g w", "hmset", true, &["h"]),
        ];
        for (line, name, write, keys) in cases {
            let command = parse(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(command.name(), *name, "{line}");
            assert_eq!(command.is_write(), *write, "{line}");
            let expected: Vec<Bytes> = keys.iter().map(|k| b(k)).collect();
            let got: Vec<Bytes> = command.keys().into_iter().cloned().collect();
            assert_eq!(got, expected, "{line}");
        }
        assert_eq!(
            parse("SPOP s 2"),
            Ok(Command::SetOp(SetCommand::SPop {
                key: b("s"),
                count: Some(2),
                seed: 0
            }))
        );
        assert_eq!(
            parse("sintercard 1 a LIMIT 0 limit 7"),
            Ok(Command::SetOp(SetCommand::SInterCard {
                keys: vec![b("a")],
                limit: 7
            }))
        );
        let mut command = SetCommand::HRandField {
            key: b("h"),
            count: None,
            with_values: false,
            seed: 0,
        };
        command.reseed(9);
        assert!(matches!(command, SetCommand::HRandField { seed: 9, .. }));
    }

    #[test]
    fn refuses_bad_arguments_as_redis() {
        let mut db = Db::default();
        db.check(&[
            ("sadd s", arity("sadd")),
            ("srem s", arity("srem")),
            ("smismember s", arity("smismember")),
            ("smembers", arity("smembers")),
            ("smembers s t", arity("smembers")),
            ("sismember s", arity("sismember")),
            ("scard", arity("scard")),
            ("spop", arity("spop")),
            ("spop s 1 2", err("ERR syntax error")),
            ("spop s -1", err("ERR value is out of range, must be positive")),
            ("spop s x", err("ERR value is out of range, must be positive")),
            ("srandmember", arity("srandmember")),
            ("srandmember s 1 2", err("ERR syntax error")),
            ("srandmember s x", err(crate::kv::NOT_INTEGER)),
            (
                "srandmember s -9223372036854775808",
                err("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"),
            ),
            ("smove a b", arity("smove")),
            ("sinter", arity("sinter")),
            ("sdiffstore d", arity("sdiffstore")),
            ("sintercard", arity("sintercard")),
            ("sintercard 1", arity("sintercard")),
            ("sintercard 0 s", err("ERR numkeys should be greater than 0")),
            ("sintercard a s", err("ERR numkeys should be greater than 0")),
            ("sintercard 2 s", err("ERR Number of keys can't be greater than number of args")),
            ("sintercard 3 s t", err("ERR Number of keys can't be greater than number of args")),
            ("sintercard 1 s t", err("ERR syntax error")),
            ("sintercard 1 s bar_arg", err("ERR syntax error")),
            ("sintercard 1 s LIMIT", err("ERR syntax error")),
            ("sintercard 1 s LIMIT -1", err("ERR LIMIT can't be negative")),
            ("sintercard 1 s LIMIT a", err("ERR LIMIT can't be negative")),
            ("hrandfield", arity("hrandfield")),
            ("hrandfield h 1 withvalues x", err("ERR syntax error")),
            ("hrandfield h 1 x", err("ERR syntax error")),
            ("hrandfield h x", err(crate::kv::NOT_INTEGER)),
            ("hrandfield h -9223372036854770000 withvalues", err("ERR value is out of range")),
            ("hrandfield h -16777217", err(crate::kv::RANDOM_PICKS_TOO_MANY)),
            ("srandmember s -16777217", err(crate::kv::RANDOM_PICKS_TOO_MANY)),
            (
                "hrandfield h -9223372036854775808",
                err("ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807"),
            ),
            ("hincrbyfloat h f", arity("hincrbyfloat")),
            ("hincrbyfloat h f x", err("ERR value is not a valid float")),
            ("hincrbyfloat h f nan", err("ERR value is not a valid float")),
            ("hincrbyfloat h f +inf", err("ERR value is NaN or Infinity")),
            ("hmset h f", arity("hmset")),
            ("hmset h f v g", arity("hmset")),
        ]);
        assert!(db.state.is_empty());
    }

    #[test]
    fn sadd_srem_and_queries() {
        let mut db = Db::default();
        db.check(&[
            ("sadd myset foo", int(1)),
            ("sadd myset bar", int(1)),
            ("sadd myset bar", int(0)),
            ("scard myset", int(2)),
            ("sismember myset foo", int(1)),
            ("sismember myset bla", int(0)),
            ("smismember myset foo bla", ints(&[1, 0])),
            ("smismember myset bla foo", ints(&[0, 1])),
            ("smismember nokey foo bar", ints(&[0, 0])),
            ("smembers myset", strs(&["bar", "foo"])),
            ("sadd v a b c", int(3)),
            ("sadd v A a b c B", int(2)),
            ("srem v k k k", int(0)),
            ("srem v b x B y", int(2)),
            ("smembers v", strs(&["A", "a", "c"])),
            ("srem v a c A d", int(3)),
            ("exists v", int(0)),
            ("srem missing a", int(0)),
            ("smembers missing", strs(&[])),
            ("scard missing", int(0)),
            ("sismember missing a", int(0)),
        ]);
    }

    #[test]
    fn writes_keep_the_ttl_and_stale_keys_go() {
        let mut db = Db::default();
        db.check(&[("sadd s a b", int(2)), ("pexpire s 1000", int(1))]);
        db.now_ms = 500;
        db.check(&[
            ("sadd s c", int(1)),
            ("srem s a", int(1)),
            ("spop s 0", strs(&[])),
            ("pttl s", int(500)),
        ]);
        db.now_ms = 2000;
        assert!(db.state.contains_key(&b("s")), "expired, still on disk");
        db.check(&[("srem s b", int(0))]);
        assert!(
            !db.state.contains_key(&b("s")),
            "a write drops the stale key"
        );
        db.check(&[("sadd t a", int(1)), ("pexpire t 10", int(1))]);
        db.now_ms = 3000;
        db.check(&[
            ("sadd t b", int(1)),
            ("pttl t", int(-1)),
            ("scard t", int(1)),
        ]);
    }

    #[test]
    fn wrong_types_are_refused() {
        let mut db = Db::default();
        db.check(&[
            ("set str x", Reply::Ok),
            ("hset h f v", int(1)),
            ("sadd s a", int(1)),
        ]);
        for line in [
            "sadd str a",
            "srem str a",
            "smembers str",
            "sismember str a",
            "smismember str a",
            "scard str",
            "spop str",
            "spop str 2",
            "srandmember str",
            "srandmember str 2",
            "smove str s a",
            "sinter str",
            "sunion s str",
            "sdiff s str",
            "sinterstore d s str",
            "sintercard 2 s str",
            "hrandfield str",
            "hrandfield str 3",
            "hincrbyfloat str f 1",
            "hmset str f v",
        ] {
            assert_eq!(db.run(line), err(WRONGTYPE), "{line}");
        }
        assert_eq!(db.run("get str"), bulk("x"));
        assert_eq!(db.run("hget h f"), bulk("v"));
    }

    #[test]
    fn spop_and_srandmember() {
        let mut db = Db::default();
        db.check(&[
            ("spop nokey", Reply::Nil),
            ("spop nokey 100", strs(&[])),
            ("srandmember nokey", Reply::Nil),
            ("srandmember nokey 100", strs(&[])),
            ("sadd s a b c", int(3)),
            ("srandmember s 0", strs(&[])),
            ("spop s 0", strs(&[])),
        ]);
        let mut popped = Vec::new();
        for seed in 0..3 {
            match db.seeded("spop s", seed) {
                Reply::Bulk(member) => popped.push(member),
                other => panic!("{other:?}"),
            }
        }
        popped.sort();
        assert_eq!(popped, vec![b("a"), b("b"), b("c")]);
        assert!(!db.state.contains_key(&b("s")));

        // The suite's "SPOP with <count>": every member exactly once, then the key is gone.
        let letters: Vec<String> = ('a'..='z').map(String::from).collect();
        db.run(&format!("sadd s {}", letters.join(" ")));
        let mut all = Vec::new();
        for (i, count) in [11, 9, 0, 4, 1, 0, 1, 0].into_iter().enumerate() {
            let reply = db.seeded(&format!("spop s {count}"), i as u64);
            let got = Db::sorted(&reply);
            assert_eq!(got.len(), count);
            all.extend(got);
        }
        all.sort();
        assert_eq!(all, letters.iter().map(|l| b(l)).collect::<Vec<_>>());
        assert!(!db.state.contains_key(&b("s")));

        // Counts beyond the size return everything.
        db.run("sadd s 1 2 3 4 5");
        assert_eq!(Db::sorted(&db.run("spop s 30")).len(), 5);
        assert!(!db.state.contains_key(&b("s")));

        let members: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        db.run(&format!("sadd r {}", members.join(" ")));
        let every: BTreeSet<Bytes> = members.iter().map(|m| b(m)).collect();
        for size in [50, 100] {
            let got = Db::sorted(&db.run(&format!("srandmember r {size}")));
            assert_eq!(got, every.iter().cloned().collect::<Vec<_>>());
        }
        let mut seen = BTreeSet::new();
        for seed in 0..200 {
            for size in [45, 5] {
                let got = Db::sorted(&db.seeded(&format!("srandmember r {size}"), seed));
                assert_eq!(got.len(), size);
                let distinct: BTreeSet<Bytes> = got.iter().cloned().collect();
                assert_eq!(distinct.len(), size, "distinct members");
                assert!(distinct.is_subset(&every));
                seen.extend(distinct);
            }
        }
        assert_eq!(seen, every, "eventually every member");
        let repeats = Db::sorted(&db.seeded("srandmember r -100", 7));
        assert_eq!(repeats.len(), 100);
        assert!(repeats.iter().all(|m| every.contains(m)));
        let distinct: BTreeSet<&Bytes> = repeats.iter().collect();
        assert!(distinct.len() < 100, "a negative count repeats");
        // The same seed makes the same choice; a single member is a bulk.
        assert_eq!(db.seeded("srandmember r", 3), db.seeded("srandmember r", 3));
        assert!(matches!(db.seeded("srandmember r", 3), Reply::Bulk(_)));
        assert_eq!(
            db.seeded("srandmember r -5", 4),
            db.seeded("srandmember r -5", 4)
        );
        assert_eq!(db.run("scard r"), int(50), "SRANDMEMBER changes nothing");
    }

    #[test]
    fn spop_is_deterministic_per_seed_and_keeps_the_rest() {
        let members: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
        let line = format!("sadd s {}", members.join(" "));
        let mut first = Db::default();
        let mut second = Db::default();
        first.run(&line);
        second.run(&line);
        let a = first.seeded("spop s 18", 42);
        let b_ = second.seeded("spop s 18", 42);
        assert_eq!(a, b_);
        assert_eq!(first.state, second.state);
        let mut union = Db::sorted(&a);
        union.extend(first.set("s").expect("two left").iter().cloned());
        union.sort();
        let mut expected: Vec<Bytes> = members.iter().map(|m| b(m)).collect();
        expected.sort();
        assert_eq!(union, expected);
        assert_eq!(first.run("scard s"), int(2));
    }

    #[test]
    fn smove_as_redis() {
        let mut db = Db::default();
        let setup = |db: &mut Db| {
            db.run("del a b c");
            db.run("sadd a 1 x y");
            db.run("sadd b 2 3 4");
        };
        setup(&mut db);
        db.check(&[
            ("smove a b x", int(1)),
            ("smembers a", strs(&["1", "y"])),
            ("smembers b", strs(&["2", "3", "4", "x"])),
            ("smove a b nope", int(0)),
            ("smove a a nope", int(0)),
            ("smove a a 1", int(1)),
            ("smembers a", strs(&["1", "y"])),
            ("smove nokey b foo", int(0)),
            ("smove a c y", int(1)),
            ("smembers c", strs(&["y"])),
            ("smove a c 1", int(1)),
            ("exists a", int(0)),
            ("set str 10", Reply::Ok),
            ("smove str b 2", err(WRONGTYPE)),
            ("smove b str 2", err(WRONGTYPE)),
            // A missing source answers 0 before the destination's type is looked at.
            ("smove nokey str 2", int(0)),
            ("smembers b", strs(&["2", "3", "4", "x"])),
        ]);
        // The destination keeps its TTL.
        db.check(&[
            ("pexpire b 5000", int(1)),
            ("smove c b y", int(1)),
            ("pttl b", int(5000)),
        ]);
    }

    fn suite_sets(db: &mut Db) {
        db.run("del set1 set2 set3 set4 set5");
        let mut one = Vec::new();
        let mut two = Vec::new();
        for i in 0..200 {
            one.push(i.to_string());
            two.push((i + 195).to_string());
        }
        db.run(&format!("sadd set1 {} foo", one.join(" ")));
        db.run(&format!("sadd set2 {} foo", two.join(" ")));
        db.run("sadd set3 199 195 1000 2000 foo");
        let four: Vec<String> = (5..200).map(|i| i.to_string()).collect();
        db.run(&format!("sadd set4 {} foo", four.join(" ")));
        db.run("sadd set5 0 foo");
    }

    #[test]
    fn set_algebra_as_the_suite_checks() {
        let mut db = Db::default();
        suite_sets(&mut db);
        let sorted = |reply: Reply| Db::sorted(&reply);
        let list = |items: &[&str]| {
            let mut items: Vec<Bytes> = items.iter().map(|s| b(s)).collect();
            items.sort();
            items
        };
        assert_eq!(
            sorted(db.run("sinter set1 set2")),
            list(&["195", "196", "197", "198", "199", "foo"])
        );
        db.check(&[
            ("sintercard 2 set1 set2", int(6)),
            ("sintercard 2 set1 set2 limit 0", int(6)),
            ("sintercard 2 set1 set2 limit 3", int(3)),
            ("sintercard 2 set1 set2 limit 10", int(6)),
            ("sintercard 3 set1 set2 set3", int(3)),
            ("sintercard 3 set1 set2 set3 limit 2", int(2)),
            ("sintercard 1 nokey", int(0)),
            ("sintercard 1 nokey limit 10", int(0)),
            ("sinterstore setres set1 set2", int(6)),
        ]);
        assert_eq!(
            sorted(db.run("smembers setres")),
            list(&["195", "196", "197", "198", "199", "foo"])
        );
        assert_eq!(
            sorted(db.run("sinter set1 set2 set3")),
            list(&["195", "199", "foo"])
        );
        let union = sorted(db.run("sunion nokey1 set1 set2 nokey2"));
        assert_eq!(union.len(), 395 + 1);
        db.check(&[("sunionstore setres set1 set2", int(396))]);
        assert_eq!(
            sorted(db.run("sdiff set1 set4")),
            list(&["0", "1", "2", "3", "4"])
        );
        assert_eq!(
            sorted(db.run("sdiff set1 set4 set5")),
            list(&["1", "2", "3", "4"])
        );
        db.check(&[("sdiffstore setres set1 set4 set5", int(4))]);
        assert_eq!(
            sorted(db.run("smembers setres")),
            list(&["1", "2", "3", "4"])
        );
        let all1 = sorted(db.run("smembers set1"));
        assert_eq!(sorted(db.run("sinter set1 set1 set1")), all1);
        assert_eq!(sorted(db.run("sunion set1 set1 set1")), all1);
        db.check(&[
            ("sdiff set1 set1 set1", strs(&[])),
            ("sdiff nokey set1", strs(&[])),
            ("sinter set1 nokey", strs(&[])),
        ]);
    }

    #[test]
    fn stores_replace_the_destination() {
        let mut db = Db::default();
        db.check(&[
            ("set key1 x", Reply::Ok),
            // A WRONGTYPE source fails with the destination untouched, missing or not.
            ("sdiffstore set3 key1 noset", err(WRONGTYPE)),
            ("sinterstore set3 noset key1", err(WRONGTYPE)),
            ("sunionstore set3 noset key1", err(WRONGTYPE)),
            ("exists set3", int(0)),
            ("sadd set1 a b c", int(3)),
            ("sadd set2 b c d", int(3)),
            ("sadd set3 e", int(1)),
            ("sinterstore set3 noset key1 set2", err(WRONGTYPE)),
            ("sdiffstore set3 set1 key1 set2", err(WRONGTYPE)),
            ("sunionstore set3 key1 set1", err(WRONGTYPE)),
            ("smembers set3", strs(&["e"])),
            // An empty result deletes the destination, whatever it held.
            ("set setres xxx", Reply::Ok),
            ("sdiffstore setres foo111 bar222", int(0)),
            ("exists setres", int(0)),
            ("sinterstore set3 set1 nokey", int(0)),
            ("exists set3", int(0)),
            ("sadd set3 a", int(1)),
            ("sunionstore set3 nokey1 nokey2", int(0)),
            ("exists set3", int(0)),
            // A destination of another type is overwritten, and loses its TTL.
            ("set setres xxx px 100000", Reply::Ok),
            ("sunionstore setres set1 set2", int(4)),
            ("smembers setres", strs(&["a", "b", "c", "d"])),
            ("pttl setres", int(-1)),
            ("sadd dst z", int(1)),
            ("pexpire dst 100000", int(1)),
            ("sinterstore dst set1 set2", int(2)),
            ("pttl dst", int(-1)),
            ("smembers dst", strs(&["b", "c"])),
            // The destination may be a source too.
            ("sdiffstore set1 set1 set2", int(1)),
            ("smembers set1", strs(&["a"])),
            ("sunionstore set1 set1 set2", int(4)),
            ("smembers set1", strs(&["a", "b", "c", "d"])),
        ]);
    }

    #[test]
    fn hrandfield_shapes() {
        let mut db = Db::default();
        db.check(&[
            ("hrandfield nokey", Reply::Nil),
            ("hrandfield nokey 100", strs(&[])),
            ("hrandfield nokey -5 withvalues", strs(&[])),
            (
                "hmset h a 1 b 2 c 3 d 4 e 5 6 f 7 g 8 h 9 i 10 j",
                Reply::Ok,
            ),
            ("hrandfield h 0", strs(&[])),
            ("hrandfield h 0 withvalues", strs(&[])),
        ]);
        let fields: BTreeSet<Bytes> = ["a", "b", "c", "d", "e", "6", "7", "8", "9", "10"]
            .iter()
            .map(|f| b(f))
            .collect();
        let pairs = |reply: &Reply| -> Vec<(Bytes, Bytes)> {
            let Reply::Array(items) = reply else {
                panic!("{reply:?}")
            };
            items
                .chunks(2)
                .map(|pair| match (&pair[0], &pair[1]) {
                    (Reply::Bulk(f), Reply::Bulk(v)) => (f.clone(), v.clone()),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let all = pairs(&db.run("hgetall h"));
        let lookup: BTreeMap<Bytes, Bytes> = all.into_iter().collect();
        for (line, len) in [
            ("hrandfield h -20", 20),
            ("hrandfield h -1001", 1001),
            ("hrandfield h -20 withvalues", 40),
            ("hrandfield h -1001 withvalues", 2002),
            ("hrandfield h 10", 10),
            ("hrandfield h 20", 10),
            ("hrandfield h 10 withvalues", 20),
            ("hrandfield h 20 WITHVALUES", 20),
            ("hrandfield h 8", 8),
            ("hrandfield h 2 withvalues", 4),
        ] {
            let reply = db.seeded(line, 11);
            let Reply::Array(items) = &reply else {
                panic!("{reply:?}")
            };
            assert_eq!(items.len(), len, "{line}");
            let with_values = line.to_lowercase().ends_with("withvalues");
            let returned: Vec<Bytes> = if with_values {
                let pairs = pairs(&reply);
                for (field, value) in &pairs {
                    assert_eq!(lookup.get(field), Some(value), "{line}");
                }
                pairs.into_iter().map(|(field, _)| field).collect()
            } else {
                Db::sorted(&reply)
            };
            assert!(returned.iter().all(|f| fields.contains(f)), "{line}");
            let distinct: BTreeSet<&Bytes> = returned.iter().collect();
            if line.contains('-') {
                assert!(distinct.len() < returned.len(), "{line}: repeats");
            } else {
                assert_eq!(distinct.len(), returned.len(), "{line}: distinct");
            }
        }
        let mut seen = BTreeSet::new();
        for seed in 0..300 {
            match db.seeded("hrandfield h", seed) {
                Reply::Bulk(field) => {
                    seen.insert(field);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen, fields);
    }

    #[test]
    fn hincrbyfloat_as_the_suite_checks() {
        let mut db = Db::default();
        db.check(&[
            ("hincrbyfloat htest foo 2.5", bulk("2.5")),
            ("hget htest foo", bulk("2.5")),
            ("hincrby htest tmp 2", int(2)),
            ("hincrbyfloat htest tmp 3.5", bulk("5.5")),
            ("hset htest tmp 100", int(0)),
            ("hincrbyfloat htest tmp 2.5", bulk("102.5")),
            ("hset htest tmp 17179869184", int(0)),
            ("hincrbyfloat htest tmp 1", bulk("17179869185")),
            ("hset htest tmp 17179869184", int(0)),
            ("hincrbyfloat htest tmp 17179869184", bulk("34359738368")),
            ("hset htest tmp 0", int(0)),
            ("hincrbyfloat htest tmp 0.0000005", bulk("0.0000005")),
            ("hincrbyfloat myhash float 1.23", bulk("1.23")),
            ("hincrbyfloat myhash float 0.77", bulk("2")),
            ("hincrbyfloat myhash float -0.1", bulk("1.9")),
            ("hget myhash float", bulk("1.9")),
            (
                "hincrbyfloat hfoo field +inf",
                err("ERR value is NaN or Infinity"),
            ),
            ("exists hfoo", int(0)),
            ("hset h str inf", int(1)),
            (
                "hincrbyfloat h str 1",
                err("ERR increment would produce NaN or Infinity"),
            ),
            ("hset h big 1.18973149535723176502e4932", int(1)),
            (
                "hincrbyfloat h big 1e4932",
                err("ERR increment would produce NaN or Infinity"),
            ),
            ("hget h str", bulk("inf")),
        ]);
        for bad in [" 11", "11 ", "1\x002", "abc", ""] {
            let value = Bytes::from(bad.replace("\\x00", "\0"));
            db.apply(&Command::HSet {
                key: b("h"),
                pairs: vec![(b("str"), value)],
            });
            assert_eq!(
                db.run("hincrbyfloat h str 1"),
                err("ERR hash value is not a float"),
                "{bad:?}"
            );
        }
        // The TTL is kept.
        db.check(&[
            ("pexpire htest 9000", int(1)),
            ("hincrbyfloat htest foo -2.5", bulk("0")),
            ("pttl htest", int(9000)),
            ("hmset htest a 1", Reply::Ok),
            ("pttl htest", int(9000)),
            ("hmset htest a 2 b 3", Reply::Ok),
            ("hmget htest a b foo", strs(&["2", "3", "0"])),
        ]);
    }

    /// What a set command should do to a model set and answer.
    fn model_step(model: &mut BTreeSet<Bytes>, kind: u8, member: &Bytes) -> Reply {
        match kind {
            0 => int(i64::from(model.insert(member.clone()))),
            1 => int(i64::from(model.remove(member))),
            2 => int(i64::from(model.contains(member))),
            3 => int(model.len() as i64),
            _ => Reply::Array(model.iter().cloned().map(Reply::Bulk).collect()),
        }
    }

    proptest! {
        /// SADD/SREM/SISMEMBER/SCARD/SMEMBERS on one key match a plain set, SPOP with a count
        /// removes exactly what it answers, and the key exists exactly when the set is not
        /// empty.
        #[test]
        fn matches_a_set_model(
            ops in proptest::collection::vec((0u8..6, 0u8..12, 0u64..4), 1..120)
        ) {
            let mut db = Db::default();
            let mut model = BTreeSet::new();
            let key = b("s");
            for (kind, member, count) in ops {
                let member = Bytes::from(format!("m{member}"));
                let command = match kind {
                    0 => SetCommand::SAdd { key: key.clone(), members: vec![member.clone()] },
                    1 => SetCommand::SRem { key: key.clone(), members: vec![member.clone()] },
                    2 => SetCommand::SIsMember { key: key.clone(), member: member.clone() },
                    3 => SetCommand::SCard { key: key.clone() },
                    4 => SetCommand::SMembers { key: key.clone() },
                    _ => SetCommand::SPop { key: key.clone(), count: Some(count), seed: count },
                };
                let reply = db.apply(&Command::SetOp(command));
                if kind == 5 {
                    let popped = Db::sorted(&reply);
                    prop_assert_eq!(popped.len() as u64, count.min(model.len() as u64));
                    for member in popped {
                        prop_assert!(model.remove(&member));
                    }
                } else {
                    prop_assert_eq!(reply, model_step(&mut model, kind, &member));
                }
                prop_assert_eq!(db.set("s").cloned().unwrap_or_default(), model.clone());
                prop_assert_eq!(db.state.contains_key(&key), !model.is_empty());
            }
        }

        /// The set algebra against the obvious model, on three random sets.
        #[test]
        fn algebra_matches_a_model(
            sets in proptest::collection::vec(proptest::collection::btree_set(0u8..20, 0..12), 3),
            limit in 0u64..8,
        ) {
            let mut db = Db::default();
            let names = ["a", "b", "c"];
            let sets: Vec<BTreeSet<Bytes>> = sets
                .iter()
                .map(|set| set.iter().map(|m| Bytes::from(m.to_string())).collect())
                .collect();
            for (name, set) in names.iter().zip(&sets) {
                if !set.is_empty() {
                    db.apply(&Command::SetOp(SetCommand::SAdd {
                        key: b(name),
                        members: set.iter().cloned().collect(),
                    }));
                }
            }
            let inter: BTreeSet<Bytes> =
                sets[0].iter().filter(|m| sets[1].contains(*m) && sets[2].contains(*m)).cloned().collect();
            let union: BTreeSet<Bytes> = sets.iter().flatten().cloned().collect();
            let diff: BTreeSet<Bytes> =
                sets[0].iter().filter(|m| !sets[1].contains(*m) && !sets[2].contains(*m)).cloned().collect();
            let array = |set: &BTreeSet<Bytes>| Reply::Array(set.iter().cloned().map(Reply::Bulk).collect());
            prop_assert_eq!(db.run("sinter a b c"), array(&inter));
            prop_assert_eq!(db.run("sunion a b c"), array(&union));
            prop_assert_eq!(db.run("sdiff a b c"), array(&diff));
            let expected = if limit == 0 { inter.len() } else { inter.len().min(limit as usize) };
            prop_assert_eq!(db.run(&format!("sintercard 3 a b c limit {limit}")), int(expected as i64));
            prop_assert_eq!(db.run("sdiffstore d a b c"), int(diff.len() as i64));
            prop_assert_eq!(db.set("d").cloned().unwrap_or_default(), diff);
        }

        /// A scan with any COUNT returns every member exactly once.
        #[test]
        fn sscan_visits_each_member_once(
            members in proptest::collection::btree_set("[a-z0-9]{0,6}", 1..80),
            count in 1usize..20,
        ) {
            let mut db = Db::default();
            db.apply(&Command::SetOp(SetCommand::SAdd {
                key: b("s"),
                members: members.iter().map(|m| b(m)).collect(),
            }));
            let mut cursor = 0u64;
            let mut found = Vec::new();
            loop {
                let reply = db.apply(&Command::SetOp(SetCommand::SScan {
                    key: b("s"),
                    cursor,
                    options: vec![b("COUNT"), b(&count.to_string())],
                }));
                let Reply::Array(parts) = reply else { panic!() };
                let Reply::Array(items) = &parts[1] else { panic!() };
                prop_assert!(items.len() <= count + 2, "about COUNT per page");
                found.extend(Db::sorted(&parts[1]));
                let Reply::Bulk(next) = &parts[0] else { panic!() };
                cursor = std::str::from_utf8(next).expect("ascii").parse().expect("number");
                if cursor == 0 {
                    break;
                }
            }
            found.sort();
            let expected: Vec<Bytes> = members.iter().map(|m| b(m)).collect();
            prop_assert_eq!(found, expected);
        }
    }
}
