//! Running a real node agent (`sigil_node_agent::daemon`) in-process
//! against a [`CaUnderTest`](super::ca::CaUnderTest): its sockets live in a
//! temp dir (mode 0755, so processes of other uids can reach them), its
//! admin listener on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::time::Duration;

use sigil_identity::SpiffeId;
use sigil_node_agent::config::{AgentConfig, Mode};
use sigil_node_agent::daemon::{Agent, AgentError, StatusReport};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ca::{CaUnderTest, http_get, sample};

/// The identity a sidecar-mode test agent serves (token `dev:default:app`).
pub(crate) const APP_ID: &str = "spiffe://cluster.local/ns/default/sa/app";

/// A running agent. Dropping it cancels its shutdown token.
pub(crate) struct AgentUnderTest {
    /// The admin (HTTP) address.
    pub(crate) admin: SocketAddr,
    /// The SDS socket.
    pub(crate) sds: PathBuf,
    /// The Workload API socket.
    pub(crate) workload: PathBuf,
    /// Cancel to shut the agent down.
    pub(crate) shutdown: CancellationToken,
    /// The `Bound::run` task.
    pub(crate) handle: Option<JoinHandle<Result<(), AgentError>>>,
    /// The temp dir holding the sockets, token and roots (removed on drop).
    pub(crate) _dir: tempfile::TempDir,
}

impl Drop for AgentUnderTest {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl AgentUnderTest {
    /// `SPIFFE_ENDPOINT_SOCKET` for this agent's Workload API.
    pub(crate) fn endpoint(&self) -> String {
        format!("unix://{}", self.workload.display())
    }

    /// `GET path` on the admin port: (status, body).
    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path).await
    }

    /// The value of the metric sample `series` (exactly as exposed), 0 when
    /// absent.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200, "/metrics: {body}");
        sample(&body, series)
    }

    /// `GET /status`, parsed.
    pub(crate) async fn status(&self) -> StatusReport {
        let (code, body) = self.get("/status").await;
        assert_eq!(code, 200, "/status: {body}");
        serde_json::from_str(&body).expect("status JSON")
    }

    /// Shuts the agent down and waits for `run` to return.
    pub(crate) async fn stop(mut self) -> Result<(), AgentError> {
        self.shutdown.cancel();
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("the agent stops within 30 s")
            .expect("agent task")
    }
}

/// A sidecar-mode configuration for `ca` serving [`APP_ID`] with the
/// development token `dev:default:app`, sockets and files under `dir`.
pub(crate) fn sidecar_config(ca: &CaUnderTest, dir: &std::path::Path) -> AgentConfig {
    let mut config = AgentConfig {
        mode: Mode::Sidecar,
        ..AgentConfig::default()
    };
    config.ca.address = format!("https://127.0.0.1:{}", ca.grpc.port());
    config.ca.server_name = Some("localhost".into());
    config.ca.roots_file = super::write(dir, "ca-roots.pem", &ca.roots_pem);
    config.ca.token_file = Some(super::write(dir, "token", "dev:default:app"));
    config.attestation.identity = Some(SpiffeId::parse(APP_ID).expect("id"));
    config.sds.socket = dir.join("sds.sock");
    config.workload_api.socket = dir.join("workload.sock");
    // A sidecar without entries serves every caller: private sockets.
    config.sds.mode = 0o600;
    config.workload_api.mode = 0o600;
    config.admin.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.admin.shutdown_grace = Duration::from_secs(5);
    config
}

/// Starts an agent for `ca` with [`sidecar_config`] adjusted by
/// `configure` (which also gets the temp dir's path).
pub(crate) async fn start(
    ca: &CaUnderTest,
    configure: impl FnOnce(&mut AgentConfig, &std::path::Path),
) -> AgentUnderTest {
    let dir = super::tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the agent's dir");
    let mut config = sidecar_config(ca, dir.path());
    configure(&mut config, dir.path());
    config
        .validate()
        .unwrap_or_else(|e| panic!("agent config: {e}"));
    let sds = config.sds.socket.clone();
    let workload = config.workload_api.socket.clone();
    let bound = Agent::bind(config)
        .await
        .unwrap_or_else(|e| panic!("Agent::bind: {e}"));
    let admin = bound.admin_addr();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(bound.run(shutdown.clone()));
    AgentUnderTest {
        admin,
        sds,
        workload,
        shutdown,
        handle: Some(handle),
        _dir: dir,
    }
}

// === e2e-api helpers ===

/// The token a node-mode test agent authenticates with (the identity
/// [`allow_node_agent`] lets impersonate).
pub(crate) const NODE_AGENT_TOKEN: &str = "dev:istio-system:ztunnel";

