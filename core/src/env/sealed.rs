//! Record checksums: [`Sealed`], a [`Disk`] that seals every value it writes with a checksum
//! of its space, key and value, and verifies it on every read.
//!
//! Why a record checksum on top of the engine's own: a bit that flips at rest, a torn sector,
//! a misdirected write, or a bug between the engine and us must never be *served*. fjall
//! checksums its blocks, but a check at the record, covering the key too, is the one that
//! holds whatever engine is below, and the one the simulator can fault (`SimDisk` has no
//! blocks). A mismatch reads as [`DiskError::Corrupt`], which stops the replica that saw it;
//! the node then retires the replica and the center replaces it (ARCHITECTURE.md, "Disk
//! corruption").
//!
//! Format: `value ++ check`, where `check` is the low 32 bits of xxh3-64 (the hash fjall
//! already uses) over the value, seeded with a hash of the space and the key, little-endian.

use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

use super::disk::{BlockingSyncWriter, Disk, DiskError, DiskView, Space, WriteBatch, WriteOp};
use crate::bugs::{Bug, Bugs};

/// Bytes a seal adds to every value.
pub const SEAL_BYTES: usize = 4;

fn check(space: Space, key: &[u8], value: &[u8]) -> u32 {
    let tag = match space {
        Space::Log => 1u64,
        Space::State => 2,
        Space::Meta => 3,
        Space::Elements => 4,
    };
    let seed = xxhash_rust::xxh3::xxh3_64_with_seed(key, tag);
    xxhash_rust::xxh3::xxh3_64_with_seed(value, seed) as u32
}

/// `value` as stored: followed by its checksum.
pub fn seal(space: Space, key: &[u8], value: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(value.len() + SEAL_BYTES);
    out.put_slice(value);
    out.put_u32_le(check(space, key, value));
    out.freeze()
}

/// The value stored as `stored` under `key` in `space`, if its checksum holds.
pub fn unseal(space: Space, key: &[u8], stored: Bytes) -> Result<Bytes, DiskError> {
    let corrupt = |reason: String| DiskError::Corrupt { space, reason };
    let Some(body_len) = stored.len().checked_sub(SEAL_BYTES) else {
        return Err(corrupt(format!(
            "record of {} bytes under key {} is shorter than its checksum",
            stored.len(),
            show_key(key)
        )));
    };
    let expected = u32::from_le_bytes(stored[body_len..].try_into().expect("4 bytes"));
    let body = stored.slice(..body_len);
    let actual = check(space, key, &body);
    if actual != expected {
        return Err(corrupt(format!(
            "checksum mismatch under key {}: stored {expected:08x}, computed {actual:08x}",
            show_key(key)
        )));
    }
    Ok(body)
}

/// `batch` with every value it puts sealed.
fn seal_batch(batch: WriteBatch) -> WriteBatch {
    let ops = batch
        .ops
        .into_iter()
        .map(|op| match op {
            WriteOp::Put { space, key, value } => {
                let value = seal(space, &key, &value);
                WriteOp::Put { space, key, value }
            }
            delete => delete,
        })
        .collect();
    WriteBatch { ops }
}

/// A key for an error message: printable bytes as they are, the rest escaped, at most 64.
fn show_key(key: &[u8]) -> String {
    let shown: String = key
        .iter()
        .take(64)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    if key.len() > 64 {
        format!("{shown}… ({} bytes)", key.len())
    } else {
        shown
    }
}

/// Told of every corrupt record a [`Sealed`] disk finds: its space and key (the node maps the
/// key to the replica that owns it and retires that replica).
pub type CorruptionHook = Arc<dyn Fn(Space, &[u8], &DiskError) + Send + Sync>;

/// A [`Disk`] that seals what it writes and verifies what it reads (see the module doc). Keys,
/// order, batches and durability are the inner disk's.
#[derive(Clone)]
pub struct Sealed<D> {
    inner: D,
    bugs: Bugs,
    hook: Option<CorruptionHook>,
}

impl<D> std::fmt::Debug for Sealed<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed").finish_non_exhaustive()
    }
}

impl<D> Sealed<D> {
    pub fn new(inner: D, bugs: Bugs) -> Self {
        Sealed {
            inner,
            bugs,
            hook: None,
        }
    }

