//! `sigil bench agent sds`: the time from a rotation to its push arriving
//! on every open SDS stream.
//!
//! The server is the agent's own: [`Sds`] served by [`uds::serve`] (real
//! `SO_PEERCRED`) on a multi-threaded runtime of its own (threads named
//! `sds-server`, `--server-threads` of them, like the agent's two
//! workers). Its credential source is a [`FakeSource`]: certificates are
//! generated before the clock starts (a fresh key and leaf per rotation),
//! so a rotation is exactly what the certificate manager does when a new
//! certificate arrives: publish it to the identity's watch channel. Every
//! stream serves the same identity (the worst case: all are pushed at
//! once). The clients ([`rotation_latency`]) run on this thread's
//! single-threaded runtime, subscribe to `default` and `ROOTCA` and ACK
//! every response, as Envoy does.
//!
//! First a baseline in the same process: the same rotations with one
//! stream. Then `--streams` streams over `--channels` connections. The
//! server's CPU time (its threads' `schedstat`) is read when the first
//! rotation starts and after the last arrived.

use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use sigil_identity::{BundleSet, PrivateKey, SpiffeId, TrustBundle, X509Svid};
use sigil_node_agent::sds::load::{LoadSettings, rotation_latency};
use sigil_node_agent::sds::{Sds, SdsMetrics, SdsSettings};
use sigil_node_agent::source::{IssuedSvid, SvidState};
use sigil_node_agent::testing::{FakeSource, FixedCallers};
use sigil_node_agent::uds::{self, UdsSettings};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The server runtime's thread name (its CPU time is read by this name).
const SERVER_THREAD: &str = "sds-server";

#[derive(Debug, Args)]
pub(crate) struct SdsArgs {
    /// Open streams (all for one identity).
    #[arg(long, default_value_t = 1000)]
    streams: usize,
    /// Connections the streams are spread over (the listener allows 100
    /// streams per connection).
    #[arg(long, default_value_t = 20)]
    channels: usize,
    /// Rotations, one after the other (at most 1000).
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// The socket (default: a new one in the temp directory).
    #[arg(long)]
    socket: Option<PathBuf>,
}

/// A CA and the leaves it issues for one identity.
struct Pki {
    key: KeyPair,
    params: CertificateParams,
    /// Shared by every leaf, as the certificate manager shares an
    /// unchanged bundle between rotations (so `ROOTCA` is not rebuilt).
    bundle: Arc<TrustBundle>,
    id: SpiffeId,
}

impl Pki {
    fn new(id: SpiffeId) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.subject_alt_names = vec![SanType::URI(id.trust_domain().id_string().try_into()?)];
        let root = params.self_signed(&key)?.der().clone();
        let bundle = Arc::new(TrustBundle::with_x509_authorities(
            id.trust_domain().clone(),
            [root],
        ));
        Ok(Self {
            key,
            params,
            bundle,
            id,
        })
    }

    /// A fresh key and leaf, published as `Ready` at `version`.
    fn issue(&self, version: u64) -> anyhow::Result<SvidState> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(self.id.to_string().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(5);
        params.not_after = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        let issuer = Issuer::from_params(&self.params, &self.key);
        let leaf = params.signed_by(&key, &issuer)?.der().clone();
        let svid = X509Svid::new(vec![leaf], PrivateKey::from_pkcs8_der(key.serialize_der())?)?;
        Ok(SvidState::Ready(IssuedSvid {
            svid: Arc::new(svid),
            bundle: self.bundle.clone(),
            version,
        }))
    }
}

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU time of this process's server threads, in nanoseconds.
fn server_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == SERVER_THREAD)
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

