//! How a group's keys are laid out in rows (ARCHITECTURE.md, "Collections element by
//! element").
//!
//! - [`Space::State`], `group ++ key`: either a whole [`Record`] (its own encoding, format byte
//!   1: strings and lists) or a [`Header`] (format byte 2: hashes, sets and sorted sets), which
//!   holds the type, the expiry, the number of elements and the collection's *generation*.
//! - [`Space::Elements`], `group ++ len(key) as u32 ++ key ++ generation ++ element`: one row per
//!   element ([`larder_core::kv::elements::rows_of`]).
//!
//! The generation is the log index of the entry that created the collection. Deleting a
//! collection, expiring it or replacing it with another value deletes or rewrites its header
//! alone, and the new header has a new generation, so the old elements are unreachable at once
//! (deletion costs the client one row, not one per element). They are removed after the apply
//! batch is written; a crash in between leaves unreachable rows, which a snapshot install of
//! the group clears.

use std::io;

use bytes::Bytes;
use larder_core::GroupId;
use larder_core::env::{Disk, DiskView, Space};
use larder_core::kv::elements::{self, Kind};
use larder_core::kv::{Record, Value};
use serde::{Deserialize, Serialize};

use super::{decode, encode};

/// The format byte of a header row (a whole record's encoding starts with 1).
const HEADER_FORMAT: u8 = 2;
/// Rows per page when a whole collection is read.
const ELEMENT_PAGE_ROWS: usize = 4096;

/// A collection's state row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Header {
    pub kind: Kind,
    /// Elements it holds (never 0: an empty collection is no key).
    pub len: u64,
    pub expires_at_ms: Option<u64>,
    pub generation: u64,
}

impl Header {
    /// The record a key-level fold is given for this collection: its type and expiry, no
    /// elements.
    pub fn shell(&self) -> Record {
        Record {
            value: self.kind.empty(),
            expires_at_ms: self.expires_at_ms,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut out = vec![HEADER_FORMAT];
        out.extend_from_slice(&encode(self));
        Bytes::from(out)
    }
}

/// A decoded state row.
#[derive(Debug, Clone)]
pub(crate) enum Row {
    Whole(Record),
    Collection(Header),
}

impl Row {
    pub fn decode(bytes: &[u8]) -> Result<Row, io::Error> {
        match bytes.split_first() {
            Some((&HEADER_FORMAT, body)) => Ok(Row::Collection(decode(body)?)),
            _ => Record::decode(bytes)
                .map(Row::Whole)
                .map_err(|e| invalid(e.to_string())),
        }
    }

    /// The header of a collection's row, `None` for a whole record, which is not decoded: a
    /// snapshot or a migration page passes it on as it is.
    pub fn header(bytes: &[u8]) -> Result<Option<Header>, io::Error> {
        match bytes.split_first() {
            Some((&HEADER_FORMAT, body)) => Ok(Some(decode(body)?)),
            _ => Ok(None),
        }
    }

    /// The record of a whole row, the shell of a collection.
    pub fn shell(&self) -> Record {
        match self {
            Row::Whole(record) => record.clone(),
            Row::Collection(header) => header.shell(),
        }
    }
}

fn invalid(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

/// Where the elements of `key`'s collection of `generation` start.
pub(crate) fn element_prefix(group: GroupId, key: &[u8], generation: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 4 + key.len() + 8);
    out.extend_from_slice(&group.to_be_bytes());
    // Keys are bounded far below 4 GiB by the protocol's bulk limit.
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&generation.to_be_bytes());
    out
}

/// The element range `[start, end)` of `key`'s collection of `generation`: the end is the
/// prefix's successor (trailing `0xff` bytes dropped, the last other byte raised by one; the
/// key length in the prefix is never all `0xff`).
pub(crate) fn element_range(group: GroupId, key: &[u8], generation: u64) -> (Vec<u8>, Vec<u8>) {
    let start = element_prefix(group, key, generation);
    let mut end = start.clone();
    while end.last() == Some(&0xff) {
        end.pop();
    }
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    (start, end)
}

