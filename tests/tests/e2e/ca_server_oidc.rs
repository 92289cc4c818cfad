//! The generic `oidc` authenticator through the CA server, over the network.
//! The server has two JWT authenticators, a `kubernetes-jwt` one and an
//! `oidc` one for another issuer with the template
//! `/tenant/{tenant}/job/{sub}` (each with an inline JWKS of its own key),
//! so tokens are routed by issuer. A valid OIDC token gets a certificate
//! whose only URI SAN is the templated SPIFFE ID; a token from another
//! issuer, for another audience, signed by another key, expired, or whose
//! claims cannot fill the template (missing, not a string, not a single
//! path segment) is UNAUTHENTICATED; a valid token with a CSR (or an
//! `ImpersonatedIdentity`) for any other identity is PERMISSION_DENIED.
//! Nothing is signed for any refusal.

use crate::common::ca::*;
use serde_json::{Value, json};
use sigil_node_agent::ca_client::CsrRequest;
use tonic::Code;

const IDP: &str = "https://idp.example.com/realms/ci";
const TEMPLATE: &str = "/tenant/{tenant}/job/{sub}";
/// What [`TEMPLATE`] gives for [`claims`]' defaults.
const JOB_ID: &str = "spiffe://cluster.local/tenant/acme/job/build-42";

struct Setup {
    server: CaUnderTest,
    /// The OIDC issuer's key.
    idp: JwtSigner,
    /// The Kubernetes service-account issuer's key.
    cluster: JwtSigner,
}

async fn setup() -> Setup {
    let idp = JwtSigner::generate("idp-key-1");
    let cluster = JwtSigner::generate("sa-key-1");
    let (idp_jwks, cluster_jwks) = (jwks_json(&[&idp]), jwks_json(&[&cluster]));
    let server = start(move |c| {
        c.authenticators = vec![
            kubernetes_jwt(cluster_jwks),
            oidc(
                IDP,
                &["sigil-ca", "spiffe"],
                inline_jwks(idp_jwks),
                TEMPLATE,
            ),
        ];
    })
    .await;
    Setup {
        server,
        idp,
        cluster,
    }
}

