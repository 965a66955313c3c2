//! Responses: a plugin's reply or an OCI error as an HTTP response, and the one log line of
//! each request, written when its body is done (for a streamed blob, when the last byte left
//! or the transfer broke), with container tokens and client-supplied values made safe to log.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use acr_plugins::inject_layer::token as container_token;
use acr_plugins::oci::{Body, RegistryError};
use acr_plugins::registry::Reply;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::Response;

use super::observe;

pub type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Now as RFC 3339 UTC.
pub fn rfc3339_now() -> String {
    acr_plugins::clock::rfc3339(acr_plugins::clock::now_ms())
}

/// The error for a request to a proxy a reload removed.
pub(super) fn proxy_gone() -> RegistryError {
    RegistryError::new(
        503,
        "UNAVAILABLE",
        "the running pipeline no longer declares this proxy",
    )
}

pub(super) fn text_reply(status: u16, content_type: &str, text: String) -> Reply {
    Reply {
        status,
        headers: vec![
            ("Content-Type".into(), content_type.into()),
            ("Content-Length".into(), text.len().to_string()),
        ],
        body: Body::Full(Bytes::from(text)),
    }
}

pub(super) fn json_reply(value: &serde_json::Value) -> Reply {
    let text = value.to_string();
    Reply {
        status: 200,
        headers: vec![
            ("Content-Type".into(), "application/json".into()),
            ("Content-Length".into(), text.len().to_string()),
        ],
        body: Body::Full(Bytes::from(text)),
    }
}

/// A path as logs and `/status` show it: a container token replaced by its id.
pub(super) fn redact_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix("/v2/wt/") {
        Some(rest) => {
            let (token, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let id = container_token::token_id(token);
            std::borrow::Cow::Owned(if tail.is_empty() {
                format!("/v2/wt/token-{id}")
            } else {
                format!("/v2/wt/token-{id}/{tail}")
            })
        }
        None => std::borrow::Cow::Borrowed(path),
    }
}

fn header_response(status: u16, headers: &[(String, String)]) -> hyper::http::response::Builder {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder.header("Docker-Distribution-API-Version", "registry/2.0")
}

/// A reply as a response; HEAD never has a body. With `log`, the request's log line is
/// written when the body is done.
pub fn reply_response(
    reply: Reply,
    method: &str,
    log: Option<RequestLine>,
) -> Response<ResponseBody> {
    let builder = header_response(reply.status, &reply.headers);
    let body: ResponseBody = match (method, reply.body) {
        ("HEAD", _) | (_, Body::Empty) => {
            if let Some(l) = log {
                l.emit();
            }
            Empty::new().map_err(|e| match e {}).boxed_unsync()
        }
        (_, Body::Full(bytes)) => {
            if let Some(mut l) = log {
                l.bytes = bytes.len() as u64;
                l.emit();
            }
            Full::new(bytes).map_err(|e| match e {}).boxed_unsync()
        }
        (_, Body::Stream(stream)) => {
            let promised = reply
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok());
            let stream = Logged {
                inner: stream,
                line: log,
                promised,
            };
            BodyExt::boxed_unsync(StreamBody::new(stream.map_ok(Frame::data)))
        }
    };
    builder.body(body).unwrap_or_else(|_| {
        error_response(&RegistryError::new(
            500,
            "UNKNOWN",
            "the reply had an invalid header",
        ))
    })
}

/// The one log line of a request.
#[derive(Debug)]
pub struct RequestLine {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) ns: String,
    pub(super) upstream: String,
    pub(super) status: u16,
    pub(super) started: Instant,
    /// Body bytes sent.
    pub(super) bytes: u64,
    /// Why a streamed body broke off.
    pub(super) failed: Option<String>,
    pub(super) observer: Option<Arc<observe::Observer>>,
}

impl RequestLine {
    pub(super) fn emit(&self) {
        if let Some(o) = &self.observer {
            o.record(observe::Finished {
                at_ms: acr_plugins::clock::now_ms(),
                method: self.method.clone(),
                path: self.path.clone(),
                upstream: self.upstream.clone(),
                status: self.status,
                bytes: self.bytes,
                ms: self.started.elapsed().as_millis() as u64,
            });
        }
        // The same fields at either level; a broken transfer says why.
        macro_rules! request_line {
            ($level:ident $(, $why:expr)?) => {
                tracing::$level!(
                    method = %self.method,
                    path = %self.path,
                    ns = %self.ns,
                    upstream = %self.upstream,
                    status = self.status,
                    bytes = self.bytes,
                    ms = self.started.elapsed().as_millis() as u64,
                    $(failed = %$why,)?
                    "request"
                )
            };
        }
        match &self.failed {
            None if tracing::enabled!(tracing::Level::INFO) => {
                let plain = crate::log_writer::plain_info(|out| {
                    let _ = writeln!(
                        out,
                        "request method={} path={} ns={} upstream={} status={} bytes={} ms={}",
                        self.method,
                        self.path,
                        self.ns,
                        self.upstream,
                        self.status,
                        self.bytes,
                        self.started.elapsed().as_millis()
                    );
                });
                if !plain {
                    request_line!(info)
                }
            }
            None => {}
            Some(why) => request_line!(warn, why),
        }
    }
}

