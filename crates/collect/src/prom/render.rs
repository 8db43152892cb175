//! Writing a series back in exposition syntax (`name{a="b"}`): used to keep series that
//! belong to no GPU without conflating ones that differ only by labels, and by tests that
//! round-trip generated pages.

use super::sample::Label;
use std::fmt::Write;

/// Escapes a label value for the text format (`\` → `\\`, `"` → `\"`, newline → `\n`).
pub fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends `name` or `name{l1="v1",l2="v2"}` to `out`, labels in the given order.
pub fn write_series(out: &mut String, name: &str, labels: &[Label<'_>]) {
    out.push_str(name);
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, label) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{}=\"", label.name);
        escape_label_value(&label.value, out);
        out.push('"');
    }
    out.push('}');
}
