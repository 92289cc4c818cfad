//! `sigil`: one binary for operators.
//!
//! - `sigil ca init` creates (or reuses) a self-signed CA in a directory;
//! - `sigil ca sign` issues an X509-SVID offline from a CSR;
//! - `sigil cert inspect` explains a certificate chain and checks that it is
//!   a valid X509-SVID;
//! - `sigil ca serve` runs the CA server;
//! - `sigil up [--data-dir DIR] [--ttl DURATION] [--ca-dir DIR]
//!   [--trust-domain TD]` runs a CA, a node agent, two proxies and a demo
//!   service in one process with zero configuration, sends one allowed and
//!   one denied request and explains them, then shows a live status
//!   (identities, expiry, rotations, requests) until Ctrl-C;
//! - `sigil agent` runs the node agent, `sigil agent status` asks a running
//!   one what it holds;
//! - `sigil proxy [--config F] [--admin-addr A]` runs the proxy: its
//!   listeners (inbound: terminate mTLS in front of a local application;
//!   outbound: originate mTLS to a remote Sigil proxy) with the Istio
//!   policy files of `[policy] files`, and an admin listener (`[admin]
//!   addr`, default 127.0.0.1:15021) serving `/healthz`, `/readyz` and
//!   `/metrics`. Configuration: defaults < file < `SIGIL_PROXY__*`
//!   variables < flags. SIGINT/SIGTERM drain and exit 0;
//! - `sigil policy explain` prints what the proxy would decide for a
//!   request described by flags, with the proxy's own engine: the
//!   PeerAuthentication mode for the port, the RequestAuthentication
//!   jwtRules that apply and the token's fate (401/403), then the
//!   AuthorizationPolicy decision naming the policy and rule. Policies and
//!   workload: `--policy F|DIR` (repeatable) and/or `--config PROXY.toml`,
//!   `--namespace`, `--label k=v`, `--root-namespace`,
//!   `--path-normalization`. Request: `--peer spiffe://...` or
//!   `--plaintext`, `--port` (the workload port), `--source-ip`,
//!   `--remote-ip`, `--destination-ip`, `--sni`; HTTP with `--http`,
//!   `--method`, `--path`, `--host`, `--header 'k: v'`; a validated JWT
//!   with `--jwt-claims JSON` or `--request-principal ISS/SUB --claim k=v`.
//!   `--output json` for scripts. Exit 0 allowed, 1 denied;
//! - `sigil bench ca` drives a CA with real CSRs and reports throughput and
//!   latency (closed loop, or open loop at a fixed rate with `--rate`);
//!   `sigil bench issue` times the same issuance in-process.
//!
//! `main` only parses arguments and maps results to exit codes: 0 success,
//! 1 the operation failed (the reason is printed; for `sigil policy
//! explain`: the request is denied), 2 bad usage, 64 an invalid
//! configuration or policy file.

mod agent;
mod bench;
mod ca;
mod cert;
mod kube;
mod policy;
mod proxy;
mod serve;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sigil_runtime::logwriter;

// mimalloc: the request path allocates many small, short-lived buffers
// (HTTP/2 frames, protobuf, DER, PEM); glibc's malloc cost ≈ 6 % of a
// loaded CA server's CPU (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sigil: short-lived SPIFFE identities for every workload.
#[derive(Debug, Parser)]
#[command(name = "sigil", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything in one process, zero configuration: a CA, a node agent,
    /// two proxies and a demo service; one allowed and one denied request
    /// explained; a live status until Ctrl-C.
    Up(up::UpArgs),
    /// Run the node agent (`sigil agent --config F`), or ask a running one
    /// for its status (`sigil agent status`).
    Agent(agent::AgentArgs),
    /// Operate the certificate authority.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Work with certificates.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// Run the proxy: mTLS and Istio policies in front of (inbound) and
    /// out of (outbound) local applications (`sigil proxy --config F`).
    Proxy(proxy::ProxyArgs),
    /// Explain Istio policies offline (`sigil policy explain`).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Load tools.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `sigil up` logs to a file under its data directory (the terminal
    // shows its status), once its flags are checked.
    if let Command::Up(args) = &cli.command {
        return exit_code(up::run(args));
    }
    // Servers log their decisions at info; one-shot commands stay quiet.
    let default_level = match &cli.command {
        Command::Ca(ca::CaCommand::Serve(_)) => "info",
        Command::Agent(a) if a.is_daemon() => "info",
        Command::Proxy(_) => "info",
        _ => "warn",
    };
    let log_guard = match init_logging(
        std::io::stderr(),
        default_level,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    ) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("sigil: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    let success = |()| ExitCode::SUCCESS;
    let result = match cli.command {
        Command::Agent(args) => agent::run(args).map(success),
        Command::Ca(cmd) => ca::run(cmd).map(success),
        Command::Cert(cmd) => cert::run(cmd).map(success),
        Command::Proxy(args) => proxy::run(&args).map(success),
        // 0 allowed, 1 denied.
        Command::Policy(cmd) => policy::run(cmd),
        Command::Bench(cmd) => bench::run(cmd).map(success),
        // Run (with its own log file) before the stderr logger is installed.
        Command::Up(_) => Ok(ExitCode::SUCCESS),
    };
    // Log lines first, then the verdict.
    drop(log_guard);
    exit_code(result)
}

/// Installs the global log subscriber (filter `SIGIL_LOG`, else
/// `default_level`) writing to `out`. Log lines are formatted where they
/// happen and written in batches by a background thread (`logwriter`): a
/// CA server logs every decision. Never lossy; flushed when the returned
/// guard drops.
fn init_logging<W>(out: W, default_level: &str, ansi: bool) -> anyhow::Result<logwriter::FlushGuard>
where
    W: std::io::Write + Send + 'static,
{
    let (log_writer, log_guard) = logwriter::start(out, "sigil-log")
        .map_err(|e| anyhow::anyhow!("cannot start the log writer thread: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIGIL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(log_writer)
        .with_ansi(ansi)
        .init();
    Ok(log_guard)
}

/// The exit code of a result: its own, or for an error 64 (EX_USAGE: the
/// configuration, not the environment, is wrong) or 1, the reason printed.
fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sigil: {err:#}");
            if err.downcast_ref::<serve::InvalidConfig>().is_some() {
                ExitCode::from(64)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
