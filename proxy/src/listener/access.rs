//! The access log: one JSON line per connection (target
//! `sigil_proxy::access`).

use std::net::SocketAddr;

use serde::Serialize;
use sigil_identity::SpiffeId;

/// One access log line (JSON, target `sigil_proxy::access`).
#[derive(Debug, Serialize)]
pub(super) struct AccessLog {
    pub(super) direction: &'static str,
    pub(super) source_addr: SocketAddr,
    pub(super) destination_addr: SocketAddr,
    #[serde(serialize_with = "opt_display")]
    pub(super) source_principal: Option<SpiffeId>,
    #[serde(serialize_with = "opt_display")]
    pub(super) destination_principal: Option<SpiffeId>,
    /// Whether the mesh side was mTLS (false only inbound, for plaintext on
    /// a PERMISSIVE or DISABLE port).
    pub(super) mtls: bool,
    pub(super) decision: &'static str,
    pub(super) policy: Option<String>,
    pub(super) detail: Option<String>,
    /// Bytes from the downstream peer to the upstream.
    pub(super) bytes_received: u64,
    /// Bytes from the upstream to the downstream peer.
    pub(super) bytes_sent: u64,
    /// When the connection was accepted (its age counts from here).
    #[serde(skip)]
    pub(super) opened: tokio::time::Instant,
}

impl AccessLog {
    pub(super) fn fail(&mut self, decision: &'static str, detail: String) {
        self.decision = decision;
        self.detail = (!detail.is_empty()).then_some(detail);
    }

    pub(super) fn emit(&self) {
        match serde_json::to_string(self) {
            Ok(line) => tracing::info!(target: "sigil_proxy::access", "{line}"),
            Err(error) => tracing::warn!(%error, "access log line not serialized"),
        }
    }
}

fn opt_display<S: serde::Serializer>(id: &Option<SpiffeId>, s: S) -> Result<S::Ok, S::Error> {
    match id {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_line_names_both_identities_and_the_decision() {
        let log = AccessLog {
            direction: "inbound",
            source_addr: SocketAddr::from(([10, 0, 0, 1], 5000)),
            destination_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            source_principal: SpiffeId::parse("spiffe://example.org/ns/a/sa/client").ok(),
            destination_principal: SpiffeId::parse("spiffe://example.org/ns/b/sa/server").ok(),
            mtls: true,
            decision: "deny",
            policy: Some("b/deny-a".to_owned()),
            detail: None,
            bytes_received: 0,
            bytes_sent: 0,
            opened: tokio::time::Instant::now(),
        };
        let value: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&log).unwrap()).unwrap();
        assert_eq!(
            value["source_principal"],
            "spiffe://example.org/ns/a/sa/client"
        );
        assert_eq!(
            value["destination_principal"],
            "spiffe://example.org/ns/b/sa/server"
        );
        assert_eq!(value["decision"], "deny");
        assert_eq!(value["policy"], "b/deny-a");
        assert_eq!(value["source_addr"], "10.0.0.1:5000");
    }
}
