//! Workload profiles (idle, training, inference, HPC, and the miners the abuse scenarios
//! plant) and what each makes a GPU do, tick by tick.
//!
//! A job holds one or more GPUs of one node and carries the Kubernetes pod or HPC job
//! labels dcgm-exporter attaches. Per-job parameters (intensity, memory footprint,
//! checkpoint cadence) are drawn when the job starts so that the fleet shows the spread
//! of real clusters: AcmeTrace's A100 clusters have a quarter of samples idle, and busy
//! GPUs split between lightly used ones (~100 W, SM active < 30%) and heavy ones
//! (300–400 W). See `docs/simulator.md` for the calibration.

use crate::models::ModelSpec;
use gpuwarden_model::{TimestampMs, Workload};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal, StandardNormal};
use serde::{Deserialize, Serialize};

/// Kubernetes namespaces the fleet's policy approves.
pub const APPROVED_NAMESPACES: &[&str] = &["ml-training", "inference", "research"];
/// Namespaces the abuse scenarios use: not in [`APPROVED_NAMESPACES`].
pub const UNAPPROVED_NAMESPACES: &[&str] = &["crypto-free", "scratch-tmp", "personal-dev"];

/// What a job does to its GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Data-parallel training: steady, heavy NVLink all-reduce, periodic checkpoint dips.
    Training,
    /// Serving: bursty SM activity following request load, PCIe both ways.
    Inference,
    /// HPC (Slurm) job: FP64 heavy, steady, halo exchange over NVLink.
    Hpc,
    /// Cryptominer: flat full activity and power, no interconnect traffic.
    Miner,
    /// Cryptominer that toggles on and off (~50% duty) to hide.
    MinerThrottled,
}

/// A running job.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: u64,
    pub profile: Profile,
    pub workload: Workload,
    pub node: usize,
    /// Global GPU indices held.
    pub gpus: Vec<usize>,
    pub start_ms: TimestampMs,
    /// When the scheduler ends it; `None` = when the fault that planted it ends.
    pub end_ms: Option<TimestampMs>,
    /// Target SM activity when running flat out (0..1).
    pub intensity: f64,
    /// Framebuffer footprint as a fraction of the board's memory.
    pub fb_frac: f64,
    /// Training: checkpoint every `period`, lasting `len` (ms); miner-throttled: duty period.
    pub period_ms: i64,
    pub len_ms: i64,
    pub phase_ms: i64,
    /// DRAM activity per unit of SM activity, and tensor-pipe share.
    pub dram_ratio: f64,
    pub tensor_ratio: f64,
    /// Fraction of interconnect bandwidth used at full activity.
    pub nvlink_frac: f64,
    pub pcie_frac: f64,
    /// Miner: fixed fraction of TDP it settles at (miners tune the power limit).
    pub power_frac: f64,
}

/// What a GPU does during one tick, before faults and power/thermal limits apply.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Activity {
    pub busy: bool,
    pub sm_active: f64,
    pub sm_occupancy: f64,
    pub tensor: f64,
    pub dram: f64,
    pub fp64: f64,
    pub fp32: f64,
    pub fp16: f64,
    pub gpu_util: f64,
    pub pcie_tx_bps: f64,
    pub pcie_rx_bps: f64,
    pub nvlink_tx_bps: f64,
    pub nvlink_rx_bps: f64,
    pub fb_frac: f64,
    /// Forces board power to this fraction of TDP (miners), else derived from activity.
    pub power_frac: Option<f64>,
}

/// Per-GPU state of the workload dynamics (slow drift and inference bursts).
#[derive(Debug, Clone, Default)]
pub struct WorkloadDyn {
    /// AR(1) slow drift, unit variance, correlation time ~ 1 min.
    pub drift: f64,
    /// Inference: in a burst of requests, and when that state flips.
    pub burst_on: bool,
    pub burst_flip_ms: TimestampMs,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample::<f64, _>(StandardNormal)
}

fn clamp01(x: f64) -> f64 {
    x.clamp(0.0, 1.0)
}

