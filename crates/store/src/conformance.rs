//! The behaviour of [`Store`], written once and run against every implementation.
//!
//! Each check is a function taking a [`Fixture`] (a fresh, empty store that can be
//! closed and opened again on the same data). [`store_conformance_tests!`] turns all of
//! them into `#[test]`s for one implementation:
//!
//! ```ignore
//! gpuwarden_store::store_conformance_tests!(my_fixture());   // Option<impl Fixture>
//! ```
//!
//! `None` from the fixture expression skips the test (a database that is not installed;
//! the fixture decides whether that is allowed). Checks here hold for every
//! implementation; what differs between engines (the embedded store's WAL damage
//! handling, PostgreSQL's partitions) is tested beside each engine.
//!
//! Always compiled (it is small and uses only the trait) so other crates' tests can run
//! it against wrappers.

use crate::{PageWrite, Point, Store};
use gpuwarden_model::{
    Action, DcgmField, Event, EventKind, FieldName, FindingKind, GpuIdentity, GpuSamples, GpuUuid, Incident,
    IncidentState, Severity, TimelineEntry,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A store under test. `store()` is empty when the fixture is made.
pub trait Fixture {
    fn store(&self) -> &dyn Store;
    /// Closes the store and opens it again on the same data (a restart).
    fn reopen(&mut self);
    /// Shares the store with other threads (for the concurrency checks).
    fn shared(&self) -> Arc<dyn Store>;
}

/// 2023-11-14T22:13:20Z: a time inside any plausible retention setup.
pub const T0: i64 = 1_700_000_000_000;
const DAY_MS: i64 = 86_400_000;

pub fn gpu(i: usize) -> GpuUuid {
    GpuUuid::new(&format!("GPU-{i:04}"))
}

fn temp() -> FieldName {
    DcgmField::GpuTemp.into()
}

fn power() -> FieldName {
    DcgmField::PowerUsage.into()
}

fn custom() -> FieldName {
    FieldName::parse("CUSTOM_METRIC")
}

fn row(g: usize, ts: i64, temp_c: f64) -> GpuSamples {
    GpuSamples {
        gpu: gpu(g),
        ts_ms: ts,
        values: vec![(temp(), temp_c), (power(), 300.0 + temp_c), (custom(), ts as f64)],
    }
}

fn one(g: usize, ts: i64, v: f64) -> GpuSamples {
    GpuSamples {
        gpu: gpu(g),
        ts_ms: ts,
        values: vec![(temp(), v)],
    }
}

fn xid(g: usize, ts: i64, code: u32) -> Event {
    Event {
        gpu: gpu(g),
        node: "node-a".into(),
        ts_ms: ts,
        kind: EventKind::Xid {
            code,
            message: Some(format!("Xid {code} ünïcode ✓")),
            pid: None,
            process: None,
        },
    }
}

fn incident(id: &str, version: u64) -> Incident {
    Incident {
        id: id.into(),
        dedup_key: format!("xid.79@{id}"),
        rule: "xid.79".into(),
        kind: FindingKind::Health,
        severity: Severity::Critical,
        gpu: Some(gpu(1)),
        node: "node-a".into(),
        state: IncidentState::Open,
        summary: format!("GPU fell off the bus (version {version})"),
        action: Action::ResetGpu,
        opened_ms: T0,
        updated_ms: T0 + version as i64,
        last_seen_ms: T0 + version as i64,
        acknowledged_ms: None,
        acknowledged_by: None,
        resolved_ms: None,
        resolution: None,
        finding_count: version,
        correlation: Default::default(),
        labels: [("k8s.pod".to_string(), "trainer-0".to_string())].into(),
        flaps: 0,
        timeline: vec![TimelineEntry {
            ts_ms: T0,
            what: "opened".into(),
            detail: "XID 79".into(),
            severity: Some(Severity::Critical),
        }],
    }
}

fn all(s: &dyn Store, g: usize, f: &FieldName) -> Vec<Point> {
    s.range(&gpu(g), f, i64::MIN, i64::MAX, usize::MAX).unwrap()
}

fn pts(v: &[(i64, f64)]) -> Vec<Point> {
    v.iter().map(|&(ts_ms, value)| Point { ts_ms, value }).collect()
}

/// A store with one writer stores every incident `write_incidents` hands it (nothing to
/// adopt: the writer's engine keeps one incident per key itself), a new one as a
/// transition, and holds the latest version of each.
pub fn one_writer_stores_every_incident_it_writes(f: &mut dyn Fixture) {
    use crate::IncidentWrite;
    let s = f.store();
    let a = incident("inc-01JEXQ7RZ4M2V9K3T8N6PBCWDA", 1);
    let mut b = incident("inc-01JEXQ7RZ4M2V9K3T8N6PBCWDB", 1);
    b.dedup_key = "ecc.dbe@GPU-0002".into();
    let first = s.write_incidents(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(first, vec![IncidentWrite::Stored { transition: true }; 2]);
    let mut resolved = incident(&a.id, 2);
    resolved.state = IncidentState::Resolved;
    resolved.resolved_ms = Some(T0 + 10);
    let second = s.write_incidents(std::slice::from_ref(&resolved)).unwrap();
    assert_eq!(second, vec![IncidentWrite::Stored { transition: true }]);
    // After a resolution the key may open again under a new id.
    let mut again = incident("inc-01JEXQ7RZ4M2V9K3T8N6PBCWDC", 3);
    again.dedup_key = a.dedup_key.clone();
    let third = s.write_incidents(std::slice::from_ref(&again)).unwrap();
    assert!(matches!(third[..], [IncidentWrite::Stored { .. }]), "{third:?}");
    f.reopen();
    let got = f.store().incidents().unwrap();
    assert_eq!(got, vec![resolved, b, again]);
}

/// A new store holds nothing and answers every query with nothing; empty writes succeed.
pub fn empty_store_answers_empty(f: &mut dyn Fixture) {
    let s = f.store();
    assert!(s.gpus().unwrap().is_empty());
    assert!(s.latest(&gpu(0)).unwrap().is_empty());
    assert!(all(s, 0, &temp()).is_empty());
    assert!(s.events(None, i64::MIN, i64::MAX).unwrap().is_empty());
    assert!(s.incidents().unwrap().is_empty());
    s.append_samples(&[]).unwrap();
    s.append_samples(&[GpuSamples::new(gpu(0), T0)]).unwrap(); // a row without values
    s.append_events(&[]).unwrap();
    s.upsert_gpus(&[], T0).unwrap();
    s.upsert_incidents(&[]).unwrap();
    s.append_page(&PageWrite {
        rows: &[],
        events: &[],
        gpus: &[],
        seen_ms: T0,
    })
    .unwrap();
    assert!(all(s, 0, &temp()).is_empty());
    assert!(s.gpus().unwrap().is_empty());
    assert_eq!(s.apply_retention(T0).unwrap(), 0);
    s.flush().unwrap();
    s.stats().unwrap();
    assert_eq!(s.write_health(), crate::WriteHealth::Ok);
}

/// Samples come back bit-exactly (NaN, -0, infinities, subnormals), per field, across
/// a flush and a reopen.
pub fn samples_round_trip_bit_exactly(f: &mut dyn Fixture) {
    let vals = [
        f64::NAN,
        -0.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        1e-310,
        0.1 + 0.2,
        42.0,
    ];
    let rows: Vec<GpuSamples> = vals
        .iter()
        .enumerate()
        .map(|(i, &v)| GpuSamples {
            gpu: gpu(0),
            ts_ms: T0 + i as i64 * 1000,
            values: vec![(temp(), v), (custom(), i as f64)],
        })
        .collect();
    f.store().append_samples(&rows[..3]).unwrap();
    f.store().flush().unwrap();
    f.store().append_samples(&rows[3..]).unwrap();
    let check = |s: &dyn Store| {
        let got: Vec<(i64, u64)> = all(s, 0, &temp())
            .iter()
            .map(|p| (p.ts_ms, p.value.to_bits()))
            .collect();
        let want: Vec<(i64, u64)> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| (T0 + i as i64 * 1000, v.to_bits()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(all(s, 0, &custom()).len(), vals.len());
        assert!(all(s, 0, &power()).is_empty(), "a field never written has no points");
        assert!(all(s, 1, &temp()).is_empty(), "another GPU has no points");
    };
    check(f.store());
    f.reopen();
    check(f.store());
}

/// `range` is `[from, to)`, sorted, and downsampled to bucket averages stamped at the
/// bucket start when more than `max_points` fall in it.
pub fn range_is_half_open_and_downsampled(f: &mut dyn Fixture) {
    let s = f.store();
    let data: Vec<_> = (0..100).map(|i| one(0, T0 + i * 1000, i as f64)).collect();
    s.append_samples(&data[..50]).unwrap();
    s.flush().unwrap();
    s.append_samples(&data[50..]).unwrap();
    let p = s.range(&gpu(0), &temp(), T0 + 10_000, T0 + 20_000, 100).unwrap();
    assert_eq!(p.len(), 10);
    assert_eq!((p[0].ts_ms, p[9].ts_ms), (T0 + 10_000, T0 + 19_000));
    let ds = s.range(&gpu(0), &temp(), T0, T0 + 100_000, 10).unwrap();
    assert_eq!(ds.len(), 10);
    assert_eq!(ds[0], Point { ts_ms: T0, value: 4.5 });
    assert_eq!(
        ds[5],
        Point {
            ts_ms: T0 + 50_000,
            value: 54.5
        }
    );
    assert!(s.range(&gpu(0), &temp(), T0, T0 + 100_000, 0).unwrap().is_empty());
    assert!(s.range(&gpu(0), &temp(), T0 + 5000, T0 + 5000, 10).unwrap().is_empty());
    assert!(s.range(&gpu(0), &temp(), T0 + 9000, T0 + 1000, 10).unwrap().is_empty());
    assert!(s.range(&gpu(9), &temp(), T0, T0 + 100_000, 10).unwrap().is_empty());
}

/// Rows arriving out of order come back sorted; `latest` is the newest time's value.
pub fn out_of_order_rows_come_back_sorted(f: &mut dyn Fixture) {
    let s = f.store();
    s.append_samples(&[one(0, T0 + 3000, 3.0), one(0, T0 + 1000, 1.0), one(0, T0 + 2000, 2.0)])
        .unwrap();
    s.flush().unwrap();
    s.append_samples(&[one(0, T0 + 500, 0.5)]).unwrap(); // older than what was flushed
    let want = pts(&[(T0 + 500, 0.5), (T0 + 1000, 1.0), (T0 + 2000, 2.0), (T0 + 3000, 3.0)]);
    assert_eq!(all(s, 0, &temp()), want);
    assert_eq!(
        s.latest(&gpu(0)).unwrap(),
        vec![(
            temp(),
            Point {
                ts_ms: T0 + 3000,
                value: 3.0
            }
        )]
    );
    f.reopen();
    assert_eq!(all(f.store(), 0, &temp()), want);
    assert_eq!(f.store().latest(&gpu(0)).unwrap()[0].1.ts_ms, T0 + 3000);
}

/// Appending the same (GPU, field, time) again replaces the value: a batch delivered
/// twice is stored once in effect, within one call, across calls, and across a flush.
pub fn reappend_of_the_same_key_is_idempotent(f: &mut dyn Fixture) {
    let batch: Vec<GpuSamples> = (0..10).map(|i| row(0, T0 + i * 1000, 40.0 + i as f64)).collect();
    let s = f.store();
    s.append_samples(&batch).unwrap();
    let once = all(s, 0, &temp());
    s.append_samples(&batch).unwrap();
    assert_eq!(all(s, 0, &temp()), once, "a second delivery changes nothing");
    s.flush().unwrap();
    s.append_samples(&batch).unwrap();
    assert_eq!(all(s, 0, &temp()), once, "… also after a flush");
    // Same key, new value (a corrected resend): the last write wins, in range and latest.
    s.append_samples(&[one(0, T0 + 9000, 99.0)]).unwrap();
    // Duplicates inside one call: the last occurrence wins.
    s.append_samples(&[one(0, T0 + 2000, 7.0), one(0, T0 + 2000, 8.0)])
        .unwrap();
    let check = |s: &dyn Store| {
        let p = all(s, 0, &temp());
        assert_eq!(p.len(), 10, "one point per time: {p:?}");
        assert_eq!(
            p[9],
            Point {
                ts_ms: T0 + 9000,
                value: 99.0
            }
        );
        assert_eq!(
            p[2],
            Point {
                ts_ms: T0 + 2000,
                value: 8.0
            }
        );
        let latest = s.latest(&gpu(0)).unwrap();
        let t = latest.iter().find(|(f, _)| *f == temp()).unwrap().1;
        assert_eq!(
            t,
            Point {
                ts_ms: T0 + 9000,
                value: 99.0
            }
        );
        assert_eq!(all(s, 0, &power()).len(), 10);
    };
    check(f.store());
    f.reopen();
    check(f.store());
}

/// Events are filtered by GPU and `[from, to)`, oldest first; events with the same time
/// keep their arrival order; their content round-trips (Unicode included).
pub fn events_filter_by_gpu_and_time_in_order(f: &mut dyn Fixture) {
    let s = f.store();
    s.append_events(&[xid(0, T0 + 3000, 13), xid(1, T0 + 1000, 31)])
        .unwrap();
    s.flush().unwrap();
    s.append_events(&[xid(0, T0 + 2000, 43), xid(0, T0 + 2000, 44), xid(0, T0 + 2000, 45)])
        .unwrap();
    let check = |s: &dyn Store| {
        let all = s.events(None, T0, T0 + 10_000).unwrap();
        let codes: Vec<(i64, u32)> = all
            .iter()
            .map(|e| match e.kind {
                EventKind::Xid { code, .. } => (e.ts_ms - T0, code),
                _ => panic!("not an XID: {e:?}"),
            })
            .collect();
        assert_eq!(codes, vec![(1000, 31), (2000, 43), (2000, 44), (2000, 45), (3000, 13)]);
        let g0 = s.events(Some(&gpu(0)), T0, T0 + 3000).unwrap();
        assert_eq!(
            g0,
            vec![xid(0, T0 + 2000, 43), xid(0, T0 + 2000, 44), xid(0, T0 + 2000, 45)]
        );
        assert!(s.events(None, T0 + 3001, T0 + 10_000).unwrap().is_empty());
        assert!(s.events(Some(&gpu(7)), i64::MIN, i64::MAX).unwrap().is_empty());
    };
    check(f.store());
    f.reopen();
    check(f.store());
}

/// Identities are replaced by the latest upsert; first/last seen widen over upserts and
/// samples; the inventory is ordered by UUID.
pub fn gpu_identities_update_and_seen_times_widen(f: &mut dyn Fixture) {
    let s = f.store();
    let mut id = GpuIdentity::new(gpu(1), "node-a");
    s.upsert_gpus(&[id.clone(), GpuIdentity::new(gpu(0), "node-b")], T0 + 5000)
        .unwrap();
    id.workload.pod = Some("trainer-0".into());
    s.upsert_gpus(&[id.clone()], T0 + 9000).unwrap();
    s.append_samples(&[row(1, T0, 40.0)]).unwrap();
    let g = s.gpus().unwrap();
    assert_eq!(
        g.iter().map(|r| r.identity.uuid.clone()).collect::<Vec<_>>(),
        vec![gpu(0), gpu(1)]
    );
    assert_eq!(g[1].identity, id);
    assert_eq!((g[1].first_seen_ms, g[1].last_seen_ms), (T0, T0 + 9000));
    assert_eq!((g[0].first_seen_ms, g[0].last_seen_ms), (T0 + 5000, T0 + 5000));
    s.flush().unwrap();
    f.reopen();
    assert_eq!(f.store().gpus().unwrap(), g);
}

/// The latest version of each incident wins; incidents are ordered by id; they survive a
/// reopen.
pub fn incidents_latest_version_wins(f: &mut dyn Fixture) {
    let s = f.store();
    let ids = [
        "inc-01JEXQ7RZ4M2V9K3T8N6PBCWDH",
        "inc-000042",
        "inc-01JEXQ7RZ4M2V9K3T8N6PBCWDA",
    ];
    for v in 1..=3 {
        let batch: Vec<Incident> = ids.iter().map(|id| incident(id, v)).collect();
        s.upsert_incidents(&batch).unwrap();
    }
    // Two versions of one id in one call: the later one wins.
    let mut resolved = incident(ids[1], 5);
    resolved.state = IncidentState::Resolved;
    resolved.resolved_ms = Some(T0 + 5);
    s.upsert_incidents(&[incident(ids[1], 4), resolved.clone()]).unwrap();
    let check = |s: &dyn Store| {
        let got = s.incidents().unwrap();
        let mut sorted_ids: Vec<&str> = ids.to_vec();
        sorted_ids.sort();
        assert_eq!(got.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), sorted_ids);
        for inc in &got {
            if inc.id == ids[1] {
                assert_eq!(inc, &resolved);
            } else {
                assert_eq!(inc, &incident(&inc.id, 3));
            }
        }
    };
    check(f.store());
    f.reopen();
    check(f.store());
}

/// Retention removes samples and events well older than the cutoff (engines drop whole
/// segments or partitions, so "well older": a day before, flushed) and keeps newer ones.
pub fn retention_drops_old_data_and_keeps_new(f: &mut dyn Fixture) {
    let s = f.store();
    let old: Vec<_> = (0..10).map(|i| row(0, T0 + i * 1000, 40.0)).collect();
    s.append_samples(&old).unwrap();
    s.append_events(&[xid(0, T0 + 1000, 13)]).unwrap();
    s.flush().unwrap();
    let new_t = T0 + 10 * DAY_MS;
    let new: Vec<_> = (0..5).map(|i| row(0, new_t + i * 1000, 50.0)).collect();
    s.append_samples(&new).unwrap();
    s.append_events(&[xid(0, new_t, 79)]).unwrap();
    s.flush().unwrap();
    let removed = s.apply_retention(T0 + 5 * DAY_MS).unwrap();
    assert_eq!(removed, 30, "10 rows of 3 fields were older than the cutoff");
    let check = |s: &dyn Store| {
        let p = all(s, 0, &temp());
        assert_eq!(p.len(), 5);
        assert!(p.iter().all(|p| p.ts_ms >= new_t));
        let ev = s.events(None, i64::MIN, i64::MAX).unwrap();
        assert_eq!(ev, vec![xid(0, new_t, 79)]);
    };
    check(f.store());
    assert_eq!(
        f.store().apply_retention(T0 + 5 * DAY_MS).unwrap(),
        0,
        "nothing left to drop"
    );
    f.reopen();
    check(f.store());
}

/// A page is visible whole or not at all: a reader that sees a page's event also sees
/// its samples and GPU, while a writer adds pages concurrently.
pub fn page_is_visible_whole_or_not_at_all(f: &mut dyn Fixture) {
    const PAGES: usize = 60;
    let store = f.shared();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (s, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut checks = 0;
            while !done.load(Ordering::Acquire) || checks == 0 {
                // Events first: every page whose event is visible must have its rows.
                let events = s.events(Some(&gpu(0)), i64::MIN, i64::MAX).unwrap();
                let points = s.range(&gpu(0), &temp(), i64::MIN, i64::MAX, usize::MAX).unwrap();
                let gpus = s.gpus().unwrap();
                for e in &events {
                    assert!(
                        points.iter().any(|p| p.ts_ms == e.ts_ms),
                        "event of a page at {} visible without its samples",
                        e.ts_ms
                    );
                    let page_gpu = GpuUuid::new(&format!("GPU-page-{}", (e.ts_ms - T0) / 1000));
                    assert!(
                        gpus.iter().any(|g| g.identity.uuid == page_gpu),
                        "event of a page visible without its GPU"
                    );
                }
                checks += 1;
            }
            checks
        })
    };
    for i in 0..PAGES {
        let ts = T0 + i as i64 * 1000;
        let rows: Vec<GpuSamples> = (0..4).map(|g| row(g, ts, i as f64)).collect();
        let events = [xid(0, ts, 79)];
        let gpus = [GpuIdentity::new(GpuUuid::new(&format!("GPU-page-{i}")), "node-a")];
        store
            .append_page(&PageWrite {
                rows: &rows,
                events: &events,
                gpus: &gpus,
                seen_ms: ts,
            })
            .unwrap();
    }
    done.store(true, Ordering::Release);
    assert!(reader.join().unwrap() > 0);
    drop(store);
    f.reopen();
    let s = f.store();
    assert_eq!(all(s, 3, &temp()).len(), PAGES);
    assert_eq!(s.events(None, i64::MIN, i64::MAX).unwrap().len(), PAGES);
    assert_eq!(s.gpus().unwrap().len(), PAGES);
}

