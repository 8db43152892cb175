//! Development loop for the detector: scores the whole corpus and both halves (even-indexed
//! files select, odd-indexed files check) for the default config, optionally with a JSON
//! `SeriesConfig` in `$NAB_CFG`; with `NAB_CMP=detector` also prints per-file standard raw
//! scores next to a published detector's.

mod common;

use gpuwarden_anomaly::nab::{evaluate, Corpus};
use gpuwarden_anomaly::SeriesDetector;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data/numenta-NAB".into());
    let corpus = Corpus::load(&dir)?;
    let cfg = common::config_from_env()?;
    let files = corpus.file_rows();
    let n: usize = corpus.series.iter().map(|s| s.values.len()).sum();
    let t0 = Instant::now();
    let scores = common::score_corpus(&corpus, &cfg, |a| a.score);
    let el = t0.elapsed();
    let scores: Vec<Vec<f64>> = match std::env::var("NAB_REST") {
        Ok(v) => {
            let mut it = v.split(',').map(|x| x.parse::<f64>().unwrap());
            let (r, base) = (it.next().unwrap() as usize, it.next().unwrap());
            scores
                .iter()
                .map(|s| {
                    (0..s.len())
                        .map(|i| {
                            let lo = i.saturating_sub(r);
                            if s[lo..i].iter().any(|&x| x >= base) {
                                0.0
                            } else {
                                s[i]
                            }
                        })
                        .collect()
                })
                .collect()
        }
        Err(_) => scores,
    };
    for p in &corpus.profiles {
        let r = evaluate(&files, &scores, p, None);
        println!(
            "{:20} all {:6.2} even {:6.2} odd {:6.2}  θ={:.4} tp={} fp={}",
            p.name,
            r.normalized,
            common::half_score(&files, &scores, 0, p),
            common::half_score(&files, &scores, 1, p),
            r.best.threshold,
            r.best.tp,
            r.best.fp
        );
    }
    let bytes = SeriesDetector::new(cfg.clone())?.memory_bytes();
    println!(
        "{:.0} ns/sample (incl. scoring loop), {bytes} bytes/series",
        el.as_nanos() as f64 / n as f64
    );
    if let Ok(det) = std::env::var("NAB_CMP") {
        let other = corpus.published_scores(&det)?;
        let p = &corpus.profiles[0];
        let a = evaluate(&files, &scores, p, None);
        let b = evaluate(&files, &other, p, None);
        println!("{det}: {:.2} θ={}", b.normalized, b.best.threshold);
        for ((f, x), y) in files.iter().zip(&a.per_file).zip(&b.per_file) {
            println!("  ours {x:7.3}  {det} {y:7.3}  {}w {}", f.scored_windows, f.name);
        }
    }
    Ok(())
}
