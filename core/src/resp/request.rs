//! Client commands: multibulk (`*N\r\n$len\r\narg\r\n…`) and inline, as Redis accepts
//! them. This is what the proxy reads from untrusted clients, so every declared count and
//! length goes through the checks in `scan` before any data is awaited.

use bytes::Bytes;

use super::scan::{
    PREALLOC_MAX, Parse, aggregate_len, blob, bulk_len, describe, number_line, ready,
};
use super::{LimitKind, Limits, RespError, u64_len};

/// Reads one client command from the start of `buf`: its arguments and the bytes it took, or
/// `Ok(None)` if more input is needed.
///
/// A buffer starting with `*` is a multibulk request (`*N\r\n$len\r\narg\r\n…`); anything else
/// is an inline command, a line of words split the way `redis-cli`/telnet users expect (see
/// [`split_inline`]). An empty command (`*0`, `*-1`, a blank line) parses to no arguments: the
/// caller consumes it and does nothing, as Redis does.
///
/// Each call starts from the beginning of `buf`; a server reading a stream should keep a
/// [`RequestParser`] per connection instead, which resumes where the last call stopped.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(Vec<Bytes>, usize)>, RespError> {
    RequestParser::default().parse(buf, limits)
}

/// [`parse_request`] that remembers how far it got in an incomplete request, so a request
/// arriving in many small reads is scanned once in total rather than once per read (re-parsing
/// a request of N arguments after each of M reads is O(N·M): a 32 MiB request of short
/// arguments in 16 KiB reads would be copied about a thousand times over).
///
/// Contract: between a call that returned `Ok(None)` and the next, `buf` may only have grown at
/// its end (the same bytes at the same offsets). A call that returns a request or an error
/// forgets the partial state, so the caller then drops the consumed bytes from the front as
/// usual. Results are exactly [`parse_request`]'s on the same bytes.
#[derive(Debug, Default)]
pub struct RequestParser {
    partial: Option<Partial>,
    /// Argument headers (`$len`) read, kept by tests to show each is read about once.
    #[cfg(test)]
    pub(super) headers_read: usize,
}

/// Where an incomplete request stopped.
#[derive(Debug)]
enum Partial {
    /// A multibulk whose header and first `args.len()` arguments were read; `pos` is the
    /// offset of the next argument's `$`.
    Multibulk {
        count: usize,
        args: Vec<Bytes>,
        pos: usize,
    },
    /// An inline command whose first `scanned` bytes hold no newline.
    Inline { scanned: usize },
}

impl RequestParser {
    /// Reads one client command from the start of `buf`; see [`parse_request`] and the
    /// contract on [`RequestParser`].
    pub fn parse(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(Vec<Bytes>, usize)>, RespError> {
        let result = match buf.first() {
            None => Ok(None),
            Some(b'*') => self.parse_multibulk(buf, limits),
            Some(_) => self.parse_inline(buf, limits),
        };
        if !matches!(result, Ok(None)) {
            self.partial = None;
        }
        result
    }

    /// Whether part of a request has been read and is waiting for the rest.
    pub fn is_partial(&self) -> bool {
        self.partial.is_some()
    }

    fn parse_multibulk(&mut self, buf: &[u8], limits: &Limits) -> Parse<Vec<Bytes>> {
        let (count, mut args, mut pos) = match self.partial.take() {
            Some(Partial::Multibulk { count, args, pos }) => (count, args, pos),
            _ => {
                let (count, pos) = ready!(number_line(buf, 1, "invalid multibulk length"));
                // Redis skips a request whose count is zero or negative, and reads on.
                if count <= 0 {
                    return Ok(Some((Vec::new(), pos)));
                }
                let count = aggregate_len(count, limits)?;
                (count, Vec::with_capacity(count.min(PREALLOC_MAX)), pos)
            }
        };
        while args.len() < count {
            match self.argument(buf, pos, limits)? {
                Some((arg, next)) => {
                    args.push(arg);
                    pos = next;
                }
                None => {
                    self.partial = Some(Partial::Multibulk { count, args, pos });
                    return Ok(None);
                }
            }
        }
        Ok(Some((args, pos)))
    }

    /// One `$len\r\ndata\r\n` argument at `pos`.
    fn argument(&mut self, buf: &[u8], pos: usize, limits: &Limits) -> Parse<Bytes> {
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
        #[cfg(test)]
        {
            self.headers_read += 1;
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
        Ok(Some((Bytes::copy_from_slice(data), next)))
    }

    fn parse_inline(&mut self, buf: &[u8], limits: &Limits) -> Parse<Vec<Bytes>> {
        // Bytes already known to hold no newline are not scanned again.
        let from = match self.partial.take() {
            Some(Partial::Inline { scanned }) => scanned.min(buf.len()),
            _ => 0,
        };
        let max = usize::try_from(limits.inline_bytes_max).unwrap_or(usize::MAX);
        let scan = &buf[from.min(buf.len())..buf.len().min(max.saturating_add(1))];
        let Some(newline) = scan.iter().position(|&b| b == b'\n').map(|i| i + from) else {
            if buf.len() > max {
                return Err(RespError::TooLarge {
                    what: LimitKind::InlineRequest,
                    len: u64_len(buf.len()),
                    max: limits.inline_bytes_max,
                });
            }
            self.partial = Some(Partial::Inline { scanned: buf.len() });
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
