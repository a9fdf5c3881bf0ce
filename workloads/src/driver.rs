//! The workload driver: one client process that generates operations (register writes and
//! reads, counter increments and reads, list appends and reads, with think times between them)
//! and records each straight into a [`History`] as an invocation and a completion.
//!
//! It knows nothing of how commands reach the store or what time is: an [`Executor`] sends a
//! Redis command (an argument list) and says what came back ([`Response`]: a reply, certainly
//! failed, or indeterminate), and a [`Timer`] gives the history's time and sleeps. The
//! simulator drives it over simulated clients and time (`larder_sim::workload`), `larder
//! jepsen` over TCP to a real proxy and the wall clock.
//!
//! Operation values are unique per process (`"{process}-{sequence}"`), so a read names the
//! write it saw, and an appended element shows exactly which appends survived, in what order.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;

use bytes::Bytes;
use larder_core::env::{Rng, SeededRng};
use larder_core::resp::Frame;
use serde::{Deserialize, Serialize};

use crate::history::{Function, History, OpKind, Value};

/// The key of register `index`.
pub fn register_key(index: u64) -> String {
    format!("reg:{index}")
}

/// The key of counter `index`.
pub fn counter_key(index: u64) -> String {
    format!("ctr:{index}")
}

/// The key of list `index` (appended to with `APPEND`).
pub fn list_key(index: u64) -> String {
    format!("log:{index}")
}

/// The key of TTL key `index` (written with and without expiries, expired, persisted).
pub fn ttl_key(index: u64) -> String {
    format!("ttl:{index}")
}

/// The history key of multi-key object `index`: a hash tag, so its sub-keys
/// ([`multi_sub_key`]) share one slot and so one group.
pub fn multi_key(index: u64) -> String {
    format!("{{m{index}}}")
}

/// The history key of collections object `index`: a hash tag, so its list (`{c0}:l`), set
/// (`{c0}:s`) and sorted set (`{c0}:z`) share one slot, and so one group, which a
/// transaction over them needs.
pub fn collections_key(index: u64) -> String {
    format!("{{c{index}}}")
}

/// The history key of lock object `index`: a hash tag, so its lock (`{k0}:lock`) and the
/// counter its holders increment under a fence (`{k0}:count`) share one slot, which the
/// fenced transaction needs.
pub fn lock_key(index: u64) -> String {
    format!("{{k{index}}}")
}

/// Members a collections object's set and sorted set draw from: few, so adds and removes of
/// one member meet, and increments of one member chain.
const COLLECTION_MEMBERS: u64 = 3;

/// The name of sub-key `index` of a multi-key object (`a`, `b`, ...).
pub fn multi_sub_name(index: u64) -> String {
    char::from(b'a' + (index % 26) as u8).to_string()
}

/// The Redis key of sub-key `name` of multi-key object `object` (`{m3}:a`).
pub fn multi_sub_key(object: &str, name: &str) -> String {
    format!("{object}:{name}")
}

/// Relative weights of the operations a client picks from (one draw below their sum per
/// operation, walked in field order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix {
    /// `SET` of a register.
    pub write: u64,
    /// `GET` of a register.
    pub read: u64,
    /// `INCRBY` of a counter.
    pub add: u64,
    /// `GET` of a counter.
    pub counter_read: u64,
    /// `APPEND` of a unique element to a list (a register read without list keys).
    pub append: u64,
    /// `GET` of a list (a register read without list keys).
    pub list_read: u64,
    /// An operation on a TTL key: `SET` with `PX`/`EX` or without, `PEXPIRE`/`EXPIRE`,
    /// `PERSIST`, `PTTL`/`TTL`, `GET` (a register read without TTL keys).
    #[serde(default)]
    pub ttl: u64,
    /// An operation on a multi-key object: `MSET`, `MGET` or `DEL` of several of its sub-keys
    /// (a register read without multi-key objects).
    #[serde(default)]
    pub multi: u64,
    /// An operation on a collections object: a list push or pop, a set add or remove, a
    /// sorted-set increment, a read of one of them, or a `MULTI … EXEC` transaction over all
    /// three (a register read without collections objects).
    #[serde(default)]
    pub collections: u64,
    /// An operation on a lock object: an acquisition, a fenced increment of its counter with
    /// the token held, a release; now and then a holder that lets go goes on with its old
    /// token once, as a holder paused past its lease would (a register read without lock
    /// objects).
    #[serde(default)]
    pub locks: u64,
}

impl Mix {
    fn total(&self) -> u64 {
        self.write
            + self.read
            + self.add
            + self.counter_read
            + self.append
            + self.list_read
            + self.ttl
            + self.multi
            + self.collections
            + self.locks
    }
}

/// Shape of the generated workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadConfig {
    pub register_keys: u64,
    pub counter_keys: u64,
    /// List-append keys: every element appended is unique, so a read shows exactly which
    /// acknowledged appends survived and in what order (checked as linearizable appends).
    pub list_keys: u64,
    /// Pause between a client's operations, drawn from `[0, think_ms_max]`.
    pub think_ms_max: u64,
    /// Pace operations on a schedule instead of pausing after each: the client's next
    /// operation is due a pause (drawn as above) after the previous one was *due*, and starts
    /// at once when it is late, so the operations' own latency does not slow the client down
    /// and it starts one every `think_ms_max / 2` ms on average (how `larder sim --rate` holds
    /// a target rate) while it can keep up. A client that fell behind by more than
    /// `think_ms_max` (an outage) drops the backlog instead of firing it all at once.
    pub paced: bool,
    /// Increments are drawn from `[1, delta_max]`.
    pub delta_max: u64,
    pub mix: Mix,
    /// TTL keys ([`ttl_key`]); 0 turns TTL operations into register reads.
    #[serde(default)]
    pub ttl_keys: u64,
    /// Expiries are drawn from `[1, ttl_ms_max]` ms (`EX`/`EXPIRE`: whole seconds up to it).
    #[serde(default = "default_ttl_ms_max")]
    pub ttl_ms_max: u64,
    /// Multi-key objects ([`multi_key`]); 0 turns multi-key operations into register reads.
    #[serde(default)]
    pub multi_keys: u64,
    /// Sub-keys per multi-key object.
    #[serde(default = "default_multi_width")]
    pub multi_width: u64,
    /// Lulls in the traffic, when clients only read.
    #[serde(default)]
    pub lulls: Option<Lulls>,
    /// Collections objects ([`collections_key`]); 0 turns collection operations into
    /// register reads.
    #[serde(default)]
    pub collection_keys: u64,
    /// A hot key: this percentage of register operations (writes and reads) go to register 0,
    /// the rest spread over all registers. 0 (the default): no hot key, and no draw is made
    /// for it, so seeds without one replay as before.
    #[serde(default)]
    pub hot_share_percent: u64,
    /// Lock objects ([`lock_key`]); 0 turns lock operations into register reads.
    #[serde(default)]
    pub lock_keys: u64,
    /// Leases are drawn from `[1, lease_ms_max]` ms.
    #[serde(default = "default_lease_ms_max")]
    pub lease_ms_max: u64,
}

fn default_lease_ms_max() -> u64 {
    1_000
}

/// Lulls in the traffic: for the last `for_ms` of every `every_ms` of the history's time,
/// clients only read. A group then sees no writes for a while as its keys expire and are
/// read: the window where a read that judges expiry by a clock the log never reached goes
/// unnoticed by every later write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lulls {
    pub every_ms: u64,
    pub for_ms: u64,
}

impl Lulls {
    /// Whether `now_ms` (the history's time) falls in a lull.
    pub fn contains(&self, now_ms: u64) -> bool {
        let every = self.every_ms.max(1);
        now_ms % every >= every.saturating_sub(self.for_ms)
    }
}

/// Draws a client makes for a read-only operation during a lull before it settles for a
/// register read.
const LULL_DRAWS: usize = 16;

