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

/// L7: every request is decided with the policy in force when it arrives,
/// also on a connection established before the reload.
#[tokio::test]
async fn an_http_reload_applies_to_the_next_request_on_a_kept_alive_connection() {
    let deny = |path: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: deny, namespace: default}}\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation:\n        paths: [\"{path}\"]\n"
        )
    };
    let proxy = wiring_support::inbound_http(|_| deny("/admin"), "").await;
    let tls = mtls(&proxy, CLIENT).await.unwrap();
    let mut client = wiring_support::http_client(tls, false).await;
    assert_eq!(client.get("/x", &[]).await.unwrap().0, 200);
    assert_eq!(client.get("/admin", &[]).await.unwrap().0, 403);

    std::fs::write(&proxy.policy, deny("/x")).unwrap();
    let mut statuses = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let status = client.get("/x", &[]).await.unwrap().0;
        statuses.push(status);
        if status == 403 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        statuses.last(),
        Some(&403),
        "the same connection: {statuses:?}"
    );
    assert_eq!(client.get("/admin", &[]).await.unwrap().0, 200);
}

#[path = "jwt_common/mod.rs"]
mod jwt_common;

fn request_authentication(jwks_line: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata:
  name: ra
  namespace: default
spec:
  jwtRules:
  - issuer: {iss}
    {jwks_line}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: require-jwt
  namespace: default
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["*"]
"#,
        iss = jwt_common::ISS
    )
}

#[tokio::test]
async fn a_request_authentication_added_by_a_reload_validates_tokens() {
    let signer = jwt_common::Signer::new("k1");
    let proxy = wiring_support::inbound_http(|_| String::new(), "").await;
    let garbage = [("authorization", "Bearer not.a.jwt")];
    let (status, _) = wiring_support::mtls_get(&proxy, CLIENT, "/", &garbage)
        .await
        .unwrap();
    assert_eq!(
        status, 200,
        "no RequestAuthentication: tokens are not looked at"
    );

    std::fs::write(
        &proxy.policy,
        request_authentication(&format!("jwks: '{}'", signer.jwks())),
    )
    .unwrap();
    assert!(eventually(|| async { proxy.metrics.policy_reloads("applied") == 1 }).await);
    let (status, _) = wiring_support::mtls_get(&proxy, CLIENT, "/", &garbage)
        .await
        .unwrap();
    assert_eq!(status, 401, "an invalid token");
    let (status, _) = wiring_support::mtls_get(&proxy, CLIENT, "/", &[])
        .await
        .unwrap();
    assert_eq!(
        status, 403,
        "no token: requestPrincipals [\"*\"] does not match"
    );
    let token = signer.token(&serde_json::json!({"sub": "alice"}));
    let bearer = format!("Bearer {token}");
    let (status, _) =
        wiring_support::mtls_get(&proxy, CLIENT, "/", &[("authorization", bearer.as_str())])
            .await
            .unwrap();
    assert_eq!(status, 200, "a valid token");
}

#[tokio::test]
async fn jwks_uri_fetches_trust_the_configured_jwks_ca_file() {
    let signer = jwt_common::Signer::new("k1");
    let server = jwt_common::JwksServer::start(signer.jwks()).await;
    let roots = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(roots.path(), &server.roots_pem).unwrap();
    let url = server.url.clone();
    let proxy = wiring_support::inbound_http_policy(
        move |_| request_authentication(&format!("jwksUri: {url}")),
        &format!("jwks_ca_file = \"{}\"", roots.path().display()),
    )
    .await;
    let bearer = format!(
        "Bearer {}",
        signer.token(&serde_json::json!({"sub": "alice"}))
    );
    let (status, body) =
        wiring_support::mtls_get(&proxy, CLIENT, "/", &[("authorization", bearer.as_str())])
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(server.hits() >= 1);
}

