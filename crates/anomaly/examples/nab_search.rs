//! Development tool: random search of [`SeriesConfig`] knobs with a two-fold split of the
//! NAB corpus (even-indexed files select, odd-indexed files check), to see whether a
//! setting generalises or only fits the files it was chosen on. Prints the best configs.
//! Usage: `nab_search DIR TRIALS SEED [local]`; with `local`, each trial changes about a
//! fifth of the knobs of the configuration in `$NAB_CFG` (a local search around it).
//! `$NAB_SELECT` = `even` (default), `odd` or `all` picks the files the best configs are
//! chosen on (sorted by); with `$NAB_NOBASE` set, trial 0 is random too, so a random search
//! does not start from the current defaults (for a held-out check of the procedure); with
//! `$NAB_ALL` set, every trial is printed (`T even odd all config`).

mod common;

use gpuwarden_anomaly::nab::{evaluate, Corpus};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let corpus = Corpus::load(&args[1])?;
    let trials: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let local = args.get(4).is_some_and(|s| s == "local");
    let mut seed: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let files = corpus.file_rows();
    let std_p = corpus.profiles.iter().find(|p| p.name == "standard").unwrap().clone();
    let select = std::env::var("NAB_SELECT").unwrap_or_else(|_| "even".into());
    let key = |x: &(f64, f64, f64, String)| match select.as_str() {
        "odd" => x.1,
        "all" => x.2,
        _ => x.0,
    };
    let nobase = std::env::var("NAB_NOBASE").is_ok();
    let mut best: Vec<(f64, f64, f64, String)> = Vec::new();
    for trial in 0..trials {
        let base = common::config_from_env()?;
        let mut c = base.clone();
        if trial > 0 || nobase {
            let pick = |r: f64, opts: &[f64]| opts[((r * opts.len() as f64) as usize).min(opts.len() - 1)];
            c.level_halflife = pick(rnd(), &[8.0, 16.0, 24.0, 48.0, 96.0]);
            c.spread_halflife = pick(rnd(), &[100.0, 200.0, 400.0, 1000.0]);
            c.shift_samples = pick(rnd(), &[6.0, 12.0, 24.0, 48.0]) as u32;
            c.diff_weight = pick(rnd(), &[0.0, 0.25, 0.5, 1.0]);
            c.short_window = pick(rnd(), &[1.0, 2.0, 3.0, 4.0]) as usize;
            c.long_halflife = pick(rnd(), &[1000.0, 2000.0, 3000.0, 5000.0, 10000.0]);
            c.rest_halflife = pick(rnd(), &[0.0, 100.0, 300.0, 600.0, 1500.0]);
            c.score_decades = pick(rnd(), &[2.0, 3.0, 4.0, 5.0]);
            c.shape_len = pick(rnd(), &[0.0, 3.0, 4.0, 5.0, 6.0]) as usize;
            c.shape_levels = pick(rnd(), &[8.0, 12.0, 16.0, 24.0]) as u32;
            c.shape_weight = pick(rnd(), &[0.5, 1.0, 2.0, 3.0, 5.0]);
            c.clip_spreads = pick(rnd(), &[3.0, 4.0, 6.0]);
            c.slow_halflife = pick(rnd(), &[0.0, 0.0, 10.0, 30.0, 100.0]);
            c.hold_samples = pick(rnd(), &[0.0, 50.0, 100.0, 150.0, 200.0, 300.0, 500.0]) as u32;
            c.hold_level = pick(rnd(), &[0.4, 0.45, 0.5, 0.55, 0.6]);
            c.warmup_samples = pick(rnd(), &[10.0, 30.0, 100.0]) as u32;
            c.seasonal_alpha = pick(rnd(), &[0.05, 0.1, 0.2]);
            c.rest_damping = pick(rnd(), &[0.3, 0.5, 0.7]);
            c.hold_extend = rnd() < 0.5;
            if local {
                // Keep most knobs of the base: each changed knob survives with p = 0.25.
                let fresh = c.clone();
                c = base.clone();
                let mut v = serde_json::to_value(&c)?;
                let f = serde_json::to_value(&fresh)?;
                for (k, x) in f.as_object().unwrap() {
                    if rnd() < 0.2 {
                        v[k] = x.clone();
                    }
                }
                c = serde_json::from_value(v)?;
            }
        }
        let scores = common::score_corpus(&corpus, &c, |a| a.score);
        let (a, b) = (
            common::half_score(&files, &scores, 0, &std_p),
            common::half_score(&files, &scores, 1, &std_p),
        );
        let all = evaluate(&files, &scores, &std_p, None).normalized;
        if std::env::var("NAB_ALL").is_ok() {
            println!("T {a:.2} {b:.2} {all:.2} {}", serde_json::to_string(&c)?);
        }
        best.push((a, b, all, serde_json::to_string(&c)?));
        best.sort_by(|x, y| key(y).total_cmp(&key(x)));
        best.truncate(8);
        if trial % 20 == 0 {
            eprintln!(
                "trial {trial}: best A {:.2} B {:.2} all {:.2}",
                best[0].0, best[0].1, best[0].2
            );
            println!(
                "A {:.2} B {:.2} all {:.2} {}",
                best[0].0, best[0].1, best[0].2, best[0].3
            );
        }
    }
    for (a, b, all, c) in best {
        println!("A {a:.2} B {b:.2} all {all:.2} {c}");
    }
    Ok(())
}
