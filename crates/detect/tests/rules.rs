//! One true and one false case for every rule, on hand-built rows, plus the engine's
//! contracts: stale is unknown, node roll-up, node-wide XIDs, escalation, single-page
//! scoring, and no panic on bad input.

use gpuwarden_detect::{evaluate_snapshot, Evaluation, HealthEngine, HealthRules, XidCatalog};
use gpuwarden_model::{
    Action, DcgmField as F, Dimension, Event, EventKind, FieldName, Freshness, GpuIdentity, GpuSamples, GpuUuid,
    HealthState, Severity, TimestampMs,
};

const T0: TimestampMs = 1_735_689_600_000;
const STEP: i64 = 5_000;
const NODE: &str = "node-a";
const H100: &str = "NVIDIA H100 80GB HBM3";

fn uuid(i: usize) -> GpuUuid {
    GpuUuid::new(&format!("GPU-{i:04}"))
}

/// A healthy, busy H100 reading.
fn base() -> Vec<(F, f64)> {
    vec![
        (F::GpuTemp, 60.0),
        (F::MemoryTemp, 55.0),
        (F::PowerUsage, 500.0),
        (F::PowerMgmtLimit, 700.0),
        (F::SmClock, 1980.0),
        (F::GpuUtil, 90.0),
        (F::ClockThrottleReasons, 0.0),
        (F::EccSbeVolTotal, 0.0),
        (F::EccDbeVolTotal, 0.0),
        (F::RowRemapPending, 0.0),
        (F::RowRemapFailure, 0.0),
        (F::UncorrectableRemappedRows, 0.0),
        (F::CorrectableRemappedRows, 0.0),
        (F::RetiredSbe, 0.0),
        (F::RetiredDbe, 0.0),
        (F::RetiredPending, 0.0),
        (F::NvlinkCrcFlitErrorCountTotal, 0.0),
        (F::NvlinkCrcDataErrorCountTotal, 0.0),
        (F::NvlinkReplayErrorCountTotal, 0.0),
        (F::NvlinkRecoveryErrorCountTotal, 0.0),
        (F::PcieReplayCounter, 0.0),
        (F::XidErrors, 0.0),
        (F::SlowdownTemp, 90.0),
        (F::ShutdownTemp, 92.0),
    ]
}

fn with(mut vals: Vec<(F, f64)>, changes: &[(F, f64)]) -> Vec<(F, f64)> {
    for (f, v) in changes {
        match vals.iter_mut().find(|(g, _)| g == f) {
            Some(slot) => slot.1 = *v,
            None => vals.push((*f, *v)),
        }
    }
    vals
}

fn row(gpu: &GpuUuid, ts: TimestampMs, vals: &[(F, f64)]) -> GpuSamples {
    GpuSamples {
        gpu: gpu.clone(),
        ts_ms: ts,
        values: vals.iter().map(|(f, v)| (FieldName::Dcgm(*f), *v)).collect(),
    }
}

/// A fleet of `n` GPUs on one node, fed step by step.
struct Rig {
    engine: HealthEngine,
    gpus: Vec<GpuUuid>,
    now: TimestampMs,
}

impl Rig {
    fn new(n: usize) -> Self {
        Self::with_rules(n, HealthRules::builtin())
    }

    fn with_rules(n: usize, rules: HealthRules) -> Self {
        let mut engine = HealthEngine::new(rules, XidCatalog::builtin());
        let gpus: Vec<GpuUuid> = (0..n).map(uuid).collect();
        for g in &gpus {
            let mut id = GpuIdentity::new(g.clone(), NODE);
            id.model = Some(H100.to_string());
            engine.observe_identity(&id);
        }
        Rig { engine, gpus, now: T0 }
    }

    /// One scrape: GPU 0 reads `first`, the others read `base()`; then evaluate.
    fn step(&mut self, first: &[(F, f64)]) -> Evaluation {
        self.now += STEP;
        for (i, g) in self.gpus.iter().enumerate() {
            let vals = if i == 0 { first.to_vec() } else { base() };
            self.engine.observe_row(&row(g, self.now, &vals));
        }
        self.engine.evaluate(self.now, &|_| Freshness::Fresh)
    }

