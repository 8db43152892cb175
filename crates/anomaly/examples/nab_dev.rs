//! Development loop for the detector: scores the whole corpus and both halves (even-indexed
//! files select, odd-indexed files check) for the default config, optionally with a JSON
//! `SeriesConfig` in `$NAB_CFG`; with `NAB_CMP=detector` also prints per-file standard raw
//! scores next to a published detector's.

use gpuwarden_anomaly::nab::{evaluate, Corpus};
use gpuwarden_anomaly::{SeriesConfig, SeriesDetector};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data/numenta-NAB".into());
    let corpus = Corpus::load(&dir)?;
    let cfg: SeriesConfig = match std::env::var("NAB_CFG") {
        Ok(s) => serde_json::from_str(&s)?,
        Err(_) => SeriesConfig::default(),
    };
    let files = corpus.file_rows();
    let t0 = Instant::now();
    let mut n = 0usize;
    let scores: Vec<Vec<f64>> = corpus
        .series
        .iter()
        .map(|s| {
            let mut d = SeriesDetector::new(cfg.clone()).expect("valid config");
            n += s.values.len();

            s.timestamps
                .iter()
                .zip(&s.values)
                .map(|(&t, &v)| d.update(t, v).score)
                .collect()
        })
        .collect();
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
    let half = |h: usize, p| {
        let f: Vec<_> = files
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == h)
            .map(|(_, f)| f.clone())
            .collect();
        let s: Vec<_> = scores
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == h)
            .map(|(_, s)| s.clone())
            .collect();
        evaluate(&f, &s, p, None).normalized
    };
    for p in &corpus.profiles {
        let r = evaluate(&files, &scores, p, None);
        println!(
            "{:20} all {:6.2} even {:6.2} odd {:6.2}  θ={:.4} tp={} fp={}",
            p.name,
            r.normalized,
            half(0, p),
            half(1, p),
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
