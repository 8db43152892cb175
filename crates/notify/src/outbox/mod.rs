//! The durable outbox: every (incident transition × matched sink) is written here and
//! fsynced before any attempt to send it, and stays until it is delivered or marked
//! failed. After a restart, whatever was pending is sent again.
//!
//! Why an append log and not SQLite: the access pattern is append + mark + occasional
//! rewrite, one writer, no queries beyond "the next pending entries of sink X" (kept in
//! memory); a CRC-framed log ([`log`]) gives the same crash guarantees as the store's WAL
//! without a C dependency and with one fsync per batch. Compaction rewrites the live
//! entries (pending ones plus the last `keep_done` done ones per sink) to a new file and
//! renames it over the old one.
//!
//! The outbox also owns the **transition sequence** per incident: each notable change of
//! an incident gets the next number, and the pair is the delivery key
//! (`inc-000042#3`). A change handed over twice (same incident, same state, same time)
//! gets no new number and no new entries, so a repeat is harmless.

pub mod log;
#[cfg(feature = "postgres")]
pub mod shared;

use crate::message::Notification;
use gpuwarden_model::TimestampMs;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    Pending,
    Delivered,
    /// Given up (rejected by the receiver, or undelivered for `give_up_after`).
    Failed,
    /// Matched a silence: recorded, never sent.
    Silenced,
}

/// One message for one sink.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    pub sink: String,
    pub notification: Arc<Notification>,
    pub state: EntryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_ms: TimestampMs,
    pub updated_ms: TimestampMs,
    /// Id of the silence that matched, for silenced entries.
    pub silenced_by: Option<String>,
}

/// An entry to add.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub sink: String,
    pub notification: Arc<Notification>,
    pub silenced_by: Option<String>,
}

/// A failure of the outbox's own file.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("outbox {path}: record {index} is not valid: {source}")]
    Decode {
        path: PathBuf,
        index: usize,
        source: serde_json::Error,
    },
    /// The outbox in PostgreSQL (shared by instances) failed.
    #[error("outbox in the database: {0}")]
    Database(String),
}

/// Where the outbox keeps its entries: the seam between the notifier and its storage.
/// [`Outbox`] (a log file in the data directory) is the default; [`shared::PgOutbox`]
/// keeps them in PostgreSQL when the store is there, so that instances sharing the
/// database deliver each entry once between them.
pub trait OutboxStore: Send + Sync {
    /// The sequence number the next transition of `incident` gets, or `None` when
    /// `fingerprint` equals its last transition's (a repeat).
    fn next_seq(&self, incident: &str, fingerprint: u64) -> Result<Option<u64>, OutboxError>;
    /// Records transitions and their entries durably; returns the (sink, id) of the new
    /// pending entries.
    fn enqueue(
        &self,
        transitions: &[(String, u64, u64)],
        entries: Vec<NewEntry>,
        now_ms: TimestampMs,
    ) -> Result<Vec<(String, u64)>, OutboxError>;
    /// The pending entries of `sink` to send now, oldest first, at most `max` — claimed
    /// for this instance where the outbox is shared.
    fn claim(&self, sink: &str, max: usize, now_ms: TimestampMs) -> Result<Vec<Entry>, OutboxError>;
    fn mark_delivered(&self, ids: &[u64], now_ms: TimestampMs) -> Result<(), OutboxError>;
    fn mark_failed(&self, ids: &[u64], error: &str, now_ms: TimestampMs) -> Result<(), OutboxError>;
    fn mark_attempt(&self, ids: &[u64], error: &str, now_ms: TimestampMs) -> Result<(), OutboxError>;
    /// How many entries of `sink` wait for delivery.
    fn pending_count(&self, sink: &str) -> usize;
    /// Counts per state of `sink`'s kept entries.
    fn counts(&self, sink: &str) -> SinkCounts;
    /// Counts and the newest `limit` entries over the kept entries that pass `visible`.
    fn counts_and_recent_where(
        &self,
        sink: &str,
        limit: usize,
        visible: &dyn Fn(&Notification) -> bool,
    ) -> (SinkCounts, Vec<Entry>);
    /// The kept entries of `sink`, newest first, at most `limit`.
    fn recent(&self, sink: &str, limit: usize) -> Vec<Entry>;
    /// True when other processes add and claim entries too: senders must poll, not only
    /// wait to be woken by this process's enqueues.
    fn shared(&self) -> bool {
        false
    }
}

