//! The wiring `run` and `serve` share: the analysis stage with every analyzer and the
//! notifier registered, and the background loops (evaluation every interval, retention
//! hourly, store compaction). One place, so the two commands cannot drift apart — they differ only in
//! where GPUs come from (simulator and scrapes, or agent pushes and remote_write).

use crate::config::RunConfig;
use anyhow::{Context, Result};
use gpuwarden_collect::prom::Limits;
use gpuwarden_collect::scrape::{ScrapeConfig, Scraper, TargetSources, TargetSpec};
use gpuwarden_detect::XidCatalog;
use gpuwarden_model::Clock;
use gpuwarden_pipeline::{Analysis, LiveFleet};
use gpuwarden_server::derived_metrics::DerivedMetrics;
use gpuwarden_store::Store;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Creates the data directory and opens the configured store (`[store] url`:
/// PostgreSQL; default the embedded store in `data_dir/store`).
pub fn open_store(cfg: &RunConfig) -> Result<Arc<dyn Store>> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    gpuwarden_store::open(&cfg.store).with_context(|| format!("opening the store at {}", cfg.store.describe()))
}

/// The live fleet view, seeded with the GPUs the store already knows (they show as stale
/// until they are seen again, instead of vanishing after a restart).
pub fn seeded_live(store: &dyn Store, stale_after_ms: i64) -> Result<Arc<LiveFleet>> {
    let live = Arc::new(LiveFleet::new(stale_after_ms.max(1000)));
    let known = store.gpus().context("reading the GPU inventory from the store")?;
    live.seed(known.into_iter().map(|r| (r.identity, r.last_seen_ms)));
    Ok(live)
}

/// The configured static targets.
pub fn static_targets(cfg: &RunConfig) -> Vec<TargetSpec> {
    cfg.targets
        .iter()
        .map(|t| TargetSpec::from_address(t, "static"))
        .collect()
}

/// The scrape collector over `static_targets` and the configured target files.
pub fn scraper(cfg: &RunConfig, static_targets: Vec<TargetSpec>, clock: Arc<dyn Clock>) -> Scraper {
    let config = ScrapeConfig {
        interval: cfg.scrape_interval,
        timeout: cfg.scrape_timeout,
        limits: Limits {
            max_body_bytes: cfg.max_body_bytes,
            ..Limits::default()
        },
        ..ScrapeConfig::default()
    };
    let sources = TargetSources {
        static_targets,
        files: cfg.target_files.clone(),
    };
    Scraper::new(config, sources, clock)
}

/// The receiver's clock that sample timestamps and data time are bounded by: the wall
/// clock, or — when `run` drives the simulator faster than real time — the simulator's
/// clock (an explicit simulated-clock mode; the bounds stay on).
pub fn time_source(clock: &Arc<dyn Clock>, sim: Option<&gpuwarden_sim::SimHandle>) -> Arc<dyn Clock> {
    match sim {
        Some(h) => Arc::new(h.clone()),
        None => clock.clone(),
    }
}

/// The analysis stage and its notifier, registered in `registry`.
pub struct Stage {
    pub analysis: Arc<Analysis>,
    pub notifier: Arc<gpuwarden_notify::Notifier>,
}

