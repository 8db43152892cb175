//! The scorer against NAB's own published numbers: fed Numenta HTM's per-row outputs at
//! the thresholds NAB used, it must give NAB's raw and normalised scores.
//!
//! Reads the corpus from `shared/data/numenta-NAB` beside the repository (CI has it);
//! skips with a message when it is absent rather than copying 32 MB into the repo.

use gpuwarden_anomaly::nab::{evaluate, sweep_best_threshold, Corpus, Profile};
use std::path::PathBuf;

fn corpus() -> Option<Corpus> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/numenta-NAB");
    if !root.join("labels/combined_windows.json").exists() {
        eprintln!(
            "SKIP: NAB corpus not found at {} (expected shared/ beside the repo)",
            root.display()
        );
        return None;
    }
    Some(Corpus::load(&root).expect("NAB corpus loads"))
}

#[test]
fn reproduces_numenta_htm_published_scores() {
    let Some(corpus) = corpus() else { return };
    assert_eq!(corpus.series.len(), 58);
    assert_eq!(corpus.series.iter().map(|s| s.values.len()).sum::<usize>(), 365_558);
    assert_eq!(corpus.series.iter().map(|s| s.windows.len()).sum::<usize>(), 116);
    assert_eq!(corpus.profiles, Profile::nab_defaults());

    let files = corpus.file_rows();
    let scores = corpus.published_scores("numenta").expect("HTM results load");
    // (profile, raw, normalised) from results/numenta/numenta_*_scores.csv Totals and
    // results/final_results.json.
    let expected = [
        ("standard", 46.634_450_197_1, 70.101_056_119_439_65),
        ("reward_low_FP_rate", 30.431_073, 63.116_841_602_198_28),
        ("reward_low_FN_rate", 26.634_450, 74.320_244_309_511_5),
    ];
    for (profile, raw, normalized) in expected {
        let p = corpus.profiles.iter().find(|p| p.name == profile).unwrap();
        let threshold = corpus.published_threshold("numenta", profile).unwrap();
        let r = evaluate(&files, &scores, p, Some(threshold));
        println!(
            "{profile}: θ={threshold} raw={:.6} normalised={:.3} tp={} fp={} fn={}",
            r.best.score, r.normalized, r.best.tp, r.best.fp, r.best.fn_
        );
        assert!(
            (r.best.score - raw).abs() < 1e-4,
            "{profile} raw {} != {raw}",
            r.best.score
        );
        assert!(
            (r.normalized - normalized).abs() < 1e-3,
            "{profile} normalised {} != {normalized}",
            r.normalized
        );
    }

    // Row counts of the standard profile's Totals row.
    let p = &corpus.profiles[0];
    let r = evaluate(&files, &scores, p, Some(0.542_187_690_735));
    assert_eq!((r.best.tp, r.best.fp, r.best.fn_), (240, 153, 33_255));

    // NAB's own sweep: the standard optimum is the published threshold; for low-FP the
    // exhaustive sweep finds a slightly better threshold than NAB's stale one (63.21).
    let best = sweep_best_threshold(&files, &scores, p);
    assert!((best.score - 46.634_450).abs() < 1e-4, "standard sweep {best:?}");
    let low_fp = &corpus.profiles[1];
    let swept = evaluate(&files, &scores, low_fp, None);
    println!(
        "low-FP sweep: θ={} normalised={:.3}",
        swept.best.threshold, swept.normalized
    );
    assert!(swept.best.score >= 30.431_073 - 1e-6);
    assert!(
        (swept.normalized - 63.21).abs() < 0.01,
        "low-FP sweep {}",
        swept.normalized
    );
}

/// NAB's reference baseline, re-implemented in `gpuwarden_anomaly::baseline`: run on the
/// corpus and scored here, it must give NAB's published windowed-Gaussian row
/// (39.6 / 20.9 / 47.4) — so the baseline `bench nab` prints beside our detector on other
/// corpora is NAB's, not an approximation of it.
#[test]
fn windowed_gaussian_reproduces_its_published_scores() {
    use gpuwarden_anomaly::baseline::{as_nab_stores_it, WindowedGaussian};
    let Some(corpus) = corpus() else { return };
    let files = corpus.file_rows();
    let scores: Vec<Vec<f64>> = corpus
        .series
        .iter()
        .map(|s| {
            let mut d = WindowedGaussian::default();
            s.values.iter().map(|&v| as_nab_stores_it(d.update(v))).collect()
        })
        .collect();
    // results/final_results.json, and the Totals rows of results/windowedGaussian/*_scores.csv.
    let expected = [
        ("standard", 39.649_523_496_077_585, -24.013_105_489_1),
        ("reward_low_FP_rate", 20.867_985_824_741_38, f64::NAN),
        ("reward_low_FN_rate", 47.410_027_158_304_6, f64::NAN),
    ];
    for (profile, normalized, raw) in expected {
        let p = corpus.profiles.iter().find(|p| p.name == profile).unwrap();
        let at_published = evaluate(&files, &scores, p, Some(1.0));
        let swept = evaluate(&files, &scores, p, None);
        println!(
            "{profile}: at θ=1.0 normalised {:.3} raw {:.6} (tp {} fp {}); swept θ={} normalised {:.3}",
            at_published.normalized,
            at_published.best.score,
            at_published.best.tp,
            at_published.best.fp,
            swept.best.threshold,
            swept.normalized
        );
        assert!(
            (at_published.normalized - normalized).abs() < 1e-3,
            "{profile}: {} != published {normalized}",
            at_published.normalized
        );
        if raw.is_finite() {
            assert!(
                (at_published.best.score - raw).abs() < 1e-4,
                "{profile} raw {}",
                at_published.best.score
            );
            // Rows detected in and out of windows: NAB's Totals row says 521 and 409.
            assert_eq!((at_published.best.tp, at_published.best.fp), (521, 409));
        }
        // NAB's sweep chose 1.0 for every profile; ours must not do worse.
        assert!(swept.best.score >= at_published.best.score - 1e-9);
    }
}
