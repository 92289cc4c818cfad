//! Metrics of the registration entries and of attestation.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `registration_entries` | gauge | — (entries in force) |
//! | `registration_reload_errors_total` | counter | — (refused files; each distinct bad content once) |
//! | `attestation_failures_total` | counter | `reason` ([`FailureReason::as_str`]) |

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::attest::FailureReason;

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A fixed reason name.
    pub reason: &'static str,
}

/// Registration and attestation metrics. Cheap to clone (shared handles).
#[derive(Clone, Debug, Default)]
pub struct RegistryMetrics {
    /// Entries in force.
    pub entries: Gauge<i64, AtomicI64>,
    /// Refused entries files.
    pub reload_errors: Counter,
    /// Attestation failures by reason.
    pub attestation_failures: Family<ReasonLabel, Counter>,
}

impl RegistryMetrics {
    /// Creates the metrics and registers them in `registry` (the agent's
    /// `sigil_agent` sub-registry).
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "registration_entries",
            "Registration entries in force",
            metrics.entries.clone(),
        );
        registry.register(
            "registration_reload_errors",
            "Registration entries files refused (the previous entries stay in force)",
            metrics.reload_errors.clone(),
        );
        registry.register(
            "attestation_failures",
            "Callers whose attestation failed, by reason",
            metrics.attestation_failures.clone(),
        );
        metrics
    }

    /// Counts one attestation failure.
    pub fn attestation_failed(&self, reason: FailureReason) {
        self.attestation_failures
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }
}
