//! The byte-level readers that both parsers (requests and replies) are built from: CRLF
//! lines, strict decimal numbers, length-prefixed blobs, and the checks of a peer's declared
//! lengths and counts against [`Limits`].
//!
//! They are shared so that both directions enforce the same rules: incomplete input is
//! `Ok(None)` and consumes nothing, malformed input fails as soon as the offending byte
//! arrives, and no declared length is trusted before it has been checked.

use super::{LimitKind, Limits, RespError, u64_len};

/// `Ok(None)`: incomplete. `Ok(Some((value, next)))`: `next` is the offset after the value.
pub(super) type Parse<T> = Result<Option<(T, usize)>, RespError>;

/// Unwraps `Ok(Some(..))`, returns early on `Ok(None)` or `Err`.
macro_rules! ready {
    ($e:expr) => {
        match $e? {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}
pub(super) use ready;

/// Preallocation cap for aggregates: counts come from the peer, so trust them only this far and
/// let the vector grow with the data that actually arrives.
pub(super) const PREALLOC_MAX: usize = 64;

/// Longest decimal `i64` (`-9223372036854775808`).
const NUMBER_LINE_MAX: usize = 20;

pub(super) fn describe(byte: u8) -> String {
    byte.escape_ascii().to_string()
}

/// A CRLF-terminated line starting at `start`, of at most `max` bytes of content.
pub(super) fn line(
    buf: &[u8],
    start: usize,
    max: usize,
    too_long: impl FnOnce(usize) -> RespError,
) -> Parse<&[u8]> {
    let window = buf.get(start..).unwrap_or_default();
    let scan = &window[..window.len().min(max.saturating_add(1))];
    match scan.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if scan[i] == b'\n' => Err(RespError::protocol("expected '\\r\\n', got '\\n'")),
        Some(i) => match window.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&window[..i], start + i + 2))),
            Some(&b) => Err(RespError::protocol(format!(
                "expected '\\n' after '\\r', got '{}'",
                describe(b)
            ))),
        },
        None if window.len() > max => Err(too_long(window.len())),
        None => Ok(None),
    }
}

/// A CRLF-terminated decimal integer starting at `start`; `err` names what it is (Redis's
/// `invalid bulk length` and friends). Fails as soon as a byte cannot belong to a number, so a
/// missing CRLF or garbage is reported without waiting for more data.
pub(super) fn number_line(buf: &[u8], start: usize, err: &str) -> Parse<i64> {
    let window = buf.get(start..).unwrap_or_default();
    for (i, &b) in window.iter().enumerate().take(NUMBER_LINE_MAX + 1) {
        match b {
            b'\r' => {
                return match window.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => match parse_i64(&window[..i]) {
                        Some(n) => Ok(Some((n, start + i + 2))),
                        None => Err(RespError::protocol(err)),
                    },
                    Some(_) => Err(RespError::protocol(err)),
                };
            }
            b'0'..=b'9' | b'-' if i < NUMBER_LINE_MAX => {}
            _ => return Err(RespError::protocol(err)),
        }
    }
    Ok(None)
}

/// Strict decimal, as Redis's `string2ll`: optional `-`, no `+`, no leading zeros, no `-0`.
fn parse_i64(s: &[u8]) -> Option<i64> {
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    if digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // 19 digits fit in i128 with room to spare, so only the final narrowing can fail.
    let magnitude = digits
        .iter()
        .fold(0i128, |acc, &d| acc * 10 + i128::from(d - b'0'));
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// `len` bytes of data at `start` followed by CRLF. A wrong terminator is reported as soon as
/// its first byte arrives.
pub(super) fn blob(buf: &[u8], start: usize, len: usize) -> Parse<&[u8]> {
    let Some(end) = start.checked_add(len) else {
        return Err(RespError::protocol("invalid bulk length"));
    };
    match buf.get(end) {
        None => return Ok(None),
        Some(b'\r') => {}
        Some(_) => return Err(RespError::protocol("expected '\\r\\n' after bulk data")),
    }
    match buf.get(end + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((&buf[start..end], end + 2))),
        Some(_) => Err(RespError::protocol("expected '\\r\\n' after bulk data")),
    }
}

/// Checks a declared bulk length; callers that accept the null bulk (`-1`) handle it first.
pub(super) fn bulk_len(len: i64, limits: &Limits) -> Result<usize, RespError> {
    let Ok(len) = u64::try_from(len) else {
        return Err(RespError::protocol("invalid bulk length"));
    };
    if len > limits.bulk_bytes_max {
        return Err(RespError::TooLarge {
            what: LimitKind::BulkLength,
            len,
            max: limits.bulk_bytes_max,
        });
    }
    usize::try_from(len).map_err(|_| RespError::TooLarge {
        what: LimitKind::BulkLength,
        len,
        max: u64_len(usize::MAX),
    })
}

pub(super) fn aggregate_len(count: i64, limits: &Limits) -> Result<usize, RespError> {
    let Ok(count) = u64::try_from(count) else {
        return Err(RespError::protocol("invalid multibulk length"));
    };
    if count > limits.args_max {
        return Err(RespError::TooLarge {
            what: LimitKind::MultibulkLength,
            len: count,
            max: limits.args_max,
        });
    }
    usize::try_from(count).map_err(|_| RespError::protocol("invalid multibulk length"))
}
