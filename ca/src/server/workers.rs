//! Connection workers: accepted gRPC connections are spread round-robin
//! over `server.workers` threads, each running its own single-threaded
//! tokio runtime that does the TLS handshake, HTTP/2 and issuance for the
//! connections it owns (the model of actix-web and other thread-per-core
//! servers).
//!
//! ```text
//! accept loop (main runtime) ──round-robin──▶ worker 0: handshake ─▶ HTTP/2 (conn) ─▶ route ─▶ tonic ─▶ CaService | IdentityApi
//!                                         └─▶ worker 1: …
//! ```
//!
//! Why not one work-stealing runtime: signing is CPU-bound (≈ 120 µs per
//! P-256 certificate) and runs inline in the request. On the multi-thread
//! runtime every finished request wakes its connection task into the
//! worker's LIFO slot, so each response goes out on its own — two `writev`s
//! and two loopback packets per certificate. On a single-threaded runtime a
//! woken task queues behind the requests already runnable, so a connection
//! writes the responses of a whole batch at once. Measured with
//! `tools/bench-ca.sh` on one core: 4.3 k → 7.2 k certificates/s, p99 26 →
//! 13 ms (BENCHMARKS.md). A connection's requests stay on one core; a CA's
//! load comes from many node agents, one connection each, which spread
//! evenly.
//!
//! Shutdown: `shutdown` makes every worker stop taking connections and
//! drain its in-flight requests (HTTP/2 GOAWAY, see `conn`); [`Handles::drained`]
//! resolves when all have drained. `stop` then ends the workers whatever is
//! left; [`Handles::exited`] resolves when their threads are gone.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{self, ConnLimits};
use super::error::{OversizeAsResourceExhausted, ServeError};
use super::grpc::CaService;
use super::identity::IdentityApi;
use super::route::TwoServices;
use super::state::Shared;
use super::tls::{self, Accepted};
use crate::config::ServerConfig;
use sigil_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateServiceServer;
use sigil_proto::sigil::v1::identity_service_server::IdentityServiceServer;

/// The path prefix of Sigil's `IdentityService`.
const IDENTITY_PREFIX: &str = "/sigil.v1.IdentityService/";

/// What every worker needs to serve connections.
#[derive(Clone)]
pub(crate) struct WorkerSetup {
    /// The request path's state.
    pub(crate) shared: Arc<Shared>,
    /// TLS with the (hot-swappable) serving certificate.
    pub(crate) acceptor: TlsAcceptor,
    /// Limits and deadlines.
    pub(crate) server: ServerConfig,
}

/// Hands accepted connections to the workers, round-robin.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    workers: Vec<mpsc::UnboundedSender<Accepted>>,
    next: usize,
}

impl Dispatcher {
    /// Gives `accepted` to the next live worker; `false` when none is left.
    /// (The queue needs no bound of its own: each accepted connection holds
    /// a connection-limit permit.)
    pub(crate) fn dispatch(&mut self, mut accepted: Accepted) -> bool {
        for _ in 0..self.workers.len() {
            let index = self.next % self.workers.len().max(1);
            self.next = self.next.wrapping_add(1);
            let Some(worker) = self.workers.get(index) else {
                return false;
            };
            match worker.send(accepted) {
                Ok(()) => return true,
                Err(mpsc::error::SendError(back)) => accepted = back,
            }
        }
        false
    }
}

/// Completion signals of the workers.
#[derive(Debug)]
pub(crate) struct Handles {
    drained: Vec<oneshot::Receiver<()>>,
    exited: Vec<oneshot::Receiver<()>>,
}

impl Handles {
    /// Resolves once every worker has drained after `shutdown` (or ended).
    pub(crate) async fn drained(&mut self) {
        for done in &mut self.drained {
            let _ = done.await;
        }
    }

    /// Resolves once every worker thread has dropped its runtime.
    pub(crate) async fn exited(self) {
        for done in self.exited {
            let _ = done.await;
        }
    }
}

/// The number of workers for `configured` (0 = one per available CPU).
pub(crate) fn count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Starts `count` worker threads.
pub(crate) fn start(
    count: usize,
    setup: &WorkerSetup,
    shutdown: &CancellationToken,
    stop: &CancellationToken,
) -> Result<(Dispatcher, Handles), ServeError> {
    let mut workers = Vec::with_capacity(count);
    let mut handles = Handles {
        drained: Vec::with_capacity(count),
        exited: Vec::with_capacity(count),
    };
    for index in 0..count {
        let (tx, rx) = mpsc::unbounded_channel();
        let (drained_tx, drained_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ServeError::io(format!("cannot start worker {index}'s runtime"), e))?;
        let (setup, shutdown, stop) = (setup.clone(), shutdown.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("sigil-ca-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = serve(setup, rx, shutdown) => {
                            let _ = drained_tx.send(());
                        }
                    }
                });
                // Ends whatever the drain left (connections, handshakes).
                drop(runtime);
                let _ = exited_tx.send(());
            })
            .map_err(|e| ServeError::io(format!("cannot start worker thread {index}"), e))?;
        workers.push(tx);
        handles.drained.push(drained_rx);
        handles.exited.push(exited_rx);
    }
    Ok((Dispatcher { workers, next: 0 }, handles))
}

/// One worker: handshakes the connections it is given and serves them
/// until `shutdown`, then drains.
async fn serve(
    setup: WorkerSetup,
    mut incoming: mpsc::UnboundedReceiver<Accepted>,
    shutdown: CancellationToken,
) {
    let WorkerSetup {
        shared,
        acceptor,
        server,
    } = setup;
    // tonic's own bound, above ours, so oversized messages reach
    // our handler's size check and get RESOURCE_EXHAUSTED.
    let max_decoding = server.max_message_bytes.saturating_mul(2).max(4096);
    let istio = IstioCertificateServiceServer::new(CaService::new(shared.clone()))
        .max_decoding_message_size(max_decoding);
    // Sigil's messages have no field of their own to check: tonic's bound
    // is the message limit (OUT_OF_RANGE, rewritten below).
    let identity = IdentityServiceServer::new(IdentityApi::new(shared))
        .max_decoding_message_size(server.max_message_bytes);
    let service = tower::ServiceBuilder::new()
        .layer(OversizeAsResourceExhausted::layer())
        .service(TwoServices::new(istio, identity, IDENTITY_PREFIX));
    let limits = ConnLimits {
        max_streams: server.max_streams_per_connection,
        request_timeout: server.request_timeout,
        max_age: server.max_connection_age,
        idle_timeout: server.idle_timeout,
        preface_timeout: server.preface_timeout,
        keepalive_interval: server.keepalive_interval,
        keepalive_timeout: server.keepalive_timeout,
    };
    // One task per connection: handshake, then HTTP/2 until the client
    // leaves or `shutdown` (GOAWAY, drain).
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = incoming.recv() => match accepted {
                Some(accepted) => accepted,
                None => break,
            },
        };
        let (acceptor, service, shutdown) = (acceptor.clone(), service.clone(), shutdown.clone());
        connections.spawn(async move {
            let handshake = tls::handshake(accepted, acceptor, server.handshake_timeout, &shutdown);
            if let Some(conn) = handshake.await {
                conn::serve(conn, service, limits, shutdown).await;
            }
        });
    }
    connections.close();
    connections.wait().await;
}
