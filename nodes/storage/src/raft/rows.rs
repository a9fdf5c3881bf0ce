//! How a group's keys are laid out in rows (ARCHITECTURE.md, "Collections element by
//! element").
//!
//! - [`Space::State`], `group ++ key`: either a whole [`Record`] (its own encoding, format byte
//!   1: strings, and collections written by builds before this layout) or a [`Header`] (format
//!   byte 3: hashes, sets, sorted sets and lists; byte 2 is the same without a list head), which
//!   holds the type, the expiry, the number of elements, the collection's *generation* and, for
//!   a list, the sequence number of its first element.
//! - [`Space::Elements`], `group ++ len(key) as u32 ++ key ++ generation ++ element`: one row per
//!   element ([`larder_core::kv::elements::rows_of`]); a list's element is its sequence number
//!   (big-endian), so its rows lie in list order.
//!
//! The generation is the log index of the entry that created the collection. Deleting a
//! collection, expiring it or replacing it with another value deletes or rewrites its header
//! alone, and the new header has a new generation, so the old elements are unreachable at once
//! (deletion costs the client one row, not one per element). They are removed after the apply
//! batch is written; the batch records the range (`garbage/` in `Meta`), so a crash in between
//! leaves a record that `DiskStateMachine::collect_garbage` finishes when the group opens.

use std::io;

use bytes::Bytes;
use larder_core::GroupId;
use larder_core::env::{Disk, DiskView, Space, WriteBatch};
use larder_core::kv::elements::{self, Kind, Window};
use larder_core::kv::{Record, Value};
use serde::{Deserialize, Serialize};

use super::{decode, encode};

/// The format byte of a header row (a whole record's encoding starts with 1).
const HEADER_FORMAT: u8 = 3;
/// Headers written before lists were kept element by element: no `head`.
const HEADER_FORMAT_NO_HEAD: u8 = 2;
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
    /// A list's first sequence number (0 for the other kinds).
    pub head: u64,
}

/// [`Header`] as format 2 wrote it.
#[derive(Deserialize)]
struct HeaderNoHead {
    kind: Kind,
    len: u64,
    expires_at_ms: Option<u64>,
    generation: u64,
}

