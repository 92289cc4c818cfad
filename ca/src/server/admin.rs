//! The admin HTTP server (default 127.0.0.1:15014).
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once the authority is loaded and the gRPC listener serves; 503 before and while draining |
//! | `GET /metrics` | Prometheus / OpenMetrics text |
//! | `GET /bundle` | the trust bundle as SPIFFE bundle JSON |
//! | `GET /root.pem` | the trust bundle as PEM (all current roots) |

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use time::OffsetDateTime;

use super::state::Shared;

/// The admin routes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/bundle", get(bundle))
        .route("/root.pem", get(root_pem))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let not_after = shared.issuer.load().authority().not_after();
    let left = (not_after - OffsetDateTime::now_utc()).whole_seconds();
    shared.metrics.ca_expiry.set(left);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
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
