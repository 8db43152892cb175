//! Histories to learn from and to evaluate on: a simulated fleet replayed step by step,
//! or the store's own history, both fed through the same [`FeatureBank`] the live
//! analyzer uses; and the labeler that turns feature snapshots into training rows.
//!
//! **Labels.** A row (GPU, t) is positive when the GPU's next hard failure falls in
//! (t, t + 24 h]. While a GPU is out of service with a hard failure no rows are produced
//! (predicting a failure that already happened teaches nothing). In simulated histories a
//! board comes back after a reset or reboot and can fail again (see "Repairs" in
//! docs/simulator.md); in the store's history a GPU's first hard failure ends its rows,
//! because the store does not say when someone put it back. Rows in the last 24 h of a
//! history are dropped: their label is not known yet (censored).
//!
//! **Bounded memory.** The labeler holds each GPU's last 24 h of rows (the only ones
//! whose label can still change) and keeps one negative in `keep_every` once its label
//! is final, weighted `keep_every`, so a month of a 512-GPU fleet fits in ~100 MB.

use crate::error::PredictError;
use crate::failure::{failure_of_event, is_hard_fault_kind, HardFailure, HardFailureCodes};
use crate::features::{feature_count, FeatureBank, Snapshot};
use gpuwarden_collect::xid::XidTracker;
use gpuwarden_detect::XidCatalog;
use gpuwarden_model::{DcgmField, Event, FieldName, GpuIdentity, GpuSamples, GpuUuid, TimestampMs};
use gpuwarden_sim::faults::PrecursorRecord;
use gpuwarden_sim::{Fleet, SimConfig};
use gpuwarden_store::Store;
use std::collections::{HashMap, VecDeque};

const HOUR_MS: i64 = 3_600_000;
/// The prediction horizon.
pub const HORIZON_MS: i64 = 24 * HOUR_MS;

/// The fields the features read (the replays fetch only these).
pub const FIELDS: &[DcgmField] = &[
    DcgmField::EccSbeAggTotal,
    DcgmField::EccSbeVolTotal,
    DcgmField::EccDbeAggTotal,
    DcgmField::RetiredSbe,
    DcgmField::RetiredDbe,
    DcgmField::RetiredPending,
    DcgmField::CorrectableRemappedRows,
    DcgmField::UncorrectableRemappedRows,
    DcgmField::RowRemapFailure,
    DcgmField::RowRemapPending,
    DcgmField::PcieReplayCounter,
    DcgmField::NvlinkCrcFlitErrorCountTotal,
    DcgmField::NvlinkCrcDataErrorCountTotal,
    DcgmField::NvlinkReplayErrorCountTotal,
    DcgmField::NvlinkRecoveryErrorCountTotal,
    DcgmField::GpuTemp,
    DcgmField::SlowdownTemp,
    DcgmField::ClockThrottleReasons,
    DcgmField::ClockEventReasons,
    DcgmField::PowerUsage,
    DcgmField::PowerMgmtLimit,
    DcgmField::SmClock,
    DcgmField::MaxSmClock,
    DcgmField::GpuUtil,
    DcgmField::XidErrors,
];

/// A simulated history.
#[derive(Debug, Clone)]
pub struct SimHistory {
    pub gpus: usize,
    pub days: f64,
    /// Simulator step (1–5 min: precursors last hours, so detail below that is noise).
    pub step_ms: i64,
    pub seed: u64,
    /// Enough to see hundreds of failures in a month of 512 GPUs (real rates give ~3).
    pub fault_rate_multiplier: f64,
    /// How often features are snapshotted (the live scoring period).
    pub snapshot_every_ms: i64,
}

impl Default for SimHistory {
    fn default() -> Self {
        SimHistory {
            gpus: 512,
            days: 30.0,
            step_ms: 120_000,
            seed: 1,
            fault_rate_multiplier: 60.0,
            snapshot_every_ms: 10 * 60_000,
        }
    }
}

/// The latest hard failure of each GPU that failed so far.
pub type Failures = HashMap<GpuUuid, HardFailure>;

