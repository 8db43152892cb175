//! The embedded store: one directory, crash-safe, compressed. gpuwarden's default store.
//!
//! # On disk
//!
//! ```text
//! <dir>/LOCK                 flock held while open (pid inside, for humans)
//! <dir>/wal-<seq>.log        write-ahead log: every append, CRC-framed, fsync'd before Ok
//! <dir>/seg-<id>.seg         sealed segments: compressed sample chunks + events + index
//! <dir>/gpus.json            GPU identities as of the last seal (WAL has newer upserts)
//! <dir>/incidents.log        incidents: CRC-framed JSON versions, compacted (see [`incidents`])
//! <dir>/*.corrupt            quarantined files (see below); never read again
//! ```
//!
//! # Life of a sample
//!
//! `append_samples` (or `append_page`, a whole scrape page) encodes the batch as one WAL record, waits for it to be durable
//! (group commit: concurrent appenders share one `sync_data`), then inserts it into the
//! [`memtable`](memtable) where `latest` and `range` find it. When the memtable holds
//! [`EmbeddedOptions::memtable_max_samples`] samples or spans
//! [`EmbeddedOptions::memtable_max_span_ms`] of data time, or on [`Store::flush`], it is
//! *sealed*: under a short exclusive gate the WAL switches to a new file and the memtable
//! is frozen; then, without blocking appenders, the frozen data is compressed into a
//! segment (`*.tmp`, fsync, rename, dir fsync) whose index records which WAL files it
//! covers, and those WAL files are deleted. A crash at any point leaves either the WAL
//! files or the segment (or both, in which case the WAL files are ignored on open).
//!
//! # Corruption policy
//!
//! * Torn tail of the newest WAL file (an incomplete last record, a crash mid-write):
//!   truncated with a warning; only unacknowledged data is lost.
//! * Any other bad WAL record (bad CRC, implausible length, a CRC-valid record that does
//!   not decode) or a bad file header: the reader resyncs on the next valid record, so
//!   damage costs only the damaged records. A copy of the file is kept as `*.corrupt`
//!   and the file is rewritten with its good records; the loss is logged and counted in
//!   [`StoreStats`] (`damaged_records_skipped`, `damaged_bytes_skipped`,
//!   `damaged_files_kept`). Refusing to open would lose *all* new data; a monitoring
//!   store keeps going and says what it lost.
//! * A sealed segment (or `gpus.json`) whose header, index or footer is damaged is
//!   **quarantined**: renamed to `*.corrupt`, logged as an error, and the store opens
//!   without it. A monitoring store that refuses to start loses *all* new data; losing one
//!   sealed hour while keeping the evidence file is the lesser harm. A damaged chunk
//!   inside an otherwise readable segment is found when read: the query returns
//!   [`StoreError::Corrupt`] with the segment's path and the chunk's offset.
//! * `incidents.log`: a torn tail is truncated like the WAL's; damage anywhere else
//!   keeps a copy of the file and the store keeps every record it can still read, counted
//!   like the WAL's (details in [`incidents`]).
//!
//! # Write failures
//!
//! A failed WAL or incident-log write (ENOSPC, EIO) returns the error and acknowledges
//! nothing of that batch; the file is cut back to its last whole record and the next
//! write tries again, so a disk that was full and is freed brings writes back without a
//! restart. [`Store::write_health`] reports `Failing` from the first failed write until
//! one succeeds. Tests inject failures through [`FaultInjector`]
//! ([`EmbeddedStore::open_with_faults`]).
//!
//! A quarantined file never overwrites an earlier one: the second becomes
//! `*.1.corrupt`, and so on.
//!
//! Nothing read from disk can make the store panic.
//!
//! # Ordering
//!
//! Rows normally arrive in time order per GPU. Out-of-order rows are accepted and sorted
//! on read and seal; a duplicate timestamp of a series replaces the earlier point: both
//! are kept on disk, `range` returns only the last to arrive and `latest` reports it. A late point older than a sealed segment lands
//! in a later segment; queries merge and sort across segments.
//!
//! # Retention
//!
//! [`Store::apply_retention`] deletes whole segments whose newest sample and event are
//! older than the cutoff (segment granularity: a segment partly older than the cutoff is
//! kept until all of it is). Unsealed data is never dropped. `latest` keeps reporting a
//! series' last point even after its data expired.
//!
//! Incidents have their own horizon: [`EmbeddedStore::apply_configured_retention`] also
//! drops resolved incidents resolved more than [`EmbeddedOptions::incident_retention_ms`]
//! ago. Active incidents are never dropped.

