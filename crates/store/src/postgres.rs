//! The PostgreSQL store: the [`Store`] trait on a PostgreSQL database, so that several
//! gpuwarden instances can share one store and operators can use the database they
//! already run (backups with `pg_dump`, replicas, monitoring).
//!
//! # Client and the synchronous trait
//!
//! The client is `tokio-postgres` with a `deadpool-postgres` pool: it is maintained, it
//! speaks binary `COPY` (the fast bulk path), and the pool reconnects by itself after the
//! database restarts. `Store` is synchronous, so the store owns a **dedicated** Tokio
//! runtime (2 worker threads) that runs the connections, and each trait call spawns its
//! query there and waits on a plain channel. Waiting on a channel, unlike
//! `Runtime::block_on`, works from any thread — a `spawn_blocking` thread, a plain test
//! thread, or (blocking it, as the embedded store's disk I/O would) a caller's own Tokio
//! worker — so the trait needs no second, async flavour. The runtime is shut down in the
//! background on drop, which is allowed inside an async context too.
//!
//! # Schema
//!
//! Versioned migrations ([`MIGRATIONS`]) are applied at open under an advisory lock (two
//! instances starting at once apply them once); a database whose schema is newer than
//! this build, or which holds tables that are not ours, is refused with a message saying
//! what to do. Tables:
//!
//! * `samples (gpu, field, ts_ms, value)`, primary key `(gpu, field, ts_ms)`: a re-append
//!   of the same key replaces the value (last write wins), so replays are idempotent.
//! * `latest (gpu, field, ts_ms, value)`: each series' newest point, kept on write, so
//!   `latest` is one index lookup instead of a scan over every partition.
//! * `events (gpu, node, ts_ms, seq, event jsonb)`, ordered by `(ts_ms, seq)`.
//! * `gpus (uuid, identity jsonb, first_seen_ms, last_seen_ms)`.
//! * `incidents (id, incident jsonb, …)`: ids are ULIDs made by the incident engine, so
//!   instances sharing the database never collide.
//!
//! # Partitioning and retention
//!
//! `samples` and `events` are split by time. With the TimescaleDB extension available
//! (checked when the schema is first created, and recorded in `gpuwarden_meta`), they are
//! hypertables with daily chunks, compression after two days (segmented by GPU and
//! field) and retention by `drop_chunks`. That path is written but **not tested here**:
//! TimescaleDB cannot be installed on the build machine. Otherwise they use native range
//! partitioning on `ts_ms`: one partition per [`PostgresOptions::partition_ms`] (a day by
//! default), named `samples_p<start ms>` / `events_p<start ms>` (`n` for negative
//! starts), created ahead of time at open and on each retention run, and on demand when
//! a batch brings a time that has none. Retention drops whole partitions that end at or
//! before the cutoff — no row-by-row `DELETE`, no vacuum debt.
//!
//! # Writes
//!
//! Samples go through binary `COPY` into a per-connection temporary table, then one
//! `INSERT … ON CONFLICT` into `samples` and `latest`; a page (`append_page`) is one
//! transaction, so it is there whole or not at all. Duplicated keys inside one batch
//! keep the last occurrence (PostgreSQL refuses to update one row twice in a statement).
//!
//! # State shared by instances
//!
//! Incidents carry their dedup key as a column with a partial unique index (one
//! unresolved incident per key); [`Store::write_incidents`] serializes writers of one key
//! with an advisory lock and tells the loser to adopt the winner's incident. The
//! notification outbox (`outbox`: claimed with `FOR UPDATE SKIP LOCKED` and a lease) and
//! silences (`silences`) are tables here too, reached through [`PgHandle`], and so are
//! the ingest batch ledger, UI sessions and named state documents (XID tracker state,
//! the current failure model) in `state`.

use crate::{GpuRecord, IncidentWrite, PageWrite, Point, Store, StoreError, StoreStats, WriteHealth};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use gpuwarden_model::{Event, FieldName, GpuIdentity, GpuSamples, GpuUuid, Incident, TimestampMs};
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{GenericClient, NoTls};

pub mod outbox;
pub mod silences;
pub mod state;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Most partitions one batch may create: a batch spanning more days than this almost
/// certainly carries a broken clock, and thousands of partitions would slow every query.
const MAX_NEW_PARTITIONS_PER_BATCH: usize = 64;

/// Settings of the PostgreSQL store.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/database` (libpq URL or key=value form), **without** a
    /// password: that comes from [`password`](Self::password).
    pub url: String,
    /// The password, read from a file or the environment by the caller. Never logged.
    pub password: Option<String>,
    /// Width of one time partition in ms (native partitioning and TimescaleDB chunks).
    /// Default one day. Fixed when the schema is created; later opens use the stored one.
    pub partition_ms: i64,
    /// Partitions created ahead of the current time. Default 2.
    pub partitions_ahead: u32,
    /// Connections in the pool. Default 8.
    pub pool_size: usize,
    /// Give up connecting after this long. Default 10 s.
    pub connect_timeout: Duration,
    /// Use TimescaleDB when the extension is available (default true).
    pub timescaledb: bool,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            url: String::new(),
            password: None,
            partition_ms: DAY_MS,
            partitions_ahead: 2,
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            timescaledb: true,
        }
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("partition_ms", &self.partition_ms)
            .field("partitions_ahead", &self.partitions_ahead)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("timescaledb", &self.timescaledb)
            .finish()
    }
}

/// How `samples` and `events` are split by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// Native range partitions managed by gpuwarden.
    Native,
    /// TimescaleDB hypertables (chunks, compression and retention by the extension).
    Timescale,
}

/// One schema migration: its version and its statements (run in one transaction).
pub struct Migration {
    pub version: i32,
    pub description: &'static str,
    /// Statements for native partitioning, and those for TimescaleDB.
    pub native: &'static str,
    pub timescale: &'static str,
}

const COMMON_V1: &str = "
CREATE TABLE gpus (
    uuid text PRIMARY KEY,
    identity jsonb NOT NULL,
    first_seen_ms bigint NOT NULL,
    last_seen_ms bigint NOT NULL
);
CREATE TABLE latest (
    gpu text NOT NULL,
    field text NOT NULL,
    ts_ms bigint NOT NULL,
    value double precision NOT NULL,
    PRIMARY KEY (gpu, field)
);
CREATE TABLE incidents (
    id text PRIMARY KEY,
    state text NOT NULL,
    updated_ms bigint NOT NULL,
    resolved_ms bigint,
    incident jsonb NOT NULL
);
";

