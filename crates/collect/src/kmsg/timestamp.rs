//! Timestamps in front of kernel log lines: seconds since boot (`dmesg`, `/dev/kmsg`),
//! ISO 8601 with a zone (`dmesg --time-format iso`, `journalctl -o short-iso`), and the
//! zone-less `dmesg -T` form.
//!
//! Hand-written rather than a date crate: the shapes are few and fixed, and the parser
//! must never fail (a timestamp it cannot read is simply absent).

use gpuwarden_model::TimestampMs;
use serde::{Deserialize, Serialize};

/// When a kernel log line says it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "clock", rename_all = "snake_case")]
pub enum KernelTimestamp {
    /// Microseconds since boot (`[  123.456789]`, `/dev/kmsg`'s third field). Needs the
    /// host's boot time to become wall-clock time.
    SinceBoot { us: u64 },
    /// Wall-clock time with a known zone, as UTC milliseconds.
    Utc { ts_ms: TimestampMs },
    /// Wall-clock time without a zone (`dmesg -T`: the host's local time), read as if it
    /// were UTC. Exact on the many GPU hosts that run in UTC, off by the zone elsewhere.
    Local { ts_ms: TimestampMs },
}

/// Reads the timestamp from the text in front of a report. `None` when there is none.
pub(crate) fn from_prefix(prefix: &str) -> Option<KernelTimestamp> {
    let p = prefix.trim();
    // Syslog priority `<12>`.
    let p = match p.strip_prefix('<').and_then(|r| r.split_once('>')) {
        Some((prio, rest)) if !prio.is_empty() && prio.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => p,
    };
    if let Some(ts) = kmsg_header(p) {
        return Some(ts);
    }
    for token in p.split_whitespace() {
        if let Some(ts) = iso8601(token) {
            return Some(ts);
        }
    }
    let open = p.find('[')?;
    let close = open + p[open..].find(']')?;
    let inside = p[open + 1..close].trim();
    seconds_since_boot(inside).or_else(|| ctime(inside))
}

/// `/dev/kmsg` record header `priority,sequence,microseconds,flags;` (the `;` is where
/// the caller's prefix ends, so it is at the end of `p` or missing).
fn kmsg_header(p: &str) -> Option<KernelTimestamp> {
    let header = p.strip_suffix(';').unwrap_or(p);
    let mut fields = header.split(',');
    let prio = fields.next()?;
    let seq = fields.next()?;
    let us = fields.next()?;
    if !p.ends_with(';')
        || [prio, seq, us]
            .iter()
            .any(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    Some(KernelTimestamp::SinceBoot { us: us.parse().ok()? })
}

/// `123.456789` → microseconds since boot.
fn seconds_since_boot(s: &str) -> Option<KernelTimestamp> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || secs.len() > 12 || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let us = secs.parse::<u64>().ok()? * 1_000_000 + fraction(frac, 6)?;
    Some(KernelTimestamp::SinceBoot { us })
}

/// The first `digits` digits of a fraction as an integer (`"5"` with 6 → 500000).
fn fraction(frac: &str, digits: usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..digits {
        let d = frac.as_bytes().get(i).copied().unwrap_or(b'0');
        if !d.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(d - b'0');
    }
    Some(v)
}

