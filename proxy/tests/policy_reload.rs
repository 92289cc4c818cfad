//! Policy hot reload: a changed file takes effect for new connections,
//! established L4 connections keep their decision, an invalid file is
//! refused and the old policy kept, a missing file stops the start.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failure here is a test failure"
)]

mod wiring_support;

use sigil_proxy::RunError;
use wiring_support::{
    CLIENT, eventually, inbound, mtls, mtls_served, peer_auth, plaintext_served, roundtrip,
};

fn allow_only(principal: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-client
  namespace: default
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["{}"]
"#,
        principal.trim_start_matches("spiffe://")
    )
}

const DENY_ALL: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: default
spec:
  action: DENY
  rules:
  - {}
"#;

#[tokio::test]
async fn a_new_deny_policy_denies_new_connections_established_ones_stay() {
    let proxy = inbound(|_| allow_only(CLIENT), "").await;
    assert!(mtls_served(&proxy, CLIENT).await);
    assert!(
        !mtls_served(&proxy, "spiffe://example.org/ns/default/sa/other").await,
        "ALLOW-only: another principal is denied"
    );
    let mut established = mtls(&proxy, CLIENT).await.unwrap();
    assert_eq!(
        roundtrip(&mut established, b"before").await.unwrap(),
        b"before"
    );

    std::fs::write(&proxy.policy, DENY_ALL).unwrap();
    assert!(
        eventually(|| async { !mtls_served(&proxy, CLIENT).await }).await,
        "new connections are denied after the reload"
    );
    assert_eq!(proxy.metrics.policy_reloads("applied"), 1);
    // L4: the decision was made when the connection was accepted.
    assert_eq!(
        roundtrip(&mut established, b"after").await.unwrap(),
        b"after"
    );
}

#[tokio::test]
async fn an_invalid_file_is_refused_and_the_old_policy_kept() {
    let proxy = inbound(|_| allow_only(CLIENT), "").await;
    std::fs::write(&proxy.policy, "apiVersion: security.istio.io/v1\nkind: [").unwrap();
    assert!(
        eventually(|| async { proxy.metrics.policy_reloads("refused") == 1 }).await,
        "the invalid file was seen and refused"
    );
    assert!(
        mtls_served(&proxy, CLIENT).await,
        "the old ALLOW still applies"
    );
    assert!(!mtls_served(&proxy, "spiffe://example.org/ns/default/sa/other").await);
    assert_eq!(proxy.metrics.policy_reloads("applied"), 0);
    // A field the schema does not know is refused the same way, reported once.
    std::fs::write(
        &proxy.policy,
        allow_only(CLIENT).replace("action: ALLOW", "action: ALLOW\n  bogus: 1"),
    )
    .unwrap();
    assert!(eventually(|| async { proxy.metrics.policy_reloads("refused") == 2 }).await);
    // A deleted file is refused too; the policy stays.
    std::fs::remove_file(&proxy.policy).unwrap();
    assert!(eventually(|| async { proxy.metrics.policy_reloads("refused") == 3 }).await);
    assert!(mtls_served(&proxy, CLIENT).await);
    // Fixed: applied.
    std::fs::write(&proxy.policy, DENY_ALL).unwrap();
    assert!(eventually(|| async { proxy.metrics.policy_reloads("applied") == 1 }).await);
    assert!(!mtls_served(&proxy, CLIENT).await);
    assert_eq!(
        proxy.metrics.policy_reloads("refused"),
        3,
        "each bad state once"
    );
}

#[tokio::test]
async fn a_missing_or_invalid_file_at_startup_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = sigil_test_util::TestCa::root(wiring_support::TD);
    wiring_support::write_creds(dir.path(), &ca);
    let backend = wiring_support::echo_backend().await;
    let missing = dir.path().join("nowhere.yaml");
    let config = wiring_support::config(
        dir.path(),
        backend,
        "",
        &format!("files = [\"{}\"]", missing.display()),
    );
    match sigil_proxy::start(&config).await {
        Err(RunError::Policy { file, .. }) => assert!(file.ends_with("nowhere.yaml"), "{file}"),
        other => panic!("expected a policy error, got {other:?}"),
    }

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec: {mtls: {mode: SOMETIMES}}\n",
    )
    .unwrap();
    let config = wiring_support::config(
        dir.path(),
        backend,
        "",
        &format!("files = [\"{}\"]", bad.display()),
    );
    let err = sigil_proxy::start(&config).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("bad.yaml") && message.contains("SOMETIMES"),
        "{message}"
    );
}

#[tokio::test]
async fn a_peer_authentication_reload_applies_to_new_connections() {
    let proxy = inbound(|_| peer_auth("mode", "STRICT"), "").await;
    assert!(!plaintext_served(&proxy).await, "STRICT");
    std::fs::write(&proxy.policy, peer_auth("mode", "PERMISSIVE")).unwrap();
    assert!(
        eventually(|| plaintext_served(&proxy)).await,
        "PERMISSIVE after the reload"
    );
    assert!(mtls_served(&proxy, CLIENT).await);
    assert!(proxy.running.ready());
    assert_eq!(
        proxy
            .running
            .policies()
            .current()
            .mtls_mode(proxy.backend.port()),
        sigil_proxy::policy::MtlsMode::Permissive
    );
}
