//! Resolving a pod UID to the pod's facts: the [`PodLookup`] seam and
//! [`KubePodLookup`], which lists the pods on this node through the API
//! (`GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`) and caches them.
//!
//! The cache is refreshed when it is older than the TTL, and on a miss (a
//! pod that started after the last list); lists start at most once per
//! `miss_refresh_interval`, so callers in unknown pods cannot make the
//! agent hammer the API server. One list runs at a time; concurrent
//! callers wait for it. When a refresh fails, a pod already in the cache
//! is still served (its namespace, service account and UID cannot change;
//! its labels may be stale), so an API server outage does not stop
//! attestation of running pods.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use secrecy::SecretString;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Default age after which the cached pod list is refreshed.
pub const DEFAULT_POD_CACHE_TTL: Duration = Duration::from_secs(10);
/// Default minimum time between two lists caused by misses.
pub const DEFAULT_MISS_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Default cap on cached pods (a node runs 110 by default).
pub const DEFAULT_MAX_CACHED_PODS: usize = 5_000;
/// Default deadline of one API call.
pub const DEFAULT_API_TIMEOUT: Duration = Duration::from_secs(5);
/// Page size of pod lists.
const LIST_LIMIT: u32 = 500;

/// What attestation uses of a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.serviceAccountName` (`default` when unset, as the API does).
    pub service_account: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `(container name, container id without the runtime prefix)` from
    /// `status.containerStatuses` and `status.initContainerStatuses`.
    pub containers: Vec<(String, String)>,
}

/// Why a pod could not be looked up.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The client could not be built.
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
    /// The API call failed.
    #[error("listing the pods of node {node}: {message}")]
    Api {
        /// The node whose pods were listed.
        node: String,
        /// The client's error.
        message: String,
    },
}

/// Resolves pod UIDs to pods on this node.
pub trait PodLookup: Send + Sync + 'static {
    /// The pod with `uid` on this node, `None` if there is none.
    fn pod(&self, uid: &str) -> BoxFuture<'_, Result<Option<Arc<PodInfo>>, LookupError>>;
}

/// Settings of [`KubePodLookup`].
#[derive(Debug, Clone)]
pub struct PodLookupSettings {
    /// This node's name (`spec.nodeName` of the pods to list); usually from
    /// the downward API (`NODE_NAME`).
    pub node_name: String,
    /// Refresh the list when it is older than this
    /// ([`DEFAULT_POD_CACHE_TTL`]).
    pub cache_ttl: Duration,
    /// On a miss, list again only if the last list is older than this
    /// ([`DEFAULT_MISS_REFRESH_INTERVAL`]).
    pub miss_refresh_interval: Duration,
    /// Keep at most this many pods ([`DEFAULT_MAX_CACHED_PODS`]); pods
    /// beyond it are not cached and their callers fail attestation.
    pub max_pods: usize,
    /// Deadline of one API call ([`DEFAULT_API_TIMEOUT`]).
    pub api_timeout: Duration,
}

impl PodLookupSettings {
    /// Defaults for `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            cache_ttl: DEFAULT_POD_CACHE_TTL,
            miss_refresh_interval: DEFAULT_MISS_REFRESH_INTERVAL,
            max_pods: DEFAULT_MAX_CACHED_PODS,
            api_timeout: DEFAULT_API_TIMEOUT,
        }
    }
}

#[derive(Debug, Default)]
struct Cache {
    pods: HashMap<String, Arc<PodInfo>>,
    /// When the last successful list finished.
    listed_at: Option<Instant>,
    /// When the last list was tried, and its error if it failed.
    attempted: Option<(Instant, Option<LookupError>)>,
}

/// [`PodLookup`] through the `kube` client, caching the node's pods.
pub struct KubePodLookup {
    client: Client,
    settings: PodLookupSettings,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for KubePodLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePodLookup")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KubePodLookup {
    /// Wraps a client.
    pub fn new(client: Client, settings: PodLookupSettings) -> Self {
        Self {
            client,
            settings,
            cache: Mutex::default(),
        }
    }

    /// The in-cluster service account (or `KUBECONFIG`), as
    /// `kube::Config::infer` finds it. Must run inside a tokio runtime.
    pub async fn infer(settings: PodLookupSettings) -> Result<Self, LookupError> {
        let config = Config::infer()
            .await
            .map_err(|e| LookupError::Config(e.to_string()))?;
        Self::from_config(config, settings)
    }

