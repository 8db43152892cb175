//! The `nvidia-smi -q` parser against every real output in `testdata/nvidia-smi/`
//! (nvidia_gpu_exporter's capture bundles: H100, H200, MIG, L40S, RTX, Linux and
//! Windows, idle and load; gpud's A10, RTX 4090, H100, TITAN V and its truncated H100
//! output): exact values per capture, independent cross-checks of identity, temperature
//! and process counts for every GPU block, the truncated output's error and partial
//! result, and no panic on any input.

use gpuwarden_collect::nvsmi_query::{parse_query, NvsmiGpu, NvsmiQuery, NvsmiQueryError};
use gpuwarden_model::DcgmField::{self, *};
use proptest::prelude::*;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/nvidia-smi")
}

fn captures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("README") && !n.starts_with("LICENSE"))
        .collect();
    names.sort();
    names
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn parse(name: &str) -> NvsmiQuery {
    parse_query(&read(name), "node-1", 1_000).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const TRUNCATED: &str = "nvidia-smi-query.535.183.01.out.0.invalid";

/// Text after ` : ` on lines whose key (trimmed) is `key`, in order. Independent of the
/// parser: no tree, no sections.
fn raw_values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.split_once(" : "))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .collect()
}

#[test]
fn every_valid_capture_parses_and_matches_an_independent_scan() {
    let names = captures();
    assert_eq!(names.len(), 26, "{names:?}");
    let mut parsed = 0;
    let mut gpus = 0;
    for name in names.iter().filter(|n| *n != TRUNCATED) {
        let text = read(name);
        let q = parse(name);
        let uuids = raw_values(&text, "GPU UUID");
        let bus_ids = raw_values(&text, "Bus Id");
        let temps = raw_values(&text, "GPU Current Temp");
        let names_per_gpu: Vec<&str> = raw_values(&text, "Product Name");
        assert_eq!(q.gpus.len(), uuids.len(), "{name}");
        assert_eq!(Some(q.gpus.len() as u32), q.attached_gpus, "{name}");
        for (i, g) in q.gpus.iter().enumerate() {
            assert_eq!(g.identity.uuid.as_str(), uuids[i], "{name}");
            assert_eq!(g.identity.pci_bus_id.as_deref(), Some(bus_ids[i]), "{name}");
            assert_eq!(g.identity.model.as_deref(), Some(names_per_gpu[i]), "{name}");
            assert_eq!(g.identity.node, "node-1");
            assert_eq!(g.identity.index, Some(i as u32));
            assert_eq!(g.identity.driver_version, q.driver_version, "{name}");
            assert_eq!(g.samples.ts_ms, 1_000);
            let temp: f64 = temps[i].trim_end_matches(" C").parse().unwrap();
            assert_eq!(g.value(GpuTemp), Some(temp), "{name}");
            // Units as dcgm-exporter's: a GPU's memory is MiB (tens of thousands at most),
            // clocks MHz, power W.
            let total = g.value(FbTotal).unwrap();
            assert!((4096.0..200_000.0).contains(&total), "{name}: {total}");
            assert!(g.value(MaxSmClock).unwrap() < 5000.0, "{name}");
            assert!(g.value(EnforcedPowerLimit).unwrap() < 2000.0, "{name}");
            // No mapped value is NaN or infinite.
            assert!(g.samples.values.iter().all(|(_, v)| v.is_finite()), "{name}");
        }
        let pids = raw_values(&text, "Process ID").len();
        assert_eq!(q.gpus.iter().map(|g| g.processes.len()).sum::<usize>(), pids, "{name}");
        parsed += 1;
        gpus += q.gpus.len();
    }
    assert_eq!(parsed, 25);
    assert_eq!(gpus, 46);
}

fn one(name: &str) -> (NvsmiQuery, NvsmiGpu) {
    let q = parse(name);
    let g = q.gpus[0].clone();
    (q, g)
}

/// (field, value) pairs that must be exactly as given; `None` means absent.
fn assert_fields(name: &str, g: &NvsmiGpu, want: &[(DcgmField, Option<f64>)]) {
    for (f, v) in want {
        assert_eq!(g.value(*f), *v, "{name}: {}", f.as_str());
    }
}

