//! Inbound requests: authenticate (JWT), authorize (one decision per
//! request with the policy state in force when it arrived), forward allowed
//! ones to the local application over pooled HTTP/1.1 connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{HOST, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use sigil_identity::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::headers::{self, XFCC};
use super::log::{self, Direction, Outcome, Record};
use super::response::{self, Body, UpstreamFailure};
use super::server::{self, ConnEnd};
use super::tunnel;
use super::{ConnInfo, Inner};
use crate::policy::{Request as PolicyRequest, RequestError, Verdict};

/// One inbound connection's fixed facts.
pub(super) struct ConnCtx {
    conn: ConnInfo,
    target: SocketAddr,
    /// `target` as the upstream URI's authority.
    authority: Option<Authority>,
    local_id: Option<SpiffeId>,
    /// `By=<local>;URI=<peer>` for an mTLS peer.
    xfcc: Option<HeaderValue>,
    requests: AtomicU64,
    /// A WebSocket (or other upgrade) to join once the server hands over.
    tunnel: tunnel::Slot,
}

impl ConnCtx {
    pub(super) fn new(conn: ConnInfo, target: SocketAddr, local_id: Option<SpiffeId>) -> Self {
        // Istio's sidecar inbound sets XFCC from the verified peer
        // certificate (SANITIZE_SET: a client's own XFCC never passes).
        let xfcc = conn.peer.as_ref().and_then(|peer| {
            let value = match &local_id {
                Some(local) => format!("By={local};URI={peer}"),
                None => format!("URI={peer}"),
            };
            HeaderValue::try_from(value).ok()
        });
        Self {
            authority: Authority::try_from(target.to_string()).ok(),
            conn,
            target,
            local_id,
            xfcc,
            requests: AtomicU64::new(0),
            tunnel: tunnel::Slot::default(),
        }
    }

    fn peers(&self) -> log::Peers<'_> {
        log::Peers {
            direction: Direction::Inbound,
            source_addr: self.conn.source,
            destination_addr: self.target,
            source_principal: self.conn.peer.as_ref(),
            destination_principal: self.local_id.as_ref(),
        }
    }
}

/// Serves one inbound connection.
pub(super) async fn serve<IO>(
    inner: Arc<Inner>,
    ctx: ConnCtx,
    io: IO,
    timeouts: server::ConnTimeouts,
    shutdown: &CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = Arc::new(ctx);
    let service = {
        let inner = Arc::clone(&inner);
        let ctx = Arc::clone(&ctx);
        hyper::service::service_fn(move |req| {
            let inner = Arc::clone(&inner);
            let ctx = Arc::clone(&ctx);
            async move { Ok::<_, Infallible>(handle(&inner, &ctx, req).await) }
        })
    };
    let bytes = inner.counters.bytes(Direction::Inbound);
    let limits = server::Limits::new(&inner.config, timeouts, bytes);
    let end = server::serve(io, ctx.conn.h2, &limits, service, shutdown).await;
    limits.run_tunnel(&ctx.tunnel).await;
    let served = ctx.requests.load(Ordering::Relaxed);
    connection_end(&inner, &ctx.peers(), end, served);
}

