//! `gpuwarden audit`: check the audit trail's chain (`verify`) and read it (`show`) from
//! the data directory — no running server needed; and the helpers the other commands use
//! to open the trail (`run`, `serve`) and to record their own changes (CLI commands).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use gpuwarden_audit::{audit_dir, AuditLog, Entry, Outcome, Query};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check that no record of the trail was modified, removed, inserted or reordered.
    /// Exit code 0 when intact (and the head hash: keep it elsewhere to detect records cut
    /// off the end later), 1 naming each broken record, 2 when it cannot be read.
    Verify(VerifyArgs),
    /// Print the latest records of the trail, newest first.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Data directory (the trail is in its `audit/`).
    #[arg(long, default_value = "./gpuwarden-data")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Data directory (the trail is in its `audit/`).
    #[arg(long, default_value = "./gpuwarden-data")]
    pub data_dir: PathBuf,
    /// How many records.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: usize,
    /// Only this action, or a prefix ending in `.` or `*` (e.g. `silence.*`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only this actor (principal id).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this result: ok, denied, error.
    #[arg(long)]
    pub result: Option<String>,
    /// One JSON record per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn audit(cmd: AuditCommand) -> Result<ExitCode> {
    match cmd {
        AuditCommand::Verify(a) => verify(&a.data_dir),
        AuditCommand::Show(a) => show(a),
    }
}

fn existing_trail(data_dir: &Path) -> Result<PathBuf> {
    let dir = audit_dir(data_dir);
    if !dir.is_dir() {
        anyhow::bail!(
            "no audit trail in {} (no {} directory); give the data directory of a gpuwarden with --data-dir",
            data_dir.display(),
            dir.display()
        );
    }
    Ok(dir)
}

