//! The notifier: takes incident changes (as the pipeline's `IncidentSink`), turns them
//! into notifications, routes them, applies silences, writes them to the outbox, and
//! runs one delivery task per sink that drains the outbox in order with retries.
//!
//! Ordering and retries are per sink: a sink delivers its entries oldest first, and when
//! an attempt fails the whole sink backs off (exponentially, with jitter) rather than
//! skipping ahead — a resolution never overtakes the firing message it ends. One
//! failing sink never holds up another, and never stops the daemon: it is counted in
//! `/metrics`, shown in the API, and logged once when it starts failing and once when it
//! recovers.

use crate::config::{DeliverySettings, NotifyConfig};
use crate::error::NotifyError;
use crate::message::Notification;
use crate::metrics::NotifyMetrics;
use crate::outbox::{Entry, EntryState, NewEntry, Outbox, OutboxStore, SinkCounts};
use crate::route::Router;
use crate::silence::{NewSilence, Silence, SilenceError, Silences};
use crate::sinks::{self, BuildContext, Sink, SinkError};
use gpuwarden_incident::IncidentChange;
use gpuwarden_model::{Clock, Finding, TimestampMs};
use gpuwarden_pipeline::IncidentSink;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Finds the Kubernetes namespace of a GPU (by UUID), for routes and silences.
pub type NamespaceLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

struct SinkSlot {
    sink: Arc<dyn Sink>,
    wake: tokio::sync::Notify,
    rate_per_minute: Option<u32>,
    health: Mutex<SinkHealth>,
}

#[derive(Debug, Clone, Default)]
struct SinkHealth {
    failing_since_ms: Option<TimestampMs>,
    last_error: Option<String>,
    last_delivery_ms: Option<TimestampMs>,
}

/// One sink as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SinkStatus {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    #[serde(flatten)]
    pub counts: SinkCounts,
    /// True while the latest attempt failed.
    pub failing: bool,
    pub failing_since_ms: Option<TimestampMs>,
    pub last_error: Option<String>,
    pub last_delivery_ms: Option<TimestampMs>,
    /// The latest entries, newest first.
    pub recent: Vec<EntryView>,
}

/// One outbox entry as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    pub id: u64,
    pub delivery_key: String,
    pub incident: String,
    pub transition: String,
    pub severity: String,
    pub summary: String,
    pub state: EntryState,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_ms: TimestampMs,
    pub updated_ms: TimestampMs,
    pub silenced_by: Option<String>,
}

impl From<&Entry> for EntryView {
    fn from(e: &Entry) -> Self {
        EntryView {
            id: e.id,
            delivery_key: e.notification.delivery_key.clone(),
            incident: e.notification.incident.clone(),
            transition: e.notification.transition.as_str().into(),
            severity: e.notification.severity.as_str().into(),
            summary: e.notification.summary.clone(),
            state: e.state,
            attempts: e.attempts,
            last_error: e.last_error.clone(),
            created_ms: e.created_ms,
            updated_ms: e.updated_ms,
            silenced_by: e.silenced_by.clone(),
        }
    }
}

