use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;

/// Payloads real Redis servers wrote, each with the value redis-server answered for it
/// (`scripts/dump-fixtures.py` regenerates them): redis-server 7.0.15's own `DUMP`s, and
/// objects cut from the RDB files of Redis's test assets (versions 3 to 10: zipmaps,
/// ziplists, quicklists of ziplists, intsets), with `DUMP`'s footer.
const FIXTURES: &str = include_str!("fixtures.json");

#[derive(serde::Deserialize)]
pub(super) struct Fixture {
    pub(super) name: String,
    pub(super) payload: String,
    #[serde(rename = "type")]
    kind: String,
    items: Vec<serde_json::Value>,
}

pub(super) fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

fn item(value: &serde_json::Value) -> Bytes {
    Bytes::from(unhex(value.as_str().expect("a hex string")))
}

fn pair(value: &serde_json::Value) -> (Bytes, Bytes) {
    let both = value.as_array().expect("a pair");
    (item(&both[0]), item(&both[1]))
}

/// The value redis-server answered, in Larder's model.
pub(super) fn expected(fixture: &Fixture) -> Value {
    match fixture.kind.as_str() {
        "string" => Value::Str(item(&fixture.items[0])),
        "list" => Value::List(fixture.items.iter().map(item).collect()),
        "set" => Value::Set(fixture.items.iter().map(item).collect()),
        "hash" => Value::Hash(fixture.items.iter().map(pair).collect()),
        "zset" => {
            let mut set = ZSet::default();
            for (member, score) in fixture.items.iter().map(pair) {
                let score: f64 = std::str::from_utf8(&score)
                    .expect("text")
                    .parse()
                    .expect("a score");
                set.insert(member, Score::new(score).expect("not NaN"));
            }
            Value::ZSet(set)
        }
        other => panic!("fixture type {other}"),
    }
}

pub(super) fn fixtures() -> Vec<Fixture> {
    serde_json::from_str(FIXTURES).expect("fixtures.json")
}

#[test]
fn every_payload_real_redis_servers_wrote_restores_to_the_value_redis_read() {
    let fixtures = fixtures();
    // Every encoding the module reads is among them (the script's choice of keys).
    assert!(fixtures.len() >= 38, "{} fixtures", fixtures.len());
    let mut kinds = BTreeSet::new();
    for fixture in &fixtures {
        let payload = unhex(&fixture.payload);
        kinds.insert(payload[0]);
        let value =
            restore_value(&payload).unwrap_or_else(|error| panic!("{}: {error:?}", fixture.name));
        assert_eq!(value, expected(fixture), "{}", fixture.name);
    }
    let every_kind = [
        TYPE_STRING,
        TYPE_LIST,
        TYPE_SET,
        TYPE_ZSET,
        TYPE_HASH,
        TYPE_ZSET_2,
        TYPE_HASH_ZIPMAP,
        TYPE_LIST_ZIPLIST,
        TYPE_SET_INTSET,
        TYPE_ZSET_ZIPLIST,
        TYPE_HASH_ZIPLIST,
        TYPE_LIST_QUICKLIST,
        TYPE_HASH_LISTPACK,
        TYPE_ZSET_LISTPACK,
        TYPE_LIST_QUICKLIST_2,
    ];
    let missing: Vec<_> = every_kind.iter().filter(|k| !kinds.contains(k)).collect();
    assert!(missing.is_empty(), "no fixture of types {missing:?}");
}

#[test]
fn a_dumped_value_restores_to_itself_and_redis_reads_the_same_bytes() {
    for fixture in fixtures() {
        let value = expected(&fixture);
        let payload = dump_payload(&value);
        assert_eq!(restore_value(&payload), Ok(value), "{}", fixture.name);
        // The footer Redis checks: version 9, CRC-64/REDIS of the rest.
        let split = payload.len() - 8;
        assert_eq!(&payload[split - 2..split], &[9, 0]);
        assert_eq!(
            CRC64.checksum(&payload[..split]).to_le_bytes(),
            payload[split..]
        );
    }
}

/// Redis's own check value for CRC-64/REDIS ("123456789"), from its `crc64.c` self-test.
#[test]
fn the_checksum_is_redis_crc64() {
    assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
}