/// A simulated GPU's hidden risk at a snapshot, which no telemetry shows directly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimTruth {
    /// Hard-failure hazard relative to the fleet-average rate (wear-out).
    pub hazard: f64,
    /// When the warning episode the GPU is in ends in a hard failure, if it is in one.
    pub warning_end_ms: Option<TimestampMs>,
}

/// What a replay found.
#[derive(Debug, Clone, Default)]
pub struct ReplayOutcome {
    /// Every hard failure that ends a GPU's rows (see the module docs), in time order.
    pub failures: Vec<HardFailure>,
    /// Precursor episodes (simulated histories only).
    pub precursors: Vec<PrecursorRecord>,
    pub gpus: usize,
    pub start_ms: TimestampMs,
    pub end_ms: TimestampMs,
}

/// The simulator's fleet config for a history. Private: build the fleet with
/// [`sim_fleet`], so that no replay forgets the step or wear-out.
fn sim_config(h: &SimHistory) -> SimConfig {
    SimConfig {
        // 8 GPUs per node (an HGX board) up to the simulator's 1,024 nodes, then denser.
        nodes: h.gpus.div_ceil(h.gpus.div_ceil(1024).max(8)).max(1),
        gpus_per_node: h.gpus.div_ceil(1024).max(8).min(h.gpus.max(1)),
        seed: h.seed,
        fault_rate_multiplier: h.fault_rate_multiplier,
        ..SimConfig::default()
    }
}

/// The simulated fleet of a history, as every replay builds it: the coarse step, and
/// wear-out on (boards that degrade and leak chronic errors before failing; see
/// "Failure model" in docs/simulator.md). Training, evaluation, the scoring bench and
/// the feature-identity test all build it here so they see the same fleet.
pub fn sim_fleet(h: &SimHistory) -> Result<Fleet, PredictError> {
    let mut fleet = Fleet::new(&sim_config(h))?;
    fleet.set_step_ms(h.step_ms);
    fleet.set_wear_out();
    Ok(fleet)
}

/// Reads one GPU's row from the simulator (`None`: the GPU is off the bus).
pub fn sim_row(fleet: &Fleet, gi: usize, uuid: &GpuUuid, ts: TimestampMs) -> Option<GpuSamples> {
    let mut row = GpuSamples::new(uuid.clone(), ts);
    for f in FIELDS {
        if let Some(v) = fleet.value(gi, *f) {
            row.values.push((FieldName::Dcgm(*f), v));
        }
    }
    (!row.values.is_empty()).then_some(row)
}

/// Replays a simulated history through a [`FeatureBank`]: every step, each present GPU's
/// row goes to the XID tracker (the same one ingest uses) and to the bank; every
/// `snapshot_every_ms`, the features of the GPUs in service (not out with a hard
/// failure) go to `on_snapshot` with each GPU's latest failure so far.
/// `progress(done_ms, total_ms)` is called once per sim hour.
pub fn replay_sim(
    h: &SimHistory,
    catalog: &XidCatalog,
    progress: &mut dyn FnMut(i64, i64),
    on_snapshot: &mut dyn FnMut(&Snapshot, &HashMap<GpuUuid, HardFailure>),
) -> Result<ReplayOutcome, PredictError> {
    replay_sim_with_truth(h, catalog, progress, &mut |snap, failures, _| {
        on_snapshot(snap, failures)
    })
}

