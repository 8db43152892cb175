//! Trains on a simulated history and evaluates on held-out seeds without the `gpuwarden`
//! binary (what `gpuwarden train` + `gpuwarden bench predict` do), for quick iterations:
//! `cargo run --release -p gpuwarden-predict --example train_eval -- GPUS DAYS [EVAL_GPUS [BUDGET]]`.

use gpuwarden_detect::XidCatalog;
use gpuwarden_predict::dataset::{replay_sim, SimHistory};
use gpuwarden_predict::eval::{evaluate, scoring_cost};
use gpuwarden_predict::model::TrainOptions;
use gpuwarden_predict::train::{fit_time_split, labeler};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let gpus: usize = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let days: f64 = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(30.0);
    let eval_gpus: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(256);
    let budget: f32 = a.get(4).and_then(|s| s.parse().ok()).unwrap_or(0.5);
    let catalog = XidCatalog::builtin();
    let h = SimHistory {
        gpus,
        days,
        ..SimHistory::default()
    };
    let t0 = std::time::Instant::now();
    let mut lab = labeler();
    let outcome = replay_sim(&h, &catalog, &mut |_, _| {}, &mut |s, f| lab.observe(s, f))?;
    println!(
        "sim {:.1}s: {} rows, {} pos, {} failures",
        t0.elapsed().as_secs_f64(),
        lab.data.len(),
        lab.data.y.iter().filter(|y| **y).count(),
        outcome.failures.len()
    );
    if std::env::var("DEBUG_FEATURES").is_ok() {
        let n = gpuwarden_predict::features::feature_count();
        let names = gpuwarden_predict::features::feature_names();
        for (j, name) in names.iter().enumerate() {
            let (mut sp, mut cp, mut sn, mut cn) = (0.0, 0.0, 0.0, 0.0);
            for i in 0..lab.data.len() {
                let v = lab.data.x[i * n + j];
                if !v.is_finite() {
                    continue;
                }
                if lab.data.y[i] {
                    sp += v;
                    cp += 1.0;
                } else {
                    sn += v;
                    cn += 1.0;
                }
            }
            println!("{name:40} pos {:10.3} neg {:10.3}", sp / cp, sn / cn);
        }
    }
    let mut model = fit_time_split(
        &lab.data,
        &outcome,
        "example".into(),
        TrainOptions {
            budget,
            ..TrainOptions::default()
        },
    )?;
    {
        let raw = model.raw(&lab.data.x, lab.data.len());
        let (mn, mx) = raw
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
        println!(
            "raw range {mn} {mx} calib {:?} nan {}",
            model.meta.calibration,
            raw.iter().filter(|v| v.is_nan()).count()
        );
    }
    let dir = std::env::temp_dir().join("gpuwarden-predict-example");
    model.save(&dir, 0)?;
    println!("{:#?}", model.meta.training);
    let hs: Vec<SimHistory> = [1001, 1002]
        .iter()
        .map(|&seed| SimHistory {
            gpus: eval_gpus,
            days,
            seed,
            ..SimHistory::default()
        })
        .collect();
    let r = evaluate(&model, &hs, &catalog, &mut |_, _, _| {})?;
    println!("rows {} failures {} warned {}", r.rows, r.failures, r.failures_warned);
    for s in &r.scorers {
        println!(
            "{:40} roc {:.3} pr {:.3} p {:.3} r {:.3} 1h {:.3} 6h {:.3} 1hw {:.3} 6hw {:.3}",
            s.name,
            s.metrics.roc_auc,
            s.metrics.pr_auc,
            s.metrics.precision,
            s.metrics.recall,
            s.lead_1h,
            s.lead_6h,
            s.lead_1h_warned,
            s.lead_6h_warned
        );
    }
    let c = scoring_cost(model, 10_000, 2.0, &catalog)?;
    println!("{c:?}");
    Ok(())
}