/// Draws a scheduler job's profile-specific parameters. `size` GPUs are taken by the
/// caller. Durations: log-normal, medians of 1–3 h as in AcmeTrace/Philly GPU job traces
/// (weighted by GPU time, which is what a GPU sample sees).
pub fn draw_job(
    rng: &mut ChaCha8Rng,
    id: u64,
    profile: Profile,
    node: usize,
    gpus: Vec<usize>,
    now: TimestampMs,
) -> Job {
    let (median_h, sigma) = match profile {
        Profile::Training => (3.0, 0.9),
        Profile::Inference => (2.0, 0.8),
        Profile::Hpc => (1.0, 0.8),
        Profile::Miner | Profile::MinerThrottled => (4.0, 0.5),
    };
    let dur_h = LogNormal::new(f64::ln(median_h), sigma)
        .map(|d| d.sample(rng))
        .unwrap_or(median_h);
    let end = now + (dur_h.clamp(0.05, 48.0) * 3_600_000.0) as i64;
    // Light jobs: GPU allocated and "busy" but starved (input-bound, debugging, small
    // models). AcmeTrace: GPU_UTIL median 98% while SM_ACTIVE median is 33–50%.
    let light = rng.random::<f64>() < 0.55;
    let intensity = match profile {
        Profile::Training if light => rng.random_range(0.03..0.55),
        Profile::Training => rng.random_range(0.6..0.95),
        Profile::Inference => rng.random_range(0.35..0.95),
        Profile::Hpc if light => rng.random_range(0.08..0.35),
        Profile::Hpc => rng.random_range(0.75..0.97),
        Profile::Miner | Profile::MinerThrottled => rng.random_range(0.97..1.0),
    };
    let fb_frac = match profile {
        Profile::Training => rng.random_range(0.45..0.97),
        Profile::Inference => rng.random_range(0.30..0.75),
        Profile::Hpc => rng.random_range(0.25..0.80),
        Profile::Miner | Profile::MinerThrottled => rng.random_range(0.06..0.12),
    };
    let (period_ms, len_ms) = match profile {
        Profile::Training => (rng.random_range(15..45) * 60_000, rng.random_range(30..120) * 1000),
        Profile::MinerThrottled => (rng.random_range(45..90) * 1000, 0),
        _ => (0, 0),
    };
    let phase_ms = if period_ms > 0 {
        rng.random_range(0..period_ms)
    } else {
        0
    };
    let workload = workload_labels(rng, id, profile, gpus.len());
    Job {
        id,
        profile,
        workload,
        node,
        gpus,
        start_ms: now,
        end_ms: Some(end),
        intensity,
        fb_frac,
        period_ms,
        len_ms,
        phase_ms,
        dram_ratio: match profile {
            Profile::Hpc => rng.random_range(0.55..0.8),
            Profile::Miner | Profile::MinerThrottled => rng.random_range(0.85..0.95),
            _ => rng.random_range(0.3..0.6),
        },
        // Light jobs barely touch the tensor cores (and so draw little power).
        tensor_ratio: match profile {
            Profile::Training if light => rng.random_range(0.0..0.15),
            Profile::Training => rng.random_range(0.6..0.95),
            Profile::Inference => rng.random_range(0.2..0.5),
            Profile::Hpc => rng.random_range(0.0..0.05),
            Profile::Miner | Profile::MinerThrottled => 0.0,
        },
        nvlink_frac: match profile {
            Profile::Training => rng.random_range(0.08..0.35),
            Profile::Inference => rng.random_range(0.0..0.03),
            Profile::Hpc => rng.random_range(0.05..0.2),
            Profile::Miner | Profile::MinerThrottled => 0.0,
        },
        pcie_frac: match profile {
            Profile::Training => rng.random_range(0.02..0.08),
            Profile::Inference => rng.random_range(0.03..0.15),
            Profile::Hpc => rng.random_range(0.005..0.03),
            Profile::Miner | Profile::MinerThrottled => 0.0,
        },
        power_frac: rng.random_range(0.62..0.78),
    }
}

/// Kubernetes pod labels for ML work, an HPC job id for HPC work. Miners get labels
/// from the fault that plants them.
fn workload_labels(rng: &mut ChaCha8Rng, id: u64, profile: Profile, size: usize) -> Workload {
    let suffix: u32 = rng.random_range(0x10000..0xfffff);
    match profile {
        Profile::Training => {
            let ns = if rng.random::<f64>() < 0.7 {
                "ml-training"
            } else {
                "research"
            };
            Workload {
                namespace: Some(ns.into()),
                pod: Some(format!("train-{id}-{suffix:05x}-{size}g")),
                container: Some("trainer".into()),
                job: None,
                account: None,
            }
        }
        Profile::Inference => Workload {
            namespace: Some("inference".into()),
            pod: Some(format!("serve-{id}-{suffix:05x}")),
            container: Some("server".into()),
            job: None,
            account: None,
        },
        Profile::Hpc => Workload {
            job: Some(format!("{}", 180_000 + id)),
            ..Workload::default()
        },
        Profile::Miner | Profile::MinerThrottled => Workload::default(),
    }
}

/// True while a training job is writing a checkpoint (GPUs nearly idle).
fn in_checkpoint(job: &Job, now: TimestampMs) -> bool {
    job.period_ms > 0 && (now - job.start_ms + job.phase_ms).rem_euclid(job.period_ms) < job.len_ms
}

