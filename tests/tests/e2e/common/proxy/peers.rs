//! Peers of the inbound proxy that are not the outbound proxy: direct
//! rustls clients with any certificate (or none), raw ClientHello bytes,
//! the `idle_peers` child process (tests/src/bin) holding thousands of
//! idle mTLS connections, the `proxy_under_test` child process (a proxy in
//! a process of its own); and the system helpers these tests need (open
//! file limit, a process's RSS, whether a command line tool exists).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sigil_identity::{BundleHandle, BundleSet, IdMatcher, SpiffeServerVerifier, TrustBundle};
use sigil_test_util::TestCert;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{LIMIT, MeshUnderTest, SERVER_ID, roundtrip};

/// A rustls client config trusting the mesh's roots, expecting
/// [`SERVER_ID`], presenting `cert` (or no certificate).
pub(crate) fn direct_config(mesh: &MeshUnderTest, cert: Option<&TestCert>) -> rustls::ClientConfig {
    let bundle = TrustBundle::from_pem(super::super::td(), mesh.ca.roots_pem.as_bytes())
        .expect("the CA's roots");
    let verifier = SpiffeServerVerifier::new(
        BundleHandle::new(BundleSet::from(bundle)),
        IdMatcher::Exact(sigil_identity::SpiffeId::parse(SERVER_ID).expect("id")),
    );
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier));
    match cert {
        Some(c) => builder
            .with_client_auth_cert(
                vec![c.der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.serialize_der())),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    }
}

/// An mTLS connection straight to the inbound listener `addr`, presenting
/// `cert`.
pub(crate) async fn direct(
    mesh: &MeshUnderTest,
    addr: SocketAddr,
    cert: Option<&TestCert>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let config = direct_config(mesh, cert);
    let tcp = TcpStream::connect(addr).await?;
    tokio::time::timeout(
        LIMIT,
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("sigil").expect("name"), tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// A handshake with the inbound TCP listener presenting `cert`, then one
/// echo through it to the TCP app. `Err` when refused at any point.
pub(crate) async fn direct_echo(
    mesh: &MeshUnderTest,
    cert: Option<&TestCert>,
) -> std::io::Result<()> {
    let mut tls = direct(mesh, mesh.inbound, cert).await?;
    roundtrip(&mut tls, b"direct ping").await.map(drop)
}

/// An mTLS connection to the HTTP listener `addr` presenting `cert`, the
/// raw bytes `request` written, the response read to the end (the request
/// should say `Connection: close`). `Err` when refused or nothing came.
pub(crate) async fn direct_http(
    mesh: &MeshUnderTest,
    addr: SocketAddr,
    cert: Option<&TestCert>,
    request: &[u8],
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tls = direct(mesh, addr, cert).await?;
    tls.write_all(request).await?;
    let mut response = Vec::new();
    tokio::time::timeout(LIMIT, tls.read_to_end(&mut response))
        .await
        .map_err(|_| std::io::Error::other("response timed out"))??;
    let response = String::from_utf8_lossy(&response).into_owned();
    if response.is_empty() {
        return Err(std::io::Error::other("closed without a response"));
    }
    Ok(response)
}

/// A raw HTTP/1.1 `GET path` with `Connection: close`.
pub(crate) fn raw_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A TLS server presenting `cert` (and the `chain` above it), requiring no
/// client certificate, that echoes what a completed handshake brings. Its
/// counter: handshakes completed.
pub(crate) async fn impostor(
    cert: &TestCert,
    chain: &[&TestCert],
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut certs = vec![cert.der.clone()];
    certs.extend(chain.iter().map(|c| c.der.clone()));
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("the impostor's certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the impostor");
    let addr = listener.local_addr().expect("impostor addr");
    let completed = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&completed);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    count.fetch_add(1, Ordering::SeqCst);
                    let (mut r, mut w) = tokio::io::split(&mut tls);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    (addr, completed)
}

/// The bytes of a real TLS ClientHello (as the mesh's rustls clients send
/// it).
pub(crate) fn client_hello(mesh: &MeshUnderTest) -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(
        Arc::new(direct_config(mesh, None)),
        ServerName::try_from("sigil").expect("name"),
    )
    .expect("client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write the ClientHello");
    }
    out
}

/// The `idle_peers` child process, killed on drop.
pub(crate) struct IdlePeers {
    child: tokio::process::Child,
    /// Connections it holds (each did one echo).
    pub(crate) connected: usize,
}

