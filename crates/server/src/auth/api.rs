//! `/api/v1/auth/*`: who am I, token administration (admins), and the web UI's sign-in.
//!
//! When authentication is off these routes exist but the token and session ones answer
//! `404 auth_disabled`; `whoami` says "anonymous admin".

use super::middleware::{unauthorized, Via};
use super::session;
use super::token::{NewToken, TokenRecord, TokenStatus};
use super::{Auth, AuthError};
use crate::api::dto::ErrorBody;
use crate::principal::{Principal, Role};
use crate::ApiError;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

type AuthState = Option<Arc<Auth>>;

/// The routes; merged into the API router (their checks are the middleware's).
pub fn routes(auth: AuthState) -> Router {
    Router::new()
        .route("/api/v1/auth/whoami", get(whoami))
        .route("/api/v1/auth/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/auth/tokens/{id}", delete(revoke_token))
        .route("/api/v1/auth/session", post(sign_in))
        .route("/api/v1/auth/methods", get(methods))
        .route("/api/v1/auth/session/logout", post(sign_out))
        .with_state(auth)
}

fn enabled(auth: &AuthState) -> Result<&Arc<Auth>, ApiError> {
    auth.as_ref().ok_or_else(|| {
        ApiError::not_found(
            "auth_disabled",
            "authentication is not enabled on this server ([auth] enabled = true in the config, or --auth)",
        )
    })
}

/// The caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// Token id (`tok-…`), or `anonymous` when authentication is off.
    pub id: String,
    pub role: Role,
    /// The tenant the caller is confined to; absent: the whole fleet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `bearer`, `session` or `anonymous`.
    pub via: &'static str,
    /// With a session: the token to send in `X-CSRF-Token` on changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

/// Who is calling, with which role and tenant.
#[utoipa::path(get, operation_id = "whoami", path = "/api/v1/auth/whoami", tag = "auth",
    responses((status = 200, description = "The caller", body = WhoAmI),
        (status = 401, description = "No valid token or session", body = ErrorBody)))]
pub async fn whoami(principal: Principal, via: Option<Extension<Via>>) -> Json<WhoAmI> {
    let (via, csrf) = match via.map(|Extension(v)| v) {
        Some(Via::Bearer) => ("bearer", None),
        Some(Via::Session { csrf }) => ("session", Some(csrf)),
        None => ("anonymous", None),
    };
    Json(WhoAmI {
        id: principal.id,
        role: principal.role,
        tenant: principal.tenant,
        via,
        csrf_token: csrf,
    })
}

/// Sign-in through the OpenID provider.
#[derive(Debug, Serialize, ToSchema)]
pub struct OidcMethod {
    /// The provider's name, for "Sign in with NAME".
    pub name: String,
    /// Where the browser goes to start it.
    pub login_url: String,
}

/// How the web UI can sign in.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignInMethods {
    /// Whether authentication is on at all (off: nothing to sign in to).
    pub enabled: bool,
    /// Signing in with an API token (`POST /api/v1/auth/session`).
    pub token: bool,
    /// Signing in through the OpenID provider, when configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcMethod>,
}

/// How one can sign in here (public: the sign-in page asks before anyone is signed in).
#[utoipa::path(get, operation_id = "sign_in_methods", path = "/api/v1/auth/methods", tag = "auth",
    responses((status = 200, description = "The sign-in methods", body = SignInMethods)))]
pub async fn methods(State(auth): State<AuthState>) -> Json<SignInMethods> {
    Json(SignInMethods {
        enabled: auth.is_some(),
        token: auth.is_some(),
        oidc: auth
            .as_ref()
            .and_then(|a| a.oidc())
            .filter(|o| o.ui_sign_in())
            .map(|o| OidcMethod {
                name: o.settings.display_name.clone(),
                login_url: super::oidc::login::LOGIN_PATH.to_string(),
            }),
    })
}

/// A token as listed (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub status: TokenStatus,
    pub created_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// Last accepted use (about a minute's precision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<i64>,
}

