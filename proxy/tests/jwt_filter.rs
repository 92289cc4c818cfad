//! RequestAuthentication through `JwtFilter`: Istio YAML → `JwtFilter::build` → `authenticate`
//! on request parts, with keys generated at test time. Expected outcomes cite shared/POLICY.md
//! ("RequestAuthentication", "Corrections and details") or Envoy's jwt_authn behaviour.

#![expect(clippy::unwrap_used, reason = "test harness")]

mod jwt_common;

use http::StatusCode;
use jwt_common::*;
use serde_json::json;
use sigil_proxy::jwt::{JwksCache, JwtFilter};

fn rule_yaml(signer: &Signer, extra: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: ra, namespace: foo}}\nspec:\n  jwtRules:\n  - issuer: {ISS}\n    jwks: '{}'\n{extra}",
        signer.jwks()
    )
}

async fn filter(yaml: &str) -> JwtFilter {
    build(yaml, &JwksCache::new(None)).unwrap()
}

#[tokio::test]
async fn a_valid_token_gives_the_identity_and_is_stripped() {
    let signer = Signer::new("k1");
    let f = filter(&rule_yaml(&signer, "    audiences: [api.example]\n")).await;
    let token = signer.token(
        &json!({"sub": "alice", "aud": ["api.example", "other"], "azp": "web", "group": "eng"}),
    );
    let mut p = parts(
        "/x",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-other", "1"),
        ],
    );
    let id = f.authenticate(&mut p).await.unwrap().unwrap();
    assert_eq!(id.issuer, ISS);
    assert_eq!(id.subject, "alice");
    assert_eq!(id.audiences, vec!["api.example", "other"]);
    assert_eq!(id.presenter.as_deref(), Some("web"));
    assert_eq!(id.claims["group"], "eng");
    // forwardOriginalToken defaults to false: the token is stripped (POLICY.md).
    assert!(p.headers.get("authorization").is_none());
    assert_eq!(p.headers.get("x-other").unwrap(), "1");
}

#[tokio::test]
async fn an_access_token_query_parameter_is_a_default_location() {
    // POLICY.md: default locations are `Authorization: Bearer`, then `?access_token=`.
    let signer = Signer::new("k1");
    let f = filter(&rule_yaml(&signer, "")).await;
    let token = signer.token(&json!({"sub": "alice"}));
    let mut p = parts(&format!("/x?a=1&access_token={token}"), &[]);
    let id = f.authenticate(&mut p).await.unwrap().unwrap();
    assert_eq!(id.subject, "alice");
    assert_eq!(p.uri.to_string(), "/x?a=1");
}

#[tokio::test]
async fn invalid_tokens_are_401_with_envoys_messages() {
    let signer = Signer::new("k1");
    let f = filter(&rule_yaml(&signer, "")).await;
    let check = |token: String, want: &'static str| {
        let f = &f;
        async move {
            let mut p = parts("/", &[("authorization", &format!("Bearer {token}"))]);
            let reject = f.authenticate(&mut p).await.unwrap_err();
            assert_eq!(reject.status, StatusCode::UNAUTHORIZED, "{want}");
            assert_eq!(reject.message, want);
            assert!(!reject.message.contains(&token));
        }
    };
    // Bad signature: same kid, another key (the acceptance case "bad signature -> 401").
    let forger = Signer::new("k1");
    check(
        forger.token(&json!({"sub": "alice"})),
        "Jwt verification fails",
    )
    .await;
    // A signature over other claims.
    let good = signer.token(&json!({"sub": "alice"}));
    let other = signer.token(&json!({"sub": "mallory"}));
    let spliced = format!(
        "{}.{}",
        other.rsplit_once('.').unwrap().0,
        good.rsplit_once('.').unwrap().1
    );
    check(spliced, "Jwt verification fails").await;
    // Expired beyond the 60 s leeway (acceptance case "expired -> 401").
    check(
        signer.token(&json!({"sub": "alice", "exp": now() - 3600})),
        "Jwt is expired",
    )
    .await;
    check(
        signer.token(&json!({"sub": "alice", "nbf": now() + 3600})),
        "Jwt not yet valid",
    )
    .await;
    // An unknown kid.
    check(
        Signer::new("k2").token(&json!({"sub": "alice"})),
        "Jwks doesn't have key to match kid or alg from Jwt",
    )
    .await;
    // A token whose issuer no rule has (Envoy JwtUnknownIssuer).
    check(
        signer.token(&json!({"iss": "https://other.example", "sub": "alice"})),
        "Jwt issuer is not configured",
    )
    .await;
    check(
        "not-a-jwt".to_owned(),
        "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
    )
    .await;
    // Larger than the validator's bound (16 KiB), signed and otherwise valid.
    check(
        signer.token(&json!({"sub": "alice", "pad": "x".repeat(20_000)})),
        "Jwt verification fails",
    )
    .await;
    // alg none.
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        good.split('.').nth(1).unwrap()
    );
    check(unsigned, "Jwt verification fails").await;
}

