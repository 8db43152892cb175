//! The one payload every sink formats: a [`Notification`], built from an incident
//! transition (or, for security detections that do not become incidents, from a bare
//! finding). Sinks never see engine types, so a new source of notifications only has to
//! fill this struct in.

use gpuwarden_incident::{ChangeKind, IncidentChange};
use gpuwarden_model::{Action, Finding, FindingKind, IncidentState, Severity, TimestampMs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the JSON schema of [`Notification`] (webhook body, outbox records).
pub const SCHEMA_VERSION: u32 = 1;

/// What happened to the incident. Several can happen at once (a flap that escalates);
/// [`Notification::transition`] is the most important of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    Opened,
    Reopened,
    Escalated,
    Flapped,
    Acknowledged,
    Resolved,
    /// A finding delivered on its own (no incident), e.g. a one-shot security detection.
    Detected,
    /// `gpuwarden notify test SINK`.
    Test,
}

impl Transition {
    pub const fn as_str(self) -> &'static str {
        match self {
            Transition::Opened => "opened",
            Transition::Reopened => "reopened",
            Transition::Escalated => "escalated",
            Transition::Flapped => "flapped",
            Transition::Acknowledged => "acknowledged",
            Transition::Resolved => "resolved",
            Transition::Detected => "detected",
            Transition::Test => "test",
        }
    }

    fn from_change(kind: ChangeKind) -> Option<Transition> {
        Some(match kind {
            ChangeKind::Opened => Transition::Opened,
            ChangeKind::Reopened => Transition::Reopened,
            ChangeKind::Escalated => Transition::Escalated,
            ChangeKind::Flapped => Transition::Flapped,
            ChangeKind::Acknowledged => Transition::Acknowledged,
            ChangeKind::Resolved => Transition::Resolved,
            ChangeKind::Cleared | ChangeKind::Refreshed => return None,
        })
    }

    /// Which of several simultaneous transitions names the message: the end of an
    /// incident beats everything, then a new one, then a worse one.
    fn rank(self) -> u8 {
        match self {
            Transition::Resolved => 7,
            Transition::Opened => 6,
            Transition::Reopened => 5,
            Transition::Escalated => 4,
            Transition::Acknowledged => 3,
            Transition::Flapped => 2,
            Transition::Detected => 1,
            Transition::Test => 0,
        }
    }
}

/// Whether the alert is still on, from a receiver's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Firing,
    Acknowledged,
    Resolved,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
        }
    }
}

