//! `larder sim --bug-matrix --seeds A..B`: tests of the tests. Every seed runs once with no bug
//! (it must pass) and once with each bug of the catalog (`larder_core::bugs::Bug::ALL`)
//! planted; the table says which seeds caught which bug. It fails if a clean seed fails or a
//! bug goes uncaught.
//!
//! Each run is a child process (`larder::child`), in parallel, one per core.

use std::collections::BTreeMap;
use std::sync::Mutex;

use larder_core::bugs::{Bug, Bugs};

use crate::{SimArgs, replay_command};
use larder::child::{Outcome, run_child, words_of};

fn run_one(args: &SimArgs, seed: u64, bug: Option<Bug>) -> anyhow::Result<Outcome> {
    let mut words = words_of(&replay_command(args, seed));
    if let Some(bug) = bug {
        words.extend(["--bug".to_string(), bug.name().to_string()]);
    }
    run_child(&std::env::current_exe()?, &words)
}

pub fn run_matrix(args: &SimArgs, seeds: &[u64]) -> anyhow::Result<bool> {
    if !Bugs::PLANTABLE {
        anyhow::bail!(
            "--bug-matrix needs a build that can plant bugs: cargo run --release -p larder \
             --features planted-bugs -- sim --bug-matrix …"
        );
    }
    let started = wall_now();
    let mut jobs: Vec<(u64, Option<Bug>)> = Vec::new();
    for &seed in seeds {
        jobs.push((seed, None));
        jobs.extend(Bug::ALL.into_iter().map(|bug| (seed, Some(bug))));
    }
    let total = jobs.len();
    let queue = Mutex::new(jobs.into_iter());
    let results: Mutex<BTreeMap<(Option<Bug>, u64), Outcome>> = Mutex::new(BTreeMap::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let Some((seed, bug)) = queue.lock().expect("queue").next() else {
                            return Ok(());
                        };
                        let outcome = run_one(args, seed, bug)?;
                        let mut results = results.lock().expect("results");
                        results.insert((bug, seed), outcome);
                        eprint!("\r{}/{total} runs", results.len());
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("matrix worker")?;
        }
        Ok(())
    })?;
    eprintln!();
    let results = results.into_inner().expect("results");
    let caught = |bug: Option<Bug>| -> Vec<(u64, Outcome)> {
        seeds
            .iter()
            .filter_map(|&seed| {
                let outcome = results[&(bug, seed)].clone();
                (!outcome.passed()).then_some((seed, outcome))
            })
            .collect()
    };
    let clean_failures = caught(None);
    for (seed, outcome) in &clean_failures {
        outln!("seed {seed} {outcome:?} WITHOUT A BUG");
    }
    outln!(
        "{:<32} {:>9} {:>6} {:>5}  catching seeds (* crashed, ~ never finished)",
        "bug",
        "caught",
        "first",
        "rate"
    );
    let mut firsts = Vec::new();
    let mut uncaught = 0;
    for bug in Bug::ALL {
        let catches = caught(Some(bug));
        match catches.first() {
            Some((first, _)) => firsts.push(*first),
            None => uncaught += 1,
        }
        let list: Vec<String> = catches
            .iter()
            .map(|(seed, outcome)| match outcome {
                Outcome::Crashed => format!("{seed}*"),
                Outcome::Unfinished(_) => format!("{seed}~"),
                _ => seed.to_string(),
            })
            .collect();
        outln!(
            "{:<32} {:>4}/{:<4} {:>6} {:>4.0}%  {}",
            bug.name(),
            catches.len(),
            seeds.len(),
            catches
                .first()
                .map_or("-".to_string(), |(seed, _)| seed.to_string()),
            100.0 * catches.len() as f64 / seeds.len().max(1) as f64,
            list.join(" ")
        );
    }
    firsts.sort_unstable();
    let median = firsts
        .get(firsts.len().saturating_sub(1) / 2)
        .map_or("-".to_string(), |seed| seed.to_string());
    outln!(
        "no bug: {} of {} seeds failed; {} of {} bugs caught; median first catching seed {median}; {:.0} s",
        clean_failures.len(),
        seeds.len(),
        Bug::ALL.len() - uncaught,
        Bug::ALL.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(clean_failures.is_empty() && uncaught == 0)
}

/// The matrix reports its own wall time (the user waits in real time).
fn wall_now() -> std::time::Instant {
    std::time::Instant::now()
}
