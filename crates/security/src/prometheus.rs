//! Prometheus alerting rules over plain dcgm-exporter metrics, for users who run only
//! Prometheus and Alertmanager: the health basics (XID classes, DBE, remap failure,
//! thermal, power brake) and the security heuristics of the rule pack, rendered as a
//! rule file (`gpuwarden rules export --format prometheus`).
//!
//! The PromQL versions are approximations of the engine's rules: Prometheus has no
//! per-workload memory, so the mining heuristic cannot cut its window at a job change
//! or check flatness of the "on" phase only; see each alert's description. Output is
//! deterministic (the committed `deploy/prometheus/gpuwarden-rules.yml` is compared with
//! a fresh export in a test).

use crate::catalog::Catalog;
use crate::policy::parse_version;
use std::fmt::Write;

/// What the export needs besides the catalog.
#[derive(Debug, Clone, Default)]
pub struct ExportInputs {
    /// XID codes whose action is a GPU reset or hardware inspection (severity >= critical).
    pub xid_fatal: Vec<u32>,
    /// XID codes whose action is a node reboot (severity >= critical).
    pub xid_reboot: Vec<u32>,
    /// Approved namespace patterns (`*` wildcards); empty: no namespace alert.
    pub approved_namespaces: Vec<String>,
    /// Driver floor; `None`: no driver alert.
    pub min_driver_version: Option<String>,
}

/// Series labels that identify one GPU in dcgm-exporter's output.
const GPU: &str = "Hostname, UUID, gpu";

struct Alert {
    name: &'static str,
    expr: String,
    for_: &'static str,
    severity: &'static str,
    rule_id: String,
    mitre: Option<String>,
    summary: String,
    description: String,
}

