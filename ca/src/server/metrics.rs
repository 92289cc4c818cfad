//! The CA's Prometheus metrics, served on the admin port at `/metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `sigil_ca_certificates_issued_total` | counter | `outcome` (`ok` or the gRPC code name) |
//! | `sigil_ca_issuance_duration_seconds` | histogram | — |
//! | `sigil_ca_authentication_failures_total` | counter | `reason` |
//! | `sigil_ca_cert_expiry_seconds` | gauge | — (seconds until the signing certificate expires) |
//! | `sigil_ca_authority_reloads_total` | counter | `result` (`ok`, `rejected`) |
//! | `sigil_ca_plugin_key_insecure_mode` | gauge | — (1 while the loaded plug-in key file is group- or world-readable) |
//! | `sigil_ca_jwt_svids_minted_total` | counter | `outcome` (`ok` or the gRPC code name) |
//! | `sigil_ca_unbounded_impersonation` | gauge | — (1: node agents may impersonate any workload from any node, `authorization.unbounded_impersonation`) |
//!
//! Labels are low-cardinality by construction: fixed sets of names.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `outcome` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `ok` or a gRPC code name.
    pub outcome: &'static str,
}

/// `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A fixed reason name.
    pub reason: &'static str,
}

/// `result` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `rejected`.
    pub result: &'static str,
}

/// Every CA metric, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests by outcome.
    pub issued: Family<OutcomeLabel, Counter>,
    /// Issuance latency (authentication + authorization + signing).
    pub latency: Histogram,
    /// Authentication failures by reason.
    pub authn_failures: Family<ReasonLabel, Counter>,
    /// Seconds until the signing certificate expires.
    pub ca_expiry: Gauge<i64, AtomicI64>,
    /// Plug-in CA reloads by result.
    pub reloads: Family<ResultLabel, Counter>,
    /// 1 while the loaded plug-in key file is readable by group or others.
    pub plugin_key_insecure_mode: Gauge<i64, AtomicI64>,
    /// 1 while node agents may impersonate without the node check.
    pub unbounded_impersonation: Gauge<i64, AtomicI64>,
    /// `MintJwtSvid` requests by outcome.
    pub jwt_svids_minted: Family<OutcomeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics under the `sigil_ca` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let issued = Family::<OutcomeLabel, Counter>::default();
        // 100 µs .. ~3.3 s.
        let latency = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let authn_failures = Family::<ReasonLabel, Counter>::default();
        let ca_expiry = Gauge::<i64, AtomicI64>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let plugin_key_insecure_mode = Gauge::<i64, AtomicI64>::default();
        let unbounded_impersonation = Gauge::<i64, AtomicI64>::default();
        let jwt_svids_minted = Family::<OutcomeLabel, Counter>::default();
        {
            let sub = registry.sub_registry_with_prefix("sigil_ca");
            sub.register(
                "certificates_issued",
                "CreateCertificate requests by outcome",
                issued.clone(),
            );
            sub.register(
                "issuance_duration_seconds",
                "CreateCertificate latency, authentication to signed chain",
                latency.clone(),
            );
            sub.register(
                "authentication_failures",
                "Caller authentication failures by reason",
                authn_failures.clone(),
            );
            sub.register(
                "cert_expiry_seconds",
                "Seconds until the CA signing certificate expires",
                ca_expiry.clone(),
            );
            sub.register(
                "authority_reloads",
                "Plug-in CA reloads by result",
                reloads.clone(),
            );
            sub.register(
                "plugin_key_insecure_mode",
                "1 while the loaded plug-in CA key file is readable by group or others",
                plugin_key_insecure_mode.clone(),
            );
            sub.register(
                "unbounded_impersonation",
                "1 when node agents may impersonate any workload from any node",
                unbounded_impersonation.clone(),
            );
            sub.register(
                "jwt_svids_minted",
                "MintJwtSvid requests by outcome",
                jwt_svids_minted.clone(),
            );
        }
        // Every known label value exists from the start at 0, so the first
        // event is a visible increase for `rate()`/`increase()` alerts.
        for outcome in [
            "ok",
            "unauthenticated",
            "permission_denied",
            "invalid_argument",
            "resource_exhausted",
            "unavailable",
            "internal",
        ] {
            let _ = issued.get_or_create(&OutcomeLabel { outcome });
            let _ = jwt_svids_minted.get_or_create(&OutcomeLabel { outcome });
        }
        for reason in [
            "no_credential",
            "unrecognised_token",
            "malformed_header",
            "invalid",
            "unavailable",
        ] {
            let _ = authn_failures.get_or_create(&ReasonLabel { reason });
        }
        for result in ["ok", "rejected"] {
            let _ = reloads.get_or_create(&ResultLabel { result });
        }
        Self {
            registry,
            issued,
            latency,
            authn_failures,
            ca_expiry,
            reloads,
            plugin_key_insecure_mode,
            unbounded_impersonation,
            jwt_svids_minted,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
