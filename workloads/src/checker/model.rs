//! The sequential models (register with cas and append, counter, register with expiry,
//! multi-key object, collections object) over integer states.
//!
//! A key's operations are compiled once into [`COp`]s whose [`Step`] is a transition over a
//! `u64` state (an interned value id for the register, the count for the counter), so the
//! search compares and hashes integers instead of [`Value`]s. Compilation also drops what
//! cannot matter (failed operations, indeterminate reads, unobservable indeterminate writes),
//! which shrinks the search before it starts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::parts::Parts;
use super::{CheckConfig, ModelKind};
use crate::history::{Function, Operation, Outcome, Value};

/// A model transition over an integer state: an interned value id for the register, the
/// count (as `i64` bits) for the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Step {
    Read(u64),
    Write(u64),
    /// A cas that happened: legal only when the value is `from`.
    Cas {
        from: u64,
        to: u64,
    },
    /// An indeterminate cas: swaps when the value is `from`, no effect otherwise.
    CasMaybe {
        from: u64,
        to: u64,
    },
    /// A failed compare: legal only when the value is not `from`; no effect.
    CasMismatch {
        from: u64,
    },
    Append(u64),
    Add(i64),
    CounterRead(i64),
    /// TTL model: a `GET` that returned value id `v` (the id of `null`: nothing).
    TtlRead(u64),
    /// TTL model: a write of value id `value`, with an expiry of at most `ttl_ms` or none.
    TtlWrite {
        value: u64,
        ttl_ms: Option<u64>,
    },
    /// TTL model: an expiry set to `ttl_ms`; `existed` is the reply (1: the key existed),
    /// `None` when indeterminate.
    TtlExpire {
        ttl_ms: u64,
        existed: Option<bool>,
    },
    /// TTL model: a persist; `removed` is the reply (1: an expiry was removed), `None` when
    /// indeterminate.
    TtlPersist {
        removed: Option<bool>,
    },
    /// TTL model: a `PTTL` (`seconds: false`) or `TTL` answer.
    TtlQuery {
        answer: i64,
        seconds: bool,
    },
    /// Multi-key model: a write of the sub-keys of value id `pairs` (`[[name, value], ...]`).
    MWrite(u64),
    /// Multi-key model: a read of the sub-keys of value id `names` that returned value id
    /// `values` (in the same order).
    MRead {
        names: u64,
        values: u64,
    },
    /// Multi-key model: a delete of the sub-keys of value id `names`; `count` is the reply
    /// (how many existed), `None` when indeterminate.
    MDel {
        names: u64,
        count: Option<i64>,
    },
    /// Collections model: the operations `Interner::coll_txns[.0]`, none of which changes
    /// state (`lrange`, `smembers`, `zscore`, or a transaction of only those), with their
    /// replies.
    CollRead(u32),
    /// Collections model: the operations `Interner::coll_txns[ops]`, applied at one
    /// linearization point; `checked`: their replies must match (false when indeterminate).
    CollUpdate {
        ops: u32,
        checked: bool,
    },
    /// Lock model: an acquisition by holder id `holder` (an interned value) that answered
    /// `token` (`None`: nil, another holds it); `definite: false` when it never answered.
    LockAcquire {
        holder: u64,
        token: Option<i64>,
        definite: bool,
    },
    /// Lock model: a release of `token`; `released` is the reply, `None` when indeterminate.
    LockRelease {
        token: i64,
        released: Option<bool>,
    },
    /// Lock model: a fenced increment with `token`: `Some(Some(n))` ran and made the counter
    /// `n`, `Some(None)` was refused by its fence, `None` never answered.
    FencedIncr {
        token: i64,
        answer: Option<Option<i64>>,
    },
}

/// Who holds a lock in the lock model, as far as the history tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Holding {
    Free,
    /// Held by holder id `.0` with token `.1`.
    By(u64, i64),
    /// Held by holder id `.0` after an acquisition that never answered: its token is that
    /// holder's previous one or a new one, which no answer has shown yet.
    ByUnknown(u64),
}

/// A lock object's state: who holds the lock, the largest token any answer showed, and the
/// counter that only fenced increments change.
///
/// Leases end when the group clock says so, and the simulator skews clocks, so the model does
/// not fix when a lease ends: any moment may be the one. An answer that only an ended lease
/// explains (a fence refused, a release answered 0, an acquisition granted to another while
/// the lock was held) is that moment. What the model does fix is what fencing promises: every
/// token granted anew is larger than every token before it, a fence passes only with the
/// token of the current holding, and nil answers only while another holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct LockState {
    holding: Holding,
    last_token: i64,
    count: i64,
}

/// The expiry part of a TTL key's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expiry {
    /// No expiry: the key (if it holds a value) stays.
    Never,
    /// Expires after at most `bound_ms` from when it was set, at a moment the model does not
    /// fix: the simulator's clocks are skewed, so any later linearization point may be the
    /// one. The first observation that the key is gone (a `GET` answering nil, a `PTTL` of
    /// -2, ...) is that moment; from then on the state is "gone" and stays so until a write.
    Pending { bound_ms: u64 },
    /// After an indeterminate `PERSIST` of a pending key: it was either persisted (the key
    /// stays) or had expired first (gone); the first observation decides which.
    PersistedOrGone,
}

/// A TTL key's state: a value id (the id of `null` when the key is gone) and its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TtlState {
    value: u64,
    expiry: Expiry,
}

/// One operation of a key, ready for the search.
#[derive(Debug, Clone, Copy)]
pub(super) struct COp {
    /// Position in the key's operation list.
    pub(super) op: usize,
    pub(super) call: u64,
    /// `u64::MAX` for an indeterminate operation.
    pub(super) ret: u64,
    pub(super) step: Step,
    /// Must be linearized (an `ok`, or a failed compare).
    pub(super) definite: bool,
}

/// Register values as integers.
#[derive(Debug, Clone, Default)]
pub(super) struct Interner {
    ids: BTreeMap<Value, u64>,
    values: Vec<Interned>,
    appended: BTreeMap<(u64, u64), u64>,
    /// Every whole string by its length and [`TextHash`], so that a string reached by appends
    /// gets the id of the equal string a read returned or a write or cas named: the search
    /// compares states by id. (Two orders of appends that build one string, which no operation
    /// names whole, may keep two ids: the search then explores that state twice, never
    /// concluding differently, as every step sees only its text or compares it with a whole
    /// value's id.) The last part tells apart strings whose length and hash collide.
    by_text: BTreeMap<(usize, TextHash, u32), u64>,
    /// TTL states as integers (the TTL model's state is an index here).
    ttl_ids: BTreeMap<TtlState, u64>,
    ttl_states: Vec<TtlState>,
    /// Collections states as integers (the collections model's state is an index here).
    /// Each state is held once, shared by the map's key and the vector.
    coll_ids: BTreeMap<Arc<CollState>, u64>,
    coll_states: Vec<Arc<CollState>>,
    /// Roughly the heap bytes of `coll_states`.
    coll_bytes: usize,
    /// The names, elements and members of collections as small integers ([`Word`]): a state
    /// holds these, not strings (a 24-client history's list of 180 elements made each state
    /// 8 KiB of strings, and a search of 700,000 states ran out of memory on them).
    coll_words: BTreeMap<String, Word>,
    /// The compiled collection operations, indexed by [`Step::CollRead`] and
    /// [`Step::CollUpdate`] (a `Step` stays `Copy`).
    coll_txns: Vec<CollTxn>,
    /// Lock states as integers (the lock model's state is an index here).
    lock_ids: BTreeMap<LockState, u64>,
    lock_states: Vec<LockState>,
    /// Roughly what the whole values hold on the heap (appended states are counted per state
    /// in [`Interner::bytes`]: they hold no text).
    bytes: usize,
    /// On a key only appended to and read: the longest text a read returned. Such a key's
    /// text only grows, so every state of a linearization is a prefix of that read's text or
    /// extends it ([`Interner::fits_bound`]); an append that makes any other text is cut off
    /// at once instead of being explored through every order of the appends in flight (a
    /// 24-client appended key once ran the search out of memory after 5.8 million states).
    append_bound: Option<String>,
}

/// One interned register value.
#[derive(Debug, Clone)]
enum Interned {
    Whole(Value),
    /// A string built by an append: the state it was appended to and the appended value. It
    /// holds no text of its own, so an appended key's state costs the same few dozen bytes
    /// however long the string grows (as whole strings, a 24-client appended key's states
    /// once took 968 MiB of a 1 GiB budget); the text is rebuilt by walking the parents only
    /// to tell two strings with one hash apart.
    Appended {
        parent: u64,
        suffix: u64,
        len: usize,
        hash: TextHash,
    },
}