/// CA settings for a node-mode agent without Kubernetes: ztunnel's identity
/// may impersonate any workload (the development authenticator only runs
/// on loopback, where these tests are).
pub(crate) fn allow_node_agent(config: &mut sigil_ca::config::CaConfig) {
    config.authorization.node_agents =
        vec![SpiffeId::parse(super::ca::ZTUNNEL).expect("ztunnel id")];
    config.authorization.unbounded_impersonation = true;
}

/// Turns a [`sidecar_config`] into node mode: the agent authenticates with
/// [`NODE_AGENT_TOKEN`] and serves every caller with this process's uid
/// the identities `ids`, in that order (registration entries
/// `unix:uid:<uid>` in `dir/registrations.toml`).
pub(crate) fn node_mode_for_my_uid(config: &mut AgentConfig, dir: &std::path::Path, ids: &[&str]) {
    let uid = my_uid();
    let entries: String = ids
        .iter()
        .map(|id| format!("[[entry]]\nspiffe_id = \"{id}\"\nselectors = [\"unix:uid:{uid}\"]\n\n"))
        .collect();
    config.mode = Mode::Node;
    config.workload_api.mode = sigil_node_agent::config::DEFAULT_WORKLOAD_SOCKET_MODE;
    config.attestation.identity = None;
    config.attestation.registration_file = Some(super::write(dir, "registrations.toml", entries));
    config.ca.token_file = Some(super::write(dir, "node-token", NODE_AGENT_TOKEN));
}

/// The uid of this test process.
pub(crate) fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self")
        .expect("stat /proc/self")
        .uid()
}

/// A tonic channel over the unix socket `path` (`:authority` localhost,
/// as the Rust and Go SPIFFE clients send).
pub(crate) async fn uds_channel(path: &std::path::Path) -> tonic::transport::Channel {
    let path = path.to_owned();
    tonic::transport::Endpoint::try_from("http://localhost")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                tokio::net::UnixStream::connect(path)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .unwrap_or_else(|e| panic!("connect to the agent's socket: {e}"))
}

/// Waits at most `limit` for `fut`, failing the test with `what` after.
pub(crate) async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}

/// One DER certificate as PEM (64-column base64, trailing newline), the
/// form [`super::ca::check_chain`] and `openssl` read.
pub(crate) fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Checks an SVID chain (DER, leaf first) the agent handed out against the
/// CA's roots, independently of the agent: [`super::ca::check_chain`]
/// (x509 shape, URI SAN `id`, `verify_x509_svid` now for both TLS roles)
/// and `openssl verify -x509_strict` for `sslserver` and `sslclient`.
pub(crate) fn check_svid_chain<C: AsRef<[u8]>>(chain: &[C], ca: &CaUnderTest, id: &str) {
    let mut pems: Vec<String> = chain.iter().map(|c| pem_of(c.as_ref())).collect();
    let dir = super::tempdir();
    super::write(dir.path(), "leaf.pem", &pems[0]);
    super::write(dir.path(), "root.pem", &ca.roots_pem);
    let intermediates = (pems.len() > 1).then(|| {
        super::write(dir.path(), "chain.pem", pems[1..].concat());
        "chain.pem"
    });
    super::assert_openssl_verifies(dir.path(), "root.pem", intermediates, "leaf.pem");
    pems.push(ca.roots_pem.clone());
    super::ca::check_chain(&pems, &ca.roots_pem, id);
}

/// The `jwt-svid` keys of the CA's `/bundle`, as a JWKS the `spiffe`
/// crate reads (`use` removed, as the Workload API serves them).
pub(crate) async fn ca_jwt_jwks(ca: &CaUnderTest) -> (Vec<String>, Vec<u8>) {
    let (status, json) = ca.get("/bundle").await;
    assert_eq!(status, 200, "/bundle: {json}");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("bundle JSON");
    let keys: Vec<serde_json::Value> = doc["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .map(|k| {
            let mut k = k.clone();
            k.as_object_mut().expect("a JWK object").remove("use");
            k
        })
        .collect();
    let kids = keys
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect();
    let jwks = serde_json::to_vec(&serde_json::json!({ "keys": keys })).expect("JWKS");
    (kids, jwks)
}

// === e2e-ops helpers ===
// Used by agent_outage.rs, agent_attestation.rs and agent_kubernetes.rs:
// polling the admin port, raw Workload API and SDS clients on the agent's
// sockets, registration files, and `workload_probe` (tests/src/bin), a
// Workload API client run as another uid.

pub(crate) use ops::*;

mod ops {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
    use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
    use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
    use prost::Message as _;
    use sigil_proto::spiffe::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
    use sigil_proto::spiffe::workload::{X509svidRequest, X509svidResponse};
    use tokio::sync::mpsc;

