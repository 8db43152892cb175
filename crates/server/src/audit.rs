//! The audit trail of the API/UI listener: a middleware, the outermost layer of
//! [`crate::router`], that records every state-changing request and every denied one in
//! the [`gpuwarden_audit::AuditLog`].
//!
//! - **Who**: the [`Principal`] the authentication middleware copied into the response's
//!   extensions, else [`Principal::anonymous`] (authentication off); a `401` without a
//!   principal is recorded as `anonymous` with role `none` (nobody was authenticated).
//! - **From where**: the connection's peer address (`ConnectInfo`, set by
//!   [`crate::listener`]). Forwarding headers are not trusted.
//! - **What**: an action named from the route (`incident.resolve`, `silence.create`,
//!   `silence.expire`, `token.create`, …; see [`action_of`]) and its target id (from the
//!   path, or the `id` of a `201 Created` answer).
//! - **Changes** (POST, PUT, PATCH, DELETE; not the push routes `/api/v1/ingest` and
//!   `/api/v1/write`, which carry data): a change that succeeded is written and fsynced
//!   on a blocking thread *before* the answer leaves. If that write fails the client gets
//!   `503 audit_unavailable` instead of its answer and the failure is logged: the change
//!   itself was already made (the record is written after the handler ran, because only
//!   then is the result known), but it is not acknowledged as done; the failure is
//!   logged at error level. A change that failed (4xx, 5xx) changed
//!   nothing and is recorded best-effort, aggregated like denials.
//!   The end of an OpenID sign-in (`GET /auth/oidc/callback`, `auth.oidc_sign_in`) is
//!   recorded the same way: it starts a session.
//! - **Denials** (401, 403, 415, 421, 429 on any method and route, the push routes
//!   included): best-effort and aggregated per client and reason
//!   ([`gpuwarden_audit::denials`]), so a flood of refused requests can neither fill the
//!   disk nor slow the API.

use crate::principal::Principal;
use crate::ApiError;
use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gpuwarden_audit::{AuditLog, Entry, Outcome};
use std::net::SocketAddr;
use std::sync::Arc;

/// Statuses that mean "refused": recorded on every route.
pub const DENIED: [u16; 5] = [401, 403, 415, 421, 429];

/// Largest answer body read to find an error code or a created id; larger ones are
/// passed through unread.
const PEEK_LIMIT: u64 = 16 << 10;

/// `router` with the audit middleware as its outermost layer (nothing when `log` is
/// `None`).
pub fn wrap(router: axum::Router, log: Option<Arc<AuditLog>>) -> axum::Router {
    match log {
        Some(log) => router.layer(axum::middleware::from_fn_with_state(log, record)),
        None => router,
    }
}

fn is_change(m: &Method) -> bool {
    matches!(*m, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
}

fn is_push(path: &str) -> bool {
    matches!(path, "/api/v1/ingest" | "/api/v1/write")
}

/// A path segment usable in an action name (routes are lower-case words).
fn word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn singular(s: &str) -> &str {
    s.strip_suffix('s').filter(|r| !r.is_empty()).unwrap_or(s)
}

/// The action and target of a change, from its method and path:
/// `POST /api/v1/incidents/{id}/resolve` → (`incident.resolve`, id),
/// `POST /api/v1/silences` → `silence.create`, `DELETE /api/v1/silences/{id}` →
/// `silence.expire`, `DELETE /api/v1/tokens/{id}` → `token.delete`,
/// `PUT /api/v1/config` → `config.update`, `POST /api/v1/notifications/test` →
/// `notification.test`, `POST /api/v1/simulation/faults` →
/// `simulation.fault_inject`; anything else `request.<method>`.
pub fn action_of(method: &Method, path: &str) -> (String, Option<String>) {
    let rest = path.strip_prefix("/api/v1/").unwrap_or(path.trim_start_matches('/'));
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let generic = || (format!("request.{}", method.as_str().to_ascii_lowercase()), None);
    let Some(res) = segs.first().copied().filter(|r| word(r)) else {
        return generic();
    };
    let res = singular(res);
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["auth", "oidc", "callback"]) => ("auth.oidc_sign_in".into(), None),
        (Method::POST, ["simulation", "faults"]) => ("simulation.fault_inject".into(), None),
        (Method::DELETE, ["silences", id]) => ("silence.expire".into(), Some(id.to_string())),
        (Method::POST, [_]) => (format!("{res}.create"), None),
        (Method::PUT | Method::PATCH, [_]) => (format!("{res}.update"), None),
        (Method::DELETE, [_]) => (format!("{res}.delete"), None),
        (Method::POST, [_, verb]) if word(verb) => (format!("{res}.{verb}"), None),
        (Method::POST, [_, id, verb]) if word(verb) => (format!("{res}.{verb}"), Some(id.to_string())),
        (Method::PUT | Method::PATCH, [_, id]) => (format!("{res}.update"), Some(id.to_string())),
        (Method::DELETE, [_, id]) => (format!("{res}.delete"), Some(id.to_string())),
        _ => generic(),
    }
}