/// Where the notifier keeps its outbox and silences.
#[derive(Debug, Clone, Copy)]
pub enum StateIn<'a> {
    /// Files in this directory (`outbox.log`, `silences.json`): one process.
    Files(&'a Path),
    /// Tables of the PostgreSQL store: every instance on the database shares them.
    #[cfg(feature = "postgres")]
    Postgres(&'a gpuwarden_store::postgres::PgHandle),
}

/// The notification subsystem of one gpuwarden.
pub struct Notifier {
    outbox: Box<dyn OutboxStore>,
    silences: Silences,
    router: Router,
    sinks: BTreeMap<String, SinkSlot>,
    settings: DeliverySettings,
    external_url: Option<String>,
    namespace_of: RwLock<Option<NamespaceLookup>>,
    account_of: RwLock<Option<NamespaceLookup>>,
    metrics: NotifyMetrics,
    clock: Arc<dyn Clock>,
    /// Serializes "next sequence number → write" so two callers cannot take one number.
    enqueue_lock: Mutex<()>,
}

impl Notifier {
    /// Builds every sink of `cfg` (resolving secrets) and opens the outbox and silences
    /// in `dir` (e.g. `data_dir/outbox`).
    pub fn new(cfg: &NotifyConfig, dir: &Path, clock: Arc<dyn Clock>) -> Result<Notifier, NotifyError> {
        Self::new_in(cfg, StateIn::Files(dir), clock)
    }

    /// Like [`new`](Self::new), with the outbox and silences where `state` says: files in
    /// a directory, or the PostgreSQL database of the store (shared by every instance on
    /// it).
    pub fn new_in(cfg: &NotifyConfig, state: StateIn<'_>, clock: Arc<dyn Clock>) -> Result<Notifier, NotifyError> {
        let settings = cfg.settings()?;
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .user_agent(concat!("gpuwarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| crate::sinks::BuildError::Invalid {
                sink: "(all)".into(),
                problem: format!("HTTP client: {e}"),
            })?;
        let ctx = BuildContext {
            settings: &settings,
            http,
        };
        let mut built = Vec::new();
        for (name, sc) in &cfg.sinks {
            built.push((sinks::build(name, sc, &ctx)?, sc.rate_limit_per_minute()));
        }
        let mut n = Notifier::from_parts_in(
            state,
            built,
            Router::new(cfg.routes.clone(), cfg.sinks.keys().cloned().collect()),
            settings,
            clock,
        )?;
        n.external_url = cfg.external_url.as_ref().map(|u| u.trim_end_matches('/').to_string());
        Ok(n)
    }

    /// Builds a notifier over ready sinks (tests and benchmarks bring their own).
    pub fn from_parts(
        dir: &Path,
        sinks: Vec<(Arc<dyn Sink>, Option<u32>)>,
        router: Router,
        settings: DeliverySettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Notifier, NotifyError> {
        Self::from_parts_in(StateIn::Files(dir), sinks, router, settings, clock)
    }

    /// [`from_parts`](Self::from_parts) with the outbox and silences where `state` says.
    pub fn from_parts_in(
        state: StateIn<'_>,
        sinks: Vec<(Arc<dyn Sink>, Option<u32>)>,
        router: Router,
        settings: DeliverySettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Notifier, NotifyError> {
        let (outbox, silences): (Box<dyn OutboxStore>, Silences) = match state {
            StateIn::Files(dir) => (
                Box::new(Outbox::open(dir, settings.keep_done)?),
                Silences::open(&dir.join("silences.json"))?,
            ),
            #[cfg(feature = "postgres")]
            StateIn::Postgres(db) => (
                Box::new(crate::outbox::shared::PgOutbox::new(
                    db.clone(),
                    settings.claim_lease,
                    settings.keep_done,
                )),
                Silences::open_shared(db)?,
            ),
        };
        let silences = silences.with_limits(settings.silence_limits.clone());
        let metrics = NotifyMetrics::default();
        let sinks: BTreeMap<String, SinkSlot> = sinks
            .into_iter()
            .map(|(sink, rate)| {
                let name = sink.name().to_string();
                metrics
                    .pending
                    .get_or_create(&NotifyMetrics::label(&name))
                    .set(outbox.pending_count(&name) as i64);
                (
                    name,
                    SinkSlot {
                        sink,
                        wake: tokio::sync::Notify::new(),
                        rate_per_minute: rate,
                        health: Mutex::new(SinkHealth::default()),
                    },
                )
            })
            .collect();
        Ok(Notifier {
            outbox,
            silences,
            router,
            sinks,
            settings,
            external_url: None,
            namespace_of: RwLock::new(None),
            account_of: RwLock::new(None),
            metrics,
            clock,
            enqueue_lock: Mutex::new(()),
        })
    }

    /// Sets how a GPU's namespace is found (the live fleet's workload labels).
    pub fn set_namespace_lookup(&self, f: NamespaceLookup) {
        *self.namespace_of.write() = Some(f);
    }

    /// Sets how a GPU's Slurm account is found (the live fleet's workload). A message
    /// about a GPU then carries `gpuwarden.account` when its incident did not record
    /// one, so that a tenant's silence confined to its accounts can match it.
    pub fn set_account_lookup(&self, f: NamespaceLookup) {
        *self.account_of.write() = Some(f);
    }

    /// The counters, to register on `/metrics`.
    pub fn metrics(&self) -> &NotifyMetrics {
        &self.metrics
    }

    /// Names of the configured sinks.
    pub fn sink_names(&self) -> Vec<String> {
        self.sinks.keys().cloned().collect()
    }

    /// Records notifications (already numbered) for their routed sinks, durably, and
    /// wakes the sinks. `marks` are the (incident, seq, fingerprint) to remember.
    fn enqueue(&self, marks: Vec<(String, u64, u64)>, notifications: Vec<Notification>) {
        let now = self.clock.now_ms();
        let mut entries = Vec::new();
        for mut n in notifications {
            if n.url.is_none() && !n.incident.starts_with("finding:") {
                n.url = self
                    .external_url
                    .as_ref()
                    .map(|u| format!("{u}/api/v1/incidents/{}", n.incident));
            }
            let n = Arc::new(n);
            for sink in self.router.sinks_for(&n) {
                if !self.sinks.contains_key(&sink) {
                    continue;
                }
                let silenced_by = self.silences.silenced_by(&n, &sink, now);
                entries.push(NewEntry {
                    sink,
                    notification: n.clone(),
                    silenced_by,
                });
            }
        }
        let silenced: Vec<String> = entries
            .iter()
            .filter(|e| e.silenced_by.is_some())
            .map(|e| e.sink.clone())
            .collect();
        match self.outbox.enqueue(&marks, entries, now) {
            Ok(ids) => {
                for s in silenced {
                    self.metrics.silenced.get_or_create(&NotifyMetrics::label(&s)).inc();
                }
                let mut woken: Vec<&str> = Vec::new();
                for (sink, _) in &ids {
                    if !woken.contains(&sink.as_str()) {
                        woken.push(sink);
                        if let Some(slot) = self.sinks.get(sink) {
                            self.update_pending(sink);
                            slot.wake.notify_one();
                        }
                    }
                }
            }
            // Nothing else can keep them: say so loudly, once per failed write.
            Err(e) => tracing::error!("notifications could not be written to the outbox and will not be sent: {e}"),
        }
    }

    /// Delivers a bare finding (a security detection a SOC wants on its own). Repeats of
    /// the same finding (same rule, subject and time) are dropped.
    pub fn finding(&self, f: &Finding) {
        let _g = self.enqueue_lock.lock();
        let probe = Notification::from_finding(f, 0);
        let fp = fnv(&format!("{}|{}|{}", probe.incident, f.ts_ms, f.severity));
        let seq = match self.outbox.next_seq(&probe.incident, fp) {
            Ok(Some(seq)) => seq,
            Ok(None) => return,
            Err(e) => {
                tracing::error!("a finding's notification could not be numbered and will not be sent: {e}");
                return;
            }
        };
        let n = Notification::from_finding(f, seq);
        self.enqueue(vec![(n.incident.clone(), seq, fp)], vec![n]);
    }

    /// Sends `n` to exactly the sinks named in `sinks`, durably (outbox, retries),
    /// bypassing routes and silences: for records that must reach a SIEM whatever the
    /// routing says and that nobody may silence (the audit trail). Names that are not
    /// configured sinks are skipped (the configuration check refuses them at start).
    pub fn forward(&self, n: Notification, sinks: &[String]) {
        let _g = self.enqueue_lock.lock();
        let now = self.clock.now_ms();
        let n = Arc::new(n);
        let entries: Vec<NewEntry> = sinks
            .iter()
            .filter(|s| self.sinks.contains_key(*s))
            .map(|s| NewEntry {
                sink: s.clone(),
                notification: n.clone(),
                silenced_by: None,
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        match self.outbox.enqueue(&[], entries, now) {
            Ok(ids) => {
                for (sink, _) in &ids {
                    if let Some(slot) = self.sinks.get(sink) {
                        self.update_pending(sink);
                        slot.wake.notify_one();
                    }
                }
            }
            Err(e) => {
                tracing::error!("a forwarded record could not be written to the outbox and will not be sent: {e}")
            }
        }
    }

    fn update_pending(&self, sink: &str) {
        self.metrics
            .pending
            .get_or_create(&NotifyMetrics::label(sink))
            .set(self.outbox.pending_count(sink) as i64);
    }

    /// Starts one delivery task per sink; they stop when `shutdown` turns true.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        self.sinks
            .keys()
            .map(|name| tokio::spawn(self.clone().run_sink(name.clone(), shutdown.clone())))
            .collect()
    }

    async fn run_sink(self: Arc<Self>, name: String, mut shutdown: watch::Receiver<bool>) {
        let slot = &self.sinks[&name];
        let mut bucket = slot.rate_per_minute.map(Bucket::new);
        let mut failures: u32 = 0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let batch = match self.claim(&name, slot.sink.max_batch()).await {
                Ok(b) => b,
                Err(e) => {
                    // The shared outbox is unreachable: the entries are safe there; try again.
                    tracing::warn!("notifications to sink '{name}': reading the outbox: {e}");
                    Vec::new()
                }
            };
            if batch.is_empty() {
                // A shared outbox gets entries from other instances, and claims of a dead
                // one run out: look again after a while even without a wake-up.
                let poll = if self.outbox.shared() {
                    (self.settings.claim_lease / 4).clamp(Duration::from_millis(200), Duration::from_secs(2))
                } else {
                    Duration::from_secs(24 * 3600)
                };
                tokio::select! {
                    _ = slot.wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let now = self.clock.now_ms();
            let give_up_ms = self.settings.give_up_after.as_millis() as i64;
            let (expired, batch): (Vec<Entry>, Vec<Entry>) =
                batch.into_iter().partition(|e| now - e.created_ms > give_up_ms);
            if !expired.is_empty() {
                let ids: Vec<u64> = expired.iter().map(|e| e.id).collect();
                let why = format!(
                    "undelivered after {} ({})",
                    humantime::format_duration(self.settings.give_up_after),
                    expired[0].last_error.as_deref().unwrap_or("no attempt succeeded")
                );
                self.mark(&name, ids, Mark::Failed(why)).await;
                continue;
            }
            if let Some(b) = bucket.as_mut() {
                let wait = b.take();
                if !wait.is_zero() {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            }
            let notes: Vec<Arc<Notification>> = batch.iter().map(|e| e.notification.clone()).collect();
            let ids: Vec<u64> = batch.iter().map(|e| e.id).collect();
            let result = match tokio::time::timeout(self.settings.timeout, slot.sink.deliver(&notes)).await {
                Ok(r) => r,
                Err(_) => Err(SinkError::Timeout {
                    sink: name.clone(),
                    receiver: slot.sink.type_name().into(),
                    seconds: self.settings.timeout.as_secs_f64(),
                }),
            };
            match result {
                Ok(()) => {
                    failures = 0;
                    self.mark(&name, ids, Mark::Delivered).await;
                }
                Err(e) if !e.retryable() => {
                    failures = 0;
                    self.mark(&name, ids, Mark::Failed(e.to_string())).await;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.mark(&name, ids, Mark::Retry(e.to_string())).await;
                    let delay = backoff(&self.settings, failures);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// The next entries of `sink` to send (claimed, where the outbox is shared), read on a
    /// blocking thread: a shared outbox is a database round trip.
    async fn claim(self: &Arc<Self>, sink: &str, max: usize) -> Result<Vec<Entry>, crate::outbox::OutboxError> {
        if !self.outbox.shared() {
            return self.outbox.claim(sink, max, self.clock.now_ms());
        }
        let (me, sink) = (self.clone(), sink.to_string());
        tokio::task::spawn_blocking(move || me.outbox.claim(&sink, max, me.clock.now_ms()))
            .await
            .unwrap_or_else(|e| Err(crate::outbox::OutboxError::Database(format!("claim task: {e}"))))
    }

    /// Records the outcome of an attempt: outbox, metrics, the sink's health, and a log
    /// line when the sink's state changes.
    async fn mark(&self, sink: &str, ids: Vec<u64>, mark: Mark) {
        let now = self.clock.now_ms();
        let label = NotifyMetrics::label(sink);
        let n = ids.len() as u64;
        let res = match &mark {
            Mark::Delivered => self.outbox.mark_delivered(&ids, now),
            Mark::Failed(e) => self.outbox.mark_failed(&ids, e, now),
            Mark::Retry(e) => self.outbox.mark_attempt(&ids, e, now),
        };
        if let Err(e) = res {
            tracing::error!("notifications to sink '{sink}': recording the outcome in the outbox: {e}");
        }
        let slot = &self.sinks[sink];
        let mut h = slot.health.lock();
        match mark {
            Mark::Delivered => {
                self.metrics.delivered.get_or_create(&label).inc_by(n);
                if h.failing_since_ms.take().is_some() {
                    tracing::info!("notifications to sink '{sink}' are delivered again");
                }
                h.last_delivery_ms = Some(now);
            }
            Mark::Failed(e) => {
                self.metrics.failed.get_or_create(&label).inc_by(n);
                tracing::warn!("{n} notification(s) to sink '{sink}' given up: {e}");
                h.last_error = Some(e);
            }
            Mark::Retry(e) => {
                self.metrics.retries.get_or_create(&label).inc_by(n);
                if h.failing_since_ms.is_none() {
                    h.failing_since_ms = Some(now);
                    tracing::warn!("notifications to sink '{sink}' are failing (will retry with backoff): {e}");
                }
                h.last_error = Some(e);
            }
        }
        drop(h);
        self.update_pending(sink);
    }

    /// Sends a test message to `sink` now, bypassing routes, silences and the outbox.
    pub async fn test(&self, sink: &str) -> Result<Notification, NotifyError> {
        let slot = self
            .sinks
            .get(sink)
            .ok_or_else(|| NotifyError::UnknownSink(sink.into()))?;
        let mut n = Notification::test(self.clock.now_ms());
        n.url = self.external_url.clone();
        let batch = [Arc::new(n.clone())];
        match tokio::time::timeout(self.settings.timeout, slot.sink.deliver(&batch)).await {
            Ok(Ok(())) => Ok(n),
            Ok(Err(e)) => Err(NotifyError::Delivery(e)),
            Err(_) => Err(NotifyError::Delivery(SinkError::Timeout {
                sink: sink.into(),
                receiver: slot.sink.type_name().into(),
                seconds: self.settings.timeout.as_secs_f64(),
            })),
        }
    }

    /// Every sink with its outbox counts, health and latest `recent` entries.
    pub fn status(&self, recent: usize) -> Vec<SinkStatus> {
        self.sinks
            .iter()
            .map(|(name, slot)| {
                let h = slot.health.lock().clone();
                SinkStatus {
                    name: name.clone(),
                    type_name: slot.sink.type_name().into(),
                    counts: self.outbox.counts(name),
                    failing: h.failing_since_ms.is_some(),
                    failing_since_ms: h.failing_since_ms,
                    last_error: h.last_error,
                    last_delivery_ms: h.last_delivery_ms,
                    recent: self.outbox.recent(name, recent).iter().map(EntryView::from).collect(),
                }
            })
            .collect()
    }

    /// Every sink as a caller confined to part of the fleet (a tenant) sees it: counts
    /// and entries only of notifications that pass `visible`; the sink's last error
    /// (a receiver's answer may quote another tenant's message) is left out, and the
    /// last delivery is the newest visible one.
    pub fn status_where(&self, recent: usize, visible: &dyn Fn(&Notification) -> bool) -> Vec<SinkStatus> {
        self.sinks
            .iter()
            .map(|(name, slot)| {
                let h = slot.health.lock().clone();
                // The last delivery among all kept visible entries, not only the listed.
                let (counts, all) = self.outbox.counts_and_recent_where(name, usize::MAX, visible);
                let last_delivery_ms = all
                    .iter()
                    .filter(|e| e.state == EntryState::Delivered)
                    .map(|e| e.updated_ms)
                    .max();
                SinkStatus {
                    name: name.clone(),
                    type_name: slot.sink.type_name().into(),
                    counts,
                    failing: h.failing_since_ms.is_some(),
                    failing_since_ms: h.failing_since_ms,
                    last_error: None,
                    last_delivery_ms,
                    recent: all.iter().take(recent).map(EntryView::from).collect(),
                }
            })
            .collect()
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.silences.list()
    }

    pub fn create_silence(&self, new: NewSilence) -> Result<Silence, SilenceError> {
        let s = self.silences.create(new, &self.sink_names(), self.clock.now_ms())?;
        tracing::info!(id = %s.id, author = %s.author, "silence created: {}", s.comment);
        Ok(s)
    }

    pub fn expire_silence(&self, id: &str) -> Result<Silence, SilenceError> {
        let s = self.silences.expire(id, self.clock.now_ms())?;
        tracing::info!(id = %s.id, "silence expired");
        Ok(s)
    }

    /// The current time of the notifier's clock (wall time).
    pub fn now_ms(&self) -> TimestampMs {
        self.clock.now_ms()
    }
}

enum Mark {
    Delivered,
    Failed(String),
    Retry(String),
}

/// `retry_initial × 2^(failures-1)`, at most `retry_max`, ±20 % jitter so that many
/// gpuwardens do not retry a recovering receiver in lockstep.
fn backoff(s: &DeliverySettings, failures: u32) -> Duration {
    let base = s.retry_initial.as_secs_f64() * 2f64.powi(failures.saturating_sub(1).min(30) as i32);
    let capped = base.min(s.retry_max.as_secs_f64());
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    Duration::from_secs_f64(capped * jitter)
}

/// A token bucket: `per_minute` requests a minute, bursts of a tenth of that.
struct Bucket {
    tokens: f64,
    cap: f64,
    per_sec: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_minute: u32) -> Bucket {
        let cap = (f64::from(per_minute) / 10.0).max(1.0);
        Bucket {
            tokens: cap,
            cap,
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            last: Instant::now(),
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec).min(self.cap);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec)
        }
    }
}

/// FNV-1a: a fingerprint that is the same in every build (unlike `DefaultHasher`), so a
/// repeat is recognised across restarts and upgrades.
fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What identifies one transition of an incident: if all of this is equal, a second
/// hand-over of the change is a repeat.
fn fingerprint(c: &IncidentChange) -> u64 {
    let i = &c.incident;
    let mut kinds = c.kinds.clone();
    kinds.sort();
    fnv(&format!(
        "{}|{:?}|{}|{}|{:?}|{}|{}",
        i.id, i.state, i.severity, i.action, kinds, i.updated_ms, i.flaps
    ))
}

impl IncidentSink for Notifier {
    fn incidents_changed(&self, changes: &[IncidentChange]) {
        let _g = self.enqueue_lock.lock();
        let lookup = self.namespace_of.read().clone();
        let accounts = self.account_of.read().clone();
        let mut marks = Vec::new();
        let mut notes = Vec::new();
        let mut seen: HashMap<String, u64> = HashMap::new();
        for c in changes.iter().filter(|c| c.is_notable()) {
            let fp = fingerprint(c);
            let id = &c.incident.id;
            let seq = match seen.get(id) {
                Some(s) => s + 1,
                None => match self.outbox.next_seq(id, fp) {
                    Ok(Some(s)) => s,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::error!(
                            "the notification of incident {id} could not be numbered and will not be sent: {e}"
                        );
                        continue;
                    }
                },
            };
            let ns = match (&lookup, &c.incident.gpu) {
                (Some(f), Some(g)) => f(g.as_str()),
                _ => None,
            };
            let Some(mut n) = Notification::from_change(c, seq, ns) else {
                continue;
            };
            if let (Some(f), Some(g)) = (&accounts, &c.incident.gpu) {
                if !n.labels.contains_key("gpuwarden.account") {
                    if let Some(a) = f(g.as_str()) {
                        n.labels.insert("gpuwarden.account".into(), a);
                    }
                }
            }
            seen.insert(id.clone(), seq);
            marks.push((id.clone(), seq, fp));
            notes.push(n);
        }
        if !marks.is_empty() {
            self.enqueue(marks, notes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let s = DeliverySettings {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
            ..DeliverySettings::default()
        };
        for (f, base) in [(1u32, 1.0f64), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (40, 10.0)] {
            let d = backoff(&s, f).as_secs_f64();
            assert!(d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9, "{f}: {d}");
        }
    }

    #[test]
    fn bucket_limits_the_rate() {
        let mut b = Bucket::new(60); // 1/s, burst 6
        for _ in 0..6 {
            assert!(b.take().is_zero());
        }
        let w = b.take();
        assert!(w > Duration::from_millis(900) && w <= Duration::from_secs(1), "{w:?}");
    }
}
