//! `gpuwarden notify …`: send a test message to a configured sink, create/list/expire
//! silences and show the outbox through a running gpuwarden's API, and measure delivery
//! (`notify bench`).

mod bench;

use crate::config::FileConfig;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use gpuwarden_model::SystemClock;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test message to one sink of the config, now (no routes, silences or outbox),
    /// and say what the receiver answered.
    Test(TestArgs),
    /// Silences of a running gpuwarden: create, list, expire.
    #[command(subcommand)]
    Silence(Box<SilenceCommand>),
    /// The outbox per sink of a running gpuwarden: pending, delivered, failed, last error.
    Status(ServerArgs),
    /// Delivery throughput per sink type against local receivers, and the latency from an
    /// incident change to its delivery (p50/p95).
    Bench(bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Sink name, as in `[notify.sinks.NAME]`.
    pub sink: String,
    /// The configuration file with the `[notify]` section.
    #[arg(long, short, default_value = "gpuwarden.toml")]
    pub config: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the running gpuwarden.
    #[arg(long, env = "GPUWARDEN_SERVER", default_value = "http://127.0.0.1:9470")]
    pub server: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Create a silence. At least one matcher or --sink; every matcher given must match.
    #[command(
        after_help = "Examples:\n  gpuwarden notify silence create --node 'node-3*' --duration 2h --comment 'rack 3 maintenance'\n  \
gpuwarden notify silence create --rule 'xid.*' --min-severity warning --sink slack --duration 30m --comment 'known driver bug'"
    )]
    Create(Box<SilenceCreateArgs>),
    /// List silences (active, pending, recently expired).
    List(ServerArgs),
    /// End a silence now.
    Expire {
        /// Silence id (sil-…).
        id: String,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Args)]