impl TokenInfo {
    pub fn of(r: TokenRecord, now_ms: i64) -> Self {
        TokenInfo {
            status: r.status(now_ms),
            id: r.id,
            name: r.name,
            role: r.role,
            tenant: r.tenant,
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
            last_used_ms: r.last_used_ms,
            revoked_ms: r.revoked_ms,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// Every API token (no secrets).
#[utoipa::path(get, operation_id = "list_tokens", path = "/api/v1/auth/tokens", tag = "auth",
    responses((status = 200, description = "The tokens", body = TokenList),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "Needs an admin without tenant", body = ErrorBody),
        (status = 404, description = "Authentication is not enabled", body = ErrorBody)))]
pub async fn list_tokens(State(auth): State<AuthState>) -> Result<Json<TokenList>, ApiError> {
    let auth = enabled(&auth)?;
    let now = auth.now_ms();
    Ok(Json(TokenList {
        tokens: auth
            .tokens()
            .list()
            .into_iter()
            .map(|r| TokenInfo::of(r, now))
            .collect(),
    }))
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub role: Role,
    /// What it is for (at most 100 characters).
    #[serde(default)]
    pub name: Option<String>,
    /// Confine it to a configured tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Lifetime, e.g. `30d`, `12h`; absent: no expiry.
    #[serde(default)]
    pub expires: Option<String>,
}

/// A created token: the only time its secret is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The secret, `gpw_…`: send it as `Authorization: Bearer <token>`. Not shown again.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

fn token_error(e: AuthError) -> ApiError {
    match e {
        AuthError::NotFound(id) => ApiError::not_found("token_not_found", format!("no token with id {id}")),
        AuthError::Invalid(m) => ApiError::bad_request("bad_token_request", m),
        other => ApiError::internal("changing the token file", other),
    }
}

/// Create a token; the answer holds its secret, shown only this once.
#[utoipa::path(post, operation_id = "create_token", path = "/api/v1/auth/tokens", tag = "auth",
    request_body(content = TokenRequest, description = "Role, and optionally name, tenant and lifetime"),
    responses((status = 201, description = "Created; `token` is the secret", body = CreatedToken),
        (status = 400, description = "Bad request: unknown role or tenant, bad lifetime", body = ErrorBody),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "Needs an admin without tenant", body = ErrorBody),
        (status = 404, description = "Authentication is not enabled", body = ErrorBody)))]
pub async fn create_token(
    State(auth): State<AuthState>,
    raw: axum::body::Bytes,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let auth = enabled(&auth)?.clone();
    let req: TokenRequest = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!(
                "body must be JSON like {{\"role\": \"viewer\", \"name\": \"grafana\", \"expires\": \"30d\"}}: {e}"
            ),
        )
    })?;
    if let Some(t) = &req.tenant {
        if !auth.tenants().contains_key(t) {
            return Err(ApiError::bad_request(
                "unknown_tenant",
                format!(
                    "tenant {t:?} is not configured; configured: {:?}",
                    auth.tenants().keys().collect::<Vec<_>>()
                ),
            ));
        }
    }
    let expires_in = match req.expires.as_deref() {
        None => None,
        Some(s) => Some(humantime::parse_duration(s).map_err(|e| {
            ApiError::bad_request(
                "bad_token_request",
                format!("expires {s:?} is not a duration like \"30d\": {e}"),
            )
        })?),
    };
    let spec = NewToken {
        name: req.name.unwrap_or_default(),
        role: req.role,
        tenant: req.tenant,
        expires_in,
    };
    let now = auth.now_ms();
    let a = auth.clone();
    let (secret, record) = tokio::task::spawn_blocking(move || a.tokens().create(&spec, now))
        .await
        .map_err(|e| ApiError::internal("creating a token", e))?
        .map_err(token_error)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token: secret.expose().to_string(),
            info: TokenInfo::of(record, now),
        }),
    ))
}

/// Revoke a token (effective at once; its sessions end too).
#[utoipa::path(delete, operation_id = "revoke_token", path = "/api/v1/auth/tokens/{id}", tag = "auth",
    params(("id" = String, Path, description = "Token id, e.g. tok-0123456789abcdef")),
    responses((status = 200, description = "Revoked", body = TokenInfo),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "Needs an admin without tenant", body = ErrorBody),
        (status = 404, description = "No such token, or authentication is not enabled", body = ErrorBody)))]
