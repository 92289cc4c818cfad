//! The request the engine decides on, built by the proxy (L4 and L7) and by `sigil policy explain`.

use std::net::IpAddr;

use sigil_identity::SpiffeId;

/// One connection (L4) or one HTTP request (L7) to authorize.
#[derive(Debug, Clone)]
pub struct Request {
    /// The verified mTLS peer; `None` for plaintext.
    pub peer: Option<SpiffeId>,
    /// The direct peer's address (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// The original client address (`remote.ip`, `remoteIpBlocks`); `None` means `source_ip`.
    pub remote_ip: Option<IpAddr>,
    /// The address the connection was accepted on (`destination.ip`).
    pub destination_ip: IpAddr,
    /// The workload (container) port (`ports`, `destination.port`).
    pub destination_port: u16,
    /// The TLS SNI (`connection.sni`).
    pub sni: Option<String>,
    /// The HTTP request; `None` on a TCP (L4) listener.
    pub http: Option<HttpRequest>,
}

/// The HTTP part of a request.
#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    /// The method as received (`methods`).
    pub method: String,
    /// The raw request target path, query included; normalized by the engine.
    pub path: String,
    /// The whole `:authority` / `Host`, port included (`hosts`).
    pub host: String,
    /// Headers in order; repeated names appear several times. Names are case-insensitive.
    pub headers: Vec<(String, String)>,
    /// The identity from a validated JWT; `None` when the request carried no token.
    pub auth: Option<JwtIdentity>,
}

/// The end-user identity from a JWT that RequestAuthentication validated.
#[derive(Debug, Clone, Default)]
pub struct JwtIdentity {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `aud` (a single string becomes one element).
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// The whole payload, for `request.auth.claims[...]`.
    pub claims: serde_json::Value,
}

/// The workload a policy set is evaluated for.
#[derive(Debug, Clone, Default)]
pub struct Workload {
    /// Its namespace.
    pub namespace: String,
    /// Its labels, for `selector.matchLabels`.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Request {
    /// `remote.ip`: the original client if known, else the direct peer.
    pub fn remote_ip(&self) -> IpAddr {
        self.remote_ip.unwrap_or(self.source_ip)
    }

    /// The peer's principal in Istio's form `<td>/ns/<ns>/sa/<sa>` (no `spiffe://`).
    pub fn principal(&self) -> Option<String> {
        self.peer
            .as_ref()
            .map(|id| format!("{}{}", id.trust_domain().as_str(), id.path()))
    }
}

impl HttpRequest {
    /// The values of header `name` (case-insensitive), in order, as Envoy's header matchers see
    /// them: `host` and `:authority` are both the request's host (Envoy keeps `Host` as
    /// `:authority` for HTTP/1.1 and HTTP/2 alike), `:method` the method, `:path` the path as
    /// received. Entries for those names in `headers` are ignored, so the answer does not depend
    /// on the protocol or on how the HTTP layer copied the header map.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let pseudo = if name.eq_ignore_ascii_case("host") || name.eq_ignore_ascii_case(":authority")
        {
            Some(self.host.as_str())
        } else if name.eq_ignore_ascii_case(":method") {
            Some(self.method.as_str())
        } else if name.eq_ignore_ascii_case(":path") {
            Some(self.path.as_str())
        } else {
            None
        };
        let plain = pseudo.is_none();
        pseudo.filter(|v| !v.is_empty()).into_iter().chain(
            self.headers
                .iter()
                .filter(move |(n, _)| plain && n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str()),
        )
    }
}