/// Valid OIDC claims: issuer [`IDP`], audience `sigil-ca`, an hour left,
/// `tenant` = acme, `sub` = build-42.
fn claims() -> Value {
    let now = now_secs();
    json!({
        "iss": IDP,
        "aud": "sigil-ca",
        "sub": "build-42",
        "tenant": "acme",
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 3600,
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_token_gets_the_templated_spiffe_id() {
    let Setup {
        server,
        idp,
        cluster,
    } = setup().await;
    let mut client = server.client().await;

    let (csr, _key) = new_csr(JOB_ID);
    let chain = ask(&mut client, &csr, Some(&idp.sign(&claims())))
        .await
        .unwrap_or_else(|e| panic!("a valid OIDC token must be accepted: {e}"));
    // One URI SAN, the templated ID; verifies against the bundle.
    check_chain(&chain, &server.roots_pem, JOB_ID);

    // Any configured audience will do; other claim values give other IDs.
    let other = "spiffe://cluster.local/tenant/Globex_2/job/nightly.7";
    let token = idp.sign(&with(
        with(
            with(claims(), "aud", json!(["unrelated", "spiffe"])),
            "tenant",
            json!("Globex_2"),
        ),
        "sub",
        json!("nightly.7"),
    ));
    let (csr, _key) = new_csr(other);
    let chain = ask(&mut client, &csr, Some(&token)).await.unwrap();
    check_chain(&chain, &server.roots_pem, other);

    // The Kubernetes authenticator next to it still gets its own tokens.
    let web = k8s_id("default", "web");
    let (csr, _key) = new_csr(&web);
    let chain = ask(
        &mut client,
        &csr,
        Some(&cluster.sign(&k8s_claims("default", "web"))),
    )
    .await
    .unwrap();
    check_chain(&chain, &server.roots_pem, &web);
    assert_eq!(server.issued_ok().await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_oidc_tokens_are_unauthenticated_and_nothing_is_signed() {
    let Setup {
        server,
        idp,
        cluster,
    } = setup().await;
    let mut client = server.client().await;
    let (csr, _key) = new_csr(JOB_ID);
    let now = now_secs();

    let refused: Vec<(&str, String)> = vec![
        // Routing by issuer: no authenticator recognises it.
        (
            "another issuer",
            idp.sign(&with(claims(), "iss", json!("https://evil.example"))),
        ),
        (
            "the issuer with a trailing slash",
            idp.sign(&with(claims(), "iss", json!(format!("{IDP}/")))),
        ),
        // Routed to the Kubernetes authenticator, whose keys do not know it.
        (
            "OIDC key claiming the Kubernetes issuer",
            idp.sign(&with(claims(), "iss", json!(ISSUER))),
        ),
        (
            "wrong audience",
            idp.sign(&with(claims(), "aud", json!("istio-ca"))),
        ),
        ("no audience", idp.sign(&without(claims(), "aud"))),
        (
            "signed by the Kubernetes issuer's key",
            cluster.sign(&claims()),
        ),
        (
            "expired",
            idp.sign(&with(
                with(claims(), "exp", json!(now - 3600)),
                "iat",
                json!(now - 7200),
            )),
        ),
        // The template cannot be filled.
        (
            "template claim missing",
            idp.sign(&without(claims(), "tenant")),
        ),
        ("sub missing", idp.sign(&without(claims(), "sub"))),
        (
            "template claim not a string",
            idp.sign(&with(claims(), "tenant", json!(7))),
        ),
        (
            "template claim a list",
            idp.sign(&with(claims(), "tenant", json!(["acme"]))),
        ),
        (
            "template claim empty",
            idp.sign(&with(claims(), "tenant", json!(""))),
        ),
        (
            "template claim with a slash (path injection)",
            idp.sign(&with(claims(), "tenant", json!("acme/job/admin"))),
        ),
        (
            "template claim a dot segment",
            idp.sign(&with(claims(), "tenant", json!(".."))),
        ),
        (
            "template claim with a character SPIFFE IDs forbid",
            idp.sign(&with(claims(), "sub", json!("build 42"))),
        ),
        (
            "template claim percent-encoded",
            idp.sign(&with(claims(), "sub", json!("build%2F42"))),
        ),
    ];
    for (what, token) in &refused {
        let result = ask(&mut client, &csr, Some(token)).await;
        assert_code(&result, Code::Unauthenticated, what);
    }

    // Control on the same connection and CSR: the valid token works, so the
    // refusals above came from the tokens.
    ask(&mut client, &csr, Some(&idp.sign(&claims())))
        .await
        .unwrap_or_else(|e| panic!("the valid token must be accepted: {e}"));
    assert_eq!(server.issued_ok().await, 1.0, "only the control was signed");
    let unauthenticated = server
        .metric(r#"sigil_ca_certificates_issued_total{outcome="unauthenticated"}"#)
        .await;
    assert_eq!(unauthenticated, refused.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_caller_gets_no_other_identity() {
    let Setup { server, idp, .. } = setup().await;
    let mut client = server.client().await;
    let token = idp.sign(&claims());

    // CSRs for other identities: a sibling job, another tenant, a
    // Kubernetes workload, the trust domain itself.
    for other in [
        "spiffe://cluster.local/tenant/acme/job/build-43",
        "spiffe://cluster.local/tenant/globex/job/build-42",
        "spiffe://cluster.local/tenant/acme/job/build-42/extra",
        &k8s_id("default", "web"),
        "spiffe://other.org/tenant/acme/job/build-42",
    ] {
        let (csr, _key) = new_csr(other);
        let result = ask(&mut client, &csr, Some(&token)).await;
        assert_code(&result, Code::PermissionDenied, other);
    }

    // Asking to act for another workload: the OIDC caller is no node agent.
    let target = k8s_id("default", "web");
    let (csr, _key) = new_csr(&target);
    let result = client
        .create_certificate(CsrRequest {
            csr_pem: &csr,
            token: Some(&token),
            ttl_secs: 0,
            impersonate: Some(&target),
        })
        .await;
    assert_code(&result, Code::PermissionDenied, "impersonation");

    assert_eq!(server.issued_ok().await, 0.0, "nothing was signed");
}
