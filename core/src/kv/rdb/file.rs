//! Redis's RDB files (`dump.rdb`, `BGSAVE`'s and `redis-cli --rdb`'s output), read as a stream
//! of keys for `larder import`: each key of a type Larder has comes out as a `RESTORE` payload
//! ([`super::restore_value`] reads it), so a dataset moves from Redis into Larder through the
//! proxy, and every key is checked, routed, replicated and made durable as any write is.
//!
//! **Streamed, never loaded whole.** A file can be far larger than memory. The reader walks it
//! once, front to back: the opcodes between keys (databases, expiry, AUX fields, resize hints,
//! module AUX data, function libraries) and each object's outer structure, far enough to know
//! where the object ends. It copies an object's bytes as they go by and never decodes its
//! ziplists or listpacks (`RESTORE` does that, on the node, with the reader the proxy's
//! `RESTORE` uses). At most one object is held, bounded by [`OBJECT_BYTES_MAX`]; one past it is
//! walked over without being kept and reported.
//!
//! **What is read past.** Streams (every version of their encoding up to RDB 11) and modules'
//! values (module type 2, self-describing: typed fields up to an end marker) are walked over
//! and reported as [`Item::Skipped`]; Larder has neither. Function libraries (`FUNCTION2`)
//! likewise ([`Item::Function`]). What cannot be walked over (module values of the first
//! format, Redis 7.4's hashes with per-field expiry, opcodes newer than this reader) stops the
//! read with [`RdbFileError::Unsupported`]: the keys before it came out, and the error says
//! where and why the rest cannot.
//!
//! **Checked as Redis checks it.** The header (`REDIS` and a version of 1 to
//! [`super::RESTORE_RDB_VERSION_MAX`]), every length against the end of the file (a forged
//! count cannot make the reader allocate: it runs out of bytes first), and from RDB 5 on the
//! CRC-64 of the whole file against the one stored after the end marker (0 means the writer
//! had checksums off, as Redis's `rdbchecksum no`). Nothing after the checksum is read:
//! `redis-cli --rdb -` writes a diskless sync's 40-byte end-of-transfer mark there, as it cannot
//! truncate a pipe.

use std::collections::BTreeMap;
use std::io::BufRead;

use bytes::Bytes;

use super::{
    CRC64, RESTORE_RDB_VERSION_MAX, TYPE_HASH, TYPE_HASH_LISTPACK, TYPE_HASH_ZIPLIST,
    TYPE_HASH_ZIPMAP, TYPE_LIST, TYPE_LIST_QUICKLIST, TYPE_LIST_QUICKLIST_2, TYPE_LIST_ZIPLIST,
    TYPE_SET, TYPE_SET_INTSET, TYPE_SET_LISTPACK, TYPE_STRING, TYPE_ZSET, TYPE_ZSET_2,
    TYPE_ZSET_LISTPACK, TYPE_ZSET_ZIPLIST, lzf_decompress,
};
use crate::kv::STRING_BYTES_MAX;

/// The largest object (type byte and encoding) kept for a payload: Redis's largest request
/// (`proto-max-bulk-len`, 512 MiB) could not carry a larger one in a `RESTORE`.
pub const OBJECT_BYTES_MAX: usize = 512 << 20;

// Opcodes between keys (Redis's `rdb.h`).
const OP_SLOT_INFO: u8 = 0xF4;
const OP_FUNCTION2: u8 = 0xF5;
const OP_FUNCTION_PRE_GA: u8 = 0xF6;
const OP_MODULE_AUX: u8 = 0xF7;
const OP_IDLE: u8 = 0xF8;
const OP_FREQ: u8 = 0xF9;
const OP_AUX: u8 = 0xFA;
const OP_RESIZEDB: u8 = 0xFB;
const OP_EXPIRETIME_MS: u8 = 0xFC;
const OP_EXPIRETIME: u8 = 0xFD;
const OP_SELECTDB: u8 = 0xFE;
const OP_EOF: u8 = 0xFF;

// Types Larder has no place for, read past.
const TYPE_MODULE_PRE_GA: u8 = 6;
const TYPE_MODULE_2: u8 = 7;
const TYPE_STREAM_LISTPACKS: u8 = 15;
const TYPE_STREAM_LISTPACKS_2: u8 = 19;
const TYPE_STREAM_LISTPACKS_3: u8 = 21;

