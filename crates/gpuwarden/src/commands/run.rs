//! `gpuwarden run`: simulator (unless real targets are configured) → scrape collector →
//! pipeline → embedded store, and the API on one address.

use super::simulate::{parse_injections, sim_config};
use crate::cli::RunArgs;
use crate::config::{self, FileConfig, RunConfig};
use anyhow::{Context, Result};
use gpuwarden_collect::scrape::TargetSpec;
use gpuwarden_model::{Clock, SystemClock};
use gpuwarden_pipeline::{Ingestor, PipelineMetrics};
use gpuwarden_server::AppState;
use prometheus_client::registry::Registry;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let mut file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    file.auth.enabled |= args.auth;
    let mut cfg = config::build(
        file,
        args.listen,
        args.data_dir.clone(),
        args.scrape_interval.map(Into::into),
    )?;
    merge_sim_flags(&mut cfg, &args);
    cfg.allowed_hosts.extend(args.allowed_host.iter().cloned());
    super::listen::apply_flags(
        &mut cfg,
        (args.tls_cert.clone(), args.tls_key.clone()),
        (None, None),
        None,
    )?;
    super::runtime()?.block_on(run_async(cfg, args))
}

fn merge_sim_flags(cfg: &mut RunConfig, args: &RunArgs) {
    let s = &mut cfg.simulator;
    s.nodes = args.sim.nodes.or(s.nodes);
    s.gpus_per_node = args.sim.gpus_per_node.or(s.gpus_per_node);
    s.seed = args.sim.seed.or(s.seed);
    s.speed = args.sim.speed.or(s.speed);
    s.fault_rate_multiplier = args.sim.fault_rate_multiplier.or(s.fault_rate_multiplier);
}

