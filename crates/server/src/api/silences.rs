//! `/api/v1/silences`: create, list and expire silences — "do not notify about what
//! matches this, from START to END", with who asked and why.
//!
//! A caller confined to a tenant creates silences confined to the tenant's part of the
//! fleet (`within`, set here from the scope, never from the body): whatever matchers it
//! gives, such a silence cannot hold back another tenant's notifications. It lists and
//! expires only silences confined within its own part; any other id answers 404, as if
//! unknown.

use super::AppState;
use crate::scope::CallerScope;
use crate::ApiError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use gpuwarden_model::{FindingKind, Severity};
use gpuwarden_notify::{Confinement, Matchers, NewSilence, Silence, SilenceError, SilenceState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a silence matches. Empty lists match anything; values in one list are
/// alternatives; lists must all match. Patterns are globs (`*`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceMatchers {
    /// At least this severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<FindingKind>,
    /// Rule id globs, e.g. `xid.*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// Node globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// Kubernetes namespace globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// GPU UUID globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<String>,
    /// opened, reopened, escalated, flapped, acknowledged, resolved, detected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<String>,
}

/// A new silence. Give `ends_ms` or `duration`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    #[serde(default)]
    pub matchers: SilenceMatchers,
    /// Only these sinks (default: all).
    #[serde(default)]
    pub sinks: Vec<String>,
    pub author: String,
    pub comment: String,
    /// Start, ms since the epoch (default: now).
    pub starts_ms: Option<i64>,
    /// End, ms since the epoch.
    pub ends_ms: Option<i64>,
    /// Or: how long from the start, e.g. "2h", "30m".
    pub duration: Option<String>,
}

/// A silence.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SilenceView {
    pub id: String,
    pub matchers: SilenceMatchers,
    pub sinks: Vec<String>,
    pub author: String,
    pub comment: String,
    pub starts_ms: i64,
    pub ends_ms: i64,
    pub created_ms: i64,
    /// pending, active, expired.
    pub state: String,
    /// The tenant's part of the fleet the silence is confined to (absent: anywhere).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub within: Option<SilenceWithin>,
}

/// Where a tenant's silence can match: notifications of the GPUs (and nodes) of these
/// namespaces, Slurm accounts or nodes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SilenceWithin {
    pub namespaces: Vec<String>,
    pub slurm_accounts: Vec<String>,
    pub nodes: Vec<String>,
}

/// The confinement of a caller's silences (`None`: not confined).
fn confinement(scope: &CallerScope) -> Option<Confinement> {
    scope.is_restricted().then(|| Confinement {
        namespaces: scope.namespaces.clone(),
        accounts: scope.slurm_accounts.clone(),
        nodes: scope.nodes.clone(),
    })
}

/// Whether the caller may see (and expire) `s`: a tenant only silences confined within
/// its own part of the fleet (those it or a tenant of no more could have made).
fn visible(s: &Silence, scope: &CallerScope) -> bool {
    match confinement(scope) {
        None => true,
        Some(mine) => s.within.as_ref().is_some_and(|w| w.is_within(&mine)),
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SilenceList {
    pub silences: Vec<SilenceView>,
}

fn view(s: Silence, now_ms: i64) -> SilenceView {
    let state = match s.state(now_ms) {
        SilenceState::Pending => "pending",
        SilenceState::Active => "active",
        SilenceState::Expired => "expired",
    };
    SilenceView {
        id: s.id,
        matchers: serde_json::to_value(&s.matchers)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        sinks: s.sinks,
        author: s.author,
        comment: s.comment,
        starts_ms: s.starts_ms,
        ends_ms: s.ends_ms,
        created_ms: s.created_ms,
        state: state.into(),
        within: s.within.map(|w| SilenceWithin {
            namespaces: w.namespaces,
            slurm_accounts: w.accounts,
            nodes: w.nodes,
        }),
    }
}

fn notifier(state: &AppState) -> Result<&std::sync::Arc<gpuwarden_notify::Notifier>, ApiError> {
    state
        .notifier
        .as_ref()
        .ok_or_else(|| ApiError::not_found("notifications_disabled", "this gpuwarden runs without notifications"))
}

fn silence_error(e: SilenceError) -> ApiError {
    match e {
        SilenceError::NotFound(_) => ApiError::not_found("silence_not_found", e.to_string()),
        SilenceError::Io { .. } => ApiError::internal("saving silences", e),
        SilenceError::TooBig { .. } => ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "silence_too_large",
            message: e.to_string(),
        },
        SilenceError::TooMany(_) => ApiError::bad_request("too_many_silences", e.to_string()),
        SilenceError::TooLong { .. } => ApiError::bad_request("silence_too_long", e.to_string()),
        other => ApiError::bad_request("bad_silence", other.to_string()),
    }
}

/// List silences (active, pending and recently expired), newest first.
#[utoipa::path(get, operation_id = "list_silences", path = "/api/v1/silences", tag = "notifications",
    responses((status = 200, description = "Success", body = SilenceList), (status = 404, description = "Notifications are disabled", body = super::dto::ErrorBody)))]
