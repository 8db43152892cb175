//! Crash safety for real: a child process (this test binary re-run with an environment
//! variable) appends batches and prints the index of each acknowledged one; the parent
//! SIGKILLs it mid-stream, reopens the store and checks every acknowledged batch is there.

use gpuwarden_model::{DcgmField, FieldName, GpuSamples, GpuUuid};
use gpuwarden_store::embedded::{EmbeddedOptions, EmbeddedStore};
use gpuwarden_store::Store;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

const CHILD_ENV: &str = "GPUWARDEN_STORE_CRASH_CHILD_DIR";
const GPUS: usize = 8;
const FIELDS: usize = 40;
const T0: i64 = 1_700_000_000_000;

fn options() -> EmbeddedOptions {
    // Small memtable so that seals (WAL rotation, segment write, WAL deletion) happen
    // while the child is being killed, too.
    EmbeddedOptions {
        memtable_max_samples: 20_000,
        ..EmbeddedOptions::default()
    }
}

fn gpu(g: usize) -> GpuUuid {
    GpuUuid::new(&format!("GPU-crash-{g}"))
}

fn field(f: usize) -> FieldName {
    FieldName::Dcgm(DcgmField::ALL[f])
}

/// Batch `i` from writer `w`: one row per GPU at second `i`, field value = batch index.
fn batch(w: usize, i: u64) -> Vec<GpuSamples> {
    (0..GPUS)
        .map(|g| GpuSamples {
            gpu: gpu(g),
            ts_ms: T0 + i as i64 * 1000 + w as i64,
            values: (0..FIELDS).map(|f| (field(f), (i * 1000 + f as u64) as f64)).collect(),
        })
        .collect()
}

/// The child: appends forever from two threads, printing `ACK <writer> <index>`.
#[test]
fn crash_child_appends_until_killed() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let store = Arc::new(EmbeddedStore::open(Path::new(&dir), options()).unwrap());
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (store, out) = (store.clone(), out.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    store.append_samples(&batch(w, i)).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {w} {i}").unwrap();
                    o.flush().unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        let _ = w.join();
    }
}

/// `ACK <writer> <index>` anywhere in a line: the harness prints `test NAME ... ` without
/// a newline before the child's first line.
fn parse_ack(line: &str) -> Option<(usize, u64)> {
    let (_, rest) = line.split_once("ACK ")?;
    let (w, i) = rest.split_once(' ')?;
    Some((w.parse().ok()?, i.trim().parse().ok()?))
}

#[test]
fn acknowledged_batches_survive_kill_9() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_child_appends_until_killed",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked: Vec<Vec<u64>> = vec![Vec::new(), Vec::new()];
        // Kill at a different point each round.
        let kill_after = 150 + round * 170;
        let mut seen = 0;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some((w, i)) = parse_ack(&line) {
                acked[w].push(i);
                seen += 1;
                if seen == kill_after {
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
        }
        // Acknowledgements printed before the kill landed count too.
        for line in lines {
            let Ok(line) = line else { break };
            if let Some((w, i)) = parse_ack(&line) {
                acked[w].push(i);
            }
        }
        child.wait().unwrap();

        let store = EmbeddedStore::open(dir.path(), options()).unwrap();
        for (w, idx) in acked.iter().enumerate() {
            let last = *idx.last().unwrap();
            assert_eq!(
                idx,
                &(0..=last).collect::<Vec<_>>(),
                "acks are sequential per writer {w}: {idx:?}"
            );
            for g in [0, GPUS - 1] {
                for f in [0, FIELDS - 1] {
                    let pts = store
                        .range(&gpu(g), &field(f), T0, T0 + (last as i64 + 2) * 1000, usize::MAX)
                        .unwrap();
                    let got: std::collections::HashSet<i64> = pts
                        .iter()
                        .filter(|p| (p.ts_ms - T0) % 1000 == w as i64)
                        .map(|p| p.ts_ms)
                        .collect();
                    for &i in idx {
                        let ts = T0 + i as i64 * 1000 + w as i64;
                        assert!(
                            got.contains(&ts),
                            "round {round}: writer {w} batch {i} acknowledged but lost"
                        );
                    }
                }
            }
        }
        // Data is intact, not just present.
        let pts = store.range(&gpu(3), &field(7), T0, T0 + 1000, 10).unwrap();
        assert_eq!(pts[0].value, 7.0);
        let st = store.stats().unwrap();
        let acked_total: u64 = acked.iter().map(|v| v.len() as u64).sum();
        assert!(st.samples >= acked_total * (GPUS * FIELDS) as u64);
    }
}
