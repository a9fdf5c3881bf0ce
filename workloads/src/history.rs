//! Jepsen-style histories: every client operation recorded as an invocation event and a
//! completion event, stored as `history.jsonl`.
//!
//! # The `history.jsonl` format
//!
//! One JSON object per line, one line per **event**, in the order the recorder saw them (a
//! process's completion always comes after its invocation). Empty lines are ignored.
//!
//! ```text
//! {"index":0,"time_ns":1000,"process":3,"type":"invoke","f":"write","key":"reg:1","value":"n101-4"}
//! {"index":1,"time_ns":1200,"process":4,"type":"invoke","f":"read","key":"reg:1","value":null}
//! {"index":2,"time_ns":2000,"process":3,"type":"ok","f":"write","key":"reg:1","value":"n101-4"}
//! {"index":3,"time_ns":2500,"process":4,"type":"ok","f":"read","key":"reg:1","value":"n101-4"}
//! {"index":4,"time_ns":3000,"process":3,"type":"invoke","f":"add","key":"ctr:0","value":5}
//! {"index":5,"time_ns":9000,"process":3,"type":"info","f":"add","key":"ctr:0","value":5,"error":"timed out"}
//! ```
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `index` | integer, optional | position of the event in the history (0, 1, 2, …). Absent: the line number among events. |
//! | `time_ns` | integer, optional | real time of the event in nanoseconds, from any origin shared by all processes. It defines real-time order: operation A precedes B only if A's completion time is **strictly** below B's invocation time; equal times count as concurrent. Absent: the event's `index` (file order is real-time order). |
//! | `process` | integer | the client that issued the operation. A process runs one operation at a time: its next event after an `invoke` is that operation's completion. After an `info` completion a process may go on (its indeterminate operation stays in flight forever). |
//! | `type` | `"invoke"`, `"ok"`, `"fail"`, `"info"` | `invoke` starts an operation; `ok`: it took effect and its result is `value`; `fail`: it certainly had **no** effect; `info`: indeterminate, it may take effect at any time after its invocation, or never. (`kind` is accepted as an alias.) |
//! | `f` | `"read"`, `"write"`, `"cas"`, `"add"`, `"append"`, `"set_ttl"`, `"expire"`, `"persist"`, `"ttl"`, `"mread"`, `"mwrite"`, `"mdel"`, `"push"`, `"pop"`, `"lrange"`, `"sadd"`, `"srem"`, `"smembers"`, `"zincrby"`, `"zscore"`, `"txn"` | the function (aliases on input: `get` for read, `put`/`set` for write, `incr` for add). |
//! | `key` | string, optional | the object the operation touches; the checker checks every key on its own. Absent: `""`. |
//! | `value` | `null`, integer, string, or array | see below. Absent: `null`. |
//! | `error` | string, optional | why an operation failed or is indeterminate; informational. |
//!
//! `value` by function:
//!
//! - `read`: `null` on the invocation; on an `ok` completion the value read (`null`: the key
//!   holds nothing). For a counter, the integer sum (`null` reads as 0).
//! - `write`: the value written, on both events.
//! - `cas`: `[from, to]` on both events: compare the value with `from`, and if equal set `to`.
//!   `ok` means the swap happened. A `fail` means it did not take effect; with
//!   [`CheckConfig::fail_cas_observes_mismatch`](crate::checker::CheckConfig) it also
//!   means the compare saw a value other than `from` (Jepsen's etcd tests record it so).
//! - `add`: the integer delta, on both events.
//! - `append`: the string appended (a never-written key appends to `""`).
//! - `set_ttl`: `[value, ttl_ms]` on both events: a write that expires after at most `ttl_ms`.
//! - `expire`: the TTL in ms on the invocation; on an `ok` completion the reply (1: the key
//!   existed, 0: it did not).
//! - `persist`: `null` on the invocation; on an `ok` completion the reply (1: an expiry was
//!   removed, 0: the key was missing or had none).
//! - `ttl`: `"ms"` (PTTL) or `"s"` (TTL) on the invocation; on an `ok` completion the answer
//!   (-2: missing, -1: no expiry, else the time left).
//! - `mread`, `mwrite`, `mdel` act on several sub-keys of one object (the `key`; in Larder
//!   the hash tag that keeps the sub-keys in one slot): `mread` names the sub-keys and its
//!   `ok` completion lists their values (`null`: missing); `mwrite` is `[[name, value], ...]`
//!   on both events; `mdel` names the sub-keys and its `ok` completion counts those deleted.
//! - `push`, `pop`, `lrange`, `sadd`, `srem`, `smembers`, `zincrby`, `zscore`, `txn` act on a
//!   collections object (the `key`; in Larder the hash tag of its lists, sets and sorted sets):
//!   the value names the sub-key and the arguments (`push`: `[list, "l"|"r", element]`,
//!   `pop`: `[list, "l"|"r"]`, `lrange`/`smembers`: `[name]`, `sadd`/`srem`/`zscore`:
//!   `[name, member]`, `zincrby`: `[zset, member, delta]`), the `ok` completion the reply
//!   (`push`: the new length, `pop`: the element or `null`, `lrange`/`smembers`: the elements,
//!   `sadd`/`srem`: 1 or 0, `zincrby`: the new score, `zscore`: the score or `null`). `txn`
//!   is `[[f, ...value], ...]`, its `ok` completion the list of the replies.
//!
//! The value of an `info` completion is ignored (Jepsen logs put `:timed-out` there).
//!
//! [`History::operations`] pairs each invocation with its completion into an [`Operation`]; an
//! invocation without a completion is indeterminate, like one completed with `info`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A value of an operation: `null`, an integer, a string, or a list (the `[from, to]` of a
/// cas). Serialized as plain JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    #[default]
    Null,
    Int(i64),
    Str(String),
    List(Vec<Value>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The `(from, to)` of a cas value.
    pub fn as_pair(&self) -> Option<(&Value, &Value)> {
        match self {
            Value::List(items) if items.len() == 2 => Some((&items[0], &items[1])),
            _ => None,
        }
    }

    pub fn pair(from: Value, to: Value) -> Value {
        Value::List(vec![from, to])
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Int(n) => write!(f, "{n}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// The type of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// The operation starts.
    Invoke,
    /// It took effect.
    Ok,
    /// It certainly had no effect.
    Fail,
    /// Indeterminate: it may take effect at any time after the invocation, or never.
    Info,
}

/// The function an operation applies to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    #[serde(alias = "get")]
    Read,
    #[serde(alias = "put", alias = "set")]
    Write,
    Cas,
    #[serde(alias = "incr")]
    Add,
    Append,
    /// `SET key value PX ms` (or `EX`): value `[value, ttl_ms]`.
    SetTtl,
    /// `PEXPIRE key ms` (or `EXPIRE`): value the TTL in ms; an `ok` completion's value is the
    /// reply (1: the key existed and now expires, 0: it did not exist).
    Expire,
    /// `PERSIST key`: an `ok` completion's value is the reply (1: an expiry was removed).
    Persist,
    /// `PTTL key` (value `"ms"`) or `TTL key` (value `"s"`): an `ok` completion's value is the
    /// answer (-2: no key, -1: no expiry, else the time left in that unit).
    Ttl,
    /// `MGET` of sub-keys of one multi-key object: value the sub-key names; an `ok`
    /// completion's value the values read, in that order (`null`: missing).
    #[serde(rename = "mread")]
    MRead,
    /// `MSET` of sub-keys of one object: value `[[name, value], ...]`.
    #[serde(rename = "mwrite")]
    MWrite,
    /// `DEL` of sub-keys of one object: value the names; an `ok` completion's value the number
    /// deleted.
    #[serde(rename = "mdel")]
    MDel,
    /// `LPUSH`/`RPUSH` of one element to a list of a collections object: value `[list,
    /// "l"|"r", element]`; an `ok` completion's value the list's new length.
    Push,
    /// `LPOP`/`RPOP` of a list of a collections object: value `[list, "l"|"r"]`; an `ok`
    /// completion's value the element popped (`null`: the list was empty).
    Pop,
    /// `LRANGE list 0 -1`: value `[list]`; an `ok` completion's value the elements.
    #[serde(rename = "lrange")]
    LRange,
    /// `SADD` of one member: value `[set, member]`; an `ok` completion's value the reply
    /// (1: added, 0: already there).
    #[serde(rename = "sadd")]
    SAdd,
    /// `SREM` of one member: value `[set, member]`; an `ok` completion's value the reply
    /// (1: removed, 0: absent).
    #[serde(rename = "srem")]
    SRem,
    /// `SMEMBERS`: value `[set]`; an `ok` completion's value the members (any order: the
    /// checker compares them as a set).
    #[serde(rename = "smembers")]
    SMembers,
    /// `ZINCRBY` by an integer: value `[zset, member, delta]`; an `ok` completion's value the
    /// new score.
    #[serde(rename = "zincrby")]
    ZIncrBy,
    /// `ZSCORE`: value `[zset, member]`; an `ok` completion's value the score (`null`: absent).
    #[serde(rename = "zscore")]
    ZScore,
    /// `MULTI … EXEC` of several operations on one collections object: value the sub-operations
    /// `[[f, ...value], ...]` (`f` one of the collection functions above, by name); an `ok`
    /// completion's value their replies, in order. All of them take effect at one point.
    Txn,
    /// `LOCK.ACQUIRE lock holder lease-ms` of a lock object: value `[holder, lease_ms]`; an
    /// `ok` completion's value the token granted (`null`: another holds the lock).
    #[serde(rename = "lock_acquire")]
    LockAcquire,
    /// `LOCK.RELEASE lock token`: value the token; an `ok` completion's value the reply (1:
    /// released, 0: not held with that token).
    #[serde(rename = "lock_release")]
    LockRelease,
    /// `MULTI`, `LOCK.FENCE lock token`, `INCR` of the lock object's counter, `EXEC`: value
    /// the token; an `ok` completion's value the counter after the increment (`null`: the
    /// fence refused, nothing ran).
    #[serde(rename = "fenced_incr")]
    FencedIncr,
}

impl Function {
    /// Whether an `ok` completion carries an answer of its own (what was read, a reply)
    /// rather than repeating the invocation's value.
    pub fn has_output(self) -> bool {
        matches!(
            self,
            Function::Read
                | Function::Expire
                | Function::Persist
                | Function::Ttl
                | Function::MRead
                | Function::MDel
        ) || self.is_collection()
            || self.is_lock()
    }

    /// Whether it acts on a collections object (lists, sets, sorted sets of one hash tag).
    pub fn is_collection(self) -> bool {
        matches!(
            self,
            Function::Push
                | Function::Pop
                | Function::LRange
                | Function::SAdd
                | Function::SRem
                | Function::SMembers
                | Function::ZIncrBy
                | Function::ZScore
                | Function::Txn
        )
    }

    /// Whether it acts on a lock object (a lock and the counter its holders increment).
    pub fn is_lock(self) -> bool {
        matches!(
            self,
            Function::LockAcquire | Function::LockRelease | Function::FencedIncr
        )
    }

    /// The function named `name` ([`Function`]'s `Display`), for the sub-operations of a
    /// [`Function::Txn`].
    pub fn from_name(name: &str) -> Option<Function> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Function::Read => "read",
            Function::Write => "write",
            Function::Cas => "cas",
            Function::Add => "add",
            Function::Append => "append",
            Function::SetTtl => "set_ttl",
            Function::Expire => "expire",
            Function::Persist => "persist",
            Function::Ttl => "ttl",
            Function::MRead => "mread",
            Function::MWrite => "mwrite",
            Function::MDel => "mdel",
            Function::Push => "push",
            Function::Pop => "pop",
            Function::LRange => "lrange",
            Function::SAdd => "sadd",
            Function::SRem => "srem",
            Function::SMembers => "smembers",
            Function::ZIncrBy => "zincrby",
            Function::ZScore => "zscore",
            Function::Txn => "txn",
            Function::LockAcquire => "lock_acquire",
            Function::LockRelease => "lock_release",
            Function::FencedIncr => "fenced_incr",
        })
    }
}

