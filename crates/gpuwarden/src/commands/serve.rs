//! `gpuwarden serve`: the server of a real fleet. Like `run`, but no simulator: GPUs
//! arrive from `gpuwarden agent` pushes and Prometheus remote_write, and from configured
//! scrape targets when there are any.
//!
//! Two listeners: the main one (API, UI, /metrics; loopback only unless `[auth]` is on,
//! as for `run`) and an optional ingest listener that serves only the push endpoints,
//! `/healthz` and `/metrics`. The ingest listener may face the network only when push tokens are
//! configured, so exposing it never exposes the unauthenticated read API.
//!
//! Either listener may speak TLS (`[tls]`, `[ingest.tls]`, `--tls-cert`, …; see
//! `commands/listen.rs`); with a client CA on the ingest listener every agent needs a
//! certificate, and its batches are accepted only for the node the certificate names.
//!
//! The analysis stage (analyzers, incidents, notifications), the background loops and
//! failure prediction (`train::attach_predictor`) are shared with `run`
//! (`commands/stage.rs`); the two differ in where GPUs come from and in the ingest state.

use crate::cli::ServeArgs;
use crate::config::{self, FileConfig};
use anyhow::{bail, Context, Result};
use gpuwarden_agent::wire::BatchLimits;
use gpuwarden_model::{Clock, SystemClock};
use gpuwarden_pipeline::{Ingestor, PipelineMetrics};
use gpuwarden_server::api::ingest::auth::IngestTokens;
use gpuwarden_server::api::ingest::ledger::{BatchIds, BatchLedger, SharedLedger, DEFAULT_CAPACITY};
use gpuwarden_server::api::ingest::{self, IngestMetrics, IngestState};
use gpuwarden_server::AppState;
use prometheus_client::registry::Registry;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub fn serve(args: ServeArgs) -> Result<ExitCode> {
    if args.generate_ingest_token {
        println!("{}", gpuwarden_server::api::ingest::auth::generate());
        return Ok(ExitCode::SUCCESS);
    }
    let mut file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    file.auth.enabled |= args.auth;
    let mut cfg = config::build(file, args.listen, args.data_dir.clone(), None)?;
    cfg.allowed_hosts.extend(args.allowed_host.iter().cloned());
    super::listen::apply_flags(
        &mut cfg,
        (args.tls_cert.clone(), args.tls_key.clone()),
        (args.ingest_tls_cert.clone(), args.ingest_tls_key.clone()),
        args.ingest_client_ca.clone(),
    )?;
    if args.ingest_client_ca.is_some() && args.ingest_listen.is_none() {
        bail!(
            "--ingest-client-ca applies to the ingest listener, and there is none: give --ingest-listen \
             (for client certificates on the API/UI listener, set client_ca in [tls])"
        );
    }
    super::runtime()?.block_on(serve_async(cfg, args))
}

