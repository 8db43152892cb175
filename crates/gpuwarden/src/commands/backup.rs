//! `gpuwarden backup` and `gpuwarden restore`: the whole data directory as one archive.
//!
//! # Design
//!
//! The backup is taken **from outside the running process**, file by file, with no pause
//! of and no call to the running gpuwarden (see [`snapshot`] for how and for exactly what
//! "consistent" means). Alternatives considered:
//!
//! * an endpoint or IPC in the running process that pauses compaction and deletion:
//!   it would need a pause hook in every component that writes files (store seals and
//!   retention, incident log compaction, outbox compaction, silences, models, and every
//!   component added later), a route that must be authorised, and it would not work on
//!   a stopped instance, which must be backed up the same way anyway;
//! * a hard-link snapshot under such a pause: the same hooks, and files on another
//!   filesystem cannot be linked.
//!
//! Reading lengths through open descriptors needs none of that: gpuwarden's files are
//! append-only or replaced whole by rename (a rule new files keep: ARCHITECTURE.md), so
//! a prefix read at a stable listing is what a crash at that instant would have left,
//! and every reader already recovers from a crash. The same code backs up a stopped
//! instance. The data directory is walked generically, so a new subdirectory (tokens,
//! audit trail) is included without changing this code.
//!
//! Permission to back up is permission to read the data directory (file system), not an
//! API role: the archive holds everything, token hashes included, and is written `0600`.
//!
//! # Restore
//!
//! [`restore`] reads the archive twice: first only to verify every path, entry type,
//! size and SHA-256 against the manifest (nothing is written if anything is wrong), then
//! to extract into a staging directory inside the target (hashes checked again, so an
//! archive changed between the two reads is refused too), and only then moves the files
//! into place and fsyncs them and their directories. Files are then as a crash would
//! have left them at the backup instant, and gpuwarden recovers them at start (a torn
//! WAL tail is truncated).

mod archive;
mod restore;
mod snapshot;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub use restore::RestoreArgs;

// `gpuwarden backup` (a `//` comment: a doc comment would replace `about`).
#[derive(Debug, Args)]
#[command(
    about = "Back up a data directory (running or stopped) to one archive with a SHA-256 manifest",
    long_about = "Write a consistent backup of a data directory to one file (tar + gzip, with \
MANIFEST.json: gpuwarden version, time, source directory, and each file's size and SHA-256).\n\n\
Safe while gpuwarden runs on the directory: no need to stop it, and it is not paused. Everything \
acknowledged before the backup started (samples, events, incidents, silences, pending \
notifications, audit records, API tokens, prediction models) is in the archive. The same \
command backs up a stopped instance.\n\n\
Every file of the data directory is included (new kinds of files too), except lock files \
(LOCK, *.lock) and unfinished temporary files (*.tmp, *.compact, *.partial). The archive holds \
secrets (token hashes, the audit trail): it is written with mode 0600; keep it like the data \
directory itself.\n\n\
With a PostgreSQL store, back the database up with pg_dump (docs/deploy.md, \"Backup and \
restore\") and this command for what stays in the data directory.",
    after_help = "Examples:\n  gpuwarden backup --data-dir /var/lib/gpuwarden --to /backup/gpuwarden-$(date +%F).tar.gz\n  \
gpuwarden restore --from /backup/gpuwarden-2026-12-05.tar.gz --check     # verify only\n  \
gpuwarden restore --from /backup/gpuwarden-2026-12-05.tar.gz --data-dir /var/lib/gpuwarden-new"
)]
pub struct BackupArgs {
    /// Data directory to back up (of a running or a stopped gpuwarden).
    #[arg(long, default_value = "./gpuwarden-data")]
    pub data_dir: PathBuf,
    /// The archive to write (conventionally *.tar.gz). Written to FILE.partial first and
    /// renamed when complete, so FILE is never half-written.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

fn bar(total: u64) -> ProgressBar {
    // Draws only on a terminal: scripts and logs get the summary line alone.
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `FILE.partial` beside `FILE`.
fn partial_name(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".partial");
    PathBuf::from(p)
}

pub fn backup(args: BackupArgs) -> Result<ExitCode> {
    let data_dir = std::fs::canonicalize(&args.data_dir).with_context(|| {
        format!(
            "data directory {} (give the one gpuwarden runs with, --data-dir)",
            args.data_dir.display()
        )
    })?;
    if args.to.exists() && !args.force {
        bail!(
            "{} already exists; choose another name or pass --force to replace it",
            args.to.display()
        );
    }
    let parent = match args.to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = std::fs::canonicalize(&parent)
        .with_context(|| format!("directory of --to {} (create it first)", args.to.display()))?;
    if parent.starts_with(&data_dir) {
        bail!(
            "--to {} is inside the data directory {}; the backup would contain itself — write it elsewhere",
            args.to.display(),
            data_dir.display()
        );
    }

    let created_ms = now_ms();
    let snap = snapshot::take(&data_dir)?;
    let manifest = archive::Manifest {
        format: archive::FORMAT.into(),
        format_version: archive::FORMAT_VERSION,
        gpuwarden_version: env!("CARGO_PKG_VERSION").into(),
        created: humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(created_ms as u64),
        )
        .to_string(),
        created_ms,
        source_data_dir: data_dir.display().to_string(),
        consistency: archive::CONSISTENCY.into(),
        files: Vec::new(),
        skipped: snap
            .skipped
            .iter()
            .map(|(path, reason)| archive::Skipped {
                path: path.clone(),
                reason: (*reason).into(),
            })
            .collect(),
    };

