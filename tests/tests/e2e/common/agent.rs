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
