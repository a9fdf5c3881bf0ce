//! The Redis protocol (RESP2 and RESP3) as pure functions over byte slices: no I/O, no state.
//!
//! - [`parse_request`] reads one client command (multibulk or inline, as Redis accepts them).
//! - [`parse_frame`] reads one server reply of any RESP2/RESP3 type (for clients and tests).
//! - [`encode_frame`] writes a reply for a connection's negotiated [`Protocol`], degrading RESP3
//!   types to their RESP2 equivalents the way Redis does for `HELLO 2` clients.
//!
//! Parsers return `Ok(None)` while the input is incomplete and never consume a partial message,
//! so a caller appends what it reads to its buffer and calls again. Every declared length is
//! checked against [`Limits`] *before* waiting for the data, and nothing is preallocated from an
//! attacker-controlled count beyond a small cap, so a hostile client cannot make the proxy
//! reserve memory by merely announcing a large value. Any error is final for the connection:
//! answer with [`RespError::to_frame`] and close, as Redis does.

use bytes::Bytes;

use crate::kv::Reply;

/// One RESP value.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+text` (never contains CR or LF; the encoder replaces them with spaces).
    Simple(String),
    /// `-CODE text`; the text starts with the Redis error code (`ERR`, `WRONGTYPE`, …).
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$len` data; `None` is the RESP2 null bulk string `$-1`.
    Bulk(Option<Bytes>),
    /// `*n` elements; `None` is the RESP2 null array `*-1`.
    Array(Option<Vec<Frame>>),
    /// RESP3 `_`; `$-1` in RESP2.
    Null,
    /// RESP3 `%n` pairs; a flat array of `2n` elements in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `,`; a bulk string in RESP2.
    Double(f64),
    /// RESP3 `#t`/`#f`; `:1`/`:0` in RESP2.
    Boolean(bool),
    /// RESP3 `~n`; an array in RESP2.
    Set(Vec<Frame>),
    /// RESP3 `>n` out-of-band data (pub/sub, tracking); an array in RESP2.
    Push(Vec<Frame>),
    /// RESP3 `=len fmt:text` (`fmt` is `txt` or `mkd`); a bulk string of `text` in RESP2.
    Verbatim { format: [u8; 3], text: Bytes },
    /// RESP3 `(digits`, an integer of any size, as its decimal text; a bulk string in RESP2.
    BigNumber(String),
}

impl Frame {
    /// `+OK`
    pub fn ok() -> Frame {
        Frame::Simple("OK".to_owned())
    }

    /// An error reply; `text` should start with its error code (`ERR …`).
    pub fn error(text: impl Into<String>) -> Frame {
        Frame::Error(text.into())
    }

    /// A bulk string.
    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(Some(data.into()))
    }
}

impl From<&Reply> for Frame {
    fn from(reply: &Reply) -> Frame {
        match reply {
            Reply::Ok => Frame::ok(),
            Reply::Status(s) => Frame::Simple(s.clone()),
            // `Null` rather than `Bulk(None)` so a RESP3 client sees `_`, as Redis sends it.
            Reply::Nil => Frame::Null,
            Reply::Int(n) => Frame::Integer(*n),
            Reply::Bulk(b) => Frame::Bulk(Some(b.clone())),
            Reply::Array(items) => Frame::Array(Some(items.iter().map(Frame::from).collect())),
            Reply::Error(e) => Frame::Error(e.clone()),
        }
    }
}

impl From<Reply> for Frame {
    fn from(reply: Reply) -> Frame {
        Frame::from(&reply)
    }
}

/// The protocol a connection speaks (`HELLO 2` / `HELLO 3`; RESP2 until the client says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// Bounds on what the parsers accept. Construct with `Limits { field: x, ..Limits::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string. Redis's `proto-max-bulk-len` defaults to 512 MiB; we take 64 MiB so
    /// a few concurrent large writes cannot exhaust a proxy.
    pub bulk_bytes_max: u64,
    /// Most arguments in one request, and most elements in one reply aggregate.
    pub args_max: u64,
    /// Longest inline command line (Redis's `PROTO_INLINE_MAX_SIZE`), and longest simple-string
    /// or error line in a reply.
    pub inline_bytes_max: u64,
    /// Largest whole multibulk request, summed over its declared lengths, so many large
    /// arguments cannot add up to an unbounded buffer (Redis bounds this with
    /// `client-query-buffer-limit`).
    pub request_bytes_max: u64,
    /// Deepest nesting of aggregates in a reply; the parser recurses, so this bounds its stack.
    pub depth_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bulk_bytes_max: 64 * 1024 * 1024,
            args_max: 1024 * 1024,
            inline_bytes_max: 64 * 1024,
            request_bytes_max: 128 * 1024 * 1024,
            depth_max: 64,
        }
    }
}

/// Which limit a message broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    BulkLength,
    MultibulkLength,
    InlineRequest,
    RequestSize,
    LineLength,
    Depth,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::BulkLength => "bulk length",
            LimitKind::MultibulkLength => "multibulk length",
            LimitKind::InlineRequest => "inline request size",
            LimitKind::RequestSize => "request size",
            LimitKind::LineLength => "line length",
            LimitKind::Depth => "nesting depth",
        })
    }
}

