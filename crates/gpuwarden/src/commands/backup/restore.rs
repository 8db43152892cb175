//! `gpuwarden restore`: verify the whole archive, then write it into an empty data
//! directory through a staging directory (see the parent module for the design).

use super::{archive, bar, now_ms};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the second reading of the archive is extracted before the files move into
/// place; a `.partial` name, so a backup never includes a leftover one.
const STAGING: &str = ".restore.partial";

// `gpuwarden restore` (a `//` comment: a doc comment would replace `about`).
#[derive(Debug, Args)]
#[command(
    about = "Restore a backup archive into an empty data directory, after verifying every hash",
    long_about = "Restore a `gpuwarden backup` archive into an empty data directory, then start gpuwarden \
with --data-dir pointing at it.\n\n\
Every file's SHA-256 is checked against the archive's manifest before anything is written: a damaged \
or hand-edited archive is refused with the name of the first bad file, and so is a hostile one (a path \
with '..', an absolute path, a link). The files are written to a staging directory, checked again, \
moved into place and synced, so an interrupted restore never leaves a half-written file under its \
real name.\n\n\
A directory that is not empty is refused; with --force its current contents are first moved aside \
to DATA_DIR.pre-restore-<time> next to it (never deleted), which needs gpuwarden stopped.",
    after_help = "Examples:\n  gpuwarden restore --from gpuwarden-2026-12-05.tar.gz --check\n  \
gpuwarden restore --from gpuwarden-2026-12-05.tar.gz --data-dir /var/lib/gpuwarden-new\n  \
gpuwarden serve --data-dir /var/lib/gpuwarden-new ..."
)]
pub struct RestoreArgs {
    /// The archive written by `gpuwarden backup`.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The data directory to restore into: missing or empty (see --force).
    #[arg(long, required_unless_present = "check")]
    pub data_dir: Option<PathBuf>,
    /// Restore into a non-empty directory: its contents are moved aside to
    /// DATA_DIR.pre-restore-<unix ms> first (gpuwarden must be stopped).
    #[arg(long)]
    pub force: bool,
    /// Only verify the archive (every path, size and SHA-256); write nothing.
    #[arg(long)]
    pub check: bool,
}

/// Whether `dir` exists and holds anything.
fn is_non_empty(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading --data-dir {}", dir.display())),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Moves everything in `dir` to a new sibling `<dir>.pre-restore-<ms>`; refuses while a
/// gpuwarden holds the store's lock.
fn move_aside(dir: &Path) -> Result<PathBuf> {
    let store = dir.join("store");
    if store.join(gpuwarden_store::embedded::LOCK_FILE).exists() {
        match gpuwarden_store::embedded::DirLock::acquire(&store) {
            Ok(lock) => drop(lock),
            Err(gpuwarden_store::StoreError::Locked { .. }) => bail!(
                "gpuwarden is running on {} (it holds {}); stop it before restoring over its data",
                dir.display(),
                store.join(gpuwarden_store::embedded::LOCK_FILE).display()
            ),
            Err(e) => return Err(e).context("checking whether gpuwarden runs on the data directory"),
        }
    }
    let mut aside = dir.as_os_str().to_owned();
    aside.push(format!(".pre-restore-{}", now_ms()));
    let aside = PathBuf::from(aside);
    std::fs::create_dir(&aside).with_context(|| format!("creating {}", aside.display()))?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let to = aside.join(entry.file_name());
        std::fs::rename(entry.path(), &to).with_context(|| {
            format!(
                "moving {} aside to {} (on another filesystem? then empty {} by hand)",
                entry.path().display(),
                to.display(),
                dir.display()
            )
        })?;
    }
    sync_dir(dir)?;
    if let Some(parent) = aside.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(aside)
}

/// Extracts the archive into `staging`, checking it again; returns the manifest.
fn extract(from: &Path, staging: &Path) -> Result<archive::Manifest> {
    let total = std::fs::metadata(from).map(|m| m.len()).unwrap_or(0);
    let pb = bar(total);
    let scan = archive::scan(from, &pb, &mut |name, reader: &mut dyn Read| {
        let path = staging.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::io::copy(reader, &mut out).with_context(|| format!("writing {}", path.display()))?;
        out.sync_all().with_context(|| format!("syncing {}", path.display()))?;
        Ok(())
    });
    pb.finish_and_clear();
    let scan = scan?;
    archive::check(from, &scan)?;
    Ok(scan.manifest)
}

/// Moves every file of `manifest` from `staging` to `dir`, then syncs the directories.
fn install(manifest: &archive::Manifest, staging: &Path, dir: &Path) -> Result<()> {
    let mut dirs = BTreeSet::new();
    for f in &manifest.files {
        let to = dir.join(&f.path);
        let parent = to.parent().unwrap_or(dir).to_path_buf();
        std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        std::fs::rename(staging.join(&f.path), &to).with_context(|| format!("moving {} into place", to.display()))?;
        // Every directory from the file's up to `dir`: new directory entries too.
        let mut d = parent;
        while d.starts_with(dir) && dirs.insert(d.clone()) && d != dir {
            match d.parent() {
                Some(p) => d = p.to_path_buf(),
                None => break,
            }
        }
    }
    dirs.insert(dir.to_path_buf());
    for d in dirs.iter().rev() {
        sync_dir(d)?;
    }
    std::fs::remove_dir_all(staging).with_context(|| format!("removing {}", staging.display()))?;
    sync_dir(dir)
}

