//! The in-memory table of recent samples (everything not yet sealed into a segment) and
//! the latest point of every series.
//!
//! Layout is chosen for the append hot path: one hash lookup per row (the GPU), then a
//! dense array indexed by [`DcgmField::index`] for known fields (no hashing per sample);
//! only unknown field names go through a per-GPU hash map. Values are kept uncompressed
//! (16 bytes a sample) — they live here only until the next seal.
//!
//! Out-of-order and duplicate timestamps: a point older than the series' newest is
//! appended anyway and the series is marked unsorted; readers and the sealer sort it
//! (stably, so duplicates keep arrival order). Duplicates are kept, not merged: a range
//! query returns both points and `latest` reports the one that arrived last.

use crate::Point;
use gpuwarden_model::{DcgmField, FieldName, GpuSamples, GpuUuid, TimestampMs};
use std::collections::HashMap;

/// Buffered points of one series.
#[derive(Debug, Default, Clone)]
pub struct SeriesBuf {
    pub ts: Vec<TimestampMs>,
    pub vals: Vec<f64>,
    unsorted: bool,
}

impl SeriesBuf {
    fn push(&mut self, ts: TimestampMs, v: f64) {
        if self.ts.last().is_some_and(|&last| ts < last) {
            self.unsorted = true;
        }
        self.ts.push(ts);
        self.vals.push(v);
    }

    /// Sorts by timestamp (stable) if an out-of-order point arrived.
    pub fn sort(&mut self) {
        if !self.unsorted {
            return;
        }
        let mut idx: Vec<usize> = (0..self.ts.len()).collect();
        idx.sort_by_key(|&i| self.ts[i]);
        self.ts = idx.iter().map(|&i| self.ts[i]).collect();
        self.vals = idx.iter().map(|&i| self.vals[i]).collect();
        self.unsorted = false;
    }

    /// Points with `from <= ts < to`, in timestamp order.
    pub fn points_in(&self, from: TimestampMs, to: TimestampMs, out: &mut Vec<Point>) {
        let before = out.len();
        out.extend(
            self.ts
                .iter()
                .zip(&self.vals)
                .filter(|(&t, _)| t >= from && t < to)
                .map(|(&ts_ms, &value)| Point { ts_ms, value }),
        );
        if self.unsorted {
            out[before..].sort_by_key(|p| p.ts_ms);
        }
    }

    pub fn len(&self) -> usize {
        self.ts.len()
    }
}

/// One series: its unsealed points and its latest point ever seen.
#[derive(Debug, Default)]
struct Series {
    buf: SeriesBuf,
    latest: Option<Point>,
}

impl Series {
    #[inline]
    fn push(&mut self, ts: TimestampMs, v: f64) {
        self.buf.push(ts, v);
        self.note_latest(Point { ts_ms: ts, value: v });
    }

    fn note_latest(&mut self, p: Point) {
        // `>=`: among equal timestamps the last arrival wins.
        if self.latest.is_none_or(|l| p.ts_ms >= l.ts_ms) {
            self.latest = Some(p);
        }
    }
}

#[derive(Debug)]
struct GpuSeries {
    dcgm: Vec<Series>,
    other: HashMap<Box<str>, Series>,
    first_seen: TimestampMs,
    last_seen: TimestampMs,
}

impl GpuSeries {
    fn new(ts: TimestampMs) -> Self {
        GpuSeries {
            dcgm: (0..DcgmField::ALL.len()).map(|_| Series::default()).collect(),
            other: HashMap::new(),
            first_seen: ts,
            last_seen: ts,
        }
    }

    fn series_mut(&mut self, f: &FieldName) -> &mut Series {
        match f {
            FieldName::Dcgm(d) => &mut self.dcgm[d.index()],
            FieldName::Other(name) => {
                if !self.other.contains_key(name) {
                    self.other.insert(name.clone(), Series::default());
                }
                self.other.get_mut(name).expect("inserted above")
            }
        }
    }

