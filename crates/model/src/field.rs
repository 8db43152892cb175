//! The typed set of DCGM fields gpuwarden understands, named as dcgm-exporter names them.
//!
//! The list covers dcgm-exporter's default and DCP counter lists
//! (`etc/default-counters.csv`, `etc/dcp-metrics-included.csv`), the ECC / retired-page /
//! NVLink error / violation / clock-event fields those lists leave commented out, and a
//! few static fields (limits, modes) that health rules need. A metric that is not in the
//! list is kept as [`FieldName::Other`], never dropped.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Whether a field is a level (gauge) or a monotonically increasing total (counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Gauge,
    Counter,
}

macro_rules! dcgm_fields {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $ty:ident, $unit:literal; )*) => {
        /// A known DCGM field. `as_str` gives dcgm-exporter's metric name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum DcgmField {
            $( $(#[$doc])* $variant, )*
        }

        impl DcgmField {
            /// Every known field, in declaration order.
            pub const ALL: &'static [DcgmField] = &[ $( DcgmField::$variant, )* ];

            /// dcgm-exporter's metric name, e.g. `DCGM_FI_DEV_GPU_TEMP`.
            pub const fn as_str(self) -> &'static str {
                match self { $( DcgmField::$variant => $name, )* }
            }

            /// Gauge or counter, as dcgm-exporter declares it.
            pub const fn field_type(self) -> FieldType {
                match self { $( DcgmField::$variant => FieldType::$ty, )* }
            }

            /// Unit of the value as exported (e.g. `C`, `W`, `MHz`, `%`, `MiB`).
            pub const fn unit(self) -> &'static str {
                match self { $( DcgmField::$variant => $unit, )* }
            }

            /// Looks a metric name up. Unknown names give `None`.
            pub fn from_name(name: &str) -> Option<DcgmField> {
                // A match on string literals compiles to a length-then-bytes comparison
                // tree, which is fast enough for the hot parse path.
                match name { $( $name => Some(DcgmField::$variant), )* _ => None }
            }
        }
    };
}

