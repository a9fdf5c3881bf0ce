use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::kv::Value;
use crate::kv::rdb::restore_value;
use crate::kv::rdb::tests::{expected, fixtures, unhex};

const REDIS_7: &[u8] = include_bytes!("redis-7.0.15.rdb");

/// Redis's test-suite files, by the names `fixtures.json` gives their objects.
const ASSETS: [(&str, &[u8]); 5] = [
    ("encodings.rdb", include_bytes!("encodings.rdb")),
    ("hash-zipmap.rdb", include_bytes!("hash-zipmap.rdb")),
    ("hash-ziplist.rdb", include_bytes!("hash-ziplist.rdb")),
    ("list-quicklist.rdb", include_bytes!("list-quicklist.rdb")),
    ("zset-ziplist.rdb", include_bytes!("zset-ziplist.rdb")),
];

fn read_all(bytes: &[u8]) -> Result<(u16, Vec<Item>), RdbFileError> {
    let mut file = RdbFile::open(bytes)?;
    let mut items = Vec::new();
    while let Some(item) = file.next_item()? {
        items.push(item);
    }
    Ok((file.version(), items))
}

fn keys(items: &[Item]) -> BTreeMap<Bytes, KeyEntry> {
    items
        .iter()
        .filter_map(|item| match item {
            Item::Key(entry) => Some((entry.key.clone(), entry.clone())),
            _ => None,
        })
        .collect()
}

