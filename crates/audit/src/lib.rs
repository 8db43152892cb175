//! The audit trail: who changed what, when, from where, with what result — and every
//! denied request — in an append-only, hash-chained log under `<data_dir>/audit/`.
//!
//! - [`AuditLog`] appends records durably (fsync before the change is acknowledged),
//!   serialized across threads and processes, continuing the chain after a restart.
//! - [`AuditLog::best_effort`] records refused requests (and failed attempts) aggregated per window, so a flood of
//!   them cannot fill the disk or slow the API ([`denials`]).
//! - [`verify()`] finds modified, removed, inserted and reordered records.
//! - [`query()`] lists records, newest first, with filters.
//! - [`snapshot()`] copies a log consistently while it is written (backups).
//!
//! A CLI command records its own change like this:
//!
//! ```no_run
//! use gpuwarden_audit::{audit_dir, AuditLog, Entry, Outcome};
//! # fn main() -> Result<(), gpuwarden_audit::AuditError> {
//! # let data_dir = std::path::Path::new("./gpuwarden-data");
//! AuditLog::open(&audit_dir(data_dir))?.append(
//!     Entry::new("cli:alice", "token.create", Outcome::Ok)
//!         .role("admin")
//!         .client("cli")
//!         .target("tok-01J…")
//!         .detail("role operator, expires 2027-01-01"),
//! )?;
//! # Ok(()) }
//! ```

pub mod denials;
pub mod error;
pub mod log;
pub mod query;
pub mod record;
mod segments;
pub mod snapshot;
pub mod verify;

pub use denials::{AuditWriter, DenialLimits};
pub use error::AuditError;
pub use log::{audit_dir, AuditLog, AuditStats, Observer, Options};
pub use query::{query, Page, Query};
pub use record::{Entry, Outcome, Record, GENESIS};
pub use snapshot::snapshot;
pub use verify::{verify, Place, Problem, VerifyReport};

#[cfg(test)]
mod tests;
