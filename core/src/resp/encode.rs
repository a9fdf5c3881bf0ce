//! Encoding: replies as a connection's negotiated [`Protocol`] spells them (RESP3 types
//! degraded for RESP2 clients, as Redis does) and requests as clients send them. Input here
//! is our own, so unlike parsing there is nothing to check; the care goes into not
//! desynchronising the peer (no stray CR/LF in line types) and into speed (every reply the
//! proxy writes passes through here).

use super::{Frame, Protocol, u64_len};

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
        // Redis 7's `addReplyNullArray`: RESP3 has one null for every type.
        Frame::Array(None) if resp3 => out.extend_from_slice(b"_\r\n"),
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
        Frame::Pairs(pairs) => {
            if resp3 {
                len_line(b'*', pairs.len(), out);
                for (k, v) in pairs {
                    out.extend_from_slice(b"*2\r\n");
                    encode_frame(k, protocol, out);
                    encode_frame(v, protocol, out);
                }
            } else {
                len_line(b'*', pairs.len().saturating_mul(2), out);
                for (k, v) in pairs {
                    encode_frame(k, protocol, out);
                    encode_frame(v, protocol, out);
                }
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
    } else {
        format_double(d)
    }
}

/// Formats a double as Redis 7.0's `addReplyDouble` does in both protocols: `inf`/`-inf`,
/// otherwise C's `%.17g` (17 significant digits, trailing zeros dropped, exponent form
/// outside 1e-4..1e17), so clients that compare score text see Redis's.
pub fn format_double(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    const PRECISION: i32 = 17;
    let scientific = format!("{:.*e}", (PRECISION - 1) as usize, value);
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    fn trim(text: &str) -> &str {
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.')
        } else {
            text
        }
    }
    if (-4..PRECISION).contains(&exponent) {
        let fixed = format!("{:.*}", (PRECISION - 1 - exponent) as usize, value);
        trim(&fixed).to_string()
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{}{:02}", trim(mantissa), sign, exponent.abs())
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
