//! Kubernetes mode against the fake API server (`[kubernetes] enabled`,
//! `api_url` = the fake, clients from `KubeApi::for_url`): TokenReview
//! authentication works and a successful review is cached (one review for
//! many requests with the same token); an unknown token is
//! UNAUTHENTICATED, a bearer that is not JWT-shaped is never reviewed and
//! a bad one is reviewed once however often it is sent; the `kubernetes-secret` authority is created in the fake
//! and a second server against the same fake reuses it; the root bundle is
//! published to a ConfigMap in every namespace, including one added later.

use std::time::Duration;

use crate::common::ID;
use crate::common::ca::*;
use sigil_ca::config::AuthoritySource;
use sigil_ca::k8s::{BUNDLE_CONFIG_MAP_KEY, CA_CERT_KEY, CA_KEY_KEY};
use sigil_test_util::fake_k8s::{FakeApiServer, ReviewResult};
use tonic::Code;

const CM: &str = "sigil-ca-root-cert";

// The tokens are opaque to the CA but JWT-shaped (`jwt.<name>.sig`), like
// every service-account token: TokenReview is never asked about anything
// else.

fn web_review() -> ReviewResult {
    ReviewResult::service_account("default", "web").with_audiences(&["istio-ca"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_review_authenticates_and_is_cached() {
    let fake = FakeApiServer::start().await;
    fake.add_token("jwt.web-token.sig", web_review());
    fake.add_token(
        "jwt.cart-token.sig",
        ReviewResult::service_account("shop", "cart").with_audiences(&["istio-ca"]),
    );
    fake.add_token(
        "jwt.wrong-audience.sig",
        ReviewResult::service_account("default", "web").with_audiences(&["other"]),
    );
    let url = fake.url();
    let server = start_reviewing_with(&url).await;
    let mut client = server.client().await;

    for i in 0..5 {
        let (csr, _key) = new_csr(ID);
        let chain = ask(&mut client, &csr, Some("jwt.web-token.sig"))
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        check_chain(&chain, &server.roots_pem, ID);
    }
    assert_eq!(fake.token_reviews(), 1, "one TokenReview for five requests");

    // The identity comes from the review: the same token cannot get another.
    let (csr, _key) = new_csr(&k8s_id("shop", "cart"));
    let result = ask(&mut client, &csr, Some("jwt.web-token.sig")).await;
    assert_code(&result, Code::PermissionDenied, "web token, cart CSR");
    assert_eq!(fake.token_reviews(), 1, "still cached");

    // Another token: its own review.
    let cart = k8s_id("shop", "cart");
    let (csr, _key) = new_csr(&cart);
    let chain = ask(&mut client, &csr, Some("jwt.cart-token.sig"))
        .await
        .unwrap();
    check_chain(&chain, &server.roots_pem, &cart);
    assert_eq!(fake.token_reviews(), 2);

    // Unknown to the API server, and valid for another audience only.
    let (csr, _key) = new_csr(ID);
    for token in ["jwt.unknown-token.sig", "jwt.wrong-audience.sig"] {
        let result = ask(&mut client, &csr, Some(token)).await;
        assert_code(&result, Code::Unauthenticated, token);
    }
    assert_eq!(server.issued_ok().await, 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_callers_cannot_drive_token_reviews() {
    let fake = FakeApiServer::start().await;
    let url = fake.url();
    let server = start_reviewing_with(&url).await;
    let mut client = server.client().await;
    let (csr, _key) = new_csr(ID);
    // Not JWT-shaped: refused without asking the API server.
    for garbage in ["garbage", "a.b", "a.b.c.d", "a.b+c.d", &"x".repeat(20_000)] {
        let result = ask(&mut client, &csr, Some(garbage)).await;
        assert_code(&result, Code::Unauthenticated, "not a JWT");
    }
    assert_eq!(fake.token_reviews(), 0);
    // The same bad JWT-shaped token 50 times: one review.
    for _ in 0..50 {
        let result = ask(&mut client, &csr, Some("jwt.forged-token.sig")).await;
        assert_code(&result, Code::Unauthenticated, "unknown to the API server");
    }
    assert_eq!(fake.token_reviews(), 1);
    assert_eq!(server.issued_ok().await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_secret_authority_is_created_once_and_reused() {
    let fake = FakeApiServer::start().await;
    fake.add_namespace("sigil-system");
    fake.add_token("jwt.web-token.sig", web_review());
    let url = fake.url();
    let configure = |c: &mut sigil_ca::config::CaConfig| {
        use_kubernetes(c, &url);
        c.kubernetes.publish_bundle = false;
        c.authority.source = AuthoritySource::KubernetesSecret;
    };

    let first = start_with_deps(configure, kube_deps(&url)).await;
    let data = fake
        .secret_data("sigil-system", "sigil-ca")
        .expect("the CA Secret was created");
    let cert = String::from_utf8(data[CA_CERT_KEY].clone()).unwrap();
    assert!(
        data[CA_KEY_KEY].starts_with(b"-----BEGIN"),
        "the key is PEM"
    );
    assert_eq!(
        pem_ders(&cert),
        pem_ders(&first.roots_pem),
        "the Secret holds the root"
    );
    let version =
        fake.secret("sigil-system", "sigil-ca").unwrap()["metadata"]["resourceVersion"].clone();

    let second = start_with_deps(configure, kube_deps(&url)).await;
    assert_eq!(
        second.roots_pem, first.roots_pem,
        "the second server reuses the CA"
    );
    assert_eq!(
        fake.secret("sigil-system", "sigil-ca").unwrap()["metadata"]["resourceVersion"],
        version,
        "the Secret was not rewritten"
    );

    // Both sign under the same root.
    for server in [&first, &second] {
        let mut client = server.client().await;
        let (csr, _key) = new_csr(ID);
        let chain = ask(&mut client, &csr, Some("jwt.web-token.sig"))
            .await
            .unwrap();
        check_chain(&chain, &first.roots_pem, ID);
    }
}

/// Waits (bounded) until every namespace in `namespaces` has the bundle
/// ConfigMap holding `roots_pem`.
async fn wait_for_bundle(fake: &FakeApiServer, namespaces: &[&str], roots_pem: &str) {
    let published = |ns: &str| {
        fake.config_map_data(ns, CM)
            .and_then(|d| d.get(BUNDLE_CONFIG_MAP_KEY).cloned())
            .is_some_and(|pem| pem == roots_pem)
    };
    let waited = tokio::time::timeout(WAIT, async {
        while !namespaces.iter().all(|ns| published(ns)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if waited.is_err() {
        let state: Vec<_> = namespaces
            .iter()
            .map(|ns| (ns, fake.config_map_data(ns, CM)))
            .collect();
        panic!("bundle not published everywhere in time: {state:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_is_published_in_every_namespace() {
    let fake = FakeApiServer::start().await;
    for ns in ["default", "shop", "istio-system", "sigil-system"] {
        fake.add_namespace(ns);
    }
    let url = fake.url();
    let server = start_with_deps(
        |c| {
            use_kubernetes(c, &url);
            c.kubernetes.publish_interval = Duration::from_millis(200);
        },
        kube_deps(&url),
    )
    .await;
    wait_for_bundle(
        &fake,
        &["default", "shop", "istio-system", "sigil-system"],
        &server.roots_pem,
    )
    .await;
    let (_, root_pem) = server.get("/root.pem").await;
    assert_eq!(root_pem, server.roots_pem);

    // A namespace created later gets it at the next publication.
    fake.add_namespace("late");
    wait_for_bundle(&fake, &["late"], &server.roots_pem).await;
}

/// A server whose TokenReviews go to the fake API server at `url`, without
/// bundle publication.
async fn start_reviewing_with(url: &str) -> CaUnderTest {
    start_with_deps(
        |c| {
            use_kubernetes(c, url);
            c.kubernetes.publish_bundle = false;
        },
        kube_deps(url),
    )
    .await
}
