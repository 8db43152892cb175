//! The configuration file (TOML) and its validation.
//!
//! Raw TOML is read into [`FileConfig`] (every field optional, unknown keys rejected so a
//! typo is an error, not a silently ignored setting), merged with the command line, and
//! validated once into [`RunConfig`]; only the validated config builds components.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The TOML file as written by the user.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address of the API, UI and /metrics (default 127.0.0.1:9470).
    pub listen: Option<SocketAddr>,
    /// Data directory (default ./gpuwarden-data).
    pub data_dir: Option<PathBuf>,
    /// Host names the API/UI answers to besides the loopback names and the listen
    /// address (the `Host` check against DNS rebinding; see docs/api.md).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub scrape: ScrapeSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub simulator: SimulatorSection,
    /// Overrides of the health rule thresholds (see `crates/detect/rules/health.toml`).
    #[serde(default)]
    pub health: toml::Table,
    /// Incident lifecycle settings (auto-resolution, flap window, …).
    #[serde(default)]
    pub incidents: Option<gpuwarden_incident::IncidentConfig>,
    /// Security detections: approved namespaces/accounts, business hours, allowlist,
    /// driver floor, golden baseline, rule overrides (see docs/detections/).
    #[serde(default)]
    pub security: gpuwarden_security::SecurityConfig,
    /// Notifications: sinks, routes, delivery settings (see docs/notifications.md).
    #[serde(default)]
    pub notify: gpuwarden_notify::NotifyConfig,
    /// Failure prediction: scoring period, threshold, reasons per GPU (see
    /// docs/simulator.md, "Failure model"). `GPUWARDEN_PREDICT_*` variables override it.
    #[serde(default)]
    pub predict: gpuwarden_predict::PredictConfig,
    /// TLS of the API/UI listener (and of `serve`'s ingest listener unless `[ingest.tls]`
    /// is given).
    pub tls: Option<TlsSection>,
    /// `serve`'s ingest listener: `[ingest.tls]`.
    #[serde(default)]
    pub ingest: IngestSection,
    /// The API/UI listener: `[api.rate_limit]`.
    #[serde(default)]
    pub api: ApiSection,
    /// The audit trail (always kept in `data_dir/audit`): where else to send it.
    #[serde(default)]
    pub audit: AuditSection,
    /// Authentication and tenants (see docs/api.md, "Authentication").
    #[serde(default)]
    pub auth: AuthSection,
}

/// `[tls]` / `[ingest.tls]`: PEM files, re-read when they change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Certificate chain (leaf first).
    pub cert: Option<PathBuf>,
    /// Private key of the leaf.
    pub key: Option<PathBuf>,
    /// CA of the client certificates to require (mutual TLS); on the ingest listener an
    /// agent's certificate binds it to its node (common name or DNS name).
    pub client_ca: Option<PathBuf>,
    /// How often the files' modification times are checked (default "5s"; SIGHUP also
    /// reloads).
    pub reload_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    pub tls: Option<TlsSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    #[serde(default)]
    pub rate_limit: RateLimitSection,
}

/// `[api.rate_limit]`: token buckets per client address and per principal.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// false turns both limits off (default true).
    pub enabled: Option<bool>,
    /// Requests per second per client address (IPv6: per /64). Default 20.
    pub client_rate: Option<f64>,
    /// Requests at once per client address after a pause. Default 200.
    pub client_burst: Option<u32>,
    /// Requests per second per authenticated principal. Default 50.
    pub principal_rate: Option<f64>,
    /// Requests at once per principal. Default 500.
    pub principal_burst: Option<u32>,
    /// Loopback clients skip the per-address limit. Default true.
    pub exempt_loopback: Option<bool>,
    /// Most buckets kept per kind. Default 100000.
    pub max_tracked: Option<usize>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Names of `[notify.sinks.NAME]` that receive every audit record (e.g. a syslog/CEF,
    /// Splunk, Elastic or webhook sink of the SIEM), regardless of routes and silences.
    #[serde(default)]
    pub forward: Vec<String>,
}

/// `[auth]`: API tokens and roles on the API/UI listener.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// Every request needs a token (or a UI session). Default false: loopback only,
    /// everyone is an admin. `--auth` on `run`/`serve` turns it on too.
    #[serde(default)]
    pub enabled: bool,
    /// Lifetime of a web UI session, e.g. "12h" (default; it ends earlier with its token).
    pub session_ttl: Option<String>,
    /// Tenants: `[auth.tenants.NAME]` with `namespaces`, `slurm_accounts`, `nodes`.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, gpuwarden_server::scope::TenantDef>,
    /// OpenID Connect (JWT bearer tokens, UI sign-in through the provider). Its presence
    /// turns authentication on.
    pub oidc: Option<OidcSection>,
}

