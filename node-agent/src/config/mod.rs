//! The node agent's configuration: one `serde` struct, documented
//! defaults, validated at load with errors that name the field.
//!
//! Precedence: built-in defaults < the TOML file < `SIGIL_AGENT__*`
//! environment variables (every setting; see [`sigil_runtime::env`]) <
//! command-line flags (`--ca-address`, `--sds-socket`, `--workload-socket`,
//! `--admin-addr`), then [`AgentConfig::validate`] once; `sigil agent`
//! exits 64 naming the setting when it fails. A variable is
//! [`ENV_PREFIX`] followed by the setting's path with `__` between the
//! segments (`SIGIL_AGENT__KUBERNETES__NODE_NAME`,
//! `SIGIL_AGENT__CERTIFICATES__TTL=1h`, `SIGIL_AGENT__SDS__MODE=0o660`);
//! its value is read as TOML when it is valid TOML and as a string
//! otherwise. Durations are written like `90s`, `5m`, `24h`; timeouts and
//! intervals must be more than 0 and at most 1 day. Every setting with its
//! default is also tabulated in the README ("Agent configuration").
//!
//! Node mode, as the DaemonSet in `deploy/base` runs it (the node name
//! from the downward API in `SIGIL_AGENT__KUBERNETES__NODE_NAME`):
//!
//! ```toml
//! mode = "node"                      # the default; or "sidecar"
//! trust_domain = "cluster.local"
//!
//! [ca]
//! address = "https://sigil-ca.sigil-system.svc:15012"
//! roots_file = "/etc/sigil-ca/root-cert.pem"
//! token_file = "/var/run/secrets/tokens/sigil-ca-token"
//!
//! [sds]
//! socket = "/var/run/sigil/sds.sock"
//! mode = 0o666                       # attestation decides what a caller gets
//!
//! [workload_api]
//! socket = "/var/run/sigil/workload.sock"
//!
//! [attestation]
//! registration_file = "/etc/sigil/registrations.toml"
//!
//! [kubernetes]
//! enabled = true
//!
//! [admin]
//! addr = "0.0.0.0:15020"
//! ```
//!
//! Sidecar mode serves one identity with the workload's own token; every
//! caller of its sockets gets that identity (unless a registration file is
//! set), so keep the sockets private:
//!
//! ```toml
//! mode = "sidecar"
//!
//! [ca]
//! roots_file = "sigil-data/ca/root-cert.pem"
//! token_file = "/var/run/secrets/tokens/sigil-ca-token"
//!
//! [attestation]
//! identity = "spiffe://cluster.local/ns/default/sa/app"
//!
//! [workload_api]
//! mode = 0o600
//! ```

mod error;
mod validate;

pub use validate::{KEY_ALGORITHMS, SIGNALS};

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sigil_identity::{SpiffeId, TrustDomain};
use sigil_runtime::env::{EnvOverrides, Environment};

pub use error::ConfigError;

/// The prefix of override variables (`SIGIL_AGENT__CA__ADDRESS=...`).
pub const ENV_PREFIX: &str = "SIGIL_AGENT__";
/// Default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Default CA address (the CA's default listener).
pub const DEFAULT_CA_ADDRESS: &str = "https://localhost:15012";
/// Default file of PEM roots the CA's serving certificate must chain to
/// (where `sigil ca serve` writes its self-signed root).
pub const DEFAULT_CA_ROOTS_FILE: &str = "sigil-data/ca/root-cert.pem";
/// Default connect deadline to the CA.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline of one CA request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on CA requests in flight at once.
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 8;
/// Default fraction of a certificate's lifetime after which it is renewed
/// (SPIRE and Istio: one half).
pub const DEFAULT_RENEW_FRACTION: f64 = 0.5;
/// Default upper bound of the random jitter subtracted from the renewal
/// time, as a fraction of the lifetime.
pub const DEFAULT_JITTER_FRACTION: f64 = 0.1;
/// Default first retry delay after a failed CA request.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Default longest retry delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Default time an identity nobody asks for is kept before its key is
/// dropped.
pub const DEFAULT_IDLE_DROP: Duration = Duration::from_secs(600);
/// Default lifetime asked for JWT-SVIDs (SPIRE's default).
pub const DEFAULT_JWT_SVID_TTL: Duration = Duration::from_secs(300);
/// Default SDS socket.
pub const DEFAULT_SDS_SOCKET: &str = "/var/run/sigil/sds.sock";
/// Default SDS socket mode: the proxy's user and group.
pub const DEFAULT_SDS_SOCKET_MODE: u32 = 0o660;
/// Default Workload API socket.
pub const DEFAULT_WORKLOAD_SOCKET: &str = "/var/run/sigil/workload.sock";
/// Default Workload API socket mode: any local process may connect;
/// attestation decides what it gets.
pub const DEFAULT_WORKLOAD_SOCKET_MODE: u32 = 0o666;
/// Default interval at which the registration file is checked for changes.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// Default admin listener (health, readiness, metrics, status), loopback.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:15020";
/// Default drain period at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Default file names of the file output (spiffe-helper's names).
pub const DEFAULT_CERT_FILE_NAME: &str = "svid.pem";
/// Default key file name of the file output (mode 0600).
pub const DEFAULT_KEY_FILE_NAME: &str = "svid_key.pem";
/// Default bundle file name of the file output.
pub const DEFAULT_BUNDLE_FILE_NAME: &str = "svid_bundle.pem";
/// Default signal sent to the process in `file_output.pid_file`.
pub const DEFAULT_SIGNAL: &str = "SIGHUP";

