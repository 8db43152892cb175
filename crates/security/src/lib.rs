//! gpuwarden's security detections: a declarative rule pack for GPU abuse, mapped to
//! MITRE ATT&CK, and the engine that runs it.
//!
//! - [`Catalog`]: one TOML file per rule (`crates/security/rules/`), embedded: id,
//!   severity, action, MITRE techniques, inputs, condition, thresholds with defaults and
//!   reasons, risk if missing, response playbook, SIEM queries. Overridable from the
//!   config's `[security.rules]`.
//! - [`SecurityConfig`] / [`Policy`]: approved namespaces and accounts, business hours,
//!   allowlist, driver floor, golden baseline.
//! - [`SecurityEngine`]: implements [`gpuwarden_model::Analyzer`]; register it with the
//!   pipeline's analysis stage and its findings become incidents.
//! - [`docs`] and [`prometheus`]: the generated detection docs and the Prometheus
//!   alerting rules for users without gpuwarden in the loop.
//!
//! Pure and synchronous: no I/O, no clock (time is data time, passed in), bounded memory
//! per GPU. Missing or stale data is never treated as clean.

pub mod catalog;
pub mod config;
pub mod docs;
pub mod engine;
pub mod error;
pub mod features;
pub mod finding;
pub mod policy;
pub mod prometheus;
pub mod rules;
#[cfg(feature = "sim")]
pub mod simbench;
pub mod state;

pub use catalog::{Catalog, Rule, RuleSpec, Technique};
pub use config::{NodeBaseline, SecurityConfig};
pub use engine::SecurityEngine;
pub use error::SecurityError;
pub use policy::{Approval, Policy};
