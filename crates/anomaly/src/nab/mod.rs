//! Numenta Anomaly Benchmark (NAB v1.1) scoring, re-implemented so that `gpuwarden bench
//! nab` can score our detector without Python.
//!
//! The method (see `shared/reference/nab-scoring.md`): each labelled anomaly window
//! rewards its earliest detection with a scaled sigmoid of how early it came, every
//! detection outside a window costs a false-positive weight that fades in just after a
//! window, a missed window costs `A_FN`; one threshold per profile is chosen to maximise
//! the corpus-wide total, which is then normalised between the null detector (0) and a
//! perfect one (100).
//!
//! The scorer is checked against Numenta HTM's published per-row outputs (raw 46.634450,
//! normalised 70.101 on the standard profile) in `tests/nab_conformance.rs`.
//!
//! Layout: [`profile`] (cost matrices), [`corpus`] (reading the NAB directory: series,
//! windows, published results; the only file I/O in this crate), [`sweep`] (row weights
//! and the threshold sweep), [`time`] (timestamp parsing without a date crate).

pub mod corpus;
pub mod profile;
pub mod sweep;
pub mod time;

pub use corpus::{Corpus, NabError, Series, Window};
pub use profile::Profile;
pub use sweep::{
    evaluate, scaled_sigmoid, score_at_threshold, sweep_best_threshold, FileRows, ProfileResult, RowClass,
    ThresholdScore,
};
