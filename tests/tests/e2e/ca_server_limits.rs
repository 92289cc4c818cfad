//! Bad and oversized input, and the concurrency bound, over the network:
//! a garbage CSR is INVALID_ARGUMENT; a CSR over the 64 KiB bound is
//! RESOURCE_EXHAUSTED from the server's own check, one over 128 KiB is
//! refused by tonic's decoder and still reported as RESOURCE_EXHAUSTED;
//! after each, a valid request on the same connection succeeds. With
//! `max_concurrent_requests = 1` and one request held inside
//! authentication, every other request is RESOURCE_EXHAUSTED, and the
//! server serves normally once it finishes. A header block over 64 KiB is
//! refused before anything is decoded, and the server keeps serving. Two
//! `authorization` values, even two valid tokens, are UNAUTHENTICATED
//! (issue 14, 1g).

use crate::common::ID;
use crate::common::ca::*;
use tonic::Code;

/// A CSR signed by one key whose signature no longer matches (one byte of
/// the signature flipped).
fn tampered_csr() -> String {
    let (pem, _key) = new_csr(ID);
    let block = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let mut der = block.contents;
    let last = der.len() - 1;
    der[last] ^= 0x01;
    pem_text("CERTIFICATE REQUEST", &der)
}

fn pem_text(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_csrs_are_invalid_argument_and_the_server_keeps_serving() {
    let server = start(|_| {}).await;
    let mut client = server.client().await;
    let (valid, _key) = new_csr(ID);
    let garbage: Vec<(&str, String)> =
        vec![
        ("empty", String::new()),
        ("not PEM", "this is not a certificate request".to_owned()),
        (
            "PEM of garbage",
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAAAAAA\n-----END CERTIFICATE REQUEST-----\n"
                .to_owned(),
        ),
        ("PEM of random DER", pem_text("CERTIFICATE REQUEST", &[0x30, 0x03, 0x02, 0x01, 0x00])),
        ("a certificate, not a CSR", server.roots_pem.clone()),
        ("bad self-signature", tampered_csr()),
        ("truncated", valid[..valid.len() / 2].to_owned()),
        ("binary", String::from_utf8_lossy(&[0u8, 159, 146, 150, 255]).into_owned()),
    ];
    for (what, csr) in &garbage {
        let result = ask(&mut client, csr, Some(WEB_TOKEN)).await;
        assert_code(&result, Code::InvalidArgument, what);
        ask(&mut client, &valid, Some(WEB_TOKEN))
            .await
            .unwrap_or_else(|e| panic!("valid request after {what}: {e}"));
    }
    assert_eq!(server.issued_ok().await, garbage.len() as f64);
    assert_eq!(
        server
            .metric(r#"sigil_ca_certificates_issued_total{outcome="invalid_argument"}"#)
            .await,
        garbage.len() as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_resource_exhausted_and_the_server_keeps_serving() {
    let server = start(|_| {}).await;
    let mut client = server.client().await;
    let (valid, _key) = new_csr(ID);

    // Over the 64 KiB CSR bound, under tonic's 128 KiB message bound: the
    // server's own size check. A real CSR with a long tail of PEM padding.
    let over_64k = format!("{valid}{}", "A".repeat(70 * 1024));
    assert!(over_64k.len() > 64 * 1024 && over_64k.len() < 120 * 1024);
    // Over 128 KiB: tonic's decoder refuses the message.
    let over_128k = "A".repeat(200 * 1024);
    // Much larger still (1 MiB).
    let huge = "B".repeat(1024 * 1024);

    for (what, csr) in [
        ("CSR > 64 KiB", &over_64k),
        ("message > 128 KiB", &over_128k),
        ("message of 1 MiB", &huge),
    ] {
        let result = ask(&mut client, csr, Some(WEB_TOKEN)).await;
        assert_code(&result, Code::ResourceExhausted, what);
        ask(&mut client, &valid, Some(WEB_TOKEN))
            .await
            .unwrap_or_else(|e| panic!("valid request after {what}: {e}"));
        // A fresh connection works too.
        let mut fresh = server.client().await;
        ask(&mut fresh, &valid, Some(WEB_TOKEN))
            .await
            .unwrap_or_else(|e| panic!("valid request on a new connection after {what}: {e}"));
    }
    assert_eq!(
        server.issued_ok().await,
        6.0,
        "nothing oversized was signed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_concurrency_limit_is_resource_exhausted_and_the_server_recovers() {
    let (server, mut gate) = start_gated(|c| c.server.max_concurrent_requests = 1).await;
    let (csr, _key) = new_csr(ID);

    // One request holds the only permit, parked inside authentication.
    let mut first_client = server.client().await;
    let first_csr = csr.clone();
    let first = tokio::spawn(async move {
        ask(&mut first_client, &first_csr, Some("jwt.held-token.sig")).await
    });
    gate.wait_entered().await;

    // Many parallel requests, on their own connections and on a shared one.
    let shared = server.client().await;
    let mut parallel = Vec::new();
    for i in 0..12 {
        let mut client = if i % 2 == 0 {
            server.client().await
        } else {
            shared.clone()
        };
        let csr = csr.clone();
        parallel.push(tokio::spawn(async move {
            ask(&mut client, &csr, Some("jwt.other-token.sig")).await
        }));
    }
    for task in parallel {
        let result = task.await.unwrap();
        assert_code(&result, Code::ResourceExhausted, "request over the limit");
    }
    assert_eq!(server.issued_ok().await, 0.0);

    // Release: the held request completes, and new ones are served.
    gate.open();
    let chain = first.await.unwrap().expect("the held request completes");
    check_chain(&chain, &server.roots_pem, ID);
    let mut client = shared.clone();
    for _ in 0..3 {
        ask(&mut client, &csr, Some("jwt.other-token.sig"))
            .await
            .expect("served after the burst");
    }
    assert_eq!(server.issued_ok().await, 4.0);
    assert_eq!(
        server
            .metric(r#"sigil_ca_certificates_issued_total{outcome="resource_exhausted"}"#)
            .await,
        12.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_block_is_refused_and_the_server_keeps_serving() {
    use sigil_proto::istio::v1::auth::IstioCertificateRequest;

    let server = start(|_| {}).await;
    let (valid, _key) = new_csr(ID);
    // 100 KiB of metadata: over the 64 KiB header-list bound (hyper's own
    // default would take 16 MiB per request).
    let padding = tonic::metadata::MetadataValue::try_from("p".repeat(100 * 1024)).unwrap();
    let mut raw = server.raw().await;
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr: valid.clone(),
        validity_duration: 0,
        metadata: None,
    });
    request.metadata_mut().insert("x-padding", padding);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {WEB_TOKEN}").parse().unwrap(),
    );
    let refused = raw.create_certificate(request).await;
    assert!(
        refused.is_err(),
        "a 100 KiB header block was served: {refused:?}"
    );
    assert_eq!(server.issued_ok().await, 0.0, "nothing was signed");

    // The server keeps serving, on a new connection and on the old one's
    // client (which reconnects if the server closed it).
    let mut fresh = server.client().await;
    ask(&mut fresh, &valid, Some(WEB_TOKEN))
        .await
        .expect("served after an oversized header block");
    assert_eq!(server.issued_ok().await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_values_are_unauthenticated() {
    use sigil_proto::istio::v1::auth::IstioCertificateRequest;

    let server = start(|_| {}).await;
    let (csr, _key) = new_csr(ID);
    let mut raw = server.raw().await;
    for second in [WEB_TOKEN, "dev:default:admin"] {
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr: csr.clone(),
            validity_duration: 0,
            metadata: None,
        });
        for token in [WEB_TOKEN, second] {
            request
                .metadata_mut()
                .append("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let status = raw
            .create_certificate(request)
            .await
            .expect_err("two authorization values were accepted");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    assert_eq!(server.issued_ok().await, 0.0, "nothing was signed");
    assert_eq!(
        server
            .metric(r#"sigil_ca_authentication_failures_total{reason="malformed_header"}"#)
            .await,
        2.0
    );
}
