//! The analysis stage: feeds scraped rows and events to the health engine, evaluates the
//! fleet on a timer, turns the active findings into incidents, and persists what changed
//! (incidents, and the health scores as ordinary samples so their history is queryable
//! like any series).
//!
//! Analyzers are pure; this stage is the thin layer that gives them data and time and
//! stores their results. Time is data time (the newest sample's timestamp, moved on by
//! wall time while no data arrives), so simulations at `--speed` behave like real time —
//! but never ahead of the receiver's clock (the wall clock, or the simulator's when it
//! runs faster than real time): one source's claim about the time cannot move it.
//!
//! An incident change is visible (API, sinks) only once persisted: when the store
//! refuses the write, the incident engine is rebuilt from what the store holds (as after
//! a restart) and the next evaluation tries again.

use crate::live::LiveFleet;
use gpuwarden_collect::dcgm::ExporterPage;
use gpuwarden_detect::{Evaluation, HealthEngine, HealthRules, XidCatalog};
use gpuwarden_incident::{ChangeKind, CorrelationRules, IncidentChange, IncidentConfig, IncidentEngine, IncidentError};
use gpuwarden_model::{Analyzer, Clock, Dimension, Event, FieldName, GpuSamples, Incident, TimestampMs};
use gpuwarden_store::{Store, StoreError};
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;

/// Field name under which a GPU's overall health score is stored.
pub const SCORE_FIELD: &str = "gpuwarden_health_score";

/// Field name under which one dimension's score is stored.
pub fn dimension_field(d: Dimension) -> String {
    format!("gpuwarden_health_{}", d.as_str())
}

/// Why an incident action from the API failed.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    #[error(transparent)]
    Incident(#[from] IncidentError),
    #[error("saving the incident: {0}")]
    Store(#[from] StoreError),
}

/// Receives every notable incident change (opened, escalated, flapped, reopened,
/// acknowledged, resolved) after it has been persisted — e.g. the notification outbox.
/// Called synchronously from the evaluation; keep it quick (enqueue, do not send).
pub trait IncidentSink: Send + Sync {
    fn incidents_changed(&self, changes: &[IncidentChange]);
}

/// What [`Analysis::restore_health`] read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    pub gpus: usize,
    /// Latest values fed back (counter baselines among them).
    pub values: usize,
    /// Events of the repeat window fed back.
    pub events: usize,
}

struct DataClock {
    data_ms: TimestampMs,
    wall_at_data_ms: TimestampMs,
}

/// Health engine + incident engine, fed by the ingest stage.
pub struct Analysis {
    health: Mutex<HealthEngine>,
    incidents: Mutex<IncidentEngine>,
    latest: RwLock<Arc<Evaluation>>,
    store: Arc<dyn Store>,
    live: Arc<LiveFleet>,
    clock: Arc<dyn Clock>,
    /// Upper bound of data time: the receiver's clock.
    time: Arc<dyn Clock>,
    incident_config: IncidentConfig,
    /// Which findings share a cause (kept to rebuild the engine after a failed write).
    correlation: CorrelationRules,
    data_clock: Mutex<DataClock>,
    analyzers: Mutex<Vec<Box<dyn Analyzer>>>,
    sinks: RwLock<Vec<Arc<dyn IncidentSink>>>,
    /// Bumped after every evaluation and incident action (for readers' caches).
    generation: std::sync::atomic::AtomicU64,
    /// Wall time of each evaluation, and GPUs in the last one (`/metrics`).
    eval_seconds: prometheus_client::metrics::histogram::Histogram,
    eval_gpus: prometheus_client::metrics::gauge::Gauge,
}

