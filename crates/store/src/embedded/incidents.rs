//! Incident persistence: `incidents.log`, the latest version of every incident.
//!
//! # Format
//!
//! An 8-byte magic (`GWINC\0\0\x01`), then records framed exactly like the WAL's
//! (`[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`, see [`super::wal`]).
//! A payload is a JSON array of whole incidents (`gpuwarden_model::Incident`), one upsert
//! batch. Replayed in order, the last version of each id wins. JSON because incidents
//! are few, change rarely, and a person reading the file in an emergency should be able
//! to.
//!
//! An upsert writes its record(s) and `fsync`s before returning `Ok`. Once the file is
//! more than twice the size of the live data (plus 64 KiB, so small logs are left alone)
//! it is **compacted**: the live incidents are written to `incidents.log.tmp`, synced,
//! renamed over the log, and the directory synced. A crash before the rename leaves the
//! old log (the `.tmp` is deleted at open); after it, the new one. Resolved incidents
//! older than the incident retention are dropped by [`IncidentLog::prune_resolved`]
//! through the same rewrite.
//!
//! # Corruption policy
//!
//! * An incomplete record (or only zeros) at the end of the file is a torn write from a crash:
//!   truncated with a warning. Only the batch being written when the process died can
//!   be in it, and it was never acknowledged.
//! * Any other bad record (a whole one with a bad CRC, one that does not decode) or a bad
//!   magic is damage: a copy of the file is kept as evidence (`*.corrupt`, a hard
//!   link), everything readable before and after the damage is kept, and a
//!   clean log is rewritten from it. Losing one version of some incidents beats refusing
//!   to start a monitoring service. Records after the damage are found again by
//!   scanning for the next frame whose CRC matches and whose payload is a JSON array.
//!
//! Compaction writes one record per incident, so damage to one record costs one
//! incident's latest version, not the whole log. Damage is counted in
//! `StoreStats::damaged_*`.
//!
//! Nothing read from disk can make it panic. A failed write or sync returns the error;
//! the next upsert cuts the file back to its last whole record and tries again, so a
//! full disk that is freed brings upserts back without a restart.

use super::fault::{self, Faults};
use super::wal::{self, Frame};
use crate::StoreError;
use gpuwarden_model::{Incident, IncidentState, TimestampMs};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

pub const FILE: &str = "incidents.log";
const MAGIC: &[u8; 8] = b"GWINC\x00\x00\x01";
/// Compaction waits until the file exceeds twice the live data by at least this much.
const COMPACT_SLACK: u64 = 64 * 1024;
/// Largest JSON payload per record when a batch is split (well under the frame limit).
const RECORD_TARGET: usize = 4 * 1024 * 1024;

/// The latest version of an incident and the size of its JSON (for compaction).
#[derive(Debug)]
struct Live {
    incident: Incident,
    bytes: u64,
}

#[derive(Debug)]
struct Inner {
    /// Opened in append mode; `None` when a failed rewrite left no usable handle (the
    /// next upsert reopens it).
    file: Option<File>,
    /// A failed write may have left part of a record after `len`, or a rewrite's rename
    /// is not known durable: the next upsert repairs that before writing.
    dirty: bool,
    /// Bytes of the file that are whole records (all valid).
    len: u64,
    live: BTreeMap<String, Live>,
    live_bytes: u64,
}

/// The incident log of one store directory.
pub struct IncidentLog {
    dir: PathBuf,
    path: PathBuf,
    sync: bool,
    faults: Faults,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for IncidentLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncidentLog")
            .field("path", &self.path)
            .field("sync", &self.sync)
            .field("faults", &self.faults.is_some())
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl IncidentLog {
    /// Opens (creating if needed) `dir/incidents.log`, loading every incident. Stale
    /// `*.tmp` files must have been removed by the caller.
    pub(crate) fn open(dir: &Path, sync: bool, damage: &super::Damage, faults: Faults) -> Result<Self, StoreError> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        let loaded = parse(&path, &bytes);
        let log = IncidentLog {
            dir: dir.to_path_buf(),
            path: path.clone(),
            sync,
            faults,
            inner: Mutex::new(Inner {
                file: None,
                dirty: false,
                len: 0,
                live: BTreeMap::new(),
                live_bytes: 0,
            }),
        };
        let mut inner = log.inner.lock();
        for inc in loaded.incidents {
            insert_live(&mut inner, inc)?;
        }
        match loaded.outcome {
            Outcome::Clean if !bytes.is_empty() => {
                inner.file = Some(OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?);
                inner.len = bytes.len() as u64;
            }
            Outcome::TornTail { at, reason } => {
                tracing::warn!(
                    path = %path.display(), offset = at, dropped_bytes = bytes.len() as u64 - at, reason,
                    "truncating torn tail of the incident log (a batch that was never acknowledged)"
                );
                let f = OpenOptions::new().append(true).open(&path).map_err(io_err(&path))?;
                f.set_len(at).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
                inner.file = Some(f);
                inner.len = at;
            }
            Outcome::Damaged {
                at,
                reason,
                records_lost,
                bytes_lost,
            } => {
                let err = StoreError::Corrupt {
                    path: path.clone(),
                    offset: at,
                    reason: format!("{reason}; {records_lost} record(s), {bytes_lost} byte(s) lost, the rest kept"),
                };
                super::keep_copy(&path, &err)?;
                log.rewrite(&mut inner)?;
                damage.note(records_lost, bytes_lost);
            }
            // Missing or empty (a crash while creating it): start a fresh one.
            Outcome::Clean => log.rewrite(&mut inner)?,
        }
        drop(inner);
        Ok(log)
    }

