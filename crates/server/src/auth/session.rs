//! Web UI sessions: a browser signs in once with a token and then carries a random
//! session id in a `Secure; HttpOnly; SameSite=Strict` cookie — never the token itself.
//!
//! Sessions live in memory (a restart signs everyone out) and end at the earliest of
//! their own lifetime, the token's expiry and the token's revocation (checked on every
//! request). Each session has a CSRF token that the UI sends back in `X-CSRF-Token` on
//! every change made with the cookie: `SameSite=Strict` already keeps other sites'
//! requests cookieless, the CSRF token covers browsers and subdomain tricks that do not.

use super::token::os_random;
use super::AuthError;
use crate::principal::Principal;
use base64::Engine;
use parking_lot::Mutex;
use std::collections::HashMap;

/// The cookie's name.
pub const COOKIE: &str = "gpw_session";

/// Most sessions held at once; signing in past it first drops expired ones, then the
/// oldest.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    pub csrf: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// The sessions of this server.
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    ttl_ms: i64,
}

fn random_text() -> Result<String, AuthError> {
    let bytes: [u8; 32] = os_random()?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl Sessions {
    pub fn new(ttl: std::time::Duration) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1),
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
        map.insert(id.clone(), s.clone());
        Ok((id, s))
    }

    /// The live session `id`; an expired one is removed.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let mut map = self.map.lock();
        match map.get(id) {
            Some(s) if s.expires_ms > now_ms => Some(s.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().remove(id);
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