/// FNV-1a over a string's bytes (64 bits; equal hashes are confirmed by the texts). It is
/// streamed: the hash of `s` followed by `t` is the hash of `s` fed on with `t`, so an
/// appended state's hash costs its suffix only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct TextHash(u64);

impl TextHash {
    const EMPTY: TextHash = TextHash(0xcbf2_9ce4_8422_2325);
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn feed(self, text: &str) -> TextHash {
        TextHash(
            text.bytes()
                .fold(self.0, |h, b| (h ^ u64::from(b)).wrapping_mul(Self::PRIME)),
        )
    }
}

/// What appending to (or appending) a value means: a missing key is the empty string, a
/// number its decimal text.
fn append_text(value: &Value) -> std::borrow::Cow<'_, str> {
    match value {
        Value::Null => "".into(),
        Value::Str(s) => s.as_str().into(),
        other => other.to_string().into(),
    }
}

/// Heap bytes of one interned value, roughly (each is held twice: map key and vector).
fn value_bytes(value: &Value) -> usize {
    let own = match value {
        Value::Null | Value::Int(_) => 0,
        Value::Str(s) => s.len(),
        Value::List(items) => items.iter().map(value_bytes).sum::<usize>() + items.len() * 32,
    };
    2 * (own + std::mem::size_of::<Value>()) + 48
}

impl Interner {
    fn id(&mut self, value: &Value) -> u64 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        // Whole values are interned when the history is compiled, before the search appends:
        // an appended state equal to a string interned later would keep its own id, and a read
        // of that string would not match it.
        assert!(
            !matches!(value, Value::Str(_)) || self.appended.is_empty(),
            "a string interned after appends began: {value}"
        );
        let id = self.values.len() as u64;
        self.bytes += value_bytes(value);
        self.ids.insert(value.clone(), id);
        self.values.push(Interned::Whole(value.clone()));
        if let Value::Str(text) = value {
            self.register_text(text.len(), TextHash::EMPTY.feed(text), id);
        }
        id
    }

    /// The string state of this length and hash for which `same` holds, if one is interned.
    fn find_text(
        &self,
        len: usize,
        hash: TextHash,
        same: impl Fn(&Self, u64) -> bool,
    ) -> Option<u64> {
        self.by_text
            .range((len, hash, 0)..=(len, hash, u32::MAX))
            .map(|(_, &id)| id)
            .find(|&id| same(self, id))
    }

    fn register_text(&mut self, len: usize, hash: TextHash, id: u64) {
        let taken = self
            .by_text
            .range((len, hash, 0)..=(len, hash, u32::MAX))
            .count();
        self.by_text.insert((len, hash, taken as u32), id);
    }

    /// The length and hash of a string state's text (of what appending to `id` extends).
    fn text_key(&self, id: u64) -> (usize, TextHash) {
        match &self.values[id as usize] {
            Interned::Appended { len, hash, .. } => (*len, *hash),
            Interned::Whole(value) => {
                let text = append_text(value);
                (text.len(), TextHash::EMPTY.feed(&text))
            }
        }
    }

    /// The whole text of a string state, rebuilt from its parents (of a whole value, what
    /// appending to it extends: [`append_text`]).
    fn text(&self, id: u64) -> String {
        let mut suffixes = Vec::new();
        let mut at = id;
        while let Interned::Appended { parent, suffix, .. } = &self.values[at as usize] {
            suffixes.push(*suffix);
            at = *parent;
        }
        let Interned::Whole(root) = &self.values[at as usize] else {
            unreachable!("the walk stops at a whole value")
        };
        let mut text = append_text(root).into_owned();
        for suffix in suffixes.iter().rev() {
            text.push_str(&self.text(*suffix));
        }
        text
    }

    /// Roughly the heap bytes the interned values hold.
    pub(super) fn bytes(&self) -> usize {
        let appended_states = self.values.len() - self.ids.len();
        self.bytes
            + appended_states * std::mem::size_of::<Interned>()
            + self.appended.len() * 64
            + self.by_text.len() * 64
            + self.ttl_states.len() * 96
            + self.lock_states.len() * 96
            + self.coll_bytes
    }

    fn coll(&mut self, state: CollState) -> u64 {
        if let Some(&id) = self.coll_ids.get(&state) {
            return id;
        }
        let id = self.coll_states.len() as u64;
        self.coll_bytes += state.bytes();
        let state = Arc::new(state);
        self.coll_ids.insert(state.clone(), id);
        self.coll_states.push(state);
        id
    }

    /// The [`Word`] of a collection's name, element or member.
    fn coll_word(&mut self, text: &str) -> Result<Word, String> {
        if let Some(&word) = self.coll_words.get(text) {
            return Ok(word);
        }
        let word = Word::try_from(self.coll_words.len())
            .map_err(|_| "too many distinct collection strings".to_string())?;
        self.coll_words.insert(text.to_string(), word);
        Ok(word)
    }

    fn ttl(&mut self, state: TtlState) -> u64 {
        if let Some(&id) = self.ttl_ids.get(&state) {
            return id;
        }
        let id = self.ttl_states.len() as u64;
        self.ttl_ids.insert(state, id);
        self.ttl_states.push(state);
        id
    }

    fn lock(&mut self, state: LockState) -> u64 {
        if let Some(&id) = self.lock_ids.get(&state) {
            return id;
        }
        let id = self.lock_states.len() as u64;
        self.lock_ids.insert(state, id);
        self.lock_states.push(state);
        id
    }

    /// A whole value; `None` for a string built by appends (only the register model appends).
    pub(super) fn value(&self, id: u64) -> Option<&Value> {
        match &self.values[id as usize] {
            Interned::Whole(value) => Some(value),
            Interned::Appended { .. } => None,
        }
    }

    /// The state `suffix` appended to `state` makes, `None` when its text cannot be one of
    /// a linearization's ([`Interner::append_bound`]).
    fn append(&mut self, state: u64, suffix: u64) -> Option<u64> {
        if let Some(&id) = self.appended.get(&(state, suffix)) {
            return (id != NO_STATE).then_some(id);
        }
        if !self.fits_bound(state, suffix) {
            self.appended.insert((state, suffix), NO_STATE);
            return None;
        }
        let suffix_text = self.text(suffix);
        let (len, hash) = self.text_key(state);
        let (len, hash) = (len + suffix_text.len(), hash.feed(&suffix_text));
        // A read, a write or a cas may name this string whole: then it is that value's state.
        // The texts are compared only when length and hash agree.
        let found = self.find_text(len, hash, |this, id| {
            this.text(id) == this.text(state) + &suffix_text
        });
        let id = found.unwrap_or_else(|| {
            self.values.push(Interned::Appended {
                parent: state,
                suffix,
                len,
                hash,
            });
            self.values.len() as u64 - 1
        });
        self.appended.insert((state, suffix), id);
        Some(id)
    }

    /// Whether `state` with `suffix` appended can be a state of a linearization: a prefix of
    /// the append bound, or an extension of a state that reached it. (A text that jumps from
    /// a prefix past the bound skips the state the longest read saw, which is still to come,
    /// as the text was shorter than what it read.) An appended `state` fitted when it was
    /// made, so only its suffix is compared.
    fn fits_bound(&self, state: u64, suffix: u64) -> bool {
        let Some(bound) = &self.append_bound else {
            return true;
        };
        let bound = bound.as_bytes();
        let (len, parent_fits) = match &self.values[state as usize] {
            Interned::Appended { len, .. } => (*len, true),
            Interned::Whole(value) => {
                let text = append_text(value);
                let text = text.as_bytes();
                (
                    text.len(),
                    bound.starts_with(text) || text.starts_with(bound),
                )
            }
        };
        if !parent_fits || len >= bound.len() {
            return parent_fits;
        }
        bound[len..].starts_with(self.text(suffix).as_bytes())
    }
}

pub(super) struct Compiled {
    pub(super) ops: Vec<COp>,
    pub(super) initial: u64,
    pub(super) interner: Interner,
    /// A collections key's parts, which prune its search ([`super::parts`]).
    pub(super) parts: Option<Parts>,
}