/// `2025-01-21T04:41:44,287197+00:00`, `2024-11-15T12:02:03+0000`, `…Z`; without a zone
/// the time is [`KernelTimestamp::Local`].
fn iso8601(t: &str) -> Option<KernelTimestamp> {
    let b = t.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (y, mo, d, h, mi, s) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = t.get(19..)?;
    let mut ms = 0;
    if let Some(r) = rest.strip_prefix('.').or_else(|| rest.strip_prefix(',')) {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        ms = fraction(&r[..n], 3)? as i64;
        rest = &r[n..];
    }
    let local = civil_ms(y, mo, d, h, mi, s)? + ms;
    let offset_min = match rest {
        "" => return Some(KernelTimestamp::Local { ts_ms: local }),
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            // `+HH:MM` or `+HHMM`, a real offset (hours below 24, minutes below 60).
            let z = &rest[1..];
            let (hh, mm) = match z.len() {
                4 => (z.get(..2)?, z.get(2..)?),
                5 if z.as_bytes()[2] == b':' => (z.get(..2)?, z.get(3..)?),
                _ => return None,
            };
            if !(hh.bytes().chain(mm.bytes()).all(|c| c.is_ascii_digit())) {
                return None;
            }
            let (hh, mm): (i64, i64) = (hh.parse().ok()?, mm.parse().ok()?);
            if hh > 23 || mm > 59 {
                return None;
            }
            sign * (hh * 60 + mm)
        }
    };
    Some(KernelTimestamp::Utc {
        ts_ms: local - offset_min * 60_000,
    })
}

/// `Sun Feb 23 16:24:18 2025` (`dmesg -T`), local time.
fn ctime(s: &str) -> Option<KernelTimestamp> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_dow, mon, day, hms, year] = parts.as_slice() else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mo = MONTHS.iter().position(|m| m == mon)? as i64 + 1;
    let mut hms = hms.split(':');
    let mut next = || -> Option<i64> { hms.next()?.parse().ok() };
    let (h, mi, sec) = (next()?, next()?, next()?);
    let ts_ms = civil_ms(year.parse().ok()?, mo, day.parse().ok()?, h, mi, sec)?;
    Some(KernelTimestamp::Local { ts_ms })
}

/// Milliseconds since the epoch of a UTC civil time; `None` for out-of-range fields.
pub(crate) fn civil_ms(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Option<TimestampMs> {
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..=60).contains(&s) {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + s * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(
            from_prefix("[  123.456]"),
            Some(KernelTimestamp::SinceBoot { us: 123_456_000 })
        );
        assert_eq!(
            from_prefix("<12>[38889.018130] "),
            Some(KernelTimestamp::SinceBoot { us: 38_889_018_130 })
        );
        assert_eq!(
            from_prefix("6,3964,206764307,-;"),
            Some(KernelTimestamp::SinceBoot { us: 206_764_307 })
        );
        // 2025-01-21T04:41:44.287Z
        assert_eq!(
            from_prefix("kern  :warn  : 2025-01-21T04:41:44,287197+00:00 "),
            Some(KernelTimestamp::Utc {
                ts_ms: 1_737_434_504_287
            })
        );
        assert_eq!(
            from_prefix("2025-01-21T06:41:44+0200 host kernel: "),
            Some(KernelTimestamp::Utc {
                ts_ms: 1_737_434_504_000
            })
        );
        assert_eq!(
            from_prefix("[Sun Feb 23 16:24:18 2025] "),
            Some(KernelTimestamp::Local {
                ts_ms: 1_740_327_858_000
            })
        );
        assert_eq!(from_prefix("Nov 15 12:02:03 host kernel: "), None);
        assert_eq!(from_prefix(""), None);
        assert_eq!(from_prefix("[abc]"), None);
    }

    // Caught by the `kmsg_line` fuzz target's timestamp range check: an offset of
    // `+99:99` (or `+0:0:00`) was accepted and moved the time by more than four days.
    #[test]
    fn fuzz_zone_offset_must_be_a_real_offset() {
        for bad in [
            "+99:99", "+2400", "+0060", "+0:0:00", "+00:0:0", "+12:3", "+1:30", "-:0000",
        ] {
            assert_eq!(
                from_prefix(&format!("1970-01-01T00:00:00{bad} host kernel: ")),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            from_prefix("1970-01-01T10:30:00+10:30 "),
            Some(KernelTimestamp::Utc { ts_ms: 0 })
        );
        assert_eq!(
            from_prefix("1970-01-01T00:00:00-2359 "),
            Some(KernelTimestamp::Utc { ts_ms: 86_340_000 })
        );
    }
}
