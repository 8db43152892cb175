//! Prometheus remote_write 1.0: decoding a `WriteRequest` (protobuf in a snappy **raw**
//! block) and mapping its series to GPUs exactly as the scrape path does.
//!
//! The messages are written by hand with `prost` derive (no `protoc` at build time); only
//! the fields we read are declared, and prost skips the rest (exemplars, histograms,
//! metadata). Mapping: the series are grouped by their `instance` label (the exporter
//! Prometheus scraped), each group is rendered as a Prometheus text page, and the page goes
//! through [`gpuwarden_collect::dcgm::map_exporter_page`], the scrape path's mapper.
//! Rendering text costs a little CPU, but it guarantees that a dcgm-exporter series means
//! the same GPU, field and workload whether it was scraped or forwarded, with no second
//! copy of the label rules to keep in step. Prometheus's own target labels (`job`,
//! `instance`) are not copied into the GPU's labels, since a scrape would not have them
//! either; `instance`'s host is the node name when the series has no `Hostname` label.

use gpuwarden_collect::dcgm::{map_exporter_page, ExporterPage};
use gpuwarden_collect::prom::{Limits, ParseError};
use prost::Message;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Why a remote_write body was refused.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error("body is not a snappy raw block: {0}")]
    Snappy(#[from] snap::Error),
    #[error("decompressed body would be {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not a protobuf WriteRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("series of instance {instance} could not be mapped: {source}")]
    Map { instance: String, source: ParseError },
}