/// One string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `[auth.oidc]` (see docs/api.md, "OpenID Connect").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The provider's issuer URL, exactly as in its tokens' `iss`.
    pub issuer: String,
    /// Accepted `aud` of API access tokens (a string or a list).
    pub audience: Option<OneOrMany>,
    /// Shown as "Sign in with NAME" (default "OpenID Connect").
    pub name: Option<String>,
    /// The web UI's client id at the provider (absent: bearer tokens only).
    pub client_id: Option<String>,
    /// The client secret inline (prefer `client_secret_file` or `client_secret_env`).
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    /// The callback URL registered at the provider; default `public_url` +
    /// `/auth/oidc/callback`.
    pub redirect_url: Option<String>,
    /// The URL browsers use to reach gpuwarden, e.g. "https://gpuwarden.example.com".
    pub public_url: Option<String>,
    /// Default ["openid", "profile", "email"].
    pub scopes: Option<Vec<String>>,
    /// Accepted signature algorithms; default ["RS256", "ES256"]. Never HS* or none.
    pub algorithms: Option<Vec<String>>,
    /// JWKS URL; default: the discovery document's `jwks_uri`.
    pub jwks_url: Option<String>,
    /// The claim holding groups/roles (default "groups"; dotted paths reach nested claims).
    pub role_claim: Option<String>,
    /// The claim naming a configured tenant (absent: nobody is confined by claim).
    pub tenant_claim: Option<String>,
    /// Claim values granting each role: `viewer`, `operator`, `admin`.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, Vec<String>>,
    /// Keys older than this are fetched again (default "1h").
    pub jwks_refresh_interval: Option<String>,
    /// At most one key fetch per this, whatever tokens arrive (default "30s").
    pub jwks_min_refresh: Option<String>,
    /// Clock skew allowed on `exp`/`nbf` (default "60s", at most "5m").
    pub leeway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeSection {
    /// Time between scrapes of a target, e.g. "5s".
    pub interval: Option<String>,
    /// Per-scrape timeout, e.g. "4s" (default: 80% of the interval, at most 10 s).
    pub timeout: Option<String>,
    /// Largest accepted exporter page in bytes (default 64 MiB).
    pub max_body_bytes: Option<usize>,
    /// Exporter URLs or host:port (then http://HOST:PORT/metrics).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Prometheus file_sd JSON files, re-read when they change.
    #[serde(default)]
    pub target_files: Vec<PathBuf>,
    /// Refuse samples stamped further ahead of this server's clock (default "5m").
    pub max_clock_ahead: Option<String>,
    /// Refuse samples older than this (default "24h").
    pub max_sample_age: Option<String>,
    /// GPUs (and MIG slices) one target or pushing node may hold (default 256).
    pub max_gpus_per_target: Option<usize>,
    /// GPUs one page may add to its target (default 128).
    pub max_new_gpus_per_page: Option<usize>,
    /// Distinct field names one GPU may have (default 512).
    pub max_series_per_gpu: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Drop data older than this, e.g. "7d" (default 7 days).
    pub retention: Option<String>,
    /// `postgres://USER@HOST:PORT/DATABASE`: store in PostgreSQL instead of the embedded
    /// store in `data_dir/store` (see docs/scaling.md). No password here.
    pub url: Option<String>,
    /// File holding the database password (first line). Else the environment variable
    /// `GPUWARDEN_STORE_PASSWORD`, else none (trust or peer authentication).
    pub password_file: Option<PathBuf>,
    /// Width of one time partition of the PostgreSQL sample tables, e.g. "1d" (default)
    /// or "7d". Fixed when the schema is created.
    pub partition: Option<String>,
    /// PostgreSQL connections per gpuwarden process (default 8).
    pub pool_size: Option<usize>,
    /// Use TimescaleDB when the database has it (default true).
    pub timescaledb: Option<bool>,
}

/// The environment variable read for the database password when no
/// `[store] password_file` is given.
pub const STORE_PASSWORD_ENV: &str = "GPUWARDEN_STORE_PASSWORD";

/// The store to open: `[store] url` selects PostgreSQL; otherwise the embedded store in
/// `data_dir/store`. The password is read here (file or environment) and never logged.
pub fn store_config(s: &StoreSection, data_dir: &Path) -> Result<gpuwarden_store::StoreConfig> {
    let Some(url) = s.url.clone() else {
        for (set, name) in [
            (s.password_file.is_some(), "password_file"),
            (s.partition.is_some(), "partition"),
            (s.pool_size.is_some(), "pool_size"),
            (s.timescaledb.is_some(), "timescaledb"),
        ] {
            if set {
                bail!("[store] {name} is set but [store] url is not: {name} applies only to the PostgreSQL store; add url = \"postgres://…\" or remove {name}");
            }
        }
        return Ok(gpuwarden_store::StoreConfig::Embedded {
            dir: data_dir.join("store"),
            options: gpuwarden_store::embedded::EmbeddedOptions::default(),
        });
    };
    let password = match &s.password_file {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading [store] password_file {}", f.display()))?;
            let line = text.lines().next().unwrap_or("").to_string();
            if line.is_empty() {
                bail!(
                    "[store] password_file {} is empty; write the password on its first line",
                    f.display()
                );
            }
            Some(line)
        }
        None => std::env::var(STORE_PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
    };
    let mut options = gpuwarden_store::postgres::PostgresOptions {
        url,
        password,
        ..Default::default()
    };
    if let Some(p) = s.partition.as_deref() {
        options.partition_ms = millis("store.partition", p)?;
        if options.partition_ms < 3_600_000 {
            bail!("store.partition = \"{p}\" is shorter than an hour: that many partitions slow every query; use \"1d\" or \"7d\"");
        }
    }
    if let Some(n) = s.pool_size {
        if n == 0 {
            bail!("store.pool_size must be at least 1");
        }
        options.pool_size = n;
    }
    if let Some(t) = s.timescaledb {
        options.timescaledb = t;
    }
    Ok(gpuwarden_store::StoreConfig::Postgres(options))
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorSection {
    pub nodes: Option<usize>,
    pub gpus_per_node: Option<usize>,
    pub seed: Option<u64>,
    pub speed: Option<f64>,
    pub fault_rate_multiplier: Option<f64>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {} is not valid", path.display()))
    }
}

