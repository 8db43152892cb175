//! Tests of the log as a whole: chain, restart, torn tail, rotation, several writers,
//! verification of each kind of tampering, and the flood bound.

use super::*;
use std::path::Path;
use std::sync::Arc;

fn entry(i: u64) -> Entry {
    Entry::new(format!("user{i}"), "incident.resolve", Outcome::Ok)
        .role("operator")
        .client("127.0.0.1:5000")
        .target(format!("inc-{i}"))
        .status(200)
}

fn write_n(dir: &Path, n: u64) {
    let log = AuditLog::open(dir).unwrap();
    for i in 1..=n {
        let r = log.append(entry(i)).unwrap();
        assert_eq!(r.seq, i);
    }
}

/// The lines of the only file.
fn lines(dir: &Path) -> (std::path::PathBuf, Vec<String>) {
    let segs = segments::list(dir).unwrap();
    assert_eq!(segs.len(), 1);
    let text = std::fs::read_to_string(&segs[0]).unwrap();
    (segs[0].clone(), text.lines().map(str::to_string).collect())
}

fn rewrite(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

#[test]
fn an_intact_log_verifies_and_continues_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 3);
    let log = AuditLog::open(dir.path()).unwrap();
    let r = log.append(entry(4)).unwrap();
    assert_eq!(r.seq, 4);
    let rep = verify(dir.path()).unwrap();
    assert!(rep.is_intact(), "{:?}", rep.problems);
    assert_eq!((rep.records, rep.first_seq, rep.last_seq), (4, Some(1), Some(4)));
    assert_eq!(rep.head.as_deref(), Some(r.hash.as_str()));
    let page = query(
        dir.path(),
        &Query {
            limit: 2,
            ..Query::default()
        },
    )
    .unwrap();
    assert_eq!(page.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4, 3]);
    assert_eq!(page.next_before, Some(3));
    let page = query(
        dir.path(),
        &Query {
            limit: 10,
            before_seq: Some(3),
            actor: Some("user1".into()),
            ..Query::default()
        },
    )
    .unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.next_before, None);
}

#[test]
fn verify_names_a_modified_record() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 5);
    let (path, mut l) = lines(dir.path());
    l[2] = l[2].replace("user3", "userX");
    rewrite(&path, &l);
    let rep = verify(dir.path()).unwrap();
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    assert!(
        matches!(&rep.problems[0], Problem::Modified { seq: 3, at } if at.line == 3),
        "{:?}",
        rep.problems
    );
    assert!(rep.problems[0].to_string().contains("record 3"), "{}", rep.problems[0]);
}

#[test]
fn verify_names_a_removed_record() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 5);
    let (path, mut l) = lines(dir.path());
    l.remove(1);
    rewrite(&path, &l);
    let rep = verify(dir.path()).unwrap();
    assert_eq!(rep.problems, vec![Problem::Missing { from: 2, to: 2 }]);
    // The first one too.
    let (path, mut l) = lines(dir.path());
    l.remove(0);
    rewrite(&path, &l);
    let rep = verify(dir.path()).unwrap();
    assert!(
        rep.problems.contains(&Problem::Missing { from: 1, to: 2 }),
        "{:?}",
        rep.problems
    );
}

#[test]
fn verify_names_a_reordered_record() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 5);
    let (path, mut l) = lines(dir.path());
    l.swap(2, 3);
    rewrite(&path, &l);
    let rep = verify(dir.path()).unwrap();
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    assert!(
        matches!(&rep.problems[0], Problem::OutOfOrder { seq: 3, after: 4, at } if at.line == 4),
        "{:?}",
        rep.problems
    );
}

#[test]
fn verify_names_an_inserted_record_even_with_a_correct_own_hash() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 4);
    let (path, mut l) = lines(dir.path());
    // A forged record 3, hashed correctly over record 2's hash, inserted before the real 3.
    let r2 = Record::from_line(&l[1]).unwrap();
    let forged = Record::seal(entry(99), 3, &r2.hash);
    l.insert(2, forged.to_line());
    rewrite(&path, &l);
    let rep = verify(dir.path()).unwrap();
    assert!(
        rep.problems
            .iter()
            .any(|p| matches!(p, Problem::Duplicate { seq: 3, at } if at.line == 4)),
        "{:?}",
        rep.problems
    );
    // A forged record replacing 3 (hash recomputed): 4 no longer links to it.
    let (path, mut l) = lines(dir.path());
    l.remove(3);
    rewrite(&path, &l);
    let rep = verify(dir.path()).unwrap();
    assert!(
        rep.problems
            .iter()
            .any(|p| matches!(p, Problem::BrokenLink { seq: 4, .. })),
        "{:?}",
        rep.problems
    );
    // Garbage is named by its line.
    let (path, mut l) = lines(dir.path());
    l.insert(1, "{not a record".into());
    rewrite(&path, &l);
    let rep = verify(dir.path()).unwrap();
    assert!(rep
        .problems
        .iter()
        .any(|p| matches!(p, Problem::Unreadable { at, .. } if at.line == 2)));
}