pub async fn revoke_token(State(auth): State<AuthState>, Path(id): Path<String>) -> Result<Json<TokenInfo>, ApiError> {
    let auth = enabled(&auth)?.clone();
    let now = auth.now_ms();
    let a = auth.clone();
    let record = tokio::task::spawn_blocking(move || a.tokens().revoke(&id, now))
        .await
        .map_err(|e| ApiError::internal("revoking a token", e))?
        .map_err(token_error)?;
    Ok(Json(TokenInfo::of(record, now)))
}

/// Sign-in with a token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub token: String,
}

/// A started session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Send it in `X-CSRF-Token` on every change made with the session cookie.
    pub csrf_token: String,
    pub expires_ms: i64,
}

/// Sign the web UI in with a token: sets the session cookie (`gpw_session`, `Secure;
/// HttpOnly; SameSite=Strict`); the session is not the token.
#[utoipa::path(post, operation_id = "sign_in", path = "/api/v1/auth/session", tag = "auth",
    request_body(content = SignIn, description = "The token to sign in with"),
    responses((status = 200, description = "Signed in; the cookie is set", body = SessionView),
        (status = 400, description = "Body is not `{\"token\": \"…\"}`", body = ErrorBody),
        (status = 401, description = "The token is not valid", body = ErrorBody),
        (status = 403, description = "A scraper token (reads /metrics only) cannot sign in", body = ErrorBody),
        (status = 404, description = "Authentication is not enabled", body = ErrorBody)))]
pub async fn sign_in(State(auth): State<AuthState>, raw: axum::body::Bytes) -> Response {
    let auth = match enabled(&auth) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let req: SignIn = match serde_json::from_slice(&raw) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::bad_request("bad_body", format!("body must be JSON {{\"token\": \"gpw_…\"}}: {e}"))
                .into_response()
        }
    };
    let (principal, until) = match auth.check_bearer(req.token.trim()).await {
        Ok(x) => x,
        Err(d) => return unauthorized(d.message()),
    };
    // A scrape token reads `/metrics` only; a UI session with it could read nothing.
    if principal.role < Role::Viewer {
        return ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!(
                "a {} token reads /metrics only and cannot sign in to the web UI; use a viewer, operator or admin token",
                principal.role
            ),
        }
        .into_response();
    }
    let now = auth.now_ms();
    let (id, s) = match auth.sessions().create(principal, until, now) {
        Ok(x) => x,
        Err(e) => return ApiError::internal("starting a session", e).into_response(),
    };
    let max_age = ((s.expires_ms - now) / 1000).max(1);
    let mut resp = Json(SessionView {
        id: s.principal.id.clone(),
        role: s.principal.role,
        tenant: s.principal.tenant.clone(),
        csrf_token: s.csrf.clone(),
        expires_ms: s.expires_ms,
    })
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id, max_age)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.extensions_mut().insert(s.principal);
    resp
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SignedOut {
    pub signed_out: bool,
}

/// End the UI session; clears the cookie.
#[utoipa::path(post, operation_id = "sign_out", path = "/api/v1/auth/session/logout", tag = "auth",
    responses((status = 200, description = "Signed out", body = SignedOut),
        (status = 401, description = "No valid token or session", body = ErrorBody),
        (status = 403, description = "A cookie request without the session's X-CSRF-Token", body = ErrorBody),
        (status = 404, description = "Authentication is not enabled", body = ErrorBody)))]
pub async fn sign_out(State(auth): State<AuthState>, headers: HeaderMap) -> Response {
    let auth = match enabled(&auth) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let id = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::cookie_value);
    if let Some(id) = id {
        auth.sessions().remove(id);
    }
    let mut resp = Json(SignedOut {
        signed_out: id.is_some(),
    })
    .into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::clear_cookie()).unwrap_or(HeaderValue::from_static("")),
    );
    resp
}