// A module value's typed fields (`RDB_MODULE_OPCODE_*`).
const MODULE_EOF: u64 = 0;
const MODULE_SINT: u64 = 1;
const MODULE_UINT: u64 = 2;
const MODULE_FLOAT: u64 = 3;
const MODULE_DOUBLE: u64 = 4;
const MODULE_STRING: u64 = 5;

/// Why a file could not be read (on).
#[derive(Debug, thiserror::Error)]
pub enum RdbFileError {
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an RDB file: it does not start with REDIS and a four-digit version")]
    NotRdb,
    #[error(
        "RDB version {0} is newer than the newest Larder reads ({RESTORE_RDB_VERSION_MAX}, Redis 7.4's)"
    )]
    Version(u16),
    #[error("corrupt at byte {offset}: {reason}")]
    Corrupt { offset: u64, reason: &'static str },
    #[error(
        "at byte {offset}: {what}; it cannot be read past, so the rest of the file is not read"
    )]
    Unsupported { offset: u64, what: String },
    #[error(
        "the file's checksum is {stored:016x} but its contents sum to {computed:016x}: it is corrupt"
    )]
    Checksum { stored: u64, computed: u64 },
}

/// One thing the file holds, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A key of a type Larder has.
    Key(KeyEntry),
    /// A key of a type Larder has not (a stream, a module's value): read past.
    Skipped {
        db: u64,
        key: Bytes,
        kind: &'static str,
    },
    /// A key whose object is larger than the reader keeps ([`OBJECT_BYTES_MAX`] unless
    /// [`RdbFile::with_object_bytes_max`] said otherwise): read past, not kept.
    Oversized { db: u64, key: Bytes, bytes: u64 },
    /// A function library (Redis 7's `FUNCTION LOAD`): Larder runs no scripts.
    Function,
}

/// A key and its value as a `RESTORE` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The database it was in (`SELECT`'s number).
    pub db: u64,
    pub key: Bytes,
    /// When it expires, Unix milliseconds (the file's own, before any import: a key may have
    /// expired since the file was written).
    pub expires_at_ms: Option<i64>,
    /// The object with the DUMP footer (the file's RDB version and the CRC-64).
    pub payload: Bytes,
}

/// An RDB file being read; see the module documentation.
pub struct RdbFile<R> {
    input: R,
    digest: crc::Digest<'static, u64>,
    version: u16,
    /// Bytes read so far: where errors say they are.
    offset: u64,
    db: u64,
    /// The expiry an opcode set for the next key.
    expires_at_ms: Option<i64>,
    /// The object being copied, while it fits in `object_bytes_max`.
    copy: Option<Vec<u8>>,
    object_bytes_max: usize,
    /// Bytes of the object being walked, kept or not.
    object_bytes: u64,
    aux: BTreeMap<Bytes, Bytes>,
    finished: bool,
}

impl<R: BufRead> RdbFile<R> {
    /// Reads the header (`REDIS0011` and the like).
    pub fn open(input: R) -> Result<Self, RdbFileError> {
        let mut file = RdbFile {
            input,
            digest: CRC64.digest(),
            version: 0,
            offset: 0,
            db: 0,
            expires_at_ms: None,
            copy: None,
            object_bytes_max: OBJECT_BYTES_MAX,
            object_bytes: 0,
            aux: BTreeMap::new(),
            finished: false,
        };
        let mut header = Vec::new();
        match file.pull(9, Some(&mut header)) {
            Ok(()) => {}
            Err(RdbFileError::Corrupt { .. }) => return Err(RdbFileError::NotRdb),
            Err(error) => return Err(error),
        }
        let version = std::str::from_utf8(&header[5..])
            .ok()
            .filter(|digits| digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u16>().ok());
        match (&header[..5], version) {
            (b"REDIS", Some(version)) if (1..=RESTORE_RDB_VERSION_MAX).contains(&version) => {
                file.version = version;
                Ok(file)
            }
            (b"REDIS", Some(version)) => Err(RdbFileError::Version(version)),
            _ => Err(RdbFileError::NotRdb),
        }
    }

    /// Objects larger than `bytes` are read past and reported, not kept (default
    /// [`OBJECT_BYTES_MAX`]).
    pub fn with_object_bytes_max(mut self, bytes: usize) -> Self {
        self.object_bytes_max = bytes;
        self
    }

