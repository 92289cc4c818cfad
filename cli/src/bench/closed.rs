//! Closed loop: `--concurrency` workers, each sending its next request
//! when the previous one is answered. Measures the server's maximum
//! throughput; latency here is queueing behind the other workers
//! (≈ concurrency ÷ throughput), not what a client at a given load sees
//! (that is the open loop, `open`).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sigil_node_agent::ca_client::CsrRequest;

use super::report::{ClosedReport, Failures, Percentiles};
use super::{CaBenchArgs, Target, count_failure, csr_at, failure_label};

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
}

pub(super) async fn run(args: &CaBenchArgs, target: &Target) -> anyhow::Result<()> {
    let counters = Arc::new(Counters::default());
    let failures = Arc::new(Mutex::new(Failures::default()));
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut workers = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let mut client = target.client(worker).context("no connection")?;
        let (csrs, counters, failures, token) = (
            target.csrs.clone(),
            counters.clone(),
            failures.clone(),
            target.token.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = worker;
            while Instant::now() < deadline {
                let csr = csr_at(&csrs, i);
                i += 1;
                let sent = Instant::now();
                let result = client
                    .create_certificate(CsrRequest {
                        csr_pem: csr,
                        token: Some(&token),
                        ..CsrRequest::default()
                    })
                    .await;
                match result {
                    Ok(_) => {
                        counters.ok.fetch_add(1, Ordering::Relaxed);
                        latencies.push(sent.elapsed());
                    }
                    Err(e) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        count_failure(&failures, failure_label(&e));
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
    let elapsed = start.elapsed();
    let failures = std::mem::take(&mut *failures.lock().unwrap_or_else(PoisonError::into_inner));
    let errors = failures.total();
    let report = ClosedReport {
        addr: &args.addr,
        elapsed,
        concurrency: args.concurrency,
        connections: args.connections,
        ok: counters.ok.load(Ordering::Relaxed),
        failures,
        latency: Percentiles::of(&mut latencies),
    };
    report.write(&mut std::io::stdout().lock())?;
    if errors > 0 {
        bail!("{errors} requests failed");
    }
    Ok(())
}
