//! A load driver for SDS: opens many `StreamSecrets` streams against a
//! server, then triggers rotations and measures, for every stream, the
//! time from the rotation to its push arriving.
//!
//! Used by the tests (1,000 streams all get the push) and meant for the
//! benchmark "time from a rotation to the update arriving on 1,000 open
//! SDS streams": serve [`Sds`](super::Sds) over the agent's unix-socket
//! listener with a [`FakeSource`](crate::testing::FakeSource), connect a
//! few [`Channel`]s (one per simulated proxy connection), and call
//! [`rotation_latency`] with a `rotate` closure that publishes a
//! pre-generated certificate. With one identity for every stream (the
//! worst case: all are pushed at once), raise
//! [`SdsSettings::max_streams_per_identity`](super::SdsSettings::max_streams_per_identity)
//! to the stream count.
//!
//! Every stream subscribes to `default` and `ROOTCA` and ACKs each
//! response, as Envoy does. Clients run as tasks of a [`JoinSet`] owned by
//! the call (aborted when it returns).

use std::future::Future;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::resource::{DEFAULT_RESOURCE, ROOTCA_RESOURCE, SECRET_TYPE_URL};

/// Default for [`LoadSettings::round_timeout`].
pub const DEFAULT_ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// The shape of a load run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSettings {
    /// Streams to open, spread round-robin over the channels.
    pub streams: usize,
    /// Rotations to trigger, one after the other (each waits until every
    /// stream got the previous one).
    pub rounds: usize,
    /// How long to wait for all streams' initial response, and for all
    /// pushes of one rotation (default [`DEFAULT_ROUND_TIMEOUT`]).
    pub round_timeout: Duration,
}

impl LoadSettings {
    /// `streams` streams, `rounds` rotations, the default timeout.
    pub fn new(streams: usize, rounds: usize) -> Self {
        Self {
            streams,
            rounds,
            round_timeout: DEFAULT_ROUND_TIMEOUT,
        }
    }
}

/// The latencies of a run: one per stream and rotation.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Streams that took part.
    pub streams: usize,
    /// Rotations triggered.
    pub rounds: usize,
    /// Sorted ascending.
    latencies: Vec<Duration>,
}

impl LoadReport {
    /// Every latency, sorted ascending (`streams * rounds` of them).
    pub fn latencies(&self) -> &[Duration] {
        &self.latencies
    }

    /// The `q`-quantile (`0.0..=1.0`, nearest rank), zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let q = q.clamp(0.0, 1.0);
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a rank within 0..=n, n far below 2^52"
        )]
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }

    /// The largest latency.
    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// No channel to open streams on.
    #[error("no channels to open SDS streams on")]
    NoChannels,
    /// A stream was refused or broke.
    #[error("SDS stream {index} failed: {status}")]
    Stream {
        /// The stream's index.
        index: usize,
        /// Its status.
        status: tonic::Status,
    },
    /// A stream ended without an error.
    #[error("SDS stream {index} ended")]
    Ended {
        /// The stream's index.
        index: usize,
    },
    /// Not every stream got the push of a round in time (round 0: the
    /// initial response).
    #[error("round {round}: {arrived} of {expected} streams got their update within the timeout")]
    Timeout {
        /// The round.
        round: usize,
        /// Streams that got it.
        arrived: usize,
        /// Streams open.
        expected: usize,
    },
}

#[derive(Clone, Copy)]
struct Round {
    index: usize,
    start: Instant,
}

struct Arrival {
    round: usize,
    latency: Duration,
}

