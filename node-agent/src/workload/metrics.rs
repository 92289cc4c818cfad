//! Workload API metrics.
//!
//! | metric (under the registry's prefix) | type | labels |
//! |---|---|---|
//! | `workload_api_streams_open` | gauge | `method` |
//! | `workload_api_requests_total` | counter | `method`, `code` (`ok` or the gRPC code name) |

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `method` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// The Workload API method (`FetchX509SVID`, ...).
    pub method: &'static str,
}

/// `method` and `code` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodCodeLabels {
    /// The Workload API method.
    pub method: &'static str,
    /// `ok` or the gRPC code name of the error.
    pub code: &'static str,
}

/// The Workload API's metrics; cheap to clone (shared handles).
#[derive(Clone, Debug, Default)]
pub struct WorkloadMetrics {
    /// Open streams by method.
    pub streams_open: Family<MethodLabel, Gauge<i64, AtomicI64>>,
    /// Requests by method and outcome.
    pub requests: Family<MethodCodeLabels, Counter>,
}

impl WorkloadMetrics {
    /// Creates the metrics and registers them in `registry` (the agent's
    /// `sigil_agent` sub-registry).
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "workload_api_streams_open",
            "Open SPIFFE Workload API streams by method",
            metrics.streams_open.clone(),
        );
        registry.register(
            "workload_api_requests",
            "SPIFFE Workload API requests by method and outcome",
            metrics.requests.clone(),
        );
        metrics
    }

    pub(super) fn record(&self, method: &'static str, result: Result<(), tonic::Code>) {
        let code = match result {
            Ok(()) => "ok",
            Err(code) => sigil_proto::code_label(code),
        };
        self.requests
            .get_or_create(&MethodCodeLabels { method, code })
            .inc();
    }

    pub(super) fn stream_opened(&self, method: &'static str) -> StreamGuard {
        let gauge = self
            .streams_open
            .get_or_create(&MethodLabel { method })
            .clone();
        gauge.inc();
        StreamGuard(gauge)
    }
}

/// Decrements the open-streams gauge when the stream is dropped.
#[derive(Debug)]
pub(super) struct StreamGuard(Gauge<i64, AtomicI64>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
