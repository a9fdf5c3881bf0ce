//! P-compositionality: a history is linearizable iff every key's sub-history is, so the
//! operations are partitioned by key and each key is searched on its own, in rounds of
//! growing allowances (smallest key first) so that cheap keys are decided early and a
//! failure ends the check before a hard key's search runs on. It also assembles the
//! [`Report`], including the failing window of the smallest failing key.
//!
//! Kept apart from the search itself because it is the only part that sees the whole
//! history: everything below it works on one key's compiled operations.

use std::collections::BTreeMap;

use super::model::{Compiled, compile};
use super::prefix::longest_prefix;
use super::search::{Meter, Search, search};
use super::{
    Budget, CheckConfig, KeyReport, KeyVerdict, LinearizablePrefix, Model, ModelKind, Report,
    Verdict,
};
use crate::history::{Function, Operation};

/// Configurations each key may explore in the first round.
const ALLOWANCE_FIRST: u64 = 4096;

/// Checks paired operations (see [`History::operations`](crate::history::History::operations)).
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
    let mut compiled: Vec<Option<Compiled>> = keys.iter().map(|_| None).collect();
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
            let outcome = search(
                &c.ops,
                c.initial,
                &mut c.interner,
                &mut meter,
                allowance,
                c.parts.as_mut(),
            );
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
        Model::Ttl => ModelKind::Ttl,
        Model::Multi => ModelKind::Multi,
        Model::Collections => ModelKind::Collections,
        Model::Lock => ModelKind::Lock,
        Model::Auto if ops.iter().any(|op| op.f.is_lock()) => ModelKind::Lock,
        Model::Auto if ops.iter().any(|op| op.f.is_collection()) => ModelKind::Collections,
        Model::Auto if ops.iter().any(|op| op.f == Function::Add) => ModelKind::Counter,
        Model::Auto
            if ops.iter().any(|op| {
                matches!(
                    op.f,
                    Function::SetTtl | Function::Expire | Function::Persist | Function::Ttl
                )
            }) =>
        {
            ModelKind::Ttl
        }
        Model::Auto
            if ops
                .iter()
                .any(|op| matches!(op.f, Function::MRead | Function::MWrite | Function::MDel)) =>
        {
            ModelKind::Multi
        }
        Model::Auto => ModelKind::Register,
    }
}
