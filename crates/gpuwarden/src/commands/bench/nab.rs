//! `gpuwarden bench nab`: the streaming anomaly detector on the Numenta Anomaly Benchmark.
//!
//! Every NAB series is fed to a fresh [`SeriesDetector`] with the default (product)
//! configuration, one sample at a time, no look-ahead. Per-row scores are written in NAB's
//! results layout, scored by the Rust NAB scorer (threshold optimised per profile, as NAB
//! does) and printed next to the published scoreboard. Detector cost is measured around
//! `update` only: file reading, writing and scoring are excluded.

use super::cpu::thread_cpu;
use super::machine_line;
use crate::cli::BenchNabArgs;
use anyhow::{Context, Result};
use gpuwarden_anomaly::nab::{evaluate, Corpus, ProfileResult};
use gpuwarden_anomaly::{SeriesConfig, SeriesDetector};
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The name our rows carry in the results layout and the scoreboard.
const DETECTOR: &str = "gpuwarden";

pub fn nab(args: BenchNabArgs) -> Result<ExitCode> {
    let corpus = Corpus::load(&args.data)
        .with_context(|| format!("loading the NAB corpus from {} (pass --data DIR)", args.data.display()))?;
    let config = SeriesConfig::default();
    let rows: usize = corpus.series.iter().map(|s| s.values.len()).sum();
    println!(
        "NAB v1.1: {} series, {rows} rows, from {}",
        corpus.series.len(),
        args.data.display()
    );
    println!("machine: {}", machine_line());

    let bar = ProgressBar::new(corpus.series.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut scores = Vec::with_capacity(corpus.series.len());
    let mut busy = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    let mut memory = 0usize;
    let mut skipped = 0usize;
    for s in &corpus.series {
        bar.set_message(s.name.clone());
        let mut detector = SeriesDetector::new(config.clone())?;
        let mut out = Vec::with_capacity(s.values.len());
        let (t0, c0) = (Instant::now(), thread_cpu());
        for (&ts, &v) in s.timestamps.iter().zip(&s.values) {
            let a = detector.update(ts, v);
            skipped += usize::from(a.note == Some(gpuwarden_anomaly::ScoreNote::NotFinite));
            out.push(a.score);
        }
        busy += t0.elapsed();
        cpu += thread_cpu().saturating_sub(c0);
        memory = memory.max(detector.memory_bytes());
        write_rows(&args.out, &s.name, &s.timestamps, &s.values, &out)?;
        scores.push(out);
        bar.inc(1);
    }
    bar.finish_and_clear();

    let files = corpus.file_rows();
    let results: Vec<ProfileResult> = corpus
        .profiles
        .iter()
        .map(|p| evaluate(&files, &scores, p, None))
        .collect();
    println!("{}", scoreboard(&corpus, &results)?);
    for r in &results {
        println!(
            "  {:<20} threshold {:.6}  raw {:9.4}  detections in windows {} / outside {}",
            r.profile.name, r.best.threshold, r.best.score, r.best.tp, r.best.fp
        );
    }
    println!(
        "detector cost: {:.0} ns wall per sample ({:.2} s for {rows} samples; CPU {:.2} s in 10 ms ticks), {} bytes per series{}",
        busy.as_nanos() as f64 / rows as f64,
        busy.as_secs_f64(),
        cpu.as_secs_f64(),
        memory,
        if skipped > 0 { format!(", {skipped} non-finite samples skipped") } else { String::new() }
    );
    println!(
        "per-row scores: {}/<category>/{DETECTOR}_<file>.csv",
        args.out.display()
    );
    println!("reproduce: gpuwarden bench nab --data {}", args.data.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes one series' scores in NAB's results format (`timestamp,value,anomaly_score`).
fn write_rows(out: &std::path::Path, name: &str, ts: &[i64], values: &[f64], scores: &[f64]) -> Result<()> {
    let (category, file) = name.split_once('/').unwrap_or(("", name));
    let dir = out.join(category);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text = String::with_capacity(scores.len() * 40);
    text.push_str("timestamp,value,anomaly_score\n");
    for ((t, v), s) in ts.iter().zip(values).zip(scores) {
        let _ = writeln!(text, "{},{v},{s:.6}", format_ts(*t));
    }
    let path = dir.join(format!("{DETECTOR}_{file}"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Milliseconds since the epoch back to NAB's `YYYY-MM-DD HH:MM:SS`.
fn format_ts(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Our three normalised scores among the published ones (`results/final_results.json`),
/// best standard score first.
fn scoreboard(corpus: &Corpus, ours: &[ProfileResult]) -> Result<String> {
    let published = corpus.published_final_results().unwrap_or_default();
    let names = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"];
    let mut rows: Vec<(String, [f64; 3])> = published
        .iter()
        .filter(|(_, m)| names.iter().all(|n| m.contains_key(*n)))
        .map(|(d, m)| (d.clone(), names.map(|n| m[n])))
        .collect();
    let pick = |n: &str| {
        ours.iter()
            .find(|r| r.profile.name == n)
            .map_or(f64::NAN, |r| r.normalized)
    };
    rows.push((format!("{DETECTOR} (this run)"), names.map(pick)));
    rows.sort_by(|a, b| b.1[0].total_cmp(&a.1[0]));
    let mut t = String::new();
    writeln!(t, "\n| detector | standard | low FP | low FN |\n|---|---:|---:|---:|")?;
    for (d, s) in rows {
        let d = if d.starts_with(DETECTOR) { format!("**{d}**") } else { d };
        writeln!(t, "| {d} | {:.1} | {:.1} | {:.1} |", s[0], s[1], s[2])?;
    }
    write!(
        t,
        "(published rows from results/final_results.json; NAB's README scoreboard lists Numenta HTM at 70.5 / 62.6 / 75.2)"
    )?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let s = "2014-04-10 07:15:00";
        let ms = gpuwarden_anomaly::nab::time::parse_timestamp_ms(s).unwrap();
        assert_eq!(format_ts(ms), s);
        assert_eq!(format_ts(0), "1970-01-01 00:00:00");
    }
}
