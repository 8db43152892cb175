//! The `[security]` section of gpuwarden's config: the policy the rules enforce
//! (approved namespaces and accounts, business hours, allowlists, the driver floor, the
//! golden baseline) and per-rule overrides. Deserialized with `deny_unknown_fields`, then
//! compiled once into a [`crate::policy::Policy`]; a bad value is an error that names it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The security policy as the user writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Turns every security detection off.
    pub enabled: bool,
    /// Kubernetes namespaces allowed to use GPUs: exact names or `*` wildcards
    /// (`team-*`). Empty: no namespace policy, and `sec.use.unapproved_namespace` only
    /// checks Slurm accounts.
    pub approved_namespaces: Vec<String>,
    /// Slurm accounts allowed to use GPUs (matched against an `account` or
    /// `slurm_account` label, when the exporter attaches one). Empty: no account policy.
    pub approved_accounts: Vec<String>,
    /// Business hours in local time, e.g. `"mon-fri 07:00-20:00"`, `"sat 09:00-13:00"`,
    /// `"daily 08:00-18:00"`. Outside them is "off-hours" for `sec.use.off_hours` and
    /// `sec.behaviour.off_hours_change`.
    pub business_hours: Vec<String>,
    /// Local time's offset from UTC in minutes (e.g. 60 for CET, -300 for EST).
    pub utc_offset_minutes: i32,
    /// Namespaces whose GPU use is approved only during business hours (interactive,
    /// personal or student namespaces). Empty: `sec.use.off_hours` flags nothing.
    pub hours_restricted_namespaces: Vec<String>,
    /// Workloads exempt from the mining, ghost and behaviour rules, e.g. a known
    /// memory-bound benchmark: `"namespace/pod"` patterns (`"ml-training/membench-*"`)
    /// or `"job:PATTERN"` for Slurm job ids.
    pub allowlist: Vec<String>,
    /// Expect workload labels (pod or job) on every node. When false, a busy GPU without
    /// labels is "ghost" use only on nodes where other GPUs do show labels (so a node
    /// whose exporter has no pod mapping does not flag every busy GPU).
    pub attribution_expected: bool,
    /// Lowest acceptable driver version, from NVIDIA's latest security bulletin that
    /// applies to the fleet (e.g. `"550.127.05"`). Unset: `sec.drift.driver_floor` is off.
    pub min_driver_version: Option<String>,
    /// Golden baseline per node name, `"*"` for every node. A setting not given is
    /// learned: the value a GPU showed when gpuwarden first saw it.
    pub baseline: BTreeMap<String, NodeBaseline>,
    /// Per-rule overrides: `[security.rules."sec.mining.telemetry"] sm_active_min = 0.75`,
    /// `enabled = false`, `severity = "warning"`.
    pub rules: toml::Table,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            enabled: true,
            approved_namespaces: Vec::new(),
            approved_accounts: Vec::new(),
            business_hours: vec!["mon-fri 07:00-20:00".into()],
            utc_offset_minutes: 0,
            hours_restricted_namespaces: Vec::new(),
            allowlist: Vec::new(),
            attribution_expected: false,
            min_driver_version: None,
            baseline: BTreeMap::new(),
            rules: toml::Table::new(),
        }
    }
}

/// The golden configuration of a node's GPUs. Every field is optional: what is not
/// given is learned from first sight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeBaseline {
    /// Exact driver version expected (`DCGM_FI_DRIVER_VERSION` label).
    pub driver_version: Option<String>,
    /// ECC mode (`DCGM_FI_DEV_ECC_CURRENT`): 1 enabled, 0 disabled.
    pub ecc_mode: Option<u8>,
    /// Persistence mode (`DCGM_FI_DEV_PERSISTENCE_MODE`): 1 enabled.
    pub persistence_mode: Option<u8>,
    /// MIG mode (`DCGM_FI_DEV_MIG_MODE`): 1 enabled.
    pub mig_mode: Option<u8>,
    /// Compute mode (`DCGM_FI_DEV_COMPUTE_MODE`): 0 default, 2 prohibited, 3 exclusive process.
    pub compute_mode: Option<u8>,
    /// Power limit in watts (`DCGM_FI_DEV_POWER_MGMT_LIMIT`).
    pub power_limit_w: Option<f64>,
    /// GPUs the node should have. A GPU beyond them, or one missing, is inventory drift.
    pub gpu_count: Option<usize>,
    /// UUIDs the node should have. Any other UUID on the node is inventory drift.
    pub gpus: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_rejects_typos() {
        let text = r#"
approved_namespaces = ["ml-training", "team-*"]
business_hours = ["mon-fri 08:00-18:00"]
min_driver_version = "550.127.05"
[baseline."*"]
ecc_mode = 1
power_limit_w = 700
[rules."sec.mining.telemetry"]
sm_active_min = 0.75
"#;
        let c: SecurityConfig = toml::from_str(text).unwrap();
        assert!(c.enabled);
        assert_eq!(c.baseline["*"].ecc_mode, Some(1));
        let back: SecurityConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let e = toml::from_str::<SecurityConfig>("approved_namespace = []").unwrap_err();
        assert!(e.to_string().contains("approved_namespace"), "{e}");
    }
}