    fn event(&mut self, gpu: usize, kind: EventKind) {
        let e = Event {
            gpu: self.gpus[gpu].clone(),
            node: NODE.to_string(),
            ts_ms: self.now,
            kind,
        };
        self.engine.observe_event(&e);
    }
}

fn xid(code: u32) -> EventKind {
    EventKind::Xid {
        code,
        message: None,
        pid: None,
        process: None,
    }
}

fn has(e: &Evaluation, gpu: &GpuUuid, rule: &str) -> bool {
    e.findings.iter().any(|f| f.gpu.as_ref() == Some(gpu) && f.rule == rule)
}

/// Runs `before` for a few steps, then `after` for `steps`; returns the last evaluation.
fn run(before: &[(F, f64)], after: &[(F, f64)], steps: usize) -> (Evaluation, GpuUuid) {
    let mut rig = Rig::new(4);
    for _ in 0..3 {
        rig.step(before);
    }
    let mut e = Evaluation::default();
    for _ in 0..steps {
        e = rig.step(after);
    }
    (e, rig.gpus[0].clone())
}

/// Asserts the rule fires on `bad` and not on `good`, with its dimension and action.
fn true_and_false(rule: &str, good: &[(F, f64)], bad: &[(F, f64)], steps: usize, dim: Dimension, action: Action) {
    let (e, g) = run(&base(), &with(base(), good), steps);
    assert!(!has(&e, &g, rule), "{rule} fired on good data: {:?}", e.findings);
    let (e, g) = run(&base(), &with(base(), bad), steps);
    let f = e
        .findings
        .iter()
        .find(|f| f.gpu.as_ref() == Some(&g) && f.rule == rule)
        .unwrap_or_else(|| panic!("{rule} did not fire: {:?}", e.findings));
    assert_eq!(f.dimension, Some(dim), "{rule}");
    assert_eq!(f.action, action, "{rule}");
    let gh = e.gpus.iter().find(|x| x.uuid == g).unwrap();
    let points = HealthRules::builtin()
        .metas()
        .into_iter()
        .find(|m| m.id == rule)
        .unwrap()
        .points;
    if points > 0.0 {
        let d = gh.deductions.iter().find(|d| d.rule == rule).expect("deduction");
        assert_eq!(d.dimension, dim);
        assert!(d.reason.starts_with('\u{2212}'), "{}", d.reason);
        assert!(d.reason.contains(dim.as_str()), "{}", d.reason);
    }
}

#[test]
fn ecc_sbe_rate() {
    true_and_false(
        "ecc.sbe_rate",
        &[(F::EccSbeVolTotal, 50.0)],
        &[(F::EccSbeVolTotal, 150.0)],
        1,
        Dimension::Memory,
        Action::None,
    );
}

#[test]
fn ecc_dbe() {
    true_and_false(
        "ecc.dbe",
        &[(F::EccSbeVolTotal, 3.0)],
        &[(F::EccDbeVolTotal, 2.0)],
        1,
        Dimension::Memory,
        Action::ResetGpu,
    );
    let (e, g) = run(&base(), &with(base(), &[(F::EccDbeVolTotal, 2.0)]), 1);
    let d = &e.gpus.iter().find(|x| x.uuid == g).unwrap().deductions;
    let reason = &d.iter().find(|d| d.rule == "ecc.dbe").unwrap().reason;
    assert_eq!(
        reason,
        "\u{2212}50 memory: 2 uncorrectable ECC errors in the last hour (DCGM_FI_DEV_ECC_DBE_VOL_TOTAL 0\u{2192}2)"
    );
}

#[test]
fn ecc_dbe_clears_after_the_window() {
    let mut rig = Rig::new(1);
    rig.step(&base());
    let bad = with(base(), &[(F::EccDbeVolTotal, 1.0)]);
    assert!(has(&rig.step(&bad), &rig.gpus[0].clone(), "ecc.dbe"));
    // 62 minutes later (window 60 min + one bucket), with the counter flat.
    let mut e = Evaluation::default();
    for _ in 0..(62 * 12) {
        e = rig.step(&bad);
    }
    assert!(!has(&e, &rig.gpus[0].clone(), "ecc.dbe"));
}

