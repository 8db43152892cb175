//! The HTTP POST every HTTP sink makes, with one way of turning the receiver's answer
//! into a [`SinkError`] (status and the start of the body, never the URL of a webhook
//! that embeds a token).

use super::SinkError;
use reqwest::RequestBuilder;

/// How much of an error body is kept: enough to read the receiver's reason.
const MAX_ERROR_BODY: usize = 512;

/// Sends `req` and returns the body of a 2xx answer.
pub async fn send(sink: &str, receiver: &str, req: RequestBuilder) -> Result<String, SinkError> {
    let resp = req.send().await.map_err(|e| SinkError::Transport {
        sink: sink.into(),
        receiver: receiver.into(),
        cause: describe(e),
    })?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.is_success() {
        return Ok(body);
    }
    Err(SinkError::Rejected {
        sink: sink.into(),
        receiver: receiver.into(),
        status: status.as_u16(),
        body: truncate(&body),
    })
}

/// A reqwest error without its URL, with its causes.
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

pub(crate) fn truncate(s: &str) -> String {
    let s = s.trim();
    if s.len() <= MAX_ERROR_BODY {
        return s.to_string();
    }
    let mut end = MAX_ERROR_BODY;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `scheme://host:port` of a URL: names a receiver without its path or credentials.
pub(crate) fn origin(url: &reqwest::Url) -> String {
    match url.port() {
        Some(p) => format!("{}://{}:{p}", url.scheme(), url.host_str().unwrap_or("?")),
        None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or("?")),
    }
}
