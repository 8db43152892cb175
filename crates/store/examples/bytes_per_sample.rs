//! Measures the embedded store's size on disk for an hour of realistic DCGM-like data:
//! 32 GPUs (4 nodes × 8) × 40 fields at a 1 s interval, appended one scrape (all four
//! nodes) per call, then flushed. Prints bytes on disk per stored sample.
//!
//! `cargo run --release -p gpuwarden-store --example bytes_per_sample [-- DIR]`
//!
//! The data imitates what dcgm-exporter prints: integer temperatures that drift, power
//! with 3 decimals and noise, clocks in 15 MHz steps, integer utilizations, energy and
//! violation counters, profiling ratios with 6 decimals and noise, PCIe/NVLink byte
//! rates, bitmasks that are mostly 0, and constant limits and modes. Scrape timestamps
//! jitter by a few milliseconds per node, as real scrapes do.

use gpuwarden_model::{DcgmField as F, FieldName, GpuSamples, GpuUuid};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::Store;
use std::time::Instant;

const NODES: usize = 4;
const GPUS_PER_NODE: usize = 8;
const SECONDS: i64 = 3600;
const T0: i64 = 1_760_000_000_000;

/// xorshift64* — deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

/// One simulated GPU's state.
struct Gpu {
    uuid: GpuUuid,
    rng: Rng,
    busy: bool,
    temp: f64,
    mem_temp: f64,
    sm_clock: f64,
    energy_mj: f64,
    fb_used: f64,
    power_violation_ns: f64,
    sbe: f64,
    clock_events: f64,
}

impl Gpu {
    fn new(i: usize) -> Self {
        Gpu {
            uuid: GpuUuid::new(&format!("GPU-{:08x}-1c2d-4e5f-8a9b-{:012x}", i * 7919, i)),
            rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0x1234_5678_9ABC_DEF1)),
            busy: i % 3 >= 1, // two GPUs in three start busy
            temp: 45.0,
            mem_temp: 50.0,
            sm_clock: 1980.0,
            energy_mj: 1.0e10 + i as f64 * 1e8,
            fb_used: 60_000.0,
            power_violation_ns: 0.0,
            sbe: 0.0,
            clock_events: 0.0,
        }
    }

    fn sample(&mut self, ts_ms: i64) -> GpuSamples {
        let r = &mut self.rng;
        // Jobs start and stop every ~15 minutes on average.
        if r.chance(1.0 / 900.0) {
            self.busy = !self.busy;
        }
        let load = if self.busy { 0.92 } else { 0.0 };
        let target_temp = if self.busy { 72.0 } else { 38.0 };
        self.temp += (target_temp - self.temp) * 0.01 + r.normal() * 0.1;
        self.mem_temp += (target_temp + 8.0 - self.mem_temp) * 0.01 + r.normal() * 0.1;
        let power = if self.busy {
            610.0 + r.normal() * 12.0
        } else {
            72.0 + r.normal() * 1.5
        };
        let power = round_to(power, 3);
        self.energy_mj += power * 1000.0;
        if r.chance(0.02) {
            self.sm_clock = if self.busy {
                1980.0 - 15.0 * (r.next() % 6) as f64
            } else {
                1980.0
            };
        }
        if r.chance(0.01) {
            self.fb_used = (self.fb_used + r.normal() * 500.0).clamp(1000.0, 80_000.0).round();
        }
        if self.busy && r.chance(0.005) {
            self.power_violation_ns += (r.next() % 1_000_000) as f64;
        }
        if r.chance(0.0005) {
            self.sbe += 1.0;
        }
        let throttling = self.busy && r.chance(0.02);
        if throttling {
            self.clock_events += 1.0;
        }
        let util = |r: &mut Rng, base: f64| (base * 100.0 + r.normal() * 3.0).clamp(0.0, 100.0).round();
        let ratio = |r: &mut Rng, base: f64| round_to((base + r.normal() * 0.004).clamp(0.0, 1.0), 6);
        let rate = |r: &mut Rng, base: f64| (base * (1.0 + r.normal() * 0.05)).max(0.0).round();
        let gpu_util = util(r, load);
        let values: Vec<(F, f64)> = vec![
            (F::GpuTemp, self.temp.round()),
            (F::MemoryTemp, self.mem_temp.round()),
            (F::SlowdownTemp, 90.0),
            (F::ShutdownTemp, 95.0),
            (F::PowerUsage, power),
            (F::TotalEnergyConsumption, self.energy_mj.round()),
            (F::PowerMgmtLimit, 700.0),
            (F::EnforcedPowerLimit, 700.0),
            (F::SmClock, self.sm_clock),
            (F::MemClock, 2619.0),
            (F::MaxSmClock, 1980.0),
            (F::ClockEventReasons, if throttling { 4.0 } else { 0.0 }),
            (F::GpuUtil, gpu_util),
            (F::MemCopyUtil, util(r, load * 0.4)),
            (F::EncUtil, 0.0),
            (F::DecUtil, 0.0),
            (F::FbUsed, self.fb_used),
            (F::FbFree, 81_559.0 - self.fb_used),
            (F::FbReserved, 520.0),
            (F::XidErrors, 0.0),
            (F::PcieReplayCounter, 0.0),
            (F::PowerViolation, self.power_violation_ns),
            (F::ThermalViolation, 0.0),
            (F::EccSbeVolTotal, self.sbe),
            (F::EccDbeVolTotal, 0.0),
            (F::RetiredPending, 0.0),
            (F::CorrectableRemappedRows, 0.0),
            (F::UncorrectableRemappedRows, 0.0),
            (F::RowRemapFailure, 0.0),
            (F::NvlinkCrcFlitErrorCountTotal, 0.0),
            (F::PersistenceMode, 1.0),
            (F::ProfGrEngineActive, ratio(r, load * 0.97)),
            (F::ProfSmActive, ratio(r, load * 0.85)),
            (F::ProfSmOccupancy, ratio(r, load * 0.45)),
            (F::ProfPipeTensorActive, ratio(r, load * 0.6)),
            (F::ProfDramActive, ratio(r, load * 0.55)),
            (F::ProfPipeFp64Active, 0.0),
            (F::ProfPcieTxBytes, rate(r, 2.0e8 * load + 1.0e5)),
            (F::ProfNvlinkTxBytes, rate(r, 4.0e10 * load)),
            (F::ExpClockEventsCount, self.clock_events),
        ];
        GpuSamples {
            gpu: self.uuid.clone(),
            ts_ms,
            values: values.into_iter().map(|(f, v)| (FieldName::Dcgm(f), v)).collect(),
        }
    }
}