/// Reads a small answer body (when it is small), returning the answer rebuilt and the
/// body's JSON. Large or streaming bodies are passed through unread.
async fn peek(resp: Response) -> (Response, Option<serde_json::Value>) {
    let small = resp.body().size_hint().upper().is_some_and(|n| n <= PEEK_LIMIT);
    if !small {
        return (resp, None);
    }
    let (parts, body) = resp.into_parts();
    match axum::body::to_bytes(body, PEEK_LIMIT as usize).await {
        Ok(bytes) => {
            let json = serde_json::from_slice(&bytes).ok();
            (Response::from_parts(parts, Body::from(bytes)), json)
        }
        Err(e) => {
            tracing::warn!("audit: reading an answer body: {e}");
            (ApiError::internal("reading the answer", e).into_response(), None)
        }
    }
}

/// The middleware (see the module doc).
pub async fn record(State(log): State<Arc<AuditLog>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string());
    // The OpenID sign-in ends with a GET that starts a session (answered 303): recorded
    // like a token sign-in.
    let sign_in = method == Method::GET && path == crate::auth::oidc::login::CALLBACK_PATH;
    let change = (is_change(&method) && !is_push(&path)) || sign_in;
    let resp = next.run(req).await;
    let status = resp.status();
    let denied = DENIED.contains(&status.as_u16());
    if !denied && !change {
        return resp;
    }
    let principal = resp.extensions().get::<Principal>().cloned();
    let (actor, role, tenant) = match principal {
        Some(p) => (p.id, p.role.as_str().to_string(), p.tenant),
        None if status == StatusCode::UNAUTHORIZED => ("anonymous".to_string(), "none".to_string(), None),
        None => {
            let p = Principal::anonymous();
            (p.id, p.role.as_str().to_string(), p.tenant)
        }
    };
    let peek_body = denied || !status.is_success() || status == StatusCode::CREATED;
    let (resp, json) = if peek_body { peek(resp).await } else { (resp, None) };
    let code = json
        .as_ref()
        .and_then(|j| j["error"]["code"].as_str())
        .map(str::to_string);
    let mut entry = Entry::new(actor, "", Outcome::Ok)
        .role(role)
        .tenant(tenant)
        .status(status.as_u16());
    entry.client = client;
    entry.detail = code;
    if denied {
        entry.action = "request.denied".into();
        entry.result = Outcome::Denied;
        entry.target = Some(format!("{method} {path}"));
        best_effort(&log, entry);
        return resp;
    }
    let (action, target) = action_of(&method, &path);
    entry.action = action;
    entry.target = target.or_else(|| {
        json.as_ref()
            .filter(|_| status == StatusCode::CREATED)
            .and_then(|j| j["id"].as_str())
            .map(str::to_string)
    });
    let accepted = status.is_success() || (sign_in && status.is_redirection());
    if !accepted {
        entry.result = Outcome::Error;
        best_effort(&log, entry);
        return resp;
    }
    let action = entry.action.clone();
    let written = tokio::task::spawn_blocking(move || log.append(entry)).await;
    match written {
        Ok(Ok(_)) => resp,
        Ok(Err(e)) => unavailable(&action, e),
        Err(e) => unavailable(&action, e),
    }
}

fn unavailable(action: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!(
        "audit trail: the record of a {action} could not be written ({e}); the change was made but is answered 503"
    );
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "audit_unavailable",
        message: format!(
            "the {action} was carried out, but its audit record could not be written, so it is not acknowledged; \
             check the server log and the disk of the data directory, then check the state before retrying"
        ),
    }
    .into_response()
}

/// Aggregated, never blocking the async worker.
fn best_effort(log: &Arc<AuditLog>, entry: Entry) {
    if log.has_writer() {
        log.best_effort(entry);
    } else {
        let log = log.clone();
        tokio::task::spawn_blocking(move || log.best_effort(entry));
    }
}

/// The trail's counters on `/metrics`: `gpuwarden_audit_records_written_total`,
/// `gpuwarden_audit_write_errors_total` (alert on any increase: changes are being
/// answered 503 or refusals are not recorded), `gpuwarden_audit_dropped_total`.
#[derive(Debug)]
pub struct AuditMetrics(pub Arc<AuditLog>);

impl prometheus_client::collector::Collector for AuditMetrics {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::MetricType;
        let s = self.0.stats();
        for (name, help, v) in [
            (
                "gpuwarden_audit_records_written",
                "Audit records written and fsynced since start",
                s.records_written,
            ),
            (
                "gpuwarden_audit_write_errors",
                "Appends to the audit trail that failed since start (a change so affected was answered 503)",
                s.write_errors,
            ),
            (
                "gpuwarden_audit_dropped",
                "Best-effort audit records (refusals, failed attempts) dropped because the writer's queue was full",
                s.dropped,
            ),
        ] {
            let m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
