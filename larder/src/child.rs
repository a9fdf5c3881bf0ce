//! One `larder sim` run in a child process, for the commands that run many (`--bug-matrix`,
//! `--shrink`): a planted bug may trip an assertion inside openraft whose panic aborts the
//! process (a panic while unwinding the simulation's tasks). In a child that is one failed
//! run, not a lost sweep.

use std::path::Path;
use std::process::Command;

/// How a child run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// Violations were reported; their invariant names (`not_linearizable`, …), in order.
    Failed(Vec<String>),
    /// The process died without a summary (a panic or an abort): an assertion fired.
    Crashed,
    /// The simulation could not finish (turmoil gave up on it: its clients never completed,
    /// as when no group can elect a leader), with the error the run printed.
    Unfinished(String),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        *self == Outcome::Passed
    }
}

/// Runs `<larder> <words> --json` (the words of a replay command, without `larder`), where
/// `larder` is the binary to run (the running one, or a test's `CARGO_BIN_EXE_larder`).
pub fn run_child(larder: &Path, words: &[String]) -> anyhow::Result<Outcome> {
    let output = Command::new(larder)
        .args(words)
        .arg("--json")
        .env("RUST_BACKTRACE", "0")
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // `--json` prints one pretty JSON summary; a crashed run printed none.
    let summary: Option<serde_json::Value> = serde_json::from_str(stdout.trim()).ok();
    let Some(summary) = summary else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A run the simulator could not finish is a catch (`SimError::Turmoil`, reported
        // with its seed); any other error is a command line the child refused: our mistake.
        if let Some(line) = stderr
            .lines()
            .find(|line| line.starts_with("error: ") && line.contains(": simulation failed at "))
        {
            return Ok(Outcome::Unfinished(
                line.trim_start_matches("error: ").to_string(),
            ));
        }
        if stderr.starts_with("error: ") {
            anyhow::bail!("larder {} refused: {stderr}", words.join(" "));
        }
        return Ok(Outcome::Crashed);
    };
    if summary.get("passed").and_then(serde_json::Value::as_bool) == Some(true)
        && output.status.success()
    {
        return Ok(Outcome::Passed);
    }
    let invariants = summary
        .get("invariants")
        .and_then(serde_json::Value::as_array)
        .map(|invariants| {
            invariants
                .iter()
                .filter_map(serde_json::Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(Outcome::Failed(invariants))
}

/// The words of `replay` (a `larder sim …` command) without the leading `larder`.
pub fn words_of(replay: &str) -> Vec<String> {
    replay
        .split_whitespace()
        .skip(1)
        .map(String::from)
        .collect()
}
