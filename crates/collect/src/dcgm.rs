//! Maps one exporter page to gpuwarden's vocabulary: the GPUs it describes
//! ([`GpuIdentity`]) and one row of typed values per GPU per timestamp ([`GpuSamples`]).
//!
//! One entry point, [`map_exporter_page`], handles both exporters we know. Each series is
//! dispatched by name: `nvidia_smi_*` goes through [`crate::nvsmi`]'s table, everything
//! else is read the dcgm-exporter way (GPU from the `UUID` label, field from the metric
//! name via [`FieldName::parse`]). So a page is never misread because of a wrong guess of
//! its kind; [`ExporterPage::kind`] only reports what was seen.
//!
//! Speed (the product needs ≥ 1 M samples/s/core for parse + map + store): a GPU's
//! identity is built once per page, from the first series that names it; later series
//! find their GPU by comparing the `UUID` label slice against a short list, trying first
//! the slot after the last hit, because dcgm-exporter writes each family GPU by GPU. The
//! metric name → field lookup is cached for the run of samples of one family. No string is
//! allocated per sample except for [`FieldName::Other`] (unknown metrics).
//!
//! MIG: a MIG slice's series carry the parent's `UUID` plus `GPU_I_ID` / `GPU_I_PROFILE`.
//! So that a slice never overwrites its parent's values, it gets its own key
//! `"{UUID}/mig/{GPU_I_ID}"` (see [`GpuUuid`]), with [`GpuIdentity::mig`] set and
//! `extra_labels["parent_uuid"]` naming the parent.
//!
//! Duplicates: when one GPU has two series of the same field at the same time (time-
//! shared GPUs: one series per pod), the first one wins and the rest are counted in
//! [`PageSummary::duplicates`], except dcgm-exporter's per-code / per-reason window
//! counters (`DCGM_EXP_XID_ERRORS_COUNT{xid=…}`, `DCGM_EXP_CLOCK_EVENTS_COUNT{clock_event=…}`),
//! which are summed into the GPU's total.
//!
//! Series that name no GPU (no `UUID`, or an nvidia-smi series with labels beyond `uuid`,
//! such as per-process ones) are kept in [`ExporterPage::other`].
//!
//! Physically impossible values of known fields (utilisation above 100 %, a die at
//! −300 °C, a negative counter; see [`crate::validate`]) are refused here and recorded
//! in [`PageSummary::refused`], so they never reach the store or the analyzers.

use crate::nvsmi;
use crate::prom::{self, Label, Limits, ParseError, ParseSummary, PromSample};
use crate::validate::{self, RefusedValue};
use gpuwarden_model::{DcgmField, FieldName, GpuIdentity, GpuSamples, GpuUuid, MigInstance, TimestampMs};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

/// Which exporter a page came from, judged by the metric names it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExporterKind {
    /// NVIDIA dcgm-exporter (`DCGM_*` metrics).
    Dcgm,
    /// utkuozdemir/nvidia_gpu_exporter (`nvidia_smi_*` metrics).
    NvidiaSmi,
    /// Both kinds of metrics on one page (e.g. a federating proxy).
    Mixed,
    /// Neither: an empty page, or some other exporter.
    Unknown,
}

/// Counts describing one mapped page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PageSummary {
    pub parse: ParseSummary,
    /// Values placed in [`ExporterPage::rows`].
    pub gpu_values: usize,
    /// Series dropped because their GPU already had a value of that field at that time.
    pub duplicates: usize,
    /// Values refused because they are physically impossible (see [`crate::validate`]),
    /// in page order, at most [`crate::validate::MAX_REFUSED_KEPT`] of them. They are not
    /// in [`ExporterPage::rows`]: they never reach the store or the analyzers.
    pub refused: Vec<RefusedValue>,
    /// Every refused value, including those beyond the cap of `refused`: the number the
    /// pipeline should count per target.
    pub refused_total: usize,
}

/// One exporter page, mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct ExporterPage {
    pub kind: ExporterKind,
    /// Every GPU (or MIG slice) on the page, in order of first appearance.
    pub gpus: Vec<GpuIdentity>,
    /// One row per GPU per timestamp, in order of first appearance.
    pub rows: Vec<GpuSamples>,
    /// Series that name no GPU, as `name` or `name{label="value",…}` (labels as written),
    /// with their value. Kept for the page's own health (e.g. `nvidia_smi_command_exit_code`).
    pub other: Vec<(String, f64)>,
    pub summary: PageSummary,
}

