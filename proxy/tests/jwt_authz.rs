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
