//! NAB timestamps (`2014-04-10 07:15:00`, labels add `.000000`) to milliseconds since the
//! Unix epoch, read as UTC. Hand-written because it is the only date handling the crate
//! needs and a date crate would be a dependency for twenty lines.

/// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]` (a `T` separator is accepted too) into
/// milliseconds since 1970-01-01T00:00:00, treating the time as UTC. `None` when the text
/// is not of that shape.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b' ' || b[10] == b'T') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse::<i64>().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut ms = 0i64;
    if b.len() > 19 {
        if b[19] != b'.' {
            return None;
        }
        let frac = s.get(20..)?;
        if frac.is_empty() || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        // Only the first three digits matter at millisecond resolution.
        let mut digits: String = frac.chars().take(3).collect();
        while digits.len() < 3 {
            digits.push('0');
        }
        ms = digits.parse().ok()?;
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_data_and_label_forms() {
        assert_eq!(parse_timestamp_ms("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp_ms("2014-04-10 07:15:00"), Some(1_397_114_100_000));
        assert_eq!(
            parse_timestamp_ms("2014-04-10 07:15:00.000000"),
            parse_timestamp_ms("2014-04-10 07:15:00")
        );
        assert_eq!(parse_timestamp_ms("2000-03-01 00:00:00.5"), Some(951_868_800_500));
        assert_eq!(parse_timestamp_ms("2014-13-10 07:15:00"), None);
        assert_eq!(parse_timestamp_ms("nonsense"), None);
        assert_eq!(parse_timestamp_ms(""), None);
    }
}