/// One tick of a GPU's activity under `job` (or idle).
pub fn activity(
    job: Option<&Job>,
    spec: &ModelSpec,
    dy: &mut WorkloadDyn,
    now: TimestampMs,
    dt_ms: i64,
    rng: &mut ChaCha8Rng,
) -> Activity {
    // Slow drift: AR(1) with ~60 s correlation, so values wander instead of jittering.
    let a = (-(dt_ms as f64) / 60_000.0).exp();
    dy.drift = a * dy.drift + (1.0 - a * a).sqrt() * normal(rng);
    let n = normal(rng);
    let Some(job) = job else {
        return Activity::default();
    };
    let nv_bw = spec.nvlink_bytes_per_s;
    let pcie_bw = spec.pcie_bytes_per_s;
    let mut act = Activity {
        busy: true,
        fb_frac: job.fb_frac,
        gpu_util: 100.0,
        ..Activity::default()
    };
    match job.profile {
        Profile::Training | Profile::Hpc => {
            let ckpt = job.profile == Profile::Training && in_checkpoint(job, now);
            let sm = if ckpt {
                0.02 + 0.01 * n.abs()
            } else {
                clamp01(job.intensity * (1.0 + 0.04 * dy.drift + 0.015 * n))
            };
            act.sm_active = sm;
            act.dram = clamp01(sm * job.dram_ratio * (1.0 + 0.03 * n));
            act.tensor = clamp01(sm * job.tensor_ratio);
            if job.profile == Profile::Hpc {
                act.fp64 = clamp01(sm * 0.75);
                act.fp32 = clamp01(sm * 0.15);
            } else {
                act.fp16 = clamp01(sm * 0.12);
                act.fp32 = clamp01(sm * 0.18);
            }
            // All-reduce traffic scales with how hard the job computes.
            let link = if ckpt { 0.0 } else { job.nvlink_frac * sm };
            act.nvlink_tx_bps = nv_bw * link * (1.0 + 0.05 * n).max(0.0);
            act.nvlink_rx_bps = act.nvlink_tx_bps * (1.0 + 0.01 * dy.drift);
            // Checkpoints stream weights to host: PCIe TX spikes while SMs rest.
            let jitter = (1.0 + 0.1 * dy.drift + 0.05 * n).max(0.0);
            act.pcie_tx_bps = pcie_bw * jitter * if ckpt { 0.4 } else { job.pcie_frac * 0.3 };
            act.pcie_rx_bps = pcie_bw * jitter * if ckpt { 0.02 } else { job.pcie_frac };
            act.gpu_util = if ckpt {
                rng.random_range(0.0..20.0)
            } else {
                100.0 - (3.0 * n.abs()).min(5.0)
            };
        }
        Profile::Inference => {
            if now >= dy.burst_flip_ms {
                dy.burst_on = !dy.burst_on;
                let mean_s = if dy.burst_on { 25.0 } else { 12.0 };
                let d = Exp::new(1.0 / mean_s).map(|e| e.sample(rng)).unwrap_or(mean_s);
                dy.burst_flip_ms = now + (d * 1000.0) as i64 + 1000;
            }
            let load = if dy.burst_on {
                job.intensity * (0.7 + 0.3 * rng.random::<f64>())
            } else {
                0.04
            };
            let sm = clamp01(load * (1.0 + 0.1 * dy.drift));
            act.sm_active = sm;
            act.dram = clamp01(sm * job.dram_ratio);
            act.tensor = clamp01(sm * job.tensor_ratio);
            act.fp16 = clamp01(sm * 0.2);
            act.fp32 = clamp01(sm * 0.1);
            act.nvlink_tx_bps = nv_bw * job.nvlink_frac * sm;
            act.nvlink_rx_bps = act.nvlink_tx_bps;
            act.pcie_rx_bps = pcie_bw * job.pcie_frac * (0.2 + sm);
            act.pcie_tx_bps = act.pcie_rx_bps * 0.6;
            act.gpu_util = if dy.burst_on {
                100.0
            } else {
                rng.random_range(5.0..40.0)
            };
        }
        Profile::Miner | Profile::MinerThrottled => {
            let on = job.profile == Profile::Miner
                || (now - job.start_ms + job.phase_ms).rem_euclid(job.period_ms.max(1)) < job.period_ms / 2;
            if !on {
                // Off phase: the process sleeps but keeps its memory.
                act.busy = false;
                act.gpu_util = 0.0;
                return act;
            }
            act.sm_active = clamp01(job.intensity + 0.003 * n);
            act.dram = clamp01(job.dram_ratio + 0.005 * n);
            act.fp32 = 0.55;
            act.fp16 = 0.0;
            act.power_frac = Some(job.power_frac * (1.0 + 0.004 * n));
            // Only the miner's share submissions cross PCIe: a few KB/s.
            act.pcie_tx_bps = 2_000.0 + 500.0 * n.abs();
            act.pcie_rx_bps = 3_000.0 + 500.0 * n.abs();
        }
    }
    act.sm_occupancy = clamp01(act.sm_active * (0.28 + 0.04 * dy.drift));
    act
}
