//! The notification outbox in PostgreSQL (tables `notify_outbox`, `notify_seq`), for
//! instances that share one database: whichever instance writes a transition, each
//! entry is delivered once by one of them.
//!
//! * **Numbering.** `notify_seq` holds each incident's last transition number and its
//!   fingerprint. [`PgHandle::outbox_enqueue`] advances it only from the number the caller
//!   read (`… WHERE seq < new`), in the same transaction as the entries: when another
//!   instance took that number first, this instance's entries for that incident are
//!   dropped (the transition is being announced already).
//! * **Claims.** A sender claims entries with `FOR UPDATE SKIP LOCKED` and a lease
//!   (`claimed_by`, `claim_until_ms`): two instances polling at once claim different
//!   entries, and an entry claimed by an instance that dies before marking it is claimed
//!   again by another once the lease has run out — delivered at least once; exactly once
//!   unless the claimant died between the receiver's answer and the mark. Only the oldest
//!   pending entry of an incident (per sink) can be claimed, so a resolution never
//!   overtakes the message it ends; entries of different incidents go in parallel.
//!
//! Payloads are the notification as JSON text: this crate does not know the notify
//! crate's types (it depends on this one, not the reverse).

use super::{db, PgHandle};
use crate::StoreError;
use gpuwarden_model::TimestampMs;

/// One stored entry.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub sink: String,
    /// The notification, JSON.
    pub notification: String,
    /// `pending`, `delivered`, `failed` or `silenced`.
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_ms: TimestampMs,
    pub updated_ms: TimestampMs,
    pub silenced_by: Option<String>,
}

/// An entry to add.
#[derive(Debug, Clone)]
pub struct NewOutboxRow {
    pub sink: String,
    /// The incident (or other subject) the notification is about: claims keep its
    /// entries in order.
    pub incident: String,
    pub notification: String,
    pub silenced_by: Option<String>,
}

/// Counts of one sink's kept entries per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    pub silenced: u64,
}

const COLUMNS: &str = "id, sink, notification::text, state, attempts, last_error, created_ms, updated_ms, silenced_by";

fn row(r: &tokio_postgres::Row) -> OutboxRow {
    OutboxRow {
        id: r.get(0),
        sink: r.get(1),
        notification: r.get(2),
        state: r.get(3),
        attempts: r.get(4),
        last_error: r.get(5),
        created_ms: r.get(6),
        updated_ms: r.get(7),
        silenced_by: r.get(8),
    }
}

impl PgHandle {
    /// The number the next transition of `incident` gets, or `None` when `fingerprint`
    /// equals its last transition's (a repeat).
    pub fn outbox_next_seq(&self, incident: &str, fingerprint: u64) -> Result<Option<u64>, StoreError> {
        let incident = incident.to_string();
        self.query(move |c| async move {
            let r = c
                .query_opt("SELECT seq, fp FROM notify_seq WHERE incident = $1", &[&incident])
                .await
                .map_err(db(format!("reading the transition number of {incident}")))?;
            Ok(match r {
                None => Some(1),
                Some(r) if r.get::<_, i64>(1) == fingerprint as i64 => None,
                Some(r) => Some(r.get::<_, i64>(0).max(0) as u64 + 1),
            })
        })
    }

    /// Records transitions `(incident, seq, fingerprint)` and their entries in one
    /// transaction. A transition whose number another instance took meanwhile is
    /// skipped with its entries. Returns the (sink, id) of the new pending entries.
    pub fn outbox_enqueue(
        &self,
        transitions: &[(String, u64, u64)],
        entries: Vec<NewOutboxRow>,
        now_ms: TimestampMs,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let transitions = transitions.to_vec();
        self.query(move |mut c| async move {
            let tx = c.transaction().await.map_err(db("starting an outbox write"))?;
            let mut lost: Vec<String> = Vec::new();
            for (incident, seq, fp) in &transitions {
                let n = tx
                    .execute(
                        "INSERT INTO notify_seq (incident, seq, fp) VALUES ($1, $2, $3)
                         ON CONFLICT (incident) DO UPDATE SET seq = EXCLUDED.seq, fp = EXCLUDED.fp
                         WHERE notify_seq.seq < EXCLUDED.seq",
                        &[incident, &(*seq as i64), &(*fp as i64)],
                    )
                    .await
                    .map_err(db(format!("numbering a transition of {incident}")))?;
                if n == 0 {
                    lost.push(incident.clone());
                }
            }
            let mut ids = Vec::new();
            for e in entries.iter().filter(|e| !lost.contains(&e.incident)) {
                let state = if e.silenced_by.is_some() { "silenced" } else { "pending" };
                let r = tx
                    .query_one(
                        "INSERT INTO notify_outbox (sink, incident, notification, state, created_ms, updated_ms, silenced_by)
                         VALUES ($1, $2, $3::text::jsonb, $4, $5, $5, $6) RETURNING id",
                        &[&e.sink, &e.incident, &e.notification, &state, &now_ms, &e.silenced_by],
                    )
                    .await
                    .map_err(db(format!("adding a notification for sink {}", e.sink)))?;
                if e.silenced_by.is_none() {
                    ids.push((e.sink.clone(), r.get::<_, i64>(0)));
                }
            }
            tx.commit().await.map_err(db("committing outbox entries"))?;
            if !lost.is_empty() {
                tracing::debug!(?lost, "transitions already numbered by another instance; not enqueued twice");
            }
            Ok(ids)
        })
    }

