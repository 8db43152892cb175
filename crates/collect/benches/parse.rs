//! Parse + map throughput on a realistic dcgm-exporter page: 8 GPUs × 40 fields, each
//! series with the label set of the DataDog T4 capture plus Kubernetes labels. The
//! product target is ≥ 1 M samples/s/core for parse + map + store, so parse + map must be
//! well above that. Prints samples/s; criterion's `thrpt` is the same number.
//!
//! Run: `cargo bench -p gpuwarden-collect --bench parse`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::prom::{self, Limits};
use gpuwarden_model::DcgmField;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const GPUS: usize = 8;
const FIELDS: usize = 40;

/// An 8-GPU page in dcgm-exporter's layout: per family a HELP and TYPE line, then one
/// line per GPU.
fn dcgm_page() -> (String, usize) {
    let mut page = String::new();
    let mut samples = 0;
    for (f, field) in DcgmField::ALL.iter().take(FIELDS).enumerate() {
        let ty = match field.field_type() {
            gpuwarden_model::FieldType::Gauge => "gauge",
            gpuwarden_model::FieldType::Counter => "counter",
        };
        page.push_str(&format!(
            "# HELP {field} {field} (in {}).\n# TYPE {field} {ty}\n",
            field.unit()
        ));
        for gpu in 0..GPUS {
            let value = if f % 3 == 0 {
                format!("{}.{:06}", 100 + gpu * 7 + f, gpu * 1234 + f)
            } else {
                format!("{}", gpu * 1000 + f * 13)
            };
            page.push_str(&format!(
                "{field}{{gpu=\"{gpu}\",UUID=\"GPU-20c56d28-0da5-6d26-a36a-e7af1ce2586{gpu}\",device=\"nvidia{gpu}\",\
                 modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"gpu-node-17\",DCGM_FI_DRIVER_VERSION=\"550.144.03\",\
                 DCGM_FI_PROCESS_NAME=\"/usr/bin/dcgm-exporter\",container=\"trainer\",namespace=\"ml-team-a\",\
                 pod=\"llm-finetune-7d9f8c-{gpu}x2k\",pci_bus_id=\"00000000:{:02X}:00.0\"}} {value}\n",
                0x18 + gpu * 0x10
            ));
            samples += 1;
        }
    }
    (page, samples)
}

fn nvsmi_page() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/exporters/linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01__load.metrics");
    std::fs::read(path).expect("nvidia_gpu_exporter capture")
}

/// A plain timing loop, so the bench prints samples/s even when criterion's output is
/// filtered.
fn report(name: &str, samples: usize, mut run: impl FnMut()) {
    let iterations = 2000;
    let started = Instant::now();
    for _ in 0..iterations {
        run();
    }
    let per_page = started.elapsed() / iterations;
    let rate = samples as f64 / per_page.as_secs_f64();
    println!(
        "{name}: {samples} samples/page, {per_page:?}/page, {:.2} M samples/s",
        rate / 1e6
    );
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let (page, samples) = dcgm_page();
    let body = page.as_bytes();
    let check = map_exporter_page(body, "n", 0, &limits).expect("bench page maps");
    assert_eq!((check.gpus.len(), check.sample_count()), (GPUS, samples));

    report("dcgm 8x40 parse", samples, || {
        black_box(prom::parse(black_box(body), &limits, |s| {
            black_box(s.value);
        }))
        .expect("parses");
    });
    report("dcgm 8x40 parse+map", samples, || {
        black_box(map_exporter_page(black_box(body), "n", 0, &limits)).expect("maps");
    });

    let mut group = c.benchmark_group("dcgm_8gpu_40fields");
    group.throughput(Throughput::Elements(samples as u64));
    group.bench_function("parse", |b| {
        b.iter(|| {
            prom::parse(black_box(body), &limits, |s| {
                black_box(s.value);
            })
        })
    });
    group.bench_function("parse_map", |b| {
        b.iter(|| map_exporter_page(black_box(body), "n", 0, &limits))
    });
    group.finish();

    let nvsmi = nvsmi_page();
    let nvsmi_samples = prom::parse(&nvsmi, &limits, |_| {}).expect("capture parses").samples;
    report("nvidia_smi H100 parse+map", nvsmi_samples, || {
        black_box(map_exporter_page(black_box(&nvsmi), "n", 0, &limits)).expect("maps");
    });
    let mut group = c.benchmark_group("nvidia_smi_h100");
    group.throughput(Throughput::Elements(nvsmi_samples as u64));
    group.bench_function("parse_map", |b| {
        b.iter(|| map_exporter_page(black_box(&nvsmi), "n", 0, &limits))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
