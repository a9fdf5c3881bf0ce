//! Server replies of any RESP2/RESP3 type (for clients and tests). Aggregates nest, so the
//! reader tracks depth against [`Limits`] as well as lengths: a reply is as untrusted as a
//! request when the peer is not our own server.

use bytes::Bytes;

use super::scan::{
    PREALLOC_MAX, Parse, aggregate_len, blob, bulk_len, describe, line, number_line, ready,
};
use super::{Frame, LimitKind, Limits, RespError, u64_len};

/// Longest line a double may take (Rust's `Debug` and `%.17g` both stay far below this).
const DOUBLE_LINE_MAX: usize = 1024;

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
