//! Loading the authority the configuration names, and publishing its roots.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::KubeDeps;
use super::error::ServeError;
use super::reload::Fingerprint;
use super::state::Shared;
use crate::authority::Authority;
use crate::authority::source::{self, ISTIO_CA_CERT, ISTIO_CA_KEY};
use crate::config::{AuthoritySource, CaConfig};
use crate::k8s::{BundlePublisher, CaSecret, SecretCreated};

/// An authority as loaded at start.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The authority.
    pub(crate) authority: Authority,
    /// For a plug-in directory: the fingerprint of its files taken *before*
    /// they were read, so the watcher started later reloads a change that
    /// landed in between instead of taking it for the loaded state.
    pub(crate) fingerprint: Option<Fingerprint>,
}

/// Loads (or creates) the configured authority.
pub(crate) async fn load(config: &CaConfig, kube: Option<&KubeDeps>) -> Result<Loaded, ServeError> {
    let td = config.trust_domain.clone();
    let dir = config.authority.dir.clone();
    let authority = match config.authority.source {
        AuthoritySource::SelfSigned => {
            let (authority, created) = tokio::task::spawn_blocking(move || {
                source::load_or_create_self_signed(&dir, &td, OffsetDateTime::now_utc())
            })
            .await
            .map_err(|e| ServeError::Setup(e.to_string()))??;
            tracing::info!(dir = %config.authority.dir.display(), created, "self-signed CA ready");
            authority
        }
        AuthoritySource::Files => {
            let (fingerprint, authority) = tokio::task::spawn_blocking(move || {
                let fingerprint = Fingerprint::of(&dir);
                source::load_dir(&dir, &td, OffsetDateTime::now_utc()).map(|a| (fingerprint, a))
            })
            .await
            .map_err(|e| ServeError::Setup(e.to_string()))??;
            tracing::info!(dir = %config.authority.dir.display(), key = authority.key_algorithm(), "plug-in CA loaded");
            return Ok(Loaded {
                authority,
                fingerprint: Some(fingerprint),
            });
        }
        AuthoritySource::KubernetesSecret => load_secret(config, kube).await?,
    };
    Ok(Loaded {
        authority,
        fingerprint: None,
    })
}

/// Loads the CA Secret, creating it with a self-signed root if absent.
async fn load_secret(config: &CaConfig, kube: Option<&KubeDeps>) -> Result<Authority, ServeError> {
    let td = &config.trust_domain;
    let kube =
        kube.ok_or_else(|| ServeError::Setup("kubernetes-secret needs Kubernetes".into()))?;
    let secret = match kube.secrets.load().await? {
        Some(secret) => secret,
        None => {
            let (cert_pem, key_pem) = source::generate_self_signed(td, OffsetDateTime::now_utc())?;
            let mine = CaSecret { cert_pem, key_pem };
            match kube.secrets.create(&mine).await? {
                SecretCreated::Created => {
                    tracing::info!("created the self-signed CA Secret");
                    mine
                }
                SecretCreated::AlreadyExists(theirs) => {
                    tracing::info!("another replica created the CA Secret first; using it");
                    theirs
                }
            }
        }
    };
    let label = format!(
        "secret {}/{}",
        config.kubernetes.ca_secret_namespace, config.kubernetes.ca_secret_name
    );
    Ok(source::from_pem(
        td,
        &secret.cert_pem,
        secret.key_pem.as_bytes(),
        &Path::new(&label).join(ISTIO_CA_CERT),
        &Path::new(&label).join(ISTIO_CA_KEY),
        OffsetDateTime::now_utc(),
    )?)
}

/// Publishes the roots now, every `interval`, and whenever the authority
/// changes, until `stop`.
pub(crate) async fn publish_bundle(
    publisher: Arc<dyn BundlePublisher>,
    shared: Arc<Shared>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut changed = shared.authority_changed.subscribe();
    loop {
        let roots = shared.bundle().to_pem();
        match publisher.publish(&roots).await {
            Ok(0) => tracing::debug!("bundle ConfigMaps up to date"),
            Ok(n) => tracing::info!(configmaps = n, "bundle published"),
            Err(error) => tracing::warn!(%error, "bundle publication failed; will retry"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
            result = changed.changed() => if result.is_err() { return },
        }
    }
}