/// A malformed or oversized message. The `Display` text is what Redis would put after `-ERR `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// The bytes are not RESP (`invalid bulk length`, `unbalanced quotes in request`, …).
    #[error("Protocol error: {0}")]
    Protocol(String),
    /// A declared or observed size is above its limit. `len` is a lower bound when the message
    /// was still incomplete.
    #[error("Protocol error: {what} {len} is above the limit of {max}")]
    TooLarge { what: LimitKind, len: u64, max: u64 },
}

impl RespError {
    /// The reply to send before closing the connection: `-ERR Protocol error: …`.
    pub fn to_frame(&self) -> Frame {
        Frame::Error(format!("ERR {self}"))
    }

    fn protocol(msg: impl Into<String>) -> RespError {
        RespError::Protocol(msg.into())
    }
}

/// `Ok(None)`: incomplete. `Ok(Some((value, next)))`: `next` is the offset after the value.
type Parse<T> = Result<Option<(T, usize)>, RespError>;

/// Unwraps `Ok(Some(..))`, returns early on `Ok(None)` or `Err`.
macro_rules! ready {
    ($e:expr) => {
        match $e? {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

/// Preallocation cap for aggregates: counts come from the peer, so trust them only this far and
/// let the vector grow with the data that actually arrives.
const PREALLOC_MAX: usize = 64;

/// Longest decimal `i64` (`-9223372036854775808`).
const NUMBER_LINE_MAX: usize = 20;

/// Longest line a double may take (Rust's `Debug` and `%.17g` both stay far below this).
const DOUBLE_LINE_MAX: usize = 1024;

fn u64_len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn describe(byte: u8) -> String {
    byte.escape_ascii().to_string()
}

/// A CRLF-terminated line starting at `start`, of at most `max` bytes of content.
fn line(
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
fn number_line(buf: &[u8], start: usize, err: &str) -> Parse<i64> {
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
fn blob(buf: &[u8], start: usize, len: usize) -> Parse<&[u8]> {
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
fn bulk_len(len: i64, limits: &Limits) -> Result<usize, RespError> {
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

fn aggregate_len(count: i64, limits: &Limits) -> Result<usize, RespError> {
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

/// Reads one client command from the start of `buf`: its arguments and the bytes it took, or
/// `Ok(None)` if more input is needed.
///
/// A buffer starting with `*` is a multibulk request (`*N\r\n$len\r\narg\r\n…`); anything else
/// is an inline command, a line of words split the way `redis-cli`/telnet users expect (see
/// [`split_inline`]). An empty command (`*0`, `*-1`, a blank line) parses to no arguments: the
/// caller consumes it and does nothing, as Redis does.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Vec<Bytes>, usize)>, RespError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

fn parse_multibulk(buf: &[u8], limits: &Limits) -> Parse<Vec<Bytes>> {
    let (count, mut pos) = ready!(number_line(buf, 1, "invalid multibulk length"));
    // Redis ignores empty multibulks; -1 is the only negative count that means "null".
    if count == 0 || count == -1 {
        return Ok(Some((Vec::new(), pos)));
    }
    let count = aggregate_len(count, limits)?;
    let mut args = Vec::with_capacity(count.min(PREALLOC_MAX));
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&b) => {
                return Err(RespError::protocol(format!(
                    "expected '$', got '{}'",
                    describe(b)
                )));
            }
        }
        let (len, data_start) = ready!(number_line(buf, pos + 1, "invalid bulk length"));
        let len = bulk_len(len, limits)?;
        // Judge the request by what it declares, before any of the data has to arrive.
        let declared_end = u64_len(data_start)
            .saturating_add(u64_len(len))
            .saturating_add(2);
        if declared_end > limits.request_bytes_max {
            return Err(RespError::TooLarge {
                what: LimitKind::RequestSize,
                len: declared_end,
                max: limits.request_bytes_max,
            });
        }
        let (data, next) = ready!(blob(buf, data_start, len));
        args.push(Bytes::copy_from_slice(data));
        pos = next;
    }
    Ok(Some((args, pos)))
}

fn parse_inline(buf: &[u8], limits: &Limits) -> Parse<Vec<Bytes>> {
    let max = usize::try_from(limits.inline_bytes_max).unwrap_or(usize::MAX);
    let scan = &buf[..buf.len().min(max.saturating_add(1))];
    let Some(newline) = scan.iter().position(|&b| b == b'\n') else {
        if buf.len() > max {
            return Err(RespError::TooLarge {
                what: LimitKind::InlineRequest,
                len: u64_len(buf.len()),
                max: limits.inline_bytes_max,
            });
        }
        return Ok(None);
    };
    let line = &buf[..newline];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let args = split_inline(line)?;
    if u64_len(args.len()) > limits.args_max {
        return Err(RespError::TooLarge {
            what: LimitKind::MultibulkLength,
            len: u64_len(args.len()),
            max: limits.args_max,
        });
    }
    Ok(Some((args, newline + 1)))
}

/// Splits an inline command line into words like Redis's `sdssplitargs`: words are separated by
/// whitespace; `"…"` quotes allow the escapes `\n \r \t \b \a \\ \" \xHH`; `'…'` quotes allow
/// `\'`; a closing quote must be followed by whitespace or the end of the line. (Unlike the C
/// code, a NUL byte is an ordinary character rather than the end of the line.)
pub fn split_inline(line: &[u8]) -> Result<Vec<Bytes>, RespError> {
    let unbalanced = || RespError::protocol("unbalanced quotes in request");
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let at = |i: usize| line.get(i).copied();
    let mut words = Vec::new();
    let mut i = 0;
    loop {
        while at(i).is_some_and(is_space) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(words);
        }
        let mut word = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let Some(c) = at(i) else {
                if in_double || in_single {
                    return Err(unbalanced());
                }
                break;
            };
            if in_double {
                match (c, at(i + 1)) {
                    (b'\\', Some(b'x'))
                        if at(i + 2).is_some_and(|h| h.is_ascii_hexdigit())
                            && at(i + 3).is_some_and(|h| h.is_ascii_hexdigit()) =>
                    {
                        let hex = |h: u8| (h as char).to_digit(16).unwrap_or(0) as u8;
                        word.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                        i += 3;
                    }
                    (b'\\', Some(e)) => {
                        word.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 1;
                    }
                    (b'"', next) => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return Err(unbalanced());
                        }
                        i += 1;
                        break;
                    }
                    _ => word.push(c),
                }
            } else if in_single {
                match (c, at(i + 1)) {
                    (b'\\', Some(b'\'')) => {
                        word.push(b'\'');
                        i += 1;
                    }
                    (b'\'', next) => {
                        if next.is_some_and(|n| !is_space(n)) {
                            return Err(unbalanced());
                        }
                        i += 1;
                        break;
                    }
                    _ => word.push(c),
                }
            } else {
                match c {
                    c if is_space(c) => break,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => word.push(c),
                }
            }
            i += 1;
        }
        words.push(Bytes::from(word));
    }
}

/// Reads one reply of any RESP2/RESP3 type from the start of `buf`, with default [`Limits`].
/// Attributes (`|`) are read and dropped; the frame they annotate is returned. Simple strings and
/// errors are decoded as UTF-8 lossily: Redis only sends ASCII there, and a reader of replies
/// should not fail a connection over one odd byte in an error message.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, RespError> {
    parse_frame_with(buf, &Limits::default())
}