/// One call with 200,000 samples (1,000 GPUs × 20 fields × 10 times) is stored whole.
pub fn huge_batch_is_stored_whole(f: &mut dyn Fixture) {
    let fields: Vec<FieldName> = (0..20).map(|i| FieldName::parse(&format!("BIG_FIELD_{i}"))).collect();
    let rows: Vec<GpuSamples> = (0..10)
        .flat_map(|t| {
            let fields = &fields;
            (0..1000).map(move |g| GpuSamples {
                gpu: gpu(g),
                ts_ms: T0 + t * 10_000,
                values: fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (f.clone(), (g * 100 + i) as f64))
                    .collect(),
            })
        })
        .collect();
    let s = f.store();
    s.append_samples(&rows).unwrap();
    for g in [0, 499, 999] {
        let p = all(s, g, &fields[7]);
        assert_eq!(p.len(), 10, "GPU {g}");
        assert!(p.iter().all(|p| p.value == (g * 100 + 7) as f64));
        assert_eq!(s.latest(&gpu(g)).unwrap().len(), 20);
    }
}

/// Extreme but valid times: the epoch, before it, far in the future; unbounded queries.
pub fn extreme_times_round_trip(f: &mut dyn Fixture) {
    let far = 4_102_444_800_000; // 2100-01-01
    let s = f.store();
    s.append_samples(&[one(0, far, 3.0), one(0, 0, 1.0), one(0, -DAY_MS * 400, 0.5)])
        .unwrap();
    s.append_events(&[xid(0, far, 13), xid(0, 0, 31)]).unwrap();
    let want = pts(&[(-DAY_MS * 400, 0.5), (0, 1.0), (far, 3.0)]);
    assert_eq!(all(s, 0, &temp()), want);
    assert_eq!(s.range(&gpu(0), &temp(), 0, far, 10).unwrap(), pts(&[(0, 1.0)]));
    let ds = s.range(&gpu(0), &temp(), i64::MIN, i64::MAX, 2).unwrap();
    assert!(!ds.is_empty() && ds.len() <= 2, "{ds:?}");
    assert_eq!(s.events(None, i64::MIN, i64::MAX).unwrap().len(), 2);
    assert_eq!(s.latest(&gpu(0)).unwrap()[0].1, Point { ts_ms: far, value: 3.0 });
    s.flush().unwrap();
    f.reopen();
    assert_eq!(all(f.store(), 0, &temp()), want);
}

