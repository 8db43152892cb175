//! Web UI sessions: a browser signs in once with a token and then carries a random
//! session id in a `Secure; HttpOnly; SameSite=Strict` cookie — never the token itself.
//!
//! With the store in PostgreSQL they are also rows of `ui_sessions` ([`Sessions::share`]),
//! so every instance on the database knows them (hashes there too).
//!
//! Sessions are kept in `<data_dir>/auth/sessions.json` (0600, atomic replace), so a
//! restart or an upgrade signs nobody out; the file holds SHA-256 hashes of the session
//! ids, never the cookie values, so reading it does not let anyone sign in. A damaged file
//! costs only the sessions (everyone signs in again), never the start. Sessions end at the
//! earliest of their own lifetime, the token's expiry and the token's revocation (checked
//! on every request). Each session has a CSRF token that the UI sends back in `X-CSRF-Token` on
//! every change made with the cookie: `SameSite=Strict` already keeps other sites'
//! requests cookieless, the CSRF token covers browsers and subdomain tricks that do not.

use super::token::{hex, os_random};
use super::AuthError;
use crate::principal::Principal;
use base64::Engine;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// The cookie's name.
pub const COOKIE: &str = "gpw_session";

/// Most sessions held at once; signing in past it first drops expired ones, then the
/// oldest.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// The sessions of this server, keyed by the hash of their id.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    ttl_ms: i64,
    /// Where they are kept; `None`: in memory only (tests).
    path: Option<PathBuf>,
    /// With the store in PostgreSQL: the sessions are rows there too (`ui_sessions`), so a
    /// browser signed in on one instance is signed in on every instance on the database.
    #[cfg(feature = "postgres")]
    shared: std::sync::OnceLock<gpuwarden_store::postgres::PgHandle>,
}

/// The file's layout.
#[derive(Serialize, Deserialize)]
struct SessionFile {
    version: u32,
    /// hex SHA-256 of the session id → session.
    sessions: HashMap<String, Session>,
}

/// The key a session id is kept under.
fn key(id: &str) -> String {
    hex(&Sha256::digest(id.as_bytes()))
}

/// The session file in an auth directory.
pub fn sessions_path(auth_dir: &Path) -> PathBuf {
    auth_dir.join("sessions.json")
}

