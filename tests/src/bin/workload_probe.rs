//! `workload_probe`: a tiny SPIFFE Workload API client for the end-to-end
//! tests that need callers with other uids (the tests run it with
//! `CommandExt::uid`/`gid` after copying it into a world-readable temp dir).
//!
//! ```text
//! workload_probe fetch <socket> <timeout-ms>
//!     FetchX509SVID; prints `svids <id> [<id>...]` for the first answer,
//!     `error <gRPC code> <message>` if the call fails, `ended` if the
//!     stream ends empty, or `nothing` if no answer arrives in time.
//! workload_probe handoff <socket> <timeout-ms>
//!     Connects to the socket, hands the connection to a new process
//!     (`use-fd`, as its standard input) and exits at once: the connection's
//!     SO_PEERCRED pid is then a process that no longer exists.
//! workload_probe use-fd <pid> <timeout-ms>
//!     Waits until process <pid> is gone (reaped), then makes the
//!     `fetch` call over standard input and prints the same answers.
//! ```
//!
//! Exit status: 0 when an answer (of any kind) was printed, 2 on bad usage
//! or an I/O failure.

use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use sigil_proto::spiffe::workload::X509svidRequest;
use sigil_proto::spiffe::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// What the probe was asked to do.
enum Task {
    Fetch { socket: PathBuf, timeout: Duration },
    Handoff { socket: PathBuf, timeout: Duration },
    UseFd { pid: u32, timeout: Duration },
}

fn parse(args: &[String]) -> Option<Task> {
    let [verb, target, millis] = args else {
        return None;
    };
    let timeout = Duration::from_millis(millis.parse().ok()?);
    match verb.as_str() {
        "fetch" => Some(Task::Fetch {
            socket: PathBuf::from(target),
            timeout,
        }),
        "handoff" => Some(Task::Handoff {
            socket: PathBuf::from(target),
            timeout,
        }),
        "use-fd" => Some(Task::UseFd {
            pid: target.parse().ok()?,
            timeout,
        }),
        _ => None,
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = parse(&args) else {
        eprintln!(
            "usage: workload_probe fetch|handoff <socket> <timeout-ms> | use-fd <pid> <timeout-ms>"
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("workload_probe: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match task {
        Task::Fetch { socket, timeout } => runtime.block_on(async move {
            let stream = UnixStream::connect(&socket).await?;
            fetch(stream, timeout).await
        }),
        Task::Handoff { socket, timeout } => handoff(&socket, timeout),
        Task::UseFd { pid, timeout } => runtime.block_on(use_fd(pid, timeout)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("workload_probe: {e}");
            ExitCode::from(2)
        }
    }
}

/// Connects, then starts `use-fd <own pid>` with the connection as its
/// standard input and returns (the process exits) without waiting.
fn handoff(socket: &Path, timeout: Duration) -> std::io::Result<()> {
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    let me = std::env::current_exe()?;
    std::process::Command::new(me)
        .arg("use-fd")
        .arg(std::process::id().to_string())
        .arg(timeout.as_millis().to_string())
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(
            stream,
        )))
        .spawn()?;
    Ok(())
}

/// Waits until `pid` no longer exists, then fetches over standard input.
async fn use_fd(pid: u32, timeout: Duration) -> std::io::Result<()> {
    let gone = async {
        while Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(timeout, gone).await.is_err() {
        return Err(std::io::Error::other(format!(
            "process {pid} still exists after {timeout:?}"
        )));
    }
    let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true)?;
    fetch(UnixStream::from_std(stream)?, timeout).await
}

/// One `FetchX509SVID` over `stream`; prints what came back.
async fn fetch(stream: UnixStream, timeout: Duration) -> std::io::Result<()> {
    let slot = Arc::new(Mutex::new(Some(stream)));
    let channel: Channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let taken = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            async move {
                taken
                    .map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the one connection was used"))
            }
        }))
        .await
        .map_err(std::io::Error::other)?;
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let mut request = tonic::Request::new(X509svidRequest {});
    request.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    let answer = tokio::time::timeout(timeout, async {
        let mut stream = client.fetch_x509svid(request).await?.into_inner();
        stream.message().await
    })
    .await;
    let line = match answer {
        Ok(Ok(Some(message))) => {
            let ids: Vec<String> = message.svids.into_iter().map(|s| s.spiffe_id).collect();
            format!("svids {}\n", ids.join(" "))
        }
        Ok(Ok(None)) => "ended\n".to_owned(),
        Ok(Err(status)) => format!("error {:?} {}\n", status.code(), status.message()),
        Err(_) => "nothing\n".to_owned(),
    };
    // The answer is the probe's output (the tests parse it).
    std::io::Write::write_all(&mut std::io::stdout().lock(), line.as_bytes())?;
    Ok(())
}