mod codec;
mod compact;
pub mod fault;
pub mod incidents;
mod lock;
mod memtable;
pub(crate) mod query;
mod record;
mod segment;
mod wal;

use crate::{GpuRecord, PageWrite, Point, Store, StoreError, StoreStats, WriteHealth};
pub use fault::FaultInjector;
use gpuwarden_model::{Event, FieldName, GpuIdentity, GpuSamples, GpuUuid, Incident, TimestampMs};
/// The directory lock, public so that tools working on a data directory (restore) can
/// tell whether a gpuwarden holds it.
pub use lock::{DirLock, LOCK_FILE};
use memtable::{Frozen, MemTable};
use parking_lot::{Mutex, RwLock};
use segment::Segment;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wal::WalWriter;

const GPUS_FILE: &str = "gpus.json";
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Settings of the embedded store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedOptions {
    /// How long data is kept, in milliseconds, when retention is applied with
    /// [`EmbeddedStore::apply_configured_retention`]. Default 7 days.
    pub retention_ms: i64,
    /// Seal the memtable into a segment once it holds this many samples. Bounds memory
    /// (≈ 16–32 bytes a sample) and WAL size (≈ 9 bytes a sample). Default 4,000,000.
    pub memtable_max_samples: u64,
    /// Seal once the memtable spans this much data time (ms). Bounds how much WAL is
    /// replayed at start and how much data sits in the WAL, which is uncompressed
    /// (~17–20 bytes a sample against ~1–2 in merged segments): with an hour here, a live
    /// store was mostly WAL. Small segments cost little since compaction merges them.
    /// Default 2 minutes.
    pub memtable_max_span_ms: i64,
    /// Points per chunk of a series inside a segment: larger compresses a little better,
    /// smaller makes short `range` queries decode less. Default 4096.
    pub chunk_max_samples: usize,
    /// `fsync` the WAL before acknowledging, and segments before using them. Turning this
    /// off breaks the durability contract; it exists for benchmarks and throwaway tests.
    /// Default true.
    pub sync: bool,
    /// How long resolved incidents are kept after their resolution, in milliseconds, when
    /// retention is applied with [`EmbeddedStore::apply_configured_retention`]. Active
    /// incidents are always kept. Default 90 days.
    pub incident_retention_ms: i64,
    /// Segment indexes kept loaded for queries (the newest used). A segment's index is
    /// ~200 bytes per series; the others are read from the file when a query needs them.
    /// Default 4.
    pub segment_index_cache: usize,
    /// Segments of one size tier merged at once by [`EmbeddedStore::compact`]. Default 4.
    pub compact_fanout: usize,
    /// A merged segment spans at most this much data time (ms): retention drops whole
    /// segments. Default 1 day.
    pub compact_max_span_ms: i64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            retention_ms: 7 * DAY_MS,
            memtable_max_samples: 4_000_000,
            memtable_max_span_ms: 2 * 60 * 1000,
            chunk_max_samples: 4096,
            sync: true,
            incident_retention_ms: 90 * DAY_MS,
            segment_index_cache: 4,
            compact_fanout: 4,
            compact_max_span_ms: DAY_MS,
        }
    }
}

/// A GPU identity with the times it was named by `upsert_gpus`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KnownGpu {
    identity: GpuIdentity,
    first_seen_ms: TimestampMs,
    last_seen_ms: TimestampMs,
}

/// `gpus.json`: identities as of the seal that covered WAL files up to `wal_upto`.
#[derive(Debug, Serialize, Deserialize)]
struct GpusFile {
    wal_upto: u64,
    gpus: Vec<KnownGpu>,
}

/// A frozen memtable on its way into a segment.
#[derive(Debug)]
struct Pending {
    frozen: Frozen,
    events: Vec<Event>,
    gpus: Vec<KnownGpu>,
    wal_upto: u64,
    segment_id: u64,
}

#[derive(Debug)]
struct State {
    mem: MemTable,
    /// Events not yet in a segment.
    events: Vec<Event>,
    gpus: HashMap<GpuUuid, KnownGpu>,
    pending: Option<Arc<Pending>>,
    /// Sealed segments, oldest first.
    segments: Vec<Arc<Segment>>,
    next_segment_id: u64,
}

