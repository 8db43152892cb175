//! The API's response bodies. They are ours, separate from the engines' internal types,
//! so the API can stay stable while the engines change, and each one derives its
//! OpenAPI schema.

use gpuwarden_detect::{Deduction, GpuHealth};
use gpuwarden_model::{
    Dimension, Evidence, Finding, FindingKind, Freshness, GpuIdentity, HealthState, Incident, IncidentState, Severity,
};
use gpuwarden_pipeline::GpuView;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One point taken off a health score, with its explanation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Reason {
    pub dimension: Dimension,
    /// Points taken off (positive).
    pub points: f64,
    /// Rule id, e.g. `ecc.dbe`.
    pub rule: String,
    /// Human explanation with the numbers, e.g.
    /// "−40 memory: 2 uncorrectable ECC errors in the last hour (…)".
    pub reason: String,
    pub evidence: Vec<Evidence>,
}

impl From<&Deduction> for Reason {
    fn from(d: &Deduction) -> Self {
        Reason {
            dimension: d.dimension,
            points: d.points,
            rule: d.rule.clone(),
            reason: d.reason.clone(),
            evidence: d.evidence.clone(),
        }
    }
}

/// A GPU's health. `score` is null and `state` is `unknown` whenever the data is stale or
/// missing: never `healthy`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    pub score: Option<f64>,
    pub state: HealthState,
    /// Score per dimension (thermal, power, memory, interconnect, compute); null when
    /// unknown or not measured (the GPU's data has no input field for that dimension,
    /// e.g. no ECC counters: the dimension is not judged, and not counted in `score`).
    pub dimensions: BTreeMap<String, Option<f64>>,
    pub reasons: Vec<Reason>,
}

impl Health {
    pub fn unknown() -> Health {
        Health {
            score: None,
            state: HealthState::Unknown,
            dimensions: Dimension::ALL.iter().map(|d| (d.as_str().to_string(), None)).collect(),
            reasons: Vec::new(),
        }
    }

    /// The health to show for a GPU: the engine's, unless the live view says the data is
    /// stale now (the evaluation may be a few seconds older than the staleness). An
    /// unknown GPU has no score, but keeps the findings that explain it (e.g. "fallen off
    /// the bus") as zero-point reasons.
    pub fn for_gpu(view: &GpuView, health: Option<&GpuHealth>, findings: &[&Finding]) -> Health {
        match health {
            Some(h) if !view.stale && h.state != HealthState::Unknown => Health {
                score: h.score,
                state: h.state,
                dimensions: h.dimensions.iter().map(|(d, v)| (d.as_str().to_string(), *v)).collect(),
                reasons: h.deductions.iter().map(Reason::from).collect(),
            },
            _ => {
                let mut reasons: Vec<Reason> = health
                    .map(|h| h.deductions.iter().map(Reason::from).collect())
                    .unwrap_or_default();
                for f in findings {
                    if !reasons.iter().any(|r| r.rule == f.rule) {
                        reasons.push(Reason {
                            dimension: f.dimension.unwrap_or(Dimension::Compute),
                            points: 0.0,
                            rule: f.rule.clone(),
                            reason: f.summary.clone(),
                            evidence: f.evidence.clone(),
                        });
                    }
                }
                Health {
                    reasons,
                    ..Health::unknown()
                }
            }
        }
    }
}

/// An unresolved incident of a GPU, as its status shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusIncident {
    pub id: String,
    pub rule: String,
    pub kind: FindingKind,
    pub severity: Severity,
    pub state: IncidentState,
    pub summary: String,
    pub opened_ms: i64,
}

