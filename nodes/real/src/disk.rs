use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use larder_core::env::{BlockingSyncWriter, Disk, DiskError, DiskView, Space, WriteBatch, WriteOp};

/// Settings of the fjall engine behind a [`FjallDisk`].
#[derive(Debug, Clone)]
pub struct FjallOptions {
    /// Block cache size in bytes.
    pub cache_bytes: u64,
    /// Values at least this large (bytes) of the log, state and element keyspaces are kept in
    /// fjall's blob files (key-value separation), so compactions move their keys, not the
    /// values; `None` keeps every value in the tree. Decided when a keyspace is created: a
    /// data directory keeps what it was created with.
    pub kv_separation_bytes: Option<u32>,
}

impl Default for FjallOptions {
    fn default() -> Self {
        FjallOptions {
            cache_bytes: 64 << 20,
            kv_separation_bytes: Some(KV_SEPARATION_BYTES),
        }
    }
}

/// The default of [`FjallOptions::kv_separation_bytes`]: a large value (Redis's strings of
/// kilobytes and more) is written to a blob file once and never again by a compaction.
pub const KV_SEPARATION_BYTES: u32 = 16 << 10;

/// The node's engine: one fjall database, one keyspace per [`Space`].
///
/// A [`WriteBatch`] becomes one fjall batch, which fjall writes as one journal record, so it is
/// atomic across keyspaces. `sync` persists the journal with `fsync` (`PersistMode::SyncAll`);
/// the journal is sequential, so that also persists every earlier write, and a crash can lose
/// only a suffix of unsynced batches: the two rules the `Disk` contract asks for, and what
/// `nodes/real/tests/real/fjall_crash.rs` checks by killing a writer process.
#[derive(Clone)]
pub struct FjallDisk {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Database,
    /// Indexed by [`space_index`].
    spaces: [Keyspace; 4],
}

fn space_index(space: Space) -> usize {
    match space {
        Space::Log => 0,
        Space::State => 1,
        Space::Meta => 2,
        Space::Elements => 3,
    }
}

fn io(error: fjall::Error) -> DiskError {
    DiskError::Io {
        reason: format!("fjall: {error}"),
    }
}