/// The embedded store. See the module documentation.
pub struct EmbeddedStore {
    dir: PathBuf,
    options: EmbeddedOptions,
    _lock: lock::DirLock,
    wal: WalWriter,
    /// Appenders hold it shared from WAL write to memtable insert; a seal holds it
    /// exclusively while it switches WAL file and memtable, so each WAL file's records
    /// are exactly those of one memtable generation.
    gate: RwLock<()>,
    state: RwLock<State>,
    /// One seal (or retention pass) at a time.
    seal_lock: Mutex<()>,
    /// One compaction (or retention pass) at a time: retention must not delete a
    /// compaction's inputs under it.
    compact_lock: Mutex<()>,
    /// Segments whose index is loaded, most recently used last.
    index_cache: Mutex<std::collections::VecDeque<Arc<Segment>>>,
    incidents: incidents::IncidentLog,
    /// What damaged files cost at open, for [`StoreStats`].
    damage: Damage,
    /// Whether writes reach disk, for [`Store::write_health`].
    health: Mutex<WriteHealth>,
}

/// Counts of data lost to damaged files (records and bytes skipped, files kept as
/// evidence), filled while files are read at open.
#[derive(Debug, Default)]
pub(crate) struct Damage {
    records: AtomicU64,
    bytes: AtomicU64,
    files: AtomicU64,
}

impl Damage {
    /// Notes one damaged file kept as evidence, which lost `records` records of `bytes`.
    pub(crate) fn note(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    /// (records skipped, bytes skipped, files kept).
    pub(crate) fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.records.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
            self.files.load(Ordering::Relaxed),
        )
    }
}

fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as TimestampMs)
}

/// Updates the write health after a write attempt: an I/O failure starts or extends a
/// failing run, a success ends it. Other errors (a batch too large to encode) say
/// nothing about the disk.
fn note_write(health: &Mutex<WriteHealth>, result: &Result<(), StoreError>) {
    let mut h = health.lock();
    match result {
        Ok(()) => *h = WriteHealth::Ok,
        Err(e @ StoreError::Io { .. }) => {
            *h = match &*h {
                WriteHealth::Ok => WriteHealth::Failing {
                    since_ms: now_ms(),
                    error: e.to_string(),
                    failed_writes: 1,
                },
                WriteHealth::Failing {
                    since_ms,
                    failed_writes,
                    ..
                } => WriteHealth::Failing {
                    since_ms: *since_ms,
                    error: e.to_string(),
                    failed_writes: failed_writes + 1,
                },
            }
        }
        Err(_) => {}
    }
}

/// Replaces `path` with `bytes` durably (tmp, sync, rename, dir sync).
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        use std::io::Write;
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes a directory's entries (new, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

/// The first free evidence name for `path`: `<name>.corrupt`, else `<name>.<n>.corrupt`
/// (earlier evidence is never overwritten).
fn evidence_name(path: &Path) -> PathBuf {
    (0u32..)
        .map(|n| {
            let mut t = path.as_os_str().to_owned();
            if n > 0 {
                t.push(format!(".{n}"));
            }
            t.push(".corrupt");
            PathBuf::from(t)
        })
        .find(|t| !t.exists())
        .unwrap_or_else(|| path.with_extension("corrupt"))
}

/// Renames a damaged file to `<name>.corrupt` (or `<name>.<n>.corrupt` when that exists:
/// earlier evidence is never overwritten).
pub(crate) fn quarantine(path: &Path, err: &StoreError) -> Result<(), StoreError> {
    let target = evidence_name(path);
    tracing::error!(path = %path.display(), quarantined_as = %target.display(), error = %err, "quarantining damaged store file; the store continues without it");
    std::fs::rename(path, &target).map_err(io_err(path))
}

