//! Every fault kind changes the right fields on the right GPU, and is labelled.

mod common;

use gpuwarden_model::DcgmField as F;
use gpuwarden_sim::workload::{APPROVED_NAMESPACES, UNAPPROVED_NAMESPACES};
use gpuwarden_sim::{FaultKind, Fleet, SimConfig};

const GPU: usize = 3; // node 0 (A100), index 3
const PEER: usize = 5;

fn fleet() -> Fleet {
    Fleet::new(&SimConfig {
        fault_rate_multiplier: 0.0,
        seed: 11,
        ..SimConfig::default()
    })
    .unwrap()
}

fn v(f: &Fleet, gpu: usize, field: F) -> f64 {
    f.value(gpu, field)
        .unwrap_or_else(|| panic!("{field} missing for GPU {gpu}"))
}

fn inject(f: &mut Fleet, gpu: usize, kind: FaultKind) -> i64 {
    let uuid = f.gpus()[gpu].uuid.clone();
    let now = f.now_ms();
    let label = f.inject(&uuid, kind, now).unwrap();
    assert_eq!(
        (label.kind, label.gpu, label.injected, label.end_ms),
        (kind, uuid, true, None)
    );
    now
}

fn page_has(f: &Fleet, node: usize, uuid: &str) -> bool {
    let mut s = String::new();
    f.render_node(node, &mut s);
    s.contains(uuid)
}

#[test]
fn ecc_dbe_storm_then_dbe_xid48_then_remap() {
    let mut f = fleet();
    let t0 = inject(&mut f, GPU, FaultKind::EccDbe);
    f.advance_to(t0 + 60_000);
    assert!(v(&f, GPU, F::EccSbeVolTotal) > 500.0, "single-bit storm");
    assert_eq!(v(&f, GPU, F::EccDbeVolTotal), 0.0);
    f.advance_to(t0 + 121_000);
    assert_eq!(v(&f, GPU, F::EccDbeVolTotal), 1.0);
    assert_eq!(v(&f, GPU, F::EccDbeAggTotal), 1.0);
    assert_eq!(v(&f, GPU, F::XidErrors), 48.0);
    f.advance_to(t0 + 130_000);
    assert_eq!(v(&f, GPU, F::XidErrors), 63.0);
    assert_eq!(v(&f, GPU, F::UncorrectableRemappedRows), 1.0);
    assert_eq!(v(&f, GPU, F::RowRemapPending), 1.0);
    // The XID gauge never resets by itself, and peers are untouched.
    f.advance_to(t0 + 3_600_000);
    assert_eq!(v(&f, GPU, F::XidErrors), 63.0);
    assert_eq!(v(&f, PEER, F::EccSbeVolTotal), 0.0);
    assert_eq!(v(&f, PEER, F::XidErrors), 0.0);
}

#[test]
fn row_remap_failure_sets_xid64_and_flag() {
    let mut f = fleet();
    inject(&mut f, GPU, FaultKind::RowRemapFailure);
    assert_eq!(v(&f, GPU, F::XidErrors), 64.0);
    assert_eq!(v(&f, GPU, F::RowRemapFailure), 1.0);
    assert_eq!(v(&f, PEER, F::RowRemapFailure), 0.0);
}

#[test]
fn fallen_off_bus_shows_xid79_then_vanishes() {
    let mut f = fleet();
    let uuid = f.gpus()[GPU].uuid.to_string();
    let peer = f.gpus()[PEER].uuid.to_string();
    let t0 = inject(&mut f, GPU, FaultKind::FallenOffBus);
    // XID 79 is visible at once, for about a second of simulated time …
    assert_eq!(v(&f, GPU, F::XidErrors), 79.0);
    assert!(page_has(&f, 0, &uuid));
    // … then the GPU is gone from its node's page.
    f.advance_to(t0 + 2_000);
    assert!(!page_has(&f, 0, &uuid), "fallen GPU still scraped");
    assert!(page_has(&f, 0, &peer));
    assert_eq!(f.value(GPU, F::GpuTemp), None);
    // Another fault on a GPU that is gone is refused.
    let g = f.gpus()[GPU].uuid.clone();
    assert!(f.inject(&g, FaultKind::Thermal, t0 + 40_000).is_err());
}

