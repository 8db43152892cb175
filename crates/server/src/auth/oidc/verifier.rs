//! The JWT [`Verifier`]: a bearer token from the OpenID provider is accepted when its
//! signature checks with one of the provider's published keys, with a pinned asymmetric
//! algorithm, and its issuer, audience and validity window are ours; its claims then map
//! to a role and tenant ([`super::claims`]). The same checks verify the web sign-in's ID
//! tokens, with the client id as audience and the sign-in's nonce.

use super::claims::{principal_prefix, ClaimMapping};
use super::jwks::JwksCache;
use crate::auth::{Denied, Verifier};
use crate::principal::Principal;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use std::sync::Arc;

/// Algorithms accepted when the configuration names none.
pub const DEFAULT_ALGORITHMS: &[Algorithm] = &[Algorithm::RS256, Algorithm::ES256];

/// Parses a configured algorithm name: asymmetric ones only (HS* would turn a public key
/// into a shared secret; `none` is no signature).
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let alg: Algorithm = name.parse().map_err(|_| {
        format!("unknown JWT algorithm {name:?}; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA")
    })?;
    if alg.family() == jsonwebtoken::AlgorithmFamily::Hmac {
        return Err(format!(
            "{name} is a shared-secret algorithm; OpenID tokens here must be signed with the provider's private key \
             (RS256, ES256, …)"
        ));
    }
    Ok(alg)
}

/// What a token is checked as.
#[derive(Debug, Clone, Copy)]
pub enum Purpose<'a> {
    /// An API access token: audience one of the configured ones.
    Access,
    /// The ID token of a web sign-in: audience the client id, and the sign-in's nonce.
    IdToken { client_id: &'a str, nonce: &'a str },
}

/// Verifies the provider's JWTs.
pub struct JwtVerifier {
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway_ms: i64,
    mapping: ClaimMapping,
    jwks: Arc<JwksCache>,
    prefix: String,
}

fn refused(why: impl Into<String>) -> Denied {
    Denied::Invalid(why.into())
}

impl JwtVerifier {
    pub fn new(
        issuer: String,
        audiences: Vec<String>,
        algorithms: Vec<Algorithm>,
        leeway: std::time::Duration,
        mapping: ClaimMapping,
        jwks: Arc<JwksCache>,
    ) -> Self {
        JwtVerifier {
            prefix: principal_prefix(&issuer),
            issuer,
            audiences,
            algorithms,
            leeway_ms: i64::try_from(leeway.as_millis()).unwrap_or(i64::MAX),
            mapping,
            jwks,
        }
    }

    pub fn jwks(&self) -> &Arc<JwksCache> {
        &self.jwks
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Refreshes the keys when `token` names a key we do not hold, or when they are old
    /// (both within the cache's rate limit).
    pub async fn prepare_keys(&self, token: &str) {
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return;
        };
        let keys = self.jwks.keys();
        let known = match header.kid.as_deref() {
            Some(kid) => keys.by_kid.contains_key(kid),
            None => !keys.is_empty(),
        };
        if known {
            self.jwks.refresh_if_stale().await;
        } else {
            self.jwks.refresh_for_unknown_key().await;
        }
    }

