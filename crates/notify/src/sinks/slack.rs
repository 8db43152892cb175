//! Slack incoming webhook with Block Kit: a header, the summary with the facts as
//! fields, and a context line with the incident and delivery key. `text` is the
//! notification fallback Slack shows where blocks cannot be rendered.
//!
//! The webhook URL embeds its token, so it is read like a secret and never printed.

use super::{check_url, http, BoxFuture, BuildContext, BuildError, Sink, SinkError};
use crate::config::ChatConfig;
use crate::message::Notification;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct Slack {
    name: String,
    url: reqwest::Url,
    http: reqwest::Client,
}

/// The webhook URL: from the secret when configured, else `url`.
pub(crate) fn chat_url(name: &str, c: &ChatConfig) -> Result<reqwest::Url, BuildError> {
    let url = match c.secret().resolve(name)? {
        Some(s) => s.expose().to_string(),
        None => c.url.clone().ok_or_else(|| BuildError::Invalid {
            sink: name.into(),
            problem: "needs the webhook URL: set secret_env or secret_file (or url)".into(),
        })?,
    };
    check_url(name, &url).map_err(|_| BuildError::Invalid {
        sink: name.into(),
        problem: "the webhook URL is not an http(s) URL".into(),
    })
}

impl Slack {
    pub fn new(name: &str, c: &ChatConfig, ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        Ok(Slack {
            name: name.into(),
            url: chat_url(name, c)?,
            http: ctx.http.clone(),
        })
    }
}

/// Slack's mrkdwn needs `&`, `<`, `>` escaped (its control characters).
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Slack's header block takes plain text up to 150 characters.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

pub fn payload(n: &Notification) -> Value {
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Severity*\n{}", n.severity)}),
        json!({"type": "mrkdwn", "text": format!("*Status*\n{}", n.status.as_str())}),
        json!({"type": "mrkdwn", "text": format!("*Node*\n{}", escape(&n.node))}),
        json!({"type": "mrkdwn", "text": format!("*Rule*\n`{}`", escape(&n.rule))}),
        json!({"type": "mrkdwn", "text": format!("*Action*\n{}", escape(&n.action_text))}),
    ];
    if let Some(g) = &n.gpu {
        fields.push(json!({"type": "mrkdwn", "text": format!("*GPU*\n`{}`", escape(g))}));
    }
    if let Some(ns) = &n.namespace {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Namespace*\n{}", escape(ns))}));
    }
    let mut context = format!("incident {} · delivery {}", n.incident, n.delivery_key);
    if let Some(u) = &n.url {
        context.push_str(&format!(" · <{}|open in gpuwarden>", u));
    }
    json!({
        "text": n.title(),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": clip(&n.title(), 150), "emoji": false}},
            {"type": "section", "text": {"type": "mrkdwn", "text": escape(&n.summary)}, "fields": fields},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ]
    })
}

impl Sink for Slack {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        "slack"
    }
    fn deliver<'a>(&'a self, batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for n in batch {
                let req = self.http.post(self.url.clone()).json(&payload(n));
                http::send(&self.name, "Slack webhook", req).await?;
            }
            Ok(())
        })
    }
}
