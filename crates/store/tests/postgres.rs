//! What is particular to the PostgreSQL store (the shared behaviour is in
//! `conformance_postgres.rs`): partitions ahead and dropped whole, several instances on
//! one database, refusal of a database that is not ours, a batch with a broken clock,
//! and recovery after the server restarts. Real server per test binary (`pg_cluster`);
//! skips without PostgreSQL unless `GPUWARDEN_REQUIRE_TOOLS=1`.
#![cfg(feature = "postgres")]

use gpuwarden_model::{DcgmField, GpuSamples, GpuUuid};
use gpuwarden_store::conformance::T0;
use gpuwarden_store::pg_cluster::PgCluster;
use gpuwarden_store::postgres::{PostgresOptions, PostgresStore};
use gpuwarden_store::{Store, StoreError, WriteHealth};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

const DAY_MS: i64 = 86_400_000;

static CLUSTER: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// A server (shared by this binary's tests while any runs) and a new database on it.
fn database() -> Option<(Arc<PgCluster>, String, PostgresOptions)> {
    let cluster = {
        let mut slot = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        match slot.upgrade() {
            Some(c) => c,
            None => {
                let c = Arc::new(PgCluster::start_or_skip("postgres")?);
                *slot = Arc::downgrade(&c);
                c
            }
        }
    };
    let name = format!("pg_{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let url = cluster.create_database(&name).unwrap();
    let options = PostgresOptions {
        url,
        ..PostgresOptions::default()
    };
    Some((cluster, name, options))
}

fn temp_row(ts: i64, v: f64) -> GpuSamples {
    GpuSamples {
        gpu: GpuUuid::new("GPU-0001"),
        ts_ms: ts,
        values: vec![(DcgmField::GpuTemp.into(), v)],
    }
}

fn partitions(pg: &PgCluster, db: &str) -> Vec<String> {
    let out = pg
        .psql(
            db,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'samples'::regclass ORDER BY 1",
        )
        .unwrap();
    out.lines().map(str::to_string).collect()
}

#[test]
fn partitions_are_made_ahead_on_demand_and_dropped_whole() {
    let Some((pg, db, opts)) = database() else { return };
    let s = PostgresStore::open(&opts).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let today = now.div_euclid(DAY_MS) * DAY_MS;
    let ahead = partitions(&pg, &db);
    for k in 0..=2 {
        let name = format!("samples_p{}", today + k * DAY_MS);
        assert!(ahead.contains(&name), "{name} not in {ahead:?}");
    }
    // Old data: its day's partition is made on demand.
    let day0 = T0.div_euclid(DAY_MS) * DAY_MS;
    s.append_samples(&[temp_row(day0 + 1000, 1.0), temp_row(day0 + DAY_MS + 1000, 2.0)])
        .unwrap();
    let made = partitions(&pg, &db);
    assert!(made.contains(&format!("samples_p{day0}")), "{made:?}");
    assert!(made.contains(&format!("samples_p{}", day0 + DAY_MS)), "{made:?}");
    // A cutoff inside the second day drops only the first day's partition.
    assert_eq!(s.apply_retention(day0 + DAY_MS + 500).unwrap(), 1);
    let left = partitions(&pg, &db);
    assert!(!left.contains(&format!("samples_p{day0}")), "{left:?}");
    assert!(left.contains(&format!("samples_p{}", day0 + DAY_MS)), "{left:?}");
    let events_left = pg
        .psql(&db, &format!("SELECT to_regclass('events_p{day0}') IS NULL"))
        .unwrap();
    assert_eq!(events_left, "t", "the events partition of the day went with it");
    let pts = s
        .range(
            &GpuUuid::new("GPU-0001"),
            &DcgmField::GpuTemp.into(),
            i64::MIN,
            i64::MAX,
            100,
        )
        .unwrap();
    assert_eq!(pts.len(), 1);
}

#[test]
fn a_batch_with_a_broken_clock_is_refused_whole() {
    let Some((pg, db, opts)) = database() else { return };
    let s = PostgresStore::open(&opts).unwrap();
    let before = partitions(&pg, &db).len();
    // 200 different days in one batch: a source's clock is wrong.
    let rows: Vec<_> = (0..200).map(|d| temp_row(T0 + d * DAY_MS, 1.0)).collect();
    let err = s.append_samples(&rows).unwrap_err();
    assert!(err.to_string().contains("clocks"), "{err}");
    assert_eq!(partitions(&pg, &db).len(), before, "no partition was made");
    assert!(matches!(s.write_health(), WriteHealth::Failing { .. }));
    s.append_samples(&[temp_row(T0, 1.0)]).unwrap();
    assert_eq!(s.write_health(), WriteHealth::Ok);
}

#[test]
fn instances_sharing_a_database_migrate_once_and_see_each_others_writes() {
    let Some((pg, db, opts)) = database() else { return };
    // Four instances start at once: the migration lock lets exactly one create the schema.
    let stores: Vec<PostgresStore> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4).map(|_| scope.spawn(|| PostgresStore::open(&opts))).collect();
        handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM gpuwarden_schema").unwrap(),
        gpuwarden_store::postgres::MIGRATIONS.len().to_string()
    );
    stores[0].append_samples(&[temp_row(T0, 1.0)]).unwrap();
    stores[1].append_samples(&[temp_row(T0 + 1000, 2.0)]).unwrap();
    let pts = stores[3]
        .range(&GpuUuid::new("GPU-0001"), &DcgmField::GpuTemp.into(), T0, T0 + 2000, 10)
        .unwrap();
    assert_eq!(pts.len(), 2);
    assert_eq!(stores[2].latest(&GpuUuid::new("GPU-0001")).unwrap()[0].1.value, 2.0);
}

