//! Email over SMTP (lettre, rustls): STARTTLS required by default, a plain-text and an
//! HTML body (multipart/alternative), and the delivery key as `X-Gpuwarden-Delivery`
//! so mail filters can drop a repeat.

use super::{BoxFuture, BuildContext, BuildError, Sink, SinkError};
use crate::config::EmailConfig;
use crate::message::{rfc3339, Notification};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;

pub struct Email {
    name: String,
    receiver: String,
    from: Mailbox,
    to: Vec<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl Email {
    pub fn new(name: &str, c: &EmailConfig, ctx: &BuildContext<'_>) -> Result<Self, BuildError> {
        let invalid = |problem: String| BuildError::Invalid {
            sink: name.into(),
            problem,
        };
        let from: Mailbox = c.from.parse().map_err(|e| invalid(format!("from '{}': {e}", c.from)))?;
        let to =
            c.to.iter()
                .map(|t| t.parse::<Mailbox>().map_err(|e| invalid(format!("to '{t}': {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(invalid("needs at least one recipient in `to`".into()));
        }
        let port = c.port.unwrap_or(587);
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)
            .port(port)
            .timeout(Some(ctx.settings.timeout));
        if c.starttls.unwrap_or(true) {
            let mut params = TlsParameters::builder(c.host.clone());
            if let Some(ca) = &c.ca_file {
                let pem = std::fs::read(ca).map_err(|e| invalid(format!("reading ca_file {}: {e}", ca.display())))?;
                let cert =
                    Certificate::from_pem(&pem).map_err(|e| invalid(format!("ca_file {}: {e}", ca.display())))?;
                params = params
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(cert);
            }
            let params = params.build_rustls().map_err(|e| invalid(format!("TLS setup: {e}")))?;
            b = b.tls(Tls::Required(params));
        }
        if let Some(user) = &c.username {
            let password = c.secret().require(name)?;
            b = b.credentials(Credentials::new(user.clone(), password.expose().to_string()));
        }
        Ok(Email {
            name: name.into(),
            receiver: format!("SMTP {}:{port}", c.host),
            from,
            to,
            transport: b.build(),
        })
    }

    fn message(&self, n: &Notification) -> Result<Message, SinkError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(format!("[gpuwarden] {}", n.title()))
            .header(DeliveryKey(n.delivery_key.clone()));
        for t in &self.to {
            b = b.to(t.clone());
        }
        b.multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text(n)))
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html(n))),
        )
        .map_err(|e| SinkError::Smtp {
            sink: self.name.clone(),
            receiver: self.receiver.clone(),
            cause: format!("building the message: {e}"),
            permanent: true,
        })
    }
}

/// `X-Gpuwarden-Delivery: inc-000042#3`.
#[derive(Clone)]
struct DeliveryKey(String);

impl lettre::message::header::Header for DeliveryKey {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("X-Gpuwarden-Delivery")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(DeliveryKey(s.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

fn facts(n: &Notification) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("Severity", n.severity.as_str().to_string()),
        ("Status", n.status.as_str().to_string()),
        ("Transition", n.transition.as_str().to_string()),
        ("Rule", n.rule.clone()),
        ("Node", n.node.clone()),
    ];
    if let Some(g) = &n.gpu {
        f.push(("GPU", g.clone()));
    }
    if let Some(ns) = &n.namespace {
        f.push(("Namespace", ns.clone()));
    }
    f.push(("Recommended action", n.action_text.clone()));
    f.push(("Incident", n.incident.clone()));
    f.push(("Started", rfc3339(n.started_ms)));
    if let Some(e) = n.ended_ms {
        f.push(("Ended", rfc3339(e)));
    }
    f.push(("Delivery key", n.delivery_key.clone()));
    if let Some(u) = &n.url {
        f.push(("Link", u.clone()));
    }
    f
}

/// The plain-text body.
pub fn text(n: &Notification) -> String {
    let mut s = format!("{}\n\n{}\n\n", n.title(), n.summary);
    for (k, v) in facts(n) {
        s.push_str(&format!("{k}: {v}\n"));
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The HTML body (inline styles only: mail clients drop style sheets).
pub fn html(n: &Notification) -> String {
    let mut rows = String::new();
    for (k, v) in facts(n) {
        rows.push_str(&format!(
            "<tr><th style=\"text-align:left;padding-right:1em\">{}</th><td>{}</td></tr>",
            esc(k),
            esc(&v)
        ));
    }
    format!(
        "<!DOCTYPE html><html><body><h2>{}</h2><p>{}</p><table>{rows}</table></body></html>",
        esc(&n.title()),
        esc(&n.summary)
    )
}

impl Sink for Email {
    fn name(&self) -> &str {
        &self.name
    }
    fn type_name(&self) -> &'static str {
        "email"
    }
    fn deliver<'a>(&'a self, batch: &'a [Arc<Notification>]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            for n in batch {
                let m = self.message(n)?;
                self.transport.send(m).await.map_err(|e| SinkError::Smtp {
                    sink: self.name.clone(),
                    receiver: self.receiver.clone(),
                    permanent: e.is_permanent(),
                    cause: e.to_string(),
                })?;
            }
            Ok(())
        })
    }
}
