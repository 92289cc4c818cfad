//! Envoy SDS on a real agent against a real CA (issue 15, acceptance (b)
//! and (g)), driven by an envoy-types client on the agent's SDS socket.
//!
//! - `default` (chain + key, verified against the CA's roots independently)
//!   and `ROOTCA` (the CA's roots) arrive, are ACKed, and a real rotation
//!   (a 6 s certificate lifetime) is pushed with a new key; that push is
//!   NACKed, and the stream keeps working: the next rotation still arrives.
//! - `file-cert:/etc/passwd~/etc/passwd`, `file-root:/etc/passwd` and
//!   unknown names get `InvalidArgument` on `StreamSecrets` and
//!   `FetchSecrets`; nothing of the named files comes back, and the agent
//!   still serves a valid request afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message as _;
use sigil_identity::X509Svid;
use sigil_node_agent::sds::{DEFAULT_RESOURCE, ROOTCA_RESOURCE, SECRET_TYPE_URL};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::agent::{
    self, APP_ID, AgentUnderTest, check_svid_chain, pem_of, uds_channel, within,
};
use crate::common::ca::{self, CaUnderTest, now_secs, pem_ders, validity};

const BOTH: &[&str] = &[DEFAULT_RESOURCE, ROOTCA_RESOURCE];
/// Upper bound for one SDS answer (a push included: rotations come every
/// three seconds or so with a 6 s lifetime).
const LIMIT: Duration = Duration::from_secs(20);

async fn sds_client(agent: &AgentUnderTest) -> SecretDiscoveryServiceClient<Channel> {
    SecretDiscoveryServiceClient::new(uds_channel(&agent.sds).await)
}

/// A hand-driven `StreamSecrets` stream, as Envoy drives it.
struct XdsStream {
    tx: mpsc::Sender<DiscoveryRequest>,
    inbound: tonic::Streaming<DiscoveryResponse>,
}

impl XdsStream {
    /// Opens a stream (the call itself must succeed).
    async fn open(agent: &AgentUnderTest) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let inbound = within(
            LIMIT,
            "StreamSecrets",
            sds_client(agent)
                .await
                .stream_secrets(ReceiverStream::new(rx)),
        )
        .await
        .expect("StreamSecrets opens")
        .into_inner();
        Self { tx, inbound }
    }

    async fn send(&self, request: DiscoveryRequest) {
        self.tx.send(request).await.expect("the stream is open");
    }

    /// ACKs `response`, keeping the subscription `names`.
    async fn ack(&self, response: &DiscoveryResponse, names: &[&str]) {
        self.send(request(names, &response.version_info, &response.nonce))
            .await;
    }

    /// NACKs `response` (Envoy: the previous version, the rejected nonce,
    /// `error_detail`).
    async fn nack(&self, response: &DiscoveryResponse, previous_version: &str, names: &[&str]) {
        let mut nack = request(names, previous_version, &response.nonce);
        nack.error_detail = Some(RpcStatus {
            code: Code::InvalidArgument as i32,
            message: "Failed to load certificate chain".to_owned(),
            details: Vec::new(),
        });
        self.send(nack).await;
    }

    /// The next response (fails on an error, the end or a timeout).
    async fn next(&mut self) -> DiscoveryResponse {
        within(LIMIT, "an SDS response", self.inbound.message())
            .await
            .unwrap_or_else(|status| panic!("the SDS stream failed: {status:?}"))
            .expect("the SDS stream ended")
    }

    /// The status the stream ends with (fails on a response).
    async fn error(&mut self) -> tonic::Status {
        match within(LIMIT, "the SDS stream's end", self.inbound.message()).await {
            Err(status) => status,
            Ok(Some(response)) => panic!(
                "expected an error, got {} resources: {:?}",
                response.resources.len(),
                secrets(&response).keys().collect::<Vec<_>>()
            ),
            Ok(None) => panic!("expected an error, the stream ended cleanly"),
        }
    }
}

fn request(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.to_owned(),
        node: Some(Node {
            id: "sidecar~127.0.0.1~app.default~default.svc.cluster.local".to_owned(),
            ..Node::default()
        }),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        type_url: SECRET_TYPE_URL.to_owned(),
        response_nonce: nonce.to_owned(),
        ..DiscoveryRequest::default()
    }
}

