//! `gpuwarden scrape URL`: scrape one exporter once and print, per GPU, its identity
//! and key values. Useful on its own to anyone with dcgm-exporter or
//! nvidia_gpu_exporter.

use crate::cli::ScrapeArgs;
use anyhow::Result;
use gpuwarden_collect::prom::Limits;
use gpuwarden_collect::scrape::{scrape_once, ScrapeConfig, TargetSpec};
use gpuwarden_model::{DcgmField, FieldName, SystemClock};
use std::process::ExitCode;

const COLUMNS: &[(DcgmField, &str)] = &[
    (DcgmField::GpuTemp, "temp C"),
    (DcgmField::PowerUsage, "power W"),
    (DcgmField::GpuUtil, "util %"),
    (DcgmField::SmClock, "SM MHz"),
    (DcgmField::FbUsed, "FB used MiB"),
    (DcgmField::XidErrors, "last XID"),
];

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
                serde_json::json!({ "identity": g, "values": values })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "gpus": gpus }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} GPUs, {} samples, scraped in {:.0} ms",
        page.gpus.len(),
        page.sample_count(),
        outcome.duration.as_secs_f64() * 1000.0
    );
    print!("{:<44} {:<14} {:<24}", "GPU", "node", "model");
    for (_, title) in COLUMNS {
        print!(" {title:>11}");
    }
    println!();
    for g in &page.gpus {
        let model = g.model.as_deref().unwrap_or("-");
        print!("{:<44} {:<14} {:<24}", g.uuid.as_str(), g.node, model);
        for (field, _) in COLUMNS {
            let value = page
                .rows
                .iter()
                .filter(|r| r.gpu == g.uuid)
                .find_map(|r| r.get(&FieldName::Dcgm(*field)));
            match value {
                Some(v) => print!(" {v:>11.1}"),
                None => print!(" {:>11}", "-"),
            }
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
