//! Applies scrape outcomes: writes samples, identities and events to the store, turns
//! the last-XID gauge into XID events, and updates the live view.
//!
//! Order matters for "nothing lost": samples go to the store first and only then into
//! the live view, so anything the API shows as ingested has been acknowledged by the
//! store. A store write that fails is counted and logged, and the scrape's GPUs are still
//! shown (their data is in the live view) — the failure is visible on `/metrics`.

use crate::analyze::Analysis;
use crate::live::LiveFleet;
use crate::metrics::{KindLabel, PipelineMetrics, TargetLabel};
use gpuwarden_collect::dcgm::ExporterPage;
use gpuwarden_collect::scrape::ScrapeOutcome;
use gpuwarden_collect::xid::XidTracker;
use gpuwarden_model::{Clock, Event, EventKind};
use gpuwarden_store::{Store, StoreError};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What one outcome produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IngestReport {
    pub samples: usize,
    pub events: Vec<Event>,
}

/// The ingest stage.
pub struct Ingestor {
    store: Arc<dyn Store>,
    live: Arc<LiveFleet>,
    metrics: PipelineMetrics,
    xid: Mutex<XidTracker>,
    clock: Arc<dyn Clock>,
    analysis: Option<Arc<Analysis>>,
}

impl Ingestor {
    pub fn new(store: Arc<dyn Store>, live: Arc<LiveFleet>, metrics: PipelineMetrics, clock: Arc<dyn Clock>) -> Self {
        Ingestor {
            store,
            live,
            metrics,
            xid: Mutex::new(XidTracker::default()),
            clock,
            analysis: None,
        }
    }

    /// Also feeds every page and its events to the analysis stage.
    pub fn with_analysis(mut self, analysis: Arc<Analysis>) -> Self {
        self.analysis = Some(analysis);
        self
    }

    /// Handles one scrape outcome. Blocking (store I/O): call it off the async runtime.
    pub fn handle(&self, outcome: &ScrapeOutcome) -> Result<IngestReport, StoreError> {
        let label = TargetLabel {
            target: outcome.target.url.clone(),
        };
        self.metrics.scrapes.get_or_create(&label).inc();
        self.metrics
            .scrape_duration
            .get_or_create(&label)
            .observe(outcome.duration.as_secs_f64());
        match &outcome.result {
            Ok(page) => {
                self.metrics.target_up.get_or_create(&label).set(1);
                self.ingest_page(&outcome.target.url, outcome.started_ms, page)
            }
            Err(e) => {
                self.metrics.target_up.get_or_create(&label).set(0);
                self.metrics.scrape_errors.get_or_create(&label).inc();
                tracing::warn!("{e}");
                self.live.mark_target_down(&outcome.target.url);
                Ok(IngestReport::default())
            }
        }
    }

    /// Ingests one parsed page from `target`, scraped at wall time `wall_ms`.
    pub fn ingest_page(&self, target: &str, wall_ms: i64, page: &ExporterPage) -> Result<IngestReport, StoreError> {
        let mut report = IngestReport::default();
        let mut events = self.xid.lock().observe_page(page);

        let result = (|| {
            if !page.gpus.is_empty() {
                let seen = page.rows.iter().map(|r| r.ts_ms).max().unwrap_or(wall_ms);
                self.store.upsert_gpus(&page.gpus, seen)?;
            }
            self.store.append_samples(&page.rows)?;
            Ok::<(), StoreError>(())
        })();
        if let Err(e) = &result {
            self.metrics.store_write_errors.inc();
            tracing::error!("writing scrape of {target} to the store: {e}");
        } else {
            report.samples = page.rows.iter().map(|r| r.values.len()).sum();
            self.metrics.samples_ingested.inc_by(report.samples as u64);
        }

        let change = self.live.apply_scrape(
            target,
            wall_ms,
            &page.gpus,
            page.rows.iter().map(|r| (&r.gpu, r.ts_ms, &r.values[..])),
        );
        let event_ts = page.rows.iter().map(|r| r.ts_ms).max().unwrap_or(wall_ms);
        for gone in change.disappeared {
            events.push(Event {
                gpu: gone.uuid.clone(),
                node: gone.node.clone(),
                ts_ms: event_ts,
                kind: EventKind::GpuDisappeared,
            });
        }
        for new in change.appeared {
            events.push(Event {
                gpu: new.uuid.clone(),
                node: new.node.clone(),
                ts_ms: event_ts,
                kind: EventKind::GpuAppeared,
            });
        }
        if !events.is_empty() {
            match self.store.append_events(&events) {
                Ok(()) => {
                    for e in &events {
                        self.metrics
                            .events_ingested
                            .get_or_create(&KindLabel {
                                kind: event_kind_name(&e.kind).to_string(),
                            })
                            .inc();
                    }
                }
                Err(e) => {
                    self.metrics.store_write_errors.inc();
                    tracing::error!("writing events of {target} to the store: {e}");
                }
            }
        }
        if let Some(analysis) = &self.analysis {
            analysis.observe(page, &events);
        }
        report.events = events;
        let (gpus, stale) = self.live.counts(self.clock.now_ms());
        self.metrics.gpus.set(gpus as i64);
        self.metrics.gpus_stale.set(stale as i64);
        result.map(|_| report)
    }

    /// Consumes outcomes until the channel closes.
    pub async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<ScrapeOutcome>) {
        while let Some(outcome) = rx.recv().await {
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.handle(&outcome)).await;
        }
    }

    /// Restores the XID tracker's memory of each GPU's last XID (saved by
    /// [`Ingestor::save_xid_state`]), so a restart does not report an XID that was
    /// already reported. A missing file is not an error; a damaged one is logged and
    /// ignored (the cost is one repeated XID event per GPU, never a lost one).
    pub fn load_xid_state(&self, path: &std::path::Path) {
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<XidTracker>(&bytes) {
                Ok(t) => *self.xid.lock() = t,
                Err(e) => tracing::warn!("ignoring damaged XID state {}: {e}", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("reading XID state {}: {e}", path.display()),
        }
    }

    /// Saves the XID tracker's state atomically (write to a temporary file, rename).
    pub fn save_xid_state(&self, path: &std::path::Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(&*self.xid.lock()).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }

    /// Refreshes gauges that change with time rather than with scrapes.
    pub fn refresh_gauges(&self) {
        let (gpus, stale) = self.live.counts(self.clock.now_ms());
        self.metrics.gpus.set(gpus as i64);
        self.metrics.gpus_stale.set(stale as i64);
        if let Ok(stats) = self.store.stats() {
            self.metrics.store_bytes.set(stats.bytes_on_disk);
        }
    }
}

/// Short name of an event kind, for metric labels.
pub fn event_kind_name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Xid { .. } => "xid",
        EventKind::XidCleared { .. } => "xid_cleared",
        EventKind::GpuDisappeared => "gpu_disappeared",
        EventKind::GpuAppeared => "gpu_appeared",
        EventKind::EccDbe { .. } => "ecc_dbe",
        EventKind::RemapFailure => "remap_failure",
        EventKind::ThrottleStart { .. } => "throttle_start",
        EventKind::ProcessStart { .. } => "process_start",
    }
}
