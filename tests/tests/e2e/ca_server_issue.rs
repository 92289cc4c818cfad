//! The CA server issues over the network what it should, and only that:
//! development and Kubernetes-JWT callers get a chain in the shape real
//! clients depend on (PEM elements with a trailing newline, leaf first, the
//! whole trust bundle last) that verifies as an X509-SVID; a CSR for another
//! namespace or service account is PERMISSION_DENIED with nothing signed;
//! `validity_duration` is honoured (0 and negative mean the default); and
//! the CSR shapes of istio-agent and ztunnel are both signed.

use crate::common::ca::*;
use crate::common::{ID, rsa2048_pkcs8};
use rcgen::{DistinguishedName, DnType, KeyPair, PublicKeyData as _};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_token_gets_a_chain_in_the_istio_shape() {
    let server = start(|_| {}).await;
    let mut client = server.client().await;
    let (csr, _key) = new_csr(ID);

    let chain = ask(&mut client, &csr, Some(WEB_TOKEN)).await.unwrap();

    // Self-signed authority: [leaf, bundle].
    assert_eq!(chain.len(), 2, "{chain:?}");
    check_chain(&chain, &server.roots_pem, ID);
    let (status, root_pem) = server.get("/root.pem").await;
    assert_eq!(status, 200);
    assert_eq!(chain[1], root_pem, "last element = GET /root.pem");
    assert_eq!(server.issued_ok().await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_jwt_token_gets_a_verifying_chain() {
    let signer = JwtSigner::generate("sa-key-1");
    let jwks = jwks_json(&[&signer]);
    let server = start(move |c| {
        c.authenticators = vec![
            kubernetes_jwt(jwks),
            sigil_ca::config::AuthenticatorConfig::Development,
        ];
    })
    .await;
    let mut client = server.client().await;
    let token = signer.sign(&k8s_claims("default", "web"));
    let (csr, _key) = new_csr(ID);

    let chain = ask(&mut client, &csr, Some(&token)).await.unwrap();
    let svid = check_chain(&chain, &server.roots_pem, ID);
    assert_eq!(svid.spiffe_id().to_string(), ID);

    // Another service account's token gets that account's identity only.
    let other = signer.sign(&k8s_claims("shop", "cart"));
    let cart = k8s_id("shop", "cart");
    let (csr, _key) = new_csr(&cart);
    let chain = ask(&mut client, &csr, Some(&other)).await.unwrap();
    check_chain(&chain, &server.roots_pem, &cart);
    assert_eq!(server.issued_ok().await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_for_another_identity_is_permission_denied_and_nothing_is_signed() {
    let signer = JwtSigner::generate("sa-key-1");
    let jwks = jwks_json(&[&signer]);
    let server = start(move |c| {
        c.authenticators = vec![
            kubernetes_jwt(jwks),
            sigil_ca::config::AuthenticatorConfig::Development,
        ];
    })
    .await;
    let mut client = server.client().await;
    let jwt = signer.sign(&k8s_claims("default", "web"));

    for token in [WEB_TOKEN, jwt.as_str()] {
        for other in [
            k8s_id("kube-system", "web"), // another namespace
            k8s_id("default", "admin"),   // another service account
            k8s_id("istio-system", "ztunnel"),
            "spiffe://cluster.local/ns/default/sa/web/extra".to_owned(),
        ] {
            let (csr, _key) = new_csr(&other);
            let result = ask(&mut client, &csr, Some(token)).await;
            assert_code(&result, Code::PermissionDenied, &other);
        }
    }
    assert_eq!(server.issued_ok().await, 0.0, "nothing was signed");
    let denied = server
        .metric(r#"sigil_ca_certificates_issued_total{outcome="permission_denied"}"#)
        .await;
    assert_eq!(denied, 8.0);

    // The same caller with its own identity is still served.
    let (csr, _key) = new_csr(ID);
    ask(&mut client, &csr, Some(WEB_TOKEN)).await.unwrap();
    assert_eq!(server.issued_ok().await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validity_duration_is_honoured_and_zero_or_negative_mean_the_default() {
    let server = start(|_| {}).await;
    let mut client = server.client().await;
    let cases: [(i64, i64); 4] = [
        (3600, 3600),
        (0, 24 * 3600),
        (-1, 24 * 3600),
        (-86_400, 24 * 3600),
    ];
    for (ttl_secs, expected) in cases {
        let (csr, _key) = new_csr(ID);
        let before = now_secs();
        let chain = client
            .create_certificate(sigil_node_agent::ca_client::CsrRequest {
                csr_pem: &csr,
                token: Some(WEB_TOKEN),
                ttl_secs,
                impersonate: None,
            })
            .await
            .unwrap_or_else(|e| panic!("validity_duration {ttl_secs}: {e}"));
        let after = now_secs();
        let leaf = &pem_ders(&chain[0])[0];
        let (not_before, not_after) = validity(leaf);
        assert!(
            not_after >= before + expected - 5 && not_after <= after + expected + 5,
            "validity_duration {ttl_secs}: notAfter {not_after} should be about now + {expected} (now {before}..{after})"
        );
        assert!(not_before <= before, "notBefore is backdated");
        assert!(
            not_before >= before - 3600,
            "notBefore is backdated a little only"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_agent_and_ztunnel_csr_shapes_are_both_signed() {
    let server = start(|_| {}).await;
    let mut client = server.client().await;

    // istio-agent: RSA-2048, subject O="".
    let rsa = KeyPair::from_pem(rsa2048_pkcs8()).unwrap();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::OrganizationName, "");
    let istio_agent = csr_for_key(ID, &rsa, subject);
    let chain = ask(&mut client, &istio_agent, Some(WEB_TOKEN))
        .await
        .unwrap_or_else(|e| panic!("istio-agent CSR: {e}"));
    check_chain(&chain, &server.roots_pem, ID);
    let leaf = &pem_ders(&chain[0])[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
    assert_eq!(
        cert.public_key().raw,
        &rsa.subject_public_key_info()[..],
        "the leaf certifies the CSR's RSA key"
    );

    // ztunnel: rcgen P-256, empty subject.
    let (ztunnel, key) = new_csr(ID);
    let chain = ask(&mut client, &ztunnel, Some(WEB_TOKEN))
        .await
        .unwrap_or_else(|e| panic!("ztunnel CSR: {e}"));
    check_chain(&chain, &server.roots_pem, ID);
    let leaf = &pem_ders(&chain[0])[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).unwrap();
    assert_eq!(cert.public_key().raw, &key.subject_public_key_info()[..]);
    assert_eq!(server.issued_ok().await, 2.0);
}
