//! The server's view of the token file: verification on the request path without any
//! file access, reloading when the file changes, and last-use times written lazily.
//!
//! The request path only reads memory: a bearer token is hashed and compared in
//! constant time against every known hash (a scan: token sets are tens to hundreds,
//! microseconds). Last use is noted in memory and written to the file by
//! [`TokenStore::flush_last_used`], which the maintenance task calls once a minute, so
//! a token's `last_used_ms` is at most about a minute behind and no request waits on
//! the disk. [`TokenStore::reload_if_changed`] (every second, from the same task) picks
//! up tokens created or revoked by the CLI.

use super::file::{self, TokenFile};
use super::token::{self, NewToken, Secret, TokenRecord, TokenStatus};
use super::{AuthError, Denied};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// What identifies one version of the file (rename gives a new inode, so an atomic
/// replace is seen even within the file system's timestamp granularity).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<std::time::SystemTime>,
    len: u64,
    inode: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Fingerprint {
        modified: m.modified().ok(),
        len: m.len(),
        inode,
    })
}

struct Entry {
    hash: [u8; 32],
    record: TokenRecord,
}

#[derive(Default)]
struct Loaded {
    entries: Vec<Entry>,
    fingerprint: Option<Fingerprint>,
    /// Why the last reload failed: every token is refused until the file is fixed.
    error: Option<String>,
}

/// The tokens of one data directory, as the server uses them.
pub struct TokenStore {
    dir: PathBuf,
    loaded: RwLock<Loaded>,
    /// Uses not yet written to the file: token id → time.
    pending_use: Mutex<HashMap<String, i64>>,
}

fn entries(file: TokenFile) -> Vec<Entry> {
    file.tokens
        .into_iter()
        .filter_map(|record| {
            // `file::parse` checked every hash; nothing is dropped here.
            token::unhex32(&record.sha256).map(|hash| Entry { hash, record })
        })
        .collect()
}

impl TokenStore {
    /// Loads the token file of `dir` (an [`file::auth_dir`]); a corrupt file is an error.
    pub fn open(dir: &Path) -> Result<Self, AuthError> {
        let path = file::tokens_path(dir);
        let fp = fingerprint(&path);
        let f = file::load(dir)?;
        Ok(TokenStore {
            dir: dir.to_path_buf(),
            loaded: RwLock::new(Loaded {
                entries: entries(f),
                fingerprint: fp,
                error: None,
            }),
            pending_use: Mutex::new(HashMap::new()),
        })
    }

    /// The directory holding the token file.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the file when it changed since the last read. Returns whether it did.
    /// A file that no longer parses refuses every token (and is logged) until fixed:
    /// the previous set might hold tokens revoked since.
    pub fn reload_if_changed(&self) -> bool {
        let path = file::tokens_path(&self.dir);
        let fp = fingerprint(&path);
        if fp == self.loaded.read().fingerprint {
            return false;
        }
        let mut l = self.loaded.write();
        match file::load(&self.dir) {
            Ok(f) => {
                if l.error.take().is_some() {
                    tracing::info!("the token file {} is readable again", path.display());
                }
                l.entries = entries(f);
            }
            Err(e) => {
                tracing::error!("{e}; every API token is refused until the file is fixed");
                l.entries.clear();
                l.error = Some(e.to_string());
            }
        }
        l.fingerprint = fp;
        true
    }

    /// Checks a presented bearer token; on success notes its use and returns its record.
    pub fn verify(&self, presented: &str, now_ms: i64) -> Result<TokenRecord, Denied> {
        let hash = token::hash_presented(presented).ok_or(Denied::Malformed)?;
        let l = self.loaded.read();
        if l.error.is_some() {
            return Err(Denied::Unavailable);
        }
        // Every entry is compared, whatever matches, in constant time.
        let mut found: Option<&Entry> = None;
        for e in &l.entries {
            if bool::from(e.hash.ct_eq(&hash)) {
                found = Some(e);
            }
        }
        let e = found.ok_or(Denied::Unknown)?;
        match e.record.status(now_ms) {
            TokenStatus::Active => {}
            TokenStatus::Expired => return Err(Denied::Expired(e.record.id.clone())),
            TokenStatus::Revoked => return Err(Denied::Revoked(e.record.id.clone())),
        }
        self.pending_use.lock().insert(e.record.id.clone(), now_ms);
        Ok(e.record.clone())
    }

    /// The record of token `id` when it is usable now (for sessions signed in with it).
    pub fn active(&self, id: &str, now_ms: i64) -> Option<TokenRecord> {
        let l = self.loaded.read();
        if l.error.is_some() {
            return None;
        }
        l.entries
            .iter()
            .find(|e| e.record.id == id && e.record.status(now_ms) == TokenStatus::Active)
            .map(|e| e.record.clone())
    }

    /// Every token (no secrets; last use includes uses not yet written).
    pub fn list(&self) -> Vec<TokenRecord> {
        let pending = self.pending_use.lock().clone();
        self.loaded
            .read()
            .entries
            .iter()
            .map(|e| {
                let mut r = e.record.clone();
                if let Some(t) = pending.get(&r.id) {
                    r.last_used_ms = Some(r.last_used_ms.map_or(*t, |old| old.max(*t)));
                }
                r
            })
            .collect()
    }

    /// Tokens usable now.
    pub fn usable(&self, now_ms: i64) -> usize {
        self.loaded
            .read()
            .entries
            .iter()
            .filter(|e| e.record.status(now_ms) == TokenStatus::Active)
            .count()
    }

