//! Storage for samples, events, the GPU inventory and incidents.
//!
//! [`Store`] is the one interface the rest of gpuwarden uses. It says nothing about the
//! engine behind it: the embedded store (`embedded`, the default: one directory,
//! crash-safe, compressed) and the PostgreSQL store (`postgres`, feature `postgres`, on
//! by default: several instances can share it) implement it, and both pass the same
//! behaviour tests ([`conformance`]). [`open`] picks one from a [`StoreConfig`]; every
//! command opens its store through it.
//!
//! The trait is synchronous: implementations do blocking I/O, and async callers run them
//! on a blocking thread (`tokio::task::spawn_blocking`). That keeps analyzers and tests
//! free of an async runtime.

pub mod conformance;
pub mod docs;
pub mod embedded;
mod error;
pub mod pg_cluster;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod testing;

pub use error::StoreError;

use std::path::PathBuf;
use std::sync::Arc;

/// Which store to open, and its settings.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded store in `dir` (gpuwarden's default: `DATA_DIR/store`).
    Embedded {
        dir: PathBuf,
        options: embedded::EmbeddedOptions,
    },
    /// A PostgreSQL database (`[store] url`).
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresOptions),
}

impl StoreConfig {
    /// Where the store is, for messages (never a password).
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Embedded { dir, .. } => dir.display().to_string(),
            #[cfg(feature = "postgres")]
            StoreConfig::Postgres(o) => o.url.clone(),
        }
    }
}

/// Opens the configured store: the one factory every command uses, so that a
/// `[store] url` reaches `run`, `serve`, `train` and `forensics` alike.
pub fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    match config {
        StoreConfig::Embedded { dir, options } => Ok(Arc::new(embedded::EmbeddedStore::open(dir, options.clone())?)),
        #[cfg(feature = "postgres")]
        StoreConfig::Postgres(options) => Ok(Arc::new(postgres::PostgresStore::open(options)?)),
    }
}

use gpuwarden_model::{Event, FieldName, GpuIdentity, GpuSamples, GpuUuid, Incident, TimestampMs};
use serde::{Deserialize, Serialize};

/// One point of a series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub ts_ms: TimestampMs,
    pub value: f64,
}

/// A GPU known to the store, with the time it was last seen in any sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuRecord {
    pub identity: GpuIdentity,
    pub first_seen_ms: TimestampMs,
    pub last_seen_ms: TimestampMs,
}

/// Size and content figures, for `/metrics` and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Bytes the store occupies on disk (all files).
    pub bytes_on_disk: u64,
    /// Samples held (after retention).
    pub samples: u64,
    /// Number of (GPU, field) series the store knows (an implementation may count
    /// series whose samples retention already dropped; the embedded store does, as
    /// `latest` still reports them).
    pub series: u64,
    /// Events held.
    pub events: u64,
    /// Damaged records skipped when files were read at open (WAL, incident log): data
    /// that was lost. Zero on a healthy disk.
    #[serde(default)]
    pub damaged_records_skipped: u64,
    /// Bytes those damaged records (and damaged headers) occupied.
    #[serde(default)]
    pub damaged_bytes_skipped: u64,
    /// Damaged files kept as evidence (`*.corrupt`) before they were repaired.
    #[serde(default)]
    pub damaged_files_kept: u64,
}

/// What became of one incident handed to [`Store::write_incidents`].
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentWrite {
    /// Stored. `transition` is true when this write created the incident or changed its
    /// lifecycle state, severity or action in the store; false when the store already
    /// held that (another instance sharing the store wrote the same transition first),
    /// so this instance must not announce it again.
    Stored { transition: bool },
    /// Not stored: the store holds a version to adopt instead — another unresolved
    /// incident with the same dedup key (another instance opened it first), or a newer
    /// version of this same incident (acknowledged, or resolved after everything this
    /// copy knows of, on another instance). The caller takes it in place of its own, so
    /// that there is one incident per condition across instances and no instance writes
    /// another's acknowledgement or resolution away.
    Adopted(Box<Incident>),
}

/// Whether writes currently reach disk, for a readiness probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteHealth {
    /// The last write attempt succeeded (or none has failed yet).
    #[default]
    Ok,
    /// Writes have been failing since `since_ms` (Unix ms of the first failure of this
    /// run of failures); `error` is the latest failure, `failed_writes` how many calls
    /// failed since then. Cleared by the next write that succeeds.
    Failing {
        since_ms: TimestampMs,
        error: String,
        failed_writes: u64,
    },
}

/// One scrape page, written by [`Store::append_page`] as one unit.
#[derive(Debug, Clone, Copy)]
pub struct PageWrite<'a> {
    /// Sample rows of the page.
    pub rows: &'a [GpuSamples],
    /// Events derived from the page.
    pub events: &'a [Event],
    /// GPU identities seen on the page.
    pub gpus: &'a [GpuIdentity],
    /// When the GPUs were seen (the scrape time).
    pub seen_ms: TimestampMs,
}

