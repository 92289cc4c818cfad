//! The CA as a network service: Istio's certificate API and Sigil's
//! `IdentityService` (JWT-SVIDs, the bundle) over TLS on the gRPC port, and
//! an admin port for health, metrics and the trust bundle.
//!
//! ```text
//! CaServer::bind(config, deps) ──▶ Bound { grpc_addr, admin_addr }   (sockets bound, CA loaded)
//! Bound::run(shutdown)         ──▶ serves until `shutdown` is cancelled, then:
//!     not ready ─▶ stop accepting ─▶ drain in-flight requests (≤ shutdown_grace) ─▶ stop tasks
//! ```
//!
//! Connections are served by `server.workers` threads, each with its own
//! single-threaded runtime (see `workers`). Background tasks on the
//! caller's runtime (all tracked and cancelled at shutdown): the TCP accept
//! loop, the serving-certificate renewer (half-life, and whenever the
//! authority changes), the JWT signing key rotation, the plug-in directory watcher, and the bundle
//! ConfigMap publisher.

mod admin;
mod authenticators;
mod authority;
mod call;
mod coalesce;
mod conn;
mod error;
mod grpc;
mod identity;
mod metrics;
mod reload;
mod renew;
mod route;
mod state;
mod tls;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use sigil_identity::verify::BundleHandle;
use sigil_identity::{BundleSet, CredentialResolver, TrustBundle};
use sigil_runtime::shutdown::{Drained, drain};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use error::ServeError;
pub use metrics::Metrics;

use crate::authn::{
    Authenticator, AuthnChain, DevelopmentAuthenticator, SvidAuthenticator,
    TokenReviewAuthenticator,
};
use crate::authz::Authorizer;
use crate::config::{AuthenticatorConfig, CaConfig};
use crate::issue::{CertIssuer, Ttl};
use crate::jwtsvid::KeyRing;
use crate::k8s::{BundlePublisher, CaSecretStore, PodDirectory, TokenReviewer};
use state::Shared;

/// Kubernetes clients the server uses when `[kubernetes] enabled = true`.
#[derive(Clone)]
pub struct KubeDeps {
    /// TokenReview.
    pub reviewer: Arc<dyn TokenReviewer>,
    /// Pod lookups for impersonation checks.
    pub pods: Arc<dyn PodDirectory>,
    /// The CA Secret.
    pub secrets: Arc<dyn CaSecretStore>,
    /// The bundle ConfigMaps.
    pub publisher: Arc<dyn BundlePublisher>,
}

impl std::fmt::Debug for KubeDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeDeps")
    }
}

/// What the server needs from outside its config.
#[derive(Clone, Debug, Default)]
pub struct ServerDeps {
    /// Kubernetes clients; required when `[kubernetes] enabled = true`.
    pub kube: Option<KubeDeps>,
}

/// The CA server.
#[derive(Debug)]
pub struct CaServer;

/// A bound, not yet serving, CA server.
pub struct Bound {
    grpc: TcpListener,
    admin: TcpListener,
    config: CaConfig,
    shared: Arc<Shared>,
    resolver: Arc<CredentialResolver>,
    acceptor: TlsAcceptor,
    kube: Option<KubeDeps>,
    /// The plug-in directory's fingerprint from before the load.
    plugin_fingerprint: Option<reload::Fingerprint>,
}

