//! `MONITOR`: every command the proxy's clients run, as a line each to the connections that
//! asked, in Redis 7.0's format (`+1733363212.123000 [0 127.0.0.1:50200] "set" "k" "v"`).
//!
//! What is shown is what Redis shows: commands that ran (an unknown command, a wrong arity or a
//! refused `AUTH` never ran), not the administrative ones (`CONFIG`, `CLIENT KILL`, `MONITOR`
//! itself: the table's `admin` flag), with the passwords of `AUTH` and `HELLO … AUTH`
//! replaced by `(redacted)`; a transaction's commands when `EXEC` runs them, just before its own
//! line. While anyone monitors, the proxy runs each command alone (no pipeline runs), so every
//! command is seen with its own arguments and in its connection's order.
//!
//! Nothing is built while nobody monitors (one atomic load a command). The lines go through a
//! bounded broadcast ([`MONITOR_BACKLOG`] lines): a monitor that falls that far behind (it does
//! not read its socket) is disconnected rather than let the proxy hold an unbounded backlog, and
//! counted (`ProxyStats::monitors_dropped`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::broadcast;

/// Lines a monitor may fall behind before it is disconnected.
pub const MONITOR_BACKLOG: usize = 4096;

/// The monitoring connections' feed.
#[derive(Debug)]
pub struct Monitors {
    watching: Arc<AtomicUsize>,
    lines: broadcast::Sender<Bytes>,
}

impl Default for Monitors {
    fn default() -> Self {
        Monitors {
            watching: Arc::new(AtomicUsize::new(0)),
            lines: broadcast::channel(MONITOR_BACKLOG).0,
        }
    }
}

/// One monitoring connection's subscription; it stops counting as a monitor when dropped.
pub struct Watching {
    watching: Arc<AtomicUsize>,
    pub lines: broadcast::Receiver<Bytes>,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.watching.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Monitors {
    /// Whether any connection monitors.
    pub fn active(&self) -> bool {
        self.watching.load(Ordering::Relaxed) > 0
    }

    pub fn watch(&self) -> Watching {
        self.watching.fetch_add(1, Ordering::Relaxed);
        Watching {
            watching: self.watching.clone(),
            lines: self.lines.subscribe(),
        }
    }

    /// Shows a command `args` that ran for the client at `from`, at `wall_us` (µs since the
    /// epoch).
    pub fn feed(&self, wall_us: u64, from: Option<SocketAddr>, args: &[Bytes]) {
        if self.active() {
            // No receiver left (the last monitor just went): nobody to show it to.
            let _ = self.lines.send(line(wall_us, from, args));
        }
    }
}

/// The argument positions whose values are secrets: `AUTH`'s, and `HELLO`'s after `AUTH`.
fn redacted(args: &[Bytes]) -> impl Fn(usize) -> bool + '_ {
    let name = args
        .first()
        .map(|name| name.to_ascii_lowercase())
        .unwrap_or_default();
    let hello_auth = if name == b"hello" {
        args.iter()
            .position(|arg| arg.eq_ignore_ascii_case(b"auth"))
            .map(|at| at + 1..at + 3)
    } else {
        None
    };
    move |at| {
        (name == b"auth" && at > 0) || hello_auth.as_ref().is_some_and(|range| range.contains(&at))
    }
}

/// Redis's monitor line for `args`.
pub fn line(wall_us: u64, from: Option<SocketAddr>, args: &[Bytes]) -> Bytes {
    let mut out = String::with_capacity(64);
    let from = from.map_or_else(|| "-".to_string(), |addr| addr.to_string());
    let _ = write!(
        out,
        "+{}.{:06} [0 {from}]",
        wall_us / 1_000_000,
        wall_us % 1_000_000
    );
    let secret = redacted(args);
    for (at, arg) in args.iter().enumerate() {
        out.push(' ');
        if secret(at) {
            out.push_str("\"(redacted)\"");
        } else {
            quote(arg, &mut out);
        }
    }
    out.push_str("\r\n");
    Bytes::from(out)
}

/// An argument quoted as Redis's `sdscatrepr` quotes it.
fn quote(arg: &[u8], out: &mut String) {
    out.push('"');
    for &byte in arg {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            b' '..=b'~' => out.push(byte as char),
            other => {
                let _ = write!(out, "\\x{other:02x}");
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split_args as args;

    #[test]
    fn a_line_is_redis_s_with_quoted_arguments_and_secrets_redacted() {
        let from = Some("127.0.0.1:50200".parse().unwrap());
        assert_eq!(
            line(1_733_363_212_000_042, from, &args("set k v")),
            Bytes::from_static(b"+1733363212.000042 [0 127.0.0.1:50200] \"set\" \"k\" \"v\"\r\n")
        );
        let odd = [
            Bytes::from_static(b"set"),
            Bytes::from_static(b"a \"b\"\\"),
            Bytes::from_static(b"\r\n\t\x07\x08\x00\xff"),
        ];
        assert_eq!(
            line(0, None, &odd),
            Bytes::from_static(
                b"+0.000000 [0 -] \"set\" \"a \\\"b\\\"\\\\\" \"\\r\\n\\t\\a\\b\\x00\\xff\"\r\n"
            )
        );
        assert_eq!(
            line(0, None, &args("AUTH user secret")),
            Bytes::from_static(b"+0.000000 [0 -] \"AUTH\" \"(redacted)\" \"(redacted)\"\r\n")
        );
        assert_eq!(
            line(0, None, &args("hello 3 AUTH user secret SETNAME x")),
            Bytes::from_static(
                b"+0.000000 [0 -] \"hello\" \"3\" \"AUTH\" \"(redacted)\" \"(redacted)\" \"SETNAME\" \"x\"\r\n"
            )
        );
    }

    #[tokio::test]
    async fn lines_reach_every_monitor_and_none_are_built_without_one() {
        let monitors = Monitors::default();
        assert!(!monitors.active());
        monitors.feed(0, None, &args("get nobody"));
        let mut one = monitors.watch();
        let mut two = monitors.watch();
        assert!(monitors.active());
        monitors.feed(1, None, &args("get k"));
        let want = line(1, None, &args("get k"));
        assert_eq!(one.lines.recv().await.unwrap(), want);
        assert_eq!(two.lines.recv().await.unwrap(), want);
        drop(one);
        drop(two);
        assert!(!monitors.active());
    }

    #[tokio::test]
    async fn a_monitor_that_falls_a_backlog_behind_learns_it() {
        let monitors = Monitors::default();
        let mut slow = monitors.watch();
        for i in 0..=MONITOR_BACKLOG as u64 {
            monitors.feed(i, None, &args("get k"));
        }
        assert!(matches!(
            slow.lines.recv().await,
            Err(broadcast::error::RecvError::Lagged(1))
        ));
    }
}
