//! What the NAB development examples share: the detector configuration they run
//! (`$NAB_CFG`), scoring the whole corpus with it, and the two-fold split (even-indexed
//! files select, odd-indexed files check). Not an example itself: Cargo only builds
//! `examples/*.rs` and `examples/*/main.rs`.
#![allow(dead_code)] // each example uses a part

use gpuwarden_anomaly::nab::{evaluate, Corpus, FileRows, Profile};
use gpuwarden_anomaly::{AnomalyScore, SeriesConfig, SeriesDetector};

/// `SeriesConfig::default()`, or the JSON configuration in `$NAB_CFG`.
pub fn config_from_env() -> Result<SeriesConfig, serde_json::Error> {
    match std::env::var("NAB_CFG") {
        Ok(s) => serde_json::from_str(&s),
        Err(_) => Ok(SeriesConfig::default()),
    }
}

/// Every series of the corpus through a fresh detector, `score` picking the number kept
/// from each update; one vector per series, in corpus order.
pub fn score_corpus(corpus: &Corpus, cfg: &SeriesConfig, score: impl Fn(&AnomalyScore) -> f64) -> Vec<Vec<f64>> {
    corpus
        .series
        .iter()
        .map(|s| {
            let mut d = SeriesDetector::new(cfg.clone()).expect("valid config");
            s.timestamps
                .iter()
                .zip(&s.values)
                .map(|(&t, &v)| score(&d.update(t, v)))
                .collect()
        })
        .collect()
}

/// The normalised score of `profile` on one half of the files: `half` 0 takes the
/// even-indexed files, 1 the odd-indexed ones.
pub fn half_score(files: &[FileRows], scores: &[Vec<f64>], half: usize, profile: &Profile) -> f64 {
    let (f, s): (Vec<FileRows>, Vec<Vec<f64>>) = files
        .iter()
        .zip(scores)
        .enumerate()
        .filter(|(i, _)| i % 2 == half)
        .map(|(_, (f, s))| (f.clone(), s.clone()))
        .unzip();
    evaluate(&f, &s, profile, None).normalized
}
