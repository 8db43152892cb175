//! What the pipeline does when the store refuses a write (a full disk, an I/O error),
//! driven through `gpuwarden_store::testing::FailingStore` over a real embedded store:
//!
//! - a page whose write failed changes nothing (live view, XID memory, analyzers); the
//!   same page sent again is stored exactly once and its XID becomes one event;
//! - incident changes that could not be persisted are neither visible nor announced;
//!   the next evaluation persists and announces them;
//! - while writes fail, the published evaluation still ages: a GPU whose data stops
//!   arriving goes `unknown`, never stays `healthy` on the last good evaluation.

use gpuwarden_collect::dcgm::{ExporterKind, ExporterPage};
use gpuwarden_detect::XidCatalog;
use gpuwarden_incident::{IncidentChange, IncidentConfig, IncidentFilter};
use gpuwarden_model::{
    Clock, DcgmField, EventKind, FieldName, GpuIdentity, GpuSamples, GpuUuid, HealthState, IncidentState, SystemClock,
    TimestampMs,
};
use gpuwarden_pipeline::analyze::{Analysis, IncidentSink};
use gpuwarden_pipeline::ingest::Ingestor;
use gpuwarden_pipeline::live::LiveFleet;
use gpuwarden_pipeline::metrics::PipelineMetrics;
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::testing::{FailingStore, Op};
use gpuwarden_store::{Store, WriteHealth};
use parking_lot::Mutex;
use std::sync::Arc;

const TARGET: &str = "http://node-a:9400/metrics";

/// A clock the test moves by hand (the analysis ages data against it).
struct HandClock(Mutex<TimestampMs>);
impl Clock for HandClock {
    fn now_ms(&self) -> TimestampMs {
        *self.0.lock()
    }
}

/// Records every change announced to sinks (the notification path).
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String)>>);
impl IncidentSink for Recorder {
    fn incidents_changed(&self, changes: &[IncidentChange]) {
        for c in changes {
            self.0.lock().push((c.incident.rule.clone(), format!("{:?}", c.kinds)));
        }
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    failing: Arc<FailingStore>,
    live: Arc<LiveFleet>,
    analysis: Arc<Analysis>,
    ingest: Ingestor,
    clock: Arc<HandClock>,
    sink: Arc<Recorder>,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
    let failing = Arc::new(FailingStore::new(inner));
    let store: Arc<dyn Store> = failing.clone();
    let clock = Arc::new(HandClock(Mutex::new(SystemClock.now_ms())));
    let live = Arc::new(LiveFleet::new(60_000));
    let analysis = Arc::new(
        Analysis::new(
            store.clone(),
            live.clone(),
            clock.clone(),
            gpuwarden_detect::HealthRules::builtin(),
            XidCatalog::builtin(),
            IncidentConfig::default(),
        )
        .unwrap(),
    );
    let sink = Arc::new(Recorder::default());
    analysis.add_incident_sink(sink.clone());
    let ingest =
        Ingestor::new(store, live.clone(), PipelineMetrics::default(), clock.clone()).with_analysis(analysis.clone());
    Rig {
        _dir: dir,
        failing,
        live,
        analysis,
        ingest,
        clock,
        sink,
    }
}

fn gpu() -> GpuUuid {
    GpuUuid::new("GPU-00000000-0000-0000-0000-00000000a001")
}

/// One exporter page: the GPU at `temp` °C with last-XID gauge `xid`.
fn page(ts: TimestampMs, temp: f64, xid: f64) -> ExporterPage {
    let mut row = GpuSamples::new(gpu(), ts);
    row.values.push((FieldName::Dcgm(DcgmField::GpuTemp), temp));
    row.values.push((FieldName::Dcgm(DcgmField::XidErrors), xid));
    row.values.push((FieldName::Dcgm(DcgmField::GpuUtil), 50.0));
    ExporterPage {
        kind: ExporterKind::Dcgm,
        gpus: vec![GpuIdentity::new(gpu(), "node-a")],
        rows: vec![row],
        other: Vec::new(),
        summary: Default::default(),
    }
}

fn latest_temp(r: &Rig, now: TimestampMs) -> Option<f64> {
    r.live
        .snapshot(now)
        .into_iter()
        .find(|g| g.identity.uuid == gpu())
        .and_then(|g| g.latest.get(DcgmField::GpuTemp.as_str()).copied())
}

fn xid_events_stored(r: &Rig) -> usize {
    r.failing
        .inner()
        .events(Some(&gpu()), 0, i64::MAX)
        .unwrap()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Xid { code: 79, .. }))
        .count()
}

fn open_rules(r: &Rig) -> Vec<String> {
    r.analysis.with_incidents(|e| {
        e.list(&IncidentFilter {
            states: vec![IncidentState::Open],
            ..Default::default()
        })
        .into_iter()
        .map(|i| i.rule.clone())
        .collect()
    })
}