pub struct SilenceCreateArgs {
    /// Rule id glob, e.g. `xid.*` (repeatable: any of them).
    #[arg(long)]
    pub rule: Vec<String>,
    /// Node glob (repeatable).
    #[arg(long)]
    pub node: Vec<String>,
    /// Kubernetes namespace glob (repeatable).
    #[arg(long)]
    pub namespace: Vec<String>,
    /// GPU UUID glob (repeatable).
    #[arg(long)]
    pub gpu: Vec<String>,
    /// Finding kind: health, anomaly, prediction, security (repeatable).
    #[arg(long)]
    pub kind: Vec<String>,
    /// Transition: opened, reopened, escalated, flapped, acknowledged, resolved (repeatable).
    #[arg(long)]
    pub transition: Vec<String>,
    /// Only notifications of at least this severity: info, warning, critical, fatal.
    #[arg(long)]
    pub min_severity: Option<String>,
    /// Only these sinks (repeatable; default all).
    #[arg(long)]
    pub sink: Vec<String>,
    /// Who asks (default: $USER).
    #[arg(long)]
    pub author: Option<String>,
    /// Why.
    #[arg(long)]
    pub comment: String,
    /// How long from the start, e.g. 2h.
    #[arg(long, conflicts_with = "ends_at", required_unless_present = "ends_at")]
    pub duration: Option<humantime::Duration>,
    /// End, RFC 3339 (e.g. 2026-11-25T18:00:00Z).
    #[arg(long)]
    pub ends_at: Option<String>,
    /// Start, RFC 3339 (default now).
    #[arg(long)]
    pub starts_at: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn notify(cmd: NotifyCommand) -> Result<ExitCode> {
    let rt = super::runtime()?;
    match cmd {
        NotifyCommand::Test(a) => rt.block_on(test(a)),
        NotifyCommand::Silence(cmd) => match *cmd {
            SilenceCommand::Create(a) => rt.block_on(create(*a)),
            SilenceCommand::List(s) => rt.block_on(list(s)),
            SilenceCommand::Expire { id, server } => rt.block_on(expire(&id, server)),
        },
        NotifyCommand::Status(s) => rt.block_on(status(s)),
        NotifyCommand::Bench(a) => rt.block_on(bench::run(a)),
    }
}

async fn test(a: TestArgs) -> Result<ExitCode> {
    let file = FileConfig::load(&a.config)?;
    let data_dir = file
        .data_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("./gpuwarden-data"));
    let mut cfg = file.notify;
    if !cfg.sinks.contains_key(&a.sink) {
        let names: Vec<&str> = cfg.sinks.keys().map(String::as_str).collect();
        bail!(
            "no sink '{}' in {} (configured: {})",
            a.sink,
            a.config.display(),
            names.join(", ")
        );
    }
    // Only the sink under test is built: another sink's missing secret is not this one's problem.
    cfg.sinks.retain(|name, _| *name == a.sink);
    cfg.routes.clear();
    // A scratch outbox: a test must not touch a running gpuwarden's.
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let notifier = gpuwarden_notify::Notifier::new(&cfg, scratch.path(), Arc::new(SystemClock))
        .with_context(|| format!("building sink '{}'", a.sink))?;
    let outcome = notifier.test(&a.sink).await;
    record_test(&data_dir, &a.sink, outcome.as_ref().err().map(|e| e.to_string()))?;
    match outcome {
        Ok(n) => {
            println!(
                "sink '{}': test message delivered (delivery key {})",
                a.sink, n.delivery_key
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Records the test in the audit trail of the config's data directory, when that
/// directory exists (a test run from anywhere must not create one).
fn record_test(data_dir: &std::path::Path, sink: &str, error: Option<String>) -> Result<()> {
    if !data_dir.is_dir() {
        tracing::debug!(
            "no data directory {}: the test is not recorded in an audit trail",
            data_dir.display()
        );
        return Ok(());
    }
    let result = if error.is_some() {
        gpuwarden_audit::Outcome::Error
    } else {
        gpuwarden_audit::Outcome::Ok
    };
    let mut entry = super::audit::cli_entry("notification.test", result).target(sink);
    entry.detail = error;
    super::audit::record_cli(data_dir, entry)
}

fn rfc3339_ms(field: &str, s: &str) -> Result<i64> {
    let t = humantime::parse_rfc3339_weak(s).with_context(|| format!("{field} \"{s}\" is not an RFC 3339 time"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client")
}

/// The JSON of a 2xx answer, or the API's error message.
async fn answer(resp: reqwest::Response) -> Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body["error"]["message"].as_str().unwrap_or("(no message)");
        bail!("the server answered {status}: {msg}");
    }
    Ok(body)
}

async fn create(a: SilenceCreateArgs) -> Result<ExitCode> {
    let mut matchers = serde_json::Map::new();
    let mut put = |k: &str, v: &Vec<String>| {
        if !v.is_empty() {
            matchers.insert(k.into(), json!(v));
        }
    };
    put("rules", &a.rule);
    put("nodes", &a.node);
    put("namespaces", &a.namespace);
    put("gpus", &a.gpu);
    put("kinds", &a.kind);
    put("transitions", &a.transition);
    if let Some(s) = &a.min_severity {
        matchers.insert("min_severity".into(), json!(s));
    }
    let author = a
        .author
        .clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "cli".into());
    let mut body = json!({"matchers": matchers, "sinks": a.sink, "author": author, "comment": a.comment});
    if let Some(s) = &a.starts_at {
        body["starts_ms"] = json!(rfc3339_ms("--starts-at", s)?);
    }
    match (&a.duration, &a.ends_at) {
        (Some(d), _) => body["duration"] = json!(d.to_string()),
        (None, Some(e)) => body["ends_ms"] = json!(rfc3339_ms("--ends-at", e)?),
        (None, None) => bail!("give --duration or --ends-at"),
    }
    let url = format!("{}/api/v1/silences", a.server.server.trim_end_matches('/'));
    let resp = client()
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let s = answer(resp).await?;
    if a.server.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("{}", s["id"].as_str().unwrap_or("?"));
    }
    Ok(ExitCode::SUCCESS)
}

fn when(ms: &Value) -> String {
    ms.as_i64()
        .map(|ms| {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
                .to_string()
        })
        .unwrap_or_else(|| "-".into())
}

async fn list(s: ServerArgs) -> Result<ExitCode> {
    let url = format!("{}/api/v1/silences", s.server.trim_end_matches('/'));
    let v = answer(client().get(&url).send().await.with_context(|| format!("GET {url}"))?).await?;
    if s.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<21} {:<8} {:<20} {:<20} {:<10} MATCHERS / COMMENT",
        "ID", "STATE", "STARTS", "ENDS", "AUTHOR"
    );
    for x in v["silences"].as_array().into_iter().flatten() {
        println!(
            "{:<21} {:<8} {:<20} {:<20} {:<10} {} {}— {}",
            x["id"].as_str().unwrap_or(""),
            x["state"].as_str().unwrap_or(""),
            when(&x["starts_ms"]),
            when(&x["ends_ms"]),
            x["author"].as_str().unwrap_or(""),
            x["matchers"],
            match x["sinks"].as_array() {
                Some(a) if !a.is_empty() => format!("sinks {} ", x["sinks"]),
                _ => String::new(),
            },
            x["comment"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn expire(id: &str, s: ServerArgs) -> Result<ExitCode> {
    let url = format!("{}/api/v1/silences/{id}", s.server.trim_end_matches('/'));
    let v = answer(
        client()
            .delete(&url)
            // Required on every state-changing call, body or not (see docs/api.md,
            // "Browser safety").
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .send()
            .await
            .with_context(|| format!("DELETE {url}"))?,
    )
    .await?;
    if s.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{} expired at {}", v["id"].as_str().unwrap_or(id), when(&v["ends_ms"]));
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(s: ServerArgs) -> Result<ExitCode> {
    let url = format!("{}/api/v1/notifications", s.server.trim_end_matches('/'));
    let v = answer(client().get(&url).send().await.with_context(|| format!("GET {url}"))?).await?;
    if s.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<13} {:>8} {:>10} {:>7} {:>9}  LAST ERROR",
        "SINK", "TYPE", "PENDING", "DELIVERED", "FAILED", "SILENCED"
    );
    for x in v["sinks"].as_array().into_iter().flatten() {
        println!(
            "{:<16} {:<13} {:>8} {:>10} {:>7} {:>9}  {}",
            x["name"].as_str().unwrap_or(""),
            x["type"].as_str().unwrap_or(""),
            x["pending"],
            x["delivered"],
            x["failed"],
            x["silenced"],
            x["last_error"].as_str().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}
