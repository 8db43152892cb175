//! A hand-written parser for the Prometheus text exposition format (0.0.4), tolerant of
//! OpenMetrics text: it is how every exporter page (dcgm-exporter, nvidia_gpu_exporter)
//! enters gpuwarden.
//!
//! Why our own: `prometheus-parse` is regex-based, unmaintained since 2023 and mis-parses
//! label values that contain `=`; `openmetrics-parser` is LGPL-3.0. Neither is zero-copy
//! nor bounded in memory.
//!
//! Why zero-copy: a scrape of an 8-GPU node is ~400 samples with ~12 labels each, and the
//! product must sustain ≥ 1 M samples/s/core for parse + map + store. So the parser
//! validates UTF-8 once for the whole body, then hands out metric names and label values
//! as `&str` slices of the input. A label value is copied (a `Cow::Owned`) only when it
//! contains an escape (`\\`, `\"`, `\n`), which real exporters almost never emit. The
//! per-sample label list is one buffer reused for every line, so the common case makes no
//! allocation per sample at all.
//!
//! Why bounded: the body, each line, each label value, the label count and the sample
//! count are capped by [`Limits`]. A body over the limit is refused by its length before
//! a byte of it is read; every other limit is checked while scanning, so hostile input
//! costs at most one pass over at most `max_body_bytes`.
//!
//! What is accepted beyond 0.0.4 (OpenMetrics tolerance): `# EOF` ends the page,
//! `# UNIT` is ignored, `_total` / `_created` / `_gsum` / `_gcount` / `_info` samples are
//! attributed to their family's type, exemplars (`… # {trace_id="x"} 1`) are skipped, and
//! a timestamp with a fraction (`1520879607.789`) is read as OpenMetrics seconds. An
//! integer timestamp is always 0.0.4 milliseconds.
//!
//! What is not checked, on purpose: duplicate label names and duplicate series (the
//! mapping decides what a duplicate means), `# HELP` text (skipped), and whether samples
//! of one family are contiguous.

mod error;
mod limits;
mod parser;
mod render;
mod sample;

pub use error::{Found, ParseError};
pub use limits::Limits;
pub use parser::parse;
pub use render::{escape_label_value, write_series};
pub use sample::{Label, MetricType, ParseSummary, PromSample};