impl Analysis {
    /// Builds the stage; incidents are loaded from the store so they survive restarts.
    pub fn new(
        store: Arc<dyn Store>,
        live: Arc<LiveFleet>,
        clock: Arc<dyn Clock>,
        rules: HealthRules,
        catalog: XidCatalog,
        incident_config: IncidentConfig,
    ) -> Result<Self, StoreError> {
        let existing = store.incidents()?;
        let wall = clock.now_ms();
        Ok(Analysis {
            health: Mutex::new(HealthEngine::new(rules, catalog)),
            incidents: Mutex::new(IncidentEngine::new(incident_config.clone(), existing)),
            incident_config,
            correlation: CorrelationRules::builtin(),
            time: clock.clone(),
            latest: RwLock::new(Arc::new(Evaluation::default())),
            store,
            live,
            data_clock: Mutex::new(DataClock {
                data_ms: 0,
                wall_at_data_ms: wall,
            }),
            clock,
            analyzers: Mutex::new(Vec::new()),
            sinks: RwLock::new(Vec::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            eval_seconds: prometheus_client::metrics::histogram::Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            eval_gpus: Default::default(),
        })
    }

    /// Registers `gpuwarden_evaluation_duration_seconds` (every evaluation: health rules,
    /// analyzers, incidents, storing scores) and `gpuwarden_evaluation_gpus`, so the cost
    /// of scoring per GPU can be read from a running instance.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        let r = registry.sub_registry_with_prefix("gpuwarden");
        r.register(
            "evaluation_duration_seconds",
            "Wall time of each fleet evaluation (health rules, analyzers, incidents, storing scores)",
            self.eval_seconds.clone(),
        );
        r.register(
            "evaluation_gpus",
            "GPUs scored by the last fleet evaluation",
            self.eval_gpus.clone(),
        );
    }

    /// Rebuilds what the health engine remembers from the store, after a restart: every
    /// known GPU's identity and last stored values (the baselines of its counters, so a
    /// counter that rose while gpuwarden was down shows as an increase, not as a first
    /// reading) and the events of the XID repeat window before the last data (episodes
    /// for escalation, cleared codes, GPUs that vanished). Call once, before the first
    /// scrape. The GPUs stay `unknown` until fresh data arrives (the live view says they
    /// are stale); the other analyzers start empty.
    pub fn restore_health(&self) -> Result<Restored, StoreError> {
        let records = self.store.gpus()?;
        let Some(last_data) = records.iter().map(|r| r.last_seen_ms).max() else {
            return Ok(Restored::default());
        };
        let mut out = Restored {
            gpus: records.len(),
            ..Restored::default()
        };
        let mut health = self.health.lock();
        let window = i64::from(health.rules().xid.repeat_window_days) * 86_400_000;
        for r in &records {
            health.observe_identity(&r.identity);
            // The latest point of each field, as rows in time order (fields can have
            // their latest points at different times).
            let mut rows: std::collections::BTreeMap<TimestampMs, Vec<(FieldName, f64)>> = Default::default();
            for (name, p) in self.store.latest(&r.identity.uuid)? {
                if matches!(name, FieldName::Dcgm(_)) {
                    rows.entry(p.ts_ms).or_default().push((name, p.value));
                }
            }
            for (ts_ms, values) in rows {
                out.values += values.len();
                health.observe_row(&GpuSamples {
                    gpu: r.identity.uuid.clone(),
                    ts_ms,
                    values,
                });
            }
        }
        let events = self
            .store
            .events(None, last_data.saturating_sub(window), last_data.saturating_add(1))?;
        for e in &events {
            health.observe_event(e);
        }
        out.events = events.len();
        Ok(out)
    }

    /// Bounds data time by this clock instead of the wall clock: the simulated clock of
    /// a simulator running faster than real time.
    pub fn with_time_source(mut self, time: Arc<dyn Clock>) -> Self {
        self.time = time;
        self
    }

    /// Groups findings with these correlation rules instead of the built-in ones
    /// (`[incidents] correlation_rules`; [`CorrelationRules::none`] for one incident per
    /// rule and GPU).
    pub fn with_correlation(mut self, rules: CorrelationRules) -> Self {
        let engine = std::mem::replace(
            self.incidents.get_mut(),
            IncidentEngine::new(self.incident_config.clone(), Vec::new()),
        );
        *self.incidents.get_mut() = engine.with_correlation(rules.clone());
        self.correlation = rules;
        self
    }

