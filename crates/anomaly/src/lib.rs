//! Streaming anomaly detection for gpuwarden, and the Numenta Anomaly Benchmark (NAB)
//! scorer used to measure it.
//!
//! [`series`]: one detector per (GPU, field), scored on NAB; [`cohort`]: each GPU against
//! its peers at the same instant; [`analyzer`]: both run on GPU telemetry as a
//! `gpuwarden_model::Analyzer`, producing grouped `anomaly.*` findings. [`baseline`]:
//! NAB's reference detectors, run beside ours so every benchmark figure has its baseline.

pub mod analyzer;
pub mod baseline;
pub mod cohort;
pub mod nab;
pub mod series;

pub use analyzer::{AnomalyAnalyzer, AnomalyConfig};
pub use cohort::{CohortConfig, CohortDetector, CohortVerdict};
pub use series::{AnomalyScore, ConfigError, ScoreNote, SeriesConfig, SeriesDetector};