#[test]
fn h100_idle_and_load() {
    let name = "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01__idle.q.txt";
    let (q, g) = one(name);
    assert_eq!(q.driver_version.as_deref(), Some("590.48.01"));
    assert_eq!(q.cuda_version.as_deref(), Some("13.1"));
    assert_eq!(q.timestamp.as_deref(), Some("Tue Jul 14 08:12:38 2026"));
    assert_eq!(g.identity.pci_bus_id.as_deref(), Some("00000000:00:09.0"));
    assert_eq!(g.identity.device.as_deref(), Some("nvidia0"));
    assert_eq!(g.vbios_version.as_deref(), Some("96.00.A5.00.01"));
    assert_eq!(g.serial.as_deref(), Some("0000000000000"));
    assert_eq!(g.raw(&["GPU Recovery Action"]), Some("None"));
    assert_eq!(g.clock_event_reasons_active, ["Idle"]);
    assert_fields(
        name,
        &g,
        &[
            (PersistenceMode, Some(1.0)),
            (MigMode, Some(0.0)),
            (EccCurrent, Some(1.0)),
            (GpuTemp, Some(41.0)),
            (MemoryTemp, Some(48.0)),
            // Only T.Limit margins in this driver: no absolute thresholds.
            (SlowdownTemp, None),
            (ShutdownTemp, None),
            (GpuMaxOpTemp, None),
            (PowerUsage, Some(69.85)),
            (EnforcedPowerLimit, Some(700.0)),
            (SmClock, Some(345.0)),
            (MaxSmClock, Some(1980.0)),
            (MemClock, Some(2619.0)),
            (GpuUtil, Some(0.0)),
            (FbTotal, Some(81559.0)),
            (FbReserved, Some(479.0)),
            (FbUsed, Some(0.0)),
            (FbFree, Some(81081.0)),
            (EccDbeVolTotal, Some(0.0)),
            (RetiredSbe, None),
            (RetiredPending, None),
            (UncorrectableRemappedRows, Some(0.0)),
            (RowRemapFailure, Some(0.0)),
            (PcieLinkGen, Some(5.0)),
            (PcieLinkWidth, Some(16.0)),
            (PcieReplayCounter, Some(9.0)),
            (ClockEventReasons, Some(1.0)),
            (FanSpeed, None),
            (Pstate, Some(0.0)),
        ],
    );
    assert!(g.processes.is_empty());

    let name = "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01__load.q.txt";
    let (_, g) = one(name);
    assert_fields(
        name,
        &g,
        &[
            (GpuTemp, Some(59.0)),
            (PowerUsage, Some(629.45)),
            (GpuUtil, Some(100.0)),
            (FbUsed, Some(19818.0)),
            (SmClock, Some(1980.0)),
            (ClockEventReasons, Some(0.0)),
        ],
    );
    let p: Vec<(u32, &str, Option<f64>)> = g
        .processes
        .iter()
        .map(|p| (p.pid, p.name.as_deref().unwrap(), p.used_memory_mib))
        .collect();
    assert_eq!(
        p,
        [
            (11327, "/root/tools/memhog", Some(2566.0)),
            (11328, "/root/tools/memhog", Some(1542.0)),
            (11345, "./gpu_burn", Some(15690.0)),
        ]
    );
    assert_eq!(g.processes[2].process_type.as_deref(), Some("C"));
    assert_eq!(g.processes[2].gpu.as_str(), g.identity.uuid.as_str());
}

#[test]
fn mig_captures() {
    let name = "linux-x86_64__nvidia-h100-mig__590.48.01__load.q.txt";
    let (_, g) = one(name);
    assert_fields(
        name,
        &g,
        &[
            (MigMode, Some(1.0)),
            // With MIG on, whole-GPU utilization is not available: absent, not 0.
            (GpuUtil, None),
            (FbUsed, Some(11125.0)),
            (PowerUsage, Some(432.21)),
        ],
    );
    let p: Vec<(u32, Option<u32>, Option<u32>)> = g
        .processes
        .iter()
        .map(|p| (p.pid, p.gpu_instance_id, p.compute_instance_id))
        .collect();
    assert_eq!(
        p,
        [
            (21180, Some(2), Some(0)),
            (21181, Some(2), Some(0)),
            (21198, Some(2), Some(0))
        ]
    );

    let name = "linux-x86_64__nvidia-h200-mig__590.48.01__idle.q.txt";
    let (_, g) = one(name);
    assert_eq!(g.identity.model.as_deref(), Some("NVIDIA H200"));
    assert_eq!(g.identity.pci_bus_id.as_deref(), Some("00000000:83:00.0"));
    assert_fields(
        name,
        &g,
        &[(MigMode, Some(1.0)), (FbTotal, Some(143_771.0)), (GpuTemp, Some(28.0))],
    );
}

