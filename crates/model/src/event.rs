//! Events: discrete things that happened to a GPU (an XID, a GPU that vanished from its
//! node's scrape, a double-bit ECC error, a process that started).

use crate::gpu::GpuUuid;
use crate::time::TimestampMs;
use serde::{Deserialize, Serialize};

/// Something discrete that happened to a GPU at a time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub gpu: GpuUuid,
    pub node: String,
    pub ts_ms: TimestampMs,
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// An XID error. From dcgm-exporter we learn only the code (a change of the
    /// last-XID gauge); kernel logs and NVML add the message and process.
    Xid {
        code: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        process: Option<String>,
    },
    /// The last-XID gauge went back to 0: the condition the previous XID reported is no
    /// longer "active" for this GPU.
    XidCleared { previous_code: u32 },
    /// The GPU was present in its node's previous scrape and is absent now.
    GpuDisappeared,
    /// The GPU appeared in a scrape (first time, or after disappearing).
    GpuAppeared,
    /// The double-bit (uncorrectable) ECC counter increased.
    EccDbe { count: u64 },
    /// Row remapping failed on the GPU's memory.
    RemapFailure,
    /// A clock-event (throttle) reason became active; `reasons` is the bitmask.
    ThrottleStart { reasons: u64 },
    /// A process started on the GPU.
    ProcessStart {
        pid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}