#[test]
fn app_xid_is_13_31_or_43_and_gpu_stays_healthy() {
    let mut f = fleet();
    let t0 = inject(&mut f, GPU, FaultKind::AppXid);
    f.advance_to(t0 + 60_000);
    assert!([13.0, 31.0, 43.0].contains(&v(&f, GPU, F::XidErrors)));
    assert_eq!(v(&f, GPU, F::EccDbeVolTotal), 0.0);
    assert!(v(&f, GPU, F::GpuTemp) < 80.0);
    // The label closes after the default window; the XID stays.
    f.advance_to(t0 + 6 * 60_000);
    assert!(f.labels()[0].end_ms.is_some());
    assert!([13.0, 31.0, 43.0].contains(&v(&f, GPU, F::XidErrors)));
}

#[test]
fn thermal_runaway_throttles_with_thermal_bits() {
    let mut f = fleet();
    let max_clk = v(&f, GPU, F::MaxSmClock);
    let slowdown = v(&f, GPU, F::SlowdownTemp);
    let t0 = inject(&mut f, GPU, FaultKind::Thermal);
    f.advance_to(t0 + 5 * 60_000);
    assert!(v(&f, GPU, F::GpuTemp) >= slowdown, "temp {}", v(&f, GPU, F::GpuTemp));
    assert!(v(&f, GPU, F::GpuTemp) < v(&f, GPU, F::ShutdownTemp));
    let bits = v(&f, GPU, F::ClockThrottleReasons) as u64;
    assert_eq!(bits & 0x68, 0x68, "reasons {bits:#x}");
    assert!(v(&f, GPU, F::SmClock) < 0.7 * max_clk);
    assert!(v(&f, GPU, F::ThermalViolation) > 0.0);
    assert_eq!(v(&f, PEER, F::ClockThrottleReasons) as u64 & 0x68, 0);
    // After the fault (15 min) the GPU cools and the bits clear.
    f.advance_to(t0 + 30 * 60_000);
    assert!(v(&f, GPU, F::GpuTemp) < slowdown - 5.0);
    assert_eq!(v(&f, GPU, F::ClockThrottleReasons) as u64 & 0x68, 0);
}

#[test]
fn power_brake_drops_clocks_and_power() {
    let mut f = fleet();
    let max_clk = v(&f, GPU, F::MaxSmClock);
    let tdp = v(&f, GPU, F::PowerMgmtLimit);
    let t0 = inject(&mut f, GPU, FaultKind::PowerBrake);
    f.advance_to(t0 + 10_000);
    assert_ne!(v(&f, GPU, F::ClockThrottleReasons) as u64 & 0x80, 0);
    assert!(v(&f, GPU, F::SmClock) <= 0.31 * max_clk);
    assert!(v(&f, GPU, F::PowerUsage) < 0.35 * tdp);
    assert!(v(&f, GPU, F::PowerViolation) > 0.0);
}

#[test]
fn nvlink_and_pcie_error_counters_rise() {
    let mut f = fleet();
    let t0 = inject(&mut f, GPU, FaultKind::NvlinkErrors);
    inject(&mut f, PEER, FaultKind::PcieReplay);
    f.advance_to(t0 + 60_000);
    assert!(v(&f, GPU, F::NvlinkCrcFlitErrorCountTotal) > 100.0);
    assert!(v(&f, GPU, F::NvlinkCrcDataErrorCountTotal) > 10.0);
    assert!(v(&f, GPU, F::NvlinkReplayErrorCountTotal) > 50.0);
    assert_eq!(v(&f, GPU, F::PcieReplayCounter), 0.0);
    assert!(v(&f, PEER, F::PcieReplayCounter) > 1000.0);
    assert_eq!(v(&f, PEER, F::NvlinkCrcFlitErrorCountTotal), 0.0);
}

#[test]
fn nvlink_errors_refused_on_l40s() {
    let mut f = fleet();
    let g = f.gpus().into_iter().find(|g| g.model == "NVIDIA L40S").unwrap();
    assert!(f.inject(&g.uuid, FaultKind::NvlinkErrors, f.now_ms()).is_err());
}