pub async fn list(State(state): State<AppState>, scope: CallerScope) -> Result<Json<SilenceList>, ApiError> {
    let n = notifier(&state)?;
    let now = n.now_ms();
    Ok(Json(SilenceList {
        silences: n
            .silences()
            .into_iter()
            .filter(|s| visible(s, &scope))
            .map(|s| view(s, now))
            .collect(),
    }))
}

/// Create a silence.
#[utoipa::path(post, operation_id = "create_silence", path = "/api/v1/silences", tag = "notifications",
    request_body(content = SilenceRequest, description = "Matchers, author, comment, and the end (or a duration)"),
    responses((status = 201, description = "Created", body = SilenceView), (status = 400, description = "Bad request: the error says what is wrong (also: too many silences, too long a duration)", body = super::dto::ErrorBody), (status = 404, description = "Notifications are disabled", body = super::dto::ErrorBody), (status = 413, description = "Author, comment or matchers beyond the limits", body = super::dto::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    scope: CallerScope,
    raw: axum::body::Bytes,
) -> Result<(StatusCode, Json<SilenceView>), ApiError> {
    let n = notifier(&state)?.clone();
    let req: SilenceRequest = serde_json::from_slice(&raw).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!(
                "body must be JSON like {{\"matchers\": {{\"rules\": [\"xid.*\"]}}, \"author\": \"alice\", \"comment\": \"…\", \"duration\": \"2h\"}}: {e}"
            ),
        )
    })?;
    let matchers: Matchers = serde_json::to_value(&req.matchers)
        .and_then(serde_json::from_value)
        .map_err(|e| ApiError::bad_request("bad_matchers", format!("matchers: {e}")))?;
    let now = n.now_ms();
    let starts_ms = req.starts_ms.unwrap_or(now);
    let ends_ms = match (req.ends_ms, req.duration.as_deref()) {
        (Some(e), None) => e,
        (None, Some(d)) => {
            let d = humantime::parse_duration(d.trim()).map_err(|_| {
                ApiError::bad_request(
                    "bad_duration",
                    format!("duration \"{d}\" is not a duration (e.g. \"30m\", \"2h\")"),
                )
            })?;
            // Checked: "99999999999y" is a valid humantime duration but not an i64 of ms.
            i64::try_from(d.as_millis())
                .ok()
                .and_then(|ms| starts_ms.checked_add(ms))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "bad_duration",
                        format!(
                            "duration \"{}\" is too long; a silence may last at most a year by default",
                            req.duration.as_deref().unwrap_or_default()
                        ),
                    )
                })?
        }
        _ => {
            return Err(ApiError::bad_request(
                "bad_silence",
                "give exactly one of ends_ms and duration",
            ))
        }
    };
    let new = NewSilence {
        matchers,
        sinks: req.sinks,
        author: req.author,
        comment: req.comment,
        starts_ms: Some(starts_ms),
        ends_ms,
        within: confinement(&scope),
    };
    let s = tokio::task::spawn_blocking(move || n.create_silence(new))
        .await
        .map_err(|e| ApiError::internal("creating the silence", e))?
        .map_err(silence_error)?;
    Ok((StatusCode::CREATED, Json(view(s, now))))
}

/// Expire a silence now.
#[utoipa::path(delete, operation_id = "expire_silence", path = "/api/v1/silences/{id}", tag = "notifications",
    params(("id" = String, Path, description = "Silence id, e.g. sil-0123456789abcdef")),
    responses((status = 200, description = "Expired", body = SilenceView), (status = 404, description = "Not found", body = super::dto::ErrorBody)))]
pub async fn expire(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(id): Path<String>,
) -> Result<Json<SilenceView>, ApiError> {
    let n = notifier(&state)?.clone();
    // Another tenant's (or a fleet-wide) silence answers exactly like an unknown id.
    if !n.silences().iter().any(|s| s.id == id && visible(s, &scope)) {
        return Err(silence_error(SilenceError::NotFound(id)));
    }
    let s = tokio::task::spawn_blocking(move || n.expire_silence(&id))
        .await
        .map_err(|e| ApiError::internal("expiring the silence", e))?
        .map_err(silence_error)?;
    let now = state.notifier.as_ref().map_or(0, |n| n.now_ms());
    Ok(Json(view(s, now)))
}
