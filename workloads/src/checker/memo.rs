//! Lowe's memoization: the table of configurations (set of linearized operations, model
//! state) already explored, so that none is explored twice.
//!
//! It is the checker's memory hog (one entry per explored configuration), hence its own
//! file: the set is kept in a compact canonical encoding ([`Linearized`]) and the table is
//! open addressing over variable-length keys ([`Cache`]), keyed by an incremental Zobrist
//! hash mixed with the state ([`splitmix`]).

use super::model::COp;

pub(super) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The set of linearized operations of a search, with a compact canonical encoding for the
/// memo table. Determinate operations are numbered in return order: every one returning
/// before the first pending return is linearized, so their bitset is all ones up to a word
/// `lo` and all zeros after a word `hi`; only the words in between are stored. Indeterminate
/// operations (pending forever) get a bitset of their own, stored whole.
pub(super) struct Linearized {
    /// Per operation: (determinate, bit position in its bitset).
    position: Vec<(bool, u32)>,
    det: Vec<u64>,
    det_len: usize,
    info: Vec<u64>,
    /// First determinate word that is not full.
    lo: usize,
    /// One past the last non-zero determinate word.
    hi: usize,
    /// Scratch for the encoding.
    key: Vec<u64>,
}

impl Linearized {
    pub(super) fn new(ops: &[COp]) -> Self {
        let mut det: Vec<(u64, usize)> = Vec::new();
        let mut info: Vec<(u64, usize)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if op.definite {
                det.push((op.ret, i));
            } else {
                info.push((op.call, i));
            }
        }
        det.sort_unstable();
        info.sort_unstable();
        let mut position = vec![(false, 0u32); ops.len()];
        for (k, &(_, i)) in det.iter().enumerate() {
            position[i] = (true, k as u32);
        }
        for (k, &(_, i)) in info.iter().enumerate() {
            position[i] = (false, k as u32);
        }
        Linearized {
            position,
            det: vec![0; det.len().div_ceil(64)],
            det_len: det.len(),
            info: vec![0; info.len().div_ceil(64)],
            lo: 0,
            hi: 0,
            key: Vec::new(),
        }
    }

    fn full(&self, word: usize) -> u64 {
        let tail = self.det_len % 64;
        if word + 1 == self.det.len() && tail != 0 {
            (1u64 << tail) - 1
        } else {
            u64::MAX
        }
    }

    pub(super) fn set(&mut self, op: usize) {
        let (definite, k) = self.position[op];
        let (word, bit) = (k as usize / 64, k % 64);
        if !definite {
            self.info[word] |= 1 << bit;
            return;
        }
        self.det[word] |= 1 << bit;
        self.hi = self.hi.max(word + 1);
        while self.lo < self.det.len() && self.det[self.lo] == self.full(self.lo) {
            self.lo += 1;
        }
    }

    pub(super) fn clear(&mut self, op: usize) {
        let (definite, k) = self.position[op];
        let (word, bit) = (k as usize / 64, k % 64);
        if !definite {
            self.info[word] &= !(1 << bit);
            return;
        }
        self.det[word] &= !(1 << bit);
        self.lo = self.lo.min(word);
        while self.hi > 0 && self.det[self.hi - 1] == 0 {
            self.hi -= 1;
        }
    }

    /// The canonical encoding: (`lo`, the words from `lo` to `hi`, then the indeterminate
    /// bitset).
    pub(super) fn key(&mut self) -> (u32, &[u64]) {
        self.key.clear();
        if self.hi > self.lo {
            self.key.extend_from_slice(&self.det[self.lo..self.hi]);
        }
        self.key.extend_from_slice(&self.info);
        (self.lo as u32, &self.key)
    }
}

/// Seen configurations (linearized set, state): open addressing over variable-length keys.
pub(super) struct Cache {
    slots: Vec<u32>,
    hashes: Vec<u64>,
    states: Vec<u64>,
    /// Per entry: (`lo`, offset of its words, number of words).
    meta: Vec<(u32, usize, u32)>,
    words: Vec<u64>,
}

impl Cache {
    pub(super) fn new() -> Self {
        Cache {
            slots: vec![0; 1024],
            hashes: Vec::new(),
            states: Vec::new(),
            meta: Vec::new(),
            words: Vec::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.hashes.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.slots.capacity() * 4
            + (self.hashes.capacity() + self.states.capacity() + self.words.capacity()) * 8
            + self.meta.capacity() * std::mem::size_of::<(u32, usize, u32)>()
    }

    /// Inserts the configuration; false if it was already there.
    pub(super) fn insert(&mut self, hash: u64, state: u64, (lo, key): (u32, &[u64])) -> bool {
        if (self.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        match self.probe(hash, state, (lo, key)) {
            Ok(_) => false,
            Err(slot) => {
                self.slots[slot] = (self.len() + 1) as u32;
                self.hashes.push(hash);
                self.states.push(state);
                self.meta.push((lo, self.words.len(), key.len() as u32));
                self.words.extend_from_slice(key);
                true
            }
        }
    }

    /// Whether the configuration is there.
    pub(super) fn contains(&self, hash: u64, state: u64, key: (u32, &[u64])) -> bool {
        self.probe(hash, state, key).is_ok()
    }

    /// The configuration's entry, or the free slot where it would go.
    fn probe(&self, hash: u64, state: u64, (lo, key): (u32, &[u64])) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            match self.slots[slot] {
                0 => return Err(slot),
                entry => {
                    let e = (entry - 1) as usize;
                    let (e_lo, offset, len) = self.meta[e];
                    if self.hashes[e] == hash
                        && self.states[e] == state
                        && e_lo == lo
                        && self.words[offset..offset + len as usize] == *key
                    {
                        return Ok(e);
                    }
                }
            }
            slot = (slot + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = self.slots.len() * 2;
        let mask = size - 1;
        let mut slots = vec![0u32; size];
        for (e, &hash) in self.hashes.iter().enumerate() {
            let mut slot = hash as usize & mask;
            while slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            slots[slot] = (e + 1) as u32;
        }
        self.slots = slots;
    }
}
