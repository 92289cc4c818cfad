//! What `GET /status` on the admin listener answers and
//! `sigil agent status` prints: the identities held, their expiry, how
//! often they rotated and the last error.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The agent's state, as JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `node` or `sidecar`.
    pub mode: String,
    /// The CA's address.
    pub ca: String,
    /// One line per identity held, sorted by SPIFFE ID.
    pub identities: Vec<IdentityStatus>,
}

/// One identity the agent holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityStatus {
    /// The SPIFFE ID.
    pub spiffe_id: String,
    /// The current certificate's notAfter (RFC 3339), if one is held.
    pub not_after: Option<String>,
    /// Seconds until `not_after` (negative: expired, which the agent never
    /// serves).
    pub expires_in_secs: Option<i64>,
    /// Certificates obtained for this identity since the agent started.
    pub rotations: u64,
    /// The last failure to obtain a certificate, if the last attempt failed.
    pub last_error: Option<String>,
}

impl StatusReport {
    /// A fixed-width table for a terminal.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "mode: {}   CA: {}", self.mode, self.ca);
        if self.identities.is_empty() {
            out.push_str("no identities held\n");
            return out;
        }
        let width = self
            .identities
            .iter()
            .map(|i| i.spiffe_id.len())
            .max()
            .unwrap_or(0)
            .max("SPIFFE ID".len());
        let _ = writeln!(
            out,
            "{:width$}  {:>12}  {:>9}  LAST ERROR",
            "SPIFFE ID", "EXPIRES IN", "ROTATIONS"
        );
        for identity in &self.identities {
            let expires = match identity.expires_in_secs {
                Some(secs) if secs >= 0 => {
                    humantime::format_duration(std::time::Duration::from_secs(secs.unsigned_abs()))
                        .to_string()
                }
                Some(_) => "expired".to_owned(),
                None => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:width$}  {:>12}  {:>9}  {}",
                identity.spiffe_id,
                expires,
                identity.rotations,
                identity.last_error.as_deref().unwrap_or("-"),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_identity_with_its_expiry_and_error() {
        let report = StatusReport {
            mode: "node".into(),
            ca: "https://localhost:15012".into(),
            identities: vec![
                IdentityStatus {
                    spiffe_id: "spiffe://cluster.local/ns/a/sa/b".into(),
                    not_after: Some("2026-12-01T00:00:00Z".into()),
                    expires_in_secs: Some(90),
                    rotations: 3,
                    last_error: None,
                },
                IdentityStatus {
                    spiffe_id: "spiffe://cluster.local/ns/a/sa/c".into(),
                    not_after: None,
                    expires_in_secs: None,
                    rotations: 0,
                    last_error: Some("CA refused: PermissionDenied".into()),
                },
            ],
        };
        let table = report.to_table();
        assert!(
            table.contains("spiffe://cluster.local/ns/a/sa/b"),
            "{table}"
        );
        assert!(table.contains("1m 30s"), "{table}");
        assert!(table.contains("CA refused: PermissionDenied"), "{table}");
        let parsed: StatusReport =
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(parsed, report);
    }
}
