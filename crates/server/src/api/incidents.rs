//! `/api/v1/incidents…`: list, read, acknowledge and resolve incidents.

use super::dto::{IncidentAction, IncidentList};
use super::gpus::{check_limit, query, QueryResult};
use super::AppState;
use crate::cache::AcceptsGzip;
use crate::scope::CallerScope;
use crate::visibility::Visibility;
use crate::ApiError;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use gpuwarden_incident::{IncidentError, IncidentFilter};
use gpuwarden_model::{FindingKind, GpuUuid, Incident, IncidentState, Severity};
use gpuwarden_pipeline::AnalysisError;
use serde::Deserialize;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IncidentParams {
    /// open, acknowledged, clearing (condition absent, not yet resolved), resolved, or
    /// `active` (open + acknowledged + clearing); several
    /// separated by commas. Default: all.
    #[param(
        pattern = "^(open|acknowledged|clearing|resolved|active)(,(open|acknowledged|clearing|resolved|active))*$"
    )]
    state: Option<String>,
    /// Minimum severity: info, warning, critical, fatal.
    severity: Option<Severity>,
    node: Option<String>,
    gpu: Option<String>,
    /// health, anomaly, prediction, security.
    kind: Option<FindingKind>,
    /// Rule id, e.g. `ecc.dbe`.
    rule: Option<String>,
    /// Page size (1–10000, default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    #[param(maximum = 9007199254740991_u64)]
    offset: Option<usize>,
}

