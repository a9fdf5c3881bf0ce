//! `larder admin dashboard`: a web page of the running cluster for an operator's browser.
//!
//! The page (`dashboard.html`, served at `/`) is static; its script polls `/api/cluster` once a
//! second and draws what it gets: the nodes (liveness, groups hosted and led), the groups
//! (replicas, leader and term, applied index per replica, slots), the slot map, migrations in
//! flight with their progress, the hot keys and slots, and two live charts. `/api/cluster` is
//! what `larder admin status --json`, `migrations` and `hotkeys` read (the center leader's
//! status and migrations, the leaders' hot reports merged), plus the proxy's figures from its
//! metrics endpoint when there is one: its command counter and latency histogram, from which
//! the page charts commands per second and p50/p99 latency between two polls. Without them
//! the throughput chart shows the log entries the groups' leaders applied per second.
//!
//! A plain HTTP/1.1 server on a std listener, one request per connection, one connection at a
//! time (a dashboard has few viewers and each answer takes milliseconds): a request head
//! larger than [`REQUEST_HEAD_MAX`] or slower than [`REQUEST_TIMEOUT`] is dropped, so no
//! client holds the server. It serves what `larder admin status` shows, to whoever reaches its
//! address, and takes no command: it listens on loopback unless told otherwise.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::Context;
use larder_protocol::{ClusterStatus, GetMigrations, Migration};
use serde::Serialize;

use crate::admin::{Centers, HotJson, ask_center, fetch_status, merge_hot, slot_ranges};

/// The page, with its script and styles inline (no other request, nothing from the network).
const PAGE: &str = include_str!("dashboard.html");
/// Largest request head read.
const REQUEST_HEAD_MAX: usize = 8 << 10;
/// Time a client has to send its request head, and the server to write its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// After refusing an oversized head: how long, and how much, of the rest is read and dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(100);
const DRAIN_BYTES_MAX: u64 = 64 << 10;
/// Largest metrics page read from the proxy.
const METRICS_BYTES_MAX: usize = 4 << 20;

/// What `/api/cluster` answers.
#[derive(Debug, Serialize)]
struct View {
    status: Option<ClusterStatus>,
    migrations: Vec<MigrationView>,
    hot: Option<HotJson>,
    proxy: Option<ProxyFigures>,
    /// Why the status is missing (no center leader answered).
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct MigrationView {
    id: u64,
    slots: String,
    from: u64,
    to: u64,
    phase: &'static str,
    active: bool,
    paused: bool,
    moved_records: u64,
    moved_bytes: u64,
    records_per_second: u64,
}

/// The proxy's cumulative figures, read from its metrics page.
#[derive(Debug, Default, PartialEq, Serialize)]
struct ProxyFigures {
    /// Commands answered, every family.
    commands: u64,
    /// The command latency histogram, every family summed: `(upper bound in seconds,
    /// cumulative count)`, ascending; the last bound is infinite (`f64::MAX` here: JSON has no
    /// infinity).
    latency: Vec<(f64, u64)>,
}

/// Serves the dashboard on `listen` until the process is stopped.
#[allow(clippy::disallowed_methods)] // A real server: real sockets.
pub fn serve(
    listen: SocketAddr,
    centers: &Centers,
    limit: Duration,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<bool> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr().context("the listener's address")?;
    outln!("dashboard: http://{address}/");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        if let Err(error) = answer(&mut stream, centers, limit, metrics, REQUEST_TIMEOUT) {
            tracing::debug!(%error, "dashboard request");
        }
    }
    Ok(true)
}

/// Reads one request from `stream` and answers it; a client slower than `timeout` to send its
/// head or to take the answer is dropped with an error ([`REQUEST_TIMEOUT`] when serving).
fn answer(
    stream: &mut TcpStream,
    centers: &Centers,
    limit: Duration,
    metrics: Option<SocketAddr>,
    timeout: Duration,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let Some(head) = read_head(stream)? else {
        respond(
            stream,
            "431 Request Header Fields Too Large",
            "text/plain",
            b"",
        )?;
        // Closing with the rest of the head unread would reset the connection and could
        // discard the answer before the client reads it: end our side, take what is already
        // on its way (briefly, and bounded), then close.
        stream.shutdown(std::net::Shutdown::Write)?;
        stream.set_read_timeout(Some(DRAIN_TIMEOUT))?;
        let _ = std::io::copy(&mut stream.take(DRAIN_BYTES_MAX), &mut std::io::sink());
        return Ok(());
    };
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" {
        return respond(
            stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
        );
    }
    match path.split('?').next().unwrap_or("") {
        "/" | "/index.html" => respond(
            stream,
            "200 OK",
            "text/html; charset=utf-8",
            PAGE.as_bytes(),
        ),
        "/api/cluster" => {
            let view = view(centers, limit, metrics);
            let body = serde_json::to_vec(&view).map_err(std::io::Error::other)?;
            respond(stream, "200 OK", "application/json", &body)
        }
        _ => respond(stream, "404 Not Found", "text/plain", b"not found\n"),
    }
}

