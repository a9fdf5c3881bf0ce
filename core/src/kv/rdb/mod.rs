//! `DUMP` and `RESTORE` payloads in Redis's own format, so the tools teams migrate with work
//! unchanged in both directions: a Redis server's `MIGRATE` (which sends `RESTORE` with the
//! source's payload) or a DUMP-and-RESTORE copier moves keys from Redis into Larder, and a
//! payload Larder dumps restores on Redis.
//!
//! A payload is one object of an RDB file: a type byte, the object's encoding, then the RDB
//! version (two bytes, little-endian) and a CRC-64 (Jones polynomial, "CRC-64/REDIS", eight
//! bytes, little-endian) of everything before it.
//!
//! - **Reading** ([`restore_value`]) takes every encoding a Redis server of RDB version 3 to
//!   12 (Redis 2.4 to 7.4) dumps for the five types Larder has: strings (plain, integer,
//!   LZF-compressed), lists (linked, ziplist, quicklist of ziplists or listpacks), sets
//!   (hashtable, intset, listpack), sorted sets (string or binary scores, ziplist, listpack)
//!   and hashes (hashtable, zipmap, ziplist, listpack). Streams, modules and hashes with
//!   per-field expiry are refused (`ERR Bad data format`), as Larder has none of them.
//! - **Writing** ([`dump_payload`]) uses only the plain encodings of RDB version 9
//!   ([`DUMP_RDB_VERSION`]), which every Redis since 4.0 restores and re-encodes as it likes.
//!   Redis's own compact encodings are an in-memory choice of Redis's, not part of a value.
//!
//! Reading never trusts a length: each is checked against the bytes left before anything is
//! allocated, and a decompressed string against [`STRING_BYTES_MAX`], so a forged payload is
//! refused with an error rather than taking memory or panicking (a proptest feeds it garbage).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use super::{STRING_BYTES_MAX, Score, Value, ZSet};

pub mod file;
pub mod writer;

/// The RDB version [`dump_payload`] stamps: the oldest with every type it writes (`ZSET_2`
/// arrived in version 8; 9 is Redis 5 and 6), so Redis 4.0 and later all restore it.
pub const DUMP_RDB_VERSION: u16 = 9;

/// The newest RDB version whose payloads [`restore_value`] reads (Redis 7.4's). Redis refuses
/// a payload newer than its own version; so do we, as a newer one may hold encodings we do
/// not know.
pub const RESTORE_RDB_VERSION_MAX: u16 = 12;

/// A `static`, not a `const`: [`file`] keeps a running digest of a whole file, which borrows it.
static CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

/// Redis's CRC-64 (Jones, reflected; the checksum of RDB files and `DUMP` payloads) of
/// `bytes`, for other files that want the same check (`larder backup`'s).
pub fn checksum64(bytes: &[u8]) -> u64 {
    CRC64.checksum(bytes)
}

/// Why a payload was refused. The messages are Redis's own answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("ERR DUMP payload version or checksum are wrong")]
    Footer,
    /// The payload's footer is right but its object is not one Larder can hold; `reason` is
    /// for tests and logs, not for the client.
    #[error("ERR Bad data format")]
    BadData { reason: &'static str },
}

fn bad(reason: &'static str) -> RestoreError {
    RestoreError::BadData { reason }
}

// Object types (Redis's `rdb.h`).
const TYPE_STRING: u8 = 0;
const TYPE_LIST: u8 = 1;
const TYPE_SET: u8 = 2;
const TYPE_ZSET: u8 = 3;
const TYPE_HASH: u8 = 4;
const TYPE_ZSET_2: u8 = 5;
const TYPE_HASH_ZIPMAP: u8 = 9;
const TYPE_LIST_ZIPLIST: u8 = 10;
const TYPE_SET_INTSET: u8 = 11;
const TYPE_ZSET_ZIPLIST: u8 = 12;
const TYPE_HASH_ZIPLIST: u8 = 13;
const TYPE_LIST_QUICKLIST: u8 = 14;
const TYPE_HASH_LISTPACK: u8 = 16;
const TYPE_ZSET_LISTPACK: u8 = 17;
const TYPE_LIST_QUICKLIST_2: u8 = 18;
const TYPE_SET_LISTPACK: u8 = 20;

/// A quicklist node of RDB version 10 and later holds one element as it is (`PLAIN`, for
/// elements too large to pack) or a listpack of several (`PACKED`).
const QUICKLIST_NODE_PLAIN: u64 = 1;
const QUICKLIST_NODE_PACKED: u64 = 2;

