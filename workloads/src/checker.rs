//! Linearizability checking: Wing & Gong's search with Lowe's memoization, as in Porcupine
//! and knossos's `wgl` checker.
//!
//! # Method
//!
//! 1. **P-compositionality**: a history is linearizable iff every key's sub-history is, so
//!    operations are partitioned by key and each key is checked on its own. Keys are searched
//!    in rounds with a growing allowance of explored configurations (4096, then ×8 per
//!    round), smallest key first, so the keys that are cheap to decide are decided first and a
//!    failure is found early. Unless [`CheckConfig::check_all_keys`] is set, the first round
//!    that finds a non-linearizable key is the last: keys still undecided are reported
//!    `Unknown` (the history's verdict is already known). Verdicts are reported in key order.
//! 2. Per key, operations become *entries*: a call at the invocation time and a return at the
//!    completion time, sorted by time, calls before returns at equal times (equal times are
//!    concurrent). An indeterminate (`info`) operation returns at +∞.
//! 3. The search walks the entry list. At a call it tries to linearize that operation now:
//!    the model must accept it in the current state; it is then *lifted* out of the list (its
//!    call and return), pushed on a stack, and the walk restarts at the head. At a return
//!    whose operation is not yet linearized the current prefix cannot be extended: pop the
//!    last linearized operation, restore its state, put it back and try the next call after
//!    it. Operations are therefore only linearized when a pending return forces it
//!    (just-in-time linearization: only calls before the first unlinearized return are
//!    candidates).
//! 4. Memoization: a configuration is the set of linearized operations and the model state;
//!    a configuration seen before is never explored again (Lowe). The table is open
//!    addressing keyed by an incremental Zobrist hash of the set mixed with the state, and
//!    stores each set compactly: determinate operations numbered in return order are all
//!    linearized up to the first pending return, so only the words from there to the last
//!    linearized one are kept, plus a bitset of the indeterminate operations.
//! 5. Candidates are tried in three passes: reads (and failed compares), then other
//!    determinate operations, then indeterminate ones. A read legal in the current state is
//!    linearized without trying alternatives: it changes nothing and everything that must
//!    precede it already does, so if no extension starts with it, none exists at all.
//! 6. Indeterminate operations may take effect at any point after their invocation or never:
//!    never is the same as "at the very end", so once every determinate operation is
//!    linearized the key is linearizable, whatever indeterminate operations remain. `fail`
//!    operations had no effect and are dropped, as are indeterminate reads (no effect, no
//!    constraint) and indeterminate writes of a value no read returns and no cas compares
//!    with (see `drop_unobservable`).
//!
//! # Models
//!
//! - **register** (`read`, `write`, `cas`, `append`): a key starts as
//!   [`CheckConfig::initial`] (`null`: a read of a never-written key returns `null`). An
//!   indeterminate cas swaps if it meets its `from` value and does nothing otherwise.
//! - **counter** (`add`, `read`, `write`): starts at 0, a read returns the sum (`null` reads as
//!   0), a write sets an integer.
//!
//! [`Model::Auto`] picks the counter for keys that see an `add`, the register otherwise.
//!
//! # Budget
//!
//! The caller bounds the work with a [`Budget`]: a deadline callback (polled every 1024
//! search steps), a maximum number of explored configurations, and/or a maximum size of one
//! key's memo table. A key whose search runs
//! out is `Unknown`, never a guessed verdict; keys not reached are `Unknown` too. A key found
//! not linearizable is a proof whatever happens to the budget afterwards, so the history's
//! verdict is `NotLinearizable` if any key is, else `Unknown` if any key is, else
//! `Linearizable`.
//!
//! For the failing key with the fewest operations the checker also looks for the longest
//! linearizable prefix (binary search over cuts of the history after each determinate
//! completion; bounded by a few times the work the key's search took), which names the
//! operation whose completion breaks linearizability and the smallest failing window.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{Function, History, HistoryError, Operation, Outcome, Value};

/// The sequential specification to check against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// Counter for keys that see an `add`, register otherwise.
    #[default]
    Auto,
    Register,
    Counter,
}

/// The model a key was checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Register,
    Counter,
}

/// What to check and how to read the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckConfig {
    pub model: Model,
    /// The value of a register key before any write (`null`; Porcupine's kv tests use `""`).
    pub initial: Value,
    /// A `fail`ed cas also observed that the value was not its `from` at some point during
    /// the call (Jepsen's etcd tests record a failed compare so). Off: a failed cas is only
    /// known to have had no effect, and is dropped like any failed operation.
    pub fail_cas_observes_mismatch: bool,
    /// Decide every key even after one is found not linearizable. Off: keys still undecided
    /// when the first failure is found are left `Unknown` (the history's verdict is known).
    #[serde(default)]
    pub check_all_keys: bool,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            model: Model::Auto,
            initial: Value::Null,
            fail_cas_observes_mismatch: false,
            check_all_keys: false,
        }
    }
}

