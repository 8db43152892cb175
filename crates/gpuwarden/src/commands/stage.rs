//! The wiring `run` and `serve` share: the analysis stage with every analyzer and the
//! notifier registered, and the background loops (evaluation every interval, retention
//! hourly). One place, so the two commands cannot drift apart — they differ only in
//! where GPUs come from (simulator and scrapes, or agent pushes and remote_write).

use crate::config::RunConfig;
use anyhow::{Context, Result};
use gpuwarden_collect::prom::Limits;
use gpuwarden_collect::scrape::{ScrapeConfig, Scraper, TargetSources, TargetSpec};
use gpuwarden_detect::XidCatalog;
use gpuwarden_model::Clock;
use gpuwarden_pipeline::{Analysis, LiveFleet};
use gpuwarden_server::derived_metrics::DerivedMetrics;
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::Store;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Creates the data directory and opens the embedded store in it.
pub fn open_store(cfg: &RunConfig) -> Result<Arc<dyn Store>> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("creating data directory {}", cfg.data_dir.display()))?;
    let store_dir = cfg.data_dir.join("store");
    let store = EmbeddedStore::open(&store_dir, EmbeddedOptions::default())
        .with_context(|| format!("opening the store in {}", store_dir.display()))?;
    Ok(Arc::new(store))
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
/// lives in the data directory (what was not delivered before a restart is delivered
/// after it).
pub fn build(
    cfg: &RunConfig,
    store: Arc<dyn Store>,
    live: Arc<LiveFleet>,
    clock: Arc<dyn Clock>,
    time: Arc<dyn Clock>,
    registry: &mut Registry,
) -> Result<Stage> {
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
        .with_time_source(time),
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
    analysis.add_analyzer(Box::new(gpuwarden_anomaly::AnomalyAnalyzer::default()));
    analysis.add_analyzer(Box::new(security_engine(cfg)?));
    registry.register_collector(Box::new(DerivedMetrics {
        analysis: analysis.clone(),
        live: live.clone(),
        clock: clock.clone(),
    }));
    let notifier = Arc::new(
        gpuwarden_notify::Notifier::new(&cfg.notify, &cfg.data_dir.join("outbox"), clock.clone())
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

/// Evaluates the fleet every `interval`: a fault that shows in a scrape or push is scored
/// within one interval of arriving.
pub fn spawn_evaluation(
    analysis: Arc<Analysis>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let a = analysis.clone();
            match tokio::task::spawn_blocking(move || a.evaluate()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!("health evaluation could not store its results: {e}"),
                Err(e) => tracing::error!("health evaluation failed: {e}"),
            }
        }
    })
}

/// Applies retention once at start and then hourly.
pub fn spawn_retention(
    store: Arc<dyn Store>,
    retention: Duration,
    clock: Arc<dyn Clock>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let cutoff = clock.now_ms() - retention.as_millis() as i64;
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.apply_retention(cutoff)).await {
                Ok(Ok(n)) if n > 0 => tracing::info!(removed = n, "retention dropped old samples"),
                Ok(Err(e)) => tracing::warn!("applying retention: {e}"),
                _ => {}
            }
        }
    })
}
