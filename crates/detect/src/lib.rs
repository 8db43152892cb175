//! gpuwarden's health engine: the XID catalog, the health rules, and per-GPU and
//! per-node health scores with every deduction explained.
//!
//! - [`XidCatalog`]: what each XID code means and what to do (`catalog/xid.toml`).
//! - [`HealthRules`]: every threshold, from `rules/health.toml`, overridable from config.
//! - [`HealthEngine`]: fed rows and events, evaluated at data time; returns an
//!   [`Evaluation`] (GPU and node health, active findings).
//! - [`evaluate_snapshot`]: scores a single exporter page (no history).
//!
//! Pure and synchronous: no I/O, no clock, no async runtime. Stale or missing data is
//! always `unknown`, never healthy.

pub mod catalog;
pub mod checks;
pub mod cohort;
pub mod engine;
pub mod error;
pub mod hit;
pub mod limits;
pub mod measured;
pub mod rules;
pub mod score;
pub mod snapshot;
pub mod state;
pub mod throttle;
pub mod window;
pub mod xid;

pub use catalog::{Cause, XidCatalog, XidEntry};
pub use engine::{Evaluation, GpuHealth, HealthEngine, NodeHealth};
pub use error::DetectError;
pub use hit::Deduction;
pub use rules::HealthRules;
pub use snapshot::evaluate_snapshot;
