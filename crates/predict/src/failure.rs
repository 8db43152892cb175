//! What a *hard failure* is: an event that ends a GPU's useful life until someone acts
//! (reset, remap, reseat, RMA). The predictor's label is "a hard failure within 24 h".
//!
//! The list follows the brief and the XID catalog: uncorrectable ECC / double-bit errors
//! (XID 48, 94, 95, 140), a failed row remap (XID 64 or `ROW_REMAP_FAILURE`), a GPU that
//! fell off the bus (XID 79), GSP errors (XID 119, 120), PMU halt (XID 62), plus every
//! code the catalog marks `fatal` (e.g. 143 initialization failure, 173 C2C link). Soft
//! faults (application XIDs, throttling, a PCIe replay burst) are not failures: they are
//! among the *signals*.

use gpuwarden_detect::XidCatalog;
use gpuwarden_model::{Event, EventKind, FaultKind, GpuUuid, Severity, TimestampMs};
use serde::{Deserialize, Serialize};

/// XID codes that are hard failures whatever the catalog says.
pub const HARD_FAILURE_XIDS: &[u32] = &[48, 62, 64, 79, 94, 95, 119, 120, 140];

/// Which hard failures a set of XID codes means: the fixed list plus the catalog's
/// `fatal` codes. Built once; lookups are a binary search.
#[derive(Debug, Clone)]
pub struct HardFailureCodes {
    codes: Vec<u32>,
}

impl HardFailureCodes {
    pub fn new(catalog: &XidCatalog) -> Self {
        let mut codes: Vec<u32> = HARD_FAILURE_XIDS.to_vec();
        codes.extend(
            catalog
                .entries()
                .filter(|e| e.severity == Severity::Fatal)
                .map(|e| e.code),
        );
        codes.sort_unstable();
        codes.dedup();
        HardFailureCodes { codes }
    }

    /// True when XID `code` is a hard failure.
    pub fn is_hard(&self, code: u32) -> bool {
        self.codes.binary_search(&code).is_ok()
    }

    pub fn codes(&self) -> &[u32] {
        &self.codes
    }
}

/// One hard failure of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HardFailure {
    pub gpu: GpuUuid,
    pub ts_ms: TimestampMs,
    /// What it was, e.g. `xid.79`, `ecc.dbe`, `row_remap_failure`.
    pub cause: String,
}

/// The hard failure an event reports, if it reports one.
pub fn failure_of_event(event: &Event, codes: &HardFailureCodes) -> Option<HardFailure> {
    let cause = match &event.kind {
        EventKind::Xid { code, .. } if codes.is_hard(*code) => format!("xid.{code}"),
        EventKind::EccDbe { .. } => "ecc.dbe".to_string(),
        EventKind::RemapFailure => "row_remap_failure".to_string(),
        _ => return None,
    };
    Some(HardFailure {
        gpu: event.gpu.clone(),
        ts_ms: event.ts_ms,
        cause,
    })
}

/// True for the simulator's fault kinds that are hard failures (ground truth).
pub const fn is_hard_fault_kind(kind: FaultKind) -> bool {
    matches!(
        kind,
        FaultKind::EccDbe | FaultKind::RowRemapFailure | FaultKind::FallenOffBus
    )
}

/// The first hard failure of each GPU in `failures` (a GPU's useful life ends at its
/// first; what follows is the same outage).
pub fn first_failures(
    failures: impl IntoIterator<Item = HardFailure>,
) -> std::collections::HashMap<GpuUuid, HardFailure> {
    let mut first: std::collections::HashMap<GpuUuid, HardFailure> = std::collections::HashMap::new();
    for f in failures {
        match first.get(&f.gpu) {
            Some(prev) if prev.ts_ms <= f.ts_ms => {}
            _ => {
                first.insert(f.gpu.clone(), f);
            }
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_fatal_codes_and_the_fixed_list_are_hard() {
        let codes = HardFailureCodes::new(&XidCatalog::builtin());
        for c in [48, 62, 64, 79, 94, 95, 119, 120, 143, 173] {
            assert!(codes.is_hard(c), "{c}");
        }
        for c in [13, 31, 43, 63, 74] {
            assert!(!codes.is_hard(c), "{c}");
        }
    }
}