pub(super) fn compile(
    kind: ModelKind,
    ops: &[&Operation],
    config: &CheckConfig,
) -> Result<Compiled, String> {
    let mut interner = Interner::default();
    let initial = match kind {
        ModelKind::Register => interner.id(&config.initial),
        ModelKind::Counter => 0,
        ModelKind::Ttl => {
            let value = interner.id(&config.initial);
            interner.ttl(TtlState {
                value,
                expiry: Expiry::Never,
            })
        }
        // Every sub-key missing: the empty object.
        ModelKind::Multi => interner.id(&Value::List(Vec::new())),
        // Every list, set and sorted set empty (Redis deletes empty ones).
        ModelKind::Collections => interner.coll(CollState::default()),
        ModelKind::Lock => interner.lock(LockState {
            holding: Holding::Free,
            last_token: 0,
            count: 0,
        }),
    };
    let int = |value: &Value, what: &str, op: &Operation| -> Result<i64, String> {
        match value {
            Value::Int(n) => Ok(*n),
            Value::Null if what == "read" => Ok(0),
            other => Err(format!(
                "counter model: {what} of a non-integer {other} in operation {op}"
            )),
        }
    };
    let mut compiled = Vec::with_capacity(ops.len());
    for (position, op) in ops.iter().enumerate() {
        let definite = match op.outcome {
            Outcome::Ok => true,
            Outcome::Info => false,
            Outcome::Fail => {
                if op.f == Function::Cas && config.fail_cas_observes_mismatch {
                    true
                } else {
                    continue;
                }
            }
        };
        let step = match (kind, op.f) {
            // Reads that never answered constrain nothing.
            (_, Function::Read | Function::Ttl | Function::MRead) if !definite => continue,
            (ModelKind::Register, Function::Read) => Step::Read(interner.id(&op.output)),
            (ModelKind::Register, Function::Write) => Step::Write(interner.id(&op.value)),
            (ModelKind::Register, Function::Cas) => {
                let (from, to) = op
                    .value
                    .as_pair()
                    .ok_or_else(|| format!("cas without a [from, to] value: {op}"))?;
                let (from, to) = (interner.id(from), interner.id(to));
                match op.outcome {
                    Outcome::Ok => Step::Cas { from, to },
                    Outcome::Info => Step::CasMaybe { from, to },
                    Outcome::Fail => Step::CasMismatch { from },
                }
            }
            (ModelKind::Register, Function::Append) => Step::Append(interner.id(&op.value)),
            (ModelKind::Counter, Function::Read) => Step::CounterRead(int(&op.output, "read", op)?),
            (ModelKind::Counter, Function::Add) => Step::Add(int(&op.value, "add", op)?),
            (ModelKind::Counter, Function::Write) => {
                Step::Write(int(&op.value, "write", op)? as u64)
            }
            (ModelKind::Ttl, f) => compile_ttl(f, op, definite, &mut interner)?,
            (ModelKind::Multi, f) => compile_multi(f, op, definite, &mut interner)?,
            (ModelKind::Lock, f) if f.is_lock() => compile_lock(op, definite, &mut interner)?,
            (ModelKind::Collections, f) if f.is_collection() => {
                match compile_coll(op, definite, &mut interner)? {
                    Some(step) => step,
                    // A read that never answered constrains nothing.
                    None => continue,
                }
            }
            (kind, f) => {
                return Err(format!("the {kind:?} model has no {f} (operation {op})"));
            }
        };
        let call = op.invoke_ns;
        let ret = if definite {
            op.complete_ns.unwrap_or(u64::MAX).max(call)
        } else {
            u64::MAX
        };
        compiled.push(COp {
            op: position,
            call,
            ret,
            step,
            definite,
        });
    }
    if kind == ModelKind::Register {
        interner.append_bound = append_bound(&compiled, &interner);
    }
    if kind == ModelKind::Collections {
        merge_unobserved_elements(&mut compiled, &mut interner);
    }
    if matches!(kind, ModelKind::Register | ModelKind::Multi)
        && let Some(observed) = Observed::of(&compiled, &interner)
    {
        if !observed.compares_failed {
            drop_unobservable(&mut compiled, &observed.values);
        }
        merge_unobserved(&mut compiled, &mut interner, &observed);
    }
    let parts = if kind == ModelKind::Collections {
        Parts::new(&compiled, coll_parts(&compiled, initial, &interner))
    } else {
        None
    };
    Ok(Compiled {
        ops: compiled,
        initial,
        interner,
        parts,
    })
}

/// The id of no state: an append cut off by the append bound, remembered as such.
const NO_STATE: u64 = u64::MAX;

/// The longest text a read of this register returned, when its only updates are appends
/// and every value read or appended is text (see [`Interner::append_bound`]).
fn append_bound(ops: &[COp], interner: &Interner) -> Option<String> {
    let mut longest = String::new();
    let mut appends = false;
    for op in ops {
        match op.step {
            Step::Append(_) => appends = true,
            Step::Read(id) => match interner.value(id) {
                Some(Value::Str(text)) if text.len() > longest.len() => longest = text.clone(),
                Some(Value::Str(_) | Value::Null) => {}
                _ => return None,
            },
            _ => return None,
        }
    }
    appends.then_some(longest)
}

/// What the reads and compares of one key observe: the values a register's reads return
/// and its cas operations compare with, and the (sub-key, value) pairs a multi-key object's
/// reads return. Built once for [`drop_unobservable`] and [`merge_unobserved`].
struct Observed {
    values: BTreeSet<u64>,
    pairs: BTreeSet<(Value, Value)>,
    /// A failed compare observes that the value is *not* something, which
    /// [`drop_unobservable`] cannot honour.
    compares_failed: bool,
}

impl Observed {
    /// `None` when a step builds on the value it finds (an append, a counter's add): every
    /// value then matters, so neither cut applies.
    fn of(ops: &[COp], interner: &Interner) -> Option<Observed> {
        let mut observed = Observed {
            values: BTreeSet::new(),
            pairs: BTreeSet::new(),
            compares_failed: false,
        };
        for op in ops {
            match op.step {
                Step::Read(v) | Step::Cas { from: v, .. } | Step::CasMaybe { from: v, .. } => {
                    observed.values.insert(v);
                }
                Step::CasMismatch { from } => {
                    observed.values.insert(from);
                    observed.compares_failed = true;
                }
                Step::MRead { names, values } => {
                    if let (Some(Value::List(names)), Some(Value::List(values))) =
                        (interner.value(names), interner.value(values))
                    {
                        for (name, value) in names.iter().zip(values) {
                            observed.pairs.insert((name.clone(), value.clone()));
                        }
                    }
                }
                Step::Write(_) | Step::MWrite(_) | Step::MDel { .. } => {}
                _ => return None,
            }
        }
        Some(observed)
    }
}

/// What an unobserved value is written as (see [`merge_unobserved`]); used only when no
/// operation names it.
const UNOBSERVED: &str = "\u{0}larder-checker: a value no operation observes\u{0}";

/// Writes every value that no operation observes as one value, [`UNOBSERVED`]: on a
/// register, a value no read returns and no cas compares with; on a multi-key object, a
/// sub-key's value no read returns. Such values are told apart by nothing (a read matches
/// none of them, a multi-key delete counts them as present either way), so a state holding
/// one behaves as the state holding another in every step, and the search, which compares
/// states by id, merges the configurations that differ only in which unread write came
/// last. Without it, a burst of writes nobody reads (a stalled group releasing many at once)
/// was searched through every order of them: a 24-client multi-key object took 985,000
/// states, nearly all on one such burst. Keys with appends keep their values (an append
/// builds on the value it finds; [`Observed::of`] gives none for them).
fn merge_unobserved(ops: &mut [COp], interner: &mut Interner, observed: &Observed) {
    let marker = Value::Str(UNOBSERVED.into());
    if observed
        .values
        .iter()
        .any(|&v| interner.value(v) == Some(&marker))
        || observed.pairs.iter().any(|(_, value)| *value == marker)
    {
        return;
    }
    let unobserved = interner.id(&marker);
    for op in ops.iter_mut() {
        match &mut op.step {
            Step::Write(v) | Step::Cas { to: v, .. } | Step::CasMaybe { to: v, .. }
                if !observed.values.contains(v) =>
            {
                *v = unobserved;
            }
            Step::MWrite(pairs) => {
                let Some(Value::List(written)) = interner.value(*pairs) else {
                    continue;
                };
                let merged: Vec<Value> = written
                    .iter()
                    .map(|pair| match pair.as_pair() {
                        Some((name, value))
                            if !observed.pairs.contains(&(name.clone(), value.clone())) =>
                        {
                            Value::pair(name.clone(), marker.clone())
                        }
                        _ => pair.clone(),
                    })
                    .collect();
                *pairs = interner.id(&Value::List(merged));
            }
            _ => {}
        }
    }
}

