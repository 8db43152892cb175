//! Append throughput of the embedded store, in samples per second.
//!
//! One iteration appends one scrape of 4 nodes × 8 GPUs × 40 fields (1,280 samples) as a
//! single batch. `fsync` is on (the real contract): its cost is amortised over the batch,
//! as it is in production. `nosync` shows the CPU cost alone (encode + WAL write +
//! memtable insert), which is what the 1 M samples/s/core parse+store budget is about.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use gpuwarden_model::{DcgmField, FieldName, GpuSamples, GpuUuid};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::Store;

const GPUS: usize = 32;
const FIELDS: usize = 40;

fn scrape(gpus: &[GpuUuid], second: i64) -> Vec<GpuSamples> {
    gpus.iter()
        .enumerate()
        .map(|(g, uuid)| GpuSamples {
            gpu: uuid.clone(),
            ts_ms: 1_760_000_000_000 + second * 1000,
            values: (0..FIELDS)
                .map(|f| {
                    (
                        FieldName::Dcgm(DcgmField::ALL[f]),
                        (second as f64 * 0.37 + (g * f) as f64).round(),
                    )
                })
                .collect(),
        })
        .collect()
}

fn bench_append(c: &mut Criterion) {
    let gpus: Vec<GpuUuid> = (0..GPUS)
        .map(|i| GpuUuid::new(&format!("GPU-{i:08x}-1c2d-4e5f-8a9b-0123456789ab")))
        .collect();
    let mut group = c.benchmark_group("append");
    group.throughput(Throughput::Elements((GPUS * FIELDS) as u64));
    for (name, sync) in [("scrape_32gpu_x40_fsync", true), ("scrape_32gpu_x40_nosync", false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = EmbeddedStore::open(
            dir.path(),
            EmbeddedOptions {
                sync,
                ..EmbeddedOptions::default()
            },
        )
        .expect("open");
        let mut second = 0i64;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    second += 1;
                    scrape(&gpus, second)
                },
                |rows| store.append_samples(&rows).expect("append"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_append);
criterion_main!(benches);
