//! `sigil bench agent`: the node agent's benchmarks (issue 15), run by
//! `tools/bench-agent.sh`. Unix sockets and loopback only; every command
//! is bounded in time and count and stops by itself.
//!
//! - `sds` ([`sds`]): an SDS server (the agent's [`Sds`] over its
//!   unix-socket listener, a fake credential source holding certificates
//!   generated ahead) on a runtime of its own, `--streams` streams from a
//!   single-threaded client runtime; the time from a rotation (a new
//!   certificate published to the source) to its push arriving on every
//!   stream, and the server threads' CPU per rotation;
//! - `cold-start`: spawns `sigil agent --config F` and times, per run,
//!   exec to the Workload API socket accepting and to the first
//!   X.509-SVID received; the baseline is `sigil --version` spawned and
//!   reaped (the cost of exec alone);
//! - `jwt`: closed-loop `FetchJWTSVID` calls against a running agent's
//!   Workload API (answers after the first come from the agent's cache),
//!   or with `--trivial` the same calls without the `workload.spiffe.io`
//!   header (refused before attestation: the gRPC floor of the socket);
//! - `fetch-as`: makes a running node agent hold many identities: one
//!   child process per uid (`--uid-base`..), each fetching its X.509-SVID
//!   once (`fetch-x509`, the child's command) and exiting.
//!
//! [`Sds`]: sigil_node_agent::sds::Sds

#[path = "bench_agent/sds.rs"]
mod sds;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use hyper_util::rt::TokioIo;
use sigil_node_agent::workload::SECURITY_HEADER;
use sigil_proto::spiffe::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use sigil_proto::spiffe::workload::{JwtsvidRequest, X509svidRequest};
use tokio::net::UnixStream;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};

use super::MAX_DURATION;

/// `sigil bench agent ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum AgentBenchCommand {
    /// Rotation to push latency on many open SDS streams (in-process server).
    Sds(sds::SdsArgs),
    /// Spawn `sigil agent` repeatedly and time it to the first X.509-SVID.
    ColdStart(ColdStartArgs),
    /// Closed-loop FetchJWTSVID (or `--trivial` refused calls) against an agent.
    Jwt(JwtArgs),
    /// Fetch one X.509-SVID as each of many uids (child processes).
    FetchAs(FetchAsArgs),
    /// Fetch one X.509-SVID and exit (the child of `fetch-as`).
    #[command(hide = true)]
    FetchX509(FetchX509Args),
}

#[derive(Debug, Args)]
pub(crate) struct ColdStartArgs {
    /// The agent's configuration file.
    #[arg(long)]
    config: PathBuf,
    /// The Workload API socket that configuration names.
    #[arg(long)]
    socket: PathBuf,
    /// Runs (at most 1000).
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Deadline of one run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct JwtArgs {
    /// The agent's Workload API socket.
    #[arg(long)]
    socket: PathBuf,
    /// How long to run (at most 1h).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Connections (HTTP/2 over the socket) the calls are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The audience asked for.
    #[arg(long, default_value = "bench")]
    audience: String,
    /// Send the calls without the `workload.spiffe.io` header: each is
    /// refused with InvalidArgument before attestation (the baseline).
    #[arg(long)]
    trivial: bool,
}

#[derive(Debug, Args)]
pub(crate) struct FetchAsArgs {
    /// The agent's Workload API socket.
    #[arg(long)]
    socket: PathBuf,
    /// The first uid; child `i` runs as uid `uid_base + i` (needs root).
    #[arg(long)]
    uid_base: u32,
    /// Children (identities), at most 100,000.
    #[arg(long)]
    count: u32,
    /// Children running at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

#[derive(Debug, Args)]
pub(crate) struct FetchX509Args {
    /// The agent's Workload API socket.
    #[arg(long)]
    socket: PathBuf,
}

pub(crate) fn run(cmd: AgentBenchCommand) -> anyhow::Result<()> {
    match cmd {
        AgentBenchCommand::Sds(args) => sds::run(&args),
        AgentBenchCommand::FetchAs(args) => fetch_as(&args),
        other => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(async move {
                match other {
                    AgentBenchCommand::ColdStart(args) => cold_start(&args).await,
                    AgentBenchCommand::Jwt(args) => jwt(&args).await,
                    AgentBenchCommand::FetchX509(args) => fetch_x509(&args.socket).await,
                    AgentBenchCommand::Sds(_) | AgentBenchCommand::FetchAs(_) => Ok(()),
                }
            })
        }
    }
}

/// Prints one line of a report on stdout.
pub(crate) fn out(line: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stdout().lock(), "{line}").context("cannot print")
}

