//! Elastic Common Schema documents, and the NDJSON file sink (one document per line,
//! appended and fsynced, for Filebeat or Elastic Agent to ship).
//!
//! Field choices (ECS 8.11): `event.kind = "alert"`; `event.category` is `host` for
//! health, anomaly and prediction, `intrusion_detection` for security; `event.type` is
//! `start`/`end`/`change` for host events and `info` for intrusion detection (the values
//! ECS allows per category); `event.severity` is numeric (info 1, warning 3, critical 5,
//! fatal 7); `event.action` is the transition; `event.id` the delivery key. gpuwarden's
//! own fields are under `gpuwarden.*`.

use super::{BoxFuture, Sink, SinkError};
use crate::config::EcsFileConfig;
use crate::message::{rfc3339, Notification, Status, Transition};
use gpuwarden_model::{FindingKind, Severity};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

pub const ECS_VERSION: &str = "8.11.0";

pub fn severity_number(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Warning => 3,
        Severity::Critical => 5,
        Severity::Fatal => 7,
    }
}

/// The ECS document of one notification.
pub fn document(n: &Notification) -> Value {
    let security = n.kind == FindingKind::Security;
    let category = if security { "intrusion_detection" } else { "host" };
    let event_type = if security {
        "info"
    } else {
        match n.transition {
            Transition::Opened | Transition::Reopened => "start",
            Transition::Resolved => "end",
            _ => "change",
        }
    };
    let mut doc = json!({
        "@timestamp": rfc3339(n.ts_ms),
        "ecs": {"version": ECS_VERSION},
        "message": n.title(),
        "event": {
            "kind": "alert",
            "category": [category],
            "type": [event_type],
            "severity": severity_number(n.severity),
            "action": n.transition.as_str(),
            "id": n.delivery_key,
            "dataset": "gpuwarden.notification",
            "module": "gpuwarden",
            "provider": "gpuwarden",
            "start": rfc3339(n.started_ms),
            "reason": n.summary,
        },
        "host": {"name": n.node, "hostname": n.node},
        "rule": {
            "id": n.rule,
            "name": n.rule,
            "description": n.summary,
            "category": n.kind,
            "ruleset": "gpuwarden",
        },
        "observer": {"vendor": "gpuwarden", "product": "gpuwarden", "type": "monitoring", "version": env!("CARGO_PKG_VERSION")},
        "gpuwarden": {
            "incident": {"id": n.incident, "seq": n.seq, "status": n.status.as_str(), "transitions": n.transitions},
            "severity": n.severity.as_str(),
            "kind": n.kind,
            "action": n.action.as_str(),
            "action_text": n.action_text,
        },
    });
    if n.status == Status::Resolved {
        if let Some(end) = n.ended_ms {
            doc["event"]["end"] = json!(rfc3339(end));
        }
    }
    if let Some(g) = &n.gpu {
        doc["gpuwarden"]["gpu"] = json!({"uuid": g});
    }
    if let Some(ns) = &n.namespace {
        doc["orchestrator"] = json!({"namespace": ns, "type": "kubernetes"});
    }
    if !n.labels.is_empty() {
        doc["gpuwarden"]["labels"] = json!(n.labels);
    }
    if let Some(u) = &n.url {
        doc["event"]["url"] = json!(u);
    }
    if let Some(t) = n
        .labels
        .get("threat.technique.id")
        .or_else(|| n.labels.get("mitre.technique"))
    {
        doc["threat"] = json!({"framework": "MITRE ATT&CK", "technique": {"id": [t]}});
    }
    doc
}

/// `type = "ecs_file"`.
pub struct EcsFile {
    name: String,
    path: PathBuf,
}

impl EcsFile {
    pub fn new(name: &str, c: &EcsFileConfig) -> Self {
        EcsFile {
            name: name.into(),
            path: c.path.clone(),
        }
    }
}

impl Sink for EcsFile {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        "ecs_file"
    }
    fn max_batch(&self) -> usize {
        256
    }
    fn deliver<'a>(&'a self, batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut buf = Vec::new();
            for n in batch {
                serde_json::to_writer(&mut buf, &document(n)).expect("documents serialize");
                buf.push(b'\n');
            }
            let path = self.path.clone();
            let io = |source| SinkError::Io {
                sink: self.name.clone(),
                what: format!("appending to {}", self.path.display()),
                source,
            };
            tokio::task::spawn_blocking(move || {
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
                f.write_all(&buf)?;
                f.sync_data()
            })
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::sample;

    #[test]
    fn ecs_fields() {
        let d = document(&sample(Transition::Opened));
        assert_eq!(d["event"]["kind"], "alert");
        assert_eq!(d["event"]["category"], json!(["host"]));
        assert_eq!(d["event"]["type"], json!(["start"]));
        assert_eq!(d["event"]["severity"], 5);
        assert_eq!(d["event"]["action"], "opened");
        assert_eq!(d["host"]["name"], "node-a");
        assert_eq!(d["rule"]["id"], "ecc.dbe");
        assert_eq!(d["observer"]["vendor"], "gpuwarden");
        assert_eq!(d["gpuwarden"]["gpu"]["uuid"], "GPU-1");
        assert_eq!(d["@timestamp"], "2023-11-14T22:14:20.000Z");
        let d = document(&sample(Transition::Resolved));
        assert_eq!(d["event"]["type"], json!(["end"]));
        assert_eq!(d["event"]["end"], "2023-11-14T22:14:20.000Z");
    }
}
