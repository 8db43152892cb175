//! `gpuwarden bench security`: the security rule pack on labelled simulated fleets —
//! recall, precision, detection delay and false alarms per 1,000 GPU-hours per rule, and
//! detection per planted variant. The fleet, scenarios and scoring live in
//! `gpuwarden_security::simbench`; this prints them (as Markdown, for docs/benchmarks.md).

use crate::cli::BenchSecurityArgs;
use anyhow::{bail, Result};
use gpuwarden_security::simbench::{max_s, median_s, run, BenchConfig};
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;
use std::time::Instant;

fn secs(x: Option<f64>) -> String {
    x.map(|s| format!("{s:.0} s")).unwrap_or_else(|| "–".into())
}

pub fn security(a: BenchSecurityArgs) -> Result<ExitCode> {
    let step: std::time::Duration = a.step.into();
    let every: std::time::Duration = a.scenario_every.into();
    if a.hours <= 0.0 || step.is_zero() {
        bail!("--hours and --step must be positive");
    }
    let cfg = BenchConfig {
        nodes: a.nodes,
        gpus_per_node: a.gpus_per_node,
        hours: a.hours,
        step_ms: step.as_millis() as i64,
        seed: a.seed,
        scenario_every_ms: every.as_millis() as i64,
        hard_legit_gpus: a.hard_legit_gpus,
    };
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {percent}% {elapsed}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t0 = Instant::now();
    let r = run(&cfg, &mut |f| bar.set_position((f * 1000.0) as u64));
    bar.finish_and_clear();
    let wall = t0.elapsed().as_secs_f64();

    println!(
        "Security rule pack on a simulated fleet: {} GPUs x {:.0} h at a {} s step ({:.0} GPU-hours, {:.0} of them legitimate work, \
         {:.0} of those steady memory-bound training), seed {}, a scenario every {:.1} h; {} rows in {wall:.0} s.\n",
        r.gpus,
        cfg.hours,
        cfg.step_ms / 1000,
        r.gpu_hours,
        r.legit_gpu_hours,
        r.hard_legit_gpu_hours,
        cfg.seed,
        cfg.scenario_every_ms as f64 / 3.6e6,
        r.rows
    );
    println!(
        "| Rule | Episodes | Recall | Precision | Median delay | Max delay | False alarms | per 1,000 legit GPU-h |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for s in &r.rules {
        let recall = if s.episodes > 0 {
            format!(
                "{:.2} ({}/{})",
                s.detected as f64 / s.episodes as f64,
                s.detected,
                s.episodes
            )
        } else {
            "n/a".into()
        };
        let precision = if s.finding_runs > 0 {
            format!("{:.2}", (s.finding_runs - s.false_runs) as f64 / s.finding_runs as f64)
        } else {
            "n/a".into()
        };
        println!(
            "| `{}` | {} | {recall} | {precision} | {} | {} | {} | {:.3} |",
            s.rule,
            s.episodes,
            secs(median_s(&s.delays_ms)),
            secs(max_s(&s.delays_ms)),
            s.false_runs,
            s.false_runs as f64 * 1000.0 / r.legit_gpu_hours.max(1e-9)
        );
    }
    println!("\n| Planted variant | Episodes | Found by its primary rule | Median delay | Max delay |");
    println!("|---|---|---|---|---|");
    for v in &r.variants {
        println!(
            "| {} | {} | {}/{} | {} | {} |",
            v.variant,
            v.episodes,
            v.detected,
            v.episodes,
            secs(median_s(&v.delays_ms)),
            secs(max_s(&v.delays_ms))
        );
    }
    if let Some(m) = r.rules.iter().find(|s| s.rule == "sec.mining.telemetry") {
        println!(
            "\nHardest legitimate case (steady memory-bound single-GPU training at the power cap, synthetic): {} mining false alarms in {:.0} GPU-hours.",
            m.false_runs_hard, r.hard_legit_gpu_hours
        );
    }
    println!("\nMachine: {}", super::machine_line());
    println!(
        "Command: gpuwarden bench security --nodes {} --gpus-per-node {} --hours {} --step {}s --seed {} --hard-legit-gpus {} --scenario-every {}s",
        cfg.nodes,
        cfg.gpus_per_node,
        cfg.hours,
        cfg.step_ms / 1000,
        cfg.seed,
        cfg.hard_legit_gpus,
        cfg.scenario_every_ms / 1000
    );
    Ok(ExitCode::SUCCESS)
}
