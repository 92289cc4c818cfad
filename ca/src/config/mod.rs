//! The CA server's configuration: one `serde` struct, documented defaults,
//! validated at load with errors that name the field.
//!
//! Precedence: built-in defaults < the TOML file < `SIGIL_CA__*`
//! environment variables (every setting, see [`env`](mod@env)) <
//! command-line flags (`sigil ca serve` reads the environment and owns the
//! flags, some of which also read a variable of their own, e.g.
//! `SIGIL_TRUST_DOMAIN`). Durations are written like `90s`, `24h`, `7d`.
//!
//! ```toml
//! trust_domain = "cluster.local"
//!
//! [authority]
//! source = "self-signed"          # or "files" (plug-in dir) or "kubernetes-secret"
//! dir = "sigil-data/ca"
//!
//! [server]
//! grpc_addr = "127.0.0.1:15012"
//! admin_addr = "127.0.0.1:15014"
//! dns_names = ["localhost", "127.0.0.1", "sigil-ca.sigil-system.svc"]  # IPs become IP SANs
//!
//! [[authenticators]]
//! type = "kubernetes-jwt"
//! issuer = "https://kubernetes.default.svc.cluster.local"
//! jwks_file = "/var/run/secrets/sa-issuer/jwks.json"
//!
//! [[authenticators]]
//! type = "svid"
//! ```

mod authn;
pub mod env;
mod error;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigil_identity::{SpiffeId, TrustDomain};

pub use authn::{
    AuthenticatorConfig, DEFAULT_AUDIENCE, DEFAULT_JWKS_REFRESH_INTERVAL, DEFAULT_LEEWAY,
    DEFAULT_REVIEW_CACHE_SIZE, JwksConfig, MAX_LEEWAY,
};
pub use env::{EnvOverrides, Environment, ProcessEnvironment};
pub use error::ConfigError;

use crate::issue::{IssuancePolicy, Ttl};

/// Default trust domain (what `TrustDomain::default()` returns).
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Default CA directory (self-signed data or plug-in files).
pub const DEFAULT_CA_DIR: &str = "sigil-data/ca";
/// Default gRPC listen address (Istio's CA port, loopback).
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:15012";
/// Default admin listen address (metrics, health, bundle), loopback.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:15014";
/// Default polling interval of a plug-in CA directory.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Default names in the CA's own serving certificate: what a client on
/// the same host dials (`https://localhost:15012`, `https://127.0.0.1:15012`,
/// `https://[::1]:15012`).
pub const DEFAULT_DNS_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// Default lifetime of the CA's own serving certificate.
pub const DEFAULT_SERVER_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default bound on concurrent connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default bound on concurrent HTTP/2 streams per connection.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 128;
/// Default bound on requests processed at once (beyond it: RESOURCE_EXHAUSTED).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
/// Default TLS handshake deadline.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default request deadline.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on a request message.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Default drain period at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default interval between bundle ConfigMap publications.
pub const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(60);

/// The whole CA server configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// The trust domain issued for. Default [`DEFAULT_TRUST_DOMAIN`].
    pub trust_domain: TrustDomain,
    /// Where the signing key comes from.
    pub authority: AuthorityConfig,
    /// Certificate lifetimes and CSR bounds.
    pub issuance: IssuanceConfig,
    /// Listeners and their limits.
    pub server: ServerConfig,
    /// Caller authenticators, tried in order; the first that recognises
    /// the credential decides. Default: `[development, svid]` (zero-config
    /// local use only; see [`AuthenticatorConfig::Development`]).
    pub authenticators: Vec<AuthenticatorConfig>,
    /// Who may act for whom.
    pub authorization: AuthorizationConfig,
    /// Kubernetes integration (off by default).
    pub kubernetes: KubernetesConfig,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            trust_domain: TrustDomain::default(),
            authority: AuthorityConfig::default(),
            issuance: IssuanceConfig::default(),
            server: ServerConfig::default(),
            authenticators: vec![AuthenticatorConfig::Development, AuthenticatorConfig::Svid],
            authorization: AuthorizationConfig::default(),
            kubernetes: KubernetesConfig::default(),
        }
    }
}

/// Where the signing key comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthoritySource {
    /// Plug-in files (Istio or cert-manager layout) in `dir`, hot-reloaded.
    Files,
    /// A self-signed root kept in a Kubernetes Secret (created if absent,
    /// race-safe between replicas). Needs `[kubernetes] enabled = true`.
    KubernetesSecret,
    /// A self-signed root created on first start in `dir` and reused.
    SelfSigned,
}

