//! The admin listener on loopback: probes, the connection cap, and the
//! header-read and idle timeouts (each awaited as a connection close, with
//! a generous bound, never slept on).

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const BOUND: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(app: Router, limits: AdminLimits) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(serve(listener, app, limits, stop.clone()));
    Running { addr, stop, task }
}

/// Sends one request on `stream` and reads the response head and body
/// (`Connection: close` unless `keep` is set, then reads what arrives
/// first).
async fn request(stream: &mut TcpStream, path: &str, keep: bool) -> String {
    let connection = if keep { "keep-alive" } else { "close" };
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    if keep {
        let n = tokio::time::timeout(BOUND, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    } else {
        let mut out = Vec::new();
        tokio::time::timeout(BOUND, stream.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    request(&mut stream, path, false).await
}

/// Waits (bounded) for the server to close `stream`.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(BOUND, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {} // a response (e.g. 408): keep reading
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn probes_answer_health_readiness_and_metrics() {
    let ready = Arc::new(AtomicBool::new(false));
    let flag = ready.clone();
    let app = router(
        move || flag.load(Ordering::SeqCst),
        || "sigil_up 1\n".to_owned(),
    )
    .route("/extra", axum::routing::get(|| async { "mine\n" }));
    let server = start(app, AdminLimits::default()).await;

    assert!(
        get(server.addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        get(server.addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 503")
    );
    ready.store(true, Ordering::SeqCst);
    assert!(
        get(server.addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let metrics = get(server.addr, "/metrics").await;
    assert!(
        metrics.contains("application/openmetrics-text"),
        "{metrics}"
    );
    assert!(metrics.ends_with("sigil_up 1\n"), "{metrics}");
    assert!(get(server.addr, "/extra").await.ends_with("mine\n"));

    server.stop.cancel();
    tokio::time::timeout(BOUND, server.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_those_within_served() {
    let limits = AdminLimits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
    };
    let server = start(router(|| true, String::new), limits).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    // Both within the cap are served (which also proves they were accepted
    // and hold their permits).
    assert!(
        request(&mut first, "/healthz", true)
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        request(&mut second, "/healthz", true)
            .await
            .starts_with("HTTP/1.1 200")
    );
    // A third is closed at once, without an answer.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut third).await);
    server.stop.cancel();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let limits = AdminLimits {
        max_connections: 1,
        header_read_timeout: Duration::from_millis(200),
        idle_timeout: Duration::from_secs(60),
    };
    let server = start(router(|| true, String::new), limits).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(
        closed_by_server(&mut slow).await,
        "slow headers must not hold the only slot"
    );
    // Its slot is free again: a legitimate client is served. (The test
    // runtime has one thread: the server task drops the permit in the same
    // poll that closes the socket, before this task sees the close.)
    assert!(
        get(server.addr, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    server.stop.cancel();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let limits = AdminLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_millis(200),
    };
    let server = start(router(|| true, String::new), limits).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        request(&mut idle, "/healthz", true)
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(closed_by_server(&mut idle).await);
    server.stop.cancel();
}