fn default_ttl_ms_max() -> u64 {
    3000
}

fn default_multi_width() -> u64 {
    3
}

impl Default for WorkloadConfig {
    /// The simulator's workload: registers, counters (never read by clients: the checker reads
    /// them at the end) and lists.
    fn default() -> Self {
        WorkloadConfig {
            register_keys: 4,
            counter_keys: 2,
            list_keys: 2,
            think_ms_max: 20,
            paced: false,
            delta_max: 9,
            mix: Mix {
                write: 4,
                read: 3,
                add: 3,
                counter_read: 0,
                append: 1,
                list_read: 1,
                ttl: 0,
                multi: 0,
                collections: 0,
                locks: 0,
            },
            ttl_keys: 0,
            ttl_ms_max: default_ttl_ms_max(),
            multi_keys: 0,
            multi_width: default_multi_width(),
            lulls: None,
            collection_keys: 0,
            hot_share_percent: 0,
            lock_keys: 0,
            lease_ms_max: default_lease_ms_max(),
        }
    }
}

impl WorkloadConfig {
    /// `larder jepsen`'s workload: registers and counters, both read by clients.
    pub fn jepsen() -> Self {
        WorkloadConfig {
            register_keys: 4,
            counter_keys: 2,
            list_keys: 0,
            think_ms_max: 19,
            paced: false,
            delta_max: 5,
            mix: Mix {
                write: 4,
                read: 3,
                add: 2,
                counter_read: 1,
                append: 0,
                list_read: 0,
                ttl: 0,
                multi: 0,
                collections: 0,
                locks: 0,
            },
            ttl_keys: 0,
            ttl_ms_max: default_ttl_ms_max(),
            multi_keys: 0,
            multi_width: default_multi_width(),
            lulls: None,
            collection_keys: 0,
            hot_share_percent: 0,
            lock_keys: 0,
            lease_ms_max: default_lease_ms_max(),
        }
    }

    /// Turns TTL operations on: `keys` TTL keys picked with weight `weight`.
    pub fn with_ttl(mut self, keys: u64, weight: u64) -> Self {
        self.ttl_keys = keys;
        self.mix.ttl = weight;
        self
    }

    /// Turns multi-key operations on: `objects` objects picked with weight `weight`.
    /// The Redis keys this workload touches (every sub-key of the multi-key objects), in a
    /// fixed order.
    pub fn redis_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        keys.extend((0..self.register_keys).map(register_key));
        keys.extend((0..self.counter_keys).map(counter_key));
        keys.extend((0..self.list_keys).map(list_key));
        keys.extend((0..self.ttl_keys).map(ttl_key));
        for object in 0..self.multi_keys {
            keys.push(multi_sub_key(&multi_key(object), &multi_sub_name(0)));
        }
        for object in 0..self.collection_keys {
            keys.push(multi_sub_key(&collections_key(object), "l"));
        }
        for object in 0..self.lock_keys {
            keys.push(multi_sub_key(&lock_key(object), "lock"));
        }
        keys
    }

    /// Makes register 0 a hot key taking `percent` of the register operations.
    pub fn with_hot_key(mut self, percent: u64) -> Self {
        self.hot_share_percent = percent.min(100);
        self
    }

    /// Turns collection operations on: `objects` collections objects picked with weight
    /// `weight`.
    pub fn with_collections(mut self, objects: u64, weight: u64) -> Self {
        self.collection_keys = objects;
        self.mix.collections = weight;
        self
    }

    /// Turns lock operations on: `objects` lock objects picked with weight `weight`.
    pub fn with_locks(mut self, objects: u64, weight: u64) -> Self {
        self.lock_keys = objects;
        self.mix.locks = weight;
        self
    }

    pub fn with_multi(mut self, objects: u64, weight: u64) -> Self {
        self.multi_keys = objects;
        self.mix.multi = weight;
        self
    }
}

/// A command to send: its Redis arguments, and whether it may change state (a write whose
/// reply is lost may have taken effect; a read whose reply is lost did nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub args: Vec<Bytes>,
    pub write: bool,
    /// Non-empty: a `MULTI … EXEC` transaction of these commands (`args` is then `EXEC`),
    /// which a RESP executor sends as `MULTI`, each command, `EXEC` on one connection and an
    /// SDK executor as one `Command::Transaction`.
    pub transaction: Vec<Vec<Bytes>>,
}

impl Request {
    /// The commands a RESP client sends for this request, one round trip each, the last one's
    /// reply being the request's: `MULTI`, the commands, `EXEC` for a transaction; else the
    /// command alone.
    pub fn resp_commands(&self) -> Vec<Vec<Bytes>> {
        if self.transaction.is_empty() {
            return vec![self.args.clone()];
        }
        let mut commands = vec![args(&["MULTI"])];
        commands.extend(self.transaction.iter().cloned());
        commands.push(args(&["EXEC"]));
        commands
    }

    /// What the reply to one of [`Request::resp_commands`] before the last means: `None` when
    /// it is what a transaction expects (`+OK` to `MULTI`, `+QUEUED` to a command), else the
    /// response that ends the request. Nothing has run yet (`EXEC` was not sent), so it ends
    /// as failed.
    pub fn resp_step(&self, step: usize, frame: Frame) -> Option<Response> {
        let expected = if step == 0 { "OK" } else { "QUEUED" };
        match frame {
            Frame::Simple(text) if text == expected => None,
            other => Some(Response::Failed(format!(
                "transaction step {step} answered {other:?}"
            ))),
        }
    }

    /// What a request whose reply never came means.
    pub fn lost(&self, reason: String) -> Response {
        if self.write {
            Response::Indeterminate(reason)
        } else {
            Response::Failed(reason)
        }
    }
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// The store answered (possibly with an error reply the driver did not expect).
    Reply(Frame),
    /// Certainly had no effect.
    Failed(String),
    /// May or may not have taken effect.
    Indeterminate(String),
}

impl Response {
    /// A RESP reply of Larder's proxy: `-TRYAGAIN` and `-HOTKEY` mean nothing happened, `-ERR
    /// indeterminate` that a write may have happened; anything else is a reply.
    pub fn from_frame(frame: Frame) -> Response {
        match frame {
            Frame::Error(text) if text.starts_with("TRYAGAIN") => Response::Failed(text),
            // The proxy's per-key write limit refused it before sending it anywhere.
            Frame::Error(text) if text.starts_with("HOTKEY") => Response::Failed(text),
            Frame::Error(text) if text.starts_with("ERR indeterminate") => {
                Response::Indeterminate(text)
            }
            frame => Response::Reply(frame),
        }
    }
}

/// How a client reaches the store.
pub trait Executor {
    fn execute(&mut self, request: &Request) -> impl Future<Output = Response>;
}

/// The history's clock, and sleeping on it.
pub trait Timer {
    /// Now, in nanoseconds since an origin every client of the run shares.
    fn now_ns(&self) -> u64;
    fn sleep_ms(&self, ms: u64) -> impl Future<Output = ()>;
}

/// An operation about to be invoked.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub f: Function,
    pub key: String,
    /// The invocation's value: the value written, the delta, the element appended; `null` for
    /// reads.
    pub value: Value,
    /// A read of a counter (its value is read as an integer).
    pub counter: bool,
    pub request: Request,
}

/// An operation as it completed.
#[derive(Debug, Clone, PartialEq)]
pub struct Completed {
    pub process: u64,
    pub f: Function,
    pub key: String,
    pub value: Value,
    /// What an `ok` read returned; the invocation's value otherwise.
    pub output: Value,
    /// `Ok`, `Fail` or `Info`.
    pub kind: OpKind,
    pub error: Option<String>,
}

/// An entry of [`Mix`].
#[derive(Debug, Clone, Copy)]
enum Pick {
    Write,
    Read,
    Add,
    CounterRead,
    Append,
    ListRead,
    Ttl,
    Multi,
    Collections,
    Locks,
}

