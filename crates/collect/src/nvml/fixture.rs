//! A [`GpuSource`] that replays a recorded NVML-shaped JSON file, for tests and for
//! `gpuwarden agent --nvml-fixture` on machines without a GPU.
//!
//! The file holds the readings of every GPU (the [`DeviceReading`] format), the compute
//! processes, and XIDs to report after a given number of samples, so a test can make an
//! XID happen at a known point. Energy grows by the power draw between samples so that
//! counters behave like counters; every other value is replayed as recorded.

use super::{DeviceReading, GpuProcess, GpuSource, NvmlError, NvmlXid};
use gpuwarden_model::{GpuUuid, TimestampMs};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Largest fixture file read (a 16-GPU host is ~40 KiB).
const MAX_FIXTURE_BYTES: u64 = 4 * 1024 * 1024;

/// An XID the fixture reports once, when the `at_sample`-th sample (0-based) is taken.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixtureXid {
    pub gpu: String,
    pub code: u32,
    pub at_sample: u64,
}

/// The fixture file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Where the values come from (free text, kept for humans).
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub nvml_version: Option<String>,
    pub devices: Vec<DeviceReading>,
    #[serde(default)]
    pub processes: Vec<GpuProcess>,
    #[serde(default)]
    pub xid_events: Vec<FixtureXid>,
}

/// Replays a [`Fixture`].
pub struct FixtureSource {
    name: String,
    fixture: Fixture,
    samples: u64,
    last_ms: Option<TimestampMs>,
    reported_xids: u64,
}

