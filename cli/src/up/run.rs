//! The components started in order, the demo requests, the live status,
//! and the shutdown in order (proxies, demo service, agent, CA), whatever
//! step failed or was interrupted.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use sigil_ca::server::{CaServer, ServeError, ServerDeps};
use sigil_node_agent::daemon::{Agent, AgentError, StatusReport};
use sigil_proxy::{ProxyMetrics, Running};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::demo::{self, Demo};
use super::setup::{self, Settings};
use super::status::{Leaf, Snapshot, Terminal};
use crate::agent::fetch_status;
use crate::serve::InvalidConfig;

/// How long the agent gets to deliver each identity at start.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the start polls (a credential installed, files written) and
/// the live status refreshes.
const POLL: Duration = Duration::from_millis(100);
const REFRESH: Duration = Duration::from_secs(1);

/// A signal arrived before everything was up: not a failure.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

/// A daemon task and its stop token.
struct Task<E> {
    stop: CancellationToken,
    handle: JoinHandle<Result<(), E>>,
}

impl<E: Into<anyhow::Error>> Task<E> {
    fn spawn<F>(run: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Send + 'static,
    {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(run(stop.clone()));
        Self { stop, handle }
    }

    async fn stop(self, what: &str) -> anyhow::Result<()> {
        self.stop.cancel();
        match self.handle.await {
            Ok(result) => result
                .map_err(Into::into)
                .with_context(|| format!("the {what}")),
            Err(error) => Err(anyhow::anyhow!("the {what} task failed: {error}")),
        }
    }
}

/// What is running, stopped in order by [`Components::stop`].
#[derive(Default)]
struct Components {
    ca: Option<Task<ServeError>>,
    agent: Option<Task<AgentError>>,
    demo: Option<Demo>,
    inbound: Option<Running>,
    outbound: Option<Running>,
}

impl Components {
    async fn stop(self) -> anyhow::Result<()> {
        for proxy in [self.outbound, self.inbound].into_iter().flatten() {
            proxy.shutdown().await;
        }
        if let Some(demo) = self.demo {
            demo.stop().await;
        }
        let agent = match self.agent {
            Some(agent) => agent.stop("node agent").await,
            None => Ok(()),
        };
        let ca = match self.ca {
            Some(ca) => ca.stop("CA").await,
            None => Ok(()),
        };
        agent.and(ca)
    }

    /// A daemon that ended on its own (it should run until stopped).
    fn ended(&self) -> Option<&'static str> {
        if self.ca.as_ref().is_some_and(|t| t.handle.is_finished()) {
            return Some("CA");
        }
        if self.agent.as_ref().is_some_and(|t| t.handle.is_finished()) {
            return Some("node agent");
        }
        None
    }
}

/// Everything, until SIGINT or SIGTERM.
pub(super) async fn up(settings: &Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals = TaskTracker::new();
    sigil_runtime::shutdown::cancel_on_signal(&shutdown, &signals)
        .context("cannot install the SIGINT/SIGTERM handlers")?;
    let mut term = Terminal::stdout();
    let mut components = Components::default();
    let served = start_and_watch(settings, &shutdown, &mut components, &mut term).await;
    if components.ca.is_some() {
        term.line("sigil up: stopping (the proxies drain, then the agent and the CA stop)");
    }
    let stopped = components.stop().await;
    shutdown.cancel();
    signals.close();
    signals.wait().await;
    let result = match served {
        Err(error) if error.is::<Interrupted>() => stopped,
        served => served.and(stopped),
    };
    if result.is_ok() {
        term.line("sigil up: stopped");
    }
    result
}

