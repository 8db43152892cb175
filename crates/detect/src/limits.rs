//! Temperature limits of a GPU: from the exporter when it exports them
//! (`DCGM_FI_DEV_SLOWDOWN_TEMP`, `DCGM_FI_DEV_SHUTDOWN_TEMP`), else from a small table by
//! `modelName`.
//!
//! The table holds what `nvidia-smi -q` prints as "GPU Slowdown Temp" / "GPU Shutdown
//! Temp" for common data-center boards. Matching is by substring of the model name
//! (case-insensitive), most specific first, because exporters print names such as
//! `NVIDIA A100-SXM4-80GB` or `NVIDIA H100 80GB HBM3`.

/// Slowdown and shutdown temperatures, °C.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TempLimits {
    pub slowdown_c: f64,
    pub shutdown_c: f64,
}

/// (model substring, slowdown °C, shutdown °C), most specific first.
const TABLE: &[(&str, f64, f64)] = &[
    ("H200", 90.0, 92.0),
    ("H100", 90.0, 92.0),
    ("H800", 90.0, 92.0),
    ("GH200", 90.0, 92.0),
    ("A100", 89.0, 92.0),
    ("A800", 89.0, 92.0),
    ("L40S", 92.0, 95.0),
    ("L40", 92.0, 95.0),
    ("L4", 92.0, 95.0),
    ("A10G", 95.0, 98.0),
    ("A10", 95.0, 98.0),
    ("T4", 93.0, 96.0),
    ("V100", 87.0, 90.0),
];

/// Limits by model name from the built-in table.
pub fn by_model(model: &str) -> Option<TempLimits> {
    let m = model.to_ascii_uppercase();
    // "GH200" contains "H200": check it before the shorter names by sorting on length.
    let mut best: Option<(&str, f64, f64)> = None;
    for &(name, s, d) in TABLE {
        if m.contains(name) && best.is_none_or(|(b, _, _)| name.len() > b.len()) {
            best = Some((name, s, d));
        }
    }
    best.map(|(_, s, d)| TempLimits {
        slowdown_c: s,
        shutdown_c: d,
    })
}

/// Limits for a GPU: exported values win (when they are plausible), else the table.
pub fn resolve(slowdown: Option<f64>, shutdown: Option<f64>, model: Option<&str>) -> Option<TempLimits> {
    let plausible = |v: f64| v.is_finite() && (30.0..=150.0).contains(&v);
    let table = model.and_then(by_model);
    let slowdown_c = slowdown.filter(|v| plausible(*v)).or(table.map(|t| t.slowdown_c))?;
    let shutdown_c = shutdown
        .filter(|v| plausible(*v))
        .or(table.map(|t| t.shutdown_c))
        .unwrap_or(slowdown_c + 3.0);
    Some(TempLimits { slowdown_c, shutdown_c })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_exporter_model_names() {
        assert_eq!(by_model("NVIDIA H100 80GB HBM3").unwrap().slowdown_c, 90.0);
        assert_eq!(by_model("NVIDIA A100-SXM4-80GB").unwrap().slowdown_c, 89.0);
        assert_eq!(by_model("NVIDIA L40S").unwrap().shutdown_c, 95.0);
        assert_eq!(by_model("Tesla T4").unwrap().slowdown_c, 93.0);
        assert_eq!(by_model("NVIDIA A10G").unwrap().slowdown_c, 95.0);
        assert!(by_model("Some Future GPU").is_none());
    }

    #[test]
    fn exported_limits_win_and_nonsense_is_ignored() {
        let l = resolve(Some(80.0), Some(85.0), Some("NVIDIA H100 80GB HBM3")).unwrap();
        assert_eq!(l.slowdown_c, 80.0);
        let l = resolve(Some(f64::NAN), Some(0.0), Some("NVIDIA H100 80GB HBM3")).unwrap();
        assert_eq!(l.slowdown_c, 90.0);
        assert_eq!(l.shutdown_c, 92.0);
        assert!(resolve(None, None, None).is_none());
    }
}