    /// Records new versions of incidents; durable when it returns `Ok`.
    pub fn upsert(&self, incidents: &[Incident]) -> Result<(), StoreError> {
        if incidents.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let mut sizes = Vec::with_capacity(incidents.len());
        let mut json = Vec::new();
        for inc in incidents {
            let one = serde_json::to_vec(inc).map_err(|e| StoreError::Encoding {
                what: format!("incident {}", inc.id),
                reason: e.to_string(),
            })?;
            sizes.push(one.len() as u64);
            if !json.is_empty() && json.len() + one.len() > RECORD_TARGET {
                close_record(&mut json, &mut buf);
            }
            json.push(if json.is_empty() { b'[' } else { b',' });
            json.extend_from_slice(&one);
        }
        close_record(&mut json, &mut buf);

        let mut inner = self.inner.lock();
        let written = self.repair(&mut inner).and_then(|file| {
            fault::write_all(&self.faults, file, &self.path, &buf).and_then(|()| {
                if self.sync {
                    fault::sync_data(&self.faults, file, &self.path)
                } else {
                    Ok(())
                }
            })
        });
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, "incident log write failed; the upsert is refused and the next one retries");
            // Cut the partial record off now; if that fails too, the next upsert does.
            let len = inner.len;
            let cut = inner.file.as_mut().is_some_and(|f| cut_to(f, len).is_ok());
            inner.dirty = !cut;
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        inner.len += buf.len() as u64;
        for (inc, bytes) in incidents.iter().zip(sizes) {
            let old = inner.live.insert(
                inc.id.clone(),
                Live {
                    incident: inc.clone(),
                    bytes,
                },
            );
            inner.live_bytes = inner.live_bytes.saturating_sub(old.map_or(0, |o| o.bytes)) + bytes;
        }
        if inner.len > inner.live_bytes.saturating_mul(2) + COMPACT_SLACK {
            // The upsert is durable already; a failed compaction is logged, not returned.
            if let Err(e) = self.rewrite(&mut inner) {
                tracing::error!(path = %self.path.display(), error = %e, "compacting the incident log failed");
            }
        }
        Ok(())
    }

    /// The latest version of every incident, by id.
    pub fn all(&self) -> Vec<Incident> {
        self.inner.lock().live.values().map(|l| l.incident.clone()).collect()
    }

    /// Drops resolved incidents resolved before `cutoff` and rewrites the log without
    /// them. Returns how many were dropped.
    pub fn prune_resolved(&self, cutoff: TimestampMs) -> Result<usize, StoreError> {
        let mut inner = self.inner.lock();
        let expired: Vec<String> = inner
            .live
            .values()
            .filter(|l| l.incident.state == IncidentState::Resolved)
            .filter(|l| l.incident.resolved_ms.is_some_and(|r| r < cutoff))
            .map(|l| l.incident.id.clone())
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        for id in &expired {
            if let Some(old) = inner.live.remove(id) {
                inner.live_bytes = inner.live_bytes.saturating_sub(old.bytes);
            }
        }
        self.rewrite(&mut inner)?;
        tracing::info!(
            incidents = expired.len(),
            cutoff,
            "incident retention dropped resolved incidents"
        );
        Ok(expired.len())
    }

    /// Writes the live incidents to a new file and swaps it in (tmp, sync, rename, dir
    /// sync). The new file's handle is opened before the rename, so after it appends go
    /// to the new inode without reopening anything.
    fn rewrite(&self, inner: &mut Inner) -> Result<(), StoreError> {
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        // One record per incident: damage to one record then costs one incident.
        let mut buf = MAGIC.to_vec();
        let mut json = Vec::new();
        for l in inner.live.values() {
            let one = serde_json::to_vec(&l.incident).map_err(|e| StoreError::Encoding {
                what: format!("incident {}", l.incident.id),
                reason: e.to_string(),
            })?;
            json.push(b'[');
            json.extend_from_slice(&one);
            close_record(&mut json, &mut buf);
        }
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        fault::write_all(&self.faults, &mut f, &tmp, &buf).map_err(io_err(&tmp))?;
        if self.sync {
            fault::sync_data(&self.faults, &f, &tmp).map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        // From here the old handle points at an unlinked file: swap before anything can fail.
        inner.file = Some(f);
        inner.len = buf.len() as u64;
        inner.dirty = false;
        if self.sync {
            if let Err(e) = super::sync_dir(&self.dir) {
                // The rename may not survive a crash: the next upsert syncs the
                // directory again before it writes (see `repair`).
                inner.dirty = true;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Makes the file fit to append to after a failure: reopens it if needed, cuts off a
    /// partial record and syncs the directory. Returns the handle to write to.
    fn repair<'a>(&self, inner: &'a mut Inner) -> std::io::Result<&'a mut File> {
        if inner.file.is_none() {
            inner.file = Some(OpenOptions::new().append(true).open(&self.path)?);
            inner.dirty = true;
        }
        if inner.dirty {
            let len = inner.len;
            if let Some(f) = inner.file.as_mut() {
                cut_to(f, len)?;
            }
            if self.sync {
                File::open(&self.dir)?.sync_all()?;
            }
            inner.dirty = false;
        }
        inner
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("incident log file handle missing"))
    }
}
/// Truncates `f` to `len` (dropping a partial record), moves the write position there
/// (the compacted file's handle is not in append mode) and makes it durable.
fn cut_to(f: &mut File, len: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    f.set_len(len)?;
    f.seek(SeekFrom::Start(len))?;
    f.sync_all()
}