    /// The verified claims of `token` and its expiry (ms), or why it is refused.
    pub fn check(&self, token: &str, now_ms: i64, purpose: Purpose<'_>) -> Result<(Map<String, Value>, i64), Denied> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Denied::Malformed)?;
        if !self.algorithms.contains(&header.alg) {
            return Err(refused(format!(
                "the token is signed with {:?}, which this server does not accept ([auth.oidc] algorithms)",
                header.alg
            )));
        }
        let candidates = self.jwks.keys().candidates(header.kid.as_deref(), header.alg);
        if candidates.is_empty() {
            return Err(refused(match header.kid {
                Some(kid) => format!("the token's signing key {kid:?} is not one the OpenID provider publishes"),
                None => "no key of the OpenID provider fits the token".to_string(),
            }));
        }
        // Signature only here; the claims are checked below against our clock, so that
        // every refusal says exactly what was wrong.
        let mut v = Validation::new(header.alg);
        v.validate_exp = false;
        v.validate_nbf = false;
        v.validate_aud = false;
        v.required_spec_claims.clear();
        let claims = candidates
            .iter()
            .find_map(|k| jsonwebtoken::decode::<Map<String, Value>>(token, &k.decoding, &v).ok())
            .ok_or_else(|| refused("the token's signature does not verify with the OpenID provider's keys"))?
            .claims;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return Err(refused(format!(
                "the token was issued by {}, not by this server's OpenID provider",
                claims.get("iss").map_or("nobody".to_string(), |v| v.to_string())
            )));
        }
        let aud: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let audience_ok = match purpose {
            Purpose::Access => aud.iter().any(|a| self.audiences.iter().any(|x| x == a)),
            Purpose::IdToken { client_id, .. } => aud.contains(&client_id),
        };
        if !audience_ok {
            return Err(refused(format!(
                "the token is meant for {aud:?}, not for this server (audience {:?})",
                match purpose {
                    Purpose::Access => self.audiences.clone(),
                    Purpose::IdToken { client_id, .. } => vec![client_id.to_string()],
                }
            )));
        }
        let secs = |name: &str| claims.get(name).and_then(Value::as_f64).map(|s| (s * 1000.0) as i64);
        let exp_ms = secs("exp").ok_or_else(|| refused("the token has no expiry (`exp`)"))?;
        if now_ms >= exp_ms.saturating_add(self.leeway_ms) {
            return Err(refused(
                "the token has expired (`exp`); get a fresh one from the OpenID provider",
            ));
        }
        if secs("nbf").is_some_and(|nbf| now_ms.saturating_add(self.leeway_ms) < nbf) {
            return Err(refused(
                "the token is not valid yet (`nbf`); check the clocks of this server and the provider",
            ));
        }
        if let Purpose::IdToken { nonce, client_id } = purpose {
            if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
                return Err(refused("the ID token's nonce is not this sign-in's"));
            }
            // OpenID Connect Core §3.1.3.7: an authorized party, when named, must be us.
            if claims
                .get("azp")
                .and_then(Value::as_str)
                .is_some_and(|azp| azp != client_id)
            {
                return Err(refused("the ID token was issued to another client (`azp`)"));
            }
        }
        Ok((claims, exp_ms))
    }

    /// The principal of verified claims.
    pub fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, Denied> {
        self.mapping
            .principal(&self.issuer, claims)
            .map_err(|e| refused(e.to_string()))
    }
}

impl Verifier for JwtVerifier {
    fn recognizes(&self, bearer: &str) -> bool {
        // A compact JWS: three base64url parts, the header a JSON object ("eyJ" = `{"`).
        bearer.starts_with("eyJ") && bearer.split('.').count() == 3
    }

    fn verify(&self, bearer: &str, now_ms: i64) -> Result<(Principal, Option<i64>), Denied> {
        let (claims, exp_ms) = self.check(bearer, now_ms, Purpose::Access)?;
        Ok((self.principal(&claims)?, Some(exp_ms)))
    }

    fn prepare<'a>(&'a self, bearer: &'a str) -> super::jwks::BoxFuture<'a, ()> {
        Box::pin(self.prepare_keys(bearer))
    }

    fn still_valid(&self, principal_id: &str, _now_ms: i64) -> bool {
        // Sessions signed in through the provider last their own lifetime
        // ([auth] session_ttl); the provider is not asked again.
        principal_id.starts_with(&self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::super::jwks::tests::{test_jwk, FakeSource};
    use super::*;
    use crate::principal::Role;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::time::Duration;

    const ISS: &str = "https://idp.example";
    const NOW_S: i64 = 1_800_000_000;

    fn rsa1() -> EncodingKey {
        EncodingKey::from_rsa_pem(include_bytes!("testdata/rsa1.pem")).unwrap()
    }

    fn sign(kid: Option<&str>, alg: Algorithm, key: &EncodingKey, claims: Value) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&h, &claims, key).unwrap()
    }

