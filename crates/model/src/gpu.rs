//! A GPU's identity: UUID, node, model, PCI address, driver, MIG instance and the
//! workload (Kubernetes pod or HPC job) it is attributed to.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// A GPU's UUID as NVIDIA prints it (`GPU-20c56d28-…`).
///
/// A MIG slice is keyed `"{parent UUID}/mig/{GPU_I_ID}"` (e.g. `GPU-20c56d28-…/mig/3`), so
/// a slice's series never overwrite its parent's. Its [`GpuIdentity::mig`] holds the
/// instance id and profile, and `extra_labels["parent_uuid"]` the parent's UUID
/// (dcgm-exporter labels a slice's series with the parent's `UUID` plus `GPU_I_ID`).
///
/// Cheap to clone: it is shared between every sample of the GPU.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GpuUuid(pub Arc<str>);

impl GpuUuid {
    pub fn new(s: &str) -> Self {
        GpuUuid(Arc::from(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GpuUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for GpuUuid {
    fn from(s: &str) -> Self {
        GpuUuid::new(s)
    }
}

/// A MIG (multi-instance GPU) slice, from dcgm-exporter's `GPU_I_ID` / `GPU_I_PROFILE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigInstance {
    /// GPU instance id (`GPU_I_ID`).
    pub instance_id: String,
    /// Profile name such as `1g.10gb` (`GPU_I_PROFILE`).
    pub profile: Option<String>,
}

/// Who is using the GPU, when the exporter knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Workload {
    /// Kubernetes namespace (`namespace` label).
    pub namespace: Option<String>,
    /// Kubernetes pod (`pod` label).
    pub pod: Option<String>,
    /// Kubernetes container (`container` label).
    pub container: Option<String>,
    /// HPC / Slurm job id (`hpc_job` label, or dcgm-exporter's job mapping).
    pub job: Option<String>,
    /// Slurm account the job is charged to: the exporter's `slurm_account` (or
    /// `account`) label, or `SLURM_JOB_ACCOUNT` in the environment of the GPU's
    /// processes (the agent's attribution). Tenants scoped by Slurm account see a GPU
    /// only when this is known and theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl Workload {
    /// True when no workload label is known: a "ghost" GPU if it is busy.
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.pod.is_none()
            && self.container.is_none()
            && self.job.is_none()
            && self.account.is_none()
    }
}

/// Everything that identifies a GPU and where it runs. Built from exporter labels.
///
/// Missing labels are `None`, never an empty string or a made-up value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GpuIdentity {
    pub uuid: GpuUuid,
    /// Host name of the node (`Hostname` label, else the scrape target).
    pub node: String,
    /// Index of the GPU on its node (`gpu` label).
    pub index: Option<u32>,
    /// Device name such as `nvidia0` (`device` label).
    pub device: Option<String>,
    /// Marketing model name such as `NVIDIA H100 80GB HBM3` (`modelName`).
    pub model: Option<String>,
    /// PCI bus id such as `00000000:3B:00.0` (`pci_bus_id`).
    pub pci_bus_id: Option<String>,
    /// Driver version (`DCGM_FI_DRIVER_VERSION`).
    pub driver_version: Option<String>,
    /// MIG instance when the series is for a MIG slice.
    pub mig: Option<MigInstance>,
    /// Workload attribution (Kubernetes or HPC job).
    pub workload: Workload,
    /// Every other label the exporter attached (kept, not dropped).
    pub extra_labels: BTreeMap<String, String>,
}

impl GpuIdentity {
    /// An identity that knows only its UUID and node.
    pub fn new(uuid: GpuUuid, node: impl Into<String>) -> Self {
        GpuIdentity {
            uuid,
            node: node.into(),
            index: None,
            device: None,
            model: None,
            pci_bus_id: None,
            driver_version: None,
            mig: None,
            workload: Workload::default(),
            extra_labels: BTreeMap::new(),
        }
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for GpuUuid {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "GPU UUID as NVIDIA prints it (GPU-…); MIG slices: {parent}/mig/{GPU_I_ID}",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for GpuUuid {}
