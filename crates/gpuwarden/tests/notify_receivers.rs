//! Local receivers for the notification tests: one axum server that answers like
//! Slack, Teams, PagerDuty Events v2, Splunk HEC, Elasticsearch `_bulk` and a signed
//! webhook, checks every field of every request against the providers' documented
//! schemas (mismatches are collected, not panicked on, so the test can report them
//! all), and counts each message by its delivery key. It can be stopped and started
//! again on the same port, to play a receiver outage.
//!
//! Used by the other `notify_*` tests through `#[path]`; as a test target of its own it
//! has no tests.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const HOOK_KEY: &str = "test-hook-key";
pub const PD_KEY: &str = "R0UTINGKEY0000000000000000000000";
pub const SPLUNK_TOKEN: &str = "00000000-1111-2222-3333-444444444444";

/// What the receivers saw.
#[derive(Default)]
pub struct Seen {
    /// Per receiver kind: delivery key → times received.
    pub keys: BTreeMap<&'static str, BTreeMap<String, usize>>,
    /// Field checks that failed.
    pub errors: Vec<String>,
    pub requests: usize,
}

#[derive(Clone, Default)]
pub struct Receivers {
    pub seen: Arc<Mutex<Seen>>,
}

struct Running {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A receiver server that can be started and stopped on one port.
pub struct Server {
    pub port: u16,
    pub receivers: Receivers,
    running: Option<Running>,
}

impl Server {
    pub fn new(port: u16) -> Self {
        Server {
            port,
            receivers: Receivers::default(),
            running: None,
        }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the receiver port");
        let app = router(self.receivers.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.running = Some(Running { task });
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.task.abort();
            let _ = (&mut { r }.task).await;
        }
    }

    /// The `[notify.sinks.*]` of every sink this server receives for.
    pub fn sinks_toml(&self) -> String {
        let b = self.base();
        format!(
            r#"
[notify.sinks.hook]
type = "webhook"
url = "{b}/hook"
secret_env = "GPUWARDEN_TEST_HOOK_KEY"

[notify.sinks.slack]
type = "slack"
url = "{b}/slack/services/T000/B000/XXXX"

[notify.sinks.teams]
type = "teams"
url = "{b}/teams"

[notify.sinks.pd]
type = "pagerduty"
url = "{b}/pd/v2/enqueue"
secret_env = "GPUWARDEN_TEST_PD_KEY"

[notify.sinks.splunk]
type = "splunk"
url = "{b}/splunk"
secret_env = "GPUWARDEN_TEST_SPLUNK_TOKEN"

[notify.sinks.es]
type = "elastic"
url = "{b}/es"
index = "gpuwarden-test"
"#
        )
    }
}

/// The environment the sinks above read their secrets from.
pub fn secret_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GPUWARDEN_TEST_HOOK_KEY", HOOK_KEY),
        ("GPUWARDEN_TEST_PD_KEY", PD_KEY),
        ("GPUWARDEN_TEST_SPLUNK_TOKEN", SPLUNK_TOKEN),
    ]
}

fn router(r: Receivers) -> Router {
    Router::new()
        .route("/hook", post(hook))
        .route("/slack/services/T000/B000/XXXX", post(slack))
        .route("/teams", post(teams))
        .route("/pd/v2/enqueue", post(pagerduty))
        .route("/splunk/services/collector/event", post(splunk))
        .route("/es/_bulk", post(elastic))
        .with_state(r)
}

impl Receivers {
    fn count(&self, kind: &'static str, key: String) {
        let mut s = self.seen.lock();
        *s.keys.entry(kind).or_default().entry(key).or_default() += 1;
    }
    fn check(&self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.seen.lock().errors.push(what.into());
        }
    }
    fn request(&self) {
        self.seen.lock().requests += 1;
    }
}

fn is_str(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.is_empty())
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str().is_some_and(|s| humantime::parse_rfc3339(s).is_ok())
}

/// The fields of gpuwarden's documented webhook schema.
fn check_notification(r: &Receivers, n: &Value, ctx: &str) {
    r.check(n["schema"] == 1, format!("{ctx}: schema"));
    for f in [
        "delivery_key",
        "incident",
        "rule",
        "node",
        "summary",
        "action",
        "action_text",
        "transition",
        "status",
        "kind",
        "severity",
    ] {
        r.check(is_str(&n[f]), format!("{ctx}: {f} missing: {n}"));
    }
    r.check(n["seq"].as_u64().is_some_and(|s| s >= 1), format!("{ctx}: seq"));
    r.check(
        n["delivery_key"].as_str() == Some(&format!("{}#{}", n["incident"].as_str().unwrap_or(""), n["seq"])),
        format!("{ctx}: delivery_key is incident#seq"),
    );
    r.check(
        n["started_ms"].as_i64().is_some() && n["ts_ms"].as_i64().is_some(),
        format!("{ctx}: times"),
    );
    r.check(
        ["firing", "acknowledged", "resolved"].contains(&n["status"].as_str().unwrap_or("")),
        format!("{ctx}: status"),
    );
    if n["status"] == "resolved" {
        r.check(
            n["ended_ms"].as_i64().is_some(),
            format!("{ctx}: resolved without ended_ms"),
        );
    }
}

