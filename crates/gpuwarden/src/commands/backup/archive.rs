//! The backup archive: one gzip-compressed tar file.
//!
//! Entries are the data directory's files under their relative paths, then
//! `MANIFEST.json` last (its hashes are computed while the files stream into the
//! archive, so a file is read once). The manifest names the format and its version, the
//! gpuwarden version that wrote it, when, from which directory, and every file's path,
//! size and SHA-256; `tar -xzf` and `sha256sum` are enough to check a backup by hand.
//!
//! Reading never trusts the archive: every entry must be a regular file under a plain
//! relative path (no `..`, no absolute path, no link or device: a hostile archive could
//! otherwise write outside the target directory), listed once in the manifest with the
//! same size and hash, and every listed file must be present.

use super::snapshot::Snapshot;
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Component, Path};

pub const MANIFEST: &str = "MANIFEST.json";
pub const FORMAT: &str = "gpuwarden-backup";
pub const FORMAT_VERSION: u32 = 1;
/// A manifest larger than this is not one of ours (a million files is ~150 MB of JSON;
/// a data directory has hundreds).
const MAX_MANIFEST: u64 = 256 * 1024 * 1024;

/// `MANIFEST.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `gpuwarden-backup`.
    pub format: String,
    /// Bumped when an older `restore` could not read the archive correctly.
    pub format_version: u32,
    /// The gpuwarden that wrote it.
    pub gpuwarden_version: String,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created: String,
    pub created_ms: i64,
    /// The data directory it was taken from.
    pub source_data_dir: String,
    /// What the backup guarantees, in words, for whoever opens the archive by hand.
    pub consistency: String,
    pub files: Vec<ManifestFile>,
    /// Entries of the data directory left out, with why.
    #[serde(default)]
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the data directory, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

pub const CONSISTENCY: &str = "every record acknowledged before the backup started is included; \
each file is that file's state at one instant during the snapshot (append-only files may end in a torn record, \
which gpuwarden drops at start, as after a crash)";

/// A reader that hashes and counts what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

