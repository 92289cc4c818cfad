//! The daemon: credentials from the configured source, every listener
//! bound and served until shutdown. The `sigil proxy` subcommand (not wired
//! yet) calls [`run`].

use std::future::Future;
use std::net::SocketAddr;

use sigil_identity::TrustDomain;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::authz::{Policies, PolicyState};
use crate::config::{ConfigError, ProxyConfig};
use crate::credentials::{Credentials, CredentialsError, FileCredentials};
use crate::listener::{ListenerError, Proxy};
use crate::metrics::ProxyMetrics;
use crate::sds::SdsClient;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The credential files could not be loaded.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// A policy file could not be read or is invalid.
    #[error("policy file {file}: {reason}")]
    Policy {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A listener could not start.
    #[error(transparent)]
    Listener(#[from] ListenerError),
}

/// A started daemon: its listeners' bound addresses, in config order.
#[derive(Debug)]
pub struct Running {
    /// The bound address of each listener.
    pub addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Running {
    /// Stops accepting, lets connections finish for up to the configured
    /// grace, stops the credential source, and returns when all is done.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Starts the credential source and every listener (metrics unregistered).
pub async fn start(config: &ProxyConfig) -> Result<Running, RunError> {
    start_with_metrics(config, ProxyMetrics::default()).await
}

/// [`start`], recording into `metrics`.
pub async fn start_with_metrics(
    config: &ProxyConfig,
    metrics: ProxyMetrics,
) -> Result<Running, RunError> {
    config.validate()?;
    // SEAM: loaded once here; hot reload and the JWT filter come next.
    let policies = Policies::new(load_policies(&config.policy)?);
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let creds = match (&config.credentials.files, &config.credentials.sds) {
        (Some(files), _) => {
            let loaded = FileCredentials::load(files, &config.trust_domain)?;
            let creds = loaded.credentials().clone();
            tasks.spawn(loaded.watch(shutdown.child_token()));
            creds
        }
        (None, Some(sds)) => {
            let td = TrustDomain::new(&config.trust_domain)
                .map_err(|_| CredentialsError::TrustDomain(config.trust_domain.clone()))?;
            let creds = Credentials::empty(td);
            tasks.spawn(
                SdsClient::new(sds.socket.clone(), creds.clone()).run(shutdown.child_token()),
            );
            creds
        }
        (None, None) => {
            return Err(ConfigError::Invalid {
                field: "credentials".to_owned(),
                reason: "no source".to_owned(),
            }
            .into());
        }
    };
    let mut addrs = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        let proxy = Proxy::bind(config, listener, &creds, policies.clone())
            .await?
            .with_metrics(metrics.clone());
        addrs.push(proxy.local_addr().unwrap_or(listener.listen));
        tasks.spawn(proxy.serve(shutdown.child_token()));
    }
    Ok(Running {
        addrs,
        shutdown,
        tasks,
    })
}

/// Runs until `shutdown` completes.
pub async fn run(config: &ProxyConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let running = start(config).await?;
    shutdown.await;
    running.shutdown().await;
    Ok(())
}

fn load_policies(config: &crate::config::PolicyConfig) -> Result<PolicyState, RunError> {
    let workload = crate::policy::Workload {
        namespace: config.namespace.clone(),
        labels: config.labels.clone(),
    };
    let mut docs = crate::policy::PolicyDocuments::default();
    for file in &config.files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|e| RunError::Policy {
            file: name.clone(),
            reason: e.to_string(),
        })?;
        docs.load_str(&name, &text).map_err(|e| RunError::Policy {
            file: name.clone(),
            reason: e.to_string(),
        })?;
    }
    let mut state = PolicyState::allow_all(workload);
    state.authorizer = crate::policy::Authorizer::new(
        docs.authorization,
        &config.root_namespace,
        config.path_normalization.into(),
    );
    state.mtls = crate::policy::compose(&docs.peer, &config.root_namespace, &state.workload);
    Ok(state)
}
