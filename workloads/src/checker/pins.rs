//! The single-source rule: a value that only one operation can produce, once left, never
//! comes back, so a linearization may not leave it while a definite operation that must see
//! it is still unlinearized. The search asks [`Pins::allows`] before every step that changes
//! the state and refuses the ones that would strand such an operation, instead of exploring
//! every order of the operations in flight behind them.
//!
//! A *fact* is what a state holds and an operation can require: a register's value, or one
//! sub-key's value of a multi-key object. A fact has one *source* when the initial state or a
//! single operation (a write, a cas, a multi-key write, indeterminate ones included) can make
//! it; only such facts are pinned. The simulator's workloads write unique values (`process-n`),
//! so on contended keys nearly every value read is pinned: sixteen writes in flight whose
//! values are read in some order are then searched along that order alone.
//!
//! Sound: a step refused here leads to no linearization (the stranded operation could only
//! be linearized in a state holding the fact, and no state after the step holds it), so no
//! verdict changes; only the states explored do. The memo table is unaffected: which facts
//! are waiting is a function of the set of operations linearized, which the memo key holds.

use std::collections::BTreeMap;

use super::model::{COp, Interner, Step};
use crate::history::Value;

/// An index into [`Pins::waiting`].
type Fact = u32;

pub(super) struct Pins {
    /// Per operation (position in the search's list): the facts it requires, when definite.
    witnesses: Vec<Vec<Fact>>,
    /// Per fact: its definite witnesses not yet linearized.
    waiting: Vec<u32>,
    /// The sum of `waiting`: when zero, nothing is pinned.
    waiting_total: u64,
    kind: Kind,
}

enum Kind {
    /// Not a register or a multi-key object: nothing is pinned.
    Off,
    /// A register: the state is a value id; its fact, if the value has one source.
    Register { fact_of: BTreeMap<u64, Fact> },
    /// A multi-key object: the state is an interned list of `[name, value]` pairs.
    Multi {
        /// Sub-key, then value: the fact, for pairs with one source.
        fact_of: BTreeMap<Value, BTreeMap<Value, Fact>>,
        /// The pinnable facts each interned state holds, filled as states are met.
        held: Vec<Option<Box<[Fact]>>>,
        held_bytes: usize,
    },
}

impl Pins {
    pub(super) fn new(ops: &[COp], initial: u64, interner: &Interner) -> Pins {
        let register = ops.iter().all(|op| {
            matches!(
                op.step,
                Step::Read(_)
                    | Step::Write(_)
                    | Step::Cas { .. }
                    | Step::CasMaybe { .. }
                    | Step::CasMismatch { .. }
            )
        });
        let multi = ops.iter().all(|op| {
            matches!(
                op.step,
                Step::MWrite(_) | Step::MRead { .. } | Step::MDel { .. }
            )
        });
        let mut facts: u32 = 0;
        let (kind, witnesses) = if register && !ops.is_empty() {
            let mut sources: BTreeMap<u64, u32> = BTreeMap::new();
            *sources.entry(initial).or_default() += 1;
            for op in ops {
                if let Step::Write(v) | Step::Cas { to: v, .. } | Step::CasMaybe { to: v, .. } =
                    op.step
                {
                    *sources.entry(v).or_default() += 1;
                }
            }
            let mut fact_of = BTreeMap::new();
            let witnesses = ops
                .iter()
                .map(|op| match op.step {
                    Step::Read(v) | Step::Cas { from: v, .. }
                        if op.definite && sources.get(&v).is_none_or(|&n| n <= 1) =>
                    {
                        vec![*fact_of.entry(v).or_insert_with(|| {
                            facts += 1;
                            facts - 1
                        })]
                    }
                    _ => Vec::new(),
                })
                .collect();
            (Kind::Register { fact_of }, witnesses)
        } else if multi && !ops.is_empty() {
            let mut sources: BTreeMap<(&Value, &Value), u32> = BTreeMap::new();
            for op in ops {
                if let Step::MWrite(pairs) = op.step {
                    for (name, value) in pairs_of(interner, pairs) {
                        *sources.entry((name, value)).or_default() += 1;
                    }
                }
            }
            let mut fact_of: BTreeMap<Value, BTreeMap<Value, Fact>> = BTreeMap::new();
            let witnesses = ops
                .iter()
                .map(|op| {
                    let Step::MRead { names, values } = op.step else {
                        return Vec::new();
                    };
                    if !op.definite {
                        return Vec::new();
                    }
                    let (Some(Value::List(names)), Some(Value::List(values))) =
                        (interner.value(names), interner.value(values))
                    else {
                        return Vec::new();
                    };
                    names
                        .iter()
                        .zip(values)
                        .filter(|&(name, value)| {
                            *value != Value::Null
                                && sources.get(&(name, value)).is_none_or(|&n| n <= 1)
                        })
                        .map(|(name, value)| {
                            *fact_of
                                .entry(name.clone())
                                .or_default()
                                .entry(value.clone())
                                .or_insert_with(|| {
                                    facts += 1;
                                    facts - 1
                                })
                        })
                        .collect()
                })
                .collect();
            let kind = Kind::Multi {
                fact_of,
                held: Vec::new(),
                held_bytes: 0,
            };
            (kind, witnesses)
        } else {
            (Kind::Off, vec![Vec::new(); ops.len()])
        };
        let mut waiting = vec![0u32; facts as usize];
        for &fact in witnesses.iter().flatten() {
            waiting[fact as usize] += 1;
        }
        Pins {
            waiting_total: waiting.iter().map(|&n| u64::from(n)).sum(),
            witnesses,
            waiting,
            kind,
        }
    }

