//! `gpuwarden bench nab`: the streaming anomaly detector on a labelled corpus — the
//! Numenta Anomaly Benchmark by default, or any corpus in NAB's layout.
//!
//! Every series is fed to a fresh [`SeriesDetector`] with the default (product)
//! configuration, one sample at a time, no look-ahead, and to NAB's windowed-Gaussian
//! reference detector ([`WindowedGaussian`]) in the same run, so every figure has its
//! baseline beside it. Both are scored by the Rust NAB scorer:
//!
//! - **whole corpus**: one threshold per profile chosen on the whole corpus, as NAB does
//!   (in-sample: the figure NAB's scoreboard holds);
//! - **held out**: the series split in two halves ([`Corpus::halves`]); the threshold
//!   chosen on one half scores the other, both ways. Our detector's *defaults* were chosen
//!   on all of NAB, so on NAB this holds out the threshold only; on a corpus it never saw,
//!   both rows are honest.
//!
//! Detector cost is measured around `update` only: file reading and scoring are excluded.

use super::cpu::thread_cpu;
use super::machine_line;
use crate::cli::BenchNabArgs;
use anyhow::{Context, Result};
use gpuwarden_anomaly::baseline::{as_nab_stores_it, WindowedGaussian};
use gpuwarden_anomaly::nab::{evaluate, sweep_best_threshold, Corpus, FileRows, Profile, ProfileResult};
use gpuwarden_anomaly::{SeriesConfig, SeriesDetector};
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The names our rows carry in the results layout and the tables.
const DETECTOR: &str = "gpuwarden";
const BASELINE: &str = "windowedGaussian";

/// One detector's per-row scores over the corpus, in corpus order.
struct Run {
    name: &'static str,
    scores: Vec<Vec<f64>>,
}

pub fn nab(args: BenchNabArgs) -> Result<ExitCode> {
    let corpus = Corpus::load(&args.data).with_context(|| format!("loading the corpus at {}", args.data.display()))?;
    // Read before the long run, so a malformed file fails now rather than after it.
    let published = corpus.published_final_results()?;
    let rows: usize = corpus.series.iter().map(|s| s.values.len()).sum();
    let files = corpus.file_rows();
    let scored_windows: u32 = files.iter().map(|f| f.scored_windows).sum();
    println!(
        "corpus: {} — {} series, {rows} rows, {} labelled windows ({scored_windows} after probation){}",
        args.data.display(),
        corpus.series.len(),
        corpus.windows(),
        if published.is_some() {
            ", published results present"
        } else {
            ", no published results"
        }
    );
    if scored_windows == 0 {
        anyhow::bail!(
            "{}: no labelled window lies after the probation period (the first 15% of each file), \
             so nothing can be scored; check labels/combined_windows.json",
            args.data.display()
        );
    }
    println!("machine: {}", machine_line());

    let bar = ProgressBar::new(corpus.series.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let config = SeriesConfig::default();
    let mut ours = Vec::with_capacity(corpus.series.len());
    let mut baseline = Vec::with_capacity(corpus.series.len());
    let (mut busy, mut cpu, mut memory, mut skipped) = (Duration::ZERO, Duration::ZERO, 0usize, 0usize);
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
        ours.push(out);
        // NAB scored this detector from its result files, whose scores carry 12 significant
        // digits; its detections are the rows that print as 1.0 (see `as_nab_stores_it`).
        let mut wg = WindowedGaussian::default();
        baseline.push(s.values.iter().map(|&v| as_nab_stores_it(wg.update(v))).collect());
        bar.inc(1);
    }
    bar.finish_and_clear();
    let runs = [
        Run {
            name: DETECTOR,
            scores: ours,
        },
        Run {
            name: BASELINE,
            scores: baseline,
        },
    ];

    let whole: Vec<Vec<ProfileResult>> = runs
        .iter()
        .map(|r| {
            corpus
                .profiles
                .iter()
                .map(|p| evaluate(&files, &r.scores, p, None))
                .collect()
        })
        .collect();
    println!("\n{}", whole_table(&corpus, &runs, &whole));
    println!("{}", held_out_table(&corpus, &files, &runs));
    if let Some(published) = &published {
        println!("{}", scoreboard(published, &whole[0]));
    }
    println!(
        "detector cost ({DETECTOR}): {:.0} ns wall per sample ({:.2} s for {rows} samples; CPU {:.2} s in 10 ms ticks), {} bytes per series{}",
        busy.as_nanos() as f64 / rows as f64,
        busy.as_secs_f64(),
        cpu.as_secs_f64(),
        memory,
        if skipped > 0 { format!(", {skipped} non-finite samples skipped") } else { String::new() }
    );
    if let Some(out) = &args.out {
        for r in &runs {
            for (s, scores) in corpus.series.iter().zip(&r.scores) {
                write_rows(out, r.name, &s.name, &s.timestamps, &s.values, scores)?;
            }
        }
        println!(
            "per-row scores: {}/<detector>/<category>/<detector>_<file>.csv",
            out.display()
        );
    }
    println!("reproduce: gpuwarden bench nab --data {}", args.data.display());
    Ok(ExitCode::SUCCESS)
}

