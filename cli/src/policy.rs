//! `sigil policy explain`: what the proxy would decide for a request
//! described on the command line, with the policy and rule that decided.
//!
//! The same engine as the proxy (`sigil_proxy::policy`: `PolicyDocuments`
//! to load, `compose` for PeerAuthentication, `Authorizer::evaluate` and
//! `Decision`'s one-line form), no copy of its logic. `--config` takes the
//! workload and policy files from a `sigil proxy` configuration, so the
//! answer is the running proxy's. Exit codes: 0 the
//! request is allowed, 1 it is denied (at any stage: connection,
//! authentication, request, authorization), 2 a malformed flag (named by
//! clap), 64 an unreadable or invalid policy file (file, document and
//! field named).

mod args;
mod explain;
mod render;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sigil_proxy::config::{ConfigError, ENV_PREFIX, PolicyConfig, ProxyConfig};
use sigil_proxy::policy::{PolicyDocuments, Workload};
use sigil_runtime::env::{EnvOverrides, Environment, ProcessEnvironment};

use self::args::{ExplainArgs, OutputFormat};
pub(crate) use self::explain::Report;
use self::explain::Scope;
use crate::serve::InvalidConfig;

/// `sigil policy`.
#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print what the proxy would decide for a request, and which policy
    /// and rule decided it. Exits 0 when allowed, 1 when denied.
    Explain(Box<ExplainArgs>),
}

pub(crate) fn run(cmd: PolicyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Explain(args) => run_explain(&args),
    }
}

fn run_explain(args: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let scope = scope(args, &ProcessEnvironment)?;
    let docs = load(&scope.files, &scope.workload.namespace)?;
    let report = explain::explain(args, &scope, &docs)?;
    let mut out = std::io::stdout().lock();
    match args.output {
        OutputFormat::Text => out
            .write_all(render::text(&report).as_bytes())
            .context("cannot print")?,
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &report).context("cannot print")?;
            out.write_all(b"\n").context("cannot print")?;
        }
    }
    Ok(if report.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// What `sigil policy explain --policy FILE... --namespace NAMESPACE --peer
/// PEER --port PORT --method METHOD --path PATH` reports: the same scope,
/// loading and engine, for `sigil up`'s requests.
pub(crate) fn explain_http(
    files: &[PathBuf],
    namespace: &str,
    peer: sigil_identity::SpiffeId,
    port: u16,
    method: &str,
    path: &str,
) -> Result<Report, InvalidConfig> {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let args = ExplainArgs {
        policies: files.to_vec(),
        config: None,
        namespace: Some(namespace.to_owned()),
        labels: Vec::new(),
        root_namespace: None,
        path_normalization: None,
        peer: Some(peer),
        plaintext: false,
        source_ip: loopback,
        remote_ip: None,
        destination_ip: loopback,
        port,
        sni: None,
        http: true,
        method: Some(method.to_owned()),
        path: Some(path.to_owned()),
        host: None,
        headers: Vec::new(),
        jwt_claims: None,
        request_principal: None,
        claims: Vec::new(),
        output: OutputFormat::Text,
    };
    let scope = scope(&args, &ProcessEnvironment)?;
    let docs = load(&scope.files, &scope.workload.namespace)?;
    explain::explain(&args, &scope, &docs)
}

/// `[policy]` of `--config` (or the defaults), then the flags.
fn scope(args: &ExplainArgs, env: &dyn Environment) -> Result<Scope, InvalidConfig> {
    let mut policy = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                InvalidConfig(format!(
                    "cannot read the configuration file {}: {e}",
                    path.display()
                ))
            })?;
            let invalid = |e: ConfigError| InvalidConfig(e.to_string());
            let overrides = EnvOverrides::from_env(env, ENV_PREFIX)
                .map_err(|e| invalid(ConfigError::from(e)))?;
            let config: ProxyConfig = overrides
                .apply(&text)
                .map_err(|e| invalid(ConfigError::from(e)))?;
            config.policy
        }
        None => PolicyConfig::default(),
    };
    policy.files.extend(policy_files(&args.policies)?);
    if let Some(namespace) = &args.namespace {
        policy.namespace.clone_from(namespace);
    }
    if let Some(root) = &args.root_namespace {
        policy.root_namespace.clone_from(root);
    }
    policy.labels.extend(args.labels.iter().cloned());
    Ok(Scope {
        files: policy.files,
        workload: Workload {
            namespace: policy.namespace,
            labels: policy.labels,
        },
        root_namespace: policy.root_namespace,
        normalization: args
            .path_normalization
            .map_or_else(|| policy.path_normalization.into(), Into::into),
    })
}

/// The files behind `--policy`: files as given, directories expanded to
/// their `*.yaml` / `*.yml` files in name order.
fn policy_files(given: &[PathBuf]) -> Result<Vec<PathBuf>, InvalidConfig> {
    let mut files = Vec::new();
    for path in given {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|e| {
            InvalidConfig(format!(
                "--policy {}: cannot read the directory: {e}",
                path.display()
            ))
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|p| is_yaml(p) && p.is_file())
            .collect();
        found.sort();
        files.append(&mut found);
    }
    Ok(files)
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml")
}

/// Loads `files`; a resource without `metadata.namespace` is put in `namespace` (the
/// workload's, as the proxy does).
fn load(files: &[PathBuf], namespace: &str) -> Result<PolicyDocuments, InvalidConfig> {
    let mut docs = PolicyDocuments::new(namespace);
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file)
            .map_err(|e| InvalidConfig(format!("--policy {name}: cannot read: {e}")))?;
        docs.load_str(&name, &text)
            .map_err(|e| InvalidConfig(format!("invalid policy file {e}")))?;
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// REVIEW16 H4: explain loads a resource without `metadata.namespace` into the workload's
    /// namespace (`--namespace` / `[policy] namespace`), as the proxy does.
    #[test]
    fn resources_without_namespace_are_the_workloads() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("pa.yaml");
        std::fs::write(
            &file,
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default}\n\
             spec: {mtls: {mode: STRICT}}\n",
        )?;
        let docs = load(&[file], "shop")?;
        let namespaces: Vec<&str> = docs.peer.iter().map(|p| p.namespace.as_str()).collect();
        assert_eq!(namespaces, ["shop"]);
        Ok(())
    }
}