/// One event of a history: an invocation or a completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub index: u64,
    pub time_ns: u64,
    pub process: u64,
    #[serde(rename = "type", alias = "kind")]
    pub kind: OpKind,
    pub f: Function,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The line form read from `history.jsonl`, where `index` and `time_ns` may be absent.
#[derive(Deserialize)]
struct RawOp {
    index: Option<u64>,
    time_ns: Option<u64>,
    process: u64,
    #[serde(rename = "type", alias = "kind")]
    kind: OpKind,
    f: Function,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    error: Option<String>,
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Certainly had no effect.
    Fail,
    /// Indeterminate (completed with `info`, or never completed).
    Info,
}

/// An invocation paired with its completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Position among the history's operations, in invocation order.
    pub id: usize,
    pub process: u64,
    pub f: Function,
    pub key: String,
    /// The invocation's value: written value, `[from, to]`, delta, appended string.
    pub value: Value,
    /// The completion's value: what a read returned. `null` without an `ok` completion.
    pub output: Value,
    pub outcome: Outcome,
    pub invoke_ns: u64,
    /// `None` when the operation never completed.
    pub complete_ns: Option<u64>,
    pub invoke_index: u64,
    pub complete_index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} p{} {} {:?}",
            self.id, self.process, self.f, self.key
        )?;
        match self.f {
            Function::Read => write!(f, " -> {}", self.output)?,
            function if function.has_output() => write!(f, " {} -> {}", self.value, self.output)?,
            _ => write!(f, " {}", self.value)?,
        }
        let outcome = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        };
        match self.complete_ns {
            Some(end) => write!(f, " {outcome} [{}, {}]", self.invoke_ns, end),
            None => write!(f, " {outcome} [{}, never]", self.invoke_ns),
        }
    }
}