    /// Calls `hook` for every corrupt record found, before the read fails.
    pub fn with_hook(mut self, hook: CorruptionHook) -> Self {
        self.hook = Some(hook);
        self
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// [`Sealed::open`] for every row of a scan.
    fn open_rows(
        &self,
        space: Space,
        rows: Vec<(Bytes, Bytes)>,
    ) -> Result<Vec<(Bytes, Bytes)>, DiskError> {
        rows.into_iter()
            .map(|(key, stored)| {
                let value = self.open(space, &key, stored)?;
                Ok((key, value))
            })
            .collect()
    }

    fn open(&self, space: Space, key: &[u8], stored: Bytes) -> Result<Bytes, DiskError> {
        if self.bugs.is_planted(Bug::SkipRecordChecksum) {
            // The planted bug: the seal is cut off unchecked, so a flipped bit is served.
            return Ok(stored.slice(..stored.len().saturating_sub(SEAL_BYTES)));
        }
        unseal(space, key, stored).inspect_err(|error| {
            if let Some(hook) = &self.hook {
                hook(space, key, error);
            }
        })
    }
}

/// A point-in-time view of a [`Sealed`] disk: verifies what it reads, as the disk does.
pub struct SealedView<V> {
    inner: V,
    disk: Sealed<()>,
}

impl<V: DiskView> DiskView for SealedView<V> {
    async fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, DiskError> {
        let rows = self.inner.scan(space, start, end, limit).await?;
        self.disk.open_rows(space, rows)
    }
}

impl<D: Disk> Disk for Sealed<D> {
    type View = SealedView<D::View>;

    fn view(&self) -> Self::View {
        SealedView {
            inner: self.inner.view(),
            disk: Sealed {
                inner: (),
                bugs: self.bugs.clone(),
                hook: self.hook.clone(),
            },
        }
    }

    async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), DiskError> {
        self.inner.write(seal_batch(batch), sync).await
    }

    fn blocking_sync_writer(&self) -> Option<BlockingSyncWriter> {
        let mut inner = self.inner.blocking_sync_writer()?;
        Some(Box::new(move |batch| inner(seal_batch(batch))))
    }

    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>, DiskError> {
        match self.inner.get(space, key).await? {
            Some(stored) => self.open(space, key, stored).map(Some),
            None => Ok(None),
        }
    }

    async fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, DiskError> {
        let rows = self.inner.scan(space, start, end, limit).await?;
        self.open_rows(space, rows)
    }

    async fn scan_keys(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Bytes>, DiskError> {
        // Values are not read, so not checked: a corrupt record can be listed, and so deleted.
        // (A flipped bit in a key moves the record to another key, where its value's check,
        // seeded with the key, fails on the first read.)
        self.inner.scan_keys(space, start, end, limit).await
    }

    async fn last(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<(Bytes, Bytes)>, DiskError> {
        match self.inner.last(space, start, end).await? {
            Some((key, stored)) => {
                let value = self.open(space, &key, stored)?;
                Ok(Some((key, value)))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_sealed_value_opens_to_itself(
            key in proptest::collection::vec(any::<u8>(), 0..40),
            value in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let sealed = seal(Space::State, &key, &value);
            prop_assert_eq!(sealed.len(), value.len() + SEAL_BYTES);
            prop_assert_eq!(unseal(Space::State, &key, sealed).unwrap(), Bytes::from(value));
        }

        #[test]
        fn every_single_bit_flip_is_caught(
            key in proptest::collection::vec(any::<u8>(), 1..40),
            value in proptest::collection::vec(any::<u8>(), 0..200),
            bit in any::<usize>(),
        ) {
            let mut stored = seal(Space::Log, &key, &value).to_vec();
            let bit = bit % (stored.len() * 8);
            stored[bit / 8] ^= 1 << (bit % 8);
            let result = unseal(Space::Log, &key, Bytes::from(stored));
            prop_assert!(
                matches!(result, Err(DiskError::Corrupt { space: Space::Log, .. })),
                "{:?}", result
            );
        }
    }

    #[test]
    fn a_record_moved_to_another_key_or_space_or_cut_short_is_corrupt() {
        let sealed = seal(Space::State, b"a", b"value");
        assert!(unseal(Space::State, b"b", sealed.clone()).is_err());
        assert!(unseal(Space::Meta, b"a", sealed.clone()).is_err());
        assert!(unseal(Space::State, b"a", sealed.slice(..3)).is_err());
        assert!(unseal(Space::State, b"a", sealed.slice(1..)).is_err());
        assert!(unseal(Space::State, b"a", Bytes::new()).is_err());
    }
}
