//! Named state documents kept beside the store: the seam for small pieces of state that
//! are not samples (the XID tracker's state, the current failure model). [`FileDocs`]
//! keeps each as a file in a directory (the default: `data_dir`, as before); with the
//! store in PostgreSQL they are rows of `state_docs`, shared by every instance on the
//! database. [`for_store`] picks one.

use crate::{Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Small named documents (bytes), replaced whole.
pub trait StateDocs: Send + Sync {
    /// The document `name`, if there is one.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `bytes` as `name`, replacing it; durable on `Ok`.
    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// Where the documents are, for messages.
    fn describe(&self, name: &str) -> String;
}

/// Documents as files in one directory: `name` is a relative path below it. Written
/// under a temporary name, fsynced and renamed into place (the data directory's rule).
#[derive(Debug, Clone)]
pub struct FileDocs {
    dir: PathBuf,
}

impl FileDocs {
    pub fn new(dir: impl Into<PathBuf>) -> FileDocs {
        FileDocs { dir: dir.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Database {
        what: path.display().to_string(),
        reason: e.to_string(),
    }
}

impl StateDocs for FileDocs {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path, e)),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
            f.write_all(bytes).map_err(|e| io(&tmp, e))?;
            f.sync_all().map_err(|e| io(&tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// Documents in the PostgreSQL store's `state_docs` table.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone)]
pub struct PgDocs(pub crate::postgres::PgHandle);

#[cfg(feature = "postgres")]
impl StateDocs for PgDocs {
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.doc_get(name)
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.0.doc_put(name, bytes.to_vec(), now)
    }

    fn describe(&self, name: &str) -> String {
        format!("state document {name} in {}", self.0.target())
    }
}

/// The documents of `store`: in its database when it is PostgreSQL, else files in `dir`.
pub fn for_store(store: &dyn Store, dir: &Path) -> Arc<dyn StateDocs> {
    #[cfg(feature = "postgres")]
    if let Some(h) = store.postgres() {
        return Arc::new(PgDocs(h));
    }
    let _ = store;
    Arc::new(FileDocs::new(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_docs_round_trip_and_replace_whole() {
        let dir = tempfile::tempdir().unwrap();
        let d = FileDocs::new(dir.path());
        assert_eq!(d.get("xid-tracker.json").unwrap(), None);
        d.put("xid-tracker.json", b"{\"a\":1}").unwrap();
        d.put("models/failure-current.json", b"model").unwrap();
        d.put("xid-tracker.json", b"{}").unwrap();
        assert_eq!(d.get("xid-tracker.json").unwrap().as_deref(), Some(&b"{}"[..]));
        assert_eq!(
            std::fs::read(dir.path().join("models/failure-current.json")).unwrap(),
            b"model"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
