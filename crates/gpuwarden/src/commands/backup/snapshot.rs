//! A consistent set of open files of a data directory, taken while gpuwarden may be
//! running and writing to it, without stopping or talking to it.
//!
//! # How
//!
//! 1. List the directory tree: every regular file's relative path and inode.
//! 2. Open every listed file and `fstat` it: the inode must be the listed one (else it was
//!    replaced meanwhile), and its length now is the length that will be copied.
//! 3. List again. If the listing is not exactly the first one (same paths, same inodes),
//!    something was created, deleted or renamed during 2: drop everything and start over
//!    (a few milliseconds of work; bounded number of tries).
//!
//! The copy itself happens later, from the open descriptors: a file deleted or renamed
//! over after step 3 (a WAL file removed by a seal, `incidents.log` replaced by its
//! compaction) is still read whole through its descriptor, so copying a large store
//! takes as long as it needs without holding up gpuwarden.
//!
//! # What "consistent" means
//!
//! Every file of gpuwarden's data directory is one of two kinds, a rule the code that
//! adds files must keep (ARCHITECTURE.md, "What a restart keeps"):
//!
//! * **append-only** (store WAL, `incidents.log`, the notification outbox, the ingest
//!   batch ledger, the audit log): a record is acknowledged only after it is written and
//!   fsynced, and acknowledged bytes are never changed in place. A prefix of such a file
//!   contains every record acknowledged before the prefix's length was read, and at most
//!   a torn last record, which the file's reader already drops at start (it is what a
//!   crash leaves too);
//! * **replaced whole** by writing a temporary file and renaming it over the old one
//!   (segments, `gpus.json`, silences, models, tokens): the descriptor holds one complete
//!   version.
//!
//! So each file in the backup is the state of that file at some instant between the
//! start of the backup and the end of step 2, and the set of files is the set that
//! existed throughout steps 1–3. Everything acknowledged before the backup started is in
//! it; some of what was acknowledged during those milliseconds may be too.
//!
//! Across files, the lengths are read in a fixed order: everything else first, `store/`
//! last. Other files refer to the store's contents (an outbox notification to an
//! incident, a batch id in the ingest ledger to the samples it carried), and each is
//! written only after what it refers to was acknowledged by the store, so a reference
//! in the backup always finds its target in the backup's store.
//!
//! A stopped instance (no lock held) is read the same way: the directory simply does
//! not change between the listings.
//!
//! # What is left out
//!
//! Lock files (`LOCK`, `*.lock`: the holder's pid, meaningless elsewhere) and temporary
//! files (`*.tmp`, `*.compact`, `*.partial`: unfinished writes that gpuwarden deletes or
//! ignores at start). Symbolic links and special files are not followed; they are listed
//! as skipped in the manifest.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often a changing directory is listed again before giving up.
const MAX_TRIES: u32 = 200;

/// One file of the snapshot: open, with the length to copy.
#[derive(Debug)]
pub struct SnapFile {
    /// Path relative to the data directory, `/`-separated.
    pub path: String,
    pub file: File,
    pub len: u64,
}

/// The snapshot: files in the order they are to be archived.
#[derive(Debug)]
pub struct Snapshot {
    pub files: Vec<SnapFile>,
    /// Entries not backed up, with why.
    pub skipped: Vec<(String, &'static str)>,
    /// Listings it took until the directory held still (1 when nothing changed).
    pub tries: u32,
}

impl Snapshot {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.len).sum()
    }
}

/// Why a file (or directory) is not backed up, or `None` when it is.
pub fn skip_reason(name: &str) -> Option<&'static str> {
    if name == "LOCK" || name.ends_with(".lock") {
        Some("lock file")
    } else if name.ends_with(".tmp") || name.ends_with(".compact") || name.ends_with(".partial") {
        Some("temporary file")
    } else {
        None
    }
}

/// `path → (device, inode)` of every regular file to back up, and what was skipped.
type Listing = BTreeMap<String, (u64, u64)>;

fn list(root: &Path) -> Result<(Listing, Vec<(String, &'static str)>)> {
    let mut files = Listing::new();
    let mut skipped = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // A subdirectory removed between being seen and being read: the second
            // listing will differ and the snapshot starts over.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !prefix.is_empty() => continue,
            Err(e) => return Err(e).with_context(|| format!("reading directory {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading directory {}", dir.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                bail!(
                    "{}: file name is not UTF-8; gpuwarden never writes such names, so move it out of the data directory",
                    entry.path().display()
                );
            };
            let rel = format!("{prefix}{name}");
            let meta = match entry.path().symlink_metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", entry.path().display())),
            };
            let ft = meta.file_type();
            if let Some(why) = skip_reason(name) {
                skipped.push((rel, why));
            } else if ft.is_dir() {
                stack.push((entry.path(), format!("{rel}/")));
            } else if !ft.is_file() {
                skipped.push((rel, "not a regular file (symbolic link, socket, …)"));
            } else {
                files.insert(rel, (meta.dev(), meta.ino()));
            }
        }
    }
    skipped.sort();
    Ok((files, skipped))
}

/// Archive order: everything outside `store/` first, then `store/` (see the module
/// documentation: what refers to the store is read before the store).
fn ordered(listing: &Listing) -> Vec<&String> {
    let (store, rest): (Vec<_>, Vec<_>) = listing.keys().partition(|p| p.starts_with("store/"));
    rest.into_iter().chain(store).collect()
}