pub fn restore(args: RestoreArgs) -> Result<ExitCode> {
    let non_empty = match &args.data_dir {
        Some(d) if !args.check => {
            let ne = is_non_empty(d)?;
            if ne && !args.force {
                bail!(
                    "--data-dir {} is not empty; restore into a new directory, or pass --force to move its contents aside first",
                    d.display()
                );
            }
            ne
        }
        _ => false,
    };

    // First reading: verify everything, write nothing.
    let total = std::fs::metadata(&args.from)
        .with_context(|| format!("backup archive {}", args.from.display()))?
        .len();
    let pb = bar(total);
    let verified = archive::verify(&args.from, &pb);
    pb.finish_and_clear();
    let manifest = verified?;
    let bytes: u64 = manifest.files.iter().map(|f| f.size).sum();
    let Some(dir) = args.data_dir.filter(|_| !args.check) else {
        println!(
            "{}: good — {} files, {bytes} bytes, every SHA-256 matches; taken {} from {} by gpuwarden {}",
            args.from.display(),
            manifest.files.len(),
            manifest.created,
            manifest.source_data_dir,
            manifest.gpuwarden_version
        );
        return Ok(ExitCode::SUCCESS);
    };

    let aside = if non_empty { Some(move_aside(&dir)?) } else { None };
    let created = !dir.exists();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating --data-dir {}", dir.display()))?;
    let staging = dir.join(STAGING);
    let result = extract(&args.from, &staging).and_then(|m| install(&m, &staging, &dir).map(|()| m));
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            if created {
                let _ = std::fs::remove_dir(&dir);
            }
            return Err(e.context(format!("restore into {} failed; nothing was restored", dir.display())));
        }
    };
    if let Some(aside) = aside {
        println!("the previous contents of {} are in {}", dir.display(), aside.display());
    }
    println!(
        "restored {} files ({bytes} bytes) into {}: the data of {} as of {}. Start gpuwarden with --data-dir {}",
        manifest.files.len(),
        dir.display(),
        manifest.source_data_dir,
        manifest.created,
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::super::{archive, snapshot};
    use super::*;
    use indicatif::ProgressBar;

    fn backup_of(src: &Path, to: &Path) {
        let snap = snapshot::take(src).unwrap();
        let m = archive::Manifest {
            format: archive::FORMAT.into(),
            format_version: archive::FORMAT_VERSION,
            gpuwarden_version: "test".into(),
            created: "now".into(),
            created_ms: 0,
            source_data_dir: src.display().to_string(),
            consistency: archive::CONSISTENCY.into(),
            files: vec![],
            skipped: vec![],
        };
        let mut out = File::create(to).unwrap();
        archive::write(&snap, m, &mut out, &ProgressBar::hidden()).unwrap();
    }

    fn args(from: &Path, dir: &Path, force: bool) -> RestoreArgs {
        RestoreArgs {
            from: from.to_path_buf(),
            data_dir: Some(dir.to_path_buf()),
            force,
            check: false,
        }
    }

    #[test]
    fn restores_nested_files_and_moves_a_non_empty_directory_aside_only_when_forced() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("audit/2026")).unwrap();
        std::fs::write(src.join("audit/2026/log"), b"chain").unwrap();
        std::fs::write(src.join("top.json"), b"{}").unwrap();
        let file = t.path().join("b.tar.gz");
        backup_of(&src, &file);

        let dst = t.path().join("dst");
        restore(args(&file, &dst, false)).unwrap();
        assert_eq!(std::fs::read(dst.join("audit/2026/log")).unwrap(), b"chain");
        assert_eq!(std::fs::read(dst.join("top.json")).unwrap(), b"{}");
        assert!(!dst.join(STAGING).exists());

        let err = format!("{:#}", restore(args(&file, &dst, false)).unwrap_err());
        assert!(err.contains("not empty") && err.contains("--force"), "{err}");

        std::fs::write(dst.join("stray"), b"x").unwrap();
        restore(args(&file, &dst, true)).unwrap();
        assert!(!dst.join("stray").exists());
        let aside: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("dst.pre-restore-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(aside[0].path().join("stray").exists());
    }

    #[test]
    fn force_refuses_while_gpuwarden_holds_the_lock() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a"), b"a").unwrap();
        let file = t.path().join("b.tar.gz");
        backup_of(&src, &file);
        let dst = t.path().join("dst");
        std::fs::create_dir_all(dst.join("store")).unwrap();
        let _held = gpuwarden_store::embedded::DirLock::acquire(&dst.join("store")).unwrap();
        let err = format!("{:#}", restore(args(&file, &dst, true)).unwrap_err());
        assert!(err.contains("gpuwarden is running"), "{err}");
        assert!(dst.join("store/LOCK").exists());
    }
}
