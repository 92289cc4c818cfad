//! Stub Kubernetes dependencies for the server tests: a TokenReviewer held
//! behind a gate the test opens (so "a request is in flight" is an event to
//! await, not a timing guess), empty pod, Secret and ConfigMap stand-ins, and
//! the wiring to a fake API server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sigil_ca::config::{AuthenticatorConfig, CaConfig};
use sigil_ca::k8s::{
    BundlePublisher, CaSecret, CaSecretStore, K8sError, PodDirectory, PodRef, ReviewedToken,
    SecretCreated, TokenReviewer,
};
use sigil_ca::server::{KubeDeps, ServerDeps};
use tokio::sync::{mpsc, watch};

use super::{CaUnderTest, WAIT, start_with_deps};

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A TokenReviewer that vouches for every token as `default/web`, but only
/// once the gate is open; each review first reports on `entered`.
pub(crate) struct GatedReviewer {
    entered: mpsc::UnboundedSender<()>,
    open: watch::Receiver<bool>,
}

/// Controls a [`GatedReviewer`].
pub(crate) struct Gate {
    /// One message per review that started.
    pub(crate) entered: mpsc::UnboundedReceiver<()>,
    open: watch::Sender<bool>,
}

impl Gate {
    /// Lets every waiting and future review finish.
    pub(crate) fn open(&self) {
        self.open.send_replace(true);
    }

    /// Waits (bounded) until a review has started.
    pub(crate) async fn wait_entered(&mut self) {
        tokio::time::timeout(WAIT, self.entered.recv())
            .await
            .expect("a review starts in time")
            .expect("reviewer alive");
    }
}

impl TokenReviewer for GatedReviewer {
    fn review<'a>(
        &'a self,
        _token: &'a str,
        _audiences: &'a [String],
    ) -> BoxFut<'a, Result<ReviewedToken, K8sError>> {
        Box::pin(async move {
            let _ = self.entered.send(());
            let mut open = self.open.clone();
            if open.wait_for(|o| *o).await.is_err() {
                return Err(K8sError::Transport("gate dropped".into()));
            }
            Ok(ReviewedToken {
                namespace: "default".into(),
                service_account: "web".into(),
                pod: None,
                node: None,
                audiences: Vec::new(),
            })
        })
    }
}

/// No pods anywhere.
pub(crate) struct NoPods;

impl PodDirectory for NoPods {
    fn pod_node<'a>(
        &'a self,
        _namespace: &'a str,
        _pod: &'a PodRef,
    ) -> BoxFut<'a, Result<Option<String>, K8sError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn service_account_on_node<'a>(
        &'a self,
        _namespace: &'a str,
        _service_account: &'a str,
        _node: &'a str,
    ) -> BoxFut<'a, Result<bool, K8sError>> {
        Box::pin(std::future::ready(Ok(false)))
    }
}

/// A Secret store that is never used (the authority is self-signed).
pub(crate) struct NoSecrets;

impl CaSecretStore for NoSecrets {
    fn load(&self) -> BoxFut<'_, Result<Option<CaSecret>, K8sError>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn create<'a>(&'a self, _secret: &'a CaSecret) -> BoxFut<'a, Result<SecretCreated, K8sError>> {
        Box::pin(std::future::ready(Ok(SecretCreated::Created)))
    }
}

/// A publisher that publishes nothing.
pub(crate) struct NoPublisher;

impl BundlePublisher for NoPublisher {
    fn publish<'a>(&'a self, _roots_pem: &'a str) -> BoxFut<'a, Result<usize, K8sError>> {
        Box::pin(std::future::ready(Ok(0)))
    }
}

/// Starts a server whose only authenticator is TokenReview through a
/// [`GatedReviewer`] (every token is `default/web`), adjusted by
/// `configure`; returns it with the gate (closed). Tokens must be
/// JWT-shaped (e.g. `jwt.held-token.sig`): anything else is refused before
/// any review.
pub(crate) async fn start_gated(configure: impl FnOnce(&mut CaConfig)) -> (CaUnderTest, Gate) {
    let (entered_tx, entered_rx) = mpsc::unbounded_channel();
    let (open_tx, open_rx) = watch::channel(false);
    let deps = ServerDeps {
        kube: Some(KubeDeps {
            reviewer: Arc::new(GatedReviewer {
                entered: entered_tx,
                open: open_rx,
            }),
            pods: Arc::new(NoPods),
            secrets: Arc::new(NoSecrets),
            publisher: Arc::new(NoPublisher),
        }),
    };
    let server = start_with_deps(
        |c| {
            c.kubernetes.enabled = true;
            c.kubernetes.publish_bundle = false;
            c.kubernetes.check_impersonation_node = false;
            c.authenticators = vec![AuthenticatorConfig::KubernetesTokenReview {
                audiences: vec!["istio-ca".into()],
                cache_size: 16,
            }];
            configure(c);
        },
        deps,
    )
    .await;
    (
        server,
        Gate {
            entered: entered_rx,
            open: open_tx,
        },
    )
}

/// Kubernetes dependencies talking to the API server at `url` (the fake),
/// all four from one [`sigil_ca::k8s::KubeApi`].
pub(crate) fn kube_deps(url: &str) -> ServerDeps {
    let api = Arc::new(sigil_ca::k8s::KubeApi::for_url(url, None).expect("KubeApi for the fake"));
    ServerDeps {
        kube: Some(KubeDeps {
            reviewer: api.clone(),
            pods: api.clone(),
            secrets: api.clone(),
            publisher: api,
        }),
    }
}

/// Sets `[kubernetes] enabled = true, api_url = url` and TokenReview as the
/// only authenticator.
pub(crate) fn use_kubernetes(config: &mut CaConfig, url: &str) {
    config.kubernetes.enabled = true;
    config.kubernetes.api_url = Some(url.to_owned());
    config.authenticators = vec![AuthenticatorConfig::KubernetesTokenReview {
        audiences: vec!["istio-ca".into()],
        cache_size: 100,
    }];
}