/// The request head up to its blank line; `None` when it passes [`REQUEST_HEAD_MAX`].
fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > REQUEST_HEAD_MAX {
            return Ok(None);
        }
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..n]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

/// The cluster as the page shows it.
fn view(centers: &Centers, limit: Duration, metrics: Option<SocketAddr>) -> View {
    let proxy = metrics.and_then(|address| match proxy_figures(address, REQUEST_TIMEOUT) {
        Ok(figures) => Some(figures),
        Err(error) => {
            tracing::debug!(%error, "reading the proxy's metrics");
            None
        }
    });
    match fetch_status(centers, limit) {
        Ok(status) => {
            let migrations: Vec<Migration> =
                ask_center(centers, limit, GetMigrations).unwrap_or_default();
            View {
                hot: Some(merge_hot(&status)),
                status: Some(status),
                migrations: migrations
                    .iter()
                    .map(|m| MigrationView {
                        id: m.id,
                        slots: slot_ranges(&m.ranges),
                        from: m.from,
                        to: m.to,
                        phase: m.phase.name(),
                        active: m.phase.is_active(),
                        paused: m.paused,
                        moved_records: m.moved_records,
                        moved_bytes: m.moved_bytes,
                        records_per_second: m.records_per_second(),
                    })
                    .collect(),
                proxy,
                error: None,
            }
        }
        Err(error) => View {
            status: None,
            migrations: Vec::new(),
            hot: None,
            proxy,
            error: Some(format!("{error:#}")),
        },
    }
}

/// Reads the proxy's metrics page at `address` (`GET /metrics`): at most
/// [`METRICS_BYTES_MAX`] of it, each step within `timeout` ([`REQUEST_TIMEOUT`] when serving).
#[allow(clippy::disallowed_methods)] // A real client of a real endpoint.
fn proxy_figures(address: SocketAddr, timeout: Duration) -> std::io::Result<ProxyFigures> {
    let mut stream = TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: larder\r\nConnection: close\r\n\r\n")?;
    let mut page = Vec::new();
    stream
        .take(METRICS_BYTES_MAX as u64)
        .read_to_end(&mut page)?;
    Ok(parse_proxy_figures(&String::from_utf8_lossy(&page)))
}