/// On a collections object, writes every pushed element that no reply names (no read lists
/// it, no pop returns it) as one element, [`UNOBSERVED`], and gives operations that are then
/// the same (their sub-operations and replies) one [`Step`], so that they are twins
/// (`search::waits_for_twin`). Such elements are told apart by no step: a push answers a
/// length, a pop that takes one matches no definite reply whichever it is, and a read of a
/// list holding one matches none either. So every step is accepted on a state holding one
/// exactly when it is on the state holding another, and the memo merges configurations that
/// differ only in which of them was pushed. What it is for: the pushes a client never heard
/// back from (a group that lost its leader), whose elements nobody saw. One-group swarm seed
/// 11 at 24 clients (`--swarm --seed 11 --duration 20s --clients 24 --rate 600`) has six on
/// one list; that list's operations alone took more than 3.5 million states without this,
/// 277,361 with it.
fn merge_unobserved_elements(ops: &mut [COp], interner: &mut Interner) {
    let mut observed: BTreeSet<Word> = BTreeSet::new();
    for reply in interner.coll_txns.iter().flat_map(|txn| &txn.replies) {
        match reply {
            CollReply::Word(word) => {
                observed.insert(*word);
            }
            CollReply::Words(words) => observed.extend(words.iter().copied()),
            CollReply::Int(_) | CollReply::Nil | CollReply::Impossible => {}
        }
    }
    let Ok(marker) = interner.coll_word(UNOBSERVED) else {
        return;
    };
    if observed.contains(&marker) {
        return;
    }
    let mut canonical: BTreeMap<CollTxn, u32> = BTreeMap::new();
    let mut txns: Vec<CollTxn> = Vec::new();
    let mut renumbered: Vec<u32> = Vec::with_capacity(interner.coll_txns.len());
    for mut txn in std::mem::take(&mut interner.coll_txns) {
        for op in &mut txn.ops {
            if let CollOp::Push { element, .. } = op
                && !observed.contains(element)
            {
                *element = marker;
            }
        }
        renumbered.push(share_txn(&mut txns, &mut canonical, txn));
    }
    interner.coll_txns = txns;
    for op in ops {
        match &mut op.step {
            Step::CollRead(index) | Step::CollUpdate { ops: index, .. } => {
                *index = renumbered[*index as usize];
            }
            _ => {}
        }
    }
}

/// The index of `txn` in `txns`, where it is pushed unless `shared` (every transaction pushed
/// through it, with its index) holds an equal one: equal transactions (operations and
/// replies) share one index, so their operations have equal steps and are searched as twins.
fn share_txn(txns: &mut Vec<CollTxn>, shared: &mut BTreeMap<CollTxn, u32>, txn: CollTxn) -> u32 {
    if let Some(&index) = shared.get(&txn) {
        return index;
    }
    let index = txns.len() as u32;
    shared.insert(txn.clone(), index);
    txns.push(txn);
    index
}

/// Drops indeterminate writes (and indeterminate cas) whose value nothing observes: no read
/// returns it and no cas compares with it (`observed`). Such an operation may as well never
/// have happened: in a linearization that includes it, the operations up to the next write
/// see its value, so none of them is a read or a successful cas (they would observe it), and
/// an indeterminate cas among them did nothing (its `from` differs) and can be dropped with
/// it. Not applied when the key has appends (they build on the value) or failed compares
/// (they observe that the value is *not* something). `observed` may also hold the `from` of
/// a cas dropped here; [`merge_unobserved`] then keeps that value apart, which is sound.
fn drop_unobservable(ops: &mut Vec<COp>, observed: &BTreeSet<u64>) {
    ops.retain(|op| match op.step {
        Step::Write(v) if !op.definite => observed.contains(&v),
        Step::CasMaybe { to, .. } => observed.contains(&to),
        _ => true,
    });
}

/// A TTL key's operation as a step (`definite`: it completed `ok`).
fn compile_ttl(
    f: Function,
    op: &Operation,
    definite: bool,
    interner: &mut Interner,
) -> Result<Step, String> {
    let reply = |what: &str| -> Result<Option<bool>, String> {
        match (&op.output, definite) {
            (_, false) => Ok(None),
            (Value::Int(n @ (0 | 1)), true) => Ok(Some(*n == 1)),
            (other, true) => Err(format!("ttl model: {what} answered {other} in {op}")),
        }
    };
    let ttl_ms = |value: &Value| -> Result<u64, String> {
        match value {
            Value::Int(ms) if *ms > 0 => Ok(*ms as u64),
            other => Err(format!("ttl model: a ttl of {other} in {op}")),
        }
    };
    Ok(match f {
        Function::Read => Step::TtlRead(interner.id(&op.output)),
        Function::Write => Step::TtlWrite {
            value: interner.id(&op.value),
            ttl_ms: None,
        },
        Function::SetTtl => match &op.value {
            Value::List(items) if items.len() == 2 => Step::TtlWrite {
                value: interner.id(&items[0]),
                ttl_ms: Some(ttl_ms(&items[1])?),
            },
            other => return Err(format!("ttl model: set_ttl of {other} in {op}")),
        },
        Function::Expire => Step::TtlExpire {
            ttl_ms: ttl_ms(&op.value)?,
            existed: reply("expire")?,
        },
        Function::Persist => Step::TtlPersist {
            removed: reply("persist")?,
        },
        Function::Ttl => Step::TtlQuery {
            answer: op
                .output
                .as_int()
                .ok_or_else(|| format!("ttl model: ttl answered {} in {op}", op.output))?,
            seconds: op.value == Value::from("s"),
        },
        f => return Err(format!("the ttl model has no {f} (operation {op})")),
    })
}

/// A multi-key object's operation as a step (`definite`: it completed `ok`).
fn compile_multi(
    f: Function,
    op: &Operation,
    definite: bool,
    interner: &mut Interner,
) -> Result<Step, String> {
    let list = |value: &Value| -> Result<Vec<Value>, String> {
        match value {
            Value::List(items) => Ok(items.clone()),
            other => Err(format!("multi-key model: {other} is not a list in {op}")),
        }
    };
    Ok(match f {
        Function::MWrite => {
            let mut pairs = BTreeMap::new();
            for pair in list(&op.value)? {
                match pair.as_pair() {
                    Some((name, value)) => pairs.insert(name.clone(), value.clone()),
                    None => return Err(format!("multi-key model: {pair} is no pair in {op}")),
                };
            }
            let pairs = pairs
                .into_iter()
                .map(|(name, value)| Value::pair(name, value))
                .collect();
            Step::MWrite(interner.id(&Value::List(pairs)))
        }
        Function::MRead => {
            let (names, values) = (list(&op.value)?, list(&op.output)?);
            if names.len() != values.len() {
                return Err(format!(
                    "multi-key model: {} values for {} names in {op}",
                    values.len(),
                    names.len()
                ));
            }
            Step::MRead {
                names: interner.id(&op.value),
                values: interner.id(&op.output),
            }
        }
        Function::MDel => {
            let names = list(&op.value)?;
            let distinct: std::collections::BTreeSet<&Value> = names.iter().collect();
            if distinct.len() != names.len() {
                return Err(format!(
                    "multi-key model: a delete names a sub-key twice in {op}"
                ));
            }
            Step::MDel {
                names: interner.id(&op.value),
                count: if definite {
                    Some(op.output.as_int().ok_or_else(|| {
                        format!("multi-key model: delete answered {} in {op}", op.output)
                    })?)
                } else {
                    None
                },
            }
        }
        f => return Err(format!("the multi-key model has no {f} (operation {op})")),
    })
}

