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
/// Default longest life of a gRPC connection (then GOAWAY, then close).
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(3600);
/// Default time a connection may stay open without a request in progress.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default deadline, after the TLS handshake, for the client's HTTP/2
/// preface and first request.
pub const DEFAULT_PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval between HTTP/2 keep-alive PINGs.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Default wait for a keep-alive PING's acknowledgement.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default bound on concurrent admin connections.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = sigil_runtime::admin::DEFAULT_MAX_CONNECTIONS;
/// Default deadline for an admin request's headers.
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration =
    sigil_runtime::admin::DEFAULT_HEADER_READ_TIMEOUT;
/// Default time an admin connection may stay open between requests.
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = sigil_runtime::admin::DEFAULT_IDLE_TIMEOUT;

/// The whole CA server configuration. [`Default`] has no authenticator
/// (a configuration must name them); [`CaConfig::trial`] is the no-config
/// trial.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
    /// the credential decides. Required: a configuration without any is
    /// refused. Only the no-config trial ([`CaConfig::trial`]) has
    /// `[development, svid]`.
    pub authenticators: Vec<AuthenticatorConfig>,
    /// Who may act for whom.
    pub authorization: AuthorizationConfig,
    /// Kubernetes integration (off by default).
    pub kubernetes: KubernetesConfig,
}

impl CaConfig {
    /// The no-config trial of `sigil ca serve` (no `--config`): the
    /// defaults plus the `development` and `svid` authenticators. The only
    /// configuration with the development authenticator built in;
    /// [`CaConfig::validate`] still refuses it on a non-loopback
    /// `server.grpc_addr`.
    pub fn trial() -> Self {
        Self {
            authenticators: vec![AuthenticatorConfig::Development, AuthenticatorConfig::Svid],
            ..Self::default()
        }
    }

    /// [`CaConfig::trial`] as TOML text, the base the trial's
    /// `SIGIL_CA__*` overrides are applied to.
    pub fn trial_toml() -> Result<String, ConfigError> {
        toml::to_string(&Self::trial()).map_err(|e| ConfigError::Parse {
            reason: format!("serializing the trial configuration: {e}"),
        })
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
    /// Lifetime when the request names none (or 0). Default 24 h; at most
    /// `max_ttl`.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Longest lifetime granted. Default 90 days; at most
    /// [`MAX_CERT_TTL`] (10 years).
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Longest lifetime granted to a caller authenticated by its SVID
    /// (`svid` authenticator, renewal): whatever it asks, it gets at most
    /// this, so a stolen SVID cannot be renewed into longer certificates.
    /// Unset (the default): `default_ttl`. At most `max_ttl`.
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub svid_max_ttl: Option<Duration>,
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
            svid_max_ttl: None,
            clock_skew: policy.clock_skew,
            subject_organization: None,
        }
    }
}

/// Upper bound of `issuance.max_ttl` (10 years): far below what date
/// arithmetic and X.509 times can hold.
pub const MAX_CERT_TTL: Duration = Duration::from_secs(3650 * 86_400);
/// Upper bound of `server.server_cert_ttl` (one year).
pub const MAX_SERVER_CERT_TTL: Duration = Duration::from_secs(365 * 86_400);
/// Upper bound of every timeout and interval setting (one day).
pub const MAX_WAIT: Duration = Duration::from_secs(86_400);

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
    /// Longest life of a gRPC connection: then HTTP/2 GOAWAY, and the
    /// connection closes once its requests are done (at most
    /// `request_timeout` later). Bounds how long a connection's verified
    /// client SVID stays in use. Default 1 h.
    #[serde(with = "humantime_serde")]
    pub max_connection_age: Duration,
    /// A gRPC connection without a request in progress for this long is
    /// closed (GOAWAY). Default 5 min.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// After the TLS handshake, the client's HTTP/2 preface and first
    /// request must arrive within this, or the connection is closed.
    /// Default 10 s.
    #[serde(with = "humantime_serde")]
    pub preface_timeout: Duration,
    /// Interval between HTTP/2 keep-alive PINGs the server sends. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// A PING not acknowledged within this closes the connection. Default 20 s.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Concurrent gRPC connections from one source IP address; 0 (the
    /// default) = no per-address bound (`max_connections` still applies).
    pub max_connections_per_ip: usize,
    /// Concurrent admin connections; beyond, new ones are closed at once.
    /// Default [`DEFAULT_ADMIN_MAX_CONNECTIONS`].
    pub admin_max_connections: usize,
    /// Deadline for an admin request's headers (from the connection, or
    /// from the previous response). Default 5 s.
    #[serde(with = "humantime_serde")]
    pub admin_header_timeout: Duration,
    /// An admin connection is closed after this long without a request.
    /// Default 60 s.
    #[serde(with = "humantime_serde")]
    pub admin_idle_timeout: Duration,
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
            max_connection_age: DEFAULT_MAX_CONNECTION_AGE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            preface_timeout: DEFAULT_PREFACE_TIMEOUT,
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            max_connections_per_ip: 0,
            admin_max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            admin_header_timeout: DEFAULT_ADMIN_HEADER_TIMEOUT,
            admin_idle_timeout: DEFAULT_ADMIN_IDLE_TIMEOUT,
        }
    }
}