#[test]
fn a_page_whose_write_failed_changes_nothing_and_its_retry_counts_once() {
    let r = rig();
    let t0 = r.clock.now_ms();
    r.ingest.ingest_page(TARGET, t0, &page(t0, 40.0, 0.0)).unwrap();
    r.analysis.evaluate().unwrap();

    // The disk fills: the page carrying XID 79 and 90 °C cannot be stored.
    let t1 = t0 + 15_000;
    *r.clock.0.lock() = t1;
    r.failing.fail_next(Op::AppendPage, 1);
    let bad = page(t1, 90.0, 79.0);
    assert!(r.ingest.ingest_page(TARGET, t1, &bad).is_err());
    assert_eq!(r.failing.failed(Op::AppendPage), 1);
    assert!(matches!(r.failing.write_health(), WriteHealth::Failing { .. }));

    // Nothing of it anywhere: live view, XID memory, analyzers, store.
    assert_eq!(latest_temp(&r, t1), Some(40.0), "live view moved on an unstored page");
    assert_eq!(xid_events_stored(&r), 0);
    let e = r.analysis.evaluate().unwrap();
    assert!(
        !e.findings.iter().any(|f| f.rule == "xid.79"),
        "an analyzer saw the unstored page: {:?}",
        e.findings.iter().map(|f| &f.rule).collect::<Vec<_>>()
    );
    let stored_at_t1 = r
        .failing
        .inner()
        .range(&gpu(), &FieldName::Dcgm(DcgmField::GpuTemp), t1, t1 + 1, 100)
        .unwrap();
    assert!(stored_at_t1.is_empty());

    // The pusher retries the same page: stored once, one XID event, one incident.
    let report = r.ingest.ingest_page(TARGET, t1, &bad).unwrap();
    assert_eq!(
        report
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Xid { code: 79, .. }))
            .count(),
        1,
        "the retry must emit the XID the failed attempt staged, exactly once"
    );
    assert!(matches!(r.failing.write_health(), WriteHealth::Ok));
    assert_eq!(latest_temp(&r, t1), Some(90.0));
    assert_eq!(xid_events_stored(&r), 1);
    let stored_at_t1 = r
        .failing
        .inner()
        .range(&gpu(), &FieldName::Dcgm(DcgmField::GpuTemp), t1, t1 + 1, 100)
        .unwrap();
    assert_eq!(stored_at_t1.len(), 1);
    r.analysis.evaluate().unwrap();
    assert_eq!(open_rules(&r).iter().filter(|x| *x == "cause.bus").count(), 1);
}

#[test]
fn incident_changes_that_could_not_be_persisted_are_not_shown_or_announced_until_they_are() {
    let r = rig();
    let t0 = r.clock.now_ms();
    r.ingest.ingest_page(TARGET, t0, &page(t0, 40.0, 79.0)).unwrap();

    // The evaluation opens the XID 79 incident, but persisting it fails.
    r.failing.fail_next(Op::UpsertIncidents, 1);
    assert!(r.analysis.evaluate().is_err());
    assert!(open_rules(&r).is_empty(), "an unpersisted incident is visible");
    assert!(r.sink.0.lock().is_empty(), "an unpersisted incident was announced");
    assert!(r.failing.inner().incidents().unwrap().is_empty());

    // The next evaluation persists it, shows it and announces it once.
    r.analysis.evaluate().unwrap();
    assert_eq!(open_rules(&r), vec!["cause.bus".to_string()]);
    assert_eq!(
        r.failing
            .inner()
            .incidents()
            .unwrap()
            .iter()
            .filter(|i| i.rule == "cause.bus")
            .count(),
        1
    );
    let announced: Vec<_> = r
        .sink
        .0
        .lock()
        .iter()
        .filter(|(rule, _)| rule == "cause.bus")
        .cloned()
        .collect();
    assert_eq!(announced.len(), 1, "{announced:?}");

    // A manual resolve whose write fails is not applied either.
    let id = r.analysis.with_incidents(|e| {
        e.list(&IncidentFilter::default())
            .into_iter()
            .find(|i| i.rule == "cause.bus")
            .map(|i| i.id.clone())
            .unwrap()
    });
    r.failing.fail_next(Op::UpsertIncidents, 1);
    assert!(r.analysis.resolve(&id, "alice", None).is_err());
    assert_eq!(open_rules(&r), vec!["cause.bus".to_string()]);
    assert_eq!(r.sink.0.lock().len(), announced.len());
}

#[test]
fn while_writes_fail_a_silent_gpu_goes_unknown_not_healthy() {
    let r = rig();
    let t0 = r.clock.now_ms();
    r.ingest.ingest_page(TARGET, t0, &page(t0, 40.0, 0.0)).unwrap();
    let e = r.analysis.evaluate().unwrap();
    let state = |e: &gpuwarden_detect::Evaluation| e.gpus.iter().find(|g| g.uuid == gpu()).map(|g| g.state);
    assert_eq!(state(&e), Some(HealthState::Healthy));

    // Every write fails from now on, and the GPU's pages stop being stored.
    r.failing.fail_next(Op::AppendPage, 1_000);
    r.failing.fail_next(Op::AppendSamples, 1_000);
    r.failing.fail_next(Op::UpsertIncidents, 1_000);
    for i in 1..=20 {
        let t = t0 + i * 15_000;
        *r.clock.0.lock() = t;
        assert!(r.ingest.ingest_page(TARGET, t, &page(t, 40.0, 0.0)).is_err());
        let _ = r.analysis.evaluate();
    }
    // Five minutes without stored data: the published evaluation says unknown.
    assert_eq!(state(&r.analysis.latest()), Some(HealthState::Unknown));
}
