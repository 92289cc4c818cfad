//! Shared fixtures for the node agent's socket-server tests (Workload API,
//! SDS): certificates and JWT keys generated at test time, a credential
//! source driven by the test, and a server on a unix socket in a tempdir.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test fixtures shared by several test binaries, each using a subset; a failure is a test failure"
)]

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use rustls_pki_types::CertificateDer;
use serde_json::{Map, Value, json};
use sigil_identity::{
    BundleSet, JwtAuthority, PrivateKey, SpiffeId, TrustBundle, TrustDomain, X509Svid,
};
use sigil_node_agent::source::{IssuedSvid, SvidState};
use sigil_node_agent::testing::FixedCallers;
use sigil_node_agent::uds::{self, UdsSettings};
use sigil_test_util::TestCa;
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint};

/// The uid of this test process (the caller every test connection has).
pub fn my_uid() -> u32 {
    std::fs::metadata("/proc/self").expect("/proc/self").uid()
}

/// A SPIFFE ID from a literal.
pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).expect("SPIFFE ID")
}

/// A trust domain's test PKI: an X.509 root that issues Sigil-like leaves
/// (CA:FALSE, critical KeyUsage, serverAuth + clientAuth, one URI SAN) and
/// an ES256 JWT signing key.
pub struct TestDomain {
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// The X.509 root.
    pub ca: TestCa,
    /// The JWT signing key.
    pub jwt: JwtKey,
}

impl TestDomain {
    /// A fresh PKI for `trust_domain` (e.g. `example.org`).
    pub fn new(trust_domain: &str) -> Self {
        Self {
            trust_domain: TrustDomain::new(trust_domain).expect("trust domain"),
            ca: TestCa::root(trust_domain),
            jwt: JwtKey::generate(&format!("{trust_domain}-jwt-1")),
        }
    }

    /// A fresh X.509-SVID (new key) for `spiffe_id`, leaf + root chain.
    pub fn svid(&self, spiffe_id: &SpiffeId) -> X509Svid {
        let leaf = self.ca.leaf(&spiffe_id.to_string());
        let key = PrivateKey::from_pkcs8_der(leaf.key.serialize_der()).expect("key");
        X509Svid::new(vec![leaf.der.clone()], key).expect("svid")
    }

    /// This domain's bundle: its root and its JWT key.
    pub fn bundle(&self) -> TrustBundle {
        let mut bundle = TrustBundle::new(self.trust_domain.clone());
        bundle.add_x509_authority(self.root_der());
        bundle.upsert_jwt_authority(self.jwt.authority());
        bundle
    }

    /// The root certificate.
    pub fn root_der(&self) -> CertificateDer<'static> {
        self.ca.cert.der.clone()
    }

    /// `Ready` state for a fresh SVID of `spiffe_id`, with `version`.
    pub fn ready(&self, spiffe_id: &SpiffeId, version: u64) -> SvidState {
        SvidState::Ready(IssuedSvid {
            svid: Arc::new(self.svid(spiffe_id)),
            bundle: Arc::new(self.bundle()),
            version,
        })
    }
}

/// An ES256 JWT signing key with its public JWK.
pub struct JwtKey {
    /// The key ID.
    pub kid: String,
    pkcs8: Vec<u8>,
    jwk: Map<String, Value>,
}

impl JwtKey {
    /// A fresh P-256 key with key ID `kid`.
    pub fn generate(kid: &str) -> Self {
        let key = sigil_test_util::p256();
        let public = key.public_key_raw();
        // Uncompressed point: 0x04 || x (32) || y (32).
        assert_eq!(public.len(), 65);
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
            "kid": kid,
            // As the CA publishes it in the SPIFFE bundle; the Workload API
            // must strip it from FetchJWTBundles.
            "use": "jwt-svid",
        });
        Self {
            kid: kid.to_owned(),
            pkcs8: key.serialize_der(),
            jwk: jwk.as_object().expect("object").clone(),
        }
    }

    /// The JWT authority for a trust bundle.
    pub fn authority(&self) -> JwtAuthority {
        JwtAuthority::new(self.kid.clone(), self.jwk.clone())
    }

    /// A JWT-SVID for `sub` and `aud`, valid for `ttl`, with `kid` and
    /// `typ: JWT` in the header.
    pub fn mint(&self, sub: &SpiffeId, aud: &[&str], ttl: Duration) -> String {
        self.mint_claims(json!({
            "sub": sub.to_string(),
            "aud": aud,
            "exp": unix_now() + ttl.as_secs(),
            "iat": unix_now(),
        }))
    }

    /// A token with arbitrary claims, signed by this key.
    pub fn mint_claims(&self, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8);
        jsonwebtoken::encode(&header, &claims, &key).expect("sign JWT")
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A bundle set of `domains`.
pub fn bundle_set(domains: &[&TestDomain]) -> BundleSet {
    let mut set = BundleSet::new();
    for d in domains {
        set.insert(d.bundle());
    }
    set
}

/// Callers: this process's uid holds `ids`.
pub fn callers_for_me(ids: Vec<SpiffeId>) -> FixedCallers {
    FixedCallers {
        by_uid: HashMap::from([(my_uid(), ids)]),
        ..FixedCallers::default()
    }
}

/// A server running on a unix socket in a tempdir.
pub struct SocketServer {
    /// The socket.
    pub path: PathBuf,
    /// Stops the server.
    pub shutdown: CancellationToken,
    /// Its tasks (`close()` + `wait()` to drain).
    pub tracker: TaskTracker,
    /// Its metrics registry (what the service registered).
    pub registry: Registry,
    _dir: tempfile::TempDir,
}

impl SocketServer {
    /// Binds `api.sock` (mode 0666) in a new tempdir and serves the service
    /// `make` builds (given the registry and the shutdown token).
    pub fn start<S, B>(
        settings: UdsSettings,
        make: impl FnOnce(&mut Registry, CancellationToken) -> S,
    ) -> Self
    where
        S: tower::Service<
                http::Request<hyper::body::Incoming>,
                Response = http::Response<B>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = bytes::Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("api.sock");
        let listener = uds::bind(&path, 0o666).expect("bind");
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let mut registry = Registry::default();
        let service = make(&mut registry, shutdown.clone());
        tracker.spawn(uds::serve(
            listener,
            service,
            settings,
            shutdown.clone(),
            tracker.clone(),
        ));
        Self {
            path,
            shutdown,
            tracker,
            registry,
            _dir: dir,
        }
    }

    /// `unix:///…`, as `SPIFFE_ENDPOINT_SOCKET` carries it.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// The registry in Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode");
        text
    }

    /// Stops the server and waits for every connection to drain.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// A raw tonic channel over the unix socket at `path` (`:authority` is
/// `localhost`).
pub async fn uds_channel(path: &Path) -> Channel {
    let path = path.to_owned();
    Endpoint::try_from("http://localhost")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .expect("connect")
}