#[test]
fn remap_pending() {
    true_and_false(
        "remap.pending",
        &[(F::RowRemapPending, 0.0)],
        &[(F::RowRemapPending, 1.0)],
        1,
        Dimension::Memory,
        Action::ResetGpu,
    );
}

#[test]
fn remap_failure() {
    true_and_false(
        "remap.failure",
        &[(F::RowRemapFailure, 0.0)],
        &[(F::RowRemapFailure, 1.0)],
        1,
        Dimension::Memory,
        Action::HardwareInspection,
    );
}

#[test]
fn remap_uncorrectable_rows() {
    true_and_false(
        "remap.uncorrectable_rows",
        &[(F::CorrectableRemappedRows, 1.0)],
        &[(F::UncorrectableRemappedRows, 1.0)],
        1,
        Dimension::Memory,
        Action::None,
    );
}

#[test]
fn remap_correctable_rows() {
    true_and_false(
        "remap.correctable_rows",
        &[(F::UncorrectableRemappedRows, 0.0)],
        &[(F::CorrectableRemappedRows, 2.0)],
        1,
        Dimension::Memory,
        Action::None,
    );
}

#[test]
fn retired_pending() {
    true_and_false(
        "retired.pending",
        &[(F::RetiredPending, 0.0)],
        &[(F::RetiredPending, 1.0)],
        1,
        Dimension::Memory,
        Action::ResetGpu,
    );
}

#[test]
fn retired_total() {
    true_and_false(
        "retired.total",
        &[(F::RetiredSbe, 30.0), (F::RetiredDbe, 10.0)],
        &[(F::RetiredSbe, 50.0), (F::RetiredDbe, 20.0)],
        1,
        Dimension::Memory,
        Action::HardwareInspection,
    );
}

#[test]
fn thermal_margin() {
    true_and_false(
        "thermal.margin",
        &[(F::GpuTemp, 84.0)],
        &[(F::GpuTemp, 86.0)],
        1,
        Dimension::Thermal,
        Action::None,
    );
}

#[test]
fn thermal_slowdown() {
    true_and_false(
        "thermal.slowdown",
        &[(F::GpuTemp, 89.0)],
        &[(F::GpuTemp, 90.0)],
        1,
        Dimension::Thermal,
        Action::DrainNode,
    );
}

#[test]
fn thermal_limits_come_from_the_model_when_not_exported() {
    let no_limits: Vec<(F, f64)> = base()
        .into_iter()
        .filter(|(f, _)| *f != F::SlowdownTemp && *f != F::ShutdownTemp)
        .collect();
    // H100 table: slowdown 90 °C.
    let (e, g) = run(&no_limits, &with(no_limits.clone(), &[(F::GpuTemp, 91.0)]), 1);
    assert!(has(&e, &g, "thermal.slowdown"));
}

#[test]
fn thermal_memory() {
    true_and_false(
        "thermal.memory",
        &[(F::MemoryTemp, 80.0)],
        &[(F::MemoryTemp, 88.0)],
        1,
        Dimension::Thermal,
        Action::None,
    );
}

#[test]
fn throttle_thermal() {
    // SW power cap under load is normal; HW slowdown + HW thermal is not.
    true_and_false(
        "throttle.thermal",
        &[(F::ClockThrottleReasons, 0x4 as f64)],
        &[(F::ClockThrottleReasons, (0x8 | 0x40) as f64)],
        1,
        Dimension::Thermal,
        Action::None,
    );
}

#[test]
fn throttle_power_brake() {
    true_and_false(
        "throttle.power_brake",
        &[(F::ClockThrottleReasons, (0x8 | 0x40) as f64)],
        &[(F::ClockThrottleReasons, (0x8 | 0x80) as f64)],
        1,
        Dimension::Power,
        Action::DrainNode,
    );
    // A HW slowdown caused by the brake is not also a thermal finding.
    let (e, g) = run(&base(), &with(base(), &[(F::ClockThrottleReasons, 136.0)]), 1);
    assert!(!has(&e, &g, "throttle.thermal"));
}