/// [`parse_frame`] with explicit limits.
pub fn parse_frame_with(buf: &[u8], limits: &Limits) -> Result<Option<(Frame, usize)>, RespError> {
    frame_at(buf, 0, limits, 0)
}

fn frame_at(buf: &[u8], pos: usize, limits: &Limits, depth: u32) -> Parse<Frame> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let start = pos + 1;
    let line_max = usize::try_from(limits.inline_bytes_max).unwrap_or(usize::MAX);
    let too_long = |len: usize| RespError::TooLarge {
        what: LimitKind::LineLength,
        len: u64_len(len),
        max: limits.inline_bytes_max,
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(Some(match kind {
        b'+' => {
            let (l, next) = ready!(line(buf, start, line_max, too_long));
            (Frame::Simple(text(l)), next)
        }
        b'-' => {
            let (l, next) = ready!(line(buf, start, line_max, too_long));
            (Frame::Error(text(l)), next)
        }
        b':' => {
            let (n, next) = ready!(number_line(buf, start, "invalid integer"));
            (Frame::Integer(n), next)
        }
        b'$' => {
            let (len, data_start) = ready!(number_line(buf, start, "invalid bulk length"));
            if len == -1 {
                (Frame::Bulk(None), data_start)
            } else {
                let len = bulk_len(len, limits)?;
                let (data, next) = ready!(blob(buf, data_start, len));
                (Frame::Bulk(Some(Bytes::copy_from_slice(data))), next)
            }
        }
        b'!' => {
            // RESP3 blob error: same meaning as `-`, but may contain CRLF.
            let (len, data_start) = ready!(number_line(buf, start, "invalid bulk length"));
            let len = bulk_len(len, limits)?;
            let (data, next) = ready!(blob(buf, data_start, len));
            (Frame::Error(text(data)), next)
        }
        b'=' => {
            let (len, data_start) = ready!(number_line(buf, start, "invalid bulk length"));
            let len = bulk_len(len, limits)?;
            let (data, next) = ready!(blob(buf, data_start, len));
            match data {
                [a, b, c, b':', rest @ ..] => (
                    Frame::Verbatim {
                        format: [*a, *b, *c],
                        text: Bytes::copy_from_slice(rest),
                    },
                    next,
                ),
                _ => return Err(RespError::protocol("invalid verbatim string")),
            }
        }
        b'_' => {
            let (l, next) = ready!(line(buf, start, 0, |_| RespError::protocol("invalid null")));
            debug_assert!(l.is_empty());
            (Frame::Null, next)
        }
        b'#' => {
            let bad = || RespError::protocol("invalid boolean");
            let (l, next) = ready!(line(buf, start, 1, |_| bad()));
            match l {
                b"t" => (Frame::Boolean(true), next),
                b"f" => (Frame::Boolean(false), next),
                _ => return Err(bad()),
            }
        }
        b',' => {
            let bad = || RespError::protocol("invalid double");
            let (l, next) = ready!(line(buf, start, DOUBLE_LINE_MAX, |_| bad()));
            let d = std::str::from_utf8(l)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(bad)?;
            (Frame::Double(d), next)
        }
        b'(' => {
            let (l, next) = ready!(line(buf, start, line_max, too_long));
            if !is_big_number(l) {
                return Err(RespError::protocol("invalid big number"));
            }
            (Frame::BigNumber(text(l)), next)
        }
        b'*' | b'~' | b'>' => {
            let (count, next) = ready!(number_line(buf, start, "invalid multibulk length"));
            if kind == b'*' && count == -1 {
                (Frame::Array(None), next)
            } else {
                let count = aggregate_len(count, limits)?;
                let (items, next) = ready!(items(buf, next, count, limits, depth));
                let frame = match kind {
                    b'*' => Frame::Array(Some(items)),
                    b'~' => Frame::Set(items),
                    _ => Frame::Push(items),
                };
                (frame, next)
            }
        }
        b'%' => {
            let (count, next) = ready!(number_line(buf, start, "invalid multibulk length"));
            let count = aggregate_len(count, limits)?;
            let (pairs, next) = ready!(pairs(buf, next, count, limits, depth));
            (Frame::Map(pairs), next)
        }
        b'|' => {
            // Attributes annotate the next frame; no caller of ours uses them, so skip them.
            let (count, next) = ready!(number_line(buf, start, "invalid multibulk length"));
            let count = aggregate_len(count, limits)?;
            let (_, next) = ready!(pairs(buf, next, count, limits, depth));
            ready!(frame_at(buf, next, limits, depth))
        }
        other => {
            return Err(RespError::protocol(format!(
                "unexpected type byte '{}'",
                describe(other)
            )));
        }
    }))
}