/// How the agent obtains identities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// One agent per node (a DaemonSet): it authenticates as itself and
    /// asks for each workload's identity with `ImpersonatedIdentity`.
    #[default]
    Node,
    /// One agent per workload: the workload's own token, one identity.
    Sidecar,
}

/// The whole agent configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Node or sidecar. Default `node`.
    pub mode: Mode,
    /// The trust domain of the identities served. Default
    /// [`DEFAULT_TRUST_DOMAIN`].
    pub trust_domain: TrustDomain,
    /// How to reach the CA.
    pub ca: CaConfig,
    /// Keys and rotation.
    pub certificates: CertificatesConfig,
    /// The Envoy SDS socket.
    pub sds: SdsConfig,
    /// The SPIFFE Workload API socket.
    pub workload_api: WorkloadApiConfig,
    /// Who gets which identity.
    pub attestation: AttestationConfig,
    /// Kubernetes workload attestation.
    pub kubernetes: KubernetesConfig,
    /// Writing one identity to files.
    pub file_output: Option<FileOutputConfig>,
    /// The admin listener.
    pub admin: AdminConfig,
}

/// `[ca]`: the CA's address and how the agent authenticates to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// `https://host:port` of an Istio-compatible CA. Default
    /// [`DEFAULT_CA_ADDRESS`].
    pub address: String,
    /// PEM roots the CA's serving certificate must chain to. Default
    /// [`DEFAULT_CA_ROOTS_FILE`].
    pub roots_file: PathBuf,
    /// The name to verify in the CA's certificate. Default: the host of
    /// `address`.
    pub server_name: Option<String>,
    /// A bearer token file (a projected service-account token), re-read
    /// for every request because the kubelet rotates it. Node mode: the
    /// agent's own; sidecar mode: the workload's. Unset: no token.
    pub token_file: Option<PathBuf>,
    /// The agent's own SVID chain (PEM) for mTLS to the CA. Needs
    /// `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// The key of `client_cert_file` (PEM PKCS#8).
    pub client_key_file: Option<PathBuf>,
    /// Connect deadline. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Deadline of one request. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// CA requests in flight at once. Default 8.
    pub max_concurrent_requests: usize,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            address: DEFAULT_CA_ADDRESS.to_owned(),
            roots_file: PathBuf::from(DEFAULT_CA_ROOTS_FILE),
            server_name: None,
            token_file: None,
            client_cert_file: None,
            client_key_file: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }
}

/// `[certificates]`: keys, lifetimes and rotation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertificatesConfig {
    /// Key algorithm of every workload key: `ecdsa-p256` (default),
    /// `ecdsa-p384`, `rsa-2048`, `rsa-3072`, `ed25519`.
    pub key_algorithm: String,
    /// Lifetime asked of the CA; unset: the CA's default.
    #[serde(with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// Renew after this fraction of the lifetime. Default 0.5.
    pub renew_fraction: f64,
    /// Up to this fraction of the lifetime is subtracted at random from
    /// the renewal time. Default 0.1.
    pub jitter_fraction: f64,
    /// First retry delay after a failure. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Longest retry delay. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// An identity nobody has asked for in this long is dropped and its
    /// key zeroized. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub idle_drop: Duration,
    /// Lifetime asked for JWT-SVIDs. Default 5 min.
    #[serde(with = "humantime_serde")]
    pub jwt_svid_ttl: Duration,
}

impl Default for CertificatesConfig {
    fn default() -> Self {
        Self {
            key_algorithm: "ecdsa-p256".to_owned(),
            ttl: None,
            renew_fraction: DEFAULT_RENEW_FRACTION,
            jitter_fraction: DEFAULT_JITTER_FRACTION,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            idle_drop: DEFAULT_IDLE_DROP,
            jwt_svid_ttl: DEFAULT_JWT_SVID_TTL,
        }
    }
}