/// `DUMP`'s payload for `value`.
pub fn dump_payload(value: &Value) -> Bytes {
    let mut out = Vec::new();
    match value {
        Value::Str(text) => {
            out.push(TYPE_STRING);
            write_string(&mut out, text);
        }
        Value::List(items) => {
            out.push(TYPE_LIST);
            write_length(&mut out, items.len() as u64);
            for item in items {
                write_string(&mut out, item);
            }
        }
        Value::Set(members) => {
            out.push(TYPE_SET);
            write_length(&mut out, members.len() as u64);
            for member in members {
                write_string(&mut out, member);
            }
        }
        Value::Hash(fields) => {
            out.push(TYPE_HASH);
            write_length(&mut out, fields.len() as u64);
            for (field, value) in fields {
                write_string(&mut out, field);
                write_string(&mut out, value);
            }
        }
        Value::ZSet(set) => {
            out.push(TYPE_ZSET_2);
            write_length(&mut out, set.len() as u64);
            for (member, score) in set.by_member() {
                write_string(&mut out, member);
                out.extend_from_slice(&score.get().to_le_bytes());
            }
        }
        // `DUMP` refuses locks before it gets here; this keeps the function total: a hash of
        // the lock's fields, what a Redis could hold of it.
        Value::Lock(lock) => {
            out.push(TYPE_HASH);
            write_length(&mut out, 3);
            let holder = lock.holder.clone().unwrap_or_default();
            for (field, value) in [
                (&b"holder"[..], &holder[..]),
                (b"token", lock.token.to_string().as_bytes()),
                (b"lease_ends_ms", lock.lease_ends_ms.to_string().as_bytes()),
            ] {
                write_string(&mut out, field);
                write_string(&mut out, value);
            }
        }
    }
    out.extend_from_slice(&DUMP_RDB_VERSION.to_le_bytes());
    let sum = CRC64.checksum(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Bytes::from(out)
}

/// RDB's length encoding: 6 bits in one byte, 14 bits in two, then 32 or 64 bits big-endian.
fn write_length(out: &mut Vec<u8>, length: u64) {
    if length < 1 << 6 {
        out.push(length as u8);
    } else if length < 1 << 14 {
        out.extend_from_slice(&[0x40 | (length >> 8) as u8, length as u8]);
    } else if length <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(length as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&length.to_be_bytes());
    }
}

