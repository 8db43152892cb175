//! The shared store conformance suite (`gpuwarden_store::conformance`) against the
//! PostgreSQL store on a real, throwaway PostgreSQL server (`pg_cluster`), each test in
//! its own database. Skips when PostgreSQL is not installed, unless
//! `GPUWARDEN_REQUIRE_TOOLS=1` (then it fails).
#![cfg(feature = "postgres")]

use gpuwarden_store::conformance::Fixture;
use gpuwarden_store::pg_cluster::PgCluster;
use gpuwarden_store::postgres::{PostgresOptions, PostgresStore};
use gpuwarden_store::Store;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// One server for the tests of this binary while any of them runs: started by the first,
/// stopped and removed when the last fixture using it is dropped.
static CLUSTER: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

fn cluster() -> Option<Arc<PgCluster>> {
    let mut slot = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = slot.upgrade() {
        return Some(c);
    }
    let c = Arc::new(PgCluster::start_or_skip("conformance_postgres")?);
    *slot = Arc::downgrade(&c);
    Some(c)
}

struct Postgres {
    options: PostgresOptions,
    store: Option<Arc<PostgresStore>>,
    // Dropped last: the server outlives the store's connections.
    _cluster: Arc<PgCluster>,
}

fn fixture() -> Option<Postgres> {
    let cluster = cluster()?;
    let name = format!("conf_{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let url = cluster.create_database(&name).unwrap();
    let options = PostgresOptions {
        url,
        ..PostgresOptions::default()
    };
    let store = Arc::new(PostgresStore::open(&options).unwrap());
    Some(Postgres {
        options,
        store: Some(store),
        _cluster: cluster,
    })
}

impl Fixture for Postgres {
    fn store(&self) -> &dyn Store {
        &**self.store.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        drop(self.store.take());
        self.store = Some(Arc::new(PostgresStore::open(&self.options).unwrap()));
    }

    fn shared(&self) -> Arc<dyn Store> {
        self.store.clone().unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        drop(self.store.take());
    }
}

gpuwarden_store::store_conformance_tests!(fixture());
