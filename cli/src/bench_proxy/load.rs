//! The plain-TCP client commands: closed loop, open loop, bulk, idle.
//! Connections are plain TCP to whatever `--addr` is (the backend, or the
//! outbound side of a proxy pair); all on the caller's single thread.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{MODE_ECHO, MODE_SOURCE, check_connections, check_duration, emit, latency_fields};

/// The largest request accepted (`--size`).
const MAX_SIZE: usize = 1 << 20;

#[derive(Debug, Args)]
pub(crate) struct ClosedArgs {
    /// Where to connect (plain TCP).
    #[arg(long)]
    addr: SocketAddr,
    /// Kept-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Request (and answer) size in bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Run this long before measuring (not counted).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measure this long (at most 1h).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct OpenArgs {
    /// Where to connect (plain TCP).
    #[arg(long)]
    addr: SocketAddr,
    /// Requests per second, due at equal steps.
    #[arg(long)]
    rate: f64,
    /// Kept-alive connections; request `i` goes on connection `i mod N`.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Request (and answer) size in bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Run this long before measuring (not counted).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measure this long (at most 1h).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct BulkArgs {
    /// Where to connect (plain TCP).
    #[arg(long)]
    addr: SocketAddr,
    /// Read this long before measuring (not counted).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measure this long (at most 1h).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct IdleArgs {
    /// Where to connect (plain TCP).
    #[arg(long)]
    addr: SocketAddr,
    /// Connections to open (each sends one 1-byte request first).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Hold them this long once all are open (at most 1h).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// Created (with the result line) once all are open.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

/// The measured window of a run started now.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

impl Window {
    fn after(warmup: Duration, duration: Duration) -> Self {
        let from = Instant::now() + warmup;
        Self {
            from,
            to: from + duration,
        }
    }

    fn seconds(&self) -> f64 {
        (self.to - self.from).as_secs_f64()
    }
}

/// A connection in echo mode.
async fn echo_conn(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(&[MODE_ECHO]).await?;
    Ok(stream)
}

/// One request and its answer.
async fn round_trip(
    stream: &mut TcpStream,
    request: &[u8],
    answer: &mut [u8],
) -> std::io::Result<()> {
    stream.write_all(request).await?;
    stream.read_exact(answer).await?;
    Ok(())
}

fn check_size(size: usize) -> anyhow::Result<()> {
    if size == 0 || size > MAX_SIZE {
        bail!("--size must be between 1 and {MAX_SIZE}");
    }
    Ok(())
}

pub(super) async fn closed(args: ClosedArgs) -> anyhow::Result<()> {
    check_connections("--connections", args.connections)?;
    check_duration("--warmup", args.warmup, true)?;
    check_duration("--duration", args.duration, false)?;
    check_size(args.size)?;
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(
            echo_conn(args.addr)
                .await
                .with_context(|| format!("cannot connect to {}", args.addr))?,
        );
    }
    let window = Window::after(args.warmup, args.duration);
    let mut tasks = JoinSet::new();
    for mut stream in conns {
        let size = args.size;
        tasks.spawn(async move {
            let request = vec![b'x'; size];
            let mut answer = vec![0u8; size];
            let mut samples = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= window.to {
                    return Ok(samples);
                }
                round_trip(&mut stream, &request, &mut answer).await?;
                if sent >= window.from {
                    samples.push(sent.elapsed());
                }
            }
        });
    }
    let mut samples = Vec::new();
    let mut errors = 0u64;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(mut some)) => samples.append(&mut some),
            Ok(Err::<_, std::io::Error>(_)) | Err(_) => errors += 1,
        }
    }
    let count = samples.len();
    let rate = count as f64 / window.seconds();
    let latency = latency_fields(&mut samples);
    emit(&format!(
        "closed connections={} size={} requests={count} seconds={:.3} rps={rate:.0} {latency} errors={errors}",
        args.connections,
        args.size,
        window.seconds()
    ));
    Ok(())
}