impl ServerConfig {
    /// The connection timeouts and bounds: each timeout positive and at
    /// most a day ([`check_wait`]).
    fn validate_connections(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("server.max_connection_age", self.max_connection_age),
            ("server.idle_timeout", self.idle_timeout),
            ("server.preface_timeout", self.preface_timeout),
            ("server.keepalive_interval", self.keepalive_interval),
            ("server.keepalive_timeout", self.keepalive_timeout),
            ("server.admin_header_timeout", self.admin_header_timeout),
            ("server.admin_idle_timeout", self.admin_idle_timeout),
        ] {
            check_wait(field, value)?;
        }
        if self.admin_max_connections == 0 {
            return Err(ConfigError::Invalid {
                field: "server.admin_max_connections".to_owned(),
                value: "0".to_owned(),
                reason: "must be positive".to_owned(),
            });
        }
        Ok(())
    }
}

/// `[authorization]`: who may act for whom.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationConfig {
    /// Callers allowed to ask for another workload's identity through the
    /// `ImpersonatedIdentity` metadata (node agents such as ztunnel), by the
    /// identity they authenticate as. Empty (the default): nobody.
    ///
    /// Needs the pod-on-node check (`[kubernetes] enabled = true` with
    /// `check_impersonation_node = true`), or `unbounded_impersonation`.
    pub node_agents: Vec<SpiffeId>,
    /// Lets `node_agents` impersonate **any** workload of the trust domain,
    /// from any node, when the pod-on-node check is off: one node agent's
    /// credential then mints every identity. Default false: such a
    /// configuration is refused. When in effect, the server logs a warning
    /// at start and `/metrics` shows `sigil_ca_unbounded_impersonation 1`.
    pub unbounded_impersonation: bool,
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
        self.validate_durations()?;
        let invalid = |field: &str, value: String, reason: &str| ConfigError::Invalid {
            field: field.to_owned(),
            value,
            reason: reason.to_owned(),
        };
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
        s.validate_connections()?;
        if s.workers > MAX_WORKERS {
            return Err(invalid(
                "server.workers",
                s.workers.to_string(),
                "must be at most 1024 (0 = one per CPU)",
            ));
        }
        if addrs_overlap(s.grpc_addr, s.admin_addr) {
            return Err(invalid(
                "server.admin_addr",
                s.admin_addr.to_string(),
                &format!(
                    "must differ from server.grpc_addr ({}): same port on the same or a wildcard address",
                    s.grpc_addr
                ),
            ));
        }
        for (index, a) in self.authenticators.iter().enumerate() {
            a.validate(index, self)?;
        }
        if let Some(index) = self
            .authenticators
            .iter()
            .position(|a| *a == AuthenticatorConfig::Development)
            && !s.grpc_addr.ip().to_canonical().is_loopback()
        {
            return Err(invalid(
                "server.grpc_addr",
                s.grpc_addr.to_string(),
                &format!(
                    "must be a loopback address (127.0.0.1, ::1) while authenticators[{index}] is \
                     `development`, which trusts `dev:<namespace>:<service-account>` tokens \
                     without proof; configure real authenticators to listen on a reachable address"
                ),
            ));
        }
        if self.authority.source == AuthoritySource::KubernetesSecret && !self.kubernetes.enabled {
            return Err(invalid(
                "authority.source",
                "kubernetes-secret".into(),
                "needs [kubernetes] enabled = true",
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
        if !self.authorization.node_agents.is_empty()
            && !self.node_check_enabled()
            && !self.authorization.unbounded_impersonation
        {
            return Err(invalid(
                "authorization.node_agents",
                format!("{} node agent(s)", self.authorization.node_agents.len()),
                "without the pod-on-node check ([kubernetes] enabled = true and \
                 check_impersonation_node = true) a node agent could obtain any identity of the \
                 trust domain from any node; enable the check, or accept that risk explicitly with \
                 authorization.unbounded_impersonation = true",
            ));
        }
        // Last, so a partial file's other mistakes are reported first.
        if self.authenticators.is_empty() {
            return Err(invalid(
                "authenticators",
                "[]".into(),
                "needs at least one [[authenticators]] entry (e.g. type = \"kubernetes-jwt\" \
                 and type = \"svid\"); the development authenticator is only built in to the \
                 trial without --config",
            ));
        }
        Ok(())
    }

    /// Whether impersonation is checked against the caller's node
    /// (`[kubernetes] enabled` and `check_impersonation_node`).
    pub fn node_check_enabled(&self) -> bool {
        self.kubernetes.enabled && self.kubernetes.check_impersonation_node
    }

    /// Whether node agents may impersonate any workload from any node: some
    /// are configured, the node check is off, and
    /// `authorization.unbounded_impersonation` accepts it.
    pub fn impersonation_unbounded(&self) -> bool {
        !self.authorization.node_agents.is_empty()
            && !self.node_check_enabled()
            && self.authorization.unbounded_impersonation
    }

    /// The lifetime cap of callers authenticated by their SVID:
    /// `issuance.svid_max_ttl`, or `issuance.default_ttl` when unset.
    pub fn svid_max_ttl(&self) -> Duration {
        self.issuance
            .svid_max_ttl
            .unwrap_or(self.issuance.default_ttl)
    }

    /// Every duration within its bounds: lifetimes positive and at most
    /// [`MAX_CERT_TTL`] ([`MAX_SERVER_CERT_TTL`] for the serving
    /// certificate), so `now + ttl` cannot overflow; timeouts and intervals
    /// positive and at most [`MAX_WAIT`].
    fn validate_durations(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, d: Duration, reason: &str| ConfigError::Invalid {
            field: field.to_owned(),
            value: fmt_d(d),
            reason: reason.to_owned(),
        };
        let i = &self.issuance;
        if i.default_ttl.as_secs() == 0 {
            return Err(invalid(
                "issuance.default_ttl",
                i.default_ttl,
                "must be at least 1s",
            ));
        }
        if i.max_ttl > MAX_CERT_TTL {
            return Err(invalid(
                "issuance.max_ttl",
                i.max_ttl,
                "must be at most 3650d (10 years)",
            ));
        }
        if i.max_ttl < i.default_ttl {
            return Err(invalid(
                "issuance.max_ttl",
                i.max_ttl,
                "must not be shorter than issuance.default_ttl",
            ));
        }
        if let Some(svid) = i.svid_max_ttl {
            if svid.as_secs() == 0 {
                return Err(invalid(
                    "issuance.svid_max_ttl",
                    svid,
                    "must be at least 1s",
                ));
            }
            if svid > i.max_ttl {
                return Err(invalid(
                    "issuance.svid_max_ttl",
                    svid,
                    "must not be longer than issuance.max_ttl",
                ));
            }
        }
        if i.clock_skew > Duration::from_secs(3600) {
            return Err(invalid(
                "issuance.clock_skew",
                i.clock_skew,
                "must be at most 1h",
            ));
        }
        let s = &self.server;
        if s.server_cert_ttl < Duration::from_secs(60) {
            return Err(invalid(
                "server.server_cert_ttl",
                s.server_cert_ttl,
                "must be at least 1m",
            ));
        }
        if s.server_cert_ttl > MAX_SERVER_CERT_TTL {
            return Err(invalid(
                "server.server_cert_ttl",
                s.server_cert_ttl,
                "must be at most 365d",
            ));
        }
        if self.authority.reload_interval < Duration::from_millis(100) {
            return Err(invalid(
                "authority.reload_interval",
                self.authority.reload_interval,
                "must be at least 100ms",
            ));
        }
        for (field, d) in [
            ("server.handshake_timeout", s.handshake_timeout),
            ("server.request_timeout", s.request_timeout),
            ("server.shutdown_grace", s.shutdown_grace),
            ("authority.reload_interval", self.authority.reload_interval),
            (
                "kubernetes.publish_interval",
                self.kubernetes.publish_interval,
            ),
        ] {
            check_wait(field, d)?;
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

/// A timeout or interval: positive (zero would time out at once or spin)
/// and at most [`MAX_WAIT`].
pub(crate) fn check_wait(field: &str, d: Duration) -> Result<(), ConfigError> {
    let reason = if d.is_zero() {
        "must be positive"
    } else if d > MAX_WAIT {
        "must be at most 1d"
    } else {
        return Ok(());
    };
    Err(ConfigError::Invalid {
        field: field.to_owned(),
        value: fmt_d(d),
        reason: reason.to_owned(),
    })
}

/// Whether two listeners would claim the same port: equal addresses, or the
/// same non-zero port with a wildcard (`0.0.0.0`, `[::]`) on either side.
fn addrs_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

pub(crate) fn fmt_d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests;
