//! Content negotiation for `/metrics`: OpenMetrics text for scrapers that ask for it
//! (Prometheus does), the classic Prometheus text format 0.0.4 for everyone else
//! (`curl`, `promtool check metrics`, older agents).
//!
//! `prometheus-client` only writes OpenMetrics. The two formats differ for counters: in
//! OpenMetrics the family is `x` and its sample `x_total`; in 0.0.4 the family itself is
//! `x_total`. Rewriting those names, and dropping `# EOF`, `# UNIT` and `_created`
//! samples, is all the conversion needs for the metric types gpuwarden exposes
//! (counters, gauges, histograms).

use std::collections::HashSet;

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether the `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Converts OpenMetrics text as written by `prometheus-client` to Prometheus text 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ").or_else(|| line.strip_prefix("# TYPE ")) {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = &line[..7];
            if counters.contains(name) {
                out.push_str(&format!("{kind}{name}_total {tail}\n"));
            } else {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        let metric = line.split(['{', ' ']).next().unwrap_or("");
        if let Some(base) = metric.strip_suffix("_created") {
            if counters.contains(base) {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_renamed_and_openmetrics_only_lines_dropped() {
        let om = "# HELP x Things.\n# TYPE x counter\nx_total{a=\"1\"} 3\nx_created{a=\"1\"} 1.7e9\n# HELP g A gauge.\n# TYPE g gauge\n# UNIT g bytes\ng 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP x_total Things.\n# TYPE x_total counter\nx_total{a=\"1\"} 3\n# HELP g A gauge.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn accept_header_negotiation() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
