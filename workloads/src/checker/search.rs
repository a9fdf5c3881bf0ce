//! The Wing–Gong–Lowe search over one key's operations: the entry list of calls and
//! returns, the lift/unlift walk with just-in-time linearization, the three candidate passes
//! (reads, other determinate operations, indeterminate ones) and backtracking, with every
//! configuration checked against the memo table.
//!
//! The [`Meter`] lives here because the search is where the work happens: it counts states
//! and steps against the caller's [`Budget`] so that a search that runs out answers
//! `Unknown` instead of guessing.

use std::collections::BTreeMap;

use super::Budget;
use super::memo::{Cache, Linearized, splitmix};
use super::model::{COp, Interner, Step, apply};
use super::parts::Parts;
use super::pins::Pins;

pub(super) struct Meter<'a> {
    pub(super) budget: &'a Budget,
    pub(super) states: u64,
    pub(super) steps: u64,
    pub(super) exhausted: bool,
}

impl Meter<'_> {
    /// Counts a search step; true when the budget is exhausted.
    pub(super) fn step(&mut self) -> bool {
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

/// What a collections object's parts may hold together while their own searches run (between
/// the whole search's memory checks, so they could otherwise grow past the budget): the
/// memory budget less `held`, what the rest of the search holds. None without a budget.
fn parts_room(meter: &Meter<'_>, held: usize) -> Option<usize> {
    meter.budget.memory_max.map(|max| max.saturating_sub(held))
}

pub(super) enum Search {
    /// A linearization: positions in the key's operation list, in order.
    Linearizable(Vec<usize>),
    NotLinearizable,
    /// The budget ran out.
    Unknown(String),
    /// The per-search allowance ran out.
    Capped,
}

const NIL: u32 = u32::MAX;
const HEAD: u32 = 0;

/// Wing–Gong–Lowe search over one key's operations, from state `initial`.
/// Gives up with `Capped` after exploring `cap` configurations.
pub(super) fn search(
    ops: &[COp],
    initial: u64,
    interner: &mut Interner,
    meter: &mut Meter<'_>,
    cap: u64,
    mut parts: Option<&mut Parts>,
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
    let mut entry_time = vec![0u64; size];
    let mut is_call = vec![false; size];
    let mut return_of = vec![0u32; n];
    for (position, &(_, kind, op)) in sorted.iter().enumerate() {
        let entry = position as u32 + 1;
        entry_op[entry as usize] = op;
        entry_time[entry as usize] = sorted[position].0;
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
    // Facts only one operation can make, and the definite operations still to see them.
    let mut pins = Pins::new(ops, initial, interner);
    // Twins: operations with one step (and one definiteness) differ only in their calls and
    // returns. Of twins that are candidates together, only the one that returns first is
    // tried: in a linearization that takes a later-returning twin first, the two can swap
    // places (the steps are the same, so every state is; the earlier-returning one moved
    // forward and the later one moved back to where the earlier one was, which its return
    // allows). Without it, a burst of writes nobody reads (written as one value, see
    // `model::merge_unobserved`) was searched through every subset of them that came first.
    let earlier_twin = earlier_twins(ops);
    let mut done = vec![false; n];
    // The time of the first return entry still in the list (every candidate's call comes
    // before it), computed when a twin needs it and forgotten when the configuration changes.
    let mut frontier: Option<u64> = None;
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
    // A part that cannot be completed from the start (`super::parts`) ends the search: a
    // part answers dead only once it explored everything (one out of budget answers alive).
    if let Some(parts) = parts.as_deref_mut() {
        parts.begin();
        let room = parts_room(meter, cache.bytes() + interner.bytes() + pins.bytes());
        if !parts.alive_initially(meter, room) {
            return Search::NotLinearizable;
        }
    }
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
        let parts_bytes = || parts.as_deref().map_or(0, Parts::bytes);
        if cache.len() >= (u32::MAX - 1) as usize
            || meter.budget.memory_max.is_some_and(|max| {
                cache.bytes() + interner.bytes() + pins.bytes() + parts_bytes() > max
            })
        {
            // Which table holds the memory (the memo's configurations, the states' values:
            // interned values and model states, the single-source rule's facts (pins), or the
            // parts' own searches) says which model or cut to make cheaper.
            return Search::Unknown(format!(
                "memory budget exhausted after {} states on this key (memo {} MiB, values {} \
                 MiB, pins {} MiB, parts {} MiB{})",
                meter.states - states_before,
                cache.bytes() >> 20,
                interner.bytes() >> 20,
                pins.bytes() >> 20,
                parts_bytes() >> 20,
                parts
                    .as_deref()
                    .map_or_else(String::new, |parts| format!(": {}", parts.usage()))
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
                && !waits_for_twin(op, &earlier_twin, &done, ops, &mut frontier, || {
                    first_return(&next, &is_call, &entry_time)
                })
                && let Some(new_state) = apply(ops[op].step, state, interner)
                && pins.allows(op, state, new_state, interner)
            {
                linearized.set(op);
                let new_hash = hash ^ zobrist[op];
                let fresh =
                    cache.insert(new_hash ^ splitmix(new_state), new_state, linearized.key());
                if fresh {
                    meter.states += 1;
                }
                // A new configuration whose part cannot be completed is dead, as one explored
                // before is.
                if fresh
                    && parts.as_deref_mut().is_none_or(|parts| {
                        let held = cache.bytes() + interner.bytes() + pins.bytes();
                        let room = parts_room(meter, held);
                        parts.allows(op, new_state, interner, meter, room)
                    })
                {
                    if let Some(parts) = parts.as_deref_mut() {
                        parts.linearized(op);
                    }
                    stack.push((entry, state, pass));
                    state = new_state;
                    hash = new_hash;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, return_of[op]);
                    if ops[op].definite {
                        remaining -= 1;
                    }
                    pins.linearized(op);
                    done[op] = true;
                    frontier = None;
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
            pins.unlinearized(op);
            if let Some(parts) = parts.as_deref_mut() {
                parts.unlinearized(op);
            }
            done[op] = false;
            frontier = None;
            if chosen_in != Class::Read {
                entry = next[call as usize];
                pass = chosen_in;
                break;
            }
        }
    }
}

/// Per operation, the twin before it (same step and definiteness) in return order, then list
/// order, or NIL (see the twins in [`search`]).
pub(super) fn earlier_twins(ops: &[COp]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..ops.len() as u32).collect();
    order.sort_by_key(|&i| (ops[i as usize].ret, i));
    let mut earlier_twin = vec![NIL; ops.len()];
    let mut last_of_step: BTreeMap<(Step, bool), u32> = BTreeMap::new();
    for i in order {
        let op = &ops[i as usize];
        if let Some(before) = last_of_step.insert((op.step, op.definite), i) {
            earlier_twin[i as usize] = before;
        }
    }
    earlier_twin
}

/// Whether `op` must wait for an earlier-returning twin that is a candidate now (see
/// `earlier_twin` in [`search`]). Twins are walked back in return order while they may
/// still be unlinearized: every unlinearized operation returns at or after the frontier.
pub(super) fn waits_for_twin(
    op: usize,
    earlier_twin: &[u32],
    done: &[bool],
    ops: &[COp],
    frontier: &mut Option<u64>,
    first_return: impl FnOnce() -> u64,
) -> bool {
    let mut twin = earlier_twin[op];
    if twin == NIL {
        return false;
    }
    let frontier = *frontier.get_or_insert_with(first_return);
    while twin != NIL {
        let t = &ops[twin as usize];
        if t.ret < frontier {
            return false;
        }
        // A call at the frontier's time is listed before its return: a candidate too.
        if !done[twin as usize] && t.call <= frontier {
            return true;
        }
        twin = earlier_twin[twin as usize];
    }
    false
}

/// The time of the first return entry in the list (there is one while any operation is
/// unlinearized: indeterminate ones return at `u64::MAX`).
fn first_return(next: &[u32], is_call: &[bool], entry_time: &[u64]) -> u64 {
    let mut entry = next[HEAD as usize];
    while entry != NIL && is_call[entry as usize] {
        entry = next[entry as usize];
    }
    if entry == NIL {
        u64::MAX
    } else {
        entry_time[entry as usize]
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
            // TTL observations are not here: one may settle a pending expiry (a state change).
            Step::Read(_)
            | Step::CounterRead(_)
            | Step::CasMismatch { .. }
            | Step::MRead { .. }
            | Step::CollRead(_) => Class::Read,
            _ => Class::Update,
        }
    }
}
