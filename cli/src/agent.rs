//! `sigil agent`: run the node agent; `sigil agent status`: ask a running
//! agent what it holds.
//!
//! The configuration: built-in defaults, then the `--config` file, then
//! `SIGIL_AGENT__<SECTION>__<SETTING>` environment variables (any setting),
//! then the flags below; then validated once. An invalid configuration
//! exits 64 naming the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sigil_node_agent::config::{AgentConfig, ConfigError, ENV_PREFIX};
use sigil_node_agent::daemon::{Agent, StatusReport};
use sigil_runtime::env::{EnvOverrides, Environment, ProcessEnvironment};

use crate::serve::{InvalidConfig, until_signal};

/// `sigil agent`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum AgentCommand {
    /// Print the identities a running agent holds, their expiry and the
    /// last error (from its admin listener).
    Status(StatusArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// TOML configuration file; without it, the defaults (which need at
    /// least `SIGIL_AGENT__CA__TOKEN_FILE` or a client certificate).
    #[arg(long, env = "SIGIL_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `ca.address`.
    #[arg(long)]
    ca_address: Option<String>,
    /// Overrides `sds.socket`.
    #[arg(long)]
    sds_socket: Option<PathBuf>,
    /// Overrides `workload_api.socket`.
    #[arg(long)]
    workload_socket: Option<PathBuf>,
    /// Overrides `admin.addr`.
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The agent's admin address.
    #[arg(long, default_value = sigil_node_agent::config::DEFAULT_ADMIN_ADDR)]
    admin_addr: SocketAddr,
    /// Print the JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

impl AgentArgs {
    /// Whether this runs the daemon (not a one-shot subcommand).
    pub(crate) fn is_daemon(&self) -> bool {
        self.command.is_none()
    }
}

pub(crate) fn run(args: AgentArgs) -> anyhow::Result<()> {
    match args.command {
        Some(AgentCommand::Status(status)) => run_status(&status),
        None => run_agent(&args.run),
    }
}

fn load(args: &RunArgs, env: &dyn Environment) -> Result<AgentConfig, InvalidConfig> {
    let invalid = |e: ConfigError| InvalidConfig(e.to_string());
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            invalid(ConfigError::Io {
                path: path.clone(),
                reason: e.to_string(),
            })
        })?,
        None => String::new(),
    };
    let overrides =
        EnvOverrides::from_env(env, ENV_PREFIX).map_err(|e| invalid(ConfigError::from(e)))?;
    let mut config: AgentConfig = overrides
        .apply(&text)
        .map_err(|e| invalid(ConfigError::from(e)))?;
    if let Some(address) = &args.ca_address {
        config.ca.address.clone_from(address);
    }
    if let Some(socket) = &args.sds_socket {
        config.sds.socket.clone_from(socket);
    }
    if let Some(socket) = &args.workload_socket {
        config.workload_api.socket.clone_from(socket);
    }
    if let Some(addr) = args.admin_addr {
        config.admin.addr = addr;
    }
    config.validate().map_err(invalid)?;
    Ok(config)
}

fn run_agent(args: &RunArgs) -> anyhow::Result<()> {
    let config = load(args, &ProcessEnvironment)?;
    tracing::info!(config = ?config, "configuration loaded");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let bound = Agent::bind(config).await?;
        until_signal(|shutdown| bound.run(shutdown)).await
    })
}

fn run_status(args: &StatusArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(fetch_status(args.admin_addr))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("cannot print")?;
        std::io::Write::write_all(&mut out, b"\n").context("cannot print")?;
    } else {
        std::io::Write::write_all(&mut out, report.to_table().as_bytes())
            .context("cannot print")?;
    }
    Ok(())
}

/// `GET /status` of the agent whose admin listener is `admin_addr` (5 s
/// deadline); also what `sigil up` shows.
pub(crate) async fn fetch_status(admin_addr: SocketAddr) -> anyhow::Result<StatusReport> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>();
    let uri = format!("http://{admin_addr}/status")
        .parse::<http::Uri>()
        .context("bad admin address")?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .context("the agent did not answer within 5 s")?
        .with_context(|| format!("cannot reach the agent's admin listener on {admin_addr}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("cannot read the agent's answer")?
        .to_bytes();
    anyhow::ensure!(status.is_success(), "the agent answered {status}");
    serde_json::from_slice(&body).context("the agent's /status answer is not a status report")
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

    fn args() -> RunArgs {
        RunArgs {
            config: None,
            ca_address: None,
            sds_socket: None,
            workload_socket: None,
            admin_addr: None,
        }
    }

    #[test]
    fn flags_override_the_environment() {
        let mut a = args();
        a.ca_address = Some("https://flag:15012".into());
        let config = load(
            &a,
            &env(&[
                ("SIGIL_AGENT__CA__TOKEN_FILE", "/t"),
                ("SIGIL_AGENT__ATTESTATION__REGISTRATION_FILE", "/e"),
                ("SIGIL_AGENT__CA__ADDRESS", "https://env:15012"),
            ]),
        )
        .unwrap();
        assert_eq!(config.ca.address, "https://flag:15012");
    }

    #[test]
    fn an_invalid_setting_is_a_config_error_naming_it() {
        let error = load(
            &args(),
            &env(&[
                ("SIGIL_AGENT__CA__TOKEN_FILE", "/t"),
                ("SIGIL_AGENT__ATTESTATION__REGISTRATION_FILE", "/e"),
                ("SIGIL_AGENT__CERTIFICATES__RENEW_FRACTION", "2.0"),
            ]),
        )
        .unwrap_err();
        assert!(error.0.contains("certificates.renew_fraction"), "{error}");
    }
}