/// Validated settings of `gpuwarden run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Which store to open (`[store] url`: PostgreSQL; default the embedded store).
    pub store: gpuwarden_store::StoreConfig,
    /// `allowed_hosts`, checked and normalized (lower case, IPv6 in brackets).
    pub allowed_hosts: Vec<String>,
    pub scrape_interval: Duration,
    pub scrape_timeout: Duration,
    pub max_body_bytes: usize,
    pub targets: Vec<String>,
    pub target_files: Vec<PathBuf>,
    pub retention: Duration,
    /// Admission bounds of every page (time, identities, series).
    pub ingest_limits: gpuwarden_pipeline::IngestLimits,
    pub simulator: SimulatorSection,
    pub health_rules: gpuwarden_detect::HealthRules,
    pub incidents: gpuwarden_incident::IncidentConfig,
    /// `[security]`, checked (rule overrides, hours, patterns, driver floor).
    pub security: gpuwarden_security::SecurityConfig,
    /// `[notify]`, checked (routes name configured sinks, durations parse).
    pub notify: gpuwarden_notify::NotifyConfig,
    /// `[predict]` with the `GPUWARDEN_PREDICT_*` overrides applied.
    pub predict: gpuwarden_predict::PredictConfig,
    /// TLS of the API/UI listener; `None`: plain HTTP.
    pub tls: Option<gpuwarden_server::tls::TlsFiles>,
    /// TLS of `serve`'s ingest listener (`[ingest.tls]`, else `[tls]`).
    pub ingest_tls: Option<gpuwarden_server::tls::TlsFiles>,
    /// How often certificate files are checked for changes.
    pub tls_reload_interval: Duration,
    /// `[api.rate_limit]`; `None`: off.
    pub rate_limit: Option<gpuwarden_server::rate_limit::RateLimitConfig>,
    /// `[audit] forward`: configured sink names.
    pub audit_forward: Vec<String>,
    /// `[auth]` when `enabled`, checked; `None`: no authentication (loopback only).
    pub auth: Option<gpuwarden_server::auth::AuthSettings>,
}

impl RunConfig {
    /// True when no real target is configured: `run` then starts the simulator.
    pub fn simulated(&self) -> bool {
        self.targets.is_empty() && self.target_files.is_empty()
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9470";

fn duration(field: &str, s: &str) -> Result<Duration> {
    humantime::parse_duration(s)
        .with_context(|| format!("{field} = \"{s}\" is not a duration (examples: \"5s\", \"1m\", \"7d\")"))
}

fn millis(field: &str, s: &str) -> Result<i64> {
    let d = duration(field, s)?;
    i64::try_from(d.as_millis()).with_context(|| format!("{field} = \"{s}\" is too long"))
}

/// The `[scrape]` admission bounds, checked (each limit at least 1).
fn ingest_limits(s: &ScrapeSection) -> Result<gpuwarden_pipeline::IngestLimits> {
    let mut l = gpuwarden_pipeline::IngestLimits::default();
    if let Some(v) = s.max_clock_ahead.as_deref() {
        l.max_clock_ahead_ms = millis("scrape.max_clock_ahead", v)?;
    }
    if let Some(v) = s.max_sample_age.as_deref() {
        l.max_sample_age_ms = millis("scrape.max_sample_age", v)?;
    }
    for (name, value, slot) in [
        ("max_gpus_per_target", s.max_gpus_per_target, &mut l.max_gpus_per_target),
        (
            "max_new_gpus_per_page",
            s.max_new_gpus_per_page,
            &mut l.max_new_gpus_per_page,
        ),
        ("max_series_per_gpu", s.max_series_per_gpu, &mut l.max_series_per_gpu),
    ] {
        if let Some(v) = value {
            if v == 0 {
                bail!("scrape.{name} = 0 would refuse every GPU; use at least 1");
            }
            *slot = v;
        }
    }
    Ok(l)
}

/// A `[tls]` section checked: cert and key together, or neither (`None`).
pub fn tls_files(section: &str, t: &TlsSection) -> Result<Option<gpuwarden_server::tls::TlsFiles>> {
    match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => Ok(Some(gpuwarden_server::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: t.client_ca.clone(),
        })),
        (None, None) if t.client_ca.is_none() => Ok(None),
        (None, None) => {
            bail!("{section}: client_ca needs cert and key too (client certificates are checked only over TLS)")
        }
        (Some(_), None) => bail!("{section}: cert is set but key is not; give both (PEM files)"),
        (None, Some(_)) => bail!("{section}: key is set but cert is not; give both (PEM files)"),
    }
}

