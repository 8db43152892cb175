//! Silences in PostgreSQL (table `silences`): one row per silence, its JSON as the notify
//! crate writes it, so that a silence created on one instance holds back the
//! notifications of every instance sharing the database.

use super::{db, PgHandle};
use crate::StoreError;
use gpuwarden_model::TimestampMs;

impl PgHandle {
    /// Every silence stored (JSON), oldest first.
    pub fn silences_load(&self) -> Result<Vec<String>, StoreError> {
        self.query(|c| async move {
            let rows = c
                .query("SELECT silence::text FROM silences ORDER BY updated_ms, id", &[])
                .await
                .map_err(db("reading silences"))?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
    }

    /// Writes silences (insert or replace by id) and forgets those whose `id` is in
    /// `forget`, in one transaction.
    pub fn silences_save(
        &self,
        put: Vec<(String, String)>,
        forget: Vec<String>,
        now_ms: TimestampMs,
    ) -> Result<(), StoreError> {
        self.query(move |mut c| async move {
            let tx = c.transaction().await.map_err(db("starting a silence write"))?;
            for (id, json) in &put {
                tx.execute(
                    "INSERT INTO silences (id, updated_ms, silence) VALUES ($1, $2, $3::text::jsonb)
                     ON CONFLICT (id) DO UPDATE SET updated_ms = EXCLUDED.updated_ms, silence = EXCLUDED.silence",
                    &[id, &now_ms, json],
                )
                .await
                .map_err(db(format!("saving silence {id}")))?;
            }
            if !forget.is_empty() {
                tx.execute("DELETE FROM silences WHERE id = ANY($1)", &[&forget])
                    .await
                    .map_err(db("forgetting old silences"))?;
            }
            tx.commit().await.map_err(db("committing silences"))
        })
    }
}