/// Keeps a copy of a damaged file as evidence (`<name>.corrupt`, named like
/// [`quarantine`]) before the caller repairs it in place. A hard link when possible (no
/// copy of the bytes); the original stays where it is, so a crash during the repair
/// loses nothing — the next open finds the damage again.
pub(crate) fn keep_copy(path: &Path, err: &StoreError) -> Result<(), StoreError> {
    let target = evidence_name(path);
    tracing::warn!(path = %path.display(), kept_as = %target.display(), error = %err, "damaged store file: keeping a copy, then rewriting it with its good records");
    std::fs::hard_link(path, &target)
        .or_else(|_| std::fs::copy(path, &target).map(|_| ()))
        .map_err(io_err(path))?;
    match target.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`, replaying its WAL.
    ///
    /// Fails with [`StoreError::Locked`] when another process has it open.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self, StoreError> {
        Self::open_with_faults(dir, options, None)
    }

    /// [`open`](Self::open) with a [`FaultInjector`] that can fail the store's WAL and
    /// incident log writes: the seam tests use to simulate a full or failing disk.
    pub fn open_with_faults(
        dir: &Path,
        options: EmbeddedOptions,
        faults: Option<Arc<dyn FaultInjector>>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let lock = lock::DirLock::acquire(dir)?;

        let mut wal_seqs = Vec::new();
        let mut seg_ids = Vec::new();
        let mut max_seg_id = 0;
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                // An unfinished segment or gpus.json from a crash: never acknowledged as sealed.
                std::fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
            } else if let Some(seq) = wal::parse_name(name) {
                wal_seqs.push(seq);
            } else if let Some(id) = segment::parse_name(name) {
                seg_ids.push(id);
            }
            // Quarantined segments keep their id reserved.
            if let Some(id) = name
                .strip_prefix("seg-")
                .and_then(|s| s.get(..20))
                .and_then(|s| s.parse().ok())
            {
                max_seg_id = max_seg_id.max(id);
            }
        }
        wal_seqs.sort_unstable();
        seg_ids.sort_unstable();

        let (gpus_upto, gpus) = load_gpus(dir)?;
        let damage = Damage::default();
        let incidents = incidents::IncidentLog::open(dir, options.sync, &damage, faults.clone())?;
        let mut segments = Vec::new();
        for id in seg_ids {
            let path = dir.join(segment::file_name(id));
            match Segment::open(&path) {
                Ok(seg) => segments.push(Arc::new(seg)),
                Err(e @ StoreError::Corrupt { .. }) => quarantine(&path, &e)?,
                Err(e) => return Err(e),
            }
        }
        // Inputs of a compaction that a crash left behind (see `compact`): their data is
        // in a newer segment that records them as covered.
        let merged: Vec<(u64, u64)> = segments
            .iter()
            .filter(|s| s.covers_from < s.id)
            .map(|s| (s.covers_from, s.id))
            .collect();
        let mut kept = Vec::with_capacity(segments.len());
        for seg in segments {
            if merged.iter().any(|&(lo, hi)| seg.id >= lo && seg.id < hi) {
                tracing::info!(path = %seg.path.display(), "removing a segment already merged by compaction");
                std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            } else {
                kept.push(seg);
            }
        }
        let segments = kept;
        let covered = segments.iter().map(|s| s.wal_upto).max().unwrap_or(0);

        let mut state = State {
            mem: MemTable::default(),
            events: Vec::new(),
            gpus,
            pending: None,
            segments,
            next_segment_id: max_seg_id + 1,
        };
        for seg in &state.segments {
            for (gpu, fields) in seg.index()?.iter() {
                for (field, chunks) in fields {
                    if let (Some(first), Some(last)) = (chunks.first(), chunks.last()) {
                        let p = Point {
                            ts_ms: last.max_ts,
                            value: last.last_value,
                        };
                        state.mem.note_sealed(gpu, &field, first.min_ts, p);
                    }
                }
            }
            // Read again when a query needs it (see `segment_index_cache`).
            seg.unload_index();
        }

        let newest = wal_seqs.last().copied();
        for &seq in &wal_seqs {
            let path = dir.join(wal::file_name(seq));
            if seq <= covered {
                // Sealed already; left behind by a crash between seal and cleanup.
                std::fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            wal::replay(&path, Some(seq) == newest, &damage, |payload| {
                let Ok(rec) = record::decode(payload) else {
                    return false;
                };
                apply_record(&mut state, rec, seq > gpus_upto);
                true
            })?;
        }

        let next_wal = wal_seqs.iter().copied().chain([covered, gpus_upto]).max().unwrap_or(0) + 1;
        let wal = WalWriter::create(dir, next_wal, options.sync, faults)?;
        tracing::info!(
            dir = %dir.display(),
            segments = state.segments.len(),
            replayed_samples = state.mem.samples(),
            "embedded store opened"
        );
        Ok(EmbeddedStore {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            wal,
            gate: RwLock::new(()),
            state: RwLock::new(state),
            seal_lock: Mutex::new(()),
            compact_lock: Mutex::new(()),
            index_cache: Mutex::new(Default::default()),
            incidents,
            damage,
            health: Mutex::new(WriteHealth::Ok),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &EmbeddedOptions {
        &self.options
    }

    /// Applies the configured retention ([`EmbeddedOptions::retention_ms`]) as of `now_ms`.
    /// Meant for a periodic call from the binary.
    /// Also drops resolved incidents older than [`EmbeddedOptions::incident_retention_ms`].
    pub fn apply_configured_retention(&self, now_ms: TimestampMs) -> Result<u64, StoreError> {
        self.incidents
            .prune_resolved(now_ms.saturating_sub(self.options.incident_retention_ms))?;
        self.apply_retention(now_ms.saturating_sub(self.options.retention_ms))
    }

    /// Writes one WAL record and applies it to memory, under the shared gate.
    fn log(&self, payload: &[u8], apply: impl FnOnce(&mut State)) -> Result<(), StoreError> {
        {
            let _gate = self.gate.read();
            let written = self.wal.append(payload);
            note_write(&self.health, &written);
            written?;
            apply(&mut self.state.write());
        }
        self.maybe_seal();
        Ok(())
    }

    /// Seals when the memtable is over its limits. Runs after the append was
    /// acknowledged-durable, so a failure here is logged, not returned: the data is safe
    /// in the WAL and in memory, and the next append or flush retries.
    fn maybe_seal(&self) {
        let due = {
            let st = self.state.read();
            st.mem.samples() >= self.options.memtable_max_samples
                || st.mem.span_ms() >= self.options.memtable_max_span_ms
        };
        if !due {
            return;
        }
        // Someone else is sealing: they will take care of it.
        let Some(guard) = self.seal_lock.try_lock() else { return };
        if let Err(e) = self.seal_locked(guard) {
            tracing::error!(dir = %self.dir.display(), error = %e, "sealing the memtable failed; data stays in the WAL, will retry");
        }
    }

    /// A segment's series index, loading it if needed; at most
    /// [`EmbeddedOptions::segment_index_cache`] stay loaded (least recently used out).
    fn segment_index(&self, seg: &Arc<Segment>) -> Result<Arc<segment::SeriesIndex>, StoreError> {
        let index = seg.index()?;
        let mut cache = self.index_cache.lock();
        cache.retain(|s| !Arc::ptr_eq(s, seg));
        cache.push_back(seg.clone());
        while cache.len() > self.options.segment_index_cache.max(1) {
            if let Some(old) = cache.pop_front() {
                old.unload_index();
            }
        }
        Ok(index)
    }

    /// Merges one run of small consecutive segments into one (see [`compact`] for the
    /// policy and why), if any qualifies; returns the number of segments merged (0: none
    /// qualified). Call it repeatedly in the background; appends, queries and seals go
    /// on meanwhile.
    pub fn compact_step(&self) -> Result<usize, StoreError> {
        let _compact = self.compact_lock.lock();
        let run: Vec<Arc<Segment>> = {
            let st = self.state.read();
            match compact::pick(
                &st.segments,
                self.options.compact_fanout,
                self.options.compact_max_span_ms,
            ) {
                Some((a, b)) => st.segments[a..b].to_vec(),
                None => return Ok(0),
            }
        };
        let merged = Arc::new(compact::merge(
            &self.dir,
            &run,
            self.options.chunk_max_samples,
            self.options.sync,
        )?);
        {
            // Only seals changed the list meanwhile (retention waits on compact_lock),
            // and they only append: the run is still where it was.
            let mut st = self.state.write();
            if let Some(at) = st.segments.iter().position(|s| Arc::ptr_eq(s, &run[0])) {
                st.segments.splice(at..at + run.len(), [merged.clone()]);
            }
        }
        {
            let mut cache = self.index_cache.lock();
            cache.retain(|s| !run.iter().any(|r| Arc::ptr_eq(r, s)));
        }
        // The newest input's file is the merged segment now; the others are redundant.
        // A crash before this is harmless: open removes them (`covers_from`).
        let Some((_, older)) = run.split_last() else {
            return Ok(0);
        };
        for seg in older {
            std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
        }
        if self.options.sync {
            sync_dir(&self.dir)?;
        }
        tracing::debug!(
            segments = run.len(),
            samples = merged.samples,
            id = merged.id,
            "compacted segments"
        );
        Ok(run.len())
    }

    fn seal_locked(&self, _guard: parking_lot::MutexGuard<'_, ()>) -> Result<(), StoreError> {
        // Finish a seal that failed earlier before starting a new one.
        let retry = self.state.read().pending.clone();
        if let Some(p) = retry {
            self.write_pending(&p)?;
        }
        let pending = {
            let _gate = self.gate.write();
            let mut st = self.state.write();
            let wal_upto = self.wal.rotate()?;
            let frozen = st.mem.freeze();
            let events = std::mem::take(&mut st.events);
            let segment_id = st.next_segment_id;
            st.next_segment_id += 1;
            let gpus = st.gpus.values().cloned().collect();
            let p = Arc::new(Pending {
                frozen,
                events,
                gpus,
                wal_upto,
                segment_id,
            });
            st.pending = Some(p.clone());
            p
        };
        self.write_pending(&pending)
    }

    fn write_pending(&self, p: &Pending) -> Result<(), StoreError> {
        // gpus.json first: once a segment says it covers a WAL file, that file's GPU
        // upserts must already be in gpus.json.
        write_gpus(&self.dir, p.wal_upto, &p.gpus, self.options.sync)?;
        let segment = if p.frozen.samples > 0 || !p.events.is_empty() {
            Some(Arc::new(segment::write(
                &self.dir,
                p.segment_id,
                p.wal_upto,
                &p.frozen,
                &p.events,
                self.options.chunk_max_samples,
                self.options.sync,
            )?))
        } else {
            None
        };
        {
            let mut st = self.state.write();
            st.segments.extend(segment);
            st.pending = None;
        }
        // The sealed WAL files are now redundant. A crash before this is harmless: open
        // deletes WAL files the segments cover.
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            if entry
                .file_name()
                .to_str()
                .and_then(wal::parse_name)
                .is_some_and(|s| s <= p.wal_upto)
            {
                std::fs::remove_file(entry.path()).map_err(io_err(&entry.path()))?;
            }
        }
        Ok(())
    }
}

/// Applies one replayed WAL record to the state. `gpus_newer`: whether the record's WAL
/// file is newer than `gpus.json` (older GPU upserts are in it already).
fn apply_record(state: &mut State, rec: record::Record, gpus_newer: bool) {
    match rec {
        record::Record::Samples(rows) => state.mem.insert_rows(&rows),
        record::Record::Events(evs) => state.events.extend(evs),
        record::Record::Gpus { seen_ms, gpus } if gpus_newer => {
            upsert_known(&mut state.gpus, &gpus, seen_ms);
        }
        record::Record::Gpus { .. } => {}
        record::Record::Page(parts) => {
            for p in parts {
                apply_record(state, p, gpus_newer);
            }
        }
    }
}

fn upsert_known(map: &mut HashMap<GpuUuid, KnownGpu>, gpus: &[GpuIdentity], seen_ms: TimestampMs) {
    for id in gpus {
        map.entry(id.uuid.clone())
            .and_modify(|k| {
                k.identity = id.clone();
                k.first_seen_ms = k.first_seen_ms.min(seen_ms);
                k.last_seen_ms = k.last_seen_ms.max(seen_ms);
            })
            .or_insert_with(|| KnownGpu {
                identity: id.clone(),
                first_seen_ms: seen_ms,
                last_seen_ms: seen_ms,
            });
    }
}

fn load_gpus(dir: &Path) -> Result<(u64, HashMap<GpuUuid, KnownGpu>), StoreError> {
    let path = dir.join(GPUS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, HashMap::new())),
        Err(e) => return Err(StoreError::Io { path, source: e }),
    };
    match serde_json::from_slice::<GpusFile>(&bytes) {
        Ok(f) => Ok((
            f.wal_upto,
            f.gpus.into_iter().map(|k| (k.identity.uuid.clone(), k)).collect(),
        )),
        Err(e) => {
            let err = StoreError::Corrupt {
                path: path.clone(),
                offset: 0,
                reason: e.to_string(),
            };
            quarantine(&path, &err)?;
            Ok((0, HashMap::new()))
        }
    }
}

fn write_gpus(dir: &Path, wal_upto: u64, gpus: &[KnownGpu], sync: bool) -> Result<(), StoreError> {
    let path = dir.join(GPUS_FILE);
    let tmp = dir.join(format!("{GPUS_FILE}.tmp"));
    let file = GpusFile {
        wal_upto,
        gpus: gpus.to_vec(),
    };
    let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Encoding {
        what: "gpus.json".into(),
        reason: e.to_string(),
    })?;
    {
        let f = File::create(&tmp).map_err(io_err(&tmp))?;
        use std::io::Write;
        (&f).write_all(&bytes).map_err(io_err(&tmp))?;
        if sync {
            f.sync_all().map_err(io_err(&tmp))?;
        }
    }
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

impl Store for EmbeddedStore {
    /// One WAL record (one CRC) for the whole page: after a crash it is there whole or
    /// not at all, and it becomes visible only once durable.
    fn append_page(&self, page: &PageWrite<'_>) -> Result<(), StoreError> {
        let has_rows = page.rows.iter().any(|r| !r.values.is_empty());
        if !has_rows && page.events.is_empty() && page.gpus.is_empty() {
            return Ok(());
        }
        let n: usize = page.rows.iter().map(|r| 64 + 10 * r.values.len()).sum();
        let mut payload = Vec::with_capacity(n + 1024);
        record::encode_page(page, &mut payload)?;
        self.log(&payload, |st| {
            if has_rows {
                st.mem.insert_rows(page.rows);
            }
            st.events.extend_from_slice(page.events);
            upsert_known(&mut st.gpus, page.gpus, page.seen_ms);
        })
    }

    fn write_health(&self) -> WriteHealth {
        self.health.lock().clone()
    }

    fn append_samples(&self, rows: &[GpuSamples]) -> Result<(), StoreError> {
        if rows.iter().all(|r| r.values.is_empty()) {
            return Ok(());
        }
        let n: usize = rows.iter().map(|r| 64 + 10 * r.values.len()).sum();
        let mut payload = Vec::with_capacity(n + 1024);
        record::encode_samples(rows, &mut payload);
        self.log(&payload, |st| st.mem.insert_rows(rows))
    }

    fn append_events(&self, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut payload = Vec::new();
        record::encode_events(events, &mut payload)?;
        self.log(&payload, |st| st.events.extend_from_slice(events))
    }

    fn upsert_gpus(&self, gpus: &[GpuIdentity], seen_ms: TimestampMs) -> Result<(), StoreError> {
        if gpus.is_empty() {
            return Ok(());
        }
        let mut payload = Vec::new();
        record::encode_gpus(gpus, seen_ms, &mut payload)?;
        self.log(&payload, |st| upsert_known(&mut st.gpus, gpus, seen_ms))
    }

    /// GPUs named by `upsert_gpus`, with first/last seen taken over their upserts and
    /// samples. A GPU that only ever had samples (no identity) is not listed: an identity
    /// needs at least its node, which samples do not carry.
    fn gpus(&self) -> Result<Vec<GpuRecord>, StoreError> {
        let st = self.state.read();
        let seen: HashMap<&GpuUuid, (TimestampMs, TimestampMs)> =
            st.mem.seen().map(|(u, first, last)| (u, (first, last))).collect();
        let mut out: Vec<GpuRecord> = st
            .gpus
            .values()
            .map(|k| {
                let (mut first, mut last) = (k.first_seen_ms, k.last_seen_ms);
                if let Some(&(f, l)) = seen.get(&k.identity.uuid) {
                    first = first.min(f);
                    last = last.max(l);
                }
                GpuRecord {
                    identity: k.identity.clone(),
                    first_seen_ms: first,
                    last_seen_ms: last,
                }
            })
            .collect();
        out.sort_by(|a, b| a.identity.uuid.cmp(&b.identity.uuid));
        Ok(out)
    }

    fn latest(&self, gpu: &GpuUuid) -> Result<Vec<(FieldName, Point)>, StoreError> {
        Ok(self.state.read().mem.latest(gpu))
    }

    fn range(
        &self,
        gpu: &GpuUuid,
        field: &FieldName,
        from: TimestampMs,
        to: TimestampMs,
        max_points: usize,
    ) -> Result<Vec<Point>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        // Copy what memory holds and pick the segments under the lock; decode outside it.
        let mut recent = Vec::new();
        let (segments, pending) = {
            let st = self.state.read();
            if let Some(buf) = st.mem.series(gpu, field) {
                buf.points_in(from, to, &mut recent);
            }
            let segs: Vec<Arc<Segment>> = st
                .segments
                .iter()
                .filter(|s| s.span.is_some_and(|(lo, hi)| hi >= from && lo < to))
                .cloned()
                .collect();
            (segs, st.pending.clone())
        };
        let mut points = Vec::new();
        for seg in &segments {
            let chunks = self.segment_index(seg)?.chunks(gpu, field);
            for c in chunks.iter().filter(|c| c.max_ts >= from && c.min_ts < to) {
                points.extend(
                    seg.read_chunk(c)?
                        .into_iter()
                        .filter(|p| p.ts_ms >= from && p.ts_ms < to),
                );
            }
        }
        if let Some(buf) = pending.as_ref().and_then(|p| p.frozen.series(gpu, field)) {
            buf.points_in(from, to, &mut points);
        }
        points.extend(recent);
        // Stable: sources were added oldest first, so duplicates keep arrival order.
        if !points.is_sorted_by_key(|p| p.ts_ms) {
            points.sort_by_key(|p| p.ts_ms);
        }
        // A re-append of the same (GPU, field, time) replaces the point (the trait's
        // contract): of equal times, the last to arrive is kept.
        let points = query::last_of_equal_times(points);
        Ok(query::downsample(points, from, to, max_points))
    }

    fn events(&self, gpu: Option<&GpuUuid>, from: TimestampMs, to: TimestampMs) -> Result<Vec<Event>, StoreError> {
        let keep = |e: &&Event| e.ts_ms >= from && e.ts_ms < to && gpu.is_none_or(|g| &e.gpu == g);
        let st = self.state.read();
        let sealed = st.segments.iter().flat_map(|s| s.events.iter());
        let pending = st.pending.iter().flat_map(|p| p.events.iter());
        let mut out: Vec<Event> = sealed
            .chain(pending)
            .chain(st.events.iter())
            .filter(keep)
            .cloned()
            .collect();
        out.sort_by_key(|e| e.ts_ms);
        Ok(out)
    }

    /// Deletes sealed segments whose samples and events are all older than `cutoff`;
    /// returns the number of samples they held. See the module docs for granularity.
    fn apply_retention(&self, cutoff: TimestampMs) -> Result<u64, StoreError> {
        let _compact = self.compact_lock.lock();
        let _seal = self.seal_lock.lock();
        let expired: Vec<Arc<Segment>> = {
            let mut st = self.state.write();
            let (old, keep): (Vec<_>, Vec<_>) = st
                .segments
                .drain(..)
                .partition(|s| s.span.is_none_or(|(_, hi)| hi < cutoff));
            st.segments = keep;
            old
        };
        let mut removed = 0;
        for seg in &expired {
            // Readers holding the Arc keep reading through their open descriptor.
            std::fs::remove_file(&seg.path).map_err(io_err(&seg.path))?;
            removed += seg.samples;
        }
        if !expired.is_empty() && self.options.sync {
            sync_dir(&self.dir)?;
        }
        if !expired.is_empty() {
            tracing::info!(
                segments = expired.len(),
                samples = removed,
                cutoff,
                "retention removed segments"
            );
        }
        Ok(removed)
    }

    fn upsert_incidents(&self, incidents: &[Incident]) -> Result<(), StoreError> {
        let written = self.incidents.upsert(incidents);
        note_write(&self.health, &written);
        written
    }

    fn incidents(&self) -> Result<Vec<Incident>, StoreError> {
        Ok(self.incidents.all())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let guard = self.seal_lock.lock();
        self.seal_locked(guard)
    }

    fn compact(&self) -> Result<usize, StoreError> {
        self.compact_step()
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut bytes_on_disk = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            // A file removed between listing and stat (a concurrent seal) just doesn't count.
            if let Ok(m) = entry.metadata() {
                if m.is_file() {
                    bytes_on_disk += m.len();
                }
            }
        }
        let st = self.state.read();
        // Every series with a latest point: counting them from the segments' indexes
        // cost a set of every (GPU, field) of every segment on each `/metrics` scrape.
        let series = st.mem.known_series();
        let mut samples = st.mem.samples();
        let mut events = st.events.len() as u64;
        if let Some(p) = &st.pending {
            samples += p.frozen.samples;
            events += p.events.len() as u64;
        }
        for seg in &st.segments {
            samples += seg.samples;
            events += seg.events.len() as u64;
        }
        let (damaged_records_skipped, damaged_bytes_skipped, damaged_files_kept) = self.damage.snapshot();
        Ok(StoreStats {
            bytes_on_disk,
            samples,
            series,
            events,
            damaged_records_skipped,
            damaged_bytes_skipped,
            damaged_files_kept,
        })
    }
}

// Compile-time check of the trait's thread-safety promise.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<EmbeddedStore>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::DcgmField;

    /// Segment indexes are read at open and dropped; queries load them again, and no
    /// more than `segment_index_cache` stay loaded however many segments a query spans.
    #[test]
    fn loaded_segment_indexes_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let options = EmbeddedOptions {
            memtable_max_samples: 10,
            segment_index_cache: 2,
            sync: false,
            ..EmbeddedOptions::default()
        };
        let gpu = GpuUuid::new("GPU-cache-0001");
        let field: FieldName = DcgmField::GpuTemp.into();
        {
            let s = EmbeddedStore::open(dir.path(), options.clone()).unwrap();
            for i in 0..100 {
                let mut row = GpuSamples::new(gpu.clone(), 1_000 * i);
                row.values.push((field.clone(), i as f64));
                s.append_samples(&[row]).unwrap();
            }
            s.flush().unwrap();
        }
        let s = EmbeddedStore::open(dir.path(), options).unwrap();
        let loaded = |s: &EmbeddedStore| s.state.read().segments.iter().filter(|g| g.index_loaded()).count();
        assert!(s.state.read().segments.len() >= 9);
        assert_eq!(loaded(&s), 0, "indexes are not kept after open");
        let points = s.range(&gpu, &field, 0, 1_000_000, usize::MAX).unwrap();
        assert_eq!(points.len(), 100);
        assert!(points.iter().enumerate().all(|(i, p)| p.value == i as f64));
        assert_eq!(loaded(&s), 2);
        // The latest points came from the indexes read at open.
        assert_eq!(s.latest(&gpu).unwrap()[0].1.value, 99.0);
    }
}