    /// The kubeconfig file at `path` (its current context).
    pub async fn from_kubeconfig(
        path: &Path,
        settings: PodLookupSettings,
    ) -> Result<Self, LookupError> {
        let kubeconfig = Kubeconfig::read_from(path)
            .map_err(|e| LookupError::Config(format!("{}: {e}", path.display())))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| LookupError::Config(format!("{}: {e}", path.display())))?;
        Self::from_config(config, settings)
    }

    /// The API server at `url` (tests: the fake API server), with an
    /// optional bearer token.
    pub fn for_url(
        url: &str,
        bearer_token: Option<String>,
        settings: PodLookupSettings,
    ) -> Result<Self, LookupError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| LookupError::Config(format!("invalid API server URL {url:?}: {e}")))?;
        let mut config = Config::new(uri);
        config.auth_info.token = bearer_token.map(SecretString::from);
        Self::from_config(config, settings)
    }

    fn from_config(mut config: Config, settings: PodLookupSettings) -> Result<Self, LookupError> {
        config.read_timeout = Some(settings.api_timeout);
        config.reset_reader_on_write = true;
        let client = Client::try_from(config).map_err(|e| LookupError::Config(e.to_string()))?;
        Ok(Self::new(client, settings))
    }

    async fn list(&self) -> Result<HashMap<String, Arc<PodInfo>>, LookupError> {
        let node = &self.settings.node_name;
        let api_error = |e: kube::Error| LookupError::Api {
            node: node.clone(),
            message: e.to_string(),
        };
        let api: Api<Pod> = Api::all(self.client.clone());
        let selector = format!("spec.nodeName={node}");
        let mut params = ListParams::default().fields(&selector).limit(LIST_LIMIT);
        let mut pods = HashMap::new();
        loop {
            let page = api.list(&params).await.map_err(api_error)?;
            for pod in &page.items {
                // The node is checked here too, not only by the selector.
                let on_node =
                    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str());
                if let (true, Some(info)) = (on_node, pod_info(pod)) {
                    if pods.len() >= self.settings.max_pods {
                        tracing::warn!(
                            k8s.node = %node,
                            max = self.settings.max_pods,
                            "more pods on the node than the attestation cache holds"
                        );
                        return Ok(pods);
                    }
                    pods.insert(info.uid.clone(), Arc::new(info));
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(pods),
            }
        }
    }
}

impl PodLookup for KubePodLookup {
    fn pod(&self, uid: &str) -> BoxFuture<'_, Result<Option<Arc<PodInfo>>, LookupError>> {
        let uid = uid.to_owned();
        Box::pin(async move {
            // Holding the lock across the list makes concurrent misses wait
            // for one list instead of starting their own.
            let mut cache = self.cache.lock().await;
            let now = Instant::now();
            let older_than = |at: Option<Instant>, limit: Duration| {
                at.is_none_or(|at| now.saturating_duration_since(at) >= limit)
            };
            let hit = cache.pods.get(&uid).cloned();
            let stale = older_than(cache.listed_at, self.settings.cache_ttl);
            let may_list = older_than(
                cache.attempted.as_ref().map(|(at, _)| *at),
                self.settings.miss_refresh_interval,
            );
            if !(stale || hit.is_none()) || !may_list {
                // A miss while lists are rate-limited reports why the last
                // list failed, if it did.
                return match (hit, &cache.attempted) {
                    (None, Some((_, Some(error)))) => Err(error.clone()),
                    (hit, _) => Ok(hit),
                };
            }
            match self.list().await {
                Ok(pods) => {
                    let listed_at = Instant::now();
                    cache.pods = pods;
                    cache.listed_at = Some(listed_at);
                    cache.attempted = Some((listed_at, None));
                    Ok(cache.pods.get(&uid).cloned())
                }
                Err(error) => {
                    cache.attempted = Some((Instant::now(), Some(error.clone())));
                    match hit {
                        // A pod's namespace, service account and UID never
                        // change: while the API server is unreachable a
                        // known pod keeps being served from the cache.
                        Some(hit) => {
                            tracing::warn!(%error, "cannot refresh the pod list; using the cached pod");
                            Ok(Some(hit))
                        }
                        None => Err(error),
                    }
                }
            }
        })
    }
}

/// The facts of `pod`; `None` without namespace, name or UID.
fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let metadata = &pod.metadata;
    let statuses = pod.status.as_ref().into_iter().flat_map(|status| {
        status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten())
    });
    let containers = statuses
        .filter_map(|c| {
            let id = c.container_id.as_deref()?;
            // `containerd://<id>`, `cri-o://<id>`, `docker://<id>`.
            let id = id.split_once("://").map_or(id, |(_, id)| id);
            Some((c.name.clone(), id.to_ascii_lowercase()))
        })
        .collect();
    Some(PodInfo {
        namespace: metadata.namespace.clone()?,
        name: metadata.name.clone()?,
        uid: metadata.uid.clone()?,
        service_account: pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|sa| !sa.is_empty())
            .unwrap_or_else(|| "default".to_owned()),
        labels: metadata.labels.clone().unwrap_or_default(),
        containers,
    })
}
