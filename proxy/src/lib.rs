//! # sigil-proxy
//!
//! The bundled proxy: consumes SPIFFE credentials to enforce mutual TLS in
//! front of local applications (inbound listeners) and towards remote Sigil
//! proxies (outbound listeners), with an authorization seam
//! ([`authz::Policies`]) the policy engine plugs into.
//!
//! Built so far (issue 16, L4 first): configuration ([`config`]),
//! credentials from files (hot reloaded) or from the node agent's SDS
//! ([`sds`]), both swapped atomically into the TLS configs ([`tls`]); L4
//! TCP listeners ([`listener`]) with half-close, an idle timeout
//! ([`copy`]), bounded connections and a handshake timeout; a ClientHello
//! sniffer for PERMISSIVE mode ([`sniff`]); a JSON access log line and
//! metrics ([`metrics`]) per connection; the daemon ([`daemon`]) with
//! graceful shutdown; [`policy`], the pure authorization engine (Istio YAML,
//! matching, evaluation, path normalization, PeerAuthentication composition).
//! Not yet: L7 (HTTP), PeerAuthentication enforcement, the policy engine
//! behind [`Authorizer`], JWT.
#![forbid(unsafe_code)]

pub mod authz;
pub mod config;
pub mod copy;
pub mod credentials;
pub mod daemon;
pub mod http;
pub mod jwt;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod sds;
pub mod sniff;
pub mod tls;

pub use authz::{Policies, PolicyState};
pub use config::{
    ConfigError, CredentialsConfig, FilesConfig, HttpConfig, ListenerConfig, ListenerMode,
    PolicyConfig, Protocol, ProxyConfig, SdsConfig,
};
pub use credentials::{Credentials, CredentialsError, FileCredentials};
pub use daemon::{RunError, Running, run, start, start_with_metrics};
pub use listener::{ListenerError, Proxy};
pub use metrics::ProxyMetrics;
pub use sds::{SdsClient, SdsError};