/// `[api.rate_limit]` checked; `None` when disabled.
fn rate_limit(s: &RateLimitSection) -> Result<Option<gpuwarden_server::rate_limit::RateLimitConfig>> {
    use gpuwarden_server::rate_limit::{Limit, RateLimitConfig};
    if s.enabled == Some(false) {
        return Ok(None);
    }
    let d = RateLimitConfig::default();
    let limit = |name: &str, rate: Option<f64>, burst: Option<u32>, default: Limit| -> Result<Limit> {
        let l = Limit {
            rate: rate.unwrap_or(default.rate),
            burst: burst.unwrap_or(default.burst),
        };
        if !(l.rate.is_finite() && l.rate > 0.0) {
            bail!("api.rate_limit.{name}_rate = {} must be a positive number of requests per second (or set enabled = false)", l.rate);
        }
        if l.burst == 0 {
            bail!("api.rate_limit.{name}_burst = 0 would refuse every request; use at least 1");
        }
        Ok(l)
    };
    let max_tracked = s.max_tracked.unwrap_or(d.max_tracked);
    if max_tracked < 2 {
        bail!("api.rate_limit.max_tracked = {max_tracked} is too small; use at least 1000");
    }
    Ok(Some(RateLimitConfig {
        client: limit("client", s.client_rate, s.client_burst, d.client)?,
        principal: limit("principal", s.principal_rate, s.principal_burst, d.principal)?,
        exempt_loopback: s.exempt_loopback.unwrap_or(d.exempt_loopback),
        max_tracked,
    }))
}