#[tokio::test]
async fn a_refused_jwt_rule_at_startup_names_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = sigil_test_util::TestCa::root(wiring_support::TD);
    wiring_support::write_creds(dir.path(), &ca);
    let backend = wiring_support::echo_backend().await;
    let first = dir.path().join("peer.yaml");
    std::fs::write(&first, peer_auth("p", "STRICT")).unwrap();
    let second = dir.path().join("jwt.yaml");
    std::fs::write(
        &second,
        request_authentication("jwksUri: http://idp.example/keys"),
    )
    .unwrap();
    let config = wiring_support::config(
        dir.path(),
        backend,
        "",
        &format!(
            "files = [\"{}\", \"{}\"]",
            first.display(),
            second.display()
        ),
    );
    match sigil_proxy::start(&config).await {
        Err(RunError::Policy { file, reason }) => {
            assert!(file.ends_with("jwt.yaml"), "{file}");
            assert!(reason.contains("jwksUri"), "{reason}");
        }
        other => panic!("expected a policy error, got {other:?}"),
    }
}

#[tokio::test]
async fn shutdown_stops_the_policy_watcher() {
    let proxy = inbound(|_| allow_only(CLIENT), "").await;
    let metrics = proxy.metrics.clone();
    let policy = proxy.policy.clone();
    // The watcher is one of the daemon's tracked tasks: shutdown waits for it.
    tokio::time::timeout(std::time::Duration::from_secs(5), proxy.running.shutdown())
        .await
        .expect("shutdown completes");
    std::fs::write(&policy, DENY_ALL).unwrap();
    // A live watcher would apply this within two 50 ms intervals.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        metrics.policy_reloads("applied"),
        0,
        "no reload after shutdown"
    );
}

/// REVIEW16 H4: with `[policy] namespace = "shop"`, resources without `metadata.namespace` are
/// shop's (as `kubectl apply -n shop`): a STRICT PeerAuthentication and a DENY apply.
#[tokio::test]
async fn resources_without_namespace_apply_to_the_configured_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let ca = sigil_test_util::TestCa::root(wiring_support::TD);
    wiring_support::write_creds(dir.path(), &ca);
    let backend = wiring_support::echo_backend().await;
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default}\n\
         spec: {mtls: {mode: STRICT}}\n---\n\
         apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-admin}\n\
         spec: {action: DENY, rules: [{to: [{operation: {ports: [\"7\"]}}]}]}\n",
    )
    .unwrap();
    let d = dir.path().display();
    let text = format!(
        "trust_domain = \"{}\"\n[credentials.files]\ncert_chain = \"{d}/in.crt\"\nkey = \"{d}/in.key\"\n\
         bundle = \"{d}/in.bundle\"\n[policy]\nnamespace = \"shop\"\nfiles = [\"{}\"]\n\
         [[listeners]]\nmode = \"inbound\"\nlisten = \"127.0.0.1:0\"\ntarget = \"{backend}\"\n",
        wiring_support::TD,
        policy.display()
    );
    let config =
        sigil_proxy::ProxyConfig::load(&text, &std::collections::BTreeMap::<String, String>::new())
            .unwrap();
    let running = sigil_proxy::start(&config).await.unwrap();
    let state = running.policies().current();
    assert_eq!(state.workload.namespace, "shop");
    assert_eq!(
        state.mtls_mode(backend.port()),
        sigil_proxy::policy::MtlsMode::Strict,
        "STRICT without namespace applies to shop"
    );
    let request = |port: u16| sigil_proxy::policy::Request {
        peer: None,
        source_ip: [127, 0, 0, 1].into(),
        remote_ip: None,
        destination_ip: [127, 0, 0, 1].into(),
        destination_port: port,
        sni: None,
        http: None,
    };
    assert_eq!(
        state.authorize(&request(7)).unwrap().verdict,
        sigil_proxy::policy::Verdict::Deny,
        "DENY without namespace applies to shop"
    );
    assert_eq!(
        state.authorize(&request(8)).unwrap().verdict,
        sigil_proxy::policy::Verdict::Allow
    );
    running.shutdown().await;
}
