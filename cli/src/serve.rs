//! `sigil ca serve`: load the configuration, bind, serve until SIGINT or
//! SIGTERM, drain.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use sigil_ca::config::CaConfig;
use sigil_ca::server::{CaServer, ServerDeps};
use sigil_identity::TrustDomain;
use tokio_util::sync::CancellationToken;

/// Marks a configuration error (exit code 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidConfig(String);

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file; without it, the zero-config default
    /// (self-signed CA in ./sigil-data/ca, loopback, development
    /// authenticator).
    #[arg(long, env = "SIGIL_CA_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `trust_domain`.
    #[arg(long, env = "SIGIL_TRUST_DOMAIN")]
    trust_domain: Option<TrustDomain>,
    /// Overrides `authority.dir`.
    #[arg(long, env = "SIGIL_CA_DIR")]
    dir: Option<PathBuf>,
    /// Overrides `server.grpc_addr`.
    #[arg(long, env = "SIGIL_GRPC_ADDR")]
    grpc_addr: Option<SocketAddr>,
    /// Overrides `server.admin_addr`.
    #[arg(long, env = "SIGIL_ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
}

/// Defaults < file < environment < flags (clap merges the last two).
fn load(args: &ServeArgs) -> Result<CaConfig, InvalidConfig> {
    let mut config = match &args.config {
        Some(path) => CaConfig::from_file(path).map_err(|e| InvalidConfig(e.to_string()))?,
        None => CaConfig::default(),
    };
    if let Some(td) = &args.trust_domain {
        config.trust_domain = td.clone();
    }
    if let Some(dir) = &args.dir {
        config.authority.dir = dir.clone();
    }
    if let Some(addr) = args.grpc_addr {
        config.server.grpc_addr = addr;
    }
    if let Some(addr) = args.admin_addr {
        config.server.admin_addr = addr;
    }
    config
        .validate()
        .map_err(|e| InvalidConfig(e.to_string()))?;
    Ok(config)
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args)?;
    tracing::info!(config = ?config, "configuration loaded");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let deps = ServerDeps {
            kube: crate::kube::deps(&config).await?,
        };
        let bound = CaServer::bind(config, deps).await?;
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signals.cancel();
        });
        bound.run(shutdown).await?;
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown signal received");
}