#[test]
fn a_database_with_foreign_tables_or_a_newer_schema_is_refused() {
    let Some((pg, db, opts)) = database() else { return };
    pg.psql(&db, "CREATE TABLE samples (x int)").unwrap();
    let err = PostgresStore::open(&opts).unwrap_err();
    assert!(matches!(err, StoreError::Schema(_)), "{err}");
    assert!(err.to_string().contains("not a gpuwarden store"), "{err}");

    let Some((_pg2, db2, opts2)) = database() else { return };
    drop(PostgresStore::open(&opts2).unwrap());
    pg.psql(
        &db2,
        "INSERT INTO gpuwarden_schema (version, description) VALUES (7, 'future')",
    )
    .unwrap();
    let err = PostgresStore::open(&opts2).unwrap_err();
    assert!(err.to_string().contains("version 7"), "{err}");
}

#[test]
fn writes_fail_while_the_server_restarts_and_resume_after() {
    // Its own server: restarting the shared one would cut the other tests' connections.
    let Some(pg) = PgCluster::start_or_skip("postgres") else {
        return;
    };
    let opts = PostgresOptions {
        url: pg.create_database("restart").unwrap(),
        ..PostgresOptions::default()
    };
    let s = PostgresStore::open(&opts).unwrap();
    s.append_samples(&[temp_row(T0, 1.0)]).unwrap();
    pg.restart().unwrap();
    // Pooled connections were cut: a write may fail once, then the pool reconnects.
    let mut ok_after = None;
    for attempt in 0..10 {
        if s.append_samples(&[temp_row(T0 + 1000 * (attempt + 1), 2.0)]).is_ok() {
            ok_after = Some(attempt);
            break;
        }
        assert!(matches!(s.write_health(), WriteHealth::Failing { .. }));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(ok_after.is_some(), "writes did not resume after the restart");
    assert_eq!(s.write_health(), WriteHealth::Ok);
    assert!(s.latest(&GpuUuid::new("GPU-0001")).unwrap()[0].1.value == 2.0);
}

fn open_incident(id: &str, key: &str) -> gpuwarden_model::Incident {
    use gpuwarden_model::{Action, FindingKind, Incident, IncidentState, Severity};
    Incident {
        id: id.into(),
        dedup_key: key.into(),
        rule: "throttle.power_brake".into(),
        kind: FindingKind::Health,
        severity: Severity::Critical,
        gpu: Some(GpuUuid::new("GPU-0001")),
        node: "node-a".into(),
        state: IncidentState::Open,
        summary: "power brake".into(),
        action: Action::DrainNode,
        opened_ms: T0,
        updated_ms: T0,
        last_seen_ms: T0,
        acknowledged_ms: None,
        acknowledged_by: None,
        resolved_ms: None,
        resolution: None,
        finding_count: 1,
        correlation: Default::default(),
        labels: Default::default(),
        flaps: 0,
        timeline: Vec::new(),
    }
}

#[test]
fn two_instances_keep_one_unresolved_incident_per_key_and_each_transition_once() {
    use gpuwarden_model::IncidentState;
    use gpuwarden_store::IncidentWrite;
    let Some((_pg, _db, options)) = database() else {
        return;
    };
    let a = PostgresStore::open(&options).unwrap();
    let b = PostgresStore::open(&options).unwrap();
    let key = "throttle.power_brake@GPU-0001";
    let x = open_incident("inc-01AAAAAAAAAAAAAAAAAAAAAAAA", key);
    assert_eq!(
        a.write_incidents(std::slice::from_ref(&x)).unwrap(),
        vec![IncidentWrite::Stored { transition: true }]
    );
    // B saw the same condition and opened its own: it is told to adopt A's.
    let y = open_incident("inc-01BBBBBBBBBBBBBBBBBBBBBBBB", key);
    match &b.write_incidents(std::slice::from_ref(&y)).unwrap()[..] {
        [IncidentWrite::Adopted(w)] => assert_eq!(**w, x),
        other => panic!("expected adoption of {}: {other:?}", x.id),
    }
    // B, now on A's incident: a refresh is no transition; a resolution is, once.
    let mut x2 = x.clone();
    x2.last_seen_ms += 500;
    assert_eq!(
        b.write_incidents(&[x2.clone()]).unwrap(),
        vec![IncidentWrite::Stored { transition: false }]
    );
    let mut done = x2.clone();
    done.state = IncidentState::Resolved;
    done.resolved_ms = Some(T0 + 1000);
    assert_eq!(
        b.write_incidents(std::slice::from_ref(&done)).unwrap(),
        vec![IncidentWrite::Stored { transition: true }]
    );
    assert_eq!(
        a.write_incidents(std::slice::from_ref(&done)).unwrap(),
        vec![IncidentWrite::Stored { transition: false }]
    );
    // A stale copy does not write a person's acknowledgement (or a resolution newer than
    // anything it knows of) away: the writer adopts the stored version.
    let other_key = "ecc.dbe@GPU-0001";
    let mut v = open_incident("inc-01EEEEEEEEEEEEEEEEEEEEEEEE", other_key);
    a.write_incidents(std::slice::from_ref(&v)).unwrap();
    let mut acked = v.clone();
    acked.state = IncidentState::Acknowledged;
    acked.acknowledged_ms = Some(T0 + 50);
    acked.acknowledged_by = Some("alice".into());
    a.upsert_incidents(std::slice::from_ref(&acked)).unwrap();
    v.last_seen_ms += 100;
    match &b.write_incidents(std::slice::from_ref(&v)).unwrap()[..] {
        [IncidentWrite::Adopted(w)] => assert_eq!(**w, acked),
        other => panic!("expected the acknowledged version: {other:?}"),
    }
    let mut gone = acked.clone();
    gone.state = IncidentState::Resolved;
    gone.resolved_ms = Some(T0 + 5_000);
    a.write_incidents(std::slice::from_ref(&gone)).unwrap();
    let mut stale = acked.clone();
    stale.last_seen_ms = T0 + 4_000;
    match &b.write_incidents(std::slice::from_ref(&stale)).unwrap()[..] {
        [IncidentWrite::Adopted(w)] => assert_eq!(w.state, IncidentState::Resolved),
        other => panic!("expected the resolved version: {other:?}"),
    }
    // A reopening (it knows of something after the resolution) is written.
    let mut reopened = acked.clone();
    reopened.state = IncidentState::Open;
    reopened.acknowledged_ms = None;
    reopened.timeline.push(gpuwarden_model::TimelineEntry {
        ts_ms: T0 + 6_000,
        what: "reopened".into(),
        detail: "condition back".into(),
        severity: None,
    });
    assert_eq!(
        b.write_incidents(std::slice::from_ref(&reopened)).unwrap(),
        vec![IncidentWrite::Stored { transition: true }]
    );

    // Resolved: a new incident of the key may open.
    let z = open_incident("inc-01CCCCCCCCCCCCCCCCCCCCCCCC", key);
    assert_eq!(
        a.write_incidents(std::slice::from_ref(&z)).unwrap(),
        vec![IncidentWrite::Stored { transition: true }]
    );
    // The unique index backs it up for writers that bypass write_incidents.
    let w = open_incident("inc-01DDDDDDDDDDDDDDDDDDDDDDDD", key);
    assert!(b.upsert_incidents(&[w]).is_err());

    // Racing: 8 writers, 8 ids, one new key, at once: one stored, 7 adopt it.
    let shared: Arc<PostgresStore> = Arc::new(b);
    let race_key = "thermal.slowdown@GPU-0002";
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let s = shared.clone();
            std::thread::spawn(move || {
                s.write_incidents(&[open_incident(&format!("inc-01RACE{i:020}"), race_key)])
                    .unwrap()
            })
        })
        .collect();
    let outcomes: Vec<IncidentWrite> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, IncidentWrite::Stored { .. }))
        .count();
    assert_eq!(stored, 1, "{outcomes:?}");
    let winners: std::collections::BTreeSet<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            IncidentWrite::Adopted(w) => Some(w.id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "every loser adopts the same winner: {winners:?}");
    let unresolved = a
        .incidents()
        .unwrap()
        .into_iter()
        .filter(|i| i.dedup_key == race_key && i.state != IncidentState::Resolved)
        .count();
    assert_eq!(unresolved, 1);
}