/// [`replay_sim`], also handing `on_snapshot` each snapshot GPU's hidden risk (see
/// [`SimTruth`]) in the snapshot's GPU order: for measuring the ceiling the simulator's
/// randomness leaves, never for training.
pub fn replay_sim_with_truth(
    h: &SimHistory,
    catalog: &XidCatalog,
    progress: &mut dyn FnMut(i64, i64),
    on_snapshot: &mut dyn FnMut(&Snapshot, &Failures, &[SimTruth]),
) -> Result<ReplayOutcome, PredictError> {
    let mut fleet = sim_fleet(h)?;
    let gpus = fleet.gpus();
    let mut bank = FeatureBank::new(catalog);
    for g in &gpus {
        bank.observe_identity(&GpuIdentity::new(g.uuid.clone(), g.node.clone()));
    }
    let index: HashMap<GpuUuid, usize> = gpus.iter().enumerate().map(|(i, g)| (g.uuid.clone(), i)).collect();
    let mut xid = XidTracker::new();
    let start = fleet.now_ms();
    let total = (h.days * 24.0 * HOUR_MS as f64) as i64;
    let end = start + total;
    let mut latest: Failures = HashMap::new();
    let mut failures: Vec<HardFailure> = Vec::new();
    let mut seen_labels = 0;
    let mut events: Vec<Event> = Vec::new();
    // The simulator's own step (the history's, rounded to whole seconds and capped at
    // 10 min), so that every row is read on a tick and carries the tick's time.
    let step = fleet.step_ms();
    let mut t = start;
    while t + step <= end {
        t += step;
        fleet.advance_to(t);
        for (gi, g) in gpus.iter().enumerate() {
            let Some(row) = sim_row(&fleet, gi, &g.uuid, t) else {
                continue;
            };
            events.clear();
            xid.observe(&g.node, &row, &mut events);
            bank.observe_row(&row);
            for e in &events {
                bank.observe_event(e);
            }
        }
        for l in &fleet.labels()[seen_labels..] {
            if is_hard_fault_kind(l.kind) {
                let f = HardFailure {
                    gpu: l.gpu.clone(),
                    ts_ms: l.start_ms,
                    cause: l.kind.as_str().to_string(),
                };
                latest.insert(l.gpu.clone(), f.clone());
                failures.push(f);
            }
        }
        seen_labels = fleet.labels().len();
        if (t - start) % h.snapshot_every_ms.max(step) < step {
            let in_service = |u: &GpuUuid| index.get(u).is_none_or(|&gi| !fleet.in_hard_failure(gi));
            let snap = bank.snapshot(t, Some(&in_service));
            let truth: Vec<SimTruth> = snap
                .gpus
                .iter()
                .map(|u| {
                    let (hazard, p) = index.get(u).map_or((1.0, None), |&gi| fleet.risk_truth(gi));
                    SimTruth {
                        hazard,
                        warning_end_ms: p.filter(|p| p.target.is_some()).map(|p| p.end_ms),
                    }
                })
                .collect();
            on_snapshot(&snap, &latest, &truth);
        }
        if (t - start) % HOUR_MS < step {
            progress(t - start, total);
        }
    }
    Ok(ReplayOutcome {
        failures,
        precursors: fleet.precursors().to_vec(),
        gpus: gpus.len(),
        start_ms: start,
        end_ms: t,
    })
}

