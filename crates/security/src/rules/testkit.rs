//! Test harness for one GPU: an engine with only the rule under test enabled, row
//! builders for typical workloads, and a feed loop that reports when the rule first
//! fired (relative to the start).

use crate::catalog::Catalog;
use crate::config::SecurityConfig;
use crate::engine::SecurityEngine;
use crate::policy::Policy;
pub use gpuwarden_model::DcgmField as F;
use gpuwarden_model::{
    Analyzer, FieldName, Finding, Freshness, GpuIdentity, GpuSamples, GpuUuid, TimestampMs, Workload,
};

/// 2025-01-01T00:00:00Z, a Wednesday (the simulator's default start).
pub const START: TimestampMs = 1_735_689_600_000;

pub struct Tk {
    pub engine: SecurityEngine,
    pub rule: &'static str,
    pub identity: GpuIdentity,
    pub start: TimestampMs,
    /// Relative time of the last row or evaluation.
    pub now: TimestampMs,
    pub freshness: Freshness,
    pub last: Option<Finding>,
}

impl Tk {
    pub fn new(rule: &'static str) -> Tk {
        Tk::with_config(rule, SecurityConfig::default())
    }

    pub fn with_config(rule: &'static str, mut config: SecurityConfig) -> Tk {
        for r in Catalog::builtin().rules() {
            if r.id() != rule {
                let mut t = toml::Table::new();
                t.insert("enabled".into(), toml::Value::Boolean(false));
                config.rules.entry(r.id().to_string()).or_insert(toml::Value::Table(t));
            }
        }
        let catalog = Catalog::builtin().with_overrides(&config.rules).unwrap();
        let engine = SecurityEngine::new(catalog, Policy::from_config(&config).unwrap());
        let mut identity = GpuIdentity::new(GpuUuid::new("GPU-test-0"), "simnode-00");
        identity.model = Some("NVIDIA H100 80GB HBM3".into());
        Tk {
            engine,
            rule,
            identity,
            start: START,
            now: 0,
            freshness: Freshness::Fresh,
            last: None,
        }
    }

    pub fn starting_at(mut self, start: TimestampMs) -> Tk {
        self.start = start;
        self
    }

    pub fn set_workload(&mut self, ns: Option<&str>, pod: Option<&str>, job: Option<&str>) {
        self.identity.workload = Workload {
            namespace: ns.map(Into::into),
            pod: pod.map(Into::into),
            container: pod.map(|_| "main".into()),
            job: job.map(Into::into),
            account: None,
        };
        self.engine.observe_identity(&self.identity);
    }

    pub fn set_label(&mut self, k: &str, v: &str) {
        self.identity.extra_labels.insert(k.into(), v.into());
        self.engine.observe_identity(&self.identity);
    }

    pub fn set_driver(&mut self, v: &str) {
        self.identity.driver_version = Some(v.into());
        self.engine.observe_identity(&self.identity);
    }

    /// Another GPU on the same node shows pod labels: the node attributes workloads.
    pub fn node_attributes(&mut self) {
        let mut other = GpuIdentity::new(GpuUuid::new("GPU-test-1"), self.identity.node.clone());
        other.workload.namespace = Some("inference".into());
        other.workload.pod = Some("serve-1".into());
        self.engine.observe_identity(&other);
    }

    /// Feeds one row (relative time) without evaluating.
    pub fn row(&mut self, mut r: GpuSamples) {
        self.engine.observe_identity(&self.identity);
        self.now = r.ts_ms;
        r.ts_ms += self.start;
        r.gpu = self.identity.uuid.clone();
        self.engine.observe_row(&r);
    }

    /// Evaluates at relative time `at`; the finding of the rule under test, if any.
    pub fn eval(&mut self, at: TimestampMs) -> Option<Finding> {
        self.now = at;
        let fr = self.freshness;
        let uuid = self.identity.uuid.clone();
        let found = self
            .engine
            .evaluate(self.start + at, &|g| if *g == uuid { fr } else { Freshness::Fresh });
        let f = found
            .into_iter()
            .find(|f| f.rule == self.rule && f.gpu.as_ref() == Some(&uuid));
        if f.is_some() {
            self.last = f.clone();
        }
        f
    }

    /// Feeds rows from relative time 0 every `step` until `until`, evaluating after
    /// each; the relative time of the first finding.
    pub fn feed_until(
        &mut self,
        until: TimestampMs,
        step: i64,
        f: impl Fn(TimestampMs) -> GpuSamples,
    ) -> Option<TimestampMs> {
        self.feed_range(0, until, step, f)
    }