pub(super) async fn open(args: OpenArgs) -> anyhow::Result<()> {
    check_connections("--connections", args.connections)?;
    check_duration("--warmup", args.warmup, true)?;
    check_duration("--duration", args.duration, false)?;
    check_size(args.size)?;
    if !(args.rate.is_finite() && args.rate >= 1.0 && args.rate <= 1e7) {
        bail!("--rate must be between 1 and 10,000,000 per second");
    }
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(
            echo_conn(args.addr)
                .await
                .with_context(|| format!("cannot connect to {}", args.addr))?,
        );
    }
    let start = Instant::now();
    let window = Window::after(args.warmup, args.duration);
    let step = Duration::from_secs_f64(1.0 / args.rate);
    let stride = u32::try_from(args.connections).context("--connections")?;
    let mut tasks = JoinSet::new();
    for (k, mut stream) in (0u32..).zip(conns) {
        let size = args.size;
        tasks.spawn(async move {
            let request = vec![b'x'; size];
            let mut answer = vec![0u8; size];
            let mut samples = Vec::new();
            let mut late = 0u64;
            let mut index = k;
            loop {
                let due = start + step * index;
                if due >= window.to {
                    return Ok((samples, late));
                }
                let now = Instant::now();
                // Sleeping until `due` may wake up to a timer tick late:
                // that is the tool's delay, not the server's, so such a
                // request is timed from when it went out. A request due
                // while its connection was still busy is timed from when
                // it was due.
                let from = if now < due {
                    tokio::time::sleep_until(due).await;
                    Instant::now()
                } else {
                    late += 1;
                    due
                };
                round_trip(&mut stream, &request, &mut answer).await?;
                if due >= window.from {
                    samples.push(from.elapsed());
                }
                index = index.saturating_add(stride);
            }
        });
    }
    let mut samples = Vec::new();
    let mut errors = 0u64;
    let mut late = 0u64;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok((mut some, n))) => {
                samples.append(&mut some);
                late += n;
            }
            Ok(Err::<_, std::io::Error>(_)) | Err(_) => errors += 1,
        }
    }
    let count = samples.len();
    let latency = latency_fields(&mut samples);
    emit(&format!(
        "open rate={} connections={} size={} requests={count} behind={late} {latency} errors={errors}",
        args.rate, args.connections, args.size
    ));
    Ok(())
}

pub(super) async fn bulk(args: BulkArgs) -> anyhow::Result<()> {
    check_duration("--warmup", args.warmup, true)?;
    check_duration("--duration", args.duration, false)?;
    let mut stream = TcpStream::connect(args.addr)
        .await
        .with_context(|| format!("cannot connect to {}", args.addr))?;
    stream.write_all(&[MODE_SOURCE]).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let window = Window::after(args.warmup, args.duration);
    let mut bytes = 0u64;
    loop {
        let n = stream.read(&mut buf).await.context("reading the stream")?;
        if n == 0 {
            bail!("the stream ended early");
        }
        let now = Instant::now();
        if now >= window.to {
            break;
        }
        if now >= window.from {
            bytes += n as u64;
        }
    }
    emit(&format!(
        "bulk bytes={bytes} seconds={:.3} mb_per_s={:.1}",
        window.seconds(),
        bytes as f64 / window.seconds() / 1e6
    ));
    Ok(())
}

pub(super) async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    check_connections("--connections", args.connections)?;
    check_connections("--parallel", args.parallel)?;
    check_duration("--hold", args.hold, true)?;
    let opened = Instant::now();
    let mut held = Vec::with_capacity(args.connections);
    let mut opening = JoinSet::new();
    let mut errors = 0u64;
    let mut started = 0;
    while started < args.connections || !opening.is_empty() {
        while started < args.connections && opening.len() < args.parallel {
            let addr = args.addr;
            opening.spawn(async move {
                let mut stream = echo_conn(addr).await?;
                let mut one = [0u8; 1];
                round_trip(&mut stream, b"x", &mut one).await?;
                Ok::<_, std::io::Error>(stream)
            });
            started += 1;
        }
        match opening.join_next().await {
            Some(Ok(Ok(stream))) => held.push(stream),
            Some(_) => errors += 1,
            None => {}
        }
    }
    let line = format!(
        "idle connections={} open={} errors={errors} open_seconds={:.2}",
        args.connections,
        held.len(),
        opened.elapsed().as_secs_f64()
    );
    emit(&line);
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{line}\n"))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tokio::time::sleep(args.hold).await;
    drop(held);
    Ok(())
}
