//! `gpuwarden forensics collect|verify`: a GPU's evidence bundle for an investigation.
//!
//! `collect` reads the embedded store directly and writes a tar archive with the GPU's
//! identity, the incidents on it, the raw samples and events of the window, the
//! workloads and processes seen on it, and `MANIFEST.sha256` (sha256sum format, so
//! `sha256sum -c MANIFEST.sha256` works on the extracted files too). The store holds an
//! exclusive lock while gpuwarden runs, so collect from a stopped instance, or from a
//! copy of the data directory (`cp -a DATA_DIR /tmp/case-copy`): copying keeps the live
//! instance running and leaves the original untouched (opening a store may replay and
//! compact its write-ahead log). `verify` recomputes every hash and exits non-zero on
//! any mismatch, missing or unlisted file.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use gpuwarden_model::{EventKind, GpuUuid, TimestampMs};
use gpuwarden_store::{StoreConfig, StoreError};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub const MANIFEST: &str = "MANIFEST.sha256";

#[derive(Debug, Subcommand)]
pub enum ForensicsCommand {
    /// Write a GPU's evidence bundle (identity, incidents, samples, events, workloads,
    /// SHA-256 manifest) as a tar archive.
    Collect(CollectArgs),
    /// Check a bundle's SHA-256 manifest; exit code 1 on any mismatch.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct CollectArgs {
    /// GPU UUID (a MIG slice: `GPU-…/mig/ID`).
    #[arg(long)]
    pub gpu: String,
    /// Start of the window: RFC 3339 (`2025-01-01T00:00:00Z`) or Unix milliseconds.
    #[arg(long)]
    pub from: String,
    /// End of the window (exclusive), same formats.
    #[arg(long)]
    pub to: String,
    /// Data directory of a stopped gpuwarden, or a copy of a running one's.
    #[arg(long, default_value = "./gpuwarden-data")]
    pub data_dir: PathBuf,
    /// TOML configuration of the instance (same as `run`): with `[store] url` the
    /// evidence is read from that PostgreSQL database (a running instance may keep
    /// writing to it meanwhile).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The archive to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The archive to check.
    pub file: PathBuf,
}

pub fn forensics(cmd: ForensicsCommand) -> Result<ExitCode> {
    match cmd {
        ForensicsCommand::Collect(a) => collect(a),
        ForensicsCommand::Verify(a) => verify(&a.file),
    }
}

