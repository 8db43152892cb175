//! One push of one batch to `gpuwarden serve` (`POST /api/v1/ingest`).
//!
//! The answer decides what happens to the spooled batch, so it is classified here once:
//! stored or duplicate → delete it; refused for what it is (400, 413, 422) → delete it
//! and count it, since no retry can succeed and keeping it would block the spool; anything
//! else (network error, 5xx, 429, 401/403 while a token is being rotated) → keep it and
//! retry later.

use crate::wire::Batch;
use std::time::Duration;

/// The header that repeats the batch id, so a proxy or the server can dedupe without
/// parsing the body.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A push that should be retried later.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("pushing to {url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("pushing to {url}: server answered {status}: {message}")]
    Retry { url: String, status: u16, message: String },
}

/// A push the server answered for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    Stored {
        samples: u64,
    },
    /// The server had stored this batch id already (our earlier answer was lost).
    Duplicate,
    /// The server will never accept this batch (malformed, too large).
    Rejected {
        status: u16,
        message: String,
    },
}

/// Pushes batches to one server.
#[derive(Clone)]
pub struct Pusher {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

/// TLS settings of the pushes beyond the system's trust store.
#[derive(Debug, Clone, Default)]
pub struct PushTls {
    /// PEM CA certificate(s) to trust besides the system's (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate chain followed by its private key (mutual TLS).
    pub identity_pem: Option<Vec<u8>>,
}

impl Pusher {
    /// `server` is the base URL (`https://gpuwarden:9471`); the ingest path is appended.
    pub fn new(server: &str, token: Option<String>, timeout: Duration) -> Result<Pusher, reqwest::Error> {
        Self::with_tls(server, token, timeout, &PushTls::default())
    }

    /// [`Pusher::new`] with a private CA and/or a client certificate.
    pub fn with_tls(
        server: &str,
        token: Option<String>,
        timeout: Duration,
        tls: &PushTls,
    ) -> Result<Pusher, reqwest::Error> {
        let mut builder = reqwest::Client::builder().timeout(timeout);
        if let Some(pem) = &tls.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &tls.identity_pem {
            builder = builder.identity(reqwest::Identity::from_pem(pem)?);
        }
        let client = builder.build()?;
        Ok(Pusher {
            client,
            url: format!("{}/api/v1/ingest", server.trim_end_matches('/')),
            token,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn push(&self, batch: &Batch) -> Result<PushOutcome, PushError> {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header(IDEMPOTENCY_HEADER, batch.id.as_str())
            .body(batch.encode());
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let transport = |source| PushError::Transport {
            url: self.url.clone(),
            source,
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
        let message = body["error"]["message"].as_str().unwrap_or("").to_owned();
        match status {
            200..=299 => Ok(match body["status"].as_str() {
                Some("duplicate") => PushOutcome::Duplicate,
                _ => PushOutcome::Stored {
                    samples: body["samples"].as_u64().unwrap_or(0),
                },
            }),
            400 | 413 | 415 | 422 => Ok(PushOutcome::Rejected { status, message }),
            _ => Err(PushError::Retry {
                url: self.url.clone(),
                status,
                message,
            }),
        }
    }
}