/// A bound on the checker's work. A check that exceeds it answers `Unknown`.
#[derive(Default)]
pub struct Budget {
    expired: Option<Box<dyn Fn() -> bool + Send + Sync>>,
    states_max: Option<u64>,
    memory_max: Option<usize>,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("deadline", &self.expired.is_some())
            .field("states_max", &self.states_max)
            .field("memory_max", &self.memory_max)
            .finish()
    }
}

impl Budget {
    /// No bound.
    pub fn unlimited() -> Self {
        Budget::default()
    }

    /// Stop when `expired()` returns true (polled every 1024 search steps). The caller owns
    /// the clock, so simulated code can pass a simulated deadline.
    pub fn deadline(expired: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Budget {
            expired: Some(Box::new(expired)),
            ..Budget::default()
        }
    }

    /// Stop at a real-time instant.
    // The checker is offline tooling, not simulated code: a wall-clock deadline is what a
    // user of `larder check` asks for.
    #[allow(clippy::disallowed_methods)]
    pub fn until(deadline: std::time::Instant) -> Self {
        Budget::deadline(move || std::time::Instant::now() >= deadline)
    }

    /// Also stop after exploring `states` configurations in total (deterministic).
    pub fn with_states_max(mut self, states: u64) -> Self {
        self.states_max = Some(states);
        self
    }

    /// Also stop when one key's memo table grows past `bytes` (it holds a bitset of the
    /// key's operations per explored configuration, so a long, contended key can take
    /// gigabytes).
    pub fn with_memory_max(mut self, bytes: usize) -> Self {
        self.memory_max = Some(bytes);
        self
    }
}

/// The verdict on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum KeyVerdict {
    Linearizable,
    NotLinearizable,
    Unknown { reason: String },
}

/// One key's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReport {
    pub key: String,
    pub model: ModelKind,
    /// Operations of the key in the history (including failed ones).
    pub operations: usize,
    pub verdict: KeyVerdict,
    /// Configurations explored for this key.
    pub states: u64,
}

/// The longest linearizable prefix of a failing key's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearizablePrefix {
    /// Determinate completions, in time order, that the prefix contains: the history cut
    /// just after the `completions`-th completion is linearizable (operations still running
    /// at the cut count as indeterminate).
    pub completions: usize,
    /// A linearization of that prefix: operation ids in order.
    pub linearization: Vec<usize>,
    /// The operation whose completion makes the history non-linearizable.
    pub culprit: Operation,
}

/// The verdict on a whole history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Verdict {
    Linearizable,
    NotLinearizable {
        /// The failing key with the fewest operations.
        key: String,
        /// A non-linearizable sub-history of that key: its operations invoked before the
        /// culprit's completion (all its operations when the prefix search ran out of
        /// budget).
        ops: Vec<Operation>,
        longest_linearizable_prefix: Option<Box<LinearizablePrefix>>,
    },
    Unknown {
        reason: String,
    },
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    /// Per-key verdicts, in key order.
    pub keys: Vec<KeyReport>,
    pub operations: usize,
    /// Configurations explored in total.
    pub states: u64,
}

impl Report {
    pub fn is_linearizable(&self) -> bool {
        matches!(self.verdict, Verdict::Linearizable)
    }

    pub fn is_not_linearizable(&self) -> bool {
        matches!(self.verdict, Verdict::NotLinearizable { .. })
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self.verdict, Verdict::Unknown { .. })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failing = self
            .keys
            .iter()
            .filter(|k| k.verdict == KeyVerdict::NotLinearizable)
            .count();
        let unknown = self
            .keys
            .iter()
            .filter(|k| matches!(k.verdict, KeyVerdict::Unknown { .. }))
            .count();
        let summary = format!(
            "{} operations, {} keys ({} not linearizable, {} unknown), {} states explored",
            self.operations,
            self.keys.len(),
            failing,
            unknown,
            self.states
        );
        match &self.verdict {
            Verdict::Linearizable => writeln!(f, "linearizable: {summary}"),
            Verdict::Unknown { reason } => writeln!(f, "unknown ({reason}): {summary}"),
            Verdict::NotLinearizable {
                key,
                ops,
                longest_linearizable_prefix,
            } => {
                writeln!(f, "NOT linearizable: {summary}")?;
                writeln!(
                    f,
                    "key {key:?}: {} operations in the failing window",
                    ops.len()
                )?;
                if let Some(prefix) = longest_linearizable_prefix {
                    writeln!(
                        f,
                        "linearizable up to {} completions; cannot linearize {}",
                        prefix.completions, prefix.culprit
                    )?;
                    let order: Vec<String> = prefix
                        .linearization
                        .iter()
                        .map(|id| format!("#{id}"))
                        .collect();
                    writeln!(f, "a linearization of that prefix: {}", order.join(" "))?;
                }
                for op in ops {
                    writeln!(f, "  {op}")?;
                }
                Ok(())
            }
        }
    }
}