#[test]
fn throttle_sw_power_cap_is_off_by_default_and_works_when_enabled() {
    let (e, g) = run(&base(), &with(base(), &[(F::ClockEventReasons, 4.0)]), 20);
    assert!(!has(&e, &g, "throttle.sw_power_cap"));
    assert!(
        e.findings.is_empty(),
        "power cap under load is normal: {:?}",
        e.findings
    );
    let over: toml::Table = toml::from_str("[throttle.sw_power_cap]\nenabled = true\nmin_evaluations = 2\n").unwrap();
    let mut rig = Rig::with_rules(1, HealthRules::with_overrides(over).unwrap());
    let capped = with(base(), &[(F::ClockEventReasons, 4.0)]);
    assert!(!has(&rig.step(&capped), &rig.gpus[0].clone(), "throttle.sw_power_cap"));
    assert!(has(&rig.step(&capped), &rig.gpus[0].clone(), "throttle.sw_power_cap"));
}

#[test]
fn power_over_limit_must_be_sustained() {
    true_and_false(
        "power.over_limit",
        &[(F::PowerUsage, 700.0)],
        &[(F::PowerUsage, 760.0)],
        3,
        Dimension::Power,
        Action::None,
    );
    let (e, g) = run(&base(), &with(base(), &[(F::PowerUsage, 760.0)]), 2);
    assert!(!has(&e, &g, "power.over_limit"), "two evaluations are not sustained");
}

#[test]
fn nvlink_crc() {
    true_and_false(
        "nvlink.crc",
        &[(F::NvlinkCrcFlitErrorCountTotal, 5.0)],
        &[
            (F::NvlinkCrcFlitErrorCountTotal, 40.0),
            (F::NvlinkCrcDataErrorCountTotal, 5.0),
        ],
        1,
        Dimension::Interconnect,
        Action::ResetGpu,
    );
}

#[test]
fn nvlink_replay() {
    true_and_false(
        "nvlink.replay",
        &[(F::NvlinkReplayErrorCountTotal, 3.0)],
        &[(F::NvlinkReplayErrorCountTotal, 100.0)],
        1,
        Dimension::Interconnect,
        Action::ResetGpu,
    );
}

#[test]
fn nvlink_recovery() {
    true_and_false(
        "nvlink.recovery",
        &[(F::NvlinkReplayErrorCountTotal, 1.0)],
        &[(F::NvlinkRecoveryErrorCountTotal, 1.0)],
        1,
        Dimension::Interconnect,
        Action::ResetGpu,
    );
}

#[test]
fn pcie_replay() {
    true_and_false(
        "pcie.replay",
        &[(F::PcieReplayCounter, 10.0)],
        &[(F::PcieReplayCounter, 500.0)],
        1,
        Dimension::Interconnect,
        Action::HardwareInspection,
    );
}

#[test]
fn clocks_straggler() {
    true_and_false(
        "clocks.straggler",
        // Slow but explained by the power cap: not a straggler.
        &[(F::SmClock, 1200.0), (F::ClockThrottleReasons, 4.0)],
        &[(F::SmClock, 1200.0)],
        2,
        Dimension::Compute,
        Action::ResetGpu,
    );
    // Idle GPUs are not compared.
    let (e, g) = run(&base(), &with(base(), &[(F::SmClock, 600.0), (F::GpuUtil, 5.0)]), 3);
    assert!(!has(&e, &g, "clocks.straggler"));
    // One evaluation is not sustained.
    let (e, g) = run(&base(), &with(base(), &[(F::SmClock, 1200.0)]), 1);
    assert!(!has(&e, &g, "clocks.straggler"));
}

#[test]
fn straggler_needs_a_cohort() {
    let mut rig = Rig::new(2);
    let slow = with(base(), &[(F::SmClock, 1000.0)]);
    let mut e = Evaluation::default();
    for _ in 0..4 {
        e = rig.step(&slow);
    }
    assert!(
        !has(&e, &rig.gpus[0].clone(), "clocks.straggler"),
        "two GPUs are no cohort"
    );
}

