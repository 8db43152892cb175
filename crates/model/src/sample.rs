//! Samples: one value of one field for one GPU at one time.

use crate::field::FieldName;
use crate::gpu::GpuUuid;
use crate::time::TimestampMs;
use serde::{Deserialize, Serialize};

/// One value of one field for one GPU at one time.
///
/// `value` may be NaN when the exporter said `NaN`; a value that could not be read at all
/// is simply absent (no sample), never a made-up zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub gpu: GpuUuid,
    pub field: FieldName,
    pub ts_ms: TimestampMs,
    pub value: f64,
}

/// All values read for one GPU at one time: the unit a scrape produces and the store
/// appends. Grouping by GPU keeps the UUID out of every value and lets the store write a
/// row at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSamples {
    pub gpu: GpuUuid,
    pub ts_ms: TimestampMs,
    pub values: Vec<(FieldName, f64)>,
}

impl GpuSamples {
    pub fn new(gpu: GpuUuid, ts_ms: TimestampMs) -> Self {
        GpuSamples {
            gpu,
            ts_ms,
            values: Vec::new(),
        }
    }

    /// The value of a field in this row, if present.
    pub fn get(&self, field: &FieldName) -> Option<f64> {
        self.values.iter().find(|(f, _)| f == field).map(|(_, v)| *v)
    }

    /// Flattens into individual samples.
    pub fn samples(&self) -> impl Iterator<Item = Sample> + '_ {
        self.values.iter().map(move |(f, v)| Sample {
            gpu: self.gpu.clone(),
            field: f.clone(),
            ts_ms: self.ts_ms,
            value: *v,
        })
    }
}
