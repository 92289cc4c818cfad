//! The Kubernetes API as the CA sees it: four narrow traits, so policy code
//! and tests never depend on a live API server.
//!
//! | trait | used for | API calls |
//! |---|---|---|
//! | [`TokenReviewer`] | TokenReview-mode authentication | `POST /apis/authentication.k8s.io/v1/tokenreviews` |
//! | [`PodDirectory`] | impersonation checks (is the workload on the caller's node?) | `GET /api/v1/namespaces/{ns}/pods/{name}`, `GET /api/v1/namespaces/{ns}/pods?fieldSelector=spec.nodeName=…` |
//! | [`CaSecretStore`] | keeping the self-signed CA in a Secret, race-safe between replicas | `GET`/`POST /api/v1/namespaces/{ns}/secrets` |
//! | [`BundlePublisher`] | publishing the root bundle to a ConfigMap in every namespace | `GET /api/v1/namespaces`, `GET`/`POST`/`PUT …/configmaps/{name}` |

use futures::future::BoxFuture;
use zeroize::Zeroizing;

mod client;
mod configmap;
mod pods;
mod review;
mod secret;
#[cfg(test)]
mod tests;

pub use client::{
    BUNDLE_CONFIG_MAP_KEY, CA_CERT_KEY, CA_KEY_KEY, DEFAULT_BUNDLE_CONFIG_MAP,
    DEFAULT_CA_SECRET_NAME, DEFAULT_CA_SECRET_NAMESPACE, DEFAULT_REQUEST_TIMEOUT, KubeApi,
};

/// What a successful TokenReview says about a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewedToken {
    /// The service account's namespace.
    pub namespace: String,
    /// The service account's name.
    pub service_account: String,
    /// The pod the token is bound to, if any (`authentication.kubernetes.io/pod-name` extra).
    pub pod: Option<PodRef>,
    /// The node the token is bound to, if any (`authentication.kubernetes.io/node-name` extra).
    pub node: Option<String>,
    /// The audiences the API server says the token is valid for.
    pub audiences: Vec<String>,
}

/// A pod, by name and UID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
}

/// The CA material kept in a Kubernetes Secret.
pub struct CaSecret {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PEM.
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for CaSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSecret")
            .field("cert_pem_len", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

/// The outcome of creating the CA Secret.
#[derive(Debug)]
pub enum SecretCreated {
    /// This replica created it.
    Created,
    /// Another replica created it first; this is what it holds.
    AlreadyExists(CaSecret),
}

/// Why a Kubernetes call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum K8sError {
    /// The API server reviewed the token and did not authenticate it.
    #[error("token not authenticated by the API server: {reason}")]
    NotAuthenticated {
        /// The review's error text, if any.
        reason: String,
    },
    /// The API server answered with an error status.
    #[error("Kubernetes API {verb} {path} answered {status}: {message}")]
    Api {
        /// The HTTP verb.
        verb: &'static str,
        /// The request path.
        path: String,
        /// The HTTP status code.
        status: u16,
        /// The Status message.
        message: String,
    },
    /// The API server could not be reached.
    #[error("Kubernetes API unreachable: {0}")]
    Transport(String),
    /// The answer could not be decoded, or lacked a required field.
    #[error("unexpected Kubernetes API answer: {0}")]
    Decode(String),
}

/// Reviews bearer tokens with the API server (TokenReview).
pub trait TokenReviewer: Send + Sync {
    /// Reviews `token` for `audiences`.
    fn review<'a>(
        &'a self,
        token: &'a str,
        audiences: &'a [String],
    ) -> BoxFuture<'a, Result<ReviewedToken, K8sError>>;
}

/// Looks up pods.
pub trait PodDirectory: Send + Sync {
    /// The node `pod` runs on (`spec.nodeName`); `None` if there is no pod
    /// of that name *and UID* (a pod recreated under the same name is
    /// another pod: a credential bound to the old one says nothing about
    /// where the new one runs) or it is not scheduled.
    fn pod_node<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a PodRef,
    ) -> BoxFuture<'a, Result<Option<String>, K8sError>>;

    /// Whether a pod of `service_account` in `namespace` runs on `node`.
    fn service_account_on_node<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        node: &'a str,
    ) -> BoxFuture<'a, Result<bool, K8sError>>;
}

/// Keeps the self-signed CA in a Secret.
pub trait CaSecretStore: Send + Sync {
    /// Reads the Secret, if it exists.
    fn load(&self) -> BoxFuture<'_, Result<Option<CaSecret>, K8sError>>;

    /// Creates the Secret unless it exists; on a conflict returns what the
    /// winner stored.
    fn create<'a>(&'a self, secret: &'a CaSecret)
    -> BoxFuture<'a, Result<SecretCreated, K8sError>>;
}

/// Publishes the trust bundle for workloads.
pub trait BundlePublisher: Send + Sync {
    /// Writes `roots_pem` into the bundle ConfigMap of every namespace;
    /// returns how many ConfigMaps were created or changed.
    fn publish<'a>(&'a self, roots_pem: &'a str) -> BoxFuture<'a, Result<usize, K8sError>>;
}
