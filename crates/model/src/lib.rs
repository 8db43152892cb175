//! gpuwarden's vocabulary, shared by every other crate.
//!
//! One meaning per word (see `ARCHITECTURE.md`): a **GPU** is identified by its UUID and
//! belongs to a **node**; a **sample** is one value of one field for one GPU at one time;
//! an **event** is something discrete (an XID, a GPU that vanished); a **fault label** is
//! the simulator's ground truth for scoring detectors.
//!
//! This crate depends on nothing of ours and does no I/O.

pub mod analyzer;
pub mod event;
pub mod fault;
pub mod field;
pub mod finding;
pub mod gpu;
pub mod health;
pub mod incident;
pub mod sample;
pub mod time;

pub use analyzer::Analyzer;
pub use event::{Event, EventKind};
pub use fault::{FaultKind, FaultLabel, UnknownFaultKind};
pub use field::{DcgmField, FieldName, FieldType};
pub use finding::{Action, Evidence, Finding, FindingKind, Severity};
pub use gpu::{GpuIdentity, GpuUuid, MigInstance, Workload};
pub use health::{Dimension, Freshness, HealthState};
pub use incident::{
    Contributor, Correlation, Incident, IncidentState, RelatedIncident, Resolution, RootCause, TimelineEntry,
};
pub use sample::{GpuSamples, Sample};
pub use time::{Clock, SystemClock, TimestampMs};
