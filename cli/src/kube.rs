//! Wiring of the Kubernetes clients for `sigil ca serve`.

use std::sync::Arc;

use anyhow::Context;
use sigil_ca::config::CaConfig;
use sigil_ca::k8s::KubeApi;
use sigil_ca::server::KubeDeps;

/// The Kubernetes clients the configuration asks for, if any: in-cluster
/// config or kubeconfig, or `kubernetes.api_url` when set.
pub(crate) async fn deps(config: &CaConfig) -> anyhow::Result<Option<KubeDeps>> {
    let k = &config.kubernetes;
    if !k.enabled {
        return Ok(None);
    }
    let api = match &k.api_url {
        Some(url) => KubeApi::for_url(url, None),
        None => KubeApi::try_default().await,
    }
    .context("cannot set up the Kubernetes client")?
    .with_ca_secret(k.ca_secret_namespace.clone(), k.ca_secret_name.clone())
    .with_bundle_config_map(k.bundle_configmap.clone());
    let api = Arc::new(api);
    Ok(Some(KubeDeps {
        reviewer: api.clone(),
        pods: api.clone(),
        secrets: api.clone(),
        publisher: api,
    }))
}