fn hashing<R: Read>(inner: R) -> Hashing<R> {
    Hashing {
        inner,
        hasher: Sha256::new(),
        count: 0,
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn header(size: u64, mtime_s: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(mtime_s);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

/// Writes the archive of `snap` to `out`: the files, then the manifest. `manifest`
/// arrives with everything but `files`, which this fills in.
pub fn write(snap: &Snapshot, mut manifest: Manifest, out: impl Write, progress: &ProgressBar) -> Result<Manifest> {
    let mtime_s = u64::try_from(manifest.created_ms / 1000).unwrap_or(0);
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    manifest.files.clear();
    for f in &snap.files {
        progress.set_message(f.path.clone());
        let mut reader = hashing(progress.wrap_read((&f.file).take(f.len)));
        tar.append_data(&mut header(f.len, mtime_s), &f.path, &mut reader)
            .with_context(|| format!("writing {} into the archive", f.path))?;
        if reader.count != f.len {
            // Only a failed write that gpuwarden cut back can shrink an append-only
            // file below a length it had; the archive entry is now malformed.
            bail!(
                "{} shrank from {} to {} bytes while being copied (a write failed and was rolled back); run the backup again",
                f.path,
                f.len,
                reader.count
            );
        }
        manifest.files.push(ManifestFile {
            path: f.path.clone(),
            size: f.len,
            sha256: hex(&reader.hasher.finalize()),
        });
    }
    let json = serde_json::to_vec_pretty(&manifest)?;
    tar.append_data(&mut header(json.len() as u64, mtime_s), MANIFEST, json.as_slice())
        .context("writing the manifest into the archive")?;
    tar.into_inner()
        .and_then(|gz| gz.finish())
        .context("finishing the archive")?
        .flush()
        .context("finishing the archive")?;
    Ok(manifest)
}

/// Whether `p` is a plain relative path that stays inside the directory it is joined to.
pub fn is_safe_path(p: &str) -> bool {
    !p.is_empty() && !p.contains('\\') && Path::new(p).components().all(|c| matches!(c, Component::Normal(_)))
}

/// What one reading of the archive found: the manifest, and each file's size and hash.
pub struct Scan {
    pub manifest: Manifest,
    pub found: BTreeMap<String, (u64, String)>,
}

/// Reads the archive `path` once, checking each entry's path and type, and hands each
/// file's bytes to `sink` (which must read them to the end or return an error). Fails on
/// the first hostile or unreadable entry, naming it.
pub fn scan(
    path: &Path,
    progress: &ProgressBar,
    sink: &mut dyn FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<Scan> {
    let file = std::fs::File::open(path).with_context(|| format!("opening backup archive {}", path.display()))?;
    let gz = flate2::read::GzDecoder::new(progress.wrap_read(file));
    let mut archive = tar::Archive::new(gz);
    let mut found = BTreeMap::new();
    let mut manifest = None;
    let mut last = String::from("(start of archive)");
    let damaged = |after: &str| {
        format!(
            "backup archive {} is damaged or not a gpuwarden backup (after entry {after})",
            path.display()
        )
    };
    for entry in archive.entries().with_context(|| damaged(&last))? {
        let mut entry = entry.with_context(|| damaged(&last))?;
        let name = String::from_utf8(entry.path_bytes().into_owned()).map_err(|_| {
            anyhow::anyhow!(
                "{}: an entry after {last} has a non-UTF-8 name; refusing the archive",
                path.display()
            )
        })?;
        if !is_safe_path(&name) {
            bail!(
                "{}: entry '{name}' is not a plain relative path (absolute, '..' or '.' component); \
                 refusing a hostile archive, nothing was written",
                path.display()
            );
        }
        let kind = entry.header().entry_type();
        if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            bail!(
                "{}: entry '{name}' is a {kind:?}, not a regular file (links and devices are never in a gpuwarden backup); \
                 refusing a hostile archive, nothing was written",
                path.display()
            );
        }
        progress.set_message(name.clone());
        let read_err = |name: &str| format!("{}: reading entry {name} (the archive is damaged)", path.display());
        if name == MANIFEST {
            let mut text = Vec::new();
            (&mut entry)
                .take(MAX_MANIFEST)
                .read_to_end(&mut text)
                .with_context(|| read_err(&name))?;
            let m: Manifest = serde_json::from_slice(&text).with_context(|| {
                format!(
                    "{}: {MANIFEST} is not a valid manifest (the archive is damaged)",
                    path.display()
                )
            })?;
            if manifest.replace(m).is_some() {
                bail!("{}: {MANIFEST} appears twice; refusing the archive", path.display());
            }
        } else {
            let mut reader = hashing(&mut entry);
            sink(&name, &mut reader).with_context(|| read_err(&name))?;
            io::copy(&mut reader, &mut io::sink()).with_context(|| read_err(&name))?;
            let got = (reader.count, hex(&reader.hasher.finalize()));
            if found.insert(name.clone(), got).is_some() {
                bail!("{}: entry {name} appears twice; refusing the archive", path.display());
            }
        }
        last = name;
    }
    let Some(manifest) = manifest else {
        bail!(
            "{}: no {MANIFEST} in the archive: not a gpuwarden backup, or cut short (it is the last entry)",
            path.display()
        );
    };
    Ok(Scan { manifest, found })
}

/// Checks a scan against its manifest: format, and every file present once with its
/// size and hash. The error names the first file that does not match.
pub fn check(path: &Path, scan: &Scan) -> Result<()> {
    let m = &scan.manifest;
    if m.format != FORMAT {
        bail!("{}: manifest format is '{}', not '{FORMAT}'", path.display(), m.format);
    }
    if m.format_version > FORMAT_VERSION {
        bail!(
            "{}: backup format version {} was written by gpuwarden {}; this gpuwarden ({}) reads up to version {FORMAT_VERSION} — restore with a newer gpuwarden",
            path.display(),
            m.format_version,
            m.gpuwarden_version,
            env!("CARGO_PKG_VERSION")
        );
    }
    let mut listed = BTreeMap::new();
    for f in &m.files {
        if !is_safe_path(&f.path) {
            bail!(
                "{}: manifest lists '{}', not a plain relative path; refusing a hostile archive",
                path.display(),
                f.path
            );
        }
        if listed.insert(f.path.as_str(), f).is_some() {
            bail!(
                "{}: manifest lists {} twice; refusing the archive",
                path.display(),
                f.path
            );
        }
    }
    for (name, (size, sha)) in &scan.found {
        let Some(f) = listed.get(name.as_str()) else {
            bail!(
                "{}: entry {name} is not in the manifest; refusing the archive",
                path.display()
            );
        };
        if f.sha256 != *sha || f.size != *size {
            bail!(
                "{}: {name} is damaged: SHA-256 {sha} ({size} bytes) does not match the manifest's {} ({} bytes); nothing was restored",
                path.display(),
                f.sha256,
                f.size
            );
        }
    }
    if let Some(missing) = m.files.iter().find(|f| !scan.found.contains_key(&f.path)) {
        bail!(
            "{}: {} is in the manifest but not in the archive; nothing was restored",
            path.display(),
            missing.path
        );
    }
    Ok(())
}

/// Reads and checks the whole archive without writing anything.
pub fn verify(path: &Path, progress: &ProgressBar) -> Result<Manifest> {
    let scan = scan(path, progress, &mut |_, r| {
        io::copy(r, &mut io::sink())?;
        Ok(())
    })?;
    check(path, &scan)?;
    Ok(scan.manifest)
}

#[cfg(test)]
mod tests {
    use super::super::snapshot;
    use super::*;

    fn sample_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("store")).unwrap();
        std::fs::write(dir.path().join("store/wal-1.log"), vec![7u8; 10_000]).unwrap();
        std::fs::write(dir.path().join("silences.json"), b"[]").unwrap();
        dir
    }

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            gpuwarden_version: "test".into(),
            created: "2026-01-01T00:00:00Z".into(),
            created_ms: 1_767_225_600_000,
            source_data_dir: "/x".into(),
            consistency: CONSISTENCY.into(),
            files: vec![],
            skipped: vec![],
        }
    }

    fn archive_of(dir: &Path) -> (Vec<u8>, Manifest) {
        let snap = snapshot::take(dir).unwrap();
        let mut out = Vec::new();
        let m = write(&snap, manifest(), &mut out, &ProgressBar::hidden()).unwrap();
        (out, m)
    }

    #[test]
    fn round_trip_verifies_and_lists_every_file() {
        let dir = sample_dir();
        let (bytes, m) = archive_of(dir.path());
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["silences.json", "store/wal-1.log"]);
        let file = dir.path().join("b.tar.gz");
        std::fs::write(&file, bytes).unwrap();
        assert_eq!(verify(&file, &ProgressBar::hidden()).unwrap(), m);
    }

    #[test]
    fn a_changed_hash_names_the_file() {
        let dir = sample_dir();
        let (bytes, _) = archive_of(dir.path());
        // Recompress with one byte of the WAL's content flipped.
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        let at = tar.windows(16).position(|w| w == [7u8; 16]).unwrap() + 100;
        tar[at] ^= 0xff;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar).unwrap();
        let file = dir.path().join("b.tar.gz");
        std::fs::write(&file, gz.finish().unwrap()).unwrap();
        let err = format!("{:#}", verify(&file, &ProgressBar::hidden()).unwrap_err());
        assert!(err.contains("store/wal-1.log is damaged"), "{err}");
    }

    #[test]
    fn a_truncated_archive_is_refused() {
        let dir = sample_dir();
        let (bytes, _) = archive_of(dir.path());
        let file = dir.path().join("b.tar.gz");
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        assert!(verify(&file, &ProgressBar::hidden()).is_err());
    }

    #[test]
    fn unsafe_paths_are_recognised() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a", "a\\..\\b", "a//b/.."] {
            assert!(!is_safe_path(bad), "{bad}");
        }
        for good in ["store/wal-1.log", "a", "auth/tokens.json"] {
            assert!(is_safe_path(good), "{good}");
        }
    }
}
