//! The pure, synchronous core: a fleet of nodes and GPUs that moves through simulated
//! time in fixed ticks, runs jobs, draws and injects faults, and records ground truth.
//!
//! No I/O and no clock: the caller says what time it is (`advance_to`). Everything
//! random comes from one `ChaCha8Rng` seeded from the config, and time only moves in
//! whole ticks, so the same seed and the same calls give the same pages however fast
//! they come.

use crate::config::{SimConfig, DEFAULT_START_MS};
use crate::error::SimError;
use crate::faults::{self, ActiveFault, Effects};
use crate::gpu::GpuSim;
use crate::models::{node_models, GpuModel};
use crate::render;
use crate::workload::{self, Job, Profile, UNAPPROVED_NAMESPACES};
use gpuwarden_model::{DcgmField, FaultKind, FaultLabel, GpuUuid, TimestampMs, Workload};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Simulated time step. One second resolves everything scrapers see (they poll every
/// 1–30 s) and keeps a day of a 32-GPU fleet under a second of CPU.
pub const TICK_MS: i64 = 1_000;
/// A GPU left idle gets a new job after this long on average.
const MEAN_IDLE_MS: f64 = 200.0 * 60_000.0;
/// `advance_to` never simulates more than this much of a gap: a longer jump skips ahead
/// (keeping determinism) instead of stalling a scrape for seconds.
const MAX_CATCH_UP_MS: i64 = 24 * 3_600_000;
const YEAR_MS: f64 = 365.25 * 24.0 * 3_600_000.0;
/// Driver version on every node (`DCGM_FI_DRIVER_VERSION`).
pub const DRIVER_VERSION: &str = "550.90.07";

/// PCI bus ids of the eight GPUs of an HGX H100 baseboard, reused for every model.
const PCI_BUSES: [u8; 8] = [0x1b, 0x43, 0x52, 0x61, 0x9d, 0xc3, 0xd1, 0xdf];

/// Identity of a simulated GPU, as `gpus()` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub node: String,
    pub uuid: GpuUuid,
    /// `modelName` as exported, e.g. `NVIDIA H100 80GB HBM3`.
    pub model: String,
    /// Short model id, e.g. `h100-sxm5-80gb`.
    pub model_id: GpuModel,
    pub index: u32,
    pub pci_bus_id: String,
}

/// The simulated fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    rng: ChaCha8Rng,
    speed: f64,
    fault_rate_multiplier: f64,
    pub(crate) node_names: Vec<String>,
    node_hpc: Vec<bool>,
    pub(crate) gpus: Vec<GpuSim>,
    by_uuid: HashMap<GpuUuid, usize>,
    pub(crate) jobs: BTreeMap<u64, Job>,
    next_job: u64,
    labels: Vec<FaultLabel>,
    label_updates: Vec<FaultLabel>,
    tick_ms: TimestampMs,
    now_ms: TimestampMs,
    /// Length of one step (`TICK_MS` unless `set_step_ms` made it coarser).
    step_ms: i64,
    /// The warning episode each GPU is in, if any (see `faults::Precursor`).
    precursors: Vec<Option<faults::Precursor>>,
    precursor_log: Vec<faults::PrecursorRecord>,
    /// Wear-out state per GPU; empty unless `set_wear_out` turned it on.
    wear: Vec<faults::Wear>,
}

