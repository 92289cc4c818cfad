//! Connection-level limits over the network: a client that never finishes
//! its TLS handshake is cut off at the handshake deadline; connections
//! beyond `max_connections` are closed at once while the server keeps
//! serving; a request slower than `request_timeout` is ended with
//! DEADLINE_EXCEEDED and the server serves the next one.
//!
//! Idle and slow connections (issue 14, 1e): `max_connections` connections
//! that finished the TLS handshake (some also the HTTP/2 preface) but send
//! no request are closed at `server.preface_timeout`, so they cannot lock
//! clients out; a connection whose requests are done is closed after
//! `server.idle_timeout`; `server.max_connections_per_ip` closes a source
//! address's connections beyond the cap while other addresses are served.

use std::time::{Duration, Instant};

use crate::common::ID;
use crate::common::ca::*;
use crate::raw_conn::{h2_idle, tls_config, tls_connect, wait_closed};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpSocket, TcpStream};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_cut_off_at_the_deadline() {
    let server = start(|c| c.server.handshake_timeout = Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut idle = TcpStream::connect(server.grpc).await.unwrap();
    wait_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before the deadline: {:?}",
        started.elapsed()
    );
    // The server still serves.
    let (csr, _key) = new_csr(ID);
    ask(&mut server.client().await, &csr, Some("dev:default:web"))
        .await
        .expect("served after a stalled handshake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_and_the_server_keeps_serving() {
    let server = start(|c| {
        c.server.max_connections = 2;
        c.server.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    // Two idle connections hold both permits (the server accepts in order).
    let first = TcpStream::connect(server.grpc).await.unwrap();
    let _second = TcpStream::connect(server.grpc).await.unwrap();
    let mut third = TcpStream::connect(server.grpc).await.unwrap();
    wait_closed(&mut third, Duration::from_secs(10)).await;

    // Free one permit: a real client gets in (the permit returns when the
    // server notices the close, so retry for a bounded time).
    drop(first);
    let (csr, _key) = new_csr(ID);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let config = client_config(server.grpc, &server.roots_pem);
        if let Ok(mut client) = sigil_node_agent::ca_client::CaClient::connect(&config).await
            && ask(&mut client, &csr, Some("dev:default:web"))
                .await
                .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection admitted after one was freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_slower_than_the_deadline_is_cancelled() {
    let (server, mut gate) =
        start_gated(|c| c.server.request_timeout = Duration::from_millis(300)).await;
    let (csr, _key) = new_csr(ID);
    let mut client = server.client().await;
    let mut held = client.clone();
    let held_csr = csr.clone();
    let slow =
        tokio::spawn(async move { ask(&mut held, &held_csr, Some("jwt.slow-token.sig")).await });
    gate.wait_entered().await;
    let result = slow.await.unwrap();
    assert_eq!(
        code_of(&result),
        Code::DeadlineExceeded,
        "expected the deadline to end the request"
    );
    assert_eq!(server.issued_ok().await, 0.0);
    gate.open();
    ask(&mut client, &csr, Some("jwt.fast-token.sig"))
        .await
        .expect("served after a timed-out request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_at_the_limit_do_not_lock_clients_out() {
    const MAX: usize = 8;
    let server = start(|c| {
        c.server.max_connections = MAX;
        c.server.handshake_timeout = Duration::from_secs(60);
        c.server.preface_timeout = Duration::from_millis(300);
    })
    .await;
    let tls = tls_config(&server.roots_pem);
    // Half stop after the TLS handshake, half after the HTTP/2 preface.
    let mut silent = Vec::new();
    let mut prefaced = Vec::new();
    for i in 0..MAX {
        let stream = tls_connect(server.grpc, tls.clone()).await;
        if i % 2 == 0 {
            silent.push(stream);
        } else {
            prefaced.push(h2_idle(stream).await);
        }
    }
    // Every one is closed by the server (no request in time)…
    for stream in &mut silent {
        wait_closed(stream, WAIT).await;
    }
    for (_send, connection) in prefaced {
        tokio::time::timeout(WAIT, connection)
            .await
            .expect("an idle HTTP/2 connection was never closed")
            .unwrap()
            .ok();
    }
    // …and a legitimate client is served.
    let (csr, _key) = new_csr(ID);
    ask(&mut server.client().await, &csr, Some(WEB_TOKEN))
        .await
        .expect("served after idle connections filled the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_requests_in_progress_is_closed_after_the_idle_timeout() {
    let server = start(|c| {
        c.server.preface_timeout = Duration::from_secs(3600);
        c.server.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let stream = tls_connect(server.grpc, tls_config(&server.roots_pem)).await;
    let (mut send, connection) = h2_idle(stream).await;
    // One request (refused: no body), then nothing.
    let request = hyper::Request::post(
        "https://localhost/istio.v1.auth.IstioCertificateService/CreateCertificate",
    )
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(String::new())
    .unwrap();
    let response = send.send_request(request).await.expect("a response");
    assert_eq!(response.status(), 200, "gRPC answers with HTTP 200");
    drop(response);
    let started = Instant::now();
    tokio::time::timeout(WAIT, connection)
        .await
        .expect("the idle connection was never closed")
        .unwrap()
        .ok();
    // Closed by the idle timer, not at once for another reason (the timer
    // started when the response went out, a little before `started`).
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "closed after {:?}, before the idle timeout",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_keepalive_pings_is_disconnected() {
    // Idle and preface bounds far away: only the HTTP/2 PINGs can end it.
    let server = start(|c| {
        c.server.preface_timeout = Duration::from_secs(3600);
        c.server.idle_timeout = Duration::from_secs(3600);
        c.server.keepalive_interval = Duration::from_millis(200);
        c.server.keepalive_timeout = Duration::from_millis(200);
    })
    .await;
    let mut stream = tls_connect(server.grpc, tls_config(&server.roots_pem)).await;
    // The client preface and an empty SETTINGS frame, written by hand: no
    // HTTP/2 stack on this side, so the server's PINGs are never answered.
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    stream.write_all(&hello).await.unwrap();
    stream.flush().await.unwrap();
    let started = Instant::now();
    wait_closed(&mut stream, WAIT).await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "closed after {:?}, before a PING could time out",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_address_cap_are_closed_and_other_addresses_are_served() {
    let server = start(|c| {
        c.server.max_connections_per_ip = 2;
        c.server.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    let _first = TcpStream::connect(server.grpc).await.unwrap();
    let _second = TcpStream::connect(server.grpc).await.unwrap();
    let mut third = TcpStream::connect(server.grpc).await.unwrap();
    wait_closed(&mut third, WAIT).await;

    // Another loopback address is not affected.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(server.grpc).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls_config(&server.roots_pem));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector
        .connect(name, tcp)
        .await
        .expect("a TLS handshake from another address");
}