/// Version 2: state that instances sharing the database must share. Incidents get their
/// dedup key as a column and a partial unique index (at most one unresolved incident per
/// key, whichever instance opened it); the notification outbox and the per-incident
/// transition numbers move in (see `postgres/outbox.rs`); silences, named state
/// documents (XID tracker state, the current failure model: `postgres/state.rs`), the
/// ingest batch ledger and UI sessions too.
const COMMON_V2: &str = "
ALTER TABLE incidents ADD COLUMN dedup_key text;
UPDATE incidents SET dedup_key = coalesce(incident->>'dedup_key', id);
ALTER TABLE incidents ALTER COLUMN dedup_key SET NOT NULL;
-- Instances that shared a version-1 database may each have opened an incident for one
-- condition: keep the oldest unresolved one per key, resolve the others.
UPDATE incidents SET state = 'resolved', resolved_ms = updated_ms,
    incident = jsonb_set(jsonb_set(incident, '{state}', to_jsonb('resolved'::text)), '{resolved_ms}', to_jsonb(updated_ms))
  WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY dedup_key ORDER BY opened, id) AS n
                 FROM (SELECT id, dedup_key, (incident->>'opened_ms')::bigint AS opened FROM incidents
                       WHERE state <> 'resolved') u) d
               WHERE n > 1);
CREATE UNIQUE INDEX incidents_one_unresolved_per_key ON incidents (dedup_key) WHERE state <> 'resolved';
CREATE TABLE notify_seq (
    incident text PRIMARY KEY,
    seq bigint NOT NULL,
    fp bigint NOT NULL
);
CREATE TABLE notify_outbox (
    id bigserial PRIMARY KEY,
    sink text NOT NULL,
    incident text NOT NULL,
    notification jsonb NOT NULL,
    state text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL,
    silenced_by text,
    claimed_by text,
    claim_until_ms bigint
);
CREATE INDEX notify_outbox_pending ON notify_outbox (sink, incident, id) WHERE state = 'pending';
CREATE INDEX notify_outbox_sink ON notify_outbox (sink, id);
CREATE TABLE silences (
    id text PRIMARY KEY,
    updated_ms bigint NOT NULL,
    silence jsonb NOT NULL
);
CREATE TABLE state_docs (
    name text PRIMARY KEY,
    updated_ms bigint NOT NULL,
    doc bytea NOT NULL
);
CREATE TABLE ingest_batches (
    id text PRIMARY KEY,
    stored_ms bigint NOT NULL
);
CREATE INDEX ingest_batches_by_time ON ingest_batches (stored_ms);
CREATE TABLE ui_sessions (
    id_hash text PRIMARY KEY,
    expires_ms bigint NOT NULL,
    session jsonb NOT NULL
);
";

/// The migrations, oldest first. Never edit a released one: add the next version.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "samples, latest, events, gpus, incidents",
    native: "
CREATE TABLE samples (
    gpu text NOT NULL,
    field text NOT NULL,
    ts_ms bigint NOT NULL,
    value double precision NOT NULL,
    PRIMARY KEY (gpu, field, ts_ms)
) PARTITION BY RANGE (ts_ms);
CREATE TABLE events (
    gpu text NOT NULL,
    node text NOT NULL,
    ts_ms bigint NOT NULL,
    seq bigserial,
    event jsonb NOT NULL
) PARTITION BY RANGE (ts_ms);
CREATE INDEX events_ts ON events (ts_ms, seq);
CREATE INDEX events_gpu_ts ON events (gpu, ts_ms);
",
    timescale: "
CREATE TABLE samples (
    gpu text NOT NULL,
    field text NOT NULL,
    ts_ms bigint NOT NULL,
    value double precision NOT NULL,
    PRIMARY KEY (gpu, field, ts_ms)
);
CREATE TABLE events (
    gpu text NOT NULL,
    node text NOT NULL,
    ts_ms bigint NOT NULL,
    seq bigserial,
    event jsonb NOT NULL
);
CREATE INDEX events_ts ON events (ts_ms, seq);
CREATE INDEX events_gpu_ts ON events (gpu, ts_ms);
CREATE FUNCTION gpuwarden_now_ms() RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT (extract(epoch FROM now()) * 1000)::bigint $$;
SELECT create_hypertable('samples', 'ts_ms', chunk_time_interval => {PARTITION_MS});
SELECT create_hypertable('events', 'ts_ms', chunk_time_interval => {PARTITION_MS});
SELECT set_integer_now_func('samples', 'gpuwarden_now_ms');
SELECT set_integer_now_func('events', 'gpuwarden_now_ms');
ALTER TABLE samples SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'gpu, field', timescaledb.compress_orderby = 'ts_ms');
SELECT add_compression_policy('samples', compress_after => (2 * {PARTITION_MS})::bigint);
",
},
Migration {
    version: 2,
    description: "one unresolved incident per key; outbox, transition numbers, silences, state documents, ingest batches, UI sessions",
    native: "",
    timescale: "",
}];

/// The newest schema version this build knows.
pub fn latest_schema_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Key of the advisory lock held while migrating (any fixed number; "gpuw").
const MIGRATION_LOCK: i64 = 0x6770_7577;