#[test]
fn h200_l40s_and_rtx() {
    let name = "linux-x86_64__nvidia-h200__590.48.01__load.q.txt";
    let (_, g) = one(name);
    assert_fields(
        name,
        &g,
        &[
            (PowerUsage, Some(627.32)),
            (FbUsed, Some(32362.0)),
            (MemoryTemp, Some(41.0)),
        ],
    );

    let name = "linux-x86_64__nvidia-l40s__595.80__load.q.txt";
    let (q, g) = one(name);
    assert_eq!(q.driver_version.as_deref(), Some("595.80"));
    assert_eq!(g.identity.model.as_deref(), Some("NVIDIA L40S"));
    assert_fields(
        name,
        &g,
        &[
            (PersistenceMode, Some(0.0)),
            (MigMode, None),
            (EncUtil, Some(59.0)),
            (PowerUsage, Some(110.24)),
            (EnforcedPowerLimit, Some(350.0)),
            (MaxMemClock, Some(9001.0)),
            (PcieLinkGen, Some(4.0)),
        ],
    );
    assert_eq!(g.processes.len(), 2);

    // 610 drivers: deprecated header values and nested power limits.
    let name = "linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04__load.q.txt";
    let (q, g) = one(name);
    assert_eq!(q.driver_version.as_deref(), Some("610.57.04"));
    assert_eq!(q.cuda_version.as_deref(), Some("13.3"));
    assert_fields(
        name,
        &g,
        &[
            (PowerUsage, Some(97.75)),
            (EnforcedPowerLimit, Some(250.0)),
            (PowerMgmtLimit, Some(250.0)),
            (SlowdownTemp, Some(97.0)),
            (ShutdownTemp, Some(100.0)),
            (GpuMaxOpTemp, Some(89.0)),
            (FanSpeed, Some(38.0)),
            (EccCurrent, None),
            (EccSbeVolTotal, None),
            (CorrectableRemappedRows, None),
            (Pstate, Some(2.0)),
        ],
    );
}

#[test]
fn windows_wddm() {
    let name = "windows-x86_64__nvidia-geforce-rtx-2080-super__610.62__load.q.txt";
    let (q, g) = one(name);
    assert_eq!(q.driver_version.as_deref(), Some("610.62"));
    assert_eq!(g.vbios_version.as_deref(), Some("90.04.7a.40.73"));
    // Persistence mode does not exist on Windows.
    assert_fields(
        name,
        &g,
        &[(PersistenceMode, None), (GpuTemp, Some(44.0)), (FbUsed, Some(1366.0))],
    );
    assert_eq!(g.processes.len(), 21);
    // WDDM cannot say how much memory a process uses: absent, never 0.
    assert!(g.processes.iter().all(|p| p.used_memory_mib.is_none()));
    assert!(g.processes.iter().all(|p| p.gpu_instance_id.is_none()));
    let ffmpeg = g.processes.iter().find(|p| p.pid == 12940).unwrap();
    assert!(ffmpeg.name.as_deref().unwrap().ends_with(r"\bin\ffmpeg.exe"));
    assert_eq!(ffmpeg.process_type.as_deref(), Some("C"));
}

#[test]
fn gpud_captures() {
    let name = "nvidia-smi-query.535.129.03.out.0.valid.a10";
    let (q, g) = one(name);
    assert_eq!(q.driver_version.as_deref(), Some("535.129.03"));
    assert_eq!(g.identity.uuid.as_str(), "GPU-73d12ef7-f589-f867-4259-c7090ab44736");
    assert_eq!(g.serial.as_deref(), Some("1324521052681"));
    assert_eq!(
        g.identity.extra_labels.get("architecture").map(String::as_str),
        Some("Ampere")
    );
    assert_fields(
        name,
        &g,
        &[
            (UncorrectableRemappedRows, Some(4.0)),
            (RowRemapPending, Some(1.0)),
            (RowRemapFailure, Some(0.0)),
            (ShutdownTemp, Some(101.0)),
            (SlowdownTemp, Some(98.0)),
            (GpuMaxOpTemp, Some(91.0)),
            (MemoryTemp, None),
            (PowerUsage, Some(43.89)),
            (PowerMgmtLimit, Some(150.0)),
            (MigMode, None),
            (FanSpeed, Some(0.0)),
            (Pstate, Some(8.0)),
        ],
    );

    let name = "nvidia-smi-query.535.161.08.out.0.valid";
    let q = parse(name);
    assert_eq!(q.gpus.len(), 8);
    let g = &q.gpus[0];
    assert_eq!(g.identity.pci_bus_id.as_deref(), Some("00000000:19:00.0"));
    // HW slowdown by the power brake, active at capture time.
    assert_eq!(g.clock_event_reasons_active, ["HW Slowdown", "HW Power Brake Slowdown"]);
    assert_fields(
        name,
        &g.clone(),
        &[(ClockEventReasons, Some(136.0)), (PcieReplayCounter, Some(67.0))],
    );
    let bus: Vec<&str> = q
        .gpus
        .iter()
        .map(|g| g.identity.pci_bus_id.as_deref().unwrap())
        .collect();
    assert_eq!(bus[1], "00000000:3B:00.0");
    assert_eq!(bus[2], "00000000:4C:00.0");

    let name = "nvidia-smi-query.535.154.05.out.0.valid";
    let q = parse(name);
    assert_eq!(q.gpus.len(), 8);
    assert_eq!(q.gpus[0].serial, None);
    assert_fields(
        name,
        &q.gpus[0],
        &[
            (EccCurrent, Some(0.0)),
            (FbUsed, Some(20328.0)),
            (PowerUsage, Some(67.76)),
        ],
    );
    assert_eq!(q.gpus[1].processes[0].pid, 2930819);

    // Volta: the old ECC layout (Single/Double Bit), all N/A with ECC off.
    let name = "nvidia-smi-query.560.35.03.out.0.valid";
    let (q, g) = one(name);
    assert_eq!(q.cuda_version.as_deref(), Some("12.6"));
    assert_eq!(g.identity.model.as_deref(), Some("NVIDIA TITAN V"));
    assert_fields(
        name,
        &g,
        &[
            (EccSbeVolTotal, None),
            (EccDbeAggTotal, None),
            (EccCurrent, None),
            (MemoryTemp, Some(41.0)),
        ],
    );
    let p: Vec<(u32, Option<&str>)> = g.processes.iter().map(|p| (p.pid, p.process_type.as_deref())).collect();
    assert_eq!(p, [(100607, Some("G")), (100838, Some("G")), (101815, Some("G"))]);
}

