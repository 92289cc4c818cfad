//! `ImpersonatedIdentity` (ztunnel in shared mode) over the network: a
//! configured node agent gets a workload's certificate; anyone else asking
//! is PERMISSION_DENIED; a value that is not a workload SPIFFE ID of the
//! trust domain (or not a string) is INVALID_ARGUMENT. With Kubernetes
//! (TokenReview against the fake API server, node-bound tokens), the node
//! agent only gets workloads running on its own node.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failure is a test failure"
)]

mod common;

use common::ID;
use common::ca::*;
use sigil_identity::SpiffeId;
use sigil_node_agent::ca_client::{CaClient, CaClientError, CsrRequest};
use sigil_proto::IMPERSONATED_IDENTITY;
use sigil_proto::istio::v1::auth::IstioCertificateRequest;
use sigil_test_util::fake_k8s::{FakeApiServer, ReviewResult};
use tonic::Code;

const ZTUNNEL_TOKEN: &str = "dev:istio-system:ztunnel";

async fn impersonate(
    client: &mut CaClient,
    token: &str,
    target: &str,
    csr_id: &str,
) -> Result<Vec<String>, CaClientError> {
    let (csr, _key) = new_csr(csr_id);
    client
        .create_certificate(CsrRequest {
            csr_pem: &csr,
            token: Some(token),
            ttl_secs: 0,
            impersonate: Some(target),
        })
        .await
}

fn node_agents() -> Vec<SpiffeId> {
    vec![SpiffeId::parse(ZTUNNEL).unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_node_agents_may_impersonate() {
    let server = start(|c| c.authorization.node_agents = node_agents()).await;
    let mut client = server.client().await;

    // ztunnel for a workload: the workload's identity.
    let chain = impersonate(&mut client, ZTUNNEL_TOKEN, ID, ID)
        .await
        .expect("node agent impersonation");
    check_chain(&chain, &server.roots_pem, ID);

    // ztunnel asking for the workload's identity without impersonating.
    let (csr, _key) = new_csr(ID);
    let result = ask(&mut client, &csr, Some(ZTUNNEL_TOKEN)).await;
    assert_code(
        &result,
        Code::PermissionDenied,
        "ztunnel without ImpersonatedIdentity",
    );

    // Impersonation with a CSR for a third identity.
    let result = impersonate(&mut client, ZTUNNEL_TOKEN, ID, &k8s_id("default", "db")).await;
    assert_code(
        &result,
        Code::PermissionDenied,
        "CSR differs from ImpersonatedIdentity",
    );

    // A workload that is not a node agent.
    for (token, target) in [
        (WEB_TOKEN, k8s_id("default", "db")),
        ("dev:default:db", ID.to_owned()),
        ("dev:istio-system:istiod", ID.to_owned()),
        ("dev:kube-system:ztunnel", ID.to_owned()),
    ] {
        let result = impersonate(&mut client, token, &target, &target).await;
        assert_code(
            &result,
            Code::PermissionDenied,
            &format!("{token} for {target}"),
        );
    }

    // Bad values, even from the node agent.
    for bad in [
        "not a uri",
        "spiffe://evil.org/ns/default/sa/web",
        "spiffe://cluster.local",
        "https://cluster.local/ns/default/sa/web",
        "spiffe://CLUSTER.local/ns/default/sa/web",
    ] {
        let result = impersonate(&mut client, ZTUNNEL_TOKEN, bad, ID).await;
        assert_code(&result, Code::InvalidArgument, bad);
    }
    assert_eq!(
        server.issued_ok().await,
        1.0,
        "only the allowed request was signed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_string_impersonated_identity_is_invalid_argument() {
    let server = start(|c| c.authorization.node_agents = node_agents()).await;
    let mut raw = server.raw().await;
    let (csr, _key) = new_csr(ID);
    use prost_types::value::Kind;
    for (what, kind) in [
        ("number", Kind::NumberValue(1.0)),
        ("bool", Kind::BoolValue(true)),
        ("null", Kind::NullValue(0)),
        (
            "list",
            Kind::ListValue(prost_types::ListValue {
                values: vec![prost_types::Value {
                    kind: Some(Kind::StringValue(ID.to_owned())),
                }],
            }),
        ),
    ] {
        let metadata = prost_types::Struct {
            fields: [(
                IMPERSONATED_IDENTITY.to_owned(),
                prost_types::Value { kind: Some(kind) },
            )]
            .into_iter()
            .collect(),
        };
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.clone(),
            validity_duration: 0,
            metadata: Some(metadata),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {ZTUNNEL_TOKEN}").parse().unwrap(),
        );
        match raw.create_certificate(request).await {
            Ok(_) => panic!("{what}: a certificate was issued"),
            Err(status) => assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}"),
        }
    }
    assert_eq!(server.issued_ok().await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kubernetes_a_node_agent_gets_workloads_on_its_own_node_only() {
    let fake = FakeApiServer::start().await;
    fake.add_namespace("default");
    fake.add_namespace("shop");
    fake.add_namespace("istio-system");
    fake.add_token(
        "ztunnel-node-1",
        ReviewResult::service_account("istio-system", "ztunnel")
            .with_node("node-1")
            .with_audiences(&["istio-ca"]),
    );
    fake.add_token(
        "ztunnel-unbound",
        ReviewResult::service_account("istio-system", "ztunnel").with_audiences(&["istio-ca"]),
    );
    fake.add_token(
        "web-node-1",
        ReviewResult::service_account("default", "web")
            .with_node("node-1")
            .with_audiences(&["istio-ca"]),
    );
    fake.add_pod("default", "web-1", "uid-web-1", "web", "node-1", "Running");
    fake.add_pod("shop", "cart-1", "uid-cart-1", "cart", "node-2", "Running");
    fake.add_pod(
        "shop",
        "done-1",
        "uid-done-1",
        "batch",
        "node-1",
        "Succeeded",
    );
    let url = fake.url();
    let server = start_with_deps(
        |c| {
            use_kubernetes(c, &url);
            c.kubernetes.publish_bundle = false;
            c.authorization.node_agents = node_agents();
        },
        kube_deps(&url),
    )
    .await;
    let mut client = server.client().await;

    // The workload on the caller's node.
    let chain = impersonate(&mut client, "ztunnel-node-1", ID, ID)
        .await
        .expect("workload on the node agent's node");
    check_chain(&chain, &server.roots_pem, ID);

    // On another node, or finished, or with no pod at all.
    for (what, target) in [
        ("on node-2", k8s_id("shop", "cart")),
        ("finished pod on node-1", k8s_id("shop", "batch")),
        ("no pod", k8s_id("default", "ghost")),
    ] {
        let result = impersonate(&mut client, "ztunnel-node-1", &target, &target).await;
        assert_code(&result, Code::PermissionDenied, what);
    }
    // A node agent whose token is bound to no node and no pod.
    let result = impersonate(&mut client, "ztunnel-unbound", ID, ID).await;
    assert_code(&result, Code::PermissionDenied, "node agent without a node");
    // A workload on node-1 is no node agent.
    let cart = k8s_id("shop", "cart");
    let result = impersonate(&mut client, "web-node-1", &cart, &cart).await;
    assert_code(&result, Code::PermissionDenied, "workload impersonating");

    assert_eq!(server.issued_ok().await, 1.0);
}
