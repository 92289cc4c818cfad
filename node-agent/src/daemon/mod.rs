//! The agent daemon: configuration in, running servers out.
//!
//! ```text
//! AgentConfig ─▶ Agent::bind ─▶ Bound { admin, sds, workload listeners }
//!                                  │ run(shutdown)
//!   CaClient ─▶ CaSigner ─▶ CertManager (one timer queue) ──▶ CredentialSource
//!   ProcAttestor (+ pods) ─▶ Registry ─▶ WorkloadCallers ───▶ CallerIdentities
//!                         SDS, Workload API (unix sockets), file output, admin
//! ```
//!
//! `bind` reads every file the configuration names (`ca.roots_file`, the
//! registration file) and binds every listener, so a bad path or a taken
//! port fails before anything is served ([`AgentError`] names the setting);
//! the CA is connected lazily, so the agent starts while the CA is down.
//! `run` starts the certificate manager, the registration watcher, the file
//! output and the servers, and on shutdown stops accepting, ends the open
//! streams, drains for `admin.shutdown_grace` and removes the sockets.
//!
//! Who gets what: sidecar mode without a registration file serves
//! `attestation.identity` to every caller (no attestation); otherwise
//! callers are attested ([`crate::attest`], with pod lookups when
//! `kubernetes.enabled`) and matched against the registry, whose
//! Kubernetes default entry is on when `kubernetes.enabled`.
//!
//! Admin listener (`admin.addr`): `/healthz` (200 while running),
//! `/readyz` (200 once the sockets serve; in sidecar mode also while the
//! workload's certificate, asked for at start, is valid; 503 while
//! draining), `/metrics` (prefix `sigil_agent_`) and `/status`
//! ([`StatusReport`], what `sigil agent status` prints).

mod admin;
mod error;
mod status;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::error::AgentError;
pub use self::status::{IdentityStatus, StatusReport};

use crate::attest::{AttestSettings, KubePodLookup, PodLookupSettings, ProcAttestor};
use crate::ca_client::{CaClient, CaClientConfig, ClientIdentity, TokenSource};
use crate::config::{AgentConfig, Mode};
use crate::files::{FileOutput, FileOutputMetrics, FileOutputSettings, ReloadSignal, SignalTarget};
use crate::manager::{
    CaSigner, CertManager, ManagerMetrics, ManagerSettings, SignerMode, SystemClock,
};
use crate::peer::CallerIdentities;
use crate::registry::{DefaultEntry, Registry, RegistryMetrics, RegistrySettings, WorkloadCallers};
use crate::sds::{Sds, SdsMetrics, SdsSettings};
use crate::source::{CredentialSource, SvidState};
use crate::uds::{self, UdsSettings};
use crate::workload::{WorkloadApi, WorkloadMetrics};

/// Entry point: [`Agent::bind`].
#[derive(Debug)]
pub struct Agent;

