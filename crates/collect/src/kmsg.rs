//! Kernel-log XID / SXID reader: finds NVIDIA's `NVRM: Xid` (GPU) and
//! `nvidia-nvswitchN: SXid` (NVSwitch) reports in kernel log lines, in whatever shape the
//! log reached us, and turns them into [`KernelXid`] values and model [`Event`]s.
//!
//! dcgm-exporter only tells us the *last* XID code of a GPU; the kernel log is where the
//! driver writes every occurrence with its PCI address, the process and a message, so it
//! is the better source on hosts where we can read it.
//!
//! Shapes handled (the report itself is found anywhere in the line, so any prefix a
//! logger adds is tolerated; the prefix is only read for a timestamp):
//!
//! | source | example prefix |
//! |---|---|
//! | `dmesg` | `[  123.456789] ` (seconds since boot) |
//! | `dmesg -T` | `[Sun Feb 23 16:24:18 2025] ` (local time, no zone) |
//! | `dmesg --time-format iso` (+ `--decode`) | `kern  :warn  : 2025-01-21T04:41:44,287197+00:00 ` |
//! | `/dev/kmsg` | `4,1234,206764307,-;` (microseconds since boot) |
//! | `journalctl -k -o short-iso` | `2024-11-15T12:02:03+0000 host kernel: ` |
//! | syslog with priority | `<12>[38889.018130] ` |
//!
//! Report shapes: `NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen
//! off the bus.`, with `pid='<unknown>', name=<unknown>`, without `pid=`/`name=` (older
//! drivers), and the older address form `NVRM: Xid (0000:3b:00): 13, …`; NVSwitch:
//! `nvidia-nvswitch3: SXid (PCI:0000:c1:00.0): 28006, Non-fatal, Link 46 MC TS …` (also
//! without the colon after the device, as `/dev/kmsg` injections write it, and `SXID=`).
//!
//! A line that merely mentions "Xid" without the report's structure (code after the
//! address) is not a report and is ignored, as is every other line: parsing never fails.
//!
//! Following a live log (file with rotation, `/dev/kmsg`, `journalctl`) is in [`follow`].

pub mod follow;
mod timestamp;

pub use follow::{
    FileFollower, JournalSource, KernelLogReader, LineSource, ReaderPoll, SourcePoll, StreamSource, TimeBase,
};
pub use timestamp::KernelTimestamp;

use gpuwarden_model::{Event, EventKind, GpuUuid};
use serde::{Deserialize, Serialize};

/// Whether a report came from a GPU (XID) or an NVSwitch (SXID). The two code spaces are
/// unrelated: SXID 12028 is not an XID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XidKind {
    Xid,
    Sxid,
}

impl XidKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            XidKind::Xid => "xid",
            XidKind::Sxid => "sxid",
        }
    }
}

/// One XID or SXID report read from a kernel log line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelXid {
    pub kind: XidKind,
    pub code: u32,
    /// PCI bus id in dcgm-exporter's form (`00000000:3B:00.0`), so it can be matched
    /// against the `pci_bus_id` of a [`gpuwarden_model::GpuIdentity`]. `None` when the
    /// address in the line is not a PCI address.
    pub pci_bus_id: Option<String>,
    /// Process that triggered the XID (`pid=`), when the driver knew it.
    pub pid: Option<u32>,
    /// Process name (`name=`), when the driver knew it.
    pub process: Option<String>,
    /// The driver's text after the code and the process fields (may be empty).
    pub message: String,
    /// When the line says when it was written.
    pub timestamp: Option<KernelTimestamp>,
    /// SXID only: the NVSwitch device number (`nvidia-nvswitch3` → 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvswitch: Option<u32>,
    /// SXID only: `Fatal` → true, `Non-fatal` → false, absent when the line does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fatal: Option<bool>,
    /// SXID only: the NVLink port (`Link 46`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<u32>,
    /// The whole line as read (without the line break).
    pub raw: String,
}

/// Longest line the parser looks at. Kernel records are at most about 1 KiB; a longer
/// "line" is not a kernel message, and bounding it keeps a hostile input cheap.
pub const MAX_LINE_LEN: usize = 16 * 1024;

const XID_MARKER: &str = "NVRM: Xid";
const NVSWITCH_MARKER: &str = "nvidia-nvswitch";

/// Parses one kernel log line. `None` for every line that is not an XID/SXID report.
pub fn parse_line(line: &str) -> Option<KernelXid> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.len() > MAX_LINE_LEN {
        return None;
    }
    if let Some(at) = line.find(XID_MARKER) {
        if let Some(x) = parse_xid(line, at) {
            return Some(x);
        }
    }
    parse_sxid(line)
}