impl ExporterPage {
    /// Number of values in all rows.
    pub fn sample_count(&self) -> usize {
        self.rows.iter().map(|r| r.values.len()).sum()
    }

    /// The identity of a GPU (or MIG slice key) on this page.
    pub fn gpu(&self, uuid: &str) -> Option<&GpuIdentity> {
        self.gpus.iter().find(|g| g.uuid.as_str() == uuid)
    }

    /// The value of `field` for GPU `uuid`, from the first row that has it.
    pub fn value(&self, uuid: &str, field: &FieldName) -> Option<f64> {
        self.rows
            .iter()
            .filter(|r| r.gpu.as_str() == uuid)
            .find_map(|r| r.get(field))
    }
}

/// Parses and maps an exporter page (dcgm-exporter or nvidia_gpu_exporter).
///
/// `target_node` is the node used when the page has no `Hostname` label; `default_ts_ms`
/// is the time given to samples without their own timestamp (a sample's own timestamp
/// wins). Fails only when the body does not parse; nothing is returned from a page that
/// fails half way.
pub fn map_exporter_page(
    body: &[u8],
    target_node: &str,
    default_ts_ms: TimestampMs,
    limits: &Limits,
) -> Result<ExporterPage, ParseError> {
    let mut builder = PageBuilder::new(target_node, default_ts_ms);
    let parse = prom::parse(body, limits, |s| builder.add(s))?;
    Ok(builder.finish(parse))
}

/// Labels that tell apart series of one GPU rather than describe the GPU; they are not
/// copied into the identity's `extra_labels`.
const SERIES_LABELS: &[&str] = &[
    "xid",
    "window_size_in_ms",
    "err_code",
    "err_msg",
    "clock_event",
    "link",
    "nvlink",
];

// One bit per known field in a row's "already has it" set.
const _: () = assert!(DcgmField::ALL.len() <= 128, "row bitset holds 128 fields");

struct Slot<'a> {
    /// The GPU's UUID label as written, and its MIG instance id when it is a slice.
    uuid: Cow<'a, str>,
    mig: Option<Cow<'a, str>>,
    /// Index into `gpus`.
    gpu: usize,
    /// `(timestamp, index into rows)` of this GPU's rows.
    rows: Vec<(TimestampMs, usize)>,
    /// The same, by timestamp, once the GPU has more than a few rows: a page with
    /// thousands of distinct timestamps per GPU (hostile or broken) must not cost a
    /// scan of every earlier row per sample.
    rows_by_ts: HashMap<TimestampMs, usize>,
}

impl Slot<'_> {
    fn is(&self, uuid: &str, mig: Option<&str>) -> bool {
        self.uuid.as_ref() == uuid && self.mig.as_deref() == mig
    }
}