#[test]
fn xid_rule_uses_the_catalog() {
    let mut rig = Rig::new(4);
    rig.step(&base());
    rig.event(0, xid(48));
    let e = rig.step(&base());
    let f = e.findings.iter().find(|f| f.rule == "xid.48").expect("xid.48");
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.action, Action::ResetGpu);
    assert_eq!(f.dimension, Some(Dimension::Memory));
    let g = &e.gpus[0];
    assert_eq!(g.state, HealthState::Unhealthy);
    // No XID, no finding.
    let mut rig = Rig::new(4);
    let e = rig.step(&base());
    assert!(e.findings.is_empty());
}

#[test]
fn xid_cleared_ends_the_finding() {
    let mut rig = Rig::new(1);
    rig.step(&base());
    rig.event(0, xid(13));
    assert!(has(&rig.step(&base()), &rig.gpus[0].clone(), "xid.13"));
    rig.event(0, EventKind::XidCleared { previous_code: 13 });
    assert!(!has(&rig.step(&base()), &rig.gpus[0].clone(), "xid.13"));
}

#[test]
fn unknown_xid_gets_the_default_entry() {
    let mut rig = Rig::new(1);
    rig.step(&base());
    rig.event(0, xid(4242));
    let e = rig.step(&base());
    let f = e.findings.iter().find(|f| f.rule == "xid.4242").expect("finding");
    assert_eq!((f.severity, f.action), (Severity::Warning, Action::ResetGpu));
}

#[test]
fn repeated_reboot_class_xid_escalates_to_hardware_inspection() {
    let mut rig = Rig::new(4);
    rig.step(&base());
    let hour = 3_600_000;
    for n in 0..3 {
        rig.event(0, xid(79));
        let e = rig.step(&base());
        let f = e.findings.iter().find(|f| f.rule == "xid.79").unwrap();
        let want = if n < 2 {
            Action::Reboot
        } else {
            Action::HardwareInspection
        };
        assert_eq!(f.action, want, "occurrence {}", n + 1);
        rig.now += 2 * hour; // next episode after a reboot
    }
}

#[test]
fn same_xid_on_most_gpus_of_a_node_is_node_wide_and_not_hardware() {
    let mut rig = Rig::new(8);
    rig.step(&base());
    for g in 0..5 {
        rig.event(g, xid(64));
    }
    let e = rig.step(&base());
    let node = e
        .findings
        .iter()
        .find(|f| f.rule == "xid.node_wide")
        .expect("xid.node_wide");
    assert_eq!(node.gpu, None);
    assert_eq!(node.node, NODE);
    assert_eq!(node.action, Action::Reboot);
    for f in e.findings.iter().filter(|f| f.rule == "xid.64") {
        assert_eq!(f.action, Action::Reboot, "hardware inspection downgraded: {f:?}");
    }
    // Two of eight is not node-wide.
    let mut rig = Rig::new(8);
    rig.step(&base());
    rig.event(0, xid(64));
    rig.event(1, xid(64));
    let e = rig.step(&base());
    assert!(!e.findings.iter().any(|f| f.rule == "xid.node_wide"));
    assert!(e
        .findings
        .iter()
        .filter(|f| f.rule == "xid.64")
        .all(|f| f.action == Action::HardwareInspection));
}

#[test]
fn stale_gpu_is_unknown_not_healthy() {
    let mut rig = Rig::new(2);
    rig.step(&base());
    let stale = rig.gpus[1].clone();
    for f in [Freshness::TargetDown, Freshness::TooOld, Freshness::MissingFromScrape] {
        let e = rig
            .engine
            .evaluate(rig.now, &|g| if *g == stale { f } else { Freshness::Fresh });
        let g = e.gpus.iter().find(|g| g.uuid == stale).unwrap();
        assert_eq!(g.state, HealthState::Unknown, "{f:?}");
        assert_eq!(g.score, None);
        assert!(g.dimensions.values().all(Option::is_none));
        assert_eq!(g.freshness, f);
        let n = &e.nodes[0];
        assert_eq!((n.gpus, n.gpus_unknown), (2, 1));
        assert!(n.note.as_deref().unwrap().contains("1 of 2"));
    }
}

#[test]
fn gpu_without_samples_is_unknown() {
    let mut rig = Rig::new(1);
    let e = rig.engine.evaluate(T0, &|_| Freshness::Fresh);
    assert_eq!(e.gpus[0].state, HealthState::Unknown);
    assert_eq!(e.gpus[0].score, None);
    assert_eq!(e.nodes[0].state, HealthState::Unknown, "all GPUs unknown: node unknown");
    assert_eq!(e.nodes[0].score, None);
    let _ = rig.step(&base());
}