/// What a GPU's tile, page and API state say about it as a whole: its health, raised by
/// its unresolved incidents of the other kinds (security, failure prediction, anomaly),
/// which the health score does not count. A GPU with an open critical cryptomining
/// incident is not "healthy" however well its hardware does.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GpuStatus {
    /// `unknown` whenever the data is stale (as `health.state`); otherwise the worse of
    /// `health.state` and what the incidents imply: `unhealthy` for an unresolved
    /// critical or fatal incident, `degraded` for a warning one (info incidents do not
    /// change it).
    pub state: HealthState,
    /// Why `state` is worse than `health.state` (the worst incident), null when it is not.
    pub reason: Option<String>,
    /// Unresolved incidents of the GPU other than health ones, worst first (at most 10).
    pub incidents: Vec<StatusIncident>,
}

/// Rank for "worst first": lower is worse.
pub fn state_rank(s: HealthState) -> u8 {
    match s {
        HealthState::Unhealthy => 0,
        HealthState::Degraded => 1,
        HealthState::Unknown => 2,
        HealthState::Healthy => 3,
    }
}

/// The state an unresolved incident implies for its GPU's status: critical/fatal →
/// unhealthy, warning → degraded. `None` for health incidents (the score already counts
/// their findings), resolved ones and info.
pub fn implied_state(i: &Incident) -> Option<HealthState> {
    if i.kind == FindingKind::Health || i.state == IncidentState::Resolved {
        return None;
    }
    match i.severity {
        Severity::Critical | Severity::Fatal => Some(HealthState::Unhealthy),
        Severity::Warning => Some(HealthState::Degraded),
        Severity::Info => None,
    }
}

impl GpuStatus {
    /// The status of a GPU with `health`, fresh or `stale`, and its unresolved `incidents`
    /// (any kind; health incidents are left out, the score already counts their findings).
    pub fn new(health: &Health, stale: bool, incidents: &[&Incident]) -> GpuStatus {
        let mut list: Vec<&Incident> = incidents
            .iter()
            .copied()
            .filter(|i| i.kind != FindingKind::Health && i.state != IncidentState::Resolved)
            .collect();
        list.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.opened_ms.cmp(&b.opened_ms)));
        list.truncate(10);
        let worst = list.first().and_then(|i| implied_state(i).map(|s| (s, *i)));
        let (state, reason) = match worst {
            _ if stale => (HealthState::Unknown, None),
            Some((s, i)) if state_rank(s) < state_rank(health.state) => (
                s,
                Some(format!(
                    "open {} {} incident: {}",
                    i.severity.as_str(),
                    kind_word(i.kind),
                    i.summary
                )),
            ),
            _ => (health.state, None),
        };
        GpuStatus {
            state,
            reason,
            incidents: list
                .into_iter()
                .map(|i| StatusIncident {
                    id: i.id.clone(),
                    rule: i.rule.clone(),
                    kind: i.kind,
                    severity: i.severity,
                    state: i.state,
                    summary: i.summary.clone(),
                    opened_ms: i.opened_ms,
                })
                .collect(),
        }
    }
}

fn kind_word(k: FindingKind) -> &'static str {
    match k {
        FindingKind::Health => "health",
        FindingKind::Anomaly => "anomaly",
        FindingKind::Prediction => "failure-risk",
        FindingKind::Security => "security",
    }
}

/// A GPU as the API shows it: identity, freshness, latest values, health and status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GpuItem {
    pub identity: GpuIdentity,
    /// Scrape target the GPU was last seen on.
    pub target: String,
    /// Timestamp (ms) of the GPU's latest samples.
    pub last_seen_ms: i64,
    /// True when the data cannot be trusted now; health is then `unknown`.
    pub stale: bool,
    pub staleness: Freshness,
    /// Latest value per field (dcgm-exporter names).
    pub latest: BTreeMap<String, f64>,
    /// The measured health alone (hardware and its rules).
    pub health: Health,
    /// Health together with the GPU's open security, failure-risk and anomaly incidents:
    /// what its tile and page show.
    pub status: GpuStatus,
}

