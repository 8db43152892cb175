//! `gpuwarden bench store`: write throughput of the two stores on the same pages, in the
//! same run — the embedded store and PostgreSQL (binary COPY) — so the figures compare.
//!
//! Pages are simulated dcgm-exporter pages, rendered and parsed before the clock starts;
//! the timed loops only write. Two write shapes per store: one durable `append_page` per
//! scraped node page (what `run` does), and one `append_samples` per scrape round of the
//! whole fleet (the batching a shared, busy database wants). Each store is written
//! `--runs` times from empty; min / median / max are printed.
//!
//! PostgreSQL: `--postgres-url` (an empty database; the schema is created in it), or a
//! throwaway server started here with `fsync` on (PostgreSQL's default durability), on
//! the same disk as the embedded store.

use anyhow::{bail, Context, Result};
use clap::Args;
use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::prom::Limits;
use gpuwarden_model::{GpuIdentity, GpuSamples};
use gpuwarden_sim::{Fleet, SimConfig};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::pg_cluster::PgCluster;
use gpuwarden_store::postgres::{PostgresOptions, PostgresStore};
use gpuwarden_store::{PageWrite, Store};
use std::process::ExitCode;
use std::time::Instant;

const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// `gpuwarden bench store`.
#[derive(Debug, Args)]
pub struct BenchStoreArgs {
    /// Simulated GPUs (8 per node).
    #[arg(long, default_value_t = 512)]
    pub gpus: usize,
    /// Scrape rounds written (each: every node's page).
    #[arg(long, default_value_t = 30)]
    pub rounds: usize,
    /// Repetitions of each measurement (from an empty store each time).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// An empty PostgreSQL database to write to (no password in it; the password comes
    /// from GPUWARDEN_STORE_PASSWORD). Default: a throwaway local server (needs the
    /// PostgreSQL server binaries).
    #[arg(long)]
    pub postgres_url: Option<String>,
}

/// One node page, parsed.
struct Page {
    rows: Vec<GpuSamples>,
    gpus: Vec<GpuIdentity>,
    ts: i64,
}

fn pages(gpus: usize, rounds: usize) -> Result<(Vec<Vec<Page>>, usize)> {
    let gpus_per_node = gpus.clamp(1, 8);
    let cfg = SimConfig {
        nodes: gpus.div_ceil(gpus_per_node),
        gpus_per_node,
        seed: 7,
        fault_rate_multiplier: 0.0,
        start_ms: Some(START_MS),
        ..SimConfig::default()
    };
    let mut fleet = Fleet::new(&cfg)?;
    let names = fleet.node_names().to_vec();
    let limits = Limits::default();
    let mut out = Vec::with_capacity(rounds);
    let mut samples = 0;
    let mut text = String::new();
    for r in 0..rounds {
        let ts = START_MS + r as i64 * 10_000;
        fleet.advance_to(ts);
        let mut round = Vec::with_capacity(names.len());
        for (node, name) in names.iter().enumerate() {
            text.clear();
            fleet.render_node(node, &mut text);
            let p = map_exporter_page(text.as_bytes(), name, ts, &limits)?;
            samples += p.sample_count();
            let gpus = p
                .rows
                .iter()
                .map(|r| GpuIdentity::new(r.gpu.clone(), name.as_str()))
                .collect();
            round.push(Page { rows: p.rows, gpus, ts });
        }
        out.push(round);
    }
    Ok((out, samples))
}

/// Samples/s of one pass writing every page with its own `append_page`.
fn per_page(store: &dyn Store, rounds: &[Vec<Page>], samples: usize) -> Result<f64> {
    let t = Instant::now();
    for round in rounds {
        for p in round {
            store.append_page(&PageWrite {
                rows: &p.rows,
                events: &[],
                gpus: &p.gpus,
                seen_ms: p.ts,
            })?;
        }
    }
    store.flush()?;
    Ok(samples as f64 / t.elapsed().as_secs_f64().max(1e-9))
}

