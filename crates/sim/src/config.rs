//! Simulator configuration: fleet size, seed, speed, model mix, fault rates.

use crate::models::{GpuModel, ModelShare};
use gpuwarden_model::TimestampMs;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// Everything the simulator needs to build and serve a fleet.
///
/// The same config (seed included) and the same sequence of `advance_to` calls always
/// give the same pages and labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Number of nodes (one `/metrics` endpoint each), 1 to [`MAX_NODES`].
    pub nodes: usize,
    /// GPUs per node.
    pub gpus_per_node: usize,
    /// Seed of the fleet's `ChaCha8Rng`.
    pub seed: u64,
    /// Simulated milliseconds per wall millisecond (1 = real time).
    pub speed: f64,
    /// Share of nodes of each GPU model; nodes are homogeneous.
    pub model_mix: Vec<ModelShare>,
    /// Multiplies the default per-GPU-year fault rates (a small fleet would otherwise
    /// almost never see a fault). 0 disables random faults.
    pub fault_rate_multiplier: f64,
    /// Where to append fault labels as JSON lines, if anywhere.
    pub labels_path: Option<PathBuf>,
    /// Address the listeners bind to.
    pub listen_host: IpAddr,
    /// First port; node `i` listens on `base_port + i` (with one listener per node), or
    /// the one shared listener's port. `None` = ephemeral ports.
    pub base_port: Option<u16>,
    /// Serve every node from one listener, node `i` at `/nodes/{i}/metrics`, instead of
    /// one listener (port) per node. Forced on above [`MAX_PORT_PER_NODE`] nodes: a
    /// port per node runs out of ports (and file descriptors) long before 100,000 GPUs.
    pub shared_listener: bool,
    /// Simulated start time. `None`: the wall clock when the service starts, or
    /// [`DEFAULT_START_MS`] for a bare [`crate::Fleet`] (which never reads the clock).
    pub start_ms: Option<TimestampMs>,
}

/// The largest fleet the simulator builds, in nodes (100,000 GPUs is 12,500 nodes of 8).
pub const MAX_NODES: usize = 131_072;

/// Up to this many nodes, each node gets its own listener (port), like real exporters;
/// above it, nodes share one listener (see [`SimConfig::shared_listener`]).
pub const MAX_PORT_PER_NODE: usize = 1024;

/// Start time of a [`crate::Fleet`] built without `start_ms`: 2025-01-01T00:00:00Z.
pub const DEFAULT_START_MS: TimestampMs = 1_735_689_600_000;

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 4,
            gpus_per_node: 8,
            seed: 42,
            speed: 1.0,
            model_mix: GpuModel::ALL
                .iter()
                .map(|&model| ModelShare { model, weight: 1.0 })
                .collect(),
            fault_rate_multiplier: 1.0,
            labels_path: None,
            listen_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            base_port: None,
            shared_listener: false,
            start_ms: None,
        }
    }
}

impl SimConfig {
    /// Whether all nodes are served from one listener (asked for, or too many nodes for
    /// a port each).
    pub fn one_listener(&self) -> bool {
        self.shared_listener || self.nodes > MAX_PORT_PER_NODE
    }

    /// Checks the values a fleet cannot be built from.
    pub fn validate(&self) -> Result<(), crate::SimError> {
        let bad = |m: &str| Err(crate::SimError::InvalidConfig(m.to_string()));
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return bad(&format!("nodes must be in 1..={MAX_NODES}"));
        }
        if self.gpus_per_node == 0 || self.gpus_per_node > 64 {
            return bad("gpus_per_node must be in 1..=64");
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return bad("speed must be a positive number");
        }
        if !(self.fault_rate_multiplier.is_finite() && self.fault_rate_multiplier >= 0.0) {
            return bad("fault_rate_multiplier must be >= 0");
        }
        if self
            .model_mix
            .iter()
            .any(|s| !(s.weight.is_finite() && s.weight >= 0.0))
        {
            return bad("model_mix weights must be >= 0");
        }
        if let Some(p) = self.base_port {
            let ports = if self.one_listener() { 1 } else { self.nodes };
            if p as usize + ports > 65536 || p == 0 {
                return bad("base_port + nodes must fit in 1..=65535");
            }
        }
        Ok(())
    }
}