async fn run_async(cfg: RunConfig, args: RunArgs) -> Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let allowed_hosts = super::allowed_hosts(&cfg)?;
    let auth = super::open_auth(&cfg, clock.clone())?;
    let store = super::stage::open_store(&cfg)?;
    if let (Some(a), Some(db)) = (&auth, store.postgres()) {
        // A browser signed in on one instance is signed in on all (docs/scaling.md).
        a.share_sessions(db);
    }
    let (audit, audit_writer) = super::audit::open_for_server(&cfg.data_dir)?;

    let listener = tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| {
        format!(
            "listening on {} (is another gpuwarden running? use --listen)",
            cfg.listen
        )
    })?;
    let listen = listener.local_addr()?;

    // The simulator, unless real targets are configured.
    let mut sim_handle = None;
    let mut static_targets = super::stage::static_targets(&cfg);
    if cfg.simulated() {
        let mut sim_cfg = sim_config(&cfg.simulator);
        sim_cfg.labels_path = Some(cfg.data_dir.join("simulation-labels.jsonl"));
        let handle = gpuwarden_sim::Simulator::start(sim_cfg)
            .await
            .context("starting the simulated fleet")?;
        for (gpu, kind) in parse_injections(&args.sim.inject)? {
            handle
                .inject(&gpu, kind)
                .context("injecting a fault given with --inject")?;
        }
        for (node, url) in handle.targets() {
            static_targets.push(TargetSpec {
                url,
                node_hint: node,
                source: "simulator".into(),
            });
        }
        sim_handle = Some(handle);
    }

    let live = super::stage::seeded_live(store.as_ref(), cfg.scrape_interval.as_millis() as i64 * 5 / 2)?;

    let metrics = PipelineMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    registry.register_collector(Box::new(gpuwarden_server::audit::AuditMetrics(audit.clone())));
    if let Some(oidc) = auth.as_ref().and_then(|a| a.oidc()) {
        oidc.register_metrics(&mut registry);
    }
    let time = super::stage::time_source(&clock, sim_handle.as_ref());
    let super::stage::Stage { analysis, notifier } = super::stage::build(
        &cfg,
        store.clone(),
        live.clone(),
        clock.clone(),
        time.clone(),
        &mut registry,
    )?;
    let ingestor = Arc::new(
        Ingestor::new(store.clone(), live.clone(), metrics, clock.clone())
            .with_limits(cfg.ingest_limits)
            .with_time_source(time)
            .with_analysis(analysis.clone()),
    );
    // Files in data_dir, or shared rows when the store is PostgreSQL.
    let state_docs = gpuwarden_store::docs::for_store(store.as_ref(), &cfg.data_dir);
    ingestor.load_xid_state(state_docs.as_ref());

    let scraper = super::stage::scraper(&cfg, static_targets, clock.clone());
    let target_states = scraper.states();

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tls = super::listen::start_tls(cfg.tls.as_ref(), &cfg, "API/UI listener", shutdown_rx.clone())?;
    super::listen::warn_if_plain(listen, tls.is_some(), "API/UI listener");
    // Failure prediction: every GPU scored each period with the model in data_dir/models.
    let predictor = super::train::attach_predictor(
        &analysis,
        store.clone(),
        &cfg.data_dir,
        cfg.predict.clone(),
        shutdown_rx.clone(),
    );
    let notify_tasks = notifier.spawn(shutdown_rx.clone());
    super::audit::forward_to(&audit, notifier.clone(), cfg.audit_forward.clone());
    let (tx, rx) = mpsc::channel(64);
    let scrape_task = tokio::spawn(scraper.run(tx, shutdown_rx.clone()));
    let ingest_task = tokio::spawn(ingestor.clone().run(rx));

    let eval_task = super::stage::spawn_evaluation(analysis.clone(), cfg.scrape_interval, shutdown_rx.clone());
    let retention_task =
        super::stage::spawn_store_maintenance(store.clone(), cfg.retention, clock.clone(), shutdown_rx.clone());

    let before_metrics = {
        let ingestor = ingestor.clone();
        Arc::new(move || ingestor.refresh_gauges()) as Arc<dyn Fn() + Send + Sync>
    };
    let state = AppState {
        store: store.clone(),
        live: live.clone(),
        analysis: analysis.clone(),
        targets: target_states,
        registry: Arc::new(registry),
        clock: clock.clone(),
        before_metrics,
        started_ms: clock.now_ms(),
        notifier: Some(notifier.clone()),
        ingest: None,
        cache: Default::default(),
        predictor: Some(predictor),
        allowed_hosts,
        audit: Some(audit.clone()),
    };
    let extra = sim_handle.as_ref().map(|h| gpuwarden_sim::control_router(h.clone()));
    let auth_task = auth.clone().map(|a| a.spawn_maintenance(shutdown_rx.clone()));
    let router = gpuwarden_server::router_with_auth(state, extra, auth.clone(), super::listen::rate_limits(&cfg));
    let scheme = super::listen::scheme(&tls);
    let server_task = tokio::spawn(gpuwarden_server::serve_tls(
        listener,
        router,
        shutdown_rx.clone(),
        gpuwarden_server::ServeLimits::default(),
        tls,
    ));

    print_banner(&cfg, listen, scheme, sim_handle.as_ref());
    if auth.is_some() {
        println!(
            "  auth:     on: send `Authorization: Bearer <token>`; tokens: gpuwarden auth token create --data-dir {}",
            cfg.data_dir.display()
        );
    }

    super::shutdown_signal().await;
    eprintln!("shutting down: finishing the current scrape and flushing the store…");
    let _ = shutdown_tx.send(true);
    let _ = scrape_task.await;
    let _ = ingest_task.await;
    if let Err(e) = ingestor.save_xid_state(state_docs.as_ref()) {
        tracing::warn!(
            "saving XID state to {}: {e}",
            state_docs.describe(gpuwarden_pipeline::ingest::XID_STATE_DOC)
        );
    }
    let _ = retention_task.await;
    let _ = eval_task.await;
    for t in notify_tasks {
        let _ = t.await;
    }
    let _ = server_task.await;
    if let Some(t) = auth_task {
        let _ = t.await;
    }
    if let Some(h) = sim_handle {
        h.shutdown().await;
    }
    // What the writer holds (counted denials) is written before the process ends.
    tokio::task::spawn_blocking(move || audit_writer.stop()).await?;
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.flush())
        .await?
        .context("flushing the store at shutdown")?;
    eprintln!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

fn print_banner(cfg: &RunConfig, listen: std::net::SocketAddr, scheme: &str, sim: Option<&gpuwarden_sim::SimHandle>) {
    let base = format!("{scheme}://{listen}");
    println!("gpuwarden {} is running", env!("CARGO_PKG_VERSION"));
    match sim {
        Some(h) => {
            let targets = h.targets();
            println!(
                "  fleet:    simulated, {} nodes ({} GPUs), scraped every {:?}",
                targets.len(),
                h.gpus().len(),
                cfg.scrape_interval
            );
            for (node, url) in targets.iter().take(8) {
                println!("            {node}: {url}");
            }
        }
        None => println!(
            "  fleet:    {} static targets, {} target files, scraped every {:?}",
            cfg.targets.len(),
            cfg.target_files.len(),
            cfg.scrape_interval
        ),
    }
    println!("  data:     {}", cfg.data_dir.display());
    println!("  web UI:   {base}/");
    println!("  API docs: {base}/api/docs");
    println!("  GPUs:     curl {base}/api/v1/gpus");
    println!("  incidents: curl {base}/api/v1/incidents?state=open");
    println!("  targets:  curl {base}/api/v1/targets");
    println!("  metrics:  curl {base}/metrics");
    if sim.is_some() {
        println!("  faults:   curl -X POST {base}/api/v1/simulation/faults -H 'content-type: application/json' -d '{{\"gpu\":\"GPU-…\",\"kind\":\"thermal\"}}'");
        println!("  labels:   curl {base}/api/v1/simulation/labels");
    }
    println!("Press Ctrl-C to stop.");
}
