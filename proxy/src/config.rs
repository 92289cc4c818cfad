//! The proxy's configuration: TOML, then `SIGIL_PROXY__*` environment
//! overrides (through [`sigil_runtime::env`], as the node agent's).
//!
//! ```toml
//! trust_domain = "example.org"
//! [credentials.files]          # or: [credentials.sds] socket = "/run/sigil/agent.sock"
//! cert_chain = "/run/sigil/svid.pem"
//! key = "/run/sigil/key.pem"
//! bundle = "/run/sigil/bundle.pem"
//! [[listeners]]
//! mode = "inbound"
//! listen = "0.0.0.0:15006"
//! target = "127.0.0.1:8080"
//! [admin]                      # optional; /healthz, /readyz, /metrics
//! addr = "127.0.0.1:15021"     # the default (the node agent's is 15020)
//! [[federation]]               # optional, repeatable: a federated trust domain
//! trust_domain = "partner.example"
//! bundle = "/etc/sigil/partner.bundle"   # PEM roots or SPIFFE bundle JSON
//! poll_interval = "1s"                   # optional (default 1s)
//! ```
//!
//! Federation: each `[[federation]]` entry trusts the roots in `bundle` for
//! peers of `trust_domain`, next to the local trust domain's bundle (from
//! `[credentials.files] bundle` or the SDS `ROOTCA`). A peer chain is only
//! ever verified against the bundle of the trust domain its own SPIFFE ID
//! names, so a partner ID signed by the local root (or a local ID signed by a
//! partner root) is refused. Inbound listeners then accept peers of the
//! federated domains (authorization decides on their principal, e.g.
//! `partner.example/ns/x/sa/y`); outbound listeners reach them with
//! `expected_trust_domain = "partner.example"` or an `expected_id` in it.
//! The file is PEM `CERTIFICATE` blocks (several roots may overlap during a
//! rotation) or a SPIFFE bundle JSON document (detected by a leading `{`).
//! It must be valid at start; afterwards it is polled, and a changed file
//! that is invalid is refused (logged, naming the file) and the previous
//! roots kept. Each trust domain must be valid, listed once, and differ from
//! the local `trust_domain`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sigil_identity::TrustDomain;
use sigil_runtime::env::{EnvError, EnvOverrides, Environment};

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "SIGIL_PROXY__";

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML or an override is invalid.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A field has an invalid value.
    #[error("invalid config: {field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// Why.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The local trust domain (the bundle file's).
    pub trust_domain: String,
    /// Where the credentials come from.
    pub credentials: CredentialsConfig,
    /// The listeners.
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Lowest TLS version accepted: `"1.3"` (default, [`DEFAULT_TLS_MIN_VERSION`]) or `"1.2"`.
    #[serde(default = "default_tls_min")]
    pub tls_min_version: String,
    /// Time allowed for a TLS handshake (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time a connection may stay without traffic in either direction
    /// (default [`DEFAULT_IDLE_TIMEOUT`]).
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest time a connection is served, busy or not (default
    /// [`DEFAULT_MAX_CONNECTION_AGE`]): at this age an HTTP connection is
    /// drained (h2 GOAWAY, HTTP/1.1 `Connection: close` after the in-flight
    /// request) and an L4 connection is closed, so a removed root, an expired
    /// peer SVID or a new policy reaches long-lived connections too.
    #[serde(default = "default_max_connection_age", with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// Time established connections get to finish at shutdown (default
    /// [`DEFAULT_SHUTDOWN_GRACE`]).
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Connections served at once per listener; more wait to be accepted
    /// (default [`DEFAULT_MAX_CONNECTIONS`], at most [`MAX_CONNECTIONS_LIMIT`]).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Inbound connections one source address may have before their
    /// handshake is done (sniffing, TLS); more from that source are closed
    /// at once, so one source cannot hold every `max_connections` slot with
    /// connections that never authenticate (default
    /// [`DEFAULT_MAX_PENDING_HANDSHAKES_PER_SOURCE`]).
    #[serde(default = "default_max_pending_per_source")]
    pub max_pending_handshakes_per_source: usize,
    /// The workload this proxy fronts and the policy files that apply to it.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Limits of HTTP (L7) listeners.
    #[serde(default)]
    pub http: HttpConfig,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Federated trust domains (`[[federation]]`), whose peers are verified
    /// against their own bundle.
    #[serde(default)]
    pub federation: Vec<FederationConfig>,
}

/// One `[[federation]]` entry: a foreign trust domain and its bundle file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// The federated trust domain (`partner.example`).
    pub trust_domain: String,
    /// Its trust bundle: PEM `CERTIFICATE` blocks or SPIFFE bundle JSON.
    pub bundle: PathBuf,
    /// How often the file is checked for changes (default
    /// [`DEFAULT_POLL_INTERVAL`]).
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
}

/// `[admin]`: the admin listener `sigil proxy` serves with
/// `sigil_runtime::admin` (`/healthz`, `/readyz`, `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address (default [`DEFAULT_ADMIN_ADDR`], loopback; port 0
    /// picks a free port).
    #[serde(default = "default_admin_addr")]
    pub addr: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            addr: default_admin_addr(),
        }
    }
}

