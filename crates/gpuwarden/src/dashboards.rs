//! Grafana dashboards for users who live in Grafana: fleet health, GPU detail, security
//! and incidents. Built in code (not hand-edited JSON) so that the test command can run
//! every panel's query against a real Prometheus and so that metric names cannot drift
//! from what gpuwarden and dcgm-exporter expose.
//!
//! Every query works on plain dcgm-exporter metrics or on gpuwarden's own `/metrics`
//! (`gpuwarden_gpu_health_score`, `gpuwarden_gpu_state`, `gpuwarden_incidents_open`).

use serde_json::{json, Value};

/// One panel: a title, a Grafana panel type, and its PromQL queries with legends.
pub struct Panel {
    pub title: &'static str,
    pub kind: &'static str,
    pub unit: &'static str,
    pub queries: Vec<(&'static str, &'static str)>,
    pub description: &'static str,
}

/// One dashboard.
pub struct Dashboard {
    pub uid: &'static str,
    pub title: &'static str,
    pub file: &'static str,
    /// Template variables: (name, label_values query).
    pub variables: Vec<(&'static str, &'static str)>,
    pub panels: Vec<Panel>,
}

fn p(
    title: &'static str,
    kind: &'static str,
    unit: &'static str,
    description: &'static str,
    queries: Vec<(&'static str, &'static str)>,
) -> Panel {
    Panel {
        title,
        kind,
        unit,
        queries,
        description,
    }
}

/// The three dashboards.
pub fn all() -> Vec<Dashboard> {
    vec![fleet(), gpu_detail(), security()]
}

fn fleet() -> Dashboard {
    Dashboard {
        uid: "gpuwarden-fleet",
        title: "gpuwarden — fleet health",
        file: "gpuwarden-fleet-health.json",
        variables: vec![],
        panels: vec![
            p(
                "GPUs by health state",
                "stat",
                "none",
                "From gpuwarden: stale GPUs count as unknown, never healthy.",
                vec![("sum by (state) (gpuwarden_gpu_state)", "{{state}}")],
            ),
            p(
                "Open incidents by severity",
                "stat",
                "none",
                "Open or acknowledged incidents.",
                vec![("sum by (severity) (gpuwarden_incidents_open)", "{{severity}}")],
            ),
            p(
                "Worst GPU health scores",
                "table",
                "none",
                "Lowest overall scores (0–100).",
                vec![(
                    "bottomk(10, gpuwarden_gpu_health_score{dimension=\"overall\"})",
                    "{{node}} {{uuid}}",
                )],
            ),
            p(
                "Health by dimension (fleet minimum)",
                "bargauge",
                "none",
                "Worst GPU per dimension.",
                vec![("min by (dimension) (gpuwarden_gpu_health_score)", "{{dimension}}")],
            ),
            p(
                "GPU temperature",
                "timeseries",
                "celsius",
                "DCGM_FI_DEV_GPU_TEMP per GPU.",
                vec![("DCGM_FI_DEV_GPU_TEMP", "{{Hostname}} gpu{{gpu}}")],
            ),
            p(
                "Power draw",
                "timeseries",
                "watt",
                "DCGM_FI_DEV_POWER_USAGE per node.",
                vec![("sum by (Hostname) (DCGM_FI_DEV_POWER_USAGE)", "{{Hostname}}")],
            ),
            p(
                "GPU utilization",
                "timeseries",
                "percent",
                "Average DCGM_FI_DEV_GPU_UTIL per node.",
                vec![("avg by (Hostname) (DCGM_FI_DEV_GPU_UTIL)", "{{Hostname}}")],
            ),
            p(
                "Last XID per node",
                "table",
                "none",
                "Highest last-XID gauge on each node (0 = none).",
                vec![("max by (Hostname) (DCGM_FI_DEV_XID_ERRORS)", "{{Hostname}}")],
            ),
            p(
                "Exporters up",
                "stat",
                "none",
                "Scrape targets answering.",
                vec![("sum(gpuwarden_target_up)", "targets up")],
            ),
        ],
    }
}

