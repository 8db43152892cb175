//! Prometheus Alertmanager, API v2: `POST /api/v2/alerts` with a list of alerts.
//!
//! An incident is one alert, identified (as Alertmanager identifies alerts) by its label
//! set: `alertname`, `severity`, `incident`, `rule`, `node`, `kind`, and `gpu`/`uuid`
//! (both the GPU's UUID: incidents do not know the GPU index) and `namespace` when
//! known. Annotations carry `summary`, `description` and `action`. A firing alert's
//! `endsAt` is `alert_ttl` ahead; a resolution sends the same labels with `endsAt` = the
//! resolution time, which ends the alert.
//!
//! Severity is a label, so an escalation makes a new label set; the message of an
//! escalation therefore also ends the alerts of the lower severities, so that the old
//! one does not linger until its `endsAt`.

use super::{check_url, http, BoxFuture, BuildContext, BuildError, Sink, SinkError};
use crate::config::AlertmanagerConfig;
use crate::message::{rfc3339, Notification, Status, Transition};
use gpuwarden_model::{FindingKind, Severity};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

pub struct Alertmanager {
    name: String,
    endpoint: reqwest::Url,
    receiver: String,
    ttl: Duration,
    max_batch: usize,
    http: reqwest::Client,
}

impl Alertmanager {
    pub fn new(name: &str, c: &AlertmanagerConfig, ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let base = check_url(name, c.url.trim_end_matches('/'))?;
        let endpoint = check_url(name, &format!("{}/api/v2/alerts", base.as_str().trim_end_matches('/')))?;
        let ttl = match &c.alert_ttl {
            Some(s) => humantime::parse_duration(s).map_err(|_| BuildError::Invalid {
                sink: name.into(),
                problem: format!("alert_ttl = \"{s}\" is not a duration"),
            })?,
            None => Duration::from_secs(24 * 3600),
        };
        Ok(Alertmanager {
            name: name.into(),
            receiver: format!("Alertmanager {}", http::origin(&endpoint)),
            endpoint,
            ttl,
            max_batch: c.max_batch.unwrap_or(64).max(1),
            http: ctx.http.clone(),
        })
    }
}

fn kind_name(k: FindingKind) -> &'static str {
    match k {
        FindingKind::Health => "GpuwardenHealth",
        FindingKind::Anomaly => "GpuwardenAnomaly",
        FindingKind::Prediction => "GpuwardenPrediction",
        FindingKind::Security => "GpuwardenSecurity",
    }
}

fn labels(n: &Notification, severity: Severity) -> Map<String, Value> {
    let mut l = Map::new();
    l.insert("alertname".into(), kind_name(n.kind).into());
    l.insert("severity".into(), severity.as_str().into());
    l.insert("incident".into(), n.incident.clone().into());
    l.insert("rule".into(), n.rule.clone().into());
    l.insert("node".into(), n.node.clone().into());
    l.insert("kind".into(), json!(n.kind));
    if let Some(g) = &n.gpu {
        l.insert("gpu".into(), g.clone().into());
        l.insert("uuid".into(), g.clone().into());
    }
    if let Some(ns) = &n.namespace {
        l.insert("namespace".into(), ns.clone().into());
    }
    l
}

/// The alerts for one notification (one, plus the ends of lower-severity label sets
/// after an escalation). `now_ms` is wall time: Alertmanager compares `endsAt` with its
/// own clock, while incident times are data time (ahead of it in a `--speed` run).
pub fn alerts(n: &Notification, ttl: Duration, now_ms: i64) -> Vec<Value> {
    let mut annotations = Map::new();
    annotations.insert("summary".into(), n.summary.clone().into());
    let mut description = format!(
        "{} on {}: {} ({}, incident {}).",
        n.rule,
        n.subject(),
        n.summary,
        n.transition.as_str(),
        n.incident
    );
    if let Some(by) = &n.acknowledged_by {
        description.push_str(&format!(" Acknowledged by {by}."));
    }
    annotations.insert("description".into(), description.into());
    annotations.insert(
        "action".into(),
        format!("{}: {}", n.action.as_str(), n.action_text).into(),
    );
    let ends_ms = match n.status {
        Status::Resolved => n.ended_ms.unwrap_or(n.ts_ms).min(now_ms),
        _ => now_ms + ttl.as_millis() as i64,
    };
    let alert = |severity: Severity, ends_ms: i64| {
        let mut a = Map::new();
        a.insert("labels".into(), Value::Object(labels(n, severity)));
        a.insert("annotations".into(), Value::Object(annotations.clone()));
        a.insert("startsAt".into(), rfc3339(n.started_ms.min(ends_ms)).into());
        a.insert("endsAt".into(), rfc3339(ends_ms).into());
        if let Some(u) = &n.url {
            a.insert("generatorURL".into(), u.clone().into());
        }
        Value::Object(a)
    };
    let mut out = vec![alert(n.severity, ends_ms)];
    if n.transitions.contains(&Transition::Escalated) {
        for lower in [Severity::Info, Severity::Warning, Severity::Critical] {
            if lower < n.severity {
                out.push(alert(lower, now_ms.min(ends_ms)));
            }
        }
    }
    out
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Sink for Alertmanager {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        "alertmanager"
    }
    fn max_batch(&self) -> usize {
        self.max_batch
    }
    fn deliver<'a>(&'a self, batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let now = wall_ms();
            let body: Vec<Value> = batch.iter().flat_map(|n| alerts(n, self.ttl, now)).collect();
            let req = self.http.post(self.endpoint.clone()).json(&body);
            http::send(&self.name, &self.receiver, req).await.map(|_| ())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::sample;

    #[test]
    fn firing_alert_has_every_documented_field() {
        let mut n = sample(Transition::Opened);
        n.url = Some("http://gw:9470/api/v1/incidents/inc-000007".into());
        let a = &alerts(&n, Duration::from_secs(3600), 1_700_000_100_000)[0];
        let l = &a["labels"];
        assert_eq!(l["alertname"], "GpuwardenHealth");
        assert_eq!(l["severity"], "critical");
        assert_eq!(l["gpu"], "GPU-1");
        assert_eq!(l["uuid"], "GPU-1");
        assert_eq!(l["node"], "node-a");
        assert_eq!(l["rule"], "ecc.dbe");
        assert_eq!(l["incident"], "inc-000007");
        assert_eq!(l["namespace"], "ml-team");
        assert_eq!(a["annotations"]["summary"], "2 double-bit ECC errors");
        assert!(a["annotations"]["action"].as_str().unwrap().starts_with("reset_gpu: "));
        assert!(a["annotations"]["description"].as_str().unwrap().contains("inc-000007"));
        assert_eq!(a["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(a["endsAt"], rfc3339(1_700_003_700_000));
        assert_eq!(a["generatorURL"], "http://gw:9470/api/v1/incidents/inc-000007");
    }

    #[test]
    fn resolution_ends_the_alert_and_escalation_ends_lower_severities() {
        let n = sample(Transition::Resolved);
        let a = alerts(&n, Duration::from_secs(3600), 1_800_000_000_000);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0]["endsAt"], rfc3339(1_700_000_060_000));
        let mut n = sample(Transition::Opened);
        n.transitions = vec![Transition::Escalated];
        let a = alerts(&n, Duration::from_secs(3600), 1_700_000_100_000);
        let sev: Vec<&str> = a.iter().map(|x| x["labels"]["severity"].as_str().unwrap()).collect();
        assert_eq!(sev, vec!["critical", "info", "warning"]);
        assert_eq!(a[1]["endsAt"], rfc3339(1_700_000_100_000));
    }
}
