//! What one page may bring in: sample timestamps within bounds of the receiver's clock,
//! and per-target limits on GPUs, series per GPU and new GPUs per page.
//!
//! Every page from every source (scrape, agent push, remote_write) passes here before
//! anything is stored or analysed. Why each bound exists:
//!
//! - **Time.** One exporter line stamped in the year 2100 used to move the analysis clock
//!   a century ahead and auto-resolve every open incident. A sample further ahead of the
//!   receiver's clock than `max_clock_ahead` (clock skew of a healthy host is seconds), or
//!   older than `max_sample_age` (an agent's spool replays at most that far back), is
//!   refused and counted. The receiver's clock is the wall clock, or — when `run` drives
//!   the simulator faster than real time — the simulator's clock (an explicit simulated
//!   clock, not bounds switched off).
//! - **Identity.** A target returning fresh GPU UUIDs on every page grew memory without
//!   bound (5 GB in 33 s). A target may hold at most `max_gpus_per_target` GPUs in the
//!   live view (present or recently vanished) and add at most `max_new_gpus_per_page` in
//!   one page; beyond that the excess GPUs are dropped, counted, and the target is
//!   flagged with the reason.
//! - **Series.** Distinct field names per GPU are bounded by `max_series_per_gpu`
//!   (dcgm-exporter's known fields always fit; extra, unknown names beyond it are
//!   dropped), so a page with 100,000 names per GPU costs one pass over it and no more.
//!
//! Admission is a pure function of the page and the target's current state in the live
//! view; it allocates a filtered copy only when something is refused.

use gpuwarden_collect::dcgm::ExporterPage;
use gpuwarden_collect::validate;
use gpuwarden_model::{FieldName, GpuUuid, TimestampMs};
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// The bounds. Defaults suit dcgm-exporter per node and agents with a disk spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestLimits {
    /// Largest accepted distance of a sample's timestamp ahead of the receiver's clock.
    pub max_clock_ahead_ms: i64,
    /// Oldest accepted sample, as a distance behind the receiver's clock.
    pub max_sample_age_ms: i64,
    /// GPUs (and MIG slices) one target may hold in the live view.
    pub max_gpus_per_target: usize,
    /// GPUs one page may add to its target.
    pub max_new_gpus_per_page: usize,
    /// Distinct field names one GPU may have.
    pub max_series_per_gpu: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            // NTP keeps hosts within milliseconds; a minute of slack covers a bad one.
            max_clock_ahead_ms: 5 * 60_000,
            // The agent's spool holds batches across outages of up to a day or so; data
            // older than that is history for `forensics`, not live telemetry.
            max_sample_age_ms: 24 * 3_600_000,
            // 16 GPUs × 7 MIG slices + the parents is the most a node has today.
            max_gpus_per_target: 256,
            max_new_gpus_per_page: 128,
            // dcgm-exporter's full field list is ~120 names; profiling and per-link
            // NVLink fields stay well below this.
            max_series_per_gpu: 512,
        }
    }
}

/// Why samples were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Timestamp too far ahead of the receiver's clock.
    TooFarAhead,
    /// Timestamp older than the oldest accepted sample.
    TooOld,
    /// The target already holds its most GPUs, or the page brought too many new ones.
    GpuLimit,
    /// The GPU already has its most distinct field names.
    SeriesLimit,
    /// Physically impossible value (refused by the exporter mapping).
    ImpossibleValue,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::TooFarAhead,
        Refusal::TooOld,
        Refusal::GpuLimit,
        Refusal::SeriesLimit,
        Refusal::ImpossibleValue,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Refusal::TooFarAhead => "too_far_ahead",
            Refusal::TooOld => "too_old",
            Refusal::GpuLimit => "gpu_limit",
            Refusal::SeriesLimit => "series_limit",
            Refusal::ImpossibleValue => "impossible_value",
        }
    }
}

/// Samples refused from one page, by reason (samples, not rows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refused {
    pub counts: HashMap<Refusal, u64>,
    /// GPUs dropped whole (identity limits).
    pub gpus_dropped: usize,
    /// One sentence per reason, for the target's state.
    pub reasons: Vec<String>,
}

