//! `gpuwarden agent`: runs on each GPU host. Every interval it collects one batch
//! ([`collect::HostCollector`]: NVML or `nvidia-smi -q`, an optional local
//! dcgm-exporter, kernel-log XIDs from [`kernel`], process attribution), writes it to the
//! durable spool, and a drain task pushes the spool to `gpuwarden serve` oldest first.
//!
//! The spool write comes before any push, so a server outage or an agent crash loses
//! nothing until the spool's bound; a lost answer is retried with the same batch id and
//! the server dedupes it.

mod collect;
mod kernel;

use crate::cli::AgentArgs;
use anyhow::{bail, Context, Result};
use gpuwarden_agent::drain::{self, DrainStats};
use gpuwarden_agent::{PushTls, Pusher, Spool, SpoolLimits};
use gpuwarden_collect::nvml::device::NvmlSource;
use gpuwarden_collect::nvml::fixture::{Fixture, FixtureSource};
use gpuwarden_collect::nvml::GpuSource;
use gpuwarden_model::Clock;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

pub fn agent(args: AgentArgs) -> Result<ExitCode> {
    if let Some(path) = &args.record_nvml {
        return record_nvml(path);
    }
    super::runtime()?.block_on(run(args))
}

/// This host's name, as the kernel knows it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The GPU source: a fixture, NVML, or none (then `nvidia-smi -q` is tried per interval).
fn gpu_source(args: &AgentArgs) -> Result<Option<Box<dyn GpuSource>>> {
    if let Some(path) = &args.nvml_fixture {
        let src = FixtureSource::load(path)?;
        return Ok(Some(Box::new(src)));
    }
    if args.no_nvml {
        return Ok(None);
    }
    match NvmlSource::open() {
        Ok(src) => Ok(Some(Box::new(src))),
        Err(e) => {
            eprintln!("{e}; falling back to nvidia-smi / dcgm-exporter");
            Ok(None)
        }
    }
}

fn record_nvml(path: &std::path::Path) -> Result<ExitCode> {
    let mut src = NvmlSource::open().context("recording NVML readings")?;
    let now = gpuwarden_model::SystemClock.now_ms();
    let fixture = Fixture {
        description: format!(
            "Recorded by gpuwarden agent --record-nvml from {} on {}",
            src.describe(),
            hostname()
        ),
        nvml_version: None,
        devices: src.read(now)?,
        processes: src.processes()?,
        xid_events: Vec::new(),
    };
    std::fs::write(path, serde_json::to_vec_pretty(&fixture)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {} GPUs to {}", fixture.devices.len(), path.display());
    Ok(ExitCode::SUCCESS)
}

async fn run(args: AgentArgs) -> Result<ExitCode> {
    let Some(server) = args.server.clone() else {
        bail!("--server is required (the base URL of `gpuwarden serve`'s ingest listener)");
    };
    let token = match &args.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the token file {}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    if token.is_none() && !server.starts_with("http://127.") && !server.starts_with("http://localhost") {
        tracing::warn!("pushing to {server} without a token (--token-file); the server will refuse unless it has none");
    }
    let loopback = ["http://127.", "http://localhost", "http://[::1]"]
        .iter()
        .any(|p| server.starts_with(p));
    if server.starts_with("http://") && !loopback {
        tracing::warn!(
            "pushing to {server} over plain HTTP: the token and the fleet data cross the network unencrypted; \
             serve the ingest listener over TLS and use an https:// URL"
        );
    }
    let node = args.node.clone().unwrap_or_else(hostname);
    let interval: Duration = args.interval.into();
    if interval < Duration::from_millis(100) {
        bail!("--interval {interval:?} is too short; use at least 100ms");
    }
    let spool = Arc::new(
        Spool::open(
            &args.spool_dir,
            SpoolLimits {
                max_batches: args.spool_max_batches.max(1),
                max_bytes: args.spool_max_mib.max(1) * 1024 * 1024,
            },
        )
        .with_context(|| format!("opening the spool {}", args.spool_dir.display()))?,
    );
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).with_context(|| format!("reading the {what} {}", p.display()))
    };
    let mut push_tls = PushTls::default();
    if let Some(p) = &args.ca {
        push_tls.ca_pem = Some(read("CA file (--ca)", p)?);
    }
    if let (Some(c), Some(k)) = (&args.client_cert, &args.client_key) {
        let mut pem = read("client certificate (--client-cert)", c)?;
        pem.push(b'\n');
        pem.extend(read("client key (--client-key)", k)?);
        push_tls.identity_pem = Some(pem);
    }
    if (push_tls.ca_pem.is_some() || push_tls.identity_pem.is_some()) && !server.starts_with("https://") {
        bail!("--ca / --client-cert apply to TLS only: use an https:// --server URL (got {server})");
    }
    let pusher = Pusher::with_tls(&server, token, Duration::from_secs(30), &push_tls).context(
        "building the HTTP client (are --ca, --client-cert and --client-key PEM files, the key matching the certificate?)",
    )?;

    let source = gpu_source(&args)?;
    let mut collector = collect::HostCollector::new(&args, node.clone(), source)?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let kernel = kernel::start(&args.kernel_log, collector.inventory(), shutdown_rx.clone());
    eprintln!(
        "gpuwarden agent on {node}: {}; kernel log: {}; pushing to {} every {:?}; spool {} ({} batches waiting)",
        collector.describe(),
        kernel.describe(),
        pusher.url(),
        interval,
        args.spool_dir.display(),
        spool.len()
    );

    let wake = Arc::new(Notify::new());
    let stats = Arc::new(DrainStats::default());
    let drain_task = tokio::spawn(drain::run(
        spool.clone(),
        pusher,
        wake.clone(),
        stats.clone(),
        shutdown_rx.clone(),
    ));

    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let signal = super::shutdown_signal();
    tokio::pin!(signal);
    let mut made = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut signal => break,
        }
        let mut batch = collector.collect().await;
        batch.events.extend(kernel.drain());
        let s = spool.clone();
        match tokio::task::spawn_blocking(move || s.put(&batch)).await {
            Ok(Ok(_)) => wake.notify_one(),
            Ok(Err(e)) => tracing::error!("spooling a batch: {e}"),
            Err(e) => tracing::error!("spooling a batch: {e}"),
        }
        made += 1;
        if args.exit_after_batches.is_some_and(|n| made >= n) {
            // Tests: wait (bounded by the signal) for the server to take everything.
            while !spool.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = &mut signal => break,
                }
            }
            break;
        }
    }
    let _ = shutdown_tx.send(true);
    let _ = drain_task.await;
    kernel.stop();
    eprintln!(
        "agent stopped: {made} batches made, {} stored, {} duplicates, {} rejected, {} dropped (spool full), {} waiting in the spool",
        stats.stored.load(Ordering::Relaxed),
        stats.duplicates.load(Ordering::Relaxed),
        stats.rejected.load(Ordering::Relaxed),
        spool.dropped_total(),
        spool.len()
    );
    Ok(ExitCode::SUCCESS)
}
