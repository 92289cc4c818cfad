//! `KubePodLookup` against the fake API server: the node's pods are listed
//! cluster-wide with a node field selector, cached, and refreshed on a miss
//! at most once per interval.

use std::time::Duration;

use serde_json::json;
use sigil_node_agent::attest::{KubePodLookup, PodLookup, PodLookupSettings};
use sigil_test_util::fake_k8s::FakeApiServer;

const UID_A: &str = "3b0e7d3c-1234-4abc-8def-0123456789ab";
const UID_B: &str = "3b0e7d3c-1234-4abc-8def-0123456789ac";
const UID_OTHER_NODE: &str = "3b0e7d3c-1234-4abc-8def-0123456789ad";

fn pod(uid: &str, node: &str, sa: &str) -> serde_json::Value {
    json!({
        "metadata": { "uid": uid, "labels": { "app": "api" } },
        "spec": {
            "nodeName": node,
            "serviceAccountName": sa,
            "containers": [{ "name": "api", "image": "example.invalid/api:1" }],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "api",
                "containerID": "containerd://ABCDEF0123456789",
                "image": "example.invalid/api:1",
                "imageID": "",
                "ready": true,
                "restartCount": 0,
            }],
        },
    })
}

fn settings(miss_refresh: Duration) -> PodLookupSettings {
    let mut settings = PodLookupSettings::new("node-a");
    settings.cache_ttl = Duration::from_secs(3600);
    settings.miss_refresh_interval = miss_refresh;
    settings
}

fn pod_lists(api: &FakeApiServer) -> usize {
    api.count("GET", "/api/v1/pods")
}

#[tokio::test]
async fn resolves_pods_on_this_node_only() {
    let api = FakeApiServer::start().await;
    api.put_pod("payments", "api-1", pod(UID_A, "node-a", "api"));
    api.put_pod("payments", "api-2", pod(UID_OTHER_NODE, "node-b", "api"));
    api.add_pod("default", "no-sa", UID_B, "", "node-a", "Running");
    let lookup = KubePodLookup::for_url(&api.url(), None, settings(Duration::ZERO)).unwrap();

    let found = lookup.pod(UID_A).await.unwrap().expect("pod on node-a");
    assert_eq!(found.namespace, "payments");
    assert_eq!(found.name, "api-1");
    assert_eq!(found.service_account, "api");
    assert_eq!(found.labels.get("app").map(String::as_str), Some("api"));
    assert_eq!(
        found.containers,
        [("api".to_owned(), "abcdef0123456789".to_owned())]
    );

    // A pod without a service account name runs as `default`.
    let default_sa = lookup.pod(UID_B).await.unwrap().expect("second pod");
    assert_eq!(default_sa.service_account, "default");

    assert!(lookup.pod(UID_OTHER_NODE).await.unwrap().is_none());
    let queries: Vec<String> = api
        .recorded_requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods")
        .map(|r| r.query)
        .collect();
    assert!(!queries.is_empty());
    assert!(
        queries
            .iter()
            .all(|q| q.contains("fieldSelector=spec.nodeName%3Dnode-a")),
        "{queries:?}"
    );
}

#[tokio::test]
async fn hits_come_from_the_cache_and_misses_refresh_at_most_once_per_interval() {
    let api = FakeApiServer::start().await;
    api.put_pod("payments", "api-1", pod(UID_A, "node-a", "api"));
    let lookup =
        KubePodLookup::for_url(&api.url(), None, settings(Duration::from_secs(3600))).unwrap();

    assert!(lookup.pod(UID_A).await.unwrap().is_some());
    assert_eq!(pod_lists(&api), 1);
    assert!(lookup.pod(UID_A).await.unwrap().is_some());
    assert_eq!(pod_lists(&api), 1, "a hit does not list again");

    // A pod that started after the list: the miss is not refreshed within
    // the interval, so unknown UIDs cannot make the agent hammer the API.
    api.put_pod("payments", "api-2", pod(UID_B, "node-a", "api"));
    assert!(lookup.pod(UID_B).await.unwrap().is_none());
    assert!(lookup.pod(UID_B).await.unwrap().is_none());
    assert_eq!(pod_lists(&api), 1);
}

#[tokio::test]
async fn a_miss_refreshes_the_list() {
    let api = FakeApiServer::start().await;
    api.put_pod("payments", "api-1", pod(UID_A, "node-a", "api"));
    let lookup = KubePodLookup::for_url(&api.url(), None, settings(Duration::ZERO)).unwrap();
    assert!(lookup.pod(UID_A).await.unwrap().is_some());
    api.put_pod("payments", "api-2", pod(UID_B, "node-a", "api"));
    let found = lookup
        .pod(UID_B)
        .await
        .unwrap()
        .expect("refreshed on the miss");
    assert_eq!(found.name, "api-2");
    assert_eq!(pod_lists(&api), 2);
}

#[tokio::test]
async fn follows_continue_tokens_and_reports_api_errors() {
    let api = FakeApiServer::start().await;
    api.set_page_size(1);
    api.put_pod("a", "p1", pod(UID_A, "node-a", "api"));
    api.put_pod("b", "p2", pod(UID_B, "node-a", "web"));
    let lookup = KubePodLookup::for_url(&api.url(), None, settings(Duration::ZERO)).unwrap();
    assert_eq!(
        lookup.pod(UID_B).await.unwrap().unwrap().service_account,
        "web"
    );
    assert_eq!(pod_lists(&api), 2);

    api.fail_next(500);
    let error = lookup.pod(UID_OTHER_NODE).await.unwrap_err().to_string();
    assert!(error.contains("node-a"), "{error}");
}

#[tokio::test]
async fn known_pods_are_served_from_the_cache_while_the_api_fails() {
    let api = FakeApiServer::start().await;
    api.put_pod("payments", "api-1", pod(UID_A, "node-a", "api"));
    let mut settings = settings(Duration::ZERO);
    settings.cache_ttl = Duration::ZERO;
    let lookup = KubePodLookup::for_url(&api.url(), None, settings).unwrap();
    assert!(lookup.pod(UID_A).await.unwrap().is_some());
    api.fail_next(500);
    let cached = lookup
        .pod(UID_A)
        .await
        .unwrap()
        .expect("served from the cache");
    assert_eq!(cached.namespace, "payments");
    assert_eq!(pod_lists(&api), 2, "the refresh was tried");
    // An unknown pod still fails when the API does.
    api.fail_next(500);
    assert!(lookup.pod(UID_B).await.is_err());
}

#[tokio::test]
async fn a_rate_limited_miss_reports_the_last_api_error() {
    let api = FakeApiServer::start().await;
    let lookup =
        KubePodLookup::for_url(&api.url(), None, settings(Duration::from_secs(3600))).unwrap();
    api.fail_next(500);
    let first = lookup.pod(UID_A).await.unwrap_err().to_string();
    let second = lookup.pod(UID_A).await.unwrap_err().to_string();
    assert_eq!(first, second);
    assert_eq!(pod_lists(&api), 1);
}
