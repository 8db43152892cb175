//! OpenID Connect: JWT bearer tokens from a provider, and the web UI's sign-in through it.
//!
//! - [`claims`]: a token's claims to a role and tenant (configured mapping).
//! - [`jwks`]: the provider's signing keys, cached, refreshed on rotation, rate-limited.
//! - [`verifier`]: the JWT [`crate::auth::Verifier`] (issuer, audience, time, pinned
//!   algorithms).
//! - [`provider`]: discovery, JWKS fetch and the token endpoint over HTTP.
//! - [`login`]: `GET /auth/oidc/login` and `/auth/oidc/callback` (authorization code +
//!   PKCE, `state`, `nonce`), ending in the same cookie session as a token sign-in.

pub mod claims;
pub mod jwks;
pub mod login;
pub mod provider;
pub mod verifier;

use claims::ClaimMapping;
use jsonwebtoken::Algorithm;
use std::sync::Arc;
use std::time::Duration;

/// A secret that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `[auth.oidc]`, checked by the binary's config.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The provider's issuer, exactly as its tokens name it.
    pub issuer: String,
    /// Accepted `aud` values of API access tokens.
    pub audiences: Vec<String>,
    /// Shown on the sign-in page: "Sign in with NAME".
    pub display_name: String,
    /// The web UI's client at the provider; `None`: bearer tokens only, no UI sign-in.
    pub client_id: Option<String>,
    /// `None`: a public client (PKCE only).
    pub client_secret: Option<Secret>,
    /// The callback URL registered at the provider (`…/auth/oidc/callback`).
    pub redirect_url: Option<String>,
    pub scopes: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// The JWKS URL; `None`: the discovery document's `jwks_uri`.
    pub jwks_url: Option<String>,
    pub mapping: ClaimMapping,
    /// Keys older than this are fetched again.
    pub jwks_refresh_interval: Duration,
    /// Never fetch keys (or retry discovery) more often than this.
    pub jwks_min_refresh: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

impl OidcSettings {
    /// Defaults for everything but the issuer and audience.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        OidcSettings {
            issuer: issuer.into(),
            audiences,
            display_name: "OpenID Connect".into(),
            client_id: None,
            client_secret: None,
            redirect_url: None,
            scopes: vec!["openid".into(), "profile".into(), "email".into()],
            algorithms: verifier::DEFAULT_ALGORITHMS.to_vec(),
            jwks_url: None,
            mapping: ClaimMapping::default(),
            jwks_refresh_interval: Duration::from_secs(3600),
            jwks_min_refresh: Duration::from_secs(30),
            leeway: Duration::from_secs(60),
        }
    }

    /// Checks what can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        provider::check_url("[auth.oidc] issuer", &self.issuer)?;
        if let Some(u) = &self.jwks_url {
            provider::check_url("[auth.oidc] jwks_url", u)?;
        }
        if self.audiences.is_empty() && self.client_id.is_none() {
            return Err(
                "[auth.oidc] needs `audience` (for API tokens) and/or `client_id` (for the web sign-in)".into(),
            );
        }
        if self.mapping.roles.values().all(Vec::is_empty) {
            return Err(
                "[auth.oidc.roles] maps no group to a role, so every token would be refused; e.g. \
                 [auth.oidc.roles] viewer = [\"gpu-viewers\"]"
                    .into(),
            );
        }
        if self.algorithms.is_empty() {
            return Err("[auth.oidc] algorithms is empty; e.g. [\"RS256\", \"ES256\"]".into());
        }
        if self.client_id.is_some() {
            match &self.redirect_url {
                None => {
                    return Err(
                        "[auth.oidc] client_id is set but not redirect_url or public_url: the provider needs \
                                the callback URL, e.g. public_url = \"https://gpuwarden.example.com\""
                            .into(),
                    )
                }
                Some(u) => {
                    reqwest::Url::parse(u).map_err(|e| format!("[auth.oidc] redirect_url {u:?}: {e}"))?;
                }
            }
            if !self.scopes.iter().any(|s| s == "openid") {
                return Err("[auth.oidc] scopes must include \"openid\"".into());
            }
        }
        if self.jwks_min_refresh > self.jwks_refresh_interval {
            return Err("[auth.oidc] jwks_min_refresh must not exceed jwks_refresh_interval".into());
        }
        Ok(())
    }
}

/// OpenID Connect of one server.
pub struct Oidc {
    pub settings: OidcSettings,
    pub verifier: Arc<verifier::JwtVerifier>,
    pub provider: Arc<provider::Provider>,
    pub(crate) logins: login::PendingLogins,
}

impl Oidc {
    pub fn new(settings: OidcSettings) -> Result<Arc<Oidc>, String> {
        settings.validate()?;
        let provider = Arc::new(provider::Provider::new(
            settings.issuer.clone(),
            settings.jwks_url.clone(),
            settings.jwks_min_refresh,
        )?);
        let jwks = Arc::new(jwks::JwksCache::new(
            Arc::new(provider::ProviderJwks(provider.clone())),
            settings.jwks_min_refresh,
            settings.jwks_refresh_interval,
        ));
        let verifier = Arc::new(verifier::JwtVerifier::new(
            settings.issuer.clone(),
            settings.audiences.clone(),
            settings.algorithms.clone(),
            settings.leeway,
            settings.mapping.clone(),
            jwks,
        ));
        Ok(Arc::new(Oidc {
            settings,
            verifier,
            provider,
            logins: login::PendingLogins::default(),
        }))
    }

    /// Whether the web UI can sign in through the provider.
    pub fn ui_sign_in(&self) -> bool {
        self.settings.client_id.is_some() && self.settings.redirect_url.is_some()
    }

    /// Adds the JWKS counters to `/metrics`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.verifier.jwks().stats.register(registry);
    }

    /// Fetches the discovery document and keys at start, so the first request does not
    /// wait; failures are logged and retried on demand.
    pub async fn warm_up(&self) {
        if self.ui_sign_in() || self.settings.jwks_url.is_none() {
            let _ = self.provider.metadata().await;
        }
        self.verifier.jwks().refresh_if_stale().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Role;

    fn ok() -> OidcSettings {
        let mut s = OidcSettings::new("https://idp.example", vec!["gpuwarden".into()]);
        s.mapping.roles.insert(Role::Viewer, vec!["g".into()]);
        s
    }

    #[test]
    fn settings_are_checked() {
        assert!(ok().validate().is_ok());
        let mut s = ok();
        s.mapping.roles.clear();
        assert!(s.validate().unwrap_err().contains("[auth.oidc.roles]"));
        let mut s = ok();
        s.issuer = "http://idp.example".into();
        assert!(s.validate().unwrap_err().contains("https"));
        let mut s = ok();
        s.client_id = Some("ui".into());
        assert!(s.validate().unwrap_err().contains("redirect_url"));
        s.redirect_url = Some("https://gw.example/auth/oidc/callback".into());
        assert!(s.validate().is_ok());
        s.scopes = vec!["profile".into()];
        assert!(s.validate().unwrap_err().contains("openid"));
        let s = OidcSettings {
            client_secret: Some(Secret("hunter2".into())),
            ..ok()
        };
        assert!(!format!("{s:?}").contains("hunter2"), "secrets never in Debug output");
    }
}
