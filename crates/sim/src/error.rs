//! Errors of the simulator core and service.

use gpuwarden_model::{FaultKind, GpuUuid};

/// What can go wrong building, serving or injecting into a fleet.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator config: {0}")]
    InvalidConfig(String),
    #[error("no simulated GPU with UUID {0}")]
    GpuNotFound(GpuUuid),
    #[error("fault {kind} is already active on GPU {gpu}")]
    AlreadyActive { gpu: GpuUuid, kind: FaultKind },
    #[error("fault {kind} cannot be injected on GPU {gpu}: {reason}")]
    NotApplicable {
        gpu: GpuUuid,
        kind: FaultKind,
        reason: &'static str,
    },
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