#[test]
fn the_shared_outbox_is_claimed_once_in_order_and_again_after_the_lease() {
    use gpuwarden_store::postgres::outbox::NewOutboxRow;
    let Some((_pg, _db, options)) = database() else {
        return;
    };
    let sa = PostgresStore::open(&options).unwrap();
    let sb = PostgresStore::open(&options).unwrap();
    let (a, b) = (sa.handle().unwrap(), sb.handle().unwrap());
    let entry = |incident: &str, n: u32| NewOutboxRow {
        sink: "hook".into(),
        incident: incident.into(),
        notification: format!("{{\"incident\":\"{incident}\",\"n\":{n}}}"),
        silenced_by: None,
    };
    // Transition numbers: the second instance to take #1 of an incident adds nothing.
    assert_eq!(a.outbox_next_seq("inc-1", 11).unwrap(), Some(1));
    assert_eq!(b.outbox_next_seq("inc-1", 12).unwrap(), Some(1));
    let ids = a
        .outbox_enqueue(&[("inc-1".into(), 1, 11)], vec![entry("inc-1", 1)], T0)
        .unwrap();
    assert_eq!(ids.len(), 1);
    let lost = b
        .outbox_enqueue(&[("inc-1".into(), 1, 12)], vec![entry("inc-1", 1)], T0)
        .unwrap();
    assert!(lost.is_empty(), "the same transition enqueued twice: {lost:?}");
    assert_eq!(a.outbox_next_seq("inc-1", 11).unwrap(), None, "a repeat");
    a.outbox_enqueue(&[("inc-1".into(), 2, 13)], vec![entry("inc-1", 2)], T0)
        .unwrap();
    a.outbox_enqueue(&[("inc-2".into(), 1, 21)], vec![entry("inc-2", 1)], T0)
        .unwrap();

    // A claims: the head of each incident (inc-1 #1, inc-2 #1), not inc-1 #2.
    let got = a.outbox_claim("hook", 10, "A", T0, 3000).unwrap();
    let heads: Vec<&str> = got.iter().map(|r| r.notification.as_str()).collect();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads.iter().all(|n| n.contains("\"n\": 1")), "{heads:?}");
    // B finds nothing while A's lease holds.
    assert!(b.outbox_claim("hook", 10, "B", T0 + 1000, 3000).unwrap().is_empty());
    // A delivers inc-2's; then A dies holding inc-1 #1. After the lease B gets it.
    a.outbox_finish(&[got[1].id], "delivered", None, T0 + 1000, 100)
        .unwrap();
    assert!(b.outbox_claim("hook", 10, "B", T0 + 2999, 3000).unwrap().is_empty());
    let taken = b.outbox_claim("hook", 10, "B", T0 + 3000, 3000).unwrap();
    assert_eq!(taken.iter().map(|r| r.id).collect::<Vec<_>>(), vec![got[0].id]);
    b.outbox_finish(&[got[0].id], "delivered", None, T0 + 3100, 100)
        .unwrap();
    // Only now is inc-1 #2 the head.
    let next = b.outbox_claim("hook", 10, "B", T0 + 3200, 3000).unwrap();
    assert_eq!(next.len(), 1);
    assert!(next[0].notification.contains("\"n\": 2"), "{:?}", next[0]);
    b.outbox_attempt(&[next[0].id], "HTTP 503", T0 + 3300).unwrap();
    let c = a.outbox_counts("hook").unwrap();
    assert_eq!((c.pending, c.delivered), (1, 2));
    let recent = a.outbox_recent("hook", 10).unwrap();
    let tried = recent.iter().find(|r| r.id == next[0].id).unwrap();
    assert_eq!(tried.attempts, 1);
    assert_eq!(tried.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(tried.state, "pending");
    b.outbox_finish(&[tried.id], "delivered", None, T0 + 3400, 100).unwrap();

    // Many claimers at once: each entry claimed by exactly one.
    let many: Vec<NewOutboxRow> = (0..200).map(|i| entry(&format!("inc-m{i}"), 1)).collect();
    a.outbox_enqueue(&[], many, T0).unwrap();
    let claimers: Vec<_> = (0..4)
        .map(|k| {
            let h = if k % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let got = h
                        .outbox_claim("hook", 7, &format!("C{k}"), T0 + 10_000, 60_000)
                        .unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    // Sent: marked, as a sender does (its own claims come back otherwise).
                    let ids: Vec<i64> = got.iter().map(|r| r.id).collect();
                    h.outbox_finish(&ids, "delivered", None, T0 + 10_001, 1000).unwrap();
                    mine.extend(ids);
                }
            })
        })
        .collect();
    let mut all: Vec<i64> = claimers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), n, "an entry was claimed twice");
    assert_eq!(n, 200);
}

