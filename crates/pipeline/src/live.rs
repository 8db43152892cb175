//! The live view of the fleet: every GPU's identity, latest values and freshness.
//!
//! Contract: a GPU is `stale` whenever we cannot vouch for its data — its target's last
//! scrape failed, it was missing from its target's last successful scrape, or its target
//! has not been scraped successfully for longer than `stale_after`. Readers must treat a
//! stale GPU as `unknown`, never as healthy.

use crate::admission::{self, Admitted, IngestLimits, Refusal, Refused};
use gpuwarden_collect::dcgm::ExporterPage;
use gpuwarden_model::{FieldName, Freshness, GpuIdentity, GpuUuid, TimestampMs};
use parking_lot::RwLock;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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
    /// Since when the GPU has carried its current workload labels (namespace, pod,
    /// job, account), as far as this process has seen: a tenant that sees the GPU through
    /// its workload reads its history only from here (what ran before was another's).
    pub workload_since_ms: TimestampMs,
}

struct LiveGpu {
    identity: GpuIdentity,
    target: String,
    last_seen_ms: TimestampMs,
    present_in_last_scrape: bool,
    /// Absent because its whole target's GPUs vanished at once (a target-level
    /// condition, shown as `TargetDown`), not because this GPU fell off the bus.
    vanished_with_target: bool,
    /// Latest value per field, sorted by field (binary search keeps a page with many
    /// names linear-logarithmic instead of quadratic).
    latest: Vec<(FieldName, f64)>,
    /// See [`GpuView::workload_since_ms`].
    workload_since_ms: TimestampMs,
}

impl LiveGpu {
    fn set(&mut self, field: &FieldName, value: f64) {
        match self.latest.binary_search_by(|(f, _)| f.cmp(field)) {
            Ok(i) => self.latest[i].1 = value,
            Err(i) => self.latest.insert(i, (field.clone(), value)),
        }
    }
}

#[derive(Default)]
struct TargetFreshness {
    up: bool,
    last_success_wall_ms: Option<TimestampMs>,
    /// GPUs the live view holds for this target (present or vanished).
    gpus: HashSet<GpuUuid>,
    /// Every GPU the target had vanished from its last page at once.
    gpus_vanished: Option<VanishedTarget>,
    /// Samples refused from this target so far, by reason.
    refused_total: BTreeMap<Refusal, u64>,
    /// Why the last page with refusals refused them, and when (wall time).
    last_refusal: Option<(TimestampMs, Vec<String>)>,
}

/// A target whose GPUs all vanished from its page at once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VanishedTarget {
    pub since_wall_ms: TimestampMs,
    pub gpus: usize,
    /// The node of those GPUs (from their identity).
    pub node: String,
}

/// What the pipeline knows about one source of pages beyond its scrape state:
/// refusals and limits (for `/api/v1/targets` and target-level findings).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetIngestState {
    pub target: String,
    /// GPUs held for the target (present or vanished).
    pub gpus: usize,
    /// Samples refused so far, by reason (`too_far_ahead`, `too_old`, `gpu_limit`,
    /// `series_limit`, `impossible_value`).
    pub refused: BTreeMap<&'static str, u64>,
    /// Why the newest page with refusals refused them.
    pub last_refusal_reasons: Vec<String>,
    pub last_refusal_ms: Option<TimestampMs>,
    /// Set while every GPU of the target is missing from its pages.
    pub gpus_vanished: Option<VanishedTarget>,
}

/// Where a GPU sorts in listings: node, then index, then UUID.
type OrderKey = (String, Option<u32>, GpuUuid);

fn order_key(identity: &GpuIdentity) -> OrderKey {
    (identity.node.clone(), identity.index, identity.uuid.clone())
}

#[derive(Default)]
struct Inner {
    gpus: HashMap<GpuUuid, LiveGpu>,
    /// Every key of `gpus` in listing order, kept up to date as GPUs appear and change
    /// node or index, so a page of a listing visits GPUs in order without sorting (or
    /// copying) the whole fleet.
    order: BTreeSet<OrderKey>,
    targets: HashMap<String, TargetFreshness>,
}

