//! The binary's output into a reader that leaves early (`larder check FILE | head`,
//! `larder sim ... | head -1`): the process ends quietly, as a Unix tool killed by SIGPIPE,
//! not with a panic and a backtrace.

use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_the_run_quietly_with_the_sigpipe_status() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["sim", "--seed", "1", "--duration", "2s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("larder sim starts");
    // The reader goes before anything is written: the first line of the summary meets a
    // closed pipe.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("larder sim ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(141), "{stderr}");
}
