//! Derived health state on `/metrics` for Prometheus users:
//! `gpuwarden_gpu_health_score{uuid,node,dimension}` (dimension `overall` and the five
//! dimensions), `gpuwarden_gpu_state{uuid,node,state}` (1 for the GPU's current state,
//! 0 for the others, so `sum by (state)` counts GPUs), and
//! `gpuwarden_incidents_open{severity}`.
//!
//! Rendered at scrape time from the latest evaluation and the live staleness (a collector,
//! not gauges updated in place): a stale GPU is `unknown` here exactly when it is
//! `unknown` in the API, and it has no score series at all rather than a stale number.
//! A dimension the GPU's data does not measure (e.g. `memory` on an exporter without
//! ECC fields; `null` in the API) has no series either: absent, never a full-marks 100.

use gpuwarden_model::{Clock, HealthState, Severity};
use gpuwarden_pipeline::{Analysis, LiveFleet};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::collections::HashMap;
use std::sync::Arc;

/// Registered once; reads the analysis on every scrape.
pub struct DerivedMetrics {
    pub analysis: Arc<Analysis>,
    pub live: Arc<LiveFleet>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DerivedMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DerivedMetrics")
    }
}

const STATES: [HealthState; 4] = [
    HealthState::Healthy,
    HealthState::Degraded,
    HealthState::Unhealthy,
    HealthState::Unknown,
];

impl Collector for DerivedMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let evaluation = self.analysis.latest();
        let views = self.live.snapshot(self.clock.now_ms());
        let health: HashMap<_, _> = evaluation.gpus.iter().map(|g| (&g.uuid, g)).collect();

        let mut scores = encoder.encode_descriptor(
            "gpuwarden_gpu_health_score",
            "GPU health score 0-100, overall and per dimension (absent while the GPU's data is stale, and for a dimension the GPU's data does not measure)",
            None,
            MetricType::Gauge,
        )?;
        for view in &views {
            let Some(h) = health.get(&view.identity.uuid) else {
                continue;
            };
            if view.stale || h.state == HealthState::Unknown {
                continue;
            }
            let uuid = view.identity.uuid.as_str();
            let node = view.identity.node.as_str();
            if let Some(score) = h.score {
                let labels = [("uuid", uuid), ("node", node), ("dimension", "overall")];
                ConstGauge::new(score).encode(scores.encode_family(&labels)?)?;
            }
            for (d, v) in &h.dimensions {
                if let Some(v) = v {
                    let labels = [("uuid", uuid), ("node", node), ("dimension", d.as_str())];
                    ConstGauge::new(*v).encode(scores.encode_family(&labels)?)?;
                }
            }
        }

        let mut states = encoder.encode_descriptor(
            "gpuwarden_gpu_state",
            "1 for the GPU's current health state (healthy, degraded, unhealthy, unknown), 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for view in &views {
            let state = match health.get(&view.identity.uuid) {
                Some(h) if !view.stale => h.state,
                _ => HealthState::Unknown,
            };
            for s in STATES {
                let labels = [
                    ("uuid", view.identity.uuid.as_str()),
                    ("node", view.identity.node.as_str()),
                    ("state", s.as_str()),
                ];
                ConstGauge::new(i64::from(s == state)).encode(states.encode_family(&labels)?)?;
            }
        }

        let counts = self.analysis.with_incidents(|e| e.open_count_by_severity());
        let mut open = encoder.encode_descriptor(
            "gpuwarden_incidents_open",
            "Open or acknowledged incidents, by severity",
            None,
            MetricType::Gauge,
        )?;
        for s in [Severity::Info, Severity::Warning, Severity::Critical, Severity::Fatal] {
            let n = counts.get(&s).copied().unwrap_or(0) as i64;
            ConstGauge::new(n).encode(open.encode_family(&[("severity", s.as_str())])?)?;
        }
        Ok(())
    }
}
