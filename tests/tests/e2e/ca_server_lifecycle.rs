//! Server lifecycle: binding a port already in use fails with
//! `ServeError::Bind` naming the setting; cancelling the shutdown token
//! while a request is in flight lets it complete, `run` returns `Ok`, and
//! both ports refuse connections afterwards.

use std::time::Duration;

use crate::common::ca::*;
use crate::common::{ID, tempdir};
use sigil_ca::server::{CaServer, ServeError, ServerDeps};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_port_in_use_is_a_bind_error_naming_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();

    let dir = tempdir();
    let mut config = test_config(dir.path());
    config.server.grpc_addr = addr;
    match CaServer::bind(config, ServerDeps::default()).await {
        Err(ServeError::Bind { field, addr: a, .. }) => {
            assert_eq!(field, "server.grpc_addr");
            assert_eq!(a, addr);
        }
        other => panic!("expected ServeError::Bind for the gRPC port, got {other:?}"),
    }

    let dir = tempdir();
    let mut config = test_config(dir.path());
    config.server.admin_addr = addr;
    match CaServer::bind(config, ServerDeps::default()).await {
        Err(ServeError::Bind { field, addr: a, .. }) => {
            assert_eq!(field, "server.admin_addr");
            assert_eq!(a, addr);
        }
        other => panic!("expected ServeError::Bind for the admin port, got {other:?}"),
    }
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_completes_in_flight_requests_then_refuses_connections() {
    let (mut server, mut gate) = start_gated(|c| {
        c.server.shutdown_grace = Duration::from_secs(10);
    })
    .await;
    let (status, _) = server.get("/readyz").await;
    assert_eq!(status, 200);

    let (csr, _key) = new_csr(ID);
    let mut client = server.client().await;
    let in_flight =
        tokio::spawn(async move { ask(&mut client, &csr, Some("jwt.held-token.sig")).await });
    gate.wait_entered().await;

    // Shut down while the request is parked inside authentication.
    server.shutdown.cancel();
    let handle = server.handle.take().unwrap();
    // The run future must not return while the request is in flight.
    let mut handle = std::pin::pin!(handle);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut handle)
            .await
            .is_err(),
        "run returned while a request was still in flight"
    );
    gate.open();

    let chain = tokio::time::timeout(WAIT, in_flight)
        .await
        .expect("the in-flight request finishes")
        .unwrap()
        .expect("the in-flight request completes successfully");
    check_chain(&chain, &server.roots_pem, ID);

    let result = tokio::time::timeout(Duration::from_secs(30), &mut handle)
        .await
        .expect("run returns after the drain")
        .expect("server task");
    assert!(result.is_ok(), "run returned {result:?}");

    for (what, addr) in [("gRPC", server.grpc), ("admin", server.admin)] {
        let connected = TcpStream::connect(addr).await;
        assert!(
            connected.is_err(),
            "the {what} port still accepts connections after shutdown"
        );
    }
}

/// KNOWN BUG (fails): `ca/src/server/admin.rs` documents `/readyz` as 503
/// "before and while draining", but the admin listener stops at the same
/// moment as the gRPC one, so during the drain a probe cannot connect at
/// all (observed: connection reset / refused) instead of reading 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_draining() {
    let (mut server, mut gate) = start_gated(|c| {
        c.server.shutdown_grace = Duration::from_secs(10);
    })
    .await;
    let (csr, _key) = new_csr(ID);
    let mut client = server.client().await;
    let in_flight =
        tokio::spawn(async move { ask(&mut client, &csr, Some("jwt.held-token.sig")).await });
    gate.wait_entered().await;
    server.shutdown.cancel();

    // The drain lasts until the gate opens; probe inside it.
    let probe = tokio::time::timeout(WAIT, async {
        match TcpStream::connect(server.admin).await {
            Err(e) => Err(format!("cannot connect to the admin port: {e}")),
            Ok(stream) => {
                drop(stream);
                Ok(http_get(server.admin, "/readyz").await)
            }
        }
    })
    .await;
    gate.open();
    in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    let _ = server.handle.take().unwrap().await;

    match probe {
        Ok(Ok((status, _))) => assert_eq!(status, 503, "/readyz while draining"),
        Ok(Err(e)) => panic!("/readyz while draining: {e} (documented: 503)"),
        Err(_) => panic!("/readyz while draining: no answer in time (documented: 503)"),
    }
}
