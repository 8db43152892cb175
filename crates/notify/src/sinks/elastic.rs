//! Elasticsearch `_bulk`: one `create` action per document with `_id` = the delivery
//! key. A repeat of a delivered message then fails with 409 (version conflict), which
//! this sink counts as delivered: the index holds each transition exactly once.

use super::ecs::document;
use super::{check_url, http, BoxFuture, BuildContext, BuildError, Sink, SinkError};
use crate::config::ElasticConfig;
use crate::message::Notification;
use crate::secret::Secret;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct Elastic {
    name: String,
    url: reqwest::Url,
    receiver: String,
    index: String,
    api_key: Option<Secret>,
    max_batch: usize,
    http: reqwest::Client,
}

impl Elastic {
    pub fn new(name: &str, c: &ElasticConfig, ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let url = check_url(name, &format!("{}/_bulk", c.url.trim_end_matches('/')))?;
        Ok(Elastic {
            name: name.into(),
            receiver: format!("Elasticsearch {}", http::origin(&url)),
            url,
            index: c.index.clone().unwrap_or_else(|| "gpuwarden-notifications".into()),
            api_key: c.secret().resolve(name)?,
            max_batch: c.max_batch.unwrap_or(100).max(1),
            http: ctx.http.clone(),
        })
    }
}

/// The NDJSON body of a `_bulk` request.
pub fn bulk_body(batch: &[Arc<Notification>], index: &str) -> String {
    let mut body = String::new();
    for n in batch {
        body.push_str(&json!({"create": {"_index": index, "_id": n.delivery_key}}).to_string());
        body.push('\n');
        body.push_str(&document(n).to_string());
        body.push('\n');
    }
    body
}

/// Checks a `_bulk` answer: every item created (201) or already there (409).
fn check_items(sink: &str, receiver: &str, answer: &str) -> Result<(), SinkError> {
    let v: Value = serde_json::from_str(answer).map_err(|e| SinkError::PartialReject {
        sink: sink.into(),
        receiver: receiver.into(),
        detail: format!("answer is not JSON: {e}"),
        retryable: true,
    })?;
    if v["errors"] != Value::Bool(true) {
        return Ok(());
    }
    let mut retryable = false;
    let mut problems = Vec::new();
    for item in v["items"].as_array().into_iter().flatten() {
        let Some(r) = item.as_object().and_then(|o| o.values().next()) else {
            continue;
        };
        let status = r["status"].as_u64().unwrap_or(0);
        if (200..300).contains(&status) || status == 409 {
            continue;
        }
        retryable |= status == 429 || status >= 500;
        problems.push(format!("{} {}: {}", r["_id"], status, r["error"]["reason"]));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(SinkError::PartialReject {
        sink: sink.into(),
        receiver: receiver.into(),
        detail: http::truncate(&problems.join("; ")),
        retryable,
    })
}

impl Sink for Elastic {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        "elastic"
    }
    fn max_batch(&self) -> usize {
        self.max_batch
    }
    fn deliver<'a>(&'a self, batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut req = self
                .http
                .post(self.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(bulk_body(batch, &self.index));
            if let Some(k) = &self.api_key {
                req = req.header(reqwest::header::AUTHORIZATION, format!("ApiKey {}", k.expose()));
            }
            let answer = http::send(&self.name, &self.receiver, req).await?;
            check_items(&self.name, &self.receiver, &answer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_count_as_delivered_and_rejections_do_not() {
        let ok = r#"{"errors":true,"items":[{"create":{"_id":"a","status":409,"error":{"reason":"exists"}}},{"create":{"_id":"b","status":201}}]}"#;
        assert!(check_items("es", "r", ok).is_ok());
        let bad = r#"{"errors":true,"items":[{"create":{"_id":"a","status":400,"error":{"reason":"mapper_parsing_exception"}}}]}"#;
        let e = check_items("es", "r", bad).unwrap_err();
        assert!(
            !e.retryable() && e.to_string().contains("mapper_parsing_exception"),
            "{e}"
        );
    }
}
