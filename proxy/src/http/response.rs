//! Responses: a proxied body (streamed from the other side) or a short
//! local reply (400, 401, 403, 431, 502, 503, 504).

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// The body of every response the HTTP layer sends downstream.
pub(super) type Body = Either<Incoming, Full<Bytes>>;

/// Istio's (Envoy RBAC filter's) denial body.
pub(super) const RBAC_DENIED: &str = "RBAC: access denied";

/// A local reply with a short `text/plain` body.
pub(super) fn local(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(body.into())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// 403 with Istio's body.
pub(super) fn denied() -> Response<Body> {
    local(StatusCode::FORBIDDEN, RBAC_DENIED)
}

/// 403 for an upgrade to a protocol other than WebSocket (Envoy's
/// `upgrade_failed` local reply, empty body).
pub(super) fn upgrade_refused() -> Response<Body> {
    local(StatusCode::FORBIDDEN, Bytes::new())
}

/// 400 with `reason`.
pub(super) fn bad_request(reason: &'static str) -> Response<Body> {
    local(StatusCode::BAD_REQUEST, reason)
}

/// 431: the request head is larger than `[http] max_header_bytes`.
pub(super) fn header_too_large() -> Response<Body> {
    local(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request header fields too large",
    )
}

/// 503 / 502 / 504 for a failed upstream exchange.
pub(super) fn upstream_failure(failure: UpstreamFailure) -> Response<Body> {
    match failure {
        UpstreamFailure::Connect => {
            local(StatusCode::SERVICE_UNAVAILABLE, "upstream connect error")
        }
        UpstreamFailure::Exchange => local(StatusCode::BAD_GATEWAY, "upstream error"),
        UpstreamFailure::Timeout => local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
    }
}

/// How an upstream exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpstreamFailure {
    /// No connection (503).
    Connect,
    /// The connection failed or the response was invalid (502).
    Exchange,
    /// No response head within `request_timeout` (504).
    Timeout,
}

impl UpstreamFailure {
    /// The access log's detail.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "upstream_connect_failed",
            Self::Exchange => "upstream_failed",
            Self::Timeout => "upstream_timeout",
        }
    }
}

/// The checks every request head gets first, in both directions: a
/// lowercase HTTP/1.1 method is 400, an HTTP/2 head over `max_header_bytes`
/// is 431 (hyper bounds HTTP/1 heads itself). `None`: the head may proceed.
pub(super) fn refuse_head(
    parts: &http::request::Parts,
    max_header_bytes: usize,
    record: &mut super::log::Record,
) -> Option<Response<Body>> {
    use super::log::Outcome;
    if !super::headers::method_acceptable(parts) {
        record.fail(Outcome::BadRequest, "lowercase method");
        return Some(bad_request("invalid method"));
    }
    if parts.version == http::Version::HTTP_2
        && super::headers::head_size(&parts.headers) > max_header_bytes
    {
        record.fail(Outcome::BadRequest, "request head too large");
        return Some(header_too_large());
    }
    None
}