impl GpuItem {
    pub fn new(view: GpuView, health: Option<&GpuHealth>, findings: &[&Finding], incidents: &[&Incident]) -> GpuItem {
        let h = Health::for_gpu(&view, health, findings);
        let status = GpuStatus::new(&h, view.stale, incidents);
        GpuItem {
            status,
            identity: view.identity,
            target: view.target,
            last_seen_ms: view.last_seen_ms,
            stale: view.stale,
            staleness: view.staleness,
            latest: view.latest,
            health: h,
        }
    }
}

/// A page of GPUs.
#[derive(Debug, Serialize, ToSchema)]
pub struct GpuList {
    pub gpus: Vec<GpuItem>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// A node's health: the worst of its GPUs, and node-level findings.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeItem {
    pub node: String,
    pub score: Option<f64>,
    pub state: HealthState,
    pub dimensions: BTreeMap<String, Option<f64>>,
    pub gpus: usize,
    pub gpus_unknown: usize,
    pub worst_gpu: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeItem>,
}

/// Counts by health state.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct StateCounts {
    pub healthy: usize,
    pub degraded: usize,
    pub unhealthy: usize,
    pub unknown: usize,
}

/// Open (or acknowledged) incidents by severity.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct SeverityCounts {
    pub info: usize,
    pub warning: usize,
    pub critical: usize,
    pub fatal: usize,
}

/// The fleet at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetSummary {
    pub gpus: usize,
    pub nodes: usize,
    pub counts: StateCounts,
    pub open_incidents: SeverityCounts,
    /// Up to 10 GPUs, worst first (unknown ones after unhealthy ones).
    pub worst: Vec<GpuItem>,
}

/// A page of incidents.
#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentList {
    pub incidents: Vec<Incident>,
    pub total: usize,
    pub limit: usize,
    pub offset: usize,
}

/// Body of ack / resolve.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentAction {
    /// Who does it (default `api`).
    pub actor: Option<String>,
    pub comment: Option<String>,
}

/// A health score history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthHistory {
    pub gpu: String,
    pub from: i64,
    pub to: i64,
    /// `[ts_ms, score]` pairs.
    pub points: Vec<[f64; 2]>,
    /// `[ts_ms, score]` pairs per dimension.
    pub dimensions: BTreeMap<String, Vec<[f64; 2]>>,
}

/// A series of one field.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesBody {
    pub gpu: String,
    pub field: String,
    pub from: i64,
    pub to: i64,
    /// `[ts_ms, value]` pairs, oldest first.
    pub points: Vec<[f64; 2]>,
}

/// Events of a GPU.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub gpu: String,
    pub events: Vec<gpuwarden_model::Event>,
}

/// The JSON error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `gpu_not_found`, `bad_query`.
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::GpuUuid;

    /// A dimension the engine could not measure reaches the API as `null`, never 100,
    /// and the score is the measured dimensions' minimum.
    #[test]
    fn not_measured_dimension_is_null_in_the_api() {
        let uuid = GpuUuid::new("GPU-1");
        let view = GpuView {
            identity: GpuIdentity::new(uuid.clone(), "n"),
            target: "t".into(),
            last_seen_ms: 1,
            stale: false,
            staleness: Freshness::Fresh,
            latest: BTreeMap::new(),
            workload_since_ms: 0,
        };
        let mut dims: BTreeMap<Dimension, Option<f64>> = Dimension::ALL.iter().map(|d| (*d, None)).collect();
        dims.insert(Dimension::Thermal, Some(100.0));
        let h = GpuHealth {
            uuid,
            node: "n".into(),
            model: None,
            score: Some(100.0),
            state: HealthState::Healthy,
            dimensions: dims,
            deductions: vec![],
            freshness: Freshness::Fresh,
            notes: vec![],
        };
        let json = serde_json::to_value(Health::for_gpu(&view, Some(&h), &[])).unwrap();
        assert_eq!(json["dimensions"]["thermal"], serde_json::json!(100.0));
        for d in ["power", "memory", "interconnect", "compute"] {
            assert!(json["dimensions"][d].is_null(), "{d}: {json}");
        }
    }
}
