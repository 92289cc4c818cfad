//! Per-request bookkeeping: the decision, its counter, and one JSON access
//! log line (target `sigil_proxy::access`, as the L4 listener's).

use std::net::SocketAddr;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use sigil_identity::SpiffeId;

use super::prefixed::ByteCounters;
use crate::metrics::ProxyMetrics;
use crate::policy::{Decision, JwtIdentity, Reason};

/// Longest path written to the access log (bytes).
const MAX_LOGGED_PATH: usize = 512;
/// Longest host written to the access log (bytes; a DNS name has at most
/// 253, plus a port).
const MAX_LOGGED_HOST: usize = 260;

/// Which listener side served the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    /// Terminated mTLS in front of the local application.
    Inbound,
    /// From the local application towards a remote proxy.
    Outbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// What happened to a request (the metric's and the log's `decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Authorized (or outbound: forwarded).
    Allow,
    /// Refused before any policy: unparsable, `%00`, lowercase method,
    /// oversized head.
    BadRequest,
    /// Denied by policy (403), or a JWT with a wrong audience (403).
    Deny,
    /// The client did not finish a request head in time.
    HeaderTimeout,
    /// An invalid JWT (401).
    Unauthenticated,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::BadRequest => "bad_request",
            Self::Deny => "deny",
            Self::HeaderTimeout => "header_timeout",
            Self::Unauthenticated => "unauthenticated",
        }
    }
}

/// The request and byte counters, created once so a request costs one
/// increment.
#[derive(Debug)]
pub(super) struct Counters {
    inbound: PerOutcome,
    outbound: PerOutcome,
    inbound_bytes: ByteCounters,
    outbound_bytes: ByteCounters,
}

#[derive(Debug)]
struct PerOutcome {
    allow: Counter,
    bad_request: Counter,
    deny: Counter,
    header_timeout: Counter,
    unauthenticated: Counter,
}

impl PerOutcome {
    fn new(metrics: &ProxyMetrics, direction: Direction) -> Self {
        let c = |o: Outcome| metrics.request_counter(direction.as_str(), o.as_str());
        Self {
            allow: c(Outcome::Allow),
            bad_request: c(Outcome::BadRequest),
            deny: c(Outcome::Deny),
            header_timeout: c(Outcome::HeaderTimeout),
            unauthenticated: c(Outcome::Unauthenticated),
        }
    }

    fn get(&self, outcome: Outcome) -> &Counter {
        match outcome {
            Outcome::Allow => &self.allow,
            Outcome::BadRequest => &self.bad_request,
            Outcome::Deny => &self.deny,
            Outcome::HeaderTimeout => &self.header_timeout,
            Outcome::Unauthenticated => &self.unauthenticated,
        }
    }
}

impl Counters {
    pub(super) fn new(metrics: &ProxyMetrics) -> Self {
        let bytes = |direction: Direction| ByteCounters {
            received: metrics.bytes_counter(direction.as_str(), "received"),
            sent: metrics.bytes_counter(direction.as_str(), "sent"),
        };
        Self {
            inbound: PerOutcome::new(metrics, Direction::Inbound),
            outbound: PerOutcome::new(metrics, Direction::Outbound),
            inbound_bytes: bytes(Direction::Inbound),
            outbound_bytes: bytes(Direction::Outbound),
        }
    }

    /// Where a connection of this direction counts its bytes.
    pub(super) fn bytes(&self, direction: Direction) -> &ByteCounters {
        match direction {
            Direction::Inbound => &self.inbound_bytes,
            Direction::Outbound => &self.outbound_bytes,
        }
    }

    pub(super) fn count(&self, direction: Direction, outcome: Outcome) {
        let side = match direction {
            Direction::Inbound => &self.inbound,
            Direction::Outbound => &self.outbound,
        };
        side.get(outcome).inc();
    }
}