fn text(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

/// What `redis-7.0.15.rdb` was made of (its README), read back: every key of the five types
/// with its value, the TTLs as absolute times, the key of database 1 in database 1, the
/// stream read past as one, the function library reported, the checksum checked.
#[test]
fn a_file_redis_7_saved_yields_every_key_with_its_value_expiry_and_database() {
    let (version, items) = read_all(REDIS_7).expect("the file reads");
    assert_eq!(version, 10);
    let keys = keys(&items);
    let value = |key: &str| {
        restore_value(&keys[key.as_bytes()].payload).unwrap_or_else(|e| panic!("{key}: {e:?}"))
    };
    assert_eq!(value("s:int"), Value::Str(text(b"-12345")));
    assert_eq!(value("s:short"), Value::Str(text(b"hello")));
    assert_eq!(
        value("s:long"),
        Value::Str(text("larder ".repeat(100).as_bytes()))
    );
    assert_eq!(
        value("l:small"),
        Value::List([&b"a"[..], b"-1", b"300000", b"b"].map(text).into())
    );
    let Value::List(big) = value("l:big") else {
        panic!("l:big is a list")
    };
    let want: Vec<Bytes> = (1..=200)
        .map(|i| text(format!("item{i}").as_bytes()))
        .collect();
    assert_eq!(Vec::from(big), want);
    let Value::Hash(fields) = value("h:big") else {
        panic!("h:big is a hash")
    };
    assert_eq!(fields.len(), 200);
    assert_eq!(fields[&text(b"f77")], text(b"77"));
    let Value::ZSet(scores) = value("z:small") else {
        panic!("z:small is a sorted set")
    };
    assert_eq!(scores.len(), 3);
    let Value::Set(members) = value("set:ints") else {
        panic!("set:ints is a set")
    };
    assert!(members.contains(&text(b"70000")));
    for key in ["set:text", "set:big", "z:big", "h:small"] {
        value(key);
    }
    // A TTL as an absolute time: 1,000 days after the save. (The key that had expired when
    // the file was saved, `s:gone`, redis-server left out of it.)
    let ttl = keys[&text(b"s:ttl")]
        .expires_at_ms
        .expect("s:ttl has a TTL");
    assert!(ttl > 1_850_000_000_000, "{ttl}");
    assert!(!keys.contains_key(&text(b"s:gone")));
    assert_eq!(keys[&text(b"s:int")].expires_at_ms, None);
    assert_eq!(keys[&text(b"db1:key")].db, 1);
    assert_eq!(keys[&text(b"s:int")].db, 0);
    assert!(items.contains(&Item::Skipped {
        db: 0,
        key: text(b"x"),
        kind: "stream"
    }));
    assert_eq!(items.iter().filter(|i| **i == Item::Function).count(), 1);
    assert_eq!(keys[&text(b"after:db1")].db, 0);
    assert_eq!(keys.len(), 15, "{:?}", keys.keys().collect::<Vec<_>>());
}

/// Files of RDB 3 to 10 from Redis's test suite (zipmaps, ziplists, quicklists of ziplists,
/// intsets, old sorted sets): each key's payload is the object `fixtures.json` cut from the
/// same file, whose value redis-server read.
#[test]
fn files_of_rdb_3_to_10_yield_the_objects_redis_read() {
    let fixtures = fixtures();
    let mut matched = 0;
    for (name, bytes) in ASSETS {
        let (version, items) = read_all(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let keys = keys(&items);
        assert!(!keys.is_empty(), "{name}");
        for (key, entry) in &keys {
            let fixture_name = format!("{name}/rdb-{version}/{}", String::from_utf8_lossy(key));
            let fixture = fixtures
                .iter()
                .find(|f| f.name == fixture_name)
                .unwrap_or_else(|| panic!("no fixture {fixture_name}"));
            assert_eq!(
                entry.payload,
                Bytes::from(unhex(&fixture.payload)),
                "{fixture_name}"
            );
            assert_eq!(
                restore_value(&entry.payload).expect("restores"),
                expected(fixture),
                "{fixture_name}"
            );
            matched += 1;
        }
    }
    assert_eq!(matched, 18, "every object cut from these files");
}

/// `redis-cli --rdb -` writes a diskless sync's 40-byte end-of-transfer mark after the file
/// (it truncates a file it wrote, but cannot truncate a pipe): nothing after the checksum is
/// read, so such a stream imports as the file does.
#[test]
fn bytes_after_the_checksum_are_not_read() {
    let mut streamed = REDIS_7.to_vec();
    streamed.extend_from_slice(b"c0150d3e78a4623d5d5e72e6aafb30ed11a7a553");
    let (_, from_stream) = read_all(&streamed).expect("reads");
    let (_, from_file) = read_all(REDIS_7).expect("reads");
    assert_eq!(from_stream, from_file);
    let mut file = RdbFile::open(&streamed[..]).expect("header");
    while file.next_item().expect("reads").is_some() {}
    assert_eq!(file.offset(), REDIS_7.len() as u64);
}

#[test]
fn what_is_not_an_rdb_file_or_is_too_new_is_refused_at_the_header() {
    assert!(matches!(
        RdbFile::open(&b"hello world"[..]),
        Err(RdbFileError::NotRdb)
    ));
    assert!(matches!(
        RdbFile::open(&b"REDIS"[..]),
        Err(RdbFileError::NotRdb)
    ));
    assert!(matches!(
        RdbFile::open(&b"REDIS00x1"[..]),
        Err(RdbFileError::NotRdb)
    ));
    assert!(matches!(
        RdbFile::open(&b"REDIS0013\xff"[..]),
        Err(RdbFileError::Version(13))
    ));
}

#[test]
fn a_changed_byte_fails_the_checksum_and_a_cut_file_ends_early() {
    // A byte of a value's text: the structure still reads, the sum does not.
    let at = REDIS_7
        .windows(5)
        .position(|w| w == b"hello")
        .expect("s:short's value");
    let mut changed = REDIS_7.to_vec();
    changed[at] = b'j';
    assert!(matches!(
        read_all(&changed),
        Err(RdbFileError::Checksum { .. })
    ));
    for cut in [10, REDIS_7.len() / 2, REDIS_7.len() - 4] {
        assert!(
            matches!(
                read_all(&REDIS_7[..cut]),
                Err(RdbFileError::Corrupt {
                    reason: "the file ends before its end marker",
                    ..
                })
            ),
            "cut at {cut}"
        );
    }
    // A zero checksum is a writer's `rdbchecksum no`: not checked.
    let mut unsummed = changed.clone();
    let end = unsummed.len() - 8;
    unsummed[end..].fill(0);
    assert!(read_all(&unsummed).is_ok());
}

/// A file of RDB 9 made here: module AUX data and a module's value (type 2: typed fields up to
/// an end marker) are read past, and the keys around them come out.
#[test]
fn module_data_is_read_past() {
    fn string(out: &mut Vec<u8>, bytes: &[u8]) {
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    let mut file = b"REDIS0009".to_vec();
    // Module AUX: module id, `UINT` and when, then a signed field and the end marker.
    file.extend_from_slice(&[OP_MODULE_AUX, 0x81]);
    file.extend_from_slice(&123_456_789u64.to_be_bytes());
    file.extend_from_slice(&[2, 2, 1, 5, 0]);
    file.extend_from_slice(&[OP_SELECTDB, 0, TYPE_STRING]);
    string(&mut file, b"before");
    string(&mut file, b"1");
    file.push(TYPE_MODULE_2);
    string(&mut file, b"m");
    file.extend_from_slice(&[0x81]);
    file.extend_from_slice(&987_654_321u64.to_be_bytes());
    file.extend_from_slice(&[5]);
    string(&mut file, b"field");
    file.extend_from_slice(&[4]);
    file.extend_from_slice(&1.5f64.to_le_bytes());
    file.extend_from_slice(&[3, 0, 0, 0, 0, 2, 9, 0]);
    file.push(TYPE_STRING);
    string(&mut file, b"after");
    string(&mut file, b"2");
    file.push(OP_EOF);
    let sum = CRC64.checksum(&file);
    file.extend_from_slice(&sum.to_le_bytes());
    let (_, items) = read_all(&file).expect("reads");
    let names: Vec<String> = items
        .iter()
        .map(|item| match item {
            Item::Key(entry) => String::from_utf8_lossy(&entry.key).into_owned(),
            Item::Skipped { kind, .. } => (*kind).to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(names, ["before", "module value", "after"]);
}

#[test]
fn an_object_past_the_limit_is_read_past_and_reported() {
    let mut file = RdbFile::open(REDIS_7)
        .expect("header")
        .with_object_bytes_max(1_000);
    let mut oversized = Vec::new();
    let mut kept = 0;
    while let Some(item) = file.next_item().expect("reads") {
        match item {
            Item::Oversized { key, bytes, .. } => {
                assert!(bytes > 1_000);
                oversized.push(key);
            }
            Item::Key(entry) => {
                assert!(entry.payload.len() <= 1_000 + 10);
                restore_value(&entry.payload).expect("a kept object is whole");
                kept += 1;
            }
            _ => {}
        }
    }
    assert!(!oversized.is_empty() && kept > 0, "{oversized:?}");
    assert!(oversized.contains(&text(b"h:big")), "{oversized:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Garbage never panics the reader nor makes it allocate past the file: a changed,
    /// cut or grown file reads or fails with an error.
    #[test]
    fn a_damaged_file_reads_or_fails_without_panicking(
        at in 0usize..REDIS_7.len(),
        byte in any::<u8>(),
        cut in 9usize..=REDIS_7.len(),
    ) {
        let mut damaged = REDIS_7[..cut].to_vec();
        if at < damaged.len() {
            damaged[at] = byte;
        }
        let _ = read_all(&damaged);
    }
}