    use super::AgentUnderTest;

    /// Polls `check` every 25 ms until it holds; fails the test after
    /// `within`, naming `what`.
    pub(crate) async fn wait_until<F, Fut>(what: &str, within: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let waited = tokio::time::timeout(within, async {
            while !check().await {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "timed out after {within:?} waiting until {what}"
        );
    }

    impl AgentUnderTest {
        /// The sum of every sample of the metric family `name` (all label
        /// values), 0 when absent.
        pub(crate) async fn metric_total(&self, name: &str) -> f64 {
            let (status, body) = self.get("/metrics").await;
            assert_eq!(status, 200, "/metrics: {body}");
            let prefix = format!("{name}{{");
            body.lines()
                .filter(|l| l.starts_with(&prefix) || l.starts_with(&format!("{name} ")))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        }

        /// The `last_error` `/status` shows for `id` (`None`: no error, or
        /// the identity is not held).
        pub(crate) async fn last_error(&self, id: &str) -> Option<String> {
            self.status()
                .await
                .identities
                .into_iter()
                .find(|i| i.spiffe_id == id)
                .and_then(|i| i.last_error)
        }
    }

    /// A raw Workload API `FetchX509SVID` stream (with the security header).
    pub(crate) async fn x509_stream(socket: &Path) -> tonic::Streaming<X509svidResponse> {
        let mut client = SpiffeWorkloadApiClient::new(super::uds_channel(socket).await);
        let mut request = tonic::Request::new(X509svidRequest {});
        request
            .metadata_mut()
            .insert("workload.spiffe.io", "true".parse().expect("header value"));
        client
            .fetch_x509svid(request)
            .await
            .unwrap_or_else(|e| panic!("FetchX509SVID: {e}"))
            .into_inner()
    }

    /// The next message of a stream within `within`: `None` when nothing
    /// arrived; fails the test if the stream errs or ends.
    pub(crate) async fn next_within<T>(
        stream: &mut tonic::Streaming<T>,
        within: Duration,
    ) -> Option<T> {
        match tokio::time::timeout(within, stream.message()).await {
            Err(_) => None,
            Ok(Ok(Some(message))) => Some(message),
            Ok(Ok(None)) => panic!("the stream ended"),
            Ok(Err(status)) => panic!("the stream failed: {status}"),
        }
    }

    /// One open SDS `StreamSecrets` stream.
    pub(crate) struct SdsStream {
        requests: mpsc::UnboundedSender<DiscoveryRequest>,
        /// The server's responses.
        pub(crate) responses: tonic::Streaming<DiscoveryResponse>,
    }

    impl SdsStream {
        /// Opens a stream on `socket` subscribing to `names`.
        pub(crate) async fn open(socket: &Path, names: &[&str]) -> Self {
            let (tx, rx) = mpsc::unbounded_channel();
            tx.send(DiscoveryRequest {
                type_url: sigil_node_agent::sds::SECRET_TYPE_URL.to_owned(),
                resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
                ..DiscoveryRequest::default()
            })
            .expect("queue the request");
            let mut client = SecretDiscoveryServiceClient::new(super::uds_channel(socket).await);
            let responses = client
                .stream_secrets(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
                .await
                .unwrap_or_else(|e| panic!("StreamSecrets: {e}"))
                .into_inner();
            Self {
                requests: tx,
                responses,
            }
        }

        /// The next response within `within` (`None`: nothing came).
        pub(crate) async fn next(&mut self, within: Duration) -> Option<DiscoveryResponse> {
            next_within(&mut self.responses, within).await
        }

        /// ACKs `response` (same subscription).
        pub(crate) fn ack(&self, response: &DiscoveryResponse, names: &[&str]) {
            self.requests
                .send(DiscoveryRequest {
                    type_url: sigil_node_agent::sds::SECRET_TYPE_URL.to_owned(),
                    version_info: response.version_info.clone(),
                    response_nonce: response.nonce.clone(),
                    resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
                    ..DiscoveryRequest::default()
                })
                .expect("stream open");
        }
    }

    /// The secrets of an SDS response, by name: (name, chain PEM for a
    /// `tls_certificate`, or `None` for a validation context).
    pub(crate) fn sds_secrets(response: &DiscoveryResponse) -> Vec<(String, Option<String>)> {
        response
            .resources
            .iter()
            .map(|any| {
                let secret = Secret::decode(any.value.as_slice()).expect("a Secret");
                let chain = match &secret.r#type {
                    Some(secret::Type::TlsCertificate(tls)) => {
                        match tls
                            .certificate_chain
                            .as_ref()
                            .and_then(|d| d.specifier.as_ref())
                        {
                            Some(Specifier::InlineBytes(b)) => {
                                Some(String::from_utf8(b.clone()).expect("PEM"))
                            }
                            Some(Specifier::InlineString(s)) => Some(s.clone()),
                            other => panic!("unexpected certificate chain {other:?}"),
                        }
                    }
                    _ => None,
                };
                (secret.name, chain)
            })
            .collect()
    }

    /// Writes a registration entries file mapping each selector to an ID.
    pub(crate) fn registration_file(dir: &Path, entries: &[(&str, &str)]) -> PathBuf {
        let text: String = entries
            .iter()
            .map(|(selector, id)| {
                format!("[[entry]]\nspiffe_id = \"{id}\"\nselectors = [\"{selector}\"]\n\n")
            })
            .collect();
        crate::common::write(dir, "registrations.toml", text)
    }

    /// Whether this process runs as root (needed to start probes as other
    /// uids).
    pub(crate) fn running_as_root() -> bool {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata("/proc/self").expect("/proc/self").uid() == 0
    }

    /// What a `workload_probe` run saw.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum ProbeAnswer {
        /// The SPIFFE IDs of the first `FetchX509SVID` answer.
        Svids(Vec<String>),
        /// The call failed: the gRPC code (Debug name) and message.
        Error(String, String),
        /// Nothing arrived in time.
        Nothing,
    }

    /// `workload_probe` copied into a temp dir every uid can read, so it
    /// runs as any uid wherever the build tree lives.
    pub(crate) struct Probe {
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Probe {
        /// Copies the probe; fails the test unless it runs as root.
        pub(crate) fn new() -> Self {
            use std::os::unix::fs::PermissionsExt as _;
            assert!(
                running_as_root(),
                "these tests start Workload API callers with other uids and must run as root"
            );
            let dir = crate::common::tempdir();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod the probe's dir");
            let path = dir.path().join("workload_probe");
            std::fs::copy(env!("CARGO_BIN_EXE_workload_probe"), &path).expect("copy the probe");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the probe");
            Self { path, _dir: dir }
        }

        /// `FetchX509SVID` on `socket` as `uid` (gid = uid), waiting at most
        /// `within` for the first answer.
        pub(crate) async fn fetch_as(
            &self,
            uid: u32,
            socket: &Path,
            within: Duration,
        ) -> ProbeAnswer {
            self.run(uid, "fetch", socket, within).await
        }

        /// Like [`Probe::fetch_as`], but the connection is made by a
        /// process that exits (and is reaped) before the request is sent on
        /// it by its child: the caller's pid no longer exists.
        pub(crate) async fn fetch_after_exit_as(
            &self,
            uid: u32,
            socket: &Path,
            within: Duration,
        ) -> ProbeAnswer {
            self.run(uid, "handoff", socket, within).await
        }

        async fn run(&self, uid: u32, verb: &str, socket: &Path, within: Duration) -> ProbeAnswer {
            use tokio::io::AsyncReadExt as _;
            let mut child = tokio::process::Command::new(&self.path)
                .arg(verb)
                .arg(socket)
                .arg(within.as_millis().to_string())
                .uid(uid)
                .gid(uid)
                .env_clear()
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("start the probe as uid {uid}: {e}"));
            let mut stdout = child.stdout.take().expect("stdout");
            let mut stderr = child.stderr.take().expect("stderr");
            // Reap first: in `handoff` the child exits at once and its own
            // child (holding stdout) waits until it is gone.
            let bound = within + Duration::from_secs(10);
            let status = tokio::time::timeout(bound, child.wait())
                .await
                .expect("the probe exits")
                .expect("wait for the probe");
            let mut out = String::new();
            let mut err = String::new();
            tokio::time::timeout(bound, async {
                stdout.read_to_string(&mut out).await.expect("probe stdout");
                stderr.read_to_string(&mut err).await.expect("probe stderr");
            })
            .await
            .expect("the probe's output ends");
            assert!(
                status.success(),
                "probe {verb} as uid {uid}: {status}: {err}"
            );
            let line = out.trim();
            match line.split_once(' ').unwrap_or((line, "")) {
                ("svids", ids) => ProbeAnswer::Svids(ids.split(' ').map(str::to_owned).collect()),
                ("error", rest) => {
                    let (code, message) = rest.split_once(' ').unwrap_or((rest, ""));
                    ProbeAnswer::Error(code.to_owned(), message.to_owned())
                }
                ("nothing", _) => ProbeAnswer::Nothing,
                _ => panic!("probe {verb} as uid {uid} printed {out:?} ({err})"),
            }
        }
    }
}
