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
//! - **ttl** (`read`, `write`, `set_ttl`, `expire`, `persist`, `ttl`): a register whose value
//!   may carry an expiry. A key written with a TTL may expire at any linearization point after
//!   the write (the simulator's clocks are skewed, so the model does not bound when), but once
//!   an operation observed it gone (a read of `null`, a `ttl` of -2, an `expire` or `persist`
//!   answering 0) it stays gone until written again. `persist` cancels a pending expiry if the
//!   key still exists; `ttl` answers -2 (gone), -1 (no expiry) or a time left not above the
//!   TTL that was set. The step is deterministic given the output: the observation that a
//!   pending expiry happened is the moment it happened. Observations may change the state
//!   here, so they are searched as updates, not as reads.
//! - **multi** (`mread`, `mwrite`, `mdel`): the sub-keys of one object (in Larder, keys
//!   sharing a hash tag) as one register whose value maps each sub-key to its value, so a
//!   multi-key read must see the effect of each multi-key write entirely or not at all. One
//!   object is one key of the search, as cheap as a register.
//! - **collections** (`push`, `pop`, `lrange`, `sadd`, `srem`, `smembers`, `zincrby`,
//!   `zscore`, `txn`): the lists (a deque: a pop answers its front or back, or nil when
//!   empty), sets (compared as sets) and sorted sets (member to integer score) of one object
//!   (in Larder, keys sharing a hash tag), as one state, so that a transaction (`txn`, MULTI/EXEC)
//!   applies all its operations at one linearization point: no operation, inside or after
//!   it, sees half of it. Every reply is checked (a push's new length, a pop's element, an
//!   add's or remove's 0/1, an increment's new score); an indeterminate operation's replies
//!   are not. One object is one key of the search, whose lists, sets and sorted sets (its
//!   parts) are also searched apart: a configuration one part cannot complete is abandoned
//!   (`parts`).
//!
//! [`Model::Auto`] picks the counter for keys that see an `add`, the ttl model for keys that
//! see an expiry operation, the multi-key model for keys that see a multi-key operation, the
//! collections model for keys that see a collection operation, the register otherwise.
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
//!
//! # Layout
//!
//! This file owns the public API: the configuration, the budget, the verdicts and
//! [`check_history`]. The machinery behind it is split by concern, each part private:
//!
//! - `partition`: P-compositionality, the per-key split and the rounds of growing
//!   allowances ([`check_operations`]).
//! - `model`: compilation of a key's operations into model steps over integer states
//!   (register, counter, append) and the sequential specifications that apply them.
//! - `memo`: the memo table of seen configurations and the compact encoding of a set of
//!   linearized operations (Lowe's memoization).
//! - `search`: the Wing–Gong–Lowe search over one key, and the meter that enforces the
//!   budget.
//! - `prefix`: the longest linearizable prefix of a failing key.
//! - `pins`: the single-source rule (a step that leaves a value a definite read still needs
//!   is refused).
//! - `parts`: a collections object's parts, each searched alone to tell the whole search
//!   which configurations are dead.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{History, HistoryError, Operation, Value};

mod memo;
mod model;
mod partition;
mod parts;
mod pins;
mod prefix;
mod search;

pub use partition::check_operations;

/// The sequential specification to check against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// Counter for keys that see an `add`, TTL for keys that see an expiry operation,
    /// multi-key for keys that see a multi-key operation, collections for keys that see a
    /// collection operation, register otherwise.
    #[default]
    Auto,
    Register,
    Counter,
    Ttl,
    Multi,
    Collections,
    Lock,
}

/// The model a key was checked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Register,
    Counter,
    /// A register whose writes may carry an expiry (`set_ttl`, `expire`, `persist`, `ttl`).
    Ttl,
    /// Several sub-keys as one object (`mread`, `mwrite`, `mdel`).
    Multi,
    /// Lists, sets and sorted sets of one object (`push`, `pop`, `lrange`, `sadd`, `srem`,
    /// `smembers`, `zincrby`, `zscore`, `txn`).
    Collections,
    /// A lock with fencing tokens and the counter its holders increment under a fence
    /// (`lock_acquire`, `lock_release`, `fenced_incr`).
    Lock,
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

#[cfg(test)]
mod tests;
