//! What changed in an incident at one engine call, so the caller can persist every
//! change but notify only the ones people care about.

use gpuwarden_model::Incident;
use serde::Serialize;

/// One reason an incident was returned as changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A new incident.
    Opened,
    /// Severity or recommended action went up.
    Escalated,
    /// The condition came back while the incident was still active (a flap).
    Flapped,
    /// A resolved incident became open again (flap after resolution, or still present
    /// after the manual-resolution grace).
    Reopened,
    /// The condition is absent at this evaluation (the incident stays active until
    /// auto-resolution).
    Cleared,
    Acknowledged,
    Resolved,
    /// Only bookkeeping moved (last seen, finding count): persist, do not notify.
    Refreshed,
}

impl ChangeKind {
    /// Worth a notification (not mere bookkeeping).
    pub const fn is_notable(self) -> bool {
        !matches!(self, ChangeKind::Refreshed | ChangeKind::Cleared)
    }
}

/// An incident as it is after the call, with why it was returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentChange {
    pub incident: Incident,
    /// At least one reason; several when e.g. a flap also escalated.
    pub kinds: Vec<ChangeKind>,
}

impl IncidentChange {
    /// True when any reason is worth a notification.
    pub fn is_notable(&self) -> bool {
        self.kinds.iter().any(|k| k.is_notable())
    }
}