impl IdlePeers {
    /// Starts `idle_peers` towards `addr` (an L4 listener in front of the
    /// TCP echo app, or with `http` an HTTP listener) with the certificate
    /// and key files and the roots file, `count` connections, `parallel`
    /// handshakes at a time; waits (up to `limit`) until it reports them all
    /// open.
    pub(crate) async fn open(
        http: bool,
        addr: SocketAddr,
        [cert, key, roots]: &[std::path::PathBuf; 3],
        count: usize,
        parallel: usize,
        limit: Duration,
    ) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_idle_peers"))
            .arg(if http { "http" } else { "echo" })
            .arg(addr.to_string())
            .arg(cert)
            .arg(key)
            .arg(roots)
            .arg(SERVER_ID)
            .arg(count.to_string())
            .arg(parallel.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start idle_peers: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(limit, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("idle_peers did not open {count} connections in {limit:?}"))
            .expect("read idle_peers")
            .expect("idle_peers exited early");
        let connected = match line.split_once(' ') {
            Some(("ready", n)) => n.parse().expect("a count"),
            _ => panic!("idle_peers: {line}"),
        };
        Self { child, connected }
    }

    /// Closes every connection (the process exits) and waits for it.
    pub(crate) async fn close(mut self) {
        drop(self.child.stdin.take());
        let _ = tokio::time::timeout(LIMIT, self.child.wait()).await;
    }
}

/// The `proxy_under_test` child process (tests/src/bin): a proxy whose
/// memory is its own. Killed on drop.
pub(crate) struct ProxyProcess {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    /// Its listeners' addresses, in configuration order.
    pub(crate) addrs: Vec<SocketAddr>,
}

impl ProxyProcess {
    /// Starts it with the configuration file `config`; waits until it
    /// listens.
    pub(crate) async fn start(config: &Path) -> Self {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_proxy_under_test"))
            .arg(config)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start proxy_under_test: {e}"));
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("proxy_under_test starts")
            .expect("read proxy_under_test")
            .expect("proxy_under_test exited early");
        let addrs = match line.strip_prefix("ready ") {
            Some(addrs) => addrs
                .split(' ')
                .map(|a| a.parse().expect("an address"))
                .collect(),
            None => panic!("proxy_under_test: {line}"),
        };
        Self {
            child,
            stdin,
            lines,
            addrs,
        }
    }

    /// The connections it is serving now.
    pub(crate) async fn open_connections(&mut self) -> u64 {
        use tokio::io::AsyncWriteExt as _;
        let stdin = self.stdin.as_mut().expect("running");
        stdin
            .write_all(b"open\n")
            .await
            .expect("ask proxy_under_test");
        stdin.flush().await.expect("ask proxy_under_test");
        let line = tokio::time::timeout(LIMIT, self.lines.next_line())
            .await
            .expect("proxy_under_test answers")
            .expect("read proxy_under_test")
            .expect("proxy_under_test exited");
        line.strip_prefix("open ")
            .and_then(|n| n.parse::<f64>().ok())
            .map(|n| n as u64)
            .unwrap_or_else(|| panic!("proxy_under_test: {line}"))
    }

    /// Its resident set size, bytes.
    pub(crate) fn rss_bytes(&self) -> u64 {
        let pid = self.child.id().expect("running");
        rss_of(&format!("/proc/{pid}/status"))
    }

    /// Shuts it down (closing its standard input) and waits for it.
    pub(crate) async fn stop(mut self) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("proxy_under_test stops")
            .expect("wait for proxy_under_test");
        assert!(status.success(), "proxy_under_test: {status}");
    }
}

/// Raises this process's open-file limit (children inherit it) towards
/// `wanted`: the soft limit up to the hard one, the hard one too where
/// allowed (CAP_SYS_RESOURCE). Returns the soft limit now in force.
pub(crate) fn raise_open_files(wanted: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let (Some(current), maximum) = (now.current, now.maximum) else {
        return u64::MAX;
    };
    if current >= wanted {
        return current;
    }
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(wanted),
            maximum: Some(maximum.map_or(wanted, |m| m.max(wanted))),
        },
    );
    if raised.is_ok() {
        return wanted;
    }
    let Some(hard) = maximum else { return current };
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    ) {
        Ok(()) => hard,
        Err(_) => current,
    }
}

/// The `VmRSS` of a `/proc/<pid>/status` file, bytes.
fn rss_of(path: &str) -> u64 {
    let status = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {path}"));
    kib * 1024
}

/// Whether the command line tool `name` runs (`<name> <version_arg>`);
/// prints a loud notice when it does not, for the caller to skip.
pub(crate) fn tool_available(name: &str, version_arg: &str) -> bool {
    match std::process::Command::new(name)
        .arg(version_arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
    {
        Ok(_) => true,
        Err(e) => {
            eprintln!(
                "\n!!!!!!!! SKIPPED: `{name}` is not installed ({e}); CI installs it (.ci/run). \
                 This test checks nothing here. !!!!!!!!\n"
            );
            false
        }
    }
}

/// Runs `program args` with `stdin` written to it, waits up to `limit`:
/// (exit success, stdout, stderr). Killed on timeout (the test fails).
pub(crate) async fn run_tool(
    dir: &Path,
    program: &str,
    args: &[&str],
    stdin: &[u8],
    limit: Duration,
) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).await.expect("write stdin");
    drop(input);
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`{program} {}` did not finish in {limit:?}", args.join(" ")))
        .expect("wait for the tool");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
