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
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM gpuwarden_schema").unwrap(), "1");
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
