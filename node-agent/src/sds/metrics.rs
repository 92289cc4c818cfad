//! [`SdsMetrics`]: what the SDS server reports, registered in the agent's
//! registry (already prefixed `sigil_agent`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `sigil_agent_sds_streams_open` | gauge | — |
//! | `sigil_agent_sds_pushes_total` | counter | — (responses sent, streams and fetches) |
//! | `sigil_agent_sds_acks_total` | counter | — |
//! | `sigil_agent_sds_nacks_total` | counter | — |
//! | `sigil_agent_sds_errors_total` | counter | `reason` (fixed set, [`SdsError::reason`](super::SdsError::reason)) |

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::error::SdsError;

/// `reason` label of `sds_errors`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A fixed reason name.
    pub reason: &'static str,
}

/// The SDS server's metrics. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct SdsMetrics {
    /// `StreamSecrets` streams open now.
    pub streams_open: Gauge<i64, AtomicI64>,
    /// Discovery responses sent (stream pushes and fetch answers).
    pub pushes: Counter,
    /// Requests acknowledging the last response.
    pub acks: Counter,
    /// Requests rejecting the last response (`error_detail` set).
    pub nacks: Counter,
    /// Refused calls and streams ended with an error, by reason.
    pub errors: Family<ReasonLabel, Counter>,
}

impl SdsMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "sds_streams_open",
            "Open SDS StreamSecrets streams",
            metrics.streams_open.clone(),
        );
        registry.register(
            "sds_pushes",
            "SDS discovery responses sent",
            metrics.pushes.clone(),
        );
        registry.register(
            "sds_acks",
            "SDS requests that acknowledged the last response",
            metrics.acks.clone(),
        );
        registry.register(
            "sds_nacks",
            "SDS requests that rejected the last response (error_detail set)",
            metrics.nacks.clone(),
        );
        registry.register(
            "sds_errors",
            "SDS calls refused or streams ended with an error, by reason",
            metrics.errors.clone(),
        );
        // Every reason exists from the start at 0, so the first event is a
        // visible increase for rate() alerts.
        for reason in SdsError::REASONS {
            let _ = metrics.errors.get_or_create(&ReasonLabel { reason });
        }
        metrics
    }

    /// Counts `error` under its reason.
    pub(super) fn error(&self, error: &SdsError) {
        self.errors
            .get_or_create(&ReasonLabel {
                reason: error.reason(),
            })
            .inc();
    }
}
