//! Every simulator fault that hits hardware, driven through the real simulator, exporter
//! mapping and XID tracker into the engine at a 5 s scrape interval: the fault must give
//! a finding on the right GPU, with the right action and dimension, within two
//! evaluations of the fault showing in the telemetry (`crates/sim/src/faults.rs` says
//! when each does).

mod common;

use common::{quiet_config, Harness};
use gpuwarden_model::{Action, DcgmField, Dimension, FaultKind, Finding, GpuUuid, HealthState, Severity};
use gpuwarden_sim::Fleet;

/// Picks the GPU to break: index into `fleet.gpus()`.
type Pick = fn(&Fleet) -> usize;
/// Whether the fault shows in the GPU's telemetry now.
type Visible = fn(&Fleet, usize) -> bool;

struct Case {
    kind: FaultKind,
    pick: Pick,
    visible: Visible,
    /// Does this finding answer the fault?
    matches: fn(&Finding) -> bool,
    action: Action,
    dimension: Dimension,
    /// The GPU's score must show a deduction in `dimension` (not for a GPU that vanished:
    /// its score is unknown).
    deduction: bool,
    /// The GPU must not read healthy while the finding holds.
    not_healthy: bool,
    max_steps: usize,
}

/// First GPU on the H100 node (node 1; it has NVLink).
fn h100(fleet: &Fleet) -> usize {
    fleet
        .gpus()
        .iter()
        .position(|g| g.model.contains("H100"))
        .expect("an H100 node")
}

/// A busy GPU whose node has at least three busy GPUs of its model (a cohort to lag).
fn busy_in_cohort(fleet: &Fleet) -> usize {
    let gpus = fleet.gpus();
    let busy = |i: usize| fleet.value(i, DcgmField::GpuUtil).unwrap_or(0.0) >= 60.0;
    (0..gpus.len())
        .filter(|&i| busy(i))
        .find(|&i| {
            (0..gpus.len())
                .filter(|&j| gpus[j].node == gpus[i].node && busy(j))
                .count()
                >= 4
        })
        .expect("a node with four busy GPUs")
}

fn v(fleet: &Fleet, i: usize, f: DcgmField) -> f64 {
    fleet.value(i, f).unwrap_or(0.0)
}

fn run(case: Case) {
    let mut h = Harness::new(quiet_config(7));
    h.steps(12); // a minute of history: counter baselines, steady state
    let idx = (case.pick)(&h.fleet);
    let uuid: GpuUuid = h.fleet.gpus()[idx].uuid.clone();
    h.fleet.inject(&uuid, case.kind, h.now).expect("inject");

    let mut visible_at = None;
    for step in 0..case.max_steps {
        let eval = h.step();
        if visible_at.is_none() && (case.visible)(&h.fleet, idx) {
            visible_at = Some(step);
        }
        let hit = eval
            .findings
            .iter()
            .find(|f| f.gpu.as_ref() == Some(&uuid) && (case.matches)(f));
        if let Some(f) = hit {
            let seen =
                visible_at.unwrap_or_else(|| panic!("{:?}: finding before the fault is visible: {f:?}", case.kind));
            assert!(
                step <= seen + 1,
                "{:?}: finding {} at step {step}, fault visible at step {seen}",
                case.kind,
                f.rule
            );
            assert_eq!(f.action, case.action, "{:?}: {f:?}", case.kind);
            assert_eq!(f.dimension, Some(case.dimension), "{:?}: {f:?}", case.kind);
            let g = eval.gpus.iter().find(|g| g.uuid == uuid).expect("gpu health");
            if case.deduction {
                assert!(
                    g.deductions
                        .iter()
                        .any(|d| d.dimension == case.dimension && d.points > 0.0),
                    "{:?}: no deduction in {:?}: {:?}",
                    case.kind,
                    case.dimension,
                    g.deductions
                );
                assert!(g.dimensions[&case.dimension].unwrap() < 100.0);
            }
            if case.not_healthy {
                assert_ne!(g.state, HealthState::Healthy, "{:?}", case.kind);
            }
            // No other GPU is blamed above warning for this fault.
            for other in eval.findings.iter().filter(|f| f.gpu.as_ref() != Some(&uuid)) {
                assert!(
                    other.severity <= Severity::Warning,
                    "{:?}: collateral {other:?}",
                    case.kind
                );
            }
            eprintln!(
                "{:?}: {} ({}, {}, {:?}) at step {step}, visible at step {seen}: {}",
                case.kind, f.rule, f.severity, f.action, case.dimension, f.summary
            );
            return;
        }
    }
    panic!(
        "{:?}: no matching finding within {} steps (visible at {visible_at:?})",
        case.kind, case.max_steps
    );
}

#[test]
fn ecc_dbe_gives_a_critical_memory_finding_with_reset() {
    run(Case {
        kind: FaultKind::EccDbe,
        pick: h100,
        visible: |f, i| v(f, i, DcgmField::EccDbeVolTotal) > 0.0,
        matches: |f| f.rule == "ecc.dbe" && f.severity == Severity::Critical,
        action: Action::ResetGpu,
        dimension: Dimension::Memory,
        deduction: true,
        not_healthy: true,
        max_steps: 40,
    });
}