impl Refused {
    pub fn is_empty(&self) -> bool {
        self.counts.values().all(|c| *c == 0) && self.gpus_dropped == 0
    }

    pub(crate) fn add(&mut self, why: Refusal, n: u64) {
        if n > 0 {
            *self.counts.entry(why).or_default() += n;
        }
    }
}

/// A page after admission: the page itself when nothing was refused, else a copy.
pub struct Admitted<'a> {
    pub page: Cow<'a, ExporterPage>,
    pub refused: Refused,
}

/// Applies the bounds to `page` from `target` given the receiver's clock `now_ms`.
/// `known(gpu)` says whether the live view already holds the GPU for this target,
/// `held` is how many GPUs it holds for it, and `series(gpu)` gives the names the GPU
/// already has (for the series limit).
pub fn admit<'a>(
    page: &'a ExporterPage,
    now_ms: TimestampMs,
    limits: &IngestLimits,
    held: usize,
    known: &dyn Fn(&GpuUuid) -> bool,
    series: &dyn Fn(&GpuUuid) -> Option<HashSet<FieldName>>,
) -> Admitted<'a> {
    let mut refused = Refused::default();
    let newest_ok = now_ms.saturating_add(limits.max_clock_ahead_ms);
    let oldest_ok = now_ms.saturating_sub(limits.max_sample_age_ms);

    // Identity: which GPUs of the page may enter.
    let mut allowed: HashSet<&GpuUuid> = HashSet::with_capacity(page.gpus.len());
    let mut new_count = 0usize;
    let mut dropped = 0usize;
    let room = limits.max_gpus_per_target.saturating_sub(held);
    for g in &page.gpus {
        if allowed.contains(&g.uuid) {
            continue;
        }
        if known(&g.uuid) {
            allowed.insert(&g.uuid);
        } else if new_count < limits.max_new_gpus_per_page && new_count < room {
            new_count += 1;
            allowed.insert(&g.uuid);
        } else {
            dropped += 1;
        }
    }

    // Impossible values: the exporter mapping already refused (and counted) those of a
    // scraped page; rows that bypassed it (an agent's push, remote-write) are checked
    // here, so every source passes the same physical bounds.
    let mapped_refusals = page.summary.refused_total;
    refused.add(Refusal::ImpossibleValue, mapped_refusals as u64);
    if let Some(first) = page.summary.refused.first() {
        refused.reasons.push(format!(
            "{mapped_refusals} value(s) refused as physically impossible, e.g. {}",
            first.reason
        ));
    }
    let possible = |f: &FieldName, v: f64| match f {
        FieldName::Dcgm(d) => validate::check(*d, v).is_ok(),
        FieldName::Other(_) => true,
    };

    let time_ok = |ts: TimestampMs| ts >= oldest_ok && ts <= newest_ok;
    let clean = dropped == 0
        && page.rows.iter().all(|r| r.values.iter().all(|(f, v)| possible(f, *v)))
        && page.rows.iter().all(|r| time_ok(r.ts_ms))
        && page.rows.iter().all(|r| r.values.len() <= limits.max_series_per_gpu);
    // The series limit needs the GPU's known names only when a row could pass it: a
    // row with at most max_series values, all Dcgm fields, can never exceed it alone,
    // but together with names the GPU already has it might; check those GPUs below.
    if clean
        && !page
            .rows
            .iter()
            .any(|r| r.values.iter().any(|(f, _)| matches!(f, FieldName::Other(_))))
    {
        return Admitted {
            page: Cow::Borrowed(page),
            refused,
        };
    }

    let mut out = ExporterPage {
        kind: page.kind,
        gpus: page
            .gpus
            .iter()
            .filter(|g| allowed.contains(&g.uuid))
            .cloned()
            .collect(),
        rows: Vec::with_capacity(page.rows.len()),
        other: page.other.clone(),
        summary: page.summary.clone(),
    };
    let mut first_impossible: Option<String> = None;
    // Distinct names per GPU: what it had, plus what this page adds.
    let mut names: HashMap<&GpuUuid, HashSet<FieldName>> = HashMap::new();
    for row in &page.rows {
        if !allowed.contains(&row.gpu) {
            refused.add(Refusal::GpuLimit, row.values.len() as u64);
            continue;
        }
        if row.ts_ms > newest_ok {
            refused.add(Refusal::TooFarAhead, row.values.len() as u64);
            continue;
        }
        if row.ts_ms < oldest_ok {
            refused.add(Refusal::TooOld, row.values.len() as u64);
            continue;
        }
        let has = names
            .entry(&row.gpu)
            .or_insert_with(|| series(&row.gpu).unwrap_or_default());
        let mut kept = row.clone();
        let before = kept.values.len();
        kept.values.retain(|(f, v)| possible(f, *v));
        let impossible = before - kept.values.len();
        if impossible > 0 {
            if let Some((f, v)) = row.values.iter().find(|(f, v)| !possible(f, *v)) {
                first_impossible.get_or_insert_with(|| format!("{} = {v} on {}", f.as_str(), row.gpu));
            }
            refused.add(Refusal::ImpossibleValue, impossible as u64);
        }
        let before = kept.values.len();
        kept.values.retain(|(f, _)| {
            if has.contains(f) {
                true
            } else if has.len() < limits.max_series_per_gpu {
                has.insert(f.clone());
                true
            } else {
                false
            }
        });
        refused.add(Refusal::SeriesLimit, (before - kept.values.len()) as u64);
        if !kept.values.is_empty() {
            out.rows.push(kept);
        }
    }
    if let Some(example) = first_impossible {
        refused.reasons.push(format!(
            "pushed values outside their physical range refused, e.g. {example}"
        ));
    }
    refused.gpus_dropped = dropped;
    if dropped > 0 {
        refused.reasons.push(format!(
            "{dropped} GPU(s) dropped: the target may hold {} GPUs and add {} per page (scrape.max_gpus_per_target, scrape.max_new_gpus_per_page)",
            limits.max_gpus_per_target, limits.max_new_gpus_per_page
        ));
    }
    for (why, text) in [
        (
            Refusal::TooFarAhead,
            "timestamps too far ahead of this server's clock (check the exporter host's clock)",
        ),
        (
            Refusal::TooOld,
            "timestamps older than the oldest accepted sample (scrape.max_sample_age)",
        ),
        (
            Refusal::SeriesLimit,
            "GPUs with more distinct field names than scrape.max_series_per_gpu",
        ),
    ] {
        if let Some(n) = refused.counts.get(&why).filter(|n| **n > 0) {
            refused.reasons.push(format!("{n} sample(s) refused: {text}"));
        }
    }
    Admitted {
        page: Cow::Owned(out),
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::{DcgmField, GpuIdentity, GpuSamples};

    fn page(gpus: &[&str], ts: TimestampMs, extra_names: usize) -> ExporterPage {
        let mut p = ExporterPage {
            kind: gpuwarden_collect::dcgm::ExporterKind::Dcgm,
            gpus: Vec::new(),
            rows: Vec::new(),
            other: Vec::new(),
            summary: Default::default(),
        };
        for u in gpus {
            let uuid = GpuUuid::new(u);
            p.gpus.push(GpuIdentity::new(uuid.clone(), "n1"));
            let mut row = GpuSamples::new(uuid, ts);
            row.values.push((FieldName::Dcgm(DcgmField::GpuTemp), 40.0));
            for i in 0..extra_names {
                row.values.push((FieldName::Other(format!("x_{i}").into()), 1.0));
            }
            p.rows.push(row);
        }
        p
    }

    fn none(_: &GpuUuid) -> bool {
        false
    }

    fn no_series(_: &GpuUuid) -> Option<HashSet<FieldName>> {
        None
    }

    #[test]
    fn a_clean_page_is_borrowed_not_copied() {
        let p = page(&["GPU-a", "GPU-b"], 1_000_000, 0);
        let a = admit(&p, 1_000_000, &IngestLimits::default(), 0, &none, &no_series);
        assert!(matches!(a.page, Cow::Borrowed(_)));
        assert!(a.refused.is_empty());
    }

    #[test]
    fn impossible_pushed_values_are_refused_whatever_the_source() {
        // A pushed page (no exporter mapping ran): 9,253 % utilisation and -300 °C.
        let mut p = page(&["GPU-a"], 1000, 0);
        p.rows[0].values.push((FieldName::Dcgm(DcgmField::GpuUtil), 9253.0));
        p.rows[0].values[0].1 = -300.0;
        let a = admit(&p, 1000, &IngestLimits::default(), 0, &none, &no_series);
        assert_eq!(a.refused.counts.get(&Refusal::ImpossibleValue), Some(&2));
        assert!(a.page.rows.is_empty(), "nothing possible was left on the row");
        assert!(a.refused.reasons.iter().any(|r| r.contains("physical")));
        // NaN is "not measured", not impossible.
        let mut p = page(&["GPU-a"], 1000, 0);
        p.rows[0].values[0].1 = f64::NAN;
        let a = admit(&p, 1000, &IngestLimits::default(), 0, &none, &no_series);
        assert!(a.refused.is_empty());
        // A scraped page's mapping refusals are counted too.
        let mut p = page(&["GPU-a"], 1000, 0);
        p.summary.refused_total = 3;
        let a = admit(&p, 1000, &IngestLimits::default(), 0, &none, &no_series);
        assert_eq!(a.refused.counts.get(&Refusal::ImpossibleValue), Some(&3));
        assert_eq!(a.page.rows.len(), 1);
    }

    #[test]
    fn far_future_and_pre_1970_samples_are_refused() {
        let now = 1_700_000_000_000;
        for (ts, why) in [
            (4_102_444_800_000, Refusal::TooFarAhead),
            (-5, Refusal::TooOld),
            (0, Refusal::TooOld),
        ] {
            let p = page(&["GPU-a"], ts, 0);
            let a = admit(&p, now, &IngestLimits::default(), 0, &none, &no_series);
            assert!(a.page.rows.is_empty(), "{ts}");
            assert_eq!(a.refused.counts.get(&why), Some(&1), "{ts}");
            assert!(!a.refused.reasons.is_empty());
        }
        // Within bounds: kept.
        let p = page(&["GPU-a"], now + 60_000, 0);
        assert_eq!(
            admit(&p, now, &IngestLimits::default(), 0, &none, &no_series)
                .page
                .rows
                .len(),
            1
        );
    }

    #[test]
    fn new_gpus_beyond_the_limits_are_dropped_and_counted() {
        let limits = IngestLimits {
            max_gpus_per_target: 10,
            max_new_gpus_per_page: 4,
            ..IngestLimits::default()
        };
        let names: Vec<String> = (0..20).map(|i| format!("GPU-{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let p = page(&refs, 1000, 0);
        let a = admit(&p, 1000, &limits, 0, &none, &no_series);
        assert_eq!(a.page.gpus.len(), 4);
        assert_eq!(a.page.rows.len(), 4);
        assert_eq!(a.refused.gpus_dropped, 16);
        assert_eq!(a.refused.counts[&Refusal::GpuLimit], 16);
        // Near the cap: only the room left.
        let a = admit(&p, 1000, &limits, 8, &none, &no_series);
        assert_eq!(a.page.gpus.len(), 2);
        // Known GPUs always pass.
        let known = |g: &GpuUuid| g.as_str() < "GPU-15";
        let a = admit(&p, 1000, &limits, 10, &known, &no_series);
        assert!(a.page.gpus.iter().all(|g| known(&g.uuid)));
    }

    #[test]
    fn names_beyond_the_series_limit_are_dropped() {
        let limits = IngestLimits {
            max_series_per_gpu: 10,
            ..IngestLimits::default()
        };
        let p = page(&["GPU-a"], 1000, 100_000);
        let a = admit(&p, 1000, &limits, 0, &none, &no_series);
        assert_eq!(a.page.rows[0].values.len(), 10);
        assert_eq!(a.refused.counts[&Refusal::SeriesLimit], 100_001 - 10);
        // Names the GPU already has still pass when it is full.
        let had = |_: &GpuUuid| Some((0..10).map(|i| FieldName::Other(format!("x_{i}").into())).collect());
        let a = admit(&p, 1000, &limits, 0, &none, &had);
        let kept: Vec<_> = a.page.rows[0]
            .values
            .iter()
            .map(|(f, _)| f.as_str().to_string())
            .collect();
        assert_eq!(kept.len(), 10);
        assert!(kept.iter().all(|k| k.starts_with("x_")));
    }
}
