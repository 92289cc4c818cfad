//! py-spiffe (grpc C-core, which sends the socket path as `:authority`)
//! against the Workload API: X.509-SVIDs, bundles, JWT-SVID fetch and
//! validation, then mTLS between two workloads with the SVIDs they got.
//!
//! Skipped (with the reason printed) only when `import spiffe` fails in
//! `python3`; CI installs the PyPI package `spiffe`.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{SocketServer, TestDomain, bundle_set, callers_for_me, id};
use sigil_node_agent::peer::CallerIdentities;
use sigil_node_agent::source::CredentialSource;
use sigil_node_agent::testing::FakeSource;
use sigil_node_agent::uds::UdsSettings;
use sigil_node_agent::workload::{WorkloadApi, WorkloadMetrics};
use tokio::process::Command;

#[tokio::test]
async fn py_spiffe_fetches_svids_and_bundles_and_does_mtls() {
    if !sigil_test_util::py_spiffe::py_spiffe_or_skip(
        "py_spiffe_fetches_svids_and_bundles_and_does_mtls",
    ) {
        return;
    }
    let domain = TestDomain::new("example.org");
    let federated = TestDomain::new("partner.example");
    let frontend = id("spiffe://example.org/ns/shop/sa/frontend");
    let backend = id("spiffe://example.org/ns/shop/sa/backend");
    let source = Arc::new(FakeSource::new());
    source.set_bundles(bundle_set(&[&domain, &federated]));
    source.set_svid(&frontend, domain.ready(&frontend, 1));
    source.set_svid(&backend, domain.ready(&backend, 1));
    for who in [&frontend, &backend] {
        source.set_jwt(
            who,
            Ok(domain.jwt.mint(who, &["orders"], Duration::from_secs(300))),
        );
    }
    let creds: Arc<dyn CredentialSource> = source.clone();
    let callers: Arc<dyn CallerIdentities> =
        Arc::new(callers_for_me(vec![frontend.clone(), backend.clone()]));
    let server = SocketServer::start(UdsSettings::default(), |registry, shutdown| {
        WorkloadApi::new(creds, callers, WorkloadMetrics::new(registry), shutdown).into_server()
    });

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/workload_client.py");
    let run = Command::new("python3")
        .arg(script)
        .args(["example.org", &domain.jwt.kid, "orders"])
        .env("SPIFFE_ENDPOINT_SOCKET", server.endpoint())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("py-spiffe client finishes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "py-spiffe client failed:\n{stdout}\n{stderr}"
    );
    let seen: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("JSON from the script");

    assert_eq!(
        seen["svids"],
        serde_json::json!([frontend.to_string(), backend.to_string()])
    );
    assert_eq!(
        seen["x509_bundle_domains"],
        serde_json::json!(["example.org", "partner.example"])
    );
    assert_eq!(seen["jwt_has_kid"], true);
    assert_eq!(seen["jwt_subject"], frontend.to_string());
    assert_eq!(seen["validated_subject"], frontend.to_string());
    // The server (frontend's SVID) saw backend, and the other way round.
    assert_eq!(
        seen["mtls"]["server_saw"],
        serde_json::json!([backend.to_string()])
    );
    assert_eq!(
        seen["mtls"]["client_saw"],
        serde_json::json!([frontend.to_string()])
    );
    assert_eq!(seen["mtls"]["echo"], "PING");
    server.stop().await;
}
