//! A rule that fired on a GPU: the one shape every check produces, turned into both the
//! finding (for incidents) and the deduction (for the score), so the two never disagree.

use crate::rules::RuleMeta;
use gpuwarden_model::{Action, Dimension, Evidence, Finding, FindingKind, GpuUuid, Severity, TimestampMs};
use serde::{Deserialize, Serialize};

/// A rule that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Stable rule id (`ecc.dbe`, `xid.79`).
    pub rule: String,
    pub dimension: Dimension,
    pub severity: Severity,
    pub action: Action,
    pub points: f64,
    /// What is wrong, with the numbers.
    pub summary: String,
    pub evidence: Vec<Evidence>,
}

impl Hit {
    /// A hit of a configured rule.
    pub fn of(meta: &RuleMeta, summary: String, evidence: Vec<Evidence>) -> Self {
        Hit {
            rule: meta.id.to_string(),
            dimension: meta.dimension,
            severity: meta.severity,
            action: meta.action,
            points: meta.points,
            summary,
            evidence,
        }
    }

    pub fn finding(&self, gpu: Option<&GpuUuid>, node: &str, ts_ms: TimestampMs) -> Finding {
        Finding {
            kind: FindingKind::Health,
            rule: self.rule.clone(),
            severity: self.severity,
            gpu: gpu.cloned(),
            node: node.to_string(),
            ts_ms,
            summary: self.summary.clone(),
            evidence: self.evidence.clone(),
            action: self.action,
            dimension: Some(self.dimension),
            labels: Default::default(),
        }
    }

    pub fn deduction(&self) -> Deduction {
        Deduction {
            dimension: self.dimension,
            points: self.points,
            rule: self.rule.clone(),
            reason: format!(
                "\u{2212}{} {}: {}",
                fmt_points(self.points),
                self.dimension,
                self.summary
            ),
            evidence: self.evidence.clone(),
        }
    }
}

/// Points taken off one dimension, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deduction {
    pub dimension: Dimension,
    pub points: f64,
    /// The rule that took them.
    pub rule: String,
    /// For people: "−50 memory: 2 uncorrectable ECC errors in the last hour (…)".
    pub reason: String,
    pub evidence: Vec<Evidence>,
}

fn fmt_points(p: f64) -> String {
    if p.fract() == 0.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}

/// One piece of evidence.
pub fn ev(signal: &str, observed: f64, previous: Option<f64>, expected: Option<f64>, ts_ms: TimestampMs) -> Evidence {
    Evidence {
        signal: signal.to_string(),
        observed,
        previous,
        expected,
        ts_ms,
    }
}