fn write_string(out: &mut Vec<u8>, bytes: &[u8]) {
    write_length(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The value in a `RESTORE` payload.
pub fn restore_value(payload: &[u8]) -> Result<Value, RestoreError> {
    // The footer first, as Redis checks it: a payload of another program, or a corrupted one,
    // is refused before its object is looked at.
    let Some(split) = payload.len().checked_sub(10) else {
        return Err(RestoreError::Footer);
    };
    let (object, footer) = payload.split_at(split);
    let version = u16::from_le_bytes([footer[0], footer[1]]);
    let sum = u64::from_le_bytes(footer[2..].try_into().expect("eight bytes"));
    if version > RESTORE_RDB_VERSION_MAX || CRC64.checksum(&payload[..split + 2]) != sum {
        return Err(RestoreError::Footer);
    }
    let mut reader = Reader::new(object);
    let kind = reader.byte()?;
    let value = read_object(kind, &mut reader)?;
    if !reader.is_empty() {
        return Err(bad("bytes after the object"));
    }
    let empty = match &value {
        Value::Str(_) | Value::Lock(_) => false,
        Value::Hash(fields) => fields.is_empty(),
        Value::List(items) => items.is_empty(),
        Value::Set(members) => members.is_empty(),
        Value::ZSet(set) => set.is_empty(),
    };
    // An empty collection is no key at all; Redis refuses one in a payload too.
    if empty {
        return Err(bad("an empty collection"));
    }
    Ok(value)
}

fn read_object(kind: u8, reader: &mut Reader<'_>) -> Result<Value, RestoreError> {
    Ok(match kind {
        TYPE_STRING => Value::Str(reader.string()?.into()),
        TYPE_LIST => {
            let count = reader.count()?;
            let mut items = VecDeque::with_capacity(count);
            for _ in 0..count {
                items.push_back(Bytes::from(reader.string()?));
            }
            Value::List(items)
        }
        TYPE_LIST_ZIPLIST => Value::List(ziplist(&reader.string()?)?.into()),
        TYPE_LIST_QUICKLIST | TYPE_LIST_QUICKLIST_2 => {
            let nodes = reader.count()?;
            let mut items = VecDeque::new();
            for _ in 0..nodes {
                let container = if kind == TYPE_LIST_QUICKLIST_2 {
                    reader.length()?
                } else {
                    QUICKLIST_NODE_PACKED
                };
                let node = reader.string()?;
                match container {
                    QUICKLIST_NODE_PLAIN => items.push_back(Bytes::from(node)),
                    QUICKLIST_NODE_PACKED if kind == TYPE_LIST_QUICKLIST_2 => {
                        items.extend(listpack(&node)?)
                    }
                    QUICKLIST_NODE_PACKED => items.extend(ziplist(&node)?),
                    _ => return Err(bad("a quicklist node of an unknown container")),
                }
            }
            Value::List(items)
        }
        TYPE_SET => {
            let count = reader.count()?;
            let mut members = BTreeSet::new();
            for _ in 0..count {
                if !members.insert(Bytes::from(reader.string()?)) {
                    return Err(bad("a set member twice"));
                }
            }
            Value::Set(members)
        }
        TYPE_SET_INTSET => set_of(intset(&reader.string()?)?)?,
        TYPE_SET_LISTPACK => set_of(listpack(&reader.string()?)?)?,
        TYPE_HASH => {
            let count = reader.count()?;
            let mut pairs = Vec::with_capacity(count);
            for _ in 0..count {
                pairs.push((reader.string()?.into(), reader.string()?.into()));
            }
            hash_of(pairs)?
        }
        TYPE_HASH_ZIPMAP => hash_of(zipmap(&reader.string()?)?)?,
        TYPE_HASH_ZIPLIST => hash_of(pairs(ziplist(&reader.string()?)?)?)?,
        TYPE_HASH_LISTPACK => hash_of(pairs(listpack(&reader.string()?)?)?)?,
        TYPE_ZSET | TYPE_ZSET_2 => {
            let count = reader.count()?;
            let mut scored = Vec::with_capacity(count);
            for _ in 0..count {
                let member = Bytes::from(reader.string()?);
                let score = if kind == TYPE_ZSET_2 {
                    f64::from_le_bytes(reader.take(8)?.try_into().expect("eight bytes"))
                } else {
                    reader.text_score()?
                };
                scored.push((member, score));
            }
            zset_of(scored)?
        }
        TYPE_ZSET_ZIPLIST | TYPE_ZSET_LISTPACK => {
            let flat = if kind == TYPE_ZSET_ZIPLIST {
                ziplist(&reader.string()?)?
            } else {
                listpack(&reader.string()?)?
            };
            let mut scored = Vec::with_capacity(flat.len() / 2);
            for (member, score) in pairs(flat)? {
                scored.push((member, parse_score(&score)?));
            }
            zset_of(scored)?
        }
        _ => {
            return Err(bad(
                "a type Larder does not have (a stream, a module's, or newer)",
            ));
        }
    })
}

fn set_of(members: Vec<Bytes>) -> Result<Value, RestoreError> {
    let count = members.len();
    let members: BTreeSet<Bytes> = members.into_iter().collect();
    if members.len() != count {
        return Err(bad("a set member twice"));
    }
    Ok(Value::Set(members))
}

fn hash_of(pairs: Vec<(Bytes, Bytes)>) -> Result<Value, RestoreError> {
    let mut fields = BTreeMap::new();
    for (field, value) in pairs {
        if fields.insert(field, value).is_some() {
            return Err(bad("a hash field twice"));
        }
    }
    Ok(Value::Hash(fields))
}

fn zset_of(scored: Vec<(Bytes, f64)>) -> Result<Value, RestoreError> {
    let mut set = ZSet::default();
    for (member, score) in scored {
        let score = Score::new(score).ok_or(bad("a NaN score"))?;
        if set.insert(member, score).is_some() {
            return Err(bad("a sorted set member twice"));
        }
    }
    Ok(Value::ZSet(set))
}

/// A flat field, value, field, value... sequence as pairs.
fn pairs(flat: Vec<Bytes>) -> Result<Vec<(Bytes, Bytes)>, RestoreError> {
    if !flat.len().is_multiple_of(2) {
        return Err(bad("an odd number of entries in a pair encoding"));
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(first), Some(second)) = (flat.next(), flat.next()) {
        out.push((first, second));
    }
    Ok(out)
}

/// A score written as text (old sorted sets, ziplists, listpacks): what Redis's `strtod`
/// reads, `inf` and `-inf` included; NaN is refused by [`zset_of`].
fn parse_score(text: &[u8]) -> Result<f64, RestoreError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.trim().parse::<f64>().ok())
        .ok_or(bad("a score that is not a number"))
}