/// Merges the file with the command line (the command line wins) and validates.
pub fn build(
    file: FileConfig,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    interval: Option<Duration>,
) -> Result<RunConfig> {
    let listen = listen
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default listen address is valid"));
    let data_dir = data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from("./gpuwarden-data"));
    let auth = auth_settings(&file.auth)?;
    if !listen.ip().is_loopback() && auth.is_none() {
        bail!("{}", refusal(listen, &data_dir, "authentication is off"));
    }
    let allowed_hosts = file
        .allowed_hosts
        .iter()
        .map(|h| gpuwarden_server::request_guard::normalize_name(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("allowed_hosts: {e}"))?;
    let interval = match (interval, file.scrape.interval.as_deref()) {
        (Some(d), _) => d,
        (None, Some(s)) => duration("scrape.interval", s)?,
        (None, None) => Duration::from_secs(5),
    };
    if interval < Duration::from_millis(100) {
        bail!("scrape interval {interval:?} is too short; use at least 100ms");
    }
    let timeout = match file.scrape.timeout.as_deref() {
        Some(s) => duration("scrape.timeout", s)?,
        None => (interval.mul_f64(0.8)).min(Duration::from_secs(10)),
    };
    let ingest_limits = ingest_limits(&file.scrape)?;
    let tls = match &file.tls {
        Some(t) => tls_files("[tls]", t)?,
        None => None,
    };
    let ingest_tls = match &file.ingest.tls {
        Some(t) => tls_files("[ingest.tls]", t)?,
        None => tls.clone(),
    };
    let tls_reload_interval = match file
        .ingest
        .tls
        .as_ref()
        .and_then(|t| t.reload_interval.as_deref())
        .or(file.tls.as_ref().and_then(|t| t.reload_interval.as_deref()))
    {
        Some(s) => duration("tls.reload_interval", s)?,
        None => gpuwarden_server::tls::DEFAULT_RELOAD_INTERVAL,
    };
    let rate_limit = rate_limit(&file.api.rate_limit)?;
    let store = store_config(&file.store, &data_dir)?;
    let retention = match file.store.retention.as_deref() {
        Some(s) => duration("store.retention", s)?,
        None => Duration::from_secs(7 * 24 * 3600),
    };
    for name in &file.audit.forward {
        if !file.notify.sinks.contains_key(name) {
            let known: Vec<&str> = file.notify.sinks.keys().map(String::as_str).collect();
            bail!(
                "[audit] forward names the sink {name:?}, which is not configured (configured: {}); \
                 add a [notify.sinks.{name}] section or remove it",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    Ok(RunConfig {
        listen,
        allowed_hosts,
        store,
        data_dir,
        scrape_interval: interval,
        scrape_timeout: timeout,
        max_body_bytes: file.scrape.max_body_bytes.unwrap_or(64 * 1024 * 1024),
        targets: file.scrape.targets,
        target_files: file.scrape.target_files,
        retention,
        ingest_limits,
        simulator: file.simulator,
        health_rules: gpuwarden_detect::HealthRules::with_overrides(file.health)
            .context("the [health] section of the config overrides an unknown or invalid rule setting")?,
        incidents: file.incidents.unwrap_or_default(),
        security: {
            gpuwarden_security::SecurityEngine::from_config(&file.security)
                .context("the [security] section of the config is not valid")?;
            file.security
        },
        notify: {
            file.notify
                .settings()
                .context("the [notify] section of the config is not valid")?;
            file.notify
        },
        predict: file.predict.with_env_overrides(),
        tls,
        ingest_tls,
        tls_reload_interval,
        rate_limit,
        audit_forward: file.audit.forward,
        auth,
    })
}

/// `[auth]` checked: tenants restrict something, the session lifetime parses. `None`
/// when authentication is off.
fn auth_settings(s: &AuthSection) -> Result<Option<gpuwarden_server::auth::AuthSettings>> {
    gpuwarden_server::auth::validate_tenants(&s.tenants).map_err(|e| anyhow::anyhow!("[auth]: {e}"))?;
    let mut out = gpuwarden_server::auth::AuthSettings {
        tenants: s.tenants.clone(),
        ..Default::default()
    };
    if let Some(v) = s.session_ttl.as_deref() {
        out.session_ttl = duration("auth.session_ttl", v)?;
        if out.session_ttl < Duration::from_secs(60) {
            bail!("auth.session_ttl = \"{v}\" is too short; use at least 1m");
        }
    }
    out.oidc = match &s.oidc {
        Some(o) => Some(oidc_settings(o)?),
        None => None,
    };
    // An OpenID provider is authentication configured: it turns [auth] on.
    Ok((s.enabled || out.oidc.is_some()).then_some(out))
}

/// `[auth.oidc]` checked, its client secret read (from the file, the variable or inline).
fn oidc_settings(o: &OidcSection) -> Result<gpuwarden_server::auth::oidc::OidcSettings> {
    use gpuwarden_server::auth::oidc::{verifier::parse_algorithm, OidcSettings, Secret};
    // The issuer must match the tokens' `iss` exactly: kept as written.
    let mut out = OidcSettings::new(
        o.issuer.clone(),
        o.audience.clone().map(OneOrMany::into_vec).unwrap_or_default(),
    );
    if let Some(n) = &o.name {
        out.display_name = n.clone();
    }
    out.client_id = o.client_id.clone();
    out.client_secret = match (&o.client_secret, &o.client_secret_file, &o.client_secret_env) {
        (None, None, None) => None,
        (Some(s), None, None) => {
            tracing::warn!("[auth.oidc] client_secret is written in the config file; prefer client_secret_file or client_secret_env");
            Some(Secret(s.clone()))
        }
        (None, Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading [auth.oidc] client_secret_file {}", path.display()))?;
            let t = text.trim();
            if t.is_empty() {
                bail!("[auth.oidc] client_secret_file {} is empty", path.display());
            }
            Some(Secret(t.to_string()))
        }
        (None, None, Some(var)) => Some(Secret(std::env::var(var).map_err(|_| {
            anyhow::anyhow!("[auth.oidc] client_secret_env names {var}, which is not set (or not UTF-8)")
        })?)),
        _ => bail!("[auth.oidc]: set only one of client_secret, client_secret_file, client_secret_env"),
    };
    out.redirect_url = match (&o.redirect_url, &o.public_url) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(base)) => Some(format!(
            "{}{}",
            base.trim_end_matches('/'),
            gpuwarden_server::auth::oidc::login::CALLBACK_PATH
        )),
        (None, None) => None,
    };
    if let Some(sc) = &o.scopes {
        out.scopes = sc.clone();
    }
    if let Some(algs) = &o.algorithms {
        out.algorithms = algs
            .iter()
            .map(|a| parse_algorithm(a))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("[auth.oidc] algorithms: {e}"))?;
    }
    out.jwks_url = o.jwks_url.clone();
    if let Some(c) = &o.role_claim {
        out.mapping.role_claim = c.clone();
    }
    out.mapping.tenant_claim = o.tenant_claim.clone();
    for (role, values) in &o.roles {
        let r: gpuwarden_server::principal::Role =
            role.parse().map_err(|e| anyhow::anyhow!("[auth.oidc.roles] {e}"))?;
        out.mapping.roles.insert(r, values.clone());
    }
    if let Some(v) = &o.jwks_refresh_interval {
        out.jwks_refresh_interval = duration("auth.oidc.jwks_refresh_interval", v)?;
    }
    if let Some(v) = &o.jwks_min_refresh {
        out.jwks_min_refresh = duration("auth.oidc.jwks_min_refresh", v)?;
        if out.jwks_min_refresh < Duration::from_secs(1) {
            bail!("auth.oidc.jwks_min_refresh = \"{v}\" is too short: use at least 1s, so tokens with made-up key ids cannot make gpuwarden hammer the provider");
        }
    }
    if let Some(v) = &o.leeway {
        out.leeway = duration("auth.oidc.leeway", v)?;
        if out.leeway > Duration::from_secs(300) {
            bail!("auth.oidc.leeway = \"{v}\" is too long: at most 5m (fix the clocks instead)");
        }
    }
    out.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(out)
}

