//! What a role process logs when the operator sets nothing: Larder's own INFO lines (here the
//! proxy's "cluster secret loaded"), and with `--log-format json` one JSON object a line, as
//! log collectors read them.

// A real-process test: real files, sockets and time.
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_role_logs_its_own_info_lines_as_json_objects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let listen = listener.local_addr().expect("address");
    drop(listener);
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "id = 1001\nlisten = \"{listen}\"\ngroups = 1\nnodes = [{{ id = 1, address = \"127.0.0.1:9\" }}]\n"
        ),
    )
    .expect("write proxy config");
    let out = dir.path().join("proxy.out");
    let err = dir.path().join("proxy.err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_larder"))
        .env(larder_real::SECRET_VAR, larder_real::TEST_SECRET)
        .env_remove("RUST_LOG")
        .args(["proxy", "--log-format", "json", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(File::create(&out).expect("stdout file"))
        .stderr(File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn proxy");
    let started = Instant::now();
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("listening on")
    {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!(
                "the proxy ended ({status}): {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the proxy did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&err).expect("stderr");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(
        lines.iter().any(|line| line["level"] == "INFO"
            && line["fields"]["message"] == "cluster secret loaded"
            && line["fields"]["fingerprint"].is_string()),
        "{text}"
    );
}
