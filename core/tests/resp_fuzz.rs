//! A seeded fuzz run of the RESP parsers that runs in every `cargo test`: a fixed seed and a
//! fixed budget of inputs, so a failure replays exactly and the run stays in seconds.
//!
//! Inputs come from `arbitrary::Unstructured` over ChaCha8 bytes: raw bytes drawn mostly from
//! RESP's alphabet, and valid requests and replies that are then mutated (truncated, bytes
//! flipped, a length swapped for a huge one, aggregates nested deep). For every input and
//! every prefix of it, `parse_request`, the resumable `RequestParser` and `parse_frame` must:
//! not panic, never consume more than they were given, answer `Ok(None)` (never an error) on
//! every strict prefix of a message they accept, stay failed once failed, and refuse a huge
//! declared length with a limit error as soon as the length line is complete, before any data.

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use larder_core::resp::{
    Frame, LimitKind, Limits, Protocol, RequestParser, RespError, encode_frame, encode_request,
    parse_frame_with, parse_request,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const SEED: u64 = 0x1a2d_e5f0;
const INPUTS: usize = 20_000;
/// Longest input checked at every prefix (the check is quadratic in it).
const INPUT_MAX: usize = 256;

fn small_limits() -> Limits {
    Limits {
        bulk_bytes_max: 64,
        args_max: 8,
        inline_bytes_max: 48,
        request_bytes_max: 200,
        depth_max: 4,
    }
}

/// RESP's alphabet, so random bytes reach deep into the parsers.
const ALPHABET: &[u8] = b"*$:+-_,#(=!%~>|\r\n0123456789 \"'\\xtf";

fn resp_bytes(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let len = u.int_in_range(0..=96)?;
    (0..len)
        .map(|_| {
            Ok(if u.ratio(4, 5)? {
                *u.choose(ALPHABET)?
            } else {
                u8::arbitrary(u)?
            })
        })
        .collect()
}

fn word(u: &mut Unstructured) -> arbitrary::Result<Bytes> {
    let len = u.int_in_range(0..=12)?;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            Ok(if u.ratio(3, 4)? {
                *u.choose(b"abcXYZ019 \r\n\"'\\")?
            } else {
                u8::arbitrary(u)?
            })
        })
        .collect::<arbitrary::Result<_>>()?;
    Ok(Bytes::from(bytes))
}

fn request(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let n = u.int_in_range(1..=10)?;
    let args = (0..n)
        .map(|_| word(u))
        .collect::<arbitrary::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    if u.ratio(1, 4)? {
        // Inline: plain words only, so the line splits back into them.
        let words: Vec<String> = args
            .iter()
            .map(|a| {
                a.iter()
                    .filter(|b| b.is_ascii_alphanumeric())
                    .map(|&b| b as char)
                    .collect()
            })
            .collect();
        out.extend_from_slice(words.join(" ").as_bytes());
        out.extend_from_slice(b"\r\n");
    } else {
        encode_request(&args, &mut out);
    }
    Ok(out)
}

fn frame(u: &mut Unstructured, depth: u32) -> arbitrary::Result<Frame> {
    let leaf = depth >= 6 || u.ratio(2, 3)?;
    let text = |u: &mut Unstructured| -> arbitrary::Result<String> {
        let len = u.int_in_range(0..=8)?;
        (0..len)
            .map(|_| Ok(*u.choose(b"abc XYZ09")? as char))
            .collect()
    };
    if leaf {
        return Ok(match u.int_in_range(0..=8)? {
            0 => Frame::Simple(text(u)?),
            1 => Frame::Error(format!("ERR {}", text(u)?)),
            2 => Frame::Integer(i64::arbitrary(u)?),
            3 => Frame::Bulk(Some(word(u)?)),
            4 => Frame::Bulk(None),
            5 => Frame::Null,
            6 => Frame::Boolean(bool::arbitrary(u)?),
            7 => Frame::Double(f64::from(i32::arbitrary(u)?) / 8.0),
            _ => Frame::BigNumber(format!("{}", i128::arbitrary(u)?)),
        });
    }
    let n = u.int_in_range(0..=4)?;
    let items = (0..n)
        .map(|_| frame(u, depth + 1))
        .collect::<arbitrary::Result<Vec<_>>>()?;
    Ok(match u.int_in_range(0..=3)? {
        0 => Frame::Array(Some(items)),
        1 => Frame::Set(items),
        2 => Frame::Push(items),
        _ => Frame::Map(
            items
                .chunks(2)
                .map(|c| (c[0].clone(), c[c.len() - 1].clone()))
                .collect(),
        ),
    })
}