async fn hook(State(r): State<Receivers>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.request();
    let sig = headers
        .get("x-gpuwarden-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut mac = Hmac::<Sha256>::new_from_slice(HOOK_KEY.as_bytes()).unwrap();
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    r.check(sig == expected, format!("webhook: bad signature {sig}"));
    r.check(
        headers.get("content-type").and_then(|v| v.to_str().ok()) == Some("application/json"),
        "webhook: content-type",
    );
    let n: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    check_notification(&r, &n, "webhook");
    let key = headers
        .get("x-gpuwarden-delivery")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    r.check(
        n["delivery_key"].as_str() == Some(key.as_str()),
        "webhook: delivery header = body key",
    );
    r.count("webhook", key);
    StatusCode::OK
}

async fn slack(State(r): State<Receivers>, body: Bytes) -> &'static str {
    r.request();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.check(is_str(&v["text"]), "slack: fallback text");
    let blocks = v["blocks"].as_array().cloned().unwrap_or_default();
    r.check(blocks.len() == 3, "slack: 3 blocks");
    if blocks.len() == 3 {
        r.check(
            blocks[0]["type"] == "header" && blocks[0]["text"]["type"] == "plain_text",
            "slack: header",
        );
        r.check(
            blocks[0]["text"]["text"]
                .as_str()
                .is_some_and(|t| t.chars().count() <= 150),
            "slack: header ≤ 150",
        );
        r.check(
            blocks[1]["type"] == "section" && blocks[1]["text"]["type"] == "mrkdwn",
            "slack: section",
        );
        let fields = blocks[1]["fields"].as_array().cloned().unwrap_or_default();
        r.check(!fields.is_empty() && fields.len() <= 10, "slack: 1..=10 fields");
        r.check(
            fields.iter().all(|f| f["type"] == "mrkdwn" && is_str(&f["text"])),
            "slack: field shape",
        );
        r.check(blocks[2]["type"] == "context", "slack: context");
        let ctx = blocks[2]["elements"][0]["text"].as_str().unwrap_or("");
        let key = ctx
            .split("delivery ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap_or("")
            .to_string();
        r.check(!key.is_empty(), format!("slack: no delivery key in {ctx}"));
        r.count("slack", key);
    }
    "ok"
}

async fn teams(State(r): State<Receivers>, body: Bytes) -> (StatusCode, &'static str) {
    r.request();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.check(v["type"] == "message", "teams: type message");
    let a = &v["attachments"][0];
    r.check(
        a["contentType"] == "application/vnd.microsoft.card.adaptive",
        "teams: contentType",
    );
    r.check(a["contentUrl"].is_null(), "teams: contentUrl null");
    let c = &a["content"];
    r.check(
        c["type"] == "AdaptiveCard" && c["version"] == "1.4",
        "teams: card type/version",
    );
    r.check(
        c["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json",
        "teams: $schema",
    );
    let body = c["body"].as_array().cloned().unwrap_or_default();
    r.check(
        body.len() == 3 && body[0]["type"] == "TextBlock" && body[2]["type"] == "FactSet",
        "teams: body",
    );
    let facts = body
        .get(2)
        .and_then(|b| b["facts"].as_array().cloned())
        .unwrap_or_default();
    r.check(
        facts.iter().all(|f| is_str(&f["title"]) && is_str(&f["value"])),
        "teams: facts",
    );
    let key = facts
        .iter()
        .find(|f| f["title"] == "Delivery")
        .and_then(|f| f["value"].as_str())
        .unwrap_or("")
        .to_string();
    r.count("teams", key);
    (StatusCode::OK, "1")
}

async fn pagerduty(State(r): State<Receivers>, body: Bytes) -> (StatusCode, axum::Json<Value>) {
    r.request();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.check(v["routing_key"] == PD_KEY, "pagerduty: routing_key");
    let action = v["event_action"].as_str().unwrap_or("").to_string();
    r.check(
        ["trigger", "acknowledge", "resolve"].contains(&action.as_str()),
        "pagerduty: event_action",
    );
    let dedup = v["dedup_key"].as_str().unwrap_or("").to_string();
    r.check(
        dedup.starts_with("gpuwarden-inc-") && dedup.len() <= 255,
        format!("pagerduty: dedup_key {dedup}"),
    );
    let key = if action == "trigger" {
        let p = &v["payload"];
        r.check(
            p["summary"].as_str().is_some_and(|s| !s.is_empty() && s.len() <= 1024),
            "pagerduty: summary",
        );
        r.check(is_str(&p["source"]), "pagerduty: source");
        r.check(
            ["critical", "error", "warning", "info"].contains(&p["severity"].as_str().unwrap_or("")),
            "pagerduty: severity",
        );
        r.check(is_rfc3339(&p["timestamp"]), "pagerduty: timestamp");
        r.check(
            is_str(&p["component"]) && is_str(&p["group"]) && is_str(&p["class"]),
            "pagerduty: component/group/class",
        );
        r.check(p["custom_details"].is_object(), "pagerduty: custom_details");
        p["custom_details"]["delivery_key"].as_str().unwrap_or("").to_string()
    } else {
        format!("{dedup}:{action}")
    };
    r.count("pagerduty", key);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "success", "message": "Event processed", "dedup_key": dedup})),
    )
}