/// RFC 3339 or Unix milliseconds.
fn parse_time(what: &str, s: &str) -> Result<TimestampMs> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s)
        .with_context(|| format!("--{what} '{s}' is neither RFC 3339 (2025-01-01T00:00:00Z) nor Unix milliseconds"))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let mut s = String::with_capacity(64);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn collect(a: CollectArgs) -> Result<ExitCode> {
    let from = parse_time("from", &a.from)?;
    let to = parse_time("to", &a.to)?;
    if to <= from {
        bail!("--to must be after --from");
    }
    let store_cfg = match &a.config {
        Some(path) => crate::config::store_config(&crate::config::FileConfig::load(path)?.store, &a.data_dir)?,
        None => crate::config::store_config(&Default::default(), &a.data_dir)?,
    };
    if let StoreConfig::Embedded { dir: store_dir, .. } = &store_cfg {
        if !store_dir.is_dir() {
            bail!(
                "{} has no store (expected {}): is --data-dir right? (for a PostgreSQL store, pass --config)",
                a.data_dir.display(),
                store_dir.display()
            );
        }
    }
    let store = match gpuwarden_store::open(&store_cfg) {
        Ok(s) => s,
        Err(e @ StoreError::Locked { .. }) => bail!(
            "{e}\nA running gpuwarden holds the store. Either stop it, or copy the data directory and collect from the copy:\n  \
             cp -a {} /tmp/gpuwarden-case && gpuwarden forensics collect --data-dir /tmp/gpuwarden-case …",
            a.data_dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("opening the store at {}", store_cfg.describe())),
    };
    let gpu = GpuUuid::new(&a.gpu);
    let record = store
        .gpus()?
        .into_iter()
        .find(|r| r.identity.uuid == gpu)
        .with_context(|| format!("GPU {} is not in the store's inventory", a.gpu))?;

    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let collected_ms = gpuwarden_model::Clock::now_ms(&gpuwarden_model::SystemClock);
    files.push((
        "identity.json".into(),
        serde_json::to_vec_pretty(&serde_json::json!({
            "collected_at_ms": collected_ms,
            "window": { "from_ms": from, "to_ms": to },
            "tool": format!("gpuwarden {}", env!("CARGO_PKG_VERSION")),
            "data_dir": a.data_dir.display().to_string(),
            "gpu": record,
        }))?,
    ));

    let incidents: Vec<_> = store
        .incidents()?
        .into_iter()
        .filter(|i| i.gpu.as_ref() == Some(&gpu) && i.opened_ms < to && i.resolved_ms.is_none_or(|r| r >= from))
        .collect();
    let mut jsonl = Vec::new();
    for i in &incidents {
        serde_json::to_writer(&mut jsonl, i)?;
        jsonl.push(b'\n');
    }
    files.push(("incidents.jsonl".into(), jsonl));

    let mut rows: Vec<(TimestampMs, String, f64)> = Vec::new();
    for (field, _) in store.latest(&gpu)? {
        for p in store.range(&gpu, &field, from, to, usize::MAX)? {
            rows.push((p.ts_ms, field.as_str().to_string(), p.value));
        }
    }
    rows.sort_by(|x, y| x.0.cmp(&y.0).then_with(|| x.1.cmp(&y.1)));
    let mut csv = String::from("ts_ms,field,value\n");
    for (ts, f, v) in &rows {
        let _ = writeln!(csv, "{ts},{f},{v}");
    }
    files.push(("samples.csv".into(), csv.into_bytes()));

    let events = store.events(Some(&gpu), from, to)?;
    let mut ev = Vec::new();
    let mut processes: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for e in &events {
        serde_json::to_writer(&mut ev, e)?;
        ev.push(b'\n');
        let (pid, name) = match &e.kind {
            EventKind::ProcessStart { pid, name } => (Some(*pid), name.clone()),
            EventKind::Xid { pid, process, .. } if pid.is_some() || process.is_some() => (*pid, process.clone()),
            _ => continue,
        };
        let key = format!(
            "{}:{}",
            pid.map(|p| p.to_string()).unwrap_or_default(),
            name.clone().unwrap_or_default()
        );
        processes
            .entry(key)
            .or_insert_with(|| serde_json::json!({ "pid": pid, "name": name, "first_seen_ms": e.ts_ms }));
    }
    files.push(("events.jsonl".into(), ev));
    files.push((
        "workloads.json".into(),
        serde_json::to_vec_pretty(&serde_json::json!({
            "note": "the store keeps each GPU's latest identity; earlier pods/jobs are named in the incident summaries and timelines",
            "current": record.identity.workload,
            "processes": processes.into_values().collect::<Vec<_>>(),
            "incident_summaries": incidents.iter().map(|i| &i.summary).collect::<Vec<_>>(),
        }))?,
    ));

    let mut manifest = String::new();
    for (name, data) in &files {
        let _ = writeln!(manifest, "{}  {name}", sha256_hex(data));
    }
    files.push((MANIFEST.into(), manifest.into_bytes()));

    let out = std::fs::File::create(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut tar = tar::Builder::new(out);
    for (name, data) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime((collected_ms / 1000).max(0) as u64);
        h.set_cksum();
        tar.append_data(&mut h, name, data.as_slice())
            .with_context(|| format!("writing {name} into {}", a.out.display()))?;
    }
    tar.into_inner()?.sync_all()?;
    eprintln!(
        "wrote {}: {} samples, {} events, {} incidents of GPU {} (node {})",
        a.out.display(),
        rows.len(),
        events.len(),
        incidents.len(),
        a.gpu,
        record.identity.node
    );
    Ok(ExitCode::SUCCESS)
}

/// Checks a bundle. Returns the problems found (empty: intact).
pub fn check(path: &Path) -> Result<Vec<String>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut ar = tar::Archive::new(f);
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in ar
        .entries()
        .with_context(|| format!("reading {} as tar", path.display()))?
    {
        let mut e = entry.with_context(|| format!("reading {} as tar", path.display()))?;
        let name = e.path()?.to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        if contents.insert(name.clone(), data).is_some() {
            bail!("{name} appears twice in the archive");
        }
    }
    let manifest = contents
        .remove(MANIFEST)
        .with_context(|| format!("{} has no {MANIFEST}", path.display()))?;
    let manifest = String::from_utf8(manifest).context("the manifest is not UTF-8")?;
    let mut problems = Vec::new();
    let mut listed = Vec::new();
    for line in manifest.lines().filter(|l| !l.trim().is_empty()) {
        let Some((hash, name)) = line.split_once("  ") else {
            problems.push(format!("malformed manifest line: {line}"));
            continue;
        };
        listed.push(name.to_string());
        match contents.get(name) {
            None => problems.push(format!("{name}: listed in the manifest but missing")),
            Some(data) if sha256_hex(data) != hash => {
                problems.push(format!("{name}: SHA-256 mismatch (tampered or corrupted)"))
            }
            Some(_) => {}
        }
    }
    for name in contents.keys().filter(|n| !listed.contains(n)) {
        problems.push(format!("{name}: not listed in the manifest"));
    }
    Ok(problems)
}

fn verify(path: &Path) -> Result<ExitCode> {
    let problems = check(path)?;
    if problems.is_empty() {
        println!("{}: OK, every file matches {MANIFEST}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        println!("{}: {p}", path.display());
    }
    println!("{}: FAILED ({} problems)", path.display(), problems.len());
    Ok(ExitCode::FAILURE)
}
