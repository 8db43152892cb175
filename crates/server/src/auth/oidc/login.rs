//! The web UI's sign-in through the OpenID provider (authorization code flow with PKCE).
//!
//! `GET /auth/oidc/login` remembers a random `state`, `nonce` and PKCE verifier (server
//! side, ten minutes, single use), binds the `state` to the browser with a short-lived
//! `SameSite=Lax` cookie (the provider's redirect back is a cross-site navigation, which a
//! `Strict` cookie would not survive) and redirects to the provider.
//! `GET /auth/oidc/callback` checks `state` against both, exchanges the code (with the
//! verifier and, for confidential clients, the secret) at the token endpoint, verifies
//! the ID token like any JWT plus its `nonce`, maps its claims to a role, and starts the
//! same cookie session as a token sign-in. Every failure — refused consent, a replayed or
//! foreign `state`, a provider that cannot be reached, an account without a role — is a
//! plain page saying what happened and how to go on, never a 500.

use super::verifier::Purpose;
use crate::auth::token::os_random;
use crate::auth::{session, Auth, Denied};
use crate::principal::Role;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// The login-binding cookie.
pub const STATE_COOKIE: &str = "gpw_oidc_state";
/// How long a started sign-in may take at the provider.
const PENDING_TTL_MS: i64 = 10 * 60 * 1000;
/// Most sign-ins pending at once (each costs ~200 bytes; oldest dropped past it).
const MAX_PENDING: usize = 10_000;

pub const LOGIN_PATH: &str = "/auth/oidc/login";
pub const CALLBACK_PATH: &str = "/auth/oidc/callback";

struct Pending {
    nonce: String,
    code_verifier: String,
    created_ms: i64,
}

/// Sign-ins started and not yet finished, by `state`.
#[derive(Default)]
pub(crate) struct PendingLogins(Mutex<HashMap<String, Pending>>);

impl PendingLogins {
    fn insert(&self, state: String, p: Pending, now_ms: i64) {
        let mut m = self.0.lock();
        m.retain(|_, p| now_ms - p.created_ms < PENDING_TTL_MS);
        if m.len() >= MAX_PENDING {
            if let Some(oldest) = m.iter().min_by_key(|(_, p)| p.created_ms).map(|(k, _)| k.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(state, p);
    }

    /// Takes (single use) the live sign-in `state`.
    fn take(&self, state: &str, now_ms: i64) -> Option<Pending> {
        self.0
            .lock()
            .remove(state)
            .filter(|p| now_ms - p.created_ms < PENDING_TTL_MS)
    }
}

fn random_text() -> Result<String, crate::auth::AuthError> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(os_random::<32>()?))
}

/// PKCE S256 (RFC 7636 §4.2): BASE64URL(SHA256(verifier)).
pub fn code_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The two routes (public in the policy table: they are how one signs in).
pub fn routes(auth: Option<Arc<Auth>>) -> Router {
    Router::new()
        .route(LOGIN_PATH, get(login))
        .route(CALLBACK_PATH, get(callback))
        .with_state(auth)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A page explaining a failed sign-in, with a way back.
fn failure(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gpuwarden: {t}</title>\
         <link rel=\"stylesheet\" href=\"/ui/style.css\"></head><body><main class=\"signin-failed\">\
         <h1>{t}</h1><p id=\"reason\">{d}</p><p><a href=\"{LOGIN_PATH}\">Try again</a> · \
         <a href=\"/\">Sign in with a token</a></p></main></body></html>",
        t = escape(title),
        d = escape(detail)
    );
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&clear_state_cookie()) {
        h.append(header::SET_COOKIE, v);
    }
    r
}

fn state_cookie(state: &str) -> String {
    format!("{STATE_COOKIE}={state}; Secure; HttpOnly; SameSite=Lax; Path=/auth/oidc; Max-Age=600")
}

fn clear_state_cookie() -> String {
    format!("{STATE_COOKIE}=; Secure; HttpOnly; SameSite=Lax; Path=/auth/oidc; Max-Age=0")
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|h| h.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name && !v.is_empty()).then_some(v)
        })
}

fn not_configured() -> Response {
    failure(
        StatusCode::NOT_FOUND,
        "Sign-in through an OpenID provider is not configured",
        "This server has no [auth.oidc] client_id; sign in with an API token instead.",
    )
}