/// A gRPC channel over the unix socket at `path`.
pub(crate) async fn unix_channel(path: &Path) -> anyhow::Result<Channel> {
    let path = path.to_owned();
    Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .context("cannot connect to the socket")
}

/// A Workload API request, with the security header unless `bare`.
fn workload_request<T>(message: T, bare: bool) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if !bare {
        request.metadata_mut().insert(
            SECURITY_HEADER,
            tonic::metadata::MetadataValue::from_static("true"),
        );
    }
    request
}

/// Waits for the first `FetchX509SVID` answer on `channel`; the number of
/// SVIDs in it.
async fn first_x509(channel: Channel) -> anyhow::Result<usize> {
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let mut stream = client
        .fetch_x509svid(workload_request(X509svidRequest {}, false))
        .await
        .context("FetchX509SVID refused")?
        .into_inner();
    let first = stream
        .message()
        .await
        .context("FetchX509SVID failed")?
        .context("FetchX509SVID ended without an answer")?;
    Ok(first.svids.len())
}

async fn fetch_x509(socket: &Path) -> anyhow::Result<()> {
    let fetch = async { first_x509(unix_channel(socket).await?).await };
    let svids = tokio::time::timeout(Duration::from_secs(60), fetch)
        .await
        .context("no X.509-SVID within 60 s")??;
    if svids == 0 {
        bail!("the answer held no SVID");
    }
    Ok(())
}

fn fetch_as(args: &FetchAsArgs) -> anyhow::Result<()> {
    if args.count > 100_000 || args.parallel == 0 {
        bail!("--count must be at most 100000 and --parallel positive");
    }
    let exe = std::env::current_exe().context("cannot find the sigil binary")?;
    let spawn = |i: u32| -> anyhow::Result<Child> {
        let uid = args.uid_base.checked_add(i).context("uid overflow")?;
        Command::new(&exe)
            .args(["bench", "agent", "fetch-x509", "--socket"])
            .arg(&args.socket)
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot spawn a child as uid {uid}"))
    };
    let mut running = std::collections::VecDeque::new();
    let mut failed = 0u32;
    for i in 0..args.count {
        if running.len() >= args.parallel
            && let Some(mut child) = running.pop_front()
        {
            failed += u32::from(!Child::wait(&mut child)?.success());
        }
        running.push_back(spawn(i)?);
    }
    for mut child in running {
        failed += u32::from(!child.wait()?.success());
    }
    out(format_args!(
        "fetched: {} of {} identities",
        args.count - failed,
        args.count
    ))?;
    if failed > 0 {
        bail!("{failed} children failed");
    }
    Ok(())
}

/// The `q`-quantile (nearest rank) of sorted `values`.
pub(crate) fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within 0..=n, n far below 2^52"
    )]
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// `p50 A p99 B max C` in milliseconds, of unsorted `values`.
pub(crate) fn summary(values: &mut [Duration]) -> String {
    values.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "p50 {:.2} p99 {:.2} max {:.2} ms",
        ms(quantile(values, 0.5)),
        ms(quantile(values, 0.99)),
        ms(quantile(values, 1.0))
    )
}

