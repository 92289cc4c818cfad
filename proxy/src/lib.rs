//! # sigil-proxy
//!
//! The bundled proxy: consumes SPIFFE credentials to enforce mutual TLS in
//! front of local applications (inbound listeners) and towards remote Sigil
//! proxies (outbound listeners), with Istio's PeerAuthentication,
//! AuthorizationPolicy and RequestAuthentication semantics.
//!
//! ```text
//! [policy] files ─► reload (PolicyStore: load, hot reload) ─► authz::Policies (ArcSwap)
//!                                                                │ current() per connection / request
//! TCP accept ─► listener: PeerAuthentication mode of the port ─► STRICT: mTLS │ PERMISSIVE: sniff │ DISABLE
//!               ├─ protocol tcp:  one decision per connection ─► copy (half-close, idle timeout)
//!               └─ protocol http: http::HttpService ─► jwt::JwtFilter ─► one decision per request
//! ```
//!
//! Modules: configuration ([`config`]); credentials from files (hot
//! reloaded) or from the node agent's SDS ([`sds`]), both swapped
//! atomically into the TLS configs ([`tls`]), with the bundles of federated
//! trust domains ([`federation`]); listeners ([`listener`]) with
//! bounded connections and a handshake timeout, the ClientHello sniffer of
//! PERMISSIVE ports ([`sniff`]), L4 copy ([`copy`]) and L7 ([`http`]); the
//! policy in force ([`authz`]) loaded and hot reloaded by [`reload`]; the
//! pure authorization engine ([`policy`]); JWT authentication ([`jwt`]); a
//! JSON access log line and metrics ([`metrics`]); the daemon ([`daemon`])
//! with graceful shutdown.
#![forbid(unsafe_code)]

pub mod authz;
pub mod config;
pub mod copy;
pub mod credentials;
pub mod daemon;
pub mod federation;
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
    ConfigError, CredentialsConfig, FederationConfig, FilesConfig, HttpConfig, ListenerConfig,
    ListenerMode, PolicyConfig, Protocol, ProxyConfig, SdsConfig,
};
pub use credentials::{Credentials, CredentialsError, FileCredentials};
pub use daemon::{RunError, Running, run, start, start_with_metrics};
pub use federation::FederatedBundles;
pub use listener::{ListenerError, Proxy};
pub use metrics::ProxyMetrics;
pub use sds::{SdsClient, SdsError};