/// The secrets of `response` by name (type URLs checked).
fn secrets(response: &DiscoveryResponse) -> BTreeMap<String, Secret> {
    assert_eq!(response.type_url, SECRET_TYPE_URL);
    response
        .resources
        .iter()
        .map(|any| {
            assert_eq!(any.type_url, SECRET_TYPE_URL);
            let secret = Secret::decode(any.value.as_slice()).expect("a Secret");
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

/// What a `default` secret carried.
struct Served {
    leaf: Vec<u8>,
    key: Vec<u8>,
}

/// Checks a `default` secret: chain and key load as one X.509-SVID of
/// [`APP_ID`] (key matching the leaf), the chain verifies against the CA's
/// roots by independent verifiers, and the leaf is valid now (never an
/// expired certificate).
fn check_default(secret: &Secret, ca: &CaUnderTest) -> Served {
    let Some(secret::Type::TlsCertificate(tls)) = &secret.r#type else {
        panic!("default is not a tls_certificate: {secret:?}");
    };
    let chain_pem = inline(tls.certificate_chain.as_ref());
    let key_pem = inline(tls.private_key.as_ref());
    let svid = X509Svid::from_pem(&chain_pem, &key_pem)
        .unwrap_or_else(|e| panic!("default does not load as an X.509-SVID: {e}"));
    assert_eq!(svid.spiffe_id().to_string(), APP_ID);
    check_svid_chain(svid.chain(), ca, APP_ID);
    let leaf = svid.chain()[0].to_vec();
    let (not_before, not_after) = validity(&leaf);
    let now = now_secs();
    assert!(
        not_before <= now && now < not_after,
        "an expired or not yet valid certificate was served: {not_before}..{not_after} at {now}"
    );
    Served {
        leaf,
        key: svid.private_key().secret_der().to_vec(),
    }
}

/// Checks a `ROOTCA` secret: exactly the CA's roots.
fn check_rootca(secret: &Secret, ca: &CaUnderTest) {
    let Some(secret::Type::ValidationContext(ctx)) = &secret.r#type else {
        panic!("ROOTCA is not a validation_context: {secret:?}");
    };
    let pem = String::from_utf8(inline(ctx.trusted_ca.as_ref())).expect("PEM text");
    assert_eq!(
        pem_ders(&pem),
        pem_ders(&ca.roots_pem),
        "ROOTCA: the CA's roots"
    );
}

/// Reads responses until one carries `default`, checking every secret on
/// the way; ACKs what it does not return.
async fn next_default(stream: &mut XdsStream, ca: &CaUnderTest) -> (DiscoveryResponse, Served) {
    loop {
        let response = stream.next().await;
        let got = secrets(&response);
        if let Some(rootca) = got.get(ROOTCA_RESOURCE) {
            check_rootca(rootca, ca);
        }
        if let Some(default) = got.get(DEFAULT_RESOURCE) {
            let served = check_default(default, ca);
            return (response, served);
        }
        stream.ack(&response, BOTH).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sds_serves_acks_pushes_a_real_rotation_and_survives_a_nack() {
    let ca = ca::start(|_| {}).await;
    let agent = agent::start(&ca, |config, _| {
        config.certificates.ttl = Some(Duration::from_secs(6));
    })
    .await;
    let mut stream = XdsStream::open(&agent).await;
    stream.send(request(BOTH, "", "")).await;

    // The initial state: `default` and `ROOTCA` (in one response, or ROOTCA
    // first if the certificate was still being issued).
    let mut rootca_seen = false;
    let (initial, first) = loop {
        let response = stream.next().await;
        let got = secrets(&response);
        assert!(!response.nonce.is_empty() && !response.version_info.is_empty());
        if let Some(rootca) = got.get(ROOTCA_RESOURCE) {
            check_rootca(rootca, &ca);
            rootca_seen = true;
        }
        if let Some(default) = got.get(DEFAULT_RESOURCE) {
            break (response, check_default(default, &ca));
        }
        stream.ack(&response, BOTH).await;
    };
    assert!(rootca_seen, "ROOTCA came with or before default");
    stream.ack(&initial, BOTH).await;

    // A real rotation is pushed: a new certificate with a new key.
    let (pushed, second) = next_default(&mut stream, &ca).await;
    assert_ne!(second.leaf, first.leaf);
    assert_ne!(second.key, first.key, "a fresh key for every certificate");
    assert_ne!(pushed.nonce, initial.nonce);
    assert_ne!(pushed.version_info, initial.version_info);

    // Envoy rejects it: a NACK keeps the previous version. The stream stays
    // open and the next rotation still arrives.
    stream.nack(&pushed, &initial.version_info, BOTH).await;
    let (after_nack, third) = next_default(&mut stream, &ca).await;
    assert_ne!(third.key, second.key);
    assert_ne!(third.leaf, second.leaf);
    assert_ne!(after_nack.nonce, pushed.nonce);
    stream.ack(&after_nack, BOTH).await;

    assert_eq!(agent.metric("sigil_agent_sds_nacks_total").await, 1.0);
    assert!(agent.metric("sigil_agent_sds_acks_total").await >= 1.0);
    assert!(agent.metric("sigil_agent_sds_pushes_total").await >= 3.0);
    assert_eq!(agent.metric("sigil_agent_sds_streams_open").await, 1.0);
    drop(stream);
    agent.stop().await.expect("clean shutdown");
}

/// Names that must not make the agent read anything: istio-agent's
/// file-based SDS names and unknown ones.
const HOSTILE_NAMES: &[&str] = &[
    "file-cert:/etc/passwd~/etc/passwd",
    "file-root:/etc/passwd",
    "spiffe://cluster.local/ns/default/sa/app",
    "Default",
    "/etc/passwd",
];

/// A refusal: `InvalidArgument` naming an unknown resource, and nothing of
/// `/etc/passwd` (nor of `canary`) in it.
fn assert_refused_without_content(status: &tonic::Status, name: &str, canary: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{name:?}: {status:?}");
    assert!(
        status.message().contains("unknown SDS resource"),
        "{name:?}: {}",
        status.message()
    );
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for line in passwd.lines().filter(|l| !l.is_empty()) {
        assert!(!status.message().contains(line), "{}", status.message());
    }
    assert!(!status.message().contains(":0:0:"), "{}", status.message());
    assert!(!status.message().contains(canary), "{}", status.message());
    let details = String::from_utf8_lossy(status.details());
    assert!(!details.contains(":0:0:") && !details.contains(canary));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sds_refuses_file_names_and_unknown_names_and_reads_nothing() {
    let ca = ca::start(|_| {}).await;
    let agent = agent::start(&ca, |_, _| {}).await;
    // A readable certificate and key of our own, with a recognisable
    // marker: had the agent read a `file-cert:` name, it could have served
    // them.
    let dir = crate::common::tempdir();
    let root_der = pem_ders(&ca.roots_pem).remove(0);
    let canary = "canary-7f3a9c";
    let cert = crate::common::write(
        dir.path(),
        "cert.pem",
        format!("{}# {canary}\n", pem_of(&root_der)),
    );
    let key = crate::common::write(dir.path(), "key.pem", format!("# {canary}\n"));
    let canary_cert = format!("file-cert:{}~{}", cert.display(), key.display());
    let canary_root = format!("file-root:{}", cert.display());
    let mut names: Vec<&str> = HOSTILE_NAMES.to_vec();
    names.extend([canary_cert.as_str(), canary_root.as_str()]);

    for name in &names {
        // Alone, and next to a valid name: the whole request is refused and
        // `default` is not sent first.
        for subscription in [vec![*name], vec![DEFAULT_RESOURCE, name]] {
            let mut stream = XdsStream::open(&agent).await;
            stream.send(request(&subscription, "", "")).await;
            assert_refused_without_content(&stream.error().await, name, canary);
        }
        let status = within(
            LIMIT,
            "FetchSecrets",
            sds_client(&agent)
                .await
                .fetch_secrets(request(&[name], "", "")),
        )
        .await
        .expect_err("FetchSecrets refuses");
        assert_refused_without_content(&status, name, canary);
    }

    // Mid-stream, after a valid subscription was served.
    let mut stream = XdsStream::open(&agent).await;
    stream.send(request(BOTH, "", "")).await;
    let (served, _) = next_default(&mut stream, &ca).await;
    stream
        .ack(
            &served,
            &[DEFAULT_RESOURCE, "file-cert:/etc/passwd~/etc/passwd"],
        )
        .await;
    assert_refused_without_content(&stream.error().await, "mid-stream", canary);

    // The agent still serves valid requests.
    let response = within(
        LIMIT,
        "FetchSecrets",
        sds_client(&agent)
            .await
            .fetch_secrets(request(BOTH, "", "")),
    )
    .await
    .expect("a valid FetchSecrets is served")
    .into_inner();
    let got = secrets(&response);
    check_default(&got[DEFAULT_RESOURCE], &ca);
    check_rootca(&got[ROOTCA_RESOURCE], &ca);
    agent.stop().await.expect("clean shutdown");
}
