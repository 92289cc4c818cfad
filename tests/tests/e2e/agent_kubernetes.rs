//! A node-mode agent against the CA in Kubernetes mode (issue 15,
//! acceptance (h)), with the in-test API server: the agent authenticates
//! with its own service-account token *file* (TokenReview says
//! `istio-system/ztunnel`, bound to node-1) and asks with
//! `ImpersonatedIdentity`; the CA's pod-on-node check gives it the identity
//! of a pod on node-1 and refuses that of a pod on node-2 (PermissionDenied
//! on `/status`, `code="permission_denied"` in `sigil_agent_ca_errors_total`;
//! that workload gets no SVID). The token file is re-read for every request: a rotated token
//! is the one reviewed next.
//!
//! Callers are mapped to the two identities by `unix:uid` registration
//! entries: resolving pods from a caller's cgroup needs a kubelet's cgroup
//! tree (that part is node-agent's `attest_k8s` test).

use std::time::Duration;

use sigil_identity::SpiffeId;
use sigil_node_agent::config::Mode;
use sigil_test_util::fake_k8s::{FakeApiServer, ReviewResult};

use crate::common::agent::{self, Probe, ProbeAnswer, registration_file, wait_until};
use crate::common::ca::{self, WAIT, ZTUNNEL, k8s_id, kube_deps, use_kubernetes};

const WEB_UID: u32 = 1001;
const CART_UID: u32 = 1002;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_agent_gets_pods_on_its_node_and_is_refused_for_a_pod_on_another_node() {
    let probe = Probe::new();
    let fake = FakeApiServer::start().await;
    for ns in ["default", "shop", "istio-system"] {
        fake.add_namespace(ns);
    }
    let review = || {
        ReviewResult::service_account("istio-system", "ztunnel")
            .with_node("node-1")
            .with_audiences(&["istio-ca"])
    };
    // JWT-shaped, like every service-account token; opaque to the CA.
    fake.add_token("jwt.ztunnel-node-1.sig", review());
    fake.add_token("jwt.ztunnel-node-1-rotated.sig", review());
    fake.add_pod("default", "web-1", "uid-web-1", "web", "node-1", "Running");
    fake.add_pod("shop", "cart-1", "uid-cart-1", "cart", "node-2", "Running");
    let url = fake.url();
    let ca = ca::start_with_deps(
        |c| {
            use_kubernetes(c, &url);
            c.kubernetes.publish_bundle = false;
            c.authorization.node_agents = vec![SpiffeId::parse(ZTUNNEL).unwrap()];
        },
        kube_deps(&url),
    )
    .await;
    let (web, cart) = (k8s_id("default", "web"), k8s_id("shop", "cart"));
    let mut token_file = None;
    let agent = agent::start(&ca, |c, dir| {
        c.mode = Mode::Node;
        // Node mode attests every caller: processes of other uids connect.
        c.workload_api.mode = sigil_node_agent::config::DEFAULT_WORKLOAD_SOCKET_MODE;
        c.attestation.identity = None;
        let token = crate::common::write(dir, "token", "jwt.ztunnel-node-1.sig");
        token_file = Some(token.clone());
        c.ca.token_file = Some(token);
        c.certificates.backoff_initial = Duration::from_millis(200);
        c.certificates.backoff_max = Duration::from_secs(1);
        c.attestation.registration_file = Some(registration_file(
            dir,
            &[
                (&format!("unix:uid:{WEB_UID}"), &web),
                (&format!("unix:uid:{CART_UID}"), &cart),
            ],
        ));
    })
    .await;
    let token_file = token_file.expect("token file");

    // The pod on the agent's node: served.
    assert_eq!(
        probe.fetch_as(WEB_UID, &agent.workload, WAIT).await,
        ProbeAnswer::Svids(vec![web.clone()])
    );
    assert!(fake.token_reviews() >= 1, "the agent's token was reviewed");

    // The pod on node-2: the CA refuses, the agent reports it, the
    // workload gets nothing while it asks.
    let refused = r#"sigil_agent_ca_errors_total{code="permission_denied"}"#;
    let (answer, ()) = tokio::join!(
        probe.fetch_as(CART_UID, &agent.workload, Duration::from_secs(1)),
        wait_until("the refusal is counted", WAIT, || async {
            agent.metric(refused).await >= 1.0
        }),
    );
    assert_eq!(
        answer,
        ProbeAnswer::Nothing,
        "no SVID for a pod on another node"
    );
    let error = agent
        .last_error(&cart)
        .await
        .expect("/status shows why the pod on node-2 has no certificate");
    assert!(error.contains("PermissionDenied"), "{error}");
    let status = agent.status().await;
    let cart_status = status
        .identities
        .iter()
        .find(|i| i.spiffe_id == cart)
        .expect("held (being retried)");
    assert_eq!(cart_status.not_after, None);
    assert_eq!(agent.last_error(&web).await, None, "the web pod is fine");
    assert_eq!(ca.issued_ok().await, 1.0, "only the pod on node-1");

    // The kubelet rotates the token: the next request (the refused
    // identity's retry) carries the new one, which the CA has not reviewed
    // (and cached) yet.
    let reviews = fake.token_reviews();
    std::fs::write(&token_file, "jwt.ztunnel-node-1-rotated.sig").expect("rotate the token");
    wait_until("the rotated token is reviewed", WAIT, || async {
        fake.token_reviews() > reviews
    })
    .await;
}