/// `[authority]`: the signing key's source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorityConfig {
    /// Default `self-signed`.
    pub source: AuthoritySource,
    /// The CA directory. Default [`DEFAULT_CA_DIR`].
    pub dir: PathBuf,
    /// How often a `files` directory is checked for changes. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

impl Default for AuthorityConfig {
    fn default() -> Self {
        Self {
            source: AuthoritySource::SelfSigned,
            dir: PathBuf::from(DEFAULT_CA_DIR),
            reload_interval: DEFAULT_RELOAD_INTERVAL,
        }
    }
}

/// `[issuance]`: certificate lifetimes and CSR bounds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuanceConfig {
    /// Lifetime when the request names none (or 0). Default 24 h.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Longest lifetime granted. Default 90 days.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// notBefore backdating. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
    /// Leaf subject organization; none (empty subject) by default.
    pub subject_organization: Option<String>,
}

impl Default for IssuanceConfig {
    fn default() -> Self {
        let policy = IssuancePolicy::default();
        Self {
            default_ttl: policy.default_ttl.as_duration(),
            max_ttl: policy.max_ttl.as_duration(),
            clock_skew: policy.clock_skew,
            subject_organization: None,
        }
    }
}

/// Upper bound of `server.workers`.
pub const MAX_WORKERS: usize = 1024;

/// `[server]`: listeners and limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// gRPC (Istio CA API over TLS). Default [`DEFAULT_GRPC_ADDR`].
    pub grpc_addr: SocketAddr,
    /// Admin HTTP (metrics, health, bundle). Default [`DEFAULT_ADMIN_ADDR`].
    pub admin_addr: SocketAddr,
    /// Names clients dial the CA by, put in its own serving certificate:
    /// DNS names, and IP addresses (`10.96.0.12`, `::1`), which are issued
    /// as IP SANs since a client connecting by IP matches only those.
    /// Default [`DEFAULT_DNS_NAMES`].
    pub dns_names: Vec<String>,
    /// Lifetime of the serving certificate (renewed at half-life). Default 24 h.
    #[serde(with = "humantime_serde")]
    pub server_cert_ttl: Duration,
    /// Concurrent connections. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Concurrent streams per connection. Default
    /// [`DEFAULT_MAX_STREAMS_PER_CONNECTION`].
    pub max_streams_per_connection: u32,
    /// Requests processed at once; beyond, RESOURCE_EXHAUSTED. Default
    /// [`DEFAULT_MAX_CONCURRENT_REQUESTS`].
    pub max_concurrent_requests: usize,
    /// TLS handshake deadline. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Request deadline; a client's shorter `grpc-timeout` wins. Past it
    /// the request is answered DEADLINE_EXCEEDED. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request message. Default 64 KiB.
    pub max_message_bytes: usize,
    /// Drain period at shutdown before connections are dropped. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Threads serving gRPC connections (TLS, HTTP/2 and signing), each
    /// with its own single-threaded runtime; connections are spread over
    /// them round-robin. Default 0: one per available CPU. At most
    /// [`MAX_WORKERS`].
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 15012)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 15014)),
            dns_names: DEFAULT_DNS_NAMES.iter().map(|n| (*n).to_owned()).collect(),
            server_cert_ttl: DEFAULT_SERVER_CERT_TTL,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            workers: 0,
        }
    }
}

/// `[authorization]`: who may act for whom.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationConfig {
    /// Callers allowed to ask for another workload's identity through the
    /// `ImpersonatedIdentity` metadata (node agents such as ztunnel), by the
    /// identity they authenticate as. Empty (the default): nobody.
    pub node_agents: Vec<SpiffeId>,
}

/// `[kubernetes]`: the API server integration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Use the Kubernetes API at all. Default false.
    pub enabled: bool,
    /// The API server URL; unset means in-cluster config or kubeconfig.
    pub api_url: Option<String>,
    /// Namespace of the CA Secret. Default `sigil-system`.
    pub ca_secret_namespace: String,
    /// Name of the CA Secret. Default `sigil-ca`.
    pub ca_secret_name: String,
    /// Publish the root bundle to a ConfigMap in every namespace. Default
    /// true (when enabled).
    pub publish_bundle: bool,
    /// The bundle ConfigMap's name. Default `sigil-ca-root-cert`.
    pub bundle_configmap: String,
    /// How often the bundle is re-published. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub publish_interval: Duration,
    /// Check, for impersonation, that the workload runs on the caller's
    /// node. Default true (when enabled).
    pub check_impersonation_node: bool,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            api_url: None,
            ca_secret_namespace: "sigil-system".to_owned(),
            ca_secret_name: "sigil-ca".to_owned(),
            publish_bundle: true,
            bundle_configmap: "sigil-ca-root-cert".to_owned(),
            publish_interval: DEFAULT_PUBLISH_INTERVAL,
            check_impersonation_node: true,
        }
    }
}