/// A cursor over a payload's bytes; every read checks what is left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn byte(&mut self) -> Result<u8, RestoreError> {
        Ok(self.take(1)?[0])
    }

    fn take(&mut self, count: usize) -> Result<&'a [u8], RestoreError> {
        if count > self.bytes.len() {
            return Err(bad("a length past the payload's end"));
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    /// A length, or the special-encoding marker `Err(Special(n))` of a string.
    fn length_or_special(&mut self) -> Result<Length, RestoreError> {
        let first = self.byte()?;
        Ok(match first >> 6 {
            0 => Length::Plain(u64::from(first & 0x3f)),
            1 => Length::Plain(u64::from(first & 0x3f) << 8 | u64::from(self.byte()?)),
            2 => match first {
                0x80 => Length::Plain(u64::from(u32::from_be_bytes(
                    self.take(4)?.try_into().expect("four bytes"),
                ))),
                0x81 => Length::Plain(u64::from_be_bytes(
                    self.take(8)?.try_into().expect("eight bytes"),
                )),
                _ => return Err(bad("an unknown length encoding")),
            },
            _ => Length::Special(first & 0x3f),
        })
    }

    fn length(&mut self) -> Result<u64, RestoreError> {
        match self.length_or_special()? {
            Length::Plain(length) => Ok(length),
            Length::Special(_) => Err(bad("an encoded string where a length belongs")),
        }
    }

    /// A count of items that follow, each at least one byte: one past the bytes left is a
    /// forgery, refused before anything is allocated for it.
    fn count(&mut self) -> Result<usize, RestoreError> {
        let count = self.length()?;
        if count > self.bytes.len() as u64 {
            return Err(bad("a count past the payload's end"));
        }
        Ok(count as usize)
    }

    /// An RDB string: plain, an integer written in 1, 2 or 4 bytes, or LZF-compressed.
    fn string(&mut self) -> Result<Vec<u8>, RestoreError> {
        match self.length_or_special()? {
            Length::Plain(length) => {
                let length = usize::try_from(length).map_err(|_| bad("a string too long"))?;
                Ok(self.take(length)?.to_vec())
            }
            Length::Special(0) => Ok((self.byte()? as i8).to_string().into_bytes()),
            Length::Special(1) => Ok(i16::from_le_bytes(self.take(2)?.try_into().expect("two"))
                .to_string()
                .into_bytes()),
            Length::Special(2) => Ok(i32::from_le_bytes(self.take(4)?.try_into().expect("four"))
                .to_string()
                .into_bytes()),
            Length::Special(3) => {
                let compressed = usize::try_from(self.length()?).unwrap_or(usize::MAX);
                let length = usize::try_from(self.length()?).unwrap_or(usize::MAX);
                if length > STRING_BYTES_MAX {
                    return Err(bad("a compressed string past the string limit"));
                }
                lzf_decompress(self.take(compressed)?, length)
            }
            Length::Special(_) => Err(bad("an unknown string encoding")),
        }
    }

    /// A score of the old `ZSET` type: a length byte, with 253, 254 and 255 for NaN, +inf and
    /// -inf, then that many bytes of text.
    fn text_score(&mut self) -> Result<f64, RestoreError> {
        match self.byte()? {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            length => parse_score(self.take(usize::from(length))?),
        }
    }
}

enum Length {
    Plain(u64),
    Special(u8),
}