/// Replays the store's history from `from` to `to` through a [`FeatureBank`], an hour
/// at a time (rows and events merged in time order). Hard failures come from the stored
/// events (XIDs, DBE, remap failures).
pub fn replay_store(
    store: &dyn Store,
    catalog: &XidCatalog,
    from: TimestampMs,
    to: TimestampMs,
    snapshot_every_ms: i64,
    progress: &mut dyn FnMut(i64, i64),
    on_snapshot: &mut dyn FnMut(&Snapshot, &HashMap<GpuUuid, HardFailure>),
) -> Result<ReplayOutcome, PredictError> {
    let codes = HardFailureCodes::new(catalog);
    let records = store.gpus()?;
    let mut bank = FeatureBank::new(catalog);
    for r in &records {
        bank.observe_identity(&r.identity);
    }
    let mut failures: HashMap<GpuUuid, HardFailure> = HashMap::new();
    let every = snapshot_every_ms.max(60_000);
    let mut next_snap = from + every;
    let mut t = from;
    while t < to {
        let until = (t + HOUR_MS).min(to);
        // (ts, kind: 0 row / 1 event, index)
        let mut rows: Vec<GpuSamples> = Vec::new();
        for r in &records {
            let mut by_ts: std::collections::BTreeMap<TimestampMs, Vec<(FieldName, f64)>> = Default::default();
            for f in FIELDS {
                let name = FieldName::Dcgm(*f);
                for p in store.range(&r.identity.uuid, &name, t, until, usize::MAX)? {
                    by_ts.entry(p.ts_ms).or_default().push((name.clone(), p.value));
                }
            }
            rows.extend(by_ts.into_iter().map(|(ts, values)| GpuSamples {
                gpu: r.identity.uuid.clone(),
                ts_ms: ts,
                values,
            }));
        }
        let events = store.events(None, t, until)?;
        let mut items: Vec<(TimestampMs, bool, usize)> =
            rows.iter().enumerate().map(|(i, r)| (r.ts_ms, false, i)).collect();
        items.extend(events.iter().enumerate().map(|(i, e)| (e.ts_ms, true, i)));
        items.sort_by_key(|(ts, ev, _)| (*ts, *ev));
        for (ts, is_event, i) in items {
            while ts >= next_snap {
                let snap = bank.snapshot(next_snap, Some(&|u: &GpuUuid| !failures.contains_key(u)));
                on_snapshot(&snap, &failures);
                next_snap += every;
            }
            if is_event {
                let e = &events[i];
                bank.observe_event(e);
                if let Some(f) = failure_of_event(e, &codes) {
                    failures.entry(f.gpu.clone()).or_insert(f);
                }
            } else {
                bank.observe_row(&rows[i]);
            }
        }
        t = until;
        progress(t - from, to - from);
    }
    let mut failures: Vec<HardFailure> = failures.into_values().collect();
    failures.sort_by_key(|f| f.ts_ms);
    Ok(ReplayOutcome {
        failures,
        precursors: Vec::new(),
        gpus: records.len(),
        start_ms: from,
        end_ms: to,
    })
}

/// Training rows: features (row-major), labels, weights and times.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub x: Vec<f64>,
    pub y: Vec<bool>,
    pub w: Vec<f64>,
    pub ts: Vec<TimestampMs>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    fn push(&mut self, ts: TimestampMs, row: &[f64], y: bool, w: f64) {
        self.x.extend_from_slice(row);
        self.y.push(y);
        self.w.push(w);
        self.ts.push(ts);
    }

    /// The rows `keep` accepts.
    pub fn select(&self, keep: impl Fn(TimestampMs) -> bool) -> Dataset {
        let n = feature_count();
        let mut out = Dataset::default();
        for i in 0..self.len() {
            if keep(self.ts[i]) {
                out.push(self.ts[i], &self.x[i * n..(i + 1) * n], self.y[i], self.w[i]);
            }
        }
        out
    }
}

/// Turns snapshots into labelled rows (see the module docs).
#[derive(Debug)]
pub struct Labeler {
    keep_every: u64,
    pending: HashMap<GpuUuid, VecDeque<(TimestampMs, Vec<f64>)>>,
    /// The failure each GPU's pending rows were last settled against: a board back from
    /// a repair starts a new run of rows, labelled by its next failure.
    settled: HashMap<GpuUuid, TimestampMs>,
    negatives_seen: u64,
    pub data: Dataset,
}

impl Labeler {
    pub fn new(keep_every: u64) -> Self {
        Labeler {
            keep_every: keep_every.max(1),
            pending: HashMap::new(),
            settled: HashMap::new(),
            negatives_seen: 0,
            data: Dataset::default(),
        }
    }

    fn negative(&mut self, ts: TimestampMs, row: &[f64]) {
        self.negatives_seen += 1;
        if self.negatives_seen.is_multiple_of(self.keep_every) {
            self.data.push(ts, row, false, self.keep_every as f64);
        }
    }

