//! `larder sim --seed N --shrink`: minimizes a failing seed's fault plan. The seed's plan
//! (generated, or given with `--plan`) is cut down by delta debugging over its faults: a chunk
//! of faults is dropped whenever the run without it still fails the same way (a violation of
//! the same first invariant, or a crash), with chunks halving down to single faults. The heal
//! point, the workload and the seed stay as they were, so the minimal plan replays with
//! `--plan FILE` on the same command line.
//!
//! Every trial is a child process (`larder::child`); the number of trials is bounded by
//! `TRIALS_MAX`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use larder_faults::FaultPlan;

use crate::{SimArgs, read_plan, replay_with_plan, sim_config};
use larder::child::{Outcome, run_child, words_of};

/// Most trial runs one shrink makes (a plan of n faults needs about 2 n log n at worst).
const TRIALS_MAX: usize = 400;

/// The part of a failure that must persist while shrinking.
fn signature(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Passed => None,
        Outcome::Failed(invariants) => Some(
            invariants
                .first()
                .cloned()
                .unwrap_or_else(|| "failed".to_string()),
        ),
        Outcome::Crashed => Some("crashed".to_string()),
        Outcome::Unfinished(_) => Some("unfinished".to_string()),
    }
}

struct Trials<'a> {
    args: &'a SimArgs,
    seed: u64,
    scratch: PathBuf,
    runs: usize,
}

impl Trials<'_> {
    /// How the seed's run ends with `plan`.
    fn run(&mut self, plan: &FaultPlan) -> anyhow::Result<Option<String>> {
        self.runs += 1;
        write_plan(&self.scratch, plan)?;
        let words = words_of(&replay_with_plan(self.args, self.seed, Some(&self.scratch)));
        Ok(signature(&run_child(&std::env::current_exe()?, &words)?))
    }
}

/// Delta debugging: drops chunks of `items` (order kept), halving the chunk down to one item,
/// whenever `still_fails` holds without them; returns what is left. That takes about
/// 2 n log n trials at worst; more than `trials_max` is an error.
fn minimize<T: Clone>(
    mut items: Vec<T>,
    trials_max: usize,
    mut still_fails: impl FnMut(&[T]) -> anyhow::Result<bool>,
) -> anyhow::Result<Vec<T>> {
    let mut trials = 0;
    let mut chunk = items.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < items.len() {
            let end = (start + chunk).min(items.len());
            let mut candidate = items.clone();
            candidate.drain(start..end);
            anyhow::ensure!(
                trials < trials_max,
                "shrinking stopped after {trials_max} trial runs"
            );
            trials += 1;
            if still_fails(&candidate)? {
                // Still fails the same way without these: they were not needed.
                items = candidate;
            } else {
                start = end;
            }
        }
        if chunk == 1 {
            return Ok(items);
        }
        chunk = chunk.div_ceil(2);
    }
}

fn write_plan(path: &Path, plan: &FaultPlan) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(plan)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Shrinks `seed`'s plan; writes the minimal plan to `out` and prints how to replay it.
/// Returns `Ok(false)` when the seed does not fail to begin with.
pub fn shrink(args: &SimArgs, seed: u64, out: &Path) -> anyhow::Result<bool> {
    let mut plan = match &args.plan {
        Some(path) => read_plan(path)?,
        None => sim_config(args, seed).plan(),
    };
    let scratch = out.with_extension("trial.json");
    let mut trials = Trials {
        args,
        seed,
        scratch: scratch.clone(),
        runs: 0,
    };
    let Some(failure) = trials.run(&plan)? else {
        outln!("seed {seed} passes: nothing to shrink");
        let _ = std::fs::remove_file(&scratch);
        return Ok(false);
    };
    let before = plan.events.len();
    let events = std::mem::take(&mut plan.events);
    // The first trial established the failure.
    plan.events = minimize(events, TRIALS_MAX - 1, |events| {
        let candidate = FaultPlan {
            events: events.to_vec(),
            heal_at_ms: plan.heal_at_ms,
        };
        Ok(trials.run(&candidate)?.as_ref() == Some(&failure))
    })?;
    let _ = std::fs::remove_file(&scratch);
    write_plan(out, &plan)?;
    outln!(
        "seed {seed} fails with {failure}: shrunk its plan from {before} faults to {} in {} trial runs",
        plan.events.len(),
        trials.runs
    );
    for event in &plan.events {
        outln!(
            "  at {:>6} ms  {}",
            event.at_ms,
            serde_json::to_string(&event.fault)?
        );
    }
    outln!("minimal plan in {}", out.display());
    outln!("replay: {}", replay_with_plan(args, seed, Some(out)));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimize_keeps_exactly_the_items_the_failure_needs() {
        // Fails whenever 3 and 7 are both present.
        let needed = |items: &[u32]| Ok(items.contains(&3) && items.contains(&7));
        let left = minimize((0..20).collect(), TRIALS_MAX, needed).expect("no error");
        assert_eq!(left, vec![3, 7]);
        // A failure that needs nothing shrinks to nothing.
        let all = |_: &[u32]| Ok(true);
        assert!(
            minimize((0..9).collect(), TRIALS_MAX, all)
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn minimize_stops_at_the_trial_bound() {
        let mut calls = 0;
        // Nothing can be dropped: every item is needed, the most trials.
        let bounded = minimize((0..100).collect::<Vec<u32>>(), 10, |_| {
            calls += 1;
            Ok(false)
        });
        let error = bounded.expect_err("100 items need more than 10 trials");
        assert!(error.to_string().contains("after 10 trial runs"), "{error}");
        assert_eq!(calls, 10);
    }
}