/// Checks an event history.
pub fn check_history(
    history: &History,
    config: &CheckConfig,
    budget: &Budget,
) -> Result<Report, HistoryError> {
    Ok(check_operations(&history.operations()?, config, budget))
}

/// Checks paired operations (see [`History::operations`]).
pub fn check_operations(operations: &[Operation], config: &CheckConfig, budget: &Budget) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in operations {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let keys: Vec<(&str, Vec<&Operation>)> = by_key.into_iter().collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&i| (keys[i].1.len(), i));

    let mut meter = Meter {
        budget,
        states: 0,
        steps: 0,
        exhausted: false,
    };
    let kinds: Vec<ModelKind> = keys
        .iter()
        .map(|(_, ops)| model_kind(config.model, ops))
        .collect();
    let mut verdicts: Vec<Option<KeyVerdict>> = vec![None; keys.len()];
    let mut states = vec![0u64; keys.len()];
    let mut compiled: Vec<Option<Compiled>> = vec![None; keys.len()];
    for (i, (_, ops)) in keys.iter().enumerate() {
        match compile(kinds[i], ops, config) {
            Ok(c) => compiled[i] = Some(c),
            Err(reason) => verdicts[i] = Some(KeyVerdict::Unknown { reason }),
        }
    }

    // Rounds of growing per-key allowances: a key that is cheap to decide is decided early,
    // and unless every key must be decided, the first failure ends the check before a hard
    // key's search runs on (a restarted search repeats at most 1/7 of the total work).
    let mut failing: Vec<usize> = Vec::new();
    let mut undecided: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| verdicts[i].is_none())
        .collect();
    let mut allowance: u64 = ALLOWANCE_FIRST;
    while !undecided.is_empty() {
        let mut capped = Vec::new();
        for &i in &undecided {
            if meter.exhausted {
                verdicts[i] = Some(KeyVerdict::Unknown {
                    reason: "budget exhausted before this key was decided".into(),
                });
                continue;
            }
            let c = compiled[i].as_mut().expect("compiled");
            let before = meter.states;
            let outcome = search(&c.ops, c.initial, &mut c.interner, &mut meter, allowance);
            states[i] += meter.states - before;
            verdicts[i] = match outcome {
                Search::Linearizable(_) => Some(KeyVerdict::Linearizable),
                Search::NotLinearizable => {
                    failing.push(i);
                    Some(KeyVerdict::NotLinearizable)
                }
                Search::Unknown(reason) => Some(KeyVerdict::Unknown { reason }),
                Search::Capped => {
                    capped.push(i);
                    None
                }
            };
        }
        if let Some(&first) = failing.first()
            && !config.check_all_keys
        {
            for &i in &capped {
                verdicts[i] = Some(KeyVerdict::Unknown {
                    reason: format!(
                        "not decided: the check stopped once key {:?} was found not \
                         linearizable (see CheckConfig::check_all_keys)",
                        keys[first].0
                    ),
                });
            }
            break;
        }
        undecided = capped;
        allowance = allowance.saturating_mul(8);
    }
    let mut reports: Vec<KeyReport> = keys
        .iter()
        .enumerate()
        .map(|(i, (key, ops))| KeyReport {
            key: key.to_string(),
            model: kinds[i],
            operations: ops.len(),
            verdict: verdicts[i].take().expect("every key has a verdict"),
            states: states[i],
        })
        .collect();

    let verdict = if let Some(&i) = failing.iter().min_by_key(|&&i| (keys[i].1.len(), i)) {
        let (key, ops) = &keys[i];
        let compiled = compiled[i].as_ref().expect("compiled");
        let before = meter.states;
        // The cuts are no bigger than the history that failed: allow a few times its work.
        let cap = reports[i].states.saturating_mul(4).max(ALLOWANCE_FIRST);
        let prefix = longest_prefix(compiled, &mut meter, cap);
        reports[i].states += meter.states - before;
        let (window, prefix) = match prefix {
            Some((completions, linearization, culprit, cut_ns)) => {
                let window: Vec<Operation> = ops
                    .iter()
                    .filter(|op| op.invoke_ns <= cut_ns)
                    .map(|op| (*op).clone())
                    .collect();
                let prefix = LinearizablePrefix {
                    completions,
                    linearization: linearization.iter().map(|&j| ops[j].id).collect(),
                    culprit: ops[culprit].clone(),
                };
                (window, Some(Box::new(prefix)))
            }
            None => (ops.iter().map(|op| (*op).clone()).collect(), None),
        };
        Verdict::NotLinearizable {
            key: key.to_string(),
            ops: window,
            longest_linearizable_prefix: prefix,
        }
    } else if let Some(unknown) = reports.iter().find_map(|r| match &r.verdict {
        KeyVerdict::Unknown { reason } => Some(format!("key {:?}: {reason}", r.key)),
        _ => None,
    }) {
        Verdict::Unknown { reason: unknown }
    } else {
        Verdict::Linearizable
    };

    Report {
        verdict,
        keys: reports,
        operations: operations.len(),
        states: meter.states,
    }
}

