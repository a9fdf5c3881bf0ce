//! Unit and property tests of the codec, through the public functions only: requests and
//! replies round-trip, limits hold, and hostile or truncated input is rejected without
//! consuming anything.

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
    // Redis skips any non-positive count (its suite's "Negative multibulk length").
    assert_eq!(req(b"*-10\r\n"), Ok(Some((vec![], 6))));
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
    assert_eq!(encode(&Frame::Array(None), Protocol::Resp3), b"_\r\n");
    assert_eq!(encode(&Frame::Array(None), Protocol::Resp2), b"*-1\r\n");
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

#[test]
fn scores_and_pairs_take_each_protocols_shape() {
    // ZRANGE … WITHSCORES: flat in RESP2, nested pairs in RESP3, scores as `%.17g`.
    let reply = Reply::Pairs(vec![
        Reply::Bulk(Bytes::from_static(b"a")),
        Reply::double(1.5),
        Reply::Bulk(Bytes::from_static(b"b")),
        Reply::double(f64::INFINITY),
    ]);
    let frame = Frame::from(&reply);
    assert_eq!(
        encode(&frame, Protocol::Resp2),
        b"*4\r\n$1\r\na\r\n$3\r\n1.5\r\n$1\r\nb\r\n$3\r\ninf\r\n"
    );
    assert_eq!(
        encode(&frame, Protocol::Resp3),
        b"*2\r\n*2\r\n$1\r\na\r\n,1.5\r\n*2\r\n$1\r\nb\r\n,inf\r\n"
    );
    assert_eq!(
        encode(&Frame::from(Reply::double(0.1)), Protocol::Resp3),
        b",0.10000000000000001\r\n"
    );
    assert_eq!(
        reply.resp2(),
        Reply::Array(vec![
            Reply::Bulk(Bytes::from_static(b"a")),
            Reply::Bulk(Bytes::from_static(b"1.5")),
            Reply::Bulk(Bytes::from_static(b"b")),
            Reply::Bulk(Bytes::from_static(b"inf")),
        ])
    );
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
            proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Frame::Map),
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

/// `frame` with every null array replaced by RESP3's null, which is how it reads back.
fn resp3_nulls(frame: Frame) -> Frame {
    match frame {
        Frame::Array(None) => Frame::Null,
        Frame::Array(Some(items)) => {
            Frame::Array(Some(items.into_iter().map(resp3_nulls).collect()))
        }
        Frame::Set(items) => Frame::Set(items.into_iter().map(resp3_nulls).collect()),
        Frame::Push(items) => Frame::Push(items.into_iter().map(resp3_nulls).collect()),
        Frame::Map(pairs) => Frame::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (resp3_nulls(k), resp3_nulls(v)))
                .collect(),
        ),
        other => other,
    }
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
        // RESP3 has one null: a null array is written as it and reads back as it.
        prop_assert_eq!(parse_frame(&buf), Ok(Some((resp3_nulls(frame), len))));
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

/// Feeds `buf` to a [`RequestParser`] `step` bytes at a time, dropping consumed bytes as a
/// server does, and returns the requests read (or the first error) and the parser.
fn feed(buf: &[u8], step: usize, limits: &Limits) -> (Result<Vec<Vec<Bytes>>, RespError>, usize) {
    let mut parser = RequestParser::default();
    let mut input: Vec<u8> = Vec::new();
    let mut requests = Vec::new();
    for chunk in buf.chunks(step.max(1)) {
        input.extend_from_slice(chunk);
        loop {
            match parser.parse(&input, limits) {
                Ok(Some((args, used))) => {
                    assert!(used <= input.len());
                    input.drain(..used);
                    requests.push(args);
                }
                Ok(None) => break,
                Err(e) => return (Err(e), parser.headers_read),
            }
        }
    }
    (Ok(requests), parser.headers_read)
}

#[test]
fn a_request_in_many_reads_is_scanned_once() {
    // MSET of 20,000 short arguments arriving 7 bytes at a time: ~30,000 reads. Re-parsing
    // from the start on every read would read ~300 million argument headers.
    let words: Vec<String> = std::iter::once("MSET".to_owned())
        .chain((0..19_999).map(|i| format!("k{i}")))
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let expected = args(&words);
    let mut buf = Vec::new();
    encode_request(&expected, &mut buf);
    let reads = buf.len().div_ceil(7);
    let (requests, headers) = feed(&buf, 7, &Limits::default());
    assert_eq!(requests, Ok(vec![expected.clone()]));
    // Each header is read once, plus at most one unfinished header re-read per read.
    assert!(
        headers <= expected.len() + reads,
        "{headers} headers read for {} arguments in {reads} reads",
        expected.len()
    );
    // A large value in small reads: its header is read about once per read at most, and the
    // 1 MiB of data is never copied until it is complete.
    let value = vec![b'x'; 1 << 20];
    let set = vec![
        Bytes::from_static(b"SET"),
        Bytes::from_static(b"k"),
        Bytes::from(value),
    ];
    let mut buf = Vec::new();
    encode_request(&set, &mut buf);
    let (requests, headers) = feed(&buf, 4096, &Limits::default());
    assert_eq!(requests, Ok(vec![set]));
    assert!(headers <= 3 + buf.len().div_ceil(4096), "{headers}");
}

#[test]
fn the_resumable_parser_agrees_with_parse_request() {
    let mut stream = Vec::new();
    encode_request(&args(&["SET", "foo", "bar"]), &mut stream);
    stream.extend_from_slice(b"PING\r\n*0\r\nECHO \"a b\"\r\n");
    encode_request(&args(&["GET", "a\r\nb"]), &mut stream);
    let mut expected = Vec::new();
    let mut rest = &stream[..];
    while let Some((request, used)) = req(rest).expect("valid") {
        expected.push(request);
        rest = &rest[used..];
    }
    assert_eq!(expected.len(), 5);
    for step in 1..stream.len() {
        assert_eq!(
            feed(&stream, step, &Limits::default()).0,
            Ok(expected.clone())
        );
    }
    // Errors surface the same way, however the bytes arrive.
    for step in 1..8 {
        assert_eq!(
            feed(b"*2\r\n$3\r\nGET\r\n:1\r\n", step, &Limits::default()).0,
            Err(protocol_err("expected '$', got ':'"))
        );
        assert!(matches!(
            feed(
                &[b'a'; 100],
                step,
                &Limits {
                    inline_bytes_max: 50,
                    ..Limits::default()
                }
            )
            .0,
            Err(RespError::TooLarge {
                what: LimitKind::InlineRequest,
                ..
            })
        ));
    }
}

#[test]
fn unauthenticated_limits_are_redis_7s() {
    let limits = Limits::unauthenticated();
    let p = |b: &[u8]| parse_request(b, &limits);
    let eleven = p(b"*11\r\n").expect_err("11 arguments");
    assert_eq!(
        eleven.unauthenticated_text().as_deref(),
        Some("Protocol error: unauthenticated multibulk length")
    );
    let big = p(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n").expect_err("a 16385-byte bulk");
    assert_eq!(
        big.unauthenticated_text().as_deref(),
        Some("Protocol error: unauthenticated bulk length")
    );
    // The largest request it allows parses: ten arguments of 16 KiB.
    let ten: Vec<Bytes> = (0..10).map(|_| Bytes::from(vec![b'a'; 16384])).collect();
    let mut buf = Vec::new();
    encode_request(&ten, &mut buf);
    assert_eq!(p(&buf), Ok(Some((ten, buf.len()))));
    assert_eq!(protocol_err("x").unauthenticated_text(), None);
}