/// Samples/s of one pass writing each round with one `append_samples`.
fn per_round(store: &dyn Store, rounds: &[Vec<Page>], samples: usize) -> Result<f64> {
    let batches: Vec<Vec<GpuSamples>> = rounds
        .iter()
        .map(|r| r.iter().flat_map(|p| p.rows.iter().cloned()).collect())
        .collect();
    let t = Instant::now();
    for b in &batches {
        store.append_samples(b)?;
    }
    store.flush()?;
    Ok(samples as f64 / t.elapsed().as_secs_f64().max(1e-9))
}

fn spread(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!("{:.0} | {:.0} | {:.0}", v[0], v[v.len() / 2], v[v.len() - 1])
}

pub fn store(args: BenchStoreArgs) -> Result<ExitCode> {
    if args.runs == 0 || args.rounds == 0 || args.gpus == 0 {
        bail!("--gpus, --rounds and --runs must be at least 1");
    }
    let (rounds, samples) = pages(args.gpus, args.rounds)?;
    println!("# gpuwarden bench store");
    println!("machine: {}", super::machine_line());
    println!(
        "command: gpuwarden bench store --gpus {} --rounds {} --runs {}{}",
        args.gpus,
        args.rounds,
        args.runs,
        if args.postgres_url.is_some() {
            " --postgres-url …"
        } else {
            ""
        }
    );
    println!(
        "{samples} samples per pass: {} GPUs, {} node pages per round, {} rounds",
        args.gpus,
        rounds.first().map_or(0, Vec::len),
        args.rounds
    );
    println!();
    println!("| store | write shape | samples/s min | median | max |");
    println!("|---|---|---:|---:|---:|");

    let tmp = tempfile::tempdir().context("creating a temporary directory")?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        let s = EmbeddedStore::open(&tmp.path().join(format!("page-{run}")), EmbeddedOptions::default())?;
        a.push(per_page(&s, &rounds, samples)?);
        let s = EmbeddedStore::open(&tmp.path().join(format!("round-{run}")), EmbeddedOptions::default())?;
        b.push(per_round(&s, &rounds, samples)?);
    }
    println!(
        "| embedded (fsync per call) | append_page per node page | {} |",
        spread(a)
    );
    println!(
        "| embedded (fsync per call) | append_samples per round | {} |",
        spread(b)
    );

    // A throwaway server unless a database was given.
    let cluster = match &args.postgres_url {
        Some(_) => None,
        None => match PgCluster::start_durable() {
            Ok(c) => Some(c),
            Err(e) => {
                println!("| PostgreSQL | not measured: {e} | | | |");
                return Ok(ExitCode::SUCCESS);
            }
        },
    };
    let make_db = |name: &str| -> Result<String> {
        match (&args.postgres_url, &cluster) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(c)) => c.create_database(name).map_err(anyhow::Error::msg),
            (None, None) => bail!("no PostgreSQL to write to"),
        }
    };
    let open = |name: &str| -> Result<PostgresStore> {
        let url = make_db(name)?;
        let store = PostgresStore::open(&PostgresOptions {
            url,
            password: std::env::var(crate::config::STORE_PASSWORD_ENV).ok(),
            ..PostgresOptions::default()
        })?;
        Ok(store)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        let s = open(&format!("bench_page_{run}"))?;
        a.push(per_page(&s, &rounds, samples)?);
        drop(s);
        let s = open(&format!("bench_round_{run}"))?;
        b.push(per_round(&s, &rounds, samples)?);
    }
    println!(
        "| PostgreSQL (COPY, commit per call) | append_page per node page | {} |",
        spread(a)
    );
    println!(
        "| PostgreSQL (COPY, commit per call) | append_samples per round | {} |",
        spread(b)
    );
    if args.postgres_url.is_some() {
        println!();
        println!("(with --postgres-url every pass writes the same database: later passes re-append the same keys, which replace in place)");
    }
    Ok(ExitCode::SUCCESS)
}
