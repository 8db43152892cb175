//! `gpuwarden train`: trains the failure predictor and saves a versioned model to
//! `DATA_DIR/models/` (also as `failure-current.json`, which `run` loads and watches).
//!
//! History: the store's own (samples + events, failures from the events) when it holds
//! at least `--min-failures` hard failures; otherwise a simulated fleet generated for the
//! purpose (512 GPUs × 30 days at a 2-minute step and 60× the real fault rates: a few
//! hundred failures), because a model cannot learn failures it has never seen.

use crate::cli::TrainArgs;
use anyhow::{Context, Result};
use gpuwarden_detect::XidCatalog;
use gpuwarden_predict::dataset::{replay_sim, replay_store, SimHistory};
use gpuwarden_predict::failure::{failure_of_event, HardFailureCodes};
use gpuwarden_predict::live::models_dir;
use gpuwarden_predict::model::TrainOptions;
use gpuwarden_predict::train::{fit_time_split, labeler};
use gpuwarden_predict::{PredictConfig, PredictionAnalyzer, Predictor};
use gpuwarden_store::Store;
use gpuwarden_store::StoreConfig;
use indicatif::{ProgressBar, ProgressStyle};
use std::process::ExitCode;

fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {percent:>3}% {elapsed_precise} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Hard failures in the store, counted from its events (cheap: events only).
fn store_failures(store: &dyn Store, catalog: &XidCatalog) -> Result<(usize, i64, i64)> {
    let gpus = store.gpus()?;
    let from = gpus.iter().map(|g| g.first_seen_ms).min().unwrap_or(0);
    let to = gpus.iter().map(|g| g.last_seen_ms).max().unwrap_or(0) + 1;
    if gpus.is_empty() {
        return Ok((0, 0, 0));
    }
    let codes = HardFailureCodes::new(catalog);
    let mut failed = std::collections::HashSet::new();
    for e in store.events(None, from, to)? {
        if let Some(f) = failure_of_event(&e, &codes) {
            failed.insert(f.gpu);
        }
    }
    Ok((failed.len(), from, to))
}

pub fn train(args: TrainArgs) -> Result<ExitCode> {
    let catalog = XidCatalog::builtin();
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let store_cfg = match &args.config {
        Some(path) => crate::config::store_config(&crate::config::FileConfig::load(path)?.store, &args.data_dir)?,
        None => crate::config::store_config(&Default::default(), &args.data_dir)?,
    };
    // The embedded store is read only if it exists (opening would create an empty one);
    // a configured database is always read.
    let store_exists = match &store_cfg {
        StoreConfig::Embedded { dir, .. } => dir.exists(),
        _ => true,
    };
    let store_dir = store_cfg.describe();
    let mut from_store = None;
    if !args.simulate && store_exists {
        let store = gpuwarden_store::open(&store_cfg).with_context(|| format!("opening the store at {store_dir}"))?;
        let (n, from, to) = store_failures(&*store, &catalog)?;
        if n >= args.min_failures {
            from_store = Some((store, n, from, to));
        } else {
            println!(
                "the store has {n} GPU(s) with a hard failure (< --min-failures {}): training on a simulated history",
                args.min_failures
            );
        }
    }
    let mut labeler = labeler();
    let (outcome, source) = if let Some((store, n, from, to)) = from_store {
        println!("training on the store's history: {n} failed GPUs");
        let pb = bar(((to - from) / 3_600_000).max(1) as u64, "store");
        let outcome = replay_store(
            &*store,
            &catalog,
            from,
            to,
            300_000,
            &mut |d, _| pb.set_position((d / 3_600_000) as u64),
            &mut |snap, failures| labeler.observe(snap, failures),
        )?;
        pb.finish();
        (outcome, format!("store {store_dir}"))
    } else {
        let h = SimHistory {
            gpus: args.gpus,
            days: args.days,
            step_ms: i64::try_from(args.step.as_millis()).unwrap_or(120_000),
            seed: args.seed,
            fault_rate_multiplier: args.fault_rate_multiplier,
            ..SimHistory::default()
        };
        println!(
            "simulating {} GPUs × {} days (step {}, seed {}, fault rate ×{})",
            h.gpus, h.days, args.step, h.seed, h.fault_rate_multiplier
        );
        let pb = bar((h.days * 24.0).ceil() as u64, "simulating");
        let outcome = replay_sim(
            &h,
            &catalog,
            &mut |d, _| pb.set_position((d / 3_600_000) as u64),
            &mut |snap, failures| labeler.observe(snap, failures),
        )?;
        pb.finish();
        let source = format!(
            "simulated: {} GPUs × {} days, step {} s, seed {}, fault rate ×{}",
            h.gpus,
            h.days,
            h.step_ms / 1000,
            h.seed,
            h.fault_rate_multiplier
        );
        (outcome, source)
    };
    let data = labeler.data;
    println!(
        "{} rows ({} positive), {} hard failures on {} of {} GPUs; fitting…",
        data.len(),
        data.y.iter().filter(|y| **y).count(),
        outcome.failures.len(),
        outcome
            .failures
            .iter()
            .map(|f| &f.gpu)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        outcome.gpus
    );
    let opts = TrainOptions {
        budget: args.budget,
        ..TrainOptions::default()
    };
    let mut model = fit_time_split(&data, &outcome, source, opts)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let path = model.save(&models_dir(&args.data_dir), now)?;
    let t = &model.meta.training;
    println!("model {} saved to {}", model.meta.version, path.display());
    if !matches!(store_cfg, StoreConfig::Embedded { .. }) {
        // The store is PostgreSQL: every instance on it picks the model up from there.
        let store = gpuwarden_store::open(&store_cfg).with_context(|| format!("opening the store at {store_dir}"))?;
        if let Some(db) = store.postgres() {
            let bytes = std::fs::read(&path).with_context(|| format!("reading back {}", path.display()))?;
            gpuwarden_store::docs::StateDocs::put(&gpuwarden_store::docs::PgDocs(db), MODEL_DOC, &bytes)
                .with_context(|| format!("sharing the model through the store at {store_dir}"))?;
            println!("model {} shared through the store at {store_dir}", model.meta.version);
        }
    }
    println!(
        "time split: train {} rows ({} failures), test {} rows ({} failures); fit {:.1} s",
        t.rows_train, t.failures_train, t.rows_test, t.failures_test, t.train_seconds
    );
    println!(
        "test (later part): ROC-AUC {:.3}  PR-AUC {:.3}  precision {:.3}  recall {:.3} at threshold {:.3}",
        t.test.roc_auc, t.test.pr_auc, t.test.precision, t.test.recall, t.test.threshold
    );
    Ok(ExitCode::SUCCESS)
}

