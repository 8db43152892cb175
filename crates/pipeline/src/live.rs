//! The live view of the fleet: every GPU's identity, latest values and freshness.
//!
//! Contract: a GPU is `stale` whenever we cannot vouch for its data — its target's last
//! scrape failed, it was missing from its target's last successful scrape, or its target
//! has not been scraped successfully for longer than `stale_after`. Readers must treat a
//! stale GPU as `unknown`, never as healthy.

use gpuwarden_model::{FieldName, Freshness, GpuIdentity, GpuUuid, TimestampMs};
use parking_lot::RwLock;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Why a GPU is stale (the model's [`Freshness`]; `Staleness` is kept as the
/// pipeline's name for it).
pub type Staleness = Freshness;

/// One GPU as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GpuView {
    pub identity: GpuIdentity,
    /// The scrape target the GPU was last seen on.
    pub target: String,
    /// Timestamp of the GPU's latest samples (the exporter's time, or scrape time).
    pub last_seen_ms: TimestampMs,
    pub stale: bool,
    pub staleness: Staleness,
    /// Latest value per field, by dcgm-exporter name.
    pub latest: BTreeMap<String, f64>,
}

struct LiveGpu {
    identity: GpuIdentity,
    target: String,
    last_seen_ms: TimestampMs,
    present_in_last_scrape: bool,
    latest: Vec<(FieldName, f64)>,
}

#[derive(Default)]
struct TargetFreshness {
    up: bool,
    last_success_wall_ms: Option<TimestampMs>,
}

#[derive(Default)]
struct Inner {
    gpus: HashMap<GpuUuid, LiveGpu>,
    targets: HashMap<String, TargetFreshness>,
}

/// Thread-safe live fleet state.
pub struct LiveFleet {
    inner: RwLock<Inner>,
    stale_after_ms: i64,
    /// Bumped on every change, so readers can cache what they derive from the view.
    generation: std::sync::atomic::AtomicU64,
}

/// What changed for a target after a successful scrape.
#[derive(Debug, Default, PartialEq)]
pub struct PresenceChange {
    pub appeared: Vec<GpuIdentity>,
    pub disappeared: Vec<GpuIdentity>,
}