/// The store. All methods are safe to call from many threads at once.
///
/// Contract: when `append_*` returns `Ok`, the data is durable — it survives a crash or
/// `kill -9` of the process immediately afterwards. Data is never silently dropped: a
/// write that cannot be made durable returns an error. A failed write does not stop later
/// ones: each write tries again (a full disk that is freed brings writes back), and
/// [`write_health`](Store::write_health) says whether writes are failing meanwhile.
///
/// A sample is keyed by (GPU, field, timestamp): appending the same key again replaces
/// its value (the last write wins) instead of adding a second point, so a batch that is
/// delivered twice (a retried push, a replayed queue) is stored once in effect. The
/// behaviour every implementation must show is written once in [`conformance`].
pub trait Store: Send + Sync {
    /// Appends rows of samples (each row: one GPU, one time, many fields).
    fn append_samples(&self, rows: &[GpuSamples]) -> Result<(), StoreError>;

    /// Appends a whole scrape page: its rows, events and GPU identities.
    ///
    /// Implementations should make it atomic (after a crash either the whole page is
    /// there or none of it); the embedded store writes it as one WAL record. This default
    /// calls [`append_samples`](Store::append_samples), [`append_events`](Store::append_events)
    /// and [`upsert_gpus`](Store::upsert_gpus) in turn and is **not atomic**: a failure
    /// between them leaves the page half applied.
    fn append_page(&self, page: &PageWrite<'_>) -> Result<(), StoreError> {
        self.append_samples(page.rows)?;
        self.append_events(page.events)?;
        self.upsert_gpus(page.gpus, page.seen_ms)
    }

    /// Whether writes currently reach disk (for a readiness probe). The default reports
    /// [`WriteHealth::Ok`]: implementations that can tell should override it.
    fn write_health(&self) -> WriteHealth {
        WriteHealth::Ok
    }

    /// Appends events.
    fn append_events(&self, events: &[Event]) -> Result<(), StoreError>;

    /// Records or updates GPUs' identities (labels can change: a new pod, a new driver).
    /// `seen_ms` is when they were seen.
    fn upsert_gpus(&self, gpus: &[GpuIdentity], seen_ms: TimestampMs) -> Result<(), StoreError>;

    /// Every GPU the store knows.
    fn gpus(&self) -> Result<Vec<GpuRecord>, StoreError>;

    /// The latest value of every field of a GPU, with its time.
    fn latest(&self, gpu: &GpuUuid) -> Result<Vec<(FieldName, Point)>, StoreError>;

    /// Points of one field of one GPU with `from <= ts < to`, oldest first. When more than
    /// `max_points` fall in the range they are downsampled to at most `max_points`
    /// (bucket averages, each stamped at its bucket's start).
    fn range(
        &self,
        gpu: &GpuUuid,
        field: &FieldName,
        from: TimestampMs,
        to: TimestampMs,
        max_points: usize,
    ) -> Result<Vec<Point>, StoreError>;

    /// Events with `from <= ts < to`, oldest first, of one GPU or (with `None`) of all.
    fn events(&self, gpu: Option<&GpuUuid>, from: TimestampMs, to: TimestampMs) -> Result<Vec<Event>, StoreError>;

    /// Records new versions of incidents: each is the whole incident, and the latest
    /// version of an id replaces the earlier ones. Durable on `Ok`, like the appends.
    fn upsert_incidents(&self, incidents: &[Incident]) -> Result<(), StoreError>;

    /// Like [`upsert_incidents`](Store::upsert_incidents), for stores that several
    /// instances share: one outcome per incident, in order. An active incident whose
    /// dedup key already has another active incident in the store is not written
    /// ([`IncidentWrite::Adopted`]), and a write that changes nothing the store did not
    /// already say is not a transition. The default (a store only one process writes)
    /// stores everything, every write a transition.
    fn write_incidents(&self, incidents: &[Incident]) -> Result<Vec<IncidentWrite>, StoreError> {
        self.upsert_incidents(incidents)?;
        Ok(incidents
            .iter()
            .map(|_| IncidentWrite::Stored { transition: true })
            .collect())
    }

    /// The handle to the PostgreSQL database behind this store, for the state other
    /// components keep beside it (notification outbox, silences) so that instances
    /// sharing the store share it too. `None` for a store of one process.
    #[cfg(feature = "postgres")]
    fn postgres(&self) -> Option<postgres::PgHandle> {
        None
    }

    /// The latest version of every incident held, ordered by id. Resolved incidents are
    /// held until the implementation's incident retention drops them; active ones always.
    fn incidents(&self) -> Result<Vec<Incident>, StoreError>;

    /// Drops data older than `cutoff`. Returns how many samples were removed.
    fn apply_retention(&self, cutoff: TimestampMs) -> Result<u64, StoreError>;

    /// Makes everything appended so far durable and compacts in-memory buffers to disk.
    fn flush(&self) -> Result<(), StoreError>;

    /// Size and content figures.
    fn stats(&self) -> Result<StoreStats, StoreError>;

    /// One step of background maintenance that keeps on-disk size and memory close to
    /// what the data needs (the embedded store merges small segments). Returns how much
    /// work was done (0: nothing to do, call again later). Blocking; may take seconds.
    fn compact(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}
