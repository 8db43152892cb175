//! Notifications and SIEM delivery: every notable incident transition (and security
//! findings delivered on their own) goes through routes and silences into a durable
//! outbox, and from there to each matched sink, with retries, until it is delivered or
//! marked failed.
//!
//! ```text
//! IncidentChange ──► message::Notification ──► route::Router ──► silence::Silences
//!   (pipeline's        (one payload for          (first match,     (held back, still
//!    IncidentSink)      every sink)               `continue`)       recorded)
//!                                                      │
//!                                                      ▼
//!                         outbox::Outbox (CRC-framed log, fsync before send,
//!                                         transition sequence → delivery key)
//!                                                      │  one task per sink
//!                                                      ▼
//!                         dispatch: order, rate limit, backoff + jitter, give-up
//!                                                      │
//!                                                      ▼
//!        sinks::{alertmanager, webhook, slack, teams, pagerduty, syslog (CEF),
//!                splunk, elastic / ecs_file, email}
//! ```
//!
//! Exactly once from the receiver's point of view: each (transition × sink) is one
//! outbox entry with a delivery key (`inc-000042#3`) that receivers can dedupe on; an
//! entry is sent until acknowledged, and marked delivered durably once it was.

pub mod config;
pub mod dispatch;
pub mod error;
pub mod matcher;
pub mod message;
pub mod metrics;
pub mod outbox;
pub mod route;
pub mod secret;
pub mod silence;
pub mod sinks;

pub use config::{NotifyConfig, SinkConfig};
pub use dispatch::{EntryView, NamespaceLookup, Notifier, SinkStatus};
pub use error::NotifyError;
pub use matcher::Matchers;
pub use message::{Notification, Status, Transition};
pub use silence::{Confinement, NewSilence, Silence, SilenceError, SilenceLimits, SilenceState};
pub use sinks::{Sink, SinkError};