#[tokio::test]
async fn audience_not_allowed_is_403() {
    // POLICY.md "Corrections": a wrong or missing audience -> 403.
    let signer = Signer::new("k1");
    let f = filter(&rule_yaml(
        &signer,
        "    audiences: [https://api.example/]\n",
    ))
    .await;
    for claims in [
        json!({"sub": "a", "aud": "other"}),
        json!({"sub": "a", "aud": ["x", "y"]}),
        json!({"sub": "a"}),
    ] {
        let mut p = parts(
            "/",
            &[(
                "authorization",
                &format!("Bearer {}", signer.token(&claims)),
            )],
        );
        let reject = f.authenticate(&mut p).await.unwrap_err();
        assert_eq!(reject.status, StatusCode::FORBIDDEN, "{claims}");
        assert_eq!(reject.message, "Audiences in Jwt are not allowed");
    }
    // Envoy ignores the scheme and a trailing '/' when comparing audiences.
    let mut p = parts(
        "/",
        &[(
            "authorization",
            &format!(
                "Bearer {}",
                signer.token(&json!({"sub": "a", "aud": "api.example"}))
            ),
        )],
    );
    assert!(f.authenticate(&mut p).await.unwrap().is_some());
    // Empty audiences accept any aud (POLICY.md "Corrections").
    let any = filter(&rule_yaml(&signer, "")).await;
    let mut p = parts(
        "/",
        &[(
            "authorization",
            &format!(
                "Bearer {}",
                signer.token(&json!({"sub": "a", "aud": "whatever"}))
            ),
        )],
    );
    assert!(any.authenticate(&mut p).await.unwrap().is_some());
}