/// Builds the analysis stage (`time`: the receiver's clock that bounds data time, see
/// [`time_source`]): health engine + incidents (loaded from the store), the
/// anomaly and security analyzers, derived health metrics, and the notifier whose outbox
/// lives in the data directory — or, with the store in PostgreSQL, in the database,
/// shared by every instance on it (what was not delivered before a restart, or before
/// another instance died, is delivered after it).
pub fn build(
    cfg: &RunConfig,
    store: Arc<dyn Store>,
    live: Arc<LiveFleet>,
    clock: Arc<dyn Clock>,
    time: Arc<dyn Clock>,
    registry: &mut Registry,
) -> Result<Stage> {
    let correlation = match &cfg.incidents.correlation_rules {
        Some(path) => gpuwarden_incident::CorrelationRules::load(path).with_context(|| {
            format!(
                "[incidents] correlation_rules = {}: fix the file or remove the setting to use the built-in rules",
                path.display()
            )
        })?,
        None => gpuwarden_incident::CorrelationRules::builtin(),
    };
    // PostgreSQL: the outbox and silences live in the database too, shared by every
    // instance on it (docs/scaling.md, "High availability").
    let shared_db = store.postgres();
    let analysis = Arc::new(
        Analysis::new(
            store,
            live.clone(),
            clock.clone(),
            cfg.health_rules.clone(),
            XidCatalog::builtin(),
            cfg.incidents.clone(),
        )
        .context("loading incidents from the store")?
        .with_time_source(time)
        .with_correlation(correlation),
    );
    // What the health engine knew before a restart (counter baselines, XID episodes of
    // the repeat window) comes back from the store.
    let restored = analysis
        .restore_health()
        .context("restoring the health engine's state from the store")?;
    if restored.gpus > 0 {
        tracing::info!(
            gpus = restored.gpus,
            values = restored.values,
            events = restored.events,
            "health engine state restored from the store"
        );
    }
    analysis.register_metrics(registry);
    analysis.add_analyzer(Box::new(gpuwarden_anomaly::AnomalyAnalyzer::default()));
    analysis.add_analyzer(Box::new(security_engine(cfg)?));
    registry.register_collector(Box::new(DerivedMetrics {
        analysis: analysis.clone(),
        live: live.clone(),
        clock: clock.clone(),
    }));
    let outbox_dir = cfg.data_dir.join("outbox");
    let state = match &shared_db {
        Some(db) => gpuwarden_notify::dispatch::StateIn::Postgres(db),
        None => gpuwarden_notify::dispatch::StateIn::Files(&outbox_dir),
    };
    let notifier = Arc::new(
        gpuwarden_notify::Notifier::new_in(&cfg.notify, state, clock.clone())
            .context("starting notifications (the [notify] section)")?,
    );
    notifier.metrics().register(registry);
    {
        let (live, clock) = (live.clone(), clock.clone());
        notifier.set_namespace_lookup(Arc::new(move |gpu| {
            live.get(gpu, clock.now_ms())
                .and_then(|v| v.identity.workload.namespace)
        }));
    }
    {
        // Tenants scoped by Slurm account: their silences match on it.
        let (live, clock) = (live, clock);
        notifier.set_account_lookup(Arc::new(move |gpu| {
            live.get(gpu, clock.now_ms()).and_then(|v| v.identity.workload.account)
        }));
    }
    analysis.add_incident_sink(notifier.clone());
    Ok(Stage { analysis, notifier })
}

/// The security rule pack from the `[security]` section. With the simulator and no
/// approved namespaces configured, the simulator's own approved list is used, so the demo
/// flags exactly the unapproved use it plays.
fn security_engine(cfg: &RunConfig) -> Result<gpuwarden_security::SecurityEngine> {
    let mut sec = cfg.security.clone();
    if cfg.simulated() && sec.approved_namespaces.is_empty() {
        sec.approved_namespaces = gpuwarden_sim::workload::APPROVED_NAMESPACES
            .iter()
            .map(|s| s.to_string())
            .collect();
    }
    gpuwarden_security::SecurityEngine::from_config(&sec).context("building the security rule pack")
}

/// When the evaluation loop evaluates. A timer alone fires at an arbitrary phase of the
/// scrape round — just before a round lands, a fault visible in a sample waits a whole
/// interval to be judged — so the loop follows the data instead: it evaluates once new
/// data has arrived and the round has gone quiet for `settle` (all targets of a round
/// land within a few hundred ms of each other), or `max_wait` after the first new data
/// when pushes keep arriving (agents push at their own phases); never more often than
/// `min_gap` (evaluation costs O(GPUs)), and at least every `interval` without new data
/// (so silent GPUs age into `unknown`).
#[derive(Debug, Clone, Copy)]
pub struct EvalSchedule {
    pub interval: Duration,
    pub settle: Duration,
    pub max_wait: Duration,
    pub min_gap: Duration,
}

impl EvalSchedule {
    /// For a scrape/push interval: settle 200 ms (at most a tenth of the interval),
    /// at most half an interval of waiting or between evaluations.
    pub fn for_interval(interval: Duration) -> Self {
        EvalSchedule {
            interval,
            settle: (interval / 10).min(Duration::from_millis(200)),
            max_wait: interval / 2,
            min_gap: interval / 2,
        }
    }

    /// Whether to evaluate now. `since_eval`: time since the last evaluation;
    /// `pending`: for new data not yet evaluated, the time since its first and its
    /// latest change.
    pub fn due(&self, since_eval: Duration, pending: Option<(Duration, Duration)>) -> bool {
        if since_eval >= self.interval {
            return true;
        }
        match pending {
            Some((since_first, since_latest)) => {
                since_eval >= self.min_gap && (since_latest >= self.settle || since_first >= self.max_wait)
            }
            None => false,
        }
    }
}

