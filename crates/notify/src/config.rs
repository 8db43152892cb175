//! The `[notify]` section of the configuration: sinks, routes and delivery settings.
//!
//! Every struct rejects unknown keys (a typo is an error, not a silently ignored
//! setting) and every field has a doc line, which `docs/notifications.md` repeats.
//! Secrets are never written here: `secret_env` / `secret_file` name where they are.

use crate::route::RouteConfig;
use crate::secret::SecretRef;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `[notify]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Base URL of this gpuwarden as receivers can reach it (links in messages,
    /// Alertmanager's `generatorURL`), e.g. "https://gpuwarden.example.com".
    pub external_url: Option<String>,
    /// First retry delay after a failed delivery, e.g. "1s" (default 1s); it doubles
    /// with each failure, with ±20 % jitter.
    pub retry_initial: Option<String>,
    /// Longest delay between retries (default "5m").
    pub retry_max: Option<String>,
    /// A message still undelivered after this long is marked failed (default "24h").
    pub give_up_after: Option<String>,
    /// Timeout of one delivery attempt (default "10s").
    pub timeout: Option<String>,
    /// Delivered and failed entries kept in the outbox per sink, for the API (default 1000).
    pub keep_done: Option<usize>,
    /// With the outbox in PostgreSQL (`[store] url`), how long an instance holds the
    /// entries it claimed before another instance may send them instead (default "60s";
    /// must be longer than `timeout`). It is how long a transition claimed by an instance
    /// that died waits before the others deliver it.
    pub claim_lease: Option<String>,
    /// `[notify.silences]`: bounds on silences (count, matchers, lengths, duration).
    #[serde(default)]
    pub silences: crate::silence::SilenceLimits,
    /// The sinks, by name: `[notify.sinks.NAME]` with `type = "…"`.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Routes, tried in order (none: every sink gets everything).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// Delivery settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySettings {
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub give_up_after: Duration,
    pub timeout: Duration,
    pub keep_done: usize,
    pub silence_limits: crate::silence::SilenceLimits,
    /// How long a claim on outbox entries lasts when the outbox is shared (PostgreSQL).
    pub claim_lease: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(10),
            keep_done: 1000,
            silence_limits: Default::default(),
            claim_lease: Duration::from_secs(60),
        }
    }
}

/// A setting of `[notify]` that does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("notify.{field} = \"{value}\" is not a duration (examples: \"500ms\", \"5s\", \"1h\")")]
    Duration { field: &'static str, value: String },
    #[error("notify route {index} names sink '{sink}', which is not configured under [notify.sinks]")]
    UnknownSink { index: usize, sink: String },
    #[error("notify sink '{sink}': {problem}")]
    Sink { sink: String, problem: String },
    #[error(
        "notify.claim_lease ({lease:?}) must be longer than notify.timeout ({timeout:?}): otherwise another \
         instance may send an entry while the first is still sending it"
    )]
    LeaseTooShort { lease: Duration, timeout: Duration },
}

fn duration(field: &'static str, v: &Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => humantime::parse_duration(s).map_err(|_| ConfigError::Duration {
            field,
            value: s.clone(),
        }),
    }
}

impl NotifyConfig {
    /// Checks the routes against the sinks and parses the durations.
    pub fn settings(&self) -> Result<DeliverySettings, ConfigError> {
        for (index, r) in self.routes.iter().enumerate() {
            for s in &r.sinks {
                if !self.sinks.contains_key(s) {
                    return Err(ConfigError::UnknownSink { index, sink: s.clone() });
                }
            }
        }
        let d = DeliverySettings::default();
        let timeout = duration("timeout", &self.timeout, d.timeout)?;
        let claim_lease = duration("claim_lease", &self.claim_lease, d.claim_lease.max(timeout * 2))?;
        if claim_lease <= timeout {
            return Err(ConfigError::LeaseTooShort {
                lease: claim_lease,
                timeout,
            });
        }
        Ok(DeliverySettings {
            retry_initial: duration("retry_initial", &self.retry_initial, d.retry_initial)?,
            retry_max: duration("retry_max", &self.retry_max, d.retry_max)?,
            give_up_after: duration("give_up_after", &self.give_up_after, d.give_up_after)?,
            timeout,
            keep_done: self.keep_done.unwrap_or(d.keep_done).max(1),
            silence_limits: self.silences.clone(),
            claim_lease,
        })
    }
}

/// `[notify.sinks.NAME]`: one receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    Alertmanager(AlertmanagerConfig),
    Webhook(WebhookConfig),
    Slack(ChatConfig),
    Teams(ChatConfig),
    Pagerduty(PagerDutyConfig),
    Syslog(SyslogConfig),
    Splunk(SplunkConfig),
    Elastic(ElasticConfig),
    EcsFile(EcsFileConfig),
    Email(EmailConfig),
}

impl SinkConfig {
    /// The `type` as written in the config.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Alertmanager(_) => "alertmanager",
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Slack(_) => "slack",
            SinkConfig::Teams(_) => "teams",
            SinkConfig::Pagerduty(_) => "pagerduty",
            SinkConfig::Syslog(_) => "syslog",
            SinkConfig::Splunk(_) => "splunk",
            SinkConfig::Elastic(_) => "elastic",
            SinkConfig::EcsFile(_) => "ecs_file",
            SinkConfig::Email(_) => "email",
        }
    }

    /// Messages per minute this sink may send (none: unlimited).
    pub fn rate_limit_per_minute(&self) -> Option<u32> {
        match self {
            SinkConfig::Alertmanager(c) => c.rate_limit_per_minute,
            SinkConfig::Webhook(c) => c.rate_limit_per_minute,
            SinkConfig::Slack(c) | SinkConfig::Teams(c) => c.rate_limit_per_minute,
            SinkConfig::Pagerduty(c) => c.rate_limit_per_minute,
            SinkConfig::Syslog(c) => c.rate_limit_per_minute,
            SinkConfig::Splunk(c) => c.rate_limit_per_minute,
            SinkConfig::Elastic(c) => c.rate_limit_per_minute,
            SinkConfig::EcsFile(_) => None,
            SinkConfig::Email(c) => c.rate_limit_per_minute,
        }
    }
}

fn secret(env: &Option<String>, file: &Option<PathBuf>) -> SecretRef {
    SecretRef {
        secret_env: env.clone(),
        secret_file: file.clone(),
    }
}

/// `type = "alertmanager"`: Prometheus Alertmanager API v2.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. "http://alertmanager:9093" (alerts go to URL/api/v2/alerts).
    pub url: String,
    /// A firing alert's `endsAt` is this far ahead (default "24h"); Alertmanager resolves
    /// an alert that is not re-sent by then.
    pub alert_ttl: Option<String>,
    /// Alerts per request (default 64): Alertmanager takes a list.
    pub max_batch: Option<usize>,
    /// Requests per minute (default unlimited).
    pub rate_limit_per_minute: Option<u32>,
}

/// `type = "webhook"`: JSON POST signed with HMAC-SHA256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receiver URL.
    pub url: String,
    /// Environment variable with the HMAC key (`X-Gpuwarden-Signature`); optional.
    pub secret_env: Option<String>,
    /// File with the HMAC key; optional.
    pub secret_file: Option<PathBuf>,
    /// Requests per minute (default unlimited).
    pub rate_limit_per_minute: Option<u32>,
}

impl WebhookConfig {
    pub fn secret(&self) -> SecretRef {
        secret(&self.secret_env, &self.secret_file)
    }
}

/// `type = "slack"` (incoming webhook, Block Kit) or `type = "teams"` (Adaptive Card).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// Incoming-webhook URL. It embeds a token, so prefer secret_env / secret_file,
    /// which hold the whole URL.
    pub url: Option<String>,
    /// Environment variable holding the webhook URL.
    pub secret_env: Option<String>,
    /// File holding the webhook URL.
    pub secret_file: Option<PathBuf>,
    /// Messages per minute (default 30: chat channels are for people).
    pub rate_limit_per_minute: Option<u32>,
}

impl ChatConfig {
    pub fn secret(&self) -> SecretRef {
        secret(&self.secret_env, &self.secret_file)
    }
}

/// `type = "pagerduty"`: PagerDuty Events API v2.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// Events API endpoint (default "https://events.pagerduty.com/v2/enqueue").
    pub url: Option<String>,
    /// Environment variable with the integration's routing key (required, or secret_file).
    pub secret_env: Option<String>,
    /// File with the routing key.
    pub secret_file: Option<PathBuf>,
    /// Events per minute (default unlimited; PagerDuty allows 120/min per key).
    pub rate_limit_per_minute: Option<u32>,
}

impl PagerDutyConfig {
    pub fn secret(&self) -> SecretRef {
        secret(&self.secret_env, &self.secret_file)
    }
}

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyslogTransport {
    /// RFC 5426: one message per datagram.
    Udp,
    /// RFC 6587 octet-counting framing.
    Tcp,
    /// RFC 5425: octet counting over TLS.
    Tls,
}

/// `type = "syslog"`: RFC 5424 messages with a CEF payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// Collector address, e.g. "siem.example.com:6514".
    pub address: String,
    /// udp, tcp or tls (default udp).
    pub transport: Option<SyslogTransport>,
    /// PEM file of CA certificates trusted for TLS (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// Name checked against the collector's certificate (default: the address's host).
    pub server_name: Option<String>,
    /// Syslog facility: kern, user, daemon, auth, local0 … local7 (default local0).
    pub facility: Option<String>,
    /// HOSTNAME field (default: this machine's host name).
    pub hostname: Option<String>,
    /// Messages per minute (default unlimited).
    pub rate_limit_per_minute: Option<u32>,
}

/// `type = "splunk"`: Splunk HTTP Event Collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplunkConfig {
    /// HEC base URL, e.g. "https://splunk:8088" (events go to URL/services/collector/event).
    pub url: String,
    /// Environment variable with the HEC token (required, or secret_file).
    pub secret_env: Option<String>,
    /// File with the HEC token.
    pub secret_file: Option<PathBuf>,
    /// Index to write to (default: the token's default index).
    pub index: Option<String>,
    /// Sourcetype (default "gpuwarden:notification").
    pub sourcetype: Option<String>,
    /// Events per request (default 100).
    pub max_batch: Option<usize>,
    /// Requests per minute (default unlimited).
    pub rate_limit_per_minute: Option<u32>,
}

impl SplunkConfig {
    pub fn secret(&self) -> SecretRef {
        secret(&self.secret_env, &self.secret_file)
    }
}

/// `type = "elastic"`: ECS documents through the `_bulk` API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticConfig {
    /// Elasticsearch base URL, e.g. "https://es:9200".
    pub url: String,
    /// Index or data stream (default "gpuwarden-notifications").
    pub index: Option<String>,
    /// Environment variable with an API key (sent as `Authorization: ApiKey …`); optional.
    pub secret_env: Option<String>,
    /// File with the API key; optional.
    pub secret_file: Option<PathBuf>,
    /// Documents per request (default 100).
    pub max_batch: Option<usize>,
    /// Requests per minute (default unlimited).
    pub rate_limit_per_minute: Option<u32>,
}

impl ElasticConfig {
    pub fn secret(&self) -> SecretRef {
        secret(&self.secret_env, &self.secret_file)
    }
}

/// `type = "ecs_file"`: ECS documents appended to an NDJSON file (for Filebeat/Elastic
/// Agent to ship).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsFileConfig {
    /// The NDJSON file (created if missing; appended to and fsynced).
    pub path: PathBuf,
}

/// `type = "email"`: SMTP with STARTTLS, plain-text and HTML bodies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// SMTP server host name (also the name checked against its certificate).
    pub host: String,
    /// SMTP port (default 587, the submission port).
    pub port: Option<u16>,
    /// Sender, e.g. "gpuwarden <gpuwarden@example.com>".
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// SMTP user name, when the server wants a login (password from secret_env/file).
    pub username: Option<String>,
    /// Environment variable with the SMTP password.
    pub secret_env: Option<String>,
    /// File with the SMTP password.
    pub secret_file: Option<PathBuf>,
    /// Require STARTTLS (default true). Only turn off for a relay on the same host.
    pub starttls: Option<bool>,
    /// PEM file of CA certificates trusted for the server (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// Messages per minute (default 10).
    pub rate_limit_per_minute: Option<u32>,
}

impl EmailConfig {
    pub fn secret(&self) -> SecretRef {
        secret(&self.secret_env, &self.secret_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
external_url = "http://127.0.0.1:9470"
retry_initial = "500ms"

[sinks.am]
type = "alertmanager"
url = "http://127.0.0.1:9093"

[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:8080/hook"
secret_env = "HOOK_KEY"

[sinks.siem]
type = "syslog"
address = "127.0.0.1:514"
transport = "tcp"

[[routes]]
match = { min_severity = "critical", rules = ["xid.*"] }
sinks = ["am"]
continue = true

[[routes]]
sinks = ["hook", "siem"]
"#;

    #[test]
    fn example_parses_and_validates() {
        let c: NotifyConfig = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(c.sinks.len(), 3);
        assert!(c.routes[0].continue_matching);
        let s = c.settings().unwrap();
        assert_eq!(s.retry_initial, Duration::from_millis(500));
    }

    #[test]
    fn unknown_keys_are_rejected_in_sinks_and_routes() {
        let e = toml::from_str::<NotifyConfig>("[sinks.a]\ntype = \"webhook\"\nurl = \"x\"\nsecret = \"y\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("secret"), "{e}");
        let e = toml::from_str::<NotifyConfig>("[[routes]]\nsinks = []\nmatch = { severity = \"info\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("severity"), "{e}");
    }

    #[test]
    fn a_route_to_a_missing_sink_is_an_error() {
        let c: NotifyConfig = toml::from_str("[[routes]]\nsinks = [\"nope\"]\n").unwrap();
        assert!(c.settings().unwrap_err().to_string().contains("nope"));
    }

    #[test]
    fn the_claim_lease_defaults_above_the_timeout_and_must_exceed_it() {
        let c: NotifyConfig = toml::from_str("").unwrap();
        assert_eq!(c.settings().unwrap().claim_lease, Duration::from_secs(60));
        let c: NotifyConfig = toml::from_str("timeout = \"45s\"\n").unwrap();
        assert_eq!(c.settings().unwrap().claim_lease, Duration::from_secs(90));
        let c: NotifyConfig = toml::from_str("timeout = \"10s\"\nclaim_lease = \"5s\"\n").unwrap();
        let e = c.settings().unwrap_err().to_string();
        assert!(e.contains("claim_lease") && e.contains("timeout"), "{e}");
        let c: NotifyConfig = toml::from_str("timeout = \"1s\"\nclaim_lease = \"3s\"\n").unwrap();
        assert_eq!(c.settings().unwrap().claim_lease, Duration::from_secs(3));
    }
}
