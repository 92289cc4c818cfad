//! [`KubeApi`]: the `kube` client behind the four Kubernetes traits, its
//! construction, and the mapping from `kube::Error` to [`K8sError`].
//!
//! The trait implementations live next door, one file per trait
//! (`review.rs`, `pods.rs`, `secret.rs`, `configmap.rs`); this file holds
//! what they share.

use std::time::Duration;

use kube::{Client, Config};
use secrecy::SecretString;

use super::K8sError;

/// Default namespace of the CA Secret.
pub const DEFAULT_CA_SECRET_NAMESPACE: &str = "sigil-system";
/// Default name of the CA Secret.
pub const DEFAULT_CA_SECRET_NAME: &str = "sigil-ca";
/// Secret data key holding the CA certificate (Istio's `cacerts` layout).
pub const CA_CERT_KEY: &str = "ca-cert.pem";
/// Secret data key holding the CA private key (Istio's `cacerts` layout).
pub const CA_KEY_KEY: &str = "ca-key.pem";
/// Default name of the per-namespace bundle ConfigMap (like Istio's
/// `istio-ca-root-cert`).
pub const DEFAULT_BUNDLE_CONFIG_MAP: &str = "sigil-ca-root-cert";
/// ConfigMap data key holding the root bundle.
pub const BUNDLE_CONFIG_MAP_KEY: &str = "root-cert.pem";
/// How long one API call may wait for its answer. TokenReviews sit on the
/// issuance path, so a hung API server must not hang the CA with it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Label set on the objects this crate creates.
pub(super) const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "sigil");

/// The Kubernetes API through the `kube` client; implements
/// [`TokenReviewer`](super::TokenReviewer), [`PodDirectory`](super::PodDirectory),
/// [`CaSecretStore`](super::CaSecretStore) and
/// [`BundlePublisher`](super::BundlePublisher).
///
/// Cheap to clone (the client is reference-counted).
#[derive(Clone)]
pub struct KubeApi {
    pub(super) client: Client,
    pub(super) ca_secret_namespace: String,
    pub(super) ca_secret_name: String,
    pub(super) bundle_config_map: String,
}

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApi")
            .field("ca_secret_namespace", &self.ca_secret_namespace)
            .field("ca_secret_name", &self.ca_secret_name)
            .field("bundle_config_map", &self.bundle_config_map)
            .finish_non_exhaustive()
    }
}

impl KubeApi {
    /// Wraps an existing client, with the default CA Secret
    /// ([`DEFAULT_CA_SECRET_NAMESPACE`]/[`DEFAULT_CA_SECRET_NAME`]) and bundle
    /// ConfigMap ([`DEFAULT_BUNDLE_CONFIG_MAP`]).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            ca_secret_namespace: DEFAULT_CA_SECRET_NAMESPACE.to_owned(),
            ca_secret_name: DEFAULT_CA_SECRET_NAME.to_owned(),
            bundle_config_map: DEFAULT_BUNDLE_CONFIG_MAP.to_owned(),
        }
    }

    /// Connects the way `kube::Client::try_default` does (kubeconfig, else the
    /// in-cluster service account), with [`DEFAULT_REQUEST_TIMEOUT`] on every
    /// call. Must run inside a tokio runtime.
    pub async fn try_default() -> Result<Self, K8sError> {
        let mut config = Config::infer().await.map_err(|e| {
            K8sError::Transport(format!("no Kubernetes client configuration: {}", chain(&e)))
        })?;
        set_timeouts(&mut config);
        Self::from_config(config)
    }

    /// Connects to the API server at `url` (e.g. `http://127.0.0.1:6443` in
    /// tests), sending `bearer_token` if given. Must run inside a tokio
    /// runtime.
    pub fn for_url(url: &str, bearer_token: Option<String>) -> Result<Self, K8sError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| K8sError::Transport(format!("invalid API server URL {url:?}: {e}")))?;
        let mut config = Config::new(uri);
        config.auth_info.token = bearer_token.map(SecretString::from);
        set_timeouts(&mut config);
        Self::from_config(config)
    }

    fn from_config(config: Config) -> Result<Self, K8sError> {
        let client = Client::try_from(config).map_err(|e| {
            K8sError::Transport(format!("cannot build the Kubernetes client: {}", chain(&e)))
        })?;
        Ok(Self::new(client))
    }

    /// Uses the CA Secret `namespace`/`name` instead of the default.
    #[must_use]
    pub fn with_ca_secret(mut self, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        self.ca_secret_namespace = namespace.into();
        self.ca_secret_name = name.into();
        self
    }

    /// Publishes the bundle to ConfigMaps called `name` instead of the default.
    #[must_use]
    pub fn with_bundle_config_map(mut self, name: impl Into<String>) -> Self {
        self.bundle_config_map = name.into();
        self
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn set_timeouts(config: &mut Config) {
    config.read_timeout = Some(DEFAULT_REQUEST_TIMEOUT);
    // Count the read timeout from the request, not from when a pooled
    // connection went idle (see `kube::Config::read_timeout`).
    config.reset_reader_on_write = true;
}

// === error mapping ===

/// Maps a `kube` error for `verb path` to a [`K8sError`].
pub(super) fn map_kube_error(verb: &'static str, path: &str, err: kube::Error) -> K8sError {
    match err {
        kube::Error::Api(status) => {
            let message = match (status.reason.is_empty(), status.message.is_empty()) {
                (false, false) => format!("{} ({})", status.message, status.reason),
                (true, false) => status.message.clone(),
                (false, true) => status.reason.clone(),
                (true, true) => "no message".to_owned(),
            };
            K8sError::Api {
                verb,
                path: path.to_owned(),
                status: status.code,
                message,
            }
        }
        kube::Error::SerdeError(e) => K8sError::Decode(format!("{verb} {path}: {e}")),
        kube::Error::FromUtf8(e) => K8sError::Decode(format!("{verb} {path}: {e}")),
        other => K8sError::Transport(format!("{verb} {path}: {}", chain(&other))),
    }
}

/// Whether `err` is an API answer with HTTP status `code`.
pub(super) fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// An error and its sources, joined with `: ` (hyper's "client error
/// (Connect)" alone does not say that the connection was refused).
pub(super) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}
