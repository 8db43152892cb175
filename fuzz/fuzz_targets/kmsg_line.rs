//! Kernel log lines (dmesg in its time formats, /dev/kmsg records, journalctl, syslog):
//! `kmsg::parse_text` and `kmsg::parse_line` on the text as the readers hand it over
//! (lossy UTF-8, as `gpuwarden xid` and the followers decode it), the PCI address
//! normaliser, and what a report feeds next: `KernelXid::to_event` with a time base
//! and an inventory that knows every address, as the agent's kernel-log source does.

#![no_main]

use gpuwarden_collect::kmsg::{self, KernelTimestamp, TimeBase, XidKind};
use gpuwarden_model::{EventKind, GpuUuid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let reports = kmsg::parse_text(&text);
    let lines: Vec<&str> = text.lines().collect();
    assert!(reports.len() <= lines.len());
    let time = TimeBase {
        boot_time_ms: Some(1_700_000_000_000),
        now_ms: 1_735_689_600_000,
    };
    let inventory = |pci: &str| Some((GpuUuid::new(&format!("GPU-{pci}")), "node-1".to_string()));
    for (lineno, x) in &reports {
        let line = lines[lineno - 1];
        // parse_text is parse_line on each line.
        assert_eq!(kmsg::parse_line(line).as_ref(), Some(x));
        let bare = line.strip_suffix('\n').unwrap_or(line);
        assert_eq!(x.raw, bare.strip_suffix('\r').unwrap_or(bare));
        if let Some(pci) = &x.pci_bus_id {
            // Normalised form `DDDDDDDD:BB:DD.F`, and normalising it again is a no-op.
            assert_eq!(pci.len(), 16, "{pci}");
            assert_eq!(kmsg::normalize_pci_bus_id(pci).as_deref(), Some(pci.as_str()));
        }
        if let Some(KernelTimestamp::Utc { ts_ms } | KernelTimestamp::Local { ts_ms }) = x.timestamp {
            // civil_ms accepts years 1970..=9999 only (a zone may move it a day).
            assert!((-86_400_000..=253_402_387_200_000).contains(&ts_ms), "{ts_ms}");
        }
        match (x.kind, x.to_event(&time, &inventory)) {
            (XidKind::Sxid, event) => assert!(event.is_none()),
            (XidKind::Xid, Some(event)) => {
                let EventKind::Xid { code, .. } = event.kind else {
                    panic!("an XID report became {:?}", event.kind)
                };
                assert_eq!(code, x.code);
            }
            (XidKind::Xid, None) => assert!(x.pci_bus_id.is_none()),
        }
    }
    // Each line alone, with the line break the followers strip or keep. (parse_line
    // strips one `\n` and one `\r`: a line that itself ends in `\r` keeps one more.)
    for line in lines.iter().take(64) {
        assert_eq!(kmsg::parse_line(&format!("{line}\n")), kmsg::parse_line(line));
        if !line.ends_with('\r') {
            assert_eq!(kmsg::parse_line(&format!("{line}\r\n")), kmsg::parse_line(line));
        }
    }
});
