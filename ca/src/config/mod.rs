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
//!
//! [jwt_svid]                      # JWT-SVIDs (sigil.v1.IdentityService/MintJwtSvid)
//! algorithm = "ES256"             # or "ES384", "EdDSA"
//! key_lifetime = "24h"            # next key published at 1/2, signs at 5/6
//! default_ttl = "5m"
//! max_ttl = "1h"
//! # key_dir = "/var/lib/sigil/jwt-svid"   # default: <authority.dir>/jwt-svid for self-signed, else memory
//! ```

mod authn;
pub mod env;
mod error;
mod validate;

pub(crate) use validate::{check_wait, fmt_d};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigil_identity::{SpiffeId, TrustDomain};

pub use authn::{
    AuthenticatorConfig, DEFAULT_AUDIENCE, DEFAULT_JWKS_REFRESH_INTERVAL, DEFAULT_LEEWAY,
    DEFAULT_REVIEW_CACHE_SIZE, JwksConfig, MAX_LEEWAY,
};
pub use env::{EnvOverrides, Environment, ProcessEnvironment};
pub use error::ConfigError;

use crate::issue::IssuancePolicy;
use crate::jwtsvid::{
    DEFAULT_KEY_LIFETIME, DEFAULT_MAX_TTL as DEFAULT_JWT_MAX_TTL, DEFAULT_TTL as DEFAULT_JWT_TTL,
    JwtAlgorithm, JwtSvidSettings,
};

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
    /// JWT-SVID signing keys and token lifetimes.
    pub jwt_svid: JwtSvidConfig,
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

/// The subdirectory of a self-signed CA's `authority.dir` holding the JWT
/// signing keys when `jwt_svid.key_dir` is unset.
pub const DEFAULT_JWT_KEY_SUBDIR: &str = "jwt-svid";

/// `[jwt_svid]`: the JWT-SVID signing keys and token lifetimes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSvidConfig {
    /// Algorithm of new signing keys: `ES256` (default), `ES384` or
    /// `EdDSA`. A change applies from the next rotation.
    pub algorithm: JwtAlgorithm,
    /// Lifetime of a signing key: the next key is created and published at
    /// half of it and signs from 5/6 of it (at least a third of it after its
    /// publication). Default 24 h; at least 1 min and `max_ttl`, at most 365 d.
    #[serde(with = "humantime_serde")]
    pub key_lifetime: Duration,
    /// Token lifetime when the request asks for none. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    /// Longest token lifetime; longer requests are cut to it. Default 1 h;
    /// at least `default_ttl`, at most 1 d.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// Directory of the key file (`keys.json`, mode 0600), so a restart
    /// keeps the keys and tokens stay verifiable. Unset: `<authority.dir>/jwt-svid`
    /// for a `self-signed` authority; in memory (a new key at every start)
    /// for `files` and `kubernetes-secret`. Replicas that do not share it
    /// sign with different keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_dir: Option<PathBuf>,
}

impl Default for JwtSvidConfig {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::default(),
            key_lifetime: DEFAULT_KEY_LIFETIME,
            default_ttl: DEFAULT_JWT_TTL,
            max_ttl: DEFAULT_JWT_MAX_TTL,
            key_dir: None,
        }
    }
}

impl CaConfig {
    /// The key ring settings `[jwt_svid]` describes (with the default key
    /// directory resolved).
    pub fn jwt_svid_settings(&self) -> JwtSvidSettings {
        let j = &self.jwt_svid;
        let key_dir = j.key_dir.clone().or_else(|| {
            (self.authority.source == AuthoritySource::SelfSigned)
                .then(|| self.authority.dir.join(DEFAULT_JWT_KEY_SUBDIR))
        });
        JwtSvidSettings {
            algorithm: j.algorithm,
            key_lifetime: j.key_lifetime,
            default_ttl: j.default_ttl,
            max_ttl: j.max_ttl,
            key_dir,
        }
    }
}

#[cfg(test)]
mod tests;