/// The workload and its Istio policy files (`[policy]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Istio YAML files (AuthorizationPolicy, PeerAuthentication,
    /// RequestAuthentication), hot reloaded. None: every request is allowed
    /// and mTLS is PERMISSIVE, as Istio with no policy.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// The mesh root namespace (default [`DEFAULT_ROOT_NAMESPACE`]).
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    /// The workload's namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The workload's labels, for `selector.matchLabels`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Path normalization before matching: `base` (default, Istio's),
    /// `merge_slashes` or `decode_and_merge_slashes`.
    #[serde(default)]
    pub path_normalization: PathNormalizationConfig,
    /// How often the policy files are checked for changes (default
    /// [`DEFAULT_POLL_INTERVAL`]).
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub reload_interval: Duration,
    /// PEM roots for `jwksUri` fetches (default: the bundled Mozilla roots).
    #[serde(default)]
    pub jwks_ca_file: Option<PathBuf>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            root_namespace: default_root_namespace(),
            namespace: default_namespace(),
            labels: std::collections::BTreeMap::new(),
            path_normalization: PathNormalizationConfig::default(),
            reload_interval: DEFAULT_POLL_INTERVAL,
            jwks_ca_file: None,
        }
    }
}

/// `[policy] path_normalization`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathNormalizationConfig {
    /// Istio's default (`BASE`).
    #[default]
    Base,
    /// `BASE` plus merging `//`.
    MergeSlashes,
    /// `MERGE_SLASHES` plus decoding `%2F`, `%5C`.
    DecodeAndMergeSlashes,
}

impl From<PathNormalizationConfig> for crate::policy::PathNormalization {
    fn from(value: PathNormalizationConfig) -> Self {
        match value {
            PathNormalizationConfig::Base => Self::Base,
            PathNormalizationConfig::MergeSlashes => Self::MergeSlashes,
            PathNormalizationConfig::DecodeAndMergeSlashes => Self::DecodeAndMergeSlashes,
        }
    }
}

/// Limits of HTTP listeners (`[http]`): bounded headers and slow clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request head (request line and headers) accepted, in bytes;
    /// larger gets 431 (default [`DEFAULT_MAX_HEADER_BYTES`]).
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time a client has to send a whole request head once it started
    /// (slowloris; default [`DEFAULT_HEADER_READ_TIMEOUT`]).
    #[serde(default = "default_header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time an upstream has to answer a request (default
    /// [`DEFAULT_REQUEST_TIMEOUT`]).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// L4: bytes copied both ways, one decision per connection.
    #[default]
    Tcp,
    /// L7: HTTP/1.1 and HTTP/2, one decision per request.
    Http,
}

/// Where the credentials come from: exactly one of `files` and `sds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// PEM files, re-read when they change.
    #[serde(default)]
    pub files: Option<FilesConfig>,
    /// The node agent's SDS.
    #[serde(default)]
    pub sds: Option<SdsConfig>,
}

/// The node agent's SDS endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdsConfig {
    /// The agent's unix socket.
    pub socket: PathBuf,
}

/// Credentials from PEM files, re-read when they change.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The certificate chain (leaf first).
    pub cert_chain: PathBuf,
    /// The leaf's PKCS#8 private key.
    pub key: PathBuf,
    /// The trust bundle of the local trust domain.
    pub bundle: PathBuf,
    /// How often the files are checked for changes (default
    /// [`DEFAULT_POLL_INTERVAL`]).
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
}

/// Which side of the mesh a listener sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Terminates mTLS and forwards plaintext to a local application.
    Inbound,
    /// Accepts plaintext from a local application and originates mTLS.
    Outbound,
}

/// One listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Inbound or outbound.
    pub mode: ListenerMode,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// Where to forward: the local application (inbound) or the remote
    /// proxy (outbound).
    pub target: SocketAddr,
    /// Outbound: the exact SPIFFE ID the remote proxy must present.
    #[serde(default)]
    pub expected_id: Option<String>,
    /// Outbound: the trust domain the remote proxy must belong to (when no
    /// `expected_id`; default: the local trust domain).
    #[serde(default)]
    pub expected_trust_domain: Option<String>,
    /// Outbound: the SNI sent (default `sigil`).
    #[serde(default)]
    pub sni: Option<String>,
    /// `tcp` (default) or `http`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Default [`ProxyConfig::tls_min_version`].
pub const DEFAULT_TLS_MIN_VERSION: &str = "1.3";
/// Default [`ProxyConfig::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ProxyConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Default [`ProxyConfig::max_connection_age`].
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);
/// Default [`ProxyConfig::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Default [`ProxyConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Largest [`ProxyConfig::max_connections`] accepted (a bound that large
/// is no bound; tokio's semaphore also caps its permits).
pub const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;
/// Default [`ProxyConfig::max_pending_handshakes_per_source`].
pub const DEFAULT_MAX_PENDING_HANDSHAKES_PER_SOURCE: usize = 256;
/// Default [`PolicyConfig::root_namespace`] (Istio's).
pub const DEFAULT_ROOT_NAMESPACE: &str = crate::policy::DEFAULT_ROOT_NAMESPACE;
/// Default [`HttpConfig::max_header_bytes`] (Envoy's 60 KiB).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 60 * 1024;
/// Default [`HttpConfig::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`HttpConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`AdminConfig::addr`]: loopback port 15021 (Istio's sidecar
/// health port), next to the node agent's 15020 so both can run on one host.
pub const DEFAULT_ADMIN_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15021);
/// Default [`FilesConfig::poll_interval`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