async fn splunk(State(r): State<Receivers>, headers: HeaderMap, body: Bytes) -> axum::Json<Value> {
    r.request();
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    r.check(auth == format!("Splunk {SPLUNK_TOKEN}"), "splunk: Authorization");
    let text = String::from_utf8_lossy(&body).to_string();
    for e in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        let Ok(e) = e else {
            r.check(false, "splunk: body is not JSON objects");
            break;
        };
        r.check(e["time"].as_f64().is_some(), "splunk: time");
        r.check(is_str(&e["host"]), "splunk: host");
        r.check(e["source"] == "gpuwarden", "splunk: source");
        r.check(e["sourcetype"] == "gpuwarden:notification", "splunk: sourcetype");
        check_notification(&r, &e["event"], "splunk");
        r.count("splunk", e["event"]["delivery_key"].as_str().unwrap_or("").to_string());
    }
    axum::Json(json!({"text": "Success", "code": 0}))
}

async fn elastic(State(r): State<Receivers>, headers: HeaderMap, body: Bytes) -> axum::Json<Value> {
    r.request();
    r.check(
        headers.get("content-type").and_then(|v| v.to_str().ok()) == Some("application/x-ndjson"),
        "elastic: content-type",
    );
    let text = String::from_utf8_lossy(&body).to_string();
    let lines: Vec<&str> = text.lines().collect();
    r.check(
        lines.len().is_multiple_of(2) && text.ends_with('\n'),
        "elastic: action/document pairs ending in a newline",
    );
    let mut items = Vec::new();
    for pair in lines.chunks(2) {
        let action: Value = serde_json::from_str(pair[0]).unwrap_or(Value::Null);
        let doc: Value = serde_json::from_str(pair.get(1).copied().unwrap_or("")).unwrap_or(Value::Null);
        let id = action["create"]["_id"].as_str().unwrap_or("").to_string();
        r.check(action["create"]["_index"] == "gpuwarden-test", "elastic: _index");
        r.check(is_rfc3339(&doc["@timestamp"]), "elastic: @timestamp");
        r.check(doc["event"]["kind"] == "alert", "elastic: event.kind");
        r.check(
            doc["event"]["category"].as_array().is_some_and(|c| !c.is_empty()),
            "elastic: event.category",
        );
        r.check(
            doc["event"]["type"].as_array().is_some_and(|c| !c.is_empty()),
            "elastic: event.type",
        );
        r.check(doc["event"]["severity"].as_u64().is_some(), "elastic: event.severity");
        r.check(is_str(&doc["event"]["action"]), "elastic: event.action");
        r.check(doc["event"]["id"] == id.as_str(), "elastic: event.id = _id");
        r.check(is_str(&doc["host"]["name"]), "elastic: host.name");
        r.check(
            is_str(&doc["rule"]["id"]) && is_str(&doc["rule"]["name"]),
            "elastic: rule.id/name",
        );
        r.check(
            doc["observer"]["vendor"] == "gpuwarden" && doc["observer"]["product"] == "gpuwarden",
            "elastic: observer",
        );
        r.check(doc["ecs"]["version"].as_str().is_some(), "elastic: ecs.version");
        r.check(
            doc["gpuwarden"]["incident"]["id"].as_str().is_some(),
            "elastic: gpuwarden.incident.id",
        );
        r.count("elastic", id.clone());
        items.push(json!({"create": {"_index": "gpuwarden-test", "_id": id, "status": 201, "result": "created"}}));
    }
    axum::Json(json!({"took": 1, "errors": false, "items": items}))
}