/// A streamed body that counts what it passes on and writes the request's log line when it
/// ends, breaks, or is dropped (the client went away).
struct Logged {
    inner: acr_plugins::oci::BodyStream,
    line: Option<RequestLine>,
    /// The Content-Length sent: hyper may drop a body once that many bytes went out,
    /// without asking for its end.
    promised: Option<u64>,
}

impl futures_util::Stream for Logged {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        let item = futures_util::ready!(this.inner.as_mut().poll_next(cx));
        match &item {
            Some(Ok(chunk)) => {
                if let Some(l) = this.line.as_mut() {
                    l.bytes += chunk.len() as u64;
                }
            }
            Some(Err(e)) => {
                if let Some(mut l) = this.line.take() {
                    l.failed = Some(e.to_string());
                    l.emit();
                }
            }
            None => {
                if let Some(l) = this.line.take() {
                    l.emit();
                }
            }
        }
        Poll::Ready(item)
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(mut l) = self.line.take() {
            if self.promised != Some(l.bytes) {
                l.failed = Some("the client went away before the end".into());
            }
            l.emit();
        }
    }
}

/// A client-supplied value as one log token: whitespace and control characters escaped, so
/// `?ns=x%0Afake line` cannot forge a log line.
pub(super) fn loggable(value: &str) -> String {
    value
        .chars()
        .flat_map(|c| {
            if c == ' ' {
                "\\u{20}".chars().collect::<Vec<_>>()
            } else if c.is_whitespace() || c.is_control() || c == '"' || c == '\\' {
                c.escape_default().collect()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// An OCI error response.
pub fn error_response(e: &RegistryError) -> Response<ResponseBody> {
    let body = e.body();
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Content-Length".to_string(), body.len().to_string()),
    ];
    headers.extend(e.headers.iter().cloned());
    let full = Full::new(Bytes::from(body))
        .map_err(|e| match e {})
        .boxed_unsync();
    let mut response = header_response(e.status, &headers)
        .body(full)
        .unwrap_or_else(|_| Response::new(Empty::new().map_err(|e| match e {}).boxed_unsync()));
    if let Some(reason) = reason_phrase(e) {
        response.extensions_mut().insert(reason);
    }
    response
}

/// For a 5xx, an HTTP/1 status line that says why (`502 Bad Gateway: upstream ... is
/// unreachable`): clients such as skopeo, docker and containerd print the status line of a
/// 5xx and never read its body, so without this a user sees only "502 Bad Gateway".
fn reason_phrase(e: &RegistryError) -> Option<hyper::ext::ReasonPhrase> {
    const MAX: usize = 240;
    if e.status < 500 {
        return None;
    }
    let canonical = hyper::StatusCode::from_u16(e.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut text = format!("{canonical}: ");
    for c in e.message.chars() {
        if text.len() >= MAX {
            text.push_str("...");
            break;
        }
        // A reason phrase is visible ASCII and spaces.
        text.push(if c.is_ascii_graphic() { c } else { ' ' });
    }
    hyper::ext::ReasonPhrase::try_from(text).ok()
}

#[cfg(test)]
mod tests {
    use super::loggable;

    #[test]
    fn a_5xx_says_why_in_its_status_line() {
        use acr_plugins::oci::RegistryError;
        let e = RegistryError::bad_gateway("upstream x (http://x) is unreachable:\nrefused é");
        let r = super::reason_phrase(&e).unwrap();
        assert_eq!(
            r.as_bytes(),
            b"Bad Gateway: upstream x (http://x) is unreachable: refused  "
        );
        let long = RegistryError::bad_gateway("y".repeat(1000));
        assert!(super::reason_phrase(&long).unwrap().as_bytes().len() < 260);
        assert!(super::reason_phrase(&RegistryError::new(404, "NAME_UNKNOWN", "no")).is_none());
    }

    #[test]
    fn log_values_stay_one_token() {
        assert_eq!(loggable("docker.io"), "docker.io");
        assert_eq!(loggable("a b\nc\"d\\"), "a\\u{20}b\\nc\\\"d\\\\");
    }
}