/// Live failure prediction for `gpuwarden run`: a [`Predictor`] reading
/// `data_dir/models/failure-current.json` (none yet: it logs once and scores nothing until
/// `gpuwarden train` writes one), its analyzer registered with the analysis stage (so a
/// prediction above the threshold becomes a `Prediction` finding → incident), and a task
/// that every 30 s reloads the model when the file changed (`train` renames a complete
/// file into place, so a half-written model is never read) and appends the new
/// probabilities to the store as `gpuwarden_failure_probability` samples.
pub fn attach_predictor(
    analysis: &gpuwarden_pipeline::Analysis,
    store: std::sync::Arc<dyn Store>,
    data_dir: &std::path::Path,
    config: PredictConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::sync::Arc<Predictor> {
    // With the store in PostgreSQL the current model is a shared document there (what
    // `train` wrote); the file in data_dir is this instance's copy of it, refreshed before
    // each reload check, so the file-based reload below picks a new model up.
    let shared = store.postgres().map(gpuwarden_store::docs::PgDocs);
    let local = gpuwarden_store::docs::FileDocs::new(data_dir);
    if let Some(db) = &shared {
        sync_shared_model(db, &local);
    }
    let predictor = Predictor::new(Some(models_dir(data_dir)), config);
    analysis.add_analyzer(Box::new(PredictionAnalyzer::new(
        predictor.clone(),
        &XidCatalog::builtin(),
    )));
    let p = predictor.clone();
    tokio::spawn(async move {
        let mut mtime = p
            .current_path()
            .and_then(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok());
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let (p2, store) = (p.clone(), store.clone());
            let last = mtime;
            let (shared, local) = (shared.clone(), local.clone());
            match tokio::task::spawn_blocking(move || {
                if let Some(db) = &shared {
                    sync_shared_model(db, &local);
                }
                let m = p2.reload_if_changed(last);
                let rows = p2.take_history_rows();
                let stored = if rows.is_empty() {
                    Ok(())
                } else {
                    store.append_samples(&rows)
                };
                (m, stored)
            })
            .await
            {
                Ok((m, Ok(()))) => mtime = m.or(mtime),
                Ok((m, Err(e))) => {
                    mtime = m.or(mtime);
                    tracing::warn!("failure prediction: storing probabilities failed: {e}");
                }
                Err(e) => tracing::error!("failure prediction: background task failed: {e}"),
            }
        }
    });
    predictor
}

/// Name of the current failure model among the state documents: its path below
/// `data_dir`, which is where the file implementation keeps it.
pub const MODEL_DOC: &str = "models/failure-current.json";

/// Copies the shared model into `local` when it differs from the copy there (atomic
/// replace, so the predictor never reads half a model). A failure is logged: the
/// instance keeps scoring with the model it has.
fn sync_shared_model(db: &gpuwarden_store::docs::PgDocs, local: &gpuwarden_store::docs::FileDocs) {
    use gpuwarden_store::docs::StateDocs;
    match db.get(MODEL_DOC) {
        Ok(Some(bytes)) => {
            if local.get(MODEL_DOC).ok().flatten().as_deref() != Some(&bytes[..]) {
                if let Err(e) = local.put(MODEL_DOC, &bytes) {
                    tracing::warn!(
                        "failure prediction: copying the shared model to {}: {e}",
                        local.describe(MODEL_DOC)
                    );
                }
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("failure prediction: reading the shared model: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{BenchCommand, Cli, Command};
    use clap::Parser;
    use gpuwarden_predict::dataset::SimHistory;

    /// The step `gpuwarden train` and `bench predict` simulate at by default is the one
    /// the feature-identity test (`crates/predict/tests/features_identity.rs`) checks.
    #[test]
    fn default_steps_are_the_identity_tested_one() {
        let step = SimHistory::default().step_ms as u128;
        let Command::Train(t) = Cli::try_parse_from(["gpuwarden", "train"]).unwrap().command else {
            panic!("train parses as train");
        };
        assert_eq!(t.step.as_millis(), step);
        let Command::Bench(BenchCommand::Predict(b)) =
            Cli::try_parse_from(["gpuwarden", "bench", "predict"]).unwrap().command
        else {
            panic!("bench predict parses as bench predict");
        };
        assert_eq!(b.step.as_millis(), step);
    }
}
