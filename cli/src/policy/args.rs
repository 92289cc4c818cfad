//! The flags of `sigil policy explain` and their parsers: a malformed value
//! is a usage error (exit 2) naming the flag.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use sigil_identity::SpiffeId;
use sigil_proxy::policy::PathNormalization;

/// `sigil policy explain`.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// An Istio YAML file (AuthorizationPolicy, PeerAuthentication,
    /// RequestAuthentication; several documents per file), or a directory
    /// whose `*.yaml` and `*.yml` files are read in name order. Repeatable.
    #[arg(
        long = "policy",
        value_name = "FILE|DIR",
        required_unless_present = "config"
    )]
    pub(crate) policies: Vec<PathBuf>,
    /// A `sigil proxy` configuration file (and its `SIGIL_PROXY__*`
    /// variables): its `[policy]` files, namespace, labels, root namespace
    /// and path normalization, which the flags below add to or override.
    #[arg(long, env = "SIGIL_PROXY_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// The workload's namespace (`[policy] namespace`; default `default`).
    #[arg(long)]
    pub(crate) namespace: Option<String>,
    /// A workload label, for `selector.matchLabels` (repeatable; over
    /// `[policy] labels`).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = key_value)]
    pub(crate) labels: Vec<(String, String)>,
    /// The mesh root namespace (default `istio-system`).
    #[arg(long)]
    pub(crate) root_namespace: Option<String>,
    /// Path normalization before `paths` matching (`[policy]
    /// path_normalization`; default `base`).
    #[arg(long, value_enum)]
    pub(crate) path_normalization: Option<Normalization>,

    /// The verified mTLS peer (`spiffe://td/ns/NS/sa/SA`).
    #[arg(
        long,
        value_name = "SPIFFE_ID",
        required_unless_present = "plaintext",
        conflicts_with = "plaintext"
    )]
    pub(crate) peer: Option<SpiffeId>,
    /// A plaintext connection (no peer identity).
    #[arg(long)]
    pub(crate) plaintext: bool,
    /// The direct peer's address (`source.ip`, `ipBlocks`).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) source_ip: IpAddr,
    /// The original client's address (`remote.ip`, `remoteIpBlocks`);
    /// default: `--source-ip`.
    #[arg(long)]
    pub(crate) remote_ip: Option<IpAddr>,
    /// The proxy's address the connection arrived on (`destination.ip`).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) destination_ip: IpAddr,
    /// The workload port: the inbound listener's `target` port (`ports`,
    /// `destination.port`, `portLevelMtls`).
    #[arg(long)]
    pub(crate) port: u16,
    /// The TLS SNI (`connection.sni`).
    #[arg(long)]
    pub(crate) sni: Option<String>,

    /// An HTTP request (L7 listener) even without the flags below; any of
    /// them implies it. Without: a TCP connection (L4), where rules naming
    /// HTTP fields behave as on a TCP listener.
    #[arg(long)]
    pub(crate) http: bool,
    /// HTTP method (default GET).
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// HTTP request target, as received (query included; default `/`).
    #[arg(long)]
    pub(crate) path: Option<String>,
    /// HTTP `Host` / `:authority`, port included (also the `host` header
    /// unless `--header 'host: ...'` is given).
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// An HTTP header (repeatable; a repeated name is a repeated header).
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = header)]
    pub(crate) headers: Vec<(String, String)>,
    /// The payload of a JWT the request carries (a JSON object; `iss`,
    /// `sub`, `aud`, `azp` and any claim).
    #[arg(long, value_name = "JSON", value_parser = json_object,
          conflicts_with_all = ["request_principal", "claims"])]
    pub(crate) jwt_claims: Option<serde_json::Map<String, serde_json::Value>>,
    /// The JWT's request principal `ISS/SUB` (split at the last `/`).
    #[arg(long, value_name = "ISS/SUB", value_parser = request_principal)]
    pub(crate) request_principal: Option<(String, String)>,
    /// A JWT claim (string; a repeated name makes a list). With
    /// `--request-principal`, or alone.
    #[arg(long = "claim", value_name = "NAME=VALUE", value_parser = key_value)]
    pub(crate) claims: Vec<(String, String)>,

    /// `text` (default) or `json`.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) output: OutputFormat,
}