/// A bound agent: listeners open, nothing served yet.
pub struct Bound {
    config: AgentConfig,
    admin: TcpListener,
    admin_addr: SocketAddr,
    sds: Option<(UnixListener, PathBuf)>,
    workload: Option<(UnixListener, PathBuf)>,
    ca: CaClient,
    token: TokenSource,
    callers: Arc<dyn CallerIdentities>,
    registry: Option<Registry>,
    metrics: MetricsRegistry,
    manager_metrics: ManagerMetrics,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("admin_addr", &self.admin_addr)
            .field("sds", &self.sds.as_ref().map(|s| &s.1))
            .field("workload", &self.workload.as_ref().map(|s| &s.1))
            .finish_non_exhaustive()
    }
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, AgentError> {
    std::fs::read(path).map_err(|e| AgentError::File {
        setting,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn component(setting: &'static str) -> impl Fn(String) -> AgentError {
    move |reason| AgentError::Component { setting, reason }
}

/// The host of an `https://host:port/...` URL (brackets of an IPv6
/// literal removed).
fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().map(str::to_owned);
    }
    authority.split(':').next().map(str::to_owned)
}

impl Agent {
    /// Reads the files the configuration names, builds the components and
    /// binds every listener. Nothing is served until [`Bound::run`].
    pub async fn bind(config: AgentConfig) -> Result<Bound, AgentError> {
        let mut metrics = MetricsRegistry::with_prefix("sigil_agent");

        // The CA: roots, name, credentials. Connected lazily: the agent
        // starts (and serves what it can) while the CA is down.
        let roots_pem = read("ca.roots_file", &config.ca.roots_file)?;
        let server_name = match &config.ca.server_name {
            Some(name) => name.clone(),
            None => url_host(&config.ca.address).ok_or_else(|| AgentError::Component {
                setting: "ca.address",
                reason: format!("cannot find a host name in {}", config.ca.address),
            })?,
        };
        let mut client_config =
            CaClientConfig::new(config.ca.address.clone(), roots_pem, server_name);
        client_config.connect_timeout = config.ca.connect_timeout;
        client_config.request_timeout = config.ca.request_timeout;
        if let (Some(chain), Some(key)) = (&config.ca.client_cert_file, &config.ca.client_key_file)
        {
            client_config.client_identity = Some(ClientIdentity::Files {
                chain: chain.clone(),
                key: key.clone(),
            });
        }
        let ca = CaClient::connect_lazy(&client_config)
            .await
            .map_err(|e| component("ca")(e.to_string()))?;
        let token = config
            .ca
            .token_file
            .clone()
            .map_or(TokenSource::None, TokenSource::File);

        // Who gets what.
        let (callers, registry): (Arc<dyn CallerIdentities>, Option<Registry>) = match (
            config.mode,
            &config.attestation.registration_file,
            &config.attestation.identity,
        ) {
            (Mode::Sidecar, None, Some(id)) => (Arc::new(WorkloadCallers::fixed(id.clone())), None),
            _ => {
                let mut settings = RegistrySettings::new(config.trust_domain.clone());
                settings
                    .path
                    .clone_from(&config.attestation.registration_file);
                settings.poll_interval = config.attestation.reload_interval;
                if config.kubernetes.enabled {
                    settings.default_entry = DefaultEntry::Kubernetes;
                }
                let registry = Registry::load(settings, RegistryMetrics::new(&mut metrics))
                    .map_err(|e| component("attestation.registration_file")(e.to_string()))?;
                let attestor = attestor(&config).await?;
                (
                    Arc::new(WorkloadCallers::attested(attestor, registry.clone())),
                    Some(registry),
                )
            }
        };

        // Listeners last: everything above can fail without leaving a socket.
        let admin_error = |e: std::io::Error| AgentError::Listen {
            setting: "admin.addr",
            address: config.admin.addr.to_string(),
            reason: e.to_string(),
        };
        let admin = TcpListener::bind(config.admin.addr)
            .await
            .map_err(admin_error)?;
        let admin_addr = admin.local_addr().map_err(admin_error)?;
        let sds = bind_socket(
            "sds.socket",
            config.sds.enabled,
            &config.sds.socket,
            config.sds.mode,
        )?;
        let workload = bind_socket(
            "workload_api.socket",
            config.workload_api.enabled,
            &config.workload_api.socket,
            config.workload_api.mode,
        )?;
        let manager_metrics = ManagerMetrics::new(&mut metrics);
        Ok(Bound {
            config,
            admin,
            admin_addr,
            sds,
            workload,
            ca,
            token,
            callers,
            registry,
            metrics,
            manager_metrics,
        })
    }
}

/// Binds the unix socket of `setting` at `path` with `mode`, if `enabled`.
fn bind_socket(
    setting: &'static str,
    enabled: bool,
    path: &Path,
    mode: u32,
) -> Result<Option<(UnixListener, PathBuf)>, AgentError> {
    if !enabled {
        return Ok(None);
    }
    let listener = uds::bind(path, mode).map_err(|e| AgentError::Listen {
        setting,
        address: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(Some((listener, path.to_owned())))
}

async fn attestor(config: &AgentConfig) -> Result<ProcAttestor, AgentError> {
    let settings = AttestSettings::default();
    if !config.kubernetes.enabled {
        return Ok(ProcAttestor::new(settings));
    }
    let node = config.kubernetes.node_name.clone().unwrap_or_default();
    let lookup_settings = PodLookupSettings::new(node);
    let lookup = match &config.kubernetes.api_url {
        Some(url) => KubePodLookup::for_url(url, None, lookup_settings),
        None => KubePodLookup::infer(lookup_settings).await,
    }
    .map_err(|e| component("kubernetes")(e.to_string()))?;
    Ok(ProcAttestor::kubernetes(settings, Arc::new(lookup)))
}

fn manager_settings(config: &AgentConfig) -> Result<ManagerSettings, AgentError> {
    let certs = &config.certificates;
    let settings = ManagerSettings {
        key_algorithm: certs
            .key_algorithm
            .parse()
            .map_err(|e: crate::keys::KeyError| {
                component("certificates.key_algorithm")(e.to_string())
            })?,
        trust_domain: Some(config.trust_domain.clone()),
        requested_ttl: certs.ttl,
        renew_fraction: certs.renew_fraction,
        jitter_fraction: certs.jitter_fraction,
        backoff_initial: certs.backoff_initial,
        backoff_max: certs.backoff_max,
        idle_drop: certs.idle_drop,
        max_in_flight: config.ca.max_concurrent_requests,
        jwt_ttl: Some(certs.jwt_svid_ttl),
        ..ManagerSettings::default()
    };
    settings.validate().map_err(component("certificates"))?;
    Ok(settings)
}

fn file_output_settings(config: &AgentConfig) -> Option<Result<FileOutputSettings, AgentError>> {
    let files = config.file_output.as_ref()?;
    let mut settings = FileOutputSettings::new(files.identity.clone(), files.dir.clone());
    settings.cert_file_name.clone_from(&files.cert_file_name);
    settings.key_file_name.clone_from(&files.key_file_name);
    settings
        .bundle_file_name
        .clone_from(&files.bundle_file_name);
    if !files.command.is_empty() {
        settings.command = Some(files.command.clone());
    }
    if let Some(pid_file) = &files.pid_file {
        let Some(signal) = ReloadSignal::parse(&files.signal) else {
            return Some(Err(component("file_output.signal")(format!(
                "unknown signal {}",
                files.signal
            ))));
        };
        settings.signal = Some(SignalTarget {
            pid_file: pid_file.clone(),
            signal,
        });
    }
    Some(Ok(settings))
}

impl Bound {
    /// The admin listener's address (port 0 in the configuration is
    /// resolved here).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves until `shutdown` fires, then drains and removes the sockets.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let Self {
            config,
            admin,
            admin_addr: _,
            sds,
            workload,
            ca,
            token,
            callers,
            registry,
            mut metrics,
            manager_metrics,
        } = self;
        let settings = manager_settings(&config)?;
        let files = file_output_settings(&config).transpose()?;
        // Two trackers: the socket servers (and their connections) drain
        // first, then the manager, watchers, file output and admin stop.
        let servers = TaskTracker::new();
        let tasks = TaskTracker::new();
        let servers_stop = shutdown.child_token();
        let background_stop = CancellationToken::new();

        let mode = match config.mode {
            Mode::Node => SignerMode::Node,
            Mode::Sidecar => SignerMode::Sidecar,
        };
        let signer = Arc::new(CaSigner::new(ca, token, mode));
        let manager = CertManager::start(
            settings,
            signer,
            Arc::new(SystemClock),
            manager_metrics,
            background_stop.clone(),
            &tasks,
        );
        let source: Arc<dyn CredentialSource> = Arc::new(manager.clone());
        // A sidecar holds its one identity from the start (as istio-agent
        // does), so it is issued before the workload asks and readiness
        // means "the workload's certificate is here".
        let pinned = match (config.mode, &config.attestation.identity) {
            (Mode::Sidecar, Some(id)) => Some(source.watch_x509(id)),
            _ => None,
        };
        if let Some(registry) = &registry {
            registry.spawn_watcher(&tasks, background_stop.clone());
        }
        if let Some(files) = files {
            // The file output holds its identity for as long as the agent runs.
            FileOutput::new(files, source.clone(), FileOutputMetrics::new(&mut metrics))
                .spawn(&tasks, background_stop.clone());
        }

        let uds_settings = UdsSettings::default();
        let mut sockets = Vec::new();
        let serving = Arc::new(AtomicBool::new(false));
        if let Some((listener, path)) = sds {
            let service = Sds::new(
                source.clone(),
                callers.clone(),
                SdsSettings::default(),
                SdsMetrics::new(&mut metrics),
                servers_stop.clone(),
            )
            .into_server();
            servers.spawn(uds::serve(
                listener,
                service,
                uds_settings.clone(),
                servers_stop.clone(),
                servers.clone(),
            ));
            tracing::info!(socket = %path.display(), "SDS serving");
            sockets.push(path);
        }
        if let Some((listener, path)) = workload {
            let service = WorkloadApi::new(
                source.clone(),
                callers.clone(),
                WorkloadMetrics::new(&mut metrics),
                servers_stop.clone(),
            )
            .into_server();
            servers.spawn(uds::serve(
                listener,
                service,
                uds_settings.clone(),
                servers_stop.clone(),
                servers.clone(),
            ));
            tracing::info!(socket = %path.display(), "SPIFFE Workload API serving");
            sockets.push(path);
        }
        serving.store(true, Ordering::SeqCst);

        let metrics = Arc::new(metrics);
        let ready = {
            let serving = serving.clone();
            // Node mode: ready once the sockets serve; one workload whose
            // identity fails (shown in /status and the metrics) must not
            // make the whole node's agent unready and stall a rollout.
            // Sidecar mode: also the workload's certificate is valid now.
            move || {
                serving.load(Ordering::SeqCst)
                    && pinned
                        .as_ref()
                        .is_none_or(|state| matches!(*state.borrow(), SvidState::Ready(_)))
            }
        };
        let encode = {
            let metrics = metrics.clone();
            let manager = manager.clone();
            move || {
                manager.refresh_metrics();
                let mut out = String::new();
                if prometheus_client::encoding::text::encode(&mut out, &metrics).is_err() {
                    out.clear();
                }
                out
            }
        };
        let status = {
            let manager = manager.clone();
            let mode = match config.mode {
                Mode::Node => "node",
                Mode::Sidecar => "sidecar",
            };
            let ca = config.ca.address.clone();
            move || status_report(&manager, mode, &ca)
        };
        let app = admin::router(ready, encode, status);
        let admin_stop = CancellationToken::new();
        tasks.spawn(sigil_runtime::admin::serve(
            admin,
            app,
            sigil_runtime::admin::AdminLimits::default(),
            admin_stop.clone(),
        ));
        tracing::info!(mode = ?config.mode, ca = %config.ca.address, "agent running");

        shutdown.cancelled().await;
        tracing::info!("shutting down: draining the sockets");
        serving.store(false, Ordering::SeqCst);
        servers_stop.cancel();
        servers.close();
        let grace = config.admin.shutdown_grace;
        let drained = sigil_runtime::shutdown::drain(&servers, grace).await;
        tracing::info!(?drained, "sockets drained");
        background_stop.cancel();
        admin_stop.cancel();
        tasks.close();
        tasks.wait().await;
        for path in sockets {
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::debug!(socket = %path.display(), %error, "cannot remove the socket");
            }
        }
        Ok(())
    }
}

fn status_report(manager: &CertManager, mode: &str, ca: &str) -> StatusReport {
    let now = SystemTime::now();
    let identities = manager
        .status()
        .into_iter()
        .map(|s| {
            let expires_in_secs = s.not_after.map(|t| match t.duration_since(now) {
                Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
            });
            IdentityStatus {
                spiffe_id: s.spiffe_id.to_string(),
                not_after: s
                    .not_after
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                expires_in_secs,
                rotations: s.rotations,
                last_error: s.last_error,
            }
        })
        .collect();
    StatusReport {
        mode: mode.to_owned(),
        ca: ca.to_owned(),
        identities,
    }
}
