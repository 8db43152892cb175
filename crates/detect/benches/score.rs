//! CPU cost of health scoring: `evaluate()` over a 1,000-GPU fleet (125 simulated nodes of
//! eight GPUs) holding ten minutes of 5 s scrapes of history, with random faults at 200×
//! their real rate so that some rules fire; and the ingest side (`observe_row` for one
//! scrape of the whole fleet). Divide by 1,000 for the cost per GPU.

use criterion::{criterion_group, criterion_main, Criterion};
use gpuwarden_collect::dcgm::{map_exporter_page, ExporterPage};
use gpuwarden_collect::prom::Limits;
use gpuwarden_collect::xid::XidTracker;
use gpuwarden_detect::{HealthEngine, HealthRules, XidCatalog};
use gpuwarden_model::Freshness;
use gpuwarden_sim::{Fleet, SimConfig};
use std::hint::black_box;
use std::time::Duration;

const STEP_MS: i64 = 5_000;

fn scrape(fleet: &mut Fleet, now: i64) -> Vec<ExporterPage> {
    fleet.advance_to(now);
    let names = fleet.node_names().to_vec();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut body = String::new();
            fleet.render_node(i, &mut body);
            map_exporter_page(body.as_bytes(), name, now, &Limits::default()).expect("page")
        })
        .collect()
}

fn setup() -> (HealthEngine, Vec<ExporterPage>, i64) {
    let config = SimConfig {
        nodes: 125,
        gpus_per_node: 8,
        seed: 3,
        fault_rate_multiplier: 200.0,
        ..SimConfig::default()
    };
    let mut fleet = Fleet::new(&config).expect("fleet");
    let mut engine = HealthEngine::new(HealthRules::builtin(), XidCatalog::builtin());
    let mut xids = XidTracker::new();
    let mut now = fleet.now_ms();
    let mut pages = Vec::new();
    for _ in 0..120 {
        now += STEP_MS;
        pages = scrape(&mut fleet, now);
        for page in &pages {
            let events = xids.observe_page(page);
            engine.observe_page(&page.gpus, &page.rows, &events);
        }
        engine.evaluate(now, &|_| Freshness::Fresh);
    }
    (engine, pages, now)
}

fn bench(c: &mut Criterion) {
    let (engine, mut pages, now) = setup();
    let e = engine.clone().evaluate(now, &|_| Freshness::Fresh);
    eprintln!(
        "fleet: {} GPUs, {} findings active, {} GPUs not healthy",
        e.gpus.len(),
        e.findings.len(),
        e.gpus
            .iter()
            .filter(|g| g.state != gpuwarden_model::HealthState::Healthy)
            .count()
    );

    let mut g = c.benchmark_group("health");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);
    let mut eng = engine.clone();
    g.bench_function("evaluate_1000_gpus", |b| {
        b.iter(|| black_box(eng.evaluate(now, &|_| Freshness::Fresh)))
    });
    let mut eng = engine.clone();
    let mut t = now;
    g.bench_function("observe_rows_1000_gpus", |b| {
        b.iter(|| {
            // New timestamps each time so every row is taken as new data.
            t += STEP_MS;
            for page in &mut pages {
                for row in &mut page.rows {
                    row.ts_ms = t;
                    eng.observe_row(black_box(row));
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
