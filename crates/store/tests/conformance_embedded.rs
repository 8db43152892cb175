//! The shared store conformance suite (`gpuwarden_store::conformance`) against the
//! embedded store, each test on a fresh directory.

use gpuwarden_store::conformance::Fixture;
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::Store;
use std::sync::Arc;

struct Embedded {
    dir: tempfile::TempDir,
    store: Option<Arc<EmbeddedStore>>,
}

impl Embedded {
    fn new() -> Embedded {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap());
        Embedded {
            dir,
            store: Some(store),
        }
    }
}

impl Fixture for Embedded {
    fn store(&self) -> &dyn Store {
        &**self.store.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        let old = self.store.take().unwrap();
        assert_eq!(Arc::strong_count(&old), 1, "a test still holds the store");
        drop(old);
        self.store = Some(Arc::new(
            EmbeddedStore::open(self.dir.path(), EmbeddedOptions::default()).unwrap(),
        ));
    }

    fn shared(&self) -> Arc<dyn Store> {
        self.store.clone().unwrap()
    }
}

gpuwarden_store::store_conformance_tests!(Some(Embedded::new()));