fn verify(data_dir: &Path) -> Result<ExitCode> {
    let dir = existing_trail(data_dir)?;
    let rep = gpuwarden_audit::verify(&dir).with_context(|| format!("reading the audit trail in {}", dir.display()))?;
    if rep.is_intact() {
        match (rep.first_seq, rep.last_seq, &rep.head) {
            (Some(first), Some(last), Some(head)) => println!(
                "audit trail intact: {} records ({first} to {last}) in {} file(s); head hash {head}",
                rep.records, rep.files
            ),
            _ => println!("audit trail intact: no records yet"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "audit trail BROKEN: {} problem(s) in {} records, {} file(s) under {}:",
        rep.problems.len(),
        rep.records,
        rep.files,
        dir.display()
    );
    for p in &rep.problems {
        println!("  - {p}");
    }
    Ok(ExitCode::from(1))
}

fn show(a: ShowArgs) -> Result<ExitCode> {
    let dir = existing_trail(&a.data_dir)?;
    let result = a
        .result
        .as_deref()
        .map(str::parse::<Outcome>)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--result: {e}"))?;
    let q = Query {
        actor: a.actor,
        action: a.action,
        result,
        limit: a.limit.max(1),
        ..Query::default()
    };
    let page =
        gpuwarden_audit::query(&dir, &q).with_context(|| format!("reading the audit trail in {}", dir.display()))?;
    for r in &page.records {
        if a.json {
            println!("{}", r.to_line());
            continue;
        }
        let when =
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(r.ts_ms.max(0) as u64));
        println!(
            "{:>6}  {when}  {:<16} {:<8} {:<22} {:<7} {:>3}  {:<21} {}{}{}",
            r.seq,
            r.actor,
            r.role,
            r.action,
            r.result.as_str(),
            r.status.map(|s| s.to_string()).unwrap_or_default(),
            r.client.as_deref().unwrap_or("-"),
            r.target.as_deref().unwrap_or("-"),
            r.detail.as_deref().map(|d| format!("  ({d})")).unwrap_or_default(),
            if r.count > 1 {
                format!("  ×{}", r.count)
            } else {
                String::new()
            }
        );
    }
    if page.records.is_empty() {
        println!("no audit records match");
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the trail of `run`/`serve` in `data_dir/audit` and starts its writer thread
/// (for denials and failed attempts). Stop the writer at shutdown to write what is
/// counted.
pub fn open_for_server(data_dir: &Path) -> Result<(Arc<AuditLog>, gpuwarden_audit::AuditWriter)> {
    let dir = audit_dir(data_dir);
    let log = Arc::new(AuditLog::open(&dir).with_context(|| format!("opening the audit trail in {}", dir.display()))?);
    let writer = log
        .spawn_writer()
        .with_context(|| format!("starting the audit writer for {}", dir.display()))?;
    Ok((log, writer))
}

/// An entry for a change made by a command run on this machine: actor `cli:$USER`, role
/// `local` (whoever can run it has the data directory), client `cli`. Add `.target(…)`
/// and `.detail(…)`, then [`record_cli`] it.
pub fn cli_entry(action: &str, result: Outcome) -> Entry {
    Entry::new(cli_actor(), action, result).role("local").client("cli")
}

/// The actor of a command run on this machine: `cli:$USER`.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

/// Records a change made by a CLI command in `data_dir`'s trail, durably, before the
/// command reports success. Safe while `run`/`serve` use the same data directory (the
/// trail is locked per append and the chain continues from whoever wrote last). Used by
/// commands that change state without going through the API, e.g.
/// `record_cli(&data_dir, cli_entry("token.create", Outcome::Ok).target(&id))?`.
pub fn record_cli(data_dir: &Path, entry: Entry) -> Result<()> {
    let dir = audit_dir(data_dir);
    AuditLog::open(&dir)
        .and_then(|log| log.append(entry))
        .with_context(|| format!("writing the audit record to {}", dir.display()))?;
    Ok(())
}

/// Forwards every audit record, once durable, to the sinks named in `[audit] forward`
/// (bypassing routes and silences; delivered through the outbox with its retries).
pub fn forward_to(log: &AuditLog, notifier: Arc<gpuwarden_notify::Notifier>, sinks: Vec<String>) {
    if sinks.is_empty() {
        return;
    }
    log.set_observer(Arc::new(move |r: &gpuwarden_audit::Record| {
        notifier.forward(notification(r), &sinks);
    }));
}

/// An audit record as the notification every sink formats: a `detected` security event
/// of rule `audit.<action>`, its fields as ECS-style labels (`user.name`,
/// `source.address`, `event.action`, `event.outcome`, …) and one delivery key per record
/// (`audit:<seq>#1`), so receivers can dedupe retries.
pub fn notification(r: &gpuwarden_audit::Record) -> gpuwarden_notify::Notification {
    use gpuwarden_model::{Action, FindingKind, Severity};
    use gpuwarden_notify::{Status, Transition};
    let mut labels = std::collections::BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            labels.insert(k.to_string(), v);
        }
    };
    put("user.name", Some(r.actor.clone()));
    put("user.roles", Some(r.role.clone()));
    put("gpuwarden.tenant", r.tenant.clone());
    put("source.address", r.client.clone());
    put("event.action", Some(r.action.clone()));
    put(
        "event.outcome",
        Some(
            match r.result {
                Outcome::Ok => "success",
                Outcome::Denied | Outcome::Error => "failure",
            }
            .into(),
        ),
    );
    put("http.response.status_code", r.status.map(|s| s.to_string()));
    put("audit.target", r.target.clone());
    put("audit.detail", r.detail.clone());
    put("audit.seq", Some(r.seq.to_string()));
    put("audit.count", Some(r.count.to_string()));
    put("audit.hash", Some(r.hash.clone()));
    put("audit.prev", Some(r.prev.clone()));
    let summary = format!(
        "audit: {} {}{} → {}{}{}",
        r.actor,
        r.action,
        r.target.as_deref().map(|t| format!(" {t}")).unwrap_or_default(),
        r.result.as_str(),
        r.status.map(|s| format!(" ({s})")).unwrap_or_default(),
        r.client.as_deref().map(|c| format!(" from {c}")).unwrap_or_default(),
    );
    let incident = format!("audit:{}", r.seq);
    gpuwarden_notify::Notification {
        schema: gpuwarden_notify::message::SCHEMA_VERSION,
        delivery_key: format!("{incident}#1"),
        incident,
        seq: 1,
        transition: Transition::Detected,
        transitions: vec![Transition::Detected],
        status: Status::Firing,
        kind: FindingKind::Security,
        severity: if r.result == Outcome::Ok {
            Severity::Info
        } else {
            Severity::Warning
        },
        rule: format!("audit.{}", r.action),
        node: "gpuwarden".into(),
        gpu: None,
        namespace: None,
        summary,
        action: Action::None,
        action_text: Action::None.describe().to_string(),
        started_ms: r.ts_ms,
        ts_ms: r.ts_ms,
        ended_ms: None,
        acknowledged_by: None,
        labels,
        url: None,
    }
}