#[test]
fn silences_are_shared_rows() {
    let Some((_pg, _db, options)) = database() else {
        return;
    };
    let sa = PostgresStore::open(&options).unwrap();
    let sb = PostgresStore::open(&options).unwrap();
    let (a, b) = (sa.handle().unwrap(), sb.handle().unwrap());
    a.silences_save(vec![("sil-1".into(), "{\"id\":\"sil-1\"}".into())], vec![], T0)
        .unwrap();
    b.silences_save(vec![("sil-2".into(), "{\"id\":\"sil-2\"}".into())], vec![], T0 + 1)
        .unwrap();
    assert_eq!(a.silences_load().unwrap().len(), 2);
    b.silences_save(vec![], vec!["sil-1".into()], T0 + 2).unwrap();
    assert_eq!(a.silences_load().unwrap(), vec!["{\"id\": \"sil-2\"}".to_string()]);
}

#[test]
fn state_documents_batch_ids_and_sessions_are_shared_between_instances() {
    use gpuwarden_store::docs::{PgDocs, StateDocs};
    let Some((_pg, _db, options)) = database() else {
        return;
    };
    let sa = PostgresStore::open(&options).unwrap();
    let sb = PostgresStore::open(&options).unwrap();
    let (a, b) = (sa.handle().unwrap(), sb.handle().unwrap());
    // Documents: written by one, read by the other, replaced whole.
    let (da, db) = (PgDocs(a.clone()), PgDocs(b.clone()));
    assert_eq!(db.get("xid-tracker.json").unwrap(), None);
    da.put("xid-tracker.json", b"{\"gpus\":{}}").unwrap();
    assert_eq!(
        db.get("xid-tracker.json").unwrap().as_deref(),
        Some(&b"{\"gpus\":{}}"[..])
    );
    db.put("xid-tracker.json", &[0, 159, 146, 150]).unwrap();
    assert_eq!(da.get("xid-tracker.json").unwrap(), Some(vec![0, 159, 146, 150]));
    // Batch ids: a batch stored through one is a duplicate on the other.
    assert!(!b.batch_seen("b-1").unwrap());
    a.batch_record("b-1", T0, 10).unwrap();
    a.batch_record("b-1", T0 + 1, 10).unwrap();
    assert!(b.batch_seen("b-1").unwrap());
    // Sessions: by hash, until they expire; removal ends them everywhere.
    a.session_put("h1", "{\"csrf\":\"x\"}".into(), T0 + 1000, T0).unwrap();
    assert_eq!(
        b.session_get("h1", T0 + 999).unwrap().as_deref(),
        Some("{\"csrf\": \"x\"}")
    );
    assert_eq!(b.session_get("h1", T0 + 1000).unwrap(), None, "expired");
    b.session_remove("h1").unwrap();
    assert_eq!(a.session_get("h1", T0).unwrap(), None);
}