dcgm_fields! {
    // Clocks
    SmClock = "DCGM_FI_DEV_SM_CLOCK", Gauge, "MHz";
    MemClock = "DCGM_FI_DEV_MEM_CLOCK", Gauge, "MHz";
    MaxSmClock = "DCGM_FI_DEV_MAX_SM_CLOCK", Gauge, "MHz";
    MaxMemClock = "DCGM_FI_DEV_MAX_MEM_CLOCK", Gauge, "MHz";
    /// Clock-event (throttle) reasons bitmask. Older exporters name it CLOCK_THROTTLE_REASONS.
    ClockEventReasons = "DCGM_FI_DEV_CLOCKS_EVENT_REASONS", Gauge, "bitmask";
    ClockThrottleReasons = "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", Gauge, "bitmask";
    // Temperature
    GpuTemp = "DCGM_FI_DEV_GPU_TEMP", Gauge, "C";
    MemoryTemp = "DCGM_FI_DEV_MEMORY_TEMP", Gauge, "C";
    SlowdownTemp = "DCGM_FI_DEV_SLOWDOWN_TEMP", Gauge, "C";
    ShutdownTemp = "DCGM_FI_DEV_SHUTDOWN_TEMP", Gauge, "C";
    GpuMaxOpTemp = "DCGM_FI_DEV_GPU_MAX_OP_TEMP", Gauge, "C";
    FanSpeed = "DCGM_FI_DEV_FAN_SPEED", Gauge, "%";
    // Power
    PowerUsage = "DCGM_FI_DEV_POWER_USAGE", Gauge, "W";
    TotalEnergyConsumption = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", Counter, "mJ";
    PowerMgmtLimit = "DCGM_FI_DEV_POWER_MGMT_LIMIT", Gauge, "W";
    EnforcedPowerLimit = "DCGM_FI_DEV_ENFORCED_POWER_LIMIT", Gauge, "W";
    Pstate = "DCGM_FI_DEV_PSTATE", Gauge, "";
    // PCIe
    PcieReplayCounter = "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", Counter, "count";
    PcieTxThroughput = "DCGM_FI_DEV_PCIE_TX_THROUGHPUT", Counter, "KB";
    PcieRxThroughput = "DCGM_FI_DEV_PCIE_RX_THROUGHPUT", Counter, "KB";
    PcieLinkGen = "DCGM_FI_DEV_PCIE_LINK_GEN", Gauge, "";
    PcieLinkWidth = "DCGM_FI_DEV_PCIE_LINK_WIDTH", Gauge, "lanes";
    // Utilization
    GpuUtil = "DCGM_FI_DEV_GPU_UTIL", Gauge, "%";
    MemCopyUtil = "DCGM_FI_DEV_MEM_COPY_UTIL", Gauge, "%";
    EncUtil = "DCGM_FI_DEV_ENC_UTIL", Gauge, "%";
    DecUtil = "DCGM_FI_DEV_DEC_UTIL", Gauge, "%";
    // Errors and violations
    /// Value of the last XID seen. A gauge that never resets: changes become XID events.
    XidErrors = "DCGM_FI_DEV_XID_ERRORS", Gauge, "xid";
    PowerViolation = "DCGM_FI_DEV_POWER_VIOLATION", Counter, "ns";
    ThermalViolation = "DCGM_FI_DEV_THERMAL_VIOLATION", Counter, "ns";
    SyncBoostViolation = "DCGM_FI_DEV_SYNC_BOOST_VIOLATION", Counter, "ns";
    BoardLimitViolation = "DCGM_FI_DEV_BOARD_LIMIT_VIOLATION", Counter, "ns";
    LowUtilViolation = "DCGM_FI_DEV_LOW_UTIL_VIOLATION", Counter, "ns";
    ReliabilityViolation = "DCGM_FI_DEV_RELIABILITY_VIOLATION", Counter, "ns";
    // Memory usage
    FbFree = "DCGM_FI_DEV_FB_FREE", Gauge, "MiB";
    FbUsed = "DCGM_FI_DEV_FB_USED", Gauge, "MiB";
    FbReserved = "DCGM_FI_DEV_FB_RESERVED", Gauge, "MiB";
    FbTotal = "DCGM_FI_DEV_FB_TOTAL", Gauge, "MiB";
    FbUsedPercent = "DCGM_FI_DEV_FB_USED_PERCENT", Gauge, "ratio";
    // ECC
    EccSbeVolTotal = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", Counter, "count";
    EccDbeVolTotal = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", Counter, "count";
    EccSbeAggTotal = "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", Counter, "count";
    EccDbeAggTotal = "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", Counter, "count";
    EccCurrent = "DCGM_FI_DEV_ECC_CURRENT", Gauge, "mode";
    // Retired pages
    RetiredSbe = "DCGM_FI_DEV_RETIRED_SBE", Counter, "pages";
    RetiredDbe = "DCGM_FI_DEV_RETIRED_DBE", Counter, "pages";
    RetiredPending = "DCGM_FI_DEV_RETIRED_PENDING", Counter, "pages";
    // Remapped rows
    UncorrectableRemappedRows = "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", Counter, "rows";
    CorrectableRemappedRows = "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", Counter, "rows";
    RowRemapFailure = "DCGM_FI_DEV_ROW_REMAP_FAILURE", Gauge, "bool";
    RowRemapPending = "DCGM_FI_DEV_ROW_REMAP_PENDING", Gauge, "bool";
    // NVLink
    NvlinkCrcFlitErrorCountTotal = "DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL", Counter, "count";
    NvlinkCrcDataErrorCountTotal = "DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL", Counter, "count";
    NvlinkReplayErrorCountTotal = "DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL", Counter, "count";
    NvlinkRecoveryErrorCountTotal = "DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL", Counter, "count";
    NvlinkBandwidthTotal = "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", Counter, "bytes";
    NvlinkBandwidthL0 = "DCGM_FI_DEV_NVLINK_BANDWIDTH_L0", Counter, "bytes";
    // Modes
    PersistenceMode = "DCGM_FI_DEV_PERSISTENCE_MODE", Gauge, "mode";
    MigMode = "DCGM_FI_DEV_MIG_MODE", Gauge, "mode";
    ComputeMode = "DCGM_FI_DEV_COMPUTE_MODE", Gauge, "mode";
    VgpuLicenseStatus = "DCGM_FI_DEV_VGPU_LICENSE_STATUS", Gauge, "";
    DevCount = "DCGM_FI_DEV_COUNT", Gauge, "count";
    // DCP profiling fields
    ProfGrEngineActive = "DCGM_FI_PROF_GR_ENGINE_ACTIVE", Gauge, "ratio";
    ProfSmActive = "DCGM_FI_PROF_SM_ACTIVE", Gauge, "ratio";
    ProfSmOccupancy = "DCGM_FI_PROF_SM_OCCUPANCY", Gauge, "ratio";
    ProfPipeTensorActive = "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", Gauge, "ratio";
    ProfDramActive = "DCGM_FI_PROF_DRAM_ACTIVE", Gauge, "ratio";
    ProfPipeFp64Active = "DCGM_FI_PROF_PIPE_FP64_ACTIVE", Gauge, "ratio";
    ProfPipeFp32Active = "DCGM_FI_PROF_PIPE_FP32_ACTIVE", Gauge, "ratio";
    ProfPipeFp16Active = "DCGM_FI_PROF_PIPE_FP16_ACTIVE", Gauge, "ratio";
    ProfPcieTxBytes = "DCGM_FI_PROF_PCIE_TX_BYTES", Counter, "bytes/s";
    ProfPcieRxBytes = "DCGM_FI_PROF_PCIE_RX_BYTES", Counter, "bytes/s";
    ProfNvlinkTxBytes = "DCGM_FI_PROF_NVLINK_TX_BYTES", Counter, "bytes/s";
    ProfNvlinkRxBytes = "DCGM_FI_PROF_NVLINK_RX_BYTES", Counter, "bytes/s";
    // dcgm-exporter's own fields
    ExpClockEventsCount = "DCGM_EXP_CLOCK_EVENTS_COUNT", Counter, "count";
    ExpXidErrorsCount = "DCGM_EXP_XID_ERRORS_COUNT", Counter, "count";
    ExpGpuHealthStatus = "DCGM_EXP_GPU_HEALTH_STATUS", Gauge, "";
    ExpP2pStatus = "DCGM_EXP_P2P_STATUS", Gauge, "";
}