fn with_footer(object: &[u8], version: u16) -> Vec<u8> {
    let mut out = object.to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    let sum = CRC64.checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

#[test]
fn a_wrong_footer_or_object_is_refused_with_redis_errors() {
    let good = dump_payload(&Value::Str(Bytes::from_static(b"hello")));
    assert!(restore_value(&good).is_ok());
    let mut flipped = good.to_vec();
    flipped[2] ^= 1;
    assert_eq!(restore_value(&flipped), Err(RestoreError::Footer));
    assert_eq!(restore_value(b"short"), Err(RestoreError::Footer));
    assert_eq!(restore_value(&[]), Err(RestoreError::Footer));
    // A version newer than we read, with a right checksum.
    let object = &good[..good.len() - 10];
    assert_eq!(
        restore_value(&with_footer(object, RESTORE_RDB_VERSION_MAX + 1)),
        Err(RestoreError::Footer)
    );
    assert!(restore_value(&with_footer(object, RESTORE_RDB_VERSION_MAX)).is_ok());
    // The messages are Redis's.
    assert_eq!(
        RestoreError::Footer.to_string(),
        "ERR DUMP payload version or checksum are wrong"
    );
    let refused = |object: &[u8]| match restore_value(&with_footer(object, 10)) {
        Err(error @ RestoreError::BadData { .. }) => {
            assert_eq!(error.to_string(), "ERR Bad data format");
            error
        }
        other => panic!("{object:?} gave {other:?}"),
    };
    // A stream (type 15), a module value (7), an empty list, bytes after the object, a
    // duplicate set member, a NaN score, a length past the end.
    refused(&[15, 0]);
    refused(&[7, 0]);
    refused(&[TYPE_LIST, 0]);
    refused(&[TYPE_STRING, 1, b'a', b'b']);
    refused(&[TYPE_SET, 2, 1, b'a', 1, b'a']);
    refused(&[TYPE_ZSET, 1, 1, b'm', 253]);
    refused(&[TYPE_STRING, 5, b'a']);
    assert_eq!(
        refused(&[
            TYPE_SET, 0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
        ]),
        RestoreError::BadData {
            reason: "a count past the payload's end"
        }
    );
}

#[test]
fn a_forged_compressed_length_is_refused_before_it_is_allocated() {
    // A 512 MiB string claimed by a four-byte LZF body: over LZF's largest expansion.
    let mut object = vec![TYPE_STRING, 0xc3, 4];
    object.push(0x80);
    object.extend_from_slice(&(STRING_BYTES_MAX as u32).to_be_bytes());
    object.extend_from_slice(&[0xe0, 0xff, 0x00, 0x00]);
    assert_eq!(
        restore_value(&with_footer(&object, 9)),
        Err(RestoreError::BadData {
            reason: "a corrupt LZF string"
        })
    );
    // And one past the string limit, whatever the body.
    let mut object = vec![TYPE_STRING, 0xc3, 1];
    object.push(0x80);
    object.extend_from_slice(&(STRING_BYTES_MAX as u32 + 1).to_be_bytes());
    object.push(0);
    assert_eq!(
        restore_value(&with_footer(&object, 9)),
        Err(RestoreError::BadData {
            reason: "a compressed string past the string limit"
        })
    );
}

#[test]
fn lzf_reads_literals_overlapping_references_and_long_runs() {
    // "abc" as a literal, then a reference one back for 9 bytes ("ccccccccc": it overlaps
    // what it writes), then a long reference (run 7 + 10 + 2 = 19) three back.
    let input = [2, b'a', b'b', b'c', 7 << 5, 0, 0, 7 << 5, 10, 2];
    let out = lzf_decompress(&input, 3 + 9 + 19).expect("decompresses");
    let mut want = b"abc".to_vec();
    want.extend_from_slice(&[b'c'; 9]);
    for _ in 0..19 {
        let byte = want[want.len() - 3];
        want.push(byte);
    }
    assert_eq!(out, want);
    // A reference before the start, a run past the length, a short result: all corrupt.
    assert!(lzf_decompress(&[0x20, 5], 10).is_err());
    assert!(lzf_decompress(&[0, b'a', 0x20, 0], 2).is_err());
    assert!(lzf_decompress(&[1, b'a', b'b'], 3).is_err());
}

#[test]
fn listpack_integers_keep_their_sign_at_every_width() {
    fn listpack_of(entries: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = entries.concat();
        let total = 6 + body.len() + 1;
        let mut out = (total as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&body);
        out.push(0xff);
        out
    }
    let items = listpack(&listpack_of(&[
        &[0x7f, 1],                   // 7-bit 127
        &[0xc0 | 0x1f, 0xff, 2],      // 13-bit -1
        &[0xd0, 0x00, 2],             // 13-bit -4096
        &[0xf1, 0x00, 0x80, 3],       // 16-bit -32768
        &[0xf2, 0xff, 0xff, 0x7f, 4], // 24-bit 8388607
        &[0xf3, 0xff, 0xff, 0xff, 0xff, 5],
        &[0xf4, 0, 0, 0, 0, 0, 0, 0, 0x80, 9],
    ]))
    .expect("a listpack");
    let texts: Vec<String> = items
        .iter()
        .map(|item| String::from_utf8(item.to_vec()).expect("text"))
        .collect();
    assert_eq!(
        texts,
        [
            "127",
            "-1",
            "-4096",
            "-32768",
            "8388607",
            "-1",
            "-9223372036854775808"
        ]
    );
}

fn bytes_strategy() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80).prop_map(Bytes::from),
        (any::<i64>()).prop_map(|n| Bytes::from(n.to_string())),
        (0usize..20_000).prop_map(|n| Bytes::from(vec![b'x'; n])),
    ]
}

