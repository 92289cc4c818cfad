//! `sigil proxy`: run the proxy (`sigil_proxy::daemon`) with its admin
//! listener.
//!
//! The configuration: built-in defaults, then the `--config` file, then
//! `SIGIL_PROXY__<SECTION>__<SETTING>` environment variables (any setting),
//! then the flags below; then validated once. An invalid configuration, or
//! an invalid policy file it names, exits 64 naming the setting (or the
//! file, document and field).
//!
//! The admin listener (`[admin] addr`, default
//! [`sigil_proxy::config::DEFAULT_ADMIN_ADDR`]) serves `/healthz`,
//! `/readyz` (200 while a credential is installed — from the files, or
//! the first SDS push — and the listeners serve; 503 before and while
//! draining) and
//! `/metrics` (the `sigil_proxy_*` families). SIGINT or SIGTERM: the
//! listeners stop accepting, connections get `shutdown_grace` to finish,
//! and the process exits 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use prometheus_client::registry::Registry;
use sigil_proxy::config::{ConfigError, ENV_PREFIX, ProxyConfig};
use sigil_proxy::{ProxyMetrics, RunError, Running};
use sigil_runtime::env::{EnvOverrides, Environment, ProcessEnvironment};
use tokio_util::sync::CancellationToken;

use crate::serve::{InvalidConfig, until_signal};

/// `sigil proxy`.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// TOML configuration file (see `sigil_proxy::config`); without it,
    /// everything comes from `SIGIL_PROXY__*` variables.
    #[arg(long, env = "SIGIL_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `admin.addr`.
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
}

/// Defaults < file < `SIGIL_PROXY__*` environment < flags; validated last.
fn load(args: &ProxyArgs, env: &dyn Environment) -> Result<ProxyConfig, InvalidConfig> {
    let invalid = |e: ConfigError| InvalidConfig(e.to_string());
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            InvalidConfig(format!(
                "cannot read the configuration file {}: {e}",
                path.display()
            ))
        })?,
        None => String::new(),
    };
    let overrides =
        EnvOverrides::from_env(env, ENV_PREFIX).map_err(|e| invalid(ConfigError::from(e)))?;
    let mut config: ProxyConfig = overrides
        .apply(&text)
        .map_err(|e| invalid(ConfigError::from(e)))?;
    if let Some(addr) = args.admin_addr {
        config.admin.addr = addr;
    }
    config.validate().map_err(|e| {
        let message = e.to_string();
        match e {
            ConfigError::Invalid { field, .. } => match overrides.set_by(&field) {
                Some(var) => InvalidConfig(format!("{message} (set by {})", var.var)),
                None => InvalidConfig(message),
            },
            _ => InvalidConfig(message),
        }
    })?;
    Ok(config)
}

pub(crate) fn run(args: &ProxyArgs) -> anyhow::Result<()> {
    let config = load(args, &ProcessEnvironment)?;
    tracing::info!(config = ?config, "configuration loaded");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

/// Starts the proxy's listeners; an invalid configuration or policy file
/// is an [`InvalidConfig`] (exit 64). Also used by `sigil up`.
pub(crate) async fn start(config: &ProxyConfig, metrics: ProxyMetrics) -> anyhow::Result<Running> {
    sigil_proxy::start_with_metrics(config, metrics)
        .await
        .map_err(|e| match e {
            RunError::Config(_) | RunError::Policy { .. } => {
                anyhow::Error::new(InvalidConfig(e.to_string()))
            }
            other => anyhow::Error::new(other),
        })
}

async fn serve(config: ProxyConfig) -> anyhow::Result<()> {
    let admin = tokio::net::TcpListener::bind(config.admin.addr)
        .await
        .with_context(|| format!("cannot listen on admin.addr {}", config.admin.addr))?;
    let admin_addr = admin
        .local_addr()
        .context("cannot read the admin listener's address")?;
    let mut registry = Registry::with_prefix("sigil");
    let metrics = ProxyMetrics::new(&mut registry);
    let running = start(&config, metrics).await?;
    tracing::info!(
        admin = %admin_addr,
        listeners = ?running.addrs,
        "proxy running"
    );
    // Ready while the daemon is (a credential installed, policies
    // loaded); not once draining starts (the daemon is taken out).
    let running = Arc::new(Mutex::new(Some(running)));
    let ready = {
        let running = running.clone();
        move || {
            running
                .lock()
                .is_ok_and(|daemon| daemon.as_ref().is_some_and(Running::ready))
        }
    };
    let registry = Arc::new(registry);
    let encode = move || {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    };
    let app = sigil_runtime::admin::router(ready, encode);
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(sigil_runtime::admin::serve(
        admin,
        app,
        sigil_runtime::admin::AdminLimits::default(),
        admin_stop.clone(),
    ));
    let served = until_signal(|shutdown| async move {
        shutdown.cancelled().await;
        tracing::info!("shutting down: draining the listeners");
        let daemon = running.lock().ok().and_then(|mut daemon| daemon.take());
        if let Some(daemon) = daemon {
            daemon.shutdown().await;
        }
        tracing::info!("listeners drained");
        anyhow::Ok(())
    })
    .await;
    admin_stop.cancel();
    if let Err(error) = admin_task.await {
        tracing::warn!(%error, "the admin listener task failed");
    }
    served
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const TOML: &str = "trust_domain = \"example.org\"\n\
        [credentials.files]\ncert_chain = \"c.pem\"\nkey = \"k.pem\"\nbundle = \"b.pem\"\n";

    fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn args_with(text: &str) -> (tempfile::TempDir, ProxyArgs) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("proxy.toml");
        std::fs::write(&file, text).unwrap();
        (
            dir,
            ProxyArgs {
                config: Some(file),
                admin_addr: None,
            },
        )
    }

    #[test]
    fn the_flag_overrides_the_environment() {
        let (_dir, mut args) = args_with(TOML);
        args.admin_addr = Some("127.0.0.1:3000".parse().unwrap());
        let config = load(
            &args,
            &env(&[("SIGIL_PROXY__ADMIN__ADDR", "127.0.0.1:2000")]),
        )
        .unwrap();
        assert_eq!(config.admin.addr.to_string(), "127.0.0.1:3000");
        args.admin_addr = None;
        let config = load(
            &args,
            &env(&[("SIGIL_PROXY__ADMIN__ADDR", "127.0.0.1:2000")]),
        )
        .unwrap();
        assert_eq!(config.admin.addr.to_string(), "127.0.0.1:2000");
    }

    #[test]
    fn an_invalid_setting_names_it_and_the_variable() {
        let (_dir, args) = args_with(TOML);
        let error = load(&args, &env(&[("SIGIL_PROXY__MAX_CONNECTIONS", "0")])).unwrap_err();
        assert!(
            error.0.contains("max_connections") && error.0.contains("SIGIL_PROXY__MAX_CONNECTIONS"),
            "{error}"
        );
        let error = load(&args, &env(&[("SIGIL_PROXY__MAX_CONECTIONS", "1")])).unwrap_err();
        assert!(error.0.contains("max_conections"), "{error}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let args = ProxyArgs {
            config: Some("/nonexistent/proxy.toml".into()),
            admin_addr: None,
        };
        let error = load(&args, &env(&[])).unwrap_err();
        assert!(error.0.contains("/nonexistent/proxy.toml"), "{error}");
    }
}