impl DcgmField {
    /// Dense index in `0..ALL.len()`, handy for arrays keyed by field.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DcgmField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of a sampled field: a known DCGM field, or any other metric name kept as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldName {
    Dcgm(DcgmField),
    Other(Box<str>),
}

impl FieldName {
    /// Known names become [`FieldName::Dcgm`], the rest [`FieldName::Other`].
    pub fn parse(name: &str) -> FieldName {
        match DcgmField::from_name(name) {
            Some(f) => FieldName::Dcgm(f),
            None => FieldName::Other(name.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            FieldName::Dcgm(f) => f.as_str(),
            FieldName::Other(s) => s,
        }
    }

    pub fn dcgm(&self) -> Option<DcgmField> {
        match self {
            FieldName::Dcgm(f) => Some(*f),
            FieldName::Other(_) => None,
        }
    }
}

impl From<DcgmField> for FieldName {
    fn from(f: DcgmField) -> Self {
        FieldName::Dcgm(f)
    }
}

impl fmt::Display for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FieldName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(FieldName::parse(&s))
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for FieldName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("dcgm-exporter metric name, e.g. DCGM_FI_DEV_GPU_TEMP"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for FieldName {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_field_round_trips_through_its_name() {
        for f in DcgmField::ALL {
            assert_eq!(DcgmField::from_name(f.as_str()), Some(*f));
            assert_eq!(FieldName::parse(f.as_str()), FieldName::Dcgm(*f));
        }
    }

    #[test]
    fn unknown_metric_is_kept_not_dropped() {
        let f = FieldName::parse("DCGM_FI_DEV_SOMETHING_NEW");
        assert_eq!(f, FieldName::Other("DCGM_FI_DEV_SOMETHING_NEW".into()));
        assert_eq!(f.as_str(), "DCGM_FI_DEV_SOMETHING_NEW");
    }

    #[test]
    fn field_name_serializes_as_plain_string() {
        let json = serde_json::to_string(&FieldName::Dcgm(DcgmField::GpuTemp)).unwrap();
        assert_eq!(json, "\"DCGM_FI_DEV_GPU_TEMP\"");
        let back: FieldName = serde_json::from_str(&json).unwrap();
        assert_eq!(back, FieldName::Dcgm(DcgmField::GpuTemp));
    }
}