    pub fn observe(&mut self, snap: &Snapshot, failures: &HashMap<GpuUuid, HardFailure>) {
        for (i, gpu) in snap.gpus.iter().enumerate() {
            self.pending
                .entry(gpu.clone())
                .or_default()
                .push_back((snap.ts_ms, snap.row(i).to_vec()));
        }
        // GPUs with a failure not yet settled: everything pending before it is final now.
        let failed: Vec<(GpuUuid, TimestampMs)> = self
            .pending
            .keys()
            .filter_map(|g| failures.get(g).map(|f| (g.clone(), f.ts_ms)))
            .filter(|(g, fail)| self.settled.get(g) != Some(fail))
            .collect();
        for (g, fail) in failed {
            self.settled.insert(g.clone(), fail);
            if let Some(rows) = self.pending.remove(&g) {
                for (ts, row) in rows {
                    if ts >= fail {
                        continue;
                    }
                    if fail - ts <= HORIZON_MS {
                        self.data.push(ts, &row, true, 1.0);
                    } else {
                        self.negative(ts, &row);
                    }
                }
            }
        }
        // Rows older than the horizon on a GPU still alive are negatives.
        let cutoff = snap.ts_ms - HORIZON_MS;
        let keys: Vec<GpuUuid> = self.pending.keys().cloned().collect();
        for g in keys {
            while let Some(front) = self.pending.get_mut(&g).and_then(|q| {
                if q.front().is_some_and(|(ts, _)| *ts < cutoff) {
                    q.pop_front()
                } else {
                    None
                }
            }) {
                self.negative(front.0, &front.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(ts: TimestampMs, gpus: &[&GpuUuid]) -> Snapshot {
        Snapshot {
            ts_ms: ts,
            gpus: gpus.iter().map(|g| (*g).clone()).collect(),
            values: vec![ts as f64; gpus.len() * feature_count()],
        }
    }

    fn failure(gpu: &GpuUuid, ts: TimestampMs) -> HardFailure {
        HardFailure {
            gpu: gpu.clone(),
            ts_ms: ts,
            cause: "ecc-dbe".into(),
        }
    }

    /// Hourly snapshots of one GPU from 0 to `last` h: it fails at each hour of `fails`
    /// and is out of service while `down(hour)`.
    fn label_run(gpu: &str, fails: &[i64], down: impl Fn(i64) -> bool, last: i64) -> Labeler {
        let g = GpuUuid::new(gpu);
        let mut l = Labeler::new(1);
        let mut failures = Failures::new();
        for h in 0..=last {
            let ts = h * HOUR_MS;
            if fails.contains(&h) {
                failures.insert(g.clone(), failure(&g, ts));
            }
            let in_service: Vec<&GpuUuid> = if down(h) { vec![] } else { vec![&g] };
            l.observe(&snap(ts, &in_service), &failures);
        }
        l
    }

    /// A board back from a repair starts a new run of rows: those before its second
    /// failure are labelled by that failure, and none of them by the first.
    #[test]
    fn a_repaired_board_is_labelled_by_its_next_failure() {
        // First failure at 10 h, out of service 10–14 h, second (RMA) at 30 h.
        let l = label_run("GPU-a", &[10, 30], |h| (10..14).contains(&h) || h >= 30, 40);
        let rows: Vec<(i64, bool)> = (0..l.data.len())
            .map(|i| (l.data.ts[i] / HOUR_MS, l.data.y[i]))
            .collect();
        let positive: Vec<i64> = rows.iter().filter(|r| r.1).map(|r| r.0).collect();
        // Before the first failure: 0–9 h (all within 24 h of it). After the repair:
        // 14–29 h, all within 24 h of the second failure at 30 h.
        assert_eq!(positive, (0..10).chain(14..30).collect::<Vec<_>>());
        assert!(rows.iter().all(|r| r.1), "no negatives expected: {rows:?}");
    }

    #[test]
    fn rows_more_than_a_horizon_before_the_next_failure_are_negative() {
        let l = label_run("GPU-b", &[5, 50], |h| (5..8).contains(&h) || h >= 50, 60);
        let label = |hour: i64| {
            let i = l.data.ts.iter().position(|&t| t == hour * HOUR_MS).expect("row");
            l.data.y[i]
        };
        assert!(label(4));
        assert!(!label(8) && !label(25));
        assert!(label(26) && label(49));
        assert!(l.data.ts.iter().all(|&t| !(5..8).contains(&(t / HOUR_MS))));
    }
}