impl Inner {
    fn insert_gpu(&mut self, gpu: LiveGpu) {
        if let Some(old) = self.gpus.get(&gpu.identity.uuid) {
            self.order.remove(&order_key(&old.identity));
        }
        self.order.insert(order_key(&gpu.identity));
        self.gpus.insert(gpu.identity.uuid.clone(), gpu);
    }

    /// Replaces a known GPU's identity, moving it in the listing order when its node or
    /// index changed.
    fn set_identity(&mut self, identity: &GpuIdentity, now_ms: TimestampMs) {
        let Some(g) = self.gpus.get_mut(&identity.uuid) else {
            return;
        };
        if g.identity == *identity {
            return;
        }
        if g.identity.workload != identity.workload {
            g.workload_since_ms = now_ms;
        }
        if g.identity.node != identity.node || g.identity.index != identity.index {
            self.order.remove(&order_key(&g.identity));
            self.order.insert(order_key(identity));
        }
        g.identity = identity.clone();
    }
}

/// A GPU of the live view as a listing filter sees it, without copying anything.
#[derive(Debug, Clone, Copy)]
pub struct GpuRef<'a> {
    pub identity: &'a GpuIdentity,
    pub staleness: Staleness,
}

/// One page of a listing: how many GPUs matched, and the views of the requested slice.
#[derive(Debug, Default)]
pub struct GpuPage {
    pub total: usize,
    pub gpus: Vec<GpuView>,
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
    /// Non-zero when every GPU of the target vanished at once (how many): a
    /// target-level condition; those GPUs are not in `disappeared`.
    pub target_vanished: usize,
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
            if inner.gpus.contains_key(&identity.uuid) {
                continue;
            }
            inner.insert_gpu(LiveGpu {
                identity,
                target: String::new(),
                last_seen_ms,
                present_in_last_scrape: false,
                vanished_with_target: false,
                latest: Vec::new(),
                // Who ran there before the restart is not known: no earlier history for
                // a tenant that sees the GPU through its workload.
                workload_since_ms: last_seen_ms,
            });
        }
    }

    /// Applies the admission bounds to a page of `target` (see [`admission`]) against
    /// what the live view holds for the target now.
    pub fn admit<'a>(
        &self,
        target: &str,
        page: &'a ExporterPage,
        now_ms: TimestampMs,
        limits: &IngestLimits,
    ) -> Admitted<'a> {
        let inner = self.inner.read();
        let t = inner.targets.get(target);
        let held = t.map_or(0, |t| t.gpus.len());
        let known = |g: &GpuUuid| t.is_some_and(|t| t.gpus.contains(g));
        let series = |g: &GpuUuid| {
            inner
                .gpus
                .get(g)
                .map(|g| g.latest.iter().map(|(f, _)| f.clone()).collect::<HashSet<_>>())
        };
        admission::admit(page, now_ms, limits, held, &known, &series)
    }

    /// Counts a page's refusals against its target.
    pub fn record_refused(&self, target: &str, refused: &Refused, wall_ms: TimestampMs) {
        if refused.is_empty() {
            return;
        }
        let mut inner = self.inner.write();
        let t = inner.targets.entry(target.to_string()).or_default();
        for (why, n) in &refused.counts {
            *t.refused_total.entry(*why).or_default() += n;
        }
        t.last_refusal = Some((wall_ms, refused.reasons.clone()));
    }

    /// Who would appear and disappear if `gpus` were the target's page now (read-only;
    /// [`apply_scrape`](Self::apply_scrape) returns the same for the same state).
    pub fn presence_preview(&self, target: &str, gpus: &[GpuIdentity]) -> PresenceChange {
        let inner = self.inner.read();
        Self::presence(&inner, target, gpus)
    }

    fn presence(inner: &Inner, target: &str, gpus: &[GpuIdentity]) -> PresenceChange {
        let mut change = PresenceChange::default();
        let present: HashSet<&GpuUuid> = gpus.iter().map(|g| &g.uuid).collect();
        for identity in gpus {
            match inner.gpus.get(&identity.uuid) {
                Some(g) if g.present_in_last_scrape => {}
                _ => change.appeared.push(identity.clone()),
            }
        }
        if let Some(t) = inner.targets.get(target) {
            let was: Vec<&LiveGpu> = t
                .gpus
                .iter()
                .filter_map(|u| inner.gpus.get(u))
                .filter(|g| g.target == target && g.present_in_last_scrape)
                .collect();
            let gone: Vec<&LiveGpu> = was
                .iter()
                .copied()
                .filter(|g| !present.contains(&g.identity.uuid))
                .collect();
            // Every GPU at once (and more than one): the exporter lost its GPUs (DCGM or
            // driver down, node rebooting) — one target-level condition, not N GPUs
            // falling off the bus.
            if gone.len() >= 2 && gone.len() == was.len() {
                change.target_vanished = gone.len();
            } else {
                change.disappeared = gone.into_iter().map(|g| g.identity.clone()).collect();
            }
        }
        change.disappeared.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        change
    }

    /// Applies a successful scrape of `target`: the GPUs in `gpus` are present with
    /// these latest rows; GPUs previously seen on this target and absent now become
    /// stale. Returns who appeared and disappeared. When every GPU of the target
    /// vanished at once, none is reported as disappeared: the target is flagged
    /// ([`TargetIngestState::gpus_vanished`]) and its GPUs are `TargetDown`.
    pub fn apply_scrape<'a>(
        &self,
        target: &str,
        wall_ms: TimestampMs,
        gpus: &[GpuIdentity],
        rows: impl IntoIterator<Item = (&'a GpuUuid, TimestampMs, &'a [(FieldName, f64)])>,
    ) -> PresenceChange {
        let mut inner = self.inner.write();
        self.bump();
        let change = Self::presence(&inner, target, gpus);
        let inner = &mut *inner;
        let t = inner.targets.entry(target.to_string()).or_default();
        t.up = true;
        t.last_success_wall_ms = Some(wall_ms);
        let present: HashSet<&GpuUuid> = gpus.iter().map(|g| &g.uuid).collect();
        // GPUs of this target absent from the page.
        let vanish_all = change.target_vanished > 0;
        let mut node = None;
        for uuid in &t.gpus {
            if present.contains(uuid) {
                continue;
            }
            if let Some(g) = inner.gpus.get_mut(uuid) {
                if g.target == target && g.present_in_last_scrape {
                    g.present_in_last_scrape = false;
                    g.vanished_with_target = vanish_all;
                    node.get_or_insert_with(|| g.identity.node.clone());
                }
            }
        }
        if vanish_all {
            t.gpus_vanished = Some(VanishedTarget {
                since_wall_ms: wall_ms,
                gpus: change.target_vanished,
                node: node.unwrap_or_default(),
            });
        } else if !gpus.is_empty() {
            t.gpus_vanished = None;
        }
        for identity in gpus {
            t.gpus.insert(identity.uuid.clone());
        }
        for identity in gpus {
            match inner.gpus.get_mut(&identity.uuid) {
                Some(g) => {
                    g.present_in_last_scrape = true;
                    g.vanished_with_target = false;
                    if g.target != target {
                        g.target = target.to_string();
                    }
                    inner.set_identity(identity, wall_ms);
                }
                None => {
                    inner.insert_gpu(LiveGpu {
                        identity: identity.clone(),
                        target: target.to_string(),
                        last_seen_ms: wall_ms,
                        present_in_last_scrape: true,
                        vanished_with_target: false,
                        latest: Vec::new(),
                        workload_since_ms: wall_ms,
                    });
                }
            }
        }
        for (uuid, ts, values) in rows {
            if let Some(g) = inner.gpus.get_mut(uuid) {
                g.last_seen_ms = g.last_seen_ms.max(ts);
                for (field, value) in values {
                    g.set(field, *value);
                }
            }
        }
        change
    }

    /// Every target's ingest state (refusals, limits, vanished GPUs), sorted by target.
    pub fn target_ingest_states(&self) -> Vec<TargetIngestState> {
        let inner = self.inner.read();
        let mut out: Vec<TargetIngestState> = inner
            .targets
            .iter()
            .map(|(name, t)| TargetIngestState {
                target: name.clone(),
                gpus: t.gpus.len(),
                refused: t.refused_total.iter().map(|(k, v)| (k.as_str(), *v)).collect(),
                last_refusal_reasons: t.last_refusal.as_ref().map(|(_, r)| r.clone()).unwrap_or_default(),
                last_refusal_ms: t.last_refusal.as_ref().map(|(ms, _)| *ms),
                gpus_vanished: t.gpus_vanished.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.target.cmp(&b.target));
        out
    }

    /// Nodes with at least one fresh GPU now.
    pub fn nodes_with_fresh_gpus(&self, now_wall_ms: TimestampMs) -> HashSet<String> {
        let inner = self.inner.read();
        inner
            .gpus
            .values()
            .filter(|g| self.staleness(&inner, g, now_wall_ms) == Staleness::Fresh)
            .map(|g| g.identity.node.clone())
            .collect()
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
            return if g.vanished_with_target {
                Staleness::TargetDown
            } else {
                Staleness::MissingFromScrape
            };
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
        inner
            .order
            .iter()
            .filter_map(|(_, _, uuid)| inner.gpus.get(uuid))
            .map(|g| self.view(&inner, g, now_wall_ms))
            .collect()
    }

    /// One page of the GPUs `keep` accepts, in listing order (node, index, UUID):
    /// `total` counts every match, views are built only for the `limit` matches after
    /// the first `offset`. Costs a visit per GPU but copies only the page, so a page of
    /// 100 GPUs no longer renders the whole fleet.
    pub fn page(
        &self,
        now_wall_ms: TimestampMs,
        mut keep: impl FnMut(GpuRef<'_>) -> bool,
        offset: usize,
        limit: usize,
    ) -> GpuPage {
        let inner = self.inner.read();
        let mut page = GpuPage::default();
        for (_, _, uuid) in &inner.order {
            let Some(g) = inner.gpus.get(uuid) else { continue };
            let staleness = self.staleness(&inner, g, now_wall_ms);
            if !keep(GpuRef {
                identity: &g.identity,
                staleness,
            }) {
                continue;
            }
            if page.total >= offset && page.gpus.len() < limit {
                page.gpus.push(self.view(&inner, g, now_wall_ms));
            }
            page.total += 1;
        }
        page
    }

    /// Visits every GPU in listing order without copying (counts, summaries).
    pub fn for_each(&self, now_wall_ms: TimestampMs, mut f: impl FnMut(GpuRef<'_>)) {
        let inner = self.inner.read();
        for (_, _, uuid) in &inner.order {
            if let Some(g) = inner.gpus.get(uuid) {
                f(GpuRef {
                    identity: &g.identity,
                    staleness: self.staleness(&inner, g, now_wall_ms),
                });
            }
        }
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
            workload_since_ms: g.workload_since_ms,
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

    fn on(uuid: &str, node: &str, index: u32) -> GpuIdentity {
        let mut g = GpuIdentity::new(GpuUuid::new(uuid), node);
        g.index = Some(index);
        g
    }

    fn uuids(views: &[GpuView]) -> Vec<&str> {
        views.iter().map(|v| v.identity.uuid.as_str()).collect()
    }

    /// The listing order index follows GPUs that appear, vanish, come back and move to
    /// another node or index, and pages agree with the full snapshot.
    #[test]
    fn listing_order_stays_consistent_as_gpus_appear_vanish_and_move() {
        let live = LiveFleet::new(60_000);
        let none = std::iter::empty::<(&GpuUuid, TimestampMs, &[(FieldName, f64)])>;
        live.apply_scrape("t2", 1, &[on("GPU-c", "node-b", 1), on("GPU-d", "node-b", 0)], none());
        live.apply_scrape("t1", 1, &[on("GPU-b", "node-a", 1), on("GPU-a", "node-a", 0)], none());
        assert_eq!(uuids(&live.snapshot(1)), ["GPU-a", "GPU-b", "GPU-d", "GPU-c"]);
        // GPU-b vanishes from its page: still listed (stale), same place.
        live.apply_scrape("t1", 2, &[on("GPU-a", "node-a", 0)], none());
        assert_eq!(uuids(&live.snapshot(2)), ["GPU-a", "GPU-b", "GPU-d", "GPU-c"]);
        // GPU-a moves to node-c; a new GPU appears on node-a.
        live.apply_scrape("t3", 3, &[on("GPU-a", "node-c", 0)], none());
        live.apply_scrape("t1", 3, &[on("GPU-e", "node-a", 7)], none());
        assert_eq!(uuids(&live.snapshot(3)), ["GPU-b", "GPU-e", "GPU-d", "GPU-c", "GPU-a"]);
        // Its index changes on the same node.
        live.apply_scrape("t2", 4, &[on("GPU-c", "node-b", 0), on("GPU-d", "node-b", 1)], none());
        let all = live.snapshot(4);
        assert_eq!(uuids(&all), ["GPU-b", "GPU-e", "GPU-c", "GPU-d", "GPU-a"]);
        assert_eq!(live.inner.read().order.len(), live.inner.read().gpus.len());
        // Seeding a known GPU does not list it twice.
        live.seed([(on("GPU-c", "node-b", 0), 0), (on("GPU-z", "node-0", 0), 0)]);
        let all = live.snapshot(4);
        assert_eq!(uuids(&all), ["GPU-z", "GPU-b", "GPU-e", "GPU-c", "GPU-d", "GPU-a"]);
        // Every page is the matching slice of the snapshot, and totals count all matches.
        for offset in 0..7 {
            for limit in 1..4 {
                let p = live.page(4, |_| true, offset, limit);
                assert_eq!(p.total, 6);
                let want: Vec<&str> = uuids(&all).into_iter().skip(offset).take(limit).collect();
                assert_eq!(uuids(&p.gpus), want, "offset {offset} limit {limit}");
            }
        }
        let stale = live.page(4, |g| g.staleness != Staleness::Fresh, 0, 10);
        assert_eq!(
            uuids(&stale.gpus),
            ["GPU-z", "GPU-b"],
            "seeded, and missing from its page"
        );
        assert_eq!(stale.total, 2);
        let mut visited = Vec::new();
        live.for_each(4, |g| visited.push(g.identity.uuid.to_string()));
        assert_eq!(visited, uuids(&all));
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
    fn workload_since_moves_only_when_the_workload_changes() {
        let live = LiveFleet::new(10_000);
        let mut a = gpu("GPU-a");
        a.workload.namespace = Some("team-b".into());
        let r = row(40.0);
        live.apply_scrape("t", 1000, std::slice::from_ref(&a), [(&a.uuid, 1000, &r[..])]);
        assert_eq!(live.get("GPU-a", 1000).unwrap().workload_since_ms, 1000);
        live.apply_scrape("t", 2000, std::slice::from_ref(&a), [(&a.uuid, 2000, &r[..])]);
        assert_eq!(
            live.get("GPU-a", 2000).unwrap().workload_since_ms,
            1000,
            "same workload"
        );
        a.workload.namespace = Some("team-a".into());
        live.apply_scrape("t", 3000, std::slice::from_ref(&a), [(&a.uuid, 3000, &r[..])]);
        assert_eq!(
            live.get("GPU-a", 3000).unwrap().workload_since_ms,
            3000,
            "a new tenant's workload"
        );
        a.extra_labels.insert("x".into(), "y".into());
        live.apply_scrape("t", 4000, std::slice::from_ref(&a), [(&a.uuid, 4000, &r[..])]);
        assert_eq!(
            live.get("GPU-a", 4000).unwrap().workload_since_ms,
            3000,
            "other labels do not count"
        );
        live.seed([(gpu("GPU-s"), 5)]);
        assert_eq!(
            live.get("GPU-s", 10).unwrap().workload_since_ms,
            5,
            "seeded: nothing before the restart"
        );
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