    /// Whether operation `op` may take the state from `state` to `new_state`: false when it
    /// leaves a pinned fact one of whose witnesses (other than `op` itself) is unlinearized.
    pub(super) fn allows(
        &mut self,
        op: usize,
        state: u64,
        new_state: u64,
        interner: &Interner,
    ) -> bool {
        if new_state == state || self.waiting_total == 0 {
            return true;
        }
        if let Kind::Multi {
            fact_of,
            held,
            held_bytes,
        } = &mut self.kind
        {
            for s in [state as usize, new_state as usize] {
                if held.len() <= s {
                    held.resize(s + 1, None);
                }
                if held[s].is_none() {
                    let facts: Box<[Fact]> = pairs_of(interner, s as u64)
                        .filter_map(|(name, value)| fact_of.get(name)?.get(value).copied())
                        .collect();
                    *held_bytes += 16 + 4 * facts.len();
                    held[s] = Some(facts);
                }
            }
        }
        let (witnesses, waiting) = (&self.witnesses[op], &self.waiting);
        let stranded = |fact: Fact| waiting[fact as usize] > u32::from(witnesses.contains(&fact));
        match &self.kind {
            Kind::Off => true,
            Kind::Register { fact_of } => fact_of.get(&state).is_none_or(|&fact| !stranded(fact)),
            Kind::Multi { held, .. } => {
                let facts = |s: u64| held[s as usize].as_deref().unwrap_or_default();
                let after = facts(new_state);
                facts(state)
                    .iter()
                    .all(|&fact| after.contains(&fact) || !stranded(fact))
            }
        }
    }

    /// `op` was linearized: its witnesses no longer wait.
    pub(super) fn linearized(&mut self, op: usize) {
        for &fact in &self.witnesses[op] {
            self.waiting[fact as usize] -= 1;
            self.waiting_total -= 1;
        }
    }

    /// `op`'s linearization was undone: its witnesses wait again.
    pub(super) fn unlinearized(&mut self, op: usize) {
        for &fact in &self.witnesses[op] {
            self.waiting[fact as usize] += 1;
            self.waiting_total += 1;
        }
    }

    /// Roughly the heap bytes held, counted against the search's memory budget.
    pub(super) fn bytes(&self) -> usize {
        let held = match &self.kind {
            Kind::Multi {
                held, held_bytes, ..
            } => held.len() * 16 + held_bytes,
            _ => 0,
        };
        self.witnesses.len() * 24 + self.waiting.len() * 4 + held
    }
}

/// The `[name, value]` pairs of a multi-key state or write, by reference.
fn pairs_of(interner: &Interner, id: u64) -> impl Iterator<Item = (&Value, &Value)> {
    let pairs: &[Value] = match interner.value(id) {
        Some(Value::List(pairs)) => pairs,
        _ => &[],
    };
    pairs.iter().filter_map(Value::as_pair)
}
