//! Tests of [`KubeApi`] against the fake API server of `sigil-test-util`:
//! every trait method's success path and its error and edge paths.

use sigil_test_util::fake_k8s::{FakeApiServer, ReviewResult};
use zeroize::Zeroizing;

use super::*;

mod stores;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.sUp3r-s3cr3t-t0k3n.sig";
const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n";
const ROOTS: &str = "-----BEGIN CERTIFICATE-----\nROOT1\n-----END CERTIFICATE-----\n";
const CM: &str = DEFAULT_BUNDLE_CONFIG_MAP;

async fn setup() -> (FakeApiServer, KubeApi) {
    let server = FakeApiServer::start().await;
    let api = KubeApi::for_url(&server.url(), None).expect("client for the fake");
    (server, api)
}

fn audiences(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| (*a).to_owned()).collect()
}

fn assert_no_token(err: &K8sError) {
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(TOKEN), "token leaked: {shown}");
    assert!(
        !shown.contains("sUp3r-s3cr3t"),
        "token part leaked: {shown}"
    );
}

fn ca_secret() -> CaSecret {
    CaSecret {
        cert_pem: CERT.to_owned(),
        key_pem: Zeroizing::new(KEY.to_owned()),
    }
}

// === TokenReviewer ===

#[tokio::test]
async fn review_reads_service_account_pod_node_and_audiences() {
    let (server, api) = setup().await;
    server.add_token(
        TOKEN,
        ReviewResult::service_account("apps", "web")
            .with_pod("web-1", "uid-1")
            .with_node("node-a")
            .with_audiences(&["istio-ca", "other"]),
    );
    let reviewed = api.review(TOKEN, &audiences(&["istio-ca"])).await.unwrap();
    assert_eq!(
        reviewed,
        ReviewedToken {
            namespace: "apps".into(),
            service_account: "web".into(),
            pod: Some(PodRef {
                name: "web-1".into(),
                uid: "uid-1".into()
            }),
            node: Some("node-a".into()),
            audiences: audiences(&["istio-ca"]),
        }
    );
    assert_eq!(server.token_reviews(), 1);
    assert_eq!(
        server.requests(),
        vec![(
            "POST".to_owned(),
            "/apis/authentication.k8s.io/v1/tokenreviews".to_owned()
        )]
    );
}

#[tokio::test]
async fn review_of_an_unbound_token_has_no_pod_or_node() {
    let (server, api) = setup().await;
    server.add_token(TOKEN, ReviewResult::service_account("apps", "web"));
    let reviewed = api.review(TOKEN, &[]).await.unwrap();
    assert_eq!((reviewed.pod, reviewed.node), (None, None));
    assert!(reviewed.audiences.is_empty());
}

#[tokio::test]
async fn review_refuses_unauthenticated_tokens() {
    let (server, api) = setup().await;
    server.add_token(
        "revoked",
        ReviewResult::rejected("[token has been invalidated]"),
    );

    let err = api.review(TOKEN, &[]).await.unwrap_err();
    assert!(
        matches!(&err, K8sError::NotAuthenticated { reason } if reason.contains("invalid bearer token")),
        "{err:?}"
    );
    assert_no_token(&err);

    let err = api.review("revoked", &[]).await.unwrap_err();
    assert_eq!(
        err,
        K8sError::NotAuthenticated {
            reason: "[token has been invalidated]".into()
        }
    );
}

#[tokio::test]
async fn review_refuses_users_that_are_not_service_accounts() {
    let (server, api) = setup().await;
    for user in [
        "admin",
        "system:node:node-a",
        "system:serviceaccount:apps",
        "system:serviceaccount:Apps:web",
    ] {
        server.add_token(TOKEN, ReviewResult::user(user));
        let err = api.review(TOKEN, &[]).await.unwrap_err();
        assert!(
            matches!(&err, K8sError::NotAuthenticated { reason } if reason.contains("not a service account")),
            "{user}: {err:?}"
        );
        assert_no_token(&err);
    }
}

