//! gpuwarden's sources: turning what exporters publish into the model's vocabulary.
//!
//! - [`prom`]: a zero-copy, bounded parser for the Prometheus / OpenMetrics text format.
//! - [`dcgm`]: maps a parsed exporter page (dcgm-exporter, or nvidia_gpu_exporter via
//!   [`nvsmi`]) to GPU identities and per-GPU sample rows.
//! - [`validate`]: physical bounds per field; impossible values are refused at mapping.
//! - [`xid`]: turns dcgm-exporter's last-XID gauge into XID events.
//! - [`scrape`]: the scrape collector (HTTP, timeouts, size limit, per-target state).

pub mod dcgm;
pub mod kmsg;
pub mod nvml;
pub mod nvsmi;
pub mod nvsmi_query;
pub mod procattr;
pub mod prom;
pub mod scrape;
pub mod validate;
pub mod xid;
