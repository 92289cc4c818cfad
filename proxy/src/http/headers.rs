//! Request heads: the policy engine's view of a hyper request, the checks
//! made before it (method, head size), the normalized path forwarded, and
//! hop-by-hop header removal.

use http::Version;
use http::header::{
    CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::request::Parts;
use http::uri::PathAndQuery;

use crate::policy::{HttpRequest, JwtIdentity, PathNormalization, RequestError, normalize_path};

/// Set by the inbound proxy (never taken from the client).
pub(super) const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Hop-by-hop headers (RFC 9110 section 7.6.1, plus the legacy ones Envoy removes).
const HOP_BY_HOP: [&str; 3] = ["keep-alive", "proxy-connection", "http2-settings"];

/// Why a request's host is refused (400, before any policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HostError {
    /// More than one `Host` line (RFC 9112 section 3.2: 400).
    Repeated,
    /// HTTP/1.1 without `Host` (RFC 9112 section 3.2: 400).
    Missing,
    /// `Host` names another host than the absolute-form target or HTTP/2
    /// `:authority` (RFC 9113 section 8.3.1: malformed).
    Mismatch,
    /// `Host` is not visible ASCII.
    Invalid,
}

impl HostError {
    /// For the log line's `detail` and the 400 body.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Repeated => "invalid host: more than one Host header",
            Self::Missing => "invalid host: HTTP/1.1 request without Host",
            Self::Mismatch => "invalid host: Host differs from the request target's authority",
            Self::Invalid => "invalid host: not visible ASCII",
        }
    }
}

/// The request's one host: the URI's authority (HTTP/2 `:authority`,
/// HTTP/1 absolute-form), else `Host`; empty when neither is present
/// (HTTP/1.0, HTTP/2 without `:authority`). Refused, so that the policy
/// and the application can never see different hosts: several `Host`
/// lines, a `Host` that disagrees with the authority (ASCII case aside), an
/// HTTP/1.1 request without any, a `Host` that is not visible ASCII.
pub(super) fn host(parts: &Parts) -> Result<&str, HostError> {
    let mut values = parts.headers.get_all(HOST).iter();
    let header = values.next();
    if values.next().is_some() {
        return Err(HostError::Repeated);
    }
    let header = header
        .map(|v| v.to_str().map_err(|_| HostError::Invalid))
        .transpose()?;
    match (parts.uri.authority(), header) {
        (Some(authority), Some(header)) if !authority.as_str().eq_ignore_ascii_case(header) => {
            Err(HostError::Mismatch)
        }
        (Some(authority), _) => Ok(authority.as_str()),
        (None, Some(header)) => Ok(header),
        (None, None) if parts.version == Version::HTTP_11 => Err(HostError::Missing),
        (None, None) => Ok(""),
    }
}

/// The raw request target, path and query, as received.
pub(super) fn raw_target(parts: &Parts) -> &str {
    parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), PathAndQuery::as_str)
}

/// "a lowercase method → 400 on HTTP/1.1" (POLICY.md, Corrections: Envoy's
/// HTTP/1 codec accepts upper-case method tokens only).
pub(super) fn method_acceptable(parts: &Parts) -> bool {
    parts.version > Version::HTTP_11
        || !parts
            .method
            .as_str()
            .bytes()
            .any(|b| b.is_ascii_lowercase())
}

/// A gRPC call: HTTP/2 with `content-type: application/grpc` (or
/// `application/grpc+proto`, ...), forwarded over HTTP/2.
pub(super) fn is_grpc(parts: &Parts) -> bool {
    parts.version == Version::HTTP_2
        && parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The size of the head as HTTP/2 counts it (RFC 9113 section 6.5.2:
/// name + value + 32 per field).
pub(super) fn head_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 32)
        .sum()
}

/// What the policy engine matches: method, raw target (the engine
/// normalizes), host, every header in order (repeated ones kept), the JWT
/// identity.
pub(super) fn policy_view(parts: &Parts, host: &str, auth: Option<JwtIdentity>) -> HttpRequest {
    HttpRequest {
        method: parts.method.as_str().to_owned(),
        path: raw_target(parts).to_owned(),
        host: host.to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        auth,
    }
}

/// The path and query to forward: the path normalized as it was for
/// matching (so the application serves what was authorized, as Envoy's
/// `normalize_path`), the query unchanged. `None`: the target is already
/// normal (the common case, no allocation).
pub(super) fn normalized_target(
    target: &PathAndQuery,
    mode: PathNormalization,
) -> Result<Option<PathAndQuery>, RequestError> {
    let path = target.path();
    let clean = !path.bytes().any(|b| b == b'%' || b == b'\\' || b == 0)
        && !path.contains("/.")
        && (mode == PathNormalization::Base || !path.contains("//"));
    if clean {
        return Ok(None);
    }
    let mut normalized = normalize_path(path, mode)?;
    if normalized == path {
        return Ok(None);
    }
    if let Some(query) = target.query() {
        normalized.push('?');
        normalized.push_str(query);
    }
    PathAndQuery::try_from(normalized)
        .map(Some)
        .map_err(|_| RequestError::NotOriginForm)
}

