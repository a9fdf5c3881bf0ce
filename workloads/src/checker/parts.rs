//! The parts of a collections object, searched apart to prune the whole object's search.
//!
//! A collections object holds a list, a set and a sorted set (parts, [`PartOps`]); an
//! operation touches one part, a transaction may touch several. The whole object's search
//! explores configurations of all parts together, so when two parts each have dead ends (as
//! unanswered operations make), it explored the product of them: seed 11's object at 24
//! clients, whose set alone took 3,927 states and sorted set alone 1,566, ran past 1.5
//! million states with the two together.
//!
//! The cut: a configuration of the whole object (its linearized operations, its state) is
//! abandoned when the configuration it makes on one part cannot be completed on that part
//! alone. Sound: a completion of the whole configuration, cut to the part's operations (a
//! transaction to its sub-operations there), is a completion of the part's configuration,
//! since a part's sub-operations change and read that part only, and the real-time order of
//! the part's operations is a subset of the whole's. So a dead part makes the whole dead, and
//! the whole search explores only configurations whose parts are all alive. Whether a part's
//! configuration is alive is searched once, by a depth-first search of the part alone with
//! its own memo, twins and forced reads as in the whole search, and unanswered operations
//! linearized only where they may matter ([`Part::may_go_next`]) ([`Part::explore`]): every
//! configuration it finished exploring without a
//! completion is dead, every one on the path of a completion is alive; later questions are
//! answered from those two tables, so a part's search costs at most its own configurations
//! however often the whole search asks.

use super::memo::{Cache, Linearized, splitmix};
use super::model::{COp, Interner, PartOps, Step, apply, coll_may_conflict};
use super::search::{Meter, earlier_twins, waits_for_twin};

const NIL: u32 = u32::MAX;
/// A whole state whose projection on a part is not made yet.
const UNPROJECTED: u64 = u64::MAX;

/// The stages of a configuration in a part's search ([`Part::explore`]): its reads still to
/// be looked at; trying determinate operations; trying indeterminate ones; done.
const READS: u8 = 0;
const DETERMINATE: u8 = 1;
const INDETERMINATE: u8 = 2;
const DONE: u8 = 3;

/// What linearizing one more operation made of a part's configuration ([`Part::step_to`]).
enum Stepped {
    Completed,
    New,
    Dead,
}

/// The parts of one collections key and what their searches found so far.
pub(super) struct Parts {
    parts: Vec<Part>,
    /// Per operation of the key: the parts it touches, with its index in each.
    of_op: Vec<Vec<(usize, u32)>>,
    /// Per whole state id and part: the state's projection on the part, in the part's
    /// interner (`UNPROJECTED`: not made yet).
    projected: Vec<u64>,
}

impl Parts {
    /// `None` unless the key has two parts or more (`parts` from `model::coll_parts`).
    pub(super) fn new(ops: &[COp], parts: Vec<PartOps>) -> Option<Parts> {
        if parts.len() < 2 {
            return None;
        }
        let mut of_op: Vec<Vec<(usize, u32)>> = vec![Vec::new(); ops.len()];
        for (p, part) in parts.iter().enumerate() {
            for (index, &whole) in part.whole.iter().enumerate() {
                of_op[whole].push((p, index as u32));
            }
        }
        Some(Parts {
            parts: parts.into_iter().map(Part::new).collect(),
            of_op,
            projected: Vec::new(),
        })
    }

    /// Heap bytes, roughly: the parts' memo tables and states, and the projections.
    pub(super) fn bytes(&self) -> usize {
        self.projected.capacity() * 8 + self.parts.iter().map(Part::bytes).sum::<usize>()
    }