impl Header {
    fn decode(format: u8, body: &[u8]) -> Result<Option<Header>, io::Error> {
        Ok(match format {
            HEADER_FORMAT => Some(decode(body)?),
            HEADER_FORMAT_NO_HEAD => {
                let old: HeaderNoHead = decode(body)?;
                Some(Header {
                    kind: old.kind,
                    len: old.len,
                    expires_at_ms: old.expires_at_ms,
                    generation: old.generation,
                    head: 0,
                })
            }
            _ => None,
        })
    }

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
        match Row::header(bytes)? {
            Some(header) => Ok(Row::Collection(header)),
            None => Record::decode(bytes)
                .map(Row::Whole)
                .map_err(|e| invalid(e.to_string())),
        }
    }

    /// The header of a collection's row, `None` for a whole record, which is not decoded: a
    /// snapshot or a migration page passes it on as it is.
    pub fn header(bytes: &[u8]) -> Result<Option<Header>, io::Error> {
        match bytes.split_first() {
            Some((&format, body)) => Header::decode(format, body),
            None => Ok(None),
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

/// The key and generation an element row (its full row key) belongs to; `None` when the row
/// is too short to hold them.
pub(crate) fn element_owner(row: &[u8]) -> Option<(Bytes, u64)> {
    let key_len = u32::from_be_bytes(row.get(8..12)?.try_into().ok()?) as usize;
    let key = row.get(12..12 + key_len)?;
    let generation = row.get(12 + key_len..12 + key_len + 8)?;
    Some((
        Bytes::copy_from_slice(key),
        u64::from_be_bytes(generation.try_into().ok()?),
    ))
}

pub(crate) fn element_key(prefix: &[u8], element: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(prefix.len() + element.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(element);
    Bytes::from(out)
}

/// The rows of `[start, end)`, read in pages through `scan`, with their keys' first
/// `prefix_len` bytes cut off.
async fn paged_rows<F, Fut>(
    start: Vec<u8>,
    end: Vec<u8>,
    prefix_len: usize,
    scan: F,
) -> Result<Vec<(Bytes, Bytes)>, io::Error>
where
    F: Fn(Vec<u8>, Vec<u8>) -> Fut,
    Fut: Future<Output = Result<Vec<(Bytes, Bytes)>, larder_core::env::DiskError>>,
{
    let mut rows = Vec::new();
    let mut from = start;
    loop {
        let page = scan(from.clone(), end.clone()).await?;
        let full = page.len() == ELEMENT_PAGE_ROWS;
        if let Some((last, _)) = page.last() {
            from = last.to_vec();
            from.push(0);
        }
        rows.extend(
            page.into_iter()
                .map(|(row_key, value)| (row_key.slice(prefix_len..), value)),
        );
        if !full {
            return Ok(rows);
        }
    }
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
    let prefix_len = start.len();
    let rows = paged_rows(start, end, prefix_len, scan).await?;
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

/// Lays `record` out as a new collection of `generation` in `batch`: its element rows, and the
/// header returned for the caller to store. `None` for a string, which is stored whole.
pub(crate) fn lay_out(
    batch: &mut WriteBatch,
    group: GroupId,
    key: &[u8],
    record: &Record,
    generation: u64,
) -> Option<Header> {
    let kind = Kind::of(&record.value)?;
    let prefix = element_prefix(group, key, generation);
    for (element, value) in elements::rows_of(&record.value) {
        batch.put(Space::Elements, element_key(&prefix, &element), value);
    }
    Some(Header {
        kind,
        len: elements::len_of(&record.value),
        expires_at_ms: record.expires_at_ms,
        generation,
        head: if kind == Kind::List {
            elements::LIST_HEAD
        } else {
            0
        },
    })
}

/// The `window` of a list: its record holding only those positions, and how many come
/// before them. Consecutive sequence numbers: one range read.
pub(crate) async fn window_from_disk<D: Disk>(
    disk: &D,
    group: GroupId,
    key: &[u8],
    header: &Header,
    window: Window,
) -> Result<(Record, u64), io::Error> {
    let (first, end) = window.positions(header.len);
    let prefix = element_prefix(group, key, header.generation);
    let from = element_key(&prefix, &elements::sequence_name(header.head + first));
    let to = element_key(&prefix, &elements::sequence_name(header.head + end));
    let rows = paged_rows(
        from.to_vec(),
        to.to_vec(),
        prefix.len(),
        |from, to| async move {
            disk.scan(Space::Elements, &from, Some(&to), ELEMENT_PAGE_ROWS)
                .await
        },
    )
    .await?;
    if rows.len() as u64 != end - first {
        return Err(invalid(format!(
            "a list's header places {} elements in a window, its rows {}",
            end - first,
            rows.len()
        )));
    }
    Ok((assemble(header, rows)?, first))
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

/// The record of a collection with only the run of elements a scan step looks at
/// ([`elements::Access::Run`]): from element `from` on, [`elements::scan_rows`]`(len, count)`
/// of them (`len`: the collection's, from its header), read in pages of at most what is still
/// wanted, so a step costs its count, not the collection.
pub(crate) async fn run_from_disk<D: Disk>(
    disk: &D,
    group: GroupId,
    key: &[u8],
    len: u64,
    header: &Header,
    from: &[u8],
    count: u64,
) -> Result<Record, io::Error> {
    let (prefix, end) = element_range(group, key, header.generation);
    let mut wanted = elements::scan_rows(len, count);
    let mut start = element_key(&prefix, from).to_vec();
    let mut rows = Vec::new();
    while wanted > 0 {
        let page = usize::try_from(wanted).map_or(ELEMENT_PAGE_ROWS, |n| n.min(ELEMENT_PAGE_ROWS));
        let found = disk.scan(Space::Elements, &start, Some(&end), page).await?;
        let full = found.len() == page;
        if let Some((last, _)) = found.last() {
            start = last.to_vec();
            start.push(0);
        }
        wanted -= found.len() as u64;
        rows.extend(
            found
                .into_iter()
                .map(|(row_key, value)| (row_key.slice(prefix.len()..), value)),
        );
        if !full {
            break;
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
        assert_eq!(element_owner(&inside), Some((Bytes::from_static(b"k"), 7)));
        assert_eq!(element_owner(&start[..10]), None);
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
            head: 0,
        };
        assert!(matches!(Row::decode(&header.encode()), Ok(Row::Collection(h)) if h == header));
        let whole = Record::string("v").encode();
        assert!(matches!(Row::decode(&whole), Ok(Row::Whole(r)) if r == Record::string("v")));
        assert!(Row::decode(b"\x07junk").is_err());
        // A header of format 2 (before lists had rows) still reads, without a head.
        let mut old = vec![HEADER_FORMAT_NO_HEAD];
        old.extend_from_slice(&encode(&(Kind::Set, 3u64, Some(9u64), 12u64)));
        assert!(matches!(Row::header(&old), Ok(Some(h)) if h == header));
    }
}