#[test]
fn vanished_gpu_is_fatal_though_unknown_and_makes_its_node_unhealthy() {
    let mut rig = Rig::new(2);
    rig.step(&base());
    let gone = rig.gpus[0].clone();
    let e = rig.engine.evaluate(rig.now, &|g| {
        if *g == gone {
            Freshness::MissingFromScrape
        } else {
            Freshness::Fresh
        }
    });
    let f = e
        .findings
        .iter()
        .find(|f| f.rule == "gpu.fallen_off_bus")
        .expect("finding");
    assert_eq!((f.severity, f.action), (Severity::Fatal, Action::Reboot));
    assert_eq!(
        e.gpus.iter().find(|g| g.uuid == gone).unwrap().state,
        HealthState::Unknown
    );
    assert_eq!(e.nodes[0].state, HealthState::Unhealthy);
    // A target that is down is not a fallen GPU.
    let e = rig.engine.evaluate(rig.now, &|g| {
        if *g == gone {
            Freshness::TargetDown
        } else {
            Freshness::Fresh
        }
    });
    assert!(!e.findings.iter().any(|f| f.rule == "gpu.fallen_off_bus"));
    // Neither is a GPU never seen.
    let mut rig = Rig::new(1);
    let e = rig.engine.evaluate(T0, &|_| Freshness::MissingFromScrape);
    assert!(e.findings.is_empty());
    let _ = rig.step(&base());
}

#[test]
fn disappeared_event_fires_until_the_gpu_returns() {
    let mut rig = Rig::new(1);
    rig.step(&base());
    rig.event(0, EventKind::GpuDisappeared);
    let e = rig.engine.evaluate(rig.now, &|_| Freshness::TargetDown);
    assert!(e.findings.iter().any(|f| f.rule == "gpu.fallen_off_bus"));
    rig.event(0, EventKind::GpuAppeared);
    let e = rig.step(&base());
    assert!(!e.findings.iter().any(|f| f.rule == "gpu.fallen_off_bus"));
}

#[test]
fn node_is_its_worst_gpu() {
    let mut rig = Rig::new(3);
    rig.step(&base());
    let e = rig.step(&with(base(), &[(F::GpuTemp, 86.0)]));
    let n = &e.nodes[0];
    assert_eq!(n.worst_gpu.as_ref(), Some(&rig.gpus[0]));
    assert_eq!(n.score, Some(85.0));
    assert_eq!(n.state, HealthState::Degraded);
    assert_eq!(n.dimensions[&Dimension::Thermal], Some(85.0));
    assert_eq!(n.dimensions[&Dimension::Memory], Some(100.0));
}

#[test]
fn healthy_gpu_scores_100() {
    let (e, _) = run(&base(), &base(), 3);
    for g in &e.gpus {
        assert_eq!(g.score, Some(100.0));
        assert_eq!(g.state, HealthState::Healthy);
        assert!(g.deductions.is_empty());
    }
    assert!(e.findings.is_empty());
}

#[test]
fn counter_reset_is_not_an_error_burst() {
    let mut rig = Rig::new(1);
    rig.step(&with(
        base(),
        &[(F::PcieReplayCounter, 1_000_000.0), (F::EccSbeVolTotal, 5000.0)],
    ));
    rig.step(&with(
        base(),
        &[(F::PcieReplayCounter, 1_000_000.0), (F::EccSbeVolTotal, 5000.0)],
    ));
    // Driver reload: counters restart from zero.
    let e = rig.step(&with(base(), &[(F::PcieReplayCounter, 2.0), (F::EccSbeVolTotal, 1.0)]));
    assert!(e.findings.is_empty(), "{:?}", e.findings);
}

