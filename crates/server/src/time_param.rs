//! Parsing of time query parameters: milliseconds since the epoch, RFC 3339, `now`, or
//! a duration before now such as `-1h` / `-15m`.

use gpuwarden_model::TimestampMs;

/// The forms [`parse_time`] takes, as the OpenAPI document states them: `now`,
/// milliseconds since the epoch, a duration back from now in ms/s/m/h/d (up to three
/// digits), or an RFC 3339 UTC time from 1970. Narrower than what the parser accepts
/// (any day of any month, longer durations): a client that follows the document is
/// never refused.
pub const TIME_PATTERN: &str = r"^(now|-?[0-9]{1,15}|-[0-9]{1,3}(ms|s|m|h|d)|(19[7-9][0-9]|2[0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?Z)$";

/// The schema of a time query parameter in the OpenAPI document.
pub struct TimeString;

impl utoipa::PartialSchema for TimeString {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(TIME_PATTERN))
            .description(Some(
                "A time: ms since the epoch, RFC 3339 UTC (2026-11-24T10:00:00Z), `now`, or a duration before now (`-1h`, `-15m`)",
            ))
            .into()
    }
}

impl utoipa::ToSchema for TimeString {}

/// Parses a time parameter relative to `now_ms`.
pub fn parse_time(s: &str, now_ms: TimestampMs) -> Result<TimestampMs, String> {
    let s = s.trim();
    if s == "now" {
        return Ok(now_ms);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(rest) = s.strip_prefix('-') {
        let d = humantime::parse_duration(rest).map_err(|e| format!("'{s}': {e}"))?;
        // Checked: a huge duration must be refused, not wrap around into the future.
        return i64::try_from(d.as_millis())
            .ok()
            .and_then(|ms| now_ms.checked_sub(ms))
            .ok_or_else(|| format!("'{s}' reaches too far back: use a duration of at most a few hundred years"));
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|_| {
        format!(
            "'{s}' is not a time: use milliseconds since the epoch, RFC 3339 (2026-11-24T10:00:00Z), 'now' or '-1h'"
        )
    })?;
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("'{s}' is before 1970"))?
        .as_millis();
    i64::try_from(ms).map_err(|_| format!("'{s}' is too far in the future"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ms_rfc3339_now_and_relative() {
        assert_eq!(parse_time("1700000000000", 0).unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("now", 42).unwrap(), 42);
        assert_eq!(parse_time("-1h", 3_600_000).unwrap(), 0);
        assert_eq!(parse_time("1970-01-01T00:00:01Z", 0).unwrap(), 1000);
        assert!(parse_time("yesterday-ish", 0).is_err());
    }

    /// Every form the document's pattern admits parses (the pattern is never wider than
    /// the parser).
    #[test]
    fn documented_forms_parse() {
        for s in [
            "now",
            "0",
            "-5",
            "999999999999999",
            "-999ms",
            "-1s",
            "-15m",
            "-999d",
            "1970-01-01T00:00:00Z",
            "2999-12-28T23:59:59.123456789Z",
        ] {
            assert!(parse_time(s, 1_700_000_000_000).is_ok(), "{s}");
        }
    }

    #[test]
    fn huge_relative_times_are_refused_not_wrapped() {
        let e = parse_time("-99999999999y", 1_700_000_000_000).unwrap_err();
        assert!(e.contains("too far back"), "{e}");
        assert!(parse_time("-18446744073709551615s", 0).is_err());
        assert!(parse_time("-9223372036854775807ms", -10).is_err());
    }
}
