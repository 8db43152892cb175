//! PagerDuty Events API v2 (`POST /v2/enqueue`): `trigger` when an incident opens,
//! reopens, escalates or flaps, `acknowledge` and `resolve` when it is acknowledged or
//! resolved. `dedup_key` is `gpuwarden-{incident}`: stable for the incident's life, so
//! PagerDuty folds every event of one incident into one PagerDuty incident and drops a
//! repeated trigger.
//!
//! Severity mapping (PagerDuty has critical, error, warning, info): fatal and critical →
//! `critical`, warning → `warning`, info → `info`.

use super::{check_url, http, BoxFuture, BuildContext, BuildError, Sink, SinkError};
use crate::config::PagerDutyConfig;
use crate::message::{rfc3339, Notification, Transition};
use crate::secret::Secret;
use gpuwarden_model::Severity;
use serde_json::{json, Value};
use std::sync::Arc;

pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// PagerDuty truncates summaries beyond this.
const MAX_SUMMARY: usize = 1024;

pub struct PagerDuty {
    name: String,
    url: reqwest::Url,
    receiver: String,
    routing_key: Secret,
    http: reqwest::Client,
}

impl PagerDuty {
    pub fn new(name: &str, c: &PagerDutyConfig, ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let url = check_url(name, c.url.as_deref().unwrap_or(DEFAULT_URL))?;
        Ok(PagerDuty {
            name: name.into(),
            receiver: format!("PagerDuty {}", http::origin(&url)),
            url,
            routing_key: c.secret().require(name)?,
            http: ctx.http.clone(),
        })
    }
}

pub fn event_action(n: &Notification) -> &'static str {
    match n.transition {
        Transition::Resolved => "resolve",
        Transition::Acknowledged => "acknowledge",
        _ => "trigger",
    }
}

pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Fatal | Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

fn clip(s: String) -> String {
    if s.len() <= MAX_SUMMARY {
        return s;
    }
    let mut end = MAX_SUMMARY - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

pub fn payload(n: &Notification, routing_key: &str) -> Value {
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": event_action(n),
        "dedup_key": format!("gpuwarden-{}", n.incident),
        "client": "gpuwarden",
    });
    if let Some(u) = &n.url {
        event["client_url"] = json!(u);
    }
    // The payload is required for triggers and ignored for acknowledge/resolve.
    if event_action(n) == "trigger" {
        event["payload"] = json!({
            "summary": clip(format!("{} on {}", n.title(), n.subject())),
            "source": n.gpu.clone().unwrap_or_else(|| n.node.clone()),
            "severity": severity(n.severity),
            "timestamp": rfc3339(n.ts_ms),
            "component": n.gpu.as_deref().map_or("node", |_| "gpu"),
            "group": n.node,
            "class": n.rule,
            "custom_details": {
                "incident": n.incident,
                "delivery_key": n.delivery_key,
                "transition": n.transition.as_str(),
                "kind": n.kind,
                "node": n.node,
                "gpu": n.gpu,
                "namespace": n.namespace,
                "action": n.action.as_str(),
                "action_text": n.action_text,
                "labels": n.labels,
            },
        });
    }
    event
}

impl Sink for PagerDuty {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        "pagerduty"
    }
    fn deliver<'a>(&'a self, batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for n in batch {
                let req = self
                    .http
                    .post(self.url.clone())
                    .json(&payload(n, self.routing_key.expose()));
                http::send(&self.name, &self.receiver, req).await?;
            }
            Ok(())
        })
    }
}
