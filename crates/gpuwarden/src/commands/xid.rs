//! `gpuwarden xid`: the XID/SXID reports in a kernel log, explained with the XID catalog
//! (meaning, severity, likely cause, recommended action), as a table or as JSON lines.
//!
//! Reads a file, standard input (`-`, e.g. `dmesg | gpuwarden xid -`), or with `--follow`
//! keeps reading (a file like `tail -F`; without a file, this host's `/dev/kmsg` or
//! `journalctl -k`). Output is written as reports are found, so a pipe shows them at once.
//!
//! Exit code 0 whatever the log says (finding XIDs is not a failure of the command); 2 on
//! an I/O error reading the log. A closed stdout (`| head`) ends the command quietly.

use crate::cli::XidArgs;
use anyhow::{Context, Result};
use gpuwarden_collect::kmsg::{
    parse_line, FileFollower, KernelLogReader, KernelTimestamp, KernelXid, ReaderPoll, StreamSource, XidKind,
};
use gpuwarden_detect::XidCatalog;
use gpuwarden_model::{Action, Severity};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

/// What the output says about one report: the catalog's entry for an XID, or the
/// built-in meaning of an SXID.
struct Meaning {
    name: String,
    description: String,
    severity: Severity,
    cause: &'static str,
    action: Action,
}

/// SXIDs are NVSwitch errors, with codes unrelated to the GPU XID catalog. The driver
/// marks each one fatal or non-fatal; NVIDIA's Fabric Manager guide says a fatal one
/// leaves the fabric unusable until the GPUs and NVSwitches are reset (in practice a
/// node reboot), and a non-fatal one needs no action beyond watching for repeats. Lines
/// with neither mark continue the report before them (engine instance, data words).
fn sxid_meaning(x: &KernelXid) -> Meaning {
    let (name, severity, action) = match x.fatal {
        Some(true) => ("NVSwitch fatal error", Severity::Critical, Action::Reboot),
        Some(false) => ("NVSwitch non-fatal error", Severity::Warning, Action::None),
        None => ("NVSwitch error detail", Severity::Info, Action::None),
    };
    Meaning {
        name: name.to_string(),
        description: "An error reported by an NVSwitch (SXid); see NVIDIA's Fabric Manager user guide for the code."
            .to_string(),
        severity,
        cause: "hardware",
        action,
    }
}

fn meaning(catalog: &XidCatalog, x: &KernelXid) -> Meaning {
    match x.kind {
        XidKind::Xid => {
            let e = catalog.lookup_or_default(x.code);
            Meaning {
                name: e.name.clone(),
                description: e.description.clone(),
                severity: e.severity,
                cause: e.cause.as_str(),
                action: e.action,
            }
        }
        XidKind::Sxid => sxid_meaning(x),
    }
}

pub fn xid(args: XidArgs) -> Result<ExitCode> {
    let catalog = XidCatalog::builtin();
    let stdout = io::stdout();
    let mut out = Printer {
        out: io::BufWriter::new(stdout.lock()),
        json: args.json,
        header_done: false,
        flush_each: args.follow,
        reports: 0,
    };
    let result = if args.follow {
        follow(&args, &catalog, &mut out)
    } else {
        read_once(&args, &catalog, &mut out)
    };
    let result = result.and_then(|()| out.finish());
    if result.is_ok() && out.reports == 0 && !args.json {
        eprintln!("no XID or SXID reports found");
    }
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// Reads a file or stdin to its end.
fn read_once(args: &XidArgs, catalog: &XidCatalog, out: &mut Printer<impl Write>) -> Result<()> {
    let input = args.input.as_deref().unwrap_or("-");
    let reader: Box<dyn Read> = if input == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(std::fs::File::open(input).with_context(|| format!("cannot open {input}"))?)
    };
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    let mut lineno = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {input}"))?;
        if n == 0 {
            return Ok(());
        }
        lineno += 1;
        if let Some(x) = parse_line(&String::from_utf8_lossy(&buf)) {
            out.report(lineno, &x, &meaning(catalog, &x))?;
        }
    }
}

/// Keeps reading until the source ends (stdin closed) or the process is stopped.
fn follow(args: &XidArgs, catalog: &XidCatalog, out: &mut Printer<impl Write>) -> Result<()> {
    let mut reader = match args.input.as_deref() {
        Some("-") => KernelLogReader::new(Box::new(StreamSource::stdin())),
        Some(path) => KernelLogReader::new(Box::new(
            FileFollower::open(path, true).with_context(|| format!("cannot open {path}"))?,
        )),
        None => KernelLogReader::open_auto(None)
            .context("no kernel log to follow: /dev/kmsg is not readable and journalctl is not usable")?,
    };
    tracing::info!(source = %reader.describe(), "following the kernel log");
    out.header()?;
    loop {
        match reader
            .poll(Duration::from_secs(1))
            .with_context(|| format!("reading {}", reader.describe()))?
        {
            ReaderPoll::Xid(x) => out.report(reader.lines_read(), &x, &meaning(catalog, &x))?,
            ReaderPoll::Idle => out.out.flush()?,
            ReaderPoll::End => return Ok(()),
        }
    }
}