    /// Creates a token (the API's `POST /api/v1/auth/tokens`), effective at once.
    pub fn create(&self, spec: &NewToken, now_ms: i64) -> Result<(Secret, TokenRecord), AuthError> {
        let out = file::create(&self.dir, spec, now_ms)?;
        self.reload_if_changed();
        Ok(out)
    }

    /// Revokes a token, effective at once.
    pub fn revoke(&self, id: &str, now_ms: i64) -> Result<TokenRecord, AuthError> {
        let out = file::revoke(&self.dir, id, now_ms)?;
        self.reload_if_changed();
        Ok(out)
    }

    /// Writes the noted uses into the file (one locked update for all of them). Blocking
    /// I/O: call it off the async executor.
    pub fn flush_last_used(&self) -> Result<usize, AuthError> {
        let pending = std::mem::take(&mut *self.pending_use.lock());
        if pending.is_empty() {
            return Ok(0);
        }
        let n = pending.len();
        let result = file::update(&self.dir, |f| {
            for t in &mut f.tokens {
                if let Some(at) = pending.get(&t.id) {
                    t.last_used_ms = Some(t.last_used_ms.map_or(*at, |old| old.max(*at)));
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                self.reload_if_changed();
                Ok(n)
            }
            Err(e) => {
                // Keep them for the next try (newer uses win).
                let mut p = self.pending_use.lock();
                for (id, at) in pending {
                    let slot = p.entry(id).or_insert(at);
                    *slot = (*slot).max(at);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Role;
    use std::time::Duration;

    fn spec(role: Role, expires: Option<Duration>) -> NewToken {
        NewToken {
            name: "t".into(),
            role,
            tenant: None,
            expires_in: expires,
        }
    }

    #[test]
    fn verifies_expires_and_revokes() {
        let dir = tempfile::tempdir().unwrap();
        let d = file::auth_dir(dir.path());
        let store = TokenStore::open(&d).unwrap();
        let (viewer, vrec) = store.create(&spec(Role::Viewer, None), 0).unwrap();
        let (short, _) = store
            .create(&spec(Role::Admin, Some(Duration::from_secs(10))), 0)
            .unwrap();
        assert_eq!(store.verify(viewer.expose(), 5).unwrap().id, vrec.id);
        assert_eq!(store.verify(short.expose(), 9_999).unwrap().role, Role::Admin);
        assert!(matches!(store.verify(short.expose(), 10_000), Err(Denied::Expired(_))));
        // A well-formed token nobody issued, and garbage.
        let (forged, _) = token::generate().unwrap();
        assert!(matches!(store.verify(forged.expose(), 5), Err(Denied::Unknown)));
        assert!(matches!(store.verify("hunter2", 5), Err(Denied::Malformed)));
        store.revoke(&vrec.id, 6).unwrap();
        assert!(matches!(store.verify(viewer.expose(), 7), Err(Denied::Revoked(_))));
        assert!(store.active(&vrec.id, 7).is_none());
    }

    #[test]
    fn changes_by_another_process_are_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let d = file::auth_dir(dir.path());
        let store = TokenStore::open(&d).unwrap();
        // As the CLI would: straight into the file.
        let (secret, rec) = file::create(&d, &spec(Role::Operator, None), 0).unwrap();
        assert!(matches!(store.verify(secret.expose(), 1), Err(Denied::Unknown)));
        assert!(store.reload_if_changed());
        assert!(!store.reload_if_changed(), "unchanged file is not re-read");
        assert!(store.verify(secret.expose(), 1).is_ok());
        file::revoke(&d, &rec.id, 2).unwrap();
        assert!(store.reload_if_changed());
        assert!(matches!(store.verify(secret.expose(), 3), Err(Denied::Revoked(_))));
    }

    #[test]
    fn a_file_corrupted_while_running_refuses_every_token() {
        let dir = tempfile::tempdir().unwrap();
        let d = file::auth_dir(dir.path());
        let store = TokenStore::open(&d).unwrap();
        let (secret, _) = store.create(&spec(Role::Admin, None), 0).unwrap();
        std::fs::write(file::tokens_path(&d), b"{not json").unwrap();
        assert!(store.reload_if_changed());
        assert!(matches!(store.verify(secret.expose(), 1), Err(Denied::Unavailable)));
        // And at start it is an error, not an empty set.
        assert!(matches!(TokenStore::open(&d), Err(AuthError::Corrupt { .. })));
    }

    #[test]
    fn last_use_is_written_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let d = file::auth_dir(dir.path());
        let store = TokenStore::open(&d).unwrap();
        let (secret, rec) = store.create(&spec(Role::Viewer, None), 0).unwrap();
        store.verify(secret.expose(), 42).unwrap();
        store.verify(secret.expose(), 43).unwrap();
        // Not on the request path: the file still has no last use …
        assert_eq!(file::load(&d).unwrap().tokens[0].last_used_ms, None);
        // … but the list shows it.
        assert_eq!(store.list()[0].last_used_ms, Some(43));
        assert_eq!(store.flush_last_used().unwrap(), 1);
        let f = file::load(&d).unwrap();
        assert_eq!(f.tokens[0].id, rec.id);
        assert_eq!(f.tokens[0].last_used_ms, Some(43));
        assert_eq!(store.flush_last_used().unwrap(), 0, "nothing new to write");
    }
}