/// One client process.
#[derive(Debug)]
pub struct Driver<E, T> {
    process: u64,
    config: WorkloadConfig,
    rng: SeededRng,
    sequence: u64,
    executor: E,
    timer: T,
    /// The token this client holds of each lock object, as its last answers told it.
    held: BTreeMap<u64, i64>,
    /// A token this client let go of and will use once more, as a holder paused past its
    /// lease would, before it learns it lost the lock.
    stale: BTreeMap<u64, i64>,
}

fn args(parts: &[&str]) -> Vec<Bytes> {
    parts
        .iter()
        .map(|part| Bytes::copy_from_slice(part.as_bytes()))
        .collect()
}

impl<E, T> Driver<E, T> {
    /// `process` names the client in the history; `seed` draws its operations and pauses.
    pub fn new(process: u64, config: WorkloadConfig, seed: u64, executor: E, timer: T) -> Self {
        Driver {
            process,
            config,
            rng: SeededRng::new(seed),
            sequence: 0,
            executor,
            timer,
            held: BTreeMap::new(),
            stale: BTreeMap::new(),
        }
    }

    /// Draws the next operation.
    pub fn next_op(&mut self) -> Planned {
        self.sequence += 1;
        let lists = self.config.list_keys;
        match self.pick() {
            Pick::Write => self.write(),
            Pick::Add => self.add(),
            Pick::CounterRead => {
                let key = counter_key(self.rng.below(self.config.counter_keys.max(1)));
                Planned {
                    counter: true,
                    ..Self::read(key)
                }
            }
            Pick::Append if lists > 0 => {
                let key = list_key(self.rng.below(lists));
                let element = format!("{}-{},", self.process, self.sequence);
                Planned {
                    f: Function::Append,
                    request: Request {
                        args: args(&["APPEND", &key, &element]),
                        write: true,
                        transaction: Vec::new(),
                    },
                    key,
                    value: Value::Str(element),
                    counter: false,
                }
            }
            Pick::ListRead if lists > 0 => Self::read(list_key(self.rng.below(lists))),
            Pick::Ttl if self.config.ttl_keys > 0 => self.ttl_op(),
            Pick::Multi if self.config.multi_keys > 0 => self.multi_op(),
            Pick::Collections if self.config.collection_keys > 0 => self.collections_op(),
            Pick::Locks if self.config.lock_keys > 0 => self.lock_op(),
            Pick::Read
            | Pick::Append
            | Pick::ListRead
            | Pick::Ttl
            | Pick::Multi
            | Pick::Collections
            | Pick::Locks => {
                let register = self.register();
                Self::read(register_key(register))
            }
        }
    }

    /// The register an operation goes to: register 0 with the hot key's share
    /// ([`WorkloadConfig::hot_share_percent`]), else any.
    fn register(&mut self) -> u64 {
        let share = self.config.hot_share_percent;
        if share > 0 && self.rng.below(100) < share {
            return 0;
        }
        self.rng.below(self.config.register_keys.max(1))
    }

    /// An operation on a TTL key: mostly writes with an expiry and reads, so keys expire
    /// under the readers' eyes; sometimes a write without one, an expiry, a persist, a TTL.
    fn ttl_op(&mut self) -> Planned {
        let key = ttl_key(self.rng.below(self.config.ttl_keys));
        let value = format!("{}-{}", self.process, self.sequence);
        let ttl_ms_max = self.config.ttl_ms_max.max(1);
        let millis = 1 + self.rng.below(ttl_ms_max);
        let seconds = 1 + self.rng.below(ttl_ms_max.div_ceil(1000));
        let (f, request, value, write) = match self.rng.below(20) {
            0..=4 => (
                Function::SetTtl,
                ["SET", &key, &value, "PX", &millis.to_string()].join(" "),
                Value::List(vec![value.clone().into(), Value::Int(millis as i64)]),
                true,
            ),
            5 => (
                Function::SetTtl,
                ["SET", &key, &value, "EX", &seconds.to_string()].join(" "),
                Value::List(vec![
                    value.clone().into(),
                    Value::Int(seconds as i64 * 1000),
                ]),
                true,
            ),
            6 => (
                Function::Write,
                ["SET", &key, &value].join(" "),
                Value::Str(value.clone()),
                true,
            ),
            7 => (
                Function::Expire,
                ["PEXPIRE", &key, &millis.to_string()].join(" "),
                Value::Int(millis as i64),
                true,
            ),
            8 => (
                Function::Expire,
                ["EXPIRE", &key, &seconds.to_string()].join(" "),
                Value::Int(seconds as i64 * 1000),
                true,
            ),
            9 => (
                Function::Persist,
                ["PERSIST", &key].join(" "),
                Value::Null,
                true,
            ),
            10..=11 => (
                Function::Ttl,
                ["PTTL", &key].join(" "),
                Value::from("ms"),
                false,
            ),
            12 => (
                Function::Ttl,
                ["TTL", &key].join(" "),
                Value::from("s"),
                false,
            ),
            _ => return Self::read(key),
        };
        // The values and names above hold no spaces.
        let words: Vec<&str> = request.split(' ').collect();
        Planned {
            f,
            request: Request {
                args: args(&words),
                write,
                transaction: Vec::new(),
            },
            key,
            value,
            counter: false,
        }
    }

    /// An operation on a multi-key object: `MSET` of all its sub-keys or of some, `MGET` of
    /// all of them, or `DEL` of some. Every `MSET` writes one unique value to each sub-key it
    /// names, so a read that shows two different writes' values where one write covered both
    /// sub-keys is a torn read.
    fn multi_op(&mut self) -> Planned {
        let key = multi_key(self.rng.below(self.config.multi_keys));
        let width = self.config.multi_width.clamp(1, 26);
        let all: Vec<String> = (0..width).map(multi_sub_name).collect();
        // A non-empty subset, in name order.
        let mut some: Vec<String> = all
            .iter()
            .filter(|_| self.rng.chance(0.5))
            .cloned()
            .collect();
        if some.is_empty() {
            some.push(all[self.rng.below(width) as usize].clone());
        }
        let value = format!("{}-{}", self.process, self.sequence);
        let roll = self.rng.below(20);
        let names =
            |names: &[String]| Value::List(names.iter().map(|n| n.clone().into()).collect());
        let sub_keys = |names: &[String]| -> Vec<String> {
            names.iter().map(|name| multi_sub_key(&key, name)).collect()
        };
        let (f, value, command, words, write) = match roll {
            0..=7 => {
                let written = if roll < 6 { &all } else { &some };
                let mut words = Vec::new();
                for sub in sub_keys(written) {
                    words.push(sub);
                    words.push(value.clone());
                }
                let pairs = written
                    .iter()
                    .map(|name| Value::List(vec![name.clone().into(), value.clone().into()]))
                    .collect();
                (Function::MWrite, Value::List(pairs), "MSET", words, true)
            }
            8..=9 => (Function::MDel, names(&some), "DEL", sub_keys(&some), true),
            _ => (Function::MRead, names(&all), "MGET", sub_keys(&all), false),
        };
        let mut parts = vec![command];
        parts.extend(words.iter().map(String::as_str));
        Planned {
            f,
            request: Request {
                args: args(&parts),
                write,
                transaction: Vec::new(),
            },
            key,
            value,
            counter: false,
        }
    }

