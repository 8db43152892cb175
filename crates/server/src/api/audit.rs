//! `GET /api/v1/audit`: the audit trail, newest first, for admins.

use super::gpus::{query, QueryResult};
use super::AppState;
use crate::principal::{Principal, Role};
use crate::time_param::parse_time;
use crate::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use gpuwarden_audit::{Outcome, Record};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// From this time: ms since the epoch, RFC 3339, `now`, or `-1h`.
    #[param(value_type = Option<crate::time_param::TimeString>, inline)]
    from: Option<String>,
    /// Until this time (same forms).
    #[param(value_type = Option<crate::time_param::TimeString>, inline)]
    to: Option<String>,
    /// Exactly this principal id, e.g. `anonymous`, `tok-…`.
    actor: Option<String>,
    /// An action (`incident.resolve`) or a prefix ending in `.` or `*` (`silence.*`).
    action: Option<String>,
    /// ok, denied or error.
    #[param(pattern = "^(ok|denied|error)$")]
    result: Option<String>,
    /// Only records older than this sequence number (`next_before` of the previous page).
    #[param(minimum = 1, maximum = 9007199254740991_u64)]
    before: Option<u64>,
    /// Records per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// One audit record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditRecord {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    pub ts_ms: i64,
    /// The principal: `anonymous`, a token id, an OpenID subject, `cli:USER`, `gpuwarden`.
    pub actor: String,
    /// viewer, operator, admin (`none` for an unauthenticated refusal).
    pub role: String,
    pub tenant: Option<String>,
    /// Client address (`ip:port`), `cli` for a local command, `*` for an aggregate.
    pub client: Option<String>,
    /// e.g. `incident.resolve`, `silence.create`, `token.create`, `request.denied`.
    pub action: String,
    /// Incident, silence or token id; `METHOD /path` for a denied request.
    pub target: Option<String>,
    /// ok, denied, error.
    pub result: String,
    /// The HTTP status answered.
    pub status: Option<u16>,
    /// The error code of a refusal, or a note (aggregation, repairs).
    pub detail: Option<String>,
    /// Requests this record stands for (more than 1: aggregated repeats).
    pub count: u64,
    /// Hash of the previous record (chain).
    pub prev: String,
    /// This record's hash.
    pub hash: String,
}

impl From<Record> for AuditRecord {
    fn from(r: Record) -> Self {
        AuditRecord {
            seq: r.seq,
            ts_ms: r.ts_ms,
            actor: r.actor,
            role: r.role,
            tenant: r.tenant,
            client: r.client,
            action: r.action,
            target: r.target,
            result: r.result.as_str().to_string(),
            status: r.status,
            detail: r.detail,
            count: r.count,
            prev: r.prev,
            hash: r.hash,
        }
    }
}

/// A page of the audit trail.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditList {
    /// Newest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next_before: Option<u64>,
}

/// The audit trail: changes and denied requests, newest first (admins only).
#[utoipa::path(get, operation_id = "list_audit", path = "/api/v1/audit", tag = "audit", params(AuditParams),
    responses(
        (status = 200, description = "Success", body = AuditList),
        (status = 400, description = "Bad request: the error names the parameter and what is expected", body = super::dto::ErrorBody),
        (status = 403, description = "Only admins read the audit trail", body = super::dto::ErrorBody),
        (status = 404, description = "This gpuwarden keeps no audit trail", body = super::dto::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    scope: crate::scope::CallerScope,
    params: QueryResult<AuditParams>,
) -> Result<Json<AuditList>, ApiError> {
    // The trail names every tenant's actions and clients: fleet-wide, never a tenant's.
    let fleet_wide = "the audit trail covers the whole fleet";
    scope.refuse_if_tenant(fleet_wide)?;
    if principal.tenant.is_some() {
        return Err(ApiError {
            status: axum::http::StatusCode::FORBIDDEN,
            code: "not_for_tenants",
            message: format!("{fleet_wide}; a principal confined to a tenant cannot use it"),
        });
    }
    // Authorization proper is the policy table's; this keeps the trail admin-only even
    // if a route is left out of it.
    if principal.role < Role::Admin {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden",
            message: format!(
                "reading the audit trail needs the admin role; {} is {}",
                principal.id, principal.role
            ),
        });
    }
    let params = query(params)?;
    let log = state
        .audit
        .clone()
        .ok_or_else(|| ApiError::not_found("audit_disabled", "this gpuwarden keeps no audit trail"))?;
    let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            "bad_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    if params
        .before
        .is_some_and(|b| b == 0 || b > super::gpus::MAX_OFFSET as u64)
    {
        return Err(ApiError::bad_request(
            "bad_before",
            "before must be a sequence number between 1 and 2^53-1",
        ));
    }
    let now = state.clock.now_ms();
    let time = |name: &str, v: Option<&str>| -> Result<Option<i64>, ApiError> {
        v.map(|s| parse_time(s, now).map_err(|m| ApiError::bad_request("bad_time", format!("{name}: {m}"))))
            .transpose()
    };
    let result = params
        .result
        .as_deref()
        .map(|s| s.parse::<Outcome>().map_err(|m| ApiError::bad_request("bad_result", m)))
        .transpose()?;
    let q = gpuwarden_audit::Query {
        from_ms: time("from", params.from.as_deref())?,
        to_ms: time("to", params.to.as_deref())?,
        actor: params.actor,
        action: params.action,
        result,
        before_seq: params.before,
        limit,
    };
    let page = tokio::task::spawn_blocking(move || gpuwarden_audit::query(log.dir(), &q))
        .await
        .map_err(|e| ApiError::internal("reading the audit trail", e))?
        .map_err(|e| ApiError::internal("reading the audit trail", e))?;
    Ok(Json(AuditList {
        records: page.records.into_iter().map(AuditRecord::from).collect(),
        next_before: page.next_before,
    }))
}
