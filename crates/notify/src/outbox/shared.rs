//! The outbox in PostgreSQL, shared by every instance on one database (`[store] url`):
//! the [`OutboxStore`] seam over the store crate's `notify_outbox` / `notify_seq` tables
//! (the SQL, the `FOR UPDATE SKIP LOCKED` claims and their lease are documented there,
//! in `gpuwarden_store::postgres::outbox`). This side turns notifications into JSON and
//! back, and names this instance as the claimant.
//!
//! A read that fails (counts for the API) is logged and answers empty rather than
//! failing the page: the entries are safe in the database either way.

use super::{Entry, EntryState, NewEntry, OutboxError, OutboxStore, SinkCounts};
use crate::message::Notification;
use gpuwarden_model::TimestampMs;
use gpuwarden_store::postgres::outbox::{NewOutboxRow, OutboxRow};
use gpuwarden_store::postgres::PgHandle;
use std::sync::Arc;
use std::time::Duration;

/// The outbox of every instance sharing one PostgreSQL database.
pub struct PgOutbox {
    db: PgHandle,
    /// Who claims: host, process and a random part (a restarted process is someone else).
    owner: String,
    lease_ms: i64,
    keep_done: usize,
}

impl PgOutbox {
    /// An outbox in `db`; claims last `lease`, done entries beyond `keep_done` per sink
    /// are forgotten.
    pub fn new(db: PgHandle, lease: Duration, keep_done: usize) -> PgOutbox {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        PgOutbox {
            db,
            owner: format!("{host}:{}:{:08x}", std::process::id(), rand::random::<u32>()),
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
            keep_done,
        }
    }

    /// This instance's name in `claimed_by`.
    pub fn owner(&self) -> &str {
        &self.owner
    }
}

fn err(e: gpuwarden_store::StoreError) -> OutboxError {
    OutboxError::Database(e.to_string())
}

fn ids_of(ids: &[u64]) -> Vec<i64> {
    ids.iter().map(|&i| i as i64).collect()
}

fn entry(r: OutboxRow) -> Option<Entry> {
    let notification: Notification = match serde_json::from_str(&r.notification) {
        Ok(n) => n,
        Err(e) => {
            // Written by a newer gpuwarden, or by hand: skip it rather than stop the sink.
            tracing::warn!(id = r.id, sink = %r.sink, "outbox entry in the database is not a notification this build reads: {e}");
            return None;
        }
    };
    let state = match r.state.as_str() {
        "pending" => EntryState::Pending,
        "delivered" => EntryState::Delivered,
        "failed" => EntryState::Failed,
        _ => EntryState::Silenced,
    };
    Some(Entry {
        id: r.id.max(0) as u64,
        sink: r.sink,
        notification: Arc::new(notification),
        state,
        attempts: r.attempts.max(0) as u32,
        last_error: r.last_error,
        created_ms: r.created_ms,
        updated_ms: r.updated_ms,
        silenced_by: r.silenced_by,
    })
}

impl OutboxStore for PgOutbox {
    fn next_seq(&self, incident: &str, fingerprint: u64) -> Result<Option<u64>, OutboxError> {
        self.db.outbox_next_seq(incident, fingerprint).map_err(err)
    }

    fn enqueue(
        &self,
        transitions: &[(String, u64, u64)],
        entries: Vec<NewEntry>,
        now_ms: TimestampMs,
    ) -> Result<Vec<(String, u64)>, OutboxError> {
        let mut rows = Vec::with_capacity(entries.len());
        for e in entries {
            let json = serde_json::to_string(&*e.notification)
                .map_err(|x| OutboxError::Database(format!("encoding a notification: {x}")))?;
            rows.push(NewOutboxRow {
                sink: e.sink,
                incident: e.notification.incident.clone(),
                notification: json,
                silenced_by: e.silenced_by,
            });
        }
        let ids = self.db.outbox_enqueue(transitions, rows, now_ms).map_err(err)?;
        Ok(ids.into_iter().map(|(s, id)| (s, id.max(0) as u64)).collect())
    }

    fn claim(&self, sink: &str, max: usize, now_ms: TimestampMs) -> Result<Vec<Entry>, OutboxError> {
        let rows = self
            .db
            .outbox_claim(sink, max, &self.owner, now_ms, self.lease_ms)
            .map_err(err)?;
        Ok(rows.into_iter().filter_map(entry).collect())
    }

    fn mark_delivered(&self, ids: &[u64], now_ms: TimestampMs) -> Result<(), OutboxError> {
        self.db
            .outbox_finish(&ids_of(ids), "delivered", None, now_ms, self.keep_done)
            .map_err(err)
    }

    fn mark_failed(&self, ids: &[u64], error: &str, now_ms: TimestampMs) -> Result<(), OutboxError> {
        self.db
            .outbox_finish(&ids_of(ids), "failed", Some(error), now_ms, self.keep_done)
            .map_err(err)
    }

    fn mark_attempt(&self, ids: &[u64], error: &str, now_ms: TimestampMs) -> Result<(), OutboxError> {
        self.db.outbox_attempt(&ids_of(ids), error, now_ms).map_err(err)
    }

    fn pending_count(&self, sink: &str) -> usize {
        self.counts(sink).pending
    }

    fn counts(&self, sink: &str) -> SinkCounts {
        match self.db.outbox_counts(sink) {
            Ok(c) => SinkCounts {
                pending: c.pending as usize,
                delivered: c.delivered as usize,
                failed: c.failed as usize,
                silenced: c.silenced as usize,
            },
            Err(e) => {
                tracing::warn!("outbox counts of sink '{sink}': {e}");
                SinkCounts::default()
            }
        }
    }

    fn counts_and_recent_where(
        &self,
        sink: &str,
        limit: usize,
        visible: &dyn Fn(&Notification) -> bool,
    ) -> (SinkCounts, Vec<Entry>) {
        let mut c = SinkCounts::default();
        let mut recent = Vec::new();
        for e in self.recent(sink, usize::MAX) {
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
                recent.push(e);
            }
        }
        (c, recent)
    }

    fn recent(&self, sink: &str, limit: usize) -> Vec<Entry> {
        match self.db.outbox_recent(sink, limit) {
            Ok(rows) => rows.into_iter().filter_map(entry).collect(),
            Err(e) => {
                tracing::warn!("outbox entries of sink '{sink}': {e}");
                Vec::new()
            }
        }
    }

    fn shared(&self) -> bool {
        true
    }
}
