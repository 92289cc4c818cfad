//! Shared helpers of the JWT tests: P-256 signers, request parts, policy loading and an HTTPS
//! JWKS server on loopback with a test CA.
#![allow(dead_code, reason = "each test binary uses a part of the helpers")]
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers: a failure is a test failure"
)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use sigil_proxy::jwt::{JwksCache, JwtConfigError, JwtFilter};
use sigil_proxy::policy::{PolicyDocuments, Workload};
use sigil_test_util::TestCa;
use sigil_test_util::rcgen::{ExtendedKeyUsagePurpose, SanType};
use tokio::net::TcpListener;

pub(crate) const ISS: &str = "https://idp.example";

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A P-256 key with a `kid`, signing ES256 tokens.
pub(crate) struct Signer {
    key: EcdsaKeyPair,
    kid: &'static str,
    rng: ring::rand::SystemRandom,
}

impl Signer {
    pub(crate) fn new(kid: &'static str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self { key, kid, rng }
    }

    pub(crate) fn jwk(&self) -> String {
        let p = self.key.public_key().as_ref();
        format!(
            r#"{{"kty":"EC","crv":"P-256","kid":"{}","x":"{}","y":"{}"}}"#,
            self.kid,
            b64(&p[1..33]),
            b64(&p[33..65])
        )
    }

    /// A JWKS document with this key only.
    pub(crate) fn jwks(&self) -> String {
        format!(r#"{{"keys":[{}]}}"#, self.jwk())
    }

    /// A token with `claims`, plus `iss` = [`ISS`] and `exp` in an hour unless given.
    pub(crate) fn token(&self, claims: &serde_json::Value) -> String {
        let mut claims = claims.as_object().unwrap().clone();
        claims.entry("iss").or_insert(ISS.into());
        claims.entry("exp").or_insert((now() + 3600).into());
        let header =
            b64(format!(r#"{{"alg":"ES256","kid":"{}","typ":"JWT"}}"#, self.kid).as_bytes());
        let input = format!(
            "{header}.{}",
            b64(serde_json::Value::Object(claims).to_string().as_bytes())
        );
        let sig = self.key.sign(&self.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

/// Request parts for `uri` with `headers`.
pub(crate) fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

pub(crate) fn docs(yaml: &str) -> PolicyDocuments {
    let mut docs = PolicyDocuments::default();
    docs.load_str("ra.yaml", yaml).unwrap();
    docs
}

pub(crate) fn workload() -> Workload {
    Workload {
        namespace: "foo".into(),
        labels: Default::default(),
    }
}

/// The filter for the RequestAuthentications in `yaml` that select workload `foo`.
pub(crate) fn build(yaml: &str, cache: &JwksCache) -> Result<JwtFilter, JwtConfigError> {
    let docs = docs(yaml);
    let w = workload();
    let rules: Vec<_> = docs
        .request_authentications_for("istio-system", &w)
        .collect();
    JwtFilter::build(&rules, cache)
}

/// An HTTPS server on loopback serving a JWKS document, with its CA.
pub(crate) struct JwksServer {
    pub(crate) url: String,
    pub(crate) roots_pem: Vec<u8>,
    pub(crate) hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub(crate) async fn start(body: String) -> Self {
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
        let h = hits.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set: stopping the server aborts them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, h, body) = (acceptor.clone(), h.clone(), body.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let body = body.clone();
                        async move {
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            url: format!("https://localhost:{port}/jwks"),
            roots_pem: ca.cert.pem.clone().into_bytes(),
            hits,
            task,
        }
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting and drops every connection; resolves once the port is closed.
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A RequestAuthentication for [`ISS`] whose keys come from `uri`.
pub(crate) fn remote_rule_yaml(uri: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: ra, namespace: foo}}\nspec:\n  jwtRules:\n  - issuer: {ISS}\n    jwksUri: {uri}\n"
    )
}