fn model_kind(model: Model, ops: &[&Operation]) -> ModelKind {
    match model {
        Model::Register => ModelKind::Register,
        Model::Counter => ModelKind::Counter,
        Model::Auto if ops.iter().any(|op| op.f == Function::Add) => ModelKind::Counter,
        Model::Auto => ModelKind::Register,
    }
}

// ---------------------------------------------------------------------------------------
// Compilation of a key's operations into model steps over integer states.

/// A model transition over an integer state: an interned value id for the register, the
/// count (as `i64` bits) for the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
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
}

/// One operation of a key, ready for the search.
#[derive(Debug, Clone, Copy)]
struct COp {
    /// Position in the key's operation list.
    op: usize,
    call: u64,
    /// `u64::MAX` for an indeterminate operation.
    ret: u64,
    step: Step,
    /// Must be linearized (an `ok`, or a failed compare).
    definite: bool,
}

/// Register values as integers.
#[derive(Debug, Clone, Default)]
struct Interner {
    ids: BTreeMap<Value, u64>,
    values: Vec<Value>,
    appended: BTreeMap<(u64, u64), u64>,
}

impl Interner {
    fn id(&mut self, value: &Value) -> u64 {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.values.len() as u64;
        self.ids.insert(value.clone(), id);
        self.values.push(value.clone());
        id
    }

    fn append(&mut self, state: u64, suffix: u64) -> u64 {
        if let Some(&id) = self.appended.get(&(state, suffix)) {
            return id;
        }
        let mut text = match &self.values[state as usize] {
            Value::Null => String::new(),
            Value::Str(s) => s.clone(),
            other => other.to_string(),
        };
        match &self.values[suffix as usize] {
            Value::Str(s) => text.push_str(s),
            Value::Null => {}
            other => text.push_str(&other.to_string()),
        }
        let id = self.id(&Value::Str(text));
        self.appended.insert((state, suffix), id);
        id
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    ops: Vec<COp>,
    initial: u64,
    interner: Interner,
}

fn compile(kind: ModelKind, ops: &[&Operation], config: &CheckConfig) -> Result<Compiled, String> {
    let mut interner = Interner::default();
    let initial = match kind {
        ModelKind::Register => interner.id(&config.initial),
        ModelKind::Counter => 0,
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
            (_, Function::Read) if !definite => continue,
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
        drop_unobservable(&mut compiled);
    }
    Ok(Compiled {
        ops: compiled,
        initial,
        interner,
    })
}

/// Drops indeterminate writes (and indeterminate cas) whose value nothing observes: no read
/// returns it and no cas compares with it. Such an operation may as well never have
/// happened: in a linearization that includes it, the operations up to the next write see
/// its value, so none of them is a read or a successful cas (they would observe it), and an
/// indeterminate cas among them did nothing (its `from` differs) and can be dropped with it.
/// Not applied when the key has appends (they build on the value) or failed compares (they
/// observe that the value is *not* something).
fn drop_unobservable(ops: &mut Vec<COp>) {
    if ops
        .iter()
        .any(|op| matches!(op.step, Step::Append(_) | Step::CasMismatch { .. }))
    {
        return;
    }
    let mut observed = std::collections::BTreeSet::new();
    for op in ops.iter() {
        match op.step {
            Step::Read(v) => {
                observed.insert(v);
            }
            Step::Cas { from, .. } | Step::CasMaybe { from, .. } => {
                observed.insert(from);
            }
            _ => {}
        }
    }
    ops.retain(|op| match op.step {
        Step::Write(v) if !op.definite => observed.contains(&v),
        Step::CasMaybe { to, .. } => observed.contains(&to),
        _ => true,
    });
}

fn apply(step: Step, state: u64, interner: &mut Interner) -> Option<u64> {
    match step {
        Step::Read(v) => (state == v).then_some(state),
        Step::Write(v) => Some(v),
        Step::Cas { from, to } => (state == from).then_some(to),
        Step::CasMaybe { from, to } => Some(if state == from { to } else { state }),
        Step::CasMismatch { from } => (state != from).then_some(state),
        Step::Append(suffix) => Some(interner.append(state, suffix)),
        Step::Add(delta) => Some((state as i64).wrapping_add(delta) as u64),
        Step::CounterRead(n) => (state as i64 == n).then_some(state),
    }
}

// ---------------------------------------------------------------------------------------
// The search.

struct Meter<'a> {
    budget: &'a Budget,
    states: u64,
    steps: u64,
    exhausted: bool,
}