/// What the handler learned about one request, for its log line.
#[derive(Debug)]
pub(super) struct Record {
    pub(super) outcome: Outcome,
    /// The authorization decision, if one was made.
    pub(super) decision: Option<Decision>,
    /// The JWT identity, if a token was validated.
    pub(super) auth: Option<JwtIdentity>,
    /// Why a request failed (reject message, upstream failure).
    pub(super) detail: Option<String>,
}

impl Record {
    pub(super) fn new() -> Self {
        Self {
            outcome: Outcome::Allow,
            decision: None,
            auth: None,
            detail: None,
        }
    }

    pub(super) fn fail(&mut self, outcome: Outcome, detail: impl Into<String>) {
        self.outcome = outcome;
        self.detail = Some(detail.into());
    }
}

/// The connection-level fields of a log line.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peers<'a> {
    pub(super) direction: Direction,
    pub(super) source_addr: SocketAddr,
    pub(super) destination_addr: SocketAddr,
    pub(super) source_principal: Option<&'a SpiffeId>,
    pub(super) destination_principal: Option<&'a SpiffeId>,
}

/// The request-level fields of a log line.
#[derive(Debug, Clone, Copy)]
pub(super) struct Line<'a> {
    pub(super) method: &'a str,
    pub(super) host: &'a str,
    pub(super) path: &'a str,
    pub(super) status: u16,
    pub(super) duration: std::time::Duration,
}

/// What the access log line names of a request, kept from its head
/// before the head moves upstream.
#[derive(Debug)]
pub(super) struct Requested {
    method: http::Method,
    target: http::Uri,
    /// The request's host, once known (refused hosts: empty).
    pub(super) host: String,
    started: tokio::time::Instant,
}

impl Requested {
    /// A request whose head is `parts`, arriving now.
    pub(super) fn new(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            target: parts.uri.clone(),
            host: String::new(),
            started: tokio::time::Instant::now(),
        }
    }

    /// Counts the request's outcome and writes its access log line.
    pub(super) fn finish(
        &self,
        counters: &Counters,
        peers: &Peers<'_>,
        status: http::StatusCode,
        record: &Record,
    ) {
        counters.count(peers.direction, record.outcome);
        if enabled() {
            let line = Line {
                method: self.method.as_str(),
                host: &self.host,
                path: self
                    .target
                    .path_and_query()
                    .map_or_else(|| self.target.path(), |pq| pq.as_str()),
                status: status.as_u16(),
                duration: self.started.elapsed(),
            };
            emit(peers, &line, record);
        }
    }
}

/// Whether access log lines are wanted at all (skips building them).
pub(super) fn enabled() -> bool {
    tracing::enabled!(target: "sigil_proxy::access", tracing::Level::INFO)
}

/// Writes one access log line.
pub(super) fn emit(peers: &Peers<'_>, line: &Line<'_>, record: &Record) {
    match json(peers, line, record) {
        Ok(line) => tracing::info!(target: "sigil_proxy::access", "{line}"),
        Err(error) => tracing::warn!(%error, "access log line not serialized"),
    }
}

fn json(peers: &Peers<'_>, line: &Line<'_>, record: &Record) -> serde_json::Result<String> {
    let (policy, rule) = match record.decision.as_ref().map(|d| &d.reason) {
        Some(Reason::Policy(p)) => (Some(format!("{}/{}", p.namespace, p.name)), Some(p.rule)),
        _ => (None, None),
    };
    let entry = Entry {
        direction: peers.direction.as_str(),
        source_addr: peers.source_addr,
        destination_addr: peers.destination_addr,
        source_principal: peers.source_principal,
        destination_principal: peers.destination_principal,
        request_principal: record
            .auth
            .as_ref()
            .map(|a| format!("{}/{}", a.issuer, a.subject)),
        method: line.method,
        host: truncate(line.host, MAX_LOGGED_HOST),
        path: truncate(line.path, MAX_LOGGED_PATH),
        status: line.status,
        decision: record.outcome.as_str(),
        policy,
        rule,
        reason: record.decision.as_ref().map(ToString::to_string),
        detail: record.detail.as_deref(),
        duration_ms: line.duration.as_secs_f64() * 1000.0,
    };
    serde_json::to_string(&entry)
}