/// Escapes a literal for a PromQL regex (RE2), turning `*` wildcards into `.*`. The
/// result goes into a backtick (raw) PromQL string, where backslashes are literal.
fn wildcard_regex(p: &str) -> String {
    let mut out = String::new();
    for c in p.chars() {
        match c {
            '*' => out.push_str(".*"),
            c if "\\.+?()[]{}|^$".contains(c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// A regex (RE2, fully anchored as Prometheus anchors it) of decimal numbers below `n`,
/// leading zeros allowed (`07` is 7).
fn below(n: u64) -> Option<String> {
    if n == 0 {
        return None;
    }
    let d: Vec<u8> = n.to_string().bytes().map(|b| b - b'0').collect();
    let mut alts = Vec::new();
    if d.len() > 1 {
        alts.push(format!("[0-9]{{1,{}}}", d.len() - 1));
    }
    for j in 0..d.len() {
        // The leading digit of a multi-digit number cannot be 0 (shorter numbers are
        // covered above); no smaller digit exists when the digit is already the lowest.
        let lo = if j == 0 && d.len() > 1 { 1 } else { 0 };
        if d[j] <= lo {
            continue;
        }
        let prefix: String = d[..j].iter().map(|x| char::from(b'0' + x)).collect();
        let rest = d.len() - j - 1;
        let digit = if lo == d[j] - 1 {
            format!("{lo}")
        } else {
            format!("[{lo}-{}]", d[j] - 1)
        };
        alts.push(format!(
            "{prefix}{digit}{}",
            if rest > 0 {
                format!("[0-9]{{{rest}}}")
            } else {
                String::new()
            }
        ));
    }
    Some(format!("0*(?:{})", alts.join("|")))
}

/// A regex of dotted versions numerically below `floor` (`550.90.07`).
pub fn version_below_regex(floor: &str) -> Option<String> {
    let c = parse_version(floor)?;
    let mut alts = Vec::new();
    for i in 0..c.len() {
        let prefix: String = c[..i].iter().map(|x| format!("0*{x}\\.")).collect();
        if let Some(b) = below(c[i]) {
            alts.push(format!("{prefix}{b}(?:\\..*)?"));
        }
        // A shorter version that is a prefix of the floor ("550.90" < "550.90.07").
        if i > 0 {
            let p: Vec<String> = c[..i].iter().map(|x| format!("0*{x}")).collect();
            alts.push(p.join("\\."));
        }
    }
    Some(alts.join("|"))
}

fn xid_expr(codes: &[u32]) -> String {
    let set = codes
        .iter()
        .map(|c| format!("DCGM_FI_DEV_XID_ERRORS == {c}"))
        .collect::<Vec<_>>()
        .join(" or ");
    // The gauge keeps its last value forever: alert only while it changed recently.
    format!("({set}) and on({GPU}) (changes(DCGM_FI_DEV_XID_ERRORS[15m]) > 0)")
}

fn alerts(catalog: &Catalog, inp: &ExportInputs) -> Vec<(&'static str, Vec<Alert>)> {
    let mut health = Vec::new();
    if !inp.xid_fatal.is_empty() {
        health.push(Alert {
            name: "GpuXidFatal",
            expr: xid_expr(&inp.xid_fatal),
            for_: "0m",
            severity: "critical",
            rule_id: "health.xid.fatal".into(),
            mitre: None,
            summary: "GPU {{ $labels.UUID }} on {{ $labels.Hostname }} reported XID {{ $value }}".into(),
            description: format!(
                "A GPU-fatal XID (memory, NVLink or board failure: {}) was reported in the last 15 minutes. Stop the GPU's work, reset the GPU, and take it out of service if it recurs.",
                inp.xid_fatal.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    if !inp.xid_reboot.is_empty() {
        health.push(Alert {
            name: "GpuXidRebootClass",
            expr: xid_expr(&inp.xid_reboot),
            for_: "0m",
            severity: "critical",
            rule_id: "health.xid.reboot".into(),
            mitre: None,
            summary: "GPU {{ $labels.UUID }} on {{ $labels.Hostname }} reported XID {{ $value }} (node reboot needed)".into(),
            description: "An XID whose recovery is a node reboot (driver/firmware state lost, GPU off the bus) was reported in the last 15 minutes. Drain and reboot the node.".into(),
        });
    }
    health.push(Alert {
        name: "GpuEccDoubleBitError",
        expr: "increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[10m]) > 0".into(),
        for_: "0m",
        severity: "critical",
        rule_id: "ecc.dbe".into(),
        mitre: None,
        summary: "Uncorrectable (double-bit) ECC error on GPU {{ $labels.UUID }} ({{ $labels.Hostname }})".into(),
        description: "The volatile DBE counter increased. The affected application got corrupted data or was killed; reset the GPU to remap the row.".into(),
    });
    health.push(Alert {
        name: "GpuRowRemapFailure",
        expr: "DCGM_FI_DEV_ROW_REMAP_FAILURE > 0".into(),
        for_: "0m",
        severity: "critical",
        rule_id: "remap.failure".into(),
        mitre: None,
        summary: "Row remapping failed on GPU {{ $labels.UUID }} ({{ $labels.Hostname }})".into(),
        description: "No spare rows are left or the remapper failed: the memory cannot heal itself. Take the GPU out of service for inspection / RMA.".into(),
    });
    health.push(Alert {
        name: "GpuThermalSlowdown",
        expr: "DCGM_FI_DEV_GPU_TEMP >= (DCGM_FI_DEV_SLOWDOWN_TEMP - 2)".into(),
        for_: "2m",
        severity: "warning",
        rule_id: "thermal.slowdown".into(),
        mitre: None,
        summary: "GPU {{ $labels.UUID }} ({{ $labels.Hostname }}) is at its slowdown temperature".into(),
        description: "The die is within 2 °C of DCGM_FI_DEV_SLOWDOWN_TEMP: hardware slowdown halves clocks. Check cooling (fans, pumps, inlet temperature).".into(),
    });
    health.push(Alert {
        name: "GpuPowerBrake",
        expr: "(DCGM_FI_DEV_CLOCK_THROTTLE_REASONS % 256) >= 128 or (DCGM_FI_DEV_CLOCKS_EVENT_REASONS % 256) >= 128".into(),
        for_: "1m",
        severity: "warning",
        rule_id: "throttle.power_brake".into(),
        mitre: None,
        summary: "External power brake on GPU {{ $labels.UUID }} ({{ $labels.Hostname }})".into(),
        description: "Clock-event bit 0x80 (HW power brake slowdown) is set: the board's power supply or the chassis asserted the brake. Check the PSUs and the facility power.".into(),
    });

    let mut sec = Vec::new();
    let meta = |id: &str| catalog.get(id).map(|r| (r.spec.mitre[0].id.clone(), r.clone()));
    if let Some((mitre, r)) = meta(crate::rules::mining::ID) {
        let (sm, dram, pcie, nv) = (
            r.p("sm_active_min"),
            r.p("dram_active_min"),
            r.p("pcie_max_bytes_per_s"),
            r.p("nvlink_max_bytes_per_s"),
        );
        let frac = (r.p("min_on_seconds") / (r.p("window_minutes") * 60.0)).clamp(0.0, 1.0);
        sec.push(Alert {
            name: "GpuCryptominingSignature",
            expr: format!(
                "avg_over_time((DCGM_FI_PROF_SM_ACTIVE >= bool {sm})[10m:30s]) >= {frac:.2}\n\
                 and on({GPU}) avg_over_time((DCGM_FI_PROF_DRAM_ACTIVE >= bool {dram})[10m:30s]) >= {frac:.2}\n\
                 and on({GPU}) max_over_time(DCGM_FI_PROF_PCIE_RX_BYTES[10m]) <= {pcie}\n\
                 and on({GPU}) max_over_time(DCGM_FI_PROF_PCIE_TX_BYTES[10m]) <= {pcie}\n\
                 unless on({GPU}) max_over_time(DCGM_FI_PROF_NVLINK_RX_BYTES[10m]) > {nv}\n\
                 unless on({GPU}) max_over_time(DCGM_FI_PROF_NVLINK_TX_BYTES[10m]) > {nv}"
            ),
            for_: "1m",
            severity: "critical",
            rule_id: r.spec.id.clone(),
            mitre: Some(mitre),
            summary: "Cryptomining signature on GPU {{ $labels.UUID }} ({{ $labels.Hostname }})".into(),
            description: format!(
                "SM and DRAM pinned (>= {sm} / >= {dram}) for at least {:.0}% of the last 10 minutes with no PCIe (<= {pcie} B/s) or NVLink (<= {nv} B/s) traffic. Approximation of {}: no flatness check and no cut at job changes. Playbook: docs/detections/{}.md",
                frac * 100.0, r.spec.id, r.spec.id
            ),
        });
    }
    if let (Some((mitre, r)), false) = (
        meta(crate::rules::usage::UNAPPROVED_ID),
        inp.approved_namespaces.is_empty(),
    ) {
        let re = inp
            .approved_namespaces
            .iter()
            .map(|p| wildcard_regex(p))
            .collect::<Vec<_>>()
            .join("|");
        sec.push(Alert {
            name: "GpuUnapprovedNamespace",
            expr: format!(
                "count by (Hostname, UUID, gpu, namespace, pod) (DCGM_FI_DEV_GPU_UTIL{{namespace!=\"\", namespace!~`{re}`}}) > 0"
            ),
            for_: "1m",
            severity: "warning",
            rule_id: r.spec.id.clone(),
            mitre: Some(mitre),
            summary: "GPU {{ $labels.UUID }} used by namespace {{ $labels.namespace }} (pod {{ $labels.pod }}), which is not approved".into(),
            description: format!("Approved namespaces: {}. Playbook: docs/detections/{}.md", inp.approved_namespaces.join(", "), r.spec.id),
        });
    }
    if let Some((mitre, r)) = meta(crate::rules::usage::GHOST_ID) {
        sec.push(Alert {
            name: "GpuGhostUse",
            expr: format!(
                "avg_over_time(DCGM_FI_PROF_SM_ACTIVE{{pod=\"\", hpc_job=\"\"}}[5m]) > {}\n\
                 and on(Hostname) (count by (Hostname) (DCGM_FI_DEV_GPU_UTIL{{pod!=\"\"}}) or count by (Hostname) (DCGM_FI_DEV_GPU_UTIL{{hpc_job!=\"\"}}))",
                r.p("busy_sm_min")
            ),
            for_: "2m",
            severity: "critical",
            rule_id: r.spec.id.clone(),
            mitre: Some(mitre),
            summary: "GPU {{ $labels.UUID }} on {{ $labels.Hostname }} is busy but no pod or job holds it".into(),
            description: format!("Judged only on nodes where other GPUs show pod or job labels (the exporter attributes work there). Playbook: docs/detections/{}.md", r.spec.id),
        });
    }
    if let Some((mitre, r)) = meta(crate::rules::drift::POWER_ID) {
        sec.push(Alert {
            name: "GpuPowerLimitChanged",
            expr: "changes(DCGM_FI_DEV_POWER_MGMT_LIMIT[1h]) > 0".into(),
            for_: "0m",
            severity: "warning",
            rule_id: r.spec.id.clone(),
            mitre: Some(mitre),
            summary: "Power limit of GPU {{ $labels.UUID }} ({{ $labels.Hostname }}) changed in the last hour".into(),
            description: format!("Miners tune the limit for hash per watt; anyone changing it needs root on the node. Playbook: docs/detections/{}.md", r.spec.id),
        });
    }
    if let Some((mitre, r)) = meta(crate::rules::drift::CONFIG_ID) {
        sec.push(Alert {
            name: "GpuSecurityModeChanged",
            expr: "changes(DCGM_FI_DEV_ECC_CURRENT[1h]) > 0 or changes(DCGM_FI_DEV_MIG_MODE[1h]) > 0 or changes(DCGM_FI_DEV_PERSISTENCE_MODE[1h]) > 0 or changes(DCGM_FI_DEV_COMPUTE_MODE[1h]) > 0".into(),
            for_: "0m",
            severity: "warning",
            rule_id: r.spec.id.clone(),
            mitre: Some(mitre),
            summary: "ECC, MIG, persistence or compute mode of GPU {{ $labels.UUID }} ({{ $labels.Hostname }}) changed".into(),
            description: format!("Needs the mode fields in dcgm-exporter's counters CSV. Playbook: docs/detections/{}.md", r.spec.id),
        });
    }
    if let (Some((mitre, r)), Some(floor)) = (meta(crate::rules::drift::DRIVER_ID), inp.min_driver_version.as_deref()) {
        if let Some(re) = version_below_regex(floor) {
            sec.push(Alert {
                name: "GpuDriverBelowFloor",
                expr: format!("count by (Hostname, DCGM_FI_DRIVER_VERSION) (DCGM_FI_DEV_GPU_TEMP{{DCGM_FI_DRIVER_VERSION=~`{re}`}}) > 0"),
                for_: "0m",
                severity: "critical",
                rule_id: r.spec.id.clone(),
                mitre: Some(mitre),
                summary: "Driver {{ $labels.DCGM_FI_DRIVER_VERSION }} on {{ $labels.Hostname }} is below the security floor".into(),
                description: format!("Security-bulletin floor: {floor}. Playbook: docs/detections/{}.md", r.spec.id),
            });
        }
    }
    vec![("gpuwarden-health", health), ("gpuwarden-security", sec)]
}

/// YAML double-quoted string.
fn q(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Renders the rule file.
pub fn export(catalog: &Catalog, inp: &ExportInputs) -> String {
    let mut y = String::new();
    y.push_str("# Prometheus alerting rules over plain dcgm-exporter metrics, generated by\n");
    y.push_str("# `gpuwarden rules export --format prometheus`. Do not edit: regenerate.\n");
    y.push_str("# Health basics and approximations of gpuwarden's security rule pack\n");
    y.push_str("# (docs/detections/). Labels: severity, rule_id, mitre_technique.\n");
    y.push_str("groups:\n");
    for (group, alerts) in alerts(catalog, inp) {
        let _ = writeln!(y, "  - name: {group}\n    rules:");
        for a in alerts {
            let _ = writeln!(y, "      - alert: {}", a.name);
            if a.expr.contains('\n') {
                y.push_str("        expr: |-\n");
                for line in a.expr.lines() {
                    let _ = writeln!(y, "          {line}");
                }
            } else {
                let _ = writeln!(y, "        expr: {}", q(&a.expr));
            }
            let _ = writeln!(y, "        for: {}", a.for_);
            y.push_str("        labels:\n");
            let _ = writeln!(y, "          severity: {}", a.severity);
            let _ = writeln!(y, "          rule_id: {}", q(&a.rule_id));
            if let Some(m) = &a.mitre {
                let _ = writeln!(y, "          mitre_technique: {m}");
            }
            y.push_str("        annotations:\n");
            let _ = writeln!(y, "          summary: {}", q(&a.summary));
            let _ = writeln!(y, "          description: {}", q(&a.description));
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny anchored matcher for the regex subset `below` emits, to check it without
    /// a regex engine: enumerate numbers instead.
    fn below_matches(n: u64, s: &str) -> bool {
        // Leading zeros are allowed; the value decides.
        s.chars().all(|c| c.is_ascii_digit())
            && !s.is_empty()
            && s.trim_start_matches('0').parse::<u64>().unwrap_or(0) < n
    }

    #[test]
    fn below_regex_alternatives_cover_exactly_the_smaller_numbers() {
        // Structural check: every alternative is a pattern over digits; the semantic
        // check is done by promtool in crates/gpuwarden/tests/promtool_rules.rs.
        assert_eq!(below(0), None);
        assert_eq!(below(7).unwrap(), "0*(?:[0-6])");
        assert_eq!(below(90).unwrap(), "0*(?:[0-9]{1,1}|[1-8][0-9]{1})");
        assert_eq!(below(550).unwrap(), "0*(?:[0-9]{1,2}|[1-4][0-9]{2}|5[0-4][0-9]{1})");
        assert_eq!(below(10).unwrap(), "0*(?:[0-9]{1,1})");
        assert!(below_matches(90, "089") && !below_matches(90, "90"));
    }

    #[test]
    fn namespace_patterns_become_escaped_regexes() {
        assert_eq!(wildcard_regex("team-*"), "team-.*");
        assert_eq!(wildcard_regex("a.b"), "a\\.b");
    }

    #[test]
    fn export_is_deterministic_and_names_every_alert() {
        let inp = ExportInputs {
            xid_fatal: vec![48, 79],
            xid_reboot: vec![119],
            approved_namespaces: vec!["ml-training".into()],
            min_driver_version: Some("550.90.07".into()),
        };
        let a = export(&Catalog::builtin(), &inp);
        assert_eq!(a, export(&Catalog::builtin(), &inp));
        for name in [
            "GpuXidFatal",
            "GpuCryptominingSignature",
            "GpuUnapprovedNamespace",
            "GpuDriverBelowFloor",
            "GpuPowerBrake",
        ] {
            assert!(a.contains(name), "{name}");
        }
        assert!(a.contains("mitre_technique: T1496"));
    }
}
