//! What the parser hands out: one sample at a time, borrowing from the input, plus the
//! family type declared by `# TYPE` and a summary of the whole body.

use std::borrow::Cow;
use std::fmt;

/// The type a `# TYPE` line declares for a metric family. OpenMetrics' `unknown` is read
/// as [`MetricType::Untyped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Untyped,
}

impl MetricType {
    /// Reads the type word of a `# TYPE` line.
    pub fn from_word(word: &str) -> Option<MetricType> {
        Some(match word {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "gaugehistogram" => MetricType::GaugeHistogram,
            "summary" => MetricType::Summary,
            "info" => MetricType::Info,
            "stateset" => MetricType::StateSet,
            "untyped" | "unknown" => MetricType::Untyped,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Untyped => "untyped",
        }
    }

    /// Suffixes a sample name may add to its family name for this type (`foo_bucket`
    /// belongs to histogram `foo`; `foo_total` to OpenMetrics counter `foo`).
    pub(crate) fn sample_suffixes(self) -> &'static [&'static str] {
        match self {
            MetricType::Counter => &["_total", "_created"],
            MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
            MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            MetricType::Summary => &["_sum", "_count", "_created"],
            MetricType::Info => &["_info"],
            MetricType::Gauge | MetricType::StateSet | MetricType::Untyped => &[],
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One label of a sample. The value borrows from the input unless it had escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label<'a> {
    pub name: &'a str,
    pub value: Cow<'a, str>,
}

/// One sample line. Handed to the callback by reference: the parser reuses one
/// `PromSample` (and its label buffer) for every line, so clone it to keep it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PromSample<'a> {
    /// Metric name as written, e.g. `DCGM_FI_DEV_GPU_TEMP` or `foo_bucket`.
    pub name: &'a str,
    /// Labels in the order they were written (empty for `name value`).
    pub labels: Vec<Label<'a>>,
    /// The value; `NaN`, `+Inf` and `-Inf` are kept as such.
    pub value: f64,
    /// The sample's own timestamp in milliseconds since the epoch, when it had one.
    pub timestamp_ms: Option<i64>,
    /// The type declared by the `# TYPE` line of the sample's family, if any.
    pub family_type: Option<MetricType>,
}

impl<'a> PromSample<'a> {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|l| l.name == name).map(|l| l.value.as_ref())
    }
}

/// What a successful parse saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseSummary {
    /// Lines read (the last line counts even without a final line break).
    pub lines: usize,
    /// Samples handed to the callback.
    pub samples: usize,
    /// `# TYPE` lines read.
    pub families: usize,
    /// Whether the body ended with OpenMetrics' `# EOF` (anything after it is ignored).
    pub saw_eof: bool,
}
