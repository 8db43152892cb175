//! The health rule set: typed thresholds loaded from `rules/health.toml` (embedded), with
//! user overrides merged in from the config's `[health]` table.
//!
//! The file is the documentation: each rule's comment there says what it checks and
//! why. This module only gives it types. A rule's id is its path in the file
//! (`ecc.sbe_rate`), so ids are stable and users override the same names they see in
//! findings.
//!
//! Overrides are merged at the TOML level (an override may set one key of one rule) and
//! the merged table is then deserialized with `deny_unknown_fields`, so a misspelt key
//! is an error that names it instead of a silently ignored setting.

use crate::error::DetectError;
use gpuwarden_model::{Action, Dimension, Severity};
use serde::{Deserialize, Serialize};

const BUILTIN: &str = include_str!("../rules/health.toml");

/// What every rule has, whatever it checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleMeta {
    pub id: &'static str,
    pub enabled: bool,
    pub dimension: Dimension,
    pub severity: Severity,
    pub action: Action,
    pub points: f64,
}

macro_rules! rule {
    ($(#[$m:meta])* $name:ident { $( $(#[$fm:meta])* $f:ident : $t:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// Turns the rule off.
            pub enabled: bool,
            /// Health dimension the rule's points come off.
            pub dimension: Dimension,
            pub severity: Severity,
            /// Recommended action while the condition holds.
            pub action: Action,
            /// Points taken off the dimension while the condition holds.
            pub points: f64,
            $( $(#[$fm])* pub $f: $t, )*
        }

        impl $name {
            /// The rule's common fields, under its id.
            pub fn meta(&self, id: &'static str) -> RuleMeta {
                RuleMeta {
                    id,
                    enabled: self.enabled,
                    dimension: self.dimension,
                    severity: self.severity,
                    action: self.action,
                    points: self.points,
                }
            }
        }
    };
}

rule!(
    /// A condition with no threshold of its own (a flag is set, a GPU vanished).
    FlagRule {}
);
rule!(
    /// Corrected ECC errors in the trailing hour.
    SbeRateRule {
        max_per_hour: f64,
    }
);
rule!(
    /// Any increase of a counter within a window of minutes.
    IncreaseRule {
        window_minutes: u32,
    }
);
rule!(
    /// Any increase of a counter within a window of hours.
    IncreaseHoursRule {
        window_hours: u32,
    }
);
rule!(
    /// A page count above a maximum.
    PagesRule {
        max_pages: f64,
    }
);
rule!(
    /// Within a margin of a temperature limit.
    MarginRule {
        margin_c: f64,
    }
);
rule!(
    /// At or above a temperature.
    TempRule {
        max_c: f64,
    }
);
rule!(
    /// A condition that must hold for several evaluations in a row.
    SustainedRule {
        min_evaluations: u32,
    }
);
rule!(
    /// Power above a ratio of the limit, sustained.
    PowerRule {
        max_ratio: f64,
        min_evaluations: u32,
    }
);
rule!(
    /// A counter's rate per minute over a window.
    RateRule {
        max_per_minute: f64,
        window_minutes: u32,
    }
);
rule!(
    /// Clocks below peers under load.
    StragglerRule {
        below_median_percent: f64,
        min_utilization: f64,
        min_cohort: u32,
        min_evaluations: u32,
    }
);

/// Score → state thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreRules {
    /// Healthy: score ≥ this and no critical or fatal finding.
    pub healthy_min: f64,
    /// Unhealthy: score < this, or any critical or fatal finding.
    pub unhealthy_below: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EccRules {
    pub sbe_rate: SbeRateRule,
    pub dbe: IncreaseRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemapRules {
    pub pending: FlagRule,
    pub failure: FlagRule,
    pub uncorrectable_rows: IncreaseHoursRule,
    pub correctable_rows: IncreaseHoursRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredRules {
    pub pending: FlagRule,
    pub total: PagesRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThermalRules {
    pub margin: MarginRule,
    pub slowdown: FlagRule,
    pub memory: TempRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleRules {
    pub thermal: SustainedRule,
    pub power_brake: SustainedRule,
    pub sw_power_cap: SustainedRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerRules {
    pub over_limit: PowerRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NvlinkRules {
    pub crc: RateRule,
    pub replay: RateRule,
    pub recovery: RateRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcieRules {
    pub replay: RateRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockRules {
    pub straggler: StragglerRule,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuRules {
    pub fallen_off_bus: FlagRule,
}

/// XID handling: points by catalog severity, hold times, repeat escalation, node-wide
/// detection. See `[xid]` in `rules/health.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XidRules {
    pub enabled: bool,
    pub points_info: f64,
    pub points_warning: f64,
    pub points_critical: f64,
    pub points_fatal: f64,
    pub memory_codes: Vec<u32>,
    pub hold_minutes_info: u32,
    pub hold_minutes_warning: u32,
    pub hold_minutes_critical: u32,
    pub hold_minutes_fatal: u32,
    pub repeat_window_days: u32,
    pub repeat_count: u32,
    pub episode_gap_minutes: u32,
    pub node_wide_min_gpus: u32,
    pub node_wide_min_fraction: f64,
    pub node_wide_window_minutes: u32,
}

impl XidRules {
    pub fn points(&self, s: Severity) -> f64 {
        match s {
            Severity::Info => self.points_info,
            Severity::Warning => self.points_warning,
            Severity::Critical => self.points_critical,
            Severity::Fatal => self.points_fatal,
        }
    }

    pub fn hold_ms(&self, s: Severity) -> i64 {
        let m = match s {
            Severity::Info => self.hold_minutes_info,
            Severity::Warning => self.hold_minutes_warning,
            Severity::Critical => self.hold_minutes_critical,
            Severity::Fatal => self.hold_minutes_fatal,
        };
        i64::from(m) * 60_000
    }
}

/// The whole rule set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthRules {
    pub score: ScoreRules,
    pub ecc: EccRules,
    pub remap: RemapRules,
    pub retired: RetiredRules,
    pub thermal: ThermalRules,
    pub throttle: ThrottleRules,
    pub power: PowerRules,
    pub nvlink: NvlinkRules,
    pub pcie: PcieRules,
    pub clocks: ClockRules,
    pub gpu: GpuRules,
    pub xid: XidRules,
}

impl HealthRules {
    /// The rules shipped with gpuwarden (`rules/health.toml`).
    pub fn builtin() -> Self {
        match Self::from_table(builtin_table()) {
            Ok(r) => r,
            // A test checks the built-in file; this cannot happen in a released build.
            Err(e) => panic!("built-in health rules are invalid: {e}"),
        }
    }

    /// The built-in rules with `overrides` (the config's `[health]` table) merged in.
    /// A key the rule file does not have is an error naming it.
    pub fn with_overrides(overrides: toml::Table) -> Result<Self, DetectError> {
        let mut base = builtin_table();
        merge(&mut base, overrides, "")?;
        Self::from_table(base)
    }

    /// Parses a complete rule file (every key present).
    pub fn from_toml(text: &str) -> Result<Self, DetectError> {
        let table: toml::Table = toml::from_str(text)?;
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Self, DetectError> {
        let rules: HealthRules = toml::Value::Table(table).try_into()?;
        rules.validate()?;
        Ok(rules)
    }

    /// Every rule's common fields, for listing and docs.
    pub fn metas(&self) -> Vec<RuleMeta> {
        vec![
            self.ecc.sbe_rate.meta(ids::ECC_SBE_RATE),
            self.ecc.dbe.meta(ids::ECC_DBE),
            self.remap.pending.meta(ids::REMAP_PENDING),
            self.remap.failure.meta(ids::REMAP_FAILURE),
            self.remap.uncorrectable_rows.meta(ids::REMAP_UNCORRECTABLE_ROWS),
            self.remap.correctable_rows.meta(ids::REMAP_CORRECTABLE_ROWS),
            self.retired.pending.meta(ids::RETIRED_PENDING),
            self.retired.total.meta(ids::RETIRED_TOTAL),
            self.thermal.margin.meta(ids::THERMAL_MARGIN),
            self.thermal.slowdown.meta(ids::THERMAL_SLOWDOWN),
            self.thermal.memory.meta(ids::THERMAL_MEMORY),
            self.throttle.thermal.meta(ids::THROTTLE_THERMAL),
            self.throttle.power_brake.meta(ids::THROTTLE_POWER_BRAKE),
            self.throttle.sw_power_cap.meta(ids::THROTTLE_SW_POWER_CAP),
            self.power.over_limit.meta(ids::POWER_OVER_LIMIT),
            self.nvlink.crc.meta(ids::NVLINK_CRC),
            self.nvlink.replay.meta(ids::NVLINK_REPLAY),
            self.nvlink.recovery.meta(ids::NVLINK_RECOVERY),
            self.pcie.replay.meta(ids::PCIE_REPLAY),
            self.clocks.straggler.meta(ids::CLOCKS_STRAGGLER),
            self.gpu.fallen_off_bus.meta(ids::GPU_FALLEN_OFF_BUS),
        ]
    }

    fn validate(&self) -> Result<(), DetectError> {
        let bad = |key: &str, problem: &str| {
            Err(DetectError::InvalidValue {
                key: key.to_string(),
                problem: problem.to_string(),
            })
        };
        for m in self.metas() {
            if !(m.points.is_finite() && (0.0..=100.0).contains(&m.points)) {
                return bad(&format!("{}.points", m.id), "must be between 0 and 100");
            }
        }
        let s = &self.score;
        if !(s.unhealthy_below.is_finite() && s.healthy_min.is_finite() && s.unhealthy_below <= s.healthy_min) {
            return bad(
                "score.unhealthy_below",
                "must be a number no greater than score.healthy_min",
            );
        }
        let nonneg = [
            ("ecc.sbe_rate.max_per_hour", self.ecc.sbe_rate.max_per_hour),
            ("retired.total.max_pages", self.retired.total.max_pages),
            ("thermal.margin.margin_c", self.thermal.margin.margin_c),
            ("power.over_limit.max_ratio", self.power.over_limit.max_ratio),
            ("nvlink.crc.max_per_minute", self.nvlink.crc.max_per_minute),
            ("nvlink.replay.max_per_minute", self.nvlink.replay.max_per_minute),
            ("nvlink.recovery.max_per_minute", self.nvlink.recovery.max_per_minute),
            ("pcie.replay.max_per_minute", self.pcie.replay.max_per_minute),
            (
                "clocks.straggler.below_median_percent",
                self.clocks.straggler.below_median_percent,
            ),
            (
                "clocks.straggler.min_utilization",
                self.clocks.straggler.min_utilization,
            ),
            ("xid.node_wide_min_fraction", self.xid.node_wide_min_fraction),
        ];
        for (k, v) in nonneg {
            if !(v.is_finite() && v >= 0.0) {
                return bad(k, "must be a number >= 0");
            }
        }
        let positive = [
            ("ecc.dbe.window_minutes", self.ecc.dbe.window_minutes),
            (
                "remap.uncorrectable_rows.window_hours",
                self.remap.uncorrectable_rows.window_hours,
            ),
            (
                "remap.correctable_rows.window_hours",
                self.remap.correctable_rows.window_hours,
            ),
            (
                "throttle.thermal.min_evaluations",
                self.throttle.thermal.min_evaluations,
            ),
            (
                "throttle.power_brake.min_evaluations",
                self.throttle.power_brake.min_evaluations,
            ),
            (
                "throttle.sw_power_cap.min_evaluations",
                self.throttle.sw_power_cap.min_evaluations,
            ),
            (
                "power.over_limit.min_evaluations",
                self.power.over_limit.min_evaluations,
            ),
            ("nvlink.crc.window_minutes", self.nvlink.crc.window_minutes),
            ("nvlink.replay.window_minutes", self.nvlink.replay.window_minutes),
            ("nvlink.recovery.window_minutes", self.nvlink.recovery.window_minutes),
            ("pcie.replay.window_minutes", self.pcie.replay.window_minutes),
            (
                "clocks.straggler.min_evaluations",
                self.clocks.straggler.min_evaluations,
            ),
            ("clocks.straggler.min_cohort", self.clocks.straggler.min_cohort),
            ("xid.repeat_window_days", self.xid.repeat_window_days),
            ("xid.repeat_count", self.xid.repeat_count),
            ("xid.node_wide_min_gpus", self.xid.node_wide_min_gpus),
            ("xid.node_wide_window_minutes", self.xid.node_wide_window_minutes),
        ];
        for (k, v) in positive {
            if v == 0 {
                return bad(k, "must be at least 1");
            }
        }
        for (k, v) in [
            ("xid.points_info", self.xid.points_info),
            ("xid.points_warning", self.xid.points_warning),
            ("xid.points_critical", self.xid.points_critical),
            ("xid.points_fatal", self.xid.points_fatal),
        ] {
            if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
                return bad(k, "must be between 0 and 100");
            }
        }
        Ok(())
    }
}

impl Default for HealthRules {
    fn default() -> Self {
        Self::builtin()
    }
}

/// Stable rule ids (the rule's path in `rules/health.toml`).
pub mod ids {
    pub const ECC_SBE_RATE: &str = "ecc.sbe_rate";
    pub const ECC_DBE: &str = "ecc.dbe";
    pub const REMAP_PENDING: &str = "remap.pending";
    pub const REMAP_FAILURE: &str = "remap.failure";
    pub const REMAP_UNCORRECTABLE_ROWS: &str = "remap.uncorrectable_rows";
    pub const REMAP_CORRECTABLE_ROWS: &str = "remap.correctable_rows";
    pub const RETIRED_PENDING: &str = "retired.pending";
    pub const RETIRED_TOTAL: &str = "retired.total";
    pub const THERMAL_MARGIN: &str = "thermal.margin";
    pub const THERMAL_SLOWDOWN: &str = "thermal.slowdown";
    pub const THERMAL_MEMORY: &str = "thermal.memory";
    pub const THROTTLE_THERMAL: &str = "throttle.thermal";
    pub const THROTTLE_POWER_BRAKE: &str = "throttle.power_brake";
    pub const THROTTLE_SW_POWER_CAP: &str = "throttle.sw_power_cap";
    pub const POWER_OVER_LIMIT: &str = "power.over_limit";
    pub const NVLINK_CRC: &str = "nvlink.crc";
    pub const NVLINK_REPLAY: &str = "nvlink.replay";
    pub const NVLINK_RECOVERY: &str = "nvlink.recovery";
    pub const PCIE_REPLAY: &str = "pcie.replay";
    pub const CLOCKS_STRAGGLER: &str = "clocks.straggler";
    pub const GPU_FALLEN_OFF_BUS: &str = "gpu.fallen_off_bus";
    /// Node-level: the same XID on many GPUs of one node.
    pub const XID_NODE_WIDE: &str = "xid.node_wide";
}

fn builtin_table() -> toml::Table {
    toml::from_str(BUILTIN).unwrap_or_default()
}

/// Merges `over` into `base`; every key of `over` must exist in `base` with the same
/// shape (table vs value).
fn merge(base: &mut toml::Table, over: toml::Table, prefix: &str) -> Result<(), DetectError> {
    for (k, v) in over {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let Some(slot) = base.get_mut(&k) else {
            return Err(DetectError::UnknownKey(path));
        };
        match (slot, v) {
            (toml::Value::Table(b), toml::Value::Table(o)) => merge(b, o, &path)?,
            (toml::Value::Table(_), _) => {
                return Err(DetectError::WrongShape {
                    key: path,
                    expected: "a table",
                })
            }
            (_, toml::Value::Table(_)) => {
                return Err(DetectError::WrongShape {
                    key: path,
                    expected: "a value, not a table",
                })
            }
            (slot, v) => {
                // Let users write `points = 20` for a float field.
                *slot = match (&*slot, v) {
                    (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
                    (_, v) => v,
                };
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_parse_and_validate() {
        let t: toml::Table = toml::from_str(BUILTIN).unwrap();
        let r = HealthRules::from_table(t).unwrap();
        assert_eq!(r.score.healthy_min, 90.0);
        assert_eq!(r.ecc.dbe.action, Action::ResetGpu);
        assert!(r.metas().iter().all(|m| m.id.contains('.')));
    }

    #[test]
    fn override_changes_one_threshold() {
        let over: toml::Table = toml::from_str("[ecc.sbe_rate]\nmax_per_hour = 500\n").unwrap();
        let r = HealthRules::with_overrides(over).unwrap();
        assert_eq!(r.ecc.sbe_rate.max_per_hour, 500.0);
        assert_eq!(r.ecc.sbe_rate.points, HealthRules::builtin().ecc.sbe_rate.points);
    }

    #[test]
    fn unknown_override_key_is_named_in_the_error() {
        let over: toml::Table = toml::from_str("[ecc.sbe_rate]\nmax_per_hr = 500\n").unwrap();
        let e = HealthRules::with_overrides(over).unwrap_err();
        assert!(
            matches!(&e, DetectError::UnknownKey(k) if k == "ecc.sbe_rate.max_per_hr"),
            "{e}"
        );
        assert!(e.to_string().contains("ecc.sbe_rate.max_per_hr"));
    }

    #[test]
    fn wrong_type_and_range_are_errors() {
        let over: toml::Table = toml::from_str("[ecc]\nsbe_rate = 3\n").unwrap();
        assert!(matches!(
            HealthRules::with_overrides(over),
            Err(DetectError::WrongShape { .. })
        ));
        let over: toml::Table = toml::from_str("[ecc.dbe]\npoints = 500.0\n").unwrap();
        assert!(matches!(
            HealthRules::with_overrides(over),
            Err(DetectError::InvalidValue { .. })
        ));
        let over: toml::Table = toml::from_str("[ecc.dbe]\nseverity = \"dire\"\n").unwrap();
        assert!(matches!(HealthRules::with_overrides(over), Err(DetectError::Rules(_))));
    }

    #[test]
    fn rule_can_be_disabled() {
        let over: toml::Table = toml::from_str("[pcie.replay]\nenabled = false\n").unwrap();
        assert!(!HealthRules::with_overrides(over).unwrap().pcie.replay.enabled);
    }
}