async fn serve_async(cfg: config::RunConfig, args: ServeArgs) -> Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let tokens = match &args.ingest_token_file {
        Some(p) => IngestTokens::parse(
            &std::fs::read_to_string(p).with_context(|| format!("reading the ingest token file {}", p.display()))?,
        )
        .with_context(|| format!("loading the ingest token file {}", p.display()))?,
        None => IngestTokens::default(),
    };
    if args.ingest_token_file.is_some() && tokens.is_empty() {
        bail!("the ingest token file has no token in it; generate one with `gpuwarden serve --generate-ingest-token`");
    }
    if tokens.unscoped() > 0 {
        tracing::warn!(
            "{} ingest token(s) have no node scope and may write data of any node; bind each to its \
             host with `TOKEN node=HOST` (or `nodes=GLOB`) in the token file",
            tokens.unscoped()
        );
    }
    let limits = gpuwarden_server::ServeLimits {
        header_read_timeout: args.header_read_timeout.into(),
        request_timeout: args.request_timeout.into(),
        max_connections: args.max_connections.max(1),
        ..Default::default()
    };
    if let Some(addr) = args.ingest_listen {
        if !addr.ip().is_loopback() && tokens.is_empty() {
            bail!(
                "refusing to accept pushes on {addr} without authentication: give --ingest-token-file, \
                 or use a loopback address"
            );
        }
    }
    let allowed_hosts = super::allowed_hosts(&cfg)?;
    let auth = super::open_auth(&cfg, clock.clone())?;
    let store = super::stage::open_store(&cfg)?;
    if let (Some(a), Some(db)) = (&auth, store.postgres()) {
        // A browser signed in on one instance is signed in on all (docs/scaling.md).
        a.share_sessions(db);
    }
    let (audit, audit_writer) = super::audit::open_for_server(&cfg.data_dir)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let listen = listener.local_addr()?;
    let ingest_listener = match args.ingest_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening for pushes on {addr}"))?,
        ),
        None => None,
    };

    let agent_interval: Duration = args.agent_interval.into();
    let stale_after = cfg.scrape_interval.max(agent_interval).as_millis() as i64 * 5 / 2;
    let live = super::stage::seeded_live(store.as_ref(), stale_after)?;

    let metrics = PipelineMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    registry.register_collector(Box::new(gpuwarden_server::audit::AuditMetrics(audit.clone())));
    if let Some(oidc) = auth.as_ref().and_then(|a| a.oidc()) {
        oidc.register_metrics(&mut registry);
    }
    let ingest_metrics = IngestMetrics::default();
    ingest_metrics.register(&mut registry);
    let super::stage::Stage { analysis, notifier } = super::stage::build(
        &cfg,
        store.clone(),
        live.clone(),
        clock.clone(),
        clock.clone(),
        &mut registry,
    )?;
    let ingestor = Arc::new(
        Ingestor::new(store.clone(), live.clone(), metrics, clock.clone())
            .with_limits(cfg.ingest_limits)
            .with_analysis(analysis.clone()),
    );
    // Files in data_dir, or shared rows when the store is PostgreSQL.
    let state_docs = gpuwarden_store::docs::for_store(store.as_ref(), &cfg.data_dir);
    ingestor.load_xid_state(state_docs.as_ref());
    let ledger_path = cfg.data_dir.join("ingest-batches.log");
    let ledger: Box<dyn BatchIds> = match store.postgres() {
        // Shared by every instance on the database (a retry may reach another one).
        Some(db) => Box::new(SharedLedger::new(db, DEFAULT_CAPACITY)),
        None => Box::new(
            BatchLedger::open(&ledger_path, DEFAULT_CAPACITY)
                .with_context(|| format!("opening the batch ledger {}", ledger_path.display()))?,
        ),
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let tls = super::listen::start_tls(cfg.tls.as_ref(), &cfg, "API/UI listener", shutdown_rx.clone())?;
    super::listen::warn_if_plain(listen, tls.is_some(), "API/UI listener");
    let ingest_tls = match &ingest_listener {
        Some(l) => {
            let t = super::listen::start_tls(cfg.ingest_tls.as_ref(), &cfg, "ingest listener", shutdown_rx.clone())?;
            super::listen::warn_if_plain(l.local_addr()?, t.is_some(), "ingest listener");
            t
        }
        None => None,
    };
    // Failure prediction, as in `run`: every GPU scored each period with the model in
    // data_dir/models (none yet: nothing is scored until `gpuwarden train` writes one).
    let predictor = super::train::attach_predictor(
        &analysis,
        store.clone(),
        &cfg.data_dir,
        cfg.predict.clone(),
        shutdown_rx.clone(),
    );
    // Scraping only when targets are configured.
    let mut scrape_task = None;
    let mut ingest_task = None;
    let scraper = super::stage::scraper(&cfg, super::stage::static_targets(&cfg), clock.clone());
    let target_states = scraper.states();
    if !cfg.simulated() {
        let (tx, rx) = mpsc::channel(64);
        scrape_task = Some(tokio::spawn(scraper.run(tx, shutdown_rx.clone())));
        ingest_task = Some(tokio::spawn(ingestor.clone().run(rx)));
    }

    let eval_interval = cfg.scrape_interval.min(agent_interval);
    let eval_task = super::stage::spawn_evaluation(analysis.clone(), eval_interval, shutdown_rx.clone());
    let retention_task =
        super::stage::spawn_store_maintenance(store.clone(), cfg.retention, clock.clone(), shutdown_rx.clone());
    let notify_tasks = notifier.spawn(shutdown_rx.clone());
    super::audit::forward_to(&audit, notifier.clone(), cfg.audit_forward.clone());

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
        cache: Default::default(),
        predictor: Some(predictor),
        allowed_hosts,
        audit: Some(audit.clone()),
        ingest: Some(Arc::new(IngestState {
            ingestor: ingestor.clone(),
            tokens,
            ledger: parking_lot::Mutex::new(ledger),
            max_body_bytes: args.max_ingest_bytes,
            limits: BatchLimits::default(),
            metrics: ingest_metrics,
            newest: Default::default(),
            require_client_certificate: cfg.ingest_tls.as_ref().is_some_and(|t| t.client_ca.is_some())
                && args.ingest_listen.is_some(),
        })),
    };
    // The push listener records its refusals (bad or missing token) too.
    let push_router = gpuwarden_server::audit::wrap(ingest::ingest_router(state.clone()), Some(audit.clone()));
    let auth_task = auth.clone().map(|a| a.spawn_maintenance(shutdown_rx.clone()));
    let router = gpuwarden_server::router_with_auth(state, None, auth.clone(), super::listen::rate_limits(&cfg));
    let scheme = super::listen::scheme(&tls);
    let ingest_scheme = super::listen::scheme(&ingest_tls);
    let server_task = tokio::spawn(gpuwarden_server::serve_tls(
        listener,
        router,
        shutdown_rx.clone(),
        limits.clone(),
        tls,
    ));
    let mut ingest_addr = None;
    let ingest_server = match ingest_listener {
        Some(l) => {
            ingest_addr = l.local_addr().ok();
            Some(tokio::spawn(gpuwarden_server::serve_tls(
                l,
                push_router,
                shutdown_rx.clone(),
                limits,
                ingest_tls,
            )))
        }
        None => None,
    };

    println!("gpuwarden {} serve is running", env!("CARGO_PKG_VERSION"));
    println!("  API, UI:  {scheme}://{listen}/ (pushes accepted here too)");
    if let Some(a) = ingest_addr {
        println!(
            "  pushes:   {ingest_scheme}://{a}/api/v1/ingest (agents), {ingest_scheme}://{a}/api/v1/write (remote_write)"
        );
    }
    println!(
        "  targets:  {} static, {} files; data: {}",
        cfg.targets.len(),
        cfg.target_files.len(),
        cfg.data_dir.display()
    );

    super::shutdown_signal().await;
    eprintln!("shutting down: flushing the store…");
    let _ = shutdown_tx.send(true);
    if let Some(t) = scrape_task {
        let _ = t.await;
    }
    if let Some(t) = ingest_task {
        let _ = t.await;
    }
    let _ = server_task.await;
    if let Some(t) = auth_task {
        let _ = t.await;
    }
    if let Some(t) = ingest_server {
        let _ = t.await;
    }
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
    // What the writer holds (counted denials) is written before the process ends.
    tokio::task::spawn_blocking(move || audit_writer.stop()).await?;
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.flush())
        .await?
        .context("flushing the store at shutdown")?;
    eprintln!("stopped cleanly");
    Ok(ExitCode::SUCCESS)
}
