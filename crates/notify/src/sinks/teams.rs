//! Microsoft Teams (incoming webhook or Workflows "post to a channel when a webhook
//! request is received"): a `message` whose one attachment is an Adaptive Card 1.4 with
//! the title, the summary, a FactSet and a link to the incident.

use super::slack::chat_url;
use super::{http, BoxFuture, BuildContext, BuildError, Sink, SinkError};
use crate::config::ChatConfig;
use crate::message::{Notification, Status};
use gpuwarden_model::Severity;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct Teams {
    name: String,
    url: reqwest::Url,
    http: reqwest::Client,
}

impl Teams {
    pub fn new(name: &str, c: &ChatConfig, ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        Ok(Teams {
            name: name.into(),
            url: chat_url(name, c)?,
            http: ctx.http.clone(),
        })
    }
}

pub fn payload(n: &Notification) -> Value {
    let color = match (n.status, n.severity) {
        (Status::Resolved, _) => "good",
        (_, Severity::Critical | Severity::Fatal) => "attention",
        (_, Severity::Warning) => "warning",
        _ => "default",
    };
    let mut facts = vec![
        json!({"title": "Severity", "value": n.severity.as_str()}),
        json!({"title": "Status", "value": n.status.as_str()}),
        json!({"title": "Node", "value": n.node}),
        json!({"title": "Rule", "value": n.rule}),
        json!({"title": "Action", "value": n.action_text}),
        json!({"title": "Incident", "value": n.incident}),
        json!({"title": "Delivery", "value": n.delivery_key}),
    ];
    if let Some(g) = &n.gpu {
        facts.push(json!({"title": "GPU", "value": g}));
    }
    if let Some(ns) = &n.namespace {
        facts.push(json!({"title": "Namespace", "value": ns}));
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {"type": "TextBlock", "size": "Large", "weight": "Bolder", "wrap": true, "color": color, "text": n.title()},
            {"type": "TextBlock", "wrap": true, "text": n.summary},
            {"type": "FactSet", "facts": facts},
        ],
    });
    if let Some(u) = &n.url {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open in gpuwarden", "url": u}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }]
    })
}

impl Sink for Teams {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        "teams"
    }
    fn deliver<'a>(&'a self, batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for n in batch {
                let req = self.http.post(self.url.clone()).json(&payload(n));
                http::send(&self.name, "Teams webhook", req).await?;
            }
            Ok(())
        })
    }
}