fn gpu_detail() -> Dashboard {
    Dashboard {
        uid: "gpuwarden-gpu",
        title: "gpuwarden — GPU detail",
        file: "gpuwarden-gpu-detail.json",
        variables: vec![("gpu", "label_values(DCGM_FI_DEV_GPU_TEMP, UUID)")],
        panels: vec![
            p(
                "Health score by dimension",
                "timeseries",
                "none",
                "0–100 per dimension, from gpuwarden.",
                vec![("gpuwarden_gpu_health_score{uuid=\"$gpu\"}", "{{dimension}}")],
            ),
            p(
                "Temperatures",
                "timeseries",
                "celsius",
                "GPU and memory temperature.",
                vec![
                    ("DCGM_FI_DEV_GPU_TEMP{UUID=\"$gpu\"}", "GPU"),
                    ("DCGM_FI_DEV_MEMORY_TEMP{UUID=\"$gpu\"}", "memory"),
                ],
            ),
            p(
                "Power vs limit",
                "timeseries",
                "watt",
                "Draw against the management limit.",
                vec![
                    ("DCGM_FI_DEV_POWER_USAGE{UUID=\"$gpu\"}", "draw"),
                    ("DCGM_FI_DEV_POWER_MGMT_LIMIT{UUID=\"$gpu\"}", "limit"),
                ],
            ),
            p(
                "Clocks",
                "timeseries",
                "MHz",
                "SM and memory clocks.",
                vec![
                    ("DCGM_FI_DEV_SM_CLOCK{UUID=\"$gpu\"}", "SM"),
                    ("DCGM_FI_DEV_MEM_CLOCK{UUID=\"$gpu\"}", "memory"),
                ],
            ),
            p(
                "Activity",
                "timeseries",
                "percentunit",
                "SM active and DRAM active (DCP).",
                vec![
                    ("DCGM_FI_PROF_SM_ACTIVE{UUID=\"$gpu\"}", "SM active"),
                    ("DCGM_FI_PROF_DRAM_ACTIVE{UUID=\"$gpu\"}", "DRAM active"),
                ],
            ),
            p(
                "Clock-event (throttle) reasons",
                "timeseries",
                "none",
                "Bitmask: 0x8 HW slowdown, 0x20 SW thermal, 0x40 HW thermal, 0x80 power brake.",
                vec![("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{UUID=\"$gpu\"}", "reasons")],
            ),
            p(
                "ECC errors",
                "timeseries",
                "none",
                "Volatile single- and double-bit ECC error counts.",
                vec![
                    ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{UUID=\"$gpu\"}", "SBE"),
                    ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{UUID=\"$gpu\"}", "DBE"),
                ],
            ),
            p(
                "Remapped rows",
                "timeseries",
                "none",
                "Rows remapped for uncorrectable / correctable errors; remap failure.",
                vec![
                    (
                        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{UUID=\"$gpu\"}",
                        "uncorrectable",
                    ),
                    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS{UUID=\"$gpu\"}", "correctable"),
                    ("DCGM_FI_DEV_ROW_REMAP_FAILURE{UUID=\"$gpu\"}", "failure"),
                ],
            ),
            p(
                "PCIe replays per second",
                "timeseries",
                "ops",
                "Rate of PCIe replays.",
                vec![("rate(DCGM_FI_DEV_PCIE_REPLAY_COUNTER{UUID=\"$gpu\"}[1m])", "replays/s")],
            ),
            p(
                "Last XID",
                "stat",
                "none",
                "The last XID the GPU reported (0 = none).",
                vec![("DCGM_FI_DEV_XID_ERRORS{UUID=\"$gpu\"}", "XID")],
            ),
        ],
    }
}

fn security() -> Dashboard {
    Dashboard {
        uid: "gpuwarden-security",
        title: "gpuwarden — security and incidents",
        file: "gpuwarden-security-incidents.json",
        variables: vec![],
        panels: vec![
            p("Open incidents by severity", "timeseries", "none", "Open or acknowledged incidents over time.",
              vec![("sum by (severity) (gpuwarden_incidents_open)", "{{severity}}")]),
            p("GPUs in use by namespace", "bargauge", "none", "Busy GPUs (utilization > 0) per Kubernetes namespace.",
              vec![("count by (namespace) (DCGM_FI_DEV_GPU_UTIL{namespace!=\"\"} > 0)", "{{namespace}}")]),
            p("Busy GPUs without a pod (ghost use)", "stat", "none", "SM active above 50% with no Kubernetes pod label.",
              vec![("count(DCGM_FI_PROF_SM_ACTIVE{pod=\"\"} > 0.5) or vector(0)", "GPUs")]),
            p("Miner heuristic: sustained SM activity with no PCIe traffic", "table", "none",
              "SM active > 0.9 averaged over 5 m with PCIe receive below 10 MB/s: the shape of cryptomining.",
              vec![("(avg_over_time(DCGM_FI_PROF_SM_ACTIVE[5m]) > 0.9) and on (UUID) (avg_over_time(DCGM_FI_PROF_PCIE_RX_BYTES[5m]) < 1e7) or on () vector(0)", "{{Hostname}} {{UUID}}")]),
            p("Power limit by GPU (drift)", "table", "watt", "Management power limit: a change is configuration drift.",
              vec![("DCGM_FI_DEV_POWER_MGMT_LIMIT", "{{Hostname}} gpu{{gpu}}")]),
            p("Driver versions", "table", "none", "GPUs per driver version (DCGM_FI_DRIVER_VERSION label).",
              vec![("count by (DCGM_FI_DRIVER_VERSION) (DCGM_FI_DEV_GPU_TEMP)", "{{DCGM_FI_DRIVER_VERSION}}")]),
        ],
    }
}

/// Renders a dashboard as Grafana JSON (schema 39, Prometheus data source variable).
pub fn to_json(d: &Dashboard) -> Value {
    let mut panels = Vec::new();
    for (i, panel) in d.panels.iter().enumerate() {
        let (w, h) = if panel.kind == "stat" || panel.kind == "bargauge" {
            (8, 6)
        } else {
            (12, 8)
        };
        let per_row = 24 / w;
        let targets: Vec<Value> = panel
            .queries
            .iter()
            .enumerate()
            .map(|(j, (expr, legend))| {
                json!({
                    "refId": char::from(b'A' + j as u8).to_string(),
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "expr": expr,
                    "legendFormat": legend,
                })
            })
            .collect();
        panels.push(json!({
            "id": i + 1,
            "type": panel.kind,
            "title": panel.title,
            "description": panel.description,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"x": (i as u32 % per_row) * w, "y": (i as u32 / per_row) * h, "w": w, "h": h},
            "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
            "targets": targets,
        }));
    }
    let mut templating = vec![json!({
        "name": "datasource",
        "type": "datasource",
        "query": "prometheus",
        "label": "Prometheus",
    })];
    for (name, query) in &d.variables {
        templating.push(json!({
            "name": name,
            "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": "var"},
            "definition": query,
            "refresh": 2,
            "includeAll": false,
        }));
    }
    json!({
        "uid": d.uid,
        "title": d.title,
        "tags": ["gpuwarden", "gpu", "dcgm"],
        "schemaVersion": 39,
        "version": 1,
        "editable": true,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": templating},
        "panels": panels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_dashboards_with_unique_ids_and_queries_in_every_panel() {
        let all = all();
        assert_eq!(all.len(), 3);
        let uids: std::collections::BTreeSet<_> = all.iter().map(|d| d.uid).collect();
        assert_eq!(uids.len(), 3);
        for d in &all {
            let json = to_json(d);
            let panels = json["panels"].as_array().unwrap();
            assert_eq!(panels.len(), d.panels.len());
            for p in panels {
                assert!(!p["targets"].as_array().unwrap().is_empty(), "{}", p["title"]);
            }
        }
    }
}
