//! `gpuwarden simulate`: serve a simulated fleet's dcgm-exporter endpoints (and the
//! fault-injection API) without scraping them — for trying Prometheus, Grafana or another
//! gpuwarden against a fleet with known faults.

use crate::cli::SimulateArgs;
use crate::config::SimulatorSection;
use anyhow::{anyhow, Context, Result};
use gpuwarden_model::{FaultKind, GpuUuid};
use gpuwarden_sim::{SimConfig, Simulator};
use std::process::ExitCode;

/// Simulator settings from the config file section and defaults.
pub fn sim_config(section: &SimulatorSection) -> SimConfig {
    let mut c = SimConfig::default();
    if let Some(n) = section.nodes {
        c.nodes = n;
    }
    if let Some(n) = section.gpus_per_node {
        c.gpus_per_node = n;
    }
    if let Some(s) = section.seed {
        c.seed = s;
    }
    if let Some(s) = section.speed {
        c.speed = s;
    }
    if let Some(m) = section.fault_rate_multiplier {
        c.fault_rate_multiplier = m;
    }
    c
}

/// Parses `--inject GPU=KIND` flags.
pub fn parse_injections(flags: &[String]) -> Result<Vec<(GpuUuid, FaultKind)>> {
    flags
        .iter()
        .map(|f| {
            let (gpu, kind) = f
                .split_once('=')
                .ok_or_else(|| anyhow!("--inject {f}: expected GPU_UUID=KIND, e.g. GPU-0000…=thermal"))?;
            let kind: FaultKind = kind.parse().with_context(|| format!("--inject {f}"))?;
            Ok((GpuUuid::new(gpu), kind))
        })
        .collect()
}

pub fn simulate(args: SimulateArgs) -> Result<ExitCode> {
    let section = SimulatorSection {
        nodes: args.sim.nodes,
        gpus_per_node: args.sim.gpus_per_node,
        seed: args.sim.seed,
        speed: args.sim.speed,
        fault_rate_multiplier: args.sim.fault_rate_multiplier,
    };
    let mut cfg = sim_config(&section);
    cfg.base_port = args.base_port;
    cfg.labels_path = args.labels.clone();
    let injections = parse_injections(&args.sim.inject)?;
    super::runtime()?.block_on(async move {
        let handle = Simulator::start(cfg).await.context("starting the simulated fleet")?;
        for (gpu, kind) in injections {
            handle
                .inject(&gpu, kind)
                .context("injecting a fault given with --inject")?;
        }
        let control = tokio::net::TcpListener::bind(("127.0.0.1", args.control_port.unwrap_or(0)))
            .await
            .context("binding the simulator control API")?;
        let control_addr = control.local_addr()?;
        println!("simulated fleet: {} GPUs", handle.gpus().len());
        for (node, url) in handle.targets() {
            println!("  {node}: {url}");
        }
        println!("control API: http://{control_addr}/api/v1/simulation/labels (POST …/faults to inject)");
        println!("Press Ctrl-C to stop.");
        let (tx, rx) = tokio::sync::watch::channel(false);
        let router = gpuwarden_sim::control_router(handle.clone());
        let server = tokio::spawn(gpuwarden_server::serve(control, router, rx));
        super::shutdown_signal().await;
        let _ = tx.send(true);
        let _ = server.await;
        handle.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}
