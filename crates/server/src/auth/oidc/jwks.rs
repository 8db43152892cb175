//! The provider's signing keys (JWKS), cached.
//!
//! Keys are fetched when first needed, again when a token names a key id we do not hold
//! (the provider rotated its keys) and when the set is older than the refresh interval —
//! but never more than once per `min_refresh`, whoever asks: tokens with made-up key ids
//! cannot make us hammer the provider. A failed fetch keeps the keys we have (a provider
//! outage does not sign everyone out) and is logged and counted.

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A boxed future, for the object-safe [`JwksSource`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the key set comes from: the provider's `jwks_uri` ([`super::http::HttpJwks`]),
/// or a test's.
pub trait JwksSource: Send + Sync {
    /// The JWKS document (`{"keys": [...]}`), or what failed.
    fn fetch(&self) -> BoxFuture<'_, Result<serde_json::Value, String>>;
}

/// One usable verification key.
#[derive(Clone)]
pub struct Key {
    pub decoding: DecodingKey,
    /// The key's own `alg`, when it names one: a token must use exactly that.
    pub alg: Option<Algorithm>,
    pub family: AlgorithmFamily,
}

impl Key {
    /// Whether a token signed with `alg` may be checked with this key: same family (an
    /// RSA key is never used as an HMAC secret) and the key's own `alg` if it has one.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|a| a == alg)
    }
}

/// The keys of one fetch: by key id, and those without one.
#[derive(Clone, Default)]
pub struct KeySet {
    pub by_kid: HashMap<String, Key>,
    pub without_kid: Vec<Key>,
}

impl KeySet {
    /// Reads a JWKS document; keys that cannot verify signatures (encryption keys,
    /// symmetric or unknown types) are skipped, not fatal.
    pub fn parse(doc: &serde_json::Value) -> Result<KeySet, String> {
        let keys = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| "the JWKS document has no \"keys\" array".to_string())?;
        let mut set = KeySet::default();
        for k in keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(k.clone()) else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let family = decoding.family();
            if family == AlgorithmFamily::Hmac {
                // A shared secret published in a JWKS is a misconfiguration; never trust it.
                continue;
            }
            let alg = jwk.common.key_algorithm.and_then(|a| Algorithm::try_from(a).ok());
            let key = Key { decoding, alg, family };
            match jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid, key);
                }
                None => set.without_kid.push(key),
            }
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys a token with header `kid`/`alg` may be checked with.
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Key> {
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .filter(|k| k.accepts(alg))
                .cloned()
                .into_iter()
                .collect(),
            // No kid: any key of the right kind (providers with one key often omit it).
            None => self
                .without_kid
                .iter()
                .chain(self.by_kid.values())
                .filter(|k| k.accepts(alg))
                .cloned()
                .collect(),
        }
    }
}

/// Counters of the cache (on `/metrics` as `gpuwarden_oidc_jwks_*`).
#[derive(Debug, Default)]
pub struct JwksStats {
    pub fetches: Counter,
    pub failures: Counter,
    /// Refreshes asked for (unknown key id) but refused by the rate limit.
    pub throttled: Counter,
}

impl JwksStats {
    /// Adds the counters to `registry`.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "gpuwarden_oidc_jwks_fetches",
            "Fetches of the OpenID provider's signing keys (JWKS), failed ones included",
            self.fetches.clone(),
        );
        registry.register(
            "gpuwarden_oidc_jwks_fetch_failures",
            "JWKS fetches that failed or held no usable key (the keys held before were kept)",
            self.failures.clone(),
        );
        registry.register(
            "gpuwarden_oidc_jwks_refresh_throttled",
            "Key refreshes asked for by tokens with an unknown key id but refused by jwks_min_refresh",
            self.throttled.clone(),
        );
    }
}

/// The cache.
pub struct JwksCache {
    source: Arc<dyn JwksSource>,
    keys: RwLock<Arc<KeySet>>,
    /// Last fetch attempt and last success; the lock also makes concurrent refreshes
    /// wait for one fetch instead of starting their own.
    state: tokio::sync::Mutex<(Option<Instant>, Option<Instant>)>,
    min_refresh: Duration,
    max_age: Duration,
    pub stats: JwksStats,
}

impl JwksCache {
    /// A cache fetching from `source` at most once per `min_refresh`, and again when the
    /// keys are older than `max_age`.
    pub fn new(source: Arc<dyn JwksSource>, min_refresh: Duration, max_age: Duration) -> Self {
        JwksCache {
            source,
            keys: RwLock::new(Arc::new(KeySet::default())),
            state: tokio::sync::Mutex::new((None, None)),
            min_refresh,
            max_age,
            stats: JwksStats::default(),
        }
    }

