//! Authentication and roles for the API/UI listener (when `[auth] enabled = true`).
//!
//! - [`token`], [`file`], [`store`]: API tokens — 256 random bits shown once, kept as
//!   SHA-256 hashes in `<data_dir>/auth/tokens.json`, reloaded when the CLI changes the
//!   file.
//! - [`policy`]: the one table of which role each route needs.
//! - [`session`]: the web UI's cookie sessions (signed in with a token) and their CSRF
//!   tokens, kept in `<data_dir>/auth/sessions.json` across restarts.
//! - [`middleware`]: checks every request against the above and puts the caller's
//!   [`Principal`] (and a tenant's [`CallerScope`]) into the request's extensions.
//! - [`api`]: `/api/v1/auth/*` (whoami, token administration, sign-in).
//! - [`oidc`]: OpenID Connect — JWT bearer tokens from a provider, and the web UI's
//!   sign-in through it (`/auth/oidc/login`, `/auth/oidc/callback`).
//!
//! Credentials are checked by [`Verifier`]s: API tokens and OpenID JWTs, side by side.
//!
//! Without authentication configured none of this runs and every request is the
//! anonymous admin (loopback only), exactly as before.

pub mod api;
pub mod file;
pub mod middleware;
pub mod oidc;
pub mod policy;
pub mod session;
pub mod store;
pub mod token;

use crate::principal::Principal;
use crate::scope::{CallerScope, TenantDef};
use gpuwarden_model::Clock;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What failed while managing tokens.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the token file {path} is not valid ({why}); authentication cannot start without it — \
         restore it from a backup, or move it away and create new tokens with `gpuwarden auth token create`"
    )]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no token with id {0}; `gpuwarden auth token list` shows the ids")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

impl AuthError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        AuthError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Why a credential was refused (the reason goes into the 401's message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// Not shaped like any credential this verifier knows.
    Malformed,
    /// Well-formed, but not issued here (forged, or from another installation).
    Unknown,
    Expired(String),
    Revoked(String),
    /// The token file cannot be read; nothing is accepted until it is fixed.
    Unavailable,
    /// The credential's tenant is not in the configuration.
    UnknownTenant(String),
    /// Refused for the reason given (an OpenID token: issuer, audience, signature, role).
    Invalid(String),
}

impl Denied {
    pub fn message(&self) -> String {
        match self {
            Denied::Malformed | Denied::Unknown => "the token is not valid here".into(),
            Denied::Expired(id) => format!("token {id} has expired; ask an admin for a new one"),
            Denied::Revoked(id) => format!("token {id} has been revoked"),
            Denied::Unavailable => "the server cannot read its token file; see its log".into(),
            Denied::Invalid(why) => why.clone(),
            Denied::UnknownTenant(t) => {
                format!("the token's tenant {t:?} is not configured on this server ([auth.tenants.{t}])")
            }
        }
    }
}

/// Checks one kind of bearer credential. API tokens are one ([`store::TokenStore`]);
/// an OpenID Connect JWT verifier is meant to be another.
pub trait Verifier: Send + Sync {
    /// Whether `bearer` is this verifier's kind of credential (e.g. starts with `gpw_`),
    /// so the next verifier is not asked.
    fn recognizes(&self, bearer: &str) -> bool;
    /// The principal of a valid credential, with the instant it stops being valid.
    fn verify(&self, bearer: &str, now_ms: i64) -> Result<(Principal, Option<i64>), Denied>;
    /// Whether the principal `id` issued by this verifier is still valid (for sessions
    /// signed in with it: revocation ends them).
    fn still_valid(&self, principal_id: &str, now_ms: i64) -> bool;
    /// Network work a credential needs before [`Verifier::verify`] (the JWT verifier
    /// fetches the provider's keys when a token names one it does not hold).
    fn prepare<'a>(&'a self, _bearer: &'a str) -> oidc::jwks::BoxFuture<'a, ()> {
        Box::pin(std::future::ready(()))
    }
}

impl Verifier for store::TokenStore {
    fn recognizes(&self, bearer: &str) -> bool {
        bearer.starts_with(token::PREFIX)
    }

