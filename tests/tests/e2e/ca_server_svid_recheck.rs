//! Client SVIDs are checked on every request, not once per connection
//! (issue 14, 1c): on a connection that is already open, an SVID whose
//! root a hot reload removed, or that has expired since the handshake, is
//! UNAUTHENTICATED and nothing is signed. TLS sessions are never resumed
//! (a resumed session would skip the chain), and a connection older than
//! `server.max_connection_age` gets GOAWAY and is closed.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::ca::*;
use crate::common::{ID, tempdir, write};
use crate::raw_conn::{h2_idle, tls_config, tls_config_with, tls_connect};
use rustls::HandshakeKind;
use sigil_ca::config::{AuthenticatorConfig, AuthoritySource};
use sigil_node_agent::ca_client::CaClient;
use sigil_test_util::{TestCa, TestCert, leaf_params, p256};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::Code;

/// Writes `ca` as an Istio plug-in directory (it signs and is the root).
fn install(dir: &Path, ca: &TestCa) {
    std::fs::create_dir_all(dir).unwrap();
    let staging = dir.with_extension("staging");
    std::fs::create_dir_all(&staging).unwrap();
    for (name, contents) in [
        ("ca-key.pem", ca.cert.key.serialize_pem()),
        ("ca-cert.pem", ca.cert.pem.clone()),
        ("root-cert.pem", ca.cert.pem.clone()),
    ] {
        write(&staging, name, contents);
        std::fs::rename(staging.join(name), dir.join(name)).unwrap();
    }
}

/// A server with only the `svid` authenticator, its authority the plug-in
/// directory `dir` (reloaded every 100 ms).
async fn svid_server(dir: &Path) -> CaUnderTest {
    let dir = dir.to_path_buf();
    start(move |c| {
        c.authenticators = vec![AuthenticatorConfig::Svid];
        c.authority.source = AuthoritySource::Files;
        c.authority.dir = dir;
        c.authority.reload_interval = Duration::from_millis(100);
    })
    .await
}

/// A client presenting `leaf` as its SVID, trusting `roots_pem`.
async fn mtls_client(server: &CaUnderTest, roots_pem: &str, leaf: &TestCert) -> CaClient {
    let mut config = client_config(server.grpc, roots_pem);
    config.identity = Some((
        leaf.pem.as_bytes().to_vec(),
        leaf.key.serialize_pem().into_bytes(),
    ));
    CaClient::connect(&config)
        .await
        .unwrap_or_else(|e| panic!("mTLS connect: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_whose_root_was_removed_is_refused_on_an_open_connection() {
    let old = TestCa::root("cluster.local");
    let new = TestCa::root("cluster.local");
    let tmp = tempdir();
    let dir = tmp.path().join("cacerts");
    install(&dir, &old);
    let server = svid_server(&dir).await;
    let both_roots = format!("{}{}", old.cert.pem, new.cert.pem);
    let leaf = old.leaf(ID);
    let mut client = mtls_client(&server, &both_roots, &leaf).await;
    let (csr, _key) = new_csr(ID);
    ask(&mut client, &csr, None)
        .await
        .expect("renewal under the current root");
    assert_eq!(server.issued_ok().await, 1.0);

    // Hot reload to a CA that does not include the old root.
    install(&dir, &new);
    let deadline = Instant::now() + WAIT;
    while pem_ders(&server.get("/root.pem").await.1) != vec![new.cert.der.clone()] {
        assert!(Instant::now() < deadline, "the new root was never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Same connection, next request: the SVID no longer verifies.
    let result = ask(&mut client, &csr, None).await;
    assert_code(&result, Code::Unauthenticated, "SVID under a removed root");
    assert_eq!(server.issued_ok().await, 1.0, "nothing more was signed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_svid_that_expired_is_refused_on_an_open_connection() {
    let ca = TestCa::root("cluster.local");
    let tmp = tempdir();
    let dir = tmp.path().join("cacerts");
    install(&dir, &ca);
    let server = svid_server(&dir).await;

    // A leaf valid for three more seconds (X.509 times are whole seconds).
    let mut params = leaf_params(ID);
    let not_after =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::seconds(3);
    params.not_after = not_after;
    let leaf = ca.sign(params, p256());
    let mut client = mtls_client(&server, &ca.cert.pem, &leaf).await;
    let (csr, _key) = new_csr(ID);
    ask(&mut client, &csr, None)
        .await
        .expect("renewal while the SVID is valid");

    // No event marks an expiry: wait for the clock to pass notAfter.
    let left = (not_after + time::Duration::seconds(1) - OffsetDateTime::now_utc())
        .try_into()
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(left).await;
    let result = ask(&mut client, &csr, None).await;
    assert_code(&result, Code::Unauthenticated, "expired SVID");
    assert_eq!(server.issued_ok().await, 1.0, "nothing more was signed");
}

/// Connects with `config`, speaks enough HTTP/2 to receive what the server
/// sends after the handshake (TLS 1.3 tickets come first), and closes.
async fn connect_and_read(
    server: &CaUnderTest,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Option<HandshakeKind> {
    let mut tls = tls_connect(server.grpc, config).await;
    let kind = tls.get_ref().1.handshake_kind();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .expect("the server's SETTINGS")
        .unwrap();
    assert!(n > 0, "the server sent its SETTINGS");
    kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_are_never_resumed() {
    let server = start(|_| {}).await;
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let config = tls_config_with(&server.roots_pem, versions);
        let first = connect_and_read(&server, config.clone()).await;
        assert_eq!(first, Some(HandshakeKind::Full));
        let second = connect_and_read(&server, config).await;
        assert_eq!(
            second,
            Some(HandshakeKind::Full),
            "a second connection ({versions:?}) with the client's session cache was resumed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_older_than_max_connection_age_is_closed() {
    let server = start(|c| {
        c.server.max_connection_age = Duration::from_millis(300);
        c.server.idle_timeout = Duration::from_secs(3600);
        c.server.preface_timeout = Duration::from_secs(3600);
    })
    .await;
    let started = Instant::now();
    let tls = tls_connect(server.grpc, tls_config(&server.roots_pem)).await;
    let (_send, connection) = h2_idle(tls).await;
    // GOAWAY, then the server closes: the client's connection task ends.
    let ended = tokio::time::timeout(WAIT, connection).await;
    assert!(ended.is_ok(), "the connection outlived max_connection_age");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before its age: {:?}",
        started.elapsed()
    );
    // New connections are served as usual.
    let (csr, _key) = new_csr(ID);
    ask(&mut server.client().await, &csr, Some(WEB_TOKEN))
        .await
        .expect("a new connection is served");
}
