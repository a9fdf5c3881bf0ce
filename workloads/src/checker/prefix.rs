//! The longest linearizable prefix of a failing key's history, found by binary search over
//! cuts after each determinate completion. It names the operation whose completion breaks
//! linearizability and the smallest failing window, which is what a reader of a failure
//! report needs; it reruns the search on cuts, so it is kept apart from the search itself.

use super::model::{COp, Compiled, Step};
use super::search::{Meter, Search, search};

/// For a non-linearizable key: the largest `k` such that the history cut after its `k`-th
/// determinate completion is linearizable, by binary search (linearizability of such cuts is
/// monotone). Returns `(k, a linearization of that cut, the culprit operation, the time of
/// the failing cut)`, or `None` when the budget runs out.
pub(super) fn longest_prefix(
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
                Step::Read(_)
                | Step::CounterRead(_)
                | Step::CasMismatch { .. }
                | Step::TtlRead(_)
                | Step::TtlQuery { .. }
                | Step::MRead { .. }
                | Step::CollRead(_) => continue,
                Step::Cas { from, to } => Step::CasMaybe { from, to },
                // Still running at the cut: its answer is not known yet.
                Step::TtlExpire { ttl_ms, .. } => Step::TtlExpire {
                    ttl_ms,
                    existed: None,
                },
                Step::TtlPersist { .. } => Step::TtlPersist { removed: None },
                Step::MDel { names, .. } => Step::MDel { names, count: None },
                Step::CollUpdate { ops, .. } => Step::CollUpdate {
                    ops,
                    checked: false,
                },
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
        match search(&cut(mid), compiled.initial, &mut interner, meter, cap, None) {
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