/// One access log line.
#[derive(Debug, Serialize)]
struct Entry<'a> {
    direction: &'static str,
    source_addr: SocketAddr,
    destination_addr: SocketAddr,
    #[serde(serialize_with = "opt_display")]
    source_principal: Option<&'a SpiffeId>,
    #[serde(serialize_with = "opt_display")]
    destination_principal: Option<&'a SpiffeId>,
    /// `<iss>/<sub>` of a validated JWT.
    request_principal: Option<String>,
    method: &'a str,
    /// Truncated.
    host: &'a str,
    /// Raw, as received, truncated.
    path: &'a str,
    /// The status sent downstream (0: none, the connection was closed).
    status: u16,
    decision: &'static str,
    /// `<namespace>/<name>` of the deciding policy.
    policy: Option<String>,
    /// The 0-based index of the deciding rule.
    rule: Option<usize>,
    /// The engine's explanation.
    reason: Option<String>,
    detail: Option<&'a str>,
    /// Until the response head.
    duration_ms: f64,
}

fn opt_display<S: serde::Serializer>(id: &Option<&SpiffeId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_identities_request_decision_and_policy() {
        use crate::policy::{Action, PolicyRef, Verdict};
        let client = SpiffeId::parse("spiffe://example.org/ns/a/sa/client").unwrap();
        let server = SpiffeId::parse("spiffe://example.org/ns/b/sa/server").unwrap();
        let peers = Peers {
            direction: Direction::Inbound,
            source_addr: SocketAddr::from(([10, 0, 0, 1], 5000)),
            destination_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            source_principal: Some(&client),
            destination_principal: Some(&server),
        };
        let long_path = format!("/admin/{}", "x".repeat(1000));
        let long_host = format!("{}.example", "h".repeat(60 * 1024));
        let line = Line {
            method: "GET",
            host: &long_host,
            path: &long_path,
            status: 403,
            duration: std::time::Duration::from_micros(1500),
        };
        let record = Record {
            outcome: Outcome::Deny,
            decision: Some(Decision {
                verdict: Verdict::Deny,
                reason: Reason::Policy(PolicyRef {
                    namespace: "b".into(),
                    name: "deny-admin".into(),
                    rule: 1,
                    action: Action::Deny,
                }),
                audit: None,
            }),
            auth: Some(JwtIdentity {
                issuer: "https://idp.example".into(),
                subject: "alice".into(),
                ..JwtIdentity::default()
            }),
            detail: None,
        };
        let v: serde_json::Value =
            serde_json::from_str(&json(&peers, &line, &record).unwrap()).unwrap();
        assert_eq!(v["direction"], "inbound");
        assert_eq!(v["source_principal"], "spiffe://example.org/ns/a/sa/client");
        assert_eq!(
            v["destination_principal"],
            "spiffe://example.org/ns/b/sa/server"
        );
        assert_eq!(v["request_principal"], "https://idp.example/alice");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["host"].as_str().unwrap().len(), MAX_LOGGED_HOST);
        assert_eq!(v["path"].as_str().unwrap().len(), MAX_LOGGED_PATH);
        assert_eq!(v["status"], 403);
        assert_eq!(v["decision"], "deny");
        assert_eq!(v["policy"], "b/deny-admin");
        assert_eq!(v["rule"], 1);
        assert!(v["reason"].as_str().unwrap().contains("deny-admin"));
        assert_eq!(v["duration_ms"], 1.5);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("aé", 2), "a");
    }

    #[test]
    fn counters_land_in_the_shared_metrics() {
        let metrics = ProxyMetrics::default();
        let counters = Counters::new(&metrics);
        counters.count(Direction::Inbound, Outcome::Deny);
        counters.count(Direction::Inbound, Outcome::Deny);
        counters.count(Direction::Outbound, Outcome::Allow);
        assert_eq!(metrics.requests("inbound", "deny"), 2);
        assert_eq!(metrics.requests("outbound", "allow"), 1);
        assert_eq!(metrics.requests("inbound", "allow"), 0);
    }
}
