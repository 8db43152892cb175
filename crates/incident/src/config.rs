//! The engine's configuration. Durations are data time, written as humantime strings
//! (`"10m"`, `"1h"`, `"90s"`) or integer milliseconds.

use crate::duration_serde;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How findings become incidents and when incidents resolve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentConfig {
    /// An incident resolves automatically once its condition has been absent (no finding
    /// with its dedup key) for this long. Default `10m`.
    #[serde(with = "duration_serde")]
    pub auto_resolve_after: Duration,

    /// A condition that returns within this long after its incident was resolved reopens
    /// the same incident (counted as a flap) instead of opening a new one. Default `30m`.
    #[serde(with = "duration_serde")]
    pub flap_window: Duration,

    /// Findings of severity `info` or `warning` must be present continuously this long
    /// before they open an incident (`critical` and `fatal` open at once). A flap or a
    /// reopen never waits. Default `0s` (open at once).
    #[serde(with = "duration_serde")]
    pub min_duration: Duration,

    /// After a manual resolve, a condition that is still (or again) present does not
    /// reopen the incident during this grace; after it, the incident reopens (same id,
    /// a flap) if the condition shows up within `flap_window` more. Default `30m`.
    #[serde(with = "duration_serde")]
    pub manual_resolve_grace: Duration,

    /// While only bookkeeping changes (last seen, finding count), an active incident is
    /// returned for persistence at most this often, so a restart does not see a stale
    /// `last_seen_ms`. Default `1m`.
    #[serde(with = "duration_serde")]
    pub refresh_interval: Duration,

    /// Most timeline entries kept per incident; beyond it the middle entries are dropped
    /// and replaced by one `truncated` note (the first and the latest are kept).
    /// Minimum 16. Default 200.
    pub max_timeline: usize,

    /// A correlation rule file (same format as the built-in `rules/correlation.toml`)
    /// that replaces the built-in rules: which findings share a cause and become one
    /// incident. Unset: the built-in rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_rules: Option<std::path::PathBuf>,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            auto_resolve_after: Duration::from_secs(10 * 60),
            flap_window: Duration::from_secs(30 * 60),
            min_duration: Duration::ZERO,
            manual_resolve_grace: Duration::from_secs(30 * 60),
            refresh_interval: Duration::from_secs(60),
            max_timeline: 200,
            correlation_rules: None,
        }
    }
}

/// The config in the engine's unit (ms of data time), computed once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub auto_resolve_after: i64,
    pub flap_window: i64,
    pub min_duration: i64,
    pub manual_resolve_grace: i64,
    pub refresh_interval: i64,
    pub max_timeline: usize,
}

impl From<&IncidentConfig> for Limits {
    fn from(c: &IncidentConfig) -> Self {
        let ms = duration_serde::as_ms;
        Limits {
            auto_resolve_after: ms(c.auto_resolve_after),
            flap_window: ms(c.flap_window),
            min_duration: ms(c.min_duration),
            manual_resolve_grace: ms(c.manual_resolve_grace),
            refresh_interval: ms(c.refresh_interval),
            // Below 16 the head/tail split of the truncation leaves too little history.
            max_timeline: c.max_timeline.max(16),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_toml() {
        let c = IncidentConfig::default();
        let text = toml::to_string(&c).expect("serialize");
        let back: IncidentConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, c);
    }

    #[test]
    fn durations_accept_humantime_strings_and_milliseconds() {
        let c: IncidentConfig = toml::from_str("auto_resolve_after = \"5m\"\nflap_window = 60000\n").expect("parse");
        assert_eq!(c.auto_resolve_after, Duration::from_secs(300));
        assert_eq!(c.flap_window, Duration::from_secs(60));
        assert_eq!(c.manual_resolve_grace, IncidentConfig::default().manual_resolve_grace);
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_rejected() {
        assert!(toml::from_str::<IncidentConfig>("auto_resolve = \"5m\"").is_err());
        assert!(toml::from_str::<IncidentConfig>("flap_window = \"soon\"").is_err());
        assert!(toml::from_str::<IncidentConfig>("flap_window = -5").is_err());
    }
}