// === load and validate ===

impl CaConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_toml(&Self::read_file(path)?)
    }

    /// Reads a configuration file's text (for [`EnvOverrides::apply`]).
    pub fn read_file(path: &Path) -> Result<String, ConfigError> {
        std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            reason: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every cross-field rule; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, value: String, reason: &str| ConfigError::Invalid {
            field: field.to_owned(),
            value,
            reason: reason.to_owned(),
        };
        let i = &self.issuance;
        if i.default_ttl.as_secs() == 0 {
            return Err(invalid(
                "issuance.default_ttl",
                fmt_d(i.default_ttl),
                "must be at least 1s",
            ));
        }
        if i.max_ttl < i.default_ttl {
            return Err(invalid(
                "issuance.max_ttl",
                fmt_d(i.max_ttl),
                "must not be shorter than issuance.default_ttl",
            ));
        }
        if i.clock_skew > Duration::from_secs(3600) {
            return Err(invalid(
                "issuance.clock_skew",
                fmt_d(i.clock_skew),
                "must be at most 1h",
            ));
        }
        let s = &self.server;
        if s.dns_names.is_empty() {
            return Err(invalid(
                "server.dns_names",
                "[]".into(),
                "needs at least one DNS name",
            ));
        }
        for (field, value) in [
            ("server.max_connections", s.max_connections),
            ("server.max_concurrent_requests", s.max_concurrent_requests),
            ("server.max_message_bytes", s.max_message_bytes),
            (
                "server.max_streams_per_connection",
                s.max_streams_per_connection as usize,
            ),
        ] {
            if value == 0 {
                return Err(invalid(field, "0".into(), "must be positive"));
            }
        }
        if s.workers > MAX_WORKERS {
            return Err(invalid(
                "server.workers",
                s.workers.to_string(),
                "must be at most 1024 (0 = one per CPU)",
            ));
        }
        if s.server_cert_ttl < Duration::from_secs(60) {
            return Err(invalid(
                "server.server_cert_ttl",
                fmt_d(s.server_cert_ttl),
                "must be at least 1m",
            ));
        }
        if s.grpc_addr == s.admin_addr && s.grpc_addr.port() != 0 {
            return Err(invalid(
                "server.admin_addr",
                s.admin_addr.to_string(),
                "must differ from server.grpc_addr",
            ));
        }
        if self.authenticators.is_empty() {
            return Err(invalid(
                "authenticators",
                "[]".into(),
                "needs at least one authenticator",
            ));
        }
        for (index, a) in self.authenticators.iter().enumerate() {
            a.validate(index, self)?;
        }
        if self.authority.source == AuthoritySource::KubernetesSecret && !self.kubernetes.enabled {
            return Err(invalid(
                "authority.source",
                "kubernetes-secret".into(),
                "needs [kubernetes] enabled = true",
            ));
        }
        if self.authority.reload_interval < Duration::from_millis(100) {
            return Err(invalid(
                "authority.reload_interval",
                fmt_d(self.authority.reload_interval),
                "must be at least 100ms",
            ));
        }
        for id in &self.authorization.node_agents {
            if id.trust_domain() != &self.trust_domain {
                return Err(invalid(
                    "authorization.node_agents",
                    id.to_string(),
                    "must be in the CA's trust domain",
                ));
            }
        }
        Ok(())
    }

    /// The issuance policy these settings describe.
    pub fn issuance_policy(&self) -> Result<IssuancePolicy, ConfigError> {
        let ttl = |field: &str, d: Duration| {
            Ttl::from_duration(d).map_err(|e| ConfigError::Invalid {
                field: field.to_owned(),
                value: fmt_d(d),
                reason: e.to_string(),
            })
        };
        Ok(IssuancePolicy {
            default_ttl: ttl("issuance.default_ttl", self.issuance.default_ttl)?,
            max_ttl: ttl("issuance.max_ttl", self.issuance.max_ttl)?,
            clock_skew: self.issuance.clock_skew,
            subject_organization: self.issuance.subject_organization.clone(),
            max_csr_bytes: self.server.max_message_bytes,
        })
    }
}

pub(crate) fn fmt_d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests;