/// The TTL model's transition: `None` when the step cannot happen in `state`. Deterministic
/// given the observed output: an observation that tells whether a pending expiry has
/// happened settles it.
fn apply_ttl(step: Step, state: u64, interner: &mut Interner) -> Option<u64> {
    let TtlState { value, expiry } = interner.ttl_states[state as usize];
    let null = interner.id(&Value::Null);
    let gone = TtlState {
        value: null,
        expiry: Expiry::Never,
    };
    let present = value != null;
    let kept = TtlState { value, expiry };
    let next = match step {
        Step::TtlRead(read) => match expiry {
            _ if read == value => match expiry {
                // Seen alive after an indeterminate persist: it was persisted.
                Expiry::PersistedOrGone => TtlState {
                    value,
                    expiry: Expiry::Never,
                },
                _ => kept,
            },
            // Nil: a pending expiry happened now.
            Expiry::Pending { .. } | Expiry::PersistedOrGone if read == null => gone,
            _ => return None,
        },
        Step::TtlWrite { value, ttl_ms } => TtlState {
            value,
            expiry: ttl_ms.map_or(Expiry::Never, |bound_ms| Expiry::Pending { bound_ms }),
        },
        Step::TtlExpire { ttl_ms, existed } => {
            let expiring = TtlState {
                value,
                expiry: Expiry::Pending { bound_ms: ttl_ms },
            };
            match (present, expiry, existed) {
                (false, _, Some(true)) => return None,
                (false, _, _) => gone,
                (true, Expiry::Never, Some(false)) => return None,
                // Indeterminate on a key that may have expired: a pending expiry covers both.
                (true, _, Some(true) | None) => expiring,
                (true, _, Some(false)) => gone,
            }
        }
        Step::TtlPersist { removed } => match (present, expiry, removed) {
            (_, Expiry::Pending { .. }, Some(true)) => TtlState {
                value,
                expiry: Expiry::Never,
            },
            (_, Expiry::Pending { .. }, Some(false)) => gone,
            (_, Expiry::Pending { .. }, None) => TtlState {
                value,
                expiry: Expiry::PersistedOrGone,
            },
            (_, _, Some(true)) => return None,
            _ => kept,
        },
        Step::TtlQuery { answer, seconds } => match (present, expiry, answer) {
            (false, _, -2) => gone,
            (true, Expiry::Never, -1) => kept,
            (true, Expiry::Pending { bound_ms }, left) if left >= 0 => {
                // Redis rounds TTL to the nearest second.
                let bound = if seconds {
                    (bound_ms + 500) / 1000
                } else {
                    bound_ms
                };
                if left as u64 > bound {
                    return None;
                }
                kept
            }
            (true, Expiry::Pending { .. } | Expiry::PersistedOrGone, -2) => gone,
            (true, Expiry::PersistedOrGone, -1) => TtlState {
                value,
                expiry: Expiry::Never,
            },
            _ => return None,
        },
        _ => unreachable!("not a ttl step: {step:?}"),
    };
    Some(interner.ttl(next))
}

/// The sub-keys of a multi-key state (`[[name, value], ...]`, by name, missing ones left out).
fn multi_entries(interner: &Interner, state: u64) -> BTreeMap<Value, Value> {
    match interner.value(state) {
        Some(Value::List(pairs)) => pairs
            .iter()
            .filter_map(|pair| pair.as_pair())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn multi_state(interner: &mut Interner, entries: BTreeMap<Value, Value>) -> u64 {
    let pairs = entries
        .into_iter()
        .map(|(name, value)| Value::pair(name, value))
        .collect();
    interner.id(&Value::List(pairs))
}

fn names(interner: &Interner, id: u64) -> Vec<Value> {
    match interner.value(id) {
        Some(Value::List(names)) => names.clone(),
        _ => Vec::new(),
    }
}

/// The multi-key model's transition: the object is one register whose value is every
/// sub-key's value, so a read sees one state, never half of a write.
fn apply_multi(step: Step, state: u64, interner: &mut Interner) -> Option<u64> {
    match step {
        Step::MWrite(pairs) => {
            let mut entries = multi_entries(interner, state);
            entries.extend(multi_entries(interner, pairs));
            Some(multi_state(interner, entries))
        }
        Step::MRead {
            names: asked,
            values,
        } => {
            let entries = multi_entries(interner, state);
            let seen = names(interner, asked)
                .iter()
                .map(|name| entries.get(name).cloned().unwrap_or_default())
                .collect();
            (interner.value(values) == Some(&Value::List(seen))).then_some(state)
        }
        Step::MDel {
            names: asked,
            count,
        } => {
            let mut entries = multi_entries(interner, state);
            let deleted = names(interner, asked)
                .iter()
                .filter(|name| entries.remove(*name).is_some())
                .count() as i64;
            if count.is_some_and(|count| count != deleted) {
                return None;
            }
            Some(multi_state(interner, entries))
        }
        _ => unreachable!("not a multi-key step: {step:?}"),
    }
}

pub(super) fn apply(step: Step, state: u64, interner: &mut Interner) -> Option<u64> {
    match step {
        Step::Read(v) => (state == v).then_some(state),
        Step::Write(v) => Some(v),
        Step::Cas { from, to } => (state == from).then_some(to),
        Step::CasMaybe { from, to } => Some(if state == from { to } else { state }),
        Step::CasMismatch { from } => (state != from).then_some(state),
        Step::Append(suffix) => interner.append(state, suffix),
        Step::Add(delta) => Some((state as i64).wrapping_add(delta) as u64),
        Step::CounterRead(n) => (state as i64 == n).then_some(state),
        Step::TtlRead(_)
        | Step::TtlWrite { .. }
        | Step::TtlExpire { .. }
        | Step::TtlPersist { .. }
        | Step::TtlQuery { .. } => apply_ttl(step, state, interner),
        Step::MWrite(_) | Step::MRead { .. } | Step::MDel { .. } => {
            apply_multi(step, state, interner)
        }
        Step::LockAcquire { .. } | Step::LockRelease { .. } | Step::FencedIncr { .. } => {
            let next = apply_lock(step, interner.lock_states[state as usize], interner)?;
            Some(interner.lock(next))
        }
        Step::CollRead(ops) => {
            // Reads change nothing: answered on the state as it is, without a copy.
            let txn = &interner.coll_txns[ops as usize];
            let current = &interner.coll_states[state as usize];
            (txn.ops.len() == txn.replies.len()
                && txn
                    .ops
                    .iter()
                    .zip(&txn.replies)
                    .all(|(op, expected)| current.read(op, expected)))
            .then_some(state)
        }
        Step::CollUpdate { ops, checked } => {
            let next = apply_coll(ops, checked, state, interner)?;
            Some(interner.coll(next))
        }
    }
}

/// One operation on a collections object: a list, a set or a sorted set, named by its
/// sub-key (`l`, `s`, `z` in the simulator's workload). Each type has its own namespace of
/// names; a workload that used one name as two types would see `WRONGTYPE` from the store,
/// which the model does not know. Names, elements and members are [`Word`]s.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum CollOp {
    Push {
        list: Word,
        left: bool,
        element: Word,
    },
    Pop {
        list: Word,
        left: bool,
    },
    LRange {
        list: Word,
    },
    SAdd {
        set: Word,
        member: Word,
    },
    SRem {
        set: Word,
        member: Word,
    },
    SMembers {
        set: Word,
    },
    /// Scores are integers: the workload increments by integers, and an integer model can be
    /// ordered and hashed (an `f64` cannot), which the memo table needs.
    ZIncrBy {
        zset: Word,
        member: Word,
        delta: i64,
    },
    ZScore {
        zset: Word,
        member: Word,
    },
}

/// A collection's name, element or member, interned ([`Interner::coll_word`]).
type Word = u32;

impl CollOp {
    fn is_read(&self) -> bool {
        matches!(
            self,
            CollOp::LRange { .. } | CollOp::SMembers { .. } | CollOp::ZScore { .. }
        )
    }

    /// Parses `f` with its value (`[name, args...]`; see [`Function`]).
    fn parse(f: Function, value: &Value, interner: &mut Interner) -> Result<CollOp, String> {
        let items = match value {
            Value::List(items) => items.as_slice(),
            other => return Err(format!("{f} of {other}: not a list")),
        };
        let text = |i: usize| -> Result<&str, String> {
            match items.get(i) {
                Some(Value::Str(s)) => Ok(s.as_str()),
                other => Err(format!("{f} of {value}: argument {i} is {other:?}")),
            }
        };
        let side = |i: usize| -> Result<bool, String> {
            match text(i)? {
                "l" => Ok(true),
                "r" => Ok(false),
                other => Err(format!("{f} of {value}: side {other:?} is not l or r")),
            }
        };
        let arity = match f {
            Function::Push | Function::ZIncrBy => 3,
            Function::Pop | Function::SAdd | Function::SRem | Function::ZScore => 2,
            _ => 1,
        };
        if items.len() != arity {
            return Err(format!("{f} of {value}: {arity} arguments expected"));
        }
        let mut word = |i: usize| -> Result<Word, String> { interner.coll_word(text(i)?) };
        Ok(match f {
            Function::Push => CollOp::Push {
                list: word(0)?,
                left: side(1)?,
                element: word(2)?,
            },
            Function::Pop => CollOp::Pop {
                list: word(0)?,
                left: side(1)?,
            },
            Function::LRange => CollOp::LRange { list: word(0)? },
            Function::SAdd => CollOp::SAdd {
                set: word(0)?,
                member: word(1)?,
            },
            Function::SRem => CollOp::SRem {
                set: word(0)?,
                member: word(1)?,
            },
            Function::SMembers => CollOp::SMembers { set: word(0)? },
            Function::ZIncrBy => CollOp::ZIncrBy {
                zset: word(0)?,
                member: word(1)?,
                delta: items[2]
                    .as_int()
                    .ok_or_else(|| format!("{f} of {value}: delta is not an integer"))?,
            },
            Function::ZScore => CollOp::ZScore {
                zset: word(0)?,
                member: word(1)?,
            },
            f => return Err(format!("{f} is not a collection operation")),
        })
    }

    /// The reply the store gave, as the model states it: strings as [`Word`]s, a set's
    /// members sorted (the store may list them in any order, and a set is compared as a
    /// set). A reply of a shape the operation never gives is [`CollReply::Impossible`]: no
    /// state's reply equals it.
    fn reply(&self, reply: &Value, interner: &mut Interner) -> CollReply {
        // A string no operation wrote gets a word of its own, which no state holds.
        let mut word = |value: &Value| match value {
            Value::Str(text) => interner.coll_word(text).ok(),
            _ => None,
        };
        let mut words =
            |values: &[Value]| values.iter().map(&mut word).collect::<Option<Vec<Word>>>();
        let answer = match (self, reply) {
            (
                CollOp::Push { .. }
                | CollOp::SAdd { .. }
                | CollOp::SRem { .. }
                | CollOp::ZIncrBy { .. }
                | CollOp::ZScore { .. },
                Value::Int(n),
            ) => Some(CollReply::Int(*n)),
            (CollOp::Pop { .. } | CollOp::ZScore { .. }, Value::Null) => Some(CollReply::Nil),
            (CollOp::Pop { .. }, value) => word(value).map(CollReply::Word),
            (CollOp::LRange { .. }, Value::List(elements)) => words(elements).map(CollReply::Words),
            (CollOp::SMembers { .. }, Value::List(members)) => words(members).map(|mut members| {
                members.sort_unstable();
                CollReply::Words(members)
            }),
            _ => None,
        };
        answer.unwrap_or(CollReply::Impossible)
    }
}

/// A collection operation's reply as the model compares it ([`CollOp::reply`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum CollReply {
    Int(i64),
    Nil,
    Word(Word),
    /// A list's elements in order, or a set's members sorted.
    Words(Vec<Word>),
    /// Matches no reply of the model.
    Impossible,
}