/// Prometheus writes this NaN as a staleness marker ("series ended"); it is not a value.
const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// Decompresses (bounded) and decodes a request body.
pub fn decode(body: &[u8], max_decompressed: usize) -> Result<WriteRequest, RemoteWriteError> {
    let size = snap::raw::decompress_len(body)?;
    if size > max_decompressed {
        return Err(RemoteWriteError::TooLarge {
            size,
            limit: max_decompressed,
        });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

/// One exporter's share of a request, mapped like a scrape of it.
pub struct MappedInstance {
    /// The `instance` label (`host:port`), or `""` when absent.
    pub instance: String,
    pub page: ExporterPage,
    /// Series skipped: no or invalid metric name, invalid label name, staleness marker.
    pub skipped: usize,
}

/// Groups the request by instance and maps each group with the scrape path's mapper.
pub fn map_request(req: &WriteRequest, now_ms: i64, limits: &Limits) -> Result<Vec<MappedInstance>, RemoteWriteError> {
    let mut pages: BTreeMap<&str, (String, usize)> = BTreeMap::new();
    for series in &req.timeseries {
        let instance = series
            .labels
            .iter()
            .find(|l| l.name == "instance")
            .map_or("", |l| l.value.as_str());
        let (text, skipped) = pages.entry(instance).or_default();
        if !render_series(text, series) {
            *skipped += 1;
        }
    }
    let mut out = Vec::with_capacity(pages.len());
    for (instance, (text, skipped)) in pages {
        let node = node_of(instance);
        let page =
            map_exporter_page(text.as_bytes(), node, now_ms, limits).map_err(|source| RemoteWriteError::Map {
                instance: instance.to_owned(),
                source,
            })?;
        out.push(MappedInstance {
            instance: instance.to_owned(),
            page,
            skipped,
        });
    }
    Ok(out)
}

/// `host:port` → `host` (`[v6]:port` → `v6`); the node name when no `Hostname` label.
fn node_of(instance: &str) -> &str {
    if let Some(rest) = instance.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match instance.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => instance,
    }
}

fn valid_name(s: &str, colon: bool) -> bool {
    let mut bytes = s.bytes();
    let ok_first = |b: u8| b.is_ascii_alphabetic() || b == b'_' || (colon && b == b':');
    matches!(bytes.next(), Some(b) if ok_first(b)) && bytes.all(|b| ok_first(b) || b.is_ascii_digit())
}

/// Appends one line per sample of `series` in the text format; false if it was skipped.
fn render_series(out: &mut String, series: &TimeSeries) -> bool {
    let Some(name) = series
        .labels
        .iter()
        .find(|l| l.name == "__name__")
        .map(|l| l.value.as_str())
    else {
        return false;
    };
    if !valid_name(name, true) {
        return false;
    }
    let mut head = String::with_capacity(128);
    head.push_str(name);
    let mut first = true;
    for l in &series.labels {
        if l.name == "__name__" || l.name == "job" || l.name == "instance" || l.name.starts_with("__") {
            continue;
        }
        if !valid_name(&l.name, false) {
            return false;
        }
        head.push(if first { '{' } else { ',' });
        first = false;
        head.push_str(&l.name);
        head.push_str("=\"");
        for c in l.value.chars() {
            match c {
                '\\' => head.push_str("\\\\"),
                '"' => head.push_str("\\\""),
                '\n' => head.push_str("\\n"),
                c => head.push(c),
            }
        }
        head.push('"');
    }
    if !first {
        head.push('}');
    }
    let mut any = false;
    for s in &series.samples {
        if s.value.to_bits() == STALE_NAN_BITS {
            continue;
        }
        any = true;
        let value = if s.value.is_nan() {
            "NaN".to_owned()
        } else if s.value.is_infinite() {
            if s.value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
        } else {
            format!("{:?}", s.value)
        };
        let _ = writeln!(out, "{head} {value} {}", s.timestamp);
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpuwarden_model::DcgmField;

    fn label(n: &str, v: &str) -> Label {
        Label {
            name: n.into(),
            value: v.into(),
        }
    }

    fn series(name: &str, extra: &[(&str, &str)], samples: &[(f64, i64)]) -> TimeSeries {
        let mut labels = vec![
            label("__name__", name),
            label("job", "dcgm"),
            label("instance", "gpu-7:9400"),
        ];
        labels.extend(extra.iter().map(|(n, v)| label(n, v)));
        TimeSeries {
            labels,
            samples: samples
                .iter()
                .map(|&(value, timestamp)| Sample { value, timestamp })
                .collect(),
        }
    }

    fn encode(req: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).unwrap()
    }

    #[test]
    fn series_map_to_the_same_gpu_identity_as_a_scrape() {
        let gpu = [
            ("gpu", "0"),
            ("UUID", "GPU-abc"),
            ("device", "nvidia0"),
            ("modelName", "NVIDIA H100 80GB HBM3"),
            ("pod", "train-\"0\""),
            ("namespace", "ml"),
        ];
        let req = WriteRequest {
            timeseries: vec![
                series("DCGM_FI_DEV_GPU_TEMP", &gpu, &[(41.0, 1000), (42.0, 2000)]),
                series("DCGM_FI_DEV_POWER_USAGE", &gpu, &[(300.5, 1000)]),
            ],
        };
        let decoded = decode(&encode(&req), 1 << 20).unwrap();
        let mapped = map_request(&decoded, 5000, &Limits::default()).unwrap();
        assert_eq!(mapped.len(), 1);
        let page = &mapped[0].page;
        let id = page.gpu("GPU-abc").unwrap();
        assert_eq!(id.node, "gpu-7");
        assert_eq!(id.index, Some(0));
        assert_eq!(id.model.as_deref(), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(id.workload.pod.as_deref(), Some("train-\"0\""));
        assert!(!id.extra_labels.contains_key("job") && !id.extra_labels.contains_key("instance"));
        let temps: Vec<_> = page
            .rows
            .iter()
            .filter_map(|r| r.get(&DcgmField::GpuTemp.into()).map(|v| (r.ts_ms, v)))
            .collect();
        assert_eq!(temps, [(1000, 41.0), (2000, 42.0)]);
    }

    #[test]
    fn staleness_markers_and_bad_names_are_skipped() {
        let req = WriteRequest {
            timeseries: vec![
                series(
                    "DCGM_FI_DEV_GPU_TEMP",
                    &[("UUID", "G")],
                    &[(f64::from_bits(STALE_NAN_BITS), 1)],
                ),
                series("bad name", &[], &[(1.0, 1)]),
                TimeSeries {
                    labels: vec![],
                    samples: vec![Sample {
                        value: 1.0,
                        timestamp: 1,
                    }],
                },
            ],
        };
        let mapped = map_request(&req, 0, &Limits::default()).unwrap();
        assert_eq!(mapped.iter().map(|m| m.skipped).sum::<usize>(), 3);
        assert!(mapped.iter().all(|m| m.page.rows.is_empty()));
    }

    #[test]
    fn garbage_and_bombs_are_errors_not_panics() {
        assert!(decode(b"not snappy at all", 1 << 20).is_err());
        let _ = decode(&[], 1 << 20);
        let big = snap::raw::Encoder::new().compress_vec(&vec![0u8; 1 << 20]).unwrap();
        assert!(matches!(decode(&big, 1024), Err(RemoteWriteError::TooLarge { .. })));
        let junk = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
        assert!(matches!(decode(&junk, 1 << 20), Err(RemoteWriteError::Protobuf(_))));
    }

    #[test]
    fn node_is_the_instance_host() {
        assert_eq!(node_of("gpu-1:9400"), "gpu-1");
        assert_eq!(node_of("[::1]:9400"), "::1");
        assert_eq!(node_of("gpu-1"), "gpu-1");
    }
}
