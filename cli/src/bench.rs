//! Load tools.
//!
//! - `sigil bench ca` drives `CreateCertificate` with real CSRs and tokens
//!   and reports certificates per second and latency percentiles. Targets
//!   whatever `--addr` says: point it at loopback. Two modes:
//!   - *closed loop* (default, [`closed`]): `--concurrency` requests in
//!     flight, each sent when the previous one is answered. Shows the
//!     server's maximum throughput; its latency is set by that throughput
//!     (Little's law: latency ≈ concurrency ÷ rate).
//!   - *open loop* (`--rate N`, [`open`]): N requests per second on a fixed
//!     schedule, whatever the answers do, each timed from when it *should*
//!     have been sent (no coordinated omission). Shows the latency clients
//!     see at a given load.
//! - `sigil bench issue` ([`issue`]) runs the same issuance in-process on
//!   one thread (same CA directory, same CSR shape, PEM as on the wire),
//!   the baseline the server's rate per core is compared with
//!   (`tools/bench-ca.sh`).
//!
//! - `sigil bench agent ...` ([`agent`]): the node agent's benchmarks.
//! - `sigil bench proxy ...` ([`proxy`]): the proxy's benchmarks' load tool
//!   and backend.
//!
//! All are bounded by `--duration` (at most one hour) and stop by
//! themselves. All use a single-threaded runtime, so the load tool takes as
//! little CPU as possible from the server it measures on a shared machine.

#[path = "bench_agent.rs"]
mod agent;
mod closed;
mod issue;
mod open;
#[path = "bench_proxy.rs"]
mod proxy;
mod report;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use sigil_identity::SpiffeId;
use sigil_node_agent::ca_client::{CaClient, CaClientConfig, CaClientError, CsrRequest};

use self::report::Failures;

/// The longest `--duration` (and `--warmup`) accepted.
const MAX_DURATION: Duration = Duration::from_secs(3600);

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Load-test a CA server (closed loop, or open loop with `--rate`).
    Ca(CaBenchArgs),
    /// Measure in-process issuance on one thread (no network).
    Issue(issue::IssueBenchArgs),
    /// The node agent's benchmarks (`tools/bench-agent.sh`).
    #[command(subcommand)]
    Agent(agent::AgentBenchCommand),
    /// The proxy's benchmarks (`tools/bench-proxy.sh`).
    #[command(subcommand)]
    Proxy(proxy::ProxyBenchCommand),
}

#[derive(Debug, Args)]
pub(crate) struct CaBenchArgs {
    /// The CA's gRPC address.
    #[arg(long, default_value = "https://127.0.0.1:15012")]
    addr: String,
    /// Closed loop: requests in flight at once.
    #[arg(long, default_value_t = 64, conflicts_with = "rate")]
    concurrency: usize,
    /// Open loop: send this many requests per second on a fixed schedule
    /// and time each from its scheduled send time.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: requests sent at the same rate before the measurement,
    /// not counted (connections, caches, CPU frequency).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, requires = "rate")]
    warmup: Duration,
    /// Open loop: at most this many requests outstanding; a request due
    /// while that many are is not sent and counts as an error.
    #[arg(long, default_value_t = 1000, requires = "rate")]
    max_outstanding: usize,
    /// How long to run (measured; at most 1h).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// HTTP/2 connections to spread the requests over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Bearer token sent with each request (the zero-config CA accepts
    /// development tokens `dev:<namespace>:<service-account>`).
    #[arg(
        long,
        default_value = "dev:default:bench",
        conflicts_with = "token_file"
    )]
    token: String,
    /// Read the bearer token from this file instead.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The SPIFFE ID the CSRs ask for (must be what the token may hold).
    #[arg(long, default_value = "spiffe://cluster.local/ns/default/sa/bench")]
    id: SpiffeId,
    /// PEM roots to verify the CA with.
    #[arg(long, default_value = "sigil-data/ca/root-cert.pem")]
    ca_root: PathBuf,
    /// The DNS name in the CA's serving certificate.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Distinct CSRs (ECDSA P-256) cycled through.
    #[arg(long, default_value_t = 64)]
    csrs: usize,
}

pub(crate) fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ca(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(bench_ca(args))
        }
        BenchCommand::Issue(args) => issue::run(&args),
        BenchCommand::Agent(cmd) => agent::run(cmd),
        BenchCommand::Proxy(cmd) => proxy::run(cmd),
    }
}

/// What both modes of `sigil bench ca` share: connections (a probe request
/// already answered on the first), CSRs generated ahead, the token.
struct Target {
    clients: Vec<CaClient>,
    csrs: Arc<Vec<String>>,
    token: Arc<str>,
}

impl Target {
    /// The client for request `n`: round-robin over the connections.
    fn client(&self, n: usize) -> Option<CaClient> {
        self.clients.get(n % self.clients.len().max(1)).cloned()
    }

    /// The CSR for request `n`.
    fn csr(&self, n: usize) -> &str {
        csr_at(&self.csrs, n)
    }
}

fn csr_at(csrs: &[String], n: usize) -> &str {
    csrs.get(n % csrs.len().max(1))
        .map(String::as_str)
        .unwrap_or_default()
}

async fn bench_ca(args: CaBenchArgs) -> anyhow::Result<()> {
    check_duration("--duration", args.duration, false)?;
    if args.concurrency == 0 || args.connections == 0 || args.csrs == 0 {
        bail!("--concurrency, --connections and --csrs must be positive");
    }
    if let Some(rate) = args.rate {
        open::check_rate(rate)?;
        check_duration("--warmup", args.warmup, true)?;
        if args.max_outstanding == 0 {
            bail!("--max-outstanding must be positive");
        }
    }
    let token = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?
            .trim()
            .to_owned(),
        None => args.token.clone(),
    };
    let roots = std::fs::read(&args.ca_root)
        .with_context(|| format!("cannot read CA roots {}", args.ca_root.display()))?;
    let csrs: Arc<Vec<String>> = Arc::new(
        (0..args.csrs)
            .map(|_| make_csr(&args.id))
            .collect::<anyhow::Result<_>>()?,
    );
    let config = CaClientConfig::new(args.addr.clone(), roots, args.server_name.clone());
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(CaClient::connect(&config).await?);
    }
    let target = Target {
        clients,
        csrs,
        token: token.into(),
    };
    // One request first, so a misconfiguration fails fast and clearly.
    let mut probe = target.client(0).context("no connection")?;
    probe
        .create_certificate(CsrRequest {
            csr_pem: target.csr(0),
            token: Some(&target.token),
            ..CsrRequest::default()
        })
        .await
        .context("the first request failed")?;
    match args.rate {
        None => closed::run(&args, &target).await,
        Some(rate) => open::run(&args, rate, target).await,
    }
}

fn check_duration(flag: &str, duration: Duration, zero_ok: bool) -> anyhow::Result<()> {
    if duration > MAX_DURATION {
        bail!("{flag} must be at most 1h");
    }
    if duration.is_zero() && !zero_ok {
        bail!("{flag} must be more than 0");
    }
    Ok(())
}

/// The label a failed request is counted under: its gRPC code, or the
/// client's error.
fn failure_label(error: &CaClientError) -> String {
    match error {
        CaClientError::Status { code, .. } => format!("{code:?}"),
        other => other.to_string(),
    }
}

/// Counts one failure under `label` (shared by the request tasks).
fn count_failure(failures: &Mutex<Failures>, label: String) {
    failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .add(label);
}

fn make_csr(id: &SpiffeId) -> anyhow::Result<String> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
    Ok(params.serialize_request(&key)?.pem()?)
}