/// LZF's decompression (Redis compresses strings over 20 bytes with it): literal runs and
/// back references into the output; the output must come to exactly `length` bytes.
fn lzf_decompress(input: &[u8], length: usize) -> Result<Vec<u8>, RestoreError> {
    let corrupt = || bad("a corrupt LZF string");
    // One back reference (three input bytes) writes at most 264: a claimed length past that
    // ratio is a forgery, refused before it is allocated.
    if length > input.len().saturating_mul(88) {
        return Err(corrupt());
    }
    let mut out = Vec::with_capacity(length);
    let mut at = 0;
    while at < input.len() {
        let control = usize::from(input[at]);
        at += 1;
        if control < 32 {
            // A literal run of `control + 1` bytes.
            let run = input.get(at..at + control + 1).ok_or_else(corrupt)?;
            if out.len() + run.len() > length {
                return Err(corrupt());
            }
            out.extend_from_slice(run);
            at += run.len();
        } else {
            // A back reference: `len + 2` bytes starting `offset + 1` bytes back.
            let mut run = control >> 5;
            if run == 7 {
                run += usize::from(*input.get(at).ok_or_else(corrupt)?);
                at += 1;
            }
            run += 2;
            let offset = ((control & 0x1f) << 8) + usize::from(*input.get(at).ok_or_else(corrupt)?);
            at += 1;
            let start = out.len().checked_sub(offset + 1).ok_or_else(corrupt)?;
            if out.len() + run > length {
                return Err(corrupt());
            }
            // Byte by byte: a reference may overlap what it is writing (a repeated run).
            for index in start..start + run {
                let byte = out[index];
                out.push(byte);
            }
        }
    }
    if out.len() != length {
        return Err(corrupt());
    }
    Ok(out)
}

/// An intset: its integers' width (2, 4 or 8 bytes), their count, then each little-endian.
fn intset(blob: &[u8]) -> Result<Vec<Bytes>, RestoreError> {
    let mut reader = Reader::new(blob);
    let width = u32::from_le_bytes(reader.take(4)?.try_into().expect("four")) as usize;
    let count = u32::from_le_bytes(reader.take(4)?.try_into().expect("four")) as usize;
    if !matches!(width, 2 | 4 | 8) || count.checked_mul(width) != Some(reader.bytes.len()) {
        return Err(bad("a malformed intset"));
    }
    Ok(reader
        .bytes
        .chunks_exact(width)
        .map(|chunk| {
            let value = match width {
                2 => i64::from(i16::from_le_bytes(chunk.try_into().expect("two"))),
                4 => i64::from(i32::from_le_bytes(chunk.try_into().expect("four"))),
                _ => i64::from_le_bytes(chunk.try_into().expect("eight")),
            };
            Bytes::from(value.to_string())
        })
        .collect())
}

/// A sign-extended integer of `bits` bits from its little-endian bytes.
fn signed(bytes: &[u8], bits: u32) -> i64 {
    let mut raw = [0u8; 8];
    raw[..bytes.len()].copy_from_slice(bytes);
    let value = u64::from_le_bytes(raw);
    let shift = 64 - bits;
    ((value << shift) as i64) >> shift
}

/// A ziplist (Redis 2.6 to 6.2's compact lists, hashes and sorted sets): a header of total
/// bytes, tail offset and count, entries each with the previous entry's length, its encoding
/// and its data, then `0xFF`.
fn ziplist(blob: &[u8]) -> Result<Vec<Bytes>, RestoreError> {
    let mut reader = Reader::new(blob);
    let total = u32::from_le_bytes(reader.take(4)?.try_into().expect("four")) as usize;
    reader.take(6)?; // The tail's offset and the count (a hint, 65535 when larger).
    if total != blob.len() {
        return Err(bad("a ziplist whose header disagrees with its size"));
    }
    let mut items = Vec::new();
    loop {
        let first = reader.byte()?;
        if first == 0xff {
            break;
        }
        if first == 0xfe {
            reader.take(4)?;
        }
        let encoding = reader.byte()?;
        let item = match encoding >> 6 {
            0 => Bytes::copy_from_slice(reader.take(usize::from(encoding & 0x3f))?),
            1 => {
                let length = usize::from(encoding & 0x3f) << 8 | usize::from(reader.byte()?);
                Bytes::copy_from_slice(reader.take(length)?)
            }
            2 if encoding == 0x80 => {
                let length = u32::from_be_bytes(reader.take(4)?.try_into().expect("four"));
                Bytes::copy_from_slice(reader.take(length as usize)?)
            }
            2 => return Err(bad("an unknown ziplist encoding")),
            _ => {
                let value = match encoding {
                    0xc0 => signed(reader.take(2)?, 16),
                    0xd0 => signed(reader.take(4)?, 32),
                    0xe0 => signed(reader.take(8)?, 64),
                    0xf0 => signed(reader.take(3)?, 24),
                    0xfe => signed(reader.take(1)?, 8),
                    0xf1..=0xfd => i64::from(encoding & 0x0f) - 1,
                    _ => return Err(bad("an unknown ziplist encoding")),
                };
                Bytes::from(value.to_string())
            }
        };
        items.push(item);
    }
    if !reader.is_empty() {
        return Err(bad("bytes after a ziplist's end"));
    }
    Ok(items)
}

