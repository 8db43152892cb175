//! Findings: what an analyzer concluded about a GPU or node, with its evidence, a
//! severity, and a recommended action from a fixed ladder.

use crate::gpu::GpuUuid;
use crate::time::TimestampMs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Which analyzer family produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Health rules (XID catalog, ECC, thermal, power, interconnect, clocks).
    Health,
    /// Streaming anomaly detection (per series or against a cohort).
    Anomaly,
    /// Failure prediction.
    Prediction,
    /// Security detections (abuse, unauthorized use, drift).
    Security,
}

/// How bad it is. Ordered: `Info < Warning < Critical < Fatal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
    Fatal,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
            Severity::Fatal => "fatal",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The recommended-action ladder, from least to most disruptive. Ordered, so the most
/// disruptive of several recommendations is their `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Action {
    None,
    RestartApp,
    ResetGpu,
    /// Move work off the node before it fails (also the prediction action).
    DrainNode,
    Reboot,
    /// Hardware inspection / RMA.
    HardwareInspection,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::RestartApp => "restart_app",
            Action::ResetGpu => "reset_gpu",
            Action::DrainNode => "drain_node",
            Action::Reboot => "reboot",
            Action::HardwareInspection => "hardware_inspection",
        }
    }

    /// A sentence for people.
    pub const fn describe(self) -> &'static str {
        match self {
            Action::None => "no action needed",
            Action::RestartApp => "restart the application",
            Action::ResetGpu => "reset the GPU (nvidia-smi -r) once its work is stopped",
            Action::DrainNode => "drain the node: move its work elsewhere",
            Action::Reboot => "drain and reboot the node",
            Action::HardwareInspection => "take the GPU out of service for hardware inspection / RMA",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value that supports a finding: which series, what it was, what was expected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Evidence {
    /// Field or signal name, e.g. `DCGM_FI_DEV_ECC_DBE_VOL_TOTAL` or `xid`.
    pub signal: String,
    /// The observed value.
    pub observed: f64,
    /// The value before (for counters: at the start of the window), when relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<f64>,
    /// The threshold or expected value it was compared to, when relevant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<f64>,
    pub ts_ms: TimestampMs,
}

/// What an analyzer concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Finding {
    pub kind: FindingKind,
    /// Stable id of the rule or detector, e.g. `xid.79`, `ecc.dbe`, `thermal.slowdown`.
    pub rule: String,
    pub severity: Severity,
    pub gpu: Option<GpuUuid>,
    pub node: String,
    pub ts_ms: TimestampMs,
    /// One sentence: what is wrong, with the numbers.
    pub summary: String,
    pub evidence: Vec<Evidence>,
    pub action: Action,
    /// Health dimension affected, when the finding feeds the health score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimension: Option<crate::health::Dimension>,
    /// Context a SOC or notifier needs beyond the numbers, as flat string pairs: e.g.
    /// `mitre.technique`, `namespace`, `pod`, `job`, `playbook` for security findings.
    /// Strings, not evidence values, because they are not measurements. Empty for most
    /// health findings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}
