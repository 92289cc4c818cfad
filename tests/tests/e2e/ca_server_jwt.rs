//! JWT attacks against the CA server's `kubernetes-jwt` authenticator, over
//! the network: each one must end in UNAUTHENTICATED with nothing signed.
//! The server has only that authenticator (inline JWKS holding one key of
//! ours), and every attack asks for the identity the token names, so the
//! token is the only thing wrong. A valid token is served first, so the
//! refusals cannot come from a broken setup.

use crate::common::ID;
use crate::common::ca::*;
use serde_json::{Value, json};
use sigil_proto::istio::v1::auth::IstioCertificateRequest;
use tonic::Code;

struct Setup {
    server: CaUnderTest,
    signer: JwtSigner,
    attacker: JwtSigner,
    jwks: String,
}

async fn setup() -> Setup {
    let signer = JwtSigner::generate("sa-key-1");
    let attacker = JwtSigner::generate("attacker-key");
    let jwks = jwks_json(&[&signer]);
    let config_jwks = jwks.clone();
    let server = start(move |c| c.authenticators = vec![kubernetes_jwt(config_jwks)]).await;
    Setup {
        server,
        signer,
        attacker,
        jwks,
    }
}

fn claims() -> Value {
    k8s_claims("default", "web")
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_jwt_attack_is_unauthenticated_and_nothing_is_signed() {
    let Setup {
        server,
        signer,
        attacker,
        jwks,
    } = setup().await;
    let mut client = server.client().await;
    let (csr, _key) = new_csr(ID);

    // Control: the honest token works.
    ask(&mut client, &csr, Some(&signer.sign(&claims())))
        .await
        .unwrap_or_else(|e| panic!("the valid token must be accepted: {e}"));
    assert_eq!(server.issued_ok().await, 1.0);

    let now = now_secs();
    let attacks: Vec<(&str, String)> = vec![
        (
            "alg none",
            unsigned_jwt(&json!({ "alg": "none", "typ": "JWT" }), &claims()),
        ),
        (
            "alg none with the real kid",
            unsigned_jwt(
                &json!({ "alg": "none", "typ": "JWT", "kid": signer.kid }),
                &claims(),
            ),
        ),
        (
            "alg NoNe",
            unsigned_jwt(&json!({ "alg": "NoNe", "kid": signer.kid }), &claims()),
        ),
        (
            "HS256 keyed with the public key point",
            hs256_jwt(
                &json!({ "alg": "HS256", "typ": "JWT", "kid": signer.kid }),
                &claims(),
                signer.public_point(),
            ),
        ),
        (
            "HS256 keyed with the JWKS text",
            hs256_jwt(
                &json!({ "alg": "HS256", "typ": "JWT", "kid": signer.kid }),
                &claims(),
                jwks.as_bytes(),
            ),
        ),
        (
            "expired",
            signer.sign(&with(
                with(claims(), "exp", json!(now - 3600)),
                "iat",
                json!(now - 7200),
            )),
        ),
        (
            "nbf in the future",
            signer.sign(&with(claims(), "nbf", json!(now + 3600))),
        ),
        ("no iss", signer.sign(&without(claims(), "iss"))),
        (
            "another iss",
            signer.sign(&with(claims(), "iss", json!("https://evil.example"))),
        ),
        ("no aud", signer.sign(&without(claims(), "aud"))),
        (
            "wrong aud",
            signer.sign(&with(claims(), "aud", json!(["other-audience"]))),
        ),
        ("no exp", signer.sign(&without(claims(), "exp"))),
        (
            "unknown kid (attacker key)",
            attacker.sign_with_header(
                &json!({ "alg": "ES256", "typ": "JWT", "kid": "no-such-key" }),
                &claims(),
            ),
        ),
        (
            "crit header",
            signer.sign_with_header(
                &json!({ "alg": "ES256", "typ": "JWT", "kid": signer.kid, "crit": ["exp"] }),
                &with(claims(), "exp", json!(now + 3600)),
            ),
        ),
        (
            "jku pointing elsewhere, attacker kid",
            attacker.sign_with_header(
                &json!({
                    "alg": "ES256", "typ": "JWT", "kid": attacker.kid,
                    "jku": "https://attacker.example/jwks.json",
                }),
                &claims(),
            ),
        ),
        (
            "jku pointing elsewhere, the real kid",
            attacker.sign_with_header(
                &json!({
                    "alg": "ES256", "typ": "JWT", "kid": signer.kid,
                    "jku": "https://attacker.example/jwks.json",
                }),
                &claims(),
            ),
        ),
        (
            "embedded jwk of the attacker",
            attacker.sign_with_header(
                &json!({ "alg": "ES256", "typ": "JWT", "kid": signer.kid, "jwk": attacker.jwk() }),
                &claims(),
            ),
        ),
        ("payload swapped under a valid signature", {
            let honest = signer.sign(&claims());
            let parts: Vec<&str> = honest.split('.').collect();
            let forged = b64_json(&k8s_claims("kube-system", "admin"));
            format!("{}.{forged}.{}", parts[0], parts[2])
        }),
        ("duplicate alg member", {
            let h = r#"{"alg":"ES256","alg":"none","kid":"sa-key-1"}"#;
            let input = format!("{}.{}", base64_url(h.as_bytes()), b64_json(&claims()));
            format!("{input}.")
        }),
        ("not a JWT", "definitely-not-a-jwt".to_owned()),
    ];
    for (what, token) in &attacks {
        let result = ask(&mut client, &csr, Some(token)).await;
        assert_code(&result, Code::Unauthenticated, what);
    }

    // No token at all.
    let result = ask(&mut client, &csr, None).await;
    assert_code(&result, Code::Unauthenticated, "no token");

    assert_eq!(
        server.issued_ok().await,
        1.0,
        "nothing signed after the control"
    );
    let unauthenticated = server
        .metric(r#"sigil_ca_certificates_issued_total{outcome="unauthenticated"}"#)
        .await;
    assert_eq!(unauthenticated, (attacks.len() + 1) as f64);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization_headers_are_unauthenticated() {
    let Setup { server, signer, .. } = setup().await;
    let mut raw = server.raw().await;
    let (csr, _key) = new_csr(ID);
    let good = signer.sign(&claims());

    let headers: Vec<(&str, Vec<u8>)> = vec![
        ("Basic scheme", format!("Basic {good}").into_bytes()),
        ("scheme only", b"Bearer".to_vec()),
        ("empty token", b"Bearer ".to_vec()),
        ("two spaces", format!("Bearer  {good}").into_bytes()),
        (
            "token with a space",
            format!("Bearer {good} x").into_bytes(),
        ),
        ("token without scheme", good.clone().into_bytes()),
        ("non-ASCII byte", b"Bearer \xff\xfe".to_vec()),
    ];
    for (what, value) in &headers {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.clone(),
            validity_duration: 0,
            metadata: None,
        });
        let Ok(value) = tonic::metadata::MetadataValue::try_from(value.as_slice()) else {
            panic!("{what}: the client cannot even encode this header");
        };
        request.metadata_mut().insert("authorization", value);
        match raw.create_certificate(request).await {
            Ok(response) => panic!("{what}: issued {:?}", response.into_inner().cert_chain),
            Err(status) => assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{what}: {}",
                status.message()
            ),
        }
    }

    // Control on the same connection: the well-formed header works.
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: csr.clone(),
        validity_duration: 0,
        metadata: None,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {good}").parse().unwrap());
    raw.create_certificate(request).await.unwrap();
    assert_eq!(server.issued_ok().await, 1.0);
}