/// A huge declared length in place of the first number after a `*` or `$`.
fn huge_length(u: &mut Unstructured, buf: &mut Vec<u8>) -> arbitrary::Result<()> {
    let marks: Vec<usize> = buf
        .iter()
        .enumerate()
        .filter(|(_, b)| matches!(b, b'*' | b'$'))
        .map(|(i, _)| i)
        .collect();
    if marks.is_empty() {
        return Ok(());
    }
    let at = *u.choose(&marks)? + 1;
    let end = buf[at..]
        .iter()
        .position(|&b| b == b'\r')
        .map_or(buf.len(), |i| at + i);
    let huge = *u.choose(&[
        "1073741824",
        "4294967296",
        "999999999999",
        "9223372036854775807",
    ])?;
    buf.splice(at..end, huge.bytes());
    Ok(())
}

fn mutate(u: &mut Unstructured, mut buf: Vec<u8>) -> arbitrary::Result<Vec<u8>> {
    for _ in 0..u.int_in_range(0..=2)? {
        match u.int_in_range(0..=4)? {
            0 if !buf.is_empty() => {
                let at = u.choose_index(buf.len())?;
                buf.truncate(at);
            }
            1 if !buf.is_empty() => {
                let at = u.choose_index(buf.len())?;
                buf[at] ^= 1 << u.int_in_range(0..=7)?;
            }
            2 => huge_length(u, &mut buf)?,
            3 => {
                // Nest the message deep inside one-element arrays.
                let levels = u.int_in_range(1..=80)?;
                let mut nested = b"*1\r\n".repeat(levels);
                nested.extend_from_slice(&buf);
                buf = nested;
            }
            _ => {}
        }
    }
    Ok(buf)
}

fn input(u: &mut Unstructured) -> arbitrary::Result<Vec<u8>> {
    let mut buf = match u.int_in_range(0..=3)? {
        0 => resp_bytes(u)?,
        1 => {
            let valid = request(u)?;
            mutate(u, valid)?
        }
        2 => {
            let f = frame(u, 0)?;
            let mut out = Vec::new();
            encode_frame(&f, Protocol::Resp3, &mut out);
            mutate(u, out)?
        }
        _ => {
            // Pipelined requests, the way a server's buffer holds them.
            let mut out = request(u)?;
            out.extend(request(u)?);
            mutate(u, out)?
        }
    };
    buf.truncate(INPUT_MAX);
    Ok(buf)
}

type Outcome<T> = Result<Option<(T, usize)>, RespError>;

/// The rules every parser keeps over the prefixes of one input.
fn check_prefixes<T: std::fmt::Debug + PartialEq>(
    name: &str,
    buf: &[u8],
    parse: impl Fn(&[u8]) -> Outcome<T>,
) {
    let results: Vec<Outcome<T>> = (0..=buf.len()).map(|k| parse(&buf[..k])).collect();
    let shown = || buf.escape_ascii().to_string();
    for (k, result) in results.iter().enumerate() {
        if let Ok(Some((_, used))) = result {
            assert!(
                *used > 0 && *used <= k,
                "{name}: consumed {used} of {k} bytes of {}",
                shown()
            );
            // Every strict prefix of an accepted message is incomplete, never an error, and
            // every longer prefix reads the same message.
            for (j, earlier) in results.iter().enumerate().take(*used) {
                assert!(
                    matches!(earlier, Ok(None)),
                    "{name}: prefix {j} of an accepted message gave {earlier:?}: {}",
                    shown()
                );
            }
            for later in &results[k..] {
                assert_eq!(
                    later,
                    result,
                    "{name}: longer input read differently: {}",
                    shown()
                );
            }
        }
        if result.is_err() {
            for later in &results[k..] {
                assert!(
                    later.is_err(),
                    "{name}: an error at {k} went away: {}",
                    shown()
                );
            }
        }
    }
}

