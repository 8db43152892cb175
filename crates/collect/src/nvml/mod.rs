//! NVML collection on a GPU host, behind one trait so that everything above it is tested
//! without a GPU.
//!
//! - [`GpuSource`]: the contract (identities, one row of values per GPU, XID events,
//!   compute processes). Implementations MUST NOT substitute 0 for a value they could not
//!   read: an unsupported or failing query leaves the field absent.
//! - [`reading`]: [`DeviceReading`], one GPU's raw NVML readings in NVML units, and its
//!   mapping to the model (dcgm-exporter field names and units), shared by every source.
//! - [`fixture`]: a source replaying a recorded NVML-shaped JSON file (`testdata/nvml/`).
//! - [`device`]: the real source over `nvml-wrapper`, loading `libnvidia-ml.so` at run
//!   time; on a host without the driver [`device::NvmlSource::open`] returns an error
//!   and the agent carries on with its other sources.

pub mod device;
pub mod fixture;
pub mod reading;

pub use reading::{DeviceReading, NvLinkReading};

use gpuwarden_model::{Event, EventKind, GpuIdentity, GpuSamples, GpuUuid, TimestampMs};
use serde::{Deserialize, Serialize};

/// Errors of an NVML source, with the GPU or file they concern.
#[derive(Debug, thiserror::Error)]
pub enum NvmlError {
    #[error("NVML not available: {0}")]
    Unavailable(String),
    #[error("NVML query {what} failed: {cause}")]
    Query { what: String, cause: String },
    #[error("NVML fixture {path}: {cause}")]
    Fixture { path: String, cause: String },
}

/// A compute process on a GPU, as NVML lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub gpu: GpuUuid,
    pub pid: u32,
    /// GPU memory used by the process; `None` when NVML cannot tell (e.g. in a container
    /// without the host PID namespace, or under MIG).
    #[serde(default)]
    pub used_memory_bytes: Option<u64>,
}

/// One XID reported by NVML's event API (`EventTypes::CRITICAL_XID_ERROR`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvmlXid {
    pub gpu: GpuUuid,
    pub code: u32,
    pub ts_ms: TimestampMs,
}

impl NvmlXid {
    /// The model event. NVML gives no message or process for an XID; the kernel log does.
    pub fn to_event(&self, node: &str) -> Event {
        Event {
            gpu: self.gpu.clone(),
            node: node.to_owned(),
            ts_ms: self.ts_ms,
            kind: EventKind::Xid {
                code: self.code,
                message: None,
                pid: None,
                process: None,
            },
        }
    }
}

/// A source of NVML-shaped readings.
pub trait GpuSource: Send {
    /// What is being read, for logs (`NVML 590.48.01`, `fixture testdata/nvml/h100.json`).
    fn describe(&self) -> String;

    /// Reads every GPU now. A GPU that cannot be read at all is left out (it then shows as
    /// disappeared and stale upstream); a value that cannot be read is `None`.
    fn read(&mut self, now_ms: TimestampMs) -> Result<Vec<DeviceReading>, NvmlError>;

    /// XIDs reported since the last call, without waiting.
    fn xid_events(&mut self, now_ms: TimestampMs) -> Result<Vec<NvmlXid>, NvmlError>;

    /// Compute processes on every GPU now.
    fn processes(&mut self) -> Result<Vec<GpuProcess>, NvmlError>;

    /// Identities of the GPUs, with `node` as their node.
    fn identities(&mut self, node: &str, now_ms: TimestampMs) -> Result<Vec<GpuIdentity>, NvmlError> {
        Ok(self.read(now_ms)?.iter().map(|r| r.identity(node)).collect())
    }

    /// One row of values per GPU at `now_ms`, plus the identities (the shape of a scraped
    /// exporter page).
    fn sample(&mut self, node: &str, now_ms: TimestampMs) -> Result<(Vec<GpuIdentity>, Vec<GpuSamples>), NvmlError> {
        let readings = self.read(now_ms)?;
        Ok((
            readings.iter().map(|r| r.identity(node)).collect(),
            readings.iter().map(|r| r.row(now_ms)).collect(),
        ))
    }
}