fn value_strategy() -> impl Strategy<Value = Value> {
    let score = prop_oneof![
        any::<f64>().prop_filter("not NaN", |score| !score.is_nan()),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
    ];
    prop_oneof![
        bytes_strategy().prop_map(Value::Str),
        proptest::collection::vec(bytes_strategy(), 1..40)
            .prop_map(|items| Value::List(VecDeque::from(items))),
        proptest::collection::btree_set(bytes_strategy(), 1..40).prop_map(Value::Set),
        proptest::collection::btree_map(bytes_strategy(), bytes_strategy(), 1..40)
            .prop_map(Value::Hash),
        proptest::collection::btree_map(bytes_strategy(), score, 1..40).prop_map(|scored| {
            let mut set = ZSet::default();
            for (member, score) in scored {
                set.insert(member, Score::new(score).expect("not NaN"));
            }
            Value::ZSet(set)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_value_restores_from_its_own_dump(value in value_strategy()) {
        prop_assert_eq!(restore_value(&dump_payload(&value)), Ok(value));
    }

    /// Garbage behind a right footer is refused or read, never a panic: the object part of a
    /// real payload with bytes changed, cut short or grown, and plain random bytes.
    #[test]
    fn any_object_behind_a_right_footer_is_refused_or_read_never_a_panic(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        random in proptest::collection::vec(any::<u8>(), 0..64),
        version in 0u16..=12,
    ) {
        let fixtures = fixtures();
        let fixture = &fixtures[pick.index(fixtures.len())];
        let payload = unhex(&fixture.payload);
        let mut object = payload[..payload.len() - 10].to_vec();
        for (at, byte) in &edits {
            let at = at.index(object.len());
            object[at] = *byte;
        }
        let _ = restore_value(&with_footer(&object, version));
        object.truncate(cut.index(object.len() + 1));
        let _ = restore_value(&with_footer(&object, version));
        object.extend_from_slice(&random);
        let _ = restore_value(&with_footer(&object, version));
        let _ = restore_value(&with_footer(&random, version));
    }
}

#[test]
fn dumps_of_maps_and_sets_list_each_element_once() {
    let value = Value::Hash(BTreeMap::from([
        (Bytes::from_static(b"f"), Bytes::from_static(b"v")),
        (Bytes::from_static(b"g"), Bytes::from_static(b"w")),
    ]));
    let payload = dump_payload(&value);
    assert_eq!(
        &payload[..payload.len() - 10],
        &[TYPE_HASH, 2, 1, b'f', 1, b'v', 1, b'g', 1, b'w']
    );
    // Lengths of every width RDB has.
    let mut out = Vec::new();
    for length in [
        63,
        64,
        16_383,
        16_384,
        u64::from(u32::MAX),
        u64::from(u32::MAX) + 1,
    ] {
        out.clear();
        write_length(&mut out, length);
        let mut reader = Reader::new(&out);
        assert_eq!(reader.length().ok(), Some(length));
        assert!(reader.is_empty());
    }
}