    /// Claims up to `max` pending entries of `sink` for `owner` until `now + lease_ms`:
    /// entries nobody holds (or whose lease ran out, or that `owner` holds already), each
    /// the oldest pending entry of its incident. Oldest first.
    pub fn outbox_claim(
        &self,
        sink: &str,
        max: usize,
        owner: &str,
        now_ms: TimestampMs,
        lease_ms: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let (sink, owner) = (sink.to_string(), owner.to_string());
        let until = now_ms.saturating_add(lease_ms);
        let max = max.max(1) as i64;
        self.query(move |c| async move {
            let rows = c
                .query(
                    &format!(
                        "UPDATE notify_outbox o SET claimed_by = $2, claim_until_ms = $4
                         WHERE o.id IN (
                           SELECT p.id FROM notify_outbox p
                           WHERE p.sink = $1 AND p.state = 'pending'
                             AND (p.claim_until_ms IS NULL OR p.claim_until_ms <= $3 OR p.claimed_by = $2)
                             AND NOT EXISTS (SELECT 1 FROM notify_outbox e WHERE e.sink = p.sink
                               AND e.incident = p.incident AND e.state = 'pending' AND e.id < p.id)
                           ORDER BY p.id LIMIT $5 FOR UPDATE SKIP LOCKED)
                         RETURNING {COLUMNS}"
                    ),
                    &[&sink, &owner, &now_ms, &until, &max],
                )
                .await
                .map_err(db(format!("claiming notifications of sink {sink}")))?;
            let mut out: Vec<OutboxRow> = rows.iter().map(row).collect();
            out.sort_by_key(|r| r.id);
            Ok(out)
        })
    }

    /// Marks entries `delivered` or `failed` (with `error`) and releases their claim;
    /// then forgets done entries of the sink beyond the newest `keep_done`.
    pub fn outbox_finish(
        &self,
        ids: &[i64],
        state: &'static str,
        error: Option<&str>,
        now_ms: TimestampMs,
        keep_done: usize,
    ) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        let error = error.map(str::to_string);
        let keep = keep_done as i64;
        self.query(move |c| async move {
            let sinks = c
                .query(
                    "UPDATE notify_outbox SET state = $2, updated_ms = $3, last_error = coalesce($4, last_error),
                       claimed_by = NULL, claim_until_ms = NULL
                     WHERE id = ANY($1) AND state = 'pending' RETURNING sink",
                    &[&ids, &state, &now_ms, &error],
                )
                .await
                .map_err(db("marking notifications"))?;
            let mut done: Vec<String> = sinks.iter().map(|r| r.get::<_, String>(0)).collect();
            done.sort();
            done.dedup();
            for sink in done {
                c.execute(
                    "DELETE FROM notify_outbox WHERE sink = $1 AND state <> 'pending' AND id < coalesce((
                       SELECT id FROM notify_outbox WHERE sink = $1 AND state <> 'pending'
                       ORDER BY id DESC OFFSET $2 LIMIT 1), -1)",
                    &[&sink, &keep],
                )
                .await
                .map_err(db(format!("forgetting old notifications of sink {sink}")))?;
            }
            Ok(())
        })
    }

    /// Records a failed attempt (the claim is kept: the claimant retries after its
    /// backoff, or another instance once the lease runs out).
    pub fn outbox_attempt(&self, ids: &[i64], error: &str, now_ms: TimestampMs) -> Result<(), StoreError> {
        let ids = ids.to_vec();
        let error = error.to_string();
        self.query(move |c| async move {
            c.execute(
                "UPDATE notify_outbox SET attempts = attempts + 1, last_error = $2, updated_ms = $3
                 WHERE id = ANY($1) AND state = 'pending'",
                &[&ids, &error, &now_ms],
            )
            .await
            .map_err(db("recording a failed delivery attempt"))?;
            Ok(())
        })
    }

    /// Counts of `sink`'s kept entries per state.
    pub fn outbox_counts(&self, sink: &str) -> Result<OutboxCounts, StoreError> {
        let sink = sink.to_string();
        self.query(move |c| async move {
            let rows = c
                .query(
                    "SELECT state, count(*) FROM notify_outbox WHERE sink = $1 GROUP BY state",
                    &[&sink],
                )
                .await
                .map_err(db(format!("counting notifications of sink {sink}")))?;
            let mut out = OutboxCounts::default();
            for r in rows {
                let n = r.get::<_, i64>(1).max(0) as u64;
                match r.get::<_, &str>(0) {
                    "pending" => out.pending = n,
                    "delivered" => out.delivered = n,
                    "failed" => out.failed = n,
                    "silenced" => out.silenced = n,
                    _ => {}
                }
            }
            Ok(out)
        })
    }

    /// `sink`'s kept entries, newest first, at most `limit`.
    pub fn outbox_recent(&self, sink: &str, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let sink = sink.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.query(move |c| async move {
            let rows = c
                .query(
                    &format!("SELECT {COLUMNS} FROM notify_outbox WHERE sink = $1 ORDER BY id DESC LIMIT $2"),
                    &[&sink, &limit],
                )
                .await
                .map_err(db(format!("reading notifications of sink {sink}")))?;
            Ok(rows.iter().map(row).collect())
        })
    }
}
