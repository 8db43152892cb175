//! Malformed input: every kind of broken page is refused with an error that names the
//! line (and column where it helps), never a panic.

use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::prom::{self, Limits, ParseError};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn datadog() -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/exporters/dcgm-exporter-datadog-t4-a10g.txt");
    std::fs::read_to_string(path).expect("datadog capture")
}

fn parse_err(body: &[u8]) -> ParseError {
    let err = prom::parse(body, &Limits::default(), |_| {}).expect_err("must be refused");
    // The mapping goes through the same parser and must refuse it the same way.
    let mapped = map_exporter_page(body, "n", 0, &Limits::default()).expect_err("mapping must refuse too");
    assert_eq!(mapped, err);
    err
}

#[test]
fn truncated_capture_names_the_line_it_stops_on() {
    let text = datadog();
    // Cut line 9 (the T4's GPU_TEMP sample) in the middle of its UUID label value.
    let line9_start: usize = text.split_inclusive('\n').take(8).map(str::len).sum();
    let cut = line9_start + text[line9_start..].find("GPU-20c5").expect("uuid on line 9") + 8;
    let err = parse_err(&text.as_bytes()[..cut]);
    assert!(
        matches!(err, ParseError::UnterminatedLabelValue { line: 9, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("line 9: unterminated label value (started at column "),
        "{err}"
    );
}

#[test]
fn truncated_before_the_value_names_the_line() {
    let err = parse_err(b"# TYPE a gauge\na{x=\"1\"} 1\na{x=\"2\"}");
    assert_eq!(
        err.to_string(),
        "line 3, column 9: expected sample value, found end of line"
    );
}

#[test]
fn bad_escape_names_line_and_column() {
    let err = parse_err(b"a 1\nb 2\nm{path=\"C:\\temp\"} 1\n");
    assert_eq!(
        err,
        ParseError::BadEscape {
            line: 3,
            column: 11,
            found: 't'
        }
    );
    assert!(
        err.to_string().starts_with("line 3, column 11: invalid escape `\\t`"),
        "{err}"
    );
}

#[test]
fn huge_label_value_is_refused_by_its_size() {
    let body = format!("ok 1\nm{{a=\"{}\"}} 1\n", "x".repeat(20 * 1024));
    let err = parse_err(body.as_bytes());
    assert!(
        matches!(
            err,
            ParseError::LabelValueTooLong {
                line: 2,
                column: 5,
                limit: 16384
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("line 2, column 5: label value is over the limit"),
        "{err}"
    );
}

#[test]
fn huge_line_is_refused_by_its_size() {
    let body = format!("ok 1\nok 2\n{} 1\n", "a".repeat(70 * 1024));
    let err = parse_err(body.as_bytes());
    assert!(matches!(err, ParseError::LineTooLong { line: 3, .. }), "{err:?}");
}

#[test]
fn too_many_labels_are_refused() {
    let labels: Vec<String> = (0..65).map(|i| format!("l{i}=\"v\"")).collect();
    let body = format!("m{{{}}} 1\n", labels.join(","));
    let err = parse_err(body.as_bytes());
    assert!(
        matches!(err, ParseError::TooManyLabels { line: 1, limit: 64, .. }),
        "{err:?}"
    );
}

#[test]
fn binary_garbage_is_refused_on_its_line() {
    // Valid UTF-8 control bytes: a syntax error on line 2.
    let err = parse_err(b"ok 1\n\x00\x01\x02\x03 GPU\x7f\n");
    assert!(
        matches!(err, ParseError::Unexpected { line: 2, column: 1, .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "line 2, column 1: expected metric name, found `\\0`");
    // Typical binary (a gzip header the client failed to decode): invalid UTF-8.
    let err = parse_err(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\xed\xbd");
    assert!(matches!(err, ParseError::InvalidUtf8 { line: 1, column: 2 }), "{err:?}");
}

#[test]
fn invalid_utf8_names_line_and_column() {
    let mut body = datadog().into_bytes();
    // Corrupt a byte inside the A10G's namespace label on the last line.
    let at = body.windows(7).rposition(|w| w == b"ray-llm").expect("ray-llm");
    body[at + 3] = 0xC3; // a lead byte followed by ASCII: invalid
    let lines_before = body[..at].iter().filter(|&&b| b == b'\n').count();
    let err = parse_err(&body);
    match err {
        ParseError::InvalidUtf8 { line, column } => {
            assert_eq!(line, lines_before + 1);
            assert!(column > 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("line {}, column ", lines_before + 1)),
        "{err}"
    );
}

#[test]
fn unknown_type_and_bad_values_name_the_line() {
    assert!(parse_err(b"# TYPE m sometimes\n")
        .to_string()
        .starts_with("line 1, column 10: unknown metric type"));
    assert_eq!(
        parse_err(b"\nm 12abc\n").to_string(),
        "line 2, column 3: invalid sample value `12abc`"
    );
    let err = parse_err(b"m 1 soon\n");
    assert!(
        err.to_string()
            .starts_with("line 1, column 5: invalid timestamp `soon`"),
        "{err}"
    );
    assert!(matches!(
        parse_err(b"m 1 2 3\n"),
        ParseError::Unexpected { line: 1, column: 7, .. }
    ));
    assert!(matches!(
        parse_err(b"m{a=1} 1\n"),
        ParseError::Unexpected { line: 1, column: 5, .. }
    ));
    assert!(matches!(
        parse_err(b"m{a=\"1\" b=\"2\"} 1\n"),
        ParseError::Unexpected { line: 1, column: 9, .. }
    ));
    assert!(matches!(
        parse_err(b"m{9=\"1\"} 1\n"),
        ParseError::Unexpected { line: 1, column: 3, .. }
    ));
}

#[test]
fn error_messages_stay_short_for_huge_tokens() {
    let body = format!("m {}\n", "9x".repeat(30_000));
    let err = parse_err(body.as_bytes());
    assert!(err.to_string().len() < 120, "{}", err.to_string().len());
}

#[test]
fn hundred_megabyte_body_is_refused_by_size_before_parsing() {
    let body = vec![b'a'; 100 * 1024 * 1024];
    let started = Instant::now();
    let err = prom::parse(&body, &Limits::default(), |_| panic!("no sample may be read")).unwrap_err();
    let mapped = map_exporter_page(&body, "n", 0, &Limits::default()).unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(
        err,
        ParseError::BodyTooLarge {
            len: 100 * 1024 * 1024,
            limit: 64 * 1024 * 1024
        }
    );
    assert_eq!(mapped, err);
    assert_eq!(err.line(), None);
    assert_eq!(
        err.to_string(),
        "body is 104857600 bytes, over the limit of 67108864 bytes"
    );
    // Refused by its length alone: no pass over the bytes (one pass at debug speed
    // would take far longer than this).
    assert!(elapsed < Duration::from_millis(20), "{elapsed:?}");
}
