//! Training and live scoring compute identical features for the same GPU and time: the
//! trainer's replay (`dataset::replay_sim`) and the live analyzer (fed through the
//! `Analyzer` trait, as the pipeline feeds it) see the same simulated fleet, and their
//! feature vectors are compared bit for bit at several times. Small history: seconds.

use gpuwarden_detect::XidCatalog;
use gpuwarden_model::{Analyzer, GpuIdentity};
use gpuwarden_predict::dataset::{replay_sim, sim_fleet, sim_row, SimHistory};
use gpuwarden_predict::features::Snapshot;
use gpuwarden_predict::{PredictConfig, PredictionAnalyzer, Predictor};

#[test]
fn training_and_live_features_are_identical() {
    let catalog = XidCatalog::builtin();
    let h = SimHistory {
        gpus: 16,
        days: 1.5,
        step_ms: 120_000,
        seed: 5,
        fault_rate_multiplier: 3000.0,
        snapshot_every_ms: 3 * 3_600_000,
    };
    let mut trained: Vec<Snapshot> = Vec::new();
    let outcome = replay_sim(&h, &catalog, &mut |_, _| {}, &mut |s, _| trained.push(s.clone())).unwrap();
    assert!(!trained.is_empty());

    // The live path: the analyzer, fed row by row with the XID tracker's events.
    let predictor = Predictor::new(None, PredictConfig::default());
    let mut live = PredictionAnalyzer::new(predictor, &catalog);
    let mut fleet = sim_fleet(&h).unwrap();
    let gpus = fleet.gpus();
    for g in &gpus {
        live.observe_identity(&GpuIdentity::new(g.uuid.clone(), g.node.clone()));
    }
    let mut xid = gpuwarden_collect::xid::XidTracker::new();
    let mut events = Vec::new();
    let mut t = outcome.start_ms;
    let mut compared = 0;
    let mut nonzero = 0;
    for snap in &trained {
        while t < snap.ts_ms {
            t += h.step_ms;
            fleet.advance_to(t);
            for (gi, g) in gpus.iter().enumerate() {
                if let Some(row) = sim_row(&fleet, gi, &g.uuid, t) {
                    events.clear();
                    xid.observe(&g.node, &row, &mut events);
                    live.observe_row(&row);
                    for e in &events {
                        live.observe_event(e);
                    }
                }
            }
        }
        let now = live.bank().snapshot(snap.ts_ms, None);
        for (i, gpu) in snap.gpus.iter().enumerate() {
            let j = now.gpus.iter().position(|g| g == gpu).expect("GPU known to both");
            let (a, b) = (snap.row(i), now.row(j));
            for k in 0..a.len() {
                assert!(
                    a[k].to_bits() == b[k].to_bits(),
                    "feature {k} of {gpu} at {}: training {} vs live {}",
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
    assert!(compared >= 16 * 5, "compared only {compared} vectors");
    assert!(nonzero > 0);
    assert!(
        !outcome.failures.is_empty() || !outcome.precursors.is_empty(),
        "the history should hold some faults"
    );
}