/// One message to deliver. Serialized as is into the outbox and the webhook body; the
/// documented schema is in `docs/notifications.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub schema: u32,
    /// Unique per incident transition: `"{incident}#{seq}"`. Receivers that see the same
    /// key twice are seeing a repeat (a retry whose first answer was lost).
    pub delivery_key: String,
    /// The incident id (`inc-000042`), or `finding:{rule}@{gpu|node}` for a bare finding.
    /// Stable for the life of the incident: PagerDuty's `dedup_key`, Alertmanager's
    /// `incident` label.
    pub incident: String,
    /// 1 for the first transition of this incident, then 2, 3, …
    pub seq: u64,
    /// The main transition, and all of them.
    pub transition: Transition,
    pub transitions: Vec<Transition>,
    pub status: Status,
    pub kind: FindingKind,
    pub severity: Severity,
    /// Rule id, e.g. `xid.79`, `ecc.dbe`, `security.cryptomining`.
    pub rule: String,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// Kubernetes namespace of the GPU's workload, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub summary: String,
    pub action: Action,
    /// The action as a sentence for people.
    pub action_text: String,
    /// When the incident opened (or the finding was seen).
    pub started_ms: TimestampMs,
    /// When this transition happened.
    pub ts_ms: TimestampMs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<TimestampMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    /// Context beyond the numbers (MITRE technique, pod, playbook, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Link to the incident in gpuwarden's API, when `notify.external_url` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Notification {
    /// The message for one incident change, or `None` when nothing in it is notable.
    /// `seq` is the transition's sequence number (assigned by the outbox).
    pub fn from_change(change: &IncidentChange, seq: u64, namespace: Option<String>) -> Option<Notification> {
        let mut transitions: Vec<Transition> = change
            .kinds
            .iter()
            .filter_map(|k| Transition::from_change(*k))
            .collect();
        transitions.sort();
        transitions.dedup();
        let transition = *transitions.iter().max_by_key(|t| t.rank())?;
        let inc = &change.incident;
        let status = match inc.state {
            IncidentState::Open => Status::Firing,
            IncidentState::Acknowledged => Status::Acknowledged,
            // Still active until it resolves: a receiver keeps it firing (or acknowledged).
            IncidentState::Clearing if inc.acknowledged_ms.is_some() => Status::Acknowledged,
            IncidentState::Clearing => Status::Firing,
            IncidentState::Resolved => Status::Resolved,
        };
        // The incident's own context (MITRE technique, pod, playbook from security rules)
        // travels with every transition.
        let mut labels = inc.labels.clone();
        let namespace = namespace.or_else(|| inc.labels.get("gpuwarden.namespace").cloned());
        if let Some(ns) = &namespace {
            labels.insert("namespace".to_string(), ns.clone());
        }
        Some(Notification {
            schema: SCHEMA_VERSION,
            delivery_key: format!("{}#{seq}", inc.id),
            incident: inc.id.clone(),
            seq,
            transition,
            transitions,
            status,
            kind: inc.kind,
            severity: inc.severity,
            rule: inc.rule.clone(),
            node: inc.node.clone(),
            gpu: inc.gpu.as_ref().map(|g| g.to_string()),
            namespace,
            summary: inc.summary.clone(),
            action: inc.action,
            action_text: inc.action.describe().to_string(),
            started_ms: inc.opened_ms,
            ts_ms: inc.updated_ms,
            ended_ms: inc.resolved_ms.filter(|_| status == Status::Resolved),
            acknowledged_by: inc.acknowledged_by.clone(),
            labels,
            url: None,
        })
    }

    /// A finding delivered on its own (security detections that a SOC wants even when no
    /// incident tracks them). Its labels (MITRE technique, pod, playbook) are kept.
    pub fn from_finding(finding: &Finding, seq: u64) -> Notification {
        let subject = match &finding.gpu {
            Some(g) => g.to_string(),
            None => format!("node:{}", finding.node),
        };
        let incident = format!("finding:{}@{subject}", finding.rule);
        let namespace = finding.labels.get("namespace").cloned();
        Notification {
            schema: SCHEMA_VERSION,
            delivery_key: format!("{incident}#{seq}"),
            incident,
            seq,
            transition: Transition::Detected,
            transitions: vec![Transition::Detected],
            status: Status::Firing,
            kind: finding.kind,
            severity: finding.severity,
            rule: finding.rule.clone(),
            node: finding.node.clone(),
            gpu: finding.gpu.as_ref().map(|g| g.to_string()),
            namespace,
            summary: finding.summary.clone(),
            action: finding.action,
            action_text: finding.action.describe().to_string(),
            started_ms: finding.ts_ms,
            ts_ms: finding.ts_ms,
            ended_ms: None,
            acknowledged_by: None,
            labels: finding.labels.clone(),
            url: None,
        }
    }

    /// The message `gpuwarden notify test SINK` sends: clearly a test, info severity.
    pub fn test(now_ms: TimestampMs) -> Notification {
        Notification {
            schema: SCHEMA_VERSION,
            delivery_key: format!("test-{now_ms}#1"),
            incident: format!("test-{now_ms}"),
            seq: 1,
            transition: Transition::Test,
            transitions: vec![Transition::Test],
            status: Status::Firing,
            kind: FindingKind::Health,
            severity: Severity::Info,
            rule: "gpuwarden.test".into(),
            node: "gpuwarden-test".into(),
            gpu: None,
            namespace: None,
            summary: "gpuwarden test notification: this sink is configured correctly".into(),
            action: Action::None,
            action_text: Action::None.describe().into(),
            started_ms: now_ms,
            ts_ms: now_ms,
            ended_ms: None,
            acknowledged_by: None,
            labels: BTreeMap::new(),
            url: None,
        }
    }

    /// One line for people: `[CRITICAL] opened: summary (node/gpu)`.
    pub fn title(&self) -> String {
        format!(
            "[{}] {} {}: {}",
            self.severity.as_str().to_uppercase(),
            self.rule,
            self.transition.as_str(),
            self.summary
        )
    }

    /// Where: `node` or `node / GPU-…`.
    pub fn subject(&self) -> String {
        match &self.gpu {
            Some(g) => format!("{} / {g}", self.node),
            None => self.node.clone(),
        }
    }
}

