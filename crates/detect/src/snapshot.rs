//! One-shot scoring of a single exporter page, for `gpuwarden scrape URL`.
//!
//! A single page has no history, so rules that need it are skipped (and the evaluation
//! says so): rates (corrected ECC per hour, NVLink and PCIe errors per minute, remapped
//! rows added). What a single page does show still applies: a non-zero volatile DBE
//! count, remap pending / failure, retired pages, temperatures, throttle bits, power,
//! clocks against peers, and the last-XID gauge when it is not 0. Conditions that
//! normally must be sustained are judged on the one sample.

use crate::catalog::XidCatalog;
use crate::engine::{Evaluation, HealthEngine};
use crate::rules::HealthRules;
use gpuwarden_model::{DcgmField, Event, EventKind, FieldName, Freshness, GpuIdentity, GpuSamples};
use std::collections::BTreeSet;

/// Scores one page: `rows` and `identities` as the exporter mapping produced them.
pub fn evaluate_snapshot(
    rows: &[GpuSamples],
    identities: &[GpuIdentity],
    rules: &HealthRules,
    catalog: &XidCatalog,
) -> Evaluation {
    let mut engine = HealthEngine::for_snapshot(rules.clone(), catalog.clone());
    for id in identities {
        engine.observe_identity(id);
    }
    let mut now = i64::MIN;
    let mut present = BTreeSet::new();
    let gauge = FieldName::Dcgm(DcgmField::XidErrors);
    for row in rows {
        engine.observe_row(row);
        now = now.max(row.ts_ms);
        present.insert(row.gpu.clone());
        // The last-XID gauge: on a single page, any non-zero value is reported.
        if let Some(code) = row
            .get(&gauge)
            .filter(|v| v.is_finite() && *v > 0.0 && v.fract() == 0.0 && *v <= f64::from(u32::MAX))
        {
            let node = identities
                .iter()
                .find(|i| i.uuid == row.gpu)
                .map_or(String::new(), |i| i.node.clone());
            engine.observe_event(&Event {
                gpu: row.gpu.clone(),
                node,
                ts_ms: row.ts_ms,
                kind: EventKind::Xid {
                    code: code as u32,
                    message: None,
                    pid: None,
                    process: None,
                },
            });
        }
    }
    if now == i64::MIN {
        now = 0;
    }
    let mut eval = engine.evaluate(now, &|gpu| {
        if present.contains(gpu) {
            Freshness::Fresh
        } else {
            // Listed on the page but without values: nothing to judge.
            Freshness::TooOld
        }
    });
    eval.notes.push(
        "single page: rules that need history were skipped (ecc.sbe_rate, remap.uncorrectable_rows, \
         remap.correctable_rows, nvlink.*, pcie.replay); sustained conditions were judged on one sample; \
         a non-zero last-XID gauge is reported however old the XID is"
            .to_string(),
    );
    eval
}