/// Why a history is malformed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("line {line}: {message}")]
    Parse { line: usize, message: String },
    #[error("event {index}: process {process} invoked while its operation {pending} is pending")]
    OverlappingInvoke {
        index: u64,
        process: u64,
        pending: usize,
    },
    #[error("event {index}: completion for process {process}, which has no pending operation")]
    UnmatchedCompletion { index: u64, process: u64 },
    #[error(
        "event {index}: completion ({completion}) of process {process} does not match its invocation ({invocation})"
    )]
    Mismatch {
        index: u64,
        process: u64,
        invocation: String,
        completion: String,
    },
    #[error(
        "event {index}: completion at {complete_ns} ns is before its invocation at {invoke_ns} ns"
    )]
    TimeReversed {
        index: u64,
        invoke_ns: u64,
        complete_ns: u64,
    },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A history: events in recording order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub ops: Vec<Op>,
}

impl History {
    pub fn new() -> Self {
        History::default()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Appends an event, setting its `index` to its position.
    pub fn push(&mut self, mut op: Op) {
        op.index = self.ops.len() as u64;
        self.ops.push(op);
    }

    /// Records an invocation.
    pub fn invoke(
        &mut self,
        time_ns: u64,
        process: u64,
        f: Function,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) {
        self.push(Op {
            index: 0,
            time_ns,
            process,
            kind: OpKind::Invoke,
            f,
            key: key.into(),
            value: value.into(),
            error: None,
        });
    }

    /// Records the completion of `process`'s pending operation: function and key are taken
    /// from its invocation.
    ///
    /// # Panics
    /// If `process` has no pending invocation (a recorder bug).
    pub fn complete(&mut self, time_ns: u64, process: u64, kind: OpKind, value: impl Into<Value>) {
        self.complete_with_error(time_ns, process, kind, value, None);
    }

    /// [`History::complete`], with why the operation failed or is indeterminate.
    ///
    /// # Panics
    /// If `process` has no pending invocation (a recorder bug).
    pub fn complete_with_error(
        &mut self,
        time_ns: u64,
        process: u64,
        kind: OpKind,
        value: impl Into<Value>,
        error: Option<String>,
    ) {
        let invocation = self
            .ops
            .iter()
            .rev()
            .find(|op| op.process == process)
            .filter(|op| op.kind == OpKind::Invoke)
            .unwrap_or_else(|| panic!("process {process} has no pending invocation"));
        let (f, key) = (invocation.f, invocation.key.clone());
        self.push(Op {
            index: 0,
            time_ns,
            process,
            kind,
            f,
            key,
            value: value.into(),
            error,
        });
    }

    /// Stable-sorts the events by time, ties by process, and renumbers them: a canonical order
    /// that does not depend on how concurrent recorders interleaved events with equal times.
    /// Every process's events keep their order (a recorder's clock does not go back).
    pub fn sort_by_time(&mut self) {
        self.ops.sort_by_key(|op| (op.time_ns, op.process));
        for (index, op) in self.ops.iter_mut().enumerate() {
            op.index = index as u64;
        }
    }

    /// Parses `history.jsonl` text.
    pub fn from_jsonl_str(text: &str) -> Result<History, HistoryError> {
        Self::read_jsonl(text.as_bytes())
    }

    /// Reads `history.jsonl` from a reader.
    pub fn read_jsonl(reader: impl BufRead) -> Result<History, HistoryError> {
        let mut ops = Vec::new();
        for (number, line) in reader.lines().enumerate() {
            let line = line?;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let raw: RawOp = serde_json::from_str(line).map_err(|e| HistoryError::Parse {
                line: number + 1,
                message: e.to_string(),
            })?;
            let index = raw.index.unwrap_or(ops.len() as u64);
            ops.push(Op {
                index,
                time_ns: raw.time_ns.unwrap_or(index),
                process: raw.process,
                kind: raw.kind,
                f: raw.f,
                key: raw.key,
                value: raw.value,
                error: raw.error,
            });
        }
        Ok(History { ops })
    }

    /// Reads a `history.jsonl` file.
    // Offline tooling (`larder check`, reports): never called inside a simulation.
    #[allow(clippy::disallowed_methods)]
    pub fn read_jsonl_file(path: impl AsRef<Path>) -> Result<History, HistoryError> {
        let file = std::fs::File::open(path)?;
        Self::read_jsonl(std::io::BufReader::new(file))
    }

    /// Writes the history as `history.jsonl`, one event per line.
    pub fn write_jsonl(&self, mut writer: impl Write) -> Result<(), HistoryError> {
        for op in &self.ops {
            serde_json::to_writer(&mut writer, op).map_err(std::io::Error::from)?;
            writer.write_all(b"\n")?;
        }
        writer.flush()?;
        Ok(())
    }

    pub fn to_jsonl_string(&self) -> String {
        let mut out = Vec::new();
        self.write_jsonl(&mut out)
            .expect("writing to memory cannot fail");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }

    /// Writes the history to a `history.jsonl` file.
    // Offline tooling (`larder sim --report-dir`, `larder jepsen`): never inside a simulation.
    #[allow(clippy::disallowed_methods)]
    pub fn write_jsonl_file(&self, path: impl AsRef<Path>) -> Result<(), HistoryError> {
        let file = std::fs::File::create(path)?;
        self.write_jsonl(std::io::BufWriter::new(file))
    }

    /// Pairs every invocation with its process's next event, its completion. Operations come
    /// out in invocation order; an invocation never completed is an `Info` operation with no
    /// completion.
    pub fn operations(&self) -> Result<Vec<Operation>, HistoryError> {
        let mut operations: Vec<Operation> = Vec::new();
        let mut pending: BTreeMap<u64, usize> = BTreeMap::new();
        for op in &self.ops {
            match op.kind {
                OpKind::Invoke => {
                    if let Some(&id) = pending.get(&op.process) {
                        return Err(HistoryError::OverlappingInvoke {
                            index: op.index,
                            process: op.process,
                            pending: id,
                        });
                    }
                    pending.insert(op.process, operations.len());
                    operations.push(Operation {
                        id: operations.len(),
                        process: op.process,
                        f: op.f,
                        key: op.key.clone(),
                        value: op.value.clone(),
                        output: Value::Null,
                        outcome: Outcome::Info,
                        invoke_ns: op.time_ns,
                        complete_ns: None,
                        invoke_index: op.index,
                        complete_index: None,
                        error: None,
                    });
                }
                OpKind::Ok | OpKind::Fail | OpKind::Info => {
                    let id =
                        pending
                            .remove(&op.process)
                            .ok_or(HistoryError::UnmatchedCompletion {
                                index: op.index,
                                process: op.process,
                            })?;
                    let operation = &mut operations[id];
                    if operation.f != op.f || operation.key != op.key {
                        return Err(HistoryError::Mismatch {
                            index: op.index,
                            process: op.process,
                            invocation: format!("{} {:?}", operation.f, operation.key),
                            completion: format!("{} {:?}", op.f, op.key),
                        });
                    }
                    if op.time_ns < operation.invoke_ns {
                        return Err(HistoryError::TimeReversed {
                            index: op.index,
                            invoke_ns: operation.invoke_ns,
                            complete_ns: op.time_ns,
                        });
                    }
                    operation.complete_ns = Some(op.time_ns);
                    operation.complete_index = Some(op.index);
                    operation.error = op.error.clone();
                    operation.outcome = match op.kind {
                        OpKind::Ok => Outcome::Ok,
                        OpKind::Fail => Outcome::Fail,
                        _ => Outcome::Info,
                    };
                    if op.kind == OpKind::Ok {
                        operation.output = op.value.clone();
                    }
                }
            }
        }
        Ok(operations)
    }

    /// Builds the event history of completed-record style operations (an invocation and a
    /// completion time each). Events are ordered by time; at equal times an earlier-invoked
    /// operation's events come first, so every process's events stay in order. `index`,
    /// `id` and `complete_index` of the input are ignored.
    pub fn from_operations(operations: &[Operation]) -> History {
        // (time, invoke time of the operation, position, 0 = invoke / 1 = completion)
        let mut events: Vec<(u64, u64, usize, u8)> = Vec::with_capacity(operations.len() * 2);
        for (position, op) in operations.iter().enumerate() {
            events.push((op.invoke_ns, op.invoke_ns, position, 0));
            if let Some(end) = op.complete_ns {
                events.push((end.max(op.invoke_ns), op.invoke_ns, position, 1));
            }
        }
        events.sort_unstable();
        let mut history = History::new();
        for (time_ns, _, position, phase) in events {
            let op = &operations[position];
            let (kind, value) = match (phase, op.outcome) {
                (0, _) => (OpKind::Invoke, op.value.clone()),
                (_, Outcome::Ok) if op.f.has_output() => (OpKind::Ok, op.output.clone()),
                (_, Outcome::Ok) => (OpKind::Ok, op.value.clone()),
                (_, Outcome::Fail) => (OpKind::Fail, op.value.clone()),
                (_, Outcome::Info) => (OpKind::Info, op.value.clone()),
            };
            history.push(Op {
                index: 0,
                time_ns,
                process: op.process,
                kind,
                f: op.f,
                key: op.key.clone(),
                value,
                error: if phase == 0 { None } else { op.error.clone() },
            });
        }
        history
    }
}

impl FromIterator<Op> for History {
    fn from_iter<I: IntoIterator<Item = Op>>(iter: I) -> Self {
        History {
            ops: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut h = History::new();
        h.invoke(1000, 3, Function::Write, "reg:1", "a");
        h.invoke(1200, 4, Function::Read, "reg:1", Value::Null);
        h.complete(2000, 3, OpKind::Ok, "a");
        h.complete(2500, 4, OpKind::Ok, "a");
        h.invoke(
            3000,
            3,
            Function::Cas,
            "reg:1",
            Value::pair("a".into(), "b".into()),
        );
        h.complete(3100, 3, OpKind::Fail, Value::pair("a".into(), "b".into()));
        h.invoke(4000, 3, Function::Add, "ctr:0", 5);
        h.complete(9000, 3, OpKind::Info, 5);
        h.invoke(9500, 4, Function::Append, "log", "x");
        h
    }

    #[test]
    fn jsonl_round_trip() {
        let history = sample();
        let text = history.to_jsonl_string();
        assert_eq!(text.lines().count(), history.len());
        assert!(text.starts_with(
            r#"{"index":0,"time_ns":1000,"process":3,"type":"invoke","f":"write","key":"reg:1","value":"a"}"#
        ));
        assert!(text.contains(r#""value":["a","b"]"#));
        assert_eq!(History::from_jsonl_str(&text).unwrap(), history);
    }

    #[test]
    fn jsonl_defaults_and_aliases() {
        let text = "\n{\"process\":1,\"kind\":\"invoke\",\"f\":\"get\",\"key\":\"k\"}\n\
                    {\"process\":1,\"type\":\"ok\",\"f\":\"read\",\"key\":\"k\",\"value\":7}\n";
        let history = History::from_jsonl_str(text).unwrap();
        assert_eq!(history.ops[0].index, 0);
        assert_eq!(history.ops[1].time_ns, 1);
        assert_eq!(history.ops[0].value, Value::Null);
        assert_eq!(history.ops[1].value, Value::Int(7));
        let err = History::from_jsonl_str("{\"process\":1}").unwrap_err();
        assert!(matches!(err, HistoryError::Parse { line: 1, .. }), "{err}");
    }

    #[test]
    fn operations_pair_events() {
        let ops = sample().operations().unwrap();
        assert_eq!(ops.len(), 5);
        assert_eq!(ops[0].f, Function::Write);
        assert_eq!((ops[0].invoke_ns, ops[0].complete_ns), (1000, Some(2000)));
        assert_eq!(ops[1].output, Value::Str("a".into()));
        assert_eq!(ops[2].outcome, Outcome::Fail);
        assert_eq!(ops[3].outcome, Outcome::Info);
        assert_eq!(ops[3].complete_ns, Some(9000));
        assert_eq!(ops[4].outcome, Outcome::Info);
        assert_eq!(ops[4].complete_ns, None);
        // and back
        let rebuilt = History::from_operations(&ops);
        assert_eq!(rebuilt.operations().unwrap(), ops);
    }

    #[test]
    fn malformed_histories_are_rejected() {
        let mut h = History::new();
        h.invoke(0, 1, Function::Read, "k", Value::Null);
        h.invoke(1, 1, Function::Read, "k", Value::Null);
        assert!(matches!(
            h.operations(),
            Err(HistoryError::OverlappingInvoke { .. })
        ));

        let mut h = History::new();
        h.push(Op {
            index: 0,
            time_ns: 0,
            process: 1,
            kind: OpKind::Ok,
            f: Function::Read,
            key: "k".into(),
            value: Value::Null,
            error: None,
        });
        assert!(matches!(
            h.operations(),
            Err(HistoryError::UnmatchedCompletion { .. })
        ));

        let mut h = History::new();
        h.invoke(5, 1, Function::Read, "k", Value::Null);
        h.complete(4, 1, OpKind::Ok, Value::Null);
        assert!(matches!(
            h.operations(),
            Err(HistoryError::TimeReversed { .. })
        ));

        let mut h = History::new();
        h.invoke(5, 1, Function::Read, "k", Value::Null);
        h.complete(6, 1, OpKind::Ok, Value::Null);
        h.ops[1].f = Function::Write;
        assert!(matches!(h.operations(), Err(HistoryError::Mismatch { .. })));
    }

    #[test]
    fn from_operations_keeps_process_order_on_time_ties() {
        let op = |id: usize, start: u64, end: u64| Operation {
            id,
            process: 1,
            f: Function::Write,
            key: "k".into(),
            value: Value::Int(id as i64),
            output: Value::Null,
            outcome: Outcome::Ok,
            invoke_ns: start,
            complete_ns: Some(end),
            invoke_index: 0,
            complete_index: None,
            error: None,
        };
        // zero-length operations back to back at the same instant
        let ops = vec![op(0, 5, 5), op(1, 5, 5), op(2, 5, 7)];
        let history = History::from_operations(&ops);
        let paired = history.operations().unwrap();
        assert_eq!(paired.len(), 3);
        assert!(paired.iter().all(|o| o.outcome == Outcome::Ok));
    }
}
