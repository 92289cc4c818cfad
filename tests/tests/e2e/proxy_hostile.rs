//! Hostile traffic against the inbound proxy (issue 16, acceptance 4; the
//! idle connections are in `proxy_idle.rs`): peers that never finish the
//! TLS handshake are cut at `handshake_timeout` on L4 and L7 listeners;
//! oversized request heads get 431; slowloris clients and clients silent
//! after the handshake are cut at `[http] header_read_timeout`; and all the
//! while legitimate clients are served.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::agent::wait_until;
use crate::common::proxy::{
    CLIENT_ID, HttpClient, LIMIT, MeshOptions, MeshUnderTest, app_header, client_hello, direct,
    direct_echo, direct_http, request,
};

/// The inbound proxy's `handshake_timeout` in the stalled-handshake test.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads from `stream` until the proxy closes it (EOF or reset), at most
/// `limit`; returns how long that took from `since`.
async fn closed_after(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    since: Instant,
    limit: Duration,
) -> Duration {
    let drain = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(limit, drain)
        .await
        .unwrap_or_else(|_| panic!("the proxy did not close the connection within {limit:?}"));
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_never_finish_the_handshake_are_cut_at_the_timeout_while_others_are_served() {
    let mesh = MeshUnderTest::start(MeshOptions {
        inbound_top: format!(
            "handshake_timeout = \"{}ms\"",
            HANDSHAKE_TIMEOUT.as_millis()
        ),
        http: true,
        ..MeshOptions::default()
    })
    .await;
    let l7 = mesh.inbound_http.expect("the HTTP listeners");
    let app_before = mesh.tcp_app.accepted();
    let timeouts_before = mesh
        .inbound_metrics
        .connections("inbound", "handshake_timeout");
    let hello = client_hello(&mesh);

    // Three stalls on each listener (L4 and L7): nothing at all; half a
    // ClientHello; a whole ClientHello and then nothing (the server's
    // flight is never answered).
    let mut stalled = Vec::new();
    for addr in [mesh.inbound, l7] {
        for bytes in [&hello[..0], &hello[..hello.len() / 2], &hello[..]] {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(bytes).await.unwrap();
            stalled.push((Instant::now(), stream));
        }
    }
    // Not TLS at all: refused at once, not after the timeout.
    let mut plaintext = TcpStream::connect(mesh.inbound).await.unwrap();
    let plaintext_at = Instant::now();
    plaintext
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();

    // Meanwhile the mesh and a direct mTLS peer are served.
    for i in 0..3 {
        let msg = format!("served during the stall {i}");
        assert_eq!(
            mesh.tcp_roundtrip(msg.as_bytes()).await.unwrap(),
            msg.as_bytes()
        );
    }
    direct_echo(&mesh, Some(&mesh.leaf(CLIENT_ID)))
        .await
        .unwrap();
    let served_by = stalled[0].0.elapsed();

    let refused_in = closed_after(&mut plaintext, plaintext_at, LIMIT).await;
    assert!(
        refused_in < HANDSHAKE_TIMEOUT,
        "plaintext is refused at once, not after the handshake timeout: {refused_in:?}"
    );
    for (i, (since, stream)) in stalled.iter_mut().enumerate() {
        let took = closed_after(stream, *since, LIMIT).await;
        assert!(
            took >= HANDSHAKE_TIMEOUT - Duration::from_millis(100),
            "stall {i} was cut before the handshake timeout: {took:?}"
        );
        assert!(
            took < HANDSHAKE_TIMEOUT + Duration::from_secs(3),
            "stall {i} was cut late: {took:?}"
        );
    }
    eprintln!("stalled handshakes: legitimate clients served within {served_by:?} of the stalls");
    assert!(
        served_by < HANDSHAKE_TIMEOUT,
        "the legitimate clients waited for the stalled handshakes: {served_by:?}"
    );
    wait_until("six handshake timeouts counted", LIMIT, || async {
        mesh.inbound_metrics
            .connections("inbound", "handshake_timeout")
            == timeouts_before + 6
    })
    .await;
    // The app saw the legitimate connections only.
    assert_eq!(mesh.tcp_app.accepted(), app_before + 4);
    mesh.stop().await;
}

/// A raw HTTP/1.1 request with one `X-Big` header of `size` bytes.
fn with_header_of(size: usize) -> Vec<u8> {
    let value = "a".repeat(size);
    format!("GET /big HTTP/1.1\r\nHost: app\r\nX-Big: {value}\r\nConnection: close\r\n\r\n")
        .into_bytes()
}

/// The JSON body of a raw HTTP/1.1 response.
fn raw_body(response: &str) -> serde_json::Value {
    let (_, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_get_431_and_the_proxies_keep_serving() {
    // Default limits: 60 KiB request heads.
    let mesh = MeshUnderTest::start(MeshOptions {
        http: true,
        ..MeshOptions::default()
    })
    .await;
    let l7 = mesh.inbound_http.expect("the HTTP listeners");
    let outbound = mesh.outbound_http.expect("the HTTP listeners");
    let valid = mesh.leaf(CLIENT_ID);
    const TOO_BIG: usize = 100 * 1024;
    const FITS: usize = 30 * 1024;

    // At the inbound, from a peer with a valid certificate: one huge header,
    // then many headers adding up; a head within the limit passes whole.
    let response = direct_http(&mesh, l7, Some(&valid), &with_header_of(TOO_BIG))
        .await
        .unwrap();
    assert_eq!(
        status_line(&response),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let many: String = (0..2000)
        .map(|i| format!("X-Many-{i}: {:032}\r\n", i))
        .collect();
    let raw = format!("GET /many HTTP/1.1\r\nHost: app\r\n{many}Connection: close\r\n\r\n");
    let response = direct_http(&mesh, l7, Some(&valid), raw.as_bytes())
        .await
        .unwrap();
    assert!(
        status_line(&response).starts_with("HTTP/1.1 431"),
        "{}",
        status_line(&response)
    );
    let response = direct_http(&mesh, l7, Some(&valid), &with_header_of(FITS))
        .await
        .unwrap();
    assert!(
        status_line(&response).starts_with("HTTP/1.1 200"),
        "{}",
        status_line(&response)
    );
    let report = raw_body(&response);
    assert_eq!(app_header(&report, "x-big")[0].len(), FITS);

    // Through the mesh: the outbound proxy answers 431 itself; a head within
    // the limit reaches the app whole.
    let big = "b".repeat(TOO_BIG);
    let fits = "c".repeat(FITS);
    let mut client = HttpClient::connect(outbound, false).await.unwrap();
    let reply = client.get("/big", &[("x-big", &big)]).await.unwrap();
    assert_eq!(reply.status, 431);
    let mut client = HttpClient::connect(outbound, false).await.unwrap();
    let reply = client.get("/fits", &[("x-big", &fits)]).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(app_header(&reply.report(), "x-big"), [fits]);

    // And both keep serving.
    for h2 in [false, true] {
        let mut client = HttpClient::connect(outbound, h2).await.unwrap();
        for i in 0..3 {
            let reply = client
                .send(request("GET", &format!("/after/{i}"), &[], ""))
                .await
                .unwrap();
            assert_eq!(reply.status, 200, "h2 {h2}");
        }
    }
    assert_eq!(mesh.tcp_roundtrip(b"after").await.unwrap(), b"after");
    mesh.stop().await;
}

/// The inbound's `[http] header_read_timeout` in the slow-client test.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_silent_http_clients_are_cut_at_the_header_timeout_while_others_are_served() {
    let mesh = MeshUnderTest::start(MeshOptions {
        http: true,
        inbound_tables: format!(
            "[http]\nheader_read_timeout = \"{}ms\"",
            HEADER_READ_TIMEOUT.as_millis()
        ),
        ..MeshOptions::default()
    })
    .await;
    let l7 = mesh.inbound_http.expect("the HTTP listeners");
    let valid = mesh.leaf(CLIENT_ID);
    let allowed_before = mesh.inbound_metrics.requests("inbound", "allow");

    // Slowloris: a request head trickled one header every 200 ms, never
    // finished.
    let slow = direct(&mesh, l7, Some(&valid)).await.unwrap();
    let slow_at = Instant::now();
    let (mut slow_read, mut slow_write) = tokio::io::split(slow);
    let trickle = tokio::spawn(async move {
        if slow_write
            .write_all(b"GET /slow HTTP/1.1\r\nHost: app\r\n")
            .await
            .is_err()
        {
            return;
        }
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let header = format!("X-Slow-{i}: still coming\r\n");
            if slow_write.write_all(header.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    // Silent after the handshake.
    let mut silent = direct(&mesh, l7, Some(&valid)).await.unwrap();
    let silent_at = Instant::now();

    // Meanwhile the mesh serves HTTP and TCP.
    let outbound = mesh.outbound_http.expect("the HTTP listeners");
    for h2 in [false, true] {
        let mut client = HttpClient::connect(outbound, h2).await.unwrap();
        let reply = client.get("/meanwhile", &[]).await.unwrap();
        assert_eq!(reply.status, 200);
    }
    assert_eq!(
        mesh.tcp_roundtrip(b"meanwhile").await.unwrap(),
        b"meanwhile"
    );
    let served_by = slow_at.elapsed();

    let slow_took = closed_after(&mut slow_read, slow_at, LIMIT).await;
    trickle.abort();
    let silent_took = closed_after(&mut silent, silent_at, LIMIT).await;
    eprintln!(
        "slow clients: slowloris cut after {slow_took:?}, silent after {silent_took:?}; \
         others served within {served_by:?}"
    );
    for (what, took) in [("slowloris", slow_took), ("silent", silent_took)] {
        assert!(
            took >= HEADER_READ_TIMEOUT - Duration::from_millis(100),
            "{what} cut before the header timeout: {took:?}"
        );
        assert!(
            took < HEADER_READ_TIMEOUT + Duration::from_secs(3),
            "{what} cut late: {took:?}"
        );
    }
    assert!(
        served_by < HEADER_READ_TIMEOUT,
        "the legitimate clients waited for the slow ones: {served_by:?}"
    );
    // Neither slow request was forwarded (the two `meanwhile` were).
    assert_eq!(
        mesh.inbound_metrics.requests("inbound", "allow"),
        allowed_before + 2
    );
    mesh.stop().await;
}
