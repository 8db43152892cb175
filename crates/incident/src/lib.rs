//! The incident engine: turns the findings active at each evaluation into incidents
//! with a lifecycle (open → acknowledged → resolved).
//!
//! - Findings that share a cause are **correlated** ([`correlate`], rules in
//!   `rules/correlation.toml`): the thermal chain of a GPU, its memory-error chain, XID 79
//!   and the GPU vanishing are each one incident (`"{cause}@{gpu}"`, or
//!   `"{cause}@node:{node}"` when the cause shows on many GPUs of a node), naming the root
//!   cause and keeping every signal as a contributor. Other findings are grouped by a
//!   **dedup key** ([`dedup_key`]): `"{rule}@{gpu uuid}"`, or `"{rule}@node:{node}"` for
//!   node-level findings. At most one incident per key is active (open, acknowledged or
//!   clearing) at any time.
//! - An active incident whose condition is absent is **clearing** until it auto-resolves;
//!   a returning condition puts it back to open (or acknowledged).
//! - A condition that clears and comes back before auto-resolution is a **flap** of the
//!   same incident; one that comes back within the flap window after resolution
//!   **reopens** the same incident. Only after that window does a new incident open.
//! - Time is data time, passed in by the caller (`now_ms`); the engine never reads the
//!   system clock, so replays, simulations at `--speed` and tests behave the same.
//!
//! The engine is pure and synchronous: no I/O. The caller loads incidents from the store
//! at start ([`IncidentEngine::new`]) and persists what [`IncidentEngine::apply`],
//! [`IncidentEngine::acknowledge`] and [`IncidentEngine::resolve`] return.

mod change;
mod config;
pub mod correlate;
mod duration_serde;
mod engine;
mod error;
mod filter;
mod key;
mod timeline;

pub use change::{ChangeKind, IncidentChange};
pub use config::IncidentConfig;
pub use correlate::{CorrelationError, CorrelationRules};
pub use engine::{IncidentEngine, TECHNIQUES_LABEL};
pub use error::IncidentError;
pub use filter::IncidentFilter;
pub use key::dedup_key;