    /// An operation on a collections object: one push, pop, add, remove, increment or read,
    /// or a transaction that pushes to the list, adds to the set and increments the sorted
    /// set (or pops, removes and increments), or reads all three (every member's score).
    /// Pushes and pops are drawn
    /// equally often, so the list stays short (a long list makes every model state large).
    fn collections_op(&mut self) -> Planned {
        let key = collections_key(self.rng.below(self.config.collection_keys));
        let element = format!("{}-{}", self.process, self.sequence);
        let members: Vec<String> = (0..COLLECTION_MEMBERS).map(|m| format!("m{m}")).collect();
        let member = members[self.rng.below(COLLECTION_MEMBERS) as usize].clone();
        let delta = (1 + self.rng.below(5)).to_string();
        let side = if self.rng.chance(0.5) { "l" } else { "r" };
        let (list, set, zset) = (
            multi_sub_key(&key, "l"),
            multi_sub_key(&key, "s"),
            multi_sub_key(&key, "z"),
        );
        // (function, value, command): the value names the sub-key as the checker does.
        let push = (
            Function::Push,
            vec!["l", side, element.as_str()],
            vec![
                if side == "l" { "LPUSH" } else { "RPUSH" },
                list.as_str(),
                element.as_str(),
            ],
        );
        let pop = (
            Function::Pop,
            vec!["l", side],
            vec![if side == "l" { "LPOP" } else { "RPOP" }, list.as_str()],
        );
        let lrange = (
            Function::LRange,
            vec!["l"],
            vec!["LRANGE", list.as_str(), "0", "-1"],
        );
        let sadd = (
            Function::SAdd,
            vec!["s", member.as_str()],
            vec!["SADD", set.as_str(), member.as_str()],
        );
        let srem = (
            Function::SRem,
            vec!["s", member.as_str()],
            vec!["SREM", set.as_str(), member.as_str()],
        );
        let smembers = (
            Function::SMembers,
            vec!["s"],
            vec!["SMEMBERS", set.as_str()],
        );
        let zincrby = (
            Function::ZIncrBy,
            vec!["z", member.as_str(), delta.as_str()],
            vec!["ZINCRBY", zset.as_str(), delta.as_str(), member.as_str()],
        );
        let zscore = (
            Function::ZScore,
            vec!["z", member.as_str()],
            vec!["ZSCORE", zset.as_str(), member.as_str()],
        );
        let value = |f: Function, parts: &[&str]| -> Value {
            Value::List(
                parts
                    .iter()
                    .map(|part| match part.parse::<i64>() {
                        // Only a delta is all digits (elements and members are not).
                        Ok(n) if f == Function::ZIncrBy => Value::Int(n),
                        _ => Value::from(*part),
                    })
                    .collect(),
            )
        };
        let single = |(f, parts, command): (Function, Vec<&str>, Vec<&str>)| Planned {
            f,
            request: Request {
                args: args(&command),
                write: !matches!(f, Function::LRange | Function::SMembers | Function::ZScore),
                transaction: Vec::new(),
            },
            key: key.clone(),
            value: value(f, &parts),
            counter: false,
        };
        let roll = self.rng.below(20);
        let subs = match roll {
            0..=2 => return single(push),
            3..=5 => return single(pop),
            6 => return single(lrange),
            7..=8 => return single(sadd),
            9..=10 => return single(srem),
            // Half the members' reads (by the coin already drawn for the side, so the draws of
            // every seed stay as they were) are one step of `SSCAN … COUNT 1`: a set this small
            // comes whole in one step whatever the count, and the reply must say it is done.
            // Not inside a transaction: a scan step is answered outside its entry.
            11 if side == "l" => {
                let (f, parts, _) = smembers;
                return single((f, parts, vec!["SSCAN", set.as_str(), "0", "COUNT", "1"]));
            }
            11 => return single(smembers),
            12..=13 => return single(zincrby),
            14 => return single(zscore),
            15..=16 => vec![push, sadd, zincrby],
            17 => vec![pop, srem, zincrby],
            // Every member's score: a transaction torn between its push and its increment
            // shows whichever member it increments.
            _ => {
                let mut reads = vec![lrange, smembers];
                for index in 0..COLLECTION_MEMBERS {
                    let (f, mut parts, mut command) = zscore.clone();
                    parts[1] = members[index as usize].as_str();
                    command[2] = members[index as usize].as_str();
                    reads.push((f, parts, command));
                }
                reads
            }
        };
        let write = roll < 18;
        let mut transaction = Vec::new();
        let mut subops = Vec::new();
        for (f, parts, command) in subs {
            transaction.push(args(&command));
            let Value::List(mut items) = value(f, &parts) else {
                unreachable!("value() builds a list")
            };
            items.insert(0, Value::from(f.to_string()));
            subops.push(Value::List(items));
        }
        Planned {
            f: Function::Txn,
            request: Request {
                args: args(&["EXEC"]),
                write,
                transaction,
            },
            key,
            value: Value::List(subops),
            counter: false,
        }
    }

    /// One draw below the mix's total, walked through the weights in field order.
    fn pick(&mut self) -> Pick {
        let mix = &self.config.mix;
        let roll = self.rng.below(mix.total().max(1));
        let weights = [
            (mix.write, Pick::Write),
            (mix.read, Pick::Read),
            (mix.add, Pick::Add),
            (mix.counter_read, Pick::CounterRead),
            (mix.append, Pick::Append),
            (mix.list_read, Pick::ListRead),
            (mix.ttl, Pick::Ttl),
            (mix.multi, Pick::Multi),
            (mix.collections, Pick::Collections),
            (mix.locks, Pick::Locks),
        ];
        let mut below = 0;
        weights
            .into_iter()
            .find(|(weight, _)| {
                below += weight;
                roll < below
            })
            .map_or(Pick::Read, |(_, pick)| pick)
    }

    /// An operation on a lock object: without a token, an acquisition; with one, mostly fenced
    /// increments, sometimes a renewal (an acquisition by the holder: the same token while its
    /// lease runs) or a release. A released token is sometimes kept for one more fenced
    /// increment, which the fence must refuse.
    fn lock_op(&mut self) -> Planned {
        let object = self.rng.below(self.config.lock_keys);
        let key = lock_key(object);
        let lock = multi_sub_key(&key, "lock");
        let holder = format!("p{}", self.process);
        let lease = 1 + self.rng.below(self.config.lease_ms_max.max(1));
        let fenced = |token: i64| Planned {
            f: Function::FencedIncr,
            request: Request {
                args: args(&["EXEC"]),
                write: true,
                transaction: vec![
                    args(&["LOCK.FENCE", &lock, &token.to_string()]),
                    args(&["INCR", &multi_sub_key(&key, "count")]),
                ],
            },
            key: key.clone(),
            value: Value::Int(token),
            counter: false,
        };
        if let Some(token) = self.stale.remove(&object) {
            return fenced(token);
        }
        let acquire = Planned {
            f: Function::LockAcquire,
            request: Request {
                args: args(&["LOCK.ACQUIRE", &lock, &holder, &lease.to_string()]),
                write: true,
                transaction: Vec::new(),
            },
            key: key.clone(),
            value: Value::List(vec![Value::Str(holder.clone()), Value::Int(lease as i64)]),
            counter: false,
        };
        let Some(&token) = self.held.get(&object) else {
            return acquire;
        };
        match self.rng.below(10) {
            0..=5 => fenced(token),
            6 => acquire,
            _ => {
                self.held.remove(&object);
                if self.rng.chance(0.3) {
                    self.stale.insert(object, token);
                }
                Planned {
                    f: Function::LockRelease,
                    request: Request {
                        args: args(&["LOCK.RELEASE", &lock, &token.to_string()]),
                        write: true,
                        transaction: Vec::new(),
                    },
                    key,
                    value: Value::Int(token),
                    counter: false,
                }
            }
        }
    }