    /// The keys held now.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.read().clone()
    }

    /// Fetches when the keys are older than `max_age` (or never fetched), within the
    /// rate limit.
    pub async fn refresh_if_stale(&self) {
        let stale = {
            let st = self.state.lock().await;
            st.1.is_none_or(|ok| ok.elapsed() >= self.max_age)
        };
        if stale {
            self.refresh(false).await;
        }
    }

    /// Fetches because a token named a key id we do not hold, within the rate limit.
    pub async fn refresh_for_unknown_key(&self) {
        self.refresh(true).await;
    }

    async fn refresh(&self, unknown_key: bool) {
        let mut st = self.state.lock().await;
        if st.0.is_some_and(|t| t.elapsed() < self.min_refresh) {
            if unknown_key {
                self.stats.throttled.inc();
            }
            return;
        }
        st.0 = Some(Instant::now());
        self.stats.fetches.inc();
        match self.source.fetch().await.and_then(|doc| KeySet::parse(&doc)) {
            Ok(set) if !set.is_empty() => {
                tracing::debug!(keys = set.len(), "fetched the OpenID provider's signing keys");
                *self.keys.write() = Arc::new(set);
                st.1 = Some(Instant::now());
            }
            Ok(_) => {
                self.stats.failures.inc();
                tracing::warn!(
                    "the OpenID provider's JWKS holds no usable signing key; keeping the {} key(s) fetched before",
                    self.keys().len()
                );
            }
            Err(e) => {
                self.stats.failures.inc();
                tracing::warn!(
                    "fetching the OpenID provider's signing keys failed ({e}); keeping the {} key(s) fetched \
                     before, retrying in {:?} at the earliest",
                    self.keys().len(),
                    self.min_refresh
                );
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The public JWK `name` (`rsa1`, `rsa2`, `ec1`) of the test keys in `testdata/`
    /// (made once with openssl; their private halves sign the verifier's test tokens), with
    /// key id `kid`.
    pub(crate) fn test_jwk(name: &str, kid: &str) -> serde_json::Value {
        let all: serde_json::Value = serde_json::from_str(include_str!("testdata/public.json")).unwrap();
        let mut k = all[name].clone();
        k["kid"] = kid.into();
        k
    }

    /// A source whose answer the test changes, counting fetches.
    pub(crate) struct FakeSource {
        pub doc: Mutex<Result<serde_json::Value, String>>,
        pub calls: AtomicU64,
    }

    impl FakeSource {
        pub(crate) fn new(keys: Vec<serde_json::Value>) -> Arc<Self> {
            Arc::new(FakeSource {
                doc: Mutex::new(Ok(serde_json::json!({ "keys": keys }))),
                calls: AtomicU64::new(0),
            })
        }
    }

    impl JwksSource for FakeSource {
        fn fetch(&self) -> BoxFuture<'_, Result<serde_json::Value, String>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let r = self.doc.lock().clone();
            Box::pin(async move { r })
        }
    }

    #[tokio::test]
    async fn rotation_is_picked_up_on_an_unknown_kid() {
        let src = FakeSource::new(vec![test_jwk("rsa1", "k1")]);
        let cache = JwksCache::new(src.clone(), Duration::ZERO, Duration::from_secs(3600));
        cache.refresh_if_stale().await;
        assert!(cache.keys().by_kid.contains_key("k1"));
        cache.refresh_if_stale().await;
        assert_eq!(src.calls.load(Ordering::Relaxed), 1, "fresh keys are not fetched again");
        // The provider rotates: k2 appears, k1 goes.
        *src.doc.lock() = Ok(serde_json::json!({"keys": [test_jwk("rsa2", "k2")]}));
        cache.refresh_for_unknown_key().await;
        let keys = cache.keys();
        assert!(keys.by_kid.contains_key("k2") && !keys.by_kid.contains_key("k1"));
        assert_eq!(keys.candidates(Some("k2"), Algorithm::RS256).len(), 1);
        assert!(
            keys.candidates(Some("k2"), Algorithm::HS256).is_empty(),
            "never HMAC with a public key"
        );
        assert!(
            keys.candidates(Some("k2"), Algorithm::RS384).is_empty(),
            "the key's own alg is pinned"
        );
    }

    #[tokio::test]
    async fn unknown_kids_refresh_at_most_once_per_interval() {
        let src = FakeSource::new(vec![test_jwk("rsa1", "k1")]);
        let cache = JwksCache::new(src.clone(), Duration::from_secs(3600), Duration::from_secs(7200));
        cache.refresh_if_stale().await;
        for _ in 0..50 {
            cache.refresh_for_unknown_key().await;
        }
        assert_eq!(src.calls.load(Ordering::Relaxed), 1, "50 random kids: no extra fetch");
        assert_eq!(cache.stats.throttled.get(), 50);
    }

    #[tokio::test]
    async fn a_failed_fetch_keeps_the_keys() {
        let src = FakeSource::new(vec![test_jwk("rsa1", "k1"), test_jwk("rsa2", "k2")]);
        let cache = JwksCache::new(src.clone(), Duration::ZERO, Duration::ZERO);
        cache.refresh_if_stale().await;
        assert_eq!(cache.keys().len(), 2);
        *src.doc.lock() = Err("connection refused".into());
        cache.refresh_if_stale().await;
        cache.refresh_for_unknown_key().await;
        assert_eq!(cache.keys().len(), 2, "keys survive a provider outage");
        *src.doc.lock() = Ok(serde_json::json!({"keys": []}));
        cache.refresh_for_unknown_key().await;
        assert_eq!(cache.keys().len(), 2, "an empty set does not wipe the keys either");
        assert_eq!(cache.stats.failures.get(), 3);
        assert_eq!(cache.stats.fetches.get(), 4);
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": test_jwk("rsa1", "x")["n"], "e": "AQAB"},
            {"kty": "weird", "kid": "w"},
            test_jwk("rsa1", "good"),
            {"kty": "RSA", "n": test_jwk("rsa2", "x")["n"], "e": "AQAB"},
        ]});
        let set = KeySet::parse(&doc).unwrap();
        assert_eq!(set.by_kid.keys().collect::<Vec<_>>(), vec!["good"]);
        assert_eq!(set.without_kid.len(), 1);
        assert_eq!(set.candidates(None, Algorithm::RS256).len(), 2);
        assert!(KeySet::parse(&serde_json::json!({"nope": 1})).is_err());
    }
}
