//! Failure prediction: will this GPU suffer a hard failure in the next 24 hours?
//!
//! - [`failure`]: what a hard failure is (the label).
//! - [`features`]: per-GPU sliding-window features, incremental and bounded; the one
//!   code path for training and live scoring.
//! - [`dataset`]: histories (simulated or from the store) replayed through the features,
//!   and the labeler.
//! - [`model`]: the perpetual GBDT, its versioned JSON file, explanations.
//! - [`train`]: the time-split training procedure; [`eval`]: held-out evaluation with
//!   baselines and lead times.
//! - [`live`]: the analyzer that scores every GPU every period, and the shared
//!   [`live::Predictor`] the API reads.

pub mod dataset;
mod error;
pub mod eval;
pub mod failure;
pub mod features;
pub mod live;
pub mod metrics;
pub mod model;
pub mod train;

pub use error::PredictError;
pub use live::{PredictConfig, Prediction, PredictionAnalyzer, Predictor, RiskBand, PROBABILITY_FIELD};
pub use model::FailureModel;
