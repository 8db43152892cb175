//! `gpuwarden auth token create|list|revoke`: API tokens in `<data_dir>/auth/tokens.json`.
//!
//! The CLI changes the file directly (under its lock, atomically); a running server
//! re-reads it within about a second, so a new token works and a revoked one stops
//! working without a restart.

use crate::config::FileConfig;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use gpuwarden_model::{Clock, SystemClock};
use gpuwarden_server::auth::{file, token::NewToken, token::TokenRecord};
use gpuwarden_server::principal::Role;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// API tokens: create (printed once), list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
#[command(
    after_help = "Tokens are kept as SHA-256 hashes in DATA_DIR/auth/tokens.json; the secret is printed \
once, when it is created. A running gpuwarden picks up created and revoked tokens within a second.\n\n\
Examples:\n  gpuwarden auth token create --role admin --name alice\n  \
gpuwarden auth token create --role viewer --name grafana --expires 90d\n  \
gpuwarden auth token create --role viewer --tenant team-a --config gpuwarden.toml\n  \
gpuwarden auth token create --role scraper --name prometheus   # /metrics only\n  \
gpuwarden auth token list\n  gpuwarden auth token revoke tok-0123456789abcdef\n\n\
Use a token:  curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:9470/api/v1/gpus"
)]
pub enum TokenCommand {
    /// Create a token and print it (once: it is not stored, only its hash).
    Create(CreateArgs),
    /// List tokens: id, name, role, tenant, status, created, expiry, last use (never secrets).
    List(ListArgs),
    /// Revoke a token by id (`list` shows ids); effective on a running server within a second.
    Revoke(RevokeArgs),
}

/// Where the tokens are.
#[derive(Debug, Args)]
pub struct Location {
    /// Data directory of the gpuwarden the token is for (default: the config's
    /// `data_dir`, else ./gpuwarden-data).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The config file (`data_dir`, and `[auth.tenants]` to check --tenant against).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// scraper: reads /metrics only (for Prometheus); viewer: reads; operator: also
    /// ack/resolve incidents and silences; admin: also tokens and the audit trail.
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// What the token is for, e.g. "grafana" or "alice" (shown by `list`).
    #[arg(long, default_value = "")]
    pub name: String,
    /// Confine the token to a tenant of `[auth.tenants]` (its namespaces, Slurm accounts,
    /// nodes); such a token cannot read /metrics or other fleet-wide routes.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Lifetime, e.g. 30d, 12h (default: no expiry).
    #[arg(long)]
    pub expires: Option<humantime::Duration>,
    /// Print only the token (for scripts: `TOKEN=$(gpuwarden auth token create … --quiet)`).
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub at: Location,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// JSON, one array of tokens.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub at: Location,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The token's id, `tok-…`.
    pub id: String,
    #[command(flatten)]
    pub at: Location,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// The auth directory and the configured tenants (when a config file is given).
fn locate(at: &Location) -> Result<(PathBuf, Option<Vec<String>>)> {
    let file = match &at.config {
        Some(p) => Some(FileConfig::load(p)?),
        None => None,
    };
    let data_dir = at
        .data_dir
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.data_dir.clone()))
        .unwrap_or_else(|| PathBuf::from("./gpuwarden-data"));
    let tenants = file.map(|f| f.auth.tenants.keys().cloned().collect());
    Ok((file::auth_dir(&data_dir), tenants))
}

pub fn auth(cmd: AuthCommand) -> Result<ExitCode> {
    match cmd {
        AuthCommand::Token(TokenCommand::Create(a)) => create(a),
        AuthCommand::Token(TokenCommand::List(a)) => list(a),
        AuthCommand::Token(TokenCommand::Revoke(a)) => revoke(a),
    }
}

fn create(a: CreateArgs) -> Result<ExitCode> {
    let (dir, tenants) = locate(&a.at)?;
    if let Some(t) = &a.tenant {
        match &tenants {
            Some(known) if !known.contains(t) => bail!(
                "tenant {t:?} is not in [auth.tenants] of {} (configured: {known:?}); add \
                 [auth.tenants.{t}] with namespaces, slurm_accounts or nodes first",
                a.at.config
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
            Some(_) => {}
            None => eprintln!(
                "warning: tenant {t:?} not checked (give --config FILE); the server refuses tokens of tenants it \
                 does not configure"
            ),
        }
    }
    let spec = NewToken {
        name: a.name,
        role: a.role,
        tenant: a.tenant,
        expires_in: a.expires.map(Into::into),
    };
    let now = SystemClock.now_ms();
    let (secret, rec) =
        file::create(&dir, &spec, now).with_context(|| format!("creating a token in {}", dir.display()))?;
    if a.quiet {
        println!("{}", secret.expose());
    } else {
        println!("{}", secret.expose());
        eprintln!(
            "created token {} (role {}{}{}) in {}",
            rec.id,
            rec.role,
            rec.tenant
                .as_deref()
                .map(|t| format!(", tenant {t}"))
                .unwrap_or_default(),
            rec.expires_ms
                .map(|e| format!(", expires {}", when(e)))
                .unwrap_or_default(),
            file::tokens_path(&dir).display()
        );
        eprintln!("this is the only time the token is shown; send it as `Authorization: Bearer <token>`");
    }
    Ok(ExitCode::SUCCESS)
}

fn when(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

fn list(a: ListArgs) -> Result<ExitCode> {
    let (dir, _) = locate(&a.at)?;
    let f = file::load(&dir)?;
    let now = SystemClock.now_ms();
    if a.json {
        let items: Vec<_> = f
            .tokens
            .into_iter()
            .map(|r| gpuwarden_server::auth::api::TokenInfo::of(r, now))
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(ExitCode::SUCCESS);
    }
    if f.tokens.is_empty() {
        eprintln!(
            "no tokens in {}; create one with `gpuwarden auth token create --role admin`",
            file::tokens_path(&dir).display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<16} {:<8} {:<10} {:<8} {:<20} {:<20} {:<20}",
        "ID", "NAME", "ROLE", "TENANT", "STATUS", "CREATED", "EXPIRES", "LAST USED"
    );
    for r in &f.tokens {
        println!("{}", row(r, now));
    }
    Ok(ExitCode::SUCCESS)
}

fn row(r: &TokenRecord, now: i64) -> String {
    let status = format!("{:?}", r.status(now)).to_lowercase();
    format!(
        "{:<20} {:<16} {:<8} {:<10} {:<8} {:<20} {:<20} {:<20}",
        r.id,
        r.name,
        r.role.as_str(),
        r.tenant.as_deref().unwrap_or("-"),
        status,
        when(r.created_ms),
        r.expires_ms.map(when).unwrap_or_else(|| "never".into()),
        r.last_used_ms.map(when).unwrap_or_else(|| "never".into()),
    )
}

fn revoke(a: RevokeArgs) -> Result<ExitCode> {
    let (dir, _) = locate(&a.at)?;
    let rec = file::revoke(&dir, &a.id, SystemClock.now_ms())?;
    eprintln!(
        "revoked token {} ({}, role {}); a running server refuses it within a second",
        rec.id, rec.name, rec.role
    );
    Ok(ExitCode::SUCCESS)
}
