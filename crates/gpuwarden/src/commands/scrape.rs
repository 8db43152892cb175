//! `gpuwarden scrape URL`: a one-shot health report of any dcgm-exporter (or
//! nvidia_gpu_exporter) endpoint — a table in the terminal or JSON — with an exit code a
//! script can use: 0 when no GPU is unhealthy, 1 when at least one is, 3 when it could
//! judge nothing ([`EXIT_NOTHING_JUDGED`]: no GPU has a measured health dimension, e.g.
//! an exporter that exposes only utilisation). Errors exit 2 (from `main`). The table
//! and the JSON say, per GPU, which of the five dimensions could be judged: a dimension
//! with no input field on the page is "not measured", never a full-marks 100.
//!
//! One page has no history, so rules that need a rate over time (ECC single-bit rate,
//! NVLink/PCIe error rates, stragglers) cannot fire here; everything a single page shows
//! (DBEs, remap pending/failure, temperatures, clock-event reasons, the last XID) does.

use crate::cli::ScrapeArgs;
use anyhow::Result;
use gpuwarden_collect::prom::Limits;
use gpuwarden_collect::scrape::{scrape_once, ScrapeConfig, TargetSpec};
use gpuwarden_detect::GpuHealth;
use gpuwarden_detect::{evaluate_snapshot, HealthRules, XidCatalog};
use gpuwarden_model::{DcgmField, FieldName, HealthState, SystemClock};
use std::process::ExitCode;

/// Exit code when no GPU on the page has a single measured health dimension: nothing
/// was judged, and a script must not read that as "all healthy".
pub const EXIT_NOTHING_JUDGED: u8 = 3;

/// The dimensions a GPU's health could judge (`thermal,power`), or `none`.
fn judged(h: Option<&GpuHealth>) -> String {
    let dims: Vec<&str> = h
        .map(|h| {
            h.dimensions
                .iter()
                .filter(|(_, v)| v.is_some())
                .map(|(d, _)| d.as_str())
                .collect()
        })
        .unwrap_or_default();
    if dims.is_empty() {
        "none".into()
    } else {
        dims.join(",")
    }
}

fn value(page: &gpuwarden_collect::dcgm::ExporterPage, uuid: &str, f: DcgmField) -> Option<f64> {
    page.value(uuid, &FieldName::Dcgm(f))
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}")).unwrap_or_else(|| "-".into())
}

pub fn scrape(args: ScrapeArgs) -> Result<ExitCode> {
    let target = TargetSpec::from_address(&args.url, "command line");
    let config = ScrapeConfig {
        timeout: args.timeout.into(),
        limits: Limits::default(),
        ..ScrapeConfig::default()
    };
    let client = reqwest::Client::builder().timeout(config.timeout).build()?;
    let outcome = super::runtime()?.block_on(scrape_once(&client, &config, target, &SystemClock));
    let page = outcome.result?;
    let evaluation = evaluate_snapshot(&page.rows, &page.gpus, &HealthRules::builtin(), &XidCatalog::builtin());
    let unhealthy = evaluation
        .gpus
        .iter()
        .filter(|g| g.state == HealthState::Unhealthy)
        .count();
    let judged_any = evaluation.gpus.iter().any(|g| g.score.is_some());

    if args.json {
        let gpus: Vec<_> = page
            .gpus
            .iter()
            .map(|g| {
                let values: serde_json::Map<String, serde_json::Value> = page
                    .rows
                    .iter()
                    .filter(|r| r.gpu == g.uuid)
                    .flat_map(|r| r.values.iter())
                    .map(|(f, v)| (f.as_str().to_string(), serde_json::json!(v)))
                    .collect();
                let health = evaluation.gpus.iter().find(|h| h.uuid == g.uuid);
                let (measured, not_measured): (Vec<gpuwarden_model::Dimension>, Vec<_>) =
                    gpuwarden_model::Dimension::ALL
                        .iter()
                        .partition(|d| health.is_some_and(|h| h.dimensions.get(d).copied().flatten().is_some()));
                serde_json::json!({
                    "identity": g,
                    "values": values,
                    "health": health,
                    "measured_dimensions": measured,
                    "not_measured_dimensions": not_measured,
                })
            })
            .collect();
        let report = serde_json::json!({
            "url": args.url,
            "gpus": gpus,
            "nodes": evaluation.nodes,
            "findings": evaluation.findings,
            "note": "single scrape: rate-based rules (SBE rate, NVLink/PCIe error rates, stragglers) need history and were not evaluated",
            "judged_any": judged_any,
            // Physically impossible values refused at mapping (capped list; total count).
            "refused": page.summary.refused,
            "refused_total": page.summary.refused_total,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} GPUs, {} samples, scraped in {:.0} ms",
            args.url,
            page.gpus.len(),
            page.sample_count(),
            outcome.duration.as_secs_f64() * 1000.0
        );
        println!(
            "{:<42} {:<14} {:<24} {:<9} {:>5} {:>6} {:>7} {:>5} {:>5}  {:<40} why",
            "GPU", "node", "model", "state", "score", "temp", "power", "util", "XID", "judged"
        );
        for g in &page.gpus {
            let uuid = g.uuid.as_str();
            let health = evaluation.gpus.iter().find(|h| h.uuid == g.uuid);
            let (state, score) = match health {
                Some(h) => (h.state, h.score),
                None => (HealthState::Unknown, None),
            };
            let why = health
                .and_then(|h| h.deductions.iter().max_by(|a, b| a.points.total_cmp(&b.points)))
                .map(|d| d.reason.clone())
                .unwrap_or_default();
            println!(
                "{:<42} {:<14} {:<24} {:<9} {:>5} {:>6} {:>7} {:>5} {:>5}  {:<40} {}",
                uuid,
                g.node,
                g.model.as_deref().unwrap_or("-"),
                state.as_str(),
                cell(score, 0),
                cell(value(&page, uuid, DcgmField::GpuTemp), 0),
                cell(value(&page, uuid, DcgmField::PowerUsage), 0),
                cell(value(&page, uuid, DcgmField::GpuUtil), 0),
                cell(value(&page, uuid, DcgmField::XidErrors), 0),
                judged(health),
                why
            );
        }
        for f in evaluation.findings.iter().filter(|f| f.gpu.is_none()) {
            println!(
                "node {}: {} ({}; action: {})",
                f.node,
                f.summary,
                f.severity,
                f.action.describe()
            );
        }
        if unhealthy > 0 {
            println!("{unhealthy} GPU(s) unhealthy");
        }
        if page.summary.refused_total > 0 {
            println!(
                "{} value(s) refused as physically impossible (not shown, not judged):",
                page.summary.refused_total
            );
            for r in &page.summary.refused {
                println!("  {}: {}", r.gpu, r.reason);
            }
        }
        if !judged_any {
            println!(
                "nothing judged: no GPU has a measured health dimension (no temperature, power, \
                 ECC/remap, PCIe/NVLink error or clock/XID field); exit code {EXIT_NOTHING_JUDGED}"
            );
        }
    }
    Ok(if unhealthy > 0 {
        ExitCode::from(1)
    } else if !judged_any {
        ExitCode::from(EXIT_NOTHING_JUDGED)
    } else {
        ExitCode::SUCCESS
    })
}
