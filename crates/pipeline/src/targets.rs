//! Target-level findings: conditions of a source of pages rather than of one GPU.
//!
//! - `target.gpus_vanished` (critical): every GPU of an exporter vanished from its page
//!   at once. That is the exporter losing its GPUs (DCGM or the driver down, the node
//!   rebooting, a broken exporter), one condition for the node — not N GPUs each falling
//!   off the bus, which would open N fatal incidents for one cause.
//! - `target.refusing` (warning): the target's recent pages had samples refused at
//!   admission (clock skew, too many GPUs or series, impossible values); its data is
//!   incomplete until someone fixes the exporter or raises the limit.
//!
//! Findings are keyed by node (the node of the target's GPUs, else the target itself),
//! so the incident engine opens one incident per target condition.

use crate::live::LiveFleet;
use gpuwarden_model::{Action, Evidence, Finding, FindingKind, Severity, TimestampMs};

/// How long after its last refused page a target still counts as refusing (wall time).
pub const REFUSING_FOR_MS: i64 = 5 * 60_000;

/// The active target-level findings at data time `now_ms` (wall time `wall_ms`).
pub fn findings(live: &LiveFleet, now_ms: TimestampMs, wall_ms: TimestampMs) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in live.target_ingest_states() {
        if let Some(v) = &t.gpus_vanished {
            let node = if v.node.is_empty() {
                t.target.clone()
            } else {
                v.node.clone()
            };
            out.push(Finding {
                kind: FindingKind::Health,
                rule: "target.gpus_vanished".into(),
                severity: Severity::Critical,
                gpu: None,
                node,
                ts_ms: now_ms,
                summary: format!(
                    "all {} GPUs of {} vanished from its page at once: the exporter lost its GPUs \
                     (DCGM or driver down, node rebooting, exporter broken); check the node and its exporter",
                    v.gpus, t.target
                ),
                evidence: vec![Evidence {
                    signal: "gpus_vanished".into(),
                    observed: v.gpus as f64,
                    previous: None,
                    expected: Some(0.0),
                    ts_ms: now_ms,
                }],
                action: Action::None,
                dimension: None,
                labels: [("gpuwarden.target".to_string(), t.target.clone())]
                    .into_iter()
                    .collect(),
            });
        }
        let recent = t.last_refusal_ms.is_some_and(|ms| wall_ms - ms <= REFUSING_FOR_MS);
        if recent && !t.last_refusal_reasons.is_empty() {
            out.push(Finding {
                kind: FindingKind::Health,
                rule: "target.refusing".into(),
                severity: Severity::Warning,
                gpu: None,
                node: t.target.clone(),
                ts_ms: now_ms,
                summary: format!("{}: {}", t.target, t.last_refusal_reasons.join("; ")),
                evidence: t
                    .refused
                    .iter()
                    .map(|(why, n)| Evidence {
                        signal: format!("refused_{why}"),
                        observed: *n as f64,
                        previous: None,
                        expected: Some(0.0),
                        ts_ms: now_ms,
                    })
                    .collect(),
                action: Action::None,
                dimension: None,
                labels: [("gpuwarden.target".to_string(), t.target.clone())]
                    .into_iter()
                    .collect(),
            });
        }
    }
    out
}
