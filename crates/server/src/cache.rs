//! A cache of rendered JSON responses for the fleet-wide reads (`/api/v1/gpus`,
//! `/api/v1/fleet/summary`, `/api/v1/nodes`, `/api/v1/incidents`).
//!
//! Why: those answers are derived from the whole fleet but only change when a scrape is
//! applied, an evaluation runs, or an incident is acted on — every few seconds — while
//! dashboards and UIs poll them from many clients. Rendering once per change and serving
//! the bytes to everyone keeps p95 latency flat as clients grow. The key is the live
//! view's generation, the analysis generation, the wall-clock second (staleness by age
//! moves with time) and the request's query string, so a cached answer is never older
//! than one second or one change.

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use std::collections::HashMap;

/// What a cached answer depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub live: u64,
    pub analysis: u64,
    pub second: i64,
}

/// Bounded map from (endpoint, query) to rendered JSON, valid for one [`Version`].
pub struct JsonCache {
    inner: Mutex<(Option<Version>, HashMap<String, Bytes>)>,
    max_entries: usize,
}

impl Default for JsonCache {
    fn default() -> Self {
        JsonCache {
            inner: Mutex::new((None, HashMap::new())),
            max_entries: 256,
        }
    }
}

impl JsonCache {
    /// The cached body for `key` at `version`, or renders it with `render` and keeps it.
    /// Rendering happens outside the lock; two concurrent misses may both render (cheap
    /// and rare) rather than queueing every client behind one.
    pub fn get_or_render<E>(
        &self,
        version: Version,
        key: &str,
        render: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Bytes, E> {
        {
            let guard = self.inner.lock();
            if guard.0 == Some(version) {
                if let Some(b) = guard.1.get(key) {
                    return Ok(b.clone());
                }
            }
        }
        let body = Bytes::from(render()?);
        let mut guard = self.inner.lock();
        if guard.0 != Some(version) {
            guard.0 = Some(version);
            guard.1.clear();
        }
        if guard.1.len() >= self.max_entries {
            guard.1.clear();
        }
        guard.1.insert(key.to_string(), body.clone());
        Ok(body)
    }
}

/// A JSON response from already-rendered bytes (already gzip-compressed when `gzip`).
pub fn json_response(body: Bytes, gzip: bool) -> Response {
    if gzip {
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CONTENT_ENCODING, "gzip"),
                (header::VARY, "accept-encoding"),
            ],
            body,
        )
            .into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::VARY, "accept-encoding"),
            ],
            body,
        )
            .into_response()
    }
}

/// Gzip at the fastest level: the answer is compressed once per fleet change and served
/// many times, so what matters is the bytes every client then reads (JSON of a fleet
/// shrinks ~10×), not the last percent of ratio.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 8), flate2::Compression::fast());
    enc.write_all(bytes)?;
    enc.finish()
}

/// Whether the client accepts a gzip-encoded answer (`Accept-Encoding: gzip`).
#[derive(Debug, Clone, Copy)]
pub struct AcceptsGzip(pub bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AcceptsGzip {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        let accepts = parts
            .headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|enc| {
                let mut it = enc.split(';');
                let name = it.next().unwrap_or("").trim();
                let q_zero = it.any(|p| p.trim().replace(' ', "") == "q=0");
                (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
            });
        Ok(AcceptsGzip(accepts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(live: u64) -> Version {
        Version {
            live,
            analysis: 0,
            second: 0,
        }
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let data = br#"{"gpus":[{"a":1},{"a":1},{"a":1}]}"#.repeat(100);
        let z = gzip(&data).unwrap();
        assert!(z.len() < data.len() / 5);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&z[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn renders_once_per_version_and_key() {
        let cache = JsonCache::default();
        let mut renders = 0;
        for _ in 0..3 {
            cache
                .get_or_render::<()>(v(1), "a", || {
                    renders += 1;
                    Ok(b"1".to_vec())
                })
                .unwrap();
        }
        assert_eq!(renders, 1);
        let b = cache.get_or_render::<()>(v(2), "a", || Ok(b"2".to_vec())).unwrap();
        assert_eq!(&b[..], b"2", "a new version renders again");
        let c = cache.get_or_render::<()>(v(2), "b", || Ok(b"3".to_vec())).unwrap();
        assert_eq!(&c[..], b"3", "another key renders on its own");
    }
}