    /// Continues feeding for `more` after the current time.
    pub fn feed_more(
        &mut self,
        more: TimestampMs,
        step: i64,
        f: impl Fn(TimestampMs) -> GpuSamples,
    ) -> Option<TimestampMs> {
        let from = self.now + step;
        self.feed_range(from, from + more, step, f)
    }

    fn feed_range(
        &mut self,
        from: TimestampMs,
        until: TimestampMs,
        step: i64,
        f: impl Fn(TimestampMs) -> GpuSamples,
    ) -> Option<TimestampMs> {
        let mut first = None;
        let mut ts = from;
        while ts <= until {
            self.row(f(ts));
            if self.eval(ts).is_some() && first.is_none() {
                first = Some(ts);
            }
            ts += step;
        }
        first
    }
}

/// Deterministic jitter in [-1, 1] from a timestamp.
pub fn jitter(ts: TimestampMs, salt: u64) -> f64 {
    let x = (ts as u64 ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

pub fn set(r: &mut GpuSamples, f: F, v: f64) {
    match r.values.iter_mut().find(|(n, _)| *n == FieldName::Dcgm(f)) {
        Some(slot) => slot.1 = v,
        None => r.values.push((FieldName::Dcgm(f), v)),
    }
}

fn row(ts: TimestampMs, vals: &[(F, f64)]) -> GpuSamples {
    GpuSamples {
        gpu: GpuUuid::new("GPU-test-0"),
        ts_ms: ts,
        values: vals.iter().map(|(f, v)| (FieldName::Dcgm(*f), *v)).collect(),
    }
}

/// A hashing loop: pinned SMs and DRAM, flat power, a few kB/s of PCIe, no NVLink.
pub fn miner_on(ts: TimestampMs) -> GpuSamples {
    row(
        ts,
        &[
            (F::ProfSmActive, 0.98 + 0.003 * jitter(ts, 1)),
            (F::ProfDramActive, 0.9 + 0.005 * jitter(ts, 2)),
            (F::GpuUtil, 100.0),
            (F::PowerUsage, 455.0 * (1.0 + 0.012 * jitter(ts, 3))),
            (F::PowerMgmtLimit, 700.0),
            (F::ProfPcieTxBytes, 2000.0 + 500.0 * jitter(ts, 4).abs()),
            (F::ProfPcieRxBytes, 3000.0 + 500.0 * jitter(ts, 5).abs()),
            (F::ProfNvlinkTxBytes, 0.0),
            (F::ProfNvlinkRxBytes, 0.0),
        ],
    )
}

/// An idle GPU (or a throttled miner's off phase).
pub fn idle(ts: TimestampMs) -> GpuSamples {
    row(
        ts,
        &[
            (F::ProfSmActive, 0.0),
            (F::ProfDramActive, 0.0),
            (F::GpuUtil, 0.0),
            (F::PowerUsage, 70.0 * (1.0 + 0.01 * jitter(ts, 3))),
            (F::PowerMgmtLimit, 700.0),
            (F::ProfPcieTxBytes, 1000.0),
            (F::ProfPcieRxBytes, 1000.0),
            (F::ProfNvlinkTxBytes, 0.0),
            (F::ProfNvlinkRxBytes, 0.0),
        ],
    )
}

/// Heavy data-parallel training: high SM, moderate DRAM, PCIe input and NVLink all-reduce.
pub fn training(ts: TimestampMs) -> GpuSamples {
    row(
        ts,
        &[
            (F::ProfSmActive, 0.85 + 0.04 * jitter(ts, 1)),
            (F::ProfDramActive, 0.45 + 0.03 * jitter(ts, 2)),
            (F::GpuUtil, 99.0),
            (F::PowerUsage, 610.0 * (1.0 + 0.03 * jitter(ts, 3))),
            (F::PowerMgmtLimit, 700.0),
            (F::ProfPcieTxBytes, 6e8),
            (F::ProfPcieRxBytes, 2e9 * (1.0 + 0.1 * jitter(ts, 4))),
            (F::ProfNvlinkTxBytes, 3e10),
            (F::ProfNvlinkRxBytes, 3e10),
        ],
    )
}

/// A lightly used GPU (a notebook): low SM, some PCIe.
pub fn light(ts: TimestampMs) -> GpuSamples {
    row(
        ts,
        &[
            (F::ProfSmActive, 0.12 + 0.03 * jitter(ts, 1)),
            (F::ProfDramActive, 0.05),
            (F::GpuUtil, 40.0),
            (F::PowerUsage, 140.0 * (1.0 + 0.03 * jitter(ts, 3))),
            (F::PowerMgmtLimit, 700.0),
            (F::ProfPcieTxBytes, 5e6),
            (F::ProfPcieRxBytes, 5e7),
            (F::ProfNvlinkTxBytes, 0.0),
            (F::ProfNvlinkRxBytes, 0.0),
        ],
    )
}