#[tokio::test]
async fn no_token_passes_without_identity() {
    // POLICY.md: "a request with no token is accepted without identity".
    let signer = Signer::new("k1");
    let f = filter(&rule_yaml(&signer, "")).await;
    for headers in [
        vec![],
        vec![("authorization", "Basic dXNlcjpwdw==")],
        // The prefix is case-sensitive: another scheme is simply no token.
        vec![("authorization", "bearer x.y.z")],
    ] {
        let mut p = parts("/x?access_tokenx=1", &headers);
        assert!(f.authenticate(&mut p).await.unwrap().is_none());
    }
    assert!(
        JwtFilter::none()
            .authenticate(&mut parts("/", &[("authorization", "Bearer x")]))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn from_headers_with_prefix_replaces_the_default_locations() {
    // POLICY.md "Corrections": defaults are replaced as soon as a location is set; a value
    // without the prefix gives no token; the prefix may appear anywhere.
    let signer = Signer::new("k1");
    let f = filter(&rule_yaml(
        &signer,
        "    fromHeaders: [{name: x-jwt-assertion, prefix: 'Token '}]\n",
    ))
    .await;
    let token = signer.token(&json!({"sub": "alice"}));
    let mut p = parts("/", &[("x-jwt-assertion", &format!("v1 Token {token}"))]);
    assert_eq!(
        f.authenticate(&mut p).await.unwrap().unwrap().subject,
        "alice"
    );
    assert!(p.headers.get("x-jwt-assertion").is_none());
    // Without the prefix: no token.
    let mut p = parts("/", &[("x-jwt-assertion", token.as_str())]);
    assert!(f.authenticate(&mut p).await.unwrap().is_none());
    // The default location is no longer read: a Bearer token there is ignored (and kept).
    let mut p = parts("/", &[("authorization", &format!("Bearer {token}"))]);
    assert!(f.authenticate(&mut p).await.unwrap().is_none());
    assert!(p.headers.get("authorization").is_some());
}

#[tokio::test]
async fn from_params_reads_and_strips_the_parameter() {
    let signer = Signer::new("k1");
    let f = filter(&rule_yaml(&signer, "    fromParams: [my_token]\n")).await;
    let token = signer.token(&json!({"sub": "alice"}));
    let mut p = parts(&format!("/p?x=1&my_token={token}&y=2"), &[]);
    assert_eq!(
        f.authenticate(&mut p).await.unwrap().unwrap().subject,
        "alice"
    );
    assert_eq!(p.uri.to_string(), "/p?x=1&y=2");
    // access_token is not a location any more.
    let mut p = parts(&format!("/p?access_token={token}"), &[]);
    assert!(f.authenticate(&mut p).await.unwrap().is_none());
}

#[tokio::test]
async fn from_cookies_reads_and_strips_the_cookie() {
    let signer = Signer::new("k1");
    let f = filter(&rule_yaml(&signer, "    fromCookies: [session]\n")).await;
    let token = signer.token(&json!({"sub": "alice"}));
    let mut p = parts("/", &[("cookie", &format!("a=1; session={token}"))]);
    assert_eq!(
        f.authenticate(&mut p).await.unwrap().unwrap().subject,
        "alice"
    );
    assert_eq!(p.headers.get("cookie").unwrap(), "a=1");
}

#[tokio::test]
async fn forward_original_token_keeps_it() {
    let signer = Signer::new("k1");
    let f = filter(&rule_yaml(&signer, "    forwardOriginalToken: true\n")).await;
    let bearer = format!("Bearer {}", signer.token(&json!({"sub": "alice"})));
    let mut p = parts("/", &[("authorization", &bearer)]);
    assert!(f.authenticate(&mut p).await.unwrap().is_some());
    assert_eq!(p.headers.get("authorization").unwrap(), bearer.as_str());
}

#[tokio::test]
async fn payload_and_claims_go_to_headers_and_client_copies_are_removed() {
    let signer = Signer::new("k1");
    let f = filter(&rule_yaml(
        &signer,
        "    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - {header: x-sub, claim: sub}\n    - {header: x-level, claim: level}\n    - {header: x-admin, claim: admin}\n    - {header: x-team, claim: org.team}\n    - {header: x-groups, claim: groups}\n",
    ))
    .await;
    let token = signer.token(&json!({"sub": "alice", "level": 3, "admin": false, "org": {"team": "core"}, "groups": ["a"]}));
    let spoofed = [
        ("x-jwt-payload", "forged"),
        ("x-sub", "root"),
        ("x-sub", "root2"),
        ("x-groups", "admins"),
    ];
    let mut headers = spoofed.to_vec();
    let bearer = format!("Bearer {token}");
    headers.push(("authorization", &bearer));
    let mut p = parts("/", &headers);
    f.authenticate(&mut p).await.unwrap().unwrap();
    // Envoy forwards the token's payload segment (base64url, unpadded).
    assert_eq!(
        p.headers.get("x-jwt-payload").unwrap(),
        token.split('.').nth(1).unwrap()
    );
    let one = |name: &str| {
        let values: Vec<_> = p.headers.get_all(name).iter().collect();
        assert!(values.len() <= 1, "{name}: {values:?}");
        values.first().map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(one("x-sub").as_deref(), Some("alice"));
    assert_eq!(one("x-level").as_deref(), Some("3"));
    assert_eq!(one("x-admin").as_deref(), Some("false"));
    assert_eq!(one("x-team").as_deref(), Some("core"));
    // A list claim is not written, and the client's copy is gone.
    assert_eq!(one("x-groups"), None);

    // Without a token, the client's copies are removed too.
    let mut p = parts("/", &spoofed);
    assert!(f.authenticate(&mut p).await.unwrap().is_none());
    for (name, _) in spoofed {
        assert!(p.headers.get(name).is_none(), "{name}");
    }
}

#[tokio::test]
async fn every_token_present_must_be_valid() {
    // Envoy authenticator.cc: "If a request has multiple tokens, all of them must be valid".
    let signer = Signer::new("k1");
    let f = filter(&rule_yaml(&signer, "")).await;
    let good = signer.token(&json!({"sub": "alice"}));
    let bad = Signer::new("k1").token(&json!({"sub": "mallory"}));
    let mut p = parts(
        &format!("/?access_token={bad}"),
        &[("authorization", &format!("Bearer {good}"))],
    );
    assert_eq!(
        f.authenticate(&mut p).await.unwrap_err().status,
        StatusCode::UNAUTHORIZED
    );
    // Each value of a repeated header is a token (Envoy extractor.cc): a forged second value
    // is refused too.
    let mut p = parts(
        "/",
        &[
            ("authorization", &format!("Bearer {good}")),
            ("authorization", &format!("Bearer {bad}")),
        ],
    );
    assert_eq!(
        f.authenticate(&mut p).await.unwrap_err().status,
        StatusCode::UNAUTHORIZED
    );
    // Two valid tokens: accepted, the header's identity first.
    let other = signer.token(&json!({"sub": "bob"}));
    let mut p = parts(
        &format!("/?access_token={other}"),
        &[("authorization", &format!("Bearer {good}"))],
    );
    assert_eq!(
        f.authenticate(&mut p).await.unwrap().unwrap().subject,
        "alice"
    );
    assert_eq!(p.uri.to_string(), "/");
}

#[tokio::test]
async fn every_repeated_access_token_parameter_and_cookie_must_be_valid() {
    // REVIEW16 L4: with forwardOriginalToken the app receives every copy, so a second,
    // unvalidated `?access_token=` (or cookie) must not pass behind a valid first one.
    let signer = Signer::new("k1");
    let good = signer.token(&json!({"sub": "alice"}));
    let forged = Signer::new("k1").token(&json!({"sub": "admin"}));
    let f = filter(&rule_yaml(&signer, "    forwardOriginalToken: true\n")).await;
    for uri in [
        format!("/?access_token={good}&access_token={forged}"),
        format!("/?access_token={good}&access_token=garbage"),
    ] {
        let mut p = parts(&uri, &[]);
        assert_eq!(
            f.authenticate(&mut p).await.unwrap_err().status,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
    }
    // The same valid token twice is fine, and both copies are forwarded as asked.
    let uri = format!("/?access_token={good}&access_token={good}");
    let mut p = parts(&uri, &[]);
    assert_eq!(
        f.authenticate(&mut p).await.unwrap().unwrap().subject,
        "alice"
    );
    assert_eq!(p.uri.to_string(), uri);

    let f = filter(&rule_yaml(
        &signer,
        "    fromCookies: [session]\n    forwardOriginalToken: true\n",
    ))
    .await;
    let mut p = parts(
        "/",
        &[
            ("cookie", &format!("session={good}")),
            ("cookie", &format!("session={forged}")),
        ],
    );
    assert_eq!(
        f.authenticate(&mut p).await.unwrap_err().status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn rules_of_several_policies_route_by_issuer_and_location() {
    let a = Signer::new("a");
    let b = Signer::new("b");
    let yaml = format!(
        "{}---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: rb, namespace: foo}}\nspec:\n  jwtRules:\n  - issuer: https://b.example\n    jwks: '{}'\n    fromHeaders: [{{name: x-b-token}}]\n",
        rule_yaml(&a, ""),
        b.jwks()
    );
    let f = filter(&yaml).await;
    let tb = b.token(&json!({"iss": "https://b.example", "sub": "bob"}));
    let mut p = parts("/", &[("x-b-token", tb.as_str())]);
    assert_eq!(
        f.authenticate(&mut p).await.unwrap().unwrap().issuer,
        "https://b.example"
    );
    // b's token at a's location: that location is not configured for issuer b (Envoy
    // `isIssuerAllowed`).
    let mut p = parts("/", &[("authorization", &format!("Bearer {tb}"))]);
    let reject = f.authenticate(&mut p).await.unwrap_err();
    assert_eq!(reject.message, "Jwt issuer is not configured");
}

#[test]
fn build_refuses_bad_rules_naming_the_field() {
    let signer = Signer::new("k1");
    let cache = JwksCache::new(None);
    let cases: &[(&str, &str)] = &[
        (
            "    fromHeaders: [{name: ''}]\n",
            "spec.jwtRules[0].fromHeaders[0].name",
        ),
        (
            "    fromHeaders: [{name: 'bad header'}]\n",
            "fromHeaders[0].name",
        ),
        ("    fromParams: ['']\n", "fromParams[0]"),
        ("    fromCookies: ['']\n", "fromCookies[0]"),
        (
            "    outputPayloadToHeader: 'a b'\n",
            "outputPayloadToHeader",
        ),
        (
            "    outputPayloadToHeader: content-length\n",
            "outputPayloadToHeader",
        ),
        (
            "    outputClaimToHeaders: [{header: host, claim: sub}]\n",
            "outputClaimToHeaders[0].header",
        ),
        (
            "    outputClaimToHeaders: [{header: x-a, claim: ''}]\n",
            "outputClaimToHeaders[0].claim",
        ),
        (
            "    outputClaimToHeaders: [{header: authorization, claim: sub}]\n",
            "outputClaimToHeaders[0].header",
        ),
        ("    audiences: ['']\n", "audiences[0]"),
        ("    timeout: soon\n", "timeout"),
        ("    timeout: 0s\n", "timeout"),
        ("    timeout: 10m\n", "timeout"),
    ];
    for (extra, field) in cases {
        let err = build(&rule_yaml(&signer, extra), &cache)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("foo/ra") && err.contains(field),
            "{extra}: {err}"
        );
    }
    for ok in ["1.5s", "5s", "500ms"] {
        build(&rule_yaml(&signer, &format!("    timeout: {ok}\n")), &cache).unwrap();
    }
    // Fields whose refusal the YAML loader does not cover: mutate a loaded rule.
    let docs = docs(&rule_yaml(&signer, ""));
    let with = |edit: &dyn Fn(&mut sigil_proxy::policy::model::JwtRule)| {
        let mut ra = docs.request[0].clone();
        edit(&mut ra.spec.jwt_rules[0]);
        JwtFilter::build(&[&ra], &cache).unwrap_err().to_string()
    };
    let e = with(&|r| r.jwks = Some("{\"keys\": 1}".into()));
    assert!(e.contains("spec.jwtRules[0].jwks"), "{e}");
    let e = with(&|r| r.jwks = Some(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.into()));
    assert!(e.contains("jwks"), "{e}");
    let e = with(&|r| r.jwks = None);
    assert!(e.contains("jwksUri") && e.contains("OIDC"), "{e}");
    let e = with(&|r| r.jwks_uri = Some("https://idp.example/jwks".into()));
    assert!(e.contains("only one"), "{e}");
    let e = with(&|r| {
        r.jwks = None;
        r.jwks_uri = Some("http://idp.example/jwks".into());
    });
    assert!(e.contains("jwksUri") && e.contains("https"), "{e}");
    let e = with(&|r| r.issuer = String::new());
    assert!(e.contains("issuer"), "{e}");
}
