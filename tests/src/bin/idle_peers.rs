//! `idle_peers`: holds many idle mTLS connections to a Sigil inbound proxy,
//! from a process of its own, so the proxy's memory can be measured without
//! the clients' (the proxy e2e tests run it).
//!
//! ```text
//! idle_peers echo|http <addr> <cert.pem> <key.pem> <roots.pem> <server-spiffe-id> <count> <parallel>
//! ```
//!
//! Opens `count` connections (`parallel` handshakes at a time, source
//! addresses spread over 127.0.0.2-127.0.0.9), each presenting the
//! certificate, verifying the server as `<server-spiffe-id>` against the
//! roots, and proving the connection established end to end: `echo`
//! exchanges one byte with a TCP echo application behind an L4 listener,
//! `http` makes one HTTP/1.1 keep-alive request to an HTTP listener and
//! reads its whole `200` response. Then prints `ready <count>` and holds them, silent, until its
//! standard input closes. On any failure it prints `error <reason>` and
//! exits with status 1 (2 on bad usage).

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sigil_identity::{
    BundleHandle, BundleSet, IdMatcher, SpiffeId, SpiffeServerVerifier, TrustBundle,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

type Held = Arc<std::sync::Mutex<Vec<TlsStream<tokio::net::TcpStream>>>>;

struct Args {
    http: bool,
    addr: SocketAddr,
    cert: String,
    key: String,
    roots: String,
    server: String,
    count: usize,
    parallel: usize,
}

fn parse(args: &[String]) -> Option<Args> {
    let [mode, addr, cert, key, roots, server, count, parallel] = args else {
        return None;
    };
    Some(Args {
        http: match mode.as_str() {
            "echo" => false,
            "http" => true,
            _ => return None,
        },
        addr: addr.parse().ok()?,
        cert: cert.clone(),
        key: key.clone(),
        roots: roots.clone(),
        server: server.clone(),
        count: count.parse().ok()?,
        parallel: parallel.parse().ok().filter(|p| *p > 0)?,
    })
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, format!("{line}\n").as_bytes());
    let _ = std::io::Write::flush(&mut out);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(args) = parse(&args) else {
        eprintln!(
            "usage: idle_peers echo|http <addr> <cert.pem> <key.pem> <roots.pem> <server-id> <count> <parallel>"
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say(&format!("error cannot start a runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say(&format!("error {e}"));
            ExitCode::from(1)
        }
    }
}

fn config(args: &Args) -> Result<rustls::ClientConfig, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&args.cert)
        .map_err(|e| format!("{}: {e}", args.cert))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", args.cert))?;
    let key = PrivateKeyDer::from_pem_file(&args.key).map_err(|e| format!("{}: {e}", args.key))?;
    let server = SpiffeId::parse(&args.server).map_err(|e| format!("{}: {e}", args.server))?;
    let roots = std::fs::read(&args.roots).map_err(|e| format!("{}: {e}", args.roots))?;
    let bundle = TrustBundle::from_pem(server.trust_domain().clone(), &roots)
        .map_err(|e| format!("{}: {e}", args.roots))?;
    let verifier = SpiffeServerVerifier::new(
        BundleHandle::new(BundleSet::from(bundle)),
        IdMatcher::Exact(server),
    );
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("client certificate: {e}"))
}

/// One connection from source address `source`: handshake, then one echoed
/// byte or one HTTP exchange.
async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    source: Ipv4Addr,
    http: bool,
) -> Result<TlsStream<tokio::net::TcpStream>, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let tcp = socket
        .connect(addr)
        .await
        .map_err(|e| format!("connect from {source}: {e}"))?;
    let name = ServerName::try_from("sigil").map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    if http {
        http_exchange(&mut tls).await?;
    } else {
        tls.write_all(b"!")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte)
            .await
            .map_err(|e| format!("echo: {e}"))?;
    }
    Ok(tls)
}

/// `GET /idle` (keep-alive) and its whole response: a `200` head and a
/// `content-length` body.
async fn http_exchange(tls: &mut TlsStream<tokio::net::TcpStream>) -> Result<(), String> {
    tls.write_all(b"GET /idle HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tls.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!("closed after {:?}", String::from_utf8_lossy(&got)));
        }
        got.extend_from_slice(buf.get(..n).ok_or("read past the buffer")?);
        let text = String::from_utf8_lossy(&got);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("response {head:?}"));
        }
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                if name.eq_ignore_ascii_case("content-length") {
                    value.trim().parse::<usize>().ok()
                } else {
                    None
                }
            })
            .ok_or_else(|| format!("no content-length in {head:?}"))?;
        if body.len() >= length {
            return Ok(());
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let connector = TlsConnector::from(Arc::new(config(&args)?));
    let next = Arc::new(AtomicUsize::new(0));
    let held: Held = Arc::default();
    let mut workers: tokio::task::JoinSet<Result<(), String>> = tokio::task::JoinSet::new();
    for _ in 0..args.parallel {
        let (connector, next, held) = (connector.clone(), Arc::clone(&next), Arc::clone(&held));
        let (addr, count, http) = (args.addr, args.count, args.http);
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok(());
                }
                let source = Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i % 8).unwrap_or(0));
                let connect = connect(&connector, addr, source, http);
                let tls = tokio::time::timeout(Duration::from_secs(30), connect)
                    .await
                    .map_err(|_| format!("connection {i} timed out"))??;
                held.lock().map_err(|_| "poisoned".to_owned())?.push(tls);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.map_err(|e| e.to_string())??;
    }
    let open = held.lock().map_err(|_| "poisoned".to_owned())?.len();
    say(&format!("ready {open}"));
    // Hold them until the test closes our standard input.
    let _ = tokio::task::spawn_blocking(|| {
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest)
    })
    .await;
    drop(held);
    Ok(())
}