impl Fleet {
    /// Builds the fleet at `config.start_ms` (or [`DEFAULT_START_MS`]) in a steady state:
    /// about three GPUs in four busy, temperatures settled.
    pub fn new(config: &SimConfig) -> Result<Fleet, SimError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let start = config.start_ms.unwrap_or(DEFAULT_START_MS);
        let models = node_models(&config.model_mix, config.nodes);
        let mut gpus = Vec::with_capacity(config.nodes * config.gpus_per_node);
        let mut node_names = Vec::with_capacity(config.nodes);
        let mut node_hpc = Vec::with_capacity(config.nodes);
        for (node, &model) in models.iter().enumerate() {
            node_names.push(format!("simnode-{node:02}"));
            // Every fourth node is a Slurm (HPC) node; L40S boards have little FP64.
            node_hpc.push(node % 4 == 2 && model != GpuModel::L40s);
            let inlet: f64 = rng.random_range(17.5..22.5);
            for i in 0..config.gpus_per_node {
                let uuid = GpuUuid::new(&format!(
                    "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                    rng.random::<u32>(),
                    rng.random::<u16>(),
                    rng.random::<u16>(),
                    rng.random::<u16>(),
                    rng.random::<u64>() & 0xffff_ffff_ffff
                ));
                let bus = PCI_BUSES[i % 8] as usize + (i / 8) * 2;
                let pci = format!("{:08X}:{:02X}:00.0", 0, bus.min(0xff));
                // GPUs further along the air path run a little warmer.
                let ambient = inlet + (i % 4) as f64 * 0.8 + rng.random_range(0.0..1.5);
                gpus.push(GpuSim::new(uuid, node, i as u32, model, pci, ambient));
            }
        }
        let by_uuid = gpus.iter().enumerate().map(|(i, g)| (g.uuid.clone(), i)).collect();
        let mut fleet = Fleet {
            rng,
            speed: config.speed,
            fault_rate_multiplier: config.fault_rate_multiplier,
            node_names,
            node_hpc,
            gpus,
            by_uuid,
            jobs: BTreeMap::new(),
            next_job: 1,
            labels: Vec::new(),
            label_updates: Vec::new(),
            tick_ms: start,
            now_ms: start,
            step_ms: TICK_MS,
            precursors: Vec::new(),
            precursor_log: Vec::new(),
            wear: Vec::new(),
        };
        fleet.precursors = vec![None; fleet.gpus.len()];
        // Fill the fleet as a running cluster would be, then settle temperatures.
        for gi in 0..fleet.gpus.len() {
            if fleet.gpus[gi].job.is_none() && fleet.rng.random::<f64>() < 0.65 {
                fleet.start_job(gi, start);
            }
        }
        fleet.step_gpus(start, 0);
        for g in &mut fleet.gpus {
            g.gpu_temp_c = g.equilibrium_temp(g.power_w) + if g.act.busy { 6.0 } else { 0.0 };
            let spec = g.model.spec();
            if let Some((o, r)) = spec.mem_temp {
                g.mem_temp_c = g.ambient_c + o + r * g.power_w;
            }
            // Energy since boot: a few days of uptime at a middling draw.
            g.energy_mj = fleet.rng.random_range(2.0..10.0) * 86_400.0 * g.power_w * 1000.0;
        }
        for gi in 0..fleet.gpus.len() {
            fleet.refresh_labels(gi);
        }
        Ok(fleet)
    }

    /// Current simulated time (the latest `advance_to`).
    pub fn now_ms(&self) -> TimestampMs {
        self.now_ms
    }

    /// Simulated ms per wall ms; pages carry explicit timestamps when it is not 1.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn node_count(&self) -> usize {
        self.node_names.len()
    }

    pub fn node_names(&self) -> &[String] {
        &self.node_names
    }

    /// Makes every step `ms` long (a whole number of seconds, 1 s to 10 min) instead of
    /// 1 s. For long histories (training a failure predictor on weeks of a fleet): the
    /// physics relaxes exponentially and the fault draws scale with the step, so a coarse
    /// step changes detail (short bursts, checkpoint dips) but not rates.
    pub fn set_step_ms(&mut self, ms: i64) {
        self.step_ms = (ms.clamp(TICK_MS, 600_000) / TICK_MS) * TICK_MS;
    }

    /// Length of one step (see [`Fleet::set_step_ms`]): callers that read the fleet once
    /// per step advance by this, so every read falls on a tick.
    pub fn step_ms(&self) -> i64 {
        self.step_ms
    }

    /// Turns on wear-out (see `faults::Wear`): a few percent of boards degrade, leak
    /// chronic correctable errors and carry most of the hard-failure hazard. Off by
    /// default so existing fleets (and their tests) keep their random streams; the
    /// failure predictor's histories turn it on. The fleet starts in the steady state
    /// (about 5% worn).
    pub fn set_wear_out(&mut self) {
        let steady = faults::WEAR_ONSET_PER_GPU_YEAR
            / (faults::WEAR_ONSET_PER_GPU_YEAR
                + faults::WORN_HAZARD
                    * FaultKind::ALL
                        .iter()
                        .filter(|k| faults::is_hard(**k))
                        .map(|k| faults::default_rate_per_gpu_year(*k))
                        .sum::<f64>());
        self.wear = (0..self.gpus.len())
            .map(|_| {
                let mut w = faults::new_wear(&mut self.rng);
                if self.rng.random::<f64>() < steady {
                    faults::begin_wear(&mut w, &mut self.rng);
                }
                w
            })
            .collect();
    }

    /// Ground truth of GPU `gi`'s failure risk, which no telemetry shows directly: its
    /// hard-failure hazard multiplier from wear (1 with wear-out off) and the precursor
    /// episode it is in, if any. For measuring how much a predictor could know.
    pub fn risk_truth(&self, gi: usize) -> (f64, Option<&faults::Precursor>) {
        (
            self.wear.get(gi).map_or(1.0, faults::wear_hazard),
            self.precursors.get(gi).and_then(Option::as_ref),
        )
    }

    /// With wear-out on, how long hard failure `kind` keeps GPU `gi` out of service
    /// before a reset or reboot brings it back, or `None` when it does not come back
    /// (`faults::repair_ms`). With wear-out off hard failures last until the simulator
    /// stops (or an API call ends them), as before, and no random number is drawn.
    fn repair_duration(&mut self, gi: usize, kind: FaultKind) -> Option<i64> {
        let w = self.wear.get_mut(gi)?;
        let previous = w.hard_failures;
        w.hard_failures += 1;
        faults::repair_ms(kind, previous, &mut self.rng)
    }

    /// True while GPU `gi` is out of service with a hard failure (`faults::is_hard`).
    pub fn in_hard_failure(&self, gi: usize) -> bool {
        self.gpus
            .get(gi)
            .is_some_and(|g| g.faults.iter().any(|f| faults::is_hard(f.kind)))
    }

    /// Every precursor episode so far (warnings before failures, and benign ones).
    pub fn precursors(&self) -> &[faults::PrecursorRecord] {
        &self.precursor_log
    }

    /// Moves simulated time forward to `sim_ms`, one step at a time. Going backwards
    /// does nothing.
    pub fn advance_to(&mut self, sim_ms: TimestampMs) {
        if sim_ms - self.tick_ms > MAX_CATCH_UP_MS {
            self.tick_ms = sim_ms - MAX_CATCH_UP_MS;
        }
        while self.tick_ms + self.step_ms <= sim_ms {
            self.tick_ms += self.step_ms;
            self.tick(self.tick_ms);
        }
        self.now_ms = self.now_ms.max(sim_ms);
    }

    /// Renders node `node`'s page as dcgm-exporter would, appending to `out`.
    /// An unknown node renders nothing.
    pub fn render_node(&self, node: usize, out: &mut String) {
        render::render_node(self, node, out);
    }

    /// Every fault label so far, random and injected, in start order.
    pub fn labels(&self) -> &[FaultLabel] {
        &self.labels
    }

    /// Labels created or ended since the last call (for the JSONL file): a label appears
    /// once when it starts and again when it ends.
    pub fn take_label_updates(&mut self) -> Vec<FaultLabel> {
        std::mem::take(&mut self.label_updates)
    }

    /// Every GPU of the fleet, in node then index order.
    pub fn gpus(&self) -> Vec<GpuInfo> {
        self.gpus
            .iter()
            .map(|g| GpuInfo {
                node: self.node_names[g.node].clone(),
                uuid: g.uuid.clone(),
                model: g.model.spec().model_name.to_string(),
                model_id: g.model,
                index: g.index,
                pci_bus_id: g.pci_bus_id.clone(),
            })
            .collect()
    }

    /// The value `field` of GPU number `gpu` (as in `gpus()`) would be exported with,
    /// `None` when it would not be exported (GPU off the bus, field unsupported).
    pub fn value(&self, gpu: usize, field: DcgmField) -> Option<f64> {
        let g = self.gpus.get(gpu)?;
        if !g.present() {
            return None;
        }
        render::field_value(g, field).map(|v| v.as_f64())
    }

    /// The workload labels of GPU number `gpu`, if a job holds it.
    pub fn workload(&self, gpu: usize) -> Option<&Workload> {
        let job = self.gpus.get(gpu)?.job?;
        self.jobs.get(&job).map(|j| &j.workload)
    }

    /// Injects `kind` on `gpu` now (advancing to `now_ms` first), for the kind's default
    /// duration. See [`Fleet::inject_for`].
    pub fn inject(&mut self, gpu: &GpuUuid, kind: FaultKind, now_ms: TimestampMs) -> Result<FaultLabel, SimError> {
        self.inject_for(gpu, kind, now_ms, faults::default_injected_duration_ms(kind))
    }

    /// Injects `kind` on `gpu` at `now_ms`, lasting `duration_ms` (`None` = until the
    /// simulator stops). Returns the ground-truth label.
    pub fn inject_for(
        &mut self,
        gpu: &GpuUuid,
        kind: FaultKind,
        now_ms: TimestampMs,
        duration_ms: Option<i64>,
    ) -> Result<FaultLabel, SimError> {
        let gi = *self
            .by_uuid
            .get(gpu)
            .ok_or_else(|| SimError::GpuNotFound(gpu.clone()))?;
        self.advance_to(now_ms);
        let now = self.now_ms;
        self.start_fault(gi, kind, now, duration_ms.map(|d| d.max(TICK_MS)), true)
    }

    fn tick(&mut self, now: TimestampMs) {
        self.end_expired(now);
        self.mature_precursors(now);
        self.draw_random_faults(now);
        self.schedule(now);
        self.step_gpus(now, self.step_ms);
    }

    /// Ends precursor episodes whose time has come: a warning turns into its failure, a
    /// benign episode just stops.
    fn mature_precursors(&mut self, now: TimestampMs) {
        for gi in 0..self.gpus.len() {
            if self.precursors[gi].as_ref().is_none_or(|p| p.end_ms > now) {
                continue;
            }
            let Some(p) = self.precursors[gi].take() else { continue };
            faults::end_precursor(&p, &mut self.gpus[gi].errors);
            if let Some(kind) = p.target {
                let dur = self.repair_duration(gi, kind);
                let _ = self.start_fault(gi, kind, now, dur, false);
            }
        }
    }

    fn begin_precursor(&mut self, gi: usize, p: faults::Precursor) {
        self.precursor_log.push(faults::PrecursorRecord {
            gpu: self.gpus[gi].uuid.clone(),
            precursor: p.clone(),
        });
        self.precursors[gi] = Some(p);
    }

    fn end_expired(&mut self, now: TimestampMs) {
        let done: Vec<u64> = self
            .jobs
            .values()
            .filter(|j| j.end_ms.is_some_and(|e| e <= now))
            .map(|j| j.id)
            .collect();
        for id in done {
            self.end_job(id);
        }
        for gi in 0..self.gpus.len() {
            while let Some(pos) = self.gpus[gi]
                .faults
                .iter()
                .position(|f| f.end_ms.is_some_and(|e| e <= now))
            {
                let f = self.gpus[gi].faults.remove(pos);
                let g = &mut self.gpus[gi];
                faults::end(&f, &mut g.errors);
                let label = &mut self.labels[f.label];
                label.end_ms = f.end_ms;
                self.label_updates.push(label.clone());
                if let Some(job) = f.job {
                    self.end_job(job);
                }
            }
        }
    }

    fn draw_random_faults(&mut self, now: TimestampMs) {
        if self.fault_rate_multiplier <= 0.0 {
            return;
        }
        let per_tick = self.fault_rate_multiplier * self.step_ms as f64 / YEAR_MS;
        for gi in 0..self.gpus.len() {
            let g = &self.gpus[gi];
            if !g.present() || !g.faults.is_empty() {
                continue;
            }
            // A GPU in a warning episode can still get other faults, but not a second
            // episode.
            let in_episode = self.precursors[gi].is_some();
            let spec = g.model.spec();
            // Kinds without a rate (planted on purpose only) are never drawn.
            let kinds = FaultKind::ALL
                .iter()
                .filter(|k| faults::applicable(**k, spec).is_ok() && faults::default_rate_per_gpu_year(**k) > 0.0);
            // Hard failures scale with the board's wear (1 when wear-out is off).
            let hazard = self.wear.get(gi).map_or(1.0, faults::wear_hazard);
            let rate =
                |k: FaultKind| faults::default_rate_per_gpu_year(k) * if faults::is_hard(k) { hazard } else { 1.0 };
            let total: f64 = kinds.clone().map(|k| rate(*k)).sum();
            if let Some(w) = self.wear.get_mut(gi) {
                if w.worn == 0.0 && self.rng.random::<f64>() < faults::WEAR_ONSET_PER_GPU_YEAR * per_tick {
                    faults::begin_wear(w, &mut self.rng);
                }
            }
            let u: f64 = self.rng.random();
            if u >= total * per_tick {
                // Past the faults' share: maybe a benign warning-like episode.
                if !in_episode && u < (total + faults::BENIGN_PRECURSOR_RATE_PER_GPU_YEAR) * per_tick {
                    let p = faults::benign_precursor(now, &mut self.rng);
                    self.begin_precursor(gi, p);
                }
                continue;
            }
            // Pick the kind in proportion to its rate, reusing u.
            let mut x = u / per_tick;
            let mut kind = FaultKind::AppXid;
            for k in kinds {
                x -= rate(*k);
                kind = *k;
                if x < 0.0 {
                    break;
                }
            }
            // Some hard failures announce themselves hours ahead; the fault starts when
            // the warning has run its course (`mature_precursors`).
            if !in_episode {
                if let Some(p) = faults::warning_before(kind, now, &mut self.rng) {
                    self.begin_precursor(gi, p);
                    continue;
                }
            }
            let dur = if faults::is_hard(kind) {
                self.repair_duration(gi, kind)
            } else {
                faults::random_duration_ms(kind, &mut self.rng)
            };
            // Only fails for reasons filtered out above.
            let _ = self.start_fault(gi, kind, now, dur, false);
        }
    }

    fn schedule(&mut self, now: TimestampMs) {
        let p = self.step_ms as f64 / MEAN_IDLE_MS;
        for gi in 0..self.gpus.len() {
            let g = &self.gpus[gi];
            if g.job.is_some() || !g.present() {
                continue;
            }
            if self.rng.random::<f64>() < p {
                self.start_job(gi, now);
            }
        }
    }

    /// Starts a scheduler job on idle GPU `gi`, taking more idle GPUs of its node if the
    /// job wants them.
    fn start_job(&mut self, gi: usize, now: TimestampMs) {
        let node = self.gpus[gi].node;
        let profile = if self.node_hpc[node] {
            Profile::Hpc
        } else if self.rng.random::<f64>() < 0.6 {
            Profile::Training
        } else {
            Profile::Inference
        };
        let free: Vec<usize> = self
            .gpus
            .iter()
            .enumerate()
            .filter(|(i, g)| *i != gi && g.node == node && g.job.is_none() && g.present())
            .map(|(i, _)| i)
            .collect();
        let want = match profile {
            Profile::Hpc => free.len() + 1,
            Profile::Training => [1, 2, 4, 8][self.rng.random_range(0..4)],
            _ => 1 + usize::from(self.rng.random::<f64>() < 0.2),
        };
        let mut members = vec![gi];
        members.extend(free.into_iter().take(want.saturating_sub(1)));
        let id = self.next_job_id();
        let job = workload::draw_job(&mut self.rng, id, profile, node, members, now);
        self.install_job(job);
    }

    fn next_job_id(&mut self) -> u64 {
        let id = self.next_job;
        self.next_job += 1;
        id
    }

    fn install_job(&mut self, job: Job) {
        for &g in &job.gpus {
            self.release_gpu(g);
            self.gpus[g].job = Some(job.id);
            self.gpus[g].dyn_state.burst_on = false;
            self.gpus[g].dyn_state.burst_flip_ms = job.start_ms;
        }
        let gpus = job.gpus.clone();
        self.jobs.insert(job.id, job);
        for g in gpus {
            self.refresh_labels(g);
        }
    }

    /// Takes GPU `gi` out of whatever job holds it (the job goes on with the rest).
    fn release_gpu(&mut self, gi: usize) {
        if let Some(id) = self.gpus[gi].job.take() {
            if let Some(job) = self.jobs.get_mut(&id) {
                job.gpus.retain(|&g| g != gi);
                if job.gpus.is_empty() {
                    self.jobs.remove(&id);
                }
            }
            self.refresh_labels(gi);
        }
    }

    fn end_job(&mut self, id: u64) {
        if let Some(job) = self.jobs.remove(&id) {
            for g in job.gpus {
                self.gpus[g].job = None;
                self.refresh_labels(g);
            }
        }
    }

    fn refresh_labels(&mut self, gi: usize) {
        let g = &self.gpus[gi];
        let job = g.job.and_then(|id| self.jobs.get(&id));
        let mut text = String::with_capacity(g.label_text.len().max(160));
        render::write_label_set(g, &self.node_names[g.node], job.map(|j| &j.workload), &mut text);
        self.gpus[gi].label_text = text;
    }

    fn start_fault(
        &mut self,
        gi: usize,
        kind: FaultKind,
        now: TimestampMs,
        duration_ms: Option<i64>,
        injected: bool,
    ) -> Result<FaultLabel, SimError> {
        let g = &self.gpus[gi];
        let uuid = g.uuid.clone();
        if !g.present() {
            return Err(SimError::NotApplicable {
                gpu: uuid,
                kind,
                reason: "the GPU has fallen off the bus",
            });
        }
        if g.faults.iter().any(|f| f.kind == kind) {
            return Err(SimError::AlreadyActive { gpu: uuid, kind });
        }
        faults::applicable(kind, g.model.spec()).map_err(|reason| SimError::NotApplicable {
            gpu: uuid.clone(),
            kind,
            reason,
        })?;
        let node = g.node;
        let label = FaultLabel {
            gpu: uuid,
            node: self.node_names[node].clone(),
            kind,
            start_ms: now,
            end_ms: None,
            injected,
        };
        let mut fault = ActiveFault {
            kind,
            label: self.labels.len(),
            start_ms: now,
            end_ms: duration_ms.map(|d| now + d),
            stage: 0,
            factor: 1.0,
            job: None,
        };
        match kind {
            // The crashed process (XID 13/31/43) or the lost GPU (XID 79) takes its
            // whole job down: one dead rank stops a collective.
            FaultKind::AppXid | FaultKind::FallenOffBus => {
                if let Some(id) = self.gpus[gi].job {
                    self.end_job(id);
                }
            }
            FaultKind::Straggler => {
                fault.factor = self.rng.random_range(0.55..0.7);
                // A straggler only shows against peers in the same job: if the GPU is
                // idle, start a node-wide training job around it.
                if self.gpus[gi].job.is_none() {
                    let id = self.plant_training(gi, now);
                    fault.job = Some(id);
                }
            }
            FaultKind::Miner | FaultKind::MinerThrottled => {
                let profile = if kind == FaultKind::Miner {
                    Profile::Miner
                } else {
                    Profile::MinerThrottled
                };
                let id = self.next_job_id();
                let mut job = workload::draw_job(&mut self.rng, id, profile, node, vec![gi], now);
                job.end_ms = None;
                // Half hide as "ghost" use (no pod at all), half run in a rogue namespace.
                if self.rng.random::<f64>() < 0.5 {
                    let ns = UNAPPROVED_NAMESPACES[self.rng.random_range(0..UNAPPROVED_NAMESPACES.len())];
                    job.workload = Workload {
                        namespace: Some(ns.into()),
                        pod: Some(format!("data-prep-{:05x}", self.rng.random_range(0x10000..0xfffffu32))),
                        container: Some("worker".into()),
                        job: None,
                        account: None,
                    };
                }
                self.install_job(job);
                fault.job = Some(id);
            }
            FaultKind::MinerInJob => {
                // The miner takes the GPU out of its job but keeps the job's labels: the
                // exporter still attributes the GPU to the same pod.
                let Some(workload) = self.gpus[gi]
                    .job
                    .and_then(|id| self.jobs.get(&id))
                    .map(|j| j.workload.clone())
                    .filter(|w| !w.is_empty())
                else {
                    return Err(SimError::NotApplicable {
                        gpu: label.gpu,
                        kind,
                        reason: "the GPU runs no labelled job for a miner to hide in",
                    });
                };
                let id = self.next_job_id();
                let mut job = workload::draw_job(&mut self.rng, id, Profile::Miner, node, vec![gi], now);
                job.end_ms = None;
                job.workload = workload;
                self.install_job(job);
                fault.job = Some(id);
            }
            FaultKind::UnapprovedNamespace => {
                let id = self.next_job_id();
                let profile = if self.rng.random::<f64>() < 0.6 {
                    Profile::Training
                } else {
                    Profile::Inference
                };
                let mut job = workload::draw_job(&mut self.rng, id, profile, node, vec![gi], now);
                job.end_ms = None;
                job.workload.namespace =
                    Some(UNAPPROVED_NAMESPACES[self.rng.random_range(0..UNAPPROVED_NAMESPACES.len())].into());
                self.install_job(job);
                fault.job = Some(id);
            }
            _ => {}
        }
        // Immediate effects (the XID of an app crash, a remap failure) show on the very
        // next scrape rather than a tick later.
        let g = &mut self.gpus[gi];
        faults::tick(
            &mut fault,
            &mut g.errors,
            &mut Effects::default(),
            now,
            0,
            &mut self.rng,
        );
        g.faults.push(fault);
        self.labels.push(label.clone());
        self.label_updates.push(label.clone());
        Ok(label)
    }

    /// Starts a heavy training job on `gi` and every idle GPU of its node.
    fn plant_training(&mut self, gi: usize, now: TimestampMs) -> u64 {
        let node = self.gpus[gi].node;
        let mut members = vec![gi];
        members.extend(
            (0..self.gpus.len()).filter(|&i| i != gi && self.gpus[i].node == node && self.gpus[i].job.is_none()),
        );
        let id = self.next_job_id();
        let mut job = workload::draw_job(&mut self.rng, id, Profile::Training, node, members, now);
        job.end_ms = None;
        job.intensity = job.intensity.max(0.7);
        self.install_job(job);
        id
    }

    fn step_gpus(&mut self, now: TimestampMs, dt_ms: i64) {
        for gi in 0..self.gpus.len() {
            let g = &mut self.gpus[gi];
            if !g.present() {
                continue;
            }
            let job = g.job.and_then(|id| self.jobs.get(&id));
            let act = workload::activity(job, g.model.spec(), &mut g.dyn_state, now, dt_ms, &mut self.rng);
            let mut fx = Effects::default();
            if let Some(p) = &self.precursors[gi] {
                faults::tick_precursor(p, &mut g.errors, now, dt_ms, &mut self.rng);
            }
            if let Some(w) = self.wear.get(gi) {
                faults::tick_wear(w, &mut g.errors, dt_ms, &mut self.rng);
            }
            for f in &mut g.faults {
                faults::tick(f, &mut g.errors, &mut fx, now, dt_ms, &mut self.rng);
            }
            g.step(act, &fx, dt_ms.max(1), &mut self.rng);
        }
    }
}