/// Each detector's normalised score per profile on the whole corpus, with the windows it
/// caught at the standard profile's threshold.
fn whole_table(corpus: &Corpus, runs: &[Run], whole: &[Vec<ProfileResult>]) -> String {
    let mut t = String::from("whole corpus (threshold chosen on all of it, as NAB's scoreboard):\n");
    let _ = write!(t, "| detector |");
    for p in &corpus.profiles {
        let _ = write!(t, " {} |", p.name);
    }
    let _ = writeln!(t, " windows caught (standard) | detections outside windows (rows) |");
    let _ = writeln!(t, "|---|{}---:|---:|", "---:|".repeat(corpus.profiles.len()));
    for (r, results) in runs.iter().zip(whole) {
        let _ = write!(t, "| {} |", r.name);
        for res in results {
            let _ = write!(t, " {:.1} |", res.normalized);
        }
        let std = &results[0];
        let _ = writeln!(
            t,
            " {} / {} | {} |",
            std.best.windows_detected, std.windows_scored, std.best.fp
        );
    }
    t
}

/// The held-out protocol: threshold chosen on one half, scored on the other, both ways,
/// for every detector and profile.
fn held_out_table(corpus: &Corpus, files: &[FileRows], runs: &[Run]) -> String {
    let (a, b) = corpus.halves();
    let mut t = format!(
        "held out (series split {} / {} within each category; threshold chosen on one half, scored on the other):\n",
        a.len(),
        b.len()
    );
    let _ = writeln!(
        t,
        "| detector | profile | A→B | B→A | mean | windows caught (A→B + B→A) |\n|---|---|---:|---:|---:|---:|"
    );
    for r in runs {
        for p in &corpus.profiles {
            let ab = held_out(files, &r.scores, p, &a, &b);
            let ba = held_out(files, &r.scores, p, &b, &a);
            let _ = writeln!(
                t,
                "| {} | {} | {:.1} | {:.1} | {:.1} | {} / {} |",
                r.name,
                p.name,
                ab.normalized,
                ba.normalized,
                (ab.normalized + ba.normalized) / 2.0,
                ab.best.windows_detected + ba.best.windows_detected,
                ab.windows_scored + ba.windows_scored
            );
        }
    }
    t
}

/// Chooses the threshold on `choose` and scores `score` with it (normalised on `score`).
fn held_out(files: &[FileRows], scores: &[Vec<f64>], p: &Profile, choose: &[usize], score: &[usize]) -> ProfileResult {
    let pick = |ix: &[usize]| -> (Vec<FileRows>, Vec<Vec<f64>>) {
        (
            ix.iter().map(|&i| files[i].clone()).collect(),
            ix.iter().map(|&i| scores[i].clone()).collect(),
        )
    };
    let (cf, cs) = pick(choose);
    let threshold = sweep_best_threshold(&cf, &cs, p).threshold;
    let (sf, ss) = pick(score);
    evaluate(&sf, &ss, p, Some(threshold))
}

/// Writes one series' scores in NAB's results format (`timestamp,value,anomaly_score`).
fn write_rows(
    out: &std::path::Path,
    detector: &str,
    name: &str,
    ts: &[i64],
    values: &[f64],
    scores: &[f64],
) -> Result<()> {
    let (category, file) = name.split_once('/').unwrap_or(("", name));
    let dir = out.join(detector).join(category);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text = String::with_capacity(scores.len() * 40);
    text.push_str("timestamp,value,anomaly_score\n");
    for ((t, v), s) in ts.iter().zip(values).zip(scores) {
        let _ = writeln!(text, "{},{v},{s:.12}", format_ts(*t));
    }
    let path = dir.join(format!("{detector}_{file}"));
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

/// Our three whole-corpus scores among the published ones (`results/final_results.json`),
/// best standard score first.
fn scoreboard(published: &gpuwarden_anomaly::nab::corpus::PublishedResults, ours: &[ProfileResult]) -> String {
    let names = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"];
    let mut rows: Vec<(String, [f64; 3])> = published
        .iter()
        .filter(|(_, m)| names.iter().all(|n| m.contains_key(*n)))
        .map(|(d, m)| (format!("{d} (published)"), names.map(|n| m[n])))
        .collect();
    let pick = |n: &str| {
        ours.iter()
            .find(|r| r.profile.name == n)
            .map_or(f64::NAN, |r| r.normalized)
    };
    rows.push((format!("**{DETECTOR} (this run)**"), names.map(pick)));
    rows.sort_by(|a, b| b.1[0].total_cmp(&a.1[0]));
    let mut t =
        String::from("published scoreboard of this corpus (results/final_results.json), whole-corpus figures:\n");
    let _ = writeln!(t, "| detector | standard | low FP | low FN |\n|---|---:|---:|---:|");
    for (d, s) in rows {
        let _ = writeln!(t, "| {d} | {:.1} | {:.1} | {:.1} |", s[0], s[1], s[2]);
    }
    t
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