struct PageBuilder<'a, 'n> {
    target_node: &'n str,
    default_ts: TimestampMs,
    slots: Vec<Slot<'a>>,
    last_slot: usize,
    /// Slot by (UUID, MIG instance), for pages whose series do not come GPU by GPU or
    /// family by family (the common orders are found without it, see `find_slot`).
    slot_index: HashMap<(Cow<'a, str>, Option<Cow<'a, str>>), usize>,
    gpus: Vec<GpuIdentity>,
    rows: Vec<GpuSamples>,
    /// Per row: which known fields it already has.
    row_fields: Vec<u128>,
    /// `(row, metric name)` of the unknown fields already in a row; a set so a hostile
    /// page of many unknown metrics stays linear.
    row_others: HashSet<(usize, &'a str)>,
    other: Vec<(String, f64)>,
    /// The last metric name and what it maps to: samples come grouped by family.
    field_cache: Option<(&'a str, FieldName, f64)>,
    saw_dcgm: bool,
    saw_nvsmi: bool,
    gpu_values: usize,
    duplicates: usize,
    refused: Vec<RefusedValue>,
    refused_total: usize,
}

impl<'a, 'n> PageBuilder<'a, 'n> {
    fn new(target_node: &'n str, default_ts: TimestampMs) -> Self {
        PageBuilder {
            target_node,
            default_ts,
            slots: Vec::new(),
            slot_index: HashMap::new(),
            last_slot: 0,
            gpus: Vec::new(),
            rows: Vec::new(),
            row_fields: Vec::new(),
            row_others: HashSet::new(),
            other: Vec::new(),
            field_cache: None,
            saw_dcgm: false,
            saw_nvsmi: false,
            gpu_values: 0,
            duplicates: 0,
            refused: Vec::new(),
            refused_total: 0,
        }
    }

    fn add(&mut self, s: &PromSample<'a>) {
        if s.name.starts_with(nvsmi::PREFIX) {
            self.saw_nvsmi = true;
            self.add_nvsmi(s);
        } else {
            if s.name.starts_with("DCGM_") {
                self.saw_dcgm = true;
            }
            self.add_dcgm(s);
        }
    }

    fn add_dcgm(&mut self, s: &PromSample<'a>) {
        let mut uuid = None;
        let mut mig = None;
        for label in &s.labels {
            match label.name {
                "UUID" => uuid = Some(&label.value),
                "GPU_I_ID" => mig = Some(&label.value).filter(|v| !v.is_empty()),
                _ => {}
            }
        }
        let Some(uuid) = uuid.filter(|u| !u.is_empty()) else {
            self.add_other(s);
            return;
        };
        let slot = match self.find_slot(uuid, mig.map(|m| m.as_ref())) {
            Some(slot) => slot,
            None => {
                let identity = dcgm_identity(uuid, mig.map(|m| m.as_ref()), &s.labels, self.target_node);
                self.new_slot(uuid.clone(), mig.cloned(), identity)
            }
        };
        self.add_value(slot, s);
    }

    fn add_nvsmi(&mut self, s: &PromSample<'a>) {
        let is_info = s.name == nvsmi::GPU_INFO;
        // A per-GPU series carries only `uuid`; the info series carries `uuid` among its
        // descriptive labels. Anything else (per-process series) is not one value per GPU.
        let uuid = if is_info {
            s.labels.iter().find(|l| l.name == nvsmi::UUID_LABEL)
        } else {
            match s.labels.as_slice() {
                [only] if only.name == nvsmi::UUID_LABEL => Some(only),
                _ => None,
            }
        };
        let Some(uuid) = uuid.map(|l| &l.value).filter(|v| !v.is_empty()) else {
            self.add_other(s);
            return;
        };
        let slot = match self.find_slot(uuid, None) {
            Some(slot) => slot,
            None => {
                let identity = GpuIdentity::new(GpuUuid::new(uuid), self.target_node);
                self.new_slot(uuid.clone(), None, identity)
            }
        };
        if is_info {
            let gpu = self.slots[slot].gpu;
            nvsmi::apply_gpu_info(&mut self.gpus[gpu], &s.labels);
        } else {
            self.add_value(slot, s);
        }
    }

    fn find_slot(&mut self, uuid: &str, mig: Option<&str>) -> Option<usize> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        // dcgm-exporter writes a family GPU by GPU, nvidia_gpu_exporter a whole page for
        // one GPU: the next slot or the same one is almost always right.
        let next = if self.last_slot + 1 < n { self.last_slot + 1 } else { 0 };
        let found = match [next, self.last_slot]
            .into_iter()
            .find(|&i| self.slots[i].is(uuid, mig))
        {
            Some(i) => i,
            None => *self.slot_index.get(&(Cow::Borrowed(uuid), mig.map(Cow::Borrowed)))?,
        };
        self.last_slot = found;
        Some(found)
    }

    fn new_slot(&mut self, uuid: Cow<'a, str>, mig: Option<Cow<'a, str>>, identity: GpuIdentity) -> usize {
        self.gpus.push(identity);
        self.slot_index.insert((uuid.clone(), mig.clone()), self.slots.len());
        self.slots.push(Slot {
            uuid,
            mig,
            gpu: self.gpus.len() - 1,
            rows: Vec::new(),
            rows_by_ts: HashMap::new(),
        });
        self.last_slot = self.slots.len() - 1;
        self.last_slot
    }

    fn row_for(&mut self, slot: usize, ts: TimestampMs) -> usize {
        /// Rows kept in the plain list before the map takes over (a scrape has one row
        /// per GPU; pushes with history a handful).
        const SCAN: usize = 8;
        let s = &mut self.slots[slot];
        let found = if s.rows.len() <= SCAN {
            s.rows.iter().rev().find(|(t, _)| *t == ts).map(|&(_, row)| row)
        } else {
            s.rows_by_ts.get(&ts).copied()
        };
        if let Some(row) = found {
            return row;
        }
        let uuid = self.gpus[s.gpu].uuid.clone();
        // Rows of one page have about the same width; sizing from the first avoids
        // regrowing every row.
        let capacity = self.rows.first().map_or(16, |r| r.values.len());
        let mut row = GpuSamples::new(uuid, ts);
        row.values.reserve(capacity);
        self.rows.push(row);
        self.row_fields.push(0);
        let index = self.rows.len() - 1;
        s.rows.push((ts, index));
        if s.rows.len() > SCAN {
            if s.rows_by_ts.is_empty() {
                s.rows_by_ts.extend(s.rows.iter().map(|&(t, r)| (t, r)));
            } else {
                s.rows_by_ts.insert(ts, index);
            }
        }
        index
    }

    fn field_for(&mut self, name: &'a str) -> (FieldName, f64) {
        if let Some((cached, field, scale)) = &self.field_cache {
            if *cached == name {
                return (field.clone(), *scale);
            }
        }
        let (field, scale) = if name.starts_with(nvsmi::PREFIX) {
            match nvsmi::map_metric(name) {
                Some((f, scale)) => (FieldName::Dcgm(f), scale),
                None => (FieldName::Other(name.into()), 1.0),
            }
        } else {
            (FieldName::parse(name), 1.0)
        };
        self.field_cache = Some((name, field.clone(), scale));
        (field, scale)
    }

    fn add_value(&mut self, slot: usize, s: &PromSample<'a>) {
        let ts = s.timestamp_ms.unwrap_or(self.default_ts);
        let row = self.row_for(slot, ts);
        let (field, scale) = self.field_for(s.name);
        let value = s.value * scale;
        if let FieldName::Dcgm(f) = &field {
            if let Err(e) = validate::check(*f, value) {
                self.refused_total += 1;
                if self.refused.len() < validate::MAX_REFUSED_KEPT {
                    self.refused.push(RefusedValue::new(self.rows[row].gpu.clone(), &e));
                }
                return;
            }
        }
        let fresh = match &field {
            FieldName::Dcgm(f) => {
                let bit = 1u128 << f.index();
                let seen = &mut self.row_fields[row];
                let fresh = *seen & bit == 0;
                *seen |= bit;
                fresh
            }
            FieldName::Other(_) => self.row_others.insert((row, s.name)),
        };
        let values = &mut self.rows[row].values;
        if fresh {
            values.push((field, value));
            self.gpu_values += 1;
        } else if matches!(
            field,
            FieldName::Dcgm(DcgmField::ExpXidErrorsCount | DcgmField::ExpClockEventsCount)
        ) {
            // Broken down by `xid` / `clock_event`: the GPU's total is the sum. Parts too
            // large to add up (each possible, the sum +Inf) are refused like any
            // impossible value; the total keeps the parts added so far.
            let Some((_, total)) = values.iter_mut().find(|(f, _)| *f == field) else {
                return;
            };
            let sum = *total + value;
            if !sum.is_infinite() {
                *total = sum;
                return;
            }
            if let FieldName::Dcgm(f) = field {
                if let Err(e) = validate::check(f, sum) {
                    self.refused_total += 1;
                    if self.refused.len() < validate::MAX_REFUSED_KEPT {
                        self.refused.push(RefusedValue::new(self.rows[row].gpu.clone(), &e));
                    }
                }
            }
        } else {
            self.duplicates += 1;
        }
    }

    fn add_other(&mut self, s: &PromSample<'a>) {
        let mut series = String::new();
        prom::write_series(&mut series, s.name, &s.labels);
        self.other.push((series, s.value));
    }

    fn finish(self, parse: ParseSummary) -> ExporterPage {
        let kind = match (self.saw_dcgm, self.saw_nvsmi) {
            (true, false) => ExporterKind::Dcgm,
            (false, true) => ExporterKind::NvidiaSmi,
            (true, true) => ExporterKind::Mixed,
            (false, false) => ExporterKind::Unknown,
        };
        ExporterPage {
            kind,
            gpus: self.gpus,
            rows: self.rows,
            other: self.other,
            summary: PageSummary {
                parse,
                gpu_values: self.gpu_values,
                duplicates: self.duplicates,
                refused: self.refused,
                refused_total: self.refused_total,
            },
        }
    }
}

/// Builds a GPU's identity from the labels of its first series on the page. Empty label
/// values (dcgm-exporter writes `pod=""` for an unallocated GPU) are missing, not values.
fn dcgm_identity(uuid: &str, mig: Option<&str>, labels: &[Label<'_>], target_node: &str) -> GpuIdentity {
    let key = match mig {
        Some(instance) => GpuUuid::new(&format!("{uuid}/mig/{instance}")),
        None => GpuUuid::new(uuid),
    };
    let mut id = GpuIdentity::new(key, target_node);
    let mut profile = None;
    let mut secondary_job = None;
    let mut secondary_account = None;
    for label in labels {
        let value = label.value.as_ref();
        if value.is_empty() {
            continue;
        }
        let owned = || Some(value.to_owned());
        match label.name {
            "UUID" | "GPU_I_ID" => {}
            "gpu" => match value.parse() {
                Ok(index) => id.index = Some(index),
                Err(_) => {
                    id.extra_labels.insert("gpu".to_owned(), value.to_owned());
                }
            },
            "Hostname" => id.node = value.to_owned(),
            "device" => id.device = owned(),
            "modelName" => id.model = owned(),
            "pci_bus_id" => id.pci_bus_id = owned(),
            "DCGM_FI_DRIVER_VERSION" => id.driver_version = owned(),
            "GPU_I_PROFILE" => profile = owned(),
            "namespace" => id.workload.namespace = owned(),
            "pod" => id.workload.pod = owned(),
            "container" => id.workload.container = owned(),
            // dcgm-exporter's HPC job mapping writes `hpc_job`; Slurm setups often relabel
            // to `slurm_job_id` or `job_id`. `hpc_job` wins when several are present.
            "hpc_job" => id.workload.job = owned(),
            "slurm_job_id" | "job_id" => {
                secondary_job.get_or_insert_with(|| value.to_owned());
            }
            // The Slurm account, when a relabelling (or a job-mapping exporter) attaches
            // it: tenants scoped by account are matched on it. `slurm_account` wins.
            "slurm_account" => id.workload.account = owned(),
            "account" => {
                secondary_account.get_or_insert_with(|| value.to_owned());
            }
            name if SERIES_LABELS.contains(&name) => {}
            name => {
                id.extra_labels.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    if id.workload.job.is_none() {
        id.workload.job = secondary_job;
    }
    if id.workload.account.is_none() {
        id.workload.account = secondary_account;
    }
    if let Some(instance) = mig {
        id.mig = Some(MigInstance {
            instance_id: instance.to_owned(),
            profile,
        });
        id.extra_labels.insert("parent_uuid".to_owned(), uuid.to_owned());
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(body: &str) -> ExporterPage {
        map_exporter_page(body.as_bytes(), "node-a", 1000, &Limits::default()).unwrap()
    }

    const GPU0: &str = r#"gpu="0",UUID="GPU-a",device="nvidia0",modelName="NVIDIA H100",Hostname="host1",pci_bus_id="00000000:3B:00.0",DCGM_FI_DRIVER_VERSION="550.1""#;
    const GPU1: &str = r#"gpu="1",UUID="GPU-b",device="nvidia1",modelName="NVIDIA H100",Hostname="host1""#;

    #[test]
    fn one_row_per_gpu_and_identity_from_labels() {
        let body = format!(
            "DCGM_FI_DEV_GPU_TEMP{{{GPU0}}} 40\nDCGM_FI_DEV_GPU_TEMP{{{GPU1}}} 41\n\
             DCGM_FI_DEV_POWER_USAGE{{{GPU0}}} 300.5\nDCGM_FI_DEV_POWER_USAGE{{{GPU1}}} 301\n\
             DCGM_FI_DEV_NEW_THING{{{GPU0}}} 7\n"
        );
        let page = map(&body);
        assert_eq!(page.kind, ExporterKind::Dcgm);
        assert_eq!(page.gpus.len(), 2);
        assert_eq!(page.rows.len(), 2);
        let g = page.gpu("GPU-a").unwrap();
        assert_eq!(g.node, "host1");
        assert_eq!(g.index, Some(0));
        assert_eq!(g.device.as_deref(), Some("nvidia0"));
        assert_eq!(g.model.as_deref(), Some("NVIDIA H100"));
        assert_eq!(g.pci_bus_id.as_deref(), Some("00000000:3B:00.0"));
        assert_eq!(g.driver_version.as_deref(), Some("550.1"));
        assert!(g.extra_labels.is_empty());
        assert_eq!(page.value("GPU-b", &DcgmField::PowerUsage.into()), Some(301.0));
        assert_eq!(
            page.value("GPU-a", &FieldName::parse("DCGM_FI_DEV_NEW_THING")),
            Some(7.0)
        );
        assert_eq!(page.rows[0].ts_ms, 1000);
        assert_eq!(page.sample_count(), 5);
    }

    #[test]
    fn own_timestamp_wins_and_makes_its_own_row() {
        let body = format!("DCGM_FI_DEV_GPU_TEMP{{{GPU0}}} 40 5000\nDCGM_FI_DEV_POWER_USAGE{{{GPU0}}} 1\n");
        let page = map(&body);
        assert_eq!(page.gpus.len(), 1);
        let ts: Vec<_> = page.rows.iter().map(|r| r.ts_ms).collect();
        assert_eq!(ts, [5000, 1000]);
    }

    /// Series in no useful order (GPUs interleaved at random, many timestamps per GPU)
    /// map to the same rows as an orderly page: the slot index and the per-GPU row map
    /// that keep such pages linear must not change what is mapped.
    #[test]
    fn shuffled_series_and_many_timestamps_map_like_an_orderly_page() {
        let gpus = 40;
        let stamps = 30;
        let mut lines = Vec::new();
        for g in 0..gpus {
            for t in 0..stamps {
                let labels = format!(r#"gpu="{g}",UUID="GPU-{g}",Hostname="host1""#);
                lines.push(format!(
                    "DCGM_FI_DEV_GPU_TEMP{{{labels}}} {} {}",
                    30 + t,
                    10_000 + t * 1000
                ));
                lines.push(format!(
                    "DCGM_FI_DEV_POWER_USAGE{{{labels}}} {} {}",
                    100 + g,
                    10_000 + t * 1000
                ));
            }
        }
        let orderly = map(&(lines.join("\n") + "\n"));
        // A fixed shuffle (multiplicative step through the lines).
        let n = lines.len();
        let shuffled: Vec<&str> = (0..n).map(|i| lines[(i * 7919) % n].as_str()).collect();
        let mixed = map(&(shuffled.join("\n") + "\n"));
        assert_eq!(mixed.gpus.len(), gpus);
        assert_eq!(mixed.rows.len(), gpus * stamps);
        let key = |p: &ExporterPage| {
            type Row = (String, i64, Vec<(FieldName, u64)>);
            let mut rows: Vec<Row> = p
                .rows
                .iter()
                .map(|r| {
                    let mut v: Vec<_> = r.values.iter().map(|(f, x)| (f.clone(), x.to_bits())).collect();
                    v.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
                    (r.gpu.as_str().to_string(), r.ts_ms, v)
                })
                .collect();
            rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            rows
        };
        assert_eq!(key(&mixed), key(&orderly));
    }

    #[test]
    fn mig_slice_does_not_overwrite_its_parent() {
        let body = format!(
            "DCGM_FI_DEV_FB_USED{{{GPU0}}} 100\n\
             DCGM_FI_DEV_FB_USED{{{GPU0},GPU_I_ID=\"3\",GPU_I_PROFILE=\"1g.10gb\"}} 7\n"
        );
        let page = map(&body);
        assert_eq!(page.gpus.len(), 2);
        assert_eq!(page.value("GPU-a", &DcgmField::FbUsed.into()), Some(100.0));
        assert_eq!(page.value("GPU-a/mig/3", &DcgmField::FbUsed.into()), Some(7.0));
        let slice = page.gpu("GPU-a/mig/3").unwrap();
        let mig = slice.mig.as_ref().unwrap();
        assert_eq!(
            (mig.instance_id.as_str(), mig.profile.as_deref()),
            ("3", Some("1g.10gb"))
        );
        assert_eq!(slice.extra_labels.get("parent_uuid").map(String::as_str), Some("GPU-a"));
    }

    #[test]
    fn workload_labels_and_empty_values() {
        let body = format!(
            "DCGM_FI_DEV_GPU_UTIL{{{GPU0},namespace=\"ml\",pod=\"p-1\",container=\"\",job_id=\"7\",hpc_job=\"42\",team=\"x\"}} 1\n"
        );
        let page = map(&body);
        let w = &page.gpus[0].workload;
        assert_eq!(w.namespace.as_deref(), Some("ml"));
        assert_eq!(w.pod.as_deref(), Some("p-1"));
        assert_eq!(w.container, None);
        assert_eq!(w.job.as_deref(), Some("42"));
        assert_eq!(page.gpus[0].extra_labels.get("team").map(String::as_str), Some("x"));
        assert_eq!(w.account, None, "no account label: unknown");
    }

    #[test]
    fn slurm_account_label_is_the_workload_account() {
        let page = map(&format!(
            "DCGM_FI_DEV_GPU_UTIL{{{GPU0},hpc_job=\"42\",account=\"a2\",slurm_account=\"physics\"}} 1\n\
             DCGM_FI_DEV_GPU_UTIL{{{GPU1},hpc_job=\"43\",account=\"chem\"}} 1\n"
        ));
        assert_eq!(page.gpu("GPU-a").unwrap().workload.account.as_deref(), Some("physics"));
        assert_eq!(page.gpu("GPU-b").unwrap().workload.account.as_deref(), Some("chem"));
        assert!(!page.gpu("GPU-b").unwrap().extra_labels.contains_key("account"));
    }

    #[test]
    fn series_without_gpu_are_kept_as_other() {
        let page = map("DCGM_FI_DEV_FAN_SPEED 0\nup{job=\"a\"} 1\n");
        assert!(page.gpus.is_empty());
        assert_eq!(
            page.other,
            [
                ("DCGM_FI_DEV_FAN_SPEED".to_owned(), 0.0),
                ("up{job=\"a\"}".to_owned(), 1.0)
            ]
        );
    }

    #[test]
    fn duplicates_first_wins_but_xid_counts_sum() {
        let body = format!(
            "DCGM_FI_DEV_GPU_UTIL{{{GPU0},pod=\"a\"}} 10\nDCGM_FI_DEV_GPU_UTIL{{{GPU0},pod=\"b\"}} 20\n\
             DCGM_EXP_XID_ERRORS_COUNT{{{GPU0},xid=\"43\"}} 2\nDCGM_EXP_XID_ERRORS_COUNT{{{GPU0},xid=\"31\"}} 1\n"
        );
        let page = map(&body);
        assert_eq!(page.value("GPU-a", &DcgmField::GpuUtil.into()), Some(10.0));
        assert_eq!(page.value("GPU-a", &DcgmField::ExpXidErrorsCount.into()), Some(3.0));
        assert_eq!(page.summary.duplicates, 1);
        assert!(!page.gpus[0].extra_labels.contains_key("xid"));
    }

    #[test]
    fn nvidia_smi_page_maps_to_typed_fields() {
        let body = "nvidia_smi_temperature_gpu{uuid=\"U\"} 53\n\
                    nvidia_smi_gpu_info{driver_version=\"590.48.01\",index=\"0\",name=\"NVIDIA H100 80GB HBM3\",serial=\"[N/A]\",uuid=\"U\",vbios_version=\"96\"} 1\n\
                    nvidia_smi_utilization_gpu_ratio{uuid=\"U\"} 0.5\n\
                    nvidia_smi_compute_app_info{pid=\"1\",uuid=\"U\"} 1\n\
                    nvidia_smi_command_exit_code 0\n\
                    nvidia_smi_inforom_oem{uuid=\"U\"} 2.1\n";
        let page = map(body);
        assert_eq!(page.kind, ExporterKind::NvidiaSmi);
        assert_eq!(page.gpus.len(), 1);
        let g = &page.gpus[0];
        assert_eq!((g.node.as_str(), g.index), ("node-a", Some(0)));
        assert_eq!(g.model.as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(g.driver_version.as_deref(), Some("590.48.01"));
        assert!(!g.extra_labels.contains_key("serial"));
        assert_eq!(page.value("U", &DcgmField::GpuTemp.into()), Some(53.0));
        assert_eq!(page.value("U", &DcgmField::GpuUtil.into()), Some(50.0));
        assert_eq!(page.value("U", &FieldName::parse("nvidia_smi_inforom_oem")), Some(2.1));
        assert_eq!(page.other.len(), 2);
    }

    #[test]
    fn impossible_values_are_refused_with_a_reason() {
        let body = format!(
            "DCGM_FI_DEV_GPU_UTIL{{{GPU0}}} 9253\nDCGM_FI_DEV_GPU_TEMP{{{GPU0}}} 45\n\
             DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{{{GPU0}}} -3\nDCGM_FI_DEV_POWER_USAGE{{{GPU0}}} +Inf\n"
        );
        let page = map(&body);
        assert_eq!(page.value("GPU-a", &DcgmField::GpuUtil.into()), None);
        assert_eq!(page.value("GPU-a", &DcgmField::EccSbeVolTotal.into()), None);
        assert_eq!(page.value("GPU-a", &DcgmField::PowerUsage.into()), None);
        assert_eq!(page.value("GPU-a", &DcgmField::GpuTemp.into()), Some(45.0));
        assert_eq!(page.summary.refused_total, 3);
        let r = &page.summary.refused[0];
        assert_eq!(
            (r.gpu.as_str(), r.field.as_str(), r.value),
            ("GPU-a", "DCGM_FI_DEV_GPU_UTIL", 9253.0)
        );
        assert!(r.reason.contains("0 to 100"), "{}", r.reason);
        assert_eq!(page.summary.gpu_values, 1);
    }

    #[test]
    fn refusals_kept_in_detail_are_capped() {
        let mut body = String::new();
        for i in 0..(crate::validate::MAX_REFUSED_KEPT + 10) {
            body.push_str(&format!("DCGM_FI_DEV_GPU_TEMP{{UUID=\"GPU-{i}\"}} 900\n"));
        }
        let page = map(&body);
        assert_eq!(page.summary.refused.len(), crate::validate::MAX_REFUSED_KEPT);
        assert_eq!(page.summary.refused_total, crate::validate::MAX_REFUSED_KEPT + 10);
    }

    #[test]
    fn nvidia_smi_values_are_checked_after_scaling() {
        // 0.5 as a ratio is 50 %: accepted; 92.53 as a ratio is 9,253 %: refused.
        let page = map("nvidia_smi_utilization_gpu_ratio{uuid=\"U\"} 92.53\n");
        assert_eq!(page.value("U", &DcgmField::GpuUtil.into()), None);
        assert_eq!(page.summary.refused_total, 1);
    }

    // Caught by the `parse_exposition` fuzz target's "the mapping keeps only possible
    // values" check: two window counts of 1e308 summed to +Inf in the GPU's total.
    #[test]
    fn fuzz_window_counts_too_large_to_sum_are_refused_not_infinite() {
        let body = format!(
            "DCGM_EXP_XID_ERRORS_COUNT{{{GPU0},xid=\"43\"}} 1e308\n\
             DCGM_EXP_XID_ERRORS_COUNT{{{GPU0},xid=\"31\"}} 1e308\n\
             DCGM_EXP_XID_ERRORS_COUNT{{{GPU0},xid=\"13\"}} 2\n"
        );
        let page = map(&body);
        let total = page.value("GPU-a", &DcgmField::ExpXidErrorsCount.into());
        assert_eq!(total, Some(1e308 + 2.0));
        assert_eq!(page.summary.refused_total, 1);
        assert!(page.summary.refused[0].value.is_infinite());
    }

    /// Every real capture in `testdata/exporters` maps without a single refusal: the
    /// bounds refuse the impossible, not what real GPUs report.
    #[test]
    fn real_captures_refuse_nothing() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/exporters");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let body = std::fs::read(&path).unwrap();
            let page = map_exporter_page(&body, "n", 1_000, &Limits::default()).unwrap();
            assert_eq!(
                page.summary.refused_total,
                0,
                "{}: {:?}",
                path.display(),
                page.summary.refused
            );
            seen += 1;
        }
        assert!(seen >= 10, "{seen} captures");
    }
}