    fn series(&self, f: &FieldName) -> Option<&Series> {
        match f {
            FieldName::Dcgm(d) => self.dcgm.get(d.index()),
            FieldName::Other(name) => self.other.get(name),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (FieldName, &Series)> {
        let known = DcgmField::ALL
            .iter()
            .zip(&self.dcgm)
            .map(|(f, s)| (FieldName::Dcgm(*f), s));
        let mut others: Vec<_> = self.other.iter().collect();
        others.sort_by(|a, b| a.0.cmp(b.0));
        known.chain(others.into_iter().map(|(n, s)| (FieldName::Other(n.clone()), s)))
    }
}

/// Sealed-off contents of a memtable, waiting to be (or being) written as a segment.
#[derive(Debug, Default)]
pub struct Frozen {
    /// Sorted series, keyed by GPU then field.
    pub series: HashMap<GpuUuid, HashMap<FieldName, SeriesBuf>>,
    pub samples: u64,
}

impl Frozen {
    pub fn series(&self, gpu: &GpuUuid, field: &FieldName) -> Option<&SeriesBuf> {
        self.series.get(gpu)?.get(field)
    }
}

/// The live table.
#[derive(Debug, Default)]
pub struct MemTable {
    gpus: HashMap<GpuUuid, GpuSeries>,
    /// Unsealed samples.
    samples: u64,
    /// Smallest and largest timestamp among unsealed samples.
    span: Option<(TimestampMs, TimestampMs)>,
}

impl MemTable {
    pub fn insert_rows(&mut self, rows: &[GpuSamples]) {
        for row in rows {
            if row.values.is_empty() {
                continue;
            }
            let ts = row.ts_ms;
            let g = match self.gpus.get_mut(&row.gpu) {
                Some(g) => g,
                None => self.gpus.entry(row.gpu.clone()).or_insert_with(|| GpuSeries::new(ts)),
            };
            g.first_seen = g.first_seen.min(ts);
            g.last_seen = g.last_seen.max(ts);
            for (f, v) in &row.values {
                g.series_mut(f).push(ts, *v);
            }
            self.samples += row.values.len() as u64;
            self.span = Some(match self.span {
                None => (ts, ts),
                Some((lo, hi)) => (lo.min(ts), hi.max(ts)),
            });
        }
    }

    /// Registers what a sealed segment knows, at open: the series' latest point and the
    /// GPU's seen times, without buffering points.
    pub fn note_sealed(&mut self, gpu: &GpuUuid, field: &FieldName, min_ts: TimestampMs, last: Point) {
        let g = self.gpus.entry(gpu.clone()).or_insert_with(|| GpuSeries::new(min_ts));
        g.first_seen = g.first_seen.min(min_ts);
        g.last_seen = g.last_seen.max(last.ts_ms);
        g.series_mut(field).note_latest(last);
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Data-time span of the unsealed samples (newest − oldest timestamp).
    pub fn span_ms(&self) -> i64 {
        self.span.map_or(0, |(lo, hi)| hi.saturating_sub(lo))
    }

    /// Takes the unsealed points out (sorted), keeping latest points and seen times.
    pub fn freeze(&mut self) -> Frozen {
        let mut frozen = Frozen {
            series: HashMap::new(),
            samples: self.samples,
        };
        for (gpu, g) in &mut self.gpus {
            let mut fields = HashMap::new();
            let known = DcgmField::ALL
                .iter()
                .zip(g.dcgm.iter_mut())
                .map(|(f, s)| (FieldName::Dcgm(*f), s));
            let others = g.other.iter_mut().map(|(n, s)| (FieldName::Other(n.clone()), s));
            for (name, s) in known.chain(others) {
                if s.buf.len() > 0 {
                    let mut buf = std::mem::take(&mut s.buf);
                    buf.sort();
                    fields.insert(name, buf);
                }
            }
            if !fields.is_empty() {
                frozen.series.insert(gpu.clone(), fields);
            }
        }
        self.samples = 0;
        self.span = None;
        frozen
    }

    pub fn latest(&self, gpu: &GpuUuid) -> Vec<(FieldName, Point)> {
        let Some(g) = self.gpus.get(gpu) else { return Vec::new() };
        g.iter().filter_map(|(f, s)| s.latest.map(|p| (f, p))).collect()
    }

    pub fn series(&self, gpu: &GpuUuid, field: &FieldName) -> Option<&SeriesBuf> {
        Some(&self.gpus.get(gpu)?.series(field)?.buf)
    }

    /// Every GPU with sample data and its first / last sample time.
    pub fn seen(&self) -> impl Iterator<Item = (&GpuUuid, TimestampMs, TimestampMs)> {
        self.gpus.iter().map(|(u, g)| (u, g.first_seen, g.last_seen))
    }

    /// Series with a latest point: every series written since the store was created
    /// (sealed, unsealed, or expired by retention).
    pub fn known_series(&self) -> u64 {
        self.gpus
            .values()
            .map(|g| g.iter().filter(|(_, s)| s.latest.is_some()).count() as u64)
            .sum()
    }
}
