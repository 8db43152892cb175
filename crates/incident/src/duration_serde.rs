//! Serde for config durations: humantime strings (`"10m"`, `"1h 30m"`, `"90s"`) or an
//! integer number of milliseconds. Written back as a humantime string.

use serde::{de, Deserializer, Serializer};
use std::fmt;
use std::time::Duration;

/// Longest duration accepted (about 100 years): anything longer is a typo, and refusing
/// it keeps every later conversion to milliseconds (`i64`) far from overflow.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn bounded<E: de::Error>(d: Duration, shown: &dyn fmt::Display) -> Result<Duration, E> {
    if d > MAX {
        return Err(E::custom(format!(
            "invalid duration {shown}: longer than the limit of 100 years"
        )));
    }
    Ok(d)
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"10m\" or \"90s\", or an integer number of milliseconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        let d = humantime::parse_duration(v).map_err(|e| E::custom(format!("invalid duration {v:?}: {e}")))?;
        bounded(d, &format_args!("{v:?}"))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        bounded(Duration::from_millis(v), &v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_millis)
            .map_err(|_| E::custom(format!("invalid duration {v}: must not be negative")))
            .and_then(|d| bounded(d, &v))
    }
}

/// A duration as milliseconds of data time, saturating (config durations are small).
pub fn as_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[derive(serde::Deserialize)]
    struct T {
        #[serde(with = "super")]
        d: Duration,
    }

    #[test]
    fn huge_durations_are_refused() {
        let e = serde_json::from_str::<T>(r#"{"d":"99999999999y"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("100 years"), "{e}");
        assert!(serde_json::from_str::<T>(r#"{"d":18446744073709551615}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"d":-5}"#).is_err());
        assert_eq!(
            serde_json::from_str::<T>(r#"{"d":"90s"}"#).unwrap().d,
            Duration::from_secs(90)
        );
    }
}