/// The proxy's command count and latency histogram from a metrics page (OpenMetrics text),
/// every family summed.
fn parse_proxy_figures(page: &str) -> ProxyFigures {
    let mut figures = ProxyFigures::default();
    let mut buckets: std::collections::BTreeMap<u64, (f64, u64)> = Default::default();
    for line in page.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if series.starts_with("larder_proxy_commands_total{") {
            figures.commands += value as u64;
        } else if series.starts_with("larder_proxy_command_duration_seconds_bucket{") {
            let Some(le) = series
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
            else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::MAX
            } else {
                match le.parse::<f64>() {
                    Ok(bound) => bound,
                    Err(_) => continue,
                }
            };
            // Keyed by the bound's bits: positive floats order as their bits do.
            let entry = buckets.entry(bound.to_bits()).or_insert((bound, 0));
            entry.1 += value as u64;
        }
    }
    figures.latency = buckets.into_values().collect();
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_figures_sum_every_family() {
        let page = "# TYPE larder_proxy_commands counter\n\
            larder_proxy_commands_total{node=\"1001\",family=\"string\"} 40\n\
            larder_proxy_commands_total{node=\"1001\",family=\"hash\"} 2\n\
            larder_proxy_command_duration_seconds_bucket{node=\"1001\",family=\"string\",le=\"0.00005\"} 1\n\
            larder_proxy_command_duration_seconds_bucket{node=\"1001\",family=\"string\",le=\"0.0001\"} 30\n\
            larder_proxy_command_duration_seconds_bucket{node=\"1001\",family=\"string\",le=\"+Inf\"} 40\n\
            larder_proxy_command_duration_seconds_bucket{node=\"1001\",family=\"hash\",le=\"0.00005\"} 0\n\
            larder_proxy_command_duration_seconds_bucket{node=\"1001\",family=\"hash\",le=\"0.0001\"} 2\n\
            larder_proxy_command_duration_seconds_bucket{node=\"1001\",family=\"hash\",le=\"+Inf\"} 2\n\
            larder_proxy_command_duration_seconds_count{node=\"1001\",family=\"hash\"} 2\n\
            # EOF\n";
        let figures = parse_proxy_figures(page);
        assert_eq!(figures.commands, 42);
        assert_eq!(
            figures.latency,
            [(0.00005, 1), (0.0001, 32), (f64::MAX, 42)]
        );
    }

    /// One request through [`answer`] over loopback; the answer's status line.
    #[allow(clippy::disallowed_methods)] // Real sockets: the server's own.
    fn ask(request: &[u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        client.write_all(request).expect("send");
        let (mut served, _) = listener.accept().expect("accept");
        let centers = Centers {
            addresses: Vec::new(),
            key: larder_real::ClusterKey::from_secret(&[7; 32]).expect("key"),
        };
        answer(
            &mut served,
            &centers,
            Duration::from_millis(10),
            None,
            REQUEST_TIMEOUT,
        )
        .expect("answered");
        drop(served);
        let mut reply = String::new();
        client.read_to_string(&mut reply).expect("reply");
        reply.lines().next().unwrap_or_default().to_string()
    }

    #[test]
    fn the_server_serves_the_page_and_refuses_the_rest() {
        assert_eq!(ask(b"GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 200 OK");
        assert_eq!(ask(b"GET /nope HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
        assert_eq!(
            ask(b"POST / HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 405 Method Not Allowed"
        );
        // A head past the bound, never ended: answered at the bound, not read for ever.
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', REQUEST_HEAD_MAX + 2048));
        assert_eq!(ask(&big), "HTTP/1.1 431 Request Header Fields Too Large");
    }

    /// A client that starts a request and goes quiet holds the one-at-a-time server for the
    /// request timeout at most, then is dropped.
    #[test]
    #[allow(clippy::disallowed_methods)] // Real sockets and real time: the server's own.
    fn a_client_that_stalls_mid_head_is_dropped_at_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client =
            TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
        client.write_all(b"GET / HT").expect("send");
        let (mut served, _) = listener.accept().expect("accept");
        let centers = Centers {
            addresses: Vec::new(),
            key: larder_real::ClusterKey::from_secret(&[7; 32]).expect("key"),
        };
        let timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let result = answer(
            &mut served,
            &centers,
            Duration::from_millis(10),
            None,
            timeout,
        );
        let waited = started.elapsed();
        let error = result.expect_err("a stalled client is not answered");
        assert!(
            matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{error}"
        );
        assert!(waited >= timeout, "dropped before its time: {waited:?}");
        assert!(waited < timeout * 10, "held the server for {waited:?}");
        drop(client);
    }

    /// A metrics endpoint that never stops sending is read up to the cap, and one that never
    /// answers is given up at the timeout: the dashboard's answer waits for neither.
    #[test]
    #[allow(clippy::disallowed_methods)] // Real sockets and a real thread: the endpoint.
    fn a_metrics_page_is_read_up_to_its_cap_and_its_timeout() {
        const LINE: &[u8] = b"larder_proxy_commands_total{node=\"1001\",family=\"string\"} 1\n";
        let endless = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = endless.local_addr().expect("address");
        let sender = std::thread::spawn(move || {
            let (mut stream, _) = endless.accept().expect("accept");
            // Until the reader hangs up.
            while stream.write_all(LINE).is_ok() {}
        });
        let figures = proxy_figures(address, REQUEST_TIMEOUT).expect("a capped page");
        let whole_lines = (METRICS_BYTES_MAX / LINE.len()) as u64;
        assert!(
            (whole_lines - 1..=whole_lines).contains(&figures.commands),
            "read {} lines of an endless page, the cap holds {whole_lines}",
            figures.commands
        );
        sender.join().expect("sender");

        let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = silent.local_addr().expect("address");
        let timeout = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let error = proxy_figures(address, timeout).expect_err("no page from a silent endpoint");
        let waited = started.elapsed();
        assert!(
            matches!(
                error.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{error}"
        );
        assert!(waited >= timeout && waited < timeout * 10, "{waited:?}");
        drop(silent);
    }

    #[test]
    fn the_page_asks_for_what_the_server_serves() {
        assert!(PAGE.contains("/api/cluster"));
        assert!(PAGE.contains("id=\"nodes\""));
    }
}