#[tokio::test]
async fn review_refuses_audience_mismatches() {
    let (server, api) = setup().await;
    // The API server itself refuses the audience.
    server.add_token(
        TOKEN,
        ReviewResult::service_account("apps", "web").with_audiences(&["kubernetes"]),
    );
    let err = api
        .review(TOKEN, &audiences(&["istio-ca"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, K8sError::NotAuthenticated { reason } if reason.contains("invalid for the target audiences")),
        "{err:?}"
    );
    // A server that authenticates but confirms no requested audience.
    server.add_token(TOKEN, ReviewResult::service_account("apps", "web"));
    let err = api
        .review(TOKEN, &audiences(&["istio-ca"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, K8sError::NotAuthenticated { reason } if reason.contains("none of the requested audiences")),
        "{err:?}"
    );
    assert_no_token(&err);
}

#[tokio::test]
async fn review_refuses_half_a_pod_binding() {
    let (server, api) = setup().await;
    let mut result = ReviewResult::service_account("apps", "web").with_pod("web-1", "uid-1");
    result.extra.remove("authentication.kubernetes.io/pod-uid");
    server.add_token(TOKEN, result);
    let err = api.review(TOKEN, &[]).await.unwrap_err();
    assert!(matches!(err, K8sError::Decode(_)), "{err:?}");
}

#[tokio::test]
async fn review_maps_a_server_error_to_api() {
    let (server, api) = setup().await;
    server.add_token(TOKEN, ReviewResult::service_account("apps", "web"));
    server.fail_next(500);
    let err = api.review(TOKEN, &[]).await.unwrap_err();
    assert!(
        matches!(&err, K8sError::Api { verb: "POST", path, status: 500, message } if path == "/apis/authentication.k8s.io/v1/tokenreviews" && message.contains("InternalError")),
        "{err:?}"
    );
    assert_no_token(&err);
}

#[tokio::test]
async fn client_sends_its_bearer_token() {
    let server = FakeApiServer::start().await;
    server.require_bearer("client-credential");
    server.add_token(TOKEN, ReviewResult::service_account("apps", "web"));
    let anonymous = KubeApi::for_url(&server.url(), None).unwrap();
    let err = anonymous.review(TOKEN, &[]).await.unwrap_err();
    assert!(matches!(err, K8sError::Api { status: 401, .. }), "{err:?}");
    let authorised = KubeApi::for_url(&server.url(), Some("client-credential".into())).unwrap();
    assert_eq!(
        authorised.review(TOKEN, &[]).await.unwrap().service_account,
        "web"
    );
    assert!(!format!("{authorised:?}").contains("client-credential"));
}

#[tokio::test]
async fn every_call_reports_a_gone_server_as_transport() {
    let (server, api) = setup().await;
    server.shutdown().await;
    let errors = [
        api.review(TOKEN, &[]).await.unwrap_err(),
        api.pod_node("apps", &pod("web-1", "uid-1"))
            .await
            .unwrap_err(),
        api.service_account_on_node("apps", "web", "node-a")
            .await
            .unwrap_err(),
        api.load().await.unwrap_err(),
        api.create(&ca_secret()).await.unwrap_err(),
        api.publish(ROOTS).await.unwrap_err(),
    ];
    for err in &errors {
        assert!(matches!(err, K8sError::Transport(_)), "{err:?}");
        assert_no_token(err);
    }
}

#[test]
fn invalid_urls_are_refused() {
    let err = KubeApi::for_url("not a url", None).unwrap_err();
    assert!(matches!(err, K8sError::Transport(_)), "{err:?}");
}

// === PodDirectory ===

fn pod(name: &str, uid: &str) -> PodRef {
    PodRef {
        name: name.to_owned(),
        uid: uid.to_owned(),
    }
}

#[tokio::test]
async fn pod_node_reads_spec_node_name_of_the_pod_with_that_uid() {
    let (server, api) = setup().await;
    server.add_pod("apps", "web-1", "uid-1", "web", "node-a", "Running");
    server.add_pod("apps", "web-2", "uid-2", "web", "", "Pending");
    assert_eq!(
        api.pod_node("apps", &pod("web-1", "uid-1"))
            .await
            .unwrap()
            .as_deref(),
        Some("node-a")
    );
    assert_eq!(
        api.pod_node("apps", &pod("web-2", "uid-2")).await.unwrap(),
        None,
        "unscheduled"
    );
    assert_eq!(
        api.pod_node("apps", &pod("missing", "uid-1"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        api.pod_node("other", &pod("web-1", "uid-1")).await.unwrap(),
        None
    );
    // Same name, another UID: the pod was recreated; not the credential's pod.
    for uid in ["uid-0", ""] {
        assert_eq!(
            api.pod_node("apps", &pod("web-1", uid)).await.unwrap(),
            None,
            "uid {uid:?}"
        );
    }
    assert_eq!(server.count("GET", "/api/v1/namespaces/apps/pods/web-1"), 3);
}

#[tokio::test]
async fn pod_node_maps_a_server_error_to_api() {
    let (server, api) = setup().await;
    server.fail_next(500);
    let err = api
        .pod_node("apps", &pod("web-1", "uid-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, K8sError::Api { verb: "GET", path, status: 500, .. } if path == "/api/v1/namespaces/apps/pods/web-1"),
        "{err:?}"
    );
}

#[tokio::test]
async fn service_account_on_node_needs_a_live_pod_of_that_account_on_that_node() {
    let (server, api) = setup().await;
    server.add_pod("apps", "web-1", "uid-1", "web", "node-a", "Running");
    server.add_pod("apps", "batch-1", "uid-2", "batch", "node-a", "Succeeded");
    server.add_pod("apps", "batch-2", "uid-3", "batch", "node-a", "Failed");
    server.add_pod("apps", "batch-3", "uid-4", "batch", "node-b", "Running");
    server.add_pod("apps", "init-1", "uid-5", "init", "node-a", "Pending");
    server.add_pod("other", "db-1", "uid-6", "db", "node-a", "Running");

    let on = |sa: &'static str, node: &'static str| {
        let api = api.clone();
        async move { api.service_account_on_node("apps", sa, node).await.unwrap() }
    };
    assert!(on("web", "node-a").await);
    assert!(on("init", "node-a").await, "Pending counts");
    assert!(!on("batch", "node-a").await, "only finished pods on node-a");
    assert!(on("batch", "node-b").await);
    assert!(!on("web", "node-b").await, "pod on another node");
    assert!(!on("db", "node-a").await, "pod in another namespace");
    assert!(!on("nobody", "node-a").await);

    let queries: Vec<String> = server
        .recorded_requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/namespaces/apps/pods")
        .map(|r| r.query)
        .collect();
    assert_eq!(queries.len(), 7);
    assert!(
        queries
            .iter()
            .all(|q| q.contains("fieldSelector=spec.nodeName%3Dnode-")),
        "{queries:?}"
    );
}

#[tokio::test]
async fn service_account_on_node_follows_list_pages() {
    let (server, api) = setup().await;
    server.set_page_size(1);
    for i in 0..3 {
        server.add_pod(
            "apps",
            &format!("a-{i}"),
            &format!("uid-{i}"),
            "other",
            "node-a",
            "Running",
        );
    }
    server.add_pod("apps", "z-web", "uid-w", "web", "node-a", "Running");
    assert!(
        api.service_account_on_node("apps", "web", "node-a")
            .await
            .unwrap()
    );
    assert_eq!(server.count("GET", "/api/v1/namespaces/apps/pods"), 4);
}

#[tokio::test]
async fn service_account_on_node_rejects_selector_injection() {
    let (server, api) = setup().await;
    server.add_pod("apps", "web-1", "uid-1", "web", "node-a", "Running");
    let found = api
        .service_account_on_node("apps", "web", "x,spec.nodeName!=y")
        .await
        .unwrap();
    assert!(!found);
    assert!(
        server.requests().is_empty(),
        "nothing asked for an invalid node name"
    );
}

#[tokio::test]
async fn service_account_on_node_maps_a_server_error_to_api() {
    let (server, api) = setup().await;
    server.fail_next(500);
    let err = api
        .service_account_on_node("apps", "web", "node-a")
        .await
        .unwrap_err();
    assert!(matches!(err, K8sError::Api { status: 500, .. }), "{err:?}");
}

// === logs ===

/// A writer that keeps everything logged, for asserting on it.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_token_never_reaches_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (server, api) = setup().await;
    server.add_token(
        TOKEN,
        ReviewResult::service_account("apps", "web").with_audiences(&["istio-ca"]),
    );
    api.review(TOKEN, &audiences(&["istio-ca"])).await.unwrap();
    api.review(TOKEN, &audiences(&["other"])).await.unwrap_err();
    server.add_token(TOKEN, ReviewResult::user("admin"));
    api.review(TOKEN, &[]).await.unwrap_err();
    server.fail_next(500);
    api.review(TOKEN, &[]).await.unwrap_err();
    server.shutdown().await;
    let err = api.review(TOKEN, &[]).await.unwrap_err();
    assert!(matches!(err, K8sError::Transport(_)));

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("token reviewed"),
        "the subscriber captured the logs: {logs}"
    );
    assert!(!logs.contains("sUp3r-s3cr3t"), "token in the logs: {logs}");
}
