//! Writing an RDB file: what `larder restore` produces, for `larder import` (or a Redis
//! server, which loads it as its `dump.rdb`) to read.
//!
//! The file is RDB version [`DUMP_RDB_VERSION`]: the magic `REDIS0009`, auxiliary fields, one
//! database (`SELECTDB 0`), then per key an optional expiry (`EXPIRETIME_MS`), the object's type
//! byte, the key and the object's encoding (exactly a `DUMP` payload's, which is one object of
//! an RDB file), and at the end `EOF` and the CRC-64 of everything before it.

use std::io::{self, Write};

use super::{CRC64, DUMP_RDB_VERSION, dump_payload, write_string};
use crate::kv::Value;

const OPCODE_AUX: u8 = 0xFA;
const OPCODE_SELECTDB: u8 = 0xFE;
const OPCODE_EXPIRETIME_MS: u8 = 0xFC;
const OPCODE_EOF: u8 = 0xFF;
/// A `DUMP` payload's footer: the RDB version (2 bytes) and the CRC-64 (8 bytes).
const FOOTER_BYTES: usize = 10;

/// An RDB file being written to `W`; [`RdbWriter::finish`] ends it.
pub struct RdbWriter<W: Write> {
    out: W,
    digest: crc::Digest<'static, u64>,
    keys: u64,
}

impl<W: Write> RdbWriter<W> {
    /// Writes the header and `aux` fields (Redis keeps the ones it knows and skips the rest).
    pub fn new(out: W, aux: &[(&str, &str)]) -> io::Result<Self> {
        let mut writer = RdbWriter {
            out,
            digest: CRC64.digest(),
            keys: 0,
        };
        writer.put(format!("REDIS{DUMP_RDB_VERSION:04}").as_bytes())?;
        for (name, value) in aux {
            let mut field = vec![OPCODE_AUX];
            write_string(&mut field, name.as_bytes());
            write_string(&mut field, value.as_bytes());
            writer.put(&field)?;
        }
        writer.put(&[OPCODE_SELECTDB, 0])?;
        Ok(writer)
    }

    /// Writes `key` holding `value`, expiring at `expires_at_ms` (Unix milliseconds).
    pub fn key(&mut self, key: &[u8], value: &Value, expires_at_ms: Option<u64>) -> io::Result<()> {
        let mut out = Vec::new();
        if let Some(at) = expires_at_ms {
            out.push(OPCODE_EXPIRETIME_MS);
            out.extend_from_slice(&at.to_le_bytes());
        }
        let payload = dump_payload(value);
        let object = &payload[..payload.len() - FOOTER_BYTES];
        // A DUMP payload is the type byte and the object; the file puts the key between them.
        out.push(object[0]);
        write_string(&mut out, key);
        out.extend_from_slice(&object[1..]);
        self.put(&out)?;
        self.keys += 1;
        Ok(())
    }

    /// Keys written so far.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// Writes `EOF` and the checksum; returns the output (flushed).
    pub fn finish(mut self) -> io::Result<W> {
        self.put(&[OPCODE_EOF])?;
        let sum = self.digest.finalize();
        self.out.write_all(&sum.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.digest.update(bytes);
        self.out.write_all(bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    use bytes::Bytes;

    use super::*;
    use crate::kv::rdb::file::{Item, RdbFile};
    use crate::kv::rdb::restore_value;
    use crate::kv::{Score, ZSet};

    fn b(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    /// What the writer writes, the reader `larder import` uses reads back: every type, an
    /// expiry, a key and a value long enough for the wider length encodings.
    #[test]
    fn a_written_file_reads_back_key_for_key() {
        let mut zset = ZSet::default();
        zset.insert(b("m"), Score::new(1.5).expect("score"));
        zset.insert(b("n"), Score::new(-2.0).expect("score"));
        let long = "x".repeat(20_000);
        let keys: Vec<(Bytes, Value, Option<u64>)> = vec![
            (b("s"), Value::Str(b("v")), None),
            (b("t"), Value::Str(b(&long)), Some(1_800_000_000_123)),
            (
                b("l"),
                Value::List(VecDeque::from(vec![b("a"), b("b")])),
                None,
            ),
            (b("e"), Value::Set(BTreeSet::from([b("x"), b("y")])), None),
            (
                b(&long),
                Value::Hash(BTreeMap::from([(b("f"), b("1"))])),
                None,
            ),
            (b("z"), Value::ZSet(zset), Some(7)),
        ];
        let mut writer = RdbWriter::new(Vec::new(), &[("larder-restore-at", "1")]).expect("new");
        for (key, value, at) in &keys {
            writer.key(key, value, *at).expect("key");
        }
        assert_eq!(writer.keys(), 6);
        let file = writer.finish().expect("finish");
        let mut reader = RdbFile::open(&file[..]).expect("open");
        assert_eq!(reader.version(), DUMP_RDB_VERSION);
        let mut read = Vec::new();
        while let Some(item) = reader.next_item().expect("item") {
            let Item::Key(entry) = item else {
                panic!("{item:?}")
            };
            assert_eq!(entry.db, 0);
            let value = restore_value(&entry.payload).expect("payload");
            read.push((entry.key, value, entry.expires_at_ms.map(|at| at as u64)));
        }
        assert_eq!(read, keys);
        assert_eq!(reader.aux().get(&b("larder-restore-at")), Some(&b("1")));
        // A flipped byte fails the file's checksum.
        let mut bad = file.clone();
        bad[12] ^= 1;
        let mut reader = RdbFile::open(&bad[..]).expect("open");
        let mut failed = false;
        for _ in 0..10 {
            match reader.next_item() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "the checksum catches a flipped byte");
    }
}
