//! gpuwarden host agent: collects on a GPU host and pushes batches to `gpuwarden serve`.
//!
//! The flow on a host is `source → Batch → Spool (disk, fsync) → Pusher (HTTP)`:
//!
//! - [`wire`]: the batch format both ends agree on (JSON; documented in `docs/deploy.md`),
//!   with its idempotency id and the validation the server applies.
//! - [`spool`]: a bounded, durable directory of batches not yet acknowledged by the server.
//!   A batch is on disk before the first push is tried, so a crash or a server outage
//!   loses nothing until the bound is reached; then the oldest batch is dropped and
//!   counted.
//! - [`push`]: one HTTP(S) push with a bearer token; tells apart "stored", "already
//!   stored" (a retry after a lost response), "retry later" and "never accepted".
//! - [`drain`]: the loop that empties the spool oldest-first with bounded back-off.
//!
//! Collection itself (NVML, kernel log, a local dcgm-exporter) lives in
//! `gpuwarden-collect`; the binary wires it to this crate.

pub mod drain;
pub mod push;
pub mod spool;
pub mod wire;

pub use push::{PushError, PushOutcome, PushTls, Pusher};
pub use spool::{Spool, SpoolError, SpoolLimits};
pub use wire::{Batch, BatchId, WireError, WirePage};
