//! `ImpersonatedIdentity` (ztunnel in shared mode) over the network: a
//! configured node agent gets a workload's certificate; anyone else asking
//! is PERMISSION_DENIED; a value that is not a workload SPIFFE ID of the
//! trust domain (or not a string) is INVALID_ARGUMENT. With Kubernetes
//! (the fake API server), the node agent only gets workloads running on its
//! own node: with node-bound tokens (TokenReview), and with pod-bound tokens
//! (TokenReview extras or a `kubernetes-jwt` token's `kubernetes.io.pod`
//! claim, no node) whose node is that of the caller's pod, looked up in the
//! Pod API by name *and UID* — a pod that is gone, unscheduled, or was
//! recreated under the same name gives no node, and the Pod API failing is
//! UNAVAILABLE. Without that node check, node agents are refused unless
//! `authorization.unbounded_impersonation` accepts the risk, which then
//! shows in `/metrics`.

use crate::common::ID;
use crate::common::ca::*;
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

/// ztunnel as node agent without the Kubernetes node check: needs the
/// explicit opt-in.
fn unbounded_node_agents(c: &mut sigil_ca::config::CaConfig) {
    c.authorization.node_agents = node_agents();
    c.authorization.unbounded_impersonation = true;
}

/// A server in Kubernetes mode against the fake API server at `url`, with
/// ztunnel as its node agent; `configure` adjusts the rest.
async fn start_with_node_agents_on(
    url: &str,
    configure: impl FnOnce(&mut sigil_ca::config::CaConfig),
) -> CaUnderTest {
    start_with_deps(
        |c| {
            use_kubernetes(c, url);
            c.kubernetes.publish_bundle = false;
            c.authorization.node_agents = node_agents();
            configure(c);
        },
        kube_deps(url),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agents_without_the_node_check_need_the_opt_in_which_metrics_show() {
    // Refused: without Kubernetes, and with Kubernetes but the check off.
    for kubernetes_without_check in [false, true] {
        let dir = crate::common::tempdir();
        let mut config = test_config(dir.path());
        config.authorization.node_agents = node_agents();
        if kubernetes_without_check {
            config.kubernetes.enabled = true;
            config.kubernetes.check_impersonation_node = false;
        }
        match sigil_ca::server::CaServer::bind(config, Default::default()).await {
            Err(sigil_ca::server::ServeError::Config(sigil_ca::config::ConfigError::Invalid {
                field,
                reason,
                ..
            })) => {
                assert_eq!(field, "authorization.node_agents");
                assert!(reason.contains("unbounded_impersonation"), "{reason}");
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("started with unbounded node agents and no opt-in"),
        }
        assert!(
            !dir.path().join("ca").exists(),
            "refused before the authority was created"
        );
    }
    // Accepted with the opt-in, and visible.
    let server = start(unbounded_node_agents).await;
    assert_eq!(server.metric("sigil_ca_unbounded_impersonation").await, 1.0);
    let mut client = server.client().await;
    let chain = impersonate(&mut client, ZTUNNEL_TOKEN, ID, ID)
        .await
        .expect("node agent impersonation with the opt-in");
    check_chain(&chain, &server.roots_pem, ID);
    // Without node agents the opt-in is moot: 0.
    let plain = start(|c| c.authorization.unbounded_impersonation = true).await;
    let (_, metrics) = plain.get("/metrics").await;
    assert!(
        metrics.contains("sigil_ca_unbounded_impersonation 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_node_agents_may_impersonate() {
    let server = start(unbounded_node_agents).await;
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
    let server = start(unbounded_node_agents).await;
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
    // Tokens opaque to the CA, but JWT-shaped like every service-account
    // token: TokenReview is never asked about anything else.
    let fake = FakeApiServer::start().await;
    fake.add_namespace("default");
    fake.add_namespace("shop");
    fake.add_namespace("istio-system");
    fake.add_token(
        "jwt.ztunnel-node-1.sig",
        ReviewResult::service_account("istio-system", "ztunnel")
            .with_node("node-1")
            .with_audiences(&["istio-ca"]),
    );
    fake.add_token(
        "jwt.ztunnel-unbound.sig",
        ReviewResult::service_account("istio-system", "ztunnel").with_audiences(&["istio-ca"]),
    );
    fake.add_token(
        "jwt.web-node-1.sig",
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
    let server = start_with_node_agents_on(&url, |_| {}).await;
    let mut client = server.client().await;

    // The workload on the caller's node.
    let chain = impersonate(&mut client, "jwt.ztunnel-node-1.sig", ID, ID)
        .await
        .expect("workload on the node agent's node");
    check_chain(&chain, &server.roots_pem, ID);

    // On another node, or finished, or with no pod at all.
    for (what, target) in [
        ("on node-2", k8s_id("shop", "cart")),
        ("finished pod on node-1", k8s_id("shop", "batch")),
        ("no pod", k8s_id("default", "ghost")),
    ] {
        let result = impersonate(&mut client, "jwt.ztunnel-node-1.sig", &target, &target).await;
        assert_code(&result, Code::PermissionDenied, what);
    }
    // A node agent whose token is bound to no node and no pod.
    let result = impersonate(&mut client, "jwt.ztunnel-unbound.sig", ID, ID).await;
    assert_code(&result, Code::PermissionDenied, "node agent without a node");
    // A workload on node-1 is no node agent.
    let cart = k8s_id("shop", "cart");
    let result = impersonate(&mut client, "jwt.web-node-1.sig", &cart, &cart).await;
    assert_code(&result, Code::PermissionDenied, "workload impersonating");

    assert_eq!(server.issued_ok().await, 1.0);
}

/// The fake API server for the pod-bound tests: namespaces, and pods
///
/// | pod | uid | service account | node |
/// |---|---|---|---|
/// | istio-system/ztunnel-abcde | uid-ztunnel-1 | ztunnel | node-1 |
/// | istio-system/ztunnel-0 | uid-ztunnel-0-new | ztunnel | node-1 (recreated there; the tokens name uid-ztunnel-0-old, a pod that ran elsewhere) |
/// | istio-system/ztunnel-pending | uid-ztunnel-p | ztunnel | — (not scheduled) |
/// | default/web-1 | uid-web-1 | web | node-1 |
/// | default/db-1 | uid-db-1 | db | node-1 |
/// | shop/cart-1 | uid-cart-1 | cart | node-2 |
async fn fake_with_pods() -> FakeApiServer {
    let fake = FakeApiServer::start().await;
    for ns in ["default", "shop", "istio-system"] {
        fake.add_namespace(ns);
    }
    for (ns, pod, uid, sa, node, phase) in [
        (
            "istio-system",
            "ztunnel-abcde",
            "uid-ztunnel-1",
            "ztunnel",
            "node-1",
            "Running",
        ),
        (
            "istio-system",
            "ztunnel-0",
            "uid-ztunnel-0-new",
            "ztunnel",
            "node-1",
            "Running",
        ),
        (
            "istio-system",
            "ztunnel-pending",
            "uid-ztunnel-p",
            "ztunnel",
            "",
            "Pending",
        ),
        ("default", "web-1", "uid-web-1", "web", "node-1", "Running"),
        ("default", "db-1", "uid-db-1", "db", "node-1", "Running"),
        ("shop", "cart-1", "uid-cart-1", "cart", "node-2", "Running"),
    ] {
        fake.add_pod(ns, pod, uid, sa, node, phase);
    }
    fake
}

/// What every pod-bound test asks, whatever the credential: `allowed`
/// impersonates the web workload (a pod on node-1, like the caller's pod)
/// and must succeed; every other case must be PERMISSION_DENIED.
async fn check_pod_bound(
    server: &CaUnderTest,
    allowed: &str,
    other_node: &str,
    unusable_callers: &[(&str, &str)],
    workload: &str,
) {
    let mut client = server.client().await;

    // The workload on the node of the caller's pod.
    let chain = impersonate(&mut client, allowed, ID, ID)
        .await
        .unwrap_or_else(|e| panic!("workload on the node of the node agent's pod: {e}"));
    check_chain(&chain, &server.roots_pem, ID);

    // The same caller for a workload on another node.
    let cart = k8s_id("shop", "cart");
    let result = impersonate(&mut client, other_node, &cart, &cart).await;
    assert_code(&result, Code::PermissionDenied, "workload on node-2");

    // Callers whose pod gives no usable node.
    for (what, token) in unusable_callers {
        let result = impersonate(&mut client, token, ID, ID).await;
        assert_code(&result, Code::PermissionDenied, what);
    }

    // A workload (pod-bound, on node-1) is no node agent, even for a
    // workload on its own node.
    let db = k8s_id("default", "db");
    let result = impersonate(&mut client, workload, &db, &db).await;
    assert_code(&result, Code::PermissionDenied, "workload impersonating");

    assert_eq!(server.issued_ok().await, 1.0, "only the allowed request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kubernetes_a_pod_bound_node_agent_gets_workloads_on_its_pods_node_only() {
    let fake = fake_with_pods().await;
    let review = |ns: &str, sa: &str, pod: &str, uid: &str| {
        // Bound to a pod only: no node-name extra (before Kubernetes 1.30's
        // ServiceAccountTokenPodNodeInfo), so the node comes from the pod.
        ReviewResult::service_account(ns, sa)
            .with_pod(pod, uid)
            .with_audiences(&["istio-ca"])
    };
    let ztunnel = |pod: &str, uid: &str| review("istio-system", "ztunnel", pod, uid);
    // Opaque to the CA, but JWT-shaped like every service-account token:
    // TokenReview is never asked about anything else.
    fake.add_token(
        "jwt.ztunnel-1.sig",
        ztunnel("ztunnel-abcde", "uid-ztunnel-1"),
    );
    fake.add_token(
        "jwt.ztunnel-gone.sig",
        ztunnel("ztunnel-gone", "uid-ztunnel-gone"),
    );
    fake.add_token(
        "jwt.ztunnel-old-0.sig",
        ztunnel("ztunnel-0", "uid-ztunnel-0-old"),
    );
    fake.add_token(
        "jwt.ztunnel-pending.sig",
        ztunnel("ztunnel-pending", "uid-ztunnel-p"),
    );
    fake.add_token(
        "jwt.web-1.sig",
        review("default", "web", "web-1", "uid-web-1"),
    );
    let url = fake.url();
    let server = start_with_node_agents_on(&url, |_| {}).await;

    check_pod_bound(
        &server,
        "jwt.ztunnel-1.sig",
        "jwt.ztunnel-1.sig",
        &[
            ("the caller's pod is gone", "jwt.ztunnel-gone.sig"),
            (
                "the caller's pod name now belongs to another pod (other UID) on node-1",
                "jwt.ztunnel-old-0.sig",
            ),
            (
                "the caller's pod is not scheduled",
                "jwt.ztunnel-pending.sig",
            ),
        ],
        "jwt.web-1.sig",
    )
    .await;
    // The node was looked up from the caller's pod.
    assert!(
        fake.count("GET", "/api/v1/namespaces/istio-system/pods/ztunnel-abcde") >= 1,
        "{:?}",
        fake.requests()
    );
}

/// Claims of a projected token for `ns`/`sa` bound to pod `pod` (`uid`),
/// with no node claim.
fn pod_bound_claims(ns: &str, sa: &str, pod: &str, uid: &str) -> serde_json::Value {
    let mut claims = k8s_claims(ns, sa);
    claims["kubernetes.io"]["pod"] = serde_json::json!({ "name": pod, "uid": uid });
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_kubernetes_a_node_agent_jwt_bound_to_a_pod_gets_workloads_on_its_pods_node_only() {
    let fake = fake_with_pods().await;
    let signer = JwtSigner::generate("sa-key-1");
    let jwks = jwks_json(&[&signer]);
    let url = fake.url();
    // Tokens verified locally; the API server is used for pods only.
    let server = start_with_node_agents_on(&url, |c| {
        c.authenticators = vec![kubernetes_jwt(jwks)];
    })
    .await;
    let ztunnel =
        |pod: &str, uid: &str| signer.sign(&pod_bound_claims("istio-system", "ztunnel", pod, uid));
    let allowed = ztunnel("ztunnel-abcde", "uid-ztunnel-1");
    let gone = ztunnel("ztunnel-gone", "uid-ztunnel-gone");
    let recreated = ztunnel("ztunnel-0", "uid-ztunnel-0-old");
    let pending = ztunnel("ztunnel-pending", "uid-ztunnel-p");
    let no_uid = {
        let mut claims = pod_bound_claims("istio-system", "ztunnel", "ztunnel-abcde", "");
        claims["kubernetes.io"]["pod"]
            .as_object_mut()
            .unwrap()
            .remove("uid");
        signer.sign(&claims)
    };
    let web = signer.sign(&pod_bound_claims("default", "web", "web-1", "uid-web-1"));

    check_pod_bound(
        &server,
        &allowed,
        &allowed,
        &[
            ("the caller's pod is gone", &gone),
            (
                "the caller's pod name now belongs to another pod (other UID) on node-1",
                &recreated,
            ),
            ("the caller's pod is not scheduled", &pending),
            ("the pod claim has no UID", &no_uid),
        ],
        &web,
    )
    .await;

    // The Pod API failing: the node check cannot be made now.
    fake.fail_next(500);
    let mut client = server.client().await;
    let result = impersonate(&mut client, &allowed, ID, ID).await;
    assert_code(&result, Code::Unavailable, "Pod API down");
    impersonate(&mut client, &allowed, ID, ID)
        .await
        .expect("the Pod API back");
}
