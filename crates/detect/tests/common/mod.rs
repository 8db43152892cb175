//! Drives the real simulator core through the real exporter mapping and XID tracker into
//! the health engine, one scrape of every node every `STEP_MS`, as the pipeline does.

#![allow(dead_code)]

use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::prom::Limits;
use gpuwarden_collect::xid::XidTracker;
use gpuwarden_detect::{Evaluation, HealthEngine, HealthRules, XidCatalog};
use gpuwarden_model::{Event, EventKind, Finding, Freshness, GpuUuid, TimestampMs};
use gpuwarden_sim::{Fleet, SimConfig};
use std::collections::{BTreeSet, HashMap, HashSet};

pub const STEP_MS: i64 = 5_000;

pub struct Harness {
    pub fleet: Fleet,
    pub engine: HealthEngine,
    xids: XidTracker,
    pub now: TimestampMs,
    seen: HashSet<GpuUuid>,
    present: HashSet<GpuUuid>,
    pub events: Vec<Event>,
    node_of: HashMap<GpuUuid, String>,
}

impl Harness {
    pub fn new(config: SimConfig) -> Self {
        let fleet = Fleet::new(&config).expect("fleet");
        let now = fleet.now_ms();
        let node_of = fleet.gpus().into_iter().map(|g| (g.uuid, g.node)).collect();
        Harness {
            fleet,
            engine: HealthEngine::new(HealthRules::builtin(), XidCatalog::builtin()),
            xids: XidTracker::new(),
            now,
            seen: HashSet::new(),
            present: HashSet::new(),
            events: Vec::new(),
            node_of,
        }
    }

    /// Advances one scrape interval, scrapes every node, evaluates.
    pub fn step(&mut self) -> Evaluation {
        self.now += STEP_MS;
        self.fleet.advance_to(self.now);
        let mut present = HashSet::new();
        let names = self.fleet.node_names().to_vec();
        for (i, name) in names.iter().enumerate() {
            let mut body = String::new();
            self.fleet.render_node(i, &mut body);
            let page = map_exporter_page(body.as_bytes(), name, self.now, &Limits::default()).expect("page parses");
            for id in &page.gpus {
                self.engine.observe_identity(id);
                present.insert(id.uuid.clone());
            }
            for row in &page.rows {
                self.engine.observe_row(row);
            }
            for e in self.xids.observe_page(&page) {
                self.engine.observe_event(&e);
                self.events.push(e);
            }
        }
        // What the pipeline does for a GPU that left its node's page.
        for g in self.present.difference(&present) {
            let e = Event {
                gpu: g.clone(),
                node: self.node_of.get(g).cloned().unwrap_or_default(),
                ts_ms: self.now,
                kind: EventKind::GpuDisappeared,
            };
            self.engine.observe_event(&e);
            self.events.push(e);
        }
        self.seen.extend(present.iter().cloned());
        self.present = present;
        let (seen, present) = (&self.seen, &self.present);
        self.engine.evaluate(self.now, &|g: &GpuUuid| {
            if present.contains(g) {
                Freshness::Fresh
            } else if seen.contains(g) {
                Freshness::MissingFromScrape
            } else {
                Freshness::TooOld
            }
        })
    }

    pub fn steps(&mut self, n: usize) -> Evaluation {
        let mut last = Evaluation::default();
        for _ in 0..n {
            last = self.step();
        }
        last
    }
}

/// A 4-node, 8-GPU-per-node fleet (A100, H100, H200, L40S nodes) without random faults.
pub fn quiet_config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        fault_rate_multiplier: 0.0,
        ..SimConfig::default()
    }
}

pub fn findings_for<'a>(e: &'a Evaluation, gpu: &GpuUuid) -> Vec<&'a Finding> {
    e.findings.iter().filter(|f| f.gpu.as_ref() == Some(gpu)).collect()
}

pub fn rules_of(e: &Evaluation, gpu: &GpuUuid) -> BTreeSet<String> {
    findings_for(e, gpu).iter().map(|f| f.rule.clone()).collect()
}