pub(crate) fn run(args: &SdsArgs) -> anyhow::Result<()> {
    if args.streams == 0 || args.channels == 0 || args.rounds == 0 || args.rounds > 1000 {
        bail!("--streams and --channels must be positive, --rounds in 1..=1000");
    }
    let id = SpiffeId::parse("spiffe://cluster.local/ns/bench/sa/proxy")?;
    let pki = Pki::new(id.clone())?;
    // Certificates for the initial state, the baseline's rotations and the
    // measured ones, all made before the clock starts.
    let mut next: Vec<SvidState> = (0..=2 * args.rounds as u64)
        .map(|v| pki.issue(v))
        .collect::<anyhow::Result<_>>()?;
    next.reverse();

    let uid = std::fs::metadata("/proc/self")?.uid();
    let mut callers = FixedCallers::default();
    callers.by_uid.insert(uid, vec![id.clone()]);
    let source = Arc::new(FakeSource::new());
    source.set_bundles(BundleSet::from((*pki.bundle).clone()));
    source.set_svid(&id, next.pop().context("no certificate")?);
    let settings = SdsSettings {
        max_streams: args.streams.max(SdsSettings::default().max_streams),
        max_streams_per_identity: args.streams,
        ..SdsSettings::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let shutdown = CancellationToken::new();
    let sds = Sds::new(
        source.clone(),
        Arc::new(callers),
        settings,
        SdsMetrics::new(&mut registry),
        shutdown.clone(),
    );
    let socket = args.socket.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sigil-bench-sds-{}.sock", std::process::id()))
    });
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .context("cannot start the server runtime")?;
    let listener = {
        let _entered = server.enter();
        uds::bind(&socket, 0o600)?
    };
    let tracker = TaskTracker::new();
    server.spawn(uds::serve(
        listener,
        sds.into_server(),
        UdsSettings::default(),
        shutdown.clone(),
        tracker.clone(),
    ));

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the client runtime")?;
    let result = client.block_on(async {
        let mut channels = Vec::with_capacity(args.channels);
        for _ in 0..args.channels {
            channels.push(super::unix_channel(&socket).await?);
        }
        let mut rotate = |_round: usize| {
            if let Some(state) = next.pop() {
                source.set_svid(&id, state);
            }
            async {}
        };
        let one = channels.get(..1).context("no channel")?;
        let baseline = rotation_latency(one, &LoadSettings::new(1, args.rounds), &mut rotate)
            .await
            .context("baseline (one stream)")?;
        let mut cpu_start = None;
        let load = LoadSettings::new(args.streams, args.rounds);
        let report = rotation_latency(&channels, &load, |round| {
            if round == 1 {
                cpu_start = Some((
                    server_cpu_ns(),
                    thread_cpu_ns(),
                    tokio::time::Instant::now(),
                ));
            }
            rotate(round)
        })
        .await
        .context("measured run")?;
        let (cpu_end, client_end) = (server_cpu_ns(), thread_cpu_ns());
        let (cpu0, client0, wall0) = cpu_start.context("no rotation ran")?;
        let client_ns = client_end.saturating_sub(client0);
        anyhow::Ok((
            baseline,
            report,
            cpu_end.saturating_sub(cpu0),
            client_ns,
            wall0.elapsed(),
        ))
    });
    shutdown.cancel();
    tracker.close();
    server.shutdown_timeout(Duration::from_secs(5));
    let _ = std::fs::remove_file(&socket);
    let (baseline, report, cpu_ns, client_ns, wall) = result?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let line = |r: &sigil_node_agent::sds::load::LoadReport| {
        format!(
            "p50 {:.2} p99 {:.2} max {:.2} ms",
            ms(r.quantile(0.5)),
            ms(r.quantile(0.99)),
            ms(r.max())
        )
    };
    super::out(format_args!(
        "baseline: 1 stream, {} rotations: {}",
        args.rounds,
        line(&baseline)
    ))?;
    super::out(format_args!(
        "streams: {} over {} connections, {} rotations: {}",
        args.streams,
        args.channels,
        args.rounds,
        line(&report)
    ))?;
    #[expect(clippy::cast_precision_loss, reason = "counts and ns far below 2^52")]
    let (per_rotation_ms, client_ms, per_push_us, cores) = (
        cpu_ns as f64 / 1e6 / args.rounds as f64,
        client_ns as f64 / 1e6 / args.rounds as f64,
        cpu_ns as f64 / 1e3 / (args.rounds * args.streams) as f64,
        cpu_ns as f64 / 1e9 / wall.as_secs_f64(),
    );
    super::out(format_args!(
        "server-cpu: {per_rotation_ms:.2} ms per rotation, {per_push_us:.1} us per stream push (with its ACK), {cores:.2} cores over {:.2} s",
        wall.as_secs_f64()
    ))?;
    super::out(format_args!(
        "client-cpu: {client_ms:.2} ms per rotation (one thread: receive, decode, ACK)"
    ))?;
    Ok(())
}
