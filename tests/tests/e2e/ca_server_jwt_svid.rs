//! JWT-SVIDs from the CA over the network: `sigil.v1.IdentityService` on
//! the gRPC port, next to Istio's service and authenticated the same way.
//! A minted token verifies, with an independent verifier (jsonwebtoken),
//! against the `jwt-svid` keys of `/bundle` and of `FetchBundle`, carrying
//! `kid`, `typ: JWT`, the caller's SPIFFE ID and the audiences; a request
//! without audience is INVALID_ARGUMENT, an unauthenticated one
//! UNAUTHENTICATED, an impersonation the caller may not do
//! PERMISSION_DENIED with nothing minted; lifetimes are cut to
//! `jwt_svid.max_ttl` and, for an SVID caller, to its cap; a restart keeps
//! the keys, so tokens minted before it still verify.

use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sigil_ca::config::AuthenticatorConfig;
use sigil_ca::server::CaServer;
use sigil_identity::SpiffeId;
use sigil_proto::sigil::v1::identity_service_client::IdentityServiceClient;
use sigil_proto::sigil::v1::{FetchBundleRequest, MintJwtSvidRequest, MintJwtSvidResponse};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use crate::ca_server_mtls::issue_in_process;
use crate::common::ca::*;
use crate::common::{ID, tempdir};

const ZTUNNEL_TOKEN: &str = "dev:istio-system:ztunnel";

/// An `IdentityService` client over TLS, optionally with a client SVID.
async fn identity_client(
    server: &CaUnderTest,
    svid: Option<(String, String)>,
) -> IdentityServiceClient<Channel> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&server.roots_pem))
        .domain_name("localhost");
    if let Some((chain, key)) = svid {
        tls = tls.identity(Identity::from_pem(chain, key));
    }
    let channel = Endpoint::from_shared(format!("https://{}", server.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    IdentityServiceClient::new(channel)
}

fn with_token<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn ask(audience: &[&str], ttl_seconds: i64, impersonated: &str) -> MintJwtSvidRequest {
    MintJwtSvidRequest {
        audience: audience.iter().map(|a| (*a).to_owned()).collect(),
        ttl_seconds,
        impersonated_identity: impersonated.to_owned(),
    }
}

async fn mint(
    client: &mut IdentityServiceClient<Channel>,
    token: Option<&str>,
    request: MintJwtSvidRequest,
) -> Result<MintJwtSvidResponse, Status> {
    client
        .mint_jwt_svid(with_token(request, token))
        .await
        .map(tonic::Response::into_inner)
}

/// The `jwt-svid` keys of SPIFFE bundle JSON, read as plain JSON.
fn jwt_keys(bundle_json: &str) -> Vec<Value> {
    let doc: Value = serde_json::from_str(bundle_json).unwrap();
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .cloned()
        .collect()
}

async fn bundle_jwt_keys(server: &CaUnderTest) -> Vec<Value> {
    let (status, json) = server.get("/bundle").await;
    assert_eq!(status, 200, "{json}");
    jwt_keys(&json)
}

/// Verifies `token` with jsonwebtoken against the key of `keys` its `kid`
/// names: ES256, `typ: JWT`, `sub`, `aud` containing `audience`, `exp`.
/// Returns the claims.
fn verify(token: &str, keys: &[Value], sub: &str, audience: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256, "ES256 by default");
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let kid = header.kid.expect("kid set");
    let jwk = keys
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not in the bundle: {keys:?}"));
    assert_eq!(jwk["kty"], "EC");
    assert!(jwk.get("d").is_none(), "no private member published");
    let jwk: Jwk = serde_json::from_value(jwk.clone()).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[audience]);
    validation.sub = Some(sub.to_owned());
    validation.set_required_spec_claims(&["exp", "sub", "aud"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(&jwk).unwrap(), &validation)
        .unwrap_or_else(|e| panic!("the token does not verify: {e}"))
        .claims
}

fn lifetime(claims: &Value) -> u64 {
    claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap()
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, Status>, code: Code, what: &str) {
    match result {
        Err(status) => assert_eq!(status.code(), code, "{what}: {}", status.message()),
        Ok(answer) => panic!("{what}: expected {code:?}, got {answer:?}"),
    }
}

