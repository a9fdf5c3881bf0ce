//! `larder sim --seed N --shrink`: minimizes a failing seed's fault plan. The seed's plan
//! (generated, or given with `--plan`) is cut down by delta debugging over its faults: a chunk
//! of faults is dropped whenever the run without it still fails the same way (a violation of
//! the same first invariant, or a crash), with chunks halving down to single faults. The heal
//! point, the workload and the seed stay as they were, so the minimal plan replays with
//! `--plan FILE` on the same command line.
//!
//! Every trial is a child process (`crate::child`); the number of trials is bounded by
//! `TRIALS_MAX`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use larder_faults::FaultPlan;

use crate::child::{Outcome, run_child, words_of};
use crate::{SimArgs, read_plan, replay_with_plan, sim_config};

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
        anyhow::ensure!(
            self.runs < TRIALS_MAX,
            "shrinking stopped after {TRIALS_MAX} trial runs"
        );
        self.runs += 1;
        write_plan(&self.scratch, plan)?;
        let words = words_of(&replay_with_plan(self.args, self.seed, Some(&self.scratch)));
        Ok(signature(&run_child(&words)?))
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
        println!("seed {seed} passes: nothing to shrink");
        let _ = std::fs::remove_file(&scratch);
        return Ok(false);
    };
    let before = plan.events.len();
    let mut chunk = plan.events.len().div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < plan.events.len() {
            let mut candidate = plan.clone();
            let end = (start + chunk).min(candidate.events.len());
            candidate.events.drain(start..end);
            if trials.run(&candidate)?.as_ref() == Some(&failure) {
                // Still fails the same way without these faults: they were not needed.
                plan = candidate;
            } else {
                start = end;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    let _ = std::fs::remove_file(&scratch);
    write_plan(out, &plan)?;
    println!(
        "seed {seed} fails with {failure}: shrunk its plan from {before} faults to {} in {} trial runs",
        plan.events.len(),
        trials.runs
    );
    for event in &plan.events {
        println!(
            "  at {:>6} ms  {}",
            event.at_ms,
            serde_json::to_string(&event.fault)?
        );
    }
    println!("minimal plan in {}", out.display());
    println!("replay: {}", replay_with_plan(args, seed, Some(out)));
    Ok(true)
}
