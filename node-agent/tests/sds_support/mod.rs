//! What the SDS integration tests share: a server on a unix socket in a
//! temporary directory (tonic's own server, with a layer that plays the
//! agent's listener and puts a fixed `PeerInfo` into every request), test
//! certificates, and an xDS client that speaks the stream by hand.
#![allow(
    dead_code,
    reason = "each test crate uses a different part of the harness"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test harness: a failure here is a test failure"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use prost::Message as _;
use sigil_identity::{BundleSet, PrivateKey, SpiffeId, TrustBundle, TrustDomain, X509Svid};
use sigil_node_agent::peer::PeerInfo;
use sigil_node_agent::sds::{SECRET_TYPE_URL, Sds, SdsMetrics, SdsSettings};
use sigil_node_agent::source::{IssuedSvid, SvidState};
use sigil_node_agent::testing::{FakeSource, FixedCallers};
use sigil_node_agent::uds::{self, UdsSettings};
use sigil_test_util::TestCa;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::{Channel, Endpoint, Server, Uri};

/// The uid every test caller has unless a test says otherwise.
pub(crate) const UID: u32 = 1000;

/// The identity `UID` holds.
pub(crate) const WEB: &str = "spiffe://example.org/ns/default/sa/web";

/// A test CA for `example.org` and the identities it issues.
pub(crate) struct Pki {
    pub(crate) ca: TestCa,
    pub(crate) trust_domain: TrustDomain,
}

/// One issued SVID and what the test compares against.
pub(crate) struct Issued {
    pub(crate) state: SvidState,
    pub(crate) leaf_der: Vec<u8>,
    pub(crate) key_der: Vec<u8>,
}

impl Pki {
    pub(crate) fn new() -> Self {
        Self {
            ca: TestCa::root("example.org"),
            trust_domain: TrustDomain::new("example.org").unwrap(),
        }
    }

    pub(crate) fn bundle(&self) -> TrustBundle {
        TrustBundle::with_x509_authorities(self.trust_domain.clone(), [self.ca.cert.der.clone()])
    }

    pub(crate) fn bundles(&self) -> BundleSet {
        BundleSet::from(self.bundle())
    }

    /// A fresh leaf (new key) for `id`, as `SvidState::Ready` at `version`.
    pub(crate) fn issue(&self, id: &str, version: u64) -> Issued {
        let leaf = self.ca.leaf(id);
        let key_der = leaf.key.serialize_der();
        let key = PrivateKey::from_pkcs8_der(key_der.clone()).unwrap();
        let svid = X509Svid::new(vec![leaf.der.clone()], key).unwrap();
        Issued {
            state: SvidState::Ready(IssuedSvid {
                svid: Arc::new(svid),
                bundle: Arc::new(self.bundle()),
                version,
            }),
            leaf_der: leaf.der.to_vec(),
            key_der,
        }
    }
}

pub(crate) fn web() -> SpiffeId {
    SpiffeId::parse(WEB).unwrap()
}

/// Callers: `UID` holds `WEB`; uid 666 fails attestation; others hold nothing.
pub(crate) fn callers() -> FixedCallers {
    let mut callers = FixedCallers::default();
    callers.by_uid.insert(UID, vec![web()]);
    callers.failing.push(666);
    callers
}

/// A running SDS server on a unix socket.
pub(crate) struct Harness {
    pub(crate) source: Arc<FakeSource>,
    /// Bump it to tell open streams the registration entries changed.
    pub(crate) entries_changed: Arc<tokio::sync::watch::Sender<u64>>,
    pub(crate) metrics: SdsMetrics,
    pub(crate) registry: Registry,
    pub(crate) shutdown: CancellationToken,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// Serves with `settings`, every connection attested as `peer` (none:
    /// the listener provided no credentials).
    pub(crate) async fn start(peer: Option<PeerInfo>, settings: SdsSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sds.sock");
        let source = Arc::new(FakeSource::new());
        let mut registry = Registry::default();
        let metrics = SdsMetrics::new(&mut registry);
        let shutdown = CancellationToken::new();
        let callers = callers();
        let entries_changed = callers.entries_changed.clone();
        let sds = Sds::new(
            source.clone(),
            Arc::new(callers),
            settings,
            metrics.clone(),
            shutdown.clone(),
        );
        let incoming = UnixListenerStream::new(UnixListener::bind(&path).unwrap());
        let add_peer =
            tower::util::MapRequestLayer::new(move |mut req: http::Request<tonic::body::Body>| {
                if let Some(peer) = peer {
                    req.extensions_mut().insert(peer);
                }
                req
            });
        let server = Server::builder()
            .layer(add_peer)
            .add_service(sds.into_server())
            .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
        tokio::spawn(server);
        Self {
            source,
            entries_changed,
            metrics,
            registry,
            shutdown,
            path,
            _dir: dir,
        }
    }

    /// Serves the default settings through the agent's own unix-socket
    /// listener (`uds::serve`: real `SO_PEERCRED`), where this process's
    /// uid holds `WEB`.
    pub(crate) async fn over_agent_listener() -> Self {
        use std::os::unix::fs::MetadataExt as _;
        let my_uid = std::fs::metadata("/proc/self").unwrap().uid();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sds.sock");
        let source = Arc::new(FakeSource::new());
        let mut registry = Registry::default();
        let metrics = SdsMetrics::new(&mut registry);
        let shutdown = CancellationToken::new();
        let mut callers = FixedCallers::default();
        callers.by_uid.insert(my_uid, vec![web()]);
        let entries_changed = callers.entries_changed.clone();
        let sds = Sds::new(
            source.clone(),
            Arc::new(callers),
            SdsSettings::default(),
            metrics.clone(),
            shutdown.clone(),
        );
        let listener = uds::bind(&path, 0o600).unwrap();
        let tracker = TaskTracker::new();
        tracker.spawn(uds::serve(
            listener,
            sds.into_server(),
            UdsSettings::default(),
            shutdown.clone(),
            tracker.clone(),
        ));
        Self {
            source,
            entries_changed,
            metrics,
            registry,
            shutdown,
            path,
            _dir: dir,
        }
    }

