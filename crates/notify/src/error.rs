//! Errors of building the notifier.

use crate::config::ConfigError;
use crate::outbox::OutboxError;
use crate::silence::SilenceError;
use crate::sinks::BuildError;

/// Why the notification subsystem could not start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Sink(#[from] BuildError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error(transparent)]
    Silences(#[from] SilenceError),
    #[error("no sink named '{0}' in [notify.sinks]")]
    UnknownSink(String),
    #[error(transparent)]
    Delivery(#[from] crate::sinks::SinkError),
}