async fn cold_start(args: &ColdStartArgs) -> anyhow::Result<()> {
    if args.runs == 0 || args.runs > 1000 {
        bail!("--runs must be in 1..=1000");
    }
    let exe = std::env::current_exe().context("cannot find the sigil binary")?;
    let (mut exec, mut bound, mut first) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.runs {
        // The floor: exec of the same binary, up to its exit.
        let t0 = Instant::now();
        let status = Command::new(&exe)
            .arg("--version")
            .stdout(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "sigil --version failed");
        exec.push(t0.elapsed());

        let _ = std::fs::remove_file(&args.socket);
        let t0 = Instant::now();
        let mut child = Command::new(&exe)
            .args(["agent", "--config"])
            .arg(&args.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot spawn sigil agent")?;
        let measured = tokio::time::timeout(args.timeout, async {
            // Poll for the socket (0.1 ms steps; nothing else runs here).
            let channel = loop {
                if let Some(exit) = child.try_wait()? {
                    bail!("the agent exited at start ({exit}); run it by hand to see why");
                }
                if let Ok(channel) = unix_channel(&args.socket).await {
                    break channel;
                }
                std::thread::sleep(Duration::from_micros(100));
            };
            let at_bound = t0.elapsed();
            let svids = first_x509(channel).await?;
            anyhow::ensure!(svids > 0, "the first answer held no SVID");
            Ok((at_bound, t0.elapsed()))
        })
        .await;
        let _ = child.kill();
        let _ = child.wait();
        let (at_bound, at_first) = measured
            .with_context(|| format!("run {run}: no X.509-SVID within {:?}", args.timeout))??;
        bound.push(at_bound);
        first.push(at_first);
    }
    let _ = std::fs::remove_file(&args.socket);
    out(format_args!("runs: {}", args.runs))?;
    out(format_args!("exec-floor: {}", summary(&mut exec)))?;
    out(format_args!("socket-accepting: {}", summary(&mut bound)))?;
    out(format_args!("first-svid: {}", summary(&mut first)))?;
    Ok(())
}

async fn jwt(args: &JwtArgs) -> anyhow::Result<()> {
    if args.duration > MAX_DURATION || args.duration.is_zero() {
        bail!("--duration must be in (0, 1h]");
    }
    if args.concurrency == 0 || args.connections == 0 {
        bail!("--concurrency and --connections must be positive");
    }
    let mut clients = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        clients.push(SpiffeWorkloadApiClient::new(
            unix_channel(&args.socket).await?,
        ));
    }
    let request = JwtsvidRequest {
        audience: vec![args.audience.clone()],
        spiffe_id: String::new(),
    };
    // The first call mints (a CA round trip) unless cached already; a
    // trivial run checks it is refused as expected.
    let mut probe = clients.first().context("no connection")?.clone();
    match probe
        .fetch_jwtsvid(workload_request(request.clone(), args.trivial))
        .await
    {
        Ok(answer) if !args.trivial => {
            anyhow::ensure!(
                !answer.get_ref().svids.is_empty(),
                "no JWT-SVID in the answer"
            );
        }
        Err(status) if args.trivial && status.code() == tonic::Code::InvalidArgument => {}
        other => bail!("unexpected first answer: {other:?}"),
    }
    let deadline = Instant::now() + args.duration;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..args.concurrency {
        let mut client = clients
            .get(n % clients.len())
            .context("no connection")?
            .clone();
        let request = request.clone();
        let trivial = args.trivial;
        tasks.spawn(async move {
            let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let answer = client
                    .fetch_jwtsvid(workload_request(request.clone(), trivial))
                    .await;
                let good = match answer {
                    Ok(a) => !trivial && !a.get_ref().svids.is_empty(),
                    Err(status) => trivial && status.code() == tonic::Code::InvalidArgument,
                };
                if good {
                    ok += 1;
                    latencies.push(t0.elapsed());
                } else {
                    failed += 1;
                }
            }
            (ok, failed, latencies)
        });
    }
    let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (o, f, l) = done.context("a load task failed")?;
        ok += o;
        failed += f;
        latencies.extend(l);
    }
    let secs = started.elapsed().as_secs_f64();
    #[expect(clippy::cast_precision_loss, reason = "a count far below 2^52")]
    let rate = ok as f64 / secs;
    out(format_args!("requests: {ok} answered {failed} failed"))?;
    out(format_args!("throughput: {rate:.0} answers/s"))?;
    out(format_args!("latency: {}", summary(&mut latencies)))?;
    Ok(())
}
