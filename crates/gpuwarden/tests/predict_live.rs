//! Live failure prediction, end to end at small scale: a model trained on a short
//! simulated history and saved to a models folder is loaded by the [`Predictor`] `run`
//! uses; the analyzer, fed the same simulated fleet through the `Analyzer` trait (as the
//! pipeline feeds it), scores every GPU and turns risks above the threshold into
//! `Prediction` findings asking to drain the node, with reasons, and queues the
//! probabilities for the store. Without a model it emits nothing. (The pipeline's own test
//! pins that registered analyzers' findings become persisted incidents.)

use gpuwarden_detect::XidCatalog;
use gpuwarden_model::{Action, Analyzer, FieldName, FindingKind, Freshness, GpuIdentity};
use gpuwarden_predict::dataset::{replay_sim, sim_fleet, sim_row, SimHistory};
use gpuwarden_predict::live::{models_dir, PROBABILITY_FIELD};
use gpuwarden_predict::model::TrainOptions;
use gpuwarden_predict::train::{fit_time_split, labeler};
use gpuwarden_predict::{PredictConfig, PredictionAnalyzer, Predictor};

fn history(seed: u64, days: f64) -> SimHistory {
    SimHistory {
        gpus: 32,
        days,
        step_ms: 300_000,
        seed,
        fault_rate_multiplier: 3000.0,
        snapshot_every_ms: 1_800_000,
    }
}

/// Feeds `hours` of a fleet to the analyzer and returns the last timestamp.
fn feed(analyzer: &mut PredictionAnalyzer, h: &SimHistory, hours: i64) -> i64 {
    let mut fleet = sim_fleet(h).unwrap();
    let gpus = fleet.gpus();
    for g in &gpus {
        analyzer.observe_identity(&GpuIdentity::new(g.uuid.clone(), g.node.clone()));
    }
    let mut xid = gpuwarden_collect::xid::XidTracker::new();
    let mut events = Vec::new();
    let mut t = fleet.now_ms();
    let end = t + hours * 3_600_000;
    while t < end {
        t += h.step_ms;
        fleet.advance_to(t);
        for (gi, g) in gpus.iter().enumerate() {
            if let Some(row) = sim_row(&fleet, gi, &g.uuid, t) {
                events.clear();
                xid.observe(&g.node, &row, &mut events);
                analyzer.observe_row(&row);
                for e in &events {
                    analyzer.observe_event(e);
                }
            }
        }
    }
    t
}

#[test]
fn a_trained_model_scores_live_and_raises_drain_findings() {
    let catalog = XidCatalog::builtin();
    let h = history(21, 4.0);
    let mut lab = labeler();
    let outcome = replay_sim(&h, &catalog, &mut |_, _| {}, &mut |s, f| lab.observe(s, f)).unwrap();
    let opts = TrainOptions {
        budget: 0.3,
        ..TrainOptions::default()
    };
    let mut model = fit_time_split(&lab.data, &outcome, "test".into(), opts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    model.save(&models_dir(dir.path()), 0).unwrap();

    // A threshold every GPU exceeds, so the finding path is exercised whatever the scores.
    let config = PredictConfig {
        threshold: Some(1e-9),
        ..PredictConfig::default()
    };
    let predictor = Predictor::new(Some(models_dir(dir.path())), config);
    assert!(predictor.model().is_some(), "the saved model is loaded");
    let mut analyzer = PredictionAnalyzer::new(predictor.clone(), &catalog);
    let now = feed(&mut analyzer, &history(77, 1.0), 8);
    let findings = analyzer.evaluate(now, &|_| Freshness::Fresh);
    assert!(!findings.is_empty());
    for f in &findings {
        assert_eq!(f.kind, FindingKind::Prediction);
        assert_eq!(f.action, Action::DrainNode);
        assert!(f.gpu.is_some() && !f.summary.is_empty());
    }
    let preds = predictor.predictions();
    assert_eq!(preds.len(), findings.len());
    assert!(
        preds.windows(2).all(|w| w[0].probability >= w[1].probability),
        "riskiest first"
    );
    assert!(preds.iter().all(|p| (0.0..=1.0).contains(&p.probability)));
    let rows = predictor.take_history_rows();
    assert_eq!(rows.len(), preds.len());
    assert!(rows
        .iter()
        .all(|r| r.values[0].0 == FieldName::Other(PROBABILITY_FIELD.into())));
    // Within the period, the same findings stand without rescoring.
    assert_eq!(
        analyzer.evaluate(now + 1000, &|_| Freshness::Fresh).len(),
        findings.len()
    );
    assert!(predictor.take_history_rows().is_empty());
}

#[test]
fn without_a_model_nothing_is_emitted() {
    let dir = tempfile::tempdir().unwrap();
    let predictor = Predictor::new(Some(models_dir(dir.path())), PredictConfig::default());
    let mut analyzer = PredictionAnalyzer::new(predictor.clone(), &XidCatalog::builtin());
    let now = feed(&mut analyzer, &history(5, 1.0), 2);
    assert!(analyzer.evaluate(now, &|_| Freshness::Fresh).is_empty());
    assert!(predictor.predictions().is_empty());
}