/// Compiled operations of one `txn` (or one operation alone), with their expected replies
/// (empty when indeterminate).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CollTxn {
    ops: Vec<CollOp>,
    replies: Vec<CollReply>,
}

/// A collections object's state: its non-empty lists, sets and sorted sets by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct CollState {
    lists: BTreeMap<Word, VecDeque<Word>>,
    sets: BTreeMap<Word, BTreeSet<Word>>,
    zsets: BTreeMap<Word, BTreeMap<Word, i64>>,
}

impl CollState {
    /// Heap bytes, roughly (a B-tree's entry costs about twice its key and value).
    fn bytes(&self) -> usize {
        let word = std::mem::size_of::<Word>();
        self.lists
            .values()
            .map(|l| 64 + l.capacity() * word)
            .sum::<usize>()
            + self
                .sets
                .values()
                .map(|s| 64 + s.len() * 2 * word)
                .sum::<usize>()
            + self
                .zsets
                .values()
                .map(|z| 64 + z.len() * 2 * (word + 8))
                .sum::<usize>()
            + 96
    }

    /// Applies `op` as Redis does; `false` when `expected` is given and the reply Redis would
    /// give differs from it.
    fn apply(&mut self, op: &CollOp, expected: Option<&CollReply>) -> bool {
        let int = |n: i64| expected.is_none_or(|e| *e == CollReply::Int(n));
        match op {
            CollOp::Push {
                list,
                left,
                element,
            } => {
                let items = self.lists.entry(*list).or_default();
                if *left {
                    items.push_front(*element);
                } else {
                    items.push_back(*element);
                }
                int(items.len() as i64)
            }
            CollOp::Pop { list, left } => {
                let mut popped = None;
                if let Some(items) = self.lists.get_mut(list) {
                    popped = if *left {
                        items.pop_front()
                    } else {
                        items.pop_back()
                    };
                    if items.is_empty() {
                        self.lists.remove(list);
                    }
                }
                expected.is_none_or(|e| match popped {
                    Some(element) => *e == CollReply::Word(element),
                    None => *e == CollReply::Nil,
                })
            }
            CollOp::LRange { .. } | CollOp::SMembers { .. } | CollOp::ZScore { .. } => {
                expected.is_none_or(|e| self.read(op, e))
            }
            CollOp::SAdd { set, member } => {
                int(self.sets.entry(*set).or_default().insert(*member) as i64)
            }
            CollOp::SRem { set, member } => {
                let Some(members) = self.sets.get_mut(set) else {
                    return int(0);
                };
                let removed = members.remove(member);
                if members.is_empty() {
                    self.sets.remove(set);
                }
                int(removed as i64)
            }
            CollOp::ZIncrBy {
                zset,
                member,
                delta,
            } => {
                let score = self
                    .zsets
                    .entry(*zset)
                    .or_default()
                    .entry(*member)
                    .or_default();
                *score = score.wrapping_add(*delta);
                int(*score)
            }
        }
    }

    /// Whether read `op` answers `expected` on this state (any other operation: `false`).
    fn read(&self, op: &CollOp, expected: &CollReply) -> bool {
        match (op, expected) {
            (CollOp::LRange { list }, CollReply::Words(words)) => {
                let items = self.lists.get(list);
                words.len() == items.map_or(0, VecDeque::len)
                    && items.into_iter().flatten().eq(words.iter())
            }
            (CollOp::SMembers { set }, CollReply::Words(words)) => {
                let members = self.sets.get(set);
                words.len() == members.map_or(0, BTreeSet::len)
                    && members.into_iter().flatten().eq(words.iter())
            }
            (CollOp::ZScore { zset, member }, expected) => {
                match self.zsets.get(zset).and_then(|scores| scores.get(member)) {
                    Some(score) => *expected == CollReply::Int(*score),
                    None => *expected == CollReply::Nil,
                }
            }
            _ => false,
        }
    }
}

/// A collections object's operation as a step (`definite`: it completed `ok`); `None` for a
/// read that never answered.
fn compile_coll(
    op: &Operation,
    definite: bool,
    interner: &mut Interner,
) -> Result<Option<Step>, String> {
    let in_op = |e: String| format!("collections model: {e} in {op}");
    let ops: Vec<CollOp> = if op.f == Function::Txn {
        let Value::List(subs) = &op.value else {
            return Err(in_op(format!("a txn of {}", op.value)));
        };
        subs.iter()
            .map(|sub| match sub {
                Value::List(items) => match items.split_first() {
                    Some((Value::Str(name), args)) => {
                        let f = Function::from_name(name)
                            .filter(|f| f.is_collection() && *f != Function::Txn)
                            .ok_or_else(|| format!("no sub-operation {name:?}"))?;
                        CollOp::parse(f, &Value::List(args.to_vec()), interner)
                    }
                    _ => Err(format!("sub-operation {sub} has no name")),
                },
                other => Err(format!("sub-operation {other} is not a list")),
            })
            .collect::<Result<_, _>>()
            .map_err(in_op)?
    } else {
        vec![CollOp::parse(op.f, &op.value, interner).map_err(in_op)?]
    };
    let read = ops.iter().all(CollOp::is_read);
    if read && !definite {
        return Ok(None);
    }
    let replies = if !definite {
        Vec::new()
    } else if op.f == Function::Txn {
        match &op.output {
            Value::List(replies) if replies.len() == ops.len() => ops
                .iter()
                .zip(replies)
                .map(|(sub, reply)| sub.reply(reply, interner))
                .collect(),
            other => {
                return Err(in_op(format!("{other} is not {} replies", ops.len())));
            }
        }
    } else {
        vec![ops[0].reply(&op.output, interner)]
    };
    let index = u32::try_from(interner.coll_txns.len())
        .map_err(|_| in_op("too many collection operations".into()))?;
    interner.coll_txns.push(CollTxn { ops, replies });
    Ok(Some(if read {
        Step::CollRead(index)
    } else {
        Step::CollUpdate {
            ops: index,
            checked: definite,
        }
    }))
}