    /// What a lock operation's completion tells this client about the token it holds.
    fn learn_lock(&mut self, f: Function, key: &str, kind: OpKind, output: &Value) {
        let Some(object) = (0..self.config.lock_keys).find(|&object| lock_key(object) == key)
        else {
            return;
        };
        match (f, kind, output) {
            (Function::LockAcquire, OpKind::Ok, Value::Int(token)) => {
                self.held.insert(object, *token);
            }
            // Held by another, or unknown: this client holds no token it knows.
            (Function::LockAcquire, _, _) => {
                self.held.remove(&object);
            }
            // Refused: the lease ended (or a paused holder's stale token), so it holds nothing.
            (Function::FencedIncr, OpKind::Ok, Value::Null) => {
                self.held.remove(&object);
            }
            _ => {}
        }
    }

    fn write(&mut self) -> Planned {
        let register = self.register();
        let key = register_key(register);
        let value = format!("{}-{}", self.process, self.sequence);
        Planned {
            f: Function::Write,
            request: Request {
                args: args(&["SET", &key, &value]),
                write: true,
                transaction: Vec::new(),
            },
            key,
            value: Value::Str(value),
            counter: false,
        }
    }

    fn add(&mut self) -> Planned {
        let key = counter_key(self.rng.below(self.config.counter_keys.max(1)));
        let delta = 1 + self.rng.below(self.config.delta_max.max(1)) as i64;
        Planned {
            f: Function::Add,
            request: Request {
                args: args(&["INCRBY", &key, &delta.to_string()]),
                write: true,
                transaction: Vec::new(),
            },
            key,
            value: Value::Int(delta),
            counter: false,
        }
    }

    fn read(key: String) -> Planned {
        Planned {
            f: Function::Read,
            request: Request {
                args: args(&["GET", &key]),
                write: false,
                transaction: Vec::new(),
            },
            key,
            value: Value::Null,
            counter: false,
        }
    }
}

/// How an operation ended, given what came back: (completion kind, completion value, error).
fn outcome(op: &Planned, response: Response) -> (OpKind, Value, Option<String>) {
    match response {
        Response::Reply(frame) => match (op.f, frame) {
            (Function::Read, Frame::Bulk(Some(bytes))) => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                // Counters are read as integers, registers and lists as strings.
                let value = match text.parse::<i64>() {
                    Ok(n) if op.counter => Value::Int(n),
                    _ => Value::Str(text),
                };
                (OpKind::Ok, value, None)
            }
            (Function::Read, Frame::Bulk(None) | Frame::Null) => (OpKind::Ok, Value::Null, None),
            (Function::Write | Function::SetTtl | Function::MWrite, Frame::Simple(text))
                if text == "OK" =>
            {
                (OpKind::Ok, op.value.clone(), None)
            }
            (
                Function::Expire | Function::Persist | Function::Ttl | Function::MDel,
                Frame::Integer(n),
            ) => (OpKind::Ok, Value::Int(n), None),
            (Function::MRead, Frame::Array(Some(items))) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Frame::Bulk(Some(bytes)) => {
                            values.push(Value::Str(String::from_utf8_lossy(&bytes).into_owned()))
                        }
                        Frame::Bulk(None) | Frame::Null => values.push(Value::Null),
                        other => {
                            return (
                                OpKind::Info,
                                op.value.clone(),
                                Some(format!("unexpected MGET element {other:?}")),
                            );
                        }
                    }
                }
                (OpKind::Ok, Value::List(values), None)
            }
            (Function::Add | Function::Append, Frame::Integer(_)) => {
                (OpKind::Ok, op.value.clone(), None)
            }
            (Function::LockAcquire, Frame::Integer(token)) => (OpKind::Ok, Value::Int(token), None),
            (Function::LockAcquire, Frame::Bulk(None) | Frame::Null) => {
                (OpKind::Ok, Value::Null, None)
            }
            (Function::LockRelease, Frame::Integer(n)) => (OpKind::Ok, Value::Int(n), None),
            // The fence refused: nothing ran, every command answers `FENCED`.
            (Function::FencedIncr, Frame::Array(Some(items)))
                if items.len() == 2
                    && items.iter().all(
                        |item| matches!(item, Frame::Error(text) if text.starts_with("FENCED")),
                    ) =>
            {
                (OpKind::Ok, Value::Null, None)
            }
            (Function::FencedIncr, Frame::Array(Some(items)))
                if items.len() == 2 && matches!(items[0], Frame::Simple(ref ok) if ok == "OK") =>
            {
                match items[1] {
                    Frame::Integer(count) => (OpKind::Ok, Value::Int(count), None),
                    ref other => (
                        OpKind::Info,
                        op.value.clone(),
                        Some(format!("unexpected INCR reply {other:?}")),
                    ),
                }
            }
            (Function::Txn, Frame::Array(Some(items))) => {
                let subs = match &op.value {
                    Value::List(subs) if subs.len() == items.len() => subs,
                    _ => {
                        return (
                            OpKind::Info,
                            op.value.clone(),
                            Some(format!("{} replies to a transaction", items.len())),
                        );
                    }
                };
                let mut replies = Vec::with_capacity(items.len());
                for (sub, item) in subs.iter().zip(items) {
                    let f = match sub {
                        Value::List(parts) => match parts.first() {
                            Some(Value::Str(name)) => Function::from_name(name),
                            _ => None,
                        },
                        _ => None,
                    };
                    match f.and_then(|f| collection_reply(f, item.clone())) {
                        Some(reply) => replies.push(reply),
                        None => {
                            return (
                                OpKind::Info,
                                op.value.clone(),
                                Some(format!("unexpected reply {item:?} to {sub}")),
                            );
                        }
                    }
                }
                (OpKind::Ok, Value::List(replies), None)
            }
            (f, frame) if f.is_collection() && f != Function::Txn => {
                match collection_reply(f, frame.clone()) {
                    Some(reply) => (OpKind::Ok, reply, None),
                    None => (
                        OpKind::Info,
                        op.value.clone(),
                        Some(format!("unexpected reply {frame:?}")),
                    ),
                }
            }
            // A reply of the wrong shape is a bug in the store, not a network event.
            (_, other) => (
                OpKind::Info,
                op.value.clone(),
                Some(format!("unexpected reply {other:?}")),
            ),
        },
        Response::Failed(reason) => (OpKind::Fail, op.value.clone(), Some(reason)),
        Response::Indeterminate(reason) => (OpKind::Info, op.value.clone(), Some(reason)),
    }
}

/// The reply of one collection operation as the history records it (`None`: a reply of the
/// wrong shape, an error among them).
fn collection_reply(f: Function, frame: Frame) -> Option<Value> {
    let text = |bytes: &Bytes| String::from_utf8_lossy(bytes).into_owned();
    // A score: the workload increments by integers, so it is recorded as one.
    let score = |text: &str| -> Option<Value> {
        let number: f64 = text.parse().ok()?;
        (number.fract() == 0.0 && number.abs() < 1e15).then_some(Value::Int(number as i64))
    };
    match (f, frame) {
        (Function::Push | Function::SAdd | Function::SRem, Frame::Integer(n)) => {
            Some(Value::Int(n))
        }
        (Function::Pop | Function::ZScore, Frame::Bulk(None) | Frame::Null) => Some(Value::Null),
        (Function::Pop, Frame::Bulk(Some(bytes))) => Some(Value::Str(text(&bytes))),
        (Function::ZScore | Function::ZIncrBy, Frame::Bulk(Some(bytes))) => score(&text(&bytes)),
        (Function::ZScore | Function::ZIncrBy, Frame::Double(number)) => score(&number.to_string()),
        // One step of `SSCAN` that says it is done: a cursor of 0 from a proxy, nil from a
        // node (an SDK client's `Command::ElementScan`). A step that is not done is not the
        // whole set.
        (Function::SMembers, Frame::Array(Some(parts)))
            if parts.len() == 2 && matches!(parts[1], Frame::Array(Some(_))) =>
        {
            let mut parts = parts.into_iter();
            let done = match parts.next() {
                Some(Frame::Bulk(Some(cursor))) => cursor.as_ref() == b"0",
                Some(Frame::Bulk(None) | Frame::Null) => true,
                _ => false,
            };
            if !done {
                return None;
            }
            collection_reply(f, parts.next().expect("two parts"))
        }
        (Function::LRange | Function::SMembers, Frame::Array(Some(items)) | Frame::Set(items)) => {
            items
                .into_iter()
                .map(|item| match item {
                    Frame::Bulk(Some(bytes)) => Some(Value::Str(text(&bytes))),
                    _ => None,
                })
                .collect::<Option<Vec<Value>>>()
                .map(Value::List)
        }
        _ => None,
    }
}

