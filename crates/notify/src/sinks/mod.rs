//! Sinks: one receiver type per file, all behind [`Sink`]. A sink only formats and
//! sends; retries, ordering, rate limits and bookkeeping are the dispatcher's, so a sink
//! is a pure "send this batch, tell me how it went".

pub mod alertmanager;
pub mod cef;
pub mod ecs;
pub mod elastic;
pub mod email;
pub mod http;
pub mod pagerduty;
pub mod slack;
pub mod splunk;
pub mod syslog;
pub mod teams;
pub mod webhook;

use crate::config::{DeliverySettings, SinkConfig};
use crate::message::Notification;
use crate::secret::SecretError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, so that [`Sink`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A receiver of notifications.
///
/// Contract: `deliver` returns `Ok` only when the receiver accepted every message of the
/// batch (HTTP 2xx, bytes written to the socket for syslog, SMTP 250). It must not
/// retry itself; an error says whether a retry can help ([`SinkError::retryable`]).
pub trait Sink: Send + Sync {
    /// The configured name (`[notify.sinks.NAME]`).
    fn name(&self) -> &str;
    /// The type as written in the config (`alertmanager`, `webhook`, …).
    fn type_name(&self) -> &'static str;
    /// How many messages one `deliver` call may carry.
    fn max_batch(&self) -> usize {
        1
    }
    /// Sends `batch` (at most `max_batch` messages, in order).
    fn deliver<'a>(&'a self, batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// A failed delivery. Messages name the sink and what the receiver answered; they never
/// contain a secret (URLs of chat webhooks are not printed, reqwest errors are stripped
/// of their URL).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink '{sink}': {receiver} answered HTTP {status}: {body}")]
    Rejected {
        sink: String,
        receiver: String,
        status: u16,
        body: String,
    },
    #[error("sink '{sink}': sending to {receiver}: {cause}")]
    Transport {
        sink: String,
        receiver: String,
        cause: String,
    },
    #[error("sink '{sink}': {receiver} accepted the request but refused items: {detail}")]
    PartialReject {
        sink: String,
        receiver: String,
        detail: String,
        retryable: bool,
    },
    #[error("sink '{sink}': {what}: {source}")]
    Io {
        sink: String,
        what: String,
        source: std::io::Error,
    },
    #[error("sink '{sink}': {receiver} refused the message: {cause}")]
    Smtp {
        sink: String,
        receiver: String,
        cause: String,
        permanent: bool,
    },
    #[error("sink '{sink}': no answer from {receiver} within {seconds:.1} s")]
    Timeout {
        sink: String,
        receiver: String,
        seconds: f64,
    },
}

impl SinkError {
    /// Whether trying again later can help: network trouble, timeouts, 5xx, 408 and 429
    /// can; a 4xx rejection (bad token, malformed body) cannot.
    pub fn retryable(&self) -> bool {
        match self {
            SinkError::Rejected { status, .. } => *status >= 500 || *status == 408 || *status == 429,
            SinkError::PartialReject { retryable, .. } => *retryable,
            SinkError::Smtp { permanent, .. } => !permanent,
            SinkError::Transport { .. } | SinkError::Io { .. } | SinkError::Timeout { .. } => true,
        }
    }
}

/// A sink that cannot be built from its config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("sink '{sink}': {problem}")]
    Invalid { sink: String, problem: String },
}

/// What every sink is built with.
pub struct BuildContext<'a> {
    pub settings: &'a DeliverySettings,
    /// Shared HTTP client (connection pool, rustls).
    pub http: reqwest::Client,
}

/// Builds the sink `name` from its config, resolving its secrets.
pub fn build(name: &str, cfg: &SinkConfig, ctx: &BuildContext<'_>) -> Result<Arc<dyn Sink>, BuildError> {
    Ok(match cfg {
        SinkConfig::Alertmanager(c) => Arc::new(alertmanager::Alertmanager::new(name, c, ctx)?),
        SinkConfig::Webhook(c) => Arc::new(webhook::Webhook::new(name, c, ctx)?),
        SinkConfig::Slack(c) => Arc::new(slack::Slack::new(name, c, ctx)?),
        SinkConfig::Teams(c) => Arc::new(teams::Teams::new(name, c, ctx)?),
        SinkConfig::Pagerduty(c) => Arc::new(pagerduty::PagerDuty::new(name, c, ctx)?),
        SinkConfig::Syslog(c) => Arc::new(syslog::Syslog::new(name, c, ctx)?),
        SinkConfig::Splunk(c) => Arc::new(splunk::Splunk::new(name, c, ctx)?),
        SinkConfig::Elastic(c) => Arc::new(elastic::Elastic::new(name, c, ctx)?),
        SinkConfig::EcsFile(c) => Arc::new(ecs::EcsFile::new(name, c)),
        SinkConfig::Email(c) => Arc::new(email::Email::new(name, c, ctx)?),
    })
}

/// Validates that `url` is an absolute http(s) URL.
pub(crate) fn check_url(sink: &str, url: &str) -> Result<reqwest::Url, BuildError> {
    let u = reqwest::Url::parse(url).map_err(|e| BuildError::Invalid {
        sink: sink.into(),
        problem: format!("'{url}' is not a URL: {e}"),
    })?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(BuildError::Invalid {
            sink: sink.into(),
            problem: format!("'{url}' must be http:// or https://"),
        });
    }
    Ok(u)
}