async fn minted(server: &CaUnderTest, outcome: &str) -> f64 {
    server
        .metric(&format!(
            "sigil_ca_jwt_svids_minted_total{{outcome=\"{outcome}\"}}"
        ))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_jwt_svid_verifies_against_the_bundle_independently() {
    let server = start(|_| {}).await;
    let mut client = identity_client(&server, None).await;
    let before = now_secs();
    let answer = mint(&mut client, Some(WEB_TOKEN), ask(&["svc-a"], 0, ""))
        .await
        .unwrap();
    assert_eq!(answer.spiffe_id, ID);

    let keys = bundle_jwt_keys(&server).await;
    assert_eq!(keys.len(), 1, "one signing key at start: {keys:?}");
    let claims = verify(&answer.token, &keys, ID, "svc-a");
    assert_eq!(
        claims["aud"], "svc-a",
        "one audience: a string, as SPIRE writes it"
    );
    assert_eq!(lifetime(&claims), 300, "default 5 min");
    assert_eq!(claims["exp"].as_i64().unwrap(), answer.expires_at);
    assert!((before..=before + 5).contains(&claims["iat"].as_i64().unwrap()));
    // The kid is the key's RFC 7638 thumbprint (SHA-256, base64url).
    assert_eq!(keys[0]["kid"].as_str().unwrap().len(), 43);

    // Two audiences: an array; the token verifies for each.
    let answer = mint(&mut client, Some(WEB_TOKEN), ask(&["a", "b"], 0, ""))
        .await
        .unwrap();
    let claims = verify(&answer.token, &keys, ID, "b");
    assert_eq!(claims["aud"], serde_json::json!(["a", "b"]));
    // Not for an audience it was not minted for.
    let header = jsonwebtoken::decode_header(&answer.token).unwrap();
    let jwk: Jwk = serde_json::from_value(keys[0].clone()).unwrap();
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&["c"]);
    assert!(
        jsonwebtoken::decode::<Value>(
            &answer.token,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &validation
        )
        .is_err()
    );
    assert_eq!(minted(&server, "ok").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audience_is_required_and_bounded() {
    let server = start(|_| {}).await;
    let mut client = identity_client(&server, None).await;
    assert_refused(
        mint(&mut client, Some(WEB_TOKEN), ask(&[], 0, "")).await,
        Code::InvalidArgument,
        "no audience",
    );
    assert_refused(
        mint(&mut client, Some(WEB_TOKEN), ask(&["a", ""], 0, "")).await,
        Code::InvalidArgument,
        "an empty audience",
    );
    let long = "x".repeat(10_000);
    assert_refused(
        mint(&mut client, Some(WEB_TOKEN), ask(&[&long], 0, "")).await,
        Code::InvalidArgument,
        "a 10 kB audience",
    );
    let many: Vec<String> = (0..100).map(|i| format!("aud-{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_refused(
        mint(&mut client, Some(WEB_TOKEN), ask(&many, 0, "")).await,
        Code::InvalidArgument,
        "100 audiences",
    );
    assert_eq!(minted(&server, "invalid_argument").await, 4.0);
    assert_eq!(minted(&server, "ok").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_callers_get_neither_a_token_nor_the_bundle() {
    let server = start(|_| {}).await;
    let mut client = identity_client(&server, None).await;
    assert_refused(
        mint(&mut client, None, ask(&["a"], 0, "")).await,
        Code::Unauthenticated,
        "no credential",
    );
    // Authentication comes first: no audience does not reveal anything.
    assert_refused(
        mint(&mut client, None, ask(&[], 0, "")).await,
        Code::Unauthenticated,
        "no credential, no audience",
    );
    assert_refused(
        mint(&mut client, Some("not.a.jwt"), ask(&["a"], 0, "")).await,
        Code::Unauthenticated,
        "an unknown token",
    );
    assert_refused(
        client
            .fetch_bundle(with_token(FetchBundleRequest {}, None))
            .await,
        Code::Unauthenticated,
        "FetchBundle without credential",
    );
    assert_eq!(minted(&server, "unauthenticated").await, 3.0);
    assert_eq!(minted(&server, "ok").await, 0.0);
    let failures = server
        .metric(r#"sigil_ca_authentication_failures_total{reason="no_credential"}"#)
        .await;
    assert!(
        failures >= 3.0,
        "counted as authentication failures: {failures}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_is_bounded_as_for_certificates() {
    let server = start(|c| {
        c.authorization.node_agents = vec![SpiffeId::parse(ZTUNNEL).unwrap()];
        c.authorization.unbounded_impersonation = true;
    })
    .await;
    let mut client = identity_client(&server, None).await;
    let other = k8s_id("default", "db");
    // A workload may not act for another.
    assert_refused(
        mint(&mut client, Some(WEB_TOKEN), ask(&["a"], 0, &other)).await,
        Code::PermissionDenied,
        "web impersonating db",
    );
    // A value that is not a workload ID of the trust domain.
    assert_refused(
        mint(
            &mut client,
            Some(ZTUNNEL_TOKEN),
            ask(&["a"], 0, "spiffe://evil.org/ns/x/sa/y"),
        )
        .await,
        Code::InvalidArgument,
        "another trust domain",
    );
    assert_eq!(minted(&server, "ok").await, 0.0, "nothing minted");
    assert_eq!(minted(&server, "permission_denied").await, 1.0);

    // The configured node agent gets the workload's token.
    let answer = mint(&mut client, Some(ZTUNNEL_TOKEN), ask(&["a"], 0, &other))
        .await
        .unwrap();
    assert_eq!(answer.spiffe_id, other);
    verify(&answer.token, &bundle_jwt_keys(&server).await, &other, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetimes_are_cut_to_max_ttl_and_to_an_svid_callers_cap() {
    let server = start(|c| {
        c.authenticators = vec![AuthenticatorConfig::Svid, AuthenticatorConfig::Development];
        c.jwt_svid.max_ttl = Duration::from_secs(600);
        c.issuance.svid_max_ttl = Some(Duration::from_secs(120));
    })
    .await;
    let keys = bundle_jwt_keys(&server).await;
    let mut token_client = identity_client(&server, None).await;
    for (asked, granted) in [(36_000, 600), (60, 60), (0, 300), (-5, 300)] {
        let answer = mint(&mut token_client, Some(WEB_TOKEN), ask(&["a"], asked, ""))
            .await
            .unwrap();
        let claims = verify(&answer.token, &keys, ID, "a");
        assert_eq!(lifetime(&claims), granted, "token caller asking {asked} s");
    }

    let mut svid_client = identity_client(&server, Some(issue_in_process(&server, ID))).await;
    for (asked, granted) in [(36_000, 120), (60, 60), (0, 120)] {
        let answer = mint(&mut svid_client, None, ask(&["a"], asked, ""))
            .await
            .unwrap();
        assert_eq!(answer.spiffe_id, ID, "an SVID caller gets its own identity");
        let claims = verify(&answer.token, &keys, ID, "a");
        assert_eq!(lifetime(&claims), granted, "SVID caller asking {asked} s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_bundle_holds_the_roots_and_the_jwt_keys() {
    let server = start(|_| {}).await;
    let mut client = identity_client(&server, None).await;
    let json = client
        .fetch_bundle(with_token(FetchBundleRequest {}, Some(WEB_TOKEN)))
        .await
        .unwrap()
        .into_inner()
        .spiffe_bundle;
    let keys = jwt_keys(&json);
    assert_eq!(
        keys,
        bundle_jwt_keys(&server).await,
        "the same keys as /bundle"
    );
    assert_eq!(keys.len(), 1);
    assert!(keys[0]["kid"].is_string());
    let bundle =
        sigil_identity::TrustBundle::from_spiffe_json(crate::common::td(), json.as_bytes())
            .unwrap();
    assert_eq!(bundle.x509_authorities(), &pem_ders(&server.roots_pem)[..]);
    assert_eq!(bundle.jwt_authorities().len(), 1);

    // A token minted now verifies with the fetched keys.
    let answer = mint(&mut client, Some(WEB_TOKEN), ask(&["a"], 0, ""))
        .await
        .unwrap();
    verify(&answer.token, &keys, ID, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_keys_so_earlier_tokens_still_verify() {
    let dir = tempdir();
    let bound = CaServer::bind(test_config(dir.path()), Default::default())
        .await
        .unwrap();
    let mut first = run(bound, None);
    let mut client = identity_client(&first, None).await;
    let answer = mint(&mut client, Some(WEB_TOKEN), ask(&["a"], 0, ""))
        .await
        .unwrap();
    let keys_before = bundle_jwt_keys(&first).await;
    first.shutdown.cancel();
    first.handle.take().unwrap().await.unwrap().unwrap();

    let key_file = dir.path().join("ca").join("jwt-svid").join("keys.json");
    assert_eq!(crate::common::file_mode(&key_file), 0o600);

    let bound = CaServer::bind(test_config(dir.path()), Default::default())
        .await
        .unwrap();
    let second = run(bound, None);
    let keys_after = bundle_jwt_keys(&second).await;
    assert_eq!(keys_after, keys_before, "the same keys after a restart");
    verify(&answer.token, &keys_after, ID, "a");
}

/// The third-party `spiffe` crate (0.19, rust-crypto verifier) accepts a
/// minted token against the CA's JWT keys served as the Workload API's
/// `FetchJWTBundles` would serve them (JWKS of the `jwt-svid` keys, `kid`
/// kept, `use` dropped), and refuses it for another audience.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spiffe_crate_validates_a_minted_token() {
    let server = start(|_| {}).await;
    let mut client = identity_client(&server, None).await;
    let answer = mint(
        &mut client,
        Some(WEB_TOKEN),
        ask(&["svc-a", "svc-b"], 0, ""),
    )
    .await
    .unwrap();
    let keys: Vec<Value> = bundle_jwt_keys(&server)
        .await
        .into_iter()
        .map(|mut key| {
            key.as_object_mut().unwrap().remove("use");
            key
        })
        .collect();
    let jwks = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
    let td = spiffe::TrustDomain::new(crate::common::TD).unwrap();
    let mut bundles = spiffe::JwtBundleSet::new();
    bundles.add_bundle(spiffe::JwtBundle::from_jwt_authorities(td, &jwks).unwrap());

    let svid = spiffe::JwtSvid::parse_and_validate(&answer.token, &bundles, &["svc-b"])
        .unwrap_or_else(|e| panic!("the spiffe crate refuses the token: {e}"));
    assert_eq!(svid.spiffe_id().to_string(), ID);
    assert_eq!(svid.audience(), ["svc-a", "svc-b"]);
    assert_eq!(svid.expiry().unix_timestamp(), answer.expires_at);
    assert!(
        spiffe::JwtSvid::parse_and_validate(&answer.token, &bundles, &["svc-c"]).is_err(),
        "another audience"
    );
}
