//! Proxy metrics (prometheus-client): connections by direction and
//! outcome, handshake failures by reason, bytes by direction, connections
//! open, policy reloads by outcome, HTTP requests by direction and
//! decision. Labels are low-cardinality (fixed strings).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a finished connection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// The access log's decision (`allow`, `deny`, `handshake_failed`, ...).
    pub decision: &'static str,
}

/// Labels of a byte counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `received` (from the downstream peer) or `sent` (to it).
    pub flow: &'static str,
}

/// Labels of a failed TLS handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `no_certificate`, `bad_certificate`, `unknown_ca`, `expired`,
    /// `timeout`, `protocol` or `other` (see
    /// [`crate::listener::handshake_failure_reason`]).
    pub reason: &'static str,
}

/// Labels of a policy reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied` or `refused` (the old policy kept).
    pub outcome: &'static str,
}

/// Labels of a finished HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `inbound` or `outbound`.
    pub direction: &'static str,
    /// `allow`, `deny`, `unauthenticated` (invalid JWT), `bad_request`
    /// (unparsable, `%00`, oversized head) or `header_timeout`.
    pub decision: &'static str,
}

/// The proxy's metrics; clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct ProxyMetrics {
    connections: Family<ConnectionLabels, Counter>,
    bytes: Family<BytesLabels, Counter>,
    handshake_failures: Family<HandshakeLabels, Counter>,
    open: Gauge,
    policy_reloads: Family<ReloadLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
}

impl ProxyMetrics {
    /// Metrics registered in `registry` (callers pass the `sigil` sub-registry).
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "proxy_connections",
            "Connections by direction and outcome (handshake failures by reason)",
            metrics.connections.clone(),
        );
        registry.register(
            "proxy_bytes",
            "Bytes copied by direction and flow",
            metrics.bytes.clone(),
        );
        registry.register(
            "proxy_handshake_failures",
            "Failed TLS handshakes by direction and reason",
            metrics.handshake_failures.clone(),
        );
        registry.register(
            "proxy_connections_open",
            "Connections currently being served",
            metrics.open.clone(),
        );
        registry.register(
            "proxy_policy_reloads",
            "Policy file reloads by outcome (applied, refused: the old policy kept)",
            metrics.policy_reloads.clone(),
        );
        registry.register(
            "proxy_requests",
            "HTTP requests by direction and decision",
            metrics.requests.clone(),
        );
        metrics
    }

    /// Records a policy reload.
    pub(crate) fn policy_reload(&self, outcome: &'static str) {
        self.policy_reloads
            .get_or_create(&ReloadLabels { outcome })
            .inc();
    }

    /// Policy reloads with this outcome so far.
    pub fn policy_reloads(&self, outcome: &'static str) -> u64 {
        self.policy_reloads
            .get_or_create(&ReloadLabels { outcome })
            .get()
    }

    /// Counts a connection as open until the guard drops.
    pub(crate) fn open(&self) -> OpenGuard {
        self.open.inc();
        OpenGuard(self.open.clone())
    }

    /// Records a finished connection.
    pub(crate) fn finished(
        &self,
        direction: &'static str,
        decision: &'static str,
        received: u64,
        sent: u64,
    ) {
        self.connections
            .get_or_create(&ConnectionLabels {
                direction,
                decision,
            })
            .inc();
        for (flow, n) in [("received", received), ("sent", sent)] {
            self.bytes
                .get_or_create(&BytesLabels { direction, flow })
                .inc_by(n);
        }
    }

    /// Records a failed TLS handshake.
    pub(crate) fn handshake_failed(&self, direction: &'static str, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&HandshakeLabels { direction, reason })
            .inc();
    }

    /// Failed TLS handshakes with these labels so far.
    pub fn handshake_failures(&self, direction: &'static str, reason: &'static str) -> u64 {
        self.handshake_failures
            .get_or_create(&HandshakeLabels { direction, reason })
            .get()
    }

    /// Finished connections with these labels so far.
    pub fn connections(&self, direction: &'static str, decision: &'static str) -> u64 {
        self.connections
            .get_or_create(&ConnectionLabels {
                direction,
                decision,
            })
            .get()
    }
}

impl ProxyMetrics {
    /// The byte counter for these labels (kept by the HTTP layer, which
    /// counts as bytes move rather than when a connection ends).
    pub(crate) fn bytes_counter(&self, direction: &'static str, flow: &'static str) -> Counter {
        self.bytes
            .get_or_create(&BytesLabels { direction, flow })
            .clone()
    }

    /// Bytes with these labels so far (`flow`: `received` or `sent`).
    pub fn bytes(&self, direction: &'static str, flow: &'static str) -> u64 {
        self.bytes_counter(direction, flow).get()
    }

    /// The request counter for these labels (kept by the HTTP layer, so a
    /// request costs one atomic increment).
    pub(crate) fn request_counter(
        &self,
        direction: &'static str,
        decision: &'static str,
    ) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                direction,
                decision,
            })
            .clone()
    }

    /// HTTP requests with these labels so far.
    pub fn requests(&self, direction: &'static str, decision: &'static str) -> u64 {
        self.request_counter(direction, decision).get()
    }
}

/// Decrements the open-connections gauge on drop.
#[derive(Debug)]
pub(crate) struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
