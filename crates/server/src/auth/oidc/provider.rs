//! Talking to the OpenID provider over HTTP: its discovery document
//! (`<issuer>/.well-known/openid-configuration`), its JWKS and its token endpoint.
//!
//! The discovery document is fetched once and kept; a failure is retried at most once
//! per `min_retry`, so an unreachable provider is not asked on every request.

use super::jwks::{BoxFuture, JwksSource};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The parts of the discovery document we use.
#[derive(Debug, Clone, Deserialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
}

/// Whether `url` may be used to talk to the provider: `https`, or `http` to a loopback
/// address (a provider on the same host, and tests).
pub fn check_url(what: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{what} {url:?} is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{what} {url:?} must use https (plain http only to a loopback address): tokens and keys must not \
             travel unencrypted"
        )),
    }
}

/// The discovery document once fetched, and the last failure (when, why).
#[derive(Default)]
struct Discovered {
    metadata: Option<Arc<ProviderMetadata>>,
    failed: Option<(Instant, String)>,
}

/// The HTTP side of one provider.
pub struct Provider {
    issuer: String,
    jwks_url: Option<String>,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Discovered>,
    min_retry: Duration,
}

impl Provider {
    pub fn new(issuer: String, jwks_url: Option<String>, min_retry: Duration) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("gpuwarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("building the HTTP client for the OpenID provider: {e}"))?;
        Ok(Provider {
            issuer,
            jwks_url,
            http,
            metadata: tokio::sync::Mutex::new(Discovered::default()),
            min_retry,
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The discovery document (fetched once; a failure is remembered for `min_retry`).
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, String> {
        let mut st = self.metadata.lock().await;
        if let Some(m) = &st.metadata {
            return Ok(m.clone());
        }
        if let Some((at, why)) = &st.failed {
            if at.elapsed() < self.min_retry {
                return Err(why.clone());
            }
        }
        match self.discover().await {
            Ok(m) => {
                let m = Arc::new(m);
                st.metadata = Some(m.clone());
                st.failed = None;
                Ok(m)
            }
            Err(e) => {
                tracing::warn!("OpenID discovery failed: {e}");
                st.failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    async fn discover(&self) -> Result<ProviderMetadata, String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let m: ProviderMetadata = self.get_json(&url).await?;
        // OpenID Connect Discovery §4.3: the document must name exactly our issuer.
        if m.issuer != self.issuer {
            return Err(format!(
                "{url} names the issuer {:?}, not the configured {:?}; set [auth.oidc] issuer to exactly the \
                 provider's issuer",
                m.issuer, self.issuer
            ));
        }
        for (what, u) in [
            ("authorization_endpoint", &m.authorization_endpoint),
            ("token_endpoint", &m.token_endpoint),
            ("jwks_uri", &m.jwks_uri),
        ] {
            if let Some(u) = u {
                check_url(what, u)?;
            }
        }
        Ok(m)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        let resp = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        resp.json()
            .await
            .map_err(|e| format!("GET {url}: not the expected JSON: {e}"))
    }

    async fn fetch_jwks(&self) -> Result<serde_json::Value, String> {
        let url = match &self.jwks_url {
            Some(u) => u.clone(),
            None => self
                .metadata()
                .await?
                .jwks_uri
                .clone()
                .ok_or("the provider's discovery document has no jwks_uri; set [auth.oidc] jwks_url")?,
        };
        self.get_json(&url).await
    }

    /// Exchanges an authorization code for tokens; returns the ID token.
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
        client_id: &str,
        client_secret: Option<&str>,
    ) -> Result<String, String> {
        let m = self.metadata().await?;
        let url = m
            .token_endpoint
            .as_deref()
            .ok_or("the provider's discovery document has no token_endpoint")?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ];
        let mut req = self.http.post(url).header("accept", "application/json");
        match client_secret {
            // client_secret_basic (RFC 6749 §2.3.1): both parts form-urlencoded first.
            Some(secret) => {
                let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                req = req.basic_auth(enc(client_id), Some(enc(secret)));
            }
            None => form.push(("client_id", client_id)),
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let resp = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status();
        let json: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("POST {url}: HTTP {status}, not JSON: {e}"))?;
        if !status.is_success() {
            // The error fields are the provider's; never echo what we sent (the secret).
            return Err(format!(
                "the token endpoint refused the code: HTTP {status} {} {}",
                json.get("error").and_then(|v| v.as_str()).unwrap_or(""),
                json.get("error_description").and_then(|v| v.as_str()).unwrap_or("")
            ));
        }
        json.get("id_token")
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or_else(|| "the token endpoint's answer has no id_token (is the `openid` scope requested?)".into())
    }
}

/// The provider's JWKS as a [`JwksSource`].
pub struct ProviderJwks(pub Arc<Provider>);

impl JwksSource for ProviderJwks {
    fn fetch(&self) -> BoxFuture<'_, Result<serde_json::Value, String>> {
        Box::pin(self.0.fetch_jwks())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_urls_must_be_https_or_loopback() {
        assert!(check_url("issuer", "https://idp.example.com/realms/x").is_ok());
        assert!(check_url("issuer", "http://127.0.0.1:8080").is_ok());
        assert!(check_url("issuer", "http://[::1]:8080").is_ok());
        assert!(check_url("issuer", "http://localhost:1").is_ok());
        assert!(check_url("issuer", "http://idp.example.com")
            .unwrap_err()
            .contains("https"));
        assert!(check_url("issuer", "not a url").is_err());
    }
}
