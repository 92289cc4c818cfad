//! [`PodDirectory`] for [`KubeApi`]: `GET …/pods/{name}` and `GET
//! …/pods?fieldSelector=spec.nodeName=…`.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::client::{KubeApi, map_kube_error};
use super::review::is_dns1123_subdomain;
use super::{K8sError, PodDirectory, PodRef};

/// Page size for pod lists.
const LIST_LIMIT: u32 = 500;

impl PodDirectory for KubeApi {
    fn pod_node<'a>(
        &'a self,
        namespace: &'a str,
        pod: &'a PodRef,
    ) -> BoxFuture<'a, Result<Option<String>, K8sError>> {
        Box::pin(async move {
            let path = format!("/api/v1/namespaces/{namespace}/pods/{}", pod.name);
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let found = api
                .get_opt(&pod.name)
                .await
                .map_err(|e| map_kube_error("GET", &path, e))?;
            let Some(found) = found else {
                return Ok(None);
            };
            if found.metadata.uid.as_deref() != Some(pod.uid.as_str()) {
                tracing::debug!(
                    k8s.namespace = %namespace,
                    k8s.pod = %pod.name,
                    "the pod was recreated: its UID differs from the credential's"
                );
                return Ok(None);
            }
            Ok(found
                .spec
                .and_then(|spec| spec.node_name)
                .filter(|node| !node.is_empty()))
        })
    }

    fn service_account_on_node<'a>(
        &'a self,
        namespace: &'a str,
        service_account: &'a str,
        node: &'a str,
    ) -> BoxFuture<'a, Result<bool, K8sError>> {
        Box::pin(async move {
            // The node name goes into a field selector: a name with `,` or
            // `=` would change the query, and no real node is called that.
            if !is_dns1123_subdomain(node) {
                tracing::debug!(k8s.node = %node, "not a valid node name; no pod runs there");
                return Ok(false);
            }
            let path = format!("/api/v1/namespaces/{namespace}/pods");
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let selector = format!("spec.nodeName={node}");
            let mut params = ListParams::default().fields(&selector).limit(LIST_LIMIT);
            loop {
                let page = api
                    .list(&params)
                    .await
                    .map_err(|e| map_kube_error("GET", &path, e))?;
                if page
                    .items
                    .iter()
                    .any(|pod| is_live_pod_of(pod, service_account, node))
                {
                    return Ok(true);
                }
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => return Ok(false),
                }
            }
        })
    }
}

/// Whether `pod` runs as `service_account` on `node` and has not finished.
/// The node is checked again here rather than trusting the server-side
/// selector alone.
fn is_live_pod_of(pod: &Pod, service_account: &str, node: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.node_name.as_deref() == Some(node)
        && spec.service_account_name.as_deref() == Some(service_account)
        && matches!(phase, Some("Running" | "Pending"))
}
