//! The unix-socket listener the Workload API (and SDS) run on: peer
//! credentials in every request, connection and time limits, graceful
//! drain.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use crate::common::SocketServer;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sigil_node_agent::peer::PeerInfo;
use sigil_node_agent::uds::UdsSettings;
use tokio::io::AsyncReadExt as _;
use tokio::net::UnixStream;
use tokio::sync::Notify;

/// Answers `/peer` with the caller's credentials and `/slow` once `release`
/// is notified.
fn test_service(
    release: Arc<Notify>,
) -> impl tower::Service<
    http::Request<Incoming>,
    Response = http::Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: http::Request<Incoming>| {
        let release = Arc::clone(&release);
        async move {
            if request.uri().path() == "/slow" {
                release.notified().await;
            }
            let peer = request.extensions().get::<PeerInfo>().copied();
            let text = match peer {
                Some(p) => format!("{:?} {} {}", p.pid, p.uid, p.gid),
                None => "none".to_owned(),
            };
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
        }
    })
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2_client(server: &SocketServer) -> (Sender, tokio::task::JoinHandle<hyper::Result<()>>) {
    let stream = UnixStream::connect(&server.path).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(conn))
}

async fn get(sender: &mut Sender, path: &str) -> hyper::Result<String> {
    let request = http::Request::builder()
        .uri(format!("http://localhost{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8(body.to_vec()).unwrap())
}

fn start(settings: UdsSettings) -> (SocketServer, Arc<Notify>) {
    let release = Arc::new(Notify::new());
    let service = test_service(Arc::clone(&release));
    (SocketServer::start(settings, |_, _| service), release)
}

#[tokio::test]
async fn every_request_carries_the_callers_credentials() {
    let (server, _) = start(UdsSettings::default());
    let (mut sender, _conn) = h2_client(&server).await;
    let meta = std::fs::metadata("/proc/self").unwrap();
    use std::os::unix::fs::MetadataExt as _;
    let expected = format!("Some({}) {} {}", std::process::id(), meta.uid(), meta.gid());
    assert_eq!(get(&mut sender, "/peer").await.unwrap(), expected);
    assert_eq!(get(&mut sender, "/again").await.unwrap(), expected);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_in_flight_requests_finish() {
    let (server, release) = start(UdsSettings::default());
    let (mut sender, _conn) = h2_client(&server).await;
    let mut slow_sender = sender.clone();
    let slow = tokio::spawn(async move { get(&mut slow_sender, "/slow").await });
    // The slow request has reached the service once a second one answers
    // (h2 streams are processed in order of arrival).
    get(&mut sender, "/peer").await.unwrap();

    server.shutdown.cancel();
    server.tracker.close();
    // No new connections...
    let mut refused = false;
    for _ in 0..100 {
        if UnixStream::connect(&server.path).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "the listener still accepts after shutdown");
    // ...but the in-flight request completes.
    release.notify_one();
    assert!(slow.await.unwrap().unwrap().starts_with("Some("));
    server.tracker.wait().await;
}

#[tokio::test(start_paused = true)]
async fn drain_gives_up_after_the_drain_timeout() {
    let settings = UdsSettings {
        drain_timeout: Duration::from_secs(3),
        ..UdsSettings::default()
    };
    let (server, _release) = start(settings);
    let (mut sender, _conn) = h2_client(&server).await;
    let stuck = tokio::spawn(async move { get(&mut sender, "/slow").await });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    server.stop().await;
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(
        stuck.await.unwrap().is_err(),
        "the stuck request is cut off"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_without_a_preface_is_dropped_after_the_handshake_timeout() {
    let (server, _) = start(UdsSettings::default());
    let mut raw = UnixStream::connect(&server.path).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(
        raw.read(&mut buf).await.unwrap(),
        0,
        "closed without a word"
    );
    assert!(started.elapsed() >= sigil_node_agent::uds::DEFAULT_HANDSHAKE_TIMEOUT);
    server.stop().await;
}

#[tokio::test]
async fn a_non_http2_client_is_dropped() {
    let (server, _) = start(UdsSettings::default());
    let mut raw = UnixStream::connect(&server.path).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut raw, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // Closed without an answer (a reset, since the request is unread).
    match raw.read_to_end(&mut buf).await {
        Ok(_) => assert!(buf.is_empty(), "{buf:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
    server.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let settings = UdsSettings {
        idle_timeout: Duration::from_secs(60),
        ..UdsSettings::default()
    };
    let (server, _) = start(settings);
    let (mut sender, conn) = h2_client(&server).await;
    get(&mut sender, "/peer").await.unwrap();
    let started = tokio::time::Instant::now();
    // The server sends GOAWAY and closes; the client's connection ends.
    conn.await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_secs(60));
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed() {
    let settings = UdsSettings {
        max_connections: 1,
        ..UdsSettings::default()
    };
    let (server, _) = start(settings);
    let (mut first, _conn) = h2_client(&server).await;
    get(&mut first, "/peer").await.unwrap();

    let mut second = UnixStream::connect(&server.path).await.unwrap();
    let mut buf = Vec::new();
    second.read_to_end(&mut buf).await.unwrap();
    assert!(buf.is_empty(), "the second connection is closed at once");

    // The first still works, and its slot frees when it closes.
    get(&mut first, "/peer").await.unwrap();
    drop(first);
    drop(_conn);
    let mut ok = false;
    for _ in 0..50 {
        let stream = UnixStream::connect(&server.path).await.unwrap();
        if let Ok((mut sender, conn)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await
        {
            tokio::spawn(conn);
            if get(&mut sender, "/peer").await.is_ok() {
                ok = true;
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    assert!(ok, "a new connection is served once the first one is gone");
    server.stop().await;
}
