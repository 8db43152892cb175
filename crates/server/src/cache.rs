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

/// A JSON response from already-rendered bytes.
pub fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
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
