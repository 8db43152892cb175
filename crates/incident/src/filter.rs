//! Which incidents a listing returns.

use gpuwarden_model::{FindingKind, GpuUuid, Incident, IncidentState, Severity};
use serde::{Deserialize, Serialize};

/// A listing filter; every field that is set must match (empty `states` = any state).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IncidentFilter {
    /// Any of these states; empty means all.
    pub states: Vec<IncidentState>,
    /// Severity at least this.
    pub min_severity: Option<Severity>,
    pub node: Option<String>,
    pub gpu: Option<GpuUuid>,
    pub kind: Option<FindingKind>,
    pub rule: Option<String>,
}

impl IncidentFilter {
    /// Only active incidents (open, acknowledged or clearing).
    pub fn active() -> Self {
        IncidentFilter {
            states: vec![
                IncidentState::Open,
                IncidentState::Acknowledged,
                IncidentState::Clearing,
            ],
            ..Default::default()
        }
    }

    pub fn matches(&self, i: &Incident) -> bool {
        (self.states.is_empty() || self.states.contains(&i.state))
            && self.min_severity.is_none_or(|s| i.severity >= s)
            && self.node.as_ref().is_none_or(|n| &i.node == n)
            && self.gpu.as_ref().is_none_or(|g| i.gpu.as_ref() == Some(g))
            && self.kind.is_none_or(|k| i.kind == k)
            && self.rule.as_ref().is_none_or(|r| {
                // A correlated incident answers to its cause and to each of its signals.
                &i.rule == r || i.correlation.contributors.iter().any(|c| &c.rule == r)
            })
    }
}
