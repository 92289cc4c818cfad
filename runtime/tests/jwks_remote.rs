//! `JwksSource::remote` against a real HTTPS server on loopback: first
//! fetch, rate-limited refresh, invalid documents, untrusted servers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test harness"
)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{ExtendedKeyUsagePurpose, SanType};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use sigil_runtime::jwt::{JwksSource, JwksSourceError};
use sigil_test_util::TestCa;
use tokio::net::TcpListener;

/// A JWKS document with one P-256 key per kid.
fn jwks(kids: &[&str]) -> String {
    let rng = ring::rand::SystemRandom::new();
    let keys: Vec<String> = kids
        .iter()
        .map(|kid| {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            let point = key.public_key().as_ref();
            let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
            format!(
                r#"{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"{}","y":"{}"}}"#,
                b64(&point[1..33]),
                b64(&point[33..65])
            )
        })
        .collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

struct Server {
    url: String,
    roots_pem: String,
    hits: Arc<AtomicUsize>,
    body: Arc<std::sync::Mutex<String>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn https_server(body: String) -> Server {
    let ca = TestCa::root("example.org");
    let mut params = sigil_test_util::leaf_params("spiffe://example.org/jwks");
    params.subject_alt_names = vec![SanType::DnsName("localhost".try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = ca.sign(params, sigil_test_util::p256());
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf.key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der.clone(), ca.cert.der.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(std::sync::Mutex::new(body));
    let (h, b) = (hits.clone(), body.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            let (h, b) = (h.clone(), b.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    h.fetch_add(1, Ordering::SeqCst);
                    let text = b.lock().unwrap().clone();
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(text))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Server {
        url: format!("https://localhost:{port}/openid/v1/jwks"),
        roots_pem: ca.cert.pem.clone(),
        hits,
        body,
        _task: task,
    }
}

/// A source fetching from `server`, trusting its CA.
fn source_for(server: &Server, min_interval: Duration) -> JwksSource {
    JwksSource::remote(&server.url, Some(server.roots_pem.as_bytes()), min_interval).unwrap()
}

#[tokio::test]
async fn fetches_lazily_then_refreshes_at_most_once_per_interval() {
    let server = https_server(jwks(&["k1"])).await;
    let source = source_for(&server, Duration::from_secs(3600));
    assert_eq!(
        source.current().len(),
        0,
        "nothing fetched before first use"
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);

    let keys = source.refresh().await.unwrap();
    assert!(keys.contains_kid("k1"));
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    // A burst of refreshes (e.g. forged kids) within the interval: none
    // reaches the server.
    *server.body.lock().unwrap() = jwks(&["k2"]);
    for _ in 0..20 {
        assert!(matches!(
            source.refresh().await,
            Err(JwksSourceError::RateLimited { .. })
        ));
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert!(source.current().contains_kid("k1"));
}

#[tokio::test]
async fn a_zero_interval_allows_rotation_and_invalid_documents_keep_the_old_keys() {
    let server = https_server(jwks(&["k1"])).await;
    let source = source_for(&server, Duration::ZERO);
    source.refresh().await.unwrap();
    *server.body.lock().unwrap() = jwks(&["k2"]);
    assert!(source.refresh().await.unwrap().contains_kid("k2"));

    *server.body.lock().unwrap() = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"x"}]}"#.into();
    assert!(matches!(
        source.refresh().await,
        Err(JwksSourceError::Invalid { .. })
    ));
    assert!(source.current().contains_kid("k2"), "old keys stay in use");
}

#[tokio::test]
async fn a_rate_limited_refresh_says_whether_the_last_attempt_failed() {
    // After a successful load, a refresh inside the interval is skipped
    // with nothing to report: the keys in use are current.
    let server = https_server(jwks(&["k1"])).await;
    let source = source_for(&server, Duration::from_secs(3600));
    source.refresh().await.unwrap();
    assert_eq!(
        source.refresh().await.unwrap_err(),
        JwksSourceError::RateLimited {
            interval: Duration::from_secs(3600),
            last_failure: None,
        }
    );

    // After a failed load, the skipped refresh carries that failure, so a
    // token naming an unknown kid is answered "cannot check now", not
    // "invalid", until the next attempt is due.
    let broken = https_server("{not json".into()).await;
    let source = source_for(&broken, Duration::from_secs(3600));
    let first = source.refresh().await.unwrap_err();
    assert!(
        matches!(first, JwksSourceError::Invalid { .. }),
        "{first:?}"
    );
    match source.refresh().await {
        Err(JwksSourceError::RateLimited {
            last_failure: Some(reason),
            ..
        }) => assert_eq!(reason, first.to_string()),
        other => panic!("expected a rate-limited refresh naming the failure, got {other:?}"),
    }
    assert_eq!(broken.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_untrusted_server_is_refused() {
    let server = https_server(jwks(&["k1"])).await;
    let stranger = TestCa::root("example.org");
    let source = JwksSource::remote(
        &server.url,
        Some(stranger.cert.pem.as_bytes()),
        Duration::ZERO,
    )
    .unwrap();
    assert!(matches!(
        source.refresh().await,
        Err(JwksSourceError::Fetch { .. })
    ));
    assert_eq!(source.current().len(), 0);
}

#[tokio::test]
async fn a_fetch_timeout_bounds_a_server_that_never_answers() {
    // Accepts TCP connections and never speaks TLS.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let ca = TestCa::root("example.org");
    let source = JwksSource::remote(
        &format!("https://localhost:{port}/jwks"),
        Some(ca.cert.pem.as_bytes()),
        Duration::ZERO,
    )
    .unwrap()
    .with_fetch_timeout(Duration::from_millis(200));
    // Well under the default 5 s deadline.
    let result = tokio::time::timeout(Duration::from_secs(4), source.refresh())
        .await
        .expect("the configured fetch timeout applies");
    match result {
        Err(JwksSourceError::Fetch { reason, .. }) => assert!(reason.contains("timed out")),
        other => panic!("expected a timed-out fetch, got {other:?}"),
    }
}
