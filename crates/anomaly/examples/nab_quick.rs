//! Development loop: runs [`SeriesDetector`] with default settings (overridable by a JSON
//! `SeriesConfig` in `$NAB_CFG`) over the NAB corpus and prints the three profile scores.
//! `gpuwarden bench nab` is the user-facing command; this one skips the binary's build.

mod common;

use gpuwarden_anomaly::nab::{evaluate, Corpus};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/data/numenta-NAB".into());
    let corpus = Corpus::load(&dir)?;
    let cfg = common::config_from_env()?;
    let files = corpus.file_rows();
    let raw = std::env::var("NAB_RAW").is_ok();
    let scores = common::score_corpus(&corpus, &cfg, |a| {
        if raw {
            a.surprise / (1.0 + a.surprise)
        } else {
            a.score
        }
    });
    if std::env::var("NAB_STATS").is_ok() {
        for (s, sc) in corpus.series.iter().zip(&scores) {
            let mut v = sc.clone();
            v.sort_by(f64::total_cmp);
            let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
            println!(
                "{:55} p50={:.3} p90={:.3} p99={:.3} max={:.3}",
                s.name,
                q(0.5),
                q(0.9),
                q(0.99),
                q(1.0)
            );
        }
    }
    let verbose = std::env::var("NAB_VERBOSE").is_ok();
    for p in &corpus.profiles {
        let r = evaluate(&files, &scores, p, None);
        println!(
            "{:20} {:7.2}  θ={:.5} raw={:.2} tp={} fp={}",
            p.name, r.normalized, r.best.threshold, r.best.score, r.best.tp, r.best.fp
        );
        if verbose && p.name == "standard" {
            for (f, s) in files.iter().zip(&r.per_file) {
                println!("   {:8.3} {}/{} {}", s, f.scored_windows, f.labelled_windows, f.name);
            }
        }
    }
    Ok(())
}