/// RFC 3339 UTC with milliseconds, the timestamp format of every JSON sink.
pub fn rfc3339(ms: TimestampMs) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use gpuwarden_model::{GpuUuid, Incident, Resolution};

    pub fn incident(state: IncidentState) -> Incident {
        Incident {
            id: "inc-000007".into(),
            dedup_key: "ecc.dbe@GPU-1".into(),
            rule: "ecc.dbe".into(),
            kind: FindingKind::Health,
            severity: Severity::Critical,
            gpu: Some(GpuUuid::new("GPU-1")),
            node: "node-a".into(),
            state,
            summary: "2 double-bit ECC errors".into(),
            action: Action::ResetGpu,
            opened_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_060_000,
            last_seen_ms: 1_700_000_060_000,
            acknowledged_ms: None,
            acknowledged_by: None,
            resolved_ms: (state == IncidentState::Resolved).then_some(1_700_000_060_000),
            resolution: (state == IncidentState::Resolved).then(|| Resolution::Manual {
                actor: "alice".into(),
                comment: None,
            }),
            finding_count: 3,
            labels: Default::default(),
            flaps: 0,
            correlation: Default::default(),
            timeline: vec![],
        }
    }

    pub fn sample(transition: Transition) -> Notification {
        let (state, kind) = match transition {
            Transition::Resolved => (IncidentState::Resolved, ChangeKind::Resolved),
            _ => (IncidentState::Open, ChangeKind::Opened),
        };
        let change = IncidentChange {
            incident: incident(state),
            kinds: vec![kind],
        };
        Notification::from_change(&change, 1, Some("ml-team".into())).unwrap()
    }

    #[test]
    fn bookkeeping_changes_are_not_notifications() {
        let change = IncidentChange {
            incident: incident(IncidentState::Open),
            kinds: vec![ChangeKind::Refreshed, ChangeKind::Cleared],
        };
        assert!(Notification::from_change(&change, 1, None).is_none());
    }

    #[test]
    fn resolution_names_the_message_and_carries_its_end() {
        let change = IncidentChange {
            incident: incident(IncidentState::Resolved),
            kinds: vec![ChangeKind::Escalated, ChangeKind::Resolved],
        };
        let n = Notification::from_change(&change, 4, None).unwrap();
        assert_eq!(n.transition, Transition::Resolved);
        assert_eq!(n.status, Status::Resolved);
        assert_eq!(n.ended_ms, Some(1_700_000_060_000));
        assert_eq!(n.delivery_key, "inc-000007#4");
    }

    #[test]
    fn a_security_finding_fits_the_payload() {
        let mut labels = BTreeMap::new();
        labels.insert("mitre.technique".to_string(), "T1496".to_string());
        labels.insert("namespace".to_string(), "research".to_string());
        let f = Finding {
            kind: FindingKind::Security,
            rule: "security.cryptomining".into(),
            severity: Severity::Critical,
            gpu: Some(GpuUuid::new("GPU-9")),
            node: "node-b".into(),
            ts_ms: 5,
            summary: "mining signature".into(),
            evidence: vec![],
            action: Action::DrainNode,
            dimension: None,
            labels,
        };
        let n = Notification::from_finding(&f, 1);
        assert_eq!(n.incident, "finding:security.cryptomining@GPU-9");
        assert_eq!(n.namespace.as_deref(), Some("research"));
        assert_eq!(n.labels["mitre.technique"], "T1496");
    }

    #[test]
    fn rfc3339_is_utc_with_millis() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