    fn claims() -> Value {
        json!({"iss": ISS, "aud": "gpuwarden", "sub": "alice", "exp": NOW_S + 300, "iat": NOW_S,
               "groups": ["gpu-ops"], "tenant": "team-a"})
    }

    async fn verifier() -> (JwtVerifier, Arc<FakeSource>) {
        let src = FakeSource::new(vec![test_jwk("rsa1", "k1"), test_jwk("ec1", "e1")]);
        let cache = Arc::new(JwksCache::new(src.clone(), Duration::ZERO, Duration::from_secs(3600)));
        let mut roles = BTreeMap::new();
        roles.insert(Role::Operator, vec!["gpu-ops".to_string()]);
        let v = JwtVerifier::new(
            ISS.into(),
            vec!["gpuwarden".into()],
            DEFAULT_ALGORITHMS.to_vec(),
            Duration::from_secs(30),
            ClaimMapping {
                role_claim: "groups".into(),
                roles,
                tenant_claim: Some("tenant".into()),
            },
            cache,
        );
        v.jwks().refresh_if_stale().await;
        (v, src)
    }

    fn now_ms() -> i64 {
        NOW_S * 1000
    }

    #[tokio::test]
    async fn a_valid_token_maps_to_its_role_and_tenant() {
        let (v, _) = verifier().await;
        let t = sign(Some("k1"), Algorithm::RS256, &rsa1(), claims());
        assert!(v.recognizes(&t));
        let (p, until) = v.verify(&t, now_ms()).unwrap();
        assert_eq!(p.role, Role::Operator);
        assert_eq!(p.tenant.as_deref(), Some("team-a"));
        assert_eq!(p.id, "oidc:https://idp.example#alice");
        assert_eq!(until, Some((NOW_S + 300) * 1000));
        assert!(v.still_valid(&p.id, now_ms()));
        assert!(!v.still_valid("tok-0123", now_ms()));
        // ES256 with the EC key.
        let ec = EncodingKey::from_ec_pem(include_bytes!("testdata/ec1.pem")).unwrap();
        let t = sign(Some("e1"), Algorithm::ES256, &ec, claims());
        assert!(v.verify(&t, now_ms()).is_ok());
        // Audience as an array.
        let mut c = claims();
        c["aud"] = json!(["other", "gpuwarden"]);
        assert!(v
            .verify(&sign(Some("k1"), Algorithm::RS256, &rsa1(), c), now_ms())
            .is_ok());
    }

    fn refused_because(v: &JwtVerifier, t: &str, now: i64) -> String {
        match v.verify(t, now) {
            Ok(p) => panic!("accepted: {p:?}"),
            Err(d) => d.message(),
        }
    }

    #[tokio::test]
    async fn wrong_issuer_audience_time_and_groups_are_refused() {
        let (v, _) = verifier().await;
        let with = |k: &str, val: Value| {
            let mut c = claims();
            c[k] = val;
            sign(Some("k1"), Algorithm::RS256, &rsa1(), c)
        };
        assert!(refused_because(&v, &with("iss", json!("https://evil")), now_ms()).contains("issued by"));
        assert!(refused_because(&v, &with("aud", json!("other-api")), now_ms()).contains("meant for"));
        assert!(refused_because(&v, &with("exp", json!(NOW_S - 31)), now_ms()).contains("expired"));
        assert!(
            v.verify(&with("exp", json!(NOW_S - 29)), now_ms()).is_ok(),
            "within the leeway"
        );
        assert!(refused_because(&v, &with("nbf", json!(NOW_S + 31)), now_ms()).contains("not valid yet"));
        assert!(v.verify(&with("nbf", json!(NOW_S + 29)), now_ms()).is_ok());
        assert!(refused_because(&v, &with("groups", json!(["interns"])), now_ms()).contains("maps to a role"));
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert!(refused_because(&v, &sign(Some("k1"), Algorithm::RS256, &rsa1(), c), now_ms()).contains("no expiry"));
    }

