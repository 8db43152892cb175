//! The kernel-log XID/SXID parser against real kernel logs (`testdata/kernel-logs/`, from
//! leptonai/gpud) and the project's synthetic variants file: every report line is found
//! (counted here by a rule independent of the parser), with exact values for several
//! lines; and no input makes the parser panic.

use gpuwarden_collect::kmsg::{parse_line, parse_text, KernelTimestamp, KernelXid, XidKind};
use proptest::prelude::*;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/kernel-logs")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The independent rule: a report is a line with `Xid (` or `SXid (` whose closing
/// parenthesis is followed by `: ` and a digit, or `SXID=` followed by a digit. Lines that
/// only mention Xid (prose, a GPU-at-PCI line) do not match.
fn is_report_line(line: &str) -> bool {
    for marker in ["NVRM: Xid (", "SXid ("] {
        if let Some(i) = line.find(marker) {
            let rest = &line[i + marker.len()..];
            if let Some(close) = rest.find(')') {
                let after = &rest[close + 1..];
                if after.starts_with(": ") && after[2..].starts_with(|c: char| c.is_ascii_digit()) {
                    return true;
                }
            }
        }
    }
    line.find("SXID=")
        .is_some_and(|i| line[i + 5..].starts_with(|c: char| c.is_ascii_digit()))
}

const REAL_LOGS: [(&str, usize); 4] = [
    ("dmesg-with-xid-119.log", 5),
    ("dmesg-time-format-iso.log", 11),
    ("dmesg.decode.iso.log.0", 636),
    ("kmsg.1.log", 0),
];

#[test]
fn every_log_in_testdata_is_covered() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "README.md")
        .collect();
    names.sort();
    let mut expected: Vec<String> = REAL_LOGS.iter().map(|(n, _)| n.to_string()).collect();
    expected.push("synthetic-variants.log".to_string());
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn every_report_line_in_the_real_logs_parses() {
    let mut total = 0;
    for (name, expected) in REAL_LOGS {
        let text = read(name);
        let independent: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| is_report_line(l))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(independent.len(), expected, "{name}: independent count");
        let parsed = parse_text(&text);
        let parsed_lines: Vec<usize> = parsed.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            parsed_lines, independent,
            "{name}: the parser finds exactly the report lines"
        );
        for (n, x) in &parsed {
            // Every real report is a GPU XID with a PCI address and a timestamp.
            assert_eq!(x.kind, XidKind::Xid, "{name}:{n}");
            assert!(x.pci_bus_id.is_some(), "{name}:{n}");
            assert!(x.timestamp.is_some(), "{name}:{n}");
            assert!(!x.message.is_empty(), "{name}:{n}");
            // The code is the number after the address, as written.
            assert!(x.raw.contains(&format!("): {}, ", x.code)), "{name}:{n}");
        }
        total += parsed.len();
    }
    assert_eq!(total, 652);
}

fn at(text: &str, line: usize) -> KernelXid {
    parse_line(text.lines().nth(line - 1).unwrap()).unwrap()
}

#[test]
fn exact_values_dmesg_ctime() {
    let text = read("dmesg-with-xid-119.log");
    let x = at(&text, 3);
    assert_eq!(x.code, 119);
    assert_eq!(x.pci_bus_id.as_deref(), Some("00000000:9B:00.0"));
    assert_eq!(x.pid, Some(2024380));
    assert_eq!(x.process.as_deref(), Some("nvidia-smi"));
    assert_eq!(
        x.message,
        "Timeout after 6s of waiting for RPC response from GPU4 GSP! Expected function 103 (GSP_RM_ALLOC) (0x2081 0x4)."
    );
    // Sun Feb 23 16:24:18 2025, no zone.
    assert_eq!(
        x.timestamp,
        Some(KernelTimestamp::Local {
            ts_ms: 1_740_327_858_000
        })
    );
    let codes: Vec<(u32, Option<String>)> = parse_text(&text)
        .into_iter()
        .map(|(_, x)| (x.code, x.process))
        .collect();
    let names: Vec<&str> = codes.iter().map(|(_, p)| p.as_deref().unwrap()).collect();
    assert!(codes.iter().all(|(c, _)| *c == 119));
    assert_eq!(
        names,
        ["nvidia-smi", "nvidia-smi", "nvidia-smi", "cache_mgr_main", "gpud"]
    );
}

#[test]
fn exact_values_dmesg_iso() {
    let text = read("dmesg-time-format-iso.log");
    let parsed = parse_text(&text);
    let codes: Vec<u32> = parsed.iter().map(|(_, x)| x.code).collect();
    assert_eq!(codes, [48, 63, 94, 94, 94, 94, 94, 94, 94, 94, 94]);
    let dbe = &parsed[0].1;
    assert_eq!(dbe.pci_bus_id.as_deref(), Some("00000000:19:00.0"));
    assert_eq!((dbe.pid, dbe.process.as_deref()), (None, None));
    assert!(dbe
        .message
        .starts_with("An uncorrectable double bit error (DBE) has been detected"));
    // 2024-11-15T12:02:03,470068+00:00
    assert_eq!(
        dbe.timestamp,
        Some(KernelTimestamp::Utc {
            ts_ms: 1_731_672_123_470
        })
    );
    let last = &parsed[10].1;
    assert_eq!(last.pid, Some(1248209));
    assert_eq!(last.process.as_deref(), Some("python3.10"));
    assert_eq!(last.message, "Ch 0000000f");
    assert_eq!(parsed[2].1.message, "Contained: SM (0x1). RST: No, D-RST: No");
}