/// Polls `ready` every [`POLL`] until it answers, [`ISSUE_TIMEOUT`] passes
/// (an error built by `late`), or a signal arrives ([`Interrupted`]).
async fn wait_for<T, F, L>(shutdown: &CancellationToken, mut ready: F, late: L) -> anyhow::Result<T>
where
    F: FnMut() -> Option<T>,
    L: AsyncFnOnce() -> anyhow::Error,
{
    let deadline = Instant::now() + ISSUE_TIMEOUT;
    loop {
        if let Some(value) = ready() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(late().await);
        }
        tokio::select! {
            () = shutdown.cancelled() => return Err(Interrupted.into()),
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Why the agent has not delivered `id`: its last error, from `/status`.
async fn agent_error(admin: SocketAddr, id: &str) -> String {
    match fetch_status(admin).await {
        Ok(report) => report
            .identities
            .iter()
            .find(|i| i.spiffe_id == id)
            .and_then(|i| i.last_error.clone())
            .unwrap_or_else(|| "no error reported yet".to_owned()),
        Err(error) => format!("{error:#}"),
    }
}

/// A private (0700) temporary directory for the agent's socket: in
/// `$TMPDIR`, or in `/tmp` when that path would be too long for a unix
/// socket (108 bytes with the file name).
fn socket_dir() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let mut builder = tempfile::Builder::new();
    builder
        .prefix("sigil-up-")
        .permissions(std::fs::Permissions::from_mode(0o700));
    let context = "cannot create a private temporary directory for the agent's socket";
    let dir = builder.tempdir().context(context)?;
    if dir.path().as_os_str().len() <= 90 {
        return Ok(dir);
    }
    builder.tempdir_in("/tmp").context(context)
}

/// Why the CA did not start, once (its `Display` already holds the cause):
/// the authority's material refused is the flags' fault (exit 64), naming
/// the directory; anything else exits 1.
fn ca_error(settings: &Settings, error: &ServeError) -> anyhow::Error {
    match (error, &settings.ca_dir) {
        (ServeError::Authority(_), Some(dir)) => {
            InvalidConfig(format!("--ca-dir {}: {error}", dir.display())).into()
        }
        (ServeError::Authority(_), None) => InvalidConfig(format!(
            "{error} (the self-signed CA of --data-dir {}: another --data-dir starts afresh)",
            settings.data_dir.display()
        ))
        .into(),
        _ => anyhow::anyhow!(
            "cannot start the CA: {error} (see {})",
            settings.log_file().display()
        ),
    }
}

/// Starts one of the two proxies and returns it with its (only) listener.
async fn start_proxy(
    config: &sigil_proxy::ProxyConfig,
    metrics: ProxyMetrics,
    which: &str,
) -> anyhow::Result<(Running, SocketAddr)> {
    let running = crate::proxy::start(config, metrics).await?;
    let addr = running
        .addrs
        .first()
        .copied()
        .with_context(|| format!("the {which} proxy has no listener"))?;
    Ok((running, addr))
}

#[expect(
    clippy::too_many_lines,
    reason = "the start is one sequence of steps, each printed as it completes"
)]
async fn start_and_watch(
    settings: &Settings,
    shutdown: &CancellationToken,
    components: &mut Components,
    term: &mut Terminal,
) -> anyhow::Result<()> {
    let log = settings.log_file();
    term.line(&format!("sigil up: logs in {}", log.display()));

    // The CA.
    let ca_config = setup::ca_config(settings)?;
    let ca = CaServer::bind(ca_config, ServerDeps::default())
        .await
        .map_err(|e| ca_error(settings, &e))?;
    let (ca_grpc, ca_admin) = (ca.grpc_addr()?, ca.admin_addr()?);
    let roots = ca.roots_pem();
    components.ca = Some(Task::spawn(|stop| ca.run(stop)));
    let authority = match &settings.ca_dir {
        Some(dir) => format!("plug-in CA from {}", dir.display()),
        // Whether this start made the root, the CA does not say.
        None => format!(
            "self-signed root in {} (made by the first start, then reused)",
            settings.ca_self_signed_dir().display()
        ),
    };
    term.line(&format!(
        "CA          https://{ca_grpc} (admin http://{ca_admin}), {authority}, trust domain {}",
        settings.trust_domain
    ));
    term.line(
        "note        trial settings: development tokens (dev:<ns>:<sa>) are trusted without \
         proof and the agent may obtain any identity; everything listens on loopback only",
    );

    // The node agent.
    let files = setup::write_agent_files(settings, &roots)?;
    let sockets = socket_dir()?;
    let agent_config = setup::agent_config(settings, &files, ca_grpc, sockets.path())?;
    let sds = agent_config.sds.socket.clone();
    let agent = Agent::bind(agent_config)
        .await
        .with_context(|| format!("cannot start the node agent (see {})", log.display()))?;
    let agent_admin = agent.admin_addr();
    components.agent = Some(Task::spawn(|stop| agent.run(stop)));
    term.line(&format!(
        "node agent  node mode, admin http://{agent_admin}/status, SDS {}",
        sds.display()
    ));

    // The demo service and the inbound proxy (SDS).
    let demo = Demo::start().await?;
    let demo_addr = demo.addr;
    components.demo = Some(demo);
    let policies = setup::write_policies(settings)?;
    let inbound_metrics = ProxyMetrics::default();
    let inbound_config = setup::inbound_config(settings, &sds, &policies, demo_addr)?;
    let (inbound, inbound_addr) =
        start_proxy(&inbound_config, inbound_metrics.clone(), "inbound").await?;
    let inbound_creds = inbound.credentials().clone();
    components.inbound = Some(inbound);
    let server_id = settings.server_id.to_string();
    let server_leaf = wait_for(shutdown, || Leaf::of(&inbound_creds), async || {
        anyhow::anyhow!(
            "the inbound proxy got no certificate for {server_id} over SDS within {}s: {} (see {})",
            ISSUE_TIMEOUT.as_secs(),
            agent_error(agent_admin, &server_id).await,
            log.display()
        )
    })
    .await?;

    // The outbound proxy (the agent's files).
    let client_id = settings.client_id.to_string();
    wait_for(
        shutdown,
        || setup::client_files_written(settings).then_some(()),
        async || {
            anyhow::anyhow!(
                "the node agent wrote no files for {client_id} in {} within {}s: {} (see {})",
                settings.client_dir().display(),
                ISSUE_TIMEOUT.as_secs(),
                agent_error(agent_admin, &client_id).await,
                log.display()
            )
        },
    )
    .await?;
    let outbound_config = setup::outbound_config(settings, inbound_addr)?;
    let (outbound, outbound_addr) =
        start_proxy(&outbound_config, ProxyMetrics::default(), "outbound").await?;
    let outbound_creds = outbound.credentials().clone();
    components.outbound = Some(outbound);
    let client_leaf =
        Leaf::of(&outbound_creds).context("the outbound proxy loaded no certificate")?;
    term.line(&format!(
        "proxies     outbound http://{outbound_addr} -> inbound {inbound_addr} (mTLS, policies {}) -> demo http://{demo_addr}",
        policies.display()
    ));
    term.line("");
    term.line("identities issued by the CA, through the node agent:");
    for (leaf, how) in [
        (&server_leaf, "inbound proxy, over SDS".to_owned()),
        (
            &client_leaf,
            format!(
                "outbound proxy, files in {}",
                settings.client_dir().display()
            ),
        ),
    ] {
        term.line(&format!(
            "  {}  serial {}  expires {} (in {})  [{how}]",
            leaf.id,
            leaf.serial,
            leaf.not_after_text(),
            leaf.expires_in(SystemTime::now())
        ));
    }
    term.line("");

    // One allowed and one denied request, and why.
    for path in ["/hello", "/admin"] {
        let answer = demo::get(outbound_addr, path).await?;
        term.line(&demo::result_line(path, &answer));
        let explained = demo::explain(&policies, &settings.client_id, demo_addr.port(), path);
        term.line(&demo::why(&explained, answer.status, &log));
    }
    term.line("");
    let hint = format!("try: curl http://{outbound_addr}/hello");
    term.line(&hint);
    term.line("");

    // The live status.
    let ids = [server_id.as_str(), client_id.as_str()];
    let proxies = [(ids[0], &inbound_creds), (ids[1], &outbound_creds)];
    let mut last: Option<Snapshot> = None;
    let mut agent_status: Option<StatusReport> = None;
    loop {
        if let Some(component) = components.ended() {
            anyhow::bail!(
                "the {component} stopped unexpectedly (see {})",
                log.display()
            );
        }
        match fetch_status(agent_admin).await {
            Ok(report) => agent_status = Some(report),
            Err(error) => tracing::warn!(error = format!("{error:#}"), "agent status"),
        }
        let snapshot = Snapshot::take(&proxies, agent_status.as_ref(), &inbound_metrics);
        let now = SystemTime::now();
        if term.is_tty() {
            term.redraw(&snapshot.block(&ids, now, &hint));
        } else if last.as_ref() != Some(&snapshot) {
            term.line(&snapshot.line(&ids, now));
        }
        last = Some(snapshot);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(REFRESH) => {}
        }
    }
}