/// The PostgreSQL store. See the module docs.
pub struct PostgresStore {
    /// `Some` until drop (taken there to shut it down without blocking).
    rt: Option<tokio::runtime::Runtime>,
    pool: Pool,
    partitioning: Partitioning,
    partition_ms: i64,
    partitions_ahead: u32,
    /// Start times of the partitions known to exist (native partitioning).
    partitions: Arc<Mutex<BTreeSet<i64>>>,
    health: Mutex<WriteHealth>,
    /// `host:port/db` for messages (no user, no password).
    target: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("partitioning", &self.partitioning)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A tokio-postgres error as text: the server's message, detail and hint when there is
/// one (the error's `Display` alone often says just "db error").
fn pg_reason(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(d) = db.detail() {
            s.push_str(&format!(" (detail: {d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!(" (hint: {h})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

fn db(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    let what = what.into();
    move |e| StoreError::Database {
        what,
        reason: pg_reason(&e),
    }
}

/// `host:port/db` of a parsed configuration, for messages.
fn describe(cfg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", cfg.get_dbname().unwrap_or("(default database)"))
}

/// Name of the partition of `table` starting at `start`.
fn partition_name(table: &str, start: i64) -> String {
    if start < 0 {
        format!("{table}_n{}", start.unsigned_abs())
    } else {
        format!("{table}_p{start}")
    }
}

/// The start of a partition name of `table`, if it is one of ours.
fn partition_start(table: &str, name: &str) -> Option<i64> {
    let rest = name.strip_prefix(table)?.strip_prefix('_')?;
    if let Some(n) = rest.strip_prefix('p') {
        n.parse().ok()
    } else {
        let n: u64 = rest.strip_prefix('n')?.parse().ok()?;
        0i64.checked_sub_unsigned(n)
    }
}

/// One sample row ready for COPY.
struct SampleRow {
    gpu: Arc<str>,
    field: String,
    ts_ms: i64,
    value: f64,
}

/// Flattens rows into samples with duplicates of one (GPU, field, time) removed, the
/// last occurrence kept (the contract: a re-append replaces).
fn flatten(rows: &[GpuSamples]) -> Vec<SampleRow> {
    let mut out: Vec<SampleRow> = Vec::with_capacity(rows.iter().map(|r| r.values.len()).sum());
    let mut seen: HashMap<(&str, String, i64), usize> = HashMap::new();
    for r in rows {
        for (f, v) in &r.values {
            let field = f.to_string();
            match seen.entry((&*r.gpu.0, field.clone(), r.ts_ms)) {
                std::collections::hash_map::Entry::Occupied(e) => out[*e.get()].value = *v,
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(out.len());
                    out.push(SampleRow {
                        gpu: r.gpu.0.clone(),
                        field,
                        ts_ms: r.ts_ms,
                        value: *v,
                    });
                }
            }
        }
    }
    out
}

fn encode<T: serde::Serialize>(what: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Encoding {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Encoding {
        what: what.to_string(),
        reason: format!("{e} (a row written by another program or a newer gpuwarden?)"),
    })
}

/// Owned copy of a page, to move into the runtime.
struct OwnedPage {
    samples: Vec<SampleRow>,
    events: Vec<(String, String, i64, String)>,
    gpus: Vec<(String, String)>,
    seen_ms: TimestampMs,
}

fn own_events(events: &[Event]) -> Result<Vec<(String, String, i64, String)>, StoreError> {
    events
        .iter()
        .map(|e| Ok((e.gpu.0.to_string(), e.node.clone(), e.ts_ms, encode("an event", e)?)))
        .collect()
}

/// GPUs with duplicates removed (the last identity of a UUID wins).
fn own_gpus(gpus: &[GpuIdentity]) -> Result<Vec<(String, String)>, StoreError> {
    let mut by_uuid: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<(String, String)> = Vec::with_capacity(gpus.len());
    for g in gpus {
        let json = encode("a GPU identity", g)?;
        match by_uuid.get(&*g.uuid.0) {
            Some(&i) => out[i].1 = json,
            None => {
                by_uuid.insert(&g.uuid.0, out.len());
                out.push((g.uuid.0.to_string(), json));
            }
        }
    }
    Ok(out)
}

impl PostgresStore {
    /// Connects, applies pending migrations and creates the partitions ahead.
    ///
    /// Errors: [`StoreError::Config`] for a URL that does not parse or carries a
    /// password; [`StoreError::Database`] when the database cannot be reached (with the
    /// address tried); [`StoreError::Schema`] when its schema is newer than this build or
    /// not gpuwarden's.
    pub fn open(options: &PostgresOptions) -> Result<Self, StoreError> {
        let mut cfg: tokio_postgres::Config = options.url.parse().map_err(|e| {
            StoreError::Config(format!(
                "store.url is not a PostgreSQL URL ({e}); expected postgres://USER@HOST:PORT/DATABASE"
            ))
        })?;
        if cfg.get_password().is_some() {
            return Err(StoreError::Config(
                "store.url contains a password; remove it and put the password in store.password_file \
                 (or the GPUWARDEN_STORE_PASSWORD environment variable) so it is not in the config"
                    .into(),
            ));
        }
        if let Some(p) = &options.password {
            cfg.password(p.as_str());
        }
        if cfg.get_application_name().is_none() {
            cfg.application_name("gpuwarden");
        }
        cfg.connect_timeout(options.connect_timeout);
        // The staging table's "already exists, skipping" notice on every write is noise.
        let server_options = match cfg.get_options() {
            Some(o) => format!("{o} -c client_min_messages=warning"),
            None => "-c client_min_messages=warning".to_string(),
        };
        cfg.options(&server_options);
        let target = describe(&cfg);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gpuwarden-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database {
                what: "starting the PostgreSQL client's runtime".into(),
                reason: e.to_string(),
            })?;
        let manager = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(60)))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Config(format!("PostgreSQL pool for {target}: {e}")))?;
        let mut store = PostgresStore {
            rt: Some(rt),
            pool,
            partitioning: Partitioning::Native,
            partition_ms: options.partition_ms.max(60_000),
            partitions_ahead: options.partitions_ahead,
            partitions: Arc::new(Mutex::new(BTreeSet::new())),
            health: Mutex::new(WriteHealth::Ok),
            target: target.clone(),
        };
        let (partitioning, partition_ms) = store.migrate(options.timescaledb, store.partition_ms)?;
        store.partitioning = partitioning;
        store.partition_ms = partition_ms;
        store.load_partitions()?;
        store.create_ahead(now_ms())?;
        tracing::info!(database = %target, ?partitioning, partition_ms, "PostgreSQL store open");
        Ok(store)
    }

    /// A cheap, cloneable handle on this store's connections, for the shared state kept
    /// beside the samples (outbox, silences). It fails cleanly once the store is dropped.
    pub fn handle(&self) -> Option<PgHandle> {
        Some(PgHandle {
            rt: self.rt.as_ref()?.handle().clone(),
            pool: self.pool.clone(),
            target: Arc::from(self.target.as_str()),
        })
    }

    /// How samples are partitioned in this database.
    pub fn partitioning(&self) -> Partitioning {
        self.partitioning
    }