impl Meter<'_> {
    /// Counts a search step; true when the budget is exhausted.
    fn step(&mut self) -> bool {
        self.steps += 1;
        if self.steps & 0x3ff == 0
            && let Some(expired) = &self.budget.expired
            && expired()
        {
            self.exhausted = true;
        }
        if let Some(max) = self.budget.states_max
            && self.states >= max
        {
            self.exhausted = true;
        }
        self.exhausted
    }
}

enum Search {
    /// A linearization: positions in the key's operation list, in order.
    Linearizable(Vec<usize>),
    NotLinearizable,
    /// The budget ran out.
    Unknown(String),
    /// The per-search allowance ran out.
    Capped,
}

/// Configurations each key may explore in the first round.
const ALLOWANCE_FIRST: u64 = 4096;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The set of linearized operations of a search, with a compact canonical encoding for the
/// memo table. Determinate operations are numbered in return order: every one returning
/// before the first pending return is linearized, so their bitset is all ones up to a word
/// `lo` and all zeros after a word `hi`; only the words in between are stored. Indeterminate
/// operations (pending forever) get a bitset of their own, stored whole.
struct Linearized {
    /// Per operation: (determinate, bit position in its bitset).
    position: Vec<(bool, u32)>,
    det: Vec<u64>,
    det_len: usize,
    info: Vec<u64>,
    /// First determinate word that is not full.
    lo: usize,
    /// One past the last non-zero determinate word.
    hi: usize,
    /// Scratch for the encoding.
    key: Vec<u64>,
}

impl Linearized {
    fn new(ops: &[COp]) -> Self {
        let mut det: Vec<(u64, usize)> = Vec::new();
        let mut info: Vec<(u64, usize)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if op.definite {
                det.push((op.ret, i));
            } else {
                info.push((op.call, i));
            }
        }
        det.sort_unstable();
        info.sort_unstable();
        let mut position = vec![(false, 0u32); ops.len()];
        for (k, &(_, i)) in det.iter().enumerate() {
            position[i] = (true, k as u32);
        }
        for (k, &(_, i)) in info.iter().enumerate() {
            position[i] = (false, k as u32);
        }
        Linearized {
            position,
            det: vec![0; det.len().div_ceil(64)],
            det_len: det.len(),
            info: vec![0; info.len().div_ceil(64)],
            lo: 0,
            hi: 0,
            key: Vec::new(),
        }
    }

    fn full(&self, word: usize) -> u64 {
        let tail = self.det_len % 64;
        if word + 1 == self.det.len() && tail != 0 {
            (1u64 << tail) - 1
        } else {
            u64::MAX
        }
    }

    fn set(&mut self, op: usize) {
        let (definite, k) = self.position[op];
        let (word, bit) = (k as usize / 64, k % 64);
        if !definite {
            self.info[word] |= 1 << bit;
            return;
        }
        self.det[word] |= 1 << bit;
        self.hi = self.hi.max(word + 1);
        while self.lo < self.det.len() && self.det[self.lo] == self.full(self.lo) {
            self.lo += 1;
        }
    }

    fn clear(&mut self, op: usize) {
        let (definite, k) = self.position[op];
        let (word, bit) = (k as usize / 64, k % 64);
        if !definite {
            self.info[word] &= !(1 << bit);
            return;
        }
        self.det[word] &= !(1 << bit);
        self.lo = self.lo.min(word);
        while self.hi > 0 && self.det[self.hi - 1] == 0 {
            self.hi -= 1;
        }
    }

    /// The canonical encoding: (`lo`, the words from `lo` to `hi`, then the indeterminate
    /// bitset).
    fn key(&mut self) -> (u32, &[u64]) {
        self.key.clear();
        if self.hi > self.lo {
            self.key.extend_from_slice(&self.det[self.lo..self.hi]);
        }
        self.key.extend_from_slice(&self.info);
        (self.lo as u32, &self.key)
    }
}

/// Seen configurations (linearized set, state): open addressing over variable-length keys.
struct Cache {
    slots: Vec<u32>,
    hashes: Vec<u64>,
    states: Vec<u64>,
    /// Per entry: (`lo`, offset of its words, number of words).
    meta: Vec<(u32, usize, u32)>,
    words: Vec<u64>,
}