/// Parses every line of a text, keeping only the reports, with their 1-based line numbers.
pub fn parse_text(text: &str) -> Vec<(usize, KernelXid)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| parse_line(l).map(|x| (i + 1, x)))
        .collect()
}

/// `NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.`
fn parse_xid(line: &str, at: usize) -> Option<KernelXid> {
    let rest = &line[at + XID_MARKER.len()..];
    let (address, after) = parenthesised_address(rest)?;
    let (code, tail) = code_after_colon(after)?;
    let tail = tail.trim_start();
    let tail = tail.strip_prefix(',').unwrap_or(tail).trim_start();
    let (pid, process, message) = process_fields(tail);
    Some(KernelXid {
        kind: XidKind::Xid,
        code,
        pci_bus_id: normalize_pci_bus_id(address),
        pid,
        process,
        message: message.trim_end().to_string(),
        timestamp: timestamp::from_prefix(&line[..at]),
        nvswitch: None,
        fatal: None,
        link: None,
        raw: line.to_string(),
    })
}

/// `nvidia-nvswitch3: SXid (PCI:0000:c1:00.0): 28006, Non-fatal, Link 46 MC TS crumbstore MCTO (First)`
fn parse_sxid(line: &str) -> Option<KernelXid> {
    let at = line.find(NVSWITCH_MARKER)?;
    let after_dev = &line[at + NVSWITCH_MARKER.len()..];
    let digits = after_dev.bytes().take_while(u8::is_ascii_digit).count();
    let nvswitch = after_dev[..digits].parse::<u32>().ok();
    let rest = after_dev[digits..].strip_prefix(':').unwrap_or(&after_dev[digits..]);
    let rest = rest.trim_start();
    // NVIDIA writes `SXid`; some tools and docs write `SXID`.
    let rest = rest.strip_prefix("SXid").or_else(|| rest.strip_prefix("SXID"))?;
    let (pci, code, tail) = if let Some(eq) = rest.strip_prefix('=') {
        // `SXID=12028, …`: no address in the report.
        let digits = eq.bytes().take_while(u8::is_ascii_digit).count();
        (None, eq[..digits].parse::<u32>().ok()?, &eq[digits..])
    } else {
        let (address, after) = parenthesised_address(rest)?;
        let (code, tail) = code_after_colon(after)?;
        (normalize_pci_bus_id(address), code, tail)
    };
    let tail = tail.trim_start();
    let message = tail.strip_prefix(',').unwrap_or(tail).trim();
    let (fatal, after_fatal) = if let Some(r) = message.strip_prefix("Non-fatal") {
        (Some(false), r)
    } else if let Some(r) = message.strip_prefix("Fatal") {
        (Some(true), r)
    } else {
        (None, message)
    };
    let link = fatal.and_then(|_| {
        let r = after_fatal
            .trim_start()
            .strip_prefix(',')?
            .trim_start()
            .strip_prefix("Link ")?;
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        r[..n].parse::<u32>().ok()
    });
    Some(KernelXid {
        kind: XidKind::Sxid,
        code,
        pci_bus_id: pci,
        pid: None,
        process: None,
        message: message.to_string(),
        timestamp: timestamp::from_prefix(&line[..at]),
        nvswitch,
        fatal,
        link,
        raw: line.to_string(),
    })
}

/// ` (PCI:0000:3b:00): …` → (`PCI:0000:3b:00`, `: …`). Requires the opening parenthesis
/// right after the marker (one space), so prose that mentions "Xid" does not match.
fn parenthesised_address(rest: &str) -> Option<(&str, &str)> {
    let rest = rest.strip_prefix(" (")?;
    let close = rest.find(')')?;
    let address = &rest[..close];
    if address.is_empty() || address.len() > 32 {
        return None;
    }
    Some((address, &rest[close + 1..]))
}

/// `: 79, …` → (79, `, …`). The code must be followed by a comma, a space or the end of
/// the line, so `: 79abc` is not a report.
fn code_after_colon(after: &str) -> Option<(u32, &str)> {
    let after = after.strip_prefix(':')?.trim_start();
    let digits = after.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let code = after[..digits].parse::<u32>().ok()?;
    let tail = &after[digits..];
    match tail.bytes().next() {
        None | Some(b',') | Some(b' ') => Some((code, tail)),
        _ => None,
    }
}