/// The collections model's transition: every operation of the transaction `ops` in turn on
/// one state, so nothing sees it half applied. `None` when `checked` and a reply differs
/// from the model's.
fn apply_coll(ops: u32, checked: bool, state: u64, interner: &Interner) -> Option<CollState> {
    let txn = &interner.coll_txns[ops as usize];
    let mut next = CollState::clone(&interner.coll_states[state as usize]);
    for (position, op) in txn.ops.iter().enumerate() {
        let expected = if checked {
            Some(txn.replies.get(position)?)
        } else {
            None
        };
        if !next.apply(op, expected) {
            return None;
        }
    }
    Some(next)
}

/// One part of a collections object: a list, a set or a sorted set, by name. Parts change
/// and answer independently; only a transaction touching several joins them
/// ([`super::parts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CollPart {
    List(Word),
    Set(Word),
    ZSet(Word),
}

impl CollOp {
    fn part(&self) -> CollPart {
        match self {
            CollOp::Push { list, .. } | CollOp::Pop { list, .. } | CollOp::LRange { list } => {
                CollPart::List(*list)
            }
            CollOp::SAdd { set, .. } | CollOp::SRem { set, .. } | CollOp::SMembers { set } => {
                CollPart::Set(*set)
            }
            CollOp::ZIncrBy { zset, .. } | CollOp::ZScore { zset, .. } => CollPart::ZSet(*zset),
        }
    }

    /// The one member of its collection the operation reads or changes, or `None` when it
    /// may touch the whole collection (`SMEMBERS`; every list operation, as a push or pop
    /// moves every index and a push answers the length).
    fn member(&self) -> Option<Word> {
        match self {
            CollOp::SAdd { member, .. }
            | CollOp::SRem { member, .. }
            | CollOp::ZIncrBy { member, .. }
            | CollOp::ZScore { member, .. } => Some(*member),
            CollOp::Push { .. }
            | CollOp::Pop { .. }
            | CollOp::LRange { .. }
            | CollOp::SMembers { .. } => None,
        }
    }

    /// Whether `self`, run unchecked (an operation of an indeterminate transaction: its reply
    /// is never compared), may fail to commute with `other` (its reply compared when
    /// `checked`): run in either order from some state, they may reach different states or
    /// `other` may answer differently. `false` only when they surely commute: an unchecked
    /// read does nothing; they touch different collections or different members; or both
    /// are unchecked and alike where order does not matter (two increments of one score, two
    /// adds or two removes of one member).
    fn may_conflict(&self, other: &CollOp, checked: bool) -> bool {
        if self.is_read() || (other.is_read() && !checked) || self.part() != other.part() {
            return false;
        }
        if let (Some(a), Some(b)) = (self.member(), other.member())
            && a != b
        {
            return false;
        }
        let alike = matches!(
            (self, other),
            (CollOp::ZIncrBy { .. }, CollOp::ZIncrBy { .. })
                | (CollOp::SAdd { .. }, CollOp::SAdd { .. })
                | (CollOp::SRem { .. }, CollOp::SRem { .. })
        );
        checked || !alike
    }
}

/// Whether the indeterminate collections update `x` (a [`Step::CollUpdate`], unchecked) may
/// fail to commute with the operation `z` ([`CollOp::may_conflict`] over every pair of their
/// sub-operations; if each pair commutes, so do the two transactions). `true` for anything
/// else (steps of other models, a checked `x`): nothing is known to commute there.
pub(super) fn coll_may_conflict(x: Step, z: Step, interner: &Interner) -> bool {
    let Step::CollUpdate {
        ops: x,
        checked: false,
    } = x
    else {
        return true;
    };
    let (z, checked) = match z {
        Step::CollRead(z) => (z, true),
        Step::CollUpdate { ops, checked } => (ops, checked),
        _ => return true,
    };
    let (x, z) = (
        &interner.coll_txns[x as usize],
        &interner.coll_txns[z as usize],
    );
    x.ops
        .iter()
        .any(|a| z.ops.iter().any(|b| a.may_conflict(b, checked)))
}

impl CollState {
    /// The state of `part` alone (every other part empty).
    fn project(&self, part: CollPart) -> CollState {
        let mut alone = CollState::default();
        match part {
            CollPart::List(name) => {
                if let Some(items) = self.lists.get(&name) {
                    alone.lists.insert(name, items.clone());
                }
            }
            CollPart::Set(name) => {
                if let Some(members) = self.sets.get(&name) {
                    alone.sets.insert(name, members.clone());
                }
            }
            CollPart::ZSet(name) => {
                if let Some(scores) = self.zsets.get(&name) {
                    alone.zsets.insert(name, scores.clone());
                }
            }
        }
        alone
    }
}

/// A collections key's operations projected on one of its parts: each operation cut to its
/// sub-operations on the part (with their replies), those with none left out, and an
/// indeterminate one that only reads the part left out too (it constrains nothing there).
/// States are the part's alone, interned in an interner of its own.
pub(super) struct PartOps {
    part: CollPart,
    pub(super) ops: Vec<COp>,
    /// Per projected operation: its index in the key's compiled operations.
    pub(super) whole: Vec<usize>,
    pub(super) interner: Interner,
    pub(super) initial: u64,
}

impl PartOps {
    /// What kind of collection the part is, for reports.
    pub(super) fn kind(&self) -> &'static str {
        match self.part {
            CollPart::List(_) => "list",
            CollPart::Set(_) => "set",
            CollPart::ZSet(_) => "sorted set",
        }
    }

    /// The id, in this part's interner, of the whole object's state `state` seen on the
    /// part alone.
    pub(super) fn project(&mut self, whole: &Interner, state: u64) -> u64 {
        let alone = whole.coll_states[state as usize].project(self.part);
        self.interner.coll(alone)
    }
}

/// The parts of a collections key's operations ([`PartOps`]), when it has two or more
/// (otherwise none: the one part is the whole).
pub(super) fn coll_parts(ops: &[COp], initial: u64, interner: &Interner) -> Vec<PartOps> {
    let mut parts: BTreeMap<CollPart, PartOps> = BTreeMap::new();
    let mut canonical: BTreeMap<CollPart, BTreeMap<CollTxn, u32>> = BTreeMap::new();
    for (index, op) in ops.iter().enumerate() {
        let txn = match op.step {
            Step::CollRead(txn) | Step::CollUpdate { ops: txn, .. } => {
                &interner.coll_txns[txn as usize]
            }
            _ => return Vec::new(),
        };
        let mut cut: BTreeMap<CollPart, CollTxn> = BTreeMap::new();
        for (position, sub) in txn.ops.iter().enumerate() {
            let part = cut.entry(sub.part()).or_insert_with(|| CollTxn {
                ops: Vec::new(),
                replies: Vec::new(),
            });
            part.ops.push(sub.clone());
            if let Some(reply) = txn.replies.get(position) {
                part.replies.push(reply.clone());
            }
        }
        for (part, txn) in cut {
            let read = txn.ops.iter().all(CollOp::is_read);
            if read && !op.definite {
                continue;
            }
            let projected = parts.entry(part).or_insert_with(|| {
                let mut interner = Interner::default();
                let initial = interner.coll(CollState::default());
                PartOps {
                    part,
                    ops: Vec::new(),
                    whole: Vec::new(),
                    interner,
                    initial,
                }
            });
            let txn_index = share_txn(
                &mut projected.interner.coll_txns,
                canonical.entry(part).or_default(),
                txn,
            );
            let step = if read {
                Step::CollRead(txn_index)
            } else {
                Step::CollUpdate {
                    ops: txn_index,
                    checked: op.definite,
                }
            };
            projected.ops.push(COp { step, ..*op });
            projected.whole.push(index);
        }
    }
    if parts.len() < 2 {
        return Vec::new();
    }
    let mut parts: Vec<PartOps> = parts.into_values().collect();
    for part in &mut parts {
        part.initial = part.project(interner, initial);
    }
    parts
}