/// `[sds]`: the Envoy SDS unix socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SdsConfig {
    /// Serve SDS at all. Default true.
    pub enabled: bool,
    /// The socket's path. Default [`DEFAULT_SDS_SOCKET`].
    pub socket: PathBuf,
    /// The socket file's mode (write it as `0o660`). Default 0o660: the
    /// proxy's user or group.
    pub mode: u32,
}

impl Default for SdsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: PathBuf::from(DEFAULT_SDS_SOCKET),
            mode: DEFAULT_SDS_SOCKET_MODE,
        }
    }
}

/// `[workload_api]`: the SPIFFE Workload API unix socket (given to
/// workloads as `SPIFFE_ENDPOINT_SOCKET=unix://<socket>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadApiConfig {
    /// Serve the Workload API at all. Default true.
    pub enabled: bool,
    /// The socket's path. Default [`DEFAULT_WORKLOAD_SOCKET`].
    pub socket: PathBuf,
    /// The socket file's mode. Default 0o666: any local process may
    /// connect; attestation decides what it gets.
    pub mode: u32,
}

impl Default for WorkloadApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: PathBuf::from(DEFAULT_WORKLOAD_SOCKET),
            mode: DEFAULT_WORKLOAD_SOCKET_MODE,
        }
    }
}

/// `[attestation]`: who gets which identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttestationConfig {
    /// Registration entries (TOML, hot reloaded): selector sets mapped to
    /// SPIFFE IDs. Unset: none (Kubernetes mode still has its default
    /// entry; sidecar mode serves `identity`).
    pub registration_file: Option<PathBuf>,
    /// How often the registration file is checked. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Sidecar mode: the one identity served. Required in sidecar mode.
    pub identity: Option<SpiffeId>,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        Self {
            registration_file: None,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            identity: None,
        }
    }
}

/// `[kubernetes]`: resolve callers to pods (selectors `k8s:*`, and the
/// default entry `ns/<ns>/sa/<sa>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesConfig {
    /// Default false.
    pub enabled: bool,
    /// The node this agent runs on (the downward API's `spec.nodeName`).
    /// Required when enabled.
    pub node_name: Option<String>,
    /// The API server URL; unset: in-cluster config or kubeconfig.
    pub api_url: Option<String>,
}

/// `[file_output]`: one identity written to files on every rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOutputConfig {
    /// The identity written.
    pub identity: SpiffeId,
    /// The directory the files are written into.
    pub dir: PathBuf,
    /// Chain file name. Default [`DEFAULT_CERT_FILE_NAME`].
    #[serde(default = "default_cert_file_name")]
    pub cert_file_name: String,
    /// Key file name (mode 0600). Default [`DEFAULT_KEY_FILE_NAME`].
    #[serde(default = "default_key_file_name")]
    pub key_file_name: String,
    /// Bundle file name. Default [`DEFAULT_BUNDLE_FILE_NAME`].
    #[serde(default = "default_bundle_file_name")]
    pub bundle_file_name: String,
    /// A command (argv, no shell) run after every write.
    #[serde(default)]
    pub command: Vec<String>,
    /// A pid file whose process is signalled after every write.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// The signal. Default `SIGHUP`.
    #[serde(default = "default_signal")]
    pub signal: String,
}

fn default_cert_file_name() -> String {
    DEFAULT_CERT_FILE_NAME.to_owned()
}
fn default_key_file_name() -> String {
    DEFAULT_KEY_FILE_NAME.to_owned()
}
fn default_bundle_file_name() -> String {
    DEFAULT_BUNDLE_FILE_NAME.to_owned()
}
fn default_signal() -> String {
    DEFAULT_SIGNAL.to_owned()
}

/// `[admin]`: health, readiness, metrics and status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address. Default [`DEFAULT_ADMIN_ADDR`].
    pub addr: SocketAddr,
    /// Drain period at shutdown. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 15020)),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

impl AgentConfig {
    /// Defaults, then the TOML `text`, then the `SIGIL_AGENT__*` variables
    /// of `env`. Not validated: the caller applies flags, then calls
    /// [`AgentConfig::validate`].
    pub fn load(text: &str, env: &dyn Environment) -> Result<Self, ConfigError> {
        let overrides = EnvOverrides::from_env(env, ENV_PREFIX)?;
        Ok(overrides.apply(text)?)
    }

    /// Loads and validates.
    pub fn from_toml_with_env(text: &str, env: &dyn Environment) -> Result<Self, ConfigError> {
        let config = Self::load(text, env)?;
        config.validate()?;
        Ok(config)
    }
}
