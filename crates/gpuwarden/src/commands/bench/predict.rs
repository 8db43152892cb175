//! `gpuwarden bench predict`: the failure predictor on held-out simulated histories
//! (seeds training never used) against a rule baseline and random, lead times, and the
//! cost of scoring a 10,000-GPU fleet once.

use super::machine_line;
use crate::cli::BenchPredictArgs;
use anyhow::{Context, Result};
use gpuwarden_detect::XidCatalog;
use gpuwarden_predict::dataset::SimHistory;
use gpuwarden_predict::eval::{evaluate, scoring_cost};
use gpuwarden_predict::live::models_dir;
use gpuwarden_predict::model::CURRENT_FILE;
use gpuwarden_predict::FailureModel;
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1}%", v * 100.0)
    } else {
        "n/a".into()
    }
}

pub fn predict(args: BenchPredictArgs) -> Result<ExitCode> {
    let path = models_dir(&args.data_dir).join(CURRENT_FILE);
    let load = || {
        FailureModel::load(&path).with_context(|| format!("loading {} (run `gpuwarden train` first)", path.display()))
    };
    let model = load()?;
    let catalog = XidCatalog::builtin();
    let step_ms = i64::try_from(args.step.as_millis()).unwrap_or(120_000);
    let histories: Vec<SimHistory> = args
        .seeds
        .iter()
        .map(|&seed| SimHistory {
            gpus: args.gpus,
            days: args.days,
            step_ms,
            seed,
            fault_rate_multiplier: args.fault_rate_multiplier,
            ..SimHistory::default()
        })
        .collect();
    let total_h = (args.days * 24.0).ceil() as u64 * histories.len() as u64;
    let pb = ProgressBar::new(total_h.max(1));
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {percent:>3}% {elapsed_precise} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message("held-out");
    let per = (args.days * 24.0).ceil() as u64;
    let report = evaluate(&model, &histories, &catalog, &mut |hi, d, _| {
        pb.set_position(hi as u64 * per + (d / 3_600_000) as u64)
    })?;
    pb.finish_and_clear();
    println!("# gpuwarden bench predict");
    println!("machine: {}", machine_line());
    println!(
        "model {} (trained on: {}); threshold {:.3}",
        model.meta.version, model.meta.training.source, model.meta.threshold
    );
    println!(
        "held-out: seeds {:?}, {} GPUs in all, {} days each, step {} s, fault rate ×{}; {} scored GPU-times (every 10 min), {} hard failures ({} with a simulated precursor, {} of a board back from a repair)",
        report.seeds, report.gpus, args.days, step_ms / 1000, args.fault_rate_multiplier, report.rows, report.failures, report.failures_warned, report.failures_repeat
    );
    println!();
    println!("| scorer | ROC-AUC | PR-AUC | precision | recall | ≥1 h ahead | ≥6 h ahead | ≥1 h ahead (with precursor) | ≥6 h ahead (with precursor) | ROC-AUC before a GPU's first failure |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for s in &report.scorers {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {:.3} |",
            s.name,
            s.metrics.roc_auc,
            s.metrics.pr_auc,
            s.metrics.precision,
            s.metrics.recall,
            pct(s.lead_1h),
            pct(s.lead_6h),
            pct(s.lead_1h_warned),
            pct(s.lead_6h_warned),
            s.roc_auc_before_first_failure
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if args.scoring_gpus > 0 {
        let cost = scoring_cost(load()?, args.scoring_gpus, 6.0, &catalog)?;
        println!();
        println!(
            "scoring {} GPUs once (features + probabilities + explanations + findings, one thread): {:.0} ms wall, {:.0} ms CPU, {:.1} µs CPU per GPU ({:.3}% of a 5-minute period); {} findings",
            cost.gpus,
            cost.wall_ms,
            cost.cpu_ms,
            cost.cpu_us_per_gpu,
            cost.wall_ms / 300_000.0 * 100.0,
            cost.findings
        );
    }
    Ok(ExitCode::SUCCESS)
}
