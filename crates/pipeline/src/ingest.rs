//! Applies scrape outcomes: admits each page (time bounds, identity and series limits),
//! turns the last-XID gauge into XID events, writes samples, identities and events to
//! the store, and only then updates the live view and feeds the analyzers.
//!
//! Order matters for "nothing lost, nothing half-applied": a page is admitted, then
//! written, and only a page the store acknowledged changes anything else — the live
//! view, the XID tracker's memory, the analyzers. A page whose write failed leaves no
//! trace but the error (counted on `/metrics`, logged, returned so a pusher retries): its
//! GPUs keep their previous data and go stale, shown `unknown`, never healthy on data
//! that was not stored.

use crate::admission::IngestLimits;
use crate::analyze::Analysis;
use crate::live::LiveFleet;
use crate::metrics::{KindLabel, PipelineMetrics, RefusalLabel, TargetLabel};
use gpuwarden_collect::dcgm::ExporterPage;
use gpuwarden_collect::scrape::ScrapeOutcome;
use gpuwarden_collect::xid::XidTracker;
use gpuwarden_model::{Clock, Event, EventKind};
use gpuwarden_store::{PageWrite, Store, StoreError};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What one outcome produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IngestReport {
    pub samples: usize,
    pub events: Vec<Event>,
    /// The newest stored row time per GPU of the page (after admission): what a
    /// deduplicating receiver may remember, and nothing admission refused.
    pub newest_rows: Vec<(gpuwarden_model::GpuUuid, i64)>,
}

/// The ingest stage.
pub struct Ingestor {
    store: Arc<dyn Store>,
    live: Arc<LiveFleet>,
    metrics: PipelineMetrics,
    xid: Mutex<XidTracker>,
    clock: Arc<dyn Clock>,
    /// The receiver's clock that sample timestamps are bounded by: the wall clock, or
    /// the simulator's when it runs faster than real time.
    time: Arc<dyn Clock>,
    limits: IngestLimits,
    analysis: Option<Arc<Analysis>>,
}

impl Ingestor {
    pub fn new(store: Arc<dyn Store>, live: Arc<LiveFleet>, metrics: PipelineMetrics, clock: Arc<dyn Clock>) -> Self {
        Ingestor {
            store,
            live,
            metrics,
            xid: Mutex::new(XidTracker::default()),
            time: clock.clone(),
            clock,
            limits: IngestLimits::default(),
            analysis: None,
        }
    }

