//! The analyzer role: anything that watches samples and events and concludes findings.
//!
//! The health engine, security detections and anomaly detectors all implement it; the
//! pipeline's analysis stage feeds every registered analyzer the same data and collects
//! their findings each evaluation, so adding an analyzer never touches the pipeline.
//! Implementations are pure and synchronous: no I/O, no clock (time is passed in).

use crate::event::Event;
use crate::finding::Finding;
use crate::gpu::{GpuIdentity, GpuUuid};
use crate::health::Freshness;
use crate::sample::GpuSamples;
use crate::time::TimestampMs;

/// An analyzer. `evaluate` returns the findings active *now* (one per rule per GPU or
/// node); a condition that cleared simply stops appearing.
pub trait Analyzer: Send {
    /// Short stable name, for logs and metrics (e.g. `security`).
    fn name(&self) -> &'static str;
    /// A GPU's identity (labels can change: new pod, new driver).
    fn observe_identity(&mut self, _identity: &GpuIdentity) {}
    /// One row of samples (data time = `row.ts_ms`).
    fn observe_row(&mut self, _row: &GpuSamples) {}
    /// One event (XID, GPU disappeared, …).
    fn observe_event(&mut self, _event: &Event) {}
    /// One scrape's worth, in the order the analysis stage feeds every analyzer: the
    /// page's identities, then its rows, then the events derived from it (an event can
    /// refer to a GPU the page just introduced).
    fn observe_page(&mut self, identities: &[GpuIdentity], rows: &[GpuSamples], events: &[Event]) {
        for id in identities {
            self.observe_identity(id);
        }
        for row in rows {
            self.observe_row(row);
        }
        for e in events {
            self.observe_event(e);
        }
    }
    /// The findings active at `now_ms` (data time). `freshness` says whether a GPU's data
    /// can be trusted now; anything but `Fresh` must not produce a healthy conclusion.
    fn evaluate(&mut self, now_ms: TimestampMs, freshness: &dyn Fn(&GpuUuid) -> Freshness) -> Vec<Finding>;
}
