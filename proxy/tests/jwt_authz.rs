//! RequestAuthentication with AuthorizationPolicy: the JWT filter's identity feeds the engine's
//! `requestPrincipals` (ISSUE16 acceptance: "missing token with a requestPrincipals policy ->
//! 403"; POLICY.md: "Requiring a token needs an AuthorizationPolicy with
//! `requestPrincipals: ["*"]`").

#![expect(clippy::unwrap_used, reason = "test harness")]

mod jwt_common;

use http::StatusCode;
use jwt_common::*;
use serde_json::json;
use sigil_proxy::jwt::{JwksCache, JwtFilter};
use sigil_proxy::policy::{
    Authorizer, DEFAULT_ROOT_NAMESPACE, HttpRequest, PathNormalization, Request, Verdict,
};

fn policies(signer: &Signer) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: ra, namespace: foo}}\nspec:\n  jwtRules:\n  - issuer: {ISS}\n    jwks: '{}'\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: require-jwt, namespace: foo}}\nspec:\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"{ISS}/alice\"]\n",
        signer.jwks()
    )
}

/// What the HTTP layer does: authenticate, then authorize with the identity.
async fn decide(
    filter: &JwtFilter,
    authorizer: &Authorizer,
    headers: &[(&str, &str)],
) -> Result<Verdict, StatusCode> {
    let mut p = parts("/data", headers);
    let auth = filter.authenticate(&mut p).await.map_err(|r| r.status)?;
    let request = Request {
        peer: None,
        source_ip: "10.0.0.1".parse().unwrap(),
        remote_ip: None,
        destination_ip: "10.0.0.2".parse().unwrap(),
        destination_port: 8080,
        sni: None,
        http: Some(HttpRequest {
            method: p.method.to_string(),
            path: p.uri.to_string(),
            host: "svc".into(),
            headers: Vec::new(),
            auth,
        }),
    };
    Ok(authorizer.evaluate(&workload(), &request).unwrap().verdict)
}

#[tokio::test]
async fn request_principals_decide_on_the_jwt_identity() {
    let signer = Signer::new("k1");
    let yaml = policies(&signer);
    let docs = docs(&yaml);
    let filter = build(&yaml, &JwksCache::new(None)).unwrap();
    let authorizer = Authorizer::new(
        docs.authorization.clone(),
        DEFAULT_ROOT_NAMESPACE,
        PathNormalization::Base,
    );
    let bearer = |sub: &str| format!("Bearer {}", signer.token(&json!({"sub": sub})));

    // No token: authentication passes, the ALLOW policy does not match -> denied (403).
    assert_eq!(decide(&filter, &authorizer, &[]).await, Ok(Verdict::Deny));
    // alice's valid token: allowed.
    assert_eq!(
        decide(&filter, &authorizer, &[("authorization", &bearer("alice"))]).await,
        Ok(Verdict::Allow)
    );
    // A valid token for someone else: denied by authorization.
    assert_eq!(
        decide(&filter, &authorizer, &[("authorization", &bearer("bob"))]).await,
        Ok(Verdict::Deny)
    );
    // A forged token claiming alice: 401 before authorization.
    let forged = format!(
        "Bearer {}",
        Signer::new("k1").token(&json!({"sub": "alice"}))
    );
    assert_eq!(
        decide(&filter, &authorizer, &[("authorization", &forged)]).await,
        Err(StatusCode::UNAUTHORIZED)
    );
}

/// A RequestAuthentication (with `extra` in its jwtRule) and a DENY on `request.auth.claims[claim]`
/// with value `banned`.
fn deny_claim_policies(signer: &Signer, extra: &str, claim: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: ra, namespace: foo}}\nspec:\n  jwtRules:\n  - issuer: {ISS}\n    jwks: '{}'\n{extra}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: deny-claim, namespace: foo}}\nspec:\n  action: DENY\n  rules:\n  - when:\n    - key: request.auth.claims[{claim}]\n      values: [\"banned\"]\n",
        signer.jwks()
    )
}

#[tokio::test]
async fn space_delimited_claims_match_each_part() {
    // REVIEW16 H5 / POLICY.md: `scope`, `permission` and the rule's `spaceDelimitedClaims` are
    // split on spaces (Envoy normalize_payload_in_metadata), so a DENY on one part fires.
    let signer = Signer::new("k1");
    let cases = [
        // (jwtRule extra, claim, its value in the token, denied)
        ("", "scope", json!("read banned"), true),
        ("", "permission", json!("banned  write"), true),
        ("", "scope", json!("read write"), false),
        (
            "    spaceDelimitedClaims: [roles]\n",
            "roles",
            json!("user banned"),
            true,
        ),
        (
            "    spaceDelimitedClaims: [roles]\n",
            "roles",
            json!("user"),
            false,
        ),
        // Not listed: the whole string is the value.
        ("", "roles", json!("user banned"), false),
        ("", "roles", json!("banned"), true),
        // A list claim matches element-wise anyway.
        (
            "    spaceDelimitedClaims: [roles]\n",
            "roles",
            json!(["banned"]),
            true,
        ),
    ];
    for (extra, claim, value, denied) in cases {
        let yaml = deny_claim_policies(&signer, extra, claim);
        let docs = docs(&yaml);
        let filter = build(&yaml, &JwksCache::new(None)).unwrap();
        let authorizer = Authorizer::new(
            docs.authorization.clone(),
            DEFAULT_ROOT_NAMESPACE,
            PathNormalization::Base,
        );
        let token = signer.token(&json!({"sub": "alice", claim: value}));
        let bearer = format!("Bearer {token}");
        let verdict = decide(&filter, &authorizer, &[("authorization", &bearer)]).await;
        let want = if denied {
            Verdict::Deny
        } else {
            Verdict::Allow
        };
        assert_eq!(verdict, Ok(want), "{extra:?} {claim} = {value}");
    }
}

#[test]
fn space_delimited_claims_must_be_named() {
    let signer = Signer::new("k1");
    let yaml = deny_claim_policies(&signer, "    spaceDelimitedClaims: [\"\"]\n", "scope");
    let error = build(&yaml, &JwksCache::new(None)).unwrap_err().to_string();
    assert!(error.contains("spaceDelimitedClaims[0]"), "{error}");
}
