//! `sigil policy explain`: what the proxy would decide for a request
//! described on the command line, with the policy and rule that decided.
//!
//! The same engine as the proxy (`sigil_proxy::policy`: `PolicyDocuments`
//! to load, `compose` for PeerAuthentication, `Authorizer::evaluate` and
//! `Decision`'s one-line form), no copy of its logic. Exit codes: 0 the
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
use sigil_proxy::policy::PolicyDocuments;

use self::args::{ExplainArgs, OutputFormat};
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
    let files = policy_files(&args.policies)?;
    let docs = load(&files)?;
    let names = files.iter().map(|f| f.display().to_string()).collect();
    let report = explain::explain(args, &docs, names);
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

fn load(files: &[PathBuf]) -> Result<PolicyDocuments, InvalidConfig> {
    let mut docs = PolicyDocuments::default();
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file)
            .map_err(|e| InvalidConfig(format!("--policy {name}: cannot read: {e}")))?;
        docs.load_str(&name, &text)
            .map_err(|e| InvalidConfig(format!("invalid policy file {e}")))?;
    }
    Ok(docs)
}
