//! gpuwarden's sources: turning what exporters publish into the model's vocabulary.
//!
//! - [`prom`]: a zero-copy, bounded parser for the Prometheus / OpenMetrics text format.

pub mod prom;