impl CaServer {
    /// Loads (or creates) the authority, builds authenticators, and binds
    /// both listeners. Nothing is served until [`Bound::run`].
    pub async fn bind(config: CaConfig, deps: ServerDeps) -> Result<Bound, ServeError> {
        config.validate()?;
        let policy = config.issuance_policy()?;
        if config.kubernetes.enabled && deps.kube.is_none() {
            return Err(ServeError::Setup(
                "[kubernetes] enabled = true but no Kubernetes client was provided".into(),
            ));
        }
        let loaded = authority::load(&config, deps.kube.as_ref()).await?;
        let issuer = CertIssuer::new(Arc::new(loaded.authority), policy);

        let authn = build_authn(&config, &deps)?;
        let authz = Authorizer::new(
            config.trust_domain.clone(),
            config.authorization.node_agents.clone(),
            deps.kube
                .as_ref()
                .filter(|_| config.kubernetes.check_impersonation_node)
                .map(|k| k.pods.clone()),
        );

        let serving = renew::issue_serving(&issuer, &config)?;
        let resolver = Arc::new(CredentialResolver::new());
        tls::store_serving(&resolver, &serving)?;
        let client_bundles =
            BundleHandle::new(BundleSet::from(TrustBundle::with_x509_authorities(
                config.trust_domain.clone(),
                issuer.authority().roots().iter().cloned(),
            )));
        let tls = tls::server_config(
            resolver.clone(),
            client_bundles.clone(),
            config.trust_domain.clone(),
        )?;
        let jwt_settings = config.jwt_svid_settings();
        let jwt = tokio::task::spawn_blocking(move || {
            KeyRing::open(jwt_settings, std::time::SystemTime::now())
        })
        .await
        .map_err(|e| ServeError::Setup(e.to_string()))?
        .map_err(|e| ServeError::component("jwt_svid", e))?;
        tracing::info!(
            key_dir = jwt.settings().key_dir.as_ref().map(|d| tracing::field::display(d.display())),
            algorithm = %jwt.settings().algorithm,
            active_kid = jwt.active_kid().as_deref().unwrap_or(""),
            "JWT-SVID signing keys ready"
        );
        let (authority_changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            issuer: ArcSwap::from_pointee(issuer),
            authn,
            authz,
            metrics: Metrics::new(),
            limit: Semaphore::new(config.server.max_concurrent_requests),
            ready: AtomicBool::new(false),
            bundle_sequence: AtomicU64::new(1),
            client_bundles,
            authority_changed,
            jwt: Arc::new(jwt),
        });
        reload::report(shared.issuer.load().authority(), &shared.metrics);

        let grpc = bind(config.server.grpc_addr, "server.grpc_addr").await?;
        let admin = bind(config.server.admin_addr, "server.admin_addr").await?;
        Ok(Bound {
            grpc,
            admin,
            shared,
            resolver,
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            kube: deps.kube,
            plugin_fingerprint: loaded.fingerprint,
            config,
        })
    }
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("grpc", &self.grpc.local_addr().ok())
            .field("admin", &self.admin.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Bound {
    /// The gRPC listener's address.
    pub fn grpc_addr(&self) -> Result<SocketAddr, ServeError> {
        self.grpc
            .local_addr()
            .map_err(|e| ServeError::io("the gRPC listener's address", e))
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> Result<SocketAddr, ServeError> {
        self.admin
            .local_addr()
            .map_err(|e| ServeError::io("the admin listener's address", e))
    }

    /// The current trust bundle's roots, PEM.
    pub fn roots_pem(&self) -> String {
        self.shared.bundle().to_pem()
    }

    /// Serves until `shutdown` is cancelled, then drains and stops.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let Bound {
            grpc,
            admin,
            config,
            shared,
            resolver,
            acceptor,
            kube,
            plugin_fingerprint,
        } = self;
        let tasks = TaskTracker::new();
        // Background tasks stop on `stop`, which fires after the drain.
        let stop = CancellationToken::new();
        let grace = config.server.shutdown_grace;

        if config
            .authenticators
            .contains(&AuthenticatorConfig::Development)
        {
            tracing::warn!(
                grpc_addr = %config.server.grpc_addr,
                "the development authenticator is enabled: `dev:<ns>:<sa>` tokens are trusted without proof; use only on loopback for trials"
            );
        }
        if config.impersonation_unbounded() {
            shared.metrics.unbounded_impersonation.set(1);
            tracing::warn!(
                node_agents = ?config.authorization.node_agents,
                "authorization.unbounded_impersonation = true: node agents may obtain any identity of the trust domain, from any node (no pod-on-node check)"
            );
        }

        // TLS accept loop → connection workers (handshake, tonic, issuance).
        let setup = workers::WorkerSetup {
            shared: shared.clone(),
            acceptor,
            server: config.server.clone(),
        };
        let worker_count = workers::count(config.server.workers);
        let (mut dispatcher, mut workers) = workers::start(worker_count, &setup, &shutdown, &stop)?;
        tasks.spawn(tls::accept_loop(
            grpc,
            tls::AcceptLimits {
                max_connections: config.server.max_connections,
                max_per_ip: config.server.max_connections_per_ip,
            },
            move |accepted| dispatcher.dispatch(accepted),
            shutdown.clone(),
        ));

        // Admin: keeps answering (readyz 503) until the gRPC drain is over.
        let admin_server = sigil_runtime::admin::serve(
            admin,
            admin::router(shared.clone()),
            sigil_runtime::admin::AdminLimits {
                max_connections: config.server.admin_max_connections,
                header_read_timeout: config.server.admin_header_timeout,
                idle_timeout: config.server.admin_idle_timeout,
            },
            stop.clone(),
        );

        // Serving-certificate renewal.
        tasks.spawn(renew::renew_serving_cert(
            shared.clone(),
            resolver,
            config.clone(),
            stop.clone(),
        ));
        // JWT signing key rotation.
        tasks.spawn(identity::rotate_jwt_keys(shared.clone(), stop.clone()));
        // Plug-in directory watcher (`authority.source = "files"`).
        if let Some(loaded) = plugin_fingerprint {
            tasks.spawn(reload::watch_dir(
                config.authority.dir.clone(),
                config.trust_domain.clone(),
                config.issuance_policy()?,
                config.authority.reload_interval,
                loaded,
                shared.clone(),
                stop.clone(),
            ));
        }
        // Bundle publication.
        if let Some(kube) = kube.filter(|_| config.kubernetes.publish_bundle) {
            tasks.spawn(authority::publish_bundle(
                kube.publisher,
                shared.clone(),
                config.kubernetes.publish_interval,
                stop.clone(),
            ));
        }

        shared.ready.store(true, Ordering::SeqCst);
        tracing::info!(
            grpc_addr = %config.server.grpc_addr,
            admin_addr = %config.server.admin_addr,
            trust_domain = %config.trust_domain,
            workers = worker_count,
            "sigil CA serving"
        );

        let admin_task = tasks.spawn(admin_server);
        shutdown.cancelled().await;
        shared.ready.store(false, Ordering::SeqCst);
        tracing::info!(grace = ?grace, "shutting down: draining in-flight requests");
        let drained = tokio::time::timeout(grace, workers.drained()).await;
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), workers.exited()).await;
        let admin = tokio::time::timeout(Duration::from_secs(5), admin_task).await;
        if drained.is_err() {
            tracing::warn!("drain deadline passed; dropping remaining connections");
        }
        if !matches!(admin, Ok(Ok(()))) {
            tracing::warn!(?admin, "the admin listener stopped with an error");
        }
        // Whatever is left (handshakes, background tasks) was told to stop.
        if let Drained::TimedOut { remaining } = drain(&tasks, Duration::from_secs(5)).await {
            tracing::warn!(remaining, "background tasks did not stop in time");
        }
        Ok(())
    }
}

