//! Key to slot mapping, bit-for-bit the one Redis Cluster uses.
//!
//! A key's slot is `CRC16(tag) mod 16384`, where the tag is the key's `{hash tag}` if it has a
//! non-empty one, else the whole key. Matching Redis exactly means cluster-aware Redis clients
//! (which compute slots themselves) route to the same group Larder would, and multi-key commands
//! on keys sharing a tag land in one slot, hence one Raft group.

/// Number of hash slots. Fixed by the Redis Cluster protocol; clients hard-code it.
pub const SLOTS: u16 = 16384;

/// CRC16/XMODEM lookup table (poly 0x1021, MSB-first), built at compile time so there is no
/// runtime initialisation and no `unsafe`/lazy static.
const CRC16_TABLE: [u16; 256] = build_crc16_table();

const fn build_crc16_table() -> [u16; 256] {
    let mut table = [0u16; 256];
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
        table[i] = crc;
        i += 1;
    }
    table
}

/// CRC16/XMODEM (poly 0x1021, init 0, no reflection, no final xor): the variant Redis Cluster
/// specifies. `crc16(b"123456789") == 0x31C3`.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from(((crc >> 8) as u8) ^ b)]
    })
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