    /// Runs `fut` on the store's runtime and waits for it (see the module docs).
    fn call<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let Some(rt) = &self.rt else {
            return Err(StoreError::Database {
                what: self.target.clone(),
                reason: "the store is shutting down".into(),
            });
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| StoreError::Database {
            what: self.target.clone(),
            reason: "the query task ended without an answer (runtime shut down)".into(),
        })?
    }

    /// A pooled connection, or an error naming the database and what to check.
    async fn conn(pool: &Pool, target: &str) -> Result<deadpool_postgres::Object, StoreError> {
        pool.get().await.map_err(|e| {
            let reason = match &e {
                deadpool_postgres::PoolError::Backend(pe) => pg_reason(pe),
                other => other.to_string(),
            };
            StoreError::Database {
                what: format!("connecting to {target}"),
                reason: format!(
                    "{reason} — is PostgreSQL running and reachable there, and are store.url's user, \
                     database and the password (store.password_file) right?"
                ),
            }
        })
    }

    /// Records a write's outcome in the write health.
    fn note<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        let mut h = self.health.lock();
        match &r {
            Ok(_) => *h = WriteHealth::Ok,
            Err(e) => {
                *h = match std::mem::take(&mut *h) {
                    WriteHealth::Failing {
                        since_ms,
                        failed_writes,
                        ..
                    } => WriteHealth::Failing {
                        since_ms,
                        error: e.to_string(),
                        failed_writes: failed_writes + 1,
                    },
                    WriteHealth::Ok => WriteHealth::Failing {
                        since_ms: now_ms(),
                        error: e.to_string(),
                        failed_writes: 1,
                    },
                }
            }
        }
        r
    }

    /// Applies pending migrations; returns the partitioning and partition width in use.
    fn migrate(&self, want_timescale: bool, partition_ms: i64) -> Result<(Partitioning, i64), StoreError> {
        let pool = self.pool.clone();
        let target = self.target.clone();
        self.call(async move {
            let mut c = Self::conn(&pool, &target).await?;
            c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(db("taking the migration lock"))?;
            let r = migrate_locked(&mut c, want_timescale, partition_ms).await;
            let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
            r
        })
    }

    /// Reads the existing partitions' start times (native partitioning).
    fn load_partitions(&self) -> Result<(), StoreError> {
        if self.partitioning != Partitioning::Native {
            return Ok(());
        }
        let pool = self.pool.clone();
        let target = self.target.clone();
        let starts = self.call(async move {
            let c = Self::conn(&pool, &target).await?;
            let rows = c
                .query(
                    "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                     WHERE i.inhparent = 'samples'::regclass",
                    &[],
                )
                .await
                .map_err(db("listing sample partitions"))?;
            Ok(rows
                .iter()
                .filter_map(|r| partition_start("samples", r.get::<_, &str>(0)))
                .collect::<Vec<i64>>())
        })?;
        self.partitions.lock().extend(starts);
        Ok(())
    }

    /// Creates the partitions covering `now` and the configured number ahead.
    fn create_ahead(&self, now: TimestampMs) -> Result<(), StoreError> {
        if self.partitioning != Partitioning::Native {
            return Ok(());
        }
        let w = self.partition_ms;
        let first = now.div_euclid(w) * w;
        let starts: Vec<i64> = (0..=i64::from(self.partitions_ahead))
            .filter_map(|k| first.checked_add(k.checked_mul(w)?))
            .collect();
        let (pool, target, known) = (self.pool.clone(), self.target.clone(), self.partitions.clone());
        self.call(async move {
            let c = Self::conn(&pool, &target).await?;
            ensure_partitions(&**c, &known, w, starts).await
        })
    }

    fn write_page(&self, page: OwnedPage) -> Result<(), StoreError> {
        let (pool, target, known) = (self.pool.clone(), self.target.clone(), self.partitions.clone());
        let native = self.partitioning == Partitioning::Native;
        let w = self.partition_ms;
        let r = self.call(async move {
            let mut c = Self::conn(&pool, &target).await?;
            if native {
                let mut starts: BTreeSet<i64> = BTreeSet::new();
                for s in &page.samples {
                    starts.insert(s.ts_ms.div_euclid(w) * w);
                }
                for e in &page.events {
                    starts.insert(e.2.div_euclid(w) * w);
                }
                ensure_partitions(&**c, &known, w, starts.into_iter().collect()).await?;
            }
            let tx = c.transaction().await.map_err(db("starting a transaction"))?;
            write_samples(&tx, &page.samples).await?;
            write_events(&tx, &page.events).await?;
            write_gpus(&tx, &page.gpus, page.seen_ms).await?;
            tx.commit().await.map_err(db("committing a page"))
        });
        self.note(r)
    }

    fn query<T: Send + 'static, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        let (pool, target) = (self.pool.clone(), self.target.clone());
        self.call(async move {
            let c = Self::conn(&pool, &target).await?;
            f(c).await
        })
    }
}

/// A handle on the PostgreSQL store's pool and runtime (see [`PostgresStore::handle`]):
/// what the notification outbox and silences use to keep their state in the same
/// database, so that every instance sharing the store shares them.
#[derive(Clone)]
pub struct PgHandle {
    rt: tokio::runtime::Handle,
    pool: Pool,
    target: Arc<str>,
}

impl std::fmt::Debug for PgHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHandle")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl PgHandle {
    /// `host:port/db`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `f` with a pooled connection on the store's runtime and waits for it (works
    /// from any thread, like the store's own calls).
    pub(crate) fn query<T: Send + 'static, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send,
    {
        let (pool, target) = (self.pool.clone(), self.target.to_string());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let r = async {
                let c = PostgresStore::conn(&pool, &target).await?;
                f(c).await
            }
            .await;
            let _ = tx.send(r);
        });
        rx.recv().map_err(|_| StoreError::Database {
            what: self.target.to_string(),
            reason: "the query task ended without an answer (the store is shutting down)".into(),
        })?
    }
}

fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as TimestampMs)
}