/// Ends the JSON array in `json` (if any) and frames it into `out`.
fn close_record(json: &mut Vec<u8>, out: &mut Vec<u8>) {
    if json.is_empty() {
        return;
    }
    json.push(b']');
    wal::frame(json, out);
    json.clear();
}

fn insert_live(inner: &mut Inner, inc: Incident) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(&inc)
        .map_err(|e| StoreError::Encoding {
            what: format!("incident {}", inc.id),
            reason: e.to_string(),
        })?
        .len() as u64;
    let old = inner.live.insert(inc.id.clone(), Live { incident: inc, bytes });
    inner.live_bytes = inner.live_bytes.saturating_sub(old.map_or(0, |o| o.bytes)) + bytes;
    Ok(())
}

/// What reading the file found.
enum Outcome {
    Clean,
    TornTail {
        at: u64,
        reason: &'static str,
    },
    Damaged {
        at: u64,
        reason: String,
        records_lost: u64,
        bytes_lost: u64,
    },
}

struct Loaded {
    /// Every decoded version, in file order (later wins).
    incidents: Vec<Incident>,
    outcome: Outcome,
}

/// Reads every record it can. Never fails: damage is reported in the outcome. A bad
/// record (or header) is skipped by scanning for the next valid one, so damage costs only
/// the damaged records.
fn parse(path: &Path, bytes: &[u8]) -> Loaded {
    let mut incidents = Vec::new();
    if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
        // Empty, or a crash while writing the magic of a fresh file.
        return Loaded {
            incidents,
            outcome: Outcome::Clean,
        };
    }
    let mut first_damage: Option<(u64, String)> = None;
    let (mut records_lost, mut bytes_lost) = (0u64, 0u64);
    if bytes.get(..MAGIC.len()) != Some(MAGIC.as_slice()) {
        tracing::error!(path = %path.display(), offset = 0, "incident log header is damaged; reading the records after it");
        first_damage = Some((0, "not a gpuwarden incident log (bad magic)".into()));
        bytes_lost += bytes.len().min(MAGIC.len()) as u64;
    }
    let mut pos = MAGIC.len();
    while pos < bytes.len() {
        let reason = match wal::read_frame(bytes, pos) {
            Frame::Record { payload, next } => match serde_json::from_slice::<Vec<Incident>>(payload) {
                Ok(v) => {
                    incidents.extend(v);
                    pos = next;
                    continue;
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), offset = pos, error = %e, "incident log record with a valid CRC does not decode; skipping it");
                    first_damage.get_or_insert((pos as u64, format!("record does not decode: {e}")));
                    records_lost += 1;
                    bytes_lost += (next - pos) as u64;
                    pos = next;
                    continue;
                }
            },
            Frame::Bad(reason) => reason,
        };
        match resync(bytes, pos + 1) {
            Some(next) => {
                tracing::error!(path = %path.display(), offset = pos, skipped_bytes = next - pos, reason, "damaged record in the incident log; skipping to the next valid one");
                first_damage.get_or_insert((pos as u64, reason.to_string()));
                records_lost += 1;
                bytes_lost += (next - pos) as u64;
                pos = next;
            }
            None if first_damage.is_none() && wal::torn_tail(bytes, pos) => {
                return Loaded {
                    incidents,
                    outcome: Outcome::TornTail { at: pos as u64, reason },
                };
            }
            // A whole last record that is wrong, or damage earlier and a bad tail: the
            // rewrite drops the tail.
            None => {
                first_damage.get_or_insert((pos as u64, reason.to_string()));
                records_lost += 1;
                bytes_lost += (bytes.len() - pos) as u64;
                break;
            }
        }
    }
    let outcome = match first_damage {
        Some((at, reason)) => Outcome::Damaged {
            at,
            reason,
            records_lost,
            bytes_lost,
        },
        None => Outcome::Clean,
    };
    Loaded { incidents, outcome }
}

/// The first offset at or after `from` where a valid record holding a JSON array starts.
/// Only frames whose payload starts with `[` are checksummed, which keeps the scan cheap.
fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    wal::resync(bytes, from, |b| b == b'[')
}