impl FixtureSource {
    pub fn load(path: &Path) -> Result<FixtureSource, NvmlError> {
        let err = |cause: String| NvmlError::Fixture {
            path: path.display().to_string(),
            cause,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.len() > MAX_FIXTURE_BYTES {
            return Err(err(format!("larger than {MAX_FIXTURE_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let fixture: Fixture = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        if let Some(d) = fixture.devices.iter().find(|d| d.uuid.trim().is_empty()) {
            return Err(err(format!("a device without uuid (index {:?})", d.index)));
        }
        Ok(FixtureSource {
            name: format!("NVML fixture {}", path.display()),
            fixture,
            samples: 0,
            last_ms: None,
            reported_xids: 0,
        })
    }

    pub fn fixture(&self) -> &Fixture {
        &self.fixture
    }
}

impl GpuSource for FixtureSource {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn read(&mut self, now_ms: TimestampMs) -> Result<Vec<DeviceReading>, NvmlError> {
        // Energy (mJ) = power (mW) x seconds elapsed, like the real counter.
        if let Some(last) = self.last_ms {
            let secs = ((now_ms - last).max(0)) as f64 / 1000.0;
            for d in &mut self.fixture.devices {
                if let (Some(e), Some(p)) = (d.total_energy_mj.as_mut(), d.power_usage_mw) {
                    *e = e.saturating_add((f64::from(p) * secs) as u64);
                }
            }
        }
        self.last_ms = Some(now_ms);
        self.samples += 1;
        Ok(self.fixture.devices.clone())
    }

    fn xid_events(&mut self, now_ms: TimestampMs) -> Result<Vec<NvmlXid>, NvmlError> {
        let taken = self.samples;
        let due: Vec<NvmlXid> = self
            .fixture
            .xid_events
            .iter()
            .filter(|x| x.at_sample >= self.reported_xids && x.at_sample < taken)
            .map(|x| NvmlXid {
                gpu: GpuUuid::new(&x.gpu),
                code: x.code,
                ts_ms: now_ms,
            })
            .collect();
        self.reported_xids = taken;
        Ok(due)
    }

    fn processes(&mut self) -> Result<Vec<GpuProcess>, NvmlError> {
        Ok(self.fixture.processes.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::{DcgmField, FieldName};

    fn h100() -> FixtureSource {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/nvml/h100-hgx-8gpu.json");
        FixtureSource::load(&path).unwrap()
    }

    #[test]
    fn h100_fixture_maps_to_the_dcgm_fields() {
        let mut src = h100();
        let (ids, rows) = src.sample("hgx-1", 1_000).unwrap();
        assert_eq!((ids.len(), rows.len()), (8, 8));
        let id = &ids[0];
        assert_eq!(id.node, "hgx-1");
        assert_eq!(id.model.as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(id.driver_version.as_deref(), Some("590.48.01"));
        assert_eq!(id.device.as_deref(), Some("nvidia0"));
        assert_eq!(id.extra_labels["vbios_version"], "96.00.A5.00.01");
        assert_eq!(id.extra_labels["board_part_number"], "692-2G520-0200-000");
        assert!(id.extra_labels.contains_key("serial"));
        let row = &rows[0];
        let v = |f: DcgmField| row.get(&FieldName::Dcgm(f));
        assert_eq!(v(DcgmField::PowerUsage), Some(588.39));
        assert_eq!(v(DcgmField::PowerMgmtLimit), Some(700.0));
        assert_eq!(v(DcgmField::FbTotal), Some(81_559.0));
        assert_eq!(v(DcgmField::FbUsed), Some(19_818.0));
        assert_eq!(v(DcgmField::GpuTemp), Some(59.0));
        assert_eq!(v(DcgmField::MemoryTemp), Some(55.0));
        assert_eq!(v(DcgmField::PcieReplayCounter), Some(9.0));
        assert_eq!(v(DcgmField::PcieLinkGen), Some(5.0));
        assert_eq!(v(DcgmField::EccCurrent), Some(1.0));
        assert_eq!(v(DcgmField::MigMode), Some(0.0));
        assert_eq!(v(DcgmField::NvlinkCrcFlitErrorCountTotal), Some(0.0));
        // Hopper has no page retirement: absent, not 0.
        assert_eq!(v(DcgmField::RetiredSbe), None);
        assert_eq!(v(DcgmField::RetiredPending), None);
        assert_eq!(
            row.get(&FieldName::Other(crate::nvml::reading::NVLINK_ACTIVE_FIELD.into())),
            Some(18.0)
        );
    }

    #[test]
    fn energy_counts_up_with_power() {
        let mut src = h100();
        let e = |rows: &[gpuwarden_model::GpuSamples]| rows[0].get(&DcgmField::TotalEnergyConsumption.into()).unwrap();
        let (_, a) = src.sample("n", 0).unwrap();
        let (_, b) = src.sample("n", 10_000).unwrap();
        assert_eq!(e(&b) - e(&a), 5_883_900.0); // 588.39 W x 10 s in mJ
    }

    #[test]
    fn xid_is_reported_once_at_its_sample() {
        let mut src = h100();
        let mut seen = Vec::new();
        for i in 0..5 {
            src.sample("n", i * 1000).unwrap();
            seen.push(src.xid_events(i * 1000).unwrap().len());
        }
        assert_eq!(seen, [0, 0, 1, 0, 0]);
    }

    #[test]
    fn processes_keep_unknown_memory_as_none() {
        let procs = h100().processes().unwrap();
        assert_eq!(procs.len(), 8);
        assert_eq!(procs[2].used_memory_bytes, Some(15_690 * 1024 * 1024));
        assert_eq!(procs[7].used_memory_bytes, None);
    }

    #[test]
    fn bad_fixture_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        std::fs::write(&p, "{\"devices\": [{\"uuid\": \"\"}]}").unwrap();
        assert!(FixtureSource::load(&p).is_err());
        std::fs::write(&p, "{\"devices\": [{\"uuid\": \"G\", \"no_such\": 1}]}").unwrap();
        assert!(FixtureSource::load(&p).is_err());
        assert!(FixtureSource::load(&dir.path().join("missing.json")).is_err());
    }
}
