//! The generic webhook: the [`Notification`] as JSON (schema in `docs/notifications.md`),
//! signed so the receiver can check it came from us and was not altered:
//! `X-Gpuwarden-Signature: sha256=<hex HMAC-SHA256 of the exact body>` (GitHub's
//! convention, which many receivers already verify). `X-Gpuwarden-Delivery` carries the
//! delivery key, so a receiver can drop a repeat without parsing the body.

use super::{check_url, http, BoxFuture, BuildContext, BuildError, Sink, SinkError};
use crate::config::WebhookConfig;
use crate::message::Notification;
use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;

pub const SIGNATURE_HEADER: &str = "X-Gpuwarden-Signature";
pub const DELIVERY_HEADER: &str = "X-Gpuwarden-Delivery";

pub struct Webhook {
    name: String,
    url: reqwest::Url,
    receiver: String,
    secret: Option<Secret>,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(name: &str, c: &WebhookConfig, ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let url = check_url(name, &c.url)?;
        Ok(Webhook {
            name: name.into(),
            receiver: format!("webhook {}", http::origin(&url)),
            url,
            secret: c.secret().resolve(name)?,
            http: ctx.http.clone(),
        })
    }
}

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Sink for Webhook {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        "webhook"
    }
    fn deliver<'a>(&'a self, batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for n in batch {
                let body = serde_json::to_vec(&**n).expect("notifications serialize");
                let mut req = self
                    .http
                    .post(self.url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(DELIVERY_HEADER, &n.delivery_key);
                if let Some(s) = &self.secret {
                    req = req.header(SIGNATURE_HEADER, signature(s.expose().as_bytes(), &body));
                }
                http::send(&self.name, &self.receiver, req.body(body)).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