#[test]
fn migrating_a_version_1_database_resolves_duplicate_open_incidents() {
    use gpuwarden_model::IncidentState;
    let Some((pg, db, options)) = database() else {
        return;
    };
    // A version-1 database that two instances shared: two open incidents for one key.
    {
        let s = PostgresStore::open(&options).unwrap();
        s.upsert_incidents(&[open_incident("inc-01KEEP0000000000000000000A", "k@GPU-0001")])
            .unwrap();
    }
    let mut dup = open_incident("inc-01DUPE0000000000000000000B", "k@GPU-0001");
    dup.opened_ms += 10;
    let json = serde_json::to_string(&dup).unwrap().replace('\'', "''");
    pg.psql(
        &db,
        &format!(
            "DROP INDEX incidents_one_unresolved_per_key; \
             INSERT INTO incidents (id, state, updated_ms, resolved_ms, incident, dedup_key) \
             VALUES ('{}', 'open', {}, NULL, '{json}'::jsonb, 'k@GPU-0001'); \
             DELETE FROM gpuwarden_schema WHERE version = 2; \
             DROP TABLE notify_seq, notify_outbox, silences, state_docs, ingest_batches, ui_sessions; \
             ALTER TABLE incidents DROP COLUMN dedup_key;",
            dup.id, dup.updated_ms
        ),
    )
    .unwrap();
    let s = PostgresStore::open(&options).unwrap();
    let by_id: std::collections::BTreeMap<String, IncidentState> =
        s.incidents().unwrap().into_iter().map(|i| (i.id, i.state)).collect();
    assert_eq!(by_id["inc-01KEEP0000000000000000000A"], IncidentState::Open);
    assert_eq!(by_id["inc-01DUPE0000000000000000000B"], IncidentState::Resolved);
}