    /// The file's RDB version.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The AUX fields read so far (`redis-ver`, `ctime`, `used-mem`, ...).
    pub fn aux(&self) -> &BTreeMap<Bytes, Bytes> {
        &self.aux
    }

    /// The next key (or other item); `None` once the end marker was read and the checksum
    /// holds.
    pub fn next_item(&mut self) -> Result<Option<Item>, RdbFileError> {
        while !self.finished {
            let at = self.offset;
            let op = self.byte()?;
            match op {
                OP_EOF => {
                    self.finish()?;
                    return Ok(None);
                }
                OP_SELECTDB => self.db = self.length()?,
                OP_RESIZEDB => {
                    self.length()?;
                    self.length()?;
                }
                OP_SLOT_INFO => {
                    for _ in 0..3 {
                        self.length()?;
                    }
                }
                OP_AUX => {
                    let name = self.string()?;
                    let value = self.string()?;
                    self.aux.insert(name.into(), value.into());
                }
                OP_EXPIRETIME_MS => {
                    let bytes = self.array::<8>()?;
                    self.expires_at_ms = Some(i64::from_le_bytes(bytes));
                }
                OP_EXPIRETIME => {
                    let seconds = i32::from_le_bytes(self.array::<4>()?);
                    self.expires_at_ms = Some(i64::from(seconds) * 1000);
                }
                OP_FREQ => {
                    self.byte()?;
                }
                OP_IDLE => {
                    self.length()?;
                }
                OP_MODULE_AUX => {
                    // The module, when it is loaded (`UINT` then the value), then its data.
                    self.length()?;
                    self.length()?;
                    self.length()?;
                    self.skip_module_fields()?;
                }
                OP_FUNCTION2 => {
                    self.skip_string()?;
                    return Ok(Some(Item::Function));
                }
                OP_FUNCTION_PRE_GA => {
                    return Err(RdbFileError::Unsupported {
                        offset: at,
                        what: "a function library of Redis 7.0's release candidates".into(),
                    });
                }
                kind => return self.key(at, kind).map(Some),
            }
        }
        Ok(None)
    }

    /// A key of type `kind` and its object.
    fn key(&mut self, at: u64, kind: u8) -> Result<Item, RdbFileError> {
        let key = Bytes::from(self.string()?);
        let expires_at_ms = self.expires_at_ms.take();
        let db = self.db;
        match kind {
            TYPE_STREAM_LISTPACKS | TYPE_STREAM_LISTPACKS_2 | TYPE_STREAM_LISTPACKS_3 => {
                self.skip_stream(kind)?;
                return Ok(Item::Skipped {
                    db,
                    key,
                    kind: "stream",
                });
            }
            TYPE_MODULE_2 => {
                self.length()?;
                self.skip_module_fields()?;
                return Ok(Item::Skipped {
                    db,
                    key,
                    kind: "module value",
                });
            }
            TYPE_MODULE_PRE_GA => {
                return Err(RdbFileError::Unsupported {
                    offset: at,
                    what: "a module value of the first module format (Redis 4.0's release \
                           candidates), which only its module can read"
                        .into(),
                });
            }
            _ => {}
        }
        self.copy = Some(vec![kind]);
        self.object_bytes = 1;
        let walked = self.walk_object(at, kind);
        let copy = self.copy.take();
        walked?;
        let Some(mut payload) = copy else {
            return Ok(Item::Oversized {
                db,
                key,
                bytes: self.object_bytes,
            });
        };
        payload.extend_from_slice(&self.version.to_le_bytes());
        let sum = CRC64.checksum(&payload);
        payload.extend_from_slice(&sum.to_le_bytes());
        Ok(Item::Key(KeyEntry {
            db,
            key,
            expires_at_ms,
            payload: payload.into(),
        }))
    }

