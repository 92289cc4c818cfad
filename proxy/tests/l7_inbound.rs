//! L7 inbound: one decision per request with the Istio engine, 403 bodies,
//! path normalization forwarded, `%00` and lowercase methods refused, XFCC
//! set by the proxy only, hop-by-hop headers, upstream failures, pooling,
//! JWT rejections (401) ahead of the decision.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers outside #[test] fns: a failure here is a test failure"
)]

mod jwt_common;
mod l7_support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use l7_support::*;
use sigil_proxy::HttpConfig;

const DENY_ADMIN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin", "/admin/*"]
"#;

const ALLOW_CLIENT_GET_PUBLIC: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: default}
spec:
  selector: {matchLabels: {app: server}}
  rules:
  - from:
    - source:
        principals: ["example.org/ns/default/sa/client"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/public/*"]
"#;

async fn inbound(yaml: &str, peer: Option<&str>) -> (App, Front, sigil_proxy::ProxyMetrics) {
    let app = App::start().await;
    let (svc, metrics) = service_with(yaml, &HttpConfig::default());
    let front = Front::inbound(svc, app.addr, peer).await;
    (app, front, metrics)
}

#[tokio::test]
async fn an_allowed_request_reaches_the_app_and_its_answer_comes_back() {
    let (app, front, metrics) = inbound("", Some(CLIENT_ID)).await;
    let answer = get(front.addr, "/hello?x=1").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "GET /hello?x=1");
    let seen = app.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["host"], "app.example");
    assert_eq!(seen[0].version, http::Version::HTTP_11);
    assert_eq!(metrics.requests("inbound", "allow"), 1);
}

#[tokio::test]
async fn a_denied_request_gets_istios_403_and_never_reaches_the_app() {
    let (app, front, metrics) = inbound(DENY_ADMIN, Some(CLIENT_ID)).await;
    let answer = get(front.addr, "/admin").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.body, "RBAC: access denied");
    // The same connection keeps deciding per request.
    let mut send = h1(front.addr).await;
    let denied = send_h1(&mut send, request("GET", "/admin/users")).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let allowed = send_h1(&mut send, request("GET", "/index")).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(app.seen().len(), 1, "only /index reached the app");
    assert_eq!(metrics.requests("inbound", "deny"), 2);
    assert_eq!(metrics.requests("inbound", "allow"), 1);
}

#[tokio::test]
async fn the_path_is_normalized_before_matching_and_forwarded_normalized() {
    let (app, front, _) = inbound(DENY_ADMIN, Some(CLIENT_ID)).await;
    // Dot segments, encoded dots and encoded unreserved characters all
    // reach the DENY on /admin (Istio's BASE normalization).
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin/x",
        "/%61dmin",
        "/./admin",
    ] {
        let answer = raw(
            front.addr,
            format!("GET {target} HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
    }
    assert!(app.seen().is_empty());
    // An allowed request is forwarded with the path that was authorized.
    let answer = get(front.addr, "/public/./a/../b?q=/../admin").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(app.seen()[0].target, "/public/b?q=/../admin");
    // `%2F` stays encoded (so it is not /admin/x).
    assert_eq!(get(front.addr, "/admin%2Fx").await.status, StatusCode::OK);
    assert_eq!(app.seen()[1].target, "/admin%2Fx");
}

#[tokio::test]
async fn an_encoded_nul_in_the_path_is_400_before_any_policy() {
    let (app, front, metrics) = inbound("", Some(CLIENT_ID)).await;
    let answer = raw(
        front.addr,
        b"GET /a%00b HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(app.seen().is_empty());
    assert_eq!(metrics.requests("inbound", "bad_request"), 1);
}

#[tokio::test]
async fn a_lowercase_method_is_400_on_http1() {
    let (app, front, _) = inbound("", Some(CLIENT_ID)).await;
    let answer = raw(
        front.addr,
        b"get / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(app.seen().is_empty());
}

#[tokio::test]
async fn principals_methods_and_paths_decide_per_request() {
    let (app, front, _) = inbound(ALLOW_CLIENT_GET_PUBLIC, Some(CLIENT_ID)).await;
    assert_eq!(get(front.addr, "/public/a").await.status, StatusCode::OK);
    assert_eq!(
        get(front.addr, "/private").await.status,
        StatusCode::FORBIDDEN
    );
    let mut send = h1(front.addr).await;
    let post = send_h1(&mut send, request("POST", "/public/a")).await;
    assert_eq!(post.status, StatusCode::FORBIDDEN);
    assert_eq!(app.seen().len(), 1);

    // Another identity, and plaintext, are denied by the same ALLOW.
    let (app, other, _) = inbound(
        ALLOW_CLIENT_GET_PUBLIC,
        Some("spiffe://example.org/ns/default/sa/other"),
    )
    .await;
    assert_eq!(
        get(other.addr, "/public/a").await.status,
        StatusCode::FORBIDDEN
    );
    let (_, plaintext, _) = inbound(ALLOW_CLIENT_GET_PUBLIC, None).await;
    assert_eq!(
        get(plaintext.addr, "/public/a").await.status,
        StatusCode::FORBIDDEN
    );
    assert!(app.seen().is_empty());
}

#[tokio::test]
async fn a_spoofed_xfcc_is_replaced_by_the_verified_peer() {
    let (app, front, _) = inbound("", Some(CLIENT_ID)).await;
    let mut send = h1(front.addr).await;
    let mut req = request("GET", "/");
    req.headers_mut().insert(
        "x-forwarded-client-cert",
        "By=spiffe://example.org/ns/default/sa/server;URI=spiffe://example.org/ns/admin/sa/root"
            .parse()
            .unwrap(),
    );
    assert_eq!(send_h1(&mut send, req).await.status, StatusCode::OK);
    let seen = app.seen();
    let xfcc: Vec<_> = seen[0]
        .headers
        .get_all("x-forwarded-client-cert")
        .iter()
        .collect();
    assert_eq!(xfcc, [&format!("URI={CLIENT_ID}")]);

    // Plaintext: no identity, so no XFCC at all.
    let (app, plaintext, _) = inbound("", None).await;
    let mut send = h1(plaintext.addr).await;
    let mut req = request("GET", "/");
    req.headers_mut().insert(
        "x-forwarded-client-cert",
        "URI=spiffe://evil".parse().unwrap(),
    );
    assert_eq!(send_h1(&mut send, req).await.status, StatusCode::OK);
    assert!(
        !app.seen()[0]
            .headers
            .contains_key("x-forwarded-client-cert")
    );
}

#[tokio::test]
async fn a_policy_on_xfcc_cannot_be_satisfied_by_a_client_supplied_header() {
    let policy = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-xfcc, namespace: default}
spec:
  rules:
  - when:
    - key: request.headers[x-forwarded-client-cert]
      values: ["*"]
"#;
    let (app, front, _) = inbound(policy, None).await;
    let mut send = h1(front.addr).await;
    let mut req = request("GET", "/");
    req.headers_mut().insert(
        "x-forwarded-client-cert",
        "URI=spiffe://evil".parse().unwrap(),
    );
    assert_eq!(send_h1(&mut send, req).await.status, StatusCode::FORBIDDEN);
    assert!(app.seen().is_empty());
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let (app, front, _) = inbound("", Some(CLIENT_ID)).await;
    let mut send = h1(front.addr).await;
    let mut req = request("GET", "/");
    let h = req.headers_mut();
    h.insert("connection", "x-private".parse().unwrap());
    h.insert("x-private", "1".parse().unwrap());
    h.insert("keep-alive", "timeout=5".parse().unwrap());
    h.insert("upgrade", "websocket".parse().unwrap());
    h.insert("x-kept", "1".parse().unwrap());
    assert_eq!(send_h1(&mut send, req).await.status, StatusCode::OK);
    let seen = &app.seen()[0].headers;
    for gone in ["x-private", "keep-alive", "upgrade"] {
        assert!(!seen.contains_key(gone), "{gone} forwarded");
    }
    assert_eq!(seen["x-kept"], "1");
}

#[tokio::test]
async fn bodies_stream_both_ways_and_their_bytes_are_counted() {
    let (_, front, metrics) = inbound("", Some(CLIENT_ID)).await;
    let mut send = h1(front.addr).await;
    let body: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let req = Request::post("/echo")
        .header("host", "a")
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    send.ready().await.unwrap();
    let response = send.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let got = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(got.len(), body.len());
    assert!(got == body);
    // proxy_bytes holds for HTTP listeners too: the downstream connection's
    // bytes (heads and bodies), by flow.
    let len = body.len() as u64;
    for flow in ["received", "sent"] {
        let counted = metrics.bytes("inbound", flow);
        assert!(
            (len..len + 1024).contains(&counted),
            "{flow}: {counted} for a {len}-byte body"
        );
        assert_eq!(metrics.bytes("outbound", flow), 0);
    }
}

#[tokio::test]
async fn upstream_connections_are_pooled_across_client_connections() {
    let (app, front, _) = inbound("", Some(CLIENT_ID)).await;
    for i in 0..10 {
        let answer = get(front.addr, &format!("/n{i}")).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(app.seen().len(), 10);
    assert_eq!(
        app.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "sequential requests reuse one kept-alive upstream connection"
    );
}

#[tokio::test]
async fn an_unreachable_app_is_503_and_a_slow_one_504() {
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (svc, metrics) = service_with("", &HttpConfig::default());
    let front = Front::inbound(svc, closed, Some(CLIENT_ID)).await;
    let answer = get(front.addr, "/").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(metrics.requests("inbound", "allow"), 1);

    let app = App::start().await;
    let config = HttpConfig {
        request_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    };
    let (svc, _) = service_with("", &config);
    let front = Front::inbound(svc, app.addr, Some(CLIENT_ID)).await;
    let answer = get(front.addr, "/never").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    // The connection and the proxy still serve.
    assert_eq!(get(front.addr, "/").await.status, StatusCode::OK);
}

fn jwt_policy(signer: &jwt_common::Signer) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: ra, namespace: default}}
spec:
  jwtRules:
  - issuer: {iss}
    jwks: '{jwks}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-alice, namespace: default}}
spec:
  rules:
  - from:
    - source:
        requestPrincipals: ["{iss}/alice"]
"#,
        iss = jwt_common::ISS,
        jwks = signer.jwks()
    )
}

fn with_token(target: &str, token: &str) -> Request<Full<Bytes>> {
    let mut req = request("GET", target);
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

#[tokio::test]
async fn jwt_authentication_runs_before_the_decision() {
    let signer = jwt_common::Signer::new("k1");
    let (app, front, metrics) = inbound(&jwt_policy(&signer), Some(CLIENT_ID)).await;
    let mut send = h1(front.addr).await;

    // A valid token for the required principal: allowed, token stripped
    // (forwardOriginalToken defaults to false).
    let alice = signer.token(&serde_json::json!({"sub": "alice"}));
    let ok = send_h1(&mut send, with_token("/a", &alice)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(!app.seen()[0].headers.contains_key("authorization"));

    // Another subject, or no token at all: the requestPrincipals ALLOW denies.
    let bob = signer.token(&serde_json::json!({"sub": "bob"}));
    let denied = send_h1(&mut send, with_token("/b", &bob)).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.body, "RBAC: access denied");
    assert_eq!(
        send_h1(&mut send, request("GET", "/c")).await.status,
        StatusCode::FORBIDDEN
    );

    // A token signed by another key: 401 before any policy.
    let forged = jwt_common::Signer::new("k1").token(&serde_json::json!({"sub": "alice"}));
    let rejected = send_h1(&mut send, with_token("/d", &forged)).await;
    assert_eq!(rejected.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.seen().len(),
        1,
        "only the valid request reached the app"
    );
    assert_eq!(metrics.requests("inbound", "allow"), 1);
    assert_eq!(metrics.requests("inbound", "deny"), 2);
    assert_eq!(metrics.requests("inbound", "unauthenticated"), 1);
}

#[tokio::test]
async fn grpc_goes_to_the_app_over_http2_with_its_trailers() {
    let (app, front, _) = inbound("", Some(CLIENT_ID)).await;
    let mut send = h2c(front.addr).await;
    let req = Request::post("http://app.example/pkg.Svc/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap();
    let response = send.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let collected = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
    let seen = app.seen();
    assert_eq!(seen[0].version, http::Version::HTTP_2);
    assert_eq!(seen[0].target, "/pkg.Svc/Method");
    assert_eq!(seen[0].headers["te"], "trailers");

    // Plain HTTP/2 requests still reach the app over HTTP/1.1.
    let req = Request::get("http://app.example/plain")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        answer(send.send_request(req).await.unwrap()).await.status,
        StatusCode::OK
    );
    assert_eq!(app.seen()[1].version, http::Version::HTTP_11);
}

#[tokio::test]
async fn a_websocket_upgrade_is_authorized_then_joined() {
    let (app, front, _) = inbound(DENY_ADMIN, Some(CLIENT_ID)).await;
    let (head, mut ws) = websocket(front.addr).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    assert_eq!(echo(&mut ws, b"ping").await, b"ping");
    assert_eq!(echo(&mut ws, &[0u8; 100_000]).await, vec![0u8; 100_000]);
    let seen = app.seen();
    assert_eq!(seen[0].headers["upgrade"], "websocket");
    assert_eq!(seen[0].headers["sec-websocket-version"], "13");

    // A denied upgrade is a plain 403.
    let denied = raw(
        front.addr,
        b"GET /admin HTTP/1.1\r\nhost: a\r\nconnection: upgrade, close\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
}

#[tokio::test]
async fn only_websocket_upgrades_become_tunnels() {
    let (app, front, metrics) = inbound("", Some(CLIENT_ID)).await;
    // h2c: stripped (as Envoy's HTTP/1 codec), served as a plain request.
    let h2c = raw(
        front.addr,
        b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: Upgrade, HTTP2-Settings, close\r\n\
          upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert!(h2c.starts_with("HTTP/1.1 200"), "{h2c}");
    assert!(h2c.ends_with("GET /ws"), "{h2c}");
    let seen = app.seen();
    assert_eq!(seen.len(), 1);
    for gone in ["upgrade", "http2-settings"] {
        assert!(!seen[0].headers.contains_key(gone), "{gone} forwarded");
    }
    // Anything else: 403 before the application (Envoy's upgrade_failed).
    for upgrade in ["foo", "websocket, foo", "TLS/1.0"] {
        let refused = raw(
            front.addr,
            format!(
                "GET /ws HTTP/1.1\r\nhost: a\r\nconnection: upgrade, close\r\nupgrade: {upgrade}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert!(refused.starts_with("HTTP/1.1 403"), "{upgrade}: {refused}");
    }
    assert_eq!(app.seen().len(), 1);
    assert_eq!(metrics.requests("inbound", "deny"), 3);
}

const DENY_ADMIN_HOST: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin-host, namespace: default}
spec:
  action: DENY
  rules:
  - to:
    - operation:
        hosts: ["admin.example"]
"#;

#[tokio::test]
async fn repeated_or_disagreeing_host_headers_are_400_before_policy() {
    let (app, front, metrics) = inbound(DENY_ADMIN_HOST, Some(CLIENT_ID)).await;
    let cases: [&[u8]; 4] = [
        // The DENY matched the first Host; a framework may take the last.
        b"GET / HTTP/1.1\r\nhost: ok.example\r\nhost: admin.example\r\nconnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: ok.example\r\nhost: ok.example\r\nconnection: close\r\n\r\n",
        // Absolute-form wins over Host for the policy; the app may read Host.
        b"GET http://ok.example/ HTTP/1.1\r\nhost: admin.example\r\nconnection: close\r\n\r\n",
        // RFC 9112 section 3.2: HTTP/1.1 needs a Host.
        b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n",
    ];
    for case in cases {
        let answer = raw(front.addr, case).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{}: {answer}",
            String::from_utf8_lossy(case)
        );
    }
    // HTTP/2: a `host` that disagrees with `:authority`.
    let mut send = h2c(front.addr).await;
    let req = Request::get("http://ok.example/")
        .header("host", "admin.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answered = answer(send.send_request(req).await.unwrap()).await;
    assert_eq!(answered.status, StatusCode::BAD_REQUEST);
    assert!(app.seen().is_empty(), "{:?}", app.seen());
    assert_eq!(metrics.requests("inbound", "bad_request"), 5);
    assert_eq!(metrics.requests("inbound", "allow"), 0);
}

#[tokio::test]
async fn the_app_gets_exactly_the_host_the_policy_matched() {
    let (app, front, _) = inbound(DENY_ADMIN_HOST, Some(CLIENT_ID)).await;
    // Absolute-form with a matching Host (ASCII case aside), and without one.
    for case in [
        &b"GET http://ok.example/a HTTP/1.1\r\nhost: OK.example\r\nconnection: close\r\n\r\n"[..],
        b"GET http://ok.example/b HTTP/1.1\r\nconnection: close\r\n\r\n",
    ] {
        let answer = raw(front.addr, case).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let mut send = h2c(front.addr).await;
    let req = Request::get("http://ok.example/c")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        answer(send.send_request(req).await.unwrap()).await.status,
        StatusCode::OK
    );
    let denied = raw(
        front.addr,
        b"GET http://admin.example/ HTTP/1.1\r\nhost: admin.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    let seen = app.seen();
    assert_eq!(seen.len(), 3);
    for request in seen {
        let hosts: Vec<_> = request.headers.get_all("host").iter().collect();
        assert_eq!(hosts, ["ok.example"], "{}", request.target);
    }
}