/// Opens `settings.streams` streams over `channels`, waits until each has
/// its initial response, then `settings.rounds` times: notes the time,
/// calls `rotate(round)` (rounds count from 1), and waits for every stream
/// to receive its push. `rotate` should only publish a certificate
/// prepared beforehand: its own duration counts in the latency.
pub async fn rotation_latency<R, F>(
    channels: &[Channel],
    settings: &LoadSettings,
    mut rotate: R,
) -> Result<LoadReport, LoadError>
where
    R: FnMut(usize) -> F,
    F: Future<Output = ()>,
{
    if channels.is_empty() {
        return Err(LoadError::NoChannels);
    }
    let (clock, clock_rx) = watch::channel(Round {
        index: 0,
        start: Instant::now(),
    });
    let (arrivals_tx, mut arrivals) = mpsc::channel(settings.streams.max(1));
    let mut tasks = JoinSet::new();
    for (index, channel) in channels.iter().cycle().take(settings.streams).enumerate() {
        tasks.spawn(client(
            index,
            channel.clone(),
            clock_rx.clone(),
            arrivals_tx.clone(),
        ));
    }
    drop(arrivals_tx);
    let mut latencies = Vec::with_capacity(settings.streams.saturating_mul(settings.rounds));
    collect(&mut arrivals, &mut tasks, 0, settings, &mut Vec::new()).await?;
    for round in 1..=settings.rounds {
        clock.send_replace(Round {
            index: round,
            start: Instant::now(),
        });
        rotate(round).await;
        collect(&mut arrivals, &mut tasks, round, settings, &mut latencies).await?;
    }
    latencies.sort_unstable();
    Ok(LoadReport {
        streams: settings.streams,
        rounds: settings.rounds,
        latencies,
    })
}

/// Waits until every stream reported `round`, adding the latencies.
async fn collect(
    arrivals: &mut mpsc::Receiver<Arrival>,
    tasks: &mut JoinSet<LoadError>,
    round: usize,
    settings: &LoadSettings,
    latencies: &mut Vec<Duration>,
) -> Result<(), LoadError> {
    let deadline = tokio::time::sleep(settings.round_timeout);
    tokio::pin!(deadline);
    let mut arrived = 0;
    while arrived < settings.streams {
        tokio::select! {
            () = &mut deadline => {
                return Err(LoadError::Timeout { round, arrived, expected: settings.streams });
            }
            Some(ended) = tasks.join_next() => {
                if let Ok(error) = ended {
                    return Err(error);
                }
            }
            arrival = arrivals.recv() => match arrival {
                Some(a) if a.round == round => {
                    arrived += 1;
                    latencies.push(a.latency);
                }
                Some(_) => {}
                None => return Err(LoadError::Timeout { round, arrived, expected: settings.streams }),
            },
        }
    }
    Ok(())
}

/// One client stream: subscribe, then report and ACK every response.
async fn client(
    index: usize,
    channel: Channel,
    clock: watch::Receiver<Round>,
    arrivals: mpsc::Sender<Arrival>,
) -> LoadError {
    let (requests, rx) = mpsc::channel(4);
    let subscribe = DiscoveryRequest {
        node: Some(Node {
            id: format!("sds-load-{index}"),
            ..Node::default()
        }),
        resource_names: vec![DEFAULT_RESOURCE.to_owned(), ROOTCA_RESOURCE.to_owned()],
        type_url: SECRET_TYPE_URL.to_owned(),
        ..DiscoveryRequest::default()
    };
    if requests.send(subscribe).await.is_err() {
        return LoadError::Ended { index };
    }
    let mut sds = SecretDiscoveryServiceClient::new(channel);
    let mut inbound = match sds.stream_secrets(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return LoadError::Stream { index, status },
    };
    loop {
        let response = match inbound.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return LoadError::Ended { index },
            Err(status) => return LoadError::Stream { index, status },
        };
        let at = Instant::now();
        let round = *clock.borrow();
        let ack = DiscoveryRequest {
            version_info: response.version_info,
            resource_names: vec![DEFAULT_RESOURCE.to_owned(), ROOTCA_RESOURCE.to_owned()],
            type_url: SECRET_TYPE_URL.to_owned(),
            response_nonce: response.nonce,
            ..DiscoveryRequest::default()
        };
        let arrival = Arrival {
            round: round.index,
            latency: at.saturating_duration_since(round.start),
        };
        if requests.send(ack).await.is_err() || arrivals.send(arrival).await.is_err() {
            return LoadError::Ended { index };
        }
    }
}