impl LiveFleet {
    /// `stale_after_ms`: how long a target may go without a successful scrape before its
    /// GPUs are stale (pick ~2.5 scrape intervals).
    pub fn new(stale_after_ms: i64) -> Self {
        LiveFleet {
            inner: RwLock::new(Inner::default()),
            stale_after_ms,
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A number that changes whenever the view changes (scrape applied, target down,
    /// GPUs seeded). Staleness by age also depends on the wall clock: callers caching on
    /// the generation must also key on time.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Seeds the view with GPUs known from the store (after a restart) so that they show
    /// up as stale until scraped again, instead of vanishing.
    pub fn seed(&self, gpus: impl IntoIterator<Item = (GpuIdentity, TimestampMs)>) {
        self.bump();
        let mut inner = self.inner.write();
        for (identity, last_seen_ms) in gpus {
            inner.gpus.entry(identity.uuid.clone()).or_insert(LiveGpu {
                identity,
                target: String::new(),
                last_seen_ms,
                present_in_last_scrape: false,
                latest: Vec::new(),
            });
        }
    }

    /// Applies a successful scrape of `target`: the GPUs in `gpus` are present with
    /// these latest rows; GPUs previously seen on this target and absent now become
    /// stale. Returns who appeared and disappeared.
    pub fn apply_scrape<'a>(
        &self,
        target: &str,
        wall_ms: TimestampMs,
        gpus: &[GpuIdentity],
        rows: impl IntoIterator<Item = (&'a GpuUuid, TimestampMs, &'a [(FieldName, f64)])>,
    ) -> PresenceChange {
        let mut inner = self.inner.write();
        self.bump();
        let t = inner.targets.entry(target.to_string()).or_default();
        t.up = true;
        t.last_success_wall_ms = Some(wall_ms);
        let mut change = PresenceChange::default();
        let mut present: HashMap<&GpuUuid, ()> = HashMap::with_capacity(gpus.len());
        for identity in gpus {
            present.insert(&identity.uuid, ());
            match inner.gpus.get_mut(&identity.uuid) {
                Some(g) => {
                    if !g.present_in_last_scrape {
                        change.appeared.push(identity.clone());
                    }
                    g.present_in_last_scrape = true;
                    g.target = target.to_string();
                    if g.identity != *identity {
                        g.identity = identity.clone();
                    }
                }
                None => {
                    change.appeared.push(identity.clone());
                    inner.gpus.insert(
                        identity.uuid.clone(),
                        LiveGpu {
                            identity: identity.clone(),
                            target: target.to_string(),
                            last_seen_ms: wall_ms,
                            present_in_last_scrape: true,
                            latest: Vec::new(),
                        },
                    );
                }
            }
        }
        for (uuid, ts, values) in rows {
            if let Some(g) = inner.gpus.get_mut(uuid) {
                g.last_seen_ms = g.last_seen_ms.max(ts);
                for (field, value) in values {
                    match g.latest.iter_mut().find(|(f, _)| f == field) {
                        Some(slot) => slot.1 = *value,
                        None => g.latest.push((field.clone(), *value)),
                    }
                }
            }
        }
        for g in inner.gpus.values_mut() {
            if g.target == target && g.present_in_last_scrape && !present.contains_key(&g.identity.uuid) {
                g.present_in_last_scrape = false;
                change.disappeared.push(g.identity.clone());
            }
        }
        change
    }

    /// Records a failed scrape of `target`: all its GPUs become stale.
    pub fn mark_target_down(&self, target: &str) {
        let mut inner = self.inner.write();
        self.bump();
        inner.targets.entry(target.to_string()).or_default().up = false;
    }

    fn staleness(&self, inner: &Inner, g: &LiveGpu, now_wall_ms: TimestampMs) -> Staleness {
        if g.target.is_empty() {
            // Known from the store, not scraped since this start: its data is old, and
            // its absence says nothing yet (no target has been asked about it).
            return Staleness::TooOld;
        }
        if !g.present_in_last_scrape {
            return Staleness::MissingFromScrape;
        }
        let Some(t) = inner.targets.get(&g.target) else {
            return Staleness::MissingFromScrape;
        };
        if !t.up {
            return Staleness::TargetDown;
        }
        match t.last_success_wall_ms {
            Some(ms) if now_wall_ms - ms <= self.stale_after_ms => Staleness::Fresh,
            _ => Staleness::TooOld,
        }
    }

    /// Every GPU, sorted by node then index then UUID.
    pub fn snapshot(&self, now_wall_ms: TimestampMs) -> Vec<GpuView> {
        let inner = self.inner.read();
        let mut out: Vec<GpuView> = inner.gpus.values().map(|g| self.view(&inner, g, now_wall_ms)).collect();
        out.sort_by(|a, b| {
            (&a.identity.node, a.identity.index, &a.identity.uuid).cmp(&(
                &b.identity.node,
                b.identity.index,
                &b.identity.uuid,
            ))
        });
        out
    }

    /// One GPU.
    pub fn get(&self, uuid: &str, now_wall_ms: TimestampMs) -> Option<GpuView> {
        let inner = self.inner.read();
        inner
            .gpus
            .get(&GpuUuid::new(uuid))
            .map(|g| self.view(&inner, g, now_wall_ms))
    }

    /// The freshness of one GPU (`TooOld` for a GPU never seen).
    pub fn freshness(&self, uuid: &GpuUuid, now_wall_ms: TimestampMs) -> Freshness {
        let inner = self.inner.read();
        match inner.gpus.get(uuid) {
            Some(g) => self.staleness(&inner, g, now_wall_ms),
            None => Freshness::TooOld,
        }
    }

    /// False for a GPU known only from the store: no scrape since this start has listed
    /// it (or it is not known at all).
    pub fn scraped_since_start(&self, uuid: &GpuUuid) -> bool {
        self.inner.read().gpus.get(uuid).is_some_and(|g| !g.target.is_empty())
    }

    /// True when a scrape since this start has listed a GPU of `node`.
    pub fn node_scraped_since_start(&self, node: &str) -> bool {
        self.inner
            .read()
            .gpus
            .values()
            .any(|g| g.identity.node == node && !g.target.is_empty())
    }

    /// Number of GPUs known, and how many of them are stale.
    pub fn counts(&self, now_wall_ms: TimestampMs) -> (usize, usize) {
        let inner = self.inner.read();
        let stale = inner
            .gpus
            .values()
            .filter(|g| self.staleness(&inner, g, now_wall_ms) != Staleness::Fresh)
            .count();
        (inner.gpus.len(), stale)
    }

    fn view(&self, inner: &Inner, g: &LiveGpu, now_wall_ms: TimestampMs) -> GpuView {
        let staleness = self.staleness(inner, g, now_wall_ms);
        GpuView {
            identity: g.identity.clone(),
            target: g.target.clone(),
            last_seen_ms: g.last_seen_ms,
            stale: staleness != Staleness::Fresh,
            staleness,
            latest: g.latest.iter().map(|(f, v)| (f.as_str().to_string(), *v)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::DcgmField;

    fn gpu(uuid: &str) -> GpuIdentity {
        GpuIdentity::new(GpuUuid::new(uuid), "node-1")
    }

    fn row(v: f64) -> Vec<(FieldName, f64)> {
        vec![(FieldName::Dcgm(DcgmField::GpuTemp), v)]
    }

    #[test]
    fn gpu_missing_from_scrape_is_stale() {
        let live = LiveFleet::new(10_000);
        let (a, b) = (gpu("GPU-a"), gpu("GPU-b"));
        let r = row(40.0);
        live.apply_scrape(
            "t",
            1000,
            &[a.clone(), b.clone()],
            [(&a.uuid, 1000, &r[..]), (&b.uuid, 1000, &r[..])],
        );
        assert!(live.snapshot(1000).iter().all(|g| !g.stale));
        let change = live.apply_scrape("t", 2000, std::slice::from_ref(&a), [(&a.uuid, 2000, &r[..])]);
        assert_eq!(change.disappeared, vec![b.clone()]);
        let b_view = live.get("GPU-b", 2000).unwrap();
        assert!(b_view.stale);
        assert_eq!(b_view.staleness, Staleness::MissingFromScrape);
        assert!(!live.get("GPU-a", 2000).unwrap().stale);
    }

    #[test]
    fn target_down_makes_its_gpus_stale_and_recovery_clears_it() {
        let live = LiveFleet::new(10_000);
        let a = gpu("GPU-a");
        let r = row(40.0);
        live.apply_scrape("t", 1000, std::slice::from_ref(&a), [(&a.uuid, 1000, &r[..])]);
        live.mark_target_down("t");
        assert_eq!(live.get("GPU-a", 1500).unwrap().staleness, Staleness::TargetDown);
        live.apply_scrape("t", 3000, std::slice::from_ref(&a), [(&a.uuid, 3000, &r[..])]);
        assert!(!live.get("GPU-a", 3000).unwrap().stale);
    }

    #[test]
    fn no_recent_scrape_makes_gpus_stale() {
        let live = LiveFleet::new(10_000);
        let a = gpu("GPU-a");
        let r = row(40.0);
        live.apply_scrape("t", 1000, std::slice::from_ref(&a), [(&a.uuid, 1000, &r[..])]);
        assert_eq!(live.get("GPU-a", 20_000).unwrap().staleness, Staleness::TooOld);
    }

    #[test]
    fn seeded_gpus_from_store_start_stale() {
        let live = LiveFleet::new(10_000);
        live.seed([(gpu("GPU-a"), 5)]);
        assert!(live.get("GPU-a", 10).unwrap().stale);
        // Too old, not "missing from its scrape": nothing has been scraped yet, and a
        // GPU missing from a scrape means "fallen off the bus" to the health engine.
        assert_eq!(live.freshness(&GpuUuid::new("GPU-a"), 10), Freshness::TooOld);
    }

    #[test]
    fn latest_values_are_updated() {
        let live = LiveFleet::new(10_000);
        let a = gpu("GPU-a");
        live.apply_scrape("t", 1000, std::slice::from_ref(&a), [(&a.uuid, 1000, &row(40.0)[..])]);
        live.apply_scrape("t", 2000, std::slice::from_ref(&a), [(&a.uuid, 2000, &row(41.0)[..])]);
        let v = live.get("GPU-a", 2000).unwrap();
        assert_eq!(v.latest["DCGM_FI_DEV_GPU_TEMP"], 41.0);
        assert_eq!(v.last_seen_ms, 2000);
    }
}
