//! The check in front of every route of the API/UI listener (inside the request guard).
//!
//! 1. Public routes ([`super::policy::PUBLIC`]) pass untouched.
//! 2. The caller is identified by `Authorization: Bearer <token>`, else by the UI's
//!    session cookie; a change made with the cookie must carry the session's
//!    `X-CSRF-Token`. Nothing, or anything invalid: `401` with
//!    `WWW-Authenticate: Bearer`.
//! 3. The role the policy table asks for, and no tenant on fleet-wide routes; else `403`.
//! 4. The [`Principal`] (and a tenant's [`CallerScope`]) go into the request's
//!    extensions for the handlers, and the principal into the response's extensions for
//!    outer layers (the audit trail).

use super::policy::{self, Access};
use super::session;
use super::Auth;
use crate::principal::Principal;
use crate::ApiError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// How the caller proved who it is (in the request's extensions, for `whoami`).
#[derive(Debug, Clone)]
pub enum Via {
    Bearer,
    /// A UI session; its CSRF token is shown to the UI by `whoami`.
    Session {
        csrf: String,
    },
}

/// The CSRF header of changes made with the session cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";

pub(crate) fn unauthorized(message: String) -> Response {
    let mut r = ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message,
    }
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"gpuwarden\""),
    );
    r
}

fn forbidden(code: &'static str, message: String) -> Response {
    ApiError {
        status: StatusCode::FORBIDDEN,
        code,
        message,
    }
    .into_response()
}

fn is_change(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a request is refused before its role is looked at.
enum Refusal {
    Unauthorized(String),
    Forbidden(&'static str, String),
}

impl Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized(m) => unauthorized(m),
            Refusal::Forbidden(code, m) => forbidden(code, m),
        }
    }
}

/// Who is calling, or why the request is refused.
async fn identify(auth: &Auth, headers: &axum::http::HeaderMap, method: &Method) -> Result<(Principal, Via), Refusal> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().unwrap_or("");
        let Some(bearer) = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
            .map(str::trim)
        else {
            return Err(Refusal::Unauthorized(
                "the Authorization header must be `Bearer <token>` (create a token with `gpuwarden auth token create`)"
                    .into(),
            ));
        };
        return match auth.check_bearer(bearer).await {
            Ok((p, _)) => Ok((p, Via::Bearer)),
            Err(d) => Err(Refusal::Unauthorized(d.message())),
        };
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::cookie_value);
    if let Some(id) = cookie {
        let now = auth.now_ms();
        let Some(s) = auth.sessions().get(id, now) else {
            return Err(Refusal::Unauthorized("the session has ended; sign in again".into()));
        };
        if !auth.still_valid(&s.principal.id) {
            auth.sessions().remove(id);
            return Err(Refusal::Unauthorized(
                "the token this session signed in with is no longer valid; sign in again".into(),
            ));
        }
        if is_change(method) {
            let sent = headers.get(CSRF_HEADER).map(|v| v.as_bytes()).unwrap_or(b"");
            if !bool::from(sent.ct_eq(s.csrf.as_bytes())) {
                return Err(Refusal::Forbidden(
                    "csrf",
                    "changes made with the session cookie must send the session's X-CSRF-Token header \
                     (GET /api/v1/auth/whoami shows it)"
                        .into(),
                ));
            }
        }
        return Ok((s.principal, Via::Session { csrf: s.csrf }));
    }
    Err(Refusal::Unauthorized(
        "authentication is required: send `Authorization: Bearer <token>` (create one with \
         `gpuwarden auth token create --role viewer`) or sign in through the web UI"
            .into(),
    ))
}

/// Middleware: see the module doc. Install with `route_layer` so the route template
/// ([`MatchedPath`]) is known.
pub async fn authenticate(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| path.clone());
    let (role, fleet_wide) = match policy::access(req.method(), &route, &path) {
        Access::Public => return next.run(req).await,
        Access::Needs { role, fleet_wide } => (role, fleet_wide),
    };
    let (principal, via) = match identify(&auth, req.headers(), req.method()).await {
        Ok(x) => x,
        Err(refusal) => return refusal.into_response(),
    };
    let scope = match auth.scope_of(&principal) {
        Ok(s) => s,
        Err(d) => return unauthorized(d.message()),
    };
    let mut refused = None;
    if principal.role < role {
        refused = Some(forbidden(
            "forbidden",
            format!(
                "{} {route} needs the {role} role; {} has {}",
                req.method(),
                principal.id,
                principal.role
            ),
        ));
    } else if fleet_wide && principal.tenant.is_some() {
        refused = Some(forbidden(
            "forbidden",
            format!(
                "{} {route} covers the whole fleet; {} is confined to tenant {:?}",
                req.method(),
                principal.id,
                principal.tenant.as_deref().unwrap_or_default()
            ),
        ));
    }
    if let Some(mut resp) = refused {
        // The audit trail records denied requests too: it needs to know whose.
        resp.extensions_mut().insert(principal);
        return resp;
    }
    if let Some(scope) = scope {
        req.extensions_mut().insert(scope);
    }
    req.extensions_mut().insert(principal.clone());
    req.extensions_mut().insert(via);
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(principal);
    resp
}