async fn migrate_locked(
    c: &mut deadpool_postgres::Object,
    want_timescale: bool,
    partition_ms: i64,
) -> Result<(Partitioning, i64), StoreError> {
    let has_schema_table: bool = c
        .query_one("SELECT to_regclass('gpuwarden_schema') IS NOT NULL", &[])
        .await
        .map_err(db("looking for the gpuwarden_schema table"))?
        .get(0);
    if !has_schema_table {
        let foreign: bool = c
            .query_one(
                "SELECT to_regclass('samples') IS NOT NULL OR to_regclass('incidents') IS NOT NULL",
                &[],
            )
            .await
            .map_err(db("looking for existing tables"))?
            .get(0);
        if foreign {
            return Err(StoreError::Schema(
                "the database has tables named samples/incidents but no gpuwarden_schema table: it is \
                 not a gpuwarden store; point store.url at an empty database"
                    .into(),
            ));
        }
        c.batch_execute(
            "CREATE TABLE gpuwarden_schema (version integer PRIMARY KEY, description text NOT NULL, \
             applied_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE gpuwarden_meta (key text PRIMARY KEY, value text NOT NULL);",
        )
        .await
        .map_err(db("creating the gpuwarden_schema table"))?;
    }
    let current: i32 = c
        .query_one("SELECT coalesce(max(version), 0) FROM gpuwarden_schema", &[])
        .await
        .map_err(db("reading the schema version"))?
        .get(0);
    let newest = latest_schema_version();
    if current > newest {
        return Err(StoreError::Schema(format!(
            "the database's schema is version {current}, newer than this gpuwarden knows ({newest}); \
             upgrade gpuwarden (or point store.url at another database) — an older build must not write to it"
        )));
    }
    let mut meta = HashMap::new();
    for r in c
        .query("SELECT key, value FROM gpuwarden_meta", &[])
        .await
        .map_err(db("reading gpuwarden_meta"))?
    {
        meta.insert(r.get::<_, String>(0), r.get::<_, String>(1));
    }
    let stored_mode = meta.get("partitioning").cloned();
    let stored_width = meta.get("partition_ms").cloned();
    let (mode, width) = match (stored_mode, stored_width) {
        (Some(m), Some(w)) => {
            let mode = if m == "timescaledb" {
                Partitioning::Timescale
            } else {
                Partitioning::Native
            };
            let width = w
                .parse()
                .map_err(|_| StoreError::Schema(format!("gpuwarden_meta partition_ms = {w:?} is not a number")))?;
            (mode, width)
        }
        _ => {
            let mode = if want_timescale && timescale_available(c).await? {
                Partitioning::Timescale
            } else {
                Partitioning::Native
            };
            (mode, partition_ms)
        }
    };
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let tx = c.transaction().await.map_err(db("starting a migration"))?;
        let sql = match mode {
            Partitioning::Native => format!("{}{}", common_for(m.version), m.native),
            Partitioning::Timescale => format!(
                "{}{}",
                common_for(m.version),
                m.timescale.replace("{PARTITION_MS}", &width.to_string())
            ),
        };
        tx.batch_execute(&sql).await.map_err(db(format!(
            "applying schema migration {} ({})",
            m.version, m.description
        )))?;
        tx.execute(
            "INSERT INTO gpuwarden_schema (version, description) VALUES ($1, $2)",
            &[&m.version, &m.description],
        )
        .await
        .map_err(db("recording a migration"))?;
        let mode_name = match mode {
            Partitioning::Native => "native",
            Partitioning::Timescale => "timescaledb",
        };
        tx.execute(
            "INSERT INTO gpuwarden_meta (key, value) VALUES ('partitioning', $1), ('partition_ms', $2) \
             ON CONFLICT (key) DO NOTHING",
            &[&mode_name, &width.to_string()],
        )
        .await
        .map_err(db("recording the partitioning"))?;
        tx.commit().await.map_err(db("committing a migration"))?;
        tracing::info!(version = m.version, "applied store schema migration");
    }
    Ok((mode, width))
}

/// Statements every partitioning mode runs for a version.
fn common_for(version: i32) -> &'static str {
    match version {
        1 => COMMON_V1,
        2 => COMMON_V2,
        _ => "",
    }
}

/// Whether TimescaleDB can be used: installed in the database, or installable now.
async fn timescale_available(c: &deadpool_postgres::Object) -> Result<bool, StoreError> {
    let available: bool = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')",
            &[],
        )
        .await
        .map_err(db("looking for the TimescaleDB extension"))?
        .get(0);
    if !available {
        return Ok(false);
    }
    match c.batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb").await {
        Ok(()) => Ok(true),
        Err(e) => {
            // Available but not loadable (shared_preload_libraries): native partitioning works.
            tracing::warn!(
                "TimescaleDB is installed but could not be enabled ({}); using native partitioning",
                pg_reason(&e)
            );
            Ok(false)
        }
    }
}

/// Creates the `samples`/`events` partitions starting at `starts` that are not known yet.
async fn ensure_partitions<C: GenericClient>(
    c: &C,
    known: &Mutex<BTreeSet<i64>>,
    width: i64,
    starts: Vec<i64>,
) -> Result<(), StoreError> {
    let missing: Vec<i64> = {
        let k = known.lock();
        starts.into_iter().filter(|s| !k.contains(s)).collect()
    };
    if missing.is_empty() {
        return Ok(());
    }
    if missing.len() > MAX_NEW_PARTITIONS_PER_BATCH {
        return Err(StoreError::Encoding {
            what: "sample times".into(),
            reason: format!(
                "the batch would create {} time partitions (more than {MAX_NEW_PARTITIONS_PER_BATCH}); \
                 its timestamps are probably wrong (check the sources' clocks)",
                missing.len()
            ),
        });
    }
    for start in missing {
        let end = start.checked_add(width).ok_or_else(|| StoreError::Encoding {
            what: format!("sample time {start}"),
            reason: "outside the range the store can partition".into(),
        })?;
        for table in ["samples", "events"] {
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF {table} FOR VALUES FROM ({start}) TO ({end})",
                partition_name(table, start)
            );
            if let Err(e) = c.batch_execute(&sql).await {
                // Another instance may have created it at the same moment.
                let exists: bool = c
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&partition_name(table, start)])
                    .await
                    .map_err(db("checking a partition"))?
                    .get(0);
                if !exists {
                    return Err(db(format!("creating partition {}", partition_name(table, start)))(e));
                }
            }
        }
        known.lock().insert(start);
    }
    Ok(())
}

async fn write_samples(tx: &deadpool_postgres::Transaction<'_>, samples: &[SampleRow]) -> Result<(), StoreError> {
    if samples.is_empty() {
        return Ok(());
    }
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS stage_samples \
         (gpu text, field text, ts_ms bigint, value double precision) ON COMMIT DELETE ROWS",
    )
    .await
    .map_err(db("creating the staging table"))?;
    let sink = tx
        .copy_in("COPY stage_samples (gpu, field, ts_ms, value) FROM STDIN BINARY")
        .await
        .map_err(db("starting COPY of samples"))?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::TEXT, Type::INT8, Type::FLOAT8]);
    let mut writer = std::pin::pin!(writer);
    for s in samples {
        let gpu: &str = &s.gpu;
        writer
            .as_mut()
            .write(&[&gpu, &s.field, &s.ts_ms, &s.value])
            .await
            .map_err(db(format!("copying samples of {gpu}")))?;
    }
    writer.finish().await.map_err(db("finishing COPY of samples"))?;
    tx.batch_execute(
        "INSERT INTO samples (gpu, field, ts_ms, value) SELECT gpu, field, ts_ms, value FROM stage_samples \
           ON CONFLICT (gpu, field, ts_ms) DO UPDATE SET value = EXCLUDED.value;
         INSERT INTO latest (gpu, field, ts_ms, value)
           SELECT DISTINCT ON (gpu, field) gpu, field, ts_ms, value FROM stage_samples
           ORDER BY gpu, field, ts_ms DESC
           ON CONFLICT (gpu, field) DO UPDATE SET ts_ms = EXCLUDED.ts_ms, value = EXCLUDED.value
           WHERE latest.ts_ms <= EXCLUDED.ts_ms;
         UPDATE gpus g SET first_seen_ms = least(g.first_seen_ms, s.lo), last_seen_ms = greatest(g.last_seen_ms, s.hi)
           FROM (SELECT gpu, min(ts_ms) AS lo, max(ts_ms) AS hi FROM stage_samples GROUP BY gpu) s
           WHERE g.uuid = s.gpu AND (s.lo < g.first_seen_ms OR s.hi > g.last_seen_ms);",
    )
    .await
    .map_err(db(format!("inserting {} samples", samples.len())))
}