    let partial = partial_name(&args.to);
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let pb = bar(snap.total_bytes());
    let written = (|| -> Result<archive::Manifest> {
        let mut w = std::io::BufWriter::new(&out);
        let m = archive::write(&snap, manifest, &mut w, &pb)?;
        w.flush().with_context(|| format!("writing {}", partial.display()))?;
        drop(w);
        out.sync_all()
            .with_context(|| format!("syncing {}", partial.display()))?;
        std::fs::rename(&partial, &args.to)
            .with_context(|| format!("renaming {} to {}", partial.display(), args.to.display()))?;
        std::fs::File::open(&parent)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", parent.display()))?;
        Ok(m)
    })();
    pb.finish_and_clear();
    let m = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!(
                "backup of {} failed; no archive was written",
                data_dir.display()
            )));
        }
    };
    let size = std::fs::metadata(&args.to).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup of {} written to {}: {} files, {} bytes of data, {} bytes compressed, taken at {}{}",
        data_dir.display(),
        args.to.display(),
        m.files.len(),
        snap.total_bytes(),
        size,
        m.created,
        if snap.tries > 1 {
            format!(" (the directory changed during {} listings first)", snap.tries - 1)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn restore(args: RestoreArgs) -> Result<ExitCode> {
    restore::restore(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::{FieldName, GpuSamples, GpuUuid};
    use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
    use gpuwarden_store::Store;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    /// Backups taken while a store appends and seals as fast as it can (a seal every few
    /// hundred samples: WAL files switched and deleted, segments created) restore to a
    /// store holding every sample acknowledged before each backup started.
    #[test]
    fn backups_under_sealing_ingest_keep_everything_acknowledged_before_them() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        let opts = EmbeddedOptions {
            memtable_max_samples: 3000,
            sync: false,
            ..EmbeddedOptions::default()
        };
        let store = Arc::new(EmbeddedStore::open(&data.join("store"), opts.clone()).unwrap());
        let gpu = GpuUuid::new("GPU-1");
        let field = FieldName::parse("DCGM_FI_DEV_GPU_TEMP");
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (store, acked, stop, gpu, field) =
                (store.clone(), acked.clone(), stop.clone(), gpu.clone(), field.clone());
            std::thread::spawn(move || {
                let mut ts = 1_000_000i64;
                while !stop.load(Ordering::Relaxed) {
                    let rows: Vec<GpuSamples> = (0..10)
                        .map(|i| {
                            let mut r = GpuSamples::new(gpu.clone(), ts + i);
                            r.values.push((field.clone(), 1.0));
                            r
                        })
                        .collect();
                    store.append_samples(&rows).unwrap();
                    acked.lock().unwrap().push(ts + 9);
                    ts += 10;
                }
            })
        };
        let mut retried = 0;
        for round in 0..5 {
            while acked.lock().unwrap().len() < (round + 1) * 50 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let before = *acked.lock().unwrap().last().unwrap();
            let snap = snapshot::take(&data).unwrap();
            retried += snap.tries - 1;
            let file = t.path().join(format!("b{round}.tar.gz"));
            let m = archive::Manifest {
                format: archive::FORMAT.into(),
                format_version: archive::FORMAT_VERSION,
                gpuwarden_version: "test".into(),
                created: String::new(),
                created_ms: 0,
                source_data_dir: String::new(),
                consistency: String::new(),
                files: vec![],
                skipped: vec![],
            };
            archive::write(&snap, m, std::fs::File::create(&file).unwrap(), &ProgressBar::hidden()).unwrap();
            drop(snap);
            let dst = t.path().join(format!("r{round}"));
            restore(RestoreArgs {
                from: file,
                data_dir: Some(dst.clone()),
                force: false,
                check: false,
            })
            .unwrap();
            let restored = EmbeddedStore::open(&dst.join("store"), opts.clone()).unwrap();
            let points = restored.range(&gpu, &field, 0, i64::MAX, usize::MAX).unwrap();
            let have: std::collections::HashSet<i64> = points.iter().map(|p| p.ts_ms).collect();
            let missing = (1_000_000..=before).filter(|ts| !have.contains(ts)).count();
            assert_eq!(
                missing, 0,
                "round {round}: samples up to {before} were acknowledged before the backup"
            );
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let segments = std::fs::read_dir(data.join("store"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("seg-"))
            .count();
        assert!(
            segments > 3,
            "the store should have sealed during the test ({segments} segments)"
        );
        eprintln!("{segments} segments; snapshots listed again {retried} times");
    }
}
