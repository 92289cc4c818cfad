//! `sigil ca serve`: load the configuration, bind, serve until SIGINT or
//! SIGTERM, drain.
//!
//! The configuration: built-in defaults, then the `--config` file, then
//! `SIGIL_CA__<SECTION>__<SETTING>` environment variables (any setting; see
//! `sigil_ca::config::env`), then the flags below (some of which also read a
//! variable of their own, e.g. `SIGIL_GRPC_ADDR`, at the flag's rank); then
//! validated once.
//!
//! Without `--config` it is the trial ([`CaConfig::trial`]): the defaults
//! plus the `development` and `svid` authenticators, loopback only (a
//! non-loopback `server.grpc_addr` is refused, whichever layer sets it). A
//! file must name its `[[authenticators]]`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use sigil_ca::config::{CaConfig, ConfigError, EnvOverrides, Environment, ProcessEnvironment};
use sigil_ca::server::{CaServer, ServerDeps};
use sigil_identity::TrustDomain;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Marks a configuration error (exit code 64).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct InvalidConfig(pub(crate) String);

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (it must list `[[authenticators]]`); without
    /// it, the trial: self-signed CA in ./sigil-data/ca, loopback only, the
    /// development authenticator.
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

/// Defaults < file < `SIGIL_CA__*` environment < flags (clap reads the
/// flags and their own variables); validated last, so a flag may correct
/// what the layers under it set.
fn load(args: &ServeArgs, env: &dyn Environment) -> Result<CaConfig, InvalidConfig> {
    let invalid = |e: ConfigError| InvalidConfig(e.to_string());
    let overrides = EnvOverrides::from_env(env).map_err(invalid)?;
    let text = match &args.config {
        Some(path) => CaConfig::read_file(path).map_err(invalid)?,
        None => CaConfig::trial_toml().map_err(invalid)?,
    };
    let mut config = overrides.apply(&text).map_err(invalid)?;
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
        .map_err(|e| invalid(overrides.attribute(e)))?;
    if !overrides.is_empty() {
        let variables: Vec<&str> = overrides.iter().map(|o| o.var.as_str()).collect();
        tracing::info!(?variables, "settings from the environment");
    }
    Ok(config)
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args, &ProcessEnvironment)?;
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
        until_signal(|shutdown| bound.run(shutdown)).await
    })
}

/// Runs a daemon's `run(shutdown)` with `shutdown` cancelled on SIGINT or
/// SIGTERM, and returns its result once the signal task has ended too.
pub(crate) async fn until_signal<F, Fut, E>(run: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    let shutdown = CancellationToken::new();
    let signals = TaskTracker::new();
    sigil_runtime::shutdown::cancel_on_signal(&shutdown, &signals)
        .context("cannot install the SIGINT/SIGTERM handlers")?;
    let served = run(shutdown.clone()).await;
    // The signal task ends with the token.
    shutdown.cancel();
    signals.close();
    signals.wait().await;
    served.map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn args(config: Option<PathBuf>) -> ServeArgs {
        ServeArgs {
            config,
            trust_domain: None,
            dir: None,
            grpc_addr: None,
            admin_addr: None,
        }
    }

    #[test]
    fn defaults_then_file_then_environment_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sigil-ca.toml");
        std::fs::write(
            &file,
            "trust_domain = \"file.example\"\n[server]\nmax_connections = 10\n\
             grpc_addr = \"127.0.0.1:1000\"\nrequest_timeout = \"3s\"\n\
             [[authenticators]]\ntype = \"svid\"\n",
        )
        .unwrap();
        let mut args = args(Some(file));
        args.grpc_addr = Some("127.0.0.1:3000".parse().unwrap());
        let config = load(
            &args,
            &env(&[
                ("SIGIL_CA__SERVER__MAX_CONNECTIONS", "100"),
                ("SIGIL_CA__SERVER__GRPC_ADDR", "127.0.0.1:2000"),
                ("SIGIL_CA__TRUST_DOMAIN", "env.example"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.max_connections, 100, "environment over file");
        assert_eq!(config.trust_domain.as_str(), "env.example");
        assert_eq!(
            config.server.grpc_addr.to_string(),
            "127.0.0.1:3000",
            "flag over environment"
        );
        assert_eq!(
            config.server.request_timeout,
            std::time::Duration::from_secs(3),
            "file over defaults"
        );
        assert_eq!(
            config.server.admin_addr.to_string(),
            sigil_ca::config::DEFAULT_ADMIN_ADDR,
            "defaults"
        );
    }

    #[test]
    fn a_flag_may_correct_the_environment_before_validation() {
        // The environment puts the admin port on the gRPC port; the flag
        // moves it.
        let vars = env(&[("SIGIL_CA__SERVER__ADMIN_ADDR", "127.0.0.1:15012")]);
        let err = load(&args(None), &vars).unwrap_err().to_string();
        assert!(
            err.contains("server.admin_addr") && err.contains("SIGIL_CA__SERVER__ADMIN_ADDR"),
            "{err}"
        );
        let mut fixed = args(None);
        fixed.admin_addr = Some("127.0.0.1:15099".parse().unwrap());
        assert_eq!(
            load(&fixed, &vars).unwrap().server.admin_addr.to_string(),
            "127.0.0.1:15099"
        );
    }

    #[test]
    fn environment_errors_name_the_variable() {
        for (var, value) in [
            ("SIGIL_CA__SERVER__MAX_CONECTIONS", "1"),
            ("SIGIL_CA__SERVER__MAX_CONNECTIONS", "many"),
            ("SIGIL_CA__SERVER__MAX_CONNECTIONS", "0"),
        ] {
            let err = load(&args(None), &env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
        }
    }
}
