//! Health vocabulary: the five dimensions of a health score and the states a GPU or
//! node can be in.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The five dimensions of a health score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Thermal,
    Power,
    /// ECC, remapped rows, retired pages.
    Memory,
    /// NVLink and PCIe.
    Interconnect,
    /// XIDs, clocks, throttling, performance against peers.
    Compute,
}

impl Dimension {
    pub const ALL: [Dimension; 5] = [
        Dimension::Thermal,
        Dimension::Power,
        Dimension::Memory,
        Dimension::Interconnect,
        Dimension::Compute,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Dimension::Thermal => "thermal",
            Dimension::Power => "power",
            Dimension::Memory => "memory",
            Dimension::Interconnect => "interconnect",
            Dimension::Compute => "compute",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Health state. `Unknown` is for stale or missing data: never shown as healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    Healthy,
    Degraded,
    Unhealthy,
    Unknown,
}

impl HealthState {
    pub const fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a GPU's data can be trusted now, and if not, why. Decided by the pipeline
/// (the one place that sees every scrape); analyzers must score anything but `Fresh` as
/// [`HealthState::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    /// Data is fresh.
    Fresh,
    /// The GPU was absent from its target's last successful scrape (its node still
    /// answers: the GPU itself is gone, e.g. fallen off the bus).
    MissingFromScrape,
    /// The target's last scrape failed.
    TargetDown,
    /// No successful scrape of the target within the staleness window.
    TooOld,
}
