//! `gpuwarden rules …`: the security rule catalog rendered for people and for other
//! tools: Prometheus alerting rules (`export`), the detection docs (`docs`), and a list.

use crate::config::FileConfig;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use gpuwarden_detect::XidCatalog;
use gpuwarden_model::{Action, Severity};
use gpuwarden_security::prometheus::{export, ExportInputs};
use gpuwarden_security::{Catalog, SecurityConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Write alerting rules over plain dcgm-exporter metrics (health and security) for
    /// Prometheus + Alertmanager.
    Export(RulesExportArgs),
    /// Generate the detection docs (a page per rule, an index with the metric → detection →
    /// MITRE mapping, SIEM queries) from the rule catalog.
    Docs(RulesDocsArgs),
    /// List the security rules: id, MITRE technique, severity, action.
    List(RulesListArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RulesFormat {
    /// A Prometheus rule file (YAML), checkable with `promtool check rules`.
    Prometheus,
}

#[derive(Debug, Args)]
pub struct RulesExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = RulesFormat::Prometheus)]
    pub format: RulesFormat,
    /// Write to this file instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// gpuwarden config whose `[security]` section gives the approved namespaces, the
    /// driver floor and threshold overrides. Without it: the simulator's approved
    /// namespaces (ml-training, inference, research) and no driver floor.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RulesDocsArgs {
    /// Directory to write the pages into (its other .md files are removed: it is generated).
    #[arg(long, default_value = "docs/detections")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct RulesListArgs {
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn rules(cmd: RulesCommand) -> Result<ExitCode> {
    match cmd {
        RulesCommand::Export(a) => export_cmd(a),
        RulesCommand::Docs(a) => docs_cmd(a),
        RulesCommand::List(a) => list_cmd(a),
    }
}

fn security_config(path: Option<&Path>) -> Result<SecurityConfig> {
    let mut sec = match path {
        Some(p) => FileConfig::load(p)?.security,
        None => SecurityConfig::default(),
    };
    if sec.approved_namespaces.is_empty() && path.is_none() {
        sec.approved_namespaces = gpuwarden_sim::workload::APPROVED_NAMESPACES
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    Ok(sec)
}

/// XID codes by class, from the health engine's catalog.
fn xid_classes() -> (Vec<u32>, Vec<u32>) {
    let cat = XidCatalog::builtin();
    let serious = |s: Severity| s >= Severity::Critical;
    let mut fatal: Vec<u32> = cat
        .entries()
        .filter(|e| serious(e.severity) && matches!(e.action, Action::ResetGpu | Action::HardwareInspection))
        .map(|e| e.code)
        .collect();
    let mut reboot: Vec<u32> = cat
        .entries()
        .filter(|e| serious(e.severity) && e.action == Action::Reboot)
        .map(|e| e.code)
        .collect();
    fatal.sort_unstable();
    reboot.sort_unstable();
    (fatal, reboot)
}

fn export_cmd(a: RulesExportArgs) -> Result<ExitCode> {
    let RulesFormat::Prometheus = a.format;
    let sec = security_config(a.config.as_deref())?;
    let catalog = Catalog::builtin()
        .with_overrides(&sec.rules)
        .context("the [security.rules] overrides are not valid")?;
    let (xid_fatal, xid_reboot) = xid_classes();
    let text = export(
        &catalog,
        &ExportInputs {
            xid_fatal,
            xid_reboot,
            approved_namespaces: sec.approved_namespaces,
            min_driver_version: sec.min_driver_version,
        },
    );
    match a.out {
        Some(p) => {
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn docs_cmd(a: RulesDocsArgs) -> Result<ExitCode> {
    let files = gpuwarden_security::docs::render(&Catalog::builtin());
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    // The directory is generated: pages of rules that no longer exist must go.
    for entry in std::fs::read_dir(&a.out).with_context(|| format!("reading {}", a.out.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".md") && !files.iter().any(|(f, _)| *f == name) {
            std::fs::remove_file(&path).with_context(|| format!("removing stale {}", path.display()))?;
        }
    }
    for (name, text) in &files {
        let p = a.out.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    eprintln!("wrote {} pages to {}", files.len(), a.out.display());
    Ok(ExitCode::SUCCESS)
}

fn list_cmd(a: RulesListArgs) -> Result<ExitCode> {
    let c = Catalog::builtin();
    if c.rules().is_empty() {
        bail!("the rule catalog is empty");
    }
    for r in c.rules() {
        let s = &r.spec;
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "id": s.id, "title": s.title, "severity": r.severity, "action": s.action,
                    "mitre": s.mitre.iter().map(|t| &t.id).collect::<Vec<_>>(), "enabled": r.enabled,
                })
            );
        } else {
            println!(
                "{:34} {:18} {:9} {:12} {}",
                s.id,
                s.mitre.iter().map(|t| t.id.as_str()).collect::<Vec<_>>().join(","),
                r.severity.as_str(),
                s.action.as_str(),
                s.title
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