async fn write_events(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[(String, String, i64, String)],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let gpus: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
    let nodes: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    let ts: Vec<i64> = events.iter().map(|e| e.2).collect();
    let json: Vec<&str> = events.iter().map(|e| e.3.as_str()).collect();
    // WITH ORDINALITY keeps the batch's order in `seq` (events with one time stay in order).
    tx.execute(
        "INSERT INTO events (gpu, node, ts_ms, event)
         SELECT g, n, t, j::jsonb FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[])
           WITH ORDINALITY AS u(g, n, t, j, o) ORDER BY o",
        &[&gpus, &nodes, &ts, &json],
    )
    .await
    .map_err(db(format!("inserting {} events", events.len())))?;
    Ok(())
}

async fn write_gpus(
    tx: &deadpool_postgres::Transaction<'_>,
    gpus: &[(String, String)],
    seen_ms: TimestampMs,
) -> Result<(), StoreError> {
    if gpus.is_empty() {
        return Ok(());
    }
    let uuids: Vec<&str> = gpus.iter().map(|g| g.0.as_str()).collect();
    let json: Vec<&str> = gpus.iter().map(|g| g.1.as_str()).collect();
    tx.execute(
        "INSERT INTO gpus (uuid, identity, first_seen_ms, last_seen_ms)
         SELECT u, j::jsonb, $3, $3 FROM unnest($1::text[], $2::text[]) AS x(u, j) ORDER BY u
         ON CONFLICT (uuid) DO UPDATE SET identity = EXCLUDED.identity,
           first_seen_ms = least(gpus.first_seen_ms, EXCLUDED.first_seen_ms),
           last_seen_ms = greatest(gpus.last_seen_ms, EXCLUDED.last_seen_ms)",
        &[&uuids, &json, &seen_ms],
    )
    .await
    .map_err(db(format!("upserting {} GPUs", gpus.len())))?;
    Ok(())
}

impl Store for PostgresStore {
    /// One transaction: the page is there whole or not at all, for every reader.
    fn append_page(&self, page: &PageWrite<'_>) -> Result<(), StoreError> {
        let owned = OwnedPage {
            samples: flatten(page.rows),
            events: own_events(page.events)?,
            gpus: own_gpus(page.gpus)?,
            seen_ms: page.seen_ms,
        };
        if owned.samples.is_empty() && owned.events.is_empty() && owned.gpus.is_empty() {
            return Ok(());
        }
        self.write_page(owned)
    }

    fn write_health(&self) -> WriteHealth {
        self.health.lock().clone()
    }

    fn append_samples(&self, rows: &[GpuSamples]) -> Result<(), StoreError> {
        let samples = flatten(rows);
        if samples.is_empty() {
            return Ok(());
        }
        self.write_page(OwnedPage {
            samples,
            events: Vec::new(),
            gpus: Vec::new(),
            seen_ms: 0,
        })
    }

    fn append_events(&self, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        self.write_page(OwnedPage {
            samples: Vec::new(),
            events: own_events(events)?,
            gpus: Vec::new(),
            seen_ms: 0,
        })
    }

    fn upsert_gpus(&self, gpus: &[GpuIdentity], seen_ms: TimestampMs) -> Result<(), StoreError> {
        if gpus.is_empty() {
            return Ok(());
        }
        self.write_page(OwnedPage {
            samples: Vec::new(),
            events: Vec::new(),
            gpus: own_gpus(gpus)?,
            seen_ms,
        })
    }

    fn gpus(&self) -> Result<Vec<GpuRecord>, StoreError> {
        let rows = self.query(|c| async move {
            c.query(
                "SELECT identity::text, first_seen_ms, last_seen_ms FROM gpus ORDER BY uuid COLLATE \"C\"",
                &[],
            )
            .await
            .map_err(db("reading GPUs"))
        })?;
        rows.iter()
            .map(|r| {
                Ok(GpuRecord {
                    identity: decode("a GPU identity", r.get::<_, &str>(0))?,
                    first_seen_ms: r.get(1),
                    last_seen_ms: r.get(2),
                })
            })
            .collect()
    }

