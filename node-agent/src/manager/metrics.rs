//! The certificate manager's Prometheus metrics (registered under the
//! agent's registry, so names get the `sigil_agent_` prefix).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `identities` | gauge | — (identities held, with or without a certificate) |
//! | `earliest_expiry_seconds` | gauge | — (seconds until the earliest notAfter among held certificates; 0 with none) |
//! | `certificate_rotations_total` | counter | — (renewals: certificates that replaced a previous one) |
//! | `certificate_failures_total` | counter | `reason`: `ca`, `key`, `response`, `expired`, `capped` (a renewal not expiring later than the served certificate: served, next renewals paced by backoff), `too_short` (a certificate with less than 1 s left: refused) |
//! | `ca_errors_total` | counter | `code`: gRPC code name in snake_case (`permission_denied`), or `connect`, `token`, `client_identity`, `response` |
//! | `jwt_svid_requests_total` | counter | `result`: `hit`, `miss`, `coalesced`, `error` |
//!
//! Labels are fixed sets of names.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// `ca`, `key`, `response`, `expired` or `capped`.
    pub reason: &'static str,
}

/// `code` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// A gRPC code name or a client-side error kind.
    pub code: &'static str,
}

/// `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `hit`, `miss`, `coalesced` or `error`.
    pub result: &'static str,
}

/// The certificate manager's metrics. Cheap to clone (shared counters);
/// [`Default`] gives unregistered metrics (tests).
#[derive(Clone, Debug, Default)]
pub struct ManagerMetrics {
    /// Identities held.
    pub identities: Gauge,
    /// Seconds until the earliest certificate expiry.
    pub earliest_expiry_seconds: Gauge<f64, AtomicU64>,
    /// Renewals that replaced a certificate.
    pub rotations: Counter,
    /// Failures by reason.
    pub failures: Family<ReasonLabel, Counter>,
    /// CA errors by gRPC code.
    pub ca_errors: Family<CodeLabel, Counter>,
    /// JWT-SVID requests by cache result.
    pub jwt_requests: Family<ResultLabel, Counter>,
}

impl ManagerMetrics {
    /// Creates the metrics and registers them in `registry` (the agent's
    /// `sigil_agent` sub-registry).
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "identities",
            "Identities held by the certificate manager",
            metrics.identities.clone(),
        );
        registry.register(
            "earliest_expiry_seconds",
            "Seconds until the earliest certificate expiry (0 with none)",
            metrics.earliest_expiry_seconds.clone(),
        );
        registry.register(
            "certificate_rotations",
            "Certificates renewed (replacing a previous one)",
            metrics.rotations.clone(),
        );
        registry.register(
            "certificate_failures",
            "Certificate failures by reason",
            metrics.failures.clone(),
        );
        registry.register(
            "ca_errors",
            "Errors from CA calls by gRPC code",
            metrics.ca_errors.clone(),
        );
        registry.register(
            "jwt_svid_requests",
            "JWT-SVID requests by cache result",
            metrics.jwt_requests.clone(),
        );
        metrics
    }

    pub(super) fn failure(&self, reason: &'static str) {
        self.failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(super) fn ca_error(&self, code: &'static str) {
        self.ca_errors.get_or_create(&CodeLabel { code }).inc();
    }

    pub(super) fn jwt(&self, result: &'static str) {
        self.jwt_requests
            .get_or_create(&ResultLabel { result })
            .inc();
    }
}