    /// Serves the default settings to callers with uid `uid`.
    pub(crate) async fn for_uid(uid: u32) -> Self {
        Self::start(Some(peer(uid)), SdsSettings::default()).await
    }

    /// A new connection to the socket.
    pub(crate) async fn channel(&self) -> Channel {
        let path = self.path.clone();
        Endpoint::try_from("http://localhost")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .unwrap()
    }

    pub(crate) async fn client(&self) -> SecretDiscoveryServiceClient<Channel> {
        SecretDiscoveryServiceClient::new(self.channel().await)
    }

    /// Opens a stream (the call itself may fail: refused callers).
    pub(crate) async fn open(&self) -> Result<XdsStream, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let inbound = self
            .client()
            .await
            .stream_secrets(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(XdsStream { tx, inbound })
    }
}

pub(crate) fn peer(uid: u32) -> PeerInfo {
    PeerInfo {
        pid: Some(4242),
        uid,
        gid: uid,
        start_time: None,
    }
}

/// A hand-driven StreamSecrets stream.
pub(crate) struct XdsStream {
    tx: mpsc::Sender<DiscoveryRequest>,
    pub(crate) inbound: tonic::Streaming<DiscoveryResponse>,
}

impl XdsStream {
    pub(crate) async fn send(&self, request: DiscoveryRequest) {
        self.tx.send(request).await.unwrap();
    }

    /// The first request of a subscription.
    pub(crate) async fn subscribe(&self, names: &[&str]) {
        self.send(request(names, "", "")).await;
    }

    /// ACKs `response`, keeping the subscription `names`.
    pub(crate) async fn ack(&self, response: &DiscoveryResponse, names: &[&str]) {
        self.send(request(names, &response.version_info, &response.nonce))
            .await;
    }

    /// NACKs `response` with `message`, subscribing to `names`.
    pub(crate) async fn nack(&self, response: &DiscoveryResponse, names: &[&str], message: &str) {
        let mut nack = request(names, "", &response.nonce);
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: message.to_owned(),
            details: Vec::new(),
        });
        self.send(nack).await;
    }

    /// The next response (panics on an error or the end of the stream).
    pub(crate) async fn next(&mut self) -> DiscoveryResponse {
        self.inbound.message().await.unwrap().expect("a response")
    }

    /// The status the stream ends with (panics on a response).
    pub(crate) async fn error(&mut self) -> tonic::Status {
        match self.inbound.message().await {
            Err(status) => status,
            Ok(Some(response)) => panic!(
                "expected an error, got {} resources",
                response.resources.len()
            ),
            Ok(None) => panic!("expected an error, the stream ended"),
        }
    }
}

pub(crate) fn request(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_owned(),
        node: Some(Node {
            id: "sidecar~10.0.0.1~web.default~default.svc.cluster.local".to_owned(),
            ..Node::default()
        }),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        type_url: SECRET_TYPE_URL.to_owned(),
        response_nonce: nonce.to_owned(),
        ..DiscoveryRequest::default()
    }
}

/// The secrets of `response` by name (checking the type URLs).
pub(crate) fn secrets(response: &DiscoveryResponse) -> BTreeMap<String, Secret> {
    assert_eq!(response.type_url, SECRET_TYPE_URL);
    response
        .resources
        .iter()
        .map(|any| {
            assert_eq!(any.type_url, SECRET_TYPE_URL);
            let secret = Secret::decode(any.value.as_slice()).unwrap();
            (secret.name.clone(), secret)
        })
        .collect()
}

fn inline(source: Option<&envoy_types::pb::envoy::config::core::v3::DataSource>) -> Vec<u8> {
    match source.and_then(|s| s.specifier.as_ref()) {
        Some(Specifier::InlineBytes(bytes)) => bytes.clone(),
        other => panic!("expected inline bytes, got {other:?}"),
    }
}

/// The chain and key PEM of a `default` secret, checked to load as an
/// X.509-SVID (key matching the leaf).
pub(crate) fn tls_pem(secret: &Secret) -> (Vec<u8>, Vec<u8>, X509Svid) {
    let Some(secret::Type::TlsCertificate(tls)) = &secret.r#type else {
        panic!("default is not a tls_certificate");
    };
    let chain = inline(tls.certificate_chain.as_ref());
    let key = inline(tls.private_key.as_ref());
    let svid = X509Svid::from_pem(&chain, &key).unwrap();
    (chain, key, svid)
}

/// The trusted CA PEM of a `ROOTCA` secret.
pub(crate) fn trusted_ca(secret: &Secret) -> Vec<u8> {
    let Some(secret::Type::ValidationContext(ctx)) = &secret.r#type else {
        panic!("ROOTCA is not a validation_context");
    };
    inline(ctx.trusted_ca.as_ref())
}

/// Asserts `secret` is the `default` of `issued`.
pub(crate) fn assert_default(secret: &Secret, issued: &Issued) {
    let (_, _, svid) = tls_pem(secret);
    assert_eq!(svid.spiffe_id().to_string(), WEB);
    assert_eq!(svid.chain()[0].as_ref(), issued.leaf_der.as_slice());
    assert_eq!(svid.private_key().secret_der(), issued.key_der.as_slice());
}