    fn verify(&self, bearer: &str, now_ms: i64) -> Result<(Principal, Option<i64>), Denied> {
        let r = store::TokenStore::verify(self, bearer, now_ms)?;
        Ok((
            Principal {
                id: r.id,
                role: r.role,
                tenant: r.tenant,
            },
            r.expires_ms,
        ))
    }

    fn still_valid(&self, principal_id: &str, now_ms: i64) -> bool {
        self.active(principal_id, now_ms).is_some()
    }
}

/// The `[auth]` settings the server needs.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub tenants: BTreeMap<String, TenantDef>,
    /// Lifetime of a UI session (ends earlier with its token).
    pub session_ttl: Duration,
    /// `[auth.oidc]`: JWTs from an OpenID provider and the UI's sign-in through it.
    pub oidc: Option<oidc::OidcSettings>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            tenants: BTreeMap::new(),
            session_ttl: Duration::from_secs(12 * 3600),
            oidc: None,
        }
    }
}

/// Checks the tenants: names of letters, digits, `-` and `_`, and at least one non-empty
/// list each (a tenant with none would see the whole fleet).
pub fn validate_tenants(tenants: &BTreeMap<String, TenantDef>) -> Result<(), String> {
    for (name, t) in tenants {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("tenant name {name:?} must be 1–64 letters, digits, '-' or '_'"));
        }
        if t.namespaces.is_empty() && t.slurm_accounts.is_empty() && t.nodes.is_empty() {
            return Err(format!(
                "[auth.tenants.{name}] lists no namespaces, slurm_accounts or nodes: it would see the whole fleet; \
                 give at least one, e.g. namespaces = [\"{name}\"]"
            ));
        }
    }
    Ok(())
}

/// Authentication of one server: its verifiers, tenants and sessions.
pub struct Auth {
    tokens: Arc<store::TokenStore>,
    verifiers: Vec<Arc<dyn Verifier>>,
    tenants: BTreeMap<String, TenantDef>,
    sessions: session::Sessions,
    clock: Arc<dyn Clock>,
    oidc: Option<Arc<oidc::Oidc>>,
}

impl Auth {
    /// Loads the tokens of `data_dir` (a corrupt file is an error) and checks that every
    /// usable token names a configured tenant.
    pub fn open(data_dir: &Path, settings: AuthSettings, clock: Arc<dyn Clock>) -> Result<Arc<Auth>, AuthError> {
        validate_tenants(&settings.tenants).map_err(AuthError::Invalid)?;
        let tokens = Arc::new(store::TokenStore::open(&file::auth_dir(data_dir))?);
        let now = clock.now_ms();
        let orphans: Vec<String> = tokens
            .list()
            .into_iter()
            .filter(|t| t.status(now) == token::TokenStatus::Active)
            .filter_map(|t| {
                let tenant = t.tenant?;
                (!settings.tenants.contains_key(&tenant)).then(|| format!("{} (tenant {tenant:?})", t.id))
            })
            .collect();
        if !orphans.is_empty() {
            return Err(AuthError::Invalid(format!(
                "token(s) {} name tenants missing from [auth.tenants] (configured: {:?}); add the tenant to the \
                 config or revoke the token with `gpuwarden auth token revoke ID`",
                orphans.join(", "),
                settings.tenants.keys().collect::<Vec<_>>()
            )));
        }
        let oidc = match settings.oidc {
            Some(o) => Some(oidc::Oidc::new(o).map_err(AuthError::Invalid)?),
            None => None,
        };
        let mut verifiers = vec![tokens.clone() as Arc<dyn Verifier>];
        if let Some(o) = &oidc {
            verifiers.push(o.verifier.clone() as Arc<dyn Verifier>);
        }
        Ok(Arc::new(Auth {
            verifiers,
            oidc,
            tokens,
            tenants: settings.tenants,
            sessions: session::Sessions::open(
                settings.session_ttl,
                session::sessions_path(&file::auth_dir(data_dir)),
                now,
            ),
            clock,
        }))
    }

    /// Shares UI sessions with the other instances on the PostgreSQL store.
    #[cfg(feature = "postgres")]
    pub fn share_sessions(&self, db: gpuwarden_store::postgres::PgHandle) {
        self.sessions.share(db);
    }