/// Four threads appending at once lose nothing.
pub fn concurrent_writers_lose_nothing(f: &mut dyn Fixture) {
    let store = f.shared();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    s.append_samples(&[row(t, T0 + i * 1000, i as f64)]).unwrap();
                    if i % 10 == 0 {
                        s.range(&gpu(t), &temp(), T0, T0 + 1_000_000, 10).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for t in 0..4 {
        assert_eq!(all(&*store, t, &temp()).len(), 50);
    }
    drop(store);
    f.reopen();
    for t in 0..4 {
        assert_eq!(all(f.store(), t, &custom()).len(), 50);
    }
}

/// Generates one `#[test]` per conformance check. `$fixture` is an expression of type
/// `Option<impl Fixture>`, evaluated afresh for each test; `None` skips it.
#[macro_export]
macro_rules! store_conformance_tests {
    ($fixture:expr) => {
        $crate::store_conformance_tests!(@each $fixture;
            empty_store_answers_empty,
            samples_round_trip_bit_exactly,
            range_is_half_open_and_downsampled,
            out_of_order_rows_come_back_sorted,
            reappend_of_the_same_key_is_idempotent,
            events_filter_by_gpu_and_time_in_order,
            gpu_identities_update_and_seen_times_widen,
            incidents_latest_version_wins,
            one_writer_stores_every_incident_it_writes,
            retention_drops_old_data_and_keeps_new,
            page_is_visible_whole_or_not_at_all,
            huge_batch_is_stored_whole,
            extreme_times_round_trip,
            concurrent_writers_lose_nothing
        );
    };
    (@each $fixture:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(mut fixture) = $fixture {
                    $crate::conformance::$name(&mut fixture);
                }
            }
        )*
    };
}
