//! The demo service behind the inbound proxy, the two requests `sigil up`
//! sends through the outbound proxy, and why each was allowed or denied
//! (the proxy's own engine, as `sigil policy explain` runs it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sigil_identity::SpiffeId;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::setup::NAMESPACE;

/// The demo HTTP service: `GET /admin*` answers a secret, anything else a
/// greeting naming the caller (from the proxy's `x-forwarded-client-cert`).
pub(super) struct Demo {
    /// Where it listens (loopback, ephemeral port).
    pub(super) addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Demo {
    /// Binds 127.0.0.1:0 and serves.
    pub(super) async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot listen for the demo service on 127.0.0.1")?;
        let addr = listener
            .local_addr()
            .context("cannot read the demo service's address")?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, stop.clone()));
        Ok(Self { addr, stop, task })
    }

    /// Stops accepting (the proxy in front has already drained).
    pub(super) async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "the demo service task failed");
        }
    }
}

async fn serve(listener: TcpListener, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "demo service: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection =
                builder.serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle));
            tokio::select! {
                () = stop.cancelled() => {}
                served = connection => {
                    if let Err(error) = served {
                        tracing::debug!(%error, "demo service: connection ended");
                    }
                }
            }
        });
    }
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let body = if path.starts_with("/admin") {
        "demo admin: the secret is 42\n".to_owned()
    } else {
        let caller = request
            .headers()
            .get("x-forwarded-client-cert")
            .and_then(|v| v.to_str().ok())
            .and_then(xfcc_uri)
            .unwrap_or("unknown");
        format!("hello from demo (caller {caller})\n")
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// The `URI=` of an `x-forwarded-client-cert` value (the client's SPIFFE ID).
fn xfcc_uri(value: &str) -> Option<&str> {
    value
        .split([';', ','])
        .find_map(|part| part.trim().strip_prefix("URI="))
        .map(|uri| uri.trim_matches('"'))
}

/// A response: status and the body's first line.
pub(super) struct Answer {
    /// The status.
    pub(super) status: StatusCode,
    /// The body's first line (at most 100 characters).
    pub(super) body: String,
}

/// `GET http://<outbound><path>` (10 s deadline).
pub(super) async fn get(outbound: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("http://{outbound}{path}")
        .parse()
        .context("bad request URI")?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .with_context(|| format!("GET {path}: no answer within 10 s"))?
        .with_context(|| format!("GET {path} through the outbound proxy on {outbound}"))?;
    let status = response.status();
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .with_context(|| format!("GET {path}: the body did not arrive within 10 s"))?
        .with_context(|| format!("GET {path}: cannot read the body"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    let body = text
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(100)
        .collect();
    Ok(Answer { status, body })
}

/// The result line: `allowed  GET /hello -> 200 OK: <body>` (`denied   `
/// for 403, `failed   ` otherwise).
pub(super) fn result_line(path: &str, answer: &Answer) -> String {
    let verdict = match answer.status {
        s if s.is_success() => "allowed ",
        StatusCode::FORBIDDEN => "denied  ",
        _ => "failed  ",
    };
    let mut line = format!(" GET {path} -> {}", answer.status);
    if !answer.body.is_empty() {
        line.push_str(": ");
        line.push_str(&answer.body);
    }
    format!("{verdict}{line}")
}

/// What the inbound proxy's engine decides for a request, simulated as
/// `sigil policy explain` does.
pub(super) struct Explanation {
    /// Whether the engine lets the request through.
    pub(super) allowed: bool,
    /// The deciding policy and rule (or the stage that refused it).
    pub(super) decided: String,
    /// `peer <principal>, mTLS <mode>`.
    pub(super) context: String,
}

/// The engine's verdict on `GET path` from `peer` on the demo port, under
/// the policy file; the error's text if it cannot tell.
pub(super) fn explain(
    policies: &Path,
    peer: &SpiffeId,
    demo_port: u16,
    path: &str,
) -> Result<Explanation, String> {
    let report = crate::policy::explain_http(
        &[policies.to_path_buf()],
        NAMESPACE,
        peer.clone(),
        demo_port,
        "GET",
        path,
    )
    .map_err(|error| error.to_string())?;
    let decided = match (&report.rejected, &report.authorization) {
        (Some(rejection), _) => format!("{} refused: {}", rejection.stage, rejection.message),
        (None, Some(authz)) => match &authz.policy {
            Some(rule) => format!(
                "{} policy {}/{} rule {}",
                rule.action, rule.namespace, rule.name, rule.rule
            ),
            None => authz.text.clone(),
        },
        (None, None) => report.summary.clone(),
    };
    let peer = report
        .request
        .principal
        .as_deref()
        .map_or_else(|| "no peer".to_owned(), |p| format!("peer {p}"));
    Ok(Explanation {
        allowed: report.allowed,
        decided,
        context: format!("{peer}, mTLS {}", report.mtls.mode),
    })
}

/// The line under a request's result. `  why: <deciding policy and rule>
/// (<peer>, mTLS <mode>)` when the proxy's answer agrees with the engine's
/// simulated verdict (allowed: 2xx; denied: 403); otherwise the verdict
/// explains nothing: `  note: the proxy answered <status> while the policy
/// engine says <allow|deny> (<deciding rule>); see <log>`.
pub(super) fn why(
    explained: &Result<Explanation, String>,
    status: StatusCode,
    log: &Path,
) -> String {
    let explained = match explained {
        Ok(explained) => explained,
        Err(error) => return format!("  why: cannot explain: {error}"),
    };
    let agrees = if explained.allowed {
        status.is_success()
    } else {
        status == StatusCode::FORBIDDEN
    };
    if agrees {
        format!("  why: {} ({})", explained.decided, explained.context)
    } else {
        format!(
            "  note: the proxy answered {status} while the policy engine says {} ({}); see {}",
            if explained.allowed { "allow" } else { "deny" },
            explained.decided,
            log.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_uri_is_found() {
        assert_eq!(
            xfcc_uri("By=spiffe://td/ns/demo/sa/server;Hash=ab;URI=spiffe://td/ns/demo/sa/client"),
            Some("spiffe://td/ns/demo/sa/client")
        );
        assert_eq!(xfcc_uri("Hash=ab"), None);
    }

    #[test]
    fn why_only_when_the_answer_agrees_with_the_engine() {
        let log = Path::new("sigil-data/up/sigil.log");
        let verdict = |allowed: bool, decided: &str| {
            Ok(Explanation {
                allowed,
                decided: decided.to_owned(),
                context: "peer td/ns/demo/sa/client, mTLS STRICT".to_owned(),
            })
        };
        let allow = verdict(true, "ALLOW policy demo/allow-client-get rule 0");
        let deny = verdict(false, "DENY policy demo/deny-admin rule 0");
        assert_eq!(
            why(&allow, StatusCode::OK, log),
            "  why: ALLOW policy demo/allow-client-get rule 0 \
             (peer td/ns/demo/sa/client, mTLS STRICT)"
        );
        assert_eq!(
            why(&deny, StatusCode::FORBIDDEN, log),
            "  why: DENY policy demo/deny-admin rule 0 (peer td/ns/demo/sa/client, mTLS STRICT)"
        );
        assert_eq!(
            why(&allow, StatusCode::BAD_GATEWAY, log),
            "  note: the proxy answered 502 Bad Gateway while the policy engine says allow \
             (ALLOW policy demo/allow-client-get rule 0); see sigil-data/up/sigil.log"
        );
        assert_eq!(
            why(&allow, StatusCode::FORBIDDEN, log),
            "  note: the proxy answered 403 Forbidden while the policy engine says allow \
             (ALLOW policy demo/allow-client-get rule 0); see sigil-data/up/sigil.log"
        );
        assert_eq!(
            why(&deny, StatusCode::OK, log),
            "  note: the proxy answered 200 OK while the policy engine says deny \
             (DENY policy demo/deny-admin rule 0); see sigil-data/up/sigil.log"
        );
        assert_eq!(
            why(&Err("bad file".to_owned()), StatusCode::OK, log),
            "  why: cannot explain: bad file"
        );
    }
}