    /// A number that changes whenever new data reached the live view (a scrape or push
    /// applied, a target down): the evaluation loop evaluates soon after it moves.
    pub fn data_generation(&self) -> u64 {
        self.live.generation()
    }

    /// A number that changes after every evaluation and incident action.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Registers another analyzer (security rules, anomaly detection, …): it sees every
    /// identity, row and event the health engine sees, and its findings become incidents.
    pub fn add_analyzer(&self, analyzer: Box<dyn Analyzer>) {
        self.analyzers.lock().push(analyzer);
    }

    /// Registers a receiver of notable incident changes.
    pub fn add_incident_sink(&self, sink: Arc<dyn IncidentSink>) {
        self.sinks.write().push(sink);
    }

    /// Feeds a scraped page and the events derived from it.
    pub fn observe(&self, page: &ExporterPage, events: &[Event]) {
        self.health.lock().observe_page(&page.gpus, &page.rows, events);
        for a in self.analyzers.lock().iter_mut() {
            a.observe_page(&page.gpus, &page.rows, events);
        }
        if let Some(ts) = page.rows.iter().map(|r| r.ts_ms).max() {
            let mut c = self.data_clock.lock();
            if ts > c.data_ms {
                c.data_ms = ts;
                c.wall_at_data_ms = self.clock.now_ms();
            }
        }
    }

    /// Events that do not come with a page (a GPU that vanished).
    pub fn observe_events(&self, events: &[Event]) {
        let mut health = self.health.lock();
        for e in events {
            health.observe_event(e);
        }
        drop(health);
        for a in self.analyzers.lock().iter_mut() {
            for e in events {
                a.observe_event(e);
            }
        }
    }

    /// "Now" in data time, never ahead of the receiver's clock.
    pub fn now_ms(&self) -> TimestampMs {
        let c = self.data_clock.lock();
        let limit = self.time.now_ms();
        if c.data_ms == 0 {
            return self.clock.now_ms().min(limit);
        }
        c.data_ms
            .saturating_add((self.clock.now_ms() - c.wall_at_data_ms).max(0))
            .min(limit)
    }

    /// Puts the incident engine back to what the store holds, after a failed persist:
    /// the change that could not be saved is neither shown nor notified, and the next
    /// evaluation derives it again.
    fn reload_incidents(&self, engine: &mut IncidentEngine) {
        match self.store.incidents() {
            Ok(existing) => {
                *engine = IncidentEngine::new(self.incident_config.clone(), existing)
                    .with_correlation(self.correlation.clone())
            }
            Err(e) => tracing::error!("reloading incidents after a failed write: {e}"),
        }
    }

    /// Evaluates the fleet, updates incidents and persists changes, and publishes the
    /// evaluation (also when a write failed; the error is returned after). Blocking.
    pub fn evaluate(&self) -> Result<Arc<Evaluation>, StoreError> {
        let started = std::time::Instant::now();
        let result = self.evaluate_timed();
        self.eval_seconds.observe(started.elapsed().as_secs_f64());
        result
    }