fn random_text() -> Result<String, AuthError> {
    let bytes: [u8; 32] = os_random()?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl Sessions {
    /// Sessions in memory only.
    pub fn new(ttl: std::time::Duration) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1),
            path: None,
            #[cfg(feature = "postgres")]
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Keeps sessions in the PostgreSQL store as well (set once, at start): a session
    /// created here is written there, and an id unknown here is looked up there. A
    /// database that fails is logged; the session still works on this instance.
    /// Sessions this instance already had (its file) are written there too.
    #[cfg(feature = "postgres")]
    pub fn share(&self, db: gpuwarden_store::postgres::PgHandle) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for (k, s) in self.map.lock().iter() {
            let put = serde_json::to_string(s)
                .map_err(|e| e.to_string())
                .and_then(|json| db.session_put(k, json, s.expires_ms, now).map_err(|e| e.to_string()));
            if let Err(e) = put {
                tracing::warn!("UI session not shared with the other instances: {e}");
            }
        }
        let _ = self.shared.set(db);
    }

    /// Sessions kept in `path`: the live ones there are loaded (expired ones dropped). A
    /// missing file is an empty one; an unreadable or damaged one is logged and set aside
    /// as `sessions.json.corrupt` (its users sign in again).
    pub fn open(ttl: std::time::Duration, path: PathBuf, now_ms: i64) -> Self {
        let mut s = Self::new(ttl);
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<SessionFile>(&bytes) {
                Ok(f) => {
                    let mut live = f.sessions;
                    live.retain(|_, v| v.expires_ms > now_ms);
                    *s.map.get_mut() = live;
                }
                Err(e) => {
                    tracing::warn!(
                        "{} is damaged ({e}); UI users sign in again (moved to sessions.json.corrupt)",
                        path.display()
                    );
                    let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot read {} ({e}); UI users sign in again", path.display()),
        }
        s.path = Some(path);
        s
    }

    /// Writes the sessions out (under the map's lock, so writes do not interleave). A
    /// failure (full disk) is logged: the session still works until the next restart.
    fn persist(&self, map: &HashMap<String, Session>) {
        let Some(path) = &self.path else { return };
        let file = SessionFile {
            version: 1,
            sessions: map.clone(),
        };
        if let Err(e) = write_private_atomic(path, &file) {
            tracing::warn!(
                "cannot keep UI sessions in {} ({e}); they end at the next restart",
                path.display()
            );
        }
    }

    /// Starts a session for `principal`, ending no later than `not_after_ms` (the
    /// token's expiry). Returns its id (the cookie value) and the session.
    pub fn create(
        &self,
        principal: Principal,
        not_after_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(String, Session), AuthError> {
        let id = random_text()?;
        let expires_ms = now_ms.saturating_add(self.ttl_ms).min(not_after_ms.unwrap_or(i64::MAX));
        let s = Session {
            principal,
            csrf: random_text()?,
            created_ms: now_ms,
            expires_ms,
        };
        let mut map = self.map.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires_ms > now_ms);
        }
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created_ms).map(|(k, _)| k.clone()) {
                map.remove(&oldest);
            }
        }
        map.retain(|_, s| s.expires_ms > now_ms);
        map.insert(key(&id), s.clone());
        self.persist(&map);
        #[cfg(feature = "postgres")]
        if let Some(db) = self.shared.get() {
            match serde_json::to_string(&s) {
                Ok(json) => {
                    if let Err(e) = db.session_put(&key(&id), json, s.expires_ms, now_ms) {
                        tracing::warn!("UI session not shared with the other instances: {e}");
                    }
                }
                Err(e) => tracing::warn!("UI session not shared with the other instances: {e}"),
            }
        }
        Ok((id, s))
    }

    /// The live session `id`; an expired one is forgotten (the file drops it at the next
    /// write).
    ///
    /// Shared (PostgreSQL): the database decides, so a sign-out on another instance ends
    /// the session here too; only when it cannot be asked does this instance's own copy
    /// answer.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let k = key(id);
        #[cfg(feature = "postgres")]
        if let Some(db) = self.shared.get() {
            match db.session_get(&k, now_ms) {
                Ok(found) => {
                    let s = found.and_then(|json| serde_json::from_str::<Session>(&json).ok());
                    let mut map = self.map.lock();
                    match &s {
                        Some(s) => map.insert(k, s.clone()),
                        None => map.remove(&k),
                    };
                    return s;
                }
                Err(e) => tracing::warn!("looking up a UI session in the database: {e}; using this instance's copy"),
            }
        }
        let mut map = self.map.lock();
        match map.get(&k) {
            Some(s) if s.expires_ms > now_ms => Some(s.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Ends session `id` (sign-out, or its token was revoked).
    pub fn remove(&self, id: &str) {
        let mut map = self.map.lock();
        if map.remove(&key(id)).is_some() {
            self.persist(&map);
        }
        #[cfg(feature = "postgres")]
        if let Some(db) = self.shared.get() {
            if let Err(e) = db.session_remove(&key(id)) {
                tracing::warn!("ending a UI session in the database: {e}");
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes `value` as JSON to `path` through a fsynced temporary file renamed over it,
/// readable by the owner only.
fn write_private_atomic(path: &Path, value: &impl Serialize) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).write(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The session id in a `Cookie` header, if any.
pub fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == COOKIE && !v.is_empty()).then_some(v)
    })
}

/// The `Set-Cookie` value starting a session.
pub fn set_cookie(id: &str, max_age_s: i64) -> String {
    format!("{COOKIE}={id}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}")
}

/// The `Set-Cookie` value ending one.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Role;

    fn p() -> Principal {
        Principal {
            id: "tok-1".into(),
            role: Role::Viewer,
            tenant: None,
        }
    }

    #[test]
    fn sessions_expire_at_ttl_or_token_expiry() {
        let s = Sessions::new(std::time::Duration::from_secs(10));
        let (id, sess) = s.create(p(), None, 0).unwrap();
        assert_eq!(sess.expires_ms, 10_000);
        assert!(s.get(&id, 9_999).is_some());
        assert!(s.get(&id, 10_000).is_none());
        assert!(s.is_empty(), "expired sessions are dropped");
        let (id, sess) = s.create(p(), Some(500), 0).unwrap();
        assert_eq!(sess.expires_ms, 500);
        assert_ne!(sess.csrf, id);
        s.remove(&id);
        assert!(s.get(&id, 1).is_none());
    }

    #[test]
    fn sessions_survive_a_restart_and_the_file_holds_no_cookie() {
        let dir = tempfile::tempdir().unwrap();
        let path = sessions_path(dir.path());
        let ttl = std::time::Duration::from_secs(10);
        let s = Sessions::open(ttl, path.clone(), 0);
        let (id, sess) = s.create(p(), None, 0).unwrap();
        let (gone, _) = s.create(p(), None, 0).unwrap();
        s.remove(&gone);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&id), "the file must not hold the cookie value");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        drop(s);
        let again = Sessions::open(ttl, path.clone(), 1_000);
        let back = again.get(&id, 1_000).expect("the session is back after a restart");
        assert_eq!((back.csrf, back.principal), (sess.csrf, sess.principal));
        assert!(again.get(&gone, 1_000).is_none(), "a signed-out session stays out");
        // Expired sessions are not loaded.
        assert!(Sessions::open(ttl, path, 10_000).is_empty());
    }

    #[test]
    fn a_damaged_session_file_costs_the_sessions_not_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = sessions_path(dir.path());
        std::fs::write(&path, b"{\"version\": 1, \"sess").unwrap();
        let s = Sessions::open(std::time::Duration::from_secs(10), path.clone(), 0);
        assert!(s.is_empty());
        assert!(path.with_extension("json.corrupt").exists());
        let (id, _) = s.create(p(), None, 0).unwrap();
        assert!(Sessions::open(std::time::Duration::from_secs(10), path, 1)
            .get(&id, 1)
            .is_some());
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie_value("a=b; gpw_session=xyz; c=d"), Some("xyz"));
        assert_eq!(cookie_value("gpw_session="), None);
        assert_eq!(cookie_value("gpw_sessionx=1"), None);
        let c = set_cookie("abc", 60);
        for part in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(part), "{c}");
        }
    }
}
