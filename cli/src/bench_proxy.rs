//! `sigil bench proxy`: the proxy benchmarks' load tool (issue 16), run by
//! `tools/bench-proxy.sh`. Loopback only; every command is bounded in time
//! and count and stops by itself; each prints one result line of
//! `key=value` fields the script reads.
//!
//! The backend speaks a tiny protocol, identical on every path (direct,
//! through the Sigil pair, through the HAProxy pair): a connection starts
//! with one mode byte, then
//! - [`MODE_ECHO`]: every byte read is written back (a request of `--size`
//!   bytes is answered by the same bytes);
//! - [`MODE_SOURCE`]: the backend writes zeros until the peer goes away.
//!
//! Commands ([`backend`], [`load`], [`handshake`]):
//! - `backend`: the echo/source server;
//! - `closed`: `--connections` kept-alive connections, each sending the
//!   next request when the previous answer arrived; requests per second
//!   and latency percentiles;
//! - `open`: requests at a fixed `--rate` spread over the connections,
//!   each timed from when it was due (a request due while its connection
//!   is still busy waits, and that wait counts);
//! - `bulk`: one connection reading from a source; MB/s;
//! - `handshake`: new connections (TLS 1.3 with a client certificate when
//!   `--cert` is given), one request each, then closed; connections per
//!   second;
//! - `idle`: opens `--connections` connections, one request each, then
//!   holds them open for `--hold`.

#[path = "bench_proxy/backend.rs"]
mod backend;
#[path = "bench_proxy/handshake.rs"]
mod handshake;
#[path = "bench_proxy/load.rs"]
mod load;

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;

use super::MAX_DURATION;
use super::report::percentile;

/// The first byte of an echo connection.
pub(crate) const MODE_ECHO: u8 = b'e';
/// The first byte of a source connection.
pub(crate) const MODE_SOURCE: u8 = b's';

/// The most connections any command opens.
const MAX_CONNECTIONS: usize = 100_000;

/// `sigil bench proxy ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum ProxyBenchCommand {
    /// The echo / source backend.
    Backend(backend::BackendArgs),
    /// Closed loop over kept-alive connections: requests/s and latency.
    Closed(load::ClosedArgs),
    /// Open loop at a fixed rate: latency without coordinated omission.
    Open(load::OpenArgs),
    /// One connection streaming from the backend: MB/s.
    Bulk(load::BulkArgs),
    /// New (m)TLS connections, one request each: handshakes/s.
    Handshake(handshake::HandshakeArgs),
    /// Open many connections and hold them idle.
    Idle(load::IdleArgs),
}

pub(crate) fn run(cmd: ProxyBenchCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cmd {
        ProxyBenchCommand::Backend(args) => runtime.block_on(backend::run(args)),
        ProxyBenchCommand::Closed(args) => runtime.block_on(load::closed(args)),
        ProxyBenchCommand::Open(args) => runtime.block_on(load::open(args)),
        ProxyBenchCommand::Bulk(args) => runtime.block_on(load::bulk(args)),
        ProxyBenchCommand::Handshake(args) => runtime.block_on(handshake::run(args)),
        ProxyBenchCommand::Idle(args) => runtime.block_on(load::idle(args)),
    }
}

/// Refuses durations over an hour (and zero unless `zero_ok`).
fn check_duration(flag: &str, d: Duration, zero_ok: bool) -> anyhow::Result<()> {
    if d > MAX_DURATION {
        bail!("{flag} must be at most 1h");
    }
    if d.is_zero() && !zero_ok {
        bail!("{flag} must be more than 0");
    }
    Ok(())
}

/// Refuses connection counts of zero or over [`MAX_CONNECTIONS`].
fn check_connections(flag: &str, n: usize) -> anyhow::Result<()> {
    if n == 0 || n > MAX_CONNECTIONS {
        bail!("{flag} must be between 1 and {MAX_CONNECTIONS}");
    }
    Ok(())
}

/// Latency fields `p50_us=.. p99_us=.. p999_us=.. max_us=..` of `samples`
/// (sorted here).
fn latency_fields(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let us = |per_mille| percentile(samples, per_mille).as_secs_f64() * 1e6;
    format!(
        "p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1}",
        us(500),
        us(990),
        us(999),
        us(1000)
    )
}

/// Prints a result line (stdout is the script's input).
#[expect(clippy::print_stdout, reason = "the result line is the tool's output")]
fn emit(line: &str) {
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_fields_are_nearest_rank_microseconds() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        assert_eq!(
            latency_fields(&mut samples),
            "p50_us=50.0 p99_us=99.0 p999_us=100.0 max_us=100.0"
        );
        assert_eq!(
            latency_fields(&mut []),
            "p50_us=0.0 p99_us=0.0 p999_us=0.0 max_us=0.0"
        );
    }

    #[test]
    fn limits_are_enforced() {
        assert!(check_connections("--connections", 0).is_err());
        assert!(check_connections("--connections", MAX_CONNECTIONS + 1).is_err());
        assert!(check_connections("--connections", 64).is_ok());
        assert!(check_duration("--duration", Duration::ZERO, false).is_err());
        assert!(check_duration("--warmup", Duration::ZERO, true).is_ok());
        assert!(check_duration("--duration", Duration::from_secs(7200), false).is_err());
    }
}