pub(crate) fn element_key(prefix: &[u8], element: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(prefix.len() + element.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(element);
    Bytes::from(out)
}

/// Every element row of a collection, read in pages through `scan`.
async fn element_rows<F, Fut>(
    group: GroupId,
    key: &[u8],
    header: &Header,
    scan: F,
) -> Result<Vec<(Bytes, Bytes)>, io::Error>
where
    F: Fn(Vec<u8>, Vec<u8>) -> Fut,
    Fut: Future<Output = Result<Vec<(Bytes, Bytes)>, larder_core::env::DiskError>>,
{
    let (start, end) = element_range(group, key, header.generation);
    let mut rows = Vec::with_capacity(header.len.min(1 << 20) as usize);
    let mut from = start.clone();
    loop {
        let page = scan(from.clone(), end.clone()).await?;
        let full = page.len() == ELEMENT_PAGE_ROWS;
        if let Some((last, _)) = page.last() {
            from = last.to_vec();
            from.push(0);
        }
        rows.extend(
            page.into_iter()
                .map(|(row_key, value)| (row_key.slice(start.len()..), value)),
        );
        if !full {
            break;
        }
    }
    if rows.len() as u64 != header.len {
        return Err(invalid(format!(
            "a collection's header counts {} elements, its rows {}",
            header.len,
            rows.len()
        )));
    }
    Ok(rows)
}

/// The whole record of a collection, read from `disk`.
pub(crate) async fn whole_from_disk<D: Disk>(
    disk: &D,
    group: GroupId,
    key: &[u8],
    header: &Header,
) -> Result<Record, io::Error> {
    let rows = element_rows(group, key, header, |from, end| async move {
        disk.scan(Space::Elements, &from, Some(&end), ELEMENT_PAGE_ROWS)
            .await
    })
    .await?;
    assemble(header, rows)
}

/// The whole record of a collection, read from a point-in-time `view`.
pub(crate) async fn whole_from_view<V: DiskView>(
    view: &V,
    group: GroupId,
    key: &[u8],
    header: &Header,
) -> Result<Record, io::Error> {
    let rows = element_rows(group, key, header, |from, end| async move {
        view.scan(Space::Elements, &from, Some(&end), ELEMENT_PAGE_ROWS)
            .await
    })
    .await?;
    assemble(header, rows)
}

/// The record of a collection with only `elements` (those that exist), read from `disk`.
pub(crate) async fn part_from_disk<D: Disk>(
    disk: &D,
    group: GroupId,
    key: &[u8],
    header: &Header,
    elements: &[&Bytes],
) -> Result<Record, io::Error> {
    let prefix = element_prefix(group, key, header.generation);
    let mut rows = Vec::with_capacity(elements.len());
    for element in elements {
        if rows.iter().any(|(e, _): &(Bytes, Bytes)| e == *element) {
            continue;
        }
        if let Some(value) = disk
            .get(Space::Elements, &element_key(&prefix, element))
            .await?
        {
            rows.push(((*element).clone(), value));
        }
    }
    assemble(header, rows)
}

fn assemble(header: &Header, rows: Vec<(Bytes, Bytes)>) -> Result<Record, io::Error> {
    let value: Value =
        elements::from_rows(header.kind, rows).map_err(|e| invalid(e.to_string()))?;
    Ok(Record {
        value,
        expires_at_ms: header.expires_at_ms,
    })
}

/// A state row's record as a whole, reading a collection's elements from `disk`: what
/// snapshots and slot migration carry.
pub(crate) async fn whole_row<D: Disk>(
    disk: &D,
    group: GroupId,
    key: &[u8],
    row: &[u8],
) -> Result<Bytes, io::Error> {
    match Row::header(row)? {
        None => Ok(Bytes::copy_from_slice(row)),
        Some(header) => Ok(whole_from_disk(disk, group, key, &header).await?.encode()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_ranges_of_one_key_hold_only_its_generation() {
        let (start, end) = element_range(3, b"k", 7);
        let inside = element_key(&start, b"\xff\xff\xff");
        assert!(start.as_slice() <= inside.as_ref() && inside.as_ref() < end.as_slice());
        // Another generation, and a longer key that starts the same, fall outside.
        let next = element_key(&element_prefix(3, b"k", 8), b"");
        assert!(next.as_ref() >= end.as_slice());
        let longer = element_key(&element_prefix(3, b"k\x00", 7), b"a");
        assert!(longer.as_ref() < start.as_slice() || longer.as_ref() >= end.as_slice());
        let (last_start, last_end) = element_range(3, b"k", u64::MAX);
        let inside = element_key(&last_start, b"\xff\xff");
        assert!(inside.as_ref() < last_end.as_slice());
    }

    #[test]
    fn a_header_row_and_a_whole_row_decode_apart() {
        let header = Header {
            kind: Kind::Set,
            len: 3,
            expires_at_ms: Some(9),
            generation: 12,
        };
        assert!(matches!(Row::decode(&header.encode()), Ok(Row::Collection(h)) if h == header));
        let whole = Record::string("v").encode();
        assert!(matches!(Row::decode(&whole), Ok(Row::Whole(r)) if r == Record::string("v")));
        assert!(Row::decode(b"\x07junk").is_err());
    }
}
