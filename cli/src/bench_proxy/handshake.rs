//! New connections, one request each: plain TCP, or TLS 1.3 with a client
//! certificate (`--cert`), the server verified as a SPIFFE ID of
//! `--trust-domain` against `--ca` (no resumption: every handshake is full).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rustls::ClientConfig;
use rustls::crypto::ring::default_provider;
use rustls::version::TLS13;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sigil_identity::{
    BundleHandle, BundleSet, IdMatcher, SpiffeServerVerifier, TrustBundle, TrustDomain,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::{MODE_ECHO, check_connections, check_duration, emit, latency_fields};

#[derive(Debug, Args)]
pub(crate) struct HandshakeArgs {
    /// Where to connect.
    #[arg(long)]
    addr: SocketAddr,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Run this long before measuring (not counted).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Measure this long (at most 1h).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// PEM client certificate chain: speak TLS 1.3 with it (plain TCP
    /// without).
    #[arg(long, requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    /// PEM private key of `--cert`.
    #[arg(long)]
    key: Option<PathBuf>,
    /// PEM roots the server's certificate must chain to.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The trust domain of the server's SPIFFE ID.
    #[arg(long, default_value = "bench.local")]
    trust_domain: String,
}

fn tls_config(args: &HandshakeArgs) -> anyhow::Result<Option<TlsConnector>> {
    let (Some(cert), Some(key), Some(ca)) = (&args.cert, &args.key, &args.ca) else {
        return Ok(None);
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read --cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid PEM in --cert {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read --key {}", key.display()))?;
    let td = TrustDomain::new(&args.trust_domain)
        .with_context(|| format!("invalid --trust-domain {:?}", args.trust_domain))?;
    let roots = std::fs::read(ca).with_context(|| format!("cannot read --ca {}", ca.display()))?;
    let bundle = TrustBundle::from_pem(td.clone(), &roots)
        .with_context(|| format!("invalid roots in --ca {}", ca.display()))?;
    let mut set = BundleSet::new();
    set.insert(bundle);
    let verifier = SpiffeServerVerifier::new(BundleHandle::new(set), IdMatcher::TrustDomain(td));
    let mut config = ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_protocol_versions(&[&TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .context("the client certificate and key do not match")?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Some(TlsConnector::from(Arc::new(config))))
}

/// Sends one 1-byte echo request and reads the answer, then closes.
async fn one_request<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<()> {
    stream.write_all(&[MODE_ECHO, b'x']).await?;
    let mut one = [0u8; 1];
    stream.read_exact(&mut one).await?;
    stream.shutdown().await
}

async fn connect_once(addr: SocketAddr, tls: Option<&TlsConnector>) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    match tls {
        Some(connector) => {
            let name = ServerName::try_from("sigil").map_err(std::io::Error::other)?;
            one_request(connector.connect(name, stream).await?).await
        }
        None => one_request(stream).await,
    }
}

pub(super) async fn run(args: HandshakeArgs) -> anyhow::Result<()> {
    check_connections("--concurrency", args.concurrency)?;
    check_duration("--warmup", args.warmup, true)?;
    check_duration("--duration", args.duration, false)?;
    let tls = tls_config(&args)?;
    // One first, so a misconfiguration fails fast and clearly.
    connect_once(args.addr, tls.as_ref())
        .await
        .with_context(|| format!("the first connection to {} failed", args.addr))?;
    let from = Instant::now() + args.warmup;
    let to = from + args.duration;
    let mut tasks = JoinSet::new();
    for _ in 0..args.concurrency {
        let tls = tls.clone();
        let addr = args.addr;
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0u64;
            loop {
                let started = Instant::now();
                if started >= to {
                    return (samples, errors);
                }
                let ok = connect_once(addr, tls.as_ref()).await.is_ok();
                if started >= from {
                    if ok {
                        samples.push(started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
        });
    }
    let mut samples = Vec::new();
    let mut errors = 0u64;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((mut some, n)) => {
                samples.append(&mut some);
                errors += n;
            }
            Err(_) => errors += 1,
        }
    }
    if samples.is_empty() {
        bail!("no connection succeeded ({errors} failed)");
    }
    let count = samples.len();
    let seconds = args.duration.as_secs_f64();
    let latency = latency_fields(&mut samples);
    emit(&format!(
        "handshake tls={} concurrency={} count={count} seconds={seconds:.3} per_s={:.0} {latency} errors={errors}",
        tls.is_some(),
        args.concurrency,
        count as f64 / seconds
    ));
    Ok(())
}
