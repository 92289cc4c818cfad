//! mTLS renewal against a CA whose only authenticator is `svid`: a caller
//! presenting an SVID the CA issued (leaf + key as the client identity, no
//! token) renews exactly that identity, and may keep renewing with each new
//! certificate; a CSR for any other identity is PERMISSION_DENIED; no
//! credential at all is UNAUTHENTICATED; a client certificate from a
//! foreign CA (same trust domain name, other key) gets nothing.
//!
//! The first SVID is issued in-process from the server's own CA directory
//! (the server has no authenticator that could issue it).

use std::sync::Arc;

use crate::common::ca::*;
use crate::common::{ID, td};
use sigil_ca::authority::source;
use sigil_ca::config::AuthenticatorConfig;
use sigil_ca::{CertIssuer, IssuancePolicy, IssueRequest};
use sigil_identity::SpiffeId;
use sigil_node_agent::ca_client::{CaClient, CsrRequest};
use sigil_test_util::TestCa;
use time::OffsetDateTime;
use tonic::Code;

async fn svid_only_server() -> CaUnderTest {
    start(|c| c.authenticators = vec![AuthenticatorConfig::Svid]).await
}

/// Issues an SVID for `id` with the server's CA, in-process: (chain PEM
/// without the bundle, key PEM).
pub(crate) fn issue_in_process(server: &CaUnderTest, id: &str) -> (String, String) {
    let dir = server.dir.as_ref().unwrap().path().join("ca");
    let authority = source::load_dir(&dir, &td(), OffsetDateTime::now_utc()).unwrap();
    let issuer = CertIssuer::new(Arc::new(authority), IssuancePolicy::default());
    let (csr, key) = new_csr(id);
    let chain = issuer
        .issue(IssueRequest {
            csr: csr.as_bytes(),
            identity: &SpiffeId::parse(id).unwrap(),
            ttl: None,
        })
        .unwrap();
    let pems = chain.pem_certs();
    (pems[..pems.len() - 1].concat(), key.serialize_pem())
}

async fn mtls_client(server: &CaUnderTest, chain_pem: &str, key_pem: &str) -> CaClient {
    let mut config = client_config(server.grpc, &server.roots_pem);
    config.identity = Some((chain_pem.as_bytes().to_vec(), key_pem.as_bytes().to_vec()));
    CaClient::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("mTLS connect: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_renews_its_own_identity_and_nothing_else() {
    let server = svid_only_server().await;
    let (chain_pem, key_pem) = issue_in_process(&server, ID);
    let mut client = mtls_client(&server, &chain_pem, &key_pem).await;

    // Renewal with a fresh key, no token.
    let (csr, new_key) = new_csr(ID);
    let renewed = ask(&mut client, &csr, None).await.expect("renewal");
    check_chain(&renewed, &server.roots_pem, ID);

    // Another identity: refused, whether by CSR alone or by impersonation.
    for other in [k8s_id("default", "admin"), k8s_id("kube-system", "web")] {
        let (csr, _key) = new_csr(&other);
        let result = ask(&mut client, &csr, None).await;
        assert_code(&result, Code::PermissionDenied, &other);
        let result = client
            .create_certificate(CsrRequest {
                csr_pem: &csr,
                impersonate: Some(&other),
                ..CsrRequest::default()
            })
            .await;
        assert_code(
            &result,
            Code::PermissionDenied,
            &format!("impersonating {other}"),
        );
    }
    assert_eq!(server.issued_ok().await, 1.0);

    // The renewed certificate renews again on a new connection.
    let renewed_chain = renewed[..renewed.len() - 1].concat();
    let mut next = mtls_client(&server, &renewed_chain, &new_key.serialize_pem()).await;
    let (csr, _key) = new_csr(ID);
    let again = ask(&mut next, &csr, None).await.expect("second renewal");
    check_chain(&again, &server.roots_pem, ID);
    assert_eq!(server.issued_ok().await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_svid_the_svid_only_ca_is_unauthenticated() {
    let server = svid_only_server().await;
    let mut client = server.client().await;
    let (csr, _key) = new_csr(ID);
    assert_code(
        &ask(&mut client, &csr, None).await,
        Code::Unauthenticated,
        "no credential",
    );
    // A bearer token is nobody's credential here.
    assert_code(
        &ask(&mut client, &csr, Some(WEB_TOKEN)).await,
        Code::Unauthenticated,
        "development token without the development authenticator",
    );
    assert_eq!(server.issued_ok().await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_a_foreign_ca_gets_nothing() {
    let server = svid_only_server().await;
    let foreign = TestCa::root("cluster.local");
    let leaf = foreign.leaf(ID);
    let mut config = client_config(server.grpc, &server.roots_pem);
    config.identity = Some((
        leaf.pem.as_bytes().to_vec(),
        leaf.key.serialize_pem().into_bytes(),
    ));
    let (csr, _key) = new_csr(ID);
    match CaClient::connect(&config).await {
        // TLS 1.3: the client may finish its side before the server refuses.
        Ok(mut client) => {
            let result = ask(&mut client, &csr, None).await;
            assert!(
                result.is_err(),
                "a foreign client certificate was accepted: {result:?}"
            );
        }
        Err(error) => {
            let _ = error; // the handshake failed: what we want.
        }
    }
    // The same with the foreign chain including its root.
    let mut config = client_config(server.grpc, &server.roots_pem);
    config.identity = Some((
        format!("{}{}", leaf.pem, foreign.cert.pem).into_bytes(),
        leaf.key.serialize_pem().into_bytes(),
    ));
    if let Ok(mut client) = CaClient::connect(&config).await {
        let result = ask(&mut client, &csr, None).await;
        assert!(result.is_err(), "accepted with a foreign chain: {result:?}");
    }
    assert_eq!(server.issued_ok().await, 0.0, "nothing signed");

    // The server is unharmed.
    let (chain_pem, key_pem) = issue_in_process(&server, ID);
    let mut client = mtls_client(&server, &chain_pem, &key_pem).await;
    ask(&mut client, &csr, None)
        .await
        .expect("a real SVID still renews");
}
