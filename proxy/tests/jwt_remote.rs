//! `jwksUri` keys served over HTTPS on loopback (a test CA, trusted through `JwksCache` roots):
//! fetched on the first token, shared by filters built from the same cache (a policy reload
//! does not refetch), kept when the server goes away, and failing closed (401 "Jwks remote
//! fetch is failed", Envoy's text) when no keys were ever fetched (ISSUE16 acceptance: "JWKS
//! unreachable -> fail closed").

#![expect(clippy::unwrap_used, reason = "test harness")]

mod jwt_common;

use http::StatusCode;
use jwt_common::*;
use serde_json::json;
use sigil_proxy::jwt::JwksCache;

async fn bearer_ok(f: &sigil_proxy::jwt::JwtFilter, token: &str) -> bool {
    let mut p = parts("/", &[("authorization", &format!("Bearer {token}"))]);
    matches!(f.authenticate(&mut p).await, Ok(Some(_)))
}

#[tokio::test]
async fn keys_are_fetched_once_shared_across_reloads_and_kept_when_the_server_goes() {
    let signer = Signer::new("k1");
    let server = JwksServer::start(signer.jwks()).await;
    let cache = JwksCache::new(Some(server.roots_pem.clone()));
    let yaml = remote_rule_yaml(&server.url);
    let token = signer.token(&json!({"sub": "alice"}));

    let first = build(&yaml, &cache).unwrap();
    assert_eq!(server.hits(), 0, "fetched lazily, on the first token");
    assert!(bearer_ok(&first, &token).await);
    assert_eq!(server.hits(), 1);

    // A reload builds a new filter from the same cache while the old one is in force: the
    // keys are reused, not refetched.
    let second = build(&yaml, &cache).unwrap();
    assert!(bearer_ok(&second, &token).await);
    assert!(bearer_ok(&first, &token).await);
    assert_eq!(server.hits(), 1);

    // The JWKS server goes away: the cached keys still verify (until max_age / max_stale).
    server.stop().await;
    let third = build(&yaml, &cache).unwrap();
    drop((first, second));
    assert!(bearer_ok(&third, &token).await);
    // And a forged token is still refused.
    let mut p = parts(
        "/",
        &[(
            "authorization",
            &format!(
                "Bearer {}",
                Signer::new("k1").token(&json!({"sub": "alice"}))
            ),
        )],
    );
    assert_eq!(
        third.authenticate(&mut p).await.unwrap_err().status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_unreachable_jwks_uri_with_no_cached_keys_fails_closed() {
    // A port nothing listens on any more.
    let port = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let signer = Signer::new("k1");
    let server = JwksServer::start(signer.jwks()).await; // only for its CA
    let cache = JwksCache::new(Some(server.roots_pem.clone()));
    let f = build(
        &remote_rule_yaml(&format!("https://localhost:{port}/jwks")),
        &cache,
    )
    .unwrap();
    let token = signer.token(&json!({"sub": "alice"}));
    for _ in 0..3 {
        let mut p = parts("/", &[("authorization", &format!("Bearer {token}"))]);
        let reject = f.authenticate(&mut p).await.unwrap_err();
        assert_eq!(reject.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reject.message, "Jwks remote fetch is failed");
    }
    // A token without kid too.
    let mut p = parts(
        "/",
        &[("authorization", &format!("Bearer {}", no_kid(&token)))],
    );
    let reject = f.authenticate(&mut p).await.unwrap_err();
    assert_eq!(reject.status, StatusCode::UNAUTHORIZED);
    // No token still passes to authorization (which decides via requestPrincipals).
    assert!(
        f.authenticate(&mut parts("/", &[]))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_fails_closed() {
    let signer = Signer::new("k1");
    let server = JwksServer::start(signer.jwks()).await;
    // Default (Mozilla) roots: the test CA is not trusted.
    let f = build(&remote_rule_yaml(&server.url), &JwksCache::new(None)).unwrap();
    let token = signer.token(&json!({"sub": "alice"}));
    let mut p = parts("/", &[("authorization", &format!("Bearer {token}"))]);
    let reject = f.authenticate(&mut p).await.unwrap_err();
    assert_eq!(reject.message, "Jwks remote fetch is failed");
}

/// The same token with its header's `kid` removed (signature left as is: the key lookup
/// fails before it is checked).
fn no_kid(token: &str) -> String {
    let rest = token.split_once('.').unwrap().1;
    format!("{}.{rest}", b64(br#"{"alg":"ES256","typ":"JWT"}"#))
}

#[tokio::test]
async fn the_rule_timeout_bounds_a_jwks_server_that_never_answers() {
    // Accepts TCP connections and never speaks TLS.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let yaml = format!(
        "{}    timeout: 200ms\n",
        remote_rule_yaml(&format!("https://localhost:{port}/jwks"))
    );
    let f = build(&yaml, &JwksCache::new(None)).unwrap();
    let token = Signer::new("k1").token(&json!({"sub": "alice"}));
    let mut p = parts("/", &[("authorization", &format!("Bearer {token}"))]);
    // Well under the default 5 s fetch deadline; fails closed.
    let reject = tokio::time::timeout(std::time::Duration::from_secs(4), f.authenticate(&mut p))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(reject.message, "Jwks remote fetch is failed");
}

#[test]
fn the_cache_shares_a_source_per_uri_and_timeout_while_it_is_in_use() {
    use std::sync::Arc;
    use std::time::Duration;
    let cache = JwksCache::new(None);
    let five = Duration::from_secs(5);
    let a = cache.remote("https://idp.example/jwks", five).unwrap();
    let b = cache
        .clone()
        .remote("https://idp.example/jwks", five)
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let other_timeout = cache
        .remote("https://idp.example/jwks", Duration::from_secs(1))
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &other_timeout));
    let other_uri = cache.remote("https://idp2.example/jwks", five).unwrap();
    assert!(!Arc::ptr_eq(&a, &other_uri));
    // Once no filter uses it, it is forgotten (a new one is made, fetched afresh).
    let weak = Arc::downgrade(&a);
    drop((a, b));
    assert!(weak.upgrade().is_none());
    let c = cache.remote("https://idp.example/jwks", five).unwrap();
    assert_eq!(Arc::strong_count(&c), 1);
}
