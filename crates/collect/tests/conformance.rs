//! Conformance on real exporter captures (`testdata/exporters/`, sources in its README):
//! every file parses, maps to the right GPUs and typed values, and agrees with the
//! `prometheus-parse` crate on every sample.

use gpuwarden_collect::dcgm::{map_exporter_page, ExporterKind, ExporterPage};
use gpuwarden_collect::prom::{self, Limits, MetricType};
use gpuwarden_model::{DcgmField, FieldName};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn exporters_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/exporters")
}

fn read(name: &str) -> Vec<u8> {
    let path = exporters_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn capture_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(exporters_dir())
        .expect("testdata/exporters exists")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".metrics") || n.ends_with(".txt"))
        .collect();
    names.sort();
    names
}

fn map(name: &str) -> ExporterPage {
    map_exporter_page(&read(name), "target-node", 1_700_000_000_000, &Limits::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

const DATADOG: &str = "dcgm-exporter-datadog-t4-a10g.txt";
const T4_460: &str = "GPU-20c56d28-0da5-6d26-a36a-e7af1ce2586e";
const T4_470: &str = "GPU-9ef1b6d0-3643-5dd7-b823-c0ec20dcf2d5";
const MASKED: &str = "00000000-0000-0000-0000-000000000000";

fn f(field: DcgmField) -> FieldName {
    FieldName::Dcgm(field)
}

#[test]
fn all_captures_are_present_and_parse() {
    let files = capture_files();
    assert_eq!(files.len(), 21, "{files:?}");
    for name in files {
        let body = read(&name);
        let mut samples = 0;
        let summary =
            prom::parse(&body, &Limits::default(), |_| samples += 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(samples > 20, "{name}: only {samples} samples");
        assert_eq!(summary.samples, samples);
        assert!(summary.families > 10, "{name}");
    }
}

#[test]
fn datadog_dcgm_capture_maps_gpus_fields_and_labels() {
    let page = map(DATADOG);
    assert_eq!(page.kind, ExporterKind::Dcgm);
    let uuids: Vec<_> = page.gpus.iter().map(|g| g.uuid.as_str()).collect();
    assert_eq!(uuids, [T4_460, T4_470, "GPU-abc"]);

    let t4 = page.gpu(T4_460).unwrap();
    assert_eq!(t4.node, "424773df46e0");
    assert_eq!(t4.index, Some(0));
    assert_eq!(t4.model.as_deref(), Some("Tesla T4"));
    assert_eq!(t4.device.as_deref(), Some("nvidia0"));
    assert_eq!(t4.driver_version.as_deref(), Some("460.106.00"));
    assert!(t4.workload.is_empty());
    assert_eq!(
        t4.extra_labels.get("DCGM_FI_PROCESS_NAME").map(String::as_str),
        Some("/usr/bin/dcgm-exporter")
    );
    assert_eq!(page.value(T4_460, &f(DcgmField::GpuTemp)), Some(25.0));
    assert_eq!(page.value(T4_460, &f(DcgmField::PowerUsage)), Some(8.969));
    assert_eq!(page.value(T4_460, &f(DcgmField::SmClock)), Some(300.0));
    assert_eq!(
        page.value(T4_460, &f(DcgmField::TotalEnergyConsumption)),
        Some(128_996_013.0)
    );
    assert_eq!(page.value(T4_460, &f(DcgmField::FbFree)), Some(15109.0));
    assert_eq!(page.value(T4_460, &f(DcgmField::XidErrors)), Some(0.0));

    let t4b = page.gpu(T4_470).unwrap();
    assert_eq!(t4b.node, "551bdf382151");
    assert_eq!(t4b.driver_version.as_deref(), Some("470.182.03"));
    assert_eq!(
        t4b.extra_labels.get("DCGM_FI_DEV_SERIAL").map(String::as_str),
        Some("1565220008176")
    );
    assert_eq!(page.value(T4_470, &f(DcgmField::SlowdownTemp)), Some(93.0));
    assert_eq!(page.value(T4_470, &f(DcgmField::PowerMgmtLimit)), Some(70.0));
    assert_eq!(page.value(T4_470, &f(DcgmField::FbUsedPercent)), Some(0.000008));
    assert_eq!(page.value(T4_470, &f(DcgmField::ClockThrottleReasons)), Some(1.0));

    let a10g = page.gpu("GPU-abc").unwrap();
    assert_eq!(a10g.model.as_deref(), Some("NVIDIA A10G"));
    assert_eq!(a10g.node, "ip-11111");
    assert_eq!(a10g.workload.namespace.as_deref(), Some("ray-llm"));
    assert_eq!(a10g.workload.pod.as_deref(), Some("ray-1111111"));
    assert_eq!(a10g.workload.container.as_deref(), Some("ray-worker"));
    assert_eq!(page.value("GPU-abc", &f(DcgmField::ProfDramActive)), Some(0.000003));

    // The dummy block after the second `# NOTE` has no labels: kept, not attributed.
    assert_eq!(page.other.len(), 14);
    assert!(page.other.contains(&("DCGM_FI_DEV_FAN_SPEED".to_owned(), 0.0)));
    assert!(page.rows.iter().all(|r| r.ts_ms == 1_700_000_000_000));
    assert_eq!(page.sample_count() + page.other.len(), page.summary.parse.samples);
}

#[test]
fn datadog_capture_keeps_family_types() {
    let body = read(DATADOG);
    let mut types = BTreeMap::new();
    prom::parse(&body, &Limits::default(), |s| {
        types.insert(s.name.to_owned(), s.family_type);
    })
    .unwrap();
    assert_eq!(types["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"], Some(MetricType::Counter));
    assert_eq!(types["DCGM_FI_DEV_GPU_TEMP"], Some(MetricType::Gauge));
}

/// What a nvidia_gpu_exporter capture must map to, read from the file. MIG captures have
/// no utilization (nvidia-smi says N/A), which must stay absent rather than become 0.
struct Capture {
    file: &'static str,
    model: &'static str,
    driver: &'static str,
    temp_c: f64,
    power_w: f64,
    fb_used_bytes: f64,
    util_ratio: Option<f64>,
}

const NVSMI: &[Capture] = &[
    Capture {
        file: "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01__load.metrics",
        model: "NVIDIA H100 80GB HBM3",
        driver: "590.48.01",
        temp_c: 59.0,
        power_w: 631.95,
        fb_used_bytes: 2.0780679168e10,
        util_ratio: Some(1.0),
    },
    Capture {
        file: "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01__idle.metrics",
        model: "NVIDIA H100 80GB HBM3",
        driver: "590.48.01",
        temp_c: 41.0,
        power_w: 69.85,
        fb_used_bytes: 0.0,
        util_ratio: Some(0.0),
    },
    Capture {
        file: "linux-x86_64__nvidia-h100-mig__590.48.01__load.metrics",
        model: "NVIDIA H100 80GB HBM3",
        driver: "590.48.01",
        temp_c: 53.0,
        power_w: 433.78,
        fb_used_bytes: 1.1665408e10,
        util_ratio: None,
    },
    Capture {
        file: "linux-x86_64__nvidia-h200__590.48.01__load.metrics",
        model: "NVIDIA H200",
        driver: "590.48.01",
        temp_c: 52.0,
        power_w: 627.4,
        fb_used_bytes: 3.3934016512e10,
        util_ratio: Some(1.0),
    },
    Capture {
        file: "linux-x86_64__nvidia-h200-mig__590.48.01__idle.metrics",
        model: "NVIDIA H200",
        driver: "590.48.01",
        temp_c: 28.0,
        power_w: 78.28,
        fb_used_bytes: 5.767168e7,
        util_ratio: None,
    },
    Capture {
        file: "linux-x86_64__nvidia-l40s__595.80__load.metrics",
        model: "NVIDIA L40S",
        driver: "595.80",
        temp_c: 54.0,
        power_w: 110.23,
        fb_used_bytes: 1.29499136e9,
        util_ratio: Some(0.09),
    },
    Capture {
        file: "linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05__load.metrics",
        model: "NVIDIA GeForce RTX 4080 SUPER",
        driver: "595.71.05",
        temp_c: 46.0,
        power_w: 84.24,
        fb_used_bytes: 1.545601024e9,
        util_ratio: Some(0.07),
    },
    Capture {
        file: "linux-x86_64__nvidia-geforce-rtx-2080-super__610.57.04__load.metrics",
        model: "NVIDIA GeForce RTX 2080 SUPER",
        driver: "610.57.04",
        temp_c: 38.0,
        power_w: 98.14,
        fb_used_bytes: 8.5458944e8,
        util_ratio: Some(0.08),
    },
    Capture {
        file: "windows-x86_64__nvidia-geforce-rtx-2080-super__591.86__idle.metrics",
        model: "NVIDIA GeForce RTX 2080 SUPER",
        driver: "591.86",
        temp_c: 40.0,
        power_w: 38.92,
        fb_used_bytes: 7.36100352e8,
        util_ratio: Some(0.0),
    },
];

#[test]
fn nvidia_smi_captures_map_to_typed_fields() {
    for c in NVSMI {
        let (name, model, driver) = (c.file, c.model, c.driver);
        let (temp, power, used_bytes, util) = (c.temp_c, c.power_w, c.fb_used_bytes, c.util_ratio);
        let page = map(name);
        assert_eq!(page.kind, ExporterKind::NvidiaSmi, "{name}");
        assert_eq!(page.gpus.len(), 1, "{name}");
        let g = &page.gpus[0];
        assert_eq!(g.uuid.as_str(), MASKED, "{name}");
        assert_eq!(g.node, "target-node", "{name}");
        assert_eq!(g.index, Some(0), "{name}");
        assert_eq!(g.model.as_deref(), Some(model), "{name}");
        assert_eq!(g.driver_version.as_deref(), Some(driver), "{name}");
        assert_eq!(page.rows.len(), 1, "{name}");
        let get = |field| page.value(MASKED, &f(field));
        assert_eq!(get(DcgmField::GpuTemp), Some(temp), "{name}");
        assert_eq!(get(DcgmField::PowerUsage), Some(power), "{name}");
        assert_eq!(get(DcgmField::FbUsed), Some(used_bytes / 1_048_576.0), "{name}");
        assert_eq!(get(DcgmField::GpuUtil), util.map(|u| u * 100.0), "{name}");
        for field in [
            DcgmField::SmClock,
            DcgmField::MemClock,
            DcgmField::FbTotal,
            DcgmField::PowerMgmtLimit,
            DcgmField::Pstate,
            DcgmField::ClockEventReasons,
            DcgmField::PcieLinkGen,
        ] {
            assert!(get(field).is_some(), "{name}: {field} missing");
        }
        // Unknown nvidia-smi metrics are kept under their own name.
        assert!(
            page.value(MASKED, &FieldName::parse("nvidia_smi_pci_device_id"))
                .is_some(),
            "{name}"
        );
        // Exporter self-metrics have no uuid: kept as `other`.
        assert!(
            page.other.iter().any(|(s, _)| s == "nvidia_smi_last_collect_success"),
            "{name}"
        );
    }
}

#[test]
fn nvidia_smi_units_are_converted_exactly() {
    let page = map("linux-x86_64__nvidia-h100-mig__590.48.01__load.metrics");
    let get = |field| page.value(MASKED, &f(field));
    assert_eq!(get(DcgmField::FbUsed), Some(11125.0)); // 1.1665408e10 B
    assert_eq!(get(DcgmField::SmClock), Some(1980.0)); // 1.98e9 Hz
    assert_eq!(get(DcgmField::MemClock), Some(2619.0));
    assert_eq!(get(DcgmField::MigMode), Some(1.0));
    assert_eq!(get(DcgmField::EnforcedPowerLimit), Some(700.0));
    assert_eq!(get(DcgmField::EccDbeVolTotal), Some(0.0));
    assert_eq!(get(DcgmField::MemoryTemp), Some(59.0));
    // Per-process series are not per-GPU values.
    let processes = page
        .other
        .iter()
        .filter(|(s, _)| s.starts_with("nvidia_smi_compute_app_info{"))
        .count();
    assert_eq!(processes, 3);
}

/// Every sample as (name, sorted labels) → value, from our parser. Label values are
/// re-escaped: `prometheus-parse` does not unescape (`C:\\Windows` stays doubled), so the
/// comparison is on the written form.
fn ours(body: &[u8]) -> BTreeMap<(String, Vec<(String, String)>), f64> {
    let mut out = BTreeMap::new();
    prom::parse(body, &Limits::default(), |s| {
        let mut labels: Vec<_> = s
            .labels
            .iter()
            .map(|l| {
                let mut written = String::new();
                prom::escape_label_value(&l.value, &mut written);
                (l.name.to_owned(), written)
            })
            .collect();
        labels.sort();
        out.insert((s.name.to_owned(), labels), s.value);
    })
    .unwrap();
    out
}

/// The same from `prometheus-parse`. Apart from not unescaping, it is correct on these
/// captures (no `=` or `,` in label values, only gauges and counters), so any difference
/// is our bug.
fn theirs(body: &[u8]) -> BTreeMap<(String, Vec<(String, String)>), f64> {
    let text = std::str::from_utf8(body).unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let mut labels: Vec<_> = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                other => panic!("unexpected {other:?}"),
            };
            ((s.metric, labels), value)
        })
        .collect()
}

#[test]
fn agrees_with_prometheus_parse_on_every_capture() {
    for name in capture_files() {
        let body = read(&name);
        let (a, b) = (ours(&body), theirs(&body));
        let only_ours: Vec<_> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).collect();
        let only_theirs: Vec<_> = b.iter().filter(|(k, v)| a.get(*k) != Some(v)).collect();
        assert!(
            only_ours.is_empty() && only_theirs.is_empty(),
            "{name}: ours only {only_ours:?}, theirs only {only_theirs:?}"
        );
        assert_eq!(a.len(), b.len(), "{name}");
    }
}

#[test]
fn prometheus_parse_is_wrong_where_we_are_right() {
    // Why we do not use it: a label value containing `=` or `,` (and escapes left in).
    let body = b"m{q=\"a=b,c\",r=\"x\"} 1\n";
    let mine = ours(body);
    let key = (
        "m".to_owned(),
        vec![("q".to_owned(), "a=b,c".to_owned()), ("r".to_owned(), "x".to_owned())],
    );
    assert_eq!(mine.get(&key), Some(&1.0));
    assert_ne!(theirs(body), mine);
}