impl<E: Executor, T: Timer> Driver<E, T> {
    /// Runs operations while `running()` says so, recording each into `history` and handing it
    /// to `observe` once completed, with a think time after each.
    pub async fn run(
        mut self,
        history: &Mutex<History>,
        mut running: impl FnMut() -> bool,
        mut observe: impl FnMut(&Completed),
    ) {
        let mut due_ns = self.timer.now_ns();
        while running() {
            let completed = self.step(history).await;
            observe(&completed);
            let mut think = self.rng.below(self.config.think_ms_max + 1);
            if self.config.paced {
                let now = self.timer.now_ns();
                let backlog_ns = self.config.think_ms_max * 1_000_000;
                due_ns = (due_ns + think * 1_000_000).max(now.saturating_sub(backlog_ns));
                think = due_ns.saturating_sub(now) / 1_000_000;
            }
            if think > 0 {
                self.timer.sleep_ms(think).await;
            }
        }
    }

    /// The next operation: [`Driver::next_op`], but only reads during a lull
    /// ([`WorkloadConfig::lulls`]).
    fn next_op_now(&mut self) -> Planned {
        let lull = self
            .config
            .lulls
            .is_some_and(|lulls| lulls.contains(self.timer.now_ns() / 1_000_000));
        if !lull {
            return self.next_op();
        }
        for _ in 0..LULL_DRAWS {
            let op = self.next_op();
            if !op.request.write {
                return op;
            }
        }
        let register = self.register();
        Self::read(register_key(register))
    }

