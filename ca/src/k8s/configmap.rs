//! [`BundlePublisher`] for [`KubeApi`]: the root bundle in a ConfigMap in
//! every namespace (like Istio's `istio-ca-root-cert`).
//!
//! Per namespace: absent → `POST`; different → `PUT` carrying the
//! `resourceVersion` that was read, so a concurrent writer is detected
//! (`409 Conflict`) instead of overwritten; equal → nothing. A conflict is
//! retried once after reading the ConfigMap again. Namespaces being deleted
//! are skipped. A failure in one namespace does not stop the others; the
//! first failure is returned once all were tried, so the caller retries.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};

use super::client::{BUNDLE_CONFIG_MAP_KEY, KubeApi, MANAGED_BY_LABEL, is_status, map_kube_error};
use super::{BundlePublisher, K8sError};

const NAMESPACES_PATH: &str = "/api/v1/namespaces";
/// Page size for the namespace list.
const LIST_LIMIT: u32 = 500;
/// Attempts per namespace: the first, and one retry after a conflict.
const ATTEMPTS: usize = 2;

/// What publishing to one namespace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The ConfigMap was created or replaced.
    Changed,
    /// Nothing to do (already current, or the namespace is gone).
    Unchanged,
}

impl BundlePublisher for KubeApi {
    fn publish<'a>(&'a self, roots_pem: &'a str) -> BoxFuture<'a, Result<usize, K8sError>> {
        Box::pin(async move {
            let mut changed = 0_usize;
            let mut first_error = None;
            for namespace in self.live_namespaces().await? {
                match self.publish_to(&namespace, roots_pem).await {
                    Ok(Outcome::Changed) => changed += 1,
                    Ok(Outcome::Unchanged) => {}
                    Err(error) => {
                        tracing::warn!(
                            k8s.namespace = %namespace,
                            k8s.config_map = %self.bundle_config_map,
                            error = %error,
                            "publishing the trust bundle failed"
                        );
                        first_error.get_or_insert(error);
                    }
                }
            }
            tracing::debug!(
                k8s.config_map = %self.bundle_config_map,
                changed,
                "trust bundle published"
            );
            match first_error {
                Some(error) => Err(error),
                None => Ok(changed),
            }
        })
    }
}

impl KubeApi {
    /// Every namespace not being deleted.
    async fn live_namespaces(&self) -> Result<Vec<String>, K8sError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let mut params = ListParams::default().limit(LIST_LIMIT);
        let mut names = Vec::new();
        loop {
            let page = api
                .list(&params)
                .await
                .map_err(|e| map_kube_error("GET", NAMESPACES_PATH, e))?;
            for ns in page.items {
                let terminating = ns.metadata.deletion_timestamp.is_some()
                    || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
                match ns.metadata.name {
                    Some(name) if terminating => {
                        tracing::debug!(k8s.namespace = %name, "namespace is terminating; skipped");
                    }
                    Some(name) => names.push(name),
                    None => {}
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(names),
            }
        }
    }

    async fn publish_to(&self, namespace: &str, roots_pem: &str) -> Result<Outcome, K8sError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let name = self.bundle_config_map.as_str();
        let collection = format!("{NAMESPACES_PATH}/{namespace}/configmaps");
        let item = format!("{collection}/{name}");
        let mut last_conflict = None;
        for attempt in 1..=ATTEMPTS {
            let current = api
                .get_opt(name)
                .await
                .map_err(|e| map_kube_error("GET", &item, e))?;
            let result = match current {
                None => {
                    let fresh = self.new_config_map(namespace, roots_pem);
                    match api.create(&PostParams::default(), &fresh).await {
                        // The namespace vanished between the list and now.
                        Err(e) if is_status(&e, 404) => return Ok(Outcome::Unchanged),
                        other => other.map_err(|e| ("POST", collection.as_str(), e)),
                    }
                }
                Some(existing) if holds(&existing, roots_pem) => return Ok(Outcome::Unchanged),
                Some(mut existing) => {
                    // Keeps the resourceVersion that was read: optimistic
                    // concurrency, the server refuses the write if it moved.
                    existing
                        .data
                        .get_or_insert_with(BTreeMap::new)
                        .insert(BUNDLE_CONFIG_MAP_KEY.to_owned(), roots_pem.to_owned());
                    api.replace(name, &PostParams::default(), &existing)
                        .await
                        .map_err(|e| ("PUT", item.as_str(), e))
                }
            };
            match result {
                Ok(_) => {
                    tracing::info!(
                        k8s.namespace = %namespace,
                        k8s.config_map = %name,
                        attempt,
                        "trust bundle ConfigMap written"
                    );
                    return Ok(Outcome::Changed);
                }
                Err((verb, path, e)) if is_status(&e, 409) => {
                    tracing::debug!(
                        k8s.namespace = %namespace,
                        k8s.config_map = %name,
                        attempt,
                        "ConfigMap changed concurrently; reading it again"
                    );
                    last_conflict = Some(map_kube_error(verb, path, e));
                }
                Err((verb, path, e)) => return Err(map_kube_error(verb, path, e)),
            }
        }
        Err(last_conflict
            .unwrap_or_else(|| K8sError::Decode(format!("BUG: no attempt made on {item}"))))
    }

    fn new_config_map(&self, namespace: &str, roots_pem: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.bundle_config_map.clone()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.0.to_owned(),
                    MANAGED_BY_LABEL.1.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                BUNDLE_CONFIG_MAP_KEY.to_owned(),
                roots_pem.to_owned(),
            )])),
            ..ConfigMap::default()
        }
    }
}

/// Whether `config_map` already carries exactly `roots_pem`.
fn holds(config_map: &ConfigMap, roots_pem: &str) -> bool {
    config_map
        .data
        .as_ref()
        .and_then(|d| d.get(BUNDLE_CONFIG_MAP_KEY))
        .is_some_and(|v| v == roots_pem)
}
