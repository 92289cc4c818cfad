//! Why the server could not start, and one response rewrite.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;

use crate::authority::AuthorityError;
use crate::config::ConfigError;
use crate::k8s::K8sError;

/// Why the CA server could not start. Variants that wrap an error keep it
/// as their [`source`](std::error::Error::source) (shared, so that the
/// error stays `Clone`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The signing authority could not be loaded or created.
    #[error("cannot load the CA: {0}")]
    Authority(#[from] AuthorityError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({field}): {source}")]
    Bind {
        /// The setting.
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why (e.g. address in use).
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The TLS configuration could not be built.
    #[error("TLS setup failed: {0}")]
    Tls(#[source] Arc<rustls::Error>),
    /// The serving certificate could not be installed.
    #[error("cannot install the serving certificate: {0}")]
    Credential(#[from] sigil_identity::credential::CredentialError),
    /// The Kubernetes API failed during startup.
    #[error("Kubernetes: {0}")]
    Kubernetes(#[from] K8sError),
    /// A component could not be built from its settings (an authenticator,
    /// the serving certificate, a lifetime).
    #[error("{setting}: {source}")]
    Component {
        /// The setting(s) the component comes from, e.g. `authenticators[0].jwks`.
        setting: String,
        /// Why.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// Another setup step failed (no underlying error to keep).
    #[error("{0}")]
    Setup(String),
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What failed.
        context: String,
        /// The error.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl ServeError {
    /// Building what `setting` describes failed with `source`.
    pub(crate) fn component(
        setting: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Component {
            setting: setting.into(),
            source: Arc::new(source),
        }
    }

    /// An I/O error while doing `context`.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }
}

impl From<rustls::Error> for ServeError {
    fn from(source: rustls::Error) -> Self {
        Self::Tls(Arc::new(source))
    }
}

/// gRPC status code OUT_OF_RANGE, which tonic uses for a message over its
/// size bound.
const OUT_OF_RANGE: &str = "11";
/// gRPC status code RESOURCE_EXHAUSTED, what Sigil promises for a request
/// over a limit.
const RESOURCE_EXHAUSTED: HeaderValue = HeaderValue::from_static("8");

/// Rewrites tonic's OUT_OF_RANGE for oversized messages to
/// RESOURCE_EXHAUSTED. The CA service never returns OUT_OF_RANGE itself, so
/// the rewrite cannot hide anything else.
pub(crate) struct OversizeAsResourceExhausted;

impl OversizeAsResourceExhausted {
    pub(crate) fn layer() -> tower::util::MapResponseLayer<
        fn(http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body>,
    > {
        tower::util::MapResponseLayer::new(rewrite)
    }
}

fn rewrite(mut response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    if response
        .headers()
        .get("grpc-status")
        .is_some_and(|v| v == OUT_OF_RANGE)
    {
        response
            .headers_mut()
            .insert("grpc-status", RESOURCE_EXHAUSTED);
    }
    response
}