fn parse_states(s: &str) -> Result<Vec<IncidentState>, ApiError> {
    s.split(',')
        .map(|one| match one.trim() {
            "open" => Ok(vec![IncidentState::Open]),
            "acknowledged" => Ok(vec![IncidentState::Acknowledged]),
            "clearing" => Ok(vec![IncidentState::Clearing]),
            "resolved" => Ok(vec![IncidentState::Resolved]),
            "active" => Ok(vec![
                IncidentState::Open,
                IncidentState::Acknowledged,
                IncidentState::Clearing,
            ]),
            other => Err(ApiError::bad_request(
                "bad_state",
                format!("unknown incident state '{other}': use open, acknowledged, clearing, resolved or active"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.into_iter().flatten().collect())
}

/// List incidents, newest first.
#[utoipa::path(get, operation_id = "list_incidents", path = "/api/v1/incidents", tag = "incidents", params(IncidentParams),
    responses((status = 200, description = "Success", body = IncidentList), (status = 400, description = "Bad request: the error names the parameter and what is expected", body = super::dto::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    scope: CallerScope,
    gzip: AcceptsGzip,
    RawQuery(raw): RawQuery,
    params: QueryResult<IncidentParams>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let limit = check_limit(params.limit)?;
    let offset = super::gpus::check_offset(params.offset)?;
    let filter = IncidentFilter {
        states: match params.state.as_deref() {
            Some(s) => parse_states(s)?,
            None => Vec::new(),
        },
        min_severity: params.severity,
        node: params.node.clone(),
        gpu: params.gpu.as_deref().map(GpuUuid::new),
        kind: params.kind,
        rule: params.rule.clone(),
    };
    let key = format!("incidents?{}", raw.unwrap_or_default());
    state.cached_json(&scope, &key, gzip, || {
        let visible = Visibility::new(&state, &scope);
        let (total, incidents) = state.analysis.with_incidents(|engine| {
            let all: Vec<&Incident> = engine
                .list(&filter)
                .into_iter()
                .filter(|i| visible.incident(i))
                .collect();
            let total = all.len();
            (
                total,
                all.into_iter().skip(offset).take(limit).cloned().collect::<Vec<_>>(),
            )
        });
        Ok(IncidentList {
            incidents,
            total,
            limit,
            offset,
        })
    })
}

/// One incident with its timeline.
#[utoipa::path(get, operation_id = "get_incident", path = "/api/v1/incidents/{id}", tag = "incidents",
    params(("id" = String, Path, description = "Incident id, e.g. inc-01JEXQ7RZ4M2V9K3T8N6PBCWDH (older ids: inc-000001)")),
    responses((status = 200, description = "Success", body = Incident), (status = 404, description = "Not found", body = super::dto::ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(id): Path<String>,
) -> Result<Json<Incident>, ApiError> {
    let visible = Visibility::new(&state, &scope);
    state
        .analysis
        .with_incidents(|engine| engine.get(&id).cloned())
        .filter(|i| visible.incident(i))
        .map(Json)
        .ok_or_else(|| ApiError::not_found("incident_not_found", format!("no incident '{id}'")))
}

fn action_error(e: AnalysisError) -> ApiError {
    match e {
        AnalysisError::Incident(IncidentError::NotFound { .. }) => {
            ApiError::not_found("incident_not_found", e.to_string())
        }
        AnalysisError::Incident(e @ IncidentError::InvalidTransition { .. }) => ApiError {
            status: StatusCode::CONFLICT,
            code: "invalid_transition",
            message: e.to_string(),
        },
        other => ApiError::internal("saving the incident", other),
    }
}

/// The optional JSON body of ack/resolve: empty is fine, anything else must be valid.
fn body(bytes: &[u8]) -> Result<IncidentAction, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(IncidentAction::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("body must be JSON like {{\"actor\": \"alice\", \"comment\": \"…\"}}: {e}"),
        )
    })
}

/// An incident outside the caller's scope answers exactly like an unknown one (404,
/// same message): a 403 would confirm that the id exists.
fn check_scope(state: &AppState, scope: &CallerScope, id: &str) -> Result<(), ApiError> {
    let incident = state.analysis.with_incidents(|e| e.get(id).cloned());
    match incident {
        Some(i) if Visibility::new(state, scope).incident(&i) => Ok(()),
        _ => Err(ApiError::not_found("incident_not_found", format!("no incident '{id}'"))),
    }
}

/// Acknowledge an incident (open → acknowledged).
#[utoipa::path(post, operation_id = "ack_incident", path = "/api/v1/incidents/{id}/ack", tag = "incidents",
    params(("id" = String, Path, description = "Incident id")),
    request_body(content = IncidentAction, description = "Optional actor and comment"),
    responses((status = 200, description = "Success", body = Incident), (status = 404, description = "Not found", body = super::dto::ErrorBody), (status = 409, description = "Conflict: not possible in the current state", body = super::dto::ErrorBody)))]
pub async fn ack(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<Incident>, ApiError> {
    act(state, scope, id, raw, Act::Acknowledge).await
}

/// Resolve an incident by hand.
#[utoipa::path(post, operation_id = "resolve_incident", path = "/api/v1/incidents/{id}/resolve", tag = "incidents",
    params(("id" = String, Path, description = "Incident id")),
    request_body(content = IncidentAction, description = "Optional actor and comment"),
    responses((status = 200, description = "Success", body = Incident), (status = 404, description = "Not found", body = super::dto::ErrorBody), (status = 409, description = "Conflict: not possible in the current state", body = super::dto::ErrorBody)))]
pub async fn resolve(
    State(state): State<AppState>,
    scope: CallerScope,
    Path(id): Path<String>,
    raw: axum::body::Bytes,
) -> Result<Json<Incident>, ApiError> {
    act(state, scope, id, raw, Act::Resolve).await
}

#[derive(Clone, Copy)]
enum Act {
    Acknowledge,
    Resolve,
}

/// Ack and resolve share everything but the transition: body, scope check, persistence
/// off the async workers, error mapping.
async fn act(
    state: AppState,
    scope: CallerScope,
    id: String,
    raw: axum::body::Bytes,
    what: Act,
) -> Result<Json<Incident>, ApiError> {
    let b = body(&raw)?;
    check_scope(&state, &scope, &id)?;
    let analysis = state.analysis.clone();
    tokio::task::spawn_blocking(move || {
        let actor = b.actor.as_deref().unwrap_or("api");
        match what {
            Act::Acknowledge => analysis.acknowledge(&id, actor, b.comment.as_deref()),
            Act::Resolve => analysis.resolve(&id, actor, b.comment.as_deref()),
        }
    })
    .await
    .map_err(|e| ApiError::internal("updating the incident", e))?
    .map(Json)
    .map_err(action_error)
}