/// Makes sure this process may hold `files` open (plus a margin for everything else):
/// raises the soft `RLIMIT_NOFILE` up to the hard limit when needed (the soft default,
/// often 1024, is below what a long-retention store can have).
fn ensure_open_files(files: usize) -> Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let need = files as u64 + 64;
    let lim = getrlimit(Resource::Nofile);
    if lim.current.is_none_or(|c| c >= need) {
        return Ok(());
    }
    let mut raised = lim;
    raised.current = lim.maximum;
    if lim.maximum.is_none_or(|m| m >= need) && setrlimit(Resource::Nofile, raised).is_ok() {
        return Ok(());
    }
    bail!(
        "the data directory has {files} files, and a backup holds them all open, but this process may open only {}          (ulimit -n, hard limit {}); raise the limit (e.g. LimitNOFILE= in the systemd unit, `ulimit -n`) and run the backup again",
        lim.current.unwrap_or(0),
        lim.maximum.map_or("unlimited".to_string(), |m| m.to_string())
    )
}

/// Takes the snapshot of `root` (see the module documentation).
pub fn take(root: &Path) -> Result<Snapshot> {
    let meta = std::fs::metadata(root).with_context(|| format!("data directory {}", root.display()))?;
    if !meta.is_dir() {
        bail!("data directory {} is not a directory", root.display());
    }
    for tries in 1..=MAX_TRIES {
        let (before, skipped) = list(root)?;
        ensure_open_files(before.len())?;
        let mut files = Vec::with_capacity(before.len());
        let mut stable = true;
        for path in ordered(&before) {
            let full = root.join(path);
            let file = match File::open(&full) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    stable = false;
                    break;
                }
                Err(e) => return Err(e).with_context(|| format!("opening {}", full.display())),
            };
            let m = file.metadata().with_context(|| format!("reading {}", full.display()))?;
            if (m.dev(), m.ino()) != before[path] {
                stable = false;
                break;
            }
            files.push(SnapFile {
                path: path.clone(),
                file,
                len: m.len(),
            });
        }
        if stable && list(root)?.0 == before {
            return Ok(Snapshot { files, skipped, tries });
        }
        std::thread::sleep(Duration::from_millis(u64::from(tries.min(20))));
    }
    bail!(
        "the data directory {} kept changing (files created, renamed or deleted) through {MAX_TRIES} listings; \
         gpuwarden may be compacting or sealing without pause — try again, or stop it for the backup",
        root.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn lists_nested_files_skips_locks_and_temps_and_puts_the_store_last() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("store")).unwrap();
        std::fs::create_dir_all(d.join("auth")).unwrap();
        std::fs::create_dir_all(d.join("z-new/deeper")).unwrap();
        for f in [
            "store/wal-1.log",
            "store/LOCK",
            "store/seg-1.seg.tmp",
            "auth/tokens.json",
            "outbox.log.compact",
            "z-new/deeper/x",
            "ingest-batches.log",
        ] {
            std::fs::write(d.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        let snap = take(d).unwrap();
        let paths: Vec<&str> = snap.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "auth/tokens.json",
                "ingest-batches.log",
                "z-new/deeper/x",
                "store/wal-1.log"
            ]
        );
        let skipped: Vec<&str> = snap.skipped.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            skipped,
            ["link", "outbox.log.compact", "store/LOCK", "store/seg-1.seg.tmp"]
        );
        assert_eq!(snap.tries, 1);
    }

    #[test]
    fn the_length_is_fixed_at_the_snapshot_and_a_deleted_file_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        std::fs::write(&path, b"acknowledged").unwrap();
        let snap = take(dir.path()).unwrap();
        // Written after the snapshot: beyond the recorded length.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b" later")
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let f = &snap.files[0];
        let mut got = Vec::new();
        let mut file = &f.file;
        file.rewind().unwrap();
        file.take(f.len).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"acknowledged");
    }

    /// A writer that seals like the store (new WAL, segment written to a temporary name
    /// and renamed, old WAL deleted) while snapshots are taken: no snapshot may miss
    /// both the segment and the WAL of a generation (what a torn listing would do).
    #[test]
    fn snapshots_during_seals_never_lose_a_generation() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        std::fs::write(d.join("wal-1"), b"w").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sealer = {
            let (d, stop) = (d.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut k = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    std::fs::write(d.join(format!("wal-{}", k + 1)), b"w").unwrap();
                    std::fs::write(d.join(format!("seg-{k}.tmp")), b"s").unwrap();
                    std::fs::rename(d.join(format!("seg-{k}.tmp")), d.join(format!("seg-{k}"))).unwrap();
                    std::fs::remove_file(d.join(format!("wal-{k}"))).unwrap();
                    // Retention: the directory stays small however long the test runs.
                    if k > 20 {
                        std::fs::remove_file(d.join(format!("seg-{}", k - 20))).unwrap();
                    }
                    k += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        let mut retried = 0;
        let (mut snapshots, start) = (0, std::time::Instant::now());
        while snapshots < 300 || start.elapsed() < Duration::from_millis(300) {
            snapshots += 1;
            let snap = take(&d).unwrap();
            retried += snap.tries - 1;
            let names: std::collections::HashSet<&str> = snap.files.iter().map(|f| f.path.as_str()).collect();
            let newest = names
                .iter()
                .filter_map(|n| n.strip_prefix("wal-").and_then(|k| k.parse::<u64>().ok()))
                .max()
                .expect("a WAL file in every snapshot");
            for k in newest.saturating_sub(10).max(1)..=newest {
                assert!(
                    names.contains(format!("seg-{k}").as_str()) || names.contains(format!("wal-{k}").as_str()),
                    "generation {k} lost: {names:?}"
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        sealer.join().unwrap();
        eprintln!("{snapshots} snapshots during seals; listed again {retried} times");
    }

    #[test]
    fn a_missing_data_directory_is_an_error_naming_it() {
        let err = take(Path::new("/nonexistent/gpuwarden-data")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/gpuwarden-data"), "{err:#}");
    }
}