impl Cache {
    fn new() -> Self {
        Cache {
            slots: vec![0; 1024],
            hashes: Vec::new(),
            states: Vec::new(),
            meta: Vec::new(),
            words: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.hashes.len()
    }

    fn bytes(&self) -> usize {
        self.slots.capacity() * 4
            + (self.hashes.capacity() + self.states.capacity() + self.words.capacity()) * 8
            + self.meta.capacity() * std::mem::size_of::<(u32, usize, u32)>()
    }

    /// Inserts the configuration; false if it was already there.
    fn insert(&mut self, hash: u64, state: u64, (lo, key): (u32, &[u64])) -> bool {
        if (self.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            match self.slots[slot] {
                0 => {
                    self.slots[slot] = (self.len() + 1) as u32;
                    self.hashes.push(hash);
                    self.states.push(state);
                    self.meta.push((lo, self.words.len(), key.len() as u32));
                    self.words.extend_from_slice(key);
                    return true;
                }
                entry => {
                    let e = (entry - 1) as usize;
                    let (e_lo, offset, len) = self.meta[e];
                    if self.hashes[e] == hash
                        && self.states[e] == state
                        && e_lo == lo
                        && self.words[offset..offset + len as usize] == *key
                    {
                        return false;
                    }
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let mask = size - 1;
        let mut slots = vec![0u32; size];
        for (e, &hash) in self.hashes.iter().enumerate() {
            let mut slot = hash as usize & mask;
            while slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            slots[slot] = (e + 1) as u32;
        }
        self.slots = slots;
    }
}

const NIL: u32 = u32::MAX;
const HEAD: u32 = 0;

/// Wing–Gong–Lowe search over one key's operations, from state `initial`.
/// Gives up with `Capped` after exploring `cap` configurations.
fn search(
    ops: &[COp],
    initial: u64,
    interner: &mut Interner,
    meter: &mut Meter<'_>,
    cap: u64,
) -> Search {
    let n = ops.len();
    if n == 0 {
        return Search::Linearizable(Vec::new());
    }
    if n >= (u32::MAX / 2 - 2) as usize {
        return Search::Unknown(format!("{n} operations on one key is too many"));
    }

    // Entries 1..=2n: (time, 0 = call / 1 = return, op). Entry 0 is the list head.
    let mut sorted: Vec<(u64, u8, u32)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        sorted.push((op.call, 0, i as u32));
        sorted.push((op.ret, 1, i as u32));
    }
    sorted.sort_unstable();
    let size = 2 * n + 1;
    let mut entry_op = vec![0u32; size];
    let mut is_call = vec![false; size];
    let mut return_of = vec![0u32; n];
    for (position, &(_, kind, op)) in sorted.iter().enumerate() {
        let entry = position as u32 + 1;
        entry_op[entry as usize] = op;
        if kind == 0 {
            is_call[entry as usize] = true;
        } else {
            return_of[op as usize] = entry;
        }
    }
    let mut next: Vec<u32> = (0..size as u32).map(|e| e + 1).collect();
    next[size - 1] = NIL;
    let mut prev: Vec<u32> = (0..size as u32).map(|e| e.wrapping_sub(1)).collect();
    prev[0] = NIL;

    let zobrist: Vec<u64> = (0..n as u64)
        .map(|i| splitmix(i ^ 0x5eed_1a2d_e400_0000))
        .collect();
    let mut linearized = Linearized::new(ops);
    let mut hash = 0u64;
    let mut cache = Cache::new();
    let mut state = initial;
    let mut remaining = ops.iter().filter(|op| op.definite).count();
    let class: Vec<Class> = ops.iter().map(Class::of).collect();
    // (call entry, state before it, the pass that chose it)
    let mut stack: Vec<(u32, u64, Class)> = Vec::with_capacity(n);

    let unlink = |next: &mut Vec<u32>, prev: &mut Vec<u32>, e: u32| {
        let (p, q) = (prev[e as usize], next[e as usize]);
        next[p as usize] = q;
        if q != NIL {
            prev[q as usize] = p;
        }
    };
    let relink = |next: &mut Vec<u32>, prev: &mut Vec<u32>, e: u32| {
        let (p, q) = (prev[e as usize], next[e as usize]);
        next[p as usize] = e;
        if q != NIL {
            prev[q as usize] = e;
        }
    };

    // The candidates of a configuration are the calls before the first pending return. They
    // are scanned in passes, each from the head: reads (state-preserving), then other
    // determinate operations, then indeterminate ones (which can always wait: the end of the
    // history is as good a place for them as any). The order changes which linearization is
    // found first, not what is explored. (Trying first the write a blocked read names looks
    // tempting, but it was much slower on histories with lost writes: history order is a
    // good guess.)
    let mut entry = next[HEAD as usize];
    let mut pass = Class::Read;
    let states_before = meter.states;
    loop {
        if remaining == 0 {
            let order = stack
                .iter()
                .map(|&(call, ..)| ops[entry_op[call as usize] as usize].op)
                .collect();
            return Search::Linearizable(order);
        }
        if meter.step() {
            return Search::Unknown(format!(
                "budget exhausted after {} states on this key",
                meter.states - states_before
            ));
        }
        if meter.states - states_before >= cap {
            return Search::Capped;
        }
        if cache.len() >= (u32::MAX - 1) as usize
            || meter
                .budget
                .memory_max
                .is_some_and(|max| cache.bytes() > max)
        {
            return Search::Unknown(format!(
                "memory budget exhausted after {} states on this key",
                meter.states - states_before
            ));
        }
        if entry == NIL || !is_call[entry as usize] {
            // The first pending return: this pass has no candidate left.
            if pass != Class::Info {
                pass = if pass == Class::Read {
                    Class::Update
                } else {
                    Class::Info
                };
                entry = next[HEAD as usize];
                continue;
            }
        } else {
            let op = entry_op[entry as usize] as usize;
            let mut dead = false;
            if class[op] == pass
                && let Some(new_state) = apply(ops[op].step, state, interner)
            {
                linearized.set(op);
                let new_hash = hash ^ zobrist[op];
                if cache.insert(new_hash ^ splitmix(new_state), new_state, linearized.key()) {
                    meter.states += 1;
                    stack.push((entry, state, pass));
                    state = new_state;
                    hash = new_hash;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, return_of[op]);
                    if ops[op].definite {
                        remaining -= 1;
                    }
                    entry = next[HEAD as usize];
                    pass = Class::Read;
                    continue;
                }
                linearized.clear(op);
                // A read that is legal now can be linearized now in any extension of this
                // configuration (it changes nothing, and everything that must precede it
                // already does); that configuration was explored and failed, so this one
                // fails too.
                dead = pass == Class::Read;
            }
            if !dead {
                entry = next[entry as usize];
                continue;
            }
        }
        // Backtrack: undo the last choice and try the candidate after it; a forced read
        // had no alternative, so undo the one before it as well.
        loop {
            let Some((call, previous, chosen_in)) = stack.pop() else {
                return Search::NotLinearizable;
            };
            let op = entry_op[call as usize] as usize;
            state = previous;
            hash ^= zobrist[op];
            linearized.clear(op);
            relink(&mut next, &mut prev, return_of[op]);
            relink(&mut next, &mut prev, call);
            if ops[op].definite {
                remaining += 1;
            }
            if chosen_in != Class::Read {
                entry = next[call as usize];
                pass = chosen_in;
                break;
            }
        }
    }
}

/// The scan pass an operation is a candidate in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Determinate and state-preserving: reads, failed compares.
    Read,
    /// Other determinate operations.
    Update,
    /// Indeterminate operations.
    Info,
}

impl Class {
    fn of(op: &COp) -> Class {
        match op.step {
            _ if !op.definite => Class::Info,
            Step::Read(_) | Step::CounterRead(_) | Step::CasMismatch { .. } => Class::Read,
            _ => Class::Update,
        }
    }
}

/// For a non-linearizable key: the largest `k` such that the history cut after its `k`-th
/// determinate completion is linearizable, by binary search (linearizability of such cuts is
/// monotone). Returns `(k, a linearization of that cut, the culprit operation, the time of
/// the failing cut)`, or `None` when the budget runs out.
fn longest_prefix(
    compiled: &Compiled,
    meter: &mut Meter<'_>,
    cap: u64,
) -> Option<(usize, Vec<usize>, usize, u64)> {
    // Determinate completions in entry order: calls before returns at equal times.
    let mut returns: Vec<(u64, usize)> = compiled
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| op.definite)
        .map(|(i, op)| (op.ret, i))
        .collect();
    returns.sort_unstable();

