//! A [`Store`] test double that fails on demand, for tests of the code that writes to a
//! store (the pipeline's retry and readiness logic).
//!
//! [`FailingStore`] wraps any `Arc<dyn Store>`, forwards every call to it, counts the
//! calls of each write operation, and can be told to fail the next N calls of an
//! operation with a [`StoreError::Io`] (kind `StorageFull`, like ENOSPC) without
//! forwarding them. Always compiled (it is small) so other crates can use it in tests.
//!
//! ```
//! use gpuwarden_store::testing::{FailingStore, Op};
//! use gpuwarden_store::Store;
//! # fn demo(inner: std::sync::Arc<dyn Store>) {
//! let store = FailingStore::new(inner);
//! store.fail_next(Op::AppendPage, 2);
//! // The next two `append_page` calls return Err; the third goes through.
//! assert_eq!(store.calls(Op::AppendPage), 0);
//! # }
//! ```

use crate::{GpuRecord, PageWrite, Point, Store, StoreError, StoreStats, WriteHealth};
use gpuwarden_model::{Event, FieldName, GpuIdentity, GpuSamples, GpuUuid, Incident, TimestampMs};
use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;

/// A write operation of [`Store`] that [`FailingStore`] can fail and counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    AppendPage,
    AppendSamples,
    AppendEvents,
    UpsertGpus,
    UpsertIncidents,
    Flush,
}

const OPS: usize = 6;

#[derive(Debug, Default)]
struct Counters {
    /// Calls seen per op (failed ones included).
    calls: [u64; OPS],
    /// Calls still to fail per op.
    fail: [u64; OPS],
    /// Calls failed per op.
    failed: [u64; OPS],
    /// The write health its injected failures imply (like the embedded store's: set by
    /// a failure, cleared by the next write that succeeds).
    health: WriteHealth,
}

/// A [`Store`] wrapper that fails chosen operations on demand. See the module docs.
pub struct FailingStore {
    inner: Arc<dyn Store>,
    counters: Mutex<Counters>,
}

impl std::fmt::Debug for FailingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailingStore")
            .field("counters", &*self.counters.lock())
            .finish_non_exhaustive()
    }
}

impl FailingStore {
    /// Wraps `inner`; nothing fails until [`fail_next`](Self::fail_next) is called.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        FailingStore {
            inner,
            counters: Mutex::new(Counters::default()),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }

    /// Makes the next `n` calls of `op` fail (replacing any earlier count for `op`).
    pub fn fail_next(&self, op: Op, n: u64) {
        self.counters.lock().fail[op as usize] = n;
    }

    /// Calls of `op` so far, failed ones included.
    pub fn calls(&self, op: Op) -> u64 {
        self.counters.lock().calls[op as usize]
    }

    /// Calls of `op` that were failed on purpose.
    pub fn failed(&self, op: Op) -> u64 {
        self.counters.lock().failed[op as usize]
    }

    /// Counts a call; `Err` when it is to fail.
    fn enter(&self, op: Op) -> Result<(), StoreError> {
        let mut c = self.counters.lock();
        let i = op as usize;
        c.calls[i] += 1;
        if c.fail[i] == 0 {
            return Ok(());
        }
        c.fail[i] -= 1;
        c.failed[i] += 1;
        let error = format!("injected failure of {op:?} (FailingStore::fail_next)");
        c.health = match std::mem::take(&mut c.health) {
            WriteHealth::Failing {
                since_ms,
                failed_writes,
                ..
            } => WriteHealth::Failing {
                since_ms,
                error: error.clone(),
                failed_writes: failed_writes + 1,
            },
            WriteHealth::Ok => WriteHealth::Failing {
                since_ms: now_ms(),
                error: error.clone(),
                failed_writes: 1,
            },
        };
        Err(StoreError::Io {
            path: PathBuf::from("<FailingStore>"),
            source: std::io::Error::new(std::io::ErrorKind::StorageFull, error),
        })
    }

    /// Forwards a write that was not failed; its success clears the injected health.
    fn forward(&self, op: Op, write: impl FnOnce() -> Result<(), StoreError>) -> Result<(), StoreError> {
        self.enter(op)?;
        let r = write();
        if r.is_ok() {
            self.counters.lock().health = WriteHealth::Ok;
        }
        r
    }
}

fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as TimestampMs)
}

impl Store for FailingStore {
    fn append_page(&self, page: &PageWrite<'_>) -> Result<(), StoreError> {
        self.forward(Op::AppendPage, || self.inner.append_page(page))
    }

    /// The injected failures' health while they last, else the wrapped store's.
    fn write_health(&self) -> WriteHealth {
        match &self.counters.lock().health {
            WriteHealth::Ok => self.inner.write_health(),
            failing => failing.clone(),
        }
    }

    fn append_samples(&self, rows: &[GpuSamples]) -> Result<(), StoreError> {
        self.forward(Op::AppendSamples, || self.inner.append_samples(rows))
    }

    fn append_events(&self, events: &[Event]) -> Result<(), StoreError> {
        self.forward(Op::AppendEvents, || self.inner.append_events(events))
    }

    fn upsert_gpus(&self, gpus: &[GpuIdentity], seen_ms: TimestampMs) -> Result<(), StoreError> {
        self.forward(Op::UpsertGpus, || self.inner.upsert_gpus(gpus, seen_ms))
    }

    fn gpus(&self) -> Result<Vec<GpuRecord>, StoreError> {
        self.inner.gpus()
    }

    fn latest(&self, gpu: &GpuUuid) -> Result<Vec<(FieldName, Point)>, StoreError> {
        self.inner.latest(gpu)
    }

    fn range(
        &self,
        gpu: &GpuUuid,
        field: &FieldName,
        from: TimestampMs,
        to: TimestampMs,
        max_points: usize,
    ) -> Result<Vec<Point>, StoreError> {
        self.inner.range(gpu, field, from, to, max_points)
    }

    fn events(&self, gpu: Option<&GpuUuid>, from: TimestampMs, to: TimestampMs) -> Result<Vec<Event>, StoreError> {
        self.inner.events(gpu, from, to)
    }

    fn upsert_incidents(&self, incidents: &[Incident]) -> Result<(), StoreError> {
        self.forward(Op::UpsertIncidents, || self.inner.upsert_incidents(incidents))
    }

    fn incidents(&self) -> Result<Vec<Incident>, StoreError> {
        self.inner.incidents()
    }

    fn apply_retention(&self, cutoff: TimestampMs) -> Result<u64, StoreError> {
        self.inner.apply_retention(cutoff)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.forward(Op::Flush, || self.inner.flush())
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats()
    }

    fn compact(&self) -> Result<usize, StoreError> {
        self.inner.compact()
    }
}
