//! End-to-end TLS for clients: a `larder node` process (static mode, one slot group) and a
//! `larder proxy` process with `tls_port` and `tls_auth_clients = "yes"`, driven by the real
//! `redis-cli --tls` (OpenSSL, not rustls, on the client side). A client with a certificate
//! signed by the proxy's CA writes and reads; one without a certificate, or with one from
//! another CA, is refused; the plain port serves the same data; and a proxy file with
//! `tls_port` but no certificate stops `larder proxy` at start with an error naming the
//! missing setting.

// A real-process test: real time, real processes.
#![allow(clippy::disallowed_methods)]

#[path = "../../../nodes/proxy/tests/proxy/pki.rs"]
mod pki;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pki::Pki;

/// Kills the process on drop, so a failing test leaves nothing behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn larder(role: &str, config: &Path, log: &Path) -> Command {
    let log = File::create(log).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_larder"));
    command
        .env(larder_real::SECRET_VAR, larder_real::TEST_SECRET)
        .env("RUST_LOG", "info,openraft=warn")
        .arg(role)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log);
    command
}

/// Distinct free loopback addresses (every listener is held until all are chosen).
fn free_addresses<const N: usize>() -> [SocketAddr; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("address"))
}

/// `redis-cli` against `address` with `options` before the command `args`.
fn redis_cli(address: SocketAddr, options: &[&Path], flags: &[&str], args: &[&str]) -> Output {
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", "127.0.0.1", "-p", &address.port().to_string()])
        .args(flags);
    for option in options {
        command.arg(option);
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli must be installed (apt-get install redis-tools; .ci/run does)")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[test]
fn redis_cli_over_tls_with_client_certificates() {
    let help = Command::new("redis-cli")
        .arg("--help")
        .output()
        .expect("redis-cli must be installed (apt-get install redis-tools; .ci/run does)");
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--cacert")
            || String::from_utf8_lossy(&help.stderr).contains("--cacert"),
        "this redis-cli was built without TLS"
    );
    let pki = Pki::new();
    let dir = pki.ca.parent().expect("the PKI's directory");
    let [node, plain, tls] = free_addresses::<3>();
    let node_config = dir.join("node.toml");
    std::fs::write(
        &node_config,
        format!(
            "id = 1\nlisten = \"{node}\"\ndata_dir = \"{}\"\ngroups = 1\ninitialize = true\n",
            dir.join("node-data").display()
        ),
    )
    .expect("write node config");
    let proxy_config = dir.join("proxy.toml");
    let toml_path = |p: &PathBuf| format!("\"{}\"", p.display());
    std::fs::write(
        &proxy_config,
        format!(
            "id = 1001\nlisten = \"{plain}\"\ngroups = 1\nnodes = [{{ id = 1, address = \"{node}\" }}]\n\
             tls_port = {}\ntls_cert_file = {}\ntls_key_file = {}\ntls_ca_cert_file = {}\n\
             tls_auth_clients = \"yes\"\n",
            tls.port(),
            toml_path(&pki.server_cert),
            toml_path(&pki.server_key),
            toml_path(&pki.ca),
        ),
    )
    .expect("write proxy config");
    let node_log = dir.join("node.log");
    let proxy_log = dir.join("proxy.log");
    let _node = Running(
        larder("node", &node_config, &node_log)
            .spawn()
            .expect("spawn node"),
    );
    let _proxy = Running(
        larder("proxy", &proxy_config, &proxy_log)
            .spawn()
            .expect("spawn proxy"),
    );

    let trusted: [&Path; 6] = [
        Path::new("--cacert"),
        &pki.ca,
        Path::new("--cert"),
        &pki.client_cert,
        Path::new("--key"),
        &pki.client_key,
    ];
    // The group elects its leader after start: until then the proxy is unreachable or
    // answers TRYAGAIN.
    let started = Instant::now();
    loop {
        let set = redis_cli(tls, &trusted, &["--tls"], &["SET", "tls-key", "tls-value"]);
        if stdout(&set) == "OK" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no write over TLS in 60 s: {set:?}\nproxy log:\n{}\nnode log:\n{}",
            log_tail(&proxy_log),
            log_tail(&node_log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let get = redis_cli(tls, &trusted, &["--tls"], &["GET", "tls-key"]);
    assert_eq!(stdout(&get), "tls-value", "{get:?}");
    let info = redis_cli(tls, &trusted, &["--tls"], &["INFO", "server"]);
    assert!(
        stdout(&info).contains(&format!("tls_port:{}", tls.port())),
        "{info:?}"
    );

    // Refused: no certificate, a certificate from another CA.
    let anonymous: [&Path; 2] = [Path::new("--cacert"), &pki.ca];
    let rogue: [&Path; 6] = [
        Path::new("--cacert"),
        &pki.ca,
        Path::new("--cert"),
        &pki.rogue_cert,
        Path::new("--key"),
        &pki.rogue_key,
    ];
    for (who, options) in [
        ("no certificate", &anonymous[..]),
        ("another CA", &rogue[..]),
    ] {
        let refused = redis_cli(tls, options, &["--tls"], &["GET", "tls-key"]);
        assert!(
            !refused.status.success() && !stdout(&refused).contains("tls-value"),
            "a client with {who} was served: {refused:?}"
        );
    }
    // Plain RESP on the TLS port gets no answer; the plain port serves the same data.
    let plain_on_tls = redis_cli(tls, &[], &[], &["GET", "tls-key"]);
    assert!(
        !plain_on_tls.status.success() && !stdout(&plain_on_tls).contains("tls-value"),
        "{plain_on_tls:?}"
    );
    let get = redis_cli(plain, &[], &[], &["GET", "tls-key"]);
    assert_eq!(stdout(&get), "tls-value", "{get:?}");
    // The proxy survived all of it.
    let get = redis_cli(tls, &trusted, &["--tls"], &["GET", "tls-key"]);
    assert_eq!(stdout(&get), "tls-value", "{get:?}");
}

#[test]
fn a_tls_port_without_a_certificate_stops_the_proxy_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let [node, plain, tls] = free_addresses::<3>();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "id = 1001\nlisten = \"{plain}\"\ngroups = 1\nnodes = [{{ id = 1, address = \"{node}\" }}]\ntls_port = {}\n",
            tls.port()
        ),
    )
    .expect("write proxy config");
    let log = dir.path().join("proxy.log");
    let mut child = larder("proxy", &config, &log).spawn().expect("spawn proxy");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("larder proxy kept running without a certificate");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("tls_port needs tls_cert_file and tls_key_file"),
        "{text}"
    );
}
