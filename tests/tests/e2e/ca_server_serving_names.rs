//! Clients that dial the CA by IP address: ztunnel with
//! `CA_ADDRESS=https://127.0.0.1:15012` verifies the server certificate
//! against the IP (an IP SAN), not a DNS name. The default
//! `server.dns_names` (`localhost`, `127.0.0.1`, `::1`) serves such clients
//! on IPv4 and IPv6 loopback; the node agent's client (tonic + rustls) is
//! given the IP as its server name.

use std::net::SocketAddr;

use crate::common::ID;
use crate::common::ca::*;
use sigil_ca::config::DEFAULT_DNS_NAMES;
use sigil_node_agent::ca_client::{CaClient, CaClientConfig};

/// Connects to `addr` verifying `server_name`, and has a certificate issued.
async fn issue_as(addr: SocketAddr, roots_pem: &str, server_name: &str) {
    let config = CaClientConfig::new(
        format!("https://{addr}"),
        roots_pem.as_bytes().to_vec(),
        server_name,
    );
    let mut client = CaClient::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("handshake with {addr} as {server_name}: {e}"));
    let (csr, _key) = new_csr(ID);
    let chain = ask(&mut client, &csr, Some(WEB_TOKEN))
        .await
        .unwrap_or_else(|e| panic!("issuance via {server_name}: {e}"));
    check_chain(&chain, roots_pem, ID);
}

#[tokio::test]
async fn a_client_dialing_127_0_0_1_verifies_the_ip_and_gets_a_certificate() {
    let server = start(|c| {
        assert_eq!(c.server.dns_names, DEFAULT_DNS_NAMES, "zero-config names");
    })
    .await;
    assert!(server.grpc.ip().is_loopback() && server.grpc.is_ipv4());
    issue_as(server.grpc, &server.roots_pem, "127.0.0.1").await;
    issue_as(server.grpc, &server.roots_pem, "localhost").await;
    assert_eq!(server.issued_ok().await, 2.0);
}

#[tokio::test]
async fn a_client_dialing_ipv6_loopback_verifies_the_ip_and_gets_a_certificate() {
    // The machines this runs on have IPv6 loopback; a bind failure fails
    // the test rather than skipping it.
    let server = start(|c| {
        c.server.grpc_addr = "[::1]:0".parse().unwrap();
    })
    .await;
    issue_as(server.grpc, &server.roots_pem, "::1").await;
    assert_eq!(server.issued_ok().await, 1.0);
}

#[tokio::test]
async fn a_name_missing_from_the_certificate_fails_the_handshake() {
    let server = start(|c| c.server.dns_names = vec!["localhost".into()]).await;
    let config = CaClientConfig::new(
        format!("https://{}", server.grpc),
        server.roots_pem.as_bytes().to_vec(),
        "127.0.0.1",
    );
    // Without the IP SAN, the IP client cannot verify the server.
    let refused = match CaClient::connect(&config).await {
        Err(_) => true,
        Ok(mut client) => {
            let (csr, _key) = new_csr(ID);
            ask(&mut client, &csr, Some(WEB_TOKEN)).await.is_err()
        }
    };
    assert!(refused, "a certificate without the IP SAN must not verify");
    assert_eq!(server.issued_ok().await, 0.0);
}