    /// Each part's share of [`Parts::bytes`] and configurations explored, for a report
    /// ("list 900 MiB in 1234567 configurations, set 3 MiB in 5000").
    pub(super) fn usage(&self) -> String {
        self.parts
            .iter()
            .map(|part| {
                format!(
                    "{} {} MiB in {} configurations",
                    part.ops.kind(),
                    part.bytes() >> 20,
                    part.seen.len()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Begins a whole search: what an earlier one left linearized (one cut short by its
    /// allowance returns midway) is taken back; what the parts' searches found stays, as it is
    /// about the parts alone.
    pub(super) fn begin(&mut self) {
        for part in &mut self.parts {
            for i in 0..part.done.len() {
                if part.done[i] {
                    part.clear(i);
                }
            }
        }
    }

    /// Whether every part can be completed from the start. `room`: the bytes the parts may
    /// hold together (the search's memory budget less what the whole search holds), None
    /// without a budget.
    pub(super) fn alive_initially(&mut self, meter: &mut Meter<'_>, room: Option<usize>) -> bool {
        (0..self.parts.len()).all(|p| {
            let initial = self.parts[p].ops.initial;
            let room = self.room_of(p, room);
            self.parts[p].explore(initial, meter, room)
        })
    }

    /// What part `p` may hold of the parts' `room`: the room less every other part's bytes.
    fn room_of(&self, p: usize, room: Option<usize>) -> Option<usize> {
        room.map(|room| room.saturating_sub(self.bytes() - self.parts[p].bytes()))
    }

    /// Whether linearizing `op` next, making the whole state `state`, leaves every part it
    /// touches completable. The parts are left as they were. `room` as for
    /// [`Parts::alive_initially`].
    pub(super) fn allows(
        &mut self,
        op: usize,
        state: u64,
        interner: &Interner,
        meter: &mut Meter<'_>,
        room: Option<usize>,
    ) -> bool {
        for k in 0..self.of_op[op].len() {
            let (p, index) = self.of_op[op][k];
            let projected = self.projection(p, state, interner);
            let room = self.room_of(p, room);
            let part = &mut self.parts[p];
            part.set(index as usize);
            let alive = part.explore(projected, meter, room);
            part.clear(index as usize);
            if !alive {
                return false;
            }
        }
        true
    }

    /// `op` was linearized in the whole search.
    pub(super) fn linearized(&mut self, op: usize) {
        for &(p, index) in &self.of_op[op] {
            self.parts[p].set(index as usize);
        }
    }

    /// `op` was taken back in the whole search.
    pub(super) fn unlinearized(&mut self, op: usize) {
        for &(p, index) in &self.of_op[op] {
            self.parts[p].clear(index as usize);
        }
    }

    fn projection(&mut self, p: usize, state: u64, interner: &Interner) -> u64 {
        let stride = self.parts.len();
        let at = state as usize * stride + p;
        if self.projected.len() <= at {
            self.projected
                .resize((state as usize + 1) * stride, UNPROJECTED);
        }
        if self.projected[at] == UNPROJECTED {
            self.projected[at] = self.parts[p].ops.project(interner, state);
        }
        self.projected[at]
    }
}

/// One part's operations, the configuration the whole search has made on it, and its memo.
struct Part {
    ops: PartOps,
    linearized: Linearized,
    hash: u64,
    zobrist: Vec<u64>,
    done: Vec<bool>,
    /// Determinate operations not linearized.
    remaining: usize,
    /// Operations by call time, and each one's place there; `call_done` marks the places of
    /// linearized ones (so the first open call is found a word at a time).
    by_call: Vec<u32>,
    call_place: Vec<u32>,
    call_done: Vec<u64>,
    /// The same by return time (indeterminate operations last): the first open one is the
    /// first pending return.
    by_ret: Vec<u32>,
    ret_place: Vec<u32>,
    ret_done: Vec<u64>,
    /// As in the whole search (`search::search`): the twin before each operation in return
    /// order, or NIL.
    earlier_twin: Vec<u32>,
    /// Configurations explored (each dead unless it is in `alive`).
    seen: Cache,
    /// Configurations on the path of a completion.
    alive: Cache,
    /// Per indeterminate operation: the places in `by_call` of the other operations it may
    /// not commute with, in order (empty for a determinate one; [`Part::may_go_next`]).
    conflicting: Vec<Vec<u32>>,
    /// The heap bytes of `conflicting`, which never changes.
    conflicting_bytes: usize,
    /// A search of this part ran out of budget (states, time or memory) midway: its tables no
    /// longer tell dead from unfinished, so the part prunes nothing more.
    spent: bool,
}

impl Part {
    fn new(ops: PartOps) -> Part {
        let n = ops.ops.len();
        let order = |key: &dyn Fn(&COp) -> u64| {
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by_key(|&i| (key(&ops.ops[i as usize]), i));
            let mut place = vec![0u32; n];
            for (at, &i) in order.iter().enumerate() {
                place[i as usize] = at as u32;
            }
            (order, place)
        };
        let (by_call, call_place) = order(&|op| op.call);
        let (by_ret, ret_place) = order(&|op| op.ret);
        let earlier_twin = earlier_twins(&ops.ops);
        let mut conflicting = vec![Vec::new(); n];
        for x in (0..n).filter(|&x| !ops.ops[x].definite) {
            conflicting[x] = (0..n as u32)
                .filter(|&place| {
                    let z = by_call[place as usize] as usize;
                    z != x && coll_may_conflict(ops.ops[x].step, ops.ops[z].step, &ops.interner)
                })
                .collect();
        }
        let conflicting_bytes = conflicting.iter().map(|c| c.capacity() * 4 + 24).sum();
        Part {
            linearized: Linearized::new(&ops.ops),
            hash: 0,
            zobrist: (0..n as u64)
                .map(|i| splitmix(i ^ 0x9a27_5eed_0000_0000))
                .collect(),
            done: vec![false; n],
            remaining: ops.ops.iter().filter(|op| op.definite).count(),
            by_call,
            call_place,
            call_done: vec![0; n.div_ceil(64)],
            by_ret,
            ret_place,
            ret_done: vec![0; n.div_ceil(64)],
            earlier_twin,
            seen: Cache::new(),
            alive: Cache::new(),
            conflicting,
            conflicting_bytes,
            spent: false,
            ops,
        }
    }

    /// Heap bytes, roughly: its memo tables, its states and its conflict lists (cheap to ask:
    /// each term is kept).
    fn bytes(&self) -> usize {
        self.seen.bytes() + self.alive.bytes() + self.ops.interner.bytes() + self.conflicting_bytes
    }

    fn set(&mut self, i: usize) {
        self.linearized.set(i);
        self.hash ^= self.zobrist[i];
        self.done[i] = true;
        if self.ops.ops[i].definite {
            self.remaining -= 1;
        }
        let (c, r) = (self.call_place[i] as usize, self.ret_place[i] as usize);
        self.call_done[c / 64] |= 1 << (c % 64);
        self.ret_done[r / 64] |= 1 << (r % 64);
    }

    fn clear(&mut self, i: usize) {
        self.linearized.clear(i);
        self.hash ^= self.zobrist[i];
        self.done[i] = false;
        if self.ops.ops[i].definite {
            self.remaining += 1;
        }
        let (c, r) = (self.call_place[i] as usize, self.ret_place[i] as usize);
        self.call_done[c / 64] &= !(1 << (c % 64));
        self.ret_done[r / 64] &= !(1 << (r % 64));
    }

    /// The first open place of a done-bitset (its length when every place is done).
    fn first_open(done: &[u64], len: usize) -> usize {
        done.iter()
            .enumerate()
            .find(|(_, word)| **word != u64::MAX)
            .map_or(len, |(w, word)| {
                (w * 64 + word.trailing_ones() as usize).min(len)
            })
    }

    /// The first pending return: every candidate's call is at or before it.
    fn frontier(&self) -> u64 {
        let at = Self::first_open(&self.ret_done, self.by_ret.len());
        self.by_ret
            .get(at)
            .map_or(u64::MAX, |&i| self.ops.ops[i as usize].ret)
    }

    fn remember_alive(&mut self, state: u64) {
        let key = self.linearized.key();
        self.alive.insert(self.hash ^ splitmix(state), state, key);
    }

    /// Whether `i` waits for an earlier-returning twin (as in the whole search).
    fn waits(&self, i: usize, frontier: u64) -> bool {
        waits_for_twin(
            i,
            &self.earlier_twin,
            &self.done,
            &self.ops.ops,
            &mut Some(frontier),
            || frontier,
        )
    }

    /// Whether the indeterminate operation `x` may be linearized next: only while an
    /// operation it may not commute with ([`coll_may_conflict`]) is a candidate (called by
    /// `frontier`, not linearized). Sound: in a completion, an indeterminate operation
    /// followed by one it commutes with can trade places with it (it precedes nothing in real
    /// time: it never returned), so it can be moved on past every operation it commutes with
    /// up to and including the next determinate one, until one of them does not commute with
    /// it, or to the end, where it can be left out (moved past the next determinate one, it has
    /// one more before it and no other operation has fewer, so the moving ends). So if
    /// any completion exists, one exists in which each indeterminate operation is followed,
    /// at the latest by the next determinate one, by one it does not commute with; and that
    /// one is a candidate when the indeterminate one is linearized, since linearizing
    /// indeterminate operations moves no return and so not the frontier. As the search's
    /// other rules, it never hides every completion of a configuration, so what a part's
    /// tables call dead has none. The rule is a function of the configuration, so the
    /// memo is not split by it (a rule that carried "what must come next" in the memo key
    /// split it: stop 62). What it is for: a part proving a configuration dead tried every
    /// subset of its unanswered operations at every place (seed 11's sorted set has eleven
    /// unanswered increments of three members: 1,047,316 configurations, 255,299 with this,
    /// 2,109 with determinate operations tried first as well).
    fn may_go_next(&self, x: usize, frontier: u64) -> bool {
        // Operations called before the first open call are all linearized.
        let start = Self::first_open(&self.call_done, self.by_call.len()) as u32;
        let list = &self.conflicting[x];
        let from = list.partition_point(|&place| place < start);
        for &place in &list[from..] {
            let z = self.by_call[place as usize] as usize;
            if self.ops.ops[z].call > frontier {
                break;
            }
            if !self.done[z] {
                return true;
            }
        }
        false
    }

    /// The first candidate from `place` on that is a read and answers as it did in `state`.
    fn legal_read(&mut self, state: u64, frontier: u64, mut place: usize) -> Option<usize> {
        while place < self.by_call.len() {
            let i = self.by_call[place] as usize;
            let op = self.ops.ops[i];
            if op.call > frontier {
                return None;
            }
            place += 1;
            if matches!(op.step, Step::CollRead(_))
                && !self.done[i]
                && !self.waits(i, frontier)
                && apply(op.step, state, &mut self.ops.interner).is_some()
            {
                return Some(i);
            }
        }
        None
    }

    /// Linearizes `i`, making state `after`: completed (every determinate operation done, or
    /// a configuration known alive: taken back, the path remembered alive by the caller), new
    /// (left linearized, to be explored) or dead (seen before and not alive: taken back).
    fn step_to(&mut self, i: usize, after: u64, meter: &mut Meter<'_>) -> Stepped {
        self.set(i);
        let hash = self.hash ^ splitmix(after);
        if self.remaining == 0 || self.alive.contains(hash, after, self.linearized.key()) {
            self.remember_alive(after);
            self.clear(i);
            return Stepped::Completed;
        }
        if self.seen.insert(hash, after, self.linearized.key()) {
            meter.states += 1;
            return Stepped::New;
        }
        self.clear(i);
        Stepped::Dead
    }

    /// Whether the part's configuration (what is linearized now, in state `state`) can be
    /// completed: every determinate operation left linearized, in an order its calls and
    /// returns allow, with replies the part's model gives. Leaves the configuration as it was.
    /// A search that would take the part past `room` bytes (or the meter's budget) stops and
    /// answers alive, which prunes nothing: the whole search's own memory check then ends it.
    fn explore(&mut self, state: u64, meter: &mut Meter<'_>, room: Option<usize>) -> bool {
        if self.spent || self.remaining == 0 {
            return true;
        }
        let hash = self.hash ^ splitmix(state);
        if self.alive.contains(hash, state, self.linearized.key()) {
            return true;
        }
        if !self.seen.insert(hash, state, self.linearized.key()) {
            return false;
        }
        meter.states += 1;
        // (state, first pending return, next place in `by_call` to try, the operation
        // linearized to get here or NIL, its stage: `READS` and on). Determinate
        // operations are tried first, as in the whole search: they must all be linearized,
        // and an indeterminate one can wait for them (the order changes what is found first,
        // not what is explored; with indeterminate ones tried in call order among the rest,
        // seed 11's collections object took 1,239,257 states, 255,234 with this order).
        let mut frames: Vec<(u64, u64, usize, u32, u8)> = vec![(
            state,
            self.frontier(),
            Self::first_open(&self.call_done, self.by_call.len()),
            NIL,
            READS,
        )];
        loop {
            if meter.step() || room.is_some_and(|room| self.bytes() > room) {
                self.spent = true;
                while let Some((.., chosen, _)) = frames.pop() {
                    if chosen != NIL {
                        self.clear(chosen as usize);
                    }
                }
                return true;
            }
            let top = frames.len() - 1;
            let (at_state, frontier, mut place, _, mut stage) = frames[top];
            let mut next: Option<(usize, u64)> = None;
            let mut completed = false;
            // A read legal now is taken without alternatives, as in the whole search: it
            // changes nothing and everything that must precede it already does, so if no
            // completion starts with it, none exists.
            let forced = if stage == READS {
                stage = DETERMINATE;
                self.legal_read(at_state, frontier, place)
            } else {
                None
            };
            if let Some(read) = forced {
                place = self.by_call.len();
                stage = DONE;
                match self.step_to(read, at_state, meter) {
                    Stepped::Completed => completed = true,
                    Stepped::New => next = Some((read, at_state)),
                    Stepped::Dead => {}
                }
            }
            loop {
                while place < self.by_call.len() {
                    let i = self.by_call[place] as usize;
                    let op = self.ops.ops[i];
                    if op.call > frontier {
                        place = self.by_call.len();
                        break;
                    }
                    place += 1;
                    if (stage == DETERMINATE) != op.definite {
                        continue;
                    }
                    if self.done[i]
                        || self.waits(i, frontier)
                        || (!op.definite && !self.may_go_next(i, frontier))
                    {
                        continue;
                    }
                    let Some(after) = apply(op.step, at_state, &mut self.ops.interner) else {
                        continue;
                    };
                    // An indeterminate operation that changes nothing need not be linearized:
                    // a completion through it is one without it.
                    if !op.definite && after == at_state {
                        continue;
                    }
                    match self.step_to(i, after, meter) {
                        Stepped::Completed => {
                            completed = true;
                            break;
                        }
                        Stepped::New => {
                            next = Some((i, after));
                            break;
                        }
                        Stepped::Dead => {}
                    }
                }
                if stage == DETERMINATE && next.is_none() && !completed {
                    stage = INDETERMINATE;
                    place = Self::first_open(&self.call_done, self.by_call.len());
                    continue;
                }
                break;
            }
            frames[top].2 = place;
            frames[top].4 = stage;
            if completed {
                // Every configuration on the path here is alive.
                while let Some((at_state, .., chosen, _)) = frames.pop() {
                    self.remember_alive(at_state);
                    if chosen != NIL {
                        self.clear(chosen as usize);
                    }
                }
                return true;
            }
            match next {
                Some((i, after)) => {
                    let frontier = self.frontier();
                    let first = Self::first_open(&self.call_done, self.by_call.len());
                    frames.push((after, frontier, first, i as u32, READS));
                }
                None => {
                    // Explored through without a completion: dead (it stays in `seen`).
                    let (.., chosen, _) = frames.pop().expect("a frame");
                    if chosen != NIL {
                        self.clear(chosen as usize);
                    }
                    if frames.is_empty() {
                        return false;
                    }
                }
            }
        }
    }
}