impl OutboxStore for Outbox {
    fn next_seq(&self, incident: &str, fingerprint: u64) -> Result<Option<u64>, OutboxError> {
        Ok(Outbox::next_seq(self, incident, fingerprint))
    }
    fn enqueue(
        &self,
        transitions: &[(String, u64, u64)],
        entries: Vec<NewEntry>,
        now_ms: TimestampMs,
    ) -> Result<Vec<(String, u64)>, OutboxError> {
        Outbox::enqueue(self, transitions, entries, now_ms)
    }
    fn claim(&self, sink: &str, max: usize, _now_ms: TimestampMs) -> Result<Vec<Entry>, OutboxError> {
        Ok(self.pending(sink, max))
    }
    fn mark_delivered(&self, ids: &[u64], now_ms: TimestampMs) -> Result<(), OutboxError> {
        Outbox::mark_delivered(self, ids, now_ms)
    }
    fn mark_failed(&self, ids: &[u64], error: &str, now_ms: TimestampMs) -> Result<(), OutboxError> {
        Outbox::mark_failed(self, ids, error, now_ms)
    }
    fn mark_attempt(&self, ids: &[u64], error: &str, now_ms: TimestampMs) -> Result<(), OutboxError> {
        Outbox::mark_attempt(self, ids, error, now_ms)
    }
    fn pending_count(&self, sink: &str) -> usize {
        Outbox::pending_count(self, sink)
    }
    fn counts(&self, sink: &str) -> SinkCounts {
        Outbox::counts(self, sink)
    }
    fn counts_and_recent_where(
        &self,
        sink: &str,
        limit: usize,
        visible: &dyn Fn(&Notification) -> bool,
    ) -> (SinkCounts, Vec<Entry>) {
        Outbox::counts_and_recent_where(self, sink, limit, visible)
    }
    fn recent(&self, sink: &str, limit: usize) -> Vec<Entry> {
        Outbox::recent(self, sink, limit)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
enum Record {
    Seq {
        incident: String,
        seq: u64,
        fp: u64,
    },
    Enqueue {
        id: u64,
        sink: String,
        created_ms: TimestampMs,
        n: Box<Notification>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        silenced_by: Option<String>,
    },
    Attempt {
        id: u64,
        attempts: u32,
        ts_ms: TimestampMs,
        error: String,
    },
    Delivered {
        id: u64,
        ts_ms: TimestampMs,
    },
    Failed {
        id: u64,
        ts_ms: TimestampMs,
        error: String,
    },
}

/// Counts of one sink's entries (those kept: pending ones and the latest done ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SinkCounts {
    pub pending: usize,
    pub delivered: usize,
    pub failed: usize,
    pub silenced: usize,
}

struct Inner {
    file: BufWriter<File>,
    entries: BTreeMap<u64, Entry>,
    /// Pending entry ids per sink, oldest first (delivery order).
    pending: HashMap<String, BTreeSet<u64>>,
    /// Done entry ids per sink, oldest first (pruned beyond `keep_done`).
    done: HashMap<String, VecDeque<u64>>,
    /// Incident → (last transition seq, fingerprint of that transition).
    seqs: HashMap<String, (u64, u64)>,
    next_id: u64,
    records_since_compaction: usize,
}

/// The outbox of one gpuwarden (one directory).
pub struct Outbox {
    path: PathBuf,
    keep_done: usize,
    inner: parking_lot::Mutex<Inner>,
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, replaying its log.
    pub fn open(dir: &Path, keep_done: usize) -> Result<Outbox, OutboxError> {
        let io = |source| OutboxError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join("outbox.log");
        let read = log::read_and_repair(&path).map_err(|source| OutboxError::Io {
            path: path.clone(),
            source,
        })?;
        if read.dropped_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                bytes = read.dropped_bytes,
                "outbox: dropped a torn record at the end of the log (a crash during a write that was never acknowledged)"
            );
        }
        let file = log::open_append(&path).map_err(|source| OutboxError::Io {
            path: path.clone(),
            source,
        })?;
        let mut inner = Inner {
            file: BufWriter::new(file),
            entries: BTreeMap::new(),
            pending: HashMap::new(),
            done: HashMap::new(),
            seqs: HashMap::new(),
            next_id: 1,
            records_since_compaction: read.payloads.len(),
        };
        for (index, p) in read.payloads.iter().enumerate() {
            let rec: Record = serde_json::from_slice(p).map_err(|source| OutboxError::Decode {
                path: path.clone(),
                index,
                source,
            })?;
            inner.apply(rec, keep_done);
        }
        let outbox = Outbox {
            path,
            keep_done,
            inner: parking_lot::Mutex::new(inner),
        };
        {
            let mut inner = outbox.inner.lock();
            if inner.records_since_compaction > 4 * inner.entries.len() + 64 {
                outbox.compact(&mut inner)?;
            }
        }
        Ok(outbox)
    }

    /// The sequence number the next transition of `incident` gets, or `None` when
    /// `fingerprint` equals its last transition's (a repeat).
    pub fn next_seq(&self, incident: &str, fingerprint: u64) -> Option<u64> {
        match self.inner.lock().seqs.get(incident) {
            Some((_, fp)) if *fp == fingerprint => None,
            Some((seq, _)) => Some(seq + 1),
            None => Some(1),
        }
    }

    /// Records transitions and their entries, durably (one fsync), and returns the ids
    /// of the new pending entries.
    pub fn enqueue(
        &self,
        transitions: &[(String, u64, u64)],
        entries: Vec<NewEntry>,
        now_ms: TimestampMs,
    ) -> Result<Vec<(String, u64)>, OutboxError> {
        let mut inner = self.inner.lock();
        let mut records = Vec::with_capacity(transitions.len() + entries.len());
        for (incident, seq, fp) in transitions {
            records.push(Record::Seq {
                incident: incident.clone(),
                seq: *seq,
                fp: *fp,
            });
        }
        let mut ids = Vec::new();
        for e in entries {
            let id = inner.next_id;
            inner.next_id += 1;
            if e.silenced_by.is_none() {
                ids.push((e.sink.clone(), id));
            }
            records.push(Record::Enqueue {
                id,
                sink: e.sink,
                created_ms: now_ms,
                n: Box::new((*e.notification).clone()),
                silenced_by: e.silenced_by,
            });
        }
        self.write(&mut inner, records, true)?;
        Ok(ids)
    }

    /// Marks entries delivered, durably.
    pub fn mark_delivered(&self, ids: &[u64], now_ms: TimestampMs) -> Result<(), OutboxError> {
        let records = ids.iter().map(|&id| Record::Delivered { id, ts_ms: now_ms }).collect();
        self.write(&mut self.inner.lock(), records, true)
    }

    /// Marks entries failed for good, durably.
    pub fn mark_failed(&self, ids: &[u64], error: &str, now_ms: TimestampMs) -> Result<(), OutboxError> {
        let records = ids
            .iter()
            .map(|&id| Record::Failed {
                id,
                ts_ms: now_ms,
                error: error.to_string(),
            })
            .collect();
        self.write(&mut self.inner.lock(), records, true)
    }

    /// Records a failed attempt (not fsynced: losing an attempt count is harmless).
    pub fn mark_attempt(&self, ids: &[u64], error: &str, now_ms: TimestampMs) -> Result<(), OutboxError> {
        let mut inner = self.inner.lock();
        let records = ids
            .iter()
            .map(|&id| Record::Attempt {
                id,
                attempts: inner.entries.get(&id).map_or(1, |e| e.attempts + 1),
                ts_ms: now_ms,
                error: error.to_string(),
            })
            .collect();
        self.write(&mut inner, records, false)
    }

    /// The oldest pending entries of `sink`, at most `max`.
    pub fn pending(&self, sink: &str, max: usize) -> Vec<Entry> {
        let inner = self.inner.lock();
        inner
            .pending
            .get(sink)
            .into_iter()
            .flatten()
            .take(max)
            .filter_map(|id| inner.entries.get(id).cloned())
            .collect()
    }

    /// How many entries of `sink` wait for delivery.
    pub fn pending_count(&self, sink: &str) -> usize {
        self.inner.lock().pending.get(sink).map_or(0, |p| p.len())
    }

    /// Counts per state of `sink`'s kept entries.
    pub fn counts(&self, sink: &str) -> SinkCounts {
        let inner = self.inner.lock();
        let mut c = SinkCounts {
            pending: inner.pending.get(sink).map_or(0, |p| p.len()),
            ..SinkCounts::default()
        };
        for id in inner.done.get(sink).into_iter().flatten() {
            match inner.entries.get(id).map(|e| e.state) {
                Some(EntryState::Delivered) => c.delivered += 1,
                Some(EntryState::Failed) => c.failed += 1,
                Some(EntryState::Silenced) => c.silenced += 1,
                _ => {}
            }
        }
        c
    }

    /// Counts per state and the newest `limit` entries of `sink`, over only the kept
    /// entries whose notification passes `visible` (a tenant's view: its aggregates count
    /// only what it may see).
    pub fn counts_and_recent_where(
        &self,
        sink: &str,
        limit: usize,
        visible: &dyn Fn(&Notification) -> bool,
    ) -> (SinkCounts, Vec<Entry>) {
        let inner = self.inner.lock();
        let mut c = SinkCounts::default();
        let mut recent = Vec::new();
        for e in inner.entries.values().rev().filter(|e| e.sink == sink) {
            if !visible(&e.notification) {
                continue;
            }
            match e.state {
                EntryState::Pending => c.pending += 1,
                EntryState::Delivered => c.delivered += 1,
                EntryState::Failed => c.failed += 1,
                EntryState::Silenced => c.silenced += 1,
            }
            if recent.len() < limit {
                recent.push(e.clone());
            }
        }
        (c, recent)
    }

    /// The kept entries of `sink`, newest first, at most `limit`.
    pub fn recent(&self, sink: &str, limit: usize) -> Vec<Entry> {
        let inner = self.inner.lock();
        inner
            .entries
            .values()
            .rev()
            .filter(|e| e.sink == sink)
            .take(limit)
            .cloned()
            .collect()
    }

    fn write(&self, inner: &mut Inner, records: Vec<Record>, sync: bool) -> Result<(), OutboxError> {
        if records.is_empty() {
            return Ok(());
        }
        let io = |source| OutboxError::Io {
            path: self.path.clone(),
            source,
        };
        for r in &records {
            let bytes = serde_json::to_vec(r).expect("outbox records serialize");
            log::write_frame(&mut inner.file, &bytes).map_err(io)?;
        }
        inner.file.flush().map_err(io)?;
        if sync {
            inner.file.get_ref().sync_data().map_err(io)?;
        }
        inner.records_since_compaction += records.len();
        for r in records {
            inner.apply(r, self.keep_done);
        }
        if inner.records_since_compaction > 4 * inner.entries.len() + 10_000 {
            self.compact(inner)?;
        }
        Ok(())
    }

    /// Rewrites the log with only what is kept: the sequence of every incident, and the
    /// kept entries with their state.
    fn compact(&self, inner: &mut Inner) -> Result<(), OutboxError> {
        let io = |source| OutboxError::Io {
            path: self.path.clone(),
            source,
        };
        let mut records: Vec<Vec<u8>> = Vec::new();
        let enc = |r: &Record| serde_json::to_vec(r).expect("outbox records serialize");
        for (incident, (seq, fp)) in &inner.seqs {
            records.push(enc(&Record::Seq {
                incident: incident.clone(),
                seq: *seq,
                fp: *fp,
            }));
        }
        for e in inner.entries.values() {
            records.push(enc(&Record::Enqueue {
                id: e.id,
                sink: e.sink.clone(),
                created_ms: e.created_ms,
                n: Box::new((*e.notification).clone()),
                silenced_by: e.silenced_by.clone(),
            }));
            let err = e.last_error.clone().unwrap_or_default();
            match e.state {
                EntryState::Pending if e.attempts > 0 => records.push(enc(&Record::Attempt {
                    id: e.id,
                    attempts: e.attempts,
                    ts_ms: e.updated_ms,
                    error: err,
                })),
                EntryState::Delivered => records.push(enc(&Record::Delivered {
                    id: e.id,
                    ts_ms: e.updated_ms,
                })),
                EntryState::Failed => records.push(enc(&Record::Failed {
                    id: e.id,
                    ts_ms: e.updated_ms,
                    error: err,
                })),
                _ => {}
            }
        }
        let n = records.len();
        inner.file.flush().map_err(io)?;
        log::rewrite(&self.path, records.into_iter()).map_err(io)?;
        inner.file = BufWriter::new(log::open_append(&self.path).map_err(io)?);
        inner.records_since_compaction = n;
        Ok(())
    }

    /// Path of the log file (for tests and the docs).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Inner {
    fn apply(&mut self, r: Record, keep_done: usize) {
        match r {
            Record::Seq { incident, seq, fp } => {
                self.seqs.insert(incident, (seq, fp));
            }
            Record::Enqueue {
                id,
                sink,
                created_ms,
                n,
                silenced_by,
            } => {
                self.next_id = self.next_id.max(id + 1);
                let state = if silenced_by.is_some() {
                    EntryState::Silenced
                } else {
                    EntryState::Pending
                };
                let entry = Entry {
                    id,
                    sink: sink.clone(),
                    notification: Arc::from(n),
                    state,
                    attempts: 0,
                    last_error: None,
                    created_ms,
                    updated_ms: created_ms,
                    silenced_by,
                };
                self.entries.insert(id, entry);
                if state == EntryState::Pending {
                    self.pending.entry(sink).or_default().insert(id);
                } else {
                    self.finish(id, &sink, keep_done);
                }
            }
            Record::Attempt {
                id,
                attempts,
                ts_ms,
                error,
            } => {
                if let Some(e) = self.entries.get_mut(&id) {
                    e.attempts = attempts;
                    e.updated_ms = ts_ms;
                    e.last_error = Some(error);
                }
            }
            Record::Delivered { id, ts_ms } => self.done_as(id, EntryState::Delivered, ts_ms, None, keep_done),
            Record::Failed { id, ts_ms, error } => self.done_as(id, EntryState::Failed, ts_ms, Some(error), keep_done),
        }
    }

    fn done_as(&mut self, id: u64, state: EntryState, ts_ms: TimestampMs, error: Option<String>, keep_done: usize) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.state != EntryState::Pending {
            return;
        }
        e.state = state;
        e.updated_ms = ts_ms;
        if error.is_some() {
            e.last_error = error;
        }
        let sink = e.sink.clone();
        if let Some(p) = self.pending.get_mut(&sink) {
            p.remove(&id);
        }
        self.finish(id, &sink, keep_done);
    }

    /// Keeps `id` among `sink`'s done entries, forgetting the oldest beyond `keep_done`.
    fn finish(&mut self, id: u64, sink: &str, keep_done: usize) {
        let done = self.done.entry(sink.to_string()).or_default();
        done.push_back(id);
        while done.len() > keep_done {
            if let Some(old) = done.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::sample;
    use crate::message::Transition;

    fn new_entry(sink: &str) -> NewEntry {
        NewEntry {
            sink: sink.into(),
            notification: Arc::new(sample(Transition::Opened)),
            silenced_by: None,
        }
    }

    #[test]
    fn pending_survives_reopen_and_done_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        {
            let o = Outbox::open(dir.path(), 10).unwrap();
            assert_eq!(o.next_seq("inc-000007", 11), Some(1));
            let ids = o
                .enqueue(&[("inc-000007".into(), 1, 11)], vec![new_entry("a"), new_entry("b")], 5)
                .unwrap();
            assert_eq!(ids.len(), 2);
            o.mark_attempt(&[ids[0].1], "connection refused", 6).unwrap();
            o.mark_delivered(&[ids[1].1], 7).unwrap();
        }
        let o = Outbox::open(dir.path(), 10).unwrap();
        let a = o.pending("a", 10);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].attempts, 1);
        assert_eq!(a[0].last_error.as_deref(), Some("connection refused"));
        assert!(o.pending("b", 10).is_empty());
        assert_eq!(o.counts("b").delivered, 1);
        // Same fingerprint again: a repeat, no new number.
        assert_eq!(o.next_seq("inc-000007", 11), None);
        assert_eq!(o.next_seq("inc-000007", 12), Some(2));
    }

    #[test]
    fn compaction_keeps_pending_and_the_latest_done() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(dir.path(), 3).unwrap();
        let mut last = 0;
        for i in 0..50u64 {
            let ids = o
                .enqueue(&[("inc-1".into(), i + 1, i)], vec![new_entry("a")], 1)
                .unwrap();
            last = ids[0].1;
            if i < 49 {
                o.mark_delivered(&[last], 2).unwrap();
            }
        }
        let mut inner = o.inner.lock();
        o.compact(&mut inner).unwrap();
        drop(inner);
        drop(o);
        let o = Outbox::open(dir.path(), 3).unwrap();
        assert_eq!(o.pending("a", 10).iter().map(|e| e.id).collect::<Vec<_>>(), vec![last]);
        assert_eq!(o.counts("a").delivered, 3);
        assert_eq!(o.next_seq("inc-1", 99), Some(51));
        let recs = log::read_and_repair(o.path()).unwrap().payloads.len();
        assert!(recs <= 1 + 4 + 3, "{recs} records after compaction");
    }
}