/// Counts and logs what hyper refused or timed out itself (its 400 / 431
/// responses never reach the handler).
pub(super) fn connection_end(
    inner: &Inner,
    peers: &log::Peers<'_>,
    end: Result<(), ConnEnd>,
    served: u64,
) {
    let (outcome, status, detail) = match end {
        Ok(()) => return,
        Err(ConnEnd::HeadTimeout) => (
            Outcome::HeaderTimeout,
            StatusCode::REQUEST_TIMEOUT,
            "no request head in time".to_owned(),
        ),
        Err(ConnEnd::Error(e)) if e.is_parse_too_large() => (
            Outcome::BadRequest,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            e.to_string(),
        ),
        Err(ConnEnd::Error(e)) if e.is_parse() => {
            (Outcome::BadRequest, StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(ConnEnd::Error(e)) if e.is_timeout() => {
            // Between requests this is just an idle keep-alive connection.
            if served > 0 {
                tracing::debug!("idle HTTP/1 connection closed");
                return;
            }
            (
                Outcome::HeaderTimeout,
                StatusCode::REQUEST_TIMEOUT,
                e.to_string(),
            )
        }
        Err(ConnEnd::Error(error)) => {
            tracing::debug!(%error, "HTTP connection ended");
            return;
        }
    };
    inner.counters.count(peers.direction, outcome);
    if log::enabled() {
        let mut record = Record::new();
        record.fail(outcome, detail);
        let line = log::Line {
            method: "",
            host: "",
            path: "",
            status: if outcome == Outcome::HeaderTimeout {
                0
            } else {
                status.as_u16()
            },
            duration: std::time::Duration::ZERO,
        };
        log::emit(peers, &line, &record);
    }
}

async fn handle(inner: &Inner, ctx: &ConnCtx, req: Request<Incoming>) -> Response<Body> {
    ctx.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let mut requested = log::Requested::new(&parts);
    let mut record = Record::new();
    let response =
        decide_and_forward(inner, ctx, parts, body, &mut record, &mut requested.host).await;
    requested.finish(&inner.counters, &ctx.peers(), response.status(), &record);
    response
}

async fn decide_and_forward(
    inner: &Inner,
    ctx: &ConnCtx,
    mut parts: http::request::Parts,
    body: Incoming,
    record: &mut Record,
    host_for_log: &mut String,
) -> Response<Body> {
    // The state in force now decides this request, even if a reload lands
    // while it is in flight.
    let state = inner.policies.current();
    if let Some(refused) = response::refuse_head(&parts, inner.config.max_header_bytes, record) {
        return refused;
    }
    // One host, the same for the policy and the application (RFC 9112
    // section 3.2): several `Host` lines, or one that disagrees with the
    // authority, are refused before anything else looks at them.
    let host = match headers::host(&parts) {
        Ok(host) => {
            host.clone_into(host_for_log);
            host.to_owned()
        }
        Err(error) => {
            record.fail(Outcome::BadRequest, error.as_str());
            return response::bad_request(error.as_str());
        }
    };
    let upgrade = match tunnel::requested(&parts) {
        tunnel::Asked::Refused => {
            record.fail(Outcome::Deny, tunnel::UPGRADE_FAILED);
            return response::upgrade_refused();
        }
        tunnel::Asked::WebSocket(value) => Some(value),
        tunnel::Asked::Nothing => None,
    };
    // A client's own XFCC never reaches the application (nor the policy).
    parts.headers.remove(XFCC);

    let auth = match state.jwt.authenticate(&mut parts).await {
        Ok(auth) => auth,
        Err(reject) => {
            let outcome = if reject.status == StatusCode::UNAUTHORIZED {
                Outcome::Unauthenticated
            } else {
                Outcome::Deny
            };
            record.fail(outcome, reject.message.clone());
            return response::local(reject.status, reject.message);
        }
    };
    let request = PolicyRequest {
        peer: ctx.conn.peer.clone(),
        source_ip: ctx.conn.source.ip(),
        remote_ip: None,
        destination_ip: ctx.conn.local.ip(),
        destination_port: ctx.target.port(),
        sni: ctx.conn.sni.clone(),
        http: Some(headers::policy_view(&parts, &host, auth)),
    };
    let decision = state.authorize(&request);
    record.auth = request.http.and_then(|h| h.auth);
    let decision = match decision {
        Ok(decision) => decision,
        Err(error) => {
            record.fail(Outcome::BadRequest, error.to_string());
            return response::bad_request(bad_request_body(&error));
        }
    };
    let verdict = decision.verdict;
    record.decision = Some(decision);
    if verdict != Verdict::Allow {
        record.outcome = Outcome::Deny;
        return response::denied();
    }

    // Forward: origin-form target normalized, to the local application.
    let raw = parts.uri.path_and_query().cloned();
    let target = match raw {
        Some(raw) => match headers::normalized_target(&raw, state.authorizer.normalization()) {
            Ok(Some(normalized)) => normalized,
            Ok(None) => raw,
            Err(error) => {
                record.fail(Outcome::BadRequest, error.to_string());
                return response::bad_request(bad_request_body(&error));
            }
        },
        None => {
            record.fail(Outcome::BadRequest, "no origin-form target");
            return response::bad_request(bad_request_body(&RequestError::NotOriginForm));
        }
    };
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = ctx.authority.clone();
    uri.path_and_query = Some(target);
    let Ok(uri) = Uri::from_parts(uri) else {
        record.fail(Outcome::Allow, "BUG: upstream URI not built");
        return response::upstream_failure(UpstreamFailure::Exchange);
    };
    // The application sees, as its one `Host`, exactly the host the policy
    // matched (HTTP/2 `:authority` and absolute-form included).
    match HeaderValue::try_from(host_for_log.as_str()) {
        Ok(value) if !value.is_empty() => {
            parts.headers.insert(HOST, value);
        }
        _ => {
            parts.headers.remove(HOST);
        }
    }
    // gRPC needs HTTP/2 end to end (trailers, `te: trailers`).
    let grpc = headers::is_grpc(&parts);
    parts.uri = uri;
    parts.version = if grpc {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let downstream_upgrade = upgrade
        .as_ref()
        .and_then(|_| parts.extensions.remove::<OnUpgrade>());
    headers::remove_hop_by_hop(&mut parts.headers, grpc);
    if let Some(upgrade) = upgrade {
        tunnel::restore(&mut parts.headers, upgrade);
    }
    if let Some(xfcc) = &ctx.xfcc {
        parts.headers.insert(XFCC, xfcc.clone());
    }
    let client = if grpc {
        &inner.grpc_client
    } else {
        &inner.client
    };
    let upstream = client.request(Request::from_parts(parts, body));
    match tokio::time::timeout(inner.config.request_timeout, upstream).await {
        Ok(Ok(mut response)) => {
            if ctx.tunnel.switch(downstream_upgrade, &mut response) {
                switched(response)
            } else {
                proxied(response)
            }
        }
        Ok(Err(error)) => {
            let failure = if error.is_connect() {
                UpstreamFailure::Connect
            } else {
                UpstreamFailure::Exchange
            };
            tracing::debug!(%error, "upstream request failed");
            record.detail = Some(failure.as_str().to_owned());
            response::upstream_failure(failure)
        }
        Err(_) => {
            record.detail = Some(UpstreamFailure::Timeout.as_str().to_owned());
            response::upstream_failure(UpstreamFailure::Timeout)
        }
    }
}

/// The upstream's response, ready to go downstream (either protocol).
pub(super) fn proxied(response: Response<Incoming>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers, false);
    // hyper's HTTP/1 server writes HTTP/1.1 for this; HTTP/2 ignores it.
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, Either::Left(body))
}

/// A 101 answer: the upgrade headers kept.
pub(super) fn switched(response: Response<Incoming>) -> Response<Body> {
    let upgrade = response.headers().get(http::header::UPGRADE).cloned();
    let mut response = proxied(response);
    if let Some(upgrade) = upgrade {
        tunnel::restore(response.headers_mut(), upgrade);
    }
    response
}

fn bad_request_body(error: &RequestError) -> &'static str {
    match error {
        RequestError::NulInPath => "invalid path: NUL",
        RequestError::NotOriginForm => "invalid path: not origin-form",
        RequestError::AmbiguousEscape => "invalid path: ambiguous percent-encoding",
    }
}
