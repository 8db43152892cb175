//! Configuration drift against the golden baseline (configured per node, else learned at
//! first sight): `sec.drift.driver_floor`, `sec.drift.config` (ECC, persistence, MIG,
//! compute mode, driver), `sec.drift.power_limit`, `sec.drift.inventory` (GPUs that
//! appear on a known node or go missing from it).
//!
//! A setting the exporter does not export is not checked: absent is "unknown", and the
//! rule says nothing rather than calling it compliant.

use super::{ev, ms, Ctx, Hit};
use crate::catalog::Rule;
use crate::policy::parse_version;
use gpuwarden_model::{DcgmField, Freshness};

pub const DRIVER_ID: &str = "sec.drift.driver_floor";
pub const CONFIG_ID: &str = "sec.drift.config";
pub const POWER_ID: &str = "sec.drift.power_limit";
pub const POWER_PARAMS: &[&str] = &["tolerance_w", "tolerance_fraction"];
pub const INVENTORY_ID: &str = "sec.drift.inventory";
pub const INVENTORY_PARAMS: &[&str] = &["learn_minutes", "hold_minutes"];

pub fn driver_floor(_rule: &Rule, ctx: &Ctx) -> Option<Hit> {
    let (floor_s, floor) = ctx.policy.min_driver.as_ref()?;
    let v = ctx.gpu.identity.driver_version.as_deref()?;
    let have = parse_version(v)?;
    if have >= *floor {
        return None;
    }
    Some(Hit {
        summary: format!("driver {v} is below the security-bulletin floor {floor_s}: known driver vulnerabilities are reachable from GPU containers on this node"),
        evidence: vec![ev("driver_version.major", have[0] as f64, Some(floor[0] as f64), ctx.now)],
        labels: vec![("gpuwarden.driver.floor".into(), floor_s.clone())],
    })
}

