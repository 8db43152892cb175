//! The pipeline's own metrics (exposed on `/metrics`): samples ingested, scrape
//! duration and errors per target, samples refused, store write failures and damage,
//! GPUs by freshness.
//!
//! Names follow `gpuwarden_<subject>_<unit>[_total]`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabel {
    pub target: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

fn scrape_duration_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
}

/// Every metric the pipeline updates.
#[derive(Clone)]
pub struct PipelineMetrics {
    pub samples_ingested: Counter,
    pub events_ingested: Family<KindLabel, Counter>,
    pub scrapes: Family<TargetLabel, Counter>,
    pub scrape_errors: Family<TargetLabel, Counter>,
    pub scrape_duration: Family<TargetLabel, Histogram, fn() -> Histogram>,
    pub target_up: Family<TargetLabel, Gauge>,
    pub store_write_errors: Counter,
    /// Samples refused at admission, per target and reason.
    pub samples_refused: Family<RefusalLabel, Counter>,
    pub gpus: Gauge,
    pub gpus_stale: Gauge,
    pub store_bytes: Gauge<u64, AtomicU64>,
    /// Samples the store holds (with `store_bytes`: bytes per sample, live).
    pub store_samples: Gauge<u64, AtomicU64>,
    /// 1 while the store's writes are failing (cleared by the next write that succeeds).
    pub store_write_failing: Gauge,
    /// Damaged records the store skipped when reading its files (a flipped byte, a
    /// torn write), since it opened.
    pub store_damaged_records: Gauge<u64, AtomicU64>,
    /// Damaged files the store set aside (kept as `.corrupt` copies) since it opened.
    pub store_damaged_files: Gauge<u64, AtomicU64>,
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        PipelineMetrics {
            samples_ingested: Counter::default(),
            events_ingested: Family::default(),
            scrapes: Family::default(),
            scrape_errors: Family::default(),
            scrape_duration: Family::new_with_constructor(scrape_duration_histogram),
            target_up: Family::default(),
            store_write_errors: Counter::default(),
            samples_refused: Family::default(),
            gpus: Gauge::default(),
            gpus_stale: Gauge::default(),
            store_bytes: Gauge::default(),
            store_samples: Gauge::default(),
            store_write_failing: Gauge::default(),
            store_damaged_records: Gauge::default(),
            store_damaged_files: Gauge::default(),
        }
    }
}

impl PipelineMetrics {
    /// Registers every metric under the `gpuwarden` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("gpuwarden");
        r.register(
            "samples_ingested",
            "Samples written to the store",
            self.samples_ingested.clone(),
        );
        r.register(
            "events_ingested",
            "Events written to the store, by kind",
            self.events_ingested.clone(),
        );
        r.register("scrapes", "Scrapes attempted, per target", self.scrapes.clone());
        r.register(
            "scrape_errors",
            "Scrapes that failed, per target",
            self.scrape_errors.clone(),
        );
        r.register(
            "scrape_duration_seconds",
            "Duration of scrapes, per target",
            self.scrape_duration.clone(),
        );
        r.register(
            "target_up",
            "1 when the target's last scrape succeeded",
            self.target_up.clone(),
        );
        r.register(
            "store_write_errors",
            "Writes to the store that failed (data was not acknowledged)",
            self.store_write_errors.clone(),
        );
        r.register(
            "samples_refused",
            "Samples refused at admission (timestamp out of bounds, GPU or series limit, impossible value), per target and reason",
            self.samples_refused.clone(),
        );
        r.register("gpus", "GPUs known to the live view", self.gpus.clone());
        r.register(
            "gpus_stale",
            "GPUs whose data is stale (shown as unknown)",
            self.gpus_stale.clone(),
        );
        r.register(
            "store_size_bytes",
            "Bytes the store occupies on disk",
            self.store_bytes.clone(),
        );
        r.register(
            "store_samples",
            "Samples the store holds (store_size_bytes / store_samples: bytes per sample)",
            self.store_samples.clone(),
        );
        r.register(
            "store_write_failing",
            "1 while the store's writes fail (disk full, I/O error); /readyz answers 503 then",
            self.store_write_failing.clone(),
        );
        r.register(
            "store_damaged_records",
            "Damaged records (flipped bytes, torn writes) the store skipped while reading its files",
            self.store_damaged_records.clone(),
        );
        r.register(
            "store_damaged_files",
            "Damaged store files kept aside as .corrupt copies",
            self.store_damaged_files.clone(),
        );
    }
}
