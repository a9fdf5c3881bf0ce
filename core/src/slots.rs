//! Key to slot mapping, bit-for-bit the one Redis Cluster uses.
//!
//! A key's slot is `CRC16(tag) mod 16384`, where the tag is the key's `{hash tag}` if it has a
//! non-empty one, else the whole key. Matching Redis exactly means cluster-aware Redis clients
//! (which compute slots themselves) route to the same group Larder would, and multi-key commands
//! on keys sharing a tag land in one slot, hence one Raft group.

use serde::{Deserialize, Serialize};

/// Number of hash slots. Fixed by the Redis Cluster protocol; clients hard-code it.
pub const SLOTS: u16 = 16384;

/// CRC16/XMODEM lookup tables (poly 0x1021, MSB-first), built at compile time so there is no
/// runtime initialisation and no `unsafe`/lazy static. `CRC16_TABLES[0]` is the classic
/// byte-at-a-time table; `CRC16_TABLES[k][b]` is the CRC of byte `b` followed by `k` zero
/// bytes, which lets [`crc16`] take eight bytes per step ("slicing by 8").
const CRC16_TABLES: [[u16; 256]; 8] = build_crc16_tables();

const fn build_crc16_tables() -> [[u16; 256]; 8] {
    let mut tables = [[0u16; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            // One more zero byte through the byte-at-a-time step.
            let crc = tables[k - 1][i];
            tables[k][i] = (crc << 8) ^ tables[0][(crc >> 8) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

/// One byte through the classic table step.
fn crc16_byte(crc: u16, byte: u8) -> u16 {
    (crc << 8) ^ CRC16_TABLES[0][usize::from(((crc >> 8) as u8) ^ byte)]
}

/// CRC16/XMODEM (poly 0x1021, init 0, no reflection, no final xor): the variant Redis Cluster
/// specifies. `crc16(b"123456789") == 0x31C3`.
///
/// Eight bytes a step: the CRC is linear, so a step's result is the XOR of each byte's
/// contribution through zero bytes (`CRC16_TABLES[7 - i]` for byte `i`), with the running CRC
/// folded into the first two bytes. Every key of every command is hashed several times on its
/// way (the proxy's routing and hot keys, the node's ownership and hot keys); byte at a time,
/// each byte waited on the last's table load, and the proxy's routing lookup was 4-5 % of a
/// pipelined GET's CPU (perf).
pub fn crc16(data: &[u8]) -> u16 {
    let t = &CRC16_TABLES;
    let mut chunks = data.chunks_exact(8);
    let mut crc = 0u16;
    for c in &mut chunks {
        let [high, low] = crc.to_be_bytes();
        crc = t[7][usize::from(c[0] ^ high)]
            ^ t[6][usize::from(c[1] ^ low)]
            ^ t[5][usize::from(c[2])]
            ^ t[4][usize::from(c[3])]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    chunks
        .remainder()
        .iter()
        .fold(crc, |crc, &b| crc16_byte(crc, b))
}

/// The part of `key` that is hashed, following Redis's rules exactly: the bytes between the first
/// `{` and the first `}` after it, if that is non-empty; otherwise the whole key. (So `foo{}{bar}`
/// hashes the whole key, and `foo{{bar}}zap` hashes `{bar`.)
pub fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

/// The slot (`0..SLOTS`) that owns `key`.
pub fn slot_of(key: &[u8]) -> u16 {
    // SLOTS is a power of two, so this is Redis's `crc16(..) & 16383`.
    crc16(hash_tag(key)) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc16_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn known_redis_slots() {
        // Values from `CLUSTER KEYSLOT` on a real Redis.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(slot_of(b"somekey"), 11058);
        assert_eq!(slot_of(b""), 0);
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(
            slot_of(b"{user1000}.following"),
            slot_of(b"{user1000}.followers")
        );
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"foo{bar"), b"foo{bar");
        assert_eq!(hash_tag(b"foo}bar{"), b"foo}bar{");
        assert_eq!(hash_tag(b"}{x}"), b"x");
        assert_eq!(hash_tag(b"{}"), b"{}");
    }

    proptest! {
        #[test]
        fn crc16_by_eight_bytes_is_crc16_byte_by_byte(
            data in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let byte_by_byte = data.iter().fold(0u16, |crc, &b| crc16_byte(crc, b));
            prop_assert_eq!(crc16(&data), byte_by_byte);
        }

        #[test]
        fn slot_in_range(key in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert!(slot_of(&key) < SLOTS);
        }

        #[test]
        fn shared_tag_shares_slot(
            tag in proptest::collection::vec(any::<u8>().prop_filter("no braces", |b| *b != b'{' && *b != b'}'), 1..16),
            // Prefixes without '{' so the tag really is the first one; suffixes arbitrary.
            p1 in proptest::collection::vec(any::<u8>().prop_filter("no open", |b| *b != b'{'), 0..8),
            p2 in proptest::collection::vec(any::<u8>().prop_filter("no open", |b| *b != b'{'), 0..8),
            s1 in proptest::collection::vec(any::<u8>(), 0..8),
            s2 in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let make = |p: &[u8], s: &[u8]| {
                let mut k = p.to_vec();
                k.push(b'{');
                k.extend_from_slice(&tag);
                k.push(b'}');
                k.extend_from_slice(s);
                k
            };
            let (k1, k2) = (make(&p1, &s1), make(&p2, &s2));
            prop_assert_eq!(hash_tag(&k1), &tag[..]);
            prop_assert_eq!(slot_of(&k1), slot_of(&k2));
            prop_assert_eq!(slot_of(&k1), slot_of(&tag));
        }
    }
}

/// The slots a group's state machine owns, as its own Raft log last set them
/// ([`crate::kv::Command::OwnSlots`]): the `epoch` of the routing table they come from and the
/// slot ranges (inclusive, ascending, disjoint). A command for a key of another slot is refused
/// at apply time, so a client routed by a stale table can never write to a group after the
/// slot has moved away (the request-time epoch check is only the fast path).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    pub epoch: u64,
    pub ranges: Vec<(u16, u16)>,
}

/// Whether inclusive slot `ranges` contain `slot`. Few ranges per group (one, unless slots
/// moved): a binary search is not worth it.
pub fn ranges_contain(ranges: &[(u16, u16)], slot: u16) -> bool {
    ranges
        .iter()
        .any(|&(first, last)| (first..=last).contains(&slot))
}

/// The slots for which `member` holds, as inclusive ascending ranges.
pub fn ranges_where(mut member: impl FnMut(u16) -> bool) -> Vec<(u16, u16)> {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for slot in (0..SLOTS).filter(|slot| member(*slot)) {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == slot => *last = slot,
            _ => ranges.push((slot, slot)),
        }
    }
    ranges
}

/// An ownership whose ranges are not ascending, disjoint and within `0..SLOTS`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid slot ranges {ranges:?}: {reason}")]
pub struct InvalidRanges {
    pub ranges: Vec<(u16, u16)>,
    pub reason: &'static str,
}

impl Ownership {
    /// Checks the ranges (see [`InvalidRanges`]).
    pub fn new(epoch: u64, ranges: Vec<(u16, u16)>) -> Result<Self, InvalidRanges> {
        let invalid = |reason| InvalidRanges {
            ranges: ranges.clone(),
            reason,
        };
        let mut next = 0u32;
        for &(first, last) in &ranges {
            if first > last {
                return Err(invalid("a range ends before it starts"));
            }
            if last >= SLOTS {
                return Err(invalid("a slot past 16383"));
            }
            if u32::from(first) < next {
                return Err(invalid("ranges overlap or are out of order"));
            }
            next = u32::from(last) + 1;
        }
        Ok(Ownership { epoch, ranges })
    }

    pub fn owns(&self, slot: u16) -> bool {
        ranges_contain(&self.ranges, slot)
    }

    /// The slot of the first of `keys` this ownership does not cover, if any.
    pub fn first_unowned<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) -> Option<u16> {
        keys.into_iter().map(slot_of).find(|slot| !self.owns(*slot))
    }
}

