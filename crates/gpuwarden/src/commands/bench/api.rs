//! `gpuwarden bench api`: API latency under load and the CPU cost of scoring.
//!
//! Builds a simulated fleet of N GPUs (default 1,000) in process — pages rendered by the
//! simulator, parsed and ingested through the same pipeline as `run`, scored by the same
//! analysis stage — serves the real router on loopback, and runs C concurrent clients
//! (default 100) against `/api/v1/fleet/summary` and `/api/v1/gpus`, printing
//! p50/p95/p99. Clients and server share this machine's cores, as they would on a small
//! monitoring host.

use super::cpu::thread_cpu;
use crate::cli::BenchApiArgs;
use anyhow::{Context, Result};
use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::prom::Limits;
use gpuwarden_collect::scrape::TargetStates;
use gpuwarden_detect::{HealthRules, XidCatalog};
use gpuwarden_incident::IncidentConfig;
use gpuwarden_model::{Clock, SystemClock};
use gpuwarden_pipeline::{Analysis, Ingestor, LiveFleet, PipelineMetrics};
use gpuwarden_server::AppState;
use gpuwarden_sim::{Fleet, SimConfig};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::Store;
use indicatif::{ProgressBar, ProgressStyle};
use prometheus_client::registry::Registry;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn api(args: BenchApiArgs) -> Result<ExitCode> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    println!("# gpuwarden bench api");
    println!("machine: {}", super::machine_line());
    println!(
        "command: gpuwarden bench api --gpus {} --clients {} --requests {}{}{}",
        args.gpus,
        args.clients,
        args.requests,
        if args.no_rate_limit { " --no-rate-limit" } else { "" },
        if args.auth { " --auth" } else { "" }
    );
    println!();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(
        &dir.path().join("store"),
        EmbeddedOptions {
            sync: false,
            ..EmbeddedOptions::default()
        },
    )?);
    let live = Arc::new(LiveFleet::new(i64::MAX / 4));
    let analysis = Arc::new(Analysis::new(
        store.clone(),
        live.clone(),
        clock.clone(),
        HealthRules::builtin(),
        XidCatalog::builtin(),
        IncidentConfig::default(),
    )?);
    let ingestor = Ingestor::new(store.clone(), live.clone(), PipelineMetrics::default(), clock.clone())
        .with_analysis(analysis.clone());

    // A fleet with some faults so that scores, reasons and incidents are not all empty.
    let gpus_per_node = 8;
    let nodes = args.gpus.div_ceil(gpus_per_node);
    let start_ms = clock.now_ms() - 3_600_000;
    let mut fleet = Fleet::new(&SimConfig {
        nodes,
        gpus_per_node,
        seed: 3,
        fault_rate_multiplier: 2000.0,
        start_ms: Some(start_ms),
        ..SimConfig::default()
    })?;
    let names = fleet.node_names().to_vec();
    let rounds = 12;
    let bar = ProgressBar::new(rounds).with_style(
        ProgressStyle::with_template("building the fleet's state {bar:30} {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let limits = Limits::default();
    let mut page = String::new();
    let mut eval_cpu = Duration::ZERO;
    let mut evaluations = 0u32;
    for round in 0..rounds {
        let ts = start_ms + round as i64 * 5_000;
        fleet.advance_to(ts);
        for (node, name) in names.iter().enumerate() {
            page.clear();
            fleet.render_node(node, &mut page);
            let p = map_exporter_page(page.as_bytes(), name, ts, &limits)?;
            ingestor.ingest_page(&format!("http://{name}:9400/metrics"), ts, &p)?;
        }
        let cpu0 = thread_cpu();
        analysis.evaluate()?;
        eval_cpu += thread_cpu() - cpu0;
        evaluations += 1;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let scored = analysis.latest().gpus.len();
    let per_gpu_us = eval_cpu.as_secs_f64() * 1e6 / (f64::from(evaluations) * scored.max(1) as f64);
    println!("## scoring cost");
    println!(
        "{scored} GPUs, {evaluations} evaluations: {:.1} ms CPU per evaluation, {per_gpu_us:.2} µs CPU per GPU (health rules + incidents + storing scores)",
        eval_cpu.as_secs_f64() * 1000.0 / f64::from(evaluations)
    );
    let open = analysis.with_incidents(|e| e.open_count_by_severity().values().sum::<usize>());
    println!("({open} incidents open in the benchmark fleet)");
    println!();

    let state = AppState {
        store,
        live,
        analysis,
        targets: TargetStates::default(),
        registry: Arc::new(Registry::default()),
        clock: clock.clone(),
        before_metrics: Arc::new(|| {}),
        started_ms: clock.now_ms(),
        ingest: None,
        notifier: None,
        cache: Default::default(),
        predictor: None,
        allowed_hosts: Default::default(),
        audit: None,
    };
    // With --auth: the same router behind authentication too, with a viewer token that
    // every client sends (hash + constant-time scan + policy lookup per request).
    let auth = if args.auth {
        let auth_dir = gpuwarden_server::auth::file::auth_dir(dir.path());
        let spec = gpuwarden_server::auth::token::NewToken {
            name: "bench".into(),
            role: gpuwarden_server::principal::Role::Viewer,
            tenant: None,
            expires_in: None,
        };
        let (secret, _) = gpuwarden_server::auth::file::create(&auth_dir, &spec, clock.now_ms())?;
        let auth = gpuwarden_server::auth::Auth::open(dir.path(), Default::default(), clock.clone())?;
        // The fixed work authentication adds to a request, timed alone (no network, no
        // other load on the measured thread): what the end-to-end rounds cannot resolve.
        let token = secret.expose().to_string();
        let n = 200_000u32;
        let rt = crate::commands::runtime()?;
        let t0 = Instant::now();
        rt.block_on(async {
            for _ in 0..n {
                let _ = std::hint::black_box(auth.check_bearer(std::hint::black_box(&token)).await);
            }
        });
        let per_call = t0.elapsed().as_nanos() as f64 / f64::from(n);
        println!("token verification alone: {per_call:.0} ns per request ({n} calls of Auth::check_bearer: SHA-256, constant-time scan, principal)");
        Some((auth, token))
    } else {
        None
    };
    let rt = crate::commands::runtime()?;
    let results = rt.block_on(async move {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        // Unless --no-rate-limit, every request goes through a bucket lookup and none is
        // refused: the layer's cost without its effect.
        let limits = (!args.no_rate_limit).then(|| {
            use gpuwarden_server::rate_limit::{Limit, RateLimitConfig, RateLimits};
            let unlimited = Limit {
                rate: 1e9,
                burst: u32::MAX,
            };
            RateLimits::new(RateLimitConfig {
                client: unlimited,
                principal: unlimited,
                exempt_loopback: false,
                ..Default::default()
            })
        });
        let mut setups = vec![(
            "off",
            None,
            gpuwarden_server::router_with_auth(state.clone(), None, None, limits.clone()),
        )];
        if let Some((auth, token)) = auth {
            setups.push((
                "on",
                Some(token),
                gpuwarden_server::router_with_auth(state, None, Some(auth), limits),
            ));
        }
        let mut servers = Vec::new();
        for (mode, token, router) in setups {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            // Room for every client's connection (the default limit, 1,024, is below
            // 1,000 clients), and for the previous endpoint's clients' connections,
            // which the server counts until it reads their close.
            let limits = gpuwarden_server::ServeLimits {
                max_connections: args.clients * 4 + 256,
                ..gpuwarden_server::ServeLimits::default()
            };
            tokio::spawn(gpuwarden_server::serve_with(listener, router, rx.clone(), limits));
            servers.push((mode, token, addr));
        }
        // Rounds alternate off, on, off, on … so slow drift of the machine's load falls
        // on both alike.
        let rounds = if args.auth { args.rounds } else { 1 };
        let mut out = Vec::new();
        for round in 0..rounds {
            for (mode, token, addr) in &servers {
                for path in ["/api/v1/fleet/summary", "/api/v1/gpus"] {
                    let url = format!("http://{addr}{path}");
                    out.push((
                        round,
                        *mode,
                        path,
                        load(&url, token.as_deref(), args.clients, args.requests).await?,
                    ));
                }
            }
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    println!(
        "## latency, {} concurrent clients x {} requests each",
        args.clients, args.requests
    );
    println!("| endpoint | auth | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | bytes/response |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (_, mode, path, r) in results.iter().filter(|(round, ..)| *round == 0) {
        println!(
            "| `{path}` | {mode} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            r.latencies.len(),
            r.latencies.len() as f64 / r.wall.as_secs_f64(),
            pct(&r.latencies, 0.50),
            pct(&r.latencies, 0.95),
            pct(&r.latencies, 0.99),
            pct(&r.latencies, 1.0),
            r.bytes
        );
    }
    if args.auth {
        println!();
        println!(
            "## cost of authentication (on / off), {} round(s): median [min, max] of the per-round ratios",
            args.rounds
        );
        println!("| endpoint | req/s | p50 | p99 |");
        println!("|---|---:|---:|---:|");
        for path in ["/api/v1/fleet/summary", "/api/v1/gpus"] {
            let find = |round: u32, m: &str| {
                results
                    .iter()
                    .find(|(r, mode, p, _)| *r == round && *mode == m && *p == path)
                    .map(|(_, _, _, l)| l)
            };
            let rps = |r: &Load| r.latencies.len() as f64 / r.wall.as_secs_f64();
            let (mut by_rps, mut by_p50, mut by_p99) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..args.rounds {
                if let (Some(off), Some(on)) = (find(round, "off"), find(round, "on")) {
                    by_rps.push(rps(on) / rps(off));
                    by_p50.push(pct(&on.latencies, 0.50) / pct(&off.latencies, 0.50));
                    by_p99.push(pct(&on.latencies, 0.99) / pct(&off.latencies, 0.99));
                }
            }
            println!(
                "| `{path}` | {} | {} | {} |",
                spread(&mut by_rps),
                spread(&mut by_p50),
                spread(&mut by_p99)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `median [min, max]` of ratios.
fn spread(v: &mut [f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    format!("{median:.2} [{:.2}, {:.2}]", v[0], v[v.len() - 1])
}

struct Load {
    latencies: Vec<f64>,
    wall: Duration,
    bytes: usize,
}

fn pct(sorted_ms: &[f64], q: f64) -> f64 {
    if sorted_ms.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_ms.len() as f64 - 1.0) * q).round() as usize;
    sorted_ms[i.min(sorted_ms.len() - 1)]
}

async fn load(url: &str, token: Option<&str>, clients: usize, requests: usize) -> Result<Load> {
    // Plain (not gzip) answers: the clients share this machine's cores with the server, and
    // decompressing 100 answers at once would measure the clients, not the server.
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {t}").parse()?);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .default_headers(headers)
        .no_gzip()
        .build()?;
    // Warm up connections and caches.
    for _ in 0..5 {
        client.get(url).send().await?.bytes().await?;
    }
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let client = client.clone();
        let url = url.to_string();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(requests);
            let mut bytes = 0;
            for _ in 0..requests {
                let t = Instant::now();
                let resp = client.get(&url).send().await?;
                anyhow::ensure!(resp.status().is_success(), "{url}: HTTP {}", resp.status());
                bytes = resp.bytes().await?.len();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>((lat, bytes))
        });
    }
    let mut latencies = Vec::new();
    let mut bytes = 0;
    while let Some(r) = tasks.join_next().await {
        let (lat, b) = r??;
        latencies.extend(lat);
        bytes = b;
    }
    let wall = start.elapsed();
    latencies.sort_by(f64::total_cmp);
    Ok(Load { latencies, wall, bytes })
}