/// `pid=1234, name=python, message` → (Some(1234), Some("python"), "message").
/// `pid='<unknown>'` and `name=<unknown>` are `None`. Either field may be missing.
fn process_fields(mut tail: &str) -> (Option<u32>, Option<String>, &str) {
    let mut pid = None;
    let mut process = None;
    if let Some(r) = tail.strip_prefix("pid=") {
        let (value, rest) = split_field(r);
        pid = value.trim_matches('\'').parse::<u32>().ok();
        tail = rest;
    }
    if let Some(r) = tail.strip_prefix("name=") {
        let (value, rest) = split_field(r);
        let value = value.trim();
        if !value.is_empty() && value != "<unknown>" && value != "'<unknown>'" {
            process = Some(value.to_string());
        }
        tail = rest;
    }
    (pid, process, tail)
}

/// Splits `value, rest` at the first `", "`; a field with no comma after it is the whole rest.
fn split_field(s: &str) -> (&str, &str) {
    match s.find(", ") {
        Some(i) => (&s[..i], &s[i + 2..]),
        None => match s.strip_suffix(',') {
            Some(v) => (v, ""),
            None => (s, ""),
        },
    }
}

/// Normalises a PCI address as the kernel log writes it (`PCI:0000:3b:00`,
/// `0000:3b:00`, `PCI:0000:06:00.0`, `3b:00.0`) to dcgm-exporter's and nvidia-smi's
/// `00000000:3B:00.0`: 8-digit domain, upper-case hex, function (0 when absent).
///
/// `None` when the text is not a PCI address.
pub fn normalize_pci_bus_id(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t.strip_prefix("PCI:").or_else(|| t.strip_prefix("pci:")).unwrap_or(t);
    let (rest, function) = match t.rsplit_once('.') {
        Some((r, f)) => (r, hex(f, 1)?),
        None => (t, 0),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (domain, bus, device) = match parts.as_slice() {
        [d, b, v] => (hex(d, 8)?, hex(b, 2)?, hex(v, 2)?),
        [b, v] => (0, hex(b, 2)?, hex(v, 2)?),
        _ => return None,
    };
    if function > 7 || device > 0x1f {
        return None;
    }
    Some(format!("{domain:08X}:{bus:02X}:{device:02X}.{function:X}"))
}

fn hex(s: &str, max_digits: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

impl KernelXid {
    /// The model event for this report, when its PCI address maps to a known GPU.
    ///
    /// `inventory` maps a normalised PCI bus id to the GPU's UUID and node. SXIDs give
    /// `None`: they are NVSwitch errors, and the model has no NVSwitch event yet (an XID
    /// event would be read against the GPU XID catalog, where the code means something
    /// else). `time` turns the line's timestamp into wall-clock milliseconds.
    pub fn to_event(&self, time: &TimeBase, inventory: &dyn Fn(&str) -> Option<(GpuUuid, String)>) -> Option<Event> {
        if self.kind != XidKind::Xid {
            return None;
        }
        let (gpu, node) = inventory(self.pci_bus_id.as_deref()?)?;
        Some(Event {
            gpu,
            node,
            ts_ms: time.wall_ms(self.timestamp),
            kind: EventKind::Xid {
                code: self.code,
                message: (!self.message.is_empty()).then(|| self.message.clone()),
                pid: self.pid,
                process: self.process.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brief_example_parses() {
        let x =
            parse_line("NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.").unwrap();
        assert_eq!(x.kind, XidKind::Xid);
        assert_eq!(x.code, 79);
        assert_eq!(x.pci_bus_id.as_deref(), Some("00000000:3B:00.0"));
        assert_eq!(x.pid, Some(1234));
        assert_eq!(x.process.as_deref(), Some("python"));
        assert_eq!(x.message, "GPU has fallen off the bus.");
        assert_eq!(x.timestamp, None);
    }

    #[test]
    fn variants() {
        let x = parse_line("[  123.456789] NVRM: Xid (0000:3b:00): 13, Graphics Exception: ESR 0x1").unwrap();
        assert_eq!((x.code, x.pid, x.process.as_deref()), (13, None, None));
        assert_eq!(x.message, "Graphics Exception: ESR 0x1");
        assert_eq!(x.timestamp, Some(KernelTimestamp::SinceBoot { us: 123_456_789 }));

        let x =
            parse_line("NVRM: Xid (PCI:0000:19:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable").unwrap();
        assert_eq!(
            (x.pid, x.process.as_deref(), x.message.as_str()),
            (None, None, "An uncorrectable")
        );

        let x = parse_line("6,1234,206764307,-;NVRM: Xid (PCI:0000:19:00): 94, pid=12, name=python3.10, Ch 0000001a")
            .unwrap();
        assert_eq!((x.pid, x.message.as_str()), (Some(12), "Ch 0000001a"));
        assert_eq!(x.timestamp, Some(KernelTimestamp::SinceBoot { us: 206_764_307 }));

        let x = parse_line("2024-11-15T12:02:03+0000 host kernel: NVRM: Xid (PCI:0000:19:00): 63, pid=7, name=a b, m")
            .unwrap();
        assert_eq!(x.process.as_deref(), Some("a b"));
        assert_eq!(
            x.timestamp,
            Some(KernelTimestamp::Utc {
                ts_ms: 1_731_672_123_000
            })
        );

        // No message at all.
        let x = parse_line("NVRM: Xid (PCI:0000:3b:00): 79").unwrap();
        assert_eq!((x.code, x.message.as_str()), (79, ""));
    }

    #[test]
    fn sxid_lines() {
        let x = parse_line("[ 1108.858286] nvidia-nvswitch0: SXid (PCI:0000:c3:00.0): 24007, Fatal, Link 28 sourcetrack timeout error (First)").unwrap();
        assert_eq!(x.kind, XidKind::Sxid);
        assert_eq!(
            (x.code, x.nvswitch, x.fatal, x.link),
            (24007, Some(0), Some(true), Some(28))
        );
        assert_eq!(x.pci_bus_id.as_deref(), Some("00000000:C3:00.0"));
        assert_eq!(x.message, "Fatal, Link 28 sourcetrack timeout error (First)");

        let x = parse_line(
            "12,6010676,3561654626948,-;nvidia-nvswitch1 SXid (PCI:0000:06:00.0): 20009, Non-fatal, Link 04",
        )
        .unwrap();
        assert_eq!(
            (x.code, x.nvswitch, x.fatal, x.link),
            (20009, Some(1), Some(false), Some(4))
        );

        let x = parse_line("nvidia-nvswitch2: SXID=12028, Non-fatal, egress non-posted PRIV error").unwrap();
        assert_eq!(
            (x.code, x.pci_bus_id.clone(), x.fatal, x.link),
            (12028, None, Some(false), None)
        );
    }

    #[test]
    fn junk_and_mentions_are_ignored() {
        for l in [
            "",
            "NVRM: Xid",
            "NVRM: Xid (PCI:0000:3b:00)",
            "NVRM: Xid (PCI:0000:3b:00): abc",
            "NVRM: Xid (PCI:0000:3b:00): 79abc",
            "NVRM: Xid errors are documented at https://docs.nvidia.com",
            "nvidia-nvswitch2: open (major=510)",
            "Rate limiting GSP RPC error prints for GPU at PCI:0000:9b:00",
        ] {
            assert_eq!(parse_line(l), None, "{l}");
        }
    }

    #[test]
    fn pci_normalisation() {
        assert_eq!(
            normalize_pci_bus_id("PCI:0000:3b:00").as_deref(),
            Some("00000000:3B:00.0")
        );
        assert_eq!(normalize_pci_bus_id("0000:9b:00").as_deref(), Some("00000000:9B:00.0"));
        assert_eq!(
            normalize_pci_bus_id("PCI:0001:06:00.1").as_deref(),
            Some("00000001:06:00.1")
        );
        assert_eq!(
            normalize_pci_bus_id("00000000:3B:00.0").as_deref(),
            Some("00000000:3B:00.0")
        );
        assert_eq!(normalize_pci_bus_id("3b:00.0").as_deref(), Some("00000000:3B:00.0"));
        assert_eq!(normalize_pci_bus_id("PCI:zz:00"), None);
        assert_eq!(normalize_pci_bus_id(""), None);
        assert_eq!(normalize_pci_bus_id("0000:3b:00.9"), None);
    }

    #[test]
    fn event_needs_a_known_gpu() {
        let x =
            parse_line("[ 10.5] NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.")
                .unwrap();
        let time = TimeBase {
            boot_time_ms: Some(1_000_000),
            now_ms: 5_000_000,
        };
        let inv = |pci: &str| (pci == "00000000:3B:00.0").then(|| (GpuUuid::new("GPU-1"), "node-a".to_string()));
        let e = x.to_event(&time, &inv).unwrap();
        assert_eq!(e.gpu.as_str(), "GPU-1");
        assert_eq!(e.node, "node-a");
        assert_eq!(e.ts_ms, 1_010_500);
        assert_eq!(
            e.kind,
            EventKind::Xid {
                code: 79,
                message: Some("GPU has fallen off the bus.".into()),
                pid: Some(1234),
                process: Some("python".into())
            }
        );
        let none = |_: &str| None;
        assert_eq!(x.to_event(&time, &none), None);
    }
}
