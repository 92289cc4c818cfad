//! Load tools.
//!
//! - `sigil bench ca` drives `CreateCertificate` with real CSRs and tokens
//!   and reports certificates per second and latency percentiles. Targets
//!   whatever `--addr` says: point it at loopback.
//! - `sigil bench issue` runs the same issuance in-process on one thread
//!   (same CA directory, same CSR shape, PEM as on the wire), the baseline
//!   the server's rate per core is compared with (`tools/bench-ca.sh`).
//!
//! Both are bounded by `--duration` (at most one hour) and stop by
//! themselves. Both use a single-threaded runtime, so the load tool takes as
//! little CPU as possible from the server it measures on a shared machine.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use sigil_identity::SpiffeId;
use sigil_node_agent::ca_client::{CaClient, CaClientConfig, CaClientError, CsrRequest};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Load-test a CA server.
    Ca(CaBenchArgs),
    /// Measure in-process issuance on one thread (no network).
    Issue(IssueBenchArgs),
}

#[derive(Debug, Args)]
pub(crate) struct IssueBenchArgs {
    /// The CA directory (as `sigil ca serve` uses it).
    #[arg(long, default_value = sigil_ca::config::DEFAULT_CA_DIR)]
    dir: PathBuf,
    /// How long to run (at most 1h).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The SPIFFE ID issued (its trust domain must be the CA's).
    #[arg(long, default_value = "spiffe://cluster.local/ns/default/sa/bench")]
    id: SpiffeId,
    /// Distinct CSRs (ECDSA P-256) cycled through.
    #[arg(long, default_value_t = 64)]
    csrs: usize,
}

#[derive(Debug, Args)]
pub(crate) struct CaBenchArgs {
    /// The CA's gRPC address.
    #[arg(long, default_value = "https://127.0.0.1:15012")]
    addr: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to run (at most 1h).
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
        BenchCommand::Issue(args) => bench_issue(&args),
    }
}

fn bench_issue(args: &IssueBenchArgs) -> anyhow::Result<()> {
    if args.duration > Duration::from_secs(3600) || args.duration.is_zero() {
        bail!("--duration must be between 1s and 1h");
    }
    if args.csrs == 0 {
        bail!("--csrs must be positive");
    }
    let now = time::OffsetDateTime::now_utc();
    let authority = sigil_ca::authority::source::load_dir(&args.dir, args.id.trust_domain(), now)
        .with_context(|| format!("cannot load the CA in {}", args.dir.display()))?;
    let issuer =
        sigil_ca::CertIssuer::new(Arc::new(authority), sigil_ca::IssuancePolicy::default());
    let csrs = (0..args.csrs)
        .map(|_| make_csr(&args.id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start = Instant::now();
    let cpu_start = thread_cpu_time();
    let mut issued: u64 = 0;
    while start.elapsed() < args.duration {
        for csr in &csrs {
            let chain = issuer.issue(sigil_ca::IssueRequest {
                csr: csr.as_bytes(),
                identity: &args.id,
                ttl: None,
            })?;
            // What the server does with the chain besides sending it.
            std::hint::black_box(chain.leaf().map(sigil_ca::issue::cert_pem));
            issued += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_start
        .zip(thread_cpu_time())
        .map(|(from, to)| to.saturating_sub(from).as_secs_f64());
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "sigil bench issue: {issued} certificates in {elapsed:.1}s on one thread"
    )?;
    writeln!(out, "throughput: {:.0} certs/s", issued as f64 / elapsed)?;
    // Per second of CPU actually used: what tools/bench-ca.sh compares the
    // server with when both share one core.
    if let Some(cpu) = cpu.filter(|c| *c > 0.0) {
        writeln!(
            out,
            "cpu-rate:   {:.0} certs per CPU-second",
            issued as f64 / cpu
        )?;
    }
    Ok(())
}

/// CPU time this thread has used (Linux `/proc/thread-self/schedstat`,
/// nanoseconds); `None` where that file does not exist.
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
}

async fn bench_ca(args: CaBenchArgs) -> anyhow::Result<()> {
    if args.duration > Duration::from_secs(3600) || args.duration.is_zero() {
        bail!("--duration must be between 1s and 1h");
    }
    if args.concurrency == 0 || args.connections == 0 || args.csrs == 0 {
        bail!("--concurrency, --connections and --csrs must be positive");
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
    // One request first, so a misconfiguration fails fast and clearly.
    let mut probe = clients.first().cloned().context("no connection")?;
    probe
        .create_certificate(CsrRequest {
            csr_pem: csrs.first().map(String::as_str).unwrap_or_default(),
            token: Some(&token),
            ..CsrRequest::default()
        })
        .await
        .context("the first request failed")?;

    let counters = Arc::new(Counters::default());
    let codes = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let mut client = clients
            .get(worker % clients.len())
            .cloned()
            .context("no connection")?;
        let (csrs, counters, codes, token) =
            (csrs.clone(), counters.clone(), codes.clone(), token.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker;
            while Instant::now() < deadline {
                let csr = csrs
                    .get(i % csrs.len())
                    .map(String::as_str)
                    .unwrap_or_default();
                i += 1;
                let sent = Instant::now();
                let result = client
                    .create_certificate(CsrRequest {
                        csr_pem: csr,
                        token: Some(&token),
                        ..CsrRequest::default()
                    })
                    .await;
                let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                match result {
                    Ok(_) => {
                        counters.ok.fetch_add(1, Ordering::Relaxed);
                        latencies.push(micros);
                    }
                    Err(e) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        let code = match e {
                            CaClientError::Status { code, .. } => format!("{code:?}"),
                            other => other.to_string(),
                        };
                        if let Ok(mut codes) = codes.lock() {
                            *codes.entry(code).or_default() += 1;
                        }
                    }
                }
            }
            latencies
        }));
    }

    // Progress, once a second, on stderr.
    let progress = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            let mut last = 0;
            loop {
                ticker.tick().await;
                let ok = counters.ok.load(Ordering::Relaxed);
                let errors = counters.errors.load(Ordering::Relaxed);
                let _ = writeln!(
                    std::io::stderr(),
                    "[{:>4.0}s] issued {ok} ({} /s), errors {errors}",
                    start.elapsed().as_secs_f64(),
                    ok - last
                );
                last = ok;
            }
        })
    };

    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.context("a worker failed")?);
    }
    progress.abort();
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        let n = latencies.len();
        if n == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        latencies.get(rank.clamp(1, n) - 1).copied().unwrap_or(0) as f64 / 1000.0
    };
    let ok = counters.ok.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "sigil bench ca: {} for {:.1}s, concurrency {}, {} connections",
        args.addr, elapsed, args.concurrency, args.connections
    )?;
    writeln!(out, "requests:   {ok} ok, {errors} failed")?;
    if let Ok(codes) = codes.lock() {
        for (code, n) in codes.iter() {
            writeln!(out, "  failed {code}: {n}")?;
        }
    }
    writeln!(out, "throughput: {:.0} certs/s", ok as f64 / elapsed)?;
    writeln!(
        out,
        "latency:    p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        pct(50.0),
        pct(99.0),
        pct(99.9),
        pct(100.0)
    )?;
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}

fn make_csr(id: &SpiffeId) -> anyhow::Result<String> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
    Ok(params.serialize_request(&key)?.pem()?)
}