    fn latest(&self, gpu: &GpuUuid) -> Result<Vec<(FieldName, Point)>, StoreError> {
        let g = gpu.0.to_string();
        let rows = self.query(move |c| async move {
            c.query(
                "SELECT field, ts_ms, value FROM latest WHERE gpu = $1 ORDER BY field COLLATE \"C\"",
                &[&g],
            )
            .await
            .map_err(db("reading the latest values of a GPU"))
        })?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    FieldName::parse(r.get::<_, &str>(0)),
                    Point {
                        ts_ms: r.get(1),
                        value: r.get(2),
                    },
                )
            })
            .collect())
    }

    fn range(
        &self,
        gpu: &GpuUuid,
        field: &FieldName,
        from: TimestampMs,
        to: TimestampMs,
        max_points: usize,
    ) -> Result<Vec<Point>, StoreError> {
        if from >= to || max_points == 0 {
            return Ok(Vec::new());
        }
        let (g, f) = (gpu.0.to_string(), field.to_string());
        let points = self.query(move |c| async move {
            let rows = c
                .query(
                    "SELECT ts_ms, value FROM samples WHERE gpu = $1 AND field = $2 AND ts_ms >= $3 AND ts_ms < $4 \
                     ORDER BY ts_ms",
                    &[&g, &f, &from, &to],
                )
                .await
                .map_err(db(format!("reading {f} of {g}")))?;
            Ok(rows
                .iter()
                .map(|r| Point {
                    ts_ms: r.get(0),
                    value: r.get(1),
                })
                .collect::<Vec<Point>>())
        })?;
        Ok(crate::embedded::query::downsample(points, from, to, max_points))
    }

    fn events(&self, gpu: Option<&GpuUuid>, from: TimestampMs, to: TimestampMs) -> Result<Vec<Event>, StoreError> {
        if from >= to {
            return Ok(Vec::new());
        }
        let g = gpu.map(|g| g.0.to_string());
        let rows = self.query(move |c| async move {
            let params: Vec<&(dyn ToSql + Sync)> = match &g {
                Some(g) => vec![&from, &to, g],
                None => vec![&from, &to],
            };
            let sql = if g.is_some() {
                "SELECT event::text FROM events WHERE ts_ms >= $1 AND ts_ms < $2 AND gpu = $3 ORDER BY ts_ms, seq"
            } else {
                "SELECT event::text FROM events WHERE ts_ms >= $1 AND ts_ms < $2 ORDER BY ts_ms, seq"
            };
            c.query(sql, &params).await.map_err(db("reading events"))
        })?;
        rows.iter().map(|r| decode("an event", r.get::<_, &str>(0))).collect()
    }

    fn upsert_incidents(&self, incidents: &[Incident]) -> Result<(), StoreError> {
        if incidents.is_empty() {
            return Ok(());
        }
        // The last version of an id in the batch wins (one row may be updated once per statement).
        let mut by_id: HashMap<&str, usize> = HashMap::new();
        let mut rows: Vec<(String, String, i64, Option<i64>, String, String)> = Vec::new();
        for inc in incidents {
            let row = (
                inc.id.clone(),
                inc.state.as_str().to_string(),
                inc.updated_ms,
                inc.resolved_ms,
                encode("an incident", inc)?,
                inc.dedup_key.clone(),
            );
            match by_id.get(inc.id.as_str()) {
                Some(&i) => rows[i] = row,
                None => {
                    by_id.insert(&inc.id, rows.len());
                    rows.push(row);
                }
            }
        }
        let r = self.query(move |c| async move {
            let ids: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
            let states: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
            let updated: Vec<i64> = rows.iter().map(|r| r.2).collect();
            let resolved: Vec<Option<i64>> = rows.iter().map(|r| r.3).collect();
            let json: Vec<&str> = rows.iter().map(|r| r.4.as_str()).collect();
            let keys: Vec<&str> = rows.iter().map(|r| r.5.as_str()).collect();
            c.execute(
                "INSERT INTO incidents (id, state, updated_ms, resolved_ms, incident, dedup_key)
                 SELECT i, s, u, r, j::jsonb, k FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::text[])
                   AS x(i, s, u, r, j, k) ORDER BY i
                 ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, updated_ms = EXCLUDED.updated_ms,
                   resolved_ms = EXCLUDED.resolved_ms, incident = EXCLUDED.incident, dedup_key = EXCLUDED.dedup_key",
                &[&ids, &states, &updated, &resolved, &json, &keys],
            )
            .await
            .map_err(db(format!("upserting {} incidents", ids.len())))
        });
        self.note(r).map(|_| ())
    }

    /// One transaction; per dedup key a transaction-scoped advisory lock, so two
    /// instances writing the same condition are serialized: the second finds the first's
    /// unresolved incident and adopts it instead of opening a second one (the partial
    /// unique index `incidents_one_unresolved_per_key` is the backstop). A write is a
    /// transition when the stored row did not exist or had another state, severity or
    /// action.
    fn write_incidents(&self, incidents: &[Incident]) -> Result<Vec<IncidentWrite>, StoreError> {
        if incidents.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows: Vec<(String, String, String, i64, Option<i64>, String)> = Vec::with_capacity(incidents.len());
        // Per incident: whether this copy knows of an acknowledgement, and the time of the
        // newest thing it knows happened (to tell a stale copy from a reopening).
        let mut known: Vec<(bool, i64)> = Vec::with_capacity(incidents.len());
        for inc in incidents {
            rows.push((
                inc.id.clone(),
                inc.dedup_key.clone(),
                inc.state.as_str().to_string(),
                inc.updated_ms,
                inc.resolved_ms,
                encode("an incident", inc)?,
            ));
            let newest = inc.timeline.iter().map(|t| t.ts_ms).fold(inc.opened_ms, i64::max);
            known.push((inc.acknowledged_ms.is_some(), newest));
        }
        let r = self.query(move |mut c| async move {
            let tx = c.transaction().await.map_err(db("starting an incident write"))?;
            // Locks in key order: two instances locking overlapping sets cannot deadlock.
            let keys: BTreeSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
            for k in keys {
                tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", &[&k])
                    .await
                    .map_err(db(format!("locking incident key {k}")))?;
            }
            let mut out = Vec::with_capacity(rows.len());
            for ((id, key, state, updated, resolved, json), (acked, newest)) in rows.iter().zip(&known) {
                if state != "resolved" {
                    // A stale copy: the stored incident was acknowledged, or resolved after
                    // everything this copy knows of (by a person on another instance, or by
                    // the other instance's auto-resolution). Adopt the stored version
                    // rather than write the acknowledgement or resolution away.
                    let newer = tx
                        .query_opt(
                            "SELECT incident::text FROM incidents WHERE id = $1 AND (
                               (state = 'acknowledged' AND NOT $2)
                               OR (state = 'resolved' AND coalesce(resolved_ms, 0) > $3))",
                            &[id, acked, newest],
                        )
                        .await
                        .map_err(db(format!("reading incident {id}")))?;
                    if let Some(row) = newer {
                        out.push(IncidentWrite::Adopted(Box::new(decode("an incident", row.get::<_, &str>(0))?)));
                        continue;
                    }
                    let other = tx
                        .query_opt(
                            "SELECT incident::text FROM incidents WHERE dedup_key = $1 AND state <> 'resolved'                              AND id <> $2 ORDER BY id LIMIT 1",
                            &[key, id],
                        )
                        .await
                        .map_err(db(format!("looking for another open incident of {key}")))?;
                    if let Some(row) = other {
                        out.push(IncidentWrite::Adopted(Box::new(decode("an incident", row.get::<_, &str>(0))?)));
                        continue;
                    }
                }
                let same: Option<bool> = tx
                    .query_opt(
                        "SELECT state = $2 AND incident->'severity' = ($3::text::jsonb)->'severity'                          AND incident->'action' = ($3::text::jsonb)->'action' FROM incidents WHERE id = $1",
                        &[id, state, json],
                    )
                    .await
                    .map_err(db(format!("reading incident {id}")))?
                    .map(|r| r.get(0));
                tx.execute(
                    "INSERT INTO incidents (id, dedup_key, state, updated_ms, resolved_ms, incident)
                     VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)
                     ON CONFLICT (id) DO UPDATE SET dedup_key = EXCLUDED.dedup_key, state = EXCLUDED.state,
                       updated_ms = EXCLUDED.updated_ms, resolved_ms = EXCLUDED.resolved_ms,
                       incident = EXCLUDED.incident",
                    &[id, key, state, updated, resolved, json],
                )
                .await
                .map_err(db(format!("writing incident {id}")))?;
                out.push(IncidentWrite::Stored {
                    transition: same != Some(true),
                });
            }
            tx.commit().await.map_err(db("committing incidents"))?;
            Ok(out)
        });
        self.note(r)
    }

    fn postgres(&self) -> Option<PgHandle> {
        self.handle()
    }

    fn incidents(&self) -> Result<Vec<Incident>, StoreError> {
        let rows = self.query(|c| async move {
            c.query("SELECT incident::text FROM incidents ORDER BY id COLLATE \"C\"", &[])
                .await
                .map_err(db("reading incidents"))
        })?;
        rows.iter()
            .map(|r| decode("an incident", r.get::<_, &str>(0)))
            .collect()
    }

    /// Drops whole partitions (TimescaleDB: chunks) that end at or before `cutoff`;
    /// returns the samples they held. Also creates the partitions ahead of now.
    fn apply_retention(&self, cutoff: TimestampMs) -> Result<u64, StoreError> {
        self.create_ahead(now_ms())?;
        if self.partitioning == Partitioning::Timescale {
            return self.query(move |c| async move {
                let n: i64 = c
                    .query_one(
                        "SELECT count(*) FROM samples WHERE ts_ms < (SELECT coalesce(max(range_end_integer), \
                         -9223372036854775808) FROM timescaledb_information.chunks \
                         WHERE hypertable_name = 'samples' AND range_end_integer <= $1)",
                        &[&cutoff],
                    )
                    .await
                    .map_err(db("counting expired samples"))?
                    .get(0);
                for t in ["samples", "events"] {
                    c.execute(
                        &format!("SELECT drop_chunks('{t}', older_than => $1::bigint)"),
                        &[&cutoff],
                    )
                    .await
                    .map_err(db(format!("dropping old chunks of {t}")))?;
                }
                Ok(n as u64)
            });
        }
        let w = self.partition_ms;
        let expired: Vec<i64> = self
            .partitions
            .lock()
            .iter()
            .copied()
            .filter(|s| s.checked_add(w).is_some_and(|end| end <= cutoff))
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let known = self.partitions.clone();
        let removed = self.query(move |c| async move {
            let mut removed = 0u64;
            for start in expired {
                let (s, e) = (partition_name("samples", start), partition_name("events", start));
                let n: i64 = c
                    .query_one(&format!("SELECT count(*) FROM {s}"), &[])
                    .await
                    .map_err(db(format!("counting {s}")))?
                    .get(0);
                c.batch_execute(&format!("DROP TABLE IF EXISTS {s}; DROP TABLE IF EXISTS {e};"))
                    .await
                    .map_err(db(format!("dropping partition {s}")))?;
                known.lock().remove(&start);
                removed += n as u64;
            }
            Ok(removed)
        })?;
        if removed > 0 {
            tracing::info!(samples = removed, cutoff, "retention dropped old partitions");
        }
        Ok(removed)
    }

    /// Commits are durable already (`synchronous_commit`); nothing is buffered here.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Bytes are the tables' and indexes' sizes; the counts are the planner's estimates
    /// (`reltuples`, refreshed by autovacuum/ANALYZE): exact counts would scan every
    /// partition on each `/metrics` refresh.
    fn stats(&self) -> Result<StoreStats, StoreError> {
        let timescale = self.partitioning == Partitioning::Timescale;
        self.query(move |c| async move {
            let sql = if timescale {
                "SELECT (hypertable_size('samples') + hypertable_size('events') + pg_total_relation_size('gpus') \
                   + pg_total_relation_size('latest') + pg_total_relation_size('incidents'))::int8,
                   (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::int8 FROM pg_class c
                      JOIN timescaledb_information.chunks k ON c.relname = k.chunk_name
                      WHERE k.hypertable_name = 'samples'),
                   (SELECT greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = 'latest'::regclass),
                   (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::int8 FROM pg_class c
                      JOIN timescaledb_information.chunks k ON c.relname = k.chunk_name
                      WHERE k.hypertable_name = 'events')"
            } else {
                "SELECT (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('samples'))::int8
                   + (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_partition_tree('events'))::int8
                   + pg_total_relation_size('gpus') + pg_total_relation_size('latest') + pg_total_relation_size('incidents'),
                   (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::int8 FROM pg_partition_tree('samples') t
                      JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf),
                   (SELECT greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = 'latest'::regclass),
                   (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::int8 FROM pg_partition_tree('events') t
                      JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf)"
            };
            let r = c.query_one(sql, &[]).await.map_err(db("reading store statistics"))?;
            Ok(StoreStats {
                bytes_on_disk: r.get::<_, i64>(0).max(0) as u64,
                samples: r.get::<_, i64>(1).max(0) as u64,
                series: r.get::<_, i64>(2).max(0) as u64,
                events: r.get::<_, i64>(3).max(0) as u64,
                ..StoreStats::default()
            })
        })
    }
}

