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