#[test]
fn exact_values_dmesg_decode() {
    let text = read("dmesg.decode.iso.log.0");
    let parsed = parse_text(&text);
    assert_eq!(parsed.iter().filter(|(_, x)| x.code == 13).count(), 629);
    assert_eq!(parsed.iter().filter(|(_, x)| x.code == 43).count(), 7);
    assert!(parsed
        .iter()
        .all(|(_, x)| x.pci_bus_id.as_deref() == Some("00000000:38:00.0")));
    let first = &parsed[0].1;
    assert_eq!(first.code, 13);
    assert_eq!((first.pid, first.process.as_deref()), (None, None));
    assert_eq!(
        first.message,
        "Graphics SM Warp Exception on (GPC 8, TPC 5, SM 0): Out Of Range Address"
    );
    let x43 = parsed
        .iter()
        .map(|(_, x)| x)
        .find(|x| x.raw.contains("2025-01-21T04:41:44,287197+00:00"))
        .unwrap();
    assert_eq!(x43.code, 43);
    assert_eq!(x43.pid, Some(2924364));
    assert_eq!(x43.process.as_deref(), Some("pt_main_thread"));
    assert_eq!(x43.message, "Ch 00000008");
}

#[test]
fn synthetic_variants_including_sxid() {
    let text = read("synthetic-variants.log");
    let independent = text.lines().filter(|l| is_report_line(l)).count();
    let parsed = parse_text(&text);
    assert_eq!(parsed.len(), independent);
    type Row<'a> = (XidKind, u32, Option<&'a str>, Option<u32>, Option<&'a str>);
    let summary: Vec<Row> = parsed
        .iter()
        .map(|(_, x)| (x.kind, x.code, x.pci_bus_id.as_deref(), x.pid, x.process.as_deref()))
        .collect();
    use XidKind::*;
    assert_eq!(
        summary,
        [
            (Xid, 79, Some("00000000:91:00.0"), None, None),
            (Sxid, 20034, Some("00000000:06:00.0"), None, None),
            (Sxid, 20034, Some("00000000:07:00.0"), None, None),
            (Sxid, 12028, Some("00000000:08:00.0"), None, None),
            (Sxid, 20009, Some("00000000:05:00.0"), None, None),
            (Xid, 13, Some("00000000:3B:00.0"), Some(4242), Some("python")),
            (Xid, 31, Some("00000000:3B:00.0"), Some(4242), Some("python")),
            (Xid, 43, Some("00000000:3B:00.0"), None, None),
            (Xid, 63, Some("00000000:3B:00.0"), None, None),
        ]
    );
    let sx: Vec<(Option<u32>, Option<bool>, Option<u32>)> = parsed
        .iter()
        .filter(|(_, x)| x.kind == Sxid)
        .map(|(_, x)| (x.nvswitch, x.fatal, x.link))
        .collect();
    assert_eq!(
        sx,
        [
            (Some(1), Some(true), Some(48)),
            (Some(2), None, None),
            (Some(3), Some(false), Some(12)),
            (Some(0), Some(false), Some(4)),
        ]
    );
    let ts: Vec<Option<KernelTimestamp>> = parsed.iter().map(|(_, x)| x.timestamp).collect();
    assert_eq!(ts[3], Some(KernelTimestamp::SinceBoot { us: 38_889_018_130 }));
    assert_eq!(ts[4], Some(KernelTimestamp::SinceBoot { us: 3_561_654_626_948 }));
    // 2025-03-01T10:00:00+0000
    assert_eq!(
        ts[6],
        Some(KernelTimestamp::Utc {
            ts_ms: 1_740_823_200_000
        })
    );
    assert_eq!(ts[7], Some(KernelTimestamp::SinceBoot { us: 1_234_567_890 }));
    assert_eq!(
        ts[8],
        Some(KernelTimestamp::Local {
            ts_ms: 1_740_823_202_000
        })
    );
    assert!(parsed[6].1.message.starts_with("Ch 0000001a, intr 00000000. MMU Fault"));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_text(&text);
        let _ = parse_line(&text);
    }

    #[test]
    fn mangled_report_lines_never_panic(
        which in 0usize..9,
        cut in 0usize..200,
        insert in "[ -~\\p{L}]{0,8}",
    ) {
        let text = read("synthetic-variants.log");
        let reports: Vec<&str> = text.lines().filter(|l| is_report_line(l)).collect();
        let line = reports[which % reports.len()];
        let mut at = cut.min(line.len());
        while !line.is_char_boundary(at) {
            at -= 1;
        }
        let truncated = &line[..at];
        let _ = parse_line(truncated);
        let spliced = format!("{}{}{}", &line[..at], insert, &line[at..]);
        if let Some(x) = parse_line(&spliced) {
            prop_assert!(x.raw == spliced);
        }
    }
}