/// `--path-normalization`, as `[policy] path_normalization`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Normalization {
    /// Istio's default (BASE).
    #[value(name = "base")]
    Base,
    /// BASE, then `//` -> `/`.
    #[value(name = "merge_slashes")]
    MergeSlashes,
    /// Also `%2F`, `%5C` decoded, then slashes merged.
    #[value(name = "decode_and_merge_slashes")]
    DecodeAndMergeSlashes,
}

impl From<Normalization> for PathNormalization {
    fn from(value: Normalization) -> Self {
        match value {
            Normalization::Base => Self::Base,
            Normalization::MergeSlashes => Self::MergeSlashes,
            Normalization::DecodeAndMergeSlashes => Self::DecodeAndMergeSlashes,
        }
    }
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object.
    Json,
}

impl ExplainArgs {
    /// Whether the request is HTTP.
    pub(crate) fn is_http(&self) -> bool {
        self.http
            || self.method.is_some()
            || self.path.is_some()
            || self.host.is_some()
            || !self.headers.is_empty()
            || self.has_jwt()
    }

    /// Whether a JWT is described.
    pub(crate) fn has_jwt(&self) -> bool {
        self.jwt_claims.is_some() || self.request_principal.is_some() || !self.claims.is_empty()
    }

    /// The JWT payload described by `--jwt-claims`, or by
    /// `--request-principal` and `--claim`.
    pub(crate) fn jwt_payload(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        use serde_json::Value;
        if let Some(claims) = &self.jwt_claims {
            return Some(claims.clone());
        }
        if !self.has_jwt() {
            return None;
        }
        let mut payload = serde_json::Map::new();
        if let Some((iss, sub)) = &self.request_principal {
            payload.insert("iss".into(), Value::String(iss.clone()));
            payload.insert("sub".into(), Value::String(sub.clone()));
        }
        for (name, value) in &self.claims {
            let value = Value::String(value.clone());
            match payload.get_mut(name) {
                Some(Value::Array(list)) => list.push(value),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, value]);
                }
                None => {
                    payload.insert(name.clone(), value);
                }
            }
        }
        Some(payload)
    }
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn header(s: &str) -> Result<(String, String), String> {
    let Some((name, value)) = s.split_once(':') else {
        return Err(format!("expected 'NAME: VALUE', got {s:?}"));
    };
    let name = name.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err(format!("invalid header name {name:?}"));
    }
    Ok((name.to_ascii_lowercase(), value.trim().to_owned()))
}

fn json_object(s: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str(s) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("expected a JSON object (the JWT payload)".to_owned()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn request_principal(s: &str) -> Result<(String, String), String> {
    match s.rsplit_once('/') {
        Some((iss, sub)) if !iss.is_empty() && !sub.is_empty() => {
            Ok((iss.to_owned(), sub.to_owned()))
        }
        _ => Err(format!("expected ISS/SUB, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(key_value("=b").is_err());
        assert!(key_value("ab").is_err());
        assert_eq!(
            header("X-User:  alice ").unwrap(),
            ("x-user".into(), "alice".into())
        );
        assert!(header("no colon").is_err());
        assert!(header("bad name: v").is_err());
        assert_eq!(
            request_principal("https://issuer.example/path/alice").unwrap(),
            ("https://issuer.example/path".into(), "alice".into())
        );
        assert!(request_principal("alice").is_err());
        assert!(request_principal("iss/").is_err());
        assert!(json_object("[1]").is_err());
        assert!(json_object("{").is_err());
        assert!(json_object("{\"iss\":\"x\"}").is_ok());
    }
}
