//! `gpuwarden xid` against the real kernel logs in `testdata/kernel-logs/`: exactly one
//! JSON line per XID/SXID report line (counted here without the parser), from a file and
//! from standard input; the table; `--follow` on a growing file; exit codes; `--help`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gpuwarden"))
}

fn logs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/kernel-logs")
}

/// A report line: `Xid (`/`SXid (` whose closing parenthesis is followed by `: ` and a
/// digit. Prose that mentions Xid does not match.
fn is_report_line(line: &str) -> bool {
    ["NVRM: Xid (", "SXid ("].iter().any(|marker| {
        line.find(marker).is_some_and(|i| {
            let rest = &line[i + marker.len()..];
            rest.find(')').is_some_and(|c| {
                let after = &rest[c + 1..];
                after.starts_with(": ") && after[2..].starts_with(|ch: char| ch.is_ascii_digit())
            })
        })
    })
}

const LOGS: [(&str, usize); 5] = [
    ("dmesg-with-xid-119.log", 5),
    ("dmesg-time-format-iso.log", 11),
    ("dmesg.decode.iso.log.0", 636),
    ("kmsg.1.log", 0),
    ("synthetic-variants.log", 9),
];

fn check_json_lines(name: &str, stdout: &str, report_lines: &[usize]) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), report_lines.len(), "{name}");
    for (l, want_line) in lines.iter().zip(report_lines) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: {e}: {l}"));
        for key in [
            "code",
            "name",
            "severity",
            "cause",
            "action",
            "pci_bus_id",
            "pid",
            "process",
            "message",
            "timestamp",
            "kind",
        ] {
            assert!(v.get(key).is_some(), "{name}: no {key} in {l}");
        }
        assert_eq!(v["line"].as_u64(), Some(*want_line as u64), "{name}");
        assert!(v["code"].is_u64());
        assert!(matches!(v["kind"].as_str(), Some("xid" | "sxid")));
        assert!(!v["name"].as_str().unwrap().is_empty());
    }
}

#[test]
fn json_has_one_line_per_report_for_every_real_log() {
    for (name, expected) in LOGS {
        let path = logs_dir().join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let report_lines: Vec<usize> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| is_report_line(l))
            .map(|(i, _)| i + 1)
            .collect();
        assert_eq!(report_lines.len(), expected, "{name}: independent count");
        let out = bin().args(["xid", "--json"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{name}: {:?}", out);
        check_json_lines(name, &String::from_utf8(out.stdout).unwrap(), &report_lines);

        // Same from standard input.
        let mut child = bin()
            .args(["xid", "--json", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let bytes = text.clone().into_bytes();
        let writer = std::thread::spawn(move || stdin.write_all(&bytes));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "{name} (stdin)");
        check_json_lines(name, &String::from_utf8(out.stdout).unwrap(), &report_lines);
    }
}

#[test]
fn json_values_for_known_lines() {
    let out = bin()
        .args(["xid", "--json"])
        .arg(logs_dir().join("dmesg-time-format-iso.log"))
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dbe = &lines[0];
    assert_eq!(dbe["code"], 48);
    assert_eq!(dbe["kind"], "xid");
    assert_eq!(dbe["pci_bus_id"], "00000000:19:00.0");
    assert_eq!(dbe["pid"], serde_json::Value::Null);
    assert_eq!(dbe["timestamp"], "2024-11-15T12:02:03.470Z");
    assert_eq!(dbe["ts_ms"], 1_731_672_123_470i64);
    assert_eq!(dbe["action"], "reset_gpu");
    let last = &lines[10];
    assert_eq!(last["code"], 94);
    assert_eq!(last["pid"], 1248209);
    assert_eq!(last["process"], "python3.10");
    assert_eq!(last["message"], "Ch 0000000f");
}

#[test]
fn table_explains_with_the_catalog() {
    let out = bin()
        .arg("xid")
        .arg(logs_dir().join("dmesg-with-xid-119.log"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 5, "{text}");
    assert!(lines[0].starts_with("TIME"));
    assert!(lines[0].contains("SEVERITY") && lines[0].contains("ACTION"));
    for l in &lines[1..] {
        assert!(l.contains(" 119 "), "{l}");
        assert!(l.contains("00000000:9B:00.0"), "{l}");
        assert!(l.contains("GSP RPC Timeout"), "{l}");
        assert!(l.contains("fatal") && l.contains("reboot"), "{l}");
    }
    assert!(lines[5].contains("gpud"));

    // A log without reports: exit 0, nothing on stdout.
    let out = bin().arg("xid").arg(logs_dir().join("kmsg.1.log")).output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn io_errors_exit_non_zero() {
    let out = bin().args(["xid", "/nonexistent/kern.log"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kern.log"));
}

#[test]
fn help_has_the_pipe_example() {
    let out = bin().args(["xid", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("dmesg | gpuwarden xid -"), "{help}");
    assert!(help.contains("--follow") && help.contains("--json"));
}

#[test]
fn follow_reports_lines_appended_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kern.log");
    std::fs::write(
        &path,
        "[ 1.0] NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=a, first\n[ 1.1] unrelated\n",
    )
    .unwrap();
    let mut child = bin()
        .args(["xid", "--json", "--follow"])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.by_ref() {
            if tx.send(l.unwrap()).is_err() {
                return;
            }
        }
    });
    let next = || {
        let v: serde_json::Value = serde_json::from_str(&rx.recv_timeout(Duration::from_secs(20)).unwrap()).unwrap();
        v["code"].as_u64().unwrap()
    };
    assert_eq!(next(), 13);
    let start = Instant::now();
    let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
    writeln!(
        f,
        "[ 2.0] NVRM: Xid (PCI:0000:3b:00): 79, pid=2, name=b, GPU has fallen off the bus."
    )
    .unwrap();
    assert_eq!(next(), 79);
    assert!(start.elapsed() < Duration::from_secs(20));
    child.kill().unwrap();
    child.wait().unwrap();
}