/// The resumable parser, fed the input in pieces, answers what `parse_request` answers on
/// each prefix until it first returns a request or an error.
fn check_resumable(u: &mut Unstructured, buf: &[u8], limits: &Limits) -> arbitrary::Result<()> {
    let mut parser = RequestParser::default();
    let mut end = 0;
    while end < buf.len() {
        end = (end + u.int_in_range(1..=16)?).min(buf.len());
        let got = parser.parse(&buf[..end], limits);
        assert_eq!(
            got,
            parse_request(&buf[..end], limits),
            "resumable parser at {end} of {}",
            buf.escape_ascii()
        );
        if !matches!(got, Ok(None)) {
            break;
        }
    }
    Ok(())
}

#[test]
fn seeded_fuzz_of_the_parsers() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut raw = vec![0u8; 64 * 1024];
    let mut counts = [0usize; 3]; // accepted requests, accepted frames, errors
    let mut done = 0;
    while done < INPUTS {
        rng.fill_bytes(&mut raw);
        let mut u = Unstructured::new(&raw);
        while done < INPUTS && u.len() > 1024 {
            let buf = input(&mut u).expect("enough bytes");
            let limits = if done % 2 == 0 {
                Limits::default()
            } else {
                small_limits()
            };
            check_prefixes("parse_request", &buf, |b| parse_request(b, &limits));
            check_prefixes("parse_frame", &buf, |b| parse_frame_with(b, &limits));
            check_resumable(&mut u, &buf, &limits).expect("enough bytes");
            match parse_request(&buf, &limits) {
                Ok(Some(_)) => counts[0] += 1,
                Err(_) => counts[2] += 1,
                Ok(None) => {}
            }
            if let Ok(Some(_)) = parse_frame_with(&buf, &limits) {
                counts[1] += 1;
            }
            done += 1;
        }
    }
    // The generators reach both parsers' success and failure paths, not only one of them.
    assert!(counts.iter().all(|&c| c > INPUTS / 20), "{counts:?}");
}

#[test]
fn huge_declared_lengths_are_refused_before_any_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 1);
    let mut raw = vec![0u8; 16 * 1024];
    for _ in 0..500 {
        rng.fill_bytes(&mut raw);
        let mut u = Unstructured::new(&raw);
        let n = u.int_in_range(1..=6).expect("bytes");
        let args: Vec<Bytes> = (0..n).map(|_| word(&mut u).expect("bytes")).collect();
        let huge = *u
            .choose(&[1u64 << 30, 1 << 32, 999_999_999_999, i64::MAX as u64])
            .expect("bytes");
        // The first arguments as sent, then one announcing `huge` bytes and nothing more.
        let keep = u.int_in_range(0..=args.len() - 1).expect("bytes");
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for arg in &args[..keep] {
            buf.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            buf.extend_from_slice(arg);
            buf.extend_from_slice(b"\r\n");
        }
        buf.extend_from_slice(format!("${huge}\r\n").as_bytes());
        for limits in [Limits::default(), small_limits(), Limits::unauthenticated()] {
            let refused = parse_request(&buf, &limits);
            assert!(
                matches!(
                    refused,
                    Err(RespError::TooLarge {
                        what: LimitKind::BulkLength | LimitKind::RequestSize,
                        ..
                    })
                ),
                "{refused:?} for {}",
                buf.escape_ascii()
            );
            let frame = parse_frame_with(format!("${huge}\r\n").as_bytes(), &limits);
            assert!(
                matches!(frame, Err(RespError::TooLarge { .. })),
                "{frame:?}"
            );
            let count = parse_request(format!("*{huge}\r\n").as_bytes(), &limits);
            assert!(
                matches!(
                    count,
                    Err(RespError::TooLarge {
                        what: LimitKind::MultibulkLength,
                        ..
                    })
                ),
                "{count:?}"
            );
        }
    }
}