fn nested(depth: u32, limits: &Limits) -> Result<u32, RespError> {
    let depth = depth + 1;
    if depth > limits.depth_max {
        return Err(RespError::TooLarge {
            what: LimitKind::Depth,
            len: u64::from(depth),
            max: u64::from(limits.depth_max),
        });
    }
    Ok(depth)
}

fn items(
    buf: &[u8],
    mut pos: usize,
    count: usize,
    limits: &Limits,
    depth: u32,
) -> Parse<Vec<Frame>> {
    let depth = nested(depth, limits)?;
    let mut items = Vec::with_capacity(count.min(PREALLOC_MAX));
    for _ in 0..count {
        let (item, next) = ready!(frame_at(buf, pos, limits, depth));
        items.push(item);
        pos = next;
    }
    Ok(Some((items, pos)))
}

fn pairs(
    buf: &[u8],
    mut pos: usize,
    count: usize,
    limits: &Limits,
    depth: u32,
) -> Parse<Vec<(Frame, Frame)>> {
    let depth = nested(depth, limits)?;
    let mut pairs = Vec::with_capacity(count.min(PREALLOC_MAX));
    for _ in 0..count {
        let (key, next) = ready!(frame_at(buf, pos, limits, depth));
        let (value, next) = ready!(frame_at(buf, next, limits, depth));
        pairs.push((key, value));
        pos = next;
    }
    Ok(Some((pairs, pos)))
}