fn default_tls_min() -> String {
    DEFAULT_TLS_MIN_VERSION.to_owned()
}
fn default_handshake_timeout() -> Duration {
    DEFAULT_HANDSHAKE_TIMEOUT
}
fn default_idle_timeout() -> Duration {
    DEFAULT_IDLE_TIMEOUT
}
fn default_max_connection_age() -> Duration {
    DEFAULT_MAX_CONNECTION_AGE
}
fn default_shutdown_grace() -> Duration {
    DEFAULT_SHUTDOWN_GRACE
}
fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
fn default_max_pending_per_source() -> usize {
    DEFAULT_MAX_PENDING_HANDSHAKES_PER_SOURCE
}
fn default_root_namespace() -> String {
    DEFAULT_ROOT_NAMESPACE.to_owned()
}
fn default_namespace() -> String {
    "default".to_owned()
}
fn default_max_header_bytes() -> usize {
    DEFAULT_MAX_HEADER_BYTES
}
fn default_header_read_timeout() -> Duration {
    DEFAULT_HEADER_READ_TIMEOUT
}
fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}
fn default_admin_addr() -> SocketAddr {
    DEFAULT_ADMIN_ADDR
}
fn default_poll() -> Duration {
    DEFAULT_POLL_INTERVAL
}

impl ProxyConfig {
    /// Defaults, then the TOML `text`, then the `SIGIL_PROXY__*` variables of
    /// `env`, validated.
    pub fn load(text: &str, env: &dyn Environment) -> Result<Self, ConfigError> {
        let overrides = EnvOverrides::from_env(env, ENV_PREFIX)?;
        let config: Self = overrides.apply(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: &str| ConfigError::Invalid {
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        if !matches!(self.tls_min_version.as_str(), "1.2" | "1.3") {
            return Err(invalid("tls_min_version", "must be \"1.2\" or \"1.3\""));
        }
        if self.credentials.files.is_some() == self.credentials.sds.is_some() {
            return Err(invalid(
                "credentials",
                "set exactly one of [credentials.files] and [credentials.sds]",
            ));
        }
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS_LIMIT {
            return Err(invalid(
                "max_connections",
                &format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        if self.max_pending_handshakes_per_source == 0
            || self.max_pending_handshakes_per_source > MAX_CONNECTIONS_LIMIT
        {
            return Err(invalid(
                "max_pending_handshakes_per_source",
                &format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"),
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(invalid("handshake_timeout", "must be positive"));
        }
        if self.idle_timeout.is_zero() {
            return Err(invalid("idle_timeout", "must be positive"));
        }
        if self.max_connection_age.is_zero() {
            return Err(invalid("max_connection_age", "must be positive"));
        }
        // Each of these feeds a timer; zero would make a watcher panic or
        // cut every request.
        let mut positive = vec![
            ("policy.reload_interval", self.policy.reload_interval),
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.request_timeout", self.http.request_timeout),
        ];
        if let Some(files) = &self.credentials.files {
            positive.push(("credentials.files.poll_interval", files.poll_interval));
        }
        if let Some((field, _)) = positive.iter().find(|(_, value)| value.is_zero()) {
            return Err(invalid(field, "must be positive"));
        }
        self.validate_federation()
    }

    fn validate_federation(&self) -> Result<(), ConfigError> {
        let local = TrustDomain::new(&self.trust_domain).map_err(|e| ConfigError::Invalid {
            field: "trust_domain".to_owned(),
            reason: e.to_string(),
        })?;
        let mut seen: Vec<TrustDomain> = Vec::with_capacity(self.federation.len());
        for (i, entry) in self.federation.iter().enumerate() {
            let invalid = |field: &str, reason: String| ConfigError::Invalid {
                field: format!("federation[{i}].{field}"),
                reason,
            };
            let td = TrustDomain::new(&entry.trust_domain).map_err(|e| {
                invalid(
                    "trust_domain",
                    format!("{:?} is not a trust domain: {e}", entry.trust_domain),
                )
            })?;
            if td == local {
                return Err(invalid(
                    "trust_domain",
                    format!(
                        "{td} is the local trust_domain; its bundle comes from the credentials"
                    ),
                ));
            }
            if let Some(first) = seen.iter().position(|s| *s == td) {
                return Err(invalid(
                    "trust_domain",
                    format!("{td} is already federated by federation[{first}]"),
                ));
            }
            if entry.bundle.as_os_str().is_empty() {
                return Err(invalid("bundle", "must name a file".to_owned()));
            }
            if entry.poll_interval.is_zero() {
                return Err(invalid("poll_interval", "must be positive".to_owned()));
            }
            seen.push(td);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
