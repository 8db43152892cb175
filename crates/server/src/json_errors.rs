//! Every error status is JSON: the router's own rejections (404, 405, 413, 415, …), the
//! request timeout (408) and the request-head limits (414, 431) are answered with the
//! project's error body (`{"error": {"code": "...", "message": "..."}}`, see
//! [`crate::error`]), like the handlers' own errors.
//!
//! Framework answers come as plain text or an empty body; they are rewritten here, with
//! a stable code per status and the framework's text (when there is one) as the message.
//! Answers that already are JSON, or are HTML (the UI), are left alone.
//!
//! Request-head limits are checked here, below hyper's own (hyper answers a bare 431 or
//! 414 past its buffer, which no service can change): a URI longer than [`MAX_URI_LEN`]
//! is 414, more than [`MAX_HEADERS`] headers or more than [`MAX_HEADER_BYTES`] of them
//! is 431.

use crate::ApiError;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Duration;
use tower_http::timeout::TimeoutLayer;

/// Longest request target (path and query), bytes.
pub const MAX_URI_LEN: usize = 8 * 1024;
/// Most request headers.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of request headers (names and values).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// `router` with the request timeout and the JSON rewriting of error answers.
pub fn wrap(router: axum::Router, request_timeout: Duration) -> axum::Router {
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(axum::middleware::from_fn(guard))
}

/// The stable code of an error status.
pub fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable_entity",
        429 => "too_many_requests",
        431 => "headers_too_large",
        500 => "internal",
        503 => "unavailable",
        _ => "error",
    }
}

fn default_message(status: StatusCode) -> String {
    match status.as_u16() {
        404 => "no such route; see /api/docs for the API".into(),
        405 => "this route does not take that method; see the Allow header and /api/docs".into(),
        408 => "the request took too long to arrive or to answer; retry, with a smaller body if it has one".into(),
        413 => "the request body is larger than this route accepts; send less".into(),
        414 => format!("the request target is longer than {MAX_URI_LEN} bytes; shorten the path and query"),
        415 => "unsupported Content-Type; send `Content-Type: application/json`".into(),
        431 => format!("more than {MAX_HEADERS} headers or {MAX_HEADER_BYTES} bytes of them; send fewer"),
        _ => format!("the request failed ({status})"),
    }
}

async fn guard(req: Request, next: Next) -> Response {
    if req.uri().to_string().len() > MAX_URI_LEN {
        return error(StatusCode::URI_TOO_LONG, None);
    }
    let headers = req.headers();
    let header_bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return error(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, None);
    }
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let plain = match res.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(ct) => ct.to_str().is_ok_and(|ct| ct.starts_with("text/plain")),
    };
    if !plain {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    // Framework messages are short; a longer or unreadable body is replaced by the default.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let json = error(status, text);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let (_, body) = json.into_parts();
    Response::from_parts(parts, body)
}

fn error(status: StatusCode, message: Option<String>) -> Response {
    ApiError {
        status,
        code: code_of(status),
        message: message.unwrap_or_else(|| default_message(status)),
    }
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    fn app() -> axum::Router {
        let r = axum::Router::new()
            .route("/json", post(|_: axum::Json<serde_json::Value>| async { "ok" }))
            .route("/small", post(|_: axum::body::Bytes| async { "ok" }))
            .layer(axum::extract::DefaultBodyLimit::max(16))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        wrap(r, Duration::from_millis(100))
    }

    async fn call(req: axum::http::Request<axum::body::Body>) -> (StatusCode, serde_json::Value) {
        let res = app().oneshot(req).await.unwrap();
        let status = res.status();
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json", "{status}");
        let body = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&body).expect("a JSON body"))
    }

    fn req(method: &str, uri: &str) -> axum::http::request::Builder {
        axum::http::Request::builder().method(method).uri(uri)
    }

    #[tokio::test]
    async fn framework_errors_are_json_with_stable_codes() {
        let empty = axum::body::Body::empty;
        let cases = [
            (req("GET", "/nope").body(empty()).unwrap(), 404, "not_found"),
            (req("GET", "/json").body(empty()).unwrap(), 405, "method_not_allowed"),
            (
                req("POST", "/small").body("x".repeat(100).into()).unwrap(),
                413,
                "payload_too_large",
            ),
            (
                req("GET", &format!("/{}", "a".repeat(MAX_URI_LEN + 1)))
                    .body(empty())
                    .unwrap(),
                414,
                "uri_too_long",
            ),
            (
                req("POST", "/json")
                    .header("content-type", "text/plain")
                    .body("{}".into())
                    .unwrap(),
                415,
                "unsupported_media_type",
            ),
            (req("GET", "/slow").body(empty()).unwrap(), 408, "request_timeout"),
        ];
        for (r, status, code) in cases {
            let (s, body) = call(r).await;
            assert_eq!(s.as_u16(), status, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
            assert!(!body["error"]["message"].as_str().unwrap().is_empty());
        }
        let mut many = req("GET", "/slow");
        for i in 0..=MAX_HEADERS {
            many = many.header(format!("x-h{i}"), "v");
        }
        let (s, body) = call(many.body(empty()).unwrap()).await;
        assert_eq!(
            (s.as_u16(), body["error"]["code"].as_str()),
            (431, Some("headers_too_large"))
        );
        let big = req("GET", "/slow").header("x-big", "v".repeat(MAX_HEADER_BYTES + 1));
        let (s, _) = call(big.body(empty()).unwrap()).await;
        assert_eq!(s.as_u16(), 431);
    }
}
