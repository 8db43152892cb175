//! Streaming anomaly detection for gpuwarden, and the Numenta Anomaly Benchmark (NAB)
//! scorer used to measure it.

pub mod nab;
pub mod series;

pub use series::{AnomalyScore, ConfigError, ScoreNote, SeriesConfig, SeriesDetector};
