//! The line-by-line scanner behind [`parse`].
//!
//! The body is validated as UTF-8 once, split into lines with `memchr`, and each line is
//! scanned byte by byte. Every slice boundary the scanner takes is the position of an
//! ASCII delimiter (or a line end), so slicing the `&str` can never split a character.

use super::error::{snippet, Found, ParseError};
use super::limits::Limits;
use super::sample::{Label, MetricType, ParseSummary, PromSample};
use std::borrow::Cow;
use std::collections::HashMap;

/// Parses a text exposition body, calling `on_sample` once per sample line, in order.
///
/// The sample passed to the callback is reused for the next line: names and label values
/// borrow from `input` (clone the sample to keep it). The first error stops the parse;
/// samples before it have already been delivered, so a caller that needs all-or-nothing
/// should collect first and commit after `Ok`.
pub fn parse<'a>(
    input: &'a [u8],
    limits: &Limits,
    mut on_sample: impl FnMut(&PromSample<'a>),
) -> Result<ParseSummary, ParseError> {
    if input.len() > limits.max_body_bytes {
        return Err(ParseError::BodyTooLarge {
            len: input.len(),
            limit: limits.max_body_bytes,
        });
    }
    let text = std::str::from_utf8(input).map_err(|e| invalid_utf8(input, e.valid_up_to()))?;
    let mut parser = Parser {
        limits,
        line: 0,
        summary: ParseSummary::default(),
        sample: PromSample::default(),
        current_family: None,
        families: HashMap::new(),
    };
    parser.run(text, &mut on_sample)?;
    Ok(parser.summary)
}

/// Locates the first invalid byte by line and column; only runs on the error path.
fn invalid_utf8(input: &[u8], valid_up_to: usize) -> ParseError {
    let before = &input[..valid_up_to];
    let line = 1 + memchr::memchr_iter(b'\n', before).count();
    let line_start = memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
    ParseError::InvalidUtf8 {
        line,
        column: valid_up_to - line_start + 1,
    }
}