async fn login(State(auth): State<Option<Arc<Auth>>>) -> Response {
    let Some(auth) = auth else { return not_configured() };
    let Some(oidc) = auth.oidc().filter(|o| o.ui_sign_in()) else {
        return not_configured();
    };
    let (Some(client_id), Some(redirect)) = (&oidc.settings.client_id, &oidc.settings.redirect_url) else {
        return not_configured();
    };
    let meta = match oidc.provider.metadata().await {
        Ok(m) => m,
        Err(e) => {
            return failure(
                StatusCode::BAD_GATEWAY,
                "The sign-in provider cannot be reached",
                &format!("{e}. Try again later, or sign in with an API token."),
            )
        }
    };
    let Some(endpoint) = meta.authorization_endpoint.as_deref() else {
        return failure(
            StatusCode::BAD_GATEWAY,
            "The sign-in provider is not usable",
            "Its discovery document names no authorization_endpoint.",
        );
    };
    let (state, nonce, verifier) = match (random_text(), random_text(), random_text()) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is not possible right now",
                "The server's random number generator failed; see its log.",
            )
        }
    };
    let Ok(mut url) = reqwest::Url::parse(endpoint) else {
        return failure(
            StatusCode::BAD_GATEWAY,
            "The sign-in provider is not usable",
            "Its authorization_endpoint is not a URL.",
        );
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", &oidc.settings.scopes.join(" "))
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &code_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    oidc.logins.insert(
        state.clone(),
        Pending {
            nonce,
            code_verifier: verifier,
            created_ms: auth.now_ms(),
        },
        auth.now_ms(),
    );
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(url.as_str()) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&state_cookie(&state)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[derive(Debug, serde::Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(auth): State<Option<Arc<Auth>>>,
    headers: HeaderMap,
    params: Result<Query<CallbackParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(auth) = auth else { return not_configured() };
    let Some(oidc) = auth.oidc().filter(|o| o.ui_sign_in()).cloned() else {
        return not_configured();
    };
    let Ok(Query(p)) = params else {
        return failure(
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid",
            "Its parameters could not be read. Start the sign-in again.",
        );
    };
    let now = auth.now_ms();
    // The state must be this browser's (cookie) and a live sign-in of ours (server side).
    let browser_state = cookie(&headers, STATE_COOKIE);
    let pending = match (&p.state, browser_state) {
        (Some(s), Some(b)) if s == b => oidc.logins.take(s, now),
        _ => None,
    };
    if let Some(err) = &p.error {
        let detail = match err.as_str() {
            "access_denied" => "You (or the provider) declined to let gpuwarden see your identity.".to_string(),
            other => format!(
                "The provider answered {other:?}{}.",
                p.error_description
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
        };
        return failure(StatusCode::UNAUTHORIZED, "Sign-in was not completed", &detail);
    }
    let Some(pending) = pending else {
        return failure(
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid here",
            "It was already used, has expired (after ten minutes), or was started in another browser. \
             Start the sign-in again.",
        );
    };
    let Some(code) = p.code.as_deref().filter(|c| !c.is_empty()) else {
        return failure(
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid",
            "The provider sent no authorization code. Start the sign-in again.",
        );
    };
    let (Some(client_id), Some(redirect)) = (
        oidc.settings.client_id.as_deref(),
        oidc.settings.redirect_url.as_deref(),
    ) else {
        return not_configured();
    };
    let id_token = match oidc
        .provider
        .exchange_code(
            code,
            redirect,
            &pending.code_verifier,
            client_id,
            oidc.settings.client_secret.as_ref().map(|s| s.0.as_str()),
        )
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("OpenID sign-in: exchanging the code failed: {e}");
            return failure(
                StatusCode::BAD_GATEWAY,
                "The sign-in provider did not confirm the sign-in",
                &format!("{e}. Start the sign-in again; if it persists, an admin checks the client settings."),
            );
        }
    };
    oidc.verifier.prepare_keys(&id_token).await;
    let verified = oidc
        .verifier
        .check(
            &id_token,
            auth.now_ms(),
            Purpose::IdToken {
                client_id,
                nonce: &pending.nonce,
            },
        )
        .and_then(|(claims, _)| oidc.verifier.principal(&claims))
        .and_then(|principal| auth.scope_of(&principal).map(|_| principal));
    let principal = match verified {
        Ok(p) => p,
        Err(d) => {
            let (status, title) = match d {
                Denied::Invalid(ref m) if m.contains("maps to a role") => {
                    (StatusCode::FORBIDDEN, "Your account has no role on this gpuwarden")
                }
                Denied::UnknownTenant(_) => (StatusCode::FORBIDDEN, "Your account's tenant is not configured here"),
                _ => (StatusCode::UNAUTHORIZED, "The provider's answer could not be verified"),
            };
            return failure(status, title, &d.message());
        }
    };
    // A scraper identity reads `/metrics` only; a UI session with it could read nothing.
    if principal.role < Role::Viewer {
        return failure(
            StatusCode::FORBIDDEN,
            "Your account may only scrape /metrics",
            "Its groups map to the scraper role, which cannot use the web UI; ask an admin for a viewer group.",
        );
    }
    let now = auth.now_ms();
    // The session lasts [auth] session_ttl, not the ID token's (often one hour) lifetime.
    let (id, s) = match auth.sessions().create(principal, None, now) {
        Ok(x) => x,
        Err(e) => {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "Sign-in is not possible right now",
                &format!("Starting the session failed: {e}"),
            )
        }
    };
    let max_age = ((s.expires_ms - now) / 1000).max(1);
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id, max_age)) {
        h.append(header::SET_COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&clear_state_cookie()) {
        h.append(header::SET_COOKIE, v);
    }
    // For the audit trail: who signed in.
    r.extensions_mut().insert(s.principal);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_matches_rfc_7636_appendix_b() {
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn pending_sign_ins_are_single_use_and_expire() {
        let p = PendingLogins::default();
        let mk = |t| Pending {
            nonce: "n".into(),
            code_verifier: "v".into(),
            created_ms: t,
        };
        p.insert("s1".into(), mk(0), 0);
        assert!(p.take("s1", 1_000).is_some());
        assert!(p.take("s1", 1_000).is_none(), "single use");
        p.insert("s2".into(), mk(0), 0);
        assert!(p.take("s2", PENDING_TTL_MS).is_none(), "expired");
        assert!(p.take("never", 0).is_none());
    }

    #[test]
    fn failure_pages_escape_and_are_not_500() {
        let r = failure(StatusCode::FORBIDDEN, "t", "<script>alert(1)</script>");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(escape("<a href=\"x\">'&"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
    }

    #[test]
    fn cookie_lookup() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; gpw_oidc_state=xyz"));
        assert_eq!(cookie(&h, STATE_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "gpw_oidc"), None);
    }
}
