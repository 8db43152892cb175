//! Errors of manual incident operations (acknowledge, resolve), worded for API users.

use gpuwarden_model::IncidentState;

/// Why an acknowledge or resolve was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IncidentError {
    #[error("incident {id} not found")]
    NotFound { id: String },
    #[error("incident {id} cannot go from {} to {}", from.as_str(), to.as_str())]
    InvalidTransition {
        id: String,
        from: IncidentState,
        to: IncidentState,
    },
}
