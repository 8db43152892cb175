//! Property tests: random valid expositions (names, labels with escapes and any Unicode,
//! special values, timestamps, blank/CRLF/trailing-comma styles) render and parse back to
//! what was generated; random and mutated bytes never panic and errors name a real line.

use gpuwarden_collect::dcgm::map_exporter_page;
use gpuwarden_collect::prom::{self, Limits, MetricType, PromSample};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Sample {
    labels: Vec<(String, String)>,
    value: f64,
    ts: Option<i64>,
}

#[derive(Debug, Clone)]
struct Family {
    name: String,
    ty: MetricType,
    help: String,
    samples: Vec<Sample>,
}

/// How a page is written: the format allows all of these, and exporters differ.
#[derive(Debug, Clone, Copy)]
struct Style {
    crlf: bool,
    blanks: bool,
    trailing_comma: bool,
    blank_lines: bool,
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>().prop_filter("finite", |v| v.is_finite()),
        3 => (0u32..100_000).prop_map(f64::from),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9_.:/-]{0,20}",
        2 => "[a\\\\\"\n=,{} #]{0,12}",
        1 => any::<String>(),
    ]
}

fn sample() -> impl Strategy<Value = Sample> {
    (
        prop::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,12}", label_value()), 0..6),
        value(),
        prop::option::of(-1_000_000_000_000_000i64..4_000_000_000_000_000),
    )
        .prop_map(|(labels, value, ts)| Sample { labels, value, ts })
}

fn family() -> impl Strategy<Value = Family> {
    let ty = prop_oneof![
        Just(MetricType::Gauge),
        Just(MetricType::Counter),
        Just(MetricType::Untyped)
    ];
    (
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,24}",
        ty,
        "[ -~]{0,30}",
        prop::collection::vec(sample(), 1..5),
    )
        .prop_map(|(name, ty, help, samples)| Family {
            name,
            ty,
            help,
            samples,
        })
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(crlf, blanks, trailing_comma, blank_lines)| Style {
            crlf,
            blanks,
            trailing_comma,
            blank_lines,
        },
    )
}

fn render_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

fn render(families: &[Family], style: Style) -> String {
    let eol = if style.crlf { "\r\n" } else { "\n" };
    let sp = if style.blanks { " \t" } else { "" };
    let mut out = String::new();
    for f in families {
        out.push_str(&format!("# HELP {} {}{eol}", f.name, f.help));
        out.push_str(&format!("# TYPE {} {}{eol}", f.name, f.ty));
        if style.blank_lines {
            out.push_str(eol);
        }
        for s in &f.samples {
            out.push_str(sp);
            out.push_str(&f.name);
            if !s.labels.is_empty() || style.trailing_comma {
                out.push_str(sp);
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("{sp}{k}{sp}={sp}\""));
                    prom::escape_label_value(v, &mut out);
                    out.push('"');
                    out.push_str(sp);
                }
                if style.trailing_comma && !s.labels.is_empty() {
                    out.push(',');
                }
                out.push('}');
            }
            out.push_str(&format!(" {sp}{}", render_value(s.value)));
            if let Some(ts) = s.ts {
                out.push_str(&format!(" {sp}{ts}"));
            }
            out.push_str(sp);
            out.push_str(eol);
        }
    }
    out
}

fn same_value(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn valid_expositions_round_trip(families in prop::collection::vec(family(), 0..6), style in style()) {
        let text = render(&families, style);
        let mut got = Vec::new();
        let summary = prom::parse(text.as_bytes(), &Limits::default(), |s| got.push(Owned::from(s)));
        let summary = summary.map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let expected: Vec<(&Family, &Sample)> =
            families.iter().flat_map(|f| f.samples.iter().map(move |s| (f, s))).collect();
        prop_assert_eq!(summary.samples, expected.len());
        prop_assert_eq!(summary.families, families.len());
        for (g, (f, s)) in got.iter().zip(&expected) {
            prop_assert_eq!(&g.name, &f.name);
            prop_assert_eq!(&g.labels, &s.labels);
            prop_assert!(same_value(g.value, s.value), "{} vs {}", g.value, s.value);
            prop_assert_eq!(g.timestamp_ms, s.ts);
            prop_assert_eq!(g.family_type, Some(f.ty));
        }
        // The mapping accepts whatever the parser accepts.
        let page = map_exporter_page(text.as_bytes(), "n", 0, &Limits::default())
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(page.summary.parse, summary);
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        check_no_panic(&bytes)?;
    }

    #[test]
    fn mutated_pages_never_panic(
        families in prop::collection::vec(family(), 1..4),
        style in style(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = render(&families, style).into_bytes();
        for (at, b) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        check_no_panic(&bytes)?;
    }
}

/// Parse and map must not panic, must agree, and an error must name a line that exists.
fn check_no_panic(bytes: &[u8]) -> Result<(), TestCaseError> {
    let limits = Limits {
        max_line_bytes: 1024,
        max_labels_per_sample: 8,
        max_label_value_bytes: 64,
        max_body_bytes: 1 << 20,
        max_samples: 1000,
    };
    let parsed = prom::parse(bytes, &limits, |_| {});
    let mapped = map_exporter_page(bytes, "n", 0, &limits);
    match (&parsed, &mapped) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, &b.summary.parse),
        (Err(a), Err(b)) => {
            prop_assert_eq!(a, b);
            let lines = bytes.split(|&b| b == b'\n').count();
            let line = a.line().unwrap_or(0);
            prop_assert!(line >= 1 && line <= lines, "line {} of {}: {}", line, lines, a);
        }
        _ => prop_assert!(false, "parser and mapping disagree"),
    }
    Ok(())
}

/// A parsed sample kept past the callback (the parser reuses its sample buffer).
struct Owned {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    timestamp_ms: Option<i64>,
    family_type: Option<MetricType>,
}

impl From<&PromSample<'_>> for Owned {
    fn from(s: &PromSample<'_>) -> Self {
        Owned {
            name: s.name.to_owned(),
            labels: s
                .labels
                .iter()
                .map(|l| (l.name.to_owned(), l.value.to_string()))
                .collect(),
            value: s.value,
            timestamp_ms: s.timestamp_ms,
            family_type: s.family_type,
        }
    }
}