#[test]
fn garbage_values_never_panic_and_never_fire() {
    let mut rig = Rig::new(3);
    let garbage: Vec<(F, f64)> = F::ALL
        .iter()
        .flat_map(|f| [(*f, f64::NAN), (*f, f64::INFINITY), (*f, -1.0)])
        .collect();
    for _ in 0..3 {
        let e = rig.step(&garbage);
        assert!(e.findings.is_empty(), "{:?}", e.findings);
    }
    // Empty rows and out-of-order rows.
    rig.engine.observe_row(&row(&rig.gpus[0].clone(), T0, &[]));
    rig.engine.observe_row(&GpuSamples {
        gpu: uuid(99),
        ts_ms: i64::MIN,
        values: vec![(FieldName::Other("x".into()), f64::NAN)],
    });
    let e = rig.engine.evaluate(i64::MAX, &|_| Freshness::Fresh);
    assert!(e.gpus.len() == 4);
    // Extreme times on events and evaluations.
    for ts in [i64::MIN, i64::MAX, 0] {
        rig.engine.observe_event(&Event {
            gpu: uuid(0),
            node: NODE.into(),
            ts_ms: ts,
            kind: xid(79),
        });
        rig.engine.observe_row(&row(&uuid(0), ts, &base()));
    }
    for now in [i64::MIN, i64::MAX, 0] {
        let _ = rig.engine.evaluate(now, &|_| Freshness::MissingFromScrape);
        let _ = rig.engine.evaluate(now, &|_| Freshness::Fresh);
    }
}

#[test]
fn forget_drops_the_gpu() {
    let mut rig = Rig::new(2);
    rig.step(&base());
    rig.engine.forget(&rig.gpus[1].clone());
    assert_eq!(rig.engine.evaluate(rig.now, &|_| Freshness::Fresh).gpus.len(), 1);
}

#[test]
fn snapshot_scores_a_single_page() {
    let ids: Vec<GpuIdentity> = (0..3)
        .map(|i| {
            let mut id = GpuIdentity::new(uuid(i), NODE);
            id.model = Some(H100.to_string());
            id
        })
        .collect();
    let rows = vec![
        row(
            &uuid(0),
            T0,
            &with(
                base(),
                &[
                    (F::EccDbeVolTotal, 1.0),
                    (F::RowRemapPending, 1.0),
                    (F::XidErrors, 48.0),
                    (F::PcieReplayCounter, 9e6),
                ],
            ),
        ),
        row(&uuid(1), T0, &with(base(), &[(F::ClockThrottleReasons, 0x88 as f64)])),
        row(&uuid(2), T0, &base()),
    ];
    let e = evaluate_snapshot(&rows, &ids, &HealthRules::builtin(), &XidCatalog::builtin());
    let r0: Vec<&str> = e
        .findings
        .iter()
        .filter(|f| f.gpu.as_ref() == Some(&uuid(0)))
        .map(|f| f.rule.as_str())
        .collect();
    assert_eq!(r0, ["ecc.dbe", "remap.pending", "xid.48"]);
    assert!(has(&e, &uuid(1), "throttle.power_brake"));
    assert_eq!(e.gpus[2].state, HealthState::Healthy);
    assert!(e.notes[0].contains("pcie.replay"));
    assert_eq!(e.nodes[0].state, HealthState::Unhealthy);
    // An empty page gives an empty evaluation.
    let e = evaluate_snapshot(&[], &[], &HealthRules::builtin(), &XidCatalog::builtin());
    assert!(e.gpus.is_empty() && e.findings.is_empty());
}

#[test]
fn evaluation_serializes() {
    let (e, _) = run(&base(), &with(base(), &[(F::EccDbeVolTotal, 1.0)]), 1);
    let json = serde_json::to_string(&e).unwrap();
    assert!(json.contains("\"ecc.dbe\""));
    let back: Evaluation = serde_json::from_str(&json).unwrap();
    assert_eq!(back.findings.len(), e.findings.len());
}

#[test]
fn every_reference_xid_is_in_the_catalog() {
    let tsv = include_str!("../testdata/xid-catalog.tsv");
    let c = XidCatalog::builtin();
    let mut n = 0;
    for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let code: u32 = line.split('\t').next().unwrap().parse().unwrap();
        let e = c.lookup(code).unwrap_or_else(|| panic!("XID {code} missing"));
        assert!(!e.description.is_empty() && !e.name.is_empty());
        n += 1;
    }
    assert_eq!(c.len(), n, "no codes beyond the reference");
}
