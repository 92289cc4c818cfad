//! The admin HTTP server (default 127.0.0.1:15014).
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once the authority is loaded and the gRPC listener serves; 503 before, while draining, and while the signing certificate is expired or not yet valid |
//! | `GET /metrics` | Prometheus / OpenMetrics text |
//! | `GET /bundle` | the trust bundle as SPIFFE bundle JSON: the X.509 roots (`use: x509-svid`) and every published JWT-SVID signing key (`use: jwt-svid`, `kid`) |
//! | `GET /root.pem` | the trust bundle as PEM (all current roots) |
//!
//! Served over HTTP/1.1 by `sigil_runtime::admin::serve`, with bounds so
//! that the port cannot be held by idle or slow clients:
//!
//! | bound | setting | beyond it |
//! |---|---|---|
//! | connections open at once | `server.admin_max_connections` | new connections are closed at once |
//! | a request's headers, from the connection or the previous response | `server.admin_header_timeout` | the connection is closed (slowloris) |
//! | no byte read or written | `server.admin_idle_timeout` | the connection is closed |

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use time::OffsetDateTime;

use super::state::Shared;
use crate::authority::Authority;

/// The admin routes: the runtime's probes (`/healthz`, `/readyz` from
/// [`ready`], `/metrics`) and the CA's bundle routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let (for_ready, for_metrics) = (shared.clone(), shared.clone());
    sigil_runtime::admin::router(move || ready(&for_ready), move || metrics(&for_metrics)).merge(
        Router::new()
            .route("/bundle", get(bundle))
            .route("/root.pem", get(root_pem))
            .with_state(shared),
    )
}

/// Ready: the listeners serve (not starting, not draining) and the signing
/// certificate is valid now.
fn ready(shared: &Shared) -> bool {
    shared.ready.load(Ordering::SeqCst)
        && authority_valid_at(shared.issuer.load().authority(), OffsetDateTime::now_utc())
}

/// Whether `authority` can sign at `now` (the rule issuance applies: from
/// its notBefore, until before its notAfter).
fn authority_valid_at(authority: &Authority, now: OffsetDateTime) -> bool {
    authority.not_before() <= now && now < authority.not_after()
}

/// The OpenMetrics text, with the CA's time to expiry brought up to date.
fn metrics(shared: &Shared) -> String {
    let not_after = shared.issuer.load().authority().not_after();
    let left = (not_after - OffsetDateTime::now_utc()).whole_seconds();
    shared.metrics.ca_expiry.set(left);
    shared.metrics.encode()
}

async fn bundle(State(shared): State<Arc<Shared>>) -> Response {
    match shared.bundle().to_spiffe_json() {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode the trust bundle");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the bundle\n",
            )
                .into_response()
        }
    }
}

async fn root_pem(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        shared.bundle().to_pem(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use sigil_identity::TrustDomain;
    use time::Duration;

    use super::*;
    use crate::authority::source;

    #[test]
    fn readiness_needs_an_authority_valid_now() {
        let dir = tempfile::tempdir().unwrap();
        let created = OffsetDateTime::now_utc();
        let authority =
            source::create_self_signed(&dir.path().join("ca"), &TrustDomain::default(), created)
                .unwrap();
        assert!(authority_valid_at(&authority, created));
        assert!(
            !authority_valid_at(&authority, authority.not_before() - Duration::seconds(1)),
            "not yet valid"
        );
        assert!(
            !authority_valid_at(&authority, authority.not_after()),
            "expired at notAfter"
        );
        assert!(!authority_valid_at(
            &authority,
            authority.not_after() + Duration::days(1)
        ));
    }
}