#[test]
fn ecc_storm_before_the_dbe_is_a_warning() {
    run(Case {
        kind: FaultKind::EccDbe,
        pick: h100,
        visible: |f, i| v(f, i, DcgmField::EccSbeVolTotal) > 100.0,
        matches: |f| f.rule == "ecc.sbe_rate" && f.severity == Severity::Warning,
        action: Action::None,
        dimension: Dimension::Memory,
        deduction: true,
        not_healthy: true,
        max_steps: 10,
    });
}

#[test]
fn row_remap_failure_calls_for_hardware_inspection() {
    run(Case {
        kind: FaultKind::RowRemapFailure,
        pick: h100,
        visible: |f, i| v(f, i, DcgmField::RowRemapFailure) >= 1.0,
        matches: |f| f.rule == "remap.failure",
        action: Action::HardwareInspection,
        dimension: Dimension::Memory,
        deduction: true,
        not_healthy: true,
        max_steps: 5,
    });
}

#[test]
fn fallen_off_bus_is_fatal_with_reboot_even_though_the_score_is_unknown() {
    run(Case {
        kind: FaultKind::FallenOffBus,
        pick: h100,
        visible: |f, i| f.value(i, DcgmField::GpuTemp).is_none() || v(f, i, DcgmField::XidErrors) == 79.0,
        matches: |f| (f.rule == "gpu.fallen_off_bus" || f.rule == "xid.79") && f.severity == Severity::Fatal,
        action: Action::Reboot,
        dimension: Dimension::Compute,
        deduction: false,
        not_healthy: true,
        max_steps: 5,
    });
}

#[test]
fn thermal_runaway_gives_a_thermal_finding() {
    run(Case {
        kind: FaultKind::Thermal,
        pick: h100,
        // H100: slowdown 90 °C, margin 5 °C; or any thermal clock-event bit.
        visible: |f, i| {
            v(f, i, DcgmField::GpuTemp) >= 85.0 || (v(f, i, DcgmField::ClockThrottleReasons) as u64) & 0x68 != 0
        },
        matches: |f| f.dimension == Some(Dimension::Thermal),
        action: Action::None,
        dimension: Dimension::Thermal,
        deduction: true,
        not_healthy: true,
        max_steps: 60,
    });
}

#[test]
fn thermal_runaway_reaches_slowdown_and_calls_for_drain() {
    run(Case {
        kind: FaultKind::Thermal,
        pick: h100,
        visible: |f, i| v(f, i, DcgmField::GpuTemp) >= 90.0,
        matches: |f| f.rule == "thermal.slowdown" && f.severity == Severity::Critical,
        action: Action::DrainNode,
        dimension: Dimension::Thermal,
        deduction: true,
        not_healthy: true,
        max_steps: 80,
    });
}

#[test]
fn power_brake_is_a_critical_power_finding() {
    run(Case {
        kind: FaultKind::PowerBrake,
        pick: h100,
        visible: |f, i| (v(f, i, DcgmField::ClockThrottleReasons) as u64) & 0x80 != 0,
        matches: |f| f.rule == "throttle.power_brake",
        action: Action::DrainNode,
        dimension: Dimension::Power,
        deduction: true,
        not_healthy: true,
        max_steps: 5,
    });
}

#[test]
fn nvlink_errors_are_an_interconnect_finding() {
    run(Case {
        kind: FaultKind::NvlinkErrors,
        pick: h100,
        visible: |f, i| v(f, i, DcgmField::NvlinkCrcFlitErrorCountTotal) > 0.0,
        matches: |f| f.rule == "nvlink.crc",
        action: Action::ResetGpu,
        dimension: Dimension::Interconnect,
        deduction: true,
        not_healthy: true,
        max_steps: 5,
    });
}

#[test]
fn pcie_replays_are_an_interconnect_finding() {
    run(Case {
        kind: FaultKind::PcieReplay,
        pick: h100,
        visible: |f, i| v(f, i, DcgmField::PcieReplayCounter) > 0.0,
        matches: |f| f.rule == "pcie.replay",
        action: Action::HardwareInspection,
        dimension: Dimension::Interconnect,
        deduction: true,
        not_healthy: true,
        max_steps: 5,
    });
}

#[test]
fn straggler_is_flagged_against_its_peers() {
    run(Case {
        kind: FaultKind::Straggler,
        pick: busy_in_cohort,
        // The clock drops on the first tick of the fault.
        visible: |_, _| true,
        matches: |f| f.rule == "clocks.straggler",
        action: Action::ResetGpu,
        dimension: Dimension::Compute,
        deduction: true,
        not_healthy: true,
        max_steps: 5,
    });
}

/// An application XID is the application's fault: the GPU loses 10 compute points and
/// stays healthy (score 90), and the advice is to restart the application.
#[test]
fn app_xid_asks_for_an_app_restart_at_warning() {
    run(Case {
        kind: FaultKind::AppXid,
        pick: h100,
        visible: |f, i| [13.0, 31.0, 43.0].contains(&v(f, i, DcgmField::XidErrors)),
        matches: |f| f.rule.starts_with("xid.") && f.severity <= Severity::Warning,
        action: Action::RestartApp,
        dimension: Dimension::Compute,
        deduction: true,
        not_healthy: false,
        max_steps: 5,
    });
}
