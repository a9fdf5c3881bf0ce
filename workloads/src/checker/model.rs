//! The sequential models (register with cas and append, counter) over integer states.
//!
//! A key's operations are compiled once into [`COp`]s whose [`Step`] is a transition over a
//! `u64` state (an interned value id for the register, the count for the counter), so the
//! search compares and hashes integers instead of [`Value`]s. Compilation also drops what
//! cannot matter (failed operations, indeterminate reads, unobservable indeterminate writes),
//! which shrinks the search before it starts.

use std::collections::BTreeMap;

use super::{CheckConfig, ModelKind};
use crate::history::{Function, Operation, Outcome, Value};

/// A model transition over an integer state: an interned value id for the register, the
/// count (as `i64` bits) for the counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
pub(super) struct Compiled {
    pub(super) ops: Vec<COp>,
    pub(super) initial: u64,
    pub(super) interner: Interner,
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

pub(super) fn apply(step: Step, state: u64, interner: &mut Interner) -> Option<u64> {
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