#[test]
fn straggler_runs_slower_than_its_job_peers() {
    let mut f = fleet();
    let t0 = inject(&mut f, GPU, FaultKind::Straggler);
    f.advance_to(t0 + 120_000);
    let job = f.workload(GPU).cloned().expect("straggler is in a job");
    let peers: Vec<usize> = (0..8).filter(|&i| i != GPU && f.workload(i) == Some(&job)).collect();
    assert!(!peers.is_empty(), "straggler has job peers");
    let peer_clk = peers.iter().map(|&p| v(&f, p, F::SmClock)).fold(0.0, f64::max);
    assert!(v(&f, GPU, F::SmClock) < 0.75 * peer_clk);
    let peer_sm = peers.iter().map(|&p| v(&f, p, F::ProfSmActive)).sum::<f64>() / peers.len() as f64;
    assert!(v(&f, GPU, F::ProfSmActive) < peer_sm);
}

#[test]
fn miner_is_flat_busy_and_silent_on_the_wire() {
    let mut f = fleet();
    let t0 = inject(&mut f, GPU, FaultKind::Miner);
    let mut power = Vec::new();
    for i in 1..=60 {
        f.advance_to(t0 + i * 10_000);
        assert!(v(&f, GPU, F::ProfSmActive) > 0.95);
        assert!(v(&f, GPU, F::ProfDramActive) > 0.8);
        assert!(v(&f, GPU, F::ProfPcieTxBytes) < 10_000.0 && v(&f, GPU, F::ProfPcieRxBytes) < 10_000.0);
        assert_eq!(v(&f, GPU, F::ProfNvlinkTxBytes), 0.0);
        power.push(v(&f, GPU, F::PowerUsage));
    }
    let mean = power.iter().sum::<f64>() / power.len() as f64;
    let sd = (power.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / power.len() as f64).sqrt();
    assert!(sd / mean < 0.02, "power not flat: {mean} ± {sd}");
    let ns = f.workload(GPU).and_then(|w| w.namespace.clone());
    assert!(
        ns.as_deref().is_none_or(|n| !APPROVED_NAMESPACES.contains(&n)),
        "{ns:?}"
    );
}

#[test]
fn throttled_miner_toggles_about_half_the_time() {
    let mut f = fleet();
    let t0 = inject(&mut f, GPU, FaultKind::MinerThrottled);
    let samples: Vec<bool> = (1..=120)
        .map(|i| {
            f.advance_to(t0 + i * 5_000);
            v(&f, GPU, F::ProfSmActive) > 0.9
        })
        .collect();
    let on = samples.iter().filter(|&&b| b).count() as f64 / samples.len() as f64;
    assert!((0.35..0.65).contains(&on), "duty {on}");
    let flips = samples.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(flips >= 8, "only {flips} on/off flips in 10 min");
}

/// A miner inside a running job's pod: same labels as the job, a hashing loop's
/// telemetry (pinned SMs, no interconnect traffic); refused on a GPU with no job.
#[test]
fn miner_in_job_keeps_the_jobs_labels_and_drops_its_traffic() {
    let mut f = fleet();
    let uuid = f.gpus()[GPU].uuid.clone();
    if f.workload(GPU).is_none() {
        assert!(
            f.inject(&uuid, FaultKind::MinerInJob, f.now_ms()).is_err(),
            "no job to hide in"
        );
        inject(&mut f, GPU, FaultKind::UnapprovedNamespace);
    }
    let before = f.workload(GPU).cloned().unwrap();
    f.advance_to(f.now_ms() + 60_000);
    let t0 = f.now_ms();
    f.inject(&uuid, FaultKind::MinerInJob, t0).unwrap();
    for i in 1..=20 {
        f.advance_to(t0 + i * 15_000);
        assert_eq!(f.workload(GPU), Some(&before), "labels unchanged");
        assert!(v(&f, GPU, F::ProfSmActive) > 0.9);
        assert!(v(&f, GPU, F::ProfPcieRxBytes) < 1e5);
        assert!(v(&f, GPU, F::ProfNvlinkTxBytes) < 1e5);
    }
}

#[test]
fn unapproved_namespace_shows_in_pod_labels() {
    let mut f = fleet();
    inject(&mut f, GPU, FaultKind::UnapprovedNamespace);
    let ns = f.workload(GPU).and_then(|w| w.namespace.clone()).unwrap();
    assert!(UNAPPROVED_NAMESPACES.contains(&ns.as_str()));
    let mut s = String::new();
    f.render_node(0, &mut s);
    let uuid = f.gpus()[GPU].uuid.to_string();
    let lines = common::parse(&s);
    let l = lines.iter().find(|l| l.labels["UUID"] == uuid).unwrap();
    assert_eq!(l.labels["namespace"], ns);
}