    /// Bounds pages by these limits instead of the defaults.
    pub fn with_limits(mut self, limits: IngestLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Bounds sample timestamps by this clock instead of the wall clock: the simulated
    /// clock of a simulator running faster than real time.
    pub fn with_time_source(mut self, time: Arc<dyn Clock>) -> Self {
        self.time = time;
        self
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

    /// The sample times this receiver accepts now: `(oldest, newest)`, inclusive.
    pub fn time_bounds(&self) -> (i64, i64) {
        let now = self.time.now_ms();
        (
            now.saturating_sub(self.limits.max_sample_age_ms),
            now.saturating_add(self.limits.max_clock_ahead_ms),
        )
    }

    /// Admits events that arrive without a page (an agent's NVML or kernel-log events):
    /// drops those whose time is out of [`time_bounds`](Self::time_bounds), counts them
    /// against `target` like refused samples, and returns how many were dropped. An
    /// event stamped in 2100 would otherwise open incidents "in the future" and, read as
    /// the latest news of its GPU, hold every other condition of it open forever.
    pub fn admit_events(&self, target: &str, events: &mut Vec<Event>, wall_ms: i64) -> usize {
        let (oldest, newest) = self.time_bounds();
        let mut refused = crate::admission::Refused::default();
        events.retain(|e| {
            if e.ts_ms > newest {
                refused.add(crate::admission::Refusal::TooFarAhead, 1);
                false
            } else if e.ts_ms < oldest {
                refused.add(crate::admission::Refusal::TooOld, 1);
                false
            } else {
                true
            }
        });
        let dropped: u64 = refused.counts.values().sum();
        if dropped > 0 {
            refused.reasons.push(format!(
                "{dropped} event(s) refused: timestamps outside [{oldest}, {newest}] (check the sender's clock)"
            ));
            self.count_refused(target, &refused, wall_ms);
        }
        dropped as usize
    }

    fn count_refused(&self, target: &str, refused: &crate::admission::Refused, wall_ms: i64) {
        for (why, n) in &refused.counts {
            self.metrics
                .samples_refused
                .get_or_create(&RefusalLabel {
                    target: target.to_string(),
                    reason: why.as_str().to_string(),
                })
                .inc_by(*n);
        }
        for reason in &refused.reasons {
            tracing::warn!(target = %target, "{reason}");
        }
        self.live.record_refused(target, refused, wall_ms);
    }

    /// Ingests one parsed page from `target`, scraped (or received) at wall time
    /// `wall_ms`. The page is admitted (refusals counted against the target), written as
    /// one store write, and only once stored applied to the live view, the XID memory
    /// and the analyzers. On a store error nothing but the error counter changed.
    pub fn ingest_page(&self, target: &str, wall_ms: i64, page: &ExporterPage) -> Result<IngestReport, StoreError> {
        let admitted = self.live.admit(target, page, self.time.now_ms(), &self.limits);
        if !admitted.refused.is_empty() {
            self.count_refused(target, &admitted.refused, wall_ms);
        }
        let page: &ExporterPage = &admitted.page;

        let (mut events, staged_xid) = self.xid.lock().stage_page(page);
        let change = self.live.presence_preview(target, &page.gpus);
        let event_ts = page.rows.iter().map(|r| r.ts_ms).max().unwrap_or(wall_ms);
        for (list, kind) in [
            (&change.disappeared, EventKind::GpuDisappeared),
            (&change.appeared, EventKind::GpuAppeared),
        ] {
            events.extend(list.iter().map(|g| Event {
                gpu: g.uuid.clone(),
                node: g.node.clone(),
                ts_ms: event_ts,
                kind: kind.clone(),
            }));
        }

        let write = PageWrite {
            rows: &page.rows,
            events: &events,
            gpus: &page.gpus,
            seen_ms: event_ts,
        };
        if let Err(e) = self.store.append_page(&write) {
            self.metrics.store_write_errors.inc();
            tracing::error!("writing the page of {target} to the store: {e}");
            return Err(e);
        }
        self.xid.lock().commit(staged_xid);
        let samples = page.rows.iter().map(|r| r.values.len()).sum();
        self.metrics.samples_ingested.inc_by(samples as u64);
        for e in &events {
            self.metrics
                .events_ingested
                .get_or_create(&KindLabel {
                    kind: event_kind_name(&e.kind).to_string(),
                })
                .inc();
        }
        self.live.apply_scrape(
            target,
            wall_ms,
            &page.gpus,
            page.rows.iter().map(|r| (&r.gpu, r.ts_ms, &r.values[..])),
        );
        if let Some(analysis) = &self.analysis {
            analysis.observe(page, &events);
        }
        // The GPU gauges are refreshed when /metrics is read (`refresh_gauges`): counting
        // the fleet on every page would make a round of pages quadratic in fleet size.
        let mut newest_rows: Vec<(gpuwarden_model::GpuUuid, i64)> = Vec::new();
        for r in &page.rows {
            match newest_rows.last_mut() {
                Some((g, ts)) if *g == r.gpu => *ts = (*ts).max(r.ts_ms),
                _ => newest_rows.push((r.gpu.clone(), r.ts_ms)),
            }
        }
        Ok(IngestReport {
            samples,
            events,
            newest_rows,
        })
    }

    /// Consumes outcomes until the channel closes. Pages of one target are applied in
    /// order, pages of different targets on up to [`INGEST_LANES`] lanes at once: one
    /// page at a time paid a WAL fsync per page in sequence (a few ms each), so a round
    /// of 1,250 targets could not land within a 10 s interval; concurrent appends share
    /// one fsync (the store's group commit).
    pub async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<ScrapeOutcome>) {
        let mut lanes = Vec::with_capacity(INGEST_LANES);
        let mut tasks = Vec::with_capacity(INGEST_LANES);
        for _ in 0..INGEST_LANES {
            let (tx, mut lane) = mpsc::channel::<ScrapeOutcome>(16);
            let this = self.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(outcome) = lane.recv().await {
                    let this = this.clone();
                    let _ = tokio::task::spawn_blocking(move || this.handle(&outcome)).await;
                }
            }));
            lanes.push(tx);
        }
        while let Some(outcome) = rx.recv().await {
            let lane = lane_of(&outcome.target.url, lanes.len());
            if lanes[lane].send(outcome).await.is_err() {
                break;
            }
        }
        drop(lanes);
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Restores the XID tracker's memory of each GPU's last XID (saved by
    /// [`Ingestor::save_xid_state`]) from `docs` (the file `data_dir/xid-tracker.json`, or
    /// the PostgreSQL store's `state_docs`, shared by instances), so a restart does not
    /// report an XID that was already reported. A missing document is not an error; a
    /// damaged one is logged and ignored (the cost is one repeated XID event per GPU,
    /// never a lost one).
    pub fn load_xid_state(&self, docs: &dyn gpuwarden_store::docs::StateDocs) {
        match docs.get(XID_STATE_DOC) {
            Ok(Some(bytes)) => match serde_json::from_slice::<XidTracker>(&bytes) {
                Ok(t) => *self.xid.lock() = t,
                Err(e) => tracing::warn!("ignoring damaged XID state {}: {e}", docs.describe(XID_STATE_DOC)),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!("reading XID state {}: {e}", docs.describe(XID_STATE_DOC)),
        }
    }

    /// Saves the XID tracker's state to `docs`, replacing it whole.
    pub fn save_xid_state(&self, docs: &dyn gpuwarden_store::docs::StateDocs) -> Result<(), StoreError> {
        let json = serde_json::to_vec(&*self.xid.lock()).map_err(|e| StoreError::Encoding {
            what: "the XID tracker's state".into(),
            reason: e.to_string(),
        })?;
        docs.put(XID_STATE_DOC, &json)
    }

    /// Refreshes gauges that change with time rather than with scrapes.
    pub fn refresh_gauges(&self) {
        let (gpus, stale) = self.live.counts(self.clock.now_ms());
        self.metrics.gpus.set(gpus as i64);
        self.metrics.gpus_stale.set(stale as i64);
        if let Ok(stats) = self.store.stats() {
            self.metrics.store_bytes.set(stats.bytes_on_disk);
            self.metrics.store_samples.set(stats.samples);
            self.metrics.store_damaged_records.set(stats.damaged_records_skipped);
            self.metrics.store_damaged_files.set(stats.damaged_files_kept);
        }
        let failing = !matches!(self.store.write_health(), gpuwarden_store::WriteHealth::Ok);
        self.metrics.store_write_failing.set(i64::from(failing));
    }
}

/// Name of the XID tracker's state among the state documents (a file in `data_dir`).
pub const XID_STATE_DOC: &str = "xid-tracker.json";

/// Pages applied at once by [`Ingestor::run`] (of different targets).
pub const INGEST_LANES: usize = 8;

/// The lane of a target: always the same one, so its pages stay in order.
fn lane_of(target: &str, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    target.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_always_gets_the_same_lane_and_targets_spread_over_lanes() {
        let targets: Vec<String> = (0..400)
            .map(|i| format!("http://127.0.0.1:9400/nodes/{i}/metrics"))
            .collect();
        let mut used = [0usize; INGEST_LANES];
        for t in &targets {
            let lane = lane_of(t, INGEST_LANES);
            assert_eq!(lane, lane_of(t, INGEST_LANES));
            used[lane] += 1;
        }
        assert!(used.iter().all(|&n| n > 20), "{used:?}");
        assert_eq!(lane_of("x", 0), 0, "no lanes: never out of range");
    }
}
