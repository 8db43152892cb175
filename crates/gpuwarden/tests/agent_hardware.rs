//! On a GPU host: what the agent reads through NVML agrees with `nvidia-smi -q`.
//!
//! Records the GPUs with `gpuwarden agent --record-nvml` (real NVML, no fixture), runs
//! `nvidia-smi -q`, parses it with the shared parser, and compares the fields both report
//! (identity, limits, modes; temperatures and clocks within a tolerance since the two reads
//! are a moment apart). Skipped with a message where there is no `nvidia-smi` (CI has no
//! GPU), unless `GPUWARDEN_REQUIRE_GPU=1`. See docs/hardware-validation.md.

mod common;

use gpuwarden_collect::nvml::fixture::FixtureSource;
use gpuwarden_collect::nvml::GpuSource;
use gpuwarden_collect::nvsmi_query::parse_query;
use gpuwarden_model::DcgmField;
use std::process::Command;

#[test]
fn nvml_readings_agree_with_nvidia_smi() {
    let Ok(smi) = Command::new("nvidia-smi").arg("-q").output() else {
        assert!(
            std::env::var("GPUWARDEN_REQUIRE_GPU").as_deref() != Ok("1"),
            "GPUWARDEN_REQUIRE_GPU=1 but nvidia-smi is not installed"
        );
        eprintln!("skipping: no nvidia-smi on this machine (no GPU); see docs/hardware-validation.md");
        return;
    };
    assert!(
        smi.status.success(),
        "nvidia-smi -q failed: {}",
        String::from_utf8_lossy(&smi.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("nvml.json");
    let out = Command::new(common::binary())
        .args(["agent", "--record-nvml"])
        .arg(&recorded)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    if let Ok(keep) = std::env::var("GPUWARDEN_KEEP_NVML_RECORDING") {
        std::fs::copy(&recorded, keep).unwrap();
    }

    let mut nvml = FixtureSource::load(&recorded).unwrap();
    let (ids, rows) = nvml.sample("host", 0).unwrap();
    let smi = parse_query(&String::from_utf8_lossy(&smi.stdout), "host", 0).unwrap();
    assert_eq!(ids.len(), smi.gpus.len(), "GPU count");
    let mut report = Vec::new();
    for (id, row) in ids.iter().zip(&rows) {
        let g = smi
            .gpus
            .iter()
            .find(|g| g.identity.uuid == id.uuid)
            .unwrap_or_else(|| panic!("{} not in nvidia-smi -q", id.uuid));
        assert_eq!(id.model, g.identity.model, "{}: model", id.uuid);
        assert_eq!(id.driver_version, g.identity.driver_version, "{}: driver", id.uuid);
        assert_eq!(
            id.pci_bus_id.as_deref().map(str::to_uppercase),
            g.identity.pci_bus_id.as_deref().map(str::to_uppercase),
            "{}: PCI bus id",
            id.uuid
        );
        assert_eq!(
            id.extra_labels.get("vbios_version"),
            g.vbios_version.as_ref(),
            "{}: VBIOS",
            id.uuid
        );
        let tolerance = |f: DcgmField| match f {
            DcgmField::GpuTemp | DcgmField::MemoryTemp => 5.0,
            DcgmField::FbUsed | DcgmField::FbFree => 512.0,
            DcgmField::SmClock | DcgmField::MemClock => 500.0,
            _ => 0.5,
        };
        for f in [
            DcgmField::GpuTemp,
            DcgmField::MemoryTemp,
            DcgmField::FbTotal,
            DcgmField::FbUsed,
            DcgmField::PowerMgmtLimit,
            DcgmField::EnforcedPowerLimit,
            DcgmField::MaxSmClock,
            DcgmField::MaxMemClock,
            DcgmField::PcieLinkGen,
            DcgmField::PcieLinkWidth,
            DcgmField::EccCurrent,
            DcgmField::PersistenceMode,
            DcgmField::MigMode,
            DcgmField::CorrectableRemappedRows,
            DcgmField::UncorrectableRemappedRows,
            DcgmField::EccDbeVolTotal,
        ] {
            let (a, b) = (row.get(&f.into()), g.value(f));
            report.push(format!("{} {f}: nvml {a:?} nvidia-smi {b:?}", id.uuid));
            if let (Some(a), Some(b)) = (a, b) {
                assert!(
                    (a - b).abs() <= tolerance(f),
                    "{}: {f}: NVML {a} vs nvidia-smi {b}",
                    id.uuid
                );
            }
        }
    }
    eprintln!("{}", report.join("\n"));
}
