//! Incidents: findings grouped by GPU/node and rule, with a lifecycle
//! (open → acknowledged → resolved), a dedup key, a timeline and a recommended action.

use crate::finding::{Action, FindingKind, Severity};
use crate::gpu::GpuUuid;
use crate::time::TimestampMs;
use serde::{Deserialize, Serialize};

/// Where an incident is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Acknowledged,
    Resolved,
}

impl IncidentState {
    pub const fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Resolved => "resolved",
        }
    }
}

/// How an incident was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Resolution {
    /// The condition cleared and stayed clear for the configured time.
    Automatic { cleared_since_ms: TimestampMs },
    /// A person resolved it through the API or UI.
    Manual {
        actor: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
    },
}

/// One entry of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEntry {
    pub ts_ms: TimestampMs,
    /// `opened`, `finding`, `escalated`, `acknowledged`, `cleared`, `reopened` (a flap),
    /// `resolved`.
    pub what: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Incident {
    /// Stable id: `inc-` and a random ULID (e.g. `inc-01JEXQ7RZ4M2V9K3T8N6PBCWDH`);
    /// older incidents keep their sequential ids (`inc-000042`).
    pub id: String,
    /// Findings with the same key belong to the same incident: `rule@gpu` or `rule@node`.
    pub dedup_key: String,
    pub rule: String,
    pub kind: FindingKind,
    /// Highest severity seen while the incident was active.
    pub severity: Severity,
    pub gpu: Option<GpuUuid>,
    pub node: String,
    pub state: IncidentState,
    pub summary: String,
    /// Most disruptive action recommended while active.
    pub action: Action,
    pub opened_ms: TimestampMs,
    pub updated_ms: TimestampMs,
    /// Last time a finding for it was seen (the condition was present).
    pub last_seen_ms: TimestampMs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_ms: Option<TimestampMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_ms: Option<TimestampMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Findings folded into this incident.
    pub finding_count: u64,
    /// Context the findings carried (MITRE technique, namespace, pod, job, playbook, …),
    /// ECS-style keys; the latest finding's value wins. Notifications and SIEM outputs
    /// send them as they are.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Times the condition cleared and came back before resolution (flaps).
    pub flaps: u32,
    pub timeline: Vec<TimelineEntry>,
}
