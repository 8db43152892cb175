//! `gpuwarden dashboards export`: writes the Grafana dashboards as JSON files.

use crate::cli::DashboardsExportArgs;
use crate::dashboards;
use anyhow::{Context, Result};
use std::process::ExitCode;

pub fn export(args: DashboardsExportArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    for d in dashboards::all() {
        let path = args.out.join(d.file);
        let json = serde_json::to_string_pretty(&dashboards::to_json(&d))?;
        std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {} ({}, {} panels)", path.display(), d.title, d.panels.len());
    }
    println!("Import them in Grafana (Dashboards → New → Import) and pick your Prometheus data source.");
    Ok(ExitCode::SUCCESS)
}
