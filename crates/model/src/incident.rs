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
    /// The condition is absent; the incident resolves by itself once it stays absent for
    /// the auto-resolve time, and goes back to open (or acknowledged) if it returns.
    Clearing,
    Resolved,
}

impl IncidentState {
    pub const fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acknowledged => "acknowledged",
            IncidentState::Clearing => "clearing",
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
    /// Root cause, contributing signals, related incidents and what changed before, when
    /// the incident correlates several findings (see the incident crate's `correlate`).
    /// Empty for incidents written before correlation existed.
    #[serde(default, skip_serializing_if = "Correlation::is_empty")]
    pub correlation: Correlation,
}

impl IncidentState {
    /// Open, acknowledged or clearing: not resolved.
    pub const fn is_active(self) -> bool {
        !matches!(self, IncidentState::Resolved)
    }
}

/// Why several findings are one incident, and what they were.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Correlation {
    /// The most likely root cause, from the correlation rule that grouped the findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<RootCause>,
    /// Every signal (rule, per GPU) that fed the incident, in the order they joined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contributors: Vec<Contributor>,
    /// For a node incident: the GPUs it covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuUuid>,
    /// Incidents of the other family (security ↔ health) that share the cause.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<RelatedIncident>,
    /// What changed on the GPU or node in the window before the incident opened
    /// (driver, configuration, workload, temperature, errors), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed_before: Vec<TimelineEntry>,
}

impl Correlation {
    pub fn is_empty(&self) -> bool {
        self.root_cause.is_none()
            && self.contributors.is_empty()
            && self.gpus.is_empty()
            && self.related.is_empty()
            && self.changed_before.is_empty()
    }
}

/// The cause a correlation rule names for the findings it groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RootCause {
    /// The correlation rule's id, e.g. `cause.thermal`.
    pub rule: String,
    /// Short name, e.g. "GPU overheating".
    pub title: String,
    /// What is most likely wrong and why the signals follow from it.
    pub explanation: String,
    /// The contributing rule earliest in the causal chain seen so far (the first domino).
    pub first_signal: String,
}

/// One signal that fed an incident: the findings of one rule on one GPU (or the node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Contributor {
    pub rule: String,
    pub kind: FindingKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuUuid>,
    /// Worst severity this signal reached.
    pub severity: Severity,
    /// Most disruptive action it recommended.
    pub action: Action,
    pub first_seen_ms: TimestampMs,
    pub last_seen_ms: TimestampMs,
    /// Findings of this signal folded in.
    pub findings: u64,
    /// The first finding's sentence (how it started) and the latest one's.
    pub first_summary: String,
    pub summary: String,
    /// The latest finding's evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<crate::finding::Evidence>,
}

/// A link to an incident that shares the cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelatedIncident {
    pub id: String,
    /// The correlation link rule, e.g. `inventory_after_bus_loss`.
    pub link: String,
    /// One sentence: how the two relate.
    pub note: String,
}
