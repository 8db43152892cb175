//! gpuwarden's fleet simulator.
//!
//! It serves one dcgm-exporter-format `/metrics` endpoint per simulated node, so the
//! rest of gpuwarden scrapes it exactly as it would scrape real exporters, and it keeps
//! ground-truth [`FaultLabel`]s for every fault it plays so that detectors can be scored.
//!
//! - [`Fleet`]: the pure, synchronous core (no I/O, no clock), also driven directly by
//!   benchmarks.
//! - [`Simulator::start`] / [`SimHandle`]: the running service, one listener per node.
//! - [`control_router`]: the `/api/v1/simulation/*` routes the API server merges.
//!
//! See `docs/simulator.md` for the models, workloads, fault library and calibration.

pub mod api;
pub mod calibration;
pub mod config;
pub mod error;
pub mod faults;
pub mod fleet;
pub mod gpu;
pub mod models;
pub mod render;
pub mod server;
pub mod workload;

pub use api::control_router;
pub use config::SimConfig;
pub use error::SimError;
pub use fleet::{Fleet, GpuInfo};
pub use gpuwarden_model::{FaultKind, FaultLabel, GpuUuid};
pub use models::{GpuModel, ModelShare};
pub use server::{SimHandle, Simulator};
