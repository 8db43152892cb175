//! Time as milliseconds since the Unix epoch, and an injectable clock.
//!
//! Analyzers and the simulator take a [`Clock`] instead of reading the system time so
//! that tests and `--speed` runs can move time themselves.

/// Milliseconds since 1970-01-01T00:00:00Z (UTC). Same unit as Prometheus timestamps.
pub type TimestampMs = i64;

/// A source of "now".
pub trait Clock: Send + Sync {
    /// The current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> TimestampMs;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> TimestampMs {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as TimestampMs)
            .unwrap_or(0)
    }
}