/// Removes the hop-by-hop headers (and those `Connection` names); keeps
/// `te: trailers` when the next hop is HTTP/2 (gRPC needs it).
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap, next_hop_h2: bool) {
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    if headers.contains_key(TE) {
        let trailers = next_hop_h2
            && headers
                .get_all(TE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        headers.remove(TE);
        if trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
    headers.remove(TRANSFER_ENCODING);
    headers.remove(UPGRADE);
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> Parts {
        req.into_parts().0
    }

    #[test]
    fn the_host_is_one_value_or_the_request_is_refused() {
        let req = |uri: &str, hosts: &[&str]| {
            let mut b = http::Request::get(uri);
            for h in hosts {
                b = b.header("host", *h);
            }
            parts(b.body(()).unwrap())
        };
        let p = req("http://a.example:8080/x", &["A.example:8080"]);
        assert_eq!(host(&p), Ok("a.example:8080"));
        assert_eq!(host(&req("http://a.example/x", &[])), Ok("a.example"));
        assert_eq!(host(&req("/x", &["b.example"])), Ok("b.example"));
        assert_eq!(
            host(&req("/x", &["ok.example", "admin.example"])),
            Err(HostError::Repeated)
        );
        assert_eq!(
            host(&req("/x", &["ok.example", "ok.example"])),
            Err(HostError::Repeated)
        );
        assert_eq!(
            host(&req("http://ok.example/x", &["admin.example"])),
            Err(HostError::Mismatch)
        );
        assert_eq!(host(&req("/x", &[])), Err(HostError::Missing));
        let mut p = req("/x", &[]);
        p.version = Version::HTTP_10;
        assert_eq!(host(&p), Ok(""));
        p.version = Version::HTTP_2;
        assert_eq!(host(&p), Ok(""));
        let mut p = req("/x", &[]);
        p.headers
            .insert(HOST, HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert_eq!(host(&p), Err(HostError::Invalid));
    }

    #[test]
    fn lowercase_methods_are_refused_on_http1_only() {
        let mut p = parts(
            http::Request::builder()
                .method("get")
                .uri("/")
                .body(())
                .unwrap(),
        );
        assert!(!method_acceptable(&p));
        p.version = Version::HTTP_2;
        assert!(method_acceptable(&p));
        let p = parts(
            http::Request::builder()
                .method("PURGE")
                .uri("/")
                .body(())
                .unwrap(),
        );
        assert!(method_acceptable(&p));
    }

    #[test]
    fn policy_view_keeps_repeated_headers_and_the_raw_target() {
        let p = parts(
            http::Request::get("/a/../b?q=%2e")
                .header("x-user", "alice")
                .header("x-user", "mallory")
                .body(())
                .unwrap(),
        );
        let view = policy_view(&p, "h", None);
        assert_eq!(view.path, "/a/../b?q=%2e");
        assert_eq!(
            view.header_values("X-User").collect::<Vec<_>>(),
            ["alice", "mallory"]
        );
    }

    #[test]
    fn forwarded_target_is_normalized_with_the_query_kept() {
        let t = |s: &'static str| PathAndQuery::from_static(s);
        let base = PathNormalization::Base;
        assert_eq!(normalized_target(&t("/a/b?x=1"), base), Ok(None));
        assert_eq!(
            normalized_target(&t("/public/../admin?x=/../"), base)
                .unwrap()
                .unwrap(),
            "/admin?x=/../"
        );
        assert_eq!(
            normalized_target(&t("/%61dmin"), base).unwrap().unwrap(),
            "/admin"
        );
        assert_eq!(normalized_target(&t("/a%2Fb"), base), Ok(None));
        assert_eq!(
            normalized_target(&t("/a/%00"), base),
            Err(RequestError::NulInPath)
        );
        assert_eq!(
            normalized_target(&t("/a//b"), PathNormalization::MergeSlashes)
                .unwrap()
                .unwrap(),
            "/a/b"
        );
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(TE, HeaderValue::from_static("trailers, deflate"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let mut h1 = h.clone();
        remove_hop_by_hop(&mut h1, false);
        assert_eq!(h1.len(), 1);
        assert!(h1.contains_key("x-kept"));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h.get(TE).unwrap(), "trailers");
        assert_eq!(h.len(), 2);
    }
}
