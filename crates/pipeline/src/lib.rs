//! The pipeline between sources and everything downstream.
//!
//! A scrape outcome goes through [`ingest::Ingestor`]: samples and events are written to
//! the [`Store`](gpuwarden_store::Store), the last-XID gauge is turned into XID events,
//! and the [`live::LiveFleet`] — the in-memory view the API reads — learns which GPUs
//! are fresh and which are stale. Staleness lives here, at the one place that sees every
//! scrape, so no later stage can mistake missing data for healthy data.

pub mod admission;
pub mod analyze;
pub mod changed;
pub mod ingest;
pub mod live;
pub mod metrics;
pub mod targets;

pub use admission::{IngestLimits, Refusal};
pub use analyze::{Analysis, AnalysisError, IncidentSink, Restored};
pub use ingest::Ingestor;
pub use live::{GpuPage, GpuRef, GpuView, LiveFleet, Staleness, TargetIngestState};
pub use metrics::PipelineMetrics;