    /// The API tokens.
    pub fn tokens(&self) -> &store::TokenStore {
        &self.tokens
    }

    /// OpenID Connect, when `[auth.oidc]` is configured.
    pub fn oidc(&self) -> Option<&Arc<oidc::Oidc>> {
        self.oidc.as_ref()
    }

    /// The configured tenants.
    pub fn tenants(&self) -> &BTreeMap<String, TenantDef> {
        &self.tenants
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub(crate) fn sessions(&self) -> &session::Sessions {
        &self.sessions
    }

    /// The scope of `principal`, or why it has none (its tenant is not configured).
    pub fn scope_of(&self, principal: &Principal) -> Result<Option<CallerScope>, Denied> {
        match &principal.tenant {
            None => Ok(None),
            Some(t) => self
                .tenants
                .get(t)
                .map(|def| Some(CallerScope::for_tenant(def)))
                .ok_or_else(|| Denied::UnknownTenant(t.clone())),
        }
    }

    /// Checks a bearer credential with the first verifier that recognizes it.
    pub fn verify_bearer(&self, bearer: &str) -> Result<(Principal, Option<i64>), Denied> {
        let now = self.clock.now_ms();
        let v = self
            .verifiers
            .iter()
            .find(|v| v.recognizes(bearer))
            .ok_or(Denied::Malformed)?;
        let (p, until) = v.verify(bearer, now)?;
        self.scope_of(&p)?;
        Ok((p, until))
    }

    /// [`Auth::verify_bearer`] after the verifier's network work (fetching rotated
    /// signing keys, rate-limited): what requests and sign-ins call.
    pub async fn check_bearer(&self, bearer: &str) -> Result<(Principal, Option<i64>), Denied> {
        if let Some(v) = self.verifiers.iter().find(|v| v.recognizes(bearer)) {
            v.prepare(bearer).await;
        }
        self.verify_bearer(bearer)
    }

    /// Whether a principal signed in earlier is still valid with any verifier.
    pub fn still_valid(&self, principal_id: &str) -> bool {
        let now = self.clock.now_ms();
        self.verifiers.iter().any(|v| v.still_valid(principal_id, now))
    }

    /// Re-reads the token file every second when it changed (the CLI's tokens take
    /// effect within about a second) and writes last-use times every minute and at
    /// shutdown.
    pub fn spawn_maintenance(
        self: Arc<Self>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        if let Some(o) = self.oidc.clone() {
            tokio::spawn(async move { o.warm_up().await });
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n: u64 = 0;
            loop {
                let stopping = tokio::select! {
                    _ = tick.tick() => false,
                    _ = shutdown.changed() => true,
                };
                n += 1;
                let me = self.clone();
                let flush = stopping || n.is_multiple_of(60);
                let _ = tokio::task::spawn_blocking(move || {
                    me.tokens.reload_if_changed();
                    if flush {
                        if let Err(e) = me.tokens.flush_last_used() {
                            tracing::warn!("writing tokens' last use: {e}");
                        }
                    }
                })
                .await;
                if stopping {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::SystemClock;

    #[test]
    fn tenants_must_restrict_something() {
        let mut t = BTreeMap::new();
        t.insert("team-a".to_string(), TenantDef::default());
        let err = validate_tenants(&t).unwrap_err();
        assert!(err.contains("team-a") && err.contains("whole fleet"), "{err}");
        t.insert(
            "team-a".to_string(),
            TenantDef {
                nodes: vec!["n1".into()],
                ..Default::default()
            },
        );
        assert!(validate_tenants(&t).is_ok());
        t.insert("bad name".to_string(), t["team-a"].clone());
        assert!(validate_tenants(&t).is_err());
    }

    #[test]
    fn a_token_of_an_unknown_tenant_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let spec = token::NewToken {
            name: "x".into(),
            role: crate::principal::Role::Viewer,
            tenant: Some("ghost".into()),
            expires_in: None,
        };
        file::create(&file::auth_dir(dir.path()), &spec, 0).unwrap();
        let err = Auth::open(dir.path(), AuthSettings::default(), Arc::new(SystemClock))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("ghost"), "{err}");
    }
}
