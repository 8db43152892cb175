//! Errors of the failure predictor.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("model: {0}")]
    Model(String),
    #[error("training: {0}")]
    Training(String),
    #[error("simulator: {0}")]
    Sim(#[from] gpuwarden_sim::SimError),
    #[error("store: {0}")]
    Store(#[from] gpuwarden_store::StoreError),
    #[error("no model loaded (run `gpuwarden train`)")]
    NoModel,
}
