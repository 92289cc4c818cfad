//! Connection-level limits over the network: a client that never finishes
//! its TLS handshake is cut off at the handshake deadline; connections
//! beyond `max_connections` are closed at once while the server keeps
//! serving; a request slower than `request_timeout` is ended with
//! DEADLINE_EXCEEDED and the server serves the next one.

use std::time::{Duration, Instant};

use crate::common::ID;
use crate::common::ca::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::Code;

/// Reads until the server closes the connection (EOF or reset); panics if
/// it stays open for `limit`.
async fn wait_closed(stream: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open for {limit:?}"
    );
}

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
