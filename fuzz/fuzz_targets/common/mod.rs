//! Shared by the targets: what a parsed page feeds next.
//!
//! Every source (scrape, agent push, remote_write, the agent's nvidia-smi page) ends in
//! `Ingestor::ingest_page`: admission (time, identity and series bounds, impossible
//! values), the XID tracker, the live view. [`ingest`] runs a page through a real
//! `Ingestor` whose store checks the promise admission makes: nothing physically
//! impossible, and nothing stamped outside the time bounds, is ever written.

#![allow(dead_code)]

use gpuwarden_collect::dcgm::ExporterPage;
use gpuwarden_collect::validate;
use gpuwarden_model::{Clock, Event, FieldName, GpuIdentity, GpuSamples, GpuUuid, Incident, TimestampMs};
use gpuwarden_pipeline::{IngestLimits, Ingestor, LiveFleet, PipelineMetrics};
use gpuwarden_store::{GpuRecord, PageWrite, Point, Store, StoreError, StoreStats};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The receiver's clock in every target: 2025-01-01T00:00:00Z.
pub const NOW_MS: TimestampMs = 1_735_689_600_000;

pub struct FixedClock(pub TimestampMs);

impl Clock for FixedClock {
    fn now_ms(&self) -> TimestampMs {
        self.0
    }
}

/// A store that keeps nothing and checks what admission let through.
#[derive(Default)]
pub struct CheckingStore {
    pub samples: AtomicUsize,
}

impl CheckingStore {
    fn check_rows(&self, rows: &[GpuSamples]) {
        let limits = IngestLimits::default();
        for row in rows {
            assert!(
                row.ts_ms >= NOW_MS - limits.max_sample_age_ms && row.ts_ms <= NOW_MS + limits.max_clock_ahead_ms,
                "admission let through a row stamped {} (now {NOW_MS})",
                row.ts_ms
            );
            // One value per field in a row, and at most the series limit of them.
            let distinct: std::collections::HashSet<&FieldName> = row.values.iter().map(|(f, _)| f).collect();
            assert_eq!(distinct.len(), row.values.len(), "a stored row lists a field twice");
            assert!(
                row.values.len() <= limits.max_series_per_gpu,
                "admission let through a row of {} values",
                row.values.len()
            );
            for (field, value) in &row.values {
                if let FieldName::Dcgm(f) = field {
                    if let Err(e) = validate::check(*f, *value) {
                        panic!("admission let through an impossible value: {e}");
                    }
                }
            }
        }
        self.samples
            .fetch_add(rows.iter().map(|r| r.values.len()).sum(), Ordering::Relaxed);
    }
}

impl Store for CheckingStore {
    fn append_samples(&self, rows: &[GpuSamples]) -> Result<(), StoreError> {
        self.check_rows(rows);
        Ok(())
    }
    fn append_page(&self, page: &PageWrite<'_>) -> Result<(), StoreError> {
        self.check_rows(page.rows);
        Ok(())
    }
    fn append_events(&self, _events: &[Event]) -> Result<(), StoreError> {
        Ok(())
    }
    fn upsert_gpus(&self, _gpus: &[GpuIdentity], _seen_ms: TimestampMs) -> Result<(), StoreError> {
        Ok(())
    }
    fn gpus(&self) -> Result<Vec<GpuRecord>, StoreError> {
        Ok(Vec::new())
    }
    fn latest(&self, _gpu: &GpuUuid) -> Result<Vec<(FieldName, Point)>, StoreError> {
        Ok(Vec::new())
    }
    fn range(
        &self,
        _gpu: &GpuUuid,
        _field: &FieldName,
        _from: TimestampMs,
        _to: TimestampMs,
        _max_points: usize,
    ) -> Result<Vec<Point>, StoreError> {
        Ok(Vec::new())
    }
    fn events(&self, _gpu: Option<&GpuUuid>, _from: TimestampMs, _to: TimestampMs) -> Result<Vec<Event>, StoreError> {
        Ok(Vec::new())
    }
    fn upsert_incidents(&self, _incidents: &[Incident]) -> Result<(), StoreError> {
        Ok(())
    }
    fn incidents(&self) -> Result<Vec<Incident>, StoreError> {
        Ok(Vec::new())
    }
    fn apply_retention(&self, _cutoff: TimestampMs) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(StoreStats::default())
    }
}

/// Ingests each page (in order, same target) through a fresh `Ingestor` and checks the
/// reports: never more samples stored than the page held.
pub fn ingest(target: &str, pages: &[&ExporterPage]) {
    let store = Arc::new(CheckingStore::default());
    let live = Arc::new(LiveFleet::new(15_000));
    let ingestor = Ingestor::new(
        store.clone(),
        live,
        PipelineMetrics::default(),
        Arc::new(FixedClock(NOW_MS)),
    );
    for (i, page) in pages.iter().enumerate() {
        let report = ingestor
            .ingest_page(target, NOW_MS + i as i64, page)
            .expect("the checking store never fails");
        assert!(
            report.samples <= page.sample_count(),
            "stored {} samples of a page of {}",
            report.samples,
            page.sample_count()
        );
    }
}

/// Checks what the exporter mapping promises about a page: every value it placed in a
/// row is physically possible, and the counts add up.
pub fn check_mapped_page(page: &ExporterPage) {
    assert_eq!(page.summary.gpu_values, page.sample_count(), "gpu_values vs rows");
    assert!(page.summary.refused.len() <= page.summary.refused_total);
    assert!(page.summary.refused.len() <= validate::MAX_REFUSED_KEPT);
    assert!(
        page.summary.gpu_values + page.summary.refused_total + page.summary.duplicates + page.other.len()
            <= page.summary.parse.samples,
        "more values out of the mapping than samples into it"
    );
    for row in &page.rows {
        assert!(page.gpus.iter().any(|g| g.uuid == row.gpu), "row of an unknown GPU");
        for (field, value) in &row.values {
            if let FieldName::Dcgm(f) = field {
                if let Err(e) = validate::check(*f, *value) {
                    panic!("the mapping kept an impossible value: {e}");
                }
            }
        }
    }
}
