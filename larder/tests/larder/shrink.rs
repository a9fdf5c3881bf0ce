//! `larder sim --shrink`: a planted bug's failing seed shrinks to a plan of at most three
//! faults that still fails, and the printed replay command (`--plan FILE`) reproduces it.

// Spawns the larder binary and reads the plan it writes: a test of real processes.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

const SEED: &str = "4";
const BUG: &str = "dead-node-stays-up";

/// `larder sim` on the test's seed, with `extra` arguments.
fn sim(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_larder"))
        .args([
            "sim",
            "--seed",
            SEED,
            "--cluster",
            "--swarm",
            "--duration",
            "15s",
        ])
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run larder")
}

/// The same, with the bug planted.
fn larder(extra: &[&str]) -> std::process::Output {
    sim(&[&["--bug", BUG], extra].concat())
}

#[test]
fn a_planted_bugs_failing_seed_shrinks_to_a_small_plan_that_still_fails() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = dir.path().join("plan.json");
    let shrink = larder(&[
        "--shrink",
        "--shrink-out",
        out.to_str().expect("utf-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&shrink.stdout);
    assert!(
        shrink.status.success(),
        "shrink failed: {stdout}{}",
        String::from_utf8_lossy(&shrink.stderr)
    );
    assert!(stdout.contains("replay: larder sim --seed 4"), "{stdout}");
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("plan written"))
            .expect("plan is JSON");
    let faults = plan["events"].as_array().expect("events").len();
    assert!(
        (1..=3).contains(&faults),
        "shrunk to {faults} faults: {plan}"
    );
    // The minimal plan still fails, and without the bug it passes.
    let replay = larder(&["--plan", out.to_str().expect("utf-8 path"), "--json"]);
    let summary: serde_json::Value =
        serde_json::from_slice(&replay.stdout).expect("a JSON summary");
    assert_eq!(summary["passed"], false, "{summary}");
    let clean = sim(&["--plan", out.to_str().expect("utf-8 path"), "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&clean.stdout).expect("a JSON summary");
    assert_eq!(summary["passed"], true, "{summary}");
}
