//! Small shared state kept beside the samples, for instances that share one database:
//! named documents (`state_docs`: the XID tracker's state, the current failure model),
//! the ingest batch ledger (`ingest_batches`: batch ids already stored, so a push retried
//! to another instance is answered "duplicate" there too) and UI sessions (`ui_sessions`,
//! keyed by the hash of the session id, so a user signed in on one instance is signed in
//! on all).

use super::{db, PgHandle};
use crate::StoreError;
use gpuwarden_model::TimestampMs;

impl PgHandle {
    /// The document `name`, if stored.
    pub fn doc_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let name = name.to_string();
        self.query(move |c| async move {
            let r = c
                .query_opt("SELECT doc FROM state_docs WHERE name = $1", &[&name])
                .await
                .map_err(db(format!("reading state document {name}")))?;
            Ok(r.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    /// Stores (replaces) the document `name`.
    pub fn doc_put(&self, name: &str, bytes: Vec<u8>, now_ms: TimestampMs) -> Result<(), StoreError> {
        let name = name.to_string();
        self.query(move |c| async move {
            c.execute(
                "INSERT INTO state_docs (name, updated_ms, doc) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET updated_ms = EXCLUDED.updated_ms, doc = EXCLUDED.doc",
                &[&name, &now_ms, &bytes],
            )
            .await
            .map_err(db(format!("writing state document {name}")))?;
            Ok(())
        })
    }

    /// When the document `name` was last stored.
    pub fn doc_updated_ms(&self, name: &str) -> Result<Option<TimestampMs>, StoreError> {
        let name = name.to_string();
        self.query(move |c| async move {
            let r = c
                .query_opt("SELECT updated_ms FROM state_docs WHERE name = $1", &[&name])
                .await
                .map_err(db(format!("reading state document {name}")))?;
            Ok(r.map(|r| r.get::<_, i64>(0)))
        })
    }

    /// Whether the ingest batch `id` was stored already (by any instance).
    pub fn batch_seen(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.query(move |c| async move {
            let r = c
                .query_opt("SELECT 1 FROM ingest_batches WHERE id = $1", &[&id])
                .await
                .map_err(db("looking up an ingest batch id"))?;
            Ok(r.is_some())
        })
    }

    /// Records the ingest batch `id` as stored, and forgets ids beyond the newest
    /// `capacity` (checked on every 1,000th id, by count).
    pub fn batch_record(&self, id: &str, now_ms: TimestampMs, capacity: usize) -> Result<(), StoreError> {
        let id = id.to_string();
        let capacity = i64::try_from(capacity).unwrap_or(i64::MAX);
        self.query(move |c| async move {
            c.execute(
                "INSERT INTO ingest_batches (id, stored_ms) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[&id, &now_ms],
            )
            .await
            .map_err(db("recording an ingest batch id"))?;
            if rand_every_thousand(&id) {
                c.execute(
                    "DELETE FROM ingest_batches WHERE stored_ms < coalesce((SELECT stored_ms FROM ingest_batches
                       ORDER BY stored_ms DESC OFFSET $1 LIMIT 1), -9223372036854775808)",
                    &[&capacity],
                )
                .await
                .map_err(db("forgetting old ingest batch ids"))?;
            }
            Ok(())
        })
    }

    /// The session stored under `id_hash` (JSON), if it has not expired.
    pub fn session_get(&self, id_hash: &str, now_ms: TimestampMs) -> Result<Option<String>, StoreError> {
        let id_hash = id_hash.to_string();
        self.query(move |c| async move {
            let r = c
                .query_opt(
                    "SELECT session::text FROM ui_sessions WHERE id_hash = $1 AND expires_ms > $2",
                    &[&id_hash, &now_ms],
                )
                .await
                .map_err(db("reading a UI session"))?;
            Ok(r.map(|r| r.get::<_, String>(0)))
        })
    }

    /// Stores a session (JSON) and forgets expired ones.
    pub fn session_put(
        &self,
        id_hash: &str,
        json: String,
        expires_ms: TimestampMs,
        now_ms: TimestampMs,
    ) -> Result<(), StoreError> {
        let id_hash = id_hash.to_string();
        self.query(move |c| async move {
            c.execute(
                "INSERT INTO ui_sessions (id_hash, expires_ms, session) VALUES ($1, $2, $3::text::jsonb)
                 ON CONFLICT (id_hash) DO UPDATE SET expires_ms = EXCLUDED.expires_ms, session = EXCLUDED.session",
                &[&id_hash, &expires_ms, &json],
            )
            .await
            .map_err(db("storing a UI session"))?;
            c.execute("DELETE FROM ui_sessions WHERE expires_ms <= $1", &[&now_ms])
                .await
                .map_err(db("forgetting expired UI sessions"))?;
            Ok(())
        })
    }

    /// Ends a session.
    pub fn session_remove(&self, id_hash: &str) -> Result<(), StoreError> {
        let id_hash = id_hash.to_string();
        self.query(move |c| async move {
            c.execute("DELETE FROM ui_sessions WHERE id_hash = $1", &[&id_hash])
                .await
                .map_err(db("ending a UI session"))?;
            Ok(())
        })
    }
}

/// About one id in a thousand, decided by the id itself (no RNG dependency here).
fn rand_every_thousand(id: &str) -> bool {
    crc32fast::hash(id.as_bytes()).is_multiple_of(1000)
}