/// A listpack (Redis 7's compact encoding): a header of total bytes and count, entries each
/// an encoding, its data and a back-length of one to five bytes, then `0xFF`.
fn listpack(blob: &[u8]) -> Result<Vec<Bytes>, RestoreError> {
    let mut reader = Reader::new(blob);
    let total = u32::from_le_bytes(reader.take(4)?.try_into().expect("four")) as usize;
    reader.take(2)?; // The count (a hint, 65535 when larger).
    if total != blob.len() {
        return Err(bad("a listpack whose header disagrees with its size"));
    }
    let mut items = Vec::new();
    loop {
        let encoding = reader.byte()?;
        if encoding == 0xff {
            break;
        }
        // (the item, the bytes of the entry before its back-length)
        let (item, entry_bytes) = if encoding & 0x80 == 0 {
            (Bytes::from(u64::from(encoding).to_string()), 1)
        } else if encoding & 0xc0 == 0x80 {
            let length = usize::from(encoding & 0x3f);
            (Bytes::copy_from_slice(reader.take(length)?), 1 + length)
        } else if encoding & 0xe0 == 0xc0 {
            let low = reader.byte()?;
            let value = signed(&[low, encoding & 0x1f], 13);
            (Bytes::from(value.to_string()), 2)
        } else if encoding & 0xf0 == 0xe0 {
            let length = usize::from(encoding & 0x0f) << 8 | usize::from(reader.byte()?);
            (Bytes::copy_from_slice(reader.take(length)?), 2 + length)
        } else {
            match encoding {
                0xf0 => {
                    let length = u32::from_le_bytes(reader.take(4)?.try_into().expect("four"));
                    let length = length as usize;
                    (Bytes::copy_from_slice(reader.take(length)?), 5 + length)
                }
                0xf1 => (Bytes::from(signed(reader.take(2)?, 16).to_string()), 3),
                0xf2 => (Bytes::from(signed(reader.take(3)?, 24).to_string()), 4),
                0xf3 => (Bytes::from(signed(reader.take(4)?, 32).to_string()), 5),
                0xf4 => (Bytes::from(signed(reader.take(8)?, 64).to_string()), 9),
                _ => return Err(bad("an unknown listpack encoding")),
            }
        };
        // The back-length (the entry's size, for walking backwards): 7 bits a byte.
        // Redis's `lpEncodeBacklen` bounds, off by one from powers of 128 as Redis has them.
        let back_length_bytes = match entry_bytes {
            0..=127 => 1,
            128..16_383 => 2,
            16_383..2_097_151 => 3,
            2_097_151..268_435_455 => 4,
            _ => 5,
        };
        reader.take(back_length_bytes)?;
        items.push(item);
    }
    if !reader.is_empty() {
        return Err(bad("bytes after a listpack's end"));
    }
    Ok(items)
}

/// A zipmap (the hashes of Redis before 2.6): a count byte, then per pair a length, the
/// field, a length, a count of free bytes, the value and those free bytes; then `0xFF`.
fn zipmap(blob: &[u8]) -> Result<Vec<(Bytes, Bytes)>, RestoreError> {
    let mut reader = Reader::new(blob);
    reader.byte()?; // The count (a hint, 254 and more when larger).
    let length = |reader: &mut Reader<'_>| -> Result<usize, RestoreError> {
        Ok(match reader.byte()? {
            254 => u32::from_le_bytes(reader.take(4)?.try_into().expect("four")) as usize,
            255 => return Err(bad("a zipmap length of 255")),
            short => usize::from(short),
        })
    };
    let mut out = Vec::new();
    loop {
        if reader.bytes.first() == Some(&0xff) {
            reader.byte()?;
            break;
        }
        let field_length = length(&mut reader)?;
        let field = Bytes::copy_from_slice(reader.take(field_length)?);
        let value_length = length(&mut reader)?;
        let free = usize::from(reader.byte()?);
        let value = Bytes::copy_from_slice(reader.take(value_length)?);
        reader.take(free)?;
        out.push((field, value));
    }
    if !reader.is_empty() {
        return Err(bad("bytes after a zipmap's end"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
