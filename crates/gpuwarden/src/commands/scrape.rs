//! `gpuwarden scrape URL`: a one-shot health report of any dcgm-exporter (or
//! nvidia_gpu_exporter) endpoint — a table in the terminal or JSON — with an exit code a
//! script can use: 0 when no GPU is unhealthy, 1 when at least one is.
//!
//! One page has no history, so rules that need a rate over time (ECC single-bit rate,
//! NVLink/PCIe error rates, stragglers) cannot fire here; everything a single page shows
//! (DBEs, remap pending/failure, temperatures, clock-event reasons, the last XID) does.

use crate::cli::ScrapeArgs;
use anyhow::Result;
use gpuwarden_collect::prom::Limits;
use gpuwarden_collect::scrape::{scrape_once, ScrapeConfig, TargetSpec};
use gpuwarden_detect::{evaluate_snapshot, HealthRules, XidCatalog};
use gpuwarden_model::{DcgmField, FieldName, HealthState, SystemClock};
use std::process::ExitCode;

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
                serde_json::json!({ "identity": g, "values": values, "health": health })
            })
            .collect();
        let report = serde_json::json!({
            "url": args.url,
            "gpus": gpus,
            "nodes": evaluation.nodes,
            "findings": evaluation.findings,
            "note": "single scrape: rate-based rules (SBE rate, NVLink/PCIe error rates, stragglers) need history and were not evaluated",
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
            "{:<42} {:<14} {:<24} {:<9} {:>5} {:>6} {:>7} {:>5} {:>5}  why",
            "GPU", "node", "model", "state", "score", "temp", "power", "util", "XID"
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
                "{:<42} {:<14} {:<24} {:<9} {:>5} {:>6} {:>7} {:>5} {:>5}  {}",
                uuid,
                g.node,
                g.model.as_deref().unwrap_or("-"),
                state.as_str(),
                cell(score, 0),
                cell(value(&page, uuid, DcgmField::GpuTemp), 0),
                cell(value(&page, uuid, DcgmField::PowerUsage), 0),
                cell(value(&page, uuid, DcgmField::GpuUtil), 0),
                cell(value(&page, uuid, DcgmField::XidErrors), 0),
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
    }
    Ok(if unhealthy > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