    #[tokio::test]
    async fn forged_unknown_key_and_bad_algorithms_are_refused() {
        let (v, _) = verifier().await;
        // Signed by a key the provider does not publish, under a published kid.
        let other = EncodingKey::from_rsa_pem(include_bytes!("testdata/rsa2.pem")).unwrap();
        let forged = sign(Some("k1"), Algorithm::RS256, &other, claims());
        assert!(refused_because(&v, &forged, now_ms()).contains("signature"));
        // A key id nobody published.
        let unknown = sign(Some("nope"), Algorithm::RS256, &other, claims());
        assert!(refused_because(&v, &unknown, now_ms()).contains("\"nope\""));
        // HS256 "signed" with the public key's modulus as the secret: the classic confusion.
        let n = test_jwk("rsa1", "k1")["n"].as_str().unwrap().to_string();
        let hs = sign(
            Some("k1"),
            Algorithm::HS256,
            &EncodingKey::from_secret(n.as_bytes()),
            claims(),
        );
        assert!(refused_because(&v, &hs, now_ms()).contains("does not accept"));
        // alg none: header {"alg":"none"} with an empty signature.
        let b64 = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
        };
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","kid":"k1"}"#),
            b64(&claims().to_string())
        );
        assert!(v.verify(&none, now_ms()).is_err());
        // Tampered payload with the original signature.
        let good = sign(Some("k1"), Algorithm::RS256, &rsa1(), claims());
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims();
        c["groups"] = json!(["gpu-admins"]);
        let tampered = format!("{}.{}.{}", parts[0], b64(&c.to_string()), parts[2]);
        assert!(refused_because(&v, &tampered, now_ms()).contains("signature"));
        assert!(v.verify("eyJ.not.jwt", now_ms()).is_err());
        assert!(!v.recognizes("gpw_abc"));
    }

    #[tokio::test]
    async fn an_unknown_kid_refreshes_the_keys_once() {
        let (v, src) = verifier().await;
        let rsa2 = EncodingKey::from_rsa_pem(include_bytes!("testdata/rsa2.pem")).unwrap();
        let t = sign(Some("k2"), Algorithm::RS256, &rsa2, claims());
        v.prepare(&t).await;
        assert!(v.verify(&t, now_ms()).is_err(), "not published yet");
        *src.doc.lock() = Ok(json!({"keys": [test_jwk("rsa1", "k1"), test_jwk("rsa2", "k2")]}));
        v.prepare(&t).await;
        assert!(v.verify(&t, now_ms()).is_ok(), "rotated in");
        let before = src.calls.load(std::sync::atomic::Ordering::Relaxed);
        v.prepare(&t).await;
        assert_eq!(
            src.calls.load(std::sync::atomic::Ordering::Relaxed),
            before,
            "known kid, fresh keys: no fetch"
        );
    }

    #[tokio::test]
    async fn id_tokens_check_client_id_and_nonce() {
        let (v, _) = verifier().await;
        let mut c = claims();
        c["aud"] = json!("ui-client");
        c["nonce"] = json!("n-123");
        let t = sign(Some("k1"), Algorithm::RS256, &rsa1(), c);
        let id = |nonce| Purpose::IdToken {
            client_id: "ui-client",
            nonce,
        };
        assert!(v.check(&t, now_ms(), id("n-123")).is_ok());
        assert!(v.check(&t, now_ms(), id("n-999")).is_err());
        assert!(
            v.check(&t, now_ms(), Purpose::Access).is_err(),
            "an ID token is no API access token"
        );
        let mut c = claims();
        c["aud"] = json!(["ui-client", "other-client"]);
        c["nonce"] = json!("n-123");
        c["azp"] = json!("other-client");
        let t = sign(Some("k1"), Algorithm::RS256, &rsa1(), c);
        assert!(v.check(&t, now_ms(), id("n-123")).is_err(), "issued to another client");
    }

    #[test]
    fn only_asymmetric_algorithms_can_be_configured() {
        assert_eq!(parse_algorithm("RS256"), Ok(Algorithm::RS256));
        assert_eq!(parse_algorithm("ES256"), Ok(Algorithm::ES256));
        assert!(parse_algorithm("HS256").unwrap_err().contains("shared-secret"));
        assert!(parse_algorithm("none").is_err());
    }
}
