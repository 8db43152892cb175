//! `/api/v1/notifications`: the notification outbox per sink — pending, delivered,
//! failed (with the receiver's last answer), silenced — and each sink's health.
//! Secrets never appear: entries carry the message, not the sink's configuration.
//! A caller confined to a tenant sees only the entries of incidents (and findings) it
//! may see, counts over those alone, and no sink-wide last error (a receiver's answer
//! may quote another tenant's message).

use super::AppState;
use crate::scope::CallerScope;
use crate::visibility::Visibility;
use crate::ApiError;
use axum::extract::State;
use axum::Json;
use gpuwarden_notify::{EntryView, SinkStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NotificationParams {
    /// Latest entries listed per sink (default 20, at most 1000).
    #[param(maximum = 1000)]
    recent: Option<usize>,
}

/// One outbox entry (one transition for one sink).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OutboxEntry {
    pub id: u64,
    /// `{incident}#{seq}`: unique per incident transition; receivers dedupe on it.
    pub delivery_key: String,
    pub incident: String,
    /// opened, reopened, escalated, flapped, acknowledged, resolved, detected.
    pub transition: String,
    pub severity: String,
    pub summary: String,
    /// pending, delivered, failed, silenced.
    pub state: String,
    pub attempts: u32,
    /// The receiver's last answer (or the network error) when an attempt failed.
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// The silence that held it back.
    pub silenced_by: Option<String>,
}

impl From<EntryView> for OutboxEntry {
    fn from(e: EntryView) -> Self {
        OutboxEntry {
            id: e.id,
            delivery_key: e.delivery_key,
            incident: e.incident,
            transition: e.transition,
            severity: e.severity,
            summary: e.summary,
            state: serde_json::to_value(e.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            attempts: e.attempts,
            last_error: e.last_error,
            created_ms: e.created_ms,
            updated_ms: e.updated_ms,
            silenced_by: e.silenced_by,
        }
    }
}

/// One sink's outbox and health.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SinkOutbox {
    pub name: String,
    /// alertmanager, webhook, slack, teams, pagerduty, syslog, splunk, elastic, ecs_file, email.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Entries waiting for delivery.
    pub pending: usize,
    /// Delivered entries kept (the latest `keep_done`).
    pub delivered: usize,
    /// Entries given up on, kept.
    pub failed: usize,
    /// Entries held back by a silence, kept.
    pub silenced: usize,
    /// True while the latest attempt failed (the sink is retrying with backoff).
    pub failing: bool,
    pub failing_since_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_delivery_ms: Option<i64>,
    /// Latest entries, newest first.
    pub recent: Vec<OutboxEntry>,
}

impl From<SinkStatus> for SinkOutbox {
    fn from(s: SinkStatus) -> Self {
        SinkOutbox {
            name: s.name,
            type_name: s.type_name,
            pending: s.counts.pending,
            delivered: s.counts.delivered,
            failed: s.counts.failed,
            silenced: s.counts.silenced,
            failing: s.failing,
            failing_since_ms: s.failing_since_ms,
            last_error: s.last_error,
            last_delivery_ms: s.last_delivery_ms,
            recent: s.recent.into_iter().map(OutboxEntry::from).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationStatus {
    /// False when this gpuwarden runs without the notification subsystem.
    pub enabled: bool,
    pub sinks: Vec<SinkOutbox>,
}

/// The notification outbox per sink.
#[utoipa::path(get, operation_id = "list_notifications", path = "/api/v1/notifications", tag = "notifications",
    params(NotificationParams),
    responses((status = 200, description = "Success", body = NotificationStatus), (status = 400, description = "Bad request", body = super::dto::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    scope: CallerScope,
    params: super::gpus::QueryResult<NotificationParams>,
) -> Result<Json<NotificationStatus>, ApiError> {
    let params = super::gpus::query(params)?;
    let recent = params.recent.unwrap_or(20);
    if recent > 1000 {
        return Err(ApiError::bad_request("bad_recent", "recent must be at most 1000"));
    }
    Ok(Json(match &state.notifier {
        None => NotificationStatus {
            enabled: false,
            sinks: Vec::new(),
        },
        Some(n) if !scope.is_restricted() => NotificationStatus {
            enabled: true,
            sinks: n.status(recent).into_iter().map(SinkOutbox::from).collect(),
        },
        Some(n) => {
            let visible = Visibility::new(&state, &scope);
            // Incidents by id, read once: an entry follows its incident's visibility.
            let incidents: std::collections::HashMap<String, gpuwarden_model::Incident> =
                state.analysis.with_incidents(|e| {
                    e.list(&gpuwarden_incident::IncidentFilter::default())
                        .into_iter()
                        .map(|i| (i.id.clone(), i.clone()))
                        .collect()
                });
            let filter = |m: &gpuwarden_notify::Notification| visible.notification(m, incidents.get(&m.incident));
            NotificationStatus {
                enabled: true,
                sinks: n
                    .status_where(recent, &filter)
                    .into_iter()
                    .map(SinkOutbox::from)
                    .collect(),
            }
        }
    }))
}