async fn bind(addr: SocketAddr, field: &'static str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|e| ServeError::Bind {
        field,
        addr,
        source: Arc::new(e),
    })
}

fn build_authn(config: &CaConfig, deps: &ServerDeps) -> Result<AuthnChain, ServeError> {
    let mut chain: Vec<Box<dyn Authenticator>> = Vec::new();
    for (index, a) in config.authenticators.iter().enumerate() {
        let built: Box<dyn Authenticator> = match a {
            AuthenticatorConfig::Development => {
                Box::new(DevelopmentAuthenticator::new(config.trust_domain.clone()))
            }
            AuthenticatorConfig::Svid => Box::new(
                SvidAuthenticator::new(config.trust_domain.clone()).with_max_ttl(
                    Ttl::from_duration(config.svid_max_ttl())
                        .map_err(|e| ServeError::component("issuance.svid_max_ttl", e))?,
                ),
            ),
            AuthenticatorConfig::KubernetesTokenReview {
                audiences,
                cache_size,
            } => {
                let kube = deps.kube.as_ref().ok_or_else(|| {
                    ServeError::Setup(format!(
                        "authenticators[{index}]: TokenReview needs Kubernetes"
                    ))
                })?;
                Box::new(TokenReviewAuthenticator::new(
                    config.trust_domain.clone(),
                    kube.reviewer.clone(),
                    audiences.clone(),
                    *cache_size,
                ))
            }
            AuthenticatorConfig::KubernetesJwt { .. } | AuthenticatorConfig::Oidc { .. } => {
                authenticators::jwt_authenticator(index, a, config)?
            }
        };
        chain.push(built);
    }
    Ok(AuthnChain::new(chain))
}
