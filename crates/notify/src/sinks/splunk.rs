//! Splunk HTTP Event Collector: `POST /services/collector/event` with
//! `Authorization: Splunk <token>`; a batch is several event objects one after another
//! in one body (HEC's documented batch form). Each event's `event` is the
//! [`Notification`] itself, `time` is the transition time in seconds.

use super::{check_url, http, BoxFuture, BuildContext, BuildError, Sink, SinkError};
use crate::config::SplunkConfig;
use crate::message::Notification;
use crate::secret::Secret;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct Splunk {
    name: String,
    url: reqwest::Url,
    receiver: String,
    token: Secret,
    index: Option<String>,
    sourcetype: String,
    max_batch: usize,
    http: reqwest::Client,
}

impl Splunk {
    pub fn new(name: &str, c: &SplunkConfig, ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let url = check_url(
            name,
            &format!("{}/services/collector/event", c.url.trim_end_matches('/')),
        )?;
        Ok(Splunk {
            name: name.into(),
            receiver: format!("Splunk HEC {}", http::origin(&url)),
            url,
            token: c.secret().require(name)?,
            index: c.index.clone(),
            sourcetype: c.sourcetype.clone().unwrap_or_else(|| "gpuwarden:notification".into()),
            max_batch: c.max_batch.unwrap_or(100).max(1),
            http: ctx.http.clone(),
        })
    }
}

pub fn event(n: &Notification, sourcetype: &str, index: Option<&str>) -> Value {
    let mut e = json!({
        "time": n.ts_ms as f64 / 1000.0,
        "host": n.node,
        "source": "gpuwarden",
        "sourcetype": sourcetype,
        "event": n,
    });
    if let Some(i) = index {
        e["index"] = json!(i);
    }
    e
}

impl Sink for Splunk {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        "splunk"
    }
    fn max_batch(&self) -> usize {
        self.max_batch
    }
    fn deliver<'a>(&'a self, batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut body = String::new();
            for n in batch {
                body.push_str(&event(n, &self.sourcetype, self.index.as_deref()).to_string());
                body.push('\n');
            }
            let req = self
                .http
                .post(self.url.clone())
                .header(
                    reqwest::header::AUTHORIZATION,
                    format!("Splunk {}", self.token.expose()),
                )
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            http::send(&self.name, &self.receiver, req).await.map(|_| ())
        })
    }
}
