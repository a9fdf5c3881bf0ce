//! The cursors of `SCAN`, `HSCAN`, `SSCAN` and `ZSCAN`: where each iteration stands, kept by
//! the proxy.
//!
//! A step of `SCAN` reads one slot group from past the last key the previous step looked at
//! (`Command::Scan`), so where an iteration stands is a group and a key; a step of `HSCAN`,
//! `SSCAN` or `ZSCAN` reads one collection from past the last element the previous step looked
//! at (`Command::ElementScan`), so there it is a key and an element. Redis clients parse
//! the cursor as a number (redis-py's `int`, go-redis's `uint64`), and a key does not fit in
//! one, so the proxy hands out numbers and remembers the position behind each: a bounded table
//! ([`SCAN_CURSORS_MAX`] cursors, [`SCAN_CURSOR_BYTES_MAX`] bytes of keys), oldest forgotten
//! first, shared by the proxy's connections (a client's pool may continue an iteration on
//! another connection). Cursors start at a base drawn from the proxy's start, so a cursor of
//! another proxy or of this one before a restart is almost surely unknown here: `SCAN`
//! answers `ERR invalid cursor` rather than resuming somewhere else (so does a collection's
//! scan given the cursor of another key's).
//!
//! What an iteration guarantees is Redis's: every key present from its start to its end is
//! returned at least once, while the groups stay where they are (a key that moves between
//! groups during the iteration, by a slot migration, may be missed or returned twice, as a
//! Redis Cluster client iterating node by node sees during resharding). Each step looks at no
//! more than `COUNT` keys (default 10, at most `larder_core::kv::SCAN_COUNT_MAX`), so no reply
//! grows with the database.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;
use larder_core::GroupId;

/// Most cursors remembered at once.
pub const SCAN_CURSORS_MAX: usize = 16_384;

/// Most bytes of keys the remembered cursors hold (a key may be large).
pub const SCAN_CURSOR_BYTES_MAX: usize = 16 << 20;

/// A cursor as Redis's `parseScanCursorOrReply` reads it (`strtoul`): an optional sign (a
/// negative cursor wraps), decimal digits and nothing else; the empty text is cursor 0.
/// `None`: `ERR invalid cursor`.
pub fn parse_cursor(arg: &[u8]) -> Option<u64> {
    if arg.is_empty() {
        return Some(0);
    }
    let (negative, digits) = match arg[0] {
        b'-' => (true, &arg[1..]),
        b'+' => (false, &arg[1..]),
        _ => (false, arg),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().try_fold(0u64, |acc, digit| {
        acc.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })?;
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

/// The options of a scan step (`MATCH pattern`, `COUNT n`, and for `SCAN` `TYPE t`), read as
/// Redis 7.0's `scanGenericCommand` reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub pattern: Bytes,
    pub kind: Option<Bytes>,
    /// Elements or keys a step looks at: Redis's default, about ten.
    pub count: u64,
}

impl Options {
    /// The options in `args` (`with_type`: `SCAN`'s, which take `TYPE`); the error text Redis
    /// answers otherwise. An option without its value is a syntax error, not an arity one.
    pub fn parse(args: &[Bytes], with_type: bool) -> Result<Options, &'static str> {
        let mut options = Options {
            pattern: Bytes::from_static(b"*"),
            kind: None,
            count: 10,
        };
        for option in args.chunks(2) {
            let [name, value] = option else {
                return Err("ERR syntax error");
            };
            match name.to_ascii_lowercase().as_slice() {
                b"match" => options.pattern = value.clone(),
                b"type" if with_type => options.kind = Some(value.clone()),
                b"count" => {
                    match std::str::from_utf8(value)
                        .ok()
                        .and_then(|n| n.parse::<i64>().ok())
                    {
                        Some(n) if n >= 1 => options.count = n as u64,
                        Some(_) => return Err("ERR syntax error"),
                        None => return Err("ERR value is not an integer or out of range"),
                    }
                }
                _ => return Err("ERR syntax error"),
            }
        }
        Ok(options)
    }
}

/// Where an iteration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// `SCAN`: the next step reads slot group `group` from key `from` on.
    Keys { group: GroupId, from: Bytes },
    /// `HSCAN`, `SSCAN`, `ZSCAN`: the next step reads the collection at `key` from element
    /// `from` on.
    Elements { key: Bytes, from: Bytes },
}

impl Position {
    /// The bytes it holds, counted against [`SCAN_CURSOR_BYTES_MAX`].
    fn bytes(&self) -> usize {
        match self {
            Position::Keys { from, .. } => from.len(),
            Position::Elements { key, from } => key.len() + from.len(),
        }
    }
}

/// The proxy's cursor table (see the module doc).
#[derive(Debug)]
pub struct ScanCursors {
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    next: u64,
    positions: BTreeMap<u64, Position>,
    /// Cursors in the order they were handed out: the oldest is forgotten first.
    order: VecDeque<u64>,
    bytes: usize,
}

