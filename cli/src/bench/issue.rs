//! `sigil bench issue`: in-process issuance on one thread, no network (the
//! baseline `tools/bench-ca.sh` compares the server with).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use sigil_identity::SpiffeId;

use super::make_csr;

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

pub(super) fn run(args: &IssueBenchArgs) -> anyhow::Result<()> {
    if args.duration > super::MAX_DURATION || args.duration.is_zero() {
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