/// Why `run`/`serve` will not listen on `listen`, and exactly how to make it.
pub fn refusal(listen: SocketAddr, data_dir: &Path, why: &str) -> String {
    format!(
        "refusing to listen on {listen}: {why}, and anyone who can reach that address could read the fleet and \
         silence its incidents. Only loopback (127.0.0.1, ::1) is served without authentication.\n\
         To serve the network, turn authentication on:\n  \
         1. create an admin token (printed once; keep it):\n       \
         gpuwarden auth token create --role admin --name me --data-dir {dir}\n  \
         2. enable [auth] in the config file:\n       \
         [auth]\n       \
         enabled = true\n     \
         (or add --auth to the command line)\n\
         Or sign in through an OpenID Connect provider: an [auth.oidc] section (see docs/api.md, \"OpenID Connect\").\n\
         Or listen on loopback: --listen 127.0.0.1:{port}",
        dir = data_dir.display(),
        port = listen.port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_simulated_five_seconds() {
        let c = build(FileConfig::default(), None, None, None).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert!(c.simulated());
        assert_eq!(c.scrape_interval, Duration::from_secs(5));
        assert_eq!(c.data_dir, PathBuf::from("./gpuwarden-data"));
    }

    #[test]
    fn non_loopback_listen_is_refused_without_auth() {
        let err = build(FileConfig::default(), Some("0.0.0.0:9470".parse().unwrap()), None, None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("refusing to listen"), "{err}");
        assert!(text.contains("gpuwarden auth token create --role admin"), "{err}");
        assert!(text.contains("enabled = true"), "{err}");
        // With [auth] on, the config allows it (the tokens are checked at start).
        let file: FileConfig = toml::from_str("[auth]\nenabled = true\n").unwrap();
        let c = build(file, Some("0.0.0.0:9470".parse().unwrap()), None, None).unwrap();
        assert!(c.auth.is_some());
    }

    #[test]
    fn auth_section_is_checked() {
        let c = build(FileConfig::default(), None, None, None).unwrap();
        assert!(c.auth.is_none(), "off by default");
        let file: FileConfig = toml::from_str(
            "[auth]\nenabled = true\nsession_ttl = \"2h\"\n[auth.tenants.team-a]\nnamespaces = [\"team-a\"]\n",
        )
        .unwrap();
        let a = build(file, None, None, None).unwrap().auth.unwrap();
        assert_eq!(a.session_ttl, Duration::from_secs(7200));
        assert_eq!(a.tenants["team-a"].namespaces, ["team-a"]);
        let file: FileConfig = toml::from_str("[auth.tenants.empty]\n").unwrap();
        let err = build(file, None, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("auth.tenants.empty"), "{err:#}");
        assert!(
            toml::from_str::<FileConfig>("[auth]\nenable = true\n").is_err(),
            "typos are errors"
        );
    }

    const OIDC: &str = "[auth.oidc]\nissuer = \"https://idp.example.com/realms/gpu\"\naudience = \"gpuwarden\"\n\
        client_id = \"gw-ui\"\npublic_url = \"https://gw.example.com/\"\nrole_claim = \"groups\"\n\
        tenant_claim = \"tenant\"\n[auth.oidc.roles]\nviewer = [\"gpu-viewers\"]\nadmin = [\"gpu-admins\"]\n";

    #[test]
    fn oidc_alone_is_authentication_on_any_address() {
        let file: FileConfig = toml::from_str(OIDC).unwrap();
        let c = build(file, Some("0.0.0.0:9470".parse().unwrap()), None, None).expect("OIDC counts as auth");
        let o = c.auth.unwrap().oidc.unwrap();
        assert_eq!(o.issuer, "https://idp.example.com/realms/gpu");
        assert_eq!(o.audiences, vec!["gpuwarden"]);
        assert_eq!(
            o.redirect_url.as_deref(),
            Some("https://gw.example.com/auth/oidc/callback")
        );
        assert_eq!(o.mapping.roles.len(), 2);
        assert_eq!(o.mapping.tenant_claim.as_deref(), Some("tenant"));
        assert!(o.client_secret.is_none());
    }

    #[test]
    fn oidc_section_is_checked() {
        let bad = |extra: &str, want: &str| {
            let text = format!("{OIDC}{extra}");
            let err = match toml::from_str::<FileConfig>(&text) {
                Err(e) => e.to_string(),
                Ok(file) => match build(file, None, None, None) {
                    Ok(_) => panic!("{extra:?} accepted"),
                    Err(e) => format!("{e:#}"),
                },
            };
            assert!(err.contains(want), "{extra:?}: {err}");
        };
        bad("superuser = [\"x\"]\n", "unknown role");
        bad("[auth.oidc.x]\n", "");
        let with = |k: &str| OIDC.replace("role_claim = \"groups\"\n", &format!("role_claim = \"groups\"\n{k}\n"));
        for (line, want) in [
            ("algorithms = [\"HS256\"]", "shared-secret"),
            ("algorithms = [\"none\"]", "unknown JWT algorithm"),
            ("jwks_min_refresh = \"10ms\"", "hammer"),
            ("leeway = \"1h\"", "at most 5m"),
            ("client_secret_env = \"GPUWARDEN_TEST_SURELY_UNSET_VAR\"", "not set"),
            ("client_secret = \"a\"\nclient_secret_env = \"B\"", "only one"),
            ("jwks_url = \"http://keys.example.com/jwks\"", "https"),
        ] {
            let file: FileConfig = toml::from_str(&with(line)).unwrap_or_else(|e| panic!("{line}: {e}"));
            let Err(err) = build(file, None, None, None) else {
                panic!("{line} accepted")
            };
            let err = format!("{err:#}");
            assert!(err.contains(want), "{line}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "s3cr3t\n").unwrap();
        let file: FileConfig =
            toml::from_str(&with(&format!("client_secret_file = {:?}", f.display().to_string()))).unwrap();
        let o = build(file, None, None, None).unwrap().auth.unwrap().oidc.unwrap();
        assert_eq!(o.client_secret.as_ref().map(|s| s.0.as_str()), Some("s3cr3t"));
        assert!(!format!("{o:?}").contains("s3cr3t"));
    }

    #[test]
    fn tls_sections_need_cert_and_key_and_ingest_inherits_tls() {
        let c = build(FileConfig::default(), None, None, None).unwrap();
        assert!(c.tls.is_none() && c.ingest_tls.is_none());
        assert!(c.rate_limit.is_some(), "rate limits are on by default");

        let file: FileConfig = toml::from_str("[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n").unwrap();
        let c = build(file, None, None, None).unwrap();
        assert_eq!(c.tls.as_ref().unwrap().cert, PathBuf::from("c.pem"));
        assert_eq!(
            c.ingest_tls, c.tls,
            "the ingest listener shares [tls] without [ingest.tls]"
        );

        let file: FileConfig = toml::from_str(
            "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n[ingest.tls]\ncert = \"i.pem\"\nkey = \"ik.pem\"\nclient_ca = \"ca.pem\"\nreload_interval = \"2s\"\n",
        )
        .unwrap();
        let c = build(file, None, None, None).unwrap();
        let i = c.ingest_tls.unwrap();
        assert_eq!(
            (i.cert, i.client_ca),
            (PathBuf::from("i.pem"), Some(PathBuf::from("ca.pem")))
        );
        assert_eq!(c.tls_reload_interval, Duration::from_secs(2));

        for bad in [
            "[tls]\ncert = \"c.pem\"\n",
            "[tls]\nkey = \"k.pem\"\n",
            "[ingest.tls]\nclient_ca = \"ca.pem\"\n",
        ] {
            let file: FileConfig = toml::from_str(bad).unwrap();
            let err = build(file, None, None, None).unwrap_err().to_string();
            assert!(err.contains("tls"), "{bad}: {err}");
        }
    }

    #[test]
    fn rate_limit_section_is_validated() {
        let file: FileConfig =
            toml::from_str("[api.rate_limit]\nclient_rate = 5.0\nclient_burst = 10\nexempt_loopback = false\n")
                .unwrap();
        let r = build(file, None, None, None).unwrap().rate_limit.unwrap();
        assert_eq!((r.client.rate, r.client.burst, r.exempt_loopback), (5.0, 10, false));
        assert_eq!(
            r.principal,
            gpuwarden_server::rate_limit::RateLimitConfig::default().principal
        );
        let file: FileConfig = toml::from_str("[api.rate_limit]\nenabled = false\n").unwrap();
        assert!(build(file, None, None, None).unwrap().rate_limit.is_none());
        for bad in ["client_rate = 0.0", "principal_burst = 0", "client_rate = -1.0"] {
            let file: FileConfig = toml::from_str(&format!("[api.rate_limit]\n{bad}\n")).unwrap();
            assert!(build(file, None, None, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<FileConfig>("[scrape]\nintreval = \"5s\"\n").unwrap_err();
        assert!(err.to_string().contains("intreval"), "{err}");
    }

    #[test]
    fn real_targets_disable_the_simulator() {
        let file: FileConfig = toml::from_str("[scrape]\ntargets = [\"gpu1:9400\"]\ninterval = \"10s\"\n").unwrap();
        let c = build(file, None, None, None).unwrap();
        assert!(!c.simulated());
        assert_eq!(c.scrape_interval, Duration::from_secs(10));
        assert_eq!(c.scrape_timeout, Duration::from_secs(8));
    }

    #[test]
    fn readme_example_config_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("a toml block in the README") + 8;
        let end = start + readme[start..].find("```").unwrap();
        let file: FileConfig = toml::from_str(&readme[start..end]).expect("README config parses");
        let c = build(file, None, None, None).expect("README config validates");
        assert_eq!(c.targets.len(), 2);
        assert_eq!(c.allowed_hosts, ["gpuwarden.example.com"]);
        assert!(c.tls.is_some() && c.ingest_tls.as_ref().unwrap().client_ca.is_some());
        assert_eq!(
            c.rate_limit,
            Some(gpuwarden_server::rate_limit::RateLimitConfig::default()),
            "the README shows the defaults"
        );
    }

    #[test]
    fn health_overrides_are_validated() {
        let file: FileConfig = toml::from_str("[health]\nno_such_rule = 1\n").unwrap();
        let err = build(file, None, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("no_such_rule"), "{err:#}");
    }

    #[test]
    fn security_section_is_validated() {
        let file: FileConfig = toml::from_str("[security]\nbusiness_hours = [\"weekdays\"]\n").unwrap();
        let err = build(file, None, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("business_hours"), "{err:#}");
        let file: FileConfig =
            toml::from_str("[security]\napproved_namespaces = [\"ml-*\"]\n[security.rules.\"sec.mining.telemetry\"]\nsm_active_min = 0.7\n")
                .unwrap();
        assert!(build(file, None, None, None).is_ok());
    }

    #[test]
    fn allowed_hosts_are_checked() {
        let file: FileConfig = toml::from_str("allowed_hosts = [\"GPUwarden.example.com\", \"::1\"]\n").unwrap();
        let c = build(file, None, None, None).unwrap();
        assert_eq!(c.allowed_hosts, ["gpuwarden.example.com", "[::1]"]);
        let file: FileConfig = toml::from_str("allowed_hosts = [\"https://gpuwarden.example.com\"]\n").unwrap();
        let err = build(file, None, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("allowed_hosts"), "{err:#}");
    }

    #[test]
    fn audit_forward_must_name_configured_sinks() {
        let file: FileConfig = toml::from_str("[audit]\nforward = [\"siem\"]\n").unwrap();
        let err = build(file, None, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("\"siem\""), "{err:#}");
        let file: FileConfig = toml::from_str(
            "[audit]\nforward = [\"siem\"]\n[notify.sinks.siem]\ntype = \"ecs_file\"\npath = \"/tmp/x.ndjson\"\n",
        )
        .unwrap();
        assert_eq!(build(file, None, None, None).unwrap().audit_forward, ["siem"]);
    }

    #[test]
    fn bad_duration_names_the_setting() {
        let file: FileConfig = toml::from_str("[store]\nretention = \"a week\"\n").unwrap();
        let err = build(file, None, None, None).unwrap_err();
        assert!(format!("{err:#}").contains("store.retention"), "{err:#}");
    }

    #[test]
    fn store_defaults_to_the_embedded_store_in_the_data_dir() {
        let c = build(FileConfig::default(), None, Some("/var/lib/gw".into()), None).unwrap();
        match c.store {
            gpuwarden_store::StoreConfig::Embedded { dir, .. } => assert_eq!(dir, PathBuf::from("/var/lib/gw/store")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn store_url_selects_postgres_with_the_password_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let text = format!(
            "[store]\nurl = \"postgres://gw@db:5432/gw\"\npassword_file = \"{}\"\npartition = \"7d\"\npool_size = 4\n",
            pw.display()
        );
        let c = build(toml::from_str(&text).unwrap(), None, None, None).unwrap();
        let gpuwarden_store::StoreConfig::Postgres(o) = &c.store else {
            panic!("{:?}", c.store)
        };
        assert_eq!(o.url, "postgres://gw@db:5432/gw");
        assert_eq!(o.password.as_deref(), Some("s3cret"));
        assert_eq!((o.partition_ms, o.pool_size), (7 * 86_400_000, 4));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "the password is never in Debug output"
        );
    }

    #[test]
    fn store_settings_without_url_or_with_bad_values_are_refused() {
        for (text, needle) in [
            ("[store]\npool_size = 4\n", "url is not"),
            (
                "[store]\nurl = \"postgres://gw@db/gw\"\npartition = \"5m\"\n",
                "shorter than an hour",
            ),
            ("[store]\nurl = \"postgres://gw@db/gw\"\npool_size = 0\n", "at least 1"),
            (
                "[store]\nurl = \"postgres://gw@db/gw\"\npassword_file = \"/nonexistent/pw\"\n",
                "/nonexistent/pw",
            ),
        ] {
            let err = build(toml::from_str(text).unwrap(), None, None, None).unwrap_err();
            assert!(format!("{err:#}").contains(needle), "{text}: {err:#}");
        }
    }
}