fn is_big_number(s: &[u8]) -> bool {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// Appends `frame` to `out` as `protocol` spells it. RESP3-only types degrade for RESP2 clients
/// as Redis degrades them: Null -> `$-1`, Map -> flat array, Set/Push -> array, Boolean ->
/// `:1`/`:0`, Double/BigNumber/Verbatim -> bulk string.
pub fn encode_frame(frame: &Frame, protocol: Protocol, out: &mut Vec<u8>) {
    let resp3 = protocol == Protocol::Resp3;
    match frame {
        Frame::Simple(s) => line_out(b'+', s.as_bytes(), out),
        Frame::Error(s) => line_out(b'-', s.as_bytes(), out),
        Frame::Integer(n) => int_line(b':', *n, out),
        Frame::Bulk(Some(data)) => bulk_out(b'$', data, out),
        Frame::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
        Frame::Array(Some(items)) => {
            len_line(b'*', items.len(), out);
            for item in items {
                encode_frame(item, protocol, out);
            }
        }
        Frame::Array(None) => out.extend_from_slice(b"*-1\r\n"),
        Frame::Null if resp3 => out.extend_from_slice(b"_\r\n"),
        Frame::Null => out.extend_from_slice(b"$-1\r\n"),
        Frame::Map(pairs) => {
            if resp3 {
                len_line(b'%', pairs.len(), out);
            } else {
                len_line(b'*', pairs.len().saturating_mul(2), out);
            }
            for (k, v) in pairs {
                encode_frame(k, protocol, out);
                encode_frame(v, protocol, out);
            }
        }
        Frame::Double(d) => {
            let text = double_text(*d);
            if resp3 {
                line_out(b',', text.as_bytes(), out);
            } else {
                bulk_out(b'$', text.as_bytes(), out);
            }
        }
        Frame::Boolean(b) if resp3 => out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Frame::Boolean(b) => int_line(b':', i64::from(*b), out),
        Frame::Set(items) | Frame::Push(items) => {
            let kind = match frame {
                _ if !resp3 => b'*',
                Frame::Set(_) => b'~',
                _ => b'>',
            };
            len_line(kind, items.len(), out);
            for item in items {
                encode_frame(item, protocol, out);
            }
        }
        Frame::Verbatim { format, text } if resp3 => {
            len_line(b'=', text.len().saturating_add(4), out);
            out.extend_from_slice(format);
            out.push(b':');
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
        Frame::Verbatim { text, .. } => bulk_out(b'$', text, out),
        Frame::BigNumber(n) if resp3 => line_out(b'(', n.as_bytes(), out),
        Frame::BigNumber(n) => bulk_out(b'$', n.as_bytes(), out),
    }
}

/// Appends a request as a multibulk array of bulk strings (what clients send).
pub fn encode_request<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    len_line(b'*', args.len(), out);
    for arg in args {
        bulk_out(b'$', arg.as_ref(), out);
    }
}

/// RESP3 spells the specials `inf`, `-inf`, `nan`; otherwise Rust's `Debug` gives the shortest
/// text that parses back to the same value (with an exponent for very large or small values,
/// which the RESP3 grammar allows).
fn double_text(d: f64) -> String {
    if d.is_nan() {
        "nan".to_owned()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{d:?}")
    }
}

/// A line-typed value. CR and LF would end the line early and desynchronise the peer, so they
/// become spaces (Redis does the same to error messages).
fn line_out(kind: u8, text: &[u8], out: &mut Vec<u8>) {
    out.push(kind);
    out.extend(
        text.iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

fn bulk_out(kind: u8, data: &[u8], out: &mut Vec<u8>) {
    len_line(kind, data.len(), out);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn len_line(kind: u8, len: usize, out: &mut Vec<u8>) {
    out.push(kind);
    push_decimal(u64_len(len), false, out);
    out.extend_from_slice(b"\r\n");
}

fn int_line(kind: u8, n: i64, out: &mut Vec<u8>) {
    out.push(kind);
    push_decimal(n.unsigned_abs(), n < 0, out);
    out.extend_from_slice(b"\r\n");
}

/// Decimal digits without going through `fmt` (this runs for every reply the proxy writes).
fn push_decimal(mut n: u64, negative: bool, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(buf: &[u8]) -> Result<Option<(Vec<Bytes>, usize)>, RespError> {
        parse_request(buf, &Limits::default())
    }

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    fn encode(frame: &Frame, protocol: Protocol) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(frame, protocol, &mut out);
        out
    }

    fn protocol_err(msg: &str) -> RespError {
        RespError::Protocol(msg.to_owned())
    }

    /// Every strict prefix is incomplete, and the whole parses to `expected`.
    fn assert_incremental_request(buf: &[u8], expected: &[Bytes]) {
        for k in 0..buf.len() {
            assert_eq!(
                req(&buf[..k]),
                Ok(None),
                "prefix {k} of {:?}",
                buf.escape_ascii().to_string()
            );
        }
        assert_eq!(req(buf), Ok(Some((expected.to_vec(), buf.len()))));
    }

    #[test]
    fn multibulk_requests() {
        assert_incremental_request(
            b"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$3\r\nbar\r\n",
            &args(&["SET", "foo", "bar"]),
        );
        assert_incremental_request(b"*1\r\n$0\r\n\r\n", &args(&[""]));
        // Binary data with CRLF inside a bulk string.
        assert_incremental_request(
            b"*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n",
            &args(&["GET", "a\r\nb"]),
        );
        // Pipelined: only the first command is consumed.
        let two = b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n";
        assert_eq!(req(two), Ok(Some((args(&["PING"]), 14))));
        assert_eq!(req(&two[14..]), Ok(Some((args(&["PING"]), 14))));
    }

    #[test]
    fn empty_requests_are_consumed() {
        assert_eq!(req(b"*0\r\n"), Ok(Some((vec![], 4))));
        assert_eq!(req(b"*-1\r\n"), Ok(Some((vec![], 5))));
        assert_eq!(req(b"\r\n"), Ok(Some((vec![], 2))));
        assert_eq!(req(b"\n"), Ok(Some((vec![], 1))));
        assert_eq!(req(b"   \r\n"), Ok(Some((vec![], 5))));
    }

    #[test]
    fn inline_requests() {
        assert_incremental_request(b"PING\r\n", &args(&["PING"]));
        assert_incremental_request(b"set  foo\tbar\n", &args(&["set", "foo", "bar"]));
        assert_incremental_request(
            b"SET \"a b\\x41\\n\" 'it\\'s'\r\n",
            &args(&["SET", "a bA\n", "it's"]),
        );
        // Quotes mid-word join, as sdssplitargs does.
        assert_eq!(req(b"foo\"bar\"\n"), Ok(Some((args(&["foobar"]), 9))));
        assert_eq!(req(b"\"\"\n"), Ok(Some((args(&[""]), 3))));
        assert_eq!(
            req(b"a \"\\q\\\\\"\n").unwrap().unwrap().0,
            args(&["a", "q\\"])
        );
        for bad in [
            &b"GET \"foo\n"[..],
            b"GET 'foo\n",
            b"GET \"foo\"bar\n",
            b"GET 'a'b\n",
        ] {
            assert_eq!(
                req(bad),
                Err(protocol_err("unbalanced quotes in request")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn malformed_multibulk_is_an_error() {
        let invalid_mb = protocol_err("invalid multibulk length");
        let invalid_bulk = protocol_err("invalid bulk length");
        let cases: &[(&[u8], RespError)] = &[
            (b"*x\r\n", invalid_mb.clone()),
            (b"*1x", invalid_mb.clone()),
            (b"*-2\r\n", invalid_mb.clone()),
            (b"*01\r\n", invalid_mb.clone()),
            (b"*+1\r\n", invalid_mb.clone()),
            (b"*\r\n", invalid_mb.clone()),
            (b"*-\r\n", invalid_mb.clone()),
            (b"*1\n", invalid_mb.clone()),
            (b"*1\rx", invalid_mb.clone()),
            (b"*99999999999999999999\r\n", invalid_mb.clone()),
            (b"*123456789012345678901", invalid_mb.clone()),
            (b"*1\r\n$-1\r\n", invalid_bulk.clone()),
            (b"*1\r\n$-5\r\n", invalid_bulk.clone()),
            (b"*1\r\n$abc\r\n", invalid_bulk.clone()),
            (b"*1\r\n$3\nfoo", invalid_bulk.clone()),
            (b"*1\r\n$\r\n", invalid_bulk.clone()),
            (b"*1\r\n:3\r\n", protocol_err("expected '$', got ':'")),
            (b"*1\r\n\x00", protocol_err("expected '$', got '\\x00'")),
            (
                b"*1\r\n$3\r\nfooX",
                protocol_err("expected '\\r\\n' after bulk data"),
            ),
            (
                b"*1\r\n$3\r\nfoo\rX",
                protocol_err("expected '\\r\\n' after bulk data"),
            ),
            (
                b"*1\r\n$3\r\nfoo\n",
                protocol_err("expected '\\r\\n' after bulk data"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                req(input).as_ref(),
                Err(expected),
                "{:?}",
                input.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn limits_are_enforced_before_the_data_arrives() {
        let limits = Limits {
            bulk_bytes_max: 10,
            args_max: 3,
            inline_bytes_max: 8,
            request_bytes_max: 40,
            depth_max: 2,
        };
        let p = |b: &[u8]| parse_request(b, &limits);
        assert_eq!(
            p(b"*4\r\n"),
            Err(RespError::TooLarge {
                what: LimitKind::MultibulkLength,
                len: 4,
                max: 3
            })
        );
        assert_eq!(
            p(b"*1\r\n$11\r\n"),
            Err(RespError::TooLarge {
                what: LimitKind::BulkLength,
                len: 11,
                max: 10
            })
        );
        assert_eq!(p(b"*1\r\n$10\r\n"), Ok(None));
        assert_eq!(
            p(b"*3\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n$1\r\n"),
            Err(RespError::TooLarge {
                what: LimitKind::RequestSize,
                len: 45,
                max: 40
            })
        );
        assert_eq!(p(b"12345678"), Ok(None));
        assert_eq!(
            p(b"123456789"),
            Err(RespError::TooLarge {
                what: LimitKind::InlineRequest,
                len: 9,
                max: 8
            })
        );
        assert_eq!(p(b"1234567\r\n"), Ok(Some((args(&["1234567"]), 9))));
        assert_eq!(
            p(b"a b c d\n"),
            Err(RespError::TooLarge {
                what: LimitKind::MultibulkLength,
                len: 4,
                max: 3
            })
        );
        // Default: a declared 1 GiB value is refused at once, not awaited.
        assert!(matches!(
            req(b"*1\r\n$1073741824\r\n"),
            Err(RespError::TooLarge {
                what: LimitKind::BulkLength,
                ..
            })
        ));
        assert!(matches!(
            req(b"*2000000\r\n"),
            Err(RespError::TooLarge {
                what: LimitKind::MultibulkLength,
                ..
            })
        ));
        // Nesting in replies.
        assert_eq!(
            parse_frame_with(b"*1\r\n*1\r\n:1\r\n", &limits)
                .unwrap()
                .unwrap()
                .1,
            12
        );
        assert_eq!(
            parse_frame_with(b"*1\r\n*1\r\n*1\r\n", &limits),
            Err(RespError::TooLarge {
                what: LimitKind::Depth,
                len: 3,
                max: 2
            })
        );
        // A deep bomb cannot overflow the stack with default limits either.
        let bomb = b"*1\r\n".repeat(100_000);
        assert!(matches!(
            parse_frame(&bomb),
            Err(RespError::TooLarge {
                what: LimitKind::Depth,
                ..
            })
        ));
    }

    #[test]
    fn error_reply_text() {
        let e = protocol_err("invalid bulk length");
        assert_eq!(e.to_string(), "Protocol error: invalid bulk length");
        assert_eq!(
            encode(&e.to_frame(), Protocol::Resp2),
            b"-ERR Protocol error: invalid bulk length\r\n"
        );
    }

    #[test]
    fn reply_vectors() {
        let cases: Vec<(&[u8], Frame)> = vec![
            (b"+OK\r\n", Frame::ok()),
            (b"-ERR bad\r\n", Frame::error("ERR bad")),
            (b":-42\r\n", Frame::Integer(-42)),
            (b":-9223372036854775808\r\n", Frame::Integer(i64::MIN)),
            (b"$5\r\nhello\r\n", Frame::bulk("hello")),
            (b"$0\r\n\r\n", Frame::bulk("")),
            (b"$-1\r\n", Frame::Bulk(None)),
            (b"*-1\r\n", Frame::Array(None)),
            (b"*0\r\n", Frame::Array(Some(vec![]))),
            (
                b"*2\r\n:1\r\n$1\r\na\r\n",
                Frame::Array(Some(vec![Frame::Integer(1), Frame::bulk("a")])),
            ),
            (b"_\r\n", Frame::Null),
            (b",1.5\r\n", Frame::Double(1.5)),
            (b",inf\r\n", Frame::Double(f64::INFINITY)),
            (b",-inf\r\n", Frame::Double(f64::NEG_INFINITY)),
            (b",1e300\r\n", Frame::Double(1e300)),
            (b",3\r\n", Frame::Double(3.0)),
            (b"#t\r\n", Frame::Boolean(true)),
            (b"#f\r\n", Frame::Boolean(false)),
            (
                b"(-3492890328409238509324850943850943825024385\r\n",
                Frame::BigNumber("-3492890328409238509324850943850943825024385".into()),
            ),
            (
                b"=15\r\ntxt:Some string\r\n",
                Frame::Verbatim {
                    format: *b"txt",
                    text: Bytes::from_static(b"Some string"),
                },
            ),
            (
                b"!21\r\nSYNTAX invalid syntax\r\n",
                Frame::error("SYNTAX invalid syntax"),
            ),
            (
                b"%1\r\n+a\r\n:1\r\n",
                Frame::Map(vec![(Frame::Simple("a".into()), Frame::Integer(1))]),
            ),
            (b"~1\r\n#t\r\n", Frame::Set(vec![Frame::Boolean(true)])),
            (
                b">2\r\n+message\r\n$1\r\nx\r\n",
                Frame::Push(vec![Frame::Simple("message".into()), Frame::bulk("x")]),
            ),
            // The attribute is skipped; the annotated frame is returned and everything consumed.
            (b"|1\r\n+ttl\r\n:3\r\n:7\r\n", Frame::Integer(7)),
        ];
        for (input, expected) in cases {
            for k in 0..input.len() {
                assert_eq!(
                    parse_frame(&input[..k]),
                    Ok(None),
                    "prefix {k} of {:?}",
                    input.escape_ascii().to_string()
                );
            }
            assert_eq!(
                parse_frame(input),
                Ok(Some((expected, input.len()))),
                "{:?}",
                input.escape_ascii().to_string()
            );
        }
        assert!(matches!(parse_frame(b",nan\r\n"), Ok(Some((Frame::Double(d), 6))) if d.is_nan()));
    }

    #[test]
    fn malformed_replies() {
        for bad in [
            &b"?\r\n"[..],
            b":1.5\r\n",
            b":\r\n",
            b"$-2\r\n",
            b"*-2\r\n",
            b"%-1\r\n",
            b"_x\r\n",
            b"#x\r\n",
            b"#tt\r\n",
            b",abc\r\n",
            b"(12a\r\n",
            b"(\r\n",
            b"=3\r\ntxt\r\n",
            b"=4\r\ntxt;\r\n",
            b"+OK\n",
            b"+OK\rX",
            b"$1\r\nab\r\n",
        ] {
            assert!(
                parse_frame(bad).is_err(),
                "{:?}",
                bad.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn encodings_by_protocol() {
        let map = Frame::Map(vec![(Frame::bulk("k"), Frame::Double(2.5))]);
        assert_eq!(encode(&map, Protocol::Resp3), b"%1\r\n$1\r\nk\r\n,2.5\r\n");
        assert_eq!(
            encode(&map, Protocol::Resp2),
            b"*2\r\n$1\r\nk\r\n$3\r\n2.5\r\n"
        );
        assert_eq!(encode(&Frame::Null, Protocol::Resp3), b"_\r\n");
        assert_eq!(encode(&Frame::Null, Protocol::Resp2), b"$-1\r\n");
        assert_eq!(encode(&Frame::Boolean(true), Protocol::Resp2), b":1\r\n");
        assert_eq!(encode(&Frame::Boolean(false), Protocol::Resp2), b":0\r\n");
        assert_eq!(encode(&Frame::Boolean(false), Protocol::Resp3), b"#f\r\n");
        let set = Frame::Set(vec![Frame::Integer(1)]);
        assert_eq!(encode(&set, Protocol::Resp3), b"~1\r\n:1\r\n");
        assert_eq!(encode(&set, Protocol::Resp2), b"*1\r\n:1\r\n");
        let push = Frame::Push(vec![Frame::Boolean(true)]);
        assert_eq!(encode(&push, Protocol::Resp3), b">1\r\n#t\r\n");
        assert_eq!(encode(&push, Protocol::Resp2), b"*1\r\n:1\r\n");
        let verbatim = Frame::Verbatim {
            format: *b"txt",
            text: Bytes::from_static(b"hi"),
        };
        assert_eq!(encode(&verbatim, Protocol::Resp3), b"=6\r\ntxt:hi\r\n");
        assert_eq!(encode(&verbatim, Protocol::Resp2), b"$2\r\nhi\r\n");
        assert_eq!(
            encode(&Frame::BigNumber("123".into()), Protocol::Resp2),
            b"$3\r\n123\r\n"
        );
        assert_eq!(
            encode(&Frame::Double(f64::NEG_INFINITY), Protocol::Resp2),
            b"$4\r\n-inf\r\n"
        );
        assert_eq!(
            encode(&Frame::Double(f64::NAN), Protocol::Resp3),
            b",nan\r\n"
        );
        assert_eq!(
            encode(&Frame::Integer(i64::MIN), Protocol::Resp2),
            b":-9223372036854775808\r\n"
        );
        assert_eq!(encode(&Frame::Integer(0), Protocol::Resp2), b":0\r\n");
        assert_eq!(
            encode(&Frame::error("ERR a\r\nb"), Protocol::Resp2),
            b"-ERR a  b\r\n"
        );
        assert_eq!(encode(&Frame::Array(None), Protocol::Resp3), b"*-1\r\n");
        assert_eq!(encode(&Frame::Bulk(None), Protocol::Resp3), b"$-1\r\n");
        let mut out = Vec::new();
        encode_request(&["GET", "k"], &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn replies_convert() {
        let reply = Reply::Array(vec![
            Reply::Ok,
            Reply::Status("PONG".into()),
            Reply::Nil,
            Reply::Int(5),
            Reply::Bulk(Bytes::from_static(b"v")),
            Reply::error("WRONGTYPE x"),
        ]);
        let frame = Frame::from(&reply);
        assert_eq!(
            encode(&frame, Protocol::Resp2),
            b"*6\r\n+OK\r\n+PONG\r\n$-1\r\n:5\r\n$1\r\nv\r\n-WRONGTYPE x\r\n"
        );
        assert_eq!(
            encode(&frame, Protocol::Resp3),
            b"*6\r\n+OK\r\n+PONG\r\n_\r\n:5\r\n$1\r\nv\r\n-WRONGTYPE x\r\n"
        );
        assert_eq!(Frame::from(Reply::Nil), Frame::Null);
    }

    fn line_text() -> impl Strategy<Value = String> {
        "[^\r\n]{0,12}"
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        let leaf = prop_oneof![
            line_text().prop_map(Frame::Simple),
            line_text().prop_map(Frame::Error),
            any::<i64>().prop_map(Frame::Integer),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16))
                .prop_map(|b| Frame::Bulk(b.map(Bytes::from))),
            Just(Frame::Array(None)),
            Just(Frame::Null),
            // NaN never equals itself; its encoding is covered by a vector test.
            any::<f64>()
                .prop_filter("not NaN", |d| !d.is_nan())
                .prop_map(Frame::Double),
            any::<bool>().prop_map(Frame::Boolean),
            (
                any::<[u8; 3]>(),
                proptest::collection::vec(any::<u8>(), 0..16)
            )
                .prop_map(|(format, text)| Frame::Verbatim {
                    format,
                    text: Bytes::from(text)
                }),
            "-?[0-9]{1,40}".prop_map(Frame::BigNumber),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(|v| Frame::Array(Some(v))),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..4)
                    .prop_map(Frame::Map),
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Set),
                proptest::collection::vec(inner, 0..6).prop_map(Frame::Push),
            ]
        })
    }

    /// Bytes drawn mostly from RESP's alphabet, so random inputs reach deep into the parsers.
    fn resp_ish() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            4 => proptest::sample::select(b"*$:+-_,#(=!%~>|\r\n0123456789 \"'\\xtf".to_vec()),
            1 => any::<u8>(),
        ];
        proptest::collection::vec(byte, 0..64)
    }

    /// Shared checks for any parse result of `buf`: the consumed count is in range, and a
    /// complete message has only incomplete strict prefixes (no false early errors).
    fn check_consistent<T: std::fmt::Debug>(
        buf: &[u8],
        parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, RespError>,
    ) -> Result<(), TestCaseError> {
        if let Ok(Some((_, n))) = parse(buf) {
            prop_assert!(n > 0 && n <= buf.len());
            for k in 0..n {
                let prefix = parse(&buf[..k]);
                prop_assert!(matches!(prefix, Ok(None)), "prefix {} gave {:?}", k, prefix);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_request(&buf, &Limits::default());
            let _ = parse_frame(&buf);
        }

        #[test]
        fn resp_like_bytes_parse_consistently(buf in resp_ish()) {
            check_consistent(&buf, |b| parse_request(b, &Limits::default()))?;
            check_consistent(&buf, parse_frame)?;
        }

        #[test]
        fn frames_round_trip_resp3(frame in arb_frame(), trailing in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut buf = encode(&frame, Protocol::Resp3);
            let len = buf.len();
            buf.extend_from_slice(&trailing);
            prop_assert_eq!(parse_frame(&buf), Ok(Some((frame, len))));
            for k in 0..len {
                prop_assert_eq!(parse_frame(&buf[..k]), Ok(None));
            }
        }

        #[test]
        fn resp2_encodings_parse(frame in arb_frame()) {
            // Degraded output is still one well-formed RESP2 value.
            let buf = encode(&frame, Protocol::Resp2);
            let (parsed, n) = parse_frame(&buf).unwrap().unwrap();
            prop_assert_eq!(n, buf.len());
            let degraded = matches!(
                parsed,
                Frame::Null
                    | Frame::Map(_)
                    | Frame::Set(_)
                    | Frame::Push(_)
                    | Frame::Double(_)
                    | Frame::Boolean(_)
                    | Frame::Verbatim { .. }
                    | Frame::BigNumber(_)
            );
            prop_assert!(!degraded, "RESP3-only type in RESP2 output: {:?}", parsed);
        }

        #[test]
        fn requests_round_trip(
            request in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 1..8),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut buf = Vec::new();
            encode_request(&request, &mut buf);
            let expected: Vec<Bytes> = request.iter().map(|a| Bytes::copy_from_slice(a)).collect();
            prop_assert_eq!(req(&buf), Ok(Some((expected.clone(), buf.len()))));
            let k = cut.index(buf.len());
            prop_assert_eq!(req(&buf[..k]), Ok(None));
            // Followed by another command, only the first is consumed.
            let len = buf.len();
            buf.extend_from_slice(b"PING\r\n");
            prop_assert_eq!(req(&buf), Ok(Some((expected, len))));
        }

        #[test]
        fn inline_words_round_trip(words in proptest::collection::vec("[a-zA-Z0-9_:.-]{1,10}", 1..8)) {
            let line = format!("{}\r\n", words.join(" "));
            let expected: Vec<Bytes> = words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
            prop_assert_eq!(req(line.as_bytes()), Ok(Some((expected, line.len()))));
        }
    }
}