pub fn config(_rule: &Rule, ctx: &Ctx) -> Option<Hit> {
    let g = ctx.gpu;
    let b = ctx.policy.baseline_for(&g.identity.node);
    let modes = [
        (DcgmField::EccCurrent, "ecc_mode", b.and_then(|b| b.ecc_mode)),
        (
            DcgmField::PersistenceMode,
            "persistence_mode",
            b.and_then(|b| b.persistence_mode),
        ),
        (DcgmField::MigMode, "mig_mode", b.and_then(|b| b.mig_mode)),
        (DcgmField::ComputeMode, "compute_mode", b.and_then(|b| b.compute_mode)),
    ];
    let mut parts = Vec::new();
    let mut evidence = Vec::new();
    let mut settings = Vec::new();
    for (field, name, configured) in modes {
        let Some(now_v) = g.config_now.get(&field).copied() else {
            continue;
        };
        let Some(want) = configured
            .map(f64::from)
            .or_else(|| g.config_first.get(&field).copied())
        else {
            continue;
        };
        if now_v.round() != want.round() {
            parts.push(format!("{name} {now_v:.0} (baseline {want:.0})"));
            evidence.push(ev(field.as_str(), now_v, Some(want), ctx.now));
            settings.push(name);
        }
    }
    let want_driver = b
        .and_then(|b| b.driver_version.clone())
        .or_else(|| g.driver_first.clone());
    if let (Some(have), Some(want)) = (g.identity.driver_version.as_deref(), want_driver.as_deref()) {
        if have != want {
            parts.push(format!("driver {have} (baseline {want})"));
            settings.push("driver_version");
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(Hit {
        summary: format!(
            "GPU configuration differs from the node's baseline: {}",
            parts.join(", ")
        ),
        evidence,
        labels: vec![("gpuwarden.drift.setting".into(), settings.join(","))],
    })
}

pub fn power_limit(rule: &Rule, ctx: &Ctx) -> Option<Hit> {
    let g = ctx.gpu;
    let now_w = g.config_now.get(&DcgmField::PowerMgmtLimit).copied()?;
    let want = ctx
        .policy
        .baseline_for(&g.identity.node)
        .and_then(|b| b.power_limit_w)
        .or_else(|| g.config_first.get(&DcgmField::PowerMgmtLimit).copied())?;
    let tol = rule.p("tolerance_w").max(rule.p("tolerance_fraction") * want);
    // NaN tolerance (a broken override) makes `exceeds` false: no finding.
    let exceeds = (now_w - want).abs().partial_cmp(&tol) == Some(std::cmp::Ordering::Greater);
    if !exceeds {
        return None;
    }
    Some(Hit {
        summary: format!(
            "power limit is {now_w:.0} W, baseline {want:.0} W (tolerance {tol:.0} W): changed on the node"
        ),
        evidence: vec![ev(DcgmField::PowerMgmtLimit.as_str(), now_w, Some(want), ctx.now)],
        labels: Vec::new(),
    })
}

pub fn inventory(rule: &Rule, ctx: &Ctx) -> Option<Hit> {
    let g = ctx.gpu;
    // MIG slices come and go with re-partitioning; the MIG mode itself is config drift.
    if g.identity.mig.is_some() {
        return None;
    }
    if ctx.freshness == Freshness::MissingFromScrape || g.gone_since_ms.is_some() {
        let since = g.gone_since_ms.or(g.last_row_ms).unwrap_or(ctx.now);
        return Some(Hit {
            summary: format!(
                "GPU missing from its node's scrape for {} s while the node still answers: removed, unbound from the driver or fallen off the bus",
                (ctx.now - since).max(0) / 1000
            ),
            evidence: vec![ev("inventory.missing_seconds", (ctx.now - since).max(0) as f64 / 1e3, None, ctx.now)],
            labels: vec![("gpuwarden.inventory.change".into(), "disappeared".into())],
        });
    }
    let listed = ctx
        .policy
        .baseline_for(&g.identity.node)
        .map(|b| &b.gpus)
        .filter(|l| !l.is_empty());
    let appeared = match listed {
        Some(list) => !list.iter().any(|u| u == g.identity.uuid.as_str()),
        None => {
            g.first_seen_ms > ctx.node.first_seen_ms + ms(rule.p("learn_minutes"), 60e3)
                && ctx.now - g.first_seen_ms <= ms(rule.p("hold_minutes"), 60e3)
        }
    };
    appeared.then(|| Hit {
        summary: match listed {
            Some(_) => "GPU is not in the node's baseline list of GPUs".to_string(),
            None => format!(
                "GPU appeared on a node already known for {} min",
                (g.first_seen_ms - ctx.node.first_seen_ms) / 60_000
            ),
        },
        evidence: vec![ev("inventory.first_seen_ms", g.first_seen_ms as f64, None, ctx.now)],
        labels: vec![("gpuwarden.inventory.change".into(), "appeared".into())],
    })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use crate::config::{NodeBaseline, SecurityConfig};
    use gpuwarden_model::Freshness;

    const STEP: i64 = 15_000;

    fn with_modes(ts: i64, ecc: f64, mig: f64, limit: f64) -> gpuwarden_model::GpuSamples {
        let mut r = training(ts);
        set(&mut r, F::EccCurrent, ecc);
        set(&mut r, F::MigMode, mig);
        set(&mut r, F::PersistenceMode, 1.0);
        set(&mut r, F::PowerMgmtLimit, limit);
        r
    }

    #[test]
    fn driver_below_floor_fires_and_at_floor_does_not() {
        let cfg = || SecurityConfig {
            min_driver_version: Some("550.127.05".into()),
            ..SecurityConfig::default()
        };
        let mut t = Tk::with_config(super::DRIVER_ID, cfg());
        t.set_driver("550.90.07");
        assert!(t.feed_until(60_000, STEP, training).is_some());
        let mut t = Tk::with_config(super::DRIVER_ID, cfg());
        t.set_driver("550.127.05");
        assert_eq!(t.feed_until(60_000, STEP, training), None);
        // No floor configured, or no driver label: no conclusion.
        let mut t = Tk::new(super::DRIVER_ID);
        t.set_driver("418.1");
        assert_eq!(t.feed_until(60_000, STEP, training), None);
    }

    #[test]
    fn mig_or_ecc_switched_off_after_first_sight_is_drift() {
        let mut t = Tk::new(super::CONFIG_ID);
        let at = t.feed_until(20 * 60_000, STEP, |ts| {
            with_modes(ts, if ts < 10 * 60_000 { 1.0 } else { 0.0 }, 1.0, 700.0)
        });
        assert!(
            at.is_some_and(|ms| (10 * 60_000..=10 * 60_000 + STEP).contains(&ms)),
            "{at:?}"
        );
        assert_eq!(t.last.as_ref().unwrap().labels["gpuwarden.drift.setting"], "ecc_mode");
        let mut t = Tk::new(super::CONFIG_ID);
        assert_eq!(
            t.feed_until(20 * 60_000, STEP, |ts| with_modes(ts, 1.0, 1.0, 700.0)),
            None
        );
    }

    #[test]
    fn configured_baseline_wins_over_first_sight_and_driver_change_is_drift() {
        let cfg = SecurityConfig {
            baseline: [(
                "*".to_string(),
                NodeBaseline {
                    mig_mode: Some(1),
                    ..NodeBaseline::default()
                },
            )]
            .into(),
            ..SecurityConfig::default()
        };
        let mut t = Tk::with_config(super::CONFIG_ID, cfg);
        assert!(t
            .feed_until(60_000, STEP, |ts| with_modes(ts, 1.0, 0.0, 700.0))
            .is_some());

        let mut t = Tk::new(super::CONFIG_ID);
        t.set_driver("550.90.07");
        assert_eq!(t.feed_until(5 * 60_000, STEP, training), None);
        t.set_driver("535.54.03");
        assert!(t.feed_more(60_000, STEP, training).is_some());
    }

    #[test]
    fn power_limit_tuned_down_is_drift_and_rounding_is_not() {
        let mut t = Tk::new(super::POWER_ID);
        let at = t.feed_until(20 * 60_000, STEP, |ts| {
            with_modes(ts, 1.0, 0.0, if ts < 5 * 60_000 { 700.0 } else { 450.0 })
        });
        assert!(at.is_some());
        let mut t = Tk::new(super::POWER_ID);
        assert_eq!(
            t.feed_until(20 * 60_000, STEP, |ts| with_modes(
                ts,
                1.0,
                0.0,
                700.0 + (ts % 3) as f64
            )),
            None
        );
    }

    #[test]
    fn missing_gpu_is_inventory_drift_and_present_one_is_not() {
        let mut t = Tk::new(super::INVENTORY_ID);
        assert_eq!(t.feed_until(5 * 60_000, STEP, training), None);
        t.freshness = Freshness::MissingFromScrape;
        let f = t.eval(t.now + STEP).expect("missing GPU is reported");
        assert_eq!(f.labels["gpuwarden.inventory.change"], "disappeared");
        // A target that is down is not a missing GPU.
        t.freshness = Freshness::TargetDown;
        assert!(t.eval(t.now + 2 * STEP).is_none());
    }

    #[test]
    fn gpu_not_in_configured_list_appeared() {
        let cfg = SecurityConfig {
            baseline: [(
                "simnode-00".to_string(),
                NodeBaseline {
                    gpus: vec!["GPU-other".into()],
                    ..NodeBaseline::default()
                },
            )]
            .into(),
            ..SecurityConfig::default()
        };
        let mut t = Tk::with_config(super::INVENTORY_ID, cfg);
        assert!(t.feed_until(60_000, STEP, training).is_some());
    }
}