impl ScanCursors {
    /// A table whose cursors start at a base drawn from `seed` (the proxy's start): between
    /// 2^32 and 2^48, so cursors stay exact in clients that hold them as doubles.
    pub fn new(seed: u64) -> Self {
        let base = (1u64 << 32) + xxhash_rust::xxh3::xxh3_64(&seed.to_le_bytes()) % (1u64 << 47);
        ScanCursors {
            table: Mutex::new(Table {
                next: base,
                positions: BTreeMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    /// A new cursor for `position`, forgetting the oldest ones past the bounds. A position
    /// whose key alone passes the byte bound is not remembered: `None`.
    pub fn remember(&self, position: Position) -> Option<u64> {
        let bytes = position.bytes();
        if bytes > SCAN_CURSOR_BYTES_MAX {
            return None;
        }
        let mut table = self.table.lock().expect("scan cursors lock");
        while table.order.len() >= SCAN_CURSORS_MAX || table.bytes + bytes > SCAN_CURSOR_BYTES_MAX {
            let Some(oldest) = table.order.pop_front() else {
                break;
            };
            if let Some(forgotten) = table.positions.remove(&oldest) {
                table.bytes -= forgotten.bytes();
            }
        }
        let cursor = table.next;
        table.next += 1;
        table.bytes += bytes;
        table.positions.insert(cursor, position);
        table.order.push_back(cursor);
        Some(cursor)
    }

    /// Where `cursor` stands, if this proxy handed it out and still remembers it. Looking a
    /// cursor up does not forget it: a client may repeat a step (after a lost reply).
    pub fn find(&self, cursor: u64) -> Option<Position> {
        let table = self.table.lock().expect("scan cursors lock");
        table.positions.get(&cursor).cloned()
    }

    /// Cursors remembered now.
    pub fn len(&self) -> usize {
        self.table
            .lock()
            .expect("scan cursors lock")
            .positions
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(group: GroupId, key: &str) -> Position {
        Position::Keys {
            group,
            from: Bytes::copy_from_slice(key.as_bytes()),
        }
    }

    #[test]
    fn cursors_are_remembered_until_the_bound_and_the_oldest_go_first() {
        let cursors = ScanCursors::new(7);
        let first = cursors.remember(at(1, "a")).expect("remembered");
        assert!(((1 << 32)..(1 << 32) + (1 << 47)).contains(&first));
        assert_eq!(cursors.find(first), Some(at(1, "a")));
        assert_eq!(
            cursors.find(first),
            Some(at(1, "a")),
            "a step may be repeated"
        );
        assert_eq!(cursors.find(first + 1), None, "never handed out");
        for i in 1..SCAN_CURSORS_MAX {
            cursors.remember(at(2, &format!("k{i}")));
        }
        assert_eq!(cursors.len(), SCAN_CURSORS_MAX);
        assert_eq!(cursors.find(first), Some(at(1, "a")));
        let newest = cursors.remember(at(3, "z")).expect("remembered");
        assert_eq!(cursors.len(), SCAN_CURSORS_MAX, "the count is bounded");
        assert_eq!(cursors.find(first), None, "the oldest was forgotten");
        assert_eq!(cursors.find(newest), Some(at(3, "z")));
        // Another proxy (another start) hands out other cursors.
        assert_ne!(ScanCursors::new(8).remember(at(1, "a")), Some(first));
    }

    #[test]
    fn the_keys_cursors_hold_are_bounded_in_bytes() {
        let cursors = ScanCursors::new(1);
        let half = "x".repeat(SCAN_CURSOR_BYTES_MAX / 2);
        let a = cursors.remember(at(1, &half)).expect("fits");
        let b = cursors.remember(at(1, &half)).expect("fits");
        let c = cursors
            .remember(at(1, &half))
            .expect("fits, forgetting the oldest");
        assert_eq!(cursors.find(a), None);
        assert!(cursors.find(b).is_some() && cursors.find(c).is_some());
        let huge = "y".repeat(SCAN_CURSOR_BYTES_MAX + 1);
        assert_eq!(
            cursors.remember(at(1, &huge)),
            None,
            "one key past the bound"
        );
        assert!(cursors.find(c).is_some(), "and nothing forgotten for it");
        // A collection's position holds its key and its element.
        let element = Position::Elements {
            key: Bytes::from(half.clone()),
            from: Bytes::from(half),
        };
        let d = cursors.remember(element.clone()).expect("fits, alone");
        assert_eq!(cursors.len(), 1, "the key and the element both count");
        assert_eq!(cursors.find(d), Some(element));
    }

    #[test]
    fn options_are_read_as_redis_reads_them() {
        let args = |line: &str| -> Vec<Bytes> {
            line.split_whitespace()
                .map(|word| Bytes::copy_from_slice(word.as_bytes()))
                .collect()
        };
        assert_eq!(
            Options::parse(&args("MATCH a* count 5 TYPE hash"), true),
            Ok(Options {
                pattern: Bytes::from_static(b"a*"),
                kind: Some(Bytes::from_static(b"hash")),
                count: 5,
            })
        );
        assert_eq!(Options::parse(&[], false).map(|o| o.count), Ok(10));
        for (line, with_type, problem) in [
            ("COUNT", true, "ERR syntax error"),
            ("MATCH a COUNT", false, "ERR syntax error"),
            ("COUNT 0", true, "ERR syntax error"),
            (
                "COUNT x",
                true,
                "ERR value is not an integer or out of range",
            ),
            ("TYPE hash", false, "ERR syntax error"),
            ("NOVALUES x", false, "ERR syntax error"),
        ] {
            assert_eq!(
                Options::parse(&args(line), with_type),
                Err(problem),
                "{line}"
            );
        }
    }

    #[test]
    fn cursors_are_read_as_redis_reads_them() {
        assert_eq!(parse_cursor(b"0"), Some(0));
        assert_eq!(parse_cursor(b""), Some(0));
        assert_eq!(parse_cursor(b"+17"), Some(17));
        assert_eq!(
            parse_cursor(b"-1"),
            Some(u64::MAX),
            "a negative cursor wraps"
        );
        assert_eq!(parse_cursor(b"18446744073709551615"), Some(u64::MAX));
        for bad in [&b"18446744073709551616"[..], b" 1", b"1x", b"-", b"0x10"] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }
}