    /// Reads past the object of a type Larder has, copying it.
    fn walk_object(&mut self, at: u64, kind: u8) -> Result<(), RdbFileError> {
        match kind {
            TYPE_STRING | TYPE_HASH_ZIPMAP | TYPE_LIST_ZIPLIST | TYPE_SET_INTSET
            | TYPE_ZSET_ZIPLIST | TYPE_HASH_ZIPLIST | TYPE_HASH_LISTPACK | TYPE_ZSET_LISTPACK
            | TYPE_SET_LISTPACK => self.skip_string(),
            TYPE_LIST | TYPE_SET | TYPE_LIST_QUICKLIST => {
                for _ in 0..self.length()? {
                    self.skip_string()?;
                }
                Ok(())
            }
            TYPE_LIST_QUICKLIST_2 => {
                for _ in 0..self.length()? {
                    self.length()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            TYPE_HASH => {
                for _ in 0..self.length()? {
                    self.skip_string()?;
                    self.skip_string()?;
                }
                Ok(())
            }
            TYPE_ZSET => {
                for _ in 0..self.length()? {
                    self.skip_string()?;
                    // A score as text behind a length byte; 253-255 are NaN and the infinities.
                    let length = self.byte()?;
                    if length < 253 {
                        self.pull(u64::from(length), None)?;
                    }
                }
                Ok(())
            }
            TYPE_ZSET_2 => {
                for _ in 0..self.length()? {
                    self.skip_string()?;
                    self.pull(8, None)?;
                }
                Ok(())
            }
            _ => Err(RdbFileError::Unsupported {
                offset: at,
                what: format!(
                    "an object of type {kind}, which this reader does not know (Redis 7.4's \
                     hashes with per-field expiry are types 22 to 25)"
                ),
            }),
        }
    }

    /// Reads past a stream: its listpacks, metadata and consumer groups.
    fn skip_stream(&mut self, kind: u8) -> Result<(), RdbFileError> {
        for _ in 0..self.length()? {
            self.skip_string()?; // the node's master ID
            self.skip_string()?; // its listpack
        }
        // Length, last ID; from version 2 also the first ID, the largest deleted ID and the
        // count of entries ever added.
        let ids = if kind == TYPE_STREAM_LISTPACKS { 3 } else { 8 };
        for _ in 0..ids {
            self.length()?;
        }
        for _ in 0..self.length()? {
            self.skip_string()?; // the group's name
            self.length()?; // its last delivered ID
            self.length()?;
            if kind != TYPE_STREAM_LISTPACKS {
                self.length()?; // entries read
            }
            for _ in 0..self.length()? {
                // The group's pending entries: ID, delivery time, delivery count.
                self.pull(16 + 8, None)?;
                self.length()?;
            }
            for _ in 0..self.length()? {
                self.skip_string()?; // the consumer's name
                self.pull(8, None)?; // seen time
                if kind == TYPE_STREAM_LISTPACKS_3 {
                    self.pull(8, None)?; // active time
                }
                let pending = self.length()?;
                for _ in 0..pending {
                    self.pull(16, None)?;
                }
            }
        }
        Ok(())
    }

    /// Reads past a module's typed fields up to their end marker.
    fn skip_module_fields(&mut self) -> Result<(), RdbFileError> {
        loop {
            let at = self.offset;
            match self.length()? {
                MODULE_EOF => return Ok(()),
                MODULE_SINT | MODULE_UINT => {
                    self.length()?;
                }
                MODULE_FLOAT => self.pull(4, None)?,
                MODULE_DOUBLE => self.pull(8, None)?,
                MODULE_STRING => self.skip_string()?,
                _ => {
                    return Err(RdbFileError::Corrupt {
                        offset: at,
                        reason: "an unknown module field type",
                    });
                }
            }
        }
    }

    /// The end marker was read: checks the file's checksum (RDB 5 on).
    fn finish(&mut self) -> Result<(), RdbFileError> {
        self.finished = true;
        if self.version < 5 {
            return Ok(());
        }
        let computed = std::mem::replace(&mut self.digest, CRC64.digest()).finalize();
        let stored = u64::from_le_bytes(self.array::<8>()?);
        if stored != 0 && stored != computed {
            return Err(RdbFileError::Checksum { stored, computed });
        }
        Ok(())
    }

    /// Moves `count` bytes on: into the checksum, into the object being copied (while it fits),
    /// and into `out`. Reads as the bytes come: a forged length runs out of file before it can
    /// make anything large.
    fn pull(&mut self, mut count: u64, mut out: Option<&mut Vec<u8>>) -> Result<(), RdbFileError> {
        while count > 0 {
            let available = self.input.fill_buf()?;
            if available.is_empty() {
                return Err(RdbFileError::Corrupt {
                    offset: self.offset,
                    reason: "the file ends before its end marker",
                });
            }
            let take = available
                .len()
                .min(usize::try_from(count).unwrap_or(usize::MAX));
            let chunk = &available[..take];
            self.digest.update(chunk);
            self.object_bytes += take as u64;
            if let Some(copy) = &mut self.copy {
                if copy.len() + take <= self.object_bytes_max {
                    copy.extend_from_slice(chunk);
                } else {
                    self.copy = None;
                }
            }
            if let Some(out) = out.as_deref_mut() {
                out.extend_from_slice(chunk);
            }
            self.input.consume(take);
            self.offset += take as u64;
            count -= take as u64;
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RdbFileError> {
        let mut bytes = Vec::with_capacity(N);
        self.pull(N as u64, Some(&mut bytes))?;
        Ok(bytes.try_into().expect("N bytes"))
    }

    fn byte(&mut self) -> Result<u8, RdbFileError> {
        Ok(self.array::<1>()?[0])
    }

    fn length_or_special(&mut self) -> Result<Length, RdbFileError> {
        let at = self.offset;
        let first = self.byte()?;
        Ok(match first >> 6 {
            0 => Length::Plain(u64::from(first & 0x3f)),
            1 => Length::Plain(u64::from(first & 0x3f) << 8 | u64::from(self.byte()?)),
            2 => match first {
                0x80 => Length::Plain(u64::from(u32::from_be_bytes(self.array::<4>()?))),
                0x81 => Length::Plain(u64::from_be_bytes(self.array::<8>()?)),
                _ => {
                    return Err(RdbFileError::Corrupt {
                        offset: at,
                        reason: "an unknown length encoding",
                    });
                }
            },
            _ => Length::Special(first & 0x3f),
        })
    }

    fn length(&mut self) -> Result<u64, RdbFileError> {
        let at = self.offset;
        match self.length_or_special()? {
            Length::Plain(length) => Ok(length),
            Length::Special(_) => Err(RdbFileError::Corrupt {
                offset: at,
                reason: "an encoded string where a length belongs",
            }),
        }
    }

    /// A string, decoded (a key, an AUX field).
    fn string(&mut self) -> Result<Vec<u8>, RdbFileError> {
        let at = self.offset;
        let corrupt = |reason| RdbFileError::Corrupt { offset: at, reason };
        match self.length_or_special()? {
            Length::Plain(length) => {
                if length > STRING_BYTES_MAX as u64 {
                    return Err(corrupt("a string past the string limit"));
                }
                let mut out = Vec::new();
                self.pull(length, Some(&mut out))?;
                Ok(out)
            }
            Length::Special(0) => Ok((self.byte()? as i8).to_string().into_bytes()),
            Length::Special(1) => Ok(i16::from_le_bytes(self.array::<2>()?)
                .to_string()
                .into_bytes()),
            Length::Special(2) => Ok(i32::from_le_bytes(self.array::<4>()?)
                .to_string()
                .into_bytes()),
            Length::Special(3) => {
                let compressed = self.length()?;
                let length = self.length()?;
                if length > STRING_BYTES_MAX as u64 || compressed > STRING_BYTES_MAX as u64 {
                    return Err(corrupt("a compressed string past the string limit"));
                }
                let mut input = Vec::new();
                self.pull(compressed, Some(&mut input))?;
                lzf_decompress(&input, length as usize).map_err(|_| corrupt("a corrupt LZF string"))
            }
            Length::Special(_) => Err(corrupt("an unknown string encoding")),
        }
    }

    /// Reads past a string, as it is encoded.
    fn skip_string(&mut self) -> Result<(), RdbFileError> {
        let at = self.offset;
        match self.length_or_special()? {
            Length::Plain(length) => self.pull(length, None),
            Length::Special(0) => self.pull(1, None),
            Length::Special(1) => self.pull(2, None),
            Length::Special(2) => self.pull(4, None),
            Length::Special(3) => {
                let compressed = self.length()?;
                self.length()?;
                self.pull(compressed, None)
            }
            Length::Special(_) => Err(RdbFileError::Corrupt {
                offset: at,
                reason: "an unknown string encoding",
            }),
        }
    }
}

enum Length {
    Plain(u64),
    Special(u8),
}

#[cfg(test)]
mod tests;
