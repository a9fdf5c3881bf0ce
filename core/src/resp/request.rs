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
