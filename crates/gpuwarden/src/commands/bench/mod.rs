//! `gpuwarden bench …`: the measurements behind `docs/benchmarks.md`. Each prints a
//! table with the machine it ran on and the command that reproduces it.

mod api;
mod cpu;
mod detect;
mod hostile;
mod ingest;
mod nab;
mod predict;
mod prometheus;
mod replay;
mod scale;
mod security;
mod store;

pub use api::api;
pub use detect::detect;
pub use hostile::hostile;
pub use ingest::ingest;
pub use nab::nab;
pub use predict::predict;
pub use replay::replay_cmd as replay;
pub use scale::scale;
pub use security::security;
pub use store::{store, BenchStoreArgs};

/// One line describing this machine, for the record next to each figure.
pub(crate) fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB")
}