    fn evaluate_timed(&self) -> Result<Arc<Evaluation>, StoreError> {
        let now = self.now_ms();
        let wall = self.clock.now_ms();
        let live = self.live.clone();
        let freshness = |gpu: &gpuwarden_model::GpuUuid| live.freshness(gpu, wall);
        let mut evaluation = self.health.lock().evaluate(now, &freshness);
        // Every other registered analyzer (security, anomaly, prediction) adds its findings;
        // they become incidents exactly like the health engine's.
        for a in self.analyzers.lock().iter_mut() {
            evaluation.findings.extend(a.evaluate(now, &freshness));
        }
        // Targets whose GPUs all vanished, or whose pages are being refused.
        evaluation
            .findings
            .extend(crate::targets::findings(&self.live, now, wall));
        // An incident resolves only on fresh data about its own GPU (or, for a node, one
        // of its GPUs): a GPU that went stale, or that has sent nothing since a restart, is
        // neither present nor absent, so its incidents are held, not auto-resolved.
        let fresh_nodes = live.nodes_with_fresh_gpus(wall);
        let unknown = |inc: &Incident| match &inc.gpu {
            Some(gpu) => live.freshness(gpu, wall) != gpuwarden_model::Freshness::Fresh,
            None => !fresh_nodes.contains(&inc.node),
        };
        let mut engine = self.incidents.lock();
        let mut changes = engine.apply_changes_holding(now, &evaluation.findings, &unknown);
        self.attach_changed_before(&mut engine, &mut changes);
        // A failed write does not stop the evaluation from being published: the health
        // view is derived from what was stored and must age (stale → unknown) while the
        // store is down, not freeze on the last evaluation that wrote cleanly. The first
        // failure is returned after publishing.
        let mut failure: Option<StoreError> = None;
        if !changes.is_empty() {
            let changed: Vec<Incident> = changes.iter().map(|c| c.incident.clone()).collect();
            match self.store.write_incidents(&changed) {
                Err(e) => {
                    // Not persisted, so not applied and not announced: the next
                    // evaluation derives the same changes again and retries.
                    self.reload_incidents(&mut engine);
                    failure = Some(e);
                    drop(engine);
                }
                Ok(outcomes) => {
                    // Instances sharing the store: adopt the incident another one opened
                    // for the same condition, and announce only the transitions this
                    // write made (another instance announced the others).
                    for (c, outcome) in changes.iter_mut().zip(outcomes) {
                        match outcome {
                            gpuwarden_store::IncidentWrite::Stored { transition: true } => {}
                            gpuwarden_store::IncidentWrite::Stored { transition: false } => {
                                c.kinds.retain(|k| !k.is_notable());
                            }
                            gpuwarden_store::IncidentWrite::Adopted(winner) => {
                                tracing::debug!(loser = %c.incident.id, winner = %winner.id, "adopted the incident another instance opened");
                                c.incident = engine.adopt(&c.incident.id, *winner);
                                c.kinds.retain(|k| !k.is_notable());
                            }
                        }
                    }
                    drop(engine);
                    // Only after they are persisted: a notification never announces an
                    // incident that a crash could make disappear.
                    let notable: Vec<IncidentChange> = changes.into_iter().filter(|c| c.is_notable()).collect();
                    if !notable.is_empty() {
                        for sink in self.sinks.read().iter() {
                            sink.incidents_changed(&notable);
                        }
                    }
                }
            }
        } else {
            drop(engine);
        }
        let rows: Vec<GpuSamples> = evaluation
            .gpus
            .iter()
            .filter_map(|g| {
                let score = g.score?;
                let mut values = vec![(FieldName::Other(SCORE_FIELD.into()), score)];
                for (d, v) in &g.dimensions {
                    if let Some(v) = v {
                        values.push((FieldName::Other(dimension_field(*d).into()), *v));
                    }
                }
                Some(GpuSamples {
                    gpu: g.uuid.clone(),
                    ts_ms: now,
                    values,
                })
            })
            .collect();
        if let Err(e) = self.store.append_samples(&rows) {
            // Score history has a gap; the scores themselves are still right.
            failure.get_or_insert(e);
        }
        self.eval_gpus.set(evaluation.gpus.len() as i64);
        let evaluation = Arc::new(evaluation);
        *self.latest.write() = evaluation.clone();
        self.bump();
        match failure {
            Some(e) => Err(e),
            None => Ok(evaluation),
        }
    }