struct Parser<'a, 'l> {
    limits: &'l Limits,
    /// 1-based number of the line being parsed.
    line: usize,
    summary: ParseSummary,
    /// Reused for every sample line so its label buffer is allocated once per parse.
    sample: PromSample<'a>,
    /// The family of the last `# TYPE` line: samples almost always follow their family's
    /// TYPE line, so this answers the lookup without hashing.
    current_family: Option<(&'a str, MetricType)>,
    /// Every family typed so far, for the rare page whose samples are not grouped.
    families: HashMap<&'a str, MetricType>,
}

enum Flow {
    Continue,
    Eof,
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_blank(b[i]) {
        i += 1;
    }
    i
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn is_label_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// End of the token starting at `i`: the next blank or the end of the line.
fn token_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && !is_blank(b[i]) {
        i += 1;
    }
    i
}

impl<'a> Parser<'a, '_> {
    fn run(&mut self, text: &'a str, on_sample: &mut impl FnMut(&PromSample<'a>)) -> Result<(), ParseError> {
        let bytes = text.as_bytes();
        let mut pos = 0;
        while pos < bytes.len() {
            self.line += 1;
            let end = memchr::memchr(b'\n', &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
            if end - pos > self.limits.max_line_bytes {
                return Err(ParseError::LineTooLong {
                    line: self.line,
                    len: end - pos,
                    limit: self.limits.max_line_bytes,
                });
            }
            // CRLF: the `\r` is not part of the line.
            let line_end = if end > pos && bytes[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            let line = &text[pos..line_end];
            pos = end + 1;
            self.summary.lines += 1;
            if let Flow::Eof = self.line(line, on_sample)? {
                self.summary.saw_eof = true;
                break;
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &'a str, on_sample: &mut impl FnMut(&PromSample<'a>)) -> Result<Flow, ParseError> {
        let b = line.as_bytes();
        let i = skip_blanks(b, 0);
        if i == b.len() {
            return Ok(Flow::Continue);
        }
        if b[i] == b'#' {
            return self.comment(line, i + 1);
        }
        self.sample_line(line, i)?;
        self.summary.samples += 1;
        if self.summary.samples > self.limits.max_samples {
            return Err(ParseError::TooManySamples {
                line: self.line,
                limit: self.limits.max_samples,
            });
        }
        on_sample(&self.sample);
        Ok(Flow::Continue)
    }

    fn unexpected(&self, line: &str, i: usize, expected: &'static str) -> ParseError {
        let found = match line.get(i..).and_then(|rest| rest.chars().next()) {
            Some(c) => Found::Char(c),
            None => Found::EndOfLine,
        };
        ParseError::Unexpected {
            line: self.line,
            column: i + 1,
            expected,
            found,
        }
    }

    /// `# HELP`, `# TYPE`, `# UNIT`, `# EOF`, or any other comment (`# NOTE …`), which is
    /// skipped. `i` is just after the `#`.
    fn comment(&mut self, line: &'a str, i: usize) -> Result<Flow, ParseError> {
        let b = line.as_bytes();
        let word_start = skip_blanks(b, i);
        let word_end = token_end(b, word_start);
        match &line[word_start..word_end] {
            "TYPE" => {
                let name_start = skip_blanks(b, word_end);
                let name_end = self.metric_name(line, name_start)?;
                let type_start = skip_blanks(b, name_end);
                if type_start == name_end {
                    return Err(self.unexpected(line, type_start, "blank before the metric type"));
                }
                let type_end = token_end(b, type_start);
                let word = &line[type_start..type_end];
                let Some(ty) = MetricType::from_word(word) else {
                    return Err(ParseError::UnknownType {
                        line: self.line,
                        column: type_start + 1,
                        text: snippet(word),
                    });
                };
                let rest = skip_blanks(b, type_end);
                if rest != b.len() {
                    return Err(self.unexpected(line, rest, "end of line after the metric type"));
                }
                let name = &line[name_start..name_end];
                self.current_family = Some((name, ty));
                self.families.insert(name, ty);
                self.summary.families += 1;
            }
            "HELP" | "UNIT" => {
                // The docstring / unit is free text we do not use; the name must still be
                // a name, or the line is not what it claims to be.
                let name_start = skip_blanks(b, word_end);
                let name_end = self.metric_name(line, name_start)?;
                if name_end < b.len() && !is_blank(b[name_end]) {
                    return Err(self.unexpected(line, name_end, "blank after the metric name"));
                }
            }
            "EOF" if skip_blanks(b, word_end) == b.len() => return Ok(Flow::Eof),
            _ => {}
        }
        Ok(Flow::Continue)
    }

    /// Scans a metric name starting at `i`, returning its end.
    fn metric_name(&self, line: &str, i: usize) -> Result<usize, ParseError> {
        let b = line.as_bytes();
        if i >= b.len() || !is_name_start(b[i]) {
            return Err(self.unexpected(line, i, "metric name"));
        }
        let mut j = i + 1;
        while j < b.len() && is_name_char(b[j]) {
            j += 1;
        }
        Ok(j)
    }

    /// `name[{labels}] value [timestamp] [# exemplar]`, starting at `i`.
    fn sample_line(&mut self, line: &'a str, i: usize) -> Result<(), ParseError> {
        let b = line.as_bytes();
        let name_end = self.metric_name(line, i)?;
        let name = &line[i..name_end];
        self.sample.name = name;
        self.sample.labels.clear();
        self.sample.family_type = self.family_type(name);

        let mut j = skip_blanks(b, name_end);
        if j < b.len() && b[j] == b'{' {
            j = self.labels(line, j + 1)?;
            j = skip_blanks(b, j);
        } else if j == name_end {
            return Err(self.unexpected(line, j, "`{` or a blank after the metric name"));
        }

        let value_end = token_end(b, j);
        if value_end == j {
            return Err(self.unexpected(line, j, "sample value"));
        }
        let value_text = &line[j..value_end];
        self.sample.value = parse_value(value_text).ok_or_else(|| ParseError::BadValue {
            line: self.line,
            column: j + 1,
            text: snippet(value_text),
        })?;

        self.sample.timestamp_ms = None;
        let k = skip_blanks(b, value_end);
        if k == b.len() || b[k] == b'#' {
            // `#` here starts an OpenMetrics exemplar, which we skip.
            return Ok(());
        }
        let ts_end = token_end(b, k);
        let ts_text = &line[k..ts_end];
        self.sample.timestamp_ms = Some(parse_timestamp(ts_text).ok_or_else(|| ParseError::BadTimestamp {
            line: self.line,
            column: k + 1,
            text: snippet(ts_text),
        })?);
        let rest = skip_blanks(b, ts_end);
        if rest != b.len() && b[rest] != b'#' {
            return Err(self.unexpected(line, rest, "end of line after the timestamp"));
        }
        Ok(())
    }

    /// The label set after `{`, up to and including `}`; returns the index after `}`.
    /// Blanks are allowed around every token and a trailing comma before `}`.
    fn labels(&mut self, line: &'a str, mut i: usize) -> Result<usize, ParseError> {
        let b = line.as_bytes();
        loop {
            i = skip_blanks(b, i);
            if i < b.len() && b[i] == b'}' {
                return Ok(i + 1);
            }
            if i >= b.len() || !is_label_start(b[i]) {
                return Err(self.unexpected(line, i, "label name or `}`"));
            }
            let name_start = i;
            i += 1;
            while i < b.len() && is_label_char(b[i]) {
                i += 1;
            }
            let name = &line[name_start..i];
            i = skip_blanks(b, i);
            if i >= b.len() || b[i] != b'=' {
                return Err(self.unexpected(line, i, "`=` after the label name"));
            }
            i = skip_blanks(b, i + 1);
            if i >= b.len() || b[i] != b'"' {
                return Err(self.unexpected(line, i, "`\"` to open the label value"));
            }
            if self.sample.labels.len() >= self.limits.max_labels_per_sample {
                return Err(ParseError::TooManyLabels {
                    line: self.line,
                    column: name_start + 1,
                    limit: self.limits.max_labels_per_sample,
                });
            }
            let (value, after) = self.label_value(line, i + 1)?;
            self.sample.labels.push(Label { name, value });
            i = skip_blanks(b, after);
            if i < b.len() && b[i] == b',' {
                i += 1;
            } else if i < b.len() && b[i] == b'}' {
                return Ok(i + 1);
            } else {
                return Err(self.unexpected(line, i, "`,` or `}` after the label value"));
            }
        }
    }

    /// A label value starting just after its opening quote at `start`; returns the value
    /// and the index after the closing quote.
    fn label_value(&self, line: &'a str, start: usize) -> Result<(Cow<'a, str>, usize), ParseError> {
        let b = line.as_bytes();
        let unterminated = || ParseError::UnterminatedLabelValue {
            line: self.line,
            column: start,
        };
        let too_long = |end: usize| -> Result<(), ParseError> {
            if end - start > self.limits.max_label_value_bytes {
                Err(ParseError::LabelValueTooLong {
                    line: self.line,
                    column: start,
                    limit: self.limits.max_label_value_bytes,
                })
            } else {
                Ok(())
            }
        };
        let first = memchr::memchr2(b'"', b'\\', &b[start..]).map(|k| start + k);
        let Some(stop) = first else {
            too_long(b.len())?;
            return Err(unterminated());
        };
        if b[stop] == b'"' {
            too_long(stop)?;
            return Ok((Cow::Borrowed(&line[start..stop]), stop + 1));
        }
        // Slow path: the value has escapes and must be copied.
        let mut out = String::with_capacity(stop - start + 16);
        out.push_str(&line[start..stop]);
        let mut i = stop;
        loop {
            // Here b[i] is a backslash.
            let Some(&esc) = b.get(i + 1) else {
                too_long(b.len())?;
                return Err(unterminated());
            };
            match esc {
                b'\\' => out.push('\\'),
                b'"' => out.push('"'),
                b'n' => out.push('\n'),
                _ => {
                    let found = line[i + 1..].chars().next().unwrap_or('\u{fffd}');
                    return Err(ParseError::BadEscape {
                        line: self.line,
                        column: i + 1,
                        found,
                    });
                }
            }
            let seg = i + 2;
            match memchr::memchr2(b'"', b'\\', &b[seg..]).map(|k| seg + k) {
                None => {
                    too_long(b.len())?;
                    return Err(unterminated());
                }
                Some(next) => {
                    too_long(next)?;
                    out.push_str(&line[seg..next]);
                    if b[next] == b'"' {
                        return Ok((Cow::Owned(out), next + 1));
                    }
                    i = next;
                }
            }
        }
    }

    fn family_type(&self, name: &str) -> Option<MetricType> {
        if let Some((family, ty)) = self.current_family {
            if belongs_to(name, family, ty) {
                return Some(ty);
            }
        }
        if self.families.is_empty() {
            return None;
        }
        if let Some(ty) = self.families.get(name) {
            return Some(*ty);
        }
        // Not grouped under its TYPE line: try every suffix a family can add.
        const SUFFIXES: &[&str] = &[
            "_total", "_created", "_bucket", "_sum", "_count", "_gsum", "_gcount", "_info",
        ];
        SUFFIXES.iter().find_map(|suffix| {
            let family = name.strip_suffix(suffix)?;
            let ty = *self.families.get(family)?;
            ty.sample_suffixes().contains(suffix).then_some(ty)
        })
    }
}

fn belongs_to(name: &str, family: &str, ty: MetricType) -> bool {
    match name.strip_prefix(family) {
        Some("") => true,
        Some(suffix) => ty.sample_suffixes().contains(&suffix),
        None => false,
    }
}

/// A sample value: a float as Go's `ParseFloat` reads it, including `NaN`, `+Inf`, `-Inf`.
fn parse_value(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    // Fast path for small non-negative integers, the bulk of exporter values (temperatures,
    // clocks, counters): exact in f64 up to 15 digits, and several times faster than the
    // general float parser.
    if !b.is_empty() && b.len() <= 15 && b.iter().all(u8::is_ascii_digit) {
        let n = b.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        return Some(n as f64);
    }
    text.parse::<f64>().ok()
}

/// A timestamp: integer milliseconds (0.0.4), or OpenMetrics float seconds when it has a
/// fraction or an exponent.
fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    if !text.bytes().any(|c| matches!(c, b'.' | b'e' | b'E')) {
        return None;
    }
    let seconds: f64 = text.parse().ok()?;
    let ms = (seconds * 1000.0).round();
    // i64 range check without a lossy cast of the bounds.
    (ms.is_finite() && ms.abs() < 9.0e18).then_some(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &str) -> Result<(Vec<PromSample<'_>>, ParseSummary), ParseError> {
        let mut out = Vec::new();
        let summary = parse(input.as_bytes(), &Limits::default(), |s| out.push(s.clone()))?;
        Ok((out, summary))
    }

    #[test]
    fn parses_name_labels_value_and_timestamp() {
        let (s, summary) = collect("foo{a=\"1\",b=\"x=y\"} 2.5 1700000000000\n").unwrap();
        assert_eq!(summary.samples, 1);
        assert_eq!(s[0].name, "foo");
        assert_eq!(s[0].label("a"), Some("1"));
        assert_eq!(s[0].label("b"), Some("x=y"));
        assert_eq!(s[0].value, 2.5);
        assert_eq!(s[0].timestamp_ms, Some(1_700_000_000_000));
    }

    #[test]
    fn special_values_are_kept() {
        let (s, _) = collect("a NaN\nb +Inf\nc -Inf\nd 1e3\ne -0.5\n").unwrap();
        assert!(s[0].value.is_nan());
        assert_eq!(s[1].value, f64::INFINITY);
        assert_eq!(s[2].value, f64::NEG_INFINITY);
        assert_eq!(s[3].value, 1000.0);
        assert_eq!(s[4].value, -0.5);
    }

    #[test]
    fn escapes_are_unescaped_and_only_then_copied() {
        let (s, _) = collect(r#"m{a="plain",b="q\"uo\\te\nx"} 1"#).unwrap();
        assert!(matches!(s[0].labels[0].value, Cow::Borrowed("plain")));
        assert!(matches!(s[0].labels[1].value, Cow::Owned(_)));
        assert_eq!(s[0].label("b"), Some("q\"uo\\te\nx"));
    }

    #[test]
    fn tolerates_blanks_crlf_trailing_comma_and_comments() {
        let input = "# NOTE anything\r\n\r\n  m { a = \"1\" , b=\"2\", } \t 3 \r\n#EOF-ish comment\n";
        let (s, summary) = collect(input).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].labels.len(), 2);
        assert_eq!(s[0].value, 3.0);
        assert_eq!(summary.lines, 4);
    }

    #[test]
    fn type_is_kept_per_family_including_suffixes() {
        let input = "# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_sum 1\nh_count 2\n\
                     # TYPE c counter\nc_total 3\nc_created 4\nother 5\nh_sum 6\n";
        let (s, summary) = collect(input).unwrap();
        let types: Vec<_> = s.iter().map(|s| s.family_type).collect();
        use MetricType::*;
        assert_eq!(
            types,
            [
                Some(Histogram),
                Some(Histogram),
                Some(Histogram),
                Some(Counter),
                Some(Counter),
                None,
                Some(Histogram)
            ]
        );
        assert_eq!(summary.families, 2);
    }

    #[test]
    fn openmetrics_eof_exemplar_and_float_seconds() {
        let input = "# UNIT x_seconds seconds\nx_bucket{le=\"1\"} 2 # {trace_id=\"a\"} 1 1.5\ny 1 1520879607.789\n# EOF\ngarbage {{{\n";
        let (s, summary) = collect(input).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].timestamp_ms, Some(1_520_879_607_789));
        assert!(summary.saw_eof);
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = collect("ok 1\nm{a=\"1\",b=\"unterminated} 1\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: unterminated label value (started at column 11)"
        );
        let err = collect("m{a=\"\\x\"} 1").unwrap_err();
        assert_eq!(err.line(), Some(1));
        assert!(err.to_string().contains("invalid escape"), "{err}");
        let err = collect("\n\nm 1 2 3\n").unwrap_err();
        assert_eq!(err.line(), Some(3));
        let err = collect("m{a=\"1\"}\n").unwrap_err();
        assert!(
            err.to_string().starts_with("line 1, column 9: expected sample value"),
            "{err}"
        );
        let err = collect("m one\n").unwrap_err();
        assert_eq!(err.to_string(), "line 1, column 3: invalid sample value `one`");
        let err = collect("# TYPE m sometimes\n").unwrap_err();
        assert!(err.to_string().contains("unknown metric type `sometimes`"), "{err}");
    }

    #[test]
    fn invalid_utf8_names_its_line() {
        let err = parse(b"a 1\nb{x=\"\xff\"} 1\n", &Limits::default(), |_| {}).unwrap_err();
        assert_eq!(err, ParseError::InvalidUtf8 { line: 2, column: 6 });
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits {
            max_line_bytes: 20,
            max_labels_per_sample: 2,
            max_label_value_bytes: 4,
            max_body_bytes: 100,
            max_samples: 2,
        };
        let run = |s: &str| parse(s.as_bytes(), &limits, |_| {}).unwrap_err();
        assert!(matches!(
            run("m{a=\"12345\"} 1"),
            ParseError::LabelValueTooLong { line: 1, .. }
        ));
        assert!(matches!(
            run("m{a=\"1\",b=\"2\",c=\"3\"} 1"),
            ParseError::LineTooLong { .. }
        ));
        assert!(matches!(
            run("m{a=\"\",b=\"\",c=\"\"} 1"),
            ParseError::TooManyLabels { .. }
        ));
        assert!(matches!(
            run("a 1\nb 2\nc 3\n"),
            ParseError::TooManySamples { line: 3, .. }
        ));
        assert!(matches!(
            run(&"#".repeat(101)),
            ParseError::BodyTooLarge { len: 101, .. }
        ));
    }
}