#[test]
fn a_torn_tail_is_cut_off_recorded_and_kept_as_evidence() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 3);
    let (path, _) = lines(dir.path());
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, b"{\"seq\":4,\"ts_ms\":1,\"act").unwrap();
    drop(f);
    let rep = verify(dir.path()).unwrap();
    assert!(
        matches!(rep.problems[..], [Problem::TornTail { bytes: 23, .. }]),
        "{:?}",
        rep.problems
    );

    let log = AuditLog::open(dir.path()).unwrap();
    let r = log.append(entry(5)).unwrap();
    // Record 4 is the note about the cut; the new record is 5.
    assert_eq!(r.seq, 5);
    let rep = verify(dir.path()).unwrap();
    assert!(rep.is_intact(), "{:?}", rep.problems);
    let page = query(
        dir.path(),
        &Query {
            action: Some("audit.torn_tail".into()),
            limit: 10,
            ..Query::default()
        },
    )
    .unwrap();
    assert_eq!(page.records.len(), 1);
    assert!(
        page.records[0].detail.as_deref().unwrap().contains("23 bytes"),
        "{:?}",
        page.records[0]
    );
    let kept: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("torn-"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(std::fs::read(kept[0].path()).unwrap(), b"{\"seq\":4,\"ts_ms\":1,\"act");
}

#[test]
fn a_tampered_end_is_refused_not_chained_over() {
    let dir = tempfile::tempdir().unwrap();
    write_n(dir.path(), 3);
    let (path, mut l) = lines(dir.path());
    l[2] = l[2].replace("user3", "userX");
    rewrite(&path, &l);
    let err = AuditLog::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("audit verify"), "{err}");
}

#[test]
fn the_chain_continues_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        max_segment_bytes: 1000,
        ..Options::default()
    };
    let log = AuditLog::open_with(dir.path(), opts.clone()).unwrap();
    for i in 1..=20 {
        log.append(entry(i)).unwrap();
    }
    drop(log);
    let segs = segments::list(dir.path()).unwrap();
    assert!(segs.len() >= 5, "{segs:?}");
    let log = AuditLog::open_with(dir.path(), opts).unwrap();
    assert_eq!(log.append(entry(21)).unwrap().seq, 21);
    let rep = verify(dir.path()).unwrap();
    assert!(rep.is_intact(), "{:?}", rep.problems);
    assert_eq!(rep.records, 21);
    // Removing a whole middle file is found.
    std::fs::remove_file(&segs[2]).unwrap();
    let rep = verify(dir.path()).unwrap();
    assert!(
        matches!(rep.problems[..], [Problem::Missing { .. }]),
        "{:?}",
        rep.problems
    );
    let page = query(
        dir.path(),
        &Query {
            limit: 100,
            ..Query::default()
        },
    )
    .unwrap();
    assert!(page.records.windows(2).all(|w| w[0].seq > w[1].seq));
}

#[test]
fn many_threads_and_two_processes_share_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    // Two independent handles stand for `run` and a CLI command in another process.
    let a = Arc::new(AuditLog::open(dir.path()).unwrap());
    let b = Arc::new(AuditLog::open(dir.path()).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let log = if t % 2 == 0 { a.clone() } else { b.clone() };
            std::thread::spawn(move || {
                for i in 0..25 {
                    log.append(entry(t * 100 + i)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let rep = verify(dir.path()).unwrap();
    assert!(rep.is_intact(), "{:?}", rep.problems);
    assert_eq!(rep.records, 200);
    assert_eq!(rep.last_seq, Some(200));
    assert_eq!(a.stats().records_written + b.stats().records_written, 200);
    assert_eq!(a.stats().write_errors, 0);
}

#[test]
fn a_flood_of_denials_is_bounded_on_disk_and_does_not_block() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        AuditLog::open_with(
            dir.path(),
            Options {
                denials: DenialLimits {
                    window_ms: 60_000,
                    max_keys: 50,
                    queue: 1024,
                },
                ..Options::default()
            },
        )
        .unwrap(),
    );
    let writer = log.spawn_writer().unwrap();
    let t0 = std::time::Instant::now();
    let n = 200_000u32;
    for i in 0..n {
        let ip = format!("10.{}.{}.{}:4444", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        log.best_effort(
            Entry::new("anonymous", "request.denied", Outcome::Denied)
                .client(ip)
                .status(403)
                .target("POST /api/v1/silences")
                .detail("cross_origin"),
        );
    }
    let per_call = t0.elapsed() / n;
    // Recording is a map update, not a write: far below a millisecond per denial even
    // on a slow debug build.
    assert!(
        per_call < std::time::Duration::from_micros(200),
        "{per_call:?} per denial"
    );
    writer.stop();
    let rep = verify(dir.path()).unwrap();
    assert!(rep.is_intact(), "{:?}", rep.problems);
    // 50 first-of-key records, their 0 repeats, 1 overflow record, 1 overflow summary.
    assert!(rep.records <= 2 * 50 + 3, "{} records", rep.records);
    let page = query(
        dir.path(),
        &Query {
            limit: 1000,
            ..Query::default()
        },
    )
    .unwrap();
    let counted: u64 = page.records.iter().map(|r| r.count).sum();
    assert_eq!(counted, u64::from(n), "every denial is counted");
    let bytes: u64 = segments::list(dir.path())
        .unwrap()
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert!(bytes < 64 << 10, "{bytes} bytes on disk");
}

#[test]
fn a_snapshot_taken_while_appending_is_a_verified_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(AuditLog::open(dir.path()).unwrap());
    log.append(entry(0)).unwrap();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 1..200 {
                log.append(entry(i)).unwrap();
            }
        })
    };
    let copy = tempfile::tempdir().unwrap();
    let rep = snapshot(dir.path(), &copy.path().join("audit")).unwrap();
    writer.join().unwrap();
    assert!(rep.is_intact(), "{:?}", rep.problems);
    assert!(rep.records >= 1 && rep.records <= 200);
    // Not into a directory that already holds a trail.
    assert!(snapshot(dir.path(), &copy.path().join("audit")).is_err());
    // The copy continues as a log of its own.
    let restored = AuditLog::open(&copy.path().join("audit")).unwrap();
    assert_eq!(restored.append(entry(999)).unwrap().seq, rep.records + 1);
}