/// Evaluates the fleet soon after new data lands (see [`EvalSchedule`]), so a fault that
/// shows in a scrape or push is judged within the same interval, and at least every
/// `interval`.
pub fn spawn_evaluation(
    analysis: Arc<Analysis>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let schedule = EvalSchedule::for_interval(interval);
    // Polling an atomic counter is cheaper and simpler than a notification from every
    // ingest path (scrapes, pushes, remote_write, target-down).
    let poll = (schedule.settle / 4).clamp(Duration::from_millis(5), Duration::from_millis(50));
    tokio::spawn(async move {
        let mut last_eval = tokio::time::Instant::now();
        let mut seen = analysis.data_generation();
        // (first, latest) change not yet evaluated.
        let mut pending: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = shutdown.changed() => return,
            }
            let now = tokio::time::Instant::now();
            let generation = analysis.data_generation();
            if generation != seen {
                seen = generation;
                pending = Some(match pending {
                    Some((first, _)) => (first, now),
                    None => (now, now),
                });
            }
            let since = pending.map(|(first, latest)| (now - first, now - latest));
            if !schedule.due(now - last_eval, since) {
                continue;
            }
            last_eval = now;
            pending = None;
            let a = analysis.clone();
            match tokio::task::spawn_blocking(move || a.evaluate()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!("health evaluation could not store its results: {e}"),
                Err(e) => tracing::error!("health evaluation failed: {e}"),
            }
        }
    })
}

/// The store's background upkeep: compaction (merging small segments, see
/// `gpuwarden_store::embedded` — keeps bytes per sample and memory per GPU flat in a
/// large fleet) every few seconds while there is work, and retention at start and then
/// hourly. Both run on the blocking pool.
pub fn spawn_store_maintenance(
    store: Arc<dyn Store>,
    retention: Duration,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut retention_tick = tokio::time::interval(Duration::from_secs(3600));
        let mut compact_tick = tokio::time::interval(Duration::from_secs(5));
        compact_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = retention_tick.tick() => {
                    let cutoff = clock.now_ms() - retention.as_millis() as i64;
                    let s = store.clone();
                    match tokio::task::spawn_blocking(move || s.apply_retention(cutoff)).await {
                        Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "retention dropped old samples"),
                        Ok(Err(e)) => tracing::warn!("applying retention: {e}"),
                        _ => {}
                    }
                }
                _ = compact_tick.tick() => {
                    let s = store.clone();
                    // One merge per tick: a merge takes the disk for a moment, and the
                    // next tick comes soon when more is waiting.
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.compact()).await {
                        tracing::warn!("compacting the store: {e}");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn a_quiet_round_is_evaluated_after_settling_not_a_whole_interval_later() {
        let s = EvalSchedule::for_interval(Duration::from_secs(10));
        // A round landed 50 ms ago, 6 s after the last evaluation: not yet settled.
        assert!(!s.due(ms(6000), Some((ms(50), ms(50)))));
        // 200 ms of quiet: evaluate now, 3.8 s before the timer would have.
        assert!(s.due(ms(6200), Some((ms(200), ms(200)))));
    }

    #[test]
    fn evaluations_are_at_least_half_an_interval_apart() {
        let s = EvalSchedule::for_interval(Duration::from_secs(10));
        assert!(!s.due(ms(1000), Some((ms(900), ms(900)))));
        assert!(s.due(ms(5000), Some((ms(900), ms(900)))));
    }

    #[test]
    fn pushes_that_never_go_quiet_wait_at_most_half_an_interval() {
        let s = EvalSchedule::for_interval(Duration::from_secs(10));
        // New data every 50 ms: never quiet for 200 ms.
        assert!(!s.due(ms(6000), Some((ms(4000), ms(50)))));
        assert!(s.due(ms(6000), Some((ms(5000), ms(50)))));
    }

    #[test]
    fn without_new_data_the_interval_still_evaluates() {
        let s = EvalSchedule::for_interval(Duration::from_secs(10));
        assert!(!s.due(ms(9999), None));
        assert!(s.due(ms(10_000), None));
    }

    #[test]
    fn short_intervals_settle_in_a_tenth_of_the_interval() {
        let s = EvalSchedule::for_interval(ms(500));
        assert_eq!(s.settle, ms(50));
        assert!(s.due(ms(300), Some((ms(60), ms(60)))));
    }
}
