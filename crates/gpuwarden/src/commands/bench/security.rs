//! `gpuwarden bench security`: the security rule pack on labelled simulated fleets —
//! recall, precision, detection delay and false alarms per 1,000 GPU-hours per rule, and
//! detection per planted variant. The fleet, scenarios and scoring live in
//! `gpuwarden_security::simbench`; this prints them (as Markdown, for docs/benchmarks.md).

use crate::cli::BenchSecurityArgs;
use anyhow::{bail, Result};
use gpuwarden_incident::{CorrelationRules, IncidentConfig, IncidentEngine};
use gpuwarden_model::Incident;
use gpuwarden_security::simbench::{max_s, median_s, run_with, BenchConfig, BenchReport, GRACE_MS};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
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
    // The findings become incidents as in the product: with the correlation rules, and
    // without them (one incident per rule and GPU) for comparison.
    let mut engines = [
        IncidentEngine::new(IncidentConfig::default(), Vec::new()),
        IncidentEngine::new(IncidentConfig::default(), Vec::new()).with_correlation(CorrelationRules::none()),
    ];
    let mut opened: [BTreeMap<String, Incident>; 2] = Default::default();
    let r = run_with(
        &cfg,
        &mut |f| bar.set_position((f * 1000.0) as u64),
        &mut |now, findings| {
            for (e, o) in engines.iter_mut().zip(opened.iter_mut()) {
                // The latest version of each incident: its timeline has every (re)opening.
                for inc in e.apply(now, findings) {
                    o.insert(inc.id.clone(), inc);
                }
            }
        },
    );
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
    println!("\n| Incidents | Per episode: mean / p95 / max | Episodes with an incident | Delay from the episode's start p50 / p95 | False incidents (per 1,000 legit GPU-h) |");
    println!("|---|---|---|---|---|");
    for (name, o) in ["correlated (product)", "uncorrelated (one per rule)"]
        .iter()
        .zip(&opened)
    {
        let s = incident_scores(&r, o.values());
        println!(
            "| {name} | {:.2} / {} / {} | {}/{} | {} / {} | {} ({:.3}) |",
            s.mean_per_episode,
            s.p95_per_episode,
            s.max_per_episode,
            s.detected,
            r.episodes.len(),
            secs(s.delay_p50_s),
            secs(s.delay_p95_s),
            s.false_incidents,
            s.false_incidents as f64 * 1000.0 / r.legit_gpu_hours.max(1e-9)
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

/// Incidents scored against the planted episodes.
struct IncidentScores {
    mean_per_episode: f64,
    p95_per_episode: usize,
    max_per_episode: usize,
    detected: usize,
    delay_p50_s: Option<f64>,
    delay_p95_s: Option<f64>,
    false_incidents: usize,
}

/// An incident belongs to an episode when it is on the episode's GPU and opened — or
/// reopened, as an intermittent miner's next burst reopens the same incident — between
/// the episode's start and its end plus the bench's grace; an incident whose openings
/// belong to no episode is a false incident. Delay: from the episode's start (its first
/// abusive sample is the first step at or after it, at most one step later) to the
/// first such opening.
fn incident_scores<'a>(r: &BenchReport, incidents: impl Iterator<Item = &'a Incident>) -> IncidentScores {
    let mut per_episode = vec![0usize; r.episodes.len()];
    let mut first: Vec<Option<i64>> = vec![None; r.episodes.len()];
    let mut false_incidents = 0;
    for inc in incidents {
        let openings: Vec<i64> = inc
            .timeline
            .iter()
            .filter(|t| t.what == "opened" || t.what == "reopened")
            .map(|t| t.ts_ms)
            .collect();
        let mut matched = false;
        for (i, e) in r.episodes.iter().enumerate() {
            let on_gpu = r.uuids.get(e.gpu).is_some_and(|u| inc.gpu.as_ref() == Some(u));
            let Some(t) = openings
                .iter()
                .copied()
                .filter(|&t| on_gpu && t >= e.start && t <= e.end + GRACE_MS)
                .min()
            else {
                continue;
            };
            matched = true;
            per_episode[i] += 1;
            first[i] = Some(first[i].map_or(t, |f: i64| f.min(t)));
        }
        if !matched {
            false_incidents += 1;
        }
    }
    let mut counts = per_episode.clone();
    counts.sort_unstable();
    let mut delays: Vec<i64> = r
        .episodes
        .iter()
        .zip(&first)
        .filter_map(|(e, f)| Some(((*f)? - e.start).max(0)))
        .collect();
    delays.sort_unstable();
    let q = |p: f64| -> Option<f64> {
        if delays.is_empty() {
            return None;
        }
        Some(delays[((delays.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0)
    };
    IncidentScores {
        mean_per_episode: counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64,
        p95_per_episode: counts
            .get(((counts.len().max(1) - 1) as f64 * 0.95).round() as usize)
            .copied()
            .unwrap_or(0),
        max_per_episode: counts.last().copied().unwrap_or(0),
        detected: first.iter().filter(|f| f.is_some()).count(),
        delay_p50_s: q(0.5),
        delay_p95_s: q(0.95),
        false_incidents,
    }
}
