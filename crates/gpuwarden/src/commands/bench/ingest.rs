//! `gpuwarden bench ingest`: the three figures of the ingest path.
//!
//! 1. Parse + store throughput, samples/s per core, on simulated dcgm-exporter pages
//!    (pages are rendered before the clock starts; the timed loop is exactly what `run`
//!    does with a page: parse, map to typed fields, append to the embedded store).
//! 2. Bytes per stored sample on disk after an hour of simulated 32-GPU data at a 1 s
//!    interval — ours, and Prometheus's TSDB on the same samples (`promtool tsdb
//!    create-blocks-from openmetrics`, which writes the same compressed blocks Prometheus
//!    compacts its head into).
//! 3. Side by side, live: `gpuwarden run` and a real Prometheus scraping the same
//!    simulated endpoints for the same time; CPU seconds per million samples and bytes
//!    on disk per sample for each.

use super::cpu::thread_cpu;
use super::prometheus;
use crate::cli::BenchIngestArgs;
use anyhow::{Context, Result};
use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::prom::Limits;
use gpuwarden_sim::{Fleet, SimConfig};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::Store;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

pub fn ingest(args: BenchIngestArgs) -> Result<ExitCode> {
    let tmp;
    let work: PathBuf = match &args.work_dir {
        Some(p) => {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
            p.clone()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    println!("# gpuwarden bench ingest");
    println!("machine: {}", super::machine_line());
    println!(
        "command: gpuwarden bench ingest --gpus {} --duration {} --interval {} --live-duration {}",
        args.gpus, args.duration, args.interval, args.live_duration
    );
    println!();

    let throughput = measure_throughput(&work.join("throughput"))?;
    println!(
        "## 1. parse + store throughput (one thread, {} samples)",
        throughput.samples
    );
    println!("| stage | samples/s per core (CPU time) | samples/s (wall) |");
    println!("|---|---:|---:|");
    for (stage, cpu_rate, wall_rate) in &throughput.rows {
        println!("| {stage} | {cpu_rate:.0} | {wall_rate:.0} |");
    }
    println!();

    let size = measure_bytes_per_sample(&args, &work.join("size"))?;
    println!(
        "## 2. bytes per stored sample ({} GPUs, {} at {} interval, {} samples)",
        args.gpus, args.duration, args.interval, size.samples
    );
    println!("| store | bytes on disk | bytes/sample |");
    println!("|---|---:|---:|");
    println!(
        "| gpuwarden embedded store | {} | {:.3} |",
        size.ours_bytes,
        size.ours_bytes as f64 / size.samples as f64
    );
    match &size.prometheus {
        Some(Ok(bytes)) => println!(
            "| Prometheus TSDB blocks (promtool create-blocks-from openmetrics) | {} | {:.3} |",
            bytes,
            *bytes as f64 / size.samples as f64
        ),
        Some(Err(e)) => println!("| Prometheus TSDB blocks | failed: {e:#} | |"),
        None => println!("| Prometheus TSDB blocks | skipped (--no-prometheus) | |"),
    }
    println!();

    if !args.no_prometheus {
        let live = prometheus::side_by_side(&work.join("live"), args.live_duration.into())?;
        println!(
            "## 3. live side by side: 4 simulated nodes x 8 GPUs scraped every 1 s for {:?}",
            live.duration
        );
        println!(
            "| scraper | samples stored | CPU seconds | CPU s per million samples | bytes on disk | bytes/sample |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for r in &live.rows {
            println!(
                "| {} | {} | {:.2} | {:.3} | {} | {:.2} |",
                r.name,
                r.samples,
                r.cpu.as_secs_f64(),
                r.cpu.as_secs_f64() / (r.samples as f64 / 1e6),
                r.bytes,
                r.bytes as f64 / r.samples.max(1) as f64
            );
        }
        if let [ours, prom] = &live.rows[..] {
            let ours_cpm = ours.cpu.as_secs_f64() / ours.samples.max(1) as f64;
            let prom_cpm = prom.cpu.as_secs_f64() / prom.samples.max(1) as f64;
            println!();
            println!(
                "ratio gpuwarden/Prometheus: CPU per sample {:.2}, bytes per sample {:.2}",
                ours_cpm / prom_cpm,
                (ours.bytes as f64 / ours.samples.max(1) as f64) / (prom.bytes as f64 / prom.samples.max(1) as f64)
            );
            println!("(both include their own HTTP serving and bookkeeping; Prometheus's on-disk bytes after a short run are its WAL, not compacted blocks — see table 2 for compacted size)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

struct Throughput {
    samples: usize,
    rows: Vec<(&'static str, f64, f64)>,
}

fn fleet(gpus: usize) -> Result<Fleet> {
    let gpus_per_node = gpus.min(8);
    let nodes = gpus.div_ceil(gpus_per_node);
    let cfg = SimConfig {
        nodes,
        gpus_per_node,
        seed: 7,
        fault_rate_multiplier: 0.0,
        start_ms: Some(START_MS),
        ..SimConfig::default()
    };
    Ok(Fleet::new(&cfg)?)
}

fn measure_throughput(dir: &Path) -> Result<Throughput> {
    let mut fleet = fleet(32)?;
    let nodes = fleet.node_count();
    let names = fleet.node_names().to_vec();
    let rounds = 150;
    let mut pages = Vec::with_capacity(rounds * nodes);
    for step in 0..rounds {
        let ts = START_MS + step as i64 * 1000;
        fleet.advance_to(ts);
        for (node, name) in names.iter().enumerate().take(nodes) {
            let mut s = String::new();
            fleet.render_node(node, &mut s);
            pages.push((name.clone(), s, ts));
        }
    }
    let limits = Limits::default();
    let mut rows = Vec::new();

    // Parse and map only.
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    let mut samples = 0usize;
    for _ in 0..3 {
        for (node, page, ts) in &pages {
            samples += map_exporter_page(page.as_bytes(), node, *ts, &limits)?.sample_count();
        }
    }
    rows.push(rate(
        "parse + map to typed fields",
        samples,
        thread_cpu() - cpu0,
        wall0.elapsed(),
    ));

    // Parse, map and append; fsync off to see the CPU cost.
    let _ = std::fs::remove_dir_all(dir);
    let store = EmbeddedStore::open(
        &dir.join("nosync"),
        EmbeddedOptions {
            sync: false,
            ..EmbeddedOptions::default()
        },
    )?;
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    let mut stored = 0usize;
    for (node, page, ts) in &pages {
        let p = map_exporter_page(page.as_bytes(), node, *ts, &limits)?;
        store.append_samples(&p.rows)?;
        stored += p.sample_count();
    }
    store.flush()?;
    rows.push(rate(
        "parse + map + store (no fsync)",
        stored,
        thread_cpu() - cpu0,
        wall0.elapsed(),
    ));
    drop(store);

    // As `run` does it: one durable append (fsync) per scraped page.
    let store = EmbeddedStore::open(&dir.join("sync"), EmbeddedOptions::default())?;
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    let mut stored = 0usize;
    for (node, page, ts) in &pages {
        let p = map_exporter_page(page.as_bytes(), node, *ts, &limits)?;
        store.append_samples(&p.rows)?;
        stored += p.sample_count();
    }
    store.flush()?;
    rows.push(rate(
        "parse + map + store (fsync per page, as `run`)",
        stored,
        thread_cpu() - cpu0,
        wall0.elapsed(),
    ));
    Ok(Throughput { samples: stored, rows })
}

fn rate(stage: &'static str, samples: usize, cpu: Duration, wall: Duration) -> (&'static str, f64, f64) {
    // Thread CPU time is counted in 10 ms ticks; never divide by zero on a fast run.
    let cpu_s = cpu.as_secs_f64().max(0.01);
    (
        stage,
        samples as f64 / cpu_s,
        samples as f64 / wall.as_secs_f64().max(1e-9),
    )
}

struct SizeResult {
    samples: u64,
    ours_bytes: u64,
    prometheus: Option<Result<u64>>,
}

fn measure_bytes_per_sample(args: &BenchIngestArgs, dir: &Path) -> Result<SizeResult> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut fleet = fleet(args.gpus)?;
    let nodes = fleet.node_count();
    let names = fleet.node_names().to_vec();
    let interval_ms = Duration::from(args.interval).as_millis().max(1) as i64;
    let steps = (Duration::from(args.duration).as_millis() as i64 / interval_ms) as u64;
    let store = EmbeddedStore::open(
        &dir.join("gpuwarden"),
        EmbeddedOptions {
            sync: false,
            ..EmbeddedOptions::default()
        },
    )?;
    let mut openmetrics = if args.no_prometheus {
        None
    } else {
        Some(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(dir.join("samples.om"))?,
        ))
    };
    let limits = Limits::default();
    let bar = ProgressBar::new(steps).with_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} steps, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("simulating, parsing and storing");
    let mut samples = 0u64;
    let mut page = String::new();
    for step in 0..steps {
        let ts = START_MS + step as i64 * interval_ms;
        fleet.advance_to(ts);
        let mut rows = Vec::new();
        for (node, name) in names.iter().enumerate().take(nodes) {
            page.clear();
            fleet.render_node(node, &mut page);
            let p = map_exporter_page(page.as_bytes(), name, ts, &limits)?;
            samples += p.sample_count() as u64;
            rows.extend(p.rows);
            if let Some(w) = openmetrics.as_mut() {
                write_openmetrics(w, &page, ts)?;
            }
        }
        store.append_samples(&rows)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    store.flush()?;
    let ours_bytes = store.stats()?.bytes_on_disk;
    drop(store);
    let prometheus = match openmetrics {
        None => None,
        Some(mut w) => {
            writeln!(w, "# EOF")?;
            w.flush()?;
            drop(w);
            Some(prometheus::tsdb_bytes_from_openmetrics(
                &dir.join("samples.om"),
                &dir.join("prometheus-blocks"),
            ))
        }
    };
    let _ = std::fs::remove_file(dir.join("samples.om"));
    Ok(SizeResult {
        samples,
        ours_bytes,
        prometheus,
    })
}

/// Appends a page's samples with an explicit timestamp (seconds, as OpenMetrics wants).
/// Comment lines are dropped: OpenMetrics allows one metadata block per family per file.
fn write_openmetrics(w: &mut impl Write, page: &str, ts_ms: i64) -> std::io::Result<()> {
    let ts = format!(" {}.{:03}", ts_ms / 1000, ts_ms % 1000);
    for line in page.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        w.write_all(line.as_bytes())?;
        w.write_all(ts.as_bytes())?;
        w.write_all(b"\n")?;
    }
    Ok(())
}
