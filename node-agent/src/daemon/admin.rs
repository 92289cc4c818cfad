//! The agent's admin HTTP listener (default 127.0.0.1:15020).
//!
//! | path | answer |
//! |---|---|
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 once the sockets serve (node mode) and, in sidecar mode, the workload's certificate is valid; 503 before and while draining |
//! | `GET /metrics` | Prometheus / OpenMetrics text |
//! | `GET /status` | [`StatusReport`] as JSON (what `sigil agent status` prints) |
//!
//! Served by `sigil_runtime::admin::serve` with its connection, header and
//! idle bounds.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::routing::get;

use super::status::StatusReport;

/// The admin routes: the runtime's probes plus `/status`.
pub(crate) fn router<R, M, S>(ready: R, metrics: M, status: S) -> Router
where
    R: Fn() -> bool + Send + Sync + 'static,
    M: Fn() -> String + Send + Sync + 'static,
    S: Fn() -> StatusReport + Send + Sync + 'static,
{
    let status = Arc::new(status);
    sigil_runtime::admin::router(ready, metrics).route(
        "/status",
        get(move || {
            let status = status.clone();
            async move { Json(status()) }
        }),
    )
}