struct Printer<W: Write> {
    out: W,
    json: bool,
    header_done: bool,
    flush_each: bool,
    reports: u64,
}

impl<W: Write> Printer<W> {
    fn header(&mut self) -> Result<()> {
        if !self.json && !self.header_done {
            writeln!(
                self.out,
                "{:<32} {:<5} {:<6} {:<9} {:<20} {:<12} {:<17} {:<9} {:<16} NAME — MESSAGE",
                "TIME", "KIND", "CODE", "SEVERITY", "ACTION", "CAUSE", "PCI BUS ID", "PID", "PROCESS"
            )?;
            self.header_done = true;
        }
        Ok(())
    }

    fn report(&mut self, line: u64, x: &KernelXid, m: &Meaning) -> Result<()> {
        self.reports += 1;
        if self.json {
            let v = serde_json::json!({
                "kind": x.kind.as_str(),
                "code": x.code,
                "name": m.name,
                "description": m.description,
                "severity": m.severity.as_str(),
                "cause": m.cause,
                "action": m.action.as_str(),
                "pci_bus_id": x.pci_bus_id,
                "pid": x.pid,
                "process": x.process,
                "message": x.message,
                "timestamp": x.timestamp.map(format_timestamp),
                "ts_ms": match x.timestamp {
                    Some(KernelTimestamp::Utc { ts_ms }) => Some(ts_ms),
                    _ => None,
                },
                "since_boot_s": match x.timestamp {
                    Some(KernelTimestamp::SinceBoot { us }) => Some(us as f64 / 1e6),
                    _ => None,
                },
                "nvswitch": x.nvswitch,
                "fatal": x.fatal,
                "link": x.link,
                "line": line,
            });
            writeln!(self.out, "{v}")?;
        } else {
            self.header()?;
            let dash = || "-".to_string();
            writeln!(
                self.out,
                "{:<32} {:<5} {:<6} {:<9} {:<20} {:<12} {:<17} {:<9} {:<16} {} — {}",
                x.timestamp.map(format_timestamp).unwrap_or_else(dash),
                x.kind.as_str(),
                x.code,
                m.severity.as_str(),
                m.action.as_str(),
                m.cause,
                x.pci_bus_id.clone().unwrap_or_else(dash),
                x.pid.map(|p| p.to_string()).unwrap_or_else(dash),
                x.process.clone().unwrap_or_else(dash),
                m.name,
                x.message,
            )?;
        }
        if self.flush_each {
            self.out.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

/// `2024-11-15T12:02:03.470Z`, `2025-02-23T16:24:18.000 (local)`, `boot+123.456789s`.
fn format_timestamp(ts: KernelTimestamp) -> String {
    match ts {
        KernelTimestamp::Utc { ts_ms } => format!("{}Z", civil(ts_ms)),
        KernelTimestamp::Local { ts_ms } => format!("{} (local)", civil(ts_ms)),
        KernelTimestamp::SinceBoot { us } => format!("boot+{}.{:06}s", us / 1_000_000, us % 1_000_000),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmm` (UTC civil time).
fn civil(ts_ms: i64) -> String {
    let days = ts_ms.div_euclid(86_400_000);
    let ms_of_day = ts_ms.rem_euclid(86_400_000);
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
    let (h, rem) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
    let (mi, rem) = (rem / 60_000, rem % 60_000);
    format!(
        "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{:02}.{:03}",
        rem / 1000,
        rem % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format() {
        assert_eq!(
            format_timestamp(KernelTimestamp::Utc {
                ts_ms: 1_731_672_123_470
            }),
            "2024-11-15T12:02:03.470Z"
        );
        assert_eq!(
            format_timestamp(KernelTimestamp::Local {
                ts_ms: 1_740_327_858_000
            }),
            "2025-02-23T16:24:18.000 (local)"
        );
        assert_eq!(
            format_timestamp(KernelTimestamp::SinceBoot { us: 123_000_456 }),
            "boot+123.000456s"
        );
        assert_eq!(civil(0), "1970-01-01T00:00:00.000");
        assert_eq!(civil(951_782_400_000), "2000-02-29T00:00:00.000");
    }

    #[test]
    fn sxid_meanings() {
        let x = parse_line("nvidia-nvswitch0: SXid (PCI:0000:c3:00.0): 24007, Fatal, Link 28 x").unwrap();
        let m = meaning(&XidCatalog::builtin(), &x);
        assert_eq!((m.severity, m.action), (Severity::Critical, Action::Reboot));
        let x = parse_line("NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=p, GPU has fallen off the bus.").unwrap();
        let m = meaning(&XidCatalog::builtin(), &x);
        assert_eq!((m.severity, m.action), (Severity::Fatal, Action::Reboot));
    }
}