// Compile-time check of the trait's thread-safety promise.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PostgresStore>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::DcgmField;

    #[test]
    fn partition_names_round_trip_including_negative_starts() {
        for start in [0, 86_400_000, 1_700_000_000_000, -86_400_000, i64::MIN + 1] {
            let name = partition_name("samples", start);
            assert_eq!(partition_start("samples", &name), Some(start), "{name}");
        }
        assert_eq!(partition_start("samples", "samples_default"), None);
        assert_eq!(partition_start("samples", "events_p0"), None);
    }

    #[test]
    fn flatten_keeps_the_last_of_a_duplicated_key() {
        let g = GpuUuid::new("GPU-a");
        let f: FieldName = DcgmField::GpuTemp.into();
        let row = |ts, v| GpuSamples {
            gpu: g.clone(),
            ts_ms: ts,
            values: vec![(f.clone(), v)],
        };
        let out = flatten(&[row(1, 1.0), row(2, 2.0), row(1, 3.0)]);
        let got: Vec<(i64, f64)> = out.iter().map(|s| (s.ts_ms, s.value)).collect();
        assert_eq!(got, vec![(1, 3.0), (2, 2.0)]);
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_never_echoed() {
        let err = PostgresStore::open(&PostgresOptions {
            url: "postgres://gw:s3cret@127.0.0.1:1/gw".into(),
            ..PostgresOptions::default()
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("password_file"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
        let dbg = format!(
            "{:?}",
            PostgresOptions {
                password: Some("s3cret".into()),
                ..PostgresOptions::default()
            }
        );
        assert!(!dbg.contains("s3cret"), "{dbg}");
    }

    #[test]
    fn an_unreachable_database_is_a_clear_error() {
        // Port 1 on loopback: nothing listens there.
        let err = PostgresStore::open(&PostgresOptions {
            url: "postgres://gw@127.0.0.1:1/gw".into(),
            connect_timeout: Duration::from_secs(2),
            ..PostgresOptions::default()
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("127.0.0.1:1/gw"), "{msg}");
        assert!(msg.contains("is PostgreSQL running"), "{msg}");
    }
}