#[test]
fn truncated_capture_gives_an_error_and_the_partial_result() {
    let err = parse_query(&read(TRUNCATED), "node-1", 1_000).unwrap_err();
    let msg = err.to_string();
    assert_eq!(
        msg,
        "line 91: output is truncated: it stops in section 'Clocks Event Reasons > Display Clock Setting' \
         of GPU 00000000:53:00.0; 1 GPU block(s) of 8 read"
    );
    let NvsmiQueryError::Truncated {
        line,
        gpu,
        section,
        expected,
        found,
        partial,
    } = err
    else {
        panic!("{msg}")
    };
    assert_eq!(
        (line, gpu.as_str(), expected, found),
        (91, "00000000:53:00.0", Some(8), 1)
    );
    assert_eq!(section, "Clocks Event Reasons > Display Clock Setting");
    assert_eq!(partial.driver_version.as_deref(), Some("535.183.01"));
    assert_eq!(partial.gpus.len(), 1);
    let g = &partial.gpus[0];
    assert_eq!(g.identity.uuid.as_str(), "GPU-566e6f65-c38e-b12f-4824-6944218668b9");
    assert_eq!(g.identity.model.as_deref(), Some("NVIDIA H100 80GB HBM3"));
    assert_eq!(g.serial.as_deref(), Some("1655022005478"));
    assert_fields(
        TRUNCATED,
        g,
        &[
            (PersistenceMode, Some(1.0)),
            (MigMode, Some(0.0)),
            (PcieReplayCounter, Some(120.0)),
            (PcieLinkGen, Some(5.0)),
            (Pstate, Some(0.0)),
            // The made-up "Invalid HW Slowdown" keys are ignored; Idle is active.
            (ClockEventReasons, Some(1.0)),
            // Everything after the cut is absent.
            (GpuTemp, None),
            (FbUsed, None),
            (PowerUsage, None),
        ],
    );
}

#[test]
fn cut_anywhere_is_an_error_or_a_prefix_never_a_panic() {
    // Every cut of a real 8-GPU output at a line boundary either parses (a cut between
    // GPU blocks is only detectable through `Attached GPUs`) or is a truncation error
    // whose partial result holds the GPUs before the cut.
    let text = read("nvidia-smi-query.535.161.08.out.0.valid");
    let lines: Vec<&str> = text.lines().collect();
    for cut in (0..lines.len()).step_by(7) {
        let part = lines[..cut].join("\n");
        match parse_query(&part, "n", 0) {
            Ok(q) => panic!("cut at {cut} parsed as complete with {} GPUs", q.gpus.len()),
            Err(NvsmiQueryError::Truncated { partial, line, .. }) => {
                assert!(line <= cut, "cut {cut}: line {line}");
                assert!(partial.gpus.len() <= 8);
            }
            Err(NvsmiQueryError::NotQueryOutput { .. }) => assert!(cut < 2, "cut {cut}"),
            Err(e) => panic!("cut {cut}: {e}"),
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse_query(&String::from_utf8_lossy(&bytes), "n", 0);
    }

    #[test]
    fn shuffled_and_mangled_real_lines_never_panic(
        picks in proptest::collection::vec((0usize..260, 0usize..80, "[ -~]{0,6}"), 0..120),
    ) {
        let text = read("linux-x86_64__nvidia-h100-mig__590.48.01__load.q.txt");
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::new();
        for (i, cut, insert) in picks {
            let l = lines[i % lines.len()];
            let at = cut.min(l.len());
            out.push_str(&l[..at]);
            out.push_str(&insert);
            out.push_str(&l[at..]);
            out.push('\n');
        }
        let _ = parse_query(&out, "n", 0);
    }
}