#[cfg(test)]
mod ownership_tests {
    use super::*;

    #[test]
    fn ownership_covers_its_ranges_only() {
        let own = Ownership::new(7, vec![(0, 99), (200, 200), (16000, 16383)]).unwrap();
        assert!(own.owns(0) && own.owns(99) && own.owns(200) && own.owns(16383));
        assert!(!own.owns(100) && !own.owns(199) && !own.owns(201));
        let key = b"user:1";
        let slot = slot_of(key);
        assert_eq!(
            own.first_unowned([key.as_slice()]),
            (!own.owns(slot)).then_some(slot)
        );
        assert_eq!(
            Ownership::new(1, vec![(0, 16383)])
                .unwrap()
                .first_unowned([key.as_slice()]),
            None
        );
    }

    #[test]
    fn ranges_where_joins_neighbours() {
        assert_eq!(
            ranges_where(|s| s < 3 || s == 5 || s >= 16382),
            vec![(0, 2), (5, 5), (16382, 16383)]
        );
        assert_eq!(ranges_where(|_| false), vec![]);
        assert_eq!(ranges_where(|_| true), vec![(0, 16383)]);
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert!(Ownership::new(1, vec![(5, 4)]).is_err());
        assert!(Ownership::new(1, vec![(0, 16384)]).is_err());
        assert!(Ownership::new(1, vec![(0, 10), (10, 20)]).is_err());
        assert!(Ownership::new(1, vec![(20, 30), (0, 10)]).is_err());
        assert!(
            Ownership::new(1, vec![]).is_ok(),
            "a group may own nothing (all moved away)"
        );
    }
}