impl FjallDisk {
    /// Opens (or creates) the engine under `path`, recovering whatever its journal holds.
    pub fn open(path: &Path, options: &FjallOptions) -> Result<Self, DiskError> {
        let db = Database::builder(path)
            .cache_size(options.cache_bytes)
            .open()
            .map_err(io)?;
        let separation = options
            .kv_separation_bytes
            .map(|bytes| fjall::KvSeparationOptions::default().separation_threshold(bytes.max(1)));
        let open = |space: Space| {
            db.keyspace(space.name(), || {
                let options = KeyspaceCreateOptions::default();
                match space {
                    // Votes, marks and identity, read on every start, stay in the tree; so
                    // do the snapshots kept here, each one record (not separated yet).
                    Space::Meta => options,
                    Space::Log | Space::State | Space::Elements => {
                        options.with_kv_separation(separation.clone())
                    }
                }
            })
        };
        let spaces = [
            open(Space::Log).map_err(io)?,
            open(Space::State).map_err(io)?,
            open(Space::Meta).map_err(io)?,
            open(Space::Elements).map_err(io)?,
        ];
        Ok(FjallDisk {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db,
                spaces,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn space(&self, space: Space) -> &Keyspace {
        &self.inner.spaces[space_index(space)]
    }

    fn write_blocking(&self, batch: WriteBatch, sync: bool) -> Result<(), DiskError> {
        if batch.is_empty() {
            return if sync {
                self.inner.db.persist(PersistMode::SyncAll).map_err(io)
            } else {
                Ok(())
            };
        }
        // Written unsynced, then synced with `persist`: fjall syncs a batch's durability under
        // its journal lock, which would stall every other writer (the async workers' unsynced
        // appends and applies) for the whole fsync; our patched `persist` syncs outside it
        // (vendor/fjall/PATCHES.md).
        let mut fjall_batch = self.inner.db.batch();
        for op in batch.ops {
            match op {
                WriteOp::Put { space, key, value } => {
                    fjall_batch.insert(self.space(space), key, value);
                }
                WriteOp::Delete { space, key } => fjall_batch.remove(self.space(space), key),
            }
        }
        fjall_batch.commit().map_err(io)?;
        if sync {
            self.inner.db.persist(PersistMode::SyncAll).map_err(io)?;
        }
        Ok(())
    }
}

/// Longest scan read on the calling task; longer ones run on the blocking pool.
pub const SCAN_INLINE_ROWS_MAX: usize = 512;

impl FjallDisk {
    fn scan_blocking(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, DiskError> {
        let keyspace = self.space(space);
        let iter = match end {
            Some(end) => keyspace.range::<&[u8], _>(start..end),
            None => keyspace.range::<&[u8], _>(start..),
        };
        collect_rows(iter, limit)
    }
}

/// The first `limit` rows of a range, as owned bytes.
fn collect_rows(
    iter: impl Iterator<Item = fjall::Guard>,
    limit: usize,
) -> Result<Vec<(Bytes, Bytes)>, DiskError> {
    let mut rows = Vec::new();
    for guard in iter.take(limit) {
        let (key, value) = guard.into_inner().map_err(io)?;
        rows.push((Bytes::from(key), Bytes::from(value)));
    }
    Ok(rows)
}

/// A point-in-time view of a [`FjallDisk`]: a fjall snapshot (a sequence number; fjall keeps
/// what it shows until it is dropped).
pub struct FjallView {
    disk: FjallDisk,
    snapshot: fjall::Snapshot,
}

impl DiskView for FjallView {
    async fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, DiskError> {
        // A view is read in large pages (a whole group's snapshot): off the async workers, so
        // a long scan does not stall every other task of the node.
        let (disk, snapshot) = (self.disk.clone(), self.snapshot.clone());
        let (start, end) = (start.to_vec(), end.map(<[u8]>::to_vec));
        #[allow(clippy::disallowed_methods)]
        let task = tokio::task::spawn_blocking(move || {
            let keyspace = disk.space(space);
            let iter = match &end {
                Some(end) => snapshot.range::<&[u8], _>(keyspace, start.as_slice()..end.as_slice()),
                None => snapshot.range::<&[u8], _>(keyspace, start.as_slice()..),
            };
            collect_rows(iter, limit)
        });
        task.await.map_err(|e| DiskError::Io {
            reason: format!("scan task failed: {e}"),
        })?
    }
}

impl Disk for FjallDisk {
    type View = FjallView;

    fn view(&self) -> FjallView {
        FjallView {
            disk: self.clone(),
            snapshot: self.inner.db.snapshot(),
        }
    }

    async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), DiskError> {
        if !sync {
            // An unsynced write only appends to the journal buffer and the memtable.
            return self.write_blocking(batch, false);
        }
        // An fsync can take milliseconds: keep it off the async worker threads. This is the
        // real environment, where real threads are the point.
        let disk = self.clone();
        #[allow(clippy::disallowed_methods)]
        let task = tokio::task::spawn_blocking(move || disk.write_blocking(batch, true));
        task.await.map_err(|e| DiskError::Io {
            reason: format!("sync task failed: {e}"),
        })?
    }

    fn blocking_sync_writer(&self) -> Option<BlockingSyncWriter> {
        let disk = self.clone();
        Some(Box::new(move |batch| disk.write_blocking(batch, true)))
    }

    async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>, DiskError> {
        Ok(self.space(space).get(key).map_err(io)?.map(Bytes::from))
    }

    async fn scan(
        &self,
        space: Space,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Bytes)>, DiskError> {
        if limit <= SCAN_INLINE_ROWS_MAX {
            return self.scan_blocking(space, start, end, limit);
        }
        // A long scan (a group's keys, a migration page) reads many blocks: off the async
        // workers, so it does not stall every other task of the node. Short ones (a Raft
        // append's entries, a point range) stay inline, where a thread hand-off would cost
        // more than the read.
        let disk = self.clone();
        let (start, end) = (start.to_vec(), end.map(<[u8]>::to_vec));
        #[allow(clippy::disallowed_methods)]
        let task = tokio::task::spawn_blocking(move || {
            disk.scan_blocking(space, &start, end.as_deref(), limit)
        });
        task.await.map_err(|e| DiskError::Io {
            reason: format!("scan task failed: {e}"),
        })?
    }

    async fn last(
        &self,
        space: Space,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<(Bytes, Bytes)>, DiskError> {
        let Some(guard) = self.space(space).range::<&[u8], _>(start..end).next_back() else {
            return Ok(None);
        };
        let (key, value) = guard.into_inner().map_err(io)?;
        Ok(Some((Bytes::from(key), Bytes::from(value))))
    }
}

impl FjallDisk {
    /// This engine's Prometheus metrics (`larder_disk_…`), labelled `node` = `node`, read at
    /// scrape time. The registry holds the engine weakly: a closed engine leaves the page.
    pub fn metrics_registry(&self, node: u64) -> larder_core::metrics::Registry {
        let mut registry = larder_core::metrics::role_registry("disk", node);
        registry.register_collector(Box::new(DiskCollector(Arc::downgrade(&self.inner))));
        registry
    }
}

/// Reads fjall's figures at scrape time.
struct DiskCollector(std::sync::Weak<Inner>);

impl std::fmt::Debug for DiskCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiskCollector")
    }
}

impl prometheus_client::collector::Collector for DiskCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let db = &inner.db;
        let gauges = [
            (
                "bytes",
                "Bytes the engine holds on disk (tables and journals)",
                db.disk_space().unwrap_or(0),
            ),
            (
                "journal_bytes",
                "Bytes of the write-ahead journals",
                db.journal_disk_space().unwrap_or(0),
            ),
            (
                "journals",
                "Write-ahead journals kept",
                db.journal_count() as u64,
            ),
            (
                "write_buffer_bytes",
                "Bytes in memtables not yet flushed to tables",
                db.write_buffer_size(),
            ),
            (
                "flushes_queued",
                "Memtable flushes waiting: writes stall when these pile up",
                db.outstanding_flushes() as u64,
            ),
            (
                "compactions_active",
                "Compactions running now",
                db.active_compactions() as u64,
            ),
            ("cache_bytes", "Bytes in the block cache", db.cache_size()),
        ];
        larder_core::metrics::encode_gauges(&mut encoder, &gauges)?;
        let compactions = ConstCounter::new(db.compactions_completed() as u64);
        compactions.encode(encoder.encode_descriptor(
            "compactions",
            "Compactions completed since the engine opened",
            None,
            compactions.metric_type(),
        )?)?;
        let compacting = ConstCounter::new(db.time_compacting().as_secs_f64());
        compacting.encode(encoder.encode_descriptor(
            "compaction_seconds",
            "Time spent compacting since the engine opened",
            None,
            compacting.metric_type(),
        )?)?;
        let mut tables = encoder.encode_descriptor(
            "tables",
            "Tables (SST files) per space",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for space in [Space::Log, Space::State, Space::Meta, Space::Elements] {
            let count = inner.spaces[space_index(space)].table_count();
            ConstGauge::new(count as i64)
                .encode(tables.encode_family(&[("space", space.name())])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    #[tokio::test]
    async fn the_engine_reports_its_size_and_leaves_the_page_when_closed() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = FjallDisk::open(dir.path(), &FjallOptions::default()).expect("opens");
        let scrape = larder_core::metrics::Scrape::new();
        scrape.add(disk.metrics_registry(3));
        let mut batch = WriteBatch::new();
        batch.put(Space::State, b"k".to_vec(), vec![7u8; 4096]);
        disk.write(batch, true).await.expect("writes");
        let page = scrape.render();
        let journal = page
            .lines()
            .find(|l| l.starts_with("larder_disk_journal_bytes{node=\"3\"}"))
            .unwrap_or_else(|| panic!("{page}"));
        let bytes: u64 = journal.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(bytes >= 4096, "{page}");
        assert!(
            page.contains("larder_disk_tables{node=\"3\",space=\"state\"} 0"),
            "{page}"
        );
        drop(disk);
        assert!(!scrape.render().contains("larder_disk_bytes"));
    }
}

#[cfg(test)]
mod separation_tests {
    use super::*;

    /// Values past [`KV_SEPARATION_BYTES`] land in blob files once their memtable is flushed,
    /// small ones stay in the tree, and both read back whole, by key and by scan, before and
    /// after a reopen; a directory created without separation keeps its values in the tree.
    #[tokio::test]
    async fn large_values_go_to_blob_files_and_read_back_whole() {
        let large = |i: u8| vec![i; KV_SEPARATION_BYTES as usize * 2];
        for separated in [true, false] {
            let dir = tempfile::tempdir().expect("dir");
            let options = FjallOptions {
                kv_separation_bytes: separated.then_some(KV_SEPARATION_BYTES),
                ..FjallOptions::default()
            };
            let disk = FjallDisk::open(dir.path(), &options).expect("opens");
            let mut batch = WriteBatch::new();
            for i in 0..8u8 {
                batch.put(Space::State, vec![b'l', i], large(i));
                batch.put(Space::State, vec![b's', i], vec![i; 10]);
            }
            disk.write(batch, true).await.expect("writes");
            disk.space(Space::State)
                .rotate_memtable_and_wait()
                .expect("flushes");
            let blobs = disk.space(Space::State).blob_file_count();
            assert_eq!(blobs > 0, separated, "{blobs} blob files");
            drop(disk);
            let disk = FjallDisk::open(dir.path(), &options).expect("reopens");
            for i in 0..8u8 {
                let value = disk.get(Space::State, &[b'l', i]).await.expect("reads");
                assert_eq!(value.as_deref(), Some(&large(i)[..]));
            }
            let rows = disk
                .scan(Space::State, b"l", Some(b"m"), usize::MAX)
                .await
                .expect("scans");
            assert_eq!(rows.len(), 8);
            assert!(
                rows.iter()
                    .all(|(key, value)| value[..] == large(key[1])[..])
            );
            let small = disk.get(Space::State, b"s\x03").await.expect("reads");
            assert_eq!(small.as_deref(), Some(&[3u8; 10][..]));
        }
    }
}

#[cfg(test)]
mod log_read_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// fjall, remembering the largest row limit a scan was asked for.
    #[derive(Clone)]
    struct Recording {
        inner: FjallDisk,
        largest_limit: Arc<AtomicUsize>,
    }

    impl Disk for Recording {
        type View = FjallView;

        fn view(&self) -> FjallView {
            self.inner.view()
        }

        async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), DiskError> {
            self.inner.write(batch, sync).await
        }

        async fn get(&self, space: Space, key: &[u8]) -> Result<Option<Bytes>, DiskError> {
            self.inner.get(space, key).await
        }

        async fn scan(
            &self,
            space: Space,
            start: &[u8],
            end: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<(Bytes, Bytes)>, DiskError> {
            self.largest_limit.fetch_max(limit, Ordering::SeqCst);
            self.inner.scan(space, start, end, limit).await
        }

        async fn last(
            &self,
            space: Space,
            start: &[u8],
            end: &[u8],
        ) -> Result<Option<(Bytes, Bytes)>, DiskError> {
            self.inner.last(space, start, end).await
        }
    }

    /// The Raft log store asks for a range with no limit of its own (`usize::MAX`). Passed on
    /// as is, every apply and every append sent made a long-scan thread hop for a few entries
    /// (a quarter of a SET's CPU, measured): the range's length bounds the rows instead.
    #[tokio::test]
    async fn a_short_log_read_is_a_short_scan() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = Recording {
            inner: FjallDisk::open(dir.path(), &FjallOptions::default()).expect("opens"),
            largest_limit: Arc::default(),
        };
        let entries = (1..=5u64)
            .map(|index| (index, Bytes::from(vec![index as u8; 8])))
            .collect();
        disk.log_append(7, entries, true).await.expect("appends");
        let read = disk.log_read(7, 2, 5, usize::MAX).await.expect("reads");
        assert_eq!(
            read.iter().map(|(index, _)| *index).collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(disk.largest_limit.load(Ordering::SeqCst), 3);
        // A caller's own smaller limit still holds.
        let read = disk.log_read(7, 1, 6, 2).await.expect("reads");
        assert_eq!(read.len(), 2);
        assert_eq!(disk.largest_limit.load(Ordering::SeqCst), 3);
    }
}