fn main() {
    let dir = match std::env::args().nth(1) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("gpuwarden-bps-{}", std::process::id())),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let store = EmbeddedStore::open(&dir, EmbeddedOptions::default()).expect("open store");
    let mut gpus: Vec<Gpu> = (0..NODES * GPUS_PER_NODE).map(Gpu::new).collect();
    let mut jitter = Rng(42);
    let started = Instant::now();
    let mut samples = 0u64;
    for s in 0..SECONDS {
        let mut scrape = Vec::with_capacity(gpus.len());
        for (n, node) in gpus.chunks_mut(GPUS_PER_NODE).enumerate() {
            // One timestamp per node scrape, a few ms late, as a real scraper's clock is.
            let ts = T0 + s * 1000 + n as i64 * 37 + (jitter.next() % 7) as i64;
            for g in node {
                scrape.push(g.sample(ts));
            }
        }
        samples += scrape.iter().map(|r| r.values.len() as u64).sum::<u64>();
        store.append_samples(&scrape).expect("append");
    }
    let append_secs = started.elapsed().as_secs_f64();
    store.flush().expect("flush");
    let st = store.stats().expect("stats");
    assert_eq!(st.samples, samples);
    println!("samples appended   {samples}");
    println!("series             {}", st.series);
    println!("bytes on disk      {}", st.bytes_on_disk);
    println!("bytes per sample   {:.3}", st.bytes_on_disk as f64 / samples as f64);
    println!(
        "append (fsync per scrape of {} samples): {:.2} s, {:.0} samples/s",
        NODES * GPUS_PER_NODE * 40,
        append_secs,
        samples as f64 / append_secs
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
