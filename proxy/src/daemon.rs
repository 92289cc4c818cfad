//! The daemon: the policy files loaded (a missing or invalid one stops the
//! start) and watched ([`crate::reload`]), credentials from the configured
//! source, every listener bound and served until shutdown; all its tasks
//! tracked and stopped by [`Running::shutdown`]. The `[[federation]]`
//! bundles are loaded (an invalid one stops the start) and watched too. The `sigil proxy`
//! subcommand starts it and builds `/readyz` on [`Running::ready`].

use std::future::Future;
use std::net::SocketAddr;

use sigil_identity::TrustDomain;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::authz::Policies;
use crate::config::{ConfigError, ProxyConfig};
use crate::credentials::{Credentials, CredentialsError, FileCredentials};
use crate::federation::FederatedBundles;
use crate::listener::{ListenerError, Proxy};
use crate::metrics::ProxyMetrics;
use crate::reload::{PolicyError, PolicyStore};
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

impl From<PolicyError> for RunError {
    fn from(e: PolicyError) -> Self {
        Self::Policy {
            file: e.file,
            reason: e.reason,
        }
    }
}

/// A started daemon: its listeners' bound addresses, in config order.
#[derive(Debug)]
pub struct Running {
    /// The bound address of each listener.
    pub addrs: Vec<SocketAddr>,
    creds: Credentials,
    policies: Policies,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Running {
    /// Whether the proxy can serve: a credential is installed (from the
    /// files, or the first SDS push) and the policies are loaded (they
    /// always are once [`start`] returned: a policy set that fails to load
    /// stops the start).
    pub fn ready(&self) -> bool {
        self.creds.is_ready()
    }

    /// The credential material the listeners present and verify with (the
    /// SVID installed now, the bundles), e.g. to show which certificate
    /// is in use.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// The policies in force (hot reloaded).
    pub fn policies(&self) -> Policies {
        self.policies.clone()
    }

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
    let store = PolicyStore::load(&config.policy, metrics.clone())?;
    let policies = store.policies();
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    // A start that fails after the credential source was spawned stops it.
    let stop_on_error = shutdown.clone().drop_guard();
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
    FederatedBundles::load(&config.federation, &creds)?.watch(&tasks, &shutdown);
    let mut addrs = Vec::with_capacity(config.listeners.len());
    let mut proxies = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        let proxy = Proxy::bind(config, listener, &creds, policies.clone())
            .await?
            .with_metrics(metrics.clone());
        addrs.push(proxy.local_addr().unwrap_or(listener.listen));
        proxies.push(proxy);
    }
    for proxy in proxies {
        tasks.spawn(proxy.serve(shutdown.child_token()));
    }
    tasks.spawn(store.watch(shutdown.child_token()));
    stop_on_error.disarm();
    Ok(Running {
        addrs,
        creds,
        policies,
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