    // The cut after completion `k` (1-based): operations invoked at or before its time, with
    // those still running at the cut made indeterminate.
    let cut = |k: usize| -> Vec<COp> {
        let mut prefix = Vec::new();
        if k == 0 {
            return prefix;
        }
        let (time, _) = returns[k - 1];
        let done: Vec<bool> = {
            let mut done = vec![false; compiled.ops.len()];
            for &(_, i) in &returns[..k] {
                done[i] = true;
            }
            done
        };
        for (i, op) in compiled.ops.iter().enumerate() {
            if op.call > time {
                continue;
            }
            if done[i] || !op.definite {
                prefix.push(*op);
                continue;
            }
            let step = match op.step {
                Step::Read(_) | Step::CounterRead(_) | Step::CasMismatch { .. } => continue,
                Step::Cas { from, to } => Step::CasMaybe { from, to },
                other => other,
            };
            prefix.push(COp {
                step,
                definite: false,
                ret: u64::MAX,
                ..*op
            });
        }
        prefix
    };

    // lo: a linearizable cut (with its linearization); hi: a non-linearizable one.
    let (mut lo, mut hi) = (0usize, returns.len());
    let mut witness: Vec<usize> = Vec::new();
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let mut interner = compiled.interner.clone();
        match search(&cut(mid), compiled.initial, &mut interner, meter, cap) {
            Search::Linearizable(order) => {
                lo = mid;
                witness = order;
            }
            Search::NotLinearizable => hi = mid,
            Search::Unknown(_) | Search::Capped => return None,
        }
    }
    if lo == 0 {
        witness.clear();
    }
    let (time, culprit) = returns[hi - 1];
    Some((lo, witness, compiled.ops[culprit].op, time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{OpKind, Value};

    fn check(history: &History) -> Report {
        check_history(history, &CheckConfig::default(), &Budget::unlimited()).unwrap()
    }

    #[test]
    fn empty_history_is_linearizable() {
        let report = check(&History::new());
        assert!(report.is_linearizable());
        assert!(report.keys.is_empty());
    }

    #[test]
    fn cache_dedups_and_grows() {
        let mut cache = Cache::new();
        for i in 0..5000u64 {
            assert!(cache.insert(splitmix(i), i, (0, &[i])));
        }
        for i in 0..5000u64 {
            assert!(!cache.insert(splitmix(i), i, (0, &[i])));
        }
        assert!(cache.insert(splitmix(1), 1, (0, &[2])));
        assert!(cache.insert(splitmix(1), 1, (1, &[1])));
        assert!(cache.insert(splitmix(1), 1, (0, &[1, 0])));
        assert_eq!(cache.len(), 5003);
    }

    #[test]
    fn unobservable_indeterminate_writes_are_dropped() {
        let mut h = History::new();
        h.invoke(0, 1, Function::Write, "k", 1);
        h.invoke(0, 2, Function::Write, "k", 2);
        h.invoke(0, 3, Function::Cas, "k", Value::pair(1.into(), 3.into()));
        h.invoke(0, 4, Function::Cas, "k", Value::pair(5.into(), 2.into()));
        h.complete(1, 1, OpKind::Info, 1);
        h.complete(1, 2, OpKind::Info, 2);
        h.complete(1, 3, OpKind::Info, Value::Null);
        h.complete(1, 4, OpKind::Info, Value::Null);
        h.invoke(2, 1, Function::Read, "k", Value::Null);
        h.complete(3, 1, OpKind::Ok, 1);
        let ops = h.operations().unwrap();
        let refs: Vec<&Operation> = ops.iter().collect();
        let compiled = compile(ModelKind::Register, &refs, &CheckConfig::default()).unwrap();
        // 1 is read (and compared with), 5 is compared with; 2 and 3 are never observed, so
        // write 2, cas [1 3] and cas [5 2] go
        let kept: Vec<usize> = compiled.ops.iter().map(|c| c.op).collect();
        assert_eq!(kept, vec![0, 4]);
        assert!(check(&h).is_linearizable());
    }

    #[test]
    fn linearized_encoding_is_canonical() {
        // 130 determinate operations returning in order, and 3 indeterminate ones
        let ops: Vec<COp> = (0..133)
            .map(|i| COp {
                op: i,
                call: i as u64,
                ret: if i < 130 { 1000 + i as u64 } else { u64::MAX },
                step: Step::Write(0),
                definite: i < 130,
            })
            .collect();
        let mut lin = Linearized::new(&ops);
        assert_eq!(lin.key(), (0, &[0u64][..]));
        for i in 0..64 {
            lin.set(i);
        }
        assert_eq!(lin.key(), (1, &[0u64][..]));
        lin.set(70);
        lin.set(131);
        assert_eq!(lin.key(), (1, &[1u64 << 6, 0b10][..]));
        for i in 64..130 {
            lin.set(i);
        }
        assert_eq!(lin.key(), (3, &[0b10u64][..]));
        lin.clear(129);
        assert_eq!(lin.key(), (2, &[(1u64 << 1) - 1, 0b10][..]));
        lin.clear(128);
        assert_eq!(lin.key(), (2, &[0b10u64][..]));
        for i in (0..128).rev() {
            lin.clear(i);
        }
        lin.clear(131);
        assert_eq!(lin.key(), (0, &[0u64][..]));
    }

    #[test]
    fn states_budget_gives_unknown() {
        let mut h = History::new();
        for p in 0..6 {
            h.invoke(0, p, Function::Write, "k", p as i64);
        }
        for p in 0..6 {
            h.complete(10, p, OpKind::Ok, p as i64);
        }
        h.invoke(11, 0, Function::Read, "k", Value::Null);
        h.complete(12, 0, OpKind::Ok, 99);
        let report = check_history(
            &h,
            &CheckConfig::default(),
            &Budget::unlimited().with_states_max(3),
        )
        .unwrap();
        assert!(report.is_unknown(), "{report}");
        let expired = check_history(&h, &CheckConfig::default(), &Budget::deadline(|| true));
        // the deadline is polled every 1024 steps: this small search may finish first, and
        // then it must be right
        assert!(!expired.unwrap().is_linearizable());
    }
}
