//! Binding the socket and serving HTTP/2 over it.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::authority::{AuthorityRewriter, MAX_FRAME_SIZE, PREFACE};
use super::{UdsError, UdsSettings};
use crate::attest::process_start_time;
use crate::peer::PeerInfo;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Creates a unix socket at `path` with permission bits `mode`.
///
/// The parent directory is created (mode 0755, so workloads can reach the
/// socket; the socket's own mode decides who may connect) when missing; an
/// existing one is left as it is. A stale *socket* at `path` is removed;
/// anything else there is an error and is left alone. The socket is bound
/// under a temporary name, given its mode, then renamed into place, so it is
/// never reachable with the umask's permissions.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, UdsError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(UdsError::BadPath {
            path: path.to_owned(),
        });
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|source| UdsError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
    }
    remove_stale(path)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    remove_stale(&tmp)?;
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| UdsError::Io {
            action,
            path,
            source,
        }
    };
    let listener = UnixListener::bind(&tmp).map_err(io("bind", &tmp))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", &tmp))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(io("rename", path)));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

fn remove_stale(path: &Path) -> Result<(), UdsError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| UdsError::Io {
                action: "remove",
                path: path.to_owned(),
                source,
            })
        }
        Ok(_) => Err(UdsError::NotASocket {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(UdsError::Io {
            action: "inspect",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Serves `service` (a tonic server, `tonic::service::Routes`, or any tower
/// service of HTTP requests) on `listener` until `shutdown` fires.
///
/// Every request carries the caller's [`PeerInfo`] (read with
/// `SO_PEERCRED` at accept) in its extensions. Connections beyond
/// `settings.max_connections` are closed at accept; a client that does not
/// send the HTTP/2 preface within `handshake_timeout` is dropped; a
/// connection with no open request for `idle_timeout` is closed with
/// GOAWAY. On shutdown the listener stops accepting and returns; each
/// connection sends GOAWAY and gets `drain_timeout` to finish its streams
/// before it is dropped. Connection and stream tasks are spawned into
/// `tracker`, so `tracker.wait()` covers the drain.
pub async fn serve<S, B>(
    listener: UnixListener,
    service: S,
    settings: UdsSettings,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let settings = Arc::new(settings);
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let mut warned = false;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(%error, "unix socket accept failed");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            if !warned {
                tracing::warn!(
                    limit = settings.max_connections,
                    "connection limit reached; closing new connections"
                );
                warned = true;
            }
            continue;
        };
        let peer = match stream.peer_cred() {
            Ok(cred) => PeerInfo {
                pid: cred.pid(),
                uid: cred.uid(),
                gid: cred.gid(),
                // Pins the connection to the process that opened it.
                start_time: cred.pid().and_then(process_start_time),
            },
            Err(error) => {
                tracing::warn!(%error, "SO_PEERCRED failed; closing the connection");
                continue;
            }
        };
        let conn = connection(
            stream,
            peer,
            service.clone(),
            Arc::clone(&settings),
            shutdown.clone(),
            tracker.clone(),
        );
        tracker.spawn(async move {
            conn.await;
            drop(permit);
        });
    }
}

async fn connection<S, B>(
    mut stream: UnixStream,
    peer: PeerInfo,
    service: S,
    settings: Arc<UdsSettings>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) where
    S: tower::Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let mut preface = [0u8; PREFACE.len()];
    let read = tokio::select! {
        () = shutdown.cancelled() => return,
        read = tokio::time::timeout(settings.handshake_timeout, stream.read_exact(&mut preface)) => read,
    };
    match read {
        Ok(Ok(_)) if &preface == PREFACE => {}
        Ok(Ok(_)) => {
            tracing::debug!(peer.uid = peer.uid, "not an HTTP/2 client; closing");
            return;
        }
        Ok(Err(error)) => {
            tracing::debug!(peer.uid = peer.uid, %error, "connection closed before the preface");
            return;
        }
        Err(_) => {
            tracing::debug!(
                peer.uid = peer.uid,
                "no HTTP/2 preface within the handshake timeout"
            );
            return;
        }
    }
    let io = AuthorityRewriter::new(stream, settings.max_header_list_size as usize, &preface);
    let (open_tx, mut open_rx) = watch::channel(0usize);
    let open_tx = Arc::new(open_tx);
    let svc = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        request.extensions_mut().insert(peer);
        let guard = OpenRequest::new(Arc::clone(&open_tx));
        let service = service.clone();
        async move {
            let response = service.oneshot(request).await?;
            Ok::<_, Infallible>(response.map(|body| CountedBody {
                body,
                _guard: guard,
            }))
        }
    });
    let conn = hyper::server::conn::http2::Builder::new(TrackedExecutor(tracker))
        .max_concurrent_streams(settings.max_concurrent_streams)
        .max_header_list_size(settings.max_header_list_size)
        .max_frame_size(u32::try_from(MAX_FRAME_SIZE).unwrap_or(16_384))
        .serve_connection(TokioIo::new(io), svc);
    let mut conn = pin!(conn);
    let idle_timeout = settings.idle_timeout;
    let mut idle = pin!(async move {
        loop {
            if open_rx.wait_for(|open| *open == 0).await.is_err() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(idle_timeout) => {
                    if *open_rx.borrow() == 0 {
                        return;
                    }
                }
                changed = open_rx.changed() => if changed.is_err() { return },
            }
        }
    });
    let result = tokio::select! {
        result = conn.as_mut() => Some(result),
        () = shutdown.cancelled() => None,
        () = &mut idle => None,
    };
    let result = match result {
        Some(result) => result,
        None => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(settings.drain_timeout, conn.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(
                        peer.uid = peer.uid,
                        "streams still open after the drain timeout; closing"
                    );
                    return;
                }
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(peer.uid = peer.uid, %error, "connection ended with an error");
    }
}

/// Spawns hyper's per-stream tasks into the server's tracker.
#[derive(Clone)]
struct TrackedExecutor(TaskTracker);

impl<F> hyper::rt::Executor<F> for TrackedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// Counts a request as open until its response body is dropped.
struct OpenRequest(Arc<watch::Sender<usize>>);

impl OpenRequest {
    fn new(open: Arc<watch::Sender<usize>>) -> Self {
        open.send_modify(|n| *n = n.saturating_add(1));
        Self(open)
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its request counted as open.
struct CountedBody<B> {
    body: B,
    _guard: OpenRequest,
}

impl<B: Body + Unpin> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