/// A lock object's operation as a step (`definite`: it completed `ok`).
fn compile_lock(op: &Operation, definite: bool, interner: &mut Interner) -> Result<Step, String> {
    let token = |value: &Value| -> Result<i64, String> {
        value
            .as_int()
            .ok_or_else(|| format!("lock model: a token of {value} in {op}"))
    };
    Ok(match op.f {
        Function::LockAcquire => {
            let holder = match &op.value {
                Value::List(parts) if parts.len() == 2 => interner.id(&parts[0]),
                other => return Err(format!("lock model: acquire of {other} in {op}")),
            };
            Step::LockAcquire {
                holder,
                token: match (&op.output, definite) {
                    (_, false) | (Value::Null, true) => None,
                    (other, true) => Some(token(other)?),
                },
                definite,
            }
        }
        Function::LockRelease => Step::LockRelease {
            token: token(&op.value)?,
            released: match (&op.output, definite) {
                (_, false) => None,
                (Value::Int(n @ (0 | 1)), true) => Some(*n == 1),
                (other, true) => {
                    return Err(format!("lock model: release answered {other} in {op}"));
                }
            },
        },
        Function::FencedIncr => Step::FencedIncr {
            token: token(&op.value)?,
            answer: match (&op.output, definite) {
                (_, false) => None,
                (Value::Null, true) => Some(None),
                (Value::Int(n), true) => Some(Some(*n)),
                (other, true) => {
                    return Err(format!(
                        "lock model: a fenced increment answered {other} in {op}"
                    ));
                }
            },
        },
        f => return Err(format!("the lock model has no {f} (operation {op})")),
    })
}

/// The lock model's transition ([`LockState`]): `None` when the step cannot happen.
fn apply_lock(step: Step, state: LockState, _interner: &Interner) -> Option<LockState> {
    let LockState {
        holding,
        last_token,
        count,
    } = state;
    let with = |holding: Holding| LockState { holding, ..state };
    // A token granted anew: larger than every token shown before.
    let granted = |holder: u64, token: i64| {
        (token > last_token).then_some(LockState {
            holding: Holding::By(holder, token),
            last_token: token,
            count,
        })
    };
    match step {
        Step::LockAcquire {
            holder,
            token,
            definite,
        } => match (holding, token, definite) {
            // Never answered: if it took effect, the lock is now the holder's, with a token
            // no answer has shown (its previous one, extended, or a new one).
            (_, _, false) => Some(with(Holding::ByUnknown(holder))),
            // Nil only while another holds it.
            (Holding::By(other, _) | Holding::ByUnknown(other), None, true) if other != holder => {
                Some(state)
            }
            (_, None, true) => None,
            // The holder's own acquisition extends its lease and keeps its token, unless the
            // lease had ended (then it is a new grant).
            (Holding::By(same, held), Some(token), true) if same == holder && token == held => {
                Some(state)
            }
            // The unknown token may be any: the holder's earlier one or one granted then.
            (Holding::ByUnknown(same), Some(token), true) if same == holder => Some(LockState {
                holding: Holding::By(holder, token),
                last_token: last_token.max(token),
                count,
            }),
            // Free, or another's lease ended: a new grant.
            (_, Some(token), true) => granted(holder, token),
        },
        Step::LockRelease { token, released } => match (holding, released) {
            (Holding::By(_, held), Some(true)) if held == token => Some(with(Holding::Free)),
            (Holding::ByUnknown(_), Some(true)) => Some(with(Holding::Free)),
            (_, Some(true)) => None,
            // Refused while held with this token: its lease had ended.
            (Holding::By(_, held), Some(false) | None) if held == token => {
                Some(with(Holding::Free))
            }
            (_, Some(false) | None) => Some(state),
        },
        Step::FencedIncr { token, answer } => {
            let current = match holding {
                Holding::By(_, held) => held == token,
                Holding::ByUnknown(_) => true,
                Holding::Free => false,
            };
            match answer {
                Some(Some(n)) => {
                    // It ran: the lock was held with this token, and the counter moved by one.
                    if !current || n != count + 1 {
                        return None;
                    }
                    let holding = match holding {
                        Holding::ByUnknown(holder) => Holding::By(holder, token),
                        other => other,
                    };
                    Some(LockState {
                        holding,
                        last_token: last_token.max(token),
                        count: n,
                    })
                }
                // Refused while held with this token: its lease had ended.
                Some(None) => match holding {
                    Holding::By(_, held) if held == token => Some(with(Holding::Free)),
                    _ => Some(state),
                },
                // Never answered: if it took effect it ran, which needs the current token.
                None => current.then_some(LockState {
                    count: count + 1,
                    ..state
                }),
            }
        }
        _ => unreachable!("not a lock step: {step:?}"),
    }
}

#[cfg(test)]
mod interner_tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Str(s.into())
    }

    /// One string, one id: however appends built it, when a read, write or cas names it.
    #[test]
    fn a_string_is_one_state_however_it_was_built() {
        let mut interner = Interner::default();
        let null = interner.id(&Value::Null);
        let [a, b, ab, empty, read_aab, seven_text] =
            ["a", "b", "ab", "", "aab", "7"].map(|s| interner.id(&text(s)));
        let seven = interner.id(&Value::Int(7));
        let just_a = interner.append(null, a).unwrap();
        assert_eq!(just_a, a);
        let a_then_ab = interner.append(just_a, ab).unwrap();
        assert_eq!(a_then_ab, read_aab);
        let aa = interner.append(just_a, a).unwrap();
        let a_a_b = interner.append(aa, b).unwrap();
        assert_eq!(a_a_b, read_aab);
        // A string no operation names has its text, and an id of its own.
        let just_b = interner.append(null, b).unwrap();
        let b_b = interner.append(just_b, b).unwrap();
        assert_eq!(interner.text(b_b), "bb");
        assert!(interner.value(b_b).is_none());
        // Appending nothing to a missing key makes the empty string, a key: not `Null`.
        assert_eq!(interner.append(null, empty).unwrap(), empty);
        assert_ne!(empty, null);
        // A number appended to is its decimal text; the number is not that text.
        let seven_a = interner.append(seven, a).unwrap();
        assert_eq!(interner.text(seven_a), "7a");
        assert_ne!(seven_text, seven);
    }

    #[test]
    #[should_panic(expected = "interned after appends began")]
    fn a_string_interned_after_appends_began_is_refused() {
        let mut interner = Interner::default();
        let [null, a] = [Value::Null, text("a")].map(|v| interner.id(&v));
        interner.append(null, a).unwrap();
        interner.id(&text("aa"));
    }

    /// An appended state costs the same however long its text: 200 appends of 2 kB each hold
    /// 400 kB of text, which a whole-string state per prefix would hold 200 times over.
    #[test]
    fn appended_states_hold_no_text() {
        let mut interner = Interner::default();
        let mut state = interner.id(&Value::Null);
        let suffixes: Vec<u64> = (0..200)
            .map(|i| interner.id(&text(&format!("{i}{}", "x".repeat(2_000)))))
            .collect();
        let before = interner.bytes();
        for suffix in suffixes {
            state = interner.append(state, suffix).unwrap();
        }
        let per_state = (interner.bytes() - before) / 200;
        assert!(per_state < 512, "{per_state} bytes per appended state");
        assert_eq!(
            interner.text(state).len(),
            (0..200)
                .map(|i: u32| 2_000 + i.to_string().len())
                .sum::<usize>()
        );
    }

    /// On a key only appended to and read, a text that is neither a prefix of the longest
    /// read nor extends it is no state of any linearization: the append making it is cut off.
    #[test]
    fn appends_off_the_longest_read_are_cut_off() {
        let mut interner = Interner::default();
        let null = interner.id(&Value::Null);
        let [a, b, longest, b_c] = ["a,", "b,", "a,b,", "b,c,"].map(|s| interner.id(&text(s)));
        interner.append_bound = Some("a,b,".into());
        let just_a = interner.append(null, a).unwrap();
        assert_eq!(
            interner.append(null, b),
            None,
            "b, first is no prefix of a,b,"
        );
        // Jumping from a prefix past the longest read skips the state it saw.
        assert_eq!(interner.append(just_a, b_c), None);
        assert_eq!(interner.append(just_a, b), Some(longest));
        // Past the longest read anything goes: no read is left to constrain it.
        let past = interner.append(longest, a).unwrap();
        assert_eq!(interner.text(past), "a,b,a,");
        assert!(interner.append(past, b).is_some());
        // A cut-off append is remembered as such.
        assert_eq!(interner.append(null, b), None);
    }
}