#[test]
fn every_kind_injects_and_gets_a_label() {
    for &kind in FaultKind::ALL {
        let mut f = fleet();
        if kind == FaultKind::MinerInJob {
            // Needs a job to hide in: give the GPU one first.
            inject(&mut f, GPU, FaultKind::UnapprovedNamespace);
            let uuid = f.gpus()[GPU].uuid.clone();
            f.inject(&uuid, kind, f.now_ms()).unwrap();
            assert_eq!(f.labels().len(), 2);
            assert!(f.inject(&uuid, kind, f.now_ms()).is_err(), "{kind} twice at once");
            continue;
        }
        inject(&mut f, GPU, kind);
        assert_eq!(f.labels().len(), 1);
        let uuid = f.gpus()[GPU].uuid.clone();
        assert!(f.inject(&uuid, kind, f.now_ms()).is_err(), "{kind} twice at once");
    }
}

#[test]
fn random_faults_follow_the_multiplier() {
    let cfg = SimConfig {
        fault_rate_multiplier: 100_000.0,
        seed: 3,
        ..SimConfig::default()
    };
    let mut f = Fleet::new(&cfg).unwrap();
    f.advance_to(f.now_ms() + 2 * 3_600_000);
    // 32 GPUs × ~0.19 / GPU-year × 1e5 × 2 h ≈ 140 expected (fewer: one fault per GPU).
    let n = f.labels().len();
    assert!(n >= 20, "only {n} random faults");
    assert!(f.labels().iter().all(|l| !l.injected));
    let none = Fleet::new(&SimConfig {
        fault_rate_multiplier: 0.0,
        ..cfg
    })
    .unwrap();
    assert!(none.labels().is_empty());
}

/// With wear-out on (the predictor's histories), a board hit by a double-bit error or a
/// fall off the bus is reset and comes back into service after 1–24 h, and a board's
/// second hard failure (or any failed row remap) sends it to RMA: it never comes back.
#[test]
fn hard_failures_are_repaired_until_the_second_sends_the_board_to_rma() {
    use gpuwarden_sim::faults::{self, RMA_AT_HARD_FAILURE};
    let mut f = Fleet::new(&SimConfig {
        fault_rate_multiplier: 2_000.0,
        seed: 5,
        ..SimConfig::default()
    })
    .unwrap();
    f.set_step_ms(60_000);
    f.set_wear_out();
    f.advance_to(f.now_ms() + 4 * 24 * 3_600_000);
    let hard: Vec<_> = f.labels().iter().filter(|l| faults::is_hard(l.kind)).collect();
    assert!(hard.len() >= 10, "only {} hard failures", hard.len());
    let mut repaired = 0;
    for gpu in f.gpus() {
        let mine: Vec<_> = hard.iter().filter(|l| l.gpu == gpu.uuid).collect();
        assert!(
            mine.len() as u32 <= RMA_AT_HARD_FAILURE,
            "{} failed {} times",
            gpu.uuid,
            mine.len()
        );
        for (i, l) in mine.iter().enumerate() {
            let comes_back = i + 1 < RMA_AT_HARD_FAILURE as usize && l.kind != FaultKind::RowRemapFailure;
            match l.end_ms {
                Some(end) => {
                    assert!(comes_back, "{:?} #{} of {} came back", l.kind, i + 1, gpu.uuid);
                    let out = end - l.start_ms;
                    assert!((3_600_000..=24 * 3_600_000 + 60_000).contains(&out), "out {out} ms");
                    repaired += 1;
                }
                // A repair still under way at the end of the run is fine; an RMA never ends.
                None => assert!(comes_back || i + 1 == mine.len(), "an RMA'd board failed again"),
            }
        }
        // Back in service: no hard fault active, and present on its page.
        let gi = f.gpus().iter().position(|g| g.uuid == gpu.uuid).unwrap();
        if mine.last().is_some_and(|l| l.end_ms.is_some_and(|e| e <= f.now_ms())) {
            assert!(!f.in_hard_failure(gi));
            assert!(
                f.value(gi, F::GpuTemp).is_some(),
                "{} is back but shows no data",
                gpu.uuid
            );
        }
    }
    assert!(repaired >= 3, "only {repaired} boards came back from a repair");
    let repeats = f
        .gpus()
        .iter()
        .filter(|g| hard.iter().filter(|l| l.gpu == g.uuid).count() > 1)
        .count();
    assert!(repeats >= 1, "no board failed twice");
}
