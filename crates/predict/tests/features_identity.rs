//! Training and live scoring compute identical features for the same GPU and time.
//!
//! The trainer's replay (`dataset::replay_sim`, reading the simulator's values directly)
//! and the live analyzer see the same simulated fleet; the live side gets it the way
//! `gpuwarden run` does: each node's page rendered as dcgm-exporter text, parsed and
//! mapped by the collector (`map_exporter_page`), XIDs from the collector's tracker, and
//! rows then events fed through the `Analyzer` trait as the analysis stage feeds them.
//! Feature vectors are compared bit for bit at every training snapshot.
//!
//! The fleet is built by `dataset::sim_fleet` on both sides — the simulator stepping in
//! the history's coarse step, with wear-out on. A copy of this test that built its fleet
//! by hand (`Fleet::new` + `set_step_ms`, without `set_wear_out`) failed with "feature 0
//! … training 1 vs live 0": it was comparing two different fleets (wear-out draws from
//! the same random stream and adds chronic SBEs), not two feature paths. Cases cover the
//! step `gpuwarden train` uses (`SimHistory::default().step_ms`, which the CLI's default
//! `--step` must equal: see the test in `gpuwarden::commands::train`), the scoring bench's
//! 5 minutes, a step that does not divide the snapshot period, and one past the
//! simulator's longest (both sides then step what the simulator steps,
//! `Fleet::step_ms`). Small histories: seconds each.

use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::prom::Limits;
use gpuwarden_detect::XidCatalog;
use gpuwarden_model::Analyzer;
use gpuwarden_predict::dataset::{replay_sim, sim_fleet, SimHistory};
use gpuwarden_predict::features::Snapshot;
use gpuwarden_predict::{PredictConfig, PredictionAnalyzer, Predictor};

fn check_identity(step_ms: i64, seed: u64) {
    let catalog = XidCatalog::builtin();
    let h = SimHistory {
        gpus: 16,
        days: 1.5,
        step_ms,
        seed,
        fault_rate_multiplier: 3000.0,
        snapshot_every_ms: 3 * 3_600_000,
    };
    let mut trained: Vec<Snapshot> = Vec::new();
    let outcome = replay_sim(&h, &catalog, &mut |_, _| {}, &mut |s, _| trained.push(s.clone())).unwrap();
    assert!(trained.len() >= 5, "step {step_ms}: only {} snapshots", trained.len());

    // The live path: exporter pages → collector → XID tracker → analyzer.
    let predictor = Predictor::new(None, PredictConfig::default());
    let mut live = PredictionAnalyzer::new(predictor, &catalog);
    let mut fleet = sim_fleet(&h).unwrap();
    let nodes = fleet.node_count();
    let mut xid = gpuwarden_collect::xid::XidTracker::new();
    let limits = Limits::default();
    let mut body = String::new();
    let mut t = outcome.start_ms;
    let (mut compared, mut nonzero) = (0, 0);
    for snap in &trained {
        while t < snap.ts_ms {
            t += fleet.step_ms();
            fleet.advance_to(t);
            for node in 0..nodes {
                body.clear();
                fleet.render_node(node, &mut body);
                let name = fleet.node_names()[node].clone();
                let page = map_exporter_page(body.as_bytes(), &name, t, &limits).unwrap();
                let events = xid.observe_page(&page);
                // As `Analysis::observe` feeds every analyzer.
                live.observe_page(&page.gpus, &page.rows, &events);
            }
        }
        let now = live.bank().snapshot(snap.ts_ms, None);
        for (i, gpu) in snap.gpus.iter().enumerate() {
            let j = now
                .gpus
                .iter()
                .position(|g| g == gpu)
                .unwrap_or_else(|| panic!("step {step_ms}: {gpu} scored in training but unknown live"));
            let (a, b) = (snap.row(i), now.row(j));
            for k in 0..a.len() {
                assert!(
                    a[k].to_bits() == b[k].to_bits(),
                    "step {step_ms}: feature {k} ({}) of {gpu} at {}: training {} vs live {}",
                    gpuwarden_predict::features::feature_names()[k],
                    snap.ts_ms,
                    a[k],
                    b[k]
                );
                if a[k] != 0.0 && a[k].is_finite() {
                    nonzero += 1;
                }
            }
            compared += 1;
        }
    }
    assert!(compared >= 16 * 5, "step {step_ms}: compared only {compared} vectors");
    assert!(nonzero > 0);
    assert!(
        !outcome.failures.is_empty() && !outcome.precursors.is_empty(),
        "step {step_ms}: the history should hold failures and precursors"
    );
}

#[test]
fn identical_at_the_training_step() {
    check_identity(SimHistory::default().step_ms, 5);
}

#[test]
fn identical_at_coarse_steps() {
    // The scoring bench's 5 minutes, 7 minutes (does not divide the snapshot period), and
    // 15 minutes (past the simulator's longest step: both sides step 10 minutes).
    for (step, seed) in [(300_000, 6), (420_000, 7), (900_000, 8)] {
        check_identity(step, seed);
    }
}