    /// Gives each newly opened incident its "what changed before" timeline from the
    /// store. A read that fails leaves the timeline empty (the incident matters more).
    fn attach_changed_before(&self, engine: &mut IncidentEngine, changes: &mut [IncidentChange]) {
        for c in changes.iter_mut().filter(|c| c.kinds.contains(&ChangeKind::Opened)) {
            let built = {
                let all = engine.list(&gpuwarden_incident::IncidentFilter::default());
                crate::changed::for_incident(self.store.as_ref(), &c.incident, &all)
            };
            match built {
                Ok(entries) if !entries.is_empty() => {
                    if let Some(inc) = engine.set_changed_before(&c.incident.id, entries) {
                        c.incident = inc;
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("reading what changed before incident {}: {e}", c.incident.id),
            }
        }
    }

    /// The latest evaluation (empty before the first one).
    pub fn latest(&self) -> Arc<Evaluation> {
        self.latest.read().clone()
    }

    /// Read access to the incident engine.
    pub fn with_incidents<R>(&self, f: impl FnOnce(&IncidentEngine) -> R) -> R {
        f(&self.incidents.lock())
    }

    /// Acknowledges an incident and persists it.
    pub fn acknowledge(&self, id: &str, actor: &str, comment: Option<&str>) -> Result<Incident, AnalysisError> {
        let now = self.now_ms();
        let mut engine = self.incidents.lock();
        let incident = engine.acknowledge(id, actor, comment, now)?;
        if let Err(e) = self.store.upsert_incidents(std::slice::from_ref(&incident)) {
            self.reload_incidents(&mut engine);
            return Err(e.into());
        }
        drop(engine);
        self.notify_manual(&incident, ChangeKind::Acknowledged);
        Ok(incident)
    }

    /// Resolves an incident by hand and persists it.
    pub fn resolve(&self, id: &str, actor: &str, comment: Option<&str>) -> Result<Incident, AnalysisError> {
        let now = self.now_ms();
        let mut engine = self.incidents.lock();
        let incident = engine.resolve(id, actor, comment, now)?;
        if let Err(e) = self.store.upsert_incidents(std::slice::from_ref(&incident)) {
            self.reload_incidents(&mut engine);
            return Err(e.into());
        }
        drop(engine);
        self.notify_manual(&incident, ChangeKind::Resolved);
        Ok(incident)
    }

    fn notify_manual(&self, incident: &Incident, kind: ChangeKind) {
        self.bump();
        let change = IncidentChange {
            incident: incident.clone(),
            kinds: vec![kind],
        };
        for sink in self.sinks.read().iter() {
            sink.incidents_changed(std::slice::from_ref(&change));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::{Action, Finding, FindingKind, Freshness, GpuUuid, Severity};
    use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};

    struct Always;
    impl Analyzer for Always {
        fn name(&self) -> &'static str {
            "always"
        }
        fn evaluate(&mut self, now_ms: TimestampMs, _: &dyn Fn(&GpuUuid) -> Freshness) -> Vec<Finding> {
            vec![Finding {
                kind: FindingKind::Security,
                rule: "test.always".into(),
                severity: Severity::Critical,
                gpu: None,
                node: "n1".into(),
                ts_ms: now_ms,
                summary: "always".into(),
                evidence: vec![],
                action: Action::DrainNode,
                dimension: None,
                labels: Default::default(),
            }]
        }
    }

    /// The stage over `store` with the built-in rules and catalog, on the system clock.
    fn analysis_over(store: Arc<dyn Store>, live: Arc<LiveFleet>) -> Analysis {
        Analysis::new(
            store,
            live,
            Arc::new(gpuwarden_model::SystemClock),
            gpuwarden_detect::HealthRules::builtin(),
            XidCatalog::builtin(),
            IncidentConfig::default(),
        )
        .unwrap()
    }

    fn xid79(gpu: &GpuUuid, ts_ms: TimestampMs) -> Event {
        Event {
            gpu: gpu.clone(),
            node: "n1".into(),
            ts_ms,
            kind: gpuwarden_model::EventKind::Xid {
                code: 79,
                message: None,
                pid: None,
                process: None,
            },
        }
    }

    /// The third fall off the bus in a week escalates to hardware inspection even when
    /// gpuwarden restarted after the second: the episodes come back from the store. And a
    /// row remapped while gpuwarden was down shows as an increase over the stored
    /// baseline. Without the restore the third episode asks only for a reboot and the
    /// remapped row is a first reading, not an increase.
    #[test]
    fn restored_health_remembers_xid_episodes_across_a_restart() {
        use gpuwarden_collect::dcgm::{ExporterKind, ExporterPage};
        use gpuwarden_model::{DcgmField, GpuIdentity, GpuSamples};
        let hour = 3_600_000;
        let now = gpuwarden_model::SystemClock.now_ms();
        let gpu = GpuUuid::new("GPU-restore-0001");
        let id = GpuIdentity::new(gpu.clone(), "n1");
        let row = |ts, rows_remapped| {
            let mut r = GpuSamples::new(gpu.clone(), ts);
            r.values.push((FieldName::Dcgm(DcgmField::GpuTemp), 50.0));
            r.values.push((FieldName::Dcgm(DcgmField::EccSbeVolTotal), 3.0));
            r.values
                .push((FieldName::Dcgm(DcgmField::UncorrectableRemappedRows), rows_remapped));
            r
        };
        let action_after_restart = |restore: bool| {
            let dir = tempfile::tempdir().unwrap();
            {
                // The first run: two episodes, hours apart.
                let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
                store.upsert_gpus(std::slice::from_ref(&id), now - 5 * hour).unwrap();
                store.append_samples(&[row(now - 5 * hour, 0.0)]).unwrap();
                store
                    .append_events(&[xid79(&gpu, now - 9 * hour), xid79(&gpu, now - 5 * hour)])
                    .unwrap();
                store.flush().unwrap();
            }
            let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
            let live = Arc::new(LiveFleet::new(600_000));
            let analysis = analysis_over(store, live.clone());
            if restore {
                let r = analysis.restore_health().unwrap();
                assert_eq!((r.gpus, r.events), (1, 2), "{r:?}");
                assert!(r.values >= 2, "{r:?}");
            }
            // After the restart: the GPU is back and falls off the bus a third time.
            let page = ExporterPage {
                kind: ExporterKind::Dcgm,
                gpus: vec![id.clone()],
                rows: vec![row(now, 1.0)],
                other: Vec::new(),
                summary: Default::default(),
            };
            live.apply_scrape(
                "t",
                now,
                &page.gpus,
                page.rows.iter().map(|r| (&r.gpu, r.ts_ms, r.values.as_slice())),
            );
            analysis.observe(&page, &[xid79(&gpu, now)]);
            let e = analysis.evaluate().unwrap();
            let xid = e.findings.iter().find(|f| f.rule == "xid.79").expect("xid.79 finding");
            let remapped = e.findings.iter().any(|f| f.rule == "remap.uncorrectable_rows");
            (xid.action, remapped)
        };
        assert_eq!(action_after_restart(true), (Action::HardwareInspection, true));
        assert_eq!(action_after_restart(false), (Action::Reboot, false));
    }

    #[test]
    fn restore_on_an_empty_store_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
        let analysis = analysis_over(store, Arc::new(LiveFleet::new(10_000)));
        assert_eq!(analysis.restore_health().unwrap(), Restored::default());
    }

    #[test]
    fn registered_analyzers_findings_become_incidents() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
        let analysis = analysis_over(store.clone(), Arc::new(LiveFleet::new(10_000)));
        analysis.add_analyzer(Box::new(Always));
        analysis.evaluate().unwrap();
        let open = analysis.with_incidents(|e| e.open_count_by_severity());
        assert_eq!(open.get(&Severity::Critical), Some(&1));
        assert_eq!(store.incidents().unwrap().len(), 1, "persisted");
    }
}