    /// Draws, invokes and completes one operation.
    pub async fn step(&mut self, history: &Mutex<History>) -> Completed {
        let op = self.next_op_now();
        history.lock().expect("history lock").invoke(
            self.timer.now_ns(),
            self.process,
            op.f,
            op.key.clone(),
            op.value.clone(),
        );
        let response = self.executor.execute(&op.request).await;
        let (kind, output, error) = outcome(&op, response);
        if op.f.is_lock() {
            self.learn_lock(op.f, &op.key, kind, &output);
        }
        history.lock().expect("history lock").complete_with_error(
            self.timer.now_ns(),
            self.process,
            kind,
            output.clone(),
            error.clone(),
        );
        Completed {
            process: self.process,
            f: op.f,
            key: op.key,
            value: op.value,
            output,
            kind,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use super::*;
    use crate::checker::{Budget, CheckConfig, check_history};

    /// A store in memory; every `fail_every`-th request fails, every `lose_every`-th write
    /// is applied but its reply lost.
    struct Memory {
        data: BTreeMap<Bytes, Bytes>,
        /// Expiry of a key, in ms of the test clock.
        expiries: BTreeMap<Bytes, u64>,
        collections: Collections,
        requests: u64,
        fail_every: u64,
        lose_every: u64,
        clock: Rc<Cell<u64>>,
    }

    /// Lists, sets and sorted sets in memory, as Redis keeps them (empty ones deleted).
    #[derive(Default)]
    struct Collections {
        lists: BTreeMap<Bytes, std::collections::VecDeque<Bytes>>,
        sets: BTreeMap<Bytes, std::collections::BTreeSet<Bytes>>,
        zsets: BTreeMap<Bytes, BTreeMap<Bytes, i64>>,
    }

    impl Collections {
        fn apply(&mut self, args: &[Bytes]) -> Frame {
            let key = args[1].clone();
            let bulk = |items: Vec<Bytes>| {
                Frame::Array(Some(
                    items.into_iter().map(|b| Frame::Bulk(Some(b))).collect(),
                ))
            };
            match &args[0][..] {
                b"LPUSH" | b"RPUSH" => {
                    let list = self.lists.entry(key).or_default();
                    if &args[0][..] == b"LPUSH" {
                        list.push_front(args[2].clone());
                    } else {
                        list.push_back(args[2].clone());
                    }
                    Frame::Integer(list.len() as i64)
                }
                b"LPOP" | b"RPOP" => {
                    let Some(list) = self.lists.get_mut(&key) else {
                        return Frame::Bulk(None);
                    };
                    let popped = if &args[0][..] == b"LPOP" {
                        list.pop_front()
                    } else {
                        list.pop_back()
                    };
                    if list.is_empty() {
                        self.lists.remove(&key);
                    }
                    Frame::Bulk(popped)
                }
                b"LRANGE" => bulk(
                    self.lists
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .cloned()
                        .collect(),
                ),
                b"SADD" => {
                    Frame::Integer(self.sets.entry(key).or_default().insert(args[2].clone()) as i64)
                }
                b"SREM" => {
                    let removed = self
                        .sets
                        .get_mut(&key)
                        .is_some_and(|set| set.remove(&args[2]));
                    self.sets.retain(|_, set| !set.is_empty());
                    Frame::Integer(removed as i64)
                }
                // Reversed: the checker must compare members as a set.
                b"SMEMBERS" => bulk(
                    self.sets
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .rev()
                        .cloned()
                        .collect(),
                ),
                b"ZINCRBY" => {
                    let delta: i64 = std::str::from_utf8(&args[2]).unwrap().parse().unwrap();
                    let score = self
                        .zsets
                        .entry(key)
                        .or_default()
                        .entry(args[3].clone())
                        .or_default();
                    *score += delta;
                    Frame::Bulk(Some(Bytes::from(score.to_string())))
                }
                b"ZSCORE" => Frame::Bulk(
                    self.zsets
                        .get(&key)
                        .and_then(|scores| scores.get(&args[2]))
                        .map(|score| Bytes::from(score.to_string())),
                ),
                other => panic!("unexpected command {other:?}"),
            }
        }
    }

    impl Executor for Memory {
        async fn execute(&mut self, request: &Request) -> Response {
            self.requests += 1;
            self.clock.set(self.clock.get() + 1_000);
            if self.requests.is_multiple_of(self.fail_every) {
                return Response::Failed("TRYAGAIN".into());
            }
            let args = &request.args;
            let collection = matches!(
                &args[0][..],
                b"LPUSH"
                    | b"RPUSH"
                    | b"LPOP"
                    | b"RPOP"
                    | b"LRANGE"
                    | b"SADD"
                    | b"SREM"
                    | b"SMEMBERS"
                    | b"ZINCRBY"
                    | b"ZSCORE"
            );
            if collection || !request.transaction.is_empty() {
                let frame = if request.transaction.is_empty() {
                    self.collections.apply(args)
                } else {
                    Frame::Array(Some(
                        request
                            .transaction
                            .iter()
                            .map(|args| self.collections.apply(args))
                            .collect(),
                    ))
                };
                if request.write && self.requests.is_multiple_of(self.lose_every) {
                    return request.lost("no reply".into());
                }
                return Response::Reply(frame);
            }
            let key = args[1].clone();
            let now_ms = self.clock.get() / 1_000_000;
            let expired: Vec<Bytes> = self
                .expiries
                .iter()
                .filter(|(_, at)| **at <= now_ms)
                .map(|(key, _)| key.clone())
                .collect();
            for key in expired {
                self.expiries.remove(&key);
                self.data.remove(&key);
            }
            let number =
                |arg: &Bytes| -> u64 { std::str::from_utf8(arg).unwrap().parse().unwrap() };
            let frame = match &args[0][..] {
                b"SET" if args.len() == 5 => {
                    let ms = number(&args[4]) * if &args[3][..] == b"EX" { 1000 } else { 1 };
                    self.data.insert(key.clone(), args[2].clone());
                    self.expiries.insert(key, now_ms + ms);
                    Frame::ok()
                }
                b"SET" => {
                    self.expiries.remove(&key);
                    self.data.insert(key, args[2].clone());
                    Frame::ok()
                }
                b"PEXPIRE" | b"EXPIRE" => {
                    let ms = number(&args[2]) * if &args[0][..] == b"EXPIRE" { 1000 } else { 1 };
                    let exists = self.data.contains_key(&key);
                    if exists {
                        self.expiries.insert(key, now_ms + ms);
                    }
                    Frame::Integer(exists.into())
                }
                b"PERSIST" => Frame::Integer(self.expiries.remove(&key).is_some().into()),
                b"PTTL" | b"TTL" => Frame::Integer(
                    match (self.data.contains_key(&key), self.expiries.get(&key)) {
                        (false, _) => -2,
                        (true, None) => -1,
                        (true, Some(at)) if &args[0][..] == b"TTL" => {
                            ((at - now_ms + 500) / 1000) as i64
                        }
                        (true, Some(at)) => (at - now_ms) as i64,
                    },
                ),
                b"MSET" => {
                    for pair in args[1..].chunks(2) {
                        self.expiries.remove(&pair[0]);
                        self.data.insert(pair[0].clone(), pair[1].clone());
                    }
                    Frame::ok()
                }
                b"MGET" => Frame::Array(Some(
                    args[1..]
                        .iter()
                        .map(|key| Frame::Bulk(self.data.get(key).cloned()))
                        .collect(),
                )),
                b"DEL" => Frame::Integer(
                    args[1..]
                        .iter()
                        .filter(|key| {
                            self.expiries.remove(*key);
                            self.data.remove(*key).is_some()
                        })
                        .count() as i64,
                ),
                b"GET" => Frame::Bulk(self.data.get(&key).cloned()),
                b"INCRBY" => {
                    let old: i64 = self
                        .data
                        .get(&key)
                        .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                    let delta: i64 = std::str::from_utf8(&args[2]).unwrap().parse().unwrap();
                    self.data
                        .insert(key, Bytes::from((old + delta).to_string()));
                    Frame::Integer(old + delta)
                }
                b"APPEND" => {
                    let mut value = self.data.get(&key).cloned().unwrap_or_default().to_vec();
                    value.extend_from_slice(&args[2]);
                    let len = value.len() as i64;
                    self.data.insert(key, Bytes::from(value));
                    Frame::Integer(len)
                }
                other => panic!("unexpected command {other:?}"),
            };
            if request.write && self.requests.is_multiple_of(self.lose_every) {
                return request.lost("no reply".into());
            }
            Response::Reply(frame)
        }
    }

    struct Ticks(Rc<Cell<u64>>);

    impl Timer for Ticks {
        fn now_ns(&self) -> u64 {
            self.0.get()
        }
        async fn sleep_ms(&self, ms: u64) {
            self.0.set(self.0.get() + ms * 1_000_000);
        }
    }

    fn drive(config: WorkloadConfig, ops: usize) -> History {
        let clock = Rc::new(Cell::new(0));
        let store = Memory {
            data: BTreeMap::new(),
            expiries: BTreeMap::new(),
            collections: Collections::default(),
            requests: 0,
            fail_every: 7,
            lose_every: 5,
            clock: clock.clone(),
        };
        let history = Mutex::new(History::new());
        let mut count = 0;
        let driver = Driver::new(3, config, 42, store, Ticks(clock));
        futures_lite_block_on(driver.run(
            &history,
            || {
                count += 1;
                count <= ops
            },
            |_| {},
        ));
        history.into_inner().unwrap()
    }

    /// The driver's futures never wait on anything here: poll once.
    fn futures_lite_block_on<F: Future>(future: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut context = std::task::Context::from_waker(waker);
        let mut future = std::pin::pin!(future);
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(output) => output,
            std::task::Poll::Pending => panic!("the test executor never waits"),
        }
    }

    #[test]
    fn records_every_operation_and_the_history_checks_linearizable() {
        let every_family = WorkloadConfig::default()
            .with_ttl(2, 4)
            .with_multi(2, 3)
            .with_collections(1, 6);
        for config in [
            WorkloadConfig::default(),
            WorkloadConfig::jepsen(),
            every_family,
        ] {
            let history = drive(config, 300);
            let operations = history.operations().expect("well formed");
            assert_eq!(operations.len(), 300);
            let kinds: BTreeMap<(Function, crate::Outcome), usize> =
                operations.iter().fold(BTreeMap::new(), |mut counts, op| {
                    *counts.entry((op.f, op.outcome)).or_default() += 1;
                    counts
                });
            assert!(
                kinds
                    .keys()
                    .any(|(_, outcome)| *outcome == crate::Outcome::Fail)
                    && kinds
                        .keys()
                        .any(|(_, outcome)| *outcome == crate::Outcome::Info),
                "{kinds:?}"
            );
            let report = check_history(&history, &CheckConfig::default(), &Budget::unlimited())
                .expect("well formed");
            assert!(report.is_linearizable(), "{report}");
        }
    }

    #[test]
    fn the_mix_picks_by_weight_and_reads_registers_without_lists() {
        let config = WorkloadConfig {
            list_keys: 0,
            ..WorkloadConfig::default()
        };
        let mut driver = Driver::new(1, config, 7, (), ());
        for _ in 0..200 {
            let op = driver.next_op();
            assert_ne!(op.f, Function::Append);
            assert!(!op.key.starts_with("log:"));
            assert_eq!(op.request.write, op.f != Function::Read);
        }
        let mut driver = Driver::new(1, WorkloadConfig::jepsen(), 7, (), ());
        let ops: Vec<Planned> = (0..1000).map(|_| driver.next_op()).collect();
        let writes = ops.iter().filter(|op| op.f == Function::Write).count();
        assert!((300..500).contains(&writes), "about 40% writes: {writes}");
        assert!(
            ops.iter()
                .any(|op| op.counter && op.key.starts_with("ctr:"))
        );
        assert!(
            ops.iter()
                .filter(|op| op.f == Function::Add)
                .all(|op| (1..=5).contains(&op.value.as_int().unwrap()))
        );
    }

    #[test]
    fn ttl_and_multi_key_operations_are_drawn_only_when_on() {
        let mut driver = Driver::new(1, WorkloadConfig::default(), 7, (), ());
        for _ in 0..500 {
            let op = driver.next_op();
            assert!(!op.key.starts_with("ttl:") && !op.key.starts_with('{'));
        }
        let config = WorkloadConfig::default().with_ttl(2, 10).with_multi(2, 10);
        let mut driver = Driver::new(1, config, 7, (), ());
        let ops: Vec<Planned> = (0..2000).map(|_| driver.next_op()).collect();
        for f in [
            Function::SetTtl,
            Function::Expire,
            Function::Persist,
            Function::Ttl,
            Function::MRead,
            Function::MWrite,
            Function::MDel,
        ] {
            assert!(ops.iter().any(|op| op.f == f), "no {f} drawn");
        }
        assert!(
            ops.iter()
                .any(|op| op.f == Function::Read && op.key.starts_with("ttl:"))
        );
        for op in ops.iter().filter(|op| op.key.starts_with('{')) {
            // every sub-key carries the object's hash tag, so they share one slot
            assert!(
                op.request.args[1..]
                    .iter()
                    .step_by(if op.f == Function::MWrite { 2 } else { 1 })
                    .all(|arg| arg.starts_with(op.key.as_bytes())),
                "{op:?}"
            );
            assert_eq!(op.request.write, op.f != Function::MRead);
        }
    }

    #[test]
    fn collection_operations_are_drawn_only_when_on_and_stay_in_one_slot() {
        let mut driver = Driver::new(1, WorkloadConfig::default(), 7, (), ());
        for _ in 0..500 {
            assert!(!driver.next_op().f.is_collection());
        }
        let config = WorkloadConfig::default().with_collections(1, 10);
        let mut driver = Driver::new(1, config, 7, (), ());
        let ops: Vec<Planned> = (0..2000).map(|_| driver.next_op()).collect();
        for f in [
            Function::Push,
            Function::Pop,
            Function::LRange,
            Function::SAdd,
            Function::SRem,
            Function::SMembers,
            Function::ZIncrBy,
            Function::ZScore,
            Function::Txn,
        ] {
            assert!(ops.iter().any(|op| op.f == f), "no {f} drawn");
        }
        let slot = larder_core::slots::slot_of(b"{c0}");
        for op in ops.iter().filter(|op| op.f.is_collection()) {
            assert_eq!(op.key, "{c0}");
            let commands = if op.f == Function::Txn {
                assert_eq!(op.request.args, args(&["EXEC"]));
                op.request.transaction.clone()
            } else {
                assert!(op.request.transaction.is_empty());
                vec![op.request.args.clone()]
            };
            for command in commands {
                assert_eq!(larder_core::slots::slot_of(&command[1]), slot, "{op:?}");
            }
        }
        // Both kinds of transaction: the writing ones and the read-only one.
        assert!(
            ops.iter()
                .any(|op| op.f == Function::Txn && op.request.write)
        );
        assert!(
            ops.iter()
                .any(|op| op.f == Function::Txn && !op.request.write)
        );
    }

    #[test]
    fn lock_operations_follow_the_token_the_client_holds() {
        let mut driver = Driver::new(1, WorkloadConfig::default(), 7, (), ());
        for _ in 0..500 {
            assert!(!driver.next_op().f.is_lock());
        }
        let config = WorkloadConfig::default().with_locks(1, 1000);
        let mut driver = Driver::new(3, config, 7, (), ());
        // Without a token, only acquisitions.
        for _ in 0..20 {
            let op = driver.next_op();
            if !op.f.is_lock() {
                continue;
            }
            assert_eq!(op.f, Function::LockAcquire, "{op:?}");
            assert_eq!(
                op.request.args[..3],
                args(&["LOCK.ACQUIRE", "{k0}:lock", "p3"])[..]
            );
        }
        driver.learn_lock(Function::LockAcquire, "{k0}", OpKind::Ok, &Value::Int(7000));
        let mut seen = BTreeMap::new();
        for _ in 0..400 {
            let op = driver.next_op();
            *seen.entry(op.f).or_insert(0) += 1;
            match op.f {
                Function::FencedIncr => {
                    assert_eq!(op.request.args, args(&["EXEC"]));
                    assert_eq!(
                        op.request.transaction,
                        vec![
                            args(&["LOCK.FENCE", "{k0}:lock", "7000"]),
                            args(&["INCR", "{k0}:count"]),
                        ]
                    );
                }
                Function::LockRelease => {
                    assert_eq!(
                        op.request.args,
                        args(&["LOCK.RELEASE", "{k0}:lock", "7000"])
                    );
                    // Holds nothing now; take the token back for the next round.
                    assert!(driver.held.is_empty());
                    driver.stale.clear();
                    driver.learn_lock(Function::LockAcquire, "{k0}", OpKind::Ok, &Value::Int(7000));
                }
                Function::LockAcquire => {}
                // The mix's other operations, rarely.
                other => assert!(!other.is_lock()),
            }
        }
        for f in [
            Function::FencedIncr,
            Function::LockRelease,
            Function::LockAcquire,
        ] {
            assert!(
                seen.get(&f).copied().unwrap_or(0) > 0,
                "no {f} drawn: {seen:?}"
            );
        }
        // A refused fence or a nil acquisition: the token is gone.
        driver.learn_lock(Function::FencedIncr, "{k0}", OpKind::Ok, &Value::Null);
        assert!(driver.held.is_empty());
        // A kept stale token is used once, for a fenced increment.
        driver.stale.insert(0, 5000);
        let op = driver.next_op();
        assert_eq!(op.f, Function::FencedIncr);
        assert_eq!(op.value, Value::Int(5000));
        assert!(driver.stale.is_empty());
    }

    #[test]
    fn a_transaction_is_sent_as_multi_commands_exec() {
        let request = Request {
            args: args(&["EXEC"]),
            write: true,
            transaction: vec![
                args(&["RPUSH", "{c0}:l", "x"]),
                args(&["SADD", "{c0}:s", "m"]),
            ],
        };
        let commands = request.resp_commands();
        assert_eq!(commands.len(), 4);
        assert_eq!(commands[0], args(&["MULTI"]));
        assert_eq!(commands[3], args(&["EXEC"]));
        assert_eq!(request.resp_step(0, Frame::ok()), None);
        assert_eq!(request.resp_step(1, Frame::Simple("QUEUED".into())), None);
        assert!(matches!(
            request.resp_step(2, Frame::Error("ERR x".into())),
            Some(Response::Failed(_))
        ));
    }

    /// Answers every request `OK` after `latency_ms` of the shared test clock.
    struct Slow {
        clock: Rc<Cell<u64>>,
        latency_ms: u64,
    }

    impl Executor for Slow {
        async fn execute(&mut self, _request: &Request) -> Response {
            self.clock
                .set(self.clock.get() + self.latency_ms * 1_000_000);
            Response::Reply(Frame::ok())
        }
    }

    #[test]
    fn a_paced_client_starts_operations_on_its_schedule() {
        // 10 ms operations, pauses drawn from [0, 40] ms: unpaced a client starts one every
        // 30 ms on average, paced one every 20 ms (the mean pause; latency is absorbed).
        let elapsed_ms = |paced: bool| {
            let clock = Rc::new(Cell::new(0));
            let config = WorkloadConfig {
                think_ms_max: 40,
                paced,
                ..WorkloadConfig::default()
            };
            let executor = Slow {
                clock: clock.clone(),
                latency_ms: 10,
            };
            let history = Mutex::new(History::new());
            let mut count = 0;
            let driver = Driver::new(1, config, 42, executor, Ticks(clock.clone()));
            futures_lite_block_on(driver.run(
                &history,
                || {
                    count += 1;
                    count <= 1000
                },
                |_| {},
            ));
            clock.get() / 1_000_000
        };
        let (unpaced, paced) = (elapsed_ms(false), elapsed_ms(true));
        assert!((28_000..32_000).contains(&unpaced), "{unpaced} ms");
        assert!((19_000..21_500).contains(&paced), "{paced} ms");
    }

    #[test]
    fn lulls_are_the_end_of_each_period() {
        let lulls = Lulls {
            every_ms: 1_000,
            for_ms: 300,
        };
        assert!(!lulls.contains(0));
        assert!(!lulls.contains(699));
        assert!(lulls.contains(700));
        assert!(lulls.contains(999));
        assert!(!lulls.contains(1_000));
        assert!(lulls.contains(1_850));
    }

    #[test]
    fn proxy_errors_mean_what_the_proxy_says() {
        assert_eq!(
            Response::from_frame(Frame::Error("TRYAGAIN group 3 unavailable".into())),
            Response::Failed("TRYAGAIN group 3 unavailable".into())
        );
        assert_eq!(
            Response::from_frame(Frame::Error("HOTKEY writes to key 'r0' exceed".into())),
            Response::Failed("HOTKEY writes to key 'r0' exceed".into())
        );
        assert_eq!(
            Response::from_frame(Frame::Error("ERR indeterminate: timed out".into())),
            Response::Indeterminate("ERR indeterminate: timed out".into())
        );
        assert_eq!(
            Response::from_frame(Frame::Error("ERR wrong type".into())),
            Response::Reply(Frame::Error("ERR wrong type".into()))
        );
    }
}
