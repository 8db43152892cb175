//! Size limits that keep a hostile or broken exporter page from costing unbounded time or
//! memory.

use serde::{Deserialize, Serialize};

/// Caps applied while parsing one exposition body. Each one turns into a
/// [`ParseError`](super::ParseError) naming the line, never a panic or a truncated page.
///
/// The defaults are generous for real exporters: a dcgm-exporter page for 8 GPUs with
/// every field enabled is well under 1 MiB with lines under 1 KiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest accepted line in bytes, line break excluded (default 64 KiB).
    pub max_line_bytes: usize,
    /// Most labels on one sample (default 64).
    pub max_labels_per_sample: usize,
    /// Longest accepted label value in bytes, as written (escapes included; default 16 KiB).
    pub max_label_value_bytes: usize,
    /// Largest accepted body in bytes (default 64 MiB). Checked before parsing starts;
    /// the scraper should stop reading at this size too.
    pub max_body_bytes: usize,
    /// Most samples in one body (default 5 000 000).
    pub max_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 64 * 1024,
            max_labels_per_sample: 64,
            max_label_value_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024 * 1024,
            max_samples: 5_000_000,
        }
    }
}
